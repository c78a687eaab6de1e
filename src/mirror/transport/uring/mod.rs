//! FUSE over io_uring: one thread per possible CPU, pinned to it, each with its own ring and
//! a few ring entries registered on the kernel's queue of that CPU (qid = CPU), so a request
//! is served by the daemon thread of the CPU that made it, woken by io_uring task work rather
//! than a /dev/fuse read. [`start`] runs after fuser's INIT handshake negotiated
//! FUSE_OVER_IO_URING and registers every entry of every queue before returning: the kernel
//! holds all requests back until each queue has one, then sends them through the rings.
//! FORGET and INTERRUPT still come through /dev/fuse (fuser's threads). Each thread loops
//! completion -> [`wire::parse`] -> the handler of `mirror/fs.rs` -> COMMIT_AND_FETCH, until
//! the kernel completes its commands with ENOTCONN (unmount or abort).

mod ring;
mod wire;

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;

use fuser::{Errno, INodeNo};

use self::ring::{Completion, Ring, UringCmd};
use self::wire::{Answer, EntInOut, InHeader, Request, RingReply};
use super::replies::{Caller, EmptyReply, Reply};
use crate::mirror::fs::MirrorFs;

/// Ring entries per queue. A queue's entries are the requests its CPU can have in the daemon at
/// once: a thread serves them one after the other, so more entries only queue requests in user
/// space instead of in the kernel, while each costs a payload buffer (max_payload, 1 MiB with
/// the capped max_write; pages are touched only when used). Four lets a CPU's thread take the
/// next requests in one wake-up when several processes on that CPU block on the mount at once
/// (one in a page fault, others in lookups), and keeps the per-CPU memory bound at 4 MiB.
pub const QUEUE_DEPTH: usize = 4;

/// Below this many bytes, a request's payload is copied out before its answer is written over
/// it (names); above it (WRITE, SETXATTR data), the answer is written aside and copied in.
const COPY_OUT_LIMIT: usize = 4096;

/// Why the ring transport did not start. Unless said otherwise, the connection was switched
/// back to /dev/fuse before the error is returned (fuser's threads serve every request).
#[derive(Debug, thiserror::Error)]
pub enum UringError {
    #[error("cannot read the possible CPUs from {path}: {source}")]
    Cpus {
        path: &'static str,
        source: io::Error,
    },
    #[error("cannot duplicate the /dev/fuse descriptor for the rings: {0}")]
    Device(io::Error),
    #[error("the payload buffer of {given} bytes is below the kernel's minimum of {min}")]
    Payload { given: usize, min: usize },
    #[error("cannot start the thread of queue {qid}: {source}")]
    Thread { qid: u16, source: io::Error },
    /// io_uring_setup failed (kernel without io_uring, or io_uring disabled by sysctl). If no
    /// queue could create a ring, the connection could not be switched back: it waits for the
    /// ring forever and must be aborted.
    #[error("cannot create the io_uring of queue {qid}: {source}")]
    Ring { qid: u16, source: io::Error },
    /// The kernel refused a FUSE_IO_URING_CMD_REGISTER: EOPNOTSUPP when the module parameter
    /// enable_uring is off and INIT did not negotiate FUSE_OVER_IO_URING, EINVAL if the payload
    /// buffer is below the connection's max payload.
    #[error("the kernel refused to register a ring entry of queue {qid}: {source}")]
    Register { qid: u16, source: io::Error },
}

/// The running ring threads.
pub struct UringTransport {
    threads: Vec<JoinHandle<()>>,
}

impl UringTransport {
    /// The number of queues (possible CPUs) served.
    pub fn queues(&self) -> usize {
        self.threads.len()
    }

