//! What an operation handler answers, independent of the transport that carries it. The
//! handlers in `mirror/fs.rs` take the caller as a [`Caller`] and answer through these traits;
//! `transport/dev.rs` implements them on fuser's reply types (requests read from /dev/fuse by
//! fuser's threads), `transport/uring` on a ring entry's buffers (FUSE over io_uring). One trait
//! per kind of answer, named after the FUSE reply it produces; each can also answer an error.

use std::ffi::OsStr;
use std::time::Duration;

use fuser::{Errno, FileAttr, FileHandle, FileType, FopenFlags, Generation, INodeNo};

use crate::mirror::io_mode::Backing;

/// Who sent a request: the fields of `fuse_in_header` the handlers use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Caller {
    pub pid: u32,
    pub uid: u32,
    pub gid: u32,
}

/// Every answer can be an error.
pub trait Reply {
    fn error(self, errno: Errno);
}

/// `fuse_entry_out`: LOOKUP, MKNOD, MKDIR, SYMLINK, LINK.
pub trait EntryReply: Reply {
    fn entry(
        self,
        entry_ttl: &Duration,
        attr: &FileAttr,
        attr_ttl: &Duration,
        generation: Generation,
    );
}

/// `fuse_attr_out`: GETATTR, SETATTR.
pub trait AttrReply: Reply {
    fn attr(self, ttl: &Duration, attr: &FileAttr);
}

/// Bytes: READ, READLINK.
pub trait DataReply: Reply {
    fn data(self, data: &[u8]);
}

/// No payload: UNLINK, RMDIR, RENAME, RELEASE, FSYNC, SETXATTR, ...
pub trait EmptyReply: Reply {
    fn ok(self);
}

/// `fuse_open_out`: OPEN, OPENDIR; with a backing file for a passthrough open.
pub trait OpenReply: Reply {
    fn opened(self, fh: FileHandle, flags: FopenFlags, backing: Option<&Backing>);
}

/// `fuse_entry_out` + `fuse_open_out`: CREATE.
pub trait CreateReply: Reply {
    #[allow(clippy::too_many_arguments)]
    fn created(
        self,
        entry_ttl: &Duration,
        attr: &FileAttr,
        attr_ttl: &Duration,
        generation: Generation,
        fh: FileHandle,
        flags: FopenFlags,
        backing: Option<&Backing>,
    );
}

/// `fuse_write_out`: WRITE, COPY_FILE_RANGE.
pub trait WriteReply: Reply {
    fn written(self, size: u32);
}

/// `fuse_statfs_out`.
pub trait StatfsReply: Reply {
    fn statfs(self, stat: &libc::statvfs);
}

/// GETXATTR, LISTXATTR: the size asked for, or the bytes.
pub trait XattrReply: Reply {
    fn size(self, size: u32);
    fn data(self, data: &[u8]);
}

/// `fuse_lseek_out`.
pub trait LseekReply: Reply {
    fn offset(self, offset: i64);
}

/// READDIR: entries added until the buffer is full (`add` returns true), then `ok`.
pub trait DirectoryReply: Reply {
    fn add(&mut self, ino: INodeNo, offset: u64, kind: FileType, name: &OsStr) -> bool;
    fn ok(self);
}
