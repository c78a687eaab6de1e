//! The host side of the command line: `--host`, `--address` and `--netns` of `mount` and
//! `run` (what the log header says about the machine, docs/hosts.md), and `depsetfs
//! host-refs`, the files of a set that name a recorded host.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{ArgMatches, Args};
use serde::Serialize;

use depsetfs::launch::host::HostOptions;
use depsetfs::ship::host_refs::{self, HostRef, Needle};
use depsetfs::state::StateDir;

use super::CliError;
use super::output::{write_json, write_stdout};
use super::ship::SetArgs;

/// `--host` and `--address` (and, for `run`, `--netns`).
#[derive(Args, Clone, Debug, Default)]
pub(crate) struct HostArgs {
    /// The host's name in the log (default: the hostname); `merge` and `export --map` use it.
    #[arg(long, value_name = "NAME")]
    pub(crate) host: Option<String>,
    /// Another address or name that reaches this host (a NAT's public address, a DNS name);
    /// repeatable. The interface addresses are found on their own.
    #[arg(long = "address", value_name = "ADDR")]
    pub(crate) addresses: Vec<String>,
}

impl HostArgs {
    pub(crate) fn options(&self, netns: Option<PathBuf>) -> HostOptions {
        HostOptions {
            name: self.host.clone(),
            netns,
            declared: self.addresses.clone(),
        }
    }
}

#[derive(Args)]
pub(crate) struct HostRefsArgs {
    #[command(flatten)]
    pub(crate) set: SetArgs,
    /// One JSON document: the host, the names looked for and each line found.
    #[arg(long)]
    pub(crate) json: bool,
}

/// What `host-refs --json` prints.
#[derive(Serialize)]
struct HostRefsReport<'a> {
    host: &'a str,
    addresses: &'a [String],
    needles: &'a [Needle],
    refs: &'a [HostRef],
}

/// `depsetfs host-refs`: the lines of the set's text files that name a recorded host.
pub(crate) fn host_refs_command(
    args: HostRefsArgs,
    matches: Option<&ArgMatches>,
    state: &StateDir,
) -> Result<ExitCode, CliError> {
    let plan = args.set.plan(matches, state)?;
    let result = plan.set(&args.set.strategy_options(false));
    let needles = host_refs::needles(&plan.graph);
    let source = PathBuf::from(&plan.graph.header.source);
    let refs = host_refs::find_in_set(&result.set, &source, &needles);
    write_stdout(|out| {
        if args.json {
            let report = HostRefsReport {
                host: &plan.graph.header.host,
                addresses: &plan.graph.header.addresses,
                needles: &needles,
                refs: &refs,
            };
            return write_json(&report, out);
        }
        for found in &refs {
            writeln!(
                out,
                "{}:{}: {}\t[{}: {}]",
                found.path, found.line, found.text, found.what, found.names
            )?;
        }
        Ok(())
    })
}
