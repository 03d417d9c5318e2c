//! End-to-end helpers: a chinit guest under QEMU that stays up while a test talks to it, the
//! kernels and images those tests boot, and checks of what a run leaves on the host.
//!
//! host-probe plans every boot ([`host_probe::run::plan`]: the QEMU argv, TAP, vhost-device-vsock,
//! the kernel command line with `tsc_early_khz=` under TCG) and launches it
//! ([`host_probe::launch::start`]: helpers, listeners, the VMM, all removed when the handle drops);
//! [`Guest`] adds a QMP socket (for the power button) and the requests a test sends.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use agent::client::{self, Response};
use agent::proto::{ExecRequest, ExecResponse, Ready, DEFAULT_VSOCK_PORT};
use host_probe::launch::{self, Running};
use host_probe::run::{self, Options, Plan, VmmChoice};

use crate::vm;

/// Generous: TCG on 2 shared cores, with other tests booting at the same time.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(180);

/// Prints a test's one skip line. Written to stderr directly, not with `eprintln!`, so that
/// `cargo test` shows it even while it captures the output of passing tests.
pub fn skip(test: &str, why: &str) {
    let _ = writeln!(std::io::stderr().lock(), "skipped {test}: {why}");
}

/// Why a test cannot run here, printed as its one skip line; `None` when QEMU is present.
pub fn qemu_missing() -> Option<&'static str> {
    vm::qemu_binary().is_none().then_some("qemu-system-x86_64 not found (apt-get install qemu-system-x86)")
}

/// The tiny kernel's bzImage, built into the cache by `rootfs-builder kernel` when missing.
pub fn tiny_bzimage() -> PathBuf {
    let dir = rootfs_builder::kernel::tiny_kernel(rootfs_builder::elf::Arch::X86_64).unwrap_or_else(|e| panic!("tiny kernel: {e}"));
    dir.join("bzImage")
}

/// Debian's cloud kernel and its modules directory (`rootfs-builder kernel --distro debian-cloud`).
/// `Err` carries the one skip line, only when apt cannot fetch the package; any other failure panics.
pub fn debian_cloud_kernel() -> Result<(PathBuf, PathBuf), String> {
    use rootfs_builder::kernel::Error;
    match rootfs_builder::kernel::distro_kernel("debian-cloud", rootfs_builder::elf::Arch::X86_64) {
        Ok(k) => Ok(k),
        // apt-cache / apt-get missing, failing, or knowing no cloud kernel package.
        Err(e @ (Error::Command { .. } | Error::Spawn { .. })) if e.to_string().contains("apt") => {
            Err(format!("apt cannot fetch the Debian cloud kernel: {e}"))
        }
        Err(e @ Error::NoKernelDependency { .. }) => Err(format!("apt cannot fetch the Debian cloud kernel: {e}")),
        Err(e) => panic!("distro kernel: {e}"),
    }
}

/// The environment variable that names `vmm`'s program (`$FIRECRACKER`): panics for a VMM found on
/// PATH only.
pub fn program_var(vmm: host_probe::vmm::Vmm) -> &'static str {
    vmm.program_var().unwrap_or_else(|| panic!("{} is found on PATH only: no variable names its program", vmm.name()))
}

/// `rootfs-builder`, built for this test run.
pub fn rootfs_builder() -> PathBuf {
    vm::cargo_build("rootfs-builder", "rootfs-builder", None, false)
}

/// An ext4 root with chinit as `/sbin/init` and, for the exec API and workloads, busybox as
/// `/bin/busybox` (so `/bin/busybox sh -c ...` runs in the guest).
pub fn chinit_image(out: &Path, busybox: bool) -> PathBuf {
    let mut cmd = Command::new(rootfs_builder());
    cmd.env("ROOTFS_BUILDER_QUIET", "1").arg("--init").arg(vm::chinit_binary()).arg("--out").arg(out);
    if busybox {
        cmd.arg("--add").arg(format!("{}:/bin/busybox:0755", busybox_path().display()));
    }
    vm::run(&mut cmd);
    out.to_path_buf()
}

