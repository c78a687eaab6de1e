//! The inode table: which underlying file each FUSE node number stands for.
//!
//! Every node the kernel knows is backed by an `O_PATH | O_NOFOLLOW` file descriptor of the
//! underlying file, so the daemon never re-resolves a path or follows a symlink on a caller's
//! behalf: each operation is an `*at()` call relative to that descriptor. A node's number is
//! derived from the underlying `(st_dev, st_ino)` and is also the inode number stat() shows:
//! the real one on the source's filesystem, the device's index in the top 16 bits on submounts.
//! fuser sends one number as both node id and `st_ino`, and the kernel keys things by `i_ino`
//! (bound unix sockets, for one), so the two must never differ or change. Numbers cannot collide
//! among live nodes because the descriptor held for each keeps its underlying inode (and so its
//! number) allocated. Hard links share one node; the kernel's lookup count is mirrored and the
//! node dropped when `forget` brings it to zero, so the table grows with what the kernel holds.
//! Each node also remembers the mirror path it was last reached by, under which events are
//! recorded.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;

use crate::event::FileKind;
use crate::passthrough::IoMode;

/// The FUSE node number of the mirror's root.
pub const ROOT_NODE: u64 = 1;

/// Identity of an underlying file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FileKey {
    pub dev: u64,
    pub ino: u64,
}

impl FileKey {
    pub fn of(stat: &libc::stat) -> FileKey {
        FileKey {
            dev: stat.st_dev,
            ino: stat.st_ino,
        }
    }
}

/// One node the kernel holds a reference to.
#[derive(Debug)]
pub struct Node {
    /// `O_PATH | O_NOFOLLOW` descriptor of the underlying file.
    pub fd: OwnedFd,
    pub key: FileKey,
    pub kind: FileKind,
    path: Mutex<Arc<[u8]>>,
    lookups: AtomicU64,
    /// How the kernel may do I/O on this file's opens (see [`crate::passthrough`]).
    pub io: Mutex<IoMode>,
}

impl Node {
    /// The mirror path this node was last reached by.
    pub fn path(&self) -> Arc<[u8]> {
        Arc::clone(&self.path.lock().expect("node path lock poisoned"))
    }

    fn set_path(&self, path: Arc<[u8]>) {
        let mut current = self.path.lock().expect("node path lock poisoned");
        if **current != *path {
            *current = path;
        }
    }

    pub fn raw_fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }
}

/// Inode numbers of at most this many bits keep their value (plus a device index).
const INO_BITS: u32 = 48;

/// Node numbers to nodes.
#[derive(Debug)]
pub struct InodeTable {
    nodes: DashMap<u64, Arc<Node>>,
    root_key: FileKey,
    /// Submount devices, numbered from 1 in the order they are met.
    devices: DashMap<u64, u64>,
    /// Files whose inode number does not fit in [`INO_BITS`] (rare: some overlay and network
    /// filesystems); they get numbers from a counter, kept for the daemon's lifetime.
    oversized: DashMap<FileKey, u64>,
    next_oversized: AtomicU64,
}

impl InodeTable {
    /// A table holding only the root, backed by `root_fd` (an `O_PATH` descriptor of the
    /// mirrored source directory). The root is never forgotten.
    pub fn new(root_fd: OwnedFd, root_stat: &libc::stat) -> InodeTable {
        let key = FileKey::of(root_stat);
        let root = Node {
            fd: root_fd,
            key,
            kind: FileKind::Dir,
            path: Mutex::new(Arc::from(&b"/"[..])),
            lookups: AtomicU64::new(1 << 62),
            io: Mutex::default(),
        };
        let table = InodeTable {
            nodes: DashMap::new(),
            root_key: key,
            devices: DashMap::new(),
            oversized: DashMap::new(),
            next_oversized: AtomicU64::new(0xffff << INO_BITS),
        };
        table.nodes.insert(ROOT_NODE, Arc::new(root));
        table
    }

    /// The node number (and stat() inode number) of an underlying file.
    pub fn number_of(&self, key: FileKey) -> u64 {
        if key == self.root_key {
            return ROOT_NODE;
        }
        let device_index = if key.dev == self.root_key.dev {
            0
        } else {
            let next = self.devices.len() as u64 + 1;
            *self.devices.entry(key.dev).or_insert(next)
        };
        if key.ino >> INO_BITS == 0
            && device_index < 0xffff
            && (device_index, key.ino) != (0, ROOT_NODE)
        {
            return (device_index << INO_BITS) | key.ino;
        }
        *self
            .oversized
            .entry(key)
            .or_insert_with(|| self.next_oversized.fetch_add(1, Ordering::Relaxed))
    }

