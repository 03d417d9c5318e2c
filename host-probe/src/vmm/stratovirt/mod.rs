//! StratoVirt (v2.5) as host-probe drives it: its command line ([`argv`]), the version check, the
//! refusals ([`refuse`]) and its [`Driver`] ([`VMM`]): KVM only, guests of the host's
//! architecture, `-machine microvm` with a `bzImage` on x86_64, the kernel's vhost-vsock when the
//! build has that device ([`builds_vsock`]; its default build has not: the guest is then reached
//! over its TAP), QMP on a Unix socket (it refuses to start without one), no port-0x80 marks,
//! power-off by a CPU reset (`chinit.poweroff=reboot` with the kernel's `reboot=t`: microvm has no
//! ACPI power-off, and a triple fault ends StratoVirt with exit code 0).
//!
//! What StratoVirt's microvm cannot do is refused with the fix: a virtio console, virtio-fs
//! (`--share`, `--layout kuasar`), a pmem root, a vsock other than the kernel's, a guest of another
//! architecture, a kernel it cannot load, a program that is not StratoVirt 2.5, and snapshots
//! ([`snapshot_refusal`]).

pub mod argv;

use std::path::{Path, PathBuf};
use std::time::Duration;

use rootfs_builder::elf::Arch;

pub use argv::argv;

use super::kernel::KernelKind;
use super::{Accel, Console, Driver, Feature, Marks, MemoryRestoreMode, Pinned, Root, Spec, Vmm, Vsock, Wired};
use crate::check::{self, KvmKind, Program};
use crate::error::Error;
use crate::launch::{Captured, Phase, Running};
use crate::options::HostOffer;
use crate::plan::Plan;

/// StratoVirt.
pub const VMM: Vmm = Vmm::new(&StratoVirt);

/// Its name, and the program's.
pub const NAME: &str = "stratovirt";

/// How to get it, in fixes.
const GET_IT: &str = "set $STRATOVIRT to StratoVirt v2.5's binary (built from its v2.5.0 tag: \
                      cargo build --release in openeuler-mirror/stratovirt), or put it on PATH";

/// How it is found, its version read and judged, and named.
const PINNED: Pinned = Pinned {
    name: NAME,
    label: "StratoVirt",
    env: "STRATOVIRT",
    // It refuses `--version`.
    flag: "-version",
    get_it: GET_IT,
    version,
    supported,
};

/// Kernel parameters of its own: `pci=off`, its microvm has no PCI bus (the guest's probes of
/// 0xcf8 only cost time). The power-off by a triple fault is the command line's `reboot=t`.
const KERNEL_ARGS: &str = "pci=off";

pub struct StratoVirt;

/// Its program: `$STRATOVIRT`, else on PATH.
pub fn find() -> Option<PathBuf> {
    PINNED.find()
}

/// The version in `stratovirt -version`'s output (`StratoVirt 2.5.0 commit-id 26abef02`).
pub fn version(output: &str) -> Option<(u32, u32, u32)> {
    super::version_after(output, "StratoVirt ")
}

/// Whether host-probe drives this version: 2.5.x, whose command line, QMP and snapshot files it
/// was tried with; another's are untried.
pub fn supported((major, minor, patch): (u32, u32, u32)) -> Result<(), String> {
    match (major, minor) {
        (2, 5) => Ok(()),
        _ => Err(format!("StratoVirt {major}.{minor}.{patch} is untried (host-probe speaks v2.5's command line and QMP): use v2.5")),
    }
}

/// Whether the program at `path` is a StratoVirt host-probe drives: its `-version` says 2.5.x.
/// The error names what it is and the fix.
pub fn check_program(path: &Path, version_output: Option<&str>) -> Result<(), Error> {
    PINNED.check_program(path, version_output)
}

