//! `depsetfs merge`: several logs become one log of several runs, and the conflicts between
//! runs recorded from different source trees are found. A merged log (format 4) is a header
//! whose `runs` lists every run's own header (label, host, source, command, times, fidelity,
//! version) followed, for each run, by a `Run` record with its index and then that run's
//! records exactly as they were recorded: nothing is rewritten, so pids stay in their run's pid
//! space and the graph keeps runs apart ([`crate::analysis::graph::build`]). Merging a merged
//! log flattens its runs into the new list. Merging streams: memory holds the headers, never
//! the records. A conflict is a regular file that processes of two runs used (the runs' default
//! selections, as `dump --set` takes them) whose content differs between the runs' source
//! trees; it is reported with both hashes and never resolved here (see docs/log-format.md,
//! "Merged logs").

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::analysis::graph::{FileIx, Graph};
use crate::analysis::select::default_selection;
use crate::log::{LogError, LogReader, LogWriter};
use crate::record::{FileKind, LOG_FORMAT_VERSION, LOG_MAGIC, LogHeader, Record, RunSegment};

#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(
        "--output {path}: the file exists; pass --overwrite-log to replace it, or choose another path"
    )]
    OutputExists { path: PathBuf },
    #[error("--output {path}: it is also an input of the merge")]
    OutputIsInput { path: PathBuf },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "the log's runs were recorded from {count} source trees ({trees}); pass --prefer RUN to read the set from that run's tree"
    )]
    SeveralSources { count: usize, trees: String },
    #[error("--prefer {label}: the log has no run labelled so (its runs: {known})")]
    UnknownRun { label: String, known: String },
    #[error("{path}: record of run {index}, but the merged log lists {runs} run(s)")]
    BadRun {
        path: PathBuf,
        index: u32,
        runs: usize,
    },
}

/// What a merge did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MergeReport {
    /// The runs of the merged log, in order.
    pub runs: Vec<LogHeader>,
    /// Records copied (the `Run` records merge adds not counted).
    pub records: u64,
    /// Inputs whose last record was cut short (everything before it was copied).
    pub truncated: Vec<PathBuf>,
    /// Labels changed to keep them apart: (input, old label, new label).
    pub relabelled: Vec<(PathBuf, String, String)>,
}

/// Merges `inputs` into a new log at `output` (refused if it exists, unless `overwrite`). The
/// log is written next to `output` and renamed over it once complete.
pub fn merge_logs(
    inputs: &[PathBuf],
    output: &Path,
    overwrite: bool,
) -> Result<MergeReport, MergeError> {
    check_output(inputs, output, overwrite)?;
    let mut readers = Vec::with_capacity(inputs.len());
    for input in inputs {
        readers.push(LogReader::open(input)?);
    }
    let mut report = MergeReport {
        runs: Vec::new(),
        records: 0,
        truncated: Vec::new(),
        relabelled: Vec::new(),
    };
    let mut labels: BTreeSet<String> = BTreeSet::new();
    // Where each input's runs start in the merged list.
    let mut offsets = Vec::with_capacity(readers.len());
    for reader in &readers {
        offsets.push(report.runs.len() as u32);
        for mut run in run_headers_of(reader.header(), reader.path()) {
            let wanted = run.label.clone().unwrap_or_default();
            let label = unique_label(&wanted, &labels);
            if label != wanted {
                report
                    .relabelled
                    .push((reader.path().to_path_buf(), wanted, label.clone()));
            }
            labels.insert(label.clone());
            run.label = Some(label);
            report.runs.push(run);
        }
    }
    let header = merged_header(&report.runs);
    let temporary = temporary_path(output);
    let outcome = write_merged(&header, readers, &offsets, &temporary, &mut report);
    let outcome = outcome.and_then(|()| {
        std::fs::rename(&temporary, output).map_err(|source| MergeError::Io {
            path: output.to_path_buf(),
            source,
        })
    });
    if outcome.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    outcome.map(|()| report)
}

