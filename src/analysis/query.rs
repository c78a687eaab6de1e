//! The questions a user asks the graph: `ps` and `tree` (which processes ran, to pick a
//! selection), `who PATH` (every process that touched a path and how), `files --pid N` (what
//! one process touched), `stats` (the size of the log and what it lost), `report` (the seed's
//! summary table, one row per strategy) and `why PATH` (the chain of edges that put a path in
//! the set, or the rule that kept it out). Each answer is a plain serializable value (the
//! `--json` form) with a `write_human` for the terminal; nothing here computes a set. Names
//! are [`NameBuf`]s: exact bytes in JSON, escaped in the human form ([`crate::analysis::names`]).

use std::collections::BTreeSet;
use std::io::{self, Write};

use serde::Serialize;

use crate::analysis::closure::{Reason, SetOptions};
use crate::analysis::graph::uses::describe_use;
use crate::analysis::graph::{FileEdge, Graph, LogStats, ProcessIx, ProcessLink};
use crate::analysis::names::NameBuf;
use crate::analysis::paths::is_within;
use crate::analysis::select::Selection;
use crate::analysis::strategy::{Strategy, StrategySet, Stub, StubOrigin};
use crate::record::CONNECTOR_UNAVAILABLE_SOURCE;
use crate::record::TimeNs;

/// Milliseconds since recording started, for human output.
fn offset_ms(graph: &Graph, ts: TimeNs) -> f64 {
    ts.saturating_sub(graph.header.started_ns) as f64 / 1e6
}

/// One process image, as `ps` lists it.
#[derive(Clone, Debug, Serialize)]
pub struct ProcessRow {
    /// The label of the image's run (a merged log holds several; empty: an unlabelled run).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub run: String,
    pub pid: u32,
    pub start: u64,
    pub exec_index: u32,
    pub ppid: u32,
    pub exe: NameBuf,
    pub argv: Vec<String>,
    pub uid: u32,
    pub exit_status: Option<i32>,
    pub selected: bool,
    /// File edges of the image.
    pub files: usize,
    /// Children in `tree`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<ProcessRow>,
    /// A merged log of several hosts: the host of the image's run.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub host: String,
    /// A merged log: the servers of other runs (other hosts) this image connected to.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub connects: Vec<CrossConnect>,
}

/// A connect edge from an image of one run to a server of another (a cross-host connection).
#[derive(Clone, Debug, Serialize)]
pub struct CrossConnect {
    /// The endpoint as the server bound it (`tcp:0.0.0.0:3306`).
    pub endpoint: String,
    pub run: String,
    pub host: String,
    pub pid: u32,
    pub exe: NameBuf,
}

/// The connect edges from `process` to images of other runs.
fn cross_connects(graph: &Graph, process: ProcessIx) -> Vec<CrossConnect> {
    let run = graph.processes[process].key.run;
    let mut found: Vec<CrossConnect> = graph
        .process_dependencies(process)
        .filter(|(server, edge)| {
            edge.link == ProcessLink::Connect && graph.processes[*server].key.run != run
        })
        .map(|(server, edge)| {
            let node = &graph.processes[server];
            CrossConnect {
                endpoint: edge
                    .endpoint
                    .and_then(|endpoint| graph.endpoints.get(endpoint))
                    .map(|endpoint| endpoint.key.describe())
                    .unwrap_or_default(),
                run: graph.run_display(node.key.run),
                host: run_host(graph, node.key.run),
                pid: node.key.pid,
                exe: NameBuf::from(node.exe.as_slice()),
            }
        })
        .collect();
    found.sort_by(|a, b| (&a.run, a.pid, &a.endpoint).cmp(&(&b.run, b.pid, &b.endpoint)));
    found.dedup_by(|a, b| a.run == b.run && a.pid == b.pid && a.endpoint == b.endpoint);
    found
}

/// The host of run `run` of a merged log of several hosts (empty for the log of one run or
/// of one host).
fn run_host(graph: &Graph, run: u32) -> String {
    let Some(first) = graph.runs.first() else {
        return String::new();
    };
    if graph
        .runs
        .iter()
        .all(|info| info.header.host == first.header.host)
    {
        return String::new();
    }
    graph
        .runs
        .get(run as usize)
        .map(|info| info.header.host.clone())
        .unwrap_or_default()
}

