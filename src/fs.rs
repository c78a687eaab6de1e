//! The operation handlers: a passthrough FUSE filesystem that mirrors a source tree and records
//! every request.
//!
//! Each handler resolves its node(s) in the [`InodeTable`], performs the operation on the
//! underlying file with an `*at()` call relative to the node's `O_PATH` descriptor (never by
//! path), answers the kernel, and then records one [`Access`] with the calling process, the
//! mirror path, the outcome and the open intent. Permission checks are the kernel's
//! (`default_permissions`); the daemon runs as root, so objects it creates are handed to the
//! caller's uid/gid right after creation (the group stays the directory's in a setgid
//! directory, as the underlying filesystem set it). Attribute and entry timeouts are zero by
//! default so every process's lookups and stats reach the daemon and are attributed.

use std::ffi::OsStr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dashmap::DashMap;
use fuser::{
    BackingId, CopyFileRangeFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags,
    Generation, INodeNo, InitFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr,
    ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyLseek, ReplyOpen,
    ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use crate::entry_cache::EntryCache;
use crate::event::{Access, FileKind, Op, intent, now_ns};
use crate::inodes::{FileKey, InodeTable, Node};
use crate::passthrough::{FileStamp, OpenMode};
use crate::process::ProcessTracker;
use crate::recorder::Recorder;
use crate::sys::{self, XattrAnswer};

thread_local! {
    /// The read buffer of each request thread (see [`MirrorFs::read`]).
    static READ_BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// How long the kernel may cache entries and attributes. Entries are cached only with
/// `--entry-cache` (and then only while one process keeps asking), so every path lookup of
/// every process reaches the daemon; zero attribute time-outs also send every permission check
/// and stat (fidelity "full"). See docs/ARCHITECTURE.md, caching and fidelity.
#[derive(Clone, Copy, Debug, Default)]
pub struct CachePolicy {
    pub entry_ttl: Duration,
    pub attr_ttl: Duration,
    /// Ask the kernel for FUSE passthrough: read-only opens then read and mmap the underlying
    /// file directly (their opens are still recorded; their byte counts are not).
    pub passthrough: bool,
}

/// A lookup answer that says "no such entry" and may be cached (node 0, FUSE's negative entry).
fn negative_entry() -> FileAttr {
    FileAttr {
        ino: INodeNo(0),
        size: 0,
        blocks: 0,
        atime: UNIX_EPOCH,
        mtime: UNIX_EPOCH,
        ctime: UNIX_EPOCH,
        crtime: UNIX_EPOCH,
        kind: FileType::RegularFile,
        perm: 0,
        nlink: 0,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 0,
        flags: 0,
    }
}

/// An open file or directory handle.
struct OpenHandle {
    fd: OwnedFd,
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

/// The mirror: inode table, open handles, and where events go.
pub struct MirrorFs {
    inodes: InodeTable,
    handles: DashMap<u64, Arc<OpenHandle>>,
    next_handle: AtomicU64,
    root_dev: u64,
    cache: CachePolicy,
    /// Whether the kernel agreed to passthrough (set in init).
    passthrough_active: bool,
    recorder: Recorder,
    tracker: Arc<ProcessTracker>,
    /// Entries cached per process (`--entry-cache`), when the kernel supports it.
    entry_cache: Option<EntryCache>,
}

/// What a handler reports to the recorder about one request.
struct Event<'a> {
    op: Op,
    path: &'a [u8],
    target: Option<Vec<u8>>,
    errno: i32,
    intent: u32,
    kind: FileKind,
    bytes: u64,
}

impl<'a> Event<'a> {
    fn new(op: Op, path: &'a [u8]) -> Event<'a> {
        Event {
            op,
            path,
            target: None,
            errno: 0,
            intent: 0,
            kind: FileKind::Unknown,
            bytes: 0,
        }
    }

    fn outcome<T>(mut self, result: &Result<T, Errno>) -> Self {
        if let Err(errno) = result {
            self.errno = i32::from(*errno);
        }
        self
    }

    fn kind(mut self, kind: FileKind) -> Self {
        self.kind = kind;
        self
    }

    fn intent(mut self, intent: u32) -> Self {
        self.intent = intent;
        self
    }

    fn bytes(mut self, bytes: u64) -> Self {
        self.bytes = bytes;
        self
    }

    fn target(mut self, target: Vec<u8>) -> Self {
        self.target = Some(target);
        self
    }
}

fn errno(err: std::io::Error) -> Errno {
    Errno::from(err)
}

/// `parent/name` as a mirror path.
fn child_path(parent: &[u8], name: &OsStr) -> Vec<u8> {
    let name = name.as_bytes();
    let mut path = Vec::with_capacity(parent.len() + 1 + name.len());
    path.extend_from_slice(parent);
    if parent.last() != Some(&b'/') {
        path.push(b'/');
    }
    path.extend_from_slice(name);
    path
}

fn system_time(secs: i64, nsecs: i64) -> SystemTime {
    let nanos = Duration::from_nanos(nsecs.clamp(0, 999_999_999) as u64);
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs as u64) + nanos
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs()) + nanos
    }
}

