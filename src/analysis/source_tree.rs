//! The mirrored tree on this machine, looked at through mirror paths without leaving it
//! ([`SourceTree`]: cached lstat under ancestors known to be directories), and the symlink
//! chains a chrooted process would follow through it ([`resolve_symlinks`]).

use std::collections::{HashMap, VecDeque};
use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::analysis::paths::{
    SYMLINK_HOP_LIMIT, join_components, normalize_mirror_path, parent_of,
};
use crate::record::FileKind;

/// What lstat says about a path of the source tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceLookup {
    Present {
        kind: FileKind,
        size: u64,
    },
    /// Gone, or not reachable by that name (an ancestor is not a real directory).
    Missing,
    /// lstat failed otherwise (permissions, a stale mount): existence unknown.
    Unreadable,
}

/// The mirrored tree on this machine, looked at through mirror paths without ever leaving it:
/// each path is checked only under ancestors already known to be real directories, so a
/// symlink on the way cannot lead outside the root.
#[derive(Debug)]
pub struct SourceTree {
    root: PathBuf,
    lookups: HashMap<Vec<u8>, SourceLookup>,
}

impl SourceTree {
    pub fn new(root: impl Into<PathBuf>) -> SourceTree {
        SourceTree {
            root: root.into(),
            lookups: HashMap::new(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// lstat of a normalized mirror path, cached.
    pub fn lookup(&mut self, path: &[u8]) -> SourceLookup {
        if let Some(known) = self.lookups.get(path) {
            return *known;
        }
        let found = match parent_of(path) {
            // The root given by the user may itself be a symlink (a "current" release link).
            None => lookup_result(std::fs::metadata(&self.root)),
            Some(parent) => match self.lookup(parent) {
                SourceLookup::Present {
                    kind: FileKind::Dir,
                    ..
                } => lookup_result(std::fs::symlink_metadata(self.host_path(path))),
                SourceLookup::Present { .. } | SourceLookup::Missing => SourceLookup::Missing,
                SourceLookup::Unreadable => SourceLookup::Unreadable,
            },
        };
        self.lookups.insert(path.to_vec(), found);
        found
    }

    /// The target text of a symlink of the tree.
    pub fn read_link(&self, path: &[u8]) -> Option<Vec<u8>> {
        let target = std::fs::read_link(self.host_path(path)).ok()?;
        Some(target.into_os_string().into_encoded_bytes())
    }

    /// Where a mirror path lies on this machine. Only meaningful for paths whose ancestors
    /// [`SourceTree::lookup`] found to be directories.
    pub fn host_path(&self, path: &[u8]) -> PathBuf {
        let relative = path.strip_prefix(b"/").unwrap_or(path);
        if relative.is_empty() {
            return self.root.clone();
        }
        self.root.join(OsStr::from_bytes(relative))
    }
}

fn lookup_result(metadata: io::Result<std::fs::Metadata>) -> SourceLookup {
    match metadata {
        Ok(metadata) => {
            let kind = FileKind::from_mode(metadata.mode());
            // Directory sizes are block counts, not content: report only what copying costs.
            let size = match kind {
                FileKind::File | FileKind::Symlink => metadata.len(),
                _ => 0,
            };
            SourceLookup::Present { kind, size }
        }
        Err(error) if is_absence(&error) => SourceLookup::Missing,
        Err(_) => SourceLookup::Unreadable,
    }
}

fn is_absence(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::ENOENT) | Some(libc::ENOTDIR)
    )
}

/// The symlinks met while resolving a path inside the source tree, and where it led.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SymlinkChain {
    /// Every symlink followed, in order, as mirror paths.
    pub links: Vec<Vec<u8>>,
    /// Where the resolution got to: the file reached, or the path it stopped at with the
    /// unresolved rest appended.
    pub resolved: Vec<u8>,
    pub end: ChainEnd,
}

/// How a resolution ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChainEnd {
    /// At an existing file.
    Reached,
    /// At a name that does not exist or cannot be read (a dangling link).
    Dangling,
    /// At the edge of a tree the resolver must not look into (see [`resolve_symlinks`]).
    Excluded,
    /// After more than [`SYMLINK_HOP_LIMIT`] links (a loop).
    TooManyHops,
}

