//! Recording that never makes a FUSE request wait for the disk. FUSE request threads hand
//! [`Access`] values and other [`Record`]s to a [`Recorder`], which only queues them; one writer
//! thread ("depsetfs-log") owns the [`LogWriter`], merges identical accesses within each flush
//! interval, and at the end of every interval writes the interval's records and pushes them to
//! the kernel, so that a kill -9 loses at most about one interval. Write errors are counted and
//! reported on stderr; they never stop recording.

use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::log::{LogError, LogWriter};
use crate::record::{
    Access, FileKind, LOST_TO_WRITE_ERRORS, LogEnd, LostEvents, Op, Record, TimeNs, now_ns,
};

/// How long the writer thread sleeps between drains of the queue.
const DRAIN_PERIOD: Duration = Duration::from_millis(20);

const WRITER_THREAD_NAME: &str = "depsetfs-log";
/// A zero interval would make the writer thread spin.
const SHORTEST_FLUSH_INTERVAL: Duration = Duration::from_millis(1);
/// Keeps deadline arithmetic (`Instant + interval`) far from overflow.
const LONGEST_FLUSH_INTERVAL: Duration = Duration::from_secs(24 * 3600);

/// Counters of a [`Recorder`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecorderStats {
    /// Accepted [`Recorder::access`] calls (before merging).
    pub events: u64,
    /// Records handed to the kernel (after merging; the header is not counted).
    pub records_written: u64,
    /// Failed appends or flushes.
    pub write_errors: u64,
}

/// The handle FUSE request threads record through. Cheap to clone; all clones feed the same
/// writer thread.
#[derive(Clone)]
pub struct Recorder {
    shared: Arc<Shared>,
}

struct Shared {
    queue: Sender<Message>,
    finished: AtomicBool,
    counters: Arc<Counters>,
    log_path: PathBuf,
    shutdown: Mutex<Shutdown>,
}

struct Shutdown {
    writer_thread: Option<JoinHandle<Result<(), LogError>>>,
    /// Set by the first [`Recorder::finish`]; later calls return it.
    final_stats: Option<RecorderStats>,
}

#[derive(Default)]
struct Counters {
    events: AtomicU64,
    records_written: AtomicU64,
    write_errors: AtomicU64,
}

enum Message {
    Access(Access),
    Record(Record),
    /// Write what is queued now, then say so (`depsetfs dump` of a live mount).
    Flush(Sender<()>),
    Finish,
}

impl Recorder {
    /// Starts the writer thread, which owns `writer` from now on and writes at least every
    /// `flush_interval` (kept between 1 ms and 1 day).
    pub fn start(writer: LogWriter, flush_interval: Duration) -> io::Result<Recorder> {
        let (queue, receiver) = mpsc::channel();
        let counters = Arc::new(Counters::default());
        let log_path = writer.path().to_path_buf();
        let writer_thread = WriterThread {
            writer,
            receiver,
            flush_interval: flush_interval.clamp(SHORTEST_FLUSH_INTERVAL, LONGEST_FLUSH_INTERVAL),
            counters: Arc::clone(&counters),
            batch: Batch::default(),
            unannounced_losses: 0,
            ending: false,
        };
        let handle = thread::Builder::new()
            .name(WRITER_THREAD_NAME.to_string())
            .spawn(move || writer_thread.run())?;
        Ok(Recorder {
            shared: Arc::new(Shared {
                queue,
                finished: AtomicBool::new(false),
                counters,
                log_path,
                shutdown: Mutex::new(Shutdown {
                    writer_thread: Some(handle),
                    final_stats: None,
                }),
            }),
        })
    }

