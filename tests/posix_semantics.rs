//! POSIX semantics through the mirror, op by op, as root and as an unprivileged user.
//!
//! tests/scripts/posix_checks.sh prints one PASS/FAIL line per check (ownership of what is
//! created, EACCES/EPERM, chmod/chown/truncate/utimes, rename flags, hard links, xattrs, a fifo,
//! a unix socket server and client, setgid directories, a setuid binary). It runs natively
//! first, which proves its expectations are the host's, then chrooted on the mirror through
//! `depsetfs run`, where every check must pass too.

mod common;

use common::*;

/// The PASS names of a run of the checks, asserting there was no FAIL and the script finished.
fn passed_checks(output: &str, what: &str) -> Vec<String> {
    let fails: Vec<&str> = output.lines().filter(|l| l.starts_with("FAIL")).collect();
    assert!(
        fails.is_empty(),
        "{what}: failed checks:\n{}\n--- all ---\n{output}",
        fails.join("\n")
    );
    assert!(
        output
            .lines()
            .any(|l| l.starts_with("DONE pass=") && l.ends_with(" fail=0")),
        "{what}: the checks did not run to the end:\n{output}"
    );
    output
        .lines()
        .filter_map(|l| l.strip_prefix("PASS "))
        .map(str::to_string)
        .collect()
}

fn read(t: &TestDir, name: &str) -> String {
    std::fs::read_to_string(t.join(name)).unwrap_or_default()
}

/// Runs both parts natively in $T/native; returns the PASS names (root, user).
fn native_checks(t: &TestDir) -> (Vec<String>, Vec<String>) {
    t.install_script("posix_checks.sh");
    let out = host_script(
        t,
        120,
        r#"
set +e
bash "$T/posix_checks.sh" root "$T/native" >"$T/native-root.out" 2>&1
echo "root=$?"
$AS_NOBODY bash "$T/posix_checks.sh" user "$T/native" >"$T/native-user.out" 2>&1
echo "user=$?"
"#,
    );
    out.assert_ok("the native checks");
    let root = passed_checks(&read(t, "native-root.out"), "native, as root");
    let user = passed_checks(&read(t, "native-user.out"), "native, as uid 65534");
    assert_eq!(out.stdout, "root=0\nuser=0\n", "{}", out.describe());
    (root, user)
}

#[test]
fn checks_hold_natively() {
    let t = TestDir::new("posix_native");
    let (root, user) = native_checks(&t);
    assert!(
        root.len() >= 40 && user.len() >= 40,
        "too few checks: {root:?} {user:?}"
    );
}

#[test]
fn checks_hold_through_the_mirror() {
    checks_hold_through_a_mirror("posix_mirror", "");
}

/// The same checks with every read through the daemon (`--no-passthrough`; the default reads
/// read-only opens through kernel passthrough).
#[test]
fn checks_hold_through_the_mirror_without_passthrough() {
    checks_hold_through_a_mirror("posix_mirror_nopt", "--no-passthrough");
}

/// The same checks with every getattr sent to the daemon, daemon and checks on one CPU.
#[test]
fn checks_hold_through_the_mirror_with_full_fidelity_on_one_cpu() {
    checks_hold_through_a_mirror(
        "posix_mirror_full",
        "--attr-timeout-ms 0 --cpus 0 --threads 1",
    );
}

/// The same checks with entries cached per process (`--entry-cache`).
#[test]
fn checks_hold_through_the_mirror_with_entry_cache() {
    checks_hold_through_a_mirror("posix_mirror_ec", "--entry-cache");
}

/// Runs the checks through a mirror started with `run_options`.
fn checks_hold_through_a_mirror(name: &str, run_options: &str) {
    let t = TestDir::new(name);
    let (native_root, native_user) = native_checks(&t);

    let script = r#"
set +e
"$DEPSETFS" run $RUN_OPTIONS --log "$T/root.log" --timeout 240 -- \
  bash "$T/posix_checks.sh" root "$T/mirror" >"$T/mirror-root.out" 2>&1
echo "root=$?"
"$DEPSETFS" run $RUN_OPTIONS --log "$T/user.log" --timeout 240 -- \
  $AS_NOBODY bash "$T/posix_checks.sh" user "$T/mirror" >"$T/mirror-user.out" 2>&1
echo "user=$?"
"#;
    let out = ns_script(&t, 540, &format!("RUN_OPTIONS='{run_options}'\n{script}"));
    out.assert_ok("the checks through the mirror");
    let root = passed_checks(&read(&t, "mirror-root.out"), "through the mirror, as root");
    let user = passed_checks(
        &read(&t, "mirror-user.out"),
        "through the mirror, as uid 65534",
    );
    assert_eq!(out.stdout, "root=0\nuser=0\n", "{}", out.describe());
    assert_eq!(root, native_root, "not the same checks as natively (root)");
    assert_eq!(user, native_user, "not the same checks as natively (user)");

    // The user's operations were recorded and attributed to the user's processes. (A denied
    // open may never reach the daemon: with default_permissions the kernel refuses it itself.)
    let events = dump_events(&t, &t.join("user.log"));
    let user_pids: Vec<&serde_json::Value> = of_type(&events, "process")
        .filter(|p| p["uid"] == NOBODY)
        .map(|p| &p["pid"])
        .collect();
    assert!(!user_pids.is_empty(), "no process record with uid {NOBODY}");
    for op in [
        "rename", "link", "setxattr", "mknod", "symlink", "mkdir", "create",
    ] {
        assert!(
            of_type(&events, "access")
                .any(|a| a["op"] == op && a["errno"] == 0 && user_pids.contains(&&a["pid"])),
            "no successful {op} by a process of uid {NOBODY} in the log"
        );
    }
    let rootonly = t.join("mirror/rootonly");
    assert!(
        of_type(&events, "access")
            .any(|a| a["path"] == rootonly.to_str().unwrap() && user_pids.contains(&&a["pid"])),
        "the user's attempt on {} is not in the log",
        rootonly.display()
    );
}
