//! Package data of a side: the packages installed in a tree (its dpkg database, read once with
//! [`crate::analysis::packages::DpkgDb`]) and the package that owns each of the side's paths.
//! `manifest` writes both, a log's side gets them from its source tree, an exported directory
//! from its own database when it holds one. A path listed by several packages gets the first
//! of their apt names in byte order (`libc6` before `libc6:i386`), except a directory listed
//! by several (or a merged-/usr link such as `/bin`), which belongs to none of them (`/usr` is
//! listed by hundreds). [`changes`]
//! compares the package lists of two sides: packages added, removed, at another version.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::Side;
use crate::analysis::packages::{DpkgDb, PackageError, dpkg};
use crate::record::FileKind;

/// One installed package, as a manifest lists it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct InstalledPackage {
    pub name: String,
    pub version: String,
    pub arch: String,
}

/// The architecture apt calls native: dpkg's own (as [`DpkgDb`] has it).
fn native_arch(packages: &[InstalledPackage]) -> &str {
    packages
        .iter()
        .find(|p| p.name == "dpkg")
        .map_or("", |p| p.arch.as_str())
}

/// How apt names a package: `name:arch` for another architecture than the native one (and
/// not `all`), the name alone otherwise. A path's `package` is this name.
pub fn apt_name(package: &InstalledPackage, native: &str) -> String {
    if package.arch == "all" || package.arch == native || native.is_empty() {
        package.name.clone()
    } else {
        format!("{}:{}", package.name, package.arch)
    }
}

/// The package of `packages` an apt name (a path's `package`) refers to.
pub fn find<'a>(packages: &'a [InstalledPackage], apt: &str) -> Option<&'a InstalledPackage> {
    let native = native_arch(packages);
    packages.iter().find(|p| apt_name(p, native) == apt)
}

/// The root has a dpkg database (its status file).
pub fn has_dpkg_database(root: &Path) -> bool {
    root.join(dpkg::STATUS).is_file()
}

/// Adds the package data of the tree at `root` to `side`: its installed packages, and each
/// entry's owner (by the path's kind on the side). Nothing changes when the root has no dpkg
/// database; an unreadable or corrupt one is an error (the caller decides whether to go on).
/// Returns whether there was a database.
pub fn attach(side: &mut Side, root: &Path) -> Result<bool, PackageError> {
    if !has_dpkg_database(root) {
        return Ok(false);
    }
    let wanted: HashSet<Vec<u8>> = side.entries.iter().map(|e| e.path.clone()).collect();
    let Some(owners) = Owners::load(root, &wanted)? else {
        return Ok(false);
    };
    drop(wanted);
    for entry in &mut side.entries {
        entry.package = owners.owner(&entry.path, entry.kind == FileKind::Dir);
    }
    side.packages = Some(owners.packages());
    Ok(true)
}

/// Which package owns which of the paths asked about.
pub struct Owners {
    db: DpkgDb,
}

impl Owners {
    /// Reads the database under `root`, keeping the paths of `wanted`. None when the root has
    /// no dpkg database.
    pub fn load(root: &Path, wanted: &HashSet<Vec<u8>>) -> Result<Option<Owners>, PackageError> {
        // Every wanted path passed as a "directory" too: only owners are needed, so no
        // package's md5sums file is read (the checksums are `depsetfs packages`' business).
        Ok(DpkgDb::load(root, wanted, wanted)?.map(|db| Owners { db }))
    }

    /// Every installed package, sorted by name and architecture.
    pub fn packages(&self) -> Vec<InstalledPackage> {
        let mut out: Vec<InstalledPackage> = self
            .db
            .packages
            .iter()
            .map(|p| InstalledPackage {
                name: p.name.clone(),
                version: p.version.clone(),
                arch: p.architecture.clone(),
            })
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// The owner of `path` (an apt name): the first in byte order when several packages list
    /// it, none for a directory several packages list.
    pub fn owner(&self, path: &[u8], is_dir: bool) -> Option<String> {
        let owners = &self.db.facts(path)?.owners;
        // A merged-/usr link (`/bin` -> `usr/bin`) is the directory the packages list.
        let is_dir = is_dir || self.db.aliases.iter().any(|(link, _)| link == path);
        if owners.is_empty() || (is_dir && owners.len() > 1) {
            return None;
        }
        owners
            .iter()
            .map(|&o| self.db.packages[o].apt_name(&self.db.native_architecture))
            .min()
    }
}

/// A package whose version differs between two sides.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VersionChange {
    pub name: String,
    pub arch: String,
    pub a: String,
    pub b: String,
}

/// What differs between two package lists.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PackageChanges {
    /// Installed only on B.
    pub added: Vec<InstalledPackage>,
    /// Installed only on A.
    pub removed: Vec<InstalledPackage>,
    pub changed: Vec<VersionChange>,
}

