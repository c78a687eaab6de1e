//! `depsetfs diff A B`: the paths only B has (added), only A has (removed), and those whose
//! type, mode, owner, size, content hash or symlink target differ (changed), comparing only
//! what both sides know (a saved set has no hashes). Each path carries who needed it on a
//! log's side and its package when package data is there (then the text groups by package);
//! when both sides list their installed packages, the packages added, removed or at another
//! version are reported too ([`super::packages::changes`]). [`Gate`]s turn a diff into a CI verdict. One merge pass over two sorted lists: 100,000
//! paths a side compare in milliseconds.

use std::io::{self, Write};

use serde::Serialize;

use super::packages::{PackageChanges, changes};
use super::{Entry, EntryJson, Side, SideKind, describe_entry, hex, mode_text};
use crate::analysis::names::{JsonName, escape};
use crate::record::FileKind;

/// The version of the `--json` document (`"format": "depsetfs-diff 1"`).
pub const DIFF_FORMAT: &str = "depsetfs-diff 1";

/// One field that differs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FieldChange {
    pub field: &'static str,
    pub a: String,
    pub b: String,
}

/// A path on both sides that differs.
#[derive(Clone, Debug)]
pub struct Changed<'a> {
    pub a: &'a Entry,
    pub b: &'a Entry,
    pub fields: Vec<FieldChange>,
}

/// What differs between two sides.
#[derive(Clone, Debug, Default)]
pub struct Diff<'a> {
    /// Only in B.
    pub added: Vec<&'a Entry>,
    /// Only in A.
    pub removed: Vec<&'a Entry>,
    pub changed: Vec<Changed<'a>>,
}

/// Compares `a` with `b` (both sorted, as [`Side::finish`] leaves them).
pub fn diff<'a>(a: &'a Side, b: &'a Side) -> Diff<'a> {
    let mut out = Diff::default();
    let (mut i, mut j) = (0, 0);
    while i < a.entries.len() || j < b.entries.len() {
        let order = match (a.entries.get(i), b.entries.get(j)) {
            (Some(x), Some(y)) => x.path.cmp(&y.path),
            (Some(_), None) => std::cmp::Ordering::Less,
            _ => std::cmp::Ordering::Greater,
        };
        match order {
            std::cmp::Ordering::Less => {
                out.removed.push(&a.entries[i]);
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                out.added.push(&b.entries[j]);
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                let fields = compare(&a.entries[i], &b.entries[j]);
                if !fields.is_empty() {
                    out.changed.push(Changed {
                        a: &a.entries[i],
                        b: &b.entries[j],
                        fields,
                    });
                }
                i += 1;
                j += 1;
            }
        }
    }
    out
}

/// The fields of two entries of one path that differ, among those both know.
pub fn compare(a: &Entry, b: &Entry) -> Vec<FieldChange> {
    let mut fields = Vec::new();
    let mut push =
        |field: &'static str, x: String, y: String| fields.push(FieldChange { field, a: x, b: y });
    let known = |kind: FileKind| kind != FileKind::Unknown;
    if known(a.kind) && known(b.kind) && a.kind != b.kind {
        push("kind", a.kind.name().to_string(), b.kind.name().to_string());
        return fields;
    }
    // A symlink's mode is always 0777 and means nothing.
    let is_link = a.kind == FileKind::Symlink || b.kind == FileKind::Symlink;
    if let Some((x, y)) = (a.mode, b.mode).into_both().filter(|_| !is_link) {
        if x != y {
            push("mode", mode_text(x), mode_text(y));
        }
    }
    if let Some((x, y)) = (a.uid, b.uid).into_both() {
        if x != y {
            push("uid", x.to_string(), y.to_string());
        }
    }
    if let Some((x, y)) = (a.gid, b.gid).into_both() {
        if x != y {
            push("gid", x.to_string(), y.to_string());
        }
    }
    if let Some((x, y)) = (a.size, b.size).into_both() {
        if x != y {
            push("size", x.to_string(), y.to_string());
        }
    }
    if let Some((x, y)) = (a.sha256, b.sha256).into_both() {
        if x != y {
            push("sha256", hex(&x), hex(&y));
        }
    }
    if let Some((x, y)) = (a.target.as_ref(), b.target.as_ref()).into_both() {
        if x != y {
            push("target", escape(x), escape(y));
        }
    }
    fields
}

