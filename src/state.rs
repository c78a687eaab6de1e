//! Where depsetfs keeps its files between commands: logs, the "last log" link, and the registry
//! of live mounts.
//!
//! The state directory is `$DEPSETFS_STATE_DIR`, else `/var/lib/depsetfs`. Logs are
//! `logs/<UTC time>-<pid>.dlog`; `last.log` is a symlink to the newest one, which is what `dump`
//! reads when no `--log` is given. Each live mount has `mounts/<escaped mountpoint>.json` naming
//! its daemon's pid and log, so `umount` can find the daemon (and clean up after a dead one).
//! The daemon's own messages go to `daemon.log`.
//!
//! `umount` kills the pid a registry entry names, so every file here is created by depsetfs
//! with an explicit mode, never from the daemon's umask (0): directories 0755, registry entries
//! and `daemon.log` 0644, logs 0600 (`crate::log`), control sockets 0600 (`crate::mirror::network`).
//! An entry that is not a regular file owned by the caller or root, or that group or others
//! can write, was not written by depsetfs and is refused ([`StateError::UntrustedRegistry`]).

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::record::utc_stamp;

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
    #[error(
        "mount registry {path} was not written by depsetfs ({reason}); refusing to trust it: check it, remove it, and unmount by hand if needed"
    )]
    UntrustedRegistry { path: PathBuf, reason: String },
}

/// Mode of the state directories (`mounts/`, `logs/`, the state directory itself when created).
const DIR_MODE: u32 = 0o755;
/// Mode of registry entries and `daemon.log`.
const FILE_MODE: u32 = 0o644;

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

    /// Creates `dir` (and missing parents) as 0755 whatever the umask. `mounts/` and `logs/`
    /// made world-writable by an older depsetfs (the daemon's umask 0 leaked into them) are
    /// repaired; any other directory that exists already is left as it is.
    fn ensure(&self, dir: &Path) -> Result<(), StateError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(dir)
            .map_err(io_error(dir))?;
        if dir != self.root && dir.parent() == Some(self.root.as_path()) {
            let metadata = fs::symlink_metadata(dir).map_err(io_error(dir))?;
            if metadata.is_dir() && metadata.uid() == euid() && metadata.mode() & 0o022 != 0 {
                fs::set_permissions(dir, fs::Permissions::from_mode(DIR_MODE))
                    .map_err(io_error(dir))?;
            }
        }
        Ok(())
    }

    /// Creates the state directory if it does not exist yet.
    pub fn ensure_root(&self) -> Result<(), StateError> {
        self.ensure(&self.root)
    }

    /// `daemon.log`, opened for appending (created 0644; an older world-writable one is
    /// made 0644 if it is ours).
    pub fn open_daemon_log(&self) -> Result<fs::File, StateError> {
        self.ensure(&self.root)?;
        let path = self.daemon_log();
        let file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(FILE_MODE)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(io_error(&path))?;
        let metadata = file.metadata().map_err(io_error(&path))?;
        if metadata.uid() == euid() && metadata.mode() & 0o022 != 0 {
            file.set_permissions(fs::Permissions::from_mode(FILE_MODE))
                .map_err(io_error(&path))?;
        }
        Ok(file)
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
        // Written aside and renamed over: a reader never sees half an entry, and an entry
        // someone else planted at the name is replaced, not written through.
        let mut temporary = path.clone().into_os_string();
        temporary.push(format!(".{}.tmp", std::process::id()));
        let temporary = PathBuf::from(temporary);
        let _ = fs::remove_file(&temporary);
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .open(&temporary)
            .map_err(io_error(&temporary))?;
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(io_error(&temporary))?;
        fs::rename(&temporary, &path).map_err(io_error(&path))
    }

    /// The registry entry of `mountpoint`, if there is one. Refused unless depsetfs wrote it
    /// (see the module comment): `umount` would otherwise kill whatever pid it names.
    pub fn find_mount(&self, mountpoint: &Path) -> Result<Option<MountRecord>, StateError> {
        let path = self.registry_path(mountpoint);
        let text = match read_trusted(&path) {
            Ok(text) => text,
            Err(RegistryRead::Missing) => return Ok(None),
            Err(RegistryRead::Io(e)) => return Err(StateError::Io { path, source: e }),
            Err(RegistryRead::Untrusted(reason)) => {
                return Err(StateError::UntrustedRegistry { path, reason });
            }
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| StateError::BadRegistry {
                path,
                reason: e.to_string(),
            })
    }

    /// Every registered mount (records that cannot be read or are not trusted are skipped).
    pub fn mounts(&self) -> Vec<MountRecord> {
        let Ok(entries) = fs::read_dir(self.root.join("mounts")) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter(|entry| entry.path().extension().is_some_and(|ext| ext == "json"))
            .filter_map(|entry| read_trusted(&entry.path()).ok())
            .filter_map(|text| serde_json::from_str(&text).ok())
            .collect()
    }

    pub fn forget_mount(&self, mountpoint: &Path) {
        let _ = fs::remove_file(self.registry_path(mountpoint));
        let _ = fs::remove_file(self.control_socket(mountpoint));
    }

    /// Where the daemon of `mountpoint` listens for seccomp listeners
    /// (`mounts/ctl-<hash>.sock`, see [`crate::mirror::network`]).
    pub fn control_socket(&self, mountpoint: &Path) -> PathBuf {
        self.root
            .join("mounts")
            .join(crate::mirror::network::control_socket_name(mountpoint))
    }
}

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() }
}

