//! Reading and parsing /proc: the thread group of a thread (`status`), the parent and start
//! time of a process (`stat`), its executable (`exe`) and arguments (`cmdline`). This module
//! owns the text formats and the mirror-path rewriting of executables; it keeps no state.
//! Only `stat` and `status` are read on the FUSE request path: neither takes the target's mm
//! lock, unlike `cmdline` and `environ`.

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::record::{ProcessInfo, now_ns};

/// The fields of /proc/PID/stat that depsetfs uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct StatFields {
    pub ppid: u32,
    /// Field 22, `starttime`: clock ticks since boot.
    pub start: u64,
}

/// The fields of /proc/PID/status that depsetfs uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct StatusFields {
    pub tgid: u32,
    /// Real user id (first of the four `Uid:` values).
    pub uid: u32,
    /// Real group id (first of the four `Gid:` values).
    pub gid: u32,
}

/// Appended by the kernel to /proc/PID/exe when the binary was unlinked or replaced.
const DELETED_SUFFIX: &[u8] = b" (deleted)";

/// Parses /proc/PID/stat. The second field is the command name in parentheses, which may
/// itself contain spaces and ')', so the numeric fields are taken after the LAST ')'.
pub(super) fn parse_stat(stat: &[u8]) -> Option<StatFields> {
    let close = stat.iter().rposition(|&b| b == b')')?;
    let after_comm = std::str::from_utf8(&stat[close + 1..]).ok()?;
    let fields: Vec<&str> = after_comm.split_ascii_whitespace().collect();
    // Fields are numbered from 1 as in proc(5); field 3 (state) is the first after the name.
    let field = |number: usize| fields.get(number - 3).copied();
    Some(StatFields {
        ppid: field(4)?.parse().ok()?,
        start: field(22)?.parse().ok()?,
    })
}

/// Parses /proc/PID/status (`Name:` may hold arbitrary bytes, so this works on bytes).
pub(super) fn parse_status(status: &[u8]) -> Option<StatusFields> {
    let mut tgid = None;
    let mut uid = None;
    let mut gid = None;
    for line in status.split(|&b| b == b'\n') {
        if let Some(value) = line.strip_prefix(b"Tgid:") {
            tgid = first_number(value);
        } else if let Some(value) = line.strip_prefix(b"Uid:") {
            uid = first_number(value);
        } else if let Some(value) = line.strip_prefix(b"Gid:") {
            gid = first_number(value);
        }
    }
    Some(StatusFields {
        tgid: tgid?,
        uid: uid?,
        gid: gid?,
    })
}

fn first_number(value: &[u8]) -> Option<u32> {
    std::str::from_utf8(value)
        .ok()?
        .split_ascii_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Splits /proc/PID/cmdline into arguments. Arguments end with NUL; a process that rewrote
/// its arguments (setproctitle) may leave the last one unterminated.
pub(super) fn parse_cmdline(cmdline: &[u8]) -> Vec<String> {
    let cmdline = cmdline.strip_suffix(b"\0").unwrap_or(cmdline);
    if cmdline.is_empty() {
        return Vec::new();
    }
    cmdline
        .split(|&b| b == 0)
        .map(|arg| String::from_utf8_lossy(arg).into_owned())
        .collect()
}

/// Turns a /proc/PID/exe target into a path in the mirrored tree: drops the kernel's
/// " (deleted)" marker and, when the path lies under the mirror's mountpoint on the host,
/// the mountpoint. A path that is not under the mountpoint is kept: a daemon in another mount
/// namespace already sees chrooted executables relative to the mirror's root.
pub(super) fn mirror_exe_path(target: &[u8], mirror_prefix: Option<&Path>) -> Vec<u8> {
    let target = target.strip_suffix(DELETED_SUFFIX).unwrap_or(target);
    let Some(prefix) = mirror_prefix.map(|p| trim_trailing_slashes(p.as_os_str().as_bytes()))
    else {
        return target.to_vec();
    };
    if prefix.is_empty() {
        // The mirror is mounted on `/` itself: host paths are mirror paths.
        return target.to_vec();
    }
    match target.strip_prefix(prefix) {
        Some([]) => b"/".to_vec(),
        Some(rest) if rest.starts_with(b"/") => rest.to_vec(),
        _ => target.to_vec(),
    }
}

fn trim_trailing_slashes(path: &[u8]) -> &[u8] {
    let end = path.iter().rposition(|&b| b != b'/').map_or(0, |i| i + 1);
    &path[..end]
}

fn proc_path(pid: u32, file: &str) -> String {
    format!("/proc/{pid}/{file}")
}

fn invalid(pid: u32, file: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("unexpected format of {}", proc_path(pid, file)),
    )
}

