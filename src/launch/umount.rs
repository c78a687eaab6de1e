//! `depsetfs umount`: unmounts a mirror, waits for its daemon to flush its log and exit, and
//! cleans up after a daemon that died (aborting the FUSE connection so nothing can hang on it).
//! Also whether a daemon is alive, and resolving a mountpoint without statting through it,
//! which `chroot` uses too.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::mount::{FS_TYPE, MountError, io_err, is_root};
use crate::state::StateDir;
use crate::sys;
use crate::sys::mountinfo::mount_at;

/// How many symlinks `resolve_mountpoint` follows, as the kernel's path walk (ELOOP after 40).
const MAX_SYMLINKS: usize = 40;

/// An absolute, symlink-free path for `path` that never stats through the last component
/// (which may be a FUSE mount whose daemon is stuck, where a stat would hang): the parent is
/// canonicalized, and the last component is only `readlink`ed, which answers EINVAL for a
/// directory (a mount root included) without asking its filesystem. A symlink to a mountpoint
/// is followed to it.
pub fn resolve_mountpoint(path: &Path) -> io::Result<PathBuf> {
    let mut current = std::path::absolute(path)?;
    for _ in 0..MAX_SYMLINKS {
        let (Some(parent), Some(name)) = (current.parent(), current.file_name()) else {
            // `/` or a path ending in `..`: a directory above the last component.
            return std::fs::canonicalize(&current);
        };
        let resolved = std::fs::canonicalize(parent)?.join(name);
        match std::fs::read_link(&resolved) {
            // Relative targets are relative to the link's directory; `absolute` keeps `..`,
            // which the next round's canonicalize of the parent resolves.
            Ok(target) => match resolved.parent() {
                Some(dir) => current = std::path::absolute(dir.join(target))?,
                None => return Ok(resolved),
            },
            // EINVAL: not a symlink; anything else (ENOENT, ENOTCONN): nothing to follow.
            Err(_) => return Ok(resolved),
        }
    }
    Err(io::Error::from_raw_os_error(libc::ELOOP))
}

/// What `umount` found and did.
#[derive(Debug)]
pub struct UnmountReport {
    pub log: Option<PathBuf>,
    pub daemon_was_alive: bool,
}

pub fn unmount(mountpoint: &Path, state: &StateDir) -> Result<UnmountReport, MountError> {
    if !is_root() {
        return Err(MountError::NotRoot);
    }
    let mp = resolve_mountpoint(mountpoint).map_err(|e| MountError::BadMountpoint {
        path: mountpoint.to_owned(),
        reason: e.to_string(),
    })?;
    let info = mount_at(&mp).map_err(io_err("read mounts for", &mp))?;
    let Some(info) = info.filter(|m| m.fs_type == FS_TYPE) else {
        return Err(MountError::NotOurMount { path: mp });
    };
    let record = state.find_mount(&mp)?;
    let daemon = record
        .as_ref()
        .map(|r| r.pid)
        .filter(|&pid| daemon_alive(pid));
    if daemon.is_none() {
        // Nobody answers requests any more: abort the connection so nothing blocks on it.
        abort_connection(&info.device);
    }
    if sys::umount(&mp, 0).is_err() {
        sys::umount(&mp, libc::MNT_DETACH).map_err(io_err("unmount", &mp))?;
    }
    if let Some(pid) = daemon {
        stop_daemon(pid);
    }
    state.forget_mount(&mp);
    Ok(UnmountReport {
        log: record.map(|r| r.log),
        daemon_was_alive: daemon.is_some(),
    })
}

/// Whether `pid` is a running depsetfs daemon (`__serve`).
pub fn daemon_alive(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|cmdline| cmdline.split(|&b| b == 0).any(|arg| arg == b"__serve"))
        .unwrap_or(false)
}

/// Waits for the daemon to flush and exit after the unmount; signals it if it does not.
fn stop_daemon(pid: u32) {
    if wait_gone(pid, Duration::from_secs(10)) {
        return;
    }
    // SAFETY: kill has no memory preconditions; pid is the daemon recorded by our registry.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
    if wait_gone(pid, Duration::from_secs(5)) {
        return;
    }
    // SAFETY: as above.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    wait_gone(pid, Duration::from_secs(5));
}

fn wait_gone(pid: u32, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if !daemon_alive(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    !daemon_alive(pid)
}

/// Writes to /sys/fs/fuse/connections/N/abort for the connection of a mount (`major:minor`),
/// mounting fusectl first if needed.
fn abort_connection(device: &str) {
    let connections = Path::new("/sys/fs/fuse/connections");
    if !connections.join(".").exists()
        || std::fs::read_dir(connections).map_or(true, |mut d| d.next().is_none())
    {
        let _ = sys::mount("fusectl", connections, "fusectl", 0, None);
    }
    let Some((major, minor)) = device.split_once(':') else {
        return;
    };
    let (Ok(major), Ok(minor)) = (major.parse::<u32>(), minor.parse::<u32>()) else {
        return;
    };
    let number = (major << 20) | minor;
    let _ = std::fs::write(connections.join(number.to_string()).join("abort"), "1");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountpoints_resolve_through_symlinks_of_the_path_and_its_parents()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = std::env::temp_dir().join(format!("depsetfs-resolve-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("real/mnt"))?;
        std::os::unix::fs::symlink(dir.join("real/mnt"), dir.join("absolute"))?;
        std::os::unix::fs::symlink("real/mnt", dir.join("relative"))?;
        std::os::unix::fs::symlink("relative", dir.join("chained"))?;
        std::os::unix::fs::symlink("real", dir.join("parent"))?;
        std::os::unix::fs::symlink("loop", dir.join("loop"))?;
        let real = std::fs::canonicalize(dir.join("real/mnt"))?;
        for name in ["real/mnt", "absolute", "relative", "chained", "parent/mnt"] {
            assert_eq!(resolve_mountpoint(&dir.join(name))?, real, "{name}");
        }
        // A missing last component is kept as named (umount then says it is not a mount).
        let missing = resolve_mountpoint(&dir.join("parent/missing"))?;
        assert_eq!(missing, real.with_file_name("missing"));
        let looped = resolve_mountpoint(&dir.join("loop")).map_err(|e| e.raw_os_error());
        assert_eq!(looped, Err(Some(libc::ELOOP)));
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }
}
