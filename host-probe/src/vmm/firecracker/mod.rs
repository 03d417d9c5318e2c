//! Firecracker (v1.16) as host-probe drives it: the machine of a [`Spec`] as the API calls that
//! make it ([`api_calls`]; no config-file boot: docs/host-probe.md says why), the command line
//! ([`argv`]), the snapshot bodies, the version check, the boot timer's log line ([`log`]) and the
//! API client ([`api`]). All but the client are pure.
//!
//! Its [`Driver`] ([`VMM`]): KVM only, guests of the host's architecture, its own hybrid vsock, the
//! API socket boot (every call of [`api_calls`] once it listens), no port-0x80 marks, power-off by a
//! CPU reset (`chinit.poweroff=reboot`: it has no ACPI power-off but exits when its guest resets),
//! snapshots by `PATCH /vm` and `PUT /snapshot/create`, copies by `PUT /snapshot/load` in a fresh
//! Firecracker.
//!
//! What Firecracker cannot do is refused with the fix ([`refuse`]): a virtio console, virtio-fs, a
//! vsock other than its own hybrid one, a guest of another architecture, a kernel it cannot load
//! ([`check_kernel`]). The JSON field names are those of v1.16.1's
//! `src/firecracker/swagger/firecracker.yaml` and `src/vmm/src/vmm_config/*.rs` (most of which deny
//! unknown fields).

pub mod api;
pub mod log;

use std::path::{Path, PathBuf};
use std::time::Duration;

use rootfs_builder::elf::Arch;
use serde_json::{json, Value};

use super::kernel::KernelKind;
use super::{Accel, Console, Driver, Feature, Marks, MemoryRestoreMode, Pinned, Role, Root, Spec, Vmm, Vsock, Wired};
use crate::check::{self, KvmKind, Program};
use crate::error::Error;
use crate::launch::{Captured, Phase, Running};
use crate::options::HostOffer;
use crate::plan::{Plan, GUEST_CID};

/// Firecracker.
pub const VMM: Vmm = Vmm::new(&Firecracker);

/// Its name, and the program's.
pub const NAME: &str = "firecracker";

/// How to get it, in fixes.
const GET_IT: &str = "set $FIRECRACKER to Firecracker v1.16's binary (its releases on GitHub: \
                      firecracker-v1.16.1-x86_64), or put it on PATH";

/// How it is found, its version read and judged, and named.
const PINNED: Pinned =
    Pinned { name: NAME, label: "Firecracker", env: "FIRECRACKER", flag: "--version", get_it: GET_IT, version, supported };

/// The files of its snapshot, besides the manifest.
const SNAPSHOT_FILES: &[&str] = &[STATE_FILE, MEMORY_FILE];

/// Kernel parameters of its own. `reboot=k`: the guest resets through the i8042's reset line,
/// which Firecracker ends on with exit code 0 (a triple fault, `reboot=t`, ends it with "Unexpected
/// exit reason on vcpu run: Shutdown" and exit code 1); the later `reboot=` wins. `pci=off`: it has
/// no PCI bus (the guest's probes of 0xcf8 only fill its log).
const KERNEL_ARGS: &str = "reboot=k pci=off";

/// Where its one mark comes from, in the words of the report.
pub const BOOT_TIMER_SOURCE: &str = "boot timer (Firecracker logs no port-0x80 writes; chinit writes its boot timer at ready)";

pub struct Firecracker;

/// Its program: `$FIRECRACKER`, else on PATH.
pub fn find() -> Option<PathBuf> {
    PINNED.find()
}

/// The instance id of a run: its run directory's name (`host-probe-PID-SEQ`), the API socket's
/// folder, as Firecracker's `--id` takes it (letters, digits and `-`, at most 64).
pub fn instance_id_of(spec: &Spec) -> String {
    let dir = spec.api_socket.parent().and_then(Path::file_name).map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let id: String = dir.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).take(64).collect();
    if id.is_empty() {
        "host-probe".into()
    } else {
        id
    }
}

/// Whether the program at `path` is a Firecracker host-probe drives: its `--version` says
/// Firecracker v1.16.x. The error names what it is and the fix.
pub fn check_program(path: &Path, version_output: Option<&str>) -> Result<(), Error> {
    PINNED.check_program(path, version_output)
}

/// The lines `--dry-run` prints for the API calls: each a `curl` on the API socket.
pub fn curl_lines(socket: &Path, calls: &[Call]) -> Vec<String> {
    calls
        .iter()
        .map(|c| {
            let mut a: Vec<String> = vec![
                "curl".into(),
                "-sf".into(),
                "--unix-socket".into(),
                socket.display().to_string(),
                "-X".into(),
                c.method.name().into(),
                format!("http://localhost{}", c.path),
            ];
            if let Some(b) = &c.body {
                a.extend(["-H".into(), "Content-Type: application/json".into(), "-d".into(), b.to_string()]);
            }
            super::shell_line(&a)
        })
        .collect()
}

