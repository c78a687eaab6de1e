//! Which package each path of a deployment set comes from, and whether it differs from it:
//! `depsetfs packages`, and the policy of `export --format dockerfile|packages`. The dpkg
//! database of the source tree is read once ([`dpkg`]); every path of the set is then
//! classified as **pristine** (a package's file whose MD5 matches the package's), **modified**
//! (a package's file that differs: a changed conffile, say), **unowned** (no package has it:
//! the service's own files), a **directory** (never owned in this sense: listed with the
//! packages that create it), an **alternative** (an `/etc/alternatives` link, or a link to
//! one: provided by the package of its target) or **package state** (the dpkg database
//! itself, never copied over an image's). The [`Policy`] then says which paths ship as
//! "install the package" and which are copied; [`language`] lists the Python, npm and Maven
//! packages the set's files belong to.

pub mod dpkg;
pub mod language;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ffi::OsStr;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use md5::{Digest, Md5};
use serde::Serialize;

use crate::analysis::closure::DeploymentSet;
use crate::analysis::names::NameBuf;
use crate::analysis::paths::is_within;
use crate::record::FileKind;

pub use dpkg::{DpkgDb, Package};
pub use language::LanguagePackage;

#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    #[error("{}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("{}:{line}: corrupt: {message}", path.display())]
    Corrupt {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

/// How a package's pristine files ship.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    /// Installed from the distribution at the traced version; only modified and unowned
    /// files are copied.
    #[default]
    Install,
    /// Copied like the service's own files; the package is not installed.
    Copy,
}

/// The policy for every package: a default and the rules file's exceptions.
#[derive(Clone, Debug, Default)]
pub struct PolicyChoice {
    pub default: Policy,
    /// Packages always copied (`[packages] copy` of the rules file).
    pub copy: BTreeSet<String>,
    /// Packages always installed (`[packages] install`).
    pub install: BTreeSet<String>,
}

impl PolicyChoice {
    pub fn of(&self, package: &str) -> Policy {
        if self.copy.contains(package) {
            Policy::Copy
        } else if self.install.contains(package) {
            Policy::Install
        } else {
            self.default
        }
    }
}

/// What a path of the set is, with respect to the packages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FileClass {
    Modified,
    Unowned,
    Alternative,
    Pristine,
    Directory,
    PackageState,
}

impl FileClass {
    pub fn name(self) -> &'static str {
        match self {
            FileClass::Modified => "modified",
            FileClass::Unowned => "unowned",
            FileClass::Alternative => "alternative",
            FileClass::Pristine => "pristine",
            FileClass::Directory => "directory",
            FileClass::PackageState => "package-state",
        }
    }
}

/// Whether a package file's contents were compared with the package's checksum.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Checksum {
    Matches,
    Differs,
    /// The package lists no checksum for it (a symlink, or a package without md5sums).
    None,
}

/// One path of the set, classified.
#[derive(Clone, Debug, Serialize)]
pub struct FileReport {
    pub path: NameBuf,
    pub class: FileClass,
    /// Owners as apt names them (`name:arch` for a foreign architecture), sorted; for a directory the packages that create it; for an alternative the packages
    /// of its target.
    pub packages: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checksum: Option<Checksum>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub conffile: bool,
    /// `diverted by PKG from /a to /b` (or `by local`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diversion: Option<String>,
    /// For an alternative: the path the alternative points to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alternative_target: Option<NameBuf>,
    /// For a directory (or a merged-/usr link such as `/lib`): how many installed packages list it (its
    /// `packages` are only those of them the set uses).
    #[serde(skip_serializing_if = "is_zero")]
    pub shared_by: usize,
    /// Copied into an image (the Dockerfile's context) under the policy, rather than
    /// installed with a package.
    pub copied: bool,
}

/// One package the set touches.
#[derive(Clone, Debug, Serialize)]
pub struct PackageUse {
    pub name: String,
    pub version: String,
    pub architecture: String,
    /// How apt names it (`name:arch` for a foreign architecture).
    pub apt_name: String,
    /// Non-directory paths of the set the package owns or provides (alternatives): at least
    /// one, or the package is not listed.
    pub files: usize,
    /// Of those, how many differ from the package.
    pub modified: usize,
    /// Directories of the set the package creates.
    pub directories: usize,
    pub policy: Policy,
    /// Installed (pinned) by the Dockerfile and listed by `export --format packages`:
    /// policy `install` and at least one file of the set.
    pub installed: bool,
}

/// Counts of the classes.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ClassCounts {
    pub pristine: usize,
    pub modified: usize,
    pub unowned: usize,
    pub alternative: usize,
    pub directory: usize,
    pub package_state: usize,
    /// Paths copied under the policy (directories included).
    pub copied: usize,
}

