//! The guest kernel command line host-probe passes: console, no port-0x80 `io_delay` writes of the
//! kernel's own, the root, and chinit's keys (`chinit.ip`, `chinit.port`, `chinit.vsock_port`,
//! `chinit.notify`, `chinit.api`). See docs/host-probe.md.

use std::net::Ipv4Addr;

use agent::cmdline::{Api, Builder, PowerOff};
use rootfs_builder::elf::Arch;

/// How the root filesystem is attached, as far as the kernel cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootKind {
    Disk,
    Pmem,
    Initramfs,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guest {
    pub root: RootKind,
    /// An initramfs runs chinit first, which then switches to the disk or pmem root.
    pub initramfs_first: bool,
    /// The guest's address (prefix [`crate::tap::GUEST_PREFIX`]), when it has a network interface.
    pub ip: Option<Ipv4Addr>,
    pub port: u16,
    /// The guest vsock port chinit's agent listens on, when the VM has vsock.
    pub vsock_port: Option<u32>,
    /// The host vsock port chinit pushes its Ready JSON to (`chinit.notify=vsock:<port>`).
    pub notify_port: Option<u32>,
    /// `tsc_early_khz=`: the guest's TSC rate, given under emulation (see [`crate::tsc`]).
    pub tsc_khz: Option<u64>,
    /// The init the kernel starts from a disk or pmem root (`init=`).
    pub init: String,
    /// The root is partition 1 of the device (a GPT disk from `rootfs-builder --gpt`).
    pub partition: bool,
    /// The console is the virtio console (`hvc0`), not the serial port.
    pub hvc0: bool,
    /// The guest's architecture: its serial port (`ttyS0`, `ttyAMA0`) and x86's own keys.
    pub arch: Arch,
    /// The root's mount options (`rootflags=`, or `chinit.rootflags=` in initramfs mode).
    pub rootflags: Option<String>,
    /// A virtio-fs tag chinit mounts on `/mnt/<tag>`.
    pub share: Option<String>,
    /// The VMM has no power-off but exits when the guest resets: chinit powers off by a reset
    /// (`chinit.poweroff=reboot`).
    pub poweroff_by_reset: bool,
    /// The physical address of the VMM's boot timer device, which chinit writes at ready
    /// (`chinit.boot_timer`; [`crate::vmm::Driver::boot_timer`]).
    pub boot_timer: Option<u64>,
    /// The VMM's own kernel parameters ([`crate::vmm::Driver::kernel_args`]), before `extra`.
    pub vmm_args: &'static str,
    /// Appended last, so it can override anything before it.
    pub extra: String,
}

/// The init host-probe boots by default: chinit as rootfs-builder installs it.
pub const DEFAULT_INIT: &str = "/sbin/chinit";

/// Checks an `--init` path: absolute, one word (it goes on the kernel command line as it is).
pub fn check_init(path: &str) -> Result<(), String> {
    if !path.starts_with('/') || path.len() < 2 {
        return Err(format!("--init {path:?}: the kernel needs an absolute path inside the root image, e.g. --init /sbin/init"));
    }
    if path.chars().any(|c| c.is_whitespace() || c == '"' || c.is_control()) {
        return Err(format!("--init {path:?}: a path with spaces or quotes cannot go on the kernel command line; link the init to a plain path in the image"));
    }
    Ok(())
}

/// chinit's keys as the builder writes them. Every value host-probe gives is a number, an address or
/// a device path: nothing the builder refuses.
fn chinit(b: Builder) -> String {
    b.build().unwrap_or_default()
}