/// Resolves `path` as a process chrooted on the source tree would: component by component,
/// relative targets against the link's directory, absolute targets against the root, `..` at
/// the root staying at the root. It does not look into trees `stop_at` names (e.g. /proc, whose
/// links describe the processes of this machine), and gives up after [`SYMLINK_HOP_LIMIT`].
pub fn resolve_symlinks(
    tree: &mut SourceTree,
    path: &[u8],
    stop_at: &dyn Fn(&[u8]) -> bool,
) -> SymlinkChain {
    let mut links: Vec<Vec<u8>> = Vec::new();
    let mut resolved: Vec<Vec<u8>> = Vec::new();
    let mut pending: VecDeque<Vec<u8>> = split_components(path).into();
    while let Some(name) = pending.pop_front() {
        if name == b".." {
            resolved.pop();
            continue;
        }
        resolved.push(name);
        let candidate = join_owned(&resolved);
        if stop_at(&candidate) {
            return stopped(links, resolved, pending, ChainEnd::Excluded);
        }
        match tree.lookup(&candidate) {
            SourceLookup::Present {
                kind: FileKind::Symlink,
                ..
            } => {
                let Some(target) = tree.read_link(&candidate) else {
                    return stopped(links, resolved, pending, ChainEnd::Dangling);
                };
                links.push(candidate);
                if links.len() > SYMLINK_HOP_LIMIT {
                    return stopped(links, resolved, pending, ChainEnd::TooManyHops);
                }
                resolved.pop();
                if target.starts_with(b"/") {
                    resolved.clear();
                }
                for name in split_components(&target).into_iter().rev() {
                    pending.push_front(name);
                }
            }
            SourceLookup::Present { .. } => {}
            SourceLookup::Missing | SourceLookup::Unreadable => {
                return stopped(links, resolved, pending, ChainEnd::Dangling);
            }
        }
    }
    let resolved = join_owned(&resolved);
    SymlinkChain {
        links,
        resolved,
        end: ChainEnd::Reached,
    }
}

fn stopped(
    links: Vec<Vec<u8>>,
    mut resolved: Vec<Vec<u8>>,
    pending: VecDeque<Vec<u8>>,
    end: ChainEnd,
) -> SymlinkChain {
    resolved.extend(pending);
    let resolved = normalize_mirror_path(&join_owned(&resolved));
    SymlinkChain {
        links,
        resolved,
        end,
    }
}

/// Names of a path without empty and `.` components; `..` is kept for the resolver.
fn split_components(path: &[u8]) -> Vec<Vec<u8>> {
    path.split(|&byte| byte == b'/')
        .filter(|name| !name.is_empty() && *name != b".")
        .map(<[u8]>::to_vec)
        .collect()
}

fn join_owned(components: &[Vec<u8>]) -> Vec<u8> {
    let borrowed: Vec<&[u8]> = components.iter().map(Vec::as_slice).collect();
    join_components(&borrowed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{ScratchDir, build_source};

    #[test]
    fn symlinks_resolve_inside_the_source_root() -> io::Result<()> {
        let tree = ScratchDir::new("set-inside");
        build_source(&tree)?;
        let mut source = SourceTree::new(tree.root());
        let nothing_excluded = |_: &[u8]| false;
        let escape = resolve_symlinks(&mut source, b"/opt/x/escape", &nothing_excluded);
        assert_eq!(escape.links, vec![b"/opt/x/escape".to_vec()]);
        assert_eq!(escape.resolved, b"/etc/hostname");
        assert_eq!(escape.end, ChainEnd::Reached);
        // The fixture's own /etc/hostname, not the host's.
        assert_eq!(
            source.lookup(b"/etc/hostname"),
            SourceLookup::Present {
                kind: FileKind::File,
                size: 8
            }
        );
        let relative = resolve_symlinks(&mut source, b"/opt/x/a", &nothing_excluded);
        assert_eq!(
            relative.links,
            vec![b"/opt/x/a".to_vec(), b"/opt/x/b".to_vec()]
        );
        assert_eq!(relative.resolved, b"/opt/c/d");
        let absolute = resolve_symlinks(&mut source, b"/etc/localtime", &nothing_excluded);
        assert_eq!(absolute.resolved, b"/usr/share/zoneinfo/UTC");
        Ok(())
    }

    #[test]
    fn symlink_loops_stop_at_the_hop_limit() -> io::Result<()> {
        let tree = ScratchDir::new("set-loop");
        build_source(&tree)?;
        let mut source = SourceTree::new(tree.root());
        let chain = resolve_symlinks(&mut source, b"/opt/x/loop", &|_| false);
        assert_eq!(chain.end, ChainEnd::TooManyHops);
        assert_eq!(chain.links.len(), SYMLINK_HOP_LIMIT + 1);
        Ok(())
    }

    #[test]
    fn a_symlinked_ancestor_is_not_followed_out_of_the_root() -> io::Result<()> {
        let tree = ScratchDir::new("set-ancestor");
        tree.dir("/real")?;
        // On the host this would lead to the real /etc; inside the root it must not.
        tree.link("/outside", "/etc")?;
        let mut source = SourceTree::new(tree.root());
        assert_eq!(source.lookup(b"/outside/passwd"), SourceLookup::Missing);
        let chain = resolve_symlinks(&mut source, b"/outside/passwd", &|_| false);
        assert_eq!(chain.links, vec![b"/outside".to_vec()]);
        assert_eq!(chain.end, ChainEnd::Dangling);
        Ok(())
    }
}
