//! Building a [`Graph`] from a log in two streaming passes. The first pass reads only the
//! life of processes (process records, forks, execs, exits) and which `(pid, start)` made
//! accesses, and cuts each process into exec images; the second attributes every access to
//! the image that made it and adds it to one edge per (image, path, use). Neither pass keeps
//! records: memory grows with distinct processes, paths and edges.
//!
//! An open for reading is a use until its handle's release, not only at the open and the reads
//! the daemon saw: reads through it may bypass the daemon (passthrough, the page cache, mmap),
//! and a reader that opened a file before another process wrote it may read the new bytes. A
//! release is the kernel's (pid 0) and names only the file, so which open it ends is unknown;
//! what the log does tell is when no handle of the file was open any more (as many releases
//! as opens so far). Only when some open for reading came before another process's first
//! write of the same file does that matter, and then a third pass over the log
//! ([`AccessPass::count_handle`]) counts the opens and releases of those files only, and
//! [`FileEdge::reading_until`] of such an open is the first time after its last open at which
//! the file had no open handle (opens counted from [`OPEN_STAMP_SLACK_NS`] before their first
//! request, releases at their last, so a handle is never taken as closed before it surely was).
//!
//! Attribution by time: an access belongs to the image that was running at its first and
//! last time (a merged record that spans an exec belongs to both images). An image started by
//! exec runs, for attribution, from the kernel's exec open of its binary, not from the `Exec`
//! record: between the two the kernel works inside `execve` for the new program (it reads the
//! binary's headers, resolves and opens the ELF and `#!` interpreters, reads the binary's
//! capabilities), while the process is still, by the proc connector's clock, the image that
//! called `execve`. Those accesses are the new program's needs; the calling image keeps only
//! what came before the exec open, its lookups of the binary (it needs the file to exist). Fork, exec and exit records carry a pid only: each goes to the
//! process of that pid that had started by then (the latest start not after it), so a reused
//! pid is told apart.
//!
//! A merged log holds several runs, each in a segment that a `Run` record starts: every pid,
//! fork, exec and exit is read in the pid space of its run (processes are keyed by run, pid
//! and start), start times convert to wall time with that run's boot time and clock, and no
//! edge ever joins processes of two runs.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use crate::analysis::graph::network::{ImageNetUse, NetUses, add_network_endpoints};
use crate::analysis::graph::uses::{ProcessId, UseKind, UseTotals};
use crate::analysis::graph::{
    EndpointKey, EndpointNode, FileEdge, FileIx, FileNode, Graph, ImageKey, LogStats, ProcessEdge,
    ProcessIx, ProcessLink, ProcessNode, RunInfo,
};
use crate::analysis::paths::normalize_mirror_path;
use crate::log::{LogError, LogReader};
use crate::record::{
    Access, FIRST_VERSION_WITH_END, FileKind, ForkEvent, LogHeader, NetCall, Op, ProcessInfo,
    Record, TimeNs, intent,
};

/// How long before an exec an exec-intent open may come and still belong to the new image.
const EXEC_OPEN_WINDOW_NS: TimeNs = 1_000_000_000;

/// How much earlier than its record's time an open may have happened, for counting open
/// handles: an access is stamped after its reply, and a thread preempted in between stamps a
/// quick open after the release of the same handle (seen in a real log: a release stamped
/// 0.2 ms before its own open). Five scheduler ticks at 250 Hz.
const OPEN_STAMP_SLACK_NS: TimeNs = 20_000_000;

#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("{path}: the log changed between the two passes over it")]
    ChangedUnderfoot { path: PathBuf },
}

/// Reads the log at `path` twice (see the module header) and builds its graph.
pub fn graph_from_log(path: &Path) -> Result<Graph, GraphError> {
    let mut reader = LogReader::open(path)?;
    let mut builder = GraphBuilder::new(reader.header().clone());
    let mut first_pass_records = 0u64;
    for record in reader.by_ref() {
        builder.observe(&record?);
        first_pass_records += 1;
    }
    builder.stats.truncated_at = reader.truncated_at();
    let mut pass = builder.into_access_pass();
    let mut second_pass_records = 0u64;
    for record in LogReader::open(path)?.take(first_pass_records as usize) {
        pass.add(&record?);
        second_pass_records += 1;
    }
    if second_pass_records != first_pass_records {
        return Err(GraphError::ChangedUnderfoot {
            path: path.to_path_buf(),
        });
    }
    if pass.needs_handle_pass() {
        for record in LogReader::open(path)?.take(first_pass_records as usize) {
            pass.count_handle(&record?);
        }
    }
    Ok(pass.finish())
}

