//! The dpkg database of a source tree, read directly and once: `var/lib/dpkg/status` (the
//! installed packages, their versions, architectures and conffiles with their checksums),
//! `info/*.list` (the paths each package installed, under their original names), `info/*.md5sums`
//! and `var/lib/dpkg/diversions`. Only the paths the caller asks about are kept (a whole
//! system's lists hold a few hundred thousand paths; a set, a few thousand), so loading is one
//! pass over those files with a hash lookup per line, and nothing asks `dpkg -S` per file.
//! A diverted path is recorded where dpkg put it: the diverted-to name is owned by the package
//! whose file was diverted, the original name by the package that diverted it (when its own
//! list has it), or by nobody (a `--local` diversion).

use std::collections::{HashMap, HashSet};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::PackageError;

/// Index of a package in [`DpkgDb::packages`].
pub type PackageIx = usize;

/// One installed package of the status file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Package {
    pub name: String,
    pub version: String,
    pub architecture: String,
    /// `Multi-Arch: same`: its info files are named `NAME:ARCH.*`.
    pub multi_arch_same: bool,
}

impl Package {
    /// `name:arch` for a package of another architecture than `native` (and not `all`), the
    /// name alone otherwise: how apt names it.
    pub fn apt_name(&self, native: &str) -> String {
        if self.architecture == "all" || self.architecture == native || native.is_empty() {
            self.name.clone()
        } else {
            format!("{}:{}", self.name, self.architecture)
        }
    }
}

/// `dpkg-divert`: `from` is installed as `to`; `by` is the diverting package (None: local).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diversion {
    pub from: Vec<u8>,
    pub to: Vec<u8>,
    pub by: Option<String>,
}

/// What the database says about one path.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PathFacts {
    /// Packages whose list has the path (after diversions), in database order.
    pub owners: Vec<PackageIx>,
    /// Expected MD5 digests (from md5sums or conffiles), one per owner that has one.
    pub md5: Vec<[u8; 16]>,
    /// A conffile of one of its owners.
    pub conffile: bool,
    /// The diversion that put a package's file here, or that moved the packaged file away.
    pub diversion: Option<Diversion>,
}

/// The database, restricted to the paths asked about.
#[derive(Debug, Default)]
pub struct DpkgDb {
    pub packages: Vec<Package>,
    /// The architecture of dpkg itself: apt's native one.
    pub native_architecture: String,
    pub diversions: Vec<Diversion>,
    /// Top-level symlinks to directories (merged /usr: `/bin` -> `/usr/bin`): a package lists
    /// `/bin/ls`, the set has `/usr/bin/ls`.
    pub aliases: Vec<(Vec<u8>, Vec<u8>)>,
    facts: HashMap<Vec<u8>, PathFacts>,
}

pub const STATUS: &str = "var/lib/dpkg/status";
pub const INFO: &str = "var/lib/dpkg/info";
pub const DIVERSIONS: &str = "var/lib/dpkg/diversions";

/// The states in which a package's files are on disk.
const PRESENT_STATES: [&str; 5] = [
    "installed",
    "triggers-pending",
    "triggers-awaited",
    "half-configured",
    "unpacked",
];

