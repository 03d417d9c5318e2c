//! Launch a [`Plan`]: the run directory, the TAP, vhost-device-vsock, the listeners for port-0x80
//! marks (QEMU's debugcon) and chinit's notify, then the VMM. [`start`] returns a [`Running`]
//! handle; everything it made is held by a guard whose `Drop` removes it, so success, failure,
//! timeout, a signal and a panicking test all leave nothing behind.
//!
//! The handle is what `host-probe run` watches and what the VM tests drive: the VMM's pid, the
//! console, the guest's address and vsock socket, what the readers heard, power-off.

mod proc;
mod readers;
mod wait;

use std::net::SocketAddr;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agent::proto::{Ready, DEFAULT_PORT};

use crate::error::Error;
use crate::measure;
use crate::options::Options;
use crate::plan::Plan;
use crate::report::Memory;
use crate::signals::interrupted;
use crate::tap::Tap;
use crate::vmm;
use crate::vsock::GuestVsock;
use proc::Proc;
use readers::{Reader, Stamped};
pub use wait::Phase;

/// A progress line on stderr (`-v`).
pub fn progress(verbose: bool, msg: &str) {
    if verbose {
        eprintln!("host-probe: {msg}");
    }
}

/// A file's text, empty when it cannot be read (it may not exist yet).
pub fn read_lossy(p: &Path) -> String {
    std::fs::read(p).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
}

/// The run directory, made empty; removed on drop unless kept.
struct RunDir {
    path: PathBuf,
    keep: bool,
}

