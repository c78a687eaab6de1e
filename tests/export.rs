//! Export and verify on real traces: `depsetfs run` records a command, `depsetfs export` writes
//! its set as a directory, a tar file and an OCI layout (checked with tar, umoci and skopeo),
//! and `depsetfs verify` runs the command again in a root made of nothing but the set.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use common::*;

/// `depsetfs run --log $T/log -- sh -c SCRIPT` in a private namespace.
fn trace(t: &TestDir, script: &str) -> Outcome {
    let out = ns_script(
        t,
        300,
        &format!(r#""$DEPSETFS" run --log "$T/log" --timeout 240 -- sh -c '{script}'"#),
    );
    out.assert_ok(&format!("depsetfs run -- sh -c '{script}'"));
    out
}

fn export(t: &TestDir, args: &[&str]) -> Outcome {
    let log = t.log();
    let mut all = vec!["export", "--log", log.to_str().unwrap()];
    all.extend_from_slice(args);
    depsetfs(t, &all)
}

/// One line on stderr, starting with `depsetfs: `, and a non-zero status.
fn assert_one_line_error(out: &Outcome, contains: &str) {
    assert!(!out.ok(), "should have failed: {}", out.describe());
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "not one line: {}", out.describe());
    assert!(
        lines[0].starts_with("depsetfs: ") && lines[0].contains(contains),
        "{contains:?} not in {:?}",
        lines[0]
    );
}

/// Nothing named like a temporary export is left in `dir`.
fn assert_no_leftovers(dir: &Path) {
    let left: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains("depsetfs-tmp"))
        .collect();
    assert!(left.is_empty(), "half-written outputs left: {left:?}");
}

