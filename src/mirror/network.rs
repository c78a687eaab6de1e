//! Network recording: TCP/UDP (and unix) `connect`, `bind`, `listen` and `accept` calls never
//! reach FUSE, so the process that execs the service installs the [`crate::mirror::seccomp`] filter
//! and hands the listener fd to the daemon over the daemon's **control socket**
//! (`<state>/mounts/ctl-<hash of the mountpoint>.sock`, named in the mount registry). The
//! daemon watches each listener on its own thread: for every stopped call it reads the
//! `sockaddr` from the caller's memory (`process_vm_readv`), duplicates the socket
//! (`pidfd_getfd`) to learn its type and, for listen/accept, its local address, checks that
//! the notification is still valid, lets the kernel run the call
//! (`SECCOMP_USER_NOTIF_FLAG_CONTINUE`) and records a [`NetEvent`]. The outcome of a call is
//! not seen: a refused connect counts as an attempt. The child side ([`HandOver`]) is built
//! before fork and performed between fork and exec with system calls only.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::mirror::process::ProcessTracker;
use crate::mirror::recorder::Recorder;
use crate::mirror::seccomp::{self, FILTER_LEN, Received};
use crate::record::{NetCall, NetEvent, NetFamily, Record, now_ns};

/// Set to a non-empty value: `depsetfs run` does not install the filter (for measuring its
/// cost; the log then says the network was not recorded).
pub const DISABLE_ENV: &str = "DEPSETFS_NO_NET_TRACE";

/// The daemon's answer to a hand-over.
const ACK_WATCHING: u8 = b'k';
const ACK_REFUSED: u8 = b'n';
/// A message of these 4 bytes without a descriptor asks the daemon to write its log now
/// ([`request_log_flush`]); the answer is [`ACK_FLUSHED`] once it is on disk.
const FLUSH_REQUEST: [u8; 4] = *b"SYNC";
const ACK_FLUSHED: u8 = b'f';
/// How long the daemon waits for its writer thread on a flush request.
const FLUSH_LIMIT: std::time::Duration = std::time::Duration::from_secs(5);
/// The longest sockaddr read from a caller (`sizeof(struct sockaddr_storage)`).
const MAX_SOCKADDR: usize = 128;

#[derive(Debug, thiserror::Error)]
pub enum NetrecError {
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Whether `depsetfs run` should record the network (not disabled by [`DISABLE_ENV`]).
pub fn enabled_by_env() -> bool {
    std::env::var_os(DISABLE_ENV).is_none_or(|v| v.is_empty())
}

// ---------------------------------------------------------------------------------------------
// Addresses

/// The family and text of a `struct sockaddr` as the kernel would read it (`len` bytes).
pub fn parse_sockaddr(bytes: &[u8]) -> (NetFamily, String) {
    if bytes.len() < 2 {
        return (NetFamily::Other, String::new());
    }
    let family = u16::from_ne_bytes([bytes[0], bytes[1]]);
    match i32::from(family) {
        libc::AF_INET if bytes.len() >= 8 => {
            let port = u16::from_be_bytes([bytes[2], bytes[3]]);
            let ip = std::net::Ipv4Addr::new(bytes[4], bytes[5], bytes[6], bytes[7]);
            (NetFamily::Inet, format!("{ip}:{port}"))
        }
        libc::AF_INET6 if bytes.len() >= 24 => {
            let port = u16::from_be_bytes([bytes[2], bytes[3]]);
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&bytes[8..24]);
            let ip = std::net::Ipv6Addr::from(octets);
            (NetFamily::Inet6, format!("[{ip}]:{port}"))
        }
        libc::AF_UNIX => {
            let path = &bytes[2..];
            match path.first() {
                None => (NetFamily::Unix, String::new()),
                // Abstract: the name is every byte after the NUL, NULs included.
                Some(0) => {
                    let name: String = String::from_utf8_lossy(&path[1..])
                        .chars()
                        .map(|c| if c == '\0' { '@' } else { c })
                        .collect();
                    (NetFamily::Unix, format!("@{name}"))
                }
                Some(_) => {
                    let end = path.iter().position(|&b| b == 0).unwrap_or(path.len());
                    (
                        NetFamily::Unix,
                        String::from_utf8_lossy(&path[..end]).into_owned(),
                    )
                }
            }
        }
        libc::AF_INET | libc::AF_INET6 => (NetFamily::Other, String::new()),
        other => (NetFamily::Other, format!("family {other}")),
    }
}