fn check_output(inputs: &[PathBuf], output: &Path, overwrite: bool) -> Result<(), MergeError> {
    let existing = match std::fs::metadata(output) {
        Ok(metadata) => Some(metadata),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(source) => {
            return Err(MergeError::Io {
                path: output.to_path_buf(),
                source,
            });
        }
    };
    let Some(existing) = existing else {
        return Ok(());
    };
    use std::os::unix::fs::MetadataExt;
    let same_file = |input: &PathBuf| {
        std::fs::metadata(input)
            .is_ok_and(|m| m.dev() == existing.dev() && m.ino() == existing.ino())
    };
    if inputs.iter().any(same_file) {
        return Err(MergeError::OutputIsInput {
            path: output.to_path_buf(),
        });
    }
    if !overwrite {
        return Err(MergeError::OutputExists {
            path: output.to_path_buf(),
        });
    }
    Ok(())
}

/// The runs an input holds, each with a label: a merged log's own list, or the log's header
/// (labelled after its file when it has no label).
fn run_headers_of(header: &LogHeader, path: &Path) -> Vec<LogHeader> {
    if header.is_merged() {
        return header.runs.clone();
    }
    let mut run = header.clone();
    if run.label.as_deref().is_none_or(str::is_empty) {
        let stem = path.file_stem().unwrap_or(path.as_os_str());
        run.label = Some(stem.to_string_lossy().into_owned());
    }
    vec![run]
}

/// `wanted`, or `wanted-2`, `wanted-3`... when a run already has it.
fn unique_label(wanted: &str, taken: &BTreeSet<String>) -> String {
    let base = if wanted.is_empty() { "run" } else { wanted };
    if !taken.contains(base) {
        return base.to_string();
    }
    (2..)
        .map(|n| format!("{base}-{n}"))
        .find(|label| !taken.contains(label))
        .unwrap_or_default()
}

/// The merged log's header: the runs' list, and top-level fields for readers that look only
/// there: those of the first run, the earliest start, and what all runs agree on.
pub fn merged_header(runs: &[LogHeader]) -> LogHeader {
    let first = runs.first();
    let agreed = |field: fn(&LogHeader) -> &str, mixed: &str| -> String {
        let values: BTreeSet<&str> = runs.iter().map(field).collect();
        match values.len() {
            1 => values.into_iter().next().unwrap_or_default().to_string(),
            _ => mixed.to_string(),
        }
    };
    LogHeader {
        magic: LOG_MAGIC.to_string(),
        version: LOG_FORMAT_VERSION,
        source: first.map(|run| run.source.clone()).unwrap_or_default(),
        mountpoint: first.map(|run| run.mountpoint.clone()).unwrap_or_default(),
        host: first.map(|run| run.host.clone()).unwrap_or_default(),
        kernel: first.map(|run| run.kernel.clone()).unwrap_or_default(),
        started_ns: runs.iter().map(|run| run.started_ns).min().unwrap_or(0),
        boot_time_ns: first.map_or(0, |run| run.boot_time_ns),
        clock_ticks: first.map_or(100, |run| run.clock_ticks),
        fidelity: agreed(|run| run.fidelity.as_str(), "mixed"),
        network_recorded: runs.iter().all(|run| run.network_recorded),
        command: None,
        label: None,
        runs: runs.to_vec(),
        // The image an OCI export keeps the configuration of: only when every run traced it.
        image: first
            .and_then(|run| run.image.clone())
            .filter(|image| runs.iter().all(|run| run.image.as_ref() == Some(image))),
        addresses: first.map(|run| run.addresses.clone()).unwrap_or_default(),
        addresses_from: first
            .map(|run| run.addresses_from.clone())
            .unwrap_or_default(),
    }
}

fn temporary_path(output: &Path) -> PathBuf {
    let name = output.file_name().unwrap_or(output.as_os_str());
    let mut temporary = name.to_os_string();
    temporary.push(format!(".merging.{}", std::process::id()));
    output.with_file_name(temporary)
}

