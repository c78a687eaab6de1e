//! The records: what depsetfs records, the contract between recording and analysis.
//!
//! Every FUSE request becomes an [`Access`] (who, which operation, which path, the outcome, the
//! open intent); the process tracker adds [`ProcessInfo`], fork, exec and exit records. These
//! types are the contract between the recording side (filesystem handlers, process tracking,
//! the log writer) and the analysis side (log reader, deployment set, graph). They are written
//! to the log as MessagePack maps (field names kept) so that later versions can add fields;
//! docs/log-format.md describes the encoding.

use serde::{Deserialize, Serialize};

/// Identifies a log file; the first value of every log is a [`LogHeader`] with this magic.
pub const LOG_MAGIC: &str = "depsetfs-log";
/// Bumped when a change to these types would make an older reader misread a log.
pub const LOG_FORMAT_VERSION: u32 = 4;
/// The oldest version this depsetfs still reads: a version 1 log is a version 2 log without
/// [`Record::Net`] records, a version 2 log a version 3 log without [`Record::End`], a
/// version 3 log a version 4 log without [`Record::Run`] (one run, no `runs` in the header).
pub const OLDEST_READABLE_VERSION: u32 = 1;
/// The first version whose writer ends every cleanly closed log with [`Record::End`]: only
/// from it on does a missing end record mean that the recorder was killed.
pub const FIRST_VERSION_WITH_END: u32 = 3;

/// `source` of the [`LostEvents`] a daemon records when it could not listen to
/// the proc connector at all: the log has no fork, exec or exit records.
pub const CONNECTOR_UNAVAILABLE_SOURCE: &str = "proc-connector-unavailable";
/// [`LostEvents::source`] of the marker written once writing works again after failed writes
/// discarded records; its count is the number of records discarded.
pub const LOST_TO_WRITE_ERRORS: &str = "log-write";

/// Nanoseconds since the Unix epoch.
pub type TimeNs = u64;

/// The first value of a log: what was mirrored, where, on which machine, from when.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct LogHeader {
    pub magic: String,
    pub version: u32,
    /// The mirrored tree on the host (usually `/`).
    pub source: String,
    /// Where the mirror was mounted on the host.
    pub mountpoint: String,
    pub host: String,
    /// `uname -r` of the recording machine.
    pub kernel: String,
    pub started_ns: TimeNs,
    /// Boot time, so that process start times (clock ticks since boot) convert to wall time.
    pub boot_time_ns: TimeNs,
    /// Clock ticks per second (`sysconf(_SC_CLK_TCK)`).
    pub clock_ticks: u64,
    /// `full`: every lookup and getattr reached the daemon (no kernel caching);
    /// `attr-timeout-Nms`: the kernel cached attributes for N ms (lookups still reached it).
    pub fidelity: String,
    /// Whether TCP/UDP connect/bind/listen/accept were recorded (only when depsetfs started
    /// the service itself).
    pub network_recorded: bool,
    /// For `depsetfs run`: the command, its working directory (as seen in the mirror) and the
    /// pid of the process that ran it.
    #[serde(default)]
    pub command: Option<TracedCommand>,
    /// The name of the run (`--label`; default: the log's file stem). Absent in logs older
    /// than labels: readers name such a run after its file.
    #[serde(default)]
    pub label: Option<String>,
    /// A merged log (`depsetfs merge`, version 4): the header of every run it holds, in
    /// order; each run's records follow a [`Record::Run`] naming its index here. Empty for
    /// the log of one run.
    #[serde(default)]
    pub runs: Vec<LogHeader>,
    /// For `depsetfs run --image`: the OCI image whose unpacked root (`source`) was traced.
    #[serde(default)]
    pub image: Option<TracedImage>,
    /// The addresses that identify the host on the network (docs/hosts.md): the interface
    /// addresses of the traced command's network namespace without loopback and link-local
    /// ones, then those declared with `--address`. Empty in logs written before it.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// Where [`LogHeader::addresses`] came from, in words.
    #[serde(default)]
    pub addresses_from: String,
}

impl LogHeader {
    /// Whether this is the header of a merged log (its records are in run segments).
    pub fn is_merged(&self) -> bool {
        !self.runs.is_empty()
    }

    /// The headers of the runs the log holds: the merged log's list, or the log's own header.
    pub fn run_headers(&self) -> Vec<&LogHeader> {
        if self.runs.is_empty() {
            vec![self]
        } else {
            self.runs.iter().collect()
        }
    }
}

