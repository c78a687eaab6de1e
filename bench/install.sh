#!/usr/bin/env bash
# Installs what bench/run.sh needs: Debian packages (only those missing) and ReproZip in a venv.
# Run as root. Safe to run again.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
export DEBIAN_FRONTEND=noninteractive

pkgs=(bindfs loggedfs strace nginx wrk gcc python3-venv python3-dev libsqlite3-dev fuse3 time)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "install.sh: apt-get install ${missing[*]}"
    timeout 600 apt-get update -qq
    timeout 1200 apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# Debian starts nginx on install; the benchmark runs its own instance, stop the system one.
if command -v systemctl >/dev/null && systemctl is-active --quiet nginx 2>/dev/null; then
    systemctl stop nginx || true
fi

venv="$here/.venv"
if [[ ! -x "$venv/bin/reprozip" ]]; then
    echo "install.sh: reprozip into $venv"
    /usr/bin/python3 -m venv "$venv"
    timeout 900 "$venv/bin/pip" install -q reprozip || echo "install.sh: reprozip could not be installed (see above)" >&2
fi
echo "install.sh: done"