/// Whether StratoVirt on `arch` boots a kernel of this kind: on x86_64 a `bzImage` (its microvm
/// loads a bzImage or a raw binary, never the ELF `vmlinux`), on aarch64 the `Image`.
pub fn check_kernel(kind: KernelKind, arch: Arch) -> Result<(), String> {
    match (arch, kind) {
        (Arch::X86_64, KernelKind::BzImage) | (Arch::Aarch64, KernelKind::ArmImage) => Ok(()),
        (Arch::X86_64, KernelKind::Elf(_)) => Err("StratoVirt's microvm boots a bzImage on x86_64, not the ELF vmlinux: \
                                                  give --kernel the bzImage the kernel build left next to it"
            .into()),
        (Arch::X86_64, _) => Err("StratoVirt boots an x86_64 bzImage on x86_64: this kernel is not one".into()),
        (Arch::Aarch64, _) => Err("StratoVirt boots an arm64 Image on aarch64: this kernel is not one".into()),
    }
}

/// [`check_kernel`] of a file.
pub fn check_kernel_file(path: &Path, arch: Arch) -> Result<(), String> {
    check_kernel(super::kernel::kind_of_file(path)?, arch).map_err(|e| format!("{}: {e}", path.display()))
}

/// Why a `Spec` cannot be run by StratoVirt's microvm, with the fix.
pub fn refuse(spec: &Spec) -> Result<(), String> {
    let host = crate::locate::host_arch();
    if spec.arch != host {
        return Err(format!(
            "StratoVirt runs guests of its host's architecture only (KVM, no emulation): a {} guest on this {} host \
             needs --vmm qemu (TCG)",
            spec.arch.name(),
            host.name()
        ));
    }
    if spec.console == Console::Virtio {
        return Err(
            "host-probe gives StratoVirt guests the serial console (ttyS0): drop --layout kuasar, or use --vmm cloud-hypervisor".into()
        );
    }
    if spec.fs.is_some() {
        return Err(SHARE.into());
    }
    if let Root::Pmem(_) = spec.root {
        return Err(PMEM.into());
    }
    match &spec.vsock {
        None | Some(Vsock::Kernel { .. }) => {}
        Some(Vsock::Hybrid { .. } | Vsock::VhostUser { .. }) => {
            return Err("StratoVirt's vsock is the host kernel's vhost-vsock (vhost-vsock-device): modprobe vhost_vsock".into())
        }
    }
    if spec.cpus == 0 || spec.cpus > MAX_VCPUS {
        return Err(format!("StratoVirt gives a guest 1 to {MAX_VCPUS} vCPUs, not {}", spec.cpus));
    }
    // Its `-append` splits at spaces and joins the words again: a quoted value with spaces
    // (`chinit.exec="a b"`) reaches chinit whole, so no command line is refused (docs/host-probe.md).
    Ok(())
}

/// The most vCPUs StratoVirt's microvm gives a guest.
pub const MAX_VCPUS: u32 = 254;

const SHARE: &str = "StratoVirt's microvm has no virtio-fs device: drop --share, or use --vmm cloud-hypervisor";
const PMEM: &str = "StratoVirt has no pmem device: use --root disk, or --vmm cloud-hypervisor";

