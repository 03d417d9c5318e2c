//! The mounts, as data, mounted by one loop; and the extra mounts of `chinit.mount=`.
//!
//! [`EARLY`] holds what readiness needs (`/proc` for the command line, `/dev` for the console and the
//! root device); [`LATE`] the rest, mounted on a helper thread right after ready, since some cost
//! milliseconds (a first cgroup2 mount). The exec API and the workload wait for [`LATE`], so they
//! always see the whole system.
//!
//! An already-mounted target is fine: the kernel answers EBUSY when the same filesystem is already
//! mounted there (devtmpfs that the kernel mounted itself, for instance). Other failures are reported
//! and the boot goes on.

use nix::errno::Errno;
use nix::mount::MsFlags;

use crate::cmdline::ExtraMount;

/// One mount of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MountSpec {
    pub source: &'static str,
    pub target: &'static str,
    pub fstype: &'static str,
    pub flags: MsFlags,
    pub data: Option<&'static str>,
}

const NOSUID_NODEV_NOEXEC: MsFlags = MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV).union(MsFlags::MS_NOEXEC);
const NOSUID_NODEV: MsFlags = MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV);

/// What every boot mounts before ready, in order (parents before children).
pub const EARLY: &[MountSpec] = &[
    MountSpec { source: "proc", target: "/proc", fstype: "proc", flags: NOSUID_NODEV_NOEXEC, data: None },
    MountSpec { source: "devtmpfs", target: "/dev", fstype: "devtmpfs", flags: MsFlags::MS_NOSUID, data: Some("mode=0755") },
];

/// What every boot mounts right after ready (children of [`EARLY`] after them).
pub const LATE: &[MountSpec] = &[
    MountSpec { source: "sysfs", target: "/sys", fstype: "sysfs", flags: NOSUID_NODEV_NOEXEC, data: None },
    MountSpec {
        source: "devpts",
        target: "/dev/pts",
        fstype: "devpts",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NOEXEC),
        data: Some("mode=0620,ptmxmode=0666"),
    },
    MountSpec { source: "shm", target: "/dev/shm", fstype: "tmpfs", flags: NOSUID_NODEV, data: Some("mode=1777") },
    MountSpec { source: "run", target: "/run", fstype: "tmpfs", flags: NOSUID_NODEV, data: Some("mode=0755") },
    MountSpec { source: "tmp", target: "/tmp", fstype: "tmpfs", flags: NOSUID_NODEV, data: Some("mode=1777") },
    MountSpec { source: "cgroup2", target: "/sys/fs/cgroup", fstype: "cgroup2", flags: NOSUID_NODEV_NOEXEC, data: None },
];

/// The syscalls mounting needs: the seam that lets the loop run in tests.
pub trait Mounter {
    fn mkdir_all(&mut self, path: &str) -> Result<(), Errno>;
    fn mount(&mut self, source: &str, target: &str, fstype: &str, flags: MsFlags, data: Option<&str>) -> Result<(), Errno>;
}

/// What happened to one mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Mounted,
    AlreadyMounted,
    Failed(String),
}

/// Mounts one filesystem, creating the target only when it is missing (the common case, a target
/// that exists, costs one syscall).
pub fn mount_one(m: &mut impl Mounter, source: &str, target: &str, fstype: &str, flags: MsFlags, data: Option<&str>) -> Outcome {
    let mut result = m.mount(source, target, fstype, flags, data);
    if result == Err(Errno::ENOENT) {
        if let Err(e) = m.mkdir_all(target) {
            let fix = if e == Errno::EROFS {
                " (the root is read-only: make the directory in the image, e.g. rootfs-builder --add DIR:TARGET)"
            } else {
                ""
            };
            return Outcome::Failed(format!("create directory {target}: {e}{fix}"));
        }
        result = m.mount(source, target, fstype, flags, data);
    }
    match result {
        Ok(()) => Outcome::Mounted,
        Err(Errno::EBUSY) => Outcome::AlreadyMounted,
        Err(e) => Outcome::Failed(format!("mount {fstype} {source} on {target}: {e}")),
    }
}

