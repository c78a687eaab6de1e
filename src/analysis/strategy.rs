//! The strategies that turn a graph and a selection into a deployment set: which process
//! images are *needed*, which of their files are *used*, and the policies on top. `all` is the
//! sanity set (every process); `strict` follows every dependency from the selected images (a
//! process depends on its fork parent, the image it was exec'd from, the servers it connected
//! to and the writers of files it used, if they wrote before it used them); `system` adds the
//! system set-up processes; `exec` adds the sub-processes of every needed image except the
//! children of exec-tolerant parents. Policies: noise (files whose writers are not followed),
//! outputs (files only written are left out, their directories kept), executables (a program
//! the needed images only looked up, while an image that is not needed ran it, is not shipped
//! half: without its libraries it would break on arrival), stubs (binaries exec'd by a needed
//! parent but not needed themselves, and those only looked up), include/exclude globs. The closure over
//! parents and symlink chains, the never-shipped trees and the existence check are
//! [`crate::analysis::closure`]'s, shared by every strategy.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;

use crate::analysis::closure::{DeploymentSet, PathFacts, SetOptions, SetUser, set_of_used_paths};
use crate::analysis::graph::uses::{ProcessId, UseKind, describe_use};
use crate::analysis::graph::{EndpointIx, FileIx, Graph, ProcessIx, ProcessLink};
use crate::analysis::paths::parent_of;
use crate::analysis::rules::{PathGlob, Rules, first_match, matches_process};
use crate::analysis::select::Selection;
use crate::record::{FileKind, TimeNs};

/// The strategies, in the seed's order (the order of `depsetfs report`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// Every file any process used (the sanity set).
    All,
    /// Every dependency from the selected processes, nothing else.
    Strict,
    /// strict plus the system set-up processes and processes without a binary.
    System,
    /// strict plus every sub-process of a needed process, except children of exec-tolerant
    /// parents.
    Exec,
}

impl Strategy {
    pub const ALL: [Strategy; 4] = [
        Strategy::All,
        Strategy::Strict,
        Strategy::System,
        Strategy::Exec,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Strategy::All => "all",
            Strategy::Strict => "strict",
            Strategy::System => "system",
            Strategy::Exec => "exec",
        }
    }
}

/// Why an image is needed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NeedReason {
    /// Strategy `all`.
    Everything,
    /// Chosen by a selector (its description).
    Selected(String),
    /// Matched a system set-up pattern, has no binary, or descends from such a process.
    SystemSetup(String),
    /// Forked the needed image.
    ForkParentOf(ProcessIx),
    /// Was exec'd into the needed image.
    ExecPredecessorOf(ProcessIx),
    /// Bound an endpoint the needed image connected to.
    ServerOf {
        client: ProcessIx,
        endpoint: EndpointIx,
    },
    /// Wrote (created, renamed into, ...) a file the needed image used afterwards.
    WroteFileUsedBy { file: FileIx, user: ProcessIx },
    /// A sub-process of a needed image (strategy `exec`).
    SubProcessOf(ProcessIx),
}

impl NeedReason {
    /// The needed image this one was reached from, if any.
    pub fn from_process(&self) -> Option<ProcessIx> {
        match self {
            NeedReason::ForkParentOf(process)
            | NeedReason::ExecPredecessorOf(process)
            | NeedReason::SubProcessOf(process) => Some(*process),
            NeedReason::ServerOf { client, .. } => Some(*client),
            NeedReason::WroteFileUsedBy { user, .. } => Some(*user),
            NeedReason::Everything | NeedReason::Selected(_) | NeedReason::SystemSetup(_) => None,
        }
    }

