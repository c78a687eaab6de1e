//! Exports of a small tree made here (regular file with an xattr, a hard link, a symlink that
//! points out of the set, an empty directory), checked in every format, and the refusals of
//! the output checks.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::*;
use crate::analysis::closure::{Reason, SetEntry};
use crate::fixtures::{ScratchDir, header};
use crate::record::FileKind;

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
    let scratch = ScratchDir::new("export-unit-dir");
    let src = make_source(scratch.root());
    let out = scratch.root().join("out");
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
    // Empty directories to mount on, with their usual modes; the marker, read-only.
    for (name, mode) in [
        ("proc", 0o555),
        ("sys", 0o555),
        ("dev", 0o755),
        ("tmp", 0o1777),
    ] {
        let meta = fs::symlink_metadata(out.join(name)).unwrap();
        assert!(meta.is_dir(), "{name}");
        assert_eq!(meta.mode() & 0o7777, mode, "{name}");
        assert_eq!(fs::read_dir(out.join(name)).unwrap().count(), 0, "{name}");
    }
    assert!(
        report
            .summary()
            .contains("added empty /dev, /proc, /sys, /tmp to mount on")
    );
    assert_eq!(
        fs::read_to_string(out.join(output::MARKER)).unwrap(),
        "depsetfs-export 1 dir\n"
    );
    assert_eq!(
        fs::metadata(out.join(output::MARKER)).unwrap().mode() & 0o777,
        0o444
    );
    // The root keeps its own times: the marker and mount directories came before them.
    let root = fs::metadata(&out).unwrap();
    assert_eq!((root.mtime(), root.mtime_nsec()), {
        let src = fs::metadata(&src).unwrap();
        (src.mtime(), src.mtime_nsec())
    });
    let etc = fs::metadata(out.join("etc")).unwrap();
    assert_eq!(etc.mtime(), fs::metadata(src.join("etc")).unwrap().mtime());
    let xattrs = read_xattrs(&fs::File::open(src.join("etc/app.conf")).unwrap()).unwrap();
    let copied = read_xattrs(&fs::File::open(out.join("etc/app.conf")).unwrap()).unwrap();
    assert_eq!(copied, xattrs);
    // Nothing left under a temporary name.
    let leftovers: Vec<_> = fs::read_dir(scratch.root())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("depsetfs-tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

use walk::read_xattrs;

#[test]
fn tar_export_lists_the_set_with_links_and_xattrs() {
    let scratch = ScratchDir::new("export-unit-tar");
    let src = make_source(scratch.root());
    let out = scratch.root().join("out.tar");
    export(
        &header(&src, "/nowhere"),
        &the_set(),
        &options(Format::Tar, &out),
    )
    .unwrap();
    let mut archive = ::tar::Archive::new(fs::File::open(&out).unwrap());
    let mut seen = BTreeMap::new();
    let mut xattr_seen = false;
    let mut first = true;
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        if first {
            // The tag by which --force knows an earlier export.
            assert_eq!(entry.header().entry_type(), ::tar::EntryType::XGlobalHeader);
            first = false;
            continue;
        }
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
    let scratch = ScratchDir::new("export-unit-oci");
    let src = make_source(scratch.root());
    let out = scratch.root().join("image");
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
    assert!(out.join(output::MARKER).is_file());
    // The layer holds the directories to mount on.
    let mut layer_tar = ::tar::Archive::new(flate2::read::GzDecoder::new(layer.as_slice()));
    let mut modes = BTreeMap::new();
    for entry in layer_tar.entries().unwrap() {
        let entry = entry.unwrap();
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        modes.insert(path, entry.header().mode().unwrap());
    }
    assert_eq!(modes.get("proc/"), Some(&0o555), "{modes:?}");
    assert_eq!(modes.get("tmp/"), Some(&0o1777), "{modes:?}");
    assert!(!modes.contains_key(output::MARKER), "{modes:?}");
    assert!(!out.join("blobs/sha256/.layer.tmp").exists());
}

/// Every file under `dir` with its mode and contents (symlink targets for symlinks).
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (u32, Vec<u8>)> {
    let mut files = BTreeMap::new();
    let meta = fs::symlink_metadata(dir).unwrap();
    let contents = if meta.is_file() {
        fs::read(dir).unwrap()
    } else {
        Vec::new()
    };
    files.insert(dir.to_path_buf(), (meta.mode(), contents));
    if meta.is_dir() {
        for entry in fs::read_dir(dir).unwrap() {
            files.extend(snapshot(&entry.unwrap().path()));
        }
    }
    files
}

fn forced(format: Format, output: &Path) -> ExportOptions {
    ExportOptions {
        force: true,
        ..options(format, output)
    }
}

#[test]
fn existing_outputs_are_kept_without_force_and_replaced_with_it() {
    let scratch = ScratchDir::new("export-unit-force");
    let src = make_source(scratch.root());
    let header = header(&src, "/nowhere");
    for format in [Format::Dir, Format::Tar, Format::Oci] {
        let out = scratch.root().join(format!("out-{format:?}"));
        export(&header, &the_set(), &options(format, &out)).unwrap();
        let error = export(&header, &the_set(), &options(format, &out)).unwrap_err();
        assert!(matches!(error, ExportError::Exists(_)), "{error}");
        let before = fs::symlink_metadata(&out).unwrap().ino();
        export(&header, &the_set(), &forced(format, &out)).unwrap();
        assert_ne!(
            fs::symlink_metadata(&out).unwrap().ino(),
            before,
            "{format:?}: not replaced"
        );
    }
    // An earlier export of another format is depsetfs's too.
    let out = scratch.root().join("out-Dir");
    export(&header, &the_set(), &forced(Format::Tar, &out)).unwrap();
    assert!(fs::metadata(&out).unwrap().is_file());
    // An empty directory is replaced, with --force only.
    let empty = scratch.root().join("empty");
    fs::create_dir(&empty).unwrap();
    let error = export(&header, &the_set(), &options(Format::Dir, &empty)).unwrap_err();
    assert!(matches!(error, ExportError::Exists(_)), "{error}");
    export(&header, &the_set(), &forced(Format::Dir, &empty)).unwrap();
    assert!(empty.join("etc/app.conf").exists());
}

#[test]
fn force_never_replaces_what_depsetfs_did_not_write() {
    let scratch = ScratchDir::new("export-unit-notours");
    let src = make_source(scratch.root());
    let header = header(&src, "/nowhere");
    // A directory of someone's files, a mode of its own, a marker-like name that is not one.
    let theirs = scratch.root().join("theirs");
    fs::create_dir(&theirs).unwrap();
    fs::write(theirs.join("notes"), b"keep me\n").unwrap();
    fs::create_dir(theirs.join("sub")).unwrap();
    fs::write(theirs.join("sub/data"), [0u8, 1, 2, 255]).unwrap();
    fs::write(theirs.join(output::MARKER), b"not ours\n").unwrap();
    fs::set_permissions(&theirs, fs::Permissions::from_mode(0o1733)).unwrap();
    // A tar file that is not a depsetfs export, and a symlink to an export.
    let tar = scratch.root().join("theirs.tar");
    fs::write(&tar, vec![7u8; 4096]).unwrap();
    let link = scratch.root().join("link");
    std::os::unix::fs::symlink(&theirs, &link).unwrap();
    let before = snapshot(scratch.root());
    for output in [&theirs, &tar, &link] {
        for format in [Format::Dir, Format::Tar, Format::Oci] {
            for force in [false, true] {
                let options = ExportOptions {
                    force,
                    ..options(format, output)
                };
                let error = export(&header, &the_set(), &options).unwrap_err();
                assert!(
                    matches!(error, ExportError::ForbiddenOutput { .. })
                        && error.to_string().contains("depsetfs did not write"),
                    "{}: {error}",
                    output.display()
                );
            }
        }
    }
    assert_eq!(snapshot(scratch.root()), before, "something was changed");
    // A marker owned by another user does not make a directory ours.
    let forged = scratch.root().join("forged");
    export(&header, &the_set(), &options(Format::Dir, &forged)).unwrap();
    let marker = forged.join(output::MARKER);
    if std::os::unix::fs::lchown(&marker, Some(4321), None).is_ok() {
        let error = export(&header, &the_set(), &forced(Format::Dir, &forged)).unwrap_err();
        assert!(
            matches!(error, ExportError::ForbiddenOutput { .. }),
            "{error}"
        );
        assert_eq!(fs::metadata(&marker).unwrap().uid(), 4321);
    }
}

#[test]
fn system_directories_and_homes_of_the_source_are_refused_even_empty() {
    let scratch = ScratchDir::new("export-unit-system");
    let src = make_source(scratch.root());
    let header = header(&src, "/nowhere");
    let cwd = std::env::current_dir().unwrap();
    for output in [
        PathBuf::from("/tmp"),
        PathBuf::from("/usr"),
        PathBuf::from("/etc"),
        PathBuf::from("/var/tmp"),
        PathBuf::from("/tmp/"),
        PathBuf::from("/tmp/."),
        src.clone(),
        scratch.root().to_path_buf(),
        cwd.clone(),
        cwd.parent().unwrap().to_path_buf(),
    ] {
        let error = check_output(&output, &header, true).unwrap_err();
        assert!(
            matches!(error, ExportError::ForbiddenOutput { .. }),
            "{}: {error}",
            output.display()
        );
        assert!(error.to_string().contains("even with --force"), "{error}");
    }
    // An empty source tree is still the source tree.
    let empty_src = scratch.root().join("empty-src");
    fs::create_dir(&empty_src).unwrap();
    let error = check_output(&empty_src, &self::header(&empty_src, "/nowhere"), true);
    assert!(error.is_err(), "replaced an empty source tree");
}

#[test]
fn an_output_whose_directory_is_missing_is_named_in_one_line() {
    let scratch = ScratchDir::new("export-unit-noparent");
    let src = make_source(scratch.root());
    let out = scratch.root().join("missing/out");
    let error = export(
        &header(&src, "/nowhere"),
        &the_set(),
        &options(Format::Dir, &out),
    )
    .unwrap_err();
    let missing = scratch.root().join("missing");
    assert_eq!(
        error.to_string(),
        format!(
            "{}: cannot write there: the directory {} does not exist",
            out.display(),
            missing.display()
        )
    );
    fs::write(&missing, b"").unwrap();
    let error = check_output(&out, &header(&src, "/nowhere"), false).unwrap_err();
    assert!(error.to_string().ends_with("is not a directory"), "{error}");
}

#[test]
fn outputs_inside_the_mountpoint_or_kernel_trees_are_refused() {
    let scratch = ScratchDir::new("export-unit-refuse");
    let src = make_source(scratch.root());
    let mountpoint = scratch.root().join("mnt");
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
    let scratch = ScratchDir::new("export-unit-fail");
    let src = make_source(scratch.root());
    let mut set = the_set();
    // The parent is not an exported directory: skipped, not an error, nothing read under it.
    set.entries
        .push(entry("/etc/app.conf/inner", FileKind::File));
    let out = scratch.root().join("out");
    let report = export(&header(&src, "/nowhere"), &set, &options(Format::Dir, &out)).unwrap();
    assert_eq!(report.totals.skipped, vec![b"/etc/app.conf/inner".to_vec()]);
    // A source tree that is gone: an error in every format, and no output.
    let gone = scratch.root().join("gone");
    for format in [Format::Dir, Format::Tar, Format::Oci] {
        let out = scratch.root().join(format!("out-{format:?}"));
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
    let leftovers: Vec<_> = fs::read_dir(scratch.root())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("depsetfs-tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
