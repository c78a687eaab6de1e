//! The manual flow of the README: `depsetfs mount`, `mount-helpers/chroot-prepare`, chroot,
//! `mount-helpers/chroot-release`, `depsetfs umount`, `depsetfs dump --set`; the same with
//! `--source`; and the helpers refusing anything that is not a depsetfs mirror.

mod common;

use std::collections::BTreeMap;
use std::fs;

use common::*;

fn value<'a>(vals: &'a BTreeMap<String, String>, key: &str, out: &Outcome) -> &'a str {
    vals.get(key)
        .unwrap_or_else(|| panic!("the script printed no {key}=: {}", out.describe()))
}

#[test]
fn mount_prepare_chroot_release_umount_dump() {
    let t = TestDir::new("three_step");
    fs::create_dir(t.join("data")).unwrap();
    fs::write(t.join("data/in.txt"), "payload\n").unwrap();

    let out = ns_script(
        &t,
        300,
        r#"
"$DEPSETFS" mount "$MP"
echo "fstype=$(awk -v m="$MP" '$5 == m { for (i = 7; i <= NF; i++) if ($i == "-") t = $(i + 1) } END { print t }' /proc/self/mountinfo)"
"$HELPERS/chroot-prepare" "$MP"
echo "prepared=$(mounts_under "$MP" | wc -l)"
"$HELPERS/chroot-prepare" "$MP"
echo "prepared_again=$(mounts_under "$MP" | wc -l)"
timeout 120 chroot "$MP" /bin/sh -c '
  ls / >/dev/null
  cat /etc/os-release >/dev/null
  test -r /proc/self/stat && echo "proc=ok"
  test -c /dev/null && echo "dev=ok"
  echo "inner_listing=[$(timeout 10 ls -A "$MP"; echo "rc=$?")]"
  test -d "$MP" && echo "inner_is_dir=yes"
  cp "$T/data/in.txt" "$T/data/out.txt"
'
"$HELPERS/chroot-release" "$MP"
echo "released=$(mounts_under "$MP" | wc -l)"
"$HELPERS/chroot-release" "$MP"
echo "released_again=$(mounts_under "$MP" | wc -l)"
"$DEPSETFS" umount "$MP"
echo "after_umount=$(mounts_under "$T" | wc -l)"
"#,
    );
    out.assert_ok("the three-step flow");
    let v = key_values(&out);
    assert_eq!(
        value(&v, "fstype", &out),
        "fuse.depsetfs",
        "{}",
        out.describe()
    );
    let prepared: usize = value(&v, "prepared", &out).parse().unwrap();
    // the mirror, proc, sys, dev, dev/pts, dev/shm at least
    assert!(
        prepared >= 6,
        "chroot-prepare left only {prepared} mounts: {}",
        out.describe()
    );
    assert_eq!(
        value(&v, "prepared_again", &out),
        prepared.to_string(),
        "chroot-prepare is not idempotent"
    );
    assert_eq!(value(&v, "proc", &out), "ok");
    assert_eq!(value(&v, "dev", &out), "ok");
    // The mountpoint, seen from inside the mirror, is the empty directory underneath.
    assert_eq!(
        value(&v, "inner_listing", &out),
        "[rc=0]",
        "{}",
        out.describe()
    );
    assert_eq!(value(&v, "inner_is_dir", &out), "yes");
    assert_eq!(
        value(&v, "released", &out),
        "1",
        "chroot-release left binds behind"
    );
    assert_eq!(value(&v, "released_again", &out), "1");
    assert_eq!(
        value(&v, "after_umount", &out),
        "0",
        "depsetfs umount left mounts behind"
    );
    assert_eq!(
        fs::read_to_string(t.join("data/out.txt")).unwrap(),
        "payload\n"
    );

    // Without --log: the log went to $DEPSETFS_STATE_DIR and dump reads last.log.
    let set = dump_set(&t, None);
    for program in ["ls", "cat", "sh", "cp"] {
        assert_program_in_set(&set, program);
    }
    assert_chain_in_set(&set, "/etc/os-release", "read by cat");
    let input = t.join("data/in.txt");
    assert_in_set(&set, input.to_str().unwrap(), "read by cp");
    assert_unrelated_absent(&set);
    assert_no_host_paths(&set, &[&t.mnt(), &t.state()]);
    for p in &set {
        assert!(
            !p.starts_with("/proc/") && !p.starts_with("/sys/"),
            "{p}: /proc and /sys are bound, not mirrored, yet this is in the set"
        );
    }
}

