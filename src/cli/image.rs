//! `run --image`: the image opened and unpacked, and the command, environment, directory and
//! user its config gives, turned into the options of a plain `run` on the unpacked root.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use depsetfs::launch::image::{Image, ImageError, resolve_user};
use depsetfs::launch::run::ImageLaunch;
use depsetfs::state::StateDir;

use super::CliError;

/// The source (the unpacked root), the command (CMD, else the image's entrypoint and command)
/// and how to start it.
pub(crate) fn prepare(
    reference: &Path,
    command: Vec<OsString>,
    state: &StateDir,
) -> Result<(PathBuf, Vec<OsString>, Option<ImageLaunch>), CliError> {
    let image = Image::open(reference)?;
    let argv = if command.is_empty() {
        image.default_command()
    } else {
        command
    };
    if argv.is_empty() {
        return Err(CliError::Usage(format!(
            "run --image {}: the image has no entrypoint or command: give one after --",
            reference.display()
        )));
    }
    state.ensure_root()?;
    let root = image.unpack_fresh(state)?;
    let user = match image.user() {
        Some(user) => Some(
            resolve_user(&root, &user).map_err(|why| ImageError::Invalid {
                layout: image.layout.clone(),
                what: format!("config User {user:?}"),
                message: why,
            })?,
        ),
        None => None,
    };
    eprintln!("depsetfs: image unpacked into {}", root.display());
    let launch = ImageLaunch {
        traced: image.traced(),
        env: image.env().into_iter().map(OsString::from).collect(),
        workdir: PathBuf::from(image.workdir()),
        user,
    };
    Ok((root, argv, Some(launch)))
}