/// /proc/PID/stat. Also works for a thread id (the thread's own fields).
pub(super) fn read_stat(pid: u32) -> io::Result<StatFields> {
    let stat = fs::read(proc_path(pid, "stat"))?;
    parse_stat(&stat).ok_or_else(|| invalid(pid, "stat"))
}

/// /proc/PID/status. Also works for a thread id, which /proc resolves though it does not
/// list it.
pub(super) fn read_status(pid: u32) -> io::Result<StatusFields> {
    let status = fs::read(proc_path(pid, "status"))?;
    parse_status(&status).ok_or_else(|| invalid(pid, "status"))
}

/// The executable of a process as a mirror path. Fails for kernel threads and zombies.
fn read_exe(pid: u32, mirror_prefix: Option<&Path>) -> io::Result<Vec<u8>> {
    let target = fs::read_link(proc_path(pid, "exe"))?;
    Ok(mirror_exe_path(
        OsStr::as_bytes(target.as_os_str()),
        mirror_prefix,
    ))
}

/// The arguments of a process. Takes the target's mm lock: never call this on the FUSE
/// request path (see the module header).
fn read_argv(pid: u32) -> io::Result<Vec<String>> {
    Ok(parse_cmdline(&fs::read(proc_path(pid, "cmdline"))?))
}

