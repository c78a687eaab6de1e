//! Executables in a set are whole, a stub, or absent (issue 15). A traced shell runs a helper
//! (`hostname`, output thrown away) and then `cat`; selecting the shell and cat by their
//! binaries selects the fork copy of the shell that calls `execve` for the helper too, but not
//! the helper itself. What the
//! kernel reads inside that `execve` is the helper's need, so the strict set must not hold the
//! helper's binary without its libraries: it is absent, or with `--stubs` the stub program, and
//! the shell still runs from the export either way. Every ELF file of the exported roots loads
//! there (the loader's `--list`, chrooted).

mod common;

use std::collections::BTreeSet;
use std::fs;

use common::*;
use serde_json::Value;

/// The script: the helper's result is not used (stdout to /dev/null, status ignored).
fn script(t: &TestDir) -> String {
    format!("hostname >/dev/null; cat {}/in", t.str())
}

fn traced(name: &str) -> (TestDir, String) {
    let t = TestDir::new(name);
    fs::write(t.join("in"), "input\n").unwrap();
    let script = script(&t);
    let out = ns_script(
        &t,
        300,
        &format!(r#""$DEPSETFS" run --log "$T/log" --timeout 240 -- sh -c '{script}'"#),
    );
    out.assert_ok("trace the shell");
    assert_eq!(out.stdout, "input\n");
    (t, script)
}

fn with_log<'a>(log: &'a str, args: &[&'a str]) -> Vec<&'a str> {
    let mut all = args.to_vec();
    all.extend_from_slice(&["--log", log]);
    all
}

fn set_json(t: &TestDir, args: &[&str]) -> Value {
    let log = t.log();
    let log = log.to_str().unwrap();
    let mut all = with_log(log, &["dump", "--set", "--json", "--strategy", "strict"]);
    all.extend_from_slice(args);
    let out = depsetfs(t, &all);
    out.assert_ok("dump --set --json");
    serde_json::from_str(&out.stdout).unwrap()
}

fn entries(json: &Value) -> BTreeSet<String> {
    json["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["path"].as_str().unwrap().to_string())
        .collect()
}

fn stubs(json: &Value) -> Vec<String> {
    json["stubs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|stub| stub["path"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_helper_the_selected_shell_runs_is_absent_or_a_stub_never_half_shipped() {
    let (t, script) = traced("executables_helper");
    let dash = canonical(&host_command("sh"));
    let hostname = canonical(&host_command("hostname"));
    let cat = canonical(&host_command("cat"));
    // The shell and cat (whose output is the point); not hostname.
    let selection = ["--exe", dash.as_str(), "--exe", cat.as_str()];

    // The plain strict set: the helper is absent (it is not whole: its libraries are not
    // needed by anything selected).
    let plain = set_json(&t, &selection);
    let set = entries(&plain);
    assert_not_in_set(&set, &hostname);
    assert_in_set(&set, &dash, "the selected shell");
    assert!(stubs(&plain).is_empty());
    // Control: the whole command needs hostname, shipped whole, with every library it loads.
    let whole = entries(&set_json(&t, &[]));
    assert_in_set(&whole, &hostname, "run by the traced command");
    let (interpreter, libraries) = elf_deps(&hostname);
    assert_chain_in_set(&whole, &interpreter, "hostname's loader");
    for library in libraries {
        assert_chain_in_set(&whole, &library, "a library of hostname");
    }

    // report and why list it as a stub candidate.
    let log = t.log();
    let log = log.to_str().unwrap();
    let mut args = with_log(log, &["report"]);
    args.extend_from_slice(&selection);
    let report = depsetfs(&t, &args);
    report.assert_ok("report");
    assert!(
        report.stdout.contains("EXECS WHOLE/STUB"),
        "{}",
        report.stdout
    );
    assert!(
        report
            .stdout
            .lines()
            .any(|line| line.starts_with("strict: stub candidates") && line.contains(&hostname)),
        "{}",
        report.stdout
    );
    let mut args = with_log(log, &["why"]);
    args.extend_from_slice(&selection);
    args.push(&hostname);
    let why = depsetfs(&t, &args);
    why.assert_ok("why");
    assert!(why.stdout.contains("a stub candidate"), "{}", why.stdout);

    // With --stubs the helper is the stub program.
    let mut stubbed_args = vec!["--stubs"];
    stubbed_args.extend_from_slice(&selection);
    let stubbed = set_json(&t, &stubbed_args);
    assert_eq!(stubs(&stubbed), vec![hostname.clone()]);

    // Exported with and without stubs, the shell runs from the root, and every ELF loads.
    for (name, extra) in [("stubbed", vec!["--stubs"]), ("bare", vec![])] {
        let root = t.join(name);
        let mut args = with_log(
            log,
            &[
                "export",
                "--format",
                "dir",
                "--output",
                root.to_str().unwrap(),
            ],
        );
        args.extend_from_slice(&["--strategy", "strict"]);
        args.extend_from_slice(&extra);
        args.extend_from_slice(&selection);
        depsetfs(&t, &args).assert_ok(&format!("export {name}"));
        let helper = root.join(&hostname[1..]);
        if name == "stubbed" {
            assert!(fs::metadata(&helper).unwrap().len() < 200, "the stub");
        } else {
            assert!(!helper.exists(), "absent without --stubs");
        }
        assert_every_elf_loads(&root);
        let replay = ns_script(
            &t,
            120,
            &format!(
                r#"mkdir -p "$T/{name}/proc" "$T/{name}/sys" "$T/{name}/dev"
"$DEPSETFS" run --source "$T/{name}" --log "$T/{name}.log" -- sh -c '{script}'"#
            ),
        );
        replay.assert_ok(&format!("the shell in the {name} root"));
        assert_eq!(replay.stdout, "input\n", "{}", replay.describe());
        assert!(
            !replay.stderr.contains("error while loading"),
            "{}",
            replay.stderr
        );
    }

    // verify --stubs passes, and its own loader check finds nothing broken.
    let mut args = with_log(log, &["verify", "--strategy", "strict", "--stubs"]);
    args.extend_from_slice(&selection);
    args.extend_from_slice(&["--", "sh", "-c", &script]);
    let verified = depsetfs_ns(&t, &args);
    verified.assert_ok("verify --stubs");
    assert!(
        verified.stderr.contains("0 files would not load"),
        "{}",
        verified.stderr
    );
}
