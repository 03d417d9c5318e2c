//! StratoVirt's command line (pure): `-machine microvm`, the kernel and its command line, the root
//! on virtio-blk read-only, the TAP on virtio-net, the kernel's vhost-vsock, the serial console to
//! a file, its log, and the QMP socket it refuses to start without (the run's API socket).

use crate::vmm::{Root, Spec, Vsock};

/// The root drive's and device's id.
pub const ROOT_ID: &str = "rootfs";

/// The full argv, program first, or why StratoVirt cannot run this spec (with the fix).
pub fn argv(spec: &Spec) -> Result<Vec<String>, String> {
    super::refuse(spec)?;
    let mut a: Vec<String> = vec![spec.binary.display().to_string()];
    push(&mut a, "-machine", "microvm".into());
    push(&mut a, "-smp", spec.cpus.to_string());
    push(&mut a, "-m", spec.memory_mib.to_string());
    push(&mut a, "-kernel", spec.kernel.display().to_string());
    push(&mut a, "-append", spec.cmdline.clone());
    let initrd = match &spec.root {
        Root::Initramfs(p) => Some(p),
        _ => spec.initramfs.as_ref(),
    };
    if let Some(i) = initrd {
        push(&mut a, "-initrd", i.display().to_string());
    }
    if let Root::Disk(p) = &spec.root {
        // direct=false: StratoVirt opens drives with O_DIRECT otherwise, which tmpfs refuses.
        let readonly = if spec.root_writable { "off" } else { "on" };
        push(&mut a, "-drive", format!("file={},id={ROOT_ID},readonly={readonly},direct=false", p.display()));
        push(&mut a, "-device", format!("virtio-blk-device,drive={ROOT_ID},id={ROOT_ID}"));
    }
    if let Some(net) = &spec.net {
        push(&mut a, "-netdev", format!("tap,id=net0,ifname={}", net.tap));
        push(&mut a, "-device", format!("virtio-net-device,id=net0,netdev=net0,mac={}", net.mac));
    }
    if let Some(Vsock::Kernel { cid }) = &spec.vsock {
        push(&mut a, "-device", format!("vhost-vsock-device,id=vsock0,guest-cid={cid}"));
    }
    push(&mut a, "-qmp", format!("unix:{},server,nowait", spec.api_socket.display()));
    push(&mut a, "-serial", format!("file,path={}", spec.serial.display()));
    push(&mut a, "-D", spec.log_file.display().to_string());
    Ok(a)
}

fn push(a: &mut Vec<String>, key: &str, value: String) {
    a.push(key.to_string());
    a.push(value);
}