impl Driver for Firecracker {
    fn name(&self) -> &'static str {
        NAME
    }

    fn program_var(&self) -> Option<&'static str> {
        Some(PINNED.env)
    }

    fn locate(&self) -> Vec<(&'static str, PathBuf)> {
        find().map(|p| (NAME, p)).into_iter().collect()
    }

    /// Only where `--vmm auto` would otherwise fail: hardware KVM, a guest of the host's
    /// architecture, Firecracker here and neither cloud-hypervisor (which comes first) nor QEMU's
    /// program for this architecture. It never takes a host QEMU or cloud-hypervisor would run.
    fn auto_fits(&self, host: &HostOffer, native: bool) -> bool {
        super::fits_only_without_qemu(host, native, NAME)
    }

    fn chosen(&self, host: &HostOffer, notes: &mut Vec<String>) -> Result<(), Error> {
        let missing = PINNED.not_found(format!("{GET_IT}; or use --vmm qemu"));
        super::kvm_only_chosen(host, NAME, PINNED.label, missing, notes)
    }

    fn program_name(&self, _arch: Arch) -> &'static str {
        NAME
    }

    /// KVM only, on the host's architecture; its `--version` must say v1.16.x.
    fn runs(&self, host: &HostOffer, arch: Arch, _notes: &mut Vec<String>) -> Result<(PathBuf, Accel), Error> {
        super::native_only(PINNED.label, host, arch)?;
        let bin = host.program(VMM, arch).ok_or_else(|| PINNED.not_found(GET_IT.into()))?;
        check_program(&bin, crate::check::version_of(&bin).as_deref())?;
        Ok((bin, Accel::Kvm))
    }

    /// The ELF `vmlinux` on x86_64 (it loads no bzImage), the `Image` on aarch64.
    fn kernel_file(&self, arch: Arch) -> &'static str {
        match arch {
            Arch::X86_64 => "vmlinux",
            Arch::Aarch64 => "Image",
        }
    }

    fn needs_hardware_kvm(&self) -> bool {
        true
    }

    fn check_line(&self, program: Option<&Program>, kvm: KvmKind) -> check::Line {
        PINNED.check_line(program, kvm)
    }

    /// pmem it has (read-only); Kuasar's layout needs hvc0 and virtio-fs, which it has not.
    fn cannot(&self, what: Feature) -> Option<&'static str> {
        match what {
            Feature::PmemRoot => None,
            Feature::KuasarLayout => {
                Some("--layout kuasar needs a virtio console (hvc0) and virtio-fs, which Firecracker has not: pass --vmm cloud-hypervisor")
            }
            Feature::Share => Some("Firecracker has no virtio-fs device: drop --share, or pass --vmm cloud-hypervisor"),
        }
    }

    /// Its own hybrid vsock: a Unix socket it binds in the run directory.
    fn wire_vsock(&self, _host: &HostOffer, run_dir: &Path, _ids: (u32, u32), _notes: &mut Vec<String>) -> Wired {
        let uds = run_dir.join("vsock.sock");
        Wired::hybrid(Vsock::Hybrid { cid: GUEST_CID, socket: uds.clone() }, None, &uds)
    }

    /// With its API socket, configured by [`Driver::configure`]; the kernel is checked to be one it loads.
    fn argv(&self, spec: &Spec) -> Result<Vec<String>, String> {
        refuse(spec, crate::locate::host_arch())?;
        if !matches!(spec.role, Role::Restore { .. }) {
            check_kernel_file(&spec.kernel, spec.arch)?;
        }
        argv(spec, &instance_id_of(spec))
    }

    fn api_script(&self, spec: &Spec) -> Vec<String> {
        let mut lines = vec![format!(": > {}", super::shell_quote(&spec.serial.display().to_string()))];
        lines.extend(api_calls(spec).map(|c| curl_lines(&spec.api_socket, &c)).unwrap_or_default());
        lines
    }

    fn powers_off_by_reset(&self) -> bool {
        true
    }

    fn kernel_args(&self, _arch: Arch) -> &'static str {
        KERNEL_ARGS
    }

    /// Once it listens: the console file, then every call of [`api_calls`], `InstanceStart` last.
    fn configure(&self, running: &mut Running, phase: &Phase) -> Result<(), Error> {
        let spec = running.plan().spec.clone();
        start_over_api(running, &spec, phase)
    }

    /// It logs no port-0x80 writes.
    fn debugcon<'a>(&self, _spec: &'a Spec) -> Option<&'a Path> {
        None
    }

    /// It exits when its guest resets.
    fn guest_reset(&self, _spec: &Spec) -> bool {
        false
    }

    /// Its boot timer device (`--boot-timer`).
    fn boot_timer(&self, arch: Arch) -> Option<u64> {
        Some(match arch {
            Arch::X86_64 => log::BOOT_TIMER_X86_64,
            Arch::Aarch64 => log::BOOT_TIMER_AARCH64,
        })
    }

    /// It logs no port-0x80 writes; chinit's write to the boot timer at ready is the one mark.
    fn marks(&self, _spec: &Spec, c: &Captured) -> Marks {
        match log::boot_timer_us(&c.vmm_log) {
            Some(t_us) => Marks {
                marks: vec![crate::measure::Mark { code: agent::marks::READY, t_us }],
                source: BOOT_TIMER_SOURCE,
                ..Marks::default()
            },
            None => Marks {
                source: "none (Firecracker logs no port-0x80 writes, and its boot timer logged no guest write)",
                ..Marks::default()
            },
        }
    }

    /// Its first ERROR line and the lines after it.
    fn first_error(&self, text: &str) -> Option<String> {
        let start = text.lines().position(|l| log::line(l).is_some_and(|l| l.level == Some("ERROR")))?;
        Some(text.lines().skip(start).filter(|l| !l.trim().is_empty()).take(6).collect::<Vec<_>>().join("\n"))
    }

    /// Its vsock is always its own, which it saves.
    fn snapshot_refusal(&self, _spec: &Spec) -> Option<Error> {
        None
    }

    fn snapshot_files(&self) -> &'static [&'static str] {
        SNAPSHOT_FILES
    }

    /// `PATCH /vm Paused`, then `PUT /snapshot/create` (Full) into `out`; phases of `timeout` each.
    fn save(&self, running: &mut Running, out: &Path, timeout: Duration) -> Result<(Duration, Duration), Error> {
        let socket = running.plan().spec.api_socket.clone();
        let phase = Phase::start("snapshot pause", timeout);
        let t = std::time::Instant::now();
        let r = api::send(&socket, &Call::patch("/vm", pause_body()), phase.deadline);
        running.call(&phase, "Firecracker's API (PATCH /vm Paused)", r)?;
        let pause = t.elapsed();
        let phase = Phase::start("snapshot save", timeout);
        let t = std::time::Instant::now();
        let (state, memory) = snapshot_files(out);
        let r = api::send(&socket, &Call::put("/snapshot/create", snapshot_create_body(&state, &memory)), phase.deadline);
        running.call(&phase, "Firecracker's API (PUT /snapshot/create)", r)?;
        Ok((pause, t.elapsed()))
    }

    /// It is gone: its files go to disk now.
    fn saved(&self, out: &Path) -> Result<(), Error> {
        for f in SNAPSHOT_FILES {
            let p = out.join(f);
            std::fs::File::open(&p).and_then(|f| f.sync_all()).map_err(Error::io(format!("sync {}", p.display())))?;
        }
        Ok(())
    }

    /// Its File backend maps the memory file copy-on-write: no mode to choose.
    fn restore_mode(&self, asked: Option<MemoryRestoreMode>) -> Result<Option<MemoryRestoreMode>, Error> {
        match asked {
            Some(_) => Err(Error::Usage(
                "--memory-restore-mode is cloud-hypervisor's: Firecracker maps the snapshot's memory file copy-on-write \
                 and reads pages as the guest touches them (its File backend): drop --memory-restore-mode"
                    .into(),
            )),
            None => Ok(None),
        }
    }

    fn restorable_vsock(&self) -> &'static str {
        "hybrid"
    }

    /// A fresh Firecracker with its API socket; [`Driver::resume_copy`] loads the snapshot.
    fn restore_copy(&self, p: &mut Plan, dir: &Path, mode: MemoryRestoreMode, _config: Option<&str>) -> Result<(), Error> {
        p.spec.role = Role::Restore { from: dir.to_path_buf(), memory: dir.join(MEMORY_FILE), qmp: PathBuf::new(), mode };
        p.argv = argv(&p.spec, &instance_id_of(&p.spec)).map_err(|e| super::unrestorable(dir, &e))?;
        Ok(())
    }

    /// Once it listens: the console file, then `PUT /snapshot/load` with the copy's TAP and vsock
    /// socket, resumed.
    fn resume_copy(&self, running: &mut Running, _dir: &Path, phase: &Phase) -> Result<(), Error> {
        let spec = running.plan().spec.clone();
        start_over_api(running, &spec, phase)
    }
}

