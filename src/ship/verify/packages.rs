//! `verify --packages`: the root of a round built the way the Dockerfile of
//! `export --format dockerfile` describes, without a container engine. `mmdebstrap` makes a
//! Debian root of the source's suite (its os-release code name) from the source's own apt
//! sources, with the packages the policy installs pinned at their traced versions
//! (`--include=name=version`; a superseded pin is installed at the archive's version, and a
//! pin's exact-version dependencies, found by `apt-get -s` in an empty root, are pinned too);
//! the downloaded packages are kept in a cache directory between
//! runs (its sync-in/sync-out hooks). The copied paths (modified, unowned, packages chosen to
//! copy) are then written over it with the `dir` export writer (into a staging tree, then
//! `cp -a`, as `COPY` would), owners and modes included.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{VerifyError, io_error};
use crate::analysis::closure::DeploymentSet;
use crate::analysis::packages::{self, PolicyChoice};
use crate::ship::export::{self, Stubs, dockerfile};

/// How `verify --packages` builds its roots.
#[derive(Clone, Debug)]
pub struct PackagesRoot {
    pub policy: PolicyChoice,
    /// Where downloaded packages are kept between runs.
    pub cache: PathBuf,
}

/// The apt sources files of the tree at `source` (deb822 `.sources` and one-line `.list`).
fn apt_sources(source: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let list = source.join("etc/apt/sources.list");
    if std::fs::metadata(&list).is_ok_and(|m| m.len() > 0) {
        files.push(list);
    }
    if let Ok(entries) = std::fs::read_dir(source.join("etc/apt/sources.list.d")) {
        let mut more: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "sources" || e == "list"))
            .collect();
        more.sort();
        files.extend(more);
    }
    files
}

