#!/bin/bash
# debian_image.sh LAYOUT TAG CACHE PACKAGE... -- [umoci config options]
#
# Builds an OCI image layout LAYOUT:TAG from a Debian bookworm root (mmdebstrap, variant apt,
# plus PACKAGEs), as one layer (umoci raw add-layer), then sets its config with the umoci
# config options after `--` (entrypoint, ports, ...). The .debs are kept in CACHE between runs
# (mmdebstrap's sync-in/sync-out hooks) and removed from the image itself.
set -euo pipefail
layout=$1 tag=$2 cache=$3
shift 3
packages=()
while [ $# -gt 0 ] && [ "$1" != -- ]; do
  packages+=("$1")
  shift
done
[ $# -gt 0 ] && shift
include=$(IFS=,; echo "${packages[*]}")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$cache"
mmdebstrap --quiet --variant=apt --include="$include" \
  --skip=download/empty --skip=essential/unlink \
  --setup-hook='mkdir -p "$1"/var/cache/apt/archives/' \
  --setup-hook="sync-in $cache /var/cache/apt/archives/" \
  --customize-hook="sync-out /var/cache/apt/archives $cache" \
  --customize-hook='rm -f "$1"/var/cache/apt/archives/*.deb "$1"/var/cache/apt/archives/lock; rm -rf "$1"/var/cache/apt/archives/partial "$1"/var/lib/apt/lists/*' \
  bookworm "$work/root.tar"
[ -d "$layout" ] || umoci init --layout "$layout"
umoci new --image "$layout:$tag"
umoci raw add-layer --image "$layout:$tag" "$work/root.tar"
if [ $# -gt 0 ]; then
  umoci config --image "$layout:$tag" "$@"
fi
