//! `export --format compose`: every host of a merged log as a service. The caller exports each
//! host's set as an OCI image layout in `OUTPUT/HOST/` ([`super::oci`]); this module says what
//! the compose file holds and writes it (`OUTPUT/compose.yaml`, a small fixed shape written by
//! hand, every string JSON-quoted, which YAML reads as a double-quoted scalar): per host one
//! service with its image, its hostname, the entrypoint and working directory of its first
//! run's traced command, the ports its processes listened on (not loopback ones), its address
//! on one shared network when the hosts' IPv4 addresses share a /24 (so configurations that name
//! a host by address keep working), and `depends_on` the hosts whose servers its processes
//! connected to (the cross-host connect edges of `merge`).

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use crate::analysis::graph::{EndpointKey, Graph, ProcessLink};

/// The network every service joins.
pub const NETWORK: &str = "depsetfs";

/// One host's service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    /// The host's name as its runs' headers give it.
    pub host: String,
    /// The service name and the directory of its image layout: the host name with anything
    /// but `[a-z0-9._-]` replaced by `-`.
    pub name: String,
    pub entrypoint: Vec<String>,
    pub working_dir: Option<String>,
    /// `PORT/tcp` or `PORT/udp`.
    pub ports: Vec<String>,
    /// The host's first IPv4 address from its header.
    pub address: Option<Ipv4Addr>,
    /// Service names of the hosts this one connected to.
    pub depends_on: Vec<String>,
}

/// A compose service name for a host name.
pub fn service_name(host: &str) -> String {
    let name: String = host
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '.' | '_' | '-') => c,
            _ => '-',
        })
        .collect();
    if name.is_empty() {
        "host".to_string()
    } else {
        name
    }
}

/// The hosts of the log's runs, in run order, each once.
pub fn hosts(graph: &Graph) -> Vec<String> {
    let mut hosts: Vec<String> = Vec::new();
    for run in &graph.runs {
        if !hosts.contains(&run.header.host) {
            hosts.push(run.header.host.clone());
        }
    }
    hosts
}

/// The service of every host.
pub fn services(graph: &Graph) -> Vec<Service> {
    let host_of_run = |run: u32| -> &str {
        graph
            .runs
            .get(run as usize)
            .map_or("", |info| info.header.host.as_str())
    };
    hosts(graph)
        .into_iter()
        .map(|host| {
            let first = graph
                .runs
                .iter()
                .find(|run| run.header.host == host)
                .map(|run| &run.header);
            let command = first.and_then(|header| header.command.as_ref());
            let mut ports: BTreeSet<(u16, &str)> = BTreeSet::new();
            for endpoint in &graph.endpoints {
                let EndpointKey::Inet(text) = &endpoint.key else {
                    continue;
                };
                let Some((protocol, address)) = text.split_once(':') else {
                    continue;
                };
                let Ok(address) = address.parse::<SocketAddr>() else {
                    continue;
                };
                let on_host = endpoint
                    .binders
                    .iter()
                    .any(|(process, _)| host_of_run(graph.processes[*process].key.run) == host);
                if on_host
                    && matches!(protocol, "tcp" | "udp")
                    && address.port() != 0
                    && !address.ip().is_loopback()
                {
                    ports.insert((address.port(), protocol));
                }
            }
            let mut depends_on: BTreeSet<String> = BTreeSet::new();
            for edge in &graph.process_edges {
                let from = host_of_run(graph.processes[edge.from].key.run);
                let to = host_of_run(graph.processes[edge.to].key.run);
                if edge.link == ProcessLink::Connect && from == host && to != host {
                    depends_on.insert(service_name(to));
                }
            }
            Service {
                name: service_name(&host),
                entrypoint: command.map(|c| c.argv.clone()).unwrap_or_default(),
                working_dir: command.map(|c| c.cwd.clone()).filter(|cwd| !cwd.is_empty()),
                ports: ports
                    .into_iter()
                    .map(|(port, protocol)| format!("{port}/{protocol}"))
                    .collect(),
                address: first.and_then(|header| {
                    header
                        .addresses
                        .iter()
                        .filter_map(|a| a.parse::<IpAddr>().ok())
                        .find_map(|ip| match ip {
                            IpAddr::V4(v4) => Some(v4),
                            IpAddr::V6(_) => None,
                        })
                }),
                depends_on: depends_on.into_iter().collect(),
                host,
            }
        })
        .collect()
}

