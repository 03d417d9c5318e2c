//! `host-probe check`: what this host has and lacks, each line with its fix.
//!
//! [`gather`] reads the host (files, `--version` of programs); [`lines`] is pure and decides.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::locate;
use crate::vmm::Vmm;

/// What backs /dev/kvm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvmKind {
    /// kvm_intel or kvm_amd: hardware virtualisation, every VMM runs Linux guests.
    Hardware(&'static str),
    /// kvm_pvm: software (nested) virtualisation; cloud-hypervisor and QEMU-KVM cannot run Linux guests
    /// on it, QEMU TCG can.
    Pvm,
    /// kvm is loaded but no vendor module is seen.
    Unknown,
    /// No kvm at all.
    Absent,
}

impl KvmKind {
    /// Whether a Linux guest runs under hardware KVM here.
    pub fn hardware(self) -> bool {
        matches!(self, KvmKind::Hardware(_))
    }
}

/// Decides the KVM kind from the names of loaded modules (`/sys/module/*`, `/proc/modules`).
pub fn kvm_kind<'a>(modules: impl IntoIterator<Item = &'a str>) -> KvmKind {
    let mut kind = KvmKind::Absent;
    for m in modules {
        match m {
            "kvm_pvm" => return KvmKind::Pvm,
            "kvm_intel" => kind = KvmKind::Hardware("kvm_intel"),
            "kvm_amd" => kind = KvmKind::Hardware("kvm_amd"),
            "kvm" if kind == KvmKind::Absent => kind = KvmKind::Unknown,
            _ => {}
        }
    }
    kind
}

/// The loaded modules of this host: `/sys/module` entries and `/proc/modules` first words.
pub fn host_modules() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir("/sys/module")
        .map(|d| d.filter_map(Result::ok).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    if let Ok(text) = std::fs::read_to_string("/proc/modules") {
        names.extend(text.lines().filter_map(|l| l.split_whitespace().next()).map(String::from));
    }
    names
}

/// This host's KVM kind.
pub fn host_kvm_kind() -> KvmKind {
    let m = host_modules();
    kvm_kind(m.iter().map(String::as_str))
}

/// Whether bit `cap` is set in the `CapEff:` line of a `/proc/<pid>/status` text.
pub fn has_capability(status: &str, cap: u32) -> bool {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|bits| bits & (1u64 << cap) != 0)
}

pub const CAP_NET_ADMIN: u32 = 12;

/// A program found, with the first line of its `--version`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program {
    pub path: PathBuf,
    pub version: Option<String>,
}

/// Facts read from the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    pub kvm: KvmKind,
    /// `Err(why)` when /dev/kvm cannot be opened read-write.
    pub kvm_access: Result<(), String>,
    /// Each VMM's program, if found, in the registry's order.
    pub vmms: Vec<(Vmm, Option<Program>)>,
    pub vhost_vsock: Option<Program>,
    pub tun: Result<(), String>,
    pub cap_net_admin: bool,
    pub ip_tool: Option<PathBuf>,
    pub mkfs_ext4: Option<PathBuf>,
    pub cache_root: Option<PathBuf>,
    /// The newest x86_64 kernel each VMM boots in the kernel cache ([`crate::vmm::Driver::kernel_file`]).
    pub kernels: Vec<(Vmm, Option<PathBuf>)>,
    pub image: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    /// Works, with a limit.
    Warn,
    Missing,
}

/// One line of `host-probe check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub status: Status,
    pub what: String,
    pub detail: String,
    pub fix: Option<String>,
}

/// A line: its status, what it is about, what was found, and the fix when it is not `ok`.
pub fn line(status: Status, what: &str, detail: String, fix: Option<&str>) -> Line {
    Line { status, what: what.to_string(), detail, fix: fix.map(String::from) }
}

/// A program as a line says it: its path and version.
pub fn program(p: Option<&Program>) -> String {
    match p {
        Some(Program { path, version: Some(v) }) => format!("{} ({v})", path.display()),
        Some(Program { path, version: None }) => format!("{} (version unknown)", path.display()),
        None => "not found".into(),
    }
}

