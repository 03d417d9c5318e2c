//! Whether the guest runs a workload to its end, known before it boots: `chinit.exec=` on its
//! command line, or the workload file a container image gave (`/etc/chinit/workload.json`,
//! written by `rootfs-builder --image`) in its root: the ext4 image, or the initramfs booted alone.
//! `host-probe run` then waits for the workload to exit instead of powering the guest off once it
//! is ready (docs/host-probe.md). The images are only read: debugfs opens the ext4 image read-only,
//! the initramfs is read into memory.

use std::path::Path;
use std::process::Command;

use rootfs_builder::debugfs::ImageLookup;
use rootfs_builder::resolve::{self, Lookup, Node};

use crate::cmdline::RootKind;

/// Where the workload comes from, in the words of the run's note; `Err` says why the root could not
/// be looked into (then the guest is treated as having none).
pub fn expected(cmdline_extra: &str, root: RootKind, root_path: &Path, partition: bool) -> Result<Option<String>, String> {
    if has_exec(cmdline_extra) {
        return Ok(Some("chinit.exec= on the kernel command line".into()));
    }
    let found = match root {
        RootKind::Initramfs => in_initramfs(root_path)?,
        // A GPT disk's root is its partition 1, which debugfs is not pointed at.
        _ if partition => false,
        _ if !is_ext4(root_path) => false,
        _ => in_ext4(root_path)?,
    };
    Ok(found.then(|| format!("{} in {}", agent::workload::PATH, root_path.display())))
}

/// Whether the extra kernel command line gives chinit a workload (`chinit.exec=...`, quoted or not).
pub fn has_exec(cmdline_extra: &str) -> bool {
    cmdline_extra.split_whitespace().any(|w| w.starts_with("chinit.exec="))
}

/// An ext4 superblock's magic at offset 1024 + 56.
fn is_ext4(image: &Path) -> bool {
    use std::io::{Read, Seek, SeekFrom};
    let mut magic = [0u8; 2];
    std::fs::File::open(image).and_then(|mut f| f.seek(SeekFrom::Start(1024 + 56)).and_then(|_| f.read_exact(&mut magic))).is_ok()
        && magic == [0x53, 0xef]
}

/// The workload file in an ext4 image, its path resolved through the image's own symlinks.
fn in_ext4(image: &Path) -> Result<bool, String> {
    let mut l = ImageLookup { image };
    let why = |e: String| format!("cannot look for {} in {} with debugfs (e2fsprogs): {e}", agent::workload::PATH, image.display());
    let real = resolve::resolve(&mut l, agent::workload::PATH, true).map_err(why)?;
    Ok(l.node(&real).map_err(why)? == Node::Other)
}

/// The workload file among an initramfs's entries (plain, gzip or zstd, as rootfs-builder writes).
fn in_initramfs(path: &Path) -> Result<bool, String> {
    let why = |e: String| format!("cannot look for {} in {}: {e}", agent::workload::PATH, path.display());
    let raw = std::fs::read(path).map_err(|e| why(e.to_string()))?;
    let tool = match raw.get(..4) {
        Some([0x1f, 0x8b, ..]) => Some("gzip"),
        Some([0x28, 0xb5, 0x2f, 0xfd]) => Some("zstd"),
        _ => None,
    };
    let plain = match tool {
        None => raw,
        Some(t) => {
            let out = Command::new(t).arg("-dc").arg(path).output().map_err(|e| why(format!("{t}: {e}")))?;
            if !out.status.success() {
                return Err(why(format!("{t} -dc: {}", String::from_utf8_lossy(&out.stderr).trim())));
            }
            out.stdout
        }
    };
    let entries = rootfs_builder::cpio::read(&plain).map_err(why)?;
    let name = agent::workload::PATH.trim_start_matches('/');
    Ok(entries.iter().any(|e| e.entry.name == name && e.entry.mode & 0o170000 == 0o100000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chinit_exec_on_the_command_line() {
        assert!(has_exec(r#"quiet chinit.exec="/bin/sh -c 'exit 7'""#));
        assert!(has_exec("chinit.exec=/hello"));
        assert!(!has_exec("chinit.exec_nope=1 chinit.on_exit=stay"));
        assert!(!has_exec(""));
    }

    #[test]
    fn an_initramfs_with_and_without_the_workload_file() {
        use rootfs_builder::cpio::{self, CpioEntry};
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, entries: &[CpioEntry]| {
            let mut buf = Vec::new();
            cpio::write(&mut buf, entries, 0).unwrap();
            let p = dir.path().join(name);
            std::fs::write(&p, buf).unwrap();
            p
        };
        let file = |name: &str, mode: u32| CpioEntry { name: name.into(), mode, ..CpioEntry::default() };
        let with = write("with.cpio", &[file("etc", 0o40755), file("etc/chinit", 0o40755), file("etc/chinit/workload.json", 0o100644)]);
        let without = write("without.cpio", &[file("etc", 0o40755), file("init", 0o100755)]);
        let got = expected("", RootKind::Initramfs, &with, false).unwrap();
        assert_eq!(got, Some(format!("/etc/chinit/workload.json in {}", with.display())));
        assert_eq!(expected("", RootKind::Initramfs, &without, false), Ok(None));
        assert_eq!(
            expected("chinit.exec=/x", RootKind::Initramfs, &without, false),
            Ok(Some("chinit.exec= on the kernel command line".into()))
        );
        // Compressed as rootfs-builder writes it.
        if Command::new("gzip").arg("--version").output().is_ok() {
            let gz = dir.path().join("with.cpio.gz");
            let out = Command::new("gzip").arg("-c").arg(&with).output().unwrap();
            std::fs::write(&gz, out.stdout).unwrap();
            assert!(expected("", RootKind::Initramfs, &gz, false).unwrap().is_some());
        }
        let garbage = dir.path().join("garbage.cpio");
        std::fs::write(&garbage, b"not an archive").unwrap();
        assert!(expected("", RootKind::Initramfs, &garbage, false).unwrap_err().contains("cannot look for /etc/chinit/workload.json"));
        // Not an ext4 image (no superblock magic): no workload, debugfs not asked.
        assert_eq!(expected("", RootKind::Disk, &garbage, false), Ok(None));
    }
}
