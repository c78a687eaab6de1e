//! The dependency graph of a log: the seed's "dependency framework". Nodes are process images
//! (one per exec image of a pid: a pid's life is split at its `Exec` records), files (every
//! path the log names) and endpoints (unix socket paths; TCP/UDP addresses and abstract unix
//! names from `Net` records, see [`network`]). Edges keep their operation, count and first/last time: process -> file for uses
//! (read, exec, stat, readlink, readdir, and failed accesses kept as "missing"), file -> process
//! for what produced a file (write, create, truncate, rename into, unlink), and process ->
//! process for fork, exec chain and connect. The graph only describes what happened; which
//! processes and files are *needed* is decided by [`crate::analysis::strategy`]. It is built in two
//! streaming passes over the log ([`build`]) so that memory grows with distinct processes,
//! files and (process, file, use) triples, never with the number of events.

pub mod build;
pub mod network;
pub mod uses;

use std::collections::HashMap;

use serde::Serialize;

use crate::analysis::graph::uses::{ProcessId, UseKind, UseTotals};
use crate::record::CONNECTOR_UNAVAILABLE_SOURCE;
use crate::record::{FileKind, LogHeader, TimeNs};

pub use build::{GraphBuilder, GraphError};
pub use uses::FileOp;

/// Index of a process image in [`Graph::processes`].
pub type ProcessIx = usize;
/// Index of a file in [`Graph::files`].
pub type FileIx = usize;
/// Index of an endpoint in [`Graph::endpoints`].
pub type EndpointIx = usize;

/// One exec image of one process: `(run, pid, start)` tells processes apart, `exec_index`
/// counts the execs the process made before this image (0: the image it was forked with).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ImageKey {
    /// Index of the run in the log ([`Graph::runs`]; 0 for the log of one run).
    pub run: u32,
    pub pid: u32,
    /// Clock ticks since boot.
    pub start: u64,
    pub exec_index: u32,
}

impl ImageKey {
    pub fn process(&self) -> ProcessId {
        ProcessId {
            run: self.run,
            pid: self.pid,
            start: self.start,
        }
    }
}

/// A process image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessNode {
    pub key: ImageKey,
    /// When the image began: the process's start for image 0, the exec for later ones.
    pub begin_ns: TimeNs,
    /// The next exec or the exit, when the log has it.
    pub end_ns: Option<TimeNs>,
    /// `/proc/PID/exe` (a host path); for an image depsetfs never read, the binary it exec'd,
    /// or its fork parent's for an image 0 that never got a record of its own. Empty: unknown
    /// (a kernel request, pid 0, or a process gone before /proc was read).
    pub exe: Vec<u8>,
    pub argv: Vec<String>,
    pub uid: u32,
    pub gid: u32,
    pub ppid: u32,
    /// Whether a `Process` record described this image (else exe/argv are inferred).
    pub described: bool,
    /// The wait status of the exit, on the last image of a process that exited.
    pub exit_status: Option<i32>,
    /// The image that forked this process (image 0 only).
    pub forked_by: Option<ProcessIx>,
    /// The image this one replaced by exec (images after 0).
    pub exec_from: Option<ProcessIx>,
}

impl ProcessNode {
    pub fn exe_text(&self) -> String {
        String::from_utf8_lossy(&self.exe).into_owned()
    }

    /// argv joined by spaces, as `--cmd` matches it.
    pub fn command_line(&self) -> String {
        self.argv.join(" ")
    }

    /// Whether nothing says which binary this image runs: the kernel's own requests (pid 0)
    /// and processes gone before depsetfs could read them.
    pub fn has_no_binary(&self) -> bool {
        self.exe.is_empty()
    }
}

/// A path the log names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileNode {
    /// Normalized absolute path in the mirror.
    pub path: Vec<u8>,
    /// The kind the daemon reported, preferring successful accesses. The size shipped comes
    /// from the source tree when a set is computed (see [`crate::analysis::source_tree::SourceTree`]).
    pub kind: FileKind,
    /// Whether any access succeeded; when none did, the path is "missing".
    pub succeeded: bool,
    pub bytes_read: u64,
    pub bytes_written: u64,
}

