//! A GPT disk with the root filesystem as its one partition (`--gpt`), the layout Kuasar gives
//! cloud-hypervisor guests (`root=/dev/pmem0p1`, `/dev/vda1`). Pure: the layout and the bytes of
//! the tables are computed here; [`wrap`] writes them around an ext4 image, sparsely.
//!
//! Layout, in 512-byte sectors: protective MBR (0), GPT header (1), 128 partition entries (2-33),
//! the partition from sector 2048 (1 MiB, aligned), then the backup entries and header in the last
//! 33 sectors. The disk is a whole number of 2 MiB, as cloud-hypervisor wants of a pmem device.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

pub const SECTOR: u64 = 512;
/// The partition's first sector: 1 MiB in.
pub const FIRST_LBA: u64 = 2048;
const ENTRIES: u64 = 128;
const ENTRY_SIZE: u64 = 128;
/// Sectors the 128 entries take.
const ENTRY_SECTORS: u64 = ENTRIES * ENTRY_SIZE / SECTOR;
/// The disk is a multiple of this.
pub const ALIGN: u64 = 2 << 20;
/// "Linux filesystem data".
pub const LINUX_FS: &str = "0fc63daf-8483-4772-8e79-3d69d8477de4";

/// Where everything goes, in sectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub total: u64,
    pub part_first: u64,
    pub part_last: u64,
}

impl Layout {
    /// The smallest disk (a multiple of [`ALIGN`]) that holds a partition of `part_bytes`, which is
    /// then grown to fill it up to the backup tables.
    pub fn for_partition(part_bytes: u64) -> Layout {
        let needed = FIRST_LBA * SECTOR + part_bytes.div_ceil(SECTOR) * SECTOR + (1 + ENTRY_SECTORS) * SECTOR;
        let total = needed.div_ceil(ALIGN) * ALIGN / SECTOR;
        Layout { total, part_first: FIRST_LBA, part_last: total - 1 - ENTRY_SECTORS - 1 }
    }

    pub fn part_offset(&self) -> u64 {
        self.part_first * SECTOR
    }
}

/// A GUID's on-disk bytes from its text form (the first three fields are little-endian).
pub fn guid_bytes(text: &str) -> Option<[u8; 16]> {
    let hex: String = text.chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 {
        return None;
    }
    let mut b = [0u8; 16];
    for (i, byte) in b.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    b[0..4].reverse();
    b[4..6].reverse();
    b[6..8].reverse();
    Some(b)
}

/// A version-4-shaped GUID from two 64-bit values (deterministic: the image's inputs decide it).
pub fn guid_from(a: u64, b: u64) -> String {
    let a = (a & 0xffff_ffff_ffff_0fff) | 0x4000;
    let b = (b & 0x3fff_ffff_ffff_ffff) | 0x8000_0000_0000_0000;
    format!("{:08x}-{:04x}-{:04x}-{:04x}-{:012x}", a >> 32, (a >> 16) & 0xffff, a & 0xffff, b >> 48, b & 0xffff_ffff_ffff)
}

fn entries(l: &Layout, part_guid: &[u8; 16], name: &str) -> Vec<u8> {
    let mut e = vec![0u8; (ENTRIES * ENTRY_SIZE) as usize];
    e[0..16].copy_from_slice(&guid_bytes(LINUX_FS).unwrap_or_default());
    e[16..32].copy_from_slice(part_guid);
    e[32..40].copy_from_slice(&l.part_first.to_le_bytes());
    e[40..48].copy_from_slice(&l.part_last.to_le_bytes());
    for (i, u) in name.encode_utf16().take(36).enumerate() {
        e[56 + 2 * i..58 + 2 * i].copy_from_slice(&u.to_le_bytes());
    }
    e
}

/// One GPT header (primary when `at` is 1, the backup at the last sector).
fn header(l: &Layout, disk_guid: &[u8; 16], at: u64, entries_at: u64, entries_crc: u32) -> [u8; SECTOR as usize] {
    let mut h = [0u8; SECTOR as usize];
    h[0..8].copy_from_slice(b"EFI PART");
    h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
    h[12..16].copy_from_slice(&92u32.to_le_bytes());
    let other = if at == 1 { l.total - 1 } else { 1 };
    h[24..32].copy_from_slice(&at.to_le_bytes());
    h[32..40].copy_from_slice(&other.to_le_bytes());
    h[40..48].copy_from_slice(&(2 + ENTRY_SECTORS).to_le_bytes());
    h[48..56].copy_from_slice(&(l.total - 2 - ENTRY_SECTORS).to_le_bytes());
    h[56..72].copy_from_slice(disk_guid);
    h[72..80].copy_from_slice(&entries_at.to_le_bytes());
    h[80..84].copy_from_slice(&(ENTRIES as u32).to_le_bytes());
    h[84..88].copy_from_slice(&(ENTRY_SIZE as u32).to_le_bytes());
    h[88..92].copy_from_slice(&entries_crc.to_le_bytes());
    let crc = crc32fast::hash(&h[0..92]);
    h[16..20].copy_from_slice(&crc.to_le_bytes());
    h
}