/// The graph of records already in memory (tests, small logs).
pub fn graph_from_records(header: &LogHeader, records: &[Record]) -> Graph {
    let mut builder = GraphBuilder::new(header.clone());
    for record in records {
        builder.observe(record);
    }
    let mut pass = builder.into_access_pass();
    for record in records {
        pass.add(record);
    }
    if pass.needs_handle_pass() {
        for record in records {
            pass.count_handle(record);
        }
    }
    pass.finish()
}

/// What the first pass learns about one process.
#[derive(Default)]
struct ProcessFacts {
    infos: Vec<ProcessInfo>,
    execs: Vec<TimeNs>,
    /// First times of its successful exec-intent opens (binaries and interpreters).
    exec_opens: Vec<TimeNs>,
    exit: Option<(TimeNs, i32)>,
}

/// A pid in the pid space of one run: `(run, pid)`.
type RunPid = (u32, u32);

/// The first pass.
pub struct GraphBuilder {
    header: LogHeader,
    runs: Vec<RunInfo>,
    /// The run whose segment the records being read belong to.
    current_run: u32,
    /// Records of the current segment so far, and whether the last one was an end record.
    segment_records: u64,
    segment_ended: bool,
    /// A segment of a merged log (of a run that writes end records) did not end cleanly.
    unclean_segment: bool,
    processes: BTreeMap<ProcessId, ProcessFacts>,
    execs: Vec<(RunPid, TimeNs)>,
    exits: Vec<(RunPid, TimeNs, i32)>,
    forks: Vec<(u32, ForkEvent)>,
    stats: LogStats,
    net: NetUses,
}

impl GraphBuilder {
    pub fn new(header: LogHeader) -> GraphBuilder {
        GraphBuilder {
            runs: RunInfo::of_header(&header),
            current_run: 0,
            segment_records: 0,
            segment_ended: false,
            unclean_segment: false,
            processes: BTreeMap::new(),
            execs: Vec::new(),
            exits: Vec::new(),
            forks: Vec::new(),
            stats: LogStats {
                ended_cleanly: (header.version >= FIRST_VERSION_WITH_END).then_some(false),
                last_record_ns: header.started_ns,
                ..LogStats::default()
            },
            header,
            net: NetUses::default(),
        }
    }

    /// First pass: one record.
    pub fn observe(&mut self, record: &Record) {
        self.stats.records += 1;
        self.stats.last_record_ns = self.stats.last_record_ns.max(record.time_ns());
        if let Record::Run(segment) = record {
            self.end_segment();
            self.current_run = segment.index;
            return;
        }
        self.segment_records += 1;
        self.segment_ended = matches!(record, Record::End(_));
        if let Some(ended) = self
            .stats
            .ended_cleanly
            .as_mut()
            .filter(|_| !self.header.is_merged())
        {
            // Only an end record that nothing follows ends a log cleanly (a merged log: each
            // run's segment, see `end_segment`).
            *ended = matches!(record, Record::End(_));
        }
        let run = self.current_run;
        match record {
            Record::End(_) | Record::Run(_) => {}
            Record::Access(access) => {
                self.count_access(access);
                let id = ProcessId {
                    run,
                    pid: access.pid,
                    start: access.start,
                };
                let facts = self.processes.entry(id).or_default();
                if access.op == Op::Open && access.intent & intent::EXEC != 0 && access.succeeded()
                {
                    facts.exec_opens.push(access.first_ns);
                }
            }
            Record::Process(info) => {
                self.stats.process_records += 1;
                let id = ProcessId {
                    run,
                    pid: info.pid,
                    start: info.start,
                };
                self.processes
                    .entry(id)
                    .or_default()
                    .infos
                    .push(info.clone());
            }
            Record::Fork(fork) if fork.thread => self.stats.thread_forks += 1,
            Record::Fork(fork) => {
                self.stats.forks += 1;
                self.forks.push((run, fork.clone()));
            }
            Record::Exec(exec) => {
                self.stats.execs += 1;
                self.execs.push(((run, exec.pid), exec.ts_ns));
            }
            Record::Exit(exit) => {
                self.stats.exits += 1;
                self.exits.push(((run, exit.pid), exit.ts_ns, exit.status));
            }
            Record::Lost(lost) => {
                *self.stats.lost.entry(lost.source.clone()).or_default() += lost.count;
            }
            Record::Net(event) => {
                if event.call == NetCall::Traced {
                    self.stats.network_traced = true;
                } else {
                    self.stats.net_calls += 1;
                }
                if event.start != 0 {
                    let id = ProcessId {
                        run,
                        pid: event.pid,
                        start: event.start,
                    };
                    self.processes.entry(id).or_default();
                }
                self.net.add(run, event);
            }
        }
    }

