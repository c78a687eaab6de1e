//! `export --format dockerfile` and `export --format packages`: the set as the distribution's
//! packages plus the files that are the service's own. The Dockerfile starts FROM the
//! distribution image of the source tree (its `/etc/os-release`, or `--base`), installs the
//! packages the policy installs in ONE pinned `apt-get install`, copies only what the policy
//! copies (modified and unowned files, packages chosen to copy, directories no installed
//! package creates) from the build context's `rootfs/` (written by the `dir` writer, so modes,
//! times, xattrs, symlinks and hard links are the source's), gives back their owners and
//! set-id bits (COPY makes everything root's), and ends with the traced command's USER,
//! WORKDIR, EXPOSE (the TCP ports the selected processes listened on) and CMD. The packages
//! manifest is the install line alone: `name=version` lines for apt-get or a configuration
//! tool.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::walk::{Stubs, Totals, host_path};
use super::{ExportError, output};
use crate::analysis::closure::DeploymentSet;
use crate::analysis::graph::{EndpointKey, Graph};
use crate::analysis::paths::parent_of;
use crate::analysis::select::Selection;
use crate::record::LogHeader;

/// The directory of the build context that holds the copied tree.
pub const CONTEXT_ROOT: &str = "rootfs";

/// What the Dockerfile says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DockerfileSpec {
    pub base: String,
    /// `name=version` (or `name:arch=version`), sorted.
    pub install: Vec<String>,
    /// The paths copied (mirror paths); their parents go into the context too.
    pub copied: BTreeSet<Vec<u8>>,
    /// `uid:gid` of the traced command.
    pub user: Option<String>,
    pub workdir: Option<String>,
    /// TCP ports.
    pub expose: Vec<u16>,
    pub cmd: Option<Vec<String>>,
    /// The first line's comment: where it comes from.
    pub origin: String,
}

/// What `write_dockerfile` wrote.
#[derive(Clone, Debug)]
pub struct DockerfileReport {
    pub output: PathBuf,
    pub totals: Totals,
    pub installed: usize,
    pub copied: usize,
}

impl DockerfileReport {
    pub fn summary(&self) -> String {
        format!(
            "wrote {}/Dockerfile: {} packages installed, {} paths copied ({} files, {} bytes) from its {CONTEXT_ROOT}/",
            self.output.display(),
            self.installed,
            self.copied,
            self.totals.files,
            self.totals.bytes
        )
    }
}

/// The distribution image of the tree at `source`: `ID:VERSION_CODENAME` of its os-release
/// (`debian:bookworm`), or `ID:VERSION_ID` without a code name.
pub fn base_image(source: &Path) -> Result<String, ExportError> {
    let candidates = [
        source.join("etc/os-release"),
        source.join("usr/lib/os-release"),
    ];
    let mut last_error = io::Error::from_raw_os_error(libc::ENOENT);
    for path in &candidates {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let value = |key: &str| {
                    text.lines().find_map(|line| {
                        let v = line.strip_prefix(key)?.strip_prefix('=')?;
                        let v = v.trim().trim_matches('"').trim_matches('\'');
                        (!v.is_empty()).then(|| v.to_string())
                    })
                };
                let id = value("ID");
                let tag = value("VERSION_CODENAME").or_else(|| value("VERSION_ID"));
                if let (Some(id), Some(tag)) = (id, tag) {
                    return Ok(format!("{id}:{tag}"));
                }
                last_error = io::Error::new(
                    io::ErrorKind::InvalidData,
                    "no ID with VERSION_CODENAME or VERSION_ID",
                );
            }
            Err(e) => last_error = e,
        }
    }
    Err(ExportError::Read {
        path: candidates[0].clone(),
        action: "tell the distribution image from (give --base IMAGE)",
        source: last_error,
    })
}

