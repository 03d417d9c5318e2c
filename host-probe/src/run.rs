//! `host-probe run`: plan a boot ([`plan`], pure given the host facts), then carry it out
//! ([`execute`]): run directory, TAP, vhost-device-vsock, the VMM, listeners for port-0x80 marks and
//! chinit's notify, polling `/ready`, memory at ready, shutdown, and the report.
//!
//! Everything a run makes is held by a guard whose `Drop` removes it, so success, failure, timeout and
//! a signal all leave nothing behind.

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use agent::proto::{Ready, DEFAULT_PORT, DEFAULT_VSOCK_PORT};

use crate::check::KvmKind;
use crate::cmdline::{self, RootKind};
use crate::error::{absolute, Error};
use crate::measure;
use crate::report::{self, HostTimes, Memory, Report};
use crate::tap::{self, Tap};
use crate::vmm::{self, Accel, Net, Root, Spec, Vmm, Vsock};

/// The host vsock port chinit pushes its Ready JSON to.
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

/// Which VMM the user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum VmmChoice {
    Auto,
    CloudHypervisor,
    Qemu,
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
        }
    }
}

/// What the host offers, as far as planning cares.
#[derive(Debug, Clone)]
pub struct HostOffer {
    pub kvm: KvmKind,
    pub kvm_usable: bool,
    pub cloud_hypervisor: Option<PathBuf>,
    pub qemu: Option<PathBuf>,
    pub vhost_vsock: Option<PathBuf>,
    pub cache_root: Option<PathBuf>,
    /// The host's TSC rate, when it is constant (given to TCG guests).
    pub tsc_khz: Option<u64>,
}

