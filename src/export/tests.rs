//! Exports of a small tree made here (regular file with an xattr, a hard link, a symlink that
//! points out of the set, an empty directory), checked in every format, and the refusals of
//! the output checks.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::*;
use crate::event::FileKind;
use crate::set::{Reason, SetEntry};

struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let path = std::env::temp_dir().join(format!(
            "depsetfs-export-unit-{name}-{}",
            std::process::id()
        ));
        remove_any(&path);
        fs::create_dir_all(&path).unwrap();
        Scratch(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        remove_any(&self.0);
    }
}

/// src/{etc/{app.conf, app-link.conf (hard link), tz -> /outside}, empty/, outside}.
fn make_source(root: &Path) -> PathBuf {
    let src = root.join("src");
    fs::create_dir_all(src.join("etc")).unwrap();
    fs::create_dir(src.join("empty")).unwrap();
    fs::write(src.join("etc/app.conf"), b"port = 80\n").unwrap();
    fs::set_permissions(src.join("etc/app.conf"), fs::Permissions::from_mode(0o640)).unwrap();
    fs::hard_link(src.join("etc/app.conf"), src.join("etc/app-link.conf")).unwrap();
    std::os::unix::fs::symlink("/outside", src.join("etc/tz")).unwrap();
    fs::write(src.join("outside"), b"not in the set\n").unwrap();
    // user.* xattrs need a filesystem that has them (tmpfs of recent kernels, ext4).
    let _ = std::process::Command::new("setfattr")
        .args(["-n", "user.depsetfs", "-v", "yes"])
        .arg(src.join("etc/app.conf"))
        .status();
    src
}

fn entry(path: &str, kind: FileKind) -> SetEntry {
    SetEntry {
        path: path.as_bytes().to_vec(),
        kind,
        size: 0,
        reason: Reason::Used,
        users: Vec::new(),
    }
}

fn the_set() -> DeploymentSet {
    DeploymentSet {
        entries: vec![
            entry("/", FileKind::Dir),
            entry("/empty", FileKind::Dir),
            entry("/etc", FileKind::Dir),
            entry("/etc/app-link.conf", FileKind::File),
            entry("/etc/app.conf", FileKind::File),
            entry("/etc/tz", FileKind::Symlink),
        ],
        required_devices: Vec::new(),
        dropped_missing: 0,
    }
}

fn header(source: &Path, mountpoint: &str) -> LogHeader {
    LogHeader {
        magic: crate::event::LOG_MAGIC.to_string(),
        version: crate::event::LOG_FORMAT_VERSION,
        source: source.to_str().unwrap().to_string(),
        mountpoint: mountpoint.to_string(),
        host: "test".into(),
        kernel: "test".into(),
        started_ns: 0,
        boot_time_ns: 0,
        clock_ticks: 100,
        fidelity: "full".into(),
        network_recorded: false,
        command: None,
    }
}

fn options(format: Format, output: &Path) -> ExportOptions {
    ExportOptions {
        format,
        output: output.to_path_buf(),
        force: false,
        progress: false,
        stubs: Default::default(),
    }
}

#[test]
fn dir_export_keeps_metadata_hard_links_symlinks_and_empty_dirs() {
    let scratch = Scratch::new("dir");
    let src = make_source(&scratch.0);
    let out = scratch.0.join("out");
    let report = export(
        &header(&src, "/nowhere"),
        &the_set(),
        &options(Format::Dir, &out),
    )
    .unwrap();
    assert_eq!(report.totals.hard_links, 1);
    assert_eq!(report.totals.files, 1);
    let conf = fs::metadata(out.join("etc/app.conf")).unwrap();
    let orig = fs::metadata(src.join("etc/app.conf")).unwrap();
    assert_eq!(conf.mode(), orig.mode());
    assert_eq!((conf.uid(), conf.gid()), (orig.uid(), orig.gid()));
    assert_eq!(
        (conf.mtime(), conf.mtime_nsec()),
        (orig.mtime(), orig.mtime_nsec())
    );
    assert_eq!(fs::read(out.join("etc/app.conf")).unwrap(), b"port = 80\n");
    let link = fs::metadata(out.join("etc/app-link.conf")).unwrap();
    assert_eq!(link.ino(), conf.ino(), "the hard link became a copy");
    let tz = fs::symlink_metadata(out.join("etc/tz")).unwrap();
    assert!(tz.file_type().is_symlink());
    assert_eq!(
        fs::read_link(out.join("etc/tz")).unwrap(),
        Path::new("/outside")
    );
    assert!(
        !out.join("outside").exists(),
        "followed a symlink out of the set"
    );
    assert!(out.join("empty").is_dir());
    let etc = fs::metadata(out.join("etc")).unwrap();
    assert_eq!(etc.mtime(), fs::metadata(src.join("etc")).unwrap().mtime());
    let xattrs = read_xattrs(&fs::File::open(src.join("etc/app.conf")).unwrap()).unwrap();
    let copied = read_xattrs(&fs::File::open(out.join("etc/app.conf")).unwrap()).unwrap();
    assert_eq!(copied, xattrs);
    // Nothing left under a temporary name.
    let leftovers: Vec<_> = fs::read_dir(&scratch.0)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("depsetfs-tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

use walk::read_xattrs;

#[test]
fn tar_export_lists_the_set_with_links_and_xattrs() {
    let scratch = Scratch::new("tar");
    let src = make_source(&scratch.0);
    let out = scratch.0.join("out.tar");
    export(
        &header(&src, "/nowhere"),
        &the_set(),
        &options(Format::Tar, &out),
    )
    .unwrap();
    let mut archive = ::tar::Archive::new(fs::File::open(&out).unwrap());
    let mut seen = BTreeMap::new();
    let mut xattr_seen = false;
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        if let Some(extensions) = entry.pax_extensions().unwrap() {
            for ext in extensions {
                let ext = ext.unwrap();
                if ext.key().unwrap() == "SCHILY.xattr.user.depsetfs" {
                    assert_eq!(ext.value_bytes(), b"yes");
                    xattr_seen = true;
                }
            }
        }
        let link = entry
            .link_name()
            .unwrap()
            .map(|l| l.to_string_lossy().into_owned());
        seen.insert(path, (entry.header().entry_type(), link));
    }
    let names: Vec<&str> = seen.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "empty/",
            "etc/",
            "etc/app-link.conf",
            "etc/app.conf",
            "etc/tz"
        ]
    );
    assert_eq!(
        seen["etc/tz"],
        (::tar::EntryType::Symlink, Some("/outside".into()))
    );
    // The first name in path order carries the data, the second links to it.
    assert_eq!(
        seen["etc/app.conf"],
        (::tar::EntryType::Link, Some("etc/app-link.conf".into()))
    );
    let has_user_xattrs = !read_xattrs(&fs::File::open(src.join("etc/app.conf")).unwrap())
        .unwrap()
        .is_empty();
    assert_eq!(xattr_seen, has_user_xattrs);
}

