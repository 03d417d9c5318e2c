#!/usr/bin/env bash
# Sets everything up, then runs every test: unit tests, chinit in fresh namespaces, and VM boots under
# QEMU (KVM when the host has hardware KVM, TCG emulation otherwise). The first run builds the guest
# kernel into ~/.cache/chinit (about 5 minutes on 2 cores); later runs reuse it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release --target x86_64-unknown-linux-musl -p chinit
cargo test --workspace --no-fail-fast "$@"
