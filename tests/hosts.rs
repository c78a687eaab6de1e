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

/// Fleet scale (docs/fleet.md): three hosts' logs as Parquet, queried with DuckDB. "The files
/// every host needs" and "the hosts that use libcurl" must give what depsetfs itself says
/// (`dump --set` of each log). DuckDB is the `duckdb` package from PyPI (scripts/test.sh
/// installs it); without it the test is skipped with a message, except in CI, where it fails.
#[test]
fn fleet_queries_over_parquet_give_the_sets_answers() {
    let t = TestDir::new("fleet_duckdb");
    let probe = host_script(&t, 60, r#""$PY" -c 'import duckdb'"#);
    if !probe.ok() {
        assert!(
            std::env::var_os("CI").is_none(),
            "the duckdb Python package is missing in CI (scripts/test.sh installs it): {}",
            probe.describe()
        );
        eprintln!(
            "SKIPPED fleet_queries_over_parquet_give_the_sets_answers: no duckdb for {} \
             (python3 -m pip install --break-system-packages duckdb)",
            PYTHON
        );
        return;
    }
    let hosts = [
        (
            "web",
            "cat /etc/passwd >/dev/null; /usr/bin/curl --version >/dev/null",
        ),
        ("db", "cat /etc/passwd >/dev/null; ls / >/dev/null"),
        ("cache", "/usr/bin/curl --version >/dev/null"),
    ];
    let mut script = String::from("mkdir -p \"$T/fleet\"\n");
    for (host, command) in hosts {
        script.push_str(&format!(
            r#""$DEPSETFS" run --host {host} --log "$T/{host}.dlog" -- /bin/sh -c '{command}'
"$DEPSETFS" dump --log "$T/{host}.dlog" --format parquet --output "$T/fleet/{host}-access.parquet"
"$DEPSETFS" dump --log "$T/{host}.dlog" --set --format parquet --output "$T/fleet/{host}-set.parquet"
"$DEPSETFS" dump --log "$T/{host}.dlog" --set > "$T/{host}.set"
"#
        ));
    }
    ns_script(&t, 300, &script).assert_ok("three hosts traced and dumped");

    let sets: Vec<(String, BTreeSet<String>)> = hosts
        .iter()
        .map(|(host, _)| {
            let text = fs::read_to_string(t.join(&format!("{host}.set"))).unwrap();
            (host.to_string(), text.lines().map(str::to_owned).collect())
        })
        .collect();
    let mut every_host = sets[0].1.clone();
    for (_, set) in &sets[1..] {
        every_host = every_host.intersection(set).cloned().collect();
    }
    let curl_hosts: BTreeSet<String> = sets
        .iter()
        .filter(|(_, set)| set.iter().any(|path| path.contains("/libcurl.so")))
        .map(|(host, _)| host.clone())
        .collect();
    assert_eq!(
        curl_hosts,
        ["cache", "web"].map(str::to_owned).into(),
        "the hosts that ran curl"
    );
    assert!(every_host.contains("/etc/ld.so.cache"), "{every_host:?}");

    let queries = r#"
import duckdb, json, sys
fleet = sys.argv[1]
sets = f"read_parquet('{fleet}/*-set.parquet')"
accesses = f"read_parquet('{fleet}/*-access.parquet')"
every_host = duckdb.sql(f"""
  SELECT path FROM {sets} GROUP BY path
  HAVING count(DISTINCT host) = (SELECT count(DISTINCT host) FROM {sets}) ORDER BY path
""").fetchall()
curl_in_sets = duckdb.sql(f"""
  SELECT DISTINCT host FROM {sets} WHERE path LIKE '%/libcurl.so%' ORDER BY host
""").fetchall()
curl_opened = duckdb.sql(f"""
  SELECT DISTINCT host FROM {accesses}
  WHERE ok AND op = 'open' AND path LIKE '%/libcurl.so%' ORDER BY host
""").fetchall()
labels = duckdb.sql(f"SELECT DISTINCT label FROM {accesses} ORDER BY label").fetchall()
print(json.dumps({
  "every_host": [r[0] for r in every_host],
  "curl_in_sets": [r[0] for r in curl_in_sets],
  "curl_opened": [r[0] for r in curl_opened],
  "labels": [r[0] for r in labels],
}))
"#;
    fs::write(t.join("queries.py"), queries).unwrap();
    let answer = host_script(&t, 120, r#""$PY" "$T/queries.py" "$T/fleet""#);
    answer.assert_ok("the DuckDB queries");
    let answer: Value = serde_json::from_str(answer.stdout.trim()).expect("JSON");
    let strings = |key: &str| -> BTreeSet<String> {
        answer[key]
            .as_array()
            .unwrap_or_else(|| panic!("{key}: {answer}"))
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect()
    };
    assert_eq!(
        strings("every_host"),
        every_host,
        "the files every host needs"
    );
    assert_eq!(strings("curl_in_sets"), curl_hosts, "libcurl in the sets");
    assert_eq!(strings("curl_opened"), curl_hosts, "libcurl opened");
    assert_eq!(
        strings("labels"),
        ["cache", "db", "web"].map(str::to_owned).into(),
        "each log's file stem is its label"
    );
}
