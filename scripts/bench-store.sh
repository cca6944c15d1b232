#!/usr/bin/env bash
# Content-store benchmarks (issue 15), run as root:
#
#  1. hot sequential read (dd bs=1M) of a BIG_MIB MiB file: the kernel's
#     EROFS mount (file-backed mount(2)) vs our `mount` with the file in the
#     content store (FUSE passthrough on the entry) vs our `mount` without
#     a store; median of RUNS runs, each with a fresh open, the data hot;
#  2. memory of two mounts of a pair of images (trees sharing SHARED_PCT%
#     of their files, one uncompressed, one lz4hc): every file of both read
#     once, then caches dropped and every file read again; host memory
#     growth (/proc/meminfo Cached, which includes Shmem, plus the daemons'
#     RSS) without a domain (unshared) vs with one domain and the store on
#     /dev/shm, beside the ideal (unique content once).
#
# Knobs: RUNS (5), BIG_MIB (384), STORE (the store directory: default a
# new directory under /dev/shm; `default` for the daemon's own default,
# /dev/shm/erofs-virtiofsd.UID, which a root daemon creates as a tmpfs
# mounted huge=within_size; or any directory, e.g. on such a tmpfs),
# PAIR (1: also the memory rows), PAIR_FILES (400 per tree), SHARED_PCT
# (40), OURS (target/release/erofs-virtiofsd), MKFS (target/sid/bin/
# mkfs.erofs, 1.9: `scripts/sid-tools.sh erofs`), BENCH_DIR
# (target/bench-store).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-5}
BIG_MIB=${BIG_MIB:-384}
PAIR_FILES=${PAIR_FILES:-400}
SHARED_PCT=${SHARED_PCT:-40}
OURS=${OURS:-target/release/erofs-virtiofsd}
MKFS=${MKFS:-target/sid/bin/mkfs.erofs}
BENCH_DIR=${BENCH_DIR:-target/bench-store}
PY=/usr/bin/python3
kmount=$PWD/scripts/mount-erofs-file.py
[ "$(id -u)" = 0 ] || { echo "bench-store.sh: run as root" >&2; exit 1; }
"$MKFS" --version | grep -q ' 1\.9' || { echo "need mkfs.erofs 1.9 at $MKFS" >&2; exit 1; }
mkdir -p "$BENCH_DIR"
B=$(cd "$BENCH_DIR" && pwd)
STORE=${STORE:-/dev/shm/bench-store.$$}
[ "$STORE" = default ] && STORE=/dev/shm/erofs-virtiofsd.$(id -u)
PAIR=${PAIR:-1}
# Empties the store; a mount point (the default store's own tmpfs) stays.
clear_store() {
  if mountpoint -q "$STORE"; then
    find "$STORE" -mindepth 1 -delete
  else
    rm -rf "$STORE"
  fi
}
trap 'for m in "$B"/mnt-*; do umount "$m" 2>/dev/null || true; done; clear_store || true' EXIT

