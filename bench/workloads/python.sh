#!/bin/bash
# Interpreter start-up: ten python3 processes importing a handful of standard modules.
. "$(dirname "$0")/lib.sh"
case "$1" in
setup) ;;
run)
    bench_start
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        /usr/bin/python3 -c 'import json, email.parser, http.server, sqlite3, decimal, asyncio' || exit 1
    done
    bench_stop
    ;;
esac