/// Reads /proc details of the process `pid` (a thread group id): ppid and start time from
/// `stat`, real uid/gid from `status`, the executable (rewritten into the mirror, see
/// [`mirror_exe_path`]) and the arguments (lossy UTF-8).
///
/// Fails only when `stat` or `status` cannot be read, i.e. when the process is gone. The
/// executable and arguments are left empty when they cannot be read (kernel threads, zombies,
/// a process exiting between the reads). Reads `cmdline`, which takes the target's mm lock:
/// do not call this while serving a request of that very process.
pub fn read_process_info(pid: u32, mirror_prefix: Option<&Path>) -> io::Result<ProcessInfo> {
    let stat = read_stat(pid)?;
    let status = read_status(pid)?;
    Ok(ProcessInfo {
        pid,
        start: stat.start,
        ppid: stat.ppid,
        exe: read_exe(pid, mirror_prefix).unwrap_or_default(),
        argv: read_argv(pid).unwrap_or_default(),
        uid: status.uid,
        gid: status.gid,
        seen_ns: now_ns(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stat line as the kernel prints it, with `comm` substituted.
    fn stat_line(comm: &str) -> Vec<u8> {
        format!(
            "4242 ({comm}) S 17 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 \
             12345678 300 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n"
        )
        .into_bytes()
    }

    #[test]
    fn parse_stat_reads_ppid_and_start() {
        let fields = parse_stat(&stat_line("sleep"));
        assert_eq!(
            fields,
            Some(StatFields {
                ppid: 17,
                start: 987654
            })
        );
    }

    #[test]
    fn parse_stat_copes_with_spaces_and_parentheses_in_comm() {
        for comm in ["a b", "x) S 99 1", ") (", "((()))", "tmux: server)"] {
            let fields = parse_stat(&stat_line(comm));
            assert_eq!(
                fields,
                Some(StatFields {
                    ppid: 17,
                    start: 987654
                }),
                "comm {comm:?}"
            );
        }
    }

    #[test]
    fn parse_stat_copes_with_non_utf8_comm() {
        let mut line = b"7 (\xff\xfe) R 1 7 7 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 55 0 0".to_vec();
        line.push(b'\n');
        assert_eq!(parse_stat(&line), Some(StatFields { ppid: 1, start: 55 }));
    }

    #[test]
    fn parse_stat_rejects_truncated_lines() {
        assert_eq!(parse_stat(b"1 (init) S 0 1 1"), None);
        assert_eq!(parse_stat(b"garbage"), None);
        assert_eq!(parse_stat(b""), None);
    }

    #[test]
    fn parse_status_reads_tgid_and_real_ids() {
        let status = b"Name:\tweird\xff name\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t1234\n\
            Ngid:\t0\nPid:\t1240\nPPid:\t1\nTracerPid:\t0\nUid:\t1000\t0\t0\t0\n\
            Gid:\t100\t5\t5\t5\nFDSize:\t64\n";
        assert_eq!(
            parse_status(status),
            Some(StatusFields {
                tgid: 1234,
                uid: 1000,
                gid: 100
            })
        );
        assert_eq!(parse_status(b"Name:\tx\nPid:\t3\n"), None);
    }

    #[test]
    fn parse_cmdline_splits_on_nul() {
        assert_eq!(parse_cmdline(b"sleep\x005\x00"), ["sleep", "5"]);
        assert_eq!(parse_cmdline(b"a\x00\x00b\x00"), ["a", "", "b"]);
        assert_eq!(
            parse_cmdline(b"nginx: master process"),
            ["nginx: master process"]
        );
        assert_eq!(parse_cmdline(b"bad\xff\x00"), ["bad\u{fffd}"]);
        assert!(parse_cmdline(b"").is_empty());
    }

    #[test]
    fn mirror_exe_path_strips_mountpoint_and_deleted_marker() {
        let prefix = Some(Path::new("/mnt/mirror"));
        assert_eq!(
            mirror_exe_path(b"/mnt/mirror/usr/bin/sh", prefix),
            b"/usr/bin/sh"
        );
        assert_eq!(
            mirror_exe_path(b"/mnt/mirror/usr/bin/sh (deleted)", prefix),
            b"/usr/bin/sh"
        );
        assert_eq!(mirror_exe_path(b"/mnt/mirror", prefix), b"/");
        // Seen from another mount namespace: already relative to the mirror's root.
        assert_eq!(mirror_exe_path(b"/usr/bin/sh", prefix), b"/usr/bin/sh");
        // A sibling directory that merely shares the prefix's spelling.
        assert_eq!(
            mirror_exe_path(b"/mnt/mirror2/bin/x", prefix),
            b"/mnt/mirror2/bin/x"
        );
        assert_eq!(
            mirror_exe_path(b"/mnt/mirror/bin/x", Some(Path::new("/mnt/mirror/"))),
            b"/bin/x"
        );
        assert_eq!(mirror_exe_path(b"/bin/x", Some(Path::new("/"))), b"/bin/x");
        assert_eq!(mirror_exe_path(b"/bin/x (deleted)", None), b"/bin/x");
    }

    #[test]
    fn read_stat_of_own_process_matches_status() {
        let pid = std::process::id();
        let stat = read_stat(pid).expect("own stat");
        let status = read_status(pid).expect("own status");
        assert_eq!(status.tgid, pid);
        assert!(stat.start > 0);
        // SAFETY: getppid has no preconditions.
        assert_eq!(stat.ppid as libc::pid_t, unsafe { libc::getppid() });
    }

    #[test]
    fn read_process_info_of_a_missing_process_fails() {
        assert!(read_process_info(4_000_000_000, None).is_err());
    }
}