trait IntoBoth<T> {
    fn into_both(self) -> Option<(T, T)>;
}

impl<T> IntoBoth<T> for (Option<T>, Option<T>) {
    fn into_both(self) -> Option<(T, T)> {
        match self {
            (Some(x), Some(y)) => Some((x, y)),
            _ => None,
        }
    }
}

/// A `--fail-on` condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Gate {
    /// Some path is only in B.
    Added,
    /// Some path is only in A.
    Removed,
    /// Some path in both differs.
    Changed,
}

/// The gates that hold, in words (`2 added`), in the order given.
pub fn gates_hit(diff: &Diff<'_>, gates: &[Gate]) -> Vec<String> {
    let mut hit = Vec::new();
    for gate in gates {
        let (count, name) = match gate {
            Gate::Added => (diff.added.len(), "added"),
            Gate::Removed => (diff.removed.len(), "removed"),
            Gate::Changed => (diff.changed.len(), "changed"),
        };
        let line = format!("{count} {name}");
        if count > 0 && !hit.contains(&line) {
            hit.push(line);
        }
    }
    hit
}

/// What a side was, for the summary line: `log a.dlog (strict set): 61 paths`.
pub fn describe_side(side: &Side, detail: Option<&str>) -> String {
    let detail = detail.map(|d| format!(" ({d})")).unwrap_or_default();
    format!(
        "{} {}{detail}: {} paths",
        side.kind.name(),
        side.name,
        side.entries.len()
    )
}

fn needed_text(needed_by: &[String]) -> String {
    if needed_by.is_empty() {
        String::new()
    } else {
        format!("  needed by {}", needed_by.join(", "))
    }
}

/// The text form: `+ PATH  kind mode owner size`, `- PATH ...`, `~ PATH  field a -> b; ...`,
/// grouped by package when any path has one, then one count line.
pub fn write_human(
    diff: &Diff<'_>,
    a: (&Side, Option<&str>),
    b: (&Side, Option<&str>),
    out: &mut dyn Write,
) -> io::Result<()> {
    writeln!(out, "A: {}", describe_side(a.0, a.1))?;
    writeln!(out, "B: {}", describe_side(b.0, b.1))?;
    if let Some(packages) = changes(a.0, b.0) {
        write_package_changes(&packages, out)?;
    }
    let grouped = diff
        .added
        .iter()
        .chain(&diff.removed)
        .chain(diff.changed.iter().map(|c| &c.b))
        .any(|entry| entry.package.is_some());
    let mut lines: Vec<(Option<&str>, String)> = Vec::new();
    for entry in &diff.removed {
        lines.push((
            entry.package.as_deref(),
            format!(
                "- {}  {}{}",
                escape(&entry.path),
                describe_entry(entry),
                needed_text(&entry.needed_by)
            ),
        ));
    }
    for entry in &diff.added {
        lines.push((
            entry.package.as_deref(),
            format!(
                "+ {}  {}{}",
                escape(&entry.path),
                describe_entry(entry),
                needed_text(&entry.needed_by)
            ),
        ));
    }
    for changed in &diff.changed {
        let fields: Vec<String> = changed
            .fields
            .iter()
            .map(|f| format!("{} {} -> {}", f.field, short(&f.a), short(&f.b)))
            .collect();
        let mut needed = changed.a.needed_by.clone();
        needed.extend(changed.b.needed_by.iter().cloned());
        needed.sort();
        needed.dedup();
        lines.push((
            changed
                .b
                .package
                .as_deref()
                .or(changed.a.package.as_deref()),
            format!(
                "~ {}  {}{}",
                escape(&changed.a.path),
                fields.join("; "),
                needed_text(&needed)
            ),
        ));
    }
    if grouped {
        lines.sort_by(|x, y| x.0.cmp(&y.0));
    }
    let mut current: Option<Option<&str>> = None;
    for (package, line) in &lines {
        if grouped && current != Some(*package) {
            writeln!(out, "[{}]", package.unwrap_or("no package"))?;
            current = Some(*package);
        }
        writeln!(out, "{line}")?;
    }
    writeln!(
        out,
        "{} added, {} removed, {} changed",
        diff.added.len(),
        diff.removed.len(),
        diff.changed.len()
    )
}

