//! The `depsetfs` command: parses the command line and hands each subcommand to [`cli`], one
//! thin function per subcommand over the library. Every failure ends as one line on stderr
//! (`depsetfs: ...`) and exit status 1; `run` exits with its command's status.

use std::io;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};

mod cli;

use cli::{Cli, CliError};

fn main() -> ExitCode {
    // The matches are kept: which selector a --children follows is only in their indices.
    let parsed = Cli::command()
        .try_get_matches()
        .and_then(|matches| Cli::from_arg_matches(&matches).map(|cli| (cli, matches)));
    let (cli, matches) = match parsed {
        Ok(parsed) => parsed,
        Err(e) => return cli::usage_error(&e),
    };
    let sub_matches = matches.subcommand().map(|(_, sub)| sub.clone());
    match cli::dispatch(cli.command, sub_matches.as_ref()) {
        Ok(code) => code,
        Err(CliError::Output(e)) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("depsetfs: {e}");
            ExitCode::FAILURE
        }
    }
}
