use std::path::PathBuf;

use super::*;
use crate::analysis::graph::ProcessLink;
use crate::analysis::graph::build::graph_from_log;
use crate::analysis::select::Selector;
use crate::analysis::select::default_selection;
use crate::fixtures::ScratchDir;
use crate::fixtures::trace::{Proc, Trace};
use crate::log::read_log;
use crate::record::{LogEnd, NetCall};

const SHELL: Proc = Proc { pid: 10, start: 1 };
const CHILD: Proc = Proc { pid: 11, start: 2 };

/// A run of `label`: pid 10 (the traced command) runs `exe`, forks pid 11, which reads `reads`.
fn run_trace(label: &str, source: &str, exe: &str, reads: &[&str]) -> Trace {
    let mut trace = Trace::new(source);
    trace.header.label = Some(label.to_string());
    trace.command(SHELL.pid);
    trace.info(SHELL, 1, exe, exe, 10);
    trace.spawn(SHELL, CHILD, exe, exe, 20);
    for (n, path) in reads.iter().enumerate() {
        trace.read(CHILD, path, 30 + n as u64);
    }
    trace.records.push(Record::End(LogEnd {
        ts_ns: 1_000_000_000,
    }));
    trace
}

fn write_log(dir: &ScratchDir, name: &str, header: &LogHeader, records: &[Record]) -> PathBuf {
    let path = dir.file(name);
    let mut writer = LogWriter::create(&path, header).expect("create log");
    for record in records {
        writer.append(record).expect("append");
    }
    writer.flush().expect("flush");
    path
}

fn write_trace(dir: &ScratchDir, name: &str, trace: &Trace) -> PathBuf {
    write_log(dir, name, &trace.header, &trace.records)
}

fn runs_of(records: &[Record]) -> Vec<u32> {
    records
        .iter()
        .filter_map(|record| match record {
            Record::Run(segment) => Some(segment.index),
            _ => None,
        })
        .collect()
}

#[test]
fn merging_keeps_every_record_under_its_run() {
    let dir = ScratchDir::new("merge-keeps");
    let first = run_trace("static", "/", "/usr/sbin/nginx", &["/srv/index.html"]);
    let second = run_trace("php", "/", "/usr/sbin/php-fpm", &["/srv/index.php"]);
    let inputs = vec![
        write_trace(&dir, "a.dlog", &first),
        write_trace(&dir, "b.dlog", &second),
    ];
    let output = dir.file("all.dlog");
    let report = merge_logs(&inputs, &output, false).expect("merge");
    assert_eq!(
        report.records as usize,
        first.records.len() + second.records.len()
    );
    let merged = read_log(&output).expect("read merged");
    assert_eq!(merged.header.version, LOG_FORMAT_VERSION);
    let labels: Vec<_> = merged
        .header
        .runs
        .iter()
        .map(|run| run.label.clone())
        .collect();
    assert_eq!(labels, vec![Some("static".into()), Some("php".into())]);
    assert_eq!(merged.header.runs[0].command, first.header.command);
    let mut expected = vec![Record::Run(RunSegment { index: 0 })];
    expected.extend(first.records.iter().cloned());
    expected.push(Record::Run(RunSegment { index: 1 }));
    expected.extend(second.records.iter().cloned());
    assert_eq!(
        merged.records, expected,
        "every record, in its run, unchanged"
    );
}

