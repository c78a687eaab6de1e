# shellcheck shell=bash
# Sourced by chroot-prepare and chroot-release (which set $prog): reading /proc/self/mountinfo.
# Mount points there have space, tab, newline and backslash escaped as \040, \011, \012, \134;
# paths are compared in that escaped form, and decoded only when handed to umount (so a name
# with a newline is one line of every list here).

die() {
  echo "${prog:?}: $*" >&2
  exit 1
}

mi_escape() {
  local s=$1
  s=${s//\\/\\134}
  s=${s// /\\040}
  s=${s//$'\t'/\\011}
  s=${s//$'\n'/\\012}
  printf '%s' "$s"
}

# mi_unescape VAR ESCAPED: sets VAR to the decoded path. A variable, not output: a command
# substitution would drop the newlines a name may end with.
mi_unescape() {
  local s=$2
  s=${s//\\040/ }
  s=${s//\\011/$'\t'}
  s=${s//\\012/$'\n'}
  s=${s//\\134/\\}
  printf -v "$1" '%s' "$s"
}

# A path as shown in messages: as it is, or shell-quoted ($'a\nb') when it holds control
# characters, so that every message stays one line.
shown() {
  case $1 in
  *[[:cntrl:]]*) printf '%q' "$1" ;;
  *) printf '%s' "$1" ;;
  esac
}

# canonical_mountpoint VAR PATH: sets VAR to the absolute path of a mountpoint argument,
# symlinks in it resolved, without stat'ing the mountpoint itself (a mirror whose daemon died
# answers ENOTCONN to that). The trailing 'x' keeps newlines that end the name.
canonical_mountpoint() {
  local p
  p=$(realpath -m -- "$2" && printf x) || die "$(shown "$2"): cannot resolve path"
  p=${p%x}
  printf -v "$1" '%s' "${p%$'\n'}"
}

# True if the daemon behind the mirror at $1 is gone: the kernel answers ENOTCONN for anything
# under it, and only detaching the mirror itself (`depsetfs umount`) can take what is below.
# The probe is the lookup of a name that does not exist: lookups always reach the daemon, while
# a stat of the mountpoint may be answered from the kernel's attribute cache (--attr-timeout-ms).
daemon_gone() {
  local err
  err=$(LC_ALL=C stat -- "$1/.depsetfs-liveness-probe" 2>&1 >/dev/null) && return 1
  case $err in
  *"not connected"*) return 0 ;;
  *) return 1 ;;
  esac
}

# "MOUNTPOINT FSTYPE" for every mount, in mountinfo order (MOUNTPOINT still escaped).
mi_table() {
  awk '{ for (i = 7; i <= NF; i++) if ($i == "-") { print $5, $(i + 1); break } }' /proc/self/mountinfo
}

is_mountpoint() {
  local -x MI_PATH
  MI_PATH=$(mi_escape "$1")
  mi_table | awk '$1 == ENVIRON["MI_PATH"] { found = 1 } END { exit !found }'
}

# True if the topmost mount on $1 is a depsetfs mirror.
is_depsetfs_mount() {
  local fstype
  local -x MI_PATH
  MI_PATH=$(mi_escape "$1")
  fstype=$(mi_table | awk '$1 == ENVIRON["MI_PATH"] { t = $2 } END { print t }')
  [ "$fstype" = fuse.depsetfs ]
}

# Mount points at or below any of the given directories, in mountinfo order, one a line, still
# escaped (so a name with a newline stays one line): decode with mi_unescape.
mounts_under() {
  local -x MI_DIRS=""
  local d
  for d in "$@"; do MI_DIRS+=$(mi_escape "$d")$'\n'; done
  mi_table | awk '
    BEGIN { n = split(ENVIRON["MI_DIRS"], dirs, "\n") }
    { for (i = 1; i <= n; i++) if (dirs[i] != "" && ($1 == dirs[i] || index($1, dirs[i] "/") == 1)) { print $1; break } }'
}