/// The answer of `depsetfs packages`.
#[derive(Clone, Debug, Serialize)]
pub struct PackagesReport {
    pub source: String,
    /// Whether the source tree has a dpkg database (else every path is unowned).
    pub dpkg_database: bool,
    pub native_architecture: String,
    /// Packages installed in the source tree.
    pub installed_packages: usize,
    pub default_policy: Policy,
    pub counts: ClassCounts,
    pub packages: Vec<PackageUse>,
    pub language_packages: Vec<LanguagePackage>,
    pub files: Vec<FileReport>,
    /// Said once on stderr (no dpkg database).
    #[serde(skip)]
    pub warning: Option<String>,
}

impl PackagesReport {
    /// The packages to install, in apt's `name=version` form, sorted.
    pub fn install_lines(&self) -> Vec<String> {
        let mut lines: Vec<String> = self
            .packages
            .iter()
            .filter(|p| p.installed)
            .map(|p| format!("{}={}", p.apt_name, p.version))
            .collect();
        lines.sort();
        lines
    }

    /// The paths the policy copies, sorted.
    pub fn copied_paths(&self) -> BTreeSet<Vec<u8>> {
        self.files
            .iter()
            .filter(|f| f.copied)
            .map(|f| f.path.0.clone())
            .collect()
    }

    /// The human rendering: the packages, the language packages, then every path by class.
    pub fn render(&self, out: &mut dyn io::Write) -> io::Result<()> {
        if self.dpkg_database {
            writeln!(
                out,
                "source {}: dpkg database, {} packages installed (native architecture {}); default policy {}",
                self.source,
                self.installed_packages,
                self.native_architecture,
                policy_name(self.default_policy)
            )?;
        } else {
            writeln!(
                out,
                "source {}: no dpkg database: every path is unowned",
                self.source
            )?;
        }
        let c = &self.counts;
        writeln!(
            out,
            "{} paths: {} pristine, {} modified, {} unowned, {} alternatives, {} directories, {} package state; {} copied",
            self.files.len(),
            c.pristine,
            c.modified,
            c.unowned,
            c.alternative,
            c.directory,
            c.package_state,
            c.copied
        )?;
        writeln!(out)?;
        writeln!(out, "packages ({}):", self.packages.len())?;
        let width = self
            .packages
            .iter()
            .map(|p| p.apt_name.len())
            .max()
            .unwrap_or(0);
        let vwidth = self
            .packages
            .iter()
            .map(|p| p.version.len())
            .max()
            .unwrap_or(0);
        for p in &self.packages {
            writeln!(
                out,
                "  {:width$}  {:vwidth$}  {:7}  {:4} files  {:3} modified  {:3} dirs  {}",
                p.apt_name,
                p.version,
                p.architecture,
                p.files,
                p.modified,
                p.directories,
                if p.installed { "install" } else { "copy" },
            )?;
        }
        if !self.language_packages.is_empty() {
            writeln!(out)?;
            writeln!(out, "language packages ({}):", self.language_packages.len())?;
            for l in &self.language_packages {
                writeln!(
                    out,
                    "  {:6}  {} {}  at {}  {} files of the set",
                    l.ecosystem,
                    l.name,
                    l.version,
                    l.location,
                    l.files.len()
                )?;
            }
        }
        writeln!(out)?;
        writeln!(out, "paths:")?;
        let mut files: Vec<&FileReport> = self.files.iter().collect();
        files.sort_by(|a, b| (a.class, &a.path).cmp(&(b.class, &b.path)));
        for f in files {
            let mut notes = Vec::new();
            if !f.packages.is_empty() {
                notes.push(f.packages.join(", "));
            }
            if f.shared_by > f.packages.len() {
                notes.push(format!("listed by {} packages", f.shared_by));
            }
            if f.conffile {
                notes.push("conffile".to_string());
            }
            if let Some(d) = &f.diversion {
                notes.push(d.clone());
            }
            if let Some(t) = &f.alternative_target {
                notes.push(format!("-> {t}"));
            }
            if f.copied {
                notes.push("copied".to_string());
            }
            writeln!(
                out,
                "  {:13} {}{}",
                f.class.name(),
                f.path,
                if notes.is_empty() {
                    String::new()
                } else {
                    format!("  ({})", notes.join("; "))
                }
            )?;
        }
        Ok(())
    }
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

pub fn policy_name(policy: Policy) -> &'static str {
    match policy {
        Policy::Install => "install",
        Policy::Copy => "copy",
    }
}

