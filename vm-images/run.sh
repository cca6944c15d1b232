#!/usr/bin/env bash
# Boots the evfs test guest (vm-images/build.sh) under QEMU (TCG) with one or
# more vhost-user virtio-fs shares, runs a command in it (guest/init) and
# prints what the command printed: the console text between
# =====EVFS-BEGIN===== and =====EVFS-END rc=N=====. Exits with the guest
# command's rc, 124 on timeout, 125 if the guest ended without an end marker.
# The full console log goes to --log (default: a temporary file, named on
# stderr). The vhost-user daemon must already listen on the socket.
#
#   vm-images/run.sh -s SOCK [options] [-- EXTRA_QEMU_ARGS...]
#
#   -s, --socket PATH       vhost-user socket of the main share    [$EVFS_SOCK]
#   -t, --tag TAG           its virtio-fs tag (default myfs)       [$EVFS_TAG]
#   -o, --mount-opts OPTS   guest mount options for it (e.g. dax=always)
#   -d, --dir DIR           where the guest mounts it (default /mnt)
#   -f, --fs SOCK,TAG,DIR[,OPTS]  one more share, mounted at DIR (repeatable)
#   -c, --cmd CMD           walk | script | b64 | shell | none (default walk)
#       --script PATH       cmd=script: the script's path in the guest
#       --script-file FILE  a host script, passed base64 on the kernel command
#                           line (sets cmd=b64; keep it under ~1 KiB)
#       --timeout SECS      kill QEMU after SECS (default 600) [$EVFS_TIMEOUT]
#       --log FILE          full console log                       [$EVFS_LOG]
#       --out DIR           build.sh's output dir (default vm-images/out, or
#                           vm-images/out-SUITE with $EVFS_KERNEL_SUITE) [$EVFS_OUT]
#       --initrd NAME       initrd (default) or initrd-fio (build.sh --with-fio)
#       --mem MIB           guest RAM (default 512)
#       --append ARGS       more kernel command line
#       --qemu BIN          the QEMU binary (default qemu-system-x86_64) [$EVFS_QEMU]
#       --dax-device        the main share as QEMU 11.1's
#                           vhost-user-test-device-pci (virtio-fs with the
#                           DAX window the daemon offers, --dax-window; the
#                           tag comes from the daemon's --tag)
#       --bios seabios|qboot  firmware (default SeaBIOS, QEMU's own; qboot
#                           skips its ~0.3 s but is less tested here)
#       --no-build          do not run build.sh first
#   Extra QEMU arguments: after --, or in $EVFS_QEMU_ARGS (split on spaces).
#
# Without -s the guest boots without the main share (only --fs shares, or
# none with -c shell/none).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
sock=${EVFS_SOCK:-}
tag=${EVFS_TAG:-myfs}
mount_opts=""
mount_dir=""
cmd=walk
cmd_set=0
script=""
script_file=""
timeout=${EVFS_TIMEOUT:-600}
log=${EVFS_LOG:-}
out=${EVFS_OUT:-$here/out${EVFS_KERNEL_SUITE:+-$EVFS_KERNEL_SUITE}}
initrd=initrd
mem=512
append=""
bios=seabios
build=1
qemu_bin=${EVFS_QEMU:-qemu-system-x86_64}
dax_device=0
extra_fs=()
qemu_extra=()
if [ -n "${EVFS_QEMU_ARGS:-}" ]; then
  read -r -a qemu_extra <<<"$EVFS_QEMU_ARGS"