#[test]
fn oci_export_writes_a_layout_whose_digests_match() {
    let scratch = Scratch::new("oci");
    let src = make_source(&scratch.0);
    let out = scratch.0.join("image");
    export(
        &header(&src, "/nowhere"),
        &the_set(),
        &options(Format::Oci, &out),
    )
    .unwrap();
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(out.join("index.json")).unwrap()).unwrap();
    let manifest_digest = index["manifests"][0]["digest"].as_str().unwrap();
    let blob = |digest: &str| {
        fs::read(
            out.join("blobs/sha256")
                .join(digest.trim_start_matches("sha256:")),
        )
        .unwrap()
    };
    let manifest: serde_json::Value = serde_json::from_slice(&blob(manifest_digest)).unwrap();
    let layer_digest = manifest["layers"][0]["digest"].as_str().unwrap();
    let layer = blob(layer_digest);
    use sha2::Digest;
    assert_eq!(
        format!("sha256:{:x}", sha2::Sha256::digest(&layer)),
        layer_digest
    );
    assert!(out.join("oci-layout").is_file());
    assert!(!out.join("blobs/sha256/.layer.tmp").exists());
}

#[test]
fn existing_outputs_are_kept_without_force_and_replaced_with_it() {
    let scratch = Scratch::new("force");
    let src = make_source(&scratch.0);
    let out = scratch.0.join("out");
    fs::create_dir(&out).unwrap();
    fs::write(out.join("old"), b"old").unwrap();
    let error = export(
        &header(&src, "/nowhere"),
        &the_set(),
        &options(Format::Dir, &out),
    )
    .unwrap_err();
    assert!(matches!(error, ExportError::Exists(_)), "{error}");
    assert!(out.join("old").exists());
    let mut forced = options(Format::Dir, &out);
    forced.force = true;
    export(&header(&src, "/nowhere"), &the_set(), &forced).unwrap();
    assert!(!out.join("old").exists());
    assert!(out.join("etc/app.conf").exists());
}

#[test]
fn outputs_inside_the_mountpoint_or_kernel_trees_are_refused() {
    let scratch = Scratch::new("refuse");
    let src = make_source(&scratch.0);
    let mountpoint = scratch.0.join("mnt");
    fs::create_dir(&mountpoint).unwrap();
    let header = header(&src, mountpoint.to_str().unwrap());
    for output in [
        mountpoint.join("out"),
        PathBuf::from("/proc/out"),
        PathBuf::from("/dev/out"),
    ] {
        let error = export(&header, &the_set(), &options(Format::Tar, &output)).unwrap_err();
        assert!(
            matches!(error, ExportError::ForbiddenOutput { .. }),
            "{error}"
        );
    }
}

#[test]
fn a_failed_export_leaves_nothing_behind() {
    let scratch = Scratch::new("fail");
    let src = make_source(&scratch.0);
    let mut set = the_set();
    // The parent is not an exported directory: skipped, not an error, nothing read under it.
    set.entries
        .push(entry("/etc/app.conf/inner", FileKind::File));
    let out = scratch.0.join("out");
    let report = export(&header(&src, "/nowhere"), &set, &options(Format::Dir, &out)).unwrap();
    assert_eq!(report.totals.skipped, vec![b"/etc/app.conf/inner".to_vec()]);
    // A source tree that is gone: an error in every format, and no output.
    let gone = scratch.0.join("gone");
    for format in [Format::Dir, Format::Tar, Format::Oci] {
        let out = scratch.0.join(format!("out-{format:?}"));
        let error = export(
            &header(&gone, "/nowhere"),
            &the_set(),
            &options(format, &out),
        );
        assert!(
            error.is_err(),
            "{format:?}: exported a source that does not exist"
        );
        assert!(!out.exists(), "{format:?}: left {}", out.display());
    }
    let leftovers: Vec<_> = fs::read_dir(&scratch.0)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("depsetfs-tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
