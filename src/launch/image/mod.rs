//! OCI image layouts as `run --image` reads them: the reference (`LAYOUT[:TAG]`), `index.json`
//! (the manifest picked by its `org.opencontainers.image.ref.name`), the manifest, the config
//! (environment, user, working directory, entrypoint and command, exposed ports) and the
//! layers, every blob checked against its sha256 digest before it is used. [`unpack`] applies
//! the layers in order into a fresh root under the state directory (`images/`), the tree `run`
//! then mirrors like a `--source`. It lives in `launch/` because `run` needs it before anything
//! is mounted; `ship/export` reads the original config back through [`original_config`] to
//! keep it in the debloated image. It imports only `record.rs`, `state.rs` and `sys/`.

pub mod unpack;

use std::ffi::OsString;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::record::{TracedImage, now_ns, utc_stamp};
use crate::state::StateDir;

/// The annotation that names an image in `index.json`.
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";
/// The tag used when none is given and the layout holds several images.
pub const DEFAULT_TAG: &str = "latest";

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{}: not an OCI image layout: cannot read {file}: {source}", layout.display())]
    NoLayout {
        layout: PathBuf,
        file: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("{}: no image tagged {tag:?} (tags there: {})", layout.display(), list(tags))]
    UnknownTag {
        layout: PathBuf,
        tag: String,
        tags: Vec<String>,
    },
    #[error("{}: {count} images and none tagged \"latest\": name one as {}:TAG (tags there: {})", layout.display(), layout.display(), list(tags))]
    WhichImage {
        layout: PathBuf,
        count: usize,
        tags: Vec<String>,
    },
    #[error("{}: {what}: {message}", layout.display())]
    Invalid {
        layout: PathBuf,
        what: String,
        message: String,
    },
    #[error("{}: cannot read blob {digest}: {source}", layout.display())]
    Blob {
        layout: PathBuf,
        digest: String,
        #[source]
        source: io::Error,
    },
    #[error("{}: blob {digest} is corrupt: its content hashes to {actual} ({size} bytes)", layout.display())]
    DigestMismatch {
        layout: PathBuf,
        digest: String,
        actual: String,
        size: u64,
    },
    #[error("{}: layer {digest}: member {member:?} {why}", layout.display())]
    Escape {
        layout: PathBuf,
        digest: String,
        member: String,
        why: &'static str,
    },
    #[error("{}: cannot {action}: {source}", path.display())]
    Unpack {
        path: PathBuf,
        action: String,
        #[source]
        source: io::Error,
    },
}

fn list(tags: &[String]) -> String {
    if tags.is_empty() {
        "none".to_owned()
    } else {
        tags.join(", ")
    }
}

/// `LAYOUT[:TAG]`: the tag is what follows the last `:` when the whole is not a directory
/// itself and that part holds no `/`.
pub fn parse_reference(reference: &Path) -> (PathBuf, Option<String>) {
    if reference.is_dir() {
        return (reference.to_path_buf(), None);
    }
    let bytes = reference.as_os_str().as_bytes();
    match bytes.iter().rposition(|&b| b == b':') {
        Some(at) if at > 0 && !bytes[at + 1..].contains(&b'/') && at + 1 < bytes.len() => (
            PathBuf::from(std::ffi::OsStr::from_bytes(&bytes[..at])),
            Some(String::from_utf8_lossy(&bytes[at + 1..]).into_owned()),
        ),
        _ => (reference.to_path_buf(), None),
    }
}

/// A layer as the manifest lists it.
#[derive(Clone, Debug)]
pub struct Layer {
    pub digest: String,
    pub media_type: String,
    pub size: u64,
}

/// One image of a layout: its manifest's digest, its config and its layers, all verified.
#[derive(Clone, Debug)]
pub struct Image {
    pub layout: PathBuf,
    pub tag: Option<String>,
    pub manifest_digest: String,
    pub config_digest: String,
    /// The whole config blob (`config`, `rootfs`, `history`, …).
    pub config: Value,
    pub layers: Vec<Layer>,
}

