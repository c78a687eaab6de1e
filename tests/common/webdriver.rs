//! A minimal W3C WebDriver client for the page tests: a blocking HTTP/1.1 client over
//! `TcpStream` (one request per connection) and the handful of WebDriver commands they use
//! (new session, navigate, find, text, click, send keys, execute script, screenshot). It
//! drives Debian's `chromedriver` and headless `chromium`; the driver runs under `timeout` and
//! is stopped by pid when the [`Browser`] is dropped.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// An HTTP answer: status and body.
pub struct HttpAnswer {
    pub status: u16,
    pub body: String,
}

/// One request: `host` is sent as the Host header as given (the tests send wrong ones too).
pub fn http(
    address: &str,
    method: &str,
    target: &str,
    host: &str,
    extra_headers: &[(&str, &str)],
    body: Option<&str>,
) -> std::io::Result<HttpAnswer> {
    let mut stream = TcpStream::connect(address)?;
    stream.set_read_timeout(Some(Duration::from_secs(120)))?;
    let body = body.unwrap_or("");
    let mut request = format!(
        "{method} {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in extra_headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes())?;
    // Read the head, then Content-Length bytes: chromedriver keeps the connection open.
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    let split = loop {
        if let Some(at) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Err(std::io::Error::other(
                "connection closed before the end of headers",
            ));
        }
        raw.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let length = head.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse::<usize>().ok())?
    });
    let mut payload = raw[split + 4..].to_vec();
    match length {
        Some(length) => {
            while payload.len() < length {
                let n = stream.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                payload.extend_from_slice(&buf[..n]);
            }
            payload.truncate(length);
        }
        None => {
            stream.read_to_end(&mut payload)?;
        }
    }
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line: {head}")))?;
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        payload = unchunk(&payload);
    }
    Ok(HttpAnswer {
        status,
        body: String::from_utf8_lossy(&payload).into_owned(),
    })
}

fn unchunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = data.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(
            String::from_utf8_lossy(&data[..eol])
                .split(';')
                .next()
                .unwrap_or("0")
                .trim(),
            16,
        )
        .unwrap_or(0);
        if size == 0 || data.len() < eol + 2 + size {
            break;
        }
        out.extend_from_slice(&data[eol + 2..eol + 2 + size]);
        data = &data[(eol + 4 + size).min(data.len())..];
    }
    out
}

/// A free loopback port (bound, then released for the driver).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}

/// A chromedriver and one headless chromium session.
pub struct Browser {
    driver: Child,
    address: String,
    session: String,
}

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

impl Browser {
    /// Starts chromedriver (at most `secs` seconds) and a headless chromium session.
    pub fn start(profile_dir: &Path, secs: u64) -> Browser {
        let port = free_port();
        let driver = Command::new("timeout")
            .args(["-k", "5", &secs.to_string(), "chromedriver"])
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start chromedriver (apt-get install chromium-driver)");
        let address = format!("127.0.0.1:{port}");
        let mut browser = Browser {
            driver,
            address,
            session: String::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = browser
                .raw("GET", "/status", None)
                .is_ok_and(|v| v["value"]["ready"] == json!(true));
            if ready {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1400,1000", format!("--user-data-dir={}", profile_dir.display())]
            }
        }}});
        let answer = browser
            .raw("POST", "/session", Some(&caps))
            .expect("new session");
        browser.session = answer["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {answer}"))
            .to_string();
        browser
    }

    fn raw(&self, method: &str, path: &str, body: Option<&Value>) -> std::io::Result<Value> {
        let body = body.map(Value::to_string);
        let answer = http(
            &self.address,
            method,
            path,
            &self.address,
            &[],
            body.as_deref(),
        )?;
        serde_json::from_str(&answer.body).map_err(std::io::Error::other)
    }

    /// A session command; panics on a WebDriver error.
    pub fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let full = format!("/session/{}{path}", self.session);
        let answer = self
            .raw(method, &full, body.as_ref())
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        if answer["value"]["error"].is_string() {
            panic!("{method} {path}: {}", answer["value"]);
        }
        answer["value"].clone()
    }

    pub fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({ "url": url })));
    }

    /// The first element matching a CSS selector, if any.
    pub fn find(&self, css: &str) -> Option<String> {
        let full = format!("/session/{}/element", self.session);
        let answer = self
            .raw(
                "POST",
                &full,
                Some(&json!({"using": "css selector", "value": css})),
            )
            .ok()?;
        answer["value"][ELEMENT].as_str().map(str::to_string)
    }

    pub fn text(&self, element: &str) -> String {
        self.cmd("GET", &format!("/element/{element}/text"), None)
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    pub fn click(&self, element: &str) {
        self.cmd(
            "POST",
            &format!("/element/{element}/click"),
            Some(json!({})),
        );
    }

    pub fn type_text(&self, element: &str, text: &str) {
        self.cmd(
            "POST",
            &format!("/element/{element}/value"),
            Some(json!({ "text": text })),
        );
    }

    /// Runs a script (its `return` value comes back; elements as element references).
    pub fn script(&self, script: &str) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
    }

    /// Runs an async script: it calls `arguments[0]` with its result.
    pub fn script_async(&self, script: &str) -> Value {
        self.cmd(
            "POST",
            "/execute/async",
            Some(json!({"script": script, "args": []})),
        )
    }

    /// An element reference a script returned.
    pub fn element_of(value: &Value) -> Option<String> {
        value[ELEMENT].as_str().map(str::to_string)
    }

    /// Text of the element matching `css` once `ready` accepts it (within `secs`).
    pub fn wait_text(&self, css: &str, secs: u64, ready: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let mut last = String::new();
        while Instant::now() < deadline {
            if let Some(element) = self.find(css) {
                last = self.text(&element);
                if ready(&last) {
                    return last;
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("{css}: not ready within {secs} s (last text {last:?})");
    }

    /// A PNG of the window.
    pub fn screenshot(&self) -> Vec<u8> {
        let encoded = self.cmd("GET", "/screenshot", None);
        base64_decode(encoded.as_str().unwrap_or(""))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let full = format!("/session/{}", self.session);
            let _ = self.raw("DELETE", &full, None);
        }
        // SIGTERM to `timeout`, which passes it to chromedriver; then reap.
        // SAFETY: kill(2) of the child we started.
        unsafe { libc::kill(self.driver.id() as i32, libc::SIGTERM) };
        let _ = self.driver.wait();
    }
}

pub fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::new();
    let mut acc = 0u32;
    let mut bits = 0;
    for c in text.bytes() {
        let Some(v) = value(c) else { continue };
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}
