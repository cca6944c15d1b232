#!/usr/bin/env bash
# The main job, end to end: build a small demo EROFS image, serve it with
# erofs-virtiofsd over vhost-user virtio-fs, boot the test guest (QEMU, TCG;
# Debian's cloud kernel and a busybox initramfs, built by vm-images/build.sh
# on first use), mount the share in the guest, show a few files read
# through virtio-fs, power the guest off and stop the daemon.
# Run as root on Debian 12.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release --quiet
bin=$PWD/target/release/erofs-virtiofsd
vm-images/build.sh >/dev/null

work=$(mktemp -d)
daemon=""
cleanup() {
  [ -n "$daemon" ] && kill "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

# A small tree: text, a symlink, an xattr, a bigger compressible file.
mkdir -p "$work/tree/docs" "$work/tree/bin"
echo "Hello from an EROFS image, read through virtio-fs" >"$work/tree/hello.txt"
seq 1 200000 >"$work/tree/docs/numbers.txt"
ln -s ../hello.txt "$work/tree/docs/link"
setfattr -n user.demo -v "served by erofs-virtiofsd" "$work/tree/hello.txt"
mkfs.erofs -zlz4hc -T0 "$work/demo.erofs" "$work/tree" >/dev/null
echo "== demo image: $($bin image info "$work/demo.erofs" | head -3 | tr '\n' ' ')"

# Serve it (the daemon logs to the terminal).
"$bin" --socket-path "$work/vfs.sock" --image "$work/demo.erofs" --once &
daemon=$!
for _ in $(seq 300); do [ -S "$work/vfs.sock" ] && break; sleep 0.05; done
[ -S "$work/vfs.sock" ] || { echo "demo: the daemon did not start" >&2; exit 1; }

# What the guest runs, once it has mounted the share at /mnt.
cat >"$work/guest.sh" <<'EOF'
echo "--- guest: $(uname -r), mounted:"; grep virtiofs /proc/mounts
echo "--- ls -l /mnt /mnt/docs"; ls -l /mnt /mnt/docs
echo "--- cat /mnt/docs/link"; cat /mnt/docs/link
echo "--- getfattr /mnt/hello.txt"; getfattr -d /mnt/hello.txt
echo "--- tail -2 /mnt/docs/numbers.txt; sha256sum"; tail -2 /mnt/docs/numbers.txt
sha256sum /mnt/docs/numbers.txt
EOF
echo "== booting the guest (QEMU, TCG) against the daemon"
vm-images/run.sh --no-build -s "$work/vfs.sock" -t demo --script-file "$work/guest.sh" --timeout 300
echo "== host: sha256 of the same file in the image"
"$bin" image cat "$work/demo.erofs" /docs/numbers.txt | sha256sum
