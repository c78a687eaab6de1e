//! Tests of the process tracker against the real kernel: /proc of this test process and of
//! children it spawns, and the proc connector (which needs root / CAP_NET_ADMIN in the
//! initial namespaces; those tests say so and skip otherwise).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::base::{DetailsRequest, ProcEvent};
use super::details::{UNKNOWN_ID, describe, fill_from_exec, known_only};
use super::exec_capture::{ExecCall, ExecCapture};
use super::*;
use crate::record::{
    ExecEvent, ExitEvent, ForkEvent, ProcessInfo, Record, monotonic_now_ns, now_ns,
};

/// Records emitted by a tracker under test.
#[derive(Clone, Default)]
struct Capture {
    records: Arc<Mutex<Vec<Record>>>,
}

impl Capture {
    fn records(&self) -> Vec<Record> {
        lock(&self.records).clone()
    }

    /// Polls until `found` holds for the records so far, or `limit` passes.
    fn wait_until(&self, limit: Duration, found: impl Fn(&[Record]) -> bool) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if found(&self.records()) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

fn capturing_tracker(mirror_prefix: Option<PathBuf>) -> (Arc<ProcessTracker>, Capture) {
    let capture = Capture::default();
    let records = Arc::clone(&capture.records);
    let sink: RecordSink = Arc::new(move |record| lock(&records).push(record));
    (ProcessTracker::with_sink(sink, mirror_prefix), capture)
}

const WAIT: Duration = Duration::from_secs(5);

fn own_tid() -> u32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() as u32 }
}

/// Field 22 of /proc/PID/stat, parsed independently of proc_fs.
fn start_time_from_proc(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read stat");
    let (_, after_comm) = stat.rsplit_once(')').expect("comm in stat");
    after_comm
        .split_whitespace()
        .nth(19)
        .expect("field 22")
        .parse()
        .expect("number")
}