fn write_merged(
    header: &LogHeader,
    readers: Vec<LogReader>,
    offsets: &[u32],
    temporary: &Path,
    report: &mut MergeReport,
) -> Result<(), MergeError> {
    let mut writer = LogWriter::create(temporary, header)?;
    for (mut reader, &offset) in readers.into_iter().zip(offsets) {
        let path = reader.path().to_path_buf();
        let merged_input = reader.header().is_merged();
        let input_runs = reader.header().runs.len();
        let mut in_segment = false;
        for record in reader.by_ref() {
            let record = record?;
            match record {
                Record::Run(segment) if merged_input => {
                    if segment.index as usize >= input_runs {
                        return Err(MergeError::BadRun {
                            path,
                            index: segment.index,
                            runs: input_runs,
                        });
                    }
                    writer.append(&Record::Run(RunSegment {
                        index: segment.index + offset,
                    }))?;
                    in_segment = true;
                }
                record => {
                    if !in_segment {
                        // A run's log, or stray records before a merged log's first segment
                        // (its first run's).
                        writer.append(&Record::Run(RunSegment { index: offset }))?;
                        in_segment = true;
                    }
                    writer.append(&record)?;
                    report.records += 1;
                }
            }
        }
        if !in_segment {
            // An input without records still names its run.
            writer.append(&Record::Run(RunSegment { index: offset }))?;
        }
        if reader.truncated_at().is_some() {
            report.truncated.push(path);
        }
    }
    writer.flush()?;
    Ok(())
}

/// One run's side of a conflict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConflictSide {
    pub run: String,
    pub host: String,
    pub source: String,
    /// Hex SHA-256 of the file in that run's source tree; None: absent there.
    pub sha256: Option<String>,
}

/// A file two runs used whose content differs between their source trees.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    pub path: Vec<u8>,
    /// One side per source tree that could be read, in run order.
    pub sides: Vec<ConflictSide>,
}

impl Conflict {
    /// `PATH: run A (source S1) sha256 X, run B (source S2) sha256 Y`.
    pub fn describe(&self) -> String {
        let sides: Vec<String> = self
            .sides
            .iter()
            .map(|side| {
                format!(
                    "run {} (source {}{}) {}",
                    side.run,
                    side.source,
                    host_note(&side.host),
                    side.sha256
                        .as_deref()
                        .map_or("absent".to_string(), |hash| format!("sha256 {hash}"))
                )
            })
            .collect();
        format!(
            "{}: {}",
            crate::analysis::names::escape(&self.path),
            sides.join(", ")
        )
    }
}

fn host_note(host: &str) -> String {
    if host.is_empty() {
        String::new()
    } else {
        format!(" on {host}")
    }
}

/// A source tree `merge` could not read to look for conflicts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnreadableTree {
    pub runs: Vec<String>,
    pub host: String,
    pub source: String,
    pub reason: String,
}

/// What the conflict check found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConflictCheck {
    pub conflicts: Vec<Conflict>,
    pub unreadable: Vec<UnreadableTree>,
    /// Files both compared (used by runs of at least two readable, different trees).
    pub compared: usize,
}

/// The source tree of a run: where and on which machine it was recorded.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct TreeKey {
    pub host: String,
    pub source: String,
}

/// The distinct source trees of a graph's runs, with the runs recorded from each.
pub fn source_trees(graph: &Graph) -> BTreeMap<TreeKey, Vec<u32>> {
    let mut trees: BTreeMap<TreeKey, Vec<u32>> = BTreeMap::new();
    for (run, info) in graph.runs.iter().enumerate() {
        let key = TreeKey {
            host: info.header.host.clone(),
            source: info.header.source.clone(),
        };
        trees.entry(key).or_default().push(run as u32);
    }
    trees
}

/// Which source tree a set of a merged log is read from: a log whose runs all come from one
/// tree is read from it; a log of several trees only with `prefer`, the label of the run whose
/// tree is read (its content wins every conflict; a path only the other trees hold is dropped
/// as missing). The graph's header then names that tree.
pub fn choose_source(graph: &mut Graph, prefer: Option<&str>) -> Result<(), MergeError> {
    let trees = source_trees(graph);
    let known = || {
        (0..graph.runs.len() as u32)
            .map(|run| graph.run_display(run))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match prefer {
        Some(label) => {
            let Some(run) = graph.run_named(label) else {
                return Err(MergeError::UnknownRun {
                    label: label.to_string(),
                    known: known(),
                });
            };
            let chosen = graph.runs[run as usize].header.clone();
            graph.header.source = chosen.source;
            graph.header.mountpoint = chosen.mountpoint;
            graph.header.host = chosen.host;
            Ok(())
        }
        None if trees.len() > 1 => {
            let listed: Vec<String> = trees
                .iter()
                .map(|(tree, runs)| {
                    let labels: Vec<String> = runs.iter().map(|&r| graph.run_display(r)).collect();
                    format!(
                        "{}: {}{}",
                        labels.join(" "),
                        tree.source,
                        host_note(&tree.host)
                    )
                })
                .collect();
            Err(MergeError::SeveralSources {
                count: trees.len(),
                trees: listed.join("; "),
            })
        }
        None => Ok(()),
    }
}

/// This machine's host name, as a run's header names it (`uname -n`).
pub fn this_host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim_end().to_string())
        .unwrap_or_default()
}

