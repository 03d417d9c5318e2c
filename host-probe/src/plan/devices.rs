//! What a plan attaches to the guest: its root (disk, pmem, initramfs; a GPT disk's partition),
//! Kuasar's layout, a shared directory, and its vsock.

use std::path::{Path, PathBuf};

use super::*;

/// How the root reaches the guest.
pub(super) struct RootPlan {
    pub(super) root: Root,
    pub(super) kind: RootKind,
    pub(super) path: PathBuf,
    /// How the image is protected, in the words of the report.
    pub(super) attach: String,
    /// The initramfs in front of a root device (chinit's initramfs mode).
    pub(super) initramfs_first: Option<PathBuf>,
    /// The image is a GPT disk: the root is its partition 1.
    pub(super) partition: bool,
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
pub(super) fn check_layout(o: &Options, vmm: Vmm, root: &RootPlan) -> Result<bool, Error> {
    if o.layout == Layout::Default {
        return Ok(false);
    }
    if let Some(why) = vmm.cannot(vmm::Feature::KuasarLayout) {
        return Err(Error::Usage(why.into()));
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
pub(super) fn wire_share(o: &Options, vmm: Vmm, host: &HostOffer, run_dir: &Path) -> Result<(Option<vmm::Fs>, Option<Vec<String>>), Error> {
    let Some(share) = &o.share else {
        return Ok((None, None));
    };
    if let Some(why) = vmm.cannot(vmm::Feature::Share) {
        return Err(Error::Usage(why.into()));
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
pub(super) fn attach_root(o: &Options, vmm: Vmm, initramfs: Option<PathBuf>) -> Result<RootPlan, Error> {
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
            if let (RootMode::Pmem, Some(why)) = (o.root_mode, vmm.cannot(vmm::Feature::PmemRoot)) {
                return Err(Error::Usage(why.into()));
            }
            match o.root_mode {
                RootMode::Disk => {
                    (Root::Disk(p.clone()), RootKind::Disk, p, "read-only virtio-blk: the image is never written, no copy".to_string())
                }
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

/// The guest's vsock when it gets one: as its VMM wires it ([`vmm::Driver::wire_vsock`]).
pub(super) fn wire_vsock(vmm: Vmm, wanted: bool, host: &HostOffer, run_dir: &Path, ids: (u32, u32), notes: &mut Vec<String>) -> vmm::Wired {
    if wanted {
        vmm.wire_vsock(host, run_dir, ids, notes)
    } else {
        vmm::Wired::default()
    }
}
