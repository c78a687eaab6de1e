//! Thin, safe wrappers over the Linux system calls the mirror and the mount code use.
//!
//! Each wrapper turns a C string argument and a `-1`/errno result into `io::Result`, and does
//! nothing else: no retries, no path resolution of its own. Everything relative to a directory
//! takes a descriptor, so callers never re-resolve a path.

pub mod mountinfo;

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// A C string from path bytes; a name with an interior NUL cannot exist on Linux.
pub fn cstring(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

pub fn cname(name: &OsStr) -> io::Result<CString> {
    cstring(name.as_bytes())
}

pub fn cpath(path: &Path) -> io::Result<CString> {
    cstring(path.as_os_str().as_bytes())
}

fn check(result: libc::c_int) -> io::Result<libc::c_int> {
    if result < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(result)
    }
}

fn check_size(result: libc::ssize_t) -> io::Result<usize> {
    if result < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(result as usize)
    }
}

fn owned(fd: libc::c_int) -> io::Result<OwnedFd> {
    let fd = check(fd)?;
    // SAFETY: the kernel just returned this descriptor to us and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

const EMPTY: &std::ffi::CStr = c"";

pub fn openat(dir: RawFd, name: &OsStr, flags: i32, mode: u32) -> io::Result<OwnedFd> {
    let name = cname(name)?;
    // SAFETY: valid C string; flags and mode are plain integers.
    owned(unsafe { libc::openat(dir, name.as_ptr(), flags | libc::O_CLOEXEC, mode) })
}

pub fn open_path(path: &Path, flags: i32) -> io::Result<OwnedFd> {
    let path = cpath(path)?;
    // SAFETY: valid C string.
    owned(unsafe { libc::open(path.as_ptr(), flags | libc::O_CLOEXEC) })
}

/// The path under which a descriptor can be reopened or used by path-only calls; resolves to
/// exactly the file of `fd`, not to whatever its name points to now.
pub fn fd_path(fd: RawFd) -> CString {
    CString::new(format!("/proc/self/fd/{fd}")).expect("no NUL in a formatted number")
}

/// Opens the file behind an `O_PATH` descriptor for real I/O.
pub fn reopen(fd: RawFd, flags: i32) -> io::Result<OwnedFd> {
    let path = fd_path(fd);
    // SAFETY: valid C string.
    owned(unsafe { libc::open(path.as_ptr(), flags | libc::O_CLOEXEC) })
}

pub fn fstat(fd: RawFd) -> io::Result<libc::stat> {
    // SAFETY: stat is plain data, fully written by the kernel on success.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: empty path with AT_EMPTY_PATH refers to fd itself.
    check(unsafe {
        libc::fstatat(
            fd,
            EMPTY.as_ptr(),
            &mut stat,
            libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    Ok(stat)
}

pub fn lstat_at(dir: RawFd, name: &OsStr) -> io::Result<libc::stat> {
    let name = cname(name)?;
    // SAFETY: as in fstat.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid C string and out pointer.
    check(unsafe { libc::fstatat(dir, name.as_ptr(), &mut stat, libc::AT_SYMLINK_NOFOLLOW) })?;
    Ok(stat)
}

/// Runs `create` (which makes a file with the mode it is given) as if the calling thread's
/// umask were `umask`. The underlying filesystem applies the umask only when the new file's
/// directory has no default ACL, as it does for a native caller; so the mode is passed
/// unmasked and the umask is set on this thread alone, which first gets its own umask
/// (`unshare(CLONE_FS)`, once per thread). Where that is refused, the mode is masked here
/// instead (a default ACL then sees the masked mode: more restrictive, never less).
pub fn with_umask<T>(
    umask: u32,
    mode: u32,
    create: impl FnOnce(u32) -> io::Result<T>,
) -> io::Result<T> {
    let umask = umask & 0o777;
    if !thread_has_own_umask() {
        return create(mode & !umask);
    }
    // SAFETY: umask has no preconditions; it only affects this thread's own fs_struct.
    let previous = unsafe { libc::umask(umask as libc::mode_t) };
    let result = create(mode);
    // SAFETY: as above.
    unsafe { libc::umask(previous) };
    result
}

/// Whether this thread has its own fs_struct (umask, cwd, root), unsharing it on first use.
fn thread_has_own_umask() -> bool {
    thread_local! {
        static OWN_FS: std::cell::Cell<Option<bool>> = const { std::cell::Cell::new(None) };
    }
    OWN_FS.with(|own| {
        own.get().unwrap_or_else(|| {
            // SAFETY: unshare(CLONE_FS) only gives this thread a private copy of its fs_struct.
            let unshared = unsafe { libc::unshare(libc::CLONE_FS) } == 0;
            own.set(Some(unshared));
            unshared
        })
    })
}

pub fn mkdirat(dir: RawFd, name: &OsStr, mode: u32) -> io::Result<()> {
    let name = cname(name)?;
    // SAFETY: valid C string.
    check(unsafe { libc::mkdirat(dir, name.as_ptr(), mode) }).map(drop)
}

pub fn mknodat(dir: RawFd, name: &OsStr, mode: u32, rdev: u64) -> io::Result<()> {
    let name = cname(name)?;
    // SAFETY: valid C string.
    check(unsafe { libc::mknodat(dir, name.as_ptr(), mode, rdev) }).map(drop)
}

pub fn symlinkat(target: &Path, dir: RawFd, name: &OsStr) -> io::Result<()> {
    let target = cpath(target)?;
    let name = cname(name)?;
    // SAFETY: valid C strings.
    check(unsafe { libc::symlinkat(target.as_ptr(), dir, name.as_ptr()) }).map(drop)
}

pub fn unlinkat(dir: RawFd, name: &OsStr, flags: i32) -> io::Result<()> {
    let name = cname(name)?;
    // SAFETY: valid C string.
    check(unsafe { libc::unlinkat(dir, name.as_ptr(), flags) }).map(drop)
}

pub fn renameat2(
    old_dir: RawFd,
    old_name: &OsStr,
    new_dir: RawFd,
    new_name: &OsStr,
    flags: u32,
) -> io::Result<()> {
    let old_name = cname(old_name)?;
    let new_name = cname(new_name)?;
    // SAFETY: valid C strings.
    check(unsafe {
        libc::renameat2(
            old_dir,
            old_name.as_ptr(),
            new_dir,
            new_name.as_ptr(),
            flags,
        )
    })
    .map(drop)
}

/// Hard-links the file of an `O_PATH` descriptor (needs CAP_DAC_READ_SEARCH, which the daemon has).
pub fn link_fd(fd: RawFd, new_dir: RawFd, new_name: &OsStr) -> io::Result<()> {
    let new_name = cname(new_name)?;
    // SAFETY: valid C strings.
    check(unsafe {
        libc::linkat(
            fd,
            EMPTY.as_ptr(),
            new_dir,
            new_name.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    })
    .map(drop)
}

pub fn readlink_fd(fd: RawFd) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
    // SAFETY: the buffer is valid for buf.len() bytes.
    let len = check_size(unsafe {
        libc::readlinkat(fd, EMPTY.as_ptr(), buf.as_mut_ptr().cast(), buf.len())
    })?;
    buf.truncate(len);
    Ok(buf)
}

/// Changes owner and/or group (`u32::MAX` leaves one unchanged) without following symlinks.
pub fn chown_fd(fd: RawFd, uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: empty path with AT_EMPTY_PATH refers to fd itself.
    check(unsafe {
        libc::fchownat(
            fd,
            EMPTY.as_ptr(),
            uid,
            gid,
            libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
        )
    })
    .map(drop)
}

pub fn chmod_fd(fd: RawFd, mode: u32) -> io::Result<()> {
    let path = fd_path(fd);
    // SAFETY: valid C string; /proc/self/fd/N resolves to the file of fd.
    check(unsafe { libc::chmod(path.as_ptr(), mode) }).map(drop)
}

pub fn truncate_fd(fd: RawFd, size: u64) -> io::Result<()> {
    let path = fd_path(fd);
    // SAFETY: valid C string.
    check(unsafe { libc::truncate(path.as_ptr(), size as libc::off_t) }).map(drop)
}

pub fn ftruncate(fd: RawFd, size: u64) -> io::Result<()> {
    // SAFETY: plain integers.
    check(unsafe { libc::ftruncate(fd, size as libc::off_t) }).map(drop)
}

pub fn utimens_fd(fd: RawFd, times: &[libc::timespec; 2]) -> io::Result<()> {
    // SAFETY: times points to two timespecs; empty path with AT_EMPTY_PATH refers to fd.
    check(unsafe {
        libc::utimensat(
            fd,
            EMPTY.as_ptr(),
            times.as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
        )
    })
    .map(drop)
}

pub fn pread(fd: RawFd, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    // SAFETY: buf is valid for buf.len() bytes.
    check_size(unsafe {
        libc::pread(
            fd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            offset as libc::off_t,
        )
    })
}

pub fn pwrite(fd: RawFd, buf: &[u8], offset: u64) -> io::Result<usize> {
    // SAFETY: buf is valid for buf.len() bytes.
    check_size(unsafe { libc::pwrite(fd, buf.as_ptr().cast(), buf.len(), offset as libc::off_t) })
}

pub fn fsync(fd: RawFd, data_only: bool) -> io::Result<()> {
    // SAFETY: plain descriptor.
    check(unsafe {
        if data_only {
            libc::fdatasync(fd)
        } else {
            libc::fsync(fd)
        }
    })
    .map(drop)
}

pub fn fallocate(fd: RawFd, mode: i32, offset: u64, length: u64) -> io::Result<()> {
    // SAFETY: plain integers.
    check(unsafe { libc::fallocate(fd, mode, offset as libc::off_t, length as libc::off_t) })
        .map(drop)
}

pub fn lseek(fd: RawFd, offset: i64, whence: i32) -> io::Result<i64> {
    // SAFETY: plain integers.
    let result = unsafe { libc::lseek(fd, offset, whence) };
    if result < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(result)
    }
}

pub fn copy_file_range(
    fd_in: RawFd,
    offset_in: u64,
    fd_out: RawFd,
    offset_out: u64,
    len: u64,
) -> io::Result<usize> {
    let mut off_in = offset_in as libc::loff_t;
    let mut off_out = offset_out as libc::loff_t;
    // SAFETY: offsets are valid pointers to locals.
    check_size(unsafe {
        libc::copy_file_range(fd_in, &mut off_in, fd_out, &mut off_out, len as usize, 0)
    })
}

pub fn statvfs(fd: RawFd) -> io::Result<libc::statvfs> {
    // SAFETY: plain data, written by the kernel on success.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid out pointer.
    check(unsafe { libc::fstatvfs(fd, &mut stat) })?;
    Ok(stat)
}

/// Reads the entries of a directory from `offset` (0 or a `d_off` returned earlier) with
/// getdents64, calling `each(ino, next_offset, d_type, name)` until it returns true (full).
pub fn read_dir_entries(
    fd: RawFd,
    offset: i64,
    mut each: impl FnMut(u64, i64, u8, &[u8]) -> bool,
) -> io::Result<()> {
    lseek(fd, offset, libc::SEEK_SET)?;
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        // SAFETY: buf is valid for buf.len() bytes.
        let len = unsafe { libc::syscall(libc::SYS_getdents64, fd, buf.as_mut_ptr(), buf.len()) };
        if len < 0 {
            return Err(io::Error::last_os_error());
        }
        if len == 0 {
            return Ok(());
        }
        let mut pos = 0usize;
        while pos < len as usize {
            let entry = &buf[pos..];
            // linux_dirent64: u64 ino, i64 off, u16 reclen, u8 type, name NUL-terminated.
            let ino = u64::from_ne_bytes(entry[0..8].try_into().expect("8 bytes"));
            let off = i64::from_ne_bytes(entry[8..16].try_into().expect("8 bytes"));
            let reclen = u16::from_ne_bytes(entry[16..18].try_into().expect("2 bytes")) as usize;
            let kind = entry[18];
            let name_area = &entry[19..reclen];
            let name_len = name_area
                .iter()
                .position(|&b| b == 0)
                .unwrap_or(name_area.len());
            if each(ino, off, kind, &name_area[..name_len]) {
                return Ok(());
            }
            pos += reclen;
        }
    }
}

/// What an xattr query returns: the size needed (when asked with size 0) or the bytes.
pub enum XattrAnswer {
    Size(usize),
    Data(Vec<u8>),
}

fn xattr_answer(
    size: usize,
    query: impl FnOnce(*mut libc::c_void, usize) -> libc::ssize_t,
) -> io::Result<XattrAnswer> {
    if size == 0 {
        return check_size(query(std::ptr::null_mut(), 0)).map(XattrAnswer::Size);
    }
    let mut buf = vec![0u8; size];
    let len = check_size(query(buf.as_mut_ptr().cast(), buf.len()))?;
    buf.truncate(len);
    Ok(XattrAnswer::Data(buf))
}

pub fn getxattr(fd: RawFd, name: &OsStr, size: usize) -> io::Result<XattrAnswer> {
    let path = fd_path(fd);
    let name = cname(name)?;
    // SAFETY: valid C strings; the buffer pointer is valid for len bytes (or null with 0).
    xattr_answer(size, |buf, len| unsafe {
        libc::getxattr(path.as_ptr(), name.as_ptr(), buf, len)
    })
}

pub fn listxattr(fd: RawFd, size: usize) -> io::Result<XattrAnswer> {
    let path = fd_path(fd);
    // SAFETY: valid C string; the buffer pointer is valid for len bytes (or null with 0).
    xattr_answer(size, |buf, len| unsafe {
        libc::listxattr(path.as_ptr(), buf.cast(), len)
    })
}

pub fn setxattr(fd: RawFd, name: &OsStr, value: &[u8], flags: i32) -> io::Result<()> {
    let path = fd_path(fd);
    let name = cname(name)?;
    // SAFETY: valid C strings; value valid for its length.
    check(unsafe {
        libc::setxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            flags,
        )
    })
    .map(drop)
}

pub fn removexattr(fd: RawFd, name: &OsStr) -> io::Result<()> {
    let path = fd_path(fd);
    let name = cname(name)?;
    // SAFETY: valid C strings.
    check(unsafe { libc::removexattr(path.as_ptr(), name.as_ptr()) }).map(drop)
}

pub fn mount(
    source: &str,
    target: &Path,
    fstype: &str,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> io::Result<()> {
    let source = cstring(source.as_bytes())?;
    let target = cpath(target)?;
    let fstype = cstring(fstype.as_bytes())?;
    let data = data.map(|d| cstring(d.as_bytes())).transpose()?;
    let data_ptr = data
        .as_ref()
        .map_or(std::ptr::null(), |d| d.as_ptr().cast::<libc::c_void>());
    // SAFETY: valid C strings (data may be null).
    check(unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            flags,
            data_ptr,
        )
    })
    .map(drop)
}

