//! The recording side's subcommands: `mount`, `umount`, `run`, `chroot`, the daemon's
//! hidden `__serve`, `doctor`, and the hidden `__completions`/`__man` generators; each a thin
//! function over the library's mount, run and chroot modules.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, CommandFactory};

use depsetfs::launch::mount::{self, MountError, ServeOptions, SpeedOptions};
use depsetfs::launch::run::{RunError, RunOptions};
use depsetfs::launch::{run, umount};
use depsetfs::mirror::serve;
use depsetfs::mirror::transport::TransportChoice;
use depsetfs::state::StateDir;
use depsetfs::sys;

use super::host::HostArgs;
use super::load::new_log_path;
use super::output::{one_line, write_stdout};
use super::{Cli, CliError};

#[derive(Args)]
pub(crate) struct MountArgs {
    /// The tree to mirror.
    #[arg(long, default_value = "/")]
    pub(crate) source: PathBuf,
    /// Where to write the log (default: a new file under the state directory's logs/).
    #[arg(long)]
    pub(crate) log: Option<PathBuf>,
    /// Replace the file given with --log if it exists (else an existing file is refused).
    #[arg(long, requires = "log")]
    pub(crate) overwrite_log: bool,
    /// Name the run in the log header (default: the log's file stem); `merge` keeps it, and
    /// analyses of a merged log say which run needed what.
    #[arg(long, value_parser = parse_label)]
    pub(crate) label: Option<String>,
    #[command(flatten)]
    pub(crate) speed: SpeedArgs,
    #[command(flatten)]
    pub(crate) host: HostArgs,
    pub(crate) mountpoint: PathBuf,
}

/// Speed options (see docs/ARCHITECTURE.md, caching and fidelity); all but `--entry-cache`
/// keep every process's lookups.
#[derive(Args)]
pub(crate) struct SpeedArgs {
    /// How FUSE requests reach the daemon: `uring` (FUSE over io_uring: per-CPU queues, each
    /// served on its own CPU; Linux >= 6.14), `dev` (threads reading /dev/fuse) or `auto`
    /// (io_uring where the kernel offers it, turning the fuse module's enable_uring on if root
    /// may, and saying so; else /dev/fuse, and one line says why).
    #[arg(long, value_enum, env = "DEPSETFS_TRANSPORT", default_value_t = TransportChoice::Auto)]
    pub(crate) transport: TransportChoice,
    /// Request-handling threads of the /dev/fuse transport (io_uring: one per CPU).
    #[arg(long, default_value_t = SpeedOptions::default().threads)]
    pub(crate) threads: usize,
    /// Reads of read-only opens through the daemon, instead of kernel FUSE passthrough (the
    /// default: such reads go straight to the file; their opens are recorded, byte counts
    /// are not; see docs/ARCHITECTURE.md, page cache and passthrough).
    #[arg(long)]
    pub(crate) no_passthrough: bool,
    /// Kept for scripts written before passthrough became the default; changes nothing.
    #[arg(long, hide = true, conflicts_with = "no_passthrough")]
    pub(crate) passthrough: bool,
    /// Let the kernel cache lookups while one process runs alone: the first request of any
    /// other process drops them all (Linux >= 6.16). Lookup-heavy work needs far fewer
    /// requests; a process can still use, unseen, entries another process looked up since its
    /// own last request (see docs/ARCHITECTURE.md, caching and fidelity).
    #[arg(long)]
    pub(crate) entry_cache: bool,
    /// How long the kernel may reuse the attributes a lookup returned (milliseconds). Every
    /// path lookup of every process still reaches the daemon; only the permission check of
    /// each path component and stat/fstat within the timeout are answered by the kernel.
    /// 0 sends those to the daemon too (fidelity "full", 1.2-2.1x slower in bench/README.md).
    #[arg(long, default_value_t = SpeedOptions::default().attr_timeout_ms)]
    pub(crate) attr_timeout_ms: u64,
    /// Confine the daemon (and, for run, the traced command) to these CPUs, e.g. `0` or
    /// `0-1,4`. One shared CPU avoids a cross-CPU wake-up per request: serial workloads
    /// traced 1.2-2.8x faster in bench/README.md, parallel ones lose their parallelism.
    #[arg(long, value_name = "LIST", value_parser = parse_cpu_list)]
    pub(crate) cpus: Option<CpuList>,
}

