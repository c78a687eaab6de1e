//! Where an export may be written, and how it is put there without destroying anything
//! depsetfs did not write. An output path is refused inside the recorded mountpoint or the
//! kernel's trees, and refused outright (whatever `--force` says) when it is a system
//! directory or holds the source tree, the current directory or the state directory. An
//! existing output is replaced, with `--force`, only when it is an **earlier export** (a
//! directory holding depsetfs's [`MARKER`] file, or a tar file opening with depsetfs's PAX
//! global header, owned by us) or an empty directory, and never when something is mounted
//! under it. The new output is built under a temporary name ([`Staged`]) and exchanged into
//! place with `renameat2`; the old one is checked again once it is out of the way, then removed
//! without crossing into another filesystem.

use std::ffi::OsString;
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::ExportError;
use crate::analysis::paths::{is_within, normalize_mirror_path};
use crate::record::LogHeader;

/// The file in the root of every `dir` export and OCI layout that says depsetfs wrote it.
pub const MARKER: &str = ".depsetfs-export";
/// The first word of the marker's contents (then the format version and the format).
pub const MARKER_TAG: &str = "depsetfs-export";
/// The version of the marker and tar tag.
pub const MARKER_VERSION: u32 = 1;

/// The marker's contents for `format` (`dir`, `oci`, `tar`): `depsetfs-export 1 dir\n`.
pub fn marker_text(format: &str) -> String {
    format!("{MARKER_TAG} {MARKER_VERSION} {format}\n")
}

/// Directories never replaced, even empty, even with `--force`.
const SYSTEM_DIRS: &[&str] = &[
    "/",
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/home",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/media",
    "/mnt",
    "/opt",
    "/proc",
    "/root",
    "/run",
    "/sbin",
    "/srv",
    "/sys",
    "/tmp",
    "/usr",
    "/usr/bin",
    "/usr/include",
    "/usr/lib",
    "/usr/lib32",
    "/usr/lib64",
    "/usr/libexec",
    "/usr/local",
    "/usr/local/bin",
    "/usr/local/lib",
    "/usr/local/sbin",
    "/usr/sbin",
    "/usr/share",
    "/usr/src",
    "/var",
    "/var/backups",
    "/var/cache",
    "/var/lib",
    "/var/local",
    "/var/lock",
    "/var/log",
    "/var/mail",
    "/var/opt",
    "/var/run",
    "/var/spool",
    "/var/tmp",
];

fn forbidden(path: &Path, where_: impl Into<String>) -> ExportError {
    ExportError::ForbiddenOutput {
        path: path.to_path_buf(),
        where_: where_.into(),
    }
}

/// The output as an absolute path, checked: its directory exists, it is not inside the
/// recorded mountpoint or the kernel's trees, not a system directory nor a directory holding
/// the source, the current or the state directory, and if it exists it is something depsetfs
/// may replace, and `force` was given.
pub fn check_output(
    output: &Path,
    header: &LogHeader,
    force: bool,
) -> Result<PathBuf, ExportError> {
    let mut absolute = std::path::absolute(output).map_err(|source| ExportError::Output {
        path: output.to_path_buf(),
        action: "resolve",
        source,
    })?;
    if absolute.file_name().is_none() {
        // `..` or `/`: what it names, to be refused for what it is.
        if let Ok(resolved) = absolute.canonicalize() {
            absolute = resolved;
        }
    }
    // Before resolving: a mountpoint that is gone (a finished run's) is refused too.
    refuse_forbidden(&absolute, header)?;
    refuse_protected(&absolute, header)?;
    let name = absolute
        .file_name()
        .ok_or_else(|| forbidden(&absolute, "to a path without a file name"))?
        .to_owned();
    let parent = absolute.parent().unwrap_or(Path::new("/"));
    let parent = parent
        .canonicalize()
        .map_err(|source| ExportError::OutputDirectory {
            output: absolute.clone(),
            dir: parent.to_path_buf(),
            source,
        })?;
    if !parent.is_dir() {
        return Err(ExportError::OutputDirectory {
            output: absolute.clone(),
            dir: parent,
            source: io::Error::from_raw_os_error(libc::ENOTDIR),
        });
    }
    let resolved = parent.join(&name);
    refuse_forbidden(&resolved, header)?;
    refuse_protected(&resolved, header)?;
    match replaceable(&resolved)? {
        Existing::Absent => {}
        Existing::Replaceable if force => {}
        Existing::Replaceable => return Err(ExportError::Exists(resolved)),
    }
    Ok(resolved)
}

/// Inside the recorded mountpoint, /proc, /sys, /dev.
fn refuse_forbidden(path: &Path, header: &LogHeader) -> Result<(), ExportError> {
    let bytes = normalize_mirror_path(path.as_os_str().as_bytes());
    let mountpoint = normalize_mirror_path(header.mountpoint.as_bytes());
    if !header.mountpoint.is_empty() && mountpoint != b"/" && is_within(&bytes, &mountpoint) {
        return Err(forbidden(
            path,
            format!("inside the mirror's mountpoint {}", header.mountpoint),
        ));
    }
    for tree in ["/proc", "/sys", "/dev"] {
        if is_within(&bytes, tree.as_bytes()) {
            return Err(forbidden(path, format!("inside {tree}")));
        }
    }
    Ok(())
}

