//! Build the tiny kernel into the cache: extract → tinyconfig → merge fragment → olddefconfig →
//! verify → make → check the PVH note → publish atomically.

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use super::cache::{self, Lock, TempDir};
use super::kconfig;
use super::progress::{self, Reporter};
use super::source::{self, Source};
use super::{elf, Error};
use crate::elf::Arch;

/// What differs per architecture when building the kernel.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    pub arch: Arch,
    /// Our name, as in `kernel/<name>.fragment`.
    pub name: &'static str,
    /// `make ARCH=`.
    pub make_arch: &'static str,
    /// The boot image make builds, relative to the object tree.
    pub image: &'static str,
    /// The fragment shipped in the repository.
    pub fragment: &'static str,
    /// cloud-hypervisor boots `vmlinux` through its PVH entry (x86_64): checked after the build.
    pub pvh: bool,
    /// `CROSS_COMPILE=` on a host of another architecture, and the Debian package that has it.
    pub cross: (&'static str, &'static str),
}

pub const TARGETS: &[Target] = &[
    Target {
        arch: Arch::X86_64,
        name: "x86_64",
        make_arch: "x86_64",
        image: "arch/x86/boot/bzImage",
        fragment: include_str!("../../../kernel/x86_64.fragment"),
        pvh: true,
        cross: ("x86_64-linux-gnu-", "gcc-x86-64-linux-gnu"),
    },
    Target {
        arch: Arch::Aarch64,
        name: "aarch64",
        make_arch: "arm64",
        image: "arch/arm64/boot/Image",
        fragment: include_str!("../../../kernel/aarch64.fragment"),
        pvh: false,
        cross: ("aarch64-linux-gnu-", "gcc-aarch64-linux-gnu"),
    },
];

impl Target {
    /// The boot image's file name (`bzImage`, `Image`).
    pub fn image_name(self) -> &'static str {
        self.image.rsplit('/').next().unwrap_or(self.image)
    }

    /// The files of a complete cache entry.
    pub fn entry_files(self) -> [&'static str; 4] {
        ["vmlinux", self.image_name(), "config", "build.log"]
    }

    /// `CROSS_COMPILE=` for building on this host: none on a host of the same architecture.
    pub fn cross_prefix(self) -> Option<&'static str> {
        (std::env::consts::ARCH != self.arch.name()).then_some(self.cross.0)
    }
}

/// The kernel build of `arch`, when there is one.
pub fn target(arch: Arch) -> Option<Target> {
    TARGETS.iter().copied().find(|t| t.arch == arch)
}

/// One kernel build request.
pub struct Request {
    pub source: Source,
    pub arch: Target,
    /// Fragment text (the shipped one unless `--fragment` was given).
    pub fragment: String,
    pub jobs: usize,
}

/// Where the result is, and whether it was already there.
pub struct Built {
    pub dir: PathBuf,
    pub cache_hit: bool,
}

