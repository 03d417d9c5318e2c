//! cloud-hypervisor with real Linux guests: they need hardware KVM, so on this project's machines
//! these tests run inside the simulated KVM host (`vm_l1.rs` runs this binary there). Each skips with
//! one line where there is no hardware KVM or no cloud-hypervisor (`$CLOUD_HYPERVISOR` or PATH).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use agent::proto::ExecRequest;
use chinit_tests::e2e::{self, Guest, Trigger, BOOT_TIMEOUT};
use chinit_tests::vm::{self, TempDir};
use host_probe::options::{Layout, Share};
use host_probe::run::{self, Options, RootMode};

/// cloud-hypervisor's options for the tiny kernel's PVH `vmlinux`; `None` (after one line) when
/// this host cannot run it.
fn ch_options(test: &str, rootfs: Option<&Path>) -> Option<Options> {
    let missing = "cloud-hypervisor not found (set $CLOUD_HYPERVISOR or put it on PATH)";
    e2e::hardware_kvm_options(test, host_probe::vmm::cloud_hypervisor::VMM, missing, rootfs)
}

fn sha(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap()
}

/// Disk, pmem, and initramfs mode (chinit switches from the initramfs to the disk): each gets ready
/// over the TAP and vsock with the notify push, the marks come from cloud-hypervisor's log, its
/// event monitor saw the boot, the image is unchanged and nothing is left.
#[test]
fn boots_chinit_from_disk_pmem_and_an_initramfs() {
    let test = "boots_chinit_from_disk_pmem_and_an_initramfs";
    let tmp = TempDir::new("ch-roots").unwrap();
    let image = e2e::chinit_image(&tmp.path().join("rootfs.ext4"), false);
    let Some(base) = ch_options(test, Some(&image)) else { return };
    let cpio = tmp.path().join("initramfs.cpio");
    e2e::chinit_initramfs(&cpio, None, &[]);
    let before = sha(&image);
    let cases = [
        ("disk", Options { ..base.clone() }),
        ("pmem", Options { root_mode: RootMode::Pmem, ..base.clone() }),
        ("initramfs then disk", Options { initramfs: Some(cpio.clone()), ..base.clone() }),
    ];
    for (name, o) in cases {
        let plan = run::plan(&o, &chinit_tests::vm::host_offer(), run::next_seq()).unwrap_or_else(|e| panic!("{name}: {e}"));
        let r = run::execute(&plan, &o).unwrap_or_else(|e| panic!("{name}: {e}"));
        let g = r.guest.as_ref().unwrap_or_else(|| panic!("{name}: no ready document"));
        assert!(g.ready, "{name}");
        assert!(r.host.ready_tcp_us.is_some() && r.host.ready_vsock_us.is_some() && r.host.notify_us.is_some(), "{name}: {:?}", r.host);
        let codes: Vec<u8> = r.host.marks.iter().map(|m| m.code).filter(|c| (0x60..=0x63).contains(c)).collect();
        assert_eq!(codes, [0x60, 0x61, 0x62, 0x63], "{name}");
        assert_eq!(r.host.marks_source, "vmm log prefix", "{name}");
        assert!(r.events.iter().any(|e| e.source == "vm" && e.event == "booted"), "{name}: {:?}", r.events);
        assert_eq!(r.root_kind, if name == "pmem" { "pmem" } else { "disk" }, "{name}");
        assert_eq!(g.steps.iter().any(|s| s.name == "root"), name.starts_with("initramfs"), "{name}: {:?}", g.steps);
        assert!(!r.notes.iter().any(|n| n.contains("exited")), "{name}: powered off cleanly: {:?}", r.notes);
        e2e::assert_run_left_nothing(&plan);
    }
    assert_eq!(sha(&image), before, "the image is never written");
}

/// The ACPI power button through cloud-hypervisor's API, and the API's shutdown: an orderly
/// power-off, the filesystem clean with what the guest wrote.
#[test]
fn the_power_button_and_the_api_power_off_in_order() {
    let Some(o) = ch_options("the_power_button_and_the_api_power_off_in_order", None) else { return };
    e2e::orderly_poweroff(&o, Trigger::PowerButton);
    e2e::orderly_poweroff(&Options { root_mode: RootMode::Pmem, ..o }, Trigger::Api);
}

