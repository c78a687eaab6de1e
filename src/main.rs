//! The `depsetfs` command: parses the command line and hands each subcommand to the library.
//! Every failure ends as one line on stderr (`depsetfs: ...`) and exit status 1; `run` exits
//! with its command's status.

use std::ffi::OsString;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{ArgAction, ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};

use depsetfs::chroot::ChrootError;
use depsetfs::event::TracedCommand;
use depsetfs::export::{self, ExportError, ExportOptions};
use depsetfs::graph::{Graph, GraphError, build::graph_from_log};
use depsetfs::log::{LogContents, LogError, read_log};
use depsetfs::mount::{self, MountError, ServeOptions, SpeedOptions};
use depsetfs::rules::{DEFAULT_RULES, Rules, RulesError};
use depsetfs::run::{RunError, RunOptions};
use depsetfs::select::{ProcessMatcher, SelectError, Selection, Selector, select};
use depsetfs::set::SetOptions;
use depsetfs::state::{StateDir, StateError};
use depsetfs::strategy::{Strategy, StrategyOptions, StrategySet, compute};
use depsetfs::verify::{self, SetInputs, VerifyError, VerifyOptions};
use depsetfs::{dump, query, run, sys};

#[derive(Parser)]
#[command(
    name = "depsetfs",
    version,
    about = "Find the files a service needs, by watching it run on a recording mirror of /"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Mirror a tree (default /) at MOUNTPOINT and start recording; returns when ready.
    Mount(MountArgs),
    /// Flush the log, unmount MOUNTPOINT and stop its daemon.
    Umount { mountpoint: PathBuf },
    /// Print the recorded events as JSON lines, or the deployment set.
    Dump(DumpArgs),
    /// Mount in a private namespace, run CMD chrooted on the mirror, unmount, keep the log.
    Run(RunArgs),
    /// Run CMD chrooted on a mirror made by `depsetfs mount`, with its network calls recorded
    /// (instead of a plain `chroot`, which records files only).
    Chroot(ChrootArgs),
    /// List the process images of a log (pid, exec, parent, exit status, selected).
    Ps(AnalysisArgs),
    /// Show the process images as a tree of forks and execs.
    Tree(AnalysisArgs),
    /// Explain why PATH is in the set (the chain of edges from a selected process) or not.
    Why(WhyArgs),
    /// Every process that touched PATH, and how.
    Who(WhoArgs),
    /// What the processes of one pid touched.
    Files(FilesArgs),
    /// Counts: records, accesses, processes, files, bytes, lost events.
    Stats(LogArgs),
    /// The summary table: one row per strategy with files, bytes and the difference to the
    /// row before (`--verify -- CMD`: and whether each set runs CMD).
    Report(ReportArgs),
    /// Print the rules (`--default`: the built-in rules file).
    Rules(RulesArgs),
    /// Serve a page to see the set and shape it (tweaks saved as the --rules file); prints
    /// the URL to open.
    Ui(UiArgs),
    /// The process graph for Graphviz (`--format dot`) or scripts (`--format json`).
    Graph(GraphArgs),
    /// Suggestions: secrets and developer-box leftovers in the set, noise, outputs, stubs.
    Suggest(SuggestArgs),
    /// Write the deployment set out of the source tree: a directory, a tar stream or an OCI
    /// image layout.
    Export(ExportArgs),
    /// Export the set into a clean root, run CMD there on a recording mirror, report pass/fail
    /// and the paths it missed.
    Verify(VerifyArgs),
    /// Check what this machine lets depsetfs do (FUSE, namespaces, process events, seccomp) and
    /// say what will and will not be recorded here.
    Doctor,
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) on stdout.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the man pages (depsetfs.1 and one per subcommand) into DIR.
    #[command(name = "__man", hide = true)]
    Man { dir: PathBuf },
    #[command(name = "__serve", hide = true)]
    Serve(ServeArgs),
    /// Write a synthetic log for the analysis benchmark (bench/analysis.sh).
    #[command(name = "__synth-log", hide = true)]
    SynthLog(SynthLogArgs),
}

#[derive(Args)]
struct MountArgs {
    /// The tree to mirror.
    #[arg(long, default_value = "/")]
    source: PathBuf,
    /// Where to write the log (default: a new file under the state directory's logs/).
    #[arg(long)]
    log: Option<PathBuf>,
    #[command(flatten)]
    speed: SpeedArgs,
    mountpoint: PathBuf,
}

/// Speed options (see docs/ARCHITECTURE.md, caching and fidelity); all but `--entry-cache`
/// keep every process's lookups.
#[derive(Args)]
struct SpeedArgs {
    /// Request-handling threads.
    #[arg(long, default_value_t = SpeedOptions::default().threads)]
    threads: usize,
    /// Kernel FUSE passthrough for read-only opens: reads bypass the daemon (opens are still
    /// recorded, read byte counts are not).
    #[arg(long)]
    passthrough: bool,
    /// Let the kernel cache lookups while one process runs alone: the first request of any
    /// other process drops them all (Linux >= 6.16). Lookup-heavy work needs far fewer
    /// requests; a process can still use, unseen, entries another process looked up since its
    /// own last request (see docs/ARCHITECTURE.md, caching and fidelity).
    #[arg(long)]
    entry_cache: bool,
    /// How long the kernel may reuse the attributes a lookup returned (milliseconds). Every
    /// path lookup of every process still reaches the daemon; only the permission check of
    /// each path component and stat/fstat within the timeout are answered by the kernel.
    /// 0 sends those to the daemon too (fidelity "full", 1.2-2.1x slower in bench/README.md).
    #[arg(long, default_value_t = SpeedOptions::default().attr_timeout_ms)]
    attr_timeout_ms: u64,
    /// Confine the daemon (and, for run, the traced command) to these CPUs, e.g. `0` or
    /// `0-1,4`. One shared CPU avoids a cross-CPU wake-up per request: serial workloads
    /// traced 1.2-2.8x faster in bench/README.md, parallel ones lose their parallelism.
    #[arg(long, value_name = "LIST", value_parser = parse_cpu_list)]
    cpus: Option<CpuList>,
}

