#!/usr/bin/env bash
# bench/profile.sh [--bin BIN] [--walks N] [-- DEPSETFS RUN OPTIONS...]
#
# Where does a request's time go? Runs `depsetfs run [OPTIONS] -- find /usr/include -printf
# '%s\n'` N times (default 5) in one traced shell, and while the walks run:
#   - `perf stat` of the daemon: CPU time, context switches and migrations per request;
#   - `perf record -g` of the daemon, then the top of `perf report` (self time, by symbol);
#   - `perf stat -a`: context switches on the whole machine (caller and daemon together).
# Requests are counted from the log (`depsetfs stats`). Run by hand, as root, on a quiet
# machine; needs perf (Debian: linux-perf). Output: stdout; scratch in /var/tmp, removed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
BIN=$here/../target/release/depsetfs walks=5 opts=()
while [ $# -gt 0 ]; do
  case $1 in
  --bin) BIN=$2; shift ;;
  --walks) walks=$2; shift ;;
  --) shift; opts=("$@"); break ;;
  *) echo "profile.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
command -v perf >/dev/null || { echo "profile.sh: perf not found (apt-get install linux-perf)" >&2; exit 2; }
[ -x "$BIN" ] || { echo "profile.sh: $BIN: build it first (cargo build --release)" >&2; exit 2; }
work=$(mktemp -d /var/tmp/depsetfs-profile.XXXXXX)
trap 'rm -rf "$work"' EXIT
export DEPSETFS_STATE_DIR=$work/state

# The traced shell waits for "$work/go" so that perf is attached before the walks start.
timeout 600 "$BIN" run "${opts[@]}" --log "$work/log" -- bash -c '
  while [ ! -e "$0/go" ]; do sleep 0.05; done
  s=$EPOCHREALTIME
  for i in $(seq "$1"); do find /usr/include -printf "%s\n" >/dev/null; done
  echo "walks: $1 in $(echo "$EPOCHREALTIME - $s" | bc) s" >"$0/walltime"' "$work" "$walks" &
runner=$!
daemon=
for _ in $(seq 200); do
  daemon=$(pgrep -f -- "__serve.*--log $work/log" | head -n 1 || true)
  [ -n "$daemon" ] && break
  sleep 0.05
done
[ -n "$daemon" ] || { echo "profile.sh: no daemon found" >&2; kill "$runner"; exit 1; }
perf stat -e task-clock,context-switches,cpu-migrations -p "$daemon" -o "$work/daemon.stat" &
pstat=$!
perf record -q -g -p "$daemon" -o "$work/perf.data" >/dev/null 2>&1 &
precord=$!
perf stat -a -e task-clock,context-switches -o "$work/all.stat" &
pall=$!
sleep 1
touch "$work/go"
wait "$runner" || true
kill -INT "$pstat" "$precord" "$pall" 2>/dev/null || true
wait "$pstat" "$precord" "$pall" 2>/dev/null || true
requests=$("$BIN" stats --log "$work/log" 2>/dev/null | awk '/^accesses/ { print $2; exit }')
cat "$work/walltime"
echo "options: ${opts[*]:-(defaults)}; requests recorded (accesses in the log): ${requests:-?}"
echo "--- daemon ---"; grep -E "task-clock|context-switches|cpu-migrations|elapsed" "$work/daemon.stat"
echo "--- whole machine ---"; grep -E "context-switches" "$work/all.stat"
echo "--- daemon profile by object (self time) ---"
perf report -i "$work/perf.data" --stdio --no-children --sort dso 2>/dev/null |
  grep -E "^ +[0-9]+\.[0-9]+%" | head -n 6
echo "--- daemon profile (self time) ---"
perf report -i "$work/perf.data" --stdio --no-children --sort symbol 2>/dev/null |
  grep -E "^ +[0-9]+\.[0-9]+%" | head -n 25