    pub fn get(&self, number: u64) -> Option<Arc<Node>> {
        self.nodes.get(&number).map(|node| Arc::clone(&node))
    }

    /// Registers one more kernel reference to the file behind `fd` (just looked up or created
    /// at `path`) and returns its node number. If the file already has a node, `fd` is closed
    /// and the existing node's path is updated.
    pub fn remember(&self, fd: OwnedFd, stat: &libc::stat, path: Arc<[u8]>) -> u64 {
        let key = FileKey::of(stat);
        let number = self.number_of(key);
        // The entry lock serialises remember and forget of the same node.
        match self.nodes.entry(number) {
            Entry::Occupied(entry) => {
                let node = entry.get();
                node.lookups.fetch_add(1, Ordering::Relaxed);
                node.set_path(path);
            }
            Entry::Vacant(entry) => {
                entry.insert(Arc::new(Node {
                    fd,
                    key,
                    kind: FileKind::from_mode(stat.st_mode),
                    path: Mutex::new(path),
                    lookups: AtomicU64::new(1),
                    io: Mutex::default(),
                }));
            }
        }
        number
    }

    /// Like [`InodeTable::remember`] for a file that already has a node: counts one more
    /// reference and returns its number; `None` if it has none (the caller then opens it).
    pub fn remember_known(&self, stat: &libc::stat, path: Arc<[u8]>) -> Option<u64> {
        let key = FileKey::of(stat);
        let number = self.number_of(key);
        match self.nodes.entry(number) {
            Entry::Occupied(entry) if entry.get().key == key => {
                let node = entry.get();
                node.lookups.fetch_add(1, Ordering::Relaxed);
                node.set_path(path);
                Some(number)
            }
            _ => None,
        }
    }

    /// Drops `count` kernel references to `number`; the node goes when none are left.
    pub fn forget(&self, number: u64, count: u64) {
        if number == ROOT_NODE {
            return;
        }
        if let Entry::Occupied(entry) = self.nodes.entry(number) {
            let node = entry.get();
            let remaining = node.lookups.load(Ordering::Relaxed).saturating_sub(count);
            node.lookups.store(remaining, Ordering::Relaxed);
            if remaining == 0 {
                entry.remove();
            }
        }
    }

    /// Nodes currently held (the root included).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> InodeTable {
        let fd = crate::sys::open_path(std::path::Path::new("/"), libc::O_PATH).expect("open /");
        let stat = crate::sys::fstat(std::os::fd::AsRawFd::as_raw_fd(&fd)).expect("stat /");
        InodeTable::new(fd, &stat)
    }

    #[test]
    fn numbers_keep_the_inode_number_and_mark_other_devices() {
        let table = table();
        let root_dev = table.root_key.dev;
        assert_eq!(table.number_of(table.root_key), ROOT_NODE);
        assert_eq!(
            table.number_of(FileKey {
                dev: root_dev,
                ino: 4242
            }),
            4242
        );
        let other = table.number_of(FileKey {
            dev: root_dev + 1,
            ino: 4242,
        });
        assert_eq!(other, (1 << INO_BITS) | 4242);
        let third = table.number_of(FileKey {
            dev: root_dev + 2,
            ino: 4242,
        });
        assert_eq!(third, (2 << INO_BITS) | 4242);
        assert_eq!(
            table.number_of(FileKey {
                dev: root_dev + 1,
                ino: 4242
            }),
            other
        );
    }

    #[test]
    fn oversized_inode_numbers_get_stable_unique_numbers() {
        let table = table();
        let big = FileKey {
            dev: table.root_key.dev,
            ino: 1 << 60,
        };
        let bigger = FileKey {
            dev: table.root_key.dev,
            ino: (1 << 60) + 1,
        };
        let first = table.number_of(big);
        assert_ne!(first, table.number_of(bigger));
        assert_eq!(first, table.number_of(big));
    }

    #[test]
    fn nodes_are_counted_and_forgotten() {
        let table = table();
        let open = || {
            crate::sys::open_path(std::path::Path::new("/etc"), libc::O_PATH).expect("open /etc")
        };
        let fd = open();
        let stat = crate::sys::fstat(std::os::fd::AsRawFd::as_raw_fd(&fd)).expect("stat");
        let number = table.remember(fd, &stat, Arc::from(&b"/etc"[..]));
        assert_eq!(
            table.remember(open(), &stat, Arc::from(&b"/etc"[..])),
            number
        );
        table.forget(number, 1);
        assert!(table.get(number).is_some());
        table.forget(number, 1);
        assert!(table.get(number).is_none());
        table.forget(ROOT_NODE, 1 << 62);
        assert!(table.get(ROOT_NODE).is_some());
    }
}
