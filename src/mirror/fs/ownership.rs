//! The ownership hand-over after a create. The daemon runs as root, so every object it
//! creates for a caller (create, mknod, mkdir, symlink) is root's until handed over: right
//! after creation, by its descriptor (fchownat on the new file, never by path), it goes to the
//! caller's uid, and to the caller's gid unless the directory is setgid, where the group the
//! underlying filesystem gave it (the directory's) must stay. chown clears the setuid and
//! setgid bits of a regular file; the creator asked for them, so they are set again.

use fuser::Errno;

use super::errno;
use crate::mirror::inodes::Node;
use crate::sys;

/// Gives the just-created object open as `fd` in `parent` to the caller `uid`/`gid`.
pub(super) fn hand_to_caller(uid: u32, gid: u32, parent: &Node, fd: i32) -> Result<(), Errno> {
    let dir = parent.fd().map_err(errno)?;
    let parent_stat = sys::fstat(dir.raw()).map_err(errno)?;
    let gid = if parent_stat.st_mode & libc::S_ISGID != 0 {
        u32::MAX
    } else {
        gid
    };
    if uid == 0 && (gid == u32::MAX || gid == 0) {
        return Ok(());
    }
    let before = sys::fstat(fd).map_err(errno)?;
    sys::chown_fd(fd, uid, gid).map_err(errno)?;
    let special = before.st_mode & (libc::S_ISUID | libc::S_ISGID);
    if special != 0 && before.st_mode & libc::S_IFMT == libc::S_IFREG {
        sys::chmod_fd(fd, before.st_mode & 0o7777).map_err(errno)?;
    }
    Ok(())
}
