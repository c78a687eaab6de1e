//! Automatic suggestions for shaping a set, each with its evidence and the one rule that
//! accepts it: secrets that would leave the machine (private keys by content or name, `.env`
//! files, shadow, ssh and cloud credentials, tokens in home directories), developer-box
//! leftovers (home directories, toolchain shims, the workspace), system set-up processes (a
//! selected `mount`, `ip`, `mkdir`, `sysctl`… that ended before the service started: not part
//! of the service), noise files (written by many unrelated processes, or the well-known ones),
//! outputs (written, never read) and helpers a stub can stand in for (the strategy's stub
//! candidates). Used by the page and by `depsetfs suggest`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;

use serde::Serialize;

use crate::analysis::closure::SetOptions;
use crate::analysis::graph::Graph;
use crate::analysis::graph::ProcessIx;
use crate::analysis::names::escape;
use crate::analysis::rules::Rules;
use crate::analysis::select::Selection;
use crate::analysis::strategy::StrategySet;

/// What kind of suggestion, most serious first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    Secret,
    DevLeftover,
    SystemSetup,
    Noise,
    Output,
    Stub,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Secret => "secret",
            Kind::DevLeftover => "dev-leftover",
            Kind::SystemSetup => "system-setup",
            Kind::Noise => "noise",
            Kind::Output => "output",
            Kind::Stub => "stub",
        }
    }
}

/// One suggestion: a path (or glob), why, and the tweak that accepts it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Suggestion {
    pub kind: Kind,
    /// The escaped path, or the glob for a group.
    pub path: String,
    pub evidence: String,
    /// The page's tweak: `{"action": "exclude", "glob": ...}` and so on.
    pub accept: serde_json::Value,
}

/// Well-known files many processes write.
const KNOWN_NOISE: [&str; 8] = [
    "/etc/mtab",
    "/run/utmp",
    "/var/run/utmp",
    "/var/log/wtmp",
    "/var/log/btmp",
    "/var/log/lastlog",
    "/dev/console",
    "/etc/ld.so.cache",
];

/// Path endings of credentials (after a home directory or anywhere).
const CREDENTIAL_SUFFIXES: [&str; 12] = [
    "/.aws/credentials",
    "/.docker/config.json",
    "/.netrc",
    "/.git-credentials",
    "/.pgpass",
    "/.my.cnf",
    "/.npmrc",
    "/.pypirc",
    "/.kube/config",
    "/.config/gh/hosts.yml",
    "/.vault-token",
    "/.azure/accessTokens.json",
];

const KEY_NAMES: [&str; 4] = ["id_rsa", "id_dsa", "id_ecdsa", "id_ed25519"];

/// Directories of a developer's machine that a service should not need.
const DEV_DIRS: [&str; 11] = [
    "/.pyenv", "/.cargo", "/.rustup", "/.npm", "/.nvm", "/.cache", "/.local", "/.rbenv",
    "/.sdkman", "/.gradle", "/.m2",
];

/// Programs that configure the system rather than serve: a selected run of one that ended
/// before the service started is set-up, not the service (matched on the executable's and
/// argv[0]'s last component, so busybox applets count too).
const SETUP_TOOLS: [&str; 33] = [
    "mount",
    "umount",
    "ip",
    "ifconfig",
    "route",
    "tc",
    "ethtool",
    "brctl",
    "iptables",
    "ip6tables",
    "nft",
    "sysctl",
    "modprobe",
    "insmod",
    "mkdir",
    "chown",
    "chmod",
    "chgrp",
    "ln",
    "mknod",
    "install",
    "hostname",
    "useradd",
    "groupadd",
    "adduser",
    "addgroup",
    "setcap",
    "udevadm",
    "swapon",
    "ldconfig",
    "systemd-tmpfiles",
    "mkfs",
    "losetup",
];

