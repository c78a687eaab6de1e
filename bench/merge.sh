#!/usr/bin/env bash
# Merge benchmark (issue 12): LOGS synthetic logs (default 10) of RECORDS records each (default
# 100,000; 5,000 files, 200 processes per log, the same pids in every log) merged into one, with
# time and peak RSS from /usr/bin/time -v; then `stats` and `dump --set` of the merged log (the
# graph of all runs, pids kept apart). Usage: bench/merge.sh [LOGS] [RECORDS] (from the crate
# root, after `cargo build --release`). HOSTS=1: each log is another host (`host1`..`hostN`,
# address 10.9.0.N) whose processes listen and connect to the next host's listeners, so that
# the merged log's graph matches connects across hosts (issue 16); then also `dump --set
# --host host1`.
set -euo pipefail
logs=${1:-10}
records=${2:-100000}
bin=${DEPSETFS:-target/release/depsetfs}
work=$(mktemp -d /tmp/depsetfs-bench-merge.XXXXXX)
trap 'rm -rf "$work"' EXIT
inputs=()
for n in $(seq "$logs"); do
  host_args=()
  if [ "${HOSTS:-0}" = 1 ]; then host_args=(--host-index "$n" --hosts "$logs"); fi
  "$bin" __synth-log --records "$records" --files 5000 --processes 200 "${host_args[@]}" "$work/run$n.dlog"
  inputs+=("$work/run$n.dlog")
done
echo "inputs: $logs logs of $records records, $(du -ch "${inputs[@]}" | tail -1 | cut -f1) in all"
measure() {
  local name=$1; shift
  /usr/bin/time -v "$@" >"$work/out" 2>"$work/time" || { cat "$work/time"; exit 1; }
  local wall rss
  wall=$(awk -F': ' '/Elapsed \(wall clock\)/ { print $2 }' "$work/time")
  rss=$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$work/time")
  printf '%-40s wall %s  peak RSS %d MiB\n' "$name" "$wall" $((rss / 1024))
}
measure "merge ($logs logs)" "$bin" merge "${inputs[@]}" --output "$work/all.dlog"
echo "merged: $(du -h "$work/all.dlog" | cut -f1)"
measure "stats of the merged log" "$bin" stats --log "$work/all.dlog"
measure "dump --set of the merged log" "$bin" dump --set --log "$work/all.dlog"
measure "stats of one input" "$bin" stats --log "${inputs[0]}"
if [ "${HOSTS:-0}" = 1 ]; then
  measure "dump --set --host host1 of the merged log" "$bin" dump --set --host host1 --log "$work/all.dlog"
  "$bin" tree --log "$work/all.dlog" | grep -c -- '-> tcp:' | sed 's/^/cross-host connections in tree: /'
fi
