//! The files of a set that name a host: what an operator edits when a host moves. The names
//! looked for ([`Needle`]) come from the log: the header's host name and addresses, the
//! addresses its processes bound or listened on (when the header has none: a `run` whose
//! command entered its namespace itself), and the peers they connected to (the `Net` records'
//! endpoints, [`crate::analysis::graph::network`]). Loopback, link-local and unspecified
//! addresses name no host and are left out. Every regular file of the set that is text (no NUL
//! byte, at most [`MAX_TEXT_BYTES`]) is read from the source tree and searched line by line; a
//! match must stand as a whole token ([`find_token`]): `10.0.0.1` is not found in `10.0.0.12`,
//! nor `db` in `mydb` or `db.example.org`. `export --map` ([`super::export::map`]) rewrites
//! the same matches in the exported copy.

use std::collections::BTreeMap;
use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use serde::Serialize;

use crate::analysis::closure::DeploymentSet;
use crate::analysis::graph::{EndpointKey, Graph};
use crate::launch::host::names_a_host;
use crate::record::FileKind;
use crate::ship::export::walk::host_path;

/// Text files larger than this are not searched (nor rewritten): configuration is small.
pub const MAX_TEXT_BYTES: u64 = 8 << 20;

/// A host name or address to look for, and why.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Needle {
    pub text: String,
    /// `host name`, `host address` (header), `bound address` (a process served it),
    /// `peer address` (a process connected to it).
    pub what: &'static str,
}

/// One line of one file that names a host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HostRef {
    pub path: String,
    /// 1-based.
    pub line: u64,
    /// The line, without its end, lossily as UTF-8.
    pub text: String,
    /// What it names (the needle's text) and why that is a host.
    pub names: String,
    pub what: &'static str,
}

/// The host names and addresses of the log `graph` was built from.
pub fn needles(graph: &Graph) -> Vec<Needle> {
    let mut found: BTreeMap<String, &'static str> = BTreeMap::new();
    let header = &graph.header;
    if !header.host.is_empty() && header.host != "localhost" {
        found.insert(header.host.clone(), "host name");
    }
    for address in &header.addresses {
        found.insert(address.clone(), "host address");
    }
    for endpoint in &graph.endpoints {
        let EndpointKey::Inet(key) = &endpoint.key else {
            continue;
        };
        let Some(ip) = ip_of_endpoint(key).filter(|ip| names_a_host(*ip)) else {
            continue;
        };
        let what = if !endpoint.binders.is_empty() {
            "bound address"
        } else {
            "peer address"
        };
        found.entry(ip.to_string()).or_insert(what);
    }
    found
        .into_iter()
        .map(|(text, what)| Needle { text, what })
        .collect()
}

/// The IP of an endpoint key (`tcp:10.0.0.2:3306`, `inet6:[fd00::1]:80`).
fn ip_of_endpoint(key: &str) -> Option<IpAddr> {
    let (_, address) = key.split_once(':')?;
    address.parse::<SocketAddr>().ok().map(|socket| socket.ip())
}

/// The lines of the set's text files that name a needle, in path order.
pub fn find_in_set(set: &DeploymentSet, source: &Path, needles: &[Needle]) -> Vec<HostRef> {
    let mut refs = Vec::new();
    if needles.is_empty() {
        return refs;
    }
    for entry in &set.entries {
        if entry.kind != FileKind::File || entry.size > MAX_TEXT_BYTES {
            continue;
        }
        let Some(content) = read_text(&host_path(source, &entry.path)) else {
            continue;
        };
        let path = String::from_utf8_lossy(&entry.path).into_owned();
        for (line, text, needle) in find_in_text(&content, needles) {
            refs.push(HostRef {
                path: path.clone(),
                line,
                text,
                names: needle.text.clone(),
                what: needle.what,
            });
        }
    }
    refs
}

/// The contents of a regular text file (None: unreadable, too large, or binary).
pub fn read_text(path: &Path) -> Option<Vec<u8>> {
    let file = std::fs::File::open(path).ok()?;
    let mut content = Vec::new();
    file.take(MAX_TEXT_BYTES + 1)
        .read_to_end(&mut content)
        .ok()?;
    let text = content.len() as u64 <= MAX_TEXT_BYTES && !content.contains(&0);
    text.then_some(content)
}

/// (line number, line, needle) for each line naming a needle (one per needle and line). A host
/// name is not looked for in comment lines (first non-blank `#`, `;` or `//`): a short name
/// like `web` or `db` is also a word of prose.
pub fn find_in_text<'a>(content: &[u8], needles: &'a [Needle]) -> Vec<(u64, String, &'a Needle)> {
    let mut found = Vec::new();
    for (index, line) in content.split(|&b| b == b'\n').enumerate() {
        let comment = is_comment(line);
        for needle in needles {
            if comment && is_name(needle.text.as_bytes()) {
                continue;
            }
            if find_token(line, needle.text.as_bytes(), 0).is_some() {
                let text = String::from_utf8_lossy(line.strip_suffix(b"\r").unwrap_or(line));
                found.push((index as u64 + 1, text.into_owned(), needle));
            }
        }
    }
    found
}

