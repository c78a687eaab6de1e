//! `depsetfs run` stopped by a signal: SIGTERM and SIGINT are passed to the command, and after
//! `--grace` everything it started is killed; a `kill -9` of `run` itself still ends the
//! command, whatever it left behind, and the daemon. In every case nothing stays mounted, the
//! temporary mountpoint is gone and the log reads back.
//!
//! The command is `sh -c 'sleep 1000 & ...; exec sleep 1000'`: a background child that ignores
//! nothing and a foreground one, their pids written to files. A process counts as gone when
//! /proc/PID is gone or holds a zombie.

mod common;

use std::collections::BTreeMap;

use common::*;

/// Starts `run` in the background with a command that leaves a child behind, waits until both
/// sleeps and the daemon run, sends `$SIG` to run alone, then prints how long until run
/// ended, and whether the pids it started are gone.
const SCRIPT: &str = r#"
alive() { [ -e "/proc/$1" ] && ! grep -q '^State:.*Z' "/proc/$1/status" 2>/dev/null; }
"$DEPSETFS" run --grace 2 --log "$T/log" -- sh -c \
  'sleep 1000 & echo $! >"$0/bg.pid"; echo $$ >"$0/fg.pid"; exec sleep 1000' "$T" \
  >"$T/run.out" 2>"$T/run.err" &
run=$!
for _ in $(seq 300); do
  [ -s "$T/bg.pid" ] && [ -s "$T/fg.pid" ] && ls "$DEPSETFS_STATE_DIR"/mounts/*.json >/dev/null 2>&1 && break
  sleep 0.1
done
bg=$(cat "$T/bg.pid"); fg=$(cat "$T/fg.pid")
daemon=$("$PY" -c 'import glob, json; print(json.load(open(glob.glob("'"$DEPSETFS_STATE_DIR"'/mounts/*.json")[0]))["pid"])')
worker=$(pgrep -P "$run" -x depsetfs || true)
echo "started=$(alive "$bg" && alive "$fg" && alive "$daemon" && echo yes || echo no)"
echo "mountpoints_while_running=$(ls -d /tmp/depsetfs-run."$run".* 2>/dev/null | wc -l)"
start=$(date +%s%N)
kill -"$SIG" "$run"
set +e
# At most grace (2 s) + the daemon's flush and exit, with slack for a loaded machine.
for _ in $(seq 200); do
  gone=yes
  for pid in "$bg" "$fg" "$daemon" $worker; do alive "$pid" && gone=no; done
  [ "$gone" = yes ] && ! alive "$run" && break
  sleep 0.1
done
echo "gone_after_ms=$(( ($(date +%s%N) - start) / 1000000 ))"
for pid in "$bg" "$fg" "$daemon" $worker; do alive "$pid" && echo "survivor=$pid $(tr '\0' ' ' <"/proc/$pid/cmdline")"; done
wait "$run"; echo "run_rc=$?"
echo "mountpoints_after=$(ls -d /tmp/depsetfs-run."$run".* 2>/dev/null | wc -l)"
echo "registry_after=$(ls "$DEPSETFS_STATE_DIR"/mounts/*.json 2>/dev/null | wc -l)"
set -e
"#;

fn stop_run_with(t: &TestDir, signal: &str) -> BTreeMap<String, String> {
    let out = ns_script(t, 120, &format!("SIG={signal}\n{SCRIPT}"));
    out.assert_ok("the signal script");
    let v = key_values(&out);
    let get = |k: &str| v.get(k).cloned().unwrap_or_else(|| "(not printed)".into());
    assert_eq!(get("started"), "yes", "{}", out.describe());
    assert_eq!(get("mountpoints_while_running"), "1", "{}", out.describe());
    assert!(
        !out.stdout.contains("survivor="),
        "processes started by run outlived it: {}",
        out.describe()
    );
    let ms: u64 = get("gone_after_ms").parse().unwrap_or(u64::MAX);
    assert!(
        ms < 15_000,
        "took {ms} ms to end after SIG{signal}: {}",
        out.describe()
    );
    assert_eq!(
        get("mountpoints_after"),
        "0",
        "the temporary mountpoint was left behind: {}",
        out.describe()
    );
    assert_eq!(
        get("registry_after"),
        "0",
        "the mount registry entry was left behind: {}",
        out.describe()
    );
    assert!(
        mounts_under(std::path::Path::new("/tmp"))
            .iter()
            .all(|m| !m.starts_with("/tmp/depsetfs-run.")),
        "a depsetfs-run mount is visible on the host"
    );
    v
}

/// The log of a run ended by a signal: the command's sleep is in it, and it ended cleanly.
fn assert_clean_log(t: &TestDir) {
    let events = dump_events(t, &t.log());
    assert!(
        of_type(&events, "end").count() == 1,
        "the log of a run stopped by a signal has no end record"
    );
    let stats = depsetfs(t, &["stats", "--log", t.log().to_str().unwrap()]);
    stats.assert_ok("stats");
    assert!(
        stats.stdout.contains("end              clean"),
        "{}",
        stats.describe()
    );
}

#[test]
fn sigterm_is_passed_on_and_the_rest_killed_after_the_grace_period() {
    let t = TestDir::new("run_sigterm");
    let v = stop_run_with(&t, "TERM");
    // The foreground sleep died of the SIGTERM passed to it: run exits 128 + 15.
    assert_eq!(v.get("run_rc").map(String::as_str), Some("143"));
    let err = std::fs::read_to_string(t.join("run.err")).unwrap_or_default();
    assert!(
        err.contains("killed 1 process(es) still running after the --grace period"),
        "the background sleep should have been killed after the grace period: {err}"
    );
    assert_clean_log(&t);
}

#[test]
fn sigint_to_run_alone_is_not_ignored() {
    let t = TestDir::new("run_sigint");
    // A background job of a script starts with SIGINT ignored; run still takes it and, as
    // the command inherited the ignored SIGINT, ends the tree after the grace period.
    let v = stop_run_with(&t, "INT");
    assert!(
        v.get("run_rc").is_some_and(|rc| rc != "0"),
        "run_rc: {:?}",
        v.get("run_rc")
    );
    assert_clean_log(&t);
}

#[test]
fn sigkill_of_run_leaves_nothing_running() {
    let t = TestDir::new("run_sigkill");
    let v = stop_run_with(&t, "KILL");
    assert_eq!(v.get("run_rc").map(String::as_str), Some("137"));
    // The worker ends the tree at once and unmounts: the daemon still writes its end.
    assert_clean_log(&t);
}