impl Driver for StratoVirt {
    fn name(&self) -> &'static str {
        NAME
    }

    fn program_var(&self) -> Option<&'static str> {
        Some(PINNED.env)
    }

    fn locate(&self) -> Vec<(&'static str, PathBuf)> {
        find().map(|p| (NAME, p)).into_iter().collect()
    }

    /// Only where nothing else would run: hardware KVM, a guest of the host's architecture,
    /// StratoVirt here, and no QEMU for this architecture (cloud-hypervisor and Firecracker come
    /// first in the registry). It never takes a host another VMM would run.
    fn auto_fits(&self, host: &HostOffer, native: bool) -> bool {
        super::fits_only_without_qemu(host, native, NAME)
    }

    fn chosen(&self, host: &HostOffer, notes: &mut Vec<String>) -> Result<(), Error> {
        let missing = PINNED.not_found(format!("{GET_IT}; or use --vmm qemu"));
        super::kvm_only_chosen(host, NAME, PINNED.label, missing, notes)
    }

    fn program_name(&self, _arch: Arch) -> &'static str {
        NAME
    }

    /// KVM only, on the host's architecture; its `-version` must say 2.5.x.
    fn runs(&self, host: &HostOffer, arch: Arch, _notes: &mut Vec<String>) -> Result<(PathBuf, Accel), Error> {
        super::native_only(PINNED.label, host, arch)?;
        let bin = host.program(VMM, arch).ok_or_else(|| PINNED.not_found(GET_IT.into()))?;
        check_program(&bin, self.version_line(&bin).as_deref())?;
        Ok((bin, Accel::Kvm))
    }

    /// The `bzImage` on x86_64, the `Image` on aarch64.
    fn kernel_file(&self, arch: Arch) -> &'static str {
        match arch {
            Arch::X86_64 => "bzImage",
            Arch::Aarch64 => "Image",
        }
    }

    fn needs_hardware_kvm(&self) -> bool {
        true
    }

    fn check_line(&self, program: Option<&Program>, kvm: KvmKind) -> check::Line {
        PINNED.check_line(program, kvm)
    }

    fn cannot(&self, what: Feature) -> Option<&'static str> {
        Some(match what {
            Feature::PmemRoot => PMEM,
            Feature::KuasarLayout => "--layout kuasar needs virtio-fs, which StratoVirt's microvm has not: pass --vmm cloud-hypervisor",
            Feature::Share => SHARE,
        })
    }

    /// The host kernel's vhost-vsock where `/dev/vhost-vsock` exists and the program was built
    /// with its vhost-vsock device, else none (with the fix): the guest is reached over its TAP.
    fn wire_vsock(&self, host: &HostOffer, _run_dir: &Path, ids: (u32, u32), notes: &mut Vec<String>) -> Wired {
        let program = host.program_of(VMM);
        if program.as_deref().is_some_and(|p| !builds_vsock(p)) {
            notes.push(format!("{NO_VSOCK_BUILD}: no vsock, chinit is reached over its TAP (fix: {VSOCK_BUILD_FIX})"));
            return Wired::default();
        }
        if host.kernel_vsock {
            return Wired::kernel(ids);
        }
        notes.push("no /dev/vhost-vsock: no vsock (StratoVirt's is the kernel's; fix: modprobe vhost_vsock)".into());
        Wired::default()
    }

    /// Its command line; the kernel is checked to be one it loads.
    fn argv(&self, spec: &Spec) -> Result<Vec<String>, String> {
        check_kernel_file(&spec.kernel, spec.arch)?;
        argv(spec)
    }

    fn powers_off_by_reset(&self) -> bool {
        true
    }

    fn kernel_args(&self, _arch: Arch) -> &'static str {
        KERNEL_ARGS
    }

    /// It logs no port-0x80 writes.
    fn debugcon<'a>(&self, _spec: &'a Spec) -> Option<&'a Path> {
        None
    }

    /// It exits when its guest resets.
    fn guest_reset(&self, _spec: &Spec) -> bool {
        false
    }

    /// No marks: the guest clocks, the notify push and the `/ready` answers are the host's figures.
    fn marks(&self, _spec: &Spec, _c: &Captured) -> Marks {
        Marks { source: "none (StratoVirt logs no port-0x80 writes)", ..Marks::default() }
    }

    /// Its first ERROR line (`<time>: [pid][tid][file:line]:ERROR: ...`) and the lines after it
    /// (the causes).
    fn first_error(&self, text: &str) -> Option<String> {
        let start = text.lines().position(|l| l.contains(":ERROR: "))?;
        Some(text.lines().skip(start).filter(|l| !l.trim().is_empty()).take(6).collect::<Vec<_>>().join("\n"))
    }

    fn version_line(&self, program: &Path) -> Option<String> {
        check::version_by(program, PINNED.flag)
    }

    /// Always: a copy is made unique over vsock, which this build lacks, or which StratoVirt 2.5
    /// does not give a copy of its own on x86_64.
    fn snapshot_refusal(&self, spec: &Spec) -> Option<Error> {
        Some(snapshot_refusal(spec.vsock.is_some() || spec.binary.as_os_str().is_empty() || builds_vsock(&spec.binary)))
    }

    fn snapshot_files(&self) -> &'static [&'static str] {
        &[]
    }

    fn save(&self, _running: &mut Running, _out: &Path, _timeout: Duration) -> Result<(Duration, Duration), Error> {
        Err(snapshot_refusal(true))
    }

    fn saved(&self, _out: &Path) -> Result<(), Error> {
        Ok(())
    }

    fn restore_mode(&self, asked: Option<MemoryRestoreMode>) -> Result<Option<MemoryRestoreMode>, Error> {
        match asked {
            Some(_) => Err(Error::Usage("--memory-restore-mode is cloud-hypervisor's: drop it".into())),
            None => Ok(None),
        }
    }

    fn restorable_vsock(&self) -> &'static str {
        "kernel"
    }

    fn restore_copy(&self, _p: &mut Plan, dir: &Path, _mode: MemoryRestoreMode, _config: Option<&str>) -> Result<(), Error> {
        Err(super::unrestorable(dir, "host-probe takes no StratoVirt snapshots (docs/snapshot.md)"))
    }

    fn resume_copy(&self, _running: &mut Running, dir: &Path, _phase: &Phase) -> Result<(), Error> {
        Err(super::unrestorable(dir, "host-probe takes no StratoVirt snapshots (docs/snapshot.md)"))
    }
}

