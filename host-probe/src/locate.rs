//! Finding the default kernel and image the project's builders made, and the VMM binaries.

use std::path::{Path, PathBuf};

/// This process's kernel cache root: rootfs-builder's rule, asked of rootfs-builder.
pub fn this_cache_root() -> Option<PathBuf> {
    rootfs_builder::kernel::cache_root()
}

/// Which kernel file a VMM boots: cloud-hypervisor takes the PVH `vmlinux`, QEMU the `bzImage`.
pub fn kernel_file_name(vmm: crate::vmm::Vmm) -> &'static str {
    match vmm {
        crate::vmm::Vmm::CloudHypervisor => "vmlinux",
        crate::vmm::Vmm::Qemu => "bzImage",
    }
}

/// The newest x86_64 kernel with `file` that rootfs-builder built under the cache root.
pub fn default_kernel(root: &Path, file: &str) -> Option<PathBuf> {
    rootfs_builder::kernel::newest_built(root, rootfs_builder::elf::Arch::X86_64, file)
}

/// The default images, first found wins: `rootfs_fast.ext4` in the current directory.
pub const DEFAULT_IMAGE: &str = "rootfs_fast.ext4";

/// A program on PATH (or the path itself when it contains a `/`).
pub fn which(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        return Path::new(program).is_file().then(|| PathBuf::from(program));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(program)).find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
}

/// cloud-hypervisor: `$CLOUD_HYPERVISOR`, else on PATH.
pub fn cloud_hypervisor() -> Option<PathBuf> {
    match std::env::var_os("CLOUD_HYPERVISOR") {
        Some(p) if !p.is_empty() => Some(PathBuf::from(p)).filter(|p| is_executable(p)),
        _ => which("cloud-hypervisor"),
    }
}

pub const QEMU: &str = "qemu-system-x86_64";
pub const VHOST_VSOCK: &str = "vhost-device-vsock";