/// Why a registry entry could not be read.
enum RegistryRead {
    Missing,
    Io(io::Error),
    /// Not written by depsetfs: the reason.
    Untrusted(String),
}

/// The text of a registry entry, if it is a regular file (not a symlink) owned by the caller
/// or root that neither group nor others can write. Checked on the open descriptor, so the file
/// read is the file checked.
fn read_trusted(path: &Path) -> Result<String, RegistryRead> {
    let mut file = match fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(RegistryRead::Missing),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(RegistryRead::Untrusted("it is a symlink".to_string()));
        }
        Err(e) => return Err(RegistryRead::Io(e)),
    };
    let metadata = file.metadata().map_err(RegistryRead::Io)?;
    if !metadata.is_file() {
        return Err(RegistryRead::Untrusted("not a regular file".to_string()));
    }
    if metadata.uid() != euid() && metadata.uid() != 0 {
        return Err(RegistryRead::Untrusted(format!(
            "owned by uid {}, not by root or uid {}",
            metadata.uid(),
            euid()
        )));
    }
    let mode = metadata.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(RegistryRead::Untrusted(format!(
            "mode {mode:04o}: group or others can write it"
        )));
    }
    let mut text = String::new();
    file.read_to_string(&mut text).map_err(RegistryRead::Io)?;
    Ok(text)
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn registered_state(name: &str) -> (StateDir, MountRecord, PathBuf) {
        let root =
            std::env::temp_dir().join(format!("depsetfs-state-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let state = StateDir { root };
        let record = MountRecord {
            mountpoint: PathBuf::from("/srv/mirror"),
            source: PathBuf::from("/"),
            pid: 42,
            log: PathBuf::from("/tmp/x.dlog"),
            control: None,
        };
        state.register_mount(&record).expect("register");
        let entry = state.registry_path(&record.mountpoint);
        (state, record, entry)
    }

    fn mode(path: &Path) -> u32 {
        fs::symlink_metadata(path).expect("stat").mode() & 0o7777
    }

    #[test]
    fn registry_entries_and_their_directory_are_not_writable_by_others() {
        let (state, record, entry) = registered_state("modes");
        assert_eq!(mode(&entry), 0o644 & !current_umask());
        assert_eq!(mode(&state.root.join("mounts")), 0o755 & !current_umask());
        // A mounts/ left world-writable by an older depsetfs is repaired at the next mount.
        fs::set_permissions(state.root.join("mounts"), fs::Permissions::from_mode(0o777))
            .expect("chmod");
        state.register_mount(&record).expect("register again");
        assert_eq!(mode(&state.root.join("mounts")), 0o755);
        let _ = fs::remove_dir_all(&state.root);
    }

    fn current_umask() -> u32 {
        let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
        status
            .lines()
            .find_map(|line| line.strip_prefix("Umask:"))
            .and_then(|value| u32::from_str_radix(value.trim(), 8).ok())
            .unwrap_or(0o022)
    }

    fn assert_untrusted(state: &StateDir, record: &MountRecord, what: &str) {
        match state.find_mount(&record.mountpoint) {
            Err(StateError::UntrustedRegistry { reason, .. }) => {
                assert!(reason.contains(what), "{reason}")
            }
            other => panic!("a tampered entry was not refused: {other:?}"),
        }
        assert_eq!(
            state.mounts(),
            Vec::new(),
            "mounts() listed a tampered entry"
        );
    }

    #[test]
    fn a_registry_entry_others_can_write_is_refused() {
        let (state, record, entry) = registered_state("writable");
        assert_eq!(state.mounts(), vec![record.clone()]);
        fs::set_permissions(&entry, fs::Permissions::from_mode(0o666)).expect("chmod");
        assert_untrusted(&state, &record, "mode 0666");
        let _ = fs::remove_dir_all(&state.root);
    }

    #[test]
    fn a_registry_entry_owned_by_another_user_is_refused() {
        if euid() != 0 {
            return; // only root can give a file away
        }
        let (state, record, entry) = registered_state("owner");
        std::os::unix::fs::chown(&entry, Some(65534), Some(65534)).expect("chown");
        assert_untrusted(&state, &record, "owned by uid 65534");
        let _ = fs::remove_dir_all(&state.root);
    }

    #[test]
    fn a_registry_entry_that_is_a_symlink_is_refused() {
        let (state, record, entry) = registered_state("symlink");
        let elsewhere = state.root.join("elsewhere.json");
        fs::rename(&entry, &elsewhere).expect("move");
        symlink(&elsewhere, &entry).expect("symlink");
        assert_untrusted(&state, &record, "symlink");
        let _ = fs::remove_dir_all(&state.root);
    }

    #[test]
    fn registry_records_of_older_daemons_have_no_control_socket() {
        let old = r#"{"mountpoint":"/srv/m","source":"/","pid":7,"log":"/tmp/l.dlog"}"#;
        let record: MountRecord = serde_json::from_str(old).expect("old record reads");
        assert_eq!(record.control, None);
    }
}
