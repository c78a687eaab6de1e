#!/usr/bin/env bash
# Builds the Debian package: target/debian/depsetfs_VERSION-1_ARCH.deb (path printed last).
#
# The release binary first, then its man pages (one per subcommand) and shell completions,
# generated from the command definitions into target/assets/, then cargo-deb packages them
# with the mount helpers and the docs ([package.metadata.deb] in Cargo.toml). cargo-deb is
# installed from crates.io if missing (`cargo install cargo-deb --locked`: a few minutes, once).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! command -v cargo >/dev/null 2>&1 && [ -f "${HOME:-/root}/.cargo/env" ]; then
  # shellcheck source=/dev/null
  . "${HOME:-/root}/.cargo/env"
fi
if ! cargo deb --version >/dev/null 2>&1; then
  echo "scripts/build-deb.sh: installing cargo-deb (cargo install cargo-deb --locked)" >&2
  cargo install cargo-deb --locked --quiet
fi

target=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
cargo build --release --locked --bin depsetfs
bin=$target/release/depsetfs
assets=$target/assets
rm -rf "$assets"
mkdir -p "$assets/man" "$assets/completions"
"$bin" __man "$assets/man"
"$bin" completions bash >"$assets/completions/depsetfs"
"$bin" completions zsh >"$assets/completions/_depsetfs"
"$bin" completions fish >"$assets/completions/depsetfs.fish"

# Stripped: the release profile keeps line tables for profiling, which would make the package 40 MB.
cargo deb --no-build --locked --quiet --strip --output "$target/debian/" >/dev/null
ls -t "$target"/debian/depsetfs_*.deb | head -n 1
