//! Image in, smaller image out: an OCI image of a Debian root with nginx (mmdebstrap + umoci,
//! tests/scripts/debian_image.sh), traced with `depsetfs run --image` while curl asks nginx for
//! its page on a private loopback, exported with `export --format oci`, unpacked again with
//! umoci and served from a plain chroot of that root. The size ratio is printed.
//!
//! Building the image takes minutes (apt in a fresh root), so the built layout is kept in
//! /var/cache/depsetfs-tests/images/ (named after the build script's checksum) and the .debs in
//! /var/cache/depsetfs-tests/apt/: the first run builds, later runs reuse.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;

use common::*;

const CACHE: &str = "/var/cache/depsetfs-tests";

/// The nginx image layout (tag `nginx`), built once and then taken from the cache.
fn nginx_image(t: &TestDir) -> PathBuf {
    let script = t.install_script("debian_image.sh");
    let out = host_script(
        t,
        900,
        &format!(
            r#"
script={script}
build=(nginx -- --config.entrypoint nginx --config.cmd -g --config.cmd 'daemon off;'
  --config.exposedports 80/tcp --config.env LANG=C.UTF-8 --config.workingdir /var/www
  --config.label org.example.service=nginx)
# The cache key: the build script and what it is asked to build.
key=$( (cat "$script"; printf '%s\n' "${{build[@]}}") | sha256sum | cut -c1-16)
layout={CACHE}/images/nginx-$key
mkdir -p {CACHE}/images
exec 9>{CACHE}/images/.lock
timeout 850 flock 9 # one build at a time: the other test waits for it
if [ ! -f "$layout/index.json" ]; then
  rm -rf "$layout.tmp"
  start=$(date +%s)
  timeout 800 bash "$script" "$layout.tmp" nginx {CACHE}/apt "${{build[@]}}" >&2
  echo "built the image in $(( $(date +%s) - start )) s" >&2
  mv "$layout.tmp" "$layout"
  # Builds of an older script or other arguments are not used any more.
  find {CACHE}/images -mindepth 1 -maxdepth 1 -name 'nginx-*' ! -name "nginx-$key" -exec rm -rf {{}} +
fi
echo "$layout"
"#,
            script = script.display()
        ),
    );
    out.assert_ok("building the nginx image (mmdebstrap + umoci)");
    eprintln!("{}", out.stderr);
    PathBuf::from(out.stdout.trim())
}

