//! Helpers shared by the integration tests.
//!
//! Every test gets its own directory under /tmp/depsetfs-tests (its state dir, mountpoints and
//! data), removed when the test ends. Anything that mounts runs as a bash script inside a
//! private mount namespace (`unshare -m --propagation private`) under `timeout`, so a test can
//! neither leave a mount behind in the test process's namespace nor hang. Everything else here
//! reads what `depsetfs dump` prints and what the host says about files.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

/// The binary under test.
pub const DEPSETFS: &str = env!("CARGO_BIN_EXE_depsetfs");
pub const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");
/// PATH for every child: Debian's standard one, so that `python3` is Debian's, not a
/// developer's pyenv shim (which an unprivileged user could not even reach in /root).
pub const STD_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
pub const PYTHON: &str = "/usr/bin/python3";
/// The unprivileged user of the tests (nobody/nogroup on Debian).
pub const NOBODY: u32 = 65534;
pub const AS_NOBODY: &str = "setpriv --reuid=65534 --regid=65534 --clear-groups";

const TESTS_ROOT: &str = "/tmp/depsetfs-tests";

pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "the integration tests mount FUSE filesystems and must run as root: `sudo bash scripts/test.sh`"
    );
}

/// A test's own directory: `state/` (DEPSETFS_STATE_DIR), `mnt/` (a mountpoint), data.
pub struct TestDir {
    pub path: PathBuf,
}

impl TestDir {
    pub fn new(name: &str) -> TestDir {
        require_root();
        let root = Path::new(TESTS_ROOT);
        fs::create_dir_all(root).unwrap();
        // Reachable by the unprivileged user of the tests.
        fs::set_permissions(root, fs::Permissions::from_mode(0o755)).unwrap();
        let path = root.join(format!("{name}-{}", std::process::id()));
        if path.exists() {
            remove_tree(&path);
        }
        for dir in [path.clone(), path.join("state"), path.join("mnt")] {
            fs::create_dir(&dir).unwrap();
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        }
        TestDir { path }
    }

    pub fn join(&self, rel: &str) -> PathBuf {
        self.path.join(rel)
    }

    /// DEPSETFS_STATE_DIR of this test.
    pub fn state(&self) -> PathBuf {
        self.join("state")
    }

    /// `$MP` in scripts.
    pub fn mnt(&self) -> PathBuf {
        self.join("mnt")
    }

    /// The log most tests pass with --log: `$T/log`.
    pub fn log(&self) -> PathBuf {
        self.join("log")
    }

    pub fn str(&self) -> &str {
        self.path.to_str().unwrap()
    }

    /// Copies a file of tests/scripts into the test directory (readable by everyone, unlike a
    /// checkout under /root) and returns its new path.
    pub fn install_script(&self, name: &str) -> PathBuf {
        let to = self.join(name);
        fs::copy(
            Path::new(MANIFEST_DIR).join("tests/scripts").join(name),
            &to,
        )
        .unwrap();
        fs::set_permissions(&to, fs::Permissions::from_mode(0o755)).unwrap();
        to
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        // A daemon that outlived its script keeps that namespace, and its mount, alive.
        kill_daemons(&self.state());
        if std::env::var_os("DEPSETFS_KEEP_TEST_DIRS").is_some() {
            eprintln!("kept {}", self.path.display());
            return;
        }
        remove_tree(&self.path);
    }
}

fn remove_tree(path: &Path) {
    // Never recurse into something mounted (there should be nothing: tests mount only in
    // private namespaces).
    let mounted = mounts_under(path);
    if mounted.is_empty() {
        let _ = fs::remove_dir_all(path);
    } else {
        eprintln!(
            "not removing {}: still mounted here: {mounted:?}",
            path.display()
        );
    }
}

/// Mount points at or below `dir` in this process's mount namespace.
pub fn mounts_under(dir: &Path) -> Vec<String> {
    let dir = dir.to_str().unwrap();
    let table = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    table
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| *m == dir || m.starts_with(&format!("{dir}/")))
        .map(str::to_string)
        .collect()
}

/// Daemons recorded in `STATE/mounts/*.json` ("pid"), killed if still running depsetfs.
pub fn daemon_pids(state: &Path) -> Vec<i32> {
    let Ok(entries) = fs::read_dir(state.join("mounts")) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .filter_map(|e| fs::read_to_string(e.path()).ok())
        .filter_map(|s| serde_json::from_str::<Value>(&s).ok())
        .filter_map(|v| v["pid"].as_i64())
        .map(|p| p as i32)
        .collect()
}

