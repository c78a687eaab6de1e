//! The daemon's body (`depsetfs __serve`) and what it is started with. The daemon opens
//! /dev/fuse and mounts the FUSE filesystem itself (mount(2), with `dev` and `suid` so device
//! nodes and setuid programs work), then moves into a private mount namespace and detaches the
//! mirror there: it serves the source tree as it is underneath, so the mountpoint inside the
//! mirror shows as the plain directory it is, and looking at it from inside the chroot cannot
//! recurse into the daemon. Only then does it open the source root and start threads (the
//! entry cache, the recorder, the process tracker, the control socket, the signal thread),
//! write the log header, register in the state directory and answer `ready` on stdout. The
//! `__serve` arguments are written ([`ServeOptions::to_args`], by `crate::launch::mount`) and
//! parsed ([`ServeOptions::from_args`]) here, so one module owns both sides.

use std::ffi::OsString;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use clap::Parser;
use fuser::{Config, Session, SessionACL};

use crate::log::{LogError, LogWriter};
use crate::mirror::entry_cache::EntryCache;
use crate::mirror::fs::{CachePolicy, MirrorFs};
use crate::mirror::network;
use crate::mirror::process::ProcessTracker;
use crate::mirror::recorder::Recorder;
use crate::mirror::transport::dev::{DevFront, URING_MAX_WRITE};
use crate::mirror::transport::uring::{self, UringTransport};
use crate::mirror::transport::{self, TransportChoice};
use crate::record::CONNECTOR_UNAVAILABLE_SOURCE;
use crate::record::{
    HostIdentity, LOG_FORMAT_VERSION, LOG_MAGIC, LogHeader, LostEvents, Record, TracedCommand,
    TracedImage, now_ns,
};
use crate::state::{MountRecord, StateDir, StateError};
use crate::sys;

/// The filesystem type shown in /proc/self/mountinfo.
pub const FS_TYPE: &str = "fuse.depsetfs";

/// Why the daemon could not serve (or not start serving).
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("/dev/fuse is not available: {0}")]
    NoFuseDevice(io::Error),
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the daemon failed: {0}")]
    Daemon(String),
    #[error("__serve arguments: {0}")]
    Arguments(String),
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Transport(#[from] transport::TransportError),
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> ServeError + 'a {
    move |source| ServeError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

/// The default `--attr-timeout-ms`: the kernel reuses a lookup's attributes for the permission
/// checks and stats that follow it; every path lookup of every process still reaches the daemon.
const DEFAULT_ATTR_TIMEOUT_MS: u64 = 1000;

/// How the daemon trades kernel caching and threads for speed (the `mount`/`run` options;
/// see docs/ARCHITECTURE.md, caching and fidelity).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpeedOptions {
    /// How requests reach the daemon (see [`crate::mirror::transport`]).
    pub transport: TransportChoice,
    pub threads: usize,
    /// Kernel FUSE passthrough for read-only opens (see [`crate::mirror::io_mode`]).
    pub passthrough: bool,
    /// Entries cached per process (see [`crate::mirror::entry_cache`]).
    pub entry_cache: bool,
    /// How long the kernel may reuse attributes, in milliseconds (0: fidelity "full").
    pub attr_timeout_ms: u64,
}

impl Default for SpeedOptions {
    fn default() -> SpeedOptions {
        SpeedOptions {
            transport: TransportChoice::from_env(),
            threads: 4,
            passthrough: true,
            entry_cache: false,
            attr_timeout_ms: DEFAULT_ATTR_TIMEOUT_MS,
        }
    }
}

impl SpeedOptions {
    /// The `__serve` arguments that carry these options.
    fn to_args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec![
            "--transport".into(),
            self.transport.name().into(),
            "--threads".into(),
            self.threads.to_string().into(),
        ];
        if self.passthrough {
            args.push("--passthrough".into());
        }
        if self.entry_cache {
            args.push("--entry-cache".into());
        }
        args.push("--attr-timeout-ms".into());
        args.push(self.attr_timeout_ms.to_string().into());
        args
    }
}

