//! The page of `depsetfs ui` in a real browser (Debian's chromium, driven over W3C WebDriver
//! by chromedriver) on a log of a real traced program: a tweak changes what the page shows,
//! "save rules" writes the rules file, and `dump --set --rules` of that file prints exactly the
//! set the page shows. Also: the token and the Host header are required, `report --html`
//! loads without a server, and `graph --format dot` renders with Graphviz.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use common::webdriver::{Browser, http};
use common::*;
use serde_json::Value;

/// A traced run reading an application directory and two system files.
fn traced_log(t: &TestDir) -> String {
    fs::create_dir_all(t.join("app/data")).unwrap();
    fs::write(t.join("app/conf.txt"), "port = 8080\n").unwrap();
    fs::write(t.join("app/data/a"), "aaaa").unwrap();
    fs::write(t.join("app/data/b"), "bbbbbbbb").unwrap();
    // A private key the application reads: a secret that must not leave with the set.
    fs::create_dir_all(t.join("app/tls")).unwrap();
    fs::write(
        t.join("app/tls/server.key"),
        "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIBogus\n-----END EC PRIVATE KEY-----\n",
    )
    .unwrap();
    let script = "cat \"$1/app/conf.txt\" >/dev/null\ncat /etc/hostname >/dev/null\ncat \"$1\"/app/data/* \"$1/app/tls/server.key\" >/dev/null\n";
    fs::write(t.join("app.sh"), script).unwrap();
    let out = ns_script(
        t,
        300,
        r#""$DEPSETFS" run --log "$T/log" --timeout 240 -- sh "$T/app.sh" "$T""#,
    );
    out.assert_ok("depsetfs run -- sh app.sh");
    t.log().to_str().unwrap().to_string()
}

/// `depsetfs ui` running under `timeout`, and the URL it printed.
struct UiServer {
    child: Child,
    url: String,
}