/// Where the alternatives system keeps its links.
const ALTERNATIVES: &[u8] = b"/etc/alternatives";
/// The package manager's own state: never copied over an image's.
const PACKAGE_STATE: [&[u8]; 2] = [b"/var/lib/dpkg", b"/var/lib/apt"];

/// Classifies every path of `set`, read from the tree at `root`.
pub fn classify(
    root: &Path,
    set: &DeploymentSet,
    policy: &PolicyChoice,
) -> Result<PackagesReport, PackageError> {
    // The alternatives the set reaches, and their targets: the targets' owners provide them.
    let mut alternatives: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    for entry in set.entries.iter().filter(|e| e.kind == FileKind::Symlink) {
        let link = if is_within(&entry.path, ALTERNATIVES) {
            Some(entry.path.clone())
        } else {
            dpkg::link_target(root, &entry.path)
                .filter(|target| is_within(target, ALTERNATIVES) && target != ALTERNATIVES)
        };
        if let Some(target) = link.and_then(|link| dpkg::link_target(root, &link)) {
            alternatives.insert(entry.path.clone(), target);
        }
    }
    let mut wanted: HashSet<Vec<u8>> = set.entries.iter().map(|e| e.path.clone()).collect();
    wanted.extend(alternatives.values().cloned());
    let directories: HashSet<Vec<u8>> = set
        .entries
        .iter()
        .filter(|e| e.kind == FileKind::Dir)
        .map(|e| e.path.clone())
        .collect();
    let db = DpkgDb::load(root, &wanted, &directories)?;
    let warning = db.is_none().then(|| {
        format!(
            "{}: no dpkg database ({} is missing): every path is classified unowned",
            root.display(),
            root.join(dpkg::STATUS).display()
        )
    });
    let db = db.unwrap_or_default();
    let names = |owners: &[usize]| -> Vec<String> {
        let mut names: Vec<String> = owners
            .iter()
            .map(|&o| db.packages[o].apt_name(&db.native_architecture))
            .collect();
        names.sort();
        names
    };
    let installs = |owners: &[usize]| {
        owners
            .iter()
            .any(|&o| policy.of(&db.packages[o].name) == Policy::Install)
    };
    // The checksums to compare, computed first on a few threads: reading the set's package
    // files is most of the time (115 MB for the seed's PHP + MariaDB set).
    let to_hash: Vec<&[u8]> = set
        .entries
        .iter()
        .filter(|e| e.kind == FileKind::File)
        .filter(|e| {
            db.facts(&e.path)
                .is_some_and(|f| !f.owners.is_empty() && !f.md5.is_empty())
        })
        .map(|e| e.path.as_slice())
        .collect();
    let mut actual_md5 = md5_all(root, &to_hash);
    // Per package: (files, modified, directories).
    let mut uses: BTreeMap<usize, (usize, usize, usize)> = BTreeMap::new();
    let mut files = Vec::with_capacity(set.entries.len());
    let mut counts = ClassCounts::default();
    // Directories (and merged-/usr links) many packages list: (index in `files`, owners).
    let mut shared: Vec<(usize, Vec<usize>)> = Vec::new();
    for entry in &set.entries {
        let facts = db.facts(&entry.path);
        let owners: &[usize] = facts.map_or(&[], |f| &f.owners);
        let mut report = FileReport {
            path: NameBuf(entry.path.clone()),
            class: FileClass::Unowned,
            packages: names(owners),
            checksum: None,
            conffile: facts.is_some_and(|f| f.conffile && !f.owners.is_empty()),
            diversion: facts
                .and_then(|f| f.diversion.as_ref())
                .map(describe_diversion),
            alternative_target: None,
            shared_by: 0,
            copied: true,
        };
        if PACKAGE_STATE
            .iter()
            .any(|state| is_within(&entry.path, state))
        {
            report.class = FileClass::PackageState;
            report.copied = false;
        } else if entry.kind == FileKind::Dir
            || db.aliases.iter().any(|(link, _)| *link == entry.path)
        {
            // A merged-/usr link (`/lib` -> `usr/lib`) is the directory the packages list.
            report.class = FileClass::Directory;
            for &o in owners {
                uses.entry(o).or_default().2 += 1;
            }
            shared.push((files.len(), owners.to_vec()));
        } else if !owners.is_empty() {
            let checksum = if entry.kind == FileKind::File {
                let digests = facts.map_or(&[][..], |f| &f.md5[..]);
                if digests.is_empty() {
                    Checksum::None
                } else {
                    let actual = match actual_md5.remove(&entry.path) {
                        Some(result) => result?,
                        None => md5_of(root, &entry.path)?,
                    };
                    if digests.contains(&actual) {
                        Checksum::Matches
                    } else {
                        Checksum::Differs
                    }
                }
            } else {
                Checksum::None
            };
            let modified = checksum == Checksum::Differs;
            report.class = if modified {
                FileClass::Modified
            } else {
                FileClass::Pristine
            };
            report.checksum = Some(checksum);
            report.copied = modified || !installs(owners);
            for &o in owners {
                let counts = uses.entry(o).or_default();
                counts.0 += 1;
                counts.1 += usize::from(modified);
            }
        } else if let Some(target) = alternatives.get(&entry.path) {
            let providers: &[usize] = db.facts(target).map_or(&[], |f| &f.owners);
            report.class = FileClass::Alternative;
            report.packages = names(providers);
            report.alternative_target = Some(NameBuf(target.clone()));
            report.copied = !installs(providers);
            for &o in providers {
                uses.entry(o).or_default().0 += 1;
            }
        }
        files.push(report);
    }
    // Shared directories: listed with the packages of the set that create them (a few out of
    // the hundreds that list `/usr`), copied only when no installed package creates them.
    let used = |o: &usize| uses.get(o).is_some_and(|u| u.0 > 0);
    let installed = |o: &usize| used(o) && policy.of(&db.packages[*o].name) == Policy::Install;
    for (at, owners) in shared {
        let report = &mut files[at];
        report.shared_by = owners.len();
        let in_use: Vec<usize> = owners.iter().copied().filter(used).collect();
        report.packages = names(&in_use);
        if report.class == FileClass::Directory {
            report.copied = !owners.iter().any(installed);
        }
    }
    for report in &files {
        match report.class {
            FileClass::Pristine => counts.pristine += 1,
            FileClass::Modified => counts.modified += 1,
            FileClass::Unowned => counts.unowned += 1,
            FileClass::Alternative => counts.alternative += 1,
            FileClass::Directory => counts.directory += 1,
            FileClass::PackageState => counts.package_state += 1,
        }
        counts.copied += usize::from(report.copied);
    }
    let mut packages: Vec<PackageUse> = uses
        .into_iter()
        .filter(|(_, (files, _, _))| *files > 0)
        .map(|(ix, (files, modified, directories))| {
            let p = &db.packages[ix];
            let policy = policy.of(&p.name);
            PackageUse {
                name: p.name.clone(),
                version: p.version.clone(),
                architecture: p.architecture.clone(),
                apt_name: p.apt_name(&db.native_architecture),
                files,
                modified,
                directories,
                policy,
                installed: policy == Policy::Install && files > 0,
            }
        })
        .collect();
    packages.sort_by(|a, b| (&a.name, &a.architecture).cmp(&(&b.name, &b.architecture)));
    let language_packages = language::find(root, set);
    Ok(PackagesReport {
        source: root.display().to_string(),
        dpkg_database: warning.is_none(),
        native_architecture: db.native_architecture.clone(),
        installed_packages: db.packages.len(),
        default_policy: policy.default,
        counts,
        packages,
        language_packages,
        files,
        warning,
    })
}

