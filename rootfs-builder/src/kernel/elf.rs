//! Find the PVH entry note in a `vmlinux`: an ELF note named "Xen" of type
//! `XEN_ELFNOTE_PHYS32_ENTRY` (18). cloud-hypervisor refuses an ELF kernel without it.

/// `XEN_ELFNOTE_PHYS32_ENTRY` from include/xen/interface/elfnote.h.
pub const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;

const PT_NOTE: u32 = 4;

/// Why a file is not a usable ELF kernel.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ElfError {
    #[error("not a 64-bit little-endian ELF file")]
    NotElf64,
    #[error("ELF header or program headers run past the end of the file")]
    Truncated,
}

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(off..off + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(off..off + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], off: usize) -> Option<usize> {
    let v = u64::from_le_bytes(b.get(off..off + 8)?.try_into().ok()?);
    usize::try_from(v).ok()
}

/// All notes `(name, type, descriptor)` of the PT_NOTE segments of a 64-bit little-endian ELF.
pub fn notes(elf: &[u8]) -> Result<Vec<(String, u32, Vec<u8>)>, ElfError> {
    if elf.get(0..4) != Some(b"\x7fELF") || elf.get(4) != Some(&2) || elf.get(5) != Some(&1) {
        return Err(ElfError::NotElf64);
    }
    let phoff = u64_at(elf, 0x20).ok_or(ElfError::Truncated)?;
    let phentsize = usize::from(u16_at(elf, 0x36).ok_or(ElfError::Truncated)?);
    let phnum = usize::from(u16_at(elf, 0x38).ok_or(ElfError::Truncated)?);
    let mut out = Vec::new();
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        let p_type = u32_at(elf, ph).ok_or(ElfError::Truncated)?;
        if p_type != PT_NOTE {
            continue;
        }
        let off = u64_at(elf, ph + 8).ok_or(ElfError::Truncated)?;
        let size = u64_at(elf, ph + 32).ok_or(ElfError::Truncated)?;
        let seg = elf.get(off..off + size).ok_or(ElfError::Truncated)?;
        out.extend(parse_note_segment(seg));
    }
    Ok(out)
}

/// Notes in one segment: namesz, descsz, type, then name and descriptor, each padded to 4 bytes.
/// Stops at the first malformed note.
fn parse_note_segment(seg: &[u8]) -> Vec<(String, u32, Vec<u8>)> {
    let pad4 = |n: usize| (n + 3) & !3;
    let mut out = Vec::new();
    let mut at = 0;
    while let (Some(namesz), Some(descsz), Some(ty)) = (u32_at(seg, at), u32_at(seg, at + 4), u32_at(seg, at + 8)) {
        let (namesz, descsz) = (namesz as usize, descsz as usize);
        let name_at = at + 12;
        let desc_at = name_at + pad4(namesz);
        let (Some(name), Some(desc)) = (seg.get(name_at..name_at + namesz), seg.get(desc_at..desc_at + descsz)) else {
            break;
        };
        let name = String::from_utf8_lossy(name.strip_suffix(b"\0").unwrap_or(name)).into_owned();
        out.push((name, ty, desc.to_vec()));
        at = desc_at + pad4(descsz);
    }
    out
}

/// The PVH entry address, when the kernel has the note.
pub fn pvh_entry(elf: &[u8]) -> Result<Option<u64>, ElfError> {
    Ok(notes(elf)?.into_iter().find(|(name, ty, _)| name == "Xen" && *ty == XEN_ELFNOTE_PHYS32_ENTRY).map(|(_, _, desc)| {
        let mut b = [0u8; 8];
        let n = desc.len().min(8);
        b[..n].copy_from_slice(&desc[..n]);
        u64::from_le_bytes(b)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(name: &str, ty: u32, desc: &[u8]) -> Vec<u8> {
        let mut n = Vec::new();
        let name_z = [name.as_bytes(), b"\0"].concat();
        n.extend((name_z.len() as u32).to_le_bytes());
        n.extend((desc.len() as u32).to_le_bytes());
        n.extend(ty.to_le_bytes());
        n.extend(&name_z);
        n.resize(n.len().next_multiple_of(4), 0);
        n.extend(desc);
        n.resize(n.len().next_multiple_of(4), 0);
        n
    }

    /// A minimal ELF64: header, one PT_LOAD (ignored) and one PT_NOTE holding `segment`.
    fn elf_with_notes(segment: &[u8]) -> Vec<u8> {
        let mut e = vec![0u8; 64];
        e[0..4].copy_from_slice(b"\x7fELF");
        e[4] = 2;
        e[5] = 1;
        e[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        e[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        e[0x38..0x3a].copy_from_slice(&2u16.to_le_bytes());
        let data_at = 64 + 2 * 56;
        let mut load = vec![0u8; 56];
        load[0..4].copy_from_slice(&1u32.to_le_bytes());
        let mut ph = vec![0u8; 56];
        ph[0..4].copy_from_slice(&PT_NOTE.to_le_bytes());
        ph[8..16].copy_from_slice(&(data_at as u64).to_le_bytes());
        ph[32..40].copy_from_slice(&(segment.len() as u64).to_le_bytes());
        e.extend(load);
        e.extend(ph);
        e.extend(segment);
        e
    }

    #[test]
    fn finds_the_pvh_note_among_others() {
        let seg = [note("GNU", 3, &[1, 2, 3, 4, 5]), note("Xen", 6, b"linux"), note("Xen", 18, &0x0100_0400u32.to_le_bytes())].concat();
        let elf = elf_with_notes(&seg);
        assert_eq!(notes(&elf).unwrap().len(), 3);
        assert_eq!(pvh_entry(&elf), Ok(Some(0x0100_0400)));
    }

    #[test]
    fn no_pvh_note() {
        let seg = [note("Xen", 6, b"linux"), note("Linux", 18, &[0; 4])].concat();
        assert_eq!(pvh_entry(&elf_with_notes(&seg)), Ok(None));
        assert_eq!(pvh_entry(&elf_with_notes(&[])), Ok(None));
    }

    #[test]
    fn rejects_non_elf_and_truncated() {
        assert_eq!(pvh_entry(b"MZ\x90\0"), Err(ElfError::NotElf64));
        let mut bzimage_like = vec![0u8; 600];
        bzimage_like[0x202..0x206].copy_from_slice(b"HdrS");
        assert_eq!(pvh_entry(&bzimage_like), Err(ElfError::NotElf64));
        let seg = note("Xen", 18, &[0; 4]);
        let elf = elf_with_notes(&seg);
        assert_eq!(pvh_entry(&elf[..elf.len() - 4]), Err(ElfError::Truncated));
    }
}
