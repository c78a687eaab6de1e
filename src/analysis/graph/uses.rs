//! How one kind of access becomes an edge: whether it makes the process depend on the file
//! (a use), the file depend on the process (it produced the file), or both, and the short
//! operation name shown on edges. Failed accesses are "missing" edges: they say where a
//! process searched and never make anything depend on anything.

use serde::Serialize;

use crate::record::{Op, TimeNs, intent};

/// A process as the log tells them apart: pids are reused, (pid, start time) is not; and in a
/// merged log each run has its own pid space (and clock), so the run comes first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProcessId {
    /// Index of the run in the log (0 for the log of one run).
    pub run: u32,
    pub pid: u32,
    /// Clock ticks since boot.
    pub start: u64,
}

/// What distinguishes one kind of use of a path by one process from another.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UseKind {
    pub op: Op,
    /// [`intent`] bits as recorded.
    pub intent: u32,
    /// 0 on success, else the errno the process got.
    pub errno: i32,
    /// The path was the second path of the operation (the new name of a rename or link, the
    /// destination of copy_file_range).
    pub as_target: bool,
}

/// Totals over all records of one [`UseKind`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UseTotals {
    pub count: u64,
    pub bytes: u64,
    pub first_ns: TimeNs,
    pub last_ns: TimeNs,
}

/// "open(read,exec)", "lookup", "rename(to)". Intent is shown for opens only: read and
/// write records repeat their open's intent.
pub fn describe_use(kind: &UseKind) -> String {
    let mut details: Vec<&str> = Vec::new();
    if kind.as_target {
        details.push("to");
    }
    if matches!(kind.op, Op::Open | Op::Create | Op::Opendir) {
        details.extend(intent::names(kind.intent));
    }
    if details.is_empty() {
        kind.op.name().to_string()
    } else {
        format!("{}({})", kind.op.name(), details.join(","))
    }
}

/// The operation an edge stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FileOp {
    /// Opened for reading, read, or copied from.
    Read,
    /// Opened by execve: a binary, a `#!` interpreter, the ELF interpreter.
    Exec,
    /// Looked up, stat'ed, opened without reading, locked: the name and attributes only.
    Stat,
    Readlink,
    /// opendir/readdir.
    Readdir,
    /// Every access of this kind failed.
    Missing,
    /// Written (or opened for writing).
    Write,
    /// Created: create, mknod, mkdir, symlink, or the new name of a link.
    Create,
    /// Opened with O_TRUNC.
    Truncate,
    /// Attributes, extended attributes or allocation changed.
    Modify,
    /// The new name of a rename.
    RenameInto,
    /// The old name of a rename.
    RenameFrom,
    /// unlink or rmdir.
    Unlink,
}

impl FileOp {
    pub fn of(kind: &UseKind) -> FileOp {
        if kind.errno != 0 {
            return FileOp::Missing;
        }
        match kind.op {
            Op::Open => open_op(kind.intent),
            Op::Read => FileOp::Read,
            Op::Readlink => FileOp::Readlink,
            Op::Opendir | Op::Readdir => FileOp::Readdir,
            Op::Write | Op::Fsync => FileOp::Write,
            Op::Create | Op::Mknod | Op::Mkdir | Op::Symlink => FileOp::Create,
            Op::Link if kind.as_target => FileOp::Create,
            Op::Rename if kind.as_target => FileOp::RenameInto,
            Op::Rename => FileOp::RenameFrom,
            Op::CopyFileRange if kind.as_target => FileOp::Write,
            Op::CopyFileRange => FileOp::Read,
            Op::Unlink | Op::Rmdir => FileOp::Unlink,
            Op::Setattr | Op::Setxattr | Op::Removexattr | Op::Fallocate => FileOp::Modify,
            _ => FileOp::Stat,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            FileOp::Read => "read",
            FileOp::Exec => "exec",
            FileOp::Stat => "stat",
            FileOp::Readlink => "readlink",
            FileOp::Readdir => "readdir",
            FileOp::Missing => "missing",
            FileOp::Write => "write",
            FileOp::Create => "create",
            FileOp::Truncate => "truncate",
            FileOp::Modify => "modify",
            FileOp::RenameInto => "rename-into",
            FileOp::RenameFrom => "rename-from",
            FileOp::Unlink => "unlink",
        }
    }
}

fn open_op(bits: u32) -> FileOp {
    if bits & intent::EXEC != 0 {
        FileOp::Exec
    } else if bits & intent::TRUNCATE != 0 {
        FileOp::Truncate
    } else if bits & intent::READ != 0 {
        FileOp::Read
    } else if bits & intent::WRITE != 0 {
        FileOp::Write
    } else {
        FileOp::Stat
    }
}

/// The access changed the file or its name (the caller checks success). An open for writing
/// counts: what it writes may reach the kernel only as writeback, made by pid 0.
pub(crate) fn produces(kind: &UseKind) -> bool {
    match kind.op {
        Op::Open => kind.intent & (intent::WRITE | intent::TRUNCATE) != 0,
        Op::CopyFileRange => kind.as_target,
        Op::Link => kind.as_target,
        op => op.mutates(),
    }
}

/// The access made the process depend on the file (the caller checks success): anything but
/// a pure production. An open for reading and writing is both.
pub(crate) fn consumes(kind: &UseKind) -> bool {
    reads_content(kind) || !produces(kind)
}

/// The access opened a handle that can read the file (for reading, or running: the kernel reads
/// a binary through its exec open): reads through it may never reach the daemon (passthrough,
/// the page cache, mmap), so they count from the open until the handle's release. A create for
/// reading counts too: it reads nothing at the create, but may read what others write later.
pub(crate) fn opens_for_reading(kind: &UseKind) -> bool {
    match kind.op {
        Op::Open => kind.intent & (intent::READ | intent::EXEC) != 0,
        Op::Create => kind.intent & intent::READ != 0,
        _ => false,
    }
}

/// The access read the file's content or listing, not just its name or attributes.
pub(crate) fn reads_content(kind: &UseKind) -> bool {
    match kind.op {
        // A create's READ intent reads nothing: the file was empty a moment ago.
        Op::Open => kind.intent & (intent::READ | intent::EXEC) != 0,
        Op::Read | Op::Readlink | Op::Opendir | Op::Readdir => true,
        Op::CopyFileRange => !kind.as_target,
        _ => false,
    }
}
