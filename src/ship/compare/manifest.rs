//! `depsetfs manifest`: what a target machine holds, as one JSON document
//! (`"format": "depsetfs-manifest 1"`): every path under a root with its kind, mode, owner,
//! size, the sha256 of each regular file and each symlink's target, plus the machine's
//! architecture and os-release id. The kernel's trees (`/proc`, `/sys`, `/dev` under the root)
//! and other filesystems mounted below the root are listed as directories without their
//! contents unless asked ([`ManifestOptions::cross_mounts`]). Hashing is incremental: each
//! regular file's entry keeps its `(dev, ino, size, mtime_ns, ctime_ns)`, and a file whose key
//! is unchanged since a previous manifest (the cache) reuses that manifest's hash. When the
//! root has a dpkg database, `packages` lists its installed packages and each path owned by
//! one names it in `package` ([`super::packages`]). The reader accepts this version and
//! refuses a newer one. docs/set-algebra.md.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::hash::{FileHash, hash_each};
use super::packages::{InstalledPackage, Owners, has_dpkg_database};
use super::{
    CompareError, Entry, NameField, Sha256, Side, SideKind, hex, kind_from_name, mode_text,
    normalize_arch, unhex,
};
use crate::analysis::names::JsonName;
use crate::analysis::paths::KERNEL_TREES;
use crate::record::FileKind;

/// The format key's word; the document says `depsetfs-manifest N`.
pub const MANIFEST_TAG: &str = "depsetfs-manifest";
/// The version this depsetfs writes, and the newest it reads.
pub const MANIFEST_VERSION: u32 = 1;

/// How to make a manifest.
#[derive(Clone, Debug)]
pub struct ManifestOptions {
    pub root: PathBuf,
    /// Also list what other filesystems mounted below the root hold (and `/proc`, `/sys`,
    /// `/dev`).
    pub cross_mounts: bool,
    /// Host paths not to list (the manifest being written and its temporary name, when they
    /// lie under the root).
    pub exclude: Vec<PathBuf>,
    /// Hashing threads.
    pub threads: usize,
    /// A progress line on stderr while hashing (drawn only when stderr is a terminal).
    pub progress: bool,
}

/// What a manifest run did, for the summary line and the tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ManifestStats {
    pub paths: u64,
    pub files: u64,
    /// Files whose contents were read and hashed.
    pub hashed: u64,
    /// Files whose hash came from the cache (same dev, inode, size, mtime and ctime).
    pub reused: u64,
    /// Paths that could not be read (listed without hash or target).
    pub unreadable: u64,
    /// Directories listed without their contents (kernel trees, other mounts).
    pub not_descended: Vec<String>,
    /// Installed packages of the root's dpkg database (None: it has none, or it could not be
    /// read: then `package_warning` says why).
    pub packages: Option<usize>,
    /// Paths owned by a package.
    pub owned: u64,
    /// Why the manifest has no package data though the root has a dpkg database.
    pub package_warning: Option<String>,
}

/// The key under which a file's hash is reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CacheKey {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
}

/// Hashes of a previous manifest by path.
#[derive(Default)]
pub struct HashCache {
    by_path: HashMap<Vec<u8>, (CacheKey, Sha256)>,
}

impl HashCache {
    pub fn len(&self) -> usize {
        self.by_path.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_path.is_empty()
    }

    fn get(&self, path: &[u8], key: &CacheKey) -> Option<Sha256> {
        self.by_path
            .get(path)
            .filter(|(known, _)| known == key)
            .map(|(_, digest)| *digest)
    }
}

/// The keys before the entries, in this order.
#[derive(Serialize)]
struct HeadOut<'a> {
    format: String,
    root: String,
    arch: &'a str,
    os_id: Option<&'a str>,
    os_version_id: Option<&'a str>,
    created_ns: u64,
    not_descended: &'a [String],
    /// The installed packages of the root's dpkg database (null without one).
    packages: Option<&'a [InstalledPackage]>,
}

