//! End-to-end helpers: a chinit guest under QEMU that stays up while a test talks to it, the
//! kernels and images those tests boot, and checks of what a run leaves on the host.
//!
//! host-probe plans every boot ([`host_probe::run::plan`]: the QEMU argv, TAP, vhost-device-vsock,
//! the kernel command line with `tsc_early_khz=` under TCG); [`Guest`] only starts what the plan
//! says, adds a QMP socket (for the power button), and removes everything on drop, in reverse order.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use agent::client::{self, Response};
use agent::proto::{ExecRequest, ExecResponse, Ready, DEFAULT_PORT, DEFAULT_VSOCK_PORT};
use host_probe::run::{self, HostOffer, Options, Plan, VmmChoice};
use host_probe::tap::Tap;

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
    let dir = rootfs_builder::kernel::tiny_kernel("x86_64").unwrap_or_else(|e| panic!("tiny kernel: {e}"));
    dir.join("bzImage")
}

/// Debian's cloud kernel and its modules directory (`rootfs-builder kernel --distro debian-cloud`).
/// `Err` carries the one skip line, only when apt cannot fetch the package; any other failure panics.
pub fn debian_cloud_kernel() -> Result<(PathBuf, PathBuf), String> {
    use rootfs_builder::kernel::Error;
    match rootfs_builder::kernel::distro_kernel("debian-cloud", "x86_64") {
        Ok(k) => Ok(k),
        // apt-cache / apt-get missing, failing, or knowing no cloud kernel package.
        Err(e @ (Error::Command { .. } | Error::Spawn { .. })) if e.to_string().contains("apt") => {
            Err(format!("apt cannot fetch the Debian cloud kernel: {e}"))
        }
        Err(e @ Error::NoKernelDependency { .. }) => Err(format!("apt cannot fetch the Debian cloud kernel: {e}")),
        Err(e) => panic!("distro kernel: {e}"),
    }
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

/// The host's static busybox (busybox-static; scripts/setup.sh installs it).
pub fn busybox_path() -> PathBuf {
    vm::find_in_path("busybox").unwrap_or_else(|| panic!("busybox not found: apt-get install busybox-static"))
}

/// Modules a Debian cloud kernel needs for chinit's VM mode under QEMU microvm: the virtio-mmio
/// transport, the root disk, the network, vsock, and the ACPI power button.
pub const DISTRO_MODULES: &[&str] = &["virtio_mmio", "virtio_blk", "virtio_net", "vmw_vsock_virtio_transport", "button", "evdev"];

/// An initramfs with chinit and `modules` (with their dependencies) from `modules_dir`.
pub fn chinit_initramfs(out: &Path, modules_dir: &Path, modules: &[&str]) -> PathBuf {
    let mut cmd = Command::new(rootfs_builder());
    cmd.env("ROOTFS_BUILDER_QUIET", "1").arg("--init").arg(vm::chinit_binary()).arg("--initramfs").arg(out);
    cmd.arg("--modules-from").arg(modules_dir);
    for m in modules {
        cmd.args(["--module", m]);
    }
    vm::run(&mut cmd);
    out.to_path_buf()
}

/// host-probe options for a QEMU boot of `kernel` (the rest as host-probe's defaults).
pub fn qemu_options(kernel: &Path, rootfs: Option<&Path>, cmdline_extra: &str) -> Options {
    Options {
        vmm: VmmChoice::Qemu,
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

/// Unix sockets the kernel knows whose path contains `needle` (`/proc/net/unix`).
pub fn unix_sockets_mentioning(needle: &str) -> Vec<String> {
    std::fs::read_to_string("/proc/net/unix").unwrap_or_default().lines().filter(|l| l.contains(needle)).map(str::to_string).collect()
}

/// Whether chinit's console shows a kernel panic.
pub fn has_kernel_panic(console: &str) -> bool {
    console.contains("Kernel panic")
}

/// Starts a child in its own process group that dies with this process (SIGKILL on parent death).
fn spawn(argv: &[String], out: &Path) -> std::io::Result<Child> {
    let log = std::fs::File::create(out)?;
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..]).stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log).process_group(0);
    // SAFETY: prctl(2) is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    cmd.spawn()
}

fn stop(child: &mut Child) {
    if let Ok(None) = child.try_wait() {
        let _ = child.kill();
    }
    let _ = child.wait();
}

/// Accepts one connection on `l`, checking `stop` every few milliseconds.
fn accept_until(l: &UnixListener, stop: &AtomicBool) -> Option<UnixStream> {
    l.set_nonblocking(true).ok()?;
    while !stop.load(Ordering::SeqCst) {
        match l.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false).ok()?;
                return Some(s);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(5)),
            Err(_) => return None,
        }
    }
    None
}

/// Reads `l`'s first connection to its end (or until `stop`) into `into`.
fn drain(l: UnixListener, stop: Arc<AtomicBool>, into: Arc<Mutex<Vec<u8>>>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let Some(mut s) = accept_until(&l, &stop) else {
            return;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(50)));
        let mut buf = [0u8; 512];
        loop {
            match s.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => into.lock().unwrap().extend_from_slice(&buf[..n]),
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                }
                Err(_) => return,
            }
        }
    })
}