#[test]
fn dir_tar_and_oci_exports_of_ls() {
    let t = TestDir::new("export_formats");
    trace(&t, "ls /");
    let set = dump_set(&t, Some(&t.log()));
    let out = t.join("root");
    export(&t, &["--format", "dir", "--output", out.to_str().unwrap()]).assert_ok("export dir");
    // The binary, with its mode, owner and mtime; every symlink of the set as a symlink.
    let ls = canonical(&host_command("ls"));
    assert_in_set(&set, &ls, "ls ran");
    let (host, copy) = (
        fs::metadata(&ls).unwrap(),
        fs::symlink_metadata(out.join(&ls[1..])).unwrap(),
    );
    assert_eq!(copy.mode(), host.mode());
    assert_eq!((copy.uid(), copy.gid()), (host.uid(), host.gid()));
    assert_eq!(
        (copy.mtime(), copy.mtime_nsec()),
        (host.mtime(), host.mtime_nsec())
    );
    assert_eq!(copy.len(), host.len());
    let mut links = 0;
    for path in &set {
        let host = fs::symlink_metadata(path).unwrap();
        let copy = fs::symlink_metadata(out.join(path.trim_start_matches('/')))
            .unwrap_or_else(|e| panic!("{path} of the set is not in the export: {e}"));
        assert_eq!(copy.file_type(), host.file_type(), "{path}");
        if host.file_type().is_symlink() {
            links += 1;
            assert_eq!(
                fs::read_link(path).unwrap(),
                fs::read_link(out.join(&path[1..])).unwrap()
            );
        }
    }
    assert!(
        links > 0,
        "a usrmerged Debian has symlinks on the way to ls: {set:?}"
    );

    // tar: the same paths as dump --set (without the root itself).
    let tar = t.join("set.tar");
    export(&t, &["--format", "tar", "--output", tar.to_str().unwrap()]).assert_ok("export tar");
    let listed = host_script(&t, 60, r#"tar -tf "$T/set.tar""#);
    listed.assert_ok("tar -tf");
    let in_tar: BTreeSet<String> = listed
        .stdout
        .lines()
        .map(|l| format!("/{}", l.trim_end_matches('/')))
        .collect();
    let expected: BTreeSet<String> = set.iter().filter(|p| *p != "/").cloned().collect();
    assert_eq!(in_tar, expected);

    // oci: umoci unpacks it, the rootfs runs ls /, skopeo shows the entrypoint.
    let image = t.join("image");
    export(
        &t,
        &["--format", "oci", "--output", image.to_str().unwrap()],
    )
    .assert_ok("export oci");
    let unpacked = ns_script(
        &t,
        120,
        r#"umoci unpack --image "$T/image:latest" "$T/bundle" >/dev/null
chroot "$T/bundle/rootfs" sh -c 'ls /'"#,
    );
    unpacked.assert_ok("umoci unpack + chroot ls");
    // The set's top level, and the empty directories to mount on.
    let top: BTreeSet<String> = set
        .iter()
        .filter(|p| p.len() > 1 && p[1..].find('/').is_none())
        .map(|p| p[1..].to_string())
        .chain(["dev", "proc", "sys", "tmp"].map(String::from))
        .collect();
    let shown: BTreeSet<String> = unpacked
        .stdout_lines()
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(
        shown, top,
        "ls / in the unpacked image lists the set's top level"
    );
    let inspect = host_script(&t, 60, r#"skopeo inspect --config "oci:$T/image""#);
    inspect.assert_ok("skopeo inspect");
    let config: serde_json::Value = serde_json::from_str(&inspect.stdout).unwrap();
    assert_eq!(
        config["config"]["Entrypoint"],
        serde_json::json!(["sh", "-c", "ls /"])
    );
    assert_eq!(config["config"]["WorkingDir"], t.str());

    // No overwrite without --force; with it, replaced.
    let again = export(&t, &["--format", "dir", "--output", out.to_str().unwrap()]);
    assert_one_line_error(&again, "already exists");
    export(
        &t,
        &[
            "--format",
            "dir",
            "--output",
            out.to_str().unwrap(),
            "--force",
        ],
    )
    .assert_ok("export --force");
    assert_no_leftovers(&t.path);
}

#[test]
fn hard_links_and_capabilities_survive_every_format() {
    let t = TestDir::new("export_links");
    // A root to run in: the set of sh, exported; then data with a hard link and a capability.
    trace(&t, "true");
    let src = t.join("src");
    export(&t, &["--format", "dir", "--output", src.to_str().unwrap()]).assert_ok("export sh");
    let setup = host_script(
        &t,
        60,
        r#"mkdir "$T/src/data"
echo one > "$T/src/data/a"
ln "$T/src/data/a" "$T/src/data/b"
echo cap > "$T/src/data/cap"
setfattr -n security.capability -v 0x0100000200200000000000000000000000000000 "$T/src/data/cap"
setfattr -n user.depsetfs -v hello "$T/src/data/cap" 2>/dev/null || true
mkdir -p "$T/src/proc" "$T/src/sys" "$T/src/dev""#,
    );
    setup.assert_ok("make the source tree");
    let traced = ns_script(
        &t,
        120,
        r#""$DEPSETFS" run --source "$T/src" --log "$T/log" --overwrite-log -- sh -c 'read x < /data/a; read y < /data/b; read z < /data/cap; echo $x $y $z'"#,
    );
    traced.assert_ok("run on the source tree");
    assert_eq!(traced.stdout.trim(), "one one cap");
    let out = t.join("out");
    export(&t, &["--format", "dir", "--output", out.to_str().unwrap()]).assert_ok("export dir");
    let (a, b) = (
        fs::metadata(out.join("data/a")).unwrap(),
        fs::metadata(out.join("data/b")).unwrap(),
    );
    assert_eq!(a.ino(), b.ino(), "the hard link became two files");
    let caps = host_script(
        &t,
        60,
        r#"getfattr --absolute-names -e hex -n security.capability "$T/out/data/cap""#,
    );
    caps.assert_ok("getfattr of the exported file");
    assert!(
        caps.stdout
            .contains("0x0100000200200000000000000000000000000000"),
        "{}",
        caps.stdout
    );
    let tar = t.join("set.tar");
    export(&t, &["--format", "tar", "--output", tar.to_str().unwrap()]).assert_ok("export tar");
    let bytes = fs::read(&tar).unwrap();
    let needle = b"SCHILY.xattr.security.capability=";
    assert!(
        bytes.windows(needle.len()).any(|w| w == needle),
        "no capability PAX record"
    );
    let listing = host_script(&t, 60, r#"tar -tvf "$T/set.tar" data/b data/a"#);
    listing.assert_ok("tar -tvf");
    assert!(
        listing.stdout.contains("data/b link to data/a"),
        "{}",
        listing.stdout
    );
    // GNU tar restores the capability from the PAX record.
    let restored = host_script(
        &t,
        60,
        r#"mkdir "$T/x" && tar --xattrs --xattrs-include='*' -xf "$T/set.tar" -C "$T/x" data
getfattr --absolute-names -e hex -n security.capability "$T/x/data/cap""#,
    );
    restored.assert_ok("tar -x --xattrs");
    assert!(
        restored.stdout.contains("0x01000002002"),
        "{}",
        restored.stdout
    );
}

#[test]
fn verify_passes_reports_misses_and_iterates() {
    let t = TestDir::new("export_verify");
    fs::write(t.join("data.txt"), "hello\n").unwrap();
    let data = t.join("data.txt");
    let data = data.to_str().unwrap();
    trace(&t, &format!("cat {data}"));
    let verify = |extra: &[&str]| {
        let log = t.log();
        let mut args = vec!["verify", "--log", log.to_str().unwrap()];
        args.extend_from_slice(extra);
        let args = args.join("' '");
        ns_script(&t, 300, &format!(r#""$DEPSETFS" '{args}'"#))
    };
    let cmd = ["--", "sh", "-c", &format!("cat {data}")];
    let passed = verify(&cmd);
    passed.assert_ok("verify");
    assert_eq!(passed.stdout, "hello\n");
    assert!(
        passed.stderr.contains("round 1: exit status 0, pass"),
        "{}",
        passed.stderr
    );
    assert!(
        passed.stderr.contains("0 files would not load"),
        "{}",
        passed.stderr
    );

    fs::write(
        t.join("rules.toml"),
        format!("[paths]\nexclude = [\"{data}\"]\n"),
    )
    .unwrap();
    let rules = t.join("rules.toml");
    let rules = rules.to_str().unwrap();
    let mut with_rules = vec!["--rules", rules];
    with_rules.extend_from_slice(&cmd);
    let failed = verify(&with_rules);
    assert_eq!(failed.code, Some(1), "{}", failed.describe());
    assert!(
        failed
            .stderr
            .contains(&format!("miss: {data} (wanted by pid "))
            && failed.stderr.contains("/cat)"),
        "{}",
        failed.stderr
    );
    let mut iterating = vec!["--rules", rules, "--iterate", "2"];
    iterating.extend_from_slice(&cmd);
    let fixed = verify(&iterating);
    fixed.assert_ok("verify --iterate 2");
    assert!(
        fixed.stderr.contains("round 1: exit status 1, fail"),
        "{}",
        fixed.stderr
    );
    assert!(
        fixed.stderr.contains("round 2: exit status 0, pass"),
        "{}",
        fixed.stderr
    );
    assert_eq!(fixed.stdout, "hello\n");

    // A set without the shell: the command itself is missing.
    fs::write(
        t.join("no-sh.toml"),
        "[paths]\nexclude = [\"/usr/bin/dash\"]\n",
    )
    .unwrap();
    let no_sh = t.join("no-sh.toml");
    let mut lacking = vec!["--rules", no_sh.to_str().unwrap()];
    lacking.extend_from_slice(&cmd);
    let missing = verify(&lacking);
    assert_one_line_error(&missing, "command not found in the exported root");
}

#[test]
fn bad_outputs_and_logs_are_one_line_errors_and_leave_nothing() {
    let t = TestDir::new("export_bad");
    trace(&t, "true");
    let events = dump_events(&t, &t.log());
    let mountpoint = header_mountpoint(&events);
    let inside = mountpoint.join("out");
    let refused = export(
        &t,
        &["--format", "dir", "--output", inside.to_str().unwrap()],
    );
    assert_one_line_error(&refused, "inside the mirror's mountpoint");
    let proc_out = export(&t, &["--format", "tar", "--output", "/proc/out.tar"]);
    assert_one_line_error(&proc_out, "inside /proc");
    fs::write(t.join("empty.log"), b"").unwrap();
    fs::write(t.join("corrupt.log"), b"\x93garbage that is no log").unwrap();
    for log in ["empty.log", "corrupt.log"] {
        let out = depsetfs(
            &t,
            &["export", "--log", log, "--format", "dir", "--output", "x"],
        );
        assert!(!out.ok(), "{}", out.describe());
        assert_eq!(out.stderr.lines().count(), 1, "{}", out.describe());
        assert!(out.stderr.starts_with("depsetfs: "), "{}", out.stderr);
        assert!(!t.join("x").exists());
    }
    assert_no_leftovers(&t.path);
}

/// The seed's test sequence 1: a login shell runs `ls -l` in root's home; the strict set,
/// exported to a directory, runs the same sequence with the same output.
#[test]
fn seed_sequence_login_ls_runs_the_same_from_the_strict_set() {
    let t = TestDir::new("export_seed1");
    let setup = host_script(
        &t,
        60,
        r#"mkdir -p "$T/home/sub" && echo notes > "$T/home/notes.txt" && ln -s notes.txt "$T/home/link"
printf '#!/bin/sh\necho hi\n' > "$T/home/run.sh" && chmod 755 "$T/home/run.sh""#,
    );
    setup.assert_ok("make the home directory");
    let traced = ns_script(
        &t,
        300,
        r#"cd "$T/home" && HOME="$T/home" "$DEPSETFS" run --log "$T/log" -- sh -l -c 'ls -l'"#,
    );
    traced.assert_ok("trace sh -l -c 'ls -l'");
    assert!(traced.stdout.contains("notes.txt"), "{}", traced.stdout);
    let out = t.join("strict");
    export(
        &t,
        &[
            "--format",
            "dir",
            "--strategy",
            "strict",
            "--output",
            out.to_str().unwrap(),
        ],
    )
    .assert_ok("export strict");
    let replay = ns_script(
        &t,
        300,
        r#"mkdir -p "$T/strict/proc" "$T/strict/sys" "$T/strict/dev"
cd "$T/strict$T/home" && HOME="$T/home" "$DEPSETFS" run --source "$T/strict" --log "$T/replay.log" -- sh -l -c 'ls -l'"#,
    );
    replay.assert_ok("sh -l -c 'ls -l' in the exported root");
    assert_eq!(replay.stdout, traced.stdout);
    // Nothing in the set is broken on arrival: every ELF file loads in the exported root.
    assert_every_elf_loads(&out);
}

#[test]
fn verify_a_script_and_compare_its_stdout() {
    let t = TestDir::new("export_verify_script");
    fs::write(t.join("data.txt"), "hello\n").unwrap();
    let data = t.join("data.txt");
    let data = data.to_str().unwrap();
    trace(&t, &format!("ls / >/dev/null; cat {data}"));
    let log = t.log();
    let log = log.to_str().unwrap();
    // Two commands, one per line, run by /bin/sh in the root.
    fs::write(t.join("seq.sh"), format!("ls / >/dev/null\ncat {data}\n")).unwrap();
    fs::write(t.join("expected"), "hello\n").unwrap();
    fs::write(t.join("wrong"), "goodbye\n").unwrap();
    let script = |extra: &[&str]| {
        let mut args = vec!["verify", "--log", log, "--script", "seq.sh"];
        args.extend_from_slice(extra);
        depsetfs_ns(&t, &args)
    };
    let plain = script(&[]);
    plain.assert_ok("verify --script");
    assert_eq!(plain.stdout, "hello\n");
    let same = script(&["--compare-stdout", "--expect", "expected"]);
    same.assert_ok("verify --compare-stdout with the right output");
    assert_eq!(same.stdout, "hello\n", "the output is still shown");
    assert!(
        same.stderr.contains("stdout as expected, pass"),
        "{}",
        same.stderr
    );
    let differs = script(&["--compare-stdout", "--expect", "wrong"]);
    assert_eq!(differs.code, Some(1), "{}", differs.describe());
    assert!(
        differs
            .stderr
            .contains("stdout differs from the expected, fail"),
        "{}",
        differs.stderr
    );
    // A script that runs what the set lacks fails.
    fs::write(t.join("more.sh"), "ls / >/dev/null\n/usr/bin/date\n").unwrap();
    let more = depsetfs_ns(&t, &["verify", "--log", log, "--script", "more.sh"]);
    assert_eq!(more.code, Some(1), "{}", more.describe());
    let usage = depsetfs(
        &t,
        &["verify", "--log", log, "--compare-stdout", "--", "true"],
    );
    assert_eq!(usage.code, Some(2), "--compare-stdout needs --expect");
}

#[test]
fn report_verify_says_which_strategies_work() {
    let t = TestDir::new("export_report_verify");
    let command = "ls / >/dev/null && cat /etc/hostname";
    trace(&t, command);
    let log = t.log();
    let log = log.to_str().unwrap();
    // Selecting cat: strict and system ship sh and cat but not ls; exec adds sh's children.
    let args = [
        "report", "--log", log, "--cmd", "^cat ", "--verify", "--", "sh", "-c", command,
    ];
    let human = depsetfs_ns(&t, &args);
    human.assert_ok("report --verify");
    // The WORKS column by its header; the table's rows are the lines that name a strategy
    // (stub-candidate lines follow the table).
    let lines = human.stdout_lines();
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    let works_column = header.iter().position(|h| *h == "WORKS").unwrap() - 1; // "EXECS WHOLE/STUB"
    let works: Vec<(String, String)> = lines
        .iter()
        .skip(1)
        .map(|line| line.split_whitespace().collect::<Vec<&str>>())
        .filter(|fields| ["all", "strict", "system", "exec"].contains(&fields[0]))
        .map(|fields| (fields[0].to_string(), fields[works_column].to_string()))
        .collect();
    let expected = [
        ("all", "yes"),
        ("strict", "no"),
        ("system", "no"),
        ("exec", "yes"),
    ];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(works, expected, "{}", human.describe());
    assert!(human.stdout.lines().next().unwrap().contains("WORKS"));
    let mut json_args = vec!["report", "--json"];
    json_args.extend_from_slice(&args[1..]);
    let json = depsetfs_ns(&t, &json_args);
    json.assert_ok("report --json --verify");
    let rows: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(rows[0]["works"], true, "{rows}");
    assert_eq!(rows[1]["works"], false, "{rows}");
    // Without --verify, no column.
    let plain = depsetfs(&t, &["report", "--log", log]);
    plain.assert_ok("report");
    assert!(!plain.stdout.contains("WORKS"), "{}", plain.stdout);
}

/// The stubs scenario of tests/analysis.rs: the script runs whoami, which cat (selected) does
/// not need. Exported with --stubs, whoami is a tiny program that exits 0 and prints nothing.
#[test]
fn a_helper_listed_as_a_stub_is_exported_as_a_program_that_exits_0() {
    let t = TestDir::new("export_stubs");
    fs::write(t.join("in"), "input\n").unwrap();
    let script = format!("/usr/bin/whoami >/dev/null || true\ncat {}/in\n", t.str());
    fs::write(t.join("stubs.sh"), &script).unwrap();
    trace(&t, &format!("sh {}/stubs.sh", t.str()));
    let whoami = canonical("/usr/bin/whoami");
    let out = t.join("root");
    let selection = ["--strategy", "strict", "--cmd", "^cat "];
    let mut args = vec![
        "--format",
        "dir",
        "--output",
        out.to_str().unwrap(),
        "--stubs",
    ];
    args.extend_from_slice(&selection);
    let exported = export(&t, &args);
    exported.assert_ok("export --stubs");
    assert!(
        exported.stderr.contains("1 binaries shipped as stubs"),
        "{}",
        exported.stderr
    );
    let stub = out.join(&whoami[1..]);
    let (stub_meta, host_meta) = (fs::metadata(&stub).unwrap(), fs::metadata(&whoami).unwrap());
    assert!(
        stub_meta.len() < 200,
        "the stub has {} bytes",
        stub_meta.len()
    );
    assert_eq!(stub_meta.mode(), host_meta.mode());
    let replay = ns_script(
        &t,
        120,
        &format!(
            r#"mkdir -p "$T/root/proc" "$T/root/sys" "$T/root/dev"
"$DEPSETFS" run --source "$T/root" --log "$T/replay.log" -- sh -c '{whoami} && echo stub-ran; sh {t}/stubs.sh'"#,
            t = t.str()
        ),
    );
    replay.assert_ok("the stubbed root");
    assert_eq!(replay.stdout, "stub-ran\ninput\n", "{}", replay.describe());
    // Without --stubs the helper is simply absent.
    let bare = t.join("bare");
    let mut args = vec!["--format", "dir", "--output", bare.to_str().unwrap()];
    args.extend_from_slice(&selection);
    export(&t, &args).assert_ok("export without --stubs");
    assert!(!bare.join(&whoami[1..]).exists());
    // verify --stubs runs the script in such a root.
    let log = t.log();
    let mut verify = vec!["verify", "--log", log.to_str().unwrap(), "--stubs"];
    verify.extend_from_slice(&selection);
    let command = format!("{}/stubs.sh", t.str());
    verify.extend_from_slice(&["--", "sh", &command]);
    let verified = depsetfs_ns(&t, &verify);
    verified.assert_ok("verify --stubs");
    assert_eq!(verified.stdout, "input\n");
}

/// Files, directories and symlinks under `dir` with their modes and contents.
fn snapshot(dir: &Path) -> Vec<(String, u32, Vec<u8>)> {
    let mut all = Vec::new();
    let meta = fs::symlink_metadata(dir).unwrap();
    let contents = if meta.is_file() {
        fs::read(dir).unwrap()
    } else if meta.is_symlink() {
        fs::read_link(dir)
            .unwrap()
            .into_os_string()
            .into_encoded_bytes()
    } else {
        Vec::new()
    };
    all.push((dir.display().to_string(), meta.mode(), contents));
    if meta.is_dir() {
        let mut entries: Vec<_> = fs::read_dir(dir).unwrap().flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            all.extend(snapshot(&entry.path()));
        }
    }
    all
}

/// `--force` replaces an earlier export or an empty directory, and nothing else: not a
/// directory of someone's files, not a system directory, not the source tree, not an export
/// with something mounted in it.
#[test]
fn force_replaces_only_what_depsetfs_wrote() {
    let t = TestDir::new("export_force");
    trace(&t, "true");
    let setup = host_script(
        &t,
        60,
        r#"mkdir -p "$T/theirs/sub" && echo keep > "$T/theirs/notes" && printf 'a\0b' > "$T/theirs/sub/data"
ln -s notes "$T/theirs/link" && chmod 640 "$T/theirs/notes" && chmod 1733 "$T/theirs"
mkdir "$T/empty""#,
    );
    setup.assert_ok("make the directories");
    let theirs = t.join("theirs");
    let before = snapshot(&theirs);
    for format in ["dir", "tar", "oci"] {
        let refused = export(
            &t,
            &[
                "--format",
                format,
                "--output",
                theirs.to_str().unwrap(),
                "--force",
            ],
        );
        assert_one_line_error(&refused, "that depsetfs did not write");
        assert_eq!(
            snapshot(&theirs),
            before,
            "--format {format} --force changed it"
        );
    }
    // A system directory, even one a test could not see replaced; the temporary directory.
    let tmp_before = fs::metadata("/tmp").unwrap();
    for system in ["/tmp", "/usr", "/", "/var/tmp"] {
        let refused = export(&t, &["--format", "dir", "--output", system, "--force"]);
        assert_one_line_error(&refused, "even with --force");
    }
    let tmp_after = fs::metadata("/tmp").unwrap();
    assert_eq!(
        (tmp_after.ino(), tmp_after.mode()),
        (tmp_before.ino(), tmp_before.mode())
    );
    assert!(t.path.is_dir());
    // The directory holding the current directory (the test's own).
    let refused = export(&t, &["--format", "dir", "--output", "..", "--force"]);
    assert_one_line_error(&refused, "a directory holding the current directory");

    // An empty directory, then the export it became.
    let empty = t.join("empty");
    export(
        &t,
        &[
            "--format",
            "dir",
            "--output",
            empty.to_str().unwrap(),
            "--force",
        ],
    )
    .assert_ok("export --force over an empty directory");
    assert!(empty.join(".depsetfs-export").is_file());
    fs::write(t.join("empty/tmp/left"), b"from an earlier export").unwrap();
    export(
        &t,
        &[
            "--format",
            "oci",
            "--output",
            empty.to_str().unwrap(),
            "--force",
        ],
    )
    .assert_ok("export --force over an earlier export");
    assert!(empty.join("oci-layout").is_file() && !empty.join("tmp").exists());

    // An earlier export with a filesystem mounted in it: refused, the mount's files kept.
    let root = t.join("root");
    export(&t, &["--format", "dir", "--output", root.to_str().unwrap()]).assert_ok("export");
    let mounted = ns_script(
        &t,
        120,
        r#"mount -t tmpfs none "$T/root/tmp" && echo precious > "$T/root/tmp/file"
"$DEPSETFS" export --log "$T/log" --format dir --output "$T/root" --force 2>"$T/err" && exit 1
cat "$T/root/tmp/file""#,
    );
    mounted.assert_ok("export --force over an export with a mount in it");
    assert_eq!(mounted.stdout, "precious\n");
    let err = fs::read_to_string(t.join("err")).unwrap();
    assert!(
        err.lines().count() == 1 && err.contains("with a filesystem mounted at"),
        "{err}"
    );
    assert_no_leftovers(&t.path);
}

/// A dir export is a root to chroot into as it is: the kernel's trees mount on its empty
/// /proc, /sys and /dev, and /tmp is writable by everyone.
#[test]
fn an_exported_directory_can_be_chrooted_into_as_it_is() {
    let t = TestDir::new("export_chroot");
    trace(&t, "echo hi > /dev/null");
    let root = t.join("root");
    let out = export(&t, &["--format", "dir", "--output", root.to_str().unwrap()]);
    out.assert_ok("export");
    assert!(
        out.stderr.contains("to mount on"),
        "the summary names the added directories: {}",
        out.stderr
    );
    for (name, mode) in [("proc", 0o555), ("sys", 0o555), ("tmp", 0o1777)] {
        let meta = fs::metadata(root.join(name)).unwrap();
        assert_eq!(meta.mode() & 0o7777, mode, "{name}");
        assert_eq!((meta.uid(), meta.gid()), (0, 0), "{name}");
    }
    let chrooted = ns_script(
        &t,
        120,
        r#"mount -t proc proc "$T/root/proc" && mount -t sysfs sysfs "$T/root/sys"
mount --rbind /dev "$T/root/dev"
chroot "$T/root" sh -c 'echo hi > /tmp/x; read a < /tmp/x; read b < /proc/self/comm; echo $a $b > /dev/null; echo $a $b'"#,
    );
    chrooted.assert_ok("chroot into the export");
    assert_eq!(chrooted.stdout, "hi sh\n");
}
