//! Language packages the set's files belong to, read from the source tree: Python
//! distributions (`*.dist-info` next to the set's files in a `site-packages` or
//! `dist-packages` directory: `METADATA` gives the name and version, `RECORD` the files it
//! installed), npm packages (`node_modules/NAME/package.json`, `@scope/NAME` too: the files
//! below that directory, a nested `node_modules` belonging to the nested package) and Maven
//! artifacts (`META-INF/maven/GROUP/ARTIFACT/pom.properties` inside a jar of the set, or in an
//! exploded tree whose `pom.properties` is in the set). A package is listed only when some
//! path of the set belongs to it. Unreadable metadata is skipped, not an error: this is a
//! description of the set, and the files are classified (and shipped) by dpkg's rules anyway.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::analysis::closure::DeploymentSet;
use crate::analysis::names::NameBuf;
use crate::analysis::paths::is_within;
use crate::record::FileKind;

/// A Python distribution, npm package or Maven artifact.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LanguagePackage {
    /// `python`, `npm` or `maven`.
    pub ecosystem: &'static str,
    /// The distribution's or package's name; `groupId:artifactId` for Maven.
    pub name: String,
    pub version: String,
    /// The `.dist-info` directory, the package's directory, the jar, or the directory that
    /// holds `META-INF`.
    pub location: NameBuf,
    /// The paths of the set it accounts for.
    pub files: Vec<NameBuf>,
}

fn host(root: &Path, path: &[u8]) -> PathBuf {
    root.join(OsStr::from_bytes(path.strip_prefix(b"/").unwrap_or(path)))
}

/// Every language package some path of `set` belongs to, sorted by ecosystem, name, location.
pub fn find(root: &Path, set: &DeploymentSet) -> Vec<LanguagePackage> {
    let mut found = python(root, set);
    found.extend(npm(root, set));
    found.extend(maven(root, set));
    found.sort_by(|a, b| {
        (a.ecosystem, &a.name, &a.location).cmp(&(b.ecosystem, &b.name, &b.location))
    });
    found
}

fn components(path: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    // (end offset of the component, component)
    let mut start = 0;
    path.split(|&b| b == b'/').map(move |c| {
        let end = start + c.len();
        start = end + 1;
        (end, c)
    })
}

/// Headers of an RFC 822-like file (METADATA, pom.properties as `key=value`).
fn header_value(text: &str, key: &str, separator: char) -> Option<String> {
    text.lines()
        .take_while(|l| separator != ':' || !l.is_empty())
        .find_map(|line| {
            let (k, v) = line.split_once(separator)?;
            (k.trim() == key).then(|| v.trim().to_string())
        })
}

fn python(root: &Path, set: &DeploymentSet) -> Vec<LanguagePackage> {
    let mut site_dirs: BTreeSet<Vec<u8>> = BTreeSet::new();
    for entry in &set.entries {
        for (end, c) in components(&entry.path) {
            if c == b"site-packages" || c == b"dist-packages" {
                site_dirs.insert(entry.path[..end].to_vec());
            }
        }
    }
    let in_set: BTreeSet<&[u8]> = set.entries.iter().map(|e| e.path.as_slice()).collect();
    let mut found = Vec::new();
    for dir in site_dirs {
        let Ok(entries) = std::fs::read_dir(host(root, &dir)) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            if !name.as_bytes().ends_with(b".dist-info") {
                continue;
            }
            let mut info = dir.clone();
            info.push(b'/');
            info.extend_from_slice(name.as_bytes());
            let Ok(metadata) = std::fs::read_to_string(host(root, &info).join("METADATA")) else {
                continue;
            };
            let (Some(dist), Some(version)) = (
                header_value(&metadata, "Name", ':'),
                header_value(&metadata, "Version", ':'),
            ) else {
                continue;
            };
            let record =
                std::fs::read_to_string(host(root, &info).join("RECORD")).unwrap_or_default();
            let mut files: BTreeSet<Vec<u8>> = BTreeSet::new();
            for line in record.lines() {
                let rel = record_path(line);
                if rel.is_empty() {
                    continue;
                }
                let mut path = dir.clone();
                path.push(b'/');
                path.extend_from_slice(rel.as_bytes());
                let path = crate::analysis::paths::normalize_mirror_path(&path);
                if in_set.contains(path.as_slice()) {
                    files.insert(path);
                }
            }
            for entry in set.entries.iter().filter(|e| is_within(&e.path, &info)) {
                files.insert(entry.path.clone());
            }
            if files.is_empty() {
                continue;
            }
            found.push(LanguagePackage {
                ecosystem: "python",
                name: dist,
                version,
                location: NameBuf(info),
                files: files.into_iter().map(NameBuf).collect(),
            });
        }
    }
    found
}

