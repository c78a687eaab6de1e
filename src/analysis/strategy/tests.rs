use std::collections::BTreeSet;

use super::*;
use crate::analysis::rules::Rules;
use crate::analysis::select::{ProcessMatcher, Selector, select};
use crate::fixtures::ScratchDir;
use crate::fixtures::trace::{Proc, Trace};
use crate::record::{FileKind, Op, Record};

const INIT: Proc = Proc { pid: 1, start: 0 };
const SHELL: Proc = Proc { pid: 10, start: 1 };
const WRITER: Proc = Proc { pid: 11, start: 2 };
const READER: Proc = Proc { pid: 12, start: 3 };
const OTHER: Proc = Proc { pid: 13, start: 4 };
/// The kernel's own requests: RELEASE after the last close of a file.
const KERNEL: Proc = Proc { pid: 0, start: 0 };

/// A source tree holding every path the scenarios use, removed when dropped.
struct Source(ScratchDir);

impl Source {
    fn new(name: &str) -> Source {
        let dir = ScratchDir::new(&format!("strategy-{name}"));
        for file in [
            "usr/bin/dash",
            "usr/bin/gen",
            "usr/bin/cat",
            "usr/bin/date",
            "usr/bin/helper",
            "usr/lib/libhelper.so",
            "usr/bin/server",
            "sbin/init",
            "etc/app.conf",
            "etc/mtab",
            "etc/unrelated",
            "var/log/app.log",
            "run/app.sock",
        ] {
            dir.write(file, file).unwrap_or_else(|e| panic!("{e}"));
        }
        Source(dir)
    }

    fn trace(&self) -> Trace {
        Trace::new(&self.0.root().to_string_lossy())
    }
}

/// sh forks a generator that writes /etc/app.conf, then a reader that reads it (and closes
/// it at once), then an unrelated `date`; the reader also reads /etc/mtab, which `date` wrote.
fn config_scenario(source: &Source, read_at: u64) -> Trace {
    let mut trace = source.trace();
    trace.info(SHELL, 99, "/usr/bin/dash", "sh -c script", 15);
    trace.spawn(SHELL, WRITER, "/usr/bin/gen", "gen", 100);
    trace.write(WRITER, "/etc/app.conf", 150);
    release(&mut trace, "/etc/app.conf", 151);
    trace.spawn(SHELL, READER, "/usr/bin/cat", "cat /etc/app.conf", 200);
    trace.read(READER, "/etc/app.conf", read_at);
    release(&mut trace, "/etc/app.conf", read_at + 1);
    trace.spawn(SHELL, OTHER, "/usr/bin/date", "date", 300);
    trace.write(OTHER, "/etc/mtab", 310);
    trace.read(OTHER, "/etc/unrelated", 310);
    trace.read(READER, "/etc/mtab", 400);
    trace
}

/// The kernel's RELEASE of a handle of `path` (after its last close).
fn release(trace: &mut Trace, path: &str, at_ms: u64) {
    trace.access(KERNEL, Op::Release, path, 0, FileKind::File, at_ms);
}

fn by_cmd(pattern: &str) -> Vec<Selector> {
    let matcher = ProcessMatcher::cmd(pattern).unwrap_or_else(|e| panic!("{e}"));
    vec![Selector {
        matcher,
        children: false,
    }]
}

fn run(
    trace: &Trace,
    selectors: &[Selector],
    rules: &Rules,
    strategy: Strategy,
    stubs: bool,
) -> StrategySet {
    let graph = trace.graph();
    let selection = select(&graph, selectors).unwrap_or_else(|e| panic!("{e}"));
    let options = SetOptions::from_header(&graph.header);
    compute(
        &graph,
        &selection,
        rules,
        &options,
        &StrategyOptions { strategy, stubs },
    )
}

fn paths(result: &StrategySet) -> BTreeSet<String> {
    result
        .set
        .entries
        .iter()
        .map(|entry| String::from_utf8_lossy(&entry.path).into_owned())
        .collect()
}

fn needed_exes(trace: &Trace, result: &StrategySet) -> BTreeSet<String> {
    let graph = trace.graph();
    result
        .needed
        .processes()
        .map(|process| graph.processes[process].exe_text())
        .collect()
}

