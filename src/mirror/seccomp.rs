//! The seccomp user-notification filter that lets the daemon see socket calls: a raw BPF
//! program that stops `connect`, `bind`, `listen`, `accept` and `accept4` of the native
//! architecture with `SECCOMP_RET_USER_NOTIF` and allows everything else (including every call
//! of another architecture: a wrong-arch process is let through unrecorded, never killed), the
//! async-signal-safe installation used between fork and exec (`seccomp(2)` with
//! `SECCOMP_FILTER_FLAG_NEW_LISTENER`; root has CAP_SYS_ADMIN, so `no_new_privs` is not set and
//! setuid programs keep working), and the three ioctls the daemon's side uses on the listener:
//! receive a notification, check that it is still valid, and let the kernel run the call
//! (`SECCOMP_USER_NOTIF_FLAG_CONTINUE`). The filter is inherited by every descendant; if every
//! copy of the listener is closed, the filtered calls fail with ENOSYS, so the daemon keeps its
//! copy until no filtered process is left.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// The calls the filter stops, by name (for records) and number.
pub const WATCHED_CALLS: [(&str, libc::c_long); 5] = [
    ("connect", libc::SYS_connect),
    ("bind", libc::SYS_bind),
    ("listen", libc::SYS_listen),
    ("accept", libc::SYS_accept),
    ("accept4", libc::SYS_accept4),
];

#[cfg(target_arch = "x86_64")]
const NATIVE_AUDIT_ARCH: u32 = 0xC000_003E;
#[cfg(target_arch = "aarch64")]
const NATIVE_AUDIT_ARCH: u32 = 0xC000_00B7;

/// Offsets in `struct seccomp_data`.
const DATA_NR: u32 = 0;
const DATA_ARCH: u32 = 4;

const BPF_LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const BPF_JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const BPF_RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

/// Instructions of [`filter_program`].
pub const FILTER_LEN: usize = 5 + WATCHED_CALLS.len();

/// The BPF program: `arch != native -> allow; nr in WATCHED_CALLS -> notify; allow`.
pub fn filter_program() -> [libc::sock_filter; FILTER_LEN] {
    let stmt = |code: u16, k: u32| libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    };
    let jump = |k: u32, jt: u8, jf: u8| libc::sock_filter {
        code: BPF_JEQ_K,
        jt,
        jf,
        k,
    };
    let calls = WATCHED_CALLS.len() as u8;
    let mut program = [stmt(BPF_RET_K, libc::SECCOMP_RET_ALLOW); FILTER_LEN];
    program[0] = stmt(BPF_LD_W_ABS, DATA_ARCH);
    // Not the native arch: jump over the nr load and the comparisons to "allow".
    program[1] = jump(NATIVE_AUDIT_ARCH, 0, calls + 1);
    program[2] = stmt(BPF_LD_W_ABS, DATA_NR);
    for (i, (_, nr)) in WATCHED_CALLS.iter().enumerate() {
        // Equal: jump to the last instruction (notify), past the rest and the "allow".
        let remaining = calls - 1 - i as u8;
        program[3 + i] = jump(*nr as u32, remaining + 1, 0);
    }
    program[3 + WATCHED_CALLS.len()] = stmt(BPF_RET_K, libc::SECCOMP_RET_ALLOW);
    program[4 + WATCHED_CALLS.len()] = stmt(BPF_RET_K, libc::SECCOMP_RET_USER_NOTIF);
    program
}

/// Installs `program` on the calling thread and returns the raw listener fd (close-on-exec),
/// or the negated errno. Only a system call: safe between fork and exec.
pub fn install_filter(program: &[libc::sock_filter; FILTER_LEN]) -> Result<RawFd, i32> {
    let fprog = libc::sock_fprog {
        len: FILTER_LEN as u16,
        filter: program.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: fprog points to a valid program that outlives the call; the kernel copies it.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            libc::SECCOMP_FILTER_FLAG_NEW_LISTENER,
            &fprog as *const libc::sock_fprog,
        )
    };
    if fd < 0 {
        // SAFETY: errno is thread-local.
        Err(unsafe { *libc::__errno_location() })
    } else {
        Ok(fd as RawFd)
    }
}

/// One stopped call, as the kernel describes it.
#[derive(Clone, Copy, Debug)]
pub struct Notification {
    pub id: u64,
    /// The calling thread (in the daemon's pid namespace).
    pub tid: u32,
    pub nr: i64,
    pub args: [u64; 6],
}

/// What waiting on a listener gave.
pub enum Received {
    Call(Notification),
    /// Interrupted, or the caller went away before we read it: try again.
    Retry,
    /// No process uses the filter any more.
    Gone,
}

