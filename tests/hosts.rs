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
        (
            "cache",
            "/usr/bin/curl --version >/dev/null; bash -c \"exec 3<>/dev/tcp/127.0.0.1/9\" 2>/dev/null; true",
        ),
    ];
    let mut script = String::from("mkdir -p \"$T/fleet\"\n");
    for (host, command) in hosts {
        script.push_str(&format!(
            r#""$DEPSETFS" run --host {host} --log "$T/{host}.dlog" -- /bin/sh -c '{command}'
"$DEPSETFS" dump --log "$T/{host}.dlog" --format parquet --output "$T/fleet/{host}-access.parquet"
"$DEPSETFS" dump --log "$T/{host}.dlog" --set --format parquet --output "$T/fleet/{host}-set.parquet"
"$DEPSETFS" dump --log "$T/{host}.dlog" --format parquet --net --output "$T/fleet/{host}-net.parquet"
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
connected = duckdb.sql(f"""
  SELECT DISTINCT host FROM read_parquet('{fleet}/*-net.parquet')
  WHERE call = 'connect' AND address = '127.0.0.1:9' ORDER BY host
""").fetchall()
print(json.dumps({
  "every_host": [r[0] for r in every_host],
  "curl_in_sets": [r[0] for r in curl_in_sets],
  "curl_opened": [r[0] for r in curl_opened],
  "labels": [r[0] for r in labels],
  "connected": [r[0] for r in connected],
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
    let connected: BTreeSet<String> = hosts
        .iter()
        .filter(|(host, _)| {
            let events = dump_events(&t, &t.join(&format!("{host}.dlog")));
            of_type(&events, "net").any(|e| e["call"] == "connect" && e["address"] == "127.0.0.1:9")
        })
        .map(|(host, _)| host.to_string())
        .collect();
    assert_eq!(
        connected,
        ["cache".to_owned()].into(),
        "the log's own net records"
    );
    assert_eq!(
        strings("connected"),
        connected,
        "the hosts that connected to 127.0.0.1:9"
    );
}

const WEB_ADDR: &str = "10.213.8.1";
const DB_ADDR: &str = "10.213.8.2";
/// Where the db host moves to.
const DB_MOVED: &str = "10.213.8.3";
/// The port MariaDB listens on (tests/scripts/hosts_setup.sh).
const DB_PORT: u16 = 3313;

/// Two network namespaces, `$WEBNS` and `$DBNS` (files under /run/netns), joined by a veth
/// pair: w0 (web, 10.213.8.1/24) and d0 (db, 10.213.8.2/24); the private range exists only
/// inside them. Both are deleted on exit.
const TWO_NETNS: &str = r#"W="depsetfs-web-$$" D="depsetfs-db-$$"
WEBNS="/run/netns/$W" DBNS="/run/netns/$D"
netns_cleanup() {
  local rc=$?
  set +e
  [ -n "${DBRUN:-}" ] && { touch "$T/srv/db/stop"; wait "$DBRUN"; }
  ip netns delete "$W" 2>/dev/null
  ip netns delete "$D" 2>/dev/null
  __depsetfs_test_cleanup
  return $rc
}
trap netns_cleanup EXIT
ip netns add "$W"
ip netns add "$D"
ip link add w0 netns "$W" type veth peer name d0 netns "$D"
ip -n "$W" addr add 10.213.8.1/24 dev w0
ip -n "$D" addr add 10.213.8.2/24 dev d0
for ns in "$W" "$D"; do ip -n "$ns" link set lo up; done
ip -n "$W" link set w0 up
ip -n "$D" link set d0 up
echo "netns=$W $D"
"#;

/// The selections of each host's strict set.
const WEB_SELECTION: [&str; 6] = ["--strategy", "strict", "--cmd", "php-fpm", "--cmd", "nginx"];
const DB_SELECTION: [&str; 4] = ["--strategy", "strict", "--cmd", "mariadbd"];

#[test]
fn two_hosts_each_run_from_their_own_set_and_the_db_host_moves() {
    let t = TestDir::new("two_hosts");
    for program in [
        "mariadbd",
        "mariadb-install-db",
        "php-fpm8.2",
        "nginx",
        "curl",
    ] {
        host_command(program);
    }
    let setup = t.install_script("hosts_setup.sh");
    t.install_script("web_tier.sh"); // sourced by it
    t.install_script("hosts_db.sh");
    t.install_script("hosts_web.sh");
    host_script(
        &t,
        240,
        &format!(
            r#"bash "{}" "$T/srv" {WEB_ADDR} {DB_ADDR}"#,
            setup.display()
        ),
    )
    .assert_ok("write the db host's datadir and the web host's configuration");

    // Each host traced by its own `depsetfs run`, the db host's in the background until the
    // web host's page was fetched.
    let traced = ns_script(
        &t,
        300,
        &format!(
            r#"{TWO_NETNS}
"$DEPSETFS" run --host db --netns "$DBNS" --log "$T/db.dlog" --timeout 250 -- \
  bash "$T/hosts_db.sh" "$T/srv" &
DBRUN=$!
for _ in $(seq 300); do [ -S "$T/srv/db/run/mysqld.sock" ] && break; sleep 0.1; done
"$DEPSETFS" run --host web --netns "$WEBNS" --log "$T/web.dlog" --timeout 120 -- \
  bash "$T/hosts_web.sh" "$T/srv" {WEB_ADDR}
touch "$T/srv/db/stop"
wait "$DBRUN"
DBRUN=
"#
        ),
    );
    traced.assert_ok("trace the two hosts");
    assert_eq!(
        page_of(&traced),
        "row 1: hello from the db host",
        "{}",
        traced.describe()
    );

    for (host, address) in [("web", WEB_ADDR), ("db", DB_ADDR)] {
        let events = dump_events(&t, &t.join(&format!("{host}.dlog")));
        assert_eq!(events[0]["host"], host, "{}", events[0]);
        assert_eq!(
            events[0]["addresses"],
            serde_json::json!([address]),
            "the addresses of the host's own namespace: {}",
            events[0]
        );
    }

    // Each host's strict set: its own services, not the other host's; PostgreSQL in neither.
    let web_set = set_of(&t, "web", &WEB_SELECTION);
    let db_set = set_of(&t, "db", &DB_SELECTION);
    for binary in ["/usr/sbin/php-fpm8.2", "/usr/sbin/nginx"] {
        assert_in_set(&web_set, binary, "a web host service");
        assert_not_in_set(&db_set, binary);
    }
    assert_in_set(&db_set, "/usr/sbin/mariadbd", "the db host's server");
    assert_not_in_set(&web_set, "/usr/sbin/mariadbd");
    assert!(
        web_set.iter().any(|p| p.ends_with("/mysqli.so")),
        "PHP's mysqli extension is not in the web host's set"
    );
    let table = format!("{}/srv/db/data/seed/greeting.ibd", t.str());
    assert_in_set(&db_set, &table, "the table the page reads");
    assert_not_in_set(&web_set, &table);
    for set in [&web_set, &db_set] {
        assert_no_postgresql(set);
    }

    // The files naming a host: the page names the db host (a peer), nginx.conf the web host's
    // own address; the db host's my.cnf binds its own.
    let page = format!("{}/srv/web/www/row.php", t.str());
    let nginx_conf = format!("{}/srv/web/nginx.conf", t.str());
    let my_cnf = format!("{}/srv/db/my.cnf", t.str());
    let web_refs = host_refs(&t, "web", &WEB_SELECTION);
    assert!(
        web_refs.contains(&(page.clone(), 2, "peer address".to_owned())),
        "{web_refs:?}"
    );
    assert!(
        web_refs.contains(&(nginx_conf, 14, "host address".to_owned())),
        "{web_refs:?}"
    );
    let db_refs = host_refs(&t, "db", &DB_SELECTION);
    assert!(
        db_refs.contains(&(my_cnf.clone(), 7, "host address".to_owned())),
        "{db_refs:?}"
    );

    // The hosts' logs merged: php-fpm's connect on web reaches mariadbd on db.
    let app = t.join("app.dlog");
    let app = app.to_str().unwrap();
    depsetfs(
        &t,
        &[
            "merge",
            t.join("web.dlog").to_str().unwrap(),
            t.join("db.dlog").to_str().unwrap(),
            "--output",
            app,
        ],
    )
    .assert_ok("merge web.dlog db.dlog");
    let tree = depsetfs(&t, &["tree", "--log", app]);
    tree.assert_ok("tree of the merged log");
    for said in ["run web (host web):", "run db (host db):"] {
        assert!(tree.stdout.contains(said), "{said}: {}", tree.stdout);
    }
    let cross = format!("-> tcp:{DB_ADDR}:{DB_PORT} on db (run db): pid ");
    assert!(
        tree.stdout
            .lines()
            .any(|line| line.contains(&cross) && line.ends_with("/usr/sbin/mariadbd")),
        "{cross}: {}",
        tree.stdout
    );
    let why = depsetfs(
        &t,
        &[
            "why",
            &table,
            "--host",
            "db",
            "--exe",
            "/usr/sbin/nginx",
            "--children",
            "--log",
            app,
        ],
    );
    why.assert_ok("why the table, from nginx");
    let at = |what: &str| {
        why.stdout
            .find(what)
            .unwrap_or_else(|| panic!("{what}: {}", why.stdout))
    };
    assert!(
        at("/usr/sbin/nginx") < at("php-fpm") && at("php-fpm") < at("mariadbd"),
        "the chain crosses hosts: {}",
        why.stdout
    );

    // The web tier alone selected: the db host's set holds its server and data through the
    // connection, the web host's set nothing of the db host.
    let merged_web = merged_set_of(&t, "web");
    let merged_db = merged_set_of(&t, "db");
    for binary in ["/usr/sbin/php-fpm8.2", "/usr/sbin/nginx"] {
        assert_in_set(&merged_web, binary, "a web host service (merged)");
        assert_not_in_set(&merged_db, binary);
    }
    assert_in_set(
        &merged_db,
        "/usr/sbin/mariadbd",
        "the db server, through the connection",
    );
    assert_in_set(&merged_db, &table, "the table the page reads (merged)");
    for db_file in merged_db
        .iter()
        .filter(|p| p.starts_with(&format!("{}/srv/db/", t.str())))
    {
        assert_not_in_set(&merged_web, db_file);
    }
    for set in [&merged_web, &merged_db] {
        assert_no_postgresql(set);
    }

    // host-refs of one host of the merged log (its --host is the set's host, no clash).
    let merged_refs = depsetfs(
        &t,
        &[
            "host-refs",
            "--json",
            "--host",
            "web",
            "--log",
            app,
            "--strategy",
            "strict",
            "--exe",
            "/usr/sbin/nginx",
            "--children",
        ],
    );
    merged_refs.assert_ok("host-refs --host web of the merged log");
    let report: Value = serde_json::from_str(&merged_refs.stdout).expect("JSON");
    assert_eq!(report["host"], "web", "{report}");
    assert!(
        report["refs"]
            .as_array()
            .expect("refs")
            .iter()
            .any(|r| r["path"] == page.as_str() && r["line"] == 2),
        "{report}"
    );
    for (args, expected) in [
        (
            vec!["dump", "--set", "--host", "nowhere", "--log", app],
            "depsetfs: --host nowhere: no run of the log is on that host (its hosts: db, web)",
        ),
        (
            vec![
                "export", "--log", app, "--format", "compose", "--host", "db", "--output", "x",
            ],
            "depsetfs: export --format compose exports every host's set: leave out --host and --prefer",
        ),
    ] {
        let out = depsetfs(&t, &args);
        assert!(!out.ok(), "{args:?} succeeded");
        let lines: Vec<&str> = out
            .stderr
            .lines()
            .filter(|line| !line.contains(": warning: "))
            .collect();
        assert_eq!(lines, vec![expected], "{args:?}: {}", out.stderr);
    }

    // Each host started from nothing but its own set (from the merged log), in its own
    // namespace.
    let replay = ns_script(&t, 300, &format!("{TWO_NETNS}{}", replay_script("", "")));
    replay.assert_ok("each host from its own set");
    assert_eq!(
        page_of(&replay),
        "row 1: hello from the db host",
        "{}",
        replay.describe()
    );
    assert_every_elf_loads(&t.join("web-root"));
    assert_every_elf_loads(&t.join("db-root"));

    // Every host's set (the traced commands selected) as an image, and a compose file.
    let composed = depsetfs(
        &t,
        &[
            "export",
            "--log",
            app,
            "--format",
            "compose",
            "--strategy",
            "strict",
            "--output",
            t.join("app").to_str().unwrap(),
        ],
    );
    composed.assert_ok("export --format compose");
    let check = r#"
import json, sys, yaml
doc = yaml.safe_load(open(sys.argv[1]))
print(json.dumps(doc))
"#;
    fs::write(t.join("compose_check.py"), check).unwrap();
    let parsed = ns_script(
        &t,
        120,
        r#""$PY" "$T/compose_check.py" "$T/app/compose.yaml"
for host in web db; do
  umoci unpack --image "$T/app/$host:latest" "$T/bundle-$host" >/dev/null
  test -x "$T/bundle-$host/rootfs/usr/bin/bash"
done
test -x "$T/bundle-db/rootfs/usr/sbin/mariadbd"
test ! -e "$T/bundle-web/rootfs/usr/sbin/mariadbd"
test -x "$T/bundle-web/rootfs/usr/sbin/nginx"
chroot "$T/bundle-db/rootfs" /usr/sbin/mariadbd --version >&2
chroot "$T/bundle-web/rootfs" /usr/sbin/nginx -v"#,
    );
    parsed.assert_ok(
        "compose.yaml parses as YAML; umoci unpacks both images, their servers run in a chroot",
    );
    let doc: Value = serde_json::from_str(parsed.stdout.trim()).expect("JSON");
    let services = &doc["services"];
    assert_eq!(
        services["web"]["depends_on"],
        serde_json::json!(["db"]),
        "{doc}"
    );
    assert!(services["db"]["depends_on"].is_null(), "{doc}");
    assert_eq!(
        services["web"]["ports"],
        serde_json::json!(["8080/tcp"]),
        "{doc}"
    );
    assert_eq!(
        services["db"]["ports"],
        serde_json::json!([format!("{DB_PORT}/tcp")]),
        "{doc}"
    );
    assert_eq!(
        services["db"]["networks"]["depsetfs"]["ipv4_address"], DB_ADDR,
        "{doc}"
    );
    assert_eq!(services["web"]["hostname"], "web", "{doc}");
    assert_eq!(services["db"]["image"], "app/db:latest", "{doc}");
    assert_eq!(services["web"]["entrypoint"][0], "bash", "{doc}");
    assert_eq!(
        doc["networks"]["depsetfs"]["ipam"]["config"][0]["subnet"], "10.213.8.0/24",
        "{doc}"
    );

    // The db host moves: both copies exported with the new address, the source untouched.
    let moved = ns_script(
        &t,
        300,
        &format!(
            "{TWO_NETNS}ip -n \"$D\" addr del {DB_ADDR}/24 dev d0\n\
             ip -n \"$D\" addr add {DB_MOVED}/24 dev d0\n{}",
            replay_script("-moved", &format!("--map {DB_ADDR}={DB_MOVED}"))
        ),
    );
    moved.assert_ok("the db host at its new address");
    assert_eq!(
        page_of(&moved),
        "row 1: hello from the db host",
        "{}",
        moved.describe()
    );
    for said in [
        format!("depsetfs: rewrote {page}:2: {DB_ADDR} -> {DB_MOVED}"),
        format!("depsetfs: rewrote {my_cnf}:7: {DB_ADDR} -> {DB_MOVED}"),
    ] {
        assert!(moved.stderr.contains(&said), "{said}: {}", moved.describe());
    }
    let source_page = fs::read_to_string(&page).unwrap();
    assert!(
        source_page.contains(DB_ADDR),
        "the source was changed: {source_page}"
    );
    let copied_page = fs::read_to_string(t.join(&format!("web-root-moved{page}"))).unwrap();
    assert!(copied_page.contains(DB_MOVED), "{copied_page}");
}

/// Exports each host's strict set of the merged log (`--host`, the web tier selected) to
/// `$T/web-root$SUFFIX` and `$T/db-root$SUFFIX` (with the export options `extra`), starts MariaDB from its root in the db namespace and php-fpm and
/// nginx from theirs in the web namespace, each through `depsetfs run --source ROOT --netns`,
/// and fetches the page from the web namespace with the machine's curl.
fn replay_script(suffix: &str, extra: &str) -> String {
    let selection = WEB_TIER.join(" ");
    format!(
        r#"SRV="$T/srv" WROOT="$T/web-root{suffix}" DROOT="$T/db-root{suffix}"
"$DEPSETFS" export --log "$T/app.dlog" --host web --format dir {selection} --output "$WROOT" {extra}
"$DEPSETFS" export --log "$T/app.dlog" --host db --format dir {selection} --output "$DROOT" {extra}
runs=()
stop_services() {{
  local pidfile pid
  for pidfile in "$WROOT$SRV/web/run/nginx.pid" "$WROOT$SRV/web/run/php-fpm.pid" "$DROOT$SRV/db/run/mysqld.pid"; do
    if [ -s "$pidfile" ]; then kill -TERM "$(cat "$pidfile")" 2>/dev/null || true; fi
  done
  for pid in "${{runs[@]}}"; do wait "$pid" || echo "a service run ended with $?" >&2; done
  runs=()
}}
trap 'stop_services; netns_cleanup' EXIT
in_root() {{ "$DEPSETFS" run --source "$1" --netns "$2" --timeout 120 --log "$T/replay{suffix}-$3.log" -- "${{@:4}}"; }}
in_root "$DROOT" "$DBNS" db /usr/sbin/mariadbd --defaults-file="$SRV/db/my.cnf" --user=root &
runs+=($!)
in_root "$WROOT" "$WEBNS" php /usr/sbin/php-fpm8.2 --nodaemonize --allow-to-run-as-root --fpm-config "$SRV/web/php-fpm.conf" &
runs+=($!)
in_root "$WROOT" "$WEBNS" nginx /usr/sbin/nginx -p "$SRV/web/" -e "$SRV/web/log/nginx-error.log" -c "$SRV/web/nginx.conf" -g 'daemon off;' &
runs+=($!)
for _ in $(seq 300); do [ -S "$DROOT$SRV/db/run/mysqld.sock" ] && break; sleep 0.1; done
ip netns exec "$W" curl -sS --fail --max-time 20 --retry 40 --retry-connrefused --retry-delay 0 \
  http://{WEB_ADDR}:8080/row.php
for _ in $(seq 100); do
  [ -s "$WROOT$SRV/web/run/nginx.pid" ] && [ -s "$WROOT$SRV/web/run/php-fpm.pid" ] && [ -s "$DROOT$SRV/db/run/mysqld.pid" ] && break
  sleep 0.05
done
stop_services
"#
    )
}

/// The page: the stdout lines that are not the namespaces' names.
fn page_of(out: &Outcome) -> String {
    out.stdout_lines()
        .into_iter()
        .filter(|line| !line.starts_with("netns="))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The web tier's processes: nginx and its workers (php-fpm and the db server are needed
/// through their connections).
const WEB_TIER: [&str; 5] = [
    "--strategy",
    "strict",
    "--exe",
    "/usr/sbin/nginx",
    "--children",
];

/// `dump --set --host HOST` of the merged log with the web tier selected.
fn merged_set_of(t: &TestDir, host: &str) -> BTreeSet<String> {
    let log = t.join("app.dlog");
    let mut args = vec![
        "dump",
        "--set",
        "--host",
        host,
        "--log",
        log.to_str().unwrap(),
    ];
    args.extend(WEB_TIER);
    let out = depsetfs(t, &args);
    out.assert_ok("dump --set --host");
    out.stdout.lines().map(str::to_string).collect()
}

fn set_of(t: &TestDir, host: &str, selection: &[&str]) -> BTreeSet<String> {
    let log = t.join(&format!("{host}.dlog"));
    let mut args = vec!["dump", "--set", "--log", log.to_str().unwrap()];
    args.extend(selection);
    let out = depsetfs(t, &args);
    out.assert_ok("dump --set");
    out.stdout.lines().map(str::to_string).collect()
}

/// (path, line, what) of `host-refs --json` on a host's set.
fn host_refs(t: &TestDir, host: &str, selection: &[&str]) -> BTreeSet<(String, u64, String)> {
    let log = t.join(&format!("{host}.dlog"));
    let mut args = vec!["host-refs", "--json", "--log", log.to_str().unwrap()];
    args.extend(selection);
    let out = depsetfs(t, &args);
    out.assert_ok("host-refs --json");
    let report: Value = serde_json::from_str(&out.stdout).expect("JSON");
    report["refs"]
        .as_array()
        .expect("refs")
        .iter()
        .map(|r| {
            (
                r["path"].as_str().unwrap_or("").to_owned(),
                r["line"].as_u64().unwrap_or(0),
                r["what"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

fn assert_no_postgresql(set: &BTreeSet<String>) {
    assert!(
        std::path::Path::new("/usr/lib/postgresql").is_dir(),
        "PostgreSQL is not installed: the test would prove nothing (apt-get install postgresql)"
    );
    for path in set {
        let postgres = path.starts_with("/usr/lib/postgresql")
            || path.starts_with("/etc/postgresql")
            || path.rsplit('/').next() == Some("psql");
        assert!(!postgres, "{path}: PostgreSQL has no place in the set");
    }
}

#[test]
fn bad_host_options_are_one_line_errors() {
    let t = TestDir::new("host_bad_input");
    let log = t.join("x.dlog");
    let log = log.to_str().unwrap();
    for (args, expected) in [
        (
            vec![
                "run",
                "--netns",
                "/nonexistent/netns",
                "--log",
                log,
                "--",
                "/bin/true",
            ],
            "depsetfs: --netns /nonexistent/netns: No such file or directory",
        ),
        (
            vec![
                "run",
                "--netns",
                "/etc/hostname",
                "--log",
                log,
                "--",
                "/bin/true",
            ],
            "depsetfs: --netns /etc/hostname: Invalid argument",
        ),
        (
            vec![
                "export", "--format", "dir", "--output", "o", "--map", "10.0.0.1",
            ],
            "depsetfs: invalid value '10.0.0.1' for '--map <OLD=NEW>'",
        ),
        (
            vec!["dump", "--format", "parquet"],
            "depsetfs: the following required arguments were not provided: --output <OUTPUT>",
        ),
    ] {
        let out = depsetfs_ns(&t, &args);
        assert!(!out.ok(), "{args:?} succeeded");
        let lines: Vec<&str> = out.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{args:?}: {}", out.stderr);
        assert!(
            lines[0].starts_with(expected),
            "{args:?}: {} (expected {expected})",
            out.stderr
        );
    }
    assert!(
        !t.join("x.dlog").exists(),
        "a log was written for a refused run"
    );
}
