//! Many VMs at once (`host-probe bench --parallel N`): each gets ready with its own TAP, address and
//! vsock, and nothing is left after success, after every VM failed, or after Ctrl-C. Copies of a
//! snapshot at once (`--clones N`) are in `vm_snapshot.rs` (they need hardware KVM).

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chinit_tests::e2e;
use chinit_tests::vm::{self, TempDir};

fn bench(image: &std::path::Path, extra: &[&str]) -> Command {
    let mut c = vm::host_probe_command();
    c.args(["bench", "--parallel", "3", "--vmm", "qemu", "--kernel"]).arg(e2e::tiny_bzimage()).arg("--rootfs").arg(image).args(extra);
    c
}

#[test]
fn three_vms_at_once_get_ready_with_their_own_addresses_and_leave_nothing() {
    if let Some(why) = e2e::qemu_missing() {
        e2e::skip("three_vms_at_once_get_ready_with_their_own_addresses_and_leave_nothing", why);
        return;
    }
    let tmp = TempDir::new("density").unwrap();
    let image = e2e::chinit_image(&tmp.path().join("rootfs.ext4"), false);

    // Success: three ready, each report its own address, memory per VM.
    let child = bench(&image, &["--json"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let d: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((d["n"].as_u64(), d["ready"].as_u64()), (Some(3), Some(3)), "{d:#}");
    assert_eq!(d["memory"].as_array().map(Vec::len), Some(3), "{d:#}");
    let mut addresses: Vec<&str> = d["addresses"].as_array().unwrap().iter().filter_map(|a| a.as_str()).collect();
    addresses.sort();
    addresses.dedup();
    assert_eq!(addresses.len(), 3, "three distinct addresses: {d:#}");
    assert!(d["memory"].as_array().unwrap().iter().all(|m| m["pss_kib"].as_u64() > Some(0)), "{d:#}");
    let total = d["rows"].as_array().unwrap().iter().find(|r| r[0] == "total (host)").unwrap_or_else(|| panic!("{d:#}"));
    assert_eq!(total[1]["n"], 3);
    assert_eq!(e2e::left_by_host_probe(pid), Vec::<String>::new());

    // Every VM fails (a timeout no TCG boot meets): exit 5, each failure named, nothing left.
    let child = bench(&image, &["--timeout", "0"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(5), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        text.contains("0 of 3 ready")
            && (1..=3).all(|i| text.contains(&format!("failed: VM {i}: boot: gave up after 0 s waiting for the guest to say it is ready"))),
        "{text}"
    );
    assert_eq!(e2e::left_by_host_probe(pid), Vec::<String>::new());

    // Ctrl-C while they boot: exit 130, nothing left.
    let child = bench(&image, &[]).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(60);
    while e2e::processes_mentioning(&format!("host-probe-{pid}-")).len() < 3 {
        assert!(Instant::now() < deadline, "the VMs never started");
        std::thread::sleep(Duration::from_millis(5));
    }
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGINT).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{:?} {}", out.status.signal(), String::from_utf8_lossy(&out.stderr));
    assert_eq!(e2e::left_by_host_probe(pid), Vec::<String>::new());

    // More than the host holds: refused before anything starts.
    let child = bench(&image, &["--memory", "1048576"]).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("this host has") && err.contains("MiB available"), "{err}");
    assert_eq!(e2e::left_by_host_probe(pid), Vec::<String>::new());
}
