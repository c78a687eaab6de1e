//! How FUSE requests reach the operation handlers and their answers go back: fuser's threads
//! reading /dev/fuse ([`dev`]), or FUSE over io_uring ([`uring`]: one queue per CPU, served by
//! a daemon thread on that CPU, Linux >= 6.14). Both call the same handlers of `mirror/fs.rs`,
//! which answer through the traits of [`replies`]. This module decides which one a mount
//! uses: `--transport auto` (the default) takes io_uring where the kernel offers it, turning
//! the fuse module's `enable_uring` parameter on when it is off and root may change it (and
//! says so), and otherwise falls back to /dev/fuse with one warning line; `uring` and `dev`
//! choose explicitly, and `uring` fails when the ring cannot be had.

pub mod dev;
pub mod replies;
pub mod uring;

use std::path::Path;

/// The fuse module's switch for FUSE over io_uring (read by the kernel at each INIT).
pub const ENABLE_URING: &str = "/sys/module/fuse/parameters/enable_uring";

/// `--transport`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum TransportChoice {
    /// io_uring where the kernel offers it, else /dev/fuse (one line says why).
    #[default]
    Auto,
    /// FUSE over io_uring, or fail.
    Uring,
    /// fuser's threads reading /dev/fuse.
    Dev,
}

/// The environment variable that sets the default `--transport` (CI runs the tests once per
/// transport with it; `verify`'s own runs follow it too).
pub const TRANSPORT_ENV: &str = "DEPSETFS_TRANSPORT";

impl TransportChoice {
    /// The default: `DEPSETFS_TRANSPORT` if it names a transport, else `auto` (the commands
    /// that take `--transport` reject a bad value themselves). Parsed by clap's derived
    /// names, the same as the option's.
    pub fn from_env() -> TransportChoice {
        std::env::var(TRANSPORT_ENV)
            .ok()
            .and_then(|value| <Self as clap::ValueEnum>::from_str(&value, false).ok())
            .unwrap_or_default()
    }

    /// The option's value naming this choice (clap's derived name).
    pub fn name(self) -> String {
        clap::ValueEnum::to_possible_value(&self)
            .map(|value| value.get_name().to_owned())
            .unwrap_or_default()
    }
}

/// Why the ring cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error(
        "FUSE over io_uring is not offered by this kernel (no {ENABLE_URING}: Linux < 6.14 or CONFIG_FUSE_IO_URING off)"
    )]
    NotBuilt,
    #[error("FUSE over io_uring is off ({ENABLE_URING} is N) and cannot be turned on here: {0}")]
    Off(std::io::Error),
    #[error("FUSE over io_uring: {0}")]
    Ring(String),
}

/// What `prepare` decided, before /dev/fuse is opened (the kernel reads `enable_uring` at INIT).
#[derive(Debug, Default)]
pub struct Prepared {
    /// Ask for FUSE over io_uring at INIT.
    pub want_uring: bool,
    /// Lines for the user (`notice:`): the module parameter was turned on.
    pub notices: Vec<String>,
    /// Lines for the user (`warning:`): the fallback to /dev/fuse, and why.
    pub warnings: Vec<String>,
}

/// Decides whether to ask for the ring, turning `enable_uring` on if it is off and writable.
pub fn prepare(choice: TransportChoice) -> Result<Prepared, TransportError> {
    prepare_with(choice, Path::new(ENABLE_URING), uring::probe)
}

