//! host-probe against real VMMs.
//!
//! - cloud-hypervisor (`$CLOUD_HYPERVISOR` or on PATH): it cannot run Linux on kvm_pvm hosts, so the
//!   test gives it a minimal PVH guest ([`host_probe::pvh`]) whose code writes 0x60..0x63 to port
//!   0x80 and powers off through cloud-hypervisor's ACPI shutdown port (0x600, value S5 | SLP_EN). host-probe's cloud-hypervisor path must start it, read the
//!   marks from the log and the events from the event monitor, make and remove the TAP, and leave
//!   nothing behind.
//! - QEMU (TCG on hosts without hardware KVM): boots the project's kernel and image to chinit's ready.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chinit_tests::vm::{self, TempDir};
use host_probe::pvh;
use host_probe::run::{self, Options, VmmChoice, Wait};

/// One skip line, written to stderr directly so `cargo test` shows it even while it captures the
/// output of passing tests.
macro_rules! skip_line {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($t)*);
    }};
}

fn sha(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

#[test]
fn cloud_hypervisor_path_runs_a_pvh_guest_and_leaves_nothing_behind() {
    let host = chinit_tests::vm::host_offer();
    let Some(ch) = host.program_of(host_probe::vmm::cloud_hypervisor::VMM) else {
        skip_line!("skipped: cloud-hypervisor not found (set $CLOUD_HYPERVISOR or put it on PATH)");
        return;
    };
    let dir = TempDir::new("ch").unwrap();
    let kernel = dir.path().join("pvh.elf");
    let disk = dir.path().join("disk.img");
    std::fs::write(&kernel, pvh::elf(pvh::End::AcpiShutdown)).unwrap();
    std::fs::write(&disk, vec![0xA5u8; 1 << 20]).unwrap();
    let before = sha(&disk);

    let o = Options {
        vmm: VmmChoice::Named(host_probe::vmm::cloud_hypervisor::VMM),
        kernel: Some(kernel),
        rootfs: Some(disk.clone()),
        wait: Wait::Exit,
        timeout: Duration::from_secs(30),
        ..Options::default()
    };
    let plan = run::plan(&o, &host, run::next_seq()).unwrap();
    assert_eq!(plan.argv[0], ch.display().to_string());
    let tap = plan.tap.clone().unwrap().tap;
    assert!(!host_probe::tap::exists(&tap));
    let report = run::execute(&plan, &o).unwrap();

    let codes: Vec<u8> = report.host.marks.iter().map(|m| m.code).collect();
    assert_eq!(codes, vec![0x60, 0x61, 0x62, 0x63], "{report:#?}");
    assert!(report.host.marks.windows(2).all(|w| w[0].t_us <= w[1].t_us), "marks in order: {:?}", report.host.marks);
    assert_eq!(report.host.marks_source, "vmm log prefix");
    let events: Vec<String> = report.events.iter().map(|e| format!("{} {}", e.source, e.event)).collect();
    for want in ["vmm starting", "vm booting", "vm booted", "vm shutdown"] {
        assert!(events.iter().any(|e| e == want), "{want} missing from {events:?}");
    }
    assert!(report.host.vmm_ready_us.is_some());
    assert!(report.guest.is_none() && report.phases.is_none());
    assert!(!report.notes.iter().any(|n| n.contains("exited")), "clean exit: {:?}", report.notes);

    assert!(!host_probe::tap::exists(&tap), "TAP {tap} removed");
    assert!(!plan.run_dir.exists(), "run directory removed");
    assert_eq!(sha(&disk), before, "the image is untouched");
    let text = host_probe::report::text(&report);
    assert!(text.contains("mark 0x63 ready (vmm log prefix)"), "{text}");
}

#[test]
fn cloud_hypervisor_failure_is_reported_with_the_vmm_log_and_cleaned_up() {
    let host = chinit_tests::vm::host_offer();
    if host.program_of(host_probe::vmm::cloud_hypervisor::VMM).is_none() {
        skip_line!("skipped: cloud-hypervisor not found (set $CLOUD_HYPERVISOR or put it on PATH)");
        return;
    }
    let dir = TempDir::new("chfail").unwrap();
    let kernel = dir.path().join("not-a-kernel");
    let disk = dir.path().join("disk.img");
    std::fs::write(&kernel, b"this is not an ELF").unwrap();
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    let o = Options {
        vmm: VmmChoice::Named(host_probe::vmm::cloud_hypervisor::VMM),
        kernel: Some(kernel),
        rootfs: Some(disk),
        timeout: Duration::from_secs(30),
        ..Options::default()
    };
    let plan = run::plan(&o, &host, run::next_seq()).unwrap();
    let tap = plan.tap.clone().unwrap().tap;
    let err = run::execute(&plan, &o).unwrap_err();
    assert_eq!(err.exit_code().code(), 5, "{err}");
    let msg = err.to_string();
    assert!(msg.contains("cloud-hypervisor exited"), "{msg}");
    assert!(msg.contains("last lines of cloud-hypervisor"), "{msg}");
    assert!(!host_probe::tap::exists(&tap));
    assert!(!plan.run_dir.exists());
}

/// Processes whose command line mentions `needle` (e.g. a run directory).
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(needle) {
                found.push(cmd);
            }
        }
    }
    found
}

