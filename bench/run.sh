#!/usr/bin/env bash
# Tracing-overhead benchmark (issue 5): every workload natively, under depsetfs run, chrooted on
# bindfs and loggedfs, under strace -f (ptrace and --seccomp-bpf) and under reprozip trace;
# interleaved repetitions, medians and ratios to native, as a Markdown table on stdout and in
# bench/results/<date>.md. Then the depsetfs daemon's peak memory while find walks a tree of
# 1,000,000 files. Run by hand, as root, after bench/install.sh. See bench/README.md.
#
#   bench/run.sh [--reps N] [--quick] [--workloads a,b] [--variants a,b] [--no-mem] [--timeout S]
#                [--bin PATH]   (default target/release/depsetfs, built if missing)
#                [--mem-variants a,b]   (depsetfs variants whose daemon memory is measured; default depsetfs)
#                [--print-commands]     (print each variant's command line and exit)
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)

BIN= reps=5 reps_set=0 quick=0 timeout_s=900 do_mem=1
all_workloads=(python cc find tar churn nginx)
# The flags of each depsetfs variant (`depsetfs run FLAGS --log ... -- CMD`). depsetfs: the
# defaults, whatever they are (issue 13: io_uring where the kernel offers it, passthrough reads);
# the levers of issue 13 alone: depsetfs-dev (/dev/fuse threads, i.e. passthrough alone),
# depsetfs-uring-nopt (io_uring alone), depsetfs-dev-nopt (neither: the defaults before issue 13);
# depsetfs-full: every getattr reaches the daemon; depsetfs-cpu0: daemon and workload on CPU 0;
# depsetfs-ec: the entry cache; depsetfs-pt: --passthrough; depsetfs-t1: one request thread.
declare -A depsetfs_flags=(
    [depsetfs]=""
    [depsetfs-dev]="--transport dev"
    [depsetfs-dev-nopt]="--transport dev --no-passthrough"
    [depsetfs-uring-nopt]="--transport uring --no-passthrough"
    [depsetfs-full]="--attr-timeout-ms 0"
    [depsetfs-cpu0]="--cpus 0"
    [depsetfs-ec]="--entry-cache"
    [depsetfs-ec-cpu0]="--entry-cache --cpus 0"
    [depsetfs-pt]="--passthrough"
    [depsetfs-t1]="--threads 1"
)
all_variants=(native depsetfs depsetfs-dev depsetfs-dev-nopt depsetfs-uring-nopt depsetfs-full depsetfs-cpu0 depsetfs-ec depsetfs-ec-cpu0 depsetfs-pt depsetfs-t1 bindfs loggedfs strace strace-seccomp reprozip)
sel_workloads=() sel_variants=() mem_variants=(depsetfs) print_commands=0

usage() { sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
while (($#)); do
    case $1 in
    --reps) reps=$2 reps_set=1; shift ;;
    --quick) quick=1 ;;
    --workloads) IFS=, read -ra sel_workloads <<< "$2"; shift ;;
    --variants) IFS=, read -ra sel_variants <<< "$2"; shift ;;
    --no-mem) do_mem=0 ;;
    --timeout) timeout_s=$2; shift ;;
    --bin) BIN=$(realpath "$2"); shift ;;
    --mem-variants) IFS=, read -ra mem_variants <<< "$2"; shift ;;
    --print-commands) print_commands=1 ;;
    -h|--help) usage 0 ;;
    *) echo "run.sh: unknown argument $1" >&2; usage 2 ;;
    esac
    shift
done
# --quick means one repetition unless --reps says otherwise
((quick && !reps_set)) && reps=1
workloads=("${sel_workloads[@]:-${all_workloads[@]}}")
variants=("${sel_variants[@]:-${all_variants[@]}}")
[[ " ${variants[*]} " == *" native "* ]] || variants=(native "${variants[@]}")

log() { echo "run.sh: $*" >&2; }
die() { log "$*"; exit 1; }
for v in "${variants[@]}"; do
    [[ " ${all_variants[*]} " == *" $v "* ]] || die "unknown variant $v (known: ${all_variants[*]})"
done
for v in "${mem_variants[@]}"; do
    [[ -v depsetfs_flags[$v] ]] || die "--mem-variants: $v is not a depsetfs variant"
