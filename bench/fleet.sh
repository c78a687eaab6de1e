#!/usr/bin/env bash
# Parquet benchmark (issue 16): writes a synthetic log of RECORDS records (default 1,000,000;
# the log of bench/analysis.sh) and times `depsetfs dump --format parquet` (every access record
# as a row) next to `depsetfs dump` (the same records as JSON lines), with peak RSS from
# /usr/bin/time -v, and the sizes of the log and of both outputs. Usage: bench/fleet.sh [RECORDS]
# (from the crate root, after `cargo build --release`).
set -euo pipefail
records=${1:-1000000}
bin=${DEPSETFS:-target/release/depsetfs}
work=$(mktemp -d /tmp/depsetfs-bench-fleet.XXXXXX)
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
measure "dump --format parquet" "$bin" dump --log "$work/log" --format parquet --output "$work/log.parquet"
echo "  parquet file: $(du -h "$work/log.parquet" | cut -f1)"
measure "dump (JSON lines, to a file)" sh -c "\"$bin\" dump --log \"$work/log\" > \"$work/log.jsonl\""
echo "  JSON lines: $(du -h "$work/log.jsonl" | cut -f1)"
if /usr/bin/python3 -c 'import duckdb' 2>/dev/null; then
  measure "DuckDB: rows per op over the file" /usr/bin/python3 -c "
import duckdb, sys
print(duckdb.sql(\"SELECT op, count(*) FROM read_parquet('$work/log.parquet') GROUP BY op\").fetchall())"
fi