    pub fn describe(&self, graph: &Graph) -> String {
        match self {
            NeedReason::Everything => "strategy all: every process".to_string(),
            NeedReason::Selected(how) => format!("selected ({how})"),
            NeedReason::SystemSetup(how) => format!("system set-up ({how})"),
            NeedReason::ForkParentOf(child) => {
                format!("forked {}", graph.describe_process(*child))
            }
            NeedReason::ExecPredecessorOf(next) => {
                format!("exec'd into {}", graph.describe_process(*next))
            }
            NeedReason::ServerOf { client, endpoint } => format!(
                "bound {} that {} connected to",
                graph.endpoints[*endpoint].key.describe(),
                graph.describe_process(*client)
            ),
            NeedReason::WroteFileUsedBy { file, user } => format!(
                "wrote {} before {} used it",
                graph.path_text(*file),
                graph.describe_process(*user)
            ),
            NeedReason::SubProcessOf(parent) => {
                format!("sub-process of {}", graph.describe_process(*parent))
            }
        }
    }
}

/// The needed images and why each one is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Needed {
    pub why: Vec<Option<NeedReason>>,
    /// The set of one host of a merged log (`--host`): only these images' uses are the set's
    /// (`contains`, `processes`), while `why` and [`Needed::chain_to`] still follow the
    /// needs across hosts. `None`: every needed image.
    pub scope: Option<Vec<bool>>,
}

impl Needed {
    pub fn contains(&self, process: ProcessIx) -> bool {
        self.why.get(process).is_some_and(Option::is_some) && self.in_scope(process)
    }

    pub fn processes(&self) -> impl Iterator<Item = ProcessIx> + '_ {
        self.why
            .iter()
            .enumerate()
            .filter(|(process, why)| why.is_some() && self.in_scope(*process))
            .map(|(process, _)| process)
    }

    fn in_scope(&self, process: ProcessIx) -> bool {
        self.scope
            .as_ref()
            .is_none_or(|scope| scope.get(process).copied().unwrap_or(false))
    }

    /// The chain of images from a root (selected, system, everything) to `process`, root
    /// first, each with why it is needed.
    pub fn chain_to(&self, process: ProcessIx) -> Vec<(ProcessIx, &NeedReason)> {
        let mut chain = Vec::new();
        let mut current = Some(process);
        let mut seen = BTreeSet::new();
        while let Some(image) = current {
            let Some(reason) = self.why.get(image).and_then(Option::as_ref) else {
                break;
            };
            if !seen.insert(image) {
                break;
            }
            chain.push((image, reason));
            current = reason.from_process();
        }
        chain.reverse();
        chain
    }
}

/// A binary a needed parent exec'd without needing it, or one that needed images only looked
/// up while an image that is not needed ran it: ship a stub that exits 0 in its place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stub {
    pub path: Vec<u8>,
    /// The image that ran the binary.
    pub image: ProcessIx,
    /// The needed image that started it (or, for [`StubOrigin::LookedUp`], looked it up).
    pub launched_by: ProcessIx,
    pub origin: StubOrigin,
}

/// How a needed image came to want a binary it does not need whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StubOrigin {
    /// It started the image that ran it (exec'd it, itself or from a fork of itself).
    Launched,
    /// It only looked the binary up (a PATH search, `command -v`, `test -x`).
    LookedUp,
}

/// A strategy's result: the set, and what the analysis decided on the way.
#[derive(Clone, Debug)]
pub struct StrategySet {
    pub strategy: Strategy,
    pub set: DeploymentSet,
    pub needed: Needed,
    /// Binaries shipped as the stub program: the candidates with `--stubs`, and those the
    /// rules' stub list names.
    pub stubs: Vec<Stub>,
    /// Binaries a stub could stand in for, whether or not stubs were asked for: helpers a
    /// needed image started whose result, as far as the log tells, no needed image used, and
    /// binaries the needed images only looked up ([`Self::looked_up_only`]).
    pub stub_candidates: Vec<Stub>,
    /// Executables the needed images only looked up, run by images that are not needed: left
    /// out (or stubbed), never shipped without the libraries they load.
    pub looked_up_only: Vec<Vec<u8>>,
    /// Executables shipped whole: files a needed image exec'd (binaries and interpreters).
    pub executables: usize,
    /// Files needed processes only wrote: left out (outputs policy), directories shipped.
    pub outputs: Vec<Vec<u8>>,
    /// Paths of the set left out by an exclude glob, with the glob.
    pub excluded: Vec<(Vec<u8>, String)>,
}

