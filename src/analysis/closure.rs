//! The deployment set from the used paths: which files of the mirrored tree must be copied to
//! a bare server for the traced service to run there. A strategy (in `strategy.rs`) chooses
//! the used paths from the dependency graph and hands them to [`set_of_used_paths`], which
//! adds the [`closure`] over parents and symlink chains in the real source tree
//! ([`SourceTree`]), applies the exclusions ([`NeverShipped`], device nodes become
//! requirements) and checks that each path still exists, asking the graph ([`PathFacts`]) what
//! the daemon saw of a path and who used it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use crate::analysis::paths::{KERNEL_TREES, is_within, normalize_mirror_path, parent_of};
use crate::analysis::source_tree::{ChainEnd, SourceLookup, SourceTree, resolve_symlinks};
use crate::record::{FileKind, LogHeader};

/// Why a path is in the set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    /// A selected process used it. Ranks above the others when several apply.
    Used,
    /// A symlink on the way to a used path, or where such a chain ends.
    SymlinkHop,
    /// A directory above a path in the set.
    Parent,
}

impl Reason {
    pub fn name(self) -> &'static str {
        match self {
            Reason::Used => "used",
            Reason::SymlinkHop => "symlink-hop",
            Reason::Parent => "parent",
        }
    }
}

/// Paths never shipped: the kernel's trees (/proc, /sys, /dev) and the mirror's own
/// mountpoint when it lies inside the mirrored tree (the mirror would contain itself).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NeverShipped {
    pub mountpoint_in_mirror: Option<Vec<u8>>,
}

impl NeverShipped {
    pub fn contains(&self, path: &[u8]) -> bool {
        KERNEL_TREES.iter().any(|tree| is_within(path, tree))
            || self
                .mountpoint_in_mirror
                .as_deref()
                .is_some_and(|mount| is_within(path, mount))
    }
}

/// Step 3: the used paths plus every symlink on the way to them and where those lead, plus
/// the parent directories of all of these. Never-shipped paths stay in the result (step 4
/// lists the device nodes among them) but pull in nothing: no chains, no parents.
pub fn closure(
    used: &BTreeSet<Vec<u8>>,
    tree: &mut SourceTree,
    never: &NeverShipped,
) -> BTreeMap<Vec<u8>, Reason> {
    let mut closed: BTreeMap<Vec<u8>, Reason> = BTreeMap::new();
    for path in used {
        add_with_reason(&mut closed, path, Reason::Used);
        if never.contains(path) {
            continue;
        }
        let chain = resolve_symlinks(tree, path, &|candidate| never.contains(candidate));
        for link in &chain.links {
            add_with_reason(&mut closed, link, Reason::SymlinkHop);
        }
        // Where a chain leads into a never-shipped tree is kept too: step 4 must see a link to
        // a device node (e.g. to /dev/null) to list the device.
        let ends_somewhere = matches!(chain.end, ChainEnd::Reached | ChainEnd::Excluded);
        if ends_somewhere && !chain.links.is_empty() {
            add_with_reason(&mut closed, &chain.resolved, Reason::SymlinkHop);
        }
    }
    let shipped: Vec<Vec<u8>> = closed
        .keys()
        .filter(|path| !never.contains(path))
        .cloned()
        .collect();
    for path in shipped {
        add_parents(&mut closed, &path);
    }
    closed
}

fn add_parents(closed: &mut BTreeMap<Vec<u8>, Reason>, path: &[u8]) {
    let mut current = path;
    while let Some(parent) = parent_of(current) {
        add_with_reason(closed, parent, Reason::Parent);
        current = parent;
    }
}

/// Keeps the strongest reason when a path is reached several ways.
fn add_with_reason(closed: &mut BTreeMap<Vec<u8>, Reason>, path: &[u8], reason: Reason) {
    closed
        .entry(path.to_vec())
        .and_modify(|known| *known = (*known).min(reason))
        .or_insert(reason);
}

/// The set: what to copy, what the target must provide, what was left out.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeploymentSet {
    /// Sorted by path bytes.
    pub entries: Vec<SetEntry>,
    /// Device nodes the service used: not copied (the target's kernel and udev make them) but
    /// required on the target. Sorted.
    pub required_devices: Vec<Vec<u8>>,
    /// Paths in the closure that no longer exist in the source tree (temporary files).
    pub dropped_missing: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetEntry {
    pub path: Vec<u8>,
    /// From lstat of the source tree, else as the daemon saw it.
    pub kind: FileKind,
    /// Bytes of a file or symlink, 0 otherwise.
    pub size: u64,
    pub reason: Reason,
    /// The selected processes that used the path successfully.
    pub users: Vec<SetUser>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetUser {
    /// The label of the process's run (empty: an unlabelled run).
    pub run: String,
    pub pid: u32,
    pub start: u64,
    pub exe: String,
    /// Successful uses, e.g. "open(read,exec)", "lookup", "rename(to)".
    pub ops: Vec<String>,
}

/// Where to look at the source tree and what to leave out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetOptions {
    /// The mirrored tree on this machine (the log's `source`, unless overridden).
    pub source: PathBuf,
    /// The mirror's mountpoint as a path inside the mirror, when it lies inside the source.
    pub mountpoint_in_mirror: Option<Vec<u8>>,
}

