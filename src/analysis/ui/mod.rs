//! `depsetfs ui`, `depsetfs report --html` and `depsetfs graph`: the set seen and shaped. A
//! small HTTP server on std ([`http`]) serves one self-contained page (`page.html`, embedded)
//! and a JSON API over an analysis session ([`model`]); suggestions come from [`suggest`], the
//! Graphviz and JSON graph from [`graph_out`]. Safe by default: loopback unless told otherwise,
//! an unguessable token required on every request, the Host header checked (no DNS
//! rebinding), the log only read, and the one file written is the `--rules` file, on an
//! explicit save.

pub mod graph_out;
pub mod http;
pub mod model;
pub mod suggest;

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;

use serde::Serialize;

use crate::analysis::names::escape;
use crate::analysis::query;
use http::{Request, Response};
use model::{Computed, ModelError, Session, Tweak};

/// The page, with `/*DEPSETFS_STATIC*/` where `report --html` puts its data.
pub const PAGE: &str = include_str!("page.html");

const STATIC_MARK: &str = "/*DEPSETFS_STATIC*/";

#[derive(Debug, thiserror::Error)]
pub enum UiError {
    #[error("--listen {address}: {source}")]
    Listen {
        address: String,
        source: std::io::Error,
    },
    #[error("reading /dev/urandom for the access token: {0}")]
    Token(std::io::Error),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("writing {}: {source}", path.display())]
    Write {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// A bound server, before it serves.
pub struct Server {
    listener: TcpListener,
    token: String,
    allowed_hosts: Vec<String>,
    session: Arc<Session>,
}

impl Server {
    pub fn bind(session: Session, listen: &str) -> Result<Server, UiError> {
        let listener = TcpListener::bind(listen).map_err(|source| UiError::Listen {
            address: listen.to_string(),
            source,
        })?;
        let address = listener.local_addr().map_err(|source| UiError::Listen {
            address: listen.to_string(),
            source,
        })?;
        let mut bytes = [0u8; 24];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut bytes))
            .map_err(UiError::Token)?;
        let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let mut allowed_hosts = vec![address.to_string()];
        if address.ip().is_loopback() {
            allowed_hosts.push(format!("localhost:{}", address.port()));
        }
        Ok(Server {
            listener,
            token,
            allowed_hosts,
            session: Arc::new(session),
        })
    }

    pub fn address(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// The URL to open, token included.
    pub fn url(&self) -> String {
        let host = self
            .allowed_hosts
            .first()
            .cloned()
            .unwrap_or_else(|| "127.0.0.1".to_string());
        format!("http://{host}/?token={}", self.token)
    }

    /// Serves until the process is stopped: a thread per connection.
    pub fn serve(self) {
        let shared = Arc::new((self.token, self.allowed_hosts, self.session));
        for stream in self.listener.incoming() {
            let Ok(stream) = stream else { continue };
            let shared = shared.clone();
            std::thread::spawn(move || {
                let (token, hosts, session) = &*shared;
                handle(&stream, token, hosts, session);
            });
        }
    }
}

fn handle(stream: &TcpStream, token: &str, hosts: &[String], session: &Session) {
    let response = match http::read_request(stream) {
        Ok(request) => respond(&request, token, hosts, session),
        Err(e) => Response::error(400, &e.to_string()),
    };
    let _ = http::write_response(stream, &response);
}