impl StrategySet {
    pub fn total_bytes(&self) -> u64 {
        self.set.entries.iter().map(|entry| entry.size).sum()
    }

    /// A warning when the exclude globs of `rules` removed every path the needed processes
    /// used (the set is then empty, or holds only directories and symlinks): an empty set
    /// usually means a glob like `/**` that excludes more than meant.
    pub fn rules_warning(&self, rules: &Rules) -> Option<String> {
        let used_left = self
            .set
            .entries
            .iter()
            .any(|entry| entry.reason == crate::analysis::closure::Reason::Used);
        let (path, glob) = self.excluded.first().filter(|_| !used_left)?;
        Some(format!(
            "{}: the exclude rules removed every path the selection used ({} excluded, e.g. {} by {glob:?}); the {} set is {}",
            rules.origin,
            self.excluded.len(),
            String::from_utf8_lossy(path),
            self.strategy.name(),
            if self.set.entries.is_empty() {
                "empty"
            } else {
                "only directories and symlinks"
            }
        ))
    }
}

/// How to compute a set.
#[derive(Clone, Debug)]
pub struct StrategyOptions {
    pub strategy: Strategy,
    /// List binaries exec'd but not needed as stubs.
    pub stubs: bool,
}

/// Computes the set of `strategy` for the selected images.
pub fn compute(
    graph: &Graph,
    selection: &Selection,
    rules: &Rules,
    set_options: &SetOptions,
    options: &StrategyOptions,
) -> StrategySet {
    let needed = needed_processes(graph, selection, rules, options.strategy);
    compute_with_needed(graph, rules, set_options, options, needed)
}

/// [`compute`] for images already known to be needed: `needed_processes` depends only on the
/// selection, the strategy and the noise, system set-up, exec-tolerant and stub rules, so a
/// caller that changed only the path rules (include, exclude, drop_outputs) can reuse it
/// (the page of `depsetfs ui` does).
pub fn compute_with_needed(
    graph: &Graph,
    rules: &Rules,
    set_options: &SetOptions,
    options: &StrategyOptions,
    needed: Needed,
) -> StrategySet {
    let drop_outputs = rules.drop_outputs && options.strategy != Strategy::All;
    let (mut used, outputs) = used_paths(graph, &needed, drop_outputs);
    let looked_up_only = looked_up_executables(graph, &needed);
    for path in &looked_up_only {
        used.remove(path);
        // The directory the needed image searched stays, as for outputs.
        if let Some(parent) = parent_of(path) {
            used.insert(parent.to_vec());
        }
    }
    add_included(graph, rules, &mut used);
    let excluded_early = remove_excluded(&mut used, &rules.exclude);
    let facts = GraphFacts::new(graph, &needed);
    let mut set = set_of_used_paths(&used, set_options, &facts);
    let mut excluded = excluded_early;
    set.entries
        .retain(|entry| match first_match(&rules.exclude, &entry.path) {
            Some(glob) => {
                excluded.push((entry.path.clone(), glob.text.clone()));
                false
            }
            None => true,
        });
    excluded.sort();
    excluded.dedup();
    // A symlink chain a needed image followed may end at one: still not shipped half.
    set.entries
        .retain(|entry| !looked_up_only.contains(&entry.path));
    let shipped: BTreeSet<&[u8]> = set
        .entries
        .iter()
        .map(|entry| entry.path.as_slice())
        .collect();
    let stub_candidates = find_stub_candidates(graph, &needed, rules, &shipped, &looked_up_only);
    let stubs = stub_candidates
        .iter()
        .filter(|stub| options.stubs || first_match(&rules.stubs, &stub.path).is_some())
        .cloned()
        .collect();
    let executables = executables_shipped(graph, &needed, &shipped);
    StrategySet {
        strategy: options.strategy,
        set,
        needed,
        stubs,
        stub_candidates,
        looked_up_only: looked_up_only.into_iter().collect(),
        executables,
        outputs,
        excluded,
    }
}