/// Finds the entry in the cache or builds it.
pub fn build(req: &Request, cache_root: &Path) -> Result<Built, Error> {
    let frag = kconfig::parse_fragment(&req.fragment).map_err(|b| Error::BadFragment { line_no: b.line_no, text: b.text })?;
    let kernels = cache_root.join("kernels");
    fs::create_dir_all(kernels.join("logs")).map_err(|e| Error::io(&kernels, e))?;
    let memo = version_memo_path(cache_root, &req.source);

    // Cache hit without touching the source when the version is known already.
    let known = match &req.source {
        Source::Dir(d) if d.join(".config").exists() => return Err(Error::TreeNotClean { path: d.clone() }),
        Source::Dir(d) => Some(source::tree_version(d).ok_or_else(|| Error::NotAKernelTree { path: d.clone() })?),
        Source::Tarball(_) => fs::read_to_string(&memo).ok().map(|s| s.trim().to_string()),
    };
    let mut lock = None;
    if let Some(version) = &known {
        let name = entry_name(req, version);
        // An entry appears whole, by one rename: a complete one needs no lock (nor a writable
        // cache, as in a simulated KVM host that sees this cache read-only).
        if cache::is_complete(&kernels.join(&name), &req.arch.entry_files()) {
            return Ok(Built { dir: kernels.join(name), cache_hit: true });
        }
        lock = Some(lock_entry(&kernels, &name)?);
        if cache::is_complete(&kernels.join(&name), &req.arch.entry_files()) {
            return Ok(Built { dir: kernels.join(name), cache_hit: true });
        }
    }

    cache::remove_stale_work_dirs(&kernels, cache::pid_alive);
    let label = format!("{:012x}", cache::fnv1a64(&[&req.source.identity()]) >> 16);
    let work_path = kernels.join(format!(".build-{label}.{}", std::process::id()));
    let work = TempDir::create(work_path.clone()).map_err(|e| Error::io(&work_path, e))?;
    let tree = match &req.source {
        Source::Dir(d) => d.clone(),
        Source::Tarball(t) => {
            let tree = work.path().join("src");
            extract(t, &tree)?;
            tree
        }
    };
    let version = source::tree_version(&tree).ok_or_else(|| Error::NotAKernelTree { path: req.source.path().to_path_buf() })?;
    if matches!(req.source, Source::Tarball(_)) {
        let _ = fs::create_dir_all(memo.parent().unwrap_or(cache_root));
        let _ = fs::write(&memo, format!("{version}\n"));
    }
    let name = entry_name(req, &version);
    if known.as_deref() != Some(version.as_str()) {
        lock = Some(lock_entry(&kernels, &name)?);
    }
    let final_dir = kernels.join(&name);
    if cache::is_complete(&final_dir, &req.arch.entry_files()) {
        return Ok(Built { dir: final_dir, cache_hit: true });
    }

    if let Some(prefix) = req.arch.cross_prefix() {
        let gcc = format!("{prefix}gcc");
        if Command::new(&gcc).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_err() {
            return Err(Error::NoCrossCompiler { arch: req.arch.name, compiler: prefix, package: req.arch.cross.1 });
        }
    }
    let log_path = kernels.join("logs").join(format!("{name}.log"));
    let estimate = previous_step_count(&kernels, req.arch.name);
    let mut b = Builder {
        tree,
        obj: work.path().join("obj"),
        arch: req.arch,
        log_path: log_path.clone(),
        log: File::create(&log_path).map_err(|e| Error::io(&log_path, e))?,
    };
    fs::create_dir_all(&b.obj).map_err(|e| Error::io(&b.obj, e))?;
    eprintln!("building kernel {version} for {} with {} jobs (log: {})", req.arch.name, req.jobs, log_path.display());
    let started = Instant::now();

    b.make("tinyconfig", &["tinyconfig"], None)?;
    let config_path = b.obj.join(".config");
    let base = fs::read_to_string(&config_path).map_err(|e| Error::io(&config_path, e))?;
    fs::write(&config_path, kconfig::merge(&base, &frag)).map_err(|e| Error::io(&config_path, e))?;
    b.make("olddefconfig", &["olddefconfig"], None)?;
    let final_cfg = fs::read_to_string(&config_path).map_err(|e| Error::io(&config_path, e))?;
    let dropped = kconfig::dropped(&frag, &kconfig::parse_config(&final_cfg));
    if !dropped.is_empty() {
        let kept = kernels.join("logs").join(format!("{name}.config"));
        let _ = fs::write(&kept, &final_cfg);
        return Err(Error::OptionsDropped { list: dropped.iter().map(|d| format!("  {d}")).collect::<Vec<_>>().join("\n"), config: kept });
    }
    eprintln!("config: all {} fragment options kept", frag.len());

    let jobs = format!("-j{}", req.jobs.max(1));
    b.make("build", &[&jobs, "vmlinux", image_target(req.arch)], estimate)?;

    let vmlinux = b.obj.join("vmlinux");
    if req.arch.pvh {
        let bytes = fs::read(&vmlinux).map_err(|e| Error::io(&vmlinux, e))?;
        match elf::pvh_entry(&bytes) {
            Ok(Some(entry)) => eprintln!("vmlinux: PVH entry note at {entry:#x}"),
            Ok(None) => return Err(Error::NoPvhNote { path: vmlinux }),
            Err(e) => return Err(Error::BadElf { path: vmlinux, source: e }),
        }
    }

    // Stage everything, then one rename makes the entry visible.
    let staged = work.path().join("entry");
    fs::create_dir(&staged).map_err(|e| Error::io(&staged, e))?;
    let image_name = Path::new(req.arch.image).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let copies = [
        (vmlinux.clone(), "vmlinux".to_string()),
        (b.obj.join(req.arch.image), image_name),
        (config_path.clone(), "config".to_string()),
        // Names the addresses `initcall_debug` prints (the tiny kernel has no kallsyms).
        (b.obj.join("System.map"), "System.map".to_string()),
    ];
    for (from, to) in copies {
        fs::copy(&from, staged.join(&to)).map_err(|e| Error::io(&from, e))?;
    }
    drop(b);
    fs::copy(&log_path, staged.join("build.log")).map_err(|e| Error::io(&log_path, e))?;
    fs::write(staged.join("fragment"), &req.fragment).map_err(|e| Error::io(&staged, e))?;
    fs::rename(&staged, &final_dir).map_err(|e| Error::io(&final_dir, e))?;
    let _ = fs::remove_file(&log_path);
    eprintln!("kernel built in {}", progress::clock(started.elapsed()));
    drop(work);
    drop(lock);
    Ok(Built { dir: final_dir, cache_hit: false })
}

