//! The walker shared by every export format: it goes through a deployment set in path order
//! (parents before children), reads each path's metadata and contents from the *source tree*
//! (never through a mirror), and hands one [`Item`] at a time to a [`Sink`]. A path is read
//! only when its parent was itself exported as a real directory, and files are opened with
//! `O_NOFOLLOW`, so nothing outside the set is ever reached through a symlink. The second and
//! later names of a non-directory inode (same `st_dev`/`st_ino`) become hard links to the
//! first one exported. A path listed as a stub gets the stub program ([`super::stub`]) as its
//! contents, with the source file's owner, mode and times.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::analysis::closure::DeploymentSet;
use crate::analysis::paths::parent_of;
use crate::record::FileKind;
use crate::sys::{self, XattrAnswer};

use super::ExportError;

/// What is kept of a path besides its contents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Meta {
    /// Permission bits with setuid, setgid and sticky (the low 12 bits of `st_mode`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// (seconds, nanoseconds) since the epoch.
    pub atime: (i64, i64),
    pub mtime: (i64, i64),
    /// Extended attributes, every namespace the source lets root read (security.capability
    /// included), sorted by name.
    pub xattrs: Vec<(OsString, Vec<u8>)>,
}

/// What a path is, with what is needed to recreate it.
#[derive(Debug)]
pub enum Body {
    Dir,
    /// An open regular file of `size` bytes.
    File {
        file: File,
        size: u64,
    },
    /// The link's target text, never followed.
    Symlink(Vec<u8>),
    /// Another name of an inode already exported under this mirror path.
    HardLink(Vec<u8>),
    Fifo,
    Socket,
    CharDevice(u64),
    BlockDevice(u64),
}

/// One path of the set, ready to be written.
#[derive(Debug)]
pub struct Item {
    /// Normalized mirror path (`/usr/bin/ls`).
    pub path: Vec<u8>,
    pub meta: Meta,
    pub body: Body,
}

impl Item {
    /// The path relative to the root of the export (`usr/bin/ls`; empty for `/`).
    pub fn relative(&self) -> &[u8] {
        relative(&self.path)
    }
}

pub fn relative(path: &[u8]) -> &[u8] {
    path.strip_prefix(b"/").unwrap_or(path)
}

/// Where the walker's items go.
pub trait Sink {
    fn put(&mut self, item: Item) -> Result<(), ExportError>;
}

/// Counts of what was exported.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub hard_links: u64,
    pub special: u64,
    /// Bytes of file contents (each inode once) plus symlink targets.
    pub bytes: u64,
    /// Paths of the set that are gone from the source, or whose parent is no longer a
    /// directory: skipped.
    pub skipped: Vec<Vec<u8>>,
    /// Empty directories added to mount the kernel's trees and a /tmp on ([`MOUNT_DIRS`]),
    /// not counted above: they are not in the set.
    pub mount_dirs: Vec<&'static str>,
}

impl Totals {
    pub fn paths(&self) -> u64 {
        self.files + self.dirs + self.symlinks + self.hard_links + self.special
    }
}

/// Called after each path with (paths done, paths in the set, bytes so far).
pub type Progress<'a> = &'a mut dyn FnMut(u64, u64, u64);

/// Binaries to ship as stubs (mirror paths).
pub type Stubs = BTreeSet<Vec<u8>>;

/// Walks `set` over the tree at `source`, handing every path to `sink` in path order; the
/// paths of `stubs` are shipped as the stub program.
pub fn walk(
    set: &DeploymentSet,
    stubs: &Stubs,
    source: &Path,
    sink: &mut dyn Sink,
    progress: Progress<'_>,
) -> Result<Totals, ExportError> {
    let mut totals = Totals::default();
    let mut dirs: HashSet<Vec<u8>> = HashSet::new();
    let mut inodes: HashMap<(u64, u64), Vec<u8>> = HashMap::new();
    let total = set.entries.len() as u64;
    for (done, entry) in set.entries.iter().enumerate() {
        let parent_ok = parent_of(&entry.path).is_none_or(|parent| dirs.contains(parent));
        let item = if parent_ok && stubs.contains(&entry.path) {
            stub_item(&entry.path, source)?
        } else if parent_ok {
            read_item(&entry.path, source, &mut inodes)?
                .map(super::map::apply)
                .transpose()?
        } else {
            None
        };
        match item {
            Some(item) => {
                count(&item, &mut totals);
                if matches!(item.body, Body::Dir) {
                    dirs.insert(item.path.clone());
                }
                sink.put(item)?;
            }
            None => totals.skipped.push(entry.path.clone()),
        }
        progress(done as u64 + 1, total, totals.bytes);
    }
    Ok(totals)
}

