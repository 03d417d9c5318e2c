//! Signals, handled the way tini and catatonit handle them. Every signal a process can catch is
//! blocked in every thread from the first instruction of `main` on, so none is delivered anywhere,
//! and read as data from a signalfd once the agent is up ([`Signals`]); `supervise` decides what each
//! one does (see `docs/signals.md`). One that arrives before is kept pending by the kernel (a blocked
//! signal is never discarded, even for PID 1) and read then.
//!
//! Left unblocked, as tini leaves them: SIGKILL and SIGSTOP (they cannot be), the signals that
//! report chinit's own faults or I/O (SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGSYS, SIGABRT; SIGPIPE,
//! which chinit ignores; SIGTTIN and SIGTTOU from a terminal), never forwarded, and the signals the C
//! library keeps for itself (between 31 and SIGRTMIN).
//!
//! A blocked mask and ignored dispositions survive `execve`, and `std::process::Command` resets
//! neither: every child chinit starts goes through [`reset_in_child`], which gives it an empty mask
//! and every disposition at its default, as the kernel gives init.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// A signal number (`libc::SIGTERM`, `libc::SIGRTMIN() + 3`, ...).
pub type Signo = libc::c_int;

/// Raised by chinit's own faults or I/O, in the thread that caused them: never forwarded.
const OWN: [Signo; 10] = [
    libc::SIGSEGV,
    libc::SIGBUS,
    libc::SIGFPE,
    libc::SIGILL,
    libc::SIGTRAP,
    libc::SIGSYS,
    libc::SIGABRT,
    libc::SIGPIPE,
    libc::SIGTTIN,
    libc::SIGTTOU,
];

/// Whether chinit blocks `sig` and reads it from its signalfd.
pub fn is_read(sig: Signo) -> bool {
    let standard = (1..32).contains(&sig);
    let realtime = (libc::SIGRTMIN()..=libc::SIGRTMAX()).contains(&sig);
    (standard || realtime) && sig != libc::SIGKILL && sig != libc::SIGSTOP && !OWN.contains(&sig)
}

fn read_set() -> libc::sigset_t {
    // SAFETY: sigemptyset initialises the set it is given; sigaddset only writes into it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in (1..=libc::SIGRTMAX()).filter(|s| is_read(*s)) {
            libc::sigaddset(&mut set, sig);
        }
        set
    }
}

fn thread_mask(how: libc::c_int) -> io::Result<()> {
    let set = read_set();
    // SAFETY: a valid set; the old mask is not asked for.
    match unsafe { libc::pthread_sigmask(how, &set, std::ptr::null_mut()) } {
        0 => Ok(()),
        e => Err(io::Error::from_raw_os_error(e)),
    }
}

/// Blocks every signal chinit reads in the calling thread; every thread it starts afterwards
/// inherits the mask. Call it before any other thread exists.
pub fn block() -> io::Result<()> {
    thread_mask(libc::SIG_BLOCK)
}

/// Gives the calling thread its default mask back (when there is no signalfd to read them).
pub fn unblock() -> io::Result<()> {
    thread_mask(libc::SIG_UNBLOCK)
}

/// The kernel's `struct sigaction` (x86_64 and aarch64 alike).
#[repr(C)]
struct KernelSigaction {
    handler: libc::sighandler_t,
    flags: libc::c_ulong,
    restorer: usize,
    mask: u64,
}

/// Makes `cmd`'s child start as the kernel starts init: no signal blocked, every disposition at its
/// default (chinit ignores SIGPIPE and blocks what it reads; neither may reach a workload).
pub fn reset_in_child(cmd: &mut Command) {
    // SAFETY: the closure runs in the child between fork and exec and makes only system calls
    // (rt_sigaction, rt_sigprocmask) on values it owns.
    unsafe {
        cmd.pre_exec(|| {
            // System calls themselves, for every signal the kernel has: a C library refuses to
            // touch the ones it reserves, which an ignoring parent may still have passed on.
            let default = KernelSigaction { handler: libc::SIG_DFL, flags: 0, restorer: 0, mask: 0 };
            let act: *const KernelSigaction = &default;
            for sig in 1..=64 {
                if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                    libc::syscall(libc::SYS_rt_sigaction, sig, act, std::ptr::null_mut::<KernelSigaction>(), 8usize);
                }
            }
            // The system call itself: a C library may keep signals of its own blocked (glibc's
            // fork leaves one); the kernel's mask is 64 bits.
            let none: u64 = 0;
            let set: *const u64 = &none;
            if libc::syscall(libc::SYS_rt_sigprocmask, libc::SIG_SETMASK, set, std::ptr::null_mut::<u64>(), 8usize) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        })
    };
}

/// `SIGTERM`, `SIGRTMIN+3`, or the number.
pub fn name(sig: Signo) -> String {
    let rtmin = libc::SIGRTMIN();
    if sig >= rtmin && sig <= libc::SIGRTMAX() {
        return if sig == rtmin { "SIGRTMIN".into() } else { format!("SIGRTMIN+{}", sig - rtmin) };
    }
    match nix::sys::signal::Signal::try_from(sig) {
        Ok(s) => s.as_str().to_string(),
        Err(_) => format!("signal {sig}"),
    }
}

