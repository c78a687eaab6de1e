//! `depsetfs run` on real programs: the command works chrooted on the mirror, and the
//! deployment set holds what it needed (the binary, its ELF interpreter, its libraries, the
//! symlinks leading to them) and nothing unrelated; the exec of the binary is marked as such.

mod common;

use std::collections::BTreeSet;
use std::fs;

use common::*;

/// `depsetfs run --log $T/log -- CMD` from $T, in a private mount namespace.
fn run_traced(t: &TestDir, cmd: &str) -> Outcome {
    run_traced_under(t, "", cmd)
}

/// The same, started by `WRAPPER depsetfs run ...` (e.g. `unshare -n`).
fn run_traced_under(t: &TestDir, wrapper: &str, cmd: &str) -> Outcome {
    ns_script(
        t,
        300,
        &format!(r#"{wrapper} "$DEPSETFS" run --log "$T/log" --timeout 240 -- {cmd}"#),
    )
}

/// The process record of the process that ran `argv`.
fn process_with_argv<'a>(events: &'a [serde_json::Value], argv: &[&str]) -> &'a serde_json::Value {
    of_type(events, "process")
        .find(|p| {
            p["argv"].as_array().is_some_and(|a| {
                a.iter()
                    .map(|s| s.as_str().unwrap_or(""))
                    .eq(argv.iter().copied())
            })
        })
        .unwrap_or_else(|| {
            panic!(
                "no process record with argv {argv:?}; process records: {:?}",
                of_type(events, "process").collect::<Vec<_>>()
            )
        })
}

#[test]
fn ls_root() {
    let t = TestDir::new("chroot_ls");
    let out = run_traced(&t, "ls -A /");
    out.assert_ok("depsetfs run -- ls -A /");

    // The chroot shows the mirrored tree: the same names as the host's /.
    let host: BTreeSet<String> = fs::read_dir("/")
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let seen: BTreeSet<String> = out.stdout.lines().map(str::to_string).collect();
    assert_eq!(
        seen, host,
        "ls -A / in the chroot differs from the host's /"
    );

    let set = dump_set(&t, Some(&t.log()));
    let ls = assert_program_in_set(&set, "ls");
    assert_in_set(&set, "/etc/ld.so.cache", "read by the dynamic loader");
    assert_unrelated_absent(&set);
    assert!(
        set.len() < 300,
        "ls / needed {} files?\n{}",
        set.len(),
        show_set(&set)
    );

    let events = dump_events(&t, &t.log());
    assert_no_host_paths(&set, &[&header_mountpoint(&events), &t.state(), &t.mnt()]);
    assert_exec_open(&events, &ls);
    let (interp, _) = elf_deps(&ls);
    assert_exec_open(&events, &canonical(&interp));

    // The accesses are attributed to the process that made them.
    let proc_ls = process_with_argv(&events, &["ls", "-A", "/"]);
    assert_eq!(
        proc_ls["exe"],
        ls.as_str(),
        "exe of the ls process: {proc_ls}"
    );
    let pid = &proc_ls["pid"];
    assert!(
        exec_opens(&events, &ls).iter().any(|a| &a["pid"] == pid),
        "the exec open of {ls} is not attributed to the ls process (pid {pid})"
    );
    assert!(
        of_type(&events, "access").any(|a| &a["pid"] == pid && a["path"] == "/etc/ld.so.cache"),
        "the ls process (pid {pid}) did not read /etc/ld.so.cache according to the log"
    );

    let json = dump_set_json(&t, &t.log(), &set);
    let entry = json_entry(&json, &ls);
    assert_eq!(entry["kind"], "file", "{entry}");
    assert_eq!(
        entry["size"].as_u64(),
        Some(fs::metadata(&ls).unwrap().len()),
        "size of {ls}: {entry}"
    );
    assert!(
        entry["users"]
            .as_array()
            .is_some_and(|u| u.iter().any(|u| &u["pid"] == pid)),
        "the ls process is not among the users of {ls}: {entry}"
    );
    assert_eq!(json_entry(&json, "/lib64")["kind"], "symlink");
}

