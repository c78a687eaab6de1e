//! The analysis subcommands: `dump`, `ps`, `tree`, `why`, `who`, `files`, `stats`, `report`,
//! `rules` and the hidden `__synth-log`; each loads the log's graph (and the rules and
//! selection, through [`depsetfs::analysis::plan`]) and writes the answer of
//! [`depsetfs::analysis::query`] or [`depsetfs::analysis::dump`].

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{ArgAction, ArgMatches, Args};

use depsetfs::analysis::graph::Graph;
use depsetfs::analysis::rules::{DEFAULT_RULES, Rules};
use depsetfs::analysis::select::ProcessMatcher;
use depsetfs::analysis::strategy::{Strategy, StrategyOptions, StrategySet};
use depsetfs::analysis::{dump, query};
use depsetfs::ship::verify;
use depsetfs::state::StateDir;

use super::CliError;
use super::load::{load_graph, load_log, load_plan, mirror_path};
use super::output::{write_json, write_stdout};
use super::ship::verify_options;

#[derive(Args)]
pub(crate) struct DumpArgs {
    /// The log to read (default: the state directory's last.log).
    #[arg(long)]
    pub(crate) log: Option<PathBuf>,
    /// Print the deployment set instead of the events.
    #[arg(long)]
    pub(crate) set: bool,
    /// With --set: one JSON document with kinds, sizes and who used each path how.
    #[arg(long, requires = "set")]
    pub(crate) json: bool,
    /// With --set: end each path with NUL and write its bytes as they are (for `xargs -0`,
    /// `tar --null -T -`), instead of one escaped path per line.
    #[arg(short = '0', long = "null", requires = "set", conflicts_with = "json")]
    pub(crate) null: bool,
    /// With --set: the strategy.
    #[arg(long, value_enum, default_value = "all", requires = "set")]
    pub(crate) strategy: Strategy,
    /// With --set: list binaries exec'd by a needed process but not needed as stubs.
    #[arg(long, requires = "set")]
    pub(crate) stubs: bool,
    #[command(flatten)]
    pub(crate) select: SelectArgs,
    /// A rules file (TOML); see `depsetfs rules --default`.
    #[arg(long)]
    pub(crate) rules: Option<PathBuf>,
    /// Write a file in this format instead (`parquet`: the access records, or with --set the
    /// set's paths, one row each with host and run label; docs/fleet.md).
    #[arg(long, value_enum, requires = "output", conflicts_with_all = ["json", "null"])]
    pub(crate) format: Option<super::fleet::DumpFormat>,
    /// The file --format writes.
    #[arg(long, requires = "format")]
    pub(crate) output: Option<PathBuf>,
    /// With --format parquet: the network records (connect, bind, listen, accept) instead.
    #[arg(long, requires = "format", conflicts_with = "set")]
    pub(crate) net: bool,
}

#[derive(Args)]
pub(crate) struct ReportArgs {
    #[command(flatten)]
    pub(crate) analysis: AnalysisArgs,
    /// Add a "works" column: does each strategy's set run CMD (one verify round each)?
    #[arg(long, requires = "command")]
    pub(crate) verify: bool,
    /// With --verify: seconds each run may take.
    #[arg(long, default_value_t = 600, requires = "verify")]
    pub(crate) timeout: u64,
    /// With --verify: the command and its arguments.
    #[arg(last = true, requires = "verify")]
    pub(crate) command: Vec<OsString>,
    /// Write the page of `depsetfs ui` as one self-contained HTML file (no server, tweaks
    /// off) instead of the table.
    #[arg(long, value_name = "FILE", conflicts_with = "verify")]
    pub(crate) html: Option<PathBuf>,
}

#[derive(Args)]
pub(crate) struct LogArgs {
    /// The log to read (default: the state directory's last.log).
    #[arg(long)]
    pub(crate) log: Option<PathBuf>,
    /// One JSON document instead of text.
    #[arg(long)]
    pub(crate) json: bool,
}

