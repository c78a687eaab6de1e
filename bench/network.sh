#!/bin/bash
# Cost of network recording (bench/README.md, "Network recording"): N loopback TCP round trips
# (bench/workloads/tcp_connects.py) natively, under `depsetfs run` with network recording off
# (DEPSETFS_NO_NET_TRACE=1) and on (the seccomp filter: connect and accept stop in the daemon).
# ROUNDS rounds, interleaved; prints each round and the median per variant, in ms.
# Usage (root): bench/network.sh [N] [ROUNDS]   (after cargo build --release)
set -euo pipefail
N=${1:-2000}
ROUNDS=${2:-7}
HERE=$(cd "$(dirname "$0")" && pwd)
DEPSETFS=${DEPSETFS:-$HERE/../target/release/depsetfs}
WORKLOAD=$HERE/workloads/tcp_connects.py
WORK=$(mktemp -d /tmp/depsetfs-netbench.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
export DEPSETFS_STATE_DIR=$WORK/state
traced() {
  unshare -m --propagation private "$DEPSETFS" run --log "$WORK/log" -- \
    /usr/bin/python3 "$WORKLOAD" "$N" 2>/dev/null
}
native=() off=() on=()
for round in $(seq "$ROUNDS"); do
  native+=("$(/usr/bin/python3 "$WORKLOAD" "$N")")
  off+=("$(DEPSETFS_NO_NET_TRACE=1 traced)")
  on+=("$(traced)")
  echo "round $round: native ${native[-1]} ms, run without filter ${off[-1]} ms, run with filter ${on[-1]} ms"
done
median() { printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
echo "median of $ROUNDS rounds, $N round trips:"
echo "  native               $(median "${native[@]}") ms"
echo "  run, no filter       $(median "${off[@]}") ms"
echo "  run, network filter  $(median "${on[@]}") ms"
echo "net records in the last log: $("$DEPSETFS" dump --log "$WORK/log" | grep -c '"type":"net"')"
