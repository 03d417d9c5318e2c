//! `rootfs-builder kernel`: build and cache the guest kernel, or fetch a distro kernel.
//!
//! See docs/kernel.md.

mod build;
mod cache;
mod distro;
mod elf;
mod kconfig;
mod progress;
mod source;

use std::path::PathBuf;

use crate::elf::Arch;
use crate::error::ExitCode;

/// `rootfs-builder kernel`'s options.
#[derive(Debug, clap::Args)]
#[command(
    about = "Build the tiny guest kernel into the cache (or fetch a distro kernel) and print where it is.",
    after_help = "Cache: $CHINIT_CACHE, else $XDG_CACHE_HOME/chinit, else $HOME/.cache/chinit.\n\
                  Tiny kernel: <cache>/kernels/<arch>-<version>-<hash>/{vmlinux,bzImage,config,build.log}.\n\
                  Distro kernel: <cache>/distro/<package>_<version>/ (prints vmlinuz= and modules=).\n\
                  Exit codes: 0 ok, 1 build or download failed, 2 usage, 3 bad input. See docs/kernel.md."
)]
pub struct Args {
    /// Kernel source: a tarball or a kernel tree (built out of tree, never written to).
    #[arg(long, value_name = "TARBALL|DIR", default_value = source::DEFAULT_SOURCE)]
    source: PathBuf,
    /// Target architecture (the fragment is kernel/<arch>.fragment).
    #[arg(long, value_enum, default_value = "x86_64")]
    arch: Arch,
    /// Parallel make jobs (default: the number of CPUs).
    #[arg(long, value_name = "N")]
    jobs: Option<usize>,
    /// Use this fragment instead of the shipped one (experiments; it gets its own cache entry).
    #[arg(long, value_name = "FILE")]
    fragment: Option<PathBuf>,
    /// Print only the cache directory on stdout (building first only if it is missing).
    #[arg(long)]
    print_path: bool,
    /// Fetch a distro kernel instead of building: debian-cloud.
    #[arg(long, value_name = "NAME", conflicts_with_all = ["source", "jobs", "fragment"])]
    distro: Option<String>,
}

/// Everything that can go wrong, each with the fix.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no cache directory: set CHINIT_CACHE (or HOME) to a writable directory")]
    NoCache,
    #[error(
        "building the {arch} kernel on this host needs the cross compiler {compiler}gcc: apt-get install {package} (scripts/setup.sh does)"
    )]
    NoCrossCompiler { arch: &'static str, compiler: &'static str, package: &'static str },
    #[error("no kernel fragment for {0} yet: supported: {1}")]
    UnknownArch(&'static str, String),
    #[error("unknown distro kernel {0:?} for {1}: supported: debian-cloud (x86_64)")]
    UnknownDistro(String, String),
    #[error("kernel source {0} does not exist: install linux-source-6.1 (apt-get install linux-source-6.1) or pass --source TARBALL|DIR")]
    NoSource(PathBuf),
    #[error(
        "{path}: no kernel Makefile with VERSION/PATCHLEVEL/SUBLEVEL found: pass a kernel tarball with one top directory, or a kernel tree"
    )]
    NotAKernelTree { path: PathBuf },
    #[error("{path} has been configured or built in place (it has a .config), so it cannot be built out of tree: run `make mrproper` there, or pass the tarball")]
    TreeNotClean { path: PathBuf },
    #[error("fragment line {line_no} is not `CONFIG_X=value` or `# CONFIG_X is not set` (or names a symbol twice): {text:?}")]
    BadFragment { line_no: usize, text: String },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("cannot run {program}: {source}: install it (apt-get install build-essential flex bison bc libelf-dev libssl-dev; apt, dpkg and kmod for --distro)")]
    Spawn { program: String, source: std::io::Error },
    #[error("extracting {tarball} failed: {stderr}")]
    Extract { tarball: PathBuf, stderr: String },
    #[error("make {phase} failed ({status}); last lines:\n{tail}\nfull log: {log}")]
    Make { phase: String, status: String, tail: String, log: PathBuf },
    #[error("olddefconfig dropped or changed these fragment options (their dependencies are missing: add the dependencies to the fragment, or remove the options):\n{list}\nresulting config: {config}")]
    OptionsDropped { list: String, config: PathBuf },
    #[error("{path} has no PVH entry note (Xen note type 18): cloud-hypervisor cannot boot it; keep CONFIG_PVH=y in the fragment")]
    NoPvhNote { path: PathBuf },
    #[error("{path}: {source}")]
    BadElf { path: PathBuf, source: elf::ElfError },
    #[error("{command} failed: {stderr}")]
    Command { command: String, stderr: String },
    #[error("apt-cache found no `linux-image-<release> (= version)` dependency of {metapackage}: run apt-get update")]
    NoKernelDependency { metapackage: String },
    #[error("package {package} does not hold {missing}")]
    UnexpectedPackage { package: String, missing: String },
}

