//! `depsetfs doctor`: what this machine lets depsetfs do, checked the way depsetfs itself
//! would use each facility (open `/dev/fuse`, enter a private mount namespace in a child,
//! subscribe to the proc connector, install the seccomp user-notification filter in a child)
//! rather than guessed from version numbers where a real try is cheap and harmless. Each
//! [`Check`] says in one line what it found and what that means for the record: what will be
//! recorded, what will not, and which option will not work. Only the checks without which
//! nothing can be mounted or recorded are essential; the others degrade the record, and the
//! line says how.

use std::ffi::CStr;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use crate::mirror::process;
use crate::mirror::seccomp;

/// What a check found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Present and usable.
    Ok,
    /// Absent or refused.
    Missing,
    /// Present but switched off (an administrator can switch it on).
    Off,
    /// Could not be told without mounting (the line says what is known).
    Unknown,
}

impl Status {
    fn word(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Missing => "missing",
            Status::Off => "off",
            Status::Unknown => "unknown",
        }
    }
}

/// One check: its name, what was found, and what that means for depsetfs here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    pub name: &'static str,
    /// Without it depsetfs cannot mount or record at all.
    pub essential: bool,
    pub status: Status,
    /// What was found (an errno, a kernel parameter, a version).
    pub found: String,
    /// What follows for the record.
    pub meaning: String,
}

impl Check {
    fn new(
        name: &'static str,
        essential: bool,
        status: Status,
        found: impl Into<String>,
        meaning: impl Into<String>,
    ) -> Check {
        Check {
            name,
            essential,
            status,
            found: found.into(),
            meaning: meaning.into(),
        }
    }
}

/// Every check, in the order they are printed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    pub checks: Vec<Check>,
}

impl Report {
    /// True when every essential check is `ok`: depsetfs can mount and record here.
    pub fn essentials_ok(&self) -> bool {
        self.checks
            .iter()
            .all(|check| !check.essential || check.status == Status::Ok)
    }

    /// One line per check (`ok`/`missing`/`off`/`unknown`, the name, what was found, what it
    /// means), then one line of verdict.
    pub fn render(&self, out: &mut dyn Write) -> io::Result<()> {
        let width = self.checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
        for check in &self.checks {
            let essential = if check.essential { " (essential)" } else { "" };
            writeln!(
                out,
                "{:<8} {:<width$}  {}{essential}: {}",
                check.status.word(),
                check.name,
                check.found,
                check.meaning,
            )?;
        }
        let degraded = self
            .checks
            .iter()
            .any(|c| matches!(c.status, Status::Missing | Status::Unknown));
        if self.essentials_ok() && degraded {
            writeln!(
                out,
                "depsetfs can mount and record here; the lines not marked ok say what the record lacks"
            )
        } else if self.essentials_ok() {
            writeln!(out, "depsetfs can mount and record here, nothing missing")
        } else {
            let missing: Vec<&str> = self
                .checks
                .iter()
                .filter(|c| c.essential && c.status != Status::Ok)
                .map(|c| c.name)
                .collect();
            writeln!(
                out,
                "depsetfs cannot mount or record here: {} missing",
                missing.join(", ")
            )
        }
    }
}

/// Runs every check. Children are forked for the namespace and seccomp tries, so this
/// process is left as it was.
pub fn run_checks() -> Report {
    let kernel = KernelVersion::running();
    let config = kernel_config();
    Report {
        checks: vec![
            check_dev_fuse(),
            check_root(),
            check_mount_namespace(),
            check_namespace("user namespace", "user", PROC_USER_INIT_INO),
            check_namespace("pid namespace", "pid", PROC_PID_INIT_INO),
            check_connector(),
            check_seccomp(),
            passthrough_check(kernel.as_ref(), config.as_deref()),
            check_entry_cache(kernel.as_ref()),
            check_io_uring(),
        ],
    }
}