impl HostOffer {
    pub fn gather() -> HostOffer {
        HostOffer {
            kvm: crate::check::host_kvm_kind(),
            kvm_usable: std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm").is_ok(),
            cloud_hypervisor: crate::locate::cloud_hypervisor(),
            qemu: crate::locate::which(crate::locate::QEMU),
            vhost_vsock: crate::locate::which(crate::locate::VHOST_VSOCK),
            cache_root: crate::locate::this_cache_root(),
            tsc_khz: crate::tsc::host_tsc_khz(Duration::from_millis(20)),
        }
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
    pub run_dir: PathBuf,
    /// The hybrid-vsock Unix socket (bound by cloud-hypervisor or vhost-device-vsock).
    pub vsock_uds: Option<PathBuf>,
    pub tap: Option<Net>,
    pub guest_ip: Option<String>,
    pub notes: Vec<String>,
    pub root_kind: RootKind,
    pub root_path: PathBuf,
    pub root_attach: String,
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// The next run's sequence number in this process (names of the run directory and TAP).
pub fn next_seq() -> u32 {
    SEQ.fetch_add(1, Ordering::SeqCst)
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
    cmdline::check_init(&o.init).map_err(Error::Usage)?;
    let mut notes = Vec::new();
    let vmm = match o.vmm {
        VmmChoice::CloudHypervisor => {
            if host.cloud_hypervisor.is_none() {
                return Err(Error::Missing {
                    what: "cloud-hypervisor not found (neither $CLOUD_HYPERVISOR nor on PATH)".into(),
                    fix: "install cloud-hypervisor v53, or use --vmm qemu".into(),
                });
            }
            if !host.kvm.hardware() {
                notes.push("no hardware KVM: cloud-hypervisor cannot run a Linux guest on this host".into());
            }
            Vmm::CloudHypervisor
        }
        VmmChoice::Qemu => Vmm::Qemu,
        VmmChoice::Auto => {
            if host.cloud_hypervisor.is_some() && host.kvm.hardware() && host.kvm_usable {
                Vmm::CloudHypervisor
            } else {
                Vmm::Qemu
            }
        }
    };
    let (binary, accel) = match vmm {
        Vmm::CloudHypervisor => (host.cloud_hypervisor.clone().unwrap_or_default(), Accel::Kvm),
        Vmm::Qemu => {
            let bin = host.qemu.clone().ok_or_else(|| Error::Missing {
                what: "qemu-system-x86_64 not found".into(),
                fix: "apt-get install qemu-system-x86".into(),
            })?;
            if host.kvm.hardware() && host.kvm_usable {
                (bin, Accel::Kvm)
            } else {
                notes.push(tcg_note(host.kvm, host.kvm_usable));
                (bin, Accel::Tcg)
            }
        }
    };

    let kernel = match &o.kernel {
        Some(k) if k.is_file() => absolute(k),
        Some(k) => return Err(Error::missing_file("kernel", k, "pass an existing --kernel, or run `rootfs-builder kernel`")),
        None => {
            let file = crate::locate::kernel_file_name(vmm);
            host.cache_root.as_deref().and_then(|r| crate::locate::default_kernel(r, file)).ok_or_else(|| Error::Missing {
                what: format!(
                    "no kernel ({file}) in {}/kernels",
                    host.cache_root.as_deref().map(|p| p.display().to_string()).unwrap_or_else(|| "the kernel cache".into())
                ),
                fix: "run `rootfs-builder kernel`, or pass --kernel".into(),
            })?
        }
    };

    // An initramfs alone is the whole root; with --rootfs it is chinit's initramfs mode: chinit
    // starts from it, then switches to the (read-only) root device.
    let initramfs = match &o.initramfs {
        Some(i) => {
            if !i.is_file() {
                return Err(Error::missing_file("initramfs", i, "run `rootfs-builder --initramfs <file>`"));
            }
            if !kernel_supports_initrd(&kernel) {
                return Err(Error::Missing {
                    what: format!("{} is built without initramfs support (CONFIG_BLK_DEV_INITRD)", kernel.display()),
                    fix: "rebuild the kernel with CONFIG_BLK_DEV_INITRD=y, or boot from --rootfs alone".into(),
                });
            }
            Some(absolute(i))
        }
        None => None,
    };
    let (root, root_kind, root_path, mut root_attach) = match (&initramfs, &o.rootfs) {
        (Some(i), None) => (
            Root::Initramfs(i.clone()),
            RootKind::Initramfs,
            i.clone(),
            "initramfs (the VMM copies it into guest memory; the file is only read)".to_string(),
        ),
        (_, r) => {
            let path = r.clone().unwrap_or_else(|| PathBuf::from(crate::locate::DEFAULT_IMAGE));
            if !path.is_file() {
                return Err(Error::missing_file(
                    "root image",
                    &path,
                    "run `rootfs-builder --out rootfs_fast.ext4`, or pass --rootfs / --initramfs",
                ));
            }
            let p = absolute(&path);
            match o.root_mode {
                RootMode::Disk => {
                    (Root::Disk(p.clone()), RootKind::Disk, p, "read-only virtio-blk: the image is never written, no copy".to_string())
                }
                RootMode::Pmem => {
                    if vmm == Vmm::Qemu {
                        return Err(Error::Usage(vmm::qemu::PMEM_UNSUPPORTED.into()));
                    }
                    (
                        Root::Pmem(p.clone()),
                        RootKind::Pmem,
                        p,
                        "pmem with discard_writes=on: guest writes never reach the image".to_string(),
                    )
                }
            }
        }
    };
    // The initramfs in front of a root device (chinit's initramfs mode).
    let initramfs_first = initramfs.filter(|_| root_kind != RootKind::Initramfs);
    if let Some(i) = &initramfs_first {
        root_attach.push_str(&format!("; starts from the initramfs {} (only read)", i.display()));
    }

    let pid = std::process::id();
    let run_dir = std::env::temp_dir().join(format!("host-probe-{pid}-{seq}"));
    let (tap, guest_ip) = if o.net {
        let ip = tap::guest_ip(pid, seq);
        (Some(Net { tap: tap::tap_name(pid, seq), mac: tap::guest_mac(&ip) }), Some(ip))
    } else {
        (None, None)
    };

    let vsock_uds = run_dir.join("vsock.sock");
    let (vsock, vhost_argv, vsock_uds) = match (vmm, o.vsock) {
        (_, false) => (None, None, None),
        (Vmm::CloudHypervisor, true) => (Some(Vsock { cid: GUEST_CID, socket: vsock_uds.clone() }), None, Some(vsock_uds)),
        (Vmm::Qemu, true) => match &host.vhost_vsock {
            Some(bin) => {
                let user = run_dir.join("vhost-user.sock");
                let argv = vec![
                    bin.display().to_string(),
                    "--guest-cid".into(),
                    GUEST_CID.to_string(),
                    "--socket".into(),
                    user.display().to_string(),
                    "--uds-path".into(),
                    vsock_uds.display().to_string(),
                ];
                (Some(Vsock { cid: GUEST_CID, socket: user }), Some(argv), Some(vsock_uds))
            }
            None => {
                notes.push("vhost-device-vsock not found: no vsock (fix: cargo install vhost-device-vsock)".into());
                (None, None, None)
            }
        },
    };

    if o.wait == Wait::Agent && tap.is_none() && vsock.is_none() {
        return Err(Error::Usage(
            "no way to reach chinit: without a network device (--no-net) the guest needs vsock \
             (drop --no-vsock; QEMU also needs vhost-device-vsock: cargo install vhost-device-vsock)"
                .into(),
        ));
    }
    let cmdline = cmdline::build(&cmdline::Guest {
        root: root_kind,
        initramfs_first: initramfs_first.is_some(),
        ip: guest_ip.as_ref().map(|ip| format!("{ip}/16")),
        port: DEFAULT_PORT,
        vsock_port: vsock.as_ref().map(|_| DEFAULT_VSOCK_PORT),
        notify_port: vsock.as_ref().map(|_| NOTIFY_PORT),
        tsc_khz: host.tsc_khz.filter(|_| accel == Accel::Tcg),
        init: o.init.clone(),
        extra: o.cmdline_extra.clone(),
    });
    let spec = Spec {
        binary,
        kernel,
        root,
        initramfs: initramfs_first,
        cmdline,
        cpus: o.cpus,
        memory_mib: o.memory_mib,
        net: tap.clone(),
        vsock,
        serial: run_dir.join("serial.log"),
        api_socket: run_dir.join("api.sock"),
        event_monitor: run_dir.join("events.json"),
        log_file: run_dir.join("vmm.log"),
        debugcon_socket: run_dir.join("debugcon.sock"),
        accel,
    };
    let argv = match vmm {
        Vmm::CloudHypervisor => vmm::ch::argv(&spec),
        Vmm::Qemu => vmm::qemu::argv(&spec).map_err(|e| Error::Usage(e.into()))?,
    };
    Ok(Plan { vmm, accel, spec, argv, vhost_argv, run_dir, vsock_uds, tap, guest_ip, notes, root_kind, root_path, root_attach })
}

/// What `--dry-run` prints: the TAP setup, the helper, and the VMM command line.
pub fn dry_run_text(p: &Plan) -> String {
    let mut o = String::new();
    for n in &p.notes {
        o.push_str(&format!("# note: {n}\n"));
    }
    o.push_str(&format!("mkdir -p {}\n", p.run_dir.display()));
    if let (Some(net), Some(ip)) = (&p.tap, &p.guest_ip) {
        for args in tap::setup_commands(&net.tap, ip, &net.mac) {
            o.push_str(&format!("ip {}\n", args.join(" ")));
        }
    }
    if let Some(v) = &p.vhost_argv {
        o.push_str(&format!("{} &\n", vmm::shell_line(v)));
    }
    o.push_str(&vmm::shell_line(&p.argv));
    o.push('\n');
    o
}

/// The run directory; removed on drop unless kept.
struct RunDir {
    path: PathBuf,
    keep: bool,
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

/// A child process in its own process group: on drop it gets SIGTERM, then SIGKILL after a grace time.
struct Proc {
    child: Child,
    name: String,
}

impl Proc {
    fn spawn(argv: &[String], name: &str, out: &Path) -> Result<Proc, Error> {
        let log = std::fs::File::create(out).map_err(Error::io(format!("create {}", out.display())))?;
        let err = log.try_clone().map_err(Error::io("dup a log file"))?;
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            // Own process group: a Ctrl-C in the terminal reaches host-probe only, which then
            // stops the children in order.
            .process_group(0);
        // SAFETY: prctl(2) is async-signal-safe and touches no memory of the parent; if host-probe
        // is killed outright, the child gets SIGKILL instead of living on.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|e| Error::Helper {
            what: name.to_string(),
            detail: format!("{}: {e}", argv[0]),
            fix: "check that the program exists and is executable (host-probe check)".into(),
        })?;
        Ok(Proc { child, name: name.to_string() })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits up to `grace` for a voluntary exit.
    fn wait_for(&mut self, grace: Duration) -> Option<std::process::ExitStatus> {
        let end = Instant::now() + grace;
        loop {
            if let Some(s) = self.exited() {
                return Some(s);
            }
            if Instant::now() >= end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn signal(&self, sig: i32) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) with a pid we own and have not reaped yet (the caller checked exited()).
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.exited().is_some() {
            return;
        }
        self.signal(libc::SIGTERM);
        if self.wait_for(Duration::from_secs(2)).is_none() {
            self.signal(libc::SIGKILL);
            let _ = self.child.wait();
            eprintln!("host-probe: {} did not stop on SIGTERM; killed", self.name);
        }
    }
}

/// A background reader that stops when asked.
struct Reader<T> {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<T>>,
}

impl<T> Reader<T> {
    fn finish(mut self) -> Option<T> {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.take().and_then(|h| h.join().ok())
    }
}

impl<T> Drop for Reader<T> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn micros_since(t0: Instant) -> u64 {
    u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// Accepts one connection, checking `stop` every millisecond.
fn accept_until(l: &UnixListener, stop: &AtomicBool) -> Option<UnixStream> {
    l.set_nonblocking(true).ok()?;
    while !stop.load(Ordering::SeqCst) {
        match l.accept() {
            Ok((s, _)) => {
                let _ = s.set_nonblocking(false);
                return Some(s);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(1)),
            Err(_) => return None,
        }
    }
    None
}

/// QEMU's debugcon: one connection; every chunk read is stamped on arrival.
type Chunks = Arc<Mutex<Vec<(u64, Vec<u8>)>>>;

fn debugcon_reader(l: UnixListener, t0: Instant, chunks: Chunks, connected: Arc<Mutex<Option<u64>>>) -> Reader<()> {
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    let handle = std::thread::spawn(move || {
        let Some(mut s) = accept_until(&l, &s2) else {
            return;
        };
        if let Ok(mut c) = connected.lock() {
            *c = Some(micros_since(t0));
        }
        let _ = s.set_read_timeout(Some(Duration::from_millis(20)));
        let mut buf = [0u8; 256];
        loop {
            match s.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    let t = micros_since(t0);
                    if let Ok(mut c) = chunks.lock() {
                        c.push((t, buf[..n].to_vec()));
                    }
                }
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                    if s2.load(Ordering::SeqCst) {
                        return;
                    }
                }
                Err(_) => return,
            }
        }
    });
    Reader { stop, handle: Some(handle) }
}

