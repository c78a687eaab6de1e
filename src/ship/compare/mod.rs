//! Sets as values to compare: `depsetfs manifest`, `diff`, `satisfies` and `export --against`.
//! Every input becomes a [`Side`], one sorted list of [`Entry`] values (a path with its kind,
//! mode, owner, size, content hash and symlink target, each present only when the input
//! knows it, the processes that needed it when the input is a log's set, and its package when
//! the input has package data: [`packages`]). A side comes from a log's set hashed in its
//! source tree ([`tree::set_side`]), a saved set ([`saved_set`]), a manifest of a target
//! ([`manifest`]), an exported directory, a tar or an OCI layout ([`tree`]);
//! [`input::detect`] tells which a path is. [`diff`] compares two sides
//! and [`satisfies`] a set with a target. It lives on the ship side because reading trees,
//! tars and images and hashing files is I/O on trees, like export; the analysis side only
//! supplies the set. Formats and exit codes: docs/set-algebra.md.

pub mod diff;
pub mod hash;
pub mod input;
pub mod manifest;
pub mod packages;
pub mod satisfies;
pub mod saved_set;
pub mod tree;

use std::path::PathBuf;

use serde::Serialize;

use crate::analysis::names::{JsonName, escape};
use crate::record::FileKind;

/// What went wrong reading or comparing inputs: each names the input and says what it is not.
#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{}: not a log, a saved set (dump --set --json), a manifest, an exported directory, a tar or an OCI layout",
        path.display()
    )]
    Unrecognized { path: PathBuf },
    #[error("{}: {what}: {reason}", path.display())]
    Malformed {
        path: PathBuf,
        what: &'static str,
        reason: String,
    },
    #[error(
        "{}: {what} format version {found} is newer than this depsetfs reads (up to {supported}); use a newer depsetfs",
        path.display()
    )]
    FutureVersion {
        path: PathBuf,
        what: &'static str,
        found: u32,
        supported: u32,
    },
    #[error(
        "{}: a manifest made on {target}, but the set's programs are built for {set}: compare with a manifest of the same architecture",
        path.display()
    )]
    Architecture {
        path: PathBuf,
        target: String,
        set: String,
    },
    #[error("{}: {what} is not a manifest (make one with `depsetfs manifest`)", path.display())]
    NotAManifest { path: PathBuf, what: &'static str },
    #[error(transparent)]
    Packages(#[from] crate::analysis::packages::PackageError),
    #[error("{what}: {reason}")]
    Usage { what: String, reason: String },
}

impl CompareError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> CompareError {
        CompareError::Io {
            path: path.into(),
            source,
        }
    }

    pub fn malformed(path: impl Into<PathBuf>, what: &'static str, reason: impl ToString) -> Self {
        CompareError::Malformed {
            path: path.into(),
            what,
            reason: reason.to_string(),
        }
    }
}

/// A sha256 digest.
pub type Sha256 = [u8; 32];

/// Lowercase hex of a digest.
pub fn hex(digest: &Sha256) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// A digest from its hex form.
pub fn unhex(text: &str) -> Option<Sha256> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// One path of a side. Fields an input does not know are `None` and never compared.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Entry {
    /// Normalized absolute path (`/usr/bin/ls`).
    pub path: Vec<u8>,
    pub kind: FileKind,
    /// Permission bits with setuid, setgid and sticky (the low 12 bits of `st_mode`).
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// Bytes of a regular file or a symlink's target (directories and others: none).
    pub size: Option<u64>,
    /// Content of a regular file.
    pub sha256: Option<Sha256>,
    /// A symlink's target text.
    pub target: Option<Vec<u8>>,
    /// The process images that used the path (a log's set: `exe (pid N)`), else empty.
    pub needed_by: Vec<String>,
    /// The package that owns the path (its apt name), when the input has package data
    /// ([`packages`]).
    pub package: Option<String>,
}

/// Which kind of input a side came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SideKind {
    Log,
    SavedSet,
    Manifest,
    Directory,
    Tar,
    Oci,
}

impl SideKind {
    pub fn name(self) -> &'static str {
        match self {
            SideKind::Log => "log",
            SideKind::SavedSet => "saved set",
            SideKind::Manifest => "manifest",
            SideKind::Directory => "directory",
            SideKind::Tar => "tar",
            SideKind::Oci => "OCI layout",
        }
    }
}

/// One input of a comparison, its entries sorted by path (unique).
#[derive(Clone, Debug)]
pub struct Side {
    pub kind: SideKind,
    /// The input as the user named it (for messages).
    pub name: String,
    /// The machine architecture in `uname -m` terms (normalized by [`normalize_arch`]): the
    /// one a manifest declares, else the one most ELF files of the side are built for.
    pub arch: Option<String>,
    pub entries: Vec<Entry>,
    /// The packages installed where the side's paths come from (a manifest's target, a log's
    /// source tree), when the input has package data.
    pub packages: Option<Vec<packages::InstalledPackage>>,
}

impl Side {
    pub fn get(&self, path: &[u8]) -> Option<&Entry> {
        self.entries
            .binary_search_by(|entry| entry.path.as_slice().cmp(path))
            .ok()
            .map(|at| &self.entries[at])
    }

    /// Sorts by path and keeps the last entry of a path (a tar may name a path twice).
    pub fn finish(mut self) -> Side {
        // Sets and manifests are written sorted: checking is one pass, sorting many.
        if !self.entries.is_sorted_by(|a, b| a.path <= b.path) {
            self.entries.sort_by(|a, b| a.path.cmp(&b.path));
        }
        let mut unique: Vec<Entry> = Vec::with_capacity(self.entries.len());
        for entry in self.entries {
            match unique.last_mut() {
                Some(last) if last.path == entry.path => *last = entry,
                _ => unique.push(entry),
            }
        }
        self.entries = unique;
        self
    }
}

