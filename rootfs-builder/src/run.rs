//! `rootfs-builder [OPTIONS]`: parse, build into a temporary file next to the output, rename.

use std::path::{Path, PathBuf};

use clap::Parser;

use crate::cleanup::TempPath;
use crate::cli::{Args, Cli, Command, Profile};
use crate::elf::Arch;
use crate::error::{Error, ExitCode, Result};
use crate::ext4::{self, Base, Ext4Options};
use crate::initramfs::{self, Compression};
use crate::plan::{normalize, Content, Entry, Plan};
use crate::{elf, gpt, oci, progress, size, tools};

/// Entry point of `rootfs-builder`: parses the command line and runs the image builder or the
/// subcommand; returns the process exit code.
pub fn main(args: &[String]) -> ExitCode {
    let parsed = match Cli::try_parse_from(std::iter::once("rootfs-builder".to_string()).chain(args.iter().cloned())) {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { ExitCode::Usage } else { ExitCode::Ok };
        }
    };
    match &parsed.command {
        Some(Command::Kernel(k)) => crate::kernel::main(k),
        None => image(&parsed.image),
    }
}

/// The image builder.
fn image(args: &Args) -> ExitCode {
    if let Err(e) = crate::cleanup::install() {
        eprintln!("rootfs-builder: cannot install signal handling: {e}");
    }
    match exec(args) {
        Ok(()) => ExitCode::Ok,
        Err(e) => {
            crate::cleanup::yield_to_signal();
            eprintln!("rootfs-builder: {e}");
            e.exit_code()
        }
    }
}

/// `SOURCE_DATE_EPOCH` (default 0).
pub fn source_date_epoch() -> Result<i64> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Err(_) => Ok(0),
        Ok(v) => v.trim().parse::<i64>().ok().filter(|&t| t >= 0).ok_or_else(|| Error::BadOption {
            option: "SOURCE_DATE_EPOCH",
            value: v.clone(),
            problem: "expected a non-negative number of seconds since 1970".into(),
        }),
    }
}

/// Where the workspace's musl build of chinit is: `$CARGO_TARGET_DIR` (relative to the current
/// directory) or `<workspace>/target`, then `<triple>/release/chinit`.
pub fn default_init(arch: elf::Arch, target_dir: Option<&str>, workspace: &Path) -> PathBuf {
    let target = match target_dir {
        Some(t) if !t.is_empty() => PathBuf::from(t),
        _ => workspace.join("target"),
    };
    target.join(arch.musl_triple()).join("release").join("chinit")
}

fn workspace_dir() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// Read and check the init binary.
pub fn load_init(path: Option<&Path>, arch: elf::Arch) -> Result<(PathBuf, Vec<u8>)> {
    let (path, explicit) = match path {
        Some(p) => (p.to_path_buf(), true),
        None => (default_init(arch, std::env::var("CARGO_TARGET_DIR").ok().as_deref(), &workspace_dir()), false),
    };
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
            return Err(Error::InitMissing { path, command: arch.build_command() })
        }
        Err(e) => return Err(Error::MissingSource { option: "--init", path, source: e }),
    };
    elf::check_static(&bytes, arch).map_err(|problem| Error::BadInit {
        path: path.clone(),
        problem,
        arch: arch.name(),
        command: arch.build_command(),
    })?;
    Ok((path, bytes))
}

