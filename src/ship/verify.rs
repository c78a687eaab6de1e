//! `depsetfs verify`: proves a set runs. Each round exports the set as a directory into a
//! fresh temporary root (plus empty `/proc`, `/sys`, `/dev` for the real ones to be bound
//! over), then runs the command there *through the recording mirror* with [`run::run`]
//! (`--source` = that root), from the traced working directory. The round passes when the
//! command exits with status 0. The round's log then tells what was missing: every lookup
//! that failed with `ENOENT` in the clean root, for a path that exists in the original source
//! tree, is a **miss**, reported with the process that wanted it. With `--iterate N` the
//! misses are added to the set (closed over parents and symlinks like any used path) and the
//! command is tried again, up to N more rounds or until nothing is missing. `--script FILE`
//! runs a sequence of commands with `sh -c` in the root (sh found on the PATH, so a set that
//! reached it as `/usr/bin/sh` or `/bin/sh` both work); `--compare-stdout --expect FILE`
//! also requires the command's standard output (captured, then passed on) to equal FILE; with
//! stubs, the binaries the strategy lists as stubs are shipped as a program that exits 0.
//! [`works`] answers the yes/no of `report --verify`. Each round also checks that every
//! dynamically linked ELF file of the exported root loads there ([`loadable`]) and reports
//! those that would not.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::OsString;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::analysis::closure::SetOptions;
use crate::analysis::paths::normalize_mirror_path;
use crate::analysis::plan::{Plan, Shipment};
use crate::analysis::source_tree::{SourceLookup, SourceTree};
use crate::analysis::strategy::StrategyOptions;
use crate::launch::run::{self, RunError, RunOptions};
use crate::log::{LogError, read_log};
use crate::record::{Op, Record};
use crate::ship::capture::StdoutToFile;
use crate::ship::export::{self, ExportError};
use crate::ship::progress::Progress;
use crate::state::StateDir;

pub mod loadable;
pub mod packages;

pub use loadable::Unloadable;

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("{command}: command not found in the exported root (is it in the set?): {source}")]
    CommandNotFound {
        command: String,
        #[source]
        source: io::Error,
    },
    #[error("verify: {0}")]
    Export(#[from] ExportError),
    #[error("verify: {0}")]
    Run(RunError),
    #[error("verify: reading the round's log: {0}")]
    Log(#[from] LogError),
    #[error("verify: {}: the script is too long for sh -c ({len} bytes, at most {max})", path.display())]
    ScriptTooLong {
        path: PathBuf,
        len: usize,
        max: usize,
    },
    #[error("verify: {}: cannot {action}: {source}", path.display())]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: io::Error,
    },
}

impl From<RunError> for VerifyError {
    fn from(error: RunError) -> VerifyError {
        match error {
            RunError::CommandNotFound { command, source } => {
                VerifyError::CommandNotFound { command, source }
            }
            other => VerifyError::Run(other),
        }
    }
}

fn io_error(path: &Path, action: &'static str) -> impl FnOnce(io::Error) -> VerifyError + use<> {
    let path = path.to_path_buf();
    move |source| VerifyError::Io {
        path,
        action,
        source,
    }
}

#[derive(Clone, Debug)]
pub struct VerifyOptions {
    pub argv: Vec<OsString>,
    /// Extra rounds allowed to add misses.
    pub iterate: u32,
    pub timeout: Duration,
    /// Keep the temporary roots and logs (their directory is printed).
    pub keep: bool,
    /// The standard output the command must print (`--compare-stdout --expect FILE`).
    pub expect_stdout: Option<Vec<u8>>,
    /// `--packages`: build each root from the distribution's packages plus the copied files
    /// ([`packages`]) instead of exporting the whole set.
    pub packages: Option<packages::PackagesRoot>,
}

/// A path the command looked for in the clean root that the original tree has.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Miss {
    pub path: Vec<u8>,
    pub pid: u32,
    pub exe: String,
}