/// The check, one line per piece.
pub fn lines(f: &Facts) -> Vec<Line> {
    use Status::*;
    let mut v = Vec::new();
    v.push(match f.kvm {
        KvmKind::Hardware(m) => line(Ok, "kvm", format!("hardware ({m})"), None),
        KvmKind::Pvm => line(
            Warn,
            "kvm",
            "kvm_pvm (software, nested): Linux guests boot only under QEMU TCG; timings are not representative".into(),
            Some("use a host with hardware virtualisation (kvm_intel/kvm_amd) for real figures"),
        ),
        KvmKind::Unknown => line(Warn, "kvm", "kvm loaded, no kvm_intel/kvm_amd seen".into(), Some("modprobe kvm_intel (or kvm_amd)")),
        KvmKind::Absent => line(
            Missing,
            "kvm",
            "no kvm module: QEMU TCG only".into(),
            Some("modprobe kvm_intel (or kvm_amd), or enable virtualisation in the firmware"),
        ),
    });
    if f.kvm != KvmKind::Absent {
        v.push(match &f.kvm_access {
            Result::Ok(()) => line(Ok, "/dev/kvm", "read-write".into(), None),
            Err(e) => line(Missing, "/dev/kvm", e.clone(), Some("run as root or add yourself to the kvm group")),
        });
    }
    for (vmm, p) in &f.vmms {
        v.push(vmm.check_line(p.as_ref(), f.kvm));
    }
    v.push(match &f.vhost_vsock {
        Some(_) => line(Ok, "vhost-device-vsock", program(f.vhost_vsock.as_ref()), None),
        None => line(
            Warn,
            "vhost-device-vsock",
            "not found: QEMU runs without vsock (no notify, /ready over TAP only)".into(),
            Some("cargo install vhost-device-vsock"),
        ),
    });
    v.push(match &f.tun {
        Result::Ok(()) => line(Ok, "/dev/net/tun", "usable".into(), None),
        Err(e) => line(Missing, "/dev/net/tun", e.clone(), Some("modprobe tun; mknod /dev/net/tun c 10 200")),
    });
    v.push(if f.cap_net_admin {
        line(Ok, "CAP_NET_ADMIN", "yes (TAPs can be made)".into(), None)
    } else {
        line(Missing, "CAP_NET_ADMIN", "no: cannot create the TAP".into(), Some("run as root (sudo host-probe ...)"))
    });
    v.push(match &f.ip_tool {
        Some(p) => line(Ok, "ip", p.display().to_string(), None),
        None => line(Missing, "ip", "iproute2 not found".into(), Some("apt-get install iproute2")),
    });
    v.push(match &f.mkfs_ext4 {
        Some(p) => line(Ok, "e2fsprogs", p.display().to_string(), None),
        None => line(Missing, "e2fsprogs", "mkfs.ext4 not found (rootfs-builder needs it)".into(), Some("apt-get install e2fsprogs")),
    });
    let cache = f.cache_root.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "(no cache root: set $CHINIT_CACHE)".into());
    // The kernels of the VMMs that boot without hardware KVM first: those `check` needs.
    let mut kernels: Vec<&(Vmm, Option<PathBuf>)> = f.kernels.iter().collect();
    kernels.sort_by_key(|(vmm, _)| vmm.needs_hardware_kvm());
    for (vmm, file) in kernels {
        let what = format!("kernel ({})", vmm.name());
        v.push(match file {
            Some(p) => line(Ok, &what, p.display().to_string(), None),
            None => line(Missing, &what, format!("none in {cache}/kernels"), Some("run `rootfs-builder kernel`")),
        });
    }
    v.push(match &f.image {
        Some(p) => line(Ok, "image", p.display().to_string(), None),
        None => line(
            Missing,
            "image",
            format!("no {} in the current directory", locate::DEFAULT_IMAGE),
            Some("run `rootfs-builder --out rootfs_fast.ext4` (or pass --rootfs / --initramfs)"),
        ),
    });
    v
}

/// Whether a boot can run with these facts: every VMM that needs no hardware KVM (QEMU) has its
/// program and its kernel, and there are an image and a TAP.
pub fn can_boot(f: &Facts) -> bool {
    let anywhere = |vmm: &Vmm| !vmm.needs_hardware_kvm();
    f.vmms.iter().filter(|(v, _)| anywhere(v)).all(|(_, p)| p.is_some())
        && f.kernels.iter().filter(|(v, _)| anywhere(v)).all(|(_, k)| k.is_some())
        && f.image.is_some()
        && f.tun.is_ok()
        && f.cap_net_admin
        && f.ip_tool.is_some()
}

