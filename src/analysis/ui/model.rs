//! The page's analysis session: one log's graph, the rules the user is shaping (the `--rules`
//! file's keys plus the tweaks made on the page, always held as the TOML text that would be
//! saved), and what they compute to. Every tweak rebuilds the rules from that text with
//! [`Rules::from_text`] and the set with [`strategy::compute`], exactly as `dump --set --rules`
//! does, so the page and the command line cannot disagree. The views (summary, file tree,
//! process tree, audit list, why, strategies table) are answers computed from the current state,
//! each small: trees are listed one directory or one process at a time, lists are capped.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use serde::Serialize;

use crate::analysis::closure::{Reason, SetOptions};
use crate::analysis::graph::{Graph, ProcessIx};
use crate::analysis::names::{escape, unescape};
use crate::analysis::paths::is_within;
use crate::analysis::query::{self, ReportRow};
use crate::analysis::rules::{Rules, RulesError, first_match};
use crate::analysis::select::{ProcessMatcher, SelectError, Selection, Selector, select};
use crate::analysis::strategy::{
    Needed, Strategy, StrategyOptions, StrategySet, compute_with_needed, needed_processes,
};

use super::suggest::{self, Suggestion};

/// At most this many rows in one listing (a directory's children, an audit group).
pub const LIST_CAP: usize = 500;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Rules(#[from] RulesError),
    #[error(transparent)]
    Select(#[from] SelectError),
    #[error("{0}")]
    Tweak(String),
    #[error("saving {}: {source}", path.display())]
    Save {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What a path's fate is under the current rules: shipped (and why) or left out (and why).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fate {
    Used,
    Parent,
    SymlinkHop,
    Stub,
    Rule,
    NotNeeded,
    Noise,
    Output,
    Excluded,
    NeverShipped,
    Device,
    Missing,
    StubCandidate,
    LookedUpOnly,
    Dropped,
    /// A directory the tree shows only because paths below it are in the log.
    Dir,
}

impl Fate {
    pub fn in_set(self) -> bool {
        matches!(
            self,
            Fate::Used | Fate::Parent | Fate::SymlinkHop | Fate::Stub | Fate::Rule
        )
    }
}

/// A process selector as the rules file writes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SelectorSpec {
    pub pid: Option<u32>,
    pub exe: Option<String>,
    pub cmd: Option<String>,
    pub children: bool,
}

impl SelectorSpec {
    fn of(selector: &Selector) -> SelectorSpec {
        let mut spec = SelectorSpec {
            pid: None,
            exe: None,
            cmd: None,
            children: selector.children,
        };
        match &selector.matcher {
            // The page names pids without runs (a rules file's `pid` has no run either).
            ProcessMatcher::Pid(pid) | ProcessMatcher::RunPid(_, pid) => spec.pid = Some(*pid),
            ProcessMatcher::Exe(exe) => spec.exe = Some(String::from_utf8_lossy(exe).into_owned()),
            ProcessMatcher::Cmd(regex) => spec.cmd = Some(regex.as_str().to_string()),
        }
        spec
    }
}

/// Everything the rules file can say, as lists of glob texts: what the page edits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RuleLists {
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    pub noise: Vec<String>,
    pub drop_outputs: bool,
    pub system_setup: Vec<String>,
    pub exec_tolerant: Vec<String>,
    pub stubs: Vec<String>,
    pub select: Vec<SelectorSpec>,
}

impl RuleLists {
    pub fn of(rules: &Rules) -> RuleLists {
        let texts = |globs: &[crate::analysis::rules::PathGlob]| {
            globs.iter().map(|g| g.text.clone()).collect()
        };
        RuleLists {
            include: texts(&rules.include),
            exclude: texts(&rules.exclude),
            noise: texts(&rules.noise),
            drop_outputs: rules.drop_outputs,
            system_setup: texts(&rules.system_setup),
            exec_tolerant: texts(&rules.exec_tolerant),
            stubs: texts(&rules.stubs),
            select: rules.select.iter().map(SelectorSpec::of).collect(),
        }
    }

