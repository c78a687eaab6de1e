//! `depsetfs export`: writes a deployment set out of the source tree as a directory, a tar
//! stream or an OCI image layout. [`walk`] reads the set from the source (never through a
//! mirror) and hands each path to the format's sink ([`dir`], [`tar`], [`oci`]). The output
//! is written under a temporary name in its own directory and renamed into place only when
//! complete, so a failure leaves nothing half-written; an existing output is replaced only
//! with `--force`, and outputs inside the recorded mountpoint or the kernel's trees are
//! refused. The summary compares the bytes exported with the space used on the source's
//! filesystem (a statvfs estimate, not a walk of the whole tree).

pub mod dir;
pub mod oci;
pub mod stub;
pub mod tar;
pub mod walk;

use std::ffi::OsString;
use std::io::{self, IsTerminal, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::event::LogHeader;
use crate::set::{DeploymentSet, is_within, normalize_mirror_path};

pub use walk::{Stubs, Totals};

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{}: already exists (use --force to replace it)", .0.display())]
    Exists(PathBuf),
    #[error("{}: refusing to write {where_}", path.display())]
    ForbiddenOutput { path: PathBuf, where_: String },
    #[error("{}: cannot {action} it: {source}", path.display())]
    Output {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("{}: cannot {action} it in the source tree: {source}", path.display())]
    Read {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("{}: cannot {action}: {source}", path.display())]
    Write {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: io::Error,
    },
}

/// The output formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// A directory tree (a root to chroot into).
    Dir,
    /// A tar stream (ustar with PAX extended headers), or `-` for stdout.
    Tar,
    /// An OCI image layout directory: one gzip layer, entrypoint from the traced command.
    Oci,
}

#[derive(Clone, Debug)]
pub struct ExportOptions {
    pub format: Format,
    pub output: PathBuf,
    pub force: bool,
    /// Show a progress line (only when stderr is a terminal).
    pub progress: bool,
    /// Binaries shipped as the stub program instead of their contents (`--stubs`).
    pub stubs: Stubs,
}

/// What was written, for the summary.
#[derive(Clone, Debug)]
pub struct ExportReport {
    pub output: PathBuf,
    pub totals: Totals,
    /// Bytes used on the filesystem holding the source tree (statvfs), if known.
    pub source_used_bytes: Option<u64>,
}

impl ExportReport {
    /// The one-line summary printed on stderr.
    pub fn summary(&self) -> String {
        let t = &self.totals;
        let mut line = format!(
            "exported {} paths ({} files, {} directories, {} symlinks, {} hard links, {} special), {} bytes to {}",
            t.paths(),
            t.files,
            t.dirs,
            t.symlinks,
            t.hard_links,
            t.special,
            t.bytes,
            self.output.display()
        );
        if let Some(used) = self.source_used_bytes.filter(|&used| used > 0) {
            line.push_str(&format!(
                "; {:.3}% of the {} bytes used on the source's filesystem",
                t.bytes as f64 * 100.0 / used as f64,
                used
            ));
        }
        if !t.skipped.is_empty() {
            line.push_str(&format!(
                "; {} paths gone from the source were skipped",
                t.skipped.len()
            ));
        }
        line
    }
}

/// Exports `set`, read from the source tree named in `header`.
pub fn export(
    header: &LogHeader,
    set: &DeploymentSet,
    options: &ExportOptions,
) -> Result<ExportReport, ExportError> {
    let source = PathBuf::from(&header.source);
    let mut progress = ProgressLine::new(options.progress && io::stderr().is_terminal());
    let mut on_progress = |done, total, bytes| progress.update(done, total, bytes);
    if options.format == Format::Tar && options.output == Path::new("-") {
        check_source(&source)?;
        let totals = tar_to_stdout(set, &options.stubs, &source, &mut on_progress)?;
        progress.clear();
        return Ok(ExportReport {
            output: PathBuf::from("-"),
            totals,
            source_used_bytes: used_bytes(&source),
        });
    }
    let output = check_output(&options.output, header, options.force)?;
    check_source(&source)?;
    let staged = Staged::new(&output)?;
    let totals = match options.format {
        Format::Dir => dir::write(
            set,
            &options.stubs,
            &source,
            staged.path(),
            &mut on_progress,
        )?,
        Format::Tar => tar::write_file(
            set,
            &options.stubs,
            &source,
            staged.path(),
            &mut on_progress,
        )?,
        Format::Oci => oci::write(
            set,
            &options.stubs,
            &source,
            header.command.as_ref(),
            staged.path(),
            &mut on_progress,
        )?,
    };
    progress.clear();
    staged.commit(options.force)?;
    Ok(ExportReport {
        output,
        totals,
        source_used_bytes: used_bytes(&source),
    })
}