impl UiServer {
    fn start(t: &TestDir, args: &[&str]) -> UiServer {
        let mut child = Command::new("timeout")
            .args(["-k", "5", "300", DEPSETFS, "ui"])
            .args(args)
            .env_clear()
            .env("PATH", STD_PATH)
            .env("DEPSETFS_STATE_DIR", t.state())
            .current_dir(&t.path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start depsetfs ui");
        let mut line = String::new();
        if let Some(stdout) = child.stdout.take() {
            let _ = BufReader::new(stdout).read_line(&mut line);
        }
        let url = line.trim().to_string();
        assert!(
            url.starts_with("http://127.0.0.1:"),
            "no URL printed: {url:?}"
        );
        UiServer { child, url }
    }

    /// host:port
    fn address(&self) -> String {
        let rest = self.url.trim_start_matches("http://");
        rest.split('/').next().unwrap_or("").to_string()
    }

    fn token(&self) -> String {
        self.url.split("token=").nth(1).unwrap_or("").to_string()
    }
}

impl Drop for UiServer {
    fn drop(&mut self) {
        // SAFETY: kill(2) of the `timeout` we started; it passes SIGTERM on to depsetfs.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

fn dump_set_lines(t: &TestDir, args: &[&str]) -> Vec<String> {
    let mut all = vec!["dump", "--set"];
    all.extend_from_slice(args);
    let out = depsetfs(t, &all);
    out.assert_ok(&format!("depsetfs {all:?}"));
    out.stdout.lines().map(str::to_string).collect()
}

/// The set the page shows (its `/api/set`, fetched by the page itself).
fn page_set(browser: &Browser) -> Vec<String> {
    let value = browser.script_async(
        "const done = arguments[0]; fetch('/api/set', {credentials: 'same-origin'}).then(r => r.json()).then(done, e => done(String(e)));",
    );
    value
        .as_array()
        .unwrap_or_else(|| panic!("/api/set from the page: {value}"))
        .iter()
        .map(|v| v.as_str().unwrap_or("").to_string())
        .collect()
}

fn count(text: &str) -> usize {
    text.trim().parse().unwrap_or(usize::MAX)
}

#[test]
fn requests_without_the_token_or_with_a_foreign_host_are_refused() {
    let t = TestDir::new("ui-auth");
    let log = traced_log(&t);
    let server = UiServer::start(&t, &["--log", &log]);
    let address = server.address();
    let token = server.token();
    let with_token = format!("/api/summary?token={token}");
    let get = |target: &str, host: &str, headers: &[(&str, &str)]| {
        http(&address, "GET", target, host, headers, None)
            .unwrap_or_else(|e| panic!("GET {target}: {e}"))
            .status
    };
    assert_eq!(get("/api/summary", &address, &[]), 403, "no token");
    assert_eq!(get("/", &address, &[]), 403, "no token for the page");
    assert_eq!(
        get("/api/summary?token=00", &address, &[]),
        403,
        "wrong token"
    );
    let rebinding = format!(
        "attacker.example:{}",
        address.split(':').nth(1).unwrap_or("")
    );
    assert_eq!(get(&with_token, &rebinding, &[]), 403, "foreign Host");
    assert_eq!(get(&with_token, &address, &[]), 200, "token and Host");
    assert_eq!(
        get("/api/summary", &address, &[("X-Depsetfs-Token", &token)]),
        200,
        "token as a header"
    );
    let cookie = format!("depsetfs_token={token}");
    assert_eq!(
        get("/api/summary", &address, &[("Cookie", &cookie)]),
        200,
        "token as the cookie"
    );
    // Without --rules nothing can be written.
    let save = http(
        &address,
        "POST",
        "/api/save",
        &address,
        &[("X-Depsetfs-Token", &token)],
        Some("{}"),
    )
    .unwrap_or_else(|e| panic!("POST /api/save: {e}"));
    assert_eq!(save.status, 409, "{}", save.body);
}

#[test]
fn a_tweak_on_the_page_is_saved_as_rules_that_the_command_line_reproduces() {
    let t = TestDir::new("ui-browser");
    let log = traced_log(&t);
    let rules = t.join("saved.toml");
    let rules_text = rules.to_str().unwrap().to_string();
    let server = UiServer::start(&t, &["--log", &log, "--rules", &rules_text]);
    let browser = Browser::start(&t.join("chromium-profile"), 240);
    browser.goto(&server.url);
    let before = count(&browser.wait_text("#set-files", 60, |s| s.trim().parse::<usize>().is_ok()));
    let cli_before = dump_set_lines(&t, &["--log", &log, "--strategy", "strict"]);
    assert_eq!(
        before,
        cli_before.len(),
        "the page starts from the strict set"
    );
    let app_conf = format!("{}/app/conf.txt", t.str());
    assert!(cli_before.contains(&app_conf), "{cli_before:?}");

    // The private key is flagged above everything; accepting the suggestion leaves it out.
    let key = format!("{}/app/tls/server.key", t.str());
    let alarm = browser.wait_text("#alarm", 30, |s| s.contains("secret"));
    assert!(alarm.contains(&key), "{alarm}");
    browser.click(
        &browser
            .find(".sugg.secret .accept")
            .expect("the secret's accept button"),
    );
    let before = count(&browser.wait_text("#set-files", 30, |s| count(s) == before - 1));
    assert!(!page_set(&browser).contains(&key));

    // Exclude the application's data directory through the rules form.
    let glob = format!("{}/app/data/**", t.str());
    let input = browser.find("#glob").expect("the glob input");
    browser.type_text(&input, &glob);
    browser.click(&browser.find("#glob-exclude").expect("the exclude button"));
    let after_exclude = count(&browser.wait_text("#set-files", 30, |s| count(s) != before));
    assert!(after_exclude < before, "{before} -> {after_exclude}");
    let shown = page_set(&browser);
    assert!(
        !shown
            .iter()
            .any(|p| p.starts_with(&format!("{}/app/data/", t.str()))),
        "{shown:?}"
    );
    assert!(shown.contains(&app_conf));

    // Unselect the cat that read the configuration (with its descendants) by its checkbox.
    // The process tree opens the selected images level by level, one request each.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let checkbox = loop {
        let found = browser.script(
            "const rows = [...document.querySelectorAll('.row.proc')].filter(r => r.dataset.exe.endsWith('/cat')); \
             return rows.length ? rows[0].querySelector('.proc-select') : null;",
        );
        if let Some(checkbox) = Browser::element_of(&found) {
            break checkbox;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no cat process row on the page"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    browser.click(&checkbox);
    let after_unselect = count(&browser.wait_text("#set-files", 30, |s| count(s) != after_exclude));
    assert!(
        after_unselect < after_exclude,
        "{after_exclude} -> {after_unselect}"
    );

    // Save, then the command line reproduces the page's set exactly.
    browser.click(&browser.find("#save").expect("the save button"));
    let status = browser.wait_text("#save-status", 30, |s| {
        s.starts_with("saved") || s.starts_with("not saved")
    });
    assert!(status.starts_with("saved"), "{status}");
    let saved = fs::read_to_string(&rules).expect("the saved rules file");
    assert!(saved.contains(&format!("\"{glob}\"")), "{saved}");
    assert!(saved.contains("[[select]]"), "{saved}");
    let check = depsetfs(&t, &["rules", "--check", &rules_text]);
    check.assert_ok("rules --check of the saved file");
    let shown = page_set(&browser);
    let cli = dump_set_lines(
        &t,
        &[
            "--log",
            &log,
            "--strategy",
            "strict",
            "--rules",
            &rules_text,
        ],
    );
    assert_eq!(
        shown.iter().collect::<BTreeSet<_>>(),
        cli.iter().collect::<BTreeSet<_>>(),
        "page and dump --set --rules differ"
    );
    assert_eq!(
        count(&browser.wait_text("#set-files", 5, |_| true)),
        cli.len()
    );
    assert!(!cli.contains(&app_conf), "the unselected cat's file is out");

    // The strategies table and the audit list are on the page.
    let table = browser.wait_text("#report-table", 60, |s| s.contains("strict"));
    for strategy in ["all", "strict", "system", "exec"] {
        assert!(table.contains(strategy), "{table}");
    }
    let audit = browser.wait_text("#audit", 30, |s| s.contains("excluded"));
    assert!(audit.contains("excluded"), "{audit}");
    if let Ok(dir) = std::env::var("DEPSETFS_UI_SCREENSHOT") {
        fs::write(dir, browser.screenshot()).expect("screenshot");
    }
}

#[test]
fn report_html_is_one_file_that_shows_the_strategies_without_a_server() {
    let t = TestDir::new("ui-html");
    let log = traced_log(&t);
    let html = t.join("report.html");
    depsetfs(
        &t,
        &["report", "--log", &log, "--html", html.to_str().unwrap()],
    )
    .assert_ok("report --html");
    let page = fs::read_to_string(&html).unwrap();
    assert!(page.contains("window.DEPSETFS_STATIC"), "data embedded");
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "nothing fetched from elsewhere"
    );
    let browser = Browser::start(&t.join("chromium-profile"), 240);
    browser.goto(&format!("file://{}", html.display()));
    let table = browser.wait_text("#report-table", 60, |s| s.contains("exec"));
    for strategy in ["all", "strict", "system", "exec"] {
        assert!(table.contains(strategy), "{table}");
    }
    let files = count(&browser.wait_text("#set-files", 10, |s| s.trim().parse::<usize>().is_ok()));
    let cli = dump_set_lines(&t, &["--log", &log, "--strategy", "strict"]);
    assert_eq!(files, cli.len());
    let tree = browser.wait_text("#files", 10, |s| s.contains("usr"));
    assert!(tree.contains("etc"), "{tree}");
}

#[test]
fn suggest_flags_the_private_key_and_the_workspace() {
    let t = TestDir::new("ui-suggest");
    let log = traced_log(&t);
    let out = depsetfs(
        &t,
        &["suggest", "--json", "--log", &log, "--strategy", "strict"],
    );
    out.assert_ok("suggest --json");
    let list: Vec<Value> = serde_json::from_str(&out.stdout).unwrap();
    let key = format!("{}/app/tls/server.key", t.str());
    let secret = list
        .iter()
        .find(|s| s["kind"] == "secret" && s["path"] == key.as_str())
        .unwrap_or_else(|| panic!("no secret suggestion for the key: {}", out.stdout));
    assert!(
        secret["evidence"]
            .as_str()
            .is_some_and(|e| e.contains("PRIVATE KEY")),
        "{secret}"
    );
    assert_eq!(secret["accept"]["action"], "exclude");
    // The traced command ran in $T: the workspace is a leftover to look at; conf.txt is not a secret.
    assert!(list.iter().any(|s| s["kind"] == "dev-leftover" && s["path"] == format!("{}/**", t.str()).as_str()), "{}", out.stdout);
    assert!(
        !list.iter().any(|s| s["kind"] == "secret"
            && s["path"].as_str().is_some_and(|p| p.ends_with("conf.txt")))
    );
}

#[test]
fn graph_dot_renders_with_graphviz_and_json_names_the_processes() {
    let t = TestDir::new("ui-graph");
    let log = traced_log(&t);
    let dot = depsetfs(&t, &["graph", "--log", &log, "--format", "dot", "--files"]);
    dot.assert_ok("graph --format dot");
    fs::write(t.join("g.dot"), &dot.stdout).unwrap();
    let svg = host_script(&t, 60, r#"dot -Tsvg "$T/g.dot""#);
    svg.assert_ok("dot -Tsvg");
    assert!(
        svg.stdout.contains("<svg") && svg.stdout.contains("/usr/bin/cat"),
        "{}",
        svg.stdout
    );
    let json = depsetfs(
        &t,
        &[
            "graph",
            "--log",
            &log,
            "--format",
            "json",
            "--strategy",
            "strict",
        ],
    );
    json.assert_ok("graph --format json");
    let value: Value = serde_json::from_str(&json.stdout).unwrap();
    let processes = value["processes"].as_array().unwrap();
    assert!(
        processes
            .iter()
            .any(|p| p["exe"].as_str().is_some_and(|e| e.ends_with("/cat")) && p["needed"] == true)
    );
    assert!(
        value["links"]
            .as_array()
            .is_some_and(|l| l.iter().any(|l| l["link"] == "fork"))
    );
    assert!(
        value["files"]
            .as_array()
            .is_some_and(|f| f.iter().any(|f| f["path"] == "/etc/hostname"))
    );
}

#[test]
fn a_unix_socket_connection_is_drawn_client_to_server() {
    let t = TestDir::new("ui-conn");
    fs::write(t.join("socket.sh"), unix_socket_pair(&t)).unwrap();
    ns_script(
        &t,
        300,
        r#""$DEPSETFS" run --log "$T/log" --timeout 240 -- sh "$T/socket.sh""#,
    )
    .assert_ok("depsetfs run -- sh socket.sh");
    let log = t.log().to_str().unwrap().to_string();
    // The static page draws from the same answer as the server's page.
    let html = t.join("report.html");
    depsetfs(
        &t,
        &["report", "--log", &log, "--html", html.to_str().unwrap()],
    )
    .assert_ok("report --html");
    let browser = Browser::start(&t.join("chromium-profile"), 240);
    browser.goto(&format!("file://{}", html.display()));
    browser.wait_text("#connections", 60, |s| !s.contains("loading"));
    let edges = browser.script(
        "return [...document.querySelectorAll('#conn-svg path.conn-edge')].map((e) => {\
           const node = (ix) => document.querySelector('#conn-svg .conn-node[data-ix=\"' + ix + '\"] title').textContent;\
           return { client: node(e.dataset.clientIx), server: node(e.dataset.serverIx), endpoint: e.dataset.endpoint,\
                    arrow: e.getAttribute('marker-end'), length: e.getTotalLength() }; })",
    );
    let edges = edges
        .as_array()
        .unwrap_or_else(|| panic!("edges: {edges}"))
        .clone();
    let socket = format!("unix:{}/app.sock", t.str());
    let edge = edges
        .iter()
        .find(|e| {
            e["endpoint"].as_str() == Some(socket.as_str())
                && e["client"].as_str().unwrap_or("").contains("client.py")
        })
        .unwrap_or_else(|| panic!("no edge from client.py to {socket}: {edges:?}"));
    assert!(
        edge["server"].as_str().unwrap_or("").contains("server.py"),
        "{edge}"
    );
    assert!(edge["arrow"].as_str().unwrap_or("").contains("arrow-unix"));
    assert!(
        edge["length"].as_f64().unwrap_or(0.0) > 50.0,
        "drawn: {edge}"
    );
}
