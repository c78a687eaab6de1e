//! Small image layouts written by the tests: layers built member by member (raw headers where
//! the tar crate would refuse a bad name), the index, manifest and config around them.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use flate2::Compression;
use flate2::write::GzEncoder;
use serde_json::json;

use super::*;
use crate::fixtures::ScratchDir;

/// One member of a test layer.
enum M<'a> {
    Dir(&'a str, u32),
    File(&'a str, u32, &'a [u8]),
    Symlink(&'a str, &'a str),
    HardLink(&'a str, &'a str),
    Fifo(&'a str),
    /// A file whose name is written as is (the tar crate refuses `..`).
    RawName(&'a [u8]),
}

fn layer(members: &[M]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for member in members {
        let mut header = tar::Header::new_gnu();
        header.set_uid(1234);
        header.set_gid(2345);
        header.set_mtime(1_600_000_000);
        header.set_size(0);
        let (name, data): (&[u8], &[u8]) = match member {
            M::Dir(name, mode) => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(*mode);
                (name.as_bytes(), b"")
            }
            M::File(name, mode, data) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(*mode);
                header.set_size(data.len() as u64);
                (name.as_bytes(), data)
            }
            M::Symlink(name, target) => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_mode(0o777);
                header.set_link_name(target).expect("link name");
                (name.as_bytes(), b"")
            }
            M::HardLink(name, target) => {
                header.set_entry_type(tar::EntryType::Link);
                header.set_mode(0o644);
                header.set_link_name(target).expect("link name");
                (name.as_bytes(), b"")
            }
            M::Fifo(name) => {
                header.set_entry_type(tar::EntryType::Fifo);
                header.set_mode(0o640);
                (name.as_bytes(), b"")
            }
            M::RawName(name) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(0o644);
                (*name, b"")
            }
        };
        let slot = &mut header.as_old_mut().name;
        slot.fill(0);
        slot[..name.len()].copy_from_slice(name);
        header.set_cksum();
        builder.append(&header, data).expect("append");
    }
    builder.into_inner().expect("tar")
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::fast());
    encoder.write_all(bytes).expect("gzip");
    encoder.finish().expect("gzip")
}

fn put_blob(layout: &Path, bytes: &[u8]) -> String {
    let hex = format!("{:x}", Sha256::digest(bytes));
    let dir = layout.join("blobs/sha256");
    std::fs::create_dir_all(&dir).expect("blobs");
    std::fs::write(dir.join(&hex), bytes).expect("blob");
    format!("sha256:{hex}")
}

/// Writes a layout with one image per `(tag, layers)`; layers are gzip'ed.
fn write_layout(layout: &Path, images: &[(&str, Vec<Vec<u8>>)]) -> Vec<String> {
    std::fs::create_dir_all(layout).expect("layout");
    std::fs::write(
        layout.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .expect("oci-layout");
    let mut manifests = Vec::new();
    let mut layer_digests = Vec::new();
    for (tag, layers) in images {
        let layers: Vec<_> = layers
            .iter()
            .map(|tar| {
                let digest = put_blob(layout, &gzip(tar));
                layer_digests.push(digest.clone());
                json!({
                    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": digest,
                    "size": 0,
                })
            })
            .collect();
        let config = json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {
                "Env": ["LANG=C.UTF-8"],
                "User": "1:2",
                "WorkingDir": "/srv",
                "Entrypoint": ["/bin/serve"],
                "Cmd": ["--port", "80"],
                "ExposedPorts": { "80/tcp": {} },
            },
        });
        let config = put_blob(layout, config.to_string().as_bytes());
        let manifest = json!({
            "schemaVersion": 2,
            "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 0 },
            "layers": layers,
        });
        let manifest = put_blob(layout, manifest.to_string().as_bytes());
        manifests.push(json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest,
            "size": 0,
            "annotations": { REF_NAME_ANNOTATION: tag },
        }));
    }
    let index = json!({ "schemaVersion": 2, "manifests": manifests });
    std::fs::write(layout.join("index.json"), index.to_string()).expect("index");
    layer_digests
}

fn unpack(image: &Image, scratch: &ScratchDir) -> Result<PathBuf, ImageError> {
    let root = scratch.file("root");
    std::fs::create_dir(&root).expect("root");
    image.unpack_into(&root).map(|()| root)
}