/// Which images the strategy needs.
pub fn needed_processes(
    graph: &Graph,
    selection: &Selection,
    rules: &Rules,
    strategy: Strategy,
) -> Needed {
    if strategy == Strategy::All {
        // Every image is a root: the walk would add nothing (and building its writer index
        // was a good part of a strategy switch on the page).
        return Needed {
            why: vec![Some(NeedReason::Everything); graph.processes.len()],
            scope: None,
        };
    }
    let mut walk = NeedWalk::new(graph, rules, strategy);
    match strategy {
        Strategy::All => {} // returned above
        Strategy::Strict | Strategy::Exec => walk.seed_selection(selection),
        Strategy::System => {
            walk.seed_selection(selection);
            walk.seed_system();
        }
    }
    walk.run();
    Needed {
        why: walk.why,
        scope: None,
    }
}

/// The worklist that closes the needed set over dependencies.
struct NeedWalk<'a> {
    graph: &'a Graph,
    rules: &'a Rules,
    strategy: Strategy,
    why: Vec<Option<NeedReason>>,
    queue: Vec<ProcessIx>,
    /// Per produced file that can pull its writers in (not noise, not a device): (producer,
    /// first time it produced it).
    producers: HashMap<FileIx, Vec<(ProcessIx, TimeNs)>>,
}

