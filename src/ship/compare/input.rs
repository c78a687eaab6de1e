//! Which kind of input a path is, from what it holds (never from its name): a directory with
//! an `oci-layout` file is an OCI layout, another directory an exported tree; a file whose
//! first value is a depsetfs log header is a log (a log of an unreadable version is an error
//! here, not "unrecognized"); a JSON document with the manifest format key is a manifest, one
//! shaped like `dump --set --json` a saved set; a tar (or gzip'ed tar) is a tar. Anything else
//! is one clear error.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use super::manifest::{MANIFEST_TAG, read_manifest};
use super::saved_set::{Probe, read_saved_set};
use super::tree::{is_gzip, is_tar, oci_side, tar_side};
use super::{CompareError, Side, SideKind};
use crate::log::{LogError, LogReader};

/// What [`detect`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputKind {
    Log,
    Side(SideKind),
}

/// Tells what `path` is.
pub fn detect(path: &Path) -> Result<InputKind, CompareError> {
    let meta = std::fs::metadata(path).map_err(|e| CompareError::io(path, e))?;
    if meta.is_dir() {
        if path.join("oci-layout").is_file() && path.join("index.json").is_file() {
            return Ok(InputKind::Side(SideKind::Oci));
        }
        // Readable at all?
        std::fs::read_dir(path).map_err(|e| CompareError::io(path, e))?;
        return Ok(InputKind::Side(SideKind::Directory));
    }
    let mut head = vec![0u8; 4096];
    let n = File::open(path)
        .and_then(|mut file| read_up_to(&mut file, &mut head))
        .map_err(|e| CompareError::io(path, e))?;
    let head = &head[..n];
    match LogReader::open(path) {
        Ok(_) => return Ok(InputKind::Log),
        Err(LogError::NotALog { .. }) | Err(LogError::Corrupt { .. }) => {}
        Err(other @ LogError::UnsupportedVersion { .. }) => {
            return Err(CompareError::Usage {
                what: path.display().to_string(),
                reason: other
                    .to_string()
                    .trim_start_matches(&format!("{}: ", path.display()))
                    .to_string(),
            });
        }
        Err(_) => {}
    }
    if is_tar(head) || is_gzip(head) {
        return Ok(InputKind::Side(SideKind::Tar));
    }
    let text = head.iter().copied().find(|b| !b.is_ascii_whitespace());
    if text == Some(b'{') {
        let bytes = super::manifest::read_all(path)?;
        let probe: Probe =
            serde_json::from_slice(&bytes).map_err(|_| CompareError::Unrecognized {
                path: path.to_path_buf(),
            })?;
        if probe
            .format
            .as_deref()
            .is_some_and(|f| f.starts_with(MANIFEST_TAG))
        {
            return Ok(InputKind::Side(SideKind::Manifest));
        }
        if probe.is_set() {
            return Ok(InputKind::Side(SideKind::SavedSet));
        }
    }
    Err(CompareError::Unrecognized {
        path: path.to_path_buf(),
    })
}

fn read_up_to(file: &mut File, buffer: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match file.read(&mut buffer[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// Reads a side that is not a log (a log needs its plan: the caller makes it).
pub fn read_side(
    path: &Path,
    kind: SideKind,
    name: &str,
    threads: usize,
) -> Result<Side, CompareError> {
    match kind {
        SideKind::Manifest => read_manifest(path, name).map(|(side, _)| side),
        SideKind::SavedSet => read_saved_set(path, name),
        SideKind::Directory => super::manifest::directory_side(path, name, threads),
        SideKind::Tar => tar_side(path, name),
        SideKind::Oci => oci_side(path, name),
        SideKind::Log => Err(CompareError::Usage {
            what: name.to_string(),
            reason: "a log is read through its plan".to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::ScratchDir;

    #[test]
    fn inputs_are_told_apart_by_content() -> Result<(), Box<dyn std::error::Error>> {
        let scratch = ScratchDir::new("compare-detect");
        let root = scratch.root();
        let write = |name: &str, bytes: &[u8]| {
            let path = root.join(name);
            std::fs::write(&path, bytes).map(|()| path)
        };
        let manifest = write(
            "m.json",
            br#"{"format": "depsetfs-manifest 1", "entries": []}"#,
        )?;
        let set = write("s.json", br#"{"entries": [], "strategy": "strict"}"#)?;
        let random = write("r.bin", b"\x00\x01 not anything")?;
        let other_json = write("o.json", br#"{"hello": 1}"#)?;
        let oci = root.join("image");
        std::fs::create_dir(&oci)?;
        std::fs::write(oci.join("oci-layout"), "{}")?;
        std::fs::write(oci.join("index.json"), "{}")?;
        assert_eq!(detect(&manifest)?, InputKind::Side(SideKind::Manifest));
        assert_eq!(detect(&set)?, InputKind::Side(SideKind::SavedSet));
        assert_eq!(detect(&oci)?, InputKind::Side(SideKind::Oci));
        assert_eq!(detect(root)?, InputKind::Side(SideKind::Directory));
        for path in [random, other_json] {
            let error = detect(&path).err().map(|e| e.to_string());
            assert!(
                error
                    .as_deref()
                    .is_some_and(|e| e.contains("not a log, a saved set")),
                "{error:?}"
            );
        }
        let missing = detect(&root.join("nope")).err().map(|e| e.to_string());
        assert!(missing.is_some_and(|e| e.contains("No such file")));
        Ok(())
    }

    #[test]
    fn logs_are_recognised_and_a_future_log_version_is_one_clear_error()
    -> Result<(), Box<dyn std::error::Error>> {
        let scratch = ScratchDir::new("compare-detect-log");
        let mut header = crate::fixtures::header("/", "/mnt");
        let current = scratch.root().join("current.dlog");
        crate::log::LogWriter::create(&current, &header)?;
        assert_eq!(detect(&current)?, InputKind::Log);
        header.version = 99;
        let future = scratch.root().join("future.dlog");
        crate::log::LogWriter::create(&future, &header)?;
        let error = detect(&future).err().map(|e| e.to_string());
        assert!(
            error
                .as_deref()
                .is_some_and(|e| e.contains("log format version 99 is not supported")),
            "{error:?}"
        );
        Ok(())
    }
}
