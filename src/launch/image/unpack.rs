//! Applying one layer (tar, or tar+gzip) onto an image root, as a container runtime does: the
//! blob is first checked against its digest, then its whiteouts (`.wh.NAME` removes NAME,
//! `.wh..wh..opq` empties its directory) are applied to what the lower layers left, then its
//! members are written with their owner, mode, extended attributes (PAX `SCHILY.xattr.*`) and
//! mtime: files, directories, symlinks, hard links, devices and fifos. Nothing is ever written
//! outside the root: a member name with a `..` component is refused, a leading `/` is read as
//! relative to the root (as GNU tar does), and every parent directory is resolved with
//! `openat2(RESOLVE_IN_ROOT)` from the root's descriptor, so a symlink unpacked earlier (even
//! `/etc -> /host`) is followed as a chroot would, inside the root.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;

use super::{HashingReader, ImageError, Layer, blob_path, check_digest, unpack_error};
use crate::sys;

/// The whiteout prefix and the opaque-directory marker of the OCI layer format.
const WHITEOUT: &[u8] = b".wh.";
const OPAQUE: &[u8] = b".wh..wh..opq";

/// Compression of a layer, from its media type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Compression {
    None,
    Gzip,
}

fn compression(layout: &Path, layer: &Layer) -> Result<Compression, ImageError> {
    let media = layer.media_type.as_str();
    if media.ends_with("tar+gzip") || media.ends_with("tar.gzip") || media.ends_with(".tar.gz") {
        Ok(Compression::Gzip)
    } else if media.ends_with(".tar") || media.ends_with("layer.v1.tar") {
        Ok(Compression::None)
    } else {
        Err(ImageError::Invalid {
            layout: layout.to_path_buf(),
            what: format!("layer {}", layer.digest),
            message: format!("media type {media:?} is not supported (tar and tar+gzip are)"),
        })
    }
}

/// Checks `layer`'s blob, then applies it onto `root`.
pub fn apply_layer(layout: &Path, layer: &Layer, root: &Path) -> Result<(), ImageError> {
    let compression = compression(layout, layer)?;
    let path = blob_path(layout, &layer.digest)?;
    let open = || {
        File::open(&path).map_err(|source| ImageError::Blob {
            layout: layout.to_path_buf(),
            digest: layer.digest.clone(),
            source,
        })
    };
    let (hex, size) = HashingReader::new(BufReader::with_capacity(1 << 20, open()?))
        .finish()
        .map_err(|source| ImageError::Blob {
            layout: layout.to_path_buf(),
            digest: layer.digest.clone(),
            source,
        })?;
    check_digest(layout, &layer.digest, &hex, size)?;
    let root_fd = sys::open_path(root, libc::O_PATH | libc::O_DIRECTORY)
        .map_err(unpack_error(root, "open the image root"))?;
    let layer_ctx = LayerContext {
        layout,
        digest: &layer.digest,
        root,
        root_fd: &root_fd,
    };
    // Whiteouts first: they remove what lower layers left, never this layer's own members.
    let mut whiteouts = Vec::new();
    layer_ctx.for_each_member(open()?, compression, |member, _| {
        if let Some(whiteout) = member.whiteout() {
            whiteouts.push(whiteout);
        }
        Ok(())
    })?;
    for (dir, name) in &whiteouts {
        layer_ctx.remove_whiteout(dir, name.as_deref())?;
    }
    layer_ctx.for_each_member(open()?, compression, |member, entry| {
        if member.whiteout().is_some() {
            return Ok(());
        }
        layer_ctx.extract(&member, entry)
    })
}

/// One member's name, split and checked.
struct Member {
    /// The name as written in the layer, for messages.
    display: String,
    /// Parent directory components and the final name (empty: the root itself).
    parents: Vec<OsString>,
    name: Option<OsString>,
}

