//! Plan a boot: the user's [`Options`] against what the host offers ([`HostOffer`]) give a
//! [`Plan`] — the VMM and its argv, the helpers, the names this run will use. Pure given the host
//! facts (it only looks at whether the files it is given exist), so it is tested on literal inputs
//! and printed as it is by `--dry-run`.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use agent::proto::{DEFAULT_PORT, DEFAULT_VSOCK_PORT};

use crate::check::KvmKind;
use crate::cmdline::{self, RootKind};
use crate::error::{absolute, Error};
use crate::options::{Arch, HostOffer, Layout, Options, RootMode, VmmChoice, Wait};
use crate::tap;
use crate::vmm::{self, Accel, Net, Root, Spec, Vmm};
use crate::vsock::GuestVsock;

/// The host vsock port chinit pushes its Ready JSON to, over a hybrid socket (each run has its own
/// socket); the kernel's vsock takes a port of the run's own ([`guest_vsock::kernel_ids`]).
pub const NOTIFY_PORT: u32 = 10_000;
/// The guest's vsock context id.
pub const GUEST_CID: u32 = 3;
/// The note printed and stored whenever QEMU emulates.
pub const TCG_NOTE: &str = "no hardware KVM (kvm_pvm): using TCG emulation, timings are not representative";

/// Why QEMU emulates, in the words users see.
pub fn tcg_note(kvm: KvmKind, usable: bool) -> String {
    match kvm {
        KvmKind::Pvm => TCG_NOTE.into(),
        KvmKind::Hardware(m) if !usable => {
            format!("/dev/kvm ({m}) is not usable by this user: using TCG emulation, timings are not representative")
        }
        _ => "no hardware KVM (no kvm_intel/kvm_amd): using TCG emulation, timings are not representative".into(),
    }
}

/// A resolved boot: the spec, helper commands, and the names this run will use.
#[derive(Debug, Clone)]
pub struct Plan {
    pub vmm: Vmm,
    pub accel: Accel,
    pub spec: Spec,
    pub argv: Vec<String>,
    /// vhost-device-vsock's argv (QEMU with vsock).
    pub vhost_argv: Option<Vec<String>>,
    /// virtiofsd's argv (`--share`).
    pub virtiofsd_argv: Option<Vec<String>>,
    pub run_dir: PathBuf,
    /// How the host reaches the guest's vsock: hybrid (cloud-hypervisor, vhost-device-vsock) or the
    /// kernel's.
    pub guest_vsock: Option<GuestVsock>,
    /// The host vsock port chinit pushes its ready document to (`chinit.notify`).
    pub notify_port: Option<u32>,
    pub tap: Option<Net>,
    pub guest_ip: Option<Ipv4Addr>,
    pub notes: Vec<String>,
    /// Whether the figures are a real host's: hardware KVM on a host that is not itself emulated.
    pub representative: bool,
    pub root_kind: RootKind,
    pub root_path: PathBuf,
    pub root_attach: String,
    /// Files the run directory gets before the VMM starts (a restored copy's `config.json`).
    pub files: Vec<RunFile>,
    /// With [`Wait::Workload`]: where the guest's workload comes from, when it has one; the run
    /// then lasts until it exits.
    pub workload: Option<String>,
}

impl Plan {
    /// What the watch waits for: [`Wait::Workload`] is [`Wait::Agent`] for a guest without a workload.
    pub fn wait(&self, o: &Options) -> Wait {
        match (o.wait, &self.workload) {
            (Wait::Workload, None) => Wait::Agent,
            (w, _) => w,
        }
    }
}

/// A file made in the run directory before the VMM starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunFile {
    Write {
        path: PathBuf,
        bytes: Vec<u8>,
    },
    /// A symbolic link to a file that is only read (a snapshot's state and memory).
    Link {
        path: PathBuf,
        target: PathBuf,
    },
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// Runs one host-probe plans at most. Each gets names no other run of the process has: its TAP
/// ([`tap::tap_name`]), the guest's address ([`tap::guest_ip`]) and the kernel vsock's context id
/// and notify port ([`guest_vsock::kernel_ids`]); this is as many as all of them can tell apart.
pub const MAX_RUNS: usize = 4096;

/// The next run's sequence number in this process (names of the run directory and TAP).
pub fn next_seq() -> u32 {
    SEQ.fetch_add(1, Ordering::SeqCst)
}

/// Refuses `n` more runs (exit 2) when this process cannot give each names of its own: checked
/// before anything starts.
pub fn room_for(n: usize) -> Result<(), Error> {
    let left = MAX_RUNS.saturating_sub(SEQ.load(Ordering::SeqCst) as usize);
    if n > left {
        return Err(Error::Usage(format!(
            "{n} runs: this host-probe can make {left} more (at most {MAX_RUNS} runs in all, so that their TAP names, \
             guest addresses and vsock ids never repeat): lower N, or run them in parts"
        )));
    }
    Ok(())
}