fn file_type(mode: u32) -> FileType {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => FileType::Directory,
        libc::S_IFLNK => FileType::Symlink,
        libc::S_IFIFO => FileType::NamedPipe,
        libc::S_IFSOCK => FileType::Socket,
        libc::S_IFCHR => FileType::CharDevice,
        libc::S_IFBLK => FileType::BlockDevice,
        _ => FileType::RegularFile,
    }
}

fn dirent_type(d_type: u8) -> FileType {
    match d_type {
        libc::DT_DIR => FileType::Directory,
        libc::DT_LNK => FileType::Symlink,
        libc::DT_FIFO => FileType::NamedPipe,
        libc::DT_SOCK => FileType::Socket,
        libc::DT_CHR => FileType::CharDevice,
        libc::DT_BLK => FileType::BlockDevice,
        _ => FileType::RegularFile,
    }
}

fn timespec(time: Option<TimeOrNow>) -> libc::timespec {
    match time {
        None => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        Some(TimeOrNow::Now) => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_NOW,
        },
        Some(TimeOrNow::SpecificTime(time)) => match time.duration_since(UNIX_EPOCH) {
            Ok(since) => libc::timespec {
                tv_sec: since.as_secs() as libc::time_t,
                tv_nsec: since.subsec_nanos() as libc::c_long,
            },
            Err(before) => {
                let before = before.duration();
                libc::timespec {
                    tv_sec: -(before.as_secs() as libc::time_t) - 1,
                    tv_nsec: (1_000_000_000 - before.subsec_nanos()) as libc::c_long,
                }
            }
        },
    }
}