#[test]
fn layers_apply_in_order_with_whiteouts_links_and_metadata() {
    let scratch = ScratchDir::new("image-layers");
    let layout = scratch.file("layout");
    let lower = layer(&[
        M::Dir("etc/", 0o755),
        M::File("etc/gone", 0o644, b"x"),
        M::File("etc/kept", 0o4755, b"kept"),
        M::Dir("var/cache/", 0o750),
        M::File("var/cache/old", 0o644, b"old"),
        M::Symlink("bin", "usr/bin"),
        M::Dir("usr/bin/", 0o755),
        M::File("usr/bin/tool", 0o755, b"#!/bin/sh\n"),
    ]);
    let upper = layer(&[
        M::File("etc/.wh.gone", 0o644, b""),
        M::File("var/cache/.wh..wh..opq", 0o644, b""),
        M::File("var/cache/new", 0o644, b"new"),
        // Through the symlink of the lower layer, as a runtime would.
        M::File("bin/added", 0o700, b"added"),
        M::HardLink("usr/bin/tool2", "usr/bin/tool"),
        M::Fifo("run/fifo"),
    ]);
    write_layout(&layout, &[("v1", vec![lower, upper])]);
    let image = Image::open(&layout).expect("opens");
    assert_eq!(image.tag.as_deref(), Some("v1"));
    assert_eq!(image.workdir(), "/srv");
    assert_eq!(image.user().as_deref(), Some("1:2"));
    assert_eq!(
        image.default_command(),
        vec![OsString::from("/bin/serve"), "--port".into(), "80".into()]
    );
    assert!(image.env().contains(&"LANG=C.UTF-8".to_owned()));
    assert!(image.env().iter().any(|e| e.starts_with("PATH=")));
    let root = unpack(&image, &scratch).expect("unpacks");
    assert!(!root.join("etc/gone").exists(), "whiteout applied");
    let kept = std::fs::metadata(root.join("etc/kept")).expect("kept");
    assert_eq!(kept.permissions().mode() & 0o7777, 0o4755, "setuid kept");
    assert_eq!((kept.uid(), kept.gid()), (1234, 2345));
    assert_eq!(kept.mtime(), 1_600_000_000);
    assert!(
        !root.join("var/cache/old").exists(),
        "opaque directory emptied"
    );
    assert_eq!(std::fs::read(root.join("var/cache/new")).unwrap(), b"new");
    assert_eq!(
        std::fs::metadata(root.join("var/cache"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o750
    );
    assert!(
        std::fs::symlink_metadata(root.join("bin"))
            .unwrap()
            .is_symlink()
    );
    assert_eq!(std::fs::read(root.join("usr/bin/added")).unwrap(), b"added");
    let tool = std::fs::metadata(root.join("usr/bin/tool")).unwrap();
    let tool2 = std::fs::metadata(root.join("usr/bin/tool2")).unwrap();
    assert_eq!(tool.ino(), tool2.ino(), "hard link");
    use std::os::unix::fs::FileTypeExt;
    assert!(
        std::fs::metadata(root.join("run/fifo"))
            .unwrap()
            .file_type()
            .is_fifo()
    );
    assert_eq!(resolve_user(&root, "1:2"), Ok((1, 2)));
}

#[test]
fn tags_pick_the_image_and_unknown_ones_are_named() {
    let scratch = ScratchDir::new("image-tags");
    let layout = scratch.file("layout");
    let one = layer(&[M::File("a", 0o644, b"a")]);
    write_layout(&layout, &[("v1", vec![one.clone()]), ("latest", vec![one])]);
    let reference = |tag: &str| PathBuf::from(format!("{}:{tag}", layout.display()));
    assert_eq!(
        Image::open(&reference("v1")).unwrap().tag.as_deref(),
        Some("v1")
    );
    assert_eq!(Image::open(&layout).unwrap().tag.as_deref(), Some("latest"));
    let err = Image::open(&reference("nope")).expect_err("unknown tag");
    let text = err.to_string();
    assert!(matches!(err, ImageError::UnknownTag { .. }), "{text}");
    assert!(
        text.contains("\"nope\"") && text.contains("v1, latest"),
        "{text}"
    );
    assert!(!text.contains('\n'));
    let several = scratch.file("several");
    let one = layer(&[M::File("a", 0o644, b"a")]);
    write_layout(&several, &[("v1", vec![one.clone()]), ("v2", vec![one])]);
    let err = Image::open(&several).expect_err("which one?");
    assert!(
        matches!(err, ImageError::WhichImage { count: 2, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("v1, v2"), "{err}");
    let missing = scratch.file("no-such-layout");
    let err = Image::open(&missing).expect_err("no layout");
    assert!(matches!(err, ImageError::NoLayout { .. }), "{err}");
    assert!(err.to_string().contains("no-such-layout"), "{err}");
}

#[test]
fn a_blob_that_does_not_match_its_digest_is_refused() {
    let scratch = ScratchDir::new("image-digest");
    let layout = scratch.file("layout");
    let digests = write_layout(
        &layout,
        &[("v1", vec![layer(&[M::File("a", 0o644, b"a")])])],
    );
    let blob = blob_path(&layout, &digests[0]).unwrap();
    let mut bytes = std::fs::read(&blob).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&blob, bytes).unwrap();
    let image = Image::open(&layout).expect("manifest and config are intact");
    let err = unpack(&image, &scratch).expect_err("corrupt layer");
    assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err}");
    assert!(err.to_string().contains(&digests[0]), "{err}");
    assert!(!scratch.file("root/a").exists(), "nothing unpacked");
}

#[test]
fn members_never_land_outside_the_root() {
    let scratch = ScratchDir::new("image-escape");
    let layout = scratch.file("layout");
    write_layout(
        &layout,
        &[("v1", vec![layer(&[M::RawName(b"a/../../escaped")])])],
    );
    let err = unpack(&Image::open(&layout).unwrap(), &scratch).expect_err("refused");
    assert!(matches!(err, ImageError::Escape { .. }), "{err}");
    assert!(err.to_string().contains("a/../../escaped"), "{err}");
    assert!(!scratch.file("escaped").exists());

    // A symlink to an absolute path is followed inside the root, as a chroot would.
    let scratch = ScratchDir::new("image-escape-link");
    let layout = scratch.file("layout");
    let outside = scratch.file("outside");
    std::fs::create_dir(&outside).unwrap();
    let target = outside.to_str().unwrap();
    let planted = layer(&[M::File("link/planted", 0o644, b"x")]);
    // Dangling inside the root: refused (the root has no such directory).
    write_layout(
        &layout,
        &[(
            "v1",
            vec![layer(&[M::Symlink("link", target)]), planted.clone()],
        )],
    );
    assert!(unpack(&Image::open(&layout).unwrap(), &scratch).is_err());
    assert!(
        !outside.join("planted").exists(),
        "written outside the root"
    );
    let scratch = ScratchDir::new("image-escape-link");
    let layout = scratch.file("layout");
    let inside_dir = format!("{}/", target.trim_start_matches('/'));
    write_layout(
        &layout,
        &[(
            "v1",
            vec![
                layer(&[M::Dir(&inside_dir, 0o755), M::Symlink("link", target)]),
                planted,
            ],
        )],
    );
    let root = unpack(&Image::open(&layout).unwrap(), &scratch).expect("unpacks");
    assert!(
        !outside.join("planted").exists(),
        "written outside the root"
    );
    let inside = root.join(target.trim_start_matches('/')).join("planted");
    assert!(inside.exists(), "{}", inside.display());
    // A hard link to a host path is refused or made inside the root, never to the host file.
    let scratch = ScratchDir::new("image-escape-hardlink");
    let layout = scratch.file("layout");
    write_layout(
        &layout,
        &[("v1", vec![layer(&[M::HardLink("passwd", "/etc/passwd")])])],
    );
    assert!(unpack(&Image::open(&layout).unwrap(), &scratch).is_err());
}

#[test]
fn references_split_at_the_last_colon() {
    assert_eq!(
        parse_reference(Path::new("/no/such/img:v2")),
        (PathBuf::from("/no/such/img"), Some("v2".to_owned()))
    );
    assert_eq!(
        parse_reference(Path::new("/no/such/img")),
        (PathBuf::from("/no/such/img"), None)
    );
    assert_eq!(
        parse_reference(Path::new("/no/su:ch/img")),
        (PathBuf::from("/no/su:ch/img"), None)
    );
}