/// A manifest entry as written.
#[derive(Serialize)]
struct EntryOut<'a> {
    path: JsonName<'a>,
    kind: &'static str,
    mode: String,
    uid: u32,
    gid: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sha256: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    target: Option<JsonName<'a>>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    key: Option<KeyOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    package: Option<&'a str>,
}

/// The cache key's fields besides the size (which the entry has already).
#[derive(Serialize)]
struct KeyOut {
    dev: u64,
    ino: u64,
    mtime_ns: i64,
    ctime_ns: i64,
}

impl From<CacheKey> for KeyOut {
    fn from(key: CacheKey) -> KeyOut {
        KeyOut {
            dev: key.dev,
            ino: key.ino,
            mtime_ns: key.mtime_ns,
            ctime_ns: key.ctime_ns,
        }
    }
}

/// A manifest entry as read (every field but path and kind optional).
#[derive(Deserialize)]
struct EntryIn {
    path: NameField,
    kind: String,
    mode: Option<String>,
    uid: Option<u32>,
    gid: Option<u32>,
    size: Option<u64>,
    sha256: Option<String>,
    target: Option<NameField>,
    dev: Option<u64>,
    ino: Option<u64>,
    mtime_ns: Option<i64>,
    ctime_ns: Option<i64>,
    package: Option<String>,
}

#[derive(Deserialize)]
struct DocumentIn {
    format: Option<String>,
    arch: Option<String>,
    #[serde(default)]
    packages: Option<Vec<InstalledPackage>>,
    #[serde(default)]
    entries: Vec<EntryIn>,
}

/// What the machine is: `uname -m` and os-release's `ID` and `VERSION_ID`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Machine {
    pub arch: String,
    pub os_id: Option<String>,
    pub os_version_id: Option<String>,
}

impl Machine {
    /// This machine, with the os-release of `root` (a target's tree may be another system).
    pub fn of(root: &Path) -> Machine {
        // SAFETY: utsname is plain data filled by the kernel.
        let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
        // SAFETY: valid out pointer.
        let arch = if unsafe { libc::uname(&mut uts) } == 0 {
            // SAFETY: the kernel NUL-terminates the field.
            unsafe { std::ffi::CStr::from_ptr(uts.machine.as_ptr()) }
                .to_string_lossy()
                .into_owned()
        } else {
            String::new()
        };
        let release = ["etc/os-release", "usr/lib/os-release"]
            .iter()
            .find_map(|rel| std::fs::read_to_string(root.join(rel)).ok())
            .unwrap_or_default();
        let field = |name: &str| {
            release.lines().find_map(|line| {
                let value = line.strip_prefix(name)?.strip_prefix('=')?;
                Some(value.trim().trim_matches('"').to_string())
            })
        };
        Machine {
            arch,
            os_id: field("ID"),
            os_version_id: field("VERSION_ID"),
        }
    }
}

/// One path found by the walk, before hashing: what a manifest keeps of its lstat (a whole
/// `Metadata` is three times larger, and a root has a million paths).
struct Found {
    path: Vec<u8>,
    meta: Stat,
    target: Option<Vec<u8>>,
    unreadable: bool,
}

#[derive(Clone, Copy)]
struct Stat {
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    key: CacheKey,
}

impl Stat {
    fn of(meta: &std::fs::Metadata) -> Stat {
        Stat {
            mode: meta.mode(),
            uid: meta.uid(),
            gid: meta.gid(),
            size: meta.len(),
            key: cache_key(meta),
        }
    }

    fn kind(&self) -> FileKind {
        FileKind::from_mode(self.mode)
    }
}

/// Walks the root and writes the manifest to `out`, reusing hashes of `cache`.
pub fn write_manifest(
    options: &ManifestOptions,
    cache: &HashCache,
    out: &mut dyn Write,
) -> Result<ManifestStats, CompareError> {
    let root = &options.root;
    let root_meta =
        std::fs::symlink_metadata(root).map_err(|e| CompareError::io(root.clone(), e))?;
    if !root_meta.is_dir() {
        return Err(CompareError::io(
            root.clone(),
            io::Error::from_raw_os_error(libc::ENOTDIR),
        ));
    }
    let (found, digests, mut stats) = scan(options, &root_meta, cache);
    let machine = Machine::of(root);
    let (packages, owners) = package_data(root, &found, &mut stats);
    let document = Document {
        machine: &machine,
        found: &found,
        digests: &digests,
        packages: packages.as_deref(),
        owners: &owners,
    };
    write_document(options, &stats, &document, out)
        .map_err(|e| CompareError::io("the manifest", e))?;
    stats.paths = found.len() as u64;
    Ok(stats)
}