    /// Waits until every ring thread has ended (the connection ended).
    pub fn join(self) {
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}

/// The payload buffer each ring entry needs: the kernel's max payload for the connection,
/// `max(FUSE_MIN_READ_BUFFER, max_write, max_pages * page size)` (fs/fuse/dev_uring.c), with
/// max_pages at most /proc/sys/fs/fuse/max_pages_limit (256 unless raised).
pub fn payload_size(max_write: u32) -> usize {
    let limit = std::fs::read_to_string("/proc/sys/fs/fuse/max_pages_limit")
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
        .unwrap_or(256);
    // SAFETY: sysconf has no preconditions.
    let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
    wire::MIN_PAYLOAD
        .max(max_write as usize)
        .max(limit.saturating_mul(page))
}

/// Whether this kernel can create the rings the transport needs (128-byte SQEs), to ask INIT
/// for FUSE_OVER_IO_URING only where [`start`] can follow.
pub fn probe() -> io::Result<()> {
    Ring::new(1).map(drop)
}

/// Starts serving `fs` through FUSE over io_uring on the connection of `device` (its
/// /dev/fuse, after INIT). `max_payload`: see [`payload_size`].
pub fn start(
    device: &OwnedFd,
    fs: Arc<MirrorFs>,
    max_payload: usize,
) -> Result<UringTransport, UringError> {
    if max_payload < wire::MIN_PAYLOAD {
        return Err(UringError::Payload {
            given: max_payload,
            min: wire::MIN_PAYLOAD,
        });
    }
    let cpus = possible_cpus()?;
    let device = Arc::new(device.try_clone().map_err(UringError::Device)?);
    let (report_tx, report_rx) = mpsc::channel::<(u16, Result<(), UringError>)>();
    let mut threads = Vec::new();
    let mut controls = Vec::new();
    let mut first_error = None;
    for (qid, &cpu) in cpus.iter().enumerate() {
        let qid = u16::try_from(qid).unwrap_or(u16::MAX);
        let (control_tx, control_rx) = mpsc::channel::<Control>();
        let queue = Queue {
            qid,
            cpu,
            device: Arc::clone(&device),
            fs: Arc::clone(&fs),
            max_payload,
        };
        let report = report_tx.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("depsetfs-uring-{qid}"))
            .spawn(move || queue.run(&report, &control_rx));
        match spawned {
            Ok(thread) => {
                threads.push((qid, thread));
                controls.push((qid, control_tx));
            }
            Err(source) => {
                first_error = Some(UringError::Thread { qid, source });
                break;
            }
        }
    }
    drop(report_tx);
    let mut ready = Vec::new();
    let mut refused = false;
    for _ in 0..threads.len() {
        let Ok((qid, result)) = report_rx.recv() else {
            break;
        };
        match result {
            Ok(()) => ready.push(qid),
            Err(e) => {
                refused |= matches!(e, UringError::Register { .. });
                first_error.get_or_insert(e);
            }
        }
    }
    if ready.len() < threads.len() && first_error.is_none() {
        first_error = Some(UringError::Thread {
            qid: 0,
            source: io::Error::other("a ring thread ended before registering"),
        });
    }
    let Some(error) = first_error else {
        for (_, control) in &controls {
            let _ = control.send(Control::Serve);
        }
        return Ok(UringTransport {
            threads: threads.into_iter().map(|(_, t)| t).collect(),
        });
    };
    // Switch the connection back to /dev/fuse: a refused REGISTER already did (the kernel
    // clears its io_uring flag and wakes the requests it held back); otherwise one ring sends
    // a REGISTER the kernel must refuse (a queue id beyond its queues), to the same effect.
    let mut switched = refused;
    for (qid, control) in &controls {
        let poison = !switched && ready.contains(qid);
        switched |= poison;
        let _ = control.send(Control::Stop { poison });
    }
    for (_, thread) in threads {
        let _ = thread.join();
    }
    Err(error)
}

/// The CPUs the kernel counts as possible, in order: queue i is the i-th.
fn possible_cpus() -> Result<Vec<usize>, UringError> {
    const PATH: &str = "/sys/devices/system/cpu/possible";
    let text =
        std::fs::read_to_string(PATH).map_err(|source| UringError::Cpus { path: PATH, source })?;
    parse_cpu_list(text.trim()).ok_or_else(|| UringError::Cpus {
        path: PATH,
        source: io::Error::new(io::ErrorKind::InvalidData, format!("{text:?}")),
    })
}

