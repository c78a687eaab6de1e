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

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{VerifyError, io_error};
use crate::analysis::closure::DeploymentSet;
use crate::analysis::packages::{self, PolicyChoice};
use crate::ship::apt_pins;
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
    let install = apt_pins::resolve(source, &report.install_lines()).warned();
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