/// The tree under a root (an exported directory) as a side, every file hashed. The export
/// marker at its top is not part of it.
pub fn directory_side(root: &Path, name: &str, threads: usize) -> Result<Side, CompareError> {
    let root_meta =
        std::fs::symlink_metadata(root).map_err(|e| CompareError::io(root.to_path_buf(), e))?;
    let options = ManifestOptions {
        root: root.to_path_buf(),
        cross_mounts: false,
        exclude: Vec::new(),
        threads,
        progress: false,
    };
    let (found, digests, _) = scan(&options, &root_meta, &HashCache::default());
    let has_packages = has_dpkg_database(root);
    let marker = format!("/{}", crate::ship::export::output::MARKER);
    let mut machines: Vec<Option<u16>> = Vec::new();
    let entries = found
        .into_iter()
        .zip(digests)
        .filter(|(item, _)| item.path != marker.as_bytes())
        .map(|(item, digest)| {
            machines.push(digest.and_then(|(_, machine)| machine));
            entry_of(item, digest.map(|(sha, _)| sha))
        })
        .collect();
    Ok(super::tree::without_mount_dirs(
        Side {
            kind: SideKind::Directory,
            name: name.to_string(),
            arch: super::tree::majority_arch(machines.into_iter().flatten()),
            entries,
            packages: None,
        }
        .finish(),
    ))
    .and_then(|mut side| {
        // An exported tree that holds a dpkg database (a whole root exported): its packages.
        if has_packages {
            super::packages::attach(&mut side, root)?;
        }
        Ok(side)
    })
}

/// The root's installed packages and the owner of each path found (empty without a dpkg
/// database; an unreadable one is a warning, not an error: the paths are the manifest).
fn package_data(
    root: &Path,
    found: &[Found],
    stats: &mut ManifestStats,
) -> (Option<Vec<InstalledPackage>>, Vec<Option<String>>) {
    if !has_dpkg_database(root) {
        return (None, Vec::new());
    }
    let wanted: std::collections::HashSet<Vec<u8>> =
        found.iter().map(|item| item.path.clone()).collect();
    let owners = match Owners::load(root, &wanted) {
        Ok(Some(owners)) => owners,
        Ok(None) => return (None, Vec::new()),
        Err(e) => {
            stats.package_warning = Some(e.to_string());
            return (None, Vec::new());
        }
    };
    drop(wanted);
    let owned: Vec<Option<String>> = found
        .iter()
        .map(|item| owners.owner(&item.path, item.meta.kind() == FileKind::Dir))
        .collect();
    let packages = owners.packages();
    stats.packages = Some(packages.len());
    stats.owned = owned.iter().filter(|o| o.is_some()).count() as u64;
    (Some(packages), owned)
}

fn entry_of(item: Found, sha256: Option<Sha256>) -> Entry {
    let kind = item.meta.kind();
    Entry {
        path: item.path,
        kind,
        mode: Some(item.meta.mode & 0o7777),
        uid: Some(item.meta.uid),
        gid: Some(item.meta.gid),
        size: matches!(kind, FileKind::File | FileKind::Symlink).then_some(item.meta.size),
        sha256,
        target: item.target,
        needed_by: Vec::new(),
        package: None,
    }
}