/// An edge between a process image and a file: one [`UseKind`] (operation, intent, outcome,
/// first or second path), added up over the log. Its direction follows [`FileOp`]:
/// [`FileEdge::produces`] edges go file -> process (the file depends on the process),
/// the others process -> file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileEdge {
    pub process: ProcessIx,
    pub file: FileIx,
    pub use_kind: UseKind,
    pub totals: UseTotals,
    /// Until when the use may have read the file: for an open for reading, the time by which
    /// every handle of the file opened up to its last open was released, when a later write
    /// by another process makes it matter ([`build`]: `TimeNs::MAX` when the log shows no such
    /// time); else `totals.last_ns`.
    pub reading_until: TimeNs,
}

impl FileEdge {
    pub fn op(&self) -> FileOp {
        FileOp::of(&self.use_kind)
    }

    pub fn succeeded(&self) -> bool {
        self.use_kind.errno == 0
    }

    /// The file depends on the process: it changed the file or its name.
    pub fn produces(&self) -> bool {
        self.succeeded() && uses::produces(&self.use_kind)
    }

    /// The process depends on the file: it read it, ran it, listed it, looked it up.
    pub fn consumes(&self) -> bool {
        self.succeeded() && uses::consumes(&self.use_kind)
    }

    /// The use opened a handle that can read the file ([`FileEdge::reading_until`]).
    pub fn opens_for_reading(&self) -> bool {
        self.succeeded() && uses::opens_for_reading(&self.use_kind)
    }

    /// The process read the file's content (not only its name or attributes): what the
    /// outputs policy asks before shipping a written file.
    pub fn reads_content(&self) -> bool {
        self.succeeded() && uses::reads_content(&self.use_kind)
    }
}

/// Why one process image is linked to another.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProcessLink {
    /// `from` forked `to`. `to` depends on `from` (something had to start it).
    Fork,
    /// `from` exec'd and became `to`. `to` depends on `from`.
    Exec,
    /// `from` connected to an endpoint `to` had bound. `from` depends on `to`.
    Connect,
}

impl ProcessLink {
    pub fn name(self) -> &'static str {
        match self {
            ProcessLink::Fork => "fork",
            ProcessLink::Exec => "exec",
            ProcessLink::Connect => "connect",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessEdge {
    pub from: ProcessIx,
    pub to: ProcessIx,
    pub link: ProcessLink,
    /// When: the fork, the exec, the first connect.
    pub at_ns: TimeNs,
    /// For [`ProcessLink::Connect`]: through which endpoint.
    pub endpoint: Option<EndpointIx>,
}

/// What a process can connect to: unix socket paths (seen through FUSE), and TCP/UDP
/// addresses and abstract unix names (from `Net` records, when the network was recorded).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EndpointKey {
    /// A unix socket bound to a path of the mirror.
    UnixSocket(Vec<u8>),
    /// An IP address and port, as `tcp:127.0.0.1:8080`, `udp:[::1]:53` (`inet:`/`inet6:` when
    /// the socket type is unknown).
    Inet(String),
    /// An abstract unix socket, `@name`.
    AbstractUnix(String),
}

impl EndpointKey {
    pub fn describe(&self) -> String {
        match self {
            EndpointKey::UnixSocket(path) => {
                format!("unix:{}", String::from_utf8_lossy(path))
            }
            EndpointKey::Inet(address) => address.clone(),
            EndpointKey::AbstractUnix(name) => format!("unix:{name}"),
        }
    }
}

/// An endpoint with who bound it and who connected to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointNode {
    pub key: EndpointKey,
    /// The file node of a unix socket path.
    pub file: Option<FileIx>,
    /// Processes that bound it (for a unix socket: created the socket node with mknod).
    pub binders: Vec<(ProcessIx, UseTotals)>,
    /// Processes that connected to it (for a unix socket: looked up the socket path
    /// successfully; FUSE does not see connect(2) itself, the lookup is the best signal).
    pub clients: Vec<(ProcessIx, UseTotals)>,
}

/// Counts over the whole log, for `depsetfs stats`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LogStats {
    /// Records after the header.
    pub records: u64,
    pub access_records: u64,
    /// Requests: the access records' counts added up.
    pub accesses: u64,
    pub failed_accesses: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub process_records: u64,
    pub forks: u64,
    pub thread_forks: u64,
    pub execs: u64,
    pub exits: u64,
    /// Events the recorder knew it missed, by source.
    pub lost: std::collections::BTreeMap<String, u64>,
    /// Byte offset of an incomplete last value.
    pub truncated_at: Option<u64>,
    /// Recorded socket calls (connect, bind, listen, accept).
    pub net_calls: u64,
    /// Some `traced` record shows that a process's network calls were watched (e.g. a
    /// service started by `depsetfs chroot` on a mount whose header could not know it).
    pub network_traced: bool,
    /// Whether the log ends with the end record its recorder writes when it stops in order
    /// (false: the recorder was killed, events after `last_record_ns` may be missing). None
    /// for logs older than format version 3, which cannot tell.
    pub ended_cleanly: Option<bool>,
    /// The latest time a record names (the header's start when there is none).
    pub last_record_ns: TimeNs,
    /// Set by the reader's caller when a live daemon is still writing the log: no end record
    /// is expected yet.
    pub still_recording: bool,
}