/// Open flags the daemon must not pass to its own open of the underlying file.
fn underlying_open_flags(flags: i32) -> i32 {
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

impl MirrorFs {
    pub fn new(
        root_fd: OwnedFd,
        cache: CachePolicy,
        recorder: Recorder,
        tracker: Arc<ProcessTracker>,
    ) -> std::io::Result<MirrorFs> {
        // Nodes hold descriptors up to half the limit (then file handles): use all we may.
        sys::raise_open_file_limit();
        let root_stat = sys::fstat(root_fd.as_raw_fd())?;
        Ok(MirrorFs {
            inodes: InodeTable::new(root_fd, &root_stat),
            handles: DashMap::new(),
            next_handle: AtomicU64::new(1),
            root_dev: root_stat.st_dev,
            cache,
            passthrough_active: false,
            recorder,
            tracker,
            entry_cache: None,
        })
    }

    /// Lets the kernel cache entries while one process keeps asking (see [`EntryCache`]).
    pub fn cache_entries_per_process(&mut self, cache: EntryCache, ttl: Duration) {
        self.entry_cache = Some(cache);
        self.cache.entry_ttl = ttl;
    }

    /// Every handler starts here: a request from another process than the last one drops
    /// the kernel's cached entries before anything is answered.
    fn caller_turn(&self, req: &Request) {
        if let Some(cache) = &self.entry_cache {
            cache.turn(self.tracker.identify(req.pid()).pid);
        }
    }

    fn record(&self, req: &Request, event: Event<'_>) {
        let caller = self.tracker.identify(req.pid());
        let now = now_ns();
        self.recorder.access(Access {
            pid: caller.pid,
            tid: caller.tid,
            start: caller.start,
            op: event.op,
            path: event.path.to_vec(),
            target: event.target,
            errno: event.errno,
            intent: event.intent,
            kind: event.kind,
            count: 1,
            bytes: event.bytes,
            first_ns: now,
            last_ns: now,
        });
    }

    fn node(&self, number: INodeNo) -> Result<Arc<Node>, Errno> {
        self.inodes.get(number.0).ok_or(Errno::ESTALE)
    }

    fn generation_of(&self, number: u64) -> u64 {
        self.inodes.get(number).map_or(0, |node| node.generation)
    }

    fn handle(&self, fh: FileHandle) -> Result<Arc<OpenHandle>, Errno> {
        self.handles
            .get(&fh.0)
            .map(|handle| Arc::clone(&handle))
            .ok_or(Errno::EBADF)
    }

    fn add_handle(&self, fd: OwnedFd, node: Arc<Node>, mode: OpenMode) -> FileHandle {
        let number = self.next_handle.fetch_add(1, Ordering::Relaxed);
        self.handles
            .insert(number, Arc::new(OpenHandle { fd, node, mode }));
        FileHandle(number)
    }

    /// Opens the file of `node` for I/O and decides how the kernel does I/O on it.
    fn open_file(
        &self,
        node: &Arc<Node>,
        flags: i32,
        make_backing: impl FnOnce(&OwnedFd) -> std::io::Result<BackingId>,
    ) -> Result<(OwnedFd, OpenMode), Errno> {
        let node_fd = node.fd().map_err(errno)?;
        let fd = sys::reopen(node_fd.raw(), underlying_open_flags(flags)).map_err(errno)?;
        let stamp = FileStamp::of(&sys::fstat(fd.as_raw_fd()).map_err(errno)?);
        let mode = node.io.lock().expect("node io lock poisoned").open(
            self.passthrough_active,
            flags,
            stamp,
            || make_backing(&fd),
        );
        Ok((fd, mode))
    }

    fn attr(&self, stat: &libc::stat) -> FileAttr {
        FileAttr {
            ino: INodeNo(self.inodes.number_of(FileKey::of(stat))),
            size: stat.st_size as u64,
            blocks: stat.st_blocks as u64,
            atime: system_time(stat.st_atime, stat.st_atime_nsec),
            mtime: system_time(stat.st_mtime, stat.st_mtime_nsec),
            ctime: system_time(stat.st_ctime, stat.st_ctime_nsec),
            crtime: UNIX_EPOCH,
            kind: file_type(stat.st_mode),
            perm: (stat.st_mode & 0o7777) as u16,
            nlink: stat.st_nlink as u32,
            uid: stat.st_uid,
            gid: stat.st_gid,
            rdev: stat.st_rdev as u32,
            blksize: stat.st_blksize as u32,
            flags: 0,
        }
    }

    fn node_attr(&self, node: &Node) -> Result<FileAttr, Errno> {
        let node_fd = node.fd().map_err(errno)?;
        let stat = sys::fstat(node_fd.raw()).map_err(errno)?;
        Ok(self.attr(&stat))
    }

    /// Looks `name` up under `parent` and registers a kernel reference to it.
    fn lookup_child(
        &self,
        parent: &Node,
        name: &OsStr,
        path: &[u8],
    ) -> Result<(u64, FileAttr), Errno> {
        // Most lookups are the kernel revalidating a node it holds (entry timeout 0): a stat is
        // enough to find it, without opening and closing a descriptor.
        let dir = parent.fd().map_err(errno)?;
        let stat = sys::lstat_at(dir.raw(), name).map_err(errno)?;
        if let Some(number) = self.inodes.remember_known(&stat, Arc::from(path)) {
            return Ok((number, self.attr(&stat)));
        }
        let fd = sys::openat(dir.raw(), name, libc::O_PATH | libc::O_NOFOLLOW, 0).map_err(errno)?;
        let stat = sys::fstat(fd.as_raw_fd()).map_err(errno)?;
        let number = self.inodes.remember(fd, &stat, Arc::from(path));
        Ok((number, self.attr(&stat)))
    }

    /// Gives a just-created object to the caller. The daemon created it as root; in a setgid
    /// directory the filesystem already gave it the directory's group, which must stay.
    fn hand_to_caller(&self, req: &Request, parent: &Node, fd: i32) -> Result<(), Errno> {
        let dir = parent.fd().map_err(errno)?;
        let parent_stat = sys::fstat(dir.raw()).map_err(errno)?;
        let gid = if parent_stat.st_mode & libc::S_ISGID != 0 {
            u32::MAX
        } else {
            req.gid()
        };
        if req.uid() == 0 && (gid == u32::MAX || gid == 0) {
            return Ok(());
        }
        let before = sys::fstat(fd).map_err(errno)?;
        sys::chown_fd(fd, req.uid(), gid).map_err(errno)?;
        // chown clears setuid/setgid bits of regular files; the creator asked for them.
        let special = before.st_mode & (libc::S_ISUID | libc::S_ISGID);
        if special != 0 && before.st_mode & libc::S_IFMT == libc::S_IFREG {
            sys::chmod_fd(fd, before.st_mode & 0o7777).map_err(errno)?;
        }
        Ok(())
    }

    /// Common tail of mkdir, mknod and symlink: hand the new entry to the caller, look it up.
    fn finish_new_entry(
        &self,
        req: &Request,
        parent: &Node,
        name: &OsStr,
        path: &[u8],
    ) -> Result<(u64, FileAttr), Errno> {
        let dir = parent.fd().map_err(errno)?;
        let fd = sys::openat(dir.raw(), name, libc::O_PATH | libc::O_NOFOLLOW, 0).map_err(errno)?;
        self.hand_to_caller(req, parent, fd.as_raw_fd())?;
        let stat = sys::fstat(fd.as_raw_fd()).map_err(errno)?;
        let number = self.inodes.remember(fd, &stat, Arc::from(path));
        Ok((number, self.attr(&stat)))
    }

    /// Entry replies carry the node number in `attr.ino` (fuser uses one field for both; see
    /// [`InodeTable::number_of`]: it is also the inode number stat() shows).
    fn reply_entry(&self, reply: ReplyEntry, result: &Result<(u64, FileAttr), Errno>) {
        match result {
            Ok((number, attr)) => reply.entry_with_ttls(
                &self.cache.attr_ttl,
                &self.cache.entry_ttl,
                attr,
                Generation(self.generation_of(*number)),
            ),
            Err(e) => reply.error(*e),
        }
    }

    fn do_setattr(
        &self,
        node: &Node,
        change: &AttrChange,
        fh: Option<FileHandle>,
    ) -> Result<FileAttr, Errno> {
        let node_fd = node.fd().map_err(errno)?;
        let fd = node_fd.raw();
        if let Some(mode) = change.mode {
            sys::chmod_fd(fd, mode & 0o7777).map_err(errno)?;
        }
        if change.uid.is_some() || change.gid.is_some() {
            sys::chown_fd(
                fd,
                change.uid.unwrap_or(u32::MAX),
                change.gid.unwrap_or(u32::MAX),
            )
            .map_err(errno)?;
        }
        if let Some(size) = change.size {
            match fh.map(|fh| self.handle(fh)).transpose()? {
                Some(handle) => sys::ftruncate(handle.fd.as_raw_fd(), size),
                None => sys::truncate_fd(fd, size),
            }
            .map_err(errno)?;
        }
        if change.atime.is_some() || change.mtime.is_some() {
            let times = [timespec(change.atime), timespec(change.mtime)];
            sys::utimens_fd(fd, &times).map_err(errno)?;
        }
        self.node_attr(node)
    }

    fn xattr_reply(reply: ReplyXattr, result: &Result<XattrAnswer, Errno>) {
        match result {
            Ok(XattrAnswer::Size(size)) => reply.size(*size as u32),
            Ok(XattrAnswer::Data(data)) => reply.data(data),
            Err(e) => reply.error(*e),
        }
    }
}

/// What mknod, mkdir and symlink create, for the record.
struct NewEntry {
    op: Op,
    kind: FileKind,
    /// The symlink's target text.
    target: Option<Vec<u8>>,
}

/// The fields a setattr request may change.
struct AttrChange {
    mode: Option<u32>,
    uid: Option<u32>,
    gid: Option<u32>,
    size: Option<u64>,
    atime: Option<TimeOrNow>,
    mtime: Option<TimeOrNow>,
}

impl Filesystem for MirrorFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Lookups and readdirs in one directory may run in parallel; the daemon has no
        // per-directory state that needs the kernel's serialisation.
        let _ = config.add_capabilities(InitFlags::FUSE_PARALLEL_DIROPS);
        // The kernel checks permissions itself (default_permissions), from the mode bits
        // alone unless told that the files carry POSIX ACLs: a named-user entry that denies
        // access on the host would then not deny it through the mirror. With this flag it
        // reads system.posix_acl_access through getxattr and checks it as the host does.
        // The kernel then leaves the caller's umask to the daemon (FUSE_DONT_MASK), which
        // lets the underlying filesystem apply it or a default ACL, as natively.
        let _ = config.add_capabilities(InitFlags::FUSE_DONT_MASK);
        if config.add_capabilities(InitFlags::FUSE_POSIX_ACL).is_err() {
            eprintln!(
                "depsetfs daemon: the kernel refused POSIX ACLs; access is checked from mode bits only"
            );
        }
        if self.cache.passthrough {
            self.passthrough_active = config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
                && config.set_max_stack_depth(1).is_ok();
            if !self.passthrough_active {
                eprintln!(
                    "depsetfs daemon: the kernel refused FUSE passthrough; reads go through the daemon"
                );
            }
        }
        Ok(())
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        self.caller_turn(req);
        let parent = match self.node(parent) {
            Ok(node) => node,
            Err(e) => return reply.error(e),
        };
        let path = child_path(&parent.path(), name);
        let result = self.lookup_child(&parent, name, &path);
        let kind = result
            .as_ref()
            .map(|(number, _)| {
                self.inodes
                    .get(*number)
                    .map_or(FileKind::Unknown, |n| n.kind)
            })
            .unwrap_or_default();
        match &result {
            Err(Errno::ENOENT) if self.entry_cache.is_some() => {
                reply.entry(&self.cache.entry_ttl, &negative_entry(), Generation(0))
            }
            _ => self.reply_entry(reply, &result),
        }
        self.record(
            req,
            Event::new(Op::Lookup, &path).outcome(&result).kind(kind),
        );
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.inodes.forget(ino.0, nlookup);
    }

    fn getattr(&self, req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        self.caller_turn(req);
        let node = match self.node(ino) {
            Ok(node) => node,
            Err(e) => return reply.error(e),
        };
        let result = self.node_attr(&node);
        match &result {
            Ok(attr) => reply.attr(&self.cache.attr_ttl, attr),
            Err(e) => reply.error(*e),
        }
        self.record(
            req,
            Event::new(Op::Getattr, &node.path())
                .outcome(&result)
                .kind(node.kind),
        );
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
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        self.caller_turn(req);
        let node = match self.node(ino) {
            Ok(node) => node,
            Err(e) => return reply.error(e),
        };
        let change = AttrChange {
            mode,
            uid,
            gid,
            size,
            atime,
            mtime,
        };
        let result = self.do_setattr(&node, &change, fh);
        match &result {
            Ok(attr) => reply.attr(&self.cache.attr_ttl, attr),
            Err(e) => reply.error(*e),
        }
        let intent = if size.is_some() { intent::TRUNCATE } else { 0 };
        self.record(
            req,
            Event::new(Op::Setattr, &node.path())
                .outcome(&result)
                .kind(node.kind)
                .intent(intent),
        );
    }

    fn readlink(&self, req: &Request, ino: INodeNo, reply: ReplyData) {
        self.caller_turn(req);
        let node = match self.node(ino) {
            Ok(node) => node,
            Err(e) => return reply.error(e),
        };
        let result = node
            .fd()
            .and_then(|fd| sys::readlink_fd(fd.raw()))
            .map_err(errno);
        match &result {
            Ok(target) => reply.data(target),
            Err(e) => reply.error(*e),
        }
        let path = node.path();
        let mut event = Event::new(Op::Readlink, &path)
            .outcome(&result)
            .kind(node.kind);
        if let Ok(target) = result {
            event = event.target(target);
        }
        self.record(req, event);
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
        self.caller_turn(req);
        let new = NewEntry {
            op: Op::Mknod,
            kind: FileKind::from_mode(mode),
            target: None,
        };
        self.make_entry(req, parent, name, new, reply, |dir| {
            sys::with_umask(umask, mode, |mode| {
                sys::mknodat(dir, name, mode, u64::from(rdev))
            })
        });
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
        self.caller_turn(req);
        let new = NewEntry {
            op: Op::Mkdir,
            kind: FileKind::Dir,
            target: None,
        };
        self.make_entry(req, parent, name, new, reply, |dir| {
            sys::with_umask(umask, mode, |mode| sys::mkdirat(dir, name, mode))
        });
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.caller_turn(req);
        self.remove_entry(req, parent, name, 0, reply);
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.caller_turn(req);
        self.remove_entry(req, parent, name, libc::AT_REMOVEDIR, reply);
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        self.caller_turn(req);
        let new = NewEntry {
            op: Op::Symlink,
            kind: FileKind::Symlink,
            target: Some(target.as_os_str().as_bytes().to_vec()),
        };
        self.make_entry(req, parent, link_name, new, reply, |dir| {
            sys::symlinkat(target, dir, link_name)
        });
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
        self.caller_turn(req);
        let (old_dir, new_dir) = match (self.node(parent), self.node(newparent)) {
            (Ok(old_dir), Ok(new_dir)) => (old_dir, new_dir),
            (Err(e), _) | (_, Err(e)) => return reply.error(e),
        };
        let old_path = child_path(&old_dir.path(), name);
        let new_path = child_path(&new_dir.path(), newname);
        let result = old_dir
            .fd()
            .and_then(|old| {
                let new = new_dir.fd()?;
                sys::renameat2(old.raw(), name, new.raw(), newname, flags.bits())
            })
            .map_err(errno);
        reply_empty(reply, &result);
        self.record(
            req,
            Event::new(Op::Rename, &old_path)
                .outcome(&result)
                .target(new_path),
        );
    }

    fn link(
        &self,
        req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        self.caller_turn(req);
        let (node, new_dir) = match (self.node(ino), self.node(newparent)) {
            (Ok(node), Ok(new_dir)) => (node, new_dir),
            (Err(e), _) | (_, Err(e)) => return reply.error(e),
        };
        let new_path = child_path(&new_dir.path(), newname);
        let result = node
            .fd()
            .and_then(|fd| sys::link_fd(fd.raw(), new_dir.fd()?.raw(), newname))
            .map_err(errno)
            .and_then(|()| self.lookup_child(&new_dir, newname, &new_path));
        self.reply_entry(reply, &result);
        self.record(
            req,
            Event::new(Op::Link, &node.path())
                .outcome(&result)
                .kind(node.kind)
                .target(new_path),
        );
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        self.caller_turn(req);
        let node = match self.node(ino) {
            Ok(node) => node,
            Err(e) => return reply.error(e),
        };
        if flags.0 & intent::KERNEL_FMODE_EXEC != 0 {
            // The caller waits in execve until this open is answered: its argv is readable.
            self.tracker
                .capture_exec(self.tracker.identify(req.pid()), &node.path());
        }
        let result = match self.open_file(&node, flags.0, |fd| reply.open_backing(fd)) {
            Ok((fd, mode)) => {
                let reply_flags = mode.reply_flags();
                let backing = mode.backing();
                let fh = self.add_handle(fd, Arc::clone(&node), mode);
                match backing {
                    Some(backing) => reply.opened_passthrough(fh, reply_flags, &backing),
                    None => reply.opened(fh, reply_flags),
                }
                Ok(fh)
            }
            Err(e) => {
                reply.error(e);
                Err(e)
            }
        };
        self.record(
            req,
            Event::new(Op::Open, &node.path())
                .outcome(&result)
                .kind(node.kind)
                .intent(intent::from_open_flags(flags.0)),
        );
    }

    fn read(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        self.caller_turn(req);
        // One buffer per request thread, grown once: a fresh zeroed allocation per read costs
        // as much as the copy itself at 128 KiB.
        let result = READ_BUFFER.with(|buffer| {
            let mut buffer = buffer.borrow_mut();
            let size = size as usize;
            if buffer.len() < size {
                buffer.resize(size, 0);
            }
            let read = self.handle(fh).and_then(|handle| {
                sys::pread(handle.fd.as_raw_fd(), &mut buffer[..size], offset).map_err(errno)
            });
            match &read {
                Ok(len) => reply.data(&buffer[..*len]),
                Err(e) => reply.error(*e),
            }
            read
        });
        let bytes = result.as_ref().map_or(0, |len| *len as u64);
        self.record_on_node(req, ino, Op::Read, &result, intent::READ, bytes);
    }

    fn write(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        self.caller_turn(req);
        let result = self
            .handle(fh)
            .and_then(|handle| write_all_at(handle.fd.as_raw_fd(), data, offset).map_err(errno));
        match &result {
            Ok(written) => reply.written(*written as u32),
            Err(e) => reply.error(*e),
        }
        let bytes = result.as_ref().map_or(0, |n| *n as u64);
        self.record_on_node(req, ino, Op::Write, &result, intent::WRITE, bytes);
    }

    fn release(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.caller_turn(req);
        self.close_handle(req, ino, fh, Op::Release, reply);
    }

    fn fsync(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.caller_turn(req);
        self.sync_handle(req, ino, fh, datasync, Op::Fsync, reply);
    }

    fn opendir(&self, req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        self.caller_turn(req);
        let node = match self.node(ino) {
            Ok(node) => node,
            Err(e) => return reply.error(e),
        };
        let result = node
            .fd()
            .and_then(|fd| sys::reopen(fd.raw(), libc::O_RDONLY | libc::O_DIRECTORY))
            .map_err(errno)
            .map(|fd| self.add_handle(fd, Arc::clone(&node), OpenMode::Direct));
        match &result {
            Ok(fh) => reply.opened(*fh, FopenFlags::empty()),
            Err(e) => reply.error(*e),
        }
        self.record(
            req,
            Event::new(Op::Opendir, &node.path())
                .outcome(&result)
                .kind(FileKind::Dir)
                .intent(intent::READ | intent::DIRECTORY),
        );
    }

    fn readdir(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        self.caller_turn(req);
        let handle = match self.handle(fh) {
            Ok(handle) => handle,
            Err(e) => return reply.error(e),
        };
        let dir_dev = self.inodes.get(ino.0).map_or(self.root_dev, |n| n.key.dev);
        let result = sys::read_dir_entries(
            handle.fd.as_raw_fd(),
            offset as i64,
            |d_ino, next, d_type, name| {
                reply.add(
                    INodeNo(self.inodes.number_of(FileKey {
                        dev: dir_dev,
                        ino: d_ino,
                    })),
                    next as u64,
                    dirent_type(d_type),
                    OsStr::from_bytes(name),
                )
            },
        )
        .map_err(errno);
        match &result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(*e),
        }
        self.record_on_node(req, ino, Op::Readdir, &result, intent::READ, 0);
    }

    fn releasedir(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.caller_turn(req);
        self.close_handle(req, ino, fh, Op::Releasedir, reply);
    }

    fn fsyncdir(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.caller_turn(req);
        self.sync_handle(req, ino, fh, datasync, Op::Fsyncdir, reply);
    }

    fn statfs(&self, req: &Request, ino: INodeNo, reply: ReplyStatfs) {
        self.caller_turn(req);
        let node = match self.node(ino) {
            Ok(node) => node,
            Err(e) => return reply.error(e),
        };
        let result = node
            .fd()
            .and_then(|fd| sys::statvfs(fd.raw()))
            .map_err(errno);
        match &result {
            Ok(st) => reply.statfs(
                st.f_blocks,
                st.f_bfree,
                st.f_bavail,
                st.f_files,
                st.f_ffree,
                st.f_bsize as u32,
                st.f_namemax as u32,
                st.f_frsize as u32,
            ),
            Err(e) => reply.error(*e),
        }
        self.record(req, Event::new(Op::Statfs, &node.path()).outcome(&result));
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        self.caller_turn(req);
        let result = self.on_xattr_node(ino, |fd| sys::setxattr(fd, name, value, flags));
        reply_empty(reply, &result);
        self.record_on_node(req, ino, Op::Setxattr, &result, 0, 0);
    }

    fn getxattr(&self, req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        self.caller_turn(req);
        let result = self.on_xattr_node(ino, |fd| sys::getxattr(fd, name, size as usize));
        Self::xattr_reply(reply, &result);
        self.record_on_node(req, ino, Op::Getxattr, &result, 0, 0);
    }

    fn listxattr(&self, req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        self.caller_turn(req);
        let result = self.on_xattr_node(ino, |fd| sys::listxattr(fd, size as usize));
        Self::xattr_reply(reply, &result);
        self.record_on_node(req, ino, Op::Listxattr, &result, 0, 0);
    }

    fn removexattr(&self, req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.caller_turn(req);
        let result = self.on_xattr_node(ino, |fd| sys::removexattr(fd, name));
        reply_empty(reply, &result);
        self.record_on_node(req, ino, Op::Removexattr, &result, 0, 0);
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
        self.caller_turn(req);
        let parent = match self.node(parent) {
            Ok(node) => node,
            Err(e) => return reply.error(e),
        };
        let path = child_path(&parent.path(), name);
        let result = self.create_file(req, &parent, name, &path, (mode, umask), flags);
        match &result {
            Ok((number, attr, fh, reply_flags)) => reply.created(
                &self.cache.entry_ttl,
                attr,
                Generation(self.generation_of(*number)),
                *fh,
                *reply_flags,
            ),
            Err(e) => reply.error(*e),
        }
        self.record(
            req,
            Event::new(Op::Create, &path)
                .outcome(&result)
                .kind(FileKind::File)
                .intent(intent::from_open_flags(flags) | intent::CREATE),
        );
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
        self.caller_turn(req);
        let result = self.handle(fh).and_then(|handle| {
            sys::fallocate(handle.fd.as_raw_fd(), mode, offset, length).map_err(errno)
        });
        reply_empty(reply, &result);
        self.record_on_node(req, ino, Op::Fallocate, &result, intent::WRITE, 0);
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
        self.caller_turn(req);
        let result = self
            .handle(fh)
            .and_then(|handle| sys::lseek(handle.fd.as_raw_fd(), offset, whence).map_err(errno));
        match &result {
            Ok(position) => reply.offset(*position),
            Err(e) => reply.error(*e),
        }
        self.record_on_node(req, ino, Op::Lseek, &result, 0, 0);
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
        _flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        self.caller_turn(req);
        let result = self.handle(fh_in).and_then(|input| {
            let output = self.handle(fh_out)?;
            sys::copy_file_range(
                input.fd.as_raw_fd(),
                offset_in,
                output.fd.as_raw_fd(),
                offset_out,
                len,
            )
            .map_err(errno)
        });
        match &result {
            Ok(copied) => reply.written(*copied as u32),
            Err(e) => reply.error(*e),
        }
        let bytes = result.as_ref().map_or(0, |n| *n as u64);
        let source = self.inodes.get(ino_in.0).map(|n| n.path());
        let destination = self.inodes.get(ino_out.0).map(|n| n.path());
        if let Some(source) = source {
            let mut event = Event::new(Op::CopyFileRange, &source)
                .outcome(&result)
                .intent(intent::READ)
                .bytes(bytes);
            if let Some(destination) = destination {
                event = event.target(destination.to_vec());
            }
            self.record(req, event);
        }
    }
}

