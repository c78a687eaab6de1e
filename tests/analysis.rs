//! The analysis on real traces: `depsetfs run` records a small scenario chrooted on the
//! mirror, then `dump --set`, `why` and the selection options are asked about it. Each test
//! checks the membership that the feature decides, and a control that shows the scenario
//! really exercised it (so a test cannot pass because nothing happened).
//!
//! Short-lived programs such as `cat` are selected with `--exe` (known from the exec open the
//! mirror saw), not `--cmd`: their argv can be gone from /proc before the tracker reads it.

mod common;

use std::collections::BTreeSet;
use std::fs;

use common::*;
use serde_json::Value;

/// `depsetfs run --log $T/log -- sh $T/NAME` after writing the script.
fn run_script(t: &TestDir, name: &str, script: &str) {
    let path = t.join(name);
    fs::write(&path, script).unwrap();
    let out = ns_script(
        t,
        300,
        &format!(r#""$DEPSETFS" run --log "$T/log" --timeout 240 -- sh "$T/{name}""#),
    );
    out.assert_ok(&format!("depsetfs run -- sh {name}"));
}

/// `depsetfs dump --set --json --log $T/log ARGS`.
fn set_json(t: &TestDir, args: &[&str]) -> Value {
    let log = t.log();
    let mut all = vec!["dump", "--set", "--json", "--log", log.to_str().unwrap()];
    all.extend_from_slice(args);
    let out = depsetfs(t, &all);
    out.assert_ok(&format!("depsetfs {all:?}"));
    serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("dump --set --json is not JSON ({e}): {}", out.stdout))
}

fn entries(json: &Value) -> BTreeSet<String> {
    json["entries"]
        .as_array()
        .expect("no entries")
        .iter()
        .map(|entry| entry["path"].as_str().unwrap().to_string())
        .collect()
}

fn strings(json: &Value, key: &str, field: Option<&str>) -> Vec<String> {
    json[key]
        .as_array()
        .unwrap_or_else(|| panic!("no {key} array in {json}"))
        .iter()
        .map(|item| match field {
            Some(field) => item[field].as_str().unwrap().to_string(),
            None => item.as_str().unwrap().to_string(),
        })
        .collect()
}

#[test]
fn strict_pulls_in_the_child_that_wrote_a_config_file_the_selection_reads() {
    let t = TestDir::new("analysis_writer");
    let python = canonical(PYTHON);
    run_script(
        &t,
        "writer.sh",
        &format!(
            "{PYTHON} -c 'open(\"{t}/app.conf\", \"w\").write(\"port = 80\\n\")'\n\
             /usr/bin/date >/dev/null\n\
             cat {t}/app.conf\n",
            t = t.str()
        ),
    );
    let strict = entries(&set_json(
        &t,
        &["--strategy", "strict", "--exe", "/usr/bin/cat"],
    ));
    assert_in_set(&strict, &python, "python3 wrote the config cat read");
    assert_in_set(&strict, &format!("{}/app.conf", t.str()), "read by cat");
    assert_not_in_set(&strict, "/usr/bin/date");
    // The control: date ran, and the sanity set has it.
    let all = entries(&set_json(&t, &["--strategy", "all"]));
    assert_in_set(&all, "/usr/bin/date", "date ran");
}

#[test]
fn selecting_a_unix_socket_client_pulls_in_the_server() {
    let t = TestDir::new("analysis_socket");
    run_script(&t, "socket.sh", &unix_socket_pair(&t));
    let json = set_json(&t, &["--strategy", "strict", "--cmd", "client\\.py"]);
    let set = entries(&json);
    let server = format!("{}/server.py", t.str());
    assert_in_set(&set, &server, "read by the server the client connected to");
    let why: Vec<String> = json["needed"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|process| {
            process["argv"]
                .as_array()
                .is_some_and(|argv| argv.iter().any(|arg| arg.as_str() == Some(&server)))
        })
        .map(|process| process["why"].as_str().unwrap().to_string())
        .collect();
    let bound = format!("bound unix:{}/app.sock", t.str());
    assert!(
        why.iter().any(|reason| reason.starts_with(&bound)),
        "the server is needed because the client connected to its socket: {why:?}"
    );
}