/// Which processes must run: each selector may be followed by --children.
#[derive(Args)]
pub(crate) struct SelectArgs {
    /// Select the processes with this pid; in a merged log, `LABEL:PID` is the pid of the run
    /// labelled LABEL (a bare PID matches it in every run).
    #[arg(long, value_name = "[LABEL:]PID", value_parser = parse_pid)]
    pub(crate) pid: Vec<String>,
    /// Select the processes running this executable.
    #[arg(long)]
    pub(crate) exe: Vec<String>,
    /// Select the processes whose command line (argv joined by spaces) matches this regex.
    #[arg(long)]
    pub(crate) cmd: Vec<String>,
    /// Also select the descendants of what the selector just before matched.
    #[arg(long, action = ArgAction::Count)]
    pub(crate) children: u8,
    /// A merged log of several hosts: the set of this host (the files its runs' needed
    /// processes used, from its tree); the selection may name processes of any host.
    #[arg(long = "host", value_name = "NAME")]
    pub(crate) set_host: Option<String>,
}

/// A `--pid`: `PID` or `LABEL:PID`, checked here, read by [`super::load`].
fn parse_pid(text: &str) -> Result<String, String> {
    ProcessMatcher::pid(text).map(|_| text.to_string())
}

#[derive(Args)]
pub(crate) struct AnalysisArgs {
    #[command(flatten)]
    pub(crate) log: LogArgs,
    #[command(flatten)]
    pub(crate) select: SelectArgs,
    /// A rules file (TOML); see `depsetfs rules --default`.
    #[arg(long)]
    pub(crate) rules: Option<PathBuf>,
    /// List binaries exec'd by a needed process but not needed as stubs.
    #[arg(long)]
    pub(crate) stubs: bool,
}

#[derive(Args)]
pub(crate) struct WhyArgs {
    #[command(flatten)]
    pub(crate) analysis: AnalysisArgs,
    #[arg(long, value_enum, default_value = "strict")]
    pub(crate) strategy: Strategy,
    pub(crate) path: PathBuf,
}

#[derive(Args)]
pub(crate) struct WhoArgs {
    #[command(flatten)]
    pub(crate) log: LogArgs,
    pub(crate) path: PathBuf,
}

#[derive(Args)]
pub(crate) struct FilesArgs {
    #[command(flatten)]
    pub(crate) log: LogArgs,
    /// The pid whose processes to show (`LABEL:PID`: of one run of a merged log).
    #[arg(long, value_name = "[LABEL:]PID", value_parser = parse_pid)]
    pub(crate) pid: String,
    /// Only the paths touched, each once and sorted, each ended by NUL with its bytes as they
    /// are.
    #[arg(short = '0', long = "null", conflicts_with = "json")]
    pub(crate) null: bool,
}

#[derive(Args)]
pub(crate) struct SynthLogArgs {
    #[arg(long, default_value_t = 1_000_000)]
    pub(crate) records: u64,
    #[arg(long, default_value_t = 50_000)]
    pub(crate) files: u64,
    #[arg(long, default_value_t = 2_000)]
    pub(crate) processes: u64,
    #[arg(long, default_value_t = 1)]
    pub(crate) repeat: u64,
    /// As host N (1-based) of --hosts: a host name, an address, listeners and connects to the
    /// next host (bench/merge.sh).
    #[arg(long, requires = "hosts")]
    pub(crate) host_index: Option<u32>,
    #[arg(long, requires = "host_index")]
    pub(crate) hosts: Option<u32>,
    pub(crate) out: PathBuf,
}

#[derive(Args)]
pub(crate) struct RulesArgs {
    /// Print the built-in rules file.
    #[arg(long, conflicts_with = "check")]
    pub(crate) default: bool,
    /// Check a rules file; errors are `FILE:LINE:COL: message`.
    #[arg(long)]
    pub(crate) check: Option<PathBuf>,
}

pub(crate) fn dump_command(
    args: DumpArgs,
    matches: Option<&ArgMatches>,
    state: &StateDir,
) -> Result<ExitCode, CliError> {
    if args.format.is_some() {
        return super::fleet::dump_parquet_command(args, matches, state);
    }
    if args.set {
        return dump_set_command(args, matches, state);
    }
    let contents = load_log(args.log.as_deref(), state)?;
    write_stdout(|out| dump::write_events_jsonl(&contents, out))
}

