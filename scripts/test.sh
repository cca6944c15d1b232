#!/usr/bin/env bash
# The whole test suite: setup, the fixture images (unless EROFS_FIXTURES
# names another set), formatting, lints, unit and integration tests (the
# integration tests mount images with the kernel's EROFS driver, so run as
# root).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
if [ "$(id -u)" != 0 ]; then
  echo "test.sh: the integration tests mount filesystems; run as root" >&2
  exit 1
fi

if [ -z "${EROFS_FIXTURES:-}" ]; then
  echo "== fixture images (scripts/fixtures.sh)"
  scripts/fixtures.sh >/dev/null
fi
echo "== QEMU 11.1 for the DAX guest tests (scripts/sid-tools.sh qemu, cached)"
qemu_line=$(scripts/sid-tools.sh --quiet qemu | grep '^QEMU_SYSTEM_X86_64=')
export EROFS_DAX_QEMU=${qemu_line#QEMU_SYSTEM_X86_64=}
echo "== cargo fmt --check"
cargo fmt --check
echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --quiet -- -D warnings
echo "== cargo test"
cargo test --quiet 2>&1 | tee /tmp/erofs-virtiofsd-test.log
# The guest tests above boot Debian bookworm's 6.1 kernel; a newer guest
# speaks newer FUSE (and keeps DAX mappings differently): one walk and the
# DAX write test again with each suite's cloud kernel (vm-images/build.sh
# --suite; EROFS_GUEST_SUITES="" skips, "trixie sid" adds 6.12).
for suite in ${EROFS_GUEST_SUITES-sid}; do
  echo "== guest tests with Debian $suite's kernel (EVFS_KERNEL_SUITE=$suite)"
  EVFS_KERNEL_SUITE=$suite cargo test --quiet --test guest --test guest_dax -- \
    test_guest_walk_edge_lz4 test_guest_dax_write_through_window 2>&1 |
    tee -a /tmp/erofs-virtiofsd-test.log
done
echo "== fuzz every target briefly: dispatcher, API, image, decoders, vhost queue (scripts/fuzz.sh ${EROFS_FUZZ_SECONDS:-20})"
scripts/fuzz.sh "${EROFS_FUZZ_SECONDS:-20}"
