//! The apt pins of a shipment, made installable together: the `name=version` lines the
//! packages policy installs are checked against the source's apt sources (`apt-cache
//! madison`; a version the archive no longer offers is unpinned, installed at the archive's),
//! then resolved as apt would in an empty root (`apt-get -s`, no dpkg status) so that a pin's
//! exact-version dependencies (libnss-systemd needs systemd at its own version) are pinned too
//! when the archive has that version, and the pin needing them is otherwise unpinned. Shared by
//! `verify --packages` (the mmdebstrap root) and `export --format dockerfile|packages` (the
//! `apt-get install` line), so both install the same versions. The parsing and deciding are
//! pure ([`unmet_exact_dependencies`], [`split_by_offered`], [`apply_unmet`]); only [`resolve`]
//! runs apt.

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;

/// The pins after resolution, with what changed on the way.
#[derive(Debug, Default, PartialEq)]
pub struct Resolution {
    /// The lines to install: `name=version` or a bare `name`.
    pub install: Vec<String>,
    /// Traced pins the archive no longer offers, installed at the archive's version.
    pub superseded: Vec<String>,
    /// Pins added: exact-version dependencies of the traced pins.
    pub added: Vec<String>,
    /// Pins dropped: they need a version of another package the archive no longer has.
    pub unpinned: Vec<String>,
}

impl Resolution {
    /// Says on stderr what the resolution changed (one line each), and returns the lines.
    pub fn warned(self) -> Vec<String> {
        if !self.superseded.is_empty() {
            eprintln!(
                "depsetfs: warning: not in the archive at the traced version (superseded), installed at the archive's: {}",
                self.superseded.join(" ")
            );
        }
        if !self.added.is_empty() {
            eprintln!(
                "depsetfs: also pinned, as the traced packages need them at exactly these versions: {}",
                self.added.join(" ")
            );
        }
        if !self.unpinned.is_empty() {
            eprintln!(
                "depsetfs: warning: needs a version of another package the archive no longer has, installed at the archive's: {}",
                self.unpinned.join(" ")
            );
        }
        self.install
    }
}

/// `apt-cache`/`apt-get` with the source tree's apt configuration.
fn apt(program: &str, source: &Path) -> Command {
    let mut command = Command::new(program);
    if source != Path::new("/") {
        command.arg("-o").arg(format!("Dir={}", source.display()));
    }
    command.stdin(std::process::Stdio::null());
    command
}

/// The (name, version) pairs the source's apt sources offer for `names` (one `apt-cache
/// madison`), or None without an answer from apt-cache.
fn offered_versions(source: &Path, names: &[&str]) -> Option<HashSet<(String, String)>> {
    let out = apt("apt-cache", source)
        .arg("madison")
        .args(names)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    // " libc6 | 2.36-9+deb12u14 | http://... Packages"
    Some(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|line| {
                let mut fields = line.split('|').map(str::trim);
                Some((fields.next()?.to_string(), fields.next()?.to_string()))
            })
            .collect(),
    )
}

fn package_name(line: &str) -> &str {
    line.split_once('=').map_or(line, |(n, _)| n)
}

/// The `name=version` lines whose version is `offered` ((name, version) pairs), the others as
/// bare names; and those others.
pub fn split_by_offered(
    lines: &[String],
    offered: &HashSet<(String, String)>,
) -> (Vec<String>, Vec<String>) {
    let mut pinned = Vec::new();
    let mut unavailable = Vec::new();
    for line in lines {
        let name = package_name(line);
        let version = line.split_once('=').map_or("", |(_, v)| v);
        // madison names a foreign-architecture package without its `:arch`.
        let bare = name.split(':').next().unwrap_or(name);
        if offered.contains(&(bare.to_string(), version.to_string())) {
            pinned.push(line.clone());
        } else {
            pinned.push(name.to_string());
            unavailable.push(line.clone());
        }
    }
    (pinned, unavailable)
}

