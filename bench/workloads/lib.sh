# Sourced by the workload scripts. Each workload script is called as
#   NAME.sh setup   once, natively, before any measurement (prepares inputs under $BENCH_WORK)
#   NAME.sh run     the measured part, run natively or under a tracer / inside a mirror chroot
# The run step measures its own elapsed time (so the mount/unmount or start-up of a tracer is not
# counted) and writes it, in seconds, to $BENCH_RESULT.
# Environment: BENCH_WORK (scratch dir, same path natively and in the chroots), BENCH_RESULT,
# BENCH_QUICK (1 for smaller inputs).
set -u
: "${BENCH_WORK:?}" "${BENCH_RESULT:=/dev/null}" "${BENCH_QUICK:=0}"

bench_start() { _bench_t0=$EPOCHREALTIME; }
bench_stop() {
    local t1=$EPOCHREALTIME
    # EPOCHREALTIME is "seconds.microseconds"; no fork needed for the subtraction.
    local a=${_bench_t0/./} b=${t1/./}
    local us=$((10#$b - 10#$a))
    printf '%d.%06d\n' $((us / 1000000)) $((us % 1000000)) > "$BENCH_RESULT"
}
