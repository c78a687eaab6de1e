#!/bin/sh
# PostgreSQL from nothing (tests/services.rs): initdb a cluster in DIR, start it on a unix socket
# in DIR only (no TCP), create and query a table, run pgbench transactions, stop the server.
# Run as the postgres user: sh postgresql.sh DIR. Prints the query's answer and "pg-ok".
set -eu
dir=$1
bin=$(ls -d /usr/lib/postgresql/*/bin | tail -n 1)
data=$dir/data
# On any failure the server goes down with the script (pg_ctl stops it by its pid file).
trap '"$bin/pg_ctl" -D "$data" -m immediate -w stop >/dev/null 2>&1 || true' EXIT
"$bin/initdb" -D "$data" -A trust >/dev/null 2>&1
"$bin/pg_ctl" -D "$data" -o "-k $dir -c listen_addresses=''" -l "$dir/server.log" -w -t 120 start >/dev/null
"$bin/psql" -h "$dir" -v ON_ERROR_STOP=1 -qAtc "
  create table t (x int primary key, y text);
  insert into t select g, md5(g::text) from generate_series(1, 20000) g;
  select count(*), sum(x) from t" postgres
"$bin/pgbench" -h "$dir" -i -s 1 postgres >/dev/null 2>&1
"$bin/pgbench" -h "$dir" -c 2 -t 200 postgres 2>&1 | grep -q '^number of failed transactions: 0 '
"$bin/pg_ctl" -D "$data" -m fast -w stop >/dev/null
trap - EXIT
echo pg-ok
