#!/usr/bin/env bash
# Sets everything up, checks formatting and lints (rustfmt, clippy -D warnings), then runs every test:
# unit tests, chinit in fresh namespaces, and VM boots under
# QEMU (KVM when the host has hardware KVM, TCG emulation otherwise). The first run builds the guest
# kernel into ~/.cache/chinit (about 5 minutes on 2 cores); later runs reuse it.
# Extra arguments go to `cargo test` (`scripts/test.sh --test vm_e2e`). docs/testing.md lists the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
# The VMMs no registry packages (cloud-hypervisor, Firecracker, StratoVirt): a test finds each by
# its variable ($CLOUD_HYPERVISOR, ...), then on PATH, then in ../shared/vmm beside the checkout.
if [ -d ../shared/vmm ]; then
  export PATH="$PATH:$(cd ../shared/vmm && pwd)"
fi

say() { printf 'test: %s\n' "$*" >&2; }
target="${CARGO_TARGET_DIR:-target}"
start=$SECONDS

# Runs on the simulated KVM host (tests/src/l1.rs) that the emulator voided (L1's own kernel died)
# and that ran again: counted, with why, at the end whatever the outcome.
repeats="$target/l1-repeats.log"
rm -f "$repeats"
l1_summary() {
  if [ -s "$repeats" ]; then
    say "simulated KVM host: $(wc -l <"$repeats") L1 run(s) repeated, the emulator's failure each time:"
    sed 's/^/test:   /' "$repeats" >&2
  else
    say "simulated KVM host: no L1 run repeated"
  fi
}
trap l1_summary EXIT

say "cargo fmt --all --check; cargo clippy --workspace --all-targets -- -D warnings"
cargo fmt --all --check
cargo clippy --workspace --all-targets --quiet -- -D warnings

say "building chinit (static, musl) and rootfs-builder"
cargo build --release --target x86_64-unknown-linux-musl -p chinit
cargo build --release -p rootfs-builder

say "guest kernels: the tiny kernel (cached in ~/.cache/chinit, built only when missing) and Debian's cloud kernel"
"$target/release/rootfs-builder" kernel --print-path
if distro=$("$target/release/rootfs-builder" kernel --distro debian-cloud); then
  printf '%s\n' "$distro"
  # rootfs-builder/tests/boot.rs boots an extracted kernel package: this one (<dir>/boot/vmlinuz-*).
  vmlinuz=$(printf '%s\n' "$distro" | sed -n 's/^vmlinuz=//p')
  if [ -n "$vmlinuz" ]; then
    export ROOTFS_BUILDER_VM_KERNEL_PKG="${ROOTFS_BUILDER_VM_KERNEL_PKG:-${vmlinuz%/boot/*}}"
  fi
else
  say "Debian's cloud kernel could not be fetched with apt: the tests that boot it will skip"
fi

say "cargo test --workspace"
cargo test --workspace --no-fail-fast "$@"
say "all tests passed in $((SECONDS - start)) s"
