//! The comparing subcommands: `manifest` (what a target holds), `diff A B` (two sets, logs,
//! manifests or exported trees, with `--fail-on` gates), `satisfies` (does a target hold the
//! set, with why each missing path is needed) and the cut of `export --against`, over
//! [`depsetfs::ship::compare`]. A log input is read through the same plan as `dump --set`
//! (default strategy here: strict) and hashed in its source tree.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{ArgMatches, Args};

use depsetfs::analysis::closure::DeploymentSet;
use depsetfs::analysis::plan::Plan;
use depsetfs::analysis::query;
use depsetfs::analysis::strategy::{Strategy, StrategyOptions, StrategySet};
use depsetfs::ship::compare::diff::{self, Gate};
use depsetfs::ship::compare::hash::default_threads;
use depsetfs::ship::compare::input::{InputKind, detect, read_side};
use depsetfs::ship::compare::manifest::{HashCache, ManifestOptions, read_cache, write_manifest};
use depsetfs::ship::compare::satisfies::{
    Unsatisfied, check_architecture, package_note, ship_only, unsatisfied,
};
use depsetfs::ship::compare::{CompareError, Side, SideKind, describe_entry, tree};
use depsetfs::state::StateDir;

use super::CliError;
use super::analyse::SelectArgs;
use super::load::load_plan;
use super::output::{write_json, write_stdout};

#[derive(Args)]
pub(crate) struct ManifestArgs {
    /// The root to describe.
    #[arg(default_value = "/")]
    pub(crate) root: PathBuf,
    /// Where to write the manifest (JSON; `-`: standard output).
    #[arg(long)]
    pub(crate) output: PathBuf,
    /// Reuse the hashes of this earlier manifest for files whose device, inode, size, mtime
    /// and ctime are unchanged (default: the --output file, when it is a manifest).
    #[arg(long)]
    pub(crate) cache: Option<PathBuf>,
    /// Hash every file, reusing nothing.
    #[arg(long, conflicts_with = "cache")]
    pub(crate) no_cache: bool,
    /// Also list the contents of ROOT's /proc, /sys and /dev and of other filesystems
    /// mounted below ROOT.
    #[arg(long)]
    pub(crate) cross_mounts: bool,
    /// Hashing threads (default: the CPUs available, at most 4).
    #[arg(long)]
    pub(crate) threads: Option<usize>,
}

/// How a log input becomes a set: the options of `dump --set`, strict by default.
#[derive(Args)]
pub(crate) struct LogSetArgs {
    /// The strategy for a log input.
    #[arg(long, value_enum, default_value = "strict")]
    pub(crate) strategy: Strategy,
    #[command(flatten)]
    pub(crate) select: SelectArgs,
    /// A rules file (TOML) for a log input; see `depsetfs rules --default`.
    #[arg(long)]
    pub(crate) rules: Option<PathBuf>,
}

#[derive(Args)]
pub(crate) struct DiffArgs {
    /// The first input: a log, a saved set (`dump --set --json`), a manifest, an exported
    /// directory, a tar or an OCI layout.
    pub(crate) a: PathBuf,
    /// The second input (any of the same).
    pub(crate) b: PathBuf,
    /// One JSON document instead of text.
    #[arg(long)]
    pub(crate) json: bool,
    /// Exit with status 1 when one of these holds (comma-separated): paths only in B
    /// (added), only in A (removed), in both but different (changed).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub(crate) fail_on: Vec<Gate>,
    #[command(flatten)]
    pub(crate) set: LogSetArgs,
}

#[derive(Args)]
pub(crate) struct SatisfiesArgs {
    /// The target: a manifest (`depsetfs manifest`), or an exported directory, tar or OCI
    /// layout.
    pub(crate) target: PathBuf,
    /// The log whose set must be on the target (default: the state directory's last.log).
    #[arg(long)]
    pub(crate) log: Option<PathBuf>,
    /// One JSON document instead of text.
    #[arg(long)]
    pub(crate) json: bool,
    #[command(flatten)]
    pub(crate) set: LogSetArgs,
}