impl Miss {
    pub fn describe(&self) -> String {
        format!(
            "{} (wanted by pid {} {})",
            String::from_utf8_lossy(&self.path),
            self.pid,
            if self.exe.is_empty() { "?" } else { &self.exe }
        )
    }
}

#[derive(Clone, Debug)]
pub struct Round {
    /// From 1.
    pub number: u32,
    pub exit_code: i32,
    /// Paths in the exported root.
    pub paths: u64,
    pub misses: Vec<Miss>,
    /// ELF files of the exported root that would not load there (reported, the round still
    /// passes on the command's exit status).
    pub unloadable: Vec<Unloadable>,
    pub log: PathBuf,
    /// With an expected stdout: whether the command printed exactly that.
    pub stdout_matches: Option<bool>,
}

impl Round {
    pub fn passed(&self) -> bool {
        self.exit_code == 0 && self.stdout_matches != Some(false)
    }
}

#[derive(Clone, Debug)]
pub struct VerifyReport {
    pub rounds: Vec<Round>,
    /// Where the roots and logs are (removed unless kept).
    pub workdir: PathBuf,
}

impl VerifyReport {
    pub fn passed(&self) -> bool {
        self.rounds.last().is_some_and(Round::passed)
    }
}

/// "round 1: exit status 0, pass; 312 paths, 0 misses".
pub fn describe_round(round: &Round) -> String {
    let stdout = match round.stdout_matches {
        Some(true) => ", stdout as expected",
        Some(false) => ", stdout differs from the expected",
        None => "",
    };
    format!(
        "verify round {}: exit status {}{stdout}, {}; {} paths in the root, {} misses, {} files would not load",
        round.number,
        round.exit_code,
        if round.passed() { "pass" } else { "fail" },
        round.paths,
        round.misses.len(),
        round.unloadable.len()
    )
}

/// The longest script `sh -c` takes as one argument (Linux's MAX_ARG_STRLEN).
const MAX_SCRIPT: usize = 128 * 1024 - 1;

/// `--script FILE`: the command line that runs FILE's commands with `sh -c` in the root (sh
/// from the PATH; FILE itself need not be in the set, its name becomes `$0`).
pub fn script_argv(path: &Path) -> Result<Vec<OsString>, VerifyError> {
    let text = std::fs::read(path).map_err(io_error(path, "read the script"))?;
    if text.len() > MAX_SCRIPT || text.contains(&0) {
        return Err(VerifyError::ScriptTooLong {
            path: path.to_path_buf(),
            len: text.len(),
            max: MAX_SCRIPT,
        });
    }
    Ok(vec![
        "sh".into(),
        "-c".into(),
        OsString::from(std::ffi::OsStr::from_bytes(&text)),
        path.as_os_str().to_owned(),
    ])
}

/// One round without `--iterate`: does the set run the command? A set that lacks the command
/// itself does not. The command's stdout goes to our stderr: stdout is for the answer.
pub fn works(
    plan: &Plan,
    strategy: &StrategyOptions,
    options: &VerifyOptions,
    state: &StateDir,
) -> Result<bool, VerifyError> {
    let once = VerifyOptions {
        iterate: 0,
        ..options.clone()
    };
    let stderr = io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .map(std::fs::File::from)
        .map_err(io_error(Path::new("standard error"), "duplicate"))?;
    let _to_stderr =
        StdoutToFile::new(&stderr).map_err(io_error(Path::new("standard output"), "redirect"))?;
    match verify(plan, strategy, &once, state, &mut |_| {}) {
        Ok(report) => Ok(report.passed()),
        Err(VerifyError::CommandNotFound { .. }) => Ok(false),
        Err(other) => Err(other),
    }
}

/// Runs the rounds; `each` sees every round as it ends.
pub fn verify(
    plan: &Plan,
    strategy: &StrategyOptions,
    options: &VerifyOptions,
    state: &StateDir,
    each: &mut dyn FnMut(&Round),
) -> Result<VerifyReport, VerifyError> {
    let workdir = make_workdir()?;
    let result = rounds(plan, strategy, options, state, &workdir, each);
    if !options.keep {
        export::remove_any(&workdir);
    }
    result.map(|rounds| VerifyReport { rounds, workdir })
}

