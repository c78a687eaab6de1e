//! Rendering for `depsetfs dump`: the log as JSON lines (one object per record, for jq and
//! scripts), and a deployment set as a plain path list (for tar, rsync `--files-from`) or as
//! one JSON document (with kinds, sizes, reasons and users, for tools and review). This module
//! also writes a strategy's set with its needed processes, stubs and outputs. It owns the
//! output shapes only; it computes nothing. Names are never lossy: JSON writes a name that is
//! not UTF-8 as its bytes, the path list escapes awkward bytes or ends each path with NUL
//! ([`crate::analysis::names`]). Every writer returns I/O errors (a closed pipe included) instead of
//! panicking.

use std::collections::{BTreeSet, HashMap};
use std::io::{self, BufWriter, Write};

use serde::Serialize;

use crate::analysis::closure::{DeploymentSet, SetEntry, SetUser};
use crate::analysis::graph::Graph;
use crate::analysis::names::{JsonName, escape};
use crate::analysis::paths::parent_of;
use crate::analysis::strategy::StrategySet;
use crate::log::LogContents;
use crate::record::{Access, ProcessInfo, Record, TimeNs, intent};

/// The header, then one line per record, then `{"type":"truncated","at":N}` when the log was
/// cut short.
pub fn write_events_jsonl(contents: &LogContents, out: &mut dyn Write) -> io::Result<()> {
    let mut out = BufWriter::new(out);
    write_line(&mut out, &Tagged::new("header", &contents.header))?;
    for record in &contents.records {
        write_record(&mut out, record)?;
    }
    if let Some(at) = contents.truncated_at {
        write_line(&mut out, &Tagged::new("truncated", &TruncatedAt { at }))?;
    }
    out.flush()
}

fn write_record(out: &mut dyn Write, record: &Record) -> io::Result<()> {
    match record {
        Record::Access(access) => write_line(out, &AccessLine::new(access)),
        Record::Process(info) => write_line(out, &ProcessLine::new(info)),
        Record::Fork(event) => write_line(out, &Tagged::new("fork", event)),
        Record::Exec(event) => write_line(out, &Tagged::new("exec", event)),
        Record::Exit(event) => write_line(out, &Tagged::new("exit", event)),
        Record::Lost(event) => write_line(out, &Tagged::new("lost", event)),
        Record::Net(event) => write_line(out, &Tagged::new("net", event)),
        Record::End(end) => write_line(out, &Tagged::new("end", end)),
        Record::Run(segment) => write_line(out, &Tagged::new("run", segment)),
    }
}

fn write_line(out: &mut dyn Write, value: &impl Serialize) -> io::Result<()> {
    serde_json::to_writer(&mut *out, value).map_err(io::Error::from)?;
    out.write_all(b"\n")
}

/// A record whose fields serialize as they are, preceded by its type.
#[derive(Serialize)]
struct Tagged<'a, T: Serialize> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(flatten)]
    fields: &'a T,
}

impl<'a, T: Serialize> Tagged<'a, T> {
    fn new(kind: &'static str, fields: &'a T) -> Tagged<'a, T> {
        Tagged { kind, fields }
    }
}

#[derive(Serialize)]
struct TruncatedAt {
    at: u64,
}

/// An [`Access`] with readable paths, op, intent and kind.
#[derive(Serialize)]
struct AccessLine<'a> {
    #[serde(rename = "type")]
    kind_of_record: &'static str,
    pid: u32,
    tid: u32,
    start: u64,
    op: &'static str,
    path: JsonName<'a>,
    target: Option<JsonName<'a>>,
    errno: i32,
    intent: Vec<&'static str>,
    kind: &'static str,
    count: u64,
    bytes: u64,
    first_ns: TimeNs,
    last_ns: TimeNs,
}

