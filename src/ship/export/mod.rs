//! `depsetfs export`: writes a deployment set out of the source tree as a directory, a tar
//! stream or an OCI image layout. [`walk`] reads the set from the source (never through a
//! mirror) and hands each path to the format's sink ([`dir`], [`tar`], [`oci`]). The output
//! is written under a temporary name in its own directory and renamed into place only when
//! complete, so a failure leaves nothing half-written; [`output`] decides where an output may
//! go and what an existing one may be replaced by (with `--force`, only an earlier export or an
//! empty directory). The summary compares the bytes exported with the space used on the
//! source's filesystem (a statvfs estimate, not a walk of the whole tree).

pub mod compose;
pub mod dir;
pub mod dockerfile;
pub mod map;
pub mod oci;
pub mod output;
pub mod stub;
pub mod tar;
pub mod walk;

use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crate::analysis::closure::DeploymentSet;
use crate::record::LogHeader;
use crate::ship::progress::Progress;

pub use output::{check_output, remove_any};
pub use walk::{Stubs, Totals};

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{}: already exists (use --force to replace it)", .0.display())]
    Exists(PathBuf),
    #[error("{}: refusing to write {where_}", path.display())]
    ForbiddenOutput { path: PathBuf, where_: String },
    #[error("{}: cannot write there: {}", output.display(), dir_problem(dir, source))]
    OutputDirectory {
        output: PathBuf,
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
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
    /// The image a log was traced from (`run --image`), whose config `--format oci` keeps.
    #[error("the traced image: {0}")]
    Image(#[from] crate::launch::image::ImageError),
}

/// Why the directory of an output cannot hold it, in words.
fn dir_problem(dir: &Path, error: &io::Error) -> String {
    match error.kind() {
        io::ErrorKind::NotFound => format!("the directory {} does not exist", dir.display()),
        io::ErrorKind::NotADirectory => format!("{} is not a directory", dir.display()),
        _ => format!("{}: {}", dir.display(), error),
    }
}

/// The output formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// A directory tree (a root to chroot into).
    Dir,
    /// A tar stream (ustar with PAX extended headers), or `-` for stdout.
    Tar,
    /// An OCI image layout directory: one gzip layer, entrypoint from the traced command (the
    /// image's whole config for a log of `run --image`).
    Oci,
    /// A Dockerfile and its build context: the distribution's packages pinned, the other
    /// files copied (see docs/packages.md).
    Dockerfile,
    /// The packages to install, one `name=version` line each (see docs/packages.md).
    Packages,
    /// A directory: every host's set as an OCI image layout (`HOST/`) and a `compose.yaml`
    /// ([`compose`]; `depsetfs export` writes each host's image; [`export`] given this format
    /// writes the one set as `oci` does).
    Compose,
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
        if !t.mount_dirs.is_empty() {
            line.push_str(&format!(
                "; added empty {} to mount on",
                t.mount_dirs.join(", ")
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
    let mut progress = Progress::on_stderr("exporting", options.progress);
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
    let staged = output::Staged::new(&output)?;
    let totals = match options.format {
        Format::Dir => dir::write_marked(
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
        Format::Oci | Format::Compose => oci::write(
            set,
            &options.stubs,
            &source,
            header.command.as_ref(),
            header.image.as_ref(),
            staged.path(),
            &mut on_progress,
        )
        .and_then(|totals| output::write_marker(staged.path(), "oci").map(|()| totals))?,
        // They need the packages of the set: `dockerfile::write_dockerfile`, `write_manifest`.
        Format::Dockerfile | Format::Packages => {
            return Err(ExportError::Write {
                path: output,
                action: "write this format without the packages of the set",
                source: io::Error::from_raw_os_error(libc::EINVAL),
            });
        }
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
    let (totals, mut out) =
        tar::write_stream(set, stubs, source, out, name, tar::Stream::Export, progress)?;
    out.flush().map_err(|source| ExportError::Write {
        path: name.to_path_buf(),
        action: "write the tar stream",
        source,
    })?;
    Ok(totals)
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

/// Bytes used on the filesystem of `source` (statvfs: blocks minus free blocks). An estimate
/// of the whole tree: other filesystems mounted below the source are not counted.
fn used_bytes(source: &Path) -> Option<u64> {
    let dir = crate::sys::open_path(source, libc::O_PATH).ok()?;
    let stat = crate::sys::statvfs(dir.as_raw_fd()).ok()?;
    Some(stat.f_blocks.saturating_sub(stat.f_bfree) * stat.f_frsize)
}

#[cfg(test)]
mod tests;
