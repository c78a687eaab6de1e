//! `depsetfs run`: mount, chroot, run, wait, unmount, in one private mount namespace.
//!
//! The run process first moves into a private mount namespace (so nothing it mounts is seen
//! outside or outlives it), becomes a child subreaper (so daemons the command leaves behind
//! are re-parented to it and can be waited for), and forks the command's process, which waits
//! on a pipe. The mirror daemon is then started with that pid recorded in the log header, the
//! real /proc, /sys and /dev are bound into the mirror, and the command is released: it
//! chroots onto the mirror, changes to the caller's directory and execs. `run` waits for the
//! command and every process it left behind (killing what remains at `--timeout`), then
//! unmounts and waits for the daemon to write the rest of the log.

use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use crate::event::TracedCommand;
use crate::mount::{self, MountError, ServeOptions, SpeedOptions};
use crate::netrec::{self, HandOver, HandOverStep};
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
    #[error("{action}: {source}")]
    Io {
        action: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot record the network: {step}: {source} (set {env}=1 to run without it)", step = .step.describe(), env = netrec::DISABLE_ENV)]
    NetworkSetup {
        step: HandOverStep,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Mount(#[from] MountError),
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
    pub speed: SpeedOptions,
    pub argv: Vec<OsString>,
}

#[derive(Debug)]
pub struct RunReport {
    /// The command's exit code (128 + signal number if a signal ended it).
    pub exit_code: i32,
    pub log: PathBuf,
    /// Processes still running at the timeout, which `run` killed.
    pub killed: usize,
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
    let workdir = make_mountpoint()?;
    let result = run_in(options, state, &workdir);
    let _ = std::fs::remove_dir(&workdir);
    result
}

fn run_in(options: &RunOptions, state: &StateDir, workdir: &Path) -> Result<RunReport, RunError> {
    let (source, mountpoint) = mount::check_mount_request(&options.source, workdir)?;
    become_subreaper()?;
    let cwd = std::env::current_dir().map_err(io_err("read the working directory"))?;
    let cwd_in_mirror = path_in_mirror(&source, &cwd);
    let hand_over = if netrec::enabled_by_env() {
        let control = state.control_socket(&mountpoint);
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
    let held = HeldCommand::fork(
        &options.argv,
        &mountpoint,
        &cwd_in_mirror,
        hand_over.as_ref(),
    )?;
    let network = hand_over.is_some();
    drop(hand_over);
    let log = match &options.log {
        Some(log) => log.clone(),
        None => state.new_log_path()?,
    };
    let serve = ServeOptions {
        source,
        mountpoint: mountpoint.clone(),
        log: log.clone(),
        speed: options.speed.clone(),
        command: Some(TracedCommand {
            argv: options
                .argv
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect(),
            cwd: cwd_in_mirror.to_string_lossy().into_owned(),
            pid: held.pid as u32,
        }),
        network,
    };
    let mut daemon = match mount::start_daemon(&serve, state) {
        Ok(daemon) => daemon,
        Err(e) => {
            held.abandon();
            return Err(e.into());
        }
    };
    let outcome = bind_chroot_mounts(&mountpoint).and_then(|()| held.release());
    let report = match outcome {
        Ok(pid) => {
            let (exit_code, killed) = wait_for_tree(pid, daemon.id() as i32, options.timeout);
            Ok(RunReport {
                exit_code,
                log,
                killed,
            })
        }
        Err(e) => {
            reap_all_but(daemon.id() as i32);
            Err(e)
        }
    };
    release_chroot_mounts(&mountpoint);
    unmount_and_wait(&mountpoint, &mut daemon);
    state.forget_mount(&mountpoint);
    report
}

fn make_mountpoint() -> Result<PathBuf, RunError> {
    let mut template = b"/tmp/depsetfs-run.XXXXXX\0".to_vec();
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
        while mount::mount_at(&target).ok().flatten().is_some() {
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

/// What the child reports on its error pipe: the step (0: chroot or exec, else a
/// [`HandOverStep`]) and the errno, 8 bytes.
const STEP_EXEC: u32 = 0;

impl HeldCommand {
    /// Forks the process that will run `argv` chrooted at `mountpoint` in `cwd` once
    /// released; with `hand_over`, it first installs the network filter and hands it to the
    /// daemon.
    pub(crate) fn fork(
        argv: &[OsString],
        mountpoint: &Path,
        cwd: &Path,
        hand_over: Option<&HandOver>,
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
            exec_when_released(&go_read, &error_write, &root, &dir, &arg_ptrs, hand_over);
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

/// In the forked child: wait for the go-ahead, chroot, chdir, exec; report exec errors
/// through `error_pipe` (closed on a successful exec by O_CLOEXEC).
fn exec_when_released(
    go: &OwnedFd,
    error_pipe: &OwnedFd,
    root: &CString,
    dir: &CString,
    argv: &[*const libc::c_char],
    hand_over: Option<&HandOver>,
) -> ! {
    let mut byte = 0u8;
    // SAFETY: only system calls on valid buffers and descriptors; no allocation after fork.
    unsafe {
        if libc::read(go.as_raw_fd(), (&mut byte as *mut u8).cast(), 1) != 1 {
            libc::_exit(127);
        }
        if let Some(hand_over) = hand_over
            && let Err((step, errno)) = hand_over.perform()
        {
            report_and_exit(error_pipe, step as u32, errno);
        }
        if libc::chroot(root.as_ptr()) != 0 {
            report_and_exit(error_pipe, STEP_EXEC, *libc::__errno_location());
        }
        if libc::chdir(dir.as_ptr()) != 0 {
            libc::chdir(c"/".as_ptr());
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

/// Waits for the command and every descendant (re-parented to us as subreaper), except the
/// daemon. At the deadline, what is left is terminated. Returns (exit code, killed count).
fn wait_for_tree(command: libc::pid_t, daemon: libc::pid_t, timeout: Duration) -> (i32, usize) {
    let deadline = Instant::now() + timeout;
    let me = std::process::id() as libc::pid_t;
    let mut command_status = None;
    let mut killed = 0;
    loop {
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
        if children.is_empty() && command_status.is_some() {
            break;
        }
        if children.is_empty() {
            // The command was reaped before we saw it in /proc (zombie gone): should not happen,
            // but never spin forever.
            command_status.get_or_insert(1);
            break;
        }
        if Instant::now() >= deadline {
            killed += terminate(&children);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    (command_status.unwrap_or(1), killed)
}

fn terminate(children: &[libc::pid_t]) -> usize {
    let mut count = 0;
    for &child in children {
        // SAFETY: child is our own child process.
        if unsafe { libc::kill(child, libc::SIGKILL) } == 0 {
            count += 1;
        }
    }
    count
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
    fn exit_codes_follow_the_shell_convention() {
        assert_eq!(exit_code(3 << 8), 3);
        assert_eq!(exit_code(libc::SIGKILL), 128 + libc::SIGKILL);
    }
}