fi

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
need() { [ $# -ge 2 ] || { echo "run.sh: $1 needs a value" >&2; exit 2; }; }
while [ $# -gt 0 ]; do
  case $1 in
    -s | --socket) need "$@"; sock=$2; shift ;;
    -t | --tag) need "$@"; tag=$2; shift ;;
    -o | --mount-opts) need "$@"; mount_opts=$2; shift ;;
    -d | --dir) need "$@"; mount_dir=$2; shift ;;
    -f | --fs) need "$@"; extra_fs+=("$2"); shift ;;
    -c | --cmd) need "$@"; cmd=$2; cmd_set=1; shift ;;
    --script) need "$@"; script=$2; shift ;;
    --script-file) need "$@"; script_file=$2; shift ;;
    --timeout) need "$@"; timeout=$2; shift ;;
    --log) need "$@"; log=$2; shift ;;
    --out) need "$@"; out=$2; shift ;;
    --initrd) need "$@"; initrd=$2; shift ;;
    --mem) need "$@"; mem=$2; shift ;;
    --append) need "$@"; append=$2; shift ;;
    --bios) need "$@"; bios=$2; shift ;;
    --qemu) need "$@"; qemu_bin=$2; shift ;;
    --dax-device) dax_device=1 ;;
    --no-build) build=0 ;;
    -h | --help) usage; exit 0 ;;
    --) shift; qemu_extra+=("$@"); break ;;
    *) echo "run.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

if [ "$build" = 1 ]; then
  build_args=("$out")
  [ "$initrd" = initrd-fio ] && build_args=(--with-fio "$out")
  # Quiet when all is cached; its log only if it fails.
  if ! blog=$("$here/build.sh" "${build_args[@]}" 2>&1); then
    echo "$blog" >&2
    exit 2
  fi
fi
for f in "$out/vmlinuz" "$out/$initrd.img"; do
  [ -f "$f" ] || { echo "run.sh: $f is missing (run vm-images/build.sh)" >&2; exit 2; }
done

# --- kernel command line -----------------------------------------------------
# console on the first serial port; panic=-1 reboots at once on a panic, and
# -no-reboot turns that reboot into QEMU's exit; quiet keeps the boot short.
cmdline="console=ttyS0 panic=-1 quiet loglevel=1 evfs.tag=$tag"
[ -n "$sock" ] || cmdline+=" evfs.nomount=1"
[ -n "$mount_opts" ] && cmdline+=" evfs.opts=$mount_opts"
[ -n "$mount_dir" ] && cmdline+=" evfs.dir=$mount_dir"
if [ -n "$script_file" ]; then
  [ "$cmd_set" = 1 ] && [ "$cmd" != b64 ] && { echo "run.sh: --script-file goes with cmd=b64" >&2; exit 2; }
  cmd=b64
  cmdline+=" evfs.b64=$(base64 -w0 "$script_file")"
fi
[ -n "$script" ] && cmdline+=" evfs.script=$script"
cmdline+=" evfs.cmd=$cmd"
[ -n "$append" ] && cmdline+=" $append"

# --- QEMU --------------------------------------------------------------------
# vhost-user needs the guest RAM in shared memory (memfd, share=on). TCG only:
# the KVM of this machine's hosts does not run stock guest kernels reliably.
# shellcheck disable=SC2054 # the commas are QEMU's
qemu=("$qemu_bin" -M q35 -accel tcg -cpu max -smp 1 -m "$mem"
  -nographic -no-reboot -nodefaults -no-user-config
  -object "memory-backend-memfd,id=mem,size=${mem}M,share=on" -numa node,memdev=mem
  -kernel "$out/vmlinuz" -initrd "$out/$initrd.img")
# SeaBIOS is QEMU's default; qboot.rom comes with qemu-system-data (a
# dependency of qemu-system-x86).
case $bios in
  qboot) [ -f /usr/share/qemu/qboot.rom ] && qemu+=(-bios /usr/share/qemu/qboot.rom) ;;
  seabios) ;;
  *) echo "run.sh: --bios qboot or seabios" >&2; exit 2 ;;
