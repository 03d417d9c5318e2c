//! Refuse an init that cannot be PID 1: not ELF, wrong machine, or dynamically linked.

use crate::error::{BUILD_CHINIT_AARCH64, BUILD_CHINIT_X86_64};

/// Target architecture of the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Arch {
    #[value(name = "x86_64")]
    X86_64,
    #[value(name = "aarch64")]
    Aarch64,
}

impl Arch {
    /// ELF `e_machine` of this architecture.
    pub fn e_machine(self) -> u16 {
        match self {
            Arch::X86_64 => 62,
            Arch::Aarch64 => 183,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }

    /// The Rust target triple of the static (musl) chinit build.
    pub fn musl_triple(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64-unknown-linux-musl",
            Arch::Aarch64 => "aarch64-unknown-linux-musl",
        }
    }

    /// The command that builds chinit for this architecture.
    pub fn build_command(self) -> &'static str {
        match self {
            Arch::X86_64 => BUILD_CHINIT_X86_64,
            Arch::Aarch64 => BUILD_CHINIT_AARCH64,
        }
    }
}

const PT_INTERP: u32 = 3;
const ET_EXEC: u16 = 2;
const ET_DYN: u16 = 3;

fn machine_name(m: u16) -> String {
    match m {
        3 => "i386".into(),
        40 => "arm".into(),
        62 => "x86_64".into(),
        183 => "aarch64".into(),
        243 => "riscv".into(),
        other => format!("machine {other}"),
    }
}

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(off..off + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(off..off + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(off..off + 8)?.try_into().ok()?))
}

/// Check that `bytes` is a static little-endian ELF64 executable for `arch`.
/// Returns the problem in words when it is not.
pub fn check_static(bytes: &[u8], arch: Arch) -> Result<(), String> {
    if bytes.is_empty() {
        return Err("the file is empty".into());
    }
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" {
        return Err("not an ELF executable".into());
    }
    if bytes[4] != 2 || bytes[5] != 1 {
        return Err("not a 64-bit little-endian ELF".into());
    }
    let truncated = || "truncated ELF header".to_string();
    let e_type = u16_at(bytes, 16).ok_or_else(truncated)?;
    if e_type != ET_EXEC && e_type != ET_DYN {
        return Err(format!("ELF type {e_type} is not an executable"));
    }
    let machine = u16_at(bytes, 18).ok_or_else(truncated)?;
    if machine != arch.e_machine() {
        return Err(format!("built for {}, not {}", machine_name(machine), arch.name()));
    }
    let phoff = usize::try_from(u64_at(bytes, 32).ok_or_else(truncated)?).map_err(|_| truncated())?;
    let phentsize = usize::from(u16_at(bytes, 54).ok_or_else(truncated)?);
    let phnum = usize::from(u16_at(bytes, 56).ok_or_else(truncated)?);
    if phnum == 0 {
        return Err("no program headers: not an executable".into());
    }
    for i in 0..phnum {
        let off = phoff.checked_add(i.checked_mul(phentsize).ok_or_else(truncated)?).ok_or_else(truncated)?;
        let p_type = u32_at(bytes, off).ok_or_else(|| "truncated program headers".to_string())?;
        if p_type == PT_INTERP {
            return Err("dynamically linked (it asks for an ELF interpreter, which the guest does not have)".into());
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal ELF64 header with one program header of type `ptype`.
    pub(crate) fn elf(machine: u16, e_type: u16, ptype: u32) -> Vec<u8> {
        let mut b = vec![0u8; 64 + 56];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = 2;
        b[5] = 1;
        b[6] = 1;
        b[16..18].copy_from_slice(&e_type.to_le_bytes());
        b[18..20].copy_from_slice(&machine.to_le_bytes());
        b[32..40].copy_from_slice(&64u64.to_le_bytes());
        b[54..56].copy_from_slice(&56u16.to_le_bytes());
        b[56..58].copy_from_slice(&1u16.to_le_bytes());
        b[64..68].copy_from_slice(&ptype.to_le_bytes());
        b
    }

    #[test]
    fn table() {
        let load = 1;
        let cases: Vec<(Vec<u8>, Arch, Result<(), &str>)> = vec![
            (elf(62, ET_EXEC, load), Arch::X86_64, Ok(())),
            (elf(62, ET_DYN, load), Arch::X86_64, Ok(())),
            (elf(183, ET_EXEC, load), Arch::Aarch64, Ok(())),
            (elf(183, ET_EXEC, load), Arch::X86_64, Err("built for aarch64, not x86_64")),
            (elf(62, ET_EXEC, load), Arch::Aarch64, Err("built for x86_64, not aarch64")),
            (elf(62, ET_EXEC, PT_INTERP), Arch::X86_64, Err("dynamically linked")),
            (elf(62, 1, load), Arch::X86_64, Err("is not an executable")),
            (vec![], Arch::X86_64, Err("empty")),
            (b"#!/bin/sh\necho hi\n".repeat(8), Arch::X86_64, Err("not an ELF")),
        ];
        for (bytes, arch, want) in cases {
            let got = check_static(&bytes, arch);
            match (got, want) {
                (Ok(()), Ok(())) => {}
                (Err(e), Err(w)) => assert!(e.contains(w), "{e:?} should contain {w:?}"),
                (g, w) => panic!("got {g:?}, want {w:?}"),
            }
        }
    }

    #[test]
    fn host_binaries() {
        // /bin/ls on Debian is dynamic; busybox-static is static.
        if let Ok(ls) = std::fs::read("/bin/ls") {
            assert!(check_static(&ls, Arch::X86_64).unwrap_err().contains("dynamically"));
        }
    }
}