/// The console file (Firecracker's `PUT /serial` opens it, it does not make it), the API socket
/// listening, then the calls in order.
fn start_over_api(running: &mut Running, spec: &Spec, phase: &Phase) -> Result<(), Error> {
    let calls = api_calls(spec).map_err(Error::Usage)?;
    std::fs::File::create(&spec.serial).map_err(Error::io(format!("create {}", spec.serial.display())))?;
    let socket = spec.api_socket.clone();
    running.wait_in(phase, &format!("Firecracker's API socket {}", socket.display()), Duration::from_millis(2), |left| {
        api::wait_listening(&socket, std::time::Instant::now() + left.min(Duration::from_millis(250))).map_err(|e| e.to_string())
    })?;
    for c in &calls {
        let r = api::send(&socket, c, phase.deadline);
        running.call(phase, &format!("Firecracker's API ({c})"), r)?;
    }
    Ok(())
}

/// The guest's one network interface (`iface_id`), also what a restore's `network_overrides` names.
pub const IFACE_ID: &str = "eth0";
/// The root disk's or pmem's id.
pub const ROOT_ID: &str = "root";
/// A snapshot's files in its directory: the machine's state and its memory.
pub const STATE_FILE: &str = "state";
pub const MEMORY_FILE: &str = "memory";

/// The most vCPUs Firecracker gives a guest (`MAX_SUPPORTED_VCPUS`).
pub const MAX_VCPUS: u32 = 32;

/// An HTTP method of Firecracker's API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Put,
    Patch,
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
        }
    }
}

/// One request to Firecracker's API socket.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub method: Method,
    pub path: String,
    pub body: Option<Value>,
}

impl Call {
    pub fn put(path: &str, body: Value) -> Call {
        Call { method: Method::Put, path: path.to_string(), body: Some(body) }
    }

    pub fn patch(path: &str, body: Value) -> Call {
        Call { method: Method::Patch, path: path.to_string(), body: Some(body) }
    }

    pub fn get(path: &str) -> Call {
        Call { method: Method::Get, path: path.to_string(), body: None }
    }
}

impl std::fmt::Display for Call {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.method.name(), self.path)
    }
}

