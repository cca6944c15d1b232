#!/usr/bin/env bash
# Fuzzes the FUSE request decoder and dispatcher (fuzz/, target `dispatch`)
# for SECONDS (default 20). Installs cargo-fuzz if missing. Uses the nightly
# toolchain when rustup has one (AddressSanitizer on); otherwise stable with
# RUSTC_BOOTSTRAP=1 and no sanitizer (panics and protocol violations are
# still caught). Set EROFS_FUZZ_STABLE=1 to force the stable route.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs=${1:-20}

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz.sh: installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

if [ -z "${EROFS_FUZZ_STABLE:-}" ] && rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  echo "fuzz.sh: nightly, AddressSanitizer, ${secs} s"
  exec cargo +nightly fuzz run dispatch -- -max_total_time="$secs"
fi
echo "fuzz.sh: stable (RUSTC_BOOTSTRAP=1), no sanitizer, ${secs} s"
RUSTC_BOOTSTRAP=1 exec cargo fuzz run --sanitizer none dispatch -- -max_total_time="$secs"
