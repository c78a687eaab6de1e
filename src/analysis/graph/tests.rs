use super::*;
use crate::fixtures::trace::{MS, Proc, Trace, exec_intent};
use crate::record::{FileKind, NetCall, Op, Record};

const SHELL: Proc = Proc { pid: 10, start: 1 };
const CHILD: Proc = Proc { pid: 11, start: 2 };
const SERVER: Proc = Proc { pid: 20, start: 3 };
const CLIENT: Proc = Proc { pid: 21, start: 4 };

fn image(graph: &Graph, p: Proc, exec_index: u32) -> ProcessIx {
    let found = graph.processes.iter().position(|node| {
        node.key
            == ImageKey {
                run: 0,
                pid: p.pid,
                start: p.start,
                exec_index,
            }
    });
    found.unwrap_or_else(|| panic!("no image {} of pid {}", exec_index, p.pid))
}

fn paths_of(graph: &Graph, process: ProcessIx) -> Vec<String> {
    let mut paths: Vec<String> = graph
        .edges_of_process(process)
        .map(|edge| graph.path_text(edge.file))
        .collect();
    paths.sort();
    paths.dedup();
    paths
}

/// sh (pid 10) forks pid 11 at 100 ms, which reads its PATH, execs /usr/bin/cat at 201 ms.
fn shell_runs_cat() -> Trace {
    let mut trace = Trace::new("/");
    trace.info(SHELL, 1, "/usr/bin/dash", "sh -c cat", 15);
    trace.fork(SHELL, CHILD, 100);
    trace.info(CHILD, SHELL.pid, "/usr/bin/dash", "sh -c cat", 101);
    trace.missing(CHILD, "/usr/local/bin/cat", 150);
    trace.access(
        CHILD,
        Op::Open,
        "/usr/bin/cat",
        exec_intent(),
        FileKind::File,
        200,
    );
    trace.exec(CHILD, 201);
    trace.info(CHILD, SHELL.pid, "/usr/bin/cat", "cat /etc/motd", 202);
    trace.read(CHILD, "/etc/motd", 250);
    // One merged record spanning the exec: both images looked it up.
    trace.access_full(
        CHILD,
        Op::Lookup,
        "/etc",
        None,
        0,
        FileKind::Dir,
        0,
        120,
        260,
    );
    trace.exit(CHILD, 300);
    trace
}

#[test]
fn a_pid_is_cut_into_images_at_its_execs() {
    let graph = shell_runs_cat().graph();
    let before = image(&graph, CHILD, 0);
    let after = image(&graph, CHILD, 1);
    assert_eq!(graph.processes[before].exe, b"/usr/bin/dash");
    assert_eq!(graph.processes[after].exe, b"/usr/bin/cat");
    assert_eq!(graph.processes[after].argv, ["cat", "/etc/motd"]);
    assert_eq!(graph.processes[after].begin_ns, 201 * MS);
    assert_eq!(graph.processes[after].exit_status, Some(0));
    assert_eq!(graph.processes[after].exec_from, Some(before));
    assert_eq!(graph.exec_successor(before), Some(after));
    // The exec open (before the exec record) belongs to the new image; the PATH search to the
    // old one; a merged record across the exec to both.
    assert_eq!(paths_of(&graph, before), ["/etc", "/usr/local/bin/cat"]);
    assert_eq!(
        paths_of(&graph, after),
        ["/etc", "/etc/motd", "/usr/bin/cat"]
    );
    assert_eq!(graph.exec_binary(after), Some(&b"/usr/bin/cat"[..]));
}

