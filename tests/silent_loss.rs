//! Nothing is lost without saying so: `--log` never replaces an existing file unless told to,
//! and a `run` whose command cannot be executed fails before anything is mounted or recorded,
//! leaving `last.log` as it was.

mod common;

use common::*;

/// `mount --log` and `run --log` refuse an existing file (its content stays), and take it with
/// `--overwrite-log`.
#[test]
fn an_existing_log_is_not_overwritten() {
    let t = TestDir::new("loss_existing_log");
    std::fs::write(t.join("precious"), "not a log\n").unwrap();
    let out = ns_script(
        &t,
        120,
        r#"
set +e
"$DEPSETFS" run --log "$T/precious" -- true 2>"$T/run.err"; echo "run_rc=$?"
"$DEPSETFS" mount --log "$T/precious" "$MP" 2>"$T/mount.err"; echo "mount_rc=$?"
echo "mounted=$(mounts_under "$MP" | wc -l)"
"$DEPSETFS" run --log "$T/precious" --overwrite-log -- true 2>/dev/null; echo "forced_rc=$?"
"#,
    );
    out.assert_ok("the script");
    let v = key_values(&out);
    assert_eq!(v.get("run_rc").map(String::as_str), Some("1"));
    assert_eq!(v.get("mount_rc").map(String::as_str), Some("1"));
    assert_eq!(v.get("mounted").map(String::as_str), Some("0"));
    for err in ["run.err", "mount.err"] {
        let text = std::fs::read_to_string(t.join(err)).unwrap();
        assert!(
            text.lines().count() == 1
                && text.starts_with("depsetfs: --log ")
                && text.contains("exists")
                && text.contains("--overwrite-log"),
            "{err}: {text:?}"
        );
    }
    assert_eq!(v.get("forced_rc").map(String::as_str), Some("0"));
    let events = dump_events(&t, &t.join("precious"));
    assert!(of_type(&events, "end").count() == 1);
}

/// A command that is missing or not executable: one line, no mount, `last.log` untouched.
#[test]
fn a_command_that_cannot_run_leaves_last_log_alone() {
    let t = TestDir::new("loss_bad_command");
    let out = ns_script(
        &t,
        120,
        r#"
"$DEPSETFS" run -- true 2>/dev/null
before=$(readlink "$DEPSETFS_STATE_DIR/last.log")
set +e
"$DEPSETFS" run -- no-such-command-depsetfs 2>"$T/missing.err"; echo "missing_rc=$?"
"$DEPSETFS" run -- /etc/passwd 2>"$T/passwd.err"; echo "passwd_rc=$?"
[ "$(readlink "$DEPSETFS_STATE_DIR/last.log")" = "$before" ] && echo last_log=unchanged
echo "logs=$(ls "$DEPSETFS_STATE_DIR/logs" | wc -l)"
"#,
    );
    out.assert_ok("the script");
    let v = key_values(&out);
    assert_eq!(v.get("missing_rc").map(String::as_str), Some("1"));
    assert_eq!(v.get("passwd_rc").map(String::as_str), Some("1"));
    assert_eq!(v.get("last_log").map(String::as_str), Some("unchanged"));
    assert_eq!(v.get("logs").map(String::as_str), Some("1"), "no new log");
    let missing = std::fs::read_to_string(t.join("missing.err")).unwrap();
    assert!(
        missing.lines().count() == 1 && missing.contains("not found"),
        "{missing:?}"
    );
    let passwd = std::fs::read_to_string(t.join("passwd.err")).unwrap();
    assert!(
        passwd.lines().count() == 1
            && passwd.contains("not executable")
            && !passwd.contains("not found"),
        "{passwd:?}"
    );
}