/// The protective MBR: one partition of type 0xEE over the whole disk.
fn protective_mbr(l: &Layout) -> [u8; SECTOR as usize] {
    let mut m = [0u8; SECTOR as usize];
    let p = &mut m[446..462];
    p[1..4].copy_from_slice(&[0x00, 0x02, 0x00]);
    p[4] = 0xee;
    p[5..8].copy_from_slice(&[0xff, 0xff, 0xff]);
    p[8..12].copy_from_slice(&1u32.to_le_bytes());
    p[12..16].copy_from_slice(&u32::try_from(l.total - 1).unwrap_or(u32::MAX).to_le_bytes());
    m[510] = 0x55;
    m[511] = 0xaa;
    m
}

/// The bytes before the partition (MBR, header, entries) and after it (entries, backup header).
pub fn tables(l: &Layout, disk_guid: &str, part_guid: &str, name: &str) -> Option<(Vec<u8>, Vec<u8>)> {
    let (disk, part) = (guid_bytes(disk_guid)?, guid_bytes(part_guid)?);
    let e = entries(l, &part, name);
    let crc = crc32fast::hash(&e);
    let mut head = Vec::with_capacity(((2 + ENTRY_SECTORS) * SECTOR) as usize);
    head.extend_from_slice(&protective_mbr(l));
    head.extend_from_slice(&header(l, &disk, 1, 2, crc));
    head.extend_from_slice(&e);
    let mut tail = e.clone();
    tail.extend_from_slice(&header(l, &disk, l.total - 1, l.total - 1 - ENTRY_SECTORS, crc));
    Some((head, tail))
}

/// Writes `disk`: the tables around the filesystem image `fs` as the one partition. Zero blocks
/// of `fs` are skipped, so the disk stays as sparse as the image.
pub fn wrap(fs: &Path, disk: &Path, disk_guid: &str, part_guid: &str, name: &str) -> std::io::Result<Layout> {
    let mut src = std::fs::File::open(fs)?;
    let l = Layout::for_partition(src.metadata()?.len());
    let (head, tail) = tables(&l, disk_guid, part_guid, name).ok_or_else(|| std::io::Error::other("malformed GUID"))?;
    let mut out = std::fs::File::create(disk)?;
    out.set_len(l.total * SECTOR)?;
    out.write_all(&head)?;
    out.seek(SeekFrom::Start(l.part_offset()))?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = src.read(&mut buf)?;
        if n == 0 {
            break;
        }
        if buf[..n].iter().all(|b| *b == 0) {
            out.seek(SeekFrom::Current(n as i64))?;
        } else {
            out.write_all(&buf[..n])?;
        }
    }
    out.seek(SeekFrom::Start((l.total - 1 - ENTRY_SECTORS) * SECTOR))?;
    out.write_all(&tail)?;
    out.sync_all()?;
    Ok(l)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_are_aligned_and_hold_the_partition() {
        for (part, total_mib) in [(16 << 20, 18), (1, 2), ((2 << 20) - 1 - 34 * 512 - (1 << 20), 2), (100 << 20, 102)] {
            let l = Layout::for_partition(part);
            assert_eq!(l.total * SECTOR, total_mib << 20, "{part}");
            assert_eq!(l.part_first, 2048);
            assert!((l.part_last - l.part_first + 1) * SECTOR >= part, "{part}: {l:?}");
            assert_eq!(l.total - 1 - l.part_last, 33, "backup entries and header after the partition");
        }
    }

    #[test]
    fn guids_are_mixed_endian() {
        let b = guid_bytes(LINUX_FS).unwrap();
        assert_eq!(&b[..8], &[0xaf, 0x3d, 0xc6, 0x0f, 0x83, 0x84, 0x72, 0x47]);
        assert_eq!(&b[8..], &[0x8e, 0x79, 0x3d, 0x69, 0xd8, 0x47, 0x7d, 0xe4]);
        assert!(guid_bytes("nonsense").is_none());
        let g = guid_from(0x0123_4567_89ab_cdef, 0xfedc_ba98_7654_3210);
        assert_eq!(g, "01234567-89ab-4def-bedc-ba9876543210");
    }

    #[test]
    fn tables_check_out() {
        let l = Layout::for_partition(16 << 20);
        let (head, tail) = tables(&l, &guid_from(1, 2), &guid_from(3, 4), "root").unwrap();
        assert_eq!(head.len() as u64, 34 * SECTOR);
        assert_eq!(tail.len() as u64, 33 * SECTOR);
        assert_eq!(&head[510..512], &[0x55, 0xaa]);
        assert_eq!(head[446 + 4], 0xee);
        let hdr = &head[512..1024];
        assert_eq!(&hdr[0..8], b"EFI PART");
        // The header's CRC is over its 92 bytes with the CRC field zero.
        let mut h = hdr[..92].to_vec();
        let stored = u32::from_le_bytes(h[16..20].try_into().unwrap());
        h[16..20].fill(0);
        assert_eq!(crc32fast::hash(&h), stored);
        // Entries' CRC, and the backup header points back at the primary.
        assert_eq!(u32::from_le_bytes(hdr[88..92].try_into().unwrap()), crc32fast::hash(&head[1024..]));
        let backup = &tail[tail.len() - 512..];
        assert_eq!(u64::from_le_bytes(backup[24..32].try_into().unwrap()), l.total - 1);
        assert_eq!(u64::from_le_bytes(backup[32..40].try_into().unwrap()), 1);
        assert_eq!(&tail[..tail.len() - 512], &head[1024..], "both copies of the entries are the same");
        // The partition's name, UTF-16.
        assert_eq!(&head[1024 + 56..1024 + 64], &[b'r', 0, b'o', 0, b'o', 0, b't', 0]);
    }
}