fn socket_type_name(value: i32) -> String {
    match value {
        libc::SOCK_STREAM => "stream".to_owned(),
        libc::SOCK_DGRAM => "dgram".to_owned(),
        libc::SOCK_SEQPACKET => "seqpacket".to_owned(),
        libc::SOCK_RAW => "raw".to_owned(),
        other => format!("type {other}"),
    }
}

// ---------------------------------------------------------------------------------------------
// The control socket (daemon side)

/// Where the daemon of `mountpoint` listens for hand-overs: a short name, so that the address
/// fits a `sockaddr_un` even under a long state directory (it is reached through
/// `/proc/self/fd/N/NAME`).
pub fn control_socket_name(mountpoint: &Path) -> String {
    // FNV-1a: stable across versions and builds, unlike the std hasher.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in mountpoint.as_os_str().as_bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("ctl-{hash:016x}.sock")
}

/// `NAME` in the directory open as `dir`, through `/proc/self/fd` (short whatever the
/// directory's own path).
fn path_in(dir: RawFd, name: &str) -> String {
    format!("/proc/self/fd/{dir}/{name}")
}

/// A `sockaddr_un` for [`path_in`]`(dir, name)`, for the hand-over's raw `connect(2)`.
fn address_in(dir: RawFd, name: &str) -> io::Result<(libc::sockaddr_un, libc::socklen_t)> {
    let text = path_in(dir, name);
    // SAFETY: sockaddr_un is plain data.
    let mut address: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    address.sun_family = libc::AF_UNIX as libc::sa_family_t;
    if text.len() >= address.sun_path.len() {
        return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
    }
    for (slot, byte) in address.sun_path.iter_mut().zip(text.bytes()) {
        *slot = byte as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sa_family_t>() + text.len() + 1;
    Ok((address, len as libc::socklen_t))
}

fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    crate::sys::open_path(path, libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
}

/// Binds the control socket `path` (mode 0600, a stale one replaced) and starts the thread
/// that accepts hand-overs. Each accepted listener is watched on a thread of its own.
pub fn start_control_socket(
    path: &Path,
    recorder: Recorder,
    tracker: Arc<ProcessTracker>,
) -> Result<(), NetrecError> {
    let fail = |action: &'static str| {
        move |source: io::Error| NetrecError::Io {
            action,
            path: path.to_owned(),
            source,
        }
    };
    let (Some(dir_path), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(fail("bind")(io::Error::from_raw_os_error(libc::EINVAL)));
    };
    std::fs::create_dir_all(dir_path).map_err(fail("create the directory of"))?;
    let dir = open_dir(dir_path).map_err(fail("open the directory of"))?;
    let name = name.to_string_lossy().into_owned();
    let _ = std::fs::remove_file(path);
    let socket = UnixListener::bind(path_in(dir.as_raw_fd(), &name)).map_err(fail("bind"))?;
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .map_err(fail("chmod"))?;
    std::thread::Builder::new()
        .name("depsetfs-net-control".to_owned())
        .spawn(move || accept_hand_overs(socket, recorder, tracker))
        .map_err(fail("start the thread of"))?;
    Ok(())
}

fn accept_hand_overs(socket: UnixListener, recorder: Recorder, tracker: Arc<ProcessTracker>) {
    loop {
        // std retries EINTR; any other error ends network recording for this mount.
        let connection = match socket.accept() {
            Ok((connection, _)) => connection,
            Err(error) => {
                eprintln!("depsetfs daemon: network recording: accept: {error}");
                return;
            }
        };
        let answer = match receive_listener(connection.as_fd()) {
            Ok(ControlRequest::FlushLog) if recorder.flush(FLUSH_LIMIT) => ACK_FLUSHED,
            Ok(ControlRequest::FlushLog) => ACK_REFUSED,
            Ok(ControlRequest::HandOver(pid, listener)) => {
                let watcher = Watcher {
                    listener,
                    recorder: recorder.clone(),
                    tracker: Arc::clone(&tracker),
                };
                watcher.record_traced(pid);
                match std::thread::Builder::new()
                    .name("depsetfs-net-watch".to_owned())
                    .spawn(move || watcher.run())
                {
                    Ok(_) => ACK_WATCHING,
                    Err(e) => {
                        eprintln!("depsetfs daemon: network recording: {e}");
                        ACK_REFUSED
                    }
                }
            }
            Err(e) => {
                eprintln!("depsetfs daemon: network recording: bad hand-over: {e}");
                ACK_REFUSED
            }
        };
        // A client that is gone has nothing to learn.
        let _ = std::io::Write::write_all(&mut &connection, &[answer]);
    }
}

