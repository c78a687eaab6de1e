//! The shipping subcommands: `export` and `verify`, on the set [`depsetfs::analysis::plan`]
//! computes from the same options as `dump --set`.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{ArgMatches, Args};

use depsetfs::analysis::plan::Plan;
use depsetfs::analysis::strategy::{Strategy, StrategyOptions};
use depsetfs::ship::export::{self, ExportOptions};
use depsetfs::ship::verify::{self, VerifyOptions};
use depsetfs::state::StateDir;

use super::CliError;
use super::analyse::SelectArgs;
use super::load::load_plan;

/// The set options of `dump --set`, for export and verify.
#[derive(Args)]
pub(crate) struct SetArgs {
    /// The log to read (default: the state directory's last.log).
    #[arg(long)]
    pub(crate) log: Option<PathBuf>,
    /// The strategy.
    #[arg(long, value_enum, default_value = "all")]
    pub(crate) strategy: Strategy,
    #[command(flatten)]
    pub(crate) select: SelectArgs,
    /// A rules file (TOML); see `depsetfs rules --default`.
    #[arg(long)]
    pub(crate) rules: Option<PathBuf>,
    /// A merged log of runs from several source trees: read the set from the tree of the run
    /// labelled RUN (its files win every conflict `merge` reported).
    #[arg(long, value_name = "RUN")]
    pub(crate) prefer: Option<String>,
}

impl SetArgs {
    /// The graph, rules and selection these options name.
    pub(crate) fn plan(
        &self,
        matches: Option<&ArgMatches>,
        state: &StateDir,
    ) -> Result<Plan, CliError> {
        let mut plan = load_plan(self.log.as_deref(), self.rules.as_deref(), matches, state)?;
        if plan.host_runs.is_none() || self.prefer.is_some() {
            depsetfs::analysis::merge::choose_source(&mut plan.graph, self.prefer.as_deref())?;
        }
        Ok(plan)
    }

    pub(crate) fn strategy_options(&self, stubs: bool) -> StrategyOptions {
        StrategyOptions {
            strategy: self.strategy,
            stubs,
        }
    }
}

#[derive(Args)]
pub(crate) struct ExportArgs {
    #[arg(long, value_enum)]
    pub(crate) format: export::Format,
    /// Where to write (`-` with --format tar: standard output).
    #[arg(long)]
    pub(crate) output: PathBuf,
    /// Replace an existing output.
    #[arg(long)]
    pub(crate) force: bool,
    /// Ship the binaries listed as stubs as a program that exits 0.
    #[arg(long)]
    pub(crate) stubs: bool,
    /// Rewrite a host name or address in the exported copy's text files (repeatable; see
    /// `depsetfs host-refs` and docs/hosts.md). The source is never changed.
    #[arg(long = "map", value_name = "OLD=NEW", value_parser = export::map::parse_mapping)]
    pub(crate) map: Vec<export::map::Mapping>,
    /// Ship only what this target (a manifest, see `depsetfs manifest`) lacks or has
    /// different, with the directories above it.
    #[arg(long, value_name = "TARGET")]
    pub(crate) against: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) set: SetArgs,
    /// With --format dockerfile|packages: install the packages' unchanged files (`install`)
    /// or copy them (`copy`); see docs/packages.md.
    #[arg(long, value_enum, default_value = "install")]
    pub(crate) packages: depsetfs::analysis::packages::Policy,
    /// With --format dockerfile: the image to start FROM (default: the source's distribution,
    /// from its /etc/os-release).
    #[arg(long, value_name = "IMAGE")]
    pub(crate) base: Option<String>,
}

#[derive(Args)]
pub(crate) struct VerifyArgs {
    #[command(flatten)]
    pub(crate) set: SetArgs,
    /// Add the misses to the set and retry, at most N more rounds.
    #[arg(long, default_value_t = 0)]
    pub(crate) iterate: u32,
    /// Seconds each round's command may run.
    #[arg(long, default_value_t = 600)]
    pub(crate) timeout: u64,
    /// Keep the temporary roots and the rounds' logs.
    #[arg(long)]
    pub(crate) keep: bool,
    /// Ship the binaries listed as stubs as a program that exits 0.
    #[arg(long)]
    pub(crate) stubs: bool,
    /// Run FILE's commands with sh -c in the root instead of CMD.
    #[arg(long, conflicts_with = "command")]
    pub(crate) script: Option<PathBuf>,
    /// Also require the command's stdout to equal the file given with --expect.
    #[arg(long, requires = "expect")]
    pub(crate) compare_stdout: bool,
    /// The expected stdout, for --compare-stdout.
    #[arg(long, requires = "compare_stdout")]
    pub(crate) expect: Option<PathBuf>,
    /// Build each root from the distribution instead (mmdebstrap: the packages the policy
    /// installs, at their traced versions, plus the copied files), as the Dockerfile of
    /// `export --format dockerfile` would; see docs/packages.md.
    #[arg(long, value_enum, value_name = "POLICY")]
    pub(crate) packages: Option<depsetfs::analysis::packages::Policy>,
    /// With --packages: where downloaded packages are kept between runs.
    #[arg(
        long,
        requires = "packages",
        default_value = "/var/cache/depsetfs/packages"
    )]
    pub(crate) package_cache: PathBuf,
    /// The command and its arguments.
    #[arg(last = true, required_unless_present = "script")]
    pub(crate) command: Vec<OsString>,
}

