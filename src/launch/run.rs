//! `depsetfs run`: mount, chroot, run, wait, unmount, in one private mount namespace.
//!
//! The run process first moves into a private mount namespace (so nothing it mounts is seen
//! outside or outlives it) and checks that the command exists in the source tree. It then
//! splits in two: the process the user sees (the *front*) only passes signals on and waits,
//! while a forked *worker* does the work and outlives the front if it must, so that a
//! `kill -9` of `run` still ends everything it started (the worker learns of it through
//! `PR_SET_PDEATHSIG`; see docs/ARCHITECTURE.md, "Ending a run"). The worker becomes a child
//! subreaper (so daemons the command leaves behind are re-parented to it and can be waited
//! for) and forks the command's process, which waits on a pipe. The mirror daemon is then
//! started with that pid recorded in the log header (and with a parent-death signal, so it
//! writes its log and exits if the worker dies), the real /proc, /sys and /dev are bound into
//! the mirror, and the command is released: it chroots onto the mirror, changes to the
//! caller's directory and execs (for `run --image`: the image's directory, environment and
//! user, the program found through the image's `PATH`). The worker waits for the command and every process it left
//! behind (SIGTERM/SIGINT/SIGHUP are passed to the command, and what remains is killed after
//! `--grace` seconds, or at `--timeout`), then unmounts, waits for the daemon to write the
//! rest of the log, removes the temporary mountpoint and reports to the front.