/// What the daemon is asked to serve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServeOptions {
    pub source: PathBuf,
    pub mountpoint: PathBuf,
    pub log: PathBuf,
    pub speed: SpeedOptions,
    pub command: Option<TracedCommand>,
    /// The command will be started with the network filter (`run`): the header says the
    /// network was recorded.
    pub network: bool,
    /// The run's name in the log header (`--label`); None: the log's file stem.
    pub label: Option<String>,
    /// `run --image`: the image whose unpacked root is `source`, for the log header.
    pub image: Option<TracedImage>,
    /// The host's name and addresses for the header (`mount`/`run` `--host`); None: the
    /// hostname, no addresses.
    pub host: Option<HostIdentity>,
}

impl ServeOptions {
    /// The arguments of `depsetfs __serve` that carry these options (read back by
    /// [`ServeOptions::from_args`]).
    pub fn to_args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec![
            "__serve".into(),
            "--source".into(),
            self.source.clone().into(),
            "--log".into(),
            self.log.clone().into(),
        ];
        args.extend(self.speed.to_args());
        if self.network {
            args.push("--network".into());
        }
        if let Some(command) = &self.command {
            args.push("--command-json".into());
            args.push(serde_json::to_string(command).unwrap_or_default().into());
        }
        if let Some(label) = &self.label {
            args.push("--label".into());
            args.push(label.into());
        }
        if let Some(image) = &self.image {
            args.push("--image-json".into());
            args.push(serde_json::to_string(image).unwrap_or_default().into());
        }
        if let Some(host) = &self.host {
            args.push("--host-json".into());
            args.push(serde_json::to_string(host).unwrap_or_default().into());
        }
        args.push(self.mountpoint.clone().into());
        args
    }

    /// The options `to_args` wrote: `args` starts with `__serve`.
    pub fn from_args<I, T>(args: I) -> Result<ServeOptions, ServeError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let args = ServeArgs::try_parse_from(args).map_err(|e| {
            let text = e.to_string();
            let first = text.lines().next().unwrap_or_default();
            ServeError::Arguments(first.trim_start_matches("error: ").to_owned())
        })?;
        let command = match args.command_json {
            Some(json) => Some(
                serde_json::from_str::<TracedCommand>(&json)
                    .map_err(|e| ServeError::Arguments(format!("--command-json: {e}")))?,
            ),
            None => None,
        };
        let image = match args.image_json {
            Some(json) => Some(
                serde_json::from_str::<TracedImage>(&json)
                    .map_err(|e| ServeError::Arguments(format!("--image-json: {e}")))?,
            ),
            None => None,
        };
        let host = match args.host_json {
            Some(json) => Some(
                serde_json::from_str::<HostIdentity>(&json)
                    .map_err(|e| ServeError::Arguments(format!("--host-json: {e}")))?,
            ),
            None => None,
        };
        Ok(ServeOptions {
            source: args.source,
            mountpoint: args.mountpoint,
            log: args.log,
            speed: SpeedOptions {
                transport: args.transport,
                threads: args.threads,
                passthrough: args.passthrough,
                entry_cache: args.entry_cache,
                attr_timeout_ms: args.attr_timeout_ms,
            },
            command,
            network: args.network,
            label: args.label,
            image,
            host,
        })
    }
}

/// The arguments of `depsetfs __serve`, as [`ServeOptions::to_args`] writes them (`mount` and
/// `run` have applied `--cpus` already).
#[derive(Parser)]
#[command(name = "__serve")]
struct ServeArgs {
    #[arg(long)]
    source: PathBuf,
    #[arg(long)]
    log: PathBuf,
    #[arg(long, value_enum, default_value_t = TransportChoice::Auto)]
    transport: TransportChoice,
    #[arg(long, default_value_t = SpeedOptions::default().threads)]
    threads: usize,
    #[arg(long)]
    passthrough: bool,
    #[arg(long)]
    entry_cache: bool,
    #[arg(long, default_value_t = SpeedOptions::default().attr_timeout_ms)]
    attr_timeout_ms: u64,
    #[arg(long)]
    command_json: Option<String>,
    #[arg(long)]
    image_json: Option<String>,
    #[arg(long)]
    network: bool,
    #[arg(long)]
    label: Option<String>,
    #[arg(long)]
    host_json: Option<String>,
    mountpoint: PathBuf,
}

