//! chinit as PID 1 of fresh namespaces, with a veth pair: the harness of the namespace tests and of
//! the native benchmark.
//!
//! Two unnamed network namespaces are made per run and held only by file descriptors, so nothing is
//! left behind whatever happens to the test process: the "host" one holds `vh` (169.254.0.1/16), the
//! "guest" one holds its peer `eth0`. chinit is cloned straight into new PID, mount and UTS namespaces
//! inside the guest network namespace, so it is PID 1 there and the clock starts at the clone.

use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use agent::client::{self, Response};
use agent::proto::Ready;

use crate::vm::TempDir;
use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

pub const HOST_IP: Ipv4Addr = Ipv4Addr::new(169, 254, 0, 1);
pub const GUEST_IP: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 2);
const HOST_MAC: &str = "02:00:00:00:00:01";
pub const GUEST_MAC: &str = "02:00:00:00:01:02";
pub const PORT: u16 = 1024;

pub type Error = String;

/// Path of the musl build of chinit (`$CHINIT_BIN`, or built once per process: a no-op when up to date).
pub fn chinit_bin() -> Result<PathBuf, Error> {
    static BIN: OnceLock<Result<PathBuf, Error>> = OnceLock::new();
    BIN.get_or_init(|| match std::env::var("CHINIT_BIN") {
        Ok(p) => Ok(PathBuf::from(p)),
        Err(_) => crate::vm::try_cargo_build("chinit", "chinit", Some("x86_64-unknown-linux-musl"), true)
            .map_err(|e| format!("{e}\n(is the target installed? rustup target add x86_64-unknown-linux-musl)")),
    })
    .clone()
}

/// The baseline init of docs/benchmarks.md, run from this host's programs: busybox-static's
/// `/bin/busybox`, the repository's `baseline/init.sh` (which execs `python3 baseline/agent.py`).
/// Start it with [`Chinit::start_program`]`(&busybox, &baseline_args(&script, cmdline), ...)`.
pub fn baseline_init() -> Result<(PathBuf, PathBuf), Error> {
    let busybox = PathBuf::from("/bin/busybox");
    if !busybox.exists() {
        return Err("the baseline needs busybox-static's /bin/busybox: apt-get install busybox-static".into());
    }
    if !Path::new("/usr/bin/python3").exists() {
        return Err("the baseline needs /usr/bin/python3: apt-get install python3".into());
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().ok_or("no workspace root")?;
    Ok((busybox, root.join("baseline/init.sh")))
}

/// `sh SCRIPT --cmdline CMDLINE`: the arguments after busybox's path.
pub fn baseline_args<'a>(script: &'a Path, cmdline: &'a str) -> [&'a str; 4] {
    ["sh", script.to_str().unwrap_or("baseline/init.sh"), "--cmdline", cmdline]
}

/// Whether this process may make namespaces (root with CAP_SYS_ADMIN).
pub fn can_make_namespaces() -> Result<(), Error> {
    if !nix::unistd::geteuid().is_root() {
        return Err("namespace tests need root (CAP_SYS_ADMIN, CAP_NET_ADMIN)".into());
    }
    if Command::new("ip").arg("-V").output().is_err() {
        return Err("namespace tests need iproute2's ip: apt-get install iproute2".into());
    }
    Ok(())
}

/// A network namespace held by a descriptor only.
pub struct Netns {
    fd: OwnedFd,
}

impl Netns {
    /// Makes a new network namespace (on a short-lived thread: the namespace outlives it through `fd`).
    pub fn new() -> Result<Netns, Error> {
        std::thread::spawn(|| -> Result<Netns, Error> {
            unshare(CloneFlags::CLONE_NEWNET).map_err(|e| format!("unshare(CLONE_NEWNET): {e}"))?;
            let f = File::open("/proc/thread-self/ns/net").map_err(|e| format!("open netns: {e}"))?;
            Ok(Netns { fd: f.into() })
        })
        .join()
        .map_err(|_| "netns thread panicked".to_string())?
    }

    /// Runs `f` on a thread inside this namespace (sockets it makes stay there).
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T, Error> {
        let fd = self.fd.try_clone().map_err(|e| e.to_string())?;
        std::thread::spawn(move || {
            setns(fd.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|e| format!("setns: {e}"))?;
            Ok(f())
        })
        .join()
        .map_err(|_| "netns thread panicked".to_string())?
    }