impl RunDir {
    fn create(path: &Path, keep: bool) -> Result<RunDir, Error> {
        let _ = std::fs::remove_dir_all(path);
        std::fs::create_dir_all(path).map_err(Error::io(format!("create {}", path.display())))?;
        Ok(RunDir { path: path.to_path_buf(), keep })
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        if self.keep {
            eprintln!("host-probe: kept {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// A booting or booted guest. Dropping it stops the VMM, the readers and vhost-device-vsock, and
/// removes the TAP and the run directory (unless `keep`).
pub struct Running {
    plan: Plan,
    verbose: bool,
    /// When the VMM was started: every time the readers stamp counts from here.
    t0: Instant,
    debugcon_chunks: Stamped,
    debugcon_connected: Arc<Mutex<Option<u64>>>,
    pushes: Stamped,
    vsock_go: Arc<AtomicBool>,
    // The guards. Fields drop in declaration order: the VMM first, then the readers, then
    // vhost-device-vsock, the TAP and the run directory (the reverse of the order they were made).
    vmm: Proc,
    notify: Option<Reader<()>>,
    vsock: Option<Reader<Option<(u64, Ready)>>>,
    debugcon: Option<Reader<()>>,
    _vhost: Option<Proc>,
    _virtiofsd: Option<Proc>,
    _tap: Option<Tap>,
    _dir: RunDir,
}

/// What a run left once its VMM and readers stopped: what the readers heard and the VMM's files.
#[derive(Debug, Clone, Default)]
pub struct Captured {
    /// QEMU's debugcon bytes, each chunk stamped on arrival.
    pub debugcon: Vec<(u64, Vec<u8>)>,
    /// When QEMU connected its debugcon.
    pub debugcon_connected_us: Option<u64>,
    /// chinit's notify pushes, each stamped at its EOF.
    pub pushes: Vec<(u64, Vec<u8>)>,
    pub serial: String,
    /// cloud-hypervisor's event monitor and log.
    pub event_monitor: String,
    pub vmm_log: String,
    /// The last serial and VMM lines, for error messages.
    pub diagnostics: String,
}

/// Makes what the plan names, starts the VMM and its readers.
pub fn start(plan: &Plan, o: &Options) -> Result<Running, Error> {
    if let Some(parent) = plan.run_dir.parent() {
        for what in crate::stale::sweep(parent) {
            eprintln!("host-probe: removed {what}, left by a run that was killed");
        }
    }
    let dir = RunDir::create(&plan.run_dir, o.keep)?;
    for f in &plan.files {
        lay_out(f)?;
    }
    let tap = match (&plan.tap, plan.guest_ip) {
        (Some(net), Some(ip)) => {
            progress(o.verbose, &format!("TAP {} (host 169.254.0.1/16, guest {ip})", net.tap));
            Some(Tap::create(&net.tap, ip, &net.mac)?)
        }
        _ => None,
    };
    interrupted()?;
    let vhost = start_vhost(plan)?;
    let virtiofsd = start_virtiofsd(plan)?;
    let notify_listener = match (&plan.guest_vsock, plan.notify_port) {
        (Some(v), Some(port)) => Some(v.listen(port).map_err(Error::io(format!("listen for chinit's notify on vsock port {port}")))?),
        _ => None,
    };
    let debugcon_listener = plan.vmm.debugcon(&plan.spec).map(bind).transpose()?;
    interrupted()?;

    progress(o.verbose, &format!("starting {}", vmm::shell_line(&plan.argv)));
    let t0 = Instant::now();
    let vmm = Proc::spawn(&plan.argv, plan.vmm.name(), &plan.run_dir.join("vmm.out"))?;
    let (debugcon_chunks, debugcon_connected, pushes) = (Stamped::default(), Arc::new(Mutex::new(None)), Stamped::default());
    let debugcon = debugcon_listener.map(|l| readers::debugcon_reader(l, t0, debugcon_chunks.clone(), debugcon_connected.clone()));
    let notify = notify_listener.map(|l| readers::notify_reader(l, t0, pushes.clone()));
    let mut running = Running {
        plan: plan.clone(),
        verbose: o.verbose,
        t0,
        debugcon_chunks,
        debugcon_connected,
        pushes,
        vsock_go: Arc::new(AtomicBool::new(false)),
        vmm,
        notify,
        vsock: None,
        debugcon,
        _vhost: vhost,
        _virtiofsd: virtiofsd,
        _tap: tap,
        _dir: dir,
    };
    // A VMM configured over its API once it runs (none of today's: their argv says it all); a
    // copy is started by its VMM's `resume_copy` instead.
    if !matches!(plan.spec.role, vmm::Role::Restore { .. }) {
        plan.vmm.configure(&mut running, &Phase::start("boot", o.timeout))?;
    }
    Ok(running)
}

fn lay_out(f: &crate::plan::RunFile) -> Result<(), Error> {
    use crate::plan::RunFile;
    let (RunFile::Write { path, .. } | RunFile::Link { path, .. }) = f;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(Error::io(format!("create {}", parent.display())))?;
    }
    match f {
        RunFile::Write { path, bytes } => std::fs::write(path, bytes).map_err(Error::io(format!("write {}", path.display()))),
        RunFile::Link { path, target } => {
            std::os::unix::fs::symlink(target, path).map_err(Error::io(format!("link {} to {}", path.display(), target.display())))
        }
    }
}

fn bind(path: &Path) -> Result<UnixListener, Error> {
    UnixListener::bind(path).map_err(Error::io(format!("bind {}", path.display())))
}

/// virtiofsd (`--share`), once its vhost-user socket exists.
fn start_virtiofsd(plan: &Plan) -> Result<Option<Proc>, Error> {
    let (Some(argv), Some(fs)) = (&plan.virtiofsd_argv, &plan.spec.fs) else {
        return Ok(None);
    };
    let out = plan.run_dir.join("virtiofsd.out");
    let mut p = Proc::spawn(argv, "virtiofsd", &out)?;
    if !p.wait_for_path(&fs.socket, Duration::from_secs(5)) {
        return Err(Error::Helper {
            what: "virtiofsd".into(),
            detail: format!("no socket {} after 5 s: {}", fs.socket.display(), read_lossy(&out).trim()),
            fix: "check the shared directory and that virtiofsd runs as root".into(),
        });
    }
    Ok(Some(p))
}

/// vhost-device-vsock (QEMU with vsock), once its vhost-user socket exists.
fn start_vhost(plan: &Plan) -> Result<Option<Proc>, Error> {
    let Some(argv) = &plan.vhost_argv else {
        return Ok(None);
    };
    let out = plan.run_dir.join("vhost.out");
    let mut p = Proc::spawn(argv, "vhost-device-vsock", &out)?;
    let sock = match &plan.spec.vsock {
        Some(crate::vmm::Vsock::VhostUser { socket }) => socket.clone(),
        _ => PathBuf::new(),
    };
    if !p.wait_for_path(&sock, Duration::from_secs(5)) {
        return Err(Error::Helper {
            what: "vhost-device-vsock".into(),
            detail: format!("no socket {} after 5 s: {}", sock.display(), read_lossy(&out).trim()),
            fix: "cargo install vhost-device-vsock (0.3 or later), or pass --no-vsock".into(),
        });
    }
    Ok(Some(p))
}

/// The last serial lines and the VMM's own output, for error messages.
fn diagnostics(plan: &Plan) -> String {
    let serial = read_lossy(&plan.spec.serial);
    let vmm_out = read_lossy(&plan.run_dir.join("vmm.out"));
    let vmm_log = read_lossy(&plan.spec.log_file);
    let mut o = String::new();
    o.push_str("last lines of the serial console:\n");
    let tail = measure::last_lines(&serial, 20);
    o.push_str(if tail.is_empty() { "  (empty)" } else { &tail });
    let vmm_tail = match plan.vmm.first_error(&vmm_log) {
        Some(error) => error,
        None => {
            let vmm_text = format!("{vmm_out}{vmm_log}");
            measure::last_lines(vmm_text.trim(), 10)
        }
    };
    if !vmm_tail.is_empty() {
        o.push_str(&format!("\nlast lines of {}:\n{vmm_tail}", plan.vmm.name()));
    }
    o
}

impl Running {
    /// The plan this run carries out.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The VMM's process id.
    pub fn pid(&self) -> u32 {
        self.vmm.pid()
    }

    /// Time since the VMM was started.
    pub fn elapsed(&self) -> Duration {
        self.t0.elapsed()
    }

    /// When the VMM was started: every stamp counts from here.
    pub fn spawned(&self) -> Instant {
        self.t0
    }

    /// [`Running::elapsed`] in microseconds, the unit of every stamp.
    pub fn now_us(&self) -> u64 {
        readers::micros_since(self.t0)
    }

    /// The file the guest's serial console goes to.
    pub fn console(&self) -> &Path {
        &self.plan.spec.serial
    }

    /// The serial console so far.
    pub fn console_text(&self) -> String {
        read_lossy(&self.plan.spec.serial)
    }

    /// What the VMM printed itself (stdout and stderr).
    pub fn vmm_output(&self) -> String {
        read_lossy(&self.plan.run_dir.join("vmm.out"))
    }

    /// The last serial and VMM lines, for error messages.
    pub fn diagnostics(&self) -> String {
        diagnostics(&self.plan)
    }

    /// The guest agent's address over the TAP.
    pub fn guest_addr(&self) -> Option<SocketAddr> {
        self.plan.guest_ip.map(|ip| SocketAddr::from((ip, DEFAULT_PORT)))
    }

    /// How to reach the guest's vsock.
    pub fn guest_vsock(&self) -> Option<&GuestVsock> {
        self.plan.guest_vsock.as_ref()
    }

    /// QEMU's debugcon bytes so far, each chunk stamped on arrival.
    pub fn debugcon(&self) -> Vec<(u64, Vec<u8>)> {
        self.debugcon_chunks.snapshot()
    }

    /// Whether QEMU's debugcon has carried this port-0x80 code yet.
    pub fn mark_seen(&self, code: u8) -> bool {
        self.debugcon_chunks.contains(code)
    }

    /// Whether chinit's notify pushes are listened for (the guest has vsock).
    pub fn listens_for_notify(&self) -> bool {
        self.notify.is_some()
    }

    /// chinit's notify pushes so far, each stamped at its EOF.
    pub fn pushes(&self) -> Vec<(u64, Vec<u8>)> {
        self.pushes.snapshot()
    }

    /// The first notify push, if it has arrived.
    pub fn first_push(&self) -> Option<(u64, Vec<u8>)> {
        self.pushes.first()
    }

    /// The VMM's RSS and PSS now.
    pub fn vmm_memory(&self) -> Option<Memory> {
        measure::parse_smaps_rollup(&read_lossy(Path::new(&format!("/proc/{}/smaps_rollup", self.vmm.pid()))))
    }

    /// The VMM's exit status, once it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.vmm.exited()
    }

    /// Waits up to `timeout` for the VMM to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.vmm.wait_for(timeout)
    }

    /// Asks chinit to power off (over TCP, else vsock) and gives it `grace` when it accepted; the
    /// VMM's exit status, or `None` when it is still running (dropping the handle stops it).
    pub fn power_off(&mut self, grace: Duration) -> Option<ExitStatus> {
        progress(self.verbose, "asking the guest to power off");
        let asked = crate::ask::shutdown_guest(self.guest_addr(), self.guest_vsock());
        let status = self.wait_exit(if asked { grace } else { Duration::ZERO });
        if status.is_none() {
            progress(self.verbose, "the guest did not power off; stopping the VMM");
        }
        status
    }

    /// Starts polling `GET /ready` over vsock on its own thread (when the guest has vsock): every
    /// 100 ms from the start when `eager`, else only once [`Running::vsock_go`] was called.
    pub fn poll_vsock_ready(&mut self, eager: bool) {
        if let Some(v) = &self.plan.guest_vsock {
            self.vsock = Some(readers::vsock_poller(v.clone(), self.t0, self.vsock_go.clone(), eager));
        }
    }

    /// Lets the vsock poller ask every 5 ms (something said the guest is ready).
    pub fn vsock_go(&self) {
        self.vsock_go.store(true, Ordering::SeqCst);
    }

    /// The vsock poller's answer and its time, once (the poller ends with it).
    pub fn vsock_ready(&mut self) -> Option<(u64, Ready)> {
        if !self.vsock.as_ref().is_some_and(Reader::is_finished) {
            return None;
        }
        self.vsock.take().and_then(Reader::finish).flatten()
    }

    /// Stops the VMM (if it still runs) and the readers, and returns what they heard and the VMM's
    /// files; then removes the rest.
    pub fn finish(self) -> Captured {
        let Running { plan, debugcon_chunks, debugcon_connected, pushes, vmm, notify, vsock, debugcon, _vhost, _tap, _dir, .. } = self;
        drop(vmm);
        drop(notify);
        drop(vsock);
        if let Some(d) = debugcon {
            d.finish();
        }
        Captured {
            debugcon: debugcon_chunks.snapshot(),
            debugcon_connected_us: debugcon_connected.lock().ok().and_then(|c| *c),
            pushes: pushes.snapshot(),
            serial: read_lossy(&plan.spec.serial),
            event_monitor: read_lossy(&plan.spec.event_monitor),
            vmm_log: read_lossy(&plan.spec.log_file),
            diagnostics: diagnostics(&plan),
        }
    }
}
