//! The `oci` format: an OCI image layout directory (`oci-layout`, `index.json`,
//! `blobs/sha256/`) holding one image: a manifest, a config and one layer. The layer is the
//! [`super::tar`] stream gzip'ed on the fly, hashed twice as it is written (the uncompressed
//! digest is the config's `diff_id`, the compressed one names the blob), so the set is read
//! once and never staged uncompressed. The config's entrypoint and working directory are the
//! traced command's (log header); its environment is only a standard `PATH`
//! ([`DEFAULT_PATH`]): the traced environment is not recorded. `index.json` names the image
//! `latest` (`org.opencontainers.image.ref.name`), which `umoci` and `skopeo` need to find it.
//! A log traced from an image (`run --image`) keeps that image's config instead (environment,
//! user, working directory, entrypoint, command, exposed ports, labels, …), read again from
//! its layout and checked against the digest the log recorded; only the layer, the `rootfs`,
//! the creation time and the history (one note naming the original image) are new.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use flate2::Compression;
use flate2::write::GzEncoder;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::ExportError;
use super::walk::{Progress, Stubs, Totals};
use crate::analysis::closure::DeploymentSet;
use crate::launch::image::original_config;
use crate::record::{TracedCommand, TracedImage};

/// The `PATH` of the image config: Debian's default for root.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// The tag written in index.json.
pub const REF_NAME: &str = "latest";

const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const CONFIG_TYPE: &str = "application/vnd.oci.image.config.v1+json";
const LAYER_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const INDEX_TYPE: &str = "application/vnd.oci.image.index.v1+json";

/// A blob as the manifest and index describe it.
struct Descriptor {
    digest: String,
    size: u64,
}

fn write_error(path: &Path, action: &'static str) -> impl FnOnce(io::Error) -> ExportError + use<> {
    let path = path.to_path_buf();
    move |source| ExportError::Write {
        path,
        action,
        source,
    }
}

/// Writes the image layout at `root` (created here).
pub fn write(
    set: &DeploymentSet,
    stubs: &Stubs,
    source: &Path,
    command: Option<&TracedCommand>,
    image: Option<&TracedImage>,
    root: &Path,
    progress: Progress<'_>,
) -> Result<Totals, ExportError> {
    // Before anything is written: the original config must still be readable.
    let original = image
        .map(|image| original_config(image).map(|config| (image, config)))
        .transpose()?;
    // The root first, alone: a name that exists already is an error, not reused.
    std::fs::create_dir(root).map_err(write_error(root, "create the directory"))?;
    let blobs = root.join("blobs").join("sha256");
    std::fs::create_dir_all(&blobs).map_err(write_error(&blobs, "create the directory"))?;
    let (totals, layer, diff_id) = write_layer(set, stubs, source, &blobs, progress)?;
    let config = match &original {
        Some((image, config)) => keep_config(config, image, &diff_id),
        None => config_json(command, &diff_id),
    };
    let config = write_blob(&blobs, &config)?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": descriptor(CONFIG_TYPE, &config),
        "layers": [descriptor(LAYER_TYPE, &layer)],
    });
    let manifest = write_blob(&blobs, &manifest)?;
    let mut manifest_ref = descriptor(MANIFEST_TYPE, &manifest);
    manifest_ref["annotations"] = json!({ "org.opencontainers.image.ref.name": REF_NAME });
    manifest_ref["platform"] = json!({ "architecture": architecture(), "os": "linux" });
    let index = json!({
        "schemaVersion": 2,
        "mediaType": INDEX_TYPE,
        "manifests": [manifest_ref],
    });
    write_json(&root.join("index.json"), &index)?;
    write_json(
        &root.join("oci-layout"),
        &json!({ "imageLayoutVersion": "1.0.0" }),
    )?;
    Ok(totals)
}

fn descriptor(media_type: &str, blob: &Descriptor) -> Value {
    json!({ "mediaType": media_type, "digest": blob.digest, "size": blob.size })
}

/// The image config: entrypoint, env and working directory, the layer's diff_id.
pub fn config_json(command: Option<&TracedCommand>, diff_id: &str) -> Value {
    let mut config = json!({ "Env": [format!("PATH={DEFAULT_PATH}")] });
    if let Some(command) = command {
        config["Entrypoint"] = json!(command.argv);
        config["WorkingDir"] = json!(command.cwd);
    }
    json!({
        "created": rfc3339_now(),
        "architecture": architecture(),
        "os": "linux",
        "config": config,
        "rootfs": { "type": "layers", "diff_ids": [diff_id] },
        "history": [{ "created_by": "depsetfs export --format oci" }],
    })
}

/// The original image's config with the one new layer: everything a runtime reads is kept.
pub fn keep_config(original: &Value, image: &TracedImage, diff_id: &str) -> Value {
    let mut config = original.clone();
    if !config.is_object() {
        config = json!({});
    }
    let from = match &image.tag {
        Some(tag) => format!("{}:{tag}", image.layout),
        None => image.layout.clone(),
    };
    config["created"] = json!(rfc3339_now());
    config["rootfs"] = json!({ "type": "layers", "diff_ids": [diff_id] });
    config["history"] = json!([{
        "created": config["created"],
        "created_by": "depsetfs export --format oci",
        "comment": format!(
            "debloated from {from} (manifest {}): only the files a traced run used",
            image.manifest
        ),
    }]);
    config
}

/// GOARCH names, as OCI uses them.
pub fn architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

