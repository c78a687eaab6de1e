use std::os::unix::fs::MetadataExt;

use super::*;
use crate::analysis::closure::{Reason, SetEntry};
use crate::fixtures::ScratchDir;

fn md5_hex(text: &str) -> String {
    Md5::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A set of the paths given, each with the kind it has in the tree.
fn set_of(tree: &ScratchDir, paths: &[&str]) -> DeploymentSet {
    let mut entries: Vec<SetEntry> = paths
        .iter()
        .map(|path| {
            let meta = std::fs::symlink_metadata(tree.file(path.trim_start_matches('/')))
                .unwrap_or_else(|e| panic!("{path}: {e}"));
            SetEntry {
                path: path.as_bytes().to_vec(),
                kind: FileKind::from_mode(meta.mode()),
                size: meta.len(),
                reason: Reason::Used,
                users: Vec::new(),
            }
        })
        .collect();
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    DeploymentSet {
        entries,
        required_devices: Vec::new(),
        dropped_missing: 0,
    }
}

const LS: &str = "ls binary";
const NGINX_CONF_PACKAGED: &str = "worker_processes auto;\n";
const NGINX_CONF_LOCAL: &str = "worker_processes 1;\n";
const VIM: &str = "vim binary";
const FOO_REAL: &str = "foo from package foo";
const FOO_WRAPPER: &str = "#!/bin/sh\nexec foo.distrib \"$@\"\n";
const COPYRIGHT: &str = "libc copyright";

fn status_paragraph(name: &str, arch: &str, version: &str, extra: &str) -> String {
    format!(
        "Package: {name}\nStatus: install ok installed\nPriority: optional\nArchitecture: {arch}\nVersion: {version}\nDescription: the {name} package\n with a continuation line\n{extra}\n"
    )
}

/// A root with a dpkg database: coreutils (ls), nginx-common (a modified conffile), vim (an
/// alternative's target), foo (a file diverted by foo-wrapper), libc6 for two architectures
/// (one file listed by both), a package removed but for its conffiles, shared directories,
/// and the service's own file.
fn fixture_root() -> ScratchDir {
    let tree = ScratchDir::new("dpkg");
    let write = |path: &str, text: &str| tree.write(path, text).unwrap_or_else(|e| panic!("{e}"));
    write("/usr/bin/ls", LS);
    write("/etc/nginx/nginx.conf", NGINX_CONF_LOCAL);
    write("/usr/bin/vim.basic", VIM);
    write("/usr/bin/foo.distrib", FOO_REAL);
    write("/usr/bin/foo", FOO_WRAPPER);
    write("/usr/share/doc/libc6/copyright", COPYRIGHT);
    write("/srv/app/run.sh", "#!/bin/sh\necho hello\n");
    write("/etc/old.conf", "left over\n");
    tree.dir("/etc/alternatives")
        .and_then(|()| tree.link("/etc/alternatives/editor", "/usr/bin/vim.basic"))
        .and_then(|()| tree.link("/usr/bin/editor", "/etc/alternatives/editor"))
        .unwrap_or_else(|e| panic!("{e}"));
    let mut status = String::new();
    status += &status_paragraph("dpkg", "amd64", "1.21.22", "Essential: yes");
    status += "\n";
    status += &status_paragraph("coreutils", "amd64", "9.1-1", "");
    status += "\n";
    status += &status_paragraph(
        "nginx-common",
        "all",
        "1.22.1-9",
        &format!(
            "Conffiles:\n /etc/nginx/nginx.conf {}\n /etc/nginx/gone.conf {} obsolete",
            md5_hex(NGINX_CONF_PACKAGED),
            md5_hex("x")
        ),
    );
    status += "\n";
    status += &status_paragraph("vim", "amd64", "2:9.0.1378-2", "");
    status += "\n";
    status += &status_paragraph("foo", "amd64", "1.0-1", "");
    status += "\n";
    status += &status_paragraph("foo-wrapper", "all", "0.1", "");
    status += "\n";
    status += &status_paragraph("libc6", "amd64", "2.36-9", "Multi-Arch: same");
    status += "\n";
    status += &status_paragraph("libc6", "i386", "2.36-9", "Multi-Arch: same");
    status += "\n";
    status += "Package: oldpkg\nStatus: deinstall ok config-files\nArchitecture: all\nVersion: 1\nConffiles:\n /etc/old.conf 00000000000000000000000000000000\n";
    write("/var/lib/dpkg/status", &status);
    let info = |name: &str, list: &[&str], sums: &[(&str, &str)]| {
        let mut text = String::new();
        for path in list {
            text += path;
            text += "\n";
        }
        write(&format!("/var/lib/dpkg/info/{name}.list"), &text);
        let mut text = String::new();
        for (path, content) in sums {
            text += &format!("{}  {}\n", md5_hex(content), path.trim_start_matches('/'));
        }
        write(&format!("/var/lib/dpkg/info/{name}.md5sums"), &text);
    };
    info(
        "coreutils",
        &["/.", "/usr", "/usr/bin", "/usr/bin/ls"],
        &[("/usr/bin/ls", LS)],
    );
    info(
        "nginx-common",
        &["/.", "/etc", "/etc/nginx", "/etc/nginx/nginx.conf"],
        &[],
    );
    info(
        "vim",
        &["/.", "/usr", "/usr/bin", "/usr/bin/vim.basic"],
        &[("/usr/bin/vim.basic", VIM)],
    );
    info(
        "foo",
        &["/.", "/usr", "/usr/bin", "/usr/bin/foo"],
        &[("/usr/bin/foo", FOO_REAL)],
    );
    info(
        "foo-wrapper",
        &["/.", "/usr", "/usr/bin", "/usr/bin/foo"],
        &[("/usr/bin/foo", FOO_WRAPPER)],
    );
    let libc = [
        "/.",
        "/usr",
        "/usr/share",
        "/usr/share/doc",
        "/usr/share/doc/libc6",
        "/usr/share/doc/libc6/copyright",
    ];
    info(
        "libc6:amd64",
        &libc,
        &[("/usr/share/doc/libc6/copyright", COPYRIGHT)],
    );
    info(
        "libc6:i386",
        &libc,
        &[("/usr/share/doc/libc6/copyright", COPYRIGHT)],
    );
    info("oldpkg", &["/etc/old.conf"], &[]);
    write(
        "/var/lib/dpkg/diversions",
        "/usr/bin/foo\n/usr/bin/foo.distrib\nfoo-wrapper\n",
    );
    tree
}

const SET: &[&str] = &[
    "/",
    "/etc",
    "/etc/alternatives",
    "/etc/alternatives/editor",
    "/etc/nginx",
    "/etc/nginx/nginx.conf",
    "/etc/old.conf",
    "/srv",
    "/srv/app",
    "/srv/app/run.sh",
    "/usr",
    "/usr/bin",
    "/usr/bin/editor",
    "/usr/bin/foo",
    "/usr/bin/foo.distrib",
    "/usr/bin/ls",
    "/usr/bin/vim.basic",
    "/usr/share",
    "/usr/share/doc",
    "/usr/share/doc/libc6",
    "/usr/share/doc/libc6/copyright",
    "/var",
    "/var/lib",
    "/var/lib/dpkg",
    "/var/lib/dpkg/status",
];

fn report(tree: &ScratchDir, policy: &PolicyChoice) -> PackagesReport {
    classify(tree.root(), &set_of(tree, SET), policy).unwrap_or_else(|e| panic!("{e}"))
}

fn file<'a>(report: &'a PackagesReport, path: &str) -> &'a FileReport {
    report
        .files
        .iter()
        .find(|f| f.path.0 == path.as_bytes())
        .unwrap_or_else(|| panic!("{path} not classified"))
}