pub(crate) fn export_command(
    args: ExportArgs,
    matches: Option<&ArgMatches>,
    state: &StateDir,
) -> Result<ExitCode, CliError> {
    if matches!(
        args.format,
        export::Format::Dockerfile | export::Format::Packages
    ) {
        return super::packages::export_packages_command(args, matches, state);
    }
    if args.format == export::Format::Compose {
        return super::compose::export_compose(args, matches, state);
    }
    let plan = args.set.plan(matches, state)?;
    let strategy = args.set.strategy_options(args.stubs);
    let mut shipment = plan.shipment(&strategy, &Default::default());
    if let Some(warning) = &shipment.rules_warning {
        eprintln!("depsetfs: warning: {warning}");
    }
    if let Some(target) = &args.against {
        let source = plan.set_options().source;
        shipment.set =
            super::compare::cut_to_target(shipment.set, &shipment.stubs, &source, target)?;
    }
    let options = ExportOptions {
        format: args.format,
        output: args.output,
        force: args.force,
        progress: true,
        stubs: shipment.stubs,
    };
    let (report, rewrites) = export::map::with_mappings(&args.map, || {
        export::export(&plan.graph.header, &shipment.set, &options)
    });
    let report = report?;
    eprintln!("depsetfs: {}", report.summary());
    for rewrite in &rewrites {
        eprintln!("depsetfs: rewrote {}", rewrite.describe());
    }
    for unused in export::map::unused(&args.map, &rewrites) {
        eprintln!(
            "depsetfs: warning: --map {}: no text file of the set names it",
            unused.old
        );
    }
    if !options.stubs.is_empty() {
        eprintln!(
            "depsetfs: {} binaries shipped as stubs",
            options.stubs.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Verify options for one command, without --iterate, --keep or an expected stdout.
pub(crate) fn verify_options(argv: Vec<OsString>, timeout: Duration) -> VerifyOptions {
    VerifyOptions {
        argv,
        iterate: 0,
        timeout,
        keep: false,
        expect_stdout: None,
        packages: None,
    }
}

pub(crate) fn verify_command(
    args: VerifyArgs,
    matches: Option<&ArgMatches>,
    state: &StateDir,
) -> Result<ExitCode, CliError> {
    let plan = args.set.plan(matches, state)?;
    let strategy = args.set.strategy_options(args.stubs);
    let argv = match &args.script {
        Some(script) => verify::script_argv(script)?,
        None => args.command,
    };
    let expect_stdout = match (&args.expect, args.compare_stdout) {
        (Some(path), true) => Some(
            std::fs::read(path)
                .map_err(|e| CliError::Usage(format!("--expect {}: {e}", path.display())))?,
        ),
        _ => None,
    };
    let packages = args.packages.map(|policy| verify::packages::PackagesRoot {
        policy: depsetfs::analysis::packages::PolicyChoice {
            default: policy,
            copy: plan.rules.packages_copy.iter().cloned().collect(),
            install: plan.rules.packages_install.iter().cloned().collect(),
        },
        cache: args.package_cache.clone(),
    });
    let options = VerifyOptions {
        iterate: args.iterate,
        keep: args.keep,
        expect_stdout,
        packages,
        ..verify_options(argv, Duration::from_secs(args.timeout))
    };
    let report = verify::verify(&plan, &strategy, &options, state, &mut |round| {
        eprintln!("depsetfs: {}", verify::describe_round(round));
        for miss in &round.misses {
            eprintln!("depsetfs:   miss: {}", miss.describe());
        }
        for file in &round.unloadable {
            eprintln!("depsetfs:   {}", file.describe());
        }
    })?;
    if args.keep {
        eprintln!("depsetfs: kept {}", report.workdir.display());
    }
    Ok(if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
