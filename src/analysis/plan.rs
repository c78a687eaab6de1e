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
use crate::analysis::strategy::{GraphFacts, StrategyOptions, StrategySet, compute};

/// What a set is computed from: the log's graph, the rules and the selection.
pub struct Plan {
    pub graph: Graph,
    pub rules: Rules,
    pub selection: Selection,
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
        })
    }

    /// Where the set's source tree is and what is never shipped, from the log's header.
    pub fn set_options(&self) -> SetOptions {
        SetOptions::from_header(&self.graph.header)
    }

    /// The set of `dump --set` for one strategy.
    pub fn set(&self, strategy: &StrategyOptions) -> StrategySet {
        compute(
            &self.graph,
            &self.selection,
            &self.rules,
            &self.set_options(),
            strategy,
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