fn check_dev_fuse() -> Check {
    const NAME: &str = "/dev/fuse";
    let essential = true;
    let device = match fs::metadata("/dev/fuse") {
        Ok(meta) if meta.file_type().is_char_device() => meta,
        Ok(_) => {
            return Check::new(
                NAME,
                essential,
                Status::Missing,
                "not a character device",
                "nothing can be mounted (modprobe fuse)",
            );
        }
        Err(e) => {
            return Check::new(
                NAME,
                essential,
                Status::Missing,
                e.to_string(),
                "nothing can be mounted (modprobe fuse)",
            );
        }
    };
    match fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
    {
        Ok(_) => {
            use std::os::unix::fs::MetadataExt;
            let rdev = device.rdev();
            Check::new(
                NAME,
                essential,
                Status::Ok,
                format!(
                    "character device {}:{}, opens",
                    libc::major(rdev),
                    libc::minor(rdev)
                ),
                "mirrors can be mounted",
            )
        }
        Err(e) => Check::new(
            NAME,
            essential,
            Status::Missing,
            format!("cannot open: {e}"),
            "nothing can be mounted",
        ),
    }
}

/// `CAP_SYS_ADMIN` (mount, FUSE passthrough) and `CAP_NET_ADMIN` (proc connector) from the
/// effective set in /proc/self/status.
fn check_root() -> Check {
    const NAME: &str = "root";
    const CAP_SYS_ADMIN: u32 = 21;
    // SAFETY: geteuid cannot fail.
    let euid = unsafe { libc::geteuid() };
    let effective = fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        });
    match effective {
        Some(caps) if euid == 0 && caps & (1 << CAP_SYS_ADMIN) != 0 => Check::new(
            NAME,
            true,
            Status::Ok,
            "uid 0 with CAP_SYS_ADMIN",
            "mount, chroot and bind mounts are allowed",
        ),
        Some(_) => Check::new(
            NAME,
            true,
            Status::Missing,
            format!("euid {euid} without CAP_SYS_ADMIN"),
            "depsetfs mount and run refuse to start (run as root)",
        ),
        None => Check::new(
            NAME,
            true,
            Status::Missing,
            "cannot read CapEff in /proc/self/status",
            "depsetfs mount and run need root",
        ),
    }
}

/// Runs `try_in_child` in a forked child and returns its errno (0: it worked). The child only
/// makes system calls and exits, which is safe in a child of a threaded process.
fn in_child(try_in_child: fn() -> i32) -> io::Result<i32> {
    // SAFETY: the child calls only async-signal-safe functions (raw system calls, _exit).
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        let errno = try_in_child();
        // SAFETY: ends the child without running the parent's atexit handlers or destructors.
        unsafe { libc::_exit(errno.clamp(0, 255)) };
    }
    let mut status = 0;
    // SAFETY: waits for the child just forked; `status` is a live int.
    while unsafe { libc::waitpid(pid, &mut status, 0) } < 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    if libc::WIFEXITED(status) {
        Ok(libc::WEXITSTATUS(status))
    } else {
        Err(io::Error::other("the probe process was killed"))
    }
}