/// Byte-wise comparison that takes the same time wherever the first difference is.
fn same_secret(given: &str, token: &str) -> bool {
    given.len() == token.len()
        && given
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// The Host header names the address listened on (or `localhost` on loopback); when listening
/// on every address (`0.0.0.0`, `[::]`), any IP address with the port: a DNS-rebinding page
/// sends its own domain name, never an IP literal.
fn host_allowed(host: &str, hosts: &[String]) -> bool {
    if hosts.iter().any(|h| h == host) {
        return true;
    }
    let (Ok(given), Some(Ok(bound))) = (
        host.parse::<SocketAddr>(),
        hosts.first().map(|h| h.parse::<SocketAddr>()),
    ) else {
        return false;
    };
    bound.ip().is_unspecified() && given.port() == bound.port()
}

fn respond(request: &Request, token: &str, hosts: &[String], session: &Session) -> Response {
    if !request
        .header("host")
        .is_some_and(|host| host_allowed(host, hosts))
    {
        return Response::error(403, "unexpected Host header");
    }
    let from_query = request.param_text("token");
    let given = from_query
        .clone()
        .or_else(|| request.header("x-depsetfs-token").map(str::to_string))
        .or_else(|| request.cookie("depsetfs_token"));
    if !given.is_some_and(|given| same_secret(&given, token)) {
        return Response::error(
            403,
            "missing or wrong access token (open the URL depsetfs ui printed)",
        );
    }
    let mut response = route(request, session);
    if from_query.is_some() {
        response.headers.push((
            "Set-Cookie".to_string(),
            format!("depsetfs_token={token}; HttpOnly; SameSite=Strict; Path=/"),
        ));
    }
    response
}

fn route(request: &Request, session: &Session) -> Response {
    let get = request.method == "GET";
    let post = request.method == "POST";
    match request.path.as_str() {
        "/" if get => {
            let mut response =
                Response::new(200, "text/html; charset=utf-8", PAGE.as_bytes().to_vec());
            response.headers.push((
                "Content-Security-Policy".to_string(),
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:; connect-src 'self'".to_string(),
            ));
            response
        }
        "/api/tweak" if post => match serde_json::from_slice::<Tweak>(&request.body) {
            Ok(tweak) => match session.apply(tweak) {
                Ok(computed) => Response::json(&summary(session, &computed)),
                Err(e) => Response::error(409, &e.to_string()),
            },
            Err(e) => Response::error(400, &format!("bad tweak: {e}")),
        },
        "/api/save" if post => match session.save() {
            Ok(path) => Response::json(&serde_json::json!({"saved": path.display().to_string()})),
            Err(e) => Response::error(409, &e.to_string()),
        },
        path if get => match api_get(path, request, session) {
            Some(response) => response,
            None => Response::error(404, "no such page"),
        },
        _ => Response::error(405, "method not allowed"),
    }
}

/// The read-only answers, shared by the server and `report --html`.
fn api_get(path: &str, request: &Request, session: &Session) -> Option<Response> {
    let computed = session.current();
    let param = |name: &str| request.param(name).map(<[u8]>::to_vec);
    Some(match path {
        "/api/summary" => Response::json(&summary(session, &computed)),
        "/api/tree" => {
            let dir = param("path").map_or_else(
                || b"/".to_vec(),
                |p| model::path_bytes(&String::from_utf8_lossy(&p)),
            );
            Response::json(&tree(&computed, &dir))
        }
        "/api/procs" => {
            let parent = request
                .param_text("parent")
                .and_then(|p| p.parse::<usize>().ok());
            Response::json(&processes(session, &computed, parent))
        }
        "/api/why" => {
            let path = param("path").map(|p| model::path_bytes(&String::from_utf8_lossy(&p)))?;
            Response::json(&why(session, &computed, &path))
        }
        "/api/audit" => Response::json(&model::audit(&computed)),
        "/api/connections" => Response::json(&connections(session, &computed)),
        "/api/report" => Response::json(&session.report(&computed)),
        "/api/suggest" => Response::json(&suggestions(session, &computed)),
        "/api/set" => {
            let paths: Vec<String> = computed
                .result
                .set
                .entries
                .iter()
                .map(|e| escape(&e.path))
                .collect();
            Response::json(&paths)
        }
        "/api/rules" => Response::new(
            200,
            "text/plain; charset=utf-8",
            computed.text.clone().into_bytes(),
        ),
        "/api/graph.dot" => Response::new(
            200,
            "text/plain; charset=utf-8",
            graph_out::dot(&session.graph, &computed.selection, &computed.result).into_bytes(),
        ),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_listening_address_is_a_good_host() {
        let loopback = vec!["127.0.0.1:8080".to_string(), "localhost:8080".to_string()];
        assert!(host_allowed("127.0.0.1:8080", &loopback));
        assert!(host_allowed("localhost:8080", &loopback));
        assert!(!host_allowed("attacker.example:8080", &loopback));
        assert!(!host_allowed("127.0.0.1:9090", &loopback));
        assert!(!host_allowed("10.0.0.5:8080", &loopback));
        let any = vec!["0.0.0.0:8080".to_string()];
        assert!(host_allowed("10.0.0.5:8080", &any));
        assert!(!host_allowed("10.0.0.5:8081", &any));
        assert!(!host_allowed("rebind.example:8080", &any));
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same_secret("abcd", "abcd"));
        assert!(!same_secret("abc", "abcd"));
        assert!(!same_secret("abce", "abcd"));
    }
}

#[derive(Serialize)]
struct Summary {
    generation: u64,
    log: String,
    source: String,
    host: String,
    strategy: &'static str,
    strategies: Vec<&'static str>,
    files: u64,
    bytes: u64,
    previous_files: Option<u64>,
    previous_bytes: Option<u64>,
    fates: std::collections::BTreeMap<model::Fate, usize>,
    images: usize,
    selected: usize,
    needed: usize,
    stubs: Vec<String>,
    network_recorded: bool,
    rules: model::RuleLists,
    rules_text: String,
    rules_path: Option<String>,
    command: String,
    can_save: bool,
    static_page: bool,
}

fn summary(session: &Session, computed: &Computed) -> Summary {
    let (files, bytes) = computed.in_set();
    let previous = session.previous();
    let rules_path = session.rules_path.as_ref().map(|p| p.display().to_string());
    Summary {
        generation: computed.generation,
        log: session.log_path.display().to_string(),
        source: session.graph.header.source.clone(),
        host: session.graph.header.host.clone(),
        strategy: computed.strategy.name(),
        strategies: crate::analysis::strategy::Strategy::ALL
            .iter()
            .map(|s| s.name())
            .collect(),
        files,
        bytes,
        previous_files: previous.map(|p| p.0),
        previous_bytes: previous.map(|p| p.1),
        fates: model::fate_counts(computed),
        images: session.graph.processes.len(),
        selected: computed.selection.len(),
        needed: computed.result.needed.processes().count(),
        stubs: computed
            .result
            .stubs
            .iter()
            .map(|s| escape(&s.path))
            .collect(),
        network_recorded: session.graph.network_recorded(),
        rules: computed.lists.clone(),
        rules_text: computed.text.clone(),
        command: format!(
            "depsetfs dump --set --log {} --strategy {} --rules {}",
            session.log_path.display(),
            computed.strategy.name(),
            rules_path
                .clone()
                .unwrap_or_else(|| "RULES.toml".to_string())
        ),
        can_save: session.rules_path.is_some(),
        rules_path,
        static_page: false,
    }
}

/// At most this many suggestions of one kind go to the page.
const SUGGESTIONS_PER_KIND: usize = 100;

#[derive(Serialize)]
struct Suggestions<'a> {
    items: Vec<&'a suggest::Suggestion>,
    counts: std::collections::BTreeMap<&'static str, usize>,
}

fn suggestions<'a>(session: &Session, computed: &'a Computed) -> Suggestions<'a> {
    let all = computed.suggestions(&session.graph, &session.set_options);
    let mut counts = std::collections::BTreeMap::new();
    let mut items = Vec::new();
    for suggestion in all {
        let seen = counts.entry(suggestion.kind.name()).or_insert(0);
        *seen += 1;
        if *seen <= SUGGESTIONS_PER_KIND {
            items.push(suggestion);
        }
    }
    Suggestions { items, counts }
}

