#!/usr/bin/env bash
# Installs what chinit's builds, tests and demo need, on Debian or Ubuntu with Rust (rustup) present.
# Idempotent: installs only what is missing. Needs root for apt-get (sudo is used when not root).
set -euo pipefail

say() { printf 'setup: %s\n' "$*" >&2; }
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

# command:package pairs, then packages without a command to probe.
missing=()
for pair in qemu-system-x86_64:qemu-system-x86 mkfs.ext4:e2fsprogs debugfs:e2fsprogs busybox:busybox-static \
            python3:python3 ip:iproute2 cpio:cpio zstd:zstd xz:xz-utils make:make cc:build-essential \
            flex:flex bison:bison bc:bc depmod:kmod dpkg-deb:dpkg \
            qemu-system-aarch64:qemu-system-arm aarch64-linux-gnu-gcc:gcc-aarch64-linux-gnu \
            curl:curl readelf:binutils umoci:umoci skopeo:skopeo; do
  cmd=${pair%%:*} pkg=${pair#*:}
  command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
done
for pkg in linux-source-6.1 libelf-dev libssl-dev; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
# aarch64 guests: busybox-static:arm64 for their workloads and exec API tests (the tests fetch it
# with `apt-get download`, which needs the architecture known to dpkg).
need_update=""
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
  say "adding the arm64 architecture to dpkg (for apt-get download busybox-static:arm64)"
  $SUDO dpkg --add-architecture arm64
  need_update=1
fi
if [ ${#missing[@]} -gt 0 ] || [ -n "$need_update" ]; then
  [ ${#missing[@]} -gt 0 ] && say "installing ${missing[*]}"
  $SUDO apt-get update -qq
  [ ${#missing[@]} -eq 0 ] || DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  say "cargo not found: install Rust with rustup (https://rustup.rs), then run this again"
  exit 1
fi
if ! command -v rustup >/dev/null 2>&1; then
  say "rustup not found: chinit needs the x86_64-unknown-linux-musl target, which rustup installs; install Rust with rustup (https://rustup.rs)"
  exit 1
fi
for target in x86_64-unknown-linux-musl aarch64-unknown-linux-musl; do
  if ! rustup target list --installed | grep -qx "$target"; then
    say "adding the $target target"
    rustup target add "$target"
  fi
done
for component in rustfmt clippy; do
  if ! rustup component list --installed 2>/dev/null | grep -q "^$component"; then
    say "adding the $component component"
    rustup component add "$component"
  fi
done
if ! command -v vhost-device-vsock >/dev/null 2>&1 && [ ! -x "$HOME/.cargo/bin/vhost-device-vsock" ]; then
  say "installing vhost-device-vsock (QEMU's vsock with cloud-hypervisor's hybrid protocol; a few minutes)"
  cargo install --locked --quiet vhost-device-vsock
fi
say "ok"