fn parse_cpu_list(text: &str) -> Option<Vec<usize>> {
    let mut cpus = Vec::new();
    for part in text.split(',') {
        let (first, last): (usize, usize) = match part.split_once('-') {
            Some((a, b)) => (a.parse().ok()?, b.parse().ok()?),
            None => {
                let cpu = part.parse().ok()?;
                (cpu, cpu)
            }
        };
        if last < first || last >= 1 << 16 {
            return None;
        }
        cpus.extend(first..=last);
    }
    (!cpus.is_empty()).then_some(cpus)
}

/// What `start` tells a queue's thread once every queue reported.
enum Control {
    Serve,
    Stop { poison: bool },
}

/// One queue: its CPU, the connection and the handlers.
struct Queue {
    qid: u16,
    cpu: usize,
    device: Arc<OwnedFd>,
    fs: Arc<MirrorFs>,
    max_payload: usize,
}

/// A ring entry's buffers, registered with the kernel (which writes requests into them and
/// reads answers from them while the entry's command is in flight).
struct Entry {
    header: Box<[u8]>,
    payload: Box<[u8]>,
    iov: [libc::iovec; 2],
    /// Its command completed with an error: the kernel no longer uses it.
    dead: bool,
    /// Registered again after an unexpected error, and no request since: a second error in a
    /// row retires it.
    retried: bool,
}

impl Entry {
    fn new(max_payload: usize) -> Entry {
        let mut header = vec![0u8; wire::HEADER_BUFFER_LEN].into_boxed_slice();
        let mut payload = vec![0u8; max_payload].into_boxed_slice();
        let iov = [
            libc::iovec {
                iov_base: header.as_mut_ptr().cast(),
                iov_len: header.len(),
            },
            libc::iovec {
                iov_base: payload.as_mut_ptr().cast(),
                iov_len: payload.len(),
            },
        ];
        Entry {
            header,
            payload,
            iov,
            dead: false,
            retried: false,
        }
    }
}

/// Kernel answers that mean the connection is over (unmount, abort, daemon teardown).
fn connection_ended(errno: i32) -> bool {
    matches!(
        errno,
        libc::ENOTCONN | libc::ENODEV | libc::ECONNABORTED | libc::ECANCELED | libc::EBADF
    )
}

impl Queue {
    fn register_cmd(&self, index: usize, entry: &Entry, qid: u16) -> UringCmd {
        UringCmd {
            fd: self.device.as_raw_fd(),
            cmd_op: wire::CMD_REGISTER,
            addr: entry.iov.as_ptr() as u64,
            len: 2,
            user_data: index as u64,
            cmd: wire::cmd_req(0, qid),
        }
    }

    fn run(
        self,
        report: &mpsc::Sender<(u16, Result<(), UringError>)>,
        control: &mpsc::Receiver<Control>,
    ) {
        // Pinning is what makes the queue local; a CPU outside this process's cpuset (or
        // offline) still gets its queue served, from wherever the thread runs.
        let _ = crate::sys::set_cpu_affinity(&[self.cpu]);
        let qid = self.qid;
        let mut ring = match Ring::new(QUEUE_DEPTH as u32) {
            Ok(ring) => ring,
            Err(source) => {
                let _ = report.send((qid, Err(UringError::Ring { qid, source })));
                return;
            }
        };
        let mut entries: Vec<Entry> = (0..QUEUE_DEPTH)
            .map(|_| Entry::new(self.max_payload))
            .collect();
        for (index, entry) in entries.iter().enumerate() {
            ring.push(&self.register_cmd(index, entry, qid));
        }
        let mut done = Vec::new();
        // A refused REGISTER completes during the submission; an accepted one only when a
        // request arrives.
        let submitted = ring.submit(false).map(|_| ring.reap(&mut done));
        let refused = match submitted {
            Err(source) => Some(UringError::Register { qid, source }),
            Ok(()) => done
                .iter()
                .find(|c| c.result < 0)
                .map(|c| UringError::Register {
                    qid,
                    source: io::Error::from_raw_os_error(-c.result),
                }),
        };
        let _ = report.send((qid, refused.map_or(Ok(()), Err)));
        match control.recv() {
            Ok(Control::Serve) => {}
            Ok(Control::Stop { poison }) => {
                if let (true, Some(entry)) = (poison, entries.first()) {
                    ring.push(&UringCmd {
                        user_data: u64::MAX,
                        ..self.register_cmd(0, entry, u16::MAX)
                    });
                    let _ = ring.submit(false);
                }
                // Dropping the ring cancels its commands; the kernel's entries stay unused.
                return;
            }
            Err(_) => return,
        }
        self.serve(&mut ring, &mut entries, done);
    }