fn process_row(graph: &Graph, selection: &Selection, process: ProcessIx) -> ProcessRow {
    let node = &graph.processes[process];
    ProcessRow {
        run: graph.run_display(node.key.run),
        pid: node.key.pid,
        start: node.key.start,
        exec_index: node.key.exec_index,
        ppid: node.ppid,
        exe: NameBuf::from(node.exe.as_slice()),
        argv: node.argv.clone(),
        uid: node.uid,
        exit_status: node.exit_status,
        selected: selection.contains(process),
        files: graph.edges_of_process(process).count(),
        children: Vec::new(),
        host: run_host(graph, node.key.run),
        connects: if graph.is_merged() {
            cross_connects(graph, process)
        } else {
            Vec::new()
        },
    }
}

/// Every image, by pid, start and exec order.
pub fn ps(graph: &Graph, selection: &Selection) -> Vec<ProcessRow> {
    let mut order: Vec<ProcessIx> = (0..graph.processes.len()).collect();
    order.sort_by_key(|&process| graph.processes[process].key);
    order
        .into_iter()
        .map(|process| process_row(graph, selection, process))
        .collect()
}

/// Images as a forest: a forked child or an exec successor hangs under the image it came from.
pub fn tree(graph: &Graph, selection: &Selection) -> Vec<ProcessRow> {
    let mut roots: Vec<ProcessIx> = (0..graph.processes.len())
        .filter(|&process| {
            let node = &graph.processes[process];
            node.forked_by.is_none() && node.exec_from.is_none()
        })
        .collect();
    roots.sort_by_key(|&process| graph.processes[process].key);
    let mut seen = vec![false; graph.processes.len()];
    roots
        .into_iter()
        .map(|root| subtree(graph, selection, root, &mut seen))
        .collect()
}

fn subtree(
    graph: &Graph,
    selection: &Selection,
    process: ProcessIx,
    seen: &mut [bool],
) -> ProcessRow {
    seen[process] = true;
    let mut row = process_row(graph, selection, process);
    let mut next: Vec<ProcessIx> = graph
        .exec_successor(process)
        .into_iter()
        .chain(graph.forked_children(process))
        .filter(|&child| !seen[child])
        .collect();
    next.sort_by_key(|&child| graph.processes[child].begin_ns);
    for child in next {
        if !seen[child] {
            row.children.push(subtree(graph, selection, child, seen));
        }
    }
    row
}

fn exit_text(status: Option<i32>) -> String {
    match status {
        None => "-".to_string(),
        Some(status) if status & 0x7f != 0 => format!("sig{}", status & 0x7f),
        Some(status) => format!("exit{}", (status >> 8) & 0xff),
    }
}

fn command_text(row: &ProcessRow) -> String {
    if row.argv.is_empty() {
        if row.exe.is_empty() {
            "(no binary)".to_string()
        } else {
            row.exe.to_string()
        }
    } else {
        row.argv.join(" ")
    }
}

/// Whether rows come from several runs (a merged log): then each names its run.
fn several_runs(rows: &[ProcessRow]) -> bool {
    rows.iter().any(|row| row.run != rows[0].run)
}

pub fn write_ps_human(rows: &[ProcessRow], out: &mut dyn Write) -> io::Result<()> {
    let runs = several_runs(rows);
    let width = rows
        .iter()
        .map(|row| row.run.len())
        .max()
        .unwrap_or(0)
        .max(3);
    if runs {
        write!(out, "{:<width$} ", "RUN")?;
    }
    writeln!(
        out,
        "{:>7} {:>4} {:>7} {:>6} {:>5} {:>3}  EXE  COMMAND",
        "PID", "EXEC", "PPID", "STATUS", "FILES", "SEL"
    )?;
    for row in rows {
        if runs {
            write!(out, "{:<width$} ", row.run)?;
        }
        writeln!(
            out,
            "{:>7} {:>4} {:>7} {:>6} {:>5} {:>3}  {}  {}",
            row.pid,
            row.exec_index,
            row.ppid,
            exit_text(row.exit_status),
            row.files,
            if row.selected { "*" } else { "" },
            if row.exe.is_empty() {
                "-".to_string()
            } else {
                row.exe.to_string()
            },
            command_text(row)
        )?;
    }
    Ok(())
}

