//! The details thread: describes newly tracked (and freshly exec'd) processes from /proc and
//! emits [`Record::Process`]. It exists so that reads that take a process's mm lock
//! (`cmdline`) never run on a FUSE request thread, where the process may be blocked in execve
//! or in a page fault waiting for that very request. Every request yields a record: when
//! the process is gone (or its pid was reused) the record carries only what was known.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;

use super::base::{DetailsMessage, DetailsRequest};
use super::exec_capture::ExecCapture;
use super::proc_fs::read_process_info;
use super::tracking::Tracking;
use crate::record::{ProcessInfo, Record, now_ns};

/// `uid`/`gid` of a process that was gone before it could be read: `(uid_t)-1`, the kernel's
/// "no id", rather than 0, which would claim root.
pub(super) const UNKNOWN_ID: u32 = u32::MAX;

/// The details thread's body: describes processes until told to shut down, then describes
/// whatever was queued before the shutdown so that no tracked process goes undescribed.
pub(super) fn describe_processes(tracking: Arc<Tracking>, inbox: Receiver<DetailsMessage>) {
    while let Ok(message) = inbox.recv() {
        match message {
            DetailsMessage::Describe(request) => describe_and_record(&tracking, request),
            DetailsMessage::Shutdown => break,
        }
    }
    while let Ok(message) = inbox.try_recv() {
        if let DetailsMessage::Describe(request) = message {
            describe_and_record(&tracking, request);
        }
    }
}

fn describe_and_record(tracking: &Tracking, request: DetailsRequest) {
    let mut info = match describe(request, tracking.mirror_prefix.as_deref()) {
        Some(info) => {
            tracking.learn_start(request.pid, request.generation, info.start);
            info
        }
        None => {
            tracking
                .counters
                .details_incomplete
                .fetch_add(1, Ordering::Relaxed);
            known_only(request)
        }
    };
    if request.after_exec {
        if let Some(capture) = tracking.exec_captures.get(&request.pid) {
            fill_from_exec(&mut info, &capture);
        }
    }
    tracking.emit(Record::Process(info));
}

/// Reads the process's details; `None` when it is gone or its pid now belongs to another
/// process (start time differs from the one the request knew).
pub(super) fn describe(
    request: DetailsRequest,
    mirror_prefix: Option<&Path>,
) -> Option<ProcessInfo> {
    let info = read_process_info(request.pid, mirror_prefix).ok()?;
    (request.start == 0 || info.start == request.start).then_some(info)
}

/// The description of a process that could not be read: what the request knew.
pub(super) fn known_only(request: DetailsRequest) -> ProcessInfo {
    ProcessInfo {
        pid: request.pid,
        start: request.start,
        ppid: request.ppid.unwrap_or(0),
        exe: Vec::new(),
        argv: Vec::new(),
        uid: UNKNOWN_ID,
        gid: UNKNOWN_ID,
        seen_ns: now_ns(),
    }
}

/// A process described after an exec but without exe (gone, or a zombie, whose exe and
/// cmdline read empty) takes exe and argv from what the exec was asked to run, if that was
/// captured for this very process (same start time).
pub(super) fn fill_from_exec(info: &mut ProcessInfo, exec: &ExecCapture) {
    if info.exe.is_empty() && info.start != 0 && exec.start == info.start {
        info.exe = exec.exe.clone();
        info.argv = exec.argv.clone();
    }
}