fn tar_to_stdout(
    set: &DeploymentSet,
    stubs: &Stubs,
    source: &Path,
    progress: walk::Progress<'_>,
) -> Result<Totals, ExportError> {
    let name = Path::new("standard output");
    let out = io::BufWriter::with_capacity(1 << 20, io::stdout().lock());
    let (totals, mut out) = tar::write_stream(set, stubs, source, out, name, progress)?;
    out.flush().map_err(|source| ExportError::Write {
        path: name.to_path_buf(),
        action: "write the tar stream",
        source,
    })?;
    Ok(totals)
}

/// The output as an absolute path, checked: its directory exists, it is not inside the
/// recorded mountpoint or the kernel's trees, and it does not exist unless `force`.
pub fn check_output(
    output: &Path,
    header: &LogHeader,
    force: bool,
) -> Result<PathBuf, ExportError> {
    let absolute = std::path::absolute(output).map_err(|source| ExportError::Output {
        path: output.to_path_buf(),
        action: "resolve",
        source,
    })?;
    let name = absolute
        .file_name()
        .ok_or_else(|| ExportError::ForbiddenOutput {
            path: absolute.clone(),
            where_: "to a path without a file name".to_string(),
        })?
        .to_owned();
    // Before resolving: a mountpoint that is gone (a finished run's) is refused too.
    refuse_forbidden(&absolute, header)?;
    let parent = absolute.parent().unwrap_or(Path::new("/"));
    let parent = parent
        .canonicalize()
        .map_err(|source| ExportError::Output {
            path: parent.to_path_buf(),
            action: "find the directory of the output",
            source,
        })?;
    let resolved = parent.join(&name);
    refuse_forbidden(&resolved, header)?;
    if std::fs::symlink_metadata(&resolved).is_ok() && !force {
        return Err(ExportError::Exists(resolved));
    }
    Ok(resolved)
}

/// The source tree must still be a directory.
fn check_source(source: &Path) -> Result<(), ExportError> {
    match std::fs::metadata(source) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(ExportError::Read {
            path: source.to_path_buf(),
            action: "use the source tree (not a directory)",
            source: io::Error::from_raw_os_error(libc::ENOTDIR),
        }),
        Err(source_error) => Err(ExportError::Read {
            path: source.to_path_buf(),
            action: "use the source tree",
            source: source_error,
        }),
    }
}

fn refuse_forbidden(path: &Path, header: &LogHeader) -> Result<(), ExportError> {
    let bytes = normalize_mirror_path(path.as_os_str().as_bytes());
    let mountpoint = normalize_mirror_path(header.mountpoint.as_bytes());
    if !header.mountpoint.is_empty() && mountpoint != b"/" && is_within(&bytes, &mountpoint) {
        return Err(ExportError::ForbiddenOutput {
            path: path.to_path_buf(),
            where_: format!("inside the mirror's mountpoint {}", header.mountpoint),
        });
    }
    for tree in ["/proc", "/sys", "/dev"] {
        if is_within(&bytes, tree.as_bytes()) {
            return Err(ExportError::ForbiddenOutput {
                path: path.to_path_buf(),
                where_: format!("inside {tree}"),
            });
        }
    }
    Ok(())
}

/// The output under construction: a temporary name in the output's directory, removed on
/// drop unless committed.
struct Staged {
    temporary: PathBuf,
    output: PathBuf,
    committed: bool,
}

