//! Test fixtures of the analysis side, in one place: a scratch source tree removed when
//! dropped ([`ScratchTree`]), log headers and one-line record builders, the scenario the set
//! tests share (a service and a helper on a small tree), rules that change nothing
//! ([`no_rules`]), and the real set path on them ([`real_set`]). Compiled for tests only.

use std::fs;
use std::io;
use std::os::unix::fs::symlink;
use std::path::PathBuf;

use crate::analysis::closure::Reason;
use crate::analysis::closure::{DeploymentSet, SetEntry, SetOptions};
use crate::analysis::graph::build::graph_from_records;
use crate::analysis::graph::uses::ProcessId;
use crate::analysis::rules::Rules;
use crate::analysis::select::{Selector, select};
use crate::analysis::strategy::{Strategy, StrategyOptions, StrategySet, compute};
use crate::event::{
    Access, FileKind, LOG_FORMAT_VERSION, LOG_MAGIC, LogHeader, Op, ProcessInfo, Record, TimeNs,
    intent,
};
use crate::log::LogContents;

pub const SERVICE: ProcessId = ProcessId {
    pid: 100,
    start: 5000,
};
pub const HELPER: ProcessId = ProcessId {
    pid: 200,
    start: 6000,
};

/// A source tree under the system temp directory, removed when dropped.
pub struct ScratchTree {
    pub root: PathBuf,
}

impl ScratchTree {
    pub fn new(name: &str) -> io::Result<ScratchTree> {
        let root = std::env::temp_dir().join(format!("depsetfs-set-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(&root)?;
        Ok(ScratchTree { root })
    }

    pub fn file(&self, path: &str, content: &str) -> io::Result<()> {
        let host = self.root.join(path.trim_start_matches('/'));
        if let Some(parent) = host.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::write(host, content)
    }

    pub fn dir(&self, path: &str) -> io::Result<()> {
        fs::create_dir_all(self.root.join(path.trim_start_matches('/')))
    }

    pub fn link(&self, path: &str, target: &str) -> io::Result<()> {
        symlink(target, self.root.join(path.trim_start_matches('/')))
    }
}

impl ScratchTree {
    /// A node like /dev/null; false when this user may not make device nodes.
    pub fn char_device(&self, path: &str) -> io::Result<bool> {
        let host = self.root.join(path.trim_start_matches('/'));
        let host = std::ffi::CString::new(host.into_os_string().into_encoded_bytes())?;
        let mode = libc::S_IFCHR | 0o666;
        // SAFETY: `host` is a NUL-terminated path that outlives the call.
        let made = unsafe { libc::mknod(host.as_ptr(), mode, libc::makedev(1, 3)) };
        Ok(made == 0)
    }
}

impl Drop for ScratchTree {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.root);
    }
}

pub fn header(source: &str, mountpoint: &str) -> LogHeader {
    LogHeader {
        magic: LOG_MAGIC.to_string(),
        version: LOG_FORMAT_VERSION,
        source: source.to_string(),
        mountpoint: mountpoint.to_string(),
        host: "test".to_string(),
        kernel: "6.0".to_string(),
        started_ns: 1,
        boot_time_ns: 0,
        clock_ticks: 100,
        fidelity: "full".to_string(),
        network_recorded: false,
        command: None,
    }
}

/// A successful record, as the daemon would write it once merged.
pub fn access(process: ProcessId, op: Op, path: &str, kind: FileKind) -> Access {
    Access {
        pid: process.pid,
        tid: process.pid,
        start: process.start,
        op,
        path: path.as_bytes().to_vec(),
        target: None,
        errno: 0,
        intent: 0,
        kind,
        count: 1,
        bytes: 0,
        first_ns: 10,
        last_ns: 20,
    }
}

pub fn used(process: ProcessId, op: Op, path: &str, kind: FileKind) -> Record {
    Record::Access(access(process, op, path, kind))
}

pub fn opened(process: ProcessId, op: Op, path: &str, bits: u32, kind: FileKind) -> Record {
    let intent = bits;
    Record::Access(Access {
        intent,
        ..access(process, op, path, kind)
    })
}

pub fn not_found(process: ProcessId, path: &str) -> Record {
    let errno = libc::ENOENT;
    Record::Access(Access {
        errno,
        ..access(process, Op::Lookup, path, FileKind::Unknown)
    })
}

pub fn renamed(process: ProcessId, from: &str, to: &str) -> Record {
    let target = Some(to.as_bytes().to_vec());
    Record::Access(Access {
        target,
        ..access(process, Op::Rename, from, FileKind::File)
    })
}

pub fn process(id: ProcessId, exe: &str, argv: &[&str], seen_ns: TimeNs) -> Record {
    Record::Process(ProcessInfo {
        pid: id.pid,
        start: id.start,
        ppid: 1,
        exe: exe.as_bytes().to_vec(),
        argv: argv.iter().map(|arg| arg.to_string()).collect(),
        uid: 0,
        gid: 0,
        seen_ns,
    })
}