#[test]
fn equal_pids_of_two_runs_stay_apart_in_the_graph() {
    let dir = ScratchDir::new("merge-pids");
    let inputs = vec![
        write_trace(
            &dir,
            "a.dlog",
            &run_trace("static", "/", "/usr/sbin/nginx", &["/a"]),
        ),
        write_trace(
            &dir,
            "b.dlog",
            &run_trace("php", "/", "/usr/sbin/php-fpm", &["/b"]),
        ),
    ];
    let output = dir.file("all.dlog");
    merge_logs(&inputs, &output, false).expect("merge");
    let graph = graph_from_log(&output).expect("graph");
    assert!(graph.is_merged());
    assert_eq!(graph.run_label(0), "static");
    assert_eq!(graph.run_named("php"), Some(1));
    // Two processes with pid 11, one per run, each forked by the pid 10 of its own run.
    let children: Vec<usize> = (0..graph.processes.len())
        .filter(|&p| {
            graph.processes[p].key.pid == CHILD.pid && graph.processes[p].key.exec_index == 0
        })
        .collect();
    assert_eq!(children.len(), 2);
    for &child in &children {
        let parent = graph.processes[child].forked_by.expect("forked");
        assert_eq!(
            graph.processes[parent].key.run,
            graph.processes[child].key.run
        );
        assert_eq!(graph.processes[parent].key.pid, SHELL.pid);
    }
    // The reads stay with their run's process.
    let reader_of = |path: &[u8]| {
        let file = graph.file(path).expect("file");
        let runs: Vec<u32> = graph
            .edges_of_file(file)
            .map(|edge| graph.processes[edge.process].key.run)
            .collect();
        runs
    };
    assert_eq!(reader_of(b"/a"), vec![0]);
    assert_eq!(reader_of(b"/b"), vec![1]);
    // The default selection is every run's traced command and its descendants.
    let selection = default_selection(&graph);
    let selected_runs: BTreeSet<u32> = selection
        .processes()
        .map(|p| graph.processes[p].key.run)
        .collect();
    assert_eq!(selected_runs, BTreeSet::from([0, 1]));
    assert_eq!(selection.len(), graph.processes.len());
    assert!(
        graph
            .describe_process(children[1])
            .starts_with("run php: pid 11")
    );
    assert_eq!(graph.stats.ended_cleanly, Some(true));
}

#[test]
fn a_run_cut_short_makes_the_merged_log_unclean() {
    let dir = ScratchDir::new("merge-unclean");
    let mut killed = run_trace("killed", "/", "/bin/sh", &["/a"]);
    killed.records.pop();
    let inputs = vec![
        write_trace(&dir, "a.dlog", &killed),
        write_trace(&dir, "b.dlog", &run_trace("clean", "/", "/bin/sh", &["/b"])),
    ];
    let output = dir.file("all.dlog");
    merge_logs(&inputs, &output, false).expect("merge");
    let graph = graph_from_log(&output).expect("graph");
    assert_eq!(graph.stats.ended_cleanly, Some(false));
}

#[test]
fn merging_a_merged_log_flattens_its_runs_and_keeps_labels_apart() {
    let dir = ScratchDir::new("merge-flatten");
    let a = write_trace(&dir, "a.dlog", &run_trace("one", "/", "/bin/a", &["/a"]));
    let b = write_trace(&dir, "b.dlog", &run_trace("two", "/", "/bin/b", &["/b"]));
    let mut unlabelled = run_trace("", "/", "/bin/c", &["/c"]);
    unlabelled.header.label = None;
    let c = write_trace(&dir, "third.dlog", &unlabelled);
    let ab = dir.file("ab.dlog");
    merge_logs(&[a.clone(), b], &ab, false).expect("merge a b");
    let all = dir.file("all.dlog");
    let report = merge_logs(&[ab, c, a], &all, false).expect("merge ab c a");
    let merged = read_log(&all).expect("read");
    let labels: Vec<String> = merged
        .header
        .runs
        .iter()
        .map(|run| run.label.clone().unwrap_or_default())
        .collect();
    assert_eq!(labels, vec!["one", "two", "third", "one-2"]);
    assert_eq!(report.relabelled.len(), 1);
    assert_eq!(runs_of(&merged.records), vec![0, 1, 2, 3]);
    let graph = graph_from_log(&all).expect("graph");
    let runs: BTreeSet<u32> = graph.processes.iter().map(|node| node.key.run).collect();
    assert_eq!(runs, BTreeSet::from([0, 1, 2, 3]));
}