/// Why a `Spec` cannot be run by Firecracker, with the fix. `host` is the architecture Firecracker
/// runs on (KVM only: the guest's must be the same).
pub fn refuse(spec: &Spec, host: Arch) -> Result<(), String> {
    if spec.arch != host {
        return Err(format!(
            "Firecracker runs guests of its host's architecture only (KVM, no emulation): a {} guest on this {} host \
             needs --vmm qemu (TCG)",
            spec.arch.name(),
            host.name()
        ));
    }
    if spec.console == Console::Virtio {
        return Err("Firecracker has no virtio console (hvc0): use the serial console (ttyS0), or --vmm cloud-hypervisor".into());
    }
    if spec.fs.is_some() {
        return Err("Firecracker has no virtio-fs device: drop --share, or use --vmm cloud-hypervisor".into());
    }
    match &spec.vsock {
        None | Some(Vsock::Hybrid { .. }) => {}
        Some(Vsock::VhostUser { .. } | Vsock::Kernel { .. }) => {
            return Err("Firecracker's vsock is its own hybrid one (a Unix socket, CONNECT <port>): \
                        no vhost-user or kernel (vhost-vsock) vsock"
                .into())
        }
    }
    if !(1..=MAX_VCPUS).contains(&spec.cpus) {
        return Err(format!("Firecracker gives a guest 1 to {MAX_VCPUS} vCPUs, not {}", spec.cpus));
    }
    if matches!(spec.root, Root::Initramfs(_)) && spec.initramfs.is_some() {
        return Err("Firecracker takes one initrd: an initramfs root and an initramfs in front of it are two".into());
    }
    Ok(())
}

/// Whether Firecracker on `arch` loads a kernel of this kind: on x86_64 only an ELF `vmlinux`
/// (its loader is linux-loader's `Elf`; Linux, or a PVH ELF), on aarch64 the `Image` (`PE`).
pub fn check_kernel(kind: KernelKind, arch: Arch) -> Result<(), String> {
    match (arch, kind) {
        (Arch::X86_64, KernelKind::Elf(62)) | (Arch::Aarch64, KernelKind::ArmImage) => Ok(()),
        (Arch::X86_64, KernelKind::BzImage) => {
            Err("Firecracker boots the uncompressed ELF vmlinux on x86_64, not a bzImage: give --kernel the vmlinux \
                 the kernel build left next to it"
                .into())
        }
        (Arch::X86_64, _) => Err("Firecracker boots an x86_64 ELF vmlinux on x86_64: this kernel is not one".into()),
        (Arch::Aarch64, _) => Err("Firecracker boots an arm64 Image on aarch64: this kernel is not one".into()),
    }
}

/// [`check_kernel`] of a file.
pub fn check_kernel_file(path: &Path, arch: Arch) -> Result<(), String> {
    check_kernel(super::kernel::kind_of_file(path)?, arch).map_err(|e| format!("{}: {e}", path.display()))
}

fn path(p: &Path) -> Value {
    Value::String(p.display().to_string())
}

/// `boot-source`: the kernel, its command line as given (Firecracker appends its virtio-mmio
/// devices), and the initrd: the initramfs root, or an initramfs in front of a disk or pmem root.
fn boot_source(spec: &Spec) -> Value {
    let mut b = json!({ "kernel_image_path": path(&spec.kernel), "boot_args": spec.cmdline });
    let initrd = match &spec.root {
        Root::Initramfs(p) => Some(p),
        _ => spec.initramfs.as_ref(),
    };
    if let Some(i) = initrd {
        b["initrd_path"] = path(i);
    }
    b
}

fn machine_config(spec: &Spec) -> Value {
    json!({ "vcpu_count": spec.cpus, "mem_size_mib": spec.memory_mib })
}

/// The root, read-only. Not Firecracker's root device: with `is_root_device` (`root_device`)
/// Firecracker appends `root=/dev/vda ro` (`/dev/pmem0`) to the command line, which would override
/// the command line's own `root=` (a partition, `/dev/vda1`) or, behind an initramfs, name a root the
/// kernel need not mount. The command line ([`crate::cmdline`]) always says where the root is.
///
/// A read-only pmem maps the image read-only; a guest write is discarded on x86_64 (with a warning
/// in Firecracker's log) and stops the VM on aarch64. The guest mounts it `ro`.
fn root_device(spec: &Spec) -> Option<(&'static str, Value)> {
    match &spec.root {
        Root::Disk(p) => Some((
            "drives",
            json!({ "drive_id": ROOT_ID, "path_on_host": path(p), "is_root_device": false, "is_read_only": !spec.root_writable }),
        )),
        Root::Pmem(p) => Some(("pmem", json!({ "id": ROOT_ID, "path_on_host": path(p), "root_device": false, "read_only": true }))),
        Root::Initramfs(_) => None,
    }
}

fn network_interface(spec: &Spec) -> Option<Value> {
    spec.net.as_ref().map(|n| json!({ "iface_id": IFACE_ID, "host_dev_name": n.tap, "guest_mac": n.mac }))
}

/// Firecracker binds `uds_path` itself (it must not exist); a guest's connection to host port P
/// goes to a listener at `<uds_path>_P`.
fn vsock(spec: &Spec) -> Option<Value> {
    match &spec.vsock {
        Some(Vsock::Hybrid { cid, socket }) => Some(json!({ "guest_cid": cid, "uds_path": path(socket) })),
        _ => None,
    }
}

