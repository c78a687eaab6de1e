#!/usr/bin/env bash
# The project's one test command (CI runs it through .ci/run).
#
# Installs the system packages the tests use (only those missing), checks the Rust toolchain,
# then: cargo fmt --check, cargo clippy -D warnings, cargo test --release (once per FUSE transport),
# and the Debian package
# (scripts/test-deb.sh: built, installed, checked, purged). Run it as root:
# the integration tests mount FUSE filesystems, each inside its own private mount namespace.
# Works unattended on a fresh Debian 12 machine. Exits non-zero on the first failure.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export DEBIAN_FRONTEND=noninteractive

step() { printf '\n==> %s\n' "$*"; }
fail() {
  echo "scripts/test.sh: $*" >&2
  exit 1
}

[ "$(id -u)" = 0 ] || fail "run as root: the tests mount FUSE filesystems (sudo bash scripts/test.sh)"
[ -c /dev/fuse ] || fail "/dev/fuse is missing: load the fuse module (modprobe fuse)"

# What the tests run: sqlite3 (native checks of the WAL database), python3 (sqlite3 module,
# unix sockets, renameat2 through ctypes), util-linux (unshare, setpriv, mount, findmnt),
# procps and psmisc (pgrep, fuser), coreutils (timeout, stat, truncate, ...), attr
# (getfattr/setfattr), acl (setfacl/getfacl: POSIX ACLs through the mirror), tar (reading exports), umoci and skopeo (checking OCI exports).
# libfuse/fuse3 is not needed: depsetfs mounts through /dev/fuse itself. The seed's sequence 2
# (tests/seed_php_mysql.rs): mariadb-server, php-fpm, php-mysql, nginx, curl, iproute2 (ip netns,
# veth), and postgresql, which must stay out of its set. Real services run from their set
# (tests/services.rs): postgresql again, and a JDK (javac, java). One service under two workloads,
# merged (tests/merge.rs): nginx, php-fpm, curl and iproute2 again.
packages=(sqlite3 python3 util-linux procps psmisc coreutils attr acl tar umoci skopeo
  mmdebstrap # a Debian root for the image made and debloated by tests/images.rs (with umoci)
  mariadb-server php-fpm php-mysql nginx curl iproute2 postgresql openjdk-17-jdk-headless
  man-db groff-base bsdextrautils # man, groff, col: the man pages (tests/cli.rs, scripts/test-deb.sh)
  chromium chromium-driver graphviz # the page of depsetfs ui in a real browser, graph --format dot (tests/ui.rs)
  python3-pip) # pip for DuckDB, below
command -v cc >/dev/null 2>&1 || packages+=(gcc libc6-dev) # the linker rustc calls
packages+=(zlib1g-dev) # zlib.h and libz.so: tests/compare.rs builds a program with -lz
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$p")
done
# Debian starts mariadb, nginx, php-fpm and postgresql when they are installed on a machine with
# an init system: a policy-rc.d answering 101 ("action forbidden") during the install keeps the
# tests from leaving services running (the tests start their own, and stop them by pid). Ours is
# removed afterwards; one that was already there is left alone.
policy=/usr/sbin/policy-rc.d
remove_policy() { rm -f "$policy"; }
if [ ${#missing[@]} -gt 0 ]; then
  step "apt-get install ${missing[*]}"
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    trap remove_policy EXIT
  fi
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends -o Dpkg::Use-Pty=0 "${missing[@]}" >/dev/null
  if trap -p EXIT | grep -q remove_policy; then
    remove_policy
    trap - EXIT
  fi
fi

# DuckDB reads the Parquet files of `dump --format parquet` (tests/hosts.rs, docs/fleet.md); it
# is on PyPI only. Into the system Python the tests run (/usr/bin/python3).
if ! /usr/bin/python3 -c 'import duckdb' 2>/dev/null; then
  step "pip install duckdb"
  /usr/bin/python3 -m pip install --quiet --break-system-packages duckdb
fi

step "rust toolchain"
if ! command -v cargo >/dev/null 2>&1 && [ -f "${HOME:-/root}/.cargo/env" ]; then
  # shellcheck source=/dev/null
  . "${HOME:-/root}/.cargo/env"
fi
command -v cargo >/dev/null 2>&1 || fail "cargo not found: install Rust >= 1.85 with rustup (components rustfmt, clippy)"
for component in rustfmt clippy; do
  sub=${component/rustfmt/fmt}
  if ! cargo "$sub" --version >/dev/null 2>&1; then
    if command -v rustup >/dev/null 2>&1; then rustup component add "$component" || true; fi
    cargo "$sub" --version >/dev/null 2>&1 || fail "cargo $sub is missing: rustup component add $component"
  fi
done
cargo --version
rustc --version

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings

step "cargo build --release"
cargo build --release --all-targets

# Two cores: two tests at a time. Each integration test bounds its own child processes in time.
# The suite runs once per transport (issue 13): FUSE over io_uring where the kernel has it
# (DEPSETFS_TRANSPORT=uring: a mount fails rather than fall back, so the ring is what is tested;
# depsetfs turns the fuse module's enable_uring on and says so), then fuser's /dev/fuse threads.
if [ -e /sys/module/fuse/parameters/enable_uring ]; then
  step "cargo test --release (FUSE over io_uring)"
  DEPSETFS_TRANSPORT=uring cargo test --release --no-fail-fast -- --test-threads "${DEPSETFS_TEST_THREADS:-2}"
else
  step "no FUSE over io_uring in this kernel (no /sys/module/fuse/parameters/enable_uring): /dev/fuse only"
fi
step "cargo test --release (/dev/fuse)"
DEPSETFS_TRANSPORT=dev cargo test --release --no-fail-fast -- --test-threads "${DEPSETFS_TEST_THREADS:-2}"

step "scripts/test-deb.sh (cargo-deb: build, dpkg -i, check, purge)"
bash scripts/test-deb.sh
