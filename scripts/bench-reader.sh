#!/usr/bin/env bash
# Reader benchmark (issue 2): our reader against the kernel's EROFS driver on
# the fixtures' `usr` tree (lookup+stat of every path; manifest). Runs setup,
# `cargo bench --bench reader` (release build) and prints the results table.
# Run as root: the benchmark mounts images. Knobs (passed through):
# BENCH_RUNS=N (runs per side), BENCH_ONLY=a|b, EROFS_FIXTURES=DIR.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
if [ "$(id -u)" != 0 ]; then
  echo "bench-reader.sh: the benchmark mounts EROFS images; run as root" >&2
  exit 1
fi

log=$(mktemp /tmp/erofs-bench-reader.XXXXXX.log)
echo "== $(date -u '+%Y-%m-%d %H:%M UTC'), kernel $(uname -r), $(nproc) cores"
echo "== cargo bench --bench reader (log: $log)"
cargo bench --bench reader 2>&1 | tee "$log"

echo
echo "== results ($(date -u +%F), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD -- src 2>/dev/null || echo ', src/ modified'))"
sed -n '/^--- results (markdown) ---$/,/^--- end results ---$/p' "$log" | sed '1d;$d'