/// Conflicts between the runs of a merged graph: every regular file that processes of the
/// default selection of runs from two or more different source trees used successfully is
/// hashed in each tree that can be read here (a tree is readable when its run was recorded on
/// `this_host` and its source is a directory); differing content (or a file present in one
/// tree and absent from another) is a conflict.
pub fn find_conflicts(graph: &Graph, this_host: &str) -> ConflictCheck {
    let trees = source_trees(graph);
    let mut check = ConflictCheck::default();
    if trees.len() < 2 {
        return check;
    }
    let mut readable: BTreeMap<u32, PathBuf> = BTreeMap::new();
    for (key, runs) in &trees {
        let labels: Vec<String> = runs.iter().map(|&run| graph.run_display(run)).collect();
        let reason = if key.host != this_host {
            Some(format!(
                "recorded on host {:?}, this is {this_host:?}",
                key.host
            ))
        } else if !Path::new(&key.source).is_dir() {
            Some("not a directory here".to_string())
        } else {
            None
        };
        match reason {
            Some(reason) => check.unreadable.push(UnreadableTree {
                runs: labels,
                host: key.host.clone(),
                source: key.source.clone(),
                reason,
            }),
            None => {
                for &run in runs {
                    readable.insert(run, PathBuf::from(&key.source));
                }
            }
        }
    }
    let selection = default_selection(graph);
    for file in 0..graph.files.len() {
        if graph.files[file].kind != FileKind::File {
            continue;
        }
        let runs = runs_using(graph, file, |process| selection.contains(process));
        // One representative run per readable tree.
        let mut per_tree: BTreeMap<&Path, u32> = BTreeMap::new();
        for run in runs {
            if let Some(tree) = readable.get(&run) {
                per_tree.entry(tree.as_path()).or_insert(run);
            }
        }
        if per_tree.len() < 2 {
            continue;
        }
        check.compared += 1;
        let path = &graph.files[file].path;
        let mut sides: Vec<ConflictSide> = per_tree
            .iter()
            .map(|(tree, &run)| ConflictSide {
                run: graph.run_display(run),
                host: graph.runs[run as usize].header.host.clone(),
                source: tree.to_string_lossy().into_owned(),
                sha256: hash_in_tree(tree, path),
            })
            .collect();
        let hashes: BTreeSet<&Option<String>> = sides.iter().map(|side| &side.sha256).collect();
        if hashes.len() > 1 {
            sides.sort_by_key(|side| graph.run_named(&side.run));
            check.conflicts.push(Conflict {
                path: path.clone(),
                sides,
            });
        }
    }
    check
}

/// The runs whose processes (those `wanted` says) used `file` successfully.
pub fn runs_using(graph: &Graph, file: FileIx, wanted: impl Fn(usize) -> bool) -> BTreeSet<u32> {
    graph
        .edges_of_file(file)
        .filter(|edge| edge.consumes() && wanted(edge.process))
        .map(|edge| graph.processes[edge.process].key.run)
        .collect()
}

/// SHA-256 of the regular file at mirror path `path` under `tree` (never following a symlink
/// at the last component); None when it is absent or not a regular file.
fn hash_in_tree(tree: &Path, path: &[u8]) -> Option<String> {
    use std::os::unix::ffi::OsStrExt;
    let relative = std::ffi::OsStr::from_bytes(path.strip_prefix(b"/").unwrap_or(path));
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(tree.join(relative))
        .ok()?;
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    sha256_of(&mut file).ok()
}

fn sha256_of(file: &mut File) -> io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 64 << 10];
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(format!("{:x}", hasher.finalize()))
}

#[cfg(test)]
mod tests;
