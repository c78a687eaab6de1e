//! Standard output captured into a file for the length of one call: `verify
//! --compare-stdout` needs what the command printed in the clean root, and the command writes
//! straight to the descriptor it inherits from `run` (fd 1). [`StdoutToFile`] flushes Rust's
//! buffer, duplicates fd 1 aside, points fd 1 at the file, and puts the original back when
//! dropped, so an error on the way cannot leave the process writing into the file.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// While alive, fd 1 is the file given to [`StdoutToFile::new`].
pub struct StdoutToFile {
    saved: OwnedFd,
}

impl StdoutToFile {
    pub fn new(file: &File) -> io::Result<StdoutToFile> {
        io::stdout().flush()?;
        // SAFETY: fcntl on fd 1 with a plain command; the result is a new descriptor we own.
        let saved = unsafe { libc::fcntl(libc::STDOUT_FILENO, libc::F_DUPFD_CLOEXEC, 3) };
        if saved < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fcntl just returned this descriptor and nothing else owns it.
        let saved = unsafe { OwnedFd::from_raw_fd(saved) };
        // SAFETY: both descriptors are open; dup2 only replaces fd 1.
        if unsafe { libc::dup2(file.as_raw_fd(), libc::STDOUT_FILENO) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(StdoutToFile { saved })
    }
}

impl Drop for StdoutToFile {
    fn drop(&mut self) {
        let _ = io::stdout().flush();
        // SAFETY: `saved` is open for as long as self; dup2 only replaces fd 1.
        unsafe { libc::dup2(self.saved.as_raw_fd(), libc::STDOUT_FILENO) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek};

    #[test]
    fn a_child_writes_into_the_file_and_stdout_comes_back() {
        let path = std::env::temp_dir().join(format!("depsetfs-capture-{}", std::process::id()));
        let mut file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        {
            let _guard = StdoutToFile::new(&file).unwrap();
            let status = std::process::Command::new("/bin/sh")
                .args(["-c", "echo captured"])
                .status()
                .unwrap();
            assert!(status.success());
        }
        let mut text = String::new();
        file.rewind().unwrap();
        file.read_to_string(&mut text).unwrap();
        std::fs::remove_file(&path).unwrap();
        // Other test threads' children may write to fd 1 meanwhile: only ours is checked.
        assert!(text.lines().any(|line| line == "captured"), "{text:?}");
        // fd 1 is no longer the file: writing to it does not grow it.
        let fd1 = std::fs::read_link("/proc/self/fd/1").unwrap();
        assert_ne!(fd1, path);
    }
}
