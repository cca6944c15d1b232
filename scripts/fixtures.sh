#!/usr/bin/env bash
# Builds the fixture images the tests read (docs/fixtures.md): three
# deterministic source trees (`edge` and `big` from tests/common/
# fixture_trees.rs, `usr` from the pinned wheels of
# tests/fixtures/usr-wheels.txt) made into the images listed in
# tests/fixtures/build.jsonl by mkfs.erofs 1.9 from Debian sid
# (scripts/sid-tools.sh). Run as root (the trees have devices, owners and
# trusted.* xattrs; mounting needs it too).
#
#   scripts/fixtures.sh [--force] [--regen-manifests]
#
# The images go to tests/fixtures/images (git-ignored), rebuilt only when an
# input changes: this script, build.jsonl, hints.txt, usr-wheels.txt, the
# tree generators or the mkfs version (a stamp, images/.stamp). With
# everything in place a rerun only compares the stamp. The expected
# manifests (tests/fixtures/manifests) are committed; --regen-manifests
# rebuilds the images and derives them again from kernel mounts of the
# images (after checking each reference image against its source tree).
# Prints the fixtures directory (what EROFS_FIXTURES would name).
#
# Knobs: FIXTURES_CACHE (downloaded wheels; default target/fixtures-cache),
# EROFS_TEST_TMP (where the trees are built; default /dev/shm: tmpfs takes
# the big xattr values), SID_DIR (see scripts/sid-tools.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

force=0
regen=0
while [ $# -gt 0 ]; do
  case $1 in
    --force) force=1 ;;
    --regen-manifests) regen=1 force=1 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "fixtures.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

fx=$repo/tests/fixtures
images=$fx/images
log() { echo "fixtures: $*" >&2; }
die() { echo "fixtures.sh: $*" >&2; exit 1; }

tools=$(scripts/sid-tools.sh erofs)
mkfs=$(sed -n 's/^MKFS_EROFS=//p' <<<"$tools")
version=$("$mkfs" --version 2>&1 | awk '/^mkfs.erofs/ { print $NF; exit }')

inputs=(scripts/fixtures.sh tests/fixtures/build.jsonl tests/fixtures/hints.txt
  tests/fixtures/usr-wheels.txt tests/common/trees.rs tests/common/bigtree.rs
  tests/common/fixture_trees.rs tests/fixture_build.rs)
stamp=$({ echo "mkfs.erofs $version"; sha256sum "${inputs[@]}"; } | sha256sum | cut -d' ' -f1)
if [ "$force" = 0 ] && [ "$(cat "$images/.stamp" 2>/dev/null)" = "$stamp" ]; then
  echo "$fx"
  exit 0
fi

[ "$(id -u)" = 0 ] || die "building the fixture trees needs root (devices, owners, trusted.* xattrs)"
for cmd in jq unzip curl cargo; do
  command -v "$cmd" >/dev/null || die "$cmd is missing (scripts/setup.sh installs it)"
done

tmp_base=${EROFS_TEST_TMP:-/dev/shm}
trees=$(mktemp -d "$tmp_base/erofs-fixture-trees.XXXXXX")
cleanup() { rm -rf "$trees" "$images.new"; }
trap cleanup EXIT

started=$SECONDS
log "building the edge and big trees in $trees (cargo test --test fixture_build)"
FIXTURE_TREES=$trees cargo test --quiet --test fixture_build -- \
  --ignored --exact build_fixture_trees >&2
log "edge and big trees built in $((SECONDS - started)) s (compiling included)"

# --- usr: pinned wheels, unpacked with fixed owners, modes and mtimes ----------
cache=${FIXTURES_CACHE:-$repo/target/fixtures-cache}/wheels
mkdir -p "$cache"
site=$trees/usr/lib/python3/dist-packages
mkdir -p "$site"
while read -r url sha; do
  case $url in '' | '#'*) continue ;; esac
  whl=$cache/${url##*/}
  if ! { [ -f "$whl" ] && echo "$sha  $whl" | sha256sum --quiet -c - >/dev/null 2>&1; }; then
    log "downloading ${url##*/}"
    curl -fsSL --retry 3 -o "$whl.part" "$url" || die "cannot download $url"
    echo "$sha  $whl.part" | sha256sum --quiet -c - || die "${url##*/}: sha256 mismatch"
    mv "$whl.part" "$whl"
  fi
  unzip -q -o "$whl" -d "$site"
done <"$fx/usr-wheels.txt"
chown -R 0:0 "$trees/usr"
find "$trees/usr" -type d -exec chmod 0755 {} +
find "$trees/usr" -type f -exec chmod 0644 {} +
find "$trees/usr" -type f -name '*.so' -exec chmod 0755 {} +
find "$trees/usr" -type f -exec touch -d @1704067200 {} +
find "$trees/usr" -depth -type d -exec touch -d @1700000000 {} +

# --- the images ----------------------------------------------------------------
rm -rf "$images.new"
mkdir -p "$images.new"
started=$SECONDS
log "making $(grep -c . "$fx/build.jsonl") images with mkfs.erofs $version"
while IFS= read -r record; do
  name=$(jq -r .name <<<"$record")
  argv=()
  while IFS= read -r arg; do
    arg=${arg//\$MKFS/$mkfs}
    arg=${arg//\$IMAGES/$images.new}
    arg=${arg//\$TREES/$trees}
    arg=${arg//\$FIXTURES/$fx}
    argv+=("$arg")
  done < <(jq -r '.argv[]' <<<"$record")
  t0=$SECONDS
  if ! out=$("${argv[@]}" 2>&1); then
    echo "$out" >&2
    die "$name: mkfs.erofs failed: ${argv[*]}"
  fi
  [ $((SECONDS - t0)) -lt 5 ] || log "$name took $((SECONDS - t0)) s"
done < <(jq -c . "$fx/build.jsonl")
echo "$stamp" >"$images.new/.stamp"
rm -rf "$images"
mv "$images.new" "$images"
log "images made in $((SECONDS - started)) s: $(du -sh "$images" | cut -f1)"

if [ "$regen" = 1 ]; then
  log "deriving the manifests from kernel mounts"
  EROFS_FIXTURES=$fx FIXTURE_TREES=$trees cargo test --quiet --test fixture_build -- \
    --ignored --exact derive_fixture_manifests --nocapture >&2
fi
echo "$fx"