    /// A `Run` record or the end of the log ends a segment: in a merged log, each run's
    /// segment must end with its end record (when its version writes one).
    fn end_segment(&mut self) {
        let writes_end = self
            .runs
            .get(self.current_run as usize)
            .is_some_and(|run| run.header.version >= FIRST_VERSION_WITH_END);
        if self.header.is_merged() && self.segment_records > 0 && writes_end && !self.segment_ended
        {
            self.unclean_segment = true;
        }
        self.segment_records = 0;
        self.segment_ended = false;
    }

    fn count_access(&mut self, access: &Access) {
        let stats = &mut self.stats;
        stats.access_records += 1;
        stats.accesses += access.count;
        if !access.succeeded() {
            stats.failed_accesses += access.count;
        }
        match access.op {
            Op::Read => stats.bytes_read += access.bytes,
            Op::Write | Op::CopyFileRange => stats.bytes_written += access.bytes,
            _ => {}
        }
    }

    /// Ends the first pass: cuts processes into images and links them.
    pub fn into_access_pass(mut self) -> AccessPass {
        self.end_segment();
        if self.header.is_merged() {
            let any_tells = self
                .runs
                .iter()
                .any(|run| run.header.version >= FIRST_VERSION_WITH_END);
            self.stats.ended_cleanly = any_tells.then_some(!self.unclean_segment);
        }
        let starts = self.process_starts();
        self.assign_events(&starts);
        let mut timeline = Timeline::new(&self.header);
        for (id, facts) in &mut self.processes {
            facts.execs.sort_unstable();
            facts.execs.dedup();
            facts.exec_opens.sort_unstable();
            timeline.add_process(*id, facts, run_header(&self.runs, &self.header, id.run));
        }
        timeline.link_forks(&self.forks, &starts);
        timeline.link_parents(&self.processes, &starts);
        timeline.inherit_descriptions();
        let net = timeline.attribute_net_uses(self.net);
        AccessPass::new(self.header, self.runs, timeline, self.stats, net)
    }

    /// Per pid of each run, its processes by start time.
    fn process_starts(&self) -> HashMap<RunPid, Vec<(TimeNs, ProcessId)>> {
        let mut starts: HashMap<RunPid, Vec<(TimeNs, ProcessId)>> = HashMap::new();
        for id in self.processes.keys() {
            let header = run_header(&self.runs, &self.header, id.run);
            let wall = start_wall_ns(header, id.start);
            starts
                .entry((id.run, id.pid))
                .or_default()
                .push((wall, *id));
        }
        for list in starts.values_mut() {
            list.sort_unstable();
        }
        starts
    }

    fn assign_events(&mut self, starts: &HashMap<RunPid, Vec<(TimeNs, ProcessId)>>) {
        for &(pid, ts) in &self.execs {
            if let Some(id) = process_at(starts, pid, ts)
                && let Some(facts) = self.processes.get_mut(&id)
            {
                facts.execs.push(ts);
            }
        }
        for &(pid, ts, status) in &self.exits {
            if let Some(id) = process_at(starts, pid, ts)
                && let Some(facts) = self.processes.get_mut(&id)
            {
                facts.exit = Some((ts, status));
            }
        }
    }
}

/// The header of run `run` (its boot time and clock convert its start times); the log's own
/// header for a run the header does not list.
fn run_header<'a>(runs: &'a [RunInfo], header: &'a LogHeader, run: u32) -> &'a LogHeader {
    runs.get(run as usize).map_or(header, |info| &info.header)
}

/// Wall-clock start of a process from its start in clock ticks since boot.
fn start_wall_ns(header: &LogHeader, start_ticks: u64) -> TimeNs {
    let ticks = header.clock_ticks.max(1) as u128;
    let since_boot = start_ticks as u128 * 1_000_000_000 / ticks;
    header.boot_time_ns.saturating_add(since_boot as u64)
}

