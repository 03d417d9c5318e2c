//! The snapshot's manifest (`manifest.json`): what was snapshotted — the VMM and its version, the
//! kernel, image and initramfs (each with its size and modification time), memory, devices and
//! generation — and the checks a restore makes against it before anything starts. Written last: a
//! directory without it is an incomplete snapshot.

use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::options::{Layout, Options, RootMode, Wait};
use crate::vmm::{Accel, Vmm};

/// The manifest's file name in a snapshot directory.
pub const MANIFEST: &str = "manifest.json";
/// The manifest format this host-probe writes and reads.
pub const FORMAT: u32 = 1;

/// The files each VMM's snapshot is made of, besides the manifest ([`crate::vmm::Driver::snapshot_files`]).
pub fn vmm_files(vmm: Vmm) -> &'static [&'static str] {
    vmm.snapshot_files()
}

/// A file the snapshot depends on, as it was when it was taken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileId {
    pub path: PathBuf,
    pub size: u64,
    /// Nanoseconds since the Unix epoch.
    pub mtime_ns: u128,
}

impl FileId {
    pub fn of(path: &Path) -> Result<FileId, String> {
        let m = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mtime_ns = m.modified().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map(|d| d.as_nanos()).unwrap_or(0);
        Ok(FileId { path: path.to_path_buf(), size: m.len(), mtime_ns })
    }

    /// Why the file is not the one the snapshot was taken with, if it is not.
    pub fn changed(&self, what: &str) -> Option<String> {
        match FileId::of(&self.path) {
            Err(e) => Some(format!("the snapshot's {what} is gone ({e})")),
            Ok(now) if now.size != self.size => Some(format!(
                "the snapshot's {what} {} changed since it was taken ({} bytes then, {} now)",
                self.path.display(),
                self.size,
                now.size
            )),
            Ok(now) if now.mtime_ns != self.mtime_ns => {
                Some(format!("the snapshot's {what} {} was modified since it was taken", self.path.display()))
            }
            Ok(_) => None,
        }
    }
}

/// How the snapshotted machine was booted: enough to boot it again (`bench --restore` compares
/// with that cold boot) and to give each copy the same devices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Boot {
    pub kernel: FileId,
    pub rootfs: Option<FileId>,
    pub initramfs: Option<FileId>,
    /// `disk` or `pmem` (for a root image).
    pub root_mode: String,
    pub cpus: u32,
    pub memory_mib: u32,
    pub cmdline_extra: String,
    pub init: String,
    /// `default` or `kuasar`.
    pub layout: String,
    pub cmdline: String,
}

/// The devices a copy gets again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Devices {
    /// The guest's MAC: in its memory, so every copy keeps it (each on its own TAP).
    pub mac: Option<String>,
    /// The snapshotted guest's address (each copy is given its own).
    pub ip: Option<String>,
    /// `hybrid` (cloud-hypervisor's) or `kernel` (QEMU with the host kernel's vhost-vsock).
    pub vsock: String,
}

/// `manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub vmm: Vmm,
    pub vmm_binary: PathBuf,
    /// The VMM's `--version`, first line: a copy is restored by the same version only.
    pub vmm_version: String,
    pub accel: Accel,
    pub boot: Boot,
    pub devices: Devices,
    /// The snapshotted machine's generation: copies are one more.
    pub generation: u64,
    /// The files of the snapshot, besides this one.
    pub files: Vec<String>,
    /// Seconds since the Unix epoch.
    pub created_unix_s: u64,
    /// The cold boot of the snapshotted machine, host clock: spawn → ready, and the snapshot itself.
    pub boot_ready_us: u64,
    pub pause_us: u64,
    pub save_us: u64,
}

fn bad(what: String, fix: &str) -> Error {
    Error::BadSnapshot { what, fix: fix.to_string() }
}

/// The fix for a snapshot that cannot be used.
const RETAKE: &str = "take the snapshot again: host-probe snapshot --out NEW_DIR [run options]";

