//! host-probe against real VMMs.
//!
//! - cloud-hypervisor (`$CLOUD_HYPERVISOR` or on PATH): it cannot run Linux on kvm_pvm hosts, so the
//!   test builds a minimal PVH guest (an ELF with a `XEN_ELFNOTE_PHYS32_ENTRY` note) whose code
//!   writes 0x60..0x63 to port 0x80 and powers off through cloud-hypervisor's ACPI shutdown port
//!   (0x600, value S5 | SLP_EN = 0x34). host-probe's cloud-hypervisor path must start it, read the
//!   marks from the log and the events from the event monitor, make and remove the TAP, and leave
//!   nothing behind.
//! - QEMU (TCG on hosts without hardware KVM): boots the project's kernel and image to chinit's ready.

use std::path::{Path, PathBuf};
use std::time::Duration;

use host_probe::run::{self, HostOffer, Options, VmmChoice, Wait};

const LOAD: u64 = 0x10_0000;

/// Guest code, 32-bit protected mode (the PVH entry state).
fn pvh_code() -> Vec<u8> {
    let mut c = Vec::new();
    for code in 0x60u8..=0x63 {
        c.extend_from_slice(&[0xB0, code, 0xE6, 0x80]); // mov al, code; out 0x80, al
    }
    c.extend_from_slice(&[0x66, 0xBA, 0x00, 0x06]); // mov dx, 0x600
    c.extend_from_slice(&[0xB0, (5 << 2) | (1 << 5)]); // mov al, S5 | SLP_EN
    c.push(0xEE); // out dx, al
    c.extend_from_slice(&[0xF4, 0xEB, 0xFD]); // hlt; jmp back to hlt
    c
}

/// An ELF64 with one PT_LOAD (the code at 1 MiB) and one PT_NOTE (the PVH entry point).
fn pvh_elf() -> Vec<u8> {
    let code = pvh_code();
    let mut note = Vec::new();
    for v in [4u32, 4, 18] {
        note.extend_from_slice(&v.to_le_bytes()); // namesz, descsz, XEN_ELFNOTE_PHYS32_ENTRY
    }
    note.extend_from_slice(b"Xen\0");
    note.extend_from_slice(&(LOAD as u32).to_le_bytes());

    let mut e = Vec::new();
    e.extend_from_slice(b"\x7fELF");
    e.extend_from_slice(&[2, 1, 1, 0]); // 64-bit, little-endian, version 1, SysV
    e.extend_from_slice(&[0; 8]);
    e.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    e.extend_from_slice(&0x3Eu16.to_le_bytes()); // EM_X86_64
    e.extend_from_slice(&1u32.to_le_bytes());
    e.extend_from_slice(&LOAD.to_le_bytes()); // e_entry
    e.extend_from_slice(&64u64.to_le_bytes()); // e_phoff
    e.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
    e.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    for v in [64u16, 56, 2, 64, 0, 0] {
        e.extend_from_slice(&v.to_le_bytes()); // ehsize, phentsize, phnum, shentsize, shnum, shstrndx
    }
    let phdr =
        |e: &mut Vec<u8>, p_type: u32, flags: u32, off: u64, addr: u64, size: u64, align: u64| {
            e.extend_from_slice(&p_type.to_le_bytes());
            e.extend_from_slice(&flags.to_le_bytes());
            for v in [off, addr, addr, size, size, align] {
                e.extend_from_slice(&v.to_le_bytes());
            }
        };
    let note_off = 64 + 2 * 56;
    phdr(&mut e, 1, 5, 0x1000, LOAD, code.len() as u64, 0x1000); // PT_LOAD, R+X
    phdr(&mut e, 4, 4, note_off, 0, note.len() as u64, 4); // PT_NOTE
    e.extend_from_slice(&note);
    e.resize(0x1000, 0);
    e.extend_from_slice(&code);
    e
}

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
fn pvh_guest_elf_is_well_formed() {
    let e = pvh_elf();
    assert_eq!(&e[..4], b"\x7fELF");
    assert_eq!(u64::from_le_bytes(e[24..32].try_into().unwrap()), LOAD);
    // The note sits where the PT_NOTE header says, and carries the entry point.
    let note = &e[176..196];
    assert_eq!(&note[12..16], b"Xen\0");
    assert_eq!(
        u32::from_le_bytes(note[16..20].try_into().unwrap()),
        LOAD as u32
    );
    assert_eq!(&e[0x1000..0x1004], &[0xB0, 0x60, 0xE6, 0x80]);
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
    std::fs::write(&kernel, pvh_elf()).unwrap();
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
