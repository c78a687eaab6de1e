//! The bytes of FUSE over io_uring (include/uapi/linux/fuse.h, fs/fuse/dev_uring.c): the ring
//! entry's header buffer (`fuse_uring_req_header`: the `fuse_in_header`/`fuse_out_header` in
//! `in_out`, the opcode's first argument in `op_in`, `fuse_uring_ent_in_out`), the request's
//! other arguments in the payload buffer, and the answer's arguments written back into that
//! payload. [`parse`] reads a request's arguments byte by byte with bounds checks (a malformed
//! request is EINVAL, never a panic); the `*_out` encoders write the reply structs as the
//! kernel reads them; [`RingReply`] implements the handlers' reply traits on an [`Answer`].

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    CopyFileRangeFlags, Errno, FileAttr, FileHandle, FileType, FopenFlags, Generation, INodeNo,
    LockOwner, OpenFlags, RenameFlags, TimeOrNow, WriteFlags,
};

use crate::mirror::io_mode::Backing;
use crate::mirror::transport::replies::{
    AttrReply, CreateReply, DataReply, DirectoryReply, EmptyReply, EntryReply, LseekReply,
    OpenReply, Reply, StatfsReply, WriteReply, XattrReply,
};

/// `FUSE_URING_IN_OUT_HEADER_SZ`, `FUSE_URING_OP_IN_OUT_SZ`.
pub const IN_OUT_LEN: usize = 128;
pub const OP_IN_OFFSET: usize = 128;
pub const OP_IN_LEN: usize = 128;
/// Offset of `fuse_uring_ent_in_out` (flags u64, commit_id u64, payload_sz u32, padding u32,
/// reserved u64) in the header buffer.
pub const ENT_IN_OUT_OFFSET: usize = 256;
/// `sizeof(struct fuse_uring_req_header)`.
pub const HEADER_BUFFER_LEN: usize = 288;
/// `sizeof(struct fuse_in_header)`, `sizeof(struct fuse_out_header)`.
pub const IN_HEADER_LEN: usize = 40;
pub const OUT_HEADER_LEN: usize = 16;
/// `FUSE_MIN_READ_BUFFER`: the kernel's smallest payload.
pub const MIN_PAYLOAD: usize = 8192;
/// `FOPEN_PASSTHROUGH`.
const FOPEN_PASSTHROUGH: u32 = 1 << 7;

/// `enum fuse_uring_cmd`.
pub const CMD_REGISTER: u32 = 1;
pub const CMD_COMMIT_AND_FETCH: u32 = 2;

mod opcode {
    pub const LOOKUP: u32 = 1;
    pub const FORGET: u32 = 2;
    pub const GETATTR: u32 = 3;
    pub const SETATTR: u32 = 4;
    pub const READLINK: u32 = 5;
    pub const SYMLINK: u32 = 6;
    pub const MKNOD: u32 = 8;
    pub const MKDIR: u32 = 9;
    pub const UNLINK: u32 = 10;
    pub const RMDIR: u32 = 11;
    pub const RENAME: u32 = 12;
    pub const LINK: u32 = 13;
    pub const OPEN: u32 = 14;
    pub const READ: u32 = 15;
    pub const WRITE: u32 = 16;
    pub const STATFS: u32 = 17;
    pub const RELEASE: u32 = 18;
    pub const FSYNC: u32 = 20;
    pub const SETXATTR: u32 = 21;
    pub const GETXATTR: u32 = 22;
    pub const LISTXATTR: u32 = 23;
    pub const REMOVEXATTR: u32 = 24;
    pub const OPENDIR: u32 = 27;
    pub const READDIR: u32 = 28;
    pub const RELEASEDIR: u32 = 29;
    pub const FSYNCDIR: u32 = 30;
    pub const CREATE: u32 = 35;
    pub const DESTROY: u32 = 38;
    pub const BATCH_FORGET: u32 = 42;
    pub const FALLOCATE: u32 = 43;
    pub const RENAME2: u32 = 45;
    pub const LSEEK: u32 = 46;
    pub const COPY_FILE_RANGE: u32 = 47;
}

const FATTR_MODE: u32 = 1 << 0;
const FATTR_UID: u32 = 1 << 1;
const FATTR_GID: u32 = 1 << 2;
const FATTR_SIZE: u32 = 1 << 3;
const FATTR_ATIME: u32 = 1 << 4;
const FATTR_MTIME: u32 = 1 << 5;
const FATTR_FH: u32 = 1 << 6;
const FATTR_ATIME_NOW: u32 = 1 << 7;
const FATTR_MTIME_NOW: u32 = 1 << 8;
const FATTR_CTIME: u32 = 1 << 10;
const FUSE_GETATTR_FH: u32 = 1 << 0;
const FUSE_READ_LOCKOWNER: u32 = 1 << 1;
const FUSE_WRITE_LOCKOWNER: u32 = 1 << 1;
const FUSE_RELEASE_FLUSH: u32 = 1 << 0;
const FUSE_RELEASE_FLOCK_UNLOCK: u32 = 1 << 1;
const FUSE_FSYNC_FDATASYNC: u32 = 1 << 0;

/// A little-endian reader over one argument area with explicit bounds.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes, at: 0 }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Errno> {
        let end = self.at.checked_add(n).ok_or(Errno::EINVAL)?;
        let taken = self.bytes.get(self.at..end).ok_or(Errno::EINVAL)?;
        self.at = end;
        Ok(taken)
    }

    fn u16(&mut self) -> Result<u16, Errno> {
        let mut b = [0u8; 2];
        b.copy_from_slice(self.take(2)?);
        Ok(u16::from_le_bytes(b))
    }

    fn u32(&mut self) -> Result<u32, Errno> {
        let mut b = [0u8; 4];
        b.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(b))
    }

    fn u64(&mut self) -> Result<u64, Errno> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(b))
    }

    fn skip(&mut self, n: usize) -> Result<(), Errno> {
        self.take(n).map(|_| ())
    }

    /// A NUL-terminated name (the NUL is consumed, not returned).
    fn name(&mut self) -> Result<&'a OsStr, Errno> {
        let rest = self.bytes.get(self.at..).ok_or(Errno::EINVAL)?;
        let len = rest.iter().position(|&b| b == 0).ok_or(Errno::EINVAL)?;
        let name = &rest[..len];
        self.at += len + 1;
        Ok(OsStr::from_bytes(name))
    }
}

/// `struct fuse_in_header`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InHeader {
    pub len: u32,
    pub opcode: u32,
    pub unique: u64,
    pub nodeid: u64,
    pub uid: u32,
    pub gid: u32,
    pub pid: u32,
    /// Length of the extensions at the end of the arguments, in 8-byte units.
    pub total_extlen: u16,
}

