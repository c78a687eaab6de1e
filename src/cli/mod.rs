//! The command line: the clap definition of every subcommand ([`Cli`], [`Command`]), the one
//! error type the subcommands end with ([`CliError`], printed as one `depsetfs: ...` line),
//! clap's errors in that one-line form, and the dispatch to one thin function per subcommand,
//! in one file per side: [`record`] (mount, umount, run, chroot, __serve, doctor, completions,
//! man), [`analyse`] (dump, ps, tree, why, who, files, stats, report, rules), [`page`] (ui,
//! report --html, graph, suggest), [`ship`] (export, verify), [`merge`] (merge), [`compare`]
//! (manifest, diff, satisfies), [`host`] (host-refs), [`fleet`] (dump --format parquet),
//! [`image`] (run --image), [`packages`] (packages), with [`load`] and [`output`] what they share.

mod analyse;
mod compare;
mod compose;
mod fleet;
mod host;
mod image;
mod load;
mod merge;
mod output;
mod packages;
mod page;
mod record;
mod ship;

use analyse::{
    AnalysisArgs, DumpArgs, FilesArgs, LogArgs, ReportArgs, RulesArgs, SynthLogArgs, WhoArgs,
    WhyArgs,
};
use compare::{DiffArgs, ManifestArgs, SatisfiesArgs};
use merge::MergeArgs;
use packages::PackagesArgs;
use page::{GraphArgs, SuggestArgs, UiArgs};
use record::{ChrootArgs, MountArgs, RunArgs, ServeArgs};
use ship::{ExportArgs, VerifyArgs};

use std::io;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{ArgMatches, Parser, Subcommand};

use depsetfs::analysis::graph::GraphError;
use depsetfs::analysis::merge::MergeError;
use depsetfs::analysis::rules::RulesError;
use depsetfs::analysis::select::SelectError;
use depsetfs::launch::chroot::ChrootError;
use depsetfs::launch::mount::MountError;
use depsetfs::launch::run::RunError;
use depsetfs::log::LogError;
use depsetfs::ship::export::ExportError;
use depsetfs::ship::verify::VerifyError;
use depsetfs::state::{StateDir, StateError};