/// The walk and the hashes (with each file's ELF machine when it was read, not cached).
#[allow(clippy::type_complexity)]
fn scan(
    options: &ManifestOptions,
    root_meta: &std::fs::Metadata,
    cache: &HashCache,
) -> (
    Vec<Found>,
    Vec<Option<(Sha256, Option<u16>)>>,
    ManifestStats,
) {
    let root = &options.root;
    let mut stats = ManifestStats::default();
    let stops = stop_points(root, options.cross_mounts);
    let found = walk(root, root_meta, &stops, &options.exclude, &mut stats);
    // Hash what the cache does not know, on a few threads.
    let mut digests: Vec<Option<(Sha256, Option<u16>)>> = vec![None; found.len()];
    let mut to_hash: Vec<usize> = Vec::new();
    for (at, item) in found.iter().enumerate() {
        if item.meta.kind() != FileKind::File || item.unreadable {
            continue;
        }
        stats.files += 1;
        match cache.get(&item.path, &item.meta.key) {
            Some(digest) => {
                digests[at] = Some((digest, None));
                stats.reused += 1;
            }
            None => to_hash.push(at),
        }
    }
    let path_of = |i: usize| host_path(root, &found[to_hash[i]].path);
    let mut line = crate::ship::progress::Progress::on_stderr("hashing", options.progress);
    // Bytes of the files started so far, for the progress line.
    let bytes_before: Vec<u64> = std::iter::once(0)
        .chain(to_hash.iter().scan(0u64, |sum, &at| {
            *sum += found[at].meta.size;
            Some(*sum)
        }))
        .collect();
    let hashes = hash_each(
        to_hash.len(),
        path_of,
        options.threads,
        &mut |done, total| line.update(done, total, bytes_before[done as usize]),
    );
    line.clear();
    for (at, result) in to_hash.iter().zip(hashes) {
        match result {
            Ok(FileHash {
                sha256,
                elf_machine,
            }) => {
                digests[*at] = Some((sha256, elf_machine));
                stats.hashed += 1;
            }
            Err(_) => stats.unreadable += 1,
        }
    }
    (found, digests, stats)
}

/// What a manifest document holds besides its options and stats.
struct Document<'a> {
    machine: &'a Machine,
    found: &'a [Found],
    digests: &'a [Option<(Sha256, Option<u16>)>],
    packages: Option<&'a [InstalledPackage]>,
    /// The owner of each found path (empty: none has one).
    owners: &'a [Option<String>],
}

fn write_document(
    options: &ManifestOptions,
    stats: &ManifestStats,
    document: &Document<'_>,
    out: &mut dyn Write,
) -> io::Result<()> {
    let Document {
        machine,
        found,
        digests,
        packages,
        owners,
    } = *document;
    let mut out = BufWriter::with_capacity(1 << 20, out);
    let head = HeadOut {
        format: format!("{MANIFEST_TAG} {MANIFEST_VERSION}"),
        root: options.root.to_string_lossy().into_owned(),
        arch: &machine.arch,
        os_id: machine.os_id.as_deref(),
        os_version_id: machine.os_version_id.as_deref(),
        created_ns: crate::record::now_ns(),
        not_descended: &stats.not_descended,
        packages,
    };
    let head = serde_json::to_string(&head)?;
    // The head's keys, then one entry per line: diffable and greppable.
    out.write_all(head.trim_end_matches('}').as_bytes())?;
    out.write_all(b",\"entries\":[\n")?;
    for (at, (item, digest)) in found.iter().zip(digests).enumerate() {
        let kind = item.meta.kind();
        let is_file = kind == FileKind::File;
        let entry = EntryOut {
            path: JsonName(&item.path),
            kind: kind.name(),
            mode: mode_text(item.meta.mode & 0o7777),
            uid: item.meta.uid,
            gid: item.meta.gid,
            size: matches!(kind, FileKind::File | FileKind::Symlink).then_some(item.meta.size),
            sha256: digest.as_ref().map(|(sha, _)| hex(sha)),
            target: item.target.as_deref().map(JsonName),
            key: (is_file && digest.is_some()).then(|| item.meta.key.into()),
            package: owners.get(at).and_then(|o| o.as_deref()),
        };
        if at > 0 {
            out.write_all(b",\n")?;
        }
        serde_json::to_writer(&mut out, &entry)?;
    }
    out.write_all(b"\n]}\n")?;
    out.flush()
}