/// Mounts the table in order; returns the failures (already-mounted targets are not failures).
pub fn mount_table(m: &mut impl Mounter, table: &[MountSpec]) -> Vec<String> {
    table
        .iter()
        .filter_map(|s| match mount_one(m, s.source, s.target, s.fstype, s.flags, s.data) {
            Outcome::Failed(why) => Some(why),
            _ => None,
        })
        .collect()
}

/// Splits `ro,noatime,size=10M` into flags and the data string the filesystem gets.
pub fn split_options(options: &str) -> (MsFlags, String) {
    let mut flags = MsFlags::empty();
    let mut data = Vec::new();
    for o in options.split(',').filter(|o| !o.is_empty()) {
        match o {
            "ro" => flags |= MsFlags::MS_RDONLY,
            "rw" => flags.remove(MsFlags::MS_RDONLY),
            "nosuid" => flags |= MsFlags::MS_NOSUID,
            "nodev" => flags |= MsFlags::MS_NODEV,
            "noexec" => flags |= MsFlags::MS_NOEXEC,
            "sync" => flags |= MsFlags::MS_SYNCHRONOUS,
            "dirsync" => flags |= MsFlags::MS_DIRSYNC,
            "noatime" => flags |= MsFlags::MS_NOATIME,
            "nodiratime" => flags |= MsFlags::MS_NODIRATIME,
            "relatime" => flags |= MsFlags::MS_RELATIME,
            "strictatime" => flags |= MsFlags::MS_STRICTATIME,
            "defaults" => {}
            other => data.push(other),
        }
    }
    (flags, data.join(","))
}

/// Mounts `chinit.mount=` entries; returns the failures.
pub fn mount_extra(m: &mut impl Mounter, mounts: &[ExtraMount]) -> Vec<String> {
    mounts
        .iter()
        .filter_map(|x| {
            let (flags, data) = split_options(x.options.as_deref().unwrap_or(""));
            let data = (!data.is_empty()).then_some(data.as_str());
            match mount_one(m, &x.source, &x.target, &x.fstype, flags, data) {
                Outcome::Failed(why) => Some(why),
                _ => None,
            }
        })
        .collect()
}

/// The real syscalls.
pub struct Sys;

impl Mounter for Sys {
    fn mkdir_all(&mut self, path: &str) -> Result<(), Errno> {
        match std::fs::create_dir_all(path) {
            Ok(()) => Ok(()),
            // A read-only root with the directory present is fine: create_dir_all checks existence first.
            Err(e) => Err(Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))),
        }
    }

    fn mount(&mut self, source: &str, target: &str, fstype: &str, flags: MsFlags, data: Option<&str>) -> Result<(), Errno> {
        nix::mount::mount(Some(source), target, Some(fstype), flags, data)
    }
}

