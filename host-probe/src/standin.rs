//! Stand-ins for tests that need a VMM but no VM: a VMM that is a shell script (it answers
//! `--version` and otherwise does what the test says: exit after a second, write a file, sleep), a
//! host that has it, and snapshot directories made by hand. With them restores, snapshots and their
//! failures run on any machine, in seconds.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::check::KvmKind;
use crate::options::{Arch, HostOffer};
use crate::snapshot::manifest::{self, Boot, Devices, FileId, Manifest};
use crate::vmm::{Accel, Vmm};

/// The `--version` line of the stand-in of `vmm`.
pub fn version(vmm: Vmm) -> String {
    format!("{} (stand-in)", vmm.name())
}

/// Writes an executable shell script `dir/name` that prints `vmm`'s stand-in version for
/// `--version` and runs `body` otherwise, and returns its path once it can be executed (a script
/// just written can fail with "text file busy" while another thread forks).
pub fn vmm(dir: &Path, name: &str, vmm: Vmm, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    let text = format!("#!/bin/sh\nif [ \"$1\" = --version ]; then echo '{}'; exit 0; fi\n{body}\n", version(vmm));
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    for _ in 0..500 {
        match std::process::Command::new(&path).arg("--version").output() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => panic!("run {}: {e}", path.display()),
            Ok(_) => return path,
        }
    }
    panic!("{} stayed busy", path.display())
}

/// A host with hardware KVM whose cloud-hypervisor and QEMU are the given programs; no vsock
/// helpers.
pub fn host(cloud_hypervisor: Option<&Path>, qemu: Option<&Path>) -> HostOffer {
    HostOffer {
        kvm: KvmKind::Hardware("kvm_amd"),
        kvm_usable: true,
        vmm_programs: [(crate::vmm::cloud_hypervisor::NAME, cloud_hypervisor), (crate::vmm::qemu::QEMU, qemu)]
            .into_iter()
            .filter_map(|(name, p)| p.map(|p| (name, p.to_path_buf())))
            .collect(),
        arch: Arch::X86_64,
        vhost_vsock: None,
        kernel_vsock: false,
        virtiofsd: None,
        hypervisor: crate::cpuid::Hypervisor::None,
        cache_root: None,
        tsc_khz: None,
    }
}

/// A kernel and a root image (their contents do not matter to host-probe's checks) in `dir`.
pub fn boot_files(dir: &Path) -> (PathBuf, PathBuf) {
    let (kernel, rootfs) = (dir.join("vmlinux"), dir.join("rootfs.ext4"));
    std::fs::write(&kernel, b"kernel").unwrap();
    std::fs::write(&rootfs, b"rootfs").unwrap();
    (kernel, rootfs)
}

/// A snapshot directory `dir` as `host-probe snapshot` leaves it, of `vmm` (the program `binary`,
/// its stand-in version), `kernel` and `rootfs`: no network device, 64 MiB, generation 0, the
/// VMM's files with placeholder contents. QEMU's vsock is the kernel's, cloud-hypervisor's its own.
pub fn snapshot(dir: &Path, vmm: Vmm, binary: &Path, kernel: &Path, rootfs: &Path) -> Manifest {
    std::fs::create_dir_all(dir).unwrap();
    let m = Manifest {
        format: manifest::FORMAT,
        vmm,
        vmm_binary: binary.to_path_buf(),
        vmm_version: version(vmm),
        accel: Accel::Kvm,
        boot: Boot {
            kernel: FileId::of(kernel).unwrap(),
            rootfs: Some(FileId::of(rootfs).unwrap()),
            initramfs: None,
            root_mode: "disk".into(),
            cpus: 1,
            memory_mib: 64,
            cmdline_extra: String::new(),
            init: crate::cmdline::DEFAULT_INIT.into(),
            layout: "default".into(),
            cmdline: "console=ttyS0".into(),
        },
        devices: Devices { mac: None, ip: None, vsock: vmm.restorable_vsock().into() },
        generation: 0,
        files: manifest::vmm_files(vmm).iter().map(|f| f.to_string()).collect(),
        created_unix_s: 0,
        boot_ready_us: 1,
        pause_us: 1,
        save_us: 1,
    };
    for f in manifest::vmm_files(vmm) {
        let bytes: &[u8] = match *f {
            "config.json" => br#"{"serial":{"mode":"File","file":"/s"},"console":{"mode":"Off"},"vsock":{"cid":3,"socket":"/v"}}"#,
            _ => b"placeholder",
        };
        std::fs::write(dir.join(f), bytes).unwrap();
    }
    write_manifest(dir, &m);
    m
}

/// Writes `m` as `dir`'s manifest.
pub fn write_manifest(dir: &Path, m: &Manifest) {
    std::fs::write(dir.join(manifest::MANIFEST), serde_json::to_vec_pretty(m).unwrap()).unwrap();
}
