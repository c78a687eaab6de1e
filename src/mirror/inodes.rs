//! The inode table: which underlying file each FUSE node number stands for.
//!
//! Every node the kernel knows is anchored to its underlying file, so the daemon never
//! re-resolves a path or follows a symlink on a caller's behalf: each operation is an `*at()`
//! call relative to a descriptor of exactly that file. The anchor is an `O_PATH | O_NOFOLLOW`
//! descriptor while the descriptor budget (half the open-file limit) lasts; past it, a kernel
//! file handle (`name_to_handle_at`), reopened per operation with `open_by_handle_at`, because the
//! kernel keeps nodes of a large walk referenced long after their last use. A node's number is
//! derived from the underlying `(st_dev, st_ino)` and is also the inode number stat() shows:
//! the real one on the source's filesystem, the device's index in the top 16 bits on submounts.
//! fuser sends one number as both node id and `st_ino`, and the kernel keys things by `i_ino`
//! (bound unix sockets, for one), so the two must never differ or change. A descriptor anchor
//! keeps its underlying inode (and so its number) allocated; a handle anchor does not, so when a
//! lookup finds another file under a handle-anchored node's number, the node is replaced and its
//! generation bumped, which tells the kernel the number was reused. Hard links share one node; the kernel's lookup count is mirrored and the
//! node dropped when `forget` brings it to zero, so the table grows with what the kernel holds.
//! Each node also remembers the mirror path it was last reached by, under which events are
//! recorded.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use std::hash::{BuildHasherDefault, Hasher};

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;

use crate::mirror::io_mode::IoMode;
use crate::record::FileKind;

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

/// An `O_PATH` descriptor counted against the descriptor budget while it lives.
#[derive(Debug)]
struct CountedFd {
    fd: OwnedFd,
    open_anchors: Arc<AtomicUsize>,
}

impl Drop for CountedFd {
    fn drop(&mut self) {
        self.open_anchors.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What ties a node to its underlying file.
#[derive(Debug)]
enum Anchor {
    Fd(CountedFd),
    /// A kernel file handle, and a descriptor on the same mount to open it with.
    Handle {
        mount: Arc<OwnedFd>,
        handle: Vec<u8>,
    },
}

/// A descriptor of a node's file for one operation: the node's own, or one opened from its
/// handle (closed when dropped).
pub enum NodeFd<'a> {
    Borrowed(&'a OwnedFd),
    Opened(OwnedFd),
}

impl NodeFd<'_> {
    pub fn raw(&self) -> RawFd {
        match self {
            NodeFd::Borrowed(fd) => fd.as_raw_fd(),
            NodeFd::Opened(fd) => fd.as_raw_fd(),
        }
    }
}

/// One node the kernel holds a reference to.
#[derive(Debug)]
pub struct Node {
    anchor: Anchor,
    /// Bumped when the node's number is reused for another file (see the module comment).
    pub generation: u64,
    pub key: FileKey,
    pub kind: FileKind,
    path: Mutex<Arc<[u8]>>,
    lookups: AtomicU64,
    /// How the kernel may do I/O on this file's opens (see [`crate::mirror::io_mode`]).
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

    /// As [`Node::set_path`], allocating only if the path changed (a revalidating lookup, the
    /// commonest request, reaches the node by the path it already has).
    fn set_path_from(&self, path: &[u8]) {
        let mut current = self.path.lock().expect("node path lock poisoned");
        if **current != *path {
            *current = Arc::from(path);
        }
    }

    /// A descriptor (`O_PATH`) of exactly this node's file.
    pub fn fd(&self) -> std::io::Result<NodeFd<'_>> {
        match &self.anchor {
            Anchor::Fd(counted) => Ok(NodeFd::Borrowed(&counted.fd)),
            Anchor::Handle { mount, handle } => {
                crate::sys::open_handle(mount.as_raw_fd(), handle, libc::O_PATH | libc::O_NOFOLLOW)
                    .map(NodeFd::Opened)
            }
        }
    }