/// What chinit pushed over its notify port, each with the host time at its EOF.
type Pushes = Arc<Mutex<Vec<(u64, Vec<u8>)>>>;

/// chinit's notify: one connection per push (ready, then the workload's exit), each a Ready JSON
/// line then EOF. The time is taken at EOF.
fn notify_reader(l: UnixListener, t0: Instant, pushes: Pushes) -> Reader<()> {
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    let handle = std::thread::spawn(move || {
        while let Some(mut s) = accept_until(&l, &s2) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let mut body = Vec::new();
            let _ = s.read_to_end(&mut body);
            if let Ok(mut p) = pushes.lock() {
                p.push((micros_since(t0), body));
            }
        }
    });
    Reader { stop, handle: Some(handle) }
}

/// The newest workload status among the pushes, else the one in `ready`.
fn latest_workload(pushes: &[(u64, Vec<u8>)], ready: Option<&Ready>) -> Option<agent::proto::Workload> {
    pushes
        .iter()
        .rev()
        .find_map(|(_, b)| serde_json::from_slice::<Ready>(b).ok().and_then(|r| r.workload))
        .or(ready.and_then(|r| r.workload))
}

/// Whether QEMU's debugcon has carried this port-0x80 code yet.
fn mark_seen(chunks: &Chunks, code: u8) -> bool {
    chunks.lock().map(|c| c.iter().any(|(_, b)| b.contains(&code))).unwrap_or(false)
}

/// What the host knows of the guest while it waits for `/ready` over the TAP.
#[derive(Debug, Clone, Copy, Default)]
struct Heard {
    /// The init wrote its first port-0x80 mark: it will write the ready mark too.
    init_mark: bool,
    ready_mark: bool,
    notified: bool,
    /// Waited long enough that the guest is slow anyway (or its marks went missing).
    long: bool,
}

/// Whether to send a `GET /ready` over the TAP now, and the connect timeout to give it.
///
/// Every connection attempt costs the guest: a SYN that reaches it before its agent listens is
/// answered with a reset, in the guest's time, and under emulation the first of them cost
/// milliseconds of the boot being measured. So a guest whose init announces itself on port 0x80
/// (chinit's first mark) is asked only once it said it is ready (its ready mark, or the vsock
/// notify); a guest that writes no marks can only be polled, with short connects.
fn tcp_ask(h: Heard) -> Option<Duration> {
    let told = h.ready_mark || h.notified;
    if told || h.long {
        Some(Duration::from_millis(500))
    } else if h.init_mark {
        None
    } else {
        Some(Duration::from_millis(20))
    }
}