/// What a build without StratoVirt's vhost-vsock device is, in notes and refusals.
const NO_VSOCK_BUILD: &str = "this StratoVirt is built without its vhost-vsock device (cargo feature vhost_vsock, \
                              not among its default features: it refuses -device vhost-vsock-device as \"Unsupported device\")";
const VSOCK_BUILD_FIX: &str = "a StratoVirt v2.5 built with --features vhost_vsock";

/// Why host-probe takes no StratoVirt snapshot (exit 3), with the fix. A copy is made unique over
/// vsock (`POST /v1/restore`): a build without vhost-vsock has none; one with it restores the
/// device without telling the guest its new context id on x86_64 (v2.5 sends the transport-reset
/// event that makes the guest read it again on aarch64 only, `virtio/src/vhost/kernel/vsock.rs`),
/// so a copy with a context id of its own is unreachable over vsock, and two copies cannot share
/// one on a host.
pub fn snapshot_refusal(vsock_build: bool) -> Error {
    let what = if vsock_build {
        "StratoVirt 2.5 cannot give a restored copy a vsock context id of its own on x86_64: it does not tell the guest \
         the new id (its transport-reset event is sent on aarch64 only), and two copies cannot share one; \
         a copy is made unique over vsock"
            .to_string()
    } else {
        format!("{NO_VSOCK_BUILD}, and a copy is made unique over vsock (POST /v1/restore)")
    };
    Error::Missing {
        what: format!("StratoVirt snapshots: {what}"),
        fix: "take snapshots with --vmm firecracker, cloud-hypervisor or qemu".into(),
    }
}

/// Whether the StratoVirt at `program` was built with its vhost-vsock device: its binary holds
/// the path of the device it opens (`/dev/vhost-vsock`). Read once per program in a process.
pub fn builds_vsock(program: &Path) -> bool {
    static SEEN: std::sync::Mutex<Vec<(PathBuf, bool)>> = std::sync::Mutex::new(Vec::new());
    if let Some((_, b)) = SEEN.lock().unwrap_or_else(|e| e.into_inner()).iter().find(|(p, _)| p == program) {
        return *b;
    }
    // An unreadable program is not judged here: starting it says what is wrong.
    let b = std::fs::read(program).map(|bytes| holds_vsock_device(&bytes)).unwrap_or(true);
    SEEN.lock().unwrap_or_else(|e| e.into_inner()).push((program.to_path_buf(), b));
    b
}