fn cache_key(meta: &std::fs::Metadata) -> CacheKey {
    CacheKey {
        dev: meta.dev(),
        ino: meta.ino(),
        size: meta.len(),
        mtime_ns: meta
            .mtime()
            .saturating_mul(1_000_000_000)
            .saturating_add(meta.mtime_nsec()),
        ctime_ns: meta
            .ctime()
            .saturating_mul(1_000_000_000)
            .saturating_add(meta.ctime_nsec()),
    }
}

/// The host path of a path inside `root`.
pub fn host_path(root: &Path, path: &[u8]) -> PathBuf {
    let relative = path.strip_prefix(b"/").unwrap_or(path);
    if relative.is_empty() {
        root.to_path_buf()
    } else {
        root.join(std::ffi::OsStr::from_bytes(relative))
    }
}

/// Directories listed without their contents: the kernel's trees under the root, and (unless
/// crossing) every mountpoint strictly below the root.
fn stop_points(root: &Path, cross_mounts: bool) -> Vec<PathBuf> {
    if cross_mounts {
        return Vec::new();
    }
    let root = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    let mut stops: Vec<PathBuf> = KERNEL_TREES
        .iter()
        .map(|tree| host_path(&root, tree))
        .collect();
    if let Ok(mounts) = crate::sys::mountinfo::read_mountinfo() {
        stops.extend(
            mounts
                .into_iter()
                .map(|mount| mount.mount_point)
                .filter(|point| point != &root && point.starts_with(&root)),
        );
    }
    stops
}

/// Every path under `root` (root included), depth first, each directory's names sorted.
fn walk(
    root: &Path,
    root_meta: &std::fs::Metadata,
    stops: &[PathBuf],
    exclude: &[PathBuf],
    stats: &mut ManifestStats,
) -> Vec<Found> {
    let canonical_root = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    let mut found = vec![Found {
        path: b"/".to_vec(),
        meta: Stat::of(root_meta),
        target: None,
        unreadable: false,
    }];
    let mut pending: Vec<(Vec<u8>, PathBuf)> = vec![(b"/".to_vec(), canonical_root.clone())];
    while let Some((dir_path, host_dir)) = pending.pop() {
        let Ok(reader) = std::fs::read_dir(&host_dir) else {
            stats.unreadable += 1;
            continue;
        };
        let mut children: Vec<(Vec<u8>, PathBuf, Stat)> = Vec::new();
        for child in reader.flatten() {
            let host = child.path();
            if exclude.contains(&host) {
                continue;
            }
            let Ok(meta) = child.metadata() else {
                stats.unreadable += 1;
                continue;
            };
            let mut path = dir_path.clone();
            if path != b"/" {
                path.push(b'/');
            }
            path.extend_from_slice(child.file_name().as_bytes());
            children.push((path, host, Stat::of(&meta)));
        }
        children.sort_by(|a, b| b.0.cmp(&a.0));
        for (path, host, meta) in children {
            let mut item = Found {
                path: path.clone(),
                meta,
                target: None,
                unreadable: false,
            };
            if item.meta.kind() == FileKind::Symlink {
                match std::fs::read_link(&host) {
                    Ok(target) => item.target = Some(target.into_os_string().into_vec()),
                    Err(_) => {
                        item.unreadable = true;
                        stats.unreadable += 1;
                    }
                }
            }
            if item.meta.kind() == FileKind::Dir {
                if stops.iter().any(|stop| stop == &host) {
                    stats
                        .not_descended
                        .push(String::from_utf8_lossy(&path).into_owned());
                } else {
                    pending.push((path, host));
                }
            }
            found.push(item);
        }
    }
    found.sort_by(|a, b| a.path.cmp(&b.path));
    stats.not_descended.sort();
    found
}

use std::os::unix::ffi::OsStringExt;