use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use crate::launch::host::{HostError, HostIdentity, HostOptions};
use crate::launch::mount::{self, MountError, ServeOptions, SpeedOptions};
use crate::mirror::network::{self, HandOver, HandOverStep};
use crate::record::{TracedCommand, TracedImage};
use crate::state::{StateDir, StateError};
use crate::sys;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("nothing to run: give a command after --")]
    NoCommand,
    #[error("{command}: command not found in the mirror ({source})")]
    CommandNotFound {
        command: String,
        #[source]
        source: io::Error,
    },
    #[error("{path}: not executable (the command {command} resolves to it in the mirror)")]
    NotExecutable { command: String, path: String },
    #[error("{0}")]
    Worker(String),
    #[error("{action}: {source}")]
    Io {
        action: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot record the network: {step}: {source} (set {env}=1 to run without it)", step = .step.describe(), env = network::DISABLE_ENV)]
    NetworkSetup {
        step: HandOverStep,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Mount(#[from] MountError),
    #[error(transparent)]
    Host(#[from] HostError),
    #[error("--netns: the command cannot enter the network namespace: {0}")]
    EnterNetns(#[source] io::Error),
    #[error(transparent)]
    State(#[from] StateError),
}

fn io_err(action: impl Into<String>) -> impl FnOnce(io::Error) -> RunError {
    let action = action.into();
    move |source| RunError::Io { action, source }
}

#[derive(Clone, Debug)]
pub struct RunOptions {
    pub source: PathBuf,
    pub log: Option<PathBuf>,
    pub timeout: Duration,
    /// How long the command has to end after a SIGTERM/SIGINT/SIGHUP to `run` was passed on,
    /// before everything it started is killed.
    pub grace: Duration,
    pub speed: SpeedOptions,
    pub argv: Vec<OsString>,
    /// The run's name in the log header (`--label`); None: the log's file stem.
    pub label: Option<String>,
    /// `run --image`: the environment, directory and user the image's config gives the
    /// command (the source is then the image's unpacked root).
    pub image: Option<ImageLaunch>,
    /// `--host`, `--netns`, `--address`: the header's host and the command's network namespace.
    pub host: HostOptions,
}

/// How the command of `run --image` is started: as the image's config says, not with the
/// caller's environment, directory and uid.
#[derive(Clone, Debug)]
pub struct ImageLaunch {
    pub traced: TracedImage,
    /// `NAME=value` strings; `PATH` among them is also where the command is looked up.
    pub env: Vec<OsString>,
    pub workdir: PathBuf,
    /// uid and gid, when the config names a user.
    pub user: Option<(u32, u32)>,
}

/// The default `--grace`.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub struct RunReport {
    /// The command's exit code (128 + signal number if a signal ended it).
    pub exit_code: i32,
    pub log: PathBuf,
    /// Processes still running at the timeout or at the end of the grace period, which `run`
    /// killed.
    pub killed: usize,
    /// The termination signal `run` received and passed on, if any.
    pub signal: Option<i32>,
}

/// The real filesystems a chroot needs, bound into the mirror (not mirrored: their contents
/// are the kernel's, and /proc magic links must resolve in the caller's context).
pub const CHROOT_BINDS: [&str; 3] = ["proc", "sys", "dev"];

pub fn run(options: &RunOptions, state: &StateDir) -> Result<RunReport, RunError> {
    if options.argv.is_empty() {
        return Err(RunError::NoCommand);
    }
    sys::unshare_mount_namespace().map_err(io_err("enter a private mount namespace"))?;
    sys::set_propagation(Path::new("/"), libc::MS_PRIVATE)
        .map_err(io_err("make mounts private"))?;
    remove_stale_mountpoints();
    let workdir = make_mountpoint()?;
    let result = check_then_run(options, state, &workdir);
    let _ = std::fs::remove_dir(&workdir);
    result
}

/// Everything that can be checked before anything runs, then the front and its worker.
fn check_then_run(
    options: &RunOptions,
    state: &StateDir,
    workdir: &Path,
) -> Result<RunReport, RunError> {
    let (source, mountpoint) = mount::check_mount_request(&options.source, workdir)?;
    let (cwd_in_mirror, search_path) = match &options.image {
        Some(image) => (image.workdir.clone(), image_path_var(&image.env)),
        None => {
            let cwd = std::env::current_dir().map_err(io_err("read the working directory"))?;
            (path_in_mirror(&source, &cwd), std::env::var_os("PATH"))
        }
    };
    let program = check_command(
        &source,
        &cwd_in_mirror,
        &options.argv[0],
        search_path.as_deref(),
    )?;
    let log = match &options.log {
        Some(log) => log.clone(),
        None => state.new_log_path()?,
    };
    let host = options.host.identity()?;
    let netns = match &options.host.netns {
        Some(path) => Some(
            std::fs::File::open(path).map_err(|source| HostError::Netns {
                path: path.clone(),
                source,
            })?,
        ),
        None => None,
    };
    let job = Job {
        host,
        netns,
        options,
        state,
        source,
        mountpoint,
        cwd_in_mirror,
        program,
        log,
    };
    let signals = SignalSet::termination();
    let ignored = signals.stop_ignoring();
    let previous_mask = signals.block();
    let outcome = front_and_worker(&job, &signals);
    restore_signal_mask(&previous_mask);
    ignore_again(ignored);
    outcome
}

/// What the worker needs.
struct Job<'a> {
    host: HostIdentity,
    /// The network namespace the command enters before its chroot (`--netns`).
    netns: Option<std::fs::File>,
    options: &'a RunOptions,
    state: &'a StateDir,
    source: PathBuf,
    mountpoint: PathBuf,
    cwd_in_mirror: PathBuf,
    /// Where `check_command` found the command, in the mirror.
    program: PathBuf,
    log: PathBuf,
}

/// Forks the worker, passes it the termination signals the front gets, and returns what it
/// reported. Termination signals are blocked in both (each takes them with `sigtimedwait`).
fn front_and_worker(job: &Job, signals: &SignalSet) -> Result<RunReport, RunError> {
    let (report_read, report_write) = pipe()?;
    // SAFETY: getpid has no preconditions.
    let front = unsafe { libc::getpid() };
    // SAFETY: `run` is single-threaded here (no daemon, no recorder yet), so the child may run
    // any code.
    let worker = unsafe { libc::fork() };
    if worker < 0 {
        return Err(io_err("fork")(io::Error::last_os_error()));
    }
    if worker == 0 {
        drop(report_read);
        // SAFETY: prctl with plain integers; SIGUSR1 stays blocked and is taken in the wait
        // loop. If the front is already gone, getppid says so.
        let orphaned = unsafe {
            libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGUSR1 as libc::c_ulong,
                0,
                0,
                0,
            );
            libc::getppid() != front
        };
        let outcome = work(job, signals, orphaned);
        let _ = job_cleanup(&job.mountpoint);
        write_report(&report_write, &outcome);
        // SAFETY: the worker ends here, without running the front's code after fork returned.
        unsafe { libc::_exit(0) };
    }
    drop(report_write);
    let status = supervise(worker, signals);
    let command = job.options.argv[0].to_string_lossy();
    read_report(&report_read, &job.log, &command, status)
}

/// The front: passes the termination signals it receives to the worker until the worker ends;
/// returns its wait status.
fn supervise(worker: libc::pid_t, signals: &SignalSet) -> i32 {
    loop {
        let mut status = 0;
        // SAFETY: worker is our child; WNOHANG never blocks.
        let waited = unsafe { libc::waitpid(worker, &mut status, libc::WNOHANG) };
        if waited == worker || waited < 0 {
            return status;
        }
        if let Some(received) = signals.wait(Duration::from_millis(50)) {
            // A terminal's signal reaches the whole foreground group, worker included; pass
            // on only those sent to `run` alone.
            if !received.from_kernel {
                // SAFETY: plain kill of our own child.
                unsafe { libc::kill(worker, received.signal) };
            }
        }
    }
}

/// The worker's side: runs the command on a fresh mirror and ends everything it started.
fn work(job: &Job, signals: &SignalSet, orphaned: bool) -> Result<RunReport, RunError> {
    become_subreaper()?;
    let hand_over = if network::enabled_by_env() {
        let control = job.state.control_socket(&job.mountpoint);
        if let Some(dir) = control.parent() {
            std::fs::create_dir_all(dir).map_err(io_err(format!("create {}", dir.display())))?;
        }
        Some(
            HandOver::prepare(&control)
                .map_err(io_err(format!("prepare {}", control.display())))?,
        )
    } else {
        None
    };
    let options = job.options;
    let exec = match &options.image {
        Some(image) => Some(ExecAs::new(&job.program, &image.env, image.user)?),
        None => None,
    };
    let held = HeldCommand::fork_as(
        &options.argv,
        &job.mountpoint,
        &job.cwd_in_mirror,
        hand_over.as_ref(),
        exec.as_ref(),
        job.netns.as_ref().map(|file| file.as_fd()),
    )?;
    let network = hand_over.is_some();
    drop(hand_over);
    let serve = ServeOptions {
        source: job.source.clone(),
        mountpoint: job.mountpoint.clone(),
        log: job.log.clone(),
        speed: options.speed.clone(),
        command: Some(TracedCommand {
            argv: options
                .argv
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect(),
            cwd: job.cwd_in_mirror.to_string_lossy().into_owned(),
            pid: held.pid as u32,
        }),
        network,
        label: options.label.clone(),
        image: options.image.as_ref().map(|image| image.traced.clone()),
        host: Some(job.host.clone()),
    };
    let mut daemon = match mount::start_tied_daemon(&serve, job.state) {
        Ok(daemon) => daemon,
        Err(e) => {
            held.abandon();
            return Err(e.into());
        }
    };
    let outcome = bind_chroot_mounts(&job.mountpoint).and_then(|()| held.release());
    let report = match outcome {
        Ok(pid) => {
            let limits = Limits {
                timeout: options.timeout,
                grace: options.grace,
                orphaned,
            };
            let ended = wait_for_tree(pid, daemon.id() as i32, &limits, signals);
            Ok(RunReport {
                exit_code: ended.exit_code,
                log: job.log.clone(),
                killed: ended.killed,
                signal: ended.signal,
            })
        }
        Err(e) => {
            reap_all_but(daemon.id() as i32);
            Err(e)
        }
    };
    release_chroot_mounts(&job.mountpoint);
    unmount_and_wait(&job.mountpoint, &mut daemon);
    job.state.forget_mount(&job.mountpoint);
    report
}

/// After the mirror is unmounted: the temporary mountpoint goes (the front may be gone).
fn job_cleanup(mountpoint: &Path) -> io::Result<()> {
    std::fs::remove_dir(mountpoint)
}

/// The worker's report to the front, one line: `ok EXIT KILLED SIGNAL`, `notfound ERRNO`, or
/// `error MESSAGE`.
fn write_report(pipe: &OwnedFd, outcome: &Result<RunReport, RunError>) {
    let line = match outcome {
        Ok(report) => format!(
            "ok {} {} {}",
            report.exit_code,
            report.killed,
            report.signal.unwrap_or(0)
        ),
        Err(RunError::CommandNotFound { source, .. }) if source.raw_os_error().is_some() => {
            format!("notfound {}", source.raw_os_error().unwrap_or(0))
        }
        Err(e) => format!("error {}", e.to_string().replace('\n', " ")),
    };
    let mut file = std::fs::File::from(pipe.try_clone().unwrap_or_else(|_| {
        // SAFETY: only reached if dup failed; writing nowhere is the best left to do.
        unsafe { OwnedFd::from_raw_fd(libc::open(c"/dev/null".as_ptr(), libc::O_WRONLY)) }
    }));
    let _ = io::Write::write_all(&mut file, line.as_bytes());
}

fn read_report(
    pipe: &OwnedFd,
    log: &Path,
    command: &str,
    worker_status: i32,
) -> Result<RunReport, RunError> {
    let mut text = String::new();
    let file = std::fs::File::from(
        pipe.try_clone()
            .map_err(io_err("read the report of the run's worker"))?,
    );
    let _ = io::Read::read_to_string(&mut io::BufReader::new(file), &mut text);
    parse_report(&text, log, command).unwrap_or_else(|| {
        Err(RunError::Worker(format!(
            "the worker process of run ended without a report (status {})",
            exit_code(worker_status)
        )))
    })
}

fn parse_report(text: &str, log: &Path, command: &str) -> Option<Result<RunReport, RunError>> {
    let (kind, rest) = text.split_once(' ')?;
    match kind {
        "ok" => {
            let mut numbers = rest.split(' ').map(|n| n.trim().parse::<i64>().ok());
            let exit_code = numbers.next()?? as i32;
            let killed = numbers.next()?? as usize;
            let signal = numbers.next()?? as i32;
            Some(Ok(RunReport {
                exit_code,
                log: log.to_path_buf(),
                killed,
                signal: (signal != 0).then_some(signal),
            }))
        }
        "notfound" => Some(Err(RunError::CommandNotFound {
            command: command.to_owned(),
            source: io::Error::from_raw_os_error(rest.trim().parse().ok()?),
        })),
        "error" => Some(Err(RunError::Worker(rest.to_owned()))),
        _ => None,
    }
}

/// Prefix of the temporary mountpoints under /tmp: `depsetfs-run.<pid of run>.XXXXXX`.
const MOUNTPOINT_PREFIX: &str = "depsetfs-run.";

fn make_mountpoint() -> Result<PathBuf, RunError> {
    let mut template =
        format!("/tmp/{MOUNTPOINT_PREFIX}{}.XXXXXX\0", std::process::id()).into_bytes();
    // SAFETY: template is a writable NUL-terminated buffer ending in XXXXXX.
    let result = unsafe { libc::mkdtemp(template.as_mut_ptr().cast()) };
    if result.is_null() {
        return Err(io_err("create a mountpoint under /tmp")(
            io::Error::last_os_error(),
        ));
    }
    template.pop();
    Ok(PathBuf::from(std::ffi::OsStr::from_bytes(&template)))
}

/// Removes the empty, root-owned mountpoints of runs that are gone (a run whose front and
/// worker were both killed with SIGKILL cannot remove its own). Never recursive: a directory
/// with anything in it stays.
fn remove_stale_mountpoints() {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir("/tmp") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = stale_mountpoint_pid(name.as_bytes()) else {
            continue;
        };
        let owned_by_root = entry
            .metadata()
            .is_ok_and(|m| m.is_dir() && m.uid() == 0 && m.nlink() == 2);
        if owned_by_root && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir(entry.path());
        }
    }
}