impl<'a> NeedWalk<'a> {
    fn new(graph: &'a Graph, rules: &'a Rules, strategy: Strategy) -> NeedWalk<'a> {
        let mut producers: HashMap<FileIx, Vec<(ProcessIx, TimeNs)>> = HashMap::new();
        for edge in graph.file_edges.iter().filter(|edge| edge.produces()) {
            producers
                .entry(edge.file)
                .or_default()
                .push((edge.process, edge.totals.first_ns));
        }
        // Noise and device files pull nothing: decided once per file here, not on every edge
        // that uses it (matching the noise globs per edge was most of a page tweak's time).
        producers.retain(|&file, _| {
            let file = &graph.files[file];
            !rules.is_noise(&file.path) && !is_device(file.kind)
        });
        NeedWalk {
            graph,
            rules,
            strategy,
            why: vec![None; graph.processes.len()],
            queue: Vec::new(),
            producers,
        }
    }

    fn need(&mut self, process: ProcessIx, reason: NeedReason) {
        if self.why[process].is_some() {
            return;
        }
        let root = matches!(
            reason,
            NeedReason::Selected(_) | NeedReason::Everything | NeedReason::SystemSetup(_)
        );
        if !root && self.is_stubbed(process) {
            return;
        }
        self.why[process] = Some(reason);
        self.queue.push(process);
    }

    /// Images whose binary the rules always replace by a stub are not followed.
    fn is_stubbed(&self, process: ProcessIx) -> bool {
        let node = &self.graph.processes[process];
        let binary = self.graph.exec_binary(process).unwrap_or(&node.exe);
        node.key.exec_index > 0 && first_match(&self.rules.stubs, binary).is_some()
    }

    fn seed_selection(&mut self, selection: &Selection) {
        for process in selection.processes() {
            let how = selection.reason(process).unwrap_or("selected").to_string();
            self.need(process, NeedReason::Selected(how));
        }
    }

    /// System set-up processes and their descendants; images with no binary.
    fn seed_system(&mut self) {
        for process in 0..self.graph.processes.len() {
            let node = &self.graph.processes[process];
            if matches_process(&self.rules.system_setup, &node.exe, &node.argv) {
                let how = format!("{} matches a system_setup rule", node.exe_text());
                self.need(process, NeedReason::SystemSetup(how.clone()));
                for descendant in self.graph.descendants(process) {
                    self.need(descendant, NeedReason::SystemSetup(how.clone()));
                }
            } else if node.has_no_binary() && self.graph.exec_binary(process).is_none() {
                let how = "a process with no binary".to_string();
                self.need(process, NeedReason::SystemSetup(how));
            }
        }
    }

    fn run(&mut self) {
        while let Some(process) = self.queue.pop() {
            self.follow_processes(process);
            self.follow_writers(process);
            if self.strategy == Strategy::Exec {
                self.follow_sub_processes(process);
            }
        }
    }

    fn follow_processes(&mut self, process: ProcessIx) {
        let graph = self.graph;
        for (dependency, edge) in graph.process_dependencies(process) {
            let reason = match edge.link {
                ProcessLink::Fork => NeedReason::ForkParentOf(process),
                ProcessLink::Exec => NeedReason::ExecPredecessorOf(process),
                ProcessLink::Connect => NeedReason::ServerOf {
                    client: process,
                    endpoint: edge.endpoint.unwrap_or_default(),
                },
            };
            self.need(dependency, reason);
        }
    }

    /// Writers of the files `process` used, when a write began before the use ended (a use
    /// entirely before a write does not depend on it; an open for reading ends when no handle
    /// of the file is open any more, [`crate::analysis::graph::FileEdge::reading_until`], since
    /// its reads may never reach the daemon). Noise and device files pull nothing (they are not
    /// in `producers`).
    fn follow_writers(&mut self, process: ProcessIx) {
        let graph = self.graph;
        for edge in graph.edges_of_process(process) {
            if !edge.consumes() && !edge.opens_for_reading() {
                continue;
            }
            let Some(producers) = self.producers.get(&edge.file) else {
                continue;
            };
            let writers: Vec<ProcessIx> = producers
                .iter()
                .filter(|(writer, first)| *writer != process && *first <= edge.reading_until)
                .map(|(writer, _)| *writer)
                .collect();
            for writer in writers {
                self.need(
                    writer,
                    NeedReason::WroteFileUsedBy {
                        file: edge.file,
                        user: process,
                    },
                );
            }
        }
    }

    /// Strategy `exec`: what a needed image runs is needed too, except what an exec-tolerant
    /// parent forks.
    fn follow_sub_processes(&mut self, process: ProcessIx) {
        let graph = self.graph;
        let node = &graph.processes[process];
        let tolerant = matches_process(&self.rules.exec_tolerant, &node.exe, &node.argv);
        let mut subs: Vec<ProcessIx> = graph.exec_successor(process).into_iter().collect();
        if !tolerant {
            subs.extend(graph.forked_children(process));
        }
        for sub in subs {
            self.need(sub, NeedReason::SubProcessOf(process));
        }
    }
}

fn is_device(kind: FileKind) -> bool {
    matches!(kind, FileKind::CharDevice | FileKind::BlockDevice)
}

/// Step 2 for a strategy: every path a needed image accessed successfully, minus the outputs
/// (files needed images produced and none read; not directories), plus the directories of
/// those outputs.
fn used_paths(
    graph: &Graph,
    needed: &Needed,
    drop_outputs: bool,
) -> (BTreeSet<Vec<u8>>, Vec<Vec<u8>>) {
    let mut produced = vec![false; graph.files.len()];
    let mut read = vec![false; graph.files.len()];
    let mut touched = vec![false; graph.files.len()];
    for process in needed.processes() {
        for edge in graph.edges_of_process(process) {
            if !edge.succeeded() {
                continue;
            }
            touched[edge.file] = true;
            produced[edge.file] |= edge.produces();
            read[edge.file] |= edge.reads_content();
        }
    }
    let mut used = BTreeSet::new();
    let mut outputs = Vec::new();
    for (file, node) in graph.files.iter().enumerate() {
        if !touched[file] {
            continue;
        }
        let output = drop_outputs && produced[file] && !read[file] && node.kind != FileKind::Dir;
        if output {
            outputs.push(node.path.clone());
            if let Some(parent) = parent_of(&node.path) {
                used.insert(parent.to_vec());
            }
        } else {
            used.insert(node.path.clone());
        }
    }
    (used, outputs)
}