/// The process of `pid` that had started at `ts`: the latest start not after it (the earliest
/// when the clocks disagree).
fn process_at(
    starts: &HashMap<RunPid, Vec<(TimeNs, ProcessId)>>,
    pid: RunPid,
    ts: TimeNs,
) -> Option<ProcessId> {
    let list = starts.get(&pid)?;
    list.iter()
        .rev()
        .find(|(wall, _)| *wall <= ts)
        .or_else(|| list.first())
        .map(|(_, id)| *id)
}

/// Process images with their begin times, and the edges between them.
struct Timeline {
    nodes: Vec<ProcessNode>,
    /// Per process: (begin, image) in exec order; an exec image begins where its `execve`
    /// began working for it ([`execve_began`]).
    images: HashMap<ProcessId, Vec<(TimeNs, ProcessIx)>>,
    edges: Vec<ProcessEdge>,
}

impl Timeline {
    fn new(_header: &LogHeader) -> Timeline {
        Timeline {
            nodes: Vec::new(),
            images: HashMap::new(),
            edges: Vec::new(),
        }
    }

    fn add_process(&mut self, id: ProcessId, facts: &ProcessFacts, header: &LogHeader) {
        let wall = start_wall_ns(header, id.start);
        let mut begins = vec![wall];
        begins.extend(facts.execs.iter().copied().filter(|&ts| ts >= wall));
        let mut images = Vec::with_capacity(begins.len());
        for (exec_index, &begin) in begins.iter().enumerate() {
            let end = end_of_image(&begins, exec_index).or(facts.exit.map(|(ts, _)| ts));
            let info = latest_info(
                &facts.infos,
                exec_index,
                begin,
                end_of_image(&begins, exec_index),
            );
            let ix = self.nodes.len();
            self.nodes
                .push(image_node(id, exec_index as u32, begin, end, info));
            if exec_index > 0 {
                let previous = ix - 1;
                self.nodes[ix].exec_from = Some(previous);
                if self.nodes[ix].ppid == 0 {
                    // Described when the process was gone: an exec keeps the parent.
                    self.nodes[ix].ppid = self.nodes[previous].ppid;
                }
                self.edges.push(ProcessEdge {
                    from: previous,
                    to: ix,
                    link: ProcessLink::Exec,
                    at_ns: begin,
                    endpoint: None,
                });
            }
            let attributed_from = if exec_index > 0 {
                execve_began(&facts.exec_opens, begins[exec_index - 1], begin)
            } else {
                begin
            };
            images.push((attributed_from, ix));
        }
        if let (Some((_, last)), Some((_, status))) = (images.last(), facts.exit) {
            self.nodes[*last].exit_status = Some(status);
        }
        self.images.insert(id, images);
    }

    /// The image of process `id` running at `ts`.
    fn image_at(&self, id: ProcessId, ts: TimeNs) -> Option<ProcessIx> {
        let images = self.images.get(&id)?;
        images
            .iter()
            .rev()
            .find(|(begin, _)| *begin <= ts)
            .or_else(|| images.first())
            .map(|(_, ix)| *ix)
    }

    /// Each network use goes to the images running at its first and last time.
    fn attribute_net_uses(&self, net: NetUses) -> Vec<ImageNetUse> {
        let mut attributed = Vec::new();
        for (key, totals) in net.uses {
            let first = self.image_at(key.process, totals.first_ns);
            let last = self.image_at(key.process, totals.last_ns);
            let (Some(first), Some(last)) = (first, last) else {
                continue;
            };
            let images = if first == last {
                vec![first]
            } else {
                vec![first, last]
            };
            for image in images {
                attributed.push(ImageNetUse {
                    image,
                    key: key.clone(),
                    totals,
                });
            }
        }
        attributed
    }

    fn first_image(&self, id: ProcessId) -> Option<ProcessIx> {
        self.images.get(&id)?.first().map(|(_, ix)| *ix)
    }

    fn link_forks(
        &mut self,
        forks: &[(u32, ForkEvent)],
        starts: &HashMap<RunPid, Vec<(TimeNs, ProcessId)>>,
    ) {
        for (run, fork) in forks {
            let Some(child) = process_at(starts, (*run, fork.child), fork.ts_ns) else {
                continue;
            };
            let Some(parent) = process_at(starts, (*run, fork.parent), fork.ts_ns) else {
                continue;
            };
            let (Some(child_image), Some(parent_image)) =
                (self.first_image(child), self.image_at(parent, fork.ts_ns))
            else {
                continue;
            };
            if self.nodes[child_image].forked_by.is_none() && child_image != parent_image {
                self.add_fork(parent_image, child_image, fork.ts_ns);
            }
        }
    }

