//! Sides read from trees: a log's set hashed in its source tree ([`set_side`]), a tar stream
//! (plain or gzip'ed, [`tar_side`]) and an OCI image layout ([`oci_side`]: the first image of
//! `index.json`, its layers applied in order with their whiteouts). An exported directory is
//! read by [`super::manifest::directory_side`], the same walk a manifest makes. A side's
//! architecture is the one most of its ELF files are built for. What `export` adds to a root
//! beside the set (empty `/proc`, `/sys`, `/dev`, `/tmp`) is left out ([`without_mount_dirs`]).

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;

use super::hash::hash_all;
use super::{CompareError, Entry, Side, SideKind, elf_machine_arch};
use crate::analysis::closure::DeploymentSet;
use crate::analysis::paths::{KERNEL_TREES, is_within, normalize_mirror_path};
use crate::record::FileKind;

/// The architecture most of `machines` (ELF `e_machine` values) name.
pub fn majority_arch(machines: impl Iterator<Item = u16>) -> Option<String> {
    let mut counts: HashMap<&'static str, usize> = HashMap::new();
    for machine in machines {
        if let Some(arch) = elf_machine_arch(machine) {
            *counts.entry(arch).or_default() += 1;
        }
    }
    counts
        .into_iter()
        .max_by_key(|(arch, count)| (*count, *arch))
        .map(|(arch, _)| arch.to_string())
}

/// A log's set as a side: each path's metadata and contents from the source tree (where
/// the set is exported from), and who used it. A path gone from the tree keeps what the set
/// knows (kind, size).
pub fn set_side(set: &DeploymentSet, source: &Path, name: &str, threads: usize) -> Side {
    let mut entries: Vec<Entry> = Vec::with_capacity(set.entries.len());
    let mut to_hash: Vec<(usize, PathBuf)> = Vec::new();
    for entry in &set.entries {
        let host = super::manifest::host_path(source, &entry.path);
        let mut needed_by: Vec<String> = entry
            .users
            .iter()
            .map(|user| format!("{} (pid {})", user.exe, user.pid))
            .collect();
        needed_by.dedup();
        let mut out = Entry {
            path: entry.path.clone(),
            kind: entry.kind,
            size: matches!(entry.kind, FileKind::File | FileKind::Symlink).then_some(entry.size),
            needed_by,
            ..Entry::default()
        };
        if let Ok(meta) = std::fs::symlink_metadata(&host) {
            out.kind = FileKind::from_mode(meta.mode());
            out.mode = Some(meta.mode() & 0o7777);
            out.uid = Some(meta.uid());
            out.gid = Some(meta.gid());
            out.size = matches!(out.kind, FileKind::File | FileKind::Symlink).then(|| meta.len());
            match out.kind {
                FileKind::File => to_hash.push((entries.len(), host)),
                FileKind::Symlink => {
                    out.target = std::fs::read_link(&host)
                        .ok()
                        .map(|t| std::os::unix::ffi::OsStringExt::into_vec(t.into_os_string()))
                }
                _ => {}
            }
        }
        entries.push(out);
    }
    let paths: Vec<PathBuf> = to_hash.iter().map(|(_, path)| path.clone()).collect();
    let mut machines = Vec::new();
    for ((at, _), result) in to_hash.iter().zip(hash_all(&paths, threads)) {
        if let Ok(hash) = result {
            entries[*at].sha256 = Some(hash.sha256);
            machines.extend(hash.elf_machine);
        }
    }
    Side {
        kind: SideKind::Log,
        name: name.to_string(),
        arch: majority_arch(machines.into_iter()),
        entries,
        packages: None,
    }
    .finish()
}

/// Drops what `export` adds to every exported root beside the set (the empty `/proc`,
/// `/sys`, `/dev` and, when nothing is below it, `/tmp` to mount on) and the kernel's trees,
/// which no set holds: comparing an export with a set compares the set.
pub fn without_mount_dirs(mut side: Side) -> Side {
    // A tar (and a layer) has no member for the root itself: it is there all the same.
    if side.entries.first().is_none_or(|first| first.path != b"/") {
        side.entries.insert(
            0,
            Entry {
                path: b"/".to_vec(),
                kind: FileKind::Dir,
                ..Entry::default()
            },
        );
    }
    let tmp_has_contents = side
        .entries
        .iter()
        .any(|entry| entry.path.starts_with(b"/tmp/"));
    side.entries.retain(|entry| {
        let kernel = KERNEL_TREES.iter().any(|tree| is_within(&entry.path, tree));
        let empty_tmp = entry.path == b"/tmp" && entry.kind == FileKind::Dir && !tmp_has_contents;
        !kernel && !empty_tmp
    });
    side
}