/// Include globs add every path of the log that matches and that some access reached.
fn add_included(graph: &Graph, rules: &Rules, used: &mut BTreeSet<Vec<u8>>) {
    if rules.include.is_empty() {
        return;
    }
    for node in &graph.files {
        if node.succeeded && first_match(&rules.include, &node.path).is_some() {
            used.insert(node.path.clone());
        }
    }
}

fn remove_excluded(used: &mut BTreeSet<Vec<u8>>, exclude: &[PathGlob]) -> Vec<(Vec<u8>, String)> {
    let mut excluded = Vec::new();
    used.retain(|path| match first_match(exclude, path) {
        Some(glob) => {
            excluded.push((path.clone(), glob.text.clone()));
            false
        }
        None => true,
    });
    excluded
}

/// Executables the needed images only looked up (no needed image read, ran or changed them)
/// while an image that is not needed exec'd them: a needed parent's PATH search before the
/// `execve` of a helper it does not need. Shipped, such a file would arrive without the
/// libraries and interpreter it loads, which only the image that ran it needed.
fn looked_up_executables(graph: &Graph, needed: &Needed) -> BTreeSet<Vec<u8>> {
    let mut run_by_unneeded = vec![false; graph.files.len()];
    for (image, _) in graph.processes.iter().enumerate() {
        if needed.contains(image) {
            continue;
        }
        for (edge, _) in graph.exec_chain(image) {
            run_by_unneeded[edge.file] = true;
        }
    }
    let mut looked_up = BTreeSet::new();
    for (file, node) in graph.files.iter().enumerate() {
        if !run_by_unneeded[file] || node.kind == FileKind::Dir {
            continue;
        }
        let mut needed_uses = graph
            .edges_of_file(file)
            .filter(|edge| edge.succeeded() && needed.contains(edge.process))
            .peekable();
        if needed_uses.peek().is_none() {
            continue;
        }
        if needed_uses.all(|edge| !edge.reads_content() && !edge.produces()) {
            looked_up.insert(node.path.clone());
        }
    }
    looked_up
}

/// Binaries a stub could stand in for: (1) images not needed that a needed image started (it
/// forked them, or they were exec'd from the needed image or from a fork of it), when their
/// binary is not shipped and, as far as the log can tell, the needed side did not use their
/// result: nothing they wrote made them needed (strict would have followed that), and they did
/// not connect to an endpoint a needed image bound. The log cannot see anonymous pipes (a
/// `$(helper)` whose output the parent reads) nor whether the parent looked at the exit
/// status: those are the user's call, and `why` says so. (2) Executables the needed images only
/// looked up ([`looked_up_executables`]). Binaries the rules' stub list names are candidates
/// whenever a needed image started them.
fn find_stub_candidates(
    graph: &Graph,
    needed: &Needed,
    rules: &Rules,
    shipped: &BTreeSet<&[u8]>,
    looked_up_only: &BTreeSet<Vec<u8>>,
) -> Vec<Stub> {
    let mut stubs: BTreeMap<Vec<u8>, Stub> = BTreeMap::new();
    for (image, node) in graph.processes.iter().enumerate() {
        if needed.contains(image) || node.key.exec_index == 0 {
            continue;
        }
        let Some(binary) = graph.exec_binary(image) else {
            continue;
        };
        if let Some(launcher) = launched_by(graph, needed, image) {
            let listed = first_match(&rules.stubs, binary).is_some();
            if !shipped.contains(binary) && (listed || !talked_to_needed(graph, needed, image)) {
                stubs.entry(binary.to_vec()).or_insert(Stub {
                    path: binary.to_vec(),
                    image,
                    launched_by: launcher,
                    origin: StubOrigin::Launched,
                });
            }
        } else if looked_up_only.contains(binary)
            && let Some(looker) = needed_looker(graph, needed, binary)
        {
            stubs.entry(binary.to_vec()).or_insert(Stub {
                path: binary.to_vec(),
                image,
                launched_by: looker,
                origin: StubOrigin::LookedUp,
            });
        }
    }
    stubs.into_values().collect()
}