/// A container image (an OCI layout made with umoci) of busybox, /etc with a user `app` (1000:1000,
/// also in group `staff`, 50) and its home (owned by `app`), whose config runs `sh -c SCRIPT` as `app` in its home
/// with `A=1` and `stop_signal`; then turned by `rootfs-builder --image` into the ext4 root `out`,
/// or, when `out` ends in `.cpio`, into that initramfs. `Err`: the one skip line, when umoci is not
/// installed.
pub fn container_image(dir: &Path, script: &str, stop_signal: &str, out: &Path) -> Result<PathBuf, String> {
    if Command::new("umoci").arg("--version").output().is_err() {
        return Err("umoci not found (apt-get install umoci)".into());
    }
    let root = dir.join("layer");
    for d in ["bin", "etc", "home/app"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy(busybox_path(), root.join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", root.join("bin/sh")).unwrap();
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n").unwrap();
    std::fs::write(root.join("etc/group"), "root:x:0:\napp:x:1000:\nstaff:x:50:app\n").unwrap();
    let tar = dir.join("layer.tar");
    // Everything root's but the user's home (the tests run as root: the files here are root's).
    std::os::unix::fs::chown(root.join("home/app"), Some(1000), Some(1000)).unwrap();
    vm::run(Command::new("tar").arg("-C").arg(&root).args(["--numeric-owner", "-cf"]).arg(&tar).arg("."));
    let oci = dir.join("oci");
    let image = format!("{}:app", oci.display());
    vm::run(Command::new("umoci").arg("init").arg("--layout").arg(&oci));
    vm::run(Command::new("umoci").args(["new", "--image", &image]));
    vm::run(Command::new("umoci").args(["raw", "add-layer", "--image", &image]).arg(&tar));
    vm::run(Command::new("umoci").args([
        "config",
        "--image",
        &image,
        "--config.user",
        "app",
        "--config.env",
        "A=1",
        "--config.workingdir",
        "/home/app",
        "--config.entrypoint",
        "/bin/sh",
        "--config.cmd",
        "-c",
        "--config.cmd",
        script,
        "--config.stopsignal",
        stop_signal,
    ]));
    let mut cmd = Command::new(rootfs_builder());
    let as_initramfs = out.extension().is_some_and(|e| e == "cpio");
    cmd.env("ROOTFS_BUILDER_QUIET", "1").arg("--init").arg(vm::chinit_binary()).arg("--image").arg(&oci);
    cmd.arg(if as_initramfs { "--initramfs" } else { "--out" }).arg(out);
    vm::run(&mut cmd);
    Ok(out.to_path_buf())
}

/// The host's static busybox (busybox-static; scripts/setup.sh installs it).
pub fn busybox_path() -> PathBuf {
    vm::find_in_path("busybox").unwrap_or_else(|| panic!("busybox not found: apt-get install busybox-static"))
}

/// Modules a Debian cloud kernel needs for chinit's VM mode under QEMU microvm: the virtio-mmio
/// transport, the root disk, the network, vsock, and the ACPI power button.
pub const DISTRO_MODULES: &[&str] = &["virtio_mmio", "virtio_blk", "virtio_net", "vmw_vsock_virtio_transport", "button", "evdev"];

/// An initramfs with chinit and `modules` (with their dependencies) from `modules_dir`; none: chinit alone.
pub fn chinit_initramfs(out: &Path, modules_dir: Option<&Path>, modules: &[&str]) -> PathBuf {
    let mut cmd = Command::new(rootfs_builder());
    cmd.env("ROOTFS_BUILDER_QUIET", "1").arg("--init").arg(vm::chinit_binary()).arg("--initramfs").arg(out);
    if let Some(dir) = modules_dir {
        cmd.arg("--modules-from").arg(dir);
    }
    for m in modules {
        cmd.args(["--module", m]);
    }
    vm::run(&mut cmd);
    out.to_path_buf()
}

/// host-probe options for a QEMU boot of `kernel` (the rest as host-probe's defaults).
pub fn qemu_options(kernel: &Path, rootfs: Option<&Path>, cmdline_extra: &str) -> Options {
    Options {
        vmm: VmmChoice::Named(host_probe::vmm::qemu::VMM),
        kernel: Some(kernel.to_path_buf()),
        rootfs: rootfs.map(Path::to_path_buf),
        cmdline_extra: cmdline_extra.to_string(),
        timeout: BOOT_TIMEOUT,
        ..Options::default()
    }
}

/// The program and arguments of every process whose command line mentions `needle`.
pub fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    let me = std::process::id().to_string();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        if e.file_name().to_string_lossy() == me {
            continue;
        }
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(needle) {
                found.push(cmd);
            }
        }
    }
    found
}

