#!/usr/bin/env bash
# A container image against the same files as a plain tarball, side by side (docs/benchmarks.md,
# "A container image as the guest"): a three-layer OCI image (~290 MiB, made offline with umoci from
# this host's /usr/lib/gcc, /usr/lib/python3.11, /usr/libexec, /usr/lib/python3 and busybox) and a
# tarball of exactly its files.
#
#   build: `rootfs-builder --image oci --out a.ext4` against `rootfs-builder --base files.tar --out b.ext4`
#   boot:  `host-probe run --rootfs a.ext4` (the image's Entrypoint /bench.sh) against
#          `host-probe run --rootfs b.ext4 --cmdline-extra chinit.exec=/bench.sh`, to the workload's
#          first act: /bench.sh writes 0x90 to port 0x80 (/dev/port), which host-probe stamps on
#          arrival like chinit's own marks (`host.marks[]`, host clock since the VMM's spawn).
#
# A and B alternate (A B A B ...), N times each (default 5; first argument). Needs root (the TAP),
# umoci, jq, python3, and the release builds (cargo build --release -p rootfs-builder -p host-probe;
# chinit for musl). Extra arguments after N go to host-probe run (e.g. --vmm qemu).
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-5}"
shift || true
target="${CARGO_TARGET_DIR:-target}"
bin="$target/release"
chinit="$target/x86_64-unknown-linux-musl/release/chinit"
for tool in umoci jq python3; do
    command -v "$tool" >/dev/null || { echo "bench-image: $tool is missing (scripts/setup.sh installs umoci; apt-get install jq python3)" >&2; exit 3; }
done
for b in "$bin/rootfs-builder" "$bin/host-probe" "$chinit"; do
    [ -x "$b" ] || { echo "bench-image: $b is missing: cargo build --release -p rootfs-builder -p host-probe; cargo build --release --target x86_64-unknown-linux-musl -p chinit" >&2; exit 3; }
done
kernel="$("$bin/rootfs-builder" kernel --print-path)/bzImage"
work=$(mktemp -d "${TMPDIR:-/tmp}/bench-image.XXXXXX")
trap 'rm -rf "$work"' EXIT
say() { printf 'bench-image: %s\n' "$*" >&2; }

# The image: two layers of host directories, one of busybox, /etc and the workload.
top="$work/top"
mkdir -p "$top/bin" "$top/etc"
cp "$(command -v busybox)" "$top/bin/busybox"
ln -s busybox "$top/bin/sh"
ln -s busybox "$top/bin/dd"
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$top/etc/passwd"
printf 'root:x:0:\n' >"$top/etc/group"
# 0x90 (octal 220) to port 0x80: the first thing the workload does.
printf '#!/bin/sh\nprintf "\\220" | dd of=/dev/port bs=1 seek=128 2>/dev/null\necho bench workload: first output\n' >"$top/bench.sh"
chmod 755 "$top/bench.sh"
tar -C / --numeric-owner -cf "$work/l1.tar" usr/lib/gcc usr/lib/python3.11
tar -C / --numeric-owner -cf "$work/l2.tar" usr/libexec usr/lib/python3
tar -C "$top" --numeric-owner --owner=0 --group=0 -cf "$work/l3.tar" .
oci="$work/oci"
umoci init --layout "$oci"
umoci new --image "$oci:bench"
for l in l1 l2 l3; do
    umoci raw add-layer --image "$oci:bench" "$work/$l.tar"
done
umoci config --image "$oci:bench" --config.entrypoint /bench.sh
# The same files as one tarball (the layers only add files, so together they are the image).
tar -C / --numeric-owner -cf "$work/files.tar" usr/lib/gcc usr/lib/python3.11 usr/libexec usr/lib/python3 -C "$top" --owner=0 --group=0 .
rm -f "$work"/l?.tar
say "image: $(du -sh "$oci/blobs" | cut -f1) of gzip layers, $(du -sh "$work/files.tar" | cut -f1) of files"

ms_since() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }
build() { # side out: the build's milliseconds
    local start
    start=$(date +%s%N)
    if [ "$1" = A ]; then
        ROOTFS_BUILDER_QUIET=1 "$bin/rootfs-builder" --init "$chinit" --image "$oci" --out "$2"
    else
        ROOTFS_BUILDER_QUIET=1 "$bin/rootfs-builder" --init "$chinit" --base "$work/files.tar" --out "$2"
    fi
    ms_since "$start"
}
boot() { # side image: "ready_ms first_output_ms" on the host clock since the VMM's spawn
    local extra=()
    [ "$1" = B ] && extra=(--cmdline-extra "chinit.exec=/bench.sh")
    "$bin/host-probe" run --kernel "$kernel" --rootfs "$2" --json "${extra[@]}" "${@:3}" 2>/dev/null |
        jq -r '"\(.phases.total_us / 1000) \(.host.marks[] | select(.code == 144) | .t_us / 1000)"'
}

results="$work/results"
: >"$results"
for i in $(seq 1 "$n"); do
    for side in A B; do
        img="$work/$side.ext4"
        rm -f "$img"
        b=$(build "$side" "$img")
        read -r ready first < <(boot "$side" "$img" "$@") || true
        [ -n "${first:-}" ] || { say "$side: the boot gave no first-output mark (run host-probe run --rootfs $img by hand to see why)"; exit 1; }
        say "$i/$n $side: build $b ms, ready $ready ms, first output $first ms"
        echo "$side $b $ready $first" >>"$results"
    done
done
[ -f "$work/A.ext4" ] && say "sizes: A $(stat -c %s "$work/A.ext4") bytes, B $(stat -c %s "$work/B.ext4") bytes"

python3 - "$results" <<'PY'
import math, statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
def col(side, i):
    return sorted(float(r[i]) for r in rows if r[0] == side)
def p95(v):
    return v[max(0, math.ceil(0.95 * len(v)) - 1)]
print(f"| figure (n = {len(col('A', 1))} each, interleaved) | A: --image, median | A p95 | B: --base + chinit.exec, median | B p95 | A / B |")
print("|---|---:|---:|---:|---:|---:|")
for i, name in [(1, "build the ext4 (ms)"), (2, "boot: spawn -> ready (ms)"), (3, "boot: spawn -> workload's first output (ms)")]:
    a, b = col("A", i), col("B", i)
    ma, mb = statistics.median(a), statistics.median(b)
    print(f"| {name} | {ma:.0f} | {p95(a):.0f} | {mb:.0f} | {p95(b):.0f} | {ma / mb:.2f} |")
PY
