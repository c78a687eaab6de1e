//! depsetfs: find the deployment set of a service by tracing it through a recording FUSE
//! mirror of `/`. See docs/ARCHITECTURE.md for the map of the modules.

pub mod analysis;
pub mod chroot;
pub mod doctor;
pub mod entry_cache;
pub mod event;
#[cfg(test)]
pub(crate) mod fixtures;
pub mod fs;
pub mod inodes;
pub mod log;
pub mod mount;
pub mod netrec;
pub mod passthrough;
pub mod process;
pub mod recorder;
pub mod run;
pub mod seccomp;
pub mod ship;
pub mod state;
pub mod sys;