impl Member {
    /// `(dir, Some(name))` for `.wh.name`, `(dir, None)` for the opaque marker.
    fn whiteout(&self) -> Option<(Vec<OsString>, Option<OsString>)> {
        let name = self.name.as_ref()?.as_bytes();
        if name == OPAQUE {
            Some((self.parents.clone(), None))
        } else {
            name.strip_prefix(WHITEOUT).map(|rest| {
                (
                    self.parents.clone(),
                    Some(OsStr::from_bytes(rest).to_owned()),
                )
            })
        }
    }
}

/// The components of a member name or hard link target: `.` and empty ones dropped, a
/// leading `/` ignored, `..` refused.
fn components(raw: &[u8]) -> Result<Vec<OsString>, &'static str> {
    let mut parts = Vec::new();
    for part in raw.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                return Err("has a \"..\" component: it would be written outside the image root");
            }
            _ => parts.push(OsStr::from_bytes(part).to_owned()),
        }
    }
    Ok(parts)
}

struct LayerContext<'a> {
    layout: &'a Path,
    digest: &'a str,
    root: &'a Path,
    root_fd: &'a OwnedFd,
}

impl LayerContext<'_> {
    fn escape(&self, member: &str, why: &'static str) -> ImageError {
        ImageError::Escape {
            layout: self.layout.to_path_buf(),
            digest: self.digest.to_owned(),
            member: member.to_owned(),
            why,
        }
    }

    fn read_error(&self) -> impl FnOnce(io::Error) -> ImageError + use<> {
        let layout = self.layout.to_path_buf();
        let digest = self.digest.to_owned();
        move |source| ImageError::Blob {
            layout,
            digest,
            source,
        }
    }

    fn member(&self, raw: &[u8]) -> Result<Member, ImageError> {
        let display = String::from_utf8_lossy(raw).into_owned();
        let mut parents = components(raw).map_err(|why| self.escape(&display, why))?;
        let name = parents.pop();
        Ok(Member {
            display,
            parents,
            name,
        })
    }

    /// Calls `each` on every member of the layer in `file`.
    fn for_each_member(
        &self,
        file: File,
        compression: Compression,
        mut each: impl FnMut(Member, &mut tar::Entry<'_, Box<dyn Read>>) -> Result<(), ImageError>,
    ) -> Result<(), ImageError> {
        let buffered = BufReader::with_capacity(1 << 20, file);
        let reader: Box<dyn Read> = match compression {
            Compression::Gzip => Box::new(GzDecoder::new(buffered)),
            Compression::None => Box::new(buffered),
        };
        let mut archive = tar::Archive::new(reader);
        for entry in archive.entries().map_err(self.read_error())? {
            let mut entry = entry.map_err(self.read_error())?;
            let member = self.member(&entry.path_bytes())?;
            each(member, &mut entry)?;
        }
        Ok(())
    }

    /// The directory `parents` names, resolved inside the root; missing ones are created
    /// (0755, root's) when `create`.
    fn open_dir(&self, parents: &[OsString], create: bool) -> io::Result<OwnedFd> {
        match open_in_root(self.root_fd.as_raw_fd(), parents) {
            Err(e) if create && e.raw_os_error() == Some(libc::ENOENT) => {}
            other => return other,
        }
        for depth in 1..=parents.len() {
            match open_in_root(self.root_fd.as_raw_fd(), &parents[..depth]) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                    let above = open_in_root(self.root_fd.as_raw_fd(), &parents[..depth - 1])?;
                    sys::mkdirat(above.as_raw_fd(), &parents[depth - 1], 0o755)?;
                }
                Err(e) => return Err(e),
            }
        }
        open_in_root(self.root_fd.as_raw_fd(), parents)
    }

    fn host_path(&self, parents: &[OsString], name: Option<&OsStr>) -> PathBuf {
        let mut path = self.root.to_path_buf();
        path.extend(parents);
        if let Some(name) = name {
            path.push(name);
        }
        path
    }

    /// Applies one whiteout: removes `name` in `dir`, or everything in `dir` (opaque).
    fn remove_whiteout(&self, dir: &[OsString], name: Option<&OsStr>) -> Result<(), ImageError> {
        let at = self.host_path(dir, name);
        let dir_fd = match self.open_dir(dir, false) {
            Ok(fd) => fd,
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => {
                return Ok(());
            }
            Err(e) => return Err(unpack_error(&at, "resolve a whiteout's directory")(e)),
        };
        match name {
            Some(name) => remove_at(dir_fd.as_raw_fd(), name),
            None => (|| {
                let dir = fd_dir_path(dir_fd.as_raw_fd());
                for child in std::fs::read_dir(&dir)? {
                    remove_at(dir_fd.as_raw_fd(), &child?.file_name())?;
                }
                Ok(())
            })(),
        }
        .map_err(unpack_error(&at, "apply a whiteout to"))
    }

    /// Writes one member.
    fn extract(
        &self,
        member: &Member,
        entry: &mut tar::Entry<'_, Box<dyn Read>>,
    ) -> Result<(), ImageError> {
        let Some(name) = member.name.as_deref() else {
            return Ok(()); // "./": the root itself, made by us.
        };
        let at = self.host_path(&member.parents, Some(name));
        let failed =
            |action: &str| unpack_error(&at, &format!("{action} (member {:?})", member.display));
        let dir = self
            .open_dir(&member.parents, true)
            .map_err(failed("open the parent of"))?;
        let dir = dir.as_raw_fd();
        let header = entry.header().clone();
        let kind = header.entry_type();
        let xattrs = pax_xattrs(entry).map_err(self.read_error())?;
        let existing = sys::lstat_at(dir, name).ok();
        let is_dir = |stat: &libc::stat| stat.st_mode & libc::S_IFMT == libc::S_IFDIR;
        let mode = header.mode().unwrap_or(0o644) & 0o7777;
        let fd = if kind.is_hard_link() {
            let raw = entry
                .link_name_bytes()
                .ok_or_else(|| self.escape(&member.display, "is a hard link without a target"))?;
            let mut target = components(&raw).map_err(|why| self.escape(&member.display, why))?;
            let target_name = target
                .pop()
                .ok_or_else(|| self.escape(&member.display, "is a hard link to the root"))?;
            let target_dir = self
                .open_dir(&target, false)
                .map_err(failed("find the hard link target of"))?;
            let source = sys::openat(
                target_dir.as_raw_fd(),
                &target_name,
                libc::O_PATH | libc::O_NOFOLLOW,
                0,
            )
            .map_err(failed("find the hard link target of"))?;
            if existing.is_some() {
                remove_at(dir, name).map_err(failed("replace"))?;
            }
            sys::link_fd(source.as_raw_fd(), dir, name).map_err(failed("hard-link"))?;
            return Ok(());
        } else if kind.is_dir() {
            if !existing.as_ref().is_some_and(is_dir) {
                if existing.is_some() {
                    remove_at(dir, name).map_err(failed("replace"))?;
                }
                sys::mkdirat(dir, name, 0o700).map_err(failed("create the directory"))?;
            }
            sys::openat(
                dir,
                name,
                libc::O_PATH | libc::O_NOFOLLOW | libc::O_DIRECTORY,
                0,
            )
            .map_err(failed("open"))?
        } else {
            if existing.is_some() {
                remove_at(dir, name).map_err(failed("replace"))?;
            }
            if kind.is_symlink() {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| self.escape(&member.display, "is a symlink without a target"))?;
                sys::symlinkat(Path::new(OsStr::from_bytes(&target)), dir, name)
                    .map_err(failed("create the symlink"))?;
                sys::openat(dir, name, libc::O_PATH | libc::O_NOFOLLOW, 0)
                    .map_err(failed("open"))?
            } else if kind.is_character_special() || kind.is_block_special() || kind.is_fifo() {
                let file_type = if kind.is_character_special() {
                    libc::S_IFCHR
                } else if kind.is_block_special() {
                    libc::S_IFBLK
                } else {
                    libc::S_IFIFO
                };
                let device = libc::makedev(
                    header.device_major().ok().flatten().unwrap_or(0),
                    header.device_minor().ok().flatten().unwrap_or(0),
                );
                sys::mknodat(dir, name, file_type | 0o600, device)
                    .map_err(failed("create the device"))?;
                sys::openat(dir, name, libc::O_PATH | libc::O_NOFOLLOW, 0)
                    .map_err(failed("open"))?
            } else {
                // Regular files (and, as POSIX says, any type tar does not know).
                let fd = sys::openat(
                    dir,
                    name,
                    libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
                    0o600,
                )
                .map_err(failed("create the file"))?;
                // SAFETY: `fd` is ours; the File takes it over.
                let mut file =
                    unsafe { File::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(fd)) };
                io::copy(entry, &mut file).map_err(failed("write"))?;
                OwnedFd::from(file)
            }
        };
        let fd = fd.as_raw_fd();
        let symlink = kind.is_symlink();
        let uid = header.uid().unwrap_or(0) as u32;
        let gid = header.gid().unwrap_or(0) as u32;
        sys::chown_fd(fd, uid, gid).map_err(failed("set the owner of"))?;
        if !symlink {
            sys::chmod_fd(fd, mode).map_err(failed("set the mode of"))?;
        }
        for (key, value) in &xattrs {
            match sys::setxattr(fd, key, value, 0) {
                Ok(()) => {}
                Err(_) if symlink => {}
                Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {}
                Err(e) => return Err(failed(&format!("set the attribute {key:?} of"))(e)),
            }
        }
        if let Ok(mtime) = header.mtime() {
            let time = libc::timespec {
                tv_sec: mtime as libc::time_t,
                tv_nsec: 0,
            };
            let _ = sys::utimens_fd(fd, &[time, time]);
        }
        Ok(())
    }
}

