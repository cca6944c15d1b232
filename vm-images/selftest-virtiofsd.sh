#!/usr/bin/env bash
# End-to-end check of the guest tooling with crates.io virtiofsd: builds a
# small tree with odd names, symlinks, a fifo, devices, a socket, xattrs,
# odd owners and modes, nanosecond mtimes and a 5 MB file; shares it with
# virtiofsd; walks it in the guest (run.sh, evfs-walk, walk2manifest.py) and
# compares with host-manifest.py's view of the same tree (manifest-diff.py).
# Run as root on Debian 12.
#
#   vm-images/selftest-virtiofsd.sh [--keep] [--fixture NAME]
#
# Prints the differences (manifest-diff.py) and exits 0 when there are none.
# --keep leaves the work dir (tree, walker output, manifests, logs).
#
# --fixture NAME (e.g. edge_plain-b4096) shares instead the kernel's EROFS
# mount of tests/fixtures/images/NAME.erofs (built by scripts/fixtures.sh;
# EROFS_FIXTURES=DIR to use another fixtures directory) and compares the guest's walk with the fixture's kernel manifest
# (manifests/TREE.jsonl plus NAME.delta.jsonl): the walker against the
# format the Rust tests use, on the edge tree's odd names, xattrs and ACLs.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
keep=0
fixture=""
while [ $# -gt 0 ]; do
  case $1 in
    --keep) keep=1 ;;
    --fixture) fixture=${2:?--fixture needs a name}; shift ;;
    *) echo "selftest: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

# --- virtiofsd from crates.io -------------------------------------------------
export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v virtiofsd >/dev/null; then
  missing=()
  for pkg in libseccomp-dev libcap-ng-dev pkg-config; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
  echo "selftest: cargo install virtiofsd --locked" >&2
  cargo install virtiofsd --locked
fi
if ! blog=$("$here/build.sh" 2>&1); then
  echo "$blog" >&2
  exit 1
fi