#[test]
fn strict_pulls_in_the_writer_of_a_file_read_after_it_was_written() {
    let source = Source::new("strict");
    let trace = config_scenario(&source, 250);
    let result = run(
        &trace,
        &by_cmd("^cat"),
        &Rules::built_in(),
        Strategy::Strict,
        false,
    );
    let set = paths(&result);
    assert!(set.contains("/usr/bin/gen"), "the writer's binary: {set:?}");
    assert!(set.contains("/etc/app.conf"));
    assert!(!set.contains("/usr/bin/date"), "date is unrelated: {set:?}");
    assert!(!set.contains("/etc/unrelated"));
    let exes = needed_exes(&trace, &result);
    assert!(exes.contains("/usr/bin/gen") && exes.contains("/usr/bin/dash"));
}

#[test]
fn a_read_that_ended_before_the_write_does_not_depend_on_it() {
    let source = Source::new("time");
    let trace = config_scenario(&source, 120);
    let result = run(
        &trace,
        &by_cmd("^cat"),
        &Rules::built_in(),
        Strategy::Strict,
        false,
    );
    assert!(!paths(&result).contains("/usr/bin/gen"));
}

/// With passthrough the reader's reads never reach the daemon: it opened the file before the
/// writer wrote it and read it afterwards, and only its open (and the kernel's release of the
/// last handle) is in the log. It still depends on the writer, exactly as when its reads were
/// recorded.
#[test]
fn a_reader_that_opened_before_the_write_and_closed_after_depends_on_the_writer() {
    let source = Source::new("passthrough");
    let scenario = |reads_recorded: bool| {
        let mut trace = source.trace();
        trace.info(SHELL, 99, "/usr/bin/dash", "sh -c script", 15);
        trace.spawn(SHELL, READER, "/usr/bin/cat", "cat /etc/app.conf", 100);
        trace.read(READER, "/etc/app.conf", 120);
        trace.spawn(SHELL, WRITER, "/usr/bin/gen", "gen", 130);
        trace.write(WRITER, "/etc/app.conf", 150);
        release(&mut trace, "/etc/app.conf", 151);
        if reads_recorded {
            let read = crate::record::intent::READ;
            trace.access(READER, Op::Read, "/etc/app.conf", read, FileKind::File, 250);
        }
        release(&mut trace, "/etc/app.conf", 260);
        trace
    };
    for reads_recorded in [false, true] {
        let result = run(
            &scenario(reads_recorded),
            &by_cmd("^cat"),
            &Rules::built_in(),
            Strategy::Strict,
            false,
        );
        let set = paths(&result);
        assert!(
            set.contains("/usr/bin/gen"),
            "reads recorded: {reads_recorded}: {set:?}"
        );
    }
}