// ---------------------------------------------------------------------------------------------
// The daemon

/// Body of `depsetfs __serve`: mount, isolate, serve until unmounted, flush the log. Writes the
/// `ready` / `error:` line on stdout for the parent.
pub fn serve(options: &ServeOptions, state: &StateDir) -> Result<(), ServeError> {
    let session = match prepare_session(options, state) {
        Ok(session) => session,
        Err(e) => {
            announce(&format!("error: {e}"));
            return Err(e);
        }
    };
    let ServingSession {
        session,
        ring,
        recorder,
        tracker,
        notices,
        warnings,
    } = session;
    for notice in &notices {
        eprintln!("depsetfs daemon: {notice}");
        announce(&format!("notice: {notice}"));
    }
    for warning in &warnings {
        eprintln!("depsetfs daemon: warning: {warning}");
        announce(&format!("warning: {warning}"));
    }
    announce("ready");
    silence_stdout();
    let result = session.run();
    if let Some(ring) = ring {
        ring.join();
    }
    tracker.stop();
    let finished = recorder.finish();
    state.forget_mount(&options.mountpoint);
    result.map_err(io_err("serve", &options.mountpoint))?;
    finished?;
    Ok(())
}

struct ServingSession {
    session: Session<DevFront>,
    /// The io_uring queues' threads, when requests come that way.
    ring: Option<UringTransport>,
    recorder: Recorder,
    tracker: Arc<ProcessTracker>,
    /// What the daemon changed on the machine (`enable_uring`), passed on to `mount` and `run`.
    notices: Vec<String>,
    /// What the user should know before using the mount, passed on to `mount` and `run`.
    warnings: Vec<String>,
}

fn prepare_session(options: &ServeOptions, state: &StateDir) -> Result<ServingSession, ServeError> {
    // Before /dev/fuse is opened: the kernel reads enable_uring when it sends INIT.
    let transport::Prepared {
        want_uring,
        notices,
        mut warnings,
    } = transport::prepare(options.speed.transport)?;
    let fuse =
        sys::open_path(Path::new("/dev/fuse"), libc::O_RDWR).map_err(ServeError::NoFuseDevice)?;
    kernel_mount(&fuse, &options.mountpoint)?;
    // From here on a failure leaves a mount in the caller's namespace; the parent detaches it.
    isolate_from_mountpoint(&options.mountpoint)?;
    // SAFETY: umask has no preconditions. Callers' umasks are applied per request (sys::with_umask).
    unsafe { libc::umask(0) };
    let root = sys::open_path(&options.source, libc::O_PATH | libc::O_DIRECTORY)
        .map_err(io_err("open", &options.source))?;
    let entry_cache = options
        .speed
        .entry_cache
        .then(|| start_entry_cache(&fuse))
        .flatten();
    let header = log_header(options, entry_cache.is_some());
    let writer = LogWriter::create(&options.log, &header)?;
    state.set_last_log(&options.log)?;
    block_termination_signals();
    let recorder = Recorder::start(writer, flush_interval())
        .map_err(io_err("start the log writer for", &options.log))?;
    let tracker = ProcessTracker::new(recorder.clone(), Some(options.mountpoint.clone()));
    if let Err(e) = tracker.start_connector() {
        warnings.push(format!(
            "forks, execs and exits will not be recorded (each process stays one image, \
             named after what it ran when first seen): {e}"
        ));
        recorder.record(Record::Lost(LostEvents {
            ts_ns: now_ns(),
            source: CONNECTOR_UNAVAILABLE_SOURCE.to_string(),
            count: 1,
        }));
    }
    let cache = CachePolicy {
        passthrough: options.speed.passthrough,
        attr_ttl: Duration::from_millis(options.speed.attr_timeout_ms),
        ..CachePolicy::default()
    };
    let mut fs = MirrorFs::new(root, cache, recorder.clone(), Arc::clone(&tracker))
        .map_err(io_err("stat", &options.source))?;
    if let Some(cache) = entry_cache {
        fs.cache_entries_per_process(cache, ENTRY_CACHE_TTL);
    }
    // One more descriptor of the connection, for what fuser's session does not do: register
    // passthrough backing files, and the io_uring queues.
    let device = Arc::new(fuse.try_clone().map_err(io_err(
        "duplicate the descriptor of",
        Path::new("/dev/fuse"),
    ))?);
    fs.use_device(Arc::clone(&device));
    let mut config = Config::default();
    config.n_threads = Some(options.speed.threads.max(1));
    config.clone_fd = true;
    let fs = Arc::new(fs);
    let front = DevFront::new(Arc::clone(&fs), want_uring);
    let granted = front.uring_granted();
    let session = Session::from_fd(front, fuse, SessionACL::All, config)
        .map_err(io_err("handshake with the kernel on", &options.mountpoint))?;
    let ring = match (want_uring, granted.load(Ordering::Acquire)) {
        (false, _) => None,
        (true, true) => match start_ring(&device, &fs) {
            Ok(ring) => Some(ring),
            Err(e) if options.speed.transport == TransportChoice::Uring => return Err(e.into()),
            Err(e) => {
                warnings.push(transport::fallback_warning(&e));
                None
            }
        },
        (true, false) => {
            let refused = transport::TransportError::Ring(
                "the kernel did not agree to it at INIT".to_owned(),
            );
            if options.speed.transport == TransportChoice::Uring {
                return Err(refused.into());
            }
            warnings.push(transport::fallback_warning(&refused));
            None
        }
    };
    let control = state.control_socket(&options.mountpoint);
    let control = match network::start_control_socket(&control, recorder.clone(), tracker.clone()) {
        Ok(()) => Some(control),
        Err(e) if options.network => return Err(ServeError::Daemon(e.to_string())),
        Err(e) => {
            eprintln!("depsetfs daemon: the network will not be recorded: {e}");
            None
        }
    };
    state.register_mount(&MountRecord {
        mountpoint: options.mountpoint.clone(),
        source: options.source.clone(),
        pid: std::process::id(),
        log: options.log.clone(),
        control,
    })?;
    spawn_signal_handler(
        recorder.clone(),
        tracker.clone(),
        state.clone(),
        options.mountpoint.clone(),
    );
    Ok(ServingSession {
        session,
        ring,
        recorder,
        tracker,
        notices,
        warnings,
    })
}