/// The extended attributes a member carries (`SCHILY.xattr.NAME` PAX records).
fn pax_xattrs(entry: &mut tar::Entry<'_, Box<dyn Read>>) -> io::Result<Vec<(OsString, Vec<u8>)>> {
    let mut xattrs = Vec::new();
    if let Some(extensions) = entry.pax_extensions()? {
        for extension in extensions {
            let extension = extension?;
            if let Some(name) = extension.key_bytes().strip_prefix(b"SCHILY.xattr.") {
                xattrs.push((
                    OsStr::from_bytes(name).to_owned(),
                    extension.value_bytes().to_vec(),
                ));
            }
        }
    }
    Ok(xattrs)
}

/// `parents` opened (`O_PATH`, a directory) from `root` as if it were `/`: symlinks on the
/// way are followed inside the root, never out of it.
fn open_in_root(root: RawFd, parents: &[OsString]) -> io::Result<OwnedFd> {
    let mut path = Vec::from(&b"."[..]);
    for part in parents {
        path.push(b'/');
        path.extend_from_slice(part.as_bytes());
    }
    let name = sys::cstring(&path)?;
    // SAFETY: open_how is plain data; zero is "no flags, no mode, no resolve flags".
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_IN_ROOT;
    // SAFETY: valid NUL-terminated name, a valid open_how and its size.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root,
            name.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor to us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// The host path of a directory descriptor (to remove a tree below it).
fn fd_dir_path(fd: RawFd) -> PathBuf {
    std::fs::read_link(format!("/proc/self/fd/{fd}")).unwrap_or_default()
}

/// Removes `name` in `dir`, a whole tree if it is a directory (never following a symlink).
fn remove_at(dir: RawFd, name: &OsStr) -> io::Result<()> {
    match sys::lstat_at(dir, name) {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        Err(e) => Err(e),
        Ok(stat) if stat.st_mode & libc::S_IFMT == libc::S_IFDIR => {
            std::fs::remove_dir_all(fd_dir_path(dir).join(name))
        }
        Ok(_) => sys::unlinkat(dir, name, 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_names_never_climb_out() {
        assert_eq!(
            components(b"./usr//bin/").unwrap(),
            vec![OsString::from("usr"), OsString::from("bin")]
        );
        assert_eq!(components(b"/etc/passwd").unwrap().len(), 2);
        assert!(components(b"usr/../../etc").is_err());
        assert!(components(b"..").is_err());
        assert!(components(b"a/b..c").is_ok());
    }
}