#[test]
fn a_noise_file_does_not_pull_in_its_unselected_writer() {
    let t = TestDir::new("analysis_noise");
    run_script(
        &t,
        "noise.sh",
        &format!("/usr/bin/date > {t}/shared\ncat {t}/shared\n", t = t.str()),
    );
    // The control: without the rule, date wrote what cat read, so strict needs it.
    let plain = entries(&set_json(
        &t,
        &["--strategy", "strict", "--exe", "/usr/bin/cat"],
    ));
    assert_in_set(&plain, "/usr/bin/date", "date wrote the file cat read");
    let rules = t.join("rules.toml");
    fs::write(
        &rules,
        format!("[policy]\nnoise = [\"{}/shared\"]\n", t.str()),
    )
    .unwrap();
    let noisy = entries(&set_json(
        &t,
        &[
            "--strategy",
            "strict",
            "--exe",
            "/usr/bin/cat",
            "--rules",
            rules.to_str().unwrap(),
        ],
    ));
    assert_not_in_set(&noisy, "/usr/bin/date");
    assert_in_set(&noisy, &format!("{}/shared", t.str()), "still read by cat");
}

#[test]
fn a_write_only_log_file_is_left_out_and_its_directory_kept() {
    let t = TestDir::new("analysis_outputs");
    fs::create_dir(t.join("logs")).unwrap();
    fs::write(t.join("in"), "input\n").unwrap();
    run_script(
        &t,
        "outputs.sh",
        &format!(
            "echo started >> {t}/logs/app.log\ncat {t}/in >> {t}/logs/app.log\n",
            t = t.str()
        ),
    );
    let log_file = format!("{}/logs/app.log", t.str());
    let json = set_json(&t, &["--strategy", "strict"]);
    let strict = entries(&json);
    assert_not_in_set(&strict, &log_file);
    assert_in_set(&strict, &format!("{}/logs", t.str()), "where the log goes");
    assert_in_set(&strict, &format!("{}/in", t.str()), "read by cat");
    assert!(strings(&json, "outputs", None).contains(&log_file));
    let all = entries(&set_json(&t, &["--strategy", "all"]));
    assert_in_set(&all, &log_file, "the sanity set ships everything");
}

#[test]
fn why_names_the_exec_chain_that_loaded_libc() {
    let t = TestDir::new("analysis_why");
    fs::write(t.join("in"), "input\n").unwrap();
    run_script(&t, "why.sh", &format!("cat {}/in\n", t.str()));
    let cat = canonical(&host_command("cat"));
    let (interp, libs) = elf_deps(&cat);
    let libc = canonical(libs.iter().find(|lib| lib.contains("libc.so")).unwrap());
    let log = t.log();
    let out = depsetfs(
        &t,
        &[
            "why",
            "--log",
            log.to_str().unwrap(),
            "--exe",
            "/usr/bin/cat",
            &libc,
        ],
    );
    out.assert_ok("depsetfs why libc");
    let text = &out.stdout;
    assert!(text.contains("in the set: used"), "{text}");
    assert!(text.contains(&format!("exec {cat} (binary)")), "{text}");
    assert!(
        text.contains(&format!("exec {} (ELF interpreter)", canonical(&interp))),
        "{text}"
    );
    assert!(text.contains(&format!("open(read) {libc}")), "{text}");
    let json = depsetfs(
        &t,
        &[
            "why",
            "--json",
            "--log",
            log.to_str().unwrap(),
            "/proc/cpuinfo",
        ],
    );
    json.assert_ok("depsetfs why --json");
    let answer: Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(answer["in_set"], false, "{answer}");
}