fn kill_daemons(state: &Path) {
    for pid in daemon_pids(state) {
        let exe = fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
        if exe.to_string_lossy().contains("depsetfs") {
            // SAFETY: plain kill(2) of a process we started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// What a child did.
#[derive(Debug)]
pub struct Outcome {
    /// Exit code; None if killed by a signal. 124 (or 137) means `timeout` stopped it.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }

    pub fn describe(&self) -> String {
        format!(
            "exit code {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.code, self.stdout, self.stderr
        )
    }

    /// Panics with the whole outcome unless the exit code was 0.
    pub fn assert_ok(&self, what: &str) -> &Self {
        assert!(self.ok(), "{what} failed: {}", self.describe());
        self
    }

    pub fn stdout_lines(&self) -> Vec<&str> {
        self.stdout.lines().collect()
    }
}

/// The `key=value` lines of a script's stdout.
pub fn key_values(out: &Outcome) -> BTreeMap<String, String> {
    out.stdout
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Prepended to every script: strict mode, and on any exit leave nothing mounted under $T
/// (mirrors through `depsetfs umount`, the rest lazily), silently.
const PRELUDE: &str = r#"set -euo pipefail
__depsetfs_test_cleanup() {
  local rc=$? mp fstype
  set +e
  awk -v t="$T/" 'index($5, t) == 1 { for (i = 7; i <= NF; i++) if ($i == "-") { print $5, $(i + 1); break } }' \
    /proc/self/mountinfo | tac | while read -r mp fstype; do
    if [ "$fstype" = fuse.depsetfs ]; then
      timeout -k 2 20 "$DEPSETFS" umount "$mp" >/dev/null 2>&1 || umount -l "$mp" >/dev/null 2>&1
    else
      umount -l "$mp" >/dev/null 2>&1
    fi
  done
  return $rc
}
trap __depsetfs_test_cleanup EXIT
trap 'exit 143' TERM INT
# "MOUNTPOINT FSTYPE" of every mount, for before/after comparisons.
mount_table() { awk '{ for (i = 7; i <= NF; i++) if ($i == "-") { print $5, $(i + 1); break } }' /proc/self/mountinfo | sort; }
mounts_under() { awk -v t="$1" '$5 == t || index($5, t "/") == 1 { print $5 }' /proc/self/mountinfo; }
"#;

fn script_command(t: &TestDir, secs: u64, namespace: bool, script: &str) -> Command {
    let mut cmd = Command::new("timeout");
    cmd.args(["-k", "5", &secs.to_string()]);
    if namespace {
        cmd.args(["unshare", "-m", "--propagation", "private"]);
    }
    cmd.args(["bash", "-c", &format!("{PRELUDE}\n{script}")]);
    cmd.env_clear()
        .env("PATH", STD_PATH)
        .env("HOME", "/root")
        .env("LC_ALL", "C")
        .env("DEPSETFS", DEPSETFS)
        .env("DEPSETFS_STATE_DIR", t.state())
        .env("T", &t.path)
        .env("MP", t.mnt())
        .env("HELPERS", Path::new(MANIFEST_DIR).join("mount-helpers"))
        .env("PY", PYTHON)
        .env("AS_NOBODY", AS_NOBODY)
        .current_dir(&t.path)
        .stdin(Stdio::null());
    cmd
}

fn collect(mut cmd: Command) -> Outcome {
    let out = cmd.output().expect("cannot start timeout/unshare/bash");
    Outcome {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs a bash script in a new private mount namespace, killed after `secs` seconds. Variables
/// set for it: DEPSETFS (the binary), DEPSETFS_STATE_DIR, T (the test dir, also the cwd), MP
/// (T/mnt), HELPERS (mount-helpers/), PY (/usr/bin/python3), AS_NOBODY (a setpriv prefix).
/// Functions: mount_table, mounts_under DIR.
pub fn ns_script(t: &TestDir, secs: u64, script: &str) -> Outcome {
    collect(script_command(t, secs, true, script))
}

/// The same, in the test process's own mount namespace: only for scripts that mount nothing.
pub fn host_script(t: &TestDir, secs: u64, script: &str) -> Outcome {
    collect(script_command(t, secs, false, script))
}

/// `depsetfs ARGS` directly, bounded in time: only for subcommands that mount nothing (dump).
pub fn depsetfs(t: &TestDir, args: &[&str]) -> Outcome {
    let mut cmd = Command::new("timeout");
    cmd.args(["-k", "5", "120", DEPSETFS])
        .args(args)
        .env_clear()
        .env("PATH", STD_PATH)
        .env("LC_ALL", "C")
        .env("DEPSETFS_STATE_DIR", t.state())
        .current_dir(&t.path)
        .stdin(Stdio::null());
    collect(cmd)
}

/// `depsetfs ARGS` in a private mount namespace, each argument quoted for the shell: for the
/// subcommands that mount (verify, report --verify).
pub fn depsetfs_ns(t: &TestDir, args: &[&str]) -> Outcome {
    let quoted: Vec<String> = args
        .iter()
        .map(|arg| format!("'{}'", arg.replace('\'', r"'\''")))
        .collect();
    ns_script(t, 400, &format!(r#""$DEPSETFS" {}"#, quoted.join(" ")))
}

/// Every record of `depsetfs dump --log LOG`, checked: exit 0, JSON lines, header first.
pub fn dump_events(t: &TestDir, log: &Path) -> Vec<Value> {
    let out = depsetfs(t, &["dump", "--log", log.to_str().unwrap()]);
    out.assert_ok("depsetfs dump");
    parse_events(&out.stdout)
}

pub fn parse_events(stdout: &str) -> Vec<Value> {
    let events: Vec<Value> = stdout
        .lines()
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("dump printed a non-JSON line ({e}): {l}"))
        })
        .collect();
    assert!(
        events.first().is_some_and(|h| h["type"] == "header"),
        "the first line of dump is not a header: {:?}",
        events.first()
    );
    events
}

/// The deployment set: `depsetfs dump --set [--log LOG]`, checked to be sorted, unique,
/// absolute paths.
pub fn dump_set(t: &TestDir, log: Option<&Path>) -> BTreeSet<String> {
    let mut args = vec!["dump", "--set"];
    if let Some(log) = log {
        args.extend(["--log", log.to_str().unwrap()]);
    }
    let out = depsetfs(t, &args);
    out.assert_ok("depsetfs dump --set");
    let lines: Vec<&str> = out.stdout.lines().collect();
    for l in &lines {
        assert!(l.starts_with('/'), "not an absolute path in the set: {l:?}");
    }
    for pair in lines.windows(2) {
        assert!(
            pair[0] < pair[1],
            "the set is not sorted and unique: {:?} then {:?}",
            pair[0],
            pair[1]
        );
    }
    lines.into_iter().map(str::to_string).collect()
}

/// `depsetfs dump --set --json --log LOG`, checked to list the same paths as `dump --set`.
pub fn dump_set_json(t: &TestDir, log: &Path, plain: &BTreeSet<String>) -> Value {
    let out = depsetfs(
        t,
        &["dump", "--set", "--json", "--log", log.to_str().unwrap()],
    );
    out.assert_ok("depsetfs dump --set --json");
    let v: Value = serde_json::from_str(out.stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "dump --set --json is not one JSON value ({e}): {}",
            out.stdout
        )
    });
    let entries = v["entries"].as_array().expect("no \"entries\" array");
    let paths: BTreeSet<String> = entries
        .iter()
        .map(|e| e["path"].as_str().expect("entry without path").to_string())
        .collect();
    assert_eq!(&paths, plain, "dump --set --json and dump --set disagree");
    assert!(
        v["required_devices"].is_array(),
        "no required_devices array: {v}"
    );
    assert!(
        v["dropped_missing"].is_u64(),
        "no dropped_missing count: {v}"
    );
    v
}

pub fn json_entry<'a>(json: &'a Value, path: &str) -> &'a Value {
    json["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["path"] == path)
        .unwrap_or_else(|| panic!("{path} has no entry in dump --set --json"))
}

pub fn of_type<'a>(events: &'a [Value], ty: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    events.iter().filter(move |e| e["type"] == ty)
}

pub fn has_intent(access: &Value, name: &str) -> bool {
    access["intent"]
        .as_array()
        .is_some_and(|a| a.iter().any(|i| i == name))
}

/// Access records of a successful open of `path` with intent "exec".
pub fn exec_opens<'a>(events: &'a [Value], path: &'a str) -> Vec<&'a Value> {
    of_type(events, "access")
        .filter(|a| a["op"] == "open" && a["path"] == path && a["errno"] == 0)
        .filter(|a| has_intent(a, "exec"))
        .collect()
}

pub fn assert_exec_open(events: &[Value], path: &str) {
    assert!(
        !exec_opens(events, path).is_empty(),
        "no open of {path} with intent exec; opens of it: {:?}",
        of_type(events, "access")
            .filter(|a| a["path"] == path)
            .collect::<Vec<_>>()
    );
}

// ---- What the host says -------------------------------------------------------------------

/// Where a program NAME is found on the standard PATH (the first executable file; not a shell
/// builtin of that name).
pub fn host_command(name: &str) -> String {
    STD_PATH
        .split(':')
        .map(|dir| Path::new(dir).join(name))
        .find(|p| fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
        .unwrap_or_else(|| panic!("{name} is not installed on the host"))
        .to_str()
        .unwrap()
        .to_string()
}

pub fn canonical(path: &str) -> String {
    fs::canonicalize(path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .to_str()
        .unwrap()
        .to_string()
}

/// Every path the kernel goes through to reach `path`: each symlink met on the way (e.g.
/// /lib64, /usr/lib64/ld-linux-x86-64.so.2 and /lib for /lib64/ld-linux-x86-64.so.2 on a
/// usrmerged Debian), then the file itself. A deployment set without these links would not
/// resolve the path the program asks for.
pub fn resolution_chain(path: &str) -> Vec<String> {
    let mut chain = Vec::new();
    let mut todo: Vec<String> = path.split('/').rev().map(str::to_string).collect();
    let mut cur = PathBuf::from("/");
    let mut links = 0;
    while let Some(c) = todo.pop() {
        match c.as_str() {
            "" | "." => continue,
            ".." => {
                cur.pop();
                continue;
            }
            _ => {}
        }
        let next = cur.join(&c);
        let meta =
            fs::symlink_metadata(&next).unwrap_or_else(|e| panic!("{}: {e}", next.display()));
        if meta.file_type().is_symlink() {
            links += 1;
            assert!(links < 40, "symlink loop at {path}");
            chain.push(next.to_str().unwrap().to_string());
            let target = fs::read_link(&next).unwrap();
            let target = target.to_str().unwrap();
            if target.starts_with('/') {
                cur = PathBuf::from("/");
            }
            todo.extend(target.split('/').rev().map(str::to_string));
        } else {
            cur = next;
        }
    }
    chain.push(cur.to_str().unwrap().to_string());
    chain
}

/// The ELF interpreter and the shared libraries of a binary, as `ldd` names them (the paths
/// the dynamic loader opens, before symlinks are resolved).
pub fn elf_deps(binary: &str) -> (String, Vec<String>) {
    let out = Command::new("timeout")
        .args(["30", "ldd", binary])
        .env("PATH", STD_PATH)
        .env("LC_ALL", "C")
        .output()
        .unwrap();
    assert!(out.status.success(), "ldd {binary} failed");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut interp = None;
    let mut libs = Vec::new();
    for line in text.lines().map(str::trim) {
        if let Some((_, rest)) = line.split_once("=> ") {
            if rest.starts_with('/') {
                libs.push(rest.split(' ').next().unwrap().to_string());
            }
        } else if line.starts_with('/') {
            interp = Some(line.split(' ').next().unwrap().to_string());
        }
    }
    (interp.expect("ldd named no ELF interpreter"), libs)
}

// ---- Assertions on a deployment set --------------------------------------------------------

pub fn assert_in_set(set: &BTreeSet<String>, path: &str, why: &str) {
    assert!(
        set.contains(path),
        "{path} ({why}) is missing from the deployment set:\n{}",
        show_set(set)
    );
}

pub fn assert_not_in_set(set: &BTreeSet<String>, path: &str) {
    assert!(
        !set.contains(path),
        "{path} has nothing to do with the command but is in the deployment set"
    );
}

/// `path` and every symlink on the way to it are in the set.
pub fn assert_chain_in_set(set: &BTreeSet<String>, path: &str, why: &str) {
    for p in resolution_chain(path) {
        assert_in_set(set, &p, &format!("{why}: resolving {path}"));
    }
}

/// The program found as `name` on PATH: the binary, its ELF interpreter and every library it
/// links, each with the symlinks that lead to it. Returns the binary's canonical path.
pub fn assert_program_in_set(set: &BTreeSet<String>, name: &str) -> String {
    let found = host_command(name);
    assert_chain_in_set(set, &found, &format!("the program {name}"));
    let binary = canonical(&found);
    let (interp, libs) = elf_deps(&binary);
    assert_chain_in_set(set, &interp, &format!("ELF interpreter of {binary}"));
    for lib in &libs {
        assert_chain_in_set(set, lib, &format!("library of {binary}"));
    }
    assert!(
        libs.iter().any(|l| l.contains("libc.so")),
        "ldd found no libc for {binary}: {libs:?}"
    );
    binary
}

/// Files that no test command touches.
pub fn assert_unrelated_absent(set: &BTreeSet<String>) {
    for p in [
        "/etc/shadow",
        "/etc/gshadow",
        "/usr/bin/gcc",
        "/usr/bin/perl",
        "/usr/share/doc",
        "/root/.bashrc",
        "/boot",
    ] {
        assert_not_in_set(set, p);
    }
}

/// Where the mirror was mounted on the host, from the log's header.
pub fn header_mountpoint(events: &[Value]) -> PathBuf {
    PathBuf::from(
        events[0]["mountpoint"]
            .as_str()
            .unwrap_or_else(|| panic!("no mountpoint in the header: {}", events[0])),
    )
}

/// No path of the set is a host path of the test's directories (mountpoint, state dir).
pub fn assert_no_host_paths(set: &BTreeSet<String>, host_dirs: &[&Path]) {
    for dir in host_dirs {
        let dir = dir.to_str().unwrap();
        for p in set {
            assert!(
                p != dir && !p.starts_with(&format!("{dir}/")),
                "{p} in the set is a host path (under {dir}), not a path inside the mirror"
            );
        }
    }
}

pub fn show_set(set: &BTreeSet<String>) -> String {
    let v: Vec<&str> = set.iter().map(String::as_str).collect();
    if v.len() > 200 {
        format!("{}\n... ({} paths)", v[..200].join("\n"), v.len())
    } else {
        v.join("\n")
    }
}

/// Every ELF file of an exported root loads there: the dynamic loader's `--list`, chrooted into
/// the root (the check `depsetfs verify` makes too, done here independently of it). Static
/// files ("not a dynamic executable") pass.
pub fn assert_every_elf_loads(root: &Path) {
    let loader = "/lib64/ld-linux-x86-64.so.2";
    let mut elves = Vec::new();
    let mut names = BTreeSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                stack.push(entry.path());
                continue;
            }
            let mut head = [0u8; 4];
            let is_elf = kind.is_file()
                && fs::File::open(entry.path())
                    .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head))
                    .is_ok()
                && &head == b"\x7fELF";
            if is_elf {
                names.insert(entry.file_name().to_string_lossy().into_owned());
                elves.push(entry.path());
            }
        }
    }
    assert!(!elves.is_empty(), "no ELF file in {}", root.display());
    let mut broken = Vec::new();
    for path in elves {
        let inside = Path::new("/").join(path.strip_prefix(root).unwrap());
        let out = Command::new(host_command("timeout"))
            .args(["30", &host_command("chroot")])
            .arg(root)
            .args([loader, "--list"])
            .arg(&inside)
            .env_clear()
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        const MARK: &str = "error while loading shared libraries: ";
        let Some(at) = stderr.find(MARK).filter(|_| !out.status.success()) else {
            continue;
        };
        let missing = stderr[at + MARK.len()..]
            .split(':')
            .next()
            .unwrap_or("")
            .trim();
        // A plugin library whose dependency is in the root, where its program loads it first
        // (the JDK's lib/libjava.so and lib/server/libjvm.so).
        let plugin = inside.to_string_lossy().contains(".so") && names.contains(missing);
        if !plugin {
            broken.push(format!("{}: {}", inside.display(), stderr.trim()));
        }
    }
    assert!(broken.is_empty(), "would not load:\n{}", broken.join("\n"));
}
pub mod webdriver;

/// A unix-socket server and client in Python, written into the test's directory; returns the
/// shell script that starts the server on `$T/app.sock`, waits for the socket, runs the client
/// (which prints what the server sent) and waits for both.
pub fn unix_socket_pair(t: &TestDir) -> String {
    fs::write(
        t.join("server.py"),
        "import os, socket, sys\n\
         s = socket.socket(socket.AF_UNIX)\n\
         s.bind(sys.argv[1])\n\
         s.listen(1)\n\
         c, _ = s.accept()\n\
         c.sendall(b'pong')\n\
         c.close()\n",
    )
    .unwrap();
    fs::write(
        t.join("client.py"),
        "import socket, sys\n\
         c = socket.socket(socket.AF_UNIX)\n\
         c.connect(sys.argv[1])\n\
         print(c.recv(4).decode())\n",
    )
    .unwrap();
    format!(
        "{PYTHON} {t}/server.py {t}/app.sock &\n\
         for i in $(seq 100); do [ -S {t}/app.sock ] && break; sleep 0.05; done\n\
         {PYTHON} {t}/client.py {t}/app.sock\n\
         wait\n",
        t = t.str()
    )
}