fn image_target(arch: Target) -> &'static str {
    arch.image.rsplit('/').next().unwrap_or(arch.image)
}

fn entry_name(req: &Request, version: &str) -> String {
    let id = req.source.identity();
    cache::entry_name(req.arch.name, version, &req.fragment, &[&id])
}

fn lock_entry(kernels: &Path, name: &str) -> Result<Lock, Error> {
    let p = kernels.join(format!("{name}.lock"));
    Lock::acquire(&p).map_err(|e| Error::io(&p, e))
}

fn version_memo_path(cache_root: &Path, src: &Source) -> PathBuf {
    let id = cache::fnv1a64(&[&src.identity()]);
    cache_root.join("sources").join(format!("{id:016x}.version"))
}

/// The step count of the newest complete entry of this arch: the estimate of a new build's total.
fn previous_step_count(kernels: &Path, arch: &str) -> Option<usize> {
    let newest = fs::read_dir(kernels)
        .ok()?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&format!("{arch}-")))
        .filter_map(|e| {
            let log = e.path().join("build.log");
            let t = fs::metadata(&log).and_then(|m| m.modified()).ok()?;
            Some((t, log))
        })
        .max()?;
    let text = fs::read_to_string(newest.1).ok()?;
    // The log also holds the config steps; they are few.
    Some(progress::count_steps(&text))
}

fn extract(tarball: &Path, into: &Path) -> Result<(), Error> {
    let t = Instant::now();
    eprintln!("extracting {}", tarball.display());
    fs::create_dir_all(into).map_err(|e| Error::io(into, e))?;
    let out = Command::new("tar")
        .arg("-xf")
        .arg(tarball)
        .arg("-C")
        .arg(into)
        .arg("--strip-components=1")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::Spawn { program: "tar".into(), source: e })?;
    if !out.status.success() {
        return Err(Error::Extract { tarball: tarball.to_path_buf(), stderr: String::from_utf8_lossy(&out.stderr).trim().to_string() });
    }
    eprintln!("extract done in {}", progress::clock(t.elapsed()));
    Ok(())
}

struct Builder {
    tree: PathBuf,
    obj: PathBuf,
    arch: Target,
    log_path: PathBuf,
    log: File,
}

impl Builder {
    /// Runs `make -C tree O=obj ARCH=.. args`, output to the log, progress to stderr.
    fn make(&mut self, phase: &str, args: &[&str], estimate: Option<usize>) -> Result<(), Error> {
        // One stream in order: `sh` joins make's stderr to its stdout.
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "exec \"$0\" \"$@\" 2>&1", "make", "-C"])
            .arg(&self.tree)
            .arg(format!("O={}", self.obj.display()))
            .arg(format!("ARCH={}", self.arch.make_arch))
            .args(self.arch.cross_prefix().map(|p| format!("CROSS_COMPILE={p}")))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        let _ = writeln!(self.log, "### {phase}: make {}", args.join(" "));
        let mut child = cmd.spawn().map_err(|e| Error::Spawn { program: "sh".into(), source: e })?;
        let Some(reader) = child.stdout.take() else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Error::io(&self.log_path, std::io::Error::other("no stdout pipe")));
        };
        let mut rep = Reporter::new(phase, estimate);
        for line in BufReader::new(reader).lines() {
            let Ok(line) = line else { break };
            let _ = writeln!(self.log, "{line}");
            rep.line(&line);
        }
        let status = child.wait().map_err(|e| Error::io(&self.log_path, e))?;
        let _ = self.log.flush();
        rep.finish(status.success());
        if status.success() {
            return Ok(());
        }
        let log = fs::read_to_string(&self.log_path).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(25).collect();
        Err(Error::Make {
            phase: phase.to_string(),
            status: status.to_string(),
            tail: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
            log: self.log_path.clone(),
        })
    }
}
