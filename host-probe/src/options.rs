//! The two inputs of a plan: what the user asked of `host-probe run` ([`Options`], with the checks
//! that need nothing but the options themselves, [`Options::validate`]) and what the host offers
//! ([`HostOffer`]). [`crate::plan`] weighs one against the other.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::check::KvmKind;
use crate::cmdline;
use crate::error::Error;
use crate::vmm::Vmm;
pub use rootfs_builder::elf::Arch;

/// Which VMM the user asked for: `--vmm auto`, or one by its name (any of [`crate::vmm::all`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmmChoice {
    Auto,
    Named(Vmm),
}

impl From<Vmm> for VmmChoice {
    fn from(vmm: Vmm) -> VmmChoice {
        VmmChoice::Named(vmm)
    }
}

/// `--vmm`'s values: `auto`, then the registry's names in its order.
impl clap::ValueEnum for VmmChoice {
    fn value_variants<'a>() -> &'a [Self] {
        static CHOICES: std::sync::OnceLock<Vec<VmmChoice>> = std::sync::OnceLock::new();
        CHOICES.get_or_init(|| std::iter::once(VmmChoice::Auto).chain(crate::vmm::all().iter().map(|v| VmmChoice::Named(*v))).collect())
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(match self {
            VmmChoice::Auto => "auto",
            VmmChoice::Named(vmm) => vmm.name(),
        }))
    }
}

/// How the root image is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RootMode {
    /// virtio-blk, read-only.
    Disk,
    /// persistent memory, writes discarded (cloud-hypervisor only).
    Pmem,
}

/// What `run` waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// chinit's agent: notify, `/ready` over TAP and vsock; then `POST /v1/shutdown`.
    Agent,
    /// The VMM exits by itself (a guest that powers off); only marks and events are measured.
    Exit,
    /// `host-probe run`: as `Agent`; then, when the guest runs a workload ([`crate::workload`]),
    /// until it exits (chinit powers off after it) and the guest's console from its start is copied
    /// to stderr.
    Workload,
}

/// What the user asked for.
#[derive(Debug, Clone)]
pub struct Options {
    pub vmm: VmmChoice,
    pub kernel: Option<PathBuf>,
    pub rootfs: Option<PathBuf>,
    pub initramfs: Option<PathBuf>,
    pub root_mode: RootMode,
    pub cpus: u32,
    pub memory_mib: u32,
    pub cmdline_extra: String,
    /// The init the kernel starts from the root image (`init=`).
    pub init: String,
    pub timeout: Duration,
    pub keep: bool,
    pub wait: Wait,
    /// Give the guest a TAP (on by default).
    pub net: bool,
    /// Give the guest vsock when the VMM (or vhost-device-vsock for QEMU) allows it.
    pub vsock: bool,
    /// Progress lines on stderr.
    pub verbose: bool,
    /// The guest's layout: ours, or the one Kuasar gives cloud-hypervisor guests.
    pub layout: Layout,
    /// A host directory shared with the guest over virtio-fs, and its tag: chinit mounts it on
    /// `/mnt/<tag>` (cloud-hypervisor).
    pub share: Option<Share>,
    /// The guest's architecture; `None`: the kernel's (else this host's).
    pub arch: Option<Arch>,
    /// Split phase 1 by initcall (`initcall_debug`, the kernel's log read from chinit over vsock).
    pub kernel_profile: bool,
}

/// The guest's layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Layout {
    /// The serial console, the root as host-probe attaches it.
    #[default]
    Default,
    /// As Kuasar's cloud-hypervisor sandboxer: the root on a partition of a read-only pmem device
    /// (`root=/dev/pmem0p1 rootflags=data=ordered,errors=remount-ro ro`), `console=hvc0`, virtio-rng.
    Kuasar,
}

/// `--share DIR[:TAG]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Share {
    pub dir: PathBuf,
    pub tag: String,
}

impl Share {
    pub const SYNTAX: &'static str = "DIR[:TAG]: a host directory shared over virtio-fs (tag `share` by default), mounted on /mnt/TAG";

    pub fn parse(s: &str) -> Result<Share, String> {
        let (dir, tag) = match s.rsplit_once(':') {
            Some((d, t)) if !t.contains('/') => (d, t),
            _ => (s, "share"),
        };
        if dir.is_empty() {
            return Err(format!("--share {s:?}: no directory; expected {}", Share::SYNTAX));
        }
        if tag.is_empty() || !tag.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') || tag.len() > 36 {
            return Err(format!("--share {s:?}: the tag must be 1-36 letters, digits, '-' or '_'"));
        }
        Ok(Share { dir: PathBuf::from(dir), tag: tag.to_string() })
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            vmm: VmmChoice::Auto,
            kernel: None,
            rootfs: None,
            initramfs: None,
            root_mode: RootMode::Disk,
            cpus: 1,
            memory_mib: 256,
            cmdline_extra: String::new(),
            init: cmdline::DEFAULT_INIT.into(),
            timeout: Duration::from_secs(60),
            keep: false,
            wait: Wait::Agent,
            net: true,
            vsock: true,
            verbose: false,
            layout: Layout::Default,
            share: None,
            arch: None,
            kernel_profile: false,
        }
    }
}