impl<'a> AccessLine<'a> {
    fn new(access: &'a Access) -> AccessLine<'a> {
        AccessLine {
            kind_of_record: "access",
            pid: access.pid,
            tid: access.tid,
            start: access.start,
            op: access.op.name(),
            path: JsonName(&access.path),
            target: access.target.as_deref().map(JsonName),
            errno: access.errno,
            intent: intent::names(access.intent),
            kind: access.kind.name(),
            count: access.count,
            bytes: access.bytes,
            first_ns: access.first_ns,
            last_ns: access.last_ns,
        }
    }
}

/// A [`ProcessInfo`] with its executable as text.
#[derive(Serialize)]
struct ProcessLine<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    pid: u32,
    start: u64,
    ppid: u32,
    exe: JsonName<'a>,
    argv: &'a [String],
    uid: u32,
    gid: u32,
    seen_ns: TimeNs,
}

impl<'a> ProcessLine<'a> {
    fn new(info: &'a ProcessInfo) -> ProcessLine<'a> {
        ProcessLine {
            kind: "process",
            pid: info.pid,
            start: info.start,
            ppid: info.ppid,
            exe: JsonName(&info.exe),
            argv: &info.argv,
            uid: info.uid,
            gid: info.gid,
            seen_ns: info.seen_ns,
        }
    }
}

/// How a list of paths is separated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathList {
    /// One [`escape`]d path per line: a newline or a byte that is not UTF-8 cannot split or
    /// merge lines.
    Lines,
    /// Each path as its exact bytes, followed by NUL (`-0`, for `xargs -0`, `tar --null -T`).
    Nul,
}

/// Writes `paths` in `form`.
pub fn write_paths<'a>(
    paths: impl IntoIterator<Item = &'a [u8]>,
    form: PathList,
    out: &mut dyn Write,
) -> io::Result<()> {
    let mut out = BufWriter::new(out);
    for path in paths {
        match form {
            PathList::Lines => {
                out.write_all(escape(path).as_bytes())?;
                out.write_all(b"\n")?;
            }
            PathList::Nul => {
                out.write_all(path)?;
                out.write_all(b"\0")?;
            }
        }
    }
    out.flush()
}

/// The set's paths in set order, in `form`.
pub fn write_set_paths(set: &DeploymentSet, form: PathList, out: &mut dyn Write) -> io::Result<()> {
    write_paths(
        set.entries.iter().map(|entry| entry.path.as_slice()),
        form,
        out,
    )
}

/// The whole set as one JSON document, followed by a newline.
pub fn write_set_json(set: &DeploymentSet, out: &mut dyn Write) -> io::Result<()> {
    let mut out = BufWriter::new(out);
    let document = SetDocument::of(set);
    serde_json::to_writer_pretty(&mut out, &document).map_err(io::Error::from)?;
    out.write_all(b"\n")?;
    out.flush()
}

/// A strategy's set as one JSON document: the set's fields, then the strategy, the needed
/// processes with why, the stubs, the outputs left out and what the rules excluded.
pub fn write_strategy_set_json(
    graph: &Graph,
    result: &StrategySet,
    out: &mut dyn Write,
) -> io::Result<()> {
    let mut out = BufWriter::new(out);
    let set = &result.set;
    let document = StrategyDocument {
        format: SAVED_SET_FORMAT,
        set: SetDocument::of(set),
        strategy: result.strategy.name(),
        needed: result
            .needed
            .processes()
            .filter_map(|process| {
                let node = &graph.processes[process];
                let why = result.needed.why[process].as_ref()?;
                Some(NeededJson {
                    pid: node.key.pid,
                    start: node.key.start,
                    exec_index: node.key.exec_index,
                    exe: JsonName(&node.exe),
                    argv: &node.argv,
                    why: why.describe(graph),
                })
            })
            .collect(),
        stubs: result
            .stubs
            .iter()
            .map(|stub| StubJson {
                path: JsonName(&stub.path),
                launched_by: graph.describe_process(stub.launched_by),
            })
            .collect(),
        outputs: result.outputs.iter().map(|path| JsonName(path)).collect(),
        excluded: result
            .excluded
            .iter()
            .map(|(path, glob)| ExcludedJson {
                path: JsonName(path),
                rule: glob,
            })
            .collect(),
    };
    serde_json::to_writer_pretty(&mut out, &document).map_err(io::Error::from)?;
    out.write_all(b"\n")?;
    out.flush()
}

