//! `depsetfs chroot MOUNTPOINT [--] CMD ARGS...`: the third step of the manual flow (`mount`,
//! `mount-helpers/chroot-prepare`, then this instead of a plain `chroot`). It checks that
//! MOUNTPOINT is a depsetfs mirror whose daemon is alive and listens for network hand-overs,
//! forks the held command of [`crate::launch::run`] with the network filter, lets it hand the filter
//! to that daemon, chroot to MOUNTPOINT, change to `/` and exec CMD, and waits for it. A
//! service started by plain `chroot` is recorded too, but without its network calls.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::launch::mount::FS_TYPE;
use crate::launch::run::{HeldCommand, RunError};
use crate::launch::umount;
use crate::mirror::network::HandOver;
use crate::state::{StateDir, StateError};

#[derive(Debug, thiserror::Error)]
pub enum ChrootError {
    #[error("nothing to run: give a command after the mountpoint")]
    NoCommand,
    #[error("must run as root (chroot needs CAP_SYS_CHROOT)")]
    NotRoot,
    #[error("{path} is not a depsetfs mount")]
    NotOurMount { path: PathBuf },
    #[error("{path}: the daemon of this mount is gone (run `depsetfs umount {path}`)")]
    DaemonGone { path: PathBuf },
    #[error(
        "{path}: this mount's daemon does not take network hand-overs (started by an older depsetfs); remount it"
    )]
    NoControlSocket { path: PathBuf },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Run(#[from] RunError),
    #[error(transparent)]
    State(#[from] StateError),
}

/// Runs `argv` chrooted at `mountpoint` with the network recorded; returns its exit code
/// (128 + signal number if a signal ended it).
pub fn chroot(mountpoint: &Path, argv: &[OsString], state: &StateDir) -> Result<i32, ChrootError> {
    if argv.is_empty() {
        return Err(ChrootError::NoCommand);
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(ChrootError::NotRoot);
    }
    let io_err = |path: &Path| {
        let path = path.to_owned();
        move |source| ChrootError::Io { path, source }
    };
    let mp = umount::resolve_mountpoint(mountpoint).map_err(io_err(mountpoint))?;
    let ours = crate::sys::mountinfo::mount_at(&mp)
        .map_err(io_err(&mp))?
        .is_some_and(|info| info.fs_type == FS_TYPE);
    if !ours {
        return Err(ChrootError::NotOurMount { path: mp });
    }
    let Some(record) = state.find_mount(&mp)? else {
        return Err(ChrootError::DaemonGone { path: mp });
    };
    if !umount::daemon_alive(record.pid) {
        return Err(ChrootError::DaemonGone { path: mp });
    }
    let Some(control) = record.control else {
        return Err(ChrootError::NoControlSocket { path: mp });
    };
    let hand_over = HandOver::prepare(&control).map_err(io_err(&control))?;
    let held = HeldCommand::fork(argv, &mp, Path::new("/"), Some(&hand_over), None)?;
    drop(hand_over);
    let pid = held.release()?;
    Ok(wait_exit_code(pid))
}

/// Waits for our child `pid` (retrying on EINTR).
fn wait_exit_code(pid: libc::pid_t) -> i32 {
    loop {
        let mut status = 0;
        // SAFETY: pid is our child; status is a valid out pointer.
        let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
        if waited == pid {
            return crate::launch::run::exit_code(status);
        }
        if waited < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return 1;
        }
    }
}