fn errno() -> i32 {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

fn describe_errno(errno: i32) -> String {
    io::Error::from_raw_os_error(errno).to_string()
}

fn check_mount_namespace() -> Check {
    const NAME: &str = "mount namespace";
    let tried = in_child(|| {
        // SAFETY: a plain flag, in a single-threaded child.
        if unsafe { libc::unshare(libc::CLONE_NEWNS) } == 0 {
            0
        } else {
            errno()
        }
    });
    match tried {
        Ok(0) => Check::new(
            NAME,
            true,
            Status::Ok,
            "a private one can be made",
            "depsetfs run mounts its mirror out of everyone else's sight",
        ),
        Ok(errno) => Check::new(
            NAME,
            true,
            Status::Missing,
            format!("unshare(CLONE_NEWNS): {}", describe_errno(errno)),
            "depsetfs run cannot start",
        ),
        Err(e) => Check::new(
            NAME,
            true,
            Status::Missing,
            format!("cannot try: {e}"),
            "depsetfs run may not start",
        ),
    }
}

/// The inode numbers of the initial namespaces (include/linux/proc_ns.h).
const PROC_USER_INIT_INO: u64 = 0xEFFF_FFFD;
const PROC_PID_INIT_INO: u64 = 0xEFFF_FFFC;

/// The proc connector only serves listeners in the initial user and pid namespaces.
fn check_namespace(name: &'static str, kind: &str, initial: u64) -> Check {
    use std::os::unix::fs::MetadataExt;
    match fs::metadata(format!("/proc/self/ns/{kind}")) {
        Ok(meta) if meta.ino() == initial => Check::new(
            name,
            false,
            Status::Ok,
            "the host's (initial) one",
            "process events can reach depsetfs",
        ),
        Ok(meta) => Check::new(
            name,
            false,
            Status::Missing,
            format!(
                "not the host's (a container's or unshare's, inode {})",
                meta.ino()
            ),
            "the kernel sends process events only to the initial namespaces: forks, execs and exits will not be recorded",
        ),
        Err(e) => Check::new(
            name,
            false,
            Status::Unknown,
            format!("/proc/self/ns/{kind}: {e}"),
            "cannot tell whether process events will be recorded",
        ),
    }
}

fn check_connector() -> Check {
    const NAME: &str = "proc connector";
    match process::probe_connector() {
        Ok(()) => Check::new(
            NAME,
            false,
            Status::Ok,
            "subscription acknowledged",
            "forks, execs and exits will be recorded",
        ),
        Err(e) => Check::new(
            NAME,
            false,
            Status::Missing,
            e.to_string(),
            "forks, execs and exits will not be recorded (each process is one image, named after what it ran when first seen)",
        ),
    }
}

fn check_seccomp() -> Check {
    const NAME: &str = "seccomp user notification";
    let tried = in_child(
        || match seccomp::install_filter(&seccomp::filter_program()) {
            Ok(_) => 0,
            Err(errno) => errno,
        },
    );
    let refused = "connect, bind, listen and accept will not be recorded: network edges are missing from the sets of depsetfs run and depsetfs chroot";
    match tried {
        Ok(0) => Check::new(
            NAME,
            false,
            Status::Ok,
            "the filter installs with a listener",
            "depsetfs run and depsetfs chroot record connect, bind, listen and accept (plain chroot does not)",
        ),
        Ok(errno) => Check::new(
            NAME,
            false,
            Status::Missing,
            format!(
                "seccomp(SECCOMP_FILTER_FLAG_NEW_LISTENER): {}",
                describe_errno(errno)
            ),
            refused,
        ),
        Err(e) => Check::new(
            NAME,
            false,
            Status::Unknown,
            format!("cannot try: {e}"),
            refused,
        ),
    }
}

/// `major.minor` of the running kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct KernelVersion(pub u32, pub u32);

impl KernelVersion {
    fn running() -> Option<KernelVersion> {
        // SAFETY: utsname is plain bytes; uname fills it.
        let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
        // SAFETY: `uts` is a live utsname.
        if unsafe { libc::uname(&mut uts) } != 0 {
            return None;
        }
        // SAFETY: the kernel NUL-terminates release.
        let release = unsafe { CStr::from_ptr(uts.release.as_ptr()) };
        KernelVersion::parse(&release.to_string_lossy())
    }

    /// `6.18.44-foo` -> 6.18.
    pub fn parse(release: &str) -> Option<KernelVersion> {
        let mut parts = release.split(|c: char| !c.is_ascii_digit());
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        Some(KernelVersion(major, minor))
    }
}

impl std::fmt::Display for KernelVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Linux {}.{}", self.0, self.1)
    }
}