impl PackageChanges {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

/// The package-level differences of `a` and `b`, when both have package lists.
pub fn changes(a: &Side, b: &Side) -> Option<PackageChanges> {
    let (a, b) = (a.packages.as_ref()?, b.packages.as_ref()?);
    let key = |p: &InstalledPackage| (p.name.clone(), p.arch.clone());
    let a_by: BTreeMap<_, _> = a.iter().map(|p| (key(p), p)).collect();
    let b_by: BTreeMap<_, _> = b.iter().map(|p| (key(p), p)).collect();
    let mut out = PackageChanges::default();
    for (k, p) in &a_by {
        match b_by.get(k) {
            None => out.removed.push((*p).clone()),
            Some(q) if q.version != p.version => out.changed.push(VersionChange {
                name: p.name.clone(),
                arch: p.arch.clone(),
                a: p.version.clone(),
                b: q.version.clone(),
            }),
            Some(_) => {}
        }
    }
    out.added = b_by
        .iter()
        .filter(|(k, _)| !a_by.contains_key(*k))
        .map(|(_, p)| (*p).clone())
        .collect();
    Some(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::fixtures::ScratchDir;

    /// A root with a dpkg database: dpkg, zlib1g at `zlib_version` (`/usr/lib/libz.so.1`,
    /// listed as `/lib/libz.so.1` under the merged-/usr link `/lib` both packages list),
    /// libc6 for amd64 and i386 (both list one copyright file), `/usr` listed by several, and the
    /// service's own `/srv/app`.
    pub(crate) fn dpkg_root(scratch: &ScratchDir, dir: &str, zlib_version: &str) -> PathBuf {
        let root = scratch.root().join(dir);
        let write = |path: &str, text: &str| {
            let host = root.join(path);
            std::fs::create_dir_all(host.parent().unwrap_or(&root))
                .and_then(|()| std::fs::write(&host, text))
                .unwrap_or_else(|e| panic!("{}: {e}", host.display()));
        };
        write("usr/lib/libz.so.1", &format!("zlib {zlib_version}"));
        write("usr/share/doc/libc6/copyright", "libc copyright");
        write("usr/bin/dpkg", "dpkg");
        write("srv/app/run.sh", "#!/bin/sh\n");
        std::os::unix::fs::symlink("usr/lib", root.join("lib"))
            .unwrap_or_else(|e| panic!("{}: {e}", root.display()));
        let paragraph = |name: &str, arch: &str, version: &str| {
            format!(
                "Package: {name}\nStatus: install ok installed\nArchitecture: {arch}\nVersion: {version}\nMulti-Arch: same\n\n"
            )
        };
        let mut status = paragraph("dpkg", "amd64", "1.21.22");
        status += &paragraph("zlib1g", "amd64", zlib_version);
        status += &paragraph("libc6", "amd64", "2.36-9");
        status += &paragraph("libc6", "i386", "2.36-9");
        write("var/lib/dpkg/status", &status);
        // Listed under the merged-/usr link, as on a real system.
        write(
            "var/lib/dpkg/info/zlib1g:amd64.list",
            "/.\n/lib\n/lib/libz.so.1\n",
        );
        write(
            "var/lib/dpkg/info/dpkg:amd64.list",
            "/.\n/lib\n/usr\n/usr/bin\n/usr/bin/dpkg\n",
        );
        let libc = "/.\n/usr\n/usr/share\n/usr/share/doc\n/usr/share/doc/libc6\n/usr/share/doc/libc6/copyright\n";
        write("var/lib/dpkg/info/libc6:amd64.list", libc);
        write("var/lib/dpkg/info/libc6:i386.list", libc);
        root
    }

    use std::path::PathBuf;

    #[test]
    fn owners_are_chosen_deterministically() -> Result<(), Box<dyn std::error::Error>> {
        let scratch = ScratchDir::new("compare-owners");
        let root = dpkg_root(&scratch, "root", "1:1.2.13");
        let wanted: HashSet<Vec<u8>> = [
            "/lib",
            "/usr",
            "/usr/bin",
            "/usr/lib/libz.so.1",
            "/usr/share/doc/libc6/copyright",
            "/usr/share/doc/libc6",
            "/srv/app/run.sh",
        ]
        .iter()
        .map(|p| p.as_bytes().to_vec())
        .collect();
        let owners = Owners::load(&root, &wanted)?.ok_or("no database")?;
        assert_eq!(
            owners.owner(b"/usr/lib/libz.so.1", false).as_deref(),
            Some("zlib1g")
        );
        // Listed by libc6 and libc6:i386: the first apt name.
        assert_eq!(
            owners
                .owner(b"/usr/share/doc/libc6/copyright", false)
                .as_deref(),
            Some("libc6")
        );
        // A directory of one package is its; one several list is nobody's.
        assert_eq!(owners.owner(b"/usr/bin", true).as_deref(), Some("dpkg"));
        // The merged-/usr link both list: nobody's, though it is a symlink.
        assert_eq!(owners.owner(b"/lib", false), None);
        assert_eq!(owners.owner(b"/usr/share/doc/libc6", true), None);
        assert_eq!(owners.owner(b"/usr", true), None);
        assert_eq!(owners.owner(b"/srv/app/run.sh", false), None);
        let packages = owners.packages();
        assert_eq!(packages.len(), 4);
        assert_eq!(
            find(&packages, "libc6:i386").map(|p| p.arch.as_str()),
            Some("i386")
        );
        assert_eq!(
            find(&packages, "libc6").map(|p| p.arch.as_str()),
            Some("amd64")
        );
        assert!(Owners::load(scratch.root(), &wanted)?.is_none());
        Ok(())
    }
}
