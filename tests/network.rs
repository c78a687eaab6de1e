//! Network recording on real traces: a TCP server and client on loopback inside the chroot,
//! started by `depsetfs run` and by `depsetfs mount` + `chroot-prepare` + `depsetfs chroot`.
//! The log must hold the bind by the server and the connect by the client, and selecting the
//! client must pull the server (a file only the server reads) into the `strict` set. The
//! client learns the port from its argument, not from a file the server wrote, so only the
//! connect edge links them; the controls (network recording disabled, plain `chroot`) show
//! that without it the server stays out, and that `dump --set` says why.

mod common;

use std::collections::BTreeSet;
use std::fs;

use common::*;
use serde_json::Value;

const WARNING: &str =
    "network edges were not recorded (the service was not started by depsetfs run/chroot)";

/// A loopback port nobody listens on right now.
fn free_port() -> u16 {
    let socket = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    socket.local_addr().expect("local address").port()
}

/// Writes server.py, client.py, server-only.txt and pair.sh (server in the background, client,
/// wait) into the test directory; returns the port.
fn write_scenario(t: &TestDir) -> u16 {
    let port = free_port();
    fs::write(t.join("server-only.txt"), "read by the server alone\n").unwrap();
    fs::write(
        t.join("server.py"),
        format!(
            "import socket\n\
             s = socket.socket()\n\
             s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
             s.bind(('127.0.0.1', {port}))\n\
             s.listen(1)\n\
             open('{t}/server-only.txt').read()\n\
             c, _ = s.accept()\n\
             c.sendall(b'pong')\n\
             c.close()\n",
            t = t.str()
        ),
    )
    .unwrap();
    fs::write(
        t.join("client.py"),
        format!(
            "import socket, time\n\
             for attempt in range(400):\n\
             \x20   try:\n\
             \x20       c = socket.create_connection(('127.0.0.1', {port}))\n\
             \x20       break\n\
             \x20   except ConnectionRefusedError:\n\
             \x20       time.sleep(0.025)\n\
             print(c.recv(4).decode())\n"
        ),
    )
    .unwrap();
    fs::write(
        t.join("pair.sh"),
        format!(
            "{PYTHON} {t}/server.py &\n{PYTHON} {t}/client.py\nwait\n",
            t = t.str()
        ),
    )
    .unwrap();
    port
}

fn set_json(t: &TestDir, args: &[&str]) -> (Value, Outcome) {
    let log = t.log();
    let mut all = vec!["dump", "--set", "--json", "--log", log.to_str().unwrap()];
    all.extend_from_slice(args);
    let out = depsetfs(t, &all);
    out.assert_ok(&format!("depsetfs {all:?}"));
    let json = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("dump --set --json is not JSON ({e}): {}", out.stdout));
    (json, out)
}

fn entries(json: &Value) -> BTreeSet<String> {
    json["entries"]
        .as_array()
        .expect("no entries")
        .iter()
        .map(|entry| entry["path"].as_str().unwrap().to_string())
        .collect()
}

/// The pid of the process whose argv names `script`.
fn pid_running(events: &[Value], script: &str) -> u64 {
    of_type(events, "process")
        .find(|p| {
            p["argv"].as_array().is_some_and(|argv| {
                argv.iter()
                    .any(|a| a.as_str().is_some_and(|a| a.ends_with(script)))
            })
        })
        .and_then(|p| p["pid"].as_u64())
        .unwrap_or_else(|| panic!("no process ran {script}"))
}

/// The log's net records: the server bound and listened on the port, the client connected to
/// it; returns the client's pid.
fn assert_net_records(t: &TestDir, port: u16) -> u64 {
    let events = dump_events(t, &t.log());
    let server = pid_running(&events, "server.py");
    let client = pid_running(&events, "client.py");
    let address = format!("127.0.0.1:{port}");
    let net: Vec<&Value> = of_type(&events, "net").collect();
    let has = |pid: u64, call: &str| {
        net.iter().any(|n| {
            n["pid"] == pid
                && n["call"] == call
                && n["family"] == "inet"
                && n["address"] == address.as_str()
                && n["socket_type"] == "stream"
        })
    };
    assert!(
        has(server, "bind"),
        "no bind of {address} by the server {server}: {net:?}"
    );
    assert!(
        has(server, "listen"),
        "no listen on {address} by the server: {net:?}"
    );
    assert!(
        has(client, "connect"),
        "no connect to {address} by the client {client}: {net:?}"
    );
    client
}

fn assert_client_pulls_server(t: &TestDir, selection: &[&str]) {
    let mut args = vec!["--strategy", "strict"];
    args.extend_from_slice(selection);
    let (json, out) = set_json(t, &args);
    let set = entries(&json);
    assert_in_set(
        &set,
        &format!("{}/server-only.txt", t.str()),
        "read by the server the client connected to",
    );
    assert_in_set(
        &set,
        &format!("{}/server.py", t.str()),
        "the server's script",
    );
    assert!(!out.stderr.contains(WARNING), "{}", out.stderr);
    let why: Vec<&str> = json["needed"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|process| process["why"].as_str())
        .collect();
    assert!(
        why.iter()
            .any(|reason| reason.starts_with("bound tcp:127.0.0.1:")),
        "the server is needed because the client connected to it: {why:?}"
    );
}