kernel_mount() {
  "$PY" "$kmount" "$1" "$2"
}
wait_mounted() {
  local deadline=$((SECONDS + 30))
  until mountpoint -q "$1"; do
    [ "$SECONDS" -lt "$deadline" ] || { echo "$1 did not mount" >&2; exit 1; }
    sleep 0.01
  done
}
loads() {
  "$OURS" store stat --json --store "$STORE" 2>/dev/null |
    "$PY" -c 'import json,sys; print(sum(json.loads(l)["loads"] for l in sys.stdin))'
}
wait_loads() {
  local deadline=$((SECONDS + 300))
  until [ "$(loads)" -ge "$1" ]; do
    [ "$SECONDS" -lt "$deadline" ] || { echo "loads stuck at $(loads) < $1" >&2; exit 1; }
    sleep 0.1
  done
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
secs() { local t0 t1; t0=$(date +%s.%N); "$@" >/dev/null 2>&1; t1=$(date +%s.%N); echo "$t1 - $t0" | bc; }

# ---- 1. hot sequential read ----
big=$B/big
if [ ! -f "$big/file" ]; then
  mkdir -p "$big"
  "$PY" - "$big/file" "$BIG_MIB" <<'PY'
import random, sys
r = random.Random(384)
with open(sys.argv[1], "wb") as f:
    for i in range(int(sys.argv[2])):
        f.write(r.randbytes(1 << 19) + ((b"text %d " % i) * (1 << 16))[: 1 << 19])
PY
  truncate -s $((BIG_MIB << 20)) "$big/file"
fi
img=$B/big.erofs
[ -f "$img" ] || "$MKFS" --quiet --xattr-inode-digest "$img" "$big"
seq_row() {
  local name=$1 mnt=$2 t=()
  cat "$mnt/file" >/dev/null # hot
  for _ in $(seq "$RUNS"); do
    t+=("$(secs dd if="$mnt/file" of=/dev/null bs=1M)")
  done
  printf '%s\n' "${t[@]}" | median
}
mkdir -p "$B/mnt-k" "$B/mnt-s" "$B/mnt-p"
kernel_mount "$img" "$B/mnt-k"
k=$(seq_row kernel "$B/mnt-k")
umount "$B/mnt-k"
"$OURS" mount --foreground "$img" "$B/mnt-p" 2>"$B/plain.log" &
wait_mounted "$B/mnt-p"
p=$(seq_row plain "$B/mnt-p")
umount "$B/mnt-p"; wait
clear_store
"$OURS" mount --foreground --domain bench --store "$STORE" "$img" "$B/mnt-s" 2>"$B/store.log" &
wait_mounted "$B/mnt-s"
cat "$B/mnt-s/file" >/dev/null
wait_loads 1
s=$(seq_row store "$B/mnt-s")
umount "$B/mnt-s"; wait
grep -o 'content store: .*' "$B/store.log" | tail -1 >&2
echo "## hot sequential read of a $BIG_MIB MiB file (seconds, median of $RUNS; $(date -u +%FT%TZ), $(uname -r))"
echo "| kernel EROFS | ours, no store | ours, store + passthrough | kernel/ours-store |"
echo "|---|---|---|---|"
echo "| $k | $p | $s | $(echo "scale=2; $k / $s" | bc) |"

# ---- 2. memory of a pair ----
[ "$PAIR" = 1 ] || exit 0
ta=$B/pair-a tb=$B/pair-b
if [ ! -d "$ta" ]; then
  "$PY" - "$ta" "$tb" "$PAIR_FILES" "$SHARED_PCT" <<'PY'
import os, random, sys
ta, tb, n, pct = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
r = random.Random(7)
def put(root, name, data):
    p = os.path.join(root, name); os.makedirs(os.path.dirname(p), exist_ok=True)
    open(p, "wb").write(data)
for i in range(n):
    size = int(r.lognormvariate(10, 1.5)) + 1
    data = r.randbytes(size // 2) + b"x" * (size - size // 2)
    put(ta, "d%d/f%d" % (i % 17, i), data)
    if i * 100 < n * pct:
        put(tb, "e%d/g%d" % (i % 13, i), data)
    else:
        put(tb, "e%d/g%d" % (i % 13, i), r.randbytes(size // 2) + b"y" * (size - size // 2))
PY
fi
ia=$B/pair-a.erofs ib=$B/pair-b.erofs
[ -f "$ia" ] || "$MKFS" --quiet --xattr-inode-digest "$ia" "$ta"
[ -f "$ib" ] || "$MKFS" --quiet -zlz4hc --xattr-inode-digest "$ib" "$tb"
ideal=$("$PY" - "$ta" "$tb" <<'PY'
import hashlib, os, sys
seen, total, unique = set(), 0, 0
for root in sys.argv[1:]:
    for d, _, fs in os.walk(root):
        for f in fs:
            b = open(os.path.join(d, f), "rb").read()
            total += len(b)
            h = hashlib.sha256(b).digest()
            if h not in seen:
                seen.add(h); unique += len(b)
print(total, unique)
PY
)
# Resident bytes, counted per file with cachestat(2) (Linux 6.5+), so other
# activity on the machine does not count: the page cache of the two image
# files, of every file of the two mounts (the FUSE inodes' own cache; a
# passthrough file has none, its reads use the entry's), and the store's
# entries (shmem).
resident() {
  "$PY" - "$@" <<'PY'
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
class Range(ctypes.Structure): _fields_ = [("off", ctypes.c_uint64), ("len", ctypes.c_uint64)]
class Stat(ctypes.Structure): _fields_ = [(n, ctypes.c_uint64) for n in ("cache", "dirty", "writeback", "evicted", "recently_evicted")]
def pages(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        st = Stat()
        if libc.syscall(451, fd, ctypes.byref(Range(0, 0)), ctypes.byref(st), 0) != 0:
            sys.exit("cachestat %s: %s" % (path, os.strerror(ctypes.get_errno())))
        return st.cache
    finally:
        os.close(fd)
def files(root):
    if os.path.isfile(root):
        yield root; return
    for d, _, fs in os.walk(root):
        for f in fs:
            yield os.path.join(d, f)
out = []
for root in sys.argv[1:]:
    out.append(sum(pages(f) for f in files(root)) * 4096 >> 20 if os.path.exists(root) else 0)
print(*out)
PY
}
rss() { local t=0 p; for p in $(pgrep -f "$OURS mount" || true); do t=$((t + $(awk '/VmRSS/ {print $2}' /proc/$p/status 2>/dev/null || echo 0))); done; echo $((t >> 10)); }
readall() { find "$1" -type f -exec cat {} + >/dev/null; }
pair_row() {
  local mode=$1 args=() img fuse store r1
  [ "$mode" = store ] && args=(--domain pair --store "$STORE")
  clear_store
  sync; echo 3 >/proc/sys/vm/drop_caches
  "$OURS" mount --foreground "${args[@]}" "$ia" "$B/mnt-a" 2>"$B/pair-$mode-a.log" &
  "$OURS" mount --foreground "${args[@]}" "$ib" "$B/mnt-b" 2>"$B/pair-$mode-b.log" &
  wait_mounted "$B/mnt-a"; wait_mounted "$B/mnt-b"
  readall "$B/mnt-a"; readall "$B/mnt-b"
  if [ "$mode" = store ]; then
    # Loads start at reads: a file whose content the other mount was
    # loading at that moment is checked at its next read.
    local want tries=0
    want=$(find "$ta" "$tb" -type f -size +0 -exec sha256sum {} + | awk '{print $1}' | sort -u | wc -l)
    until [ "$(loads)" -ge "$want" ] || [ $tries -ge 50 ]; do
      sleep 0.2; readall "$B/mnt-a"; readall "$B/mnt-b"; tries=$((tries + 1))
    done
    [ "$(loads)" -ge "$want" ] || { echo "loads stuck at $(loads) < $want" >&2; exit 1; }
  fi
  # Steady state: what page cache can be dropped is, then everything is
  # read again (twice: the second time from verified entries).
  echo 3 >/proc/sys/vm/drop_caches
  readall "$B/mnt-a"; readall "$B/mnt-b"
  readall "$B/mnt-a"; readall "$B/mnt-b"
  read -r img fuse store < <(resident "$ia" "$ib" "$B/mnt-a" "$B/mnt-b" "$STORE" | awk '{print $1 + $2, $3 + $4, $5}')
  r1=$(rss)
  umount "$B/mnt-a"; umount "$B/mnt-b"; wait
  echo "$img $fuse $store $r1"
}
mkdir -p "$B/mnt-a" "$B/mnt-b"
read -r u_i u_f u_s u_r < <(pair_row plain)
read -r s_i s_f s_s s_r < <(pair_row store)
read -r total unique <<<"$ideal"
echo
echo "## two mounts of a pair ($PAIR_FILES files per tree, $SHARED_PCT% shared; a plain, b lz4hc), MiB resident (cachestat per file)"
echo "| | images' page cache | mounts' FUSE page cache | store entries (shmem) | daemons' RSS | total |"
echo "|---|---|---|---|---|---|"
echo "| unshared | $u_i | $u_f | $u_s | $u_r | $((u_i + u_f + u_s + u_r)) |"
echo "| store on /dev/shm | $s_i | $s_f | $s_s | $s_r | $((s_i + s_f + s_s + s_r)) |"
echo "| content of both trees / unique content | | | | | $((total >> 20)) / $((unique >> 20)) |"
"$PY" -c "u=$u_i+$u_f+$u_s+$u_r; s=$s_i+$s_f+$s_s+$s_r; t=$total; q=$unique; print('saving: %.1f%% (ideal by whole-file identity: %.1f%%)' % (100*(u-s)/u, 100*(t-q)/t))"
