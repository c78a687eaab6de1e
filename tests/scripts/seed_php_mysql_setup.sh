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

cat >"$SRV/php-fpm.conf" <<FPM
[global]
pid = $SRV/run/php-fpm.pid
error_log = $SRV/log/php-fpm.log
daemonize = no

[www]
user = root
group = root
listen = 127.0.0.1:9213
pm = static
pm.max_children = 1
FPM

cat >"$SRV/nginx.conf" <<NGINX
user root;
worker_processes 1;
pid $SRV/run/nginx.pid;
error_log $SRV/log/nginx-error.log;
events { worker_connections 64; }
http {
  access_log $SRV/log/nginx-access.log;
  client_body_temp_path $SRV/tmp/body;
  fastcgi_temp_path $SRV/tmp/fastcgi;
  proxy_temp_path $SRV/tmp/proxy;
  uwsgi_temp_path $SRV/tmp/uwsgi;
  scgi_temp_path $SRV/tmp/scgi;
  server {
    listen 10.213.0.1:8080;
    root $SRV/www;
    location ~ \.php\$ {
      include /etc/nginx/fastcgi_params;
      fastcgi_param SCRIPT_FILENAME \$document_root\$fastcgi_script_name;
      fastcgi_pass 127.0.0.1:9213;
    }
  }
}
NGINX

cat >"$SRV/www/row.php" <<'PHP'
<?php
$db = new mysqli('127.0.0.1', 'web', 'webpw', 'seed', 3313);
$row = $db->query('SELECT id, msg FROM greeting WHERE id = 1')->fetch_assoc();
echo "row {$row['id']}: {$row['msg']}\n";
PHP
