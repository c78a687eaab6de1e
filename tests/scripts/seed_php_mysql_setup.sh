#!/bin/bash
# Writes the configuration and data of the seed's test sequence 2 under SRV (run on the host,
# before the trace): MariaDB's datadir (mariadb-install-db, then one table with one row, in
# bootstrap mode: no server is started), php-fpm's and nginx's configurations, the PHP page.
set -euo pipefail
SRV=$1
mkdir -p "$SRV"/{data,run,log,tmp,www}

cat >"$SRV/my.cnf" <<CNF
[mysqld]
datadir=$SRV/data
socket=$SRV/run/mysqld.sock
pid-file=$SRV/run/mysqld.pid
log-error=$SRV/log/mariadb.err
port=3313
bind-address=127.0.0.1
skip-name-resolve
innodb_buffer_pool_size=16M
innodb_log_file_size=4M
CNF

timeout 120 mariadb-install-db --no-defaults --datadir="$SRV/data" --user=root \
  --auth-root-authentication-method=normal --skip-test-db --innodb-log-file-size=4M >"$SRV/log/install-db.log" 2>&1
timeout 120 mariadbd --no-defaults --datadir="$SRV/data" --user=root --bootstrap --innodb-log-file-size=4M \
  --log-error="$SRV/log/bootstrap.err" <<'SQL'
CREATE DATABASE seed;
CREATE TABLE seed.greeting (id INT PRIMARY KEY, msg VARCHAR(64)) ENGINE=InnoDB;
INSERT INTO seed.greeting VALUES (1, 'hello from a MariaDB row'), (2, 'another row');
-- Bootstrap mode skips the grant tables (no CREATE USER): the user is written directly.
INSERT INTO mysql.global_priv (Host, User, Priv) VALUES ('127.0.0.1', 'web',
  JSON_OBJECT('access', 0, 'plugin', 'mysql_native_password',
              'authentication_string', PASSWORD('webpw')));
INSERT INTO mysql.db (Host, Db, User, Select_priv) VALUES ('127.0.0.1', 'seed', 'web', 'Y');
SQL

source "$(dirname "$0")/web_tier.sh"
write_web_tier_conf "$SRV" "10.213.0.1:8080" 9213

cat >"$SRV/www/row.php" <<'PHP'
<?php
$db = new mysqli('127.0.0.1', 'web', 'webpw', 'seed', 3313);
$row = $db->query('SELECT id, msg FROM greeting WHERE id = 1')->fetch_assoc();
echo "row {$row['id']}: {$row['msg']}\n";
PHP