impl DpkgDb {
    /// Reads the database under `root`, keeping the facts of the paths in `wanted` (mirror
    /// paths, `/etc/passwd`), of which `directories` are directories (a package whose list
    /// has only those needs no checksums: its md5sums file is not read). None when the root
    /// has no status file.
    pub fn load(
        root: &Path,
        wanted: &HashSet<Vec<u8>>,
        directories: &HashSet<Vec<u8>>,
    ) -> Result<Option<DpkgDb>, PackageError> {
        let status_path = root.join(STATUS);
        let status = match std::fs::read(&status_path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(PackageError::Read {
                    path: status_path,
                    source,
                });
            }
        };
        let (packages, conffiles) = parse_status(&status_path, &status)?;
        let native_architecture = packages
            .iter()
            .find(|p| p.name == "dpkg")
            .map(|p| p.architecture.clone())
            .unwrap_or_default();
        let aliases = top_level_aliases(root);
        let mut diversions = read_diversions(&root.join(DIVERSIONS))?;
        for d in &mut diversions {
            d.from = translate(&aliases, &d.from).into_owned();
            d.to = translate(&aliases, &d.to).into_owned();
        }
        let mut db = DpkgDb {
            packages,
            native_architecture,
            diversions,
            aliases,
            facts: HashMap::new(),
        };
        db.read_info(root, wanted, directories, &conffiles)?;
        Ok(Some(db))
    }

    /// The facts of `path` (empty when no package has it).
    pub fn facts(&self, path: &[u8]) -> Option<&PathFacts> {
        self.facts.get(path)
    }

    /// Where a package's path `listed` is on disk, and the diversion that moved it.
    fn installed_name(&self, listed: &[u8], package: &str) -> (Vec<u8>, Option<&Diversion>) {
        match self.diversions.iter().find(|d| d.from == listed) {
            Some(d) if d.by.as_deref() != Some(package) => (d.to.clone(), Some(d)),
            _ => (listed.to_vec(), None),
        }
    }

    fn read_info(
        &mut self,
        root: &Path,
        wanted: &HashSet<Vec<u8>>,
        directories: &HashSet<Vec<u8>>,
        conffiles: &Conffiles,
    ) -> Result<(), PackageError> {
        let info = root.join(INFO);
        // The name of each package's info files: NAME, or NAME:ARCH for Multi-Arch: same.
        let mut by_stem: HashMap<String, PackageIx> = HashMap::new();
        for (ix, p) in self.packages.iter().enumerate() {
            by_stem.insert(format!("{}:{}", p.name, p.architecture), ix);
            if !p.multi_arch_same {
                by_stem.insert(p.name.clone(), ix);
            }
        }
        // The original names a diversion moved: their packaged file may be wanted under its
        // new name.
        let diverted: HashMap<Vec<u8>, Vec<u8>> = self
            .diversions
            .iter()
            .map(|d| (d.from.clone(), d.to.clone()))
            .collect();
        let is_wanted = |listed: &[u8]| {
            wanted.contains(listed) || diverted.get(listed).is_some_and(|to| wanted.contains(to))
        };
        let entries = match std::fs::read_dir(&info) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(source) => return Err(PackageError::Read { path: info, source }),
        };
        let mut lists = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| PackageError::Read {
                path: info.clone(),
                source,
            })?;
            let name = entry.file_name();
            let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".list")) else {
                continue;
            };
            if let Some(&ix) = by_stem.get(stem) {
                lists.push((ix, stem.to_string()));
            }
        }
        lists.sort();
        for (ix, stem) in lists {
            let name = self.packages[ix].name.clone();
            let list_path = info.join(format!("{stem}.list"));
            let text = read_file(&list_path)?;
            let mut owns_a_file = false;
            for listed in text.split(|&b| b == b'\n').filter(|l| l.starts_with(b"/")) {
                // The root is listed as "/.".
                let listed = if listed == b"/." { b"/" } else { listed };
                let listed = translate(&self.aliases, listed);
                let listed = listed.as_ref();
                if !is_wanted(listed) {
                    continue;
                }
                let (path, diversion) = self.installed_name(listed, &name);
                let diversion = diversion.cloned();
                owns_a_file |= !directories.contains(&path);
                let facts = self.facts.entry(path).or_default();
                if !facts.owners.contains(&ix) {
                    facts.owners.push(ix);
                }
                if diversion.is_some() {
                    facts.diversion = diversion;
                }
            }
            let md5_path = info.join(format!("{stem}.md5sums"));
            let read = if owns_a_file {
                std::fs::read(&md5_path)
            } else {
                Ok(Vec::new())
            };
            let text = match read {
                Ok(text) => text,
                Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
                Err(source) => {
                    return Err(PackageError::Read {
                        path: md5_path,
                        source,
                    });
                }
            };
            for line in text.split(|&b| b == b'\n') {
                // "d41d8cd98f00b204e9800998ecf8427e  usr/bin/foo"
                let (Some(hex), Some(rel)) = (line.get(..32), line.get(34..)) else {
                    continue;
                };
                let mut listed = Vec::with_capacity(rel.len() + 1);
                listed.push(b'/');
                listed.extend_from_slice(rel);
                let listed = translate(&self.aliases, &listed).into_owned();
                if !is_wanted(&listed) {
                    continue;
                }
                let Some(digest) = parse_md5(hex) else {
                    continue;
                };
                let (path, _) = self.installed_name(&listed, &name);
                self.facts.entry(path).or_default().md5.push(digest);
            }
            for (listed, digest) in &conffiles[ix] {
                let listed = translate(&self.aliases, listed);
                let listed = listed.as_ref();
                if !is_wanted(listed) {
                    continue;
                }
                let (path, _) = self.installed_name(listed, &name);
                let facts = self.facts.entry(path).or_default();
                facts.conffile = true;
                facts.md5.extend(*digest);
            }
        }
        // The original name of a diverted path: say what moved the packaged file away.
        for d in &self.diversions {
            if wanted.contains(&d.from) {
                let facts = self.facts.entry(d.from.clone()).or_default();
                facts.diversion = Some(d.clone());
                // A package's list names the original path even when its file went elsewhere:
                // only the diverting package may own it.
                let by =
                    d.by.as_deref()
                        .and_then(|by| self.packages.iter().position(|p| p.name == by));
                facts.owners.retain(|&o| Some(o) == by);
                if facts.owners.is_empty() {
                    facts.md5.clear();
                    facts.conffile = false;
                }
            }
        }
        Ok(())
    }
}