/// The running kernel's build configuration, from /proc/config.gz or /boot/config-RELEASE.
fn kernel_config() -> Option<String> {
    if let Ok(file) = fs::File::open("/proc/config.gz") {
        let mut text = String::new();
        if flate2::read::GzDecoder::new(file)
            .read_to_string(&mut text)
            .is_ok()
        {
            return Some(text);
        }
    }
    // SAFETY: as in KernelVersion::running.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `uts` is a live utsname.
    if unsafe { libc::uname(&mut uts) } != 0 {
        return None;
    }
    // SAFETY: the kernel NUL-terminates release.
    let release = unsafe { CStr::from_ptr(uts.release.as_ptr()) };
    fs::read_to_string(Path::new("/boot").join(format!("config-{}", release.to_string_lossy())))
        .ok()
}

/// Whether `CONFIG_NAME=y` (or `=m`) is in a kernel configuration.
fn config_enabled(config: &str, name: &str) -> bool {
    config.lines().any(|line| {
        line.strip_prefix(name)
            .and_then(|rest| rest.strip_prefix('='))
            .is_some_and(|value| value == "y" || value == "m")
    })
}

/// FUSE passthrough needs Linux >= 6.9 built with CONFIG_FUSE_PASSTHROUGH; whether the kernel
/// grants it is only known at mount time (the FUSE_INIT answer), so without a readable kernel
/// configuration the answer is "unknown".
pub fn passthrough_check(kernel: Option<&KernelVersion>, config: Option<&str>) -> Check {
    const NAME: &str = "FUSE passthrough";
    let without =
        "reads go through the daemon as with --no-passthrough (slower bulk reads; nothing is lost)";
    let with = "passthrough (the default) works: read-only opens read the file directly (opens recorded, read bytes not counted)";
    match kernel {
        Some(version) if *version < KernelVersion(6, 9) => Check::new(
            NAME,
            false,
            Status::Missing,
            format!("{version} (needs 6.9)"),
            without,
        ),
        Some(version) => match config {
            Some(config) if config_enabled(config, "CONFIG_FUSE_PASSTHROUGH") => Check::new(
                NAME,
                false,
                Status::Ok,
                format!("{version}, CONFIG_FUSE_PASSTHROUGH=y"),
                with,
            ),
            Some(_) => Check::new(
                NAME,
                false,
                Status::Missing,
                format!("{version} built without CONFIG_FUSE_PASSTHROUGH"),
                without,
            ),
            None => Check::new(
                NAME,
                false,
                Status::Unknown,
                format!("{version}, kernel configuration not readable"),
                "passthrough (the default) works if the kernel was built with CONFIG_FUSE_PASSTHROUGH, else reads go through the daemon",
            ),
        },
        None => Check::new(
            NAME,
            false,
            Status::Unknown,
            "kernel version unreadable",
            without,
        ),
    }
}

fn check_entry_cache(kernel: Option<&KernelVersion>) -> Check {
    const NAME: &str = "kernel entry cache";
    match kernel {
        Some(version) if *version >= KernelVersion(6, 16) => Check::new(
            NAME,
            false,
            Status::Ok,
            format!("{version}"),
            "--entry-cache can be used",
        ),
        Some(version) => Check::new(
            NAME,
            false,
            Status::Missing,
            format!("{version} (needs 6.16)"),
            "--entry-cache is ignored (entries are not cached; every lookup reaches the daemon, as by default)",
        ),
        None => Check::new(
            NAME,
            false,
            Status::Unknown,
            "kernel version unreadable",
            "--entry-cache may be refused",
        ),
    }
}

/// FUSE over io_uring (Linux >= 6.14, CONFIG_FUSE_IO_URING, switched on by the fuse module
/// parameter): the default transport where it exists (`--transport auto`).
pub fn io_uring_check(enable_uring: Option<&str>) -> Check {
    const NAME: &str = "FUSE over io_uring";
    let fallback =
        "requests go through /dev/fuse threads: every record is the same, tracing is slower";
    match enable_uring.map(str::trim) {
        Some("Y" | "y" | "1") => Check::new(
            NAME,
            false,
            Status::Ok,
            "enable_uring=Y",
            "requests come through per-CPU io_uring queues (the default transport)",
        ),
        Some(value) => Check::new(
            NAME,
            false,
            Status::Off,
            format!("supported, enable_uring={value}"),
            "mount and run turn it on when run as root, and say so; otherwise requests go through /dev/fuse threads",
        ),
        None => Check::new(
            NAME,
            false,
            Status::Missing,
            "no /sys/module/fuse/parameters/enable_uring (Linux < 6.14 or CONFIG_FUSE_IO_URING off)",
            fallback,
        ),
    }
}

