#!/usr/bin/env bash
# Fetches tools from Debian unstable (sid) without installing anything:
# a private apt state (its own sources list, lists and cache), `apt-get
# download` of the packages and their library closure, `dpkg-deb -x` into
# one folder per target, and wrapper scripts that start each binary through
# that folder's own ld-linux-x86-64.so.2 with its own libraries. Needs root
# only for what apt-get download needs (nothing is installed).
#
#   scripts/sid-tools.sh [--refresh] [--quiet] TARGET...
#
# Targets (each fetched only when asked, then cached):
#   erofs   erofs-utils and erofsfuse (mkfs.erofs, dump.erofs, fsck.erofs,
#           erofsfuse), the 1.9 series unless SID_EROFS_SERIES says otherwise
#   qemu    qemu-system-x86 (qemu-system-x86_64; the wrapper adds
#           -L .../usr/share/qemu for the firmware)
#
# Prints one NAME=PATH line per wrapper (NAME: the binary's name in capitals,
# `.` and `-` as `_`, e.g. MKFS_EROFS=...), then SID_BIN=DIR (all wrappers).
# A rerun with everything in place only checks stamps (well under a second).
# --refresh re-resolves the packages (apt-get update of the private state).
#
# Knobs: SID_DIR (cache; default target/sid in the repo, git-ignored),
# SID_MIRROR (default http://deb.debian.org/debian), SID_EROFS_SERIES
# (default 1.9: the erofs target fails when sid has another series; the
# fixtures' manifests were taken with 1.9).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)

refresh=0
quiet=0
targets=()
while [ $# -gt 0 ]; do
  case $1 in
    --refresh) refresh=1 ;;
    --quiet) quiet=1 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    erofs | qemu) targets+=("$1") ;;
    *) echo "sid-tools.sh: unknown argument $1 (targets: erofs qemu)" >&2; exit 2 ;;
  esac
  shift