fn package<'a>(report: &'a PackagesReport, apt_name: &str) -> Option<&'a PackageUse> {
    report.packages.iter().find(|p| p.apt_name == apt_name)
}

#[test]
fn pristine_files_match_their_package_and_a_changed_conffile_is_modified() {
    let tree = fixture_root();
    let report = report(&tree, &PolicyChoice::default());
    let ls = file(&report, "/usr/bin/ls");
    assert_eq!(
        (ls.class, ls.checksum, &ls.packages[..], ls.copied),
        (
            FileClass::Pristine,
            Some(Checksum::Matches),
            &["coreutils".to_string()][..],
            false
        )
    );
    let conf = file(&report, "/etc/nginx/nginx.conf");
    assert_eq!(conf.class, FileClass::Modified);
    assert!(conf.conffile && conf.copied);
    let nginx = package(&report, "nginx-common").unwrap_or_else(|| panic!("nginx-common"));
    assert_eq!((nginx.files, nginx.modified, nginx.installed), (1, 1, true));
    assert_eq!(nginx.version, "1.22.1-9");
    let own = file(&report, "/srv/app/run.sh");
    assert_eq!((own.class, own.copied), (FileClass::Unowned, true));
    // A directory no package creates is copied (its mode and owner are the service's).
    assert!(file(&report, "/srv/app").copied);
    // A removed package's left-over conffile is nobody's.
    assert_eq!(file(&report, "/etc/old.conf").class, FileClass::Unowned);
    assert!(package(&report, "oldpkg").is_none());
    // The database itself is never copied over an image's.
    let status = file(&report, "/var/lib/dpkg/status");
    assert_eq!(
        (status.class, status.copied),
        (FileClass::PackageState, false)
    );
    assert_eq!(
        report.install_lines(),
        [
            "coreutils=9.1-1",
            "foo-wrapper=0.1",
            "foo=1.0-1",
            "libc6:i386=2.36-9",
            "libc6=2.36-9",
            "nginx-common=1.22.1-9",
            "vim=2:9.0.1378-2"
        ]
    );
}