/// What a client of the control socket asks for.
enum ControlRequest {
    /// Watch the listener of process `pid`.
    HandOver(u32, OwnedFd),
    /// Write the log now.
    FlushLog,
}

/// One message: the pid (4 bytes, native order) and the listener fd (SCM_RIGHTS), or
/// [`FLUSH_REQUEST`] alone.
fn receive_listener(connection: BorrowedFd<'_>) -> io::Result<ControlRequest> {
    let mut pid_bytes = [0u8; 4];
    let mut control = ControlBuffer::default();
    let mut iov = libc::iovec {
        iov_base: pid_bytes.as_mut_ptr().cast(),
        iov_len: pid_bytes.len(),
    };
    // SAFETY: msghdr is plain data.
    let mut message: libc::msghdr = unsafe { std::mem::zeroed() };
    message.msg_iov = &mut iov;
    message.msg_iovlen = 1;
    message.msg_control = control.0.as_mut_ptr().cast();
    message.msg_controllen = std::mem::size_of::<ControlBuffer>() as _;
    // SAFETY: every pointer in message is valid for the sizes given.
    let received =
        unsafe { libc::recvmsg(connection.as_raw_fd(), &mut message, libc::MSG_CMSG_CLOEXEC) };
    if received < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel filled message; CMSG_FIRSTHDR checks msg_controllen.
    let header = unsafe { libc::CMSG_FIRSTHDR(&message) };
    if header.is_null() && received == 4 && pid_bytes == FLUSH_REQUEST {
        return Ok(ControlRequest::FlushLog);
    }
    if header.is_null() {
        return Err(io::Error::other("no file descriptor attached"));
    }
    // SAFETY: header points into `control`, which the kernel filled.
    let (level, kind) = unsafe { ((*header).cmsg_level, (*header).cmsg_type) };
    if level != libc::SOL_SOCKET || kind != libc::SCM_RIGHTS {
        return Err(io::Error::other("unexpected control message"));
    }
    // SAFETY: an SCM_RIGHTS message carries at least one int; read unaligned.
    let fd: RawFd = unsafe { std::ptr::read_unaligned(libc::CMSG_DATA(header).cast()) };
    // SAFETY: the kernel installed this descriptor for us (close-on-exec).
    let listener = unsafe { seccomp::own(fd) };
    if received != 4 {
        return Err(io::Error::other("short message"));
    }
    Ok(ControlRequest::HandOver(
        u32::from_ne_bytes(pid_bytes),
        listener,
    ))
}

/// Asks the daemon listening on `control` to write everything it recorded so far, and waits
/// for it (at most a few seconds): `depsetfs dump` of a live mount then sees every event up
/// to now, not only the last flush interval's.
pub fn request_log_flush(control: &Path) -> io::Result<()> {
    let (Some(dir_path), Some(name)) = (control.parent(), control.file_name()) else {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    };
    let dir = open_dir(dir_path)?;
    let mut stream =
        std::os::unix::net::UnixStream::connect(path_in(dir.as_raw_fd(), &name.to_string_lossy()))?;
    stream.set_read_timeout(Some(FLUSH_LIMIT + std::time::Duration::from_secs(1)))?;
    std::io::Write::write_all(&mut stream, &FLUSH_REQUEST)?;
    let mut answer = [0u8; 1];
    std::io::Read::read_exact(&mut stream, &mut answer)?;
    if answer[0] == ACK_FLUSHED {
        Ok(())
    } else {
        Err(io::Error::other("the daemon could not write its log"))
    }
}

