#!/bin/bash
# Bulk sequential read: tar of /usr/lib/x86_64-linux-gnu (~1 GB of file data here; /usr/lib/gcc,
# ~120 MB, in --quick) piped through cat to /dev/null (GNU tar skips reading files when its
# archive itself is /dev/null, hence the pipe).
. "$(dirname "$0")/lib.sh"
src=/usr/lib/x86_64-linux-gnu; [ "$BENCH_QUICK" = 1 ] && src=/usr/lib/gcc
case "$1" in
setup) ;;
run)
    bench_start
    # any tar error (a file it could not open or read) fails the run: the data must all be read
    tar cf - "$src" 2> "$BENCH_WORK/tar.err" | cat > /dev/null
    st=("${PIPESTATUS[@]}")
    bench_stop
    if [ "${st[0]}" != 0 ] || [ "${st[1]}" != 0 ]; then
        echo "tar exit ${st[0]}, cat exit ${st[1]}; tar said: $(awk '!/Removing leading/ && n++ < 3' "$BENCH_WORK/tar.err")" >&2
        rm -f "$BENCH_RESULT"
        exit 1
    fi
    ;;
esac