#[test]
fn directories_are_shared_by_packages_and_not_copied() {
    let tree = fixture_root();
    let report = report(&tree, &PolicyChoice::default());
    let usr_bin = file(&report, "/usr/bin");
    assert_eq!(usr_bin.class, FileClass::Directory);
    assert_eq!(usr_bin.packages, ["coreutils", "foo", "foo-wrapper", "vim"]);
    assert!(!usr_bin.copied);
    // No package lists /srv: created locally, so it is copied with its own metadata.
    assert_eq!(file(&report, "/srv").packages, Vec::<String>::new());
    let coreutils = package(&report, "coreutils").unwrap_or_else(|| panic!("coreutils"));
    assert_eq!((coreutils.files, coreutils.directories), (1, 3));
}

#[test]
fn a_file_listed_by_two_architectures_is_owned_by_both() {
    let tree = fixture_root();
    let report = report(&tree, &PolicyChoice::default());
    let copyright = file(&report, "/usr/share/doc/libc6/copyright");
    assert_eq!(copyright.class, FileClass::Pristine);
    assert_eq!(copyright.packages, ["libc6", "libc6:i386"]);
    let amd64 = package(&report, "libc6").unwrap_or_else(|| panic!("libc6"));
    let i386 = package(&report, "libc6:i386").unwrap_or_else(|| panic!("libc6:i386"));
    assert_eq!((amd64.architecture.as_str(), amd64.files), ("amd64", 1));
    assert_eq!((i386.architecture.as_str(), i386.files), ("i386", 1));
}

#[test]
fn a_diverted_file_belongs_to_its_package_under_the_new_name() {
    let tree = fixture_root();
    let report = report(&tree, &PolicyChoice::default());
    let distrib = file(&report, "/usr/bin/foo.distrib");
    assert_eq!(
        (distrib.class, &distrib.packages[..]),
        (FileClass::Pristine, &["foo".to_string()][..])
    );
    assert!(
        distrib
            .diversion
            .as_deref()
            .is_some_and(|d| d.contains("by foo-wrapper")),
        "{distrib:?}"
    );
    // The original name holds the diverting package's file, checked against its checksum.
    let wrapper = file(&report, "/usr/bin/foo");
    assert_eq!(
        (wrapper.class, &wrapper.packages[..]),
        (FileClass::Pristine, &["foo-wrapper".to_string()][..])
    );
}

#[test]
fn an_alternative_is_provided_by_the_package_of_its_target() {
    let tree = fixture_root();
    let report = report(&tree, &PolicyChoice::default());
    for link in ["/etc/alternatives/editor", "/usr/bin/editor"] {
        let alt = file(&report, link);
        assert_eq!(alt.class, FileClass::Alternative, "{link}");
        assert_eq!(alt.packages, ["vim"], "{link}");
        assert_eq!(
            alt.alternative_target.as_ref().map(|t| t.0.as_slice()),
            Some(b"/usr/bin/vim.basic".as_slice())
        );
        assert!(!alt.copied);
    }
}

