//! `dump --format parquet --output FILE`: the log's access records, with `--net` its network
//! records, or with `--set` the deployment set, as a Parquet file for DuckDB, Spark or Trino (docs/fleet.md); the writing is
//! [`depsetfs::analysis::fleet`].

use std::process::ExitCode;

use clap::ArgMatches;

use depsetfs::analysis::fleet;
use depsetfs::analysis::strategy::StrategyOptions;
use depsetfs::log::LogReader;
use depsetfs::state::StateDir;

use super::CliError;
use super::analyse::DumpArgs;
use super::load::{load_plan, log_path};

/// What `dump --format` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum DumpFormat {
    /// Apache Parquet (schemas in docs/fleet.md); needs --output.
    Parquet,
}

pub(crate) fn dump_parquet_command(
    args: DumpArgs,
    matches: Option<&ArgMatches>,
    state: &StateDir,
) -> Result<ExitCode, CliError> {
    let Some(output) = args.output.as_deref() else {
        return Err(CliError::Usage(
            "dump --format parquet: give the file to write with --output".to_owned(),
        ));
    };
    let (path, _) = log_path(args.log.as_deref(), state)?;
    let label = fleet::label_of(&path);
    let rows = if args.set {
        let plan = load_plan(args.log.as_deref(), args.rules.as_deref(), matches, state)?;
        let result = plan.set(&StrategyOptions {
            strategy: args.strategy,
            stubs: args.stubs,
        });
        fleet::write_set(
            &plan.graph.header,
            &label,
            args.strategy.name(),
            &result.set,
            output,
        )?
    } else {
        let reader = LogReader::open(&path)?;
        let header = reader.header().clone();
        if args.net {
            fleet::write_net(&header, &label, reader, output)?
        } else {
            fleet::write_accesses(&header, &label, reader, output)?
        }
    };
    let what = match (args.set, args.net) {
        (true, _) => "set paths",
        (false, true) => "network records",
        (false, false) => "accesses",
    };
    eprintln!("depsetfs: wrote {rows} {what} to {}", output.display());
    Ok(ExitCode::SUCCESS)
}
