//! The host side of the command line: `--host`, `--address` and `--netns` of `mount` and
//! `run` (what the log header says about the machine, docs/hosts.md), and `depsetfs
//! host-refs`, the files of a set that name a recorded host.

use std::path::PathBuf;

use clap::Args;

use depsetfs::launch::host::HostOptions;

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
