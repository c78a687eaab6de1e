//! The deployment set: which files of the mirrored tree must be copied to a bare server for the
//! traced service to run there. This module owns the first, "sanity" set (every path any
//! process used successfully, with the parents, symlink chains and looked-up directories that
//! make those paths reachable, minus what is never shipped), built in reusable steps: a
//! [`UsageIndex`] of who used which path how, a process selection ([`UsageIndex::used_paths`]),
//! the [`closure`] over parents and symlink chains in the real source tree ([`SourceTree`]),
//! the exclusions ([`NeverShipped`]) and the check that each path still exists. Later strategies
//! (strict, system, exec, in `strategy.rs`) choose the used paths from the dependency graph and
//! hand them to [`set_of_used_paths`], which runs the same closure, exclusions and checks, with
//! the graph answering [`PathFacts`] instead of the usage index.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::event::{Access, FileKind, LogHeader, Op, ProcessInfo, Record, TimeNs, intent};
use crate::log::LogContents;

/// Symlinks followed in one resolution before giving up, as the kernel's `MAXSYMLINKS`.
pub const SYMLINK_HOP_LIMIT: usize = 40;

/// Trees of the mirror that are never shipped: the kernel provides them on the target.
pub const KERNEL_TREES: [&[u8]; 3] = [b"/proc", b"/sys", b"/dev"];

/// A process as the log tells them apart: pids are reused, (pid, start time) is not.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProcessId {
    pub pid: u32,
    /// Clock ticks since boot.
    pub start: u64,
}

/// What distinguishes one kind of use of a path by one process from another.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UseKind {
    pub op: Op,
    /// [`intent`] bits as recorded.
    pub intent: u32,
    /// 0 on success, else the errno the process got.
    pub errno: i32,
    /// The path was the second path of the operation (the new name of a rename or link, the
    /// destination of copy_file_range).
    pub as_target: bool,
}

/// Totals over all records of one [`UseKind`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UseTotals {
    pub count: u64,
    pub bytes: u64,
    pub first_ns: TimeNs,
    pub last_ns: TimeNs,
}

/// Everything the log says about one path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathUsage {
    /// The file kind the daemon reported, preferring successful accesses.
    pub kind: FileKind,
    /// Whether any access by any process succeeded; paths where none did are "missing".
    pub succeeded: bool,
    pub count: u64,
    pub first_ns: TimeNs,
    pub last_ns: TimeNs,
    pub uses: BTreeMap<ProcessId, BTreeMap<UseKind, UseTotals>>,
}

/// Step 1: per path, which processes used it and how; per process, what /proc said about it.
#[derive(Clone, Debug, Default)]
pub struct UsageIndex {
    /// Keyed by normalized absolute path in the mirror.
    pub paths: BTreeMap<Vec<u8>, PathUsage>,
    /// The latest [`ProcessInfo`] of each process.
    pub processes: BTreeMap<ProcessId, ProcessInfo>,
}

impl UsageIndex {
    pub fn from_records(records: &[Record]) -> UsageIndex {
        let mut index = UsageIndex::default();
        for record in records {
            match record {
                Record::Access(access) => index.add_access(access),
                Record::Process(info) => index.add_process(info),
                Record::Fork(_)
                | Record::Exec(_)
                | Record::Exit(_)
                | Record::Lost(_)
                | Record::Net(_)
                | Record::End(_) => {}
            }
        }
        index
    }

    fn add_access(&mut self, access: &Access) {
        self.add_use(&access.path, access, false);
        if let Some(target) = second_path(access) {
            self.add_use(target, access, true);
        }
    }