#[test]
fn bad_inputs_and_outputs_are_refused() {
    let dir = ScratchDir::new("merge-bad");
    let good = write_trace(
        &dir,
        "good.dlog",
        &run_trace("good", "/", "/bin/a", &["/a"]),
    );
    dir.write("random.bin", "this is not a log\n")
        .expect("write");
    let output = dir.file("out.dlog");
    let not_a_log = merge_logs(&[good.clone(), dir.file("random.bin")], &output, false);
    assert!(
        matches!(not_a_log, Err(MergeError::Log(LogError::NotALog { .. }))),
        "{not_a_log:?}"
    );
    let mut future = run_trace("future", "/", "/bin/a", &["/a"]).header;
    future.version = LOG_FORMAT_VERSION + 1;
    let future = write_log(&dir, "future.dlog", &future, &[]);
    let unsupported = merge_logs(&[good.clone(), future], &output, false);
    assert!(
        matches!(
            unsupported,
            Err(MergeError::Log(LogError::UnsupportedVersion { .. }))
        ),
        "{unsupported:?}"
    );
    assert!(!output.exists(), "a failed merge leaves no output");

    // An older version is read and keeps its version in its run's header.
    let mut old = run_trace("old", "/", "/bin/a", &["/a"]);
    old.header.version = 2;
    old.records.pop();
    let old = write_trace(&dir, "old.dlog", &old);
    merge_logs(&[good.clone(), old], &output, false).expect("an old log merges");
    let merged = read_log(&output).expect("read");
    assert_eq!(merged.header.runs[1].version, 2);
    assert_eq!(
        graph_from_log(&output).expect("graph").stats.ended_cleanly,
        Some(true),
        "a version 2 run cannot end with an end record"
    );

    let exists = merge_logs(std::slice::from_ref(&good), &output, false);
    assert!(
        matches!(exists, Err(MergeError::OutputExists { .. })),
        "{exists:?}"
    );
    merge_logs(std::slice::from_ref(&good), &output, true).expect("--overwrite-log");
    let into_input = merge_logs(&[good.clone(), output.clone()], &output, true);
    assert!(
        matches!(into_input, Err(MergeError::OutputIsInput { .. })),
        "{into_input:?}"
    );
}

