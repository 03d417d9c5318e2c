//! Finding the default kernel and image the project's builders made, and the VMM binaries.

use std::path::{Path, PathBuf};

use rootfs_builder::elf::Arch;

/// This process's kernel cache root: rootfs-builder's rule, asked of rootfs-builder.
pub fn this_cache_root() -> Option<PathBuf> {
    rootfs_builder::kernel::cache_root()
}

/// Which kernel file a VMM boots ([`crate::vmm::Driver::kernel_file`]).
pub fn kernel_file_name(vmm: crate::vmm::Vmm, arch: Arch) -> &'static str {
    vmm.kernel_file(arch)
}

/// The newest kernel of `arch` with `file` that rootfs-builder built under the cache root.
pub fn default_kernel(root: &Path, arch: Arch, file: &str) -> Option<PathBuf> {
    rootfs_builder::kernel::newest_built(root, arch, file)
}

/// A kernel's architecture, from its first bytes (pure): an ELF's `e_machine`, an arm64 `Image`'s
/// magic (`ARM\x64` at 0x38), an x86 `bzImage`'s setup header (`HdrS` at 0x202).
pub fn kernel_arch(head: &[u8]) -> Option<Arch> {
    crate::vmm::kernel::kernel_kind(head).arch()
}

/// [`kernel_arch`] of a file.
pub fn kernel_file_arch(path: &Path) -> Option<Arch> {
    crate::vmm::kernel::kind_of_file(path).ok()?.arch()
}

/// This host's architecture.
pub fn host_arch() -> Arch {
    if std::env::consts::ARCH == "aarch64" {
        Arch::Aarch64
    } else {
        Arch::X86_64
    }
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

pub fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
}

pub const VHOST_VSOCK: &str = "vhost-device-vsock";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kernel_says_its_architecture() {
        let mut elf = vec![0u8; 64];
        elf[..4].copy_from_slice(b"\x7fELF");
        let mut bz = vec![0u8; 0x400];
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        let mut image = vec![0u8; 0x40];
        image[0x38..0x3c].copy_from_slice(b"ARM\x64");
        let cases: Vec<(Vec<u8>, Option<Arch>)> = vec![
            (
                {
                    let mut e = elf.clone();
                    e[18] = 62;
                    e
                },
                Some(Arch::X86_64),
            ),
            (
                {
                    let mut e = elf.clone();
                    e[18] = 183;
                    e
                },
                Some(Arch::Aarch64),
            ),
            (
                {
                    let mut e = elf.clone();
                    e[18] = 40;
                    e
                },
                None,
            ),
            (bz, Some(Arch::X86_64)),
            (image, Some(Arch::Aarch64)),
            (b"not a kernel".to_vec(), None),
            (vec![], None),
        ];
        for (head, want) in cases {
            assert_eq!(kernel_arch(&head), want, "{:?}", &head[..head.len().min(8)]);
        }
        assert_eq!(
            (kernel_file_name(crate::vmm::qemu::VMM, Arch::Aarch64), kernel_file_name(crate::vmm::qemu::VMM, Arch::X86_64)),
            ("Image", "bzImage")
        );
    }
}
