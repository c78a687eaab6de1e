//! `depsetfs export --format compose --output DIR`: every host of a (merged) log as a service.
//! For each host, the set of that host (`--host`, with the command line's selection, which may
//! name processes of any host) is exported as an OCI image layout in `DIR/SERVICE/`; then
//! `DIR/compose.yaml` names those images, the hosts' ports and addresses and the `depends_on`
//! of the cross-host connections ([`depsetfs::ship::export::compose`], docs/hosts.md). The
//! whole directory is staged and renamed into place like any export.

use std::process::ExitCode;

use clap::ArgMatches;

use depsetfs::ship::export::{self, ExportOptions, compose, output};
use depsetfs::state::StateDir;

use super::CliError;
use super::load::load_plan;
use super::ship::ExportArgs;

pub(crate) fn export_compose(
    args: ExportArgs,
    matches: Option<&ArgMatches>,
    state: &StateDir,
) -> Result<ExitCode, CliError> {
    if args.set.select.set_host.is_some() || args.set.prefer.is_some() {
        return Err(CliError::Usage(
            "export --format compose exports every host's set: leave out --host and --prefer"
                .to_string(),
        ));
    }
    let mut plan = load_plan(
        args.set.log.as_deref(),
        args.set.rules.as_deref(),
        matches,
        state,
    )?;
    let strategy = args.set.strategy_options(args.stubs);
    let output = output::check_output(&args.output, &plan.graph.header, args.force)?;
    let project = compose::service_name(
        &output
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default(),
    );
    let services = compose::services(&plan.graph);
    let staged = output::Staged::new(&output)?;
    std::fs::create_dir(staged.path()).map_err(|source| export::ExportError::Write {
        path: staged.path().to_path_buf(),
        action: "create the output directory",
        source,
    })?;
    let (written, rewrites) = export::map::with_mappings(&args.map, || {
        for service in &services {
            plan.scope_to_host(&service.host)?;
            let shipment = plan.shipment(&strategy, &Default::default());
            if let Some(warning) = &shipment.rules_warning {
                eprintln!("depsetfs: warning: {}: {warning}", service.host);
            }
            let options = ExportOptions {
                format: export::Format::Oci,
                output: staged.path().join(&service.name),
                force: false,
                progress: true,
                stubs: shipment.stubs,
            };
            let report = export::export(&plan.graph.header, &shipment.set, &options)?;
            eprintln!("depsetfs: {}: {}", service.host, report.summary());
        }
        let yaml = compose::yaml(&project, &services);
        let path = staged.path().join("compose.yaml");
        std::fs::write(&path, yaml).map_err(|source| export::ExportError::Write {
            path,
            action: "write the compose file",
            source,
        })?;
        output::write_marker(staged.path(), "compose")?;
        Ok::<(), CliError>(())
    });
    written?;
    staged.commit(args.force)?;
    for rewrite in &rewrites {
        eprintln!("depsetfs: rewrote {}", rewrite.describe());
    }
    eprintln!(
        "depsetfs: wrote {} services and {}",
        services.len(),
        output.join("compose.yaml").display()
    );
    Ok(ExitCode::SUCCESS)
}
