//! Sets compared on real traces: two versions of a small C program (v2 reads one more data
//! file and links one more library) traced with `depsetfs run`; `depsetfs diff` between v1's
//! exported set and v2's log shows exactly the files that changed and `--fail-on` gates on
//! it; `depsetfs manifest` of v2's exported root satisfies v2's set, a manifest with the
//! library removed does not (and `satisfies` says why the library is needed), and
//! `export --against` ships only that library. Bad inputs end in one clear line each.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;

use common::*;

const V1: &str = r#"
#include <stdio.h>
static void show(const char *path) {
    char line[256];
    FILE *f = fopen(path, "r");
    if (!f) { perror(path); return; }
    while (fgets(line, sizeof line, f)) fputs(line, stdout);
    fclose(f);
}
int main(int argc, char **argv) {
    (void)argc;
    char path[4096];
    snprintf(path, sizeof path, "%s/data/a.txt", argv[1]);
    show(path);
    return 0;
}
"#;

const V2: &str = r#"
#include <stdio.h>
#include <zlib.h>
static void show(const char *path) {
    char line[256];
    FILE *f = fopen(path, "r");
    if (!f) { perror(path); return; }
    while (fgets(line, sizeof line, f)) fputs(line, stdout);
    fclose(f);
}
int main(int argc, char **argv) {
    (void)argc;
    char path[4096];
    snprintf(path, sizeof path, "%s/data/a.txt", argv[1]);
    show(path);
    snprintf(path, sizeof path, "%s/data/b.txt", argv[1]);
    show(path);
    printf("zlib %s\n", zlibVersion());
    return 0;
}
"#;

