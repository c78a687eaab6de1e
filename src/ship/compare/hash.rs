//! Content hashes of regular files: sha256 of the bytes (the `sha2` crate, already used for OCI
//! digests), read with `O_NOFOLLOW` so a file swapped for a symlink is never followed, and the
//! ELF machine of the file's header on the way (what a side's architecture is judged by).
//! [`hash_all`] spreads a list of files over a few threads: on a warm page cache sha256 is
//! CPU-bound, so two threads on two cores hash a tree about twice as fast.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use sha2::{Digest, Sha256 as Hasher};

use super::Sha256;

/// What reading a file's contents gave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileHash {
    pub sha256: Sha256,
    /// `e_machine` when the file is an ELF file.
    pub elf_machine: Option<u16>,
}

/// The hash of the regular file at `path` (never through a symlink).
pub fn hash_file(path: &Path) -> io::Result<FileHash> {
    let file = File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    hash_reader(file)
}

/// The hash of everything `reader` yields.
pub fn hash_reader(mut reader: impl Read) -> io::Result<FileHash> {
    let mut hasher = Hasher::new();
    let mut buffer = vec![0u8; 1 << 16];
    let mut head = [0u8; 20];
    let mut head_len = 0;
    loop {
        let n = match reader.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if head_len < head.len() {
            let take = (head.len() - head_len).min(n);
            head[head_len..head_len + take].copy_from_slice(&buffer[..take]);
            head_len += take;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(FileHash {
        sha256: hasher.finalize().into(),
        elf_machine: elf_machine(&head[..head_len]),
    })
}

/// `e_machine` of an ELF header (bytes 18..20, in the file's byte order).
pub fn elf_machine(head: &[u8]) -> Option<u16> {
    if head.len() < 20 || &head[..4] != b"\x7fELF" {
        return None;
    }
    let bytes = [head[18], head[19]];
    Some(match head[5] {
        2 => u16::from_be_bytes(bytes),
        _ => u16::from_le_bytes(bytes),
    })
}

/// How many threads [`hash_all`] uses: the CPUs this process may run on, at most 4.
pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 4)
}

/// Hashes every file of `paths` on `threads` threads; the results in the order of `paths`.
pub fn hash_all(paths: &[PathBuf], threads: usize) -> Vec<io::Result<FileHash>> {
    hash_each(paths.len(), |at| paths[at].clone(), threads, &mut |_, _| {})
}

/// Hashes the files `path_of(0..count)` names on `threads` threads (paths made as needed, not
/// held all at once); the results in that order. `progress(started, count)` is called from
/// this thread a few times a second while the workers run.
pub fn hash_each(
    count: usize,
    path_of: impl Fn(usize) -> PathBuf + Sync,
    threads: usize,
    progress: &mut dyn FnMut(u64, u64),
) -> Vec<io::Result<FileHash>> {
    let next = AtomicUsize::new(0);
    let threads = threads.clamp(1, count.max(1));
    let mut results: Vec<Option<io::Result<FileHash>>> = (0..count).map(|_| None).collect();
    let chunks: Vec<Vec<(usize, io::Result<FileHash>)>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let at = next.fetch_add(1, Ordering::Relaxed);
                        if at >= count {
                            break done;
                        }
                        done.push((at, hash_file(&path_of(at))));
                    }
                })
            })
            .collect();
        while !workers.iter().all(|worker| worker.is_finished()) {
            progress(next.load(Ordering::Relaxed).min(count) as u64, count as u64);
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        workers
            .into_iter()
            .map(|worker| worker.join().unwrap_or_default())
            .collect()
    });
    for (at, result) in chunks.into_iter().flatten() {
        results[at] = Some(result);
    }
    results
        .into_iter()
        .map(|result| result.unwrap_or_else(|| Err(io::Error::other("hash thread panicked"))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_empty_input_has_the_known_digest() -> io::Result<()> {
        let hash = hash_reader(io::empty())?;
        assert_eq!(
            super::super::hex(&hash.sha256),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(hash.elf_machine, None);
        Ok(())
    }

    #[test]
    fn an_elf_header_gives_its_machine() -> io::Result<()> {
        let mut header = b"\x7fELF\x02\x01\x01".to_vec();
        header.resize(18, 0);
        header.extend_from_slice(&183u16.to_le_bytes());
        assert_eq!(hash_reader(header.as_slice())?.elf_machine, Some(183));
        Ok(())
    }

    #[test]
    fn many_files_hash_on_threads_in_order() -> io::Result<()> {
        let dir = crate::fixtures::ScratchDir::new("hash-all");
        let paths: Vec<PathBuf> = (0..20)
            .map(|i| {
                let path = dir.root().join(format!("f{i}"));
                std::fs::write(&path, format!("{i}")).map(|()| path)
            })
            .collect::<io::Result<_>>()?;
        let results = hash_all(&paths, 3);
        for (path, result) in paths.iter().zip(results) {
            assert_eq!(result?, hash_file(path)?);
        }
        Ok(())
    }
}