/// The forest; for a merged log each run's trees under a `run LABEL (host HOST):` line, and
/// under an image its connections to servers of other runs (`-> tcp:... on HOST: pid N`).
pub fn write_tree_human(rows: &[ProcessRow], out: &mut dyn Write) -> io::Result<()> {
    let runs = several_runs(rows);
    let mut current: Option<&str> = None;
    for row in rows {
        if runs && current != Some(row.run.as_str()) {
            if row.host.is_empty() {
                writeln!(out, "run {}:", row.run)?;
            } else {
                writeln!(out, "run {} (host {}):", row.run, row.host)?;
            }
            current = Some(row.run.as_str());
        }
        write_tree_row(row, usize::from(runs), false, out)?;
    }
    Ok(())
}

fn write_tree_row(
    row: &ProcessRow,
    depth: usize,
    exec: bool,
    out: &mut dyn Write,
) -> io::Result<()> {
    let marker = if exec { "=> " } else { "" };
    writeln!(
        out,
        "{}{}{}{} {} [{}]{}",
        "  ".repeat(depth),
        marker,
        if row.selected { "*" } else { "" },
        row.pid,
        command_text(row),
        exit_text(row.exit_status),
        if row.exe.is_empty() {
            String::new()
        } else {
            format!(" ({})", row.exe)
        }
    )?;
    for connect in &row.connects {
        writeln!(
            out,
            "{}-> {} on {} (run {}): pid {} {}",
            "  ".repeat(depth + 1),
            connect.endpoint,
            connect.host,
            connect.run,
            connect.pid,
            connect.exe
        )?;
    }
    for child in &row.children {
        let child_exec = child.pid == row.pid && child.exec_index == row.exec_index + 1;
        write_tree_row(child, depth + 1, child_exec, out)?;
    }
    Ok(())
}

/// One edge, as `who` and `files` list them.
#[derive(Clone, Debug, Serialize)]
pub struct EdgeRow {
    /// The label of the process's run (empty: an unlabelled run).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub run: String,
    pub pid: u32,
    pub start: u64,
    pub exec_index: u32,
    pub exe: NameBuf,
    pub path: NameBuf,
    /// Edge category: read, exec, stat, write, missing, ...
    pub op: &'static str,
    /// The operation as recorded, e.g. `open(read,exec)`.
    pub detail: String,
    pub errno: i32,
    pub count: u64,
    pub bytes: u64,
    pub first_ns: TimeNs,
    pub last_ns: TimeNs,
}

fn edge_row(graph: &Graph, edge: &FileEdge) -> EdgeRow {
    let node = &graph.processes[edge.process];
    EdgeRow {
        run: graph.run_display(node.key.run),
        pid: node.key.pid,
        start: node.key.start,
        exec_index: node.key.exec_index,
        exe: NameBuf::from(node.exe.as_slice()),
        path: NameBuf::from(graph.files[edge.file].path.as_slice()),
        op: edge.op().name(),
        detail: describe_use(&edge.use_kind),
        errno: edge.use_kind.errno,
        count: edge.totals.count,
        bytes: edge.totals.bytes,
        first_ns: edge.totals.first_ns,
        last_ns: edge.totals.last_ns,
    }
}

/// Every edge on `path`, in time order.
pub fn who(graph: &Graph, path: &[u8]) -> Vec<EdgeRow> {
    let Some(file) = graph.file(path) else {
        return Vec::new();
    };
    let mut rows: Vec<EdgeRow> = graph
        .edges_of_file(file)
        .map(|edge| edge_row(graph, edge))
        .collect();
    rows.sort_by_key(|row| (row.first_ns, row.pid, row.exec_index));
    rows
}