/// Whether the bytes start a gzip stream.
pub fn is_gzip(head: &[u8]) -> bool {
    head.starts_with(&[0x1f, 0x8b])
}

/// Whether the bytes are a tar header (`ustar` at offset 257).
pub fn is_tar(head: &[u8]) -> bool {
    head.len() >= 262 && &head[257..262] == b"ustar"
}

fn open_maybe_gzip(path: &Path) -> Result<Box<dyn Read>, CompareError> {
    let mut file = File::open(path).map_err(|e| CompareError::io(path, e))?;
    let mut magic = [0u8; 2];
    let n = file
        .read(&mut magic)
        .map_err(|e| CompareError::io(path, e))?;
    let file = BufReader::new(File::open(path).map_err(|e| CompareError::io(path, e))?);
    Ok(if is_gzip(&magic[..n]) {
        Box::new(GzDecoder::new(file))
    } else {
        Box::new(file)
    })
}

/// A tar (or tar.gz) file as a side.
pub fn tar_side(path: &Path, name: &str) -> Result<Side, CompareError> {
    let mut entries = BTreeMap::new();
    let mut machines = Vec::new();
    apply_tar_layer(path, &mut entries, &mut machines)?;
    Ok(without_mount_dirs(
        Side {
            kind: SideKind::Tar,
            name: name.to_string(),
            arch: majority_arch(machines.into_iter()),
            entries: entries.into_values().collect(),
            packages: None,
        }
        .finish(),
    ))
}

/// Reads one tar stream onto `entries` (later names replace earlier ones; OCI whiteouts
/// `.wh.NAME` remove NAME, `.wh..wh..opq` empties its directory).
fn apply_tar_layer(
    path: &Path,
    entries: &mut BTreeMap<Vec<u8>, Entry>,
    machines: &mut Vec<u16>,
) -> Result<(), CompareError> {
    let bad = |e: io::Error| CompareError::malformed(path, "tar", e);
    let mut archive = tar::Archive::new(open_maybe_gzip(path)?);
    for item in archive.entries().map_err(bad)? {
        let mut item = item.map_err(bad)?;
        let header = item.header().clone();
        let kind = match header.entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => FileKind::File,
            tar::EntryType::Directory => FileKind::Dir,
            tar::EntryType::Symlink => FileKind::Symlink,
            tar::EntryType::Link => FileKind::File,
            tar::EntryType::Char => FileKind::CharDevice,
            tar::EntryType::Block => FileKind::BlockDevice,
            tar::EntryType::Fifo => FileKind::Fifo,
            // PAX and GNU extension records: the crate applies them to the next entry.
            _ => continue,
        };
        let raw = item.path_bytes().into_owned();
        let entry_path = tar_path(&raw);
        if entry_path == b"/.depsetfs-export" {
            continue;
        }
        let (dir, base) = split(&entry_path);
        if base == b".wh..wh..opq" {
            let prefix = [dir, b"/"].concat();
            entries.retain(|p, _| !p.starts_with(&prefix));
            continue;
        }
        if let Some(hidden) = base.strip_prefix(b".wh.") {
            let gone = [dir, b"/", hidden].concat();
            let gone = normalize_mirror_path(&gone);
            let prefix = [gone.as_slice(), b"/"].concat();
            entries.retain(|p, _| p != &gone && !p.starts_with(&prefix));
            continue;
        }
        let mut entry = Entry {
            path: entry_path.clone(),
            kind,
            mode: header.mode().ok().map(|m| m & 0o7777),
            uid: header.uid().ok().and_then(|u| u32::try_from(u).ok()),
            gid: header.gid().ok().and_then(|g| u32::try_from(g).ok()),
            ..Entry::default()
        };
        match header.entry_type() {
            tar::EntryType::Link => {
                let target = item
                    .link_name_bytes()
                    .map(|t| tar_path(&t))
                    .unwrap_or_default();
                if let Some(first) = entries.get(&target) {
                    entry.size = first.size;
                    entry.sha256 = first.sha256;
                }
            }
            tar::EntryType::Symlink => {
                let target = item.link_name_bytes().map(|t| t.into_owned());
                entry.size = target.as_ref().map(|t| t.len() as u64);
                entry.target = target;
            }
            _ if kind == FileKind::File => {
                let hash = super::hash::hash_reader(&mut item).map_err(bad)?;
                entry.size = Some(item.size());
                entry.sha256 = Some(hash.sha256);
                machines.extend(hash.elf_machine);
            }
            _ => {}
        }
        entries.insert(entry_path, entry);
    }
    Ok(())
}

