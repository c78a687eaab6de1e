//! The Linux proc connector on the wire: a NETLINK_CONNECTOR socket subscribed to the
//! CN_IDX_PROC multicast group, the `#[repr(C)]` layouts of the kernel's `cn_msg` and
//! `proc_event` (include/uapi/linux/connector.h and cn_proc.h), parsing of received datagrams
//! into [`ProcEvent`]s, and the receive loop that feeds them to an [`EventHandler`]. What the
//! events mean for tracking is decided in `events`, not here.

use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use super::base::{ProcEvent, ProcessError};
use super::events::EventHandler;
use crate::record::monotonic_now_ns;

/// Multicast group and value of the process events connector (`cb_id`).
const CN_IDX_PROC: u32 = 1;
const CN_VAL_PROC: u32 = 1;

/// `enum proc_cn_mcast_op`.
pub(super) const PROC_CN_MCAST_LISTEN: u32 = 1;
pub(super) const PROC_CN_MCAST_IGNORE: u32 = 2;

/// `enum what` of `struct proc_event` (only the kinds depsetfs uses).
const PROC_EVENT_NONE: u32 = 0;
const PROC_EVENT_FORK: u32 = 0x0000_0001;
const PROC_EVENT_EXEC: u32 = 0x0000_0002;
const PROC_EVENT_EXIT: u32 = 0x8000_0000;

/// Large enough to absorb fork storms of a parallel build while the thread is descheduled.
const RECEIVE_BUFFER_BYTES: libc::c_int = 8 << 20;
/// Bounds how long `stop()` waits for the receive loop to notice it should end.
const RECEIVE_TIMEOUT: Duration = Duration::from_millis(200);
/// How long a stopping connector thread keeps handling events queued before the stop.
const DRAIN_LIMIT: Duration = Duration::from_millis(500);
/// How long the receive loop pauses after an unexpected socket error, to avoid spinning.
const ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// `struct cb_id`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct CbId {
    idx: u32,
    val: u32,
}

/// `struct cn_msg` without its flexible `data[]` member.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct CnMsg {
    id: CbId,
    seq: u32,
    ack: u32,
    /// Length of the data that follows.
    len: u16,
    flags: u16,
}

/// The fixed head of `struct proc_event`; `event_data` (a union) follows at offset 16.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct ProcEventHeader {
    what: u32,
    cpu: u32,
    /// When the kernel sent the event (`CLOCK_MONOTONIC`, nanoseconds).
    timestamp_ns: u64,
}

/// `event_data.ack`: the kernel's answer to a multicast subscription request.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct AckProcEvent {
    err: u32,
}

/// `event_data.fork`. For a new thread the parent fields name the *process's* parent
/// (`real_parent` of a CLONE_THREAD child), not the thread that created it.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct ForkProcEvent {
    parent_pid: libc::pid_t,
    parent_tgid: libc::pid_t,
    child_pid: libc::pid_t,
    child_tgid: libc::pid_t,
}

/// `event_data.exec`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct ExecProcEvent {
    process_pid: libc::pid_t,
    process_tgid: libc::pid_t,
}

/// `event_data.exit`, sent once per exiting thread.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct ExitProcEvent {
    process_pid: libc::pid_t,
    process_tgid: libc::pid_t,
    /// The wait status (`task->exit_code`).
    exit_code: u32,
    exit_signal: u32,
    parent_pid: libc::pid_t,
    parent_tgid: libc::pid_t,
}

/// The message that (un)subscribes: an `nlmsghdr`, a `cn_msg` and its 4-byte operation.
#[repr(C)]
#[derive(Clone, Copy)]
struct McastRequest {
    header: libc::nlmsghdr,
    message: CnMsg,
    op: u32,
}

// The kernel's layouts, checked at compile time (a `cn_msg` header is 20 bytes, so the
// request has no padding and can be sent as its bytes).
const _: () = assert!(size_of::<libc::nlmsghdr>() == 16);
const _: () = assert!(size_of::<CnMsg>() == 20);
const _: () = assert!(size_of::<ProcEventHeader>() == 16);
const _: () = assert!(size_of::<ExitProcEvent>() == 24);
const _: () = assert!(size_of::<McastRequest>() == 40);