/// Every edge of every image of pid `pid`, by path.
pub fn files_of_pid(graph: &Graph, pid: u32) -> Vec<EdgeRow> {
    let mut rows: Vec<EdgeRow> = (0..graph.processes.len())
        .filter(|&process| graph.processes[process].key.pid == pid)
        .flat_map(|process| graph.edges_of_process(process))
        .map(|edge| edge_row(graph, edge))
        .collect();
    rows.sort_by(|a, b| (&a.path, a.first_ns).cmp(&(&b.path, b.first_ns)));
    rows
}

pub fn write_edges_human(graph: &Graph, rows: &[EdgeRow], out: &mut dyn Write) -> io::Result<()> {
    for row in rows {
        let errno = if row.errno != 0 {
            format!(" errno {}", row.errno)
        } else {
            String::new()
        };
        let pid = if graph.is_merged() {
            format!("{}:{}", row.run, row.pid)
        } else {
            row.pid.to_string()
        };
        writeln!(
            out,
            "{:>7}/{} {:<11} {:<24} x{:<5} +{:.3}ms  {}  ({}){}",
            pid,
            row.exec_index,
            row.op,
            row.detail,
            row.count,
            offset_ms(graph, row.first_ns),
            row.path,
            if row.exe.is_empty() {
                "-".to_string()
            } else {
                row.exe.to_string()
            },
            errno
        )?;
    }
    Ok(())
}

/// `depsetfs stats`.
#[derive(Clone, Debug, Serialize)]
pub struct Stats {
    #[serde(flatten)]
    pub log: LogStats,
    pub processes: usize,
    pub process_images: usize,
    pub files: usize,
    pub missing_files: usize,
    pub endpoints: usize,
    pub file_edges: usize,
    pub process_edges: usize,
    pub network_recorded: bool,
}

pub fn stats(graph: &Graph) -> Stats {
    let processes: BTreeSet<_> = graph
        .processes
        .iter()
        .map(|node| node.key.process())
        .collect();
    Stats {
        log: graph.stats.clone(),
        processes: processes.len(),
        process_images: graph.processes.len(),
        files: graph.files.len(),
        missing_files: graph.files.iter().filter(|file| !file.succeeded).count(),
        endpoints: graph.endpoints.len(),
        file_edges: graph.file_edges.len(),
        process_edges: graph.process_edges.len(),
        network_recorded: graph.network_recorded(),
    }
}

pub fn write_stats_human(stats: &Stats, out: &mut dyn Write) -> io::Result<()> {
    let log = &stats.log;
    writeln!(out, "records          {}", log.records)?;
    writeln!(
        out,
        "accesses         {} in {} records ({} failed)",
        log.accesses, log.access_records, log.failed_accesses
    )?;
    writeln!(out, "bytes read       {}", log.bytes_read)?;
    writeln!(out, "bytes written    {}", log.bytes_written)?;
    writeln!(
        out,
        "processes        {} ({} exec images; {} forks, {} execs, {} exits)",
        stats.processes, stats.process_images, log.forks, log.execs, log.exits
    )?;
    writeln!(
        out,
        "files            {} ({} missing: every access failed)",
        stats.files, stats.missing_files
    )?;
    writeln!(out, "endpoints        {}", stats.endpoints)?;
    writeln!(
        out,
        "edges            {} process-file, {} process-process",
        stats.file_edges, stats.process_edges
    )?;
    if !stats.network_recorded {
        writeln!(out, "network          not recorded (no TCP/UDP edges)")?;
    }
    if log.lost.is_empty() {
        writeln!(out, "lost events      none")?;
    }
    if log.process_events_unrecorded() {
        writeln!(
            out,
            "lost events      every fork, exec and exit ({CONNECTOR_UNAVAILABLE_SOURCE}): processes are not cut at their execs"
        )?;
    }
    for (source, count) in log.counted_losses() {
        writeln!(
            out,
            "lost events      {count} ({source}): the log is incomplete"
        )?;
    }
    if let Some(at) = log.truncated_at {
        writeln!(out, "truncated        at byte {at}")?;
    }
    match (log.ended_cleanly, log.still_recording) {
        (_, true) => writeln!(out, "end              still being recorded")?,
        (Some(true), false) => writeln!(out, "end              clean")?,
        (Some(false), false) => writeln!(
            out,
            "end              not clean (the recorder was killed): events after {} may be missing",
            crate::analysis::graph::describe_time(log.last_record_ns)
        )?,
        (None, false) => {}
    }
    Ok(())
}