#[test]
fn runs_from_different_source_trees_conflict_on_differing_content() {
    let dir = ScratchDir::new("merge-conflict");
    let tree_a = ScratchDir::new("merge-conflict-a");
    let tree_b = ScratchDir::new("merge-conflict-b");
    for tree in [&tree_a, &tree_b] {
        tree.write("usr/lib/libsame.so", "same bytes")
            .expect("write");
    }
    tree_a.write("etc/app.conf", "port = 80\n").expect("write");
    tree_b
        .write("etc/app.conf", "port = 8080\n")
        .expect("write");
    tree_a.write("etc/only-a", "a").expect("write");
    let reads = ["/usr/lib/libsame.so", "/etc/app.conf", "/etc/only-a"];
    let a = run_trace("A", &tree_a.root().to_string_lossy(), "/bin/app", &reads);
    let b = run_trace("B", &tree_b.root().to_string_lossy(), "/bin/app", &reads);
    let mut elsewhere = run_trace("C", "/", "/bin/app", &reads);
    elsewhere.header.host = "another-host".to_string();
    let inputs = vec![
        write_trace(&dir, "a.dlog", &a),
        write_trace(&dir, "b.dlog", &b),
        write_trace(&dir, "c.dlog", &elsewhere),
    ];
    let output = dir.file("all.dlog");
    merge_logs(&inputs, &output, false).expect("merge");
    let graph = graph_from_log(&output).expect("graph");
    assert_eq!(source_trees(&graph).len(), 3);
    let check = find_conflicts(&graph, "test");
    let paths: Vec<&[u8]> = check.conflicts.iter().map(|c| c.path.as_slice()).collect();
    assert_eq!(paths, vec![&b"/etc/app.conf"[..], &b"/etc/only-a"[..]]);
    let conf = &check.conflicts[0];
    let sha = |text: &str| format!("{:x}", Sha256::digest(text.as_bytes()));
    assert_eq!(conf.sides[0].run, "A");
    assert_eq!(conf.sides[0].sha256, Some(sha("port = 80\n")));
    assert_eq!(conf.sides[1].run, "B");
    assert_eq!(conf.sides[1].sha256, Some(sha("port = 8080\n")));
    let line = conf.describe();
    assert!(line.starts_with("/etc/app.conf: run A (source "), "{line}");
    assert!(
        line.contains(&format!("sha256 {}", sha("port = 8080\n"))),
        "{line}"
    );
    assert_eq!(check.conflicts[1].sides[1].sha256, None, "absent in B");
    assert_eq!(check.unreadable.len(), 1);
    assert_eq!(check.unreadable[0].runs, vec!["C".to_string()]);
    assert!(check.unreadable[0].reason.contains("another-host"));

    // Export reads one tree: several only with --prefer, whose tree is then the header's.
    let mut graph = graph;
    let refused = choose_source(&mut graph, None);
    assert!(
        matches!(refused, Err(MergeError::SeveralSources { count: 3, .. })),
        "{refused:?}"
    );
    let unknown = choose_source(&mut graph, Some("Z"));
    assert!(
        matches!(unknown, Err(MergeError::UnknownRun { .. })),
        "{unknown:?}"
    );
    choose_source(&mut graph, Some("B")).expect("--prefer B");
    assert_eq!(graph.header.source, tree_b.root().to_string_lossy());

    // One source tree: nothing to compare.
    let again = run_trace("A2", &tree_a.root().to_string_lossy(), "/bin/app", &reads);
    let same = vec![inputs[0].clone(), write_trace(&dir, "a2.dlog", &again)];
    let one_tree = dir.file("one.dlog");
    merge_logs(&same, &one_tree, false).expect("merge");
    let mut graph = graph_from_log(&one_tree).expect("graph");
    let check = find_conflicts(&graph, "test");
    assert_eq!(check, ConflictCheck::default());
    choose_source(&mut graph, None).expect("one tree needs no --prefer");
}

#[test]
fn a_merged_set_says_which_runs_needed_each_path_and_why_names_the_run() {
    use crate::analysis::closure::SetOptions;
    use crate::analysis::dump::write_set_json;
    use crate::analysis::query::why;
    use crate::analysis::strategy::{Strategy, StrategyOptions, compute};
    let dir = ScratchDir::new("merge-set");
    let tree = ScratchDir::new("merge-set-tree");
    for path in ["usr/sbin/nginx", "srv/index.html", "srv/index.php"] {
        tree.write(path, "x").expect("write");
    }
    let source = tree.root().to_string_lossy().into_owned();
    let inputs = vec![
        write_trace(
            &dir,
            "a.dlog",
            &run_trace("static", &source, "/usr/sbin/nginx", &["/srv/index.html"]),
        ),
        write_trace(
            &dir,
            "b.dlog",
            &run_trace("php", &source, "/usr/sbin/nginx", &["/srv/index.php"]),
        ),
    ];
    let output = dir.file("all.dlog");
    merge_logs(&inputs, &output, false).expect("merge");
    let graph = graph_from_log(&output).expect("graph");
    let options = SetOptions::from_header(&graph.header);
    let strategy = StrategyOptions {
        strategy: Strategy::Strict,
        stubs: false,
    };
    let result = compute(
        &graph,
        &default_selection(&graph),
        &crate::fixtures::no_rules(),
        &options,
        &strategy,
    );
    let mut out = Vec::new();
    write_set_json(&result.set, &mut out).expect("json");
    let document: serde_json::Value = serde_json::from_slice(&out).expect("parse");
    let runs_of = |path: &str| {
        document["entries"]
            .as_array()
            .and_then(|entries| entries.iter().find(|entry| entry["path"] == path))
            .map(|entry| entry["runs"].clone())
    };
    let both = serde_json::json!(["php", "static"]);
    assert_eq!(
        runs_of("/srv/index.html"),
        Some(serde_json::json!(["static"]))
    );
    assert_eq!(runs_of("/srv/index.php"), Some(serde_json::json!(["php"])));
    assert_eq!(runs_of("/usr/sbin/nginx"), Some(both.clone()));
    assert_eq!(
        runs_of("/srv"),
        Some(both.clone()),
        "a parent: the runs below it"
    );
    assert_eq!(runs_of("/"), Some(both));

    let answer = why(&graph, &result, &options, b"/srv/index.php");
    assert!(answer.in_set);
    assert_eq!(answer.run.as_deref(), Some("php"));
    assert_eq!(answer.needed_by_runs, vec!["php".to_string()]);
    assert!(
        answer
            .chain
            .iter()
            .all(|step| step.process.starts_with("run php: ")),
        "{:?}",
        answer.chain
    );
}

