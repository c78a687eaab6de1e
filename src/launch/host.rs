//! Which host a log was recorded on: its name (`--host`, default the hostname) and the
//! addresses that identify it on the network, written into the log header. The addresses are
//! the interface addresses of one network namespace, read with `getifaddrs(3)` from a helper
//! thread that first enters that namespace with `setns(2)` (a network namespace is per thread,
//! so the rest of the process stays where it is): for `run --netns PATH`, the namespace the
//! command is put in; otherwise the namespace of the caller of `mount`/`run`. Loopback and
//! link-local addresses are left out: every host has them, so they name no host. Addresses
//! given with `--address` (a NAT's public address, a DNS name) are added as declared. See
//! docs/hosts.md.

use std::ffi::CStr;
use std::fs::File;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

pub use crate::record::HostIdentity;

/// The host options of `mount` and `run`.
#[derive(Clone, Debug, Default)]
pub struct HostOptions {
    /// `--host`: the host's name (default: the hostname).
    pub name: Option<String>,
    /// `run --netns`: the network namespace the command runs in (and whose addresses count).
    pub netns: Option<PathBuf>,
    /// `--address`: more addresses or names that reach this host (a NAT's public side).
    pub declared: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("--netns {}: {source}", path.display())]
    Netns {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot list the interface addresses: {0}")]
    Addresses(#[source] io::Error),
}

impl HostOptions {
    /// The identity for the header: the name, then the addresses of the namespace.
    pub fn identity(&self) -> Result<HostIdentity, HostError> {
        let name = self.name.clone().unwrap_or_else(hostname);
        let (found, from) = match &self.netns {
            Some(path) => {
                let found = addresses_in(path)?;
                (found, format!("the network namespace {}", path.display()))
            }
            None => (
                interface_addresses().map_err(HostError::Addresses)?,
                "the network namespace depsetfs was started in".to_owned(),
            ),
        };
        let mut addresses: Vec<String> = found.iter().map(IpAddr::to_string).collect();
        for declared in &self.declared {
            if !addresses.contains(declared) {
                addresses.push(declared.clone());
            }
        }
        let from = if self.declared.is_empty() {
            from
        } else {
            format!("{from}, and --address")
        };
        Ok(HostIdentity {
            name,
            addresses,
            addresses_from: from,
        })
    }
}

/// The interface addresses of the network namespace at `path` (`/run/netns/NAME`,
/// `/proc/PID/ns/net`), read by a thread that enters it.
pub fn addresses_in(path: &Path) -> Result<Vec<IpAddr>, HostError> {
    let netns_error = |source| HostError::Netns {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(netns_error)?;
    let found = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                // SAFETY: a valid descriptor; CLONE_NEWNET only moves this thread.
                if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(io::Error::last_os_error());
                }
                interface_addresses()
            })
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the address thread panicked")))
    });
    found.map_err(netns_error)
}

/// The addresses of this thread's network namespace, without loopback and link-local ones,
/// each once, in the order the kernel lists them.
pub fn interface_addresses() -> io::Result<Vec<IpAddr>> {
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: valid out pointer; freed below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut found = Vec::new();
    let mut entry = list;
    while !entry.is_null() {
        // SAFETY: entries of the list getifaddrs returned, valid until freeifaddrs.
        let ifa = unsafe { &*entry };
        if let Some(address) = unsafe { ip_of(ifa.ifa_addr) }
            && names_a_host(address)
            && !found.contains(&address)
        {
            found.push(address);
        }
        entry = ifa.ifa_next;
    }
    // SAFETY: the list getifaddrs returned, freed once.
    unsafe { libc::freeifaddrs(list) };
    Ok(found)
}

/// The IP address of a `sockaddr` (None for other families or none).
///
/// # Safety
/// `addr` is null or points to a sockaddr of the size its family implies.
unsafe fn ip_of(addr: *const libc::sockaddr) -> Option<IpAddr> {
    if addr.is_null() {
        return None;
    }
    // SAFETY: non-null, and the family says which struct it is.
    unsafe {
        match i32::from((*addr).sa_family) {
            libc::AF_INET => {
                let v4 = &*(addr as *const libc::sockaddr_in);
                Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr))))
            }
            libc::AF_INET6 => {
                let v6 = &*(addr as *const libc::sockaddr_in6);
                Some(IpAddr::V6(Ipv6Addr::from(v6.sin6_addr.s6_addr)))
            }
            _ => None,
        }
    }
}

/// Whether an address can tell one host from another: not loopback, not link-local, not
/// unspecified.
pub fn names_a_host(address: IpAddr) -> bool {
    match address {
        IpAddr::V4(v4) => !(v4.is_loopback() || v4.is_link_local() || v4.is_unspecified()),
        IpAddr::V6(v6) => {
            !(v6.is_loopback()
                || v6.is_unspecified()
                || (v6.segments()[0] & 0xffc0) == 0xfe80
                || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()))
        }
    }
}

/// The hostname (`uname -n`), or `localhost` when it cannot be read.
pub fn hostname() -> String {
    // SAFETY: utsname is plain data filled by the kernel.
    let mut name: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: valid out pointer.
    if unsafe { libc::uname(&mut name) } != 0 {
        return "localhost".to_owned();
    }
    // SAFETY: the kernel NUL-terminates nodename.
    let node = unsafe { CStr::from_ptr(name.nodename.as_ptr()) };
    node.to_string_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_and_link_local_name_no_host() {
        for address in [
            "127.0.0.1",
            "::1",
            "169.254.1.2",
            "fe80::1",
            "0.0.0.0",
            "::",
        ] {
            let ip: IpAddr = address.parse().expect("an address");
            assert!(!names_a_host(ip), "{address}");
        }
        for address in ["10.213.0.1", "192.168.1.3", "2001:db8::1"] {
            let ip: IpAddr = address.parse().expect("an address");
            assert!(names_a_host(ip), "{address}");
        }
    }

    #[test]
    fn declared_addresses_follow_the_found_ones_once() {
        let options = HostOptions {
            name: Some("web".to_owned()),
            netns: None,
            declared: vec!["203.0.113.7".to_owned(), "203.0.113.7".to_owned()],
        };
        let identity = options.identity().expect("addresses of this namespace");
        assert_eq!(identity.name, "web");
        let declared = identity
            .addresses
            .iter()
            .filter(|a| *a == "203.0.113.7")
            .count();
        assert_eq!(declared, 1, "{identity:?}");
        assert!(identity.addresses_from.ends_with("and --address"));
    }

    #[test]
    fn a_missing_namespace_is_named_in_the_error() {
        let error = addresses_in(Path::new("/nonexistent/netns")).expect_err("no such file");
        assert!(
            error
                .to_string()
                .starts_with("--netns /nonexistent/netns: ")
        );
    }
}