/// The API calls that make the machine of `spec` and start it, in order, ending with
/// `PUT /actions InstanceStart`; for a copy (`Role::Restore`), the calls that load the snapshot
/// in `from` into this fresh Firecracker with this copy's TAP, vsock socket and console, resumed.
/// The console file must exist (Firecracker's `/serial` wants a file made beforehand).
pub fn api_calls(spec: &Spec) -> Result<Vec<Call>, String> {
    refuse(spec, crate::locate::host_arch())?;
    let serial = Call::put("/serial", json!({ "serial_out_path": path(&spec.serial) }));
    if let Role::Restore { from, mode, .. } = &spec.role {
        match mode {
            MemoryRestoreMode::Copy => {}
            MemoryRestoreMode::Ondemand => {
                return Err("Firecracker maps a snapshot's memory file copy-on-write and reads pages as the guest touches \
                            them (its File backend); its on-demand backend (Uffd) needs a page-fault handler process \
                            host-probe does not run: drop --memory-restore-mode"
                    .into())
            }
        }
        let (state, memory) = snapshot_files(from);
        let tap = spec.net.as_ref().map(|n| (IFACE_ID, n.tap.as_str()));
        let uds = match &spec.vsock {
            Some(Vsock::Hybrid { socket, .. }) => Some(socket.as_path()),
            _ => None,
        };
        // The logger and the console are not in a snapshot; both may be set before the load, nothing else.
        return Ok(vec![serial, Call::put("/snapshot/load", snapshot_load_body(&state, &memory, tap, uds))]);
    }
    let mut calls = vec![Call::put("/boot-source", boot_source(spec)), Call::put("/machine-config", machine_config(spec))];
    match root_device(spec) {
        Some(("pmem", dev)) => calls.push(Call::put(&format!("/pmem/{ROOT_ID}"), dev)),
        Some((_, dev)) => calls.push(Call::put(&format!("/drives/{ROOT_ID}"), dev)),
        None => {}
    }
    if let Some(n) = network_interface(spec) {
        calls.push(Call::put(&format!("/network-interfaces/{IFACE_ID}"), n));
    }
    if let Some(v) = vsock(spec) {
        calls.push(Call::put("/vsock", v));
    }
    if spec.rng {
        calls.push(Call::put("/entropy", json!({})));
    }
    calls.push(serial);
    calls.push(Call::put("/actions", instance_start_body()));
    Ok(calls)
}

/// The command line, program first: its API on `spec.api_socket`, which configures the machine
/// ([`api_calls`]). `id` names the instance in every log line (1 to 64 ASCII letters, digits and
/// `-`).
///
/// The logger is set here, not over the API: `spec.log_file` at level Info (the boot timer's
/// line), each line with its level; set once, as Firecracker opens the file again at offset 0 for
/// each configuration. `--boot-timer` adds the device a guest writes 123 to when it is ready
/// ([`log::boot_time`]).
pub fn argv(spec: &Spec, id: &str) -> Result<Vec<String>, String> {
    instance_id(id)?;
    let mut a: Vec<String> = vec![spec.binary.display().to_string()];
    push(&mut a, "--id", id.to_string());
    push(&mut a, "--api-sock", spec.api_socket.display().to_string());
    push(&mut a, "--log-path", spec.log_file.display().to_string());
    push(&mut a, "--level", "Info".into());
    a.push("--show-level".into());
    a.push("--boot-timer".into());
    Ok(a)
}

/// Firecracker's rule for `--id` (`validate_instance_id`): 1 to 64 characters, alphanumeric or `-`.
/// Firecracker panics on any other; ASCII only here, as the id is also a file-name part.
pub fn instance_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(format!("a Firecracker instance id is 1 to 64 letters, digits and '-': not {id:?}"));
    }
    Ok(())
}

fn push(a: &mut Vec<String>, key: &str, value: String) {
    a.push(key.to_string());
    a.push(value);
}

/// A snapshot's state and memory files in its directory.
pub fn snapshot_files(dir: &Path) -> (PathBuf, PathBuf) {
    (dir.join(STATE_FILE), dir.join(MEMORY_FILE))
}

/// `PUT /actions`: start the configured machine.
pub fn instance_start_body() -> Value {
    json!({ "action_type": "InstanceStart" })
}

/// `PATCH /vm`: pause the vCPUs (before a snapshot).
pub fn pause_body() -> Value {
    json!({ "state": "Paused" })
}

/// `PUT /snapshot/create` of a paused machine: a full snapshot, its state and its whole memory.
pub fn snapshot_create_body(state: &Path, memory: &Path) -> Value {
    json!({ "snapshot_type": "Full", "snapshot_path": path(state), "mem_file_path": path(memory) })
}

/// `PUT /snapshot/load` into a fresh Firecracker (nothing configured but its logger and console),
/// resumed at once, its memory the file mapped private (the File backend: pages read as the guest
/// touches them, never written). `tap`: the interface `(iface_id, TAP)` the copy uses instead of
/// the snapshot's (which another process may hold: Firecracker then fails with EBUSY); `vsock`: the
/// copy's own socket instead of the snapshot's (v1.16).
pub fn snapshot_load_body(state: &Path, memory: &Path, tap: Option<(&str, &str)>, vsock: Option<&Path>) -> Value {
    let mut b = json!({
        "snapshot_path": path(state),
        "mem_backend": { "backend_type": "File", "backend_path": path(memory) },
        "resume_vm": true,
    });
    if let Some((iface_id, tap)) = tap {
        b["network_overrides"] = json!([{ "iface_id": iface_id, "host_dev_name": tap }]);
    }
    if let Some(uds) = vsock {
        b["vsock_override"] = json!({ "uds_path": path(uds) });
    }
    b
}

/// The version in `firecracker --version`'s output (`Firecracker v1.16.1`, then a blank line and
/// a log line on exit).
pub fn version(output: &str) -> Option<(u32, u32, u32)> {
    super::version_after(output, "Firecracker v")
}