fn rounds(
    plan: &Plan,
    strategy: &StrategyOptions,
    options: &VerifyOptions,
    state: &StateDir,
    workdir: &Path,
    each: &mut dyn FnMut(&Round),
) -> Result<Vec<Round>, VerifyError> {
    let header = &plan.graph.header;
    let source = PathBuf::from(&header.source);
    let cwd = header.command.as_ref().map(|c| c.cwd.as_bytes().to_vec());
    let mut extra = BTreeSet::new();
    let mut rounds = Vec::new();
    for number in 1..=options.iterate + 1 {
        let Shipment {
            set,
            stubs,
            rules_warning,
        } = plan.shipment(strategy, &extra);
        if let Some(warning) = rules_warning.filter(|_| number == 1) {
            eprintln!("depsetfs: warning: {warning}");
        }
        let root = workdir.join(format!("root-{number}"));
        let paths = match &options.packages {
            Some(how) => {
                let (installed, copied) = packages::build_root(&source, &set, how, &root, workdir)?;
                eprintln!(
                    "depsetfs: verify round {number}: root built from the distribution with {installed} packages pinned, {copied} paths copied"
                );
                copied as u64
            }
            None => {
                let mut progress =
                    Progress::on_stderr(format!("verify round {number}: exporting"), true);
                let totals =
                    export::dir::write(&set, &stubs, &source, &root, &mut |done, total, bytes| {
                        progress.update(done, total, bytes)
                    })?;
                progress.clear();
                totals.paths()
            }
        };
        let unloadable = loadable::unloadable_files(&root)
            .map_err(io_error(&root, "check that the ELF files load in"))?;
        let log = workdir.join(format!("round-{number}.log"));
        let (exit_code, stdout_matches) = match &options.expect_stdout {
            None => (
                run_in_root(&root, cwd.as_deref(), &log, options, state)?,
                None,
            ),
            Some(expected) => {
                let stdout = workdir.join(format!("round-{number}.stdout"));
                let code = run_capturing(&root, cwd.as_deref(), &log, &stdout, options, state)?;
                (code, Some(same_stdout(&stdout, expected)?))
            }
        };
        let misses = find_misses(&log, &SetOptions::from_header(header))?;
        let round = Round {
            number,
            exit_code,
            paths,
            misses,
            unloadable,
            log,
            stdout_matches,
        };
        each(&round);
        let done = round.misses.is_empty();
        extra.extend(round.misses.iter().map(|miss| miss.path.clone()));
        rounds.push(round);
        if done {
            break;
        }
    }
    Ok(rounds)
}

fn make_workdir() -> Result<PathBuf, VerifyError> {
    let mut template = std::env::temp_dir()
        .join("depsetfs-verify.XXXXXX")
        .into_os_string()
        .into_encoded_bytes();
    template.push(0);
    // SAFETY: template is a writable NUL-terminated buffer ending in XXXXXX.
    let made = unsafe { libc::mkdtemp(template.as_mut_ptr().cast()) };
    template.pop();
    let path = PathBuf::from(std::ffi::OsStr::from_bytes(&template));
    if made.is_null() {
        return Err(io_error(&path, "create")(io::Error::last_os_error()));
    }
    Ok(path)
}

/// [`run_in_root`] with the command's stdout in the file `stdout`, then passed on to ours.
fn run_capturing(
    root: &Path,
    cwd: Option<&[u8]>,
    log: &Path,
    stdout: &Path,
    options: &VerifyOptions,
    state: &StateDir,
) -> Result<i32, VerifyError> {
    let file = std::fs::File::create(stdout).map_err(io_error(stdout, "create"))?;
    let code = {
        let _redirected =
            StdoutToFile::new(&file).map_err(io_error(stdout, "redirect stdout to"))?;
        run_in_root(root, cwd, log, options, state)?
    };
    let printed = std::fs::read(stdout).map_err(io_error(stdout, "read"))?;
    let mut out = io::stdout().lock();
    io::Write::write_all(&mut out, &printed)
        .and_then(|()| io::Write::flush(&mut out))
        .map_err(io_error(Path::new("standard output"), "write to"))?;
    Ok(code)
}