fn is_comment(line: &[u8]) -> bool {
    let start = line
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(line.len());
    let rest = &line[start..];
    rest.starts_with(b"#") || rest.starts_with(b";") || rest.starts_with(b"//")
}

/// Whether a needle is a host name rather than an IP address.
fn is_name(needle: &[u8]) -> bool {
    std::str::from_utf8(needle)
        .ok()
        .and_then(|text| text.parse::<IpAddr>().ok())
        .is_none()
}

/// Bytes that continue a name or address: a match next to one is part of a longer token.
fn is_token_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-'
}

/// The first offset at or after `from` where `needle` stands as a whole token in `hay`: the
/// bytes around it are not letters, digits, `_` or `-`, nor a `.` that goes on with one
/// (`10.0.0.1` is not in `10.0.0.12` or `10.0.0.1.5`, but is in `10.0.0.1:3306` and at the
/// end of a sentence). A host name must not follow a single `/` either: `web` is not in
/// `/srv/web/`, but is in `http://web/`.
pub fn find_token(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    let name = is_name(needle);
    let mut start = from;
    while start + needle.len() <= hay.len() {
        let at = start
            + hay[start..]
                .windows(needle.len())
                .position(|w| w == needle)?;
        let end = at + needle.len();
        let before_ok = at == 0 || {
            let b = hay[at - 1];
            let joined = b == b'.' && at >= 2 && is_token_byte(hay[at - 2]);
            let in_path = name && b == b'/' && !(at >= 2 && hay[at - 2] == b'/');
            !is_token_byte(b) && !joined && !in_path
        };
        let after_ok = end == hay.len() || {
            let b = hay[end];
            let continues =
                |b: u8| (b == b'.') && hay.get(end + 1).is_some_and(|&n| is_token_byte(n));
            !is_token_byte(b) && !continues(b)
        };
        if before_ok && after_ok {
            return Some(at);
        }
        start = at + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_names_match_only_as_whole_tokens() {
        let ip = b"10.0.0.1";
        assert_eq!(find_token(b"host=10.0.0.1:3306", ip, 0), Some(5));
        assert_eq!(find_token(b"listen 10.0.0.1;", ip, 0), Some(7));
        assert_eq!(find_token(b"at 10.0.0.1.", ip, 0), Some(3));
        assert_eq!(find_token(b"10.0.0.12", ip, 0), None);
        assert_eq!(find_token(b"110.0.0.1", ip, 0), None);
        assert_eq!(find_token(b"10.0.0.1.5", ip, 0), None);
        assert_eq!(find_token(b"10.0.0.12 10.0.0.1", ip, 0), Some(10));
        assert_eq!(find_token(b"db.example.org mydb db-2", b"db", 0), None);
        assert_eq!(find_token(b"'db', 3306", b"db", 0), Some(1));
        assert_eq!(find_token(b"x.db", b"db", 0), None);
        assert_eq!(find_token(b"root /srv/web/www;", b"web", 0), None);
        assert_eq!(find_token(b"http://web/row.php", b"web", 0), Some(7));
        assert_eq!(find_token(b"10.0.0.0/24 10.0.0.1/24", ip, 0), Some(12));
    }

    #[test]
    fn lines_are_numbered_from_one() {
        let needles = vec![Needle {
            text: "10.1.0.2".to_owned(),
            what: "peer address",
        }];
        let found = find_in_text(b"a\r\nhost = 10.1.0.2\r\nb\n", &needles);
        assert_eq!(found.len(), 1);
        assert_eq!((found[0].0, found[0].1.as_str()), (2, "host = 10.1.0.2"));
        let names = vec![Needle {
            text: "web".to_owned(),
            what: "host name",
        }];
        let found = find_in_text(b"; the web server\nserver_name web;\n", &names);
        let lines: Vec<u64> = found.iter().map(|f| f.0).collect();
        assert_eq!(lines, vec![2], "names are not looked for in comments");
    }

    #[test]
    fn endpoint_keys_give_their_ip() {
        assert_eq!(
            ip_of_endpoint("tcp:10.0.0.2:3306"),
            Some("10.0.0.2".parse().expect("ip"))
        );
        assert_eq!(
            ip_of_endpoint("inet6:[fd00::1]:80"),
            Some("fd00::1".parse().expect("ip"))
        );
        assert_eq!(ip_of_endpoint("unix:@x"), None);
    }
}