impl SetOptions {
    pub fn from_header(header: &LogHeader) -> SetOptions {
        SetOptions {
            source: PathBuf::from(&header.source),
            mountpoint_in_mirror: mountpoint_in_mirror(
                header.source.as_bytes(),
                header.mountpoint.as_bytes(),
            ),
        }
    }

    pub fn never_shipped(&self) -> NeverShipped {
        NeverShipped {
            mountpoint_in_mirror: self.mountpoint_in_mirror.clone(),
        }
    }
}

/// The mountpoint relative to the source, as an absolute mirror path. A mountpoint equal to
/// the source (mounted over it) is not inside the mirror: the mirror would be empty otherwise.
fn mountpoint_in_mirror(source: &[u8], mountpoint: &[u8]) -> Option<Vec<u8>> {
    let source = normalize_mirror_path(source);
    let mountpoint = normalize_mirror_path(mountpoint);
    if mountpoint == source || !is_within(&mountpoint, &source) {
        return None;
    }
    let inside = if source == b"/" {
        &mountpoint[..]
    } else {
        &mountpoint[source.len()..]
    };
    Some(inside.to_vec())
}

/// What steps 4 to 6 need to know about a path beyond the source tree: the kind the daemon
/// saw (for paths gone from the source) and who used it how: the dependency graph answers
/// ([`crate::analysis::strategy::GraphFacts`]).
pub trait PathFacts {
    /// The kind the daemon reported for `path`, `Unknown` if it never named it.
    fn seen_kind(&self, path: &[u8]) -> FileKind;
    /// The processes (of those that count) that used `path` successfully, and how.
    fn users(&self, path: &[u8]) -> Vec<SetUser>;
}

/// Steps 3 to 6 from the used paths of step 2, however they were chosen.
pub fn set_of_used_paths(
    used: &BTreeSet<Vec<u8>>,
    options: &SetOptions,
    facts: &dyn PathFacts,
) -> DeploymentSet {
    let never = options.never_shipped();
    let mut tree = SourceTree::new(&options.source);
    let closed = closure(used, &mut tree, &never);
    let (shipped, required_devices) = apply_exclusions(closed, &mut tree, &never, facts);
    let (entries, dropped_missing) = existing_entries(shipped, &mut tree, facts);
    DeploymentSet {
        entries,
        required_devices,
        dropped_missing,
    }
}

/// Step 4: removes never-shipped paths and device nodes; the device nodes become requirements.
pub fn apply_exclusions(
    closed: BTreeMap<Vec<u8>, Reason>,
    tree: &mut SourceTree,
    never: &NeverShipped,
    facts: &dyn PathFacts,
) -> (BTreeMap<Vec<u8>, Reason>, Vec<Vec<u8>>) {
    let mut shipped = BTreeMap::new();
    let mut devices = Vec::new();
    for (path, reason) in closed {
        let excluded = never.contains(&path);
        // Only /dev among the kernel trees holds device nodes worth asking the source about;
        // /proc describes this machine and the mountpoint leads back into the mirror.
        let may_be_device = !excluded || is_within(&path, b"/dev");
        if may_be_device && is_device(kind_of(&path, tree, facts)) {
            devices.push(path);
        } else if !excluded {
            shipped.insert(path, reason);
        }
    }
    (shipped, devices)
}

fn is_device(kind: FileKind) -> bool {
    matches!(kind, FileKind::CharDevice | FileKind::BlockDevice)
}

/// The kind from the source tree, else as the daemon reported it.
fn kind_of(path: &[u8], tree: &mut SourceTree, facts: &dyn PathFacts) -> FileKind {
    match tree.lookup(path) {
        SourceLookup::Present { kind, .. } => kind,
        SourceLookup::Missing | SourceLookup::Unreadable => facts.seen_kind(path),
    }
}

