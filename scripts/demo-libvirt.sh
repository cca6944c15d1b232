#!/usr/bin/env bash
# docs/vmms.md's libvirt example, run: libvirt (Debian 12's 9.0, installed
# from apt if missing) starts a QEMU TCG guest whose <filesystem> is our
# daemon's socket (libvirt does not start virtiofsd itself then); the guest
# (vm-images' kernel and busybox initramfs) mounts the tag and walks it, and
# the walk must equal the same walk of the host kernel's EROFS mount of the
# image. Run as root.
#
#   scripts/demo-libvirt.sh [IMAGE]     (default: the edge_lz4 fixture)
#
# Exits 0 when the guest's walk matches, 1 when it differs, 2 on a setup
# failure. Leaves nothing behind: the transient domain, the daemon, a
# libvirtd this script started and the kernel mount are all stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

if [ "$(id -u)" != 0 ]; then
  echo "demo-libvirt.sh: run as root (libvirt's system instance, mount(2))" >&2
  exit 2
fi
if ! command -v virsh >/dev/null || ! command -v libvirtd >/dev/null; then
  echo "== installing libvirt (apt)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    libvirt-daemon-system libvirt-daemon-driver-qemu libvirt-clients busybox >/dev/null
fi
scripts/setup.sh >/dev/null
cargo build --release --quiet
bin=$repo/target/release/erofs-virtiofsd
vm-images/build.sh >/dev/null

image=${1:-}
if [ -z "$image" ]; then
  scripts/fixtures.sh >/dev/null
  image=$repo/tests/fixtures/images/edge_lz4.erofs
fi
image=$(realpath "$image")

work=$(mktemp -d /tmp/demo-libvirt.XXXXXX)
domain=evfs-demo-$$
daemon=""
started_libvirtd=""
started_virtlogd=""
kmnt=""
cleanup() {
  virsh -q -c qemu:///system destroy "$domain" >/dev/null 2>&1 || true
  [ -n "$daemon" ] && kill "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null
  [ -n "$kmnt" ] && umount "$kmnt" 2>/dev/null
  [ -n "$started_libvirtd" ] && kill "$started_libvirtd" 2>/dev/null
  [ -n "$started_virtlogd" ] && kill "$started_virtlogd" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

# libvirt's system daemon: systemd starts it where there is one; otherwise
# run it for the length of the demo.
if ! virsh -q -c qemu:///system version >/dev/null 2>&1; then
  # QEMU's output goes through virtlogd.
  if [ ! -S /run/libvirt/virtlogd-sock ]; then
    virtlogd >"$work/virtlogd.log" 2>&1 &
    started_virtlogd=$!
  fi
  libvirtd --pid-file "$work/libvirtd.pid" >"$work/libvirtd.log" 2>&1 &
  started_libvirtd=$!
  for _ in $(seq 100); do
    virsh -q -c qemu:///system version >/dev/null 2>&1 && [ -S /run/libvirt/virtlogd-sock ] && break
    kill -0 "$started_libvirtd" 2>/dev/null || { cat "$work/libvirtd.log" >&2; exit 2; }
    sleep 0.1 # polling a daemon's readiness, not synchronising a test
  done
fi
virsh -q -c qemu:///system version >/dev/null || { echo "libvirtd did not answer" >&2; exit 2; }

# The daemon: one image at the share's root, the tag in its config space.
sock=$work/fs.sock
"$bin" --socket-path "$sock" --image "$image" --tag myfs --log-level info \
  2>"$work/daemon.log" &
daemon=$!
for _ in $(seq 100); do
  grep -q 'Waiting for vhost-user socket connection' "$work/daemon.log" && break
  kill -0 "$daemon" 2>/dev/null || { cat "$work/daemon.log" >&2; exit 2; }
  sleep 0.1
done
[ -S "$sock" ] || { echo "the daemon did not listen" >&2; cat "$work/daemon.log" >&2; exit 2; }

# The domain: docs/vmms.md's XML, plus what a test guest needs (direct
# kernel boot, the serial console into a file, QEMU running as root so that
# it may reach the socket and the kernel files without relabelling).
console=$work/console.log
cat >"$work/domain.xml" <<EOF
<domain type='qemu'>
  <name>$domain</name>
  <memory unit='MiB'>512</memory>
  <vcpu>1</vcpu>
  <memoryBacking>
    <source type='memfd'/>
    <access mode='shared'/>
  </memoryBacking>
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
    <kernel>$repo/vm-images/out/vmlinuz</kernel>
    <initrd>$repo/vm-images/out/initrd.img</initrd>
    <cmdline>console=ttyS0 panic=-1 quiet loglevel=1 evfs.tag=myfs evfs.cmd=walk</cmdline>
  </os>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <filesystem type='mount'>
      <driver type='virtiofs' queue='1024'/>
      <source socket='$sock'/>
      <target dir='myfs'/>
    </filesystem>
    <serial type='file'>
      <source path='$console'/>
    </serial>
  </devices>
  <seclabel type='static' model='dac' relabel='no'>
    <label>+0:+0</label>
  </seclabel>
</domain>
EOF
echo "== libvirt starts the guest (virsh create, QEMU TCG)"
virsh -q -c qemu:///system create "$work/domain.xml" >/dev/null
for _ in $(seq 1200); do
  virsh -q -c qemu:///system domstate "$domain" >/dev/null 2>&1 || break
  grep -q '=====EVFS-END rc=' "$console" 2>/dev/null && break
  sleep 0.5 # waiting for a guest to finish, bounded (10 min)
done
grep -q '=====EVFS-END rc=' "$console" || {
  echo "the guest did not finish its walk; console:" >&2
  tail -n 30 "$console" >&2
  exit 1
}
awk '{ sub(/\r$/, "") } on && /=====EVFS-END/ { exit } on { print } /^=====EVFS-BEGIN=====$/ { on = 1 }' \
  "$console" >"$work/guest.walk"
vm-images/walk2manifest.py "$work/guest.walk" >"$work/guest.jsonl"

echo "== the host kernel's EROFS mount of the same image, walked the same way"
kmnt=$work/kernel
mkdir -p "$kmnt"
mount -t erofs -o ro "$image" "$kmnt"
PATH=$repo/vm-images/guest:$PATH busybox sh vm-images/guest/evfs-walk "$kmnt" >"$work/host.walk"
# The guest's walker may lack what its mount does not offer (e.g. nsec):
# compare only the fields both sides have.
omit=()
grep -q 'nsec=no' "$work/guest.walk" && omit+=(--omit mtime_nsec)
vm-images/walk2manifest.py "${omit[@]}" "$work/host.walk" >"$work/host.jsonl"
entries=$(wc -l <"$work/guest.jsonl")
if cmp -s "$work/host.jsonl" "$work/guest.jsonl"; then
  echo "== OK: the guest started by libvirt walked $entries paths, identical to the kernel's mount"
  exit 0
fi
echo "== MISMATCH between the guest's walk and the kernel's:" >&2
diff "$work/host.jsonl" "$work/guest.jsonl" | head -n 20 >&2
exit 1