/// Whether host-probe drives this version: 1.16.x. A copy needs a snapshot load that moves both
/// the TAP (`network_overrides`, 1.12) and the vsock socket (`vsock_override`, 1.16.0), and the
/// console goes to a file by `PUT /serial` (1.14); a later version's API is untried.
pub fn supported(v: (u32, u32, u32)) -> Result<(), String> {
    let (major, minor, patch) = v;
    match (major, minor) {
        (1, 16) => Ok(()),
        (1, m) if m < 16 => Err(format!(
            "Firecracker v{major}.{minor}.{patch} is too old: a copy's snapshot load needs vsock_override \
             (a vsock socket of its own), which arrived in v1.16.0: use v1.16"
        )),
        _ => Err(format!("Firecracker v{major}.{minor}.{patch} is untried (host-probe speaks v1.16's API): use v1.16")),
    }
}

#[cfg(test)]
mod tests {
    use super::super::kernel::kernel_kind;
    use super::super::{shell_line, Accel, Fs, Net};
    use super::*;
    use crate::locate::host_arch;

    fn spec(root: Root, net: bool, vsock: bool) -> Spec {
        Spec {
            binary: "firecracker".into(),
            kernel: "/k/vmlinux".into(),
            root,
            initramfs: None,
            cmdline: "console=ttyS0 root=/dev/vda ro".into(),
            cpus: 2,
            memory_mib: 128,
            net: net.then(|| Net { tap: "hp1234a".into(), mac: "02:68:70:00:00:02".into() }),
            vsock: vsock.then(|| Vsock::Hybrid { cid: 3, socket: "/run/r/vsock.sock".into() }),
            serial: "/run/r/serial.log".into(),
            console: Console::Serial,
            fs: None,
            rng: false,
            api_socket: "/run/r/api.sock".into(),
            event_monitor: "/run/r/events.json".into(),
            log_file: "/run/r/fc.log".into(),
            debugcon_socket: "/run/r/debugcon.sock".into(),
            accel: Accel::Kvm,
            role: Role::Boot,
            root_writable: false,
            arch: host_arch(),
        }
    }

    fn disk() -> Root {
        Root::Disk("/img/rootfs.ext4".into())
    }

    fn calls(spec: &Spec) -> Vec<String> {
        api_calls(spec).unwrap().iter().map(|c| format!("{c} {}", c.body.as_ref().map(|b| b.to_string()).unwrap_or_default())).collect()
    }

    #[test]
    fn api_calls_make_the_machine_then_start_it() {
        assert_eq!(
            calls(&spec(disk(), true, true)),
            [
                r#"PUT /boot-source {"boot_args":"console=ttyS0 root=/dev/vda ro","kernel_image_path":"/k/vmlinux"}"#,
                r#"PUT /machine-config {"mem_size_mib":128,"vcpu_count":2}"#,
                r#"PUT /drives/root {"drive_id":"root","is_read_only":true,"is_root_device":false,"path_on_host":"/img/rootfs.ext4"}"#,
                r#"PUT /network-interfaces/eth0 {"guest_mac":"02:68:70:00:00:02","host_dev_name":"hp1234a","iface_id":"eth0"}"#,
                r#"PUT /vsock {"guest_cid":3,"uds_path":"/run/r/vsock.sock"}"#,
                r#"PUT /serial {"serial_out_path":"/run/r/serial.log"}"#,
                r#"PUT /actions {"action_type":"InstanceStart"}"#,
            ]
        );
        assert_eq!(
            calls(&Spec { rng: true, ..spec(Root::Pmem("/img/r.ext4".into()), false, false) }),
            [
                r#"PUT /boot-source {"boot_args":"console=ttyS0 root=/dev/vda ro","kernel_image_path":"/k/vmlinux"}"#,
                r#"PUT /machine-config {"mem_size_mib":128,"vcpu_count":2}"#,
                r#"PUT /pmem/root {"id":"root","path_on_host":"/img/r.ext4","read_only":true,"root_device":false}"#,
                r#"PUT /entropy {}"#,
                r#"PUT /serial {"serial_out_path":"/run/r/serial.log"}"#,
                r#"PUT /actions {"action_type":"InstanceStart"}"#,
            ]
        );
        assert_eq!(
            calls(&spec(Root::Initramfs("/img/i.cpio".into()), false, false))[..2],
            [
                r#"PUT /boot-source {"boot_args":"console=ttyS0 root=/dev/vda ro","initrd_path":"/img/i.cpio","kernel_image_path":"/k/vmlinux"}"#,
                r#"PUT /machine-config {"mem_size_mib":128,"vcpu_count":2}"#,
            ]
        );
    }

    #[test]
    fn a_copy_is_its_console_then_the_snapshot_load_with_its_own_tap_and_vsock() {
        let restore = |mode| Role::Restore { from: "/srv/snap".into(), memory: "/srv/snap/memory".into(), qmp: PathBuf::new(), mode };
        let copy = Spec { role: restore(MemoryRestoreMode::Copy), ..spec(disk(), true, true) };
        assert_eq!(
            calls(&copy),
            [
                r#"PUT /serial {"serial_out_path":"/run/r/serial.log"}"#,
                r#"PUT /snapshot/load {"mem_backend":{"backend_path":"/srv/snap/memory","backend_type":"File"},"network_overrides":[{"host_dev_name":"hp1234a","iface_id":"eth0"}],"resume_vm":true,"snapshot_path":"/srv/snap/state","vsock_override":{"uds_path":"/run/r/vsock.sock"}}"#,
            ]
        );
        let bare = Spec { role: restore(MemoryRestoreMode::Copy), ..spec(disk(), false, false) };
        assert_eq!(
            calls(&bare)[1],
            r#"PUT /snapshot/load {"mem_backend":{"backend_path":"/srv/snap/memory","backend_type":"File"},"resume_vm":true,"snapshot_path":"/srv/snap/state"}"#
        );
        let ondemand = Spec { role: restore(MemoryRestoreMode::Ondemand), ..spec(disk(), true, true) };
        assert!(api_calls(&ondemand).unwrap_err().contains("drop --memory-restore-mode"));
    }