done
[ ${#targets[@]} -gt 0 ] || { echo "sid-tools.sh: name a target: erofs qemu" >&2; exit 2; }

SID_DIR=${SID_DIR:-$repo/target/sid}
mkdir -p "$SID_DIR"
SID_DIR=$(cd "$SID_DIR" && pwd)
mirror=${SID_MIRROR:-http://deb.debian.org/debian}
series=${SID_EROFS_SERIES:-1.9}
bin=$SID_DIR/bin

log() { [ "$quiet" = 1 ] || echo "sid-tools: $*" >&2; }
die() { echo "sid-tools.sh: $*" >&2; exit 1; }

# --- the private apt state -------------------------------------------------------
state=$SID_DIR/apt
# shellcheck source=scripts/private-apt.sh
. "$repo/scripts/private-apt.sh"
private_apt_opts "$state"
apt_opts=("${PRIVATE_APT[@]}")
updated=0
apt_state() {
  [ "$updated" = 1 ] && return 0
  log "apt-get update (sid, private state in $state)"
  private_apt_update "$state" sid "$mirror" || die "apt-get update of sid failed"
  updated=1
}

# The packages to download for `roots`: the roots, plus everything reachable
# through Depends/Pre-Depends that is a library (lib*) or listed in `extra`
# (data packages such as firmware). Virtual packages are skipped.
closure() {
  local roots=$1 extra=$2
  # shellcheck disable=SC2086
  apt-cache "${apt_opts[@]}" depends --recurse --no-recommends --no-suggests \
    --no-conflicts --no-breaks --no-replaces --no-enhances $roots |
    awk -v roots="$roots" -v extra="$extra" '
      BEGIN {
        n = split(roots " " extra, a, " ")
        for (i = 1; i <= n; i++) allowed[a[i]] = 1
        split(roots, r, " ")
      }
      /^[^ ]/ { pkg = $1; next }
      /^ [ |](Pre)?Depends: / {
        dep = $2
        if (dep ~ /^</) next
        edges[pkg] = edges[pkg] " " dep
      }
      END {
        for (i in r) { queue[++qn] = r[i]; seen[r[i]] = 1 }
        for (q = 1; q <= qn; q++) {
          m = split(edges[queue[q]], d, " ")
          for (j = 1; j <= m; j++) {
            p = d[j]
            if (p in seen) continue
            if (!(p in allowed) && p !~ /^lib/) continue
            seen[p] = 1
            queue[++qn] = p
          }
        }
        for (q = 1; q <= qn; q++) print queue[q]
      }' | sort
}

# Makes absolute symlinks inside `root` point into `root` (relative links).
relink_absolute() {
  local root=$1 link target rel
  while IFS= read -r -d '' link; do
    target=$(readlink "$link")
    case $target in
      /*)
        rel=$(realpath -m --relative-to="$(dirname "$link")" "$root$target")
        ln -sfn "$rel" "$link"
        ;;
    esac
  done < <(find "$root" -type l -print0)
}

# Writes bin/NAME running ROOT/PATH through ROOT's dynamic loader; `extra`
# are arguments placed before the caller's (e.g. qemu's -L).
wrapper() {
  local name=$1 root=$2 path=$3
  shift 3
  local ld=$root/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2
  [ -e "$ld" ] || ld=$root/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2
  [ -e "$ld" ] || die "no ld-linux-x86-64.so.2 in $root"
  [ -x "$root$path" ] || die "$root$path is missing"
  local libs=$root/usr/lib/x86_64-linux-gnu:$root/lib/x86_64-linux-gnu
  local extra="" a
  for a in "$@"; do extra+=" '${a//\'/\'\\\'\'}'"; done
  mkdir -p "$bin"
  cat >"$bin/$name.tmp" <<EOF
#!/bin/sh
# $name from Debian sid, run with its own libraries (scripts/sid-tools.sh).
GCONV_PATH='$root/usr/lib/x86_64-linux-gnu/gconv' exec '$ld' --library-path '$libs' --argv0 '$name' '$root$path'$extra "\$@"
EOF
  chmod 0755 "$bin/$name.tmp"
  mv "$bin/$name.tmp" "$bin/$name"
}

# Downloads and extracts target `t` (packages `roots` plus `extra` data
# packages) into $SID_DIR/t/root, unless its stamp says it is there.
fetch() {
  local t=$1 roots=$2 extra=$3
  local dir=$SID_DIR/$t
  if [ "$refresh" = 0 ] && [ -f "$dir/versions" ]; then
    return 0
  fi
  apt_state
  local pkgs
  pkgs=$(closure "$roots" "$extra")
  [ -n "$pkgs" ] || die "$t: cannot resolve $roots in sid"
  local versions
  # shellcheck disable=SC2086
  versions=$(apt-cache "${apt_opts[@]}" show --no-all-versions $pkgs |
    awk '/^Package:/ { p = $2 } /^Version:/ { print p, $2 }' | sort)
  if [ -f "$dir/versions" ] && [ "$(cat "$dir/versions")" = "$versions" ]; then
    log "$t: up to date ($(echo "$pkgs" | wc -l) packages)"
    return 0
  fi
  log "$t: downloading $(echo "$pkgs" | wc -l) packages from sid"
  rm -rf "$dir"
  mkdir -p "$dir/debs" "$dir/root"
  # shellcheck disable=SC2086
  (cd "$dir/debs" && apt-get "${apt_opts[@]}" download -qq $pkgs >/dev/null) ||
    die "$t: apt-get download failed"
  local deb
  for deb in "$dir"/debs/*.deb; do
    dpkg-deb -x "$deb" "$dir/root"
  done
  relink_absolute "$dir/root"
  rm -rf "$dir/debs"
  echo "$versions" >"$dir/versions"
}

# NAME=PATH for each wrapper named, as the output promises.
report() {
  local name var
  for name in "$@"; do
    var=$(echo "$name" | tr 'a-z.-' 'A-Z__')
    echo "$var=$bin/$name"
  done
}

target_erofs() {
  fetch erofs "erofs-utils erofsfuse" ""
  local root=$SID_DIR/erofs/root n
  for n in mkfs.erofs dump.erofs fsck.erofs erofsfuse; do
    if [ ! -x "$bin/$n" ] || [ "$bin/$n" -ot "$SID_DIR/erofs/versions" ]; then
      wrapper "$n" "$root" "/usr/bin/$n"
    fi
  done
  # The version check costs a few milliseconds; do it once per fetch.
  if [ ! -f "$SID_DIR/erofs/checked" ] || [ "$SID_DIR/erofs/checked" -ot "$SID_DIR/erofs/versions" ]; then
    local v
    v=$("$bin/mkfs.erofs" --version 2>&1 | awk '/^mkfs.erofs/ { print $NF; exit }')
    case $v in
      "$series" | "$series".*) ;;
      *) die "sid's mkfs.erofs is ${v:-unknown}, expected the $series series \
(set SID_EROFS_SERIES=${v%.*} to accept it; the fixtures' manifests may then need scripts/fixtures.sh --regen-manifests)" ;;
    esac
    # erofsfuse --help exits with 1 after printing its usage.
    local help
    help=$("$bin/erofsfuse" --help 2>&1 || true)
    case $help in *--offset*) ;; *) die "$bin/erofsfuse --help fails: $help" ;; esac
    echo "$v" >"$SID_DIR/erofs/checked"
    log "erofs: mkfs.erofs $v"
  fi
  report mkfs.erofs dump.erofs fsck.erofs erofsfuse
}

target_qemu() {
  fetch qemu "qemu-system-x86" "qemu-system-common qemu-system-data seabios ipxe-qemu"
  local root=$SID_DIR/qemu/root
  local n=qemu-system-x86_64
  if [ ! -x "$bin/$n" ] || [ "$bin/$n" -ot "$SID_DIR/qemu/versions" ]; then
    wrapper "$n" "$root" "/usr/bin/$n" -L "$root/usr/share/qemu"
    "$bin/$n" --version >/dev/null 2>&1 || die "$bin/$n --version fails"
    log "qemu: $("$bin/$n" --version | head -n1)"
  fi
  report "$n"
}

for t in "${targets[@]}"; do
  "target_$t"
done
echo "SID_BIN=$bin"
