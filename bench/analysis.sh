#!/usr/bin/env bash
# Analysis benchmark (issue 3): writes a synthetic log of RECORDS records (default 1,000,000;
# ~50k distinct files, 2,000 processes) and times `depsetfs stats` (graph build) and
# `depsetfs dump --set --strategy strict` (graph build + strict set), with peak RSS from
# /usr/bin/time -v. Usage: bench/analysis.sh [RECORDS] (from the crate root, after
# `cargo build --release`).
set -euo pipefail
records=${1:-1000000}
bin=${DEPSETFS:-target/release/depsetfs}
work=$(mktemp -d /tmp/depsetfs-bench-analysis.XXXXXX)
trap 'rm -rf "$work"' EXIT
"$bin" __synth-log --records "$records" --files 50000 --processes 2000 "$work/log"
echo "log: $records records, $(du -h "$work/log" | cut -f1)"
measure() {
  local name=$1; shift
  /usr/bin/time -v "$@" >"$work/out" 2>"$work/time" || { cat "$work/time"; exit 1; }
  local wall rss
  wall=$(awk -F': ' '/Elapsed \(wall clock\)/ { print $2 }' "$work/time")
  rss=$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$work/time")
  printf '%-40s wall %s  peak RSS %d MiB\n' "$name" "$wall" $((rss / 1024))
}
measure "stats (graph build)" "$bin" stats --log "$work/log"
measure "dump --set --strategy strict" "$bin" dump --set --strategy strict --log "$work/log"
measure "report (all four strategies)" "$bin" report --log "$work/log"
measure "packages (set + dpkg database)" "$bin" packages --log "$work/log"
measure "packages --json" "$bin" packages --json --log "$work/log"
# Memory grows with distinct edges (process, file, use), not with events: the same number of
# records where each access recurs 10 times (10x fewer distinct edges), and a log with 10x
# fewer records and the same distinct edges as that one.
"$bin" __synth-log --records "$records" --repeat 10 --files 50000 --processes 2000 "$work/repeated"
measure "strict, $records records, each x10" "$bin" dump --set --strategy strict --log "$work/repeated"
"$bin" __synth-log --records $((records / 10)) --files 50000 --processes 2000 "$work/small"
measure "strict, $((records / 10)) records" "$bin" dump --set --strategy strict --log "$work/small"
