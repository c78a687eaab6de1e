#!/usr/bin/env bash
# POSIX semantics, op by op, in a work directory: one "PASS name" or "FAIL name: detail" line per
# check, then "DONE pass=N fail=M"; exits 0 only when every check passed.
#
#   posix_checks.sh root DIR   as root: sets up DIR (fixtures owned by root, a setgid directory,
#                              a setuid copy of id) and checks what root can do
#   posix_checks.sh user DIR   as an unprivileged user (uid/gid 65534, no supplementary groups),
#                              after the root part: ownership, EACCES/EPERM where the host says so
#
# The integration tests run it natively first (so its expectations are the host's), then chrooted
# on a depsetfs mirror, where every answer must be the same.
# shellcheck disable=SC2016 # single-quoted scripts for inner shells expand their own $1
set -uo pipefail
export LC_ALL=C

mode=${1:?usage: posix_checks.sh root|user DIR}
D=${2:?usage: posix_checks.sh root|user DIR}
PY=/usr/bin/python3
GID_OTHER=4242 # a group neither root's primary group nor the user's

passed=0
failed=0
pass() {
  echo "PASS $1"
  passed=$((passed + 1))
}
fail() {
  echo "FAIL $1: $2"
  failed=$((failed + 1))
}
# check NAME EXPECTED ACTUAL
check() {
  if [ "$2" = "$3" ]; then pass "$1"; else fail "$1" "expected [$2], got [$3]"; fi
}

# op OPERATION ARGS...: does one system call through python and prints its result (a value for
# the getters, OK otherwise) or the errno name it failed with.
OP_PY='
import ctypes, errno, os, socket, sys, time
a = sys.argv[1:]
op = a[0]

def renameat2(old, new, flags):
    libc = ctypes.CDLL(None, use_errno=True)
    libc.renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if libc.renameat2(-100, old.encode(), -100, new.encode(), flags) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))