/// Registers the io_uring queues after INIT agreed to them. On failure `uring::start` has
/// switched the connection back to /dev/fuse (see `uring::UringError`), so the caller may
/// fall back.
fn start_ring(
    device: &OwnedFd,
    fs: &Arc<MirrorFs>,
) -> Result<UringTransport, transport::TransportError> {
    let payload = uring::payload_size(URING_MAX_WRITE);
    let ring = uring::start(device, Arc::clone(fs), payload)
        .map_err(|e| transport::TransportError::Ring(e.to_string()))?;
    eprintln!(
        "depsetfs daemon: requests come through FUSE over io_uring ({} queues)",
        ring.queues()
    );
    Ok(ring)
}

fn kernel_mount(fuse: &OwnedFd, mountpoint: &Path) -> Result<(), ServeError> {
    let data = format!(
        "fd={},rootmode=40000,user_id=0,group_id=0,default_permissions,allow_other",
        fuse.as_raw_fd()
    );
    sys::mount("depsetfs", mountpoint, FS_TYPE, 0, Some(&data)).map_err(io_err("mount", mountpoint))
}

/// Gives the daemon its own mount namespace in which the mirror is not mounted, so the source
/// tree it serves shows the mountpoint as the directory underneath. Must run single-threaded.
fn isolate_from_mountpoint(mountpoint: &Path) -> Result<(), ServeError> {
    sys::unshare_mount_namespace().map_err(io_err("unshare the mount namespace of", mountpoint))?;
    sys::set_propagation(Path::new("/"), libc::MS_PRIVATE)
        .map_err(io_err("make mounts private under", Path::new("/")))?;
    sys::umount(mountpoint, libc::MNT_DETACH).map_err(io_err("detach", mountpoint))
}

/// How often the daemon hands its log to the kernel: what a `kill -9` of the daemon can lose
/// (docs/log-format.md, "what survives kill -9").
const FLUSH_INTERVAL: Duration = Duration::from_millis(100);