#[test]
fn qemu_path_reads_debugcon_marks_and_stops_every_helper() {
    let host = chinit_tests::vm::host_offer();
    if host.program_of(host_probe::vmm::qemu::VMM).is_none() {
        skip_line!("skipped: qemu-system-x86_64 not found (apt-get install qemu-system-x86)");
        return;
    }
    let dir = TempDir::new("qemu").unwrap();
    let kernel = dir.path().join("pvh-reset.elf");
    let disk = dir.path().join("disk.img");
    std::fs::write(&kernel, pvh::elf(pvh::End::TripleFault)).unwrap();
    std::fs::write(&disk, vec![0x5Au8; 1 << 20]).unwrap();
    let before = sha(&disk);
    let o = Options {
        vmm: VmmChoice::Named(host_probe::vmm::qemu::VMM),
        kernel: Some(kernel),
        rootfs: Some(disk.clone()),
        wait: Wait::Exit,
        timeout: Duration::from_secs(60),
        ..Options::default()
    };
    let plan = run::plan(&o, &host, run::next_seq()).unwrap();
    let tap = plan.tap.clone().unwrap().tap;
    let report = run::execute(&plan, &o).unwrap();

    let codes: Vec<u8> = report.host.marks.iter().map(|m| m.code).collect();
    assert_eq!(codes, vec![0x60, 0x61, 0x62, 0x63], "{report:#?}");
    assert_eq!(report.host.marks_source, "debugcon arrival");
    let connected = report.host.vmm_ready_us.expect("QEMU connected its debugcon");
    assert!(report.host.marks[0].t_us >= connected, "{report:#?}");
    assert!(!host_probe::tap::exists(&tap), "TAP {tap} removed");
    assert!(!plan.run_dir.exists(), "run directory removed");
    let run_dir = plan.run_dir.display().to_string();
    assert_eq!(processes_mentioning(&run_dir), Vec::<String>::new(), "no QEMU or vhost-device-vsock left");
    assert_eq!(sha(&disk), before, "the image is untouched");
    if host.vhost_vsock.is_some() {
        assert!(plan.vhost_argv.is_some());
    }
}

/// Builds a workspace binary (release) and returns its path.
/// chinit in a fresh ext4 image (or initramfs) made by rootfs-builder.
fn chinit_image(dir: &Path, initramfs: bool) -> PathBuf {
    let chinit = vm::chinit_binary();
    let builder = vm::cargo_build("rootfs-builder", "rootfs-builder", None, true);
    let (flag, out) = if initramfs { ("--initramfs", dir.join("chinit.cpio")) } else { ("--out", dir.join("rootfs.ext4")) };
    let o = std::process::Command::new(builder).arg("--init").arg(&chinit).arg(flag).arg(&out).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    out
}

