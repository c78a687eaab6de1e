//! What the subcommands share on the way out: stdout through one buffered writer (a closed
//! pipe ends quietly), JSON, and paths made safe for a one-line message.

use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;

use super::CliError;

/// A path for a message line: as it is, or quoted and escaped when it holds a control
/// character (a newline in a name must not split the line).
pub(crate) fn one_line(path: &Path) -> String {
    let shown = path.display().to_string();
    if shown.chars().any(char::is_control) {
        format!("{shown:?}")
    } else {
        shown
    }
}

pub(crate) fn write_json(value: &impl serde::Serialize, out: &mut dyn Write) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, value).map_err(io::Error::from)?;
    out.write_all(b"\n")
}

pub(crate) fn write_stdout(
    write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> Result<ExitCode, CliError> {
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    write(&mut out)
        .and_then(|()| out.flush())
        .map_err(CliError::Output)?;
    Ok(ExitCode::SUCCESS)
}
