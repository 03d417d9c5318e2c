//! The VMMs: one module each ([`cloud_hypervisor`], [`firecracker`], [`qemu`], [`stratovirt`]) behind one trait ([`Driver`]), and
//! one [`registry`] that lists them. The rest of host-probe (plan, launch, watch, collect, snapshot,
//! restore) asks a [`Vmm`] what it needs and never names one; adding a VMM is a module here and a
//! line in the registry.
//!
//! What a boot needs, independent of the VMM, is a [`Spec`]; each VMM's `argv` is pure: the same
//! `Spec` always gives the same command line, which is what `--dry-run` prints and what the tests
//! compare with literal strings.

pub mod cloud_hypervisor;
pub mod firecracker;
pub mod kernel;
pub mod qemu;
pub mod qmp;
pub mod registry;
pub mod stratovirt;

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::check;
use crate::error::Error;
use crate::launch::{Captured, Phase, Running};
use crate::measure::{Event, Mark};
use crate::options::{Arch, HostOffer};
use crate::plan::Plan;
use crate::vsock::GuestVsock;

pub use registry::{all, by_name};

/// What only some VMMs can attach; [`Driver::cannot`] refuses the others, with the fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feature {
    /// `--root pmem`: the root image on a persistent-memory device.
    PmemRoot,
    /// `--layout kuasar`.
    KuasarLayout,
    /// `--share`: a host directory over virtio-fs.
    Share,
}

/// The guest's vsock as a VMM wires it ([`Driver::wire_vsock`]).
#[derive(Debug, Clone, Default)]
pub struct Wired {
    pub device: Option<Vsock>,
    /// The argv of the helper that serves it (vhost-device-vsock), when one does.
    pub helper_argv: Option<Vec<String>>,
    /// How the host reaches it.
    pub guest: Option<GuestVsock>,
    /// The host vsock port chinit pushes its ready document to.
    pub notify_port: Option<u32>,
}

impl Wired {
    /// A vsock the host reaches over the hybrid Unix socket `uds` (the VMM's own, or a helper's in
    /// front of it), with the notify port every run of it has.
    pub fn hybrid(device: Vsock, helper_argv: Option<Vec<String>>, uds: &Path) -> Wired {
        Wired {
            device: Some(device),
            helper_argv,
            guest: Some(GuestVsock::Hybrid(uds.to_path_buf())),
            notify_port: Some(crate::plan::NOTIFY_PORT),
        }
    }
}

impl Wired {
    /// The host kernel's vhost-vsock (`/dev/vhost-vsock`): a context id and notify port of the run's
    /// own, from host-probe's pid and the run's number (QEMU, StratoVirt).
    pub fn kernel((pid, seq): (u32, u32)) -> Wired {
        let (cid, port) = crate::vsock::kernel_ids(pid, seq);
        Wired { device: Some(Vsock::Kernel { cid }), helper_argv: None, guest: Some(GuestVsock::Kernel { cid }), notify_port: Some(port) }
    }
}

/// Where a run's port-0x80 marks and VMM events came from, once it ended ([`Driver::marks`]).
#[derive(Debug, Clone, Default)]
pub struct Marks {
    pub marks: Vec<Mark>,
    /// In the words of the report (`host.marks_source`).
    pub source: &'static str,
    pub events: Vec<Event>,
    /// The VMM is up, µs since spawn, when it says so.
    pub vmm_ready_us: Option<u64>,
}

/// One VMM: everything host-probe does that differs between VMMs. Each is a unit type in its own
/// module, listed once in the [`registry`]; callers hold it as a [`Vmm`].
pub trait Driver: Sync {
    /// Its name: `--vmm NAME`, the report's and the manifest's `vmm`, error messages.
    fn name(&self) -> &'static str;

