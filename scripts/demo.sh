#!/usr/bin/env bash
# The main job: set up, build chinit, the guest kernel and rootfs_fast.ext4, boot one microVM with
# chinit as PID 1 and print where every millisecond went (`host-probe run`).
# Extra arguments go to `host-probe run`: `scripts/demo.sh --json`, `--timeline boot.svg`, `-v`.
# The first run builds the guest kernel into ~/.cache/chinit (about 5 minutes on 2 cores); later
# runs reuse it and take seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"

say() { printf 'demo: %s\n' "$*" >&2; }
target="${CARGO_TARGET_DIR:-target}"
musl="$target/x86_64-unknown-linux-musl/release"
bin="$target/release"

say "building chinit (static, musl), rootfs-builder and host-probe"
cargo build --quiet --release --target x86_64-unknown-linux-musl -p chinit
cargo build --quiet --release -p rootfs-builder -p host-probe

say "guest kernel (cached in ~/.cache/chinit; built only when missing)"
kernel_dir=$("$bin/rootfs-builder" kernel --print-path)

say "rootfs_fast.ext4 (chinit as /sbin/init)"
ROOTFS_BUILDER_QUIET=1 "$bin/rootfs-builder" --init "$musl/chinit" --out rootfs_fast.ext4

# The TAP needs CAP_NET_ADMIN.
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
say "booting: host-probe run --kernel $kernel_dir/bzImage --rootfs rootfs_fast.ext4 $*"
exec $SUDO "$bin/host-probe" run --kernel "$kernel_dir/bzImage" --rootfs rootfs_fast.ext4 "$@"