#[test]
fn a_client_of_one_run_never_connects_to_a_server_of_another() {
    use crate::analysis::graph::ProcessLink;
    use crate::record::{NetCall, Op};
    const SERVER: Proc = Proc { pid: 20, start: 3 };
    const CLIENT: Proc = Proc { pid: 21, start: 4 };
    let dir = ScratchDir::new("merge-connect");
    let mut serving = run_trace("server", "/", "/bin/server", &[]);
    serving.info(SERVER, 1, "/bin/server", "server", 40);
    serving.access(SERVER, Op::Mknod, "/run/app.sock", 0, FileKind::Socket, 41);
    serving.net(SERVER, NetCall::Listen, "127.0.0.1:80", "stream", 42);
    let mut asking = run_trace("client", "/", "/bin/client", &[]);
    asking.info(CLIENT, 1, "/bin/client", "client", 50);
    asking.access(CLIENT, Op::Lookup, "/run/app.sock", 0, FileKind::Socket, 51);
    asking.net(CLIENT, NetCall::Connect, "127.0.0.1:80", "stream", 52);
    let connects = |graph: &Graph| {
        graph
            .process_edges
            .iter()
            .filter(|edge| edge.link == ProcessLink::Connect)
            .count()
    };
    // In one run both are connects (the sanity check of this test).
    let mut together = run_trace("both", "/", "/bin/server", &[]);
    together.records.pop();
    together
        .records
        .extend(serving.records[serving.records.len() - 3..].iter().cloned());
    together
        .records
        .extend(asking.records[asking.records.len() - 3..].iter().cloned());
    assert_eq!(connects(&together.graph()), 2);

    let inputs = vec![
        write_trace(&dir, "a.dlog", &serving),
        write_trace(&dir, "b.dlog", &asking),
    ];
    let output = dir.file("all.dlog");
    merge_logs(&inputs, &output, false).expect("merge");
    let graph = graph_from_log(&output).expect("graph");
    assert_eq!(connects(&graph), 0, "{:?}", graph.process_edges);
}