/// The CPUs named by `--cpus`.
#[derive(Clone, Debug)]
struct CpuList(Vec<usize>);

/// `0`, `0,2`, `0-3,6`: the CPUs of a `--cpus` list.
fn parse_cpu_list(list: &str) -> Result<CpuList, String> {
    let mut cpus = Vec::new();
    for part in list.split(',') {
        let bad = || format!("not a CPU list (like 0 or 0-1,4): {list:?}");
        let (first, last) = part.split_once('-').unwrap_or((part, part));
        let first: usize = first.trim().parse().map_err(|_| bad())?;
        let last: usize = last.trim().parse().map_err(|_| bad())?;
        if first > last || last >= sys::MAX_CPUS {
            return Err(bad());
        }
        cpus.extend(first..=last);
    }
    Ok(CpuList(cpus))
}

impl SpeedArgs {
    fn options(&self) -> SpeedOptions {
        SpeedOptions {
            threads: self.threads,
            passthrough: self.passthrough,
            entry_cache: self.entry_cache,
            attr_timeout_ms: self.attr_timeout_ms,
        }
    }

    /// Applies `--cpus` to this process, so that the daemon and the command inherit it.
    fn confine_to_cpus(&self) -> Result<(), CliError> {
        match &self.cpus {
            Some(CpuList(cpus)) => sys::set_cpu_affinity(cpus).map_err(|e| {
                let names: Vec<String> = cpus.iter().map(usize::to_string).collect();
                CliError::Usage(format!("--cpus {}: cannot run there: {e}", names.join(",")))
            }),
            None => Ok(()),
        }
    }
}

#[derive(Args)]
struct DumpArgs {
    /// The log to read (default: the state directory's last.log).
    #[arg(long)]
    log: Option<PathBuf>,
    /// Print the deployment set instead of the events.
    #[arg(long)]
    set: bool,
    /// With --set: one JSON document with kinds, sizes and who used each path how.
    #[arg(long, requires = "set")]
    json: bool,
    /// With --set: end each path with NUL and write its bytes as they are (for `xargs -0`,
    /// `tar --null -T -`), instead of one escaped path per line.
    #[arg(short = '0', long = "null", requires = "set", conflicts_with = "json")]
    null: bool,
    /// With --set: the strategy.
    #[arg(long, value_enum, default_value = "all", requires = "set")]
    strategy: Strategy,
    /// With --set: list binaries exec'd by a needed process but not needed as stubs.
    #[arg(long, requires = "set")]
    stubs: bool,
    #[command(flatten)]
    select: SelectArgs,
    /// A rules file (TOML); see `depsetfs rules --default`.
    #[arg(long)]
    rules: Option<PathBuf>,
}

/// The set options of `dump --set`, for export and verify.
#[derive(Args)]
struct SetArgs {
    /// The log to read (default: the state directory's last.log).
    #[arg(long)]
    log: Option<PathBuf>,
    /// The strategy.
    #[arg(long, value_enum, default_value = "all")]
    strategy: Strategy,
    #[command(flatten)]
    select: SelectArgs,
    /// A rules file (TOML); see `depsetfs rules --default`.
    #[arg(long)]
    rules: Option<PathBuf>,
}

impl SetArgs {
    /// The graph, rules and selection these options name.
    fn sources(
        &self,
        matches: Option<&ArgMatches>,
        state: &StateDir,
    ) -> Result<SetSources, CliError> {
        SetSources::load(self.log.as_deref(), self.rules.as_deref(), matches, state)
    }

    fn strategy_options(&self, stubs: bool) -> StrategyOptions {
        StrategyOptions {
            strategy: self.strategy,
            stubs,
        }
    }
}

#[derive(Args)]
struct ExportArgs {
    #[arg(long, value_enum)]
    format: export::Format,
    /// Where to write (`-` with --format tar: standard output).
    #[arg(long)]
    output: PathBuf,
    /// Replace an existing output.
    #[arg(long)]
    force: bool,
    /// Ship the binaries listed as stubs as a program that exits 0.
    #[arg(long)]
    stubs: bool,
    #[command(flatten)]
    set: SetArgs,
}

#[derive(Args)]
struct VerifyArgs {
    #[command(flatten)]
    set: SetArgs,
    /// Add the misses to the set and retry, at most N more rounds.
    #[arg(long, default_value_t = 0)]
    iterate: u32,
    /// Seconds each round's command may run.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    /// Keep the temporary roots and the rounds' logs.
    #[arg(long)]
    keep: bool,
    /// Ship the binaries listed as stubs as a program that exits 0.
    #[arg(long)]
    stubs: bool,
    /// Run FILE's commands with sh -c in the root instead of CMD.
    #[arg(long, conflicts_with = "command")]
    script: Option<PathBuf>,
    /// Also require the command's stdout to equal the file given with --expect.
    #[arg(long, requires = "expect")]
    compare_stdout: bool,
    /// The expected stdout, for --compare-stdout.
    #[arg(long, requires = "compare_stdout")]
    expect: Option<PathBuf>,
    /// The command and its arguments.
    #[arg(last = true, required_unless_present = "script")]
    command: Vec<OsString>,
}