impl Image {
    /// Opens the image `reference` names (`LAYOUT[:TAG]`).
    pub fn open(reference: &Path) -> Result<Image, ImageError> {
        let (layout, tag) = parse_reference(reference);
        let layout = std::path::absolute(&layout).unwrap_or(layout);
        read_file(&layout, "oci-layout")?;
        let index = read_file(&layout, "index.json")?;
        let index = parse_json(&layout, "index.json", &index)?;
        let (manifest_ref, tag) = pick_manifest(&layout, &index, tag)?;
        let manifest_digest = string_field(&layout, "index.json", manifest_ref, "digest")?;
        let manifest = read_blob(&layout, &manifest_digest)?;
        let manifest = parse_json(&layout, &format!("manifest {manifest_digest}"), &manifest)?;
        if manifest.get("manifests").is_some() {
            return Err(invalid(
                &layout,
                format!("manifest {manifest_digest}"),
                "is an image index (a multi-platform image): not supported; pick one platform's manifest",
            ));
        }
        let what = format!("manifest {manifest_digest}");
        let config_ref = manifest
            .get("config")
            .ok_or_else(|| invalid(&layout, what.clone(), "has no config"))?;
        let config_digest = string_field(&layout, &what, config_ref, "digest")?;
        let config = read_blob(&layout, &config_digest)?;
        let config = parse_json(&layout, &format!("config {config_digest}"), &config)?;
        let layers = manifest
            .get("layers")
            .and_then(Value::as_array)
            .ok_or_else(|| invalid(&layout, what.clone(), "has no layers"))?
            .iter()
            .map(|layer| {
                Ok(Layer {
                    digest: string_field(&layout, &what, layer, "digest")?,
                    media_type: string_field(&layout, &what, layer, "mediaType")?,
                    size: layer.get("size").and_then(Value::as_u64).unwrap_or(0),
                })
            })
            .collect::<Result<Vec<_>, ImageError>>()?;
        Ok(Image {
            layout,
            tag,
            manifest_digest,
            config_digest,
            config,
            layers,
        })
    }

    /// The part of the config a container runtime reads (`Env`, `User`, `WorkingDir`, …).
    fn runtime(&self) -> &Value {
        self.config.get("config").unwrap_or(&Value::Null)
    }

    /// `Env` as `NAME=value` strings; a `PATH` when the image sets none.
    pub fn env(&self) -> Vec<String> {
        let mut env: Vec<String> = strings(self.runtime().get("Env"));
        if !env.iter().any(|e| e.starts_with("PATH=")) {
            env.push(format!("PATH={}", DEFAULT_PATH));
        }
        env
    }

    /// `WorkingDir`, `/` when unset.
    pub fn workdir(&self) -> String {
        match self.runtime().get("WorkingDir").and_then(Value::as_str) {
            Some(dir) if dir.starts_with('/') => dir.to_owned(),
            _ => "/".to_owned(),
        }
    }

    /// `User` as written in the config (`name`, `uid`, `uid:gid`, …), if set.
    pub fn user(&self) -> Option<String> {
        self.runtime()
            .get("User")
            .and_then(Value::as_str)
            .filter(|u| !u.is_empty())
            .map(str::to_owned)
    }

    /// `Entrypoint` followed by `Cmd`: what a runtime runs when given no command.
    pub fn default_command(&self) -> Vec<OsString> {
        let mut argv = strings(self.runtime().get("Entrypoint"));
        argv.extend(strings(self.runtime().get("Cmd")));
        argv.into_iter().map(OsString::from).collect()
    }

    /// What the log header records of this image.
    pub fn traced(&self) -> TracedImage {
        TracedImage {
            layout: self.layout.to_string_lossy().into_owned(),
            tag: self.tag.clone(),
            manifest: self.manifest_digest.clone(),
            config: self.config_digest.clone(),
        }
    }

