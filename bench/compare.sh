#!/usr/bin/env bash
# Times `depsetfs diff` of two sets of N paths each (synthetic saved sets and synthetic
# manifests, generated here) and `depsetfs manifest` of a root twice (the first run hashes
# every file, the second reuses the first's hashes), with wall time and peak RSS from
# /usr/bin/time -v. Mounts nothing. Run by hand after `cargo build --release`:
#
#   bash bench/compare.sh [N] [ROOT]      # defaults: 100000 and /
#
# The whole root of a machine is large: the first manifest reads every file (minutes).
set -euo pipefail
N=${1:-100000}
ROOT=${2:-/}
BIN=${DEPSETFS_BIN:-$(dirname "$0")/../target/release/depsetfs}
[ -x "$BIN" ] || { echo "build first: cargo build --release" >&2; exit 1; }
work=$(mktemp -d /var/tmp/depsetfs-bench-compare.XXXXXX)
trap 'rm -rf "$work"' EXIT

measure() { # LABEL CMD...: one line "LABEL  wall  peak-RSS"
  local label=$1; shift
  /usr/bin/time -v -o "$work/time" "$@" >"$work/out" 2>"$work/err" || [ $? -eq 1 ]
  awk -v label="$label" '
    /Elapsed \(wall clock\)/ { wall = $NF }
    /Maximum resident set size/ { rss = $NF }
    END { printf "| %s | %s | %.0f MiB |\n", label, wall, rss / 1024 }' "$work/time"
}

python3 - "$N" "$work" <<'EOF'
import json, sys, hashlib
n, work = int(sys.argv[1]), sys.argv[2]
def path(i):  # sorted by i, as sets and manifests are sorted by path
    return "/usr/share/bench/d%03d/f%06d" % (i // 1000, i)
def saved_set(offset):
    entries = [{"path": path(i), "kind": "file", "size": 100 + i % 7, "reason": "used",
                "users": [{"pid": 1000 + i % 50, "start": 1, "exe": "/usr/bin/app", "ops": ["open(read)"]}]}
               for i in range(offset, offset + n)]
    return {"format": "depsetfs-set 1", "entries": entries, "required_devices": [],
            "dropped_missing": 0, "strategy": "strict", "needed": [], "stubs": [],
            "outputs": [], "excluded": []}
def manifest(offset, salt):
    entries = []
    for i in range(offset, offset + n):
        content = ("%d-%d" % (i, salt if i % 100 == 0 else 0)).encode()
        entries.append({"path": path(i), "kind": "file", "mode": "0644", "uid": 0, "gid": 0,
                        "size": len(content), "sha256": hashlib.sha256(content).hexdigest()})
    return {"format": "depsetfs-manifest 1", "arch": "x86_64", "entries": entries}
# B: 1% of the paths are new, 1% gone, and (manifests) 1% of the files' contents changed.
for name, doc in [("a-set", saved_set(0)), ("b-set", saved_set(n // 100)),
                  ("a-manifest", manifest(0, 0)), ("b-manifest", manifest(n // 100, 1))]:
    with open("%s/%s.json" % (work, name), "w") as f:
        json.dump(doc, f)
EOF

echo "| what | wall (m:ss) | peak RSS |"
echo "|---|---|---|"
measure "diff of two saved sets, $N paths each" "$BIN" diff "$work/a-set.json" "$work/b-set.json"
measure "diff --json of two saved sets" "$BIN" diff --json "$work/a-set.json" "$work/b-set.json"
measure "diff of two manifests, $N paths each" "$BIN" diff "$work/a-manifest.json" "$work/b-manifest.json"
measure "manifest $ROOT, first run (hashes every file)" "$BIN" manifest "$ROOT" --no-cache --output "$work/root.json"
tail -1 "$work/err" >&2
measure "manifest $ROOT, second run (incremental)" "$BIN" manifest "$ROOT" --output "$work/root.json"
tail -1 "$work/err" >&2
ls -l "$work/root.json" >&2
