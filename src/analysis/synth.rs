//! Synthetic logs for the analysis benchmark (`depsetfs __synth-log`, used by
//! bench/analysis.sh): a deterministic mix shaped like a real trace. A tree of processes that
//! fork and exec; each reads popular files (shared libraries, a few thousand) far more often
//! than the long tail of tens of thousands of others; lookups and getattrs dominate, then
//! reads; a tenth of the lookups fail; some processes write files that later ones read. Only
//! the shape matters: the paths do not exist on the machine. With a [`SynthHost`] (bench/merge.sh)
//! the log is one host of several: its header names `hostN` with address `10.9.0.N`, every
//! 20th process listens on a port, and every 5th connects to a listener of the next host, so
//! that a merge of the hosts' logs has cross-host connections to match.

use std::path::Path;

use crate::log::{LogError, LogWriter};
use crate::record::{
    Access, ExecEvent, ExitEvent, FileKind, ForkEvent, LOG_FORMAT_VERSION, LOG_MAGIC, LogHeader,
    NetCall, NetEvent, NetFamily, Op, ProcessInfo, Record, intent,
};

/// What to generate.
#[derive(Clone, Copy, Debug)]
pub struct SynthSpec {
    pub records: u64,
    pub files: u64,
    pub processes: u64,
    /// Each access is written this many times (as a log does when a use recurs in several
    /// flush intervals): more events over the same distinct edges.
    pub repeat: u64,
}

/// The log as host `index` (1-based) of `hosts`.
#[derive(Clone, Copy, Debug)]
pub struct SynthHost {
    pub index: u32,
    pub hosts: u32,
}

impl SynthHost {
    fn name(self) -> String {
        format!("host{}", self.index)
    }

    fn address(index: u32) -> String {
        format!("10.9.{}.{}", index / 250, index % 250 + 1)
    }

    /// The net records of process `index` (pid, start) at `ts`.
    fn net(self, index: u64, pid: u32, start: u64, ts: u64) -> Vec<Record> {
        let event = |call, address: String, ts_ns| {
            Record::Net(NetEvent {
                ts_ns,
                pid,
                tid: pid,
                start,
                call,
                family: NetFamily::Inet,
                address,
                fd: 3,
                socket_type: Some("stream".to_string()),
            })
        };
        let port = |process: u64| 5000 + process;
        if index % 20 == 0 {
            let bound = format!("0.0.0.0:{}", port(index));
            vec![
                event(NetCall::Bind, bound.clone(), ts),
                event(NetCall::Listen, bound, ts),
            ]
        } else if index % 5 == 0 {
            let next = self.index % self.hosts.max(1) + 1;
            let server = index / 20 * 20;
            let target = format!("{}:{}", SynthHost::address(next - 1), port(server));
            vec![event(NetCall::Connect, target, ts + 5_000_000)]
        } else {
            Vec::new()
        }
    }
}

/// A small deterministic generator (xorshift64*), so every run writes the same log.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

const BOOT_NS: u64 = 1_700_000_000_000_000_000;
const TICK_NS: u64 = 10_000_000;

/// Writes a synthetic log of about `spec.records` records to `path`.
pub fn write_synthetic_log(path: &Path, spec: SynthSpec) -> Result<(), LogError> {
    write_synthetic_host_log(path, spec, None)
}

