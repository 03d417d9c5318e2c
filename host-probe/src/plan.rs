//! Plan a boot: the user's [`Options`] against what the host offers ([`HostOffer`]) give a
//! [`Plan`] — the VMM and its argv, the helpers, the names this run will use. Pure given the host
//! facts (it only looks at whether the files it is given exist), so it is tested on literal inputs
//! and printed as it is by `--dry-run`.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use agent::proto::{DEFAULT_PORT, DEFAULT_VSOCK_PORT};

use crate::check::KvmKind;
use crate::cmdline::{self, RootKind};
use crate::error::{absolute, Error};
use crate::options::{HostOffer, Layout, Options, RootMode, VmmChoice, Wait};
use crate::tap;
use crate::vmm::{self, Accel, Net, Root, Spec, Vmm, Vsock};
use crate::vsock::{self as guest_vsock, GuestVsock};

/// The host vsock port chinit pushes its Ready JSON to, over a hybrid socket (each run has its own
/// socket); the kernel's vsock takes a port of the run's own ([`guest_vsock::kernel_ids`]).
pub const NOTIFY_PORT: u32 = 10_000;
/// The guest's vsock context id.
pub const GUEST_CID: u32 = 3;
/// The note printed and stored whenever QEMU emulates.
pub const TCG_NOTE: &str = "no hardware KVM (kvm_pvm): using TCG emulation, timings are not representative";

/// Why QEMU emulates, in the words users see.
pub fn tcg_note(kvm: KvmKind, usable: bool) -> String {
    match kvm {
        KvmKind::Pvm => TCG_NOTE.into(),
        KvmKind::Hardware(m) if !usable => {
            format!("/dev/kvm ({m}) is not usable by this user: using TCG emulation, timings are not representative")
        }
        _ => "no hardware KVM (no kvm_intel/kvm_amd): using TCG emulation, timings are not representative".into(),
    }
}