    /// The rules file: every key written out, so that it means the same whatever the built-in
    /// rules of a later version say.
    pub fn to_toml(&self, strategy: Strategy, notes: &[String]) -> String {
        let quote = |text: &str| toml::Value::String(text.to_string()).to_string();
        let list = |items: &[String]| {
            if items.is_empty() {
                "[]".to_string()
            } else {
                let lines: Vec<String> =
                    items.iter().map(|i| format!("  {},\n", quote(i))).collect();
                format!("[\n{}]", lines.concat())
            }
        };
        let mut out = String::new();
        out.push_str("# depsetfs rules, saved by `depsetfs ui`. The page showed the set of\n");
        out.push_str(&format!(
            "#   depsetfs dump --set --strategy {} --rules THIS_FILE\n",
            strategy.name()
        ));
        for note in notes {
            out.push_str(&format!("# tweak: {}\n", note.replace('\n', " ")));
        }
        out.push_str("\n[paths]\n");
        out.push_str(&format!("include = {}\n", list(&self.include)));
        out.push_str(&format!("exclude = {}\n", list(&self.exclude)));
        out.push_str("\n[policy]\n");
        out.push_str(&format!("noise = {}\n", list(&self.noise)));
        out.push_str(&format!("drop_outputs = {}\n", self.drop_outputs));
        out.push_str("\n[processes]\n");
        out.push_str(&format!("system_setup = {}\n", list(&self.system_setup)));
        out.push_str(&format!("exec_tolerant = {}\n", list(&self.exec_tolerant)));
        out.push_str(&format!("stubs = {}\n", list(&self.stubs)));
        for spec in &self.select {
            out.push_str("\n[[select]]\n");
            if let Some(pid) = spec.pid {
                out.push_str(&format!("pid = {pid}\n"));
            }
            if let Some(exe) = &spec.exe {
                out.push_str(&format!("exe = {}\n", quote(exe)));
            }
            if let Some(cmd) = &spec.cmd {
                out.push_str(&format!("cmd = {}\n", quote(cmd)));
            }
            if spec.children {
                out.push_str("children = true\n");
            }
        }
        out
    }
}

/// One change the page asks for.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum Tweak {
    Strategy {
        strategy: String,
    },
    /// Select or unselect every image of `pid` (and, with `children`, their descendants).
    Select {
        pid: u32,
        on: bool,
        children: bool,
    },
    Include {
        glob: String,
    },
    Exclude {
        glob: String,
    },
    Noise {
        glob: String,
    },
    /// A file only written: left out like an output (an exclude rule for that file).
    Output {
        path: String,
    },
    Stub {
        path: String,
    },
    DropOutputs {
        on: bool,
    },
    /// Take a glob back out of one list.
    Remove {
        list: String,
        glob: String,
    },
    /// Back to the rules the page started from.
    Reset,
}

/// The rules and what they compute to.
pub struct Computed {
    pub generation: u64,
    pub strategy: Strategy,
    pub lists: RuleLists,
    pub text: String,
    pub rules: Rules,
    pub selection: Selection,
    pub result: Arc<StrategySet>,
    /// The fate and size of every path of the tree (paths in the log, set entries and their
    /// directories).
    pub paths: HashMap<Vec<u8>, PathInfo>,
    /// Each directory's children.
    pub children: HashMap<Vec<u8>, Vec<Vec<u8>>>,
    report: OnceLock<Vec<ReportRow>>,
    suggestions: OnceLock<Vec<Suggestion>>,
}

#[derive(Clone, Debug, Default)]
pub struct PathInfo {
    pub fate: Option<Fate>,
    pub is_dir: bool,
    pub size: u64,
    /// Over the subtree, this path included.
    pub in_files: u64,
    pub in_bytes: u64,
    pub out_files: u64,
    pub out_bytes: u64,
}

struct Edit {
    strategy: Strategy,
    lists: RuleLists,
    notes: Vec<String>,
}

/// One log, shaped on the page.
pub struct Session {
    pub graph: Graph,
    pub set_options: SetOptions,
    pub rules_path: Option<PathBuf>,
    pub log_path: PathBuf,
    initial: (Strategy, RuleLists),
    /// Sizes of the log's paths in the source tree (for paths outside the set).
    sizes: HashMap<Vec<u8>, u64>,
    /// Per image: files read, files written.
    io_counts: Vec<(u32, u32)>,
    edit: Mutex<Edit>,
    current: Mutex<Arc<Computed>>,
    previous: Mutex<Option<(u64, u64)>>,
    cache: SetCache,
}

/// Recent sets by the rules text (without the notes) and strategy: switching back, resetting
/// and switching to a strategy the table already computed take no new computation.
#[derive(Default)]
pub struct SetCache {
    sets: Mutex<std::collections::VecDeque<(String, Arc<StrategySet>)>>,
    /// The needed images by what decides them (see [`needed_key`]).
    needed: Mutex<std::collections::VecDeque<(String, Arc<Needed>)>>,
}

const CACHED_SETS: usize = 12;