/// A `--label`: a name people type (`--pid LABEL:PID`, `export --prefer LABEL`), so not empty
/// and without control characters.
pub(crate) fn parse_label(label: &str) -> Result<String, String> {
    if label.is_empty() || label.chars().any(char::is_control) {
        return Err(format!(
            "a label is a non-empty name without control characters, not {label:?}"
        ));
    }
    Ok(label.to_owned())
}

/// The CPUs named by `--cpus`.
#[derive(Clone, Debug)]
pub(crate) struct CpuList(Vec<usize>);

/// `0`, `0,2`, `0-3,6`: the CPUs of a `--cpus` list.
pub(crate) fn parse_cpu_list(list: &str) -> Result<CpuList, String> {
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
            transport: self.transport,
            threads: self.threads,
            passthrough: !self.no_passthrough,
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
pub(crate) struct RunArgs {
    #[arg(long, default_value = "/")]
    pub(crate) source: PathBuf,
    /// Trace CMD in an OCI image layout (LAYOUT[:TAG]): its layers unpacked into a fresh root
    /// under the state directory, CMD run with the image's environment, working directory and
    /// user (no CMD: the image's entrypoint and command).
    #[arg(long, value_name = "OCI_LAYOUT[:TAG]", conflicts_with = "source")]
    pub(crate) image: Option<PathBuf>,
    #[arg(long)]
    pub(crate) log: Option<PathBuf>,
    /// Replace the file given with --log if it exists (else an existing file is refused).
    #[arg(long, requires = "log")]
    pub(crate) overwrite_log: bool,
    /// Seconds to wait for the command and what it leaves behind before killing them.
    #[arg(long, default_value_t = 600)]
    pub(crate) timeout: u64,
    /// Seconds the command has to end after SIGTERM, SIGINT or SIGHUP to run was passed on to
    /// it, before everything it started is killed.
    #[arg(long, default_value_t = run::DEFAULT_GRACE.as_secs())]
    pub(crate) grace: u64,
    /// Name the run in the log header (default: the log's file stem); `merge` keeps it, and
    /// analyses of a merged log say which run needed what.
    #[arg(long, value_parser = parse_label)]
    pub(crate) label: Option<String>,
    #[command(flatten)]
    pub(crate) speed: SpeedArgs,
    #[command(flatten)]
    pub(crate) host: HostArgs,
    /// Run the command in this network namespace (`/run/netns/NAME`, `/proc/PID/ns/net`);
    /// its addresses are the host's in the log. `run` itself stays where it is.
    #[arg(long, value_name = "PATH")]
    pub(crate) netns: Option<PathBuf>,
    /// The command and its arguments.
    #[arg(last = true, required_unless_present = "image")]
    pub(crate) command: Vec<OsString>,
}

#[derive(Args)]
pub(crate) struct ChrootArgs {
    /// A mountpoint of `depsetfs mount` (prepared with mount-helpers/chroot-prepare).
    pub(crate) mountpoint: PathBuf,
    /// The command and its arguments (`--` before them is optional).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    pub(crate) command: Vec<OsString>,
}

#[derive(Args)]
pub(crate) struct ServeArgs {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub(crate) args: Vec<OsString>,
}

pub(crate) fn mount_command(args: MountArgs, state: &StateDir) -> Result<ExitCode, CliError> {
    let (source, mountpoint) = mount::check_mount_request(&args.source, &args.mountpoint)?;
    let log = match args.log {
        Some(log) => new_log_path(&log, args.overwrite_log)?,
        None => state.new_log_path()?,
    };
    args.speed.confine_to_cpus()?;
    let host = args.host.options(None).identity().map_err(RunError::from)?;
    let options = ServeOptions {
        source,
        mountpoint,
        log,
        speed: args.speed.options(),
        command: None,
        network: false,
        label: args.label,
        image: None,
        host: Some(host),
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

/// The command line without its hidden subcommands (clap_complete would offer them).
pub(crate) fn public_command() -> clap::Command {
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

pub(crate) fn doctor_command() -> Result<ExitCode, CliError> {
    let report = depsetfs::launch::doctor::run_checks();
    write_stdout(|out| report.render(out))?;
    Ok(if report.essentials_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

pub(crate) fn serve_command(args: ServeArgs, state: &StateDir) -> Result<ExitCode, CliError> {
    let options =
        ServeOptions::from_args(std::iter::once(OsString::from("__serve")).chain(args.args))
            .map_err(MountError::from)?;
    serve::serve(&options, state).map_err(MountError::from)?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn run_command(args: RunArgs, state: &StateDir) -> Result<ExitCode, CliError> {
    let log = args
        .log
        .as_deref()
        .map(|log| new_log_path(log, args.overwrite_log))
        .transpose()?;
    args.speed.confine_to_cpus()?;
    let (source, argv, image) = match &args.image {
        Some(reference) => super::image::prepare(reference, args.command, state)?,
        None => (args.source, args.command, None),
    };
    let options = RunOptions {
        source,
        log,
        timeout: Duration::from_secs(args.timeout),
        grace: Duration::from_secs(args.grace),
        speed: args.speed.options(),
        argv,
        label: args.label,
        image,
        host: args.host.options(args.netns),
    };
    let report = run::run(&options, state)?;
    if report.killed > 0 {
        let after = match report.signal {
            Some(signal) => format!("the --grace period after signal {signal}"),
            None => "--timeout".to_owned(),
        };
        eprintln!(
            "depsetfs: killed {} process(es) still running after {after}",
            report.killed
        );
    }
    eprintln!("depsetfs: log: {}", report.log.display());
    Ok(ExitCode::from(report.exit_code.clamp(0, 255) as u8))
}

pub(crate) fn umount_command(mountpoint: &Path, state: &StateDir) -> Result<ExitCode, CliError> {
    let report = umount::unmount(mountpoint, state)?;
    if let Some(log) = report.log {
        eprintln!("depsetfs: unmounted; log: {}", log.display());
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn chroot_command(args: ChrootArgs, state: &StateDir) -> Result<ExitCode, CliError> {
    let code = depsetfs::launch::chroot::chroot(&args.mountpoint, &args.command, state)?;
    Ok(ExitCode::from(code.clamp(0, 255) as u8))
}

pub(crate) fn completions_command(shell: clap_complete::Shell) -> Result<ExitCode, CliError> {
    // Into memory first: clap_complete panics on a failed write (a closed pipe).
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut public_command(), "depsetfs", &mut script);
    write_stdout(|out| out.write_all(&script))
}

pub(crate) fn man_command(dir: &Path) -> Result<ExitCode, CliError> {
    clap_mangen::generate_to(Cli::command(), dir)
        .map(|()| ExitCode::SUCCESS)
        .map_err(|e| CliError::Usage(format!("__man {}: {e}", dir.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_parse_like_taskset() {
        assert_eq!(parse_cpu_list("0").map(|l| l.0), Ok(vec![0]));
        assert_eq!(parse_cpu_list("0-2,5").map(|l| l.0), Ok(vec![0, 1, 2, 5]));
        for bad in ["", "x", "2-1", "0,,1", "-1", "99999"] {
            assert!(parse_cpu_list(bad).is_err(), "{bad:?} accepted");
        }
    }
}
