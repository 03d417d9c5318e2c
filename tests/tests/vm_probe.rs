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

use host_probe::pvh;
use host_probe::run::{self, HostOffer, Options, VmmChoice, Wait};

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("vm-probe-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn sha(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

#[test]
fn cloud_hypervisor_path_runs_a_pvh_guest_and_leaves_nothing_behind() {
    let host = HostOffer::gather();
    let Some(ch) = host.cloud_hypervisor.clone() else {
        eprintln!("skipped: cloud-hypervisor not found (set $CLOUD_HYPERVISOR or put it on PATH)");
        return;
    };
    let dir = TempDir::new("ch");
    let kernel = dir.0.join("pvh.elf");
    let disk = dir.0.join("disk.img");
    std::fs::write(&kernel, pvh::elf(pvh::End::AcpiShutdown)).unwrap();
    std::fs::write(&disk, vec![0xA5u8; 1 << 20]).unwrap();
    let before = sha(&disk);

    let o = Options {
        vmm: VmmChoice::CloudHypervisor,
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
    assert!(
        report.host.marks.windows(2).all(|w| w[0].t_us <= w[1].t_us),
        "marks in order: {:?}",
        report.host.marks
    );
    assert_eq!(report.host.marks_source, "vmm log prefix");
    let events: Vec<String> = report
        .events
        .iter()
        .map(|e| format!("{} {}", e.source, e.event))
        .collect();
    for want in ["vmm starting", "vm booting", "vm booted", "vm shutdown"] {
        assert!(
            events.iter().any(|e| e == want),
            "{want} missing from {events:?}"
        );
    }
    assert!(report.host.vmm_ready_us.is_some());
    assert!(report.guest.is_none() && report.phases.is_none());
    assert!(
        !report.notes.iter().any(|n| n.contains("exited")),
        "clean exit: {:?}",
        report.notes
    );

    assert!(!host_probe::tap::exists(&tap), "TAP {tap} removed");
    assert!(!plan.run_dir.exists(), "run directory removed");
    assert_eq!(sha(&disk), before, "the image is untouched");
    let text = host_probe::report::text(&report);
    assert!(text.contains("mark 0x63 ready (vmm log prefix)"), "{text}");
}

#[test]
fn cloud_hypervisor_failure_is_reported_with_the_vmm_log_and_cleaned_up() {
    let host = HostOffer::gather();
    if host.cloud_hypervisor.is_none() {
        eprintln!("skipped: cloud-hypervisor not found (set $CLOUD_HYPERVISOR or put it on PATH)");
        return;
    }
    let dir = TempDir::new("chfail");
    let kernel = dir.0.join("not-a-kernel");
    let disk = dir.0.join("disk.img");
    std::fs::write(&kernel, b"this is not an ELF").unwrap();
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    let o = Options {
        vmm: VmmChoice::CloudHypervisor,
        kernel: Some(kernel),
        rootfs: Some(disk),
        timeout: Duration::from_secs(30),
        ..Options::default()
    };
    let plan = run::plan(&o, &host, run::next_seq()).unwrap();
    let tap = plan.tap.clone().unwrap().tap;
    let err = run::execute(&plan, &o).unwrap_err();
    assert_eq!(err.exit_code(), 5, "{err}");
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
    let host = HostOffer::gather();
    if host.qemu.is_none() {
        eprintln!("skipped: qemu-system-x86_64 not found (apt-get install qemu-system-x86)");
        return;
    }
    let dir = TempDir::new("qemu");
    let kernel = dir.0.join("pvh-reset.elf");
    let disk = dir.0.join("disk.img");
    std::fs::write(&kernel, pvh::elf(pvh::End::TripleFault)).unwrap();
    std::fs::write(&disk, vec![0x5Au8; 1 << 20]).unwrap();
    let before = sha(&disk);
    let o = Options {
        vmm: VmmChoice::Qemu,
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
    let connected = report
        .host
        .vmm_ready_us
        .expect("QEMU connected its debugcon");
    assert!(report.host.marks[0].t_us >= connected, "{report:#?}");
    assert!(!host_probe::tap::exists(&tap), "TAP {tap} removed");
    assert!(!plan.run_dir.exists(), "run directory removed");
    let run_dir = plan.run_dir.display().to_string();
    assert_eq!(
        processes_mentioning(&run_dir),
        Vec::<String>::new(),
        "no QEMU or vhost-device-vsock left"
    );
    assert_eq!(sha(&disk), before, "the image is untouched");
    if host.vhost_vsock.is_some() {
        assert!(plan.vhost_argv.is_some());
    }
}