/// The TCP ports the selected processes bound, listened or accepted on.
pub fn exposed_ports(graph: &Graph, selection: &Selection) -> Vec<u16> {
    let mut ports = BTreeSet::new();
    for endpoint in &graph.endpoints {
        let EndpointKey::Inet(address) = &endpoint.key else {
            continue;
        };
        let Some(address) = address.strip_prefix("tcp:") else {
            continue;
        };
        if !endpoint.binders.iter().any(|(p, _)| selection.contains(*p)) {
            continue;
        }
        if let Some(port) = address
            .rsplit(':')
            .next()
            .and_then(|p| p.parse::<u16>().ok())
            .filter(|&p| p != 0)
        {
            ports.insert(port);
        }
    }
    ports.into_iter().collect()
}

/// `uid:gid` of the traced command (the header's pid), when the log knows it.
pub fn traced_user(graph: &Graph) -> Option<String> {
    let pid = graph.header.command.as_ref()?.pid;
    graph
        .processes
        .iter()
        .filter(|p| p.key.pid == pid)
        .max_by_key(|p| p.key.exec_index)
        .map(|p| format!("{}:{}", p.uid, p.gid))
}

fn quoted(text: &str) -> String {
    serde_json::Value::String(text.to_string()).to_string()
}

fn utf8(path: &[u8]) -> Result<&str, ExportError> {
    std::str::from_utf8(path).map_err(|_| ExportError::Write {
        path: PathBuf::from(String::from_utf8_lossy(path).into_owned()),
        action: "name in a Dockerfile (not UTF-8)",
        source: io::Error::from_raw_os_error(libc::EINVAL),
    })
}

fn exec_form(words: &[String]) -> String {
    let words: Vec<String> = words.iter().map(|w| quoted(w)).collect();
    format!("[{}]", words.join(", "))
}

/// The Dockerfile's text, with `owners` the copied paths that are not root's ((uid, gid) ->
/// paths) and `setid` the copied files whose set-id bits a chown clears (path, mode).
pub fn dockerfile_text(
    spec: &DockerfileSpec,
    owners: &BTreeMap<(u32, u32), Vec<String>>,
    setid: &[(String, u32)],
) -> String {
    // A newline in the traced command must not end the comment.
    let origin = spec.origin.replace(|c: char| c.is_control(), " ");
    let mut text = format!("# {origin}\nFROM {}\n", spec.base);
    if !spec.install.is_empty() {
        text.push_str("RUN apt-get update \\\n && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends --allow-downgrades \\\n");
        for package in &spec.install {
            text.push_str(&format!("      {package} \\\n"));
        }
        text.push_str(" && rm -rf /var/lib/apt/lists/*\n");
    }
    if !spec.copied.is_empty() {
        text.push_str(&format!("COPY {CONTEXT_ROOT}/ /\n"));
    }
    for ((uid, gid), paths) in owners {
        let mut words = vec![
            "chown".to_string(),
            "-h".to_string(),
            format!("{uid}:{gid}"),
        ];
        words.extend(paths.iter().cloned());
        text.push_str(&format!("RUN {}\n", exec_form(&words)));
    }
    for (path, mode) in setid {
        let words = ["chmod".to_string(), format!("{mode:o}"), path.clone()];
        text.push_str(&format!("RUN {}\n", exec_form(&words)));
    }
    if let Some(user) = &spec.user {
        text.push_str(&format!("USER {user}\n"));
    }
    if let Some(workdir) = &spec.workdir {
        text.push_str(&format!("WORKDIR {}\n", quoted(workdir)));
    }
    for port in &spec.expose {
        text.push_str(&format!("EXPOSE {port}/tcp\n"));
    }
    if let Some(cmd) = &spec.cmd {
        text.push_str(&format!("CMD {}\n", exec_form(cmd)));
    }
    text
}

/// The copied paths with the directories above them: what the context's tree holds.
pub fn context_set(set: &DeploymentSet, copied: &BTreeSet<Vec<u8>>) -> DeploymentSet {
    let mut keep: BTreeSet<Vec<u8>> = BTreeSet::new();
    for path in copied {
        let mut at = Some(path.as_slice());
        while let Some(p) = at {
            if !keep.insert(p.to_vec()) {
                break;
            }
            at = parent_of(p);
        }
    }
    DeploymentSet {
        entries: set
            .entries
            .iter()
            .filter(|e| keep.contains(&e.path))
            .cloned()
            .collect(),
        required_devices: Vec::new(),
        dropped_missing: 0,
    }
}