/// The tree of the scenario: what exists in the source when the set is computed.
pub fn build_source(tree: &ScratchTree) -> io::Result<()> {
    tree.file("/usr/bin/app", "#!binary")?;
    tree.file("/usr/lib/libunused.so", "never used")?;
    tree.file("/etc/app/config.toml", "port = 80\n")?;
    tree.file("/etc/hostname", "fixture\n")?;
    tree.file("/usr/share/zoneinfo/UTC", "TZif2")?;
    tree.link("/etc/localtime", "/usr/share/zoneinfo/UTC")?;
    tree.file("/opt/c/d", "chain end")?;
    tree.dir("/opt/x")?;
    tree.link("/opt/x/a", "b")?;
    tree.link("/opt/x/b", "../c/d")?;
    tree.link("/opt/x/escape", "../../../../../../etc/hostname")?;
    tree.link("/opt/x/loop", "loop")?;
    tree.dir("/var/lib/app/empty")?;
    tree.file("/var/lib/app/state", "renamed into place")?;
    tree.dir("/tmp")?;
    tree.file("/mnt/mirror/inner", "the mirror inside itself")?;
    Ok(())
}

/// What the service did: uses, a failed lookup, a temp file, a rename, kernel trees.
pub fn scenario_records() -> Vec<Record> {
    use FileKind::*;
    use intent::{CREATE, EXEC, READ, WRITE};
    vec![
        process(SERVICE, "/usr/bin/app", &["app"], 1),
        process(SERVICE, "/usr/bin/app", &["app", "--serve"], 2),
        process(HELPER, "/usr/bin/helper", &["helper"], 1),
        used(SERVICE, Op::Lookup, "/usr/bin/app", File),
        opened(SERVICE, Op::Open, "/usr/bin/app", READ | EXEC, File),
        opened(SERVICE, Op::Open, "/etc/app/config.toml", READ, File),
        not_found(SERVICE, "/etc/app/override.toml"),
        used(SERVICE, Op::Readlink, "/etc/localtime", Symlink),
        used(SERVICE, Op::Lookup, "/opt/x/a", Symlink),
        used(HELPER, Op::Lookup, "/opt/x/escape", Symlink),
        used(HELPER, Op::Lookup, "/opt/x/loop", Symlink),
        used(SERVICE, Op::Lookup, "/var/lib/app/empty", Dir),
        opened(SERVICE, Op::Create, "/tmp/app.tmp", WRITE | CREATE, File),
        used(SERVICE, Op::Write, "/tmp/app.tmp", File),
        used(SERVICE, Op::Unlink, "/tmp/app.tmp", File),
        opened(SERVICE, Op::Create, "/var/lib/app/state.new", WRITE, File),
        renamed(SERVICE, "/var/lib/app/state.new", "/var/lib/app/state"),
        opened(SERVICE, Op::Open, "/proc/cpuinfo", READ, File),
        used(SERVICE, Op::Getattr, "/proc/self", Symlink),
        opened(SERVICE, Op::Open, "/dev/null", READ | WRITE, CharDevice),
        used(SERVICE, Op::Lookup, "/mnt/mirror/inner", File),
    ]
}

pub fn scenario(tree: &ScratchTree) -> io::Result<(LogContents, SetOptions)> {
    build_source(tree)?;
    let source = tree.root.to_string_lossy().into_owned();
    let mountpoint = format!("{source}/mnt/mirror");
    let contents = LogContents {
        header: header(&source, &mountpoint),
        records: scenario_records(),
        truncated_at: None,
    };
    let options = SetOptions::from_header(&contents.header);
    Ok((contents, options))
}

pub fn paths_with_reasons(set: &DeploymentSet) -> Vec<(String, Reason)> {
    set.entries
        .iter()
        .map(|entry| {
            (
                String::from_utf8_lossy(&entry.path).into_owned(),
                entry.reason,
            )
        })
        .collect()
}

pub fn entry<'a>(set: &'a DeploymentSet, path: &str) -> Option<&'a SetEntry> {
    set.entries
        .iter()
        .find(|entry| entry.path == path.as_bytes())
}

/// Rules that change nothing: no includes, excludes, noise or stubs (the built-in rules are
/// merged into every rules file).
pub fn no_rules() -> Rules {
    Rules {
        include: Vec::new(),
        exclude: Vec::new(),
        noise: Vec::new(),
        drop_outputs: false,
        system_setup: Vec::new(),
        exec_tolerant: Vec::new(),
        stubs: Vec::new(),
        select: Vec::new(),
        origin: "none".to_string(),
    }
}

/// The set the commands compute: graph, selection, strategy, closure.
pub fn real_set(
    contents: &LogContents,
    options: &SetOptions,
    selectors: &[Selector],
    strategy: Strategy,
) -> StrategySet {
    let graph = graph_from_records(&contents.header, &contents.records);
    let selection = select(&graph, selectors).unwrap_or_else(|e| panic!("{e}"));
    let strategy = StrategyOptions {
        strategy,
        stubs: false,
    };
    compute(&graph, &selection, &no_rules(), options, &strategy)
}