try:
    out = "OK"
    if op == "read":
        with open(a[1], "rb") as f:
            out = f.read().decode()
    elif op == "open_read":  # only the outcome, never the content
        os.close(os.open(a[1], os.O_RDONLY))
    elif op == "open_nofollow":  # what SQLite does with its database
        os.close(os.open(a[1], os.O_RDWR | os.O_NOFOLLOW))
    elif op == "write":  # existing file, no O_CREAT
        fd = os.open(a[1], os.O_WRONLY)
        os.write(fd, a[2].encode())
        os.close(fd)
    elif op == "create":
        os.close(os.open(a[1], os.O_WRONLY | os.O_CREAT, 0o644))
    elif op == "create_excl":
        os.close(os.open(a[1], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    elif op == "mkdir":
        os.mkdir(a[1])
    elif op == "rmdir":
        os.rmdir(a[1])
    elif op == "unlink":
        os.unlink(a[1])
    elif op == "chown":
        os.chown(a[1], int(a[2]), int(a[3]), follow_symlinks=False)
    elif op == "chmod":
        os.chmod(a[1], int(a[2], 8))
    elif op == "utime":
        os.utime(a[1], (int(a[2]), int(a[3])))
    elif op == "truncate":
        os.truncate(a[1], int(a[2]))
    elif op == "noreplace":
        renameat2(a[1], a[2], 1)  # RENAME_NOREPLACE
    elif op == "exchange":
        renameat2(a[1], a[2], 2)  # RENAME_EXCHANGE
    elif op == "link":
        os.link(a[1], a[2])
    elif op == "setxattr":
        os.setxattr(a[1], a[2], a[3].encode())
    elif op == "getxattr":
        out = os.getxattr(a[1], a[2]).decode()
    elif op == "removexattr":
        os.removexattr(a[1], a[2])
    elif op == "listxattr":
        out = ",".join(sorted(n for n in os.listxattr(a[1]) if n.startswith("user.")))
    elif op == "exec":
        os.execv(a[1], [a[1]])
    elif op == "serve":  # one connection: answer "pong:" + what the client sent
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(a[1])
        s.listen(1)
        s.settimeout(20)
        c, _ = s.accept()
        c.settimeout(20)
        c.sendall(b"pong:" + c.recv(100))
        c.close()
        s.close()
    elif op == "connect":
        deadline = time.time() + 20
        while True:
            c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                c.connect(a[1])
                break
            except (FileNotFoundError, ConnectionRefusedError):
                c.close()
                if time.time() > deadline:
                    raise
                time.sleep(0.05)
        c.settimeout(20)
        c.sendall(a[2].encode())
        out = c.recv(100).decode()
    else:
        out = "BADOP"
except OSError as e:  # an errno name; a timeout has none
    out = errno.errorcode.get(e.errno, type(e).__name__) if e.errno else type(e).__name__
print(out)
'
op() { "$PY" -c "$OP_PY" "$@"; }
owner() { stat -c %u:%g -- "$1"; }
kind() { stat -c %F -- "$1"; }

# Things both parts check, in the work directory $1, as whoever runs them ($2 = "uid:gid").
common_checks() {
  local w=$1 me=$2 p=$3

  echo data >"$w/f"
  check "$p-create-file-owner" "$me" "$(owner "$w/f")"
  mkdir "$w/d"
  check "$p-mkdir-owner" "$me" "$(owner "$w/d")"
  ln -s f "$w/l"
  check "$p-symlink-owner" "$me" "$(owner "$w/l")"
  check "$p-symlink-readlink" "f" "$(readlink "$w/l")"
  check "$p-symlink-follow" "data" "$(cat "$w/l")"
  mkfifo "$w/p"
  check "$p-mkfifo-owner" "$me" "$(owner "$w/p")"
  check "$p-mkfifo-kind" "fifo" "$(kind "$w/p")"
  check "$p-create-excl-existing" "EEXIST" "$(op create_excl "$w/f")"
  check "$p-open-nofollow-file" "OK" "$(op open_nofollow "$w/f")"
  check "$p-open-nofollow-symlink-eloop" "ELOOP" "$(op open_nofollow "$w/l")"

  check "$p-chmod" "OK 640" "$(op chmod "$w/f" 640) $(stat -c %a "$w/f")"

  # umask and POSIX ACLs: the caller's umask shapes what it creates, unless the directory has a
  # default ACL, which then gives the new entry its ACL (and the umask does not apply)
  check "$p-umask-create-mkdir-mkfifo" "640 750 640" \
    "$(umask 027 && touch "$w/um" && mkdir "$w/umd" && mkfifo "$w/ump" && stat -c %a "$w/um" "$w/umd" "$w/ump" | tr '\n' ' ' | sed 's/ $//')"
  mkdir "$w/dacl"
  setfacl -d -m u:4242:rwx,g::rwx "$w/dacl"
  check "$p-default-acl-create" "664 user:4242:rwx mask::rw-" \
    "$(umask 022 && touch "$w/dacl/f" && stat -c %a "$w/dacl/f") $(getfacl -cnp "$w/dacl/f" 2>/dev/null | grep -E '^(user:4242|mask)' | tr '\n' ' ' | sed 's/[[:space:]]*#effective:[rwx-]*//g; s/ $//')"
  check "$p-default-acl-mkdir-inherits" "default:user:4242:rwx" \
    "$(umask 077 && mkdir "$w/dacl/sub" && getfacl -cnp "$w/dacl/sub" 2>/dev/null | grep '^default:user:4242')"
  setfacl -m u:4242:r-x "$w/f"
  check "$p-setfacl-getfacl" "user:4242:r-x" "$(getfacl -cnp "$w/f" 2>/dev/null | grep '^user:4242' | sed 's/[[:space:]]*#effective.*//')"
  setfacl -b "$w/f"
  check "$p-truncate-grow" "OK 10" "$(op truncate "$w/f" 10) $(stat -c %s "$w/f")"
  check "$p-truncate-shrink" "OK 2 da" "$(op truncate "$w/f" 2) $(stat -c %s "$w/f") $(cat "$w/f")"
  check "$p-utimes" "OK 1000000000 1234567890" \
    "$(op utime "$w/f" 1000000000 1234567890) $(stat -c '%X %Y' "$w/f")"
  chmod 0400 "$w/f"
  if [ "$p" = user ]; then
    check "$p-write-readonly-own-file-eacces" "EACCES" "$(op write "$w/f" x)"
  else
    # root's DAC override: 0400 does not stop root
    check "$p-write-readonly-file-root" "OK" "$(op write "$w/f" x)"
  fi
  chmod 0644 "$w/f"

  echo a >"$w/a"
  echo b >"$w/b"
  check "$p-rename-noreplace-existing" "EEXIST a b" "$(op noreplace "$w/a" "$w/b") $(cat "$w/a") $(cat "$w/b")"
  check "$p-rename-noreplace-new" "OK a" "$(op noreplace "$w/a" "$w/c") $(cat "$w/c")"
  check "$p-rename-noreplace-source-gone" "no" "$([ -e "$w/a" ] && echo yes || echo no)"
  check "$p-rename-exchange" "OK b a" "$(op exchange "$w/c" "$w/b") $(cat "$w/c") $(cat "$w/b")"
  mkdir "$w/xd"
  touch "$w/xd/inner"
  check "$p-rename-exchange-file-dir" "OK directory regular file" \
    "$(op exchange "$w/c" "$w/xd") $(kind "$w/c") $(kind "$w/xd")"
  mv "$w/b" "$w/b2"
  check "$p-rename-plain" "no a" "$([ -e "$w/b" ] && echo yes || echo no) $(cat "$w/b2")"
  check "$p-rmdir-not-empty" "ENOTEMPTY" "$(op rmdir "$w/c")" # c is the directory now
  rm -r "$w/c" "$w/xd"

  echo linked >"$w/h1"
  check "$p-hardlink" "OK" "$(op link "$w/h1" "$w/h2")"
  check "$p-hardlink-same-inode" "$(stat -c %i "$w/h1") 2 2" "$(stat -c %i "$w/h2") $(stat -c %h "$w/h1") $(stat -c %h "$w/h2")"
  echo more >>"$w/h2"
  check "$p-hardlink-shared-content" "linked more" "$(tr '\n' ' ' <"$w/h1" | sed 's/ $//')"
  rm "$w/h2"
  check "$p-unlink-drops-link-count" "1" "$(stat -c %h "$w/h1")"

  check "$p-setxattr" "OK" "$(op setxattr "$w/h1" user.depsetfs hello)"
  check "$p-getxattr" "hello" "$(op getxattr "$w/h1" user.depsetfs)"
  check "$p-listxattr" "user.depsetfs" "$(op listxattr "$w/h1")"
  check "$p-getfattr" "hello" "$(getfattr --absolute-names --only-values -n user.depsetfs "$w/h1" 2>&1)"
  check "$p-removexattr" "OK ENODATA" "$(op removexattr "$w/h1" user.depsetfs) $(op getxattr "$w/h1" user.depsetfs)"
  setfattr -n user.second -v two "$w/h1"
  check "$p-setfattr" "two" "$(op getxattr "$w/h1" user.second)"

  # fifo: a writer and a reader, two processes
  (timeout 20 sh -c 'echo ping >"$1"' sh "$w/p") &
  local writer=$!
  check "$p-fifo-transfer" "ping" "$(timeout 20 sh -c 'read -r line <"$1"; echo "$line"' sh "$w/p")"
  wait "$writer"
  check "$p-fifo-writer-exit" "0" "$?"

  # unix socket: server and client are both processes here
  op serve "$w/sock" >"$w/serve.out" 2>&1 &
  local server=$!
  check "$p-unix-socket-exchange" "pong:ping" "$(op connect "$w/sock" ping)"
  wait "$server"
  check "$p-unix-socket-server" "OK" "$(cat "$w/serve.out")"
  check "$p-unix-socket-owner-kind" "$me socket" "$(owner "$w/sock") $(kind "$w/sock")"

  printf '#!/bin/sh\necho ran\n' >"$w/script"
  chmod 0644 "$w/script"
  check "$p-exec-without-x-eacces" "EACCES" "$(op exec "$w/script")"
  chmod 0755 "$w/script"
  check "$p-exec-script" "ran" "$("$w/script")"

  check "$p-unlink" "OK no" "$(op unlink "$w/h1") $([ -e "$w/h1" ] && echo yes || echo no)"
}

root_part() {
  [ "$(id -u)" = 0 ] || {
    echo "FAIL root-part: not running as root"
    exit 1
  }
  rm -rf "$D"
  mkdir -p "$D"
  chmod 0755 "$D"
  # fixtures for the user part
  echo secret >"$D/rootonly"
  chmod 0600 "$D/rootonly"
  check "setup-rootonly" "0:0 600" "$(owner "$D/rootonly") $(stat -c %a "$D/rootonly")"
  mkdir "$D/rootdir"
  chmod 0755 "$D/rootdir"
  mkdir "$D/shared"
  chmod 1777 "$D/shared"
  check "setup-sticky-dir" "1777" "$(stat -c %a "$D/shared")"
  echo theirs >"$D/shared/rootfile"
  chmod 0666 "$D/shared/rootfile"
  mkdir "$D/sgid"
  chgrp "$GID_OTHER" "$D/sgid"
  chmod 2777 "$D/sgid"
  check "setup-setgid-dir" "0:$GID_OTHER 2777" "$(owner "$D/sgid") $(stat -c %a "$D/sgid")"
  # POSIX ACLs that deny what the mode bits allow, and grant what they deny, to uid 65534
  echo secret >"$D/acl-denied"
  chmod 0644 "$D/acl-denied"
  setfacl -m u:65534:--- "$D/acl-denied"
  echo granted >"$D/acl-granted"
  chmod 0600 "$D/acl-granted"
  setfacl -m u:65534:r-- "$D/acl-granted"
  mkdir "$D/acl-dir"
  echo inside >"$D/acl-dir/f"
  chmod 0755 "$D/acl-dir"
  chmod 0644 "$D/acl-dir/f"
  setfacl -m u:65534:--- "$D/acl-dir"
  check "setup-acls" "user:65534:--- user:65534:r-- user:65534:---" \
    "$(for f in acl-denied acl-granted acl-dir; do getfacl -cnp "$D/$f" 2>/dev/null | grep '^user:65534' | sed 's/[[:space:]]*#effective.*//'; done | tr '\n' ' ' | sed 's/ $//')"
  cp /usr/bin/id "$D/suid-id"
  chown 0:0 "$D/suid-id"
  chmod 4755 "$D/suid-id"
  check "setup-setuid-bit" "0:0 4755" "$(owner "$D/suid-id") $(stat -c %a "$D/suid-id")"

  mkdir "$D/root"
  common_checks "$D/root" "0:0" root

  local w=$D/root
  echo x >"$w/owned"
  check "root-chown" "OK 123:456" "$(op chown "$w/owned" 123 456) $(owner "$w/owned")"
  ln -s owned "$w/lnk"
  check "root-lchown" "OK 77:88 123:456" "$(op chown "$w/lnk" 77 88) $(owner "$w/lnk") $(owner "$w/owned")"
  chmod 4755 "$w/owned"
  check "root-chown-clears-setuid" "OK 755" "$(op chown "$w/owned" 0 0) $(stat -c %a "$w/owned")"
  check "root-read-0600-file" "secret" "$(op read "$D/rootonly" | tr -d '\n')"

  mkdir "$w/sg"
  chgrp "$GID_OTHER" "$w/sg"
  chmod 2775 "$w/sg"
  touch "$w/sg/file"
  mkdir "$w/sg/sub"
  check "root-setgid-file-group" "0:$GID_OTHER" "$(owner "$w/sg/file")"
  check "root-setgid-subdir-group-and-bit" "0:$GID_OTHER yes" \
    "$(owner "$w/sg/sub") $([ -g "$w/sg/sub" ] && echo yes || echo no)"
  check "root-setuid-binary-as-root" "0" "$("$D/suid-id" -u)"

  # extended attributes of a symlink itself, not of its target (trusted.* needs root; user.*
  # is refused on symlinks); errors without the path, which differs between runs
  setfattr -n trusted.target -v t "$w/owned"
  check "root-symlink-setfattr" "" "$(setfattr -h -n trusted.depsetfs -v lnk "$w/lnk" 2>&1)"
  check "root-symlink-getfattr" "lnk" "$(getfattr -h --absolute-names --only-values -n trusted.depsetfs "$w/lnk" 2>&1)"
  check "root-symlink-listxattr" "trusted.depsetfs" \
    "$(getfattr -h --absolute-names -m - "$w/lnk" 2>&1 | grep -v '^#' | grep . | cut -d= -f1 | tr '\n' ' ' | sed 's/ $//')"
  check "root-symlink-target-untouched" "t No such attribute" \
    "$(getfattr --absolute-names --only-values -n trusted.target "$w/lnk" 2>&1) $(getfattr --absolute-names --only-values -n trusted.depsetfs "$w/owned" 2>&1 | sed 's/.*: //')"
  check "root-symlink-removexattr" " No such attribute" \
    "$(setfattr -h -x trusted.depsetfs "$w/lnk" 2>&1) $(getfattr -h --absolute-names --only-values -n trusted.depsetfs "$w/lnk" 2>&1 | sed 's/.*: //')"
  check "root-symlink-user-xattr-eperm" "Operation not permitted" \
    "$(setfattr -h -n user.x -v y "$w/lnk" 2>&1 | sed 's/.*: //')"
}

user_part() {
  check "user-identity" "65534:65534" "$(id -u):$(id -g)"
  [ -d "$D/shared" ] || {
    echo "FAIL user-part: $D/shared missing: run the root part first"
    exit 1
  }
  check "user-read-0600-root-file-eacces" "EACCES" "$(op open_read "$D/rootonly")"
  check "user-read-etc-shadow-eacces" "EACCES" "$(op open_read /etc/shadow)"
  check "user-acl-named-user-denied-eacces" "EACCES" "$(op open_read "$D/acl-denied")"
  check "user-acl-named-user-granted" "granted" "$(op read "$D/acl-granted" | tr -d '\n')"
  check "user-acl-dir-traversal-eacces" "EACCES" "$(op open_read "$D/acl-dir/f")"
  check "user-create-in-root-dir-eacces" "EACCES" "$(op create "$D/rootdir/x")"
  check "user-mkdir-in-root-dir-eacces" "EACCES" "$(op mkdir "$D/rootdir/x")"
  check "user-setxattr-unwritable-file-eacces" "EACCES" "$(op setxattr "$D/rootonly" user.x y)"
  check "user-chmod-others-file-eperm" "EPERM" "$(op chmod "$D/shared/rootfile" 600)"
  check "user-chown-others-file-eperm" "EPERM" "$(op chown "$D/shared/rootfile" 65534 65534)"
  check "user-utimes-others-file-eperm" "EPERM" "$(op utime "$D/shared/rootfile" 1 1)"
  check "user-write-world-writable-file" "OK" "$(op write "$D/shared/rootfile" x)"
  check "user-unlink-in-sticky-dir-eperm" "EPERM" "$(op unlink "$D/shared/rootfile")"

  local w=$D/shared/u
  mkdir "$w"
  common_checks "$w" "65534:65534" user

  echo x >"$w/own"
  check "user-chown-own-file-to-root-eperm" "EPERM" "$(op chown "$w/own" 0 0)"
  check "user-chgrp-own-file-to-foreign-group-eperm" "EPERM" "$(op chown "$w/own" 65534 "$GID_OTHER")"

  touch "$D/sgid/ufile"
  mkdir "$D/sgid/udir"
  check "user-setgid-file-group" "65534:$GID_OTHER" "$(owner "$D/sgid/ufile")"
  check "user-setgid-subdir-group-and-bit" "65534:$GID_OTHER yes" \
    "$(owner "$D/sgid/udir") $([ -g "$D/sgid/udir" ] && echo yes || echo no)"
  # the kernel drops S_ISGID when the caller is not in the file's group
  check "user-chmod-setgid-foreign-group-dropped" "OK 755" "$(op chmod "$D/sgid/ufile" 2755) $(stat -c %a "$D/sgid/ufile")"

  check "user-setuid-binary-euid" "0" "$("$D/suid-id" -u)"
  check "user-setuid-binary-ruid" "65534" "$("$D/suid-id" -ru)"
}

case $mode in
root) root_part ;;
user) user_part ;;
*)
  echo "usage: posix_checks.sh root|user DIR" >&2
  exit 2
  ;;
esac
echo "DONE pass=$passed fail=$failed"
[ "$failed" = 0 ]
