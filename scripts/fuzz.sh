#!/usr/bin/env bash
# Fuzzes for SECONDS each (default 20) the targets named (default all):
#   dispatch            the FUSE request decoder and dispatcher
#   api                 the HTTP API's router and mount-config parser
#   erofs_image         arbitrary bytes as an image: open, walk, read
#   decompress_lz4, decompress_lzma, decompress_deflate, decompress_zstd
#                       one pcluster through each decoder
#   vhost_queue         descriptor chains over guest memory through the
#                       vhost-user backend
# Seeds: fuzz/corpus/TARGET (docs/fuzzing.md says how they were made).
# Usage: scripts/fuzz.sh [SECONDS] [TARGET...]
# Installs cargo-fuzz if missing. Uses the nightly toolchain when rustup has
# one (AddressSanitizer on); otherwise stable with RUSTC_BOOTSTRAP=1 and no
# sanitizer (panics and protocol violations are still caught). Set
# EROFS_FUZZ_STABLE=1 to force the stable route.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs=${1:-20}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(dispatch api erofs_image decompress_lz4 decompress_lzma decompress_deflate
    decompress_zstd vhost_queue)
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz.sh: installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

for t in "${targets[@]}"; do
  if [ -z "${EROFS_FUZZ_STABLE:-}" ] && rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    echo "fuzz.sh: $t: nightly, AddressSanitizer, ${secs} s"
    cargo +nightly fuzz run "$t" -- -max_total_time="$secs"
  else
    echo "fuzz.sh: $t: stable (RUSTC_BOOTSTRAP=1), no sanitizer, ${secs} s"
    RUSTC_BOOTSTRAP=1 cargo fuzz run --sanitizer none "$t" -- -max_total_time="$secs"
  fi
done