/// The root's symlinks to directories, as (link, resolved) mirror paths: `/bin` -> `/usr/bin`
/// on a merged-/usr system.
fn top_level_aliases(root: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut aliases = Vec::new();
    for entry in entries.flatten() {
        let mut link = b"/".to_vec();
        link.extend_from_slice(entry.file_name().as_bytes());
        let Some(target) = link_target(root, &link) else {
            continue;
        };
        if target == link || target == b"/" {
            continue;
        }
        let host = root.join(std::ffi::OsStr::from_bytes(&target[1..]));
        if std::fs::symlink_metadata(&host).is_ok_and(|m| m.is_dir()) {
            aliases.push((link, target));
        }
    }
    aliases
}

/// `path` with a leading alias replaced by what it resolves to.
fn translate<'a>(aliases: &[(Vec<u8>, Vec<u8>)], path: &'a [u8]) -> std::borrow::Cow<'a, [u8]> {
    for (link, target) in aliases {
        if let Some(rest) = path.strip_prefix(link.as_slice()) {
            if rest.is_empty() {
                // The link itself: a package lists `/bin` as a directory.
                return std::borrow::Cow::Borrowed(path);
            }
            if rest.starts_with(b"/") {
                let mut out = target.clone();
                out.extend_from_slice(rest);
                return std::borrow::Cow::Owned(out);
            }
        }
    }
    std::borrow::Cow::Borrowed(path)
}

fn read_file(path: &Path) -> Result<Vec<u8>, PackageError> {
    std::fs::read(path).map_err(|source| PackageError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn parse_md5(hex: &[u8]) -> Option<[u8; 16]> {
    if hex.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, pair) in hex.chunks(2).enumerate() {
        let text = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(text, 16).ok()?;
    }
    Some(out)
}

/// The conffiles of each package (path, digest; None for `newconffile`), by package index.
type Conffiles = Vec<Vec<(Vec<u8>, Option<[u8; 16]>)>>;

/// The packages whose files are on disk, and their conffiles. A line that is neither a field,
/// a continuation nor blank, or a paragraph without Package, is an error naming the line.
pub fn parse_status(path: &Path, text: &[u8]) -> Result<(Vec<Package>, Conffiles), PackageError> {
    let corrupt = |line: usize, message: String| PackageError::Corrupt {
        path: path.to_path_buf(),
        line,
        message,
    };
    let mut packages = Vec::new();
    let mut conffiles = Vec::new();
    let mut fields: Vec<(String, Vec<u8>)> = Vec::new();
    let mut first_line = 1;
    let lines: Vec<&[u8]> = text.split(|&b| b == b'\n').collect();
    for (n, line) in lines.iter().enumerate() {
        let number = n + 1;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            if !fields.is_empty() {
                end_paragraph(&mut fields, &mut packages, &mut conffiles)
                    .map_err(|m| corrupt(first_line, m))?;
            }
            continue;
        }
        if line[0] == b' ' || line[0] == b'\t' {
            match fields.last_mut() {
                Some((_, value)) => {
                    value.push(b'\n');
                    value.extend_from_slice(&line[1..]);
                }
                None => {
                    return Err(corrupt(
                        number,
                        "a continuation line outside any field".to_string(),
                    ));
                }
            }
            continue;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return Err(corrupt(
                number,
                format!(
                    "not a field (no ':'): {:?}",
                    String::from_utf8_lossy(&line[..line.len().min(60)])
                ),
            ));
        };
        let name = String::from_utf8_lossy(&line[..colon]).trim().to_string();
        if name.is_empty() || name.contains(' ') {
            return Err(corrupt(number, format!("not a field name: {name:?}")));
        }
        if fields.is_empty() {
            first_line = number;
        }
        let value = line[colon + 1..].trim_ascii().to_vec();
        fields.push((name, value));
    }
    if !fields.is_empty() {
        end_paragraph(&mut fields, &mut packages, &mut conffiles)
            .map_err(|m| corrupt(first_line, m))?;
    }
    Ok((packages, conffiles))
}