impl LogStats {
    /// How many events the recorder knew it missed (overruns, failed writes); a log made
    /// without process events at all is [`LogStats::process_events_unrecorded`] instead.
    pub fn lost_events(&self) -> u64 {
        self.counted_losses().map(|(_, count)| count).sum()
    }

    /// The sources of counted losses, with their counts.
    pub fn counted_losses(&self) -> impl Iterator<Item = (&str, u64)> {
        self.lost
            .iter()
            .filter(|(source, _)| source.as_str() != CONNECTOR_UNAVAILABLE_SOURCE)
            .map(|(source, count)| (source.as_str(), *count))
    }

    /// What to say when the log did not end cleanly (its recorder was killed), else None. A
    /// log still being recorded has no end yet and gets no warning.
    pub fn unclean_end(&self) -> Option<String> {
        if self.ended_cleanly != Some(false) || self.still_recording {
            return None;
        }
        Some(format!(
            "the log did not end cleanly (its recorder was killed): events after {} may be missing",
            describe_time(self.last_record_ns)
        ))
    }

    /// The daemon could not listen to the proc connector: no fork, exec or exit was recorded.
    pub fn process_events_unrecorded(&self) -> bool {
        self.lost.contains_key(CONNECTOR_UNAVAILABLE_SOURCE)
    }
}

/// One run of the log: its own header and the name analyses give it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunInfo {
    /// The run's header: for a merged log its entry in `runs`, else the log's header.
    pub header: LogHeader,
    /// The header's label; for a log older than labels, empty.
    pub label: String,
}

impl RunInfo {
    /// The runs of a log with this header (one for the log of a single run).
    pub fn of_header(header: &LogHeader) -> Vec<RunInfo> {
        header
            .run_headers()
            .into_iter()
            .map(|run| RunInfo {
                header: run.clone(),
                label: run.label.clone().unwrap_or_default(),
            })
            .collect()
    }
}

/// The whole graph of one log.
#[derive(Clone, Debug)]
pub struct Graph {
    pub header: LogHeader,
    /// The runs the log holds, by index ([`ImageKey::run`]): one unless the log is merged.
    pub runs: Vec<RunInfo>,
    pub processes: Vec<ProcessNode>,
    pub files: Vec<FileNode>,
    pub endpoints: Vec<EndpointNode>,
    pub file_edges: Vec<FileEdge>,
    pub process_edges: Vec<ProcessEdge>,
    pub stats: LogStats,
    /// File edges of each process, by [`ProcessIx`].
    edges_of_process: Vec<Vec<usize>>,
    /// File edges of each file, by [`FileIx`].
    edges_of_file: Vec<Vec<usize>>,
    /// Process edges touching each process (either end), by [`ProcessIx`].
    links_of_process: Vec<Vec<usize>>,
    file_index: HashMap<Vec<u8>, FileIx>,
    /// Images of each process in exec order.
    images: HashMap<ProcessId, Vec<ProcessIx>>,
}

impl Graph {
    pub fn file(&self, path: &[u8]) -> Option<FileIx> {
        self.file_index.get(path).copied()
    }

    pub fn edges_of_process(&self, process: ProcessIx) -> impl Iterator<Item = &FileEdge> {
        self.edges_of_process[process]
            .iter()
            .map(|&edge| &self.file_edges[edge])
    }

    pub fn edges_of_file(&self, file: FileIx) -> impl Iterator<Item = &FileEdge> {
        self.edges_of_file[file]
            .iter()
            .map(|&edge| &self.file_edges[edge])
    }

    /// Process edges with `process` at either end.
    pub fn links_of(&self, process: ProcessIx) -> impl Iterator<Item = &ProcessEdge> {
        self.links_of_process[process]
            .iter()
            .map(|&edge| &self.process_edges[edge])
    }

