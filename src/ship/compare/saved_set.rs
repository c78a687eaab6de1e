//! Reading a saved set, the document `depsetfs dump --set --json` writes: version 1 has
//! `"format": "depsetfs-set 1"`; a document without the key is version 0 (the same shape, made
//! before the key existed). Both give each entry's path, kind, size (files and symlinks) and
//! the processes that used it; a newer version is refused. Fields added later (`runs`) are
//! ignored here.

use std::path::Path;

use serde::Deserialize;

use super::manifest::read_all;
use super::{CompareError, Entry, NameField, Side, SideKind, kind_from_name};
use crate::record::FileKind;

/// The format key's word; the document says `depsetfs-set N`
/// ([`crate::analysis::dump::SAVED_SET_FORMAT`]).
pub const SET_TAG: &str = "depsetfs-set";
/// The newest version read.
pub const SET_VERSION: u32 = 1;

#[derive(Deserialize)]
struct DocumentIn {
    format: Option<String>,
    entries: Vec<EntryIn>,
}

#[derive(Deserialize)]
struct EntryIn {
    path: NameField,
    kind: String,
    #[serde(default)]
    size: u64,
    #[serde(default)]
    users: Vec<UserIn>,
}

#[derive(Deserialize)]
struct UserIn {
    pid: u32,
    exe: String,
}

/// The top-level keys that tell JSON inputs apart, read without building the document.
#[derive(Deserialize)]
pub struct Probe {
    pub format: Option<String>,
    pub entries: Option<serde::de::IgnoredAny>,
    pub strategy: Option<serde::de::IgnoredAny>,
}

impl Probe {
    /// Whether the document looks like a saved set (the format key, or version 0's `entries`
    /// and `strategy`).
    pub fn is_set(&self) -> bool {
        let tagged = self
            .format
            .as_deref()
            .is_some_and(|f| f.starts_with(SET_TAG));
        tagged || (self.entries.is_some() && self.strategy.is_some())
    }
}

/// The version a `format` key names (none: 0).
pub fn set_version(path: &Path, format: Option<&str>) -> Result<u32, CompareError> {
    let Some(format) = format else {
        return Ok(0);
    };
    let version = format
        .strip_prefix(SET_TAG)
        .and_then(|rest| rest.strip_prefix(' '))
        .and_then(|v| v.trim().parse::<u32>().ok())
        .ok_or_else(|| {
            CompareError::malformed(path, "saved set", format!("bad format {format:?}"))
        })?;
    if version > SET_VERSION {
        return Err(CompareError::FutureVersion {
            path: path.to_path_buf(),
            what: "saved set",
            found: version,
            supported: SET_VERSION,
        });
    }
    Ok(version)
}

/// Reads a saved set as a side (kind and size known; no hashes, modes or owners).
pub fn read_saved_set(path: &Path, name: &str) -> Result<Side, CompareError> {
    let bytes = read_all(path)?;
    let document: DocumentIn = serde_json::from_slice(&bytes)
        .map_err(|e| CompareError::malformed(path, "saved set", e))?;
    set_version(path, document.format.as_deref())?;
    let mut entries = Vec::with_capacity(document.entries.len());
    for entry in document.entries {
        let kind = kind_from_name(&entry.kind).ok_or_else(|| {
            CompareError::malformed(path, "saved set", format!("unknown kind {:?}", entry.kind))
        })?;
        let entry_path = entry.path.0;
        let mut needed_by: Vec<String> = entry
            .users
            .iter()
            .map(|user| format!("{} (pid {})", user.exe, user.pid))
            .collect();
        needed_by.dedup();
        entries.push(Entry {
            path: entry_path,
            kind,
            size: matches!(kind, FileKind::File | FileKind::Symlink).then_some(entry.size),
            needed_by,
            ..Entry::default()
        });
    }
    Ok(Side {
        kind: SideKind::SavedSet,
        name: name.to_string(),
        arch: None,
        entries,
        packages: None,
    }
    .finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::ScratchDir;

    const VERSION_0: &str = r#"{
      "entries": [
        {"path": "/", "kind": "dir", "size": 0, "reason": "parent", "users": []},
        {"path": "/usr/bin/app", "kind": "file", "size": 1234, "reason": "used",
         "users": [{"pid": 42, "start": 7, "exe": "/usr/bin/app", "ops": ["open(read,exec)"]}]},
        {"path": {"bytes": [47, 99, 97, 102, 233], "lossy": "/caf\ufffd"}, "kind": "file", "size": 5, "reason": "used", "users": []}
      ],
      "required_devices": [], "dropped_missing": 0, "strategy": "strict",
      "needed": [], "stubs": [], "outputs": [], "excluded": []
    }"#;

    #[test]
    fn version_0_and_1_read_the_same() -> Result<(), Box<dyn std::error::Error>> {
        let scratch = ScratchDir::new("saved-set-versions");
        let old = scratch.root().join("old.json");
        let new = scratch.root().join("new.json");
        std::fs::write(&old, VERSION_0)?;
        std::fs::write(
            &new,
            VERSION_0.replacen('{', r#"{"format": "depsetfs-set 1", "#, 1),
        )?;
        let old = read_saved_set(&old, "old")?;
        let new = read_saved_set(&new, "new")?;
        assert_eq!(old.entries, new.entries);
        let app = old.get(b"/usr/bin/app").ok_or("no app")?;
        assert_eq!(app.size, Some(1234));
        assert_eq!(app.needed_by, ["/usr/bin/app (pid 42)"]);
        assert!(old.get(b"/caf\xe9").is_some());
        assert_eq!(old.get(b"/").map(|e| e.size), Some(None));
        Ok(())
    }

    #[test]
    fn the_set_dump_writes_is_read_back() -> Result<(), Box<dyn std::error::Error>> {
        assert!(crate::analysis::dump::SAVED_SET_FORMAT.starts_with(SET_TAG));
        let scratch = ScratchDir::new("saved-set-future");
        let path = scratch.root().join("s.json");
        std::fs::write(
            &path,
            VERSION_0.replacen('{', r#"{"format": "depsetfs-set 2", "#, 1),
        )?;
        let error = read_saved_set(&path, "s").err().map(|e| e.to_string());
        assert!(
            error
                .as_deref()
                .is_some_and(|e| e.contains("saved set format version 2 is newer")),
            "{error:?}"
        );
        Ok(())
    }
}