pub fn suggest(
    graph: &Graph,
    result: &StrategySet,
    rules: &Rules,
    options: &SetOptions,
    selection: &Selection,
) -> Vec<Suggestion> {
    let mut out = Vec::new();
    secrets(result, options, &mut out);
    leftovers(graph, result, &mut out);
    system_setup(graph, selection, &mut out);
    noise(graph, rules, &mut out);
    outputs(graph, result, &mut out);
    for stub in &result.stub_candidates {
        let helper = graph.describe_process(stub.image);
        out.push(Suggestion {
            kind: Kind::Stub,
            path: escape(&stub.path),
            evidence: format!(
                "{} started {helper}, whose result no needed process used (exit {})",
                graph.describe_process(stub.launched_by),
                exit_text(graph.processes[stub.image].exit_status)
            ),
            accept: serde_json::json!({"action": "stub", "path": escape(&stub.path)}),
        });
    }
    out.sort_by(|a, b| a.kind.cmp(&b.kind).then_with(|| a.path.cmp(&b.path)));
    out.dedup_by(|a, b| a.kind == b.kind && a.path == b.path);
    out
}

fn exit_text(status: Option<i32>) -> String {
    match status {
        Some(s) if s & 0x7f == 0 => format!("status {}", (s >> 8) & 0xff),
        Some(s) => format!("signal {}", s & 0x7f),
        None => "unknown".to_string(),
    }
}

fn last_component(text: &str) -> &str {
    text.rsplit('/').next().unwrap_or(text)
}

fn is_setup_tool(graph: &Graph, process: ProcessIx) -> bool {
    let node = &graph.processes[process];
    let exe = String::from_utf8_lossy(&node.exe);
    let argv0 = node.argv.first().map_or("", String::as_str);
    [last_component(&exe), last_component(argv0)]
        .iter()
        .any(|name| SETUP_TOOLS.contains(name))
}

/// The images `process` descends from (fork parents and exec predecessors).
fn ancestors(graph: &Graph, process: ProcessIx) -> BTreeSet<ProcessIx> {
    let mut found = BTreeSet::new();
    let mut current = process;
    loop {
        let node = &graph.processes[current];
        let Some(up) = node.exec_from.or(node.forked_by) else {
            break;
        };
        if !found.insert(up) {
            break;
        }
        current = up;
    }
    found
}

/// Selected runs of a set-up program (`SETUP_TOOLS`) that ended before a selected image that
/// is neither set-up, nor one of their ancestors, nor replaced by an exec began (the
/// service): the default selection,
/// the whole traced command, takes a launch script's `mount`, `ip link`, `mkdir` and `sysctl`
/// for the service. Accepting unselects the run and its descendants (a rule the rules file
/// keeps as the remaining `[[select]]` pids).
fn system_setup(graph: &Graph, selection: &Selection, out: &mut Vec<Suggestion>) {
    let selected: Vec<ProcessIx> = selection.processes().collect();
    let service: Vec<ProcessIx> = selected
        .iter()
        .copied()
        .filter(|&p| {
            // A fork's copy of its parent before an exec is not the service, what it runs is.
            !is_setup_tool(graph, p)
                && !graph.processes[p].exe.is_empty()
                && graph.exec_successor(p).is_none()
        })
        .collect();
    for &process in &selected {
        if !is_setup_tool(graph, process) {
            continue;
        }
        let node = &graph.processes[process];
        let Some(end) = node.end_ns else {
            continue;
        };
        let up = ancestors(graph, process);
        let Some(&first) = service
            .iter()
            .filter(|&&s| !up.contains(&s) && graph.processes[s].begin_ns >= end)
            .min_by_key(|&&s| graph.processes[s].begin_ns)
        else {
            continue;
        };
        let mut wrote: Vec<String> = graph
            .edges_of_process(process)
            .filter(|e| e.produces() && e.succeeded())
            .map(|e| escape(&graph.files[e.file].path))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let more = wrote.len().saturating_sub(3);
        wrote.truncate(3);
        let changed = if wrote.is_empty() {
            "changed no file".to_string()
        } else {
            format!(
                "changed {}{}",
                wrote.join(", "),
                if more > 0 {
                    format!(" and {more} more")
                } else {
                    String::new()
                }
            )
        };
        out.push(Suggestion {
            kind: Kind::SystemSetup,
            path: format!("pid {}: {}", node.key.pid, graph.describe_process(process)),
            evidence: format!(
                "set-up, not the service: it configures the system ({changed}) and ended {:.1} ms before {} started; selected as {}",
                (graph.processes[first].begin_ns - end) as f64 / 1e6,
                graph.describe_process(first),
                selection.reason(process).unwrap_or("it was selected"),
            ),
            accept: serde_json::json!({"action": "select", "pid": node.key.pid, "on": false, "children": true}),
        });
    }
}

fn exclude(path: &[u8]) -> serde_json::Value {
    serde_json::json!({"action": "exclude", "glob": super::model::glob_escape(&escape(path))})
}

