//! A minimal io_uring over the raw syscalls, only what FUSE over io_uring needs: a ring of
//! 128-byte SQEs (IORING_SETUP_SQE128: FUSE's commands carry a `fuse_uring_cmd_req` in the
//! SQE's 80-byte command area), IORING_OP_URING_CMD submissions with an iovec array in
//! addr/len, submit-and-wait, and reaping of CQEs. The `io-uring` crate's `UringCmd80` cannot
//! set addr/len, which FUSE's REGISTER needs, hence this. A ring belongs to the thread that
//! created it (SINGLE_ISSUER, DEFER_TASKRUN where the kernel has them: completions run when
//! that thread waits, on its CPU).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr;
use std::sync::atomic::{AtomicU32, Ordering};

const IORING_SETUP_COOP_TASKRUN: u32 = 1 << 8;
const IORING_SETUP_SQE128: u32 = 1 << 10;
const IORING_SETUP_SINGLE_ISSUER: u32 = 1 << 12;
const IORING_SETUP_DEFER_TASKRUN: u32 = 1 << 13;
const IORING_FEAT_SINGLE_MMAP: u32 = 1 << 0;
const IORING_ENTER_GETEVENTS: u32 = 1 << 0;
const IORING_OFF_SQ_RING: libc::off_t = 0;
const IORING_OFF_CQ_RING: libc::off_t = 0x800_0000;
const IORING_OFF_SQES: libc::off_t = 0x1000_0000;
/// `IORING_OP_URING_CMD` in `enum io_uring_op`.
pub const IORING_OP_URING_CMD: u8 = 46;
/// Bytes of one SQE with IORING_SETUP_SQE128.
pub const SQE_LEN: usize = 128;
/// Bytes of the command area (`sqe->cmd`) of a 128-byte SQE, from offset 48.
pub const CMD_LEN: usize = 80;
const CMD_OFFSET: usize = 48;
const CQE_LEN: usize = 16;

#[repr(C)]
#[derive(Default)]
struct SqringOffsets {
    head: u32,
    tail: u32,
    ring_mask: u32,
    ring_entries: u32,
    flags: u32,
    dropped: u32,
    array: u32,
    resv1: u32,
    user_addr: u64,
}

#[repr(C)]
#[derive(Default)]
struct CqringOffsets {
    head: u32,
    tail: u32,
    ring_mask: u32,
    ring_entries: u32,
    overflow: u32,
    cqes: u32,
    flags: u32,
    resv1: u32,
    user_addr: u64,
}

/// `struct io_uring_params` (120 bytes).
#[repr(C)]
#[derive(Default)]
struct Params {
    sq_entries: u32,
    cq_entries: u32,
    flags: u32,
    sq_thread_cpu: u32,
    sq_thread_idle: u32,
    features: u32,
    wq_fd: u32,
    resv: [u32; 3],
    sq_off: SqringOffsets,
    cq_off: CqringOffsets,
}

/// One IORING_OP_URING_CMD submission.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UringCmd {
    pub fd: RawFd,
    pub cmd_op: u32,
    /// Address and length of the command's buffer (for FUSE: an iovec array and its count).
    pub addr: u64,
    pub len: u32,
    pub user_data: u64,
    pub cmd: [u8; CMD_LEN],
}

impl UringCmd {
    /// The SQE's 128 bytes (`struct io_uring_sqe` with its 80-byte command area).
    pub fn encode(&self) -> [u8; SQE_LEN] {
        let mut sqe = [0u8; SQE_LEN];
        sqe[0] = IORING_OP_URING_CMD;
        sqe[4..8].copy_from_slice(&self.fd.to_ne_bytes());
        sqe[8..12].copy_from_slice(&self.cmd_op.to_ne_bytes());
        sqe[16..24].copy_from_slice(&self.addr.to_ne_bytes());
        sqe[24..28].copy_from_slice(&self.len.to_ne_bytes());
        sqe[32..40].copy_from_slice(&self.user_data.to_ne_bytes());
        sqe[CMD_OFFSET..].copy_from_slice(&self.cmd);
        sqe
    }
}

/// A completion: the submission's user_data and its result (a negative errno on failure).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Completion {
    pub user_data: u64,
    pub result: i32,
}

/// A mapped region, unmapped on drop.
struct Mapping {
    addr: *mut u8,
    len: usize,
}