/// The format key of a saved set (`dump --set --json`): `depsetfs-set N`. A document without
/// it is version 0 (the same shape, before the key existed); docs/set-algebra.md.
pub const SAVED_SET_FORMAT: &str = "depsetfs-set 1";

#[derive(Serialize)]
struct StrategyDocument<'a> {
    format: &'static str,
    #[serde(flatten)]
    set: SetDocument<'a>,
    strategy: &'static str,
    needed: Vec<NeededJson<'a>>,
    stubs: Vec<StubJson<'a>>,
    outputs: Vec<JsonName<'a>>,
    excluded: Vec<ExcludedJson<'a>>,
}

#[derive(Serialize)]
struct NeededJson<'a> {
    pid: u32,
    start: u64,
    exec_index: u32,
    exe: JsonName<'a>,
    argv: &'a [String],
    why: String,
}

#[derive(Serialize)]
struct StubJson<'a> {
    path: JsonName<'a>,
    launched_by: String,
}

#[derive(Serialize)]
struct ExcludedJson<'a> {
    path: JsonName<'a>,
    rule: &'a str,
}

#[derive(Serialize)]
struct SetDocument<'a> {
    entries: Vec<EntryJson<'a>>,
    required_devices: Vec<JsonName<'a>>,
    dropped_missing: usize,
}

impl<'a> SetDocument<'a> {
    fn of(set: &'a DeploymentSet) -> SetDocument<'a> {
        let runs = runs_of_entries(set);
        SetDocument {
            entries: set
                .entries
                .iter()
                .map(|entry| {
                    let runs = runs.get(entry.path.as_slice()).cloned().unwrap_or_default();
                    EntryJson::new(entry, runs)
                })
                .collect(),
            required_devices: set
                .required_devices
                .iter()
                .map(|path| JsonName(path))
                .collect(),
            dropped_missing: set.dropped_missing,
        }
    }
}

/// The labels of the runs that needed each entry: its users' runs, and for a directory also
/// those of every entry below it (a parent is needed by whoever needs what it holds).
fn runs_of_entries(set: &DeploymentSet) -> HashMap<&[u8], BTreeSet<&str>> {
    let mut runs: HashMap<&[u8], BTreeSet<&str>> = HashMap::new();
    for entry in &set.entries {
        let labels: BTreeSet<&str> = entry
            .users
            .iter()
            .map(|user| user.run.as_str())
            .filter(|run| !run.is_empty())
            .collect();
        if labels.is_empty() {
            continue;
        }
        let mut path = Some(entry.path.as_slice());
        while let Some(at) = path {
            let known = runs.entry(at).or_default();
            if at != entry.path.as_slice() && labels.is_subset(known) {
                break; // its ancestors have these runs already
            }
            known.extend(labels.iter().copied());
            path = parent_of(at);
        }
    }
    runs
}

#[derive(Serialize)]
struct EntryJson<'a> {
    path: JsonName<'a>,
    kind: &'static str,
    size: u64,
    reason: &'static str,
    /// The labels of the runs that needed the path (several in a merged log).
    runs: BTreeSet<&'a str>,
    users: Vec<UserJson<'a>>,
}

impl<'a> EntryJson<'a> {
    fn new(entry: &'a SetEntry, runs: BTreeSet<&'a str>) -> EntryJson<'a> {
        EntryJson {
            path: JsonName(&entry.path),
            kind: entry.kind.name(),
            size: entry.size,
            reason: entry.reason.name(),
            runs,
            users: entry.users.iter().map(UserJson::new).collect(),
        }
    }
}

#[derive(Serialize)]
struct UserJson<'a> {
    #[serde(skip_serializing_if = "str::is_empty")]
    run: &'a str,
    pid: u32,
    start: u64,
    exe: &'a str,
    ops: &'a [String],
}