/// The host part of a header as `mount` and `run` hand it to the daemon (`--host`, the
/// addresses found in the command's network namespace).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct HostIdentity {
    pub name: String,
    pub addresses: Vec<String>,
    /// Where the addresses came from, in words (`the network namespace /run/netns/web`).
    pub addresses_from: String,
}

/// The command `depsetfs run` started.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct TracedCommand {
    pub argv: Vec<String>,
    pub cwd: String,
    pub pid: u32,
}

/// The OCI image `depsetfs run --image` unpacked and traced.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct TracedImage {
    /// The image layout directory (absolute).
    pub layout: String,
    /// The tag (`org.opencontainers.image.ref.name`) that picked the manifest, if any.
    pub tag: Option<String>,
    /// The manifest's digest (`sha256:…`).
    pub manifest: String,
    /// The config's digest: `export --format oci` keeps that config.
    pub config: String,
}

/// One value after the header.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum Record {
    Access(Access),
    Process(ProcessInfo),
    Fork(ForkEvent),
    Exec(ExecEvent),
    Exit(ExitEvent),
    Lost(LostEvents),
    /// A TCP/UDP/unix socket call of a process whose network calls depsetfs watches.
    Net(NetEvent),
    /// The last record of a log whose recorder stopped in order (version 3).
    End(LogEnd),
    /// In a merged log (version 4): the records up to the next `Run` belong to run `index` of
    /// the header's `runs`.
    Run(RunSegment),
}

/// Starts the segment of one run in a merged log.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunSegment {
    /// Index of the run in [`LogHeader::runs`].
    pub index: u32,
}

/// Written last when the recorder stops in order: a log without it (version 3 on) was cut
/// short, and events after its last record may be missing.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct LogEnd {
    pub ts_ns: TimeNs,
}

impl Record {
    /// The latest time a record names (for an access, its last request).
    pub fn time_ns(&self) -> TimeNs {
        match self {
            Record::Access(access) => access.last_ns,
            Record::Process(info) => info.seen_ns,
            Record::Fork(event) => event.ts_ns,
            Record::Exec(event) => event.ts_ns,
            Record::Exit(event) => event.ts_ns,
            Record::Lost(event) => event.ts_ns,
            Record::Net(event) => event.ts_ns,
            Record::End(end) => end.ts_ns,
            Record::Run(_) => 0,
        }
    }
}

/// The filesystem operation a FUSE request asked for.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Lookup,
    Getattr,
    Setattr,
    Readlink,
    Mknod,
    Mkdir,
    Unlink,
    Rmdir,
    Symlink,
    Rename,
    Link,
    Open,
    Create,
    Read,
    Write,
    Flush,
    Release,
    Fsync,
    Opendir,
    Readdir,
    Releasedir,
    Fsyncdir,
    Statfs,
    Setxattr,
    Getxattr,
    Listxattr,
    Removexattr,
    Fallocate,
    Lseek,
    CopyFileRange,
    Getlk,
    Setlk,
}

impl Op {
    /// The lowercase name used in JSON output and in docs.
    pub fn name(self) -> &'static str {
        match self {
            Op::Lookup => "lookup",
            Op::Getattr => "getattr",
            Op::Setattr => "setattr",
            Op::Readlink => "readlink",
            Op::Mknod => "mknod",
            Op::Mkdir => "mkdir",
            Op::Unlink => "unlink",
            Op::Rmdir => "rmdir",
            Op::Symlink => "symlink",
            Op::Rename => "rename",
            Op::Link => "link",
            Op::Open => "open",
            Op::Create => "create",
            Op::Read => "read",
            Op::Write => "write",
            Op::Flush => "flush",
            Op::Release => "release",
            Op::Fsync => "fsync",
            Op::Opendir => "opendir",
            Op::Readdir => "readdir",
            Op::Releasedir => "releasedir",
            Op::Fsyncdir => "fsyncdir",
            Op::Statfs => "statfs",
            Op::Setxattr => "setxattr",
            Op::Getxattr => "getxattr",
            Op::Listxattr => "listxattr",
            Op::Removexattr => "removexattr",
            Op::Fallocate => "fallocate",
            Op::Lseek => "lseek",
            Op::CopyFileRange => "copy_file_range",
            Op::Getlk => "getlk",
            Op::Setlk => "setlk",
        }
    }

    /// Operations that change the tree or a file's content or metadata: a file touched this
    /// way depends on the process that did it.
    pub fn mutates(self) -> bool {
        matches!(
            self,
            Op::Setattr
                | Op::Mknod
                | Op::Mkdir
                | Op::Unlink
                | Op::Rmdir
                | Op::Symlink
                | Op::Rename
                | Op::Link
                | Op::Create
                | Op::Write
                | Op::Setxattr
                | Op::Removexattr
                | Op::Fallocate
        )
    }
}

