//! `depsetfs merge LOG... --output FILE`: one log of several runs (see
//! [`depsetfs::analysis::merge`]), then the conflict check when the runs come from several
//! source trees: each conflict and each source tree that could not be read is one line on
//! stderr, and conflicts make the exit status 2 (the merged log is written all the same).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use depsetfs::analysis::graph::build::graph_from_log;
use depsetfs::analysis::merge::{self, merge_logs};

use super::CliError;
use super::load::absolute_log_path;
use super::output::one_line;

#[derive(Args)]
pub(crate) struct MergeArgs {
    /// The logs to merge (logs of runs, or merged logs: their runs are taken over). One log
    /// makes a merged log of one run.
    #[arg(required = true, value_name = "LOG")]
    pub(crate) logs: Vec<PathBuf>,
    /// Where to write the merged log.
    #[arg(long, short = 'o')]
    pub(crate) output: PathBuf,
    /// Replace the --output file if it exists (else an existing file is refused).
    #[arg(long)]
    pub(crate) overwrite_log: bool,
}

pub(crate) fn merge_command(args: MergeArgs) -> Result<ExitCode, CliError> {
    let output = absolute_log_path(&args.output)?;
    let report = merge_logs(&args.logs, &output, args.overwrite_log)?;
    for path in &report.truncated {
        eprintln!(
            "depsetfs: warning: {}: its last record was cut short; everything before it was merged",
            one_line(path)
        );
    }
    for (path, old, new) in &report.relabelled {
        eprintln!(
            "depsetfs: note: {}: run {old:?} is labelled {new:?} in the merged log (another run has that label)",
            one_line(path)
        );
    }
    let labels: Vec<&str> = report
        .runs
        .iter()
        .map(|run| run.label.as_deref().unwrap_or(""))
        .collect();
    eprintln!(
        "depsetfs: merged {} run(s) ({}), {} records; log: {}",
        report.runs.len(),
        labels.join(", "),
        report.records,
        one_line(&output)
    );
    let trees: BTreeSet<(&str, &str)> = report
        .runs
        .iter()
        .map(|run| (run.host.as_str(), run.source.as_str()))
        .collect();
    if trees.len() < 2 {
        return Ok(ExitCode::SUCCESS);
    }
    let graph = graph_from_log(&output)?;
    let check = merge::find_conflicts(&graph, &merge::this_host());
    for tree in &check.unreadable {
        eprintln!(
            "depsetfs: warning: could not read source tree {} of run(s) {} ({}): its files were not compared",
            tree.source,
            tree.runs.join(", "),
            tree.reason
        );
    }
    for conflict in &check.conflicts {
        eprintln!("depsetfs: conflict: {}", conflict.describe());
    }
    if check.conflicts.is_empty() {
        eprintln!(
            "depsetfs: no conflicts: {} file(s) used by runs of different source trees are identical",
            check.compared
        );
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "depsetfs: {} conflict(s); export of this log needs --prefer RUN (whose source tree wins)",
            check.conflicts.len()
        );
        Ok(ExitCode::from(2))
    }
}