impl Manifest {
    /// Reads `dir`'s manifest and checks that every file it lists is there.
    pub fn read(dir: &Path) -> Result<Manifest, Error> {
        if !dir.is_dir() {
            let what = if dir.exists() { "is not a directory" } else { "does not exist" };
            return Err(bad(format!("snapshot directory {} {what}", dir.display()), "pass a directory `host-probe snapshot --out` made"));
        }
        let path = dir.join(MANIFEST);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| bad(format!("{} is not a complete snapshot: {}: {e}", dir.display(), path.display()), RETAKE))?;
        let m: Manifest =
            serde_json::from_str(&text).map_err(|e| bad(format!("{}: not a snapshot manifest: {e}", path.display()), RETAKE))?;
        if m.format != FORMAT {
            return Err(bad(format!("{}: manifest format {}, this host-probe reads {FORMAT}", path.display(), m.format), RETAKE));
        }
        let missing: Vec<&str> = vmm_files(m.vmm).iter().copied().filter(|f| !dir.join(f).is_file()).collect();
        if !missing.is_empty() {
            return Err(bad(
                format!("{} is not a complete {} snapshot: {} missing", dir.display(), m.vmm.name(), missing.join(", ")),
                RETAKE,
            ));
        }
        Ok(m)
    }

    /// Checks that the kernel, image and initramfs are those the snapshot was taken with, and that
    /// this host runs the same VMM version (`version`: this host's `--version`).
    pub fn check(&self, version: Option<&str>) -> Result<(), Error> {
        let files =
            [("kernel", Some(&self.boot.kernel)), ("root image", self.boot.rootfs.as_ref()), ("initramfs", self.boot.initramfs.as_ref())];
        for (what, id) in files {
            if let Some(why) = id.and_then(|f| f.changed(what)) {
                return Err(bad(why, "a snapshot holds the guest's memory as that kernel and image left it: restore with them unchanged, or take a new snapshot"));
            }
        }
        match version {
            None => Err(bad(
                format!("this snapshot is {}'s ({}), which this host does not have", self.vmm.name(), self.vmm_version),
                "install it (cloud-hypervisor: $CLOUD_HYPERVISOR or PATH)",
            )),
            Some(v) if v != self.vmm_version => Err(bad(
                format!("this snapshot was taken by {}; this host has {v}", self.vmm_version),
                "restore with the VMM version that took it, or take a new snapshot",
            )),
            Some(_) => Ok(()),
        }
    }

    /// The generation of its copies: one more than the snapshot's (none past `u64::MAX`).
    pub fn copy_generation(&self) -> Result<u64, Error> {
        self.generation.checked_add(1).ok_or_else(|| {
            bad(
                format!("this snapshot is of generation {}, the last there is: a copy cannot be one more", self.generation),
                "take a new snapshot of a machine that booted (generation 0)",
            )
        })
    }

    /// The options that boot the snapshotted machine cold (for `bench --restore`) and plan a copy.
    pub fn options(&self, base: &Options) -> Options {
        Options {
            vmm: crate::options::VmmChoice::Named(self.vmm),
            kernel: Some(self.boot.kernel.path.clone()),
            rootfs: self.boot.rootfs.as_ref().map(|f| f.path.clone()),
            initramfs: self.boot.initramfs.as_ref().map(|f| f.path.clone()),
            root_mode: if self.boot.root_mode == "pmem" { RootMode::Pmem } else { RootMode::Disk },
            cpus: self.boot.cpus,
            memory_mib: self.boot.memory_mib,
            cmdline_extra: self.boot.cmdline_extra.clone(),
            init: self.boot.init.clone(),
            wait: Wait::Agent,
            net: self.devices.mac.is_some(),
            vsock: true,
            layout: if self.boot.layout == "kuasar" { Layout::Kuasar } else { Layout::Default },
            share: None,
            ..base.clone()
        }
    }
}

/// The first line of `<vmm> --version`, as `host-probe check` reads it.
pub use crate::check::version_of as vmm_version;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_that_changed_since_the_snapshot_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("kernel");
        std::fs::write(&f, b"abc").unwrap();
        let id = FileId::of(&f).unwrap();
        assert_eq!(id.changed("kernel"), None);
        std::fs::File::options()
            .write(true)
            .open(&f)
            .unwrap()
            .set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(5))
            .unwrap();
        assert!(id.changed("kernel").unwrap().contains("was modified since it was taken"));
        std::fs::write(&f, b"abcd").unwrap();
        assert!(id.changed("kernel").unwrap().contains("(3 bytes then, 4 now)"));
        std::fs::remove_file(&f).unwrap();
        assert!(id.changed("kernel").unwrap().contains("is gone"));
    }

    #[test]
    fn a_snapshot_directory_that_is_not_one_says_what_it_is() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("a-file");
        std::fs::write(&file, b"x").unwrap();
        let cases = [(tmp.path().join("nowhere"), "does not exist"), (file, "is not a directory")];
        for (path, want) in cases {
            let e = Manifest::read(&path).unwrap_err();
            assert_eq!(e.exit_code().code(), 6, "{e}");
            assert!(e.to_string().contains(&format!("{} {want}", path.display())), "{e}");
        }
    }

    #[test]
    fn each_vmm_lists_the_files_its_restore_reads() {
        assert_eq!(vmm_files(crate::vmm::qemu::VMM), ["memory", "state"]);
        assert_eq!(vmm_files(crate::vmm::cloud_hypervisor::VMM), ["config.json", "state.json", "memory-ranges"]);
    }
}