    // Choosing it and its program.
    /// Its programs as found on this host (`$VAR`, PATH), each by a name of its own: what
    /// [`HostOffer::vmm_programs`] holds for it.
    fn locate(&self) -> Vec<(&'static str, PathBuf)>;
    /// The environment variable that names its program, read before PATH (`$CLOUD_HYPERVISOR`);
    /// None when it is looked for on PATH only.
    fn program_var(&self) -> Option<&'static str> {
        None
    }
    /// `--vmm auto` takes the first VMM of the registry that fits this host (the last always does).
    fn auto_fits(&self, host: &HostOffer, native: bool) -> bool;
    /// `--vmm NAME`: refused when this host lacks it (with the fix); notes what it cannot do here.
    fn chosen(&self, host: &HostOffer, notes: &mut Vec<String>) -> Result<(), Error>;
    /// The name of its program for a guest of `arch` (a name [`Driver::locate`] gives).
    fn program_name(&self, arch: Arch) -> &'static str;
    /// Its program and how it runs a guest of `arch` here (noted when it emulates), or why it
    /// cannot, with the fix.
    fn runs(&self, host: &HostOffer, arch: Arch, notes: &mut Vec<String>) -> Result<(PathBuf, Accel), Error>;
    /// The kernel file it boots on `arch` (its name in the kernel cache).
    fn kernel_file(&self, arch: Arch) -> &'static str;
    /// Whether it boots Linux only under hardware KVM (`host-probe check` needs the others).
    fn needs_hardware_kvm(&self) -> bool;
    /// Its line of `host-probe check`: its program (`locate`'s first, with its version), whether it
    /// can boot here, the fix.
    fn check_line(&self, program: Option<&crate::check::Program>, kvm: crate::check::KvmKind) -> crate::check::Line;

    // What it attaches.
    /// Why it cannot attach `what` (a usage error, with the fix), if it cannot.
    fn cannot(&self, what: Feature) -> Option<&'static str>;
    /// The guest's vsock (asked for only when the guest gets one): its device, the helper that
    /// serves it, how the host reaches it; a note when this host cannot give one.
    fn wire_vsock(&self, host: &HostOffer, run_dir: &Path, ids: (u32, u32), notes: &mut Vec<String>) -> Wired;
    /// Its whole command line, program first (pure), or why the spec cannot be run (with the fix).
    fn argv(&self, spec: &Spec) -> Result<Vec<String>, String>;
    /// What `--dry-run` prints after the command line: the API calls that configure and start the
    /// guest once it runs ([`Driver::configure`]), as shell lines. None by default.
    fn api_script(&self, _spec: &Spec) -> Vec<String> {
        Vec::new()
    }
    /// Whether it has no power-off but exits when the guest resets: chinit then powers off by a
    /// reset (`chinit.poweroff=reboot`).
    fn powers_off_by_reset(&self) -> bool {
        false
    }
    /// The physical address of its boot timer device in a guest of `arch`, which chinit writes at
    /// ready (`chinit.boot_timer`), for the VMM to stamp on its clock ([`Driver::marks`]). None by
    /// default.
    fn boot_timer(&self, _arch: Arch) -> Option<u64> {
        None
    }
    /// Kernel parameters of its own for a guest of `arch` (before `--cmdline-extra`). None by default.
    fn kernel_args(&self, _arch: Arch) -> &'static str {
        ""
    }
    /// Once it was spawned to boot (or to be snapshotted): the API calls that configure and start
    /// the guest, within `phase`. Nothing by default: the command line says it all.
    fn configure(&self, _running: &mut Running, _phase: &Phase) -> Result<(), Error> {
        Ok(())
    }

    // What it tells while it runs.
    /// The Unix socket its port-0x80 marks arrive on, which host-probe binds before it starts.
    fn debugcon<'a>(&self, spec: &'a Spec) -> Option<&'a Path>;
    /// Whether it said the guest reset (a kernel panic or a reboot) without exiting.
    fn guest_reset(&self, spec: &Spec) -> bool;
    /// The marks, events and "VMM ready" time of a run that ended.
    fn marks(&self, spec: &Spec, c: &Captured) -> Marks;
    /// The first error of its log file (with its causes), which says more than its last lines.
    fn first_error(&self, log: &str) -> Option<String>;

    // Snapshots.
    /// Why a guest of this spec cannot be snapshotted, with the fix; asked before the guest is
    /// refused for having no vsock (the VMM may be why it has none).
    fn snapshot_refusal(&self, spec: &Spec) -> Option<Error>;
    /// The files of its snapshot, besides the manifest.
    fn snapshot_files(&self) -> &'static [&'static str];
    /// Pauses the running guest and saves it into `out`: the pause's and the save's durations,
    /// each a phase of `timeout`.
    fn save(&self, running: &mut Running, out: &Path, timeout: Duration) -> Result<(Duration, Duration), Error>;
    /// Once it stopped: makes what it saved into `out` durable.
    fn saved(&self, out: &Path) -> Result<(), Error>;
    /// Its version line (the manifest's `vmm_version`; a copy is restored by the same only).
    fn version_line(&self, program: &Path) -> Option<String> {
        crate::check::version_of(program)
    }

    // Restores.
    /// `--memory-restore-mode`: the mode its copies use, or a usage error when it has none.
    fn restore_mode(&self, asked: Option<MemoryRestoreMode>) -> Result<Option<MemoryRestoreMode>, Error>;
    /// The vsock (`devices.vsock` of the manifest) it restores.
    fn restorable_vsock(&self) -> &'static str;
    /// What every copy of the snapshot in `dir` needs from it, read once before any is planned
    /// (nothing, unless the VMM says).
    fn snapshot_config(&self, _dir: &Path) -> Result<Option<String>, Error> {
        Ok(None)
    }
    /// Turns a copy's boot plan into the restore of the snapshot in `dir` with the copy's own TAP,
    /// vsock and console: its role, argv and the files its run directory gets.
    fn restore_copy(&self, p: &mut Plan, dir: &Path, mode: MemoryRestoreMode, config: Option<&str>) -> Result<(), Error>;
    /// Once the copy's VMM started: until the restored VM runs, within `phase`.
    fn resume_copy(&self, running: &mut Running, dir: &Path, phase: &Phase) -> Result<(), Error>;
}