/// Whether the captured stdout equals the expected bytes.
fn same_stdout(captured: &Path, expected: &[u8]) -> Result<bool, VerifyError> {
    let printed = std::fs::read(captured).map_err(io_error(captured, "read"))?;
    Ok(printed == expected)
}

/// Runs the command recorded on a mirror of `root`, from the traced working directory. The
/// state directory's `last.log` is left pointing where it did.
fn run_in_root(
    root: &Path,
    cwd: Option<&[u8]>,
    log: &Path,
    options: &VerifyOptions,
    state: &StateDir,
) -> Result<i32, VerifyError> {
    let root = root.canonicalize().map_err(io_error(root, "resolve"))?;
    let previous_cwd = std::env::current_dir().map_err(io_error(Path::new("."), "read"))?;
    let inside = cwd
        .map(|cwd| {
            root.join(std::ffi::OsStr::from_bytes(
                normalize_mirror_path(cwd).strip_prefix(b"/").unwrap_or(b""),
            ))
        })
        .filter(|dir| dir.is_dir())
        .unwrap_or_else(|| root.clone());
    std::env::set_current_dir(&inside).map_err(io_error(&inside, "change into"))?;
    let previous_last = state.last_log().ok();
    let run_options = RunOptions {
        source: root,
        log: Some(log.to_path_buf()),
        timeout: options.timeout,
        grace: run::DEFAULT_GRACE,
        speed: crate::launch::mount::SpeedOptions::default(),
        argv: options.argv.clone(),
        label: None,
        image: None,
        host: Default::default(),
    };
    let outcome = run::run(&run_options, state);
    let _ = std::env::set_current_dir(&previous_cwd);
    if let Some(previous) = previous_last {
        let _ = state.set_last_log(&previous);
    }
    Ok(outcome?.exit_code)
}

/// The misses of a round's log: failed (`ENOENT`) lookups of paths that exist in the
/// original source tree, each with the first process that looked for it, sorted by path.
pub fn find_misses(log: &Path, original: &SetOptions) -> Result<Vec<Miss>, VerifyError> {
    let contents = read_log(log)?;
    let mut exes: HashMap<(u32, u64), String> = HashMap::new();
    for record in &contents.records {
        if let Record::Process(info) = record {
            exes.insert(
                (info.pid, info.start),
                String::from_utf8_lossy(&info.exe).into_owned(),
            );
        }
    }
    let never = original.never_shipped();
    let mut tree = SourceTree::new(&original.source);
    let mut misses: BTreeMap<Vec<u8>, Miss> = BTreeMap::new();
    for record in &contents.records {
        let Record::Access(access) = record else {
            continue;
        };
        if access.op != Op::Lookup || access.errno != libc::ENOENT {
            continue;
        }
        let path = normalize_mirror_path(&access.path);
        if misses.contains_key(&path) || never.contains(&path) {
            continue;
        }
        if matches!(tree.lookup(&path), SourceLookup::Present { .. }) {
            let exe = exes
                .get(&(access.pid, access.start))
                .cloned()
                .unwrap_or_default();
            misses.insert(
                path.clone(),
                Miss {
                    path,
                    pid: access.pid,
                    exe,
                },
            );
        }
    }
    Ok(misses.into_values().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_missing_from_the_root_is_named_as_such() {
        let error = VerifyError::from(RunError::CommandNotFound {
            command: "ls".into(),
            source: io::Error::from_raw_os_error(libc::ENOENT),
        });
        assert!(
            error
                .to_string()
                .starts_with("ls: command not found in the exported root"),
            "{error}"
        );
    }
}