/// Whether a StratoVirt binary's bytes hold its vhost-vsock device (pure).
pub fn holds_vsock_device(bytes: &[u8]) -> bool {
    const DEVICE: &[u8] = b"/dev/vhost-vsock";
    bytes.windows(DEVICE.len()).any(|w| w == DEVICE)
}

#[cfg(test)]
mod tests {
    use super::super::{shell_line, Fs, Net, Role};
    use super::*;
    use crate::locate::host_arch;

    fn spec(root: Root, net: bool, vsock: bool) -> Spec {
        Spec {
            binary: "stratovirt".into(),
            kernel: "/k/bzImage".into(),
            root,
            initramfs: None,
            cmdline: "console=ttyS0 root=/dev/vda ro".into(),
            cpus: 2,
            memory_mib: 128,
            net: net.then(|| Net { tap: "hp1234a".into(), mac: "02:68:70:00:00:02".into() }),
            vsock: vsock.then_some(Vsock::Kernel { cid: 4242 }),
            serial: "/run/r/serial.log".into(),
            console: Console::Serial,
            fs: None,
            rng: false,
            api_socket: "/run/r/api.sock".into(),
            event_monitor: "/run/r/events.json".into(),
            log_file: "/run/r/vmm.log".into(),
            debugcon_socket: "/run/r/debugcon.sock".into(),
            accel: Accel::Kvm,
            role: Role::Boot,
            root_writable: false,
            arch: host_arch(),
        }
    }

    fn disk() -> Root {
        Root::Disk("/img/rootfs.ext4".into())
    }

    #[test]
    fn argv_of_a_boot_for_each_root_and_device_set() {
        let cases = [
            (
                spec(disk(), true, true),
                "stratovirt -machine microvm -smp 2 -m 128 -kernel /k/bzImage -append 'console=ttyS0 root=/dev/vda ro' \
                 -drive file=/img/rootfs.ext4,id=rootfs,readonly=on,direct=false -device virtio-blk-device,drive=rootfs,id=rootfs \
                 -netdev tap,id=net0,ifname=hp1234a -device virtio-net-device,id=net0,netdev=net0,mac=02:68:70:00:00:02 \
                 -device vhost-vsock-device,id=vsock0,guest-cid=4242 \
                 -qmp unix:/run/r/api.sock,server,nowait -serial file,path=/run/r/serial.log -D /run/r/vmm.log",
            ),
            (
                spec(Root::Initramfs("/img/i.cpio".into()), false, false),
                "stratovirt -machine microvm -smp 2 -m 128 -kernel /k/bzImage -append 'console=ttyS0 root=/dev/vda ro' \
                 -initrd /img/i.cpio -qmp unix:/run/r/api.sock,server,nowait -serial file,path=/run/r/serial.log -D /run/r/vmm.log",
            ),
            (
                Spec { initramfs: Some("/img/first.cpio".into()), root_writable: true, ..spec(disk(), false, false) },
                "stratovirt -machine microvm -smp 2 -m 128 -kernel /k/bzImage -append 'console=ttyS0 root=/dev/vda ro' \
                 -initrd /img/first.cpio -drive file=/img/rootfs.ext4,id=rootfs,readonly=off,direct=false \
                 -device virtio-blk-device,drive=rootfs,id=rootfs \
                 -qmp unix:/run/r/api.sock,server,nowait -serial file,path=/run/r/serial.log -D /run/r/vmm.log",
            ),
        ];
        for (spec, want) in cases {
            assert_eq!(shell_line(&argv(&spec).unwrap()), want);
        }
    }

