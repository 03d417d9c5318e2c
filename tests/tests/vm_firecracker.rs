//! Firecracker with real Linux guests: they need hardware KVM, so on this project's machines these
//! tests run inside the simulated KVM host (`vm_l1.rs` runs this binary there). Each skips with one
//! line where there is no hardware KVM or no Firecracker (`$FIRECRACKER` or PATH); the refusals,
//! which boot nothing, run on any host.

use std::path::Path;

use chinit_tests::e2e::{self, json_u64 as u, BootPhases, Trigger};
use chinit_tests::vm::TempDir;
use host_probe::run::{Options, Wait};
use host_probe::vmm::firecracker;

/// How to get Firecracker, in skip lines.
const GET_IT: &str = "firecracker not found (set $FIRECRACKER to Firecracker v1.16's binary or put it on PATH)";

/// Firecracker's options for the tiny kernel's ELF `vmlinux`; `None` (after one line) when this
/// host cannot run it.
fn fc_options(test: &str, rootfs: Option<&Path>) -> Option<Options> {
    e2e::hardware_kvm_options(test, host_probe::vmm::firecracker::VMM, GET_IT, rootfs)
}

/// `host-probe run --vmm firecracker --json --timeline`, as users run it: ready over the TAP and
/// vsock and pushed, every phase of the report from the guest's clocks and the host's answers, its
/// one mark (the boot timer chinit writes at ready), the SVG written, a power-off Firecracker exits
/// 0 on, the image unchanged.
#[test]
fn boots_to_ready_over_the_tap_and_vsock_with_every_phase() {
    let test = "boots_to_ready_over_the_tap_and_vsock_with_every_phase";
    let tmp = TempDir::new("fc-json").unwrap();
    let image = e2e::chinit_image(&tmp.path().join("rootfs.ext4"), false);
    let Some(o) = fc_options(test, Some(&image)) else { return };
    let (j, BootPhases { total, .. }) =
        e2e::host_probe_boot_report("firecracker", o.kernel.as_ref().unwrap(), &image, &tmp.path().join("boot.svg"));
    let (p, ready) = (&j["phases"], u(&j, "/guest/ready_us"));
    let answers = [u(&j, "/host/ready_tcp_us"), u(&j, "/host/ready_vsock_us"), u(&j, "/host/notify_us")];
    assert_eq!(total, *answers.iter().min().unwrap(), "total is the first ready answer: {:#}", j["host"]);
    // One mark: chinit's write to the boot timer at ready, on Firecracker's log clock; with the
    // guest's ready time it places the kernel's start on the host's clock.
    assert_eq!(j["host"]["marks_source"], firecracker::BOOT_TIMER_SOURCE, "{:#}", j["host"]);
    let marks = j["host"]["marks"].as_array().unwrap();
    assert_eq!((marks.len(), marks[0]["code"].as_u64()), (1, Some(u64::from(agent::marks::READY))), "{:#}", j["host"]);
    let (ready_host, kernel_start) = (u(&marks[0], "/t_us"), u(p, "/kernel_start_host_us"));
    assert_eq!(kernel_start + ready, ready_host, "{p:#}");
    assert!(ready_host < total, "the guest's write comes before the host hears it is ready: {:#}", j["host"]);
    assert!(j["cmdline"].as_str().unwrap().contains("chinit.boot_timer=0xc0000000"), "{}", j["cmdline"]);
    assert!(j["cmdline"].as_str().unwrap().contains("chinit.poweroff=reboot"), "{}", j["cmdline"]);
}

/// `chinit.exec=`: the workload's exit code reaches the host (pushed over vsock), and its exit
/// powers the VM off: Firecracker exits 0.
#[test]
fn a_workload_s_exit_code_reaches_the_host() {
    let test = "a_workload_s_exit_code_reaches_the_host";
    let tmp = TempDir::new("fc-workload").unwrap();
    let image = e2e::chinit_image(&tmp.path().join("rootfs.ext4"), true);
    let Some(base) = fc_options(test, Some(&image)) else { return };
    let o = Options {
        wait: Wait::Exit,
        cmdline_extra: r#"chinit.exec="/bin/busybox sh -c 'echo workload says hello; exit 7'""#.into(),
        ..base
    };
    e2e::assert_workload_exit_reaches_the_host(&o, "Firecracker");
}

