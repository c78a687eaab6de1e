//! Starting and stopping the daemon (the client side of the recording): `mount` checks a
//! request, starts `depsetfs __serve` and waits for it to be ready; `umount` unmounts and
//! stops it (also after it died); `run` does the whole flow in a private namespace; `chroot`
//! runs a command on a mounted mirror with the network recorded; `doctor` checks the machine
//! for the mirror; `image` reads and unpacks the OCI image `run --image` traces. This side may import the daemon (`crate::mirror`, to start it), the contract
//! (`crate::record`, `crate::log`), the state directory and the system layer; never analysis.

pub mod chroot;
pub mod doctor;
pub mod host;
pub mod image;
pub mod mount;
pub mod run;
pub mod umount;
