//! QEMU command line: `microvm` on x86_64, `virt` on aarch64; virtio-mmio block and net, the serial
//! console to a file, (x86) port 0x80 to an `isa-debugcon` chardev host-probe reads, and vsock: the
//! host kernel's vhost-vsock where it exists, else vhost-device-vsock (vhost-user, so guest memory
//! is a shared memfd).

use crate::vmm::{Accel, Role, Root, Spec, Vsock};

/// vhost-device-vsock (vhost-user) blocks QEMU's migration, so a snapshot.
pub const VHOST_USER_NOT_MIGRATABLE: &str =
    "QEMU cannot snapshot a guest whose vsock is vhost-device-vsock (vhost-user: \"non-migratable device\"), \
     and a copy needs vsock to be made unique: load the kernel's vhost-vsock (modprobe vhost_vsock, so /dev/vhost-vsock exists), \
     or use --vmm cloud-hypervisor";

/// `--root pmem` has no virtio-mmio device in QEMU microvm.
pub const PMEM_UNSUPPORTED: &str =
    "--root pmem is not supported with QEMU microvm (no virtio-mmio pmem device): use --root disk, or --vmm cloud-hypervisor";

/// The full argv, program first.
pub fn argv(spec: &Spec) -> Result<Vec<String>, &'static str> {
    let mut a: Vec<String> = vec![spec.binary.display().to_string()];
    let x86 = spec.arch == rootfs_builder::elf::Arch::X86_64;
    // The RTC: off under KVM (kvm-clock gives the guest its wall clock; one device less), on under
    // TCG. There the guest has no kvm-clock and reads the wall clock from the CMOS RTC before its
    // own clock starts: with none, every read finds "update in progress" and waits it out, about
    // 1.5-3 s of each boot here (sampled: `delay_tsc` and `rtc_cmos_read` until timekeeping starts).
    let rtc = if spec.accel == Accel::Kvm { "off" } else { "on" };
    let mut machine = if x86 { format!("microvm,x-option-roms=off,rtc={rtc}") } else { "virt".to_string() };
    let memory_file = match &spec.role {
        Role::Boot => None,
        Role::Source { memory, .. } => Some((memory, "on")),
        Role::Restore { memory, .. } => Some((memory, "off")),
    };
    if matches!(spec.vsock, Some(Vsock::VhostUser { .. })) || memory_file.is_some() {
        machine.push_str(",memory-backend=mem");
    }
    push(&mut a, "-machine", machine);
    match spec.accel {
        Accel::Kvm => {
            push(&mut a, "-accel", "kvm".into());
            push(&mut a, "-cpu", "host".into());
        }
        Accel::Tcg => {
            push(&mut a, "-accel", "tcg".into());
            // On arm, `max` emulates pointer authentication, which costs TCG much; a real core does not.
            push(&mut a, "-cpu", if x86 { "max" } else { "cortex-a72" }.into());
        }
    }
    push(&mut a, "-smp", spec.cpus.to_string());
    push(&mut a, "-m", format!("{}M", spec.memory_mib));
    for flag in ["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"] {
        a.push(flag.to_string());
    }
    push(&mut a, "-kernel", spec.kernel.display().to_string());
    push(&mut a, "-append", spec.cmdline.clone());
    match &spec.root {
        Root::Disk(p) => {
            push(&mut a, "-drive", format!("id=root,file={},format=raw,if=none,read-only=on", p.display()));
            push(&mut a, "-device", "virtio-blk-device,drive=root".into());
        }
        Root::Initramfs(p) => push(&mut a, "-initrd", p.display().to_string()),
        Root::Pmem(_) => return Err(PMEM_UNSUPPORTED),
    }
    if let Some(i) = &spec.initramfs {
        push(&mut a, "-initrd", i.display().to_string());
    }
    push(&mut a, "-chardev", format!("file,id=serial0,path={}", spec.serial.display()));
    push(&mut a, "-serial", "chardev:serial0".into());
    if x86 {
        push(&mut a, "-chardev", format!("socket,id=debugcon,path={}", spec.debugcon_socket.display()));
        push(&mut a, "-device", "isa-debugcon,iobase=0x80,chardev=debugcon".into());
    }
    if let Some(net) = &spec.net {
        push(&mut a, "-netdev", format!("tap,id=net0,ifname={},script=no,downscript=no", net.tap));
        push(&mut a, "-device", format!("virtio-net-device,netdev=net0,mac={}", net.mac));
    }
    if let Some((path, share)) = memory_file {
        if matches!(spec.vsock, Some(Vsock::VhostUser { .. })) {
            return Err(VHOST_USER_NOT_MIGRATABLE);
        }
        push(&mut a, "-object", format!("memory-backend-file,id=mem,size={}M,mem-path={},share={share}", spec.memory_mib, path.display()));
    }
    match &spec.vsock {
        Some(Vsock::VhostUser { socket }) => {
            push(&mut a, "-object", format!("memory-backend-memfd,id=mem,size={}M,share=on", spec.memory_mib));
            push(&mut a, "-chardev", format!("socket,id=vsock0,path={}", socket.display()));
            push(&mut a, "-device", "vhost-user-vsock-device,chardev=vsock0".into());
        }
        Some(Vsock::Kernel { cid }) => push(&mut a, "-device", format!("vhost-vsock-device,guest-cid={cid}")),
        // cloud-hypervisor's kind: the plan never gives it to QEMU.
        Some(Vsock::Hybrid { .. }) | None => {}
    }
    if let Role::Source { qmp, .. } | Role::Restore { qmp, .. } = &spec.role {
        push(&mut a, "-qmp", format!("unix:{},server=on,wait=off", qmp.display()));
    }
    if let Role::Restore { .. } = spec.role {
        push(&mut a, "-incoming", "defer".into());
    }
    Ok(a)
}

