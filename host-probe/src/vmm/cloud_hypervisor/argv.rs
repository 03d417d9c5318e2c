//! cloud-hypervisor (v53 syntax) command line.

use crate::vmm::{Console, Role, Root, Spec, Vsock};

/// The full argv, program first: a boot, or (`Role::Restore`) a restore, where every device comes
/// from the snapshot's `config.json` and only the API socket, event monitor and log are given.
///
/// The serial console goes to a file and the virtio console is off; the event monitor and the log
/// (where guest writes to port 0x80 appear at WARN) go to files host-probe parses.
pub fn argv(spec: &Spec) -> Vec<String> {
    let mut a: Vec<String> = vec![spec.binary.display().to_string()];
    push(&mut a, "--api-socket", format!("path={}", spec.api_socket.display()));
    if let Role::Restore { from, mode, .. } = &spec.role {
        push(&mut a, "--restore", format!("source_url=file://{},resume=true,memory_restore_mode={}", from.display(), mode.name()));
        push(&mut a, "--event-monitor", format!("path={}", spec.event_monitor.display()));
        push(&mut a, "--log-file", spec.log_file.display().to_string());
        return a;
    }
    push(&mut a, "--kernel", spec.kernel.display().to_string());
    match &spec.root {
        Root::Disk(p) => push(&mut a, "--disk", format!("path={},readonly=on,image_type=raw", p.display())),
        Root::Pmem(p) => push(&mut a, "--pmem", format!("file={},discard_writes=on", p.display())),
        Root::Initramfs(p) => push(&mut a, "--initramfs", p.display().to_string()),
    }
    if let Some(i) = &spec.initramfs {
        push(&mut a, "--initramfs", i.display().to_string());
    }
    push(&mut a, "--cmdline", spec.cmdline.clone());
    push(&mut a, "--cpus", format!("boot={}", spec.cpus));
    // virtio-fs maps guest memory into virtiofsd: it must be shared.
    let shared = if spec.fs.is_some() { ",shared=on" } else { "" };
    push(&mut a, "--memory", format!("size={}M{shared}", spec.memory_mib));
    if spec.rng {
        push(&mut a, "--rng", "src=/dev/urandom".into());
    }
    if let Some(fs) = &spec.fs {
        push(&mut a, "--fs", format!("tag={},socket={}", fs.tag, fs.socket.display()));
    }
    if let Some(net) = &spec.net {
        push(&mut a, "--net", format!("tap={},mac={}", net.tap, net.mac));
    }
    // cloud-hypervisor's vsock is always its own hybrid one (the plan gives no other kind).
    if let Some(Vsock::Hybrid { cid, socket }) = &spec.vsock {
        push(&mut a, "--vsock", format!("cid={cid},socket={}", socket.display()));
    }
    match spec.console {
        Console::Serial => {
            push(&mut a, "--serial", format!("file={}", spec.serial.display()));
            push(&mut a, "--console", "off".to_string());
        }
        Console::Virtio => {
            push(&mut a, "--serial", "off".to_string());
            push(&mut a, "--console", format!("file={}", spec.serial.display()));
        }
    }
    push(&mut a, "--event-monitor", format!("path={}", spec.event_monitor.display()));
    push(&mut a, "--log-file", spec.log_file.display().to_string());
    a
}

fn push(a: &mut Vec<String>, key: &str, value: String) {
    a.push(key.to_string());
    a.push(value);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmm::{shell_line, Accel, Net};
    use std::path::PathBuf;

    fn spec(root: Root, net: bool, vsock: bool) -> Spec {
        Spec {
            binary: "cloud-hypervisor".into(),
            kernel: "/k/vmlinux".into(),
            root,
            initramfs: None,
            cmdline: "console=ttyS0 root=/dev/vda ro".into(),
            cpus: 1,
            memory_mib: 128,
            net: net.then(|| Net { tap: "hp1234a".into(), mac: "02:68:70:00:00:02".into() }),
            vsock: vsock.then(|| Vsock::Hybrid { cid: 3, socket: "/run/r/vsock.sock".into() }),
            serial: "/run/r/serial.log".into(),
            console: crate::vmm::Console::Serial,
            fs: None,
            rng: false,
            api_socket: "/run/r/api.sock".into(),
            event_monitor: "/run/r/events.json".into(),
            log_file: "/run/r/ch.log".into(),
            debugcon_socket: "/run/r/debugcon.sock".into(),
            accel: Accel::Kvm,
            role: Role::Boot,
            root_writable: false,
            arch: rootfs_builder::elf::Arch::X86_64,
        }
    }

    #[test]
    fn argv_for_each_root_and_device_set() {
        let cases = [
            (
                spec(Root::Disk(PathBuf::from("/img/rootfs.ext4")), true, true),
                "cloud-hypervisor --api-socket path=/run/r/api.sock --kernel /k/vmlinux \
                 --disk path=/img/rootfs.ext4,readonly=on,image_type=raw --cmdline 'console=ttyS0 root=/dev/vda ro' \
                 --cpus boot=1 --memory size=128M --net tap=hp1234a,mac=02:68:70:00:00:02 \
                 --vsock cid=3,socket=/run/r/vsock.sock --serial file=/run/r/serial.log --console off \
                 --event-monitor path=/run/r/events.json --log-file /run/r/ch.log",
            ),
            (
                spec(Root::Pmem(PathBuf::from("/img/r.ext4")), false, false),
                "cloud-hypervisor --api-socket path=/run/r/api.sock --kernel /k/vmlinux \
                 --pmem file=/img/r.ext4,discard_writes=on --cmdline 'console=ttyS0 root=/dev/vda ro' \
                 --cpus boot=1 --memory size=128M --serial file=/run/r/serial.log --console off \
                 --event-monitor path=/run/r/events.json --log-file /run/r/ch.log",
            ),
            (
                spec(Root::Initramfs(PathBuf::from("/img/i.cpio")), false, true),
                "cloud-hypervisor --api-socket path=/run/r/api.sock --kernel /k/vmlinux \
                 --initramfs /img/i.cpio --cmdline 'console=ttyS0 root=/dev/vda ro' \
                 --cpus boot=1 --memory size=128M --vsock cid=3,socket=/run/r/vsock.sock \
                 --serial file=/run/r/serial.log --console off \
                 --event-monitor path=/run/r/events.json --log-file /run/r/ch.log",
            ),
        ];
        for (spec, want) in cases {
            assert_eq!(shell_line(&argv(&spec)), want);
        }
        let copy = Spec {
            role: Role::Restore {
                from: "/run/r/snapshot".into(),
                memory: PathBuf::new(),
                qmp: PathBuf::new(),
                mode: crate::vmm::MemoryRestoreMode::Ondemand,
            },
            ..spec(Root::Disk(PathBuf::from("/img/rootfs.ext4")), true, true)
        };
        assert_eq!(
            shell_line(&argv(&copy)),
            "cloud-hypervisor --api-socket path=/run/r/api.sock \
             --restore source_url=file:///run/r/snapshot,resume=true,memory_restore_mode=ondemand \
             --event-monitor path=/run/r/events.json --log-file /run/r/ch.log"
        );
        let mut both = spec(Root::Pmem(PathBuf::from("/img/r.ext4")), false, false);
        both.initramfs = Some("/img/i.cpio".into());
        assert!(shell_line(&argv(&both)).contains("--pmem file=/img/r.ext4,discard_writes=on --initramfs /img/i.cpio --cmdline"));
    }
}
