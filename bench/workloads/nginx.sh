#!/bin/bash
# A service: nginx (one worker, `daemon off;`) serving 100 static files of 1-64 KiB from a scratch
# docroot on 127.0.0.1:$BENCH_PORT. `run` only execs nginx; bench/run.sh drives it from outside
# with wrk (the load generator is never traced), reads requests/s from wrk and stops nginx by the
# pid in its pid file. Access logging is off (writes are measured by churn.sh).
. "$(dirname "$0")/lib.sh"
dir=$BENCH_WORK/nginx
case "$1" in
setup)
    : "${BENCH_PORT:?}"
    mkdir -p "$dir/html" "$dir/logs" "$dir/tmp"
    for i in $(seq 0 99); do
        head -c $(( (i % 64 + 1) * 1024 )) /dev/urandom > "$dir/html/f$i.bin"
    done
    chmod -R a+rX "$dir"
    cat > "$dir/nginx.conf" <<CONF
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/logs/error.log warn;
events { worker_connections 256; }
http {
    include /etc/nginx/mime.types;
    access_log off;
    sendfile on;
    keepalive_requests 1000000;
    client_body_temp_path $dir/tmp/body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
    server {
        listen 127.0.0.1:$BENCH_PORT;
        root $dir/html;
    }
}
CONF
    cat > "$dir/rotate.lua" <<'LUA'
-- wrk: each request asks for one of the 100 files, in turn
local i = 0
request = function()
    i = (i + 1) % 100
    return wrk.format("GET", "/f" .. i .. ".bin")
end
LUA
    ;;
run)
    rm -f "$dir/nginx.pid"
    exec /usr/sbin/nginx -p "$dir/" -e "$dir/logs/error.log" -c "$dir/nginx.conf" -g 'daemon off;'
    ;;
esac