/// Whether `image` connected to an endpoint a needed image bound: its work reached the needed
/// side, so a stub that does nothing would change what the needed side sees.
fn talked_to_needed(graph: &Graph, needed: &Needed, image: ProcessIx) -> bool {
    graph.links_of(image).any(|edge| {
        edge.link == ProcessLink::Connect && edge.from == image && needed.contains(edge.to)
    })
}

/// A needed image that looked `path` up.
fn needed_looker(graph: &Graph, needed: &Needed, path: &[u8]) -> Option<ProcessIx> {
    let file = graph.file(path)?;
    graph
        .edges_of_file(file)
        .find(|edge| edge.succeeded() && needed.contains(edge.process))
        .map(|edge| edge.process)
}

/// How many shipped files a needed image exec'd (binaries and interpreters): the executables
/// shipped whole, with what they load.
fn executables_shipped(graph: &Graph, needed: &Needed, shipped: &BTreeSet<&[u8]>) -> usize {
    let mut run: BTreeSet<FileIx> = BTreeSet::new();
    for image in needed.processes() {
        for (edge, _) in graph.exec_chain(image) {
            run.insert(edge.file);
        }
    }
    run.into_iter()
        .filter(|&file| shipped.contains(graph.files[file].path.as_slice()))
        .count()
}

/// The needed image that started `image` by exec (directly, or from a fork of itself).
fn launched_by(graph: &Graph, needed: &Needed, image: ProcessIx) -> Option<ProcessIx> {
    let before = graph.processes[image].exec_from?;
    if needed.contains(before) {
        return Some(before);
    }
    let fork_copy = &graph.processes[before];
    if fork_copy.key.exec_index != 0 {
        return None;
    }
    fork_copy
        .forked_by
        .filter(|parent| needed.contains(*parent))
}

/// The graph answering [`PathFacts`] for the needed images.
pub struct GraphFacts<'a> {
    graph: &'a Graph,
    needed: &'a Needed,
    /// Per process, the exe of its latest described image.
    exe_of: HashMap<ProcessId, String>,
}

impl<'a> GraphFacts<'a> {
    pub fn new(graph: &'a Graph, needed: &'a Needed) -> GraphFacts<'a> {
        let mut exe_of = HashMap::new();
        for node in graph.processes.iter().filter(|node| node.described) {
            exe_of.insert(node.key.process(), node.exe_text());
        }
        GraphFacts {
            graph,
            needed,
            exe_of,
        }
    }
}

impl PathFacts for GraphFacts<'_> {
    fn seen_kind(&self, path: &[u8]) -> FileKind {
        self.graph
            .file(path)
            .map(|file| self.graph.files[file].kind)
            .unwrap_or_default()
    }

    fn users(&self, path: &[u8]) -> Vec<SetUser> {
        let Some(file) = self.graph.file(path) else {
            return Vec::new();
        };
        let mut uses: BTreeMap<ProcessId, BTreeSet<UseKind>> = BTreeMap::new();
        for edge in self.graph.edges_of_file(file) {
            if edge.succeeded() && self.needed.contains(edge.process) {
                let process = self.graph.processes[edge.process].key.process();
                uses.entry(process).or_default().insert(edge.use_kind);
            }
        }
        uses.into_iter()
            .map(|(process, kinds)| {
                let mut ops: Vec<String> = Vec::new();
                for kind in &kinds {
                    let label = describe_use(kind);
                    if !ops.contains(&label) {
                        ops.push(label);
                    }
                }
                SetUser {
                    run: self.graph.run_label(process.run).to_string(),
                    pid: process.pid,
                    start: process.start,
                    exe: self.exe_of.get(&process).cloned().unwrap_or_default(),
                    ops,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