pub fn bind_mount(source: &Path, target: &Path, recursive: bool) -> io::Result<()> {
    let flags = libc::MS_BIND | if recursive { libc::MS_REC } else { 0 };
    let source = cpath(source)?;
    let target = cpath(target)?;
    // SAFETY: valid C strings; fstype and data may be null for a bind mount.
    check(unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            std::ptr::null(),
            flags,
            std::ptr::null(),
        )
    })
    .map(drop)
}

/// Makes every mount under `target` private or slave (`flag` is MS_PRIVATE or MS_SLAVE).
pub fn set_propagation(target: &Path, flag: libc::c_ulong) -> io::Result<()> {
    let target = cpath(target)?;
    // SAFETY: valid C string; other arguments may be null for a propagation change.
    check(unsafe {
        libc::mount(
            std::ptr::null(),
            target.as_ptr(),
            std::ptr::null(),
            flag | libc::MS_REC,
            std::ptr::null(),
        )
    })
    .map(drop)
}

pub fn umount(target: &Path, flags: i32) -> io::Result<()> {
    let target = cpath(target)?;
    // SAFETY: valid C string.
    check(unsafe { libc::umount2(target.as_ptr(), flags) }).map(drop)
}

pub fn unshare_mount_namespace() -> io::Result<()> {
    // SAFETY: plain flag; the caller is single-threaded (CLONE_NEWNS needs an unshared fs).
    check(unsafe { libc::unshare(libc::CLONE_NEWNS) }).map(drop)
}