    fn add_use(&mut self, raw_path: &[u8], access: &Access, as_target: bool) {
        let process = ProcessId {
            pid: access.pid,
            start: access.start,
        };
        let kind = UseKind {
            op: access.op,
            intent: access.intent,
            errno: access.errno,
            as_target,
        };
        let usage = self
            .paths
            .entry(normalize_mirror_path(raw_path))
            .or_insert_with(|| PathUsage {
                kind: FileKind::Unknown,
                succeeded: false,
                count: 0,
                first_ns: access.first_ns,
                last_ns: access.last_ns,
                uses: BTreeMap::new(),
            });
        // A failed access may report no kind or a stale one; a successful one wins.
        if access.kind != FileKind::Unknown && (access.succeeded() || !usage.succeeded) {
            usage.kind = access.kind;
        }
        usage.succeeded |= access.succeeded();
        usage.count += access.count;
        usage.first_ns = usage.first_ns.min(access.first_ns);
        usage.last_ns = usage.last_ns.max(access.last_ns);
        let totals = usage
            .uses
            .entry(process)
            .or_default()
            .entry(kind)
            .or_insert(UseTotals {
                count: 0,
                bytes: 0,
                first_ns: access.first_ns,
                last_ns: access.last_ns,
            });
        totals.count += access.count;
        totals.bytes += access.bytes;
        totals.first_ns = totals.first_ns.min(access.first_ns);
        totals.last_ns = totals.last_ns.max(access.last_ns);
    }

    fn add_process(&mut self, info: &ProcessInfo) {
        let process = ProcessId {
            pid: info.pid,
            start: info.start,
        };
        // Later records (e.g. after an exec) describe the process better; ties go to log order.
        let replace = self
            .processes
            .get(&process)
            .is_none_or(|known| known.seen_ns <= info.seen_ns);
        if replace {
            self.processes.insert(process, info.clone());
        }
    }

    /// Paths that some access reached but none succeeded on (ENOENT lookups and the like):
    /// kept to explain what a service looked for; never shipped.
    pub fn missing_paths(&self) -> impl Iterator<Item = &[u8]> {
        self.paths
            .iter()
            .filter(|(_, usage)| !usage.succeeded)
            .map(|(path, _)| path.as_slice())
    }

    /// Step 2: the paths a selected process accessed successfully.
    pub fn used_paths(&self, selected: &dyn Fn(ProcessId) -> bool) -> BTreeSet<Vec<u8>> {
        self.paths
            .iter()
            .filter(|(_, usage)| !successful_users(usage, selected).is_empty())
            .map(|(path, _)| path.clone())
            .collect()
    }

    /// The executable of a process as text, empty when unknown.
    pub fn exe_of(&self, process: ProcessId) -> String {
        self.processes
            .get(&process)
            .map(|info| String::from_utf8_lossy(&info.exe).into_owned())
            .unwrap_or_default()
    }
}

/// The second path of an access when it names a file of the tree (not symlink's target text).
fn second_path(access: &Access) -> Option<&[u8]> {
    match access.op {
        Op::Rename | Op::Link | Op::CopyFileRange => access.target.as_deref(),
        _ => None,
    }
}

/// The selected processes with the kinds of use that succeeded on a path.
fn successful_users<'a>(
    usage: &'a PathUsage,
    selected: &dyn Fn(ProcessId) -> bool,
) -> Vec<(ProcessId, Vec<&'a UseKind>)> {
    let mut users = Vec::new();
    for (process, kinds) in &usage.uses {
        if !selected(*process) {
            continue;
        }
        let succeeded: Vec<&UseKind> = kinds.keys().filter(|kind| kind.errno == 0).collect();
        if !succeeded.is_empty() {
            users.push((*process, succeeded));
        }
    }
    users
}

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

