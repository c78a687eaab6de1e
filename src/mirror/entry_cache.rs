//! Per-process entry caching (`--entry-cache`). The kernel's dentry cache is shared by every
//! process, so caching lookups would hide the lookups of the second process to walk a path.
//! Here the kernel may cache entries, but only while the same process keeps asking: the first
//! request from any other process (before its reply is sent) increments the connection's
//! epoch with a `FUSE_NOTIFY_INC_EPOCH` notification (Linux >= 6.16), which invalidates every
//! cached entry at once, so that process's own walk reaches the daemon again. What can still
//! escape is documented in docs/ARCHITECTURE.md (caching and fidelity).

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};

/// `enum fuse_notify_code`: FUSE_NOTIFY_INC_EPOCH (protocol 7.44).
const FUSE_NOTIFY_INC_EPOCH: i32 = 8;

/// The kernel connection's epoch, bumped on every change of calling process.
pub struct EntryCache {
    device: OwnedFd,
    /// The process (thread group id) of the latest request; 0 before the first.
    last_caller: AtomicU32,
}

impl EntryCache {
    /// Takes a descriptor of the connection's /dev/fuse and checks that the kernel accepts the
    /// epoch notification (before any entry is cached, so the check changes nothing).
    pub fn new(device: OwnedFd) -> io::Result<EntryCache> {
        let cache = EntryCache {
            device,
            last_caller: AtomicU32::new(0),
        };
        cache.invalidate_all()?;
        Ok(cache)
    }

    /// Called before a request of process `caller` is answered. Requests the kernel makes on
    /// its own (pid 0: RELEASE after the last close, FORGET, writeback) walk no path for any
    /// process, so they do not count as a change of caller.
    pub fn turn(&self, caller: u32) {
        if caller == 0 {
            return;
        }
        if self.last_caller.swap(caller, Ordering::AcqRel) != caller {
            // Failing here (the connection is going away) leaves nothing cached to hide.
            let _ = self.invalidate_all();
        }
    }

    fn invalidate_all(&self) -> io::Result<()> {
        // struct fuse_out_header { len, error (the notification code), unique = 0 }.
        let mut header = [0u8; 16];
        header[0..4].copy_from_slice(&16u32.to_ne_bytes());
        header[4..8].copy_from_slice(&FUSE_NOTIFY_INC_EPOCH.to_ne_bytes());
        // SAFETY: valid buffer of the given length.
        let written = unsafe {
            libc::write(
                self.device.as_raw_fd(),
                header.as_ptr().cast(),
                header.len(),
            )
        };
        if written == header.len() as isize {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::FromRawFd;

    /// A pipe stands in for /dev/fuse: every notification is 16 bytes in it.
    fn pipe() -> (OwnedFd, OwnedFd) {
        let mut fds = [0; 2];
        // SAFETY: valid out array; O_NONBLOCK so that an empty read does not hang.
        assert_eq!(
            unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK) },
            0
        );
        // SAFETY: both descriptors were just created and are owned here only.
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
    }

    fn notifications(reader: &OwnedFd) -> usize {
        let mut buf = [0u8; 4096];
        // SAFETY: valid buffer.
        let n = unsafe { libc::read(reader.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        n.max(0) as usize / 16
    }

    #[test]
    fn only_a_change_of_process_drops_the_entries() {
        let (reader, writer) = pipe();
        let cache = EntryCache::new(writer).expect("the start-up check writes one notification");
        assert_eq!(notifications(&reader), 1);
        cache.turn(100);
        cache.turn(100);
        assert_eq!(
            notifications(&reader),
            1,
            "first caller: one drop, then none"
        );
        cache.turn(0);
        cache.turn(100);
        assert_eq!(
            notifications(&reader),
            0,
            "the kernel's own requests change nothing"
        );
        cache.turn(200);
        cache.turn(100);
        assert_eq!(
            notifications(&reader),
            2,
            "every change of process drops them"
        );
    }
}