    fn handle(&self) -> Option<&[u8]> {
        match &self.anchor {
            Anchor::Fd(_) => None,
            Anchor::Handle { handle, .. } => Some(handle),
        }
    }
}

/// A descriptor (not `O_PATH`: open_by_handle_at refuses those) of the root of mount
/// `mount_id`, found in /proc/self/mountinfo.
fn mount_descriptor(mount_id: i32) -> Option<OwnedFd> {
    let mounts = crate::sys::mountinfo::read_mountinfo().ok()?;
    let mount = mounts.iter().rev().find(|m| m.id == mount_id)?;
    crate::sys::open_path(
        &mount.mount_point,
        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
    )
    .ok()
}

/// Hashes the integer keys of the daemon's per-request tables (node numbers, devices, handle
/// numbers, pids) with a few multiplications (FxHash's, SplitMix64's finaliser) instead of SipHash, which showed in the
/// profile of every request: these keys are the kernel's and the daemon's own numbers, not
/// strings a caller picks to collide.
#[derive(Clone, Copy, Debug, Default)]
pub struct NumberHasher(u64);

impl NumberHasher {
    const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(Self::SEED);
    }
}

impl Hasher for NumberHasher {
    fn finish(&self) -> u64 {
        // SplitMix64's finaliser: every input bit reaches both the low bits (a table's bucket
        // index) and the high ones (dashmap's shard), including a device index in the top 16.
        let mut x = self.0;
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^ (x >> 31)
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }

    fn write_i32(&mut self, n: i32) {
        self.add(u64::from(n as u32));
    }
}

/// A concurrent map keyed by numbers, hashed with [`NumberHasher`].
pub type NumberMap<K, V> = DashMap<K, V, BuildHasherDefault<NumberHasher>>;

/// Inode numbers of at most this many bits keep their value (plus a device index).
const INO_BITS: u32 = 48;

/// Node numbers to nodes.
#[derive(Debug)]
pub struct InodeTable {
    nodes: NumberMap<u64, Arc<Node>>,
    root_key: FileKey,
    /// Submount devices, numbered from 1 in the order they are met.
    devices: NumberMap<u64, u64>,
    /// Files whose inode number does not fit in [`INO_BITS`] (rare: some overlay and network
    /// filesystems); they get numbers from a counter, kept for the daemon's lifetime.
    oversized: NumberMap<FileKey, u64>,
    next_oversized: AtomicU64,
    /// Descriptor anchors alive, and how many may be.
    open_anchors: Arc<AtomicUsize>,
    anchor_budget: usize,
    /// A descriptor on each mount that handle anchors were made for, by mount id.
    mounts: NumberMap<i32, Arc<OwnedFd>>,
}

impl InodeTable {
    /// A table holding only the root, backed by `root_fd` (an `O_PATH` descriptor of the
    /// mirrored source directory). The root is never forgotten.
    pub fn new(root_fd: OwnedFd, root_stat: &libc::stat) -> InodeTable {
        let budget = (crate::sys::open_file_limit() / 2).clamp(64, 1 << 20) as usize;
        InodeTable::with_anchor_budget(root_fd, root_stat, budget)
    }

