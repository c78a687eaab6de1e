//! The open-handle table: what the kernel's file handle numbers stand for. An open or opendir
//! reopens the node's `O_PATH` descriptor for I/O (without the flags the daemon must not pass
//! to its own open), asks the node how the kernel does I/O on it ([`OpenMode`]: page cache,
//! direct or passthrough), and keeps the descriptor under a fresh number until release. A
//! handle holds its node, so a page-cached open counts against the node's cache state until
//! the handle's last user drops it (a read in flight may outlive the release).

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use fuser::{Errno, FileHandle};

use crate::mirror::io_mode::Backing;

use super::errno;
use crate::mirror::inodes::{Node, NumberMap};
use crate::mirror::io_mode::{FileStamp, OpenMode};
use crate::record::intent;
use crate::sys;

/// An open file or directory handle.
pub(super) struct OpenHandle {
    pub(super) fd: OwnedFd,
    node: Arc<Node>,
    mode: OpenMode,
}

impl Drop for OpenHandle {
    fn drop(&mut self) {
        if matches!(self.mode, OpenMode::Cached { .. }) {
            self.node
                .io
                .lock()
                .expect("node io lock poisoned")
                .release_cached();
        }
    }
}

/// The open handles by number.
pub(super) struct Handles {
    open: NumberMap<u64, Arc<OpenHandle>>,
    next: AtomicU64,
}

impl Handles {
    pub(super) fn new() -> Handles {
        Handles {
            open: NumberMap::default(),
            next: AtomicU64::new(1),
        }
    }

    pub(super) fn get(&self, fh: FileHandle) -> Result<Arc<OpenHandle>, Errno> {
        self.open
            .get(&fh.0)
            .map(|handle| Arc::clone(&handle))
            .ok_or(Errno::EBADF)
    }

    pub(super) fn add(&self, fd: OwnedFd, node: Arc<Node>, mode: OpenMode) -> FileHandle {
        let number = self.next.fetch_add(1, Ordering::Relaxed);
        self.open
            .insert(number, Arc::new(OpenHandle { fd, node, mode }));
        FileHandle(number)
    }

    /// Forgets a handle; its descriptor closes when its last user drops it.
    pub(super) fn remove(&self, fh: FileHandle) {
        self.open.remove(&fh.0);
    }
}

/// Opens the file of `node` for I/O and decides how the kernel does I/O on it.
pub(super) fn open_file(
    node: &Arc<Node>,
    flags: i32,
    passthrough_active: bool,
    make_backing: impl FnOnce(&OwnedFd) -> std::io::Result<Backing>,
) -> Result<(OwnedFd, OpenMode), Errno> {
    let node_fd = node.fd().map_err(errno)?;
    let fd = sys::reopen(node_fd.raw(), underlying_open_flags(flags)).map_err(errno)?;
    let stamp = FileStamp::of(&sys::fstat(fd.as_raw_fd()).map_err(errno)?);
    let mode = node.io.lock().expect("node io lock poisoned").open(
        passthrough_active,
        flags,
        stamp,
        || make_backing(&fd),
    );
    Ok((fd, mode))
}

/// Open flags the daemon must not pass to its own open of the underlying file.
pub(super) fn underlying_open_flags(flags: i32) -> i32 {
    // O_DIRECT would demand aligned buffers of the daemon; the kernel already bypasses the page
    // cache for the caller when the handle is marked FOPEN_DIRECT_IO.
    // O_NOFOLLOW: the kernel already refused symlinks; the daemon reopens through the
    // /proc/self/fd magic link, which O_NOFOLLOW would reject with ELOOP.
    flags
        & !(libc::O_CREAT
            | libc::O_EXCL
            | libc::O_NOCTTY
            | libc::O_NOFOLLOW
            | libc::O_DIRECT
            | intent::KERNEL_FMODE_EXEC)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_and_create_flags_never_reach_the_underlying_open() {
        let flags = libc::O_RDONLY
            | intent::KERNEL_FMODE_EXEC
            | libc::O_CREAT
            | libc::O_DIRECT
            | libc::O_NOFOLLOW;
        assert_eq!(underlying_open_flags(flags), libc::O_RDONLY);
    }
}
