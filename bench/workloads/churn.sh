#!/bin/bash
# Small-file churn: 3000 x (create + write 100 bytes + close, rename, unlink) in a scratch dir, then
# one 200 MB write in 1 MiB chunks followed by fsync (1000 files and 50 MB in --quick). Done by one
# python3 process timing itself, so neither fork/exec nor interpreter start-up is counted.
. "$(dirname "$0")/lib.sh"
n=3000 mb=200; [ "$BENCH_QUICK" = 1 ] && n=1000 mb=50
dir=$BENCH_WORK/churn
case "$1" in
setup) mkdir -p "$dir" ;;
run)
    exec /usr/bin/python3 - "$dir" "$n" "$mb" "$BENCH_RESULT" <<'PY'
import os, sys, time
d, n, mb, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
payload = b"x" * 100
chunk = b"\0" * (1 << 20)
t0 = time.perf_counter()
for i in range(n):
    a, b = os.path.join(d, "f%d" % i), os.path.join(d, "g%d" % i)
    fd = os.open(a, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    os.write(fd, payload)
    os.close(fd)
    os.rename(a, b)
    os.unlink(b)
big = os.path.join(d, "big")
fd = os.open(big, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
for _ in range(mb):
    os.write(fd, chunk)
os.fsync(fd)
os.close(fd)
t1 = time.perf_counter()
os.unlink(big)
with open(out, "w") as f:
    f.write("%.6f\n" % (t1 - t0))
PY
    ;;
esac