impl InHeader {
    pub fn parse(bytes: &[u8]) -> Result<InHeader, Errno> {
        let mut r = Reader::new(bytes.get(..IN_HEADER_LEN).ok_or(Errno::EINVAL)?);
        Ok(InHeader {
            len: r.u32()?,
            opcode: r.u32()?,
            unique: r.u64()?,
            nodeid: r.u64()?,
            uid: r.u32()?,
            gid: r.u32()?,
            pid: r.u32()?,
            total_extlen: r.u16()?,
        })
    }
}

/// `fuse_uring_ent_in_out` as the kernel fills it with a request: the commit id (the request's
/// unique) and the bytes used in the payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntInOut {
    pub commit_id: u64,
    pub payload_sz: u32,
}

impl EntInOut {
    pub fn parse(bytes: &[u8]) -> Result<EntInOut, Errno> {
        let mut r = Reader::new(bytes);
        r.skip(8)?;
        let commit_id = r.u64()?;
        let payload_sz = r.u32()?;
        Ok(EntInOut {
            commit_id,
            payload_sz,
        })
    }
}

/// The 80-byte command area of a REGISTER or COMMIT_AND_FETCH SQE: `fuse_uring_cmd_req`
/// (flags u64, commit_id u64, qid u16, padding), the rest zero.
pub fn cmd_req(commit_id: u64, qid: u16) -> [u8; super::ring::CMD_LEN] {
    let mut cmd = [0u8; super::ring::CMD_LEN];
    cmd[8..16].copy_from_slice(&commit_id.to_le_bytes());
    cmd[16..18].copy_from_slice(&qid.to_le_bytes());
    cmd
}

/// A request's arguments, as the handlers take them.
#[derive(Debug, PartialEq)]
pub enum Request<'a> {
    Lookup {
        name: &'a OsStr,
    },
    Forget {
        nlookup: u64,
    },
    BatchForget {
        nodes: Vec<(u64, u64)>,
    },
    GetAttr {
        fh: Option<FileHandle>,
    },
    SetAttr(SetAttr),
    ReadLink,
    SymLink {
        link_name: &'a OsStr,
        target: &'a Path,
    },
    MkNod {
        name: &'a OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
    },
    MkDir {
        name: &'a OsStr,
        mode: u32,
        umask: u32,
    },
    Unlink {
        name: &'a OsStr,
    },
    RmDir {
        name: &'a OsStr,
    },
    Rename {
        name: &'a OsStr,
        newparent: INodeNo,
        newname: &'a OsStr,
        flags: RenameFlags,
    },
    Link {
        ino: INodeNo,
        newname: &'a OsStr,
    },
    Open {
        flags: OpenFlags,
    },
    Read {
        fh: FileHandle,
        offset: u64,
        size: u32,
        flags: OpenFlags,
        lock_owner: Option<LockOwner>,
    },
    Write {
        fh: FileHandle,
        offset: u64,
        data: &'a [u8],
        write_flags: WriteFlags,
        flags: OpenFlags,
        lock_owner: Option<LockOwner>,
    },
    StatFs,
    Release {
        fh: FileHandle,
        flags: OpenFlags,
        lock_owner: Option<LockOwner>,
        flush: bool,
    },
    FSync {
        fh: FileHandle,
        datasync: bool,
    },
    SetXAttr {
        name: &'a OsStr,
        value: &'a [u8],
        flags: i32,
    },
    GetXAttr {
        name: &'a OsStr,
        size: u32,
    },
    ListXAttr {
        size: u32,
    },
    RemoveXAttr {
        name: &'a OsStr,
    },
    OpenDir {
        flags: OpenFlags,
    },
    ReadDir {
        fh: FileHandle,
        offset: u64,
        size: u32,
    },
    ReleaseDir {
        fh: FileHandle,
        flags: OpenFlags,
    },
    FSyncDir {
        fh: FileHandle,
        datasync: bool,
    },
    Create {
        name: &'a OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
    },
    FAllocate {
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
    },
    Lseek {
        fh: FileHandle,
        offset: i64,
        whence: i32,
    },
    CopyFileRange {
        fh_in: FileHandle,
        offset_in: u64,
        ino_out: INodeNo,
        fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        flags: CopyFileRangeFlags,
    },
    Destroy,
    /// Any other opcode: answered ENOSYS, as fuser's defaults do.
    Unsupported(u32),
}

/// SETATTR's fields that its `valid` mask marks as set.
#[derive(Debug, PartialEq)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<TimeOrNow>,
    pub mtime: Option<TimeOrNow>,
    pub ctime: Option<SystemTime>,
    pub fh: Option<FileHandle>,
}

/// An offset the kernel sends unsigned but means as off_t (as fuser checks it).
fn off_t(value: u64) -> Result<u64, Errno> {
    if value > i64::MAX as u64 {
        return Err(Errno::EINVAL);
    }
    Ok(value)
}

/// seconds + nanoseconds since the epoch, either side of it.
fn system_time(secs: u64, nsecs: u32) -> Result<SystemTime, Errno> {
    let secs = secs as i64;
    let nanos = Duration::from_nanos(u64::from(nsecs.min(999_999_999)));
    let time = if secs >= 0 {
        UNIX_EPOCH.checked_add(Duration::from_secs(secs as u64))
    } else {
        UNIX_EPOCH.checked_sub(Duration::from_secs(secs.unsigned_abs()))
    };
    time.and_then(|t| t.checked_add(nanos)).ok_or(Errno::EINVAL)
}