    #[test]
    fn what_stratovirt_cannot_do_is_refused_with_the_fix() {
        let other = match host_arch() {
            Arch::X86_64 => Arch::Aarch64,
            Arch::Aarch64 => Arch::X86_64,
        };
        let fs = Fs { tag: "share".into(), socket: "/run/r/fs.sock".into() };
        let cases: [(Spec, &str); 7] = [
            (Spec { arch: other, ..spec(disk(), false, false) }, "needs --vmm qemu"),
            (Spec { console: Console::Virtio, ..spec(disk(), false, false) }, "serial console"),
            (Spec { fs: Some(fs), ..spec(disk(), false, false) }, "drop --share"),
            (spec(Root::Pmem("/p".into()), false, false), "use --root disk"),
            (Spec { vsock: Some(Vsock::Hybrid { cid: 3, socket: "/v".into() }), ..spec(disk(), false, false) }, "modprobe vhost_vsock"),
            (Spec { vsock: Some(Vsock::VhostUser { socket: "/v".into() }), ..spec(disk(), false, false) }, "modprobe vhost_vsock"),
            (Spec { cpus: 255, ..spec(disk(), false, false) }, "1 to 254 vCPUs"),
        ];
        for (spec, want) in cases {
            let e = argv(&spec).unwrap_err();
            assert!(e.contains(want), "{e}");
        }
        for f in [Feature::PmemRoot, Feature::KuasarLayout, Feature::Share] {
            assert!(StratoVirt.cannot(f).unwrap().contains("cloud-hypervisor"), "{f:?}");
        }
    }