impl Mapping {
    fn new(fd: RawFd, len: usize, offset: libc::off_t) -> io::Result<Mapping> {
        // SAFETY: a fresh shared mapping of the ring's fd; the kernel checks len and offset.
        let addr = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd,
                offset,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping {
            addr: addr.cast(),
            len,
        })
    }

    /// The u32 at `offset` (given by the kernel in the ring offsets, within `len`).
    fn u32_at(&self, offset: u32) -> *mut u32 {
        debug_assert!(offset as usize + 4 <= self.len);
        // SAFETY: the kernel's offsets lie inside the mapping it sized.
        unsafe { self.addr.add(offset as usize).cast() }
    }

    fn atomic_at(&self, offset: u32) -> &AtomicU32 {
        // SAFETY: a 4-aligned u32 inside the mapping, shared with the kernel, which accesses
        // it atomically too; the reference lives no longer than the mapping.
        unsafe { &*(self.u32_at(offset) as *const AtomicU32) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what `new` mapped; nothing refers to it any more.
        unsafe {
            libc::munmap(self.addr.cast(), self.len);
        }
    }
}

/// An io_uring with 128-byte SQEs, used by one thread.
pub struct Ring {
    // Field order matters for drop: the mappings go before the fd closes.
    rings: Mapping,
    _cq_rings: Option<Mapping>,
    sqes: Mapping,
    sq: SqringOffsets,
    cq: CqringOffsets,
    cq_base: *mut u8,
    sq_entries: u32,
    /// SQEs written but not yet handed to the kernel by io_uring_enter.
    unsubmitted: u32,
    fd: OwnedFd,
}