/// Reads a manifest: its entries as a side, and its cache of hashes.
pub fn read_manifest(path: &Path, name: &str) -> Result<(Side, HashCache), CompareError> {
    let bytes = read_all(path)?;
    let document: DocumentIn =
        serde_json::from_slice(&bytes).map_err(|e| CompareError::malformed(path, "manifest", e))?;
    let version = manifest_version(path, document.format.as_deref())?;
    if version == 0 {
        return Err(CompareError::NotAManifest {
            path: path.to_path_buf(),
            what: "this JSON document",
        });
    }
    let mut cache = HashCache::default();
    let mut entries = Vec::with_capacity(document.entries.len());
    for entry in document.entries {
        let kind = kind_from_name(&entry.kind).ok_or_else(|| {
            CompareError::malformed(path, "manifest", format!("unknown kind {:?}", entry.kind))
        })?;
        let mode = match &entry.mode {
            Some(text) => Some(u32::from_str_radix(text, 8).map_err(|_| {
                CompareError::malformed(path, "manifest", format!("bad mode {text:?}"))
            })?),
            None => None,
        };
        let sha256 = match &entry.sha256 {
            Some(text) => Some(unhex(text).ok_or_else(|| {
                CompareError::malformed(path, "manifest", format!("bad sha256 {text:?}"))
            })?),
            None => None,
        };
        let path_bytes = entry.path.0;
        if let (Some(dev), Some(ino), Some(size), Some(mtime_ns), Some(ctime_ns), Some(digest)) = (
            entry.dev,
            entry.ino,
            entry.size,
            entry.mtime_ns,
            entry.ctime_ns,
            sha256,
        ) {
            let key = CacheKey {
                dev,
                ino,
                size,
                mtime_ns,
                ctime_ns,
            };
            cache.by_path.insert(path_bytes.clone(), (key, digest));
        }
        entries.push(Entry {
            path: path_bytes,
            kind,
            mode,
            uid: entry.uid,
            gid: entry.gid,
            size: entry.size,
            sha256,
            target: entry.target.map(|name| name.0),
            needed_by: Vec::new(),
            package: entry.package,
        });
    }
    let side = Side {
        kind: SideKind::Manifest,
        name: name.to_string(),
        arch: document
            .arch
            .filter(|arch| !arch.is_empty())
            .map(|arch| normalize_arch(&arch)),
        entries,
        packages: document.packages,
    }
    .finish();
    Ok((side, cache))
}

/// The version of a `format` key: `None` is 0 (not a manifest); another tag is not a
/// manifest either; a newer version is refused.
fn manifest_version(path: &Path, format: Option<&str>) -> Result<u32, CompareError> {
    let Some(format) = format else {
        return Ok(0);
    };
    let Some(version) = format
        .strip_prefix(MANIFEST_TAG)
        .and_then(|rest| rest.strip_prefix(' '))
    else {
        return Ok(0);
    };
    let version: u32 = version
        .trim()
        .parse()
        .map_err(|_| CompareError::malformed(path, "manifest", format!("bad format {format:?}")))?;
    if version > MANIFEST_VERSION {
        return Err(CompareError::FutureVersion {
            path: path.to_path_buf(),
            what: "manifest",
            found: version,
            supported: MANIFEST_VERSION,
        });
    }
    Ok(version)
}

/// The hash cache of a manifest alone, streamed entry by entry (neither the file nor its
/// entries are held: a root's manifest is hundreds of megabytes).
pub fn read_cache(path: &Path) -> Result<HashCache, CompareError> {
    let file = File::open(path).map_err(|e| CompareError::io(path, e))?;
    let reader = io::BufReader::with_capacity(1 << 20, file);
    let document: CacheDocument = serde_json::from_reader(reader)
        .map_err(|e| CompareError::malformed(path, "manifest", e))?;
    if manifest_version(path, document.format.as_deref())? == 0 {
        return Err(CompareError::NotAManifest {
            path: path.to_path_buf(),
            what: "this JSON document",
        });
    }
    Ok(document.entries)
}

#[derive(Deserialize)]
struct CacheDocument {
    format: Option<String>,
    #[serde(default)]
    entries: HashCache,
}

/// What a cache needs of an entry.
#[derive(Deserialize)]
struct CacheEntryIn {
    path: NameField,
    size: Option<u64>,
    sha256: Option<String>,
    dev: Option<u64>,
    ino: Option<u64>,
    mtime_ns: Option<i64>,
    ctime_ns: Option<i64>,
}