/// The API's shutdown: chinit ends every process, syncs and unmounts, then resets the CPU
/// (`chinit.poweroff=reboot`); Firecracker exits 0 and the filesystem is clean with what the
/// guest wrote. The same from a pmem root.
#[test]
fn the_api_powers_off_in_order_and_the_filesystem_is_clean() {
    let Some(o) = fc_options("the_api_powers_off_in_order_and_the_filesystem_is_clean", None) else { return };
    e2e::orderly_poweroff(&o, Trigger::Api);
}

/// A guest that never gets ready (its root device never appears): exit 4 after the timeout, and
/// nothing left; SIGINT in the middle of a boot: exit 130, nothing left.
#[test]
fn timeout_and_ctrl_c_leave_nothing_behind() {
    let test = "timeout_and_ctrl_c_leave_nothing_behind";
    let tmp = TempDir::new("fc-cleanup").unwrap();
    let image = e2e::chinit_image(&tmp.path().join("rootfs.ext4"), false);
    let Some(base) = fc_options(test, Some(&image)) else { return };
    let run_dir = e2e::timeout_and_ctrl_c_leave_nothing(&base, &image, "firecracker", e2e::assert_run_and_sockets_left_nothing);
    assert_eq!(e2e::unix_sockets_mentioning(&run_dir.display().to_string()), Vec::<String>::new());
}

/// `host-probe run --vmm firecracker` with `$FIRECRACKER` set to `program`; its exit code and stderr.
fn host_probe_with(program: &Path, args: &[&str], kernel: &Path, rootfs: &Path) -> (i32, String, String) {
    e2e::host_probe_with_vmm(firecracker::VMM, program, args, kernel, rootfs)
}

/// Runs on any host (nothing boots): a program that is not Firecracker, a Firecracker other than
/// v1.16, a bzImage, `--share` and `--layout kuasar` are refused with the exit code and the fix;
/// `--dry-run` with a v1.16 prints the command line and the API calls.
#[test]
fn bad_input_is_refused_before_anything_starts() {
    let tmp = TempDir::new("fc-refusals").unwrap();
    let stub = |name: &str, says: &str| {
        let p = tmp.path().join(name);
        std::fs::write(&p, format!("#!/bin/sh\necho '{says}'\n")).unwrap();
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        p
    };
    let (good, old, other) =
        (stub("fc-16", "Firecracker v1.16.1"), stub("fc-15", "Firecracker v1.15.0"), stub("ch", "cloud-hypervisor v53.0"));
    let image = tmp.path().join("rootfs.ext4");
    std::fs::write(&image, b"").unwrap();
    let (kernel, bz) = (e2e::tiny_vmlinux(), e2e::tiny_bzimage());
    let share = format!("--share={}", tmp.path().display());
    let cases: [(&Path, &[&str], &Path, i32, &str); 5] = [
        (&other, &["--dry-run"], &kernel, 3, "is not Firecracker: its --version says \"cloud-hypervisor v53.0\""),
        (&old, &["--dry-run"], &kernel, 3, "too old"),
        (&good, &["--dry-run"], &bz, 2, "not a bzImage: give --kernel the vmlinux"),
        (&good, &["--dry-run", &share], &kernel, 2, "drop --share"),
        (&good, &["--dry-run", "--layout", "kuasar", "--root", "pmem"], &kernel, 2, "pass --vmm cloud-hypervisor"),
    ];
    for (program, args, k, code, want) in cases {
        let (got, _, err) = host_probe_with(program, args, k, &image);
        assert_eq!(got, code, "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
    let (code, out, err) = host_probe_with(&good, &["--dry-run"], &kernel, &image);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().filter(|l| !l.starts_with('#')).collect();
    let fc = lines.iter().position(|l| l.starts_with(&good.display().to_string())).unwrap_or_else(|| panic!("{out}"));
    assert!(lines[fc].contains(" --api-sock ") && lines[fc].ends_with(" &"), "{out}");
    let calls: Vec<&str> =
        lines[fc + 1..].iter().filter(|l| l.starts_with("curl ")).map(|l| l.split(" http://localhost").nth(1).unwrap()).collect();
    let paths: Vec<&str> = calls.iter().map(|c| c.split(' ').next().unwrap()).collect();
    assert_eq!(
        paths,
        ["/boot-source", "/machine-config", "/drives/root", "/network-interfaces/eth0", "/vsock", "/serial", "/actions"],
        "{out}"
    );
    assert!(out.contains("chinit.poweroff=reboot") && out.contains("reboot=k"), "{out}");
    assert!(out.contains(r#""is_read_only":true"#), "{out}");
}