/// Room for one `cmsghdr` with one fd, aligned.
#[derive(Default)]
#[repr(C, align(8))]
struct ControlBuffer([u8; 32]);

/// Watches one listener until no process uses its filter any more.
struct Watcher {
    listener: OwnedFd,
    recorder: Recorder,
    tracker: Arc<ProcessTracker>,
}

impl Watcher {
    fn record_traced(&self, pid: u32) {
        let caller = self.tracker.identify(pid);
        self.recorder.record(Record::Net(NetEvent {
            ts_ns: now_ns(),
            pid: caller.pid,
            tid: pid,
            start: caller.start,
            call: NetCall::Traced,
            family: NetFamily::Other,
            address: String::new(),
            fd: -1,
            socket_type: None,
        }));
    }

    fn run(self) {
        loop {
            match seccomp::receive(self.listener.as_fd()) {
                Ok(Received::Call(call)) => self.handle(call),
                Ok(Received::Retry) => {}
                Ok(Received::Gone) => return,
                Err(e) => {
                    eprintln!("depsetfs daemon: network recording stopped: {e}");
                    return;
                }
            }
        }
    }

    fn handle(&self, call: seccomp::Notification) {
        let ts_ns = now_ns();
        let Some(name) = seccomp::call_name(call.nr) else {
            seccomp::continue_call(self.listener.as_fd(), call.id);
            return;
        };
        let caller = self.tracker.identify(call.tid);
        let fd = call.args[0] as i32;
        let socket = borrow_socket(caller.pid, fd);
        let (family, address) = match name {
            "connect" | "bind" => {
                let len = (call.args[2] as usize).min(MAX_SOCKADDR);
                read_remote(call.tid, call.args[1], len)
                    .map_or((NetFamily::Other, String::new()), |bytes| {
                        parse_sockaddr(&bytes)
                    })
            }
            _ => socket
                .as_ref()
                .and_then(|s| local_address(s.as_fd()))
                .unwrap_or((NetFamily::Other, String::new())),
        };
        let socket_type = socket.as_ref().and_then(|s| socket_type(s.as_fd()));
        let valid = seccomp::still_valid(self.listener.as_fd(), call.id);
        seccomp::continue_call(self.listener.as_fd(), call.id);
        if !valid {
            return;
        }
        let call_kind = match name {
            "connect" => NetCall::Connect,
            "bind" => NetCall::Bind,
            "listen" => NetCall::Listen,
            _ => NetCall::Accept,
        };
        self.recorder.record(Record::Net(NetEvent {
            ts_ns,
            pid: caller.pid,
            tid: call.tid,
            start: caller.start,
            call: call_kind,
            family,
            address,
            fd,
            socket_type,
        }));
    }
}

/// `len` bytes at `address` in the memory of thread `tid` (None: EFAULT, ESRCH, ...).
fn read_remote(tid: u32, address: u64, len: usize) -> Option<Vec<u8>> {
    if len == 0 || address == 0 {
        return None;
    }
    let mut buffer = vec![0u8; len];
    let local = libc::iovec {
        iov_base: buffer.as_mut_ptr().cast(),
        iov_len: len,
    };
    let remote = libc::iovec {
        iov_base: address as *mut libc::c_void,
        iov_len: len,
    };
    // SAFETY: the local iovec covers our buffer; the remote one is only read by the kernel,
    // which checks it against the target's address space.
    let read = unsafe { libc::process_vm_readv(tid as libc::pid_t, &local, 1, &remote, 1, 0) };
    if read <= 0 {
        return None;
    }
    buffer.truncate(read as usize);
    Some(buffer)
}

/// A duplicate of the caller's socket `fd` (pidfd_getfd; None if the process or fd is gone).
fn borrow_socket(pid: u32, fd: i32) -> Option<OwnedFd> {
    if fd < 0 {
        return None;
    }
    // SAFETY: plain system call.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if pidfd < 0 {
        return None;
    }
    // SAFETY: the kernel just returned this descriptor to us.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as RawFd) };
    // SAFETY: plain system call on a valid pidfd.
    let copy = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
    if copy < 0 {
        return None;
    }
    // SAFETY: the kernel just installed this descriptor (close-on-exec) for us.
    Some(unsafe { OwnedFd::from_raw_fd(copy as RawFd) })
}

