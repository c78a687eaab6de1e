//! `depsetfs graph`: the process graph of a log for Graphviz (`--format dot`) and for scripts
//! (`--format json`, documented in docs/ui.md). Nodes are process images (selected ones bold,
//! needed ones filled); edges are fork, exec and connect links. With `files`, the files of the
//! set each needed image used are added as nodes (edges image -> file).

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;

use crate::analysis::closure::Reason;
use crate::analysis::graph::{Graph, ProcessLink};
use crate::analysis::names::escape;
use crate::analysis::select::Selection;
use crate::analysis::strategy::StrategySet;

fn dot_quote(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '\n' => out.push_str("\\n"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn label(graph: &Graph, process: usize) -> String {
    let node = &graph.processes[process];
    let command = if node.argv.is_empty() {
        node.exe_text()
    } else {
        node.argv.join(" ")
    };
    let command: String = command.chars().take(60).collect();
    let run = if graph.is_merged() {
        format!("{}:", graph.run_display(node.key.run))
    } else {
        String::new()
    };
    format!("{run}{}#{}\n{}", node.key.pid, node.key.exec_index, command)
}

/// The graph in Graphviz's language.
pub fn dot(graph: &Graph, selection: &Selection, result: &StrategySet) -> String {
    dot_with_files(graph, selection, result, false)
}

pub fn dot_with_files(
    graph: &Graph,
    selection: &Selection,
    result: &StrategySet,
    files: bool,
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "digraph depsetfs {{");
    let _ = writeln!(out, "  rankdir=LR;");
    let _ = writeln!(
        out,
        "  node [shape=box, fontname=\"monospace\", fontsize=10];"
    );
    for process in 0..graph.processes.len() {
        let mut style = Vec::new();
        if result.needed.contains(process) {
            style.push("filled");
        }
        if selection.contains(process) {
            style.push("bold");
        }
        let _ = writeln!(
            out,
            "  p{process} [label={}, style={}, fillcolor=\"#c8e6c9\"];",
            dot_quote(&label(graph, process)),
            dot_quote(&style.join(","))
        );
    }
    for edge in &graph.process_edges {
        let attrs = match edge.link {
            ProcessLink::Fork => "style=solid".to_string(),
            ProcessLink::Exec => "style=bold, color=\"#1565c0\"".to_string(),
            ProcessLink::Connect => {
                let endpoint = edge
                    .endpoint
                    .map(|e| graph.endpoints[e].key.describe())
                    .unwrap_or_default();
                format!(
                    "style=dashed, color=\"#c62828\", label={}",
                    dot_quote(&endpoint)
                )
            }
        };
        let _ = writeln!(out, "  p{} -> p{} [{attrs}];", edge.from, edge.to);
    }
    if files {
        for (ix, entry) in result
            .set
            .entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.reason == Reason::Used)
        {
            let _ = writeln!(
                out,
                "  f{ix} [shape=note, label={}];",
                dot_quote(&escape(&entry.path))
            );
            let Some(file) = graph.file(&entry.path) else {
                continue;
            };
            let users: std::collections::BTreeSet<usize> = graph
                .edges_of_file(file)
                .filter(|e| e.succeeded() && result.needed.contains(e.process))
                .map(|e| e.process)
                .collect();
            for user in users {
                let _ = writeln!(out, "  p{user} -> f{ix} [color=\"#9e9e9e\"];");
            }
        }
    }
    let _ = writeln!(out, "}}");
    out
}

#[derive(Serialize)]
pub struct JsonGraph {
    pub strategy: &'static str,
    pub processes: Vec<JsonProcess>,
    pub links: Vec<JsonLink>,
    /// Set paths by reason; `used` with the images that used each.
    pub files: Vec<JsonFile>,
}

#[derive(Serialize)]
pub struct JsonProcess {
    pub id: usize,
    pub pid: u32,
    pub exec_index: u32,
    pub ppid: u32,
    pub exe: String,
    pub argv: Vec<String>,
    pub uid: u32,
    pub exit_status: Option<i32>,
    pub selected: bool,
    pub needed: bool,
}

#[derive(Serialize)]
pub struct JsonLink {
    pub from: usize,
    pub to: usize,
    pub link: ProcessLink,
    pub endpoint: Option<String>,
}

#[derive(Serialize)]
pub struct JsonFile {
    pub path: String,
    pub reason: &'static str,
    pub size: u64,
    pub used_by: Vec<usize>,
}

pub fn json(graph: &Graph, selection: &Selection, result: &StrategySet) -> JsonGraph {
    let processes = graph
        .processes
        .iter()
        .enumerate()
        .map(|(id, node)| JsonProcess {
            id,
            pid: node.key.pid,
            exec_index: node.key.exec_index,
            ppid: node.ppid,
            exe: node.exe_text(),
            argv: node.argv.clone(),
            uid: node.uid,
            exit_status: node.exit_status,
            selected: selection.contains(id),
            needed: result.needed.contains(id),
        })
        .collect();
    let links = graph
        .process_edges
        .iter()
        .map(|edge| JsonLink {
            from: edge.from,
            to: edge.to,
            link: edge.link,
            endpoint: edge.endpoint.map(|e| graph.endpoints[e].key.describe()),
        })
        .collect();
    let mut used_by: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for edge in &graph.file_edges {
        if edge.succeeded() && result.needed.contains(edge.process) {
            used_by.entry(edge.file).or_default().push(edge.process);
        }
    }
    let files = result
        .set
        .entries
        .iter()
        .map(|entry| {
            let mut users = graph
                .file(&entry.path)
                .and_then(|f| used_by.get(&f).cloned())
                .unwrap_or_default();
            users.sort_unstable();
            users.dedup();
            JsonFile {
                path: escape(&entry.path),
                reason: entry.reason.name(),
                size: entry.size,
                used_by: users,
            }
        })
        .collect();
    JsonGraph {
        strategy: result.strategy.name(),
        processes,
        links,
        files,
    }
}
