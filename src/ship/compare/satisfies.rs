//! `depsetfs satisfies` and `export --against`: a set checked against a target's manifest.
//! A path of the set is satisfied when the target has it with the same kind, mode, owner,
//! size, content and symlink target (every field the set's side knows from its source tree).
//! [`unsatisfied`] lists the rest; [`ship_only`] cuts a set down to them plus the
//! directories above them, which is what `export --against` writes. A manifest of another
//! architecture than the set's programs is refused ([`check_architecture`]). When the target
//! lists its packages and the set's side knows the package of an unsatisfied path,
//! [`package_note`] says whether that package is missing there or at another version: the
//! operator installs it rather than copy its files.

use std::collections::BTreeSet;
use std::path::Path;

use super::diff::{FieldChange, compare};
use super::packages::find;
use super::{CompareError, Entry, Side};
use crate::analysis::closure::DeploymentSet;
use crate::analysis::paths::parent_of;

/// A path of the set the target lacks or has different.
#[derive(Clone, Debug)]
pub struct Unsatisfied<'a> {
    pub entry: &'a Entry,
    /// The target's entry, when it has the path.
    pub target: Option<&'a Entry>,
    /// What differs (empty when missing).
    pub fields: Vec<FieldChange>,
}

impl Unsatisfied<'_> {
    pub fn missing(&self) -> bool {
        self.target.is_none()
    }
}

/// The set's paths that `target` does not hold identically, in path order.
pub fn unsatisfied<'a>(set: &'a Side, target: &'a Side) -> Vec<Unsatisfied<'a>> {
    set.entries
        .iter()
        .filter_map(|entry| match target.get(&entry.path) {
            None => Some(Unsatisfied {
                entry,
                target: None,
                fields: Vec::new(),
            }),
            Some(there) => {
                let fields = compare(entry, there);
                (!fields.is_empty()).then_some(Unsatisfied {
                    entry,
                    target: Some(there),
                    fields,
                })
            }
        })
        .collect()
}

/// What the target's packages say about an unsatisfied path of a package: `zlib1g 1:1.2.13
/// is not installed on the target`, `... is installed at another version on the target
/// (1:1.3)`, or `... is installed on the target, but this file differs there`. None when
/// the path has no package or the target lists none.
pub fn package_note(set: &Side, target: &Side, item: &Unsatisfied<'_>) -> Option<String> {
    let apt = item.entry.package.as_deref()?;
    let theirs = target.packages.as_deref()?;
    let version = set
        .packages
        .as_deref()
        .and_then(|ours| find(ours, apt))
        .map(|p| format!(" {}", p.version))
        .unwrap_or_default();
    Some(match find(theirs, apt) {
        None => format!("{apt}{version} is not installed on the target"),
        Some(there) if !version.is_empty() && version[1..] != there.version => format!(
            "{apt}{version} is installed at another version on the target ({})",
            there.version
        ),
        Some(_) => format!(
            "{apt}{version} is installed on the target, but {} there",
            if item.missing() {
                "this file is missing"
            } else {
                "this file differs"
            }
        ),
    })
}

/// Refuses a target of another architecture than the set (when both are known).
pub fn check_architecture(
    set: &Side,
    target: &Side,
    target_path: &Path,
) -> Result<(), CompareError> {
    match (&set.arch, &target.arch) {
        (Some(ours), Some(theirs)) if ours != theirs => Err(CompareError::Architecture {
            path: target_path.to_path_buf(),
            target: theirs.clone(),
            set: ours.clone(),
        }),
        _ => Ok(()),
    }
}

