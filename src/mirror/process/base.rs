//! What the parts of process tracking pass each other: the [`Caller`] of a request, the
//! [`ProcessError`], the sink the tracker's records go to, the decoded connector event
//! ([`ProcEvent`], from `connector` to `events`) and the details thread's messages
//! ([`DetailsRequest`], from `tracking` to `details`). A leaf module: the tracker
//! (`process.rs`) and its parts import these from here, so none of them imports its parent or
//! a sibling that imports it back.

use std::io;
use std::sync::Arc;

use crate::record::Record;

/// Where the tracker's records go (the recorder in production, a capture in tests).
pub(super) type RecordSink = Arc<dyn Fn(Record) + Send + Sync>;

/// The process behind a FUSE request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Caller {
    /// Thread group id (the process id).
    pub pid: u32,
    /// The calling thread.
    pub tid: u32,
    /// Start of the process in clock ticks since boot; 0 if unknown.
    pub start: u64,
}

impl Caller {
    /// A request the kernel made on its own (FUSE pid 0, e.g. writeback).
    pub const KERNEL: Caller = Caller {
        pid: 0,
        tid: 0,
        start: 0,
    };
}

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error(
        "cannot listen to the Linux proc connector ({step}): {source} \
         (it needs CAP_NET_ADMIN in the initial pid and user namespace)"
    )]
    ConnectorUnavailable {
        step: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("cannot start the {thread} thread: {source}")]
    ThreadSpawn {
        thread: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("the proc connector is already running")]
    AlreadyStarted,
    #[error("the process tracker has been stopped")]
    Stopped,
}

/// A process event, reduced to what depsetfs uses. Pids are as seen in the initial pid
/// namespace (the only one the connector serves).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ProcEvent {
    /// Answer to a (un)subscription request: `ack` is the request's `ack` plus one, `err` an
    /// errno (0: accepted).
    Ack {
        ack: u32,
        err: u32,
    },
    Fork {
        parent_tgid: u32,
        child_pid: u32,
        child_tgid: u32,
    },
    Exec {
        pid: u32,
        tgid: u32,
    },
    Exit {
        pid: u32,
        tgid: u32,
        status: i32,
    },
    /// Any other kind (uid, gid, sid, ptrace, comm, coredump), or a malformed event.
    Other,
}

/// A process to describe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct DetailsRequest {
    pub pid: u32,
    /// Start time when already known, else 0.
    pub start: u64,
    /// Parent when known from a fork event (used if the process is gone).
    pub ppid: Option<u32>,
    /// The tracking generation the request belongs to (see `TrackedProcess`).
    pub generation: u64,
    /// Asked for by an exec event: the new image is to be described.
    pub after_exec: bool,
}

pub(super) enum DetailsMessage {
    Describe(DetailsRequest),
    Shutdown,
}
