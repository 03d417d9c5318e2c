//! What a boot needs, independent of the VMM ([`Spec`]), and the two command-line builders.
//!
//! `ch::argv` and `qemu::argv` are pure: the same `Spec` always gives the same command line, which is
//! what `--dry-run` prints and what the tests compare with literal strings.

pub mod ch;
pub mod ch_api;
pub mod firecracker;
pub mod qemu;
pub mod qmp;

use std::path::PathBuf;

/// Which VMM runs the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Vmm {
    CloudHypervisor,
    Qemu,
}

impl Vmm {
    pub fn name(self) -> &'static str {
        match self {
            Vmm::CloudHypervisor => "cloud-hypervisor",
            Vmm::Qemu => "qemu",
        }
    }
}

/// How QEMU executes guest code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Kvm,
    Tcg,
}

/// Where the guest's root filesystem comes from. Disks are always attached read-only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Root {
    /// An ext4 image on virtio-blk, read-only (`/dev/vda`).
    Disk(PathBuf),
    /// An ext4 image on persistent memory, read-only / writes discarded (`/dev/pmem0`).
    Pmem(PathBuf),
    /// A cpio initramfs; chinit is `/init`.
    Initramfs(PathBuf),
}

/// The guest's network interface: a TAP on the host side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Net {
    pub tap: String,
    pub mac: String,
}

/// The guest's vsock device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Vsock {
    /// cloud-hypervisor's own (hybrid): `socket` is the Unix socket the VMM binds.
    Hybrid { cid: u32, socket: PathBuf },
    /// QEMU's vhost-user device, served by vhost-device-vsock on `socket` (guest memory shared).
    VhostUser { socket: PathBuf },
    /// QEMU's vhost-vsock device, served by the host kernel (`/dev/vhost-vsock`).
    Kernel { cid: u32 },
}

/// Where the guest's console is: the serial port (`ttyS0`) or the virtio console (`hvc0`); either
/// way it goes to [`Spec::serial`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Console {
    Serial,
    Virtio,
}

/// A host directory shared over virtio-fs: virtiofsd serves it on `socket`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fs {
    pub tag: String,
    pub socket: PathBuf,
}

/// How cloud-hypervisor brings a snapshot's memory back (`memory_restore_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum MemoryRestoreMode {
    /// Read the whole memory file before the VM runs.
    #[default]
    Copy,
    /// Map it and fill pages as the guest touches them (userfaultfd).
    Ondemand,
}

impl MemoryRestoreMode {
    pub fn name(self) -> &'static str {
        match self {
            MemoryRestoreMode::Copy => "copy",
            MemoryRestoreMode::Ondemand => "ondemand",
        }
    }
}

/// What the VMM does besides booting: nothing, run a machine that will be snapshotted, or restore one.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Role {
    #[default]
    Boot,
    /// A machine to snapshot. QEMU: its memory is `memory`, a file mapped shared (the snapshot keeps
    /// it), and QMP listens on `qmp`. cloud-hypervisor needs nothing more (its API socket).
    Source { memory: PathBuf, qmp: PathBuf },
    /// A copy restored from a snapshot. QEMU: `memory` mapped private (copy-on-write: the file is
    /// only read), waiting for its state (`-incoming defer`), QMP on `qmp`. cloud-hypervisor:
    /// `--restore` from the directory `from` (its own `config.json`, the snapshot's state and memory).
    Restore { from: PathBuf, memory: PathBuf, qmp: PathBuf, mode: MemoryRestoreMode },
}

/// Everything one boot needs. Paths inside the run directory are given explicitly so that the argv
/// builders never invent names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    pub binary: PathBuf,
    pub kernel: PathBuf,
    pub root: Root,
    /// An initramfs in front of a disk or pmem root (chinit's initramfs mode: it switches to the root).
    pub initramfs: Option<PathBuf>,
    /// The whole kernel command line (see [`crate::cmdline`]).
    pub cmdline: String,
    pub cpus: u32,
    pub memory_mib: u32,
    pub net: Option<Net>,
    pub vsock: Option<Vsock>,
    /// The guest's console goes to this file.
    pub serial: PathBuf,
    pub console: Console,
    /// A shared directory (cloud-hypervisor `--fs`).
    pub fs: Option<Fs>,
    /// Entropy from the host (`--rng src=/dev/urandom`, cloud-hypervisor).
    pub rng: bool,
    /// cloud-hypervisor: API socket, event-monitor file and log file.
    pub api_socket: PathBuf,
    pub event_monitor: PathBuf,
    pub log_file: PathBuf,
    /// QEMU: the Unix socket host-probe listens on; QEMU's isa-debugcon on port 0x80 connects to it.
    pub debugcon_socket: PathBuf,
    pub accel: Accel,
    pub role: Role,
    /// The guest's architecture: QEMU's machine (`microvm` or `virt`) and its devices.
    pub arch: rootfs_builder::elf::Arch,
}

/// Why a call to a VMM's API (cloud-hypervisor's REST API, QEMU's QMP) failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// No answer by the deadline: the VMM is stuck, or slow.
    NoAnswer(String),
    /// Refused, closed, or answered with an error.
    Failed(String),
}

impl ApiError {
    /// An I/O error of the call `what`: a timeout is no answer, anything else a failure.
    pub fn io(what: &str, e: &std::io::Error) -> ApiError {
        if crate::bounded::is_timeout(e) {
            ApiError::NoAnswer(format!("{what}: no answer in time"))
        } else {
            ApiError::Failed(format!("{what}: {e}"))
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApiError::NoAnswer(s) | ApiError::Failed(s) => f.write_str(s),
        }
    }
}

/// Quotes one argument for a POSIX shell when it needs it, so `--dry-run` output can be pasted.
pub fn shell_quote(arg: &str) -> String {
    let plain = !arg.is_empty() && arg.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./=,:@%+".contains(&b));
    if plain {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

/// The argv as one shell line.
pub fn shell_line(argv: &[String]) -> String {
    argv.iter().map(|a| shell_quote(a)).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_only_what_the_shell_would_split_or_expand() {
        let cases = [
            ("path=/tmp/a.sock", "path=/tmp/a.sock"),
            ("console=ttyS0 quiet", "'console=ttyS0 quiet'"),
            ("it's", r"'it'\''s'"),
            ("", "''"),
            ("$HOME", "'$HOME'"),
        ];
        for (arg, want) in cases {
            assert_eq!(shell_quote(arg), want, "{arg:?}");
        }
        assert_eq!(shell_line(&["a b".into(), "c".into()]), "'a b' c".to_string());
    }
}