impl SetCache {
    fn get(&self, key: &str) -> Option<Arc<StrategySet>> {
        let cache = self.sets.lock().unwrap_or_else(|p| p.into_inner());
        cache
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, set)| set.clone())
    }

    fn put(&self, key: String, set: Arc<StrategySet>) {
        let mut cache = self.sets.lock().unwrap_or_else(|p| p.into_inner());
        cache.retain(|(k, _)| *k != key);
        cache.push_front((key, set));
        cache.truncate(CACHED_SETS);
    }

    /// The set of `strategy` for these rules: from the cache, else computed (reusing the
    /// needed images when only path rules changed since they were computed).
    fn set(
        &self,
        graph: &Graph,
        set_options: &SetOptions,
        selection: &Selection,
        rules: &Rules,
        lists: &RuleLists,
        strategy: Strategy,
    ) -> Arc<StrategySet> {
        let key = cache_key(lists, strategy);
        if let Some(set) = self.get(&key) {
            return set;
        }
        let needed_key = needed_key(lists, strategy);
        let known = {
            let cache = self.needed.lock().unwrap_or_else(|p| p.into_inner());
            cache
                .iter()
                .find(|(k, _)| *k == needed_key)
                .map(|(_, n)| n.clone())
        };
        let needed = match known {
            Some(needed) => needed,
            None => {
                let needed = Arc::new(needed_processes(graph, selection, rules, strategy));
                let mut cache = self.needed.lock().unwrap_or_else(|p| p.into_inner());
                cache.retain(|(k, _)| *k != needed_key);
                cache.push_front((needed_key, needed.clone()));
                cache.truncate(CACHED_SETS);
                needed
            }
        };
        let options = StrategyOptions {
            strategy,
            stubs: false,
        };
        let set = Arc::new(compute_with_needed(
            graph,
            rules,
            set_options,
            &options,
            (*needed).clone(),
        ));
        self.put(key, set.clone());
        set
    }
}

/// What `needed_processes` depends on: the strategy, the selection and the process rules.
fn needed_key(lists: &RuleLists, strategy: Strategy) -> String {
    let only_processes = RuleLists {
        include: Vec::new(),
        exclude: Vec::new(),
        drop_outputs: true,
        ..lists.clone()
    };
    only_processes.to_toml(strategy, &[])
}

fn cache_key(lists: &RuleLists, strategy: Strategy) -> String {
    lists.to_toml(strategy, &[])
}

impl Session {
    pub fn new(
        graph: Graph,
        log_path: PathBuf,
        rules: Rules,
        rules_path: Option<PathBuf>,
        strategy: Strategy,
    ) -> Result<Session, ModelError> {
        let set_options = SetOptions::from_header(&graph.header);
        let sizes = source_sizes(&graph, &set_options);
        let io_counts = (0..graph.processes.len())
            .map(|process| {
                let files = |f: fn(&crate::analysis::graph::FileEdge) -> bool| {
                    graph
                        .edges_of_process(process)
                        .filter(|e| f(e))
                        .map(|e| e.file)
                        .collect::<HashSet<_>>()
                        .len() as u32
                };
                (files(|e| e.consumes()), files(|e| e.produces()))
            })
            .collect();
        let lists = RuleLists::of(&rules);
        let cache = SetCache::default();
        let computed = compute_state(
            &graph,
            &set_options,
            &sizes,
            &cache,
            strategy,
            &lists,
            &[],
            0,
        )?;
        Ok(Session {
            graph,
            set_options,
            rules_path,
            log_path,
            initial: (strategy, lists.clone()),
            sizes,
            io_counts,
            edit: Mutex::new(Edit {
                strategy,
                lists,
                notes: Vec::new(),
            }),
            current: Mutex::new(Arc::new(computed)),
            previous: Mutex::new(None),
            cache,
        })
    }