/// Whether a kernel can take an initramfs: false only when the `config` file the kernel builder
/// leaves next to it says `CONFIG_BLK_DEV_INITRD` is not set.
pub fn kernel_supports_initrd(kernel: &Path) -> bool {
    let config = kernel.with_file_name("config");
    match std::fs::read_to_string(config) {
        Ok(text) => text.lines().any(|l| l.trim() == "CONFIG_BLK_DEV_INITRD=y"),
        Err(_) => true,
    }
}

/// Resolves the options against the host. `seq` makes names unique within the process.
pub fn plan(o: &Options, host: &HostOffer, seq: u32) -> Result<Plan, Error> {
    if seq as usize >= MAX_RUNS {
        return Err(Error::Usage(format!(
            "run {}: one host-probe makes at most {MAX_RUNS} runs (their TAP names, guest addresses and vsock ids never repeat): \
             start another host-probe",
            u64::from(seq) + 1
        )));
    }
    o.validate()?;
    let mut notes = Vec::new();
    let arch = o.arch.or_else(|| o.kernel.as_deref().and_then(crate::locate::kernel_file_arch)).unwrap_or(host.arch);
    let vmm = choose_vmm(o.vmm, host, arch == host.arch, &mut notes)?;
    let (binary, accel) = vmm.runs(host, arch, &mut notes)?;
    if accel == Accel::Kvm {
        notes.extend(host.hypervisor.note());
    }
    let kernel = find_kernel(o, host, vmm, arch)?;
    let root = attach_root(o, vmm, find_initramfs(o, &kernel)?)?;
    let kuasar = check_layout(o, vmm, &root)?;

    let pid = std::process::id();
    let run_dir = std::env::temp_dir().join(format!("host-probe-{pid}-{seq}"));
    let (tap, guest_ip) = if o.net {
        let ip = tap::guest_ip(pid, seq);
        (Some(Net { tap: tap::tap_name(pid, seq), mac: tap::guest_mac(ip) }), Some(ip))
    } else {
        (None, None)
    };
    let vmm::Wired { device: vsock, helper_argv: vhost_argv, guest: guest_vsock, notify_port } =
        wire_vsock(vmm, o.vsock, host, &run_dir, (pid, seq), &mut notes);
    check_reachable(o.wait, tap.is_some(), vsock.is_some())?;
    // The kernel profile is read from chinit at ready, so a profiled run ends there.
    let workload = if o.wait == Wait::Workload && !o.kernel_profile {
        crate::workload::expected(&o.cmdline_extra, root.kind, &root.path, root.partition).unwrap_or_else(|why| {
            notes.push(format!("{why}; the guest is powered off once ready"));
            None
        })
    } else {
        None
    };
    if let Some(w) = &workload {
        notes.push(format!("the guest runs a workload ({w}): waiting for it to exit (within --timeout)"));
    }

    let cmdline = cmdline::build(&cmdline::Guest {
        root: root.kind,
        initramfs_first: root.initramfs_first.is_some(),
        ip: guest_ip,
        port: DEFAULT_PORT,
        vsock_port: vsock.as_ref().map(|_| DEFAULT_VSOCK_PORT),
        notify_port,
        tsc_khz: host.tsc_khz.filter(|_| accel == Accel::Tcg && arch == Arch::X86_64),
        init: o.init.clone(),
        partition: root.partition,
        hvc0: kuasar,
        rootflags: kuasar.then(|| KUASAR_ROOTFLAGS.to_string()),
        share: o.share.as_ref().map(|s| s.tag.clone()),
        arch,
        poweroff_by_reset: vmm.powers_off_by_reset(),
        boot_timer: vmm.boot_timer(arch),
        vmm_args: vmm.kernel_args(arch),
        extra: if o.kernel_profile {
            format!("{} {}", crate::kprofile::CMDLINE, o.cmdline_extra).trim_end().to_string()
        } else {
            o.cmdline_extra.clone()
        },
    });
    let (fs, virtiofsd_argv) = wire_share(o, vmm, host, &run_dir)?;
    let spec = Spec {
        binary,
        kernel,
        root: root.root,
        initramfs: root.initramfs_first,
        cmdline,
        cpus: o.cpus,
        memory_mib: o.memory_mib,
        net: tap.clone(),
        vsock,
        serial: run_dir.join("serial.log"),
        console: if kuasar { vmm::Console::Virtio } else { vmm::Console::Serial },
        fs,
        rng: kuasar,
        api_socket: run_dir.join("api.sock"),
        event_monitor: run_dir.join("events.json"),
        log_file: run_dir.join("vmm.log"),
        debugcon_socket: run_dir.join("debugcon.sock"),
        accel,
        role: vmm::Role::Boot,
        root_writable: false,
        arch,
    };
    let argv = vmm.argv(&spec).map_err(Error::Usage)?;
    Ok(Plan {
        vmm,
        accel,
        spec,
        argv,
        vhost_argv,
        virtiofsd_argv,
        run_dir,
        guest_vsock,
        notify_port,
        tap,
        guest_ip,
        representative: accel == Accel::Kvm && host.kvm.hardware() && !matches!(host.hypervisor, crate::cpuid::Hypervisor::Emulated(_)),
        notes,
        root_kind: root.kind,
        root_path: root.path,
        root_attach: root.attach,
        files: Vec::new(),
        workload,
    })
}