fn rfc3339_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    // utc_stamp: YYYYMMDDTHHMMSSZ.
    let s = crate::record::utc_stamp(secs);
    format!(
        "{}-{}-{}T{}:{}:{}Z",
        &s[0..4],
        &s[4..6],
        &s[6..8],
        &s[9..11],
        &s[11..13],
        &s[13..15]
    )
}

/// A writer that hashes and counts what passes through it.
struct Hashing<W: Write> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> Hashing<W> {
    fn new(inner: W) -> Hashing<W> {
        Hashing {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    fn finish(self) -> (W, String, u64) {
        let digest = format!("sha256:{:x}", self.hasher.finalize());
        (self.inner, digest, self.bytes)
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The layer blob, and the digest of its uncompressed tar (the diff_id).
fn write_layer(
    set: &DeploymentSet,
    stubs: &Stubs,
    source: &Path,
    blobs: &Path,
    progress: Progress<'_>,
) -> Result<(Totals, Descriptor, String), ExportError> {
    let temporary = blobs.join(".layer.tmp");
    let file = File::create(&temporary).map_err(write_error(&temporary, "create the layer"))?;
    let compressed = Hashing::new(BufWriter::with_capacity(1 << 20, file));
    let gzip = GzEncoder::new(compressed, Compression::default());
    let tar = Hashing::new(gzip);
    let (totals, tar) = super::tar::write_stream(
        set,
        stubs,
        source,
        tar,
        &temporary,
        super::tar::Stream::Layer,
        progress,
    )?;
    let (gzip, diff_id, _) = tar.finish();
    let compressed = gzip
        .finish()
        .map_err(write_error(&temporary, "compress the layer"))?;
    let (buffered, digest, size) = compressed.finish();
    let file = buffered
        .into_inner()
        .map_err(|e| write_error(&temporary, "write the layer")(e.into_error()))?;
    file.sync_all()
        .map_err(write_error(&temporary, "sync the layer"))?;
    let blob = blob_path(blobs, &digest);
    std::fs::rename(&temporary, &blob).map_err(write_error(&blob, "rename the layer to"))?;
    Ok((totals, Descriptor { digest, size }, diff_id))
}

fn blob_path(blobs: &Path, digest: &str) -> std::path::PathBuf {
    blobs.join(digest.trim_start_matches("sha256:"))
}

/// Writes a JSON blob named by its digest.
fn write_blob(blobs: &Path, value: &Value) -> Result<Descriptor, ExportError> {
    let bytes = serde_json::to_vec(value).map_err(|e| ExportError::Write {
        path: blobs.to_path_buf(),
        action: "encode a JSON blob",
        source: io::Error::other(e),
    })?;
    let digest = format!("sha256:{:x}", Sha256::digest(&bytes));
    let path = blob_path(blobs, &digest);
    std::fs::write(&path, &bytes).map_err(write_error(&path, "write the blob"))?;
    Ok(Descriptor {
        digest,
        size: bytes.len() as u64,
    })
}

fn write_json(path: &Path, value: &Value) -> Result<(), ExportError> {
    let bytes = serde_json::to_vec(value).map_err(|e| ExportError::Write {
        path: path.to_path_buf(),
        action: "encode",
        source: io::Error::other(e),
    })?;
    std::fs::write(path, bytes).map_err(write_error(path, "write"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_carries_the_traced_command() {
        let command = TracedCommand {
            argv: vec!["sh".into(), "-c".into(), "ls /".into()],
            cwd: "/root".into(),
            pid: 7,
        };
        let config = config_json(Some(&command), "sha256:abc");
        assert_eq!(config["config"]["Entrypoint"], json!(["sh", "-c", "ls /"]));
        assert_eq!(config["config"]["WorkingDir"], "/root");
        assert_eq!(
            config["config"]["Env"],
            json!([format!("PATH={DEFAULT_PATH}")])
        );
        assert_eq!(config["rootfs"]["diff_ids"], json!(["sha256:abc"]));
        let created = config["created"].as_str().unwrap();
        assert_eq!(created.len(), 20, "{created}");
        assert!(created.ends_with('Z') && created.as_bytes()[10] == b'T');
    }

    #[test]
    fn an_image_config_is_kept_with_the_new_layer() {
        let original = json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {
                "Env": ["PATH=/bin", "LANG=C.UTF-8"],
                "User": "www-data",
                "WorkingDir": "/srv",
                "Entrypoint": ["/usr/sbin/nginx"],
                "Cmd": ["-g", "daemon off;"],
                "ExposedPorts": { "80/tcp": {} },
                "Labels": { "org.example": "yes" },
            },
            "rootfs": { "type": "layers", "diff_ids": ["sha256:1", "sha256:2"] },
            "history": [{ "created_by": "a" }, { "created_by": "b" }],
        });
        let image = TracedImage {
            layout: "/srv/img".into(),
            tag: Some("v1".into()),
            manifest: "sha256:feed".into(),
            config: "sha256:beef".into(),
        };
        let config = keep_config(&original, &image, "sha256:new");
        assert_eq!(config["config"], original["config"]);
        assert_eq!(config["rootfs"]["diff_ids"], json!(["sha256:new"]));
        let history = config["history"].as_array().unwrap();
        assert_eq!(history.len(), 1);
        let comment = history[0]["comment"].as_str().unwrap();
        assert!(
            comment.contains("/srv/img:v1") && comment.contains("sha256:feed"),
            "{comment}"
        );
    }

    #[test]
    fn hashing_writer_digests_what_passed() {
        let mut writer = Hashing::new(Vec::new());
        writer.write_all(b"abc").unwrap();
        let (inner, digest, bytes) = writer.finish();
        assert_eq!(inner, b"abc");
        assert_eq!(bytes, 3);
        assert_eq!(
            digest,
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
