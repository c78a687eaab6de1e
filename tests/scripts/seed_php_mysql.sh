#!/bin/bash
# The seed's test sequence 2, traced by `depsetfs run -- bash seed_php_mysql.sh SRV`: give an
# interface of the (already created, empty) network namespace an address, start MariaDB,
# php-fpm and nginx from the configuration under SRV, fetch a PHP page that reads a row from a
# table, print it, and stop the three services by pid. Every wait is bounded.
set -euo pipefail
SRV=$1
ADDR=10.213.0.1

ip link set lo up
# A veth pair with both ends in the namespace (this kernel has no dummy driver).
ip link add seed0 type veth peer name seed1
ip addr add "$ADDR/24" dev seed0
ip link set seed1 up
ip link set seed0 up

pids=()
stop_all() {
  local pid
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap stop_all EXIT

/usr/sbin/mariadbd --defaults-file="$SRV/my.cnf" --user=root &
pids+=($!)
/usr/sbin/php-fpm8.2 --nodaemonize --allow-to-run-as-root --fpm-config "$SRV/php-fpm.conf" &
pids+=($!)
/usr/sbin/nginx -p "$SRV/" -e "$SRV/log/nginx-error.log" -c "$SRV/nginx.conf" -g 'daemon off;' &
pids+=($!)

for _ in $(seq 300); do
  [ -S "$SRV/run/mysqld.sock" ] && break
  sleep 0.1
done
[ -S "$SRV/run/mysqld.sock" ] || { echo "mariadbd did not start" >&2; exit 1; }

curl -sS --fail --max-time 20 --retry 40 --retry-connrefused --retry-delay 0 \
  "http://$ADDR:8080/row.php"
stop_all
trap - EXIT
