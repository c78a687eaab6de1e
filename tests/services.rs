//! Real services, traced and then run from nothing but their strict deployment set: PostgreSQL
//! (initdb, a server on a unix socket, SQL and pgbench, stop) and a Java program (files, time
//! zone, a thread pool). Each is traced with `depsetfs run`, what it wrote is removed, and
//! `depsetfs verify --strategy strict` runs it again in a root holding the set alone.

mod common;

use std::fs;
use std::process::Command;

use common::*;

/// Traces `cmd`, lets `clean` remove what it wrote, then verifies the strict set with `cmd`.
/// Returns the traced run's and the verified run's outcomes.
fn trace_then_verify(t: &TestDir, cmd: &[&str], clean: impl Fn()) -> (Outcome, Outcome) {
    let log = t.log();
    let log = log.to_str().unwrap();
    let mut run = vec!["run", "--log", log, "--timeout", "300", "--"];
    run.extend_from_slice(cmd);
    let traced = depsetfs_ns(t, &run);
    traced.assert_ok("the traced run");
    clean();
    let mut verify = vec!["verify", "--log", log, "--strategy", "strict", "--"];
    verify.extend_from_slice(cmd);
    let verified = depsetfs_ns(t, &verify);
    verified.assert_ok("verify --strategy strict");
    assert!(
        verified.stderr.contains("round 1: exit status 0, pass"),
        "{}",
        verified.describe()
    );
    // Every ELF file of the exported root loads there (issue 15: whole, a stub, or absent).
    assert!(
        verified.stderr.contains("0 files would not load"),
        "{}",
        verified.describe()
    );
    (traced, verified)
}

#[test]
fn postgresql_runs_from_its_strict_set() {
    let t = TestDir::new("services_postgresql");
    let script = t.install_script("postgresql.sh");
    let chown = Command::new("chown")
        .args(["postgres:postgres", t.str()])
        .status()
        .expect("chown");
    assert!(chown.success(), "chown postgres {}", t.str());
    let shell = format!("sh {} {}", script.display(), t.str());
    let cmd = ["su", "postgres", "-s", "/bin/sh", "-c", &shell];
    let (traced, verified) = trace_then_verify(&t, &cmd, || {
        let _ = fs::remove_dir_all(t.join("data"));
        let _ = fs::remove_file(t.join("server.log"));
    });
    for out in [&traced, &verified] {
        assert_eq!(out.stdout, "20000|200010000\npg-ok\n", "{}", out.describe());
    }
    let set = dump_set(&t, Some(&t.log()));
    assert!(
        set.iter()
            .any(|path| path.starts_with("/usr/lib/postgresql/") && path.ends_with("/bin/postgres")),
        "the server binary is missing from the set"
    );
}

#[test]
fn a_java_program_runs_from_its_strict_set() {
    let t = TestDir::new("services_java");
    let source = t.install_script("FilesAndThreads.java");
    let javac = Command::new("javac")
        .arg("-d")
        .arg(&t.path)
        .arg(&source)
        .status()
        .expect("javac (default-jdk-headless)");
    assert!(javac.success(), "javac {}", source.display());
    let cmd = ["java", "-cp", t.str(), "FilesAndThreads", t.str()];
    let (traced, verified) = trace_then_verify(&t, &cmd, || {
        let _ = fs::remove_file(t.join("lines.txt"));
    });
    let lines = traced.stdout_lines();
    assert_eq!(lines.len(), 3, "{}", traced.describe());
    assert_eq!(lines[0], "read 1000 lines");
    assert!(lines[1].starts_with("zone "), "{}", traced.describe());
    assert_eq!(lines[2], "pool ok");
    assert_eq!(verified.stdout, traced.stdout, "{}", verified.describe());
}