/// What the kernel does inside `execve` for the new program, as a real log shows it (dash's
/// child running `hostname`): the path walk's lookup of the binary, its exec open, reads of
/// its headers, the readlink of the ELF interpreter's symlink, the capability xattr, the
/// interpreter's exec open; then the `Exec` record. Everything from the exec open on is the
/// new image's; the calling image keeps only its lookup (existence).
#[test]
fn what_execve_does_for_the_new_program_belongs_to_the_new_image() {
    let mut trace = Trace::new("/");
    trace.info(SHELL, 1, "/usr/bin/dash", "sh -c hostname", 15);
    trace.fork(SHELL, CHILD, 100);
    trace.info(CHILD, SHELL.pid, "/usr/bin/dash", "sh -c hostname", 101);
    trace.access(
        CHILD,
        Op::Lookup,
        "/usr/bin/hostname",
        0,
        FileKind::File,
        110,
    );
    trace.access(
        CHILD,
        Op::Open,
        "/usr/bin/hostname",
        exec_intent(),
        FileKind::File,
        111,
    );
    let read = crate::record::intent::READ;
    trace.access_full(
        CHILD,
        Op::Read,
        "/usr/bin/hostname",
        None,
        read,
        FileKind::File,
        0,
        112,
        114,
    );
    trace.access(CHILD, Op::Readlink, "/lib64", 0, FileKind::Symlink, 112);
    trace.access(
        CHILD,
        Op::Getxattr,
        "/usr/bin/hostname",
        0,
        FileKind::File,
        113,
    );
    trace.access(
        CHILD,
        Op::Open,
        "/lib64/ld-linux-x86-64.so.2",
        exec_intent(),
        FileKind::File,
        113,
    );
    trace.exec(CHILD, 115);
    trace.info(CHILD, SHELL.pid, "/usr/bin/hostname", "hostname", 116);
    trace.read(CHILD, "/etc/hostname", 117);
    let graph = trace.graph();
    let caller = image(&graph, CHILD, 0);
    let helper = image(&graph, CHILD, 1);
    assert_eq!(paths_of(&graph, caller), ["/usr/bin/hostname"]);
    let caller_ops: Vec<FileOp> = graph.edges_of_process(caller).map(FileEdge::op).collect();
    assert_eq!(
        caller_ops,
        [FileOp::Stat],
        "the caller only looked the binary up"
    );
    assert_eq!(
        paths_of(&graph, helper),
        [
            "/etc/hostname",
            "/lib64",
            "/lib64/ld-linux-x86-64.so.2",
            "/usr/bin/hostname"
        ]
    );
    // The exec record's time is still the image's begin.
    assert_eq!(graph.processes[helper].begin_ns, 115 * MS);
    assert_eq!(graph.exec_binary(helper), Some(&b"/usr/bin/hostname"[..]));
}

#[test]
fn forks_link_the_image_that_forked_to_the_child() {
    let graph = shell_runs_cat().graph();
    let shell = image(&graph, SHELL, 0);
    let child = image(&graph, CHILD, 0);
    assert_eq!(graph.processes[child].forked_by, Some(shell));
    assert_eq!(
        graph.descendants(shell),
        vec![child, image(&graph, CHILD, 1)]
    );
    let dependencies: Vec<(ProcessIx, ProcessLink)> = graph
        .process_dependencies(image(&graph, CHILD, 1))
        .map(|(process, edge)| (process, edge.link))
        .collect();
    assert_eq!(dependencies, vec![(child, ProcessLink::Exec)]);
}

#[test]
fn without_a_fork_record_the_ppid_links_the_parent_and_image_0_inherits_its_binary() {
    let mut trace = Trace::new("/");
    trace.info(SHELL, 1, "/usr/bin/dash", "sh", 15);
    // The child's first record comes after its exec: its image 0 has no record.
    trace.exec(CHILD, 30);
    trace.info(CHILD, SHELL.pid, "/usr/bin/cat", "cat", 31);
    trace.read(CHILD, "/etc/motd", 40);
    let graph = trace.graph();
    let child0 = image(&graph, CHILD, 0);
    assert_eq!(
        graph.processes[child0].forked_by,
        Some(image(&graph, SHELL, 0))
    );
    assert!(!graph.processes[child0].described);
    assert_eq!(graph.processes[child0].exe, b"/usr/bin/dash");
}

#[test]
fn an_exec_image_described_without_its_ppid_keeps_the_parent_of_the_image_before() {
    let mut trace = Trace::new("/");
    trace.info(SHELL, 1, "/usr/bin/dash", "sh", 15);
    trace.fork(SHELL, CHILD, 20);
    trace.info(CHILD, SHELL.pid, "/usr/bin/dash", "sh", 21);
    trace.exec(CHILD, 30);
    // Gone before /proc was read: the record after the exec knows no parent (0).
    trace.info(CHILD, 0, "/usr/bin/true", "true", 31);
    let graph = trace.graph();
    assert_eq!(graph.processes[image(&graph, CHILD, 1)].ppid, SHELL.pid);
}