/// A tar member name as an absolute normalized path (`./usr/bin` and `usr/bin/` are
/// `/usr/bin`; `.` and `./` are `/`).
fn tar_path(raw: &[u8]) -> Vec<u8> {
    let mut absolute = b"/".to_vec();
    absolute.extend_from_slice(raw);
    normalize_mirror_path(&absolute)
}

fn split(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&b| b == b'/') {
        Some(at) => (&path[..at], &path[at + 1..]),
        None => (b"", path),
    }
}

/// An OCI image layout as a side: the first image `index.json` names.
pub fn oci_side(root: &Path, name: &str) -> Result<Side, CompareError> {
    let bad = |reason: String| CompareError::malformed(root, "OCI layout", reason);
    let read_json = |path: PathBuf| -> Result<serde_json::Value, CompareError> {
        let bytes = std::fs::read(&path).map_err(|e| CompareError::io(path.clone(), e))?;
        serde_json::from_slice(&bytes).map_err(|e| CompareError::malformed(path, "OCI layout", e))
    };
    let blob = |digest: &serde_json::Value| -> Result<PathBuf, CompareError> {
        let digest = digest.as_str().unwrap_or_default();
        let hex = digest
            .strip_prefix("sha256:")
            .filter(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| bad(format!("unsupported digest {digest:?}")))?;
        Ok(root.join("blobs").join("sha256").join(hex))
    };
    let mut document = read_json(root.join("index.json"))?;
    // An index may name another index first.
    for _ in 0..4 {
        let first = document["manifests"][0].clone();
        if first.is_null() {
            if document["layers"].is_array() {
                break;
            }
            return Err(bad("index.json names no image".to_string()));
        }
        document = read_json(blob(&first["digest"])?)?;
        if document["layers"].is_array() {
            break;
        }
    }
    let layers = document["layers"]
        .as_array()
        .ok_or_else(|| bad("no image manifest with layers".to_string()))?;
    let mut entries = BTreeMap::new();
    let mut machines = Vec::new();
    for layer in layers {
        apply_tar_layer(&blob(&layer["digest"])?, &mut entries, &mut machines)?;
    }
    let declared = document["config"]["digest"]
        .as_str()
        .and_then(|_| blob(&document["config"]["digest"]).ok())
        .and_then(|path| read_json(path).ok())
        .and_then(|config| config["architecture"].as_str().map(super::normalize_arch));
    Ok(without_mount_dirs(
        Side {
            kind: SideKind::Oci,
            name: name.to_string(),
            arch: declared.or_else(|| majority_arch(machines.into_iter())),
            entries: entries.into_values().collect(),
            packages: None,
        }
        .finish(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::ScratchDir;

    #[test]
    fn tar_names_become_absolute_paths() {
        assert_eq!(tar_path(b"./usr/bin/"), b"/usr/bin");
        assert_eq!(tar_path(b"."), b"/");
        assert_eq!(tar_path(b"etc/hosts"), b"/etc/hosts");
    }

    #[test]
    fn a_tar_side_has_hashes_links_and_whiteouts() -> Result<(), Box<dyn std::error::Error>> {
        let scratch = ScratchDir::new("compare-tar");
        let path = scratch.root().join("t.tar");
        let mut builder = tar::Builder::new(File::create(&path)?);
        let mut add = |name: &str, kind: tar::EntryType, data: &[u8], link: Option<&str>| {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(kind);
            header.set_mode(0o644);
            header.set_size(data.len() as u64);
            if let Some(link) = link {
                header.set_link_name(link)?;
            }
            header.set_cksum();
            builder.append_data(&mut header, name, data)
        };
        add("./etc/", tar::EntryType::Directory, b"", None)?;
        add("./etc/hosts", tar::EntryType::Regular, b"hello", None)?;
        add(
            "./etc/again",
            tar::EntryType::Link,
            b"",
            Some("./etc/hosts"),
        )?;
        add("./etc/link", tar::EntryType::Symlink, b"", Some("hosts"))?;
        add("./etc/old", tar::EntryType::Regular, b"x", None)?;
        add("./etc/.wh.old", tar::EntryType::Regular, b"", None)?;
        builder.into_inner()?;
        let side = tar_side(&path, "t")?;
        let hosts = side.get(b"/etc/hosts").ok_or("no hosts")?;
        assert_eq!(hosts.size, Some(5));
        assert_eq!(
            hosts.sha256,
            Some(super::super::hash::hash_reader(b"hello".as_slice())?.sha256)
        );
        assert_eq!(
            side.get(b"/etc/again").map(|e| e.sha256),
            Some(hosts.sha256)
        );
        assert_eq!(
            side.get(b"/etc/link").and_then(|e| e.target.clone()),
            Some(b"hosts".to_vec())
        );
        assert!(side.get(b"/etc/old").is_none());
        assert!(side.get(b"/etc").is_some());
        Ok(())
    }
}
