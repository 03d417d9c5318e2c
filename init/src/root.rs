//! The root filesystem. With no initrd the kernel mounted it (`root=/dev/vda`): nothing to do.
//! When chinit is `/init` of an initramfs (the root is rootfs/tmpfs), it waits for the device named by
//! `chinit.root=`, mounts it on `/newroot`, moves the early mounts into it, frees the initramfs and
//! switches root, then carries on as PID 1 from the new root.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::mount::MsFlags;

use crate::cmdline::Config;
use crate::error::InitError;
use crate::mounts::split_options;

const RAMFS_MAGIC: i64 = 0x8584_58f6;
const TMPFS_MAGIC: i64 = 0x0102_1994;
const NEWROOT: &str = "/newroot";
/// Early mounts that move into the new root (children move with them).
const MOVED: &[&str] = &["/dev", "/proc"];

/// Is a filesystem of this type an initramfs?
pub fn is_initramfs_magic(fs_type: i64) -> bool {
    fs_type == RAMFS_MAGIC || fs_type == TMPFS_MAGIC
}

/// Whether `/` is an initramfs.
// The field's type differs between libcs (i64 on glibc, u64 on musl).
#[allow(clippy::unnecessary_cast)]
pub fn root_is_initramfs() -> bool {
    nix::sys::statfs::statfs("/").map(|s| is_initramfs_magic(s.filesystem_type().0 as i64)).unwrap_or(false)
}

/// Root mount flags and data from the config (`ro` unless `rw`, then `chinit.rootflags`).
pub fn root_flags(cfg: &Config) -> (MsFlags, String) {
    let (mut flags, data) = split_options(cfg.rootflags.as_deref().unwrap_or(""));
    if cfg.root_ro {
        flags |= MsFlags::MS_RDONLY;
    }
    (flags, data)
}

/// Waits up to `timeout` for a device node to appear (devtmpfs creates it when the driver probes).
pub fn wait_for(path: &Path, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if path.exists() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_micros(500));
    }
}

fn sw(what: &'static str) -> impl Fn(Errno) -> InitError {
    move |errno| InitError::SwitchRoot { newroot: NEWROOT.into(), what, errno }
}

/// Mounts the real root, `device` (`chinit.root`), and switches to it.
pub fn mount_and_switch(device: &str, cfg: &Config) -> Result<String, InitError> {
    let dev = Path::new(device);
    if !wait_for(dev, Duration::from_millis(cfg.root_wait_ms)) {
        return Err(InitError::RootMissing { device: device.into(), waited_ms: cfg.root_wait_ms });
    }
    std::fs::create_dir_all(NEWROOT).map_err(|e| InitError::Mkdir { path: NEWROOT.into(), errno: io_errno(&e) })?;
    let (flags, data) = root_flags(cfg);
    let data = (!data.is_empty()).then_some(data.as_str());
    nix::mount::mount(Some(dev), NEWROOT, Some(cfg.rootfstype.as_str()), flags, data).map_err(|errno| InitError::Mount {
        fstype: cfg.rootfstype.clone(),
        device: device.into(),
        target: NEWROOT.into(),
        errno,
    })?;
    for m in MOVED {
        let dst = format!("{NEWROOT}{m}");
        if std::fs::create_dir_all(&dst).is_err()
            || nix::mount::mount(Some(*m), dst.as_str(), None::<&str>, MsFlags::MS_MOVE, None::<&str>).is_err()
        {
            // The new root lacks the directory (read-only) or it was not mounted: leave it behind.
            let _ = nix::mount::umount2(*m, nix::mount::MntFlags::MNT_DETACH);
        }
    }
    nix::unistd::chdir(NEWROOT).map_err(sw("chdir"))?;
    let freed = free_initramfs();
    nix::mount::mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>).map_err(sw("move to /"))?;
    nix::unistd::chroot(".").map_err(sw("chroot"))?;
    nix::unistd::chdir("/").map_err(sw("chdir /"))?;
    Ok(format!("{device} ({}) switched to, {} KiB of initramfs freed", cfg.rootfstype, freed / 1024))
}

fn io_errno(e: &std::io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}

/// Deletes the initramfs's files (not crossing into other filesystems); returns the bytes freed.
fn free_initramfs() -> u64 {
    let Ok(root) = std::fs::symlink_metadata("/") else {
        return 0;
    };
    remove_tree(Path::new("/"), root.dev())
}

fn remove_tree(dir: &Path, dev: u64) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut freed = 0;
    for e in entries.flatten() {
        let path = e.path();
        let Ok(md) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if md.dev() != dev {
            continue;
        }
        if md.is_dir() {
            freed += remove_tree(&path, dev);
            let _ = std::fs::remove_dir(&path);
        } else {
            freed += md.len();
            let _ = std::fs::remove_file(&path);
        }
    }
    freed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmdline::parse;

    #[test]
    fn initramfs_magics() {
        assert!(is_initramfs_magic(0x858458f6));
        assert!(is_initramfs_magic(0x01021994));
        assert!(!is_initramfs_magic(0xEF53)); // ext4
    }

    #[test]
    fn root_flags_follow_ro_rw_and_rootflags() {
        let cases = [
            ("", MsFlags::MS_RDONLY, ""),
            ("rw", MsFlags::empty(), ""),
            ("rw chinit.rootflags=noatime,dax", MsFlags::MS_NOATIME, "dax"),
            ("ro chinit.rootflags=discard", MsFlags::MS_RDONLY, "discard"),
        ];
        for (line, flags, data) in cases {
            assert_eq!(root_flags(&parse(line).0), (flags, data.to_string()), "{line}");
        }
    }

    #[test]
    fn wait_for_is_bounded() {
        let start = Instant::now();
        assert!(!wait_for(Path::new("/nonexistent/chinit-dev"), Duration::from_millis(20)));
        assert!(start.elapsed() < Duration::from_secs(2));
        assert!(wait_for(Path::new("/"), Duration::ZERO));
    }

    #[test]
    fn remove_tree_stays_on_one_filesystem() {
        let dir = std::env::temp_dir().join(format!("chinit-rm-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("a/b")).unwrap();
        std::fs::write(dir.join("a/b/f"), b"12345").unwrap();
        std::fs::write(dir.join("g"), b"123").unwrap();
        let dev = std::fs::metadata(&dir).unwrap().dev();
        // A different device id removes nothing.
        assert_eq!(remove_tree(&dir, dev.wrapping_add(1)), 0);
        assert!(dir.join("a/b/f").exists());
        assert_eq!(remove_tree(&dir, dev), 8);
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        std::fs::remove_dir(&dir).unwrap();
    }
}
