#!/usr/bin/env bash
# Tests the Debian package the way an operator uses it: builds it (scripts/build-deb.sh),
# installs it with dpkg, checks what it put on the machine (the binary on PATH, the man pages
# for man, the shell completions, the mount helpers finding their shared code, doctor), then
# purges it, so the machine is left as it was. Called by scripts/test.sh after cargo test; run
# it as root. Refuses to touch a depsetfs package that was installed before it ran.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

fail() {
  echo "scripts/test-deb.sh: $*" >&2
  exit 1
}
[ "$(id -u)" = 0 ] || fail "run as root (it installs and removes the package)"
if dpkg-query -W -f='${Status}\n' depsetfs 2>/dev/null | grep -q ' installed$'; then
  fail "a depsetfs package is installed already; not replacing it (dpkg -r depsetfs first)"
fi

deb=$(bash scripts/build-deb.sh | tail -n 1)
[ -f "$deb" ] || fail "scripts/build-deb.sh made no package"
echo "package: $deb ($(du -h "$deb" | cut -f1))"

purge() { dpkg --purge depsetfs >/dev/null 2>&1 || true; }
trap purge EXIT
dpkg -i "$deb" >/dev/null

# The binary, as a shell finds it without the checkout or ~/.cargo/bin.
version=$(PATH=/usr/sbin:/usr/bin:/sbin:/bin depsetfs --version)
expected="depsetfs $(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)"
[ "$version" = "$expected" ] || fail "depsetfs --version says '$version', not '$expected'"

# Man pages: found by man, one per subcommand, and they render.
for page in depsetfs depsetfs-mount depsetfs-run depsetfs-dump depsetfs-export depsetfs-doctor; do
  path=$(man -w "$page") || fail "man -w $page: no such page"
  case $path in /usr/share/man/man1/"$page".1.gz) ;; *) fail "man -w $page: $path" ;; esac
done
MANWIDTH=100 MANPAGER=cat man depsetfs-mount 2>/dev/null | grep -q -- '--no-passthrough' ||
  fail "man depsetfs-mount does not show --no-passthrough"

# Completions where each shell looks for them; bash's loads and completes a subcommand.
for f in /usr/share/bash-completion/completions/depsetfs /usr/share/zsh/vendor-completions/_depsetfs \
  /usr/share/fish/vendor_completions.d/depsetfs.fish; do
  [ -s "$f" ] || fail "$f: missing"
done
reply=$(bash --norc --noprofile -c '. /usr/share/bash-completion/completions/depsetfs
  COMP_WORDS=(depsetfs umo); COMP_CWORD=1; _depsetfs depsetfs umo depsetfs; echo "${COMPREPLY[*]}"')
[ "$reply" = umount ] || fail "bash completion of 'depsetfs umo' gave '$reply'"

# The mount helpers source mountinfo.sh from where they are installed: a refusal (not a
# mirror) proves they got that far; "No such file" would mean the shared code is missing.
helpers=/usr/lib/depsetfs/mount-helpers
for helper in chroot-prepare chroot-release; do
  err=$("$helpers/$helper" /nonexistent-depsetfs-test 2>&1) && fail "$helper accepted a non-mirror"
  case $err in
  "$helper: /nonexistent-depsetfs-test: not a mounted depsetfs mirror"*) ;;
  *) fail "$helpers/$helper: $err" ;;
  esac
done

/usr/bin/depsetfs doctor >/dev/null || fail "depsetfs doctor failed on this machine"

dpkg --purge depsetfs >/dev/null
trap - EXIT
[ ! -e /usr/bin/depsetfs ] && [ ! -e "$helpers" ] && [ ! -e /usr/share/man/man1/depsetfs.1.gz ] ||
  fail "files left behind after dpkg --purge"
echo "the package installs, works and purges cleanly"
