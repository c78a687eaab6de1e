//! The /dev/fuse transport: fuser's session (mount options, the INIT handshake, its threads
//! reading /dev/fuse) calls the handlers of `mirror/fs.rs` through [`DevFront`], which only
//! turns fuser's request header into a [`Caller`] and lends fuser's reply types to the
//! handlers through the traits of `replies.rs`. With FUSE over io_uring it stays: INIT, FORGET
//! and INTERRUPT always come this way, and every request does until the ring is registered.

use std::ffi::OsStr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use fuser::{
    CopyFileRangeFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, InitFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate,
    ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyLseek, ReplyOpen, ReplyStatfs,
    ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use super::replies::{
    AttrReply, Caller, CreateReply, DataReply, DirectoryReply, EmptyReply, EntryReply, LseekReply,
    OpenReply, Reply, StatfsReply, WriteReply, XattrReply,
};
use crate::mirror::fs::MirrorFs;
use crate::mirror::io_mode::Backing;

/// The largest write (and so payload) asked of the kernel when the ring is wanted: each ring
/// entry needs a payload buffer this big (fuser's own default is 16 MiB).
pub const URING_MAX_WRITE: u32 = 1 << 20;

/// The filesystem fuser serves: the shared handlers, and whether INIT should ask for FUSE
/// over io_uring.
pub struct DevFront {
    fs: Arc<MirrorFs>,
    want_uring: bool,
    /// Set in INIT: the kernel agreed to FUSE over io_uring.
    uring_granted: Arc<AtomicBool>,
}

impl DevFront {
    pub fn new(fs: Arc<MirrorFs>, want_uring: bool) -> DevFront {
        DevFront {
            fs,
            want_uring,
            uring_granted: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Whether INIT negotiated FUSE over io_uring (read after the handshake).
    pub fn uring_granted(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.uring_granted)
    }
}

fn caller(req: &Request) -> Caller {
    Caller {
        pid: req.pid(),
        uid: req.uid(),
        gid: req.gid(),
    }
}

impl Filesystem for DevFront {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        self.fs.negotiate(config);
        if self.want_uring {
            let granted = config
                .add_capabilities(InitFlags::FUSE_OVER_IO_URING)
                .is_ok();
            if granted {
                let _ = config.set_max_write(URING_MAX_WRITE);
            }
            self.uring_granted.store(granted, Ordering::Release);
        }
        Ok(())
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        self.fs.lookup(&caller(req), parent, name, reply);
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.fs.forget(ino, nlookup);
    }

    fn getattr(&self, req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        self.fs.getattr(&caller(req), ino, fh, reply);
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        crtime: Option<SystemTime>,
        chgtime: Option<SystemTime>,
        bkuptime: Option<SystemTime>,
        flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        self.fs.setattr(
            &caller(req),
            ino,
            mode,
            uid,
            gid,
            size,
            atime,
            mtime,
            ctime,
            fh,
            crtime,
            chgtime,
            bkuptime,
            flags,
            reply,
        );
    }

    fn readlink(&self, req: &Request, ino: INodeNo, reply: ReplyData) {
        self.fs.readlink(&caller(req), ino, reply);
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        self.fs
            .mknod(&caller(req), parent, name, mode, umask, rdev, reply);
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        self.fs
            .mkdir(&caller(req), parent, name, mode, umask, reply);
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.fs.unlink(&caller(req), parent, name, reply);
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.fs.rmdir(&caller(req), parent, name, reply);
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        self.fs
            .symlink(&caller(req), parent, link_name, target, reply);
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        self.fs
            .rename(&caller(req), parent, name, newparent, newname, flags, reply);
    }

    fn link(
        &self,
        req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        self.fs.link(&caller(req), ino, newparent, newname, reply);
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        self.fs.open(&caller(req), ino, flags, reply);
    }

    fn read(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        flags: OpenFlags,
        lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        self.fs.read(
            &caller(req),
            ino,
            fh,
            offset,
            size,
            flags,
            lock_owner,
            reply,
        );
    }

    fn write(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        flags: OpenFlags,
        lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        self.fs.write(
            &caller(req),
            ino,
            fh,
            offset,
            data,
            write_flags,
            flags,
            lock_owner,
            reply,
        );
    }

    fn release(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        flags: OpenFlags,
        lock_owner: Option<LockOwner>,
        flush: bool,
        reply: ReplyEmpty,
    ) {
        self.fs
            .release(&caller(req), ino, fh, flags, lock_owner, flush, reply);
    }

    fn fsync(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.fs.fsync(&caller(req), ino, fh, datasync, reply);
    }

    fn opendir(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        self.fs.opendir(&caller(req), ino, flags, reply);
    }

    fn readdir(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        reply: ReplyDirectory,
    ) {
        self.fs.readdir(&caller(req), ino, fh, offset, reply);
    }

    fn releasedir(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.fs.releasedir(&caller(req), ino, fh, flags, reply);
    }

    fn fsyncdir(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.fs.fsyncdir(&caller(req), ino, fh, datasync, reply);
    }

    fn statfs(&self, req: &Request, ino: INodeNo, reply: ReplyStatfs) {
        self.fs.statfs(&caller(req), ino, reply);
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        position: u32,
        reply: ReplyEmpty,
    ) {
        self.fs
            .setxattr(&caller(req), ino, name, value, flags, position, reply);
    }

    fn getxattr(&self, req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        self.fs.getxattr(&caller(req), ino, name, size, reply);
    }

    fn listxattr(&self, req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        self.fs.listxattr(&caller(req), ino, size, reply);
    }

    fn removexattr(&self, req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.fs.removexattr(&caller(req), ino, name, reply);
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        self.fs
            .create(&caller(req), parent, name, mode, umask, flags, reply);
    }

    fn fallocate(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        self.fs
            .fallocate(&caller(req), ino, fh, offset, length, mode, reply);
    }

    fn lseek(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        self.fs.lseek(&caller(req), ino, fh, offset, whence, reply);
    }

    fn copy_file_range(
        &self,
        req: &Request,
        ino_in: INodeNo,
        fh_in: FileHandle,
        offset_in: u64,
        ino_out: INodeNo,
        fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        self.fs.copy_file_range(
            &caller(req),
            ino_in,
            fh_in,
            offset_in,
            ino_out,
            fh_out,
            offset_out,
            len,
            flags,
            reply,
        );
    }
}

macro_rules! fuser_reply_with_error {
    ($($reply:ty),* $(,)?) => {
        $(impl Reply for $reply {
            fn error(self, errno: Errno) {
                <$reply>::error(self, errno)
            }
        })*
    };
}

fuser_reply_with_error!(
    ReplyAttr,
    ReplyCreate,
    ReplyData,
    ReplyDirectory,
    ReplyEmpty,
    ReplyEntry,
    ReplyLseek,
    ReplyOpen,
    ReplyStatfs,
    ReplyWrite,
    ReplyXattr,
);

impl EntryReply for ReplyEntry {
    fn entry(
        self,
        entry_ttl: &Duration,
        attr: &FileAttr,
        attr_ttl: &Duration,
        generation: Generation,
    ) {
        // fuser takes the attribute time-out first.
        self.entry_with_ttls(attr_ttl, entry_ttl, attr, generation)
    }
}

impl AttrReply for ReplyAttr {
    fn attr(self, ttl: &Duration, attr: &FileAttr) {
        ReplyAttr::attr(self, ttl, attr)
    }
}

impl DataReply for ReplyData {
    fn data(self, data: &[u8]) {
        ReplyData::data(self, data)
    }
}

impl EmptyReply for ReplyEmpty {
    fn ok(self) {
        ReplyEmpty::ok(self)
    }
}

impl OpenReply for ReplyOpen {
    fn opened(self, fh: FileHandle, flags: FopenFlags, backing: Option<&Backing>) {
        match backing {
            Some(backing) => {
                // SAFETY: the id is registered on this connection; `into_raw` gives it back
                // without closing it (the Backing does, when the last open is released).
                let id = unsafe { self.wrap_backing(backing.id()) };
                self.opened_passthrough(fh, flags, &id);
                id.into_raw();
            }
            None => ReplyOpen::opened(self, fh, flags),
        }
    }
}

impl CreateReply for ReplyCreate {
    fn created(
        self,
        entry_ttl: &Duration,
        attr: &FileAttr,
        _attr_ttl: &Duration,
        generation: Generation,
        fh: FileHandle,
        flags: FopenFlags,
        backing: Option<&Backing>,
    ) {
        match backing {
            Some(backing) => {
                // SAFETY: as in `opened`.
                let id = unsafe { self.wrap_backing(backing.id()) };
                self.created_passthrough(entry_ttl, attr, generation, fh, flags, &id);
                id.into_raw();
            }
            // fuser gives the entry and its attributes one time-out.
            None => ReplyCreate::created(self, entry_ttl, attr, generation, fh, flags),
        }
    }
}

impl WriteReply for ReplyWrite {
    fn written(self, size: u32) {
        ReplyWrite::written(self, size)
    }
}

impl StatfsReply for ReplyStatfs {
    fn statfs(self, st: &libc::statvfs) {
        ReplyStatfs::statfs(
            self,
            st.f_blocks,
            st.f_bfree,
            st.f_bavail,
            st.f_files,
            st.f_ffree,
            st.f_bsize as u32,
            st.f_namemax as u32,
            st.f_frsize as u32,
        )
    }
}

impl XattrReply for ReplyXattr {
    fn size(self, size: u32) {
        ReplyXattr::size(self, size)
    }

    fn data(self, data: &[u8]) {
        ReplyXattr::data(self, data)
    }
}

impl LseekReply for ReplyLseek {
    fn offset(self, offset: i64) {
        ReplyLseek::offset(self, offset)
    }
}

impl DirectoryReply for ReplyDirectory {
    fn add(&mut self, ino: INodeNo, offset: u64, kind: FileType, name: &OsStr) -> bool {
        ReplyDirectory::add(self, ino, offset, kind, name)
    }

    fn ok(self) {
        ReplyDirectory::ok(self)
    }
}
