//! A small, reproducible newc ("070701") cpio writer, and a reader for checks and tests.
//!
//! Every entry keeps the owner it is given, with one fixed mtime; entries are written in the order given
//! (callers pass them sorted, parents first), then the `TRAILER!!!` record. Regular files that
//! share a `link` group are hard links to one inode: its data is stored once, with the group's
//! last entry (the convention both GNU cpio and the kernel's initramfs unpacker read).

use std::io::{self, Write};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CpioEntry {
    /// Path without the leading `/`, e.g. `sbin/chinit`.
    pub name: String,
    /// Full `st_mode` (type and permission bits).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// File contents or symlink target; empty for directories and devices.
    pub data: Vec<u8>,
    pub rdev_major: u32,
    pub rdev_minor: u32,
    /// Hard-link group: regular files with the same `Some(k)` share one inode.
    pub link: Option<u32>,
}

const MAGIC: &[u8; 6] = b"070701";
const TRAILER: &str = "TRAILER!!!";

fn pad4(w: &mut impl Write, len: usize) -> io::Result<()> {
    let pad = (4 - len % 4) % 4;
    w.write_all(&[0u8; 3][..pad])
}

fn header(w: &mut impl Write, ino: u32, e: &CpioEntry, mtime: u32, nlink: u32, data: &[u8]) -> io::Result<()> {
    let too_big = || io::Error::new(io::ErrorKind::InvalidInput, format!("{}: larger than 4 GiB", e.name));
    let filesize = u32::try_from(data.len()).map_err(|_| too_big())?;
    let namesize = u32::try_from(e.name.len() + 1).map_err(|_| too_big())?;
    let fields = [ino, e.mode, e.uid, e.gid, nlink, mtime, filesize, 0, 0, e.rdev_major, e.rdev_minor, namesize, 0];
    let mut h = Vec::with_capacity(110);
    h.extend_from_slice(MAGIC);
    for f in fields {
        h.extend_from_slice(format!("{f:08X}").as_bytes());
    }
    w.write_all(&h)?;
    w.write_all(e.name.as_bytes())?;
    w.write_all(&[0])?;
    pad4(w, 110 + e.name.len() + 1)?;
    w.write_all(data)?;
    pad4(w, data.len())
}

/// Write `entries` and the trailer as a newc archive.
pub fn write(w: &mut impl Write, entries: &[CpioEntry], mtime: u32) -> io::Result<()> {
    use std::collections::BTreeMap;
    // Per link group: (inode of its first entry, number of entries, index of its last entry).
    let mut groups: BTreeMap<u32, (u32, u32, usize)> = BTreeMap::new();
    for (i, e) in entries.iter().enumerate() {
        let ino = u32::try_from(i + 1).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "too many entries"))?;
        if let Some(k) = e.link.filter(|_| e.mode & 0o170000 == 0o100000) {
            let g = groups.entry(k).or_insert((ino, 0, i));
            g.1 += 1;
            g.2 = i;
        }
    }
    for (i, e) in entries.iter().enumerate() {
        let own = u32::try_from(i + 1).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "too many entries"))?;
        let group = e.link.and_then(|k| groups.get(&k)).filter(|_| e.mode & 0o170000 == 0o100000);
        let (ino, nlink, data) = match group {
            Some(&(ino, n, last)) => (ino, n, if last == i { &e.data[..] } else { &[][..] }),
            None if e.mode & 0o170000 == 0o040000 => (own, 2, &e.data[..]),
            None => (own, 1, &e.data[..]),
        };
        header(w, ino, e, mtime, nlink, data)?;
    }
    let trailer = CpioEntry { name: TRAILER.into(), ..CpioEntry::default() };
    header(w, 0, &trailer, 0, 1, &[])
}

/// One entry read back, with the fields the writer sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadEntry {
    pub entry: CpioEntry,
    pub ino: u32,
    pub nlink: u32,
    pub mtime: u32,
}

/// Fill in the data of hard links from the group member that carries it.
pub fn resolve_links(entries: &mut [ReadEntry]) {
    let mut data: std::collections::BTreeMap<u32, Vec<u8>> = Default::default();
    for r in entries.iter().filter(|r| r.nlink > 1 && !r.entry.data.is_empty()) {
        data.insert(r.ino, r.entry.data.clone());
    }
    for r in entries.iter_mut().filter(|r| r.nlink > 1 && r.entry.mode & 0o170000 == 0o100000) {
        if let Some(d) = data.get(&r.ino) {
            r.entry.data = d.clone();
        }
    }
}