impl<'a> UserJson<'a> {
    fn new(user: &'a SetUser) -> UserJson<'a> {
        UserJson {
            run: &user.run,
            pid: user.pid,
            start: user.start,
            exe: &user.exe,
            ops: &user.ops,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::closure::Reason;
    use crate::fixtures::header;
    use crate::record::{Access, ExecEvent, ExitEvent, FileKind, ForkEvent, LostEvents, Op};
    use serde_json::Value;

    fn one_of_each_record() -> Vec<Record> {
        let open = Access {
            pid: 42,
            tid: 43,
            start: 7,
            op: Op::Open,
            path: b"/usr/bin/app\xff".to_vec(),
            target: None,
            errno: 0,
            intent: intent::READ | intent::EXEC,
            kind: FileKind::File,
            count: 2,
            bytes: 0,
            first_ns: 10,
            last_ns: 11,
        };
        let info = ProcessInfo {
            pid: 42,
            start: 7,
            ppid: 1,
            exe: b"/usr/bin/app".to_vec(),
            argv: vec!["app".to_string(), "-v".to_string()],
            uid: 0,
            gid: 0,
            seen_ns: 9,
        };
        vec![
            Record::Process(info),
            Record::Access(open),
            Record::Fork(ForkEvent {
                ts_ns: 12,
                parent: 42,
                child: 44,
                thread: false,
            }),
            Record::Exec(ExecEvent { ts_ns: 13, pid: 44 }),
            Record::Exit(ExitEvent {
                ts_ns: 14,
                pid: 44,
                status: 256,
            }),
            Record::Lost(LostEvents {
                ts_ns: 15,
                source: "proc-connector".to_string(),
                count: 3,
            }),
        ]
    }

    fn parse_lines(bytes: &[u8]) -> Result<Vec<Value>, serde_json::Error> {
        String::from_utf8_lossy(bytes)
            .lines()
            .map(serde_json::from_str)
            .collect()
    }

    fn sample_set() -> DeploymentSet {
        let user = SetUser {
            run: "smoke".to_string(),
            pid: 42,
            start: 7,
            exe: "/usr/bin/app".to_string(),
            ops: vec!["open(read,exec)".to_string()],
        };
        let entry = |path: &[u8], kind, size, reason, users: Vec<SetUser>| SetEntry {
            path: path.to_vec(),
            kind,
            size,
            reason,
            users,
        };
        DeploymentSet {
            entries: vec![
                entry(b"/", FileKind::Dir, 0, Reason::Parent, vec![]),
                entry(
                    b"/usr/bin/app",
                    FileKind::File,
                    1234,
                    Reason::Used,
                    vec![user],
                ),
                entry(
                    b"/usr/share/caf\xe9",
                    FileKind::File,
                    5,
                    Reason::Used,
                    vec![],
                ),
            ],
            required_devices: vec![b"/dev/null".to_vec()],
            dropped_missing: 2,
        }
    }

    #[test]
    fn events_become_one_json_object_per_line() -> Result<(), Box<dyn std::error::Error>> {
        let contents = LogContents {
            header: header("/", "/mnt/depsetfs"),
            records: one_of_each_record(),
            truncated_at: Some(4096),
        };
        let mut out = Vec::new();
        write_events_jsonl(&contents, &mut out)?;
        let lines = parse_lines(&out)?;
        let types: Vec<&str> = lines
            .iter()
            .filter_map(|line| line["type"].as_str())
            .collect();
        assert_eq!(
            types,
            [
                "header",
                "process",
                "access",
                "fork",
                "exec",
                "exit",
                "lost",
                "truncated"
            ]
        );
        assert_eq!(lines[0]["mountpoint"], "/mnt/depsetfs");
        assert_eq!(lines[1]["exe"], "/usr/bin/app");
        assert_eq!(lines[1]["argv"], serde_json::json!(["app", "-v"]));
        let access = &lines[2];
        assert_eq!(access["op"], "open");
        // Not UTF-8: the exact bytes, with a readable approximation.
        assert_eq!(
            access["path"],
            serde_json::json!({"bytes": b"/usr/bin/app\xff", "lossy": "/usr/bin/app\u{fffd}"})
        );
        assert_eq!(access["target"], Value::Null);
        assert_eq!(access["intent"], serde_json::json!(["read", "exec"]));
        assert_eq!(access["kind"], "file");
        assert_eq!(access["count"], 2);
        assert_eq!(lines[3]["child"], 44);
        assert_eq!(lines[5]["status"], 256);
        assert_eq!(lines[6]["source"], "proc-connector");
        assert_eq!(lines[7]["at"], 4096);
        Ok(())
    }

    #[test]
    fn an_untruncated_log_has_no_truncated_line() -> Result<(), Box<dyn std::error::Error>> {
        let contents = LogContents {
            header: header("/", "/mnt/depsetfs"),
            records: Vec::new(),
            truncated_at: None,
        };
        let mut out = Vec::new();
        write_events_jsonl(&contents, &mut out)?;
        let lines = parse_lines(&out)?;
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0]["type"], "header");
        Ok(())
    }

    #[test]
    fn set_paths_are_escaped_lines_in_order() -> io::Result<()> {
        let mut out = Vec::new();
        write_set_paths(&sample_set(), PathList::Lines, &mut out)?;
        assert_eq!(out, b"/\n/usr/bin/app\n/usr/share/caf\\xe9\n");
        Ok(())
    }

    #[test]
    fn nul_separated_set_paths_are_the_exact_bytes() -> io::Result<()> {
        let mut set = sample_set();
        set.entries[1].path = b"/tmp/two\nlines".to_vec();
        let mut out = Vec::new();
        write_set_paths(&set, PathList::Nul, &mut out)?;
        assert_eq!(out, b"/\0/tmp/two\nlines\0/usr/share/caf\xe9\0");
        let mut lines = Vec::new();
        write_set_paths(&set, PathList::Lines, &mut lines)?;
        assert_eq!(lines, b"/\n/tmp/two\\nlines\n/usr/share/caf\\xe9\n");
        Ok(())
    }

    #[test]
    fn set_json_has_entries_devices_and_the_dropped_count() -> Result<(), Box<dyn std::error::Error>>
    {
        let mut out = Vec::new();
        write_set_json(&sample_set(), &mut out)?;
        let document: Value = serde_json::from_slice(&out)?;
        let app = &document["entries"][1];
        assert_eq!(app["path"], "/usr/bin/app");
        assert_eq!(app["kind"], "file");
        assert_eq!(app["size"], 1234);
        assert_eq!(app["reason"], "used");
        assert_eq!(app["users"][0]["pid"], 42);
        assert_eq!(app["users"][0]["run"], "smoke");
        assert_eq!(app["runs"], serde_json::json!(["smoke"]));
        assert_eq!(document["entries"][0]["runs"], serde_json::json!(["smoke"]));
        assert_eq!(document["entries"][2]["runs"], serde_json::json!([]));
        assert_eq!(app["users"][0]["exe"], "/usr/bin/app");
        assert_eq!(
            app["users"][0]["ops"],
            serde_json::json!(["open(read,exec)"])
        );
        assert_eq!(document["entries"][0]["reason"], "parent");
        assert_eq!(
            document["entries"][2]["path"]["bytes"],
            serde_json::json!(b"/usr/share/caf\xe9")
        );
        assert_eq!(
            document["required_devices"],
            serde_json::json!(["/dev/null"])
        );
        assert_eq!(document["dropped_missing"], 2);
        Ok(())
    }

    /// A reader that went away, like `depsetfs dump | head -1`.
    struct ClosedPipe;

    impl Write for ClosedPipe {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::from(io::ErrorKind::BrokenPipe))
        }

        fn flush(&mut self) -> io::Result<()> {
            Err(io::Error::from(io::ErrorKind::BrokenPipe))
        }
    }

    #[test]
    fn a_closed_pipe_is_an_error_not_a_panic() {
        let contents = LogContents {
            header: header("/", "/mnt/depsetfs"),
            records: one_of_each_record(),
            truncated_at: None,
        };
        let set = sample_set();
        let results = [
            write_events_jsonl(&contents, &mut ClosedPipe),
            write_set_paths(&set, PathList::Lines, &mut ClosedPipe),
            write_set_paths(&set, PathList::Nul, &mut ClosedPipe),
            write_set_json(&set, &mut ClosedPipe),
        ];
        for result in results {
            assert_eq!(
                result.map_err(|error| error.kind()),
                Err(io::ErrorKind::BrokenPipe)
            );
        }
    }
}
