#!/usr/bin/env bash
# Main job (for now): build a small demo image with mkfs.erofs and inspect
# it with erofs-virtiofsd.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release --quiet
bin=target/release/erofs-virtiofsd

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/tree/docs" "$work/tree/bin"
echo "Hello from an EROFS image" > "$work/tree/hello.txt"
seq 1 20000 > "$work/tree/docs/numbers.txt"
ln -s ../hello.txt "$work/tree/docs/link"
setfattr -n user.demo -v "served by erofs-virtiofsd" "$work/tree/hello.txt"
mkfs.erofs -T0 "$work/demo.erofs" "$work/tree" >/dev/null

set -x
$bin image info "$work/demo.erofs"
$bin image ls -l "$work/demo.erofs" /docs
$bin image cat "$work/demo.erofs" /hello.txt
$bin image xattr "$work/demo.erofs" /hello.txt
$bin image check "$work/demo.erofs"
$bin image manifest "$work/demo.erofs" | head -3