/// The first field of a RECORD line (CSV: a path with a comma is quoted).
fn record_path(line: &str) -> String {
    if let Some(rest) = line.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = rest.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    chars.next();
                    out.push('"');
                } else {
                    break;
                }
            } else {
                out.push(c);
            }
        }
        out
    } else {
        line.split(',').next().unwrap_or("").to_string()
    }
}

fn npm(root: &Path, set: &DeploymentSet) -> Vec<LanguagePackage> {
    // Package directory -> paths of the set below it (the innermost package wins).
    let mut packages: BTreeMap<Vec<u8>, Vec<Vec<u8>>> = BTreeMap::new();
    for entry in &set.entries {
        let parts: Vec<(usize, &[u8])> = components(&entry.path).collect();
        let mut dir = None;
        for (i, (_, c)) in parts.iter().enumerate() {
            if *c != b"node_modules" {
                continue;
            }
            let name_ix = match parts.get(i + 1) {
                Some((_, scope)) if scope.starts_with(b"@") => i + 2,
                _ => i + 1,
            };
            if let Some((end, _)) = parts.get(name_ix) {
                dir = Some(entry.path[..*end].to_vec());
            }
        }
        if let Some(dir) = dir {
            packages.entry(dir).or_default().push(entry.path.clone());
        }
    }
    let mut found = Vec::new();
    for (dir, files) in packages {
        let Ok(text) = std::fs::read(host(root, &dir).join("package.json")) else {
            continue;
        };
        let Ok(json) = serde_json::from_slice::<serde_json::Value>(&text) else {
            continue;
        };
        let (Some(name), Some(version)) = (
            json.get("name").and_then(|v| v.as_str()),
            json.get("version").and_then(|v| v.as_str()),
        ) else {
            continue;
        };
        found.push(LanguagePackage {
            ecosystem: "npm",
            name: name.to_string(),
            version: version.to_string(),
            location: NameBuf(dir),
            files: files.into_iter().map(NameBuf).collect(),
        });
    }
    found
}

fn maven_package(text: &str, location: Vec<u8>, files: Vec<Vec<u8>>) -> Option<LanguagePackage> {
    let group = header_value(text, "groupId", '=')?;
    let artifact = header_value(text, "artifactId", '=')?;
    let version = header_value(text, "version", '=')?;
    Some(LanguagePackage {
        ecosystem: "maven",
        name: format!("{group}:{artifact}"),
        version,
        location: NameBuf(location),
        files: files.into_iter().map(NameBuf).collect(),
    })
}