fn in_home(path: &[u8]) -> bool {
    path.starts_with(b"/root/") || path.starts_with(b"/home/")
}

/// Why a path of the set is a secret, if it is one.
pub fn secret_reason(path: &[u8], options: &SetOptions) -> Option<String> {
    let text = String::from_utf8_lossy(path);
    let name = text.rsplit('/').next().unwrap_or("");
    if matches!(
        &*text,
        "/etc/shadow" | "/etc/gshadow" | "/etc/shadow-" | "/etc/gshadow-" | "/etc/security/opasswd"
    ) {
        return Some("password hashes of this machine's users".to_string());
    }
    if let Some(suffix) = CREDENTIAL_SUFFIXES.iter().find(|s| text.ends_with(*s)) {
        return Some(format!(
            "credentials file ({})",
            suffix.trim_start_matches('/')
        ));
    }
    if text.contains("/.config/gcloud/")
        || text.contains("/.ssh/") && !name.ends_with(".pub") && name != "known_hosts"
    {
        return Some("cloud or ssh credentials directory".to_string());
    }
    if name == ".env" || name.starts_with(".env.") || name.ends_with(".env") {
        return Some(
            "an environment file (.env): usually holds passwords and API keys".to_string(),
        );
    }
    let key_header = || has_private_key(path, options);
    if KEY_NAMES.contains(&name) {
        return Some("an ssh private key (by name)".to_string());
    }
    if text.starts_with("/etc/ssh/ssh_host_") && name.ends_with("_key") {
        return Some("this machine's ssh host private key".to_string());
    }
    if (name.ends_with(".key") || name.ends_with(".pem") || name.ends_with(".p12")) && key_header()
    {
        return Some("a private key (-----BEGIN ... PRIVATE KEY----- inside)".to_string());
    }
    let lower = name.to_ascii_lowercase();
    if in_home(path)
        && [
            "token",
            "secret",
            "credential",
            "apikey",
            "api_key",
            "password",
        ]
        .iter()
        .any(|w| lower.contains(w))
    {
        return Some("a token or password file in a home directory (by name)".to_string());
    }
    if in_home(path) && key_header() {
        return Some("a private key in a home directory (by content)".to_string());
    }
    None
}

/// Whether the file's first 64 KiB hold a PEM private key header.
fn has_private_key(path: &[u8], options: &SetOptions) -> bool {
    let relative = path.strip_prefix(b"/").unwrap_or(path);
    let on_disk = options.source.join(std::ffi::OsStr::from_bytes(relative));
    let Ok(file) = std::fs::File::open(on_disk) else {
        return false;
    };
    let mut head = Vec::new();
    if file.take(64 * 1024).read_to_end(&mut head).is_err() {
        return false;
    }
    let text = String::from_utf8_lossy(&head);
    text.match_indices("-----BEGIN ").any(|(at, _)| {
        text[at..]
            .lines()
            .next()
            .is_some_and(|line| line.contains("PRIVATE KEY-----"))
    })
}

fn secrets(result: &StrategySet, options: &SetOptions, out: &mut Vec<Suggestion>) {
    for entry in &result.set.entries {
        if entry.kind == crate::record::FileKind::Dir {
            continue;
        }
        if let Some(reason) = secret_reason(&entry.path, options) {
            out.push(Suggestion {
                kind: Kind::Secret,
                path: escape(&entry.path),
                evidence: format!("in the set and would leave the machine: {reason}"),
                accept: exclude(&entry.path),
            });
        }
    }
}