impl Ring {
    /// A ring of `entries` SQEs (rounded up to a power of two by the kernel) and twice as many
    /// CQEs. Asks for SINGLE_ISSUER and DEFER_TASKRUN, falling back to COOP_TASKRUN, then to
    /// plain SQE128 on kernels that refuse them.
    pub fn new(entries: u32) -> io::Result<Ring> {
        let tries = [
            IORING_SETUP_SQE128 | IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN,
            IORING_SETUP_SQE128 | IORING_SETUP_COOP_TASKRUN,
            IORING_SETUP_SQE128,
        ];
        let mut last = io::Error::from_raw_os_error(libc::EINVAL);
        for flags in tries {
            match Ring::with_flags(entries, flags) {
                Ok(ring) => return Ok(ring),
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => last = e,
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    fn with_flags(entries: u32, flags: u32) -> io::Result<Ring> {
        let mut params = Params {
            flags,
            ..Params::default()
        };
        // SAFETY: io_uring_setup writes into `params`, a valid io_uring_params.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_io_uring_setup,
                entries,
                &mut params as *mut Params,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: io_uring_setup returned a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
        let sq_len = params.sq_off.array as usize + params.sq_entries as usize * 4;
        let cq_len = params.cq_off.cqes as usize + params.cq_entries as usize * CQE_LEN;
        let single = params.features & IORING_FEAT_SINGLE_MMAP != 0;
        let rings = Mapping::new(
            fd.as_raw_fd(),
            if single { sq_len.max(cq_len) } else { sq_len },
            IORING_OFF_SQ_RING,
        )?;
        let cq_rings = if single {
            None
        } else {
            Some(Mapping::new(fd.as_raw_fd(), cq_len, IORING_OFF_CQ_RING)?)
        };
        let cq_base = cq_rings.as_ref().unwrap_or(&rings).addr;
        let sqes = Mapping::new(
            fd.as_raw_fd(),
            params.sq_entries as usize * SQE_LEN,
            IORING_OFF_SQES,
        )?;
        Ok(Ring {
            rings,
            _cq_rings: cq_rings,
            sqes,
            sq_entries: params.sq_entries,
            sq: params.sq_off,
            cq: params.cq_off,
            cq_base,
            unsubmitted: 0,
            fd,
        })
    }

    fn cq_atomic(&self, offset: u32) -> &AtomicU32 {
        // SAFETY: as Mapping::atomic_at, on the CQ ring's mapping (the SQ one if shared).
        unsafe { &*(self.cq_base.add(offset as usize) as *const AtomicU32) }
    }

    /// Queues one command; false if the SQ ring is full (submit first).
    pub fn push(&mut self, cmd: &UringCmd) -> bool {
        let head = self.rings.atomic_at(self.sq.head).load(Ordering::Acquire);
        let tail_atomic = self.rings.atomic_at(self.sq.tail);
        let tail = tail_atomic.load(Ordering::Relaxed);
        if tail.wrapping_sub(head) >= self.sq_entries {
            return false;
        }
        // SAFETY: the mask comes from the kernel, set once at setup.
        let mask = unsafe { *self.rings.u32_at(self.sq.ring_mask) };
        let index = tail & mask;
        let sqe = cmd.encode();
        // SAFETY: `index` < sq_entries, so the SQE and the array slot lie inside their
        // mappings; the kernel reads neither before the tail store below publishes them.
        unsafe {
            ptr::copy_nonoverlapping(
                sqe.as_ptr(),
                self.sqes.addr.add(index as usize * SQE_LEN),
                SQE_LEN,
            );
            let array = self.rings.u32_at(self.sq.array).add(index as usize);
            array.write_volatile(index);
        }
        tail_atomic.store(tail.wrapping_add(1), Ordering::Release);
        self.unsubmitted += 1;
        true
    }

    /// Hands the queued commands to the kernel and, if `wait`, waits until at least one
    /// completion is ready. Returns the number of commands the kernel took.
    pub fn submit(&mut self, wait: bool) -> io::Result<u32> {
        loop {
            let flags = if wait { IORING_ENTER_GETEVENTS } else { 0 };
            // SAFETY: io_uring_enter on our ring fd, without a signal mask argument.
            let taken = unsafe {
                libc::syscall(
                    libc::SYS_io_uring_enter,
                    self.fd.as_raw_fd(),
                    self.unsubmitted,
                    u32::from(wait),
                    flags,
                    ptr::null::<libc::sigset_t>(),
                    0usize,
                )
            };
            if taken < 0 {
                let e = io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                return Err(e);
            }
            let taken = u32::try_from(taken)
                .unwrap_or(u32::MAX)
                .min(self.unsubmitted);
            self.unsubmitted -= taken;
            return Ok(taken);
        }
    }

    /// Takes the completions that are ready, without waiting.
    pub fn reap(&mut self, into: &mut Vec<Completion>) {
        let head_atomic = self.cq_atomic(self.cq.head);
        let mut head = head_atomic.load(Ordering::Relaxed);
        let tail = self.cq_atomic(self.cq.tail).load(Ordering::Acquire);
        // SAFETY: the mask comes from the kernel, set once at setup.
        let mask = unsafe { *(self.cq_base.add(self.cq.ring_mask as usize) as *const u32) };
        while head != tail {
            let index = (head & mask) as usize;
            let mut cqe = [0u8; CQE_LEN];
            // SAFETY: index <= mask < cq_entries: the CQE lies inside the mapping; the kernel
            // wrote it before publishing the tail we loaded with Acquire.
            unsafe {
                ptr::copy_nonoverlapping(
                    self.cq_base
                        .add(self.cq.cqes as usize + index * CQE_LEN)
                        .cast_const(),
                    cqe.as_mut_ptr(),
                    CQE_LEN,
                );
            }
            let mut user_data = [0u8; 8];
            user_data.copy_from_slice(&cqe[0..8]);
            let mut result = [0u8; 4];
            result.copy_from_slice(&cqe[8..12]);
            into.push(Completion {
                user_data: u64::from_ne_bytes(user_data),
                result: i32::from_ne_bytes(result),
            });
            head = head.wrapping_add(1);
        }
        head_atomic.store(head, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uring_cmd_sqe_layout() {
        let mut cmd = [0u8; CMD_LEN];
        cmd[16] = 3;
        let sqe = UringCmd {
            fd: 7,
            cmd_op: 2,
            addr: 0x1122_3344_5566_7788,
            len: 2,
            user_data: 0xdead_beef,
            cmd,
        }
        .encode();
        assert_eq!(sqe[0], IORING_OP_URING_CMD);
        assert_eq!(sqe[1], 0);
        assert_eq!(&sqe[4..8], &7i32.to_ne_bytes());
        assert_eq!(&sqe[8..12], &2u32.to_ne_bytes());
        assert_eq!(&sqe[16..24], &0x1122_3344_5566_7788u64.to_ne_bytes());
        assert_eq!(&sqe[24..28], &2u32.to_ne_bytes());
        assert_eq!(&sqe[32..40], &0xdead_beefu64.to_ne_bytes());
        assert_eq!(sqe[48 + 16], 3);
    }

    #[test]
    fn params_struct_is_120_bytes() {
        assert_eq!(std::mem::size_of::<Params>(), 120);
    }

    /// A NOP-like round trip: a URING_CMD on a descriptor that does not support it completes
    /// with an error CQE carrying our user_data (skipped where io_uring is unavailable).
    #[test]
    fn uring_cmd_on_a_plain_file_completes_with_an_error() {
        let mut ring = match Ring::new(4) {
            Ok(ring) => ring,
            Err(e) => {
                eprintln!("io_uring unavailable here: {e}");
                return;
            }
        };
        let file = std::fs::File::open("/proc/self/stat").expect("open a file");
        assert!(ring.push(&UringCmd {
            fd: file.as_raw_fd(),
            cmd_op: 1,
            addr: 0,
            len: 0,
            user_data: 42,
            cmd: [0; CMD_LEN],
        }));
        assert_eq!(ring.submit(true).expect("submit"), 1);
        let mut done = Vec::new();
        ring.reap(&mut done);
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].user_data, 42);
        assert!(done[0].result < 0, "{:?}", done[0]);
    }
}
