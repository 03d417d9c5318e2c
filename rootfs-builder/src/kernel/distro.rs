//! Distro kernels: Debian's cloud kernel package, fetched with `apt-get download` and unpacked
//! with `dpkg-deb -x` into the cache, with `depmod -b` run on the result (the package itself ships
//! no modules.dep). No root mounts, no installation.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::cache::{self, Lock, TempDir};
use super::Error;

/// A distro kernel flavour: the metapackage that names the current versioned kernel package.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Distro {
    pub name: &'static str,
    pub arch: &'static str,
    pub metapackage: &'static str,
}

pub const DISTROS: &[Distro] = &[Distro { name: "debian-cloud", arch: "x86_64", metapackage: "linux-image-cloud-amd64" }];

pub fn find(name: &str, arch: &str) -> Option<Distro> {
    DISTROS.iter().copied().find(|d| d.name == name && d.arch == arch)
}

/// The versioned kernel package a metapackage depends on: `(package, version)`, from the
/// `apt-cache show --no-all-versions` record of the metapackage.
pub fn kernel_dependency(apt_show: &str) -> Option<(String, String)> {
    let depends = apt_show.lines().find_map(|l| l.strip_prefix("Depends:"))?;
    depends.split(',').find_map(|dep| {
        // One alternative is enough; take the first.
        let dep = dep.split('|').next()?.trim();
        let (name, rest) = dep.split_once(' ').unwrap_or((dep, ""));
        let name = name.split(':').next()?;
        if !name.starts_with("linux-image-") {
            return None;
        }
        let version = rest.trim().strip_prefix("(=")?.strip_suffix(')')?.trim().to_string();
        Some((name.to_string(), version))
    })
}

/// The kernel release of a versioned image package: `linux-image-6.1.0-56-cloud-amd64` →
/// `6.1.0-56-cloud-amd64`.
pub fn kernel_release(package: &str) -> Option<&str> {
    package.strip_prefix("linux-image-").filter(|r| r.starts_with(|c: char| c.is_ascii_digit()))
}

/// An unpacked distro kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unpacked {
    pub dir: PathBuf,
    pub vmlinuz: PathBuf,
    pub modules: PathBuf,
    pub cache_hit: bool,
}

fn paths(dir: &Path, release: &str) -> (PathBuf, PathBuf) {
    (dir.join("boot").join(format!("vmlinuz-{release}")), dir.join("lib").join("modules").join(release))
}

fn run(cmd: &mut Command) -> Result<String, Error> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let out = cmd.stdin(Stdio::null()).output().map_err(|e| Error::Spawn { program: program.clone(), source: e })?;
    if !out.status.success() {
        return Err(Error::Command { command: format!("{cmd:?}"), stderr: String::from_utf8_lossy(&out.stderr).trim().to_string() });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Finds the current kernel of `distro` in the cache, or downloads and unpacks it.
pub fn fetch(distro: Distro, cache_root: &Path) -> Result<Unpacked, Error> {
    let show = run(Command::new("apt-cache").args(["show", "--no-all-versions", distro.metapackage]))?;
    let (package, version) =
        kernel_dependency(&show).ok_or_else(|| Error::NoKernelDependency { metapackage: distro.metapackage.to_string() })?;
    let release =
        kernel_release(&package).ok_or_else(|| Error::NoKernelDependency { metapackage: distro.metapackage.to_string() })?.to_string();
    let base = cache_root.join("distro");
    fs::create_dir_all(&base).map_err(|e| Error::io(&base, e))?;
    let name = format!("{package}_{version}");
    let dir = base.join(&name);
    let (vmlinuz, modules) = paths(&dir, &release);
    // Unpacked whole, then renamed into place: a complete one needs no lock.
    let complete = || vmlinuz.is_file() && modules.join("modules.dep").is_file();
    if complete() {
        return Ok(Unpacked { dir, vmlinuz, modules, cache_hit: true });
    }
    let lock_path = base.join(format!("{name}.lock"));
    let _lock = Lock::acquire(&lock_path).map_err(|e| Error::io(&lock_path, e))?;
    if complete() {
        return Ok(Unpacked { dir, vmlinuz, modules, cache_hit: true });
    }
    cache::remove_stale_work_dirs(&base, cache::pid_alive);
    let work_path = base.join(format!(".build-{name}.{}", std::process::id()));
    let work = TempDir::create(work_path.clone()).map_err(|e| Error::io(&work_path, e))?;
    eprintln!("downloading {package} {version}");
    let mut dl = Command::new("apt-get");
    dl.arg("download").arg(format!("{package}={version}")).current_dir(work.path());
    run(&mut dl)?;
    let deb = fs::read_dir(work.path())
        .map_err(|e| Error::io(work.path(), e))?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .ok_or_else(|| Error::Command { command: format!("{dl:?}"), stderr: "no .deb file was downloaded".into() })?;
    let root = work.path().join("root");
    eprintln!("unpacking {}", deb.display());
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root))?;
    let (staged_vmlinuz, staged_modules) = paths(&root, &release);
    if !staged_vmlinuz.is_file() || !staged_modules.is_dir() {
        return Err(Error::UnexpectedPackage { package, missing: format!("{} or {}", staged_vmlinuz.display(), staged_modules.display()) });
    }
    // The package ships no modules.dep (the installer runs depmod): make it, so the tree can be
    // used like an installed /lib/modules/<release>.
    run(Command::new("depmod").arg("-b").arg(&root).arg(&release))?;
    fs::rename(&root, &dir).map_err(|e| Error::io(&dir, e))?;
    drop(work);
    Ok(Unpacked { dir, vmlinuz, modules, cache_hit: false })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_versioned_kernel_package() {
        let show = "Package: linux-image-cloud-amd64\nSource: linux-signed-amd64 (6.1.192+2)\nVersion: 6.1.192-2\nDepends: linux-image-6.1.0-56-cloud-amd64 (= 6.1.192-2)\nDescription: x\n";
        assert_eq!(kernel_dependency(show), Some(("linux-image-6.1.0-56-cloud-amd64".into(), "6.1.192-2".into())));
        let several = "Depends: foo (>= 1), linux-image-6.1.0-9-cloud-amd64:amd64 (= 6.1.27-1) | bar, baz\n";
        assert_eq!(kernel_dependency(several), Some(("linux-image-6.1.0-9-cloud-amd64".into(), "6.1.27-1".into())));
        assert_eq!(kernel_dependency("Depends: linux-image-x (>= 1)\n"), None);
        assert_eq!(kernel_dependency("Package: x\n"), None);
    }

    #[test]
    fn kernel_releases() {
        assert_eq!(kernel_release("linux-image-6.1.0-56-cloud-amd64"), Some("6.1.0-56-cloud-amd64"));
        assert_eq!(kernel_release("linux-image-cloud-amd64"), None);
        assert_eq!(kernel_release("linux-headers-6.1.0"), None);
    }

    #[test]
    fn only_known_flavours() {
        assert!(find("debian-cloud", "x86_64").is_some());
        assert!(find("debian-cloud", "aarch64").is_none());
        assert!(find("ubuntu", "x86_64").is_none());
    }
}
