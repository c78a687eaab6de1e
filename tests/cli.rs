//! The conventions of a system tool: `depsetfs doctor` checks this machine and says what will
//! be recorded, `depsetfs completions SHELL` gives a script the shell loads and that completes
//! subcommands, `depsetfs __man DIR` writes man pages that render, and `depsetfs mount` says
//! where its log goes.

mod common;

use std::fs;

use common::*;

#[test]
fn doctor_checks_everything_and_passes_as_root() {
    require_root();
    let t = TestDir::new("cli_doctor");
    let out = depsetfs(&t, &["doctor"]);
    out.assert_ok("depsetfs doctor as root");
    let lines = out.stdout_lines();
    for name in [
        "/dev/fuse",
        "root",
        "mount namespace",
        "user namespace",
        "pid namespace",
        "proc connector",
        "seccomp user notification",
        "FUSE passthrough",
        "kernel entry cache",
        "FUSE over io_uring",
    ] {
        let line = lines
            .iter()
            .find(|l| {
                l.split_whitespace()
                    .skip(1)
                    .collect::<Vec<_>>()
                    .join(" ")
                    .starts_with(name)
            })
            .unwrap_or_else(|| panic!("no line for {name}: {}", out.describe()));
        let status = line.split_whitespace().next().unwrap_or("");
        assert!(
            ["ok", "missing", "off", "unknown"].contains(&status),
            "{line}"
        );
    }
    for essential in ["/dev/fuse", "root", "mount namespace"] {
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("ok") && l.contains(essential)),
            "{essential} is not ok as root: {}",
            out.describe()
        );
    }
    assert!(
        lines
            .last()
            .is_some_and(|l| l.starts_with("depsetfs can mount and record here")),
        "{}",
        out.describe()
    );
}

#[test]
fn doctor_fails_without_root() {
    require_root();
    let t = TestDir::new("cli_doctor_nobody");
    let out = host_script(
        &t,
        60,
        r#"cp "$DEPSETFS" "$T/depsetfs"; chmod 0755 "$T/depsetfs"
set +e
$AS_NOBODY "$T/depsetfs" doctor
echo "rc=$?""#,
    );
    let lines = out.stdout_lines();
    assert_eq!(lines.last(), Some(&"rc=1"), "{}", out.describe());
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("missing") && l.contains("root")),
        "{}",
        out.describe()
    );
}

#[test]
fn bash_completion_loads_and_completes_subcommands() {
    let t = TestDir::new("cli_completion_bash");
    let out = host_script(
        &t,
        60,
        r#""$DEPSETFS" completions bash >"$T/depsetfs.bash"
bash --norc --noprofile -c '
  set -eu
  . "$T/depsetfs.bash"
  complete -p depsetfs
  COMP_WORDS=(depsetfs mo); COMP_CWORD=1; COMP_LINE="depsetfs mo"; COMP_POINT=${#COMP_LINE}
  _depsetfs depsetfs mo depsetfs
  echo "reply=${COMPREPLY[*]}"
  COMP_WORDS=(depsetfs d); COMP_CWORD=1; COMP_LINE="depsetfs d"; COMP_POINT=${#COMP_LINE}
  _depsetfs depsetfs d depsetfs
  echo "reply2=${COMPREPLY[*]}"
'"#,
    );
    out.assert_ok("sourcing the bash completion");
    let vals = key_values(&out);
    assert_eq!(
        vals.get("reply").map(String::as_str),
        Some("mount"),
        "{}",
        out.describe()
    );
    let mut reply2: Vec<&str> = vals
        .get("reply2")
        .map(|r| r.split_whitespace().collect())
        .unwrap_or_default();
    reply2.sort();
    assert_eq!(reply2, ["diff", "doctor", "dump"], "{}", out.describe());
}

#[test]
fn zsh_and_fish_completions_name_the_subcommands() {
    let t = TestDir::new("cli_completion_other");
    for shell in ["zsh", "fish"] {
        let out = depsetfs(&t, &["completions", shell]);
        out.assert_ok(&format!("completions {shell}"));
        for sub in ["mount", "umount", "dump", "run", "export", "doctor"] {
            assert!(out.stdout.contains(sub), "{shell}: no {sub}");
        }
        assert!(
            !out.stdout.contains("__serve"),
            "{shell}: a hidden subcommand"
        );
    }
    let bad = depsetfs(&t, &["completions", "tcsh"]);
    assert!(
        !bad.ok() && bad.stderr.starts_with("depsetfs: "),
        "{}",
        bad.describe()
    );
}

#[test]
fn man_pages_are_written_per_subcommand_and_render() {
    let t = TestDir::new("cli_man");
    let dir = t.join("man");
    fs::create_dir(&dir).unwrap();
    depsetfs(&t, &["__man", dir.to_str().unwrap()]).assert_ok("depsetfs __man DIR");
    let mut pages: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    pages.sort();
    for page in [
        "depsetfs.1",
        "depsetfs-mount.1",
        "depsetfs-doctor.1",
        "depsetfs-export.1",
    ] {
        assert!(pages.contains(&page.to_string()), "no {page} in {pages:?}");
    }
    assert!(
        !pages.iter().any(|p| p.contains("__")),
        "hidden subcommands got pages: {pages:?}"
    );
    let main = fs::read_to_string(dir.join("depsetfs.1")).unwrap();
    for sub in [
        "mount", "umount", "dump", "run", "chroot", "report", "export", "verify", "doctor",
    ] {
        assert!(main.contains(sub), "depsetfs.1 does not name {sub}");
    }
    // Rendered as man would (groff is part of man-db's dependencies): no warnings, and the
    // options are there.
    let out = host_script(
        &t,
        60,
        r#"groff -man -Tutf8 -ww -z "$T/man/depsetfs-mount.1" 2>&1
MANWIDTH=100 MANPAGER=cat man -l "$T/man/depsetfs-mount.1" | col -b"#,
    );
    out.assert_ok("rendering depsetfs-mount.1");
    assert!(
        out.stdout.contains("--no-passthrough"),
        "{}",
        out.describe()
    );
    assert!(out.stdout.contains("--transport"), "{}", out.describe());
    assert!(
        !out.stdout.contains("warning"),
        "groff warned: {}",
        out.describe()
    );
}

#[test]
fn mount_says_where_the_log_goes() {
    require_root();
    let t = TestDir::new("cli_mount_log");
    let out = ns_script(
        &t,
        120,
        r#""$DEPSETFS" mount "$MP" 2>"$T/mount.err"
"$DEPSETFS" umount "$MP" 2>/dev/null
"$DEPSETFS" mount --log "$T/my.log" "$MP" 2>"$T/mount2.err"
"$DEPSETFS" umount "$MP" 2>/dev/null"#,
    );
    out.assert_ok("mount, umount, mount --log, umount");
    let err = fs::read_to_string(t.join("mount.err")).unwrap();
    let logs = t.state().join("logs");
    assert_eq!(err.lines().count(), 1, "{err:?}");
    assert!(
        err.starts_with(&format!(
            "depsetfs: mounted {}; log: {}/",
            t.mnt().display(),
            logs.display()
        )),
        "{err:?}"
    );
    let err = fs::read_to_string(t.join("mount2.err")).unwrap();
    assert_eq!(
        err,
        format!(
            "depsetfs: mounted {}; log: {}\n",
            t.mnt().display(),
            t.join("my.log").display()
        )
    );
}
