//! The operation handlers: a passthrough FUSE filesystem that mirrors a source tree and records
//! every request.
//!
//! Every handler goes through one skeleton, [`MirrorFs::serve`], and reads as: which node(s),
//! what call, what reply, what record. The skeleton keeps the ordering rules of the hot path:
//! the entry cache's turn for the caller first, then the node(s) (a node that cannot be
//! resolved is answered with its error and not recorded), the underlying call, the reply, and
//! only then the record of one [`Access`] with the calling process, the mirror path, the
//! outcome and the open intent. Each operation is done with an `*at()` call relative to the
//! node's `O_PATH` descriptor (never by path). Permission checks are the kernel's
//! (`default_permissions`). Attribute conversion lives in `fs/attr.rs`, the open-handle table
//! in `fs/handles.rs`, the hand-over of created objects to their creator in
//! `fs/ownership.rs`. Attribute and entry timeouts are zero by default so every process's
//! lookups and stats reach the daemon and are attributed.

mod attr;
mod handles;
mod ownership;

use std::ffi::OsStr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use fuser::{
    CopyFileRangeFlags, Errno, FileAttr, FileHandle, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenFlags, RenameFlags, TimeOrNow, WriteFlags,
};

use self::handles::{Handles, OpenHandle};
use crate::mirror::entry_cache::EntryCache;
use crate::mirror::inodes::{FileKey, InodeTable, Node};
use crate::mirror::io_mode::{Backing, FileStamp, OpenMode};
use crate::mirror::process::ProcessTracker;
use crate::mirror::recorder::Recorder;
use crate::mirror::transport::replies::{
    AttrReply, Caller, CreateReply, DataReply, DirectoryReply, EmptyReply, EntryReply, LseekReply,
    OpenReply, Reply, StatfsReply, WriteReply, XattrReply,
};
use crate::record::{Access, FileKind, Op, intent, now_ns};
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

/// The mirror: inode table, open handles, and where events go.
pub struct MirrorFs {
    inodes: InodeTable,
    handles: Handles,
    root_dev: u64,
    cache: CachePolicy,
    /// Whether the kernel agreed to passthrough (set in init).
    passthrough_active: AtomicBool,
    recorder: Recorder,
    tracker: Arc<ProcessTracker>,
    /// Entries cached per process (`--entry-cache`), when the kernel supports it.
    entry_cache: Option<EntryCache>,
    /// A descriptor of the connection's /dev/fuse, to register passthrough backing files.
    device: Option<Arc<OwnedFd>>,
}

/// What a handler reports to the recorder about one request. The outcome (errno) is not
/// the handler's to say: [`MirrorFs::serve`] takes it from the result it answered.
struct Event {
    op: Op,
    path: Vec<u8>,
    target: Option<Vec<u8>>,
    errno: i32,
    intent: u32,
    kind: FileKind,
    bytes: u64,
}

