//! How FUSE requests reach the operation handlers and their answers go back: fuser's threads
//! reading /dev/fuse, or FUSE over io_uring (per-CPU queues, Linux >= 6.14). Both call the same
//! handlers of `mirror/fs.rs`, which answer through the traits of [`replies`].

pub mod dev;
pub mod replies;
pub mod uring;