/// The pid in a mountpoint name `depsetfs-run.<pid>.XXXXXX`.
fn stale_mountpoint_pid(name: &[u8]) -> Option<u32> {
    let rest = name.strip_prefix(MOUNTPOINT_PREFIX.as_bytes())?;
    let (pid, suffix) = std::str::from_utf8(rest).ok()?.split_once('.')?;
    (suffix.len() == 6).then_some(())?;
    pid.parse().ok()
}

/// Checks, before anything is mounted, that `command` can be executed in the mirror of
/// `source`: found (through PATH when it has no slash, as execvp does) and executable.
fn check_command(
    source: &Path,
    cwd_in_mirror: &Path,
    command: &OsString,
    search_path: Option<&std::ffi::OsStr>,
) -> Result<PathBuf, RunError> {
    let name = command.to_string_lossy().into_owned();
    let root = sys::open_path(source, libc::O_PATH | libc::O_DIRECTORY)
        .map_err(io_err(format!("open {}", source.display())))?;
    let bytes = command.as_bytes();
    let candidates: Vec<PathBuf> = if bytes.contains(&b'/') {
        vec![cwd_in_mirror.join(command)]
    } else {
        let path = search_path.unwrap_or("/bin:/usr/bin".as_ref());
        path.as_bytes()
            .split(|&b| b == b':')
            .map(|dir| {
                let dir = if dir.is_empty() { b"." } else { dir };
                cwd_in_mirror
                    .join(std::ffi::OsStr::from_bytes(dir))
                    .join(command)
            })
            .collect()
    };
    let mut not_executable = None;
    let mut last_error = io::Error::from_raw_os_error(libc::ENOENT);
    for candidate in &candidates {
        match stat_in_root(&root, candidate) {
            Ok(stat) if is_executable(&stat) => return Ok(candidate.clone()),
            Ok(_) => {
                not_executable.get_or_insert_with(|| candidate.display().to_string());
            }
            Err(e) => last_error = e,
        }
    }
    match not_executable {
        Some(path) => Err(RunError::NotExecutable {
            command: name,
            path,
        }),
        None => Err(RunError::CommandNotFound {
            command: name,
            source: last_error,
        }),
    }
}