fn join_components(components: &[&[u8]]) -> Vec<u8> {
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

/// The sanity set: every path any process used successfully, with its closure.
pub fn sanity_set(contents: &LogContents, options: &SetOptions) -> DeploymentSet {
    let index = UsageIndex::from_records(&contents.records);
    deployment_set(&index, options, &|_| true)
}

/// Steps 2 to 6 for the processes `selected` accepts.
pub fn deployment_set(
    index: &UsageIndex,
    options: &SetOptions,
    selected: &dyn Fn(ProcessId) -> bool,
) -> DeploymentSet {
    let used = index.used_paths(selected);
    let facts = IndexFacts { index, selected };
    set_of_used_paths(&used, options, &facts)
}

/// What steps 4 to 6 need to know about a path beyond the source tree: the kind the daemon
/// saw (for paths gone from the source) and who used it how. The usage index answers for the
/// sanity set, the dependency graph for the other strategies.
pub trait PathFacts {
    /// The kind the daemon reported for `path`, `Unknown` if it never named it.
    fn seen_kind(&self, path: &[u8]) -> FileKind;
    /// The processes (of those that count) that used `path` successfully, and how.
    fn users(&self, path: &[u8]) -> Vec<SetUser>;
}

struct IndexFacts<'a> {
    index: &'a UsageIndex,
    selected: &'a dyn Fn(ProcessId) -> bool,
}

impl PathFacts for IndexFacts<'_> {
    fn seen_kind(&self, path: &[u8]) -> FileKind {
        seen_kind(path, self.index)
    }

    fn users(&self, path: &[u8]) -> Vec<SetUser> {
        set_users(path, self.index, self.selected)
    }
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

