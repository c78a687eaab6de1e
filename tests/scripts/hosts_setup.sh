#!/bin/bash
# The seed's sequence 2 over two hosts (tests/hosts.rs), written on the machine before the trace:
# under SRV/db, MariaDB's datadir (one table, one row; the user `web` may connect from WEB_ADDR)
# and a my.cnf binding DB_ADDR; under SRV/web, php-fpm's and nginx's configurations (nginx
# listens on WEB_ADDR) and a PHP page that reads the row from DB_ADDR. No server is started.
set -euo pipefail
SRV=$1 WEB_ADDR=$2 DB_ADDR=$3
DB=$SRV/db WEB=$SRV/web
mkdir -p "$DB"/{data,run,log,tmp} "$WEB"/{run,log,tmp,www}

cat >"$DB/my.cnf" <<CNF
[mysqld]
datadir=$DB/data
socket=$DB/run/mysqld.sock
pid-file=$DB/run/mysqld.pid
log-error=$DB/log/mariadb.err
port=3313
bind-address=$DB_ADDR
skip-name-resolve
innodb_buffer_pool_size=16M
innodb_log_file_size=4M
CNF

timeout 120 mariadb-install-db --no-defaults --datadir="$DB/data" --user=root \
  --auth-root-authentication-method=normal --skip-test-db --innodb-log-file-size=4M >"$DB/log/install-db.log" 2>&1
timeout 120 mariadbd --no-defaults --datadir="$DB/data" --user=root --bootstrap --innodb-log-file-size=4M \
  --log-error="$DB/log/bootstrap.err" <<SQL
CREATE DATABASE seed;
CREATE TABLE seed.greeting (id INT PRIMARY KEY, msg VARCHAR(64)) ENGINE=InnoDB;
INSERT INTO seed.greeting VALUES (1, 'hello from the db host'), (2, 'another row');
INSERT INTO mysql.global_priv (Host, User, Priv) VALUES ('$WEB_ADDR', 'web',
  JSON_OBJECT('access', 0, 'plugin', 'mysql_native_password',
              'authentication_string', PASSWORD('webpw')));
INSERT INTO mysql.db (Host, Db, User, Select_priv) VALUES ('$WEB_ADDR', 'seed', 'web', 'Y');
SQL

source "$(dirname "$0")/web_tier.sh"
write_web_tier_conf "$WEB" "$WEB_ADDR:8080" 9213

cat >"$WEB/www/row.php" <<PHP
<?php
\$db = new mysqli('$DB_ADDR', 'web', 'webpw', 'seed', 3313);
\$row = \$db->query('SELECT id, msg FROM greeting WHERE id = 1')->fetch_assoc();
echo "row {\$row['id']}: {\$row['msg']}\n";
PHP