#[test]
fn mirrors_another_source_tree() {
    let t = TestDir::new("three_step_source");
    let out = ns_script(
        &t,
        300,
        r#"
src="$T/src"
mkdir -p "$src/proc" "$src/sys" "$src/dev" "$src/tmp" "$src/data"
for f in /usr/bin/dash $(ldd /usr/bin/dash | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }'); do
  cp -L --parents "$f" "$src/"
done
echo 'hello from src' >"$src/data/hello.txt"

"$DEPSETFS" mount --source "$src" --log "$T/mount.log" "$MP"
"$HELPERS/chroot-prepare" "$MP"
timeout 60 chroot "$MP" /usr/bin/dash -c 'read -r x </data/hello.txt; echo "mount:$x"; if test -e /usr/bin/ls; then echo "ls:visible"; else echo "ls:absent"; fi'
"$HELPERS/chroot-release" "$MP"
"$DEPSETFS" umount "$MP"

cd /
"$DEPSETFS" run --source "$src" --log "$T/run.log" --timeout 60 -- /usr/bin/dash -c 'read -r x </data/hello.txt; echo "run:$x"'
echo "after:$(mounts_under "$T" | wc -l)"
"#,
    );
    out.assert_ok("mount --source / run --source");
    assert_eq!(
        out.stdout_lines(),
        [
            "mount:hello from src",
            "ls:absent",
            "run:hello from src",
            "after:0"
        ],
        "{}",
        out.describe()
    );

    let (interp, libs) = elf_deps("/usr/bin/dash");
    for log in ["mount.log", "run.log"] {
        let log = t.join(log);
        let set = dump_set(&t, Some(&log));
        // Paths inside the source tree, which has no symlinks: the paths as named.
        assert_in_set(&set, "/usr/bin/dash", "the program");
        assert_in_set(&set, "/data/hello.txt", "read by the program");
        assert_in_set(&set, &interp, "ELF interpreter");
        for lib in &libs {
            assert_in_set(&set, lib, "library");
        }
        assert_not_in_set(&set, "/usr/bin/ls");
        assert_no_host_paths(&set, &[&t.path]);
        let json = dump_set_json(&t, &log, &set);
        let hello = json_entry(&json, "/data/hello.txt");
        assert_eq!(hello["kind"], "file", "{hello}");
        assert_eq!(hello["size"], 15, "{hello}");
    }
}

#[test]
fn helpers_refuse_what_is_not_a_mirror() {
    let t = TestDir::new("three_step_helpers_refuse");
    let out = ns_script(
        &t,
        60,
        r#"
mkdir -p "$T/plain" "$T/tm"
mount -t tmpfs tmpfs "$T/tm"
mkdir "$T/tm/proc" "$T/tm/sys" "$T/tm/dev"
before=$(mount_table)
for helper in chroot-prepare chroot-release; do
  for target in "$T/plain" "$T/tm" / "$T/missing" ""; do
    set +e
    if [ -n "$target" ]; then "$HELPERS/$helper" "$target" >"$T/out" 2>"$T/err"; else "$HELPERS/$helper" >"$T/out" 2>"$T/err"; fi
    rc=$?
    set -e
    echo "$helper|$target|rc=$rc|out=$(wc -c <"$T/out")|lines=$(wc -l <"$T/err")|$(head -n 1 "$T/err")"
  done
done
[ "$(mount_table)" = "$before" ] && echo "mounts:unchanged"
"#,
    );
    out.assert_ok("the refusal script");
    let lines = out.stdout_lines();
    assert_eq!(lines.len(), 11, "{}", out.describe());
    for line in &lines[..10] {
        let fields: Vec<&str> = line.split('|').collect();
        let helper = fields[0];
        assert_eq!(fields[2], "rc=1", "{line}");
        assert_eq!(fields[3], "out=0", "{line}");
        assert_eq!(fields[4], "lines=1", "{line}");
        assert!(fields[5].starts_with(&format!("{helper}: ")), "{line}");
    }
    assert_eq!(
        lines[10], "mounts:unchanged",
        "a refused helper still (un)mounted something"
    );
}

/// The brief's three commands, verbatim in order: `depsetfs mount`, `chroot MP CMD`, then
/// `depsetfs dump --set` while the mirror is still mounted and right after the command: the set
/// already holds what the command read (the daemon writes its log out on request, not only
/// once a second).
#[test]
fn dump_set_while_mounted_sees_what_just_ran() {
    let t = TestDir::new("three_step_live");
    fs::write(t.join("in.txt"), "payload\n").unwrap();
    let out = ns_script(
        &t,
        300,
        r#"
"$DEPSETFS" mount "$MP"
timeout 120 chroot "$MP" /bin/cat "$T/in.txt" >/dev/null
"$DEPSETFS" dump --set > "$T/set.txt"
echo "dump_rc=$?"
"$DEPSETFS" umount "$MP"
"#,
    );
    out.assert_ok("mount, chroot, dump --set");
    assert_eq!(
        key_values(&out).get("dump_rc").map(String::as_str),
        Some("0")
    );
    let set = fs::read_to_string(t.join("set.txt")).unwrap();
    let wanted = t.join("in.txt");
    assert!(
        set.lines().any(|line| line == wanted.to_str().unwrap()),
        "{} is missing from the set dumped while mounted:\n{set}",
        wanted.display()
    );
}