fn prepare_with(
    choice: TransportChoice,
    switch: &Path,
    probe: impl FnOnce() -> std::io::Result<()>,
) -> Result<Prepared, TransportError> {
    if choice == TransportChoice::Dev {
        return Ok(Prepared::default());
    }
    // The rings must be possible before INIT asks for them: after it, the kernel waits for them.
    let usable = probe()
        .map_err(|e| TransportError::Ring(format!("this process cannot create an io_uring: {e}")))
        .and_then(|()| enable(switch));
    match usable {
        Ok(turned_on) => Ok(Prepared {
            want_uring: true,
            notices: turned_on
                .then(|| {
                    format!(
                        "turned FUSE over io_uring on for this machine ({ENABLE_URING} was N, now Y; \
                         `echo N > {ENABLE_URING}` turns it off; `--transport dev` does not use it)"
                    )
                })
                .into_iter()
                .collect(),
            warnings: Vec::new(),
        }),
        Err(e) if choice == TransportChoice::Auto => Ok(Prepared {
            warnings: vec![fallback_warning(&e)],
            ..Prepared::default()
        }),
        Err(e) => Err(e),
    }
}

/// The one warning line of a fallback to /dev/fuse.
pub fn fallback_warning(why: &TransportError) -> String {
    format!("{why}; requests go through /dev/fuse threads (slower)")
}

/// Reads the switch and turns it on if it is off; true if this call turned it on.
fn enable(switch: &Path) -> Result<bool, TransportError> {
    let value = match std::fs::read_to_string(switch) {
        Ok(value) => value,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(TransportError::NotBuilt),
        Err(e) => return Err(TransportError::Off(e)),
    };
    if matches!(value.trim(), "Y" | "y" | "1") {
        return Ok(false);
    }
    std::fs::write(switch, "Y").map_err(TransportError::Off)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::fixtures::ScratchDir;

    fn switch(value: &str) -> (ScratchDir, std::path::PathBuf) {
        let dir = ScratchDir::new("transport");
        let path = dir.file("enable_uring");
        std::fs::write(&path, value).expect("write the switch");
        (dir, path)
    }

    fn ring_ok() -> std::io::Result<()> {
        Ok(())
    }

    #[test]
    fn a_process_without_io_uring_falls_back_before_init() {
        let (_dir, path) = switch("N\n");
        let no_ring = || Err(std::io::Error::from_raw_os_error(libc::EPERM));
        let auto = prepare_with(TransportChoice::Auto, &path, no_ring).expect("auto falls back");
        assert!(!auto.want_uring && auto.warnings.len() == 1);
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            "N\n",
            "the switch is left alone"
        );
        assert!(prepare_with(TransportChoice::Uring, &path, no_ring).is_err());
    }

    #[test]
    fn every_choice_is_named_as_the_option_spells_it() {
        for (choice, name) in [
            (TransportChoice::Auto, "auto"),
            (TransportChoice::Uring, "uring"),
            (TransportChoice::Dev, "dev"),
        ] {
            assert_eq!(choice.name(), name);
        }
    }

    #[test]
    fn dev_never_touches_the_switch() {
        let (_dir, path) = switch("N\n");
        let prepared = prepare_with(TransportChoice::Dev, &path, ring_ok).expect("dev");
        assert!(!prepared.want_uring);
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "N\n");
    }

    #[test]
    fn an_off_switch_is_turned_on_and_said() {
        let (_dir, path) = switch("N\n");
        let prepared = prepare_with(TransportChoice::Auto, &path, ring_ok).expect("auto");
        assert!(prepared.want_uring);
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "Y");
        assert_eq!(prepared.notices.len(), 1, "{prepared:?}");
        let again = prepare_with(TransportChoice::Uring, &path, ring_ok).expect("uring");
        assert!(again.want_uring && again.notices.is_empty());
    }

    #[test]
    fn without_the_switch_auto_warns_and_uring_fails() {
        let (dir, _) = switch("N");
        let missing = dir.file("absent");
        let auto = prepare_with(TransportChoice::Auto, &missing, ring_ok).expect("auto falls back");
        assert!(!auto.want_uring);
        assert_eq!(auto.warnings.len(), 1);
        assert!(
            auto.warnings[0].contains("/dev/fuse"),
            "{:?}",
            auto.warnings
        );
        assert!(matches!(
            prepare_with(TransportChoice::Uring, &missing, ring_ok),
            Err(TransportError::NotBuilt)
        ));
    }
}