/// [`FLUSH_INTERVAL`], or `$DEPSETFS_FLUSH_MS` milliseconds (for measuring its cost).
fn flush_interval() -> Duration {
    std::env::var("DEPSETFS_FLUSH_MS")
        .ok()
        .and_then(|ms| ms.parse().ok())
        .map_or(FLUSH_INTERVAL, Duration::from_millis)
}

/// How long a cached entry lives at most with `--entry-cache` (changes made outside the mirror
/// are seen after this, or at the next change of calling process).
const ENTRY_CACHE_TTL: Duration = Duration::from_secs(1);

/// The per-process entry cache, if the kernel takes its notification (else a warning).
fn start_entry_cache(fuse: &OwnedFd) -> Option<EntryCache> {
    let started = fuse.try_clone().and_then(EntryCache::new);
    match started {
        Ok(cache) => Some(cache),
        Err(e) => {
            eprintln!(
                "depsetfs daemon: --entry-cache needs Linux >= 6.16 (FUSE_NOTIFY_INC_EPOCH): {e}; \
                 entries are not cached"
            );
            None
        }
    }
}

fn log_header(options: &ServeOptions, entry_cache: bool) -> LogHeader {
    let host = options.host.clone().unwrap_or_else(|| HostIdentity {
        name: uname_field(|u| &u.nodename),
        ..HostIdentity::default()
    });
    LogHeader {
        magic: LOG_MAGIC.to_owned(),
        version: LOG_FORMAT_VERSION,
        source: options.source.to_string_lossy().into_owned(),
        mountpoint: options.mountpoint.to_string_lossy().into_owned(),
        host: host.name,
        kernel: uname_field(|u| &u.release),
        started_ns: now_ns(),
        boot_time_ns: boot_time_ns(),
        // SAFETY: sysconf has no preconditions.
        clock_ticks: unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64,
        fidelity: match (entry_cache, options.speed.attr_timeout_ms) {
            (false, 0) => "full".to_owned(),
            (false, ms) => format!("attr-timeout-{ms}ms"),
            (true, ms) => format!("entry-cache-per-process+attr-timeout-{ms}ms"),
        },
        network_recorded: options.network,
        command: options.command.clone(),
        label: Some(options.label.clone().unwrap_or_else(|| {
            let stem = options.log.file_stem().unwrap_or(options.log.as_os_str());
            stem.to_string_lossy().into_owned()
        })),
        runs: Vec::new(),
        image: options.image.clone(),
        addresses: host.addresses,
        addresses_from: host.addresses_from,
    }
}

fn uname_field(field: impl Fn(&libc::utsname) -> &[libc::c_char; 65]) -> String {
    // SAFETY: utsname is plain data filled by the kernel.
    let mut name: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: valid out pointer.
    if unsafe { libc::uname(&mut name) } != 0 {
        return String::new();
    }
    let bytes: Vec<u8> = field(&name)
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

fn boot_time_ns() -> u64 {
    std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|line| line.strip_prefix("btime "))
                .and_then(|v| v.trim().parse::<u64>().ok())
        })
        .map_or(0, |secs| secs * 1_000_000_000)
}

fn announce(line: &str) {
    let mut stdout = io::stdout();
    let _ = writeln!(stdout, "{line}");
    let _ = stdout.flush();
}

/// After `ready`, the parent stops reading; keep later writes from failing with EPIPE.
fn silence_stdout() {
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        // SAFETY: both descriptors are valid; dup2 replaces stdout.
        unsafe { libc::dup2(null.as_raw_fd(), libc::STDOUT_FILENO) };
    }
}

const TERMINATION_SIGNALS: [libc::c_int; 3] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP];

fn termination_sigset() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data, initialised by sigemptyset.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer to a sigset_t.
    unsafe {
        libc::sigemptyset(&mut set);
        for signal in TERMINATION_SIGNALS {
            libc::sigaddset(&mut set, signal);
        }
    }
    set
}