/// Reads a request's arguments: the opcode's first argument (its `fuse_*_in` struct, if any)
/// is in `op_in`, the rest (names, written data) in `payload`, as `fuse_uring_args_to_ring`
/// puts them. Opcodes whose first argument is a name (LOOKUP, UNLINK, RMDIR, SYMLINK,
/// REMOVEXATTR) have an empty first argument since Linux 6.14 and everything in the payload.
pub fn parse<'a>(
    header: &InHeader,
    op_in: &'a [u8],
    payload: &'a [u8],
) -> Result<Request<'a>, Errno> {
    // Extensions (security context, supplementary groups) trail the arguments; depsetfs does
    // not ask for them, and drops any it is sent.
    let ext = usize::from(header.total_extlen) * 8;
    let payload = payload
        .get(..payload.len().checked_sub(ext).ok_or(Errno::EINVAL)?)
        .ok_or(Errno::EINVAL)?;
    let mut arg = Reader::new(op_in);
    let mut data = Reader::new(payload);
    Ok(match header.opcode {
        opcode::LOOKUP => Request::Lookup { name: data.name()? },
        opcode::FORGET => Request::Forget {
            nlookup: arg.u64()?,
        },
        opcode::BATCH_FORGET => {
            let count = arg.u32()? as usize;
            let mut nodes = Vec::with_capacity(count.min(payload.len() / 16));
            for _ in 0..count {
                nodes.push((data.u64()?, data.u64()?));
            }
            Request::BatchForget { nodes }
        }
        opcode::GETATTR => {
            let getattr_flags = arg.u32()?;
            arg.skip(4)?;
            let fh = arg.u64()?;
            Request::GetAttr {
                fh: (getattr_flags & FUSE_GETATTR_FH != 0).then_some(FileHandle(fh)),
            }
        }
        opcode::SETATTR => Request::SetAttr(parse_setattr(&mut arg)?),
        opcode::READLINK => Request::ReadLink,
        opcode::SYMLINK => Request::SymLink {
            link_name: data.name()?,
            target: Path::new(data.name()?),
        },
        opcode::MKNOD => {
            let mode = arg.u32()?;
            let rdev = arg.u32()?;
            let umask = arg.u32()?;
            Request::MkNod {
                name: data.name()?,
                mode,
                umask,
                rdev,
            }
        }
        opcode::MKDIR => {
            let mode = arg.u32()?;
            let umask = arg.u32()?;
            Request::MkDir {
                name: data.name()?,
                mode,
                umask,
            }
        }
        opcode::UNLINK => Request::Unlink { name: data.name()? },
        opcode::RMDIR => Request::RmDir { name: data.name()? },
        opcode::RENAME | opcode::RENAME2 => {
            let newdir = arg.u64()?;
            let flags = if header.opcode == opcode::RENAME2 {
                arg.u32()?
            } else {
                0
            };
            Request::Rename {
                name: data.name()?,
                newparent: INodeNo(newdir),
                newname: data.name()?,
                flags: RenameFlags::from_bits_retain(flags),
            }
        }
        opcode::LINK => Request::Link {
            ino: INodeNo(arg.u64()?),
            newname: data.name()?,
        },
        opcode::OPEN => Request::Open {
            flags: OpenFlags(arg.u32()? as i32),
        },
        opcode::OPENDIR => Request::OpenDir {
            flags: OpenFlags(arg.u32()? as i32),
        },
        opcode::READ | opcode::READDIR => {
            let fh = FileHandle(arg.u64()?);
            let offset = arg.u64()?;
            let size = arg.u32()?;
            let read_flags = arg.u32()?;
            let lock_owner = arg.u64()?;
            let flags = OpenFlags(arg.u32()? as i32);
            if header.opcode == opcode::READDIR {
                Request::ReadDir { fh, offset, size }
            } else {
                Request::Read {
                    fh,
                    offset: off_t(offset)?,
                    size,
                    flags,
                    lock_owner: (read_flags & FUSE_READ_LOCKOWNER != 0)
                        .then_some(LockOwner(lock_owner)),
                }
            }
        }
        opcode::WRITE => {
            let fh = FileHandle(arg.u64()?);
            let offset = off_t(arg.u64()?)?;
            let size = arg.u32()? as usize;
            let write_flags = arg.u32()?;
            let lock_owner = arg.u64()?;
            let flags = OpenFlags(arg.u32()? as i32);
            Request::Write {
                fh,
                offset,
                data: data.take(size)?,
                write_flags: WriteFlags::from_bits_retain(write_flags),
                flags,
                lock_owner: (write_flags & FUSE_WRITE_LOCKOWNER != 0)
                    .then_some(LockOwner(lock_owner)),
            }
        }
        opcode::STATFS => Request::StatFs,
        opcode::RELEASE | opcode::RELEASEDIR => {
            let fh = FileHandle(arg.u64()?);
            let flags = OpenFlags(arg.u32()? as i32);
            let release_flags = arg.u32()?;
            let lock_owner = arg.u64()?;
            if header.opcode == opcode::RELEASEDIR {
                Request::ReleaseDir { fh, flags }
            } else {
                Request::Release {
                    fh,
                    flags,
                    lock_owner: (release_flags & FUSE_RELEASE_FLOCK_UNLOCK != 0)
                        .then_some(LockOwner(lock_owner)),
                    flush: release_flags & FUSE_RELEASE_FLUSH != 0,
                }
            }
        }
        opcode::FSYNC | opcode::FSYNCDIR => {
            let fh = FileHandle(arg.u64()?);
            let datasync = arg.u32()? & FUSE_FSYNC_FDATASYNC != 0;
            if header.opcode == opcode::FSYNCDIR {
                Request::FSyncDir { fh, datasync }
            } else {
                Request::FSync { fh, datasync }
            }
        }
        opcode::SETXATTR => {
            // fuse_setxattr_in: the 8-byte compat form unless FUSE_SETXATTR_EXT (not asked
            // for): size and flags are its first two fields either way.
            let size = arg.u32()? as usize;
            let flags = arg.u32()? as i32;
            Request::SetXAttr {
                name: data.name()?,
                value: data.take(size)?,
                flags,
            }
        }
        opcode::GETXATTR => {
            let size = arg.u32()?;
            Request::GetXAttr {
                name: data.name()?,
                size,
            }
        }
        opcode::LISTXATTR => Request::ListXAttr { size: arg.u32()? },
        opcode::REMOVEXATTR => Request::RemoveXAttr { name: data.name()? },
        opcode::CREATE => {
            let flags = arg.u32()? as i32;
            let mode = arg.u32()?;
            let umask = arg.u32()?;
            Request::Create {
                name: data.name()?,
                mode,
                umask,
                flags,
            }
        }
        opcode::FALLOCATE => {
            let fh = FileHandle(arg.u64()?);
            let offset = off_t(arg.u64()?)?;
            let length = off_t(arg.u64()?)?;
            let mode = arg.u32()? as i32;
            Request::FAllocate {
                fh,
                offset,
                length,
                mode,
            }
        }
        opcode::LSEEK => {
            let fh = FileHandle(arg.u64()?);
            let offset = arg.u64()? as i64;
            let whence = arg.u32()? as i32;
            Request::Lseek { fh, offset, whence }
        }
        opcode::COPY_FILE_RANGE => {
            let fh_in = FileHandle(arg.u64()?);
            let offset_in = off_t(arg.u64()?)?;
            let ino_out = INodeNo(arg.u64()?);
            let fh_out = FileHandle(arg.u64()?);
            let offset_out = off_t(arg.u64()?)?;
            let len = arg.u64()?;
            let flags = CopyFileRangeFlags::from_bits_retain(arg.u64()?);
            Request::CopyFileRange {
                fh_in,
                offset_in,
                ino_out,
                fh_out,
                offset_out,
                len,
                flags,
            }
        }
        opcode::DESTROY => Request::Destroy,
        other => Request::Unsupported(other),
    })
}