impl Error {
    /// The exit code this error ends the command with.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Error::UnknownArch(..) | Error::UnknownDistro(..) => ExitCode::Usage,
            Error::NoSource(_) | Error::NotAKernelTree { .. } | Error::TreeNotClean { .. } | Error::BadFragment { .. } => {
                ExitCode::BadInput
            }
            _ => ExitCode::BuildFailed,
        }
    }

    fn io(path: &std::path::Path, source: std::io::Error) -> Error {
        Error::Io { path: path.to_path_buf(), source }
    }
}

/// The cache root of this process: `$CHINIT_CACHE`, else `$XDG_CACHE_HOME/chinit`, else
/// `$HOME/.cache/chinit`. The one place that says where kernels are; host-probe asks here.
pub fn cache_root() -> Option<PathBuf> {
    cache::root()
}

/// The newest built kernel entry of `arch` under `root` that has `file` (`vmlinux`, `bzImage`):
/// `<root>/kernels/<arch>-<version>-<hash>/<file>`, by the file's modification time.
pub fn newest_built(root: &std::path::Path, arch: Arch, file: &str) -> Option<PathBuf> {
    let prefix = format!("{}-", arch.name());
    let dir = std::fs::read_dir(root.join("kernels")).ok()?;
    dir.filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path().join(file))
        .filter_map(|p| {
            let m = std::fs::metadata(&p).ok()?.modified().ok()?;
            Some((m, p))
        })
        .max()
        .map(|(_, p)| p)
}

/// `rootfs-builder kernel ARGS...`; returns the process exit code.
pub fn main(args: &Args) -> ExitCode {
    match run(args) {
        Ok(()) => ExitCode::Ok,
        Err(e) => {
            eprintln!("rootfs-builder kernel: {e}");
            e.exit_code()
        }
    }
}

fn run(args: &Args) -> Result<(), Error> {
    let root = cache::root().ok_or(Error::NoCache)?;
    if let Some(name) = &args.distro {
        let d = distro::find(name, args.arch.name()).ok_or_else(|| Error::UnknownDistro(name.clone(), args.arch.name().into()))?;
        let u = distro::fetch(d, &root)?;
        if args.print_path {
            println!("{}", u.dir.display());
        } else {
            println!("vmlinuz={}", u.vmlinuz.display());
            println!("modules={}", u.modules.display());
        }
        return Ok(());
    }
    let source = source::Source::from_path(&args.source).ok_or_else(|| Error::NoSource(args.source.clone()))?;
    let fragment = match &args.fragment {
        Some(p) => Some(std::fs::read_to_string(p).map_err(|e| Error::io(p, e))?),
        None => None,
    };
    let built = build_tiny(&root, source, args.arch, fragment, args.jobs)?;
    if args.print_path {
        println!("{}", built.dir.display());
    } else {
        let how = if built.cache_hit { "cached" } else { "built" };
        println!("kernel {how}: {}", built.dir.display());
    }
    Ok(())
}

fn build_tiny(
    root: &std::path::Path,
    source: source::Source,
    arch: Arch,
    fragment: Option<String>,
    jobs: Option<usize>,
) -> Result<build::Built, Error> {
    let arch = build::target(arch).ok_or_else(|| {
        let names: Vec<&str> = build::TARGETS.iter().map(|t| t.name).collect();
        Error::UnknownArch(arch.name(), names.join(", "))
    })?;
    let jobs = jobs.unwrap_or_else(|| std::thread::available_parallelism().map(usize::from).unwrap_or(1));
    build::build(&build::Request { source, arch, fragment: fragment.unwrap_or_else(|| arch.fragment.to_string()), jobs }, root)
}