fn describe_diversion(d: &dpkg::Diversion) -> String {
    format!(
        "diverted by {} from {} to {}",
        d.by.as_deref().unwrap_or("local"),
        String::from_utf8_lossy(&d.from),
        String::from_utf8_lossy(&d.to)
    )
}

/// The MD5 digests of `paths`, on up to four threads.
fn md5_all(root: &Path, paths: &[&[u8]]) -> HashMap<Vec<u8>, Result<[u8; 16], PackageError>> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 4)
        .min(paths.len().max(1));
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let at = next.fetch_add(1, Ordering::Relaxed);
                        let Some(path) = paths.get(at) else { break };
                        done.push((path.to_vec(), md5_of(root, path)));
                    }
                    done
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|worker| worker.join().unwrap_or_default())
            .collect()
    })
}

/// The MD5 digest of a file of the source tree (never through a final symlink).
fn md5_of(root: &Path, path: &[u8]) -> Result<[u8; 16], PackageError> {
    let host = root.join(OsStr::from_bytes(path.strip_prefix(b"/").unwrap_or(path)));
    let read = |host: &Path| -> io::Result<[u8; 16]> {
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(host)?;
        let mut hasher = Md5::new();
        let mut buffer = vec![0u8; 1 << 16];
        loop {
            let n = file.read(&mut buffer)?;
            if n == 0 {
                break;
            }
            hasher.update(&buffer[..n]);
        }
        Ok(hasher.finalize().into())
    };
    read(&host).map_err(|source| PackageError::Read { path: host, source })
}

#[cfg(test)]
mod tests;
