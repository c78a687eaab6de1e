#!/bin/bash
# The db host of tests/hosts.rs, traced by `depsetfs run --host db --netns ...`: MariaDB from
# SRV/db/my.cnf, until SRV/db/stop appears (at most 200 s), then stopped by pid.
set -euo pipefail
DB=$1/db
/usr/sbin/mariadbd --defaults-file="$DB/my.cnf" --user=root &
pid=$!
trap 'kill -TERM $pid 2>/dev/null || true; wait $pid 2>/dev/null || true' EXIT
for _ in $(seq 2000); do
  [ -e "$DB/stop" ] && break
  sleep 0.1
done