/// `--vmm NAME` is that VMM, if this host can run it; `--vmm auto` the first of the registry that
/// fits this host ([`vmm::Driver::auto_fits`]).
fn choose_vmm(choice: VmmChoice, host: &HostOffer, native: bool, notes: &mut Vec<String>) -> Result<Vmm, Error> {
    match choice {
        VmmChoice::Named(vmm) => {
            vmm.chosen(host, notes)?;
            Ok(vmm)
        }
        VmmChoice::Auto => {
            let all = vmm::all();
            Ok(all.iter().copied().find(|v| v.auto_fits(host, native)).unwrap_or(all[all.len() - 1]))
        }
    }
}

/// `--kernel`, else the newest one in the kernel cache for this VMM and architecture.
fn find_kernel(o: &Options, host: &HostOffer, vmm: Vmm, arch: Arch) -> Result<PathBuf, Error> {
    match &o.kernel {
        Some(k) if k.is_file() => Ok(absolute(k)),
        Some(k) => Err(Error::missing_file("kernel", k, "pass an existing --kernel, or run `rootfs-builder kernel`")),
        None => {
            let file = vmm.kernel_file(arch);
            host.cache_root.as_deref().and_then(|r| crate::locate::default_kernel(r, arch, file)).ok_or_else(|| Error::Missing {
                what: format!(
                    "no {} kernel ({file}) in {}/kernels",
                    arch.name(),
                    host.cache_root.as_deref().map(|p| p.display().to_string()).unwrap_or_else(|| "the kernel cache".into())
                ),
                fix: format!("run `rootfs-builder kernel --arch {}`, or pass --kernel", arch.name()),
            })
        }
    }
}

/// `--initramfs`, checked to exist and to fit the kernel.
fn find_initramfs(o: &Options, kernel: &Path) -> Result<Option<PathBuf>, Error> {
    let Some(i) = &o.initramfs else {
        return Ok(None);
    };
    if !i.is_file() {
        return Err(Error::missing_file("initramfs", i, "run `rootfs-builder --initramfs <file>`"));
    }
    if !kernel_supports_initrd(kernel) {
        return Err(Error::Missing {
            what: format!("{} is built without initramfs support (CONFIG_BLK_DEV_INITRD)", kernel.display()),
            fix: "rebuild the kernel with CONFIG_BLK_DEV_INITRD=y, or boot from --rootfs alone".into(),
        });
    }
    Ok(Some(absolute(i)))
}

/// Waiting for chinit's agent needs a way to it: a network device or vsock.
fn check_reachable(wait: Wait, net: bool, vsock: bool) -> Result<(), Error> {
    if wait != Wait::Exit && !net && !vsock {
        return Err(Error::Usage(
            "no way to reach chinit: without a network device (--no-net) the guest needs vsock \
             (drop --no-vsock; QEMU also needs vhost-device-vsock: cargo install vhost-device-vsock)"
                .into(),
        ));
    }
    Ok(())
}

/// What `--dry-run` prints: the TAP setup, the helper, and the VMM command line.
pub fn dry_run_text(p: &Plan) -> String {
    let mut o = String::new();
    for n in &p.notes {
        o.push_str(&format!("# note: {n}\n"));
    }
    o.push_str(&format!("mkdir -p {}\n", p.run_dir.display()));
    if let (Some(net), Some(ip)) = (&p.tap, p.guest_ip) {
        for args in tap::setup_commands(&net.tap, ip, &net.mac) {
            o.push_str(&format!("ip {}\n", args.join(" ")));
        }
    }
    if let Some(v) = &p.vhost_argv {
        o.push_str(&format!("{} &\n", vmm::shell_line(v)));
    }
    if let Some(v) = &p.virtiofsd_argv {
        o.push_str(&format!("{} &\n", vmm::shell_line(v)));
    }
    o.push_str(&vmm::shell_line(&p.argv));
    // A VMM configured over its API once it runs: in the background, then its calls.
    let calls = p.vmm.api_script(&p.spec);
    if !calls.is_empty() {
        o.push_str(" &");
    }
    o.push('\n');
    for c in calls {
        o.push_str(&c);
        o.push('\n');
    }
    o
}

mod devices;
#[cfg(test)]
mod tests;

use devices::{attach_root, check_layout, wire_share, wire_vsock};
pub use devices::{is_gpt_disk, KUASAR_ROOTFLAGS, PMEM_UNIT, VIRTIOFSD};