fn failed(what: &str) -> VerifyError {
    VerifyError::Io {
        path: PathBuf::from("mmdebstrap"),
        action: "build the root from the distribution",
        source: std::io::Error::other(what.to_string()),
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

/// The `name=version` lines whose version the source's apt sources still offer, the others as
/// bare names; and those others. Without an answer from apt-cache, every line as it is.
pub fn pinned_if_available(source: &Path, lines: &[String]) -> (Vec<String>, Vec<String>) {
    if lines.is_empty() {
        return (Vec::new(), Vec::new());
    }
    let names: Vec<&str> = lines.iter().map(|l| package_name(l)).collect();
    let Some(offered) = offered_versions(source, &names) else {
        return (lines.to_vec(), Vec::new());
    };
    let mut pinned = Vec::new();
    let mut unavailable = Vec::new();
    for (line, name) in lines.iter().zip(&names) {
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

/// An exact-version dependency apt could not meet: `package` needs `dependency` at `version`.
#[derive(Debug, PartialEq)]
struct ExactDependency {
    package: String,
    dependency: String,
    version: String,
}

/// The exact-version dependencies in apt's "unmet dependencies" report, as in
/// ` libnss-systemd : Depends: systemd (= 252.38-1~deb12u1) but 252.39-1~deb12u2 is to be
/// installed` (a continuation line names no package: the previous line's).
fn unmet_exact_dependencies(report: &str) -> Vec<ExactDependency> {
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
            // Something else; mmdebstrap will say what.
            return (added, unpinned);
        }
        let wanted: Vec<&str> = unmet.iter().map(|u| u.dependency.as_str()).collect();
        let offered = offered_versions(source, &wanted).unwrap_or_default();
        let mut changed = false;
        for need in &unmet {
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
        if !changed {
            return (added, unpinned);
        }
    }
    (added, unpinned)
}

/// Builds `root` (which must not exist) for `set`, read from `source`; returns the number of
/// packages installed and paths copied.
pub fn build_root(
    source: &Path,
    set: &DeploymentSet,
    how: &PackagesRoot,
    root: &Path,
    workdir: &Path,
) -> Result<(usize, usize), VerifyError> {
    let report = packages::classify(source, set, &how.policy).map_err(|e| VerifyError::Io {
        path: source.to_path_buf(),
        action: "read the packages of",
        source: std::io::Error::other(e.to_string()),
    })?;
    let image = dockerfile::base_image(source)?;
    let suite = image.split_once(':').map_or(image.as_str(), |(_, s)| s);
    let sources = apt_sources(source);
    if sources.is_empty() {
        return Err(failed(
            "the source tree has no apt sources (etc/apt/sources.list*)",
        ));
    }
    std::fs::create_dir_all(&how.cache).map_err(io_error(&how.cache, "create"))?;
    let (mut install, unavailable) = pinned_if_available(source, &report.install_lines());
    if !unavailable.is_empty() {
        eprintln!(
            "depsetfs: warning: not in the archive at the traced version (superseded), installed at the archive's: {}",
            unavailable.join(" ")
        );
    }
    let (added, unpinned) = pin_exact_dependencies(source, &mut install);
    if !added.is_empty() {
        eprintln!(
            "depsetfs: also pinned, as the traced packages need them at exactly these versions: {}",
            added.join(" ")
        );
    }
    if !unpinned.is_empty() {
        eprintln!(
            "depsetfs: warning: needs a version of another package the archive no longer has, installed at the archive's: {}",
            unpinned.join(" ")
        );
    }
    let cache = how.cache.display().to_string().replace('\'', "");
    let mut command = Command::new("mmdebstrap");
    command
        .arg("--variant=apt")
        .arg("--skip=essential/unlink")
        .arg("--quiet")
        // The base image's essential packages may be newer than the traced pins.
        .arg("--aptopt=APT::Get::allow-downgrades \"true\"")
        .arg(format!(
            "--setup-hook=mkdir -p '{cache}' \"$1\"/var/cache/apt/archives/"
        ))
        .arg(format!(
            "--setup-hook=sync-in '{cache}' /var/cache/apt/archives/"
        ))
        .arg(format!(
            "--customize-hook=sync-out /var/cache/apt/archives '{cache}'"
        ));
    if !install.is_empty() {
        command.arg(format!("--include={}", install.join(",")));
    }
    command.arg(suite).arg(root).args(&sources);
    eprintln!(
        "depsetfs: building a {suite} root with mmdebstrap and {} packages (cache {})",
        install.len(),
        how.cache.display()
    );
    let out = command
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(io_error(Path::new("mmdebstrap"), "run"))?;
    if !out.status.success() {
        // apt's reasons, on one line (the command line it echoes is left out).
        let text = String::from_utf8_lossy(&out.stderr);
        let mut reasons: Vec<&str> = text
            .lines()
            .filter(|l| {
                l.starts_with("E: ")
                    && !l.starts_with("E: setup failed")
                    && !l.starts_with("E: mmdebstrap failed to run")
            })
            .collect();
        if reasons.is_empty() {
            // No apt error: the last lines say what failed (a hook, dpkg, a maintainer script).
            let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
            reasons = lines[lines.len().saturating_sub(3)..].to_vec();
        }
        return Err(failed(&format!(
            "mmdebstrap {suite} exited with {}: {}",
            out.status,
            reasons.join("; ")
        )));
    }
    // The copied paths with the directories above them, staged, then copied over the root.
    let copied = report.copied_paths();
    let overlay = workdir.join(format!(
        "{}.overlay",
        root.file_name().unwrap_or_default().to_string_lossy()
    ));
    let context = dockerfile::context_set(set, &copied);
    export::dir::write(&context, &Stubs::new(), source, &overlay, &mut |_, _, _| {})?;
    let mut from = overlay.clone().into_os_string();
    from.push("/.");
    let status = Command::new("cp")
        .arg("-a")
        .arg(&from)
        .arg(root)
        .status()
        .map_err(io_error(Path::new("cp"), "run"))?;
    export::remove_any(&overlay);
    if !status.success() {
        return Err(failed(&format!(
            "cp -a of the copied files exited with {status}"
        )));
    }
    Ok((install.len(), copied.len()))
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
}