    pub fn current(&self) -> Arc<Computed> {
        match self.current.lock() {
            Ok(current) => current.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Applies a tweak; on error nothing changes.
    pub fn apply(&self, tweak: Tweak) -> Result<Arc<Computed>, ModelError> {
        let mut edit = self.edit.lock().unwrap_or_else(|p| p.into_inner());
        let before = self.current();
        let mut strategy = edit.strategy;
        let mut lists = edit.lists.clone();
        let mut notes = edit.notes.clone();
        let note = self.change(&before, &mut strategy, &mut lists, tweak)?;
        match note {
            Some(note) => notes.push(note),
            None => notes.clear(),
        }
        let computed = compute_state(
            &self.graph,
            &self.set_options,
            &self.sizes,
            &self.cache,
            strategy,
            &lists,
            &notes,
            before.generation + 1,
        )?;
        let computed = Arc::new(computed);
        *edit = Edit {
            strategy,
            lists,
            notes,
        };
        *self.previous.lock().unwrap_or_else(|p| p.into_inner()) = Some((
            before.result.set.entries.len() as u64,
            before.result.total_bytes(),
        ));
        let old = std::mem::replace(
            &mut *self.current.lock().unwrap_or_else(|p| p.into_inner()),
            computed.clone(),
        );
        // Freeing the last state's maps (every path's fate and the tree) is not the tweak's
        // answer: done beside it (in place if no thread can be started).
        let _ = std::thread::Builder::new()
            .name("depsetfs-ui-free".to_string())
            .spawn(move || drop((old, before)));
        Ok(computed)
    }

    /// Files and bytes before the last tweak.
    pub fn previous(&self) -> Option<(u64, u64)> {
        *self.previous.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn change(
        &self,
        before: &Computed,
        strategy: &mut Strategy,
        lists: &mut RuleLists,
        tweak: Tweak,
    ) -> Result<Option<String>, ModelError> {
        let check_glob = |glob: &str| -> Result<String, ModelError> {
            let glob = glob.trim();
            if !glob.starts_with('/') {
                return Err(ModelError::Tweak(format!(
                    "{glob:?}: a path glob must be absolute"
                )));
            }
            crate::analysis::rules::PathGlob::new(glob)
                .map_err(|e| ModelError::Tweak(format!("{glob:?}: {}", e.kind())))?;
            Ok(glob.to_string())
        };
        let push = |list: &mut Vec<String>, glob: String| {
            if !list.contains(&glob) {
                list.push(glob);
            }
        };
        Ok(Some(match tweak {
            Tweak::Reset => {
                (*strategy, *lists) = self.initial.clone();
                return Ok(None);
            }
            Tweak::Strategy { strategy: name } => {
                *strategy = Strategy::ALL
                    .into_iter()
                    .find(|s| s.name() == name)
                    .ok_or_else(|| ModelError::Tweak(format!("no strategy {name:?}")))?;
                format!("strategy {name}")
            }
            Tweak::Select { pid, on, children } => {
                let mut pids: BTreeSet<u32> = before
                    .selection
                    .processes()
                    .map(|p| self.graph.processes[p].key.pid)
                    .collect();
                let images: Vec<ProcessIx> = (0..self.graph.processes.len())
                    .filter(|&p| self.graph.processes[p].key.pid == pid)
                    .collect();
                if images.is_empty() {
                    return Err(ModelError::Tweak(format!("no process {pid} in the log")));
                }
                let mut affected: BTreeSet<u32> = BTreeSet::from([pid]);
                if children {
                    for image in &images {
                        for d in self.graph.descendants(*image) {
                            affected.insert(self.graph.processes[d].key.pid);
                        }
                    }
                }
                for p in &affected {
                    if on {
                        pids.insert(*p);
                    } else {
                        pids.remove(p);
                    }
                }
                if pids.is_empty() {
                    return Err(ModelError::Tweak(
                        "at least one process must stay selected".to_string(),
                    ));
                }
                lists.select = pids
                    .into_iter()
                    .map(|pid| SelectorSpec {
                        pid: Some(pid),
                        exe: None,
                        cmd: None,
                        children: false,
                    })
                    .collect();
                format!(
                    "{} pid {pid}{}",
                    if on { "select" } else { "unselect" },
                    if children { " and its descendants" } else { "" }
                )
            }
            Tweak::Include { glob } => {
                let glob = check_glob(&glob)?;
                lists.exclude.retain(|g| *g != glob);
                push(&mut lists.include, glob.clone());
                format!("include {glob}")
            }
            Tweak::Exclude { glob } => {
                let glob = check_glob(&glob)?;
                lists.include.retain(|g| *g != glob);
                push(&mut lists.exclude, glob.clone());
                format!("exclude {glob}")
            }
            Tweak::Noise { glob } => {
                let glob = check_glob(&glob)?;
                push(&mut lists.noise, glob.clone());
                format!("noise {glob}")
            }
            Tweak::Output { path } => {
                let glob = check_glob(&glob_escape(&path))?;
                push(&mut lists.exclude, glob.clone());
                format!("output {glob} (left out)")
            }
            Tweak::Stub { path } => {
                let glob = check_glob(&glob_escape(&path))?;
                push(&mut lists.stubs, glob.clone());
                format!("stub {glob}")
            }
            Tweak::DropOutputs { on } => {
                lists.drop_outputs = on;
                format!("drop_outputs = {on}")
            }
            Tweak::Remove { list, glob } => {
                let target = match list.as_str() {
                    "include" => &mut lists.include,
                    "exclude" => &mut lists.exclude,
                    "noise" => &mut lists.noise,
                    "stubs" => &mut lists.stubs,
                    "system_setup" => &mut lists.system_setup,
                    "exec_tolerant" => &mut lists.exec_tolerant,
                    other => return Err(ModelError::Tweak(format!("no rule list {other:?}"))),
                };
                target.retain(|g| *g != glob);
                format!("remove {glob} from {list}")
            }
        }))
    }

    /// Writes the rules file (atomically: a temporary file beside it, then a rename).
    pub fn save(&self) -> Result<PathBuf, ModelError> {
        let path = self
            .rules_path
            .clone()
            .ok_or_else(|| ModelError::Tweak("no --rules FILE was given: nothing to save to (restart with --rules FILE; it may not exist yet)".to_string()))?;
        let text = self.current().text.clone();
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let temp = dir.join(format!(".{name}.depsetfs-ui.{}", std::process::id()));
        let fail = |source| ModelError::Save {
            path: path.clone(),
            source,
        };
        std::fs::write(&temp, text.as_bytes()).map_err(fail)?;
        std::fs::rename(&temp, &path).map_err(|e| {
            let _ = std::fs::remove_file(&temp);
            fail(e)
        })?;
        Ok(path)
    }

    /// The strategies table for `computed`'s rules and selection (computed once, on demand,
    /// one strategy after the other: a second core stays free for the next tweak; each set
    /// goes to the cache for a later switch).
    pub fn report<'a>(&self, computed: &'a Computed) -> &'a [ReportRow] {
        computed.report.get_or_init(|| {
            let sets: Vec<StrategySet> = Strategy::ALL
                .iter()
                .map(|&strategy| {
                    let set = if strategy == computed.strategy {
                        computed.result.clone()
                    } else {
                        self.cache.set(
                            &self.graph,
                            &self.set_options,
                            &computed.selection,
                            &computed.rules,
                            &computed.lists,
                            strategy,
                        )
                    };
                    (*set).clone()
                })
                .collect();
            query::report(&sets)
        })
    }

    pub fn io_counts(&self, process: ProcessIx) -> (u32, u32) {
        self.io_counts.get(process).copied().unwrap_or((0, 0))
    }
}

impl Computed {
    pub fn suggestions(&self, graph: &Graph, set_options: &SetOptions) -> &[Suggestion] {
        self.suggestions.get_or_init(|| {
            suggest::suggest(
                graph,
                &self.result,
                &self.rules,
                set_options,
                &self.selection,
            )
        })
    }