/// A regular file with an execute bit (root, who runs `run`, may then execute it).
fn is_executable(stat: &libc::stat) -> bool {
    stat.st_mode & libc::S_IFMT == libc::S_IFREG && stat.st_mode & 0o111 != 0
}

/// The `PATH` of an image's environment.
fn image_path_var(env: &[OsString]) -> Option<OsString> {
    env.iter().find_map(|e| {
        e.as_bytes()
            .strip_prefix(b"PATH=")
            .map(|p| std::ffi::OsStr::from_bytes(p).to_owned())
    })
}

/// `stat` of `path` resolved as if `root` were `/` (symlinks included: `RESOLVE_IN_ROOT`).
fn stat_in_root(root: &OwnedFd, path: &Path) -> io::Result<libc::stat> {
    let relative = path.strip_prefix("/").unwrap_or(path);
    let name = CString::new(relative.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: open_how is plain data; zero is "no flags, no mode, no resolve flags".
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_PATH | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_IN_ROOT;
    // SAFETY: valid NUL-terminated name, a valid open_how and its size.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root.as_raw_fd(),
            name.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor to us.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    sys::fstat(fd.as_raw_fd())
}

fn become_subreaper() -> Result<(), RunError> {
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes a plain integer.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        return Err(io_err("become a child subreaper")(
            io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// Where `host_path` is inside a mirror of `source` (`/` when it lies outside it).
fn path_in_mirror(source: &Path, host_path: &Path) -> PathBuf {
    match host_path.strip_prefix(source) {
        Ok(rest) => Path::new("/").join(rest),
        Err(_) => PathBuf::from("/"),
    }
}

pub fn bind_chroot_mounts(mountpoint: &Path) -> Result<(), RunError> {
    for name in CHROOT_BINDS {
        let target = mountpoint.join(name);
        if !target.is_dir() {
            continue;
        }
        sys::bind_mount(&Path::new("/").join(name), &target, true)
            .map_err(io_err(format!("bind /{name} into the mirror")))?;
    }
    Ok(())
}

pub fn release_chroot_mounts(mountpoint: &Path) {
    for name in CHROOT_BINDS.iter().rev() {
        let target = mountpoint.join(name);
        while sys::mountinfo::mount_at(&target).ok().flatten().is_some() {
            if sys::umount(&target, libc::MNT_DETACH).is_err() {
                break;
            }
        }
    }
}

fn unmount_and_wait(mountpoint: &Path, daemon: &mut Child) {
    if sys::umount(mountpoint, 0).is_err() {
        let _ = sys::umount(mountpoint, libc::MNT_DETACH);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = daemon.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: the daemon is our child; SIGTERM makes it flush and exit.
    unsafe { libc::kill(daemon.id() as libc::pid_t, libc::SIGTERM) };
    let _ = daemon.wait();
}

/// The command's process, forked before the mirror exists and waiting for the go-ahead.
pub(crate) struct HeldCommand {
    pub(crate) pid: libc::pid_t,
    go: OwnedFd,
    exec_error: OwnedFd,
    name: String,
}

fn pipe() -> Result<(OwnedFd, OwnedFd), RunError> {
    let mut fds = [0; 2];
    // SAFETY: fds has room for two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io_err("create a pipe")(io::Error::last_os_error()));
    }
    // SAFETY: the kernel just returned both descriptors to us.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn cstring(bytes: &[u8]) -> Result<CString, RunError> {
    CString::new(bytes).map_err(|_| RunError::Io {
        action: "pass an argument".to_owned(),
        source: io::Error::from_raw_os_error(libc::EINVAL),
    })
}

/// The program (a path in the mirror), environment and user of `run --image`'s command,
/// prepared before fork (the child may not allocate).
pub(crate) struct ExecAs {
    program: CString,
    _env: Vec<CString>,
    envp: Vec<*const libc::c_char>,
    user: Option<(u32, u32)>,
}

impl ExecAs {
    fn new(program: &Path, env: &[OsString], user: Option<(u32, u32)>) -> Result<ExecAs, RunError> {
        let env: Vec<CString> = env
            .iter()
            .map(|e| cstring(e.as_bytes()))
            .collect::<Result<_, _>>()?;
        let mut envp: Vec<*const libc::c_char> = env.iter().map(|e| e.as_ptr()).collect();
        envp.push(std::ptr::null());
        Ok(ExecAs {
            program: cstring(program.as_os_str().as_bytes())?,
            _env: env,
            envp,
            user,
        })
    }
}

/// What the child reports on its error pipe: the step (0: chroot or exec, else a
/// [`HandOverStep`]) and the errno, 8 bytes.
const STEP_EXEC: u32 = 0;
/// The step of entering `--netns` (not a [`HandOverStep`]: those count from 1).
const STEP_NETNS: u32 = 1000;

impl HeldCommand {
    /// Forks the process that will run `argv` chrooted at `mountpoint` in `cwd` once
    /// released; with `hand_over`, it first installs the network filter and hands it to the
    /// daemon.
    pub(crate) fn fork(
        argv: &[OsString],
        mountpoint: &Path,
        cwd: &Path,
        hand_over: Option<&HandOver>,
        netns: Option<BorrowedFd<'_>>,
    ) -> Result<HeldCommand, RunError> {
        HeldCommand::fork_as(argv, mountpoint, cwd, hand_over, None, netns)
    }

    /// [`HeldCommand::fork`], with `exec` the program, environment and user to exec with
    /// (else `execvp` with the caller's environment, as root).
    pub(crate) fn fork_as(
        argv: &[OsString],
        mountpoint: &Path,
        cwd: &Path,
        hand_over: Option<&HandOver>,
        exec: Option<&ExecAs>,
        netns: Option<BorrowedFd<'_>>,
    ) -> Result<HeldCommand, RunError> {
        let args: Vec<CString> = argv
            .iter()
            .map(|a| cstring(a.as_bytes()))
            .collect::<Result<_, _>>()?;
        let mut arg_ptrs: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
        arg_ptrs.push(std::ptr::null());
        let root = cstring(mountpoint.as_os_str().as_bytes())?;
        let dir = cstring(cwd.as_os_str().as_bytes())?;
        let (go_read, go_write) = pipe()?;
        let (error_read, error_write) = pipe()?;
        // SAFETY: this process is single-threaded here (the daemon is a separate process), so
        // the child may run any code; it still only makes system calls until exec.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(io_err("fork")(io::Error::last_os_error()));
        }
        if pid == 0 {
            drop(go_write);
            drop(error_read);
            exec_when_released(
                &go_read,
                &error_write,
                &root,
                &dir,
                &arg_ptrs,
                &BeforeExec {
                    hand_over,
                    netns,
                    exec,
                },
            );
        }
        Ok(HeldCommand {
            pid,
            go: go_write,
            exec_error: error_read,
            name: argv[0].to_string_lossy().into_owned(),
        })
    }

    /// Lets the command run; returns its pid once exec succeeded.
    pub(crate) fn release(self) -> Result<libc::pid_t, RunError> {
        // SAFETY: one byte from a valid buffer to a valid descriptor.
        unsafe { libc::write(self.go.as_raw_fd(), b"g".as_ptr().cast(), 1) };
        drop(self.go);
        let mut report = [0u8; 8];
        // SAFETY: reads at most 8 bytes into an 8-byte buffer.
        let n = unsafe { libc::read(self.exec_error.as_raw_fd(), report.as_mut_ptr().cast(), 8) };
        if n == 8 {
            let mut status = 0;
            // SAFETY: the child is ours and has exited or is exiting.
            unsafe { libc::waitpid(self.pid, &mut status, 0) };
            let step = u32::from_ne_bytes([report[0], report[1], report[2], report[3]]);
            let errno = i32::from_ne_bytes([report[4], report[5], report[6], report[7]]);
            let source = io::Error::from_raw_os_error(errno);
            return Err(match HandOverStep::from_code(step) {
                Some(step) => RunError::NetworkSetup { step, source },
                None if step == STEP_NETNS => RunError::EnterNetns(source),
                None => RunError::CommandNotFound {
                    command: self.name,
                    source,
                },
            });
        }
        Ok(self.pid)
    }

    /// The mirror could not be set up: the child exits without running anything.
    fn abandon(self) {
        drop(self.go);
        let mut status = 0;
        // SAFETY: the child is ours; closing the pipe makes it exit.
        unsafe { libc::waitpid(self.pid, &mut status, 0) };
    }
}

/// What the forked child does besides chroot and chdir before it execs, in this order: the
/// network hand-over, entering the network namespace, the program, environment and user.
struct BeforeExec<'a> {
    hand_over: Option<&'a HandOver>,
    netns: Option<BorrowedFd<'a>>,
    exec: Option<&'a ExecAs>,
}

/// In the forked child: wait for the go-ahead, chroot, chdir, exec; report exec errors
/// through `error_pipe` (closed on a successful exec by O_CLOEXEC).
fn exec_when_released(
    go: &OwnedFd,
    error_pipe: &OwnedFd,
    root: &CString,
    dir: &CString,
    argv: &[*const libc::c_char],
    before: &BeforeExec<'_>,
) -> ! {
    let BeforeExec {
        hand_over,
        netns,
        exec,
    } = *before;
    let mut byte = 0u8;
    // SAFETY: only system calls on valid buffers and descriptors; no allocation after fork.
    unsafe {
        // `run` blocks its termination signals; the command gets them as the caller had them.
        let mut unblock: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut unblock);
        for signal in SignalSet::SIGNALS {
            libc::sigaddset(&mut unblock, signal);
        }
        ignore_again(IGNORED_BY_CALLER.load(std::sync::atomic::Ordering::Relaxed));
        libc::sigprocmask(libc::SIG_UNBLOCK, &unblock, std::ptr::null_mut());
        if libc::read(go.as_raw_fd(), (&mut byte as *mut u8).cast(), 1) != 1 {
            libc::_exit(127);
        }
        if let Some(hand_over) = hand_over
            && let Err((step, errno)) = hand_over.perform()
        {
            report_and_exit(error_pipe, step as u32, errno);
        }
        if let Some(netns) = netns
            && libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) != 0
        {
            report_and_exit(error_pipe, STEP_NETNS, *libc::__errno_location());
        }
        if libc::chroot(root.as_ptr()) != 0 {
            report_and_exit(error_pipe, STEP_EXEC, *libc::__errno_location());
        }
        if libc::chdir(dir.as_ptr()) != 0 {
            libc::chdir(c"/".as_ptr());
        }
        if let Some(exec) = exec {
            if let Some((uid, gid)) = exec.user
                && (libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setgid(gid) != 0
                    || libc::setuid(uid) != 0)
            {
                report_and_exit(error_pipe, STEP_EXEC, *libc::__errno_location());
            }
            libc::execve(exec.program.as_ptr(), argv.as_ptr(), exec.envp.as_ptr());
            report_and_exit(error_pipe, STEP_EXEC, *libc::__errno_location())
        }
        libc::execvp(argv[0], argv.as_ptr());
        report_and_exit(error_pipe, STEP_EXEC, *libc::__errno_location())
    }
}