/// A VMM: a handle to its [`Driver`]. It is written (reports, JSON, manifests) and read as its
/// name, and compares by it.
#[derive(Clone, Copy)]
pub struct Vmm(&'static dyn Driver);

impl Vmm {
    pub const fn new(driver: &'static dyn Driver) -> Vmm {
        Vmm(driver)
    }

    pub fn driver(self) -> &'static dyn Driver {
        self.0
    }
}

impl std::ops::Deref for Vmm {
    type Target = dyn Driver;
    fn deref(&self) -> &Self::Target {
        self.0
    }
}

impl PartialEq for Vmm {
    fn eq(&self, other: &Vmm) -> bool {
        self.name() == other.name()
    }
}

impl Eq for Vmm {}

impl std::fmt::Debug for Vmm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl serde::Serialize for Vmm {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> serde::Deserialize<'de> for Vmm {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Vmm, D::Error> {
        let name = String::deserialize(d)?;
        by_name(&name).ok_or_else(|| serde::de::Error::unknown_variant(&name, registry::names()))
    }
}

/// A snapshot in `dir` that a copy's VMM cannot take: a bad snapshot, not a bad option.
/// `--vmm NAME` of a VMM that runs Linux on hardware KVM only (cloud-hypervisor, Firecracker):
/// refused with `missing` when it is not installed; without hardware KVM, a note that it cannot
/// boot Linux here. `label` is how messages name it.
pub fn kvm_only_chosen(host: &HostOffer, name: &str, label: &str, missing: Error, notes: &mut Vec<String>) -> Result<(), Error> {
    if !host.vmm_programs.contains_key(name) {
        return Err(missing);
    }
    if !host.kvm.hardware() {
        notes.push(format!("no hardware KVM: {label} cannot run a Linux guest on this host"));
    }
    Ok(())
}

/// `--vmm auto` for a VMM taken only where nothing else runs: hardware KVM, a guest of the host's
/// architecture, the VMM `name` here, and no QEMU for this architecture (the VMMs before it in the
/// registry come first anyway).
pub fn fits_only_without_qemu(host: &HostOffer, native: bool, name: &str) -> bool {
    native && host.vmm_programs.contains_key(name) && host.kvm.hardware() && host.kvm_usable && host.program(qemu::VMM, host.arch).is_none()
}

/// A VMM that runs guests of its host's architecture only refuses a kernel of another.
pub fn native_only(label: &str, host: &HostOffer, arch: Arch) -> Result<(), Error> {
    if arch != host.arch {
        return Err(Error::Usage(format!(
            "{label} runs guests of its host's architecture only ({}): boot this {} kernel with --vmm qemu",
            host.arch.name(),
            arch.name()
        )));
    }
    Ok(())
}

/// A VMM's program: `$env` when set (and executable), else `name` on PATH.
pub fn find_program(env: &str, name: &str) -> Option<PathBuf> {
    match std::env::var_os(env) {
        Some(p) if !p.is_empty() => Some(PathBuf::from(p)).filter(|p| crate::locate::is_executable(p)),
        _ => crate::locate::which(name),
    }
}

/// The `major.minor.patch` that follows `prefix` on the first line of a version output that has it.
pub fn version_after(output: &str, prefix: &str) -> Option<(u32, u32, u32)> {
    let rest = output.lines().find_map(|l| l.trim().strip_prefix(prefix))?;
    let core = rest.split(|c: char| !(c.is_ascii_digit() || c == '.')).next()?;
    let mut parts = core.split('.').map(|p| p.parse::<u32>().ok());
    Some((parts.next()??, parts.next()??, parts.next()??))
}