#[test]
fn ps_and_tree_name_the_run_of_each_process_in_a_merged_log() {
    use crate::analysis::query::{ps, tree, write_ps_human, write_tree_human};
    let dir = ScratchDir::new("merge-ps");
    let inputs = vec![
        write_trace(
            &dir,
            "a.dlog",
            &run_trace("static", "/", "/usr/sbin/nginx", &["/a"]),
        ),
        write_trace(
            &dir,
            "b.dlog",
            &run_trace("php", "/", "/usr/sbin/php-fpm", &["/b"]),
        ),
    ];
    let output = dir.file("all.dlog");
    merge_logs(&inputs, &output, false).expect("merge");
    let graph = graph_from_log(&output).expect("graph");
    let selection = default_selection(&graph);
    let rows = ps(&graph, &selection);
    let runs: Vec<&str> = rows.iter().map(|row| row.run.as_str()).collect();
    assert_eq!(runs.first(), Some(&"static"));
    assert_eq!(runs.last(), Some(&"php"));
    let mut out = Vec::new();
    write_ps_human(&rows, &mut out).expect("ps");
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("RUN "), "{text}");
    assert!(text.lines().any(|line| line.starts_with("php ")), "{text}");
    let mut out = Vec::new();
    write_tree_human(&tree(&graph, &selection), &mut out).expect("tree");
    let text = String::from_utf8_lossy(&out);
    let groups: Vec<&str> = text
        .lines()
        .filter(|line| line.starts_with("run "))
        .collect();
    assert_eq!(groups, vec!["run static:", "run php:"], "{text}");

    // A log of one run keeps its columns.
    let single = graph_from_log(&inputs[0]).expect("graph");
    let mut out = Vec::new();
    write_ps_human(&ps(&single, &default_selection(&single)), &mut out).expect("ps");
    assert!(
        String::from_utf8_lossy(&out)
            .trim_start()
            .starts_with("PID")
    );
}

/// A run on host `host` with `addresses`: pid 10 runs `exe`; its child pid 11 does `net`.
fn host_trace(host: &str, addresses: &[&str], exe: &str, net: &[(NetCall, &str)]) -> Trace {
    let reads: &[&str] = if host == "db" {
        &["/etc/passwd"]
    } else {
        &["/etc/group"]
    };
    let mut trace = run_trace(host, "/", exe, reads);
    trace.header.host = host.to_string();
    trace.header.addresses = addresses.iter().map(|a| a.to_string()).collect();
    trace.records.pop();
    for (n, (call, address)) in net.iter().enumerate() {
        trace.net(CHILD, *call, address, "stream", 40 + n as u64);
    }
    trace.records.push(Record::End(LogEnd {
        ts_ns: 1_000_000_000,
    }));
    trace
}

