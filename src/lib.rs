//! depsetfs: find the deployment set of a service by tracing it through a recording FUSE
//! mirror of `/`. See docs/ARCHITECTURE.md for the map of the modules.

pub mod dump;
pub mod event;
pub mod fs;
pub mod inodes;
pub mod log;
pub mod passthrough;
pub mod mount;
pub mod process;
pub mod recorder;
pub mod run;
pub mod graph;
pub mod rules;
pub mod select;
pub mod set;
pub mod strategy;
pub mod query;
pub mod state;
pub mod sys;