fn json(path: &Path) -> Value {
    serde_json::from_slice(&fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn blob(layout: &Path, digest: &Value) -> PathBuf {
    let digest = digest.as_str().expect("a digest");
    layout
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
}

/// The manifest tagged `tag` and its config.
fn manifest_and_config(layout: &Path, tag: &str) -> (Value, Value) {
    let index = json(&layout.join("index.json"));
    let entry = index["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap_or_else(|| panic!("{}: no tag {tag}", layout.display()))
        .clone();
    let manifest = json(&blob(layout, &entry["digest"]));
    let config = json(&blob(layout, &manifest["config"]["digest"]));
    (manifest, config)
}

fn compressed_size(layout: &Path, manifest: &Value) -> u64 {
    manifest["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| {
            fs::metadata(blob(layout, &l["digest"]))
                .expect("layer")
                .len()
        })
        .sum()
}

/// Bytes of the files of a tree (`du -sb`).
fn tree_bytes(t: &TestDir, dir: &Path) -> u64 {
    let out = host_script(t, 120, &format!("du -sb '{}' | cut -f1", dir.display()));
    out.assert_ok("du");
    out.stdout.trim().parse().expect("du prints a number")
}

/// Serves `$ROOT`'s nginx (`$START`) on a fresh loopback (its own network namespace) until
/// curl got the welcome page, then stops it by pid. Prints `code=`.
const SERVE_AND_ASK: &str = r#"
timeout -k 5 400 unshare -n bash -c '
  set -u
  ip link set lo up
  eval "exec $START" >"$T/$NAME.out" 2>&1 &
  pid=$!
  code=none
  for i in $(seq 1 600); do
    if timeout 5 curl -s -o "$T/$NAME.page" http://127.0.0.1/; then code=ok; break; fi
    kill -0 $pid 2>/dev/null || break
    sleep 0.2
  done
  echo "code=$code"
  kill -TERM $pid 2>/dev/null
  wait $pid
  echo "exit=$?"
'
"#;

#[test]
fn an_image_traced_with_nginx_exports_a_smaller_image_that_still_serves() {
    let t = TestDir::new("images-nginx");
    let layout = nginx_image(&t);
    let log = t.join("nginx.dlog");
    let traced = ns_script(
        &t,
        500,
        &format!(
            r#"NAME=traced START='"$DEPSETFS" run --timeout 300 --log "$T/nginx.dlog" --image {layout}:nginx'
export NAME START
{SERVE_AND_ASK}
cat "$T/traced.out" >&2"#,
            layout = layout.display()
        ),
    );
    traced.assert_ok("run --image, curl, stop");
    assert!(
        traced.stdout.contains("code=ok") && traced.stdout.contains("exit=0"),
        "{}",
        traced.describe()
    );
    let page = fs::read_to_string(t.join("traced.page")).unwrap_or_default();
    assert!(page.contains("Welcome to nginx"), "{page}");

    // The header names the image, and the source is its unpacked root.
    let events = dump_events(&t, &log);
    let header = &events[0];
    let (manifest, config) = manifest_and_config(&layout, "nginx");
    assert_eq!(header["image"]["tag"], "nginx", "{header}");
    assert_eq!(header["image"]["config"], manifest["config"]["digest"]);
    let unpacked = PathBuf::from(header["source"].as_str().expect("source"));
    assert!(unpacked.starts_with(t.state().join("images")), "{header}");
    assert_eq!(
        header["command"]["cwd"], "/var/www",
        "the image's WorkingDir"
    );

    let out = t.join("debloated");
    let exported = depsetfs(
        &t,
        &[
            "export",
            "--log",
            log.to_str().unwrap(),
            "--format",
            "oci",
            "--output",
            out.to_str().unwrap(),
        ],
    );
    exported.assert_ok("export --format oci");
    let (small_manifest, small_config) = manifest_and_config(&out, "latest");
    for key in [
        "Entrypoint",
        "Cmd",
        "ExposedPorts",
        "Env",
        "WorkingDir",
        "Labels",
    ] {
        assert_eq!(
            small_config["config"][key], config["config"][key],
            "config {key} kept"
        );
    }
    let history = small_config["history"].to_string();
    assert!(history.contains("debloated from"), "{history}");

    // umoci unpacks it, and nginx answers from a plain chroot of that root.
    let served = ns_script(
        &t,
        500,
        &format!(
            r#"timeout 300 umoci unpack --image "$T/debloated:latest" "$T/bundle" >/dev/null
ROOT="$T/bundle/rootfs"
mount --bind /dev "$ROOT/dev"
mount -t proc proc "$ROOT/proc"
NAME=chroot START="chroot $ROOT nginx -g 'daemon off;'"
export NAME START ROOT
{SERVE_AND_ASK}"#
        ),
    );
    served.assert_ok("umoci unpack, chroot nginx, curl");
    assert!(served.stdout.contains("code=ok"), "{}", served.describe());
    let page = fs::read_to_string(t.join("chroot.page")).unwrap_or_default();
    assert!(page.contains("Welcome to nginx"), "{page}");

    let (before, after) = (
        compressed_size(&layout, &manifest),
        compressed_size(&out, &small_manifest),
    );
    let (before_tree, after_tree) = (
        tree_bytes(&t, &unpacked),
        tree_bytes(&t, &t.join("bundle/rootfs")),
    );
    println!(
        "nginx image: compressed {before} -> {after} bytes ({:.1}x, {:.1}% smaller); unpacked {before_tree} -> {after_tree} bytes ({:.1}x, {:.1}% smaller)",
        before as f64 / after as f64,
        100.0 * (1.0 - after as f64 / before as f64),
        before_tree as f64 / after_tree as f64,
        100.0 * (1.0 - after_tree as f64 / before_tree as f64),
    );
    assert!(after * 3 < before, "{after} not well below {before}");
}

#[test]
fn the_command_starts_with_the_images_user_environment_and_directory() {
    let t = TestDir::new("images-config");
    let layout = nginx_image(&t);
    // A copy with a config of its own (umoci writes a new config and manifest for the tag).
    let out = ns_script(
        &t,
        300,
        &format!(
            r#"cp -a '{layout}' "$T/layout"
timeout 60 umoci config --image "$T/layout:nginx" --tag configured \
  --config.user www-data --config.env GREETING=hello
timeout 200 "$DEPSETFS" run --log "$T/log" --image "$T/layout:configured" -- \
  sh -c 'echo "uid=$(id -u) gid=$(id -g) cwd=$PWD greeting=$GREETING lang=$LANG"'"#,
            layout = layout.display()
        ),
    );
    out.assert_ok("run --image with User and Env");
    assert!(
        out.stdout
            .contains("uid=33 gid=33 cwd=/var/www greeting=hello lang=C.UTF-8"),
        "{}",
        out.describe()
    );
}

#[test]
fn a_missing_image_is_one_error_line() {
    let t = TestDir::new("images-missing");
    let missing = t.join("no-such-layout");
    let out = ns_script(
        &t,
        60,
        &format!(
            r#""$DEPSETFS" run --image '{}:v1' -- /bin/true"#,
            missing.display()
        ),
    );
    assert!(!out.ok(), "{}", out.describe());
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{}", out.describe());
    assert!(
        lines[0].starts_with("depsetfs: ") && lines[0].contains("no-such-layout"),
        "{}",
        out.describe()
    );
    assert!(!t.state().join("images").exists(), "nothing unpacked");
}