fn count(item: &Item, totals: &mut Totals) {
    match &item.body {
        Body::Dir => totals.dirs += 1,
        Body::File { size, .. } => {
            totals.files += 1;
            totals.bytes += size;
        }
        Body::Symlink(target) => {
            totals.symlinks += 1;
            totals.bytes += target.len() as u64;
        }
        Body::HardLink(_) => totals.hard_links += 1,
        Body::Fifo | Body::Socket | Body::CharDevice(_) | Body::BlockDevice(_) => {
            totals.special += 1
        }
    }
}

/// The directories a root needs to be chrooted into or run as a container (`/proc`, `/sys`
/// and `/dev` to mount the kernel's trees on, `/tmp` for the programs' temporary files), with
/// their usual modes.
pub const MOUNT_DIRS: [(&str, u32); 4] = [
    ("/dev", 0o755),
    ("/proc", 0o555),
    ("/sys", 0o555),
    ("/tmp", 0o1777),
];

/// Hands `sink` an empty root-owned directory for each of [`MOUNT_DIRS`] the set does not
/// hold, with the times of the source's root (so that the same set exports the same bytes).
/// Called after [`walk`]: they come after the set's paths in path order only for the tar
/// stream, which does not require it.
pub fn add_mount_dirs(
    set: &DeploymentSet,
    source: &Path,
    sink: &mut dyn Sink,
    totals: &mut Totals,
) -> Result<(), ExportError> {
    let times = std::fs::metadata(source)
        .map(|stat| {
            (
                (stat.atime(), stat.atime_nsec()),
                (stat.mtime(), stat.mtime_nsec()),
            )
        })
        .unwrap_or_default();
    for (path, mode) in MOUNT_DIRS {
        if set
            .entries
            .iter()
            .any(|entry| entry.path == path.as_bytes())
        {
            continue;
        }
        sink.put(Item {
            path: path.as_bytes().to_vec(),
            meta: Meta {
                mode,
                uid: 0,
                gid: 0,
                atime: times.0,
                mtime: times.1,
                xattrs: Vec::new(),
            },
            body: Body::Dir,
        })?;
        totals.mount_dirs.push(path);
    }
    Ok(())
}

/// Where a mirror path lies under `source`.
pub fn host_path(source: &Path, path: &[u8]) -> PathBuf {
    let rel = relative(path);
    if rel.is_empty() {
        source.to_path_buf()
    } else {
        source.join(OsStr::from_bytes(rel))
    }
}

fn read_error(path: &Path, action: &'static str) -> impl FnOnce(io::Error) -> ExportError + use<> {
    let path = path.to_path_buf();
    move |source| ExportError::Read {
        path,
        action,
        source,
    }
}

/// The item for `path`, or None when it is gone from the source.
fn read_item(
    path: &[u8],
    source: &Path,
    inodes: &mut HashMap<(u64, u64), Vec<u8>>,
) -> Result<Option<Item>, ExportError> {
    let host = host_path(source, path);
    // The root of the source may itself be a symlink (a "current" release link).
    let stat = if path == b"/" {
        std::fs::metadata(&host)
    } else {
        std::fs::symlink_metadata(&host)
    };
    let stat = match stat {
        Ok(stat) => stat,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(read_error(&host, "lstat")(e)),
    };
    let kind = FileKind::from_mode(stat.mode());
    if kind != FileKind::Dir && stat.nlink() > 1 {
        let key = (stat.dev(), stat.ino());
        if let Some(first) = inodes.get(&key) {
            let meta = plain_meta(&stat);
            return Ok(Some(Item {
                path: path.to_vec(),
                meta,
                body: Body::HardLink(first.clone()),
            }));
        }
        inodes.insert(key, path.to_vec());
    }
    let (meta, body) = match kind {
        FileKind::Dir => {
            let dir = open_nofollow(&host, libc::O_DIRECTORY).map_err(read_error(&host, "open"))?;
            (with_xattrs(plain_meta(&stat), &dir, &host)?, Body::Dir)
        }
        FileKind::File => {
            let file = open_nofollow(&host, 0).map_err(read_error(&host, "open"))?;
            let fstat = file.metadata().map_err(read_error(&host, "fstat"))?;
            let meta = with_xattrs(plain_meta(&fstat), &file, &host)?;
            let size = fstat.len();
            (meta, Body::File { file, size })
        }
        FileKind::Symlink => {
            let target = std::fs::read_link(&host).map_err(read_error(&host, "readlink"))?;
            let target = target.into_os_string().into_encoded_bytes();
            (plain_meta(&stat), Body::Symlink(target))
        }
        FileKind::Fifo => (plain_meta(&stat), Body::Fifo),
        FileKind::Socket => (plain_meta(&stat), Body::Socket),
        FileKind::CharDevice => (plain_meta(&stat), Body::CharDevice(stat.rdev())),
        FileKind::BlockDevice => (plain_meta(&stat), Body::BlockDevice(stat.rdev())),
        FileKind::Unknown => return Ok(None),
    };
    Ok(Some(Item {
        path: path.to_vec(),
        meta,
        body,
    }))
}

