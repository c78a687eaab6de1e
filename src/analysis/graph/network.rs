//! Network endpoints and connect edges from [`crate::record::NetEvent`] records. A process that
//! bound, listened on or accepted on an address serves it; a `connect` from another process to
//! an address served at or before that time is a connect edge client -> server. Addresses
//! match when they are equal, when the server bound the unspecified address of the family
//! (`0.0.0.0`, or `::`, which also serves IPv4 when dual-stack) on the same port, and when the
//! socket types agree (or one is unknown). Abstract unix sockets (`@name`) match by name.
//! Unix path sockets are left to the FUSE-based edges (`build.rs`): their bind is a `mknod`.
//! In a merged log a server of one run answers a client of another run only when the runs
//! name different hosts and the client's target IP is one of the server run's `addresses`
//! (docs/hosts.md: no NAT between traced hosts unless declared with `--address`); a target
//! no traced host owns stays an external endpoint. Memory: one entry per (image, call,
//! address, type), never per event.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use crate::analysis::graph::uses::{ProcessId, UseTotals};
use crate::analysis::graph::{
    EndpointKey, EndpointNode, Graph, ProcessEdge, ProcessIx, ProcessLink, RunInfo,
};
use crate::record::{NetCall, NetEvent, NetFamily, TimeNs};

/// What one process did with one address, added up: the key of [`NetUses`].
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NetUseKey {
    pub process: ProcessId,
    pub call: NetCall,
    pub family: NetFamily,
    pub address: String,
    pub socket_type: Option<String>,
}

/// The first pass's summary of the `Net` records.
#[derive(Clone, Debug, Default)]
pub struct NetUses {
    pub uses: BTreeMap<NetUseKey, UseTotals>,
    /// Some `traced` record says a filter was handed to the daemon.
    pub traced: bool,
}

impl NetUses {
    /// One record of run `run`.
    pub fn add(&mut self, run: u32, event: &NetEvent) {
        if event.call == NetCall::Traced {
            self.traced = true;
            return;
        }
        let key = NetUseKey {
            process: ProcessId {
                run,
                pid: event.pid,
                start: event.start,
            },
            call: event.call,
            family: event.family,
            address: event.address.clone(),
            socket_type: event.socket_type.clone(),
        };
        let totals = self.uses.entry(key).or_insert(UseTotals {
            count: 0,
            bytes: 0,
            first_ns: event.ts_ns,
            last_ns: event.ts_ns,
        });
        totals.count += 1;
        totals.first_ns = totals.first_ns.min(event.ts_ns);
        totals.last_ns = totals.last_ns.max(event.ts_ns);
    }
}

/// A network use attributed to a process image.
#[derive(Clone, Debug)]
pub struct ImageNetUse {
    pub image: ProcessIx,
    pub key: NetUseKey,
    pub totals: UseTotals,
}

/// An address a process can serve or connect to: an IP socket address, or an abstract unix
/// name.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Address {
    Ip(SocketAddr),
    Abstract(String),
}

fn address_of(family: NetFamily, text: &str) -> Option<Address> {
    match family {
        NetFamily::Inet | NetFamily::Inet6 => text.parse().ok().map(Address::Ip),
        NetFamily::Unix if text.starts_with('@') => Some(Address::Abstract(text.to_owned())),
        _ => None,
    }
}

/// Whether a server bound to `bound` receives a connect to `target`.
fn serves(bound: &Address, target: &Address) -> bool {
    match (bound, target) {
        (Address::Abstract(a), Address::Abstract(b)) => a == b,
        (Address::Ip(bound), Address::Ip(target)) => {
            if bound.port() == 0 || bound.port() != target.port() {
                return false;
            }
            match (bound.ip(), target.ip()) {
                (IpAddr::V4(b), IpAddr::V4(t)) => b.is_unspecified() || b == t,
                (IpAddr::V6(b), IpAddr::V6(t)) => {
                    b.is_unspecified() || b == t || b.to_ipv4_mapped() == t.to_ipv4_mapped()
                }
                // `::` serves IPv4 too (unless IPV6_V6ONLY, which the log does not show);
                // a v4-mapped bind serves its IPv4 address.
                (IpAddr::V6(b), IpAddr::V4(t)) => {
                    b.is_unspecified() || b.to_ipv4_mapped() == Some(t)
                }
                (IpAddr::V4(b), IpAddr::V6(t)) => {
                    t.to_ipv4_mapped() == Some(b)
                        || (b.is_unspecified() && t.to_ipv4_mapped().is_some())
                }
            }
        }
        _ => false,
    }
}