/// The signalfd, registered with the runtime.
pub struct Signals {
    fd: AsyncFd<OwnedFd>,
}

impl Signals {
    /// Call it inside a tokio runtime with I/O enabled.
    pub fn new() -> io::Result<Signals> {
        let set = read_set();
        // SAFETY: -1 asks for a new descriptor; the set is valid.
        let raw = unsafe { libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: the `OwnedFd` keeps the descriptor open, the same one, until the `AsyncFd` that
        // owns it is dropped.
        let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }?;
        Ok(Signals { fd })
    }

    /// The next signal. Several of the same standard signal sent before it is read arrive as one
    /// (as with handlers): callers reap every child on each SIGCHLD.
    pub async fn recv(&mut self) -> io::Result<Signo> {
        loop {
            let mut ready = self.fd.readable().await?;
            // SAFETY: signalfd_siginfo is plain data; read writes at most its size into it.
            let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
            let size = std::mem::size_of::<libc::signalfd_siginfo>();
            // SAFETY: reads at most `size` bytes into `info`, which is that large.
            let n = unsafe { libc::read(ready.get_inner().as_raw_fd(), (&raw mut info).cast(), size) };
            if n == isize::try_from(size).unwrap_or(isize::MAX) {
                return Ok(Signo::try_from(info.ssi_signo).unwrap_or(0));
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::WouldBlock => ready.clear_ready(),
                io::ErrorKind::Interrupted => {}
                _ => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Signals sent to this very thread, blocked, come out of the signalfd in order, a real-time one
    /// too, and the mask is restored afterwards. The test runs on its own thread, whose mask no other
    /// test sees.
    #[test]
    fn blocked_signals_are_read_from_the_fd() {
        std::thread::spawn(|| {
            block().unwrap();
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let sent = [libc::SIGHUP, libc::SIGUSR1, libc::SIGWINCH, libc::SIGRTMIN() + 2];
            let got = rt.block_on(async {
                let mut s = Signals::new().unwrap();
                let tid = nix::unistd::gettid();
                let mut got = Vec::new();
                for sig in sent {
                    // SAFETY: tgkill only sends a signal, to this thread of this process.
                    let rc = unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), tid.as_raw(), sig) };
                    assert_eq!(rc, 0);
                    got.push(tokio::time::timeout(std::time::Duration::from_secs(5), s.recv()).await.unwrap().unwrap());
                }
                got
            });
            assert_eq!(got, sent);
            unblock().unwrap();
            let now = nix::sys::signal::SigSet::thread_get_mask().unwrap();
            assert!(!now.contains(nix::sys::signal::Signal::SIGHUP), "the mask is back to what it was");
        })
        .join()
        .unwrap();
    }

    #[test]
    fn what_is_read_and_what_is_not() {
        for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGUSR1, libc::SIGQUIT, libc::SIGWINCH, libc::SIGCONT, libc::SIGCHLD] {
            assert!(is_read(sig), "{}", name(sig));
        }
        assert!(is_read(libc::SIGRTMIN()) && is_read(libc::SIGRTMAX()));
        for sig in [0, libc::SIGKILL, libc::SIGSTOP, libc::SIGSEGV, libc::SIGBUS, libc::SIGSYS, libc::SIGPIPE, 32, libc::SIGRTMAX() + 1] {
            assert!(!is_read(sig), "{}", name(sig));
        }
    }

    #[test]
    fn names() {
        assert_eq!(name(libc::SIGTERM), "SIGTERM");
        assert_eq!(name(libc::SIGRTMIN()), "SIGRTMIN");
        assert_eq!(name(libc::SIGRTMIN() + 3), "SIGRTMIN+3");
        assert_eq!(name(99), "signal 99");
    }

    /// A child started through `reset_in_child` by a thread that blocks and ignores signals has
    /// neither: its /proc status says so.
    #[test]
    fn children_get_an_empty_mask_and_default_dispositions() {
        let _serial = crate::reap::TEST_CHILDREN.blocking_lock();
        let status = std::thread::spawn(|| {
            block().unwrap();
            // SAFETY: ignoring SIGPIPE has no memory effects; restored below.
            let old = unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
            let mut cmd = Command::new("/bin/cat");
            cmd.arg("/proc/self/status");
            reset_in_child(&mut cmd);
            let out = cmd.output().unwrap();
            // SAFETY: as above.
            unsafe { libc::signal(libc::SIGPIPE, old) };
            unblock().unwrap();
            String::from_utf8(out.stdout).unwrap()
        })
        .join()
        .unwrap();
        let field = |f: &str| u64::from_str_radix(status.lines().find_map(|l| l.strip_prefix(f)).unwrap().trim(), 16).unwrap();
        assert_eq!(field("SigBlk:"), 0, "{status}");
        assert_eq!(field("SigIgn:"), 0, "{status}");
    }
}