/// Offset of `event_data` in `struct proc_event`.
const EVENT_DATA_OFFSET: usize = size_of::<ProcEventHeader>();

/// Types that may be read from any received bytes.
///
/// # Safety
/// Implementors must be `#[repr(C)]` structs made only of integers, so that every bit pattern
/// of `size_of::<Self>()` bytes is a valid value.
unsafe trait WireStruct: Copy {}

// SAFETY: each is #[repr(C)] and made only of integer fields.
unsafe impl WireStruct for libc::nlmsghdr {}
// SAFETY: as above.
unsafe impl WireStruct for CnMsg {}
// SAFETY: as above.
unsafe impl WireStruct for ProcEventHeader {}
// SAFETY: as above.
unsafe impl WireStruct for AckProcEvent {}
// SAFETY: as above.
unsafe impl WireStruct for ForkProcEvent {}
// SAFETY: as above.
unsafe impl WireStruct for ExecProcEvent {}
// SAFETY: as above.
unsafe impl WireStruct for ExitProcEvent {}

/// Reads a `T` at `offset`, or `None` when `bytes` is too short. Netlink payloads are only
/// 4-byte aligned (`proc_event` starts at offset 36), hence the unaligned read.
fn read_wire<T: WireStruct>(bytes: &[u8], offset: usize) -> Option<T> {
    let end = offset.checked_add(size_of::<T>())?;
    let field = bytes.get(offset..end)?;
    // SAFETY: `field` holds exactly size_of::<T>() initialized bytes, any bit pattern is a
    // valid T (WireStruct), and read_unaligned makes no alignment assumption.
    Some(unsafe { std::ptr::read_unaligned(field.as_ptr().cast::<T>()) })
}

/// Calls `on_event` for every proc connector message in a received datagram, with the
/// kernel's `CLOCK_MONOTONIC` time of the event.
pub(super) fn parse_datagram(datagram: &[u8], mut on_event: impl FnMut(ProcEvent, u64)) {
    const HEADER_LEN: usize = size_of::<libc::nlmsghdr>();
    let mut offset = 0;
    while let Some(header) = read_wire::<libc::nlmsghdr>(datagram, offset) {
        let len = header.nlmsg_len as usize;
        let Some(message) = datagram.get(offset + HEADER_LEN..offset.saturating_add(len)) else {
            return; // A length shorter than the header or past the datagram: malformed.
        };
        // The connector sends each event as a single message typed NLMSG_DONE.
        if i32::from(header.nlmsg_type) == libc::NLMSG_DONE {
            if let Some((event, monotonic_ns)) = parse_connector_message(message) {
                on_event(event, monotonic_ns);
            }
        }
        offset += netlink_align(len);
    }
}

/// `NLMSG_ALIGN`.
fn netlink_align(len: usize) -> usize {
    (len + 3) & !3
}

/// Parses a `cn_msg` and its `proc_event` (with the event's kernel time); `None` for other
/// connectors' messages.
fn parse_connector_message(message: &[u8]) -> Option<(ProcEvent, u64)> {
    let header = read_wire::<CnMsg>(message, 0)?;
    if header.id.idx != CN_IDX_PROC || header.id.val != CN_VAL_PROC {
        return None;
    }
    let data_start = size_of::<CnMsg>();
    let data = message.get(data_start..data_start + usize::from(header.len))?;
    Some(parse_proc_event(data, header.ack))
}

fn parse_proc_event(data: &[u8], ack: u32) -> (ProcEvent, u64) {
    let Some(header) = read_wire::<ProcEventHeader>(data, 0) else {
        return (ProcEvent::Other, 0);
    };
    let parsed = match header.what {
        PROC_EVENT_NONE => {
            read_wire::<AckProcEvent>(data, EVENT_DATA_OFFSET).map(|event| ProcEvent::Ack {
                ack,
                err: event.err,
            })
        }
        PROC_EVENT_FORK => read_wire::<ForkProcEvent>(data, EVENT_DATA_OFFSET).and_then(fork),
        PROC_EVENT_EXEC => read_wire::<ExecProcEvent>(data, EVENT_DATA_OFFSET).and_then(exec),
        PROC_EVENT_EXIT => read_wire::<ExitProcEvent>(data, EVENT_DATA_OFFSET).and_then(exit),
        _ => None,
    };
    (parsed.unwrap_or(ProcEvent::Other), header.timestamp_ns)
}

