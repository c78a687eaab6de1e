//! The daemon dies (kill -9) in the middle of a workload in the chroot: `depsetfs umount` still
//! cleans up, leaving nothing mounted, and the log written so far reads back.
//!
//! The daemon's pid comes from the state dir: `$DEPSETFS_STATE_DIR/mounts/*.json`, field "pid".

mod common;

use std::collections::BTreeMap;

use common::*;

/// Mounts, prepares the chroot, runs a write/read loop in it for 3 s, kills the daemon with
/// SIGKILL and stops the workload. What the test then does to clean up follows it.
const CRASH: &str = r#"
"$DEPSETFS" mount --log "$T/log" "$MP"
"$HELPERS/chroot-prepare" "$MP"
mkdir -p "$T/work"
timeout 120 chroot "$MP" /bin/sh -c '
  i=0
  while [ "$i" -lt 1000000 ]; do
    echo "$i" >"$1/f$((i % 10))"
    cat "$1/f$((i % 10))" >/dev/null
    i=$((i + 1))
  done' sh "$T/work" >/dev/null 2>&1 &
workload=$!
sleep 3
shopt -s nullglob
records=("$DEPSETFS_STATE_DIR"/mounts/*.json)
echo "mount_records=${#records[@]}"
pid=$("$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["pid"])' "${records[0]}")
echo "daemon_exe=$(basename "$(readlink "/proc/$pid/exe")")"
echo "workload_running=$(kill -0 "$workload" 2>/dev/null && echo yes || echo no)"
kill -9 "$pid"
# Dead once its memory is gone (an empty cmdline), however loaded the machine.
for _ in $(seq 100); do grep -q . "/proc/$pid/cmdline" 2>/dev/null || break; sleep 0.1; done
kill -9 "$workload" 2>/dev/null || true
wait "$workload" 2>/dev/null || true
set +e
"#;

fn crash_and(t: &TestDir, after: &str) -> BTreeMap<String, String> {
    let script =
        format!("{CRASH}\n{after}\nset -e\necho \"left_mounted=$(mounts_under \"$T\" | wc -l)\"");
    let out = ns_script(t, 240, &script);
    out.assert_ok("the crash script");
    let v = key_values(&out);
    let get = |k: &str| v.get(k).map(String::as_str).unwrap_or("(not printed)");
    assert_eq!(
        get("mount_records"),
        "1",
        "one mounts/*.json in the state dir: {}",
        out.describe()
    );
    assert!(
        get("daemon_exe").starts_with("depsetfs"),
        "the pid in mounts/*.json is not a depsetfs process: {}",
        out.describe()
    );
    assert_eq!(
        get("workload_running"),
        "yes",
        "the workload died before the daemon was killed: {}",
        out.describe()
    );
    assert_eq!(
        get("left_mounted"),
        "0",
        "mounts left behind after the crash: {}",
        out.describe()
    );
    v
}

/// The log written before the kill reads back: dump exits 0 (a cut-off tail is at most one
/// warning line), it has the workload's accesses, and the set comes out.
fn check_log(t: &TestDir) {
    let out = depsetfs(t, &["dump", "--log", t.log().to_str().unwrap()]);
    assert!(
        out.ok(),
        "dump of the log of a killed daemon: {}",
        out.describe()
    );
    assert!(
        out.stderr.lines().count() == 1,
        "not exactly one warning: {}",
        out.describe()
    );
    // The daemon died without writing its end record: every reader says what may be missing.
    assert!(
        out.stderr.contains("did not end cleanly") && out.stderr.contains("may be missing"),
        "dump of the log of a killed daemon does not say it is incomplete: {}",
        out.describe()
    );
    let stats = depsetfs(t, &["stats", "--log", t.log().to_str().unwrap()]);
    assert!(
        stats.ok() && stats.stdout.contains("end              not clean"),
        "stats of the log of a killed daemon: {}",
        stats.describe()
    );
    let events = parse_events(&out.stdout);
    let work = t.join("work");
    let work = format!("{}/", work.to_str().unwrap());
    let workload_accesses = of_type(&events, "access")
        .filter(|a| a["path"].as_str().is_some_and(|p| p.starts_with(&work)))
        .count();
    assert!(
        workload_accesses > 0,
        "no access to {work}* was logged in the 3 s before the kill"
    );
    let set = depsetfs(t, &["dump", "--set", "--log", t.log().to_str().unwrap()]);
    assert!(
        set.ok() && set.stderr.contains("did not end cleanly"),
        "dump --set of the log of a killed daemon: {}",
        set.describe()
    );
    let cat = canonical(&host_command("cat"));
    assert!(
        set.stdout.lines().any(|l| l == cat),
        "{cat}, run by the workload, is not in the set: {}",
        set.stdout
    );
}

#[test]
fn umount_cleans_up_after_a_killed_daemon() {
    let t = TestDir::new("crash_umount");
    // No chroot-release first: `depsetfs umount` alone must take the binds with the mirror.
    let v = crash_and(
        &t,
        r#""$DEPSETFS" umount "$MP" 2>"$T/umount.err"; echo "umount_rc=$?""#,
    );
    assert_eq!(
        v.get("umount_rc").map(String::as_str),
        Some("0"),
        "depsetfs umount after the daemon died: {}",
        std::fs::read_to_string(t.join("umount.err")).unwrap_or_default()
    );
    check_log(&t);
}

#[test]
fn release_then_umount_after_a_killed_daemon() {
    let t = TestDir::new("crash_release");
    let v = crash_and(
        &t,
        r#"
"$HELPERS/chroot-release" "$MP" 2>"$T/release.err"; echo "release_rc=$?"
"$DEPSETFS" umount "$MP" 2>"$T/umount.err"; echo "umount_rc=$?"
"#,
    );
    // chroot-release cannot reach anything under a dead mirror: it says so in one line, points
    // to `depsetfs umount`, and does not fail the documented sequence.
    let release_err = std::fs::read_to_string(t.join("release.err")).unwrap_or_default();
    assert_eq!(
        v.get("release_rc").map(String::as_str),
        Some("0"),
        "chroot-release after the daemon died: {release_err}"
    );
    assert!(
        release_err.lines().count() == 1 && release_err.contains("depsetfs umount"),
        "chroot-release should name `depsetfs umount` in one line: {release_err:?}"
    );
    assert_eq!(
        v.get("umount_rc").map(String::as_str),
        Some("0"),
        "depsetfs umount after the daemon died: {}",
        std::fs::read_to_string(t.join("umount.err")).unwrap_or_default()
    );
    check_log(&t);
}

/// A log that a live daemon is still writing has no end record yet: read through the flush
/// request, it is not reported as cut short; once unmounted, it ends cleanly.
#[test]
fn a_live_log_is_not_reported_as_cut_short() {
    let t = TestDir::new("crash_live_log");
    let out = ns_script(
        &t,
        120,
        r#"
"$DEPSETFS" mount --log "$T/log" "$MP"
"$HELPERS/chroot-prepare" "$MP"
chroot "$MP" cat /etc/hostname >/dev/null
"$DEPSETFS" stats --log "$T/log" >"$T/live.out" 2>"$T/live.err"
"$DEPSETFS" dump --set --log "$T/log" >/dev/null 2>"$T/live-set.err"
"$HELPERS/chroot-release" "$MP"
"$DEPSETFS" umount "$MP" 2>/dev/null
"$DEPSETFS" stats --log "$T/log" >"$T/done.out" 2>"$T/done.err"
"#,
    );
    out.assert_ok("mount, stats, umount");
    let read = |f: &str| std::fs::read_to_string(t.join(f)).unwrap_or_default();
    assert!(
        read("live.out").contains("end              still being recorded"),
        "stats of a live log: {}",
        read("live.out")
    );
    for err in ["live.err", "live-set.err", "done.err"] {
        assert!(
            !read(err).contains("did not end cleanly"),
            "{err}: a live or cleanly ended log is reported as cut short: {}",
            read(err)
        );
    }
    assert!(
        read("done.out").contains("end              clean"),
        "stats after umount: {}",
        read("done.out")
    );
}