    /// Whether the network calls were recorded: the header says so (`depsetfs run`) or a
    /// filter was handed to the daemon (`depsetfs chroot`).
    pub fn network_recorded(&self) -> bool {
        self.header.network_recorded || self.stats.network_traced
    }

    /// The images of a process, in exec order.
    pub fn images_of(&self, process: ProcessId) -> &[ProcessIx] {
        self.images.get(&process).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The processes an image depends on, with the link: its fork parent, the image it was
    /// exec'd from, the servers it connected to.
    pub fn process_dependencies(
        &self,
        process: ProcessIx,
    ) -> impl Iterator<Item = (ProcessIx, &ProcessEdge)> {
        self.links_of(process)
            .filter_map(move |edge| match edge.link {
                ProcessLink::Fork | ProcessLink::Exec if edge.to == process => {
                    Some((edge.from, edge))
                }
                ProcessLink::Connect if edge.from == process => Some((edge.to, edge)),
                _ => None,
            })
    }

    /// Images forked by `process`.
    pub fn forked_children(&self, process: ProcessIx) -> impl Iterator<Item = ProcessIx> + '_ {
        self.links_of(process)
            .filter(move |edge| edge.link == ProcessLink::Fork && edge.from == process)
            .map(|edge| edge.to)
    }

    /// The image that replaced `process` by exec, if any.
    pub fn exec_successor(&self, process: ProcessIx) -> Option<ProcessIx> {
        self.links_of(process)
            .find(|edge| edge.link == ProcessLink::Exec && edge.from == process)
            .map(|edge| edge.to)
    }

    /// Everything that descends from `process`: later images of its pid and the processes it
    /// (and they) forked, recursively. `process` itself is not included.
    pub fn descendants(&self, process: ProcessIx) -> Vec<ProcessIx> {
        let mut found = Vec::new();
        let mut seen = vec![false; self.processes.len()];
        let mut stack = vec![process];
        seen[process] = true;
        while let Some(current) = stack.pop() {
            let next = self
                .forked_children(current)
                .chain(self.exec_successor(current));
            for child in next.collect::<Vec<_>>() {
                if !seen[child] {
                    seen[child] = true;
                    found.push(child);
                    stack.push(child);
                }
            }
        }
        found.sort_unstable();
        found
    }

    /// The exec-intent opens of an image in time order, labelled: the first is the file that
    /// was exec'd, then the `#!` interpreter (the image's exe) and the ELF interpreter.
    pub fn exec_chain(&self, process: ProcessIx) -> Vec<(&FileEdge, ExecRole)> {
        let mut opens: Vec<&FileEdge> = self
            .edges_of_process(process)
            .filter(|edge| edge.succeeded() && edge.op() == FileOp::Exec)
            .collect();
        opens.sort_by_key(|edge| (edge.totals.first_ns, edge.file));
        let exe = &self.processes[process].exe;
        opens
            .into_iter()
            .enumerate()
            .map(|(position, edge)| {
                let role = if position == 0 {
                    ExecRole::Binary
                } else if &self.files[edge.file].path == exe {
                    ExecRole::ScriptInterpreter
                } else {
                    ExecRole::ElfInterpreter
                };
                (edge, role)
            })
            .collect()
    }

    /// The file an image was exec'd from, if the log shows the exec.
    pub fn exec_binary(&self, process: ProcessIx) -> Option<&[u8]> {
        self.exec_chain(process)
            .first()
            .map(|(edge, _)| self.files[edge.file].path.as_slice())
    }

    /// Whether the log holds several runs (a merged log): names then say which run.
    pub fn is_merged(&self) -> bool {
        self.runs.len() > 1
    }

    /// The label of run `run` (empty when the run has none).
    pub fn run_label(&self, run: u32) -> &str {
        self.runs
            .get(run as usize)
            .map_or("", |info| info.label.as_str())
    }

    /// The run named `label`, by its label or, for an unlabelled run, `#N` (1-based).
    pub fn run_named(&self, label: &str) -> Option<u32> {
        self.runs
            .iter()
            .position(|info| info.label == label)
            .or_else(|| {
                let n: usize = label.strip_prefix('#')?.parse().ok()?;
                (1..=self.runs.len()).contains(&n).then(|| n - 1)
            })
            .map(|index| index as u32)
    }

    /// A short human name: `pid 42 (image 1) cat /etc/hosts`; in a merged log prefixed by the
    /// run, `run php: pid 42 php-fpm`.
    pub fn describe_process(&self, process: ProcessIx) -> String {
        let name = self.describe_process_in_run(process);
        if self.is_merged() {
            let run = self.processes[process].key.run;
            format!("run {}: {name}", self.run_display(run))
        } else {
            name
        }
    }

