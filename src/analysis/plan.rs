//! The one pipeline from a log to a set: the log's [`Graph`], the [`Rules`] and the selectors
//! of the command line make a [`Plan`] (selectors of the command line first, then those of the
//! rules file; none: the default selection), and a plan with [`StrategyOptions`] gives the
//! [`StrategySet`] of `dump --set`, `why` and `report` ([`Plan::set`]) or what `export` and
//! `verify` ship ([`Plan::shipment`]: that set, the stubs, and paths a verify round proved
//! missing, all closed over parents and symlinks like used paths).

use std::collections::{BTreeMap, BTreeSet};

use crate::analysis::closure::{DeploymentSet, SetOptions, set_of_used_paths};
use crate::analysis::graph::Graph;
use crate::analysis::rules::Rules;
use crate::analysis::select::{SelectError, Selection, Selector, select};
use crate::analysis::strategy::{
    GraphFacts, StrategyOptions, StrategySet, compute_with_needed, needed_processes,
};

/// What a set is computed from: the log's graph, the rules and the selection.
pub struct Plan {
    pub graph: Graph,
    pub rules: Rules,
    pub selection: Selection,
    /// `--host NAME` on a merged log: the runs of that host, whose files the set holds
    /// (the selection and the needs still cross hosts). `None`: every run's.
    pub host_runs: Option<Vec<u32>>,
}

impl Plan {
    /// The selection of `selectors` (in order: a `children` applies to the selector before
    /// it) followed by the rules file's selectors.
    pub fn new(
        graph: Graph,
        rules: Rules,
        mut selectors: Vec<Selector>,
    ) -> Result<Plan, SelectError> {
        selectors.extend(rules.select.iter().cloned());
        let selection = select(&graph, &selectors)?;
        Ok(Plan {
            graph,
            rules,
            selection,
            host_runs: None,
        })
    }

    /// `--host NAME`: the set becomes that host's (the files its runs' needed processes used,
    /// read from its first run's source tree, which the graph's header then names with the
    /// host's name and addresses).
    pub fn scope_to_host(&mut self, host: &str) -> Result<(), SelectError> {
        let runs: Vec<u32> = (0..self.graph.runs.len() as u32)
            .filter(|&run| self.graph.runs[run as usize].header.host == host)
            .collect();
        let Some(&first) = runs.first() else {
            let mut known: Vec<&str> = self
                .graph
                .runs
                .iter()
                .map(|run| run.header.host.as_str())
                .collect();
            known.sort();
            known.dedup();
            return Err(SelectError::UnknownHost {
                host: host.to_string(),
                known: known.join(", "),
            });
        };
        let chosen = self.graph.runs[first as usize].header.clone();
        let header = &mut self.graph.header;
        header.source = chosen.source;
        header.mountpoint = chosen.mountpoint;
        header.host = chosen.host;
        header.addresses = chosen.addresses;
        header.addresses_from = chosen.addresses_from;
        header.network_recorded = chosen.network_recorded;
        header.command = chosen.command;
        header.label = chosen.label;
        self.host_runs = Some(runs);
        Ok(())
    }

    /// The images of the `--host` runs, by process index (`None` without `--host`).
    fn host_scope(&self) -> Option<Vec<bool>> {
        let runs = self.host_runs.as_ref()?;
        Some(
            self.graph
                .processes
                .iter()
                .map(|process| runs.contains(&process.key.run))
                .collect(),
        )
    }

    /// Where the set's source tree is and what is never shipped, from the log's header.
    pub fn set_options(&self) -> SetOptions {
        SetOptions::from_header(&self.graph.header)
    }

    /// The set of `dump --set` for one strategy.
    pub fn set(&self, strategy: &StrategyOptions) -> StrategySet {
        let mut needed =
            needed_processes(&self.graph, &self.selection, &self.rules, strategy.strategy);
        needed.scope = self.host_scope();
        compute_with_needed(
            &self.graph,
            &self.rules,
            &self.set_options(),
            strategy,
            needed,
        )
    }

    /// The set of [`Plan::set`], plus `extra` paths closed like used paths (excludes do not
    /// apply to them: they are what the command proved it needs), and the stubs: with
    /// `strategy.stubs`, the binaries the strategy lists as stubs are added to the set (with
    /// their directories and symlinks) and returned, to be shipped as the stub program.
    pub fn shipment(&self, strategy: &StrategyOptions, extra: &BTreeSet<Vec<u8>>) -> Shipment {
        let result = self.set(strategy);
        let rules_warning = result.rules_warning(&self.rules);
        let stubs: BTreeSet<Vec<u8>> = result.stubs.iter().map(|stub| stub.path.clone()).collect();
        let mut added_paths = extra.clone();
        added_paths.extend(stubs.iter().cloned());
        let set = if added_paths.is_empty() {
            result.set
        } else {
            let facts = GraphFacts::new(&self.graph, &result.needed);
            let added = set_of_used_paths(&added_paths, &self.set_options(), &facts);
            merge_sets(result.set, added)
        };
        Shipment {
            set,
            stubs,
            rules_warning,
        }
    }
}

/// What `export` and a `verify` round ship.
pub struct Shipment {
    pub set: DeploymentSet,
    /// The binaries shipped as the stub program.
    pub stubs: BTreeSet<Vec<u8>>,
    /// Said once by the caller: the rules file removed every path the selection used.
    pub rules_warning: Option<String>,
}

/// The union of two sets (the first one's entry wins for a path in both).
pub fn merge_sets(base: DeploymentSet, added: DeploymentSet) -> DeploymentSet {
    let mut entries: BTreeMap<Vec<u8>, _> = BTreeMap::new();
    for entry in added.entries.into_iter().chain(base.entries) {
        entries.insert(entry.path.clone(), entry);
    }
    let mut devices: BTreeSet<Vec<u8>> = base.required_devices.into_iter().collect();
    devices.extend(added.required_devices);
    DeploymentSet {
        entries: entries.into_values().collect(),
        required_devices: devices.into_iter().collect(),
        dropped_missing: base.dropped_missing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::closure::{Reason, SetEntry};
    use crate::record::FileKind;

    fn entry(path: &str) -> SetEntry {
        SetEntry {
            path: path.as_bytes().to_vec(),
            kind: FileKind::File,
            size: 1,
            reason: Reason::Used,
            users: Vec::new(),
        }
    }
    #[test]
    fn merged_sets_are_sorted_and_unique() {
        let base = DeploymentSet {
            entries: vec![entry("/a"), entry("/c")],
            required_devices: vec![b"/dev/null".to_vec()],
            dropped_missing: 2,
        };
        let added = DeploymentSet {
            entries: vec![entry("/b"), entry("/c")],
            required_devices: vec![b"/dev/null".to_vec(), b"/dev/zero".to_vec()],
            dropped_missing: 0,
        };
        let merged = merge_sets(base, added);
        let paths: Vec<&[u8]> = merged.entries.iter().map(|e| e.path.as_slice()).collect();
        assert_eq!(paths, [b"/a".as_slice(), b"/b", b"/c"]);
        assert_eq!(merged.required_devices.len(), 2);
        assert_eq!(merged.dropped_missing, 2);
    }
}
