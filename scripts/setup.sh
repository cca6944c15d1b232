#!/usr/bin/env bash
# Installs what building, testing and benchmarking need on a fresh Debian 12
# machine (run as root). Safe to run again.
set -euo pipefail

need_apt=()
# curl: the API tests and scripts/fixtures.sh (wheels for the `usr` fixture
# tree, with unzip).
for pkg in erofs-utils attr acl fio squashfs-tools jq bc openssl curl unzip; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing ${need_apt[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null; then
  echo "setup: cargo is missing (install a Rust toolchain with rustup)" >&2
  exit 1
fi
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy rustfmt
