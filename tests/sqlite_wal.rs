//! A real database through the mirror: SQLite in WAL mode (its -shm is a shared mmap, it locks,
//! fsyncs and checkpoints), a writer process inserting rows in transactions while a reader
//! process reads snapshots. The database must be intact, and the file on the host (read
//! natively afterwards) must hold the same data.

mod common;

use std::fs;

use common::*;
use serde_json::Value;

const ROWS: u64 = 2000;
const BATCH: u64 = 20;

fn json_file(t: &TestDir, name: &str) -> Value {
    let text = fs::read_to_string(t.join(name)).unwrap_or_default();
    serde_json::from_str(text.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("{name} is not the expected JSON ({e}): {text}"))
}

/// Chrooted on the mirror: init, reader in the background, writer, verify, sha256 of the file.
const WORKLOAD: &str = r#"
set -e
S="$T/sqlite_wal.py"; DB="$T/db/test.db"
"$PY" "$S" init "$DB" >"$T/init.out" 2>&1
"$PY" "$S" reader "$DB" "$ROWS" "$BATCH" "$T/db/ready" >"$T/reader.out" 2>&1 &
reader=$!
set +e
"$PY" "$S" writer "$DB" "$ROWS" "$BATCH" "$T/db/ready" >"$T/writer.out" 2>&1
w=$?
wait "$reader"
r=$?
"$PY" "$S" verify "$DB" >"$T/verify-mirror.out" 2>&1
v=$?
sha256sum "$DB" | cut -d" " -f1 >"$T/sha-mirror"
echo "writer=$w reader=$r verify=$v"
"#;

#[test]
fn wal_writer_and_reader_through_the_mirror() {
    wal_writer_and_reader_through_a_mirror("sqlite_wal", "");
}

/// The same workload with every read through the daemon (`--no-passthrough`; the default
/// reads read-only opens through kernel passthrough).
#[test]
fn wal_writer_and_reader_through_the_mirror_without_passthrough() {
    wal_writer_and_reader_through_a_mirror("sqlite_wal_nopt", "--no-passthrough");
}

/// The same workload with entries cached per process and daemon and workload on one CPU.
#[test]
fn wal_writer_and_reader_through_the_mirror_with_entry_cache_on_one_cpu() {
    wal_writer_and_reader_through_a_mirror("sqlite_wal_ec", "--entry-cache --cpus 0");
}

/// Runs the workload through a mirror started with `run_options`.
fn wal_writer_and_reader_through_a_mirror(name: &str, run_options: &str) {
    let t = TestDir::new(name);
    t.install_script("sqlite_wal.py");
    let out = ns_script(
        &t,
        540,
        &format!(
            "export ROWS={ROWS} BATCH={BATCH}\n\"$DEPSETFS\" run {run_options} --log \"$T/log\" --timeout 420 -- /bin/sh -c '{}'",
            WORKLOAD.replace('\'', "'\\''")
        ),
    );
    out.assert_ok("the SQLite workload through the mirror");
    assert_eq!(
        out.stdout.trim(),
        "writer=0 reader=0 verify=0",
        "{}\n--- writer ---\n{}\n--- reader ---\n{}",
        out.describe(),
        fs::read_to_string(t.join("writer.out")).unwrap_or_default(),
        fs::read_to_string(t.join("reader.out")).unwrap_or_default()
    );

    let init = json_file(&t, "init.out");
    assert_eq!(init["journal_mode"], "wal", "{init}");
    let reader = json_file(&t, "reader.out");
    assert_eq!(reader["errors"], serde_json::json!([]), "{reader}");
    assert_eq!(reader["final"], ROWS, "{reader}");
    // It read while the writer wrote: empty, some partial states, full.
    assert!(
        reader["distinct"].as_u64().unwrap_or(0) >= 3,
        "the reader saw no intermediate state: {reader}"
    );
    let mirror = json_file(&t, "verify-mirror.out");
    assert_eq!(mirror["integrity"], "ok", "{mirror}");
    assert_eq!(mirror["journal_mode"], "wal", "{mirror}");
    assert_eq!(mirror["count"], ROWS, "{mirror}");

    // Natively, outside the mirror: the same bytes, the same rows.
    let native = host_script(
        &t,
        120,
        r#"
sha256sum "$T/db/test.db" | cut -d" " -f1 >"$T/sha-native"
sqlite3 "$T/db/test.db" 'PRAGMA integrity_check; SELECT count(*) FROM t;'
"$PY" "$T/sqlite_wal.py" verify "$T/db/test.db" >"$T/verify-native.out"
"#,
    );
    native.assert_ok("reading the database natively");
    assert_eq!(
        native.stdout,
        format!("ok\n{ROWS}\n"),
        "{}",
        native.describe()
    );
    assert_eq!(
        fs::read_to_string(t.join("sha-native")).unwrap(),
        fs::read_to_string(t.join("sha-mirror")).unwrap(),
        "the database file differs between the mirror and the host"
    );
    let host = json_file(&t, "verify-native.out");
    assert_eq!(
        host["digest"], mirror["digest"],
        "rows differ: host {host} mirror {mirror}"
    );
    assert_eq!(host["count"], ROWS);

    // The set has python and the sqlite3 module it loaded at run time, with its library.
    let set = dump_set(&t, Some(&t.log()));
    assert_program_in_set(&set, "python3");
    let ext = host_script(
        &t,
        30,
        r#""$PY" -c 'import _sqlite3; print(_sqlite3.__file__)'"#,
    );
    ext.assert_ok("locating _sqlite3");
    let ext = ext.stdout.trim().to_string();
    assert_chain_in_set(&set, &ext, "the _sqlite3 extension module");
    let (_, libs) = elf_deps(&ext);
    let libsqlite = libs
        .iter()
        .find(|l| l.contains("libsqlite3"))
        .unwrap_or_else(|| panic!("{ext} does not link libsqlite3: {libs:?}"));
    assert_chain_in_set(&set, libsqlite, "loaded by _sqlite3");
    assert_not_in_set(&set, "/usr/bin/sqlite3"); // only used natively
}
