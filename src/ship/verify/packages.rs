//! `verify --packages`: the root of a round built the way the Dockerfile of
//! `export --format dockerfile` describes, without a container engine. `mmdebstrap` makes a
//! Debian root of the source's suite (its os-release code name) from the source's own apt
//! sources, with the packages the policy installs pinned at their traced versions
//! (`--include=name=version`); the downloaded packages are kept in a cache directory between
//! runs (its sync-in/sync-out hooks). The copied paths (modified, unowned, packages chosen to
//! copy) are then written over it with the `dir` export writer (into a staging tree, then
//! `cp -a`, as `COPY` would), owners and modes included.

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

/// The `name=version` lines whose version the source's apt sources still offer (one
/// `apt-cache madison` for all, with the source tree's apt configuration), the others as bare
/// names; and those others. Without an answer from apt-cache, every line as it is.
pub fn pinned_if_available(source: &Path, lines: &[String]) -> (Vec<String>, Vec<String>) {
    if lines.is_empty() {
        return (Vec::new(), Vec::new());
    }
    let names: Vec<&str> = lines
        .iter()
        .map(|l| l.split_once('=').map_or(l.as_str(), |(n, _)| n))
        .collect();
    let mut command = Command::new("apt-cache");
    if source != Path::new("/") {
        command.arg("-o").arg(format!("Dir={}", source.display()));
    }
    let Ok(out) = command.arg("madison").args(&names).output() else {
        return (lines.to_vec(), Vec::new());
    };
    if !out.status.success() {
        return (lines.to_vec(), Vec::new());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    // " libc6 | 2.36-9+deb12u14 | http://... Packages"
    let offered: std::collections::HashSet<(String, String)> = text
        .lines()
        .filter_map(|line| {
            let mut fields = line.split('|').map(str::trim);
            Some((fields.next()?.to_string(), fields.next()?.to_string()))
        })
        .collect();
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
    let (install, unavailable) = pinned_if_available(source, &report.install_lines());
    if !unavailable.is_empty() {
        eprintln!(
            "depsetfs: warning: not in the archive at the traced version (superseded), installed at the archive's: {}",
            unavailable.join(" ")
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
        let reasons: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("E: ") && !l.starts_with("E: setup failed"))
            .collect();
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
