//! Choosing how the kernel does I/O on each open file: through the daemon, or straight to the
//! underlying file (kernel FUSE passthrough, Linux >= 6.9; the default).
//!
//! With passthrough, reads and mmaps of a file bypass the daemon entirely; its opens (with their
//! flags, so exec and write intent) are still recorded, but byte counts of passthrough reads
//! are not. The kernel allows one backing file per inode at a time, refuses to mix passthrough
//! opens with page-cached opens of the same inode, and requires every open of an inode whose
//! backing file is live to be a passthrough open too (fs/fuse/iomode.c, fuse_file_io_open;
//! anything else fails with EIO in the caller). The registered backing file must not be open
//! for writing, or exec of that binary would fail with ETXTBSY, so only a read-only open creates
//! one; a later writable open while it is live is passthrough as well (the kernel opens the
//! backing path anew with that open's flags, so its writes go to the file directly: its open is
//! recorded with write intent, its writes and byte counts are not). A read-only open while
//! cached writers are open stays cached. [`IoMode`] tracks, per inode, the live backing file
//! and the number of cached opens.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Weak};

use fuser::FopenFlags;

/// `FUSE_DEV_IOC_BACKING_CLOSE`: `_IOW(229, 2, uint32_t)`.
const FUSE_DEV_IOC_BACKING_CLOSE: libc::c_ulong = 0x4004_e502;

/// A file registered with the kernel as the backing file of passthrough opens (its id goes in
/// the open reply, whichever transport carries it); unregistered when the last open using it
/// is released and this is dropped.
#[derive(Debug)]
pub struct Backing {
    device: Arc<OwnedFd>,
    id: u32,
}

impl Backing {
    /// Registers `file` on the connection of `device` (a descriptor of its /dev/fuse).
    pub fn open(device: &Arc<OwnedFd>, file: BorrowedFd<'_>) -> std::io::Result<Backing> {
        let id = fuser::BackingId::create_raw(device.as_fd(), file)?;
        Ok(Backing {
            device: Arc::clone(device),
            id,
        })
    }

    pub fn id(&self) -> u32 {
        self.id
    }
}

#[cfg(test)]
impl Backing {
    /// A backing file as a failed registration returns it.
    fn for_test(errno: i32) -> std::io::Result<Backing> {
        Err(std::io::Error::from_raw_os_error(errno))
    }

    /// A backing id on no connection (its close is refused harmlessly by a descriptor that is
    /// not /dev/fuse).
    fn detached() -> Backing {
        let device = std::fs::File::open("/dev/null").expect("/dev/null");
        Backing {
            device: Arc::new(OwnedFd::from(device)),
            id: 0,
        }
    }
}

impl Drop for Backing {
    fn drop(&mut self) {
        // SAFETY: the ioctl reads one u32 from a valid pointer; a failure (the connection is
        // gone, and the id with it) leaves nothing to undo.
        unsafe {
            libc::ioctl(
                self.device.as_raw_fd(),
                FUSE_DEV_IOC_BACKING_CLOSE,
                &self.id as *const u32,
            );
        }
    }
}

/// Per-inode I/O state, guarded by the node's mutex.
#[derive(Debug, Default)]
pub struct IoMode {
    backing: Weak<Backing>,
    cached_opens: u32,
    /// The file as it was at the last cached open: if it is unchanged at the next one, the
    /// kernel may keep its cached pages (open-to-close coherence, as NFS gives).
    cache_stamp: Option<FileStamp>,
}

/// What tells whether a file changed between two opens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileStamp {
    mtime: (i64, i64),
    ctime: (i64, i64),
    size: i64,
}

impl FileStamp {
    pub fn of(stat: &libc::stat) -> FileStamp {
        FileStamp {
            mtime: (stat.st_mtime, stat.st_mtime_nsec),
            ctime: (stat.st_ctime, stat.st_ctime_nsec),
            size: stat.st_size,
        }
    }
}

/// What an open was granted.
#[derive(Debug)]
pub enum OpenMode {
    /// Reads and mmaps go to this backing file in the kernel.
    Passthrough(Arc<Backing>),
    /// Page-cached I/O through the daemon; counted in [`IoMode`] until released. The kernel
    /// keeps pages cached by earlier opens only if the file did not change since.
    Cached { keep_cache: bool },
    /// Uncached I/O through the daemon (O_DIRECT without a live backing file).
    Direct,
}

impl OpenMode {
    /// The backing file of a passthrough open.
    pub fn backing(&self) -> Option<Arc<Backing>> {
        match self {
            OpenMode::Passthrough(backing) => Some(Arc::clone(backing)),
            _ => None,
        }
    }

    /// Flags of the open reply (besides FOPEN_PASSTHROUGH, which fuser adds itself). Every
    /// open says FOPEN_NOFLUSH: the daemon has nothing to do on close(2) (no writeback cache,
    /// POSIX locks stay in the kernel), so the FLUSH round trip that would block every close
    /// is skipped; RELEASE still comes, asynchronously.
    pub fn reply_flags(&self) -> FopenFlags {
        FopenFlags::FOPEN_NOFLUSH
            | match self {
                OpenMode::Cached { keep_cache: true } => FopenFlags::FOPEN_KEEP_CACHE,
                OpenMode::Cached { keep_cache: false } => FopenFlags::empty(),
                OpenMode::Direct => FopenFlags::FOPEN_DIRECT_IO,
                OpenMode::Passthrough(_) => FopenFlags::empty(),
            }
    }
}

