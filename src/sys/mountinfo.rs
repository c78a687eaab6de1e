//! /proc/self/mountinfo: which filesystem is mounted where. The daemon reads it to reopen
//! file handles on the right mount (`mirror::inodes`), the launcher to check and find mounts
//! (`launch`), export to refuse writing into a mirror. Parsing only; nothing here mounts.

use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// One line of /proc/self/mountinfo.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountInfo {
    /// The mount id (first field).
    pub id: i32,
    pub mount_point: PathBuf,
    pub fs_type: String,
    /// `major:minor` of the filesystem.
    pub device: String,
}

/// Mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(field: &str) -> PathBuf {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let digits = std::str::from_utf8(&bytes[i + 1..i + 4]).unwrap_or("");
            if let Ok(value) = u8::from_str_radix(digits, 8) {
                out.push(value);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    PathBuf::from(std::ffi::OsStr::from_bytes(&out))
}

pub fn read_mountinfo() -> io::Result<Vec<MountInfo>> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")?;
    Ok(text.lines().filter_map(parse_mountinfo_line).collect())
}

fn parse_mountinfo_line(line: &str) -> Option<MountInfo> {
    let (before, after) = line.split_once(" - ")?;
    let fields: Vec<&str> = before.split(' ').collect();
    let fs_type = after.split(' ').next()?;
    Some(MountInfo {
        id: fields.first()?.parse().ok()?,
        mount_point: unescape_mountinfo(fields.get(4)?),
        fs_type: fs_type.to_owned(),
        device: (*fields.get(2)?).to_owned(),
    })
}

/// The topmost mount at exactly `path`, if any.
pub fn mount_at(path: &Path) -> io::Result<Option<MountInfo>> {
    Ok(read_mountinfo()?
        .into_iter()
        .rev()
        .find(|m| m.mount_point == path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines_parse_with_escapes() {
        let line = r"36 35 0:52 / /srv/my\040mirror rw,relatime shared:1 - fuse.depsetfs depsetfs rw,user_id=0";
        let info = parse_mountinfo_line(line).expect("parses");
        assert_eq!(info.mount_point, PathBuf::from("/srv/my mirror"));
        assert_eq!(info.fs_type, "fuse.depsetfs");
        assert_eq!(info.device, "0:52");
        assert_eq!(info.id, 36);
    }
}