    fn serve(&self, ring: &mut Ring, entries: &mut [Entry], mut done: Vec<Completion>) {
        let mut inbuf = Vec::with_capacity(COPY_OUT_LIMIT);
        let mut outbuf: Vec<u8> = Vec::new();
        loop {
            for completion in done.drain(..) {
                let Some((index, entry)) = usize::try_from(completion.user_data)
                    .ok()
                    .and_then(|i| Some((i, entries.get_mut(i)?)))
                else {
                    continue;
                };
                if completion.result < 0 {
                    let errno = -completion.result;
                    if connection_ended(errno) || entry.retried {
                        entry.dead = true;
                        continue;
                    }
                    // The kernel dropped this entry (e.g. a commit it could not match): give
                    // it a fresh one on the same buffers, so the queue keeps its depth.
                    eprintln!(
                        "depsetfs daemon: io_uring queue {}: a ring entry failed ({}); registering it again",
                        self.qid,
                        io::Error::from_raw_os_error(errno)
                    );
                    entry.retried = true;
                    let cmd = self.register_cmd(index, entry, self.qid);
                    if !self.push(ring, &cmd) {
                        return;
                    }
                    continue;
                }
                entry.retried = false;
                let commit_id = self.handle(entry, &mut inbuf, &mut outbuf);
                let cmd = UringCmd {
                    fd: self.device.as_raw_fd(),
                    cmd_op: wire::CMD_COMMIT_AND_FETCH,
                    addr: 0,
                    len: 0,
                    user_data: completion.user_data,
                    cmd: wire::cmd_req(commit_id, self.qid),
                };
                if !self.push(ring, &cmd) {
                    return;
                }
            }
            if entries.iter().all(|e| e.dead) {
                return;
            }
            match ring.submit(true) {
                Ok(_) => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EBUSY)) => {}
                Err(e) => {
                    eprintln!("depsetfs daemon: io_uring queue {} stopped: {e}", self.qid);
                    return;
                }
            }
            ring.reap(&mut done);
        }
    }

    /// Queues `cmd`, submitting first if the SQ ring is full; false if the ring failed.
    fn push(&self, ring: &mut Ring, cmd: &UringCmd) -> bool {
        while !ring.push(cmd) {
            if ring.submit(false).is_err() {
                return false;
            }
        }
        true
    }

    /// Serves the request in `entry` and writes its answer there; returns its commit id.
    fn handle(&self, entry: &mut Entry, inbuf: &mut Vec<u8>, outbuf: &mut Vec<u8>) -> u64 {
        let header = InHeader::parse(&entry.header[..wire::IN_HEADER_LEN]).unwrap_or_default();
        let ent = EntInOut::parse(&entry.header[wire::ENT_IN_OUT_OFFSET..]).unwrap_or(EntInOut {
            commit_id: header.unique,
            payload_sz: 0,
        });
        let mut op_in = [0u8; wire::OP_IN_LEN];
        op_in.copy_from_slice(
            &entry.header[wire::OP_IN_OFFSET..wire::OP_IN_OFFSET + wire::OP_IN_LEN],
        );
        let size = ent.payload_sz as usize;
        let result = if size > entry.payload.len() {
            (-libc::EINVAL, 0)
        } else if size <= COPY_OUT_LIMIT {
            inbuf.clear();
            inbuf.extend_from_slice(&entry.payload[..size]);
            let mut answer = Answer::new(&mut entry.payload);
            self.dispatch(&header, &op_in, inbuf, &mut answer);
            answer.result()
        } else {
            if outbuf.len() < self.max_payload {
                outbuf.resize(self.max_payload, 0);
            }
            let mut answer = Answer::new(outbuf);
            self.dispatch(&header, &op_in, &entry.payload[..size], &mut answer);
            let (error, len) = answer.result();
            entry.payload[..len].copy_from_slice(&outbuf[..len]);
            (error, len)
        };
        wire::write_out_header(&mut entry.header, ent.commit_id, result);
        ent.commit_id
    }

    /// Parses a request and calls its handler with a reply on `answer`. A handler that panics
    /// answers EIO: the queue's thread, which its CPU's requests wait for, lives on.
    fn dispatch(&self, header: &InHeader, op_in: &[u8], payload: &[u8], answer: &mut Answer<'_>) {
        let served = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.call_handler(header, op_in, payload, answer)
        }));
        if served.is_err() {
            answer.fail(Errno::EIO);
        }
    }

    fn call_handler(
        &self,
        header: &InHeader,
        op_in: &[u8],
        payload: &[u8],
        answer: &mut Answer<'_>,
    ) {
        let request = match wire::parse(header, op_in, payload) {
            Ok(request) => request,
            Err(errno) => return answer.fail(errno),
        };
        let fs = &*self.fs;
        let req = Caller {
            pid: header.pid,
            uid: header.uid,
            gid: header.gid,
        };
        let ino = INodeNo(header.nodeid);
        let capacity = self.max_payload;
        match request {
            Request::Lookup { name } => fs.lookup(&req, ino, name, reply(answer, capacity)),
            Request::Forget { nlookup } => {
                fs.forget(ino, nlookup);
                EmptyReply::ok(reply(answer, capacity));
            }
            Request::BatchForget { nodes } => {
                for (node, nlookup) in nodes {
                    fs.forget(INodeNo(node), nlookup);
                }
                EmptyReply::ok(reply(answer, capacity));
            }
            Request::GetAttr { fh } => fs.getattr(&req, ino, fh, reply(answer, capacity)),
            Request::SetAttr(s) => fs.setattr(
                &req,
                ino,
                s.mode,
                s.uid,
                s.gid,
                s.size,
                s.atime,
                s.mtime,
                s.ctime,
                s.fh,
                None,
                None,
                None,
                None,
                reply(answer, capacity),
            ),
            Request::ReadLink => fs.readlink(&req, ino, reply(answer, capacity)),
            Request::SymLink { link_name, target } => {
                fs.symlink(&req, ino, link_name, target, reply(answer, capacity))
            }
            Request::MkNod {
                name,
                mode,
                umask,
                rdev,
            } => fs.mknod(&req, ino, name, mode, umask, rdev, reply(answer, capacity)),
            Request::MkDir { name, mode, umask } => {
                fs.mkdir(&req, ino, name, mode, umask, reply(answer, capacity))
            }
            Request::Unlink { name } => fs.unlink(&req, ino, name, reply(answer, capacity)),
            Request::RmDir { name } => fs.rmdir(&req, ino, name, reply(answer, capacity)),
            Request::Rename {
                name,
                newparent,
                newname,
                flags,
            } => fs.rename(
                &req,
                ino,
                name,
                newparent,
                newname,
                flags,
                reply(answer, capacity),
            ),
            Request::Link {
                ino: target,
                newname,
            } => fs.link(&req, target, ino, newname, reply(answer, capacity)),
            Request::Open { flags } => fs.open(&req, ino, flags, reply(answer, capacity)),
            Request::Read {
                fh,
                offset,
                size,
                flags,
                lock_owner,
            } => {
                let size = size.min(u32::try_from(capacity).unwrap_or(u32::MAX));
                fs.read(
                    &req,
                    ino,
                    fh,
                    offset,
                    size,
                    flags,
                    lock_owner,
                    reply(answer, capacity),
                )
            }
            Request::Write {
                fh,
                offset,
                data,
                write_flags,
                flags,
                lock_owner,
            } => fs.write(
                &req,
                ino,
                fh,
                offset,
                data,
                write_flags,
                flags,
                lock_owner,
                reply(answer, capacity),
            ),
            Request::StatFs => fs.statfs(&req, ino, reply(answer, capacity)),
            Request::Release {
                fh,
                flags,
                lock_owner,
                flush,
            } => fs.release(
                &req,
                ino,
                fh,
                flags,
                lock_owner,
                flush,
                reply(answer, capacity),
            ),
            Request::FSync { fh, datasync } => {
                fs.fsync(&req, ino, fh, datasync, reply(answer, capacity))
            }
            Request::SetXAttr { name, value, flags } => {
                fs.setxattr(&req, ino, name, value, flags, 0, reply(answer, capacity))
            }
            Request::GetXAttr { name, size } => {
                fs.getxattr(&req, ino, name, size, reply(answer, capacity))
            }
            Request::ListXAttr { size } => fs.listxattr(&req, ino, size, reply(answer, capacity)),
            Request::RemoveXAttr { name } => {
                fs.removexattr(&req, ino, name, reply(answer, capacity))
            }
            Request::OpenDir { flags } => fs.opendir(&req, ino, flags, reply(answer, capacity)),
            Request::ReadDir { fh, offset, size } => fs.readdir(
                &req,
                ino,
                fh,
                offset,
                RingReply::new(answer, (size as usize).min(capacity)),
            ),
            Request::ReleaseDir { fh, flags } => {
                fs.releasedir(&req, ino, fh, flags, reply(answer, capacity))
            }
            Request::FSyncDir { fh, datasync } => {
                fs.fsyncdir(&req, ino, fh, datasync, reply(answer, capacity))
            }
            Request::Create {
                name,
                mode,
                umask,
                flags,
            } => fs.create(&req, ino, name, mode, umask, flags, reply(answer, capacity)),
            Request::FAllocate {
                fh,
                offset,
                length,
                mode,
            } => fs.fallocate(&req, ino, fh, offset, length, mode, reply(answer, capacity)),
            Request::Lseek { fh, offset, whence } => {
                fs.lseek(&req, ino, fh, offset, whence, reply(answer, capacity))
            }
            Request::CopyFileRange {
                fh_in,
                offset_in,
                ino_out,
                fh_out,
                offset_out,
                len,
                flags,
            } => fs.copy_file_range(
                &req,
                ino,
                fh_in,
                offset_in,
                ino_out,
                fh_out,
                offset_out,
                len,
                flags,
                reply(answer, capacity),
            ),
            Request::Destroy => EmptyReply::ok(reply(answer, capacity)),
            Request::Unsupported(_) => Reply::error(reply(answer, capacity), Errno::ENOSYS),
        }
    }
}