    pub fn in_set(&self) -> (u64, u64) {
        (
            self.result.set.entries.len() as u64,
            self.result.total_bytes(),
        )
    }
}

/// A literal path as a glob that matches only it.
pub fn glob_escape(path: &str) -> String {
    let mut out = String::new();
    for c in path.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '{' | '}' | '\\') {
            out.push('[');
            out.push(c);
            out.push(']');
        } else {
            out.push(c);
        }
    }
    out
}

/// A path of the page (escaped text) as bytes.
pub fn path_bytes(text: &str) -> Vec<u8> {
    unescape(text).unwrap_or_else(|_| text.as_bytes().to_vec())
}

fn source_sizes(graph: &Graph, options: &SetOptions) -> HashMap<Vec<u8>, u64> {
    use std::os::unix::ffi::OsStrExt;
    let never = options.never_shipped();
    let mut sizes = HashMap::new();
    for file in &graph.files {
        if never.contains(&file.path) || !file.succeeded {
            continue;
        }
        let relative = file.path.strip_prefix(b"/").unwrap_or(&file.path);
        let on_disk = options.source.join(std::ffi::OsStr::from_bytes(relative));
        if let Ok(meta) = std::fs::symlink_metadata(&on_disk)
            && (meta.is_file() || meta.file_type().is_symlink())
        {
            sizes.insert(file.path.clone(), meta.len());
        }
    }
    sizes
}

