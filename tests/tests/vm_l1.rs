//! The real KVM paths, on a simulated hardware-KVM host (`chinit_tests::l1`): QEMU TCG with
//! `-cpu max` runs Debian's cloud kernel with `kvm_amd`, and the tests run this host's programs
//! inside it. Skips with one line only when a piece is missing on this host (QEMU, its virtiofsd,
//! busybox-static, or Debian's cloud kernel from apt).

use std::time::Duration;

use chinit_tests::l1;

/// Bounds one L1 run: ~3 s of L1 boot and the command, under emulation.
const L1_TIMEOUT: Duration = Duration::from_secs(240);

fn available(test: &str) -> bool {
    match l1::available() {
        Ok(()) => true,
        Err(why) => {
            chinit_tests::ns::skip(&format!("{test}: {why}"));
            false
        }
    }
}

/// The harness itself: a command runs with this host's programs, sees a hardware KVM and the
/// kernel's vhost-vsock, and its output and exit status come back; nothing is left running.
#[test]
fn l1_runs_a_command_with_kvm_and_returns_its_output_and_status() {
    if !available("l1_runs_a_command_with_kvm_and_returns_its_output_and_status") {
        return;
    }
    let script =
        "set -e\necho from-l1\ncat /sys/module/kvm_amd/parameters/npt\ntest -c /dev/kvm && test -c /dev/vhost-vsock && echo devices-ok\n\
                  qemu-system-x86_64 --version | head -1\ntouch /tmp/writable && echo tmp-ok\nexit 3\n";
    let out = l1::run(script, L1_TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.status, 3, "{}", out.console);
    for want in ["from-l1\n", "Y\n", "devices-ok\n", "QEMU emulator version", "tmp-ok\n"] {
        assert!(out.output.contains(want), "{want:?} missing from:\n{}", out.output);
    }
    println!("L1 run: {:?} wall", out.wall);
    assert!(chinit_tests::e2e::processes_mentioning("virtiofsd").is_empty(), "virtiofsd left running");
}