/// [`write_synthetic_log`] as one host of several.
pub fn write_synthetic_host_log(
    path: &Path,
    spec: SynthSpec,
    host: Option<SynthHost>,
) -> Result<(), LogError> {
    let mut header = header();
    if let Some(host) = host {
        header.host = host.name();
        header.label = Some(host.name());
        header.addresses = vec![SynthHost::address(host.index - 1)];
        header.network_recorded = true;
    }
    let mut writer = LogWriter::create(path, &header)?;
    let mut random = Random(0x9e37_79b9_7f4a_7c15);
    let per_process = (spec.records / spec.processes.max(1)).max(1);
    let mut written = 0u64;
    for index in 0..spec.processes {
        let pid = 1000 + index as u32;
        let start = 100 + index;
        let t0 = BOOT_NS + start * TICK_NS;
        for record in lifecycle(index, pid, start, t0) {
            writer.append(&record)?;
            written += 1;
        }
        for record in host.map_or_else(Vec::new, |host| host.net(index, pid, start, t0 + 1_500_000))
        {
            writer.append(&record)?;
            written += 1;
        }
        let budget = per_process.saturating_sub(5);
        let repeat = spec.repeat.max(1);
        for step in 0..budget / repeat {
            let access = synthetic_access(&mut random, spec, pid, start, t0 + 2_000_000 + step);
            let record = Record::Access(access);
            for _ in 0..repeat {
                writer.append(&record)?;
                written += 1;
            }
        }
        writer.append(&Record::Exit(ExitEvent {
            ts_ns: t0 + 9_000_000,
            pid,
            status: 0,
        }))?;
        written += 1;
        if written >= spec.records {
            break;
        }
    }
    writer.flush()
}

fn header() -> LogHeader {
    LogHeader {
        magic: LOG_MAGIC.to_string(),
        version: LOG_FORMAT_VERSION,
        source: "/".to_string(),
        mountpoint: "/nonexistent/depsetfs-bench".to_string(),
        host: "synthetic".to_string(),
        kernel: "synthetic".to_string(),
        started_ns: BOOT_NS,
        boot_time_ns: BOOT_NS,
        clock_ticks: 100,
        fidelity: "full".to_string(),
        network_recorded: false,
        command: None,
        label: None,
        runs: Vec::new(),
        image: None,
        addresses: Vec::new(),
        addresses_from: String::new(),
    }
}

/// Fork from the parent (a tree of fan-out 4), process record, exec, process record.
fn lifecycle(index: u64, pid: u32, start: u64, t0: u64) -> Vec<Record> {
    let parent = 1000 + (index / 4) as u32;
    let info = |exe: &str, seen_ns| ProcessInfo {
        pid,
        start,
        ppid: parent,
        exe: exe.as_bytes().to_vec(),
        argv: vec![exe.to_string(), format!("--job={index}")],
        uid: 0,
        gid: 0,
        seen_ns,
    };
    vec![
        Record::Fork(ForkEvent {
            ts_ns: t0,
            parent,
            child: pid,
            thread: false,
        }),
        Record::Process(info("/usr/bin/sh", t0 + 1)),
        Record::Exec(ExecEvent {
            ts_ns: t0 + 1_000_000,
            pid,
        }),
        Record::Process(info(
            &format!("/usr/bin/tool{}", index % 50),
            t0 + 1_000_001,
        )),
    ]
}

fn synthetic_access(random: &mut Random, spec: SynthSpec, pid: u32, start: u64, ts: u64) -> Access {
    // A third of the picks come from the 2% most popular files.
    let popular = (spec.files / 50).max(1);
    let file = if random.below(3) == 0 {
        random.below(popular)
    } else {
        random.below(spec.files)
    };
    let roll = random.below(100);
    let (op, access_intent, errno) = match roll {
        0..=39 => (
            Op::Lookup,
            0,
            if random.below(10) == 0 {
                libc::ENOENT
            } else {
                0
            },
        ),
        40..=59 => (Op::Getattr, 0, 0),
        60..=79 => (Op::Read, intent::READ, 0),
        80..=87 => (Op::Open, intent::READ, 0),
        88..=94 => (Op::Write, intent::WRITE, 0),
        95..=97 => (Op::Create, intent::WRITE | intent::CREATE, 0),
        _ => (Op::Readlink, 0, 0),
    };
    let path = format!("/usr/lib/synthetic/d{}/f{}", file % 500, file);
    Access {
        pid,
        tid: pid,
        start,
        op,
        path: path.into_bytes(),
        target: None,
        errno,
        intent: access_intent,
        kind: if errno == 0 {
            FileKind::File
        } else {
            FileKind::Unknown
        },
        count: 1 + random.below(4),
        bytes: if op == Op::Read || op == Op::Write {
            4096
        } else {
            0
        },
        first_ns: ts,
        last_ns: ts,
    }
}