/// A chinit guest under QEMU, as host-probe plans it, that stays up until the test ends it.
pub struct Guest {
    pub plan: Plan,
    qemu: Option<Child>,
    vhost: Option<Child>,
    tap: Option<Tap>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    /// Bytes chinit wrote to port 0x80 (QEMU's isa-debugcon).
    marks: Arc<Mutex<Vec<u8>>>,
    /// What chinit pushed to `chinit.notify`.
    notify: Arc<Mutex<Vec<u8>>>,
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
        let plan = run::plan(&o, &HostOffer::gather(), run::next_seq()).unwrap_or_else(|e| panic!("plan: {e}"));
        let _ = std::fs::remove_dir_all(&plan.run_dir);
        std::fs::create_dir_all(&plan.run_dir).unwrap();
        let qmp = plan.run_dir.join("qmp.sock");
        let mut g = Guest {
            plan,
            qemu: None,
            vhost: None,
            tap: None,
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
            marks: Arc::default(),
            notify: Arc::default(),
            qmp,
        };
        let p = g.plan.clone();
        if let (Some(net), Some(ip)) = (&p.tap, &p.guest_ip) {
            g.tap = Some(Tap::create(&net.tap, ip, &net.mac).unwrap_or_else(|e| panic!("TAP: {e}")));
        }
        if let Some(argv) = &p.vhost_argv {
            g.vhost = Some(spawn(argv, &p.run_dir.join("vhost.out")).unwrap_or_else(|e| panic!("vhost-device-vsock: {e}")));
            let sock = p.spec.vsock.as_ref().map(|v| v.socket.clone()).unwrap();
            let end = Instant::now() + Duration::from_secs(10);
            while !sock.exists() {
                assert!(Instant::now() < end, "vhost-device-vsock made no socket {}", sock.display());
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        if let Some(uds) = &p.vsock_uds {
            let l = UnixListener::bind(format!("{}_{}", uds.display(), run::NOTIFY_PORT)).unwrap();
            g.threads.push(drain(l, g.stop.clone(), g.notify.clone()));
        }
        let l = UnixListener::bind(&p.spec.debugcon_socket).unwrap();
        g.threads.push(drain(l, g.stop.clone(), g.marks.clone()));

        let mut argv = p.argv.clone();
        if writable {
            for a in argv.iter_mut() {
                if a.starts_with("id=root,") {
                    *a = a.replace(",read-only=on", "");
                }
            }
        }
        argv.extend(["-qmp".to_string(), format!("unix:{},server=on,wait=off", g.qmp.display())]);
        g.qemu = Some(spawn(&argv, &p.run_dir.join("vmm.out")).unwrap_or_else(|e| panic!("QEMU: {e}")));
        g
    }

    /// The guest's agent over the TAP.
    pub fn addr(&self) -> SocketAddr {
        format!("{}:{DEFAULT_PORT}", self.plan.guest_ip.as_ref().expect("a guest with a TAP")).parse().unwrap()
    }

    /// The hybrid-vsock socket.
    pub fn vsock_uds(&self) -> &Path {
        self.plan.vsock_uds.as_deref().expect("a guest with vsock")
    }

    /// The serial console so far.
    pub fn console(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.plan.spec.serial).unwrap_or_default()).into_owned()
    }

    /// Port-0x80 bytes so far.
    pub fn marks(&self) -> Vec<u8> {
        self.marks.lock().unwrap().clone()
    }

    /// The Ready document chinit pushed over vsock (`chinit.notify`), once it has arrived whole.
    pub fn notified(&self) -> Option<Ready> {
        serde_json::from_slice(&self.notify.lock().unwrap()).ok()
    }

    /// The console and QEMU's own output, for failure messages.
    pub fn diagnostics(&self) -> String {
        let vmm = std::fs::read_to_string(self.plan.run_dir.join("vmm.out")).unwrap_or_default();
        format!("--- console ---\n{}\n--- qemu ---\n{}", self.console(), vmm.trim())
    }

    /// QEMU's exit status, if it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.qemu.as_mut().and_then(|c| c.try_wait().ok().flatten())
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
        let mut s = client::vsock_connect(self.vsock_uds(), DEFAULT_VSOCK_PORT, Duration::from_secs(30)).map_err(|e| e.to_string())?;
        client::request(&mut s, method, path, body).map_err(|e| e.to_string())
    }

    /// `POST /v1/exec` over vsock; panics unless the answer is 200.
    pub fn exec(&self, req: &ExecRequest) -> ExecResponse {
        let body = serde_json::to_vec(req).unwrap();
        let r = self.vsock("POST", "/v1/exec", Some(&body)).unwrap_or_else(|e| panic!("exec over vsock: {e}"));
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        r.json().unwrap()
    }

    /// Presses the ACPI power button (QMP `system_powerdown`).
    pub fn power_button(&self) {
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
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if let Some(s) = self.exited() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        if let Some(mut q) = self.qemu.take() {
            stop(&mut q);
        }
        if let Some(mut v) = self.vhost.take() {
            stop(&mut v);
        }
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        drop(self.tap.take());
        let _ = std::fs::remove_dir_all(&self.plan.run_dir);
    }
}