/// Kuasar's guest layout: the root on partition 1 of a read-only pmem device, console on hvc0, a
/// host directory shared over virtio-fs and mounted by tag, vsock port 1024.
#[test]
fn kuasar_layout_boots_to_ready_with_the_share_mounted() {
    let test = "kuasar_layout_boots_to_ready_with_the_share_mounted";
    let tmp = TempDir::new("ch-kuasar").unwrap();
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let disk = tmp.path().join("kuasar.img");
    vm::run(
        Command::new(e2e::rootfs_builder())
            .env("ROOTFS_BUILDER_QUIET", "1")
            .arg("--init")
            .arg(vm::chinit_binary())
            .args(["--gpt", "--add", "/bin/busybox:/bin/busybox", "--add"])
            .arg(format!("{}:/mnt/kuasar", empty.display()))
            .arg("--out")
            .arg(&disk),
    );
    let Some(base) = ch_options(test, Some(&disk)) else { return };
    let share = tmp.path().join("share");
    std::fs::create_dir_all(&share).unwrap();
    std::fs::write(share.join("hello.txt"), "from the host\n").unwrap();
    let before = sha(&disk);
    let o = Options {
        root_mode: RootMode::Pmem,
        layout: Layout::Kuasar,
        share: Some(Share { dir: share.clone(), tag: "kuasar".into() }),
        ..base
    };
    let mut g = Guest::start(&o, false);
    let ready = g.wait_ready(BOOT_TIMEOUT);
    assert!(ready.steps.iter().any(|s| s.name == "mounts.extra" && s.error.is_none()), "{:?}", ready.steps);
    let sh = |script: &str| {
        let r = g.exec(&ExecRequest { argv: vec!["/bin/busybox".into(), "sh".into(), "-c".into(), script.into()], ..Default::default() });
        assert_eq!(r.exit_code, Some(0), "{script}: {r:?}");
        r.stdout
    };
    assert_eq!(sh("cat /mnt/kuasar/hello.txt"), "from the host\n");
    let cmdline = sh("cat /proc/cmdline");
    for want in ["console=hvc0", "root=/dev/pmem0p1", "rootflags=data=ordered,errors=remount-ro"] {
        assert!(cmdline.contains(want), "{want} not in {cmdline}");
    }
    let mounts = sh("cat /proc/mounts");
    assert!(mounts.contains("/dev/root / ext4 ro,relatime,errors=remount-ro,data=ordered"), "{mounts}");
    assert!(sh("ls /sys/block/pmem0").contains("pmem0p1"), "the root's partition");
    assert!(mounts.contains("kuasar /mnt/kuasar virtiofs"), "{mounts}");
    assert!(sh("ls /dev").contains("hwrng"), "virtio-rng");
    assert!(g.console().contains("chinit: ready in "), "the console is hvc0, in the file:\n{}", g.console());
    let r = g.vsock("POST", "/v1/shutdown", None).unwrap();
    assert_eq!(r.status, 202);
    let status = g.wait_exit(Duration::from_secs(60)).unwrap_or_else(|| panic!("no power-off\n{}", g.diagnostics()));
    assert!(status.success(), "{status}");
    let plan = g.plan().clone();
    drop(g);
    e2e::assert_run_left_nothing(&plan);
    assert_eq!(sha(&disk), before, "the image is never written");
}

/// A guest that never gets ready (its root device never appears): exit 4 after the timeout, and
/// nothing left; SIGINT in the middle of a boot: exit 130, nothing left.
#[test]
fn timeout_and_ctrl_c_leave_nothing_behind() {
    let test = "timeout_and_ctrl_c_leave_nothing_behind";
    let tmp = TempDir::new("ch-cleanup").unwrap();
    let image = e2e::chinit_image(&tmp.path().join("rootfs.ext4"), false);
    let Some(base) = ch_options(test, Some(&image)) else { return };
    e2e::timeout_and_ctrl_c_leave_nothing(&base, &image, "cloud-hypervisor", e2e::assert_run_left_nothing);
}