#[derive(Serialize)]
struct TreeAnswer {
    path: String,
    rows: Vec<model::TreeRow>,
    total: usize,
}

fn tree(computed: &Computed, dir: &[u8]) -> TreeAnswer {
    let (rows, total) = model::tree_rows(computed, dir);
    TreeAnswer {
        path: escape(dir),
        rows,
        total,
    }
}

/// At most this many connections are drawn.
const CONNECTIONS_CAP: usize = 300;

/// The connections view: process images joined by a connect (unix socket, TCP/UDP), client
/// to server, for the page to draw.
#[derive(Serialize)]
struct Connections {
    nodes: Vec<ConnNode>,
    edges: Vec<ConnEdge>,
    /// Connections in the log (more than `edges` when capped).
    total: usize,
}

#[derive(Serialize)]
struct ConnNode {
    ix: usize,
    pid: u32,
    exec_index: u32,
    label: String,
    /// It accepted a connection (drawn in the servers' column).
    server: bool,
    selected: bool,
    needed: bool,
}

#[derive(Serialize)]
struct ConnEdge {
    /// Indexes into `nodes`.
    client: usize,
    server: usize,
    endpoint: String,
    unix: bool,
}

fn connections(session: &Session, computed: &Computed) -> Connections {
    use crate::analysis::graph::{EndpointKey, ProcessLink};
    let graph = &session.graph;
    let all: Vec<_> = graph
        .process_edges
        .iter()
        .filter(|e| e.link == ProcessLink::Connect)
        .collect();
    let mut nodes: Vec<ConnNode> = Vec::new();
    let mut index: std::collections::HashMap<usize, usize> = std::collections::HashMap::new();
    let mut node = |ix: usize, server: bool, nodes: &mut Vec<ConnNode>| -> usize {
        let at = *index.entry(ix).or_insert_with(|| {
            let image = &graph.processes[ix];
            nodes.push(ConnNode {
                ix,
                pid: image.key.pid,
                exec_index: image.key.exec_index,
                label: graph.describe_process(ix),
                server: false,
                selected: computed.selection.contains(ix),
                needed: computed.result.needed.contains(ix),
            });
            nodes.len() - 1
        });
        nodes[at].server |= server;
        at
    };
    let mut edges = Vec::new();
    for edge in all.iter().take(CONNECTIONS_CAP) {
        let client = node(edge.from, false, &mut nodes);
        let server = node(edge.to, true, &mut nodes);
        let key = edge.endpoint.map(|e| &graph.endpoints[e].key);
        edges.push(ConnEdge {
            client,
            server,
            endpoint: key.map(EndpointKey::describe).unwrap_or_default(),
            unix: matches!(
                key,
                Some(EndpointKey::UnixSocket(_) | EndpointKey::AbstractUnix(_))
            ),
        });
    }
    Connections {
        nodes,
        edges,
        total: all.len(),
    }
}

