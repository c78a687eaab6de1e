//! depsetfs: find the deployment set of a service by tracing it through a recording FUSE
//! mirror of `/`. See docs/ARCHITECTURE.md for the map of the modules.

pub mod capture;
pub mod dump;
pub mod event;
pub mod export;
pub mod graph;
pub mod launch;
pub mod log;
pub mod mirror;
pub mod names;
pub mod progress;
pub mod query;
pub mod rules;
pub mod select;
pub mod set;
pub mod state;
pub mod strategy;
pub mod synth;
pub mod sys;
pub mod verify;
