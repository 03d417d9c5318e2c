//! StratoVirt with real Linux guests: they need hardware KVM, so on this project's machines these
//! tests run inside the simulated KVM host (`vm_l1.rs` runs this binary there). Each skips with one
//! line where there is no hardware KVM or no StratoVirt (`$STRATOVIRT` or PATH); the refusals,
//! which boot nothing, run on any host.

use std::path::Path;
use std::process::Stdio;

use chinit_tests::e2e::{self, json_u64 as u, BootPhases, Trigger};
use chinit_tests::vm::{self, TempDir};
use host_probe::run::{Options, Wait};
use host_probe::vmm::stratovirt;

/// How to get StratoVirt, in skip lines.
const GET_IT: &str = "stratovirt not found (set $STRATOVIRT to StratoVirt v2.5's binary or put it on PATH)";

/// StratoVirt's options for the tiny kernel's bzImage; `None` (after one line) when this host
/// cannot run it.
fn sv_options(test: &str, rootfs: Option<&Path>) -> Option<Options> {
    e2e::hardware_kvm_options(test, stratovirt::VMM, GET_IT, rootfs)
}

/// Whether the StratoVirt these tests run was built with its vhost-vsock device (a default build
/// is not): without it, chinit is reached over the TAP alone and nothing is pushed.
fn vsock_build() -> bool {
    chinit_tests::vm::host_offer().program_of(stratovirt::VMM).is_some_and(|p| stratovirt::builds_vsock(&p))
}

/// `host-probe run --vmm stratovirt --json --timeline`, as users run it: ready over the TAP and
/// vsock and pushed, every phase of the report from the guest's clocks and the host's answers, no
/// marks (and the report says why), the SVG written, a power-off StratoVirt exits 0 on, the image
/// unchanged and nothing left.
#[test]
fn boots_to_ready_over_the_tap_and_vsock_with_every_phase() {
    let test = "boots_to_ready_over_the_tap_and_vsock_with_every_phase";
    let tmp = TempDir::new("sv-json").unwrap();
    let image = e2e::chinit_image(&tmp.path().join("rootfs.ext4"), false);
    let Some(o) = sv_options(test, Some(&image)) else { return };
    let (j, BootPhases { kernel, init, in_guest, total }) =
        e2e::host_probe_boot_report("stratovirt", o.kernel.as_ref().unwrap(), &image, &tmp.path().join("boot.svg"));
    if vsock_build() {
        let answers = [u(&j, "/host/ready_tcp_us"), u(&j, "/host/ready_vsock_us"), u(&j, "/host/notify_us")];
        assert_eq!(total, *answers.iter().min().unwrap(), "total is the first ready answer: {:#}", j["host"]);
    } else {
        // Over the TAP alone, and the report says why.
        assert_eq!(total, u(&j, "/host/ready_tcp_us"), "{:#}", j["host"]);
        assert!(j["host"]["ready_vsock_us"].is_null() && j["host"]["notify_us"].is_null(), "{:#}", j["host"]);
        let notes = j["notes"].as_array().unwrap();
        assert!(notes.iter().any(|n| n.as_str().unwrap().contains("built without its vhost-vsock device")), "{notes:?}");
    }
    assert_eq!(j["host"]["marks"].as_array().map(Vec::len), Some(0), "{:#}", j["host"]);
    assert!(j["host"]["marks_source"].as_str().unwrap().contains("StratoVirt logs no port-0x80"), "{:#}", j["host"]);
    let cmdline = j["cmdline"].as_str().unwrap();
    assert!(cmdline.contains("chinit.poweroff=reboot") && cmdline.contains("reboot=t"), "{cmdline}");
    println!(
        "StratoVirt boot: kernel {} ms, init {} ms, ready in the guest {} ms, total {} ms",
        kernel / 1000,
        init / 1000,
        in_guest / 1000,
        total / 1000
    );
}

/// `chinit.exec=` (a value with spaces, whole): the workload's exit code reaches the host (pushed
/// over vsock; without vsock, on the console), and its exit powers the VM off: StratoVirt exits 0.
#[test]
fn a_workload_s_exit_code_reaches_the_host() {
    let test = "a_workload_s_exit_code_reaches_the_host";
    let tmp = TempDir::new("sv-workload").unwrap();
    let image = e2e::chinit_image(&tmp.path().join("rootfs.ext4"), true);
    let Some(base) = sv_options(test, Some(&image)) else { return };
    let o = Options {
        wait: Wait::Exit,
        cmdline_extra: r#"chinit.exec="/bin/busybox sh -c 'echo workload says hello; exit 7'""#.into(),
        ..base
    };
    if !vsock_build() {
        let mut g = e2e::Guest::start(&o, false);
        let status = g.wait_exit(e2e::BOOT_TIMEOUT).unwrap_or_else(|| panic!("no power-off after the workload\n{}", g.diagnostics()));
        assert!(status.success(), "StratoVirt: {status}\n{}", g.diagnostics());
        let console = g.console();
        assert!(console.contains("workload says hello"), "{console}");
        assert!(console.contains("chinit: workload exited (exit code 7)"), "{console}");
        let plan = g.plan().clone();
        drop(g);
        e2e::assert_run_and_sockets_left_nothing(&plan);
        return;
    }
    e2e::assert_workload_exit_reaches_the_host(&o, "StratoVirt");
}