/// Parse a newc archive up to its trailer.
pub fn read(mut b: &[u8]) -> Result<Vec<ReadEntry>, String> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    loop {
        if b.len() < 110 {
            return Err(format!("truncated header at offset {pos}"));
        }
        if &b[..6] != MAGIC {
            return Err(format!("bad magic at offset {pos}"));
        }
        let mut f = [0u32; 13];
        for (i, v) in f.iter_mut().enumerate() {
            let s = std::str::from_utf8(&b[6 + i * 8..14 + i * 8]).map_err(|e| e.to_string())?;
            *v = u32::from_str_radix(s, 16).map_err(|e| format!("offset {pos}: {e}"))?;
        }
        let namesize = f[11] as usize;
        let filesize = f[6] as usize;
        let name_end = 110 + namesize;
        let data_start = name_end + (4 - name_end % 4) % 4;
        let data_end = data_start + filesize;
        if b.len() < data_end || namesize == 0 {
            return Err(format!("truncated entry at offset {pos}"));
        }
        let name = String::from_utf8(b[110..name_end - 1].to_vec()).map_err(|e| e.to_string())?;
        if name == TRAILER {
            return Ok(out);
        }
        out.push(ReadEntry {
            entry: CpioEntry {
                name,
                mode: f[1],
                uid: f[2],
                gid: f[3],
                data: b[data_start..data_end].to_vec(),
                rdev_major: f[9],
                rdev_minor: f[10],
                link: None,
            },
            ino: f[0],
            nlink: f[4],
            mtime: f[5],
        });
        let next = data_end.div_ceil(4) * 4;
        pos += next.min(b.len());
        b = &b[next.min(b.len())..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(name: &str, mode: u32, data: &[u8]) -> CpioEntry {
        CpioEntry { name: name.into(), mode, data: data.to_vec(), ..CpioEntry::default() }
    }

    #[test]
    fn round_trip_and_layout() {
        let entries = vec![
            e("dev", 0o40755, b""),
            CpioEntry { rdev_major: 5, rdev_minor: 1, ..e("dev/console", 0o20600, b"") },
            e("init", 0o100755, b"hello"),
            e("lnk", 0o120777, b"init"),
            CpioEntry { uid: 1000, gid: 50, ..e("home", 0o40700, b"") },
        ];
        let mut buf = Vec::new();
        write(&mut buf, &entries, 42).unwrap();
        assert_eq!(buf.len() % 4, 0);
        assert_eq!(&buf[..6], b"070701");
        let back = read(&buf).unwrap();
        assert_eq!(back.iter().map(|r| r.entry.clone()).collect::<Vec<_>>(), entries);
        assert!(back.iter().all(|r| r.mtime == 42));
        let owners: Vec<(u32, u32)> = back.iter().map(|r| (r.entry.uid, r.entry.gid)).collect();
        assert_eq!(owners, [(0, 0), (0, 0), (0, 0), (0, 0), (1000, 50)], "owners kept");
        // Same input, same bytes.
        let mut again = Vec::new();
        write(&mut again, &entries, 42).unwrap();
        assert_eq!(buf, again);
    }

    #[test]
    fn hard_links_store_data_once() {
        let big = vec![7u8; 1000];
        let entries = vec![
            CpioEntry { link: Some(1), ..e("init", 0o100755, &big) },
            e("other", 0o100644, b"o"),
            CpioEntry { link: Some(1), ..e("sbin/chinit", 0o100755, &big) },
        ];
        let mut buf = Vec::new();
        write(&mut buf, &entries, 0).unwrap();
        assert!(buf.len() < 1000 + 5 * 128, "data stored once: {}", buf.len());
        let mut back = read(&buf).unwrap();
        assert_eq!(back[0].ino, back[2].ino);
        assert_eq!((back[0].nlink, back[1].nlink), (2, 1));
        assert!(back[0].entry.data.is_empty());
        assert_eq!(back[2].entry.data, big);
        resolve_links(&mut back);
        assert_eq!(back[0].entry.data, big);
    }

    #[test]
    fn cpio_tool_reads_it() {
        if std::process::Command::new("cpio").arg("--version").output().is_err() {
            eprintln!("skip: cpio not installed");
            return;
        }
        let mut buf = Vec::new();
        write(&mut buf, &[e("a", 0o40755, b""), e("a/b", 0o100644, b"xyz")], 0).unwrap();
        let dir = std::env::temp_dir().join(format!("cpio-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // Extract a hard-link pair with GNU cpio: both names get the data.
        let mut linked = Vec::new();
        write(
            &mut linked,
            &[CpioEntry { link: Some(0), ..e("x", 0o100644, b"same") }, CpioEntry { link: Some(0), ..e("y", 0o100644, b"same") }],
            0,
        )
        .unwrap();
        let mut c = std::process::Command::new("cpio")
            .args(["-id", "--quiet"])
            .current_dir(&dir)
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        c.stdin.take().unwrap().write_all(&linked).unwrap();
        assert!(c.wait().unwrap().success());
        assert_eq!(std::fs::read(dir.join("x")).unwrap(), b"same");
        assert_eq!(std::fs::read(dir.join("y")).unwrap(), b"same");
        std::fs::remove_dir_all(&dir).unwrap();
        let mut child = std::process::Command::new("cpio")
            .args(["-it", "--quiet"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&buf).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        assert_eq!(String::from_utf8(out.stdout).unwrap(), "a\na/b\n");
    }

    #[test]
    fn reader_rejects_garbage() {
        assert!(read(b"not a cpio archive at all, not even close to one, this is just text padding padding padding padding").is_err());
        assert!(read(b"").is_err());
    }
}