/// Home directories and toolchain trees in the set, grouped by the directory to exclude.
fn leftovers(graph: &Graph, result: &StrategySet, out: &mut Vec<Suggestion>) {
    let workspace = graph
        .header
        .command
        .as_ref()
        .map(|c| c.cwd.clone())
        .filter(|cwd| cwd != "/" && !cwd.is_empty());
    let mut groups: BTreeMap<String, (String, usize, u64)> = BTreeMap::new();
    for entry in &result.set.entries {
        if entry.kind == crate::record::FileKind::Dir {
            continue;
        }
        let text = String::from_utf8_lossy(&entry.path).into_owned();
        let home = home_of(&text);
        let group = if let Some(home) = &home {
            DEV_DIRS
                .iter()
                .find(|d| text.starts_with(&format!("{home}{d}/")))
                .map(|d| {
                    (
                        format!("{home}{d}"),
                        format!("toolchain or cache directory {}", d.trim_start_matches('/')),
                    )
                })
                .or_else(|| Some((home.clone(), "a home directory".to_string())))
        } else {
            None
        };
        let group = group.or_else(|| {
            let ws = workspace.as_ref()?;
            text.starts_with(&format!("{ws}/")).then(|| {
                (
                    ws.clone(),
                    "the workspace the traced command ran in".to_string(),
                )
            })
        });
        if let Some((dir, why)) = group {
            let slot = groups.entry(dir).or_insert((why, 0, 0));
            slot.1 += 1;
            slot.2 += entry.size;
        }
    }
    for (dir, (why, files, bytes)) in groups {
        out.push(Suggestion {
            kind: Kind::DevLeftover,
            path: format!("{dir}/**"),
            evidence: format!("{files} files, {bytes} bytes from {why}: check that the service needs them"),
            accept: serde_json::json!({"action": "exclude", "glob": format!("{}/**", super::model::glob_escape(&dir))}),
        });
    }
}

fn home_of(path: &str) -> Option<String> {
    if path.starts_with("/root/") {
        return Some("/root".to_string());
    }
    let rest = path.strip_prefix("/home/")?;
    let user = rest.split('/').next()?;
    rest.contains('/').then(|| format!("/home/{user}"))
}

/// Files written by several unrelated executables, and the known ones, not already noise.
fn noise(graph: &Graph, rules: &Rules, out: &mut Vec<Suggestion>) {
    for (ix, file) in graph.files.iter().enumerate() {
        if rules.is_noise(&file.path) {
            continue;
        }
        let writers: BTreeSet<&[u8]> = graph
            .edges_of_file(ix)
            .filter(|e| e.succeeded() && e.produces())
            .map(|e| graph.processes[e.process].exe.as_slice())
            .collect();
        let readers: BTreeSet<&[u8]> = graph
            .edges_of_file(ix)
            .filter(|e| e.succeeded() && e.reads_content())
            .map(|e| graph.processes[e.process].exe.as_slice())
            .collect();
        let text = String::from_utf8_lossy(&file.path);
        let known = KNOWN_NOISE.contains(&&*text);
        if known || (writers.len() >= 3 && !readers.is_empty()) {
            out.push(Suggestion {
                kind: Kind::Noise,
                path: escape(&file.path),
                evidence: if known {
                    "a well-known shared file (mount table, login records, console)".to_string()
                } else {
                    format!(
                        "written by {} different programs ({}) and read by {}: reading it should not pull its writers in",
                        writers.len(),
                        writers.iter().take(4).map(|w| String::from_utf8_lossy(w).into_owned()).collect::<Vec<_>>().join(", "),
                        readers.len()
                    )
                },
                accept: serde_json::json!({"action": "noise", "glob": super::model::glob_escape(&escape(&file.path))}),
            });
        }
    }
}