impl<'de> Deserialize<'de> for HashCache {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Entries;
        impl<'de> serde::de::Visitor<'de> for Entries {
            type Value = HashCache;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a list of manifest entries")
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<HashCache, A::Error> {
                let mut cache = HashCache::default();
                while let Some(entry) = seq.next_element::<CacheEntryIn>()? {
                    let digest = entry.sha256.as_deref().and_then(unhex);
                    if let (
                        Some(dev),
                        Some(ino),
                        Some(size),
                        Some(mtime_ns),
                        Some(ctime_ns),
                        Some(digest),
                    ) = (
                        entry.dev,
                        entry.ino,
                        entry.size,
                        entry.mtime_ns,
                        entry.ctime_ns,
                        digest,
                    ) {
                        let key = CacheKey {
                            dev,
                            ino,
                            size,
                            mtime_ns,
                            ctime_ns,
                        };
                        cache.by_path.insert(entry.path.0, (key, digest));
                    }
                }
                Ok(cache)
            }
        }
        deserializer.deserialize_seq(Entries)
    }
}

pub(super) fn read_all(path: &Path) -> Result<Vec<u8>, CompareError> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut file| file.read_to_end(&mut bytes))
        .map_err(|e| CompareError::io(path, e))?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::ScratchDir;

    fn options(root: &Path) -> ManifestOptions {
        ManifestOptions {
            root: root.to_path_buf(),
            cross_mounts: false,
            exclude: Vec::new(),
            threads: 2,
            progress: false,
        }
    }

    fn manifest_of(
        root: &Path,
        cache: &HashCache,
        out: &Path,
    ) -> Result<(ManifestStats, Side, HashCache), Box<dyn std::error::Error>> {
        let mut file = File::create(out)?;
        let stats = write_manifest(&options(root), cache, &mut file)?;
        let (side, cache) = read_manifest(out, "m")?;
        Ok((stats, side, cache))
    }

    #[test]
    fn a_manifest_lists_kinds_modes_hashes_and_targets() -> Result<(), Box<dyn std::error::Error>> {
        let scratch = ScratchDir::new("manifest-kinds");
        let root = scratch.root().join("root");
        std::fs::create_dir(&root)?;
        std::fs::create_dir_all(root.join("etc"))?;
        std::fs::write(root.join("etc/hosts"), "127.0.0.1 localhost\n")?;
        std::os::unix::fs::symlink("hosts", root.join("etc/link"))?;
        std::fs::create_dir_all(root.join("proc/1"))?;
        let out = scratch.root().join("m.json");
        let (stats, side, _) = manifest_of(&root, &HashCache::default(), &out)?;
        let hosts = side.get(b"/etc/hosts").ok_or("no /etc/hosts")?;
        assert_eq!(hosts.kind, FileKind::File);
        assert_eq!(hosts.size, Some(20));
        assert_eq!(
            hosts.sha256,
            Some(super::super::hash::hash_file(&root.join("etc/hosts"))?.sha256)
        );
        let link = side.get(b"/etc/link").ok_or("no link")?;
        assert_eq!(link.target.as_deref(), Some(b"hosts".as_slice()));
        // /proc is listed, its contents are not.
        assert!(side.get(b"/proc").is_some());
        assert!(side.get(b"/proc/1").is_none());
        assert_eq!(stats.not_descended, ["/proc"]);
        assert_eq!(stats.hashed, 1);
        assert!(side.arch.is_some());
        Ok(())
    }

    #[test]
    fn a_second_manifest_rehashes_only_what_changed() -> Result<(), Box<dyn std::error::Error>> {
        let scratch = ScratchDir::new("manifest-incremental");
        let root = scratch.root().join("root");
        std::fs::create_dir(&root)?;
        for i in 0..10 {
            std::fs::write(root.join(format!("f{i}")), format!("content {i}"))?;
        }
        let out = scratch.root().join("m.json");
        let (first, _, cache) = manifest_of(&root, &HashCache::default(), &out)?;
        assert_eq!((first.hashed, first.reused), (10, 0));
        assert_eq!(cache.len(), 10);
        // The streamed reader of the cache alone reads the same.
        assert_eq!(read_cache(&out)?.len(), 10);
        std::fs::write(root.join("f3"), "changed")?;
        std::fs::write(root.join("new"), "new")?;
        let (second, side, _) = manifest_of(&root, &cache, &out)?;
        assert_eq!((second.hashed, second.reused), (2, 9));
        assert_eq!(
            side.get(b"/f3").and_then(|e| e.sha256),
            Some(super::super::hash::hash_file(&root.join("f3"))?.sha256)
        );
        Ok(())
    }

    #[test]
    fn the_manifest_being_written_is_not_listed() -> Result<(), Box<dyn std::error::Error>> {
        let scratch = ScratchDir::new("manifest-exclude");
        let root = std::fs::canonicalize(scratch.root())?;
        std::fs::write(root.join("kept"), "x")?;
        let out = root.join("m.json");
        let mut options = options(&root);
        options.exclude = vec![out.clone(), root.join("m.json.partial")];
        std::fs::write(root.join("m.json.partial"), "")?;
        let stats = write_manifest(&options, &HashCache::default(), &mut File::create(&out)?)?;
        let (side, _) = read_manifest(&out, "m")?;
        let paths: Vec<&[u8]> = side.entries.iter().map(|e| e.path.as_slice()).collect();
        assert_eq!(paths, [b"/".as_slice(), b"/kept"]);
        assert_eq!(stats.paths, 2);
        Ok(())
    }

    #[test]
    fn a_manifest_lists_the_roots_packages_and_each_paths_owner()
    -> Result<(), Box<dyn std::error::Error>> {
        let scratch = ScratchDir::new("manifest-packages");
        let root = super::super::packages::tests::dpkg_root(&scratch, "root", "1:1.2.13");
        let out = scratch.root().join("m.json");
        let (stats, side, _) = manifest_of(&root, &HashCache::default(), &out)?;
        assert_eq!(stats.packages, Some(4));
        let packages = side.packages.as_deref().ok_or("no packages")?;
        let zlib = super::super::packages::find(packages, "zlib1g").ok_or("no zlib1g")?;
        assert_eq!(
            (zlib.version.as_str(), zlib.arch.as_str()),
            ("1:1.2.13", "amd64")
        );
        let owner = |path: &[u8]| side.get(path).and_then(|e| e.package.clone());
        assert_eq!(owner(b"/usr/lib/libz.so.1").as_deref(), Some("zlib1g"));
        assert_eq!(
            owner(b"/usr/share/doc/libc6/copyright").as_deref(),
            Some("libc6")
        );
        assert_eq!(owner(b"/srv/app/run.sh"), None);
        assert_eq!(owner(b"/usr"), None);
        // The document says so: a `packages` list in the head, `package` on owned entries.
        let text = std::fs::read_to_string(&out)?;
        assert!(
            text.contains(r#""packages":[{"name":"dpkg","version":"1.21.22","arch":"amd64"}"#),
            "{text}"
        );
        assert!(
            text.contains(r#""path":"/usr/lib/libz.so.1""#)
                && text.contains(r#","package":"zlib1g"}"#)
        );
        // A root without a database: null, as version 1 always wrote (and still reads).
        let bare = scratch.root().join("bare");
        std::fs::create_dir(&bare)?;
        let (stats, side, _) = manifest_of(&bare, &HashCache::default(), &out)?;
        assert_eq!((stats.packages, side.packages), (None, None));
        assert!(std::fs::read_to_string(&out)?.contains(r#""packages":null"#));
        Ok(())
    }

    #[test]
    fn a_future_manifest_version_is_refused() -> Result<(), Box<dyn std::error::Error>> {
        let scratch = ScratchDir::new("manifest-future");
        let path = scratch.root().join("m.json");
        std::fs::write(&path, r#"{"format": "depsetfs-manifest 7", "entries": []}"#)?;
        let error = read_manifest(&path, "m").err().map(|e| e.to_string());
        assert!(
            error
                .as_deref()
                .is_some_and(|e| e.contains("manifest format version 7 is newer")),
            "{error:?}"
        );
        Ok(())
    }
}
