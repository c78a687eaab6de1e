//! What proc connector events mean for tracking, applied on the connector thread: forks of
//! tracked processes become [`Record::Fork`] and tracked children, new threads of tracked
//! processes go straight into the tid cache, execs become [`Record::Exec`] plus a fresh
//! description, exits of thread-group leaders become [`Record::Exit`], and overruns become
//! [`Record::Lost`]. Events of untracked processes are ignored. Records carry the time the
//! kernel stamped on the event, not the time this thread got to it: the graph cuts a process
//! into images at its exec time, and a connector thread that lags on a loaded machine would
//! otherwise put the new image's first accesses before its exec.
//!
//! A leader's exit is held back briefly before it is recorded: when a non-leader thread
//! calls execve, the kernel kills the old leader (an exit event with pid == tgid) and the
//! exec'ing thread carries on under the leader's pid; the exec event that follows cancels the
//! held-back exit.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::base::{Caller, DetailsRequest, ProcEvent};
use super::tracking::Tracking;
use crate::record::{
    ExecEvent, ExitEvent, ForkEvent, LostEvents, Record, TimeNs, now_ns, wall_ns_of_monotonic,
};

/// `source` of the [`LostEvents`] emitted on a receive-buffer overrun.
pub(super) const CONNECTOR_LOST_SOURCE: &str = "proc-connector";

/// How long a leader's exit waits for an exec event that would show the process lives on.
/// The exec event follows the old leader's death within the same execve, after the new
/// image is mapped: milliseconds, unless the machine stalls.
const EXIT_GRACE: Duration = Duration::from_millis(500);

/// A leader's exit, not yet recorded.
struct HeldExit {
    pid: u32,
    generation: u64,
    status: i32,
    ts_ns: TimeNs,
    due: Instant,
}

pub(super) struct EventHandler {
    tracking: Arc<Tracking>,
    /// In arrival order, hence in `due` order.
    held_exits: VecDeque<HeldExit>,
}

impl EventHandler {
    pub fn new(tracking: Arc<Tracking>) -> EventHandler {
        EventHandler {
            tracking,
            held_exits: VecDeque::new(),
        }
    }

    /// Applies one event. `monotonic_ns` is when the kernel sent it: records carry that time
    /// (as wall-clock time), not when this thread got to it, so that an access the new image
    /// made before a late connector thread caught up still falls after its exec.
    pub fn handle(&mut self, event: ProcEvent, monotonic_ns: u64) {
        self.tracking
            .counters
            .connector_events
            .fetch_add(1, Ordering::Relaxed);
        let ts_ns = wall_ns_of_monotonic(monotonic_ns);
        match event {
            ProcEvent::Fork {
                parent_tgid,
                child_pid,
                child_tgid,
            } => self.on_fork(parent_tgid, child_pid, child_tgid, ts_ns),
            ProcEvent::Exec { tgid, .. } => self.on_exec(tgid, ts_ns),
            ProcEvent::Exit { pid, tgid, status } => self.on_exit(pid, tgid, status, ts_ns),
            ProcEvent::Ack { .. } | ProcEvent::Other => {}
        }
    }

    fn on_fork(&mut self, parent_tgid: u32, child_pid: u32, child_tgid: u32, ts_ns: TimeNs) {
        // A new task with this tid: any cached identity for the tid is stale (an exit we
        // missed, or a request that raced its own exit into the cache).
        self.tracking.callers.remove(&child_pid);
        if child_pid == child_tgid {
            self.on_process_forked(parent_tgid, child_tgid, ts_ns);
        } else {
            // For a thread the event's parent is the process's parent: use the child's tgid.
            self.on_thread_created(child_tgid, child_pid);
        }
    }

    fn on_process_forked(&mut self, parent: u32, child: u32, ts_ns: TimeNs) {
        // A new process holds the pid: a held-back exit of its previous owner is final.
        if let Some(held) = self.take_held_exit(child) {
            self.record_exit(held);
        }
        if !self.tracking.processes.contains_key(&parent) {
            return;
        }
        self.tracking.emit(Record::Fork(ForkEvent {
            ts_ns,
            parent,
            child,
            thread: false,
        }));
        self.tracking.track_forked(child, parent);
    }

