//! What an aarch64 guest needs, built or fetched for the tests: chinit for aarch64 (musl, cross
//! linked), the tiny kernel's arm64 `Image`, Debian's arm64 busybox, and images of them.

use std::path::{Path, PathBuf};
use std::process::Command;

use rootfs_builder::elf::Arch;

use crate::vm;

/// The musl target of aarch64 chinit.
pub const TARGET: &str = "aarch64-unknown-linux-musl";

/// Why aarch64 guests cannot run here (a missing piece and its fix), or `None`.
pub fn missing() -> Option<String> {
    if vm::find_in_path("qemu-system-aarch64").is_none() {
        return Some("qemu-system-aarch64 not found (apt-get install qemu-system-arm; scripts/setup.sh does)".into());
    }
    if vm::find_in_path("aarch64-linux-gnu-gcc").is_none() {
        return Some("aarch64-linux-gnu-gcc not found (apt-get install gcc-aarch64-linux-gnu; scripts/setup.sh does)".into());
    }
    None
}

/// chinit for aarch64, release, static.
pub fn chinit() -> PathBuf {
    vm::cargo_build("chinit", "chinit", Some(TARGET), true)
}

/// The tiny kernel's arm64 `Image`, built into the cache by `rootfs-builder kernel --arch aarch64`
/// when missing.
pub fn tiny_image() -> PathBuf {
    rootfs_builder::kernel::tiny_kernel(Arch::Aarch64).unwrap_or_else(|e| panic!("aarch64 tiny kernel: {e}")).join("Image")
}

/// Debian's static busybox for arm64, fetched once into the cache (`apt-get download
/// busybox-static:arm64`, which needs dpkg to know arm64: scripts/setup.sh adds it). `Err` is the
/// skip line when apt cannot fetch it.
pub fn busybox() -> Result<PathBuf, String> {
    let root = rootfs_builder::kernel::cache_root().ok_or("no cache directory (set CHINIT_CACHE or HOME)")?;
    let dir = root.join("distro").join("busybox-static_arm64");
    let bin = dir.join("busybox");
    if bin.is_file() {
        return Ok(bin);
    }
    let tmp = tempfile::Builder::new().prefix(".busybox-arm64-").tempdir_in(root.join("distro")).map_err(|e| e.to_string())?;
    let out = Command::new("apt-get")
        .args(["download", "-q", "busybox-static:arm64"])
        .current_dir(tmp.path())
        .output()
        .map_err(|e| format!("apt-get: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "apt-get download busybox-static:arm64 failed (scripts/setup.sh adds the arm64 architecture): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let deb = std::fs::read_dir(tmp.path())
        .map_err(|e| e.to_string())?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"));
    let deb = deb.ok_or("apt-get download wrote no .deb")?;
    vm::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(tmp.path().join("x")));
    let staged = tmp.path().join("entry");
    std::fs::create_dir(&staged).map_err(|e| e.to_string())?;
    std::fs::copy(tmp.path().join("x/bin/busybox"), staged.join("busybox")).map_err(|e| format!("the package has no bin/busybox: {e}"))?;
    // Whole or not at all: another test may be fetching it too.
    match std::fs::rename(&staged, &dir) {
        Ok(()) => Ok(bin),
        Err(_) if bin.is_file() => Ok(bin),
        Err(e) => Err(format!("{}: {e}", dir.display())),
    }
}

/// An ext4 root with aarch64 chinit as `/sbin/init` and, when given, busybox as `/bin/busybox`.
pub fn chinit_image(out: &Path, busybox: Option<&Path>) -> PathBuf {
    let mut cmd = Command::new(crate::e2e::rootfs_builder());
    cmd.env("ROOTFS_BUILDER_QUIET", "1").args(["--arch", "aarch64", "--init"]).arg(chinit()).arg("--out").arg(out);
    if let Some(b) = busybox {
        cmd.arg("--add").arg(format!("{}:/bin/busybox:0755", b.display()));
    }
    vm::run(&mut cmd);
    out.to_path_buf()
}