/// Whether an open with these flags only reads.
pub fn read_only(flags: i32) -> bool {
    flags & libc::O_ACCMODE == libc::O_RDONLY && flags & libc::O_TRUNC == 0
}

impl IoMode {
    /// Decides the mode of a new open. `make_backing` registers a backing file with the kernel;
    /// it is called only when passthrough is chosen and no backing file is alive.
    pub fn open(
        &mut self,
        passthrough_enabled: bool,
        flags: i32,
        stamp: FileStamp,
        make_backing: impl FnOnce() -> std::io::Result<Backing>,
    ) -> OpenMode {
        // While a backing file is live the kernel accepts passthrough opens only, whatever
        // their flags (O_DIRECT and writers included).
        if let Some(backing) = self.backing.upgrade() {
            return OpenMode::Passthrough(backing);
        }
        if flags & libc::O_DIRECT != 0 {
            return OpenMode::Direct;
        }
        if passthrough_enabled && read_only(flags) && self.cached_opens == 0 {
            if let Ok(backing) = make_backing() {
                let backing = Arc::new(backing);
                self.backing = Arc::downgrade(&backing);
                return OpenMode::Passthrough(backing);
            }
        }
        self.cached_opens += 1;
        let keep_cache = self.cache_stamp == Some(stamp);
        self.cache_stamp = Some(stamp);
        OpenMode::Cached { keep_cache }
    }

    /// A cached open was released.
    pub fn release_cached(&mut self) {
        self.cached_opens = self.cached_opens.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAMP: FileStamp = FileStamp {
        mtime: (1, 0),
        ctime: (1, 0),
        size: 10,
    };

    fn no_backing() -> std::io::Result<Backing> {
        Err(std::io::Error::from_raw_os_error(libc::EPERM))
    }

    #[test]
    fn without_passthrough_every_open_is_cached_and_counted() {
        let mut io = IoMode::default();
        assert!(matches!(
            io.open(false, libc::O_RDONLY, STAMP, no_backing),
            OpenMode::Cached { .. }
        ));
        assert!(matches!(
            io.open(false, libc::O_RDWR, STAMP, no_backing),
            OpenMode::Cached { .. }
        ));
        assert_eq!(io.cached_opens, 2);
        io.release_cached();
        io.release_cached();
        io.release_cached();
        assert_eq!(io.cached_opens, 0);
    }

    #[test]
    fn cached_pages_are_kept_only_while_the_file_is_unchanged() {
        let mut io = IoMode::default();
        let changed = FileStamp { size: 11, ..STAMP };
        let keeps = |mode: OpenMode| matches!(mode, OpenMode::Cached { keep_cache: true });
        assert!(!keeps(io.open(false, libc::O_RDONLY, STAMP, no_backing)));
        assert!(keeps(io.open(false, libc::O_RDONLY, STAMP, no_backing)));
        assert!(!keeps(io.open(false, libc::O_RDONLY, changed, no_backing)));
        assert!(keeps(io.open(false, libc::O_RDONLY, changed, no_backing)));
    }

    #[test]
    fn o_direct_is_never_cached() {
        let mut io = IoMode::default();
        let mode = io.open(true, libc::O_RDONLY | libc::O_DIRECT, STAMP, no_backing);
        assert!(matches!(mode, OpenMode::Direct));
        assert_eq!(io.cached_opens, 0);
    }

    #[test]
    fn a_failed_backing_falls_back_to_cached() {
        let mut io = IoMode::default();
        assert!(matches!(
            io.open(true, libc::O_RDONLY, STAMP, no_backing),
            OpenMode::Cached { .. }
        ));
    }

    /// The kernel fails any open of an inode with a live backing file that is not passthrough
    /// (a writer got EIO while a reader was open).
    #[test]
    fn every_open_shares_a_live_backing_file() {
        let mut io = IoMode::default();
        let reader = io.open(true, libc::O_RDONLY, STAMP, || {
            Backing::for_test(libc::EPERM)
        });
        // The test cannot register a backing file with a kernel: check the no-backing path,
        // then the sharing rule with a backing planted by hand.
        assert!(matches!(reader, OpenMode::Cached { .. }));
        io.release_cached();
        let backing = Arc::new(Backing::detached());
        io.backing = Arc::downgrade(&backing);
        for flags in [
            libc::O_WRONLY | libc::O_APPEND,
            libc::O_RDWR,
            libc::O_RDONLY | libc::O_DIRECT,
            libc::O_WRONLY | libc::O_TRUNC,
        ] {
            let mode = io.open(true, flags, STAMP, no_backing);
            assert!(
                matches!(&mode, OpenMode::Passthrough(b) if Arc::ptr_eq(b, &backing)),
                "flags {flags:#o}: {mode:?}"
            );
        }
        assert_eq!(io.cached_opens, 0);
        drop(backing);
        assert!(matches!(
            io.open(true, libc::O_RDWR, STAMP, no_backing),
            OpenMode::Cached { .. }
        ));
    }

    #[test]
    fn truncating_opens_are_not_read_only() {
        assert!(read_only(libc::O_RDONLY));
        assert!(!read_only(libc::O_RDONLY | libc::O_TRUNC));
        assert!(!read_only(libc::O_WRONLY));
    }
}