pub(crate) fn dump_set_command(
    args: DumpArgs,
    matches: Option<&ArgMatches>,
    state: &StateDir,
) -> Result<ExitCode, CliError> {
    let plan = load_plan(args.log.as_deref(), args.rules.as_deref(), matches, state)?;
    warn_if_network_not_recorded(&plan.graph);
    let result = plan.set(&StrategyOptions {
        strategy: args.strategy,
        stubs: args.stubs,
    });
    warn_if_rules_emptied(&plan.rules, [&result]);
    if !args.json && !result.stubs.is_empty() {
        let stubs: Vec<String> = result
            .stubs
            .iter()
            .map(|stub| depsetfs::analysis::names::escape(&stub.path))
            .collect();
        eprintln!(
            "depsetfs: {} binaries to replace by stubs (see --json): {}",
            stubs.len(),
            stubs.join(" ")
        );
    }
    write_stdout(|out| {
        if args.json {
            dump::write_strategy_set_json(&plan.graph, &result, out)
        } else {
            let form = if args.null {
                dump::PathList::Nul
            } else {
                dump::PathList::Lines
            };
            dump::write_set_paths(&result.set, form, out)
        }
    })
}

pub(crate) fn ps_command(
    args: AnalysisArgs,
    matches: Option<&ArgMatches>,
    state: &StateDir,
) -> Result<ExitCode, CliError> {
    processes(args, matches, state, false)
}

pub(crate) fn tree_command(
    args: AnalysisArgs,
    matches: Option<&ArgMatches>,
    state: &StateDir,
) -> Result<ExitCode, CliError> {
    processes(args, matches, state, true)
}

/// `ps` and `tree`: the selected processes, as a list or as their tree.
fn processes(
    args: AnalysisArgs,
    matches: Option<&ArgMatches>,
    state: &StateDir,
    as_tree: bool,
) -> Result<ExitCode, CliError> {
    let plan = load_plan(
        args.log.log.as_deref(),
        args.rules.as_deref(),
        matches,
        state,
    )?;
    let rows = if as_tree {
        query::tree(&plan.graph, &plan.selection)
    } else {
        query::ps(&plan.graph, &plan.selection)
    };
    write_stdout(|out| match (args.log.json, as_tree) {
        (true, _) => write_json(&rows, out),
        (false, true) => query::write_tree_human(&rows, out),
        (false, false) => query::write_ps_human(&rows, out),
    })
}

pub(crate) fn why_command(
    args: WhyArgs,
    matches: Option<&ArgMatches>,
    state: &StateDir,
) -> Result<ExitCode, CliError> {
    let analysis = &args.analysis;
    let plan = load_plan(
        analysis.log.log.as_deref(),
        analysis.rules.as_deref(),
        matches,
        state,
    )?;
    warn_if_network_not_recorded(&plan.graph);
    let result = plan.set(&StrategyOptions {
        strategy: args.strategy,
        stubs: analysis.stubs,
    });
    warn_if_rules_emptied(&plan.rules, [&result]);
    let path = mirror_path(&args.path);
    let answer = query::why(&plan.graph, &result, &plan.set_options(), &path);
    let graph = &plan.graph;
    write_stdout(|out| {
        if analysis.log.json {
            write_json(&answer, out)
        } else {
            query::write_why_human(graph, &answer, out)
        }
    })
}

pub(crate) fn who_command(args: WhoArgs, state: &StateDir) -> Result<ExitCode, CliError> {
    let graph = load_graph(args.log.log.as_deref(), state)?;
    let rows = query::who(&graph, &mirror_path(&args.path));
    write_edges(&graph, &rows, args.log.json)
}

pub(crate) fn files_command(args: FilesArgs, state: &StateDir) -> Result<ExitCode, CliError> {
    let graph = load_graph(args.log.log.as_deref(), state)?;
    let (run, pid) = match ProcessMatcher::pid(&args.pid).map_err(CliError::Usage)? {
        ProcessMatcher::RunPid(label, pid) => match graph.run_named(&label) {
            Some(run) => (Some(run), pid),
            None => {
                return Err(CliError::Usage(format!(
                    "--pid {}: the log has no run labelled {label:?}",
                    args.pid
                )));
            }
        },
        ProcessMatcher::Pid(pid) => (None, pid),
        _ => return Err(CliError::Usage(format!("--pid {}: not a pid", args.pid))),
    };
    let in_scope = |node: &&depsetfs::analysis::graph::ProcessNode| {
        node.key.pid == pid && run.is_none_or(|run| node.key.run == run)
    };
    let rows: Vec<query::EdgeRow> = query::files_of_pid(&graph, pid)
        .into_iter()
        .filter(|row| run.is_none_or(|run| row.run == graph.run_display(run)))
        .collect();
    if rows.is_empty() && !graph.processes.iter().any(|node| in_scope(&node)) {
        return Err(CliError::Usage(format!(
            "--pid {}: no such process in the log",
            args.pid
        )));
    }
    if args.null {
        let paths: std::collections::BTreeSet<&[u8]> =
            rows.iter().map(|row| row.path.as_bytes()).collect();
        return write_stdout(|out| dump::write_paths(paths, dump::PathList::Nul, out));
    }
    write_edges(&graph, &rows, args.log.json)
}

