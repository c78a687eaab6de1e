//! STUB (replaced by the real process tracker).
use crate::recorder::Recorder;
use std::path::PathBuf;
use std::sync::Arc;
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Caller {
    pub pid: u32,
    pub tid: u32,
    pub start: u64,
}
pub struct ProcessTracker;
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("proc connector unavailable: {source}")]
    ConnectorUnavailable { source: std::io::Error },
}
impl ProcessTracker {
    pub fn new(_recorder: Recorder, _mirror_prefix: Option<PathBuf>) -> Arc<ProcessTracker> {
        Arc::new(ProcessTracker)
    }
    pub fn identify(&self, tid: u32) -> Caller {
        Caller {
            pid: tid,
            tid,
            start: 0,
        }
    }
    pub fn start_connector(self: &Arc<Self>) -> Result<(), ProcessError> {
        Ok(())
    }
    pub fn stop(&self) {}
}
