//! What the subcommands share on the way in: the log to read (flushed first when a live
//! daemon is recording it), its graph with the warnings about an incomplete log, the rules,
//! the selectors of the command line in their order, and the plan they make.

use std::path::{Path, PathBuf};

use clap::ArgMatches;

use depsetfs::analysis::graph::{Graph, LogStats, build::graph_from_log};
use depsetfs::analysis::plan::Plan;
use depsetfs::analysis::rules::Rules;
use depsetfs::analysis::select::{ProcessMatcher, Selector};
use depsetfs::launch::umount;
use depsetfs::log::{LogContents, read_log};
use depsetfs::record::{FIRST_VERSION_WITH_END, Record};
use depsetfs::state::StateDir;

use super::CliError;

/// The log to read, written out first if a live daemon is still recording it (then true).
pub(crate) fn log_path(log: Option<&Path>, state: &StateDir) -> Result<(PathBuf, bool), CliError> {
    let path = match log {
        Some(path) => absolute_log_path(path)?,
        None => state.last_log()?,
    };
    let live = flush_if_recording(&path, state);
    Ok((path, live))
}

/// The `--log` of `mount` or `run`, made absolute; an existing file only with
/// `--overwrite-log`.
pub(crate) fn new_log_path(path: &Path, overwrite: bool) -> Result<PathBuf, CliError> {
    let path = absolute_log_path(path)?;
    depsetfs::log::check_new_log(&path, overwrite)?;
    Ok(path)
}

/// A `--log` path made absolute (the daemon and later commands run in other directories).
pub(crate) fn absolute_log_path(path: &Path) -> Result<PathBuf, CliError> {
    std::path::absolute(path).map_err(|source| CliError::LogPath {
        path: path.to_path_buf(),
        source,
    })
}

/// A live daemon writes its log once a second: ask it to write now, so that `dump --set` right
/// after the service ran sees all of it.
pub(crate) fn flush_if_recording(log: &Path, state: &StateDir) -> bool {
    let live: Vec<_> = state
        .mounts()
        .into_iter()
        .filter(|record| record.log == log && umount::daemon_alive(record.pid))
        .collect();
    let recording = !live.is_empty();
    for control in live.into_iter().filter_map(|record| record.control) {
        if let Err(e) = depsetfs::mirror::network::request_log_flush(&control) {
            eprintln!(
                "depsetfs: warning: {}: the daemon recording it did not write it out ({e}); the last 100 ms may be missing",
                log.display()
            );
        }
    }
    recording
}

/// One warning line for a log whose recorder was killed (with where its tail was cut, if it
/// was), or for a cut tail alone.
pub(crate) fn warn_if_incomplete(path: &Path, stats: &LogStats) {
    let cut = stats
        .truncated_at
        .map(|offset| format!("; its last record is cut short at byte {offset}"));
    match (stats.unclean_end(), cut) {
        (Some(unclean), cut) => eprintln!(
            "depsetfs: warning: {}: {unclean}{}",
            path.display(),
            cut.unwrap_or_default()
        ),
        (None, Some(_)) => eprintln!(
            "depsetfs: warning: {}: the last record is cut short at byte {} (the recorder was stopped mid-write); everything before it is used",
            path.display(),
            stats.truncated_at.unwrap_or(0)
        ),
        (None, None) => {}
    }
}

pub(crate) fn load_log(log: Option<&Path>, state: &StateDir) -> Result<LogContents, CliError> {
    let (path, live) = log_path(log, state)?;
    let contents = read_log(&path)?;
    let stats = LogStats {
        truncated_at: contents.truncated_at,
        // A merged log's runs end one by one: the graph's statistics judge its segments.
        ended_cleanly: (contents.header.version >= FIRST_VERSION_WITH_END
            && !contents.header.is_merged())
        .then(|| matches!(contents.records.last(), Some(Record::End(_)))),
        last_record_ns: contents
            .records
            .iter()
            .map(Record::time_ns)
            .fold(contents.header.started_ns, u64::max),
        still_recording: live,
        ..LogStats::default()
    };
    warn_if_incomplete(&path, &stats);
    Ok(contents)
}