/// One row of `depsetfs report`.
#[derive(Clone, Debug, Serialize)]
pub struct ReportRow {
    pub strategy: Strategy,
    pub files: usize,
    pub bytes: u64,
    pub processes: usize,
    pub stubs: usize,
    /// Executables (binaries and interpreters a needed image ran) shipped whole.
    pub executables_whole: usize,
    /// Binaries a stub could stand in for (shipped as stubs with `--stubs`).
    pub stub_candidates: Vec<String>,
    /// Paths this row has and the previous one does not.
    pub added: usize,
    /// Paths the previous row has and this one does not.
    pub removed: usize,
    /// `report --verify`: whether this set ran the command.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub works: Option<bool>,
}

pub fn report(sets: &[StrategySet]) -> Vec<ReportRow> {
    let mut rows = Vec::new();
    let mut previous: Option<BTreeSet<&[u8]>> = None;
    for set in sets {
        let paths: BTreeSet<&[u8]> = set.set.entries.iter().map(|e| e.path.as_slice()).collect();
        let (added, removed) = match &previous {
            Some(before) => (
                paths.difference(before).count(),
                before.difference(&paths).count(),
            ),
            None => (0, 0),
        };
        rows.push(ReportRow {
            strategy: set.strategy,
            files: paths.len(),
            bytes: set.total_bytes(),
            processes: set.needed.processes().count(),
            stubs: set.stubs.len(),
            executables_whole: set.executables,
            stub_candidates: set
                .stub_candidates
                .iter()
                .map(|stub| String::from_utf8_lossy(&stub.path).into_owned())
                .collect(),
            added,
            removed,
            works: None,
        });
        previous = Some(paths);
    }
    rows
}

pub fn write_report_human(rows: &[ReportRow], out: &mut dyn Write) -> io::Result<()> {
    let verified = rows.iter().any(|row| row.works.is_some());
    let works = |row: &ReportRow| match row.works {
        Some(true) => "yes    ",
        Some(false) => "no     ",
        None => "",
    };
    writeln!(
        out,
        "{:<8} {:>7} {:>12} {:>9} {:>5} {:>15}  {}vs previous row",
        "STRATEGY",
        "FILES",
        "BYTES",
        "PROCESSES",
        "STUBS",
        "EXECS WHOLE/STUB",
        if verified { "WORKS  " } else { "" }
    )?;
    for (position, row) in rows.iter().enumerate() {
        let diff = if position == 0 {
            "-".to_string()
        } else {
            format!("+{} -{}", row.added, row.removed)
        };
        writeln!(
            out,
            "{:<8} {:>7} {:>12} {:>9} {:>5} {:>16}  {}{}",
            row.strategy.name(),
            row.files,
            row.bytes,
            row.processes,
            row.stubs,
            format!("{}/{}", row.executables_whole, row.stubs),
            works(row),
            diff
        )?;
    }
    for row in rows.iter().filter(|row| !row.stub_candidates.is_empty()) {
        writeln!(
            out,
            "{}: stub candidates (--stubs ships a program that exits 0): {}",
            row.strategy.name(),
            row.stub_candidates.join(" ")
        )?;
    }
    Ok(())
}

/// One step of a `why` chain.
#[derive(Clone, Debug, Serialize)]
pub struct WhyStep {
    pub pid: u32,
    pub exec_index: u32,
    pub process: String,
    /// Why this image is needed.
    pub needed_because: String,
}

/// How the last image of a chain reached the path.
#[derive(Clone, Debug, Serialize)]
pub struct WhyUse {
    /// Exec-intent opens of the image: (role, path).
    pub exec_chain: Vec<(String, NameBuf)>,
    pub edges: Vec<EdgeRow>,
}

/// `depsetfs why PATH`.
#[derive(Clone, Debug, Serialize)]
pub struct WhyAnswer {
    pub path: NameBuf,
    pub strategy: Strategy,
    pub in_set: bool,
    /// `used`, `symlink-hop`, `parent` in the set; out: why not.
    pub verdict: String,
    pub chain: Vec<WhyStep>,
    pub used: Option<WhyUse>,
    /// A merged log: the run the chain starts in (the one that put the path in).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
    /// A merged log: every run whose needed processes used the path.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub needed_by_runs: Vec<String>,
}