fn end_paragraph(
    fields: &mut Vec<(String, Vec<u8>)>,
    packages: &mut Vec<Package>,
    conffiles: &mut Conffiles,
) -> Result<(), String> {
    let taken = std::mem::take(fields);
    let get = |name: &str| {
        taken
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    };
    let text = |name: &str| get(name).map(|v| String::from_utf8_lossy(v).into_owned());
    let Some(name) = text("Package") else {
        return Err("a paragraph without a Package field".to_string());
    };
    let status = text("Status").unwrap_or_default();
    let state = status.split_whitespace().nth(2).unwrap_or("");
    if !PRESENT_STATES.contains(&state) {
        return Ok(());
    }
    let Some(version) = text("Version") else {
        return Err(format!("package {name}: installed without a Version field"));
    };
    let mut files = Vec::new();
    for line in get("Conffiles")
        .unwrap_or_default()
        .split(|&b| b == b'\n')
        .map(<[u8]>::trim_ascii)
        .filter(|l| !l.is_empty())
    {
        // "/etc/foo 0123...cdef", with " obsolete" or " remove-on-upgrade" after it.
        let mut words: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
        if matches!(
            words.last(),
            Some(&b"obsolete") | Some(&b"remove-on-upgrade")
        ) {
            words.pop();
        }
        let Some(digest) = words.pop() else { continue };
        if words.is_empty() {
            continue;
        }
        files.push((words.join(&b' '), parse_md5(digest)));
    }
    packages.push(Package {
        name,
        version,
        architecture: text("Architecture").unwrap_or_default(),
        multi_arch_same: text("Multi-Arch").is_some_and(|m| m == "same"),
    });
    conffiles.push(files);
    Ok(())
}

/// `var/lib/dpkg/diversions`: three lines per diversion (from, to, package or `:`).
fn read_diversions(path: &Path) -> Result<Vec<Diversion>, PackageError> {
    let text = match std::fs::read(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(PackageError::Read {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let lines: Vec<&[u8]> = text
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    if lines.len() % 3 != 0 {
        return Err(PackageError::Corrupt {
            path: path.to_path_buf(),
            line: lines.len(),
            message: "not a whole number of three-line diversions".to_string(),
        });
    }
    Ok(lines
        .chunks(3)
        .map(|chunk| Diversion {
            from: chunk[0].to_vec(),
            to: chunk[1].to_vec(),
            by: (chunk[2] != b":").then(|| String::from_utf8_lossy(chunk[2]).into_owned()),
        })
        .collect())
}

/// The target of the symlink `link` of the source tree, as a normalized mirror path (a
/// relative target taken from the link's directory); None when it is not a symlink.
pub fn link_target(root: &Path, link: &[u8]) -> Option<Vec<u8>> {
    let rel = link.strip_prefix(b"/")?;
    let host: PathBuf = root.join(std::ffi::OsStr::from_bytes(rel));
    let target = std::fs::read_link(host).ok()?;
    let target = target.as_os_str().as_bytes();
    if target.starts_with(b"/") {
        Some(crate::analysis::paths::normalize_mirror_path(target))
    } else {
        let mut joined = crate::analysis::paths::parent_of(link)
            .unwrap_or(b"/")
            .to_vec();
        joined.push(b'/');
        joined.extend_from_slice(target);
        Some(crate::analysis::paths::normalize_mirror_path(&joined))
    }
}
