//! The analysis side: from a log to a deployment set. It reads only the contract (the records
//! of [`crate::record`] and the log of [`crate::log`]), never the recording side: the log is
//! turned into a [`graph`] of processes, files and endpoints, a [`select`]ion of processes is
//! made, the [`rules`] and a [`strategy`] say what the selection needs, and the [`closure`]
//! adds what the source tree needs around it (parents, symlink chains, devices); [`query`]
//! and [`dump`] answer the analysis commands from the same pieces.

pub mod closure;
pub mod dump;
pub mod fleet;
pub mod graph;
pub mod merge;
pub mod names;
pub mod packages;
pub mod paths;
pub mod plan;
pub mod query;
pub mod rules;
pub mod select;
pub mod source_tree;
pub mod strategy;
pub mod synth;
pub mod ui;