/// Steps 5 and 6: drops paths gone from the source tree (counted) and describes the rest, in
/// path order. A path whose existence cannot be checked is kept: leaving out a needed file is
/// worse than shipping one too many.
pub fn existing_entries(
    shipped: BTreeMap<Vec<u8>, Reason>,
    tree: &mut SourceTree,
    facts: &dyn PathFacts,
) -> (Vec<SetEntry>, usize) {
    let mut entries = Vec::new();
    let mut dropped_missing = 0;
    for (path, reason) in shipped {
        let (kind, size) = match tree.lookup(&path) {
            SourceLookup::Present { kind, size } => (kind, size),
            SourceLookup::Missing => {
                dropped_missing += 1;
                continue;
            }
            SourceLookup::Unreadable => (facts.seen_kind(&path), 0),
        };
        let users = facts.users(&path);
        entries.push(SetEntry {
            path,
            kind,
            size,
            reason,
            users,
        });
    }
    (entries, dropped_missing)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::graph::build::graph_from_records;
    use crate::analysis::select::{ProcessMatcher, Selector};
    use crate::analysis::strategy::Strategy;
    use crate::fixtures::*;
    use crate::log::LogContents;
    use crate::record::Op;
    use std::io;

    #[test]
    fn the_all_strategy_set_has_exactly_the_used_paths_and_their_closure() -> io::Result<()> {
        let tree = ScratchDir::new("set-exact");
        let (contents, options) = scenario(&tree)?;
        let set = real_set(&contents, &options, &[], Strategy::All).set;
        use Reason::*;
        let expected: Vec<(String, Reason)> = [
            ("/", Parent),
            ("/etc", Parent),
            ("/etc/app", Parent),
            ("/etc/app/config.toml", Used),
            ("/etc/hostname", SymlinkHop),
            ("/etc/localtime", Used),
            ("/opt", Parent),
            ("/opt/c", Parent),
            ("/opt/c/d", SymlinkHop),
            ("/opt/x", Parent),
            ("/opt/x/a", Used),
            ("/opt/x/b", SymlinkHop),
            ("/opt/x/escape", Used),
            ("/opt/x/loop", Used),
            ("/tmp", Parent),
            ("/usr", Parent),
            ("/usr/bin", Parent),
            ("/usr/bin/app", Used),
            ("/usr/share", Parent),
            ("/usr/share/zoneinfo", Parent),
            ("/usr/share/zoneinfo/UTC", SymlinkHop),
            ("/var", Parent),
            ("/var/lib", Parent),
            ("/var/lib/app", Parent),
            ("/var/lib/app/empty", Used),
            ("/var/lib/app/state", Used),
        ]
        .into_iter()
        .map(|(path, reason)| (path.to_string(), reason))
        .collect();
        assert_eq!(paths_with_reasons(&set), expected);
        Ok(())
    }

    #[test]
    fn failed_lookups_kernel_trees_and_mountpoint_are_never_shipped() -> io::Result<()> {
        let tree = ScratchDir::new("set-never");
        let (contents, options) = scenario(&tree)?;
        assert_eq!(
            options.mountpoint_in_mirror.as_deref(),
            Some(&b"/mnt/mirror"[..])
        );
        let set = real_set(&contents, &options, &[], Strategy::All).set;
        for absent in [
            "/etc/app/override.toml",
            "/proc",
            "/proc/cpuinfo",
            "/proc/self",
            "/dev",
            "/dev/null",
            "/mnt",
            "/mnt/mirror",
            "/mnt/mirror/inner",
            "/usr/lib/libunused.so",
        ] {
            assert!(
                entry(&set, absent).is_none(),
                "{absent} must not be shipped"
            );
        }
        Ok(())
    }

    #[test]
    fn used_device_nodes_become_requirements() -> io::Result<()> {
        let tree = ScratchDir::new("set-devices");
        let (contents, options) = scenario(&tree)?;
        let set = real_set(&contents, &options, &[], Strategy::All).set;
        assert_eq!(set.required_devices, vec![b"/dev/null".to_vec()]);
        Ok(())
    }

    #[test]
    fn deleted_and_renamed_away_files_are_dropped_and_counted() -> io::Result<()> {
        let tree = ScratchDir::new("set-dropped");
        let (contents, options) = scenario(&tree)?;
        let set = real_set(&contents, &options, &[], Strategy::All).set;
        assert!(entry(&set, "/tmp/app.tmp").is_none());
        assert!(entry(&set, "/var/lib/app/state.new").is_none());
        assert_eq!(set.dropped_missing, 2);
        let state = entry(&set, "/var/lib/app/state").map(|entry| entry.users.clone());
        let ops = state.and_then(|users| users.first().map(|user| user.ops.clone()));
        assert_eq!(ops, Some(vec!["rename(to)".to_string()]));
        Ok(())
    }

    #[test]
    fn users_carry_the_latest_process_details_and_successful_ops() -> io::Result<()> {
        let tree = ScratchDir::new("set-users");
        let (contents, options) = scenario(&tree)?;
        let set = real_set(&contents, &options, &[], Strategy::All).set;
        let users = entry(&set, "/usr/bin/app").map(|entry| entry.users.clone());
        let expected = SetUser {
            run: String::new(),
            pid: SERVICE.pid,
            start: SERVICE.start,
            exe: "/usr/bin/app".to_string(),
            ops: vec!["lookup".to_string(), "open(read,exec)".to_string()],
        };
        assert_eq!(users, Some(vec![expected]));
        let graph = graph_from_records(&contents.header, &contents.records);
        let argv: Vec<Vec<String>> = graph
            .images_of(SERVICE)
            .iter()
            .map(|&image| graph.processes[image].argv.clone())
            .collect();
        assert_eq!(argv, [vec!["app".to_string(), "--serve".to_string()]]);
        Ok(())
    }

    #[test]
    fn device_nodes_found_in_the_source_are_requirements_wherever_they_are() -> io::Result<()> {
        let tree = ScratchDir::new("set-mknod");
        tree.dir("/var/lib/app")?;
        tree.dir("/dev")?;
        tree.dir("/etc")?;
        if !tree.char_device("/var/lib/app/null")? || !tree.char_device("/dev/zero")? {
            eprintln!("skipped: mknod needs CAP_MKNOD");
            return Ok(());
        }
        tree.link("/etc/zero", "../dev/zero")?;
        // The daemon did not say what these were: only the source tree knows.
        let records = vec![
            used(SERVICE, Op::Open, "/var/lib/app/null", FileKind::Unknown),
            used(SERVICE, Op::Readlink, "/etc/zero", FileKind::Unknown),
        ];
        let contents = LogContents {
            header: header(tree.root(), "/mnt/elsewhere"),
            records,
            truncated_at: None,
        };
        let options = SetOptions {
            source: tree.root().to_path_buf(),
            mountpoint_in_mirror: None,
        };
        let set = real_set(&contents, &options, &[], Strategy::All).set;
        let devices = vec![b"/dev/zero".to_vec(), b"/var/lib/app/null".to_vec()];
        assert_eq!(set.required_devices, devices);
        let paths: Vec<String> = paths_with_reasons(&set)
            .into_iter()
            .map(|(path, _)| path)
            .collect();
        assert_eq!(
            paths,
            ["/", "/etc", "/etc/zero", "/var", "/var/lib", "/var/lib/app"]
        );
        Ok(())
    }

    #[test]
    fn the_graph_keeps_paths_whose_every_access_failed_as_missing() {
        let records = scenario_records();
        let graph = graph_from_records(&header("/", "/mnt/elsewhere"), &records);
        let missing: Vec<&[u8]> = graph
            .files
            .iter()
            .filter(|file| !file.succeeded)
            .map(|file| file.path.as_slice())
            .collect();
        assert_eq!(missing, vec![&b"/etc/app/override.toml"[..]]);
        let file = graph.file(b"/etc/app/override.toml");
        let used = file.is_some_and(|file| graph.edges_of_file(file).any(|edge| edge.succeeded()));
        assert!(!used);
    }

    #[test]
    fn process_selection_limits_the_used_paths() -> io::Result<()> {
        let tree = ScratchDir::new("set-select");
        let (contents, options) = scenario(&tree)?;
        let helper = Selector {
            matcher: ProcessMatcher::Pid(HELPER.pid),
            children: false,
        };
        let set = real_set(&contents, &options, &[helper], Strategy::Strict).set;
        let paths: Vec<String> = paths_with_reasons(&set)
            .into_iter()
            .map(|(path, _)| path)
            .collect();
        assert_eq!(
            paths,
            [
                "/",
                "/etc",
                "/etc/hostname",
                "/opt",
                "/opt/x",
                "/opt/x/escape",
                "/opt/x/loop"
            ]
        );
        assert!(set.required_devices.is_empty());
        Ok(())
    }

    #[test]
    fn mountpoint_in_mirror_is_relative_to_the_source() {
        let inside = |source: &str, mountpoint: &str| {
            SetOptions::from_header(&header(source, mountpoint)).mountpoint_in_mirror
        };
        assert_eq!(
            inside("/", "/mnt/depsetfs"),
            Some(b"/mnt/depsetfs".to_vec())
        );
        assert_eq!(
            inside("/srv/root/", "/srv/root/mnt/m"),
            Some(b"/mnt/m".to_vec())
        );
        assert_eq!(inside("/srv/root", "/srv/rootfs/m"), None);
        assert_eq!(inside("/srv/root", "/srv/root"), None);
    }
}