impl MirrorFs {
    /// mknod, mkdir and symlink: create with `create(parent_fd)`, hand the new entry to the
    /// caller, look it up, answer, record.
    fn make_entry(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        new: NewEntry,
        reply: ReplyEntry,
        create: impl FnOnce(i32) -> std::io::Result<()>,
    ) {
        let parent = match self.node(parent) {
            Ok(node) => node,
            Err(e) => return reply.error(e),
        };
        let path = child_path(&parent.path(), name);
        let result = parent
            .fd()
            .and_then(|dir| create(dir.raw()))
            .map_err(errno)
            .and_then(|()| self.finish_new_entry(req, &parent, name, &path));
        self.reply_entry(reply, &result);
        let mut event = Event::new(new.op, &path)
            .outcome(&result)
            .kind(new.kind)
            .intent(intent::CREATE);
        if let Some(target) = new.target {
            event = event.target(target);
        }
        self.record(req, event);
    }

    /// release and releasedir: the handle's descriptor closes when its last user drops it.
    fn close_handle(&self, req: &Request, ino: INodeNo, fh: FileHandle, op: Op, reply: ReplyEmpty) {
        self.handles.remove(&fh.0);
        reply.ok();
        self.record_on_node(req, ino, op, &Ok(()), 0, 0);
    }