#[test]
fn a_reused_pid_is_two_processes_and_each_exec_goes_to_the_right_one() {
    let first = Proc { pid: 50, start: 1 };
    let second = Proc {
        pid: 50,
        start: 100,
    }; // starts at 1 s
    let mut trace = Trace::new("/");
    trace.info(first, 1, "/bin/a", "a", 15);
    trace.exit(first, 500);
    trace.info(second, 1, "/bin/b", "b", 1_001);
    trace.exec(second, 1_100);
    trace.info(second, 1, "/bin/c", "c", 1_101);
    let graph = trace.graph();
    assert_eq!(
        graph
            .images_of(crate::analysis::graph::uses::ProcessId {
                run: 0,
                pid: 50,
                start: 1
            })
            .len(),
        1
    );
    let images = graph.images_of(crate::analysis::graph::uses::ProcessId {
        run: 0,
        pid: 50,
        start: 100,
    });
    assert_eq!(images.len(), 2);
    assert_eq!(graph.processes[images[1]].exe, b"/bin/c");
}

fn socket_trace(client_at_ms: u64) -> Trace {
    let mut trace = Trace::new("/");
    trace.info(SERVER, 1, "/usr/bin/server", "server", 35);
    trace.info(CLIENT, 1, "/usr/bin/client", "client", 45);
    trace.access(SERVER, Op::Mknod, "/run/app.sock", 0, FileKind::Socket, 100);
    trace.access(
        CLIENT,
        Op::Lookup,
        "/run/app.sock",
        0,
        FileKind::Socket,
        client_at_ms,
    );
    trace
}

#[test]
fn a_lookup_of_a_bound_socket_path_is_a_connect_to_its_binder() {
    let graph = socket_trace(200).graph();
    assert_eq!(graph.endpoints.len(), 1);
    assert_eq!(
        graph.endpoints[0].key,
        EndpointKey::UnixSocket(b"/run/app.sock".to_vec())
    );
    let client = image(&graph, CLIENT, 0);
    let server = image(&graph, SERVER, 0);
    let connects: Vec<(ProcessIx, ProcessLink)> = graph
        .process_dependencies(client)
        .map(|(process, edge)| (process, edge.link))
        .collect();
    assert_eq!(connects, vec![(server, ProcessLink::Connect)]);
}

#[test]
fn a_lookup_before_the_bind_is_no_connect() {
    let graph = socket_trace(50).graph();
    let client = image(&graph, CLIENT, 0);
    assert_eq!(graph.process_dependencies(client).count(), 0);
    assert_eq!(
        graph.endpoints[0].clients.len(),
        1,
        "still a client of the path"
    );
}

fn tcp_trace(bind: &str, connect: &str, connect_at_ms: u64) -> Trace {
    let mut trace = Trace::new("/");
    trace.info(SERVER, 1, "/usr/bin/server", "server", 35);
    trace.info(CLIENT, 1, "/usr/bin/client", "client", 45);
    trace.net(SERVER, NetCall::Bind, bind, "stream", 100);
    trace.net(SERVER, NetCall::Listen, bind, "stream", 101);
    trace.net(CLIENT, NetCall::Connect, connect, "stream", connect_at_ms);
    trace
}

fn connects_of(graph: &Graph, client: ProcessIx) -> Vec<(ProcessIx, ProcessLink)> {
    graph
        .process_dependencies(client)
        .map(|(process, edge)| (process, edge.link))
        .collect()
}

#[test]
fn a_tcp_connect_to_a_bound_address_is_a_connect_to_its_binder() {
    let graph = tcp_trace("0.0.0.0:8080", "127.0.0.1:8080", 200).graph();
    let client = image(&graph, CLIENT, 0);
    let server = image(&graph, SERVER, 0);
    assert_eq!(
        connects_of(&graph, client),
        vec![(server, ProcessLink::Connect)]
    );
    assert_eq!(
        graph.endpoints[0].key,
        EndpointKey::Inet("tcp:0.0.0.0:8080".to_string())
    );
    assert_eq!(graph.stats.net_calls, 3);
    // Another port, or a connect before the bind: no edge; the address stays an endpoint
    // with clients only.
    for graph in [
        tcp_trace("127.0.0.1:8080", "127.0.0.1:8081", 200).graph(),
        tcp_trace("127.0.0.1:8080", "127.0.0.1:8080", 50).graph(),
    ] {
        let client = image(&graph, CLIENT, 0);
        assert!(connects_of(&graph, client).is_empty());
        assert!(
            graph
                .endpoints
                .iter()
                .any(|e| e.binders.is_empty() && !e.clients.is_empty())
        );
    }
}