/// What an open (or create) meant to do, as bits; also set on read/write records.
pub mod intent {
    pub const READ: u32 = 1;
    pub const WRITE: u32 = 1 << 1;
    pub const CREATE: u32 = 1 << 2;
    pub const TRUNCATE: u32 = 1 << 3;
    /// The kernel opened the file to execute it: a binary, its ELF interpreter, or a `#!`
    /// interpreter (`__FMODE_EXEC` in the open flags).
    pub const EXEC: u32 = 1 << 4;
    pub const APPEND: u32 = 1 << 5;
    /// The open concerned a directory (opendir, readdir).
    pub const DIRECTORY: u32 = 1 << 6;

    /// The flag the kernel sets on opens done by execve (`__FMODE_EXEC`).
    pub const KERNEL_FMODE_EXEC: i32 = 0x20;

    /// Intent bits of open(2) flags as FUSE passes them.
    pub fn from_open_flags(flags: i32) -> u32 {
        let mut bits = match flags & libc::O_ACCMODE {
            libc::O_WRONLY => WRITE,
            libc::O_RDWR => READ | WRITE,
            _ => READ,
        };
        if flags & libc::O_TRUNC != 0 {
            bits |= TRUNCATE;
        }
        if flags & libc::O_APPEND != 0 {
            bits |= APPEND;
        }
        if flags & libc::O_CREAT != 0 {
            bits |= CREATE;
        }
        if flags & KERNEL_FMODE_EXEC != 0 {
            bits |= EXEC;
        }
        bits
    }

    /// Names of the bits, for human and JSON output.
    pub fn names(bits: u32) -> Vec<&'static str> {
        const NAMES: [(u32, &str); 7] = [
            (READ, "read"),
            (WRITE, "write"),
            (CREATE, "create"),
            (TRUNCATE, "truncate"),
            (EXEC, "exec"),
            (APPEND, "append"),
            (DIRECTORY, "directory"),
        ];
        NAMES
            .iter()
            .filter(|(bit, _)| bits & bit != 0)
            .map(|(_, name)| *name)
            .collect()
    }
}

/// The type of the file an access concerned, when the daemon knew it.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[serde(rename_all = "lowercase")]
pub enum FileKind {
    #[default]
    Unknown,
    File,
    Dir,
    Symlink,
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
}

impl FileKind {
    /// The kind of a `st_mode`.
    pub fn from_mode(mode: u32) -> FileKind {
        match mode & libc::S_IFMT {
            libc::S_IFREG => FileKind::File,
            libc::S_IFDIR => FileKind::Dir,
            libc::S_IFLNK => FileKind::Symlink,
            libc::S_IFIFO => FileKind::Fifo,
            libc::S_IFSOCK => FileKind::Socket,
            libc::S_IFCHR => FileKind::CharDevice,
            libc::S_IFBLK => FileKind::BlockDevice,
            _ => FileKind::Unknown,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            FileKind::Unknown => "unknown",
            FileKind::File => "file",
            FileKind::Dir => "dir",
            FileKind::Symlink => "symlink",
            FileKind::Fifo => "fifo",
            FileKind::Socket => "socket",
            FileKind::CharDevice => "chardevice",
            FileKind::BlockDevice => "blockdevice",
        }
    }
}

/// One operation, or several identical ones merged: same process, operation, path(s), outcome
/// and intent. `count`, `bytes` and the first/last times survive the merge. A log may hold
/// several records with the same key (one per flush interval in which it recurred); readers
/// add them up.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Access {
    /// Thread group id of the caller (0: a request the kernel made on its own, e.g. writeback).
    pub pid: u32,
    /// The calling thread of the first merged request.
    pub tid: u32,
    /// Start time of the process in clock ticks since boot: tells reused pids apart.
    pub start: u64,
    pub op: Op,
    /// Absolute path in the mirrored tree, as the process saw it.
    #[serde(with = "serde_bytes")]
    pub path: Vec<u8>,
    /// Second path of rename (the new name), link (the new name), symlink (the link's target
    /// text) and copy_file_range (the destination).
    #[serde(with = "serde_bytes", default)]
    pub target: Option<Vec<u8>>,
    /// 0 on success, else the errno the caller got (failed lookups are kept).
    pub errno: i32,
    /// [`intent`] bits.
    pub intent: u32,
    pub kind: FileKind,
    pub count: u64,
    /// Bytes read or written (read, write, copy_file_range), else 0.
    pub bytes: u64,
    pub first_ns: TimeNs,
    pub last_ns: TimeNs,
}