fn exec(a: &Args) -> Result<()> {
    let epoch = source_date_epoch()?;
    let (out, is_initramfs) = match (&a.out, &a.initramfs) {
        (Some(o), _) => (o.clone(), false),
        (None, Some(i)) => (i.clone(), true),
        (None, None) => unreachable!("clap requires --out or --initramfs"),
    };
    let compression = if is_initramfs {
        Some(Compression::from_name(&out.to_string_lossy()).map_err(|p| Error::BadOption {
            option: "--initramfs",
            value: out.display().to_string(),
            problem: p,
        })?)
    } else {
        None
    };
    if let Some(l) = &a.label {
        if l.len() > 16 {
            return Err(Error::BadOption { option: "--label", value: l.clone(), problem: "ext4 labels hold at most 16 bytes".into() });
        }
    }
    let baseline = a.profile == Profile::Baseline;
    if baseline && a.arch != elf::Arch::X86_64 {
        return Err(Error::BadOption {
            option: "--profile",
            value: "baseline".into(),
            problem: "the baseline is built from this host's x86_64 programs; leave --arch out".into(),
        });
    }
    // The bytes that were checked are the bytes that are written.
    let init = if baseline { None } else { Some(Content::Bytes(load_init(a.init.as_deref(), a.arch)?.1)) };

    // Everything happens in one work directory next to the output, removed on every exit path.
    let name = out
        .file_name()
        .ok_or_else(|| Error::BadOption {
            option: if is_initramfs { "--initramfs" } else { "--out" },
            value: out.display().to_string(),
            problem: "must name a file".into(),
        })?
        .to_string_lossy()
        .into_owned();
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let work_path = dir.join(format!(".{name}.rootfs-builder-{}", std::process::id()));
    let work = TempPath::new(work_path.clone());
    std::fs::create_dir(&work_path).map_err(|e| Error::OutputDir { dir: dir.clone(), source: e })?;
    let image = work.path().join("image");

    let mut plan = match init {
        None => {
            progress::step("baseline: busybox-static, python3 and the modules its agent loads…");
            crate::baseline::plan(&crate::baseline::Hosts::default(), &crate::baseline::Host, work.path())?
        }
        Some(init) if is_initramfs => Plan::initramfs(init),
        Some(init) => Plan::root(init),
    };
    // A container image's workload file goes in before --tree and --add, which stay on top.
    let layers = match &a.image {
        Some(src) => Some((src, read_image(src, a.arch, work.path(), &mut plan)?)),
        None => None,
    };
    for t in &a.tree {
        plan.tree(t, "/", "--tree")?;
    }
    for s in &a.add {
        plan.add(s)?;
    }

    if let Some(compression) = compression {
        if let Some(dir) = &a.modules_from {
            if !a.module.is_empty() {
                let n = crate::initramfs::add_modules(&mut plan, dir, &a.module)?;
                progress::step(&format!("{n} module files (with dependencies)"));
            }
        } else if !a.module.is_empty() {
            return Err(Error::ModulesWithoutDir);
        }
        progress::step(&format!(
            "writing cpio ({} entries{})…",
            plan.entries.len(),
            if layers.is_some() { " over the image's" } else { "" }
        ));
        let base = match layers {
            Some((src, tree)) => image_cpio(src, tree)?,
            None => initramfs::Tree::default(),
        };
        initramfs::build(&plan, base, compression, epoch, &image)?;
    } else {
        let base = match (&a.base, layers) {
            (_, Some((_, tree))) => {
                let tar = work.path().join("image.tar");
                tree.write(&tar).map_err(|e| Error::io(format!("writing {}", tar.display()), e))?;
                Base::Tarball(tar)
            }
            (Some(b), None) => Base::detect(b)?,
            (None, None) => Base::None,
        };
        let opts = Ext4Options { size: a.size, label: a.label.clone(), epoch, base };
        if a.gpt {
            let fs = work.path().join("partition");
            ext4::build(&plan, &opts, work.path(), &fs)?;
            partition(&fs, &image, a.label.as_deref().unwrap_or("root"))?;
        } else {
            ext4::build(&plan, &opts, work.path(), &image)?;
        }
    }

    let f = std::fs::File::open(&image).map_err(|e| Error::io("reopening the new image", e))?;
    f.sync_all().map_err(|e| Error::io("syncing the new image", e))?;
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    drop(f);
    let sha = tools::sha256(&image)?;
    std::fs::rename(&image, &out).map_err(|e| Error::OutputDir { dir: dir.clone(), source: e })?;
    drop(work);
    progress::step(&format!("wrote {} ({} bytes, {:.1} MiB, sha256 {sha})", out.display(), len, len as f64 / size::MIB as f64));
    Ok(())
}