/// The `name=version` lines whose version the source's apt sources still offer, the others as
/// bare names; and those others. Without an answer from apt-cache, or when it knows none of
/// the names (no package lists: `apt-get update` never ran), every line as it is.
fn pinned_if_available(source: &Path, lines: &[String]) -> (Vec<String>, Vec<String>) {
    if lines.is_empty() {
        return (Vec::new(), Vec::new());
    }
    let names: Vec<&str> = lines.iter().map(|l| package_name(l)).collect();
    match offered_versions(source, &names) {
        Some(offered) if !offered.is_empty() => split_by_offered(lines, &offered),
        _ => (lines.to_vec(), Vec::new()),
    }
}

/// An exact-version dependency apt could not meet: `package` needs `dependency` at `version`.
#[derive(Debug, PartialEq)]
pub struct ExactDependency {
    package: String,
    dependency: String,
    version: String,
}

/// The exact-version dependencies in apt's "unmet dependencies" report, as in
/// ` libnss-systemd : Depends: systemd (= 252.38-1~deb12u1) but 252.39-1~deb12u2 is to be
/// installed` (a continuation line names no package: the previous line's).
pub fn unmet_exact_dependencies(report: &str) -> Vec<ExactDependency> {
    let mut found = Vec::new();
    let mut package = String::new();
    for line in report.lines() {
        let rest = match line.split_once(" : ") {
            Some((name, rest)) if line.starts_with(' ') => {
                package = name.trim().to_string();
                rest
            }
            _ => line,
        };
        let rest = rest.trim_start();
        let Some(rest) = rest
            .strip_prefix("Depends: ")
            .or_else(|| rest.strip_prefix("PreDepends: "))
        else {
            continue;
        };
        let Some((dependency, rest)) = rest.split_once(" (= ") else {
            continue;
        };
        let Some((version, _)) = rest.split_once(')') else {
            continue;
        };
        if !package.is_empty() {
            found.push(ExactDependency {
                package: package.clone(),
                dependency: dependency.trim().to_string(),
                version: version.to_string(),
            });
        }
    }
    found
}

/// One round of resolution: for each unmet exact-version dependency, pins the dependency at
/// the version asked for when it is `offered` and not already installed, else unpins the
/// package needing it. Records the pins added and the lines unpinned; false when nothing
/// changed.
pub fn apply_unmet(
    install: &mut Vec<String>,
    unmet: &[ExactDependency],
    offered: &HashSet<(String, String)>,
    added: &mut Vec<String>,
    unpinned: &mut Vec<String>,
) -> bool {
    let mut changed = false;
    for need in unmet {
        let already = install
            .iter()
            .any(|l| package_name(l) == need.dependency.as_str());
        if !already && offered.contains(&(need.dependency.clone(), need.version.clone())) {
            let pin = format!("{}={}", need.dependency, need.version);
            install.push(pin.clone());
            added.push(pin);
            changed = true;
        } else if let Some(line) = install
            .iter_mut()
            .find(|l| package_name(l) == need.package.as_str() && l.contains('='))
        {
            unpinned.push(std::mem::replace(line, need.package.clone()));
            changed = true;
        }
    }
    changed
}

/// Makes the pins installable together, as apt would resolve them in an empty root (`apt-get
/// -s` with no dpkg status): a pinned package that needs another at exactly its traced
/// version (libnss-systemd needs systemd at its own version, and apt would otherwise pick the
/// archive's newest systemd) gets that one pinned too when the archive has it, and is
/// otherwise installed at the archive's version. Returns the pins added and the packages
/// unpinned.
fn pin_exact_dependencies(source: &Path, install: &mut Vec<String>) -> (Vec<String>, Vec<String>) {
    let mut added = Vec::new();
    let mut unpinned = Vec::new();
    for _ in 0..16 {
        let Ok(out) = apt("apt-get", source)
            .args(["-s", "-o", "Dir::State::status=/dev/null"])
            .args(["install", "--no-install-recommends"])
            .args(install.iter())
            .output()
        else {
            return (added, unpinned);
        };
        if out.status.success() {
            return (added, unpinned);
        }
        let unmet = unmet_exact_dependencies(&String::from_utf8_lossy(&out.stdout));
        if unmet.is_empty() {
            // Something else; the install (mmdebstrap, the image build) will say what.
            return (added, unpinned);
        }
        let wanted: Vec<&str> = unmet.iter().map(|u| u.dependency.as_str()).collect();
        let offered = offered_versions(source, &wanted).unwrap_or_default();
        let changed = apply_unmet(install, &unmet, &offered, &mut added, &mut unpinned);
        if !changed {
            return (added, unpinned);
        }
    }
    (added, unpinned)
}