fn report_and_exit(error_pipe: &OwnedFd, step: u32, errno: i32) -> ! {
    let mut bytes = [0u8; 8];
    bytes[..4].copy_from_slice(&step.to_ne_bytes());
    bytes[4..].copy_from_slice(&errno.to_ne_bytes());
    // SAFETY: the write is from an 8-byte local to a valid descriptor.
    unsafe {
        libc::write(error_pipe.as_raw_fd(), bytes.as_ptr().cast(), 8);
        libc::_exit(127)
    }
}

/// Pids of our live children (from /proc: run is single-threaded, so "our" is unambiguous).
fn children_of(parent: libc::pid_t) -> Vec<libc::pid_t> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<libc::pid_t>().ok())
        .filter(|&pid| parent_of(pid) == Some(parent))
        .collect()
}

fn parent_of(pid: libc::pid_t) -> Option<libc::pid_t> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_comm = &stat[stat.rfind(')')? + 1..];
    after_comm.split_whitespace().nth(1)?.parse().ok()
}

pub(crate) fn exit_code(status: i32) -> i32 {
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        1
    }
}

/// What ends a run's wait besides the command and its descendants ending on their own.
struct Limits {
    timeout: Duration,
    grace: Duration,
    /// The front was gone before the worker could ask to be told: end everything now.
    orphaned: bool,
}

