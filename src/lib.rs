//! depsetfs: find the deployment set of a service by tracing it through a recording FUSE
//! mirror of `/`. See docs/ARCHITECTURE.md for the map of the modules.

pub mod capture;
pub mod chroot;
pub mod doctor;
pub mod dump;
pub mod entry_cache;
pub mod event;
pub mod export;
pub mod fs;
pub mod graph;
pub mod inodes;
pub mod log;
pub mod mount;
pub mod names;
pub mod netrec;
pub mod passthrough;
pub mod process;
pub mod progress;
pub mod query;
pub mod recorder;
pub mod rules;
pub mod run;
pub mod seccomp;
pub mod select;
pub mod set;
pub mod state;
pub mod strategy;
pub mod synth;
pub mod sys;
pub mod ui;
pub mod verify;