    #[test]
    fn what_firecracker_cannot_do_is_refused_with_the_fix() {
        let other = match host_arch() {
            Arch::X86_64 => Arch::Aarch64,
            Arch::Aarch64 => Arch::X86_64,
        };
        let fs = Fs { tag: "share".into(), socket: "/run/r/fs.sock".into() };
        let cases: [(Spec, &str); 7] = [
            (Spec { arch: other, ..spec(disk(), false, false) }, "needs --vmm qemu"),
            (Spec { console: Console::Virtio, ..spec(disk(), false, false) }, "use the serial console"),
            (Spec { fs: Some(fs), ..spec(disk(), false, false) }, "drop --share"),
            (Spec { vsock: Some(Vsock::Kernel { cid: 3 }), ..spec(disk(), false, false) }, "hybrid"),
            (Spec { vsock: Some(Vsock::VhostUser { socket: "/v".into() }), ..spec(disk(), false, false) }, "hybrid"),
            (Spec { cpus: 33, ..spec(disk(), false, false) }, "1 to 32 vCPUs"),
            (Spec { initramfs: Some("/i".into()), ..spec(Root::Initramfs("/j".into()), false, false) }, "one initrd"),
        ];
        for (spec, want) in cases {
            let e = api_calls(&spec).unwrap_err();
            assert!(e.contains(want), "{e}");
        }
        assert_eq!(refuse(&spec(Root::Pmem("/p".into()), true, true), host_arch()), Ok(()));
    }