/// How the wait for the command's tree ended.
struct Ended {
    exit_code: i32,
    killed: usize,
    signal: Option<i32>,
}

/// Waits for the command and every descendant (re-parented to us as subreaper), except the
/// daemon. A termination signal is passed to the command (or, once it has exited, to what it
/// left behind); `grace` later, or at once on a second signal or when the front is gone
/// (SIGUSR1, the parent-death signal), or at the timeout, whatever is left is killed.
fn wait_for_tree(
    command: libc::pid_t,
    daemon: libc::pid_t,
    limits: &Limits,
    signals: &SignalSet,
) -> Ended {
    let deadline = Instant::now() + limits.timeout;
    let me = std::process::id() as libc::pid_t;
    let mut command_status = None;
    let mut killed = 0;
    let mut kill_at = limits.orphaned.then(Instant::now);
    let mut signal = None;
    loop {
        while let Some(received) = signals.wait(Duration::ZERO) {
            let now = Instant::now();
            if received.signal == libc::SIGUSR1 || signal.is_some() {
                kill_at = Some(now);
                continue;
            }
            signal = Some(received.signal);
            kill_at = Some(now + limits.grace);
            // A terminal's signal has reached the command's process group already.
            if !received.from_kernel {
                pass_on(
                    received.signal,
                    command,
                    command_status.is_none(),
                    me,
                    daemon,
                );
            }
        }
        let children: Vec<_> = children_of(me)
            .into_iter()
            .filter(|&p| p != daemon)
            .collect();
        for &child in &children {
            let mut status = 0;
            // SAFETY: child is our child; WNOHANG never blocks.
            if unsafe { libc::waitpid(child, &mut status, libc::WNOHANG) } == child
                && child == command
            {
                command_status = Some(exit_code(status));
            }
        }
        if children.is_empty() {
            // A command reaped before we saw it in /proc should not happen, but never spin.
            command_status.get_or_insert(1);
            break;
        }
        let now = Instant::now();
        if now >= deadline || kill_at.is_some_and(|at| now >= at) {
            killed += kill_tree(me, daemon);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ended {
        exit_code: command_status.unwrap_or(1),
        killed,
        signal,
    }
}

/// Sends `signal` to the command while it runs, else to every process it left behind.
fn pass_on(
    signal: libc::c_int,
    command: libc::pid_t,
    command_alive: bool,
    me: libc::pid_t,
    daemon: libc::pid_t,
) {
    let targets = if command_alive {
        vec![command]
    } else {
        descendants_of(me, daemon)
    };
    for pid in targets {
        // SAFETY: pid is a descendant of ours (re-parented to us, the subreaper, if orphaned).
        unsafe { libc::kill(pid, signal) };
    }
}

/// Kills every descendant but the daemon's tree; returns how many were signalled.
fn kill_tree(me: libc::pid_t, daemon: libc::pid_t) -> usize {
    let mut count = 0;
    for pid in descendants_of(me, daemon) {
        // SAFETY: pid is one of our descendants.
        if unsafe { libc::kill(pid, libc::SIGKILL) } == 0 {
            count += 1;
        }
    }
    count
}

/// Every live descendant of `root` (from /proc), leaving out `except` and its descendants.
fn descendants_of(root: libc::pid_t, except: libc::pid_t) -> Vec<libc::pid_t> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let parents: Vec<(libc::pid_t, libc::pid_t)> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<libc::pid_t>().ok())
        .filter_map(|pid| Some((pid, parent_of(pid)?)))
        .collect();
    let mut found = Vec::new();
    let mut frontier = vec![root];
    while let Some(parent) = frontier.pop() {
        for &(pid, _) in parents.iter().filter(|&&(_, p)| p == parent) {
            if pid != except && !found.contains(&pid) {
                found.push(pid);
                frontier.push(pid);
            }
        }
    }
    found
}