/// The address as IPv4 when it is a v4-mapped IPv6 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Whether a server of run `server_run` may have answered a client of run `client_run` that
/// connected to `target`: always within one run; across runs only when they name different
/// hosts and `target` is an address of the server's host (its header's `addresses`).
/// Loopback and abstract unix sockets never cross runs.
fn crosses_to(runs: &[RunInfo], server_run: u32, client_run: u32, target: &Address) -> bool {
    if server_run == client_run {
        return true;
    }
    let (Some(server), Some(client)) =
        (runs.get(server_run as usize), runs.get(client_run as usize))
    else {
        return false;
    };
    let Address::Ip(target) = target else {
        return false;
    };
    let target = canonical(target.ip());
    server.header.host != client.header.host
        && !target.is_loopback()
        && server
            .header
            .addresses
            .iter()
            .filter_map(|address| address.parse::<IpAddr>().ok())
            .any(|address| canonical(address) == target)
}

fn types_agree(a: &Option<String>, b: &Option<String>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a == b,
        _ => true,
    }
}

fn describe(key: &NetUseKey) -> EndpointKey {
    match key.family {
        NetFamily::Unix => EndpointKey::AbstractUnix(key.address.clone()),
        _ => {
            let protocol = match key.socket_type.as_deref() {
                Some("stream") => "tcp",
                Some("dgram") => "udp",
                _ => key.family.name(),
            };
            EndpointKey::Inet(format!("{protocol}:{}", key.address))
        }
    }
}

/// Adds one endpoint per served address (its servers and the clients that reached it) and
/// per address connected to that nobody in the log served (clients only: the target must
/// provide that service), and the connect edges.
pub fn add_network_endpoints(graph: &mut Graph, uses: Vec<ImageNetUse>) {
    let mut servers: Vec<(Address, &ImageNetUse)> = Vec::new();
    let mut clients: Vec<(Address, &ImageNetUse)> = Vec::new();
    for net_use in &uses {
        let Some(address) = address_of(net_use.key.family, &net_use.key.address) else {
            continue;
        };
        if matches!(address, Address::Ip(ip) if ip.port() == 0) {
            // A bind to port 0 picks a port: its listen record names it.
            continue;
        }
        match net_use.key.call {
            NetCall::Bind | NetCall::Listen | NetCall::Accept => servers.push((address, net_use)),
            NetCall::Connect => clients.push((address, net_use)),
            NetCall::Traced => {}
        }
    }
    // One endpoint per distinct served (family, address, type).
    let mut endpoint_of_server: BTreeMap<(NetFamily, String, Option<String>), usize> =
        BTreeMap::new();
    for (_, server) in &servers {
        let key = (
            server.key.family,
            server.key.address.clone(),
            server.key.socket_type.clone(),
        );
        let endpoint = *endpoint_of_server.entry(key).or_insert_with(|| {
            graph.endpoints.push(EndpointNode {
                key: describe(&server.key),
                file: None,
                binders: Vec::new(),
                clients: Vec::new(),
            });
            graph.endpoints.len() - 1
        });
        add_side(
            &mut graph.endpoints[endpoint].binders,
            server.image,
            &server.totals,
        );
    }
    let mut unserved: BTreeMap<(NetFamily, String, Option<String>), usize> = BTreeMap::new();
    for (address, client) in &clients {
        let mut matched = false;
        for (bound, server) in &servers {
            // Runs of a merged log have their own pid spaces: a server of one run answered
            // a client of another only across hosts, at an address of the server's host.
            if !crosses_to(
                &graph.runs,
                server.key.process.run,
                client.key.process.run,
                address,
            ) || !serves(bound, address)
                || !types_agree(&server.key.socket_type, &client.key.socket_type)
                || server.totals.first_ns > client.totals.last_ns
            {
                continue;
            }
            matched = true;
            let key = (
                server.key.family,
                server.key.address.clone(),
                server.key.socket_type.clone(),
            );
            let endpoint = endpoint_of_server[&key];
            add_side(
                &mut graph.endpoints[endpoint].clients,
                client.image,
                &client.totals,
            );
            if server.image != client.image {
                add_connect(graph, client.image, server.image, endpoint, client, server);
            }
        }
        if !matched {
            let key = (
                client.key.family,
                client.key.address.clone(),
                client.key.socket_type.clone(),
            );
            let endpoint = *unserved.entry(key).or_insert_with(|| {
                graph.endpoints.push(EndpointNode {
                    key: describe(&client.key),
                    file: None,
                    binders: Vec::new(),
                    clients: Vec::new(),
                });
                graph.endpoints.len() - 1
            });
            add_side(
                &mut graph.endpoints[endpoint].clients,
                client.image,
                &client.totals,
            );
        }
    }
}