impl Options {
    /// Checks what can be checked without the host: the `--init` path goes on the kernel command
    /// line as it is.
    pub fn validate(&self) -> Result<(), Error> {
        cmdline::check_init(&self.init).map_err(Error::Usage)?;
        if self.kernel_profile && ((!self.vsock && !self.net) || self.wait == Wait::Exit) {
            return Err(Error::Usage(
                "--kernel-profile reads the kernel's log from chinit once it is ready, over vsock or the TAP: drop --no-agent, and --no-vsock or --no-net".into(),
            ));
        }
        Ok(())
    }
}

/// What the host offers, as far as planning cares.
#[derive(Debug, Clone)]
pub struct HostOffer {
    pub kvm: KvmKind,
    pub kvm_usable: bool,
    /// The programs the VMMs run, found on this host ([`crate::vmm::Driver::locate`]), by the
    /// name each VMM gives it (`cloud-hypervisor`, `qemu-system-x86_64`, `qemu-system-aarch64`).
    pub vmm_programs: BTreeMap<&'static str, PathBuf>,
    /// This host's architecture: guests of another are emulated.
    pub arch: Arch,
    pub vhost_vsock: Option<PathBuf>,
    /// The host kernel's vhost-vsock (`/dev/vhost-vsock`): QEMU guests get kernel vsock.
    pub kernel_vsock: bool,
    /// A virtio-fs daemon (`--share`).
    pub virtiofsd: Option<PathBuf>,
    /// The hypervisor this host itself runs under (an emulated host makes every VM slow).
    pub hypervisor: crate::cpuid::Hypervisor,
    pub cache_root: Option<PathBuf>,
    /// The host's TSC rate, when it is constant (given to TCG guests).
    pub tsc_khz: Option<u64>,
}

impl HostOffer {
    /// `vmm`'s program for a guest of `arch`, if this host has it.
    pub fn program(&self, vmm: Vmm, arch: Arch) -> Option<PathBuf> {
        self.vmm_programs.get(vmm.program_name(arch)).cloned()
    }

    /// `vmm`'s program for a guest of this host's architecture, if this host has it.
    pub fn program_of(&self, vmm: Vmm) -> Option<PathBuf> {
        self.program(vmm, self.arch)
    }

    pub fn gather() -> HostOffer {
        HostOffer {
            kvm: crate::check::host_kvm_kind(),
            kvm_usable: std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm").is_ok(),
            vmm_programs: crate::vmm::all().iter().flat_map(|v| v.locate()).collect(),
            arch: crate::locate::host_arch(),
            vhost_vsock: crate::locate::which(crate::locate::VHOST_VSOCK),
            kernel_vsock: std::path::Path::new("/dev/vhost-vsock").exists(),
            virtiofsd: crate::locate::which(crate::plan::VIRTIOFSD).or_else(|| crate::locate::which("virtiofsd")),
            hypervisor: crate::cpuid::Hypervisor::detect(),
            cache_root: crate::locate::this_cache_root(),
            tsc_khz: crate::tsc::host_tsc_khz(Duration::from_millis(20)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn share_syntax() {
        let ok = |s: &str| Share::parse(s).unwrap();
        assert_eq!(ok("/srv/data"), Share { dir: "/srv/data".into(), tag: "share".into() });
        assert_eq!(ok("/srv/data:kuasar"), Share { dir: "/srv/data".into(), tag: "kuasar".into() });
        assert_eq!(ok("rel/dir:x_1"), Share { dir: "rel/dir".into(), tag: "x_1".into() });
        for bad in [":tag", "/d:bad tag", "/d:"] {
            assert!(Share::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn validation_refuses_an_init_the_kernel_cannot_take() {
        let cases = [("/sbin/chinit", None), ("/sbin/init", None), ("sbin/init", Some(2)), ("/my init", Some(2))];
        for (init, code) in cases {
            let o = Options { init: init.into(), ..Options::default() };
            assert_eq!(o.validate().err().map(|e| e.exit_code().code()), code, "{init}");
        }
    }

    #[test]
    fn the_kernel_profile_needs_chinit_and_a_way_to_it() {
        let p = Options { kernel_profile: true, ..Options::default() };
        let code = |o: Options| o.validate().err().map(|e| e.exit_code().code());
        assert_eq!(code(p.clone()), None);
        assert_eq!(code(Options { vsock: false, ..p.clone() }), None, "over the TAP");
        assert_eq!(code(Options { net: false, ..p.clone() }), None, "over vsock");
        assert_eq!(code(Options { vsock: false, net: false, ..p.clone() }), Some(2));
        let e = Options { wait: Wait::Exit, ..p }.validate().unwrap_err().to_string();
        assert!(e.contains("--no-agent"), "{e}");
    }
}