    /// Unpacks the layers into a fresh root under `state`'s `images/` and returns its path.
    pub fn unpack_fresh(&self, state: &StateDir) -> Result<PathBuf, ImageError> {
        let images = state.root().join("images");
        let hex = self.manifest_digest.trim_start_matches("sha256:");
        let name = format!(
            "{}-{}-{}",
            utc_stamp((now_ns() / 1_000_000_000) as i64),
            &hex[..hex.len().min(12)],
            std::process::id()
        );
        let root = images.join(name).join("rootfs");
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root.parent().unwrap_or(&images))
            .map_err(unpack_error(&images, "create the image directory"))?;
        std::fs::DirBuilder::new()
            .mode(0o755)
            .create(&root)
            .map_err(unpack_error(&root, "create the image root"))?;
        self.unpack_into(&root)?;
        Ok(root)
    }

    /// Applies every layer, in order, onto `root`.
    pub fn unpack_into(&self, root: &Path) -> Result<(), ImageError> {
        for layer in &self.layers {
            unpack::apply_layer(&self.layout, layer, root)?;
        }
        Ok(())
    }
}

/// The `PATH` set when an image sets none (Debian's default for root).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The config of the image a log was traced from, read again from its layout and checked
/// against the digest the log recorded.
pub fn original_config(image: &TracedImage) -> Result<Value, ImageError> {
    let layout = PathBuf::from(&image.layout);
    let bytes = read_blob(&layout, &image.config)?;
    parse_json(&layout, &format!("config {}", image.config), &bytes)
}

fn strings(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn invalid(layout: &Path, what: impl Into<String>, message: impl Into<String>) -> ImageError {
    ImageError::Invalid {
        layout: layout.to_path_buf(),
        what: what.into(),
        message: message.into(),
    }
}

pub(crate) fn unpack_error(
    path: &Path,
    action: &str,
) -> impl FnOnce(io::Error) -> ImageError + use<> {
    let path = path.to_path_buf();
    let action = action.to_owned();
    move |source| ImageError::Unpack {
        path,
        action,
        source,
    }
}

fn read_file(layout: &Path, file: &'static str) -> Result<Vec<u8>, ImageError> {
    std::fs::read(layout.join(file)).map_err(|source| ImageError::NoLayout {
        layout: layout.to_path_buf(),
        file,
        source,
    })
}

fn parse_json(layout: &Path, what: &str, bytes: &[u8]) -> Result<Value, ImageError> {
    serde_json::from_slice(bytes).map_err(|e| invalid(layout, what, format!("not JSON: {e}")))
}

fn string_field(layout: &Path, what: &str, value: &Value, key: &str) -> Result<String, ImageError> {
    value
        .get(key)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| invalid(layout, what, format!("no {key:?} string")))
}

/// The manifest descriptor the tag names: the given tag, else the only image, else `latest`.
fn pick_manifest<'a>(
    layout: &Path,
    index: &'a Value,
    tag: Option<String>,
) -> Result<(&'a Value, Option<String>), ImageError> {
    let manifests = index
        .get("manifests")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid(layout, "index.json", "no \"manifests\" list"))?;
    let tag_of = |m: &Value| {
        m.get("annotations")
            .and_then(|a| a.get(REF_NAME_ANNOTATION))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let tags: Vec<String> = manifests.iter().filter_map(tag_of).collect();
    let wanted = match tag {
        Some(tag) => tag,
        None if manifests.len() == 1 => return Ok((&manifests[0], tag_of(&manifests[0]))),
        None if manifests.is_empty() => {
            return Err(invalid(layout, "index.json", "holds no image"));
        }
        None => DEFAULT_TAG.to_owned(),
    };
    match manifests
        .iter()
        .find(|m| tag_of(m).as_deref() == Some(&wanted))
    {
        Some(found) => Ok((found, Some(wanted))),
        None if wanted == DEFAULT_TAG && manifests.len() > 1 => Err(ImageError::WhichImage {
            layout: layout.to_path_buf(),
            count: manifests.len(),
            tags,
        }),
        None => Err(ImageError::UnknownTag {
            layout: layout.to_path_buf(),
            tag: wanted,
            tags,
        }),
    }
}