    /// Processes whose fork the log does not show (started before recording, or the event was
    /// lost) hang under their `ppid` as /proc gave it first.
    fn link_parents(
        &mut self,
        processes: &BTreeMap<ProcessId, ProcessFacts>,
        starts: &HashMap<RunPid, Vec<(TimeNs, ProcessId)>>,
    ) {
        for (id, facts) in processes {
            let Some(child_image) = self.first_image(*id) else {
                continue;
            };
            if self.nodes[child_image].forked_by.is_some() {
                continue;
            }
            let Some(first) = facts.infos.iter().min_by_key(|info| info.seen_ns) else {
                continue;
            };
            if first.ppid == 0 {
                continue;
            }
            let born = self.nodes[child_image].begin_ns;
            let Some(parent) = process_at(starts, (id.run, first.ppid), born) else {
                continue;
            };
            if let Some(parent_image) = self.image_at(parent, born)
                && parent_image != child_image
            {
                self.add_fork(parent_image, child_image, born);
            }
        }
    }

    fn add_fork(&mut self, parent: ProcessIx, child: ProcessIx, at_ns: TimeNs) {
        self.nodes[child].forked_by = Some(parent);
        self.edges.push(ProcessEdge {
            from: parent,
            to: child,
            link: ProcessLink::Fork,
            at_ns,
            endpoint: None,
        });
    }

    /// An image 0 that no process record describes is a copy of its parent: same binary.
    fn inherit_descriptions(&mut self) {
        for ix in 0..self.nodes.len() {
            let node = &self.nodes[ix];
            if node.described || node.key.exec_index != 0 {
                continue;
            }
            let Some(parent) = node.forked_by else {
                continue;
            };
            let (exe, argv) = (
                self.nodes[parent].exe.clone(),
                self.nodes[parent].argv.clone(),
            );
            let node = &mut self.nodes[ix];
            node.exe = exe;
            node.argv = argv;
        }
    }
}

/// When the `execve` that started an image at `exec_ns` began its work for the new program:
/// the first exec open after the previous image began and at most [`EXEC_OPEN_WINDOW_NS`]
/// before the exec, else the exec itself. (A failed `execve` whose exec open succeeded, e.g.
/// ENOEXEC, less than that before a successful one of the same process would move what came
/// between them to the new image too; the log cannot tell the two calls apart.)
fn execve_began(exec_opens: &[TimeNs], previous_begin: TimeNs, exec_ns: TimeNs) -> TimeNs {
    exec_opens
        .iter()
        .copied()
        .find(|&open| {
            open > previous_begin
                && open <= exec_ns
                && exec_ns.saturating_sub(open) <= EXEC_OPEN_WINDOW_NS
        })
        .unwrap_or(exec_ns)
}

fn end_of_image(begins: &[TimeNs], exec_index: usize) -> Option<TimeNs> {
    begins.get(exec_index + 1).copied()
}

/// The latest process record seen while the image ran (`[begin, end)`; for image 0 anything
/// before its end, since start times in ticks are coarser than record times).
fn latest_info(
    infos: &[ProcessInfo],
    exec_index: usize,
    begin: TimeNs,
    end: Option<TimeNs>,
) -> Option<&ProcessInfo> {
    infos
        .iter()
        .filter(|info| end.is_none_or(|end| info.seen_ns < end))
        .filter(|info| exec_index == 0 || info.seen_ns >= begin)
        .max_by_key(|info| info.seen_ns)
}

fn image_node(
    id: ProcessId,
    exec_index: u32,
    begin: TimeNs,
    end: Option<TimeNs>,
    info: Option<&ProcessInfo>,
) -> ProcessNode {
    ProcessNode {
        key: ImageKey {
            run: id.run,
            pid: id.pid,
            start: id.start,
            exec_index,
        },
        begin_ns: begin,
        end_ns: end,
        exe: info.map(|info| info.exe.clone()).unwrap_or_default(),
        argv: info.map(|info| info.argv.clone()).unwrap_or_default(),
        uid: info.map_or(0, |info| info.uid),
        gid: info.map_or(0, |info| info.gid),
        ppid: info.map_or(0, |info| info.ppid),
        described: info.is_some(),
        exit_status: None,
        forked_by: None,
        exec_from: None,
    }
}

