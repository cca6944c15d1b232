#!/usr/bin/env bash
# Direct I/O benchmark: read a whole large file through our FUSE mount of an
# image, buffered vs `--direct-io --cache never`, and report the growth of
# the host page cache (the image file's resident pages, util-linux
# `fincore`, and /proc/meminfo Cached) and the throughput, side by side.
# Run as root.
#
#   scripts/bench-direct.sh [IMAGE]    (default: a 384 MiB uncompressed image
#                                      made from deterministic data)
# Knobs: RUNS (3), BIG_MIB (384), BENCH_DIR (target/bench-direct).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${RUNS:-3}
big_mib=${BIG_MIB:-384}
dir=${BENCH_DIR:-$PWD/target/bench-direct}
bin=$PWD/target/release/erofs-virtiofsd
[ "$(id -u)" = 0 ] || { echo "bench-direct.sh: run as root" >&2; exit 1; }
scripts/setup.sh >/dev/null
cargo build --release --quiet
mkdir -p "$dir/mnt"

image=${1:-}
if [ -z "$image" ]; then
  image=$dir/big-plain.erofs
  if [ ! -f "$image" ]; then
    mkdir -p "$dir/tree"
    # Deterministic, incompressible-looking data: AES-CTR keystream of zeros.
    head -c $((big_mib << 20)) /dev/zero |
      openssl enc -aes-128-ctr -nosalt -K 00 -iv 00 2>/dev/null >"$dir/tree/big"
    mkfs.erofs --quiet -T0 "$image" "$dir/tree"
  fi
fi
mnt=$dir/mnt
cleanup() { mountpoint -q "$mnt" && umount "$mnt"; true; }
trap cleanup EXIT

cached_kib() { awk '/^Cached:/ {print $2}' /proc/meminfo; }
resident() { fincore --bytes --noheadings --output RES "$image"; }
evict() {
  sync "$image"
  python3 -c "import os,sys; fd=os.open(sys.argv[1], os.O_RDONLY); os.posix_fadvise(fd,0,0,os.POSIX_FADV_DONTNEED)" "$image"
}
now() { date +%s.%N; }

size=$(stat -c %s "$image")
echo "== $(date -u '+%Y-%m-%d %H:%M UTC'), kernel $(uname -r), $(nproc) cores, commit $(git rev-parse --short HEAD)"
echo "== image $image ($size bytes); $runs runs per mode, alternating; image evicted before each run"
declare -A secs grow cgrow
for mode in buffered direct; do secs[$mode]=""; grow[$mode]=""; cgrow[$mode]=""; done
for _ in $(seq "$runs"); do
  for mode in buffered direct; do
    args=()
    [ "$mode" = direct ] && args=(--direct-io --cache never)
    evict
    "$bin" mount "${args[@]}" "$image" "$mnt"
    f=$(find "$mnt" -type f -size +1M | head -1)
    r0=$(resident); c0=$(cached_kib); t0=$(now)
    dd if="$f" of=/dev/null bs=1M status=none
    t1=$(now); r1=$(resident); c1=$(cached_kib)
    umount "$mnt"
    secs[$mode]+="$(echo "$t1 - $t0" | bc) "
    grow[$mode]+="$((r1 - r0)) "
    cgrow[$mode]+="$(((c1 - c0) * 1024)) "
  done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo
echo "| mode | read time, median (s) | MiB/s | image pages in host page cache after the read (median) | % of image | /proc/meminfo Cached growth (median) |"
echo "|---|--:|--:|--:|--:|--:|"
for mode in buffered direct; do
  s=$(echo "${secs[$mode]}" | median)
  g=$(echo "${grow[$mode]}" | median)
  c=$(echo "${cgrow[$mode]}" | median)
  mibs=$(echo "scale=0; $size / 1048576 / $s" | bc)
  pct=$(echo "scale=2; 100 * $g / $size" | bc)
  label=$mode
  [ "$mode" = direct ] && label="--direct-io --cache never"
  echo "| $label | $s | $mibs | $g | $pct | $c |"
done
echo
echo "Commands: \`$bin mount [--direct-io --cache never] IMAGE MNT\`; \`dd if=MNT/FILE of=/dev/null bs=1M\`; \`fincore --bytes IMAGE\` before/after; eviction with fsync + POSIX_FADV_DONTNEED."
echo "Cached growth also counts the FUSE mount's own page cache of the file (buffered mode keeps it)."