#[test]
fn noise_files_do_not_pull_in_their_writers_unless_the_rules_say_otherwise() {
    let source = Source::new("noise");
    let trace = config_scenario(&source, 250);
    let result = run(
        &trace,
        &by_cmd("^cat"),
        &Rules::built_in(),
        Strategy::Strict,
        false,
    );
    assert!(paths(&result).contains("/etc/mtab"), "still shipped");
    assert!(
        !paths(&result).contains("/usr/bin/date"),
        "/etc/mtab is noise"
    );
    let no_noise = Rules::from_text(std::path::Path::new("r.toml"), "[policy]\nnoise = []\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let result = run(&trace, &by_cmd("^cat"), &no_noise, Strategy::Strict, false);
    assert!(
        paths(&result).contains("/usr/bin/date"),
        "the control: date wrote mtab"
    );
}

#[test]
fn write_only_files_are_left_out_but_their_directory_is_shipped() {
    let source = Source::new("outputs");
    let mut trace = source.trace();
    trace.info(SHELL, 1, "/usr/bin/dash", "sh", 15);
    trace.write(SHELL, "/var/log/app.log", 20);
    let result = run(&trace, &[], &Rules::built_in(), Strategy::Strict, false);
    let set = paths(&result);
    assert!(!set.contains("/var/log/app.log"), "{set:?}");
    assert!(set.contains("/var/log"));
    assert_eq!(result.outputs, vec![b"/var/log/app.log".to_vec()]);
    let ship = Rules::from_text(
        std::path::Path::new("r.toml"),
        "[policy]\ndrop_outputs = false\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let result = run(&trace, &[], &ship, Strategy::Strict, false);
    assert!(paths(&result).contains("/var/log/app.log"));
    // Read back by a needed process: not an output.
    trace.read(SHELL, "/var/log/app.log", 30);
    let result = run(&trace, &[], &Rules::built_in(), Strategy::Strict, false);
    assert!(paths(&result).contains("/var/log/app.log"));
}

#[test]
fn strategy_all_takes_every_process_whatever_the_selection() {
    let source = Source::new("all");
    let mut trace = config_scenario(&source, 250);
    trace.missing(READER, "/etc/absent", 260);
    trace.write(OTHER, "/tmp/gone", 320);
    let result = run(
        &trace,
        &by_cmd("^cat"),
        &Rules::built_in(),
        Strategy::All,
        false,
    );
    // Every process counts, whatever the selection.
    let unselected = run(&trace, &[], &Rules::built_in(), Strategy::All, false);
    assert_eq!(result.set, unselected.set);
    assert!(paths(&result).contains("/usr/bin/date"));
}

#[test]
fn connecting_to_a_unix_socket_pulls_in_the_server() {
    let source = Source::new("socket");
    let mut trace = source.trace();
    trace.info(INIT, 0, "/sbin/init", "init", 1);
    trace.spawn(INIT, SHELL, "/usr/bin/server", "server", 20);
    trace.access(SHELL, Op::Mknod, "/run/app.sock", 0, FileKind::Socket, 50);
    trace.spawn(INIT, READER, "/usr/bin/cat", "client", 60);
    trace.access(READER, Op::Lookup, "/run/app.sock", 0, FileKind::Socket, 70);
    let result = run(
        &trace,
        &by_cmd("^client"),
        &Rules::built_in(),
        Strategy::Strict,
        false,
    );
    assert!(paths(&result).contains("/usr/bin/server"));
    let graph = trace.graph();
    let why: Vec<String> = result
        .needed
        .why
        .iter()
        .flatten()
        .map(|reason| reason.describe(&graph))
        .collect();
    assert!(
        why.iter()
            .any(|line| line.starts_with("bound unix:/run/app.sock")),
        "{why:?}"
    );
}

#[test]
fn system_adds_set_up_processes_their_descendants_and_processes_without_a_binary() {
    let source = Source::new("system");
    let mut trace = config_scenario(&source, 250);
    trace.info(INIT, 0, "/sbin/init", "init", 1);
    trace.read(INIT, "/sbin/init", 2);
    trace.spawn(
        INIT,
        Proc { pid: 2, start: 0 },
        "/usr/bin/helper",
        "setup",
        5,
    );
    let kernel = Proc { pid: 0, start: 0 };
    trace.read(kernel, "/etc/unrelated", 6);
    let strict = run(
        &trace,
        &by_cmd("^cat"),
        &Rules::built_in(),
        Strategy::Strict,
        false,
    );
    assert!(!paths(&strict).contains("/sbin/init"));
    let system = run(
        &trace,
        &by_cmd("^cat"),
        &Rules::built_in(),
        Strategy::System,
        false,
    );
    let set = paths(&system);
    assert!(
        set.contains("/sbin/init") && set.contains("/usr/bin/helper"),
        "{set:?}"
    );
    assert!(
        set.contains("/etc/unrelated"),
        "read by pid 0, a process with no binary"
    );
}

#[test]
fn exec_adds_sub_processes_except_those_of_exec_tolerant_parents() {
    let source = Source::new("exec");
    let trace = config_scenario(&source, 250);
    let pid = |pid| {
        vec![Selector {
            matcher: ProcessMatcher::Pid(pid),
            children: false,
        }]
    };
    let strict = run(
        &trace,
        &pid(SHELL.pid),
        &Rules::built_in(),
        Strategy::Strict,
        false,
    );
    assert!(!paths(&strict).contains("/usr/bin/date"));
    let exec = run(
        &trace,
        &pid(SHELL.pid),
        &Rules::built_in(),
        Strategy::Exec,
        false,
    );
    assert!(
        paths(&exec).contains("/usr/bin/date"),
        "a sub-process of sh"
    );
    let tolerant = Rules::from_text(
        std::path::Path::new("r.toml"),
        "[processes]\nexec_tolerant = [\"/usr/bin/dash\"]\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let exec = run(&trace, &pid(SHELL.pid), &tolerant, Strategy::Exec, true);
    assert!(!paths(&exec).contains("/usr/bin/date"));
    let stubs: Vec<&[u8]> = exec.stubs.iter().map(|stub| stub.path.as_slice()).collect();
    assert_eq!(
        stubs,
        [&b"/usr/bin/cat"[..], b"/usr/bin/date", b"/usr/bin/gen"]
    );
}

#[test]
fn stubs_list_binaries_a_needed_parent_execs_without_needing_them() {
    let source = Source::new("stubs");
    let trace = config_scenario(&source, 120);
    let without = run(
        &trace,
        &by_cmd("^cat"),
        &Rules::built_in(),
        Strategy::Strict,
        false,
    );
    assert!(without.stubs.is_empty());
    let with = run(
        &trace,
        &by_cmd("^cat"),
        &Rules::built_in(),
        Strategy::Strict,
        true,
    );
    let stubs: Vec<&[u8]> = with.stubs.iter().map(|stub| stub.path.as_slice()).collect();
    assert_eq!(stubs, [&b"/usr/bin/date"[..], b"/usr/bin/gen"]);
    // A rules stub list stubs a binary even when a dependency would pull it in.
    let listed = Rules::from_text(
        std::path::Path::new("r.toml"),
        "[processes]\nstubs = [\"/usr/bin/gen\"]\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let trace = config_scenario(&source, 250);
    let result = run(&trace, &by_cmd("^cat"), &listed, Strategy::Strict, false);
    let stubs: Vec<&[u8]> = result
        .stubs
        .iter()
        .map(|stub| stub.path.as_slice())
        .collect();
    assert_eq!(stubs, [&b"/usr/bin/gen"[..]]);
    assert!(!paths(&result).contains("/usr/bin/gen"));
}

/// The issue-15 case: sh (selected with `--exe`, so its fork copies are selected too) looks
/// `helper` up on its PATH, and a fork copy execs it; helper loads its library. The fork copy
/// only looked the binary up (the exec's reads are helper's own), helper is not needed.
fn shell_looks_up_and_runs_helper(source: &Source) -> Trace {
    let mut trace = source.trace();
    trace.info(SHELL, 99, "/usr/bin/dash", "sh -c script", 15);
    trace.access(SHELL, Op::Lookup, "/usr/bin/helper", 0, FileKind::File, 90);
    trace.spawn(SHELL, OTHER, "/usr/bin/helper", "helper", 100);
    trace.read(OTHER, "/usr/lib/libhelper.so", 102);
    trace
}

fn by_exe(path: &str) -> Vec<Selector> {
    vec![Selector {
        matcher: ProcessMatcher::Exe(path.as_bytes().to_vec()),
        children: false,
    }]
}

#[test]
fn a_binary_the_needed_side_only_looked_up_is_stubbed_or_left_out_never_shipped_half() {
    let source = Source::new("looked-up");
    let trace = shell_looks_up_and_runs_helper(&source);
    let rules = Rules::built_in();
    let without = run(
        &trace,
        &by_exe("/usr/bin/dash"),
        &rules,
        Strategy::Strict,
        false,
    );
    let set = paths(&without);
    assert!(!set.contains("/usr/bin/helper"), "{set:?}");
    assert!(!set.contains("/usr/lib/libhelper.so"), "{set:?}");
    assert!(set.contains("/usr/bin"), "its directory stays: {set:?}");
    assert_eq!(without.looked_up_only, [b"/usr/bin/helper".to_vec()]);
    assert!(without.stubs.is_empty());
    let candidates: Vec<&[u8]> = without
        .stub_candidates
        .iter()
        .map(|stub| stub.path.as_slice())
        .collect();
    assert_eq!(candidates, [&b"/usr/bin/helper"[..]]);
    assert_eq!(without.stub_candidates[0].origin, StubOrigin::Launched);
    let with = run(
        &trace,
        &by_exe("/usr/bin/dash"),
        &rules,
        Strategy::Strict,
        true,
    );
    let stubs: Vec<&[u8]> = with.stubs.iter().map(|stub| stub.path.as_slice()).collect();
    assert_eq!(stubs, [&b"/usr/bin/helper"[..]]);
    // Control: when helper is needed, it is shipped whole, with its library.
    let whole = run(&trace, &[], &rules, Strategy::Strict, true);
    let set = paths(&whole);
    assert!(set.contains("/usr/bin/helper") && set.contains("/usr/lib/libhelper.so"));
    assert!(whole.looked_up_only.is_empty() && whole.stubs.is_empty());
    assert_eq!(
        whole.executables, 1,
        "helper is an executable shipped whole"
    );
}

#[test]
fn a_helper_that_talked_to_a_needed_server_is_no_stub_candidate() {
    let source = Source::new("talked");
    let mut trace = shell_looks_up_and_runs_helper(&source);
    trace.access(SHELL, Op::Mknod, "/run/app.sock", 0, FileKind::Socket, 50);
    trace.access(OTHER, Op::Lookup, "/run/app.sock", 0, FileKind::Socket, 103);
    let result = run(
        &trace,
        &by_exe("/usr/bin/dash"),
        &Rules::built_in(),
        Strategy::Strict,
        true,
    );
    assert!(
        result.stub_candidates.is_empty(),
        "{:?}",
        result.stub_candidates
    );
    assert!(result.stubs.is_empty());
    // Still not shipped half.
    assert!(!paths(&result).contains("/usr/bin/helper"));
}

#[test]
fn include_and_exclude_globs_override_the_strategy() {
    let source = Source::new("globs");
    let trace = config_scenario(&source, 250);
    let rules = Rules::from_text(
        std::path::Path::new("r.toml"),
        "[paths]\ninclude = [\"/etc/unrelated\"]\nexclude = [\"/usr/bin/gen\"]\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let result = run(&trace, &by_cmd("^cat"), &rules, Strategy::Strict, false);
    let set = paths(&result);
    assert!(
        set.contains("/etc/unrelated") && !set.contains("/usr/bin/gen"),
        "{set:?}"
    );
    assert_eq!(
        result.excluded,
        vec![(b"/usr/bin/gen".to_vec(), "/usr/bin/gen".to_string())]
    );
}

#[test]
fn the_default_selection_is_the_command_and_its_descendants() {
    let source = Source::new("default");
    let mut trace = config_scenario(&source, 250);
    trace.info(INIT, 0, "/sbin/init", "init", 1);
    let graph = trace.graph();
    assert_eq!(
        select(&graph, &[]).map(|s| s.len()).ok(),
        Some(graph.processes.len())
    );
    trace.command(SHELL.pid);
    let graph = trace.graph();
    let selection = select(&graph, &[]).unwrap_or_else(|e| panic!("{e}"));
    let exes: BTreeSet<String> = selection
        .processes()
        .map(|process| graph.processes[process].exe_text())
        .collect();
    assert!(!exes.contains("/sbin/init"));
    assert!(exes.contains("/usr/bin/date") && exes.contains("/usr/bin/gen"));
    let children = vec![Selector {
        matcher: ProcessMatcher::Exe(b"/usr/bin/dash".to_vec()),
        children: true,
    }];
    let with_children = select(&graph, &children).unwrap_or_else(|e| panic!("{e}"));
    let chosen =
        |selection: &crate::analysis::select::Selection| selection.processes().collect::<Vec<_>>();
    assert_eq!(chosen(&with_children), chosen(&selection));
    let nothing = vec![Selector {
        matcher: ProcessMatcher::Pid(4242),
        children: false,
    }];
    assert!(select(&graph, &nothing).is_err());
    assert!(
        trace
            .records
            .iter()
            .any(|record| matches!(record, Record::Fork(_)))
    );
}

#[test]
fn rules_that_exclude_everything_used_are_warned_about() {
    let source = Source::new("exclude_all");
    let trace = config_scenario(&source, 250);
    let some = Rules::from_text(
        std::path::Path::new("some.toml"),
        "[paths]\nexclude = [\"/usr/bin/gen\"]\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let result = run(&trace, &by_cmd("^cat"), &some, Strategy::Strict, false);
    assert_eq!(
        result.rules_warning(&some),
        None,
        "a partial exclude warned"
    );
    let all = Rules::from_text(
        std::path::Path::new("all.toml"),
        "[paths]\nexclude = [\"/**\"]\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let result = run(&trace, &by_cmd("^cat"), &all, Strategy::Strict, false);
    assert!(result.set.entries.is_empty(), "{:?}", paths(&result));
    let warning = result.rules_warning(&all).unwrap_or_default();
    assert!(
        warning.starts_with("all.toml: the exclude rules removed every path the selection used")
            && warning.ends_with("the strict set is empty"),
        "{warning}"
    );
    let built_in = run(
        &trace,
        &by_cmd("^cat"),
        &Rules::built_in(),
        Strategy::Strict,
        false,
    );
    assert_eq!(built_in.rules_warning(&Rules::built_in()), None);
}