/// Blocks SIGTERM/SIGINT/SIGHUP in this thread and every thread started after it, so that
/// only the signal thread receives them.
fn block_termination_signals() {
    let set = termination_sigset();
    // SAFETY: valid sigset pointer; a null old-set pointer is allowed.
    unsafe {
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
}

/// On SIGTERM/SIGINT/SIGHUP: flush the log and exit. The mount stays until `depsetfs umount`
/// (processes using it then get ENOTCONN instead of hanging).
fn spawn_signal_handler(
    recorder: Recorder,
    tracker: Arc<ProcessTracker>,
    state: StateDir,
    mountpoint: PathBuf,
) {
    let _ = std::thread::Builder::new()
        .name("depsetfs-signals".to_owned())
        .spawn(move || {
            let set = termination_sigset();
            let mut signal: libc::c_int = 0;
            // SAFETY: valid pointers; the signals are blocked in every thread.
            unsafe { libc::sigwait(&set, &mut signal) };
            eprintln!("depsetfs daemon: signal {signal}: flushing the log and exiting");
            tracker.stop();
            let _ = recorder.finish();
            state.forget_mount(&mountpoint);
            std::process::exit(0);
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_label_defaults_to_the_log_file_stem() {
        let mut options = ServeOptions {
            source: PathBuf::from("/"),
            mountpoint: PathBuf::from("/srv/mirror"),
            log: PathBuf::from("/var/log/smoke-test.dlog"),
            speed: SpeedOptions::default(),
            command: None,
            network: false,
            label: None,
            image: None,
            host: None,
        };
        let header = log_header(&options, false);
        assert_eq!(header.label.as_deref(), Some("smoke-test"));
        assert!(header.runs.is_empty());
        options.label = Some("nightly".to_owned());
        assert_eq!(
            log_header(&options, false).label.as_deref(),
            Some("nightly")
        );
    }

    #[test]
    fn serve_arguments_end_with_the_mountpoint() {
        let options = ServeOptions {
            source: PathBuf::from("/"),
            mountpoint: PathBuf::from("/srv/mirror"),
            log: PathBuf::from("/tmp/l.dlog"),
            speed: SpeedOptions {
                attr_timeout_ms: 0,
                ..SpeedOptions::default()
            },
            command: None,
            network: false,
            label: None,
            image: None,
            host: None,
        };
        let args = options.to_args();
        assert_eq!(
            args.first().map(|a| a.as_os_str()),
            Some("__serve".as_ref())
        );
        assert_eq!(
            args.last().map(|a| a.as_os_str()),
            Some("/srv/mirror".as_ref())
        );
    }

    #[test]
    fn serve_arguments_read_back_as_the_options_written() {
        let options = ServeOptions {
            source: PathBuf::from("/srv/source tree"),
            mountpoint: PathBuf::from("/srv/--mirror"),
            log: PathBuf::from("/var/log/a b.dlog"),
            speed: SpeedOptions {
                transport: TransportChoice::Uring,
                threads: 7,
                passthrough: false,
                entry_cache: true,
                attr_timeout_ms: 0,
            },
            command: Some(TracedCommand {
                argv: vec![
                    "/bin/sh".to_owned(),
                    "-c".to_owned(),
                    "echo \"hi\"".to_owned(),
                ],
                cwd: "/work dir".to_owned(),
                pid: 4242,
            }),
            network: true,
            label: Some("smoke test".to_owned()),
            image: Some(TracedImage {
                layout: "/srv/my image".to_owned(),
                tag: Some("v1".to_owned()),
                manifest: format!("sha256:{}", "a".repeat(64)),
                config: format!("sha256:{}", "b".repeat(64)),
            }),
            host: Some(HostIdentity {
                name: "web".to_owned(),
                addresses: vec!["10.0.0.2".to_owned(), "fd00::2".to_owned()],
                addresses_from: "the network namespace /run/netns/web".to_owned(),
            }),
        };
        assert_ne!(options.speed, SpeedOptions::default());
        let parsed = ServeOptions::from_args(options.to_args()).expect("parses");
        assert_eq!(parsed, options);
        let defaults = ServeOptions {
            command: None,
            network: false,
            label: None,
            image: None,
            host: None,
            speed: SpeedOptions::default(),
            ..options
        };
        assert_eq!(
            ServeOptions::from_args(defaults.to_args()).expect("parses"),
            defaults
        );
    }

    #[test]
    fn bad_serve_arguments_are_one_line() {
        let err = ServeOptions::from_args(["__serve", "--bogus"]).expect_err("refused");
        assert!(!err.to_string().contains('\n'), "{err}");
    }
}