/// Builds the command line. `panic=-1 reboot=t`: a panicking guest resets at once by triple fault,
/// which QEMU `-no-reboot` turns into an exit and cloud-hypervisor reports as a `rebooting` event.
/// chinit's keys are written with `agent::cmdline::Builder`, the contract chinit parses.
pub fn build(g: &Guest) -> String {
    let console = match (g.hvc0, g.arch) {
        (true, _) => "console=hvc0",
        (false, Arch::X86_64) => "console=ttyS0",
        (false, Arch::Aarch64) => "console=ttyAMA0",
    };
    let mut parts: Vec<String> = [console, "quiet", "reboot=t", "panic=-1"].iter().map(|s| s.to_string()).collect();
    // x86's kernel writes port 0x80 for I/O delays unless told not to: the port carries chinit's marks.
    if g.arch == Arch::X86_64 {
        parts.push("io_delay=none".into());
    }
    let device = match (g.root, g.partition) {
        (RootKind::Disk, false) => Some("/dev/vda"),
        (RootKind::Disk, true) => Some("/dev/vda1"),
        (RootKind::Pmem, false) => Some("/dev/pmem0"),
        (RootKind::Pmem, true) => Some("/dev/pmem0p1"),
        (RootKind::Initramfs, _) => None,
    };
    match (device, g.initramfs_first) {
        (Some(dev), false) => {
            parts.extend([format!("root={dev}"), "ro".into(), "rootfstype=ext4".into()]);
            parts.extend(g.rootflags.as_ref().map(|f| format!("rootflags={f}")));
            parts.push(format!("init={}", g.init));
        }
        // chinit switches to the device, read-only as the kernel's `ro` says.
        (Some(dev), true) => {
            let mut root = Builder::new().root(dev);
            if let Some(f) = &g.rootflags {
                root = root.rootflags(f);
            }
            parts.extend(["rdinit=/init".into(), chinit(root), "ro".into()]);
        }
        // The initramfs is the whole root: chinit must not wait for a disk.
        (None, _) => parts.extend(["rdinit=/init".into(), chinit(Builder::new().root_none())]),
    }
    let mut keys = Builder::new();
    if let Some(ip) = g.ip {
        keys = keys.ip(ip, crate::tap::GUEST_PREFIX);
    }
    keys = keys.port(g.port).api(Api::Tcp);
    if let Some(p) = g.vsock_port {
        keys = keys.vsock_port(Some(p));
    }
    if let Some(p) = g.notify_port {
        keys = keys.notify_vsock(p);
    }
    if let Some(tag) = &g.share {
        keys = keys.mount(tag, &format!("/mnt/{tag}"), "virtiofs", None);
    }
    if g.poweroff_by_reset {
        keys = keys.poweroff(PowerOff::Reboot);
    }
    if let Some(addr) = g.boot_timer {
        keys = keys.boot_timer(addr);
    }
    parts.push(chinit(keys));
    if let Some(k) = g.tsc_khz {
        parts.push(format!("tsc_early_khz={k}"));
    }
    if !g.vmm_args.is_empty() {
        parts.push(g.vmm_args.to_string());
    }
    let extra = g.extra.trim();
    if !extra.is_empty() {
        parts.push(extra.to_string());
    }
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_arm_guest_has_its_pl011_console_and_no_x86_keys() {
        let g = Guest { arch: Arch::Aarch64, tsc_khz: None, ..build_default() };
        let line = build(&g);
        assert!(line.starts_with("console=ttyAMA0 quiet reboot=t panic=-1 root=/dev/vda ro"), "{line}");
        assert!(!line.contains("io_delay") && !line.contains("ttyS0"), "{line}");
    }

    #[test]
    fn init_paths() {
        for ok in ["/sbin/chinit", "/sbin/init", "/usr/lib/systemd/systemd"] {
            assert_eq!(check_init(ok), Ok(()), "{ok}");
        }
        for (bad, why) in [("sbin/init", "absolute"), ("/", "absolute"), ("", "absolute"), ("/my init", "spaces"), ("/a\"b", "quotes")] {
            let e = check_init(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    fn build_default() -> Guest {
        Guest {
            root: RootKind::Disk,
            initramfs_first: false,
            ip: None,
            port: 1024,
            vsock_port: None,
            notify_port: None,
            tsc_khz: None,
            init: DEFAULT_INIT.into(),
            partition: false,
            hvc0: false,
            arch: Arch::X86_64,
            rootflags: None,
            share: None,
            poweroff_by_reset: false,
            boot_timer: None,
            vmm_args: "",
            extra: String::new(),
        }
    }

    #[test]
    fn command_lines() {
        let full = Guest {
            root: RootKind::Disk,
            initramfs_first: false,
            ip: Some(Ipv4Addr::new(169, 254, 12, 34)),
            port: 1024,
            vsock_port: Some(1024),
            notify_port: Some(10_000),
            tsc_khz: Some(2_600_000),
            init: DEFAULT_INIT.into(),
            partition: false,
            hvc0: false,
            arch: Arch::X86_64,
            rootflags: None,
            share: None,
            poweroff_by_reset: false,
            boot_timer: None,
            vmm_args: "",
            extra: " loglevel=7 ".into(),
        };
        let cases = [
            (
                full.clone(),
                "console=ttyS0 quiet reboot=t panic=-1 io_delay=none root=/dev/vda ro rootfstype=ext4 \
                 init=/sbin/chinit chinit.ip=169.254.12.34/16 chinit.port=1024 chinit.api=tcp \
                 chinit.vsock_port=1024 chinit.notify=vsock:10000 tsc_early_khz=2600000 loglevel=7",
            ),
            (
                Guest {
                    root: RootKind::Initramfs,
                    ip: None,
                    vsock_port: None,
                    notify_port: None,
                    tsc_khz: None,
                    extra: String::new(),
                    ..full.clone()
                },
                "console=ttyS0 quiet reboot=t panic=-1 io_delay=none rdinit=/init chinit.root=none chinit.port=1024 \
                 chinit.api=tcp",
            ),
            (
                Guest { root: RootKind::Pmem, tsc_khz: None, extra: String::new(), ..full },
                "console=ttyS0 quiet reboot=t panic=-1 io_delay=none root=/dev/pmem0 ro rootfstype=ext4 \
                 init=/sbin/chinit chinit.ip=169.254.12.34/16 chinit.port=1024 chinit.api=tcp \
                 chinit.vsock_port=1024 chinit.notify=vsock:10000",
            ),
        ];
        for (g, want) in cases {
            assert_eq!(build(&g), want);
        }
        // Another init (the baseline image's /sbin/init); an initramfs keeps its /init.
        let other = Guest { init: "/sbin/init".into(), ..build_default() };
        assert_eq!(
            build(&other),
            "console=ttyS0 quiet reboot=t panic=-1 io_delay=none root=/dev/vda ro rootfstype=ext4 init=/sbin/init chinit.port=1024 chinit.api=tcp"
        );
        let other = Guest { root: RootKind::Initramfs, ..other };
        assert!(build(&other).contains("rdinit=/init") && !build(&other).contains("init=/sbin"));
        // Kuasar's layout: the root on partition 1 of pmem, hvc0, its root flags, a share by tag.
        let kuasar = Guest {
            root: RootKind::Pmem,
            partition: true,
            hvc0: true,
            arch: Arch::X86_64,
            rootflags: Some("data=ordered,errors=remount-ro".into()),
            share: Some("kuasar".into()),
            vsock_port: Some(1024),
            ..build_default()
        };
        assert_eq!(
            build(&kuasar),
            "console=hvc0 quiet reboot=t panic=-1 io_delay=none root=/dev/pmem0p1 ro rootfstype=ext4 \
             rootflags=data=ordered,errors=remount-ro init=/sbin/chinit chinit.port=1024 chinit.api=tcp \
             chinit.vsock_port=1024 chinit.mount=kuasar:/mnt/kuasar:virtiofs"
        );
        let disk1 = Guest { partition: true, initramfs_first: true, ..build_default() };
        assert!(build(&disk1).contains("rdinit=/init chinit.root=/dev/vda1 ro "), "{}", build(&disk1));
        let mode = Guest { root: RootKind::Pmem, initramfs_first: true, ..build_default() };
        assert_eq!(
            build(&mode),
            "console=ttyS0 quiet reboot=t panic=-1 io_delay=none rdinit=/init chinit.root=/dev/pmem0 ro chinit.port=1024 chinit.api=tcp"
        );
        // A VMM that exits on a reset and not on a power-off, with kernel parameters of its own.
        let reset = Guest {
            poweroff_by_reset: true,
            boot_timer: Some(0xc000_0000),
            vmm_args: "pci=off",
            extra: "loglevel=7".into(),
            ..build_default()
        };
        assert_eq!(
            build(&reset),
            "console=ttyS0 quiet reboot=t panic=-1 io_delay=none root=/dev/vda ro rootfstype=ext4 init=/sbin/chinit \
             chinit.port=1024 chinit.api=tcp chinit.poweroff=reboot chinit.boot_timer=0xc0000000 pci=off loglevel=7"
        );
    }
}