fn boot_chinit_under_qemu(initramfs: bool) {
    let host = chinit_tests::vm::host_offer();
    if host.program_of(host_probe::vmm::qemu::VMM).is_none() {
        skip_line!("skipped: qemu-system-x86_64 not found (apt-get install qemu-system-x86)");
        return;
    }
    let Some(kernel) =
        host.cache_root.as_deref().and_then(|r| host_probe::locate::default_kernel(r, rootfs_builder::elf::Arch::X86_64, "bzImage"))
    else {
        skip_line!("skipped: no guest kernel in the cache (run `rootfs-builder kernel`)");
        return;
    };
    if initramfs && !host_probe::run::kernel_supports_initrd(&kernel) {
        skip_line!("skipped: {} is built without CONFIG_BLK_DEV_INITRD (its config file says so)", kernel.display());
        return;
    }
    let dir = TempDir::new(if initramfs { "qemu-initramfs" } else { "qemu-disk" }).unwrap();
    // The disk alone, or chinit's initramfs mode: the initramfs first, then the disk as root.
    let image = chinit_image(dir.path(), false);
    let cpio = initramfs.then(|| chinit_image(dir.path(), true));
    let before = sha(&image);
    let o = Options {
        vmm: VmmChoice::Named(host_probe::vmm::qemu::VMM),
        kernel: Some(kernel),
        rootfs: Some(image.clone()),
        initramfs: cpio,
        timeout: Duration::from_secs(120),
        ..Options::default()
    };
    let plan = run::plan(&o, &host, run::next_seq()).unwrap();
    let tap = plan.tap.clone().unwrap().tap;
    let r = run::execute(&plan, &o).unwrap_or_else(|e| panic!("{e}"));

    let g = r.guest.as_ref().expect("chinit's timeline");
    assert!(g.ready && g.mode == "vm", "{g:?}");
    let steps: Vec<&str> = g.steps.iter().map(|s| s.name.as_str()).collect();
    let mut wanted = vec!["mounts", "network", "agent"];
    if initramfs {
        wanted.push("root");
    }
    for want in wanted {
        assert!(steps.contains(&want), "{want} missing from {steps:?}");
    }
    let codes: Vec<u8> = r.host.marks.iter().map(|m| m.code).filter(|c| (0x60..=0x63).contains(c)).collect();
    assert_eq!(codes, vec![0x60, 0x61, 0x62, 0x63], "{:?}", r.host.marks);
    let p = r.phases.as_ref().unwrap();
    assert_eq!(p.kernel_boot_us, g.init_start_us);
    assert_eq!(p.init_us, g.ready_us - g.init_start_us);
    assert!(p.kernel_start_host_us.is_some());
    assert!(p.total_us >= p.ready_in_guest_us, "{p:?}");
    assert!(r.host.ready_tcp_us.is_some(), "{:?}", r.host);
    if host.vhost_vsock.is_some() {
        assert!(r.host.notify_us.is_some(), "{:?}", r.host);
        assert!(r.host.ready_vsock_us.is_some(), "{:?}", r.host);
    }
    let console = r.console_ready_ms.expect("console ready line");
    assert!((console - p.init_us as f64 / 1000.0).abs() < 0.01, "{console} vs {p:?}");
    assert!(r.memory.is_some_and(|m| m.rss_kib > 0 && m.pss_kib > 0));
    assert!(!r.notes.iter().any(|n| n.contains("exited")), "powered off cleanly: {:?}", r.notes);

    assert!(!host_probe::tap::exists(&tap), "TAP {tap} removed");
    assert!(!plan.run_dir.exists(), "run directory removed");
    let run_dir = plan.run_dir.display().to_string();
    assert_eq!(processes_mentioning(&run_dir), Vec::<String>::new());
    assert_eq!(sha(&image), before, "the image is untouched");
    eprintln!("{}", host_probe::report::text(&r));
}

#[test]
fn qemu_boots_chinit_from_a_read_only_disk_to_ready() {
    boot_chinit_under_qemu(false);
}

#[test]
fn qemu_boots_chinit_from_an_initramfs_then_a_read_only_disk_to_ready() {
    boot_chinit_under_qemu(true);
}

fn pvh_options(dir: &Path, end: pvh::End, name: &str) -> Options {
    let kernel = dir.join(format!("{name}.elf"));
    let disk = dir.join(format!("{name}.img"));
    std::fs::write(&kernel, pvh::elf(end)).unwrap();
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    Options {
        vmm: VmmChoice::Named(host_probe::vmm::qemu::VMM),
        kernel: Some(kernel),
        rootfs: Some(disk),
        wait: Wait::Exit,
        timeout: Duration::from_secs(60),
        ..Options::default()
    }
}