fn parse_setattr(arg: &mut Reader<'_>) -> Result<SetAttr, Errno> {
    let valid = arg.u32()?;
    arg.skip(4)?;
    let fh = arg.u64()?;
    let size = arg.u64()?;
    let _lock_owner = arg.u64()?;
    let atime = arg.u64()?;
    let mtime = arg.u64()?;
    let ctime = arg.u64()?;
    let atimensec = arg.u32()?;
    let mtimensec = arg.u32()?;
    let ctimensec = arg.u32()?;
    let mode = arg.u32()?;
    arg.skip(4)?;
    let uid = arg.u32()?;
    let gid = arg.u32()?;
    let set = |bit: u32| valid & bit != 0;
    let time = |bit: u32, now: u32, secs: u64, nsecs: u32| -> Result<Option<TimeOrNow>, Errno> {
        Ok(if !set(bit) {
            None
        } else if set(now) {
            Some(TimeOrNow::Now)
        } else {
            Some(TimeOrNow::SpecificTime(system_time(secs, nsecs)?))
        })
    };
    Ok(SetAttr {
        mode: set(FATTR_MODE).then_some(mode),
        uid: set(FATTR_UID).then_some(uid),
        gid: set(FATTR_GID).then_some(gid),
        size: set(FATTR_SIZE).then_some(size),
        atime: time(FATTR_ATIME, FATTR_ATIME_NOW, atime, atimensec)?,
        mtime: time(FATTR_MTIME, FATTR_MTIME_NOW, mtime, mtimensec)?,
        ctime: if set(FATTR_CTIME) {
            Some(system_time(ctime, ctimensec)?)
        } else {
            None
        },
        fh: set(FATTR_FH).then_some(FileHandle(fh)),
    })
}

/// seconds and nanoseconds since the epoch, as fuser encodes times (saturating; before the
/// epoch: negative seconds and positive nanoseconds).
fn time_parts(time: &SystemTime) -> (i64, u32) {
    match time.duration_since(UNIX_EPOCH) {
        Ok(d) => match i64::try_from(d.as_secs()) {
            Ok(secs) => (secs, d.subsec_nanos()),
            Err(_) => (i64::MAX, 999_999_999),
        },
        Err(before) => {
            let d = before.duration();
            match i64::try_from(d.as_secs()) {
                Ok(secs) if d.subsec_nanos() == 0 => (-secs, 0),
                Ok(secs) => (-secs - 1, 1_000_000_000 - d.subsec_nanos()),
                Err(_) => (i64::MIN, 0),
            }
        }
    }
}

/// `st_mode`'s file type bits.
fn type_bits(kind: FileType) -> u32 {
    match kind {
        FileType::NamedPipe => libc::S_IFIFO,
        FileType::CharDevice => libc::S_IFCHR,
        FileType::BlockDevice => libc::S_IFBLK,
        FileType::Directory => libc::S_IFDIR,
        FileType::RegularFile => libc::S_IFREG,
        FileType::Symlink => libc::S_IFLNK,
        FileType::Socket => libc::S_IFSOCK,
    }
}

/// A little-endian writer into a fixed struct.
struct Writer<const N: usize> {
    bytes: [u8; N],
    at: usize,
}

impl<const N: usize> Writer<N> {
    fn new() -> Self {
        Writer {
            bytes: [0; N],
            at: 0,
        }
    }

    fn put(&mut self, b: &[u8]) -> &mut Self {
        self.bytes[self.at..self.at + b.len()].copy_from_slice(b);
        self.at += b.len();
        self
    }

    fn u32(&mut self, v: u32) -> &mut Self {
        self.put(&v.to_le_bytes())
    }

    fn u64(&mut self, v: u64) -> &mut Self {
        self.put(&v.to_le_bytes())
    }

    fn done(&self) -> [u8; N] {
        debug_assert_eq!(self.at, N);
        self.bytes
    }
}

/// `struct fuse_attr` (88 bytes).
pub fn attr_bytes(attr: &FileAttr) -> [u8; 88] {
    let (atime, atimensec) = time_parts(&attr.atime);
    let (mtime, mtimensec) = time_parts(&attr.mtime);
    let (ctime, ctimensec) = time_parts(&attr.ctime);
    Writer::<88>::new()
        .u64(attr.ino.0)
        .u64(attr.size)
        .u64(attr.blocks)
        .u64(atime as u64)
        .u64(mtime as u64)
        .u64(ctime as u64)
        .u32(atimensec)
        .u32(mtimensec)
        .u32(ctimensec)
        .u32(type_bits(attr.kind) | u32::from(attr.perm))
        .u32(attr.nlink)
        .u32(attr.uid)
        .u32(attr.gid)
        .u32(attr.rdev)
        .u32(attr.blksize)
        .u32(0)
        .done()
}

/// `struct fuse_entry_out` (128 bytes).
pub fn entry_out(
    entry_ttl: &Duration,
    attr: &FileAttr,
    attr_ttl: &Duration,
    generation: Generation,
) -> [u8; 128] {
    Writer::<128>::new()
        .u64(attr.ino.0)
        .u64(generation.0)
        .u64(entry_ttl.as_secs())
        .u64(attr_ttl.as_secs())
        .u32(entry_ttl.subsec_nanos())
        .u32(attr_ttl.subsec_nanos())
        .put(&attr_bytes(attr))
        .done()
}

/// `struct fuse_attr_out` (104 bytes).
pub fn attr_out(ttl: &Duration, attr: &FileAttr) -> [u8; 104] {
    Writer::<104>::new()
        .u64(ttl.as_secs())
        .u32(ttl.subsec_nanos())
        .u32(0)
        .put(&attr_bytes(attr))
        .done()
}

/// `struct fuse_open_out` (16 bytes); a backing file makes it a passthrough open.
pub fn open_out(fh: FileHandle, flags: FopenFlags, backing_id: Option<u32>) -> [u8; 16] {
    let flags = match backing_id {
        Some(_) => flags.bits() | FOPEN_PASSTHROUGH,
        None => flags.bits() & !FOPEN_PASSTHROUGH,
    };
    Writer::<16>::new()
        .u64(fh.0)
        .u32(flags)
        .u32(backing_id.unwrap_or(0))
        .done()
}

/// `struct fuse_write_out`, `struct fuse_getxattr_out` (a u32 and padding).
pub fn size_out(size: u32) -> [u8; 8] {
    Writer::<8>::new().u32(size).u32(0).done()
}

/// `struct fuse_lseek_out`.
pub fn lseek_out(offset: i64) -> [u8; 8] {
    offset.to_le_bytes()
}