#[allow(clippy::too_many_arguments)]
fn compute_state(
    graph: &Graph,
    set_options: &SetOptions,
    sizes: &HashMap<Vec<u8>, u64>,
    cache: &SetCache,
    strategy: Strategy,
    lists: &RuleLists,
    notes: &[String],
    generation: u64,
) -> Result<Computed, ModelError> {
    let text = lists.to_toml(strategy, notes);
    let rules = Rules::from_text(Path::new("rules on the page"), &text)?;
    let selection = select(graph, &rules.select)?;
    let result = cache.set(graph, set_options, &selection, &rules, lists, strategy);
    let (paths, children) = classify(graph, &rules, &result, set_options, sizes);
    Ok(Computed {
        generation,
        strategy,
        lists: lists.clone(),
        text,
        rules,
        selection,
        result,
        paths,
        children,
        report: OnceLock::new(),
        suggestions: OnceLock::new(),
    })
}

type Tree = (HashMap<Vec<u8>, PathInfo>, HashMap<Vec<u8>, Vec<Vec<u8>>>);

/// The fate of each path, and the tree with per-subtree totals.
fn classify(
    graph: &Graph,
    rules: &Rules,
    result: &StrategySet,
    set_options: &SetOptions,
    sizes: &HashMap<Vec<u8>, u64>,
) -> Tree {
    let never = set_options.never_shipped();
    let excluded: HashSet<&[u8]> = result.excluded.iter().map(|(p, _)| p.as_slice()).collect();
    let outputs: HashSet<&[u8]> = result.outputs.iter().map(Vec::as_slice).collect();
    let stubs: HashSet<&[u8]> = result.stubs.iter().map(|s| s.path.as_slice()).collect();
    let candidates: HashSet<&[u8]> = result
        .stub_candidates
        .iter()
        .map(|s| s.path.as_slice())
        .collect();
    let looked: HashSet<&[u8]> = result.looked_up_only.iter().map(Vec::as_slice).collect();
    let devices: HashSet<&[u8]> = result
        .set
        .required_devices
        .iter()
        .map(Vec::as_slice)
        .collect();
    let mut paths: HashMap<Vec<u8>, PathInfo> = HashMap::new();
    for entry in &result.set.entries {
        let fate = match entry.reason {
            Reason::Used
                if entry.users.is_empty() && first_match(&rules.include, &entry.path).is_some() =>
            {
                Fate::Rule
            }
            Reason::Used => Fate::Used,
            Reason::Parent => Fate::Parent,
            Reason::SymlinkHop => Fate::SymlinkHop,
        };
        paths.insert(
            entry.path.clone(),
            PathInfo {
                fate: Some(fate),
                is_dir: entry.kind == crate::record::FileKind::Dir,
                size: entry.size,
                ..PathInfo::default()
            },
        );
    }
    for (ix, file) in graph.files.iter().enumerate() {
        if paths.contains_key(&file.path) {
            continue;
        }
        let path = file.path.as_slice();
        let fate = if devices.contains(path) {
            Fate::Device
        } else if never.contains(path) {
            Fate::NeverShipped
        } else if excluded.contains(path) {
            Fate::Excluded
        } else if outputs.contains(path) {
            Fate::Output
        } else if stubs.contains(path) {
            Fate::Stub
        } else if candidates.contains(path) {
            Fate::StubCandidate
        } else if looked.contains(path) {
            Fate::LookedUpOnly
        } else if !file.succeeded {
            Fate::Missing
        } else if graph
            .edges_of_file(ix)
            .any(|e| e.succeeded() && result.needed.contains(e.process))
        {
            Fate::Dropped
        } else if rules.is_noise(path) {
            Fate::Noise
        } else {
            Fate::NotNeeded
        };
        paths.insert(
            file.path.clone(),
            PathInfo {
                fate: Some(fate),
                is_dir: file.kind == crate::record::FileKind::Dir,
                size: sizes.get(path).copied().unwrap_or(0),
                ..PathInfo::default()
            },
        );
    }
    // Totals up the tree, and the children of each directory.
    let mut children: HashMap<Vec<u8>, BTreeSet<Vec<u8>>> = HashMap::new();
    let leaves: Vec<(Vec<u8>, bool, u64)> = paths
        .iter()
        .map(|(p, info)| (p.clone(), info.fate.is_some_and(Fate::in_set), info.size))
        .collect();
    for (path, in_set, size) in leaves {
        let mut current = path;
        let mut first = true;
        // Once a path is already among its parent's children, so is every directory above it:
        // the rest of the walk only adds the totals.
        let mut linked = false;
        loop {
            if !paths.contains_key(&current) {
                paths.insert(
                    current.clone(),
                    PathInfo {
                        fate: None,
                        is_dir: true,
                        ..PathInfo::default()
                    },
                );
            }
            let Some(info) = paths.get_mut(&current) else {
                break;
            };
            if !first {
                info.is_dir = true;
            }
            if in_set {
                info.in_files += 1;
                info.in_bytes += size;
            } else {
                info.out_files += 1;
                info.out_bytes += size;
            }
            first = false;
            let Some(parent) = parent_path(&current) else {
                break;
            };
            if !linked {
                linked = !children.entry(parent.clone()).or_default().insert(current);
            }
            current = parent;
        }
    }
    let children = children
        .into_iter()
        .map(|(dir, kids)| (dir, kids.into_iter().collect()))
        .collect();
    (paths, children)
}

