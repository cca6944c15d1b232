#!/usr/bin/env bash
# Work on corrupt images: our walk against the kernel's, side by side.
#
# Builds a deterministic tree of FILES small text files (FILES x ~2 KiB) and
# makes it into compressed all-fragments images with mkfs.erofs 1.9 from
# Debian sid (scripts/sid-tools.sh): every file's data then lives in the
# packed inode, in big pclusters (-C1048576) that many files share. Each
# mutant flips FLIPS bytes in the middle of each of the packed inode's
# pclusters (found with dump.erofs), so nearly every file's read fails.
# For the pristine image and each mutant it times, median of RUNS runs:
#
#   kernel    a fresh file-backed kernel mount (mount(2) of the image file,
#             as scripts/bench-fuse.sh does): open and read every regular
#             file (a Python walker; errors counted, not fatal)
#   ours      the same walk through a fresh `erofs-virtiofsd mount`
#   manifest  `erofs-virtiofsd image manifest` of the image (no mount)
#
# and prints a markdown table with the ratio ours/kernel and the number of
# files each read bit-exactly and failed (both walkers must agree: a file
# reads whole or fails with EIO). The ratio is the figure to watch: a
# corrupt image must cost us about what it costs the kernel (the decoded
# extent cache remembers failed decodes; before it did, each file decoded
# the shared megabyte pcluster again only to fail again). Run as root.
#
# Knobs: RUNS (3), FILES (4000), FLIPS (3), ALGS ("lzma lz4hc zstd":
# the -z of each image), OURS (target/release/erofs-virtiofsd), OURS_ARGS
# (extra `mount` options), BENCH_DIR (scratch, default
# target/bench-mutants), SID_DIR (see scripts/sid-tools.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-3}
FILES=${FILES:-4000}
FLIPS=${FLIPS:-3}
ALGS=${ALGS:-lzma lz4hc zstd}
OURS=${OURS:-target/release/erofs-virtiofsd}
OURS_ARGS=${OURS_ARGS:-}
W=${BENCH_DIR:-target/bench-mutants}
PY=/usr/bin/python3
kmount=$PWD/scripts/mount-erofs-file.py

[ "$(id -u)" = 0 ] || { echo "bench-mutants.sh: mounts filesystems; run as root" >&2; exit 1; }
[ -x "$OURS" ] || { echo "bench-mutants.sh: $OURS missing (cargo build --release)" >&2; exit 1; }
tools=$(scripts/sid-tools.sh --quiet erofs)
MKFS=$(sed -n 's/^MKFS_EROFS=//p' <<<"$tools")
DUMP=$(sed -n 's/^DUMP_EROFS=//p' <<<"$tools")
mkdir -p "$W/img" "$W/mnt"
W=$(cd "$W" && pwd)
log=$W/log
mkdir -p "$log"

is_mounted() { awk -v m="$1" '$5 == m {f = 1} END {exit !f}' /proc/self/mountinfo; }

# wait_mounted MNT PID: polls until MNT is a mount point (fails if PID dies
# or after 30 s).
wait_mounted() {
  local deadline=$((SECONDS + 30))
  while ! is_mounted "$1"; do
    kill -0 "$2" 2>/dev/null || return 1
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.005
  done
}

ours_pid=
cleanup() {
  for m in "$W/mnt/kernel" "$W/mnt/ours"; do
    is_mounted "$m" && { umount "$m" 2>/dev/null || umount -l "$m"; }
  done
  [ -z "$ours_pid" ] || kill -TERM "$ours_pid" 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ------------------------------------------------------------------ inputs

src=$W/src
if [ "$(cat "$W/src.stamp" 2>/dev/null)" != "files=$FILES" ]; then
  rm -rf "$src"
  "$PY" - "$src" "$FILES" <<'PY'
import os, random, sys
root, n = sys.argv[1], int(sys.argv[2])
rng = random.Random(20261207)
words = ["".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randint(2, 9)))
         for _ in range(3000)]