/// `struct fuse_statfs_out` (80 bytes), from statvfs as fuser's `ReplyStatfs` is filled.
pub fn statfs_out(st: &libc::statvfs) -> [u8; 80] {
    Writer::<80>::new()
        .u64(st.f_blocks)
        .u64(st.f_bfree)
        .u64(st.f_bavail)
        .u64(st.f_files)
        .u64(st.f_ffree)
        .u32(st.f_bsize as u32)
        .u32(st.f_namemax as u32)
        .u32(st.f_frsize as u32)
        .u32(0)
        .put(&[0; 24])
        .done()
}

/// Appends one `struct fuse_dirent` record (padded to 8 bytes) if the list stays within
/// `limit` bytes; false if it would not fit.
pub fn push_dirent(
    list: &mut [u8],
    used: &mut usize,
    limit: usize,
    (ino, offset, kind, name): (INodeNo, u64, FileType, &OsStr),
) -> bool {
    let name = name.as_bytes();
    let Ok(namelen) = u32::try_from(name.len()) else {
        return false;
    };
    let len = 24 + name.len();
    let padded = len.next_multiple_of(8);
    let end = *used + padded;
    if end > limit.min(list.len()) {
        return false;
    }
    let record = &mut list[*used..end];
    record[0..8].copy_from_slice(&ino.0.to_le_bytes());
    record[8..16].copy_from_slice(&offset.to_le_bytes());
    record[16..20].copy_from_slice(&namelen.to_le_bytes());
    record[20..24].copy_from_slice(&(type_bits(kind) >> 12).to_le_bytes());
    record[24..len].copy_from_slice(name);
    record[len..].fill(0);
    *used = end;
    true
}

/// The answer to one request, written into its ring entry's payload buffer: an error, or
/// `len` bytes of reply arguments. Unanswered, a request gets EIO (as fuser's dropped replies).
pub struct Answer<'a> {
    payload: &'a mut [u8],
    error: i32,
    len: usize,
}

impl<'a> Answer<'a> {
    pub fn new(payload: &'a mut [u8]) -> Answer<'a> {
        Answer {
            payload,
            error: -libc::EIO,
            len: 0,
        }
    }

    pub fn fail(&mut self, errno: Errno) {
        self.error = -errno.code().abs();
        self.len = 0;
    }

    /// The reply's argument bytes; EIO if they do not fit the payload buffer.
    pub fn set(&mut self, parts: &[&[u8]]) {
        let total: usize = parts.iter().map(|p| p.len()).sum();
        if total > self.payload.len() {
            self.fail(Errno::EIO);
            return;
        }
        let mut at = 0;
        for part in parts {
            self.payload[at..at + part.len()].copy_from_slice(part);
            at += part.len();
        }
        self.error = 0;
        self.len = total;
    }

    /// (error, argument bytes) for the `fuse_out_header` and `payload_sz`.
    pub fn result(&self) -> (i32, usize) {
        (self.error, self.len)
    }
}

/// Writes the answer into the entry's header buffer: `fuse_out_header` in `in_out` and the
/// payload size in `fuse_uring_ent_in_out`.
pub fn write_out_header(header: &mut [u8], unique: u64, (error, len): (i32, usize)) {
    let payload_sz = u32::try_from(len).unwrap_or(u32::MAX);
    header[..IN_OUT_LEN].fill(0);
    let total = u32::try_from(OUT_HEADER_LEN + len).unwrap_or(u32::MAX);
    header[0..4].copy_from_slice(&total.to_le_bytes());
    header[4..8].copy_from_slice(&error.to_le_bytes());
    header[8..16].copy_from_slice(&unique.to_le_bytes());
    let ent = &mut header[ENT_IN_OUT_OFFSET..HEADER_BUFFER_LEN];
    ent.fill(0);
    ent[16..20].copy_from_slice(&payload_sz.to_le_bytes());
}

/// The handlers' reply objects on a ring entry: every trait of `replies.rs` on one type.
/// `limit` is the size the kernel asked for (READ, READDIR, GETXATTR, LISTXATTR).
pub struct RingReply<'r, 'a> {
    answer: &'r mut Answer<'a>,
    limit: usize,
    /// READDIR: bytes of dirent records written so far.
    used: usize,
}

impl<'r, 'a> RingReply<'r, 'a> {
    pub fn new(answer: &'r mut Answer<'a>, limit: usize) -> RingReply<'r, 'a> {
        RingReply {
            answer,
            limit,
            used: 0,
        }
    }
}

impl Reply for RingReply<'_, '_> {
    fn error(self, errno: Errno) {
        self.answer.fail(errno);
    }
}

impl EntryReply for RingReply<'_, '_> {
    fn entry(
        self,
        entry_ttl: &Duration,
        attr: &FileAttr,
        attr_ttl: &Duration,
        generation: Generation,
    ) {
        self.answer
            .set(&[&entry_out(entry_ttl, attr, attr_ttl, generation)]);
    }
}

impl AttrReply for RingReply<'_, '_> {
    fn attr(self, ttl: &Duration, attr: &FileAttr) {
        self.answer.set(&[&attr_out(ttl, attr)]);
    }
}

impl DataReply for RingReply<'_, '_> {
    fn data(self, data: &[u8]) {
        self.answer.set(&[data]);
    }
}

impl EmptyReply for RingReply<'_, '_> {
    fn ok(self) {
        self.answer.set(&[]);
    }
}

impl OpenReply for RingReply<'_, '_> {
    fn opened(self, fh: FileHandle, flags: FopenFlags, backing: Option<&Backing>) {
        self.answer
            .set(&[&open_out(fh, flags, backing.map(Backing::id))]);
    }
}

impl CreateReply for RingReply<'_, '_> {
    fn created(
        self,
        entry_ttl: &Duration,
        attr: &FileAttr,
        attr_ttl: &Duration,
        generation: Generation,
        fh: FileHandle,
        flags: FopenFlags,
        backing: Option<&Backing>,
    ) {
        self.answer.set(&[
            &entry_out(entry_ttl, attr, attr_ttl, generation),
            &open_out(fh, flags, backing.map(Backing::id)),
        ]);
    }
}

impl WriteReply for RingReply<'_, '_> {
    fn written(self, size: u32) {
        self.answer.set(&[&size_out(size)]);
    }
}

impl StatfsReply for RingReply<'_, '_> {
    fn statfs(self, stat: &libc::statvfs) {
        self.answer.set(&[&statfs_out(stat)]);
    }
}

impl XattrReply for RingReply<'_, '_> {
    fn size(self, size: u32) {
        self.answer.set(&[&size_out(size)]);
    }

