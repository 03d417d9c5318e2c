//! The command line: `rootfs-builder [OPTIONS]` builds an image; `rootfs-builder kernel [OPTIONS]`
//! builds the guest kernel.

use std::path::PathBuf;

use clap::{ArgGroup, Parser, Subcommand};

use crate::elf::Arch;

/// The whole command line: the image builder's options, or a subcommand.
#[derive(Debug, Parser)]
#[command(
    name = "rootfs-builder",
    version,
    about = "Bake chinit into an ext4 root image or an initramfs, without root mounts; build the guest kernel.",
    after_help = "Exit codes: 0 ok, 1 build step failed, 2 usage, 3 bad input, 4 output not writable, 130/143 interrupted.\n\
SOURCE_DATE_EPOCH (default 0) sets every timestamp; equal inputs give byte-identical outputs.",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub image: Args,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build the tiny guest kernel into the cache (or fetch a distro kernel) and print where it is.
    Kernel(crate::kernel::Args),
}

pub const SIZE_SYNTAX: &str = "image size: 64M, 1G, 512K or bytes (binary units); default: content + 25% + 8 MiB, at least 16 MiB";

/// The image builder's options.
#[derive(Debug, clap::Args)]
#[command(group(ArgGroup::new("output").required(true).args(["out", "initramfs"])))]
pub struct Args {
    /// Write an ext4 root image here.
    #[arg(long, value_name = "IMAGE")]
    pub out: Option<PathBuf>,

    /// Write an initramfs here: OUT.cpio, OUT.cpio.gz or OUT.cpio.zst (compression by extension).
    #[arg(long, value_name = "OUT.cpio[.gz|.zst]")]
    pub initramfs: Option<PathBuf>,

    /// The init binary (a static ELF); default: the workspace's musl build of chinit.
    #[arg(long, value_name = "PATH")]
    pub init: Option<PathBuf>,

    #[arg(long, value_name = "SRC:DST[:MODE]", help = crate::plan::AddSpec::SYNTAX, value_parser = crate::plan::AddSpec::parse)]
    pub add: Vec<crate::plan::AddSpec>,

    /// Overlay a host directory onto / of the image (repeatable; --add entries win).
    #[arg(long, value_name = "DIR")]
    pub tree: Vec<PathBuf>,

    #[arg(long, value_name = "SIZE", help = SIZE_SYNTAX, value_parser = crate::size::parse, conflicts_with = "initramfs")]
    pub size: Option<u64>,

    /// Filesystem label (at most 16 bytes).
    #[arg(long, value_name = "LABEL", conflicts_with = "initramfs")]
    pub label: Option<String>,

    /// Write a GPT disk whose one partition is the ext4 root (root=/dev/vda1, /dev/pmem0p1), a
    /// whole number of 2 MiB (a cloud-hypervisor pmem device's unit).
    #[arg(long, conflicts_with = "initramfs")]
    pub gpt: bool,

    /// Start from an existing root: an ext4 image, a directory or a tarball; never modified.
    #[arg(long, value_name = "IMAGE|DIR|TARBALL", conflicts_with = "initramfs")]
    pub base: Option<PathBuf>,

    /// Make the root from a container image: an OCI image layout directory, an oci-archive tarball,
    /// or a `docker save` / `podman save` archive (the manifest for --arch; every blob's sha256
    /// checked). Its config becomes chinit's workload (/etc/chinit/workload.json). With
    /// --initramfs the image is the whole initramfs, chinit its /init.
    #[arg(long, value_name = "OCI-DIR|ARCHIVE", conflicts_with = "base")]
    pub image: Option<PathBuf>,

    /// What the image boots: `chinit` (default), or `baseline`, the busybox shell init + Python agent
    /// chinit is compared against (docs/benchmarks.md), from the host's busybox-static and python3.
    #[arg(long, value_enum, default_value = "chinit", conflicts_with_all = ["initramfs", "init", "base", "image"])]
    pub profile: Profile,

    /// Target architecture: the init must be built for it.
    #[arg(long, value_enum, default_value = "x86_64")]
    pub arch: Arch,

    /// Kernel modules: /lib/modules/<version> or an extracted kernel package containing it.
    #[arg(long, value_name = "DIR", conflicts_with = "out")]
    pub modules_from: Option<PathBuf>,

    /// A module to include with its dependencies (repeatable; `-` and `_` are the same).
    #[arg(long, value_name = "NAME", requires = "modules_from", conflicts_with = "out")]
    pub module: Vec<String>,
}

/// `--profile`: what the image boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Profile {
    /// chinit as /sbin/init.
    Chinit,
    /// A busybox shell init that execs a Python HTTP agent.
    Baseline,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(a: &[&str]) -> Result<Args, clap::Error> {
        let cli = Cli::try_parse_from(std::iter::once("rootfs-builder").chain(a.iter().copied()))?;
        assert!(cli.command.is_none());
        Ok(cli.image)
    }

    #[test]
    fn accepted() {
        let a = parse(&["--out", "r.ext4", "--add", "a:/b:0600", "--add", "c:/d", "--size", "64M"]).unwrap();
        assert_eq!(a.out, Some(PathBuf::from("r.ext4")));
        assert_eq!(a.add.len(), 2);
        assert_eq!(a.size, Some(64 << 20));
        assert_eq!(a.arch, Arch::X86_64);
        let a = parse(&["--initramfs", "i.cpio.gz", "--modules-from", "/lib/modules/6.1", "--module", "virtio_blk", "--arch", "aarch64"])
            .unwrap();
        assert_eq!(a.module, ["virtio_blk"]);
        assert_eq!(a.profile, Profile::Chinit);
        assert_eq!(parse(&["--out", "b.ext4", "--profile", "baseline"]).unwrap().profile, Profile::Baseline);
        assert_eq!(a.arch, Arch::Aarch64);
        let a = parse(&["--initramfs", "app.cpio.gz", "--image", "app.oci"]).unwrap();
        assert_eq!((a.initramfs, a.image), (Some(PathBuf::from("app.cpio.gz")), Some(PathBuf::from("app.oci"))));
    }

    #[test]
    fn refused() {
        for bad in [
            &[][..],
            &["--out", "a", "--initramfs", "b"],
            &["--initramfs", "b", "--size", "1G"],
            &["--out", "a", "--module", "x"],
            &["--initramfs", "b", "--module", "x"],
            &["--out", "a", "--size", "big"],
            &["--out", "a", "--add", "nodst"],
            &["--out", "a", "--arch", "mips"],
            &["--out", "a", "--profile", "systemd"],
            &["--initramfs", "a.cpio", "--profile", "baseline"],
            &["--initramfs", "a.cpio", "--gpt"],
            &["--out", "a", "--profile", "baseline", "--init", "x"],
            &["--out", "a", "--profile", "baseline", "--base", "x"],
            &["--out", "a", "--image", "x", "--base", "y"],
            &["--out", "a", "--profile", "baseline", "--image", "x"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should be refused");
        }
    }
}