#[derive(Args)]
struct ReportArgs {
    #[command(flatten)]
    analysis: AnalysisArgs,
    /// Add a "works" column: does each strategy's set run CMD (one verify round each)?
    #[arg(long, requires = "command")]
    verify: bool,
    /// With --verify: seconds each run may take.
    #[arg(long, default_value_t = 600, requires = "verify")]
    timeout: u64,
    /// With --verify: the command and its arguments.
    #[arg(last = true, requires = "verify")]
    command: Vec<OsString>,
    /// Write the page of `depsetfs ui` as one self-contained HTML file (no server, tweaks
    /// off) instead of the table.
    #[arg(long, value_name = "FILE", conflicts_with = "verify")]
    html: Option<PathBuf>,
}

#[derive(Args)]
struct UiArgs {
    /// The log to read (default: the state directory's last.log).
    #[arg(long)]
    log: Option<PathBuf>,
    /// The rules file to start from and to save to (it may not exist yet).
    #[arg(long)]
    rules: Option<PathBuf>,
    /// The address to listen on (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    /// The strategy the page starts with.
    #[arg(long, value_enum, default_value = "strict")]
    strategy: Strategy,
    #[command(flatten)]
    select: SelectArgs,
}

#[derive(Args)]
struct GraphArgs {
    /// `dot` (Graphviz) or `json`.
    #[arg(long, value_enum)]
    format: GraphFormat,
    /// Also draw the set's used files (dot).
    #[arg(long)]
    files: bool,
    #[command(flatten)]
    set: SetArgs,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum GraphFormat {
    Dot,
    Json,
}

#[derive(Args)]
struct SuggestArgs {
    #[command(flatten)]
    set: SetArgs,
    /// One JSON document instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct LogArgs {
    /// The log to read (default: the state directory's last.log).
    #[arg(long)]
    log: Option<PathBuf>,
    /// One JSON document instead of text.
    #[arg(long)]
    json: bool,
}

/// Which processes must run: each selector may be followed by --children.
#[derive(Args)]
struct SelectArgs {
    /// Select the processes with this pid.
    #[arg(long)]
    pid: Vec<u32>,
    /// Select the processes running this executable.
    #[arg(long)]
    exe: Vec<String>,
    /// Select the processes whose command line (argv joined by spaces) matches this regex.
    #[arg(long)]
    cmd: Vec<String>,
    /// Also select the descendants of what the selector just before matched.
    #[arg(long, action = ArgAction::Count)]
    children: u8,
}

#[derive(Args)]
struct AnalysisArgs {
    #[command(flatten)]
    log: LogArgs,
    #[command(flatten)]
    select: SelectArgs,
    /// A rules file (TOML); see `depsetfs rules --default`.
    #[arg(long)]
    rules: Option<PathBuf>,
    /// List binaries exec'd by a needed process but not needed as stubs.
    #[arg(long)]
    stubs: bool,
}

#[derive(Args)]
struct WhyArgs {
    #[command(flatten)]
    analysis: AnalysisArgs,
    #[arg(long, value_enum, default_value = "strict")]
    strategy: Strategy,
    path: PathBuf,
}

#[derive(Args)]
struct WhoArgs {
    #[command(flatten)]
    log: LogArgs,
    path: PathBuf,
}

#[derive(Args)]
struct FilesArgs {
    #[command(flatten)]
    log: LogArgs,
    /// The pid whose processes to show.
    #[arg(long)]
    pid: u32,
    /// Only the paths touched, each once and sorted, each ended by NUL with its bytes as they
    /// are.
    #[arg(short = '0', long = "null", conflicts_with = "json")]
    null: bool,
}

#[derive(Args)]
struct SynthLogArgs {
    #[arg(long, default_value_t = 1_000_000)]
    records: u64,
    #[arg(long, default_value_t = 50_000)]
    files: u64,
    #[arg(long, default_value_t = 2_000)]
    processes: u64,
    #[arg(long, default_value_t = 1)]
    repeat: u64,
    out: PathBuf,
}

#[derive(Args)]
struct RulesArgs {
    /// Print the built-in rules file.
    #[arg(long, conflicts_with = "check")]
    default: bool,
    /// Check a rules file; errors are `FILE:LINE:COL: message`.
    #[arg(long)]
    check: Option<PathBuf>,
}

#[derive(Args)]
struct RunArgs {
    #[arg(long, default_value = "/")]
    source: PathBuf,
    #[arg(long)]
    log: Option<PathBuf>,
    /// Seconds to wait for the command and what it leaves behind before killing them.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    #[command(flatten)]
    speed: SpeedArgs,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    command: Vec<OsString>,
}

#[derive(Args)]
struct ChrootArgs {
    /// A mountpoint of `depsetfs mount` (prepared with mount-helpers/chroot-prepare).
    mountpoint: PathBuf,
    /// The command and its arguments (`--` before them is optional).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    command: Vec<OsString>,
}

#[derive(Args)]
struct ServeArgs {
    #[arg(long)]
    source: PathBuf,
    #[arg(long)]
    log: PathBuf,
    /// Given explicitly by `mount`/`run` (`--cpus` was applied by them already).
    #[command(flatten)]
    speed: SpeedArgs,
    #[arg(long)]
    command_json: Option<String>,
    #[arg(long)]
    network: bool,
    mountpoint: PathBuf,
}

#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error(transparent)]
    Mount(#[from] MountError),
    #[error(transparent)]
    Run(#[from] RunError),
    #[error(transparent)]
    Chroot(#[from] ChrootError),
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Graph(#[from] GraphError),
    #[error(transparent)]
    Rules(#[from] RulesError),
    #[error(transparent)]
    Select(#[from] SelectError),
    #[error(transparent)]
    Export(#[from] ExportError),
    #[error(transparent)]
    Verify(#[from] VerifyError),
    #[error(transparent)]
    Ui(#[from] depsetfs::ui::UiError),
    #[error("writing output: {0}")]
    Output(io::Error),
    #[error("--log {}: {source}", path.display())]
    LogPath { path: PathBuf, source: io::Error },
    #[error("{0}")]
    Usage(String),
}

fn main() -> ExitCode {
    // The matches are kept: which selector a --children follows is only in their indices.
    let parsed = Cli::command()
        .try_get_matches()
        .and_then(|matches| Cli::from_arg_matches(&matches).map(|cli| (cli, matches)));
    let (cli, matches) = match parsed {
        Ok(parsed) => parsed,
        Err(e) => return usage_error(&e),
    };
    let sub_matches = matches.subcommand().map(|(_, sub)| sub.clone());
    match dispatch(cli.command, sub_matches.as_ref()) {
        Ok(code) => code,
        Err(CliError::Output(e)) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("depsetfs: {e}");
            ExitCode::FAILURE
        }
    }
}

/// clap's help and version go to stdout as usual; its errors become our one-line form.
fn usage_error(error: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        error.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = error.print();
        return if error.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
            ExitCode::from(2)
        } else {
            ExitCode::SUCCESS
        };
    }
    eprintln!("depsetfs: {}", one_line_usage_error(&error.to_string()));
    ExitCode::from(2)
}

/// clap's multi-line error as one line: its first line, with the list that follows a line
/// ending in ':' (the missing arguments) joined onto it, and the `--help` of the subcommand
/// its usage line names.
fn one_line_usage_error(text: &str) -> String {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let mut message = lines
        .next()
        .unwrap_or("invalid arguments")
        .trim_start_matches("error: ")
        .to_string();
    if message.ends_with(':') {
        let listed: Vec<&str> = text
            .lines()
            .skip_while(|l| !l.trim_end().ends_with(':'))
            .skip(1)
            .take_while(|l| l.starts_with(' ') && !l.trim().is_empty())
            .map(str::trim)
            .collect();
        message = format!("{} {}", message, listed.join(" "));
    }
    let command: Vec<&str> = text
        .lines()
        .find_map(|l| l.strip_prefix("Usage: "))
        .unwrap_or("depsetfs")
        .split_whitespace()
        .take_while(|word| !word.starts_with(['[', '<', '-']))
        .collect();
    let command = if command.is_empty() {
        "depsetfs".to_string()
    } else {
        command.join(" ")
    };
    format!("{message} (see {command} --help)")
}

fn dispatch(command: Command, matches: Option<&ArgMatches>) -> Result<ExitCode, CliError> {
    let state = StateDir::from_env();
    match command {
        Command::Mount(args) => mount_command(args, &state),
        Command::Umount { mountpoint } => {
            let report = mount::unmount(&mountpoint, &state)?;
            if let Some(log) = report.log {
                eprintln!("depsetfs: unmounted; log: {}", log.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Dump(args) => dump_command(args, matches, &state),
        Command::Ps(args) => ps_command(args, matches, &state, false),
        Command::Tree(args) => ps_command(args, matches, &state, true),
        Command::Why(args) => why_command(args, matches, &state),
        Command::Who(args) => who_command(args, &state),
        Command::Files(args) => files_command(args, &state),
        Command::Stats(args) => stats_command(args, &state),
        Command::Report(args) => report_command(args, matches, &state),
        Command::Rules(args) => rules_command(args),
        Command::Ui(args) => ui_command(args, matches, &state),
        Command::Graph(args) => graph_command(args, matches, &state),
        Command::Suggest(args) => suggest_command(args, matches, &state),
        Command::Export(args) => export_command(args, matches, &state),
        Command::Verify(args) => verify_command(args, matches, &state),
        Command::SynthLog(args) => synth_log_command(args),
        Command::Run(args) => run_command(args, &state),
        Command::Chroot(args) => {
            let code = depsetfs::chroot::chroot(&args.mountpoint, &args.command, &state)?;
            Ok(ExitCode::from(code.clamp(0, 255) as u8))
        }
        Command::Serve(args) => serve_command(args, &state),
        Command::Doctor => doctor_command(),
        Command::Completions { shell } => {
            // Into memory first: clap_complete panics on a failed write (a closed pipe).
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut public_command(), "depsetfs", &mut script);
            write_stdout(|out| out.write_all(&script))
        }
        Command::Man { dir } => clap_mangen::generate_to(Cli::command(), &dir)
            .map(|()| ExitCode::SUCCESS)
            .map_err(|e| CliError::Usage(format!("__man {}: {e}", dir.display()))),
    }
}

fn mount_command(args: MountArgs, state: &StateDir) -> Result<ExitCode, CliError> {
    let (source, mountpoint) = mount::check_mount_request(&args.source, &args.mountpoint)?;
    let log = match args.log {
        Some(log) => absolute_log_path(&log)?,
        None => state.new_log_path()?,
    };
    args.speed.confine_to_cpus()?;
    let options = ServeOptions {
        source,
        mountpoint,
        log,
        speed: args.speed.options(),
        command: None,
        network: false,
    };
    // The daemon runs on after we return; dropping the handle does not stop it.
    let _daemon = mount::start_daemon(&options, state)?;
    eprintln!(
        "depsetfs: mounted {}; log: {}",
        one_line(&options.mountpoint),
        one_line(&options.log)
    );
    Ok(ExitCode::SUCCESS)
}

/// A path for a message line: as it is, or quoted and escaped when it holds a control
/// character (a newline in a name must not split the line).
fn one_line(path: &Path) -> String {
    let shown = path.display().to_string();
    if shown.chars().any(char::is_control) {
        format!("{shown:?}")
    } else {
        shown
    }
}

/// The command line without its hidden subcommands (clap_complete would offer them).
fn public_command() -> clap::Command {
    let full = Cli::command();
    let public = full
        .get_subcommands()
        .filter(|sub| !sub.is_hide_set())
        .cloned()
        .collect::<Vec<_>>();
    clap::Command::new("depsetfs")
        .version(env!("CARGO_PKG_VERSION"))
        .about(full.get_about().cloned().unwrap_or_default())
        .subcommands(public)
}

fn doctor_command() -> Result<ExitCode, CliError> {
    let report = depsetfs::doctor::run_checks();
    write_stdout(|out| report.render(out))?;
    Ok(if report.essentials_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn serve_command(args: ServeArgs, state: &StateDir) -> Result<ExitCode, CliError> {
    let command = match args.command_json {
        Some(json) => Some(
            serde_json::from_str::<TracedCommand>(&json)
                .map_err(|e| CliError::Usage(format!("--command-json: {e}")))?,
        ),
        None => None,
    };
    let options = ServeOptions {
        source: args.source,
        mountpoint: args.mountpoint,
        log: args.log,
        speed: args.speed.options(),
        command,
        network: args.network,
    };
    mount::serve(&options, state)?;
    Ok(ExitCode::SUCCESS)
}

fn run_command(args: RunArgs, state: &StateDir) -> Result<ExitCode, CliError> {
    let log = args.log.as_deref().map(absolute_log_path).transpose()?;
    args.speed.confine_to_cpus()?;
    let options = RunOptions {
        source: args.source,
        log,
        timeout: Duration::from_secs(args.timeout),
        speed: args.speed.options(),
        argv: args.command,
    };
    let report = run::run(&options, state)?;
    if report.killed > 0 {
        eprintln!(
            "depsetfs: killed {} process(es) still running after --timeout",
            report.killed
        );
    }
    eprintln!("depsetfs: log: {}", report.log.display());
    Ok(ExitCode::from(report.exit_code.clamp(0, 255) as u8))
}

/// The log to read, written out first if a live daemon is still recording it.
fn log_path(log: Option<&Path>, state: &StateDir) -> Result<PathBuf, CliError> {
    let path = match log {
        Some(path) => absolute_log_path(path)?,
        None => state.last_log()?,
    };
    flush_if_recording(&path, state);
    Ok(path)
}

/// A `--log` path made absolute (the daemon and later commands run in other directories).
fn absolute_log_path(path: &Path) -> Result<PathBuf, CliError> {
    std::path::absolute(path).map_err(|source| CliError::LogPath {
        path: path.to_path_buf(),
        source,
    })
}

/// A live daemon writes its log once a second: ask it to write now, so that `dump --set` right
/// after the service ran sees all of it.
fn flush_if_recording(log: &Path, state: &StateDir) {
    let live = state
        .mounts()
        .into_iter()
        .filter(|record| record.log == log && mount::daemon_alive(record.pid));
    for control in live.filter_map(|record| record.control) {
        if let Err(e) = depsetfs::netrec::request_log_flush(&control) {
            eprintln!(
                "depsetfs: warning: {}: the daemon recording it did not write it out ({e}); the last second may be missing",
                log.display()
            );
        }
    }
}

fn load_log(log: Option<&Path>, state: &StateDir) -> Result<LogContents, CliError> {
    let path = log_path(log, state)?;
    let contents = read_log(&path)?;
    if let Some(offset) = contents.truncated_at {
        eprintln!(
            "depsetfs: warning: {}: the last record is cut short at byte {offset} (the recorder was stopped mid-write); everything before it is shown",
            path.display()
        );
    }
    Ok(contents)
}

fn dump_command(
    args: DumpArgs,
    matches: Option<&ArgMatches>,
    state: &StateDir,
) -> Result<ExitCode, CliError> {
    if args.set {
        return dump_set_command(args, matches, state);
    }
    let contents = load_log(args.log.as_deref(), state)?;
    write_stdout(|out| dump::write_events_jsonl(&contents, out))
}

fn dump_set_command(
    args: DumpArgs,
    matches: Option<&ArgMatches>,
    state: &StateDir,
) -> Result<ExitCode, CliError> {
    let SetSources {
        graph,
        rules,
        selection,
    } = SetSources::load(args.log.as_deref(), args.rules.as_deref(), matches, state)?;
    warn_if_network_not_recorded(&graph);
    let result = strategy_set(&graph, &selection, &rules, args.strategy, args.stubs);
    warn_if_rules_emptied(&rules, [&result]);
    if !args.json && !result.stubs.is_empty() {
        let stubs: Vec<String> = result
            .stubs
            .iter()
            .map(|stub| depsetfs::names::escape(&stub.path))
            .collect();
        eprintln!(
            "depsetfs: {} binaries to replace by stubs (see --json): {}",
            stubs.len(),
            stubs.join(" ")
        );
    }
    write_stdout(|out| {
        if args.json {
            dump::write_strategy_set_json(&graph, &result, out)
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

fn ps_command(
    args: AnalysisArgs,
    matches: Option<&ArgMatches>,
    state: &StateDir,
    as_tree: bool,
) -> Result<ExitCode, CliError> {
    let SetSources {
        graph, selection, ..
    } = SetSources::load(
        args.log.log.as_deref(),
        args.rules.as_deref(),
        matches,
        state,
    )?;
    let rows = if as_tree {
        query::tree(&graph, &selection)
    } else {
        query::ps(&graph, &selection)
    };
    write_stdout(|out| match (args.log.json, as_tree) {
        (true, _) => write_json(&rows, out),
        (false, true) => query::write_tree_human(&rows, out),
        (false, false) => query::write_ps_human(&rows, out),
    })
}

fn why_command(
    args: WhyArgs,
    matches: Option<&ArgMatches>,
    state: &StateDir,
) -> Result<ExitCode, CliError> {
    let analysis = &args.analysis;
    let SetSources {
        graph,
        rules,
        selection,
    } = SetSources::load(
        analysis.log.log.as_deref(),
        analysis.rules.as_deref(),
        matches,
        state,
    )?;
    warn_if_network_not_recorded(&graph);
    let result = strategy_set(&graph, &selection, &rules, args.strategy, analysis.stubs);
    warn_if_rules_emptied(&rules, [&result]);
    let path = mirror_path(&args.path);
    let answer = query::why(
        &graph,
        &result,
        &SetOptions::from_header(&graph.header),
        &path,
    );
    write_stdout(|out| {
        if analysis.log.json {
            write_json(&answer, out)
        } else {
            query::write_why_human(&graph, &answer, out)
        }
    })
}

fn who_command(args: WhoArgs, state: &StateDir) -> Result<ExitCode, CliError> {
    let graph = load_graph(args.log.log.as_deref(), state)?;
    let rows = query::who(&graph, &mirror_path(&args.path));
    write_edges(&graph, &rows, args.log.json)
}

fn files_command(args: FilesArgs, state: &StateDir) -> Result<ExitCode, CliError> {
    let graph = load_graph(args.log.log.as_deref(), state)?;
    let rows = query::files_of_pid(&graph, args.pid);
    if rows.is_empty() && !graph.processes.iter().any(|node| node.key.pid == args.pid) {
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

fn write_edges(graph: &Graph, rows: &[query::EdgeRow], json: bool) -> Result<ExitCode, CliError> {
    write_stdout(|out| {
        if json {
            write_json(&rows, out)
        } else {
            query::write_edges_human(graph, rows, out)
        }
    })
}

fn stats_command(args: LogArgs, state: &StateDir) -> Result<ExitCode, CliError> {
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

fn report_command(
    args: ReportArgs,
    matches: Option<&ArgMatches>,
    state: &StateDir,
) -> Result<ExitCode, CliError> {
    let analysis = &args.analysis;
    if let Some(html) = &args.html {
        let session = ui_session(
            analysis.log.log.as_deref(),
            analysis.rules.as_deref(),
            Strategy::Strict,
            matches,
            state,
        )?;
        depsetfs::ui::write_static_page(&session, html)?;
        return Ok(ExitCode::SUCCESS);
    }
    let sources = SetSources::load(
        analysis.log.log.as_deref(),
        analysis.rules.as_deref(),
        matches,
        state,
    )?;
    let sets: Vec<StrategySet> = Strategy::ALL
        .iter()
        .map(|&strategy| {
            strategy_set(
                &sources.graph,
                &sources.selection,
                &sources.rules,
                strategy,
                analysis.stubs,
            )
        })
        .collect();
    warn_if_rules_emptied(&sources.rules, &sets);
    let mut rows = query::report(&sets);
    if args.verify {
        let options = verify_options(args.command, Duration::from_secs(args.timeout));
        for row in &mut rows {
            let strategy = StrategyOptions {
                strategy: row.strategy,
                stubs: analysis.stubs,
            };
            row.works = Some(verify::works(&sources.inputs(&strategy), &options, state)?);
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

/// The page's session: the graph, the rules file (the built-in rules when it does not exist
/// yet) with the command line's selectors first, the strategy.
fn ui_session(
    log: Option<&Path>,
    rules_path: Option<&Path>,
    strategy: Strategy,
    matches: Option<&ArgMatches>,
    state: &StateDir,
) -> Result<depsetfs::ui::model::Session, CliError> {
    let path = log_path(log, state)?;
    let graph = load_graph(Some(&path), state)?;
    let mut rules = match rules_path {
        Some(rules) if rules.exists() => Rules::load(rules)?,
        _ => Rules::built_in(),
    };
    if let Some(matches) = matches {
        let mut selectors = command_line_selectors(matches)?;
        selectors.append(&mut rules.select);
        rules.select = selectors;
    }
    let session = depsetfs::ui::model::Session::new(
        graph,
        path,
        rules,
        rules_path.map(Path::to_path_buf),
        strategy,
    )
    .map_err(depsetfs::ui::UiError::from)?;
    Ok(session)
}

fn ui_command(
    args: UiArgs,
    matches: Option<&ArgMatches>,
    state: &StateDir,
) -> Result<ExitCode, CliError> {
    let session = ui_session(
        args.log.as_deref(),
        args.rules.as_deref(),
        args.strategy,
        matches,
        state,
    )?;
    let server = depsetfs::ui::Server::bind(session, &args.listen)?;
    // The URL holds the token: stdout, for the user (and scripts) only.
    write_stdout(|out| {
        writeln!(out, "{}", server.url())?;
        out.flush()
    })?;
    eprintln!("depsetfs: serving the page; stop with Ctrl-C");
    server.serve();
    Ok(ExitCode::SUCCESS)
}

fn graph_command(
    args: GraphArgs,
    matches: Option<&ArgMatches>,
    state: &StateDir,
) -> Result<ExitCode, CliError> {
    let sources = args.set.sources(matches, state)?;
    let result = strategy_set(
        &sources.graph,
        &sources.selection,
        &sources.rules,
        args.set.strategy,
        false,
    );
    write_stdout(|out| match args.format {
        GraphFormat::Dot => out.write_all(
            depsetfs::ui::graph_out::dot_with_files(
                &sources.graph,
                &sources.selection,
                &result,
                args.files,
            )
            .as_bytes(),
        ),
        GraphFormat::Json => write_json(
            &depsetfs::ui::graph_out::json(&sources.graph, &sources.selection, &result),
            out,
        ),
    })
}

fn suggest_command(
    args: SuggestArgs,
    matches: Option<&ArgMatches>,
    state: &StateDir,
) -> Result<ExitCode, CliError> {
    let sources = args.set.sources(matches, state)?;
    let result = strategy_set(
        &sources.graph,
        &sources.selection,
        &sources.rules,
        args.set.strategy,
        false,
    );
    let options = SetOptions::from_header(&sources.graph.header);
    let suggestions =
        depsetfs::ui::suggest::suggest(&sources.graph, &result, &sources.rules, &options);
    write_stdout(|out| {
        if args.json {
            write_json(&suggestions, out)
        } else {
            for s in &suggestions {
                writeln!(out, "{}\t{}\t{}", s.kind.name(), s.path, s.evidence)?;
            }
            Ok(())
        }
    })
}

fn rules_command(args: RulesArgs) -> Result<ExitCode, CliError> {
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

fn export_command(
    args: ExportArgs,
    matches: Option<&ArgMatches>,
    state: &StateDir,
) -> Result<ExitCode, CliError> {
    let sources = args.set.sources(matches, state)?;
    let strategy = args.set.strategy_options(args.stubs);
    let inputs = sources.inputs(&strategy);
    let (set, stubs) = inputs.shipment(&Default::default());
    let options = ExportOptions {
        format: args.format,
        output: args.output,
        force: args.force,
        progress: true,
        stubs,
    };
    let report = export::export(&sources.graph.header, &set, &options)?;
    eprintln!("depsetfs: {}", report.summary());
    if !options.stubs.is_empty() {
        eprintln!(
            "depsetfs: {} binaries shipped as stubs",
            options.stubs.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Verify options for one command, without --iterate, --keep or an expected stdout.
fn verify_options(argv: Vec<OsString>, timeout: Duration) -> VerifyOptions {
    VerifyOptions {
        argv,
        iterate: 0,
        timeout,
        keep: false,
        expect_stdout: None,
    }
}

fn verify_command(
    args: VerifyArgs,
    matches: Option<&ArgMatches>,
    state: &StateDir,
) -> Result<ExitCode, CliError> {
    let sources = args.set.sources(matches, state)?;
    let strategy = args.set.strategy_options(args.stubs);
    let inputs = sources.inputs(&strategy);
    let argv = match &args.script {
        Some(script) => verify::script_argv(script)?,
        None => args.command,
    };
    let expect_stdout = match (&args.expect, args.compare_stdout) {
        (Some(path), true) => Some(
            std::fs::read(path)
                .map_err(|e| CliError::Usage(format!("--expect {}: {e}", path.display())))?,
        ),
        _ => None,
    };
    let options = VerifyOptions {
        iterate: args.iterate,
        keep: args.keep,
        expect_stdout,
        ..verify_options(argv, Duration::from_secs(args.timeout))
    };
    let report = verify::verify(&inputs, &options, state, &mut |round| {
        eprintln!("depsetfs: {}", verify::describe_round(round));
        for miss in &round.misses {
            eprintln!("depsetfs:   miss: {}", miss.describe());
        }
        for file in &round.unloadable {
            eprintln!("depsetfs:   {}", file.describe());
        }
    })?;
    if args.keep {
        eprintln!("depsetfs: kept {}", report.workdir.display());
    }
    Ok(if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn synth_log_command(args: SynthLogArgs) -> Result<ExitCode, CliError> {
    let spec = depsetfs::synth::SynthSpec {
        records: args.records,
        files: args.files,
        processes: args.processes,
        repeat: args.repeat,
    };
    depsetfs::synth::write_synthetic_log(&args.out, spec)?;
    Ok(ExitCode::SUCCESS)
}

/// Sets, `why` and `report` of a log without network records miss TCP/UDP connect edges.
fn warn_if_network_not_recorded(graph: &Graph) {
    if !graph.network_recorded() {
        eprintln!(
            "depsetfs: warning: network edges were not recorded (the service was not started by depsetfs run/chroot)"
        );
    }
}

/// One warning when the exclude rules left a set with nothing the selection used (the first
/// such set of `sets`).
fn warn_if_rules_emptied<'a>(rules: &Rules, sets: impl IntoIterator<Item = &'a StrategySet>) {
    if let Some(warning) = sets.into_iter().find_map(|set| set.rules_warning(rules)) {
        eprintln!("depsetfs: warning: {warning}");
    }
}

fn load_graph(log: Option<&Path>, state: &StateDir) -> Result<Graph, CliError> {
    let path = log_path(log, state)?;
    let graph = graph_from_log(&path)?;
    if let Some(offset) = graph.stats.truncated_at {
        eprintln!(
            "depsetfs: warning: {}: the last record is cut short at byte {offset}; everything before it is used",
            path.display()
        );
    }
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

fn load_rules(path: Option<&Path>) -> Result<Rules, CliError> {
    Ok(match path {
        Some(path) => Rules::load(path)?,
        None => Rules::built_in(),
    })
}

/// What a set is computed from: the log's graph, the rules and the selection.
struct SetSources {
    graph: Graph,
    rules: Rules,
    selection: Selection,
}

impl SetSources {
    fn load(
        log: Option<&Path>,
        rules: Option<&Path>,
        matches: Option<&ArgMatches>,
        state: &StateDir,
    ) -> Result<SetSources, CliError> {
        let graph = load_graph(log, state)?;
        let rules = load_rules(rules)?;
        let selection = selection(&graph, &rules, matches)?;
        Ok(SetSources {
            graph,
            rules,
            selection,
        })
    }

    fn inputs<'a>(&'a self, strategy: &'a StrategyOptions) -> SetInputs<'a> {
        SetInputs {
            graph: &self.graph,
            selection: &self.selection,
            rules: &self.rules,
            strategy,
        }
    }
}

/// The selectors of the command line in order (a --children applies to the selector just
/// before it), then those of the rules file; none: the default selection.
fn selection(
    graph: &Graph,
    rules: &Rules,
    matches: Option<&ArgMatches>,
) -> Result<Selection, CliError> {
    let mut selectors = match matches {
        Some(matches) => command_line_selectors(matches)?,
        None => Vec::new(),
    };
    selectors.extend(rules.select.iter().cloned());
    Ok(select(graph, &selectors)?)
}

fn command_line_selectors(matches: &ArgMatches) -> Result<Vec<Selector>, CliError> {
    let mut found: Vec<(usize, Option<ProcessMatcher>)> = Vec::new();
    if let (Some(indices), Some(values)) =
        (matches.indices_of("pid"), matches.get_many::<u32>("pid"))
    {
        found.extend(
            indices
                .zip(values)
                .map(|(at, pid)| (at, Some(ProcessMatcher::Pid(*pid)))),
        );
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

fn strategy_set(
    graph: &Graph,
    selection: &Selection,
    rules: &Rules,
    strategy: Strategy,
    stubs: bool,
) -> StrategySet {
    let options = StrategyOptions { strategy, stubs };
    compute(
        graph,
        selection,
        rules,
        &SetOptions::from_header(&graph.header),
        &options,
    )
}

/// A path given on the command line as a normalized mirror path.
fn mirror_path(path: &Path) -> Vec<u8> {
    depsetfs::set::normalize_mirror_path(path.as_os_str().as_encoded_bytes())
}

fn write_json(value: &impl serde::Serialize, out: &mut dyn Write) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, value).map_err(io::Error::from)?;
    out.write_all(b"\n")
}

fn write_stdout(
    write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> Result<ExitCode, CliError> {
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    write(&mut out)
        .and_then(|()| out.flush())
        .map_err(CliError::Output)?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clap_errors_become_one_line_naming_what_is_missing() {
        let missing = Cli::command()
            .try_get_matches_from(["depsetfs", "export", "--output", "x"])
            .err()
            .map(|e| one_line_usage_error(&e.to_string()));
        assert_eq!(
            missing.as_deref(),
            Some(
                "the following required arguments were not provided: --format <FORMAT> (see depsetfs export --help)"
            )
        );
        let unknown = Cli::command()
            .try_get_matches_from(["depsetfs", "frobnicate"])
            .err()
            .map(|e| one_line_usage_error(&e.to_string()));
        assert!(
            unknown
                .as_deref()
                .is_some_and(|l| l.contains("'frobnicate'") && l.ends_with("(see depsetfs --help)")),
            "{unknown:?}"
        );
    }

    #[test]
    fn cpu_lists_parse_like_taskset() {
        assert_eq!(parse_cpu_list("0").map(|l| l.0), Ok(vec![0]));
        assert_eq!(parse_cpu_list("0-2,5").map(|l| l.0), Ok(vec![0, 1, 2, 5]));
        for bad in ["", "x", "2-1", "0,,1", "-1", "99999"] {
            assert!(parse_cpu_list(bad).is_err(), "{bad:?} accepted");
        }
    }
}