/// Explains `path` under `result` (a strategy's set for a selection).
pub fn why(graph: &Graph, result: &StrategySet, options: &SetOptions, path: &[u8]) -> WhyAnswer {
    let mut answer = WhyAnswer {
        path: NameBuf::from(path),
        strategy: result.strategy,
        in_set: false,
        verdict: String::new(),
        chain: Vec::new(),
        used: None,
        run: None,
        needed_by_runs: Vec::new(),
    };
    if let Some(entry) = result.set.entries.iter().find(|entry| entry.path == path) {
        answer.in_set = true;
        answer.verdict = in_set_verdict(result, path, entry.reason);
        if entry.reason == Reason::Used {
            explain_use(graph, result, path, &mut answer);
        }
        return answer;
    }
    answer.verdict = out_verdict(graph, result, options, path);
    answer
}

fn in_set_verdict(result: &StrategySet, path: &[u8], reason: Reason) -> String {
    match reason {
        Reason::Used => "in the set: used by a needed process".to_string(),
        Reason::SymlinkHop => {
            "in the set: a symlink on the way to a used path, or where such a chain ends"
                .to_string()
        }
        Reason::Parent => {
            let below = result.set.entries.iter().find(|entry| {
                entry.reason == Reason::Used && entry.path != path && is_within(&entry.path, path)
            });
            match below {
                Some(entry) => format!(
                    "in the set: a parent directory of {}",
                    crate::analysis::names::escape(&entry.path)
                ),
                None => "in the set: a parent directory of a path in the set".to_string(),
            }
        }
    }
}

/// The chain from a root to the first needed image that used `path`, its exec chain and its
/// edges on the path.
fn explain_use(graph: &Graph, result: &StrategySet, path: &[u8], answer: &mut WhyAnswer) {
    let Some(file) = graph.file(path) else {
        return;
    };
    let users: BTreeSet<ProcessIx> = graph
        .edges_of_file(file)
        .filter(|edge| edge.succeeded() && result.needed.contains(edge.process))
        .map(|edge| edge.process)
        .collect();
    if graph.is_merged() {
        let runs: BTreeSet<u32> = users
            .iter()
            .map(|&user| graph.processes[user].key.run)
            .collect();
        answer.needed_by_runs = runs.into_iter().map(|run| graph.run_display(run)).collect();
    }
    // The shortest chain explains best.
    let Some(user) = users
        .into_iter()
        .min_by_key(|&user| (result.needed.chain_to(user).len(), user))
    else {
        return;
    };
    if graph.is_merged() {
        answer.run = Some(graph.run_display(graph.processes[user].key.run));
    }
    for (image, reason) in result.needed.chain_to(user) {
        let node = &graph.processes[image];
        answer.chain.push(WhyStep {
            pid: node.key.pid,
            exec_index: node.key.exec_index,
            process: graph.describe_process(image),
            needed_because: reason.describe(graph),
        });
    }
    let exec_chain = graph
        .exec_chain(user)
        .into_iter()
        .map(|(edge, role)| {
            let path = NameBuf::from(graph.files[edge.file].path.as_slice());
            (role.name().to_string(), path)
        })
        .collect();
    let edges = graph
        .edges_of_process(user)
        .filter(|edge| edge.file == file && edge.succeeded())
        .map(|edge| edge_row(graph, edge))
        .collect();
    answer.used = Some(WhyUse { exec_chain, edges });
}