/// The pins of `lines` (traced `name=version`s) the source's apt sources can install together:
/// superseded versions unpinned, exact-version dependencies pinned (see the module header).
pub fn resolve(source: &Path, lines: &[String]) -> Resolution {
    let (mut install, superseded) = pinned_if_available(source, lines);
    let (added, unpinned) = pin_exact_dependencies(source, &mut install);
    Resolution {
        install,
        superseded,
        added,
        unpinned,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apt_s_report_of_exact_dependencies_is_read() {
        let report = "The following packages have unmet dependencies:\n \
            libnss-systemd : Depends: systemd (= 252.38-1~deb12u1) but 252.39-1~deb12u2 is to be installed\n                  \
            PreDepends: libsystemd0 (= 252.38-1~deb12u1) but 252.39-1~deb12u2 is to be installed\n \
            nginx : Depends: nginx-common (>= 1.22) but it is not going to be installed\n\
            E: Unable to correct problems, you have held broken packages.\n";
        let unmet = unmet_exact_dependencies(report);
        let pairs: Vec<(&str, &str, &str)> = unmet
            .iter()
            .map(|u| {
                (
                    u.package.as_str(),
                    u.dependency.as_str(),
                    u.version.as_str(),
                )
            })
            .collect();
        assert_eq!(
            pairs,
            [
                ("libnss-systemd", "systemd", "252.38-1~deb12u1"),
                ("libnss-systemd", "libsystemd0", "252.38-1~deb12u1"),
            ]
        );
    }

    fn owned(lines: &[&str]) -> Vec<String> {
        lines.iter().map(|l| l.to_string()).collect()
    }

    #[test]
    fn the_final_pins_add_exact_dependencies_and_drop_superseded_ones() {
        let offered: HashSet<(String, String)> = [
            ("libnss-systemd", "252.38-1~deb12u1"),
            ("systemd", "252.38-1~deb12u1"),
            ("nginx", "1.22.1-9+deb12u3"),
            ("libfoo1", "2.0-1"),
        ]
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
        let traced = owned(&[
            "libnss-systemd=252.38-1~deb12u1",
            "nginx=1.22.1-9+deb12u3",
            "libfoo1=2.0-1",
            "curl=7.88.1-10+deb12u5",
        ]);
        let (mut install, superseded) = split_by_offered(&traced, &offered);
        assert_eq!(superseded, ["curl=7.88.1-10+deb12u5"]);
        let report = "The following packages have unmet dependencies:\n \
            libnss-systemd : Depends: systemd (= 252.38-1~deb12u1) but 252.39-1~deb12u2 is to be installed\n \
            libfoo1 : Depends: libfoo-data (= 2.0-1) but 2.0-2 is to be installed\n\
            E: Unable to correct problems, you have held broken packages.\n";
        let unmet = unmet_exact_dependencies(report);
        let (mut added, mut unpinned) = (Vec::new(), Vec::new());
        assert!(apply_unmet(
            &mut install,
            &unmet,
            &offered,
            &mut added,
            &mut unpinned
        ));
        assert_eq!(added, ["systemd=252.38-1~deb12u1"]);
        assert_eq!(unpinned, ["libfoo1=2.0-1"]);
        assert_eq!(
            install,
            [
                "libnss-systemd=252.38-1~deb12u1",
                "nginx=1.22.1-9+deb12u3",
                "libfoo1",
                "curl",
                "systemd=252.38-1~deb12u1",
            ]
        );
    }
}
