#!/bin/bash
# Runs CMD chrooted on a plain FUSE mirror of / (bindfs or loggedfs), the way depsetfs run does:
#   unshare -m --propagation private fusemirror.sh bindfs|loggedfs LOGFILE -- CMD ARGS...
# Must be started inside a private mount namespace (the caller's unshare): every mount made here
# dies with it. bindfs mirrors / directly. loggedfs can only mount a directory over itself, so /
# is first bind-mounted (non-recursively) on the mountpoint and loggedfs mounted over that bind;
# the non-recursive bind also means the mountpoint seen inside the mirror is the plain empty
# directory underneath, so nothing recurses into the FUSE mount. The real /proc, /sys and /dev
# (recursively: /dev/pts, /dev/shm) are bound over the mirror. CMD runs in the caller's working
# directory. The FUSE daemon runs in the foreground as our child and is stopped by its pid.
set -u
kind=$1 log=$2
[ "$3" = -- ] || { echo "usage: $0 bindfs|loggedfs LOGFILE -- CMD..." >&2; exit 2; }
shift 3
mp=$(mktemp -d /var/tmp/depsetfs-bench-mp.XXXXXX) || exit 1
fpid=

cleanup() {
    local d
    for d in dev sys proc; do
        mountpoint -q "$mp/$d" 2>/dev/null && umount -R -l "$mp/$d"
    done
    # the FUSE mount (and, for loggedfs, the bind of / under it)
    while findmnt -n "$mp" >/dev/null 2>&1; do umount -l "$mp" 2>/dev/null || break; done
    if [ -n "$fpid" ]; then
        for _ in $(seq 50); do kill -0 "$fpid" 2>/dev/null || break; sleep 0.1; done
        kill -TERM "$fpid" 2>/dev/null
        sleep 0.2
        kill -KILL "$fpid" 2>/dev/null
        wait "$fpid" 2>/dev/null
    fi
    rmdir "$mp" 2>/dev/null
}
trap cleanup EXIT
trap 'exit 143' TERM INT HUP

case $kind in
bindfs)
    bindfs -f -o allow_other,dev,suid / "$mp" &
    fpid=$!
    ;;
loggedfs)
    mount --bind / "$mp" || exit 1
    loggedfs -f -p -l "$log" "$mp" > /dev/null 2>&1 &
    fpid=$!
    ;;
*) echo "unknown mirror $kind" >&2; exit 2 ;;
esac

for _ in $(seq 100); do
    findmnt -n -o FSTYPE "$mp" 2>/dev/null | grep -q '^fuse' && break
    kill -0 "$fpid" 2>/dev/null || { echo "$kind died before mounting" >&2; exit 1; }
    sleep 0.1
done
findmnt -n -o FSTYPE "$mp" | grep -q '^fuse' || { echo "$kind did not mount" >&2; exit 1; }

for d in proc sys dev; do
    mount --rbind "/$d" "$mp/$d" || exit 1
done

chroot "$mp" /usr/bin/env -C "$PWD" "$@"