fn out_verdict(graph: &Graph, result: &StrategySet, options: &SetOptions, path: &[u8]) -> String {
    let never = options.never_shipped();
    if result
        .set
        .required_devices
        .iter()
        .any(|device| device == path)
    {
        return "not copied: a device node, listed under required_devices".to_string();
    }
    if never.contains(path) {
        return "never shipped: /proc, /sys, /dev and the mirror's mountpoint are not copied"
            .to_string();
    }
    if let Some((_, glob)) = result
        .excluded
        .iter()
        .find(|(excluded, _)| excluded == path)
    {
        return format!("excluded by the rule {glob:?}");
    }
    if result.outputs.iter().any(|output| output == path) {
        return "left out: only written by needed processes, never read (outputs policy); its directory is shipped".to_string();
    }
    if let Some(stub) = result.stubs.iter().find(|stub| stub.path == path) {
        return format!("replaced by a stub: {}", stub_reason(graph, stub));
    }
    if let Some(stub) = result.stub_candidates.iter().find(|stub| stub.path == path) {
        return format!(
            "left out, a stub candidate (--stubs ships a program that exits 0 in its place): {}",
            stub_reason(graph, stub)
        );
    }
    if result.looked_up_only.iter().any(|looked| looked == path) {
        return "left out: needed processes only looked it up, and the processes that ran it are not needed; without the libraries it loads it would not run".to_string();
    }
    let Some(file) = graph.file(path) else {
        return "not in the log: no process touched it".to_string();
    };
    if !graph.files[file].succeeded {
        let searchers: BTreeSet<String> = graph
            .edges_of_file(file)
            .map(|edge| graph.describe_process(edge.process))
            .collect();
        return format!(
            "missing: every access failed (looked for by {})",
            searchers.into_iter().collect::<Vec<_>>().join("; ")
        );
    }
    let needed_user = graph
        .edges_of_file(file)
        .any(|edge| edge.succeeded() && result.needed.contains(edge.process));
    if needed_user {
        return "dropped: it no longer exists in the source tree".to_string();
    }
    let others: BTreeSet<String> = graph
        .edges_of_file(file)
        .filter(|edge| edge.succeeded())
        .map(|edge| {
            format!(
                "{} ({})",
                graph.describe_process(edge.process),
                edge.op().name()
            )
        })
        .collect();
    format!(
        "not needed: touched only by processes the {} strategy does not need: {}",
        result.strategy.name(),
        others.into_iter().collect::<Vec<_>>().join("; ")
    )
}

/// Why a binary can be a stub, and what the log can and cannot tell about its result.
fn stub_reason(graph: &Graph, stub: &Stub) -> String {
    let helper = &graph.processes[stub.image];
    let status = match helper.exit_status {
        Some(status) if status & 0x7f == 0 => format!("it exited with status {}", status >> 8),
        Some(status) => format!("it was killed by signal {}", status & 0x7f),
        None => "its exit is not in the log".to_string(),
    };
    let how = match stub.origin {
        StubOrigin::Launched => "started",
        StubOrigin::LookedUp => "only looked up",
    };
    format!(
        "{} {how} it, and {} ran it but is not needed: it wrote nothing a needed process read afterwards and did not connect to a needed process; {status}. The log cannot tell whether the parent read its output through a pipe or acted on its exit status (the stub exits 0)",
        graph.describe_process(stub.launched_by),
        graph.describe_process(stub.image),
    )
}

pub fn write_why_human(graph: &Graph, answer: &WhyAnswer, out: &mut dyn Write) -> io::Result<()> {
    writeln!(
        out,
        "{} ({}): {}",
        answer.path,
        answer.strategy.name(),
        answer.verdict
    )?;
    if let Some(run) = &answer.run {
        writeln!(
            out,
            "  in run {run} (needed by run(s): {})",
            answer.needed_by_runs.join(", ")
        )?;
    }
    for (depth, step) in answer.chain.iter().enumerate() {
        writeln!(
            out,
            "{}{}  <- {}",
            "  ".repeat(depth + 1),
            step.process,
            step.needed_because
        )?;
    }
    let Some(used) = &answer.used else {
        return Ok(());
    };
    let depth = answer.chain.len() + 1;
    for (role, path) in &used.exec_chain {
        writeln!(out, "{}exec {path} ({role})", "  ".repeat(depth))?;
    }
    for edge in &used.edges {
        writeln!(
            out,
            "{}{} {} x{} at +{:.3}ms",
            "  ".repeat(depth),
            edge.detail,
            edge.path,
            edge.count,
            offset_ms(graph, edge.first_ns)
        )?;
    }
    Ok(())
}
