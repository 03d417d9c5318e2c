//! Finding the default kernel and image the project's builders made, and the VMM binaries.

use std::path::{Path, PathBuf};

/// The kernel cache root, from the environment values (`$CHINIT_CACHE`, else
/// `$XDG_CACHE_HOME/chinit`, else `$HOME/.cache/chinit`), the same rule rootfs-builder uses.
pub fn cache_root(chinit_cache: Option<&str>, xdg_cache_home: Option<&str>, home: Option<&str>) -> Option<PathBuf> {
    if let Some(c) = chinit_cache.filter(|s| !s.is_empty()) {
        return Some(PathBuf::from(c));
    }
    if let Some(x) = xdg_cache_home.filter(|x| x.starts_with('/')) {
        return Some(Path::new(x).join("chinit"));
    }
    home.filter(|h| !h.is_empty()).map(|h| Path::new(h).join(".cache").join("chinit"))
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// This process's cache root.
pub fn this_cache_root() -> Option<PathBuf> {
    cache_root(env("CHINIT_CACHE").as_deref(), env("XDG_CACHE_HOME").as_deref(), env("HOME").as_deref())
}

/// Which kernel file a VMM boots: cloud-hypervisor takes the PVH `vmlinux`, QEMU the `bzImage`.
pub fn kernel_file_name(vmm: crate::vmm::Vmm) -> &'static str {
    match vmm {
        crate::vmm::Vmm::CloudHypervisor => "vmlinux",
        crate::vmm::Vmm::Qemu => "bzImage",
    }
}

/// The newest `kernels/x86_64-*/<file>` under the cache root.
pub fn default_kernel(root: &Path, file: &str) -> Option<PathBuf> {
    let dir = std::fs::read_dir(root.join("kernels")).ok()?;
    dir.filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("x86_64-"))
        .map(|e| e.path().join(file))
        .filter_map(|p| {
            let m = std::fs::metadata(&p).ok()?.modified().ok()?;
            Some((m, p))
        })
        .max()
        .map(|(_, p)| p)
}

/// The default images, first found wins: `rootfs_fast.ext4` in the current directory.
pub const DEFAULT_IMAGE: &str = "rootfs_fast.ext4";

/// A program on PATH (or the path itself when it contains a `/`).
pub fn which(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        return Path::new(program).is_file().then(|| PathBuf::from(program));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(program)).find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
}

/// cloud-hypervisor: `$CLOUD_HYPERVISOR`, else on PATH.
pub fn cloud_hypervisor() -> Option<PathBuf> {
    match std::env::var_os("CLOUD_HYPERVISOR") {
        Some(p) if !p.is_empty() => Some(PathBuf::from(p)).filter(|p| is_executable(p)),
        _ => which("cloud-hypervisor"),
    }
}

pub const QEMU: &str = "qemu-system-x86_64";
pub const VHOST_VSOCK: &str = "vhost-device-vsock";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_root_follows_the_builders_rule() {
        let p = |s: &str| Some(PathBuf::from(s));
        let cases = [
            ((Some("/c"), Some("/x"), Some("/h")), p("/c")),
            ((Some(""), Some("/x"), Some("/h")), p("/x/chinit")),
            ((None, Some("rel"), Some("/h")), p("/h/.cache/chinit")),
            ((None, None, None), None),
        ];
        for ((c, x, h), want) in cases {
            assert_eq!(cache_root(c, x, h), want, "{c:?} {x:?} {h:?}");
        }
    }

    #[test]
    fn default_kernel_is_the_newest_build_with_that_file() {
        let root = std::env::temp_dir().join(format!("hp-locate-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let old = root.join("kernels/x86_64-6.1.1-aaaa");
        let new = root.join("kernels/x86_64-6.1.2-bbbb");
        let other = root.join("kernels/aarch64-6.1.2-cccc");
        for d in [&old, &new, &other] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(old.join("bzImage"), b"old").unwrap();
        std::fs::write(old.join("vmlinux"), b"old").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(new.join("bzImage"), b"new").unwrap();
        std::fs::write(other.join("vmlinux"), b"arm").unwrap();
        assert_eq!(default_kernel(&root, "bzImage"), Some(new.join("bzImage")));
        assert_eq!(default_kernel(&root, "vmlinux"), Some(old.join("vmlinux")));
        assert_eq!(default_kernel(&root.join("none"), "vmlinux"), None);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