/// The API's shutdown: chinit ends every process, syncs and unmounts, then resets the CPU
/// (`chinit.poweroff=reboot`, a triple fault with `reboot=t`); StratoVirt exits 0 and the
/// filesystem is clean with what the guest wrote.
#[test]
fn the_api_powers_off_in_order_and_the_filesystem_is_clean() {
    let Some(o) = sv_options("the_api_powers_off_in_order_and_the_filesystem_is_clean", None) else { return };
    e2e::orderly_poweroff(&o, Trigger::Api);
}

/// A guest that never gets ready (its root device never appears): exit 4 after the timeout, and
/// nothing left; SIGINT in the middle of a boot: exit 130, nothing left (its QMP socket neither).
#[test]
fn timeout_and_ctrl_c_leave_nothing_behind() {
    let test = "timeout_and_ctrl_c_leave_nothing_behind";
    let tmp = TempDir::new("sv-cleanup").unwrap();
    let image = e2e::chinit_image(&tmp.path().join("rootfs.ext4"), false);
    let Some(base) = sv_options(test, Some(&image)) else { return };
    let run_dir = e2e::timeout_and_ctrl_c_leave_nothing(&base, &image, "stratovirt", e2e::assert_run_and_sockets_left_nothing);
    assert_eq!(e2e::unix_sockets_mentioning(&run_dir.display().to_string()), Vec::<String>::new());
}

/// `host-probe run --vmm stratovirt` with `$STRATOVIRT` set to `program`; its exit code, stdout
/// and stderr.
fn host_probe_with(program: &Path, args: &[&str], kernel: &Path, rootfs: &Path) -> (i32, String, String) {
    e2e::host_probe_with_vmm(stratovirt::VMM, program, args, kernel, rootfs)
}

/// Runs on any host (nothing boots): a program that is not StratoVirt, a StratoVirt other than
/// 2.5, the ELF vmlinux, `--share`, `--layout kuasar` and `--root pmem` are refused with the exit
/// code and the fix; `--dry-run` with a 2.5 prints the command line: the root read-only, QMP, the
/// serial console to a file, `chinit.poweroff=reboot` and `reboot=t`; a snapshot is refused (exit 3)
/// with the reason.
#[test]
fn bad_input_is_refused_before_anything_starts() {
    let tmp = TempDir::new("sv-refusals").unwrap();
    let stub = |name: &str, says: &str| {
        let p = tmp.path().join(name);
        std::fs::write(&p, format!("#!/bin/sh\n[ \"$1\" = -version ] || exit 1\necho '{says}'\n")).unwrap();
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        p
    };
    let (good, old, other) = (
        stub("sv-25", "StratoVirt 2.5.0 commit-id 26abef02"),
        stub("sv-24", "StratoVirt 2.4.0 commit-id 1"),
        stub("fc", "Firecracker v1.16.1"),
    );
    let image = tmp.path().join("rootfs.ext4");
    std::fs::write(&image, b"").unwrap();
    let (bz, elf) = (e2e::tiny_bzimage(), e2e::tiny_vmlinux());
    let share = format!("--share={}", tmp.path().display());
    let cases: [(&Path, &[&str], &Path, i32, &str); 6] = [
        (&other, &["--dry-run"], &bz, 3, "is not StratoVirt: its -version says \"Firecracker v1.16.1\""),
        (&old, &["--dry-run"], &bz, 3, "2.4.0 is untried"),
        (&good, &["--dry-run"], &elf, 2, "not the ELF vmlinux: give --kernel the bzImage"),
        (&good, &["--dry-run", &share], &bz, 2, "drop --share"),
        (&good, &["--dry-run", "--layout", "kuasar"], &bz, 2, "pass --vmm cloud-hypervisor"),
        (&good, &["--dry-run", "--root", "pmem"], &bz, 2, "use --root disk"),
    ];
    for (program, args, k, code, want) in cases {
        let (got, _, err) = host_probe_with(program, args, k, &image);
        assert_eq!(got, code, "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
    let (code, out, err) = host_probe_with(&good, &["--dry-run"], &bz, &image);
    assert_eq!(code, 0, "{err}");
    let line = out.lines().find(|l| l.starts_with(&good.display().to_string())).unwrap_or_else(|| panic!("{out}"));
    for want in [
        " -machine microvm ",
        ",id=rootfs,readonly=on,direct=false ",
        " -device virtio-blk-device,drive=rootfs,id=rootfs ",
        " -netdev tap,id=net0,ifname=",
        " -qmp unix:",
        " -serial file,path=",
        "chinit.poweroff=reboot",
        "reboot=t",
    ] {
        assert!(line.contains(want), "{want:?} missing from {line}");
    }
    assert!(!line.ends_with(" &"), "nothing is configured over an API: {out}");

    // A snapshot: refused with the reason (a copy is made unique over vsock, which this build,
    // a shell script without StratoVirt's vhost-vsock device, lacks), and nothing made.
    let snap = tmp.path().join("snap");
    let out = vm::host_probe_command()
        .env(e2e::program_var(stratovirt::VMM), &good)
        .args(["snapshot", "--vmm", "stratovirt", "--out"])
        .arg(&snap)
        .arg("--kernel")
        .arg(&bz)
        .arg("--rootfs")
        .arg(&image)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("StratoVirt snapshots: this StratoVirt is built without its vhost-vsock device"), "{err}");
    assert!(err.contains("made unique over vsock") && err.contains("--vmm firecracker"), "{err}");
    assert!(!snap.exists(), "the refused snapshot left {}", snap.display());
}