/// Waits for the next notification on `listener` (poll, so that the end of every filtered
/// process is seen as POLLHUP instead of blocking forever).
pub fn receive(listener: BorrowedFd<'_>) -> io::Result<Received> {
    let mut pollfd = libc::pollfd {
        fd: listener.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let ready = unsafe { libc::poll(&mut pollfd, 1, -1) };
    if ready < 0 {
        let error = io::Error::last_os_error();
        return match error.raw_os_error() {
            Some(libc::EINTR) => Ok(Received::Retry),
            _ => Err(error),
        };
    }
    if pollfd.revents & libc::POLLIN == 0 {
        if pollfd.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0 {
            return Ok(Received::Gone);
        }
        return Ok(Received::Retry);
    }
    // SAFETY: seccomp_notif is plain data; the kernel requires it zeroed.
    let mut notif: libc::seccomp_notif = unsafe { std::mem::zeroed() };
    // SAFETY: valid listener fd and a buffer of the type the ioctl expects.
    let result = unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_RECV,
            &mut notif as *mut libc::seccomp_notif,
        )
    };
    if result != 0 {
        let error = io::Error::last_os_error();
        return match error.raw_os_error() {
            // ENOENT: the caller was interrupted or died between poll and recv.
            Some(libc::EINTR) | Some(libc::ENOENT) => Ok(Received::Retry),
            _ => Err(error),
        };
    }
    Ok(Received::Call(Notification {
        id: notif.id,
        tid: notif.pid,
        nr: i64::from(notif.data.nr),
        args: notif.data.args,
    }))
}

/// Whether the call `id` is still waiting (the thread was not interrupted or killed), so that
/// what was read from its memory belongs to it.
pub fn still_valid(listener: BorrowedFd<'_>, id: u64) -> bool {
    // SAFETY: valid fd; the ioctl reads a u64.
    unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_ID_VALID,
            &id as *const u64,
        ) == 0
    }
}

/// Lets the kernel run call `id` as if no filter had stopped it. An error (ENOENT: the caller
/// is gone) is of no consequence.
pub fn continue_call(listener: BorrowedFd<'_>, id: u64) {
    let response = libc::seccomp_notif_resp {
        id,
        val: 0,
        error: 0,
        flags: libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32,
    };
    // SAFETY: valid fd; the ioctl reads a seccomp_notif_resp.
    unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_SEND,
            &response as *const libc::seccomp_notif_resp,
        )
    };
}

/// The name of a watched call number.
pub fn call_name(nr: i64) -> Option<&'static str> {
    WATCHED_CALLS
        .iter()
        .find(|(_, watched)| i64::from(*watched as i32) == nr)
        .map(|(name, _)| *name)
}

/// Takes ownership of a received listener fd.
///
/// # Safety
/// `fd` must be an open descriptor that nothing else owns.
pub unsafe fn own(fd: RawFd) -> OwnedFd {
    // SAFETY: the caller guarantees ownership.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the program on a `seccomp_data` the way the kernel would (only the instructions
    /// the program uses).
    fn run(program: &[libc::sock_filter], arch: u32, nr: u32) -> u32 {
        let mut pc = 0;
        let mut acc = 0u32;
        loop {
            let insn = program[pc];
            match insn.code {
                BPF_LD_W_ABS => acc = if insn.k == DATA_ARCH { arch } else { nr },
                BPF_JEQ_K => {
                    pc += usize::from(if acc == insn.k { insn.jt } else { insn.jf });
                }
                BPF_RET_K => return insn.k,
                other => panic!("unexpected instruction {other:#x}"),
            }
            pc += 1;
        }
    }

    #[test]
    fn the_filter_stops_exactly_the_socket_calls_of_the_native_arch() {
        let program = filter_program();
        for (_, nr) in WATCHED_CALLS {
            assert_eq!(
                run(&program, NATIVE_AUDIT_ARCH, nr as u32),
                libc::SECCOMP_RET_USER_NOTIF
            );
            assert_eq!(
                run(&program, 0x4000_0003, nr as u32),
                libc::SECCOMP_RET_ALLOW,
                "another arch is allowed, never killed"
            );
        }
        for nr in [
            libc::SYS_read,
            libc::SYS_openat,
            libc::SYS_socket,
            libc::SYS_sendto,
        ] {
            assert_eq!(
                run(&program, NATIVE_AUDIT_ARCH, nr as u32),
                libc::SECCOMP_RET_ALLOW
            );
        }
        assert_eq!(call_name(libc::SYS_accept4), Some("accept4"));
        assert_eq!(call_name(libc::SYS_read), None);
    }
}
