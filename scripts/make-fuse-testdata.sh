#!/usr/bin/env bash
# Rebuilds src/fuse/testdata/tiny*.erofs, the small images the FUSE
# dispatcher's unit tests and the fuzz target serve (Debian 12's
# mkfs.erofs 1.5; run as root for the xattrs).
set -euo pipefail
cd "$(dirname "$0")/.."
out=src/fuse/testdata
tree=$(mktemp -d /dev/shm/fuse-testdata.XXXXXX)
trap 'rm -rf "$tree"' EXIT
printf 'hello world\n' > "$tree/hello"
python3 -c 'import sys; sys.stdout.buffer.write(bytes((i * 7 + i // 4096) & 255 for i in range(12300)))' > "$tree/big"
: > "$tree/empty"
ln -s hello "$tree/link"
chmod 755 "$tree"
mkdir "$tree/dir"
printf 'inner\n' > "$tree/dir/inner"
setfattr -n user.test -v value "$tree/hello"
setfattr -n trusted.secret -v s "$tree/hello"
touch -d @1700000000 "$tree"/* "$tree/dir/inner" "$tree"
for f in "$tree"/*; do touch -h -d @1700000000 "$f"; done
mkfs.erofs --quiet -T1700000000 -U 6a8c3d52-6b1b-4a27-9a3e-0e5f2e4b7c11 --all-root \
  "$out/tiny.erofs" "$tree"
mkfs.erofs --quiet -zlz4 -T1700000000 -U 6a8c3d52-6b1b-4a27-9a3e-0e5f2e4b7c11 --all-root \
  "$out/tiny-lz4.erofs" "$tree"
ls -l "$out"