/// The cache directory of the tiny kernel for `arch` (`vmlinux`, `bzImage`, `config`,
/// `build.log`), from the default source and the shipped fragment; built first when missing,
/// with progress on stderr. What `rootfs-builder kernel --print-path` prints.
pub fn tiny_kernel(arch: Arch) -> Result<PathBuf, Error> {
    let root = cache::root().ok_or(Error::NoCache)?;
    let src = PathBuf::from(source::DEFAULT_SOURCE);
    let source = source::Source::from_path(&src).ok_or(Error::NoSource(src))?;
    Ok(build_tiny(&root, source, arch, None, None)?.dir)
}

/// A distro kernel (`debian-cloud`) unpacked in the cache: `(vmlinuz, /lib/modules/<release>)`.
pub fn distro_kernel(name: &str, arch: Arch) -> Result<(PathBuf, PathBuf), Error> {
    let root = cache::root().ok_or(Error::NoCache)?;
    let d = distro::find(name, arch.name()).ok_or_else(|| Error::UnknownDistro(name.to_string(), arch.name().into()))?;
    let u = distro::fetch(d, &root)?;
    Ok((u.vmlinuz, u.modules))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The subcommand's options, parsed as `rootfs-builder kernel ARGS`.
    fn parse(a: &[&str]) -> Result<Args, clap::Error> {
        use clap::Parser;
        let argv = ["rootfs-builder", "kernel"].into_iter().chain(a.iter().copied());
        match crate::cli::Cli::try_parse_from(argv)?.command {
            Some(crate::cli::Command::Kernel(k)) => Ok(k),
            None => panic!("not the kernel subcommand"),
        }
    }

    #[test]
    fn command_line() {
        let a = parse(&[]).unwrap();
        assert_eq!(a.source, PathBuf::from(source::DEFAULT_SOURCE));
        assert_eq!(a.arch, Arch::X86_64);
        assert!(!a.print_path && a.distro.is_none() && a.jobs.is_none());
        let a = parse(&["--source", "/t.tar", "--jobs", "3", "--print-path"]).unwrap();
        assert_eq!((a.source, a.jobs, a.print_path), (PathBuf::from("/t.tar"), Some(3), true));
        let a = parse(&["--distro", "debian-cloud"]).unwrap();
        assert_eq!(a.distro.as_deref(), Some("debian-cloud"));
        assert!(parse(&["--distro", "debian-cloud", "--source", "/x"]).is_err());
        assert!(parse(&["--jobs", "many"]).is_err());
        assert!(parse(&["--frobnicate"]).is_err());
        assert!(parse(&["--arch", "mips"]).is_err());
        assert_eq!(parse(&["--arch", "aarch64"]).unwrap().arch, Arch::Aarch64);
    }

    #[test]
    fn newest_built_is_the_newest_entry_of_the_arch_with_that_file() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
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
        assert_eq!(newest_built(root, Arch::X86_64, "bzImage"), Some(new.join("bzImage")));
        assert_eq!(newest_built(root, Arch::X86_64, "vmlinux"), Some(old.join("vmlinux")));
        assert_eq!(newest_built(root, Arch::Aarch64, "vmlinux"), Some(other.join("vmlinux")));
        assert_eq!(newest_built(&root.join("none"), Arch::X86_64, "vmlinux"), None);
    }

    #[test]
    fn exit_codes() {
        assert_eq!(Error::UnknownArch("aarch64", "x86_64".into()).exit_code(), ExitCode::Usage);
        assert_eq!(Error::NoSource("/nope".into()).exit_code(), ExitCode::BadInput);
        let bad = Error::BadFragment { line_no: 2, text: "CONFIG_X y".into() };
        assert_eq!(bad.exit_code(), ExitCode::BadInput);
        let dropped = Error::OptionsDropped { list: String::new(), config: "/c".into() };
        assert_eq!(dropped.exit_code(), ExitCode::BuildFailed);
    }
}
