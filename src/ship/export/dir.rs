//! The `dir` format: the set recreated as a directory tree. Files are copied (the kernel's
//! `copy_file_range` where it can), symlinks recreated as symlinks, hard links linked, FIFOs,
//! sockets and device nodes made with `mknod`. Owner first, then mode (chown clears setuid
//! bits), then extended attributes (chown also clears `security.capability`), then times.
//! Directories are created writable and get their own mode, xattrs and times last, deepest
//! first, so that writing their entries does not change their mtime afterwards.

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::ExportError;
use super::walk::{
    Body, Item, Meta, Progress, Sink, Stubs, Totals, add_mount_dirs, host_path, walk,
};
use crate::analysis::closure::DeploymentSet;

/// Writes the set as a tree rooted at `root` (created here), with empty directories to mount
/// on ([`add_mount_dirs`]): a root to chroot into.
pub fn write(
    set: &DeploymentSet,
    stubs: &Stubs,
    source: &Path,
    root: &Path,
    progress: Progress<'_>,
) -> Result<Totals, ExportError> {
    write_tree(set, stubs, source, root, progress, false)
}

/// [`write`], plus the export marker in the root ([`super::output::MARKER`]): what
/// `depsetfs export` writes, and may later replace.
pub fn write_marked(
    set: &DeploymentSet,
    stubs: &Stubs,
    source: &Path,
    root: &Path,
    progress: Progress<'_>,
) -> Result<Totals, ExportError> {
    write_tree(set, stubs, source, root, progress, true)
}

fn write_tree(
    set: &DeploymentSet,
    stubs: &Stubs,
    source: &Path,
    root: &Path,
    progress: Progress<'_>,
    marked: bool,
) -> Result<Totals, ExportError> {
    let mut sink = DirSink {
        root: root.to_path_buf(),
        dirs: Vec::new(),
    };
    if !set.entries.iter().any(|entry| entry.path == b"/") {
        make_dir(root)?;
    }
    let mut totals = walk(set, stubs, source, &mut sink, progress)?;
    add_mount_dirs(set, source, &mut sink, &mut totals)?;
    // Before the directories get their times: writing the marker would change the root's.
    if marked {
        super::output::write_marker(root, "dir")?;
    }
    sink.finish_dirs()?;
    Ok(totals)
}

struct DirSink {
    root: PathBuf,
    /// Directories whose metadata is applied at the end.
    dirs: Vec<(PathBuf, Meta)>,
}

fn write_error(path: &Path, action: &'static str) -> impl FnOnce(io::Error) -> ExportError + use<> {
    let path = path.to_path_buf();
    move |source| ExportError::Write {
        path,
        action,
        source,
    }
}

fn make_dir(path: &Path) -> Result<(), ExportError> {
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(path)
        .map_err(write_error(path, "create the directory"))
}

impl Sink for DirSink {
    fn put(&mut self, item: Item) -> Result<(), ExportError> {
        let to = host_path(&self.root, &item.path);
        let symlink = matches!(item.body, Body::Symlink(_));
        match item.body {
            Body::Dir => {
                make_dir(&to)?;
                self.dirs.push((to, item.meta));
                return Ok(());
            }
            Body::File { mut file, size } => copy_file(&mut file, size, &to)?,
            Body::Symlink(target) => std::os::unix::fs::symlink(OsStr::from_bytes(&target), &to)
                .map_err(write_error(&to, "create the symlink"))?,
            Body::HardLink(first) => {
                let first = host_path(&self.root, &first);
                return std::fs::hard_link(&first, &to).map_err(write_error(&to, "hard-link"));
            }
            Body::Fifo => mknod(&to, libc::S_IFIFO, 0)?,
            Body::Socket => mknod(&to, libc::S_IFSOCK, 0)?,
            Body::CharDevice(rdev) => mknod(&to, libc::S_IFCHR, rdev)?,
            Body::BlockDevice(rdev) => mknod(&to, libc::S_IFBLK, rdev)?,
        }
        apply_meta(&to, &item.meta, symlink)
    }
}

impl DirSink {
    /// Mode, owner, xattrs and times of every directory, children before parents.
    fn finish_dirs(&mut self) -> Result<(), ExportError> {
        for (path, meta) in self.dirs.iter().rev() {
            apply_meta(path, meta, false)?;
        }
        Ok(())
    }
}

fn copy_file(from: &mut File, size: u64, to: &Path) -> Result<(), ExportError> {
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(to)
        .map_err(write_error(to, "create the file"))?;
    // At most the size seen at open: a file growing meanwhile is cut there, as tar would.
    io::copy(&mut from.take(size), &mut out).map_err(write_error(to, "copy into"))?;
    Ok(())
}

fn cpath(path: &Path) -> Result<CString, ExportError> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| ExportError::Write {
        path: path.to_path_buf(),
        action: "name (a NUL byte in the path)",
        source: io::Error::from_raw_os_error(libc::EINVAL),
    })
}

fn mknod(path: &Path, kind: libc::mode_t, rdev: u64) -> Result<(), ExportError> {
    let c = cpath(path)?;
    // SAFETY: valid C string; mode and dev are plain integers.
    if unsafe { libc::mknod(c.as_ptr(), kind | 0o600, rdev as libc::dev_t) } != 0 {
        return Err(write_error(path, "create the node")(
            io::Error::last_os_error(),
        ));
    }
    Ok(())
}

fn check(result: libc::c_int, path: &Path, action: &'static str) -> Result<(), ExportError> {
    if result != 0 {
        return Err(write_error(path, action)(io::Error::last_os_error()));
    }
    Ok(())
}

/// Owner, mode, xattrs, times, in that order, never following a symlink.
fn apply_meta(path: &Path, meta: &Meta, symlink: bool) -> Result<(), ExportError> {
    let c = cpath(path)?;
    // SAFETY: valid C string; ids are plain integers.
    let chown = unsafe {
        libc::fchownat(
            libc::AT_FDCWD,
            c.as_ptr(),
            meta.uid,
            meta.gid,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    // Not root: keep going with our own ownership rather than fail the whole export.
    if chown != 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EPERM) {
        return check(chown, path, "change the owner of");
    }
    if !symlink {
        // SAFETY: valid C string.
        check(
            unsafe { libc::fchmodat(libc::AT_FDCWD, c.as_ptr(), meta.mode, 0) },
            path,
            "change the mode of",
        )?;
        set_xattrs(path, &c, meta)?;
    }
    let times = [timespec(meta.atime), timespec(meta.mtime)];
    // SAFETY: valid C string and a two-element timespec array.
    check(
        unsafe {
            libc::utimensat(
                libc::AT_FDCWD,
                c.as_ptr(),
                times.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        },
        path,
        "set the times of",
    )
}

fn timespec((secs, nanos): (i64, i64)) -> libc::timespec {
    libc::timespec {
        tv_sec: secs as libc::time_t,
        tv_nsec: nanos as libc::c_long,
    }
}

fn set_xattrs(path: &Path, c: &CString, meta: &Meta) -> Result<(), ExportError> {
    for (name, value) in &meta.xattrs {
        let name_c = CString::new(name.as_bytes()).map_err(|_| ExportError::Write {
            path: path.to_path_buf(),
            action: "set an extended attribute (a NUL in its name) on",
            source: io::Error::from_raw_os_error(libc::EINVAL),
        })?;
        // SAFETY: valid C strings; value valid for its length.
        let result = unsafe {
            libc::lsetxattr(
                c.as_ptr(),
                name_c.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            )
        };
        check(result, path, "set an extended attribute on")?;
    }
    Ok(())
}