/// A termination signal taken with [`SignalSet::wait`].
struct Received {
    signal: libc::c_int,
    /// Sent by the kernel (a terminal's Ctrl-C or hang-up, delivered to the whole foreground
    /// process group), not by `kill`.
    from_kernel: bool,
}

/// SIGTERM, SIGINT, SIGHUP, and SIGUSR1 (the worker's parent-death signal): blocked in the
/// front and the worker, taken synchronously.
struct SignalSet(libc::sigset_t);

impl SignalSet {
    fn termination() -> SignalSet {
        // SAFETY: sigset_t is plain data, initialised by sigemptyset.
        let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: valid pointer to a sigset_t.
        unsafe {
            libc::sigemptyset(&mut set);
            for signal in Self::SIGNALS {
                libc::sigaddset(&mut set, signal);
            }
        }
        SignalSet(set)
    }

    /// An ignored signal is dropped even while blocked: a `run` started with SIGINT ignored
    /// (a background job of a shell script) would never see it. Gives such signals their
    /// default action (never taken: they stay blocked) and returns them as a bit mask, which
    /// the command gets back before its exec.
    fn stop_ignoring(&self) -> u64 {
        let mut ignored = 0;
        for signal in Self::SIGNALS {
            // SAFETY: sigaction is plain data; a null new action only reads the current one.
            let mut current: libc::sigaction = unsafe { std::mem::zeroed() };
            // SAFETY: valid out pointer.
            unsafe { libc::sigaction(signal, std::ptr::null(), &mut current) };
            if current.sa_sigaction == libc::SIG_IGN {
                // SAFETY: setting the default disposition of a blocked signal.
                unsafe { libc::signal(signal, libc::SIG_DFL) };
                ignored |= 1u64 << signal;
            }
        }
        IGNORED_BY_CALLER.store(ignored, std::sync::atomic::Ordering::Relaxed);
        ignored
    }