    /// `/proc/<pid>/fd/<n>`: a path other programs (ip) can open to name this namespace.
    pub fn path(&self) -> String {
        format!("/proc/{}/fd/{}", std::process::id(), self.fd.as_raw_fd())
    }
}

fn ip(args: &[&str]) -> Result<(), Error> {
    let out = Command::new("ip").args(args).output().map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// How the host side knows the guest's MAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Neighbour {
    /// A permanent entry made in advance (what the benchmarks have always used).
    Static,
    /// None: the host learns it by ARP, as a bridge, an orchestrator's veth or a user's poller does.
    Learned,
}

/// The two namespaces and the veth pair between them.
pub struct Wire {
    pub host: Netns,
    pub guest: Netns,
}

impl Wire {
    /// `vh` (169.254.0.1/16) in the host namespace, `eth0` (down, no address) in the guest one; a
    /// permanent neighbour entry for the guest address, so the first SYN needs no ARP round.
    pub fn new() -> Result<Wire, Error> {
        Wire::with_neighbour(Neighbour::Static)
    }

    /// The same, with the host's neighbour entry for the guest as asked.
    pub fn with_neighbour(neighbour: Neighbour) -> Result<Wire, Error> {
        let host = Netns::new()?;
        let guest = Netns::new()?;
        let guest_path = guest.path();
        host.run(move || -> Result<(), Error> {
            ip(&[
                "link",
                "add",
                "vh",
                "address",
                HOST_MAC,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "address",
                GUEST_MAC,
                "netns",
                &guest_path,
            ])?;
            ip(&["addr", "add", "169.254.0.1/16", "dev", "vh"])?;
            ip(&["link", "set", "vh", "up"])?;
            ip(&["link", "set", "lo", "up"])?;
            match neighbour {
                Neighbour::Static => ip(&["neigh", "replace", &GUEST_IP.to_string(), "lladdr", GUEST_MAC, "dev", "vh", "nud", "permanent"]),
                Neighbour::Learned => Ok(()),
            }
        })??;
        Ok(Wire { host, guest })
    }
}

/// A chinit running as PID 1 of its namespaces. Killed and collected on drop.
pub struct Chinit {
    pub pid: Pid,
    /// CLOCK_BOOTTIME just before the clone, in µs.
    pub spawned_us: u64,
    /// CLOCK_BOOTTIME just before execve, in µs (0 if the child failed before it).
    pub exec_us: u64,
    pub spawned: Instant,
    pub log: PathBuf,
    status: Option<WaitStatus>,
    _dir: TempDir,
}

pub fn boottime_us() -> u64 {
    let ts =
        nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME).map(|t| (t.tv_sec() as u64) * 1_000_000 + (t.tv_nsec() as u64) / 1000);
    ts.unwrap_or(0)
}

impl Chinit {
    /// Clones chinit as PID 1 of new PID/mount/UTS namespaces inside `wire.guest`, with `cmdline` as
    /// its kernel command line and its console in a log file.
    pub fn start(bin: &Path, wire: &Wire, cmdline: &str) -> Result<Chinit, Error> {
        Chinit::start_program(bin, &["--cmdline", cmdline], wire)
    }

    /// Clones any program as PID 1 of new PID/mount/UTS namespaces inside `wire.guest`, with
    /// `args` after its path (the baseline init: `busybox sh init.sh --cmdline "..."`).
    pub fn start_program(bin: &Path, args: &[&str], wire: &Wire) -> Result<Chinit, Error> {
        Chinit::clone_into(bin, args, wire, &[])
    }

    /// [`Chinit::start`] as a careless parent starts it: with descriptors `inherit` open (on the
    /// console log file) besides 0, 1 and 2, not close-on-exec.
    pub fn start_inheriting(bin: &Path, wire: &Wire, cmdline: &str, inherit: &[i32]) -> Result<Chinit, Error> {
        Chinit::clone_into(bin, &["--cmdline", cmdline], wire, inherit)
    }