#[derive(Serialize)]
struct ProcRow {
    ix: usize,
    pid: u32,
    ppid: u32,
    exec_index: u32,
    exe: String,
    argv: Vec<String>,
    uid: u32,
    exit: String,
    begin_ns: u64,
    end_ns: Option<u64>,
    reads: u32,
    writes: u32,
    selected: bool,
    needed: bool,
    needed_because: Option<String>,
    children: usize,
    links: Vec<String>,
}

fn exit_text(status: Option<i32>) -> String {
    match status {
        None => "-".to_string(),
        Some(s) if s & 0x7f != 0 => format!("signal {}", s & 0x7f),
        Some(s) => format!("exit {}", (s >> 8) & 0xff),
    }
}

fn next_images(session: &Session, process: usize) -> Vec<usize> {
    let graph = &session.graph;
    let mut next: Vec<usize> = graph
        .exec_successor(process)
        .into_iter()
        .chain(graph.forked_children(process))
        .collect();
    next.sort_by_key(|&child| graph.processes[child].begin_ns);
    next.dedup();
    next
}

fn processes(session: &Session, computed: &Computed, parent: Option<usize>) -> Vec<ProcRow> {
    let graph = &session.graph;
    let images: Vec<usize> = match parent {
        Some(parent) if parent < graph.processes.len() => next_images(session, parent),
        Some(_) => Vec::new(),
        None => {
            let mut roots: Vec<usize> = (0..graph.processes.len())
                .filter(|&p| {
                    let node = &graph.processes[p];
                    node.forked_by.is_none() && node.exec_from.is_none()
                })
                .collect();
            roots.sort_by_key(|&p| graph.processes[p].key);
            roots
        }
    };
    images
        .into_iter()
        .take(model::LIST_CAP)
        .map(|ix| {
            let node = &graph.processes[ix];
            let (reads, writes) = session.io_counts(ix);
            let links = graph
                .links_of(ix)
                .filter(|l| l.link == crate::analysis::graph::ProcessLink::Connect)
                .map(|l| {
                    let (dir, other) = if l.from == ix {
                        ("to", l.to)
                    } else {
                        ("from", l.from)
                    };
                    let endpoint = l
                        .endpoint
                        .map(|e| graph.endpoints[e].key.describe())
                        .unwrap_or_default();
                    format!("connect {dir} {} {endpoint}", graph.describe_process(other))
                })
                .collect();
            ProcRow {
                ix,
                pid: node.key.pid,
                ppid: node.ppid,
                exec_index: node.key.exec_index,
                exe: node.exe_text(),
                argv: node.argv.clone(),
                uid: node.uid,
                exit: exit_text(node.exit_status),
                begin_ns: node.begin_ns,
                end_ns: node.end_ns,
                reads,
                writes,
                selected: computed.selection.contains(ix),
                needed: computed.result.needed.contains(ix),
                needed_because: computed
                    .result
                    .needed
                    .why
                    .get(ix)
                    .and_then(Option::as_ref)
                    .map(|r| r.describe(graph)),
                children: next_images(session, ix).len(),
                links,
            }
        })
        .collect()
}