/// Writes DIR/Dockerfile and DIR/rootfs/ (the copied paths of `set`, read from the source).
pub fn write_dockerfile(
    header: &LogHeader,
    set: &DeploymentSet,
    spec: &DockerfileSpec,
    output: &Path,
    force: bool,
) -> Result<DockerfileReport, ExportError> {
    let source = PathBuf::from(&header.source);
    let output = output::check_output(output, header, force)?;
    let staged = output::Staged::new(&output)?;
    std::fs::create_dir(staged.path()).map_err(|source| ExportError::Write {
        path: staged.path().to_path_buf(),
        action: "create the directory",
        source,
    })?;
    let context = context_set(set, &spec.copied);
    let root = staged.path().join(CONTEXT_ROOT);
    let mut quiet = |_, _, _| {};
    let totals = super::dir::write(&context, &Stubs::new(), &source, &root, &mut quiet)?;
    // The dir writer adds /proc, /sys, /dev, /tmp to chroot into; the image has its own.
    for dir in &totals.mount_dirs {
        let _ = std::fs::remove_dir(root.join(dir.trim_start_matches('/')));
    }
    let mut owners: BTreeMap<(u32, u32), Vec<String>> = BTreeMap::new();
    let mut setid = Vec::new();
    for path in &spec.copied {
        let name = utf8(path)?.to_string();
        let Ok(meta) = std::fs::symlink_metadata(host_path(&source, path)) else {
            continue;
        };
        if (meta.uid(), meta.gid()) != (0, 0) {
            owners
                .entry((meta.uid(), meta.gid()))
                .or_default()
                .push(name.clone());
            if meta.is_file() && meta.mode() & 0o6000 != 0 {
                setid.push((name, meta.mode() & 0o7777));
            }
        }
    }
    let text = dockerfile_text(spec, &owners, &setid);
    let dockerfile = staged.path().join("Dockerfile");
    std::fs::write(&dockerfile, text).map_err(|source| ExportError::Write {
        path: dockerfile,
        action: "write",
        source,
    })?;
    output::write_marker(staged.path(), "dockerfile")?;
    staged.commit(force)?;
    Ok(DockerfileReport {
        output,
        totals,
        installed: spec.install.len(),
        copied: spec.copied.len(),
    })
}

/// Whether `path` is a manifest this writer wrote (every line `name=version`): what
/// `--force` may replace.
fn is_manifest(path: &Path) -> bool {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return false;
    };
    if !meta.is_file() || meta.len() > 1 << 20 {
        return false;
    }
    std::fs::read_to_string(path).is_ok_and(|text| {
        text.lines().all(|line| {
            line.split_once('=')
                .is_some_and(|(name, version)| !name.is_empty() && !version.is_empty())
        })
    })
}