/// Builds `source` as `$T/bin/app` (with `libs`), the program's data files beside it.
fn build(t: &TestDir, source: &str, libs: &str) {
    fs::create_dir_all(t.join("data")).unwrap();
    fs::write(t.join("data/a.txt"), "alpha\n").unwrap();
    fs::write(t.join("data/b.txt"), "beta\n").unwrap();
    fs::create_dir_all(t.join("bin")).unwrap();
    fs::write(t.join("app.c"), source).unwrap();
    host_script(
        t,
        120,
        &format!(r#"cc -O0 -o "$T/bin/app" "$T/app.c" {libs}"#),
    )
    .assert_ok("cc");
}

/// `depsetfs run --log LOG -- $T/bin/app $T`.
fn trace(t: &TestDir, log: &Path) {
    ns_script(
        t,
        300,
        &format!(
            r#""$DEPSETFS" run --log '{}' --timeout 240 -- "$T/bin/app" "$T""#,
            log.display()
        ),
    )
    .assert_ok("depsetfs run app");
}

fn arg(path: &Path) -> &str {
    path.to_str().unwrap()
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

/// The library's own names on the way the loader takes to `soname` (the soname's symlink and
/// the real file; directory symlinks such as /lib are already in any set).
fn library_chain(soname: &str) -> BTreeSet<String> {
    let found = ["/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu"]
        .iter()
        .map(|dir| format!("{dir}/{soname}"))
        .find(|path| Path::new(path).exists())
        .expect("the library is installed");
    let stem = soname.split('.').next().unwrap();
    resolution_chain(&found)
        .into_iter()
        .filter(|hop| hop.rsplit('/').next().unwrap().starts_with(stem))
        .collect()
}

fn paths_of(list: &Value) -> BTreeSet<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["path"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn diff_of_two_versions_shows_exactly_what_changed_and_gates_on_it() {
    let t = TestDir::new("compare_versions");
    let (log1, log2) = (t.join("v1.dlog"), t.join("v2.dlog"));
    build(&t, V1, "");
    trace(&t, &log1);
    // v1 as it shipped: its strict set exported as a tar (a log holds no contents, so the
    // release keeps its artifact).
    let v1_tar = t.join("v1.tar");
    depsetfs(
        &t,
        &[
            "export",
            "--log",
            arg(&log1),
            "--strategy",
            "strict",
            "--format",
            "tar",
        ]
        .into_iter()
        .chain(["--output", arg(&v1_tar)])
        .collect::<Vec<_>>(),
    )
    .assert_ok("export v1");
    // The same set exported as a directory and as an OCI layout reads back as the tar, and
    // as the log's set hashed in the tree: every kind, mode, owner, size, hash and target.
    for (format, name) in [("dir", "v1-root"), ("oci", "v1-oci")] {
        let output = t.join(name);
        depsetfs(
            &t,
            &[
                "export",
                "--log",
                arg(&log1),
                "--strategy",
                "strict",
                "--format",
                format,
            ]
            .into_iter()
            .chain(["--output", arg(&output)])
            .collect::<Vec<_>>(),
        )
        .assert_ok("export v1");
        for other in [&v1_tar, &log1] {
            let same = depsetfs(
                &t,
                &[
                    "diff",
                    arg(&output),
                    arg(other),
                    "--fail-on",
                    "added,removed,changed",
                ],
            );
            same.assert_ok(&format!("diff {name} {}", other.display()));
            assert!(
                same.stdout.ends_with("0 added, 0 removed, 0 changed\n"),
                "{}",
                same.stdout
            );
        }
    }
    build(&t, V2, "-lz");
    trace(&t, &log2);

    let out = depsetfs(&t, &["diff", arg(&v1_tar), arg(&log2), "--json"]);
    out.assert_ok("diff --json");
    let report: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(report["format"], "depsetfs-diff 1");
    assert_eq!(report["a"]["kind"], "tar");
    assert_eq!(report["b"]["kind"], "log");
    let app = format!("{}/bin/app", t.str());
    let b_txt = format!("{}/data/b.txt", t.str());
    let mut expected_added = library_chain("libz.so.1");
    expected_added.insert(b_txt.clone());
    assert_eq!(paths_of(&report["added"]), expected_added, "{}", out.stdout);
    assert_eq!(
        paths_of(&report["removed"]),
        BTreeSet::new(),
        "{}",
        out.stdout
    );
    assert_eq!(
        paths_of(&report["changed"]),
        BTreeSet::from([app.clone()]),
        "{}",
        out.stdout
    );
    let fields: Vec<&str> = report["changed"][0]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap())
        .collect();
    assert!(fields.contains(&"sha256"), "{fields:?}");
    // Who needed each added path: the new binary.
    for entry in report["added"].as_array().unwrap() {
        if entry["kind"] == "file" {
            let needed = entry["needed_by"].to_string();
            assert!(needed.contains(&app), "{entry}");
        }
    }

    // The text form says the same, one line a path.
    let text = depsetfs(&t, &["diff", arg(&v1_tar), arg(&log2)]);
    text.assert_ok("diff");
    assert!(
        text.stdout.contains(&format!("+ {b_txt}  file")),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout.contains(&format!("~ {app}  ")),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout.ends_with(&format!(
            "{} added, 0 removed, 1 changed\n",
            expected_added.len()
        )),
        "{}",
        text.stdout
    );

    // Gates: added paths fail the build, nothing was removed.
    let gated = depsetfs(
        &t,
        &["diff", arg(&v1_tar), arg(&log2), "--fail-on", "added"],
    );
    assert_eq!(gated.code, Some(1), "{}", gated.describe());
    assert!(
        gated
            .stderr
            .contains(&format!("--fail-on: {} added", expected_added.len())),
        "{}",
        gated.describe()
    );
    let removed_only = depsetfs(
        &t,
        &["diff", arg(&v1_tar), arg(&log2), "--fail-on", "removed"],
    );
    assert_eq!(removed_only.code, Some(0), "{}", removed_only.describe());

    // Two logs: the same added paths (contents come from the tree as it is now, so the
    // rebuilt binary is the same on both sides).
    let logs = depsetfs(&t, &["diff", arg(&log1), arg(&log2), "--json"]);
    logs.assert_ok("diff of two logs");
    let logs: Value = serde_json::from_str(&logs.stdout).unwrap();
    assert_eq!(paths_of(&logs["added"]), expected_added);
    assert_eq!(paths_of(&logs["removed"]), BTreeSet::new());
    // Both logs' source tree is this machine's root: its dpkg database says zlib1g owns the
    // library, and no package changed between the two sources.
    for entry in logs["added"].as_array().unwrap() {
        if entry["kind"] == "file" && entry["path"].as_str().unwrap().contains("/libz.so") {
            assert_eq!(entry["package"], "zlib1g", "{entry}");
        }
    }
    assert_eq!(logs["packages"]["changed"], serde_json::json!([]), "{logs}");
    let grouped = depsetfs(&t, &["diff", arg(&log1), arg(&log2)]);
    grouped.assert_ok("diff of two logs");
    assert!(
        grouped.stdout.contains("\n[zlib1g]\n+ ")
            && grouped
                .stdout
                .contains("packages: 0 added, 0 removed, 0 at another version\n"),
        "{}",
        grouped.stdout
    );

    // A saved set (dump --set --json) of v1 against v2's: the same added paths.
    let saved = depsetfs(
        &t,
        &[
            "dump",
            "--set",
            "--json",
            "--strategy",
            "strict",
            "--log",
            arg(&log1),
        ],
    );
    saved.assert_ok("dump --set --json");
    assert!(saved.stdout.contains(r#""format": "depsetfs-set 1""#));
    let saved_path = t.join("v1.json");
    fs::write(&saved_path, &saved.stdout).unwrap();
    let from_saved = depsetfs(&t, &["diff", arg(&saved_path), arg(&log2), "--json"]);
    from_saved.assert_ok("diff saved set");
    let from_saved: Value = serde_json::from_str(&from_saved.stdout).unwrap();
    assert_eq!(paths_of(&from_saved["added"]), expected_added);
}

#[test]
fn satisfies_a_manifest_of_the_exported_root_and_names_a_removed_library() {
    let t = TestDir::new("compare_satisfies");
    let log = t.log();
    build(&t, V2, "-lz");
    trace(&t, &log);
    let root = t.join("root");
    depsetfs(
        &t,
        &[
            "export",
            "--log",
            arg(&log),
            "--strategy",
            "strict",
            "--format",
            "dir",
        ]
        .into_iter()
        .chain(["--output", arg(&root)])
        .collect::<Vec<_>>(),
    )
    .assert_ok("export dir");
    let target = t.join("target.json");
    let made = depsetfs(&t, &["manifest", arg(&root), "--output", arg(&target)]);
    made.assert_ok("manifest");
    let manifest: Value = serde_json::from_str(&fs::read_to_string(&target).unwrap()).unwrap();
    assert_eq!(manifest["format"], "depsetfs-manifest 1");
    assert_eq!(manifest["arch"], std::env::consts::ARCH);

    let yes = depsetfs(&t, &["satisfies", arg(&target), "--log", arg(&log)]);
    yes.assert_ok("satisfies the exported root");
    assert!(yes.stdout.starts_with("satisfied: "), "{}", yes.stdout);

    // The library's real file gone from the target.
    let libz: PathBuf = library_chain("libz.so.1")
        .into_iter()
        .map(PathBuf::from)
        .find(|path| !path.is_symlink())
        .unwrap();
    fs::remove_file(root.join(libz.strip_prefix("/").unwrap())).unwrap();
    // The second manifest reuses every hash but the removed file's.
    let again = depsetfs(&t, &["manifest", arg(&root), "--output", arg(&target)]);
    again.assert_ok("manifest again");
    assert!(
        again.stderr.contains("(0 hashed, "),
        "an unchanged tree was rehashed: {}",
        again.stderr
    );
    let no = depsetfs(&t, &["satisfies", arg(&target), "--log", arg(&log)]);
    assert_eq!(no.code, Some(1), "{}", no.describe());
    let libz_text = libz.to_str().unwrap();
    let missing: Vec<&str> = no
        .stdout
        .lines()
        .filter(|line| line.starts_with("missing ") || line.starts_with("differs "))
        .collect();
    assert_eq!(missing.len(), 1, "{}", no.stdout);
    assert!(
        missing[0].starts_with(&format!("missing {libz_text}  file")),
        "{}",
        no.stdout
    );
    // Why it is needed: the program that loaded it.
    let app = format!("{}/bin/app", t.str());
    assert!(
        no.stdout.contains("why: ") && no.stdout.contains(&app),
        "{}",
        no.stdout
    );
    assert!(
        no.stdout.contains("not satisfied: 1 of the"),
        "{}",
        no.stdout
    );
    // A target whose dpkg database lacks zlib1g: the package to install is named (the
    // version is the one of the log's source tree, this machine).
    let dpkg_arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    fs::create_dir_all(root.join("var/lib/dpkg/info")).unwrap();
    fs::write(
        root.join("var/lib/dpkg/status"),
        format!(
            "Package: dpkg\nStatus: install ok installed\nArchitecture: {dpkg_arch}\nVersion: 1.0\n"
        ),
    )
    .unwrap();
    let with_packages = t.join("target-packages.json");
    let made = depsetfs(
        &t,
        &["manifest", arg(&root), "--output", arg(&with_packages)],
    );
    made.assert_ok("manifest with packages");
    assert!(made.stderr.contains("1 installed"), "{}", made.stderr);
    let named = depsetfs(&t, &["satisfies", arg(&with_packages), "--log", arg(&log)]);
    assert_eq!(named.code, Some(1), "{}", named.describe());
    assert!(
        named.stdout.contains("\n  package: zlib1g ")
            && named.stdout.contains(" is not installed on the target\n"),
        "{}",
        named.stdout
    );
    fs::remove_dir_all(root.join("var")).unwrap();

    // export --against ships only the missing file (and its directories).
    let delta = t.join("delta");
    let shipped = depsetfs(
        &t,
        &[
            "export",
            "--log",
            arg(&log),
            "--strategy",
            "strict",
            "--format",
            "dir",
        ]
        .into_iter()
        .chain(["--output", arg(&delta), "--against", arg(&target)])
        .collect::<Vec<_>>(),
    );
    shipped.assert_ok("export --against");
    let files = host_script(
        &t,
        30,
        r#"cd "$T/delta" && find . -type f -o -type l | sort"#,
    );
    files.assert_ok("find");
    assert_eq!(
        files.stdout_lines(),
        ["./.depsetfs-export".to_string(), format!(".{libz_text}")],
        "{}",
        shipped.describe()
    );
}

#[test]
fn bad_inputs_end_in_one_clear_line() {
    let t = TestDir::new("compare_bad_input");
    let log = t.log();
    build(&t, V1, "");
    trace(&t, &log);
    let random = t.join("random.bin");
    fs::write(&random, b"\x00\x01\x02 this is nothing depsetfs writes").unwrap();
    let out = depsetfs(&t, &["diff", arg(&log), arg(&random)]);
    assert_one_line_error(
        &out,
        "not a log, a saved set (dump --set --json), a manifest",
    );
    let out = depsetfs(&t, &["diff", arg(&log), "/nonexistent/x.json"]);
    assert_one_line_error(&out, "/nonexistent/x.json: No such file or directory");

    // A manifest of another architecture, and one of a future format version.
    let root = t.join("root");
    depsetfs(
        &t,
        &[
            "export",
            "--log",
            arg(&log),
            "--strategy",
            "strict",
            "--format",
            "dir",
        ]
        .into_iter()
        .chain(["--output", arg(&root)])
        .collect::<Vec<_>>(),
    )
    .assert_ok("export");
    let target = t.join("target.json");
    depsetfs(&t, &["manifest", arg(&root), "--output", arg(&target)]).assert_ok("manifest");
    let text = fs::read_to_string(&target).unwrap();
    let arch = format!(r#""arch":"{}""#, std::env::consts::ARCH);
    assert!(text.contains(&arch));
    let other = t.join("other-arch.json");
    fs::write(&other, text.replacen(&arch, r#""arch":"riscv64""#, 1)).unwrap();
    let out = depsetfs(&t, &["satisfies", arg(&other), "--log", arg(&log)]);
    assert_one_line_error(
        &out,
        "a manifest made on riscv64, but the set's programs are built for",
    );
    let out = depsetfs(&t, &["diff", arg(&log), arg(&other)]);
    assert_one_line_error(&out, "a manifest made on riscv64");
    let future = t.join("future.json");
    fs::write(
        &future,
        text.replacen("depsetfs-manifest 1", "depsetfs-manifest 9", 1),
    )
    .unwrap();
    let out = depsetfs(&t, &["satisfies", arg(&future), "--log", arg(&log)]);
    assert_one_line_error(
        &out,
        "manifest format version 9 is newer than this depsetfs reads",
    );
    let saved = depsetfs(&t, &["dump", "--set", "--json", "--log", arg(&log)]);
    saved.assert_ok("dump --set --json");
    let future_set = t.join("future-set.json");
    fs::write(
        &future_set,
        saved.stdout.replacen("depsetfs-set 1", "depsetfs-set 2", 1),
    )
    .unwrap();
    let out = depsetfs(&t, &["diff", arg(&future_set), arg(&log)]);
    assert_one_line_error(&out, "saved set format version 2 is newer");
    // A saved set is no target: it has no contents to compare.
    let set_path = t.join("set.json");
    fs::write(&set_path, &saved.stdout).unwrap();
    let out = depsetfs(&t, &["satisfies", arg(&set_path), "--log", arg(&log)]);
    assert_one_line_error(&out, "is not a manifest");
}