for i in range(n):
    d = f"{root}/d{i // 100:03}"
    os.makedirs(d, exist_ok=True)
    size = rng.randint(500, 3500)
    text = " ".join(rng.choices(words, k=size // 5))[:size]
    with open(f"{d}/f{i % 100:03}.txt", "w") as f:
        f.write(text)
PY
  echo "files=$FILES" >"$W/src.stamp"
fi

# The walker: opens and reads every regular file under MNT; prints
# "SECONDS OK FAILED" (a failed file: its open or a read failed).
walker=$W/walk.py
cat >"$walker" <<'PY'
import os, sys, time
t = time.monotonic()
ok = bad = 0
for d, _, names in os.walk(sys.argv[1]):
    for n in names:
        p = os.path.join(d, n)
        try:
            with open(p, "rb") as f:
                while f.read(1 << 20):
                    pass
            ok += 1
        except OSError:
            bad += 1
print(f"{time.monotonic() - t:.3f} {ok} {bad}")
PY

# mutate IMG OUT: OUT is IMG with FLIPS bytes flipped in the middle of each
# pcluster of the packed inode.
mutate() {
  local packed
  packed=$("$DUMP" -s "$1" | awk '/packed nid/ {print $NF}')
  "$DUMP" --nid="$packed" -e "$1" >"$log/extents.txt"
  "$PY" - "$1" "$2" "$FLIPS" "$log/extents.txt" <<'PY'
import re, shutil, sys
img, out, flips, ext = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
shutil.copy(img, out)
n = 0
with open(out, "r+b") as f:
    for line in open(ext):
        m = re.match(r"\s*\d+:\s*\d+\.\.\s*\d+\s*\|\s*\d+\s*:\s*(\d+)\.\.\s*(\d+)", line)
        if not m:
            continue
        start, end = int(m.group(1)), int(m.group(2))
        mid = (start + end) // 2
        for k in range(flips):
            pos = mid + k * 97
            if pos >= end:
                break
            f.seek(pos); b = f.read(1); f.seek(pos); f.write(bytes([b[0] ^ 0x5A]))
        n += 1
if n == 0:
    sys.exit("no packed-inode pcluster found")
PY
}

rows=()
for alg in $ALGS; do
  img=$W/img/$alg-allfrag-C1m.erofs
  if [ ! -s "$img" ] || [ "$W/src.stamp" -nt "$img" ]; then
    "$MKFS" -T 1700000000 -U 6a1d2b9c-0000-4000-8000-000000000001 "-z$alg" -C1048576 \
      -Eall-fragments "$img" "$src" >"$log/mkfs-$alg.log" 2>&1
  fi
  mutate "$img" "$W/img/$alg-allfrag-C1m-mutant.erofs"
  rows+=("$img" "$W/img/$alg-allfrag-C1m-mutant.erofs")
done

# ------------------------------------------------------------------ runs

median() { sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }

# walk_kernel IMG: one fresh mount's walk ("SECONDS OK FAILED").
walk_kernel() {
  local mnt=$W/mnt/kernel
  mkdir -p "$mnt"
  "$PY" "$kmount" "$1" "$mnt"
  "$PY" "$walker" "$mnt"
  umount "$mnt"
}

walk_ours() {
  local mnt=$W/mnt/ours
  mkdir -p "$mnt"
  # shellcheck disable=SC2086 # OURS_ARGS is a list of options
  "$OURS" mount --foreground $OURS_ARGS "$1" "$mnt" >>"$log/ours.log" 2>&1 &
  ours_pid=$!
  wait_mounted "$mnt" "$ours_pid" || { echo "bench-mutants.sh: our mount of $1 failed (see $log/ours.log)" >&2; exit 1; }
  "$PY" "$walker" "$mnt"
  kill -0 "$ours_pid" || { echo "bench-mutants.sh: the daemon died on $1" >&2; exit 1; }
  umount "$mnt"
  wait "$ours_pid" || true
  ours_pid=
}

manifest_ours() {
  local t0=$EPOCHREALTIME
  "$OURS" image manifest "$1" >/dev/null 2>>"$log/manifest.log" || true
  "$PY" -c "print(f'{$EPOCHREALTIME - $t0:.3f}')"
}

echo "| image | kernel s | ours s | ours/kernel | manifest s | files ok/failed (kernel) | (ours) |"
echo "|---|---|---|---|---|---|---|"
for img in "${rows[@]}"; do
  k=() o=() m=()
  for _ in $(seq "$RUNS"); do
    k+=("$(walk_kernel "$img")")
    o+=("$(walk_ours "$img")")
    m+=("$(manifest_ours "$img")")
  done
  kt=$(printf '%s\n' "${k[@]}" | cut -d' ' -f1 | median)
  ot=$(printf '%s\n' "${o[@]}" | cut -d' ' -f1 | median)
  mt=$(printf '%s\n' "${m[@]}" | median)
  kc=$(cut -d' ' -f2- <<<"${k[0]}" | tr ' ' /)
  oc=$(cut -d' ' -f2- <<<"${o[0]}" | tr ' ' /)
  ratio=$("$PY" -c "print(f'{$ot / max($kt, 0.001):.3g}')")
  echo "| $(basename "$img" .erofs) | $kt | $ot | $ratio | $mt | $kc | $oc |"
done
echo
echo "RUNS=$RUNS FILES=$FILES FLIPS=$FLIPS; mkfs: $("$MKFS" --version 2>&1 | head -n1); kernel $(uname -r); $(date -u +%F)"
