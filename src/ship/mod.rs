//! The shipping side: from a deployment set to something that runs elsewhere. [`export`]
//! writes the set as a directory, a tar stream or an OCI image; [`verify`] proves a set runs
//! by exporting it into a clean root and running the command there through the mirror;
//! [`compare`] reads sets, targets' manifests and exported trees and compares them.

pub mod apt_pins;
pub mod capture;
pub mod compare;
pub mod export;
pub mod host_refs;
pub mod progress;
pub mod verify;