impl Staged {
    fn new(output: &Path) -> Result<Staged, ExportError> {
        let parent = output.parent().unwrap_or(Path::new("/"));
        let mut name = OsString::from(".");
        name.push(output.file_name().unwrap_or_default());
        name.push(format!(".depsetfs-tmp.{}", std::process::id()));
        let temporary = parent.join(name);
        remove_any(&temporary);
        Ok(Staged {
            temporary,
            output: output.to_path_buf(),
            committed: false,
        })
    }

    fn path(&self) -> &Path {
        &self.temporary
    }

    /// Moves the finished output into place: a plain rename, or an exchange with the old
    /// output (then removed) when it exists and `force` was given.
    fn commit(mut self, force: bool) -> Result<(), ExportError> {
        let exists = std::fs::symlink_metadata(&self.output).is_ok();
        if exists && !force {
            return Err(ExportError::Exists(self.output.clone()));
        }
        let renamed = if exists {
            exchange(&self.temporary, &self.output)
        } else {
            rename_noreplace(&self.temporary, &self.output)
        };
        renamed.map_err(|source| ExportError::Output {
            path: self.output.clone(),
            action: "move into place",
            source,
        })?;
        if exists {
            // The temporary name now holds the old output.
            remove_any(&self.temporary);
        }
        self.committed = true;
        Ok(())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.committed {
            remove_any(&self.temporary);
        }
    }
}

fn split(path: &Path) -> (&Path, &std::ffi::OsStr) {
    (
        path.parent().unwrap_or(Path::new("/")),
        path.file_name().unwrap_or_default(),
    )
}

fn renameat2(from: &Path, to: &Path, flags: u32) -> io::Result<()> {
    let (from_dir, from_name) = split(from);
    let (to_dir, to_name) = split(to);
    let from_dir = crate::sys::open_path(from_dir, libc::O_PATH | libc::O_DIRECTORY)?;
    let to_dir = crate::sys::open_path(to_dir, libc::O_PATH | libc::O_DIRECTORY)?;
    crate::sys::renameat2(
        from_dir.as_raw_fd(),
        from_name,
        to_dir.as_raw_fd(),
        to_name,
        flags,
    )
}

fn exchange(from: &Path, to: &Path) -> io::Result<()> {
    renameat2(from, to, libc::RENAME_EXCHANGE)
}

fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    renameat2(from, to, libc::RENAME_NOREPLACE)
}

/// Removes a file or a whole tree, ignoring errors (it may not exist).
pub fn remove_any(path: &Path) {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => {
            let _ = std::fs::remove_dir_all(path);
        }
        Ok(_) => {
            let _ = std::fs::remove_file(path);
        }
        Err(_) => {}
    }
}

/// Bytes used on the filesystem of `source` (statvfs: blocks minus free blocks). An estimate
/// of the whole tree: other filesystems mounted below the source are not counted.
fn used_bytes(source: &Path) -> Option<u64> {
    let dir = crate::sys::open_path(source, libc::O_PATH).ok()?;
    let stat = crate::sys::statvfs(dir.as_raw_fd()).ok()?;
    Some(stat.f_blocks.saturating_sub(stat.f_bfree) * stat.f_frsize)
}

/// A progress line on stderr, redrawn at most every 200 ms; silent when disabled.
struct ProgressLine {
    enabled: bool,
    last: Option<Instant>,
}

impl ProgressLine {
    fn new(enabled: bool) -> ProgressLine {
        ProgressLine {
            enabled,
            last: None,
        }
    }

    fn update(&mut self, done: u64, total: u64, bytes: u64) {
        if !self.enabled {
            return;
        }
        let now = Instant::now();
        if self
            .last
            .is_some_and(|last| now - last < Duration::from_millis(200))
            && done < total
        {
            return;
        }
        self.last = Some(now);
        let mut err = io::stderr().lock();
        let _ = write!(
            err,
            "\rexport: {done}/{total} paths, {:.1} MB",
            bytes as f64 / 1e6
        );
        let _ = err.flush();
    }

    fn clear(&mut self) {
        if self.enabled && self.last.is_some() {
            let _ = write!(io::stderr(), "\r\x1b[K");
        }
    }
}

#[cfg(test)]
mod tests;