fn fork(event: ForkProcEvent) -> Option<ProcEvent> {
    Some(ProcEvent::Fork {
        parent_tgid: pid(event.parent_tgid)?,
        child_pid: pid(event.child_pid)?,
        child_tgid: pid(event.child_tgid)?,
    })
}

fn exec(event: ExecProcEvent) -> Option<ProcEvent> {
    Some(ProcEvent::Exec {
        pid: pid(event.process_pid)?,
        tgid: pid(event.process_tgid)?,
    })
}

fn exit(event: ExitProcEvent) -> Option<ProcEvent> {
    Some(ProcEvent::Exit {
        pid: pid(event.process_pid)?,
        tgid: pid(event.process_tgid)?,
        // Same bits: the wait status is an int in user space.
        status: event.exit_code as i32,
    })
}

fn pid(raw: libc::pid_t) -> Option<u32> {
    u32::try_from(raw).ok()
}

/// What one receive call produced.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Received {
    /// A datagram from the kernel of this many bytes.
    Datagram(usize),
    /// The receive timeout passed, or a datagram not from the kernel was discarded.
    Nothing,
    /// The socket's buffer overflowed: the kernel dropped events (ENOBUFS).
    Overrun,
}

/// A bound NETLINK_CONNECTOR socket in the CN_IDX_PROC group; closed on drop.
pub(super) struct ConnectorSocket {
    fd: OwnedFd,
}

impl ConnectorSocket {
    /// Opens and binds the socket with the default (large) receive buffer.
    pub(super) fn open() -> Result<ConnectorSocket, ProcessError> {
        Self::open_with_buffer(RECEIVE_BUFFER_BYTES)
    }

    pub(super) fn open_with_buffer(
        buffer_bytes: libc::c_int,
    ) -> Result<ConnectorSocket, ProcessError> {
        let unavailable = |step| move |source| ProcessError::ConnectorUnavailable { step, source };
        let socket = ConnectorSocket {
            fd: new_netlink_socket().map_err(unavailable("socket"))?,
        };
        socket.set_receive_buffer(buffer_bytes);
        let timeout = libc::timeval {
            tv_sec: 0,
            tv_usec: RECEIVE_TIMEOUT.as_micros() as libc::suseconds_t,
        };
        set_socket_option(&socket.fd, libc::SOL_SOCKET, libc::SO_RCVTIMEO, &timeout)
            .map_err(unavailable("set receive timeout"))?;
        socket.bind().map_err(unavailable("bind to CN_IDX_PROC"))?;
        Ok(socket)
    }

    /// SO_RCVBUFFORCE (root) may exceed net.core.rmem_max; without CAP_NET_ADMIN fall back to
    /// SO_RCVBUF, which the kernel caps. Best effort: a smaller buffer only means more
    /// overruns, which are counted.
    fn set_receive_buffer(&self, bytes: libc::c_int) {
        let forced = set_socket_option(&self.fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, &bytes);
        if forced.is_err() {
            let _ = set_socket_option(&self.fd, libc::SOL_SOCKET, libc::SO_RCVBUF, &bytes);
        }
    }

