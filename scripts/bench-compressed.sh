#!/usr/bin/env bash
# Compressed-read benchmark (issue 3): sequential and random 4 KiB reads of
# compressed files through our library (and `image cat`) against the
# kernel's EROFS driver (pread, cat, fio) on the same images, per algorithm,
# with hot caches, a fresh decoder and dropped caches. Runs setup,
# `cargo bench --bench compressed` (release build) and prints the tables.
# Run as root: it mounts images and drops caches. Knobs (passed through):
# BENCH_RUNS, BENCH_ONLY, BENCH_PATTERNS, BENCH_STATES, BENCH_SEQ_KIB,
# BENCH_RA_KB, BENCH_NO_PROCESS=1, EROFS_FIXTURES (see benches/compressed.rs).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
if [ "$(id -u)" != 0 ]; then
  echo "bench-compressed.sh: the benchmark mounts EROFS images; run as root" >&2
  exit 1
fi

log=$(mktemp /tmp/erofs-bench-compressed.XXXXXX.log)
echo "== $(date -u '+%Y-%m-%d %H:%M UTC'), kernel $(uname -r), $(nproc) cores"
echo "== cargo bench --bench compressed (log: $log)"
cargo bench --bench compressed 2>&1 | tee "$log"

echo
echo "== results ($(date -u +%F), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD -- src 2>/dev/null || echo ', src/ modified'))"
sed -n '/^--- results (markdown) ---$/,/^--- end results ---$/p' "$log" | sed '1d;$d'