#[test]
fn abstract_unix_sockets_are_endpoints_and_udp_does_not_serve_tcp() {
    let graph = tcp_trace("@app-bus", "@app-bus", 200).graph();
    let client = image(&graph, CLIENT, 0);
    let server = image(&graph, SERVER, 0);
    assert_eq!(
        connects_of(&graph, client),
        vec![(server, ProcessLink::Connect)]
    );
    assert_eq!(
        graph.endpoints[0].key.describe(),
        "unix:@app-bus".to_string()
    );
    let mut trace = Trace::new("/");
    trace.info(SERVER, 1, "/usr/bin/server", "server", 35);
    trace.info(CLIENT, 1, "/usr/bin/client", "client", 45);
    trace.net(SERVER, NetCall::Bind, "127.0.0.1:53", "dgram", 100);
    trace.net(CLIENT, NetCall::Connect, "127.0.0.1:53", "stream", 200);
    let graph = trace.graph();
    assert!(connects_of(&graph, image(&graph, CLIENT, 0)).is_empty());
}

#[test]
fn edges_add_up_repeated_records_and_classify_the_operation() {
    let mut trace = Trace::new("/");
    for at in 0..1000 {
        trace.read(SHELL, "/etc/motd", 20 + at);
    }
    trace.write(SHELL, "/var/log/app.log", 30);
    trace.missing(SHELL, "/etc/nope", 31);
    let graph = trace.graph();
    let motd = graph
        .file(b"/etc/motd")
        .unwrap_or_else(|| panic!("no node"));
    let edges: Vec<&FileEdge> = graph.edges_of_file(motd).collect();
    assert_eq!(edges.len(), 1);
    assert_eq!(edges[0].totals.count, 1000);
    assert_eq!(edges[0].totals.first_ns, 20 * MS);
    assert_eq!(edges[0].totals.last_ns, 1019 * MS);
    assert_eq!(edges[0].op(), FileOp::Read);
    assert!(edges[0].consumes() && !edges[0].produces());
    let log = graph
        .file(b"/var/log/app.log")
        .unwrap_or_else(|| panic!("no node"));
    assert!(
        graph
            .edges_of_file(log)
            .all(|edge| edge.produces() && !edge.reads_content())
    );
    let nope = graph
        .file(b"/etc/nope")
        .unwrap_or_else(|| panic!("no node"));
    assert!(!graph.files[nope].succeeded);
    assert!(
        graph
            .edges_of_file(nope)
            .all(|edge| edge.op() == FileOp::Missing)
    );
}

#[test]
fn a_log_file_read_in_two_passes_gives_the_same_graph() -> Result<(), Box<dyn std::error::Error>> {
    let trace = shell_runs_cat();
    let path = std::env::temp_dir().join(format!("depsetfs-graph-{}.log", std::process::id()));
    let mut writer = crate::log::LogWriter::create(&path, &trace.header)?;
    for record in &trace.records {
        writer.append(record)?;
    }
    writer.flush()?;
    drop(writer);
    let from_file = build::graph_from_log(&path);
    let _ = std::fs::remove_file(&path);
    let from_file = from_file?;
    let in_memory = trace.graph();
    assert_eq!(from_file.processes, in_memory.processes);
    assert_eq!(from_file.files, in_memory.files);
    assert_eq!(from_file.file_edges, in_memory.file_edges);
    assert_eq!(from_file.stats.records, trace.records.len() as u64);
    assert!(
        trace
            .records
            .iter()
            .any(|record| matches!(record, Record::Exec(_)))
    );
    Ok(())
}

#[test]
fn a_log_without_process_events_is_not_counted_as_lost_events() {
    let mut stats = LogStats::default();
    stats.lost.insert("proc-connector".to_string(), 2);
    assert!(!stats.process_events_unrecorded());
    stats
        .lost
        .insert(crate::record::CONNECTOR_UNAVAILABLE_SOURCE.to_string(), 1);
    assert!(stats.process_events_unrecorded());
    assert_eq!(stats.lost_events(), 2);
    assert_eq!(
        stats.counted_losses().collect::<Vec<_>>(),
        [("proc-connector", 2)]
    );
}

const KERNEL: Proc = Proc { pid: 0, start: 0 };
const READER2: Proc = Proc { pid: 22, start: 5 };

/// The kernel's RELEASE of a handle of `path` (after its last close).
fn release(trace: &mut Trace, path: &str, at_ms: u64) {
    trace.access(KERNEL, Op::Release, path, 0, FileKind::File, at_ms);
}