    fn bind(&self) -> io::Result<()> {
        // SAFETY: sockaddr_nl is plain integers, for which all zeroes is a valid value (and it
        // has a private padding field, so it cannot be built field by field).
        let mut address: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        address.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        address.nl_pid = 0; // Let the kernel pick the port id.
        address.nl_groups = CN_IDX_PROC;
        // SAFETY: `address` is a live sockaddr_nl and its exact size is passed.
        let rc = unsafe {
            libc::bind(
                self.fd.as_raw_fd(),
                (&raw const address).cast::<libc::sockaddr>(),
                size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// Sends PROC_CN_MCAST_LISTEN or PROC_CN_MCAST_IGNORE. The kernel answers with an
    /// [`ProcEvent::Ack`] carrying `ack + 1`.
    pub(super) fn send_mcast_op(&self, op: u32, ack: u32) -> io::Result<()> {
        let request = McastRequest {
            header: libc::nlmsghdr {
                nlmsg_len: size_of::<McastRequest>() as u32,
                nlmsg_type: libc::NLMSG_DONE as u16,
                nlmsg_flags: 0,
                nlmsg_seq: 0,
                nlmsg_pid: 0,
            },
            message: CnMsg {
                id: CbId {
                    idx: CN_IDX_PROC,
                    val: CN_VAL_PROC,
                },
                seq: 0,
                ack,
                len: size_of::<u32>() as u16,
                flags: 0,
            },
            op,
        };
        // SAFETY: `request` is a live #[repr(C)] value without padding (checked above) and
        // exactly its size is passed; the kernel only reads it.
        let sent = unsafe {
            libc::send(
                self.fd.as_raw_fd(),
                (&raw const request).cast::<libc::c_void>(),
                size_of::<McastRequest>(),
                0,
            )
        };
        if sent < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// Receives one datagram into `buffer`, waiting at most the receive timeout.
    pub(super) fn receive(&self, buffer: &mut [u8]) -> io::Result<Received> {
        self.receive_with(buffer, 0)
    }

    /// Receives one datagram already queued on the socket, without waiting.
    pub(super) fn receive_queued(&self, buffer: &mut [u8]) -> io::Result<Received> {
        self.receive_with(buffer, libc::MSG_DONTWAIT)
    }

    fn receive_with(&self, buffer: &mut [u8], flags: libc::c_int) -> io::Result<Received> {
        // SAFETY: sockaddr_nl is plain integers; all zeroes is valid.
        let mut sender: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        let mut sender_len = size_of::<libc::sockaddr_nl>() as libc::socklen_t;
        // SAFETY: `buffer` is writable for buffer.len() bytes; `sender` and `sender_len` are
        // live and describe a sockaddr_nl-sized area.
        let received = unsafe {
            libc::recvfrom(
                self.fd.as_raw_fd(),
                buffer.as_mut_ptr().cast::<libc::c_void>(),
                buffer.len(),
                flags,
                (&raw mut sender).cast::<libc::sockaddr>(),
                &mut sender_len,
            )
        };
        if received < 0 {
            let error = io::Error::last_os_error();
            return match error.raw_os_error() {
                Some(libc::ENOBUFS) => Ok(Received::Overrun),
                Some(libc::EAGAIN | libc::EINTR) => Ok(Received::Nothing),
                _ => Err(error),
            };
        }
        // Only the kernel (port id 0) sends proc events; ignore anything else.
        if sender.nl_pid != 0 {
            return Ok(Received::Nothing);
        }
        Ok(Received::Datagram(received as usize))
    }
}

/// The kernel sends proc events only to sockets of the initial network namespace, so when the
/// daemon runs in another one (`ip netns exec ... depsetfs run`), the socket is made there: the
/// calling thread enters init's network namespace, creates it and comes back. A socket stays in
/// the namespace it was created in.
fn new_netlink_socket() -> io::Result<OwnedFd> {
    let Some(initial) = other_initial_net_namespace() else {
        return netlink_socket_here();
    };
    let current = std::fs::File::open("/proc/thread-self/ns/net")?;
    set_net_namespace(initial.as_raw_fd())?;
    let socket = netlink_socket_here();
    // Coming back cannot fail for a namespace we just left; if it did, this thread would serve
    // the connector from the initial namespace, which is all it does anyway.
    let _ = set_net_namespace(current.as_raw_fd());
    socket
}

/// The initial network namespace, if it is not the one this thread is in: init's, or, where
/// init is out of reach (some sandboxes deny it), kthreadd's (kernel threads live there).
fn other_initial_net_namespace() -> Option<std::fs::File> {
    let here = std::fs::metadata("/proc/thread-self/ns/net").ok()?;
    let initial = ["/proc/1/ns/net", "/proc/2/ns/net"]
        .iter()
        .find_map(|path| std::fs::File::open(path).ok())?;
    let there = initial.metadata().ok()?;
    use std::os::unix::fs::MetadataExt;
    (here.ino() != there.ino() || here.dev() != there.dev()).then_some(initial)
}

fn set_net_namespace(fd: libc::c_int) -> io::Result<()> {
    // SAFETY: fd is an open namespace file; setns changes only this thread's namespace.
    if unsafe { libc::setns(fd, libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn netlink_socket_here() -> io::Result<OwnedFd> {
    // SAFETY: a plain system call with constant arguments; the result is checked.
    let raw = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            libc::NETLINK_CONNECTOR,
        )
    };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a freshly created descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

fn set_socket_option<T>(
    fd: &OwnedFd,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
) -> io::Result<()> {
    // SAFETY: `value` points to a live T for the duration of the call and its size is
    // passed; the kernel only reads it.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (value as *const T).cast::<libc::c_void>(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Waits for the kernel's answer to our subscription and reports it once to whoever started
/// the connector: it is the only way to tell that events will come (a subscriber outside
/// the initial pid or user namespace is ignored without an error).
pub(super) struct SubscriptionWatch {
    /// The `ack` value of our subscription request.
    pub(super) request_ack: u32,
    pub(super) report: Option<Sender<io::Result<()>>>,
}

impl SubscriptionWatch {
    fn on_ack(&mut self, ack: u32, err: u32) {
        // Every listener receives every answer: pick ours by its ack value.
        if ack != self.request_ack.wrapping_add(1) {
            return;
        }
        if let Some(report) = self.report.take() {
            let outcome = match err {
                0 => Ok(()),
                errno => Err(io::Error::from_raw_os_error(errno as i32)),
            };
            let _ = report.send(outcome);
        }
    }
}

/// The connector thread's body: receives and handles events until `stop` is set, then
/// flushes held-back exits and unsubscribes. Closing the socket (on drop) ends delivery.
pub(super) fn receive_events(
    socket: ConnectorSocket,
    mut handler: EventHandler,
    stop: &AtomicBool,
    mut subscription: SubscriptionWatch,
) {
    // One event is 76 bytes; datagrams hold one message each.
    let mut buffer = vec![0u8; 16 * 1024];
    while !stop.load(Ordering::Acquire) {
        match socket.receive(&mut buffer) {
            Ok(Received::Datagram(len)) => {
                handle_datagram(&buffer[..len], &mut handler, &mut subscription);
            }
            Ok(Received::Nothing) => {}
            Ok(Received::Overrun) => handler.on_overrun(),
            Err(_) => std::thread::sleep(ERROR_BACKOFF),
        }
        handler.flush_due_exits(Instant::now());
    }
    let stopped_at = monotonic_now_ns();
    handle_queued_events(
        &socket,
        &mut handler,
        &mut subscription,
        &mut buffer,
        stopped_at,
    );
    handler.flush_all_exits();
    let _ = socket.send_mcast_op(PROC_CN_MCAST_IGNORE, 0);
}

/// Handles the events of one datagram; returns the kernel time of the latest.
fn handle_datagram(
    datagram: &[u8],
    handler: &mut EventHandler,
    subscription: &mut SubscriptionWatch,
) -> u64 {
    let mut latest = 0;
    parse_datagram(datagram, |event, monotonic_ns| {
        latest = latest.max(monotonic_ns);
        match event {
            ProcEvent::Ack { ack, err } => subscription.on_ack(ack, err),
            event => handler.handle(event, monotonic_ns),
        }
    });
    latest
}

/// Handles the events queued when the thread is told to stop that happened before
/// `stopped_at` (`CLOCK_MONOTONIC`): the last execs and exits of a run belong in the log even
/// when this thread lagged behind. Events keep coming, so it ends at the first later one, when
/// nothing is queued, or after [`DRAIN_LIMIT`].
pub(super) fn handle_queued_events(
    socket: &ConnectorSocket,
    handler: &mut EventHandler,
    subscription: &mut SubscriptionWatch,
    buffer: &mut [u8],
    stopped_at: u64,
) {
    let deadline = Instant::now() + DRAIN_LIMIT;
    let mut caught_up = false;
    while !caught_up && Instant::now() < deadline {
        match socket.receive_queued(buffer) {
            Ok(Received::Datagram(len)) => {
                caught_up = handle_datagram(&buffer[..len], handler, subscription) > stopped_at;
            }
            Ok(Received::Overrun) => handler.on_overrun(),
            Ok(Received::Nothing) | Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a datagram the way the kernel does: nlmsghdr, cn_msg, proc_event.
    fn datagram(what: u32, ack: u32, event_data: &[u32]) -> Vec<u8> {
        let mut event = Vec::new();
        event.extend_from_slice(&what.to_ne_bytes());
        event.extend_from_slice(&1u32.to_ne_bytes()); // cpu
        event.extend_from_slice(&123_456_789u64.to_ne_bytes()); // timestamp_ns
        for value in event_data {
            event.extend_from_slice(&value.to_ne_bytes());
        }
        let mut message = Vec::new();
        for value in [CN_IDX_PROC, CN_VAL_PROC, 7, ack] {
            message.extend_from_slice(&value.to_ne_bytes());
        }
        message.extend_from_slice(&(event.len() as u16).to_ne_bytes());
        message.extend_from_slice(&0u16.to_ne_bytes());
        message.extend_from_slice(&event);
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&((16 + message.len()) as u32).to_ne_bytes());
        bytes.extend_from_slice(&(libc::NLMSG_DONE as u16).to_ne_bytes());
        bytes.extend_from_slice(&0u16.to_ne_bytes());
        bytes.extend_from_slice(&0u32.to_ne_bytes());
        bytes.extend_from_slice(&0u32.to_ne_bytes());
        bytes.extend_from_slice(&message);
        bytes
    }

    fn parse_all(bytes: &[u8]) -> Vec<ProcEvent> {
        let mut events = Vec::new();
        parse_datagram(bytes, |event, _| events.push(event));
        events
    }

    #[test]
    fn passes_on_the_kernel_time_of_each_event() {
        let mut times = Vec::new();
        parse_datagram(&datagram(PROC_EVENT_EXEC, 0, &[11, 11]), |_, at| {
            times.push(at)
        });
        assert_eq!(times, [123_456_789]);
    }

    #[test]
    fn parses_fork_exec_exit_and_ack() {
        assert_eq!(
            parse_all(&datagram(PROC_EVENT_FORK, 0, &[10, 10, 11, 11])),
            [ProcEvent::Fork {
                parent_tgid: 10,
                child_pid: 11,
                child_tgid: 11
            }]
        );
        assert_eq!(
            parse_all(&datagram(PROC_EVENT_EXEC, 0, &[11, 11])),
            [ProcEvent::Exec { pid: 11, tgid: 11 }]
        );
        assert_eq!(
            parse_all(&datagram(PROC_EVENT_EXIT, 0, &[12, 11, 3 << 8, 17, 10, 10])),
            [ProcEvent::Exit {
                pid: 12,
                tgid: 11,
                status: 3 << 8
            }]
        );
        assert_eq!(
            parse_all(&datagram(PROC_EVENT_NONE, 42, &[0])),
            [ProcEvent::Ack { ack: 42, err: 0 }]
        );
        assert_eq!(
            parse_all(&datagram(0x80, 0, &[1, 1, 0, 0])),
            [ProcEvent::Other]
        );
    }

    #[test]
    fn parses_several_messages_in_one_datagram() {
        let mut bytes = datagram(PROC_EVENT_EXEC, 0, &[5, 5]);
        bytes.extend(datagram(PROC_EVENT_EXEC, 0, &[6, 6]));
        assert_eq!(
            parse_all(&bytes),
            [
                ProcEvent::Exec { pid: 5, tgid: 5 },
                ProcEvent::Exec { pid: 6, tgid: 6 }
            ]
        );
    }

    #[test]
    fn ignores_truncated_and_foreign_messages() {
        let whole = datagram(PROC_EVENT_FORK, 0, &[10, 10, 11, 11]);
        for cut in 0..whole.len() {
            let events = parse_all(&whole[..cut]);
            assert!(
                events.iter().all(|e| *e == ProcEvent::Other),
                "cut at {cut}: {events:?}"
            );
        }
        let mut foreign = whole.clone();
        foreign[16] = 9; // cb_id.idx of another connector
        assert!(parse_all(&foreign).is_empty());
        let mut zero_length = whole;
        zero_length[..4].copy_from_slice(&0u32.to_ne_bytes());
        assert!(parse_all(&zero_length).is_empty());
    }

    #[test]
    fn negative_pids_are_not_events() {
        let bytes = datagram(PROC_EVENT_EXEC, 0, &[u32::MAX, 5]);
        assert_eq!(parse_all(&bytes), [ProcEvent::Other]);
    }
}
