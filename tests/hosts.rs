//! Many machines (issue 16), the parts on one log per host: a log's header names its host
//! (`run --host`) and the addresses of the network namespace its command ran in (`run
//! --netns`); `host-refs` finds the set's files that name a recorded host (its name, its
//! addresses, the peers it connected to) with the line; `export --map OLD=NEW` rewrites them in
//! the exported copy only. The two-host test runs the seed's PHP + MariaDB sequence over two
//! network namespaces, "web" and "db", joined by a veth pair with private addresses, each
//! traced by its own `depsetfs run --host`, each started again from nothing but its own set,
//! then moves the db host to another address with `--map`.

mod common;

use std::collections::BTreeSet;
use std::fs;

use common::*;
use serde_json::Value;

/// A namespace `$NS` holding `$ADDR/24` on a veth end, held open by a `sleep` (`$HOLDER`),
/// deleted on exit. `$NSPATH` is the namespace file to give `--netns`.
const ONE_NETNS: &str = r#"NS="depsetfs-hosts-$$"
HOLDER=
netns_cleanup() {
  local rc=$?
  set +e
  if [ -n "$HOLDER" ]; then kill "$HOLDER" 2>/dev/null; wait "$HOLDER" 2>/dev/null; fi
  ip netns delete "$NS" 2>/dev/null
  __depsetfs_test_cleanup
  return $rc
}
trap netns_cleanup EXIT
ip netns add "$NS"
ip -n "$NS" link set lo up
ip -n "$NS" link add h0 type veth peer name h1
ip -n "$NS" addr add 10.213.7.1/24 dev h0
ip -n "$NS" link set h1 up
ip -n "$NS" link set h0 up
ip netns exec "$NS" sleep 120 &
HOLDER=$!
NSPATH="/run/netns/$NS"
"#;

#[test]
fn files_naming_a_host_are_reported_and_mapped_in_the_copy_only() {
    let t = TestDir::new("host_refs");
    let conf = t.join("app.conf");
    let original =
        "db_host = 10.213.7.2\nnot_it = 10.213.7.25\nlisten = 10.213.7.1:8080\nname = web\n";
    fs::write(&conf, original).unwrap();
    let traced = ns_script(
        &t,
        120,
        &format!(
            r#"{ONE_NETNS}"$DEPSETFS" run --host web --netns "$NSPATH" --log "$T/log" -- \
  bash -c 'cat "$T/app.conf" >/dev/null; timeout 2 bash -c "exec 3<>/dev/tcp/10.213.7.2/3306" 2>/dev/null; true'
"#
        ),
    );
    traced.assert_ok("trace a reader of app.conf that connects to 10.213.7.2");

    let events = dump_events(&t, &t.log());
    let header = &events[0];
    assert_eq!(header["host"], "web", "{header}");
    assert_eq!(
        header["addresses"],
        serde_json::json!(["10.213.7.1"]),
        "the namespace's address, without loopback: {header}"
    );

    let log = t.log();
    let refs = depsetfs(&t, &["host-refs", "--json", "--log", log.to_str().unwrap()]);
    refs.assert_ok("host-refs --json");
    let report: Value = serde_json::from_str(&refs.stdout).expect("JSON");
    let conf_path = conf.to_str().unwrap();
    let lines: BTreeSet<(u64, String)> = report["refs"]
        .as_array()
        .expect("refs")
        .iter()
        .filter(|r| r["path"] == conf_path)
        .map(|r| {
            (
                r["line"].as_u64().unwrap_or(0),
                r["what"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    let expected: BTreeSet<(u64, String)> =
        [(1, "peer address"), (3, "host address"), (4, "host name")]
            .into_iter()
            .map(|(line, what)| (line, what.to_owned()))
            .collect();
    assert_eq!(lines, expected, "{}", refs.stdout);

    let out_dir = t.join("out");
    let exported = depsetfs(
        &t,
        &[
            "export",
            "--log",
            log.to_str().unwrap(),
            "--format",
            "dir",
            "--output",
            out_dir.to_str().unwrap(),
            "--map",
            "10.213.7.2=10.213.9.2",
            "--map",
            "web=web2",
        ],
    );
    exported.assert_ok("export --format dir --map");
    let copy = fs::read_to_string(out_dir.join(conf_path.trim_start_matches('/'))).unwrap();
    assert_eq!(
        copy,
        "db_host = 10.213.9.2\nnot_it = 10.213.7.25\nlisten = 10.213.7.1:8080\nname = web2\n"
    );
    assert_eq!(
        fs::read_to_string(&conf).unwrap(),
        original,
        "the source changed"
    );
    for line in [1, 4] {
        let said = format!("depsetfs: rewrote {conf_path}:{line}: ");
        assert!(
            exported.stderr.contains(&said),
            "{said}: {}",
            exported.stderr
        );
    }

    let tar = t.join("out.tar");
    let tarred = depsetfs(
        &t,
        &[
            "export",
            "--log",
            log.to_str().unwrap(),
            "--format",
            "tar",
            "--output",
            tar.to_str().unwrap(),
            "--map",
            "10.213.7.2=10.213.9.2",
        ],
    );
    tarred.assert_ok("export --format tar --map");
    let member = conf_path.trim_start_matches('/');
    let listed = host_script(&t, 30, &format!(r#"tar -xOf "$T/out.tar" "{member}""#));
    listed.assert_ok("read app.conf from the tar");
    assert!(
        listed.stdout.starts_with("db_host = 10.213.9.2\n"),
        "{}",
        listed.stdout
    );
    let oci = t.join("out.oci");
    let imaged = depsetfs(
        &t,
        &[
            "export",
            "--log",
            log.to_str().unwrap(),
            "--format",
            "oci",
            "--output",
            oci.to_str().unwrap(),
            "--map",
            "10.213.7.2=10.213.9.2",
        ],
    );
    imaged.assert_ok("export --format oci --map");
    assert!(
        imaged
            .stderr
            .contains(&format!("depsetfs: rewrote {conf_path}:1: ")),
        "{}",
        imaged.stderr
    );
}