/// `uname -m` names, one per architecture: `i686` and friends are `i386`, `armv7l` is `arm`.
pub fn normalize_arch(machine: &str) -> String {
    match machine {
        "i386" | "i486" | "i586" | "i686" | "x86" => "i386".to_string(),
        "amd64" | "x86_64" => "x86_64".to_string(),
        "arm64" | "aarch64" => "aarch64".to_string(),
        m if m.starts_with("armv") || m == "arm" => "arm".to_string(),
        other => other.to_string(),
    }
}

/// The architecture of an ELF `e_machine`, in [`normalize_arch`] terms.
pub fn elf_machine_arch(machine: u16) -> Option<&'static str> {
    Some(match machine {
        3 => "i386",
        8 => "mips",
        20 => "ppc",
        21 => "ppc64",
        22 => "s390x",
        40 => "arm",
        62 => "x86_64",
        183 => "aarch64",
        243 => "riscv64",
        258 => "loongarch64",
        _ => return None,
    })
}

/// The octal text of a mode (`0755`).
pub fn mode_text(mode: u32) -> String {
    format!("{mode:04o}")
}

/// One line's worth of an entry: `file 0644 0:0 1234 bytes`.
pub fn describe_entry(entry: &Entry) -> String {
    let mut parts = vec![entry.kind.name().to_string()];
    if let Some(mode) = entry.mode {
        parts.push(mode_text(mode));
    }
    if let (Some(uid), Some(gid)) = (entry.uid, entry.gid) {
        parts.push(format!("{uid}:{gid}"));
    }
    if let Some(size) = entry.size.filter(|_| entry.kind == FileKind::File) {
        parts.push(format!("{size} bytes"));
    }
    if let Some(target) = &entry.target {
        parts.push(format!("-> {}", escape(target)));
    }
    parts.join(" ")
}

/// An entry as JSON (the fields a manifest entry has, plus `needed_by` and `package`).
#[derive(Serialize)]
pub struct EntryJson<'a> {
    pub path: JsonName<'a>,
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<JsonName<'a>>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    pub needed_by: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub package: Option<&'a str>,
}

impl<'a> EntryJson<'a> {
    pub fn new(entry: &'a Entry) -> EntryJson<'a> {
        EntryJson {
            path: JsonName(&entry.path),
            kind: entry.kind.name(),
            mode: entry.mode.map(mode_text),
            uid: entry.uid,
            gid: entry.gid,
            size: entry.size,
            sha256: entry.sha256.as_ref().map(hex),
            target: entry.target.as_deref().map(JsonName),
            needed_by: &entry.needed_by,
            package: entry.package.as_deref(),
        }
    }
}

/// A file kind from its name in JSON (`file`, `dir`, ...).
pub fn kind_from_name(name: &str) -> Option<FileKind> {
    Some(match name {
        "unknown" => FileKind::Unknown,
        "file" => FileKind::File,
        "dir" => FileKind::Dir,
        "symlink" => FileKind::Symlink,
        "fifo" => FileKind::Fifo,
        "socket" => FileKind::Socket,
        "chardevice" => FileKind::CharDevice,
        "blockdevice" => FileKind::BlockDevice,
        _ => return None,
    })
}

/// A name read back from JSON as [`JsonName`] writes it: a string, or
/// `{"bytes": [...], "lossy": "..."}`. Deserialized directly (no intermediate value): a
/// manifest has a million of them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NameField(pub Vec<u8>);

impl<'de> serde::Deserialize<'de> for NameField {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = NameField;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a name: a string or {\"bytes\": [...]}")
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<NameField, E> {
                Ok(NameField(text.as_bytes().to_vec()))
            }

            fn visit_string<E: serde::de::Error>(self, text: String) -> Result<NameField, E> {
                Ok(NameField(text.into_bytes()))
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<NameField, A::Error> {
                let mut bytes = None;
                while let Some(key) = map.next_key::<String>()? {
                    if key == "bytes" {
                        bytes = Some(map.next_value::<Vec<u8>>()?);
                    } else {
                        map.next_value::<serde::de::IgnoredAny>()?;
                    }
                }
                bytes
                    .map(NameField)
                    .ok_or_else(|| serde::de::Error::missing_field("bytes"))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_round_trip_through_hex() {
        let digest: Sha256 = std::array::from_fn(|i| i as u8 * 7);
        assert_eq!(unhex(&hex(&digest)), Some(digest));
        assert_eq!(unhex("zz"), None);
    }

    #[test]
    fn architectures_have_one_name() {
        assert_eq!(normalize_arch("i686"), "i386");
        assert_eq!(normalize_arch("arm64"), "aarch64");
        assert_eq!(elf_machine_arch(62), Some("x86_64"));
    }

    #[test]
    fn name_fields_deserialize_from_both_json_forms() -> serde_json::Result<()> {
        let plain: NameField = serde_json::from_str(r#""/usr/bin/ls""#)?;
        let bytes: NameField =
            serde_json::from_str(r#"{"bytes": [47, 99, 97, 102, 233], "lossy": "/caf?"}"#)?;
        assert_eq!(plain.0, b"/usr/bin/ls");
        assert_eq!(bytes.0, b"/caf\xe9");
        assert!(serde_json::from_str::<NameField>("3").is_err());
        Ok(())
    }
}