fn parent_path(path: &[u8]) -> Option<Vec<u8>> {
    if path == b"/" || path.is_empty() {
        return None;
    }
    let cut = path.iter().rposition(|&b| b == b'/')?;
    Some(if cut == 0 {
        b"/".to_vec()
    } else {
        path[..cut].to_vec()
    })
}

/// Rows of one directory, largest first.
#[derive(Serialize)]
pub struct TreeRow {
    pub path: String,
    pub name: String,
    pub fate: Fate,
    pub is_dir: bool,
    pub has_children: bool,
    pub size: u64,
    pub in_files: u64,
    pub in_bytes: u64,
    pub out_files: u64,
    pub out_bytes: u64,
}

pub fn tree_rows(computed: &Computed, dir: &[u8]) -> (Vec<TreeRow>, usize) {
    let Some(kids) = computed.children.get(dir) else {
        return (Vec::new(), 0);
    };
    let mut rows: Vec<TreeRow> = kids
        .iter()
        .filter_map(|kid| {
            let info = computed.paths.get(kid)?;
            let name = kid.rsplit(|&b| b == b'/').next().unwrap_or(kid);
            Some(TreeRow {
                path: escape(kid),
                name: escape(name),
                fate: info.fate.unwrap_or(Fate::Dir),
                is_dir: info.is_dir,
                has_children: computed.children.contains_key(kid),
                size: info.size,
                in_files: info.in_files,
                in_bytes: info.in_bytes,
                out_files: info.out_files,
                out_bytes: info.out_bytes,
            })
        })
        .collect();
    rows.sort_by(|a, b| {
        (b.in_bytes + b.out_bytes)
            .cmp(&(a.in_bytes + a.out_bytes))
            .then_with(|| a.name.cmp(&b.name))
    });
    let total = rows.len();
    rows.truncate(LIST_CAP);
    (rows, total)
}

/// Everything touched but left out, grouped by reason.
#[derive(Serialize)]
pub struct AuditGroup {
    pub fate: Fate,
    pub count: usize,
    pub bytes: u64,
    pub paths: Vec<(String, u64)>,
}

pub fn audit(computed: &Computed) -> Vec<AuditGroup> {
    let mut groups: BTreeMap<Fate, Vec<(&Vec<u8>, u64)>> = BTreeMap::new();
    for (path, info) in &computed.paths {
        if let Some(fate) = info.fate.filter(|f| !f.in_set() && *f != Fate::Dir) {
            groups.entry(fate).or_default().push((path, info.size));
        }
    }
    groups
        .into_iter()
        .map(|(fate, mut paths)| {
            paths.sort();
            AuditGroup {
                fate,
                count: paths.len(),
                bytes: paths.iter().map(|(_, s)| s).sum(),
                paths: paths
                    .into_iter()
                    .take(LIST_CAP)
                    .map(|(p, s)| (escape(p), s))
                    .collect(),
            }
        })
        .collect()
}

/// Counts of paths per fate.
pub fn fate_counts(computed: &Computed) -> BTreeMap<Fate, usize> {
    let mut counts = BTreeMap::new();
    for info in computed.paths.values() {
        if let Some(fate) = info.fate {
            *counts.entry(fate).or_insert(0) += 1;
        }
    }
    counts
}