/// The second pass.
pub struct AccessPass {
    header: LogHeader,
    runs: Vec<RunInfo>,
    /// The run whose segment the records being read belong to.
    current_run: u32,
    timeline: Timeline,
    stats: LogStats,
    files: Vec<FileNode>,
    file_index: HashMap<Vec<u8>, FileIx>,
    edges: Vec<FileEdge>,
    edge_index: HashMap<(ProcessIx, FileIx, UseKind), usize>,
    net: Vec<ImageNetUse>,
    /// Opens for reading that another process's later write makes [`FileEdge::reading_until`]
    /// matter for (edge indexes).
    reading_opens: Vec<usize>,
    /// For the files of `reading_opens` (by run): their opens (+count at the first request)
    /// and releases (-count at the last), gathered by the handle pass.
    handle_events: HashMap<(u32, FileIx), Vec<(TimeNs, i64)>>,
    /// The run whose segment the handle pass is reading.
    handle_run: u32,
}

impl AccessPass {
    fn new(
        header: LogHeader,
        runs: Vec<RunInfo>,
        timeline: Timeline,
        stats: LogStats,
        net: Vec<ImageNetUse>,
    ) -> AccessPass {
        AccessPass {
            net,
            header,
            runs,
            current_run: 0,
            timeline,
            stats,
            files: Vec::new(),
            file_index: HashMap::new(),
            edges: Vec::new(),
            edge_index: HashMap::new(),
            reading_opens: Vec::new(),
            handle_events: HashMap::new(),
            handle_run: 0,
        }
    }

    /// Second pass: one record (only accesses matter here).
    pub fn add(&mut self, record: &Record) {
        let access = match record {
            Record::Access(access) => access,
            Record::Run(segment) => {
                self.current_run = segment.index;
                return;
            }
            _ => return,
        };
        let id = ProcessId {
            run: self.current_run,
            pid: access.pid,
            start: access.start,
        };
        let images = self.images_of_access(id, access);
        let file = self.intern(&access.path, access);
        let second = second_path(access).map(|target| self.intern(target, access));
        for image in images {
            self.add_edge(image, file, access, false);
            if let Some(target) = second {
                self.add_edge(image, target, access, true);
            }
        }
    }

    /// The images an access belongs to (see the module header).
    fn images_of_access(&self, id: ProcessId, access: &Access) -> Vec<ProcessIx> {
        let Some(images) = self.timeline.images.get(&id) else {
            return Vec::new();
        };
        let position_at = |ts: TimeNs| {
            images
                .iter()
                .rposition(|(begin, _)| *begin <= ts)
                .unwrap_or(0)
        };
        let mut first = position_at(access.first_ns);
        let mut last = position_at(access.last_ns);
        let exec_open = access.op == Op::Open && access.intent & intent::EXEC != 0;
        if exec_open
            && let Some((next_begin, _)) = images.get(first + 1)
            && next_begin.saturating_sub(access.first_ns) <= EXEC_OPEN_WINDOW_NS
        {
            first += 1;
            last = last.max(first);
        }
        images[first..=last].iter().map(|(_, ix)| *ix).collect()
    }

    fn intern(&mut self, raw_path: &[u8], access: &Access) -> FileIx {
        let path = normalize_mirror_path(raw_path);
        let ix = match self.file_index.get(&path) {
            Some(&ix) => ix,
            None => {
                let ix = self.files.len();
                self.files.push(FileNode {
                    path: path.clone(),
                    kind: FileKind::Unknown,
                    succeeded: false,
                    bytes_read: 0,
                    bytes_written: 0,
                });
                self.file_index.insert(path, ix);
                ix
            }
        };
        let node = &mut self.files[ix];
        // A successful access's kind wins over a failed one's.
        if access.kind != FileKind::Unknown && (access.succeeded() || !node.succeeded) {
            node.kind = access.kind;
        }
        node.succeeded |= access.succeeded();
        ix
    }