pub(crate) fn load_graph(log: Option<&Path>, state: &StateDir) -> Result<Graph, CliError> {
    let (path, live) = log_path(log, state)?;
    let mut graph = graph_from_log(&path)?;
    graph.stats.still_recording = live;
    warn_if_incomplete(&path, &graph.stats);
    let lost = graph.stats.lost_events();
    if lost > 0 {
        eprintln!(
            "depsetfs: warning: {}: {lost} events were lost while recording; the graph is incomplete",
            path.display()
        );
    }
    if graph.stats.process_events_unrecorded() {
        eprintln!(
            "depsetfs: warning: {}: forks, execs and exits were not recorded (the proc connector was unavailable): each process is one image, named after what it ran when first seen",
            path.display()
        );
    }
    Ok(graph)
}

pub(crate) fn load_rules(path: Option<&Path>) -> Result<Rules, CliError> {
    Ok(match path {
        Some(path) => Rules::load(path)?,
        None => Rules::built_in(),
    })
}

/// The graph, rules and selection of an analysis command: the selectors of the command line
/// in order (a --children applies to the selector just before it), then those of the rules
/// file; none: the default selection.
pub(crate) fn load_plan(
    log: Option<&Path>,
    rules: Option<&Path>,
    matches: Option<&ArgMatches>,
    state: &StateDir,
) -> Result<Plan, CliError> {
    let graph = load_graph(log, state)?;
    let rules = load_rules(rules)?;
    let selectors = match matches {
        Some(matches) => command_line_selectors(matches)?,
        None => Vec::new(),
    };
    let mut plan = Plan::new(graph, rules, selectors)?;
    if let Some(host) = matches.and_then(|m| m.try_get_one::<String>("set_host").ok().flatten()) {
        plan.scope_to_host(host)?;
    }
    Ok(plan)
}

pub(crate) fn command_line_selectors(matches: &ArgMatches) -> Result<Vec<Selector>, CliError> {
    let mut found: Vec<(usize, Option<ProcessMatcher>)> = Vec::new();
    if let (Some(indices), Some(values)) =
        (matches.indices_of("pid"), matches.get_many::<String>("pid"))
    {
        for (at, pid) in indices.zip(values) {
            let matcher = ProcessMatcher::pid(pid).map_err(CliError::Usage)?;
            found.push((at, Some(matcher)));
        }
    }
    if let (Some(indices), Some(values)) =
        (matches.indices_of("exe"), matches.get_many::<String>("exe"))
    {
        for (at, exe) in indices.zip(values) {
            found.push((at, Some(ProcessMatcher::Exe(exe.as_bytes().to_vec()))));
        }
    }
    if let (Some(indices), Some(values)) =
        (matches.indices_of("cmd"), matches.get_many::<String>("cmd"))
    {
        for (at, pattern) in indices.zip(values) {
            found.push((at, Some(ProcessMatcher::cmd(pattern)?)));
        }
    }
    let children_given =
        matches.value_source("children") == Some(clap::parser::ValueSource::CommandLine);
    if let Some(indices) = matches.indices_of("children").filter(|_| children_given) {
        found.extend(indices.map(|at| (at, None)));
    }
    found.sort_by_key(|(at, _)| *at);
    let mut selectors: Vec<Selector> = Vec::new();
    for (_, matcher) in found {
        match (matcher, selectors.last_mut()) {
            (Some(matcher), _) => selectors.push(Selector {
                matcher,
                children: false,
            }),
            (None, Some(last)) => last.children = true,
            (None, None) => {
                return Err(CliError::Usage(
                    "--children must follow a --pid, --exe or --cmd".to_string(),
                ));
            }
        }
    }
    Ok(selectors)
}

/// A path given on the command line as a normalized mirror path.
pub(crate) fn mirror_path(path: &Path) -> Vec<u8> {
    depsetfs::analysis::paths::normalize_mirror_path(path.as_os_str().as_encoded_bytes())
}