/// The stub program under `path`, with the owner, mode and times of the source's file (its
/// extended attributes, a capability say, are not the stub's); None when the file is gone.
fn stub_item(path: &[u8], source: &Path) -> Result<Option<Item>, ExportError> {
    let host = host_path(source, path);
    let stat = match std::fs::symlink_metadata(&host) {
        Ok(stat) => stat,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(read_error(&host, "lstat")(e)),
    };
    let program = super::stub::exit0_elf().ok_or_else(|| ExportError::Read {
        path: host.clone(),
        action: "replace by a stub (no stub program for this architecture)",
        source: io::Error::from_raw_os_error(libc::ENOEXEC),
    })?;
    let file = super::stub::memory_file(&program).map_err(|source| ExportError::Write {
        path: PathBuf::from("memfd:depsetfs-stub"),
        action: "write the stub program",
        source,
    })?;
    let meta = plain_meta(&stat);
    Ok(Some(Item {
        path: path.to_vec(),
        meta,
        body: Body::File {
            file,
            size: program.len() as u64,
        },
    }))
}

/// Opens a file or directory of the source for reading without following a final symlink
/// and, where the kernel allows it, without touching its atime.
fn open_nofollow(path: &Path, extra: i32) -> io::Result<File> {
    let open = |flags: i32| {
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | extra | flags)
            .open(path)
    };
    match open(libc::O_NOATIME) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => open(0),
        other => other,
    }
}

fn plain_meta(stat: &std::fs::Metadata) -> Meta {
    Meta {
        mode: stat.mode() & 0o7777,
        uid: stat.uid(),
        gid: stat.gid(),
        atime: (stat.atime(), stat.atime_nsec()),
        mtime: (stat.mtime(), stat.mtime_nsec()),
        xattrs: Vec::new(),
    }
}

fn with_xattrs(mut meta: Meta, file: &File, host: &Path) -> Result<Meta, ExportError> {
    meta.xattrs = read_xattrs(file).map_err(read_error(host, "read extended attributes of"))?;
    Ok(meta)
}

/// Every extended attribute of an open file; none where the filesystem has no xattrs.
pub fn read_xattrs(file: &File) -> io::Result<Vec<(OsString, Vec<u8>)>> {
    let fd = file.as_raw_fd();
    let names = match xattr_value(|size| sys::listxattr(fd, size)) {
        Ok(names) => names,
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut xattrs = Vec::new();
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let name = OsStr::from_bytes(name);
        match xattr_value(|size| sys::getxattr(fd, name, size)) {
            Ok(value) => xattrs.push((name.to_owned(), value)),
            // Removed between the list and the read.
            Err(e) if e.raw_os_error() == Some(libc::ENODATA) => {}
            Err(e) => return Err(e),
        }
    }
    xattrs.sort();
    Ok(xattrs)
}

/// Asks for the size, then the data; retries if it grew in between.
fn xattr_value(query: impl Fn(usize) -> io::Result<XattrAnswer>) -> io::Result<Vec<u8>> {
    for _ in 0..4 {
        let size = match query(0)? {
            XattrAnswer::Size(size) => size,
            XattrAnswer::Data(data) => return Ok(data),
        };
        if size == 0 {
            return Ok(Vec::new());
        }
        match query(size) {
            Ok(XattrAnswer::Data(data)) => return Ok(data),
            Ok(XattrAnswer::Size(_)) => return Ok(Vec::new()),
            Err(e) if e.raw_os_error() == Some(libc::ERANGE) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::from_raw_os_error(libc::ERANGE))
}