fn push(a: &mut Vec<String>, key: &str, value: String) {
    a.push(key.to_string());
    a.push(value);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmm::{shell_line, Net};
    use std::path::PathBuf;

    fn spec(root: Root, accel: Accel, net: bool, vsock: bool) -> Spec {
        Spec {
            binary: "qemu-system-x86_64".into(),
            kernel: "/k/bzImage".into(),
            root,
            initramfs: None,
            cmdline: "console=ttyS0 io_delay=none".into(),
            cpus: 2,
            memory_mib: 256,
            net: net.then(|| Net { tap: "hp77b".into(), mac: "02:68:70:00:00:07".into() }),
            vsock: vsock.then(|| Vsock::VhostUser { socket: "/r/vhost-user.sock".into() }),
            serial: "/r/serial.log".into(),
            console: crate::vmm::Console::Serial,
            fs: None,
            rng: false,
            api_socket: "/r/api.sock".into(),
            event_monitor: "/r/events.json".into(),
            log_file: "/r/vmm.log".into(),
            debugcon_socket: "/r/debugcon.sock".into(),
            accel,
            role: Role::Boot,
            root_writable: false,
            arch: rootfs_builder::elf::Arch::X86_64,
        }
    }

    #[test]
    fn argv_for_each_accel_root_and_device_set() {
        let cases = [
            (
                spec(Root::Disk(PathBuf::from("/img/rootfs.ext4")), Accel::Tcg, true, true),
                "qemu-system-x86_64 -machine microvm,x-option-roms=off,rtc=on,memory-backend=mem \
                 -accel tcg -cpu max -smp 2 -m 256M -nodefaults -no-user-config -nographic -no-reboot \
                 -kernel /k/bzImage -append 'console=ttyS0 io_delay=none' \
                 -drive id=root,file=/img/rootfs.ext4,format=raw,if=none,read-only=on \
                 -device virtio-blk-device,drive=root \
                 -chardev file,id=serial0,path=/r/serial.log -serial chardev:serial0 \
                 -chardev socket,id=debugcon,path=/r/debugcon.sock \
                 -device isa-debugcon,iobase=0x80,chardev=debugcon \
                 -netdev tap,id=net0,ifname=hp77b,script=no,downscript=no \
                 -device virtio-net-device,netdev=net0,mac=02:68:70:00:00:07 \
                 -object memory-backend-memfd,id=mem,size=256M,share=on \
                 -chardev socket,id=vsock0,path=/r/vhost-user.sock \
                 -device vhost-user-vsock-device,chardev=vsock0",
            ),
            (
                spec(Root::Initramfs(PathBuf::from("/img/i.cpio")), Accel::Kvm, false, false),
                "qemu-system-x86_64 -machine microvm,x-option-roms=off,rtc=off \
                 -accel kvm -cpu host -smp 2 -m 256M -nodefaults -no-user-config -nographic -no-reboot \
                 -kernel /k/bzImage -append 'console=ttyS0 io_delay=none' -initrd /img/i.cpio \
                 -chardev file,id=serial0,path=/r/serial.log -serial chardev:serial0 \
                 -chardev socket,id=debugcon,path=/r/debugcon.sock \
                 -device isa-debugcon,iobase=0x80,chardev=debugcon",
            ),
        ];
        for (spec, want) in cases {
            assert_eq!(shell_line(&argv(&spec).unwrap()), want);
        }
        // The kernel's vhost-vsock: one device, no shared memory.
        let kernel = Spec { vsock: Some(Vsock::Kernel { cid: 4242 }), ..spec(Root::Disk(PathBuf::from("/i")), Accel::Kvm, false, false) };
        let line = shell_line(&argv(&kernel).unwrap());
        assert!(line.starts_with("qemu-system-x86_64 -machine microvm,x-option-roms=off,rtc=off -accel kvm"), "{line}");
        assert!(line.ends_with(" -device vhost-vsock-device,guest-cid=4242") && !line.contains("memfd"), "{line}");
    }

    #[test]
    fn a_snapshot_source_shares_its_memory_file_and_a_copy_maps_it_private_and_waits() {
        let base = Spec { vsock: Some(Vsock::Kernel { cid: 9 }), ..spec(Root::Disk(PathBuf::from("/i")), Accel::Kvm, false, false) };
        let source = Spec { role: Role::Source { memory: "/s/memory".into(), qmp: "/r/qmp.sock".into() }, ..base.clone() };
        let line = shell_line(&argv(&source).unwrap());
        assert!(line.starts_with("qemu-system-x86_64 -machine microvm,x-option-roms=off,rtc=off,memory-backend=mem "), "{line}");
        assert!(
            line.ends_with(
                " -object memory-backend-file,id=mem,size=256M,mem-path=/s/memory,share=on \
                 -device vhost-vsock-device,guest-cid=9 -qmp unix:/r/qmp.sock,server=on,wait=off"
            ),
            "{line}"
        );
        let copy = Spec {
            role: Role::Restore { from: "/s".into(), memory: "/s/memory".into(), qmp: "/r/qmp.sock".into(), mode: Default::default() },
            ..base.clone()
        };
        let line = shell_line(&argv(&copy).unwrap());
        assert!(line.contains(" -object memory-backend-file,id=mem,size=256M,mem-path=/s/memory,share=off "), "{line}");
        assert!(line.ends_with(" -qmp unix:/r/qmp.sock,server=on,wait=off -incoming defer"), "{line}");
        let vhost_user = Spec { vsock: Some(Vsock::VhostUser { socket: "/r/v".into() }), ..source };
        assert_eq!(argv(&vhost_user).unwrap_err(), VHOST_USER_NOT_MIGRATABLE);
    }

    #[test]
    fn an_arm_guest_gets_the_virt_machine_without_port_0x80() {
        let s = Spec { arch: rootfs_builder::elf::Arch::Aarch64, ..spec(Root::Disk(PathBuf::from("/img/r.ext4")), Accel::Tcg, true, true) };
        let line = shell_line(&argv(&s).unwrap());
        assert!(
            line.starts_with("qemu-system-x86_64 -machine virt,memory-backend=mem -accel tcg -cpu cortex-a72 -smp 2 -m 256M"),
            "{line}"
        );
        assert!(!line.contains("debugcon") && !line.contains("microvm"), "{line}");
        assert!(
            line.contains(" -device virtio-blk-device,drive=root ") && line.contains(" -device vhost-user-vsock-device,chardev=vsock0"),
            "{line}"
        );
        let kvm = Spec { accel: Accel::Kvm, ..s };
        assert!(shell_line(&argv(&kvm).unwrap()).contains(" -accel kvm -cpu host "));
    }

    #[test]
    fn pmem_is_refused_with_the_fix() {
        let s = spec(Root::Pmem(PathBuf::from("/img/r.ext4")), Accel::Tcg, false, false);
        assert!(argv(&s).unwrap_err().contains("--root disk"));
    }
}