    /// Caches the new thread's identity (saves a /proc read on its first request). Threads
    /// are not recorded as forks: requests already name their thread group.
    fn on_thread_created(&self, tgid: u32, tid: u32) {
        let Some(process) = self.tracking.processes.get(&tgid).map(|p| *p) else {
            return;
        };
        if process.start != 0 {
            let caller = Caller {
                pid: tgid,
                tid,
                start: process.start,
            };
            self.tracking.callers.insert(tid, caller);
        }
    }

    fn on_exec(&mut self, tgid: u32, ts_ns: TimeNs) {
        if self.take_held_exit(tgid).is_some() {
            self.forget_replaced_threads(tgid);
        }
        let Some(process) = self.tracking.processes.get(&tgid).map(|p| *p) else {
            return;
        };
        self.tracking
            .emit(Record::Exec(ExecEvent { ts_ns, pid: tgid }));
        self.tracking.request_details(DetailsRequest {
            pid: tgid,
            start: process.start,
            ppid: None,
            generation: process.generation,
            after_exec: true,
        });
    }

    /// A non-leader thread exec'd and took over the leader's pid: its old tid vanished
    /// without an exit event. After execve the process has a single thread, tid == tgid.
    fn forget_replaced_threads(&self, tgid: u32) {
        self.tracking
            .callers
            .retain(|tid, caller| caller.pid != tgid || *tid == tgid);
    }

    fn on_exit(&mut self, pid: u32, tgid: u32, status: i32, ts_ns: TimeNs) {
        self.tracking.callers.remove(&pid);
        if pid != tgid {
            return; // A thread, not the process.
        }
        let Some(generation) = self.tracking.processes.get(&pid).map(|p| p.generation) else {
            return;
        };
        if let Some(previous) = self.take_held_exit(pid) {
            self.record_exit(previous);
        }
        self.held_exits.push_back(HeldExit {
            pid,
            generation,
            status,
            ts_ns,
            due: Instant::now() + EXIT_GRACE,
        });
    }

    /// The kernel dropped events: count them, and drop the tid cache since exits may have
    /// been among them (tids get reused); identities are re-read from /proc on demand.
    pub fn on_overrun(&self) {
        self.tracking.counters.lost.fetch_add(1, Ordering::Relaxed);
        self.tracking.emit(Record::Lost(LostEvents {
            ts_ns: now_ns(),
            source: CONNECTOR_LOST_SOURCE.to_string(),
            count: 1,
        }));
        self.tracking.callers.clear();
    }

    /// Records the held-back exits whose grace period is over.
    pub fn flush_due_exits(&mut self, now: Instant) {
        while self.held_exits.front().is_some_and(|held| held.due <= now) {
            if let Some(held) = self.held_exits.pop_front() {
                self.record_exit(held);
            }
        }
    }

    /// Records every held-back exit (the connector is stopping).
    pub fn flush_all_exits(&mut self) {
        while let Some(held) = self.held_exits.pop_front() {
            self.record_exit(held);
        }
    }

    fn take_held_exit(&mut self, pid: u32) -> Option<HeldExit> {
        let index = self.held_exits.iter().position(|held| held.pid == pid)?;
        self.held_exits.remove(index)
    }

    fn record_exit(&self, held: HeldExit) {
        let ended = self.tracking.processes.remove_if(&held.pid, |_, process| {
            process.generation == held.generation
        });
        if let Some((pid, process)) = ended {
            self.tracking
                .exec_captures
                .remove_if(&pid, |_, capture| capture.start == process.start);
        }
        self.tracking.emit(Record::Exit(ExitEvent {
            ts_ns: held.ts_ns,
            pid: held.pid,
            status: held.status,
        }));
    }
}