#[test]
fn two_runs_at_once_do_not_clash() {
    let host = chinit_tests::vm::host_offer();
    if host.program_of(host_probe::vmm::qemu::VMM).is_none() {
        skip_line!("skipped: qemu-system-x86_64 not found (apt-get install qemu-system-x86)");
        return;
    }
    let dir = TempDir::new("twice").unwrap();
    let runs: Vec<(run::Plan, Options)> = ["one", "two"]
        .iter()
        .map(|name| {
            let o = pvh_options(dir.path(), pvh::End::TripleFault, name);
            (run::plan(&o, &host, run::next_seq()).unwrap(), o)
        })
        .collect();
    assert_ne!(runs[0].0.tap, runs[1].0.tap);
    assert_ne!(runs[0].0.guest_ip, runs[1].0.guest_ip);
    assert_ne!(runs[0].0.run_dir, runs[1].0.run_dir);
    let reports: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = runs.iter().map(|(p, o)| s.spawn(move || run::execute(p, o))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (r, (p, _)) in reports.into_iter().zip(&runs) {
        let r = r.unwrap_or_else(|e| panic!("{e}"));
        let codes: Vec<u8> = r.host.marks.iter().map(|m| m.code).collect();
        assert_eq!(codes, vec![0x60, 0x61, 0x62, 0x63]);
        assert!(!host_probe::tap::exists(&p.tap.clone().unwrap().tap));
        assert!(!p.run_dir.exists());
    }
}

#[test]
fn a_guest_that_never_gets_ready_times_out_with_exit_code_4_and_is_cleaned_up() {
    let host = chinit_tests::vm::host_offer();
    if host.program_of(host_probe::vmm::qemu::VMM).is_none() {
        skip_line!("skipped: qemu-system-x86_64 not found (apt-get install qemu-system-x86)");
        return;
    }
    let dir = TempDir::new("timeout").unwrap();
    let o = Options { wait: Wait::Agent, timeout: Duration::from_secs(3), ..pvh_options(dir.path(), pvh::End::Halt, "halt") };
    let plan = run::plan(&o, &host, run::next_seq()).unwrap();
    let started = std::time::Instant::now();
    let err = run::execute(&plan, &o).unwrap_err();
    assert_eq!(err.exit_code().code(), 4, "{err}");
    assert!(started.elapsed() < Duration::from_secs(20), "stopped promptly");
    let msg = err.to_string();
    assert!(msg.starts_with("boot: gave up after 3 s waiting for the guest to say it is ready (/ready over TAP"), "{msg}");
    assert!(msg.contains("last lines of the serial console"), "{msg}");
    assert!(!host_probe::tap::exists(&plan.tap.clone().unwrap().tap));
    assert!(!plan.run_dir.exists());
    assert_eq!(processes_mentioning(&plan.run_dir.display().to_string()), Vec::<String>::new());
}

#[test]
fn cloud_hypervisor_pmem_root_leaves_the_image_unchanged() {
    let host = chinit_tests::vm::host_offer();
    if host.program_of(host_probe::vmm::cloud_hypervisor::VMM).is_none() {
        skip_line!("skipped: cloud-hypervisor not found (set $CLOUD_HYPERVISOR or put it on PATH)");
        return;
    }
    let dir = TempDir::new("chpmem").unwrap();
    let kernel = dir.path().join("pvh.elf");
    let image = dir.path().join("pmem.img");
    std::fs::write(&kernel, pvh::elf(pvh::End::AcpiShutdown)).unwrap();
    std::fs::write(&image, vec![0x3Cu8; 2 << 20]).unwrap();
    let before = sha(&image);
    let o = Options {
        vmm: VmmChoice::Named(host_probe::vmm::cloud_hypervisor::VMM),
        kernel: Some(kernel),
        rootfs: Some(image.clone()),
        root_mode: run::RootMode::Pmem,
        wait: Wait::Exit,
        timeout: Duration::from_secs(30),
        ..Options::default()
    };
    let plan = run::plan(&o, &host, run::next_seq()).unwrap();
    assert!(plan.argv.iter().any(|a| a.ends_with("pmem.img,discard_writes=on")), "{:?}", plan.argv);
    let r = run::execute(&plan, &o).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.root_kind, "pmem");
    assert_eq!(r.host.marks.len(), 4, "{:?}", r.host.marks);
    assert_eq!(sha(&image), before);
    assert!(!plan.run_dir.exists());
}
