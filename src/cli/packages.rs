//! `depsetfs packages` (every package the set touches, every path classified) and the two
//! export formats built on it, `export --format dockerfile` and `export --format packages`:
//! the set of `dump --set`, classified by [`depsetfs::analysis::packages`], written by
//! [`depsetfs::ship::export::dockerfile`].

use std::path::Path;
use std::process::ExitCode;

use clap::{ArgMatches, Args};

use depsetfs::analysis::packages::{self, PackagesReport, Policy, PolicyChoice};
use depsetfs::analysis::plan::{Plan, Shipment};
use depsetfs::ship::export::dockerfile::{self, DockerfileSpec};
use depsetfs::ship::export::{ExportError, Format};
use depsetfs::state::StateDir;

use super::CliError;
use super::output::{write_json, write_stdout};
use super::ship::{ExportArgs, SetArgs};

#[derive(Args)]
pub(crate) struct PackagesArgs {
    #[command(flatten)]
    pub(crate) set: SetArgs,
    /// How the packages' unchanged files ship: `install` the package at its version, or
    /// `copy` them like the service's own (per package: `[packages]` of the rules file).
    #[arg(long, value_enum, default_value = "install")]
    pub(crate) packages: Policy,
    /// JSON instead of the human listing (see docs/packages.md).
    #[arg(long)]
    pub(crate) json: bool,
}

/// The plan, the shipment and its packages report.
fn classify(
    set: &SetArgs,
    policy: Policy,
    matches: Option<&ArgMatches>,
    state: &StateDir,
) -> Result<(Plan, Shipment, PackagesReport), CliError> {
    let plan = set.plan(matches, state)?;
    let shipment = plan.shipment(&set.strategy_options(false), &Default::default());
    if let Some(warning) = &shipment.rules_warning {
        eprintln!("depsetfs: warning: {warning}");
    }
    let choice = PolicyChoice {
        default: policy,
        copy: plan.rules.packages_copy.iter().cloned().collect(),
        install: plan.rules.packages_install.iter().cloned().collect(),
    };
    let source = Path::new(&plan.graph.header.source);
    let report = packages::classify(source, &shipment.set, &choice)?;
    if let Some(warning) = &report.warning {
        eprintln!("depsetfs: warning: {warning}");
    }
    Ok((plan, shipment, report))
}

pub(crate) fn packages_command(
    args: PackagesArgs,
    matches: Option<&ArgMatches>,
    state: &StateDir,
) -> Result<ExitCode, CliError> {
    let (_, _, report) = classify(&args.set, args.packages, matches, state)?;
    write_stdout(|out| {
        if args.json {
            write_json(&report, out)
        } else {
            report.render(out)
        }
    })
}

/// `export --format dockerfile|packages`.
pub(crate) fn export_packages_command(
    args: ExportArgs,
    matches: Option<&ArgMatches>,
    state: &StateDir,
) -> Result<ExitCode, CliError> {
    let (plan, shipment, report) = classify(&args.set, args.packages, matches, state)?;
    let header = &plan.graph.header;
    // The same pins `verify --packages` installs: superseded versions unpinned, exact-version
    // dependencies of the pins pinned too (docs/packages.md).
    let install =
        depsetfs::ship::apt_pins::resolve(Path::new(&header.source), &report.install_lines())
            .warned();
    if args.format == Format::Packages {
        let written = dockerfile::write_manifest(header, &install, &args.output, args.force)?;
        eprintln!(
            "depsetfs: wrote {} packages to {}",
            install.len(),
            written.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let source = Path::new(&header.source);
    let base = match args.base {
        Some(base) => base,
        None => dockerfile::base_image(source)?,
    };
    let command = header.command.as_ref();
    let spec = DockerfileSpec {
        base,
        install,
        copied: report.copied_paths(),
        user: dockerfile::traced_user(&plan.graph),
        workdir: command.map(|c| c.cwd.clone()).filter(|cwd| !cwd.is_empty()),
        expose: dockerfile::exposed_ports(&plan.graph, &plan.selection),
        cmd: command
            .map(|c| c.argv.clone())
            .filter(|argv| !argv.is_empty()),
        origin: format!(
            "Written by depsetfs export --format dockerfile from the trace of {} (policy {}; see docs/packages.md)",
            command.map_or_else(|| "a mount".to_string(), |c| c.argv.join(" ")),
            packages::policy_name(args.packages)
        ),
    };
    if spec.base.contains(char::is_whitespace) {
        return Err(CliError::Export(ExportError::Write {
            path: args.output,
            action: "name the base image (it holds a space)",
            source: std::io::Error::from_raw_os_error(libc::EINVAL),
        }));
    }
    let written =
        dockerfile::write_dockerfile(header, &shipment.set, &spec, &args.output, args.force)?;
    eprintln!("depsetfs: {}", written.summary());
    Ok(ExitCode::SUCCESS)
}