    /// fsync and fsyncdir.
    fn sync_handle(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        op: Op,
        reply: ReplyEmpty,
    ) {
        let result = self
            .handle(fh)
            .and_then(|handle| sys::fsync(handle.fd.as_raw_fd(), datasync).map_err(errno));
        reply_empty(reply, &result);
        self.record_on_node(req, ino, op, &result, 0, 0);
    }

    fn remove_entry(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        flags: i32,
        reply: ReplyEmpty,
    ) {
        let parent = match self.node(parent) {
            Ok(node) => node,
            Err(e) => return reply.error(e),
        };
        let path = child_path(&parent.path(), name);
        let result = parent
            .fd()
            .and_then(|dir| sys::unlinkat(dir.raw(), name, flags))
            .map_err(errno);
        reply_empty(reply, &result);
        let op = if flags & libc::AT_REMOVEDIR != 0 {
            Op::Rmdir
        } else {
            Op::Unlink
        };
        self.record(req, Event::new(op, &path).outcome(&result));
    }

    fn create_file(
        &self,
        req: &Request,
        parent: &Node,
        name: &OsStr,
        path: &[u8],
        (mode, umask): (u32, u32),
        flags: i32,
    ) -> Result<(u64, FileAttr, FileHandle, FopenFlags), Errno> {
        let open_flags = underlying_open_flags(flags) | libc::O_CREAT | (flags & libc::O_EXCL);
        let dir = parent.fd().map_err(errno)?;
        let file = sys::with_umask(umask, mode, |mode| {
            sys::openat(dir.raw(), name, open_flags, mode)
        })
        .map_err(errno)?;
        self.hand_to_caller(req, parent, file.as_raw_fd())?;
        // A path descriptor of exactly the file just created, without resolving `name` again.
        let path_fd = sys::reopen(file.as_raw_fd(), libc::O_PATH).map_err(errno)?;
        let stat = sys::fstat(path_fd.as_raw_fd()).map_err(errno)?;
        let number = self.inodes.remember(path_fd, &stat, Arc::from(path));
        let attr = self.attr(&stat);
        let node = self.inodes.get(number).ok_or(Errno::ESTALE)?;
        // A file being created is written to: page-cached I/O through the daemon.
        let mode = node.io.lock().expect("node io lock poisoned").open(
            false,
            flags,
            FileStamp::of(&stat),
            || Err(std::io::Error::from_raw_os_error(libc::ENOTSUP)),
        );
        let reply_flags = mode.reply_flags();
        Ok((number, attr, self.add_handle(file, node, mode), reply_flags))
    }