/// A `sleep 30` child that has finished exec (spawn returns as soon as exec began: until it
/// completes, /proc may still show an empty command line).
fn spawn_sleep() -> Child {
    let child = Command::new("sleep")
        .arg("30")
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn sleep");
    let cmdline = format!("/proc/{}/cmdline", child.id());
    for _ in 0..200 {
        if std::fs::read(&cmdline).is_ok_and(|c| c.starts_with(b"sleep")) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    child
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A tracker with the connector running, or None (skip) when not root.
fn connected_tracker() -> Option<(Arc<ProcessTracker>, Capture)> {
    if !is_root() {
        eprintln!("skipped: the proc connector needs root");
        return None;
    }
    let (tracker, capture) = capturing_tracker(None);
    tracker.start_connector().expect("start the proc connector");
    Some((tracker, capture))
}

fn process_records(records: &[Record], pid: u32) -> Vec<ProcessInfo> {
    records
        .iter()
        .filter_map(|record| match record {
            Record::Process(info) if info.pid == pid => Some(info.clone()),
            _ => None,
        })
        .collect()
}

/// The fork, exec and exit records that concern `pid`, in order, without timestamps.
fn lifecycle(records: &[Record], pid: u32) -> Vec<String> {
    records
        .iter()
        .filter_map(|record| match record {
            Record::Fork(ForkEvent { child, thread, .. }) if *child == pid => {
                Some(format!("fork thread={thread}"))
            }
            Record::Exec(ExecEvent { pid: p, .. }) if *p == pid => Some("exec".to_string()),
            Record::Exit(ExitEvent { pid: p, status, .. }) if *p == pid => {
                Some(format!("exit {status}"))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn identify_kernel_request_reads_nothing() {
    let (tracker, capture) = capturing_tracker(None);
    assert_eq!(tracker.identify(0), Caller::KERNEL);
    assert_eq!(tracker.stats().cached_threads, 0);
    tracker.stop();
    assert!(capture.records().is_empty());
}

#[test]
fn identify_own_thread_gives_own_process_and_start() {
    let (tracker, _capture) = capturing_tracker(None);
    let pid = std::process::id();
    let caller = tracker.identify(own_tid());
    assert_eq!(
        caller,
        Caller {
            pid,
            tid: own_tid(),
            start: start_time_from_proc(pid)
        }
    );
    assert_eq!(tracker.identify(own_tid()), caller, "cached answer");
}

#[test]
fn identify_spawned_thread_gives_own_process() {
    let (tracker, _capture) = capturing_tracker(None);
    let (tid_sender, tid_receiver) = mpsc::channel();
    let (done_sender, done_receiver) = mpsc::channel::<()>();
    let worker = thread::spawn(move || {
        let _ = tid_sender.send(own_tid());
        let _ = done_receiver.recv();
    });
    let tid = tid_receiver.recv().expect("tid");
    let caller = tracker.identify(tid);
    drop(done_sender);
    worker.join().expect("join");
    let pid = std::process::id();
    assert_ne!(tid, pid);
    assert_eq!(
        caller,
        Caller {
            pid,
            tid,
            start: start_time_from_proc(pid)
        }
    );
}

#[test]
fn identify_child_process_gives_its_pid_and_start() {
    let (tracker, _capture) = capturing_tracker(None);
    let mut child = spawn_sleep();
    let pid = child.id();
    let caller = tracker.identify(pid);
    let expected_start = start_time_from_proc(pid);
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        caller,
        Caller {
            pid,
            tid: pid,
            start: expected_start
        }
    );
}

#[test]
fn identify_vanished_thread_gives_tid_as_pid() {
    let (tracker, capture) = capturing_tracker(None);
    let tid = 4_000_000_000; // Beyond any pid_max.
    assert_eq!(
        tracker.identify(tid),
        Caller {
            pid: tid,
            tid,
            start: 0
        }
    );
    let stats = tracker.stats();
    assert_eq!((stats.cached_threads, stats.tracked_processes), (0, 0));
    tracker.stop();
    assert!(capture.records().is_empty());
}

#[test]
fn identify_describes_each_process_once() {
    let (tracker, capture) = capturing_tracker(None);
    let pid = std::process::id();
    tracker.identify(own_tid());
    tracker.identify(own_tid());
    let (tid_sender, tid_receiver) = mpsc::channel();
    let (done_sender, done_receiver) = mpsc::channel::<()>();
    let worker = thread::spawn(move || {
        let _ = tid_sender.send(own_tid());
        let _ = done_receiver.recv();
    });
    tracker.identify(tid_receiver.recv().expect("tid"));
    drop(done_sender);
    worker.join().expect("join");
    tracker.stop(); // Describes everything queued before returning.

    let described = process_records(&capture.records(), pid);
    assert_eq!(described.len(), 1, "{described:?}");
    let info = &described[0];
    assert_eq!(info.start, start_time_from_proc(pid));
    let argv: Vec<String> = std::env::args().collect();
    assert_eq!(info.argv, argv);
    let exe = std::env::current_exe().expect("current exe");
    assert_eq!(info.exe, exe.as_os_str().as_encoded_bytes());
    assert_eq!(tracker.stats().processes_seen, 1);
}

#[test]
fn read_process_info_of_spawned_sleep() {
    let mut child = spawn_sleep();
    let pid = child.id();
    let info = read_process_info(pid, None);
    let expected_start = start_time_from_proc(pid);
    let _ = child.kill();
    let _ = child.wait();
    let info = info.expect("sleep's details");
    assert_eq!(info.pid, pid);
    assert_eq!(info.ppid, std::process::id());
    assert_eq!(info.start, expected_start);
    assert_eq!(info.argv, ["sleep", "30"]);
    let sleep = which("sleep");
    assert_eq!(info.exe, sleep.as_os_str().as_encoded_bytes());
    // SAFETY: getuid and getgid have no preconditions.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    assert_eq!((info.uid, info.gid), (uid, gid));
}

#[test]
fn read_process_info_rewrites_exe_into_the_mirror() {
    let sleep = which("sleep");
    let directory = sleep.parent().expect("sleep has a directory");
    let mut child = spawn_sleep();
    let info = read_process_info(child.id(), directory.parent());
    let _ = child.kill();
    let _ = child.wait();
    let info = info.expect("sleep's details");
    let expected = Path::new("/")
        .join(directory.file_name().expect("directory name"))
        .join(sleep.file_name().expect("file name"));
    assert_eq!(info.exe, expected.as_os_str().as_encoded_bytes());
}

/// The canonical path of a program on PATH.
fn which(program: &str) -> PathBuf {
    let path = std::env::var_os("PATH").expect("PATH");
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
        .and_then(|found| std::fs::canonicalize(found).ok())
        .expect("program on PATH")
}

#[test]
fn description_of_a_gone_process_keeps_what_was_known() {
    let gone = DetailsRequest {
        pid: 4_000_000_000,
        start: 77,
        ppid: Some(12),
        generation: 1,
        after_exec: false,
    };
    assert_eq!(describe(gone, None), None);
    let info = known_only(gone);
    assert_eq!(
        (info.pid, info.start, info.ppid, info.uid, info.gid),
        (4_000_000_000, 77, 12, UNKNOWN_ID, UNKNOWN_ID)
    );
    assert!(info.exe.is_empty() && info.argv.is_empty());

    let pid = std::process::id();
    let reused = DetailsRequest {
        pid,
        start: start_time_from_proc(pid) + 1,
        ppid: None,
        generation: 1,
        after_exec: false,
    };
    assert_eq!(describe(reused, None), None, "another process's pid");
}

/// A process gone (or a zombie) right after its exec is described with what the exec was
/// asked to run, when that was captured for this very process (same start time).
#[test]
fn description_of_a_gone_process_after_exec_uses_the_captured_call() {
    let gone = DetailsRequest {
        pid: 4_000_000_000,
        start: 77,
        ppid: None,
        generation: 1,
        after_exec: true,
    };
    let capture = ExecCapture {
        call: ExecCall::default(),
        start: 77,
        argv: vec!["stat".to_string(), "-c".to_string()],
        exe: b"/usr/bin/stat".to_vec(),
    };
    let mut info = known_only(gone);
    fill_from_exec(&mut info, &capture);
    assert_eq!((&info.argv, &info.exe), (&capture.argv, &capture.exe));

    let mut info = known_only(gone);
    let earlier_owner = ExecCapture {
        start: 76,
        ..capture.clone()
    };
    fill_from_exec(&mut info, &earlier_owner);
    assert!(info.argv.is_empty() && info.exe.is_empty(), "{info:?}");

    let mut alive = known_only(gone);
    alive.exe = b"/usr/bin/env".to_vec();
    alive.argv = vec!["env".to_string()];
    fill_from_exec(&mut alive, &capture);
    assert_eq!(alive.argv, ["env"], "what /proc said wins");
}

/// Waits until `pid` has been described with `argv`, then closes the child's stdin so that
/// its `read` ends and it exits, and returns its exit code. Keeping the child alive until then
/// makes the test deterministic: a process that exits at once can be reaped before the
/// details thread reads /proc (its record then carries only pid, start and ppid).
fn finish_once_described(capture: &Capture, mut child: Child, argv: &[&str]) -> Option<i32> {
    let pid = child.id();
    let described = capture.wait_until(WAIT, |records| {
        process_records(records, pid)
            .iter()
            .any(|info| info.argv == argv)
    });
    drop(child.stdin.take());
    let status = child.wait().expect("wait for the child");
    assert!(
        described,
        "{pid} described as {argv:?}: {:?}",
        capture.records()
    );
    status.code()
}

#[test]
fn connector_records_fork_exec_exit_of_a_tracked_process_child() {
    let Some((tracker, capture)) = connected_tracker() else {
        return;
    };
    let pid = std::process::id();
    tracker.identify(own_tid());
    let argv = ["sh", "-c", "read line; exit 3"];
    let child = Command::new(argv[0])
        .args(&argv[1..])
        .stdin(Stdio::piped())
        .spawn()
        .expect("run sh");
    let child_pid = child.id();
    assert_eq!(finish_once_described(&capture, child, &argv), Some(3));
    let ended = |records: &[Record]| lifecycle(records, child_pid).len() >= 3;
    assert!(capture.wait_until(WAIT, ended), "{:?}", capture.records());
    tracker.stop();

    let records = capture.records();
    assert_eq!(
        lifecycle(&records, child_pid),
        ["fork thread=false", "exec", "exit 768"]
    );
    assert!(
        records
            .iter()
            .any(|r| matches!(r, Record::Fork(f) if f.child == child_pid && f.parent == pid))
    );
    let info = process_records(&records, child_pid)
        .into_iter()
        .find(|info| info.argv == argv)
        .expect("described after exec");
    assert_eq!(info.ppid, pid);
    assert_ne!(info.start, 0, "start time known");
    assert_eq!(info.exe, which("sh").as_os_str().as_encoded_bytes());
    let stats = tracker.stats();
    assert!(stats.connector_events >= 3, "{stats:?}");
    assert_eq!(stats.lost, 0);
}

#[test]
fn connector_ignores_untracked_processes() {
    let Some((tracker, capture)) = connected_tracker() else {
        return;
    };
    let mut child = Command::new("sh")
        .args(["-c", "true"])
        .spawn()
        .expect("run sh");
    let pid = child.id();
    let _ = child.wait();
    // The exit event is handled once it is received; give the connector time.
    let seen_events = || tracker.stats().connector_events >= 3;
    let deadline = Instant::now() + WAIT;
    while !seen_events() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    thread::sleep(Duration::from_millis(700)); // Past the exit grace period.
    tracker.stop();
    assert!(seen_events());
    assert!(lifecycle(&capture.records(), pid).is_empty());
    assert!(capture.records().is_empty(), "{:?}", capture.records());
}

#[test]
fn connector_caches_new_threads_and_forgets_exited_ones() {
    let Some((tracker, _capture)) = connected_tracker() else {
        return;
    };
    let pid = std::process::id();
    tracker.identify(own_tid());
    let (tid_sender, tid_receiver) = mpsc::channel();
    let (done_sender, done_receiver) = mpsc::channel::<()>();
    let worker = thread::spawn(move || {
        let _ = tid_sender.send(own_tid());
        let _ = done_receiver.recv();
    });
    let tid = tid_receiver.recv().expect("tid");
    let cached = || tracker.tracking.callers.get(&tid).map(|caller| *caller);
    let deadline = Instant::now() + WAIT;
    while cached().is_none() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        cached(),
        Some(Caller {
            pid,
            tid,
            start: start_time_from_proc(pid)
        }),
        "cached from the fork event, without identify()"
    );
    drop(done_sender);
    worker.join().expect("join");
    let deadline = Instant::now() + WAIT;
    while cached().is_some() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(cached(), None, "dropped on the thread's exit event");
    assert!(
        tracker.tracking.processes.contains_key(&pid),
        "a thread's exit does not end the process"
    );
}

/// When a non-leader thread calls execve the kernel reports the old leader's exit (pid ==
/// tgid) before the exec: the process must stay tracked and get no exit record until it
/// really ends.
#[test]
fn connector_follows_exec_from_a_non_leader_thread() {
    let Some((tracker, capture)) = connected_tracker() else {
        return;
    };
    let argv = ["sh", "-c", "read line; exit 5"];
    let script = format!(
        "import os, threading\n\
         t = threading.Thread(target=lambda: os.execv('/bin/sh', {argv:?}))\n\
         t.start()\n\
         t.join()\n"
    );
    tracker.identify(own_tid());
    let Ok(child) = Command::new("python3")
        .args(["-c", &script])
        .stdin(Stdio::piped())
        .spawn()
    else {
        eprintln!("skipped: python3 is not available");
        return;
    };
    let pid = child.id();
    assert_eq!(finish_once_described(&capture, child, &argv), Some(5));
    let ended = |records: &[Record]| {
        lifecycle(records, pid)
            .last()
            .is_some_and(|last| last.starts_with("exit"))
    };
    assert!(capture.wait_until(WAIT, ended), "{:?}", capture.records());
    tracker.stop();

    let events = lifecycle(&capture.records(), pid);
    assert_eq!(
        events.first().map(String::as_str),
        Some("fork thread=false")
    );
    assert_eq!(
        events.iter().filter(|e| e.starts_with("exit")).count(),
        1,
        "{events:?}"
    );
    assert_eq!(events.last().map(String::as_str), Some("exit 1280"));
}

#[test]
fn stop_is_idempotent_and_prompt() {
    let Some((tracker, _capture)) = connected_tracker() else {
        return;
    };
    let started = Instant::now();
    tracker.stop();
    let first = started.elapsed();
    tracker.stop();
    assert!(first < Duration::from_secs(1), "stop took {first:?}");
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(matches!(
        tracker.start_connector(),
        Err(ProcessError::Stopped)
    ));
}

#[test]
fn stop_without_connector_is_idempotent() {
    let (tracker, _capture) = capturing_tracker(None);
    tracker.stop();
    tracker.stop();
    // After stop, a newly seen process cannot be described: that is recorded, not dropped.
    tracker.identify(own_tid());
}

#[test]
fn start_connector_twice_is_refused() {
    let Some((tracker, _capture)) = connected_tracker() else {
        return;
    };
    assert!(matches!(
        tracker.start_connector(),
        Err(ProcessError::AlreadyStarted)
    ));
}

/// A connector thread that falls behind (a loaded machine) must not move an exec later than
/// the accesses its new image made meanwhile: the record keeps the kernel's time.
#[test]
fn events_carry_the_kernel_time_not_the_time_they_were_handled() {
    let (tracker, capture) = capturing_tracker(None);
    let pid = std::process::id();
    tracker.identify(own_tid());
    let sent_wall = now_ns();
    let sent = monotonic_now_ns();
    thread::sleep(Duration::from_millis(1000));
    let mut handler = EventHandler::new(Arc::clone(&tracker.tracking));
    handler.handle(ProcEvent::Exec { pid, tgid: pid }, sent);
    tracker.stop();
    let exec_ts = capture
        .records()
        .iter()
        .find_map(|r| match r {
            Record::Exec(exec) if exec.pid == pid => Some(exec.ts_ns),
            _ => None,
        })
        .expect("an exec record");
    let off_by = Duration::from_nanos(exec_ts.abs_diff(sent_wall));
    assert!(off_by < Duration::from_millis(300), "off by {off_by:?}");
}

#[test]
fn overrun_is_recorded_as_lost_and_clears_the_cache() {
    let (tracker, capture) = capturing_tracker(None);
    tracker.identify(own_tid());
    assert_eq!(tracker.stats().cached_threads, 1);
    let handler = EventHandler::new(Arc::clone(&tracker.tracking));
    handler.on_overrun();
    assert_eq!(tracker.stats().cached_threads, 0);
    assert_eq!(tracker.stats().lost, 1);
    assert!(capture.records().iter().any(|r| matches!(
        r,
        Record::Lost(lost) if lost.source == "proc-connector" && lost.count == 1
    )));
}

/// What happened before a stop is in the log even when the connector thread had fallen
/// behind: the events still queued on its socket are handled on the way out.
#[test]
fn events_queued_at_stop_are_handled() {
    if !is_root() {
        eprintln!("skipped: the proc connector needs root");
        return;
    }
    let (tracker, capture) = capturing_tracker(None);
    tracker.identify(own_tid());
    let socket = ConnectorSocket::open_with_buffer(1 << 20).expect("open the connector socket");
    socket
        .send_mcast_op(PROC_CN_MCAST_LISTEN, 1)
        .expect("subscribe");
    let mut child = Command::new("true").spawn().expect("run true");
    let child_pid = child.id();
    let _ = child.wait();
    let mut handler = EventHandler::new(Arc::clone(&tracker.tracking));
    let mut subscription = connector::SubscriptionWatch {
        request_ack: 1,
        report: None,
    };
    let mut buffer = vec![0u8; 16 * 1024];
    connector::handle_queued_events(
        &socket,
        &mut handler,
        &mut subscription,
        &mut buffer,
        monotonic_now_ns(),
    );
    handler.flush_all_exits();
    let _ = socket.send_mcast_op(connector::PROC_CN_MCAST_IGNORE, 0);
    tracker.stop();
    assert_eq!(
        lifecycle(&capture.records(), child_pid),
        ["fork thread=false", "exec", "exit 0"]
    );
}

#[test]
fn small_receive_buffer_overruns_with_enobufs() {
    if !is_root() {
        eprintln!("skipped: the proc connector needs root");
        return;
    }
    let socket = ConnectorSocket::open_with_buffer(1).expect("open the connector socket");
    socket
        .send_mcast_op(PROC_CN_MCAST_LISTEN, 1)
        .expect("subscribe");
    for _ in 0..50 {
        let _ = Command::new("true").status();
    }
    let mut buffer = vec![0u8; 16 * 1024];
    let mut overrun = false;
    for _ in 0..10_000 {
        match socket.receive(&mut buffer).expect("receive") {
            connector::Received::Overrun => {
                overrun = true;
                break;
            }
            connector::Received::Nothing => break,
            connector::Received::Datagram(_) => {}
        }
    }
    let _ = socket.send_mcast_op(connector::PROC_CN_MCAST_IGNORE, 0);
    assert!(overrun, "a tiny buffer must overflow");
}
