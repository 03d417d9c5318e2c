//! What a kernel file is, from its first bytes: what a VMM that loads one kind only checks before
//! anything starts (Firecracker the ELF `vmlinux` on x86_64, StratoVirt the `bzImage`), and the
//! architecture a kernel is for ([`crate::locate::kernel_arch`]).

use std::io::Read;
use std::path::Path;

use rootfs_builder::elf::Arch;

/// What a kernel file is, from its first bytes (0x400 are enough).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelKind {
    /// An ELF image (`vmlinux`) of this `e_machine` (62 x86_64, 183 aarch64).
    Elf(u16),
    /// An x86 `bzImage` (setup header `HdrS` at 0x202).
    BzImage,
    /// An arm64 `Image` (magic `ARM\x64` at 0x38).
    ArmImage,
    Unknown,
}

impl KernelKind {
    /// The architecture a kernel of this kind is for.
    pub fn arch(self) -> Option<Arch> {
        match self {
            KernelKind::Elf(62) | KernelKind::BzImage => Some(Arch::X86_64),
            KernelKind::Elf(183) | KernelKind::ArmImage => Some(Arch::Aarch64),
            KernelKind::Elf(_) | KernelKind::Unknown => None,
        }
    }
}

/// [`KernelKind`] of a kernel's first bytes.
pub fn kernel_kind(head: &[u8]) -> KernelKind {
    if head.starts_with(b"\x7fELF") && head.len() >= 20 {
        return KernelKind::Elf(u16::from_le_bytes([head[18], head[19]]));
    }
    if head.get(0x38..0x3c) == Some(b"ARM\x64") {
        return KernelKind::ArmImage;
    }
    if head.get(0x202..0x206) == Some(b"HdrS") {
        return KernelKind::BzImage;
    }
    KernelKind::Unknown
}

/// [`KernelKind`] of a file (its first 0x400 bytes), or why it cannot be read.
pub fn kind_of_file(path: &Path) -> Result<KernelKind, String> {
    let mut head = Vec::with_capacity(0x400);
    std::fs::File::open(path)
        .and_then(|f| f.take(0x400).read_to_end(&mut head))
        .map_err(|e| format!("cannot read the kernel {}: {e}", path.display()))?;
    Ok(kernel_kind(&head))
}