/// `packages: 1 added, 0 removed, 1 at another version` and a line per package.
fn write_package_changes(packages: &PackageChanges, out: &mut dyn Write) -> io::Result<()> {
    writeln!(
        out,
        "packages: {} added, {} removed, {} at another version",
        packages.added.len(),
        packages.removed.len(),
        packages.changed.len()
    )?;
    for p in &packages.removed {
        writeln!(out, "- package {} {} ({})", p.name, p.version, p.arch)?;
    }
    for p in &packages.added {
        writeln!(out, "+ package {} {} ({})", p.name, p.version, p.arch)?;
    }
    for p in &packages.changed {
        writeln!(out, "~ package {} ({})  {} -> {}", p.name, p.arch, p.a, p.b)?;
    }
    Ok(())
}

/// A digest shortened for the text form (the JSON has it whole).
fn short(value: &str) -> &str {
    if value.len() == 64 && value.bytes().all(|b| b.is_ascii_hexdigit()) {
        &value[..12]
    } else {
        value
    }
}

#[derive(Serialize)]
struct SideJson<'a> {
    kind: SideKind,
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    arch: Option<&'a str>,
    paths: usize,
}

#[derive(Serialize)]
struct ChangedJson<'a> {
    path: JsonName<'a>,
    fields: &'a [FieldChange],
    a: EntryJson<'a>,
    b: EntryJson<'a>,
}

#[derive(Serialize)]
struct Counts {
    added: usize,
    removed: usize,
    changed: usize,
}

#[derive(Serialize)]
struct DiffJson<'a> {
    format: &'static str,
    a: SideJson<'a>,
    b: SideJson<'a>,
    counts: Counts,
    added: Vec<EntryJson<'a>>,
    removed: Vec<EntryJson<'a>>,
    changed: Vec<ChangedJson<'a>>,
    /// Package-level changes, when both sides list their packages (else null).
    packages: Option<PackageChanges>,
    gates_hit: &'a [String],
}

fn side_json<'a>(side: &'a Side, detail: Option<&'a str>) -> SideJson<'a> {
    SideJson {
        kind: side.kind,
        name: &side.name,
        detail,
        arch: side.arch.as_deref(),
        paths: side.entries.len(),
    }
}

