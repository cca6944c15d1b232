#!/usr/bin/env bash
# Installs the FUSE benchmark peers (run as root; safe to run again):
#  - erofsfuse: Debian ships erofs-utils without it, so this builds it from
#    Debian's own source package (`apt-get source erofs-utils`, fetched at run
#    time, never committed) with `./configure --enable-fuse`;
#  - squashfuse, squashfs-tools (mksquashfs), fio: from apt.
# Prints where the binaries are. With everything in place a rerun only checks
# and prints (well under a second).
# Knobs: PEERS_DIR=DIR (cache; default target/peers in the repo, not in git).
set -euo pipefail
cd "$(dirname "$0")/.."

PEERS_DIR=${PEERS_DIR:-$PWD/target/peers}
mkdir -p "$PEERS_DIR"
PEERS_DIR=$(cd "$PEERS_DIR" && pwd)
erofsfuse=$PEERS_DIR/bin/erofsfuse

installed() {
  dpkg-query -W -f='${Status}\n' "$1" 2>/dev/null | grep -q "install ok installed"
}

apt_updated=
apt_update() {
  if [ -z "$apt_updated" ]; then
    apt-get update -qq
    apt_updated=1
  fi
}

apt_install() {
  local need=() p
  for p in "$@"; do installed "$p" || need+=("$p"); done
  [ ${#need[@]} -eq 0 ] && return 0
  if [ "$(id -u)" != 0 ]; then
    echo "peers.sh: need root to install ${need[*]}" >&2
    exit 1
  fi
  echo "peers: apt-get install ${need[*]}" >&2
  apt_update
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
}

# The second peer and the load generator: plain Debian packages.
apt_install squashfuse squashfs-tools fio erofs-utils

# True when some enabled apt source already offers bookworm's deb-src.
have_deb_src() {
  local f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    grep -Eq '^[[:space:]]*deb-src[[:space:]].*[[:space:]]bookworm([[:space:]]|$)' "$f" && return 0
  done
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    # deb822: a stanza with Types: ...deb-src... and Suites: ...bookworm...
    awk 'BEGIN{RS=""; IGNORECASE=1; hit=0}
         /(^|\n)Types:[^\n]*deb-src/ && /(^|\n)Suites:[^\n]*bookworm([ \t\n]|$)/ \
           && !/(^|\n)Enabled:[ \t]*no/ {hit=1}
         END{exit hit?0:1}' "$f" && return 0
  done
  return 1
}

build_erofsfuse() {
  if ! have_deb_src; then
    echo "peers: adding bookworm deb-src (/etc/apt/sources.list.d/erofs-virtiofsd-deb-src.sources)" >&2
    cat >/etc/apt/sources.list.d/erofs-virtiofsd-deb-src.sources <<'SRC'
# Added by erofs-virtiofsd scripts/peers.sh: source packages, to build erofsfuse.
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
    apt_updated=
  fi
  # Build dependencies of Debian's erofs-utils 1.5 with FUSE (libfuse 2).
  apt_install dpkg-dev build-essential autoconf automake libtool pkg-config \
    libfuse-dev liblz4-dev liblzma-dev uuid-dev libselinux1-dev zlib1g-dev
  apt_update

  local src=$PEERS_DIR/src
  rm -rf "$src"
  mkdir -p "$src"
  echo "peers: apt-get source erofs-utils (into $src)" >&2
  (cd "$src" && apt-get source -qq erofs-utils >/dev/null)
  local dir
  dir=$(find "$src" -mindepth 1 -maxdepth 1 -type d -name 'erofs-utils-*' | head -n1)
  [ -n "$dir" ] || { echo "peers.sh: apt-get source gave no erofs-utils-* directory" >&2; exit 1; }

  local opts=(--enable-fuse --with-lz4)
  # --enable-lzma exists from 1.5 on (MicroLZMA needs xz >= 5.3.2alpha).
  grep -q -- 'enable-lzma' "$dir/configure.ac" && opts+=(--enable-lzma)
  echo "peers: building $(basename "$dir") erofsfuse (configure ${opts[*]}; log $src/build.log)" >&2
  (
    cd "$dir"
    { [ -x configure ] || ./autogen.sh; } &&
      ./configure "${opts[@]}" &&
      make -j"$(nproc)"
  ) >"$src/build.log" 2>&1 || { tail -n 30 "$src/build.log" >&2; exit 1; }
  mkdir -p "$PEERS_DIR/bin"
  install -m 0755 "$dir/fuse/erofsfuse" "$erofsfuse"
  # What this build decodes, from its own configure summary.
  grep -E '^#define (LZ4_ENABLED|LZ4HC_ENABLED|HAVE_LIBLZMA|HAVE_LIBZSTD|HAVE_LIBDEFLATE|HAVE_ZLIB)' \
    "$dir/config.h" >"$PEERS_DIR/bin/erofsfuse.features" || true
  basename "$dir" >"$PEERS_DIR/bin/erofsfuse.version"
}

[ -x "$erofsfuse" ] || build_erofsfuse

echo "erofsfuse  $erofsfuse ($(cat "$PEERS_DIR/bin/erofsfuse.version" 2>/dev/null || echo '?'))"
echo "squashfuse $(command -v squashfuse)"
echo "mksquashfs $(command -v mksquashfs)"
echo "mkfs.erofs $(command -v mkfs.erofs)"
echo "fio        $(command -v fio)"
