//! Mirror paths as the analysis compares them: normalized (absolute, single slashes, no `.`
//! or `..`), their parents, whether one lies in a tree, and the kernel's trees that are never
//! shipped. Every side that takes a path from a log or a command line goes through here.

/// Symlinks followed in one resolution before giving up, as the kernel's `MAXSYMLINKS`.
pub const SYMLINK_HOP_LIMIT: usize = 40;

/// Trees of the mirror that are never shipped: the kernel provides them on the target.
pub const KERNEL_TREES: [&[u8]; 3] = [b"/proc", b"/sys", b"/dev"];

/// A path made absolute with single slashes and no `.`/`..` components, as the daemon's paths
/// are built from directory entries (`..` can only undo a name, never follow a symlink).
pub fn normalize_mirror_path(path: &[u8]) -> Vec<u8> {
    let mut components: Vec<&[u8]> = Vec::new();
    push_components(&mut components, path);
    join_components(&components)
}

fn push_components<'a>(components: &mut Vec<&'a [u8]>, path: &'a [u8]) {
    for name in path.split(|&byte| byte == b'/') {
        match name {
            b"" | b"." => {}
            b".." => {
                components.pop();
            }
            _ => components.push(name),
        }
    }
}

pub(crate) fn join_components(components: &[&[u8]]) -> Vec<u8> {
    if components.is_empty() {
        return b"/".to_vec();
    }
    let mut path = Vec::new();
    for name in components {
        path.push(b'/');
        path.extend_from_slice(name);
    }
    path
}

/// The parent of a normalized path; `None` for `/`.
pub fn parent_of(path: &[u8]) -> Option<&[u8]> {
    if path == b"/" {
        return None;
    }
    match path.iter().rposition(|&byte| byte == b'/') {
        Some(0) => Some(b"/"),
        Some(slash) => Some(&path[..slash]),
        None => None,
    }
}

/// Whether `path` is `tree` or lies under it (both normalized).
pub fn is_within(path: &[u8], tree: &[u8]) -> bool {
    if tree == b"/" {
        return true;
    }
    path.strip_prefix(tree)
        .is_some_and(|rest| rest.is_empty() || rest[0] == b'/')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_paths_are_normalized() {
        assert_eq!(normalize_mirror_path(b"//usr/./lib/../bin/"), b"/usr/bin");
        assert_eq!(normalize_mirror_path(b"/../.."), b"/");
        assert_eq!(parent_of(b"/usr/bin"), Some(&b"/usr"[..]));
        assert_eq!(parent_of(b"/usr"), Some(&b"/"[..]));
        assert_eq!(parent_of(b"/"), None);
        assert!(is_within(b"/dev/null", b"/dev"));
        assert!(is_within(b"/dev", b"/dev"));
        assert!(!is_within(b"/devices", b"/dev"));
    }
}