/// A kernel file handle (`struct file_handle`: 4-byte size, 4-byte type, then the bytes) and
/// the id of the mount it belongs to.
pub fn handle_of(fd: RawFd) -> io::Result<(Vec<u8>, i32)> {
    const MAX_HANDLE_SZ: usize = 128;
    let mut buf = vec![0u8; 8 + MAX_HANDLE_SZ];
    buf[..4].copy_from_slice(&(MAX_HANDLE_SZ as u32).to_ne_bytes());
    let mut mount_id: libc::c_int = 0;
    // SAFETY: buf starts with a file_handle header whose handle_bytes says how much room
    // follows; the empty path with AT_EMPTY_PATH refers to fd itself.
    check(unsafe {
        libc::syscall(
            libc::SYS_name_to_handle_at,
            fd,
            EMPTY.as_ptr(),
            buf.as_mut_ptr(),
            &mut mount_id,
            libc::AT_EMPTY_PATH,
        ) as libc::c_int
    })?;
    let size = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    buf.truncate(8 + size);
    Ok((buf, mount_id))
}

/// Opens the file a handle from [`handle_of`] names (needs CAP_DAC_READ_SEARCH).
pub fn open_handle(mount_fd: RawFd, handle: &[u8], flags: i32) -> io::Result<OwnedFd> {
    let mut handle = handle.to_vec();
    // SAFETY: handle is a complete file_handle as name_to_handle_at wrote it.
    owned(unsafe {
        libc::syscall(
            libc::SYS_open_by_handle_at,
            mount_fd,
            handle.as_mut_ptr(),
            flags | libc::O_CLOEXEC,
        ) as libc::c_int
    })
}

/// The soft limit on open descriptors.
pub fn open_file_limit() -> u64 {
    // SAFETY: rlimit is plain data written by the kernel.
    let mut limit: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: valid out pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return 1024;
    }
    limit.rlim_cur
}

/// Raises the soft limit on open descriptors to the hard limit.
pub fn raise_open_file_limit() {
    // SAFETY: rlimit is plain data written by the kernel.
    let mut limit: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointers; raising the soft limit up to the hard one needs no privilege.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// The highest CPU number a CPU set can name, plus one.
pub const MAX_CPUS: usize = libc::CPU_SETSIZE as usize;

/// Confines this process (and the children it starts afterwards) to `cpus`.
pub fn set_cpu_affinity(cpus: &[usize]) -> io::Result<()> {
    // SAFETY: cpu_set_t is plain data; CPU_ZERO/CPU_SET only write inside it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &cpu in cpus.iter().filter(|&&cpu| cpu < MAX_CPUS) {
        // SAFETY: cpu is below CPU_SETSIZE.
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    // SAFETY: valid set of the size given.
    check(unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) }).map(drop)
}