    #[test]
    fn kernels_by_their_first_bytes() {
        let mut elf_x86 = vec![0u8; 64];
        elf_x86[..4].copy_from_slice(b"\x7fELF");
        elf_x86[18] = 62;
        let mut elf_arm = elf_x86.clone();
        elf_arm[18] = 183;
        let mut bz = vec![0u8; 0x400];
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        let mut image = vec![0u8; 0x400];
        image[..2].copy_from_slice(b"MZ");
        image[0x38..0x3c].copy_from_slice(b"ARM\x64");
        let cases = [
            (&elf_x86[..], KernelKind::Elf(62), Ok(()), Err("not one")),
            (&elf_arm[..], KernelKind::Elf(183), Err("not one"), Err("not one")),
            (&bz[..], KernelKind::BzImage, Err("not a bzImage"), Err("not one")),
            (&image[..], KernelKind::ArmImage, Err("not one"), Ok(())),
            (&b"\x7fEL"[..], KernelKind::Unknown, Err("not one"), Err("not one")),
        ];
        for (head, kind, x86, arm) in cases {
            assert_eq!(kernel_kind(head), kind);
            for (arch, want) in [(Arch::X86_64, x86), (Arch::Aarch64, arm)] {
                match (check_kernel(kind, arch), want) {
                    (Ok(()), Ok(())) => {}
                    (Err(e), Err(w)) => assert!(e.contains(w), "{kind:?} on {arch:?}: {e}"),
                    (got, _) => panic!("{kind:?} on {arch:?}: {got:?}"),
                }
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let k = dir.path().join("bzImage");
        std::fs::write(&k, &bz).unwrap();
        assert!(check_kernel_file(&k, Arch::X86_64).unwrap_err().contains("bzImage: Firecracker boots the uncompressed ELF"));
        assert!(check_kernel_file(&dir.path().join("none"), Arch::X86_64).unwrap_err().starts_with("cannot read the kernel"));
    }

    #[test]
    fn argv_of_a_boot_and_a_copy() {
        let s = spec(disk(), true, true);
        let want = "firecracker --id hp-1 --api-sock /run/r/api.sock --log-path /run/r/fc.log --level Info --show-level --boot-timer";
        assert_eq!(shell_line(&argv(&s, "hp-1").unwrap()), want);
        let copy = Spec {
            role: Role::Restore { from: "/s".into(), memory: "/s/memory".into(), qmp: PathBuf::new(), mode: MemoryRestoreMode::Copy },
            ..s.clone()
        };
        assert_eq!(shell_line(&argv(&copy, "hp-1").unwrap()), want);
        for bad in ["", "hp_1", "hp.1", &"a".repeat(65)] {
            assert!(argv(&s, bad).is_err(), "{bad:?}");
        }
        assert!(argv(&s, &"a".repeat(64)).is_ok());
    }

    #[test]
    fn snapshot_and_action_bodies() {
        let cases = [
            (pause_body(), r#"{"state":"Paused"}"#),
            (instance_start_body(), r#"{"action_type":"InstanceStart"}"#),
            (
                snapshot_create_body(Path::new("/s/state"), Path::new("/s/memory")),
                r#"{"mem_file_path":"/s/memory","snapshot_path":"/s/state","snapshot_type":"Full"}"#,
            ),
            (
                snapshot_load_body(Path::new("/s/state"), Path::new("/s/memory"), Some(("eth0", "hp9")), Some(Path::new("/r/v.sock"))),
                r#"{"mem_backend":{"backend_path":"/s/memory","backend_type":"File"},"network_overrides":[{"host_dev_name":"hp9","iface_id":"eth0"}],"resume_vm":true,"snapshot_path":"/s/state","vsock_override":{"uds_path":"/r/v.sock"}}"#,
            ),
        ];
        for (body, want) in cases {
            assert_eq!(body.to_string(), want);
        }
        assert_eq!(snapshot_files(Path::new("/srv/snap")), (PathBuf::from("/srv/snap/state"), PathBuf::from("/srv/snap/memory")));
    }

    #[test]
    fn versions_from_the_version_output_and_which_are_driven() {
        let out = "Firecracker v1.16.1\n\n2026-12-07T10:37:23.507338000 [anonymous-instance:main] Firecracker exiting successfully. exit_code=0\n";
        let cases = [
            (out, Some((1, 16, 1))),
            ("Firecracker v1.16.0-dev\n", Some((1, 16, 0))),
            ("Firecracker v1.12.1\n", Some((1, 12, 1))),
            ("Firecracker v2.0.0", Some((2, 0, 0))),
            ("Firecracker v1.16\n", None),
            ("cloud-hypervisor v53.0.0\n", None),
            ("", None),
        ];
        for (text, want) in cases {
            assert_eq!(version(text), want, "{text:?}");
        }
        let cases = [
            ((1, 16, 1), Ok(())),
            ((1, 16, 0), Ok(())),
            ((1, 15, 2), Err("arrived in v1.16.0")),
            ((1, 17, 0), Err("untried")),
            ((2, 0, 0), Err("untried")),
        ];
        for (v, want) in cases {
            match (supported(v), want) {
                (Ok(()), Ok(())) => {}
                (Err(e), Err(w)) => assert!(e.contains(w), "{v:?}: {e}"),
                (got, _) => panic!("{v:?}: {got:?}"),
            }
        }
    }

    #[test]
    fn instance_ids_from_the_run_directory() {
        let cases = [("/tmp/host-probe-123-0/api.sock", "host-probe-123-0"), ("/tmp/a_b.c/api.sock", "a-b-c"), ("api.sock", "host-probe")];
        for (socket, want) in cases {
            let s = Spec { api_socket: socket.into(), ..spec(disk(), false, false) };
            assert_eq!(instance_id_of(&s), want);
            assert_eq!(instance_id(want), Ok(()));
        }
        let long = Spec { api_socket: PathBuf::from(format!("/t/{}/api.sock", "x".repeat(80))), ..spec(disk(), false, false) };
        assert_eq!(instance_id_of(&long).len(), 64);
    }

    #[test]
    fn a_program_that_is_not_firecracker_v1_16_is_refused_with_the_fix() {
        let p = Path::new("/opt/fc");
        let cases = [
            (Some("Firecracker v1.16.1\n\n2026-12-07T10:37:23.507338000 [anonymous-instance:main] exiting\n"), None),
            (None, Some("no answer to --version")),
            (Some("cloud-hypervisor v53.0-dirty\n"), Some("is not Firecracker: its --version says \"cloud-hypervisor v53.0-dirty\"")),
            (Some("Firecracker v1.15.0\n"), Some("too old")),
            (Some("Firecracker v1.17.0\n"), Some("untried")),
        ];
        for (out, want) in cases {
            match (check_program(p, out), want) {
                (Ok(()), None) => {}
                (Err(Error::Missing { what, fix }), Some(w)) => {
                    assert!(what.contains(w) && what.starts_with("/opt/fc"), "{what}");
                    assert!(fix.contains("$FIRECRACKER"), "{fix}");
                }
                (got, _) => panic!("{out:?}: {got:?}"),
            }
        }
    }

    #[test]
    fn dry_run_lines_and_the_log_s_first_error() {
        let calls = [Call::put("/actions", instance_start_body()), Call::get("/")];
        assert_eq!(
            curl_lines(Path::new("/r/api.sock"), &calls),
            [
                r#"curl -sf --unix-socket /r/api.sock -X PUT http://localhost/actions -H 'Content-Type: application/json' -d '{"action_type":"InstanceStart"}'"#,
                "curl -sf --unix-socket /r/api.sock -X GET http://localhost/",
            ]
        );
        let script = Firecracker.api_script(&spec(disk(), false, false));
        assert_eq!(script[0], ": > /run/r/serial.log");
        assert!(script.last().unwrap().ends_with(r#"-d '{"action_type":"InstanceStart"}'"#), "{script:?}");
        let log = "\
2026-12-07T11:09:09.151932070 [hp-1:fc_api:INFO] The request was executed successfully. Status code: 204 No Content.
2026-12-07T11:09:10.533257870 [hp-1:fc_vcpu 0:ERROR] Unexpected exit reason on vcpu run: Shutdown
2026-12-07T11:09:10.534444370 [hp-1:main:INFO] Vmm is stopping.
";
        assert_eq!(
            Firecracker.first_error(log).unwrap(),
            "2026-12-07T11:09:10.533257870 [hp-1:fc_vcpu 0:ERROR] Unexpected exit reason on vcpu run: Shutdown\n\
             2026-12-07T11:09:10.534444370 [hp-1:main:INFO] Vmm is stopping."
        );
        assert_eq!(Firecracker.first_error(log.lines().next().unwrap()), None);
    }
}