/// A VMM host-probe drives at one release line only (Firecracker, StratoVirt): how its program is
/// found, how its version is read and judged, and how messages name it.
pub struct Pinned {
    /// Its name, and the program's.
    pub name: &'static str,
    /// How messages name it.
    pub label: &'static str,
    /// The environment variable that names its program.
    pub env: &'static str,
    /// The flag its version is asked with.
    pub flag: &'static str,
    /// How to get it, in fixes.
    pub get_it: &'static str,
    /// The version in the program's answer to `flag`.
    pub version: fn(&str) -> Option<(u32, u32, u32)>,
    /// Whether host-probe drives this version; the error says why not and the fix.
    pub supported: fn((u32, u32, u32)) -> Result<(), String>,
}

impl Pinned {
    /// Its program: `$env`, else on PATH.
    pub fn find(&self) -> Option<PathBuf> {
        find_program(self.env, self.name)
    }

    /// The program is neither at `$env` nor on PATH; `fix` says what to do.
    pub fn not_found(&self, fix: String) -> Error {
        Error::Missing { what: format!("{} not found (neither ${} nor on PATH)", self.name, self.env), fix }
    }

    /// Whether the program at `path` is one host-probe drives, from its answer to the version flag
    /// (`version_output`). The error names what it is and the fix.
    pub fn check_program(&self, path: &Path, version_output: Option<&str>) -> Result<(), Error> {
        let (label, flag) = (self.label, self.flag);
        let missing = |what: String| Err(Error::Missing { what, fix: self.get_it.into() });
        let Some(out) = version_output else {
            return missing(format!("{}: no answer to {flag}: not a {label}", path.display()));
        };
        let Some(v) = (self.version)(out) else {
            let first = out.lines().next().unwrap_or("").trim();
            return missing(format!("{} is not {label}: its {flag} says {first:?}", path.display()));
        };
        (self.supported)(v).or_else(|e| missing(format!("{}: {e}", path.display())))
    }

    /// Its line in `host-probe check`: found, of a driven version, and able to boot Linux here
    /// (hardware KVM).
    pub fn check_line(&self, program: Option<&check::Program>, kvm: check::KvmKind) -> check::Line {
        use check::Status;
        let Some(p) = program else {
            return check::line(Status::Warn, self.name, format!("not found (set ${} or put it on PATH)", self.env), Some(self.get_it));
        };
        let detail = check::program(Some(p));
        match (p.version.as_deref().and_then(self.version).map(self.supported), kvm.hardware()) {
            (None, _) => check::line(Status::Warn, self.name, format!("{detail}: not a {} version", self.label), Some(self.get_it)),
            (Some(Err(e)), _) => check::line(Status::Warn, self.name, format!("{detail}: {e}"), Some(self.get_it)),
            (Some(Ok(())), true) => check::line(Status::Ok, self.name, detail, None),
            (Some(Ok(())), false) => {
                check::line(Status::Warn, self.name, format!("{detail}; cannot boot Linux without hardware KVM"), None)
            }
        }
    }
}

pub fn unrestorable(dir: &Path, why: &str) -> Error {
    Error::BadSnapshot {
        what: format!("{} cannot be restored: {why}", dir.display()),
        fix: "take the snapshot again with host-probe snapshot".into(),
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
    /// The VMM's own hybrid vsock (cloud-hypervisor, Firecracker): `socket` is the Unix socket
    /// the VMM binds.
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
    /// The root disk attached read-write: never by host-probe (its roots are read-only), only by
    /// tests that check what a guest wrote survives an orderly power-off. A VMM configured over its
    /// API (Firecracker) reads it; the others' tests edit their argv.
    pub root_writable: bool,
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

/// One HTTP/1.1 request on a VMM's API socket (cloud-hypervisor's, Firecracker's), given up at
/// `deadline` however the VMM answers (or does not: [`crate::bounded`]); the answer whatever its
/// status. `what` names the call in errors.
pub fn http_call(
    what: &str,
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
    deadline: std::time::Instant,
) -> Result<agent::client::Response, ApiError> {
    let s = crate::bounded::connect_unix(socket, deadline).map_err(|e| ApiError::io(&format!("{what} ({})", socket.display()), &e))?;
    let mut s = crate::bounded::Bounded::new(s, deadline);
    agent::client::request(&mut s, method, path, body).map_err(|e| match e {
        agent::client::ClientError::Io(e) => ApiError::io(what, &e),
        other => ApiError::Failed(format!("{what}: {other}")),
    })
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