    /// How output names run `run`: its label, or `#N` when it has none.
    pub fn run_display(&self, run: u32) -> String {
        match self.run_label(run) {
            "" => format!("#{}", run + 1),
            label => label.to_string(),
        }
    }

    fn describe_process_in_run(&self, process: ProcessIx) -> String {
        let node = &self.processes[process];
        let what = if node.argv.is_empty() {
            node.exe_text()
        } else {
            node.command_line()
        };
        let what = if what.is_empty() {
            "(no binary)".to_string()
        } else {
            what
        };
        if node.key.exec_index == 0 {
            format!("pid {} {}", node.key.pid, what)
        } else {
            format!(
                "pid {} (exec {}) {}",
                node.key.pid, node.key.exec_index, what
            )
        }
    }

    pub fn path_text(&self, file: FileIx) -> String {
        String::from_utf8_lossy(&self.files[file].path).into_owned()
    }
}

/// What an exec-intent open was for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExecRole {
    /// The file execve was given.
    Binary,
    /// The interpreter named by a `#!` line.
    ScriptInterpreter,
    /// The dynamic loader named by the binary (PT_INTERP).
    ElfInterpreter,
}

impl ExecRole {
    pub fn name(self) -> &'static str {
        match self {
            ExecRole::Binary => "binary",
            ExecRole::ScriptInterpreter => "script interpreter",
            ExecRole::ElfInterpreter => "ELF interpreter",
        }
    }
}

#[cfg(test)]
mod tests;

/// A time as UTC with milliseconds, e.g. `2026-11-27 11:34:56.789 UTC`.
pub fn describe_time(ns: TimeNs) -> String {
    let secs = (ns / 1_000_000_000) as i64;
    let millis = ns / 1_000_000 % 1000;
    let stamp = crate::record::utc_stamp(secs);
    // utc_stamp is YYYYmmddTHHMMSSZ.
    format!(
        "{}-{}-{} {}:{}:{}.{millis:03} UTC",
        &stamp[0..4],
        &stamp[4..6],
        &stamp[6..8],
        &stamp[9..11],
        &stamp[11..13],
        &stamp[13..15]
    )
}

#[cfg(test)]
mod end_tests {
    use crate::analysis::graph::build::graph_from_log;
    use crate::fixtures::ScratchDir;
    use crate::fixtures::records::{access, header};
    use crate::log::LogWriter;
    use crate::record::{LogEnd, Record};

    fn stats_of(records: &[Record], version: u32) -> super::LogStats {
        let dir = ScratchDir::new("graph-end");
        let path = dir.file("log");
        let mut old = header();
        old.version = version;
        let mut writer = LogWriter::create(&path, &old).expect("create log");
        for record in records {
            writer.append(record).expect("append");
        }
        writer.flush().expect("flush");
        graph_from_log(&path).expect("graph").stats
    }

    #[test]
    fn only_a_final_end_record_ends_a_log_cleanly() {
        let end = Record::End(LogEnd { ts_ns: 9_000 });
        let read = Record::Access(access(1, b"/etc/hosts"));
        let clean = stats_of(&[read.clone(), end.clone()], 3);
        assert_eq!(clean.ended_cleanly, Some(true));
        assert_eq!(clean.unclean_end(), None);

        let killed = stats_of(std::slice::from_ref(&read), 3);
        assert_eq!(killed.ended_cleanly, Some(false));
        let warning = killed.unclean_end().expect("a warning");
        assert!(warning.contains("may be missing"), "{warning}");
        assert_eq!(killed.last_record_ns, header().started_ns.max(1_000));

        let live = super::LogStats {
            still_recording: true,
            ..killed
        };
        assert_eq!(live.unclean_end(), None, "a live log is not cut short");

        let reordered = stats_of(&[end, read.clone()], 3);
        assert_eq!(reordered.ended_cleanly, Some(false));

        let older = stats_of(&[read], 2);
        assert_eq!(older.ended_cleanly, None, "version 2 cannot tell");
        assert_eq!(older.unclean_end(), None);
    }

    #[test]
    fn times_are_shown_in_utc_with_milliseconds() {
        assert_eq!(
            super::describe_time(951_782_400_123_000_000),
            "2000-02-29 00:00:00.123 UTC"
        );
    }
}
