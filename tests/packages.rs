//! Packages on a real trace: `depsetfs run` records a shell script that lists `/`, reads a
//! configuration file of its own and has Python listen on a TCP port; `depsetfs packages
//! --json` must name the Debian packages of what it ran at the versions `dpkg-query` reports,
//! with the script's own files unowned, and `export --format dockerfile` must pin those
//! versions, EXPOSE the port and copy only the files that are not the packages'. nginx, traced
//! serving a page, must answer in a root `verify --packages install` builds from the archive.

mod common;

use std::fs;

use common::*;
use serde_json::Value;

fn dpkg_version(package: &str) -> String {
    let out = std::process::Command::new("dpkg-query")
        .args(["-W", "-f", "${Version}", package])
        .output()
        .unwrap_or_else(|e| panic!("dpkg-query: {e}"));
    assert!(out.status.success(), "dpkg-query -W {package}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The package dpkg says owns `path` (through the merged-/usr name if needed).
fn dpkg_owner(path: &str) -> String {
    for candidate in [path.to_string(), path.replacen("/usr", "", 1)] {
        let out = std::process::Command::new("dpkg-query")
            .args(["-S", &candidate])
            .output()
            .unwrap_or_else(|e| panic!("dpkg-query: {e}"));
        if out.status.success() {
            let text = String::from_utf8_lossy(&out.stdout);
            return text.split(':').next().unwrap_or("").trim().to_string();
        }
    }
    panic!("no package owns {path}")
}

fn file_entry<'a>(json: &'a Value, path: &str) -> &'a Value {
    json["files"]
        .as_array()
        .and_then(|files| files.iter().find(|f| f["path"] == path))
        .unwrap_or_else(|| panic!("{path} not in packages --json"))
}