#[test]
fn the_copy_policy_copies_a_packages_files_and_does_not_install_it() {
    let tree = fixture_root();
    let policy = PolicyChoice {
        copy: ["coreutils".to_string()].into(),
        ..PolicyChoice::default()
    };
    let report = report(&tree, &policy);
    assert!(file(&report, "/usr/bin/ls").copied);
    assert!(!file(&report, "/usr/bin/vim.basic").copied);
    assert!(
        !report
            .install_lines()
            .iter()
            .any(|l| l.starts_with("coreutils"))
    );
    // /usr/bin is still created by vim, which is installed.
    assert!(!file(&report, "/usr/bin").copied);
    let all_copied = report_all_copy(&tree);
    assert!(all_copied.install_lines().is_empty());
    assert!(file(&all_copied, "/usr/bin").copied);
}

fn report_all_copy(tree: &ScratchDir) -> PackagesReport {
    let policy = PolicyChoice {
        default: Policy::Copy,
        install: BTreeSet::new(),
        copy: BTreeSet::new(),
    };
    report(tree, &policy)
}

#[test]
fn a_root_without_a_dpkg_database_has_only_unowned_files() {
    let tree = fixture_root();
    std::fs::remove_dir_all(tree.file("var/lib/dpkg")).unwrap_or_else(|e| panic!("{e}"));
    let set = set_of(&tree, &["/", "/usr", "/usr/bin", "/usr/bin/ls"]);
    let report =
        classify(tree.root(), &set, &PolicyChoice::default()).unwrap_or_else(|e| panic!("{e}"));
    assert!(!report.dpkg_database);
    assert!(
        report
            .warning
            .as_deref()
            .is_some_and(|w| w.contains("no dpkg database")),
        "{:?}",
        report.warning
    );
    assert_eq!(file(&report, "/usr/bin/ls").class, FileClass::Unowned);
    assert!(report.packages.is_empty());
}

