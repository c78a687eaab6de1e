//! `depsetfs merge` on real runs: one service (nginx) traced under two workloads, a static page
//! in run "static" and a PHP page through php-fpm in run "php", each in a network namespace of
//! its own (loopback only). The merged log's set says which run needed what, and runs both
//! workloads from a clean root (`depsetfs verify`); each run's own set runs only its own
//! workload (the static set has no php-fpm, the PHP set no static page).
//!
//! As in the seed test, `depsetfs run` stays in the initial network namespace and the traced
//! command enters the test's namespace with `nsenter` (a daemon in another network namespace
//! gets no process events).

mod common;

use common::*;

/// The namespace (held by a `sleep`, killed by pid at exit), `$IN` to enter it, and the two
/// traced runs, the merge, and one verify per (set, workload) printed as `SET_WORKLOAD=pass|fail`.
const SCRIPT: &str = r#"NS="depsetfs-merge-$$"
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
ip netns exec "$NS" sleep 380 &
HOLDER=$!
want=$(ip netns exec "$NS" readlink /proc/self/ns/net)
for _ in $(seq 100); do
  [ "$(readlink "/proc/$HOLDER/ns/net" 2>/dev/null)" = "$want" ] && break
  sleep 0.05
done
IN="nsenter --net=/proc/$HOLDER/ns/net"
W="$T/merge_workload.sh"
for mode in static php; do
  "$DEPSETFS" run --label "$mode" --log "$T/trace-$mode.dlog" --timeout 60 -- $IN bash "$W" "$mode" "$T/srv"
  rm -f "$T"/srv/run/*.pid
done
"$DEPSETFS" merge "$T/trace-static.dlog" "$T/trace-php.dlog" --output "$T/trace-all.dlog"
"$DEPSETFS" dump --set --json --log "$T/trace-all.dlog" >"$T/all.json"
"$DEPSETFS" why --log "$T/trace-all.dlog" --strategy all /usr/sbin/php-fpm8.2 >"$T/why.txt"
for set in all static php; do
  for mode in static php; do
    if "$DEPSETFS" verify --log "$T/trace-$set.dlog" --timeout 60 -- $IN bash "$W" "$mode" "$T/srv" \
        >"$T/verify-$set-$mode.out" 2>&1; then
      echo "${set}_$mode=pass"
    else
      echo "${set}_$mode=fail"
    fi
  done
done
"#;

#[test]
fn a_merged_log_of_two_workloads_runs_both_and_each_run_only_its_own() {
    let t = TestDir::new("merge_workloads");
    for program in ["php-fpm8.2", "nginx", "curl", "nsenter", "ip"] {
        host_command(program);
    }
    let workload = t.install_script("merge_workload.sh");
    t.install_script("web_tier.sh"); // sourced by it
    let setup = host_script(
        &t,
        30,
        &format!(r#"bash "{}" setup "$T/srv""#, workload.display()),
    );
    setup.assert_ok("write the configurations");

    let out = ns_script(&t, 400, SCRIPT);
    out.assert_ok("trace, merge, verify");
    let results = key_values(&out);
    let expected = [
        ("all_static", "pass"),
        ("all_php", "pass"),
        ("static_static", "pass"),
        ("static_php", "fail"),
        ("php_static", "fail"),
        ("php_php", "pass"),
    ];
    for (key, want) in expected {
        let verify =
            std::fs::read_to_string(t.join(&format!("verify-{}.out", key.replace('_', "-"))))
                .unwrap_or_default();
        assert_eq!(
            results.get(key).map(String::as_str),
            Some(want),
            "{key}: {}\n{verify}",
            out.describe()
        );
    }

    // Each single-run set fails the other workload for the reason it should: no php-fpm in
    // the static set, no static page in the PHP set.
    let failed = |name: &str| std::fs::read_to_string(t.join(name)).unwrap_or_default();
    let static_php = failed("verify-static-php.out");
    assert!(static_php.contains("php-fpm8.2"), "{static_php}");
    let php_static = failed("verify-php-static.out");
    assert!(php_static.contains("404"), "{php_static}");

    // The merged set says which run needed each path (the labels of `run --label`).
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(t.join("all.json")).unwrap()).unwrap();
    let runs = |path: &str| json_entry(&json, path)["runs"].clone();
    let both = serde_json::json!(["php", "static"]);
    assert_eq!(runs("/usr/sbin/nginx"), both);
    assert_eq!(runs("/usr/sbin/php-fpm8.2"), serde_json::json!(["php"]));
    let page = |name: &str| format!("{}/srv/www/{name}", t.str());
    assert_eq!(runs(&page("index.html")), serde_json::json!(["static"]));
    assert_eq!(runs(&page("hello.php")), serde_json::json!(["php"]));
    assert_eq!(runs(&format!("{}/srv/www", t.str())), both);

    // `why` says which run's chain put php-fpm in.
    let why = std::fs::read_to_string(t.join("why.txt")).unwrap();
    assert!(why.contains("in run php"), "{why}");
    assert!(why.contains("run php: pid "), "{why}");
}

/// A log of `depsetfs __synth-log` whose header says format `version`.
fn synth_log_of_version(t: &TestDir, name: &str, version: u8) -> String {
    let path = t.join(name);
    let path = path.to_str().unwrap();
    depsetfs(
        t,
        &[
            "__synth-log",
            "--records",
            "200",
            "--files",
            "20",
            "--processes",
            "4",
            path,
        ],
    )
    .assert_ok("__synth-log");
    let mut bytes = std::fs::read(path).unwrap();
    let field = b"\xa7version";
    let at = bytes
        .windows(field.len())
        .position(|w| w == field)
        .expect("a version field in the header")
        + field.len();
    bytes[at] = version; // a positive fixint
    std::fs::write(path, bytes).unwrap();
    path.to_string()
}

fn assert_one_line_error(out: &Outcome, wanted: &str) {
    assert!(!out.ok(), "{}", out.describe());
    // Warnings about the inputs (synthetic logs have no end record) are not the error.
    let lines: Vec<&str> = out
        .stderr
        .lines()
        .filter(|line| !line.starts_with("depsetfs: warning: "))
        .collect();
    assert_eq!(lines.len(), 1, "{}", out.describe());
    assert!(
        lines[0].starts_with("depsetfs: ") && lines[0].contains(wanted),
        "{}",
        out.describe()
    );
}

#[test]
fn merge_refuses_bad_input_with_one_line_and_upgrades_older_logs() {
    let t = TestDir::new("merge_bad_input");
    let current = synth_log_of_version(&t, "current.dlog", 4);
    let older = synth_log_of_version(&t, "older.dlog", 3);
    let future = synth_log_of_version(&t, "future.dlog", 99);
    std::fs::write(t.join("random.bin"), b"\x93\x01\x02\x03 not a log").unwrap();
    let random = t.join("random.bin");
    let out = t.join("out.dlog");
    let out = out.to_str().unwrap();

    let merged = depsetfs(&t, &["merge", &current, &older, "--output", out]);
    merged.assert_ok("merge a current and an older log");
    let stats = depsetfs(&t, &["stats", "--json", "--log", out]);
    stats.assert_ok("stats of the merged log");

    let exists = depsetfs(&t, &["merge", &current, "--output", out]);
    assert_one_line_error(&exists, "the file exists; pass --overwrite-log");
    depsetfs(&t, &["merge", &current, "--output", out, "--overwrite-log"])
        .assert_ok("--overwrite-log");

    let other = t.join("other.dlog");
    let other = other.to_str().unwrap();
    let mixed = depsetfs(
        &t,
        &[
            "merge",
            &current,
            random.to_str().unwrap(),
            "--output",
            other,
        ],
    );
    assert_one_line_error(&mixed, "random.bin: not a depsetfs log");
    let versions = depsetfs(&t, &["merge", &current, &future, "--output", other]);
    assert_one_line_error(&versions, "log format version 99 is not supported");
    assert!(
        !t.join("other.dlog").exists(),
        "a refused merge writes nothing"
    );
    let none = depsetfs(&t, &["merge", "--output", other]);
    assert_one_line_error(&none, "LOG");
}

/// Replaces the value of header text field `name` (whose current value is `old`) in a log.
fn patch_header_text(path: &str, name: &str, old: &str, new: &str) {
    let mut bytes = std::fs::read(path).unwrap();
    let mut from = vec![0xa0 | name.len() as u8];
    from.extend(name.as_bytes());
    from.push(0xa0 | old.len() as u8);
    from.extend(old.as_bytes());
    let at = bytes
        .windows(from.len())
        .position(|w| w == from.as_slice())
        .unwrap_or_else(|| panic!("no {name}: {old} in the header"));
    let mut to = vec![0xa0 | name.len() as u8];
    to.extend(name.as_bytes());
    to.push(0xd9); // str8
    to.push(new.len() as u8);
    to.extend(new.as_bytes());
    bytes.splice(at..at + from.len(), to);
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn runs_of_two_source_trees_conflict_and_export_needs_prefer() {
    let t = TestDir::new("merge_conflict");
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let mut logs = Vec::new();
    for (name, content) in [("a", "one content\n"), ("b", "another content\n")] {
        let tree = t.join(&format!("tree-{name}"));
        std::fs::create_dir_all(tree.join("usr/lib/synthetic/d0")).unwrap();
        std::fs::write(tree.join("usr/lib/synthetic/d0/f0"), content).unwrap();
        let log = synth_log_of_version(&t, &format!("{name}.dlog"), 4);
        patch_header_text(&log, "source", "/", tree.to_str().unwrap());
        patch_header_text(&log, "host", "synthetic", host.trim_end());
        logs.push(log);
    }
    let all = t.join("all.dlog");
    let all = all.to_str().unwrap();
    let merged = depsetfs(&t, &["merge", &logs[0], &logs[1], "--output", all]);
    assert_eq!(merged.code, Some(2), "{}", merged.describe());
    let conflicts: Vec<&str> = merged
        .stderr
        .lines()
        .filter(|line| line.starts_with("depsetfs: conflict: "))
        .collect();
    assert_eq!(conflicts.len(), 1, "{}", merged.describe());
    let sha = |text: &str| {
        use sha2::Digest;
        format!("{:x}", sha2::Sha256::digest(text.as_bytes()))
    };
    let expected = format!(
        "depsetfs: conflict: /usr/lib/synthetic/d0/f0: run a (source {}/tree-a on {h}) sha256 {}, run b (source {}/tree-b on {h}) sha256 {}",
        t.str(),
        sha("one content\n"),
        t.str(),
        sha("another content\n"),
        h = host.trim_end()
    );
    assert_eq!(conflicts[0], expected);

    let out = t.join("root");
    let out = out.to_str().unwrap();
    let refused = depsetfs(
        &t,
        &["export", "--log", all, "--format", "dir", "--output", out],
    );
    assert_one_line_error(&refused, "recorded from 2 source trees");
    let preferred = depsetfs(
        &t,
        &[
            "export", "--log", all, "--format", "dir", "--output", out, "--prefer", "b",
        ],
    );
    preferred.assert_ok("export --prefer b");
    assert_eq!(
        std::fs::read_to_string(t.join("root/usr/lib/synthetic/d0/f0")).unwrap(),
        "another content\n",
        "the preferred run's tree wins"
    );
}