/// One `GET /ready` over TCP; `Some` on a 200 with a Ready body.
fn ready_over_tcp(addr: SocketAddr, connect_timeout: Duration) -> Option<Ready> {
    let mut s = TcpStream::connect_timeout(&addr, connect_timeout).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.set_write_timeout(Some(Duration::from_secs(2))).ok()?;
    let r = agent::client::request(&mut s, "GET", "/ready", None).ok()?;
    (r.status == 200).then(|| r.json().ok()).flatten()
}

/// One `GET /ready` over hybrid vsock.
fn ready_over_vsock(uds: &Path) -> Option<Ready> {
    let mut s = agent::client::vsock_connect(uds, DEFAULT_VSOCK_PORT, Duration::from_secs(1)).ok()?;
    let r = agent::client::request(&mut s, "GET", "/ready", None).ok()?;
    (r.status == 200).then(|| r.json().ok()).flatten()
}

/// Polls `GET /ready` over vsock on its own thread, so its time does not wait on the TAP's: once
/// `go` is set every 5 ms (a connection can hang while the guest's driver is not up, so not before
/// something said ready), or every 100 ms from the start when vsock is the only way in (`eager`).
fn vsock_poller(uds: PathBuf, t0: Instant, go: Arc<AtomicBool>, eager: bool) -> Reader<Option<(u64, Ready)>> {
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    let handle = std::thread::spawn(move || {
        let mut last: Option<Instant> = None;
        while !s2.load(Ordering::SeqCst) {
            let due = go.load(Ordering::SeqCst) || (eager && last.is_none_or(|l| l.elapsed() > Duration::from_millis(100)));
            if due {
                last = Some(Instant::now());
                if let Some(r) = ready_over_vsock(&uds) {
                    return Some((micros_since(t0), r));
                }
                std::thread::sleep(Duration::from_millis(5));
            } else {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        None
    });
    Reader { stop, handle: Some(handle) }
}

/// Asks chinit to power off: over TCP, else (no TAP, or the control API is not served on TCP:
/// 403 without `chinit.api=tcp`) over vsock. True once an answer accepted it (202).
fn shutdown_guest(addr: Option<SocketAddr>, uds: Option<&Path>) -> bool {
    let body = br#"{"action":"poweroff"}"#;
    let accepted = |r: Result<agent::client::Response, _>| r.is_ok_and(|r| r.status == 202);
    if let Some(a) = addr {
        if let Ok(mut s) = TcpStream::connect_timeout(&a, Duration::from_millis(500)) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            if accepted(agent::client::request(&mut s, "POST", "/v1/shutdown", Some(body))) {
                return true;
            }
        }
    }
    if let Some(u) = uds {
        if let Ok(mut s) = agent::client::vsock_connect(u, DEFAULT_VSOCK_PORT, Duration::from_secs(1)) {
            return accepted(agent::client::request(&mut s, "POST", "/v1/shutdown", Some(body)));
        }
    }
    false
}

/// RSS and PSS in KiB from a `/proc/<pid>/smaps_rollup` text.
pub fn parse_smaps_rollup(text: &str) -> Option<Memory> {
    let field = |name: &str| {
        text.lines().find_map(|l| l.strip_prefix(name)).and_then(|rest| rest.split_whitespace().next()).and_then(|n| n.parse::<u64>().ok())
    };
    Some(Memory { rss_kib: field("Rss:")?, pss_kib: field("Pss:")? })
}

fn read_lossy(p: &Path) -> String {
    std::fs::read(p).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
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
    let vmm_tail = match measure::ch_first_error(&vmm_log) {
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

fn wait_for_path(p: &Path, within: Duration, proc_: &mut Proc) -> bool {
    let end = Instant::now() + within;
    while Instant::now() < end {
        if p.exists() {
            return true;
        }
        if proc_.exited().is_some() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    false
}

fn interrupted() -> Result<(), Error> {
    match crate::signals::received() {
        Some(sig) => Err(Error::Interrupted(sig)),
        None => Ok(()),
    }
}

fn progress(o: &Options, msg: &str) {
    if o.verbose {
        eprintln!("host-probe: {msg}");
    }
}

/// Carries out a plan and measures it.
pub fn execute(plan: &Plan, o: &Options) -> Result<Report, Error> {
    if let Some(parent) = plan.run_dir.parent() {
        for what in crate::stale::sweep(parent) {
            eprintln!("host-probe: removed {what}, left by a run that was killed");
        }
    }
    // Guards are declared in the order things are made; they drop in reverse.
    let _ = std::fs::remove_dir_all(&plan.run_dir);
    std::fs::create_dir_all(&plan.run_dir).map_err(Error::io(format!("create {}", plan.run_dir.display())))?;
    let _dir = RunDir { path: plan.run_dir.clone(), keep: o.keep };
    let _tap = match (&plan.tap, &plan.guest_ip) {
        (Some(net), Some(ip)) => {
            progress(o, &format!("TAP {} (host 169.254.0.1/16, guest {ip})", net.tap));
            Some(Tap::create(&net.tap, ip, &net.mac)?)
        }
        _ => None,
    };
    interrupted()?;
    let _vhost = match &plan.vhost_argv {
        Some(argv) => {
            let mut p = Proc::spawn(argv, "vhost-device-vsock", &plan.run_dir.join("vhost.out"))?;
            let sock = plan.spec.vsock.as_ref().map(|v| v.socket.clone()).unwrap_or_default();
            if !wait_for_path(&sock, Duration::from_secs(5), &mut p) {
                return Err(Error::Helper {
                    what: "vhost-device-vsock".into(),
                    detail: format!("no socket {} after 5 s: {}", sock.display(), read_lossy(&plan.run_dir.join("vhost.out")).trim()),
                    fix: "cargo install vhost-device-vsock (0.3 or later), or pass --no-vsock".into(),
                });
            }
            Some(p)
        }
        None => None,
    };
    let notify_listener = match &plan.vsock_uds {
        Some(uds) => {
            let path = PathBuf::from(format!("{}_{NOTIFY_PORT}", uds.display()));
            Some(UnixListener::bind(&path).map_err(Error::io(format!("bind {}", path.display())))?)
        }
        None => None,
    };
    let debugcon_listener = match plan.vmm {
        Vmm::Qemu => Some(
            UnixListener::bind(&plan.spec.debugcon_socket).map_err(Error::io(format!("bind {}", plan.spec.debugcon_socket.display())))?,
        ),
        Vmm::CloudHypervisor => None,
    };
    interrupted()?;

    progress(o, &format!("starting {}", vmm::shell_line(&plan.argv)));
    let t0 = Instant::now();
    let mut vmm_proc = Proc::spawn(&plan.argv, plan.vmm.name(), &plan.run_dir.join("vmm.out"))?;
    let chunks: Chunks = Arc::new(Mutex::new(Vec::new()));
    let connected = Arc::new(Mutex::new(None));
    let debugcon = debugcon_listener.map(|l| debugcon_reader(l, t0, chunks.clone(), connected.clone()));
    let pushes: Pushes = Arc::new(Mutex::new(Vec::new()));
    let notify = notify_listener.map(|l| notify_reader(l, t0, pushes.clone()));

    let addr: Option<SocketAddr> = plan.guest_ip.as_ref().and_then(|ip| format!("{ip}:{DEFAULT_PORT}").parse().ok());
    let mut host = HostTimes::default();
    let mut ready: Option<Ready> = None;
    let mut notify_body: Option<Vec<u8>> = None;
    let mut memory = None;
    let mut first_ready_at: Option<Instant> = None;
    let mut vmm_exit = None;
    let mut last_event_check = Instant::now();
    let vsock_go = Arc::new(AtomicBool::new(false));
    let mut vsock = match (&plan.vsock_uds, o.wait) {
        (Some(uds), Wait::Agent) => Some(vsock_poller(uds.clone(), t0, vsock_go.clone(), addr.is_none())),
        _ => None,
    };

    loop {
        interrupted()?;
        if let Some(status) = vmm_proc.exited() {
            vmm_exit = Some(status);
            if o.wait == Wait::Exit {
                break;
            }
            return Err(Error::VmmExited { vmm: plan.vmm.name().into(), status: status.to_string(), diagnostics: diagnostics(plan) });
        }
        if plan.vmm == Vmm::CloudHypervisor && last_event_check.elapsed() > Duration::from_millis(50) {
            last_event_check = Instant::now();
            let events = measure::parse_ch_events(&read_lossy(&plan.spec.event_monitor));
            if measure::event_at(&events, "vm", "rebooting").is_some() {
                return Err(Error::VmmExited {
                    vmm: plan.vmm.name().into(),
                    status: "the guest reset (kernel panic or reboot)".into(),
                    diagnostics: diagnostics(plan),
                });
            }
        }
        if t0.elapsed() > o.timeout {
            let waiting_for = match o.wait {
                Wait::Exit => "waiting for the VMM to exit".to_string(),
                Wait::Agent => {
                    let mut w = vec![];
                    if addr.is_some() && host.ready_tcp_us.is_none() {
                        w.push("/ready over TAP");
                    }
                    if plan.vsock_uds.is_some() && host.ready_vsock_us.is_none() {
                        w.push("/ready over vsock");
                    }
                    if notify.is_some() && host.notify_us.is_none() {
                        w.push("notify");
                    }
                    format!("waiting for {}", w.join(", "))
                }
            };
            return Err(Error::Timeout { secs: o.timeout.as_secs(), waiting_for, diagnostics: diagnostics(plan) });
        }
        if o.wait == Wait::Agent {
            if host.notify_us.is_none() {
                if let Some((t, body)) = pushes.lock().ok().and_then(|p| p.first().cloned()) {
                    host.notify_us = Some(t);
                    notify_body = Some(body);
                    progress(o, &format!("notify at {} ms", report::ms(t)));
                }
            }
            let ready_mark = mark_seen(&chunks, measure::MARK_READY);
            if let (Some(a), None) = (addr, host.ready_tcp_us) {
                let heard = Heard {
                    init_mark: mark_seen(&chunks, measure::MARK_INIT_START),
                    ready_mark,
                    notified: host.notify_us.is_some(),
                    long: t0.elapsed() > Duration::from_secs(10),
                };
                let answer = tcp_ask(heard).and_then(|connect_timeout| {
                    host.tcp_attempts += 1;
                    if heard.init_mark {
                        *host.tcp_attempts_after_init_mark.get_or_insert(0) += 1;
                    }
                    ready_over_tcp(a, connect_timeout)
                });
                if let Some(r) = answer {
                    let t = micros_since(t0);
                    host.ready_tcp_us = Some(t);
                    progress(o, &format!("/ready over TAP at {} ms", report::ms(t)));
                    ready.get_or_insert(r);
                }
            }
            let someone_said_ready = host.ready_tcp_us.is_some() || host.notify_us.is_some();
            if someone_said_ready || ready_mark {
                vsock_go.store(true, Ordering::SeqCst);
            }
            if vsock.as_ref().and_then(|v| v.handle.as_ref()).is_some_and(|h| h.is_finished()) {
                if let Some(Some((t, r))) = vsock.take().and_then(Reader::finish) {
                    host.ready_vsock_us = Some(t);
                    progress(o, &format!("/ready over vsock at {} ms", report::ms(t)));
                    ready.get_or_insert(r);
                }
            }
            if someone_said_ready {
                let now = *first_ready_at.get_or_insert_with(Instant::now);
                if memory.is_none() {
                    memory = parse_smaps_rollup(&read_lossy(Path::new(&format!("/proc/{}/smaps_rollup", vmm_proc.pid()))));
                }
                let all = (addr.is_none() || host.ready_tcp_us.is_some())
                    && (plan.vsock_uds.is_none() || host.ready_vsock_us.is_some())
                    && (notify.is_none() || host.notify_us.is_some());
                // Once one path said ready, the others get two seconds to say it too.
                if all || now.elapsed() > Duration::from_secs(2) {
                    break;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }

    if o.wait == Wait::Agent {
        if ready.is_none() {
            if let Some(body) = &notify_body {
                ready = serde_json::from_slice(body).ok();
            }
        }
        progress(o, "asking the guest to power off");
        let asked = shutdown_guest(addr, plan.vsock_uds.as_deref());
        let grace = if asked { Duration::from_secs(10) } else { Duration::ZERO };
        vmm_exit = vmm_proc.wait_for(grace);
        if vmm_exit.is_none() {
            progress(o, "the guest did not power off; stopping the VMM");
        }
    }
    drop(vmm_proc);
    drop(notify);
    let pushes = pushes.lock().map(|p| p.clone()).unwrap_or_default();
    drop(vsock);
    if let Some(d) = debugcon {
        d.finish();
    }

    let (marks, marks_source, events) = match plan.vmm {
        Vmm::Qemu => {
            let c = chunks.lock().map(|c| c.clone()).unwrap_or_default();
            host.vmm_ready_us = connected.lock().ok().and_then(|c| *c);
            (measure::debugcon_marks(&c), "debugcon arrival", Vec::new())
        }
        Vmm::CloudHypervisor => {
            let events = measure::parse_ch_events(&read_lossy(&plan.spec.event_monitor));
            host.vmm_ready_us = measure::event_at(&events, "vm", "booting");
            (measure::parse_ch_log(&read_lossy(&plan.spec.log_file)), "vmm log prefix", events)
        }
    };
    host.marks_source = marks_source.into();
    host.marks = report::host_marks(&marks, 0);
    if o.wait == Wait::Agent && ready.is_none() {
        return Err(Error::Timeout {
            secs: o.timeout.as_secs(),
            waiting_for: "a readable Ready JSON".into(),
            diagnostics: diagnostics(plan),
        });
    }
    let phases = ready.as_ref().map(|g| report::phases(&host, g));
    let workload = latest_workload(&pushes, ready.as_ref());
    let serial = read_lossy(&plan.spec.serial);
    let mut notes = plan.notes.clone();
    if let Some(s) = vmm_exit.filter(|s| !s.success()) {
        notes.push(format!("{} exited: {s}", plan.vmm.name()));
    }
    Ok(Report {
        schema: report::SCHEMA_VERSION,
        vmm: plan.vmm.name().into(),
        accel: match plan.accel {
            Accel::Kvm => "kvm".into(),
            Accel::Tcg => "tcg".into(),
        },
        representative: plan.accel == Accel::Kvm && !notes.iter().any(|n| n.contains("KVM")),
        kernel: plan.spec.kernel.display().to_string(),
        root_kind: match plan.root_kind {
            RootKind::Disk => "disk",
            RootKind::Pmem => "pmem",
            RootKind::Initramfs => "initramfs",
        }
        .into(),
        root: plan.root_path.display().to_string(),
        root_attach: plan.root_attach.clone(),
        cmdline: plan.spec.cmdline.clone(),
        vmm_argv: plan.argv.clone(),
        notes,
        host,
        events,
        guest: ready,
        phases,
        memory,
        console_ready_ms: measure::console_ready_ms(&serial),
        workload,
    })
}

/// Plans with this host's facts and executes.
pub fn run(o: &Options) -> Result<Report, Error> {
    let plan = plan(o, &HostOffer::gather(), next_seq())?;
    for n in &plan.notes {
        progress(o, n);
    }
    execute(&plan, o)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(kvm: KvmKind, ch: bool, vhost: bool) -> HostOffer {
        HostOffer {
            kvm,
            kvm_usable: true,
            cloud_hypervisor: ch.then(|| PathBuf::from("/bin/cloud-hypervisor")),
            qemu: Some("/bin/qemu-system-x86_64".into()),
            vhost_vsock: vhost.then(|| PathBuf::from("/bin/vhost-device-vsock")),
            cache_root: None,
            tsc_khz: Some(2_600_000),
        }
    }

    /// A kernel and an image in a directory of their own, removed on drop.
    struct Fixture {
        o: Options,
        dir: PathBuf,
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn fixture() -> Fixture {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!("hp-plan-{}-{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst)));
        std::fs::create_dir_all(&dir).unwrap();
        let (k, r) = (dir.join("bzImage"), dir.join("rootfs.ext4"));
        std::fs::write(&k, b"k").unwrap();
        std::fs::write(&r, b"r").unwrap();
        Fixture { o: Options { kernel: Some(k), rootfs: Some(r), ..Options::default() }, dir }
    }

    #[test]
    fn auto_picks_cloud_hypervisor_only_with_hardware_kvm() {
        let cases = [
            (KvmKind::Hardware("kvm_intel"), true, Vmm::CloudHypervisor, Accel::Kvm, false),
            (KvmKind::Hardware("kvm_amd"), false, Vmm::Qemu, Accel::Kvm, false),
            (KvmKind::Pvm, true, Vmm::Qemu, Accel::Tcg, true),
            (KvmKind::Absent, false, Vmm::Qemu, Accel::Tcg, true),
        ];
        for (kvm, ch, vmm, accel, tcg_note) in cases {
            let p = plan(&fixture().o, &host(kvm, ch, true), 0).unwrap();
            assert_eq!((p.vmm, p.accel), (vmm, accel), "{kvm:?} ch={ch}");
            assert_eq!(p.notes.iter().any(|n| n.ends_with("using TCG emulation, timings are not representative")), tcg_note, "{kvm:?}");
            if kvm == KvmKind::Pvm {
                assert!(p.notes.iter().any(|n| n == TCG_NOTE));
            }
            assert_eq!(p.spec.cmdline.contains("tsc_early_khz="), tcg_note, "{kvm:?}");
        }
    }

    #[test]
    fn tcg_notes_say_why() {
        assert_eq!(tcg_note(KvmKind::Pvm, true), TCG_NOTE);
        assert!(tcg_note(KvmKind::Hardware("kvm_intel"), false).starts_with("/dev/kvm (kvm_intel) is not usable"));
        assert!(tcg_note(KvmKind::Absent, false).starts_with("no hardware KVM (no kvm_intel/kvm_amd)"));
    }

    #[test]
    fn qemu_plan_wires_vsock_through_vhost_device_vsock() {
        let p = plan(&fixture().o, &host(KvmKind::Pvm, false, true), 7).unwrap();
        let dir = p.run_dir.display().to_string();
        let v = p.vhost_argv.clone().unwrap().join(" ");
        assert_eq!(v, format!("/bin/vhost-device-vsock --guest-cid 3 --socket {dir}/vhost-user.sock --uds-path {dir}/vsock.sock"));
        let line = vmm::shell_line(&p.argv);
        assert!(line.contains(&format!("-chardev socket,id=vsock0,path={dir}/vhost-user.sock")), "{line}");
        assert!(line.contains("chinit.notify=vsock:10000"), "{line}");
        assert!(line.contains(&format!("chinit.ip={}/16", p.guest_ip.clone().unwrap())), "{line}");
        assert!(line.contains("read-only=on"), "{line}");
        assert!(line.contains(" tsc_early_khz=2600000"), "TCG guests get the TSC rate: {line}");
        let dry = dry_run_text(&p);
        assert!(dry.contains("ip tuntap add dev "), "{dry}");
        assert!(dry.contains("vhost-device-vsock --guest-cid 3"), "{dry}");
        assert!(dry.ends_with(&format!("{line}\n")), "{dry}");
    }

    #[test]
    fn without_vhost_device_vsock_qemu_runs_without_vsock_and_says_how_to_get_it() {
        let p = plan(&fixture().o, &host(KvmKind::Pvm, false, false), 0).unwrap();
        assert!(p.spec.vsock.is_none() && p.vsock_uds.is_none());
        assert!(p.notes.iter().any(|n| n.contains("cargo install vhost-device-vsock")));
        assert!(!p.spec.cmdline.contains("chinit.notify"));
    }

    #[test]
    fn missing_pieces_name_their_fix() {
        let h = host(KvmKind::Pvm, false, false);
        let f = fixture();
        let no_kernel = Options { kernel: None, ..f.o.clone() };
        let e = plan(&no_kernel, &h, 0).unwrap_err();
        assert_eq!(e.exit_code(), 3);
        assert!(e.to_string().contains("run `rootfs-builder kernel`"), "{e}");
        let no_image = Options { rootfs: Some("/nonexistent/rootfs.ext4".into()), ..f.o.clone() };
        let e = plan(&no_image, &h, 0).unwrap_err();
        assert!(e.to_string().contains("rootfs-builder --out rootfs_fast.ext4"), "{e}");
        let ch = Options { vmm: VmmChoice::CloudHypervisor, ..f.o.clone() };
        assert!(plan(&ch, &h, 0).unwrap_err().to_string().contains("install cloud-hypervisor"));
        let pmem = Options { root_mode: RootMode::Pmem, ..f.o.clone() };
        assert_eq!(plan(&pmem, &h, 0).unwrap_err().exit_code(), 2);
    }

    #[test]
    fn initramfs_needs_a_kernel_with_initrd_support() {
        let d = std::env::temp_dir().join(format!("hp-initrd-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let (k, i) = (d.join("bzImage"), d.join("i.cpio"));
        std::fs::write(&k, b"k").unwrap();
        std::fs::write(&i, b"i").unwrap();
        let o = Options { kernel: Some(k.clone()), initramfs: Some(i), ..Options::default() };
        let h = host(KvmKind::Pvm, false, false);
        assert!(kernel_supports_initrd(&k), "no config file: assume yes");
        assert!(plan(&o, &h, 0).is_ok());
        std::fs::write(d.join("config"), "# CONFIG_BLK_DEV_INITRD is not set\n").unwrap();
        let e = plan(&o, &h, 0).unwrap_err();
        assert!(e.to_string().contains("CONFIG_BLK_DEV_INITRD=y"), "{e}");
        std::fs::write(d.join("config"), "CONFIG_BLK_DEV_INITRD=y\n").unwrap();
        assert!(plan(&o, &h, 0).unwrap().spec.cmdline.contains("rdinit=/init"));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_guest_with_neither_net_nor_vsock_is_refused() {
        let f = fixture();
        let o = Options { net: false, ..f.o.clone() };
        let e = plan(&o, &host(KvmKind::Pvm, false, false), 0).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("cargo install vhost-device-vsock"), "{e}");
        assert!(plan(&o, &host(KvmKind::Pvm, false, true), 0).is_ok());
        let no_agent = Options { wait: Wait::Exit, vsock: false, ..o };
        assert!(plan(&no_agent, &host(KvmKind::Pvm, false, true), 0).is_ok());
    }

    #[test]
    fn initramfs_in_front_of_a_read_only_disk() {
        let d = std::env::temp_dir().join(format!("hp-initrd-disk-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let i = d.join("i.cpio");
        std::fs::write(&i, b"i").unwrap();
        let f = fixture();
        let o = Options { initramfs: Some(i.clone()), ..f.o.clone() };
        let p = plan(&o, &host(KvmKind::Pvm, false, false), 0).unwrap();
        assert_eq!(p.root_kind, RootKind::Disk);
        assert_eq!(p.spec.initramfs.as_deref(), Some(i.as_path()));
        let line = vmm::shell_line(&p.argv);
        assert!(line.contains(&format!("-initrd {}", i.display())), "{line}");
        assert!(line.contains("read-only=on"), "{line}");
        assert!(p.spec.cmdline.contains("rdinit=/init chinit.root=/dev/vda ro"), "{}", p.spec.cmdline);
        assert!(p.root_attach.contains("starts from the initramfs"), "{}", p.root_attach);
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// A one-connection HTTP server answering `status`; `hybrid` first does the vsock handshake.
    fn fake_agent<S: std::io::Read + std::io::Write + Send + 'static>(mut s: S, hybrid: bool, status: &'static str) -> JoinHandle<String> {
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            let mut buf = [0u8; 1024];
            if hybrid {
                while !seen.ends_with(b"\n") {
                    let n = s.read(&mut buf[..1]).unwrap();
                    assert!(n > 0);
                    seen.extend_from_slice(&buf[..n]);
                }
                std::io::Write::write_all(&mut s, b"OK 1073741824\n").unwrap();
            }
            while !String::from_utf8_lossy(&seen).contains("poweroff\"}") {
                let n = s.read(&mut buf).unwrap();
                assert!(n > 0);
                seen.extend_from_slice(&buf[..n]);
            }
            let answer = format!("HTTP/1.1 {status}\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}");
            std::io::Write::write_all(&mut s, answer.as_bytes()).unwrap();
            String::from_utf8_lossy(&seen).into_owned()
        })
    }

    #[test]
    fn shutdown_falls_back_to_vsock_when_tcp_refuses_the_control_api() {
        let dir = std::env::temp_dir().join(format!("hp-shutdown-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let uds = dir.join("vsock.sock");
        for (tcp_status, vsock_used, want) in [("202 Accepted", false, true), ("403 Forbidden", true, true)] {
            let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = tcp.local_addr().unwrap();
            let _ = std::fs::remove_file(&uds);
            let vsock = UnixListener::bind(&uds).unwrap();
            let t = std::thread::spawn(move || fake_agent(tcp.accept().unwrap().0, false, tcp_status).join().unwrap());
            let v = std::thread::spawn(move || {
                vsock.set_nonblocking(true).unwrap();
                for _ in 0..500 {
                    if let Ok((s, _)) = vsock.accept() {
                        s.set_nonblocking(false).unwrap();
                        return Some(fake_agent(s, true, "202 Accepted").join().unwrap());
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
                None
            });
            assert_eq!(shutdown_guest(Some(addr), Some(&uds)), want, "TCP answered {tcp_status}");
            assert!(t.join().unwrap().starts_with("POST /v1/shutdown "));
            let over_vsock = v.join().unwrap();
            assert_eq!(over_vsock.is_some(), vsock_used, "TCP answered {tcp_status}: {over_vsock:?}");
            if let Some(text) = over_vsock {
                assert!(text.starts_with("CONNECT 1024\n") && text.contains("POST /v1/shutdown "), "{text}");
            }
        }
        // Refused everywhere: not asked.
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = tcp.local_addr().unwrap();
        let t = std::thread::spawn(move || fake_agent(tcp.accept().unwrap().0, false, "403 Forbidden").join().unwrap());
        assert!(!shutdown_guest(Some(addr), None));
        t.join().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_newest_pushed_workload_status_wins() {
        let doc =
            |w: &str| format!(r#"{{"ready":true,"version":"v","mode":"vm","init_start_us":1,"ready_us":2,"steps":[]{w}}}"#).into_bytes();
        let running = r#","workload":{"pid":9,"running":true}"#;
        let exited = r#","workload":{"pid":9,"running":false,"exit_code":3}"#;
        let ready: Ready = serde_json::from_slice(&doc(running)).unwrap();
        let got = |pushes: &[(u64, Vec<u8>)], ready: Option<&Ready>| latest_workload(pushes, ready).map(|w| w.to_string());
        assert_eq!(got(&[(5, doc(running)), (9, doc(exited))], Some(&ready)).as_deref(), Some("exited with code 3 (pid 9)"));
        // A push cut short says nothing; /ready's status stands then.
        assert_eq!(got(&[(9, b"{\"ready\":tr".to_vec())], Some(&ready)).as_deref(), Some("running (pid 9)"));
        assert_eq!(got(&[(5, doc(""))], None), None);
    }

    #[test]
    fn smaps_rollup_rss_and_pss() {
        let text = "55d0c0000000-7ffc0000000 ---p 00000000 00:00 0   [rollup]\nRss:              204800 kB\nPss:              102400 kB\nPss_Anon:          90000 kB\n";
        assert_eq!(parse_smaps_rollup(text), Some(Memory { rss_kib: 204_800, pss_kib: 102_400 }));
        assert_eq!(parse_smaps_rollup("Rss: 1 kB\n"), None);
    }

    #[test]
    fn tcp_polling_waits_for_a_guest_that_announces_itself() {
        let quiet = Heard::default();
        let short = Some(Duration::from_millis(20));
        let patient = Some(Duration::from_millis(500));
        let cases = [
            // No marks (not chinit, or marks off): poll with short connects.
            (quiet, short),
            // chinit started: wait for its word instead of sending SYNs into its boot.
            (Heard { init_mark: true, ..quiet }, None),
            (Heard { init_mark: true, ready_mark: true, ..quiet }, patient),
            (Heard { init_mark: true, notified: true, ..quiet }, patient),
            (Heard { notified: true, ..quiet }, patient),
            // The ready mark without the first one (a lost byte) still counts.
            (Heard { ready_mark: true, ..quiet }, patient),
            // Slow anyway, or its marks went missing: ask.
            (Heard { init_mark: true, long: true, ..quiet }, patient),
            (Heard { long: true, ..quiet }, patient),
        ];
        for (heard, want) in cases {
            assert_eq!(tcp_ask(heard), want, "{heard:?}");
        }
    }
}