impl Event {
    fn new(op: Op, path: Vec<u8>) -> Event {
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

    /// An event on `node`: its path and kind.
    fn on(op: Op, node: &Node) -> Event {
        Event::new(op, node.path().to_vec()).kind(node.kind)
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

/// A lookup's reply: with the entry cache on, "no such entry" is answered as a negative entry
/// the kernel may cache for the entry time-out (it is still recorded as ENOENT).
struct LookupReply<R> {
    reply: R,
    negative_ttl: Option<Duration>,
}

impl<R: EntryReply> Reply for LookupReply<R> {
    fn error(self, errno: Errno) {
        match self.negative_ttl {
            Some(ttl) if errno == Errno::ENOENT => {
                self.reply
                    .entry(&ttl, &attr::negative_entry(), &ttl, Generation(0))
            }
            _ => self.reply.error(errno),
        }
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
            handles: Handles::new(),
            root_dev: root_stat.st_dev,
            cache,
            passthrough_active: AtomicBool::new(false),
            recorder,
            tracker,
            entry_cache: None,
            device: None,
        })
    }

    /// The connection's /dev/fuse, on which passthrough backing files are registered.
    pub fn use_device(&mut self, device: Arc<OwnedFd>) {
        self.device = Some(device);
    }

    fn open_backing(&self, file: &OwnedFd) -> std::io::Result<Backing> {
        match &self.device {
            Some(device) => Backing::open(device, file.as_fd()),
            None => Err(std::io::Error::from_raw_os_error(libc::ENOTSUP)),
        }
    }

    /// Lets the kernel cache entries while one process keeps asking (see [`EntryCache`]).
    pub fn cache_entries_per_process(&mut self, cache: EntryCache, ttl: Duration) {
        self.entry_cache = Some(cache);
        self.cache.entry_ttl = ttl;
    }

    /// The one handler skeleton. It keeps the ordering rules of every request in one place:
    /// 1. the entry cache's turn for the caller, before anything is answered (a request from
    ///    another process than the last one drops the kernel's cached entries);
    /// 2. `nodes`: the node(s) or handle the request names; if one is gone, the reply is its
    ///    error and nothing is recorded (there is no path to record);
    /// 3. `call`: the work on the underlying file (it may use the reply, e.g. to fill a
    ///    directory listing or register a passthrough backing file);
    /// 4. the reply: `answer` with the value, or the error;
    /// 5. after the reply, so the caller never waits for the recorder: `record` builds the
    ///    event from the nodes and the result (or none), and the skeleton records it with the
    ///    result's errno.
    #[inline]
    fn serve<R: Reply, N, T, E: Into<Option<Event>>>(
        &self,
        req: &Caller,
        mut reply: R,
        nodes: impl FnOnce() -> Result<N, Errno>,
        call: impl FnOnce(&N, &mut R) -> Result<T, Errno>,
        answer: impl FnOnce(R, &T),
        record: impl FnOnce(N, Result<T, Errno>) -> E,
    ) {
        if let Some(cache) = &self.entry_cache {
            cache.turn(self.tracker.identify(req.pid).pid);
        }
        let nodes = match nodes() {
            Ok(nodes) => nodes,
            Err(e) => return reply.error(e),
        };
        let result = call(&nodes, &mut reply);
        let errno = match &result {
            Ok(value) => {
                answer(reply, value);
                0
            }
            Err(e) => {
                reply.error(*e);
                i32::from(*e)
            }
        };
        if let Some(mut event) = record(nodes, result).into() {
            event.errno = errno;
            self.record(req, event);
        }
    }

    fn record(&self, req: &Caller, event: Event) {
        let caller = self.tracker.identify(req.pid);
        let now = now_ns();
        self.recorder.access(Access {
            pid: caller.pid,
            tid: caller.tid,
            start: caller.start,
            op: event.op,
            path: event.path,
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

    /// An event on node `ino` as it is when recorded (the handle operations, whose node the
    /// kernel holds): its path and kind, or an empty path if the node is gone.
    fn event_on(&self, ino: INodeNo, op: Op) -> Event {
        match self.inodes.get(ino.0) {
            Some(node) => Event::on(op, &node),
            None => Event::new(op, Vec::new()),
        }
    }

    fn node(&self, number: INodeNo) -> Result<Arc<Node>, Errno> {
        self.inodes.get(number.0).ok_or(Errno::ESTALE)
    }

    /// The directory node `parent` and the mirror path of its entry `name`.
    fn child(&self, parent: INodeNo, name: &OsStr) -> Result<(Arc<Node>, Vec<u8>), Errno> {
        let parent = self.node(parent)?;
        let path = child_path(&parent.path(), name);
        Ok((parent, path))
    }

    fn generation_of(&self, number: u64) -> u64 {
        self.inodes.get(number).map_or(0, |node| node.generation)
    }

    fn handle(&self, fh: FileHandle) -> Result<Arc<OpenHandle>, Errno> {
        self.handles.get(fh)
    }

    fn attr(&self, stat: &libc::stat) -> FileAttr {
        attr::file_attr(self.inodes.number_of(FileKey::of(stat)), stat)
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
        if let Some(number) = self.inodes.remember_known(&stat, path) {
            return Ok((number, self.attr(&stat)));
        }
        let fd = sys::openat(dir.raw(), name, libc::O_PATH | libc::O_NOFOLLOW, 0).map_err(errno)?;
        let stat = sys::fstat(fd.as_raw_fd()).map_err(errno)?;
        let number = self.inodes.remember(fd, &stat, Arc::from(path));
        Ok((number, self.attr(&stat)))
    }

    /// Common tail of mkdir, mknod and symlink: hand the new entry to the caller, look it up.
    fn finish_new_entry(
        &self,
        req: &Caller,
        parent: &Node,
        name: &OsStr,
        path: &[u8],
    ) -> Result<(u64, FileAttr), Errno> {
        let dir = parent.fd().map_err(errno)?;
        let fd = sys::openat(dir.raw(), name, libc::O_PATH | libc::O_NOFOLLOW, 0).map_err(errno)?;
        ownership::hand_to_caller(req.uid, req.gid, parent, fd.as_raw_fd())?;
        let stat = sys::fstat(fd.as_raw_fd()).map_err(errno)?;
        let number = self.inodes.remember(fd, &stat, Arc::from(path));
        Ok((number, self.attr(&stat)))
    }

    /// Entry replies carry the node number in `attr.ino` (fuser uses one field for both; see
    /// [`InodeTable::number_of`]: it is also the inode number stat() shows).
    fn reply_entry(&self, reply: impl EntryReply, (number, attr): &(u64, FileAttr)) {
        reply.entry(
            &self.cache.entry_ttl,
            attr,
            &self.cache.attr_ttl,
            Generation(self.generation_of(*number)),
        )
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
            let times = [attr::timespec(change.atime), attr::timespec(change.mtime)];
            sys::utimens_fd(fd, &times).map_err(errno)?;
        }
        self.node_attr(node)
    }
}

/// What mknod, mkdir and symlink create, for the record.
struct NewEntry<'a> {
    op: Op,
    kind: FileKind,
    /// The symlink's target.
    target: Option<&'a Path>,
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

/// The operation handlers, one per FUSE request, called by either transport. Their parameters
/// are those of `fuser::Filesystem` (the request's fields), hence their number.
#[allow(clippy::too_many_arguments)]
impl MirrorFs {
    /// The INIT capabilities the handlers rely on, asked of the kernel (fuser's `init`): the
    /// transport's own are the caller's. Returns whether passthrough was granted.
    pub fn negotiate(&self, config: &mut KernelConfig) -> bool {
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
            let granted = config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
                && config.set_max_stack_depth(1).is_ok();
            self.passthrough_active.store(granted, Ordering::Relaxed);
            if !granted {
                eprintln!(
                    "depsetfs daemon: the kernel refused FUSE passthrough; reads go through the daemon"
                );
            }
        }
        self.passthrough_active.load(Ordering::Relaxed)
    }

    pub fn lookup(&self, req: &Caller, parent: INodeNo, name: &OsStr, reply: impl EntryReply) {
        let reply = LookupReply {
            reply,
            negative_ttl: self.entry_cache.as_ref().map(|_| self.cache.entry_ttl),
        };
        self.serve(
            req,
            reply,
            || self.child(parent, name),
            |(parent, path), _| {
                let entry = self.lookup_child(parent, name, path)?;
                let kind = self
                    .inodes
                    .get(entry.0)
                    .map_or(FileKind::Unknown, |n| n.kind);
                Ok((entry, kind))
            },
            |reply, (entry, _)| self.reply_entry(reply.reply, entry),
            |(_, path), result| {
                let kind = result.map(|(_, kind)| kind).unwrap_or_default();
                Event::new(Op::Lookup, path).kind(kind)
            },
        );
    }

    pub fn forget(&self, ino: INodeNo, nlookup: u64) {
        self.inodes.forget(ino.0, nlookup);
    }

    pub fn getattr(
        &self,
        req: &Caller,
        ino: INodeNo,
        _fh: Option<FileHandle>,
        reply: impl AttrReply,
    ) {
        self.serve(
            req,
            reply,
            || self.node(ino),
            |node, _| self.node_attr(node),
            |reply, attr| reply.attr(&self.cache.attr_ttl, attr),
            |node, _| Event::on(Op::Getattr, &node),
        );
    }

    pub fn setattr(
        &self,
        req: &Caller,
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
        reply: impl AttrReply,
    ) {
        let change = AttrChange {
            mode,
            uid,
            gid,
            size,
            atime,
            mtime,
        };
        let intent = if size.is_some() { intent::TRUNCATE } else { 0 };
        self.serve(
            req,
            reply,
            || self.node(ino),
            |node, _| self.do_setattr(node, &change, fh),
            |reply, attr| reply.attr(&self.cache.attr_ttl, attr),
            |node, _| Event::on(Op::Setattr, &node).intent(intent),
        );
    }

    pub fn readlink(&self, req: &Caller, ino: INodeNo, reply: impl DataReply) {
        self.serve(
            req,
            reply,
            || self.node(ino),
            |node, _| {
                node.fd()
                    .and_then(|fd| sys::readlink_fd(fd.raw()))
                    .map_err(errno)
            },
            |reply, target| reply.data(target),
            |node, result| {
                let event = Event::on(Op::Readlink, &node);
                match result {
                    Ok(target) => event.target(target),
                    Err(_) => event,
                }
            },
        );
    }

    pub fn mknod(
        &self,
        req: &Caller,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: impl EntryReply,
    ) {
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

    pub fn mkdir(
        &self,
        req: &Caller,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: impl EntryReply,
    ) {
        let new = NewEntry {
            op: Op::Mkdir,
            kind: FileKind::Dir,
            target: None,
        };
        self.make_entry(req, parent, name, new, reply, |dir| {
            sys::with_umask(umask, mode, |mode| sys::mkdirat(dir, name, mode))
        });
    }

    pub fn unlink(&self, req: &Caller, parent: INodeNo, name: &OsStr, reply: impl EmptyReply) {
        self.remove_entry(req, parent, name, 0, reply);
    }

    pub fn rmdir(&self, req: &Caller, parent: INodeNo, name: &OsStr, reply: impl EmptyReply) {
        self.remove_entry(req, parent, name, libc::AT_REMOVEDIR, reply);
    }

    pub fn symlink(
        &self,
        req: &Caller,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: impl EntryReply,
    ) {
        let new = NewEntry {
            op: Op::Symlink,
            kind: FileKind::Symlink,
            target: Some(target),
        };
        self.make_entry(req, parent, link_name, new, reply, |dir| {
            sys::symlinkat(target, dir, link_name)
        });
    }

    pub fn rename(
        &self,
        req: &Caller,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: impl EmptyReply,
    ) {
        self.serve(
            req,
            reply,
            || {
                let (old_dir, new_dir) = (self.node(parent)?, self.node(newparent)?);
                let old_path = child_path(&old_dir.path(), name);
                let new_path = child_path(&new_dir.path(), newname);
                Ok((old_dir, new_dir, old_path, new_path))
            },
            |(old_dir, new_dir, _, _), _| {
                old_dir
                    .fd()
                    .and_then(|old| {
                        let new = new_dir.fd()?;
                        sys::renameat2(old.raw(), name, new.raw(), newname, flags.bits())
                    })
                    .map_err(errno)
            },
            |reply, ()| reply.ok(),
            |(_, _, old_path, new_path), _| Event::new(Op::Rename, old_path).target(new_path),
        );
    }

    pub fn link(
        &self,
        req: &Caller,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: impl EntryReply,
    ) {
        self.serve(
            req,
            reply,
            || {
                let (node, new_dir) = (self.node(ino)?, self.node(newparent)?);
                let new_path = child_path(&new_dir.path(), newname);
                Ok((node, new_dir, new_path))
            },
            |(node, new_dir, new_path), _| {
                node.fd()
                    .and_then(|fd| sys::link_fd(fd.raw(), new_dir.fd()?.raw(), newname))
                    .map_err(errno)
                    .and_then(|()| self.lookup_child(new_dir, newname, new_path))
            },
            |reply, entry| self.reply_entry(reply, entry),
            |(node, _, new_path), _| Event::on(Op::Link, &node).target(new_path),
        );
    }

    pub fn open(&self, req: &Caller, ino: INodeNo, flags: OpenFlags, reply: impl OpenReply) {
        self.serve(
            req,
            reply,
            || self.node(ino),
            |node, _| {
                if flags.0 & intent::KERNEL_FMODE_EXEC != 0 {
                    // The caller waits in execve until this open is answered: its argv is
                    // readable.
                    self.tracker
                        .capture_exec(self.tracker.identify(req.pid), &node.path());
                }
                let (fd, mode) = handles::open_file(
                    node,
                    flags.0,
                    self.passthrough_active.load(Ordering::Relaxed),
                    |fd| self.open_backing(fd),
                )?;
                let reply_flags = mode.reply_flags();
                let backing = mode.backing();
                let fh = self.handles.add(fd, Arc::clone(node), mode);
                Ok((fh, reply_flags, backing))
            },
            |reply, (fh, reply_flags, backing)| reply.opened(*fh, *reply_flags, backing.as_deref()),
            |node, _| Event::on(Op::Open, &node).intent(intent::from_open_flags(flags.0)),
        );
    }

    pub fn read(
        &self,
        req: &Caller,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: impl DataReply,
    ) {
        // One buffer per request thread, grown once: a fresh zeroed allocation per read costs
        // as much as the copy itself at 128 KiB.
        READ_BUFFER.with(|buffer| {
            let mut buffer = buffer.borrow_mut();
            let size = size as usize;
            if buffer.len() < size {
                buffer.resize(size, 0);
            }
            let buffer = &mut buffer[..size];
            self.serve(
                req,
                reply,
                || Ok(()),
                move |(), _| {
                    let buffer = buffer;
                    let handle = self.handle(fh)?;
                    let len = sys::pread(handle.fd.as_raw_fd(), buffer, offset).map_err(errno)?;
                    Ok(&buffer[..len])
                },
                |reply, data| reply.data(data),
                |(), result| {
                    let bytes = result.map_or(0, |data| data.len() as u64);
                    self.event_on(ino, Op::Read)
                        .intent(intent::READ)
                        .bytes(bytes)
                },
            );
        });
    }

    pub fn write(
        &self,
        req: &Caller,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: impl WriteReply,
    ) {
        self.serve(
            req,
            reply,
            || Ok(()),
            |(), _| {
                let handle = self.handle(fh)?;
                write_all_at(handle.fd.as_raw_fd(), data, offset).map_err(errno)
            },
            |reply, written| reply.written(*written as u32),
            |(), result| {
                let bytes = result.map_or(0, |n| n as u64);
                self.event_on(ino, Op::Write)
                    .intent(intent::WRITE)
                    .bytes(bytes)
            },
        );
    }

    pub fn release(
        &self,
        req: &Caller,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: impl EmptyReply,
    ) {
        self.close_handle(req, ino, fh, Op::Release, reply);
    }

    pub fn fsync(
        &self,
        req: &Caller,
        ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: impl EmptyReply,
    ) {
        self.sync_handle(req, ino, fh, datasync, Op::Fsync, reply);
    }

    pub fn opendir(&self, req: &Caller, ino: INodeNo, _flags: OpenFlags, reply: impl OpenReply) {
        self.serve(
            req,
            reply,
            || self.node(ino),
            |node, _| {
                let fd = node
                    .fd()
                    .and_then(|fd| sys::reopen(fd.raw(), libc::O_RDONLY | libc::O_DIRECTORY))
                    .map_err(errno)?;
                Ok(self.handles.add(fd, Arc::clone(node), OpenMode::Direct))
            },
            |reply, fh| reply.opened(*fh, FopenFlags::empty(), None),
            |node, _| {
                Event::new(Op::Opendir, node.path().to_vec())
                    .kind(FileKind::Dir)
                    .intent(intent::READ | intent::DIRECTORY)
            },
        );
    }

    pub fn readdir(
        &self,
        req: &Caller,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        reply: impl DirectoryReply,
    ) {
        self.serve(
            req,
            reply,
            || self.handle(fh),
            |handle, reply| {
                let dir_dev = self.inodes.get(ino.0).map_or(self.root_dev, |n| n.key.dev);
                sys::read_dir_entries(
                    handle.fd.as_raw_fd(),
                    offset as i64,
                    |d_ino, next, d_type, name| {
                        reply.add(
                            INodeNo(self.inodes.number_of(FileKey {
                                dev: dir_dev,
                                ino: d_ino,
                            })),
                            next as u64,
                            attr::dirent_type(d_type),
                            OsStr::from_bytes(name),
                        )
                    },
                )
                .map_err(errno)
            },
            |reply, ()| reply.ok(),
            |_, _| self.event_on(ino, Op::Readdir).intent(intent::READ),
        );
    }

    pub fn releasedir(
        &self,
        req: &Caller,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: impl EmptyReply,
    ) {
        self.close_handle(req, ino, fh, Op::Releasedir, reply);
    }

    pub fn fsyncdir(
        &self,
        req: &Caller,
        ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: impl EmptyReply,
    ) {
        self.sync_handle(req, ino, fh, datasync, Op::Fsyncdir, reply);
    }

    pub fn statfs(&self, req: &Caller, ino: INodeNo, reply: impl StatfsReply) {
        self.serve(
            req,
            reply,
            || self.node(ino),
            |node, _| {
                node.fd()
                    .and_then(|fd| sys::statvfs(fd.raw()))
                    .map_err(errno)
            },
            |reply, st| reply.statfs(st),
            |node, _| Event::new(Op::Statfs, node.path().to_vec()),
        );
    }

    pub fn setxattr(
        &self,
        req: &Caller,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: impl EmptyReply,
    ) {
        self.serve(
            req,
            reply,
            || Ok(()),
            |(), _| self.on_xattr_node(ino, |fd| sys::setxattr(fd, name, value, flags)),
            |reply, ()| reply.ok(),
            |(), _| self.event_on(ino, Op::Setxattr),
        );
    }

    pub fn getxattr(
        &self,
        req: &Caller,
        ino: INodeNo,
        name: &OsStr,
        size: u32,
        reply: impl XattrReply,
    ) {
        self.serve(
            req,
            reply,
            || Ok(()),
            |(), _| self.on_xattr_node(ino, |fd| sys::getxattr(fd, name, size as usize)),
            xattr_reply,
            |(), _| self.event_on(ino, Op::Getxattr),
        );
    }

    pub fn listxattr(&self, req: &Caller, ino: INodeNo, size: u32, reply: impl XattrReply) {
        self.serve(
            req,
            reply,
            || Ok(()),
            |(), _| self.on_xattr_node(ino, |fd| sys::listxattr(fd, size as usize)),
            xattr_reply,
            |(), _| self.event_on(ino, Op::Listxattr),
        );
    }

    pub fn removexattr(&self, req: &Caller, ino: INodeNo, name: &OsStr, reply: impl EmptyReply) {
        self.serve(
            req,
            reply,
            || Ok(()),
            |(), _| self.on_xattr_node(ino, |fd| sys::removexattr(fd, name)),
            |reply, ()| reply.ok(),
            |(), _| self.event_on(ino, Op::Removexattr),
        );
    }

    pub fn create(
        &self,
        req: &Caller,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: impl CreateReply,
    ) {
        self.serve(
            req,
            reply,
            || self.child(parent, name),
            |(parent, path), _| self.create_file(req, parent, name, path, (mode, umask), flags),
            |reply, (number, attr, fh, reply_flags)| {
                reply.created(
                    &self.cache.entry_ttl,
                    attr,
                    &self.cache.entry_ttl,
                    Generation(self.generation_of(*number)),
                    *fh,
                    *reply_flags,
                    None,
                )
            },
            |(_, path), _| {
                Event::new(Op::Create, path)
                    .kind(FileKind::File)
                    .intent(intent::from_open_flags(flags) | intent::CREATE)
            },
        );
    }

    pub fn fallocate(
        &self,
        req: &Caller,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: impl EmptyReply,
    ) {
        self.serve(
            req,
            reply,
            || Ok(()),
            |(), _| {
                let handle = self.handle(fh)?;
                sys::fallocate(handle.fd.as_raw_fd(), mode, offset, length).map_err(errno)
            },
            |reply, ()| reply.ok(),
            |(), _| self.event_on(ino, Op::Fallocate).intent(intent::WRITE),
        );
    }

    pub fn lseek(
        &self,
        req: &Caller,
        ino: INodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: impl LseekReply,
    ) {
        self.serve(
            req,
            reply,
            || Ok(()),
            |(), _| {
                let handle = self.handle(fh)?;
                sys::lseek(handle.fd.as_raw_fd(), offset, whence).map_err(errno)
            },
            |reply, position| reply.offset(*position),
            |(), _| self.event_on(ino, Op::Lseek),
        );
    }

    pub fn copy_file_range(
        &self,
        req: &Caller,
        ino_in: INodeNo,
        fh_in: FileHandle,
        offset_in: u64,
        ino_out: INodeNo,
        fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        _flags: CopyFileRangeFlags,
        reply: impl WriteReply,
    ) {
        self.serve(
            req,
            reply,
            || Ok(()),
            |(), _| {
                let (input, output) = (self.handle(fh_in)?, self.handle(fh_out)?);
                sys::copy_file_range(
                    input.fd.as_raw_fd(),
                    offset_in,
                    output.fd.as_raw_fd(),
                    offset_out,
                    len,
                )
                .map_err(errno)
            },
            |reply, copied| reply.written(*copied as u32),
            // Recorded on the source (none if the kernel no longer holds it), with the
            // destination as the target.
            |(), result| {
                let bytes = result.map_or(0, |n| n as u64);
                let source = self.inodes.get(ino_in.0)?;
                let destination = self.inodes.get(ino_out.0);
                let event = Event::new(Op::CopyFileRange, source.path().to_vec())
                    .intent(intent::READ)
                    .bytes(bytes);
                Some(match destination {
                    Some(destination) => event.target(destination.path().to_vec()),
                    None => event,
                })
            },
        );
    }
}

impl MirrorFs {
    /// mknod, mkdir and symlink: create with `create(parent_fd)`, hand the new entry to the
    /// caller, look it up.
    fn make_entry(
        &self,
        req: &Caller,
        parent: INodeNo,
        name: &OsStr,
        new: NewEntry<'_>,
        reply: impl EntryReply,
        create: impl FnOnce(i32) -> std::io::Result<()>,
    ) {
        self.serve(
            req,
            reply,
            || self.child(parent, name),
            |(parent, path), _| {
                parent
                    .fd()
                    .and_then(|dir| create(dir.raw()))
                    .map_err(errno)
                    .and_then(|()| self.finish_new_entry(req, parent, name, path))
            },
            |reply, entry| self.reply_entry(reply, entry),
            |(_, path), _| {
                let event = Event::new(new.op, path)
                    .kind(new.kind)
                    .intent(intent::CREATE);
                match new.target {
                    Some(target) => event.target(target.as_os_str().as_bytes().to_vec()),
                    None => event,
                }
            },
        );
    }

    /// release and releasedir: the handle's descriptor closes when its last user drops it.
    fn close_handle(
        &self,
        req: &Caller,
        ino: INodeNo,
        fh: FileHandle,
        op: Op,
        reply: impl EmptyReply,
    ) {
        self.serve(
            req,
            reply,
            || Ok(()),
            |(), _| {
                self.handles.remove(fh);
                Ok(())
            },
            |reply, ()| reply.ok(),
            |(), _| self.event_on(ino, op),
        );
    }

    /// fsync and fsyncdir.
    fn sync_handle(
        &self,
        req: &Caller,
        ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        op: Op,
        reply: impl EmptyReply,
    ) {
        self.serve(
            req,
            reply,
            || Ok(()),
            |(), _| {
                let handle = self.handle(fh)?;
                sys::fsync(handle.fd.as_raw_fd(), datasync).map_err(errno)
            },
            |reply, ()| reply.ok(),
            |(), _| self.event_on(ino, op),
        );
    }

    /// unlink and rmdir.
    fn remove_entry(
        &self,
        req: &Caller,
        parent: INodeNo,
        name: &OsStr,
        flags: i32,
        reply: impl EmptyReply,
    ) {
        let op = if flags & libc::AT_REMOVEDIR != 0 {
            Op::Rmdir
        } else {
            Op::Unlink
        };
        self.serve(
            req,
            reply,
            || self.child(parent, name),
            |(parent, _), _| {
                parent
                    .fd()
                    .and_then(|dir| sys::unlinkat(dir.raw(), name, flags))
                    .map_err(errno)
            },
            |reply, ()| reply.ok(),
            |(_, path), _| Event::new(op, path),
        );
    }

    fn create_file(
        &self,
        req: &Caller,
        parent: &Node,
        name: &OsStr,
        path: &[u8],
        (mode, umask): (u32, u32),
        flags: i32,
    ) -> Result<(u64, FileAttr, FileHandle, FopenFlags), Errno> {
        let open_flags =
            handles::underlying_open_flags(flags) | libc::O_CREAT | (flags & libc::O_EXCL);
        let dir = parent.fd().map_err(errno)?;
        let file = sys::with_umask(umask, mode, |mode| {
            sys::openat(dir.raw(), name, open_flags, mode)
        })
        .map_err(errno)?;
        ownership::hand_to_caller(req.uid, req.gid, parent, file.as_raw_fd())?;
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
        Ok((
            number,
            attr,
            self.handles.add(file, node, mode),
            reply_flags,
        ))
    }

    /// Runs an xattr call on the file of a node, by its /proc/self/fd path (xattr calls do not
    /// take `O_PATH` descriptors). For a symlink the path leads to the symlink itself: the
    /// magic link resolves to what the descriptor holds, and the kernel does not follow a
    /// symlink it reached that way. A node that is gone is the call's error (and recorded).
    fn on_xattr_node<T>(
        &self,
        ino: INodeNo,
        call: impl FnOnce(i32) -> std::io::Result<T>,
    ) -> Result<T, Errno> {
        let node = self.node(ino)?;
        let fd = node.fd().map_err(errno)?;
        call(fd.raw()).map_err(errno)
    }
}

fn xattr_reply(reply: impl XattrReply, answer: &XattrAnswer) {
    match answer {
        XattrAnswer::Size(size) => reply.size(*size as u32),
        XattrAnswer::Data(data) => reply.data(data),
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
}