    fn add_edge(&mut self, process: ProcessIx, file: FileIx, access: &Access, as_target: bool) {
        let use_kind = UseKind {
            op: access.op,
            intent: access.intent,
            errno: access.errno,
            as_target,
        };
        match access.op {
            Op::Read => self.files[file].bytes_read += access.bytes,
            Op::Write => self.files[file].bytes_written += access.bytes,
            Op::CopyFileRange if as_target => self.files[file].bytes_written += access.bytes,
            Op::CopyFileRange => self.files[file].bytes_read += access.bytes,
            _ => {}
        }
        let key = (process, file, use_kind);
        let edge = match self.edge_index.get(&key) {
            Some(&edge) => edge,
            None => {
                self.edges.push(FileEdge {
                    process,
                    file,
                    use_kind,
                    totals: UseTotals {
                        count: 0,
                        bytes: 0,
                        first_ns: access.first_ns,
                        last_ns: access.last_ns,
                    },
                    reading_until: access.last_ns,
                });
                self.edge_index.insert(key, self.edges.len() - 1);
                self.edges.len() - 1
            }
        };
        let totals = &mut self.edges[edge].totals;
        totals.count += access.count;
        totals.bytes += access.bytes;
        totals.first_ns = totals.first_ns.min(access.first_ns);
        totals.last_ns = totals.last_ns.max(access.last_ns);
        let edge = &mut self.edges[edge];
        edge.reading_until = edge.totals.last_ns;
    }

    /// Ends the second pass: whether some open for reading came before another process's
    /// first write of the file (see the module header). Then the same records must go through
    /// [`AccessPass::count_handle`] before [`AccessPass::finish`].
    pub fn needs_handle_pass(&mut self) -> bool {
        let nodes = &self.timeline.nodes;
        let mut producers: HashMap<FileIx, Vec<(ProcessIx, TimeNs)>> = HashMap::new();
        for edge in self.edges.iter().filter(|edge| edge.produces()) {
            producers
                .entry(edge.file)
                .or_default()
                .push((edge.process, edge.totals.first_ns));
        }
        for (ix, edge) in self.edges.iter().enumerate() {
            if !edge.opens_for_reading() {
                continue;
            }
            let Some(writers) = producers.get(&edge.file) else {
                continue;
            };
            let run = nodes[edge.process].key.run;
            let written_later = writers.iter().any(|&(writer, first)| {
                writer != edge.process
                    && nodes[writer].key.run == run
                    && first > edge.totals.last_ns
            });
            if written_later {
                self.reading_opens.push(ix);
                self.handle_events.entry((run, edge.file)).or_default();
            }
        }
        !self.reading_opens.is_empty()
    }

    /// The handle pass: one record; keeps the opens and releases of the files
    /// [`AccessPass::needs_handle_pass`] chose.
    pub fn count_handle(&mut self, record: &Record) {
        let access = match record {
            Record::Access(access) => access,
            Record::Run(segment) => {
                self.handle_run = segment.index;
                return;
            }
            _ => return,
        };
        let opens = matches!(access.op, Op::Open | Op::Create) && access.succeeded();
        if !opens && access.op != Op::Release {
            return;
        }
        let Some(&file) = self.file_index.get(&normalize_mirror_path(&access.path)) else {
            return;
        };
        let Some(events) = self.handle_events.get_mut(&(self.handle_run, file)) else {
            return;
        };
        let count = i64::try_from(access.count).unwrap_or(i64::MAX);
        if opens {
            events.push((access.first_ns.saturating_sub(OPEN_STAMP_SLACK_NS), count));
        } else {
            events.push((access.last_ns, -count));
        }
    }

    /// [`FileEdge::reading_until`] of the opens the handle pass was for: the first time at or
    /// after the open's last request at which the file had no open handle.
    fn close_reading_windows(&mut self) {
        let mut closed: HashMap<(u32, FileIx), Vec<TimeNs>> = HashMap::new();
        for (key, mut events) in self.handle_events.drain() {
            // At one time, opens before releases: a handle is never taken as closed too early.
            events.sort_unstable_by_key(|&(ts, delta)| (ts, delta < 0));
            let mut open: i64 = 0;
            let mut times = Vec::new();
            for (ts, delta) in events {
                // A release of a handle opened under another name (renamed here) must not
                // count against opens to come.
                open = open.saturating_add(delta).max(0);
                if delta < 0 && open == 0 {
                    times.push(ts);
                }
            }
            closed.insert(key, times);
        }
        for &ix in &self.reading_opens {
            let edge = &mut self.edges[ix];
            let run = self.timeline.nodes[edge.process].key.run;
            let times = closed.get(&(run, edge.file)).map_or(&[][..], Vec::as_slice);
            let at = times.partition_point(|&ts| ts < edge.totals.last_ns);
            edge.reading_until = times.get(at).copied().unwrap_or(TimeNs::MAX);
        }
    }

