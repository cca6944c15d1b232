#!/usr/bin/env bash
# One metadata walk (`find MNT -ls` of a fresh mount, the image in the page
# cache) per variant per round, the variants alternating within each
# round; prints each variant's times, sorted, and their median.
#
#   scripts/bench-walk.sh IMAGE ROUNDS VARIANT...     (as root)
#
# A variant is `kernel` (mount(2) of the image file, file-backed) or
# `ours` (target/release/erofs-virtiofsd mount, or $OURS), optionally with
# mount options after a colon (`ours:--poll-us 0`), and optionally
# prefixed by modifiers, each ending in a slash:
#   pin/        the mount and the walk on CPU 0 (`taskset -c 0`)
#   wake_here/  /sys/module/fuse/parameters/wake_here set to Y for the walk
#               (a FUSE parameter some host kernels carry; restored after)
#   uring/      /sys/module/fuse/parameters/enable_uring set to Y (restored)
# Example (docs/benchmarks.md, "Where the requester runs"):
#   scripts/bench-walk.sh target/bench-fuse-d20/img/small-plain.erofs 5 \
#     kernel ours 'ours:--poll-us 0' 'wake_here/ours:--poll-us 0' \
#     'pin/ours:--poll-us 0' pin/kernel
set -euo pipefail
cd "$(dirname "$0")/.."

if [ $# -lt 3 ]; then
  sed -n '2,20p' "$0" >&2
  exit 2
fi
img=$(realpath "$1")
rounds=$2
shift 2
OURS=${OURS:-target/release/erofs-virtiofsd}
OURS=$(realpath "$OURS")
kmount=$PWD/scripts/mount-erofs-file.py
mnt=$(mktemp -d /tmp/bench-walk.XXXXXX)
params=/sys/module/fuse/parameters
saved_wake=$(cat "$params/wake_here" 2>/dev/null || true)
saved_uring=$(cat "$params/enable_uring" 2>/dev/null || true)

cleanup() {
  umount "$mnt" 2>/dev/null || true
  rmdir "$mnt" 2>/dev/null || true
  [ -z "$saved_wake" ] || echo "$saved_wake" >"$params/wake_here" 2>/dev/null || true
  [ -z "$saved_uring" ] || echo "$saved_uring" >"$params/enable_uring" 2>/dev/null || true
}
trap cleanup EXIT

set_param() { # NAME VALUE
  if [ ! -w "$params/$1" ]; then
    echo "bench-walk: this kernel has no FUSE parameter $1" >&2
    exit 1
  fi
  echo "$2" >"$params/$1"
}

kernel_mount() {
  python3 "$kmount" "$img" "$mnt"
}

# walk VARIANT: prints the walk's seconds.
walk() {
  local v=$1 pin=() wake=N uring=N
  while [[ $v == */* && ${v%%/*} != *:* ]]; do
    case ${v%%/*} in
      pin) pin=(taskset -c 0) ;;
      wake_here) wake=Y ;;
      uring) uring=Y ;;
      *) echo "bench-walk: unknown modifier in $1" >&2; exit 2 ;;
    esac
    v=${v#*/}
  done
  [ "$wake" = N ] || set_param wake_here Y
  [ "$uring" = N ] || set_param enable_uring Y
  cat "$img" >/dev/null
  case $v in
    kernel) kernel_mount ;;
    ours | ours:*)
      local args=()
      [ "$v" = ours ] || read -r -a args <<<"${v#ours:}"
      "${pin[@]}" "$OURS" mount "$img" "$mnt" "${args[@]}"
      ;;
    *) echo "bench-walk: unknown variant $1" >&2; exit 2 ;;
  esac
  local i
  for i in $(seq 100); do
    grep -q " $mnt " /proc/self/mountinfo && break
    sleep 0.05
  done
  local a b
  a=$EPOCHREALTIME
  "${pin[@]}" find "$mnt" -ls >/dev/null
  b=$EPOCHREALTIME
  umount "$mnt"
  [ "$wake" = N ] || echo "$saved_wake" >"$params/wake_here"
  [ "$uring" = N ] || echo "$saved_uring" >"$params/enable_uring"
  awk -v a="$a" -v b="$b" 'BEGIN { printf "%.3f\n", b - a }'
}

declare -A times
for r in $(seq "$rounds"); do
  for v in "$@"; do
    times[$v]+="$(walk "$v") "
  done
done
echo "# bench-walk $(date -u '+%Y-%m-%d %H:%M UTC'), $(basename "$img"), $rounds rounds, kernel $(uname -r), $(nproc) cores, commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
for v in "$@"; do
  # shellcheck disable=SC2086
  sorted=$(printf '%s\n' ${times[$v]} | sort -n | tr '\n' ' ')
  median=$(printf '%s\n' ${times[$v]} | sort -n | awk '{a[NR] = $1} END { print a[int((NR + 1) / 2)] }')
  printf '%-32s median %s s   (%s)\n' "$v" "$median" "$sorted"
done
