//! depsetfs: find the deployment set of a service by tracing it through a recording FUSE
//! mirror of `/`. See docs/ARCHITECTURE.md for the map of the modules.

pub mod analysis;
#[cfg(test)]
pub(crate) mod fixtures;
pub mod launch;
pub mod log;
pub mod mirror;
pub mod record;
pub mod ship;
pub mod state;
pub mod sys;
