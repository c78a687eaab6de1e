#!/bin/bash
# C compilation: gcc -O1 -c of 8 generated files (4 in --quick), each including ~35 system headers.
. "$(dirname "$0")/lib.sh"
dir=$BENCH_WORK/cc
n=8; [ "$BENCH_QUICK" = 1 ] && n=4
case "$1" in
setup)
    mkdir -p "$dir"
    for i in $(seq 1 $n); do
        {
            for h in stdio.h stdlib.h string.h unistd.h fcntl.h errno.h signal.h time.h math.h \
                ctype.h locale.h wchar.h stdint.h inttypes.h limits.h dirent.h dlfcn.h glob.h \
                regex.h poll.h pthread.h termios.h netdb.h sys/types.h sys/stat.h sys/wait.h \
                sys/mman.h sys/socket.h sys/epoll.h sys/ioctl.h sys/resource.h sys/time.h \
                netinet/in.h netinet/tcp.h arpa/inet.h zlib.h; do
                [ -e "/usr/include/$h" ] || [ -e "/usr/include/x86_64-linux-gnu/$h" ] && echo "#include <$h>"
            done
            cat <<C
static int table_$i[256];
int work_$i(const char *path) {
    struct stat st;
    if (stat(path, &st) != 0) return -errno;
    for (int k = 0; k < 256; k++) table_$i[k] = (int)(sqrt((double)k * st.st_size) + k * $i);
    char buf[64];
    snprintf(buf, sizeof buf, "%d-%ld", table_$i[$i], (long)time(NULL));
    return (int)strlen(buf) + (int)htons((unsigned short)st.st_mode);
}
C
        } > "$dir/unit$i.c"
    done
    ;;
run)
    cd "$dir"
    bench_start
    for i in $(seq 1 $n); do gcc -O1 -c "unit$i.c" -o "unit$i.o" || exit 1; done
    bench_stop
    ;;
esac