/// In a VM, the kernel opens /dev/console for init only if the root has it; with devtmpfs mounted
/// now, make sure descriptors 0, 1 and 2 exist so no file chinit opens later lands on them.
pub fn ensure_stdio() {
    // SAFETY: F_GETFD only queries whether the descriptor number is open.
    let missing: Vec<i32> = (0..3).filter(|fd| unsafe { libc::fcntl(*fd, libc::F_GETFD) } < 0).collect();
    if missing.is_empty() {
        return;
    }
    let console = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/console")
        .or_else(|_| std::fs::OpenOptions::new().read(true).write(true).open("/dev/null"));
    if let Ok(f) = console {
        use std::os::fd::AsRawFd;
        for fd in missing {
            // SAFETY: dup2 onto a descriptor number that is not open; `f` stays valid during the call.
            unsafe { libc::dup2(f.as_raw_fd(), fd) };
        }
        // The descriptor we opened is one of 0-2 if they were all closed; keep it in that case.
        if f.as_raw_fd() <= 2 {
            std::mem::forget(f);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records calls; answers with scripted errnos per target. A `missing` target answers ENOENT
    /// until it is created.
    #[derive(Default)]
    struct Fake {
        calls: Vec<String>,
        mkdirs: Vec<String>,
        missing: Vec<&'static str>,
        mount_err: Vec<(&'static str, Errno)>,
        mkdir_err: Vec<(&'static str, Errno)>,
    }

    impl Mounter for Fake {
        fn mkdir_all(&mut self, path: &str) -> Result<(), Errno> {
            self.mkdirs.push(path.to_string());
            match self.mkdir_err.iter().find(|(p, _)| *p == path) {
                Some((_, e)) => Err(*e),
                None => {
                    self.missing.retain(|m| *m != path);
                    Ok(())
                }
            }
        }
        fn mount(&mut self, source: &str, target: &str, fstype: &str, flags: MsFlags, data: Option<&str>) -> Result<(), Errno> {
            if self.missing.contains(&target) {
                return Err(Errno::ENOENT);
            }
            self.calls.push(format!("{fstype} {source} {target} {:#x} {}", flags.bits(), data.unwrap_or("-")));
            match self.mount_err.iter().find(|(t, _)| *t == target) {
                Some((_, e)) => Err(*e),
                None => Ok(()),
            }
        }
    }

    #[test]
    fn table_mounts_everything_in_order() {
        let mut f = Fake::default();
        assert!(mount_table(&mut f, EARLY).is_empty());
        assert!(mount_table(&mut f, LATE).is_empty());
        let targets: Vec<&str> = f.calls.iter().map(|c| c.split(' ').nth(2).unwrap()).collect();
        assert_eq!(targets, ["/proc", "/dev", "/sys", "/dev/pts", "/dev/shm", "/run", "/tmp", "/sys/fs/cgroup"]);
        // Parents come before children.
        let all: Vec<MountSpec> = EARLY.iter().chain(LATE).copied().collect();
        for (i, s) in all.iter().enumerate() {
            for later in &all[..i] {
                assert!(!later.target.starts_with(&format!("{}/", s.target)), "{} is mounted before its parent {}", later.target, s.target);
            }
        }
    }

    #[test]
    fn ebusy_is_already_mounted_other_errnos_are_reported() {
        let mut f = Fake {
            missing: vec!["/run", "/tmp"],
            mount_err: vec![("/dev", Errno::EBUSY), ("/sys/fs/cgroup", Errno::ENODEV)],
            mkdir_err: vec![("/run", Errno::EROFS)],
            ..Fake::default()
        };
        let table: Vec<MountSpec> = EARLY.iter().chain(LATE).copied().collect();
        let failures = mount_table(&mut f, &table);
        assert_eq!(failures.len(), 2, "{failures:?}");
        assert!(failures[0].starts_with("create directory /run: EROFS"), "{}", failures[0]);
        assert!(failures[0].contains("make the directory in the image"), "{}", failures[0]);
        assert!(failures[1].starts_with("mount cgroup2 cgroup2 on /sys/fs/cgroup: ENODEV"), "{}", failures[1]);
        // Every other mount still happened; only the missing targets were created.
        assert_eq!(f.calls.len(), table.len() - 1);
        assert_eq!(f.mkdirs, ["/run", "/tmp"]);
        assert!(f.calls.iter().any(|c| c.starts_with("tmpfs tmp /tmp ")), "{:?}", f.calls);
    }

    #[test]
    fn split_options_table() {
        let cases: &[(&str, MsFlags, &str)] = &[
            ("", MsFlags::empty(), ""),
            ("ro", MsFlags::MS_RDONLY, ""),
            ("ro,rw", MsFlags::empty(), ""),
            ("ro,noatime,trans=virtio,version=9p2000.L", MsFlags::MS_RDONLY.union(MsFlags::MS_NOATIME), "trans=virtio,version=9p2000.L"),
            ("defaults,,dax", MsFlags::empty(), "dax"),
        ];
        for (input, flags, data) in cases {
            assert_eq!(split_options(input), (*flags, data.to_string()), "{input}");
        }
    }

    #[test]
    fn extra_mounts_pass_flags_and_data() {
        let mut f = Fake::default();
        let m = vec![ExtraMount {
            source: "/dev/vdb".into(),
            target: "/srv".into(),
            fstype: "ext4".into(),
            options: Some("ro,noatime,errors=remount-ro".into()),
        }];
        assert!(mount_extra(&mut f, &m).is_empty());
        assert_eq!(f.calls, vec![format!("ext4 /dev/vdb /srv {:#x} errors=remount-ro", (MsFlags::MS_RDONLY | MsFlags::MS_NOATIME).bits())]);
    }
}