#[test]
fn a_helper_the_parent_runs_but_does_not_need_is_listed_as_a_stub() {
    let t = TestDir::new("analysis_stubs");
    fs::write(t.join("in"), "input\n").unwrap();
    run_script(
        &t,
        "stubs.sh",
        &format!("/usr/bin/whoami >/dev/null || true\ncat {}/in\n", t.str()),
    );
    let whoami = canonical("/usr/bin/whoami");
    let stubbed = set_json(
        &t,
        &["--strategy", "strict", "--stubs", "--exe", "/usr/bin/cat"],
    );
    assert_eq!(
        strings(&stubbed, "stubs", Some("path")),
        vec![whoami.clone()]
    );
    assert_not_in_set(&entries(&stubbed), &whoami);
    let plain = set_json(&t, &["--strategy", "strict", "--exe", "/usr/bin/cat"]);
    assert!(strings(&plain, "stubs", Some("path")).is_empty());
    // Selecting the whole command needs whoami: no stub then.
    let whole = set_json(&t, &["--strategy", "strict", "--stubs"]);
    assert!(strings(&whole, "stubs", Some("path")).is_empty());
    assert_in_set(&entries(&whole), &whoami, "run by the traced command");
}

/// A rules file whose excludes remove everything the selection used gives an empty set, and
/// says so once, naming the file; the same log without it warns about nothing of the kind.
#[test]
fn rules_that_exclude_everything_warn_once() {
    let t = TestDir::new("analysis_exclude_all");
    run_script(&t, "cat.sh", "cat /etc/hostname >/dev/null\n");
    let rules = t.join("everything.toml");
    fs::write(&rules, "[paths]\nexclude = [\"/**\"]\n").unwrap();
    let log = t.log();
    let set = |extra: &[&str]| {
        let mut args = vec!["dump", "--set", "--log", log.to_str().unwrap()];
        args.extend_from_slice(extra);
        let out = depsetfs(&t, &args);
        out.assert_ok(&format!("depsetfs {args:?}"));
        out
    };
    let rules_warnings = |out: &Outcome| -> Vec<String> {
        out.stderr
            .lines()
            .filter(|line| line.starts_with("depsetfs: warning:") && line.contains("exclude"))
            .map(str::to_string)
            .collect()
    };
    let plain = set(&[]);
    assert!(!plain.stdout.is_empty(), "the control set is empty");
    assert_eq!(rules_warnings(&plain), Vec::<String>::new());
    let excluded = set(&["--rules", rules.to_str().unwrap()]);
    assert_eq!(excluded.stdout, "", "{}", excluded.describe());
    let warnings = rules_warnings(&excluded);
    assert_eq!(warnings.len(), 1, "{}", excluded.describe());
    assert!(
        warnings[0].starts_with(&format!(
            "depsetfs: warning: {}: the exclude rules removed every path the selection used",
            rules.display()
        )),
        "{}",
        warnings[0]
    );
    // export reads the same plan and says the same, once.
    let out = t.join("export");
    let exported = depsetfs(
        &t,
        &[
            "export",
            "--log",
            log.to_str().unwrap(),
            "--rules",
            rules.to_str().unwrap(),
            "--format",
            "dir",
            "--output",
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(
        rules_warnings(&exported).len(),
        1,
        "{}",
        exported.describe()
    );
}

/// Names are exact outside export too. A traced `cat` reads a file whose name holds a newline
/// and two whose names differ only in a byte that is not UTF-8: `dump --set -0` gives their
/// exact bytes, the line form gives one escaped line each that decodes back to them, and the
/// JSON outputs (the set, the events, `who`) keep the two invalid names apart.
#[test]
fn names_with_a_newline_or_invalid_utf8_stay_exact() {
    use std::os::unix::ffi::OsStrExt;
    let t = TestDir::new("analysis_names");
    let dir = t.join("names");
    fs::create_dir(&dir).unwrap();
    let names: [&[u8]; 3] = [b"two\nlines", b"bad\xff", b"bad\xfe"];
    let full = |name: &[u8]| [dir.as_os_str().as_bytes(), b"/", name].concat();
    for name in names {
        fs::write(std::ffi::OsStr::from_bytes(&full(name)), "x").unwrap();
    }
    run_script(
        &t,
        "names.sh",
        &format!("cat {}/* >/dev/null\n", dir.display()),
    );

    let out = host_script(
        &t,
        60,
        r#""$DEPSETFS" dump --set -0 --log "$T/log" >"$T/set0"
"$DEPSETFS" dump --set --null --log "$T/log" | cmp - "$T/set0"
"$DEPSETFS" who --json --log "$T/log" "$T/names/$(printf 'bad\377')" >"$T/who.json"
pid=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))[0]["pid"])' "$T/who.json")
"$DEPSETFS" files -0 --pid "$pid" --log "$T/log" >"$T/files0""#,
    );
    out.assert_ok("dump --set -0, who --json, files -0");
    let nul_list = |file: &str| -> Vec<Vec<u8>> {
        let bytes = fs::read(t.join(file)).unwrap();
        assert_eq!(bytes.last(), Some(&0), "{file} does not end with NUL");
        bytes[..bytes.len() - 1]
            .split(|&b| b == 0)
            .map(<[u8]>::to_vec)
            .collect()
    };
    let exact = nul_list("set0");
    let touched = nul_list("files0");
    for name in names {
        assert!(exact.contains(&full(name)), "dump --set -0 lacks {name:?}");
        assert!(touched.contains(&full(name)), "files -0 lacks {name:?}");
    }

    // The line form: one line per path, each decoding to the exact bytes, in the same order.
    let lines = depsetfs(&t, &["dump", "--set", "--log", t.log().to_str().unwrap()]);
    lines.assert_ok("dump --set");
    let decoded: Vec<Vec<u8>> = lines
        .stdout
        .lines()
        .map(|line| depsetfs::analysis::names::unescape(line).unwrap_or_else(|e| panic!("{e}")))
        .collect();
    assert_eq!(decoded, exact, "the line form does not round-trip");
    let newline = format!("{}/two\\nlines", dir.display());
    assert!(
        lines.stdout.lines().any(|l| l == newline),
        "{}",
        lines.stdout
    );

    // JSON: the two invalid names are two different values, with their exact bytes.
    let json = set_json(&t, &[]);
    let objects: Vec<&Value> = json["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| &entry["path"])
        .filter(|path| path.is_object())
        .collect();
    let bytes_of = |value: &Value| -> Vec<u8> {
        value["bytes"]
            .as_array()
            .unwrap_or_else(|| panic!("no bytes in {value}"))
            .iter()
            .map(|b| b.as_u64().unwrap() as u8)
            .collect()
    };
    let exact_json: BTreeSet<Vec<u8>> = objects.iter().map(|path| bytes_of(path)).collect();
    assert_eq!(
        exact_json,
        BTreeSet::from([full(b"bad\xff"), full(b"bad\xfe")]),
        "{json}"
    );
    let newline_name = format!("{}/two\nlines", dir.display());
    assert!(
        json["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|entry| entry["path"] == newline_name.as_str()),
        "a UTF-8 name is no longer a plain string"
    );
    let events = dump_events(&t, &t.log());
    let accessed: BTreeSet<Vec<u8>> = of_type(&events, "access")
        .filter(|access| access["path"].is_object())
        .map(|access| bytes_of(&access["path"]))
        .collect();
    assert!(
        accessed.contains(&full(b"bad\xff")) && accessed.contains(&full(b"bad\xfe")),
        "dump merged or lost the invalid names"
    );
    let who: Value = serde_json::from_slice(&fs::read(t.join("who.json")).unwrap()).unwrap();
    assert_eq!(bytes_of(&who[0]["path"]), full(b"bad\xff"), "{who}");
}