/// The /24 every service's address is in, when each has one and they share it.
fn shared_subnet(services: &[Service]) -> Option<Ipv4Addr> {
    let mut subnet: Option<[u8; 3]> = None;
    for service in services {
        let [a, b, c, _] = service.address?.octets();
        match subnet {
            None => subnet = Some([a, b, c]),
            Some(known) if known == [a, b, c] => {}
            Some(_) => return None,
        }
    }
    subnet.map(|[a, b, c]| Ipv4Addr::new(a, b, c, 0))
}

fn quoted(text: &str) -> String {
    serde_json::Value::String(text.to_string()).to_string()
}

fn list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|item| quoted(item)).collect();
    format!("[{}]", quoted.join(", "))
}

/// The compose file (`project` names the images: `PROJECT/SERVICE:latest`).
pub fn yaml(project: &str, services: &[Service]) -> String {
    let subnet = shared_subnet(services);
    let mut out = String::new();
    out.push_str("# Written by `depsetfs export --format compose`: one service per traced host.\n");
    out.push_str(
        "# Each image is the OCI image layout in the directory named after the service;\n",
    );
    out.push_str("# load it first, e.g. `skopeo copy oci:web docker-daemon:");
    out.push_str(project);
    out.push_str("/web:latest`\n# (or `podman pull oci:web`), then `docker compose up`.\n");
    out.push_str(&format!("name: {}\n", quoted(project)));
    out.push_str("services:\n");
    for service in services {
        out.push_str(&format!("  {}:\n", quoted(&service.name)));
        out.push_str(&format!(
            "    image: {}\n",
            quoted(&format!("{project}/{}:latest", service.name))
        ));
        out.push_str(&format!("    hostname: {}\n", quoted(&service.host)));
        if !service.entrypoint.is_empty() {
            out.push_str(&format!("    entrypoint: {}\n", list(&service.entrypoint)));
        }
        if let Some(cwd) = &service.working_dir {
            out.push_str(&format!("    working_dir: {}\n", quoted(cwd)));
        }
        if !service.ports.is_empty() {
            out.push_str(&format!("    ports: {}\n", list(&service.ports)));
        }
        if !service.depends_on.is_empty() {
            out.push_str(&format!("    depends_on: {}\n", list(&service.depends_on)));
        }
        match (subnet, service.address) {
            (Some(_), Some(address)) => {
                out.push_str(&format!("    networks:\n      {}:\n", quoted(NETWORK)));
                out.push_str(&format!(
                    "        ipv4_address: {}\n",
                    quoted(&address.to_string())
                ));
            }
            _ => out.push_str(&format!("    networks: [{}]\n", quoted(NETWORK))),
        }
    }
    out.push_str(&format!("networks:\n  {}:\n", quoted(NETWORK)));
    match subnet {
        Some(subnet) => {
            out.push_str("    ipam:\n      config:\n");
            out.push_str(&format!(
                "        - subnet: {}\n",
                quoted(&format!("{subnet}/24"))
            ));
        }
        None => out.push_str("    driver: bridge\n"),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(host: &str, address: &str, depends_on: &[&str]) -> Service {
        Service {
            host: host.to_string(),
            name: service_name(host),
            entrypoint: vec!["/bin/sh".into(), "-c".into(), "echo \"hi\": x".into()],
            working_dir: Some("/srv".into()),
            ports: vec!["3306/tcp".into()],
            address: address.parse().ok(),
            depends_on: depends_on.iter().map(|d| d.to_string()).collect(),
        }
    }

    #[test]
    fn services_share_a_subnet_only_when_their_addresses_do() {
        let yaml_text = yaml(
            "app",
            &[
                service("Web 1", "10.0.0.1", &["db"]),
                service("db", "10.0.0.2", &[]),
            ],
        );
        assert!(yaml_text.contains("  \"web-1\":\n"), "{yaml_text}");
        assert!(yaml_text.contains("depends_on: [\"db\"]"), "{yaml_text}");
        assert!(yaml_text.contains("subnet: \"10.0.0.0/24\""), "{yaml_text}");
        assert!(
            yaml_text.contains(r#"entrypoint: ["/bin/sh", "-c", "echo \"hi\": x"]"#),
            "{yaml_text}"
        );
        let apart = yaml(
            "app",
            &[
                service("web", "10.0.0.1", &[]),
                service("db", "10.0.1.2", &[]),
            ],
        );
        assert!(!apart.contains("ipv4_address"), "{apart}");
        assert!(apart.contains("driver: bridge"), "{apart}");
    }
}