    /// As [`InodeTable::new`], with at most `anchor_budget` descriptor anchors.
    pub fn with_anchor_budget(
        root_fd: OwnedFd,
        root_stat: &libc::stat,
        anchor_budget: usize,
    ) -> InodeTable {
        let key = FileKey::of(root_stat);
        let open_anchors = Arc::new(AtomicUsize::new(1));
        let root = Node {
            anchor: Anchor::Fd(CountedFd {
                fd: root_fd,
                open_anchors: Arc::clone(&open_anchors),
            }),
            generation: 0,
            key,
            kind: FileKind::Dir,
            path: Mutex::new(Arc::from(&b"/"[..])),
            lookups: AtomicU64::new(1 << 62),
            io: Mutex::default(),
        };
        let table = InodeTable {
            nodes: NumberMap::default(),
            root_key: key,
            devices: NumberMap::default(),
            oversized: NumberMap::default(),
            next_oversized: AtomicU64::new(0xffff << INO_BITS),
            open_anchors,
            anchor_budget,
            mounts: NumberMap::default(),
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

    /// Anchors a new node to the file of `fd`: the descriptor itself while the budget lasts,
    /// else a file handle (or the descriptor after all, where a handle cannot be made and
    /// checked to reopen this very file).
    fn anchor(&self, fd: OwnedFd, stat: &libc::stat) -> Anchor {
        if self.open_anchors.load(Ordering::Relaxed) >= self.anchor_budget {
            if let Some(anchor) = self.handle_anchor(&fd, stat) {
                return anchor;
            }
        }
        self.open_anchors.fetch_add(1, Ordering::Relaxed);
        Anchor::Fd(CountedFd {
            fd,
            open_anchors: Arc::clone(&self.open_anchors),
        })
    }

    fn handle_anchor(&self, fd: &OwnedFd, stat: &libc::stat) -> Option<Anchor> {
        let (handle, mount_id) = crate::sys::handle_of(fd.as_raw_fd()).ok()?;
        let mount = match self.mounts.get(&mount_id) {
            Some(mount) => Arc::clone(&mount),
            None => {
                let mount = Arc::new(mount_descriptor(mount_id)?);
                self.mounts.insert(mount_id, Arc::clone(&mount));
                mount
            }
        };
        let reopened =
            crate::sys::open_handle(mount.as_raw_fd(), &handle, libc::O_PATH | libc::O_NOFOLLOW)
                .ok()?;
        let same = crate::sys::fstat(reopened.as_raw_fd())
            .is_ok_and(|again| FileKey::of(&again) == FileKey::of(stat));
        same.then_some(Anchor::Handle { mount, handle })
    }

    fn new_node(
        &self,
        fd: OwnedFd,
        stat: &libc::stat,
        path: Arc<[u8]>,
        lookups: u64,
        generation: u64,
    ) -> Node {
        Node {
            anchor: self.anchor(fd, stat),
            generation,
            key: FileKey::of(stat),
            kind: FileKind::from_mode(stat.st_mode),
            path: Mutex::new(path),
            lookups: AtomicU64::new(lookups),
            io: Mutex::default(),
        }
    }

    /// Registers one more kernel reference to the file behind `fd` (just looked up or created
    /// at `path`) and returns its node number. If the file already has a node, `fd` is closed
    /// and the existing node's path is updated.
    pub fn remember(&self, fd: OwnedFd, stat: &libc::stat, path: Arc<[u8]>) -> u64 {
        let key = FileKey::of(stat);
        let number = self.number_of(key);
        // The entry lock serialises remember and forget of the same node.
        match self.nodes.entry(number) {
            Entry::Occupied(mut entry) => {
                let node = entry.get();
                let reused = node.handle().is_some_and(|handle| {
                    crate::sys::handle_of(fd.as_raw_fd()).is_ok_and(|(new, _)| new != handle)
                });
                if reused {
                    // The handle-anchored file is gone and its inode number now names another:
                    // same node number, new generation; the kernel's count carries over.
                    let lookups = node.lookups.load(Ordering::Relaxed) + 1;
                    let generation = node.generation + 1;
                    let fresh = self.new_node(fd, stat, path, lookups, generation);
                    entry.insert(Arc::new(fresh));
                } else {
                    node.lookups.fetch_add(1, Ordering::Relaxed);
                    node.set_path(path);
                }
            }
            Entry::Vacant(entry) => {
                entry.insert(Arc::new(self.new_node(fd, stat, path, 1, 0)));
            }
        }
        number
    }

    /// Like [`InodeTable::remember`] for a file that already has a descriptor-anchored node:
    /// counts one more reference and returns its number; `None` otherwise (the caller then
    /// opens the file, so a handle-anchored node's identity can be checked).
    pub fn remember_known(&self, stat: &libc::stat, path: &[u8]) -> Option<u64> {
        let key = FileKey::of(stat);
        let number = self.number_of(key);
        match self.nodes.entry(number) {
            Entry::Occupied(entry) if entry.get().key == key && entry.get().handle().is_none() => {
                let node = entry.get();
                node.lookups.fetch_add(1, Ordering::Relaxed);
                node.set_path_from(path);
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
    fn number_hasher_spreads_sequential_and_device_marked_numbers() {
        use std::hash::BuildHasher;
        let build = BuildHasherDefault::<NumberHasher>::default();
        // Distinct hashes, and the low bits (a table's bucket index) and the high bits
        // (dashmap's shard) both spread: sequential numbers, and numbers that differ only in
        // the device index of the top 16 bits.
        for step in [1u64, 1 << INO_BITS] {
            let hashes: Vec<u64> = (0..4096u64).map(|i| build.hash_one(i * step)).collect();
            let distinct: std::collections::HashSet<_> = hashes.iter().collect();
            assert_eq!(distinct.len(), hashes.len());
            let low: std::collections::HashSet<_> = hashes.iter().map(|h| h & 0xff).collect();
            let high: std::collections::HashSet<_> =
                hashes.iter().map(|h| (h << 7) >> 59).collect();
            assert!(low.len() > 200, "low bits: {} of 256", low.len());
            assert_eq!(high.len(), 32, "shard bits");
        }
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

#[cfg(test)]
mod anchor_tests {
    use super::*;
    use std::path::Path;

    fn open(path: &str) -> (OwnedFd, libc::stat) {
        let fd =
            crate::sys::open_path(Path::new(path), libc::O_PATH | libc::O_NOFOLLOW).expect("open");
        let stat = crate::sys::fstat(fd.as_raw_fd()).expect("stat");
        (fd, stat)
    }

    #[test]
    fn past_the_budget_nodes_hold_handles_not_descriptors() {
        let (root, root_stat) = open("/");
        let table = InodeTable::with_anchor_budget(root, &root_stat, 2);
        let paths = ["/etc", "/usr", "/usr/bin", "/etc/passwd"];
        let mut numbers = Vec::new();
        for path in paths {
            let (fd, stat) = open(path);
            numbers.push(table.remember(fd, &stat, Arc::from(path.as_bytes())));
        }
        assert_eq!(table.open_anchors.load(Ordering::Relaxed), 2, "root + /etc");
        for (number, path) in numbers.iter().zip(paths) {
            let node = table.get(*number).expect("node");
            let fd = node.fd().expect("a descriptor from the handle");
            let stat = crate::sys::fstat(fd.raw()).expect("stat");
            assert_eq!(FileKey::of(&stat), FileKey::of(&open(path).1), "{path}");
        }
        let passwd = table.get(numbers[3]).expect("node");
        assert!(passwd.handle().is_some());
        // Handle-anchored nodes are not found by stat alone.
        let passwd_stat = open("/etc/passwd").1;
        assert_eq!(table.remember_known(&passwd_stat, b"/etc/passwd"), None);
        for number in numbers {
            table.forget(number, 1);
        }
        assert_eq!(
            table.open_anchors.load(Ordering::Relaxed),
            1,
            "only the root is left"
        );
    }

    #[test]
    fn a_reused_inode_number_gets_a_new_generation() {
        let dir = std::env::temp_dir().join(format!("depsetfs-anchor-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let (root, root_stat) = open("/");
        let table = InodeTable::with_anchor_budget(root, &root_stat, 1);
        let file = dir.join("f");
        std::fs::write(&file, b"one").expect("write");
        let (fd, stat) = open(file.to_str().expect("utf-8"));
        let number = table.remember(fd, &stat, Arc::from(&b"/f"[..]));
        assert_eq!(table.get(number).expect("node").generation, 0);
        // Reuse, simulated: the same number reached with another file's handle.
        let (other_fd, _) = open(dir.to_str().expect("utf-8"));
        table.remember(other_fd, &stat, Arc::from(&b"/f"[..]));
        assert_eq!(table.get(number).expect("node").generation, 1);
        let _ = std::fs::remove_dir_all(dir);
    }
}
