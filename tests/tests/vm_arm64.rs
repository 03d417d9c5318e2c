//! aarch64 guests: the tiny kernel's arm64 `Image` with aarch64 chinit as PID 1, under
//! `qemu-system-aarch64 -M virt` (TCG on this x86_64 host), booted by host-probe: ready over the
//! TAP and vsock, the exec API, a workload whose exit reaches the host, power-off in order, and a
//! missing root device giving a clear error and a power-off. Skips with one line without
//! qemu-system-aarch64 or the cross compiler (scripts/setup.sh installs both).

use std::path::Path;
use std::time::Duration;

use agent::proto::{ExecRequest, Ready};
use chinit_tests::arm;
use chinit_tests::e2e::{self, BOOT_TIMEOUT};
use chinit_tests::vm::TempDir;
use host_probe::options::Arch;
use host_probe::run::{self, Options, VmmChoice, Wait};

fn options(test: &str, image: Option<&Path>, extra: &str) -> Option<Options> {
    if let Some(why) = arm::missing() {
        e2e::skip(test, &why);
        return None;
    }
    Some(Options {
        vmm: VmmChoice::Named(host_probe::vmm::qemu::VMM),
        arch: Some(Arch::Aarch64),
        kernel: Some(arm::tiny_image()),
        rootfs: image.map(Path::to_path_buf),
        cmdline_extra: extra.into(),
        timeout: BOOT_TIMEOUT,
        ..Options::default()
    })
}

fn busybox(test: &str) -> Option<std::path::PathBuf> {
    match arm::busybox() {
        Ok(b) => Some(b),
        Err(why) => {
            e2e::skip(test, &why);
            None
        }
    }
}

/// Boots, answers, runs a command, powers off: the whole round on arm64.
#[test]
fn arm64_chinit_gets_ready_serves_tap_vsock_and_exec_and_powers_off() {
    let test = "arm64_chinit_gets_ready_serves_tap_vsock_and_exec_and_powers_off";
    if arm::missing().is_some() {
        e2e::skip(test, &arm::missing().unwrap_or_default());
        return;
    }
    let Some(bb) = busybox(test) else { return };
    let tmp = TempDir::new("arm64").unwrap();
    let image = arm::chinit_image(&tmp.path().join("rootfs.ext4"), Some(&bb));
    let Some(o) = options(test, Some(&image), "") else { return };
    let mut g = e2e::Guest::start(&o, false);
    let argv = &g.plan().argv;
    assert!(argv[0].ends_with("qemu-system-aarch64") && argv.iter().any(|a| a.starts_with("virt")), "{argv:?}");
    let ready = g.wait_ready(BOOT_TIMEOUT);
    assert!(ready.ready && ready.mode == "vm" && ready.steps.iter().all(|s| s.error.is_none()), "{ready:?}");
    let over_tcp: Ready = g.tcp("GET", "/ready", None).unwrap().json().unwrap();
    let over_vsock: Ready = g.vsock("GET", "/ready", None).unwrap().json().unwrap();
    assert_eq!((over_tcp.ready_us, over_vsock.ready_us), (ready.ready_us, ready.ready_us));
    let out = g.exec(&ExecRequest { argv: vec!["/bin/busybox".into(), "uname".into(), "-m".into()], ..Default::default() });
    assert_eq!((out.exit_code, out.stdout.as_str()), (Some(0), "aarch64\n"), "{out:?}");
    let r = g.vsock("POST", "/v1/shutdown", Some(br#"{"action":"poweroff"}"#)).unwrap();
    assert_eq!(r.status, 202);
    let status = g.wait_exit(Duration::from_secs(60)).unwrap_or_else(|| panic!("no power-off:\n{}", g.console()));
    assert!(status.success(), "{status}");
    let console = g.console();
    assert!(console.contains("chinit: ready in ") && !e2e::has_kernel_panic(&console), "{console}");
}

/// host-probe's report of an arm64 boot: every phase from the guest's clock and the host's
/// answers, the workload's output on the console and its exit code at the host.
#[test]
fn arm64_workload_exit_reaches_the_host_and_the_report_has_every_phase() {
    let test = "arm64_workload_exit_reaches_the_host_and_the_report_has_every_phase";
    if let Some(why) = arm::missing() {
        e2e::skip(test, &why);
        return;
    }
    let Some(bb) = busybox(test) else { return };
    let tmp = TempDir::new("arm64-workload").unwrap();
    let image = arm::chinit_image(&tmp.path().join("rootfs.ext4"), Some(&bb));
    let extra = r#"chinit.exec="/bin/busybox sh -c 'echo workload says hello; exit 7'""#;
    let Some(o) = options(test, Some(&image), extra) else { return };
    let o = Options { wait: Wait::Exit, ..o };
    let r = run::run(&o).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((r.vmm.as_str(), r.accel.as_str(), r.representative), ("qemu", "tcg", false));
    let w = r.workload.unwrap_or_else(|| panic!("no workload status reached the host: {r:?}"));
    assert!(!w.running && w.exit_code == Some(7), "{w:?}");
    assert!(r.host.marks.is_empty(), "no port 0x80 on arm64: {:?}", r.host.marks);

    // Waiting for chinit: every phase, from the guest's clock and the host's answers.
    let Some(o) = options(test, Some(&image), "") else { return };
    let r = run::run(&o).unwrap_or_else(|e| panic!("{e}"));
    let p = r.phases.clone().unwrap();
    assert!(p.kernel_boot_us > 0 && p.init_us > 0 && p.total_us > p.ready_in_guest_us, "{p:?}");
    assert!(r.host.ready_tcp_us.is_some() && r.host.ready_vsock_us.is_some() && r.host.notify_us.is_some(), "{:?}", r.host);
    println!("arm64 TCG: kernel {} ms, init {} ms, total {} ms", p.kernel_boot_us / 1000, p.init_us / 1000, p.total_us / 1000);
}

/// A root device that never appears: chinit says so and powers off, no kernel panic.
#[test]
fn arm64_missing_root_gives_a_clear_error_and_powers_off() {
    let test = "arm64_missing_root_gives_a_clear_error_and_powers_off";
    if let Some(why) = arm::missing() {
        e2e::skip(test, &why);
        return;
    }
    let tmp = TempDir::new("arm64-noroot").unwrap();
    let cpio = tmp.path().join("initramfs.cpio");
    let mut cmd = std::process::Command::new(e2e::rootfs_builder());
    cmd.env("ROOTFS_BUILDER_QUIET", "1").args(["--arch", "aarch64", "--init"]).arg(arm::chinit()).arg("--initramfs").arg(&cpio);
    chinit_tests::vm::run(&mut cmd);
    let Some(o) = options(test, None, "chinit.root=/dev/vda chinit.root_wait_ms=1500") else { return };
    let o = Options { initramfs: Some(cpio), wait: Wait::Exit, vsock: false, keep: true, ..o };
    let plan = run::plan(&o, &chinit_tests::vm::host_offer(), run::next_seq()).unwrap();
    let r = run::execute(&plan, &o).unwrap_or_else(|e| panic!("{e}"));
    let console = std::fs::read_to_string(&plan.spec.serial).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&plan.run_dir);
    assert!(console.lines().any(|l| l.starts_with("chinit: root: root device /dev/vda did not appear within 1500 ms")), "{console}");
    assert!(console.contains("chinit: powering off (chinit.on_error=poweroff)"), "{console}");
    assert!(!e2e::has_kernel_panic(&console), "{console}");
    assert!(!r.notes.iter().any(|n| n.contains("exited")), "QEMU exited 0 (power-off): {:?}", r.notes);
}
