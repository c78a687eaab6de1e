//! Process selection: which process images the user says must run on the target. A selector
//! is a pid, an executable or a regular expression over the command line, with or without the
//! descendants of what it matches (later exec images of the same process and everything
//! forked from them); several selectors add up. Without any selector, a log of `depsetfs run`
//! selects the traced command's process and all its descendants, and any other log selects
//! every process. A merged log does that for each of its runs (the union of the runs' needs);
//! `--pid LABEL:PID` names a pid in one run's pid space.

use regex::Regex;

use crate::analysis::graph::{Graph, ProcessIx};
use crate::analysis::paths::normalize_mirror_path;

#[derive(Debug, thiserror::Error)]
pub enum SelectError {
    #[error("{0}")]
    BadRegex(String),
    #[error("{selector}: no process in the log matches")]
    NothingMatched { selector: String },
    #[error("--host {host}: no run of the log is on that host (its hosts: {known})")]
    UnknownHost { host: String, known: String },
    #[error("{selector}: the log has no run labelled {label:?} (its runs: {known})")]
    UnknownRun {
        selector: String,
        label: String,
        known: String,
    },
}

/// What a selector matches.
#[derive(Clone, Debug)]
pub enum ProcessMatcher {
    /// Every image of every process with this pid; with a run label, only in that run.
    Pid(u32),
    /// `LABEL:PID`: the pid in the pid space of the run labelled LABEL (a merged log).
    RunPid(String, u32),
    /// Images whose executable (`/proc/PID/exe`) or exec'd file is this path.
    Exe(Vec<u8>),
    /// Images whose argv, joined by spaces, matches.
    Cmd(Regex),
}

impl ProcessMatcher {
    /// A `--cmd` matcher; a bad pattern is a one-line error.
    pub fn cmd(pattern: &str) -> Result<ProcessMatcher, SelectError> {
        Regex::new(pattern)
            .map(ProcessMatcher::Cmd)
            .map_err(|error| {
                let text = error.to_string();
                let reason = text
                    .lines()
                    .rev()
                    .find(|line| !line.trim().is_empty())
                    .unwrap_or("invalid")
                    .trim()
                    .trim_start_matches("error: ");
                SelectError::BadRegex(format!("regex parse error in {pattern:?}: {reason}"))
            })
    }

    /// `PID` or `LABEL:PID` (the label is everything before the last colon).
    pub fn pid(text: &str) -> Result<ProcessMatcher, String> {
        let bad = || format!("not a pid or LABEL:PID: {text:?}");
        match text.rsplit_once(':') {
            Some((label, pid)) if !label.is_empty() => Ok(ProcessMatcher::RunPid(
                label.to_string(),
                pid.parse().map_err(|_| bad())?,
            )),
            Some(_) => Err(bad()),
            None => text.parse().map(ProcessMatcher::Pid).map_err(|_| bad()),
        }
    }

    fn matches(&self, graph: &Graph, process: ProcessIx) -> bool {
        let node = &graph.processes[process];
        match self {
            ProcessMatcher::Pid(pid) => node.key.pid == *pid,
            ProcessMatcher::RunPid(label, pid) => {
                node.key.pid == *pid && graph.run_named(label) == Some(node.key.run)
            }
            ProcessMatcher::Exe(exe) => {
                let wanted = normalize_mirror_path(exe);
                node.exe == wanted || graph.exec_binary(process) == Some(wanted.as_slice())
            }
            ProcessMatcher::Cmd(regex) => {
                !node.argv.is_empty() && regex.is_match(&node.command_line())
            }
        }
    }

