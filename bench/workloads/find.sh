#!/bin/bash
# Metadata walk: find with a stat of every entry (%s forces it) over /usr/share and /usr/include
# (/usr/include only in --quick).
. "$(dirname "$0")/lib.sh"
dirs=(/usr/share /usr/include); [ "$BENCH_QUICK" = 1 ] && dirs=(/usr/include)
case "$1" in
setup) ;;
run)
    bench_start
    find "${dirs[@]}" -printf '%s\n' > /dev/null || exit 1
    bench_stop
    ;;
esac
