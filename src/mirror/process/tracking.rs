//! The state shared by the FUSE request threads, the connector thread and the details thread:
//! the tid -> [`Caller`] cache, the set of tracked processes, the counters, and the queue to
//! the details thread. It owns the rules for when a process becomes tracked (first seen by
//! `identify`, or forked by a tracked process) and makes sure each newly tracked process gets
//! exactly one description request.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Sender;

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;

use super::base::{Caller, DetailsMessage, DetailsRequest, RecordSink};
use super::exec_capture::ExecCapture;
use super::proc_fs;
use crate::mirror::inodes::NumberMap;
use crate::record::{LostEvents, Record, now_ns};

/// `source` of the [`LostEvents`] emitted when a process could not be queued for description.
const DETAILS_LOST_SOURCE: &str = "process-details";

/// A process being followed. Keyed by pid in [`Tracking::processes`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct TrackedProcess {
    /// Start time in clock ticks since boot; 0 until known (a forked child is tracked before
    /// the details thread has read its /proc entry).
    pub start: u64,
    /// Unique per tracking of a pid, so that late work for a pid that has since been reused
    /// (an exit held back, a description) cannot touch its successor.
    pub generation: u64,
}

/// Counters behind [`super::ProcessStats`].
#[derive(Default)]
pub(super) struct Counters {
    pub processes_seen: AtomicU64,
    pub connector_events: AtomicU64,
    pub lost: AtomicU64,
    pub details_incomplete: AtomicU64,
}

pub(super) struct Tracking {
    /// tid -> its thread group, for the threads of tracked processes.
    pub callers: NumberMap<u32, Caller>,
    /// pid (tgid) -> tracked process.
    pub processes: NumberMap<u32, TrackedProcess>,
    /// pid (tgid) -> what its latest exec was asked to run, until the process exits.
    pub exec_captures: DashMap<u32, ExecCapture>,
    pub counters: Counters,
    pub mirror_prefix: Option<PathBuf>,
    sink: RecordSink,
    details: Sender<DetailsMessage>,
    next_generation: AtomicU64,
}

impl Tracking {
    pub fn new(
        sink: RecordSink,
        mirror_prefix: Option<PathBuf>,
        details: Sender<DetailsMessage>,
    ) -> Tracking {
        Tracking {
            callers: NumberMap::default(),
            processes: NumberMap::default(),
            exec_captures: DashMap::new(),
            counters: Counters::default(),
            mirror_prefix,
            sink,
            details,
            next_generation: AtomicU64::new(1),
        }
    }

    pub fn emit(&self, record: Record) {
        (self.sink)(record);
    }

    /// See [`super::ProcessTracker::identify`].
    pub fn identify(&self, tid: u32) -> Caller {
        if tid == 0 {
            return Caller::KERNEL;
        }
        if let Some(caller) = self.callers.get(&tid) {
            return *caller;
        }
        let Ok(status) = proc_fs::read_status(tid) else {
            return Caller {
                pid: tid,
                tid,
                start: 0,
            };
        };
        let caller = Caller {
            pid: status.tgid,
            tid,
            start: proc_fs::read_stat(status.tgid).map_or(0, |stat| stat.start),
        };
        // An unknown start means the process is exiting right now: neither cache nor track
        // an identity that cannot tell it from a later process with the same pid.
        if caller.start != 0 {
            self.callers.insert(tid, caller);
            self.track_identified(caller);
        }
        caller
    }

    /// Tracks the process of a caller unless it already is, and asks for its description
    /// when it is new.
    fn track_identified(&self, caller: Caller) {
        let new_generation = match self.processes.entry(caller.pid) {
            Entry::Occupied(mut entry) => {
                let known = entry.get_mut();
                if known.start == caller.start {
                    return;
                }
                if known.start == 0 {
                    // Forked by a tracked process; its description is already queued.
                    known.start = caller.start;
                    return;
                }
                // The pid was reused while the old process's exit went unseen.
                let generation = self.next_generation();
                *known = TrackedProcess {
                    start: caller.start,
                    generation,
                };
                generation
            }
            Entry::Vacant(entry) => {
                let generation = self.next_generation();
                entry.insert(TrackedProcess {
                    start: caller.start,
                    generation,
                });
                generation
            }
        };
        self.counters.processes_seen.fetch_add(1, Ordering::Relaxed);
        self.request_details(DetailsRequest {
            pid: caller.pid,
            start: caller.start,
            ppid: None,
            generation: new_generation,
            after_exec: false,
        });
    }

    /// Tracks a process forked by a tracked parent. Returns false when it already was
    /// tracked: the connector lags behind FUSE requests, so the child may have been
    /// identified (and described) before its fork event is handled.
    pub fn track_forked(&self, child: u32, parent: u32) -> bool {
        let generation = match self.processes.entry(child) {
            Entry::Occupied(_) => return false,
            Entry::Vacant(entry) => {
                let generation = self.next_generation();
                entry.insert(TrackedProcess {
                    start: 0,
                    generation,
                });
                generation
            }
        };
        self.counters.processes_seen.fetch_add(1, Ordering::Relaxed);
        self.request_details(DetailsRequest {
            pid: child,
            start: 0,
            ppid: Some(parent),
            generation,
            after_exec: false,
        });
        true
    }

    /// Records the start time the details thread read for a process tracked without one.
    pub fn learn_start(&self, pid: u32, generation: u64, start: u64) {
        if let Some(mut process) = self.processes.get_mut(&pid) {
            if process.generation == generation && process.start == 0 {
                process.start = start;
            }
        }
    }

    /// Queues a process for description. Never blocks; if the details thread is gone the
    /// description is counted as lost rather than dropped silently.
    pub fn request_details(&self, request: DetailsRequest) {
        if self
            .details
            .send(DetailsMessage::Describe(request))
            .is_err()
        {
            self.counters.lost.fetch_add(1, Ordering::Relaxed);
            self.emit(Record::Lost(LostEvents {
                ts_ns: now_ns(),
                source: DETAILS_LOST_SOURCE.to_string(),
                count: 1,
            }));
        }
    }

    pub fn send_details_shutdown(&self) {
        let _ = self.details.send(DetailsMessage::Shutdown);
    }

    fn next_generation(&self) -> u64 {
        self.next_generation.fetch_add(1, Ordering::Relaxed)
    }
}
