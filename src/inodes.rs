//! The inode table: which underlying file each FUSE node number stands for.
//!
//! Every node the kernel knows is backed by an `O_PATH | O_NOFOLLOW` file descriptor of the
//! underlying file, so the daemon never re-resolves a path or follows a symlink on a caller's
//! behalf: each operation is an `*at()` call relative to that descriptor. Nodes are identified by
//! the underlying `(st_dev, st_ino)`, so hard links share one node and submounts (another
//! `st_dev`) are distinct. The kernel's lookup count is mirrored here; when `forget` brings it to
//! zero the node and its descriptor are dropped, so the table grows with what the kernel holds,
//! not with what was ever visited. Each node also remembers the mirror path it was last reached
//! by, which is the path events are recorded under.

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

/// Node numbers to nodes, and underlying identities to node numbers.
#[derive(Debug)]
pub struct InodeTable {
    by_number: DashMap<u64, Arc<Node>>,
    by_key: DashMap<FileKey, u64>,
    next_number: AtomicU64,
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
            by_number: DashMap::new(),
            by_key: DashMap::new(),
            next_number: AtomicU64::new(ROOT_NODE + 1),
        };
        table.by_number.insert(ROOT_NODE, Arc::new(root));
        table.by_key.insert(key, ROOT_NODE);
        table
    }

    pub fn get(&self, number: u64) -> Option<Arc<Node>> {
        self.by_number.get(&number).map(|node| Arc::clone(&node))
    }

    /// Registers one more kernel reference to the file behind `fd` (just looked up or created
    /// at `path`) and returns its node number. If the file already has a node, `fd` is closed
    /// and the existing node's path is updated.
    pub fn remember(&self, fd: OwnedFd, stat: &libc::stat, path: Arc<[u8]>) -> u64 {
        let key = FileKey::of(stat);
        // The by_key entry lock serialises remember and forget of the same file.
        match self.by_key.entry(key) {
            Entry::Occupied(entry) => {
                let number = *entry.get();
                if let Some(node) = self.by_number.get(&number) {
                    node.lookups.fetch_add(1, Ordering::Relaxed);
                    node.set_path(path);
                }
                number
            }
            Entry::Vacant(entry) => {
                let number = self.next_number.fetch_add(1, Ordering::Relaxed);
                let node = Node {
                    fd,
                    key,
                    kind: FileKind::from_mode(stat.st_mode),
                    path: Mutex::new(path),
                    lookups: AtomicU64::new(1),
                    io: Mutex::default(),
                };
                self.by_number.insert(number, Arc::new(node));
                entry.insert(number);
                number
            }
        }
    }

    /// Drops `count` kernel references to `number`; the node goes when none are left.
    pub fn forget(&self, number: u64, count: u64) {
        if number == ROOT_NODE {
            return;
        }
        let Some(key) = self.by_number.get(&number).map(|node| node.key) else {
            return;
        };
        if let Entry::Occupied(entry) = self.by_key.entry(key) {
            if *entry.get() != number {
                return;
            }
            let remaining = match self.by_number.get(&number) {
                Some(node) => {
                    let before = node.lookups.load(Ordering::Relaxed);
                    let after = before.saturating_sub(count);
                    node.lookups.store(after, Ordering::Relaxed);
                    after
                }
                None => 0,
            };
            if remaining == 0 {
                self.by_number.remove(&number);
                entry.remove();
            }
        }
    }

    /// Nodes currently held (the root included).
    pub fn len(&self) -> usize {
        self.by_number.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_number.is_empty()
    }
}