work=$(mktemp -d /tmp/evfs-selftest.XXXXXX)
vpid=""
mounted=""
loops=()
cleanup() {
  if [ -n "$vpid" ]; then kill "$vpid" 2>/dev/null && wait "$vpid" 2>/dev/null; fi
  if [ -n "$mounted" ]; then umount "$mounted"; fi
  for l in "${loops[@]}"; do losetup -d "$l"; done
  if [ "$keep" = 1 ]; then echo "selftest: kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT

# The selftest tree (see the header), in $1.
make_tree() {
  local t=$1
  mkdir -p "$t/dir with space/sub" "$t/names" "$t/links" "$t/special" "$t/owners"
  printf 'hello\n' >"$t/hello.txt"
  : >"$t/empty"
  head -c 5000000 /dev/urandom >"$t/big-5MB"
  # Odd names: newline, tab, backslash, quotes (also the %N record syntax),
  # invalid UTF-8, a valid multibyte name, a 255-byte name.
  printf 'nl' >"$t/names/$(printf 'new\nline')"
  printf 'tab' >"$t/names/$(printf 'a\tb')"
  printf 'bs' >"$t/names/back\\slash"
  printf 'q' >"$t/names/it's -> 'quoted'"
  printf 'ff' >"$t/names/$(printf 'bad\xff\xfe')"
  printf 'l1' >"$t/names/$(printf 'latin1_\xe9t\xe9')"
  printf 'u8' >"$t/names/ünïcødé ✓"
  printf 'long' >"$t/names/$(printf 'n%.0s' $(seq 255))"
  printf 'x' >"$t/dir with space/sub/deep file"
  # Symlinks: relative, absolute, dangling, odd targets, one to a directory.
  ln -s hello.txt "$t/links/rel"
  ln -s /etc/hostname "$t/links/abs"
  ln -s nowhere "$t/links/dangling"
  ln -s "$(printf 'bad\xff/\001name')" "$t/links/nonutf8"
  ln -s "$(printf "x'\n' -> 'y")" "$t/links/quote-newline"
  ln -s ../names "$t/links/todir"
  ln "$t/hello.txt" "$t/links/hardlink"
  # Special files.
  mkfifo "$t/special/fifo"
  mknod "$t/special/chr" c 4095 1048575
  mknod "$t/special/blk" b 8 1
  python3 -c 'import socket,sys; s=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1])' "$t/special/sock"
  # Owners, modes, times.
  printf 'o' >"$t/owners/u1234"
  chown 1234:4321 "$t/owners/u1234"
  printf 's' >"$t/owners/setuid"
  chmod 4755 "$t/owners/setuid"
  mkdir "$t/owners/sticky"
  chmod 1777 "$t/owners/sticky"
  touch -h -d '2001-02-03 04:05:06.123456789' "$t/hello.txt" "$t/links/rel"
  touch -d '1969-07-20 20:17:40.5' "$t/empty"
  touch -d '2100-01-01 00:00:00' "$t/owners/u1234"
  # xattrs (user, trusted, security), including an empty value.
  setfattr -n user.comment -v "a value" "$t/hello.txt"
  setfattr -n user.empty "$t/empty"
  setfattr -n trusted.bin -v 0x00ff10 "$t/big-5MB"
  setfattr -n security.test -v sec "$t/names"
  setfattr -h -n trusted.onlink -v 1 "$t/links/rel" 2>/dev/null || true
  # The root's mtime last (creating entries changes it).
  touch -d '2020-02-02 02:02:02.000000002' "$t/special" "$t"

}

# --- the shared tree -------------------------------------------------------------
t=$work/tree
if [ -n "$fixture" ]; then
  fx=${EROFS_FIXTURES:-$("$here/../scripts/fixtures.sh")}
  img=$fx/images/$fixture.erofs
  [ -f "$img" ] || { echo "selftest: no fixture image $img" >&2; exit 2; }
  expected=$fx/manifests/${fixture%%_*}.jsonl
  delta=$fx/manifests/$fixture.delta.jsonl
  # Loop devices (detached on exit) for the image and its blob, if any.
  loops+=("$(losetup --find --show --read-only "$img")")
  mopts=ro
  if [ -f "$fx/images/$fixture.blob" ]; then
    loops+=("$(losetup --find --show --read-only "$fx/images/$fixture.blob")")
    mopts+=",device=${loops[1]}"
  fi
  mkdir -p "$t"
  mount -t erofs -o "$mopts" "${loops[0]}" "$t"
  mounted=$t
else
  make_tree "$t"
fi

# --- virtiofsd -------------------------------------------------------------------
# --xattr: pass xattrs through; --posix-acl: also system.posix_acl_* (else
# virtiofsd hides them); +sys_admin: without it virtiofsd (which drops
# capabilities) cannot see trusted.* xattrs on the host.
sock=$work/vfsd.sock
virtiofsd --socket-path="$sock" --shared-dir="$t" --cache=auto --sandbox=none \
  --xattr --posix-acl --modcaps=+sys_admin --readonly >"$work/virtiofsd.log" 2>&1 &
vpid=$!
# Wait for the socket (poll; the daemon creates it before it listens).
for _ in $(seq 200); do
  [ -S "$sock" ] && break
  kill -0 "$vpid" 2>/dev/null || { cat "$work/virtiofsd.log" >&2; exit 1; }
  sleep 0.05
done
[ -S "$sock" ] || { echo "selftest: virtiofsd did not create $sock" >&2; exit 1; }

# --- walk in the guest, compare ----------------------------------------------------
"$here/run.sh" --no-build -s "$sock" -c walk --timeout 600 --log "$work/console.log" >"$work/walk.txt"
"$here/walk2manifest.py" "$work/walk.txt" >"$work/guest.jsonl"
diff_args=()
if [ -n "$fixture" ]; then
  cp "$expected" "$work/expected.jsonl"
  [ -f "$delta" ] && diff_args+=(--delta "$delta")
else
  "$here/host-manifest.py" "$t" >"$work/expected.jsonl"
fi
echo "selftest: $(grep -c . "$work/guest.jsonl") guest entries, $(grep -c . "$work/expected.jsonl") expected" >&2
"$here/manifest-diff.py" "${diff_args[@]}" "$work/expected.jsonl" "$work/guest.jsonl"
