#!/usr/bin/env bash
# Page benchmark (issue 10): on a synthetic log of RECORDS records (default 1,000,000; ~50k
# files, 2,000 processes, as bench/analysis.sh), times `depsetfs ui`'s start (graph build and
# the first set, until the URL is printed), each API answer the page asks for when it opens and
# after a tweak (curl), and the page itself in headless chromium (bench/ui_browser.py: open
# until usable, a tweak until the file count changes, a strategy switch). Usage:
# bench/ui.sh [RECORDS] (from the crate root, after `cargo build --release`; needs chromium,
# chromium-driver, curl).
set -euo pipefail
records=${1:-1000000}
bin=${DEPSETFS:-target/release/depsetfs}
work=$(mktemp -d /tmp/depsetfs-bench-ui.XXXXXX)
server=
cleanup() {
  if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
"$bin" __synth-log --records "$records" --files 50000 --processes 2000 "$work/log"
echo "log: $records records, $(du -h "$work/log" | cut -f1)"

start=$(date +%s.%N)
"$bin" ui --log "$work/log" --rules "$work/rules.toml" >"$work/url" 2>"$work/err" &
server=$!
for _ in $(seq 600); do [ -s "$work/url" ] && break; sleep 0.05; done
[ -s "$work/url" ] || { cat "$work/err"; exit 1; }
ready=$(date +%s.%N)
printf '%-44s %6.2f s\n' "ui start (graph + strict set, URL printed)" "$(echo "$ready - $start" | bc)"
url=$(head -1 "$work/url")
address=${url#http://}; address=${address%%/*}
token=${url##*token=}
api() { # NAME METHOD PATH [BODY]
  local t
  t=$(curl -s -o "$work/answer" -w '%{time_total} %{size_download}' -X "$2" -H "X-Depsetfs-Token: $token" \
    ${4:+-d "$4"} "http://$address$3")
  printf '%-44s %6.2f s  %8d bytes\n' "$1" "${t% *}" "${t#* }"
}
api "GET /api/summary" GET /api/summary
api "GET /api/tree?path=/" GET "/api/tree?path=/"
api "GET /api/tree?path=/usr/lib/synthetic" GET "/api/tree?path=/usr/lib/synthetic"
api "GET /api/procs (roots)" GET /api/procs
api "GET /api/audit" GET /api/audit
api "GET /api/suggest" GET /api/suggest
api "GET /api/report (4 strategies, first)" GET /api/report
api "GET /api/report (cached)" GET /api/report
api "POST tweak: exclude /usr/lib/synthetic/d1/**" POST /api/tweak '{"action":"exclude","glob":"/usr/lib/synthetic/d1/**"}'
api "POST tweak: strategy all" POST /api/tweak '{"action":"strategy","strategy":"all"}'
api "POST tweak: strategy strict" POST /api/tweak '{"action":"strategy","strategy":"strict"}'
api "POST tweak: reset" POST /api/tweak '{"action":"reset"}'
echo "in chromium (headless, WebDriver):"
python3 "$(dirname "$0")/ui_browser.py" "$url" --exclude '/usr/lib/synthetic/d2/**' --strategy all
rss=$(awk '/VmHWM/ { print $2 }' "/proc/$server/status")
echo "ui peak RSS: $((rss / 1024)) MiB"