    /// Records one FUSE request. Only queues it: no I/O, no lock.
    pub fn access(&self, access: Access) {
        if self.shared.finished.load(Ordering::Acquire) {
            return;
        }
        // Sending fails only once the writer thread is gone, i.e. after finish: then the
        // access is dropped, as documented.
        if self.shared.queue.send(Message::Access(access)).is_ok() {
            self.shared.counters.events.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records a process, fork, exec, exit or lost-events record. Never merged; written in the
    /// order received.
    pub fn record(&self, record: Record) {
        if self.shared.finished.load(Ordering::Acquire) {
            return;
        }
        let _ = self.shared.queue.send(Message::Record(record));
    }

    /// Writes everything queued so far, flushes, and stops the writer thread. Later
    /// `access`/`record` calls are dropped. The first call returns the error of the final write,
    /// if any (earlier ones are only counted); every later call returns the stats the first one
    /// saw.
    pub fn finish(&self) -> Result<RecorderStats, LogError> {
        let mut shutdown = self
            .shared
            .shutdown
            .lock()
            .expect("recorder shutdown lock poisoned: an earlier finish() panicked");
        if let Some(stats) = shutdown.final_stats {
            return Ok(stats);
        }
        self.shared.finished.store(true, Ordering::Release);
        // Fails only if the thread has already ended; joining it below is all that is left.
        let _ = self.shared.queue.send(Message::Finish);
        let outcome = match shutdown.writer_thread.take() {
            Some(handle) => handle
                .join()
                .unwrap_or_else(|_| Err(writer_thread_panicked(&self.shared.log_path))),
            None => Ok(()),
        };
        let stats = self.stats();
        shutdown.final_stats = Some(stats);
        outcome.map(|()| stats)
    }

    /// Writes everything queued so far and pushes it to the kernel, out of the interval's
    /// schedule; waits at most `limit`. False if the writer did not confirm in time.
    pub fn flush(&self, limit: Duration) -> bool {
        let (done, confirmed) = mpsc::channel();
        self.shared.queue.send(Message::Flush(done)).is_ok()
            && confirmed.recv_timeout(limit).is_ok()
    }

    pub fn stats(&self) -> RecorderStats {
        let counters = &self.shared.counters;
        RecorderStats {
            events: counters.events.load(Ordering::Relaxed),
            records_written: counters.records_written.load(Ordering::Relaxed),
            write_errors: counters.write_errors.load(Ordering::Relaxed),
        }
    }
}

fn writer_thread_panicked(log_path: &std::path::Path) -> LogError {
    LogError::Io {
        path: log_path.to_path_buf(),
        source: io::Error::other("the log writer thread panicked"),
    }
}

/// What makes two accesses the same for merging: everything but the thread, the counters and
/// the times.
#[derive(PartialEq, Eq, Hash)]
struct AccessKey {
    pid: u32,
    start: u64,
    op: Op,
    path: Vec<u8>,
    target: Option<Vec<u8>>,
    errno: i32,
    intent: u32,
    kind: FileKind,
}

/// What merging adds up.
struct AccessTally {
    /// The thread of the first access merged.
    tid: u32,
    count: u64,
    bytes: u64,
    first_ns: TimeNs,
    last_ns: TimeNs,
}

impl AccessTally {
    fn absorb(&mut self, later: &AccessTally) {
        self.count = self.count.saturating_add(later.count);
        self.bytes = self.bytes.saturating_add(later.bytes);
        self.first_ns = self.first_ns.min(later.first_ns);
        self.last_ns = self.last_ns.max(later.last_ns);
    }
}

/// Splits an access into its merge key and its tally, moving (not copying) the paths.
fn split_access(access: Access) -> (AccessKey, AccessTally) {
    let Access {
        pid,
        tid,
        start,
        op,
        path,
        target,
        errno,
        intent,
        kind,
        count,
        bytes,
        first_ns,
        last_ns,
    } = access;
    let key = AccessKey {
        pid,
        start,
        op,
        path,
        target,
        errno,
        intent,
        kind,
    };
    let tally = AccessTally {
        tid,
        count,
        bytes,
        first_ns,
        last_ns,
    };
    (key, tally)
}

fn join_access(key: AccessKey, tally: AccessTally) -> Access {
    Access {
        pid: key.pid,
        tid: tally.tid,
        start: key.start,
        op: key.op,
        path: key.path,
        target: key.target,
        errno: key.errno,
        intent: key.intent,
        kind: key.kind,
        count: tally.count,
        bytes: tally.bytes,
        first_ns: tally.first_ns,
        last_ns: tally.last_ns,
    }
}

/// What one flush interval received: its memory grows with distinct accesses per interval,
/// not with the number of requests.
#[derive(Default)]
struct Batch {
    records: Vec<Record>,
    accesses: HashMap<AccessKey, AccessTally>,
}

impl Batch {
    fn add_access(&mut self, access: Access) {
        let (key, tally) = split_access(access);
        self.accesses
            .entry(key)
            .and_modify(|merged| merged.absorb(&tally))
            .or_insert(tally);
    }

    /// Empties the batch: the other records in arrival order, then the merged accesses by the
    /// time of their first request.
    fn take_records(&mut self) -> Vec<Record> {
        let mut accesses: Vec<Access> = self
            .accesses
            .drain()
            .map(|(key, tally)| join_access(key, tally))
            .collect();
        accesses.sort_by_key(|access| access.first_ns);
        let mut records = std::mem::take(&mut self.records);
        records.extend(accesses.into_iter().map(Record::Access));
        records
    }
}

struct WriterThread {
    writer: LogWriter,
    receiver: Receiver<Message>,
    flush_interval: Duration,
    counters: Arc<Counters>,
    batch: Batch,
    /// Records discarded by failed writes that no [`LostEvents`] marker on disk counts yet.
    unannounced_losses: u64,
    /// The next batch is the last: it ends with [`Record::End`].
    ending: bool,
}

impl WriterThread {
    /// Returns the outcome of the last write, done when told to finish or when every
    /// [`Recorder`] is gone.
    fn run(mut self) -> Result<(), LogError> {
        let mut next_flush = Instant::now() + self.flush_interval;
        loop {
            // Drain, then sleep instead of blocking in recv: a blocked receiver makes every
            // send() on a FUSE request thread pay for a wake-up; a sleeping one costs nothing.
            loop {
                match self.receiver.try_recv() {
                    Ok(Message::Access(access)) => self.batch.add_access(access),
                    Ok(Message::Record(record)) => self.batch.records.push(record),
                    Ok(Message::Flush(done)) => {
                        // Already counted and reported, like an interval's write.
                        let _ = self.write_batch();
                        let _ = done.send(());
                    }
                    Ok(Message::Finish) | Err(TryRecvError::Disconnected) => {
                        // Stopping in order: the end record, written after everything else,
                        // tells readers that nothing is missing.
                        self.ending = true;
                        return self.write_batch();
                    }
                    Err(TryRecvError::Empty) => break,
                }
            }
            let now = Instant::now();
            if now >= next_flush {
                // Already counted and reported; recording goes on.
                let _ = self.write_batch();
                next_flush = Instant::now() + self.flush_interval;
            }
            let until_flush = next_flush.saturating_duration_since(Instant::now());
            std::thread::sleep(until_flush.min(DRAIN_PERIOD));
        }
    }

    /// Writes the batch and flushes it to the kernel, after a [`LostEvents`] marker if earlier
    /// batches were lost. Errors are counted and reported here (one stderr line per batch);
    /// the first is returned.
    fn write_batch(&mut self) -> Result<(), LogError> {
        let mut errors = BatchErrors::default();
        let flushed_before = self.writer.records_flushed();
        let discarded_before = self.writer.records_discarded();
        let marker_sent = self.unannounced_losses > 0;
        if marker_sent {
            let marker = lost_to_write_errors(self.unannounced_losses);
            errors.note_outcome(self.writer.append(&marker));
        }
        let mut records = self.batch.take_records();
        if self.ending {
            records.push(Record::End(LogEnd { ts_ns: now_ns() }));
        }
        for record in records {
            errors.note_outcome(self.writer.append(&record));
        }
        errors.note_outcome(self.writer.flush());
        self.account_for_losses(marker_sent, flushed_before, discarded_before);
        self.counters
            .records_written
            .store(self.writer.records_flushed(), Ordering::Relaxed);
        self.counters
            .write_errors
            .fetch_add(errors.count, Ordering::Relaxed);
        errors.report_and_return()
    }

    /// Keeps the number of records failed writes discarded until a marker saying so is on
    /// disk. The writer's buffer is empty when a batch starts, so the marker, appended first,
    /// reached the file exactly when any record of the batch did.
    fn account_for_losses(
        &mut self,
        marker_sent: bool,
        flushed_before: u64,
        discarded_before: u64,
    ) {
        let marker_written = marker_sent && self.writer.records_flushed() > flushed_before;
        if marker_written {
            self.unannounced_losses = 0;
        }
        let mut discarded = self.writer.records_discarded() - discarded_before;
        if marker_sent && !marker_written {
            // The marker itself was discarded: it is not a lost event; it is retried.
            discarded = discarded.saturating_sub(1);
        }
        self.unannounced_losses += discarded;
    }
}

fn lost_to_write_errors(count: u64) -> Record {
    Record::Lost(LostEvents {
        ts_ns: now_ns(),
        source: LOST_TO_WRITE_ERRORS.to_string(),
        count,
    })
}

#[derive(Default)]
struct BatchErrors {
    first: Option<LogError>,
    count: u64,
}

impl BatchErrors {
    fn note_outcome(&mut self, outcome: Result<(), LogError>) {
        if let Err(error) = outcome {
            self.count += 1;
            self.first.get_or_insert(error);
        }
    }

    fn report_and_return(self) -> Result<(), LogError> {
        match self.first {
            None => Ok(()),
            Some(error) => {
                eprintln!(
                    "depsetfs: writing the log failed ({} errors in this interval, recording goes on): {error}",
                    self.count
                );
                Err(error)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::records::{ScratchDir, access, header};
    use crate::log::read_log;
    use crate::record::{ExecEvent, ExitEvent, ForkEvent, intent};

    /// Long enough that a test's records all fall into one interval.
    const ONE_INTERVAL: Duration = Duration::from_secs(3600);

    fn start_recorder(dir: &ScratchDir, flush_interval: Duration) -> (Recorder, PathBuf) {
        let path = dir.file("log");
        let writer = LogWriter::create(&path, &header()).expect("create log");
        let recorder = Recorder::start(writer, flush_interval).expect("start recorder");
        (recorder, path)
    }

    fn accesses_in(path: &std::path::Path) -> Vec<Access> {
        read_log(path)
            .expect("read log")
            .records
            .into_iter()
            .filter_map(|record| match record {
                Record::Access(access) => Some(access),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn identical_accesses_in_one_interval_merge() {
        let dir = ScratchDir::new("merge");
        let (recorder, path) = start_recorder(&dir, ONE_INTERVAL);
        let read = |tid, count, bytes, first_ns, last_ns| Access {
            op: Op::Read,
            tid,
            count,
            bytes,
            first_ns,
            last_ns,
            ..access(10, b"/usr/lib/libc.so.6")
        };
        recorder.access(read(11, 1, 100, 50, 60));
        recorder.access(read(12, 2, 10, 40, 45));
        recorder.access(read(13, 1, 0, 70, 90));
        let stats = recorder.finish().expect("finish");

        let merged = read(11, 4, 110, 40, 90);
        assert_eq!(accesses_in(&path), vec![merged]);
        assert_eq!(
            stats,
            RecorderStats {
                events: 3,
                // The access and the end record.
                records_written: 2,
                write_errors: 0
            }
        );
    }

    #[test]
    fn accesses_differing_in_any_key_field_stay_apart() {
        let dir = ScratchDir::new("keys");
        let (recorder, path) = start_recorder(&dir, ONE_INTERVAL);
        let base = access(10, b"/etc/hosts");
        let variants = vec![
            base.clone(),
            Access {
                pid: 11,
                ..base.clone()
            },
            Access {
                start: 1,
                ..base.clone()
            },
            Access {
                op: Op::Lookup,
                ..base.clone()
            },
            Access {
                path: b"/etc/hostname".to_vec(),
                ..base.clone()
            },
            Access {
                target: Some(b"/etc/hosts.new".to_vec()),
                ..base.clone()
            },
            Access {
                errno: libc::EACCES,
                ..base.clone()
            },
            Access {
                intent: intent::READ | intent::EXEC,
                ..base.clone()
            },
            Access {
                kind: FileKind::Symlink,
                ..base.clone()
            },
        ];
        for (order, variant) in variants.iter().enumerate() {
            recorder.access(Access {
                first_ns: order as u64,
                last_ns: order as u64,
                ..variant.clone()
            });
            // A different thread and time do not split a key.
            recorder.access(Access {
                tid: 999,
                first_ns: 1000,
                last_ns: 1000,
                ..variant.clone()
            });
        }
        recorder.finish().expect("finish");

        let written = accesses_in(&path);
        assert_eq!(written.len(), variants.len());
        for (order, (written, variant)) in written.iter().zip(&variants).enumerate() {
            let expected = Access {
                count: 2,
                first_ns: order as u64,
                last_ns: 1000,
                ..variant.clone()
            };
            assert_eq!(written, &expected, "accesses are written by first_ns");
        }
    }

    #[test]
    fn other_records_keep_their_order_and_are_never_merged() {
        let dir = ScratchDir::new("order");
        let (recorder, path) = start_recorder(&dir, ONE_INTERVAL);
        let fork = Record::Fork(ForkEvent {
            ts_ns: 1,
            parent: 1,
            child: 2,
            thread: false,
        });
        let exec = Record::Exec(ExecEvent { ts_ns: 2, pid: 2 });
        let exit = Record::Exit(ExitEvent {
            ts_ns: 3,
            pid: 2,
            status: 0,
        });
        recorder.access(access(2, b"/bin/sh"));
        for record in [&fork, &fork, &exec, &exit] {
            recorder.record(record.clone());
        }
        recorder.finish().expect("finish");

        let mut records = read_log(&path).expect("read log").records;
        assert!(
            matches!(records.pop(), Some(Record::End(_))),
            "the end record comes last, after the accesses"
        );
        let expected = vec![
            fork.clone(),
            fork,
            exec,
            exit,
            Record::Access(access(2, b"/bin/sh")),
        ];
        assert_eq!(records, expected);
    }

    #[test]
    fn finish_writes_everything_once_and_then_drops_new_records() {
        let dir = ScratchDir::new("finish");
        let (recorder, path) = start_recorder(&dir, ONE_INTERVAL);
        recorder.access(access(1, b"/a"));
        recorder.record(Record::Exec(ExecEvent { ts_ns: 1, pid: 1 }));
        let first = recorder.finish().expect("finish");
        assert_eq!(first.events, 1);
        assert_eq!(first.records_written, 3, "access, exec and end");

        recorder.access(access(1, b"/b"));
        recorder.record(Record::Exec(ExecEvent { ts_ns: 2, pid: 2 }));
        assert_eq!(recorder.finish().expect("second finish"), first);
        assert_eq!(recorder.stats(), first);
        assert_eq!(read_log(&path).expect("read log").records.len(), 3);
    }

    #[test]
    fn records_reach_the_file_every_interval_while_recording() {
        let dir = ScratchDir::new("periodic");
        let interval = Duration::from_millis(100);
        let (recorder, path) = start_recorder(&dir, interval);
        recorder.access(access(1, b"/etc/ld.so.cache"));
        thread::sleep(interval * 3);
        // Poll beyond that only so that a loaded machine does not fail the test.
        let deadline = Instant::now() + Duration::from_secs(10);
        while accesses_in(&path).is_empty() && Instant::now() < deadline {
            thread::sleep(interval);
        }
        assert_eq!(accesses_in(&path), vec![access(1, b"/etc/ld.so.cache")]);
        assert_eq!(recorder.stats().records_written, 1);

        // The same access in a later interval is a second record: readers add them up.
        recorder.access(access(1, b"/etc/ld.so.cache"));
        let stats = recorder.finish().expect("finish");
        assert_eq!(accesses_in(&path).len(), 2);
        assert_eq!(stats.records_written, 3, "two accesses and the end");
    }

    #[test]
    fn flush_writes_the_batch_before_the_interval_ends() {
        let dir = ScratchDir::new("flush");
        let (recorder, path) = start_recorder(&dir, ONE_INTERVAL);
        recorder.access(access(1, b"/etc/hostname"));
        assert!(
            recorder.flush(Duration::from_secs(10)),
            "the writer confirmed"
        );
        assert_eq!(accesses_in(&path), vec![access(1, b"/etc/hostname")]);
        recorder.finish().expect("finish");
    }

    #[test]
    fn clones_on_many_threads_feed_one_log() {
        let dir = ScratchDir::new("threads");
        let (recorder, path) = start_recorder(&dir, ONE_INTERVAL);
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let recorder = recorder.clone();
                thread::spawn(move || {
                    for _ in 0..1000 {
                        recorder.access(access(5, b"/usr/bin/env"));
                    }
                })
            })
            .collect();
        for handle in threads {
            handle.join().expect("sender thread");
        }
        let stats = recorder.finish().expect("finish");
        assert_eq!(stats.events, 4000);
        let written = accesses_in(&path);
        assert_eq!(written.len(), 1);
        assert_eq!(written[0].count, 4000);
    }

    fn wait_until(what: &str, condition: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !condition() {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn write_errors_are_counted_and_losses_announced_once_writing_works() {
        let dir = ScratchDir::new("errors");
        let path = dir.file("log");
        let mut writer = LogWriter::create(&path, &header()).expect("create log");
        let faults = Arc::new(AtomicBool::new(true));
        writer.inject_write_faults(Arc::clone(&faults));
        let recorder = Recorder::start(writer, Duration::from_millis(20)).expect("start recorder");

        for name in [b"/a", b"/b", b"/c"] {
            recorder.access(access(1, name));
        }
        // Two failed batches: the accesses, then at least one failed loss marker.
        wait_until("two writes failed", || recorder.stats().write_errors >= 2);
        assert!(accesses_in(&path).is_empty());

        faults.store(false, Ordering::Relaxed);
        wait_until("the marker is written", || {
            recorder.stats().records_written >= 1
        });
        recorder.access(access(1, b"/d"));
        recorder.finish().expect("finish");

        let records = read_log(&path).expect("read log").records;
        match &records[..] {
            [Record::Lost(marker), Record::Access(later), Record::End(_)] => {
                assert_eq!(marker.source, LOST_TO_WRITE_ERRORS);
                assert_eq!(marker.count, 3);
                assert_eq!(later, &access(1, b"/d"));
            }
            other => panic!("expected a loss marker and one access, got {other:?}"),
        }
    }

    #[test]
    fn failed_final_write_is_returned_by_the_first_finish() {
        let dir = ScratchDir::new("finalerror");
        let path = dir.file("log");
        let mut writer = LogWriter::create(&path, &header()).expect("create log");
        writer.inject_write_faults(Arc::new(AtomicBool::new(true)));
        let recorder = Recorder::start(writer, ONE_INTERVAL).expect("start recorder");
        recorder.access(access(1, b"/a"));
        assert!(matches!(recorder.finish(), Err(LogError::Io { .. })));
        let stats = recorder.finish().expect("later finish returns the stats");
        assert_eq!(
            stats,
            RecorderStats {
                events: 1,
                records_written: 0,
                write_errors: 1
            }
        );
        assert!(read_log(&path).expect("header intact").records.is_empty());
    }

    #[test]
    fn dropping_every_handle_still_writes_the_log() {
        let dir = ScratchDir::new("drop");
        let (recorder, path) = start_recorder(&dir, ONE_INTERVAL);
        recorder.access(access(1, b"/a"));
        drop(recorder);
        wait_until("the access is written", || !accesses_in(&path).is_empty());
        assert_eq!(accesses_in(&path), vec![access(1, b"/a")]);
    }

    #[test]
    fn recorder_can_be_shared_between_threads() {
        fn assert_send_sync<T: Send + Sync + Clone>() {}
        assert_send_sync::<Recorder>();
    }
}
