//! The `depsetfs` command: parses the command line and hands each subcommand to the library.
//! Every failure ends as one line on stderr (`depsetfs: ...`) and exit status 1; `run` exits
//! with its command's status.

use std::ffi::OsString;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use depsetfs::event::TracedCommand;
use depsetfs::log::{LogContents, LogError, read_log};
use depsetfs::mount::{self, MountError, ServeOptions};
use depsetfs::run::{RunError, RunOptions};
use depsetfs::set::{SetOptions, sanity_set};
use depsetfs::state::{StateDir, StateError};
use depsetfs::{dump, run};

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
    #[command(name = "__serve", hide = true)]
    Serve(ServeArgs),
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

/// Options that trade nothing recorded for speed (see docs/ARCHITECTURE.md).
#[derive(Args)]
struct SpeedArgs {
    /// Request-handling threads.
    #[arg(long, default_value_t = 4)]
    threads: usize,
    /// Kernel FUSE passthrough for read-only opens: reads bypass the daemon (opens are still
    /// recorded, read byte counts are not).
    #[arg(long)]
    passthrough: bool,
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
struct ServeArgs {
    #[arg(long)]
    source: PathBuf,
    #[arg(long)]
    log: PathBuf,
    #[arg(long)]
    threads: usize,
    #[arg(long)]
    passthrough: bool,
    #[arg(long)]
    command_json: Option<String>,
    mountpoint: PathBuf,
}

#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error(transparent)]
    Mount(#[from] MountError),
    #[error(transparent)]
    Run(#[from] RunError),
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("writing output: {0}")]
    Output(io::Error),
    #[error("{0}")]
    Usage(String),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(&e),
    };
    match dispatch(cli.command) {
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
    let text = error.to_string();
    let first = text
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("invalid arguments")
        .trim_start_matches("error: ");
    eprintln!("depsetfs: {first} (see depsetfs --help)");
    ExitCode::from(2)
}

fn dispatch(command: Command) -> Result<ExitCode, CliError> {
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
        Command::Dump(args) => dump_command(args, &state),
        Command::Run(args) => run_command(args, &state),
        Command::Serve(args) => serve_command(args, &state),
    }
}

fn mount_command(args: MountArgs, state: &StateDir) -> Result<ExitCode, CliError> {
    let (source, mountpoint) = mount::check_mount_request(&args.source, &args.mountpoint)?;
    let log = match args.log {
        Some(log) => std::path::absolute(&log).map_err(CliError::Output)?,
        None => state.new_log_path()?,
    };
    let options = ServeOptions {
        source,
        mountpoint,
        log,
        threads: args.speed.threads,
        passthrough: args.speed.passthrough,
        command: None,
    };
    // The daemon runs on after we return; dropping the handle does not stop it.
    let _daemon = mount::start_daemon(&options, state)?;
    Ok(ExitCode::SUCCESS)
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
        threads: args.threads,
        passthrough: args.passthrough,
        command,
    };
    mount::serve(&options, state)?;
    Ok(ExitCode::SUCCESS)
}

fn run_command(args: RunArgs, state: &StateDir) -> Result<ExitCode, CliError> {
    let log = args
        .log
        .map(|log| std::path::absolute(&log))
        .transpose()
        .map_err(CliError::Output)?;
    let options = RunOptions {
        source: args.source,
        log,
        timeout: Duration::from_secs(args.timeout),
        threads: args.speed.threads,
        passthrough: args.speed.passthrough,
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

fn load_log(log: Option<&Path>, state: &StateDir) -> Result<LogContents, CliError> {
    let path = match log {
        Some(path) => path.to_owned(),
        None => state.last_log()?,
    };
    let contents = read_log(&path)?;
    if let Some(offset) = contents.truncated_at {
        eprintln!(
            "depsetfs: warning: {}: the last record is cut short at byte {offset} (the recorder was stopped mid-write); everything before it is shown",
            path.display()
        );
    }
    Ok(contents)
}

fn dump_command(args: DumpArgs, state: &StateDir) -> Result<ExitCode, CliError> {
    let contents = load_log(args.log.as_deref(), state)?;
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    if args.set {
        let set = sanity_set(&contents, &SetOptions::from_header(&contents.header));
        if args.json {
            dump::write_set_json(&set, &mut out)
        } else {
            dump::write_set_paths(&set, &mut out)
        }
    } else {
        dump::write_events_jsonl(&contents, &mut out)
    }
    .and_then(|()| out.flush())
    .map_err(CliError::Output)?;
    Ok(ExitCode::SUCCESS)
}
