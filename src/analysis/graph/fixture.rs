//! Synthetic traces for the analysis tests: a header whose clock makes start tick N begin at
//! N * 10 ms, and one-line helpers for the records a real log holds.

use crate::event::{
    Access, ExecEvent, ExitEvent, FileKind, ForkEvent, LOG_FORMAT_VERSION, LOG_MAGIC, LogHeader,
    NetCall, NetEvent, NetFamily, Op, ProcessInfo, Record, TimeNs, TracedCommand,
};

/// Milliseconds as log time.
pub const MS: TimeNs = 1_000_000;

pub struct Trace {
    pub header: LogHeader,
    pub records: Vec<Record>,
}

/// A process in a trace: pid and start tick (it starts at `start * 10 ms`).
#[derive(Clone, Copy)]
pub struct Proc {
    pub pid: u32,
    pub start: u64,
}

impl Trace {
    pub fn new(source: &str) -> Trace {
        Trace {
            header: LogHeader {
                magic: LOG_MAGIC.to_string(),
                version: LOG_FORMAT_VERSION,
                source: source.to_string(),
                mountpoint: "/nonexistent-mountpoint".to_string(),
                host: "test".to_string(),
                kernel: "6.0".to_string(),
                started_ns: 0,
                boot_time_ns: 0,
                clock_ticks: 100,
                fidelity: "full".to_string(),
                network_recorded: false,
                command: None,
            },
            records: Vec::new(),
        }
    }

    /// A socket call of `p` at `at_ms` (`call`: connect, bind, listen, accept).
    pub fn net(&mut self, p: Proc, call: NetCall, address: &str, socket_type: &str, at_ms: u64) {
        let family = if address.starts_with('@') {
            NetFamily::Unix
        } else if address.starts_with('[') {
            NetFamily::Inet6
        } else {
            NetFamily::Inet
        };
        self.records.push(Record::Net(NetEvent {
            ts_ns: at_ms * MS,
            pid: p.pid,
            tid: p.pid,
            start: p.start,
            call,
            family,
            address: address.to_string(),
            fd: 3,
            socket_type: Some(socket_type.to_string()),
        }));
    }

    pub fn command(&mut self, pid: u32) {
        self.header.command = Some(TracedCommand {
            argv: vec!["cmd".to_string()],
            cwd: "/".to_string(),
            pid,
        });
    }

    /// A process record seen at `at_ms`.
    pub fn info(&mut self, p: Proc, ppid: u32, exe: &str, argv: &str, at_ms: u64) {
        self.records.push(Record::Process(ProcessInfo {
            pid: p.pid,
            start: p.start,
            ppid,
            exe: exe.as_bytes().to_vec(),
            argv: argv.split(' ').map(str::to_string).collect(),
            uid: 0,
            gid: 0,
            seen_ns: at_ms * MS,
        }));
    }

    pub fn fork(&mut self, parent: Proc, child: Proc, at_ms: u64) {
        self.records.push(Record::Fork(ForkEvent {
            ts_ns: at_ms * MS,
            parent: parent.pid,
            child: child.pid,
            thread: false,
        }));
    }

    pub fn exec(&mut self, p: Proc, at_ms: u64) {
        self.records.push(Record::Exec(ExecEvent {
            ts_ns: at_ms * MS,
            pid: p.pid,
        }));
    }

    pub fn exit(&mut self, p: Proc, at_ms: u64) {
        self.records.push(Record::Exit(ExitEvent {
            ts_ns: at_ms * MS,
            pid: p.pid,
            status: 0,
        }));
    }

    /// fork + process record of the child + exec + process record of the new image.
    pub fn spawn(&mut self, parent: Proc, child: Proc, exe: &str, argv: &str, at_ms: u64) {
        self.fork(parent, child, at_ms);
        self.exec(child, at_ms + 1);
        self.info(child, parent.pid, exe, argv, at_ms + 1);
        self.access(child, Op::Open, exe, exec_intent(), FileKind::File, at_ms);
    }

    #[allow(clippy::too_many_arguments)]
    pub fn access_full(
        &mut self,
        p: Proc,
        op: Op,
        path: &str,
        target: Option<&str>,
        intent: u32,
        kind: FileKind,
        errno: i32,
        first_ms: u64,
        last_ms: u64,
    ) {
        self.records.push(Record::Access(Access {
            pid: p.pid,
            tid: p.pid,
            start: p.start,
            op,
            path: path.as_bytes().to_vec(),
            target: target.map(|target| target.as_bytes().to_vec()),
            errno,
            intent,
            kind,
            count: 1,
            bytes: 0,
            first_ns: first_ms * MS,
            last_ns: last_ms * MS,
        }));
    }

    pub fn access(&mut self, p: Proc, op: Op, path: &str, intent: u32, kind: FileKind, at_ms: u64) {
        self.access_full(p, op, path, None, intent, kind, 0, at_ms, at_ms);
    }

    pub fn read(&mut self, p: Proc, path: &str, at_ms: u64) {
        self.access(
            p,
            Op::Open,
            path,
            crate::event::intent::READ,
            FileKind::File,
            at_ms,
        );
    }

    pub fn write(&mut self, p: Proc, path: &str, at_ms: u64) {
        use crate::event::intent::{CREATE, TRUNCATE, WRITE};
        self.access(
            p,
            Op::Create,
            path,
            WRITE | CREATE | TRUNCATE,
            FileKind::File,
            at_ms,
        );
        self.access(p, Op::Write, path, WRITE, FileKind::File, at_ms);
    }

    pub fn missing(&mut self, p: Proc, path: &str, at_ms: u64) {
        let enoent = libc::ENOENT;
        self.access_full(
            p,
            Op::Lookup,
            path,
            None,
            0,
            FileKind::Unknown,
            enoent,
            at_ms,
            at_ms,
        );
    }

    pub fn graph(&self) -> crate::analysis::graph::Graph {
        crate::analysis::graph::build::graph_from_records(&self.header, &self.records)
    }
}

pub fn exec_intent() -> u32 {
    crate::event::intent::READ | crate::event::intent::EXEC
}
