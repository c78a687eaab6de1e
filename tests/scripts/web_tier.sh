# The web tier the seed's second sequence and its variants run (tests/seed_php_mysql.rs,
# tests/merge.rs, tests/hosts.rs), sourced by their setup scripts:
# `write_web_tier_conf DIR LISTEN FPM_PORT` writes DIR/php-fpm.conf (php-fpm on
# 127.0.0.1:FPM_PORT, in the foreground) and DIR/nginx.conf (nginx on LISTEN, serving DIR/www,
# PHP through that php-fpm), with pid files, logs and temporary files under DIR/{run,log,tmp}.
write_web_tier_conf() {
  local dir=$1 listen=$2 fpm_port=$3
  cat >"$dir/php-fpm.conf" <<FPM
[global]
pid = $dir/run/php-fpm.pid
error_log = $dir/log/php-fpm.log
daemonize = no

[www]
user = root
group = root
listen = 127.0.0.1:$fpm_port
pm = static
pm.max_children = 1
FPM
  cat >"$dir/nginx.conf" <<NGINX
user root;
worker_processes 1;
pid $dir/run/nginx.pid;
error_log $dir/log/nginx-error.log;
events { worker_connections 64; }
http {
  access_log $dir/log/nginx-access.log;
  client_body_temp_path $dir/tmp/body;
  fastcgi_temp_path $dir/tmp/fastcgi;
  proxy_temp_path $dir/tmp/proxy;
  uwsgi_temp_path $dir/tmp/uwsgi;
  scgi_temp_path $dir/tmp/scgi;
  server {
    listen $listen;
    root $dir/www;
    location ~ \.php\$ {
      include /etc/nginx/fastcgi_params;
      fastcgi_param SCRIPT_FILENAME \$document_root\$fastcgi_script_name;
      fastcgi_pass 127.0.0.1:$fpm_port;
    }
  }
}
NGINX
}