    /// Ends the second pass: unix socket endpoints and connect edges, then the indexes.
    pub fn finish(mut self) -> Graph {
        self.close_reading_windows();
        let AccessPass {
            header,
            runs,
            current_run: _,
            timeline,
            stats,
            files,
            file_index,
            edges,
            edge_index: _,
            net,
            reading_opens: _,
            handle_events: _,
            handle_run: _,
        } = self;
        let mut graph = Graph {
            header,
            runs,
            processes: timeline.nodes,
            files,
            endpoints: Vec::new(),
            file_edges: edges,
            process_edges: timeline.edges,
            stats,
            edges_of_process: Vec::new(),
            edges_of_file: Vec::new(),
            links_of_process: Vec::new(),
            file_index,
            images: timeline
                .images
                .into_iter()
                .map(|(id, images)| (id, images.into_iter().map(|(_, ix)| ix).collect()))
                .collect(),
        };
        graph.index_file_edges();
        add_unix_socket_endpoints(&mut graph);
        add_network_endpoints(&mut graph, net);
        graph.index_process_edges();
        graph
    }
}

impl Graph {
    fn index_file_edges(&mut self) {
        self.edges_of_process = vec![Vec::new(); self.processes.len()];
        self.edges_of_file = vec![Vec::new(); self.files.len()];
        for (ix, edge) in self.file_edges.iter().enumerate() {
            self.edges_of_process[edge.process].push(ix);
            self.edges_of_file[edge.file].push(ix);
        }
    }

    fn index_process_edges(&mut self) {
        self.links_of_process = vec![Vec::new(); self.processes.len()];
        for (ix, edge) in self.process_edges.iter().enumerate() {
            self.links_of_process[edge.from].push(ix);
            if edge.to != edge.from {
                self.links_of_process[edge.to].push(ix);
            }
        }
    }
}

/// The second path of an access when it names a file of the tree (not a symlink's text).
fn second_path(access: &Access) -> Option<&[u8]> {
    match access.op {
        Op::Rename | Op::Link | Op::CopyFileRange => access.target.as_deref(),
        _ => None,
    }
}

/// One endpoint per socket path. The binder made the socket node (bind(2) on a path is a
/// `mknod` of kind socket through FUSE); a client is another process that reached the path
/// successfully (connect(2) resolves the path with lookups; FUSE sees no connect itself). A
/// client that came before the bind did not connect to it.
fn add_unix_socket_endpoints(graph: &mut Graph) {
    for file in 0..graph.files.len() {
        if graph.files[file].kind != FileKind::Socket {
            continue;
        }
        let mut binders: BTreeMap<ProcessIx, UseTotals> = BTreeMap::new();
        let mut clients: BTreeMap<ProcessIx, UseTotals> = BTreeMap::new();
        for edge in graph.edges_of_file(file) {
            if !edge.succeeded() {
                continue;
            }
            let side = if edge.use_kind.op == Op::Mknod {
                &mut binders
            } else if edge.consumes() {
                &mut clients
            } else {
                continue;
            };
            side.entry(edge.process)
                .and_modify(|known| merge_totals(known, &edge.totals))
                .or_insert(edge.totals);
        }
        clients.retain(|client, _| !binders.contains_key(client));
        let endpoint = graph.endpoints.len();
        for (&client, client_totals) in &clients {
            for (&binder, binder_totals) in &binders {
                // Runs of a merged log share paths, never sockets.
                let same_run = graph.processes[client].key.run == graph.processes[binder].key.run;
                if same_run && client_totals.last_ns >= binder_totals.first_ns {
                    graph.process_edges.push(ProcessEdge {
                        from: client,
                        to: binder,
                        link: ProcessLink::Connect,
                        at_ns: client_totals.first_ns.max(binder_totals.first_ns),
                        endpoint: Some(endpoint),
                    });
                }
            }
        }
        graph.endpoints.push(EndpointNode {
            key: EndpointKey::UnixSocket(graph.files[file].path.clone()),
            file: Some(file),
            binders: binders.into_iter().collect(),
            clients: clients.into_iter().collect(),
        });
    }
}

fn merge_totals(into: &mut UseTotals, more: &UseTotals) {
    into.count += more.count;
    into.bytes += more.bytes;
    into.first_ns = into.first_ns.min(more.first_ns);
    into.last_ns = into.last_ns.max(more.last_ns);
}