/// A reply on `answer` of at most `limit` bytes.
fn reply<'r, 'a>(answer: &'r mut Answer<'a>, limit: usize) -> RingReply<'r, 'a> {
    RingReply::new(answer, limit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::records::{ScratchDir, header};
    use crate::log::LogWriter;
    use crate::mirror::fs::CachePolicy;
    use crate::mirror::process::ProcessTracker;
    use crate::mirror::recorder::Recorder;
    use std::time::Duration;

    const UNIQUE: u64 = 0x77;
    const MAX_PAYLOAD: usize = 64 * 1024;

    /// A queue over a MirrorFs of `dir/src` (holding hello.txt = "hi"), with no kernel: the
    /// tests write requests into an entry's buffers as the kernel would and read the answer.
    fn queue(dir: &ScratchDir) -> Queue {
        dir.write("src/hello.txt", "hi").expect("write a file");
        let root = crate::sys::open_path(&dir.file("src"), libc::O_PATH | libc::O_DIRECTORY)
            .expect("open the root");
        let writer = LogWriter::create(&dir.file("log"), &header()).expect("create the log");
        let recorder = Recorder::start(writer, Duration::from_secs(3600)).expect("recorder");
        let tracker = ProcessTracker::new(recorder.clone(), None);
        let fs = MirrorFs::new(root, CachePolicy::default(), recorder, tracker).expect("fs");
        let null = std::fs::File::open("/dev/null").expect("open /dev/null");
        Queue {
            qid: 0,
            cpu: 0,
            device: Arc::new(OwnedFd::from(null)),
            fs: Arc::new(fs),
            max_payload: MAX_PAYLOAD,
        }
    }

    /// Writes a request into `entry` as `fuse_uring_args_to_ring` does.
    fn put_request(entry: &mut Entry, opcode: u32, nodeid: u64, op_in: &[u8], payload: &[u8]) {
        let h = &mut entry.header;
        h.fill(0);
        h[0..4].copy_from_slice(
            &((wire::IN_HEADER_LEN + op_in.len() + payload.len()) as u32).to_le_bytes(),
        );
        h[4..8].copy_from_slice(&opcode.to_le_bytes());
        h[8..16].copy_from_slice(&UNIQUE.to_le_bytes());
        h[16..24].copy_from_slice(&nodeid.to_le_bytes());
        h[32..36].copy_from_slice(&std::process::id().to_le_bytes());
        h[wire::OP_IN_OFFSET..wire::OP_IN_OFFSET + op_in.len()].copy_from_slice(op_in);
        let ent = wire::ENT_IN_OUT_OFFSET;
        h[ent + 8..ent + 16].copy_from_slice(&UNIQUE.to_le_bytes());
        h[ent + 16..ent + 20].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        entry.payload[..payload.len()].copy_from_slice(payload);
    }

    /// Serves the request in `entry`: (out header's error, its unique, payload_sz).
    fn serve(queue: &Queue, entry: &mut Entry) -> (i32, u64, usize) {
        let (mut inbuf, mut outbuf) = (Vec::new(), Vec::new());
        let commit_id = queue.handle(entry, &mut inbuf, &mut outbuf);
        assert_eq!(commit_id, UNIQUE);
        let h = &entry.header;
        let u32_at = |o: usize| u32::from_le_bytes(h[o..o + 4].try_into().expect("4 bytes"));
        let payload_sz = u32_at(wire::ENT_IN_OUT_OFFSET + 16) as usize;
        assert_eq!(u32_at(0) as usize, wire::OUT_HEADER_LEN + payload_sz);
        let unique = u64::from_le_bytes(h[8..16].try_into().expect("8 bytes"));
        (u32_at(4) as i32, unique, payload_sz)
    }

    fn u64_at(b: &[u8], o: usize) -> u64 {
        u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"))
    }

    #[test]
    fn lookup_answers_fuse_entry_out_or_an_errno() {
        let dir = ScratchDir::new("uring-lookup");
        let queue = queue(&dir);
        let mut entry = Entry::new(MAX_PAYLOAD);
        put_request(&mut entry, 1, 1, &[], b"hello.txt\0");
        assert_eq!(serve(&queue, &mut entry), (0, UNIQUE, 128));
        let out = &entry.payload;
        assert_ne!(u64_at(out, 0), 0, "nodeid");
        assert_eq!(u64_at(out, 40 + 8), 2, "attr.size");
        let mode = u32::from_le_bytes(out[40 + 60..40 + 64].try_into().expect("4 bytes"));
        assert_eq!(mode & libc::S_IFMT, libc::S_IFREG);

        put_request(&mut entry, 1, 1, &[], b"missing\0");
        assert_eq!(serve(&queue, &mut entry), (-libc::ENOENT, UNIQUE, 0));
        // Unterminated name: EINVAL; an opcode depsetfs does not serve (FLUSH): ENOSYS.
        put_request(&mut entry, 1, 1, &[], b"hello.txt");
        assert_eq!(serve(&queue, &mut entry), (-libc::EINVAL, UNIQUE, 0));
        put_request(&mut entry, 25, 1, &[0; 24], b"");
        assert_eq!(serve(&queue, &mut entry), (-libc::ENOSYS, UNIQUE, 0));
        // A payload size beyond the buffer: EINVAL, no read past it.
        put_request(&mut entry, 1, 1, &[], b"x\0");
        let ent = wire::ENT_IN_OUT_OFFSET;
        entry.header[ent + 16..ent + 20].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(serve(&queue, &mut entry), (-libc::EINVAL, UNIQUE, 0));
    }

    #[test]
    fn create_then_a_large_write_goes_through_the_aside_buffer() {
        let dir = ScratchDir::new("uring-write");
        let queue = queue(&dir);
        let mut entry = Entry::new(MAX_PAYLOAD);
        let mut create = Vec::new();
        create.extend(((libc::O_CREAT | libc::O_RDWR) as u32).to_le_bytes());
        create.extend((libc::S_IFREG | 0o644).to_le_bytes());
        create.extend(0o022u32.to_le_bytes());
        create.extend(0u32.to_le_bytes());
        put_request(&mut entry, 35, 1, &create, b"new.bin\0");
        assert_eq!(serve(&queue, &mut entry), (0, UNIQUE, 128 + 16));
        let fh = u64_at(&entry.payload, 128);
        let ino = u64_at(&entry.payload, 0);

        let data = vec![b'z'; COPY_OUT_LIMIT + 1000];
        let mut write = Vec::new();
        write.extend(fh.to_le_bytes());
        write.extend(0u64.to_le_bytes());
        write.extend((data.len() as u32).to_le_bytes());
        write.extend([0u8; 20]);
        put_request(&mut entry, 16, ino, &write, &data);
        assert_eq!(serve(&queue, &mut entry), (0, UNIQUE, 8));
        assert_eq!(
            u32::from_le_bytes(entry.payload[0..4].try_into().expect("4 bytes")) as usize,
            data.len()
        );
        assert_eq!(
            std::fs::read(dir.file("src/new.bin")).expect("read back"),
            data
        );
    }

    #[test]
    fn opendir_then_readdir_lists_the_entries() {
        let dir = ScratchDir::new("uring-readdir");
        let queue = queue(&dir);
        let mut entry = Entry::new(MAX_PAYLOAD);
        put_request(&mut entry, 27, 1, &[0; 8], b"");
        assert_eq!(serve(&queue, &mut entry), (0, UNIQUE, 16));
        let fh = u64_at(&entry.payload, 0);
        let mut read = Vec::new();
        read.extend(fh.to_le_bytes());
        read.extend(0u64.to_le_bytes());
        read.extend(4096u32.to_le_bytes());
        read.extend([0u8; 20]);
        put_request(&mut entry, 28, 1, &read, b"");
        let (error, _, len) = serve(&queue, &mut entry);
        assert_eq!(error, 0);
        assert_eq!(len % 8, 0);
        let listing = &entry.payload[..len];
        assert!(
            listing.windows(9).any(|w| w == b"hello.txt"),
            "{:?}",
            String::from_utf8_lossy(listing)
        );
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0-1"), Some(vec![0, 1]));
        assert_eq!(parse_cpu_list("0"), Some(vec![0]));
        assert_eq!(parse_cpu_list("0-2,4,6-7"), Some(vec![0, 1, 2, 4, 6, 7]));
        assert_eq!(parse_cpu_list(""), None);
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_list("x"), None);
    }

    #[test]
    fn payload_size_covers_the_kernels_max_payload() {
        assert!(payload_size(1 << 20) >= 1 << 20);
        assert!(payload_size(0) >= wire::MIN_PAYLOAD);
    }
}