/// Files of the set written and never read by any process.
fn outputs(graph: &Graph, result: &StrategySet, out: &mut Vec<Suggestion>) {
    for entry in &result.set.entries {
        let Some(ix) = graph.file(&entry.path) else {
            continue;
        };
        if graph.files[ix].kind == crate::record::FileKind::Dir {
            continue;
        }
        let written = graph
            .edges_of_file(ix)
            .any(|e| e.succeeded() && e.produces());
        let read = graph
            .edges_of_file(ix)
            .any(|e| e.succeeded() && e.reads_content());
        if written && !read {
            out.push(Suggestion {
                kind: Kind::Output,
                path: escape(&entry.path),
                evidence: format!(
                    "written ({} bytes) and never read: an output; ship its directory, not the file",
                    graph.files[ix].bytes_written
                ),
                accept: serde_json::json!({"action": "output", "path": escape(&entry.path)}),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn options(source: PathBuf) -> SetOptions {
        SetOptions {
            source,
            mountpoint_in_mirror: None,
        }
    }

    #[test]
    fn secrets_are_found_by_name_and_by_content() -> std::io::Result<()> {
        let dir = std::env::temp_dir().join(format!("depsetfs-suggest-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("srv/tls"))?;
        std::fs::write(
            dir.join("srv/tls/server.pem"),
            "-----BEGIN EC PRIVATE KEY-----\nabc\n-----END EC PRIVATE KEY-----\n",
        )?;
        std::fs::write(
            dir.join("srv/tls/chain.pem"),
            "-----BEGIN CERTIFICATE-----\n",
        )?;
        let opts = options(dir.clone());
        assert!(secret_reason(b"/srv/tls/server.pem", &opts).is_some());
        assert!(secret_reason(b"/srv/tls/chain.pem", &opts).is_none());
        assert!(secret_reason(b"/etc/shadow", &opts).is_some());
        assert!(secret_reason(b"/home/ann/.ssh/id_ed25519", &opts).is_some());
        assert!(secret_reason(b"/home/ann/.ssh/id_ed25519.pub", &opts).is_none());
        assert!(secret_reason(b"/root/.aws/credentials", &opts).is_some());
        assert!(secret_reason(b"/srv/app/.env", &opts).is_some());
        assert!(secret_reason(b"/root/.config/gcloud/credentials.db", &opts).is_some());
        assert!(secret_reason(b"/home/ann/github_token", &opts).is_some());
        assert!(secret_reason(b"/etc/passwd", &opts).is_none());
        assert!(secret_reason(b"/usr/lib/x86_64-linux-gnu/libc.so.6", &opts).is_none());
        std::fs::remove_dir_all(&dir)
    }

    #[test]
    fn setup_runs_before_the_service_are_suggested_for_unselecting() {
        use crate::analysis::select::select;
        use crate::fixtures::trace::{Proc, Trace};
        const SH: Proc = Proc { pid: 10, start: 1 };
        const MOUNT: Proc = Proc { pid: 11, start: 2 };
        const IP: Proc = Proc { pid: 12, start: 3 };
        const SVC: Proc = Proc { pid: 13, start: 5 };
        const LATE: Proc = Proc { pid: 14, start: 6 };
        let mut trace = Trace::new("/nonexistent-source");
        trace.command(SH.pid);
        trace.info(SH, 1, "/usr/bin/dash", "sh -c start", 10);
        trace.spawn(
            SH,
            MOUNT,
            "/usr/bin/mount",
            "mount -t tmpfs none /srv/tmp",
            20,
        );
        trace.write(MOUNT, "/etc/mtab", 22);
        trace.exit(MOUNT, 25);
        trace.spawn(SH, IP, "/usr/sbin/ip", "ip link set lo up", 30);
        trace.exit(IP, 35);
        trace.spawn(SH, SVC, "/usr/sbin/svc", "svc --serve", 50);
        trace.read(SVC, "/etc/svc.conf", 55);
        // A mkdir the service runs itself, after it started: part of the service.
        trace.spawn(SVC, LATE, "/usr/bin/mkdir", "mkdir -p /run/svc", 60);
        trace.exit(LATE, 65);
        let graph = trace.graph();
        let selection = select(&graph, &[]).unwrap_or_else(|e| panic!("{e}"));
        let mut out = Vec::new();
        system_setup(&graph, &selection, &mut out);
        let pids: Vec<u64> = out
            .iter()
            .filter_map(|s| s.accept["pid"].as_u64())
            .collect();
        assert_eq!(pids, vec![11, 12], "{out:#?}");
        assert!(out.iter().all(|s| s.kind == Kind::SystemSetup));
        assert_eq!(
            out[0].accept,
            serde_json::json!({"action": "select", "pid": 11, "on": false, "children": true})
        );
        assert!(out[0].evidence.contains("/etc/mtab"), "{}", out[0].evidence);
        assert!(
            out[0].evidence.contains("svc --serve"),
            "{}",
            out[0].evidence
        );
        // Once narrowed to the service, nothing is left to suggest.
        let narrowed = Selection {
            chosen: (0..graph.processes.len())
                .map(|p| (graph.processes[p].key.pid >= SVC.pid).then(|| "picked".to_string()))
                .collect(),
        };
        let mut none = Vec::new();
        system_setup(&graph, &narrowed, &mut none);
        assert!(none.is_empty(), "{none:#?}");
    }

    #[test]
    fn home_directories_group_by_owner() {
        assert_eq!(
            home_of("/home/ann/.cargo/bin/x").as_deref(),
            Some("/home/ann")
        );
        assert_eq!(home_of("/root/x").as_deref(), Some("/root"));
        assert_eq!(home_of("/home/ann"), None);
        assert_eq!(home_of("/usr/bin/x"), None);
    }
}