done
((print_commands)) || [[ $EUID -eq 0 ]] || die "must run as root (FUSE mounts, unshare, chroot)"

# --- tools -----------------------------------------------------------------------------------
if [[ -z $BIN ]]; then
    BIN=$repo/target/release/depsetfs
    if [[ ! -x $BIN ]]; then
        log "building the release binary"
        (cd "$repo" && timeout 3600 cargo build --release) || die "cargo build --release failed"
    fi
fi
[[ -x $BIN ]] || die "no depsetfs binary at $BIN"
# A depsetfs variant whose flags this build's `run` does not accept is not run (n/a, with the
# complaint): `run FLAGS --help` parses the flags (hidden ones too) before printing the help.
missing_flag() {
    local flags
    read -ra flags <<< "${depsetfs_flags[$1]}"
    "$BIN" run "${flags[@]}" --help > /dev/null 2>&1 ||
        "$BIN" run "${flags[@]}" --help 2>&1 | head -1 | sed 's/^depsetfs: //'
}
RZ=
for c in "$here/.venv/bin/reprozip" /opt/reprozip/bin/reprozip; do [[ -x $c ]] && { RZ=$c; break; }; done
declare -A unavailable=()
for v in "${variants[@]}" "${mem_variants[@]}"; do
    case $v in
    bindfs|loggedfs) command -v "$v" >/dev/null || unavailable[$v]="$v not installed (bench/install.sh)" ;;
    strace|strace-seccomp) command -v strace >/dev/null || unavailable[$v]="strace not installed" ;;
    reprozip) [[ -n $RZ ]] || unavailable[$v]="reprozip not installed (bench/install.sh)" ;;
    depsetfs*) f=$(missing_flag "$v"); [[ -z $f ]] || unavailable[$v]="this build's depsetfs run refuses ${depsetfs_flags[$v]}: $f" ;;
    esac
done
for t in wrk /usr/sbin/nginx gcc /usr/bin/python3 unshare chroot timeout; do
    command -v "$t" >/dev/null || die "$t missing: run bench/install.sh"
done

# --- variants ----------------------------------------------------------------------------------
strace_filter=trace=file,process,network,read,write
# Sets VCMD to the command prefix that runs a command under variant $1; $2 names its trace files.
variant_cmd() {
    local v=$1 tag=$2
    case $v in
    native) VCMD=() ;;
    depsetfs*)
        local flags
        read -ra flags <<< "${depsetfs_flags[$v]}"
        VCMD=("$BIN" run "${flags[@]}" --log "$WORK/logs/$tag.dlog" --timeout "$timeout_s" --) ;;
    bindfs|loggedfs) VCMD=(unshare -m --propagation private "$here/lib/fusemirror.sh" "$v" "$WORK/logs/$tag.loggedfs" --) ;;
    strace) VCMD=(strace -f -qq -e "$strace_filter" -o "$WORK/logs/$tag.strace") ;;
    strace-seccomp) VCMD=(strace -f -qq --seccomp-bpf -e "$strace_filter" -o "$WORK/logs/$tag.strace") ;;
    reprozip) VCMD=("$RZ" trace --dont-identify-packages --dont-find-inputs-outputs -d "$WORK/logs/$tag.rz") ;;
    esac
}

if ((print_commands)); then
    WORK='$WORK'
    for v in "${variants[@]}"; do
        variant_cmd "$v" "WORKLOAD-$v-REP"
        printf '%-20s %s%s\n' "$v" "${VCMD[*]:+${VCMD[*]} }/bin/bash bench/workloads/WORKLOAD.sh run" \
            "${unavailable[$v]:+   [n/a: ${unavailable[$v]}]}"
    done
    exit 0
fi

# --- scratch space, cleanup ------------------------------------------------------------------
WORK=$(mktemp -d /var/tmp/depsetfs-bench.XXXXXX) || die "mktemp failed"
chmod 755 "$WORK"
mkdir -p "$WORK/logs" "$WORK/state" "$WORK/out" "$WORK/bin"
# Snapshot the binary: the work tree is shared and target/release/depsetfs may be rebuilt by
# someone else mid-run; every repetition must measure the same build.
binary="$BIN (built $(date -u -r "$BIN" '+%Y-%m-%d %H:%M UTC'))"
[[ $BIN == "$repo/target/release/depsetfs" ]] &&
    binary+=" from the work tree, HEAD then $(git -C "$repo" rev-parse --short HEAD 2>/dev/null)"