/// Writes the `name=version` lines to FILE (`-`: standard output).
pub fn write_manifest(
    header: &LogHeader,
    lines: &[String],
    output: &Path,
    force: bool,
) -> Result<PathBuf, ExportError> {
    let mut text = String::new();
    for line in lines {
        text.push_str(line);
        text.push('\n');
    }
    if output == Path::new("-") {
        use std::io::Write;
        io::stdout()
            .lock()
            .write_all(text.as_bytes())
            .map_err(|source| ExportError::Write {
                path: PathBuf::from("standard output"),
                action: "write",
                source,
            })?;
        return Ok(PathBuf::from("-"));
    }
    let exists = std::fs::symlink_metadata(output).is_ok();
    if exists && !force {
        return Err(ExportError::Exists(output.to_path_buf()));
    }
    if exists && !is_manifest(output) {
        return Err(ExportError::ForbiddenOutput {
            path: output.to_path_buf(),
            where_: "over a file that is not a package manifest (even with --force)".to_string(),
        });
    }
    // The same checks as every output (system directories, the source, the mountpoint...),
    // then written next to it and renamed over it.
    let checked = if exists {
        output.to_path_buf()
    } else {
        output::check_output(output, header, false)?
    };
    let temporary = {
        let mut name = std::ffi::OsString::from(".");
        name.push(checked.file_name().unwrap_or_default());
        name.push(format!(".depsetfs-tmp.{}", std::process::id()));
        checked.with_file_name(name)
    };
    std::fs::write(&temporary, text)
        .and_then(|()| std::fs::rename(&temporary, &checked))
        .map_err(|source| {
            let _ = std::fs::remove_file(&temporary);
            ExportError::Write {
                path: checked.clone(),
                action: "write",
                source,
            }
        })?;
    Ok(checked)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dockerfile_pins_copies_chowns_and_runs_the_command() {
        let spec = DockerfileSpec {
            base: "debian:bookworm".to_string(),
            install: vec!["nginx=1.22.1-9".to_string(), "libc6=2.36-9".to_string()],
            copied: [b"/srv/app/run.sh".to_vec()].into(),
            user: Some("0:0".to_string()),
            workdir: Some("/srv/app".to_string()),
            expose: vec![80, 443],
            cmd: Some(vec![
                "nginx".to_string(),
                "-g".to_string(),
                "daemon off;".to_string(),
            ]),
            origin: "test".to_string(),
        };
        let owners = [((33, 33), vec!["/srv/app/run.sh".to_string()])].into();
        let text = dockerfile_text(&spec, &owners, &[("/srv/app/run.sh".to_string(), 0o4755)]);
        assert_eq!(
            text,
            "# test\nFROM debian:bookworm\nRUN apt-get update \\\n && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends --allow-downgrades \\\n      nginx=1.22.1-9 \\\n      libc6=2.36-9 \\\n && rm -rf /var/lib/apt/lists/*\nCOPY rootfs/ /\nRUN [\"chown\", \"-h\", \"33:33\", \"/srv/app/run.sh\"]\nRUN [\"chmod\", \"4755\", \"/srv/app/run.sh\"]\nUSER 0:0\nWORKDIR \"/srv/app\"\nEXPOSE 80/tcp\nEXPOSE 443/tcp\nCMD [\"nginx\", \"-g\", \"daemon off;\"]\n"
        );
    }

    #[test]
    fn the_base_image_comes_from_os_release() {
        let tree = crate::fixtures::ScratchDir::new("osrel");
        let write = |text: &str| {
            tree.write("/usr/lib/os-release", text)
                .unwrap_or_else(|e| panic!("{e}"))
        };
        write(
            "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_ID=\"12\"\nVERSION_CODENAME=bookworm\n",
        );
        assert_eq!(
            base_image(tree.root()).ok().as_deref(),
            Some("debian:bookworm")
        );
        write("ID=alpine\nVERSION_ID=3.19.1\n");
        assert_eq!(
            base_image(tree.root()).ok().as_deref(),
            Some("alpine:3.19.1")
        );
        write("NAME=x\n");
        let error = base_image(tree.root()).err().map(|e| e.to_string());
        assert!(
            error
                .as_deref()
                .is_some_and(|e| e.contains("give --base IMAGE")),
            "{error:?}"
        );
    }

    #[test]
    fn a_manifest_replaces_only_a_manifest() {
        let tree = crate::fixtures::ScratchDir::new("manifest");
        let header = crate::fixtures::header(tree.root(), "/nonexistent-mountpoint");
        let out = tree.file("packages.txt");
        let lines = vec!["a=1".to_string(), "b:i386=2.0-1".to_string()];
        let written = write_manifest(&header, &lines, &out, false);
        assert!(written.is_ok(), "{written:?}");
        assert_eq!(
            std::fs::read_to_string(&out).ok().as_deref(),
            Some("a=1\nb:i386=2.0-1\n")
        );
        assert!(matches!(
            write_manifest(&header, &lines, &out, false),
            Err(ExportError::Exists(_))
        ));
        assert!(write_manifest(&header, &lines, &out, true).is_ok());
        std::fs::write(&out, "precious notes\n").unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(
            write_manifest(&header, &lines, &out, true),
            Err(ExportError::ForbiddenOutput { .. })
        ));
    }
}