/// Whether `path` lies in `dir`'s subtree (the page's include/exclude of a directory).
pub fn within(path: &[u8], dir: &[u8]) -> bool {
    is_within(path, dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::strategy::compute;
    use crate::fixtures::trace::{Proc, Trace};

    const SHELL: Proc = Proc { pid: 10, start: 1 };
    const CAT: Proc = Proc { pid: 11, start: 2 };
    const DATE: Proc = Proc { pid: 12, start: 3 };

    /// A shell that runs cat (reads /etc/app.conf) and date (writes /var/log/app.log).
    fn session(name: &str) -> (Session, PathBuf) {
        let root = std::env::temp_dir().join(format!("depsetfs-ui-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for file in [
            "usr/bin/dash",
            "usr/bin/cat",
            "usr/bin/date",
            "etc/app.conf",
            "var/log/app.log",
        ] {
            let path = root.join(file);
            std::fs::create_dir_all(path.parent().unwrap_or(&root))
                .unwrap_or_else(|e| panic!("{e}"));
            std::fs::write(&path, file).unwrap_or_else(|e| panic!("{e}"));
        }
        let mut trace = Trace::new(&root.to_string_lossy());
        trace.command(SHELL.pid);
        trace.info(SHELL, 1, "/usr/bin/dash", "sh -c x", 10);
        trace.read(SHELL, "/usr/bin/dash", 11);
        trace.spawn(SHELL, CAT, "/usr/bin/cat", "cat /etc/app.conf", 20);
        trace.read(CAT, "/usr/bin/cat", 21);
        trace.read(CAT, "/etc/app.conf", 22);
        trace.spawn(SHELL, DATE, "/usr/bin/date", "date", 30);
        trace.read(DATE, "/usr/bin/date", 31);
        trace.write(DATE, "/var/log/app.log", 32);
        let graph = trace.graph();
        let session = Session::new(
            graph,
            root.join("log"),
            Rules::built_in(),
            Some(root.join("r.toml")),
            Strategy::All,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        (session, root)
    }

    fn set_of(computed: &Computed) -> Vec<Vec<u8>> {
        computed
            .result
            .set
            .entries
            .iter()
            .map(|e| e.path.clone())
            .collect()
    }

    #[test]
    fn the_rules_text_means_what_the_lists_say() {
        let lists = RuleLists::of(&Rules::built_in());
        let text = lists.to_toml(Strategy::Strict, &["exclude \"odd\"\nline".to_string()]);
        let again =
            Rules::from_text(Path::new("t.toml"), &text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(RuleLists::of(&again), lists);
        assert_eq!(glob_escape("/a[1]*?.txt"), "/a[[]1[]][*][?].txt");
    }

    #[test]
    fn tweaks_change_the_set_and_the_saved_file_reproduces_it() {
        let (session, root) = session("tweaks");
        let start = session.current();
        assert!(set_of(&start).contains(&b"/etc/app.conf".to_vec()));
        let after = session
            .apply(Tweak::Exclude {
                glob: "/etc/**".to_string(),
            })
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(!set_of(&after).contains(&b"/etc/app.conf".to_vec()));
        assert_eq!(
            after
                .paths
                .get(b"/etc/app.conf".as_slice())
                .and_then(|p| p.fate),
            Some(Fate::Excluded)
        );
        assert_eq!(session.previous(), Some(start.in_set()));
        // Computed with the needed images of the start reused: the same as from scratch.
        let fresh = compute(
            &session.graph,
            &after.selection,
            &after.rules,
            &session.set_options,
            &StrategyOptions {
                strategy: Strategy::All,
                stubs: false,
            },
        );
        assert_eq!(fresh.set, after.result.set);
        assert_eq!(fresh.needed, after.result.needed);
        let unselected = session
            .apply(Tweak::Select {
                pid: DATE.pid,
                on: false,
                children: false,
            })
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            !unselected
                .selection
                .processes()
                .any(|p| session.graph.processes[p].key.pid == DATE.pid)
        );
        // A bad glob changes nothing.
        assert!(
            session
                .apply(Tweak::Include {
                    glob: "relative".to_string()
                })
                .is_err()
        );
        assert_eq!(session.current().generation, unselected.generation);
        // Saved, read back as `dump --set --rules` does: the same set.
        let saved = session.save().unwrap_or_else(|e| panic!("{e}"));
        let rules = Rules::load(&saved).unwrap_or_else(|e| panic!("{e}"));
        let selection = select(&session.graph, &rules.select).unwrap_or_else(|e| panic!("{e}"));
        let again = compute(
            &session.graph,
            &selection,
            &rules,
            &session.set_options,
            &StrategyOptions {
                strategy: Strategy::All,
                stubs: false,
            },
        );
        assert_eq!(again.set, unselected.result.set);
        let reset = session
            .apply(Tweak::Reset)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(reset.result.set, start.result.set);
        let _ = std::fs::remove_dir_all(root);
    }

    #[test]
    fn the_last_selected_process_cannot_be_unselected() {
        let (session, root) = session("last");
        let error = session.apply(Tweak::Select {
            pid: SHELL.pid,
            on: false,
            children: true,
        });
        assert!(
            matches!(error, Err(ModelError::Tweak(_))),
            "{:?}",
            error.err()
        );
        let _ = std::fs::remove_dir_all(root);
    }
}
