//! The plan, on literal host facts.
use super::*;
use crate::vsock as guest_vsock;

fn host(kvm: KvmKind, ch: bool, vhost: bool) -> HostOffer {
    HostOffer {
        kvm,
        kvm_usable: true,
        vmm_programs: [
            ch.then(|| ("cloud-hypervisor", PathBuf::from("/bin/cloud-hypervisor"))),
            Some(("qemu-system-aarch64", "/usr/bin/qemu-system-aarch64".into())),
            Some(("qemu-system-x86_64", "/bin/qemu-system-x86_64".into())),
        ]
        .into_iter()
        .flatten()
        .collect(),
        arch: Arch::X86_64,
        vhost_vsock: vhost.then(|| PathBuf::from("/bin/vhost-device-vsock")),
        kernel_vsock: false,
        virtiofsd: None,
        hypervisor: crate::cpuid::Hypervisor::None,
        cache_root: None,
        tsc_khz: Some(2_600_000),
    }
}

/// A kernel and an image in a directory of their own, removed on drop.
struct Fixture {
    o: Options,
    dir: PathBuf,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn fixture() -> Fixture {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!("hp-plan-{}-{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst)));
    std::fs::create_dir_all(&dir).unwrap();
    let (k, r) = (dir.join("bzImage"), dir.join("rootfs.ext4"));
    std::fs::write(&k, b"k").unwrap();
    std::fs::write(&r, b"r").unwrap();
    Fixture { o: Options { kernel: Some(k), rootfs: Some(r), ..Options::default() }, dir }
}

/// `--layout kuasar --share`: cloud-hypervisor with the root on pmem partition 1, hvc0, rng, and
/// the shared directory served by virtiofsd; what cannot be that layout is refused with the fix.
#[test]
fn kuasar_layout_and_a_share() {
    let f = fixture();
    let disk = f.dir.join("gpt.img");
    let mut bytes = vec![0u8; 2 << 20];
    bytes[512..520].copy_from_slice(b"EFI PART");
    std::fs::write(&disk, &bytes).unwrap();
    let share = f.dir.join("share");
    std::fs::create_dir_all(&share).unwrap();
    let h = HostOffer { virtiofsd: Some(VIRTIOFSD.into()), ..host(KvmKind::Hardware("kvm_amd"), true, false) };
    let o = Options {
        vmm: VmmChoice::Named(vmm::cloud_hypervisor::VMM),
        rootfs: Some(disk.clone()),
        root_mode: RootMode::Pmem,
        layout: Layout::Kuasar,
        share: Some(crate::options::Share { dir: share.clone(), tag: "kuasar".into() }),
        ..f.o.clone()
    };
    let p = plan(&o, &h, 0).unwrap();
    let line = vmm::shell_line(&p.argv);
    let run = p.run_dir.display().to_string();
    for want in [
        format!("--pmem file={},discard_writes=on", disk.display()),
        "--memory size=256M,shared=on --rng src=/dev/urandom".to_string(),
        format!("--fs tag=kuasar,socket={run}/fs.sock"),
        format!("--serial off --console file={run}/serial.log"),
    ] {
        assert!(line.contains(&want), "{want} not in {line}");
    }
    assert!(p.spec.cmdline.starts_with("console=hvc0 "), "{}", p.spec.cmdline);
    assert!(p.spec.cmdline.contains("root=/dev/pmem0p1 ro rootfstype=ext4 rootflags=data=ordered,errors=remount-ro"), "{}", p.spec.cmdline);
    assert!(p.spec.cmdline.contains("chinit.mount=kuasar:/mnt/kuasar:virtiofs"), "{}", p.spec.cmdline);
    let v = p.virtiofsd_argv.clone().unwrap().join(" ");
    assert_eq!(v, format!("{VIRTIOFSD} --socket-path={run}/fs.sock -o source={} -o cache=none -o sandbox=chroot", share.display()));
    assert!(p.root_attach.contains("GPT disk"), "{}", p.root_attach);
    // Refused, each with what to do.
    let qemu = Options { vmm: VmmChoice::Named(vmm::qemu::VMM), root_mode: RootMode::Disk, ..o.clone() };
    assert!(plan(&qemu, &h, 0).unwrap_err().to_string().contains("--vmm cloud-hypervisor"));
    let flat_image = f.dir.join("flat.img");
    std::fs::write(&flat_image, vec![0u8; 2 << 20]).unwrap();
    let flat = Options { rootfs: Some(flat_image), ..o.clone() };
    assert!(plan(&flat, &h, 0).unwrap_err().to_string().contains("rootfs-builder --gpt"));
    let no_fsd = HostOffer { virtiofsd: None, ..h.clone() };
    assert!(plan(&o, &no_fsd, 0).unwrap_err().to_string().contains("qemu-system-common"));
    std::fs::write(&disk, &bytes[..1 << 20]).unwrap();
    assert!(plan(&o, &h, 0).unwrap_err().to_string().contains("whole number of 2 MiB"));
    std::fs::write(&disk, &bytes).unwrap();
    let gone = Options { share: Some(crate::options::Share { dir: f.dir.join("nope"), tag: "x".into() }), ..o.clone() };
    assert!(plan(&gone, &h, 0).unwrap_err().to_string().contains("shared directory"));
}

#[test]
fn auto_picks_cloud_hypervisor_only_with_hardware_kvm() {
    let cases = [
        (KvmKind::Hardware("kvm_intel"), true, vmm::cloud_hypervisor::VMM, Accel::Kvm, false),
        (KvmKind::Hardware("kvm_amd"), false, vmm::qemu::VMM, Accel::Kvm, false),
        (KvmKind::Pvm, true, vmm::qemu::VMM, Accel::Tcg, true),
        (KvmKind::Absent, false, vmm::qemu::VMM, Accel::Tcg, true),
    ];
    for (kvm, ch, vmm, accel, tcg_note) in cases {
        let p = plan(&fixture().o, &host(kvm, ch, true), 0).unwrap();
        assert_eq!((p.vmm, p.accel), (vmm, accel), "{kvm:?} ch={ch}");
        assert_eq!(p.notes.iter().any(|n| n.ends_with("using TCG emulation, timings are not representative")), tcg_note, "{kvm:?}");
        if kvm == KvmKind::Pvm {
            assert!(p.notes.iter().any(|n| n == TCG_NOTE));
        }
        assert_eq!(p.spec.cmdline.contains("tsc_early_khz="), tcg_note, "{kvm:?}");
    }
}

#[test]
fn tcg_notes_say_why() {
    assert_eq!(tcg_note(KvmKind::Pvm, true), TCG_NOTE);
    assert!(tcg_note(KvmKind::Hardware("kvm_intel"), false).starts_with("/dev/kvm (kvm_intel) is not usable"));
    assert!(tcg_note(KvmKind::Absent, false).starts_with("no hardware KVM (no kvm_intel/kvm_amd)"));
}

#[test]
fn qemu_plan_wires_vsock_through_vhost_device_vsock() {
    let p = plan(&fixture().o, &host(KvmKind::Pvm, false, true), 7).unwrap();
    let dir = p.run_dir.display().to_string();
    let v = p.vhost_argv.clone().unwrap().join(" ");
    assert_eq!(v, format!("/bin/vhost-device-vsock --guest-cid 3 --socket {dir}/vhost-user.sock --uds-path {dir}/vsock.sock"));
    let line = vmm::shell_line(&p.argv);
    assert!(line.contains(&format!("-chardev socket,id=vsock0,path={dir}/vhost-user.sock")), "{line}");
    assert!(line.contains("chinit.notify=vsock:10000"), "{line}");
    assert!(line.contains(&format!("chinit.ip={}/16", p.guest_ip.unwrap())), "{line}");
    assert!(line.contains("read-only=on"), "{line}");
    assert!(line.contains(" tsc_early_khz=2600000"), "TCG guests get the TSC rate: {line}");
    let dry = dry_run_text(&p);
    assert!(dry.contains("ip tuntap add dev "), "{dry}");
    assert!(dry.contains("vhost-device-vsock --guest-cid 3"), "{dry}");
    assert!(dry.ends_with(&format!("{line}\n")), "{dry}");
}

#[test]
fn without_vhost_device_vsock_qemu_runs_without_vsock_and_says_how_to_get_it() {
    let p = plan(&fixture().o, &host(KvmKind::Pvm, false, false), 0).unwrap();
    assert!(p.spec.vsock.is_none() && p.guest_vsock.is_none());
    assert!(p.notes.iter().any(|n| n.contains("cargo install vhost-device-vsock")));
    assert!(!p.spec.cmdline.contains("chinit.notify"));
}

/// Where the host kernel has vhost-vsock, QEMU gets its device (no helper, no shared memory),
/// with a context id and notify port of the run's own; the plan says it is the kernel's.
#[test]
fn qemu_plan_takes_the_kernels_vsock_where_it_exists() {
    let h = HostOffer { kernel_vsock: true, ..host(KvmKind::Hardware("kvm_amd"), false, true) };
    let p = plan(&fixture().o, &h, 5).unwrap();
    let (cid, port) = crate::vsock::kernel_ids(std::process::id(), 5);
    assert_eq!(p.guest_vsock, Some(GuestVsock::Kernel { cid }));
    assert!(p.vhost_argv.is_none());
    let line = vmm::shell_line(&p.argv);
    assert!(line.contains(&format!("-device vhost-vsock-device,guest-cid={cid}")) && !line.contains("memfd"), "{line}");
    assert!(line.contains(&format!("chinit.vsock_port=1024 chinit.notify=vsock:{port}")), "{line}");
    assert_ne!(plan(&fixture().o, &h, 6).unwrap().guest_vsock, p.guest_vsock, "another run, another CID");
}

/// An emulated host (QEMU TCG's CPUID signature) makes even KVM runs not representative.
#[test]
fn an_emulated_host_is_noted() {
    let h = HostOffer {
        hypervisor: crate::cpuid::Hypervisor::Emulated("TCGTCGTCGTCG".into()),
        ..host(KvmKind::Hardware("kvm_amd"), false, false)
    };
    let p = plan(&fixture().o, &h, 0).unwrap();
    assert_eq!(p.accel, Accel::Kvm);
    assert!(p.notes.iter().any(|n| n.contains("TCGTCGTCGTCG") && n.contains("not representative")), "{:?}", p.notes);
    assert!(!p.representative);
    let real = plan(&fixture().o, &HostOffer { hypervisor: crate::cpuid::Hypervisor::None, ..h }, 0).unwrap();
    assert!(real.representative, "hardware KVM on bare metal");
    let tcg = plan(&fixture().o, &host(KvmKind::Pvm, false, false), 0).unwrap();
    assert!(!tcg.representative, "TCG");
}

#[test]
fn missing_pieces_name_their_fix() {
    let h = host(KvmKind::Pvm, false, false);
    let f = fixture();
    let no_kernel = Options { kernel: None, ..f.o.clone() };
    let e = plan(&no_kernel, &h, 0).unwrap_err();
    assert_eq!(e.exit_code().code(), 3);
    assert!(e.to_string().contains("run `rootfs-builder kernel --arch x86_64`"), "{e}");
    let no_image = Options { rootfs: Some("/nonexistent/rootfs.ext4".into()), ..f.o.clone() };
    let e = plan(&no_image, &h, 0).unwrap_err();
    assert!(e.to_string().contains("rootfs-builder --out rootfs_fast.ext4"), "{e}");
    let ch = Options { vmm: VmmChoice::Named(vmm::cloud_hypervisor::VMM), ..f.o.clone() };
    assert!(plan(&ch, &h, 0).unwrap_err().to_string().contains("install cloud-hypervisor"));
    let pmem = Options { root_mode: RootMode::Pmem, ..f.o.clone() };
    assert_eq!(plan(&pmem, &h, 0).unwrap_err().exit_code().code(), 2);
}

#[test]
fn initramfs_needs_a_kernel_with_initrd_support() {
    let d = std::env::temp_dir().join(format!("hp-initrd-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    let (k, i) = (d.join("bzImage"), d.join("i.cpio"));
    std::fs::write(&k, b"k").unwrap();
    std::fs::write(&i, b"i").unwrap();
    let o = Options { kernel: Some(k.clone()), initramfs: Some(i), ..Options::default() };
    let h = host(KvmKind::Pvm, false, false);
    assert!(kernel_supports_initrd(&k), "no config file: assume yes");
    assert!(plan(&o, &h, 0).is_ok());
    std::fs::write(d.join("config"), "# CONFIG_BLK_DEV_INITRD is not set\n").unwrap();
    let e = plan(&o, &h, 0).unwrap_err();
    assert!(e.to_string().contains("CONFIG_BLK_DEV_INITRD=y"), "{e}");
    std::fs::write(d.join("config"), "CONFIG_BLK_DEV_INITRD=y\n").unwrap();
    assert!(plan(&o, &h, 0).unwrap().spec.cmdline.contains("rdinit=/init"));
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_guest_with_neither_net_nor_vsock_is_refused() {
    let f = fixture();
    let o = Options { net: false, ..f.o.clone() };
    let e = plan(&o, &host(KvmKind::Pvm, false, false), 0).unwrap_err();
    assert_eq!(e.exit_code().code(), 2);
    assert!(e.to_string().contains("cargo install vhost-device-vsock"), "{e}");
    assert!(plan(&o, &host(KvmKind::Pvm, false, true), 0).is_ok());
    let no_agent = Options { wait: Wait::Exit, vsock: false, ..o };
    assert!(plan(&no_agent, &host(KvmKind::Pvm, false, true), 0).is_ok());
}

#[test]
fn initramfs_in_front_of_a_read_only_disk() {
    let d = std::env::temp_dir().join(format!("hp-initrd-disk-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    let i = d.join("i.cpio");
    std::fs::write(&i, b"i").unwrap();
    let f = fixture();
    let o = Options { initramfs: Some(i.clone()), ..f.o.clone() };
    let p = plan(&o, &host(KvmKind::Pvm, false, false), 0).unwrap();
    assert_eq!(p.root_kind, RootKind::Disk);
    assert_eq!(p.spec.initramfs.as_deref(), Some(i.as_path()));
    let line = vmm::shell_line(&p.argv);
    assert!(line.contains(&format!("-initrd {}", i.display())), "{line}");
    assert!(line.contains("read-only=on"), "{line}");
    assert!(p.spec.cmdline.contains("rdinit=/init chinit.root=/dev/vda ro"), "{}", p.spec.cmdline);
    assert!(p.root_attach.contains("starts from the initramfs"), "{}", p.root_attach);
    std::fs::remove_dir_all(&d).unwrap();
}

/// An aarch64 kernel (named, or told by `--arch`) is booted by qemu-system-aarch64 on QEMU `virt`,
/// emulated on an x86_64 host, with the PL011 console; cloud-hypervisor is refused for it.
#[test]
fn an_aarch64_kernel_boots_under_qemu_virt() {
    let h = host(KvmKind::Hardware("kvm_amd"), true, true);
    let f = fixture();
    let arm = Options { arch: Some(Arch::Aarch64), ..f.o.clone() };
    let p = plan(&arm, &h, 0).unwrap();
    assert_eq!((p.spec.arch, p.accel, p.argv[0].as_str()), (Arch::Aarch64, Accel::Tcg, "/usr/bin/qemu-system-aarch64"));
    assert!(p.spec.cmdline.starts_with("console=ttyAMA0 ") && !p.spec.cmdline.contains("tsc_early_khz"), "{}", p.spec.cmdline);
    assert!(p.notes.iter().any(|n| n.contains("an aarch64 guest on an x86_64 host")), "{:?}", p.notes);
    let ch = Options { vmm: VmmChoice::Named(vmm::cloud_hypervisor::VMM), ..arm.clone() };
    assert!(plan(&ch, &h, 0).unwrap_err().to_string().contains("--vmm qemu"));
    let mut no_qemu = h.clone();
    no_qemu.vmm_programs.remove("qemu-system-aarch64");
    assert!(plan(&arm, &no_qemu, 0).unwrap_err().to_string().contains("apt-get install qemu-system-arm"));

    // On an arm64 host with KVM: cloud-hypervisor (auto) with the `Image`, the PL011 console, no
    // port-0x80 anything; QEMU with KVM and `-cpu host`.
    let arm_host = HostOffer { arch: Arch::Aarch64, ..h };
    let p = plan(&Options { arch: None, ..arm.clone() }, &arm_host, 0).unwrap();
    assert_eq!((p.vmm, p.accel, p.spec.arch), (vmm::cloud_hypervisor::VMM, Accel::Kvm, Arch::Aarch64));
    let line = vmm::shell_line(&p.argv);
    assert!(line.starts_with("/bin/cloud-hypervisor --api-socket ") && line.contains("console=ttyAMA0"), "{line}");
    let q = plan(&Options { vmm: VmmChoice::Named(vmm::qemu::VMM), ..arm }, &arm_host, 0).unwrap();
    assert!(vmm::shell_line(&q.argv).contains("-machine virt,memory-backend=mem -accel kvm -cpu host"), "{:?}", q.argv);
}

/// Within one host-probe, no two runs share a TAP name, a guest address or the kernel vsock's
/// context id and notify port, however many it makes; a run past the last it can name is refused
/// before anything starts.
#[test]
fn the_names_of_a_process_never_repeat() {
    let max = MAX_RUNS as u32;
    for pid in [1, 2, 4242, 32_767, 524_287, 4_194_303] {
        let mut taps = std::collections::HashSet::new();
        let mut ips = std::collections::HashSet::new();
        let mut cids = std::collections::HashSet::new();
        let mut ports = std::collections::HashSet::new();
        for seq in 0..max {
            let (cid, port) = guest_vsock::kernel_ids(pid, seq);
            assert!(cid > 2 && cid < u32::MAX && (1024..u32::MAX).contains(&port), "pid {pid} run {seq}: {cid} {port}");
            let fresh = [taps.insert(tap::tap_name(pid, seq)), ips.insert(tap::guest_ip(pid, seq)), cids.insert(cid), ports.insert(port)];
            assert_eq!(fresh, [true; 4], "pid {pid}: run {seq} repeats a name (TAP, address, CID, port) of an earlier run");
        }
    }
    let f = fixture();
    let h = host(KvmKind::Pvm, false, true);
    assert!(plan(&f.o, &h, max - 1).is_ok());
    let e = plan(&f.o, &h, max).unwrap_err();
    assert_eq!(e.exit_code().code(), 2, "{e}");
    assert!(e.to_string().contains(&format!("at most {max} runs")), "{e}");
}

/// `--vmm auto` takes Firecracker only where it would otherwise fail: hardware KVM, a native
/// guest, no cloud-hypervisor and no QEMU for this architecture. Anywhere QEMU or
/// cloud-hypervisor was taken, it still is.
#[test]
fn auto_takes_firecracker_only_where_no_other_vmm_runs() {
    use crate::vmm::{cloud_hypervisor, firecracker, qemu};
    let hw = KvmKind::Hardware("kvm_amd");
    let with = |ch: bool, fc: bool, qemu_x86: bool, kvm: KvmKind| {
        let mut h = host(kvm, ch, false);
        if fc {
            h.vmm_programs.insert("firecracker", "/bin/firecracker".into());
        }
        if !qemu_x86 {
            h.vmm_programs.remove("qemu-system-x86_64");
        }
        h
    };
    let cases = [
        (with(true, true, true, hw), true, cloud_hypervisor::VMM),
        (with(false, true, true, hw), true, qemu::VMM),
        (with(false, true, true, KvmKind::Pvm), true, qemu::VMM),
        (with(false, true, false, hw), true, firecracker::VMM),
        (with(false, true, false, KvmKind::Pvm), true, qemu::VMM),
        (with(false, true, false, hw), false, qemu::VMM),
        (with(false, false, false, hw), true, qemu::VMM),
    ];
    for (i, (h, native, want)) in cases.into_iter().enumerate() {
        assert_eq!(choose_vmm(VmmChoice::Auto, &h, native, &mut Vec::new()).unwrap(), want, "case {i}");
    }
}