    fn data(self, data: &[u8]) {
        self.answer.set(&[data]);
    }
}

impl LseekReply for RingReply<'_, '_> {
    fn offset(self, offset: i64) {
        self.answer.set(&[&lseek_out(offset)]);
    }
}

impl DirectoryReply for RingReply<'_, '_> {
    fn add(&mut self, ino: INodeNo, offset: u64, kind: FileType, name: &OsStr) -> bool {
        !push_dirent(
            self.answer.payload,
            &mut self.used,
            self.limit,
            (ino, offset, kind, name),
        )
    }

    fn ok(self) {
        self.answer.error = 0;
        self.answer.len = self.used;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(opcode: u32) -> InHeader {
        InHeader {
            opcode,
            unique: 7,
            nodeid: 1,
            ..InHeader::default()
        }
    }

    fn le32(v: u32) -> [u8; 4] {
        v.to_le_bytes()
    }

    fn le64(v: u64) -> [u8; 8] {
        v.to_le_bytes()
    }

    #[test]
    fn in_header_and_ent_in_out_layouts() {
        let mut b = Vec::new();
        b.extend(le32(56));
        b.extend(le32(opcode::LOOKUP));
        b.extend(le64(0x1234));
        b.extend(le64(1));
        b.extend(le32(1000));
        b.extend(le32(100));
        b.extend(le32(4242));
        b.extend(3u16.to_le_bytes());
        b.extend([0, 0]);
        assert_eq!(b.len(), IN_HEADER_LEN);
        let h = InHeader::parse(&b).expect("header");
        assert_eq!(
            (
                h.opcode,
                h.unique,
                h.nodeid,
                h.uid,
                h.gid,
                h.pid,
                h.total_extlen
            ),
            (1, 0x1234, 1, 1000, 100, 4242, 3)
        );
        assert_eq!(InHeader::parse(&b[..39]), Err(Errno::EINVAL));

        let mut ent = vec![0u8; 32];
        ent[8..16].copy_from_slice(&le64(99));
        ent[16..20].copy_from_slice(&le32(6));
        assert_eq!(
            EntInOut::parse(&ent),
            Ok(EntInOut {
                commit_id: 99,
                payload_sz: 6
            })
        );
    }

    #[test]
    fn cmd_req_carries_commit_id_and_qid() {
        let cmd = cmd_req(0xabcd, 3);
        assert_eq!(&cmd[0..8], &[0; 8]);
        assert_eq!(&cmd[8..16], &le64(0xabcd));
        assert_eq!(&cmd[16..18], &3u16.to_le_bytes());
        assert!(cmd[18..].iter().all(|&b| b == 0));
    }

    #[test]
    fn names_come_from_the_payload() {
        let op_in = [0u8; OP_IN_LEN];
        assert_eq!(
            parse(&header(opcode::LOOKUP), &op_in, b"etc\0"),
            Ok(Request::Lookup {
                name: OsStr::new("etc")
            })
        );
        assert_eq!(
            parse(&header(opcode::SYMLINK), &op_in, b"link\0/target/x\0"),
            Ok(Request::SymLink {
                link_name: OsStr::new("link"),
                target: Path::new("/target/x"),
            })
        );
        // Unterminated name: EINVAL, not a panic.
        assert_eq!(
            parse(&header(opcode::UNLINK), &op_in, b"abc"),
            Err(Errno::EINVAL)
        );
        assert_eq!(
            parse(&header(opcode::RMDIR), &op_in, b""),
            Err(Errno::EINVAL)
        );
    }

    #[test]
    fn rename_takes_newdir_from_op_in_and_two_names_from_the_payload() {
        let mut op_in = [0u8; OP_IN_LEN];
        op_in[0..8].copy_from_slice(&le64(55));
        op_in[8..12].copy_from_slice(&le32(libc::RENAME_NOREPLACE));
        assert_eq!(
            parse(&header(opcode::RENAME2), &op_in, b"a\0b\0"),
            Ok(Request::Rename {
                name: OsStr::new("a"),
                newparent: INodeNo(55),
                newname: OsStr::new("b"),
                flags: RenameFlags::RENAME_NOREPLACE,
            })
        );
        // Plain RENAME has no flags field (fuse_rename_in is only newdir).
        assert_eq!(
            parse(&header(opcode::RENAME), &op_in, b"a\0b\0"),
            Ok(Request::Rename {
                name: OsStr::new("a"),
                newparent: INodeNo(55),
                newname: OsStr::new("b"),
                flags: RenameFlags::empty(),
            })
        );
        assert_eq!(
            parse(&header(opcode::RENAME), &op_in, b"a\0"),
            Err(Errno::EINVAL)
        );
    }

    #[test]
    fn write_takes_fuse_write_in_and_its_data() {
        let mut op_in = [0u8; OP_IN_LEN];
        op_in[0..8].copy_from_slice(&le64(9)); // fh
        op_in[8..16].copy_from_slice(&le64(4096)); // offset
        op_in[16..20].copy_from_slice(&le32(5)); // size
        op_in[20..24].copy_from_slice(&le32(FUSE_WRITE_LOCKOWNER));
        op_in[24..32].copy_from_slice(&le64(77)); // lock_owner
        op_in[32..36].copy_from_slice(&le32(libc::O_WRONLY as u32));
        assert_eq!(
            parse(&header(opcode::WRITE), &op_in, b"hello"),
            Ok(Request::Write {
                fh: FileHandle(9),
                offset: 4096,
                data: b"hello",
                write_flags: WriteFlags::from_bits_retain(FUSE_WRITE_LOCKOWNER),
                flags: OpenFlags(libc::O_WRONLY),
                lock_owner: Some(LockOwner(77)),
            })
        );
        // Fewer data bytes than announced: EINVAL.
        assert_eq!(
            parse(&header(opcode::WRITE), &op_in, b"hell"),
            Err(Errno::EINVAL)
        );
        // An offset beyond off_t: EINVAL.
        op_in[8..16].copy_from_slice(&le64(u64::MAX));
        assert_eq!(
            parse(&header(opcode::WRITE), &op_in, b"hello"),
            Err(Errno::EINVAL)
        );
    }

    #[test]
    fn read_readdir_release_fsync() {
        let mut op_in = [0u8; OP_IN_LEN];
        op_in[0..8].copy_from_slice(&le64(3));
        op_in[8..16].copy_from_slice(&le64(10));
        op_in[16..20].copy_from_slice(&le32(4096));
        assert_eq!(
            parse(&header(opcode::READ), &op_in, b""),
            Ok(Request::Read {
                fh: FileHandle(3),
                offset: 10,
                size: 4096,
                flags: OpenFlags(0),
                lock_owner: None,
            })
        );
        assert_eq!(
            parse(&header(opcode::READDIR), &op_in, b""),
            Ok(Request::ReadDir {
                fh: FileHandle(3),
                offset: 10,
                size: 4096,
            })
        );
        let mut rel = [0u8; OP_IN_LEN];
        rel[0..8].copy_from_slice(&le64(3));
        rel[8..12].copy_from_slice(&le32(2));
        rel[12..16].copy_from_slice(&le32(FUSE_RELEASE_FLUSH));
        assert_eq!(
            parse(&header(opcode::RELEASE), &rel, b""),
            Ok(Request::Release {
                fh: FileHandle(3),
                flags: OpenFlags(2),
                lock_owner: None,
                flush: true,
            })
        );
        let mut fsync = [0u8; OP_IN_LEN];
        fsync[0..8].copy_from_slice(&le64(3));
        fsync[8..12].copy_from_slice(&le32(FUSE_FSYNC_FDATASYNC));
        assert_eq!(
            parse(&header(opcode::FSYNCDIR), &fsync, b""),
            Ok(Request::FSyncDir {
                fh: FileHandle(3),
                datasync: true,
            })
        );
    }

    #[test]
    fn setattr_reads_only_what_valid_marks() {
        let mut op_in = [0u8; OP_IN_LEN];
        op_in[0..4].copy_from_slice(&le32(FATTR_MODE | FATTR_SIZE | FATTR_MTIME | FATTR_FH));
        op_in[8..16].copy_from_slice(&le64(5)); // fh
        op_in[16..24].copy_from_slice(&le64(1000)); // size
        op_in[40..48].copy_from_slice(&le64(1_700_000_000)); // mtime
        op_in[60..64].copy_from_slice(&le32(500)); // mtimensec
        op_in[68..72].copy_from_slice(&le32(0o644)); // mode
        op_in[76..80].copy_from_slice(&le32(1000)); // uid (not marked)
        let Ok(Request::SetAttr(set)) = parse(&header(opcode::SETATTR), &op_in, b"") else {
            panic!("setattr");
        };
        assert_eq!(set.mode, Some(0o644));
        assert_eq!(set.size, Some(1000));
        assert_eq!(set.uid, None);
        assert_eq!(set.fh, Some(FileHandle(5)));
        assert_eq!(set.atime, None);
        assert_eq!(
            set.mtime,
            Some(TimeOrNow::SpecificTime(
                UNIX_EPOCH + Duration::new(1_700_000_000, 500)
            ))
        );
        op_in[0..4].copy_from_slice(&le32(FATTR_ATIME | FATTR_ATIME_NOW));
        let Ok(Request::SetAttr(set)) = parse(&header(opcode::SETATTR), &op_in, b"") else {
            panic!("setattr");
        };
        assert_eq!(set.atime, Some(TimeOrNow::Now));
    }

    #[test]
    fn xattrs_create_mknod_and_unknown_opcodes() {
        let mut op_in = [0u8; OP_IN_LEN];
        op_in[0..4].copy_from_slice(&le32(3));
        op_in[4..8].copy_from_slice(&le32(libc::XATTR_CREATE as u32));
        assert_eq!(
            parse(&header(opcode::SETXATTR), &op_in, b"user.a\0xyz"),
            Ok(Request::SetXAttr {
                name: OsStr::new("user.a"),
                value: b"xyz",
                flags: libc::XATTR_CREATE,
            })
        );
        assert_eq!(
            parse(&header(opcode::GETXATTR), &op_in, b"user.a\0"),
            Ok(Request::GetXAttr {
                name: OsStr::new("user.a"),
                size: 3,
            })
        );
        let mut create = [0u8; OP_IN_LEN];
        create[0..4].copy_from_slice(&le32(libc::O_CREAT as u32 | libc::O_RDWR as u32));
        create[4..8].copy_from_slice(&le32(0o100644));
        create[8..12].copy_from_slice(&le32(0o022));
        assert_eq!(
            parse(&header(opcode::CREATE), &create, b"f\0"),
            Ok(Request::Create {
                name: OsStr::new("f"),
                mode: 0o100644,
                umask: 0o022,
                flags: libc::O_CREAT | libc::O_RDWR,
            })
        );
        let mut mknod = [0u8; OP_IN_LEN];
        mknod[0..4].copy_from_slice(&le32(0o010644));
        mknod[4..8].copy_from_slice(&le32(0));
        mknod[8..12].copy_from_slice(&le32(0o022));
        assert_eq!(
            parse(&header(opcode::MKNOD), &mknod, b"fifo\0"),
            Ok(Request::MkNod {
                name: OsStr::new("fifo"),
                mode: 0o010644,
                umask: 0o022,
                rdev: 0,
            })
        );
        assert_eq!(
            parse(&header(25), &op_in, b""),
            Ok(Request::Unsupported(25))
        );
    }

    #[test]
    fn extensions_are_cut_from_the_end_of_the_payload() {
        let mut h = header(opcode::LOOKUP);
        h.total_extlen = 1;
        let op_in = [0u8; OP_IN_LEN];
        assert_eq!(
            parse(&h, &op_in, b"x\0EXTENSION"[..10].as_ref()),
            Ok(Request::Lookup {
                name: OsStr::new("x")
            })
        );
        h.total_extlen = 100;
        assert_eq!(parse(&h, &op_in, b"x\0"), Err(Errno::EINVAL));
    }

    #[test]
    fn copy_file_range_and_lseek() {
        let mut op_in = [0u8; OP_IN_LEN];
        for (i, v) in [1u64, 2, 3, 4, 5, 6, 0].iter().enumerate() {
            op_in[i * 8..i * 8 + 8].copy_from_slice(&le64(*v));
        }
        assert_eq!(
            parse(&header(opcode::COPY_FILE_RANGE), &op_in, b""),
            Ok(Request::CopyFileRange {
                fh_in: FileHandle(1),
                offset_in: 2,
                ino_out: INodeNo(3),
                fh_out: FileHandle(4),
                offset_out: 5,
                len: 6,
                flags: CopyFileRangeFlags::empty(),
            })
        );
        let mut lseek = [0u8; OP_IN_LEN];
        lseek[0..8].copy_from_slice(&le64(8));
        lseek[8..16].copy_from_slice(&le64(100));
        lseek[16..20].copy_from_slice(&le32(libc::SEEK_DATA as u32));
        assert_eq!(
            parse(&header(opcode::LSEEK), &lseek, b""),
            Ok(Request::Lseek {
                fh: FileHandle(8),
                offset: 100,
                whence: libc::SEEK_DATA,
            })
        );
    }

    fn sample_attr() -> FileAttr {
        FileAttr {
            ino: INodeNo(0x11),
            size: 0x22,
            blocks: 0x33,
            atime: UNIX_EPOCH + Duration::new(100, 1),
            mtime: UNIX_EPOCH + Duration::new(200, 2),
            ctime: UNIX_EPOCH - Duration::new(1, 500_000_000),
            crtime: UNIX_EPOCH,
            kind: FileType::RegularFile,
            perm: 0o644,
            nlink: 2,
            uid: 1000,
            gid: 100,
            rdev: 0x0801,
            blksize: 4096,
            flags: 0,
        }
    }

    #[test]
    fn fuse_attr_layout() {
        let b = attr_bytes(&sample_attr());
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().expect("8"));
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().expect("4"));
        assert_eq!((u64_at(0), u64_at(8), u64_at(16)), (0x11, 0x22, 0x33));
        assert_eq!((u64_at(24), u64_at(32)), (100, 200));
        // 1.5 s before the epoch: -2 s + 0.5 s, as fuser encodes it.
        assert_eq!(u64_at(40) as i64, -2);
        assert_eq!((u32_at(48), u32_at(52), u32_at(56)), (1, 2, 500_000_000));
        assert_eq!(u32_at(60), libc::S_IFREG | 0o644);
        assert_eq!((u32_at(64), u32_at(68), u32_at(72)), (2, 1000, 100));
        assert_eq!((u32_at(76), u32_at(80), u32_at(84)), (0x0801, 4096, 0));
    }

