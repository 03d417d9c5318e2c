//! Minimal PVH guests: an ELF64 whose few instructions write chinit's port-0x80 marks (0x60..0x63)
//! and then stop. They prove a VMM path (spawn, marks, events, TAP, cleanup) where Linux cannot run,
//! e.g. cloud-hypervisor on kvm_pvm hosts. Both VMMs load them through the `XEN_ELFNOTE_PHYS32_ENTRY`
//! note; the code runs in 32-bit protected mode without paging.

/// Where the code is loaded and entered (cloud-hypervisor refuses entries below 1 MiB).
pub const LOAD: u64 = 0x10_0000;

/// How the guest ends after its marks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// cloud-hypervisor's ACPI shutdown port: 0x600 ← S5 | SLP_EN (0x34). The VMM exits.
    AcpiShutdown,
    /// Load an empty IDT and trap: a triple fault, i.e. a reset, which QEMU `-no-reboot` turns into
    /// an exit.
    TripleFault,
    /// Halt forever (to test timeouts and signals).
    Halt,
}

/// The guest code.
pub fn code(end: End) -> Vec<u8> {
    let mut c = Vec::new();
    for mark in 0x60u8..=0x63 {
        c.extend_from_slice(&[0xB0, mark, 0xE6, 0x80]); // mov al, mark; out 0x80, al
    }
    match end {
        End::AcpiShutdown => {
            c.extend_from_slice(&[0x66, 0xBA, 0x00, 0x06]); // mov dx, 0x600
            c.extend_from_slice(&[0xB0, (5 << 2) | (1 << 5)]); // mov al, S5 | SLP_EN
            c.push(0xEE); // out dx, al
        }
        End::TripleFault => {
            // lidt [desc]; int3 — with a zero-limit IDT every exception escalates to a reset.
            let desc = LOAD + c.len() as u64 + 7 + 1 + 3;
            c.extend_from_slice(&[0x0F, 0x01, 0x1D]);
            c.extend_from_slice(&(desc as u32).to_le_bytes());
            c.push(0xCC);
        }
        End::Halt => {}
    }
    c.extend_from_slice(&[0xF4, 0xEB, 0xFD]); // hlt; jmp back to hlt
    if end == End::TripleFault {
        c.extend_from_slice(&[0; 6]); // the empty IDT descriptor
    }
    c
}

/// The ELF64: one PT_LOAD with the code at [`LOAD`], one PT_NOTE with the PVH entry point.
pub fn elf(end: End) -> Vec<u8> {
    let code = code(end);
    let mut note = Vec::new();
    for v in [4u32, 4, 18] {
        note.extend_from_slice(&v.to_le_bytes()); // namesz, descsz, XEN_ELFNOTE_PHYS32_ENTRY
    }
    note.extend_from_slice(b"Xen\0");
    note.extend_from_slice(&(LOAD as u32).to_le_bytes());

    let mut e = Vec::new();
    e.extend_from_slice(b"\x7fELF");
    e.extend_from_slice(&[2, 1, 1, 0]); // 64-bit, little-endian, version 1, SysV
    e.extend_from_slice(&[0; 8]);
    e.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    e.extend_from_slice(&0x3Eu16.to_le_bytes()); // EM_X86_64
    e.extend_from_slice(&1u32.to_le_bytes());
    e.extend_from_slice(&LOAD.to_le_bytes()); // e_entry
    e.extend_from_slice(&64u64.to_le_bytes()); // e_phoff
    e.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
    e.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    for v in [64u16, 56, 2, 64, 0, 0] {
        e.extend_from_slice(&v.to_le_bytes()); // ehsize, phentsize, phnum, shentsize, shnum, shstrndx
    }
    let note_off = 64 + 2 * 56;
    phdr(&mut e, 1, 5, 0x1000, LOAD, code.len() as u64, 0x1000); // PT_LOAD, R+X
    phdr(&mut e, 4, 4, note_off, 0, note.len() as u64, 4); // PT_NOTE
    e.extend_from_slice(&note);
    e.resize(0x1000, 0);
    e.extend_from_slice(&code);
    e
}

fn phdr(e: &mut Vec<u8>, p_type: u32, flags: u32, off: u64, addr: u64, size: u64, align: u64) {
    e.extend_from_slice(&p_type.to_le_bytes());
    e.extend_from_slice(&flags.to_le_bytes());
    for v in [off, addr, addr, size, size, align] {
        e.extend_from_slice(&v.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elf_layout_and_note() {
        let e = elf(End::AcpiShutdown);
        assert_eq!(&e[..4], b"\x7fELF");
        assert_eq!(u64::from_le_bytes(e[24..32].try_into().unwrap()), LOAD);
        let note = &e[176..196];
        assert_eq!(u32::from_le_bytes(note[8..12].try_into().unwrap()), 18);
        assert_eq!(&note[12..16], b"Xen\0");
        assert_eq!(u32::from_le_bytes(note[16..20].try_into().unwrap()), LOAD as u32);
        assert_eq!(&e[0x1000..0x1004], &[0xB0, 0x60, 0xE6, 0x80]);
        // PT_LOAD's file size is the code's size.
        let filesz = u64::from_le_bytes(e[64 + 32..64 + 40].try_into().unwrap());
        assert_eq!(filesz as usize, e.len() - 0x1000);
    }

    #[test]
    fn each_ending() {
        let acpi = code(End::AcpiShutdown);
        assert_eq!(&acpi[16..23], &[0x66, 0xBA, 0x00, 0x06, 0xB0, 0x34, 0xEE]);
        let tf = code(End::TripleFault);
        let desc = u32::from_le_bytes(tf[19..23].try_into().unwrap()) as u64;
        assert_eq!(desc - LOAD, (tf.len() - 6) as u64, "lidt points at the zero descriptor");
        assert_eq!(&tf[tf.len() - 6..], &[0; 6]);
        assert_eq!(code(End::Halt)[16..], [0xF4, 0xEB, 0xFD]);
    }
}