/// `set` cut down to the paths of `wanted` and the directories above them (which the set
/// holds: it is closed over parents). Devices the target must provide stay listed.
pub fn ship_only<'a>(
    set: DeploymentSet,
    wanted: impl IntoIterator<Item = &'a [u8]>,
) -> DeploymentSet {
    let mut keep: BTreeSet<Vec<u8>> = BTreeSet::new();
    for mut path in wanted {
        keep.insert(path.to_vec());
        while let Some(parent) = parent_of(path) {
            if !keep.insert(parent.to_vec()) {
                break;
            }
            path = parent;
        }
    }
    DeploymentSet {
        entries: set
            .entries
            .into_iter()
            .filter(|entry| keep.contains(&entry.path))
            .collect(),
        ..set
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::closure::{Reason, SetEntry};
    use crate::record::FileKind;
    use crate::ship::compare::SideKind;

    fn entry(path: &str, kind: FileKind, content: u8) -> Entry {
        Entry {
            path: path.as_bytes().to_vec(),
            kind,
            mode: Some(0o755),
            uid: Some(0),
            gid: Some(0),
            size: (kind == FileKind::File).then_some(1),
            sha256: (kind == FileKind::File).then_some([content; 32]),
            ..Entry::default()
        }
    }

    fn side(kind: SideKind, arch: Option<&str>, entries: Vec<Entry>) -> Side {
        Side {
            kind,
            name: "x".to_string(),
            arch: arch.map(str::to_string),
            entries,
            packages: None,
        }
        .finish()
    }

    fn set_entry(path: &str) -> SetEntry {
        SetEntry {
            path: path.as_bytes().to_vec(),
            kind: FileKind::File,
            size: 1,
            reason: Reason::Used,
            users: Vec::new(),
        }
    }

    #[test]
    fn missing_and_different_paths_are_unsatisfied_and_shipped_with_their_parents() {
        let set = side(
            SideKind::Log,
            Some("x86_64"),
            vec![
                entry("/", FileKind::Dir, 0),
                entry("/usr", FileKind::Dir, 0),
                entry("/usr/lib", FileKind::Dir, 0),
                entry("/usr/lib/libz.so.1", FileKind::File, 1),
                entry("/usr/bin", FileKind::Dir, 0),
                entry("/usr/bin/app", FileKind::File, 2),
                entry("/etc", FileKind::Dir, 0),
                entry("/etc/app.conf", FileKind::File, 3),
            ],
        );
        let target = side(
            SideKind::Manifest,
            Some("x86_64"),
            vec![
                entry("/", FileKind::Dir, 0),
                entry("/usr", FileKind::Dir, 0),
                entry("/usr/lib", FileKind::Dir, 0),
                entry("/usr/bin", FileKind::Dir, 0),
                entry("/usr/bin/app", FileKind::File, 9),
                entry("/etc", FileKind::Dir, 0),
                entry("/etc/app.conf", FileKind::File, 3),
            ],
        );
        let missing = unsatisfied(&set, &target);
        let described: Vec<(String, bool)> = missing
            .iter()
            .map(|u| {
                (
                    String::from_utf8_lossy(&u.entry.path).into_owned(),
                    u.missing(),
                )
            })
            .collect();
        assert_eq!(
            described,
            [
                ("/usr/bin/app".to_string(), false),
                ("/usr/lib/libz.so.1".to_string(), true)
            ]
        );
        assert!(unsatisfied(&set, &set).is_empty());
        let deployment = DeploymentSet {
            entries: [
                "/",
                "/etc",
                "/etc/app.conf",
                "/usr",
                "/usr/bin",
                "/usr/bin/app",
                "/usr/lib",
                "/usr/lib/libz.so.1",
            ]
            .into_iter()
            .map(set_entry)
            .collect(),
            ..DeploymentSet::default()
        };
        let shipped = ship_only(deployment, missing.iter().map(|u| u.entry.path.as_slice()));
        let paths: Vec<String> = shipped
            .entries
            .iter()
            .map(|e| String::from_utf8_lossy(&e.path).into_owned())
            .collect();
        assert_eq!(
            paths,
            [
                "/",
                "/usr",
                "/usr/bin",
                "/usr/bin/app",
                "/usr/lib",
                "/usr/lib/libz.so.1"
            ]
        );
    }

    #[test]
    fn an_unsatisfied_path_of_a_package_names_the_package() {
        use crate::ship::compare::packages::InstalledPackage;
        let package = |name: &str, version: &str| InstalledPackage {
            name: name.to_string(),
            version: version.to_string(),
            arch: "amd64".to_string(),
        };
        let owned = |path: &str, name: &str, content: u8| Entry {
            package: Some(name.to_string()),
            ..entry(path, FileKind::File, content)
        };
        let mut set = side(
            SideKind::Log,
            None,
            vec![
                owned("/usr/lib/libz.so.1", "zlib1g", 1),
                owned("/usr/lib/libssl.so.3", "libssl3", 2),
                owned("/usr/bin/ls", "coreutils", 3),
                entry("/srv/app", FileKind::File, 4),
            ],
        );
        set.packages = Some(vec![
            package("zlib1g", "1:1.2.13"),
            package("libssl3", "3.0.11"),
            package("coreutils", "9.1-1"),
        ]);
        let mut target = side(
            SideKind::Manifest,
            None,
            vec![
                owned("/usr/lib/libssl.so.3", "libssl3", 9),
                owned("/usr/bin/ls", "coreutils", 8),
            ],
        );
        let notes = |target: &Side| -> Vec<(String, Option<String>)> {
            unsatisfied(&set, target)
                .iter()
                .map(|u| {
                    (
                        String::from_utf8_lossy(&u.entry.path).into_owned(),
                        package_note(&set, target, u),
                    )
                })
                .collect()
        };
        // A target without package data: nothing to say.
        assert!(notes(&target).iter().all(|(_, note)| note.is_none()));
        target.packages = Some(vec![
            package("libssl3", "3.0.9"),
            package("coreutils", "9.1-1"),
        ]);
        let note = |s: &str| Some(s.to_string());
        assert_eq!(
            notes(&target),
            [
                ("/srv/app".to_string(), None),
                (
                    "/usr/bin/ls".to_string(),
                    note("coreutils 9.1-1 is installed on the target, but this file differs there")
                ),
                (
                    "/usr/lib/libssl.so.3".to_string(),
                    note("libssl3 3.0.11 is installed at another version on the target (3.0.9)")
                ),
                (
                    "/usr/lib/libz.so.1".to_string(),
                    note("zlib1g 1:1.2.13 is not installed on the target")
                ),
            ]
        );
    }

    #[test]
    fn a_target_of_another_architecture_is_refused() {
        let set = side(SideKind::Log, Some("x86_64"), vec![]);
        let arm = side(SideKind::Manifest, Some("aarch64"), vec![]);
        let unknown = side(SideKind::Manifest, None, vec![]);
        let error = check_architecture(&set, &arm, Path::new("t.json"))
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            error.as_deref(),
            Some(
                "t.json: a manifest made on aarch64, but the set's programs are built for x86_64: compare with a manifest of the same architecture"
            )
        );
        assert!(check_architecture(&set, &unknown, Path::new("t.json")).is_ok());
    }
}