/// Two readers open /etc/app.conf (passthrough: no read records) at 100 and 110 ms; one of
/// them closes it at 120; CHILD then rewrites it at 130 (released at 135); the other reader
/// closes at 150; CLIENT opens it after the write, at 200.
fn readers_and_a_later_writer() -> Trace {
    let mut trace = Trace::new("/");
    trace.read(SERVER, "/etc/app.conf", 100);
    trace.read(READER2, "/etc/app.conf", 110);
    release(&mut trace, "/etc/app.conf", 120);
    trace.write(CHILD, "/etc/app.conf", 130);
    release(&mut trace, "/etc/app.conf", 135);
    release(&mut trace, "/etc/app.conf", 150);
    trace.read(CLIENT, "/etc/app.conf", 200);
    trace
}

fn reading_until(graph: &Graph, p: Proc, path: &[u8]) -> TimeNs {
    let process = image(graph, p, 0);
    let file = graph.file(path).expect("the file");
    let edge = graph
        .edges_of_process(process)
        .find(|edge| edge.file == file && edge.opens_for_reading())
        .expect("an open for reading");
    edge.reading_until
}

/// Which open a release ends is unknown: both early readers may read until the file had no
/// open handle (150 ms), past the write; an open after the write needs no window.
#[test]
fn an_open_for_reading_lasts_until_no_handle_of_the_file_is_open() {
    let graph = readers_and_a_later_writer().graph();
    let conf = b"/etc/app.conf";
    assert_eq!(reading_until(&graph, SERVER, conf), 150 * MS);
    assert_eq!(reading_until(&graph, READER2, conf), 150 * MS);
    assert_eq!(reading_until(&graph, CLIENT, conf), 200 * MS);
    // The writer's own create is no read.
    let writer = image(&graph, CHILD, 0);
    assert!(
        graph
            .edges_of_process(writer)
            .all(|edge| !edge.opens_for_reading())
    );
}

/// A reader that closed before the write ends there; one whose release the log never shows
/// (still open when recording stopped) may read until the end.
#[test]
fn a_closed_reader_ends_at_its_release_and_an_unreleased_one_never_ends() {
    let mut trace = Trace::new("/");
    trace.read(SERVER, "/etc/closed.conf", 100);
    release(&mut trace, "/etc/closed.conf", 105);
    trace.write(CHILD, "/etc/closed.conf", 130);
    release(&mut trace, "/etc/closed.conf", 131);
    trace.read(SERVER, "/etc/open.conf", 100);
    trace.write(CHILD, "/etc/open.conf", 130);
    release(&mut trace, "/etc/open.conf", 131);
    let graph = trace.graph();
    assert_eq!(reading_until(&graph, SERVER, b"/etc/closed.conf"), 105 * MS);
    assert_eq!(
        reading_until(&graph, SERVER, b"/etc/open.conf"),
        TimeNs::MAX,
        "the writer's release closed the writer's handle, not necessarily the reader's"
    );
}

/// Records are stamped after their replies: another process's quick open and close can reach
/// the log as a release stamped before its own open. That release must not end the reader's.
#[test]
fn a_release_stamped_before_its_own_open_does_not_close_an_earlier_reader() {
    let mut trace = Trace::new("/");
    trace.read(SERVER, "/etc/app.conf", 100);
    release(&mut trace, "/etc/app.conf", 110);
    trace.read(READER2, "/etc/app.conf", 111);
    trace.write(CHILD, "/etc/app.conf", 130);
    release(&mut trace, "/etc/app.conf", 131);
    release(&mut trace, "/etc/app.conf", 200);
    let graph = trace.graph();
    assert_eq!(reading_until(&graph, SERVER, b"/etc/app.conf"), 200 * MS);
}

#[test]
fn the_handle_pass_over_a_log_file_gives_the_same_windows() -> Result<(), Box<dyn std::error::Error>>
{
    let trace = readers_and_a_later_writer();
    let path = std::env::temp_dir().join(format!("depsetfs-handles-{}.log", std::process::id()));
    let mut writer = crate::log::LogWriter::create(&path, &trace.header)?;
    for record in &trace.records {
        writer.append(record)?;
    }
    writer.flush()?;
    drop(writer);
    let from_file = build::graph_from_log(&path);
    let _ = std::fs::remove_file(&path);
    assert_eq!(from_file?.file_edges, trace.graph().file_edges);
    Ok(())
}