#[derive(Parser)]
#[command(
    name = "depsetfs",
    version,
    about = "Find the files a service needs, by watching it run on a recording mirror of /"
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Mirror a tree (default /) at MOUNTPOINT and start recording; returns when ready.
    Mount(MountArgs),
    /// Flush the log, unmount MOUNTPOINT and stop its daemon.
    Umount { mountpoint: PathBuf },
    /// Print the recorded events as JSON lines, or the deployment set.
    Dump(DumpArgs),
    /// Mount in a private namespace, run CMD chrooted on the mirror, unmount, keep the log.
    Run(RunArgs),
    /// Run CMD chrooted on a mirror made by `depsetfs mount`, with its network calls recorded
    /// (instead of a plain `chroot`, which records files only).
    Chroot(ChrootArgs),
    /// List the process images of a log (pid, exec, parent, exit status, selected).
    Ps(AnalysisArgs),
    /// Show the process images as a tree of forks and execs.
    Tree(AnalysisArgs),
    /// Explain why PATH is in the set (the chain of edges from a selected process) or not.
    Why(WhyArgs),
    /// Every process that touched PATH, and how.
    Who(WhoArgs),
    /// What the processes of one pid touched.
    Files(FilesArgs),
    /// Counts: records, accesses, processes, files, bytes, lost events.
    Stats(LogArgs),
    /// The summary table: one row per strategy with files, bytes and the difference to the
    /// row before (`--verify -- CMD`: and whether each set runs CMD).
    Report(ReportArgs),
    /// Print the rules (`--default`: the built-in rules file).
    Rules(RulesArgs),
    /// Serve a page to see the set and shape it (tweaks saved as the --rules file); prints
    /// the URL to open.
    Ui(UiArgs),
    /// The process graph for Graphviz (`--format dot`) or scripts (`--format json`).
    Graph(GraphArgs),
    /// Suggestions: secrets and developer-box leftovers in the set, noise, outputs, stubs.
    Suggest(SuggestArgs),
    /// Write the deployment set out of the source tree: a directory, a tar stream or an OCI
    /// image layout.
    Export(ExportArgs),
    /// Every package the set touches (name, version, architecture, files used) and every path
    /// classified: pristine, modified, unowned (see docs/packages.md).
    Packages(PackagesArgs),
    /// Export the set into a clean root, run CMD there on a recording mirror, report pass/fail
    /// and the paths it missed.
    Verify(VerifyArgs),
    /// Merge logs into one log of several runs (each record keeps its run; analyses give the
    /// union of the runs' needs); conflicts between runs of different source trees: exit 2.
    Merge(MergeArgs),
    /// The lines of the set's text files that name a recorded host: its name and addresses,
    /// and the peers its processes connected to (what to edit, or `export --map`, to move it).
    HostRefs(host::HostRefsArgs),
    /// Describe what a target holds under ROOT (default /): every path with kind, mode,
    /// owner, size, sha256 and symlink target, as JSON; incremental with the previous output.
    Manifest(ManifestArgs),
    /// Compare two inputs (logs, saved sets, manifests, exported directories, tars, OCI
    /// layouts): paths added, removed, changed; `--fail-on` exits 1 for CI.
    Diff(DiffArgs),
    /// Does the target (a manifest) already hold every path of the set, identical? Lists the
    /// missing and differing paths with why each is needed; exit 1 when not.
    Satisfies(SatisfiesArgs),
    /// Check what this machine lets depsetfs do (FUSE, namespaces, process events, seccomp) and
    /// say what will and will not be recorded here.
    Doctor,
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) on stdout.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the man pages (depsetfs.1 and one per subcommand) into DIR.
    #[command(name = "__man", hide = true)]
    Man { dir: PathBuf },
    #[command(name = "__serve", hide = true)]
    Serve(ServeArgs),
    /// Write a synthetic log for the analysis benchmark (bench/analysis.sh).
    #[command(name = "__synth-log", hide = true)]
    SynthLog(SynthLogArgs),
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum CliError {
    #[error(transparent)]
    Mount(#[from] MountError),
    #[error(transparent)]
    Run(#[from] RunError),
    #[error(transparent)]
    Chroot(#[from] ChrootError),
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Graph(#[from] GraphError),
    #[error(transparent)]
    Rules(#[from] RulesError),
    #[error(transparent)]
    Select(#[from] SelectError),
    #[error(transparent)]
    Export(#[from] ExportError),
    #[error(transparent)]
    Merge(#[from] MergeError),
    #[error(transparent)]
    Verify(#[from] VerifyError),
    #[error(transparent)]
    Ui(#[from] depsetfs::analysis::ui::UiError),
    #[error(transparent)]
    Image(#[from] depsetfs::launch::image::ImageError),
    #[error(transparent)]
    Fleet(#[from] depsetfs::analysis::fleet::FleetError),
    #[error(transparent)]
    Compare(#[from] depsetfs::ship::compare::CompareError),
    #[error(transparent)]
    Packages(#[from] depsetfs::analysis::packages::PackageError),
    #[error("writing output: {0}")]
    Output(io::Error),
    #[error("--log {}: {source}", path.display())]
    LogPath { path: PathBuf, source: io::Error },
    #[error("{0}")]
    Usage(String),
}

/// clap's help and version go to stdout as usual; its errors become our one-line form.
pub(crate) fn usage_error(error: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        error.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = error.print();
        return if error.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
            ExitCode::from(2)
        } else {
            ExitCode::SUCCESS
        };
    }
    eprintln!("depsetfs: {}", one_line_usage_error(&error.to_string()));
    ExitCode::from(2)
}

/// clap's multi-line error as one line: its first line, with the list that follows a line
/// ending in ':' (the missing arguments) joined onto it, and the `--help` of the subcommand
/// its usage line names.
fn one_line_usage_error(text: &str) -> String {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let mut message = lines
        .next()
        .unwrap_or("invalid arguments")
        .trim_start_matches("error: ")
        .to_string();
    if message.ends_with(':') {
        let listed: Vec<&str> = text
            .lines()
            .skip_while(|l| !l.trim_end().ends_with(':'))
            .skip(1)
            .take_while(|l| l.starts_with(' ') && !l.trim().is_empty())
            .map(str::trim)
            .collect();
        message = format!("{} {}", message, listed.join(" "));
    }
    let command: Vec<&str> = text
        .lines()
        .find_map(|l| l.strip_prefix("Usage: "))
        .unwrap_or("depsetfs")
        .split_whitespace()
        .take_while(|word| !word.starts_with(['[', '<', '-']))
        .collect();
    let command = if command.is_empty() {
        "depsetfs".to_string()
    } else {
        command.join(" ")
    };
    format!("{message} (see {command} --help)")
}

pub(crate) fn dispatch(
    command: Command,
    matches: Option<&ArgMatches>,
) -> Result<ExitCode, CliError> {
    let state = StateDir::from_env();
    match command {
        Command::Mount(args) => record::mount_command(args, &state),
        Command::Umount { mountpoint } => record::umount_command(&mountpoint, &state),
        Command::Run(args) => record::run_command(args, &state),
        Command::Chroot(args) => record::chroot_command(args, &state),
        Command::Serve(args) => record::serve_command(args, &state),
        Command::Doctor => record::doctor_command(),
        Command::Completions { shell } => record::completions_command(shell),
        Command::Man { dir } => record::man_command(&dir),
        Command::Dump(args) => analyse::dump_command(args, matches, &state),
        Command::Ps(args) => analyse::ps_command(args, matches, &state),
        Command::Tree(args) => analyse::tree_command(args, matches, &state),
        Command::Why(args) => analyse::why_command(args, matches, &state),
        Command::Who(args) => analyse::who_command(args, &state),
        Command::Files(args) => analyse::files_command(args, &state),
        Command::Stats(args) => analyse::stats_command(args, &state),
        Command::Report(args) => analyse::report_command(args, matches, &state),
        Command::Rules(args) => analyse::rules_command(args),
        Command::Ui(args) => page::ui_command(args, matches, &state),
        Command::Graph(args) => page::graph_command(args, matches, &state),
        Command::Suggest(args) => page::suggest_command(args, matches, &state),
        Command::SynthLog(args) => analyse::synth_log_command(args),
        Command::Export(args) => ship::export_command(args, matches, &state),
        Command::Verify(args) => ship::verify_command(args, matches, &state),
        Command::Merge(args) => merge::merge_command(args),
        Command::HostRefs(args) => host::host_refs_command(args, matches, &state),
        Command::Manifest(args) => compare::manifest_command(args),
        Command::Diff(args) => compare::diff_command(args, matches, &state),
        Command::Satisfies(args) => compare::satisfies_command(args, matches, &state),
        Command::Packages(args) => packages::packages_command(args, matches, &state),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_errors_become_one_line_naming_what_is_missing() {
        let missing = Cli::command()
            .try_get_matches_from(["depsetfs", "export", "--output", "x"])
            .err()
            .map(|e| one_line_usage_error(&e.to_string()));
        assert_eq!(
            missing.as_deref(),
            Some(
                "the following required arguments were not provided: --format <FORMAT> (see depsetfs export --help)"
            )
        );
        let unknown = Cli::command()
            .try_get_matches_from(["depsetfs", "frobnicate"])
            .err()
            .map(|e| one_line_usage_error(&e.to_string()));
        assert!(
            unknown
                .as_deref()
                .is_some_and(|l| l.contains("'frobnicate'") && l.ends_with("(see depsetfs --help)")),
            "{unknown:?}"
        );
    }
}