#[test]
fn a_corrupt_status_file_is_one_error_naming_its_line() {
    let tree = fixture_root();
    tree.write(
        "/var/lib/dpkg/status",
        "Package: a\nStatus: install ok installed\nVersion: 1\n\nPackage: b\nthis line is garbage\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let error = classify(tree.root(), &set_of(&tree, SET), &PolicyChoice::default())
        .err()
        .map(|e| e.to_string());
    let expected = format!(
        "{}:6: corrupt: not a field (no ':'): \"this line is garbage\"",
        tree.file("var/lib/dpkg/status").display()
    );
    assert_eq!(error.as_deref(), Some(expected.as_str()));
    tree.write(
        "/var/lib/dpkg/status",
        "Version: 1\nStatus: install ok installed\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let error = classify(tree.root(), &set_of(&tree, SET), &PolicyChoice::default())
        .err()
        .map(|e| e.to_string());
    assert!(
        error
            .as_deref()
            .is_some_and(|e| e.ends_with("status:1: corrupt: a paragraph without a Package field")),
        "{error:?}"
    );
}

#[test]
fn on_a_merged_usr_root_a_package_listing_bin_owns_usr_bin() {
    let tree = ScratchDir::new("usrmerge");
    let write = |path: &str, text: &str| tree.write(path, text).unwrap_or_else(|e| panic!("{e}"));
    write("/usr/bin/true", "true binary");
    tree.link("/bin", "usr/bin")
        .unwrap_or_else(|e| panic!("{e}"));
    write(
        "/var/lib/dpkg/status",
        &status_paragraph("coreutils", "amd64", "9.1-1", ""),
    );
    write("/var/lib/dpkg/info/coreutils.list", "/.\n/bin\n/bin/true\n");
    write(
        "/var/lib/dpkg/info/coreutils.md5sums",
        &format!("{}  bin/true\n", md5_hex("true binary")),
    );
    let set = set_of(&tree, &["/", "/bin", "/usr", "/usr/bin", "/usr/bin/true"]);
    let report =
        classify(tree.root(), &set, &PolicyChoice::default()).unwrap_or_else(|e| panic!("{e}"));
    let file_true = file(&report, "/usr/bin/true");
    assert_eq!(
        (file_true.class, file_true.checksum, &file_true.packages[..]),
        (
            FileClass::Pristine,
            Some(Checksum::Matches),
            &["coreutils".to_string()][..]
        )
    );
    // The /bin link is the directory the package lists: not a file of the package.
    assert_eq!(file(&report, "/bin").class, FileClass::Directory);
    assert_eq!(
        package(&report, "coreutils").map(|p| (p.files, p.directories)),
        Some((1, 2))
    );
}

#[test]
fn language_packages_account_for_their_files() {
    let tree = ScratchDir::new("lang");
    let write = |path: &str, text: &str| tree.write(path, text).unwrap_or_else(|e| panic!("{e}"));
    let site = "/usr/lib/python3/dist-packages";
    write(&format!("{site}/requests/__init__.py"), "x");
    write(
        &format!("{site}/requests-2.28.1.dist-info/METADATA"),
        "Metadata-Version: 2.1\nName: requests\nVersion: 2.28.1\n\nbody Name: no\n",
    );
    write(
        &format!("{site}/requests-2.28.1.dist-info/RECORD"),
        "requests/__init__.py,sha256=abc,1\nrequests-2.28.1.dist-info/METADATA,,\n",
    );
    write("/srv/app/node_modules/left-pad/index.js", "x");
    write(
        "/srv/app/node_modules/left-pad/package.json",
        r#"{"name": "left-pad", "version": "1.3.0"}"#,
    );
    write("/srv/app/node_modules/@scope/pkg/lib/a.js", "x");
    write(
        "/srv/app/node_modules/@scope/pkg/package.json",
        r#"{"name": "@scope/pkg", "version": "0.0.1"}"#,
    );
    write(
        "/opt/app/classes/META-INF/maven/org.example/demo/pom.properties",
        "#generated\ngroupId=org.example\nartifactId=demo\nversion=1.2.3\n",
    );
    write("/opt/app/classes/org/example/Main.class", "x");
    let set = set_of(
        &tree,
        &[
            &format!("{site}/requests/__init__.py"),
            "/srv/app/node_modules/left-pad/index.js",
            "/srv/app/node_modules/@scope/pkg/lib/a.js",
            "/opt/app/classes/META-INF/maven/org.example/demo/pom.properties",
            "/opt/app/classes/org/example/Main.class",
        ],
    );
    let found: Vec<(String, String, String, usize)> = language::find(tree.root(), &set)
        .into_iter()
        .map(|p| (p.ecosystem.to_string(), p.name, p.version, p.files.len()))
        .collect();
    let expected = [
        ("maven", "org.example:demo", "1.2.3", 2),
        ("npm", "@scope/pkg", "0.0.1", 1),
        ("npm", "left-pad", "1.3.0", 1),
        ("python", "requests", "2.28.1", 1),
    ]
    .map(|(e, n, v, c)| (e.to_string(), n.to_string(), v.to_string(), c));
    assert_eq!(found, expected);
}

#[test]
fn a_jar_names_its_maven_artifact() {
    let jars: Vec<_> = ["/usr/share/java", "/usr/share/maven-repo"]
        .iter()
        .filter_map(|dir| std::fs::read_dir(dir).ok())
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "jar"))
        .collect();
    // A stored jar made here, so the test needs no Java installed.
    let tree = ScratchDir::new("jar");
    let jar = tree.file("demo.jar");
    std::fs::write(
        &jar,
        stored_zip(
            "META-INF/maven/g/a/pom.properties",
            b"groupId=g\nartifactId=a\nversion=7\n",
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let found = language::jar_pom_properties(&jar);
    assert_eq!(found.len(), 1);
    assert!(found[0].contains("artifactId=a"));
    // Any jar on this machine at least does not make the reader fail.
    for jar in jars.iter().take(5) {
        let _ = language::jar_pom_properties(jar);
    }
}

/// A zip file holding one stored member.
fn stored_zip(name: &str, data: &[u8]) -> Vec<u8> {
    let crc = crc32(data);
    let mut out = Vec::new();
    let local = |out: &mut Vec<u8>| {
        out.extend_from_slice(&[0x50, 0x4b, 0x03, 0x04, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        out.extend_from_slice(&crc.to_le_bytes());
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(&(name.len() as u16).to_le_bytes());
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(data);
    };
    local(&mut out);
    let cd_offset = out.len() as u32;
    out.extend_from_slice(&[0x50, 0x4b, 0x01, 0x02, 20, 0, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(&(name.len() as u16).to_le_bytes());
    out.extend_from_slice(&[0; 12]);
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(name.as_bytes());
    let cd_size = out.len() as u32 - cd_offset;
    out.extend_from_slice(&[0x50, 0x4b, 0x05, 0x06, 0, 0, 0, 0, 1, 0, 1, 0]);
    out.extend_from_slice(&cd_size.to_le_bytes());
    out.extend_from_slice(&cd_offset.to_le_bytes());
    out.extend_from_slice(&[0, 0]);
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}
