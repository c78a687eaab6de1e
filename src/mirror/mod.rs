//! The daemon: the recording FUSE mirror of a source tree (the recording side of the log).
//!
//! The path of one request: the kernel hands a FUSE request to one of the daemon's threads,
//! which calls the operation handler in [`fs`]; the handler takes its node(s) from the inode
//! table ([`inodes`]), makes the underlying `*at()` call on the node's descriptor, opens files
//! in the I/O mode of their inode ([`io_mode`]), replies to the kernel (after the entry cache's
//! turn for the caller, [`entry_cache`]), then records one access with the calling process
//! ([`process`]) through the [`recorder`], which writes the log (`crate::log`). Network calls
//! never reach FUSE: they come through the [`seccomp`] filter and the control socket
//! ([`network`]). The daemon's body (mount, isolate, serve, flush) is `serve`; starting and
//! stopping it is `crate::launch`. This side imports only the contract (`crate::record`,
//! `crate::log`), the system layer (`crate::sys`) and the state directory (`crate::state`).

pub mod entry_cache;
pub mod fs;
pub mod inodes;
pub mod io_mode;
pub mod network;
pub mod process;
pub mod recorder;
pub mod seccomp;
pub mod serve;
pub mod transport;