cp "$BIN" "$WORK/bin/depsetfs" && BIN=$WORK/bin/depsetfs || die "cannot copy $BIN"
export BENCH_WORK=$WORK BENCH_QUICK=$quick BENCH_RESULT=$WORK/result
export DEPSETFS_STATE_DIR=$WORK/state
bg_pids=()  # background processes we started (variant wrappers); killed by pid on exit

cleanup() {
    local p
    if [[ -s $WORK/nginx/nginx.pid ]]; then
        p=$(cat "$WORK/nginx/nginx.pid")
        # only if it really is our nginx (the pid file lives in our scratch dir)
        grep -q "$WORK/nginx" "/proc/$p/cmdline" 2>/dev/null && kill -TERM "$p" 2>/dev/null
    fi
    for p in "${bg_pids[@]}"; do kill -0 "$p" 2>/dev/null && kill -TERM "$p" 2>/dev/null; done
    for p in "${bg_pids[@]}"; do
        for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$p" 2>/dev/null
    done
    if grep -q " $WORK" /proc/self/mountinfo; then
        log "something is still mounted under $WORK; leaving it in place"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

RAW=$WORK/raw.tsv
: > "$RAW"
NOTES=$WORK/notes.txt
: > "$NOTES"
note() { echo "$*" >> "$NOTES"; log "$*"; }

record() { printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" >> "$RAW"; }

# One measured run of a file-level workload; records seconds or a failure.
measure() {
    local w=$1 v=$2 rep=$3 tag="$1-$2-$3" rc val
    variant_cmd "$v" "$tag"
    rm -f "$BENCH_RESULT"
    (cd "$WORK" && timeout -k 10 "$timeout_s" "${VCMD[@]}" /bin/bash "$here/workloads/$w.sh" run) \
        < /dev/null > "$WORK/out/$tag.out" 2>&1
    rc=$?
    transport_note "$v" "$WORK/out/$tag.out"
    val=$(cat "$BENCH_RESULT" 2>/dev/null)
    if ((rc == 0)) && [[ $val =~ ^[0-9.]+$ ]]; then
        record "$w" "$v" "$rep" "$val" ok
    else
        local why="exit $rc"; ((rc == 124 || rc == 137)) && why="timeout after ${timeout_s}s"
        record "$w" "$v" "$rep" "" "$why"
        note "$w/$v rep $rep failed ($why): $(grep -v "^depsetfs: log:" "$WORK/out/$tag.out" | tail -c 400 | tr '\n' ' ')"
    fi
    rm -rf "$WORK/logs/$tag".*
}

port_open() { (exec 3<> "/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# The service: nginx under the variant, wrk from outside, requests/s.
measure_nginx() {
    local v=$1 rep=$2 tag="nginx-$1-$2" wpid npid rps ok=0 why=""
    variant_cmd "$v" "$tag"
    rm -f "$WORK/nginx/nginx.pid"
    (cd "$WORK" && exec timeout -k 10 "$timeout_s" "${VCMD[@]}" /bin/bash "$here/workloads/nginx.sh" run) \
        < /dev/null > "$WORK/out/$tag.out" 2>&1 &
    wpid=$!
    bg_pids+=("$wpid")
    for _ in $(seq 600); do
        [[ -s $WORK/nginx/nginx.pid ]] && port_open "$BENCH_PORT" && { ok=1; break; }
        kill -0 "$wpid" 2>/dev/null || break
        sleep 0.1
    done
    if ((ok)); then
        timeout 30 wrk -t1 -c16 -d1s -s "$WORK/nginx/rotate.lua" "http://127.0.0.1:$BENCH_PORT/" > /dev/null 2>&1
        timeout $((nginx_secs + 30)) wrk -t1 -c16 -d"${nginx_secs}s" -s "$WORK/nginx/rotate.lua" \
            "http://127.0.0.1:$BENCH_PORT/" > "$WORK/out/$tag.wrk" 2>&1
        rps=$(awk '/^Requests\/sec:/ {print $2}' "$WORK/out/$tag.wrk")
        if grep -qE 'Non-2xx|Socket errors' "$WORK/out/$tag.wrk"; then
            why="wrk saw errors: $(grep -E 'Non-2xx|Socket errors' "$WORK/out/$tag.wrk" | tr '\n' ' ')"
        elif ! [[ $rps =~ ^[0-9.]+$ ]]; then
            why="no requests/s from wrk"
        fi
    else
        why="nginx did not come up within 60 s"
    fi
    # stop nginx by the pid it wrote (checked to be ours), then wait for the wrapper
    npid=$(cat "$WORK/nginx/nginx.pid" 2>/dev/null)
    [[ -n $npid ]] && grep -q "$WORK/nginx" "/proc/$npid/cmdline" 2>/dev/null && kill -TERM "$npid"
    for _ in $(seq 300); do kill -0 "$wpid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$wpid" 2>/dev/null; then
        note "nginx/$v rep $rep: the variant did not exit 30 s after nginx was stopped; killed"
        kill -TERM "$wpid"; sleep 2; kill -KILL "$wpid" 2>/dev/null
    fi
    wait "$wpid" 2>/dev/null
    transport_note "$v" "$WORK/out/$tag.out"
    if [[ -z $why ]]; then
        record nginx "$v" "$rep" "$rps" ok
    else
        record nginx "$v" "$rep" "" "$why"
        note "nginx/$v rep $rep failed: $why; $(tail -c 300 "$WORK/out/$tag.out" | tr '\n' ' ')"
    fi
    rm -rf "$WORK/logs/$tag".*
}

# --- setup -------------------------------------------------------------------------------------
nginx_secs=5; ((quick)) && nginx_secs=2
for _ in $(seq 50); do
    BENCH_PORT=$((20000 + RANDOM % 10000))
    port_open "$BENCH_PORT" || break
done
export BENCH_PORT

date_s=$(date -u +%Y-%m-%d)
machine="$(nproc) cores, Linux $(uname -r), $(. /etc/os-release && echo "$PRETTY_NAME"), $(free -g | awk '/^Mem:/ {print $2}') GiB, ulimit -n $(ulimit -Sn)"
log "scratch $WORK; $reps rep(s); quick=$quick; workloads: ${workloads[*]}; variants: ${variants[*]}"
for v in "${!unavailable[@]}"; do note "$v: n/a (${unavailable[$v]})"; done

# FUSE over io_uring (issue 13): the kernel offers it only with CONFIG_FUSE_IO_URING and the fuse
# module's enable_uring parameter on (off by default; depsetfs turns it on, and says so, when its
# transport is io_uring: the default, or --transport uring). Said at the start and, if it
# changed, at the end of the run.
uring_param=/sys/module/fuse/parameters/enable_uring
uring_state() { if [[ -r $uring_param ]]; then cat "$uring_param"; else echo absent; fi; }
uring_users=()
for v in "${variants[@]}"; do
    [[ -v depsetfs_flags[$v] && ${depsetfs_flags[$v]} != *"--transport dev"* && -z ${unavailable[$v]:-} ]] &&
        uring_users+=("$v")
done
uring_at_start=$(uring_state)
if ! "$BIN" run --transport dev --help > /dev/null 2>&1; then
    note "FUSE over io_uring: this build's depsetfs run has no --transport: every depsetfs variant serves /dev/fuse with threads ($uring_param: $uring_at_start)"
else case $uring_at_start in
absent) note "FUSE over io_uring: $uring_param absent (kernel without CONFIG_FUSE_IO_URING): every depsetfs variant serves /dev/fuse with threads" ;;
Y|1) note "FUSE over io_uring: $uring_param is on (Y) at the start${uring_users[*]:+; io_uring variants: ${uring_users[*]}}" ;;
*) note "FUSE over io_uring: $uring_param is off ($uring_at_start) at the start${uring_users[*]:+; depsetfs turns it on for the io_uring variants (${uring_users[*]}) and it stays on}" ;;
esac; fi
# What depsetfs says about its transport (a fallback to /dev/fuse, turning enable_uring on), once
# per variant.
declare -A transport_said=()
transport_note() {
    local v=$1 out=$2 line
    [[ -v depsetfs_flags[$v] && -z ${transport_said[$v]:-} ]] || return 0
    line=$(grep -m1 -iE 'uring|transport' "$out" 2>/dev/null)
    [[ -n $line ]] && { transport_said[$v]=1; note "$v: depsetfs said: $line"; }
    return 0
}

for w in "${workloads[@]}"; do
    [[ -x $here/workloads/$w.sh ]] || die "no workload $w"
    bash "$here/workloads/$w.sh" setup || die "setup of $w failed"
done
# one untimed native pass: warm the page cache, start from the same state for every variant
log "warm-up"
for w in "${workloads[@]}"; do
    [[ $w == nginx ]] && continue
    (cd "$WORK" && BENCH_RESULT=/dev/null timeout "$timeout_s" bash "$here/workloads/$w.sh" run) \
        < /dev/null > /dev/null 2>&1
done

# --- the measurements: interleaved, variant order rotated from one repetition to the next -----
runnable=()
for v in "${variants[@]}"; do [[ -z ${unavailable[$v]:-} ]] && runnable+=("$v"); done
nv=${#runnable[@]}
for ((rep = 1; rep <= reps; rep++)); do
    for w in "${workloads[@]}"; do
        for ((k = 0; k < nv; k++)); do
            v=${runnable[$(((k + rep - 1) % nv))]}
            log "rep $rep/$reps $w $v"
            if [[ $w == nginx ]]; then measure_nginx "$v" "$rep"; else measure "$w" "$v" "$rep"; fi
        done
    done
done

# --- daemon memory while find walks a tree of 1,000,000 files ---------------------------------
MEM=$WORK/mem.tsv
: > "$MEM"
tree=/var/tmp/depsetfs-bench-tree
make_tree() {
    # 10 x 100 directories x 1000 empty files; --quick walks $tree/0 alone (100,000 files)
    [[ -e $tree/.complete ]] && return 0
    log "generating $tree (1,000,000 empty files, once)"
    rm -rf "$tree"
    local a b
    for a in 0 1 2 3 4 5 6 7 8 9; do
        for b in $(seq -w 0 99); do
            mkdir -p "$tree/$a/$b" && (cd "$tree/$a/$b" && touch f{000..999}) || return 1
        done
    done
    touch "$tree/.complete"
}
descendants() { local p c; for p in "$@"; do for c in $(cat /proc/"$p"/task/*/children 2>/dev/null); do echo "$c"; descendants "$c"; done; done; }
# The daemon's memory under depsetfs variant $1 (its flags), walking $walk twice; one line of $MEM.
# The daemon is the descendant of `depsetfs run` whose command line contains `__serve`, whatever
# the transport: the io_uring queues' threads are threads of that same process.
mem_walk() {
    local v=$1 flags rpid dpid p hwm rss forgot hwm2 rss2 t0 t1 fst secs
    read -ra flags <<< "${depsetfs_flags[$v]}"
    rm -f "$WORK"/mem.*
    # Walk; on "mem.go", make the kernel forget the mirror's dentries and inodes
    # (drop_caches=2: slab only, the page cache stays) so that the daemon receives FORGETs,
    # then walk again: flat memory means the second walk reuses what the forgets freed.
    "$BIN" run "${flags[@]}" --log "$WORK/logs/mem.dlog" --timeout "$timeout_s" -- /bin/bash -c '
        step() { local t0=$EPOCHREALTIME; find "$1" -printf "%s\n" > /dev/null; local st=$?
                 echo "${t0/./} ${EPOCHREALTIME/./} $st" > "$2/mem.walked$3"; }
        await() { while [ ! -e "$1" ]; do sleep 0.2; done; }
        step "$1" "$2" 1; await "$2/mem.go"
        echo 2 > /proc/sys/vm/drop_caches; sleep 3; touch "$2/mem.forgotten"; await "$2/mem.go2"
        step "$1" "$2" 2; await "$2/mem.release"' walk "$walk" "$WORK" \
        < /dev/null > "$WORK/out/mem-$v.out" 2>&1 &
    rpid=$!
    bg_pids+=("$rpid")
    # Waits for $WORK/$1 while the run lives.
    await_file() {
        local _
        for _ in $(seq $((timeout_s * 5))); do
            [[ -s $WORK/$1 || -e $WORK/$1 && $1 == mem.forgotten ]] && return 0
            kill -0 "$rpid" 2>/dev/null || return 1
            sleep 0.2
        done
        return 1
    }
    vm() { awk -v k="$1:" '$1 == k {print $2}' "/proc/$dpid/status"; }
    dpid=
    if await_file mem.walked1; then
        for p in $(descendants "$rpid"); do
            tr '\0' ' ' < "/proc/$p/cmdline" 2>/dev/null | grep -q -- '__serve' && { dpid=$p; break; }
        done
    fi
    if [[ -n $dpid ]]; then
        hwm=$(vm VmHWM) rss=$(vm VmRSS)
        touch "$WORK/mem.go"
        await_file mem.forgotten && forgot=$(vm VmRSS)
        touch "$WORK/mem.go2"
        await_file mem.walked2 && hwm2=$(vm VmHWM) rss2=$(vm VmRSS)
        read -r t0 t1 fst < "$WORK/mem.walked1"
        secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.2f", (b - a) / 1e6}')
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$v" "$nfiles" "$hwm" "$rss" "$secs" "$fst" \
            "${forgot:-0}" "${hwm2:-0}" "${rss2:-0}" >> "$MEM"
        log "$v: daemon (pid $dpid, $(ls "/proc/$dpid/task" | wc -l) threads) VmHWM ${hwm} kB, VmRSS ${rss} kB after walking $nfiles files in ${secs}s (find exit $fst);" \
            "VmRSS ${forgot:-?} kB after the kernel forgot them; VmHWM ${hwm2:-?} kB, VmRSS ${rss2:-?} kB after a second walk"
        ((fst == 0)) || note "memory ($v): find exited $fst under depsetfs: $(grep -v '^depsetfs: log:' "$WORK/out/mem-$v.out" | head -c 300 | tr '\n' ' ')"
    else
        note "memory ($v): the walk did not finish or the daemon was not found: $(tail -c 300 "$WORK/out/mem-$v.out" | tr '\n' ' ')"
    fi
    transport_note "$v" "$WORK/out/mem-$v.out"
    touch "$WORK/mem.release"
    for _ in $(seq 300); do kill -0 "$rpid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$rpid" 2>/dev/null && { note "memory ($v): depsetfs run did not exit; killed"; kill -TERM "$rpid"; }
    wait "$rpid" 2>/dev/null
    rm -f "$WORK/logs/mem.dlog"
}
if ((do_mem)); then
    if make_tree; then
        walk=$tree nfiles=1000000
        ((quick)) && walk=$tree/0 nfiles=100000
        for v in "${mem_variants[@]}"; do
            if [[ -n ${unavailable[$v]:-} ]]; then
                note "memory ($v): n/a (${unavailable[$v]})"
            else
                log "memory: $v walks $nfiles files"
                mem_walk "$v"
            fi
        done
    else
        note "memory: could not generate $tree"
    fi
fi
uring_at_end=$(uring_state)
[[ $uring_at_end == "$uring_at_start" ]] ||
    note "FUSE over io_uring: $uring_param is $uring_at_end at the end of the run (was $uring_at_start)"

# --- report ------------------------------------------------------------------------------------
mkdir -p "$here/results"
# Every run keeps its own result file: never overwrite an earlier one.
out=$here/results/$date_s.md
[[ -e $out ]] && out=$here/results/$date_s-$(date -u +%H%M%S).md
n=1
while [[ -e $out || -e ${out%.md}.tsv ]]; do out=$here/results/$date_s-$(date -u +%H%M%S)-$((n++)).md; done
/usr/bin/python3 "$here/lib/report.py" --raw "$RAW" --mem "$MEM" --notes "$NOTES" \
    --date "$(date -u '+%Y-%m-%d %H:%M UTC')" --machine "$machine" --binary "$binary" --reps "$reps" --quick "$quick" \
    --variants "${variants[*]}" --workloads "${workloads[*]}" --nginx-secs "$nginx_secs" \
    --unavailable "$(for v in "${!unavailable[@]}"; do echo "$v=${unavailable[$v]}"; done)" > "$out"
cp "$RAW" "${out%.md}.tsv"
cat "$out"
log "written $out (raw values in ${out%.md}.tsv)"