    #[test]
    fn entry_attr_open_and_small_outs() {
        let attr = sample_attr();
        let e = entry_out(
            &Duration::new(1, 5),
            &attr,
            &Duration::new(2, 6),
            Generation(9),
        );
        assert_eq!(&e[0..8], &le64(0x11));
        assert_eq!(&e[8..16], &le64(9));
        assert_eq!(&e[16..24], &le64(1));
        assert_eq!(&e[24..32], &le64(2));
        assert_eq!(&e[32..36], &le32(5));
        assert_eq!(&e[36..40], &le32(6));
        assert_eq!(&e[40..], &attr_bytes(&attr)[..]);

        let a = attr_out(&Duration::new(3, 7), &attr);
        assert_eq!(&a[0..8], &le64(3));
        assert_eq!(&a[8..12], &le32(7));
        assert_eq!(&a[16..], &attr_bytes(&attr)[..]);

        let o = open_out(FileHandle(4), FopenFlags::FOPEN_KEEP_CACHE, Some(12));
        assert_eq!(&o[0..8], &le64(4));
        assert_eq!(&o[8..12], &le32(FOPEN_PASSTHROUGH | 2));
        assert_eq!(&o[12..16], &le32(12));
        let o = open_out(FileHandle(4), FopenFlags::FOPEN_DIRECT_IO, None);
        assert_eq!(&o[8..16], &[1, 0, 0, 0, 0, 0, 0, 0]);

        assert_eq!(size_out(77), [77, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(lseek_out(-1), [0xff; 8]);
    }

    #[test]
    fn statfs_layout() {
        // SAFETY: statvfs is plain data; all-zero is a valid value.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        st.f_blocks = 1;
        st.f_bfree = 2;
        st.f_bavail = 3;
        st.f_files = 4;
        st.f_ffree = 5;
        st.f_bsize = 4096;
        st.f_namemax = 255;
        st.f_frsize = 512;
        let b = statfs_out(&st);
        for (i, v) in [1u64, 2, 3, 4, 5].iter().enumerate() {
            assert_eq!(&b[i * 8..i * 8 + 8], &le64(*v));
        }
        assert_eq!(&b[40..44], &le32(4096));
        assert_eq!(&b[44..48], &le32(255));
        assert_eq!(&b[48..52], &le32(512));
        assert!(b[52..].iter().all(|&x| x == 0));
    }

    #[test]
    fn dirents_are_aligned_and_stop_at_the_limit() {
        let mut buf = vec![0xAAu8; 100];
        let mut answer = Answer::new(&mut buf);
        let mut reply = RingReply::new(&mut answer, 64);
        // 24 + 3 = 27 -> 32 bytes.
        assert!(!reply.add(INodeNo(5), 1, FileType::Directory, OsStr::new("abc")));
        // 24 + 8 = 32 -> 32 bytes: 64 in all, still fits.
        assert!(!reply.add(INodeNo(6), 2, FileType::Symlink, OsStr::new("12345678")));
        // Full: the next one does not fit.
        assert!(reply.add(INodeNo(7), 3, FileType::RegularFile, OsStr::new("x")));
        DirectoryReply::ok(reply);
        assert_eq!(answer.result(), (0, 64));
        assert_eq!(&buf[0..8], &le64(5));
        assert_eq!(&buf[8..16], &le64(1));
        assert_eq!(&buf[16..20], &le32(3));
        assert_eq!(&buf[20..24], &le32(libc::S_IFDIR >> 12));
        assert_eq!(&buf[24..27], b"abc");
        assert_eq!(&buf[27..32], &[0; 5]);
        assert_eq!(&buf[52..56], &le32(libc::S_IFLNK >> 12));
        assert_eq!(&buf[56..64], b"12345678");
    }

    #[test]
    fn answers_default_to_eio_and_overflow_is_eio() {
        let mut buf = vec![0u8; 4];
        let answer = Answer::new(&mut buf);
        assert_eq!(answer.result(), (-libc::EIO, 0));
        let mut answer = Answer::new(&mut buf);
        DataReply::data(RingReply::new(&mut answer, 4), b"toolong");
        assert_eq!(answer.result(), (-libc::EIO, 0));
        let mut answer = Answer::new(&mut buf);
        DataReply::data(RingReply::new(&mut answer, 4), b"ok");
        assert_eq!(answer.result(), (0, 2));
        let mut answer = Answer::new(&mut buf);
        Reply::error(RingReply::new(&mut answer, 4), Errno::ENOENT);
        assert_eq!(answer.result(), (-libc::ENOENT, 0));
    }

    #[test]
    fn out_header_and_payload_size() {
        let mut header = vec![0xEEu8; HEADER_BUFFER_LEN];
        write_out_header(&mut header, 0x55, (-libc::ENOENT, 0));
        assert_eq!(&header[0..4], &le32(16));
        assert_eq!(&header[4..8], &(-libc::ENOENT).to_le_bytes());
        assert_eq!(&header[8..16], &le64(0x55));
        write_out_header(&mut header, 0x56, (0, 104));
        assert_eq!(&header[0..4], &le32(120));
        assert_eq!(&header[4..8], &le32(0));
        assert_eq!(
            &header[ENT_IN_OUT_OFFSET + 16..ENT_IN_OUT_OFFSET + 20],
            &le32(104)
        );
        // op_in is left alone.
        assert_eq!(header[OP_IN_OFFSET], 0xEE);
    }
}
