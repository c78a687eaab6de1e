//! Who is calling: maps the thread id of every FUSE request to its process ([`Caller`]),
//! describes each process depsetfs sees ([`crate::record::ProcessInfo`]) and follows the
//! processes through the Linux proc connector (fork, exec and exit records). This module owns
//! the [`ProcessTracker`] and its three threads; the /proc formats live in `proc_fs`, the
//! netlink wire format in `connector`, the meaning of connector events in `events`, the
//! shared state in `tracking`, the off-request-path /proc reads in `details`, the argv of
//! an exec, read while its exec open waits, in `exec_capture`, and the types these parts pass
//! each other in `base`. Only
//! processes seen in a request, and their descendants, are followed: the host's other
//! activity is ignored.

mod base;
mod connector;
mod details;
mod events;
mod exec_capture;
mod proc_fs;
mod tracking;

#[cfg(test)]
mod tests;

use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use base::{Caller, ProcessError};
pub use proc_fs::read_process_info;

use crate::mirror::recorder::Recorder;
use base::RecordSink;
use connector::{ConnectorSocket, PROC_CN_MCAST_LISTEN, SubscriptionWatch};
use events::EventHandler;
use exec_capture::ExecCapturer;
use tracking::Tracking;

/// How long `start_connector` waits for the kernel to acknowledge the subscription.
const SUBSCRIPTION_TIMEOUT: Duration = Duration::from_secs(2);
/// How long `stop` waits for each thread. The connector thread wakes every 200 ms; the
/// details thread may be stuck reading /proc of a process that is itself stuck on the mirror,
/// in which case it is left behind rather than hanging shutdown.
const THREAD_STOP_TIMEOUT: Duration = Duration::from_secs(2);

/// Counters of a [`ProcessTracker`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcessStats {
    /// Processes that became tracked (each gets a `Record::Process`).
    pub processes_seen: u64,
    /// Fork, exec, exit and other events received from the proc connector, for all
    /// processes of the host.
    pub connector_events: u64,
    /// Lost records: connector buffer overruns, plus processes that could not be queued for
    /// description.
    pub lost: u64,
    /// Descriptions that carry only what was known because the process was gone.
    pub details_incomplete: u64,
    /// Processes tracked now.
    pub tracked_processes: usize,
    /// Threads whose process is cached now.
    pub cached_threads: usize,
}

/// Maps FUSE request thread ids to processes and follows those processes. Shared by the
/// FUSE request threads through an `Arc`.
pub struct ProcessTracker {
    tracking: Arc<Tracking>,
    connector: Mutex<Option<ConnectorThread>>,
    details: Mutex<Option<Worker>>,
    exec_args: ExecCapturer,
    stopped: AtomicBool,
}

impl ProcessTracker {
    /// A tracker emitting to `recorder`, with its details thread running. `mirror_prefix` is
    /// the mountpoint of the mirror on the host; executables under it are recorded as mirror
    /// paths (the prefix stripped, a leading '/' kept).
    pub fn new(recorder: Recorder, mirror_prefix: Option<PathBuf>) -> Arc<ProcessTracker> {
        Self::with_sink(
            Arc::new(move |record| recorder.record(record)),
            mirror_prefix,
        )
    }

    fn with_sink(sink: RecordSink, mirror_prefix: Option<PathBuf>) -> Arc<ProcessTracker> {
        let (details_queue, details_inbox) = mpsc::channel();
        let tracking = Arc::new(Tracking::new(sink, mirror_prefix, details_queue));
        let details_tracking = Arc::clone(&tracking);
        // If the thread cannot start, its inbox is dropped with the closure and every
        // description request is recorded as lost (see Tracking::request_details).
        let details = Worker::spawn("depsetfs-proc-details", move || {
            details::describe_processes(details_tracking, details_inbox)
        })
        .ok();
        Arc::new(ProcessTracker {
            tracking,
            connector: Mutex::new(None),
            details: Mutex::new(details),
            exec_args: ExecCapturer::start(),
            stopped: AtomicBool::new(false),
        })
    }

    /// The process of the thread `tid` that made a FUSE request (FUSE reports thread ids).
    ///
    /// Only a thread's first request reads /proc (`/proc/TID/status` for its thread group,
    /// `/proc/TGID/stat` for the start time); later ones hit a cache. Tid 0 (a request the
    /// kernel made on its own) is [`Caller::KERNEL`]. A thread that is already gone gives
    /// `Caller { pid: tid, tid, start: 0 }`; an answer with an unknown start is neither cached
    /// nor tracked, as it could not be told apart from a later owner of the pid. The first
    /// time a process is seen it becomes
    /// tracked and is described by the details thread; nothing here reads `cmdline` or
    /// anything else that takes the caller's mm lock, since the caller may be in the middle
    /// of execve waiting for this very request.
    pub fn identify(&self, tid: u32) -> Caller {
        self.tracking.identify(tid)
    }

    /// Called while `caller`'s exec open of `exe` (a mirror path) waits for its reply:
    /// keeps what the exec was asked to run, in case the process is gone before the details
    /// thread can read /proc (see `exec_capture`).
    pub fn capture_exec(&self, caller: Caller, exe: &[u8]) {
        if caller.start == 0 {
            return;
        }
        let previous = self
            .tracking
            .exec_captures
            .get(&caller.pid)
            .filter(|known| known.start == caller.start)
            .map(|known| known.call);
        if let Some(capture) = self
            .exec_args
            .capture(caller.tid, caller.start, exe, previous)
        {
            self.tracking.exec_captures.insert(caller.pid, capture);
        }
    }