#[test]
fn packages_and_dockerfile_of_a_traced_script() {
    let t = TestDir::new("packages_dockerfile");
    let app = t.join("app");
    fs::create_dir_all(&app).unwrap();
    fs::write(app.join("app.conf"), "greeting = hello\n").unwrap();
    let listen = "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(); print(s.getsockname()[1])";
    fs::write(
        app.join("run.sh"),
        format!(
            "ls / >/dev/null\ncat {conf}\npython3 -c \"{listen}\" > {port}\n",
            conf = app.join("app.conf").display(),
            port = t.join("port").display()
        ),
    )
    .unwrap();
    let out = ns_script(
        &t,
        300,
        r#""$DEPSETFS" run --log "$T/log" --timeout 240 -- sh "$T/app/run.sh""#,
    );
    out.assert_ok("depsetfs run -- sh run.sh");
    let port: u16 = fs::read_to_string(t.join("port"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let log = t.log();
    let log = log.to_str().unwrap();

    let out = depsetfs(&t, &["packages", "--log", log, "--json"]);
    out.assert_ok("depsetfs packages --json");
    let json: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(json["dpkg_database"], true);
    let packages = json["packages"].as_array().unwrap();
    let version_of = |name: &str| {
        packages
            .iter()
            .find(|p| p["name"] == name)
            .map(|p| p["version"].as_str().unwrap_or("").to_string())
    };
    let python = fs::canonicalize("/usr/bin/python3").unwrap();
    let python = python.to_str().unwrap();
    let expected = [
        dpkg_owner("/usr/bin/ls"),
        dpkg_owner("/usr/bin/dash"),
        dpkg_owner("/usr/lib/x86_64-linux-gnu/libc.so.6"),
        dpkg_owner(python),
    ];
    for name in &expected {
        assert_eq!(
            version_of(name),
            Some(dpkg_version(name)),
            "{name} with dpkg-query's version in {}",
            out.stdout
        );
    }
    let ls = file_entry(&json, "/usr/bin/ls");
    assert_eq!(ls["class"], "pristine");
    assert_eq!(ls["checksum"], "matches");
    assert_eq!(ls["copied"], false);
    let conf = format!("{}/app/app.conf", t.str());
    for own in [conf.clone(), format!("{}/app/run.sh", t.str())] {
        let entry = file_entry(&json, &own);
        assert_eq!(entry["class"], "unowned", "{own}");
        assert_eq!(entry["copied"], true, "{own}");
    }
    // A package the rules file says to copy is copied, and not installed.
    let rules = t.join("rules.toml");
    fs::write(
        &rules,
        format!("[packages]\ncopy = [\"{}\"]\n", dpkg_owner("/usr/bin/ls")),
    )
    .unwrap();
    let out = depsetfs(
        &t,
        &[
            "packages",
            "--log",
            log,
            "--json",
            "--rules",
            rules.to_str().unwrap(),
        ],
    );
    out.assert_ok("depsetfs packages --rules");
    let with_rules: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(file_entry(&with_rules, "/usr/bin/ls")["copied"], true);
    assert!(
        with_rules["packages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == dpkg_owner("/usr/bin/ls").as_str() && p["installed"] == false),
        "{}",
        out.stdout
    );
    // The human form says the same in lines.
    let human = depsetfs(&t, &["packages", "--log", log]);
    human.assert_ok("depsetfs packages");
    assert!(
        human
            .stdout
            .lines()
            .any(|l| l.trim_start().starts_with("unowned") && l.contains(&conf)),
        "{}",
        human.stdout
    );

    let out = depsetfs(
        &t,
        &[
            "export",
            "--log",
            log,
            "--format",
            "dockerfile",
            "--output",
            &t.join("image").to_string_lossy(),
        ],
    );
    out.assert_ok("export --format dockerfile");
    let dockerfile = fs::read_to_string(t.join("image/Dockerfile")).unwrap();
    let os_release = fs::read_to_string("/etc/os-release").unwrap();
    let field = |key: &str| {
        os_release
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .map(|v| v.trim_matches('"').to_string())
            .unwrap_or_default()
    };
    assert!(
        dockerfile.contains(&format!(
            "\nFROM {}:{}\n",
            field("ID"),
            field("VERSION_CODENAME")
        )),
        "{dockerfile}"
    );
    assert_eq!(
        dockerfile.matches("apt-get install").count(),
        1,
        "{dockerfile}"
    );
    // A traced version the archive no longer has is installed at the archive's, as
    // verify --packages does: named in a warning, bare in the install line.
    let unpinned: Vec<&str> = out
        .stderr
        .lines()
        .filter_map(|l| l.split_once("installed at the archive's: "))
        .flat_map(|(_, pins)| pins.split_whitespace())
        .collect();
    for name in &expected {
        let version = dpkg_version(name);
        let traced = format!("{name}={version}");
        let pinned = if unpinned.contains(&traced.as_str()) {
            format!(" {name} ")
        } else {
            format!(" {traced} ")
        };
        assert!(
            dockerfile.contains(&pinned),
            "{pinned:?} not in {dockerfile}"
        );
    }
    // The exact-version dependencies export pinned (as verify --packages does) are in the line.
    let added = out
        .stderr
        .lines()
        .find_map(|l| l.split_once("need them at exactly these versions: "))
        .map_or("", |(_, pins)| pins);
    for pin in added.split_whitespace() {
        assert!(
            dockerfile.contains(&format!(" {pin} ")),
            "{pin:?} not in {dockerfile}"
        );
    }
    assert!(
        dockerfile.contains(&format!("\nEXPOSE {port}/tcp\n")),
        "{dockerfile}"
    );
    assert!(
        dockerfile.contains(&format!("CMD [\"sh\", \"{}/app/run.sh\"]", t.str())),
        "{dockerfile}"
    );
    let rootfs = t.join("image/rootfs");
    let in_context =
        |path: &str| fs::symlink_metadata(rootfs.join(path.trim_start_matches('/'))).is_ok();
    assert!(in_context(&conf), "the script's own file is copied");
    assert_eq!(
        fs::read_to_string(rootfs.join(conf.trim_start_matches('/'))).unwrap(),
        "greeting = hello\n"
    );
    for pristine in ["/usr/bin/ls", "/usr/bin/dash", python] {
        assert!(!in_context(pristine), "{pristine} is installed, not copied");
    }
    assert!(!in_context("/proc") && !in_context("/var/lib/dpkg/status"));

    let manifest = t.join("packages.txt");
    let out = depsetfs(
        &t,
        &[
            "export",
            "--log",
            log,
            "--format",
            "packages",
            "--output",
            &manifest.to_string_lossy(),
        ],
    );
    out.assert_ok("export --format packages");
    let lines = fs::read_to_string(&manifest).unwrap();
    for name in &expected {
        let mut line = format!("{name}={}", dpkg_version(name));
        if unpinned.contains(&line.as_str()) {
            line = name.to_string();
        }
        assert!(lines.lines().any(|l| l == line), "{line} not in {lines}");
    }
    // Copying every package: nothing to install, the binaries are in the context.
    let out = depsetfs(
        &t,
        &[
            "export",
            "--log",
            log,
            "--format",
            "dockerfile",
            "--packages",
            "copy",
            "--base",
            "debian:bookworm-slim",
            "--output",
            &t.join("copied").to_string_lossy(),
        ],
    );
    out.assert_ok("export --format dockerfile --packages copy");
    let dockerfile = fs::read_to_string(t.join("copied/Dockerfile")).unwrap();
    assert!(
        dockerfile.contains("\nFROM debian:bookworm-slim\n"),
        "{dockerfile}"
    );
    assert!(!dockerfile.contains("apt-get"), "{dockerfile}");
    assert!(fs::symlink_metadata(t.join("copied/rootfs/usr/bin/ls")).is_ok());
}

/// The stanza of `package` in a dpkg status file, if any.
fn status_stanza(status: &str, package: &str) -> Option<String> {
    status
        .split("\n\n")
        .find(|stanza| stanza.lines().any(|l| l == format!("Package: {package}")))
        .map(str::to_string)
}

/// `verify --packages install` with a real service: nginx, traced serving a static page with a
/// configuration the test writes (unowned, so copied) and the distribution's files (pristine,
/// so installed). The root is built by mmdebstrap from the distribution's archive (the
/// machine's apt sources) with nginx's packages pinned at their traced versions, the test's own
/// files copied over it; nginx must start there and answer curl on the loopback. The kept root
/// shows nginx came from its package (dpkg's status and file list in the root), not from a
/// copy. The downloaded packages are kept in /var/cache/depsetfs-tests/packages between runs.
#[test]
fn verify_packages_builds_the_root_from_the_archive_and_nginx_answers() {
    let t = TestDir::new("packages_verify");
    host_command("nginx");
    host_command("curl");
    let srv = t.join("srv");
    for dir in ["www", "log", "run", "tmp"] {
        fs::create_dir_all(srv.join(dir)).unwrap();
    }
    fs::write(srv.join("www/index.html"), "hello from the archive\n").unwrap();
    let port = 20000 + std::process::id() % 10000;
    let srv_path = srv.display();
    fs::write(
        srv.join("nginx.conf"),
        format!(
            "user www-data;\n\
             worker_processes 1;\n\
             pid {srv_path}/run/nginx.pid;\n\
             error_log {srv_path}/log/error.log;\n\
             events {{ worker_connections 64; }}\n\
             http {{\n\
             \x20 include /etc/nginx/mime.types;\n\
             \x20 access_log {srv_path}/log/access.log;\n\
             \x20 client_body_temp_path {srv_path}/tmp/body;\n\
             \x20 proxy_temp_path {srv_path}/tmp/proxy;\n\
             \x20 fastcgi_temp_path {srv_path}/tmp/fastcgi;\n\
             \x20 uwsgi_temp_path {srv_path}/tmp/uwsgi;\n\
             \x20 scgi_temp_path {srv_path}/tmp/scgi;\n\
             \x20 server {{ listen 127.0.0.1:{port}; root {srv_path}/www; }}\n\
             }}\n"
        ),
    )
    .unwrap();
    // Starts nginx in the foreground (stopped by its pid), asks for the page for at most 10 s.
    let script = t.join("serve.sh");
    fs::write(
        &script,
        format!(
            "/usr/sbin/nginx -e {srv_path}/log/error.log -c {srv_path}/nginx.conf -g 'daemon off;' &\n\
             pid=$!\n\
             ok=1\n\
             for i in $(seq 50); do\n\
             \x20 if curl -fsS --max-time 2 http://127.0.0.1:{port}/index.html | grep -q 'hello from the archive'; then ok=0; break; fi\n\
             \x20 kill -0 $pid 2>/dev/null || break\n\
             \x20 sleep 0.2\n\
             done\n\
             kill $pid\n\
             wait $pid\n\
             [ $ok = 0 ] || cat {srv_path}/log/error.log >&2\n\
             exit $ok\n"
        ),
    )
    .unwrap();
    let out = ns_script(
        &t,
        300,
        r#""$DEPSETFS" run --log "$T/log" --timeout 240 -- sh "$T/serve.sh""#,
    );
    out.assert_ok("depsetfs run -- sh serve.sh (nginx)");
    let log = t.log();
    let log = log.to_str().unwrap();

    // What the policy does with nginx's files: the binary is the package's, the configuration
    // the test's own.
    let out = depsetfs(&t, &["packages", "--log", log, "--json"]);
    out.assert_ok("depsetfs packages --json");
    let json: Value = serde_json::from_str(&out.stdout).unwrap();
    let nginx = file_entry(&json, "/usr/sbin/nginx");
    assert_eq!(nginx["class"], "pristine", "{nginx}");
    assert_eq!(nginx["copied"], false, "{nginx}");
    let conf = format!("{srv_path}/nginx.conf");
    assert_eq!(file_entry(&json, &conf)["copied"], true);

    // The workdir (with the root) is kept in $T, which the test removes.
    let verify = r#"TMPDIR="$T" "$DEPSETFS" verify --keep --log "$T/log" --timeout 120 --packages install --package-cache /var/cache/depsetfs-tests/packages -- sh "$T/serve.sh""#;
    let started = std::time::Instant::now();
    let out = ns_script(&t, 400, verify);
    eprintln!(
        "verify --packages install (nginx): {:.1} s",
        started.elapsed().as_secs_f64()
    );
    for line in out.stderr.lines().filter(|l| l.starts_with("depsetfs:")) {
        eprintln!("{line}");
    }
    assert!(
        out.stderr.contains("root built from the distribution"),
        "{}",
        out.describe()
    );
    assert!(
        out.stderr.contains("exit status 0, pass"),
        "nginx did not answer in the root built from the archive: {}",
        out.describe()
    );
    assert!(out.ok(), "{}", out.describe());
    let kept = out
        .stderr
        .lines()
        .find_map(|l| l.strip_prefix("depsetfs: kept "))
        .unwrap_or_else(|| panic!("no kept workdir: {}", out.describe()));
    let root = std::path::Path::new(kept).join("root-1");

    // nginx in the root is the package's: dpkg in the root has it installed at the traced
    // version (the archive still has it) and lists /usr/sbin/nginx among its files.
    let status = fs::read_to_string(root.join("var/lib/dpkg/status")).unwrap();
    for package in ["nginx", "nginx-common"] {
        let stanza = status_stanza(&status, package)
            .unwrap_or_else(|| panic!("{package} not in the root's dpkg status"));
        assert!(
            stanza.contains("\nStatus: install ok installed\n"),
            "{stanza}"
        );
        assert!(
            stanza.contains(&format!("\nVersion: {}\n", dpkg_version(package))),
            "{stanza}"
        );
    }
    let list = fs::read_to_string(root.join("var/lib/dpkg/info/nginx.list")).unwrap();
    assert!(list.lines().any(|l| l == "/usr/sbin/nginx"), "{list}");
    assert!(fs::metadata(root.join("usr/sbin/nginx")).is_ok_and(|m| m.is_file()));
    // The test's own files were copied over it.
    assert_eq!(
        fs::read_to_string(root.join(srv.join("www/index.html").strip_prefix("/").unwrap()))
            .unwrap(),
        "hello from the archive\n"
    );
}
