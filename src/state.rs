//! Where depsetfs keeps its files between commands: logs, the "last log" link, and the registry
//! of live mounts.
//!
//! The state directory is `$DEPSETFS_STATE_DIR`, else `/var/lib/depsetfs`. Logs are
//! `logs/<UTC time>-<pid>.dlog`; `last.log` is a symlink to the newest one, which is what `dump`
//! reads when no `--log` is given. Each live mount has `mounts/<escaped mountpoint>.json` naming
//! its daemon's pid and log, so `umount` can find the daemon (and clean up after a dead one).
//! The daemon's own messages go to `daemon.log`.

use std::fs;
use std::io;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state directory {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "no log yet: {path} does not exist (record one with `depsetfs run` or `depsetfs mount`, or pass --log)"
    )]
    NoLastLog { path: PathBuf },
    #[error("mount registry {path} is unreadable: {reason}")]
    BadRegistry { path: PathBuf, reason: String },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.to_owned(),
        source,
    }
}

/// A live mount, as recorded by its daemon.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct MountRecord {
    pub mountpoint: PathBuf,
    pub source: PathBuf,
    pub pid: u32,
    pub log: PathBuf,
    /// The daemon's control socket, to which `depsetfs chroot` hands its seccomp listener
    /// (absent in records of older daemons, which did not record the network).
    #[serde(default)]
    pub control: Option<PathBuf>,
}

#[derive(Clone, Debug)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    /// `$DEPSETFS_STATE_DIR` or `/var/lib/depsetfs`.
    pub fn from_env() -> StateDir {
        let root = std::env::var_os("DEPSETFS_STATE_DIR")
            .filter(|v| !v.is_empty())
            .map_or_else(|| PathBuf::from("/var/lib/depsetfs"), PathBuf::from);
        StateDir { root }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn daemon_log(&self) -> PathBuf {
        self.root.join("daemon.log")
    }

    fn last_link(&self) -> PathBuf {
        self.root.join("last.log")
    }

    fn ensure(&self, dir: &Path) -> Result<(), StateError> {
        fs::create_dir_all(dir).map_err(io_error(dir))
    }

    /// A fresh log path under `logs/`.
    pub fn new_log_path(&self) -> Result<PathBuf, StateError> {
        let dir = self.root.join("logs");
        self.ensure(&dir)?;
        let name = format!("{}-{}.dlog", utc_stamp(now_secs()), std::process::id());
        Ok(dir.join(name))
    }

    /// Points `last.log` at `log` (atomically: a new link renamed over the old one).
    pub fn set_last_log(&self, log: &Path) -> Result<(), StateError> {
        self.ensure(&self.root)?;
        let absolute = std::path::absolute(log).map_err(io_error(log))?;
        let link = self.last_link();
        let temporary = self.root.join(format!(".last.log.{}", std::process::id()));
        let _ = fs::remove_file(&temporary);
        symlink(&absolute, &temporary).map_err(io_error(&temporary))?;
        fs::rename(&temporary, &link).map_err(io_error(&link))
    }

    /// The log `last.log` points to.
    pub fn last_log(&self) -> Result<PathBuf, StateError> {
        let link = self.last_link();
        match fs::read_link(&link) {
            Ok(target) => Ok(target),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(StateError::NoLastLog { path: link })
            }
            Err(e) => Err(StateError::Io {
                path: link,
                source: e,
            }),
        }
    }

    fn registry_path(&self, mountpoint: &Path) -> PathBuf {
        let escaped: String = mountpoint
            .to_string_lossy()
            .chars()
            .map(|c| match c {
                '/' => "%2F".to_owned(),
                '%' => "%25".to_owned(),
                c => c.to_string(),
            })
            .collect();
        self.root.join("mounts").join(format!("{escaped}.json"))
    }

    pub fn register_mount(&self, record: &MountRecord) -> Result<(), StateError> {
        let path = self.registry_path(&record.mountpoint);
        if let Some(dir) = path.parent() {
            self.ensure(dir)?;
        }
        let text = serde_json::to_string(record).map_err(|e| StateError::BadRegistry {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        fs::write(&path, text).map_err(io_error(&path))
    }

    pub fn find_mount(&self, mountpoint: &Path) -> Result<Option<MountRecord>, StateError> {
        let path = self.registry_path(mountpoint);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StateError::Io { path, source: e }),
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| StateError::BadRegistry {
                path,
                reason: e.to_string(),
            })
    }

    /// Every registered mount (records that cannot be read are skipped).
    pub fn mounts(&self) -> Vec<MountRecord> {
        let Ok(entries) = fs::read_dir(self.root.join("mounts")) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter(|entry| entry.path().extension().is_some_and(|ext| ext == "json"))
            .filter_map(|entry| fs::read_to_string(entry.path()).ok())
            .filter_map(|text| serde_json::from_str(&text).ok())
            .collect()
    }

    pub fn forget_mount(&self, mountpoint: &Path) {
        let _ = fs::remove_file(self.registry_path(mountpoint));
        let _ = fs::remove_file(self.control_socket(mountpoint));
    }

    /// Where the daemon of `mountpoint` listens for seccomp listeners
    /// (`mounts/ctl-<hash>.sock`, see [`crate::netrec`]).
    pub fn control_socket(&self, mountpoint: &Path) -> PathBuf {
        self.root
            .join("mounts")
            .join(crate::netrec::control_socket_name(mountpoint))
    }
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// `YYYYmmddTHHMMSSZ` for a Unix time (civil-from-days, proleptic Gregorian).
pub fn utc_stamp(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_are_utc_calendar_times() {
        assert_eq!(utc_stamp(0), "19700101T000000Z");
        assert_eq!(utc_stamp(951_782_400), "20000229T000000Z");
        assert_eq!(utc_stamp(1_795_779_296), "20261127T113456Z");
    }

    #[test]
    fn registry_round_trips_and_escapes_slashes() {
        let root = std::env::temp_dir().join(format!("depsetfs-state-test-{}", std::process::id()));
        let state = StateDir { root: root.clone() };
        let record = MountRecord {
            mountpoint: PathBuf::from("/srv/mirror"),
            source: PathBuf::from("/"),
            pid: 42,
            log: PathBuf::from("/tmp/x.dlog"),
            control: Some(PathBuf::from("/tmp/ctl.sock")),
        };
        state.register_mount(&record).expect("register");
        assert!(root.join("mounts/%2Fsrv%2Fmirror.json").exists());
        assert_eq!(
            state.find_mount(Path::new("/srv/mirror")).expect("find"),
            Some(record)
        );
        state.forget_mount(Path::new("/srv/mirror"));
        assert_eq!(
            state.find_mount(Path::new("/srv/mirror")).expect("find"),
            None
        );
        let _ = fs::remove_dir_all(root);
    }

    #[test]
    fn registry_records_of_older_daemons_have_no_control_socket() {
        let old = r#"{"mountpoint":"/srv/m","source":"/","pid":7,"log":"/tmp/l.dlog"}"#;
        let record: MountRecord = serde_json::from_str(old).expect("old record reads");
        assert_eq!(record.control, None);
    }
}
