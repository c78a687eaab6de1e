#!/bin/bash
# The web host of tests/hosts.rs, traced by `depsetfs run --host web --netns ...`: php-fpm and
# nginx from SRV/web, the PHP page (which reads its row from the db host) fetched once and
# printed, then both stopped by pid.
set -euo pipefail
WEB=$1/web ADDR=$2
pids=()
stop_all() {
  local pid
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap stop_all EXIT
/usr/sbin/php-fpm8.2 --nodaemonize --allow-to-run-as-root --fpm-config "$WEB/php-fpm.conf" &
pids+=($!)
/usr/sbin/nginx -p "$WEB/" -e "$WEB/log/nginx-error.log" -c "$WEB/nginx.conf" -g 'daemon off;' &
pids+=($!)
curl -sS --fail --max-time 20 --retry 40 --retry-connrefused --retry-delay 0 \
  "http://$ADDR:8080/row.php"
