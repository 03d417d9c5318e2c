#!/usr/bin/env bash
# Measures how often the simulated KVM host (tests/src/l1.rs) fails on its own: RUNS L1 runs one
# after another, each booting three guests at once, six rounds (QEMU with KVM and the kernel's
# vhost-vsock; three at once is CI's heaviest L1 load). L1's configuration comes from CHINIT_L1_CPU,
# CHINIT_L1_SMP, CHINIT_L1_KVM_AMD and CHINIT_L1_APPEND (docs/testing.md). One line per L1 run goes
# to OUT (tab-separated: configuration, run, result, wall seconds, the line that says why):
# result `ok`, `emulator` (L1's kernel died or its QEMU crashed), or `fail` (the load failed in a
# healthy L1, or L1 did not finish).
#
#   scripts/l1-stress.sh RUNS OUT.tsv
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:?usage: scripts/l1-stress.sh RUNS OUT.tsv}
out=${2:?usage: scripts/l1-stress.sh RUNS OUT.tsv}
export PATH="$HOME/.cargo/bin:$PATH"
target="${CARGO_TARGET_DIR:-target}"
cargo build --quiet --release --target x86_64-unknown-linux-musl -p chinit
cargo build --quiet --release -p rootfs-builder -p host-probe
cargo build --quiet -p chinit-tests --bin l1-run
kernel="$("$target/release/rootfs-builder" kernel --print-path)/bzImage"
dir="$(pwd)/$target/tmp/l1-stress"
mkdir -p "$dir"
ROOTFS_BUILDER_QUIET=1 "$target/release/rootfs-builder" --init "$target/x86_64-unknown-linux-musl/release/chinit" --out "$dir/rootfs.ext4"
cat >"$dir/load.sh" <<LOAD
set -e
for round in 1 2 3 4 5 6; do
    $(pwd)/$target/release/host-probe bench --parallel 3 --vmm qemu --kernel $kernel --rootfs $dir/rootfs.ext4 --timeout 120 >/dev/null
    echo "round \$round: 3 ready"
done
LOAD
config=$(printf 'cpu=%s smp=%s kvm_amd=%s append=%s' "${CHINIT_L1_CPU:-max}" "${CHINIT_L1_SMP:-2}" "${CHINIT_L1_KVM_AMD:--}" "${CHINIT_L1_APPEND:--}")
for i in $(seq 1 "$runs"); do
  start=$SECONDS
  set +e
  "$target/debug/l1-run" --once "$dir/load.sh" 600 >"$dir/last.out" 2>"$dir/last.err"
  rc=$?
  set -e
  case $rc in
    0) result=ok why="" ;;
    3) result=emulator why=$(grep -m1 'emulator:' "$dir/last.err" | head -c 300) ;;
    *) result=fail why=$(grep -m1 -v '^$' "$dir/last.err" | head -c 300)
       cp "$dir/last.err" "$dir/fail-$i.err" ;;
  esac
  printf '%s\t%s\t%s\t%s\t%s\n' "$config" "$i" "$result" "$((SECONDS - start))" "$why" | tee -a "$out"
done