#[derive(Serialize)]
struct WhyAnswer {
    answer: query::WhyAnswer,
    text: String,
    fate: Option<model::Fate>,
}

fn why(session: &Session, computed: &Computed, path: &[u8]) -> WhyAnswer {
    let answer = query::why(&session.graph, &computed.result, &session.set_options, path);
    let mut text = Vec::new();
    let _ = query::write_why_human(&session.graph, &answer, &mut text);
    WhyAnswer {
        answer,
        text: String::from_utf8_lossy(&text).into_owned(),
        fate: computed.paths.get(path).and_then(|p| p.fate),
    }
}

/// `depsetfs report --html`: the page with its answers embedded, no server. Directory
/// listings and why answers are embedded for at most `max_dirs` directories and `max_paths`
/// paths (the largest first); the rest says "not in this report".
pub fn static_page(session: &Session, max_dirs: usize) -> String {
    let computed = session.current();
    let mut responses = serde_json::Map::new();
    let mut put = |key: String, value: serde_json::Value| {
        responses.insert(key, value);
    };
    let mut s = summary(session, &computed);
    s.static_page = true;
    s.can_save = false;
    put("/api/summary".into(), value(&s));
    put("/api/audit".into(), value(&model::audit(&computed)));
    put(
        "/api/connections".into(),
        value(&connections(session, &computed)),
    );
    put("/api/report".into(), value(&session.report(&computed)));
    put(
        "/api/suggest".into(),
        value(&suggestions(session, &computed)),
    );
    put(
        "/api/procs".into(),
        value(&processes(session, &computed, None)),
    );
    for ix in 0..session.graph.processes.len().min(max_dirs) {
        put(
            format!("/api/procs?parent={ix}"),
            value(&processes(session, &computed, Some(ix))),
        );
    }
    // Directories breadth-first from the root, largest first.
    let mut queue = std::collections::VecDeque::from([b"/".to_vec()]);
    let mut dirs = 0;
    // `why` scans the set: a few thousand answers, not one per path of a big log.
    let mut whys = 0;
    while let Some(dir) = queue.pop_front() {
        if dirs >= max_dirs {
            break;
        }
        dirs += 1;
        let answer = tree(&computed, &dir);
        for row in &answer.rows {
            if row.has_children {
                queue.push_back(model::path_bytes(&row.path));
            }
            if whys < MAX_STATIC_WHYS {
                whys += 1;
                put(
                    format!("/api/why?path={}", url_encode(&row.path)),
                    value(&why(session, &computed, &model::path_bytes(&row.path))),
                );
            }
        }
        put(
            format!("/api/tree?path={}", url_encode(&escape(&dir))),
            value(&answer),
        );
    }
    let data = serde_json::Value::Object(responses).to_string();
    // Inside <script>: no "</" may end it early.
    let data = data.replace("</", "<\\/").replace("<!--", "<\\!--");
    PAGE.replacen(STATIC_MARK, &format!("window.DEPSETFS_STATIC = {data};"), 1)
}

/// At most this many why answers in a static page (the first rows, breadth-first).
const MAX_STATIC_WHYS: usize = 3000;

/// What the page's `encodeURIComponent` makes of a path.
pub fn url_encode(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn value<T: Serialize + ?Sized>(answer: &T) -> serde_json::Value {
    serde_json::to_value(answer).unwrap_or(serde_json::Value::Null)
}

/// Writes `report --html`'s file.
pub fn write_static_page(session: &Session, path: &std::path::Path) -> Result<(), UiError> {
    let page = static_page(session, 1000);
    std::fs::write(path, page).map_err(|source| UiError::Write {
        path: path.to_path_buf(),
        source,
    })
}