    fn describe(&self) -> String {
        match self {
            ProcessMatcher::Pid(pid) => format!("--pid {pid}"),
            ProcessMatcher::RunPid(label, pid) => format!("--pid {label}:{pid}"),
            ProcessMatcher::Exe(exe) => format!("--exe {}", String::from_utf8_lossy(exe)),
            ProcessMatcher::Cmd(regex) => format!("--cmd {}", regex.as_str()),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Selector {
    pub matcher: ProcessMatcher,
    /// Also select the descendants of what matched.
    pub children: bool,
}

impl Selector {
    pub fn describe(&self) -> String {
        let base = self.matcher.describe();
        if self.children {
            format!("{base} --children")
        } else {
            base
        }
    }
}

/// The selected images, and for each one which selector chose it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selection {
    pub chosen: Vec<Option<String>>,
}

impl Selection {
    pub fn contains(&self, process: ProcessIx) -> bool {
        self.chosen.get(process).is_some_and(Option::is_some)
    }

    pub fn processes(&self) -> impl Iterator<Item = ProcessIx> + '_ {
        self.chosen
            .iter()
            .enumerate()
            .filter(|(_, chosen)| chosen.is_some())
            .map(|(process, _)| process)
    }

    pub fn reason(&self, process: ProcessIx) -> Option<&str> {
        self.chosen.get(process).and_then(Option::as_deref)
    }

    pub fn len(&self) -> usize {
        self.processes().count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn choose(&mut self, process: ProcessIx, why: &str) {
        if self.chosen[process].is_none() {
            self.chosen[process] = Some(why.to_string());
        }
    }
}

/// Applies `selectors`; with none, the default selection. A selector that matches nothing is
/// an error (a typo should not silently select nothing).
pub fn select(graph: &Graph, selectors: &[Selector]) -> Result<Selection, SelectError> {
    if selectors.is_empty() {
        return Ok(default_selection(graph));
    }
    let mut selection = empty(graph);
    for selector in selectors {
        let why = selector.describe();
        if let ProcessMatcher::RunPid(label, _) = &selector.matcher
            && graph.run_named(label).is_none()
        {
            let known: Vec<String> = (0..graph.runs.len() as u32)
                .map(|run| graph.run_display(run))
                .collect();
            return Err(SelectError::UnknownRun {
                selector: why,
                label: label.clone(),
                known: known.join(", "),
            });
        }
        let matched: Vec<ProcessIx> = (0..graph.processes.len())
            .filter(|&process| selector.matcher.matches(graph, process))
            .collect();
        if matched.is_empty() {
            return Err(SelectError::NothingMatched { selector: why });
        }
        for process in matched {
            selection.choose(process, &why);
            if selector.children {
                for descendant in graph.descendants(process) {
                    selection.choose(descendant, &format!("{why} (descendant)"));
                }
            }
        }
    }
    Ok(selection)
}

/// The traced command and its descendants for a `run` log, else every process; for a merged
/// log, that for each run.
pub fn default_selection(graph: &Graph) -> Selection {
    let mut selection = empty(graph);
    for run in 0..graph.runs.len().max(1) as u32 {
        select_run_default(graph, run, &mut selection);
    }
    selection
}

/// The default selection of one run: its traced command and descendants, or every process of
/// it when it has no command.
fn select_run_default(graph: &Graph, run: u32, selection: &mut Selection) {
    let in_run = |process: &ProcessIx| graph.processes[*process].key.run == run;
    let command_pid = graph
        .runs
        .get(run as usize)
        .map_or(&graph.header, |info| &info.header)
        .command
        .as_ref()
        .map(|command| command.pid);
    let roots: Vec<ProcessIx> = match command_pid {
        Some(pid) => {
            // A pid reused later in the log is another process: keep the earliest.
            let first_start = (0..graph.processes.len())
                .filter(in_run)
                .map(|process| graph.processes[process].key)
                .filter(|key| key.pid == pid)
                .map(|key| key.start)
                .min();
            (0..graph.processes.len())
                .filter(in_run)
                .filter(|&process| {
                    let key = graph.processes[process].key;
                    key.pid == pid && Some(key.start) == first_start
                })
                .collect()
        }
        None => Vec::new(),
    };
    if roots.is_empty() {
        for process in (0..graph.processes.len()).filter(in_run) {
            selection.choose(process, "every process (no command in the log)");
        }
        return;
    }
    for root in roots {
        selection.choose(root, "the traced command");
        for descendant in graph.descendants(root) {
            selection.choose(descendant, "the traced command (descendant)");
        }
    }
}

fn empty(graph: &Graph) -> Selection {
    Selection {
        chosen: vec![None; graph.processes.len()],
    }
}