/// A system directory, or a directory holding the source tree, the current directory or the
/// state directory: never an output.
fn refuse_protected(path: &Path, header: &LogHeader) -> Result<(), ExportError> {
    let bytes = normalize_mirror_path(path.as_os_str().as_bytes());
    if SYSTEM_DIRS.iter().any(|dir| bytes == dir.as_bytes()) {
        return Err(forbidden(
            path,
            "over a system directory (even with --force)",
        ));
    }
    let state = crate::state::StateDir::from_env();
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let protected: [(Option<PathBuf>, &str); 5] = [
        (Some(PathBuf::from(&header.source)), "the source tree"),
        (std::env::current_dir().ok(), "the current directory"),
        (Some(state.root().to_path_buf()), "the state directory"),
        (Some(std::env::temp_dir()), "the temporary directory"),
        (home, "the home directory"),
    ];
    for (dir, what) in protected {
        let Some(dir) = dir else { continue };
        // Both as given and resolved: either spelling may be the one the output matches.
        let resolved = dir.canonicalize().ok();
        for dir in std::iter::once(dir).chain(resolved) {
            let dir = normalize_mirror_path(dir.as_os_str().as_bytes());
            if is_within(&dir, &bytes) {
                let how = if dir == bytes {
                    ""
                } else {
                    "a directory holding "
                };
                return Err(forbidden(
                    path,
                    format!("over {how}{what} (even with --force)"),
                ));
            }
        }
    }
    Ok(())
}

/// What is at an output path.
#[derive(Debug, PartialEq, Eq)]
pub enum Existing {
    Absent,
    /// An earlier export or an empty directory.
    Replaceable,
}

/// Whether the thing at `path` may be replaced; an error naming it when it may not.
pub fn replaceable(path: &Path) -> Result<Existing, ExportError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Existing::Absent),
        Err(source) => {
            return Err(ExportError::Output {
                path: path.to_path_buf(),
                action: "lstat",
                source,
            });
        }
    };
    let not_ours = |what: &str| {
        forbidden(
            path,
            format!(
                "over {what} that depsetfs did not write (only an earlier export or an empty \
                 directory is replaced, even with --force)"
            ),
        )
    };
    let file_type = meta.file_type();
    if file_type.is_dir() {
        if is_empty_dir(path)? {
            refuse_mounts_under(path)?;
            return Ok(Existing::Replaceable);
        }
        if !is_marked_dir(path) {
            return Err(not_ours("a directory"));
        }
        refuse_mounts_under(path)?;
        return Ok(Existing::Replaceable);
    }
    if file_type.is_file() {
        if meta.uid() == euid() && is_tagged_tar(path) {
            return Ok(Existing::Replaceable);
        }
        return Err(not_ours("a file"));
    }
    if file_type.is_symlink() {
        return Err(not_ours("a symlink"));
    }
    Err(not_ours("a special file"))
}

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() }
}

fn is_empty_dir(path: &Path) -> Result<bool, ExportError> {
    let mut entries = std::fs::read_dir(path).map_err(|source| ExportError::Output {
        path: path.to_path_buf(),
        action: "list",
        source,
    })?;
    Ok(entries.next().is_none())
}

/// A directory with our marker: a regular file (not a symlink), owned by us, writable by no
/// one else, starting with the tag.
fn is_marked_dir(path: &Path) -> bool {
    let marker = path.join(MARKER);
    let Ok(meta) = std::fs::symlink_metadata(&marker) else {
        return false;
    };
    if !meta.file_type().is_file() || meta.uid() != euid() || meta.mode() & 0o022 != 0 {
        return false;
    }
    let mut text = [0u8; 64];
    let n = open_nofollow(&marker)
        .and_then(|mut file| file.read(&mut text))
        .unwrap_or(0);
    text[..n].starts_with(format!("{MARKER_TAG} ").as_bytes())
}

/// A tar file whose first entry is depsetfs's PAX global header (see [`super::tar`]).
fn is_tagged_tar(path: &Path) -> bool {
    let mut head = [0u8; 1024];
    let Ok(mut file) = open_nofollow(path) else {
        return false;
    };
    let mut filled = 0;
    while filled < head.len() {
        match file.read(&mut head[filled..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => filled += n,
        }
    }
    filled == head.len() && super::tar::is_tagged(&head)
}

fn open_nofollow(path: &Path) -> io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
}

/// Something mounted at or below `path`: removing it would reach into that filesystem.
fn refuse_mounts_under(path: &Path) -> Result<(), ExportError> {
    let Ok(mounts) = crate::sys::mountinfo::read_mountinfo() else {
        return Ok(());
    };
    let bytes = path.as_os_str().as_bytes();
    if let Some(mount) = mounts
        .iter()
        .find(|m| is_within(m.mount_point.as_os_str().as_bytes(), bytes))
    {
        return Err(forbidden(
            path,
            format!(
                "over a directory with a filesystem mounted at {} (unmount it first)",
                mount.mount_point.display()
            ),
        ));
    }
    Ok(())
}