/// A resolved boot: the spec, helper commands, and the names this run will use.
#[derive(Debug, Clone)]
pub struct Plan {
    pub vmm: Vmm,
    pub accel: Accel,
    pub spec: Spec,
    pub argv: Vec<String>,
    /// vhost-device-vsock's argv (QEMU with vsock).
    pub vhost_argv: Option<Vec<String>>,
    /// virtiofsd's argv (`--share`).
    pub virtiofsd_argv: Option<Vec<String>>,
    pub run_dir: PathBuf,
    /// How the host reaches the guest's vsock: hybrid (cloud-hypervisor, vhost-device-vsock) or the
    /// kernel's.
    pub guest_vsock: Option<GuestVsock>,
    /// The host vsock port chinit pushes its ready document to (`chinit.notify`).
    pub notify_port: Option<u32>,
    pub tap: Option<Net>,
    pub guest_ip: Option<Ipv4Addr>,
    pub notes: Vec<String>,
    pub root_kind: RootKind,
    pub root_path: PathBuf,
    pub root_attach: String,
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// The next run's sequence number in this process (names of the run directory and TAP).
pub fn next_seq() -> u32 {
    SEQ.fetch_add(1, Ordering::SeqCst)
}

/// Whether a kernel can take an initramfs: false only when the `config` file the kernel builder
/// leaves next to it says `CONFIG_BLK_DEV_INITRD` is not set.
pub fn kernel_supports_initrd(kernel: &Path) -> bool {
    let config = kernel.with_file_name("config");
    match std::fs::read_to_string(config) {
        Ok(text) => text.lines().any(|l| l.trim() == "CONFIG_BLK_DEV_INITRD=y"),
        Err(_) => true,
    }
}

/// Resolves the options against the host. `seq` makes names unique within the process.
pub fn plan(o: &Options, host: &HostOffer, seq: u32) -> Result<Plan, Error> {
    o.validate()?;
    let mut notes = Vec::new();
    let vmm = choose_vmm(o.vmm, host, &mut notes)?;
    let (binary, accel) = vmm_binary(vmm, host, &mut notes)?;
    if accel == Accel::Kvm {
        notes.extend(host.hypervisor.note());
    }
    let kernel = find_kernel(o, host, vmm)?;
    let root = attach_root(o, vmm, find_initramfs(o, &kernel)?)?;
    let kuasar = check_layout(o, vmm, &root)?;

    let pid = std::process::id();
    let run_dir = std::env::temp_dir().join(format!("host-probe-{pid}-{seq}"));
    let (tap, guest_ip) = if o.net {
        let ip = tap::guest_ip(pid, seq);
        (Some(Net { tap: tap::tap_name(pid, seq), mac: tap::guest_mac(ip) }), Some(ip))
    } else {
        (None, None)
    };
    let Wired { device: vsock, vhost_argv, guest: guest_vsock, notify_port } =
        wire_vsock(vmm, o.vsock, host, &run_dir, (pid, seq), &mut notes);
    check_reachable(o.wait, tap.is_some(), vsock.is_some())?;

    let cmdline = cmdline::build(&cmdline::Guest {
        root: root.kind,
        initramfs_first: root.initramfs_first.is_some(),
        ip: guest_ip,
        port: DEFAULT_PORT,
        vsock_port: vsock.as_ref().map(|_| DEFAULT_VSOCK_PORT),
        notify_port,
        tsc_khz: host.tsc_khz.filter(|_| accel == Accel::Tcg),
        init: o.init.clone(),
        partition: root.partition,
        hvc0: kuasar,
        rootflags: kuasar.then(|| KUASAR_ROOTFLAGS.to_string()),
        share: o.share.as_ref().map(|s| s.tag.clone()),
        extra: o.cmdline_extra.clone(),
    });
    let (fs, virtiofsd_argv) = wire_share(o, vmm, host, &run_dir)?;
    let spec = Spec {
        binary,
        kernel,
        root: root.root,
        initramfs: root.initramfs_first,
        cmdline,
        cpus: o.cpus,
        memory_mib: o.memory_mib,
        net: tap.clone(),
        vsock,
        serial: run_dir.join("serial.log"),
        console: if kuasar { vmm::Console::Virtio } else { vmm::Console::Serial },
        fs,
        rng: kuasar,
        api_socket: run_dir.join("api.sock"),
        event_monitor: run_dir.join("events.json"),
        log_file: run_dir.join("vmm.log"),
        debugcon_socket: run_dir.join("debugcon.sock"),
        accel,
    };
    let argv = match vmm {
        Vmm::CloudHypervisor => vmm::ch::argv(&spec),
        Vmm::Qemu => vmm::qemu::argv(&spec).map_err(|e| Error::Usage(e.into()))?,
    };
    Ok(Plan {
        vmm,
        accel,
        spec,
        argv,
        vhost_argv,
        virtiofsd_argv,
        run_dir,
        guest_vsock,
        notify_port,
        tap,
        guest_ip,
        notes,
        root_kind: root.kind,
        root_path: root.path,
        root_attach: root.attach,
    })
}

/// `--vmm auto` picks cloud-hypervisor only when it is installed and hardware KVM is usable.
fn choose_vmm(choice: VmmChoice, host: &HostOffer, notes: &mut Vec<String>) -> Result<Vmm, Error> {
    Ok(match choice {
        VmmChoice::CloudHypervisor => {
            if host.cloud_hypervisor.is_none() {
                return Err(Error::Missing {
                    what: "cloud-hypervisor not found (neither $CLOUD_HYPERVISOR nor on PATH)".into(),
                    fix: "install cloud-hypervisor v53, or use --vmm qemu".into(),
                });
            }
            if !host.kvm.hardware() {
                notes.push("no hardware KVM: cloud-hypervisor cannot run a Linux guest on this host".into());
            }
            Vmm::CloudHypervisor
        }
        VmmChoice::Qemu => Vmm::Qemu,
        VmmChoice::Auto if host.cloud_hypervisor.is_some() && host.kvm.hardware() && host.kvm_usable => Vmm::CloudHypervisor,
        VmmChoice::Auto => Vmm::Qemu,
    })
}

/// The VMM's program and how it runs guest code (QEMU emulates without usable hardware KVM).
fn vmm_binary(vmm: Vmm, host: &HostOffer, notes: &mut Vec<String>) -> Result<(PathBuf, Accel), Error> {
    match vmm {
        Vmm::CloudHypervisor => Ok((host.cloud_hypervisor.clone().unwrap_or_default(), Accel::Kvm)),
        Vmm::Qemu => {
            let bin = host.qemu.clone().ok_or_else(|| Error::Missing {
                what: "qemu-system-x86_64 not found".into(),
                fix: "apt-get install qemu-system-x86".into(),
            })?;
            if host.kvm.hardware() && host.kvm_usable {
                Ok((bin, Accel::Kvm))
            } else {
                notes.push(tcg_note(host.kvm, host.kvm_usable));
                Ok((bin, Accel::Tcg))
            }
        }
    }
}

/// `--kernel`, else the newest one in the kernel cache for this VMM.
fn find_kernel(o: &Options, host: &HostOffer, vmm: Vmm) -> Result<PathBuf, Error> {
    match &o.kernel {
        Some(k) if k.is_file() => Ok(absolute(k)),
        Some(k) => Err(Error::missing_file("kernel", k, "pass an existing --kernel, or run `rootfs-builder kernel`")),
        None => {
            let file = crate::locate::kernel_file_name(vmm);
            host.cache_root.as_deref().and_then(|r| crate::locate::default_kernel(r, file)).ok_or_else(|| Error::Missing {
                what: format!(
                    "no kernel ({file}) in {}/kernels",
                    host.cache_root.as_deref().map(|p| p.display().to_string()).unwrap_or_else(|| "the kernel cache".into())
                ),
                fix: "run `rootfs-builder kernel`, or pass --kernel".into(),
            })
        }
    }
}

/// `--initramfs`, checked to exist and to fit the kernel.
fn find_initramfs(o: &Options, kernel: &Path) -> Result<Option<PathBuf>, Error> {
    let Some(i) = &o.initramfs else {
        return Ok(None);
    };
    if !i.is_file() {
        return Err(Error::missing_file("initramfs", i, "run `rootfs-builder --initramfs <file>`"));
    }
    if !kernel_supports_initrd(kernel) {
        return Err(Error::Missing {
            what: format!("{} is built without initramfs support (CONFIG_BLK_DEV_INITRD)", kernel.display()),
            fix: "rebuild the kernel with CONFIG_BLK_DEV_INITRD=y, or boot from --rootfs alone".into(),
        });
    }
    Ok(Some(absolute(i)))
}

/// How the root reaches the guest.
struct RootPlan {
    root: Root,
    kind: RootKind,
    path: PathBuf,
    /// How the image is protected, in the words of the report.
    attach: String,
    /// The initramfs in front of a root device (chinit's initramfs mode).
    initramfs_first: Option<PathBuf>,
    /// The image is a GPT disk: the root is its partition 1.
    partition: bool,
}

/// Whether an image is a GPT disk (`EFI PART` in its sector 1), as `rootfs-builder --gpt` writes.
pub fn is_gpt_disk(image: &Path) -> bool {
    use std::io::{Read, Seek, SeekFrom};
    let mut sig = [0u8; 8];
    std::fs::File::open(image).and_then(|mut f| f.seek(SeekFrom::Start(512)).and_then(|_| f.read_exact(&mut sig))).is_ok()
        && &sig == b"EFI PART"
}

/// cloud-hypervisor's pmem devices are whole numbers of this.
pub const PMEM_UNIT: u64 = 2 << 20;

/// Kuasar's root mount options.
pub const KUASAR_ROOTFLAGS: &str = "data=ordered,errors=remount-ro";

/// `--layout kuasar` is cloud-hypervisor's, on a pmem root with a partition; true when asked.
fn check_layout(o: &Options, vmm: Vmm, root: &RootPlan) -> Result<bool, Error> {
    if o.layout == Layout::Default {
        return Ok(false);
    }
    if vmm != Vmm::CloudHypervisor {
        return Err(Error::Usage("--layout kuasar is cloud-hypervisor's: pass --vmm cloud-hypervisor".into()));
    }
    if root.kind != RootKind::Pmem || !root.partition {
        return Err(Error::Usage(format!(
            "--layout kuasar roots on partition 1 of a pmem device: pass --root pmem and an image built with `rootfs-builder --gpt` ({} is {})",
            root.path.display(),
            if root.partition { "one, but not on pmem" } else { "not a GPT disk" }
        )));
    }
    Ok(true)
}

/// QEMU's virtiofsd (or one on PATH): serves `--share` over vhost-user.
pub const VIRTIOFSD: &str = "/usr/lib/qemu/virtiofsd";

/// `--share DIR[:TAG]`: the VMM's device and virtiofsd's argv (cloud-hypervisor only).
fn wire_share(o: &Options, vmm: Vmm, host: &HostOffer, run_dir: &Path) -> Result<(Option<vmm::Fs>, Option<Vec<String>>), Error> {
    let Some(share) = &o.share else {
        return Ok((None, None));
    };
    if vmm != Vmm::CloudHypervisor {
        return Err(Error::Usage("--share is served to cloud-hypervisor guests only: pass --vmm cloud-hypervisor".into()));
    }
    if !share.dir.is_dir() {
        return Err(Error::missing_file("shared directory", &share.dir, "pass an existing directory to --share"));
    }
    let bin = host.virtiofsd.clone().ok_or_else(|| Error::Missing {
        what: "no virtiofsd for --share".into(),
        fix: format!("apt-get install qemu-system-common (it ships {VIRTIOFSD}), or put virtiofsd on PATH"),
    })?;
    let socket = run_dir.join("fs.sock");
    let argv = vec![
        bin.display().to_string(),
        format!("--socket-path={}", socket.display()),
        "-o".into(),
        format!("source={}", absolute(&share.dir).display()),
        "-o".into(),
        "cache=none".into(),
        "-o".into(),
        "sandbox=chroot".into(),
    ];
    Ok((Some(vmm::Fs { tag: share.tag.clone(), socket }), Some(argv)))
}

/// An initramfs alone is the whole root; with --rootfs it is chinit's initramfs mode: chinit starts
/// from it, then switches to the (read-only) root device.
fn attach_root(o: &Options, vmm: Vmm, initramfs: Option<PathBuf>) -> Result<RootPlan, Error> {
    let (root, kind, path, mut attach) = match (&initramfs, &o.rootfs) {
        (Some(i), None) => (
            Root::Initramfs(i.clone()),
            RootKind::Initramfs,
            i.clone(),
            "initramfs (the VMM copies it into guest memory; the file is only read)".to_string(),
        ),
        (_, r) => {
            let path = r.clone().unwrap_or_else(|| PathBuf::from(crate::locate::DEFAULT_IMAGE));
            if !path.is_file() {
                return Err(Error::missing_file(
                    "root image",
                    &path,
                    "run `rootfs-builder --out rootfs_fast.ext4`, or pass --rootfs / --initramfs",
                ));
            }
            let p = absolute(&path);
            match o.root_mode {
                RootMode::Disk => {
                    (Root::Disk(p.clone()), RootKind::Disk, p, "read-only virtio-blk: the image is never written, no copy".to_string())
                }
                RootMode::Pmem if vmm == Vmm::Qemu => return Err(Error::Usage(vmm::qemu::PMEM_UNSUPPORTED.into())),
                RootMode::Pmem if std::fs::metadata(&p).map(|m| m.len() % PMEM_UNIT != 0).unwrap_or(false) => {
                    return Err(Error::Usage(format!(
                        "--root pmem: {} is not a whole number of 2 MiB, which cloud-hypervisor's pmem devices need: \
                         build it with rootfs-builder (its default sizes are), or pass --size with an even number of MiB",
                        p.display()
                    )))
                }
                RootMode::Pmem => (
                    Root::Pmem(p.clone()),
                    RootKind::Pmem,
                    p,
                    "pmem with discard_writes=on: guest writes never reach the image".to_string(),
                ),
            }
        }
    };
    let initramfs_first = initramfs.filter(|_| kind != RootKind::Initramfs);
    let partition = kind != RootKind::Initramfs && is_gpt_disk(&path);
    if partition {
        attach.push_str("; a GPT disk: the root is its partition 1");
    }
    if let Some(i) = &initramfs_first {
        attach.push_str(&format!("; starts from the initramfs {} (only read)", i.display()));
    }
    Ok(RootPlan { root, kind, path, attach, initramfs_first, partition })
}

/// The vsock a plan gives the guest.
struct Wired {
    device: Option<Vsock>,
    /// vhost-device-vsock's argv, when it serves QEMU's device.
    vhost_argv: Option<Vec<String>>,
    guest: Option<GuestVsock>,
    notify_port: Option<u32>,
}

/// The guest's vsock: cloud-hypervisor's own; for QEMU the host kernel's vhost-vsock where
/// `/dev/vhost-vsock` exists, else vhost-device-vsock, else none (with a note that says how).
fn wire_vsock(vmm: Vmm, wanted: bool, host: &HostOffer, run_dir: &Path, (pid, seq): (u32, u32), notes: &mut Vec<String>) -> Wired {
    let uds = run_dir.join("vsock.sock");
    let hybrid = |device: Vsock, argv: Option<Vec<String>>| Wired {
        device: Some(device),
        vhost_argv: argv,
        guest: Some(GuestVsock::Hybrid(uds.clone())),
        notify_port: Some(NOTIFY_PORT),
    };
    match (vmm, wanted) {
        (_, false) => Wired { device: None, vhost_argv: None, guest: None, notify_port: None },
        (Vmm::CloudHypervisor, true) => hybrid(Vsock::Hybrid { cid: GUEST_CID, socket: uds.clone() }, None),
        (Vmm::Qemu, true) if host.kernel_vsock => {
            let (cid, port) = guest_vsock::kernel_ids(pid, seq);
            Wired {
                device: Some(Vsock::Kernel { cid }),
                vhost_argv: None,
                guest: Some(GuestVsock::Kernel { cid }),
                notify_port: Some(port),
            }
        }
        (Vmm::Qemu, true) => match &host.vhost_vsock {
            Some(bin) => {
                let user = run_dir.join("vhost-user.sock");
                let argv = vec![
                    bin.display().to_string(),
                    "--guest-cid".into(),
                    GUEST_CID.to_string(),
                    "--socket".into(),
                    user.display().to_string(),
                    "--uds-path".into(),
                    uds.display().to_string(),
                ];
                hybrid(Vsock::VhostUser { socket: user }, Some(argv))
            }
            None => {
                notes.push("no /dev/vhost-vsock and no vhost-device-vsock: no vsock (fix: modprobe vhost_vsock, or cargo install vhost-device-vsock)".into());
                Wired { device: None, vhost_argv: None, guest: None, notify_port: None }
            }
        },
    }
}

/// Waiting for chinit's agent needs a way to it: a network device or vsock.
fn check_reachable(wait: Wait, net: bool, vsock: bool) -> Result<(), Error> {
    if wait == Wait::Agent && !net && !vsock {
        return Err(Error::Usage(
            "no way to reach chinit: without a network device (--no-net) the guest needs vsock \
             (drop --no-vsock; QEMU also needs vhost-device-vsock: cargo install vhost-device-vsock)"
                .into(),
        ));
    }
    Ok(())
}

/// What `--dry-run` prints: the TAP setup, the helper, and the VMM command line.
pub fn dry_run_text(p: &Plan) -> String {
    let mut o = String::new();
    for n in &p.notes {
        o.push_str(&format!("# note: {n}\n"));
    }
    o.push_str(&format!("mkdir -p {}\n", p.run_dir.display()));
    if let (Some(net), Some(ip)) = (&p.tap, p.guest_ip) {
        for args in tap::setup_commands(&net.tap, ip, &net.mac) {
            o.push_str(&format!("ip {}\n", args.join(" ")));
        }
    }
    if let Some(v) = &p.vhost_argv {
        o.push_str(&format!("{} &\n", vmm::shell_line(v)));
    }
    if let Some(v) = &p.virtiofsd_argv {
        o.push_str(&format!("{} &\n", vmm::shell_line(v)));
    }
    o.push_str(&vmm::shell_line(&p.argv));
    o.push('\n');
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(kvm: KvmKind, ch: bool, vhost: bool) -> HostOffer {
        HostOffer {
            kvm,
            kvm_usable: true,
            cloud_hypervisor: ch.then(|| PathBuf::from("/bin/cloud-hypervisor")),
            qemu: Some("/bin/qemu-system-x86_64".into()),
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
            vmm: VmmChoice::CloudHypervisor,
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
        assert!(
            p.spec.cmdline.contains("root=/dev/pmem0p1 ro rootfstype=ext4 rootflags=data=ordered,errors=remount-ro"),
            "{}",
            p.spec.cmdline
        );
        assert!(p.spec.cmdline.contains("chinit.mount=kuasar:/mnt/kuasar:virtiofs"), "{}", p.spec.cmdline);
        let v = p.virtiofsd_argv.clone().unwrap().join(" ");
        assert_eq!(v, format!("{VIRTIOFSD} --socket-path={run}/fs.sock -o source={} -o cache=none -o sandbox=chroot", share.display()));
        assert!(p.root_attach.contains("GPT disk"), "{}", p.root_attach);
        // Refused, each with what to do.
        let qemu = Options { vmm: VmmChoice::Qemu, root_mode: RootMode::Disk, ..o.clone() };
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
            (KvmKind::Hardware("kvm_intel"), true, Vmm::CloudHypervisor, Accel::Kvm, false),
            (KvmKind::Hardware("kvm_amd"), false, Vmm::Qemu, Accel::Kvm, false),
            (KvmKind::Pvm, true, Vmm::Qemu, Accel::Tcg, true),
            (KvmKind::Absent, false, Vmm::Qemu, Accel::Tcg, true),
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
    }

    #[test]
    fn missing_pieces_name_their_fix() {
        let h = host(KvmKind::Pvm, false, false);
        let f = fixture();
        let no_kernel = Options { kernel: None, ..f.o.clone() };
        let e = plan(&no_kernel, &h, 0).unwrap_err();
        assert_eq!(e.exit_code().code(), 3);
        assert!(e.to_string().contains("run `rootfs-builder kernel`"), "{e}");
        let no_image = Options { rootfs: Some("/nonexistent/rootfs.ext4".into()), ..f.o.clone() };
        let e = plan(&no_image, &h, 0).unwrap_err();
        assert!(e.to_string().contains("rootfs-builder --out rootfs_fast.ext4"), "{e}");
        let ch = Options { vmm: VmmChoice::CloudHypervisor, ..f.o.clone() };
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
}