#[test]
fn a_connect_to_another_hosts_address_reaches_its_server() {
    let dir = ScratchDir::new("merge-hosts");
    let db = host_trace(
        "db",
        &["10.213.8.2"],
        "/usr/sbin/mariadbd",
        &[
            (NetCall::Bind, "0.0.0.0:3306"),
            (NetCall::Listen, "0.0.0.0:3306"),
        ],
    );
    let web = host_trace(
        "web",
        &["10.213.8.1"],
        "/usr/sbin/php-fpm",
        &[
            (NetCall::Connect, "10.213.8.2:3306"),
            // Nobody traced owns it: an external endpoint.
            (NetCall::Connect, "192.0.2.7:3306"),
            // The web host's own loopback: never the db host's server.
            (NetCall::Connect, "127.0.0.1:3306"),
        ],
    );
    let inputs = vec![
        write_trace(&dir, "db.dlog", &db),
        write_trace(&dir, "web.dlog", &web),
    ];
    let output = dir.file("app.dlog");
    merge_logs(&inputs, &output, false).expect("merge");
    let graph = graph_from_log(&output).expect("graph");
    let connects: Vec<(u32, u32, String)> = graph
        .process_edges
        .iter()
        .filter(|edge| edge.link == ProcessLink::Connect)
        .map(|edge| {
            let endpoint = &graph.endpoints[edge.endpoint.expect("endpoint")];
            (
                graph.processes[edge.from].key.run,
                graph.processes[edge.to].key.run,
                endpoint.key.describe(),
            )
        })
        .collect();
    assert_eq!(connects, vec![(1, 0, "tcp:0.0.0.0:3306".to_string())]);
    let unserved: BTreeSet<String> = graph
        .endpoints
        .iter()
        .filter(|endpoint| endpoint.binders.is_empty())
        .map(|endpoint| endpoint.key.describe())
        .collect();
    assert_eq!(
        unserved,
        BTreeSet::from([
            "tcp:127.0.0.1:3306".to_string(),
            "tcp:192.0.2.7:3306".to_string()
        ])
    );

    // `tree`: each image names its host; the client shows the server it reached.
    let rows = crate::analysis::query::tree(&graph, &default_selection(&graph));
    let mut text = Vec::new();
    crate::analysis::query::write_tree_human(&rows, &mut text).expect("write");
    let text = String::from_utf8(text).expect("utf-8");
    assert!(text.contains("run db (host db):"), "{text}");
    assert!(text.contains("run web (host web):"), "{text}");
    assert!(
        text.contains("-> tcp:0.0.0.0:3306 on db (run db): pid 11 /usr/sbin/mariadbd"),
        "{text}"
    );

    // `--host db` with only the web tier selected: the db server is needed through the
    // connection, and the set holds the db host's files only.
    let selection = Selector {
        matcher: crate::analysis::select::ProcessMatcher::Exe(b"/usr/sbin/php-fpm".to_vec()),
        children: true,
    };
    let mut plan = crate::analysis::plan::Plan::new(
        graph.clone(),
        crate::analysis::rules::Rules::built_in(),
        vec![selection],
    )
    .expect("plan");
    plan.scope_to_host("db").expect("host db");
    let strict = crate::analysis::strategy::StrategyOptions {
        strategy: crate::analysis::strategy::Strategy::Strict,
        stubs: false,
    };
    let result = plan.set(&strict);
    let paths: BTreeSet<String> = result
        .set
        .entries
        .iter()
        .map(|entry| String::from_utf8_lossy(&entry.path).into_owned())
        .collect();
    assert!(paths.contains("/etc/passwd"), "{paths:?}");
    assert!(!paths.contains("/etc/group"), "{paths:?}");
    let server = result
        .needed
        .processes()
        .find(|&p| graph.processes[p].exe == b"/usr/sbin/mariadbd")
        .expect("the db server is needed");
    assert!(
        result
            .needed
            .processes()
            .all(|p| graph.processes[p].key.run == 0)
    );
    let chain = result.needed.chain_to(server);
    assert_eq!(
        graph.processes[chain[0].0].key.run, 1,
        "the chain starts on web"
    );
    let mut web = crate::analysis::plan::Plan::new(
        graph.clone(),
        crate::analysis::rules::Rules::built_in(),
        vec![Selector {
            matcher: crate::analysis::select::ProcessMatcher::Exe(b"/usr/sbin/php-fpm".to_vec()),
            children: true,
        }],
    )
    .expect("plan");
    web.scope_to_host("web").expect("host web");
    let web_paths: BTreeSet<String> = web
        .set(&strict)
        .set
        .entries
        .iter()
        .map(|entry| String::from_utf8_lossy(&entry.path).into_owned())
        .collect();
    assert!(web_paths.contains("/etc/group"), "{web_paths:?}");
    assert!(!web_paths.contains("/etc/passwd"), "{web_paths:?}");
    assert!(plan.scope_to_host("cache").is_err());

    // The same two runs under one host name: no match across runs.
    let mut same = host_trace(
        "db",
        &["10.213.8.1"],
        "/usr/sbin/php-fpm",
        &[(NetCall::Connect, "10.213.8.2:3306")],
    );
    same.header.label = Some("web".to_string());
    let inputs = vec![
        write_trace(&dir, "db2.dlog", &db),
        write_trace(&dir, "web2.dlog", &same),
    ];
    let output = dir.file("same.dlog");
    merge_logs(&inputs, &output, false).expect("merge");
    let graph = graph_from_log(&output).expect("graph");
    assert!(
        !graph
            .process_edges
            .iter()
            .any(|edge| edge.link == ProcessLink::Connect)
    );
}