/// The state `umount` trusts is depsetfs's own: after a mount (whose daemon runs with umask 0),
/// no state file or directory is writable by group or others; an entry someone else could have
/// written (mode 0666, owner nobody, a symlink) makes `umount` refuse with one line and leave
/// the mount alone; and `umount` of a symlink to the mountpoint unmounts it.
#[test]
fn state_is_not_writable_by_others_and_umount_trusts_only_its_own() {
    let t = TestDir::new("three_step_state_modes");
    let out = ns_script(
        &t,
        120,
        r#"
S="$DEPSETFS_STATE_DIR"
umask 000
"$DEPSETFS" mount "$MP"
entry=$(ls "$S"/mounts/*.json)
for f in "$S" "$S/mounts" "$entry" "$S/logs" "$(readlink "$S/last.log")" "$S/daemon.log" "$S"/mounts/*.sock; do
  echo "mode $(stat -c '%a %U' "$f") ${f#$S/}"
done
refuse() {
  set +e
  "$DEPSETFS" umount "$MP" 2>"$T/err"
  echo "$1: rc=$? lines=$(wc -l <"$T/err") mounted=$(mounts_under "$MP" | wc -l) $(cat "$T/err")"
  set -e
}
chmod 666 "$entry"; refuse chmod; chmod 644 "$entry"
chown nobody "$entry"; refuse chown; chown root "$entry"
mv "$entry" "$T/aside.json"; ln -s "$T/aside.json" "$entry"; refuse symlink; rm "$entry"; mv "$T/aside.json" "$entry"
ln -s "$MP" "$T/link"
"$DEPSETFS" umount "$T/link"
echo "after: mounted=$(mounts_under "$MP" | wc -l) entries=$(ls "$S/mounts" | grep -c json || true)"
"#,
    );
    out.assert_ok("mount, tamper, umount through a symlink");
    let modes: Vec<&str> = out
        .stdout_lines()
        .into_iter()
        .filter_map(|line| line.strip_prefix("mode "))
        .collect();
    assert_eq!(modes.len(), 7, "{}", out.describe());
    for line in &modes {
        let (mode, rest) = line.split_once(' ').unwrap();
        let mode = u32::from_str_radix(mode, 8).unwrap();
        assert_eq!(mode & 0o022, 0, "{line}: writable by group or others");
        assert!(rest.starts_with("root "), "{line}: not owned by root");
    }
    for what in ["chmod", "chown", "symlink"] {
        let line = out
            .stdout_lines()
            .into_iter()
            .find(|line| line.starts_with(&format!("{what}: ")))
            .unwrap_or_else(|| panic!("no {what} line: {}", out.describe()));
        assert!(
            line.contains("rc=1 lines=1 mounted=1 depsetfs: mount registry")
                && line.contains("was not written by depsetfs"),
            "umount trusted a tampered entry ({what}): {line}"
        );
    }
    assert!(
        out.stdout.contains("after: mounted=0 entries=0"),
        "umount of a symlink to the mountpoint: {}",
        out.describe()
    );
}

/// A mountpoint whose name holds a newline (mountinfo shows it as \012), or ends with one:
/// chroot-prepare binds, chroot-release unbinds everything, nothing is left but the mirror.
#[test]
fn helpers_handle_a_newline_in_the_mountpoint_name() {
    let t = TestDir::new("three_step_newline");
    let out = ns_script(
        &t,
        120,
        r#"
for name in $'mi\nrror' $'ends-with-newline\n' 'back\134slash and space'; do
  mp=$T/$name
  mkdir "$mp"
  "$DEPSETFS" mount --overwrite-log --log "$T/log" "$mp" 2>/dev/null
  "$HELPERS/chroot-prepare" "$mp"
  echo "proc_bound=$(test -r "$mp/proc/self/stat" && echo yes)"
  "$HELPERS/chroot-release" "$mp"
  # Everything under $T still mounted, in mountinfo's escaped form: the mirror alone.
  echo "left=$(awk -v t="$T/" 'index($5, t) == 1 { n++ } END { print n + 0 }' /proc/self/mountinfo)"
  "$DEPSETFS" umount "$mp" 2>/dev/null
done
"#,
    );
    out.assert_ok("prepare and release on names with a newline");
    assert_eq!(
        out.stdout_lines(),
        ["proc_bound=yes", "left=1"].repeat(3),
        "{}",
        out.describe()
    );
}