    const SIGNALS: [libc::c_int; 4] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGUSR1];

    /// Blocks the set; returns the mask before.
    fn block(&self) -> libc::sigset_t {
        // SAFETY: as above.
        let mut previous: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: valid sigset pointers.
        unsafe { libc::sigprocmask(libc::SIG_BLOCK, &self.0, &mut previous) };
        previous
    }

    /// A pending signal of the set, waiting at most `limit`.
    fn wait(&self, limit: Duration) -> Option<Received> {
        let timeout = libc::timespec {
            tv_sec: limit.as_secs() as libc::time_t,
            tv_nsec: limit.subsec_nanos() as libc::c_long,
        };
        // SAFETY: siginfo_t is plain data filled by the kernel.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: valid pointers; the signals are blocked in this thread.
        let signal = unsafe { libc::sigtimedwait(&self.0, &mut info, &timeout) };
        (signal > 0).then_some(Received {
            signal,
            from_kernel: info.si_code == libc::SI_KERNEL,
        })
    }
}

/// Termination signals the caller of `run` ignored (bit N: signal N), ignored again by the
/// command before its exec.
static IGNORED_BY_CALLER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Ignores again the signals [`SignalSet::stop_ignoring`] took over. Async-signal-safe.
fn ignore_again(ignored: u64) {
    for signal in SignalSet::SIGNALS {
        if ignored & (1u64 << signal) != 0 {
            // SAFETY: plain disposition change.
            unsafe { libc::signal(signal, libc::SIG_IGN) };
        }
    }
}

fn restore_signal_mask(mask: &libc::sigset_t) {
    // SAFETY: a mask returned by sigprocmask.
    unsafe { libc::sigprocmask(libc::SIG_SETMASK, mask, std::ptr::null_mut()) };
}

/// Used when the command could not start: reap whatever children exist besides the daemon.
fn reap_all_but(daemon: libc::pid_t) {
    let me = std::process::id() as libc::pid_t;
    for child in children_of(me).into_iter().filter(|&p| p != daemon) {
        let mut status = 0;
        // SAFETY: our own child.
        unsafe { libc::waitpid(child, &mut status, libc::WNOHANG) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn working_directory_maps_into_the_mirror() {
        assert_eq!(
            path_in_mirror(Path::new("/"), Path::new("/work/x")),
            PathBuf::from("/work/x")
        );
        assert_eq!(
            path_in_mirror(Path::new("/srv/root"), Path::new("/srv/root/etc")),
            PathBuf::from("/etc")
        );
        assert_eq!(
            path_in_mirror(Path::new("/srv/root"), Path::new("/home")),
            PathBuf::from("/")
        );
    }

    #[test]
    fn worker_reports_read_back() {
        let log = Path::new("/tmp/l.dlog");
        let ok = parse_report("ok 143 1 15", log, "sh").expect("parses");
        let report = ok.expect("ok");
        assert_eq!(
            (report.exit_code, report.killed, report.signal),
            (143, 1, Some(15))
        );
        let plain = parse_report("ok 0 0 0", log, "sh").expect("parses");
        assert_eq!(plain.expect("ok").signal, None);
        assert!(matches!(
            parse_report("notfound 2", log, "x"),
            Some(Err(RunError::CommandNotFound { .. }))
        ));
        assert!(matches!(
            parse_report("error mount failed", log, "x"),
            Some(Err(RunError::Worker(m))) if m == "mount failed"
        ));
        assert!(parse_report("", log, "x").is_none());
    }

    #[test]
    fn stale_mountpoint_names_carry_the_pid() {
        assert_eq!(
            stale_mountpoint_pid(b"depsetfs-run.1234.AbCdEf"),
            Some(1234)
        );
        assert_eq!(stale_mountpoint_pid(b"depsetfs-run.AbCdEf"), None);
        assert_eq!(stale_mountpoint_pid(b"depsetfs-run.12.toolong7"), None);
        assert_eq!(stale_mountpoint_pid(b"other.1234.AbCdEf"), None);
    }

    #[test]
    fn commands_are_resolved_inside_the_source_tree() {
        use std::os::unix::fs::{PermissionsExt, symlink};
        let root = crate::fixtures::records::ScratchDir::new("run-command");
        let source = root.file("src");
        std::fs::create_dir_all(source.join("usr/bin")).expect("mkdir");
        let tool = source.join("usr/bin/tool");
        std::fs::write(&tool, "#!/bin/sh\n").expect("write");
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        std::fs::write(source.join("usr/bin/data"), "x").expect("write");
        // An absolute symlink resolves inside the tree, not on the host.
        symlink("/usr/bin/tool", source.join("usr/bin/alias")).expect("symlink");
        let check = |command: &str| {
            check_command(
                &source,
                Path::new("/"),
                &command.into(),
                Some("/usr/bin".as_ref()),
            )
        };
        assert!(check("/usr/bin/tool").is_ok());
        assert_eq!(check("tool").ok(), Some(PathBuf::from("/usr/bin/tool")));
        assert!(check("/usr/bin/alias").is_ok());
        assert!(matches!(
            check("/usr/bin/data"),
            Err(RunError::NotExecutable { .. })
        ));
        assert!(matches!(
            check("/usr/bin/missing"),
            Err(RunError::CommandNotFound { .. })
        ));
        assert!(matches!(
            check("/usr/bin"),
            Err(RunError::NotExecutable { .. })
        ));
    }

    #[test]
    fn exit_codes_follow_the_shell_convention() {
        assert_eq!(exit_code(3 << 8), 3);
        assert_eq!(exit_code(libc::SIGKILL), 128 + libc::SIGKILL);
    }
}