    /// Starts following tracked processes through the Linux proc connector on its own thread.
    /// Returns once the kernel has acknowledged the subscription, or an error when it is
    /// refused or unanswered (CAP_NET_ADMIN missing, or not in the initial pid and user
    /// namespace, where the kernel ignores subscribers).
    pub fn start_connector(self: &Arc<Self>) -> Result<(), ProcessError> {
        let mut slot = lock(&self.connector);
        if self.stopped.load(Ordering::Acquire) {
            return Err(ProcessError::Stopped);
        }
        if slot.is_some() {
            return Err(ProcessError::AlreadyStarted);
        }
        let (thread, acknowledged) = ConnectorThread::spawn(Arc::clone(&self.tracking))?;
        match acknowledged.recv_timeout(SUBSCRIPTION_TIMEOUT) {
            Ok(Ok(())) => {
                *slot = Some(thread);
                Ok(())
            }
            Ok(Err(source)) => {
                thread.stop();
                Err(ProcessError::ConnectorUnavailable {
                    step: "subscribe",
                    source,
                })
            }
            Err(_) => {
                thread.stop();
                Err(ProcessError::ConnectorUnavailable {
                    step: "subscribe",
                    source: io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the kernel did not acknowledge the subscription",
                    ),
                })
            }
        }
    }

    /// Stops the connector thread (unsubscribes, records exits still held back, closes the
    /// socket) and the details thread (after it has described what was queued). Idempotent.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        self.exec_args.stop();
        if let Some(connector) = lock(&self.connector).take() {
            connector.stop();
        }
        if let Some(details) = lock(&self.details).take() {
            self.tracking.send_details_shutdown();
            details.join_within(THREAD_STOP_TIMEOUT);
        }
    }

    pub fn stats(&self) -> ProcessStats {
        let counters = &self.tracking.counters;
        ProcessStats {
            processes_seen: counters.processes_seen.load(Ordering::Relaxed),
            connector_events: counters.connector_events.load(Ordering::Relaxed),
            lost: counters.lost.load(Ordering::Relaxed),
            details_incomplete: counters.details_incomplete.load(Ordering::Relaxed),
            tracked_processes: self.tracking.processes.len(),
            cached_threads: self.tracking.callers.len(),
        }
    }
}

impl Drop for ProcessTracker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Subscribes to the proc connector and unsubscribes again, as a daemon would at start
/// (`depsetfs doctor`): `Ok` when the kernel acknowledged the subscription.
pub fn probe_connector() -> Result<(), ProcessError> {
    let tracker = ProcessTracker::with_sink(Arc::new(|_| {}), None);
    let outcome = tracker.start_connector();
    tracker.stop();
    outcome
}

/// Locks a mutex that a panicking thread may have poisoned: the guarded values (thread
/// handles) stay valid.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The running connector thread and its stop flag.
struct ConnectorThread {
    worker: Worker,
    stop: Arc<AtomicBool>,
}

impl ConnectorThread {
    /// Opens and subscribes the socket, then starts receiving on a new thread. The receiver
    /// gets the kernel's answer to the subscription.
    fn spawn(
        tracking: Arc<Tracking>,
    ) -> Result<(ConnectorThread, Receiver<io::Result<()>>), ProcessError> {
        let socket = ConnectorSocket::open()?;
        let request_ack = subscription_tag();
        socket
            .send_mcast_op(PROC_CN_MCAST_LISTEN, request_ack)
            .map_err(|source| ProcessError::ConnectorUnavailable {
                step: "subscribe",
                source,
            })?;
        let (report, acknowledged) = mpsc::channel();
        let subscription = SubscriptionWatch {
            request_ack,
            report: Some(report),
        };
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = Arc::clone(&stop);
        let handler = EventHandler::new(tracking);
        let worker = Worker::spawn("depsetfs-proc-connector", move || {
            connector::receive_events(socket, handler, &thread_stop, subscription)
        })
        .map_err(|source| ProcessError::ThreadSpawn {
            thread: "proc connector",
            source,
        })?;
        Ok((ConnectorThread { worker, stop }, acknowledged))
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Release);
        self.worker.join_within(THREAD_STOP_TIMEOUT);
    }
}

/// Tells our subscription's acknowledgement apart from other listeners' (every listener
/// receives every answer).
fn subscription_tag() -> u32 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.subsec_nanos());
    std::process::id().rotate_left(16) ^ nanos
}

/// A named thread whose end can be awaited with a time limit.
struct Worker {
    handle: JoinHandle<()>,
    /// Disconnects when the thread's body returns or unwinds.
    finished: Receiver<()>,
}

impl Worker {
    fn spawn(name: &str, body: impl FnOnce() + Send + 'static) -> io::Result<Worker> {
        let (finished_guard, finished) = mpsc::channel::<()>();
        let handle = thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                let _finished_guard = finished_guard;
                body();
            })?;
        Ok(Worker { handle, finished })
    }

    /// Joins the thread if it ends within `limit`, else leaves it running detached.
    fn join_within(self, limit: Duration) {
        match self.finished.recv_timeout(limit) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => {
                let _ = self.handle.join();
            }
        }
    }
}