/// Renders the lines.
pub fn render(lines: &[Line]) -> String {
    let mut o = String::new();
    for l in lines {
        let tag = match l.status {
            Status::Ok => "ok  ",
            Status::Warn => "warn",
            Status::Missing => "MISS",
        };
        o.push_str(&format!("{tag} {:<26} {}\n", l.what, l.detail));
        if let Some(fix) = &l.fix {
            o.push_str(&format!("     {:<26} fix: {fix}\n", ""));
        }
    }
    o
}

/// The first line of `program --version`; `None` also when it does not answer within 10 s. Asked
/// once per program (its path, size and modification time) in a process: planning many copies or
/// many boots checks the same VMM each time.
pub fn version_of(path: &Path) -> Option<String> {
    version_by(path, "--version")
}

/// [`version_of`] for a program that takes another flag (`flag`) for it.
pub fn version_by(path: &Path, flag: &'static str) -> Option<String> {
    type Key = (PathBuf, &'static str, Option<(u64, std::time::SystemTime)>);
    static ASKED: std::sync::Mutex<Vec<(Key, Option<String>)>> = std::sync::Mutex::new(Vec::new());
    let key: Key = (path.to_path_buf(), flag, std::fs::metadata(path).ok().and_then(|m| Some((m.len(), m.modified().ok()?))));
    if let Some((_, v)) = ASKED.lock().unwrap_or_else(|e| e.into_inner()).iter().find(|(k, _)| *k == key) {
        return v.clone();
    }
    let v = ask_version(path, flag);
    ASKED.lock().unwrap_or_else(|e| e.into_inner()).push((key, v.clone()));
    v
}

fn ask_version(path: &Path, flag: &str) -> Option<String> {
    let out = crate::bounded::output_within(Command::new(path).arg(flag), Duration::from_secs(10)).ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines().next().map(|l| l.trim().to_string()).filter(|l| !l.is_empty())
}

fn found(p: Option<PathBuf>) -> Option<Program> {
    p.map(|path| Program { version: version_of(&path), path })
}

/// A VMM's program with its version as the VMM asks for it ([`crate::vmm::Driver::version_line`]).
fn found_vmm(vmm: Vmm, p: Option<PathBuf>) -> Option<Program> {
    p.map(|path| Program { version: vmm.version_line(&path), path })
}

fn open_rw(path: &str) -> Result<(), String> {
    std::fs::OpenOptions::new().read(true).write(true).open(path).map(drop).map_err(|e| format!("{path}: {e}"))
}

/// `vmm`'s program for guests of `arch`, as it finds it.
fn located(vmm: Vmm, arch: rootfs_builder::elf::Arch) -> Option<PathBuf> {
    let name = vmm.program_name(arch);
    vmm.locate().into_iter().find(|(n, _)| *n == name).map(|(_, p)| p)
}

/// Reads this host.
pub fn gather() -> Facts {
    let kvm = host_kvm_kind();
    let cache_root = locate::this_cache_root();
    let x86 = rootfs_builder::elf::Arch::X86_64;
    let k = |vmm: &Vmm| cache_root.as_deref().and_then(|r| locate::default_kernel(r, x86, vmm.kernel_file(x86)));
    Facts {
        kvm,
        kvm_access: open_rw("/dev/kvm"),
        vmms: crate::vmm::all().iter().map(|v| (*v, found_vmm(*v, located(*v, x86)))).collect(),
        vhost_vsock: found(locate::which(locate::VHOST_VSOCK)),
        tun: open_rw("/dev/net/tun"),
        cap_net_admin: std::fs::read_to_string("/proc/self/status").map(|s| has_capability(&s, CAP_NET_ADMIN)).unwrap_or(false),
        ip_tool: locate::which("ip"),
        mkfs_ext4: locate::which("mkfs.ext4"),
        kernels: crate::vmm::all().iter().map(|v| (*v, k(v))).collect(),
        image: Some(PathBuf::from(locate::DEFAULT_IMAGE)).filter(|p| p.is_file()),
        cache_root,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kvm_kind_from_module_lists() {
        let cases: [(&[&str], KvmKind); 6] = [
            (&["kvm", "kvm_pvm"], KvmKind::Pvm),
            (&["kvm_intel", "kvm", "kvm_pvm"], KvmKind::Pvm),
            (&["kvm", "kvm_intel"], KvmKind::Hardware("kvm_intel")),
            (&["kvm_amd", "kvm"], KvmKind::Hardware("kvm_amd")),
            (&["kvm", "tun"], KvmKind::Unknown),
            (&["tun", "loop"], KvmKind::Absent),
        ];
        for (mods, want) in cases {
            assert_eq!(kvm_kind(mods.iter().copied()), want, "{mods:?}");
        }
        assert!(KvmKind::Hardware("kvm_amd").hardware() && !KvmKind::Pvm.hardware());
    }

    #[test]
    fn capability_bits_from_status() {
        let root = "Name:\tx\nCapEff:\t000001ffffffffff\n";
        let none = "CapEff:\t0000000000000000\n";
        let only_net_admin = "CapEff:\t0000000000001000\n";
        assert!(has_capability(root, CAP_NET_ADMIN));
        assert!(!has_capability(none, CAP_NET_ADMIN));
        assert!(has_capability(only_net_admin, CAP_NET_ADMIN));
        assert!(!has_capability("garbage", CAP_NET_ADMIN));
    }

    fn facts() -> Facts {
        let prog = |p: &str, v: &str| Some(Program { path: p.into(), version: Some(v.into()) });
        Facts {
            kvm: KvmKind::Pvm,
            kvm_access: Ok(()),
            vmms: vec![
                (crate::vmm::cloud_hypervisor::VMM, prog("/usr/bin/cloud-hypervisor", "cloud-hypervisor v53.0")),
                (crate::vmm::qemu::VMM, prog("/usr/bin/qemu-system-x86_64", "QEMU emulator version 7.2.22")),
            ],
            vhost_vsock: None,
            tun: Ok(()),
            cap_net_admin: true,
            ip_tool: Some("/usr/sbin/ip".into()),
            mkfs_ext4: Some("/usr/sbin/mkfs.ext4".into()),
            cache_root: Some("/c".into()),
            kernels: vec![
                (crate::vmm::cloud_hypervisor::VMM, None),
                (crate::vmm::qemu::VMM, Some("/c/kernels/x86_64-6.1-ab/bzImage".into())),
            ],
            image: None,
        }
    }

    #[test]
    fn every_missing_piece_has_its_fix() {
        let f = facts();
        let l = lines(&f);
        let get = |what: &str| l.iter().find(|x| x.what == what).unwrap().clone();
        assert_eq!(get("kvm").status, Status::Warn);
        assert!(get("kvm").detail.contains("kvm_pvm"));
        assert!(get("cloud-hypervisor").detail.contains("cannot boot Linux"));
        assert_eq!(get("qemu").status, Status::Ok);
        assert_eq!(get("vhost-device-vsock").fix.as_deref(), Some("cargo install vhost-device-vsock"));
        assert_eq!(get("kernel (cloud-hypervisor)").fix.as_deref(), Some("run `rootfs-builder kernel`"));
        assert_eq!(get("kernel (qemu)").status, Status::Ok);
        assert!(get("image").fix.unwrap().contains("rootfs-builder --out rootfs_fast.ext4"));
        for x in &l {
            assert!(x.status != Status::Missing || x.fix.is_some(), "{x:?}");
        }
        assert!(!can_boot(&f), "no image");
        let ok = Facts { image: Some("rootfs_fast.ext4".into()), ..f };
        assert!(can_boot(&ok));
        let text = render(&lines(&ok));
        assert!(text.contains("MISS kernel (cloud-hypervisor)"), "{text}");
        assert!(text.contains("fix: run `rootfs-builder kernel`"), "{text}");
    }

    #[test]
    fn hardware_kvm_makes_cloud_hypervisor_usable() {
        let f = Facts { kvm: KvmKind::Hardware("kvm_intel"), ..facts() };
        let l = lines(&f);
        let ch = l.iter().find(|x| x.what == "cloud-hypervisor").unwrap();
        assert_eq!(ch.status, Status::Ok);
        assert_eq!(ch.detail, "/usr/bin/cloud-hypervisor (cloud-hypervisor v53.0)");
    }
}