fn maven(root: &Path, set: &DeploymentSet) -> Vec<LanguagePackage> {
    let mut found = Vec::new();
    for entry in set.entries.iter().filter(|e| e.kind == FileKind::File) {
        if entry.path.ends_with(b".jar") || entry.path.ends_with(b".war") {
            for text in jar_pom_properties(&host(root, &entry.path)) {
                found.extend(maven_package(
                    &text,
                    entry.path.clone(),
                    vec![entry.path.clone()],
                ));
            }
        } else if entry.path.ends_with(b"/pom.properties") {
            let Some(at) = find_subslice(&entry.path, b"/META-INF/maven/") else {
                continue;
            };
            let base = entry.path[..at].to_vec();
            let Ok(text) = std::fs::read_to_string(host(root, &entry.path)) else {
                continue;
            };
            let files = set
                .entries
                .iter()
                .filter(|e| e.kind != FileKind::Dir && is_within(&e.path, &base))
                .map(|e| e.path.clone())
                .collect();
            found.extend(maven_package(&text, base, files));
        }
    }
    found
}

fn find_subslice(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn u16_at(b: &[u8], at: usize) -> Option<usize> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?) as usize)
}

fn u32_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?) as u64)
}

/// The `META-INF/maven/**/pom.properties` entries of a zip file (stored or deflated; no
/// zip64), read through its central directory.
pub fn jar_pom_properties(path: &Path) -> Vec<String> {
    read_jar(path).unwrap_or_default()
}

fn read_jar(path: &Path) -> Option<Vec<String>> {
    let mut file = std::fs::File::open(path).ok()?;
    let size = file.metadata().ok()?.len();
    let tail_len = size.min(65_557);
    file.seek(SeekFrom::Start(size - tail_len)).ok()?;
    let mut tail = vec![0u8; tail_len as usize];
    file.read_exact(&mut tail).ok()?;
    let eocd = (0..tail.len().saturating_sub(21))
        .rev()
        .find(|&i| tail[i..].starts_with(&[0x50, 0x4b, 0x05, 0x06]))?;
    let entries = u16_at(&tail, eocd + 10)?;
    let cd_size = u32_at(&tail, eocd + 12)?;
    let cd_offset = u32_at(&tail, eocd + 16)?;
    if cd_size > 64 << 20 {
        return None;
    }
    file.seek(SeekFrom::Start(cd_offset)).ok()?;
    let mut cd = vec![0u8; cd_size as usize];
    file.read_exact(&mut cd).ok()?;
    let mut out = Vec::new();
    let mut at = 0;
    for _ in 0..entries {
        if !cd.get(at..)?.starts_with(&[0x50, 0x4b, 0x01, 0x02]) {
            break;
        }
        let method = u16_at(&cd, at + 10)?;
        let compressed = u32_at(&cd, at + 20)?;
        let name_len = u16_at(&cd, at + 28)?;
        let extra_len = u16_at(&cd, at + 30)?;
        let comment_len = u16_at(&cd, at + 32)?;
        let local = u32_at(&cd, at + 42)?;
        let name = cd.get(at + 46..at + 46 + name_len)?;
        if name.starts_with(b"META-INF/maven/")
            && name.ends_with(b"/pom.properties")
            && compressed < 1 << 20
        {
            if let Some(text) = read_member(&mut file, local, compressed, method) {
                out.push(text);
            }
        }
        at += 46 + name_len + extra_len + comment_len;
    }
    Some(out)
}

fn read_member(file: &mut std::fs::File, local: u64, size: u64, method: usize) -> Option<String> {
    let mut head = [0u8; 30];
    file.seek(SeekFrom::Start(local)).ok()?;
    file.read_exact(&mut head).ok()?;
    if !head.starts_with(&[0x50, 0x4b, 0x03, 0x04]) {
        return None;
    }
    let skip = u16_at(&head, 26)? + u16_at(&head, 28)?;
    file.seek(SeekFrom::Current(skip as i64)).ok()?;
    let mut data = vec![0u8; size as usize];
    file.read_exact(&mut data).ok()?;
    let mut text = String::new();
    match method {
        0 => text = String::from_utf8(data).ok()?,
        8 => {
            flate2::read::DeflateDecoder::new(data.as_slice())
                .take(1 << 20)
                .read_to_string(&mut text)
                .ok()?;
        }
        _ => return None,
    }
    Some(text)
}