    #[test]
    fn kernels_by_their_first_bytes() {
        let cases = [
            (KernelKind::BzImage, Ok(()), Err("not one")),
            (KernelKind::Elf(62), Err("not the ELF vmlinux: give --kernel the bzImage"), Err("not one")),
            (KernelKind::ArmImage, Err("not one"), Ok(())),
            (KernelKind::Unknown, Err("not one"), Err("not one")),
        ];
        for (kind, x86, arm) in cases {
            for (arch, want) in [(Arch::X86_64, x86), (Arch::Aarch64, arm)] {
                match (check_kernel(kind, arch), want) {
                    (Ok(()), Ok(())) => {}
                    (Err(e), Err(w)) => assert!(e.contains(w), "{kind:?} on {arch:?}: {e}"),
                    (got, _) => panic!("{kind:?} on {arch:?}: {got:?}"),
                }
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let mut elf = vec![0u8; 64];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[18] = 62;
        let k = dir.path().join("vmlinux");
        std::fs::write(&k, &elf).unwrap();
        let e = StratoVirt.argv(&Spec { kernel: k, arch: Arch::X86_64, ..spec(disk(), false, false) });
        if host_arch() == Arch::X86_64 {
            assert!(e.unwrap_err().contains("vmlinux: StratoVirt's microvm boots a bzImage"));
        }
        assert!(check_kernel_file(&dir.path().join("none"), Arch::X86_64).unwrap_err().starts_with("cannot read the kernel"));
    }

    #[test]
    fn versions_from_the_version_output_and_which_are_driven() {
        let cases = [
            ("StratoVirt 2.5.0 commit-id 26abef02\n", Some((2, 5, 0))),
            ("StratoVirt 2.4.0\n", Some((2, 4, 0))),
            ("StratoVirt 2.5\n", None),
            ("Firecracker v1.16.1\n", None),
            ("", None),
        ];
        for (text, want) in cases {
            assert_eq!(version(text), want, "{text:?}");
        }
        let p = Path::new("/opt/sv");
        let cases = [
            (Some("StratoVirt 2.5.0 commit-id 26abef02\n"), None),
            (Some("StratoVirt 2.5.3\n"), None),
            (None, Some("no answer to -version")),
            (Some("QEMU emulator version 7.2.0\n"), Some("is not StratoVirt: its -version says \"QEMU emulator version 7.2.0\"")),
            (Some("StratoVirt 2.4.0 commit-id 1\n"), Some("2.4.0 is untried")),
            (Some("StratoVirt 2.6.0\n"), Some("use v2.5")),
        ];
        for (out, want) in cases {
            match (check_program(p, out), want) {
                (Ok(()), None) => {}
                (Err(Error::Missing { what, fix }), Some(w)) => {
                    assert!(what.contains(w) && what.starts_with("/opt/sv"), "{what}");
                    assert!(fix.contains("$STRATOVIRT"), "{fix}");
                }
                (got, _) => panic!("{out:?}: {got:?}"),
            }
        }
    }

    /// `--vmm auto` (the registry's first VMM that fits, else its last) takes StratoVirt only where
    /// nothing else would run: hardware KVM, a native guest, neither cloud-hypervisor nor
    /// Firecracker, and no QEMU for this architecture.
    #[test]
    fn auto_takes_stratovirt_only_where_nothing_else_runs() {
        use crate::vmm::{cloud_hypervisor, firecracker, qemu};
        let hw = KvmKind::Hardware("kvm_amd");
        let host = |ch: bool, fc: bool, qemu_x86: bool, kvm: KvmKind| HostOffer {
            kvm,
            kvm_usable: true,
            vmm_programs: [
                Some((NAME, PathBuf::from("/bin/stratovirt"))),
                ch.then(|| ("cloud-hypervisor", PathBuf::from("/bin/cloud-hypervisor"))),
                fc.then(|| ("firecracker", PathBuf::from("/bin/firecracker"))),
                qemu_x86.then(|| ("qemu-system-x86_64", PathBuf::from("/bin/qemu-system-x86_64"))),
            ]
            .into_iter()
            .flatten()
            .collect(),
            arch: Arch::X86_64,
            vhost_vsock: None,
            kernel_vsock: true,
            virtiofsd: None,
            hypervisor: crate::cpuid::Hypervisor::None,
            cache_root: None,
            tsc_khz: None,
        };
        let cases = [
            (host(true, true, true, hw), true, cloud_hypervisor::VMM),
            (host(true, false, false, hw), true, cloud_hypervisor::VMM),
            (host(false, false, true, hw), true, qemu::VMM),
            (host(false, true, false, hw), true, firecracker::VMM),
            (host(false, false, false, hw), true, VMM),
            (host(false, false, false, KvmKind::Pvm), true, qemu::VMM),
            (host(false, false, false, hw), false, qemu::VMM),
        ];
        let all = crate::vmm::all();
        for (i, (h, native, want)) in cases.into_iter().enumerate() {
            let auto = all.iter().copied().find(|v| v.auto_fits(&h, native)).unwrap_or(all[all.len() - 1]);
            assert_eq!(auto, want, "case {i}");
        }
    }

    #[test]
    fn a_build_without_vhost_vsock_is_told_and_snapshots_are_refused_with_the_reason() {
        assert!(holds_vsock_device(b"\0\0open /dev/vhost-vsock\0"));
        assert!(!holds_vsock_device(b"vhost-vsock-device,id=<vsock_id>,guest-cid=<N>"));
        let cases = [(false, "built without its vhost-vsock device"), (true, "aarch64 only")];
        for (vsock_build, want) in cases {
            match snapshot_refusal(vsock_build) {
                Error::Missing { what, fix } => {
                    assert!(what.contains(want) && what.contains("made unique over vsock"), "{what}");
                    assert!(fix.contains("--vmm firecracker"), "{fix}");
                }
                e => panic!("{e:?}"),
            }
        }
        assert_eq!(snapshot_refusal(false).exit_code().code(), 3);
        assert!(StratoVirt.restore_mode(Some(MemoryRestoreMode::Ondemand)).unwrap_err().to_string().contains("drop it"));
        let log = "\
2026-12-07T14:11:11.436121760: [122][122][virtio/src/device/block.rs:1406]:WARN: No interrupter cb
2026-12-07T14:11:11.448801440: [122][122][src/main.rs:101]:ERROR: Failed to realize micro VM.

Caused by:
    Unsupported device: \"vhost-vsock-device\"
";
        assert_eq!(
            StratoVirt.first_error(log).unwrap(),
            "2026-12-07T14:11:11.448801440: [122][122][src/main.rs:101]:ERROR: Failed to realize micro VM.\n\
             Caused by:\n    Unsupported device: \"vhost-vsock-device\""
        );
        assert_eq!(StratoVirt.first_error(log.lines().next().unwrap()), None);
    }
}