#[test]
fn sh_writes_and_reads_a_file() {
    let t = TestDir::new("chroot_sh");
    let out = run_traced(&t, r#"sh -c 'echo hi > "$T/x"; cat "$T/x"'"#);
    out.assert_ok("depsetfs run -- sh -c ...");
    assert_eq!(out.stdout, "hi\n");
    // Written through the mirror, so it is on the host.
    assert_eq!(fs::read_to_string(t.join("x")).unwrap(), "hi\n");

    let set = dump_set(&t, Some(&t.log()));
    let sh = assert_program_in_set(&set, "sh");
    let cat = assert_program_in_set(&set, "cat");
    assert_unrelated_absent(&set);
    assert_not_in_set(&set, &canonical(&host_command("ls")));

    let events = dump_events(&t, &t.log());
    assert_exec_open(&events, &sh);
    assert_exec_open(&events, &cat);
    let written = t.join("x");
    let written = written.to_str().unwrap();
    assert!(
        of_type(&events, "access").any(|a| a["path"] == written
            && (a["op"] == "create" || (a["op"] == "open" && has_intent(a, "write")))),
        "no create/open-for-write of {written} in the log"
    );
    // Read back by cat: a read of its 3 bytes, or at least an open to read (reads do not reach
    // the daemon when the kernel serves them itself).
    assert!(
        of_type(&events, "access").any(|a| a["path"] == written
            && ((a["op"] == "read" && a["bytes"].as_u64().unwrap_or(0) >= 3)
                || (a["op"] == "open" && has_intent(a, "read")))),
        "no read of {written} in the log"
    );
}

#[test]
fn python_imports_json() {
    let t = TestDir::new("chroot_python");
    let out = run_traced(
        &t,
        r#"python3 -c 'import json, sys; print(json.dumps({"major": sys.version_info[0]}))'"#,
    );
    out.assert_ok("depsetfs run -- python3 -c 'import json'");
    assert_eq!(out.stdout, "{\"major\": 3}\n");

    let set = dump_set(&t, Some(&t.log()));
    let python = assert_program_in_set(&set, "python3");
    assert_unrelated_absent(&set);

    // The json package: its source or its cached bytecode.
    let json_dir = host_script(
        &t,
        30,
        r#""$PY" -c 'import json, os; print(os.path.dirname(json.__file__))'"#,
    );
    json_dir.assert_ok("python3 on the host");
    let json_dir = canonical(json_dir.stdout.trim());
    assert!(
        set.iter().any(|p| p.starts_with(&format!("{json_dir}/"))),
        "nothing of the json package ({json_dir}) is in the set:\n{}",
        show_set(&set)
    );

    let events = dump_events(&t, &t.log());
    assert_exec_open(&events, &python);
}

#[test]
fn exit_status_is_the_commands() {
    let t = TestDir::new("chroot_exit_status");
    let out = run_traced(&t, "sh -c 'echo out; echo err >&2; exit 7'");
    assert_eq!(out.code, Some(7), "{}", out.describe());
    assert_eq!(out.stdout, "out\n");
    assert!(out.stderr.contains("err\n"), "{}", out.describe());
    // The log was still written.
    let set = dump_set(&t, Some(&t.log()));
    assert_program_in_set(&set, "sh");
}

#[test]
fn keeps_cwd_env_and_uid() {
    let t = TestDir::new("chroot_cwd_env");
    fs::create_dir(t.join("sub dir")).unwrap();
    let out = ns_script(
        &t,
        300,
        r#"cd "$T/sub dir"
DEPSETFS_TEST_VALUE='a b' "$DEPSETFS" run --log "$T/log" --timeout 240 -- \
  sh -c 'pwd; echo "$DEPSETFS_TEST_VALUE"; id -u; id -g'"#,
    );
    out.assert_ok("depsetfs run from a subdirectory");
    let dir = t.join("sub dir");
    assert_eq!(
        out.stdout_lines(),
        [dir.to_str().unwrap(), "a b", "0", "0"],
        "{}",
        out.describe()
    );
}

#[test]
fn waits_for_processes_left_behind() {
    let t = TestDir::new("chroot_leftover");
    let out = run_traced(
        &t,
        r#"sh -c '(sleep 2; echo late > "$T/late") >/dev/null 2>&1 & echo started'"#,
    );
    out.assert_ok("depsetfs run with a background child");
    assert_eq!(out.stdout, "started\n");
    assert_eq!(
        fs::read_to_string(t.join("late")).ok().as_deref(),
        Some("late\n"),
        "run returned before the process its command left behind had finished"
    );
    let set = dump_set(&t, Some(&t.log()));
    assert_program_in_set(&set, "sleep");
}

#[test]
fn default_log_location() {
    let t = TestDir::new("chroot_default_log");
    let out = ns_script(&t, 300, r#""$DEPSETFS" run --timeout 240 -- true"#);
    out.assert_ok("depsetfs run -- true");

    let last = t.state().join("last.log");
    let target = fs::read_link(&last).expect("$DEPSETFS_STATE_DIR/last.log is not a symlink");
    let target = if target.is_absolute() {
        target
    } else {
        t.state().join(target)
    };
    assert_eq!(
        fs::canonicalize(target.parent().unwrap()).unwrap(),
        fs::canonicalize(t.state().join("logs")).unwrap(),
        "last.log does not point into $DEPSETFS_STATE_DIR/logs"
    );
    assert!(
        target.is_file(),
        "last.log points to nothing: {}",
        target.display()
    );

    // dump without --log reads last.log.
    let set = dump_set(&t, None);
    assert_program_in_set(&set, "true");
    let events = dump_events(&t, &target);
    assert_no_host_paths(&set, &[&header_mountpoint(&events), &t.state()]);
}

/// By default (passthrough), reads of a read-only open bypass the daemon: the open is recorded
/// (and the file is in the set), its reads are not; with `--no-passthrough`, they are.
#[test]
fn passthrough_records_opens_but_not_reads() {
    let t = TestDir::new("chroot_passthrough");
    fs::write(t.join("data"), vec![b'x'; 1 << 20]).unwrap();
    let data = t.join("data");
    let data = data.to_str().unwrap();
    for (options, reads_expected) in [
        ("", false),
        ("--passthrough", false),
        ("--no-passthrough", true),
    ] {
        let out = ns_script(
            &t,
            300,
            &format!(
                r#""$DEPSETFS" run {options} --log "$T/log" --overwrite-log --timeout 240 -- cat "$T/data""#
            ),
        );
        out.assert_ok("depsetfs run -- cat");
        assert_eq!(out.stdout.len(), 1 << 20, "cat printed the whole file");
        let events = dump_events(&t, &t.log());
        let on_data =
            |op: &str| of_type(&events, "access").any(|a| a["path"] == data && a["op"] == op);
        assert!(on_data("open"), "{options}: the open of {data} is recorded");
        assert_eq!(
            on_data("read"),
            reads_expected,
            "{options}: read records of {data}"
        );
        assert_in_set(&dump_set(&t, Some(&t.log())), data, "cat read it");
    }
}

/// While a passthrough reader holds a file open, the kernel accepts only passthrough opens of
/// it: a writer opening it then must get one too (it got EIO, and its write was lost, while
/// the log said the open succeeded). Its open is recorded with write intent.
#[test]
fn a_writer_opens_a_file_a_passthrough_reader_holds() {
    let t = TestDir::new("chroot_passthrough_writer");
    fs::write(t.join("data"), "old\n").unwrap();
    let out = ns_script(
        &t,
        300,
        r#""$DEPSETFS" run --log "$T/log" --timeout 240 -- /bin/sh -c '
exec 3< "$T/data"
printf "new\n" >> "$T/data" || exit 7
cat <&3
cat "$T/data"'"#,
    );
    out.assert_ok("append while a reader holds the file");
    assert_eq!(out.stdout, "old\nnew\nold\nnew\n", "{}", out.describe());
    let data = t.join("data");
    let data = data.to_str().unwrap();
    let events = dump_events(&t, &t.log());
    let writes = of_type(&events, "access").any(|a| {
        a["path"] == data
            && a["op"] == "open"
            && a["errno"] == 0
            && a["intent"]
                .as_array()
                .is_some_and(|i| i.iter().any(|x| x == "write"))
    });
    assert!(writes, "the writer's open is recorded with write intent");
}

/// A walk over more files than the daemon may hold descriptors for: past half its open-file
/// limit, nodes are anchored by file handles, and the walk sees every file, as natively.
#[test]
fn walk_beyond_the_descriptor_limit() {
    let t = TestDir::new("chroot_big_walk");
    let out = ns_script(
        &t,
        300,
        r#"
native=$(find /usr/include -printf '%s %p\n' | sort | sha256sum)
mirrored=$(prlimit --nofile=256:256 "$DEPSETFS" run --log "$T/log" --timeout 240 -- \
  find /usr/include -printf '%s %p\n' 2>"$T/find.err" | sort | sha256sum)
echo "count=$(find /usr/include | wc -l)"
[ "$native" = "$mirrored" ] && echo same=yes || echo same=no
echo "errors=$(grep -vc '^depsetfs: log:' "$T/find.err" || true)"
"#,
    );
    out.assert_ok("find through a mirror with 256 descriptors");
    let values = key_values(&out);
    let count: usize = values["count"].parse().unwrap_or(0);
    assert!(
        count > 1000,
        "too small a walk to exceed the limit: {count}"
    );
    assert_eq!(values["same"], "yes", "{}", out.describe());
    assert_eq!(
        values["errors"],
        "0",
        "{}",
        fs::read_to_string(t.join("find.err")).unwrap_or_default()
    );
}

/// Started inside a network namespace of its own, depsetfs still gets fork/exec/exit events
/// (the kernel sends them only to sockets of the initial network namespace).
#[test]
fn process_events_inside_a_network_namespace() {
    let t = TestDir::new("chroot_netns");
    let out = run_traced_under(&t, "unshare -n", "sh -c 'ls / >/dev/null'");
    out.assert_ok("depsetfs run in a new network namespace");
    let events = dump_events(&t, &t.log());
    assert!(
        of_type(&events, "exec").count() >= 2,
        "no exec records (sh, ls): the proc connector was not reached"
    );
    assert!(
        of_type(&events, "process").any(|p| p["argv"][0] == "ls"),
        "no process record for ls"
    );
}

/// By default (`--attr-timeout-ms 1000`) the kernel answers getattr from its cache, but every
/// process's lookups still reach the daemon: two `stat`s of a file, a directory and a missing
/// name are two processes' lookups of each.
#[test]
fn attr_timeout_keeps_every_process_lookup() {
    every_process_looks_up("chroot_attr_timeout", "", "attr-timeout-1000ms");
}

/// With `--entry-cache` the kernel caches entries, also negative ones, but the first request of
/// the second `stat` (the exec of its binary) drops them, so its own lookups reach the daemon
/// again, the failing one included.
#[test]
fn entry_cache_keeps_every_process_lookup() {
    every_process_looks_up(
        "chroot_entry_cache",
        "--entry-cache",
        "entry-cache-per-process+attr-timeout-1000ms",
    );
}

fn every_process_looks_up(name: &str, options: &str, fidelity: &str) {
    let t = TestDir::new(name);
    fs::create_dir(t.join("d")).unwrap();
    fs::write(t.join("d/f"), "x").unwrap();
    let out = ns_script(
        &t,
        300,
        &format!(
            r#""$DEPSETFS" run {options} --log "$T/log" --timeout 240 -- \
  sh -c 'stat -c %s "$0/f" "$0" "$0/missing"; stat -c %s "$0/f" "$0" "$0/missing"; true' "$T/d""#
        ),
    );
    out.assert_ok("two stats");
    let events = dump_events(&t, &t.log());
    let header = &events[0];
    assert_eq!(header["fidelity"], fidelity, "{header}");
    let stat_pids: BTreeSet<u64> = of_type(&events, "process")
        .filter(|p| p["argv"][0] == "stat")
        .filter_map(|p| p["pid"].as_u64())
        .collect();
    assert_eq!(
        stat_pids.len(),
        2,
        "two stat processes: {:?}",
        of_type(&events, "process")
            .chain(of_type(&events, "exec"))
            .chain(of_type(&events, "fork"))
            .collect::<Vec<_>>()
    );
    for path in [t.join("d/f"), t.join("d"), t.join("d/missing")] {
        for &pid in &stat_pids {
            assert!(
                of_type(&events, "access").any(|a| a["pid"] == pid
                    && a["op"] == "lookup"
                    && a["path"] == path.to_str().unwrap()),
                "no lookup of {} by stat pid {pid}",
                path.display()
            );
        }
    }
}

/// `--attr-timeout-ms 0` sends every getattr to the daemon (fidelity "full"); `--cpus 0`
/// confines the daemon and the command to CPU 0.
#[test]
fn full_fidelity_on_one_cpu() {
    let t = TestDir::new("chroot_full_one_cpu");
    fs::write(t.join("f"), "x").unwrap();
    let out = ns_script(
        &t,
        300,
        r#""$DEPSETFS" run --attr-timeout-ms 0 --cpus 0 --log "$T/log" --timeout 240 -- \
  sh -c 'grep Cpus_allowed_list /proc/self/status; stat -c %s "$0"' "$T/f""#,
    );
    out.assert_ok("a stat with full fidelity on CPU 0");
    assert!(
        out.stdout.contains("Cpus_allowed_list:\t0\n"),
        "{}",
        out.describe()
    );
    let events = dump_events(&t, &t.log());
    assert_eq!(events[0]["fidelity"], "full", "{}", events[0]);
    let f = t.join("f");
    assert!(
        of_type(&events, "access")
            .any(|a| a["op"] == "getattr" && a["path"] == f.to_str().unwrap()),
        "the stat of {} did not reach the daemon as a getattr",
        f.display()
    );
}

/// In a user namespace of its own the daemon cannot listen to the proc connector (the kernel
/// ignores subscribers outside the initial namespaces): the files are still recorded, and
/// `run`, `stats` and `dump --set` all say that forks, execs and exits are not.
#[test]
fn a_run_without_process_events_says_so() {
    let t = TestDir::new("chroot_no_connector");
    let out = run_traced_under(&t, "unshare --user --map-root-user --mount", "true");
    out.assert_ok("depsetfs run in a user namespace");
    assert!(
        out.stderr
            .contains("depsetfs: warning: forks, execs and exits will not be recorded"),
        "{}",
        out.describe()
    );
    let log = t.log();
    let stats = depsetfs(&t, &["stats", "--log", log.to_str().unwrap()]);
    stats.assert_ok("depsetfs stats");
    assert!(
        stats
            .stdout
            .contains("every fork, exec and exit (proc-connector-unavailable)"),
        "{}",
        stats.describe()
    );
    let set = depsetfs(&t, &["dump", "--set", "--log", log.to_str().unwrap()]);
    set.assert_ok("depsetfs dump --set");
    assert!(
        set.stderr
            .contains("forks, execs and exits were not recorded"),
        "{}",
        set.describe()
    );
    assert!(set.stdout.lines().any(|line| line == "/usr/bin/true"));
}

/// `--transport uring` serves the requests through FUSE over io_uring (the daemon says so in
/// daemon.log) and `--transport dev` through /dev/fuse; one command traced on each gives the
/// same deployment set.
#[test]
fn both_transports_give_the_same_set() {
    if !std::path::Path::new("/sys/module/fuse/parameters/enable_uring").exists() {
        eprintln!("skipped: this kernel has no FUSE over io_uring");
        return;
    }
    let t = TestDir::new("chroot_transports");
    let mut sets = Vec::new();
    for transport in ["uring", "dev"] {
        let _ = fs::remove_file(t.state().join("daemon.log"));
        let out = ns_script(
            &t,
            300,
            &format!(
                r#""$DEPSETFS" run --transport {transport} --log "$T/log" --overwrite-log --timeout 240 -- \
    /bin/sh -c 'cat /etc/hostname >/dev/null; ls /usr/share/doc/coreutils >/dev/null; stat /usr/bin >/dev/null'"#
            ),
        );
        out.assert_ok(transport);
        let daemon_log = fs::read_to_string(t.state().join("daemon.log")).unwrap_or_default();
        assert_eq!(
            daemon_log.contains("requests come through FUSE over io_uring"),
            transport == "uring",
            "{transport}: daemon.log says how requests came:\n{daemon_log}"
        );
        sets.push(dump_set(&t, Some(&t.log())));
    }
    assert_eq!(sets[0], sets[1], "the same set on both transports");
    assert_in_set(&sets[0], "/usr/bin/ls", "ls ran");
}