    fn clone_into(bin: &Path, args: &[&str], wire: &Wire, inherit: &[i32]) -> Result<Chinit, Error> {
        let dir = TempDir::new("ns").map_err(|e| format!("temporary directory: {e}"))?;
        let log = dir.path().join("console.log");
        let log_file = File::create(&log).map_err(|e| format!("create {}: {e}", log.display()))?;
        let path = CString::new(bin.as_os_str().as_encoded_bytes()).map_err(|e| e.to_string())?;
        let mut argv = vec![path.clone()];
        for a in args {
            argv.push(CString::new(*a).map_err(|e| e.to_string())?);
        }
        let envp = [CString::new("PATH=/usr/sbin:/usr/bin:/sbin:/bin").map_err(|e| e.to_string())?];
        // Everything the child touches is made now: it shares our memory and must not allocate.
        let argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).chain(std::iter::once(std::ptr::null())).collect();
        let envp_ptrs: Vec<*const libc::c_char> = envp.iter().map(|a| a.as_ptr()).chain(std::iter::once(std::ptr::null())).collect();
        let exec_stamp = std::sync::atomic::AtomicU64::new(0);
        let stamp = &exec_stamp;
        let netns = wire.guest.fd.as_raw_fd();
        let out = log_file.as_raw_fd();
        let mut stack = vec![0u8; 64 * 1024];
        let child = Box::new(|| -> isize {
            // A vfork-style child sharing our memory while we wait: raw syscalls only, no allocation.
            // SAFETY: raw syscalls on descriptors and strings that stay alive until the child execs.
            unsafe {
                if libc::setns(netns, libc::CLONE_NEWNET) != 0 {
                    return 101;
                }
                // Our mounts must never reach the host's mount namespace.
                if libc::mount(c"none".as_ptr(), c"/".as_ptr(), std::ptr::null(), libc::MS_REC | libc::MS_PRIVATE, std::ptr::null()) != 0 {
                    return 102;
                }
                libc::dup2(out, 1);
                libc::dup2(out, 2);
                // dup2 leaves the new descriptor without close-on-exec.
                for fd in inherit {
                    libc::dup2(out, *fd);
                }
                let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY);
                if null >= 0 {
                    libc::dup2(null, 0);
                }
                if null > 2 {
                    libc::close(null);
                }
                // The kernel starts init with every signal at its default and none blocked; this
                // process (Rust ignores SIGPIPE) would pass its own on through execve.
                for sig in 1..32 {
                    libc::signal(sig, libc::SIG_DFL);
                }
                let mut none: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut none);
                libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
                let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
                libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts);
                stamp.store(ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000, std::sync::atomic::Ordering::SeqCst);
                libc::execve(argv_ptrs[0], argv_ptrs.as_ptr(), envp_ptrs.as_ptr());
            }
            103
        });
        let spawned_us = boottime_us();
        let spawned = Instant::now();
        let flags =
            CloneFlags::CLONE_NEWPID | CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_VM | CloneFlags::CLONE_VFORK;
        // SAFETY: the child makes raw syscalls only and execs (see above); with CLONE_VFORK this thread
        // waits until it has, so the stack and everything it reads outlive its use.
        let pid = unsafe { nix::sched::clone(child, &mut stack, flags, Some(libc::SIGCHLD)) }.map_err(|e| format!("clone: {e}"))?;
        let exec_us = exec_stamp.load(std::sync::atomic::Ordering::SeqCst);
        Ok(Chinit { pid, spawned_us, exec_us, spawned, log, status: None, _dir: dir })
    }

    /// The console so far.
    pub fn console(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits up to `timeout` for the console to contain `needle`; `Err` has the console.
    pub fn wait_console(&self, needle: &str, timeout: Duration) -> Result<(), Error> {
        let deadline = Instant::now() + timeout;
        loop {
            let console = self.console();
            if console.contains(needle) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!("no {needle:?} on the console within {timeout:?}:\n{console}"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends a signal to chinit.
    pub fn signal(&self, sig: Signal) -> Result<(), Error> {
        kill(self.pid, sig).map_err(|e| format!("kill {sig}: {e}"))
    }

    /// Waits up to `timeout` for chinit to end; returns how.
    pub fn wait(&mut self, timeout: Duration) -> Result<WaitStatus, Error> {
        if let Some(s) = self.status {
            return Ok(s);
        }
        let deadline = Instant::now() + timeout;
        loop {
            match waitpid(self.pid, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => {}
                Ok(s) => {
                    self.status = Some(s);
                    return Ok(s);
                }
                Err(e) => return Err(format!("waitpid: {e}")),
            }
            if Instant::now() >= deadline {
                return Err(format!("chinit still running after {timeout:?}; console:\n{}", self.console()));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

impl Drop for Chinit {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = kill(self.pid, Signal::SIGKILL);
            let _ = waitpid(self.pid, None);
        }
    }
}

/// How chinit in a namespace ended when it powered off: the kernel ends a PID namespace whose init
/// calls reboot(POWER_OFF) as if by SIGINT.
pub fn is_poweroff(s: WaitStatus) -> bool {
    matches!(s, WaitStatus::Signaled(_, Signal::SIGINT, _))
}

/// One HTTP request from the host namespace to the guest.
pub fn http(wire: &Wire, method: &'static str, path: &'static str, body: Option<Vec<u8>>) -> Result<Response, Error> {
    wire.host.run(move || -> Result<Response, Error> {
        let addr = SocketAddr::from((GUEST_IP, PORT));
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| format!("connect {addr}: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(30))).map_err(|e| e.to_string())?;
        client::request(&mut s, method, path, body.as_deref()).map_err(|e| format!("{method} {path}: {e}"))
    })?
}

/// Runs `f` with a TCP stream to the guest agent, from the host namespace.
pub fn with_stream<T: Send + 'static>(wire: &Wire, f: impl FnOnce(TcpStream) -> T + Send + 'static) -> Result<T, Error> {
    wire.host.run(move || -> Result<T, Error> {
        let addr = SocketAddr::from((GUEST_IP, PORT));
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| format!("connect {addr}: {e}"))?;
        Ok(f(s))
    })?
}

/// What the host saw when chinit first answered 200 on `/ready`.
#[derive(Debug, Clone)]
pub struct FirstReady {
    /// From the clone to the complete 200 response, as seen by the host.
    pub host_us: u64,
    /// From the execve to the complete 200 response (CLOCK_BOOTTIME on both ends).
    pub exec_to_200_us: u64,
    /// CLOCK_BOOTTIME when the host had the 200 response.
    pub seen_us: u64,
    pub ready: Ready,
    /// Connection attempts it took.
    pub attempts: u32,
}

/// Polls `/ready` from the host namespace until 200, with connect attempts of at most `attempt`
/// each (a SYN to a link that is not up yet is lost, so an attempt that hears nothing is retried on
/// a fresh socket; a refused one at once).
pub fn wait_ready(wire: &Wire, c: &Chinit, timeout: Duration) -> Result<FirstReady, Error> {
    let spawned = c.spawned;
    let exec_us = c.exec_us;
    let found = wire.host.run(move || -> Result<FirstReady, Error> {
        let addr = SocketAddr::from((GUEST_IP, PORT));
        let deadline = Instant::now() + timeout;
        let attempt = Duration::from_micros(200);
        let mut attempts = 0;
        while Instant::now() < deadline {
            attempts += 1;
            let Ok(mut s) = connect_within(&addr, attempt) else { continue };
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let _ = s.set_nodelay(true);
            if let Ok(r) = client::request(&mut s, "GET", "/ready", None) {
                if r.status == 200 {
                    let host_us = u64::try_from(spawned.elapsed().as_micros()).unwrap_or(u64::MAX);
                    let seen_us = boottime_us();
                    let ready: Ready = r.json().map_err(|e| e.to_string())?;
                    let exec_to_200_us = seen_us.saturating_sub(exec_us);
                    return Ok(FirstReady { host_us, exec_to_200_us, seen_us, ready, attempts });
                }
            }
        }
        Err(format!("no 200 from /ready within {timeout:?} ({attempts} attempts)"))
    })?;
    found.map_err(|e| format!("{e}; console:\n{}", c.console()))
}

/// A non-blocking connect that gives up after `wait`.
fn connect_within(addr: &SocketAddr, wait: Duration) -> std::io::Result<TcpStream> {
    use nix::poll::{ppoll, PollFd, PollFlags};
    use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, SockaddrIn};
    let fd = socket(AddressFamily::Inet, SockType::Stream, SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC, None)?;
    let SocketAddr::V4(v4) = addr else { return Err(std::io::ErrorKind::InvalidInput.into()) };
    match connect(fd.as_raw_fd(), &SockaddrIn::from(*v4)) {
        Ok(()) => {}
        Err(nix::errno::Errno::EINPROGRESS) => {
            let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLOUT)];
            let ts = nix::sys::time::TimeSpec::from_duration(wait);
            if ppoll(&mut fds, Some(ts), None)? == 0 {
                return Err(std::io::ErrorKind::TimedOut.into());
            }
            let err = nix::sys::socket::getsockopt(&fd, nix::sys::socket::sockopt::SocketError)?;
            if err != 0 {
                return Err(std::io::Error::from_raw_os_error(err));
            }
        }
        Err(e) => return Err(e.into()),
    }
    let s = TcpStream::from(fd);
    s.set_nonblocking(false)?;
    Ok(s)
}

/// Reads everything a stream sends until it closes or `timeout`; returns the bytes.
pub fn read_all(mut s: TcpStream, timeout: Duration) -> Vec<u8> {
    let _ = s.set_read_timeout(Some(timeout));
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

/// Writes and ignores errors (hostile clients do not care).
pub fn send(s: &mut TcpStream, bytes: &[u8]) {
    let _ = s.write_all(bytes);
}

/// Resident set of a process, in KiB.
pub fn rss_kib(pid: Pid) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The lines of `/proc/<pid>/maps` that name a special region (`[heap]`, `[stack]`, ...).
pub fn special_regions(pid: Pid) -> Option<Vec<String>> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    Some(maps.lines().filter_map(|l| l.split_whitespace().nth(5)).filter(|n| n.starts_with('[')).map(str::to_string).collect())
}

/// One skip line, written to stderr directly so `cargo test` shows it even while it captures the
/// output of passing tests.
pub fn skip(why: &str) {
    let _ = writeln!(std::io::stderr().lock(), "skipped: {why}");
}

/// The command line every namespace test starts from: a fixed address, no vsock (written with the
/// hosts' builder, `agent::cmdline`).
pub fn base_cmdline() -> String {
    agent::cmdline::Builder::new().ip(GUEST_IP, 16).vsock_port(None).build().unwrap_or_default()
}

/// Starts chinit with `extra` after [`base_cmdline`] on a wire whose host knows the guest as
/// `neighbour` says; `None` (after one skip line) when the machine cannot make namespaces.
pub fn boot_with(extra: &str, neighbour: Neighbour) -> Option<(Wire, Chinit)> {
    if let Err(why) = can_make_namespaces() {
        skip(&why);
        return None;
    }
    let bin = chinit_bin().unwrap_or_else(|e| panic!("{e}"));
    let wire = Wire::with_neighbour(neighbour).unwrap_or_else(|e| panic!("{e}"));
    let c = Chinit::start(&bin, &wire, &format!("{} {extra}", base_cmdline())).unwrap_or_else(|e| panic!("{e}"));
    Some((wire, c))
}

/// [`boot_with`] a static neighbour entry.
pub fn boot(extra: &str) -> Option<(Wire, Chinit)> {
    boot_with(extra, Neighbour::Static)
}

/// `POST /v1/exec` of `req`; asserts the 200.
pub fn exec_req(wire: &Wire, req: &agent::proto::ExecRequest) -> agent::proto::ExecResponse {
    let r = http(wire, "POST", "/v1/exec", Some(serde_json::to_vec(req).unwrap_or_default())).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r.json().unwrap_or_else(|e| panic!("{e}"))
}

/// `POST /v1/exec` of `argv`; asserts the 200.
pub fn exec(wire: &Wire, argv: &[&str]) -> agent::proto::ExecResponse {
    exec_req(wire, &agent::proto::ExecRequest { argv: argv.iter().map(|s| s.to_string()).collect(), ..Default::default() })
}

/// `sh -c script` through the exec API; asserts it exits 0 and returns its output.
pub fn sh(wire: &Wire, script: &str) -> String {
    let r = exec(wire, &["sh", "-c", script]);
    assert_eq!(r.exit_code, Some(0), "{script}: {r:?}");
    r.stdout
}

/// Asks for a power-off over the API and waits for it.
pub fn poweroff(wire: &Wire, c: &mut Chinit) {
    let r = http(wire, "POST", "/v1/shutdown", None).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status, 202);
    let st = c.wait(Duration::from_secs(10)).unwrap_or_else(|e| panic!("{e}"));
    assert!(is_poweroff(st), "expected a power-off, got {st:?}; console:\n{}", c.console());
}

/// A signal mask line of `/proc/<pid>/status` (`SigIgn:`, `SigBlk:`), as a number: bit n-1 is
/// signal n.
pub fn status_mask(status: &str, field: &str) -> u64 {
    let hex = status.lines().find_map(|l| l.strip_prefix(field)).unwrap_or_default().trim();
    u64::from_str_radix(hex, 16).unwrap_or_else(|e| panic!("{field} in\n{status}: {e}"))
}

/// How many descriptors and threads a process has.
pub fn fds_and_threads(pid: Pid) -> (usize, usize) {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0);
    let threads = std::fs::read_dir(format!("/proc/{pid}/task")).map(|d| d.count()).unwrap_or(0);
    (fds, threads)
}
