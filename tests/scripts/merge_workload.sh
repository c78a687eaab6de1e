#!/bin/bash
# The two workloads of tests/merge.rs, one service: `setup SRV` writes nginx's and php-fpm's
# configurations, a static page and a PHP page under SRV (on the host, not traced); `static SRV`
# starts nginx and fetches the static page; `php SRV` starts php-fpm and nginx and fetches the
# PHP page. Both run in a network namespace of their own (loopback only) and stop what they
# started by pid. Every wait is bounded.
set -euo pipefail
MODE=$1
SRV=$2
PORT=8180

if [ "$MODE" = setup ]; then
  mkdir -p "$SRV"/{run,log,tmp,www}
  source "$(dirname "$0")/web_tier.sh"
  write_web_tier_conf "$SRV" "127.0.0.1:$PORT" 9180
  echo "a static page" >"$SRV/www/index.html"
  echo '<?php echo "php says ", 6 * 7, "\n";' >"$SRV/www/hello.php"
  exit 0
fi

ip link set lo up
pids=()
stop_all() {
  local pid
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap stop_all EXIT
# Waits (at most 10 s) for FILE while the process PID lives.
wait_for() {
  for _ in $(seq 200); do
    [ -s "$1" ] && return 0
    kill -0 "$2" 2>/dev/null || { echo "$3 did not start" >&2; return 1; }
    sleep 0.05
  done
  echo "$3 did not start in time" >&2
  return 1
}

if [ "$MODE" = php ]; then
  /usr/sbin/php-fpm8.2 --nodaemonize --allow-to-run-as-root --fpm-config "$SRV/php-fpm.conf" &
  pids+=($!)
  wait_for "$SRV/run/php-fpm.pid" "$!" php-fpm
  page=hello.php
else
  page=index.html
fi
/usr/sbin/nginx -p "$SRV/" -e "$SRV/log/nginx-error.log" -c "$SRV/nginx.conf" -g 'daemon off;' &
pids+=($!)
wait_for "$SRV/run/nginx.pid" "$!" nginx
curl -sS --fail --max-time 10 "http://127.0.0.1:$PORT/$page"
stop_all
trap - EXIT