impl Access {
    pub fn succeeded(&self) -> bool {
        self.errno == 0
    }
}

/// What /proc said about a process when depsetfs first saw it (or saw it exec).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ProcessInfo {
    pub pid: u32,
    /// Clock ticks since boot, from /proc/PID/stat.
    pub start: u64,
    pub ppid: u32,
    /// Target of /proc/PID/exe (a host path: the mountpoint prefix is removed when it lies
    /// inside the mirror). Empty when the process was gone before it could be read.
    #[serde(with = "serde_bytes")]
    pub exe: Vec<u8>,
    pub argv: Vec<String>,
    pub uid: u32,
    pub gid: u32,
    pub seen_ns: TimeNs,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ForkEvent {
    pub ts_ns: TimeNs,
    pub parent: u32,
    pub child: u32,
    /// Whether the child is a new thread of the parent's process rather than a new process.
    pub thread: bool,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ExecEvent {
    pub ts_ns: TimeNs,
    pub pid: u32,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ExitEvent {
    pub ts_ns: TimeNs,
    pub pid: u32,
    /// The wait status as the kernel reports it (exit code << 8 | signal).
    pub status: i32,
}

/// Events the recorder knows it missed (e.g. proc-connector buffer overruns).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct LostEvents {
    pub ts_ns: TimeNs,
    pub source: String,
    pub count: u64,
}

/// Which socket call a [`NetEvent`] records.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum NetCall {
    Connect,
    Bind,
    Listen,
    Accept,
    /// Not a call: from now on the network calls of this process and its descendants are
    /// recorded (the seccomp filter was installed by it and handed to the daemon).
    Traced,
}

impl NetCall {
    pub fn name(self) -> &'static str {
        match self {
            NetCall::Connect => "connect",
            NetCall::Bind => "bind",
            NetCall::Listen => "listen",
            NetCall::Accept => "accept",
            NetCall::Traced => "traced",
        }
    }
}

/// The address family of a [`NetEvent`]'s address.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum NetFamily {
    Inet,
    Inet6,
    Unix,
    /// Another family, or no address known.
    Other,
}

impl NetFamily {
    pub fn name(self) -> &'static str {
        match self {
            NetFamily::Inet => "inet",
            NetFamily::Inet6 => "inet6",
            NetFamily::Unix => "unix",
            NetFamily::Other => "other",
        }
    }
}

/// One socket call (connect, bind, listen, accept/accept4), recorded when the kernel stopped
/// the caller at the call's entry: the outcome is not known, so a refused connect counts as an
/// attempt. `address` is what the call names (connect, bind) or the socket's local address
/// (listen, accept), as `a.b.c.d:port`, `[v6]:port`, a unix path, `@name` for an abstract
/// unix socket, or empty when unknown.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct NetEvent {
    pub ts_ns: TimeNs,
    /// Thread group id of the caller.
    pub pid: u32,
    /// The calling thread.
    pub tid: u32,
    /// Start time of the process in clock ticks since boot (0: unknown).
    pub start: u64,
    pub call: NetCall,
    pub family: NetFamily,
    pub address: String,
    /// The socket's file descriptor in the caller (-1 for `traced`).
    pub fd: i32,
    /// `stream`, `dgram`, `seqpacket`, `raw`, ... when the daemon could read it.
    #[serde(default)]
    pub socket_type: Option<String>,
}

/// Now, as nanoseconds since the Unix epoch.
pub fn now_ns() -> TimeNs {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Now on `CLOCK_MONOTONIC` (nanoseconds), the clock the kernel stamps proc connector events with.
pub fn monotonic_now_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out pointer; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

/// The wall-clock time (nanoseconds since the Unix epoch) of a `CLOCK_MONOTONIC` instant: now,
/// minus how long ago the instant was.
pub fn wall_ns_of_monotonic(monotonic_ns: u64) -> TimeNs {
    let monotonic_now = monotonic_now_ns();
    let wall = now_ns();
    wall.saturating_sub(monotonic_now.saturating_sub(monotonic_ns))
}

/// `YYYYmmddTHHMMSSZ` for a Unix time (civil-from-days, proleptic Gregorian).
pub fn utc_stamp(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_are_utc_calendar_times() {
        assert_eq!(utc_stamp(0), "19700101T000000Z");
        assert_eq!(utc_stamp(951_782_400), "20000229T000000Z");
        assert_eq!(utc_stamp(1_795_779_296), "20261127T113456Z");
    }
}