/// The `--json` form: one document (docs/set-algebra.md).
pub fn write_json(
    diff: &Diff<'_>,
    a: (&Side, Option<&str>),
    b: (&Side, Option<&str>),
    gates_hit: &[String],
    out: &mut dyn Write,
) -> io::Result<()> {
    let document = DiffJson {
        format: DIFF_FORMAT,
        a: side_json(a.0, a.1),
        b: side_json(b.0, b.1),
        counts: Counts {
            added: diff.added.len(),
            removed: diff.removed.len(),
            changed: diff.changed.len(),
        },
        added: diff.added.iter().map(|e| EntryJson::new(e)).collect(),
        removed: diff.removed.iter().map(|e| EntryJson::new(e)).collect(),
        changed: diff
            .changed
            .iter()
            .map(|c| ChangedJson {
                path: JsonName(&c.a.path),
                fields: &c.fields,
                a: EntryJson::new(c.a),
                b: EntryJson::new(c.b),
            })
            .collect(),
        packages: changes(a.0, b.0),
        gates_hit,
    };
    let mut out = io::BufWriter::new(out);
    serde_json::to_writer_pretty(&mut out, &document).map_err(io::Error::from)?;
    out.write_all(b"\n")?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn file(path: &str, size: u64, content: u8) -> Entry {
        Entry {
            path: path.as_bytes().to_vec(),
            kind: FileKind::File,
            mode: Some(0o644),
            uid: Some(0),
            gid: Some(0),
            size: Some(size),
            sha256: Some([content; 32]),
            ..Entry::default()
        }
    }

    fn side(entries: Vec<Entry>) -> Side {
        Side {
            kind: SideKind::Manifest,
            name: "x".to_string(),
            arch: None,
            entries,
            packages: None,
        }
        .finish()
    }

    #[test]
    fn added_removed_and_changed_fields_are_found() {
        let mut mode_changed = file("/etc/b", 3, 2);
        mode_changed.mode = Some(0o600);
        let mut link_a = Entry {
            path: b"/lib".to_vec(),
            kind: FileKind::Symlink,
            mode: Some(0o777),
            target: Some(b"usr/lib".to_vec()),
            ..Entry::default()
        };
        let a = side(vec![
            file("/etc/a", 1, 1),
            file("/etc/b", 3, 2),
            file("/etc/c", 3, 3),
            link_a.clone(),
        ]);
        link_a.target = Some(b"usr/lib64".to_vec());
        link_a.mode = Some(0o755);
        let b = side(vec![
            mode_changed,
            file("/etc/c", 4, 4),
            file("/etc/d", 1, 1),
            link_a,
        ]);
        let d = diff(&a, &b);
        let paths = |entries: &[&Entry]| -> Vec<String> {
            entries.iter().map(|e| escape(&e.path)).collect()
        };
        assert_eq!(paths(&d.added), ["/etc/d"]);
        assert_eq!(paths(&d.removed), ["/etc/a"]);
        let changed: Vec<(String, Vec<&str>)> = d
            .changed
            .iter()
            .map(|c| {
                (
                    escape(&c.a.path),
                    c.fields.iter().map(|f| f.field).collect(),
                )
            })
            .collect();
        assert_eq!(
            changed,
            [
                ("/etc/b".to_string(), vec!["mode"]),
                ("/etc/c".to_string(), vec!["size", "sha256"]),
                // A symlink's mode is not compared, its target is.
                ("/lib".to_string(), vec!["target"]),
            ]
        );
        assert_eq!(
            gates_hit(&d, &[Gate::Added, Gate::Changed]),
            ["1 added", "3 changed"]
        );
        assert!(gates_hit(&diff(&a, &a), &[Gate::Added, Gate::Removed, Gate::Changed]).is_empty());
    }

    #[test]
    fn only_fields_both_sides_know_are_compared() {
        let known = file("/usr/bin/app", 10, 1);
        let saved = Entry {
            path: b"/usr/bin/app".to_vec(),
            kind: FileKind::File,
            size: Some(10),
            ..Entry::default()
        };
        assert!(compare(&known, &saved).is_empty());
        let dir = Entry {
            kind: FileKind::Dir,
            ..saved.clone()
        };
        assert_eq!(
            compare(&known, &dir),
            [FieldChange {
                field: "kind",
                a: "file".to_string(),
                b: "dir".to_string()
            }]
        );
    }

    #[test]
    fn the_text_groups_by_package_when_there_is_package_data() -> io::Result<()> {
        let mut libz = file("/usr/lib/libz.so.1", 1, 1);
        libz.package = Some("zlib1g".to_string());
        libz.needed_by = vec!["/usr/bin/app (pid 7)".to_string()];
        let a = side(vec![]);
        let b = side(vec![libz, file("/etc/app.conf", 1, 2)]);
        let d = diff(&a, &b);
        let mut out = Vec::new();
        write_human(&d, (&a, None), (&b, None), &mut out)?;
        let text = String::from_utf8_lossy(&out);
        assert!(text.contains("[no package]\n+ /etc/app.conf"), "{text}");
        assert!(
            text.contains("[zlib1g]\n+ /usr/lib/libz.so.1  file 0644 0:0 1 bytes  needed by /usr/bin/app (pid 7)"),
            "{text}"
        );
        assert!(text.ends_with("2 added, 0 removed, 0 changed\n"), "{text}");
        let mut json = Vec::new();
        write_json(&d, (&a, None), (&b, None), &[], &mut json)?;
        let value: serde_json::Value = serde_json::from_slice(&json)?;
        assert_eq!(value["format"], DIFF_FORMAT);
        assert_eq!(value["counts"]["added"], 2);
        assert_eq!(value["added"][1]["package"], "zlib1g");
        Ok(())
    }

    #[test]
    fn two_manifests_with_packages_diff_by_package_and_version()
    -> Result<(), Box<dyn std::error::Error>> {
        use crate::fixtures::ScratchDir;
        use crate::ship::compare::manifest::{
            HashCache, ManifestOptions, read_manifest, write_manifest,
        };
        let scratch = ScratchDir::new("diff-packages");
        let manifest = |dir: &str, zlib: &str| -> Result<Side, Box<dyn std::error::Error>> {
            let root = crate::ship::compare::packages::tests::dpkg_root(&scratch, dir, zlib);
            std::fs::write(root.join("srv/app/run.sh"), format!("#!/bin/sh\n# {dir}\n"))?;
            let out = scratch.root().join(format!("{dir}.json"));
            let options = ManifestOptions {
                root,
                cross_mounts: false,
                exclude: Vec::new(),
                threads: 1,
                progress: false,
            };
            write_manifest(
                &options,
                &HashCache::default(),
                &mut std::fs::File::create(&out)?,
            )?;
            Ok(read_manifest(&out, dir)?.0)
        };
        let a = manifest("v1", "1:1.2.13")?;
        let b = manifest("v2", "1:1.3")?;
        let d = diff(&a, &b);
        let mut out = Vec::new();
        write_human(&d, (&a, None), (&b, None), &mut out)?;
        let text = String::from_utf8_lossy(&out);
        assert!(
            text.contains("packages: 0 added, 0 removed, 1 at another version\n~ package zlib1g (amd64)  1:1.2.13 -> 1:1.3\n"),
            "{text}"
        );
        // Changed paths under their package's heading, the service's own file under none.
        assert!(
            text.contains("[no package]\n~ /srv/app/run.sh  sha256"),
            "{text}"
        );
        assert!(
            text.contains("[zlib1g]\n~ /usr/lib/libz.so.1  size"),
            "{text}"
        );
        let mut json = Vec::new();
        write_json(&d, (&a, None), (&b, None), &[], &mut json)?;
        let value: serde_json::Value = serde_json::from_slice(&json)?;
        assert_eq!(value["packages"]["changed"][0]["name"], "zlib1g");
        assert_eq!(value["packages"]["changed"][0]["b"], "1:1.3");
        let libz = value["changed"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["path"] == "/usr/lib/libz.so.1"))
            .ok_or("libz.so.1 not changed")?;
        assert_eq!(libz["b"]["package"], "zlib1g");
        // A side without package data: no package-level report.
        let plain = side(a.entries.clone());
        let mut json = Vec::new();
        write_json(
            &diff(&plain, &b),
            (&plain, None),
            (&b, None),
            &[],
            &mut json,
        )?;
        let value: serde_json::Value = serde_json::from_slice(&json)?;
        assert!(value["packages"].is_null());
        Ok(())
    }

    #[test]
    fn a_hundred_thousand_paths_a_side_diff_fast() {
        let a = side(
            (0..100_000)
                .map(|i| file(&format!("/p/{i:06}"), 1, 1))
                .collect(),
        );
        let b = side(
            (0..100_000)
                .map(|i| {
                    file(
                        &format!("/p/{:06}", i + 10),
                        1,
                        if i % 1000 == 0 { 2 } else { 1 },
                    )
                })
                .collect(),
        );
        let started = std::time::Instant::now();
        let d = diff(&a, &b);
        assert_eq!((d.added.len(), d.removed.len()), (10, 10));
        assert_eq!(d.changed.len(), 100);
        assert!(started.elapsed().as_secs_f64() < 2.0);
    }
}