fn socket_type(socket: BorrowedFd<'_>) -> Option<String> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: valid fd and out pointers of the right size.
    let result = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TYPE,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    (result == 0).then(|| socket_type_name(value))
}

fn local_address(socket: BorrowedFd<'_>) -> Option<(NetFamily, String)> {
    let mut storage = [0u8; MAX_SOCKADDR];
    let mut len = MAX_SOCKADDR as libc::socklen_t;
    // SAFETY: valid fd; the buffer holds `len` bytes.
    let result =
        unsafe { libc::getsockname(socket.as_raw_fd(), storage.as_mut_ptr().cast(), &mut len) };
    (result == 0).then(|| parse_sockaddr(&storage[..(len as usize).min(MAX_SOCKADDR)]))
}

// ---------------------------------------------------------------------------------------------
// The hand-over (child side)

/// Everything the child needs to install the filter and hand it to the daemon, prepared
/// before fork so that [`HandOver::perform`] only makes system calls.
pub struct HandOver {
    /// The directory of the control socket, reached as `/proc/self/fd/N` (close-on-exec).
    _dir: OwnedFd,
    address: libc::sockaddr_un,
    address_len: libc::socklen_t,
    program: [libc::sock_filter; FILTER_LEN],
}

/// Which step of the hand-over failed, with the errno.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandOverStep {
    Connect = 1,
    Filter = 2,
    Send = 3,
    Refused = 4,
}

impl HandOverStep {
    pub fn from_code(code: u32) -> Option<HandOverStep> {
        match code {
            1 => Some(HandOverStep::Connect),
            2 => Some(HandOverStep::Filter),
            3 => Some(HandOverStep::Send),
            4 => Some(HandOverStep::Refused),
            _ => None,
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            HandOverStep::Connect => "connect to the daemon's control socket",
            HandOverStep::Filter => "install the seccomp filter",
            HandOverStep::Send => "hand the filter to the daemon",
            HandOverStep::Refused => "have the daemon watch the filter",
        }
    }
}

impl HandOver {
    pub fn prepare(control: &Path) -> io::Result<HandOver> {
        let (Some(dir), Some(name)) = (control.parent(), control.file_name()) else {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        };
        let dir = open_dir(dir)?;
        let (address, address_len) = address_in(dir.as_raw_fd(), &name.to_string_lossy())?;
        Ok(HandOver {
            _dir: dir,
            address,
            address_len,
            program: seccomp::filter_program(),
        })
    }

    /// Connects to the daemon (before the filter exists: our own connect would wait for
    /// ourselves otherwise), installs the filter, sends the listener with our pid, waits for
    /// the daemon's answer, closes our copies. System calls only: safe after fork.
    pub fn perform(&self) -> Result<(), (HandOverStep, i32)> {
        let errno = || {
            // SAFETY: errno is thread-local.
            unsafe { *libc::__errno_location() }
        };
        // SAFETY: system calls on valid buffers and descriptors; no allocation.
        unsafe {
            let socket = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
            if socket < 0 {
                return Err((HandOverStep::Connect, errno()));
            }
            if libc::connect(
                socket,
                (&self.address as *const libc::sockaddr_un).cast(),
                self.address_len,
            ) != 0
            {
                let e = errno();
                libc::close(socket);
                return Err((HandOverStep::Connect, e));
            }
            let listener = match seccomp::install_filter(&self.program) {
                Ok(fd) => fd,
                Err(e) => {
                    libc::close(socket);
                    return Err((HandOverStep::Filter, e));
                }
            };
            let result = send_listener(socket, listener);
            libc::close(listener);
            libc::close(socket);
            result
        }
    }
}