pub(crate) fn write_edges(
    graph: &Graph,
    rows: &[query::EdgeRow],
    json: bool,
) -> Result<ExitCode, CliError> {
    write_stdout(|out| {
        if json {
            write_json(&rows, out)
        } else {
            query::write_edges_human(graph, rows, out)
        }
    })
}

pub(crate) fn stats_command(args: LogArgs, state: &StateDir) -> Result<ExitCode, CliError> {
    let graph = load_graph(args.log.as_deref(), state)?;
    let stats = query::stats(&graph);
    write_stdout(|out| {
        if args.json {
            write_json(&stats, out)
        } else {
            query::write_stats_human(&stats, out)
        }
    })
}

pub(crate) fn report_command(
    args: ReportArgs,
    matches: Option<&ArgMatches>,
    state: &StateDir,
) -> Result<ExitCode, CliError> {
    let analysis = &args.analysis;
    if let Some(html) = &args.html {
        let (log, rules) = (analysis.log.log.as_deref(), analysis.rules.as_deref());
        return super::page::html_report(log, rules, html, matches, state);
    }
    let plan = load_plan(
        analysis.log.log.as_deref(),
        analysis.rules.as_deref(),
        matches,
        state,
    )?;
    let sets: Vec<StrategySet> = Strategy::ALL
        .iter()
        .map(|&strategy| {
            plan.set(&StrategyOptions {
                strategy,
                stubs: analysis.stubs,
            })
        })
        .collect();
    warn_if_rules_emptied(&plan.rules, &sets);
    let mut rows = query::report(&sets);
    if args.verify {
        let options = verify_options(args.command, Duration::from_secs(args.timeout));
        for row in &mut rows {
            let strategy = StrategyOptions {
                strategy: row.strategy,
                stubs: analysis.stubs,
            };
            row.works = Some(verify::works(&plan, &strategy, &options, state)?);
        }
    }
    write_stdout(|out| {
        if analysis.log.json {
            write_json(&rows, out)
        } else {
            query::write_report_human(&rows, out)
        }
    })
}

pub(crate) fn rules_command(args: RulesArgs) -> Result<ExitCode, CliError> {
    if let Some(path) = args.check {
        Rules::load(&path)?;
        return Ok(ExitCode::SUCCESS);
    }
    if !args.default {
        return Err(CliError::Usage(
            "rules: say --default (print the built-in rules) or --check FILE".to_string(),
        ));
    }
    write_stdout(|out| out.write_all(DEFAULT_RULES.as_bytes()))
}

pub(crate) fn synth_log_command(args: SynthLogArgs) -> Result<ExitCode, CliError> {
    let spec = depsetfs::analysis::synth::SynthSpec {
        records: args.records,
        files: args.files,
        processes: args.processes,
        repeat: args.repeat,
    };
    let host = args
        .host_index
        .zip(args.hosts)
        .filter(|(index, _)| *index > 0)
        .map(|(index, hosts)| depsetfs::analysis::synth::SynthHost { index, hosts });
    depsetfs::analysis::synth::write_synthetic_host_log(&args.out, spec, host)?;
    Ok(ExitCode::SUCCESS)
}

/// Sets, `why` and `report` of a log without network records miss TCP/UDP connect edges.
pub(crate) fn warn_if_network_not_recorded(graph: &Graph) {
    if !graph.network_recorded() {
        eprintln!(
            "depsetfs: warning: network edges were not recorded (the service was not started by depsetfs run/chroot)"
        );
    }
}

/// One warning when the exclude rules left a set with nothing the selection used (the first
/// such set of `sets`).
pub(crate) fn warn_if_rules_emptied<'a>(
    rules: &Rules,
    sets: impl IntoIterator<Item = &'a StrategySet>,
) {
    if let Some(warning) = sets.into_iter().find_map(|set| set.rules_warning(rules)) {
        eprintln!("depsetfs: warning: {warning}");
    }
}