fn add_side(side: &mut Vec<(ProcessIx, UseTotals)>, image: ProcessIx, totals: &UseTotals) {
    match side.iter_mut().find(|(known, _)| *known == image) {
        Some((_, known)) => {
            known.count += totals.count;
            known.first_ns = known.first_ns.min(totals.first_ns);
            known.last_ns = known.last_ns.max(totals.last_ns);
        }
        None => side.push((image, *totals)),
    }
}

/// One connect edge per (client, server, endpoint), at the first connect after the serve.
fn add_connect(
    graph: &mut Graph,
    client: ProcessIx,
    server: ProcessIx,
    endpoint: usize,
    client_use: &ImageNetUse,
    server_use: &ImageNetUse,
) {
    let at_ns: TimeNs = client_use.totals.first_ns.max(server_use.totals.first_ns);
    if let Some(edge) = graph.process_edges.iter_mut().find(|edge| {
        edge.link == ProcessLink::Connect
            && edge.from == client
            && edge.to == server
            && edge.endpoint == Some(endpoint)
    }) {
        edge.at_ns = edge.at_ns.min(at_ns);
        return;
    }
    graph.process_edges.push(ProcessEdge {
        from: client,
        to: server,
        link: ProcessLink::Connect,
        at_ns,
        endpoint: Some(endpoint),
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> Address {
        Address::Ip(text.parse().expect("socket address"))
    }

    #[test]
    fn addresses_match_exactly_or_through_the_unspecified_address() {
        assert!(serves(&ip("127.0.0.1:80"), &ip("127.0.0.1:80")));
        assert!(!serves(&ip("127.0.0.1:80"), &ip("127.0.0.1:81")));
        // Linux refuses a connect to 127.0.0.2 when the server bound 127.0.0.1 only.
        assert!(!serves(&ip("127.0.0.1:80"), &ip("127.0.0.2:80")));
        assert!(serves(&ip("0.0.0.0:80"), &ip("127.0.0.2:80")));
        assert!(serves(&ip("0.0.0.0:80"), &ip("10.1.2.3:80")));
        assert!(!serves(&ip("0.0.0.0:0"), &ip("10.1.2.3:0")));
        assert!(serves(&ip("[::]:80"), &ip("[::1]:80")));
        assert!(serves(&ip("[::]:80"), &ip("127.0.0.1:80")), "dual stack");
        assert!(serves(&ip("[::ffff:127.0.0.1]:80"), &ip("127.0.0.1:80")));
        assert!(serves(&ip("127.0.0.1:80"), &ip("[::ffff:127.0.0.1]:80")));
        assert!(!serves(&ip("[::1]:80"), &ip("127.0.0.1:80")));
        assert!(serves(
            &Address::Abstract("@bus".into()),
            &Address::Abstract("@bus".into())
        ));
        assert!(!serves(
            &Address::Abstract("@bus".into()),
            &Address::Abstract("@bus2".into())
        ));
        assert_eq!(address_of(NetFamily::Unix, "/run/x.sock"), None);
        assert!(types_agree(&Some("stream".into()), &None));
        assert!(!types_agree(&Some("stream".into()), &Some("dgram".into())));
    }
}