/// Sends our pid with `listener` attached and reads the one-byte answer.
///
/// # Safety
/// `socket` and `listener` must be open descriptors.
unsafe fn send_listener(socket: RawFd, listener: RawFd) -> Result<(), (HandOverStep, i32)> {
    let errno = || {
        // SAFETY: errno is thread-local.
        unsafe { *libc::__errno_location() }
    };
    // SAFETY: getpid has no preconditions.
    let pid_bytes = (unsafe { libc::getpid() } as u32).to_ne_bytes();
    let mut control = ControlBuffer([0; 32]);
    let mut iov = libc::iovec {
        iov_base: pid_bytes.as_ptr() as *mut libc::c_void,
        iov_len: pid_bytes.len(),
    };
    // SAFETY: msghdr is plain data.
    let mut message: libc::msghdr = unsafe { std::mem::zeroed() };
    message.msg_iov = &mut iov;
    message.msg_iovlen = 1;
    message.msg_control = control.0.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE is arithmetic.
    message.msg_controllen = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as _;
    // SAFETY: the control buffer is large enough for one fd (checked by the size above).
    unsafe {
        let header = libc::CMSG_FIRSTHDR(&message);
        (*header).cmsg_level = libc::SOL_SOCKET;
        (*header).cmsg_type = libc::SCM_RIGHTS;
        (*header).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(header).cast::<RawFd>(), listener);
    }
    // SAFETY: every pointer in message is valid for the sizes given.
    if unsafe { libc::sendmsg(socket, &message, libc::MSG_NOSIGNAL) } != pid_bytes.len() as isize {
        return Err((HandOverStep::Send, errno()));
    }
    let mut answer = 0u8;
    // SAFETY: one byte into a valid local.
    let read = unsafe { libc::read(socket, (&mut answer as *mut u8).cast(), 1) };
    if read != 1 || answer != ACK_WATCHING {
        return Err((HandOverStep::Refused, libc::EPROTO));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inet(port: u16, ip: [u8; 4]) -> Vec<u8> {
        let mut bytes = (libc::AF_INET as u16).to_ne_bytes().to_vec();
        bytes.extend(port.to_be_bytes());
        bytes.extend(ip);
        bytes.extend([0u8; 8]);
        bytes
    }

    #[test]
    fn inet_and_inet6_addresses_read_as_ip_and_port() {
        assert_eq!(
            parse_sockaddr(&inet(8080, [127, 0, 0, 1])),
            (NetFamily::Inet, "127.0.0.1:8080".to_owned())
        );
        let mut v6 = (libc::AF_INET6 as u16).to_ne_bytes().to_vec();
        v6.extend(443u16.to_be_bytes());
        v6.extend([0u8; 4]);
        let mut ip = [0u8; 16];
        ip[15] = 1;
        v6.extend(ip);
        v6.extend([0u8; 4]);
        assert_eq!(
            parse_sockaddr(&v6),
            (NetFamily::Inet6, "[::1]:443".to_owned())
        );
        // Cut short: no address.
        assert_eq!(
            parse_sockaddr(&inet(80, [1, 2, 3, 4])[..6]),
            (NetFamily::Other, String::new())
        );
        assert_eq!(parse_sockaddr(&[1]), (NetFamily::Other, String::new()));
    }

    #[test]
    fn unix_addresses_read_as_path_or_abstract_name() {
        let unix = |tail: &[u8]| {
            let mut bytes = (libc::AF_UNIX as u16).to_ne_bytes().to_vec();
            bytes.extend(tail);
            bytes
        };
        assert_eq!(
            parse_sockaddr(&unix(b"/run/app.sock\0\0\0")),
            (NetFamily::Unix, "/run/app.sock".to_owned())
        );
        assert_eq!(
            parse_sockaddr(&unix(b"\0app-bus")),
            (NetFamily::Unix, "@app-bus".to_owned())
        );
        assert_eq!(parse_sockaddr(&unix(b"")), (NetFamily::Unix, String::new()));
        let other = 99u16.to_ne_bytes();
        assert_eq!(
            parse_sockaddr(&other),
            (NetFamily::Other, "family 99".to_owned())
        );
    }

    #[test]
    fn control_socket_names_are_short_and_stable() {
        let name = control_socket_name(Path::new("/srv/mirror"));
        assert_eq!(name, control_socket_name(Path::new("/srv/mirror")));
        assert_ne!(name, control_socket_name(Path::new("/srv/mirror2")));
        assert_eq!(name.len(), "ctl-0123456789abcdef.sock".len());
        let (_, len) = address_in(1000, &name).expect("fits");
        assert!((len as usize) < 108);
    }
}