/// What a host-probe process of this pid made and could have left: processes naming its run
/// directories, the run directories themselves (`host-probe-<pid>-*` in the temporary directory),
/// and its TAPs (`hp<pid hex>x*`).
pub fn left_by_host_probe(pid: u32) -> Vec<String> {
    let runs = format!("host-probe-{pid}-");
    let first_tap = host_probe::tap::tap_name(pid, 0);
    let tap = first_tap.strip_suffix('0').unwrap_or(&first_tap);
    let mut left = processes_mentioning(&runs);
    for dir in [std::env::temp_dir(), "/sys/class/net".into()] {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(&runs) || name.starts_with(tap) {
                left.push(name);
            }
        }
    }
    left
}

/// Unix sockets the kernel knows whose path contains `needle` (`/proc/net/unix`).
pub fn unix_sockets_mentioning(needle: &str) -> Vec<String> {
    std::fs::read_to_string("/proc/net/unix").unwrap_or_default().lines().filter(|l| l.contains(needle)).map(str::to_string).collect()
}

/// The tiny kernel's ELF `vmlinux` (beside its bzImage in the cache).
pub fn tiny_vmlinux() -> PathBuf {
    tiny_bzimage().with_file_name("vmlinux")
}

/// Options for a VMM that runs Linux guests on hardware KVM only (cloud-hypervisor, Firecracker,
/// StratoVirt), booting the tiny kernel's file that VMM boots (`vmlinux`, `bzImage`); `None` (after
/// one skip line) where this host has no such VMM (`missing` says how to get it) or no hardware KVM.
pub fn hardware_kvm_options(test: &str, vmm: host_probe::vmm::Vmm, missing: &str, rootfs: Option<&Path>) -> Option<Options> {
    let host = vm::host_offer();
    if host.program_of(vmm).is_none() {
        skip(test, missing);
        return None;
    }
    if !host.kvm.hardware() || !host.kvm_usable {
        skip(test, "no hardware KVM here (vm_l1 runs these tests on a simulated KVM host)");
        return None;
    }
    Some(Options {
        vmm: VmmChoice::Named(vmm),
        kernel: Some(tiny_bzimage().with_file_name(vmm.kernel_file(host.arch))),
        rootfs: rootfs.map(Path::to_path_buf),
        timeout: BOOT_TIMEOUT,
        ..Options::default()
    })
}

/// Nothing of a run is left: its TAP, its run directory, any process that names it.
pub fn assert_run_left_nothing(plan: &Plan) {
    if let Some(net) = &plan.tap {
        assert!(!host_probe::tap::exists(&net.tap), "TAP {} left", net.tap);
    }
    assert!(!plan.run_dir.exists(), "{} left", plan.run_dir.display());
    assert_eq!(processes_mentioning(&plan.run_dir.display().to_string()), Vec::<String>::new());
}

/// [`assert_run_left_nothing`], and no Unix socket names the run (a VMM's API or QMP socket).
pub fn assert_run_and_sockets_left_nothing(plan: &Plan) {
    assert_run_left_nothing(plan);
    assert_eq!(unix_sockets_mentioning(&plan.run_dir.display().to_string()), Vec::<String>::new());
}

/// A guest of `o` whose workload (`chinit.exec=`, [`run::Wait::Exit`]) exits 7, run to its end
/// through host-probe: the exit code reaches the host and the report says it, `vmm` (its name in
/// messages) exited 0 (no note of its exit), and nothing of the run is left, its sockets included.
pub fn assert_workload_exit_reaches_the_host(o: &Options, vmm: &str) {
    let plan = run::plan(o, &vm::host_offer(), run::next_seq()).unwrap();
    let r = run::execute(&plan, o).unwrap_or_else(|e| panic!("{e}"));
    let w = r.workload.unwrap_or_else(|| panic!("no workload status reached the host: {:?}", r.notes));
    assert!(!w.running && w.exit_code == Some(7), "{w:?}");
    assert!(host_probe::report::text(&r).contains("workload: exited with code 7"), "{}", host_probe::report::text(&r));
    assert!(!r.notes.iter().any(|n| n.contains("exited")), "{vmm} exited 0: {:?}", r.notes);
    assert_run_and_sockets_left_nothing(&plan);
}

