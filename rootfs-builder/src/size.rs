//! Image sizes: parse `--size`, and estimate what the content needs.

pub const MIB: u64 = 1024 * 1024;
const BLOCK: u64 = 4096;

/// Parse `64M`, `1G`, `512K`, `1.5G` is not accepted; plain numbers are bytes.
/// Suffixes are binary (K = 1024) and may be followed by `iB` or `B`.
pub fn parse(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    let body = lower.strip_suffix("ib").or_else(|| lower.strip_suffix('b')).unwrap_or(&lower);
    let (digits, mult) = match body.chars().last() {
        Some('k') => (&body[..body.len() - 1], 1u64 << 10),
        Some('m') => (&body[..body.len() - 1], 1 << 20),
        Some('g') => (&body[..body.len() - 1], 1 << 30),
        Some('t') => (&body[..body.len() - 1], 1 << 40),
        _ => (body, 1),
    };
    let n: u64 = digits.parse().map_err(|_| "expected a size such as 64M, 1G or a number of bytes".to_string())?;
    n.checked_mul(mult).filter(|&v| v > 0).ok_or_else(|| "size out of range".to_string())
}

/// Bytes a file of `len` bytes takes on disk, counted in whole 4 KiB blocks.
pub fn on_disk(len: u64) -> u64 {
    len.div_ceil(BLOCK) * BLOCK
}

/// The least image size that holds `content` bytes (files rounded to blocks, plus one block per
/// directory or link) with the filesystem's own metadata (journal, inode tables).
pub fn minimum(content: u64, inodes: u64) -> u64 {
    round_mib(content + content / 16 + inodes * 256 + 4 * MIB)
}

/// The default size: content plus 25% plus 8 MiB headroom, at least 16 MiB, in whole 2 MiB (the
/// unit cloud-hypervisor's pmem devices take, so every default image boots from pmem too).
pub fn default_for(content: u64, inodes: u64) -> u64 {
    let need = minimum(content, inodes);
    (need + need / 4 + 8 * MIB).max(16 * MIB).div_ceil(2 * MIB) * 2 * MIB
}

/// Round up to a whole MiB.
pub fn round_mib(n: u64) -> u64 {
    n.div_ceil(MIB) * MIB
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_table() {
        let ok = [
            ("64M", 64 * MIB),
            ("64m", 64 * MIB),
            ("64MiB", 64 * MIB),
            ("64MB", 64 * MIB),
            ("1G", 1 << 30),
            ("512K", 512 * 1024),
            ("1048576", MIB),
            ("2T", 2 << 40),
        ];
        for (s, want) in ok {
            assert_eq!(parse(s), Ok(want), "{s}");
        }
        for bad in ["", "M", "1.5G", "-1M", "0", "ten", "99999999999999T"] {
            assert!(parse(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(on_disk(0), 0);
        assert_eq!(on_disk(1), 4096);
        assert_eq!(on_disk(4097), 8192);
        // Small content: the 16 MiB floor.
        assert_eq!(default_for(MIB, 20), 16 * MIB);
        // Large content: 25% + 8 MiB over the minimum.
        let content = 400 * MIB;
        let min = minimum(content, 1000);
        assert!(min > content);
        let def = default_for(content, 1000);
        assert!(def >= min + min / 4 + 8 * MIB && def < min + min / 4 + 10 * MIB);
        assert_eq!(def % (2 * MIB), 0);
        for content in [MIB, 9 * MIB, 17 * MIB + 1, 300 * MIB] {
            assert_eq!(default_for(content, 10) % (2 * MIB), 0, "{content}");
        }
    }
}
