#!/usr/bin/env bash
# The soak runs of docs/benchmarks.md ("Soak"), each for SECS seconds
# (default 600), at once:
#  - 16 readers (READERS) of random ranges of seven images through FUSE
#    mounts, every byte compared with the kernel's mount (tests/fuse_soak.rs);
#  - random reads over 4 request queues of the vhost-user device through the
#    test frontend, compared with the kernel (tests/vhost_soak.rs), and 100
#    frontend disconnects and reconnects;
#  - a guest rewriting its memory-backed image while it is read
#    (tests/guest_memory.rs, edge_lz4).
# Each samples its daemons' resident memory, descriptors and threads every
# second and fails if one grows by more than 10% after the warm-up (the
# first quarter); the figures are printed. Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${SECS:-600}
READERS=${READERS:-16}
export EROFS_SOAK_SECS=$SECS EROFS_FUSE_SOAK_SECS=$SECS EROFS_FUSE_SOAK_READERS=$READERS
scripts/fixtures.sh >/dev/null
cargo test --quiet --no-run --test fuse_soak --test vhost_soak --test guest_memory 2>/dev/null
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
echo "== soak: $SECS s each, at once ($(date -u +%FT%TZ), $(nproc) CPUs, commit $(git rev-parse --short HEAD))"
cargo test --quiet --test fuse_soak -- --nocapture >"$out/fuse" 2>&1 & p1=$!
cargo test --quiet --test vhost_soak -- --nocapture --test-threads 2 >"$out/vhost" 2>&1 & p2=$!
cargo test --quiet --test guest_memory -- --nocapture --exact test_guest_image_concurrent_rewrite_edge_lz4 >"$out/gmem" 2>&1 & p3=$!
rc=0
for p in $p1 $p2 $p3; do wait "$p" || rc=1; done
for f in fuse vhost gmem; do
  grep -E 'samples over|soak:|reconnects|rewrites in|test result|panicked|grew by' "$out/$f" || true
done
if [ "$rc" != 0 ]; then
  echo "== a soak FAILED; full output:" >&2
  cat "$out"/* >&2
fi
exit "$rc"