/// Writes the marker into the root of a finished `dir` or `oci` output: root's, read-only.
pub fn write_marker(root: &Path, format: &str) -> Result<(), ExportError> {
    let path = root.join(MARKER);
    let error = |action| {
        let path = path.clone();
        move |source| ExportError::Write {
            path,
            action,
            source,
        }
    };
    // The set may hold a marker of its own (a source that is itself an export): ours wins.
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(error("replace")(e)),
        _ => {}
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o444)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .map_err(error("create the export marker"))?;
    io::Write::write_all(&mut file, marker_text(format).as_bytes())
        .map_err(error("write the export marker"))
}

/// The output under construction: a temporary name in the output's directory, removed on
/// drop unless committed.
pub struct Staged {
    temporary: PathBuf,
    output: PathBuf,
    committed: bool,
}

impl Staged {
    /// A temporary name next to `output` that nothing has: `.NAME.depsetfs-tmp.PID[.N]`.
    pub fn new(output: &Path) -> Result<Staged, ExportError> {
        let parent = output.parent().unwrap_or(Path::new("/"));
        for attempt in 0..1000u32 {
            let mut name = OsString::from(".");
            name.push(output.file_name().unwrap_or_default());
            name.push(format!(".depsetfs-tmp.{}", std::process::id()));
            if attempt > 0 {
                name.push(format!(".{attempt}"));
            }
            let temporary = parent.join(name);
            if std::fs::symlink_metadata(&temporary).is_err() {
                return Ok(Staged {
                    temporary,
                    output: output.to_path_buf(),
                    committed: false,
                });
            }
        }
        Err(ExportError::Output {
            path: output.to_path_buf(),
            action: "find a free temporary name next to",
            source: io::Error::from_raw_os_error(libc::EEXIST),
        })
    }

    pub fn path(&self) -> &Path {
        &self.temporary
    }

    /// Moves the finished output into place: a plain rename, or, when `force` was given and
    /// the output is something we may replace, an exchange with it, then removed once checked
    /// again under the temporary name (a swap in between is put back and refused).
    pub fn commit(mut self, force: bool) -> Result<(), ExportError> {
        let exists = match replaceable(&self.output)? {
            Existing::Absent => false,
            Existing::Replaceable if force => true,
            Existing::Replaceable => return Err(ExportError::Exists(self.output.clone())),
        };
        let renamed = if exists {
            exchange(&self.temporary, &self.output)
        } else {
            rename_noreplace(&self.temporary, &self.output)
        };
        renamed.map_err(|source| ExportError::Output {
            path: self.output.clone(),
            action: "move into place",
            source,
        })?;
        self.committed = true;
        if exists {
            // The temporary name now holds the old output.
            if let Err(error) = replaceable(&self.temporary) {
                // Put it back; if that fails, leave both where they are rather than remove.
                if exchange(&self.temporary, &self.output).is_ok() {
                    self.committed = false;
                }
                return Err(error);
            }
            remove_any(&self.temporary);
        }
        Ok(())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.committed {
            remove_any(&self.temporary);
        }
    }
}

fn split(path: &Path) -> (&Path, &std::ffi::OsStr) {
    (
        path.parent().unwrap_or(Path::new("/")),
        path.file_name().unwrap_or_default(),
    )
}

fn renameat2(from: &Path, to: &Path, flags: u32) -> io::Result<()> {
    let (from_dir, from_name) = split(from);
    let (to_dir, to_name) = split(to);
    let from_dir = crate::sys::open_path(from_dir, libc::O_PATH | libc::O_DIRECTORY)?;
    let to_dir = crate::sys::open_path(to_dir, libc::O_PATH | libc::O_DIRECTORY)?;
    crate::sys::renameat2(
        from_dir.as_raw_fd(),
        from_name,
        to_dir.as_raw_fd(),
        to_name,
        flags,
    )
}

fn exchange(from: &Path, to: &Path) -> io::Result<()> {
    renameat2(from, to, libc::RENAME_EXCHANGE)
}

fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    renameat2(from, to, libc::RENAME_NOREPLACE)
}

/// Removes a file or a whole tree that depsetfs wrote, ignoring errors (it may not exist).
/// Never follows a symlink and never descends into another filesystem mounted inside the
/// tree (such a directory and its parents are left in place).
pub fn remove_any(path: &Path) {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return;
    };
    if meta.is_dir() {
        remove_tree(path, meta.dev());
    } else {
        let _ = std::fs::remove_file(path);
    }
}

fn remove_tree(dir: &Path, dev: u64) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            match std::fs::symlink_metadata(&path) {
                Ok(meta) if meta.is_dir() => {
                    if meta.dev() == dev {
                        remove_tree(&path, dev);
                    }
                }
                Ok(_) => {
                    let _ = std::fs::remove_file(&path);
                }
                Err(_) => {}
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}
