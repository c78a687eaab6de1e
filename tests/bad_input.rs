//! Bad input: a non-zero exit, exactly one line on stderr starting with "depsetfs: ", nothing on
//! stdout, and the mount table exactly as before (nothing left mounted, nothing unmounted).
//! Also: a log whose tail was cut off still dumps, with a warning.

mod common;

use std::fs;

use common::*;

/// One bad invocation: `setup` (quiet, may mount things in the namespace), then `cmd`.
struct Case {
    name: &'static str,
    setup: &'static str,
    cmd: &'static str,
}

const fn case(name: &'static str, setup: &'static str, cmd: &'static str) -> Case {
    Case { name, setup, cmd }
}

/// Runs each case in its own directory and namespace; panics listing every case that did not
/// fail the way the contract says.
fn check_cases(group: &str, cases: &[Case]) {
    let mut problems = Vec::new();
    for c in cases {
        let t = TestDir::new(&format!("bad_{group}_{}", c.name));
        let out = ns_script(
            &t,
            60,
            &format!(
                r#"
{{
{setup}
}} >"$T/setup.out" 2>&1
before=$(mount_table)
set +e
{cmd} >"$T/cmd.out" 2>"$T/cmd.err"
echo "$?" >"$T/cmd.rc"
set -e
after=$(mount_table)
if [ "$before" = "$after" ]; then echo unchanged; else printf 'before:\n%s\nafter:\n%s\n' "$before" "$after"; fi
"#,
                setup = if c.setup.is_empty() { ":" } else { c.setup },
                cmd = c.cmd
            ),
        );
        let read = |f: &str| fs::read_to_string(t.join(f)).unwrap_or_default();
        let mut wrong = Vec::new();
        if !out.ok() {
            wrong.push(format!("the case script itself failed: {}", out.describe()));
        }
        let rc = read("cmd.rc").trim().to_string();
        if rc == "0" || rc.is_empty() {
            wrong.push(format!("exit status {rc:?}, not an error"));
        } else if rc == "124" || rc == "137" {
            wrong.push("timed out".to_string());
        }
        let err = read("cmd.err");
        let lines: Vec<&str> = err.lines().collect();
        if lines.len() != 1 || !lines[0].starts_with("depsetfs: ") {
            wrong.push(format!("stderr is not one \"depsetfs: \" line: {err:?}"));
        }
        let stdout = read("cmd.out");
        if !stdout.is_empty() {
            wrong.push(format!("printed on stdout: {stdout:?}"));
        }
        if out.stdout.trim() != "unchanged" {
            wrong.push(format!("the mount table changed: {}", out.stdout));
        }
        if !wrong.is_empty() {
            problems.push(format!(
                "{}: `{}`\n  {}\n  (setup output: {:?})",
                c.name,
                c.cmd,
                wrong.join("\n  "),
                read("setup.out")
            ));
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[test]
fn not_root() {
    // A copy of the binary that uid 65534 can reach whatever the checkout's permissions.
    const COPY: &str = r#"cp "$DEPSETFS" "$T/depsetfs"; chmod 0755 "$T/depsetfs""#;
    check_cases(
        "not_root",
        &[
            case(
                "mount",
                COPY,
                r#"$AS_NOBODY "$T/depsetfs" mount --log "$T/log" "$MP""#,
            ),
            case(
                "run",
                COPY,
                r#"$AS_NOBODY "$T/depsetfs" run --log "$T/log" -- true"#,
            ),
            case("umount", COPY, r#"$AS_NOBODY "$T/depsetfs" umount "$MP""#),
        ],
    );
}

#[test]
fn no_dev_fuse() {
    // In this namespace only: an empty /dev.
    const NO_FUSE: &str = "mount -t tmpfs tmpfs /dev";
    check_cases(
        "no_dev_fuse",
        &[
            case(
                "mount",
                NO_FUSE,
                r#""$DEPSETFS" mount --log "$T/log" "$MP""#,
            ),
            case("run", NO_FUSE, r#""$DEPSETFS" run --log "$T/log" -- true"#),
        ],
    );
}

#[test]
fn bad_mountpoints() {
    check_cases(
        "mountpoint",
        &[
            case(
                "missing",
                "",
                r#""$DEPSETFS" mount --log "$T/log" "$T/missing""#,
            ),
            case(
                "not_a_directory",
                r#"touch "$T/file""#,
                r#""$DEPSETFS" mount --log "$T/log" "$T/file""#,
            ),
            case(
                "already_a_mountpoint",
                r#"mount -t tmpfs tmpfs "$MP""#,
                r#""$DEPSETFS" mount --log "$T/log" "$MP""#,
            ),
            case(
                "equal_to_source",
                r#"mkdir "$T/src""#,
                r#""$DEPSETFS" mount --source "$T/src" --log "$T/log" "$T/src""#,
            ),
            case(
                "equal_to_source_trailing_slash",
                r#"mkdir "$T/src""#,
                r#""$DEPSETFS" mount --source "$T/src/" --log "$T/log" "$T/src""#,
            ),
            case(
                "equal_to_source_through_symlink",
                r#"mkdir "$T/src"; ln -s src "$T/srclink""#,
                r#""$DEPSETFS" mount --source "$T/src" --log "$T/log" "$T/srclink""#,
            ),
            case(
                "source_missing",
                "",
                r#""$DEPSETFS" mount --source "$T/nosrc" --log "$T/log" "$MP""#,
            ),
        ],
    );
}

#[test]
fn unknown_subcommand_or_flag() {
    check_cases(
        "usage",
        &[
            case("subcommand", "", r#""$DEPSETFS" frobnicate"#),
            case(
                "mount_flag",
                "",
                r#""$DEPSETFS" mount --no-such-flag "$MP""#,
            ),
            case(
                "umount_flag",
                "",
                r#""$DEPSETFS" umount --no-such-flag "$MP""#,
            ),
            case("dump_flag", "", r#""$DEPSETFS" dump --no-such-flag"#),
            case("run_flag", "", r#""$DEPSETFS" run --no-such-flag -- true"#),
        ],
    );
}

#[test]
fn umount_of_what_is_not_a_depsetfs_mount() {
    check_cases(
        "umount",
        &[
            case("plain_directory", "", r#""$DEPSETFS" umount "$MP""#),
            case("missing", "", r#""$DEPSETFS" umount "$T/missing""#),
            // must fail and leave the tmpfs mounted
            case(
                "tmpfs",
                r#"mount -t tmpfs tmpfs "$MP""#,
                r#""$DEPSETFS" umount "$MP""#,
            ),
            case("proc", "", r#""$DEPSETFS" umount /proc"#),
        ],
    );
}

#[test]
fn dump_without_a_usable_log() {
    check_cases(
        "dump",
        &[
            // a fresh state dir: no last.log
            case("no_log", "", r#""$DEPSETFS" dump"#),
            case("no_log_set", "", r#""$DEPSETFS" dump --set"#),
            case(
                "missing_file",
                "",
                r#""$DEPSETFS" dump --log "$T/missing.log""#,
            ),
            case("directory", "", r#""$DEPSETFS" dump --log "$T""#),
            case(
                "empty_file",
                r#": >"$T/empty.log""#,
                r#""$DEPSETFS" dump --log "$T/empty.log""#,
            ),
            case(
                "garbage",
                r#"printf 'this is not a depsetfs log\n\377\376\000\001garbage' >"$T/garbage.log""#,
                r#""$DEPSETFS" dump --log "$T/garbage.log""#,
            ),
            case(
                "garbage_set",
                r#"printf 'this is not a depsetfs log\n\377\376\000\001garbage' >"$T/garbage.log""#,
                r#""$DEPSETFS" dump --set --log "$T/garbage.log""#,
            ),
            // MessagePack {"magic": "nope"}: well-formed, but not a depsetfs header
            case(
                "wrong_magic",
                r#"printf '\201\245magic\244nope' >"$T/magic.log""#,
                r#""$DEPSETFS" dump --log "$T/magic.log""#,
            ),
        ],
    );
}

/// A relative `--log` that cannot be made absolute (the current directory was removed) is
/// named in the error, not reported as an output error.
#[test]
fn relative_log_in_a_removed_directory() {
    let t = TestDir::new("bad_log_cwd");
    let out = host_script(
        &t,
        60,
        r#"mkdir "$T/gone"; cd "$T/gone"; rmdir "$T/gone"
"$DEPSETFS" dump --log x 2>&1 && exit 1
exit 0"#,
    );
    out.assert_ok("dump --log x in a removed directory fails");
    let lines = out.stdout_lines();
    assert_eq!(lines.len(), 1, "{}", out.describe());
    assert!(
        lines[0].starts_with("depsetfs: --log x: "),
        "{}",
        out.describe()
    );
}

#[test]
fn run_of_a_missing_command() {
    check_cases(
        "run",
        &[
            case(
                "absolute",
                "",
                r#""$DEPSETFS" run --log "$T/log" -- /nonexistent/command"#,
            ),
            case(
                "on_path",
                "",
                r#""$DEPSETFS" run --log "$T/log" -- no-such-command-depsetfs"#,
            ),
            case("none", "", r#""$DEPSETFS" run --log "$T/log" --"#),
        ],
    );
}

#[test]
fn second_mount_on_a_mirror() {
    let t = TestDir::new("bad_second_mount");
    let out = ns_script(
        &t,
        120,
        r#"
"$DEPSETFS" mount --log "$T/log1" "$MP"
before=$(mount_table)
set +e
"$DEPSETFS" mount --log "$T/log2" "$MP" >"$T/cmd.out" 2>"$T/cmd.err"
echo "rc=$?"
set -e
[ "$(mount_table)" = "$before" ] && echo "mounts=unchanged"
"$DEPSETFS" umount "$MP"
echo "left=$(mounts_under "$T" | wc -l)"
"#,
    );
    out.assert_ok("mounting twice");
    let lines = out.stdout_lines();
    assert_eq!(lines.len(), 3, "{}", out.describe());
    assert_ne!(lines[0], "rc=0", "a second mount on a mirror succeeded");
    assert_eq!(lines[1], "mounts=unchanged");
    assert_eq!(lines[2], "left=0");
    let err = fs::read_to_string(t.join("cmd.err")).unwrap();
    assert!(
        err.lines().count() == 1 && err.starts_with("depsetfs: "),
        "stderr: {err:?}"
    );
}

#[test]
fn truncated_log_is_a_warning() {
    let t = TestDir::new("bad_truncated_log");
    ns_script(
        &t,
        120,
        r#""$DEPSETFS" run --log "$T/log" --timeout 60 -- cat /etc/hostname"#,
    )
    .assert_ok("depsetfs run -- cat /etc/hostname");
    let full = depsetfs(&t, &["dump", "--log", t.log().to_str().unwrap()]);
    full.assert_ok("dump of the whole log");
    assert_eq!(full.stderr, "", "a complete log dumps without warnings");
    let full_lines: Vec<&str> = full.stdout.lines().collect();
    parse_events(&full.stdout);

    let bytes = fs::read(t.log()).unwrap();
    assert!(
        bytes.len() > 200,
        "a suspiciously small log: {} bytes",
        bytes.len()
    );
    for keep in [bytes.len() - 3, bytes.len() * 6 / 10] {
        let cut = t.join(&format!("cut-{keep}.log"));
        fs::write(&cut, &bytes[..keep]).unwrap();
        let out = depsetfs(&t, &["dump", "--log", cut.to_str().unwrap()]);
        assert!(
            out.ok(),
            "a truncated tail is not an error: {}",
            out.describe()
        );
        assert_eq!(
            out.stderr.lines().filter(|l| !l.is_empty()).count(),
            1,
            "a truncated tail is reported as one warning line: {}",
            out.describe()
        );
        let events = parse_events(&out.stdout);
        let mut lines: Vec<&str> = out.stdout.lines().collect();
        // dump may end with a {"type":"truncated","at":OFFSET} marker line.
        if events.last().is_some_and(|e| e["type"] == "truncated") {
            lines.pop();
        }
        assert!(
            lines.len() < full_lines.len(),
            "cut to {keep} of {} bytes, yet all {} records were dumped",
            bytes.len(),
            full_lines.len()
        );
        assert_eq!(
            lines[..],
            full_lines[..lines.len()],
            "the records before the cut are not dumped as they were"
        );
        // The set of a truncated log still comes out.
        let set = depsetfs(&t, &["dump", "--set", "--log", cut.to_str().unwrap()]);
        assert!(
            set.ok(),
            "dump --set of a truncated log: {}",
            set.describe()
        );
    }
}

/// An output whose directory does not exist is named in one clear line.
#[test]
fn export_to_a_missing_directory() {
    let t = TestDir::new("bad_export_parent");
    ns_script(&t, 120, r#""$DEPSETFS" run --log "$T/log" -- true"#).assert_ok("trace true");
    let out = depsetfs(
        &t,
        &[
            "export",
            "--log",
            "log",
            "--format",
            "tar",
            "--output",
            "missing/out.tar",
        ],
    );
    assert!(!out.ok(), "{}", out.describe());
    assert_eq!(
        out.stderr,
        format!(
            "depsetfs: {0}/missing/out.tar: cannot write there: the directory {0}/missing does not exist\n",
            t.str()
        )
    );
    assert!(out.stdout.is_empty());
}

/// A missing required argument is named in the one line, with the subcommand's --help.
#[test]
fn missing_required_arguments_are_named() {
    check_cases(
        "missing_argument",
        &[
            case("umount", "", r#""$DEPSETFS" umount"#),
            case("mount", "", r#""$DEPSETFS" mount --log "$T/log""#),
            case("export", "", r#""$DEPSETFS" export --output "$T/out""#),
            case("files", "", r#""$DEPSETFS" files"#),
        ],
    );
    let t = TestDir::new("bad_missing_argument_named");
    for (args, named, help) in [
        (
            &["umount"][..],
            "<MOUNTPOINT>",
            "(see depsetfs umount --help)",
        ),
        (
            &["mount", "--log", "x"][..],
            "<MOUNTPOINT>",
            "(see depsetfs mount --help)",
        ),
        (
            &["export", "--output", "x"][..],
            "--format <FORMAT>",
            "(see depsetfs export --help)",
        ),
        (
            &["files"][..],
            "--pid <[LABEL:]PID>",
            "(see depsetfs files --help)",
        ),
    ] {
        let out = depsetfs(&t, args);
        let line = out.stderr.trim_end();
        assert!(
            line.starts_with("depsetfs: ") && line.contains(named) && line.ends_with(help),
            "depsetfs {}: {line:?}",
            args.join(" ")
        );
    }
}