#[test]
fn run_records_tcp_calls_and_the_client_pulls_in_the_server() {
    let t = TestDir::new("network_run");
    let port = write_scenario(&t);
    let out = ns_script(
        &t,
        300,
        r#""$DEPSETFS" run --log "$T/log" --timeout 120 -- sh "$T/pair.sh""#,
    );
    out.assert_ok("depsetfs run -- sh pair.sh");
    assert!(out.stdout.contains("pong"), "{}", out.describe());
    let client = assert_net_records(&t, port);
    let events = dump_events(&t, &t.log());
    assert_eq!(events[0]["network_recorded"], true);
    assert_client_pulls_server(&t, &["--cmd", "client\\.py"]);
    assert_client_pulls_server(&t, &["--pid", &client.to_string()]);
}

#[test]
fn without_network_recording_the_server_stays_out_and_dump_says_so() {
    let t = TestDir::new("network_off");
    write_scenario(&t);
    let out = ns_script(
        &t,
        300,
        r#"DEPSETFS_NO_NET_TRACE=1 "$DEPSETFS" run --log "$T/log" --timeout 120 -- sh "$T/pair.sh""#,
    );
    out.assert_ok("depsetfs run -- sh pair.sh without network recording");
    let events = dump_events(&t, &t.log());
    assert_eq!(events[0]["network_recorded"], false);
    assert_eq!(of_type(&events, "net").count(), 0);
    let (json, out) = set_json(&t, &["--strategy", "strict", "--cmd", "client\\.py"]);
    assert_not_in_set(&entries(&json), &format!("{}/server-only.txt", t.str()));
    assert!(out.stderr.contains(WARNING), "no warning: {}", out.stderr);
}

#[test]
fn mount_prepare_and_depsetfs_chroot_record_the_network() {
    let t = TestDir::new("network_chroot");
    let port = write_scenario(&t);
    let out = ns_script(
        &t,
        300,
        r#"
"$DEPSETFS" mount --log "$T/log" "$MP"
"$HELPERS/chroot-prepare" "$MP"
timeout 120 "$DEPSETFS" chroot "$MP" -- sh "$T/pair.sh"
"$HELPERS/chroot-release" "$MP"
"$DEPSETFS" umount "$MP"
"#,
    );
    out.assert_ok("mount, chroot-prepare, depsetfs chroot");
    assert!(out.stdout.contains("pong"), "{}", out.describe());
    assert_net_records(&t, port);
    let events = dump_events(&t, &t.log());
    assert!(
        of_type(&events, "net").any(|n| n["call"] == "traced"),
        "no traced record"
    );
    assert_client_pulls_server(&t, &["--cmd", "client\\.py"]);
}

#[test]
fn a_plain_chroot_records_files_but_not_the_network() {
    let t = TestDir::new("network_plain");
    write_scenario(&t);
    let out = ns_script(
        &t,
        300,
        r#"
"$DEPSETFS" mount --log "$T/log" "$MP"
"$HELPERS/chroot-prepare" "$MP"
timeout 120 chroot "$MP" sh "$T/pair.sh"
"$HELPERS/chroot-release" "$MP"
"$DEPSETFS" umount "$MP"
"#,
    );
    out.assert_ok("mount, chroot-prepare, plain chroot");
    let events = dump_events(&t, &t.log());
    assert_eq!(events[0]["network_recorded"], false);
    assert_eq!(of_type(&events, "net").count(), 0);
    let set = depsetfs(&t, &["dump", "--set", "--log", t.log().to_str().unwrap()]);
    set.assert_ok("dump --set");
    assert!(
        set.stdout.contains("/server.py"),
        "files are still recorded"
    );
    assert_eq!(
        set.stderr.lines().filter(|l| l.contains(WARNING)).count(),
        1,
        "one warning line: {}",
        set.stderr
    );
}

#[test]
fn depsetfs_chroot_refuses_what_is_not_a_live_depsetfs_mount() {
    let t = TestDir::new("network_bad");
    let out = ns_script(
        &t,
        60,
        r#"
"$DEPSETFS" chroot "$MP" -- /bin/true && exit 1
"$DEPSETFS" mount "$MP" 2>/dev/null
"$DEPSETFS" chroot "$MP" -- /no/such/command && exit 1
daemon=$(sed -n 's/.*"pid":\([0-9]*\).*/\1/p' "$DEPSETFS_STATE_DIR"/mounts/*.json)
kill -9 "$daemon"
# Dead once its memory is gone (an empty cmdline), however loaded the machine.
for _ in $(seq 100); do grep -q . "/proc/$daemon/cmdline" 2>/dev/null || break; sleep 0.1; done
"$DEPSETFS" chroot "$MP" -- /bin/true && exit 1
"$DEPSETFS" umount "$MP" 2>/dev/null
exit 0
"#,
    );
    out.assert_ok("depsetfs chroot on bad input");
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 3, "one line per error: {}", out.describe());
    assert!(lines[0].contains("is not a depsetfs mount"), "{}", lines[0]);
    assert!(lines[1].contains("/no/such/command"), "{}", lines[1]);
    assert!(lines[1].contains("not found"), "{}", lines[1]);
    assert!(
        lines[2].contains("daemon of this mount is gone"),
        "{}",
        lines[2]
    );
}