fn check_io_uring() -> Check {
    io_uring_check(
        fs::read_to_string("/sys/module/fuse/parameters/enable_uring")
            .ok()
            .as_deref(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(report: &Report) -> String {
        let mut out = Vec::new();
        report.render(&mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn every_check_is_one_line_and_the_verdict_follows_the_essentials() {
        let report = Report {
            checks: vec![
                Check::new(
                    "/dev/fuse",
                    true,
                    Status::Ok,
                    "character device 10:229",
                    "mirrors can be mounted",
                ),
                Check::new(
                    "proc connector",
                    false,
                    Status::Missing,
                    "bind: EPERM",
                    "forks will not be recorded",
                ),
                io_uring_check(Some("N\n")),
            ],
        };
        let text = render(&report);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert_eq!(
            lines[0],
            "ok       /dev/fuse           character device 10:229 (essential): mirrors can be mounted"
        );
        assert!(
            lines[1].starts_with("missing  proc connector      bind: EPERM: forks will not"),
            "{text}"
        );
        assert!(
            lines[2].starts_with("off      FUSE over io_uring  supported, enable_uring=N: "),
            "{text}"
        );
        assert!(
            lines[3].starts_with("depsetfs can mount and record here"),
            "{text}"
        );
        assert!(report.essentials_ok());

        let broken = Report {
            checks: vec![Check::new(
                "root",
                true,
                Status::Missing,
                "euid 1000",
                "refused",
            )],
        };
        assert!(!broken.essentials_ok());
        assert!(
            render(&broken).ends_with("depsetfs cannot mount or record here: root missing\n"),
            "{}",
            render(&broken)
        );
    }

    #[test]
    fn passthrough_needs_the_version_and_the_config() {
        let old = passthrough_check(
            Some(&KernelVersion(6, 8)),
            Some("CONFIG_FUSE_PASSTHROUGH=y"),
        );
        assert_eq!(old.status, Status::Missing);
        let built = passthrough_check(
            Some(&KernelVersion(6, 18)),
            Some("CONFIG_FUSE_FS=y\nCONFIG_FUSE_PASSTHROUGH=y\n"),
        );
        assert_eq!(built.status, Status::Ok);
        let without = passthrough_check(
            Some(&KernelVersion(6, 18)),
            Some("# CONFIG_FUSE_PASSTHROUGH is not set\n"),
        );
        assert_eq!(without.status, Status::Missing);
        let unknown = passthrough_check(Some(&KernelVersion(6, 18)), None);
        assert_eq!(unknown.status, Status::Unknown);
    }

    #[test]
    fn kernel_releases_parse() {
        assert_eq!(
            KernelVersion::parse("6.18.44-fc-v782"),
            Some(KernelVersion(6, 18))
        );
        assert_eq!(
            KernelVersion::parse("5.10.0-28-amd64"),
            Some(KernelVersion(5, 10))
        );
        assert_eq!(KernelVersion::parse("6.9"), Some(KernelVersion(6, 9)));
        assert_eq!(KernelVersion::parse("garbage"), None);
        assert!(KernelVersion(6, 10) > KernelVersion(6, 9));
    }

    #[test]
    fn io_uring_states() {
        assert_eq!(io_uring_check(Some("Y\n")).status, Status::Ok);
        assert_eq!(io_uring_check(Some("N\n")).status, Status::Off);
        assert_eq!(io_uring_check(None).status, Status::Missing);
    }
}
