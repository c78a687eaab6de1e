//! Mounting the mirror (the client side): `depsetfs mount` and `run` check their input, then
//! start the daemon (`depsetfs __serve`, in a new session, with the arguments
//! [`ServeOptions::to_args`] writes) and wait for one line from it: `ready` or `error: ...`
//! (after `warning: ...` lines, printed on stderr). A daemon that fails is killed and anything
//! it mounted detached. What the daemon does is `crate::mirror::serve`; unmounting is
//! `umount`.

use std::io::{self, BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::log::LogError;
use crate::mirror::serve::ServeError;
pub use crate::mirror::serve::{FS_TYPE, ServeOptions, SpeedOptions};
use crate::state::{StateDir, StateError};
use crate::sys;
use crate::sys::mountinfo::mount_at;

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("must run as root (mounting a mirror of / needs CAP_SYS_ADMIN)")]
    NotRoot,
    #[error("/dev/fuse is not available: {0}")]
    NoFuseDevice(io::Error),
    #[error("mountpoint {path}: {reason}")]
    BadMountpoint { path: PathBuf, reason: String },
    #[error("source {path}: {reason}")]
    BadSource { path: PathBuf, reason: String },
    #[error("{path} is not a depsetfs mount")]
    NotOurMount { path: PathBuf },
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the daemon failed: {0}")]
    Daemon(String),
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Serve(#[from] ServeError),
}

pub(super) fn io_err<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> MountError + 'a {
    move |source| MountError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

pub(super) fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Everything `mount` and `run` check before starting a daemon. Returns canonical paths.
pub fn check_mount_request(
    source: &Path,
    mountpoint: &Path,
) -> Result<(PathBuf, PathBuf), MountError> {
    if !is_root() {
        return Err(MountError::NotRoot);
    }
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .map_err(MountError::NoFuseDevice)?;
    let bad_mp = |reason: &str| MountError::BadMountpoint {
        path: mountpoint.to_owned(),
        reason: reason.to_owned(),
    };
    let mp = std::fs::canonicalize(mountpoint).map_err(|e| bad_mp(&e.to_string()))?;
    if !mp.is_dir() {
        return Err(bad_mp("not a directory"));
    }
    let src = std::fs::canonicalize(source).map_err(|e| MountError::BadSource {
        path: source.to_owned(),
        reason: e.to_string(),
    })?;
    if !src.is_dir() {
        return Err(MountError::BadSource {
            path: source.to_owned(),
            reason: "not a directory".to_owned(),
        });
    }
    if src == mp {
        return Err(bad_mp(
            "is the source itself; mount the mirror somewhere else",
        ));
    }
    if mp == Path::new("/") {
        return Err(bad_mp("refusing to mount over /"));
    }
    if mount_at(&mp)
        .map_err(io_err("read mounts for", &mp))?
        .is_some()
    {
        return Err(bad_mp("already a mountpoint"));
    }
    Ok((src, mp))
}

/// Starts `depsetfs __serve` and waits until it is serving (or failed). On failure, anything
/// the daemon mounted is unmounted again.
pub fn start_daemon(options: &ServeOptions, state: &StateDir) -> Result<Child, MountError> {
    spawn_daemon(options, state, None)
}

/// [`start_daemon`] for `run`: the daemon gets SIGTERM (writes its log and exits) when the
/// calling thread dies, however it dies.
pub fn start_tied_daemon(options: &ServeOptions, state: &StateDir) -> Result<Child, MountError> {
    spawn_daemon(options, state, Some(libc::SIGTERM))
}

fn spawn_daemon(
    options: &ServeOptions,
    state: &StateDir,
    parent_death_signal: Option<libc::c_int>,
) -> Result<Child, MountError> {
    let stderr = state.open_daemon_log()?;
    let exe = std::fs::read_link("/proc/self/exe")
        .map_err(io_err("find", Path::new("/proc/self/exe")))?;
    let mut command = Command::new(exe);
    command
        .args(options.to_args())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr);
    // SAFETY: setsid and prctl are async-signal-safe; the daemon must outlive the caller's
    // terminal session.
    unsafe {
        command.pre_exec(move || {
            libc::setsid();
            if let Some(signal) = parent_death_signal {
                libc::prctl(libc::PR_SET_PDEATHSIG, signal as libc::c_ulong, 0, 0, 0);
            }
            Ok(())
        });
    }
    let mut child = command
        .spawn()
        .map_err(io_err("start daemon for", &options.mountpoint))?;
    match wait_ready(&mut child) {
        Ok(()) => Ok(child),
        Err(message) => {
            let _ = child.kill();
            let _ = child.wait();
            detach_if_ours(&options.mountpoint);
            Err(MountError::Daemon(message))
        }
    }
}

/// Reads the daemon's status lines: `warning: ...` and `notice: ...` lines (printed on
/// stderr), then `ready` or `error: ...`.
fn wait_ready(child: &mut Child) -> Result<(), String> {
    let Some(stdout) = child.stdout.take() else {
        return Err("no status pipe".to_owned());
    };
    let mut status = BufReader::new(stdout);
    loop {
        let mut line = String::new();
        match status.read_line(&mut line) {
            Ok(_) if line.trim() == "ready" => return Ok(()),
            Ok(0) => {
                return Err(
                    "it exited before the mount was ready (see daemon.log in the state directory)"
                        .to_owned(),
                );
            }
            Ok(_) => {
                let line = line.trim();
                if let Some(warning) = line.strip_prefix("warning: ") {
                    eprintln!("depsetfs: warning: {warning}");
                } else if let Some(notice) = line.strip_prefix("notice: ") {
                    eprintln!("depsetfs: {notice}");
                } else {
                    return Err(line.trim_start_matches("error: ").to_owned());
                }
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

fn detach_if_ours(mountpoint: &Path) {
    if let Ok(Some(info)) = mount_at(mountpoint) {
        if info.fs_type == FS_TYPE {
            let _ = sys::umount(mountpoint, libc::MNT_DETACH);
        }
    }
}