esac
n=0
add_share() { # SOCK TAG
  [ -S "$1" ] || { echo "run.sh: $1 is not a socket (is the daemon running?)" >&2; exit 2; }
  qemu+=(-chardev "socket,id=fs$n,path=$1" -device "vhost-user-fs-pci,chardev=fs$n,tag=$2")
  n=$((n + 1))
}
if [ -n "$sock" ] && [ "$dax_device" = 1 ]; then
  [ -S "$sock" ] || { echo "run.sh: $sock is not a socket (is the daemon running?)" >&2; exit 2; }
  # The device with a shared-memory window (docs/dax.md): virtio id 26 is
  # virtio-fs, its config space the 40-byte tag + queue count.
  qemu+=(-chardev "socket,id=fs$n,path=$sock"
    -device "vhost-user-test-device-pci,chardev=fs$n,virtio-id=26,num_vqs=2,vq_size=1024,config_size=40")
  n=$((n + 1))
elif [ -n "$sock" ]; then
  add_share "$sock" "$tag"
fi
for spec in "${extra_fs[@]}"; do
  IFS=, read -r fsock ftag fdir fopts <<<"$spec"
  if [ -z "$fsock" ] || [ -z "$ftag" ] || [ -z "$fdir" ]; then
    echo "run.sh: bad --fs $spec (want SOCK,TAG,DIR[,OPTS])" >&2
    exit 2
  fi
  add_share "$fsock" "$ftag"
  cmdline+=" evfs.mount=$ftag:$fdir${fopts:+:$fopts}"
done
if [ ${#cmdline} -gt 2000 ]; then
  echo "run.sh: kernel command line is ${#cmdline} bytes (x86 limit 2048): script too long" >&2
  exit 2
fi
qemu+=(-append "$cmdline")

if [ "$cmd" = shell ]; then
  # Interactive: the console on this terminal (Ctrl-A X quits QEMU).
  exec "${qemu[@]}" -serial mon:stdio "${qemu_extra[@]}"
fi

if [ -z "$log" ]; then
  log=$(mktemp "${TMPDIR:-/tmp}/evfs-console.XXXXXX")
fi
echo "run.sh: console log $log" >&2
start=$(date +%s.%N)
qemu_rc=0
timeout --kill-after=10 "$timeout" "${qemu[@]}" -serial "file:$log" "${qemu_extra[@]}" </dev/null || qemu_rc=$?
end=$(date +%s.%N)

rc=$(sed -n 's/^.*=====EVFS-END rc=\([0-9]*\)=====\r\{0,1\}$/\1/p' "$log" | tail -n 1)
uptime=$(sed -n 's/^EVFS-UPTIME \([0-9.]*\)\r\{0,1\}$/\1/p' "$log" | head -n 1)
wall=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.2f", b - a }')
echo "run.sh: guest uptime at BEGIN ${uptime:-?} s, QEMU wall time $wall s" >&2
# The guest's clock cannot be ahead of the host's: when it is, its TSC
# calibration went wrong (seen once in ~30 boots on a loaded host) and any
# time measured in the guest is off too.
if [ -n "$uptime" ] && awk -v u="$uptime" -v w="$wall" 'BEGIN { exit !(u > w) }'; then
  echo "run.sh: WARNING: the guest's clock ran fast (uptime $uptime s > $wall s): guest timings are wrong" >&2
fi
if [ "$qemu_rc" = 124 ] || [ "$qemu_rc" = 137 ]; then
  echo "run.sh: timeout after $timeout s (console log: $log)" >&2
  exit 124
fi
if [ -z "$rc" ]; then
  echo "run.sh: the guest ended without an end marker (QEMU rc $qemu_rc); console log: $log" >&2
  tail -n 20 "$log" >&2
  exit 125
fi
# The command's output (the end marker follows its last byte, on the same
# line if the output did not end in a newline).
awk '{ sub(/\r$/, "") }
     on && /=====EVFS-END rc=[0-9]+=====$/ { sub(/=====EVFS-END rc=[0-9]+=====$/, ""); if ($0 != "") printf "%s", $0; exit }
     on { print }
     /^=====EVFS-BEGIN=====$/ { on = 1 }' "$log"
exit "$rc"
