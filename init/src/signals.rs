//! The signals PID 1 handles, read from a signalfd: blocked in every thread from the first
//! instruction of `main` on, so none is delivered anywhere else, and read as data once the agent
//! is up. One that arrives before is kept pending by the kernel (a blocked signal is never
//! discarded, even for PID 1) and read then.
//!
//! Children get an empty signal mask back: `std::process::Command` resets it in every child it
//! starts.

use std::io;

use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// What chinit reacts to (see `supervise`).
pub const HANDLED: [Signal; 5] = [Signal::SIGCHLD, Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP, Signal::SIGPWR];

fn handled() -> SigSet {
    let mut set = SigSet::empty();
    for s in HANDLED {
        set.add(s);
    }
    set
}

/// Blocks [`HANDLED`] in the calling thread; every thread it starts afterwards inherits the mask.
/// Call it before any other thread exists.
pub fn block() -> nix::Result<()> {
    handled().thread_block()
}

/// Gives the calling thread its default mask back (when there is no signalfd to read them).
pub fn unblock() -> nix::Result<()> {
    handled().thread_unblock()
}

/// The signalfd, registered with the runtime.
pub struct Signals {
    fd: AsyncFd<SignalFd>,
}

impl Signals {
    /// Call it inside a tokio runtime with I/O enabled.
    pub fn new() -> io::Result<Signals> {
        let fd = SignalFd::with_flags(&handled(), SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?;
        // SAFETY: the `SignalFd` owns its descriptor and keeps it open, the same one, until the
        // `AsyncFd` that owns it is dropped.
        let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }?;
        Ok(Signals { fd })
    }

    /// The next signal. Several of the same kind sent before it is read arrive as one (as with
    /// handlers): callers reap every child on each SIGCHLD.
    pub async fn recv(&mut self) -> io::Result<Signal> {
        loop {
            let mut ready = self.fd.readable().await?;
            match ready.get_inner().read_signal() {
                Ok(Some(info)) => {
                    // The kernel only queues the signals in the mask; skip anything else.
                    if let Ok(sig) = Signal::try_from(i32::try_from(info.ssi_signo).unwrap_or(0)) {
                        return Ok(sig);
                    }
                }
                Ok(None) => ready.clear_ready(),
                Err(e) => return Err(e.into()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Signals sent to this very thread, blocked, come out of the signalfd in order, and the
    /// mask is restored afterwards. The test runs on its own thread, whose mask no other test sees.
    #[test]
    fn blocked_signals_are_read_from_the_fd() {
        std::thread::spawn(|| {
            block().unwrap();
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let got = rt.block_on(async {
                let mut s = Signals::new().unwrap();
                let tid = nix::unistd::gettid();
                let mut got = Vec::new();
                for sig in [Signal::SIGHUP, Signal::SIGPWR] {
                    // SAFETY: tgkill only sends a signal, to this thread of this process.
                    let rc = unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), tid.as_raw(), sig as libc::c_int) };
                    assert_eq!(rc, 0);
                    got.push(tokio::time::timeout(std::time::Duration::from_secs(5), s.recv()).await.unwrap().unwrap());
                }
                got
            });
            assert_eq!(got, [Signal::SIGHUP, Signal::SIGPWR]);
            unblock().unwrap();
            let now = SigSet::thread_get_mask().unwrap();
            assert!(HANDLED.iter().all(|s| !now.contains(*s)), "the mask is back to what it was");
        })
        .join()
        .unwrap();
    }
}