pub(crate) fn manifest_command(args: ManifestArgs) -> Result<ExitCode, CliError> {
    let to_stdout = args.output == Path::new("-");
    let output = if to_stdout {
        None
    } else {
        Some(std::path::absolute(&args.output).map_err(|e| CompareError::io(&args.output, e))?)
    };
    let cache = load_cache(&args, output.as_deref())?;
    let options = ManifestOptions {
        root: args.root.clone(),
        cross_mounts: args.cross_mounts,
        exclude: output
            .iter()
            .flat_map(|output| [output.clone(), staged_name(output)])
            .map(|path| {
                let dir = path.parent().unwrap_or(Path::new("/"));
                let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
                dir.join(path.file_name().unwrap_or_default())
            })
            .collect(),
        threads: args.threads.unwrap_or_else(default_threads).max(1),
        progress: true,
    };
    let stats = match &output {
        None => write_stdout(|out| {
            write_manifest(&options, &cache, out)
                .map(|_| ())
                .map_err(std::io::Error::other)
        })
        .map(|_| None)?,
        Some(output) => Some(write_manifest_file(&options, &cache, output)?),
    };
    if let Some(stats) = &stats {
        match (&stats.packages, &stats.package_warning) {
            (_, Some(warning)) => {
                eprintln!("depsetfs: warning: {warning}: the manifest has no package data")
            }
            (Some(n), None) => eprintln!(
                "depsetfs: packages of {}: {n} installed, {} paths owned by a package",
                args.root.display(),
                stats.owned
            ),
            (None, None) => eprintln!(
                "depsetfs: {} has no dpkg database (var/lib/dpkg/status): the manifest has no package data",
                args.root.display()
            ),
        }
    }
    if let Some(stats) = stats {
        let skipped = if stats.not_descended.is_empty() {
            String::new()
        } else {
            format!(
                "; listed without their contents: {}",
                stats.not_descended.join(", ")
            )
        };
        eprintln!(
            "depsetfs: manifest of {}: {} paths, {} files ({} hashed, {} reused from the cache), {} unreadable{skipped}; written to {}",
            args.root.display(),
            stats.paths,
            stats.files,
            stats.hashed,
            stats.reused,
            stats.unreadable,
            args.output.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The hashes to reuse: --cache, else the previous output when it is a readable manifest.
fn load_cache(args: &ManifestArgs, output: Option<&Path>) -> Result<HashCache, CliError> {
    if args.no_cache {
        return Ok(HashCache::default());
    }
    if let Some(cache) = &args.cache {
        return Ok(read_cache(cache)?);
    }
    match output.filter(|output| output.is_file()) {
        Some(previous) => match read_cache(previous) {
            Ok(cache) => Ok(cache),
            Err(e) => {
                eprintln!("depsetfs: warning: not reusing hashes of {e}");
                Ok(HashCache::default())
            }
        },
        None => Ok(HashCache::default()),
    }
}

/// The temporary name a manifest is written under beside `output`.
fn staged_name(output: &Path) -> PathBuf {
    let mut staged = output.as_os_str().to_owned();
    staged.push(format!(".partial.{}", std::process::id()));
    PathBuf::from(staged)
}

/// Writes the manifest beside `output` and renames it into place when complete.
fn write_manifest_file(
    options: &ManifestOptions,
    cache: &HashCache,
    output: &Path,
) -> Result<depsetfs::ship::compare::manifest::ManifestStats, CliError> {
    let staged = staged_name(output);
    let result = std::fs::File::create(&staged)
        .map_err(|e| CompareError::io(output, e))
        .and_then(|mut file| {
            let stats = write_manifest(options, cache, &mut file)?;
            file.flush()
                .and_then(|()| file.sync_all())
                .map_err(|e| CompareError::io(&staged, e))?;
            Ok(stats)
        })
        .and_then(|stats| {
            std::fs::rename(&staged, output)
                .map_err(|e| CompareError::io(output, e))
                .map(|()| stats)
        });
    if result.is_err() {
        let _ = std::fs::remove_file(&staged);
    }
    Ok(result?)
}

/// A log's plan, its strategy's set, and that set as a side hashed in its source tree.
struct LogSide {
    plan: Plan,
    result: StrategySet,
    side: Side,
}

fn log_side(
    log: Option<&Path>,
    name: &str,
    args: &LogSetArgs,
    matches: Option<&ArgMatches>,
    state: &StateDir,
) -> Result<LogSide, CliError> {
    let plan = load_plan(log, args.rules.as_deref(), matches, state)?;
    let result = plan.set(&StrategyOptions {
        strategy: args.strategy,
        stubs: false,
    });
    if let Some(warning) = result.rules_warning(&plan.rules) {
        eprintln!("depsetfs: warning: {warning}");
    }
    let source = plan.set_options().source;
    let mut side = tree::set_side(&result.set, &source, name, default_threads());
    // The packages of the log's source tree, when it has a dpkg database.
    if let Err(e) = depsetfs::ship::compare::packages::attach(&mut side, &source) {
        eprintln!("depsetfs: warning: {e}: no package data for {name}");
    }
    Ok(LogSide { plan, result, side })
}

/// Any input as a side, with what it was (`strict set` of a log).
fn any_side(
    path: &Path,
    args: &LogSetArgs,
    matches: Option<&ArgMatches>,
    state: &StateDir,
) -> Result<(Side, Option<String>), CliError> {
    let name = path.display().to_string();
    match detect(path)? {
        InputKind::Log => {
            let log = log_side(Some(path), &name, args, matches, state)?;
            Ok((log.side, Some(format!("{} set", args.strategy.name()))))
        }
        InputKind::Side(kind) => Ok((read_side(path, kind, &name, default_threads())?, None)),
    }
}

pub(crate) fn diff_command(
    args: DiffArgs,
    matches: Option<&ArgMatches>,
    state: &StateDir,
) -> Result<ExitCode, CliError> {
    let (a, a_detail) = any_side(&args.a, &args.set, matches, state)?;
    let (b, b_detail) = any_side(&args.b, &args.set, matches, state)?;
    // Content of another architecture would differ everywhere: refuse a manifest made on
    // another machine type than the other side's programs.
    if b.kind == SideKind::Manifest {
        check_architecture(&a, &b, &args.b)?;
    } else if a.kind == SideKind::Manifest {
        check_architecture(&b, &a, &args.a)?;
    }
    let found = diff::diff(&a, &b);
    let hit = diff::gates_hit(&found, &args.fail_on);
    let a_view = (&a, a_detail.as_deref());
    let b_view = (&b, b_detail.as_deref());
    write_stdout(|out| {
        if args.json {
            diff::write_json(&found, a_view, b_view, &hit, out)
        } else {
            diff::write_human(&found, a_view, b_view, out)
        }
    })?;
    if hit.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!("depsetfs: --fail-on: {}", hit.join(", "));
    Ok(ExitCode::FAILURE)
}

/// A target side: anything with metadata and contents (not a log, not a saved set).
fn target_side(path: &Path) -> Result<Side, CliError> {
    let name = path.display().to_string();
    match detect(path)? {
        InputKind::Log => Err(CompareError::NotAManifest {
            path: path.to_path_buf(),
            what: "a log",
        }
        .into()),
        InputKind::Side(SideKind::SavedSet) => Err(CompareError::NotAManifest {
            path: path.to_path_buf(),
            what: "a saved set (it has no contents to compare)",
        }
        .into()),
        InputKind::Side(kind) => Ok(read_side(path, kind, &name, default_threads())?),
    }
}

#[derive(serde::Serialize)]
struct UnsatisfiedJson<'a> {
    path: depsetfs::analysis::names::NameBuf,
    missing: bool,
    fields: &'a [diff::FieldChange],
    #[serde(skip_serializing_if = "Option::is_none")]
    package: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    package_note: Option<String>,
    why: query::WhyAnswer,
}

pub(crate) fn satisfies_command(
    args: SatisfiesArgs,
    matches: Option<&ArgMatches>,
    state: &StateDir,
) -> Result<ExitCode, CliError> {
    let target = target_side(&args.target)?;
    let name = args
        .log
        .as_ref()
        .map(|log| log.display().to_string())
        .unwrap_or_else(|| "last.log".to_string());
    let log = log_side(args.log.as_deref(), &name, &args.set, matches, state)?;
    check_architecture(&log.side, &target, &args.target)?;
    let wanted = unsatisfied(&log.side, &target);
    let options = log.plan.set_options();
    let why = |item: &Unsatisfied<'_>| {
        query::why(&log.plan.graph, &log.result, &options, &item.entry.path)
    };
    let total = log.side.entries.len();
    let missing = wanted.iter().filter(|item| item.missing()).count();
    let summary = if wanted.is_empty() {
        format!(
            "satisfied: {} holds all {total} paths of the {} set, identical",
            args.target.display(),
            args.set.strategy.name()
        )
    } else {
        format!(
            "not satisfied: {} of the {total} paths of the {} set are missing from {} and {} differ",
            missing,
            args.set.strategy.name(),
            args.target.display(),
            wanted.len() - missing
        )
    };
    write_stdout(|out| {
        if args.json {
            let rows: Vec<UnsatisfiedJson<'_>> = wanted
                .iter()
                .map(|item| UnsatisfiedJson {
                    path: item.entry.path.as_slice().into(),
                    missing: item.missing(),
                    fields: &item.fields,
                    package: item.entry.package.as_deref(),
                    package_note: package_note(&log.side, &target, item),
                    why: why(item),
                })
                .collect();
            return write_json(
                &serde_json::json!({
                    "satisfied": wanted.is_empty(),
                    "paths": total,
                    "unsatisfied": rows,
                }),
                out,
            );
        }
        for item in &wanted {
            let path = depsetfs::analysis::names::escape(&item.entry.path);
            if item.missing() {
                writeln!(out, "missing {path}  {}", describe_entry(item.entry))?;
            } else {
                let fields: Vec<String> = item
                    .fields
                    .iter()
                    .map(|f| format!("{} {} on the target, {} in the set", f.field, f.b, f.a))
                    .collect();
                writeln!(out, "differs {path}  {}", fields.join("; "))?;
            }
            if let Some(note) = package_note(&log.side, &target, item) {
                writeln!(out, "  package: {note}")?;
            }
            let mut text = Vec::new();
            query::write_why_human(&log.plan.graph, &why(item), &mut text)?;
            for line in String::from_utf8_lossy(&text).lines() {
                writeln!(out, "  why: {line}")?;
            }
        }
        writeln!(out, "{summary}")
    })?;
    Ok(if wanted.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `export --against TARGET`: the shipment cut down to what the target lacks or has
/// different (stubs always: their contents are the stub program), with their directories.
pub(crate) fn cut_to_target(
    set: DeploymentSet,
    stubs: &std::collections::BTreeSet<Vec<u8>>,
    source: &Path,
    target_path: &Path,
) -> Result<DeploymentSet, CliError> {
    let target = target_side(target_path)?;
    let side = tree::set_side(&set, source, "the set", default_threads());
    check_architecture(&side, &target, target_path)?;
    let wanted = unsatisfied(&side, &target);
    let total = set.entries.len();
    let paths: Vec<Vec<u8>> = wanted
        .iter()
        .map(|item| item.entry.path.clone())
        .chain(stubs.iter().cloned())
        .collect();
    let cut = ship_only(set, paths.iter().map(Vec::as_slice));
    eprintln!(
        "depsetfs: --against {}: {} of the {total} paths are missing or different there; shipping them with their directories ({} paths)",
        target_path.display(),
        wanted.len(),
        cut.entries.len()
    );
    Ok(cut)
}