/// Where a blob lives; only `sha256:` digests of 64 hex digits are accepted (anything else
/// could name a path outside `blobs/`).
pub(crate) fn blob_path(layout: &Path, digest: &str) -> Result<PathBuf, ImageError> {
    match digest.strip_prefix("sha256:") {
        Some(hex) if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Ok(layout.join("blobs").join("sha256").join(hex))
        }
        _ => Err(invalid(
            layout,
            format!("digest {digest:?}"),
            "not a sha256 digest (only sha256 is supported)",
        )),
    }
}

/// A small blob (manifest, config), read whole and checked.
fn read_blob(layout: &Path, digest: &str) -> Result<Vec<u8>, ImageError> {
    let path = blob_path(layout, digest)?;
    let bytes = std::fs::read(&path).map_err(|source| ImageError::Blob {
        layout: layout.to_path_buf(),
        digest: digest.to_owned(),
        source,
    })?;
    check_digest(
        layout,
        digest,
        &format!("{:x}", Sha256::digest(&bytes)),
        bytes.len() as u64,
    )?;
    Ok(bytes)
}

pub(crate) fn check_digest(
    layout: &Path,
    digest: &str,
    actual_hex: &str,
    size: u64,
) -> Result<(), ImageError> {
    if digest.strip_prefix("sha256:") == Some(actual_hex) {
        Ok(())
    } else {
        Err(ImageError::DigestMismatch {
            layout: layout.to_path_buf(),
            digest: digest.to_owned(),
            actual: format!("sha256:{actual_hex}"),
            size,
        })
    }
}

/// A reader that hashes what passes through it.
pub(crate) struct HashingReader<R: Read> {
    pub(crate) inner: R,
    pub(crate) hasher: Sha256,
    pub(crate) bytes: u64,
}

impl<R: Read> HashingReader<R> {
    pub(crate) fn new(inner: R) -> HashingReader<R> {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    /// Reads to the end, then the hex digest and the byte count.
    pub(crate) fn finish(mut self) -> io::Result<(String, u64)> {
        io::copy(&mut self, &mut io::sink())?;
        Ok((format!("{:x}", self.hasher.finalize()), self.bytes))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// The uid and gid `user` names (`name`, `uid`, `name:group`, `uid:gid`), looked up in the
/// image's `/etc/passwd` and `/etc/group` (never the host's).
pub fn resolve_user(root: &Path, user: &str) -> Result<(u32, u32), String> {
    let (user_part, group_part) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap_or_default();
    let entry = |name: &str| {
        passwd.lines().find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            (fields.len() >= 4 && (fields[0] == name || fields[2] == name))
                .then(|| (fields[2].parse().ok(), fields[3].parse().ok()))
        })
    };
    let (uid, primary_gid) = match user_part.parse::<u32>() {
        Ok(uid) => (uid, entry(user_part).and_then(|(_, g)| g).unwrap_or(uid)),
        Err(_) => match entry(user_part) {
            Some((Some(uid), Some(gid))) => (uid, gid),
            _ => {
                return Err(format!(
                    "user {user_part:?} is not in the image's /etc/passwd"
                ));
            }
        },
    };
    let gid = match group_part {
        None => primary_gid,
        Some(group) => match group.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => std::fs::read_to_string(root.join("etc/group"))
                .unwrap_or_default()
                .lines()
                .find_map(|line| {
                    let fields: Vec<&str> = line.split(':').collect();
                    (fields.len() >= 3 && fields[0] == group)
                        .then(|| fields[2].parse().ok())
                        .flatten()
                })
                .ok_or_else(|| format!("group {group:?} is not in the image's /etc/group"))?,
        },
    };
    Ok((uid, gid))
}

#[cfg(test)]
mod tests;