fn seen_kind(path: &[u8], index: &UsageIndex) -> FileKind {
    index
        .paths
        .get(path)
        .map(|usage| usage.kind)
        .unwrap_or_default()
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

fn set_users(
    path: &[u8],
    index: &UsageIndex,
    selected: &dyn Fn(ProcessId) -> bool,
) -> Vec<SetUser> {
    let Some(usage) = index.paths.get(path) else {
        return Vec::new();
    };
    successful_users(usage, selected)
        .into_iter()
        .map(|(process, kinds)| SetUser {
            pid: process.pid,
            start: process.start,
            exe: index.exe_of(process),
            ops: describe_uses(&kinds),
        })
        .collect()
}

/// Use labels in op order without repeats.
fn describe_uses(kinds: &[&UseKind]) -> Vec<String> {
    let mut labels: Vec<String> = Vec::new();
    for kind in kinds {
        let label = describe_use(kind);
        if !labels.contains(&label) {
            labels.push(label);
        }
    }
    labels
}

/// "open(read,exec)", "lookup", "rename(to)". Intent is shown for opens only: read and
/// write records repeat their open's intent.
pub fn describe_use(kind: &UseKind) -> String {
    let mut details: Vec<&str> = Vec::new();
    if kind.as_target {
        details.push("to");
    }
    if matches!(kind.op, Op::Open | Op::Create | Op::Opendir) {
        details.extend(intent::names(kind.intent));
    }
    if details.is_empty() {
        kind.op.name().to_string()
    } else {
        format!("{}({})", kind.op.name(), details.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{LOG_FORMAT_VERSION, LOG_MAGIC};
    use std::fs;
    use std::os::unix::fs::symlink;

    const SERVICE: ProcessId = ProcessId {
        pid: 100,
        start: 5000,
    };
    const HELPER: ProcessId = ProcessId {
        pid: 200,
        start: 6000,
    };

    /// A source tree under the system temp directory, removed when dropped.
    struct ScratchTree {
        root: PathBuf,
    }

    impl ScratchTree {
        fn new(name: &str) -> io::Result<ScratchTree> {
            let root =
                std::env::temp_dir().join(format!("depsetfs-set-{}-{name}", std::process::id()));
            let _ = fs::remove_dir_all(&root);
            fs::create_dir_all(&root)?;
            Ok(ScratchTree { root })
        }

        fn file(&self, path: &str, content: &str) -> io::Result<()> {
            let host = self.root.join(path.trim_start_matches('/'));
            if let Some(parent) = host.parent() {
                fs::create_dir_all(parent)?;
            }
            fs::write(host, content)
        }

        fn dir(&self, path: &str) -> io::Result<()> {
            fs::create_dir_all(self.root.join(path.trim_start_matches('/')))
        }

        fn link(&self, path: &str, target: &str) -> io::Result<()> {
            symlink(target, self.root.join(path.trim_start_matches('/')))
        }
    }

    impl ScratchTree {
        /// A node like /dev/null; false when this user may not make device nodes.
        fn char_device(&self, path: &str) -> io::Result<bool> {
            let host = self.root.join(path.trim_start_matches('/'));
            let host = std::ffi::CString::new(host.into_os_string().into_encoded_bytes())?;
            let mode = libc::S_IFCHR | 0o666;
            // SAFETY: `host` is a NUL-terminated path that outlives the call.
            let made = unsafe { libc::mknod(host.as_ptr(), mode, libc::makedev(1, 3)) };
            Ok(made == 0)
        }
    }

    impl Drop for ScratchTree {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.root);
        }
    }

    fn header(source: &str, mountpoint: &str) -> LogHeader {
        LogHeader {
            magic: LOG_MAGIC.to_string(),
            version: LOG_FORMAT_VERSION,
            source: source.to_string(),
            mountpoint: mountpoint.to_string(),
            host: "test".to_string(),
            kernel: "6.0".to_string(),
            started_ns: 1,
            boot_time_ns: 0,
            clock_ticks: 100,
            fidelity: "full".to_string(),
            network_recorded: false,
            command: None,
        }
    }

    /// A successful record, as the daemon would write it once merged.
    fn access(process: ProcessId, op: Op, path: &str, kind: FileKind) -> Access {
        Access {
            pid: process.pid,
            tid: process.pid,
            start: process.start,
            op,
            path: path.as_bytes().to_vec(),
            target: None,
            errno: 0,
            intent: 0,
            kind,
            count: 1,
            bytes: 0,
            first_ns: 10,
            last_ns: 20,
        }
    }

    fn used(process: ProcessId, op: Op, path: &str, kind: FileKind) -> Record {
        Record::Access(access(process, op, path, kind))
    }

    fn opened(process: ProcessId, op: Op, path: &str, bits: u32, kind: FileKind) -> Record {
        let intent = bits;
        Record::Access(Access {
            intent,
            ..access(process, op, path, kind)
        })
    }

    fn not_found(process: ProcessId, path: &str) -> Record {
        let errno = libc::ENOENT;
        Record::Access(Access {
            errno,
            ..access(process, Op::Lookup, path, FileKind::Unknown)
        })
    }

    fn renamed(process: ProcessId, from: &str, to: &str) -> Record {
        let target = Some(to.as_bytes().to_vec());
        Record::Access(Access {
            target,
            ..access(process, Op::Rename, from, FileKind::File)
        })
    }

    fn process(id: ProcessId, exe: &str, argv: &[&str], seen_ns: TimeNs) -> Record {
        Record::Process(ProcessInfo {
            pid: id.pid,
            start: id.start,
            ppid: 1,
            exe: exe.as_bytes().to_vec(),
            argv: argv.iter().map(|arg| arg.to_string()).collect(),
            uid: 0,
            gid: 0,
            seen_ns,
        })
    }

    /// The tree of the scenario: what exists in the source when the set is computed.
    fn build_source(tree: &ScratchTree) -> io::Result<()> {
        tree.file("/usr/bin/app", "#!binary")?;
        tree.file("/usr/lib/libunused.so", "never used")?;
        tree.file("/etc/app/config.toml", "port = 80\n")?;
        tree.file("/etc/hostname", "fixture\n")?;
        tree.file("/usr/share/zoneinfo/UTC", "TZif2")?;
        tree.link("/etc/localtime", "/usr/share/zoneinfo/UTC")?;
        tree.file("/opt/c/d", "chain end")?;
        tree.dir("/opt/x")?;
        tree.link("/opt/x/a", "b")?;
        tree.link("/opt/x/b", "../c/d")?;
        tree.link("/opt/x/escape", "../../../../../../etc/hostname")?;
        tree.link("/opt/x/loop", "loop")?;
        tree.dir("/var/lib/app/empty")?;
        tree.file("/var/lib/app/state", "renamed into place")?;
        tree.dir("/tmp")?;
        tree.file("/mnt/mirror/inner", "the mirror inside itself")?;
        Ok(())
    }

    /// What the service did: uses, a failed lookup, a temp file, a rename, kernel trees.
    fn scenario_records() -> Vec<Record> {
        use FileKind::*;
        use intent::{CREATE, EXEC, READ, WRITE};
        vec![
            process(SERVICE, "/usr/bin/app", &["app"], 1),
            process(SERVICE, "/usr/bin/app", &["app", "--serve"], 2),
            process(HELPER, "/usr/bin/helper", &["helper"], 1),
            used(SERVICE, Op::Lookup, "/usr/bin/app", File),
            opened(SERVICE, Op::Open, "/usr/bin/app", READ | EXEC, File),
            opened(SERVICE, Op::Open, "/etc/app/config.toml", READ, File),
            not_found(SERVICE, "/etc/app/override.toml"),
            used(SERVICE, Op::Readlink, "/etc/localtime", Symlink),
            used(SERVICE, Op::Lookup, "/opt/x/a", Symlink),
            used(HELPER, Op::Lookup, "/opt/x/escape", Symlink),
            used(HELPER, Op::Lookup, "/opt/x/loop", Symlink),
            used(SERVICE, Op::Lookup, "/var/lib/app/empty", Dir),
            opened(SERVICE, Op::Create, "/tmp/app.tmp", WRITE | CREATE, File),
            used(SERVICE, Op::Write, "/tmp/app.tmp", File),
            used(SERVICE, Op::Unlink, "/tmp/app.tmp", File),
            opened(SERVICE, Op::Create, "/var/lib/app/state.new", WRITE, File),
            renamed(SERVICE, "/var/lib/app/state.new", "/var/lib/app/state"),
            opened(SERVICE, Op::Open, "/proc/cpuinfo", READ, File),
            used(SERVICE, Op::Getattr, "/proc/self", Symlink),
            opened(SERVICE, Op::Open, "/dev/null", READ | WRITE, CharDevice),
            used(SERVICE, Op::Lookup, "/mnt/mirror/inner", File),
        ]
    }

    fn scenario(tree: &ScratchTree) -> io::Result<(LogContents, SetOptions)> {
        build_source(tree)?;
        let source = tree.root.to_string_lossy().into_owned();
        let mountpoint = format!("{source}/mnt/mirror");
        let contents = LogContents {
            header: header(&source, &mountpoint),
            records: scenario_records(),
            truncated_at: None,
        };
        let options = SetOptions::from_header(&contents.header);
        Ok((contents, options))
    }

    fn paths_with_reasons(set: &DeploymentSet) -> Vec<(String, Reason)> {
        set.entries
            .iter()
            .map(|entry| {
                (
                    String::from_utf8_lossy(&entry.path).into_owned(),
                    entry.reason,
                )
            })
            .collect()
    }

    fn entry<'a>(set: &'a DeploymentSet, path: &str) -> Option<&'a SetEntry> {
        set.entries
            .iter()
            .find(|entry| entry.path == path.as_bytes())
    }

    #[test]
    fn sanity_set_has_exactly_the_used_paths_and_their_closure() -> io::Result<()> {
        let tree = ScratchTree::new("exact")?;
        let (contents, options) = scenario(&tree)?;
        let set = sanity_set(&contents, &options);
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
        let tree = ScratchTree::new("never")?;
        let (contents, options) = scenario(&tree)?;
        assert_eq!(
            options.mountpoint_in_mirror.as_deref(),
            Some(&b"/mnt/mirror"[..])
        );
        let set = sanity_set(&contents, &options);
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
        let tree = ScratchTree::new("devices")?;
        let (contents, options) = scenario(&tree)?;
        let set = sanity_set(&contents, &options);
        assert_eq!(set.required_devices, vec![b"/dev/null".to_vec()]);
        Ok(())
    }

    #[test]
    fn deleted_and_renamed_away_files_are_dropped_and_counted() -> io::Result<()> {
        let tree = ScratchTree::new("dropped")?;
        let (contents, options) = scenario(&tree)?;
        let set = sanity_set(&contents, &options);
        assert!(entry(&set, "/tmp/app.tmp").is_none());
        assert!(entry(&set, "/var/lib/app/state.new").is_none());
        assert_eq!(set.dropped_missing, 2);
        let state = entry(&set, "/var/lib/app/state").map(|entry| entry.users.clone());
        let ops = state.and_then(|users| users.first().map(|user| user.ops.clone()));
        assert_eq!(ops, Some(vec!["rename(to)".to_string()]));
        Ok(())
    }

    #[test]
    fn symlinks_resolve_inside_the_source_root() -> io::Result<()> {
        let tree = ScratchTree::new("inside")?;
        build_source(&tree)?;
        let mut source = SourceTree::new(&tree.root);
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
        let tree = ScratchTree::new("loop")?;
        build_source(&tree)?;
        let mut source = SourceTree::new(&tree.root);
        let chain = resolve_symlinks(&mut source, b"/opt/x/loop", &|_| false);
        assert_eq!(chain.end, ChainEnd::TooManyHops);
        assert_eq!(chain.links.len(), SYMLINK_HOP_LIMIT + 1);
        Ok(())
    }

    #[test]
    fn a_symlinked_ancestor_is_not_followed_out_of_the_root() -> io::Result<()> {
        let tree = ScratchTree::new("ancestor")?;
        tree.dir("/real")?;
        // On the host this would lead to the real /etc; inside the root it must not.
        tree.link("/outside", "/etc")?;
        let mut source = SourceTree::new(&tree.root);
        assert_eq!(source.lookup(b"/outside/passwd"), SourceLookup::Missing);
        let chain = resolve_symlinks(&mut source, b"/outside/passwd", &|_| false);
        assert_eq!(chain.links, vec![b"/outside".to_vec()]);
        assert_eq!(chain.end, ChainEnd::Dangling);
        Ok(())
    }

    #[test]
    fn users_carry_the_latest_process_details_and_successful_ops() -> io::Result<()> {
        let tree = ScratchTree::new("users")?;
        let (contents, options) = scenario(&tree)?;
        let set = sanity_set(&contents, &options);
        let users = entry(&set, "/usr/bin/app").map(|entry| entry.users.clone());
        let expected = SetUser {
            pid: SERVICE.pid,
            start: SERVICE.start,
            exe: "/usr/bin/app".to_string(),
            ops: vec!["lookup".to_string(), "open(read,exec)".to_string()],
        };
        assert_eq!(users, Some(vec![expected]));
        let index = UsageIndex::from_records(&contents.records);
        let argv = index.processes.get(&SERVICE).map(|info| info.argv.clone());
        assert_eq!(argv, Some(vec!["app".to_string(), "--serve".to_string()]));
        Ok(())
    }

    #[test]
    fn device_nodes_found_in_the_source_are_requirements_wherever_they_are() -> io::Result<()> {
        let tree = ScratchTree::new("mknod")?;
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
        let index = UsageIndex::from_records(&records);
        let options = SetOptions {
            source: tree.root.clone(),
            mountpoint_in_mirror: None,
        };
        let set = deployment_set(&index, &options, &|_| true);
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
    fn index_keeps_paths_whose_every_access_failed_as_missing() {
        let index = UsageIndex::from_records(&scenario_records());
        let missing: Vec<&[u8]> = index.missing_paths().collect();
        assert_eq!(missing, vec![&b"/etc/app/override.toml"[..]]);
        let used = index.used_paths(&|_| true);
        assert!(!used.contains(b"/etc/app/override.toml".as_slice()));
    }

    #[test]
    fn process_selection_limits_the_used_paths() -> io::Result<()> {
        let tree = ScratchTree::new("select")?;
        let (contents, options) = scenario(&tree)?;
        let index = UsageIndex::from_records(&contents.records);
        let set = deployment_set(&index, &options, &|process| process == HELPER);
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