/// Reads `--image SRC` and applies its layers; its workload file (and a WorkingDir the layers may
/// lack, made as container runtimes do, kept if there) goes into `plan`.
fn read_image(src: &Path, arch: Arch, work: &Path, plan: &mut Plan) -> Result<oci::Tree> {
    progress::step(&format!("reading the container image {}…", src.display()));
    let flat = oci::flatten(src, arch, work)?;
    progress::step(&format!("image {}: layers applied", flat.platform));
    let Some(w) = flat.workload else {
        progress::step("the image has no Entrypoint or Cmd: no workload file; give chinit.exec= at boot");
        return Ok(flat.tree);
    };
    progress::step(&format!("workload: {} (uid {}, gid {}, in {})", w.argv.join(" "), w.uid, w.gid, w.cwd));
    plan.put(agent::workload::PATH, Entry::file(Content::Bytes(w.to_text().into_bytes()), 0o644));
    if w.cwd != "/" {
        let cwd =
            normalize(&w.cwd).map_err(|p| Error::BadImage { path: src.to_path_buf(), problem: format!("WorkingDir {}: {p}", w.cwd) })?;
        plan.put(&cwd, Entry::dir(0o755));
    }
    Ok(flat.tree)
}

/// The image's layers as the cpio entries an initramfs is built over.
fn image_cpio(src: &Path, tree: oci::Tree) -> Result<initramfs::Tree> {
    let (base, xattrs) = tree.into_cpio().map_err(|problem| Error::BadImage { path: src.to_path_buf(), problem })?;
    if xattrs > 0 {
        progress::step(&format!(
            "{xattrs} entries have extended attributes (file capabilities, security labels): a cpio archive cannot carry them, they are left out"
        ));
    }
    Ok(base)
}

/// Puts the filesystem image `fs` into a GPT disk `disk` as its one partition; the GUIDs come from
/// the filesystem's bytes, so equal inputs still give equal disks.
fn partition(fs: &Path, disk: &Path, name: &str) -> Result<()> {
    let sha = tools::sha256(fs)?;
    let word = |i: usize| sha.get(16 * i..16 * i + 16).and_then(|h| u64::from_str_radix(h, 16).ok()).unwrap_or(0);
    let (disk_guid, part_guid) = (gpt::guid_from(word(0), word(1)), gpt::guid_from(word(2), word(3)));
    let l = gpt::wrap(fs, disk, &disk_guid, &part_guid, name).map_err(|e| Error::io("writing the GPT disk", e))?;
    progress::step(&format!(
        "GPT disk: partition 1 (sectors {}-{}, partuuid {part_guid}), {} MiB in all",
        l.part_first,
        l.part_last,
        l.total * gpt::SECTOR / size::MIB
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_init_paths() {
        let ws = Path::new("/ws");
        assert_eq!(default_init(elf::Arch::X86_64, None, ws), PathBuf::from("/ws/target/x86_64-unknown-linux-musl/release/chinit"));
        assert_eq!(default_init(elf::Arch::Aarch64, Some("/t"), ws), PathBuf::from("/t/aarch64-unknown-linux-musl/release/chinit"));
        assert_eq!(default_init(elf::Arch::X86_64, Some(""), ws), PathBuf::from("/ws/target/x86_64-unknown-linux-musl/release/chinit"));
    }

    #[test]
    fn missing_default_init_names_the_command() {
        let e = load_init(Some(Path::new("/nonexistent/chinit")), elf::Arch::X86_64).unwrap_err();
        assert_eq!(e.exit_code(), ExitCode::BadInput);
        let e = Error::InitMissing { path: "/x".into(), command: elf::Arch::X86_64.build_command() };
        assert!(e.to_string().contains("cargo build --release --target x86_64-unknown-linux-musl -p chinit"));
    }
}