/// The number at `path` (a JSON pointer) of a report; panics naming the path.
pub fn json_u64(v: &serde_json::Value, path: &str) -> u64 {
    v.pointer(path).and_then(serde_json::Value::as_u64).unwrap_or_else(|| panic!("{path} missing or not a number in {v:#}"))
}

/// A boot's phases from its report, microseconds.
#[derive(Debug, Clone, Copy)]
pub struct BootPhases {
    pub kernel: u64,
    pub init: u64,
    pub in_guest: u64,
    pub total: u64,
}

/// `host-probe run --vmm VMM --json --timeout 180 --timeline SVG --kernel K --rootfs IMAGE`, as
/// users run it. It must succeed, write the SVG, leave the image as it was, and report what every
/// boot's report says: the VMM, ready in VM mode, the boot's steps, phases that add up (kernel =
/// init start, init = ready - init start, ready in the guest + host overhead = total), and a clean
/// power-off (no note that the VMM exited). Returns the report and its phases.
pub fn host_probe_boot_report(vmm: &str, kernel: &Path, image: &Path, svg: &Path) -> (serde_json::Value, BootPhases) {
    let u = json_u64;
    let before = std::fs::read(image).unwrap();
    let out = vm::host_probe_command()
        .args(["run", "--vmm", vmm, "--json", "--timeout", "180"])
        .arg("--timeline")
        .arg(svg)
        .arg("--kernel")
        .arg(kernel)
        .arg("--rootfs")
        .arg(image)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "host-probe run: {}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["vmm"], vmm);
    assert_eq!(j["guest"]["ready"], true, "{j:#}");
    assert_eq!(j["guest"]["mode"], "vm");
    let (init_start, ready) = (u(&j, "/guest/init_start_us"), u(&j, "/guest/ready_us"));
    assert!(0 < init_start && init_start < ready, "{:#}", j["guest"]);
    let steps: Vec<&str> = j["guest"]["steps"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    for want in ["mounts", "cmdline", "network", "agent"] {
        assert!(steps.contains(&want), "step {want} missing from {steps:?}");
    }
    let phases = phases_add_up(&j);
    assert!(!j["notes"].as_array().unwrap().iter().any(|n| n.as_str().unwrap().contains("exited")), "clean power-off: {:#}", j["notes"]);
    let svg = std::fs::read_to_string(svg).unwrap();
    assert!(svg.starts_with("<svg") || svg.starts_with("<?xml"), "{svg}");
    assert_eq!(std::fs::read(image).unwrap(), before, "the image is never written");
    (j, phases)
}

/// The phases of a report that reached ready, which add up: kernel = init start, init = ready -
/// init start, kernel + init = ready in the guest, and that + the host overhead = total.
pub fn phases_add_up(j: &serde_json::Value) -> BootPhases {
    let u = json_u64;
    let (init_start, ready) = (u(j, "/guest/init_start_us"), u(j, "/guest/ready_us"));
    let p = &j["phases"];
    let (kernel, init, in_guest, overhead, total) =
        (u(p, "/kernel_boot_us"), u(p, "/init_us"), u(p, "/ready_in_guest_us"), u(p, "/host_overhead_us"), u(p, "/total_us"));
    assert_eq!((kernel, init, in_guest), (init_start, ready - init_start, ready), "{p:#}");
    assert_eq!(kernel + init, in_guest, "{p:#}");
    assert_eq!(in_guest + overhead, total, "guest uptime + host overhead = total: {p:#}");
    BootPhases { kernel, init, in_guest, total }
}

/// A guest of `base` (on `image`) that never gets ready (its root device never appears): exit 4
/// at the timeout, and `left_nothing` holds of its plan; then host-probe's binary with `--vmm
/// <vmm>` gets SIGINT once the VMM runs: exit 130, no run directory, TAP or process left. Returns
/// that interrupted run's directory, for more checks.
pub fn timeout_and_ctrl_c_leave_nothing(base: &Options, image: &Path, vmm: &str, left_nothing: fn(&Plan)) -> PathBuf {
    // Timeout: the kernel waits for a root that is not there.
    let o = Options { cmdline_extra: "root=/dev/vdz rootwait".into(), timeout: Duration::from_secs(8), ..base.clone() };
    let plan = run::plan(&o, &vm::host_offer(), run::next_seq()).unwrap();
    let e = run::execute(&plan, &o).unwrap_err();
    assert_eq!(e.exit_code().code(), 4, "{e}");
    left_nothing(&plan);

    // Ctrl-C: host-probe's binary, SIGINT once the VMM runs.
    let mut child = vm::host_probe_command()
        .args(["run", "--vmm", vmm, "--timeout", "120", "--cmdline-extra", "root=/dev/vdz rootwait"])
        .arg("--kernel")
        .arg(base.kernel.clone().unwrap_or_default())
        .arg("--rootfs")
        .arg(image)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let run_dir: PathBuf = std::env::temp_dir().join(format!("host-probe-{pid}-0"));
    let end = Instant::now() + Duration::from_secs(60);
    while !processes_mentioning(&run_dir.display().to_string()).iter().any(|p| p.contains(vmm)) {
        assert!(Instant::now() < end && child.try_wait().unwrap().is_none(), "{vmm} never started");
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: kill(2) on our own child, which has not been reaped.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    assert!(!run_dir.exists());
    assert!(!host_probe::tap::exists(&host_probe::tap::tap_name(pid, 0)));
    assert_eq!(processes_mentioning(&run_dir.display().to_string()), Vec::<String>::new());
    run_dir
}

/// Whether chinit's console shows a kernel panic.
pub fn has_kernel_panic(console: &str) -> bool {
    console.contains("Kernel panic")
}

/// A chinit guest under QEMU, as host-probe plans and launches it, that stays up until the test ends
/// it. Dropping it stops QEMU and vhost-device-vsock and removes the TAP and run directory.
pub struct Guest {
    run: Running,
    qmp: PathBuf,
}

impl Guest {
    /// Plans with host-probe and starts the guest. `writable`: attach the root image read-write (the
    /// test's own copy) and boot with `rw`, so an orderly shutdown can be checked with fsck.
    pub fn start(o: &Options, writable: bool) -> Guest {
        let mut o = o.clone();
        if writable {
            o.cmdline_extra = format!("rw {}", o.cmdline_extra);
        }
        let mut plan = run::plan(&o, &vm::host_offer(), run::next_seq()).unwrap_or_else(|e| panic!("plan: {e}"));
        if writable {
            // A VMM configured over its API reads the spec.
            plan.spec.root_writable = true;
            for a in plan.argv.iter_mut() {
                if a.starts_with("id=root,") {
                    *a = a.replace(",read-only=on", "");
                } else if a.starts_with("path=") || a.starts_with("file=") {
                    // cloud-hypervisor's --disk and --pmem.
                    *a = a.replace("readonly=on", "readonly=off").replace("discard_writes=on", "discard_writes=off");
                }
            }
        }
        let qmp = plan.run_dir.join("qmp.sock");
        if plan.vmm == host_probe::vmm::qemu::VMM {
            plan.argv.extend(["-qmp".to_string(), format!("unix:{},server=on,wait=off", qmp.display())]);
        }
        let run = launch::start(&plan, &o).unwrap_or_else(|e| panic!("launch: {e}"));
        Guest { run, qmp }
    }

    /// What host-probe planned (with the test's changes to the QEMU argv).
    pub fn plan(&self) -> &Plan {
        self.run.plan()
    }

    /// The guest's agent over the TAP.
    pub fn addr(&self) -> SocketAddr {
        self.run.guest_addr().unwrap_or_else(|| panic!("a guest with a TAP"))
    }

    /// The hybrid-vsock socket.
    pub fn guest_vsock(&self) -> &host_probe::vsock::GuestVsock {
        self.run.guest_vsock().unwrap_or_else(|| panic!("a guest with vsock"))
    }

    /// The serial console so far.
    pub fn console(&self) -> String {
        self.run.console_text()
    }

    /// Port-0x80 bytes so far.
    pub fn marks(&self) -> Vec<u8> {
        self.run.debugcon().into_iter().flat_map(|(_, bytes)| bytes).collect()
    }

    /// The Ready document chinit pushed over vsock (`chinit.notify`), once it has arrived whole.
    pub fn notified(&self) -> Option<Ready> {
        self.run.first_push().and_then(|(_, body)| serde_json::from_slice(&body).ok())
    }

    /// The console and QEMU's own output, for failure messages.
    pub fn diagnostics(&self) -> String {
        format!("--- console ---\n{}\n--- qemu ---\n{}", self.console(), self.run.vmm_output().trim())
    }

    /// QEMU's exit status, if it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.run.exited()
    }

    /// Waits until `GET /ready` over the TAP answers 200; panics with the console when QEMU exits
    /// first or `timeout` passes.
    pub fn wait_ready(&mut self, timeout: Duration) -> Ready {
        let end = Instant::now() + timeout;
        loop {
            if let Some(r) = self.try_ready_tcp() {
                return r;
            }
            if let Some(s) = self.exited() {
                panic!("QEMU exited ({s}) before chinit was ready\n{}", self.diagnostics());
            }
            assert!(Instant::now() < end, "chinit not ready after {timeout:?}\n{}", self.diagnostics());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn try_ready_tcp(&self) -> Option<Ready> {
        let r = self.tcp("GET", "/ready", None).ok()?;
        (r.status == 200).then(|| r.json().ok()).flatten()
    }

    /// One request over the TAP.
    pub fn tcp(&self, method: &str, path: &str, body: Option<&[u8]>) -> Result<Response, String> {
        let mut s = TcpStream::connect_timeout(&self.addr(), Duration::from_millis(300)).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
        client::request(&mut s, method, path, body).map_err(|e| e.to_string())
    }

    /// One request over vsock (hybrid vsock through vhost-device-vsock).
    pub fn vsock(&self, method: &str, path: &str, body: Option<&[u8]>) -> Result<Response, String> {
        let mut s = self.guest_vsock().connect(DEFAULT_VSOCK_PORT, Duration::from_secs(30)).map_err(|e| e.to_string())?;
        client::request(&mut s, method, path, body).map_err(|e| e.to_string())
    }

    /// One request to the control endpoints: over vsock, or over the TAP for a guest without
    /// vsock (host-probe's guests serve them on TCP too: `chinit.api=tcp`).
    pub fn control(&self, method: &str, path: &str, body: Option<&[u8]>) -> Result<Response, String> {
        if self.run.guest_vsock().is_some() {
            self.vsock(method, path, body)
        } else {
            self.tcp(method, path, body)
        }
    }

    /// `POST /v1/exec` over vsock (over the TAP without vsock); panics unless the answer is 200.
    pub fn exec(&self, req: &ExecRequest) -> ExecResponse {
        let body = serde_json::to_vec(req).unwrap();
        let r = self.control("POST", "/v1/exec", Some(&body)).unwrap_or_else(|e| panic!("exec: {e}"));
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        r.json().unwrap()
    }

    /// Presses the ACPI power button: QMP `system_powerdown`, or cloud-hypervisor's API
    /// (`PUT /api/v1/vm.power-button` on its API socket).
    pub fn power_button(&self) {
        if self.plan().vmm == host_probe::vmm::cloud_hypervisor::VMM {
            let api = &self.plan().spec.api_socket;
            let mut s = UnixStream::connect(api).unwrap_or_else(|e| panic!("cloud-hypervisor API {}: {e}", api.display()));
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let r = client::request(&mut s, "PUT", "/api/v1/vm.power-button", None).unwrap_or_else(|e| panic!("power-button: {e}"));
            assert!(r.status / 100 == 2, "power-button: {} {}", r.status, String::from_utf8_lossy(&r.body));
            return;
        }
        let s = UnixStream::connect(&self.qmp).unwrap_or_else(|e| panic!("QMP {}: {e}", self.qmp.display()));
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut w = s.try_clone().unwrap();
        let mut r = BufReader::new(s);
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        assert!(line.contains("\"QMP\""), "QMP greeting: {line}");
        for cmd in ["qmp_capabilities", "system_powerdown"] {
            writeln!(w, "{{\"execute\": \"{cmd}\"}}").unwrap();
            loop {
                line.clear();
                r.read_line(&mut line).unwrap();
                if line.contains("\"return\"") {
                    break;
                }
                assert!(!line.contains("\"error\"") && !line.is_empty(), "QMP {cmd}: {line}");
            }
        }
    }

    /// Waits for QEMU to exit by itself; `None` on timeout.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.run.wait_exit(timeout)
    }
}

/// What ends the machine in [`orderly_poweroff`].
#[derive(Clone, Copy, Debug)]
pub enum Trigger {
    Api,
    PowerButton,
}

/// Boots a writable copy of an image with `o` (its VMM, kernel, root mode), writes a file from the
/// guest (no sync), powers off with `trigger`, and checks the order of things: the VMM exits 0, the
/// console names the trigger and shows no shutdown error, and the filesystem is clean with the
/// file in it.
pub fn orderly_poweroff(o: &Options, trigger: Trigger) {
    let tmp = vm::TempDir::new("e2e-poweroff").unwrap();
    let image = chinit_image(&tmp.path().join("rootfs.ext4"), true);
    let mut g = Guest::start(&Options { rootfs: Some(image.clone()), ..o.clone() }, true);
    g.wait_ready(BOOT_TIMEOUT);
    let witness = format!("written before {trigger:?}");
    let out = g.exec(&ExecRequest {
        argv: vec!["/bin/busybox".into(), "sh".into(), "-c".into(), format!("echo '{witness}' > /root/witness")],
        ..Default::default()
    });
    assert_eq!(out.exit_code, Some(0), "{out:?}");
    let who = match trigger {
        Trigger::Api => {
            let r = g.control("POST", "/v1/shutdown", None).unwrap();
            assert_eq!(r.status, 202);
            "the API"
        }
        Trigger::PowerButton => {
            g.power_button();
            "the power button"
        }
    };
    let status = g.wait_exit(Duration::from_secs(60)).unwrap_or_else(|| panic!("no power-off after {trigger:?}\n{}", g.diagnostics()));
    assert!(status.success(), "QEMU: {status}\n{}", g.diagnostics());
    let console = g.console();
    assert!(console.contains(&format!("chinit: Poweroff requested by {who}: shutting down")), "{console}");
    assert!(!console.contains("chinit: shutdown:"), "a shutdown step failed:\n{console}");
    assert!(!has_kernel_panic(&console), "{console}");
    drop(g);

    let fsck = Command::new("e2fsck").arg("-fn").arg(&image).output().unwrap();
    assert!(
        fsck.status.success(),
        "e2fsck -fn after {trigger:?}: {}\n{}{}",
        fsck.status,
        String::from_utf8_lossy(&fsck.stdout),
        String::from_utf8_lossy(&fsck.stderr)
    );
    let head = vm::run(Command::new("dumpe2fs").arg("-h").arg(&image));
    assert!(head.lines().any(|l| l.starts_with("Filesystem state:") && l.trim_end().ends_with("clean")), "{head}");
    assert!(!head.contains("needs_recovery"), "the journal was not flushed: {head}");
    let cat = vm::run(Command::new("debugfs").arg("-R").arg("cat /root/witness").arg(&image));
    assert_eq!(cat.trim(), witness);
}

/// `host-probe run --vmm <vmm> ARGS --kernel K --rootfs R` with the VMM's variable
/// ([`host_probe::vmm::Driver::program_var`]) set to `program`: its exit code, stdout and stderr
/// (for refusal tests, with stand-in programs).
pub fn host_probe_with_vmm(
    vmm: host_probe::vmm::Vmm,
    program: &Path,
    args: &[&str],
    kernel: &Path,
    rootfs: &Path,
) -> (i32, String, String) {
    let out = vm::host_probe_command()
        .env(program_var(vmm), program)
        .args(["run", "--vmm", vmm.name()])
        .args(args)
        .arg("--kernel")
        .arg(kernel)
        .arg("--rootfs")
        .arg(rootfs)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("host-probe: {e}"));
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}