    /// Runs an xattr call on the file of a node, by its /proc/self/fd path (xattr calls do not
    /// take `O_PATH` descriptors). For a symlink the path leads to the symlink itself: the
    /// magic link resolves to what the descriptor holds, and the kernel does not follow a
    /// symlink it reached that way.
    fn on_xattr_node<T>(
        &self,
        ino: INodeNo,
        call: impl FnOnce(i32) -> std::io::Result<T>,
    ) -> Result<T, Errno> {
        let node = self.node(ino)?;
        let fd = node.fd().map_err(errno)?;
        call(fd.raw()).map_err(errno)
    }

    fn record_on_node<T>(
        &self,
        req: &Request,
        ino: INodeNo,
        op: Op,
        result: &Result<T, Errno>,
        intent: u32,
        bytes: u64,
    ) {
        let node = self.inodes.get(ino.0);
        let path = node.as_ref().map(|n| n.path());
        let kind = node.as_ref().map_or(FileKind::Unknown, |n| n.kind);
        let path: &[u8] = path.as_deref().unwrap_or(b"");
        self.record(
            req,
            Event::new(op, path)
                .outcome(result)
                .kind(kind)
                .intent(intent)
                .bytes(bytes),
        );
    }
}

fn reply_empty(reply: ReplyEmpty, result: &Result<(), Errno>) {
    match result {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(*e),
    }
}

fn write_all_at(fd: i32, data: &[u8], offset: u64) -> std::io::Result<usize> {
    let mut written = 0;
    while written < data.len() {
        let n = sys::pwrite(fd, &data[written..], offset + written as u64)?;
        if n == 0 {
            break;
        }
        written += n;
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_paths_join_with_one_slash() {
        assert_eq!(child_path(b"/", OsStr::new("etc")), b"/etc");
        assert_eq!(child_path(b"/etc", OsStr::new("passwd")), b"/etc/passwd");
    }

    #[test]
    fn exec_and_create_flags_never_reach_the_underlying_open() {
        let flags = libc::O_RDONLY
            | intent::KERNEL_FMODE_EXEC
            | libc::O_CREAT
            | libc::O_DIRECT
            | libc::O_NOFOLLOW;
        assert_eq!(underlying_open_flags(flags), libc::O_RDONLY);
    }

    #[test]
    fn negative_times_convert() {
        let t = system_time(-1, 500_000_000);
        assert_eq!(
            UNIX_EPOCH.duration_since(t).map(|d| d.as_millis()).ok(),
            Some(500)
        );
    }
}
