//! Reaping. PID 1 adopts every orphan; on each SIGCHLD, [`Reaper::reap`] collects every child that
//! has exited. Children that chinit started itself (exec API, workload) are *owned*: their exit status
//! goes to whoever waits for them instead of being thrown away.
//!
//! Race freedom: [`Reaper::spawn`] holds the lock from fork until the pid is registered, and `reap`
//! holds the same lock around `waitpid`, so a child that exits at once is never reaped as an orphan.

use std::collections::HashMap;
use std::process::{Child, Command};
use std::sync::{Mutex, MutexGuard};

use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::sync::oneshot;

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

impl Exit {
    /// As a shell reports it: the code, or 128 + the signal.
    pub fn status_code(self) -> i32 {
        match self {
            Exit::Code(c) => c,
            Exit::Signal(s) => 128 + s,
        }
    }
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Code(c) => write!(f, "exit code {c}"),
            Exit::Signal(s) => write!(f, "signal {s}"),
        }
    }
}

#[derive(Default)]
pub struct Reaper {
    owned: Mutex<HashMap<i32, oneshot::Sender<Exit>>>,
}

impl Reaper {
    fn lock(&self) -> MutexGuard<'_, HashMap<i32, oneshot::Sender<Exit>>> {
        self.owned.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts `cmd` as an owned child, with an empty signal mask and default dispositions
    /// ([`crate::signals::reset_in_child`]); the receiver yields its exit.
    pub fn spawn(&self, cmd: &mut Command) -> std::io::Result<(Child, oneshot::Receiver<Exit>)> {
        crate::signals::reset_in_child(cmd);
        let mut owned = self.lock();
        let child = cmd.spawn()?;
        let (tx, rx) = oneshot::channel();
        owned.insert(i32::try_from(child.id()).unwrap_or(i32::MAX), tx);
        Ok((child, rx))
    }

    /// Collects every exited child. Returns how many were reaped, and whether children remain.
    pub fn reap(&self) -> (usize, bool) {
        let mut owned = self.lock();
        let mut n = 0;
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                // Children exist, none has exited yet.
                Ok(WaitStatus::StillAlive) => return (n, true),
                Ok(status) => {
                    let exit = match status {
                        WaitStatus::Exited(_, code) => Exit::Code(code),
                        WaitStatus::Signaled(_, sig, _) => Exit::Signal(sig as i32),
                        // Stop/continue reports need WUNTRACED/WCONTINUED, which we do not ask for.
                        _ => continue,
                    };
                    n += 1;
                    let pid = status.pid().map(Pid::as_raw).unwrap_or(0);
                    // An owned child's status goes to its owner (who may have stopped waiting: then
                    // nothing happens). Anything else is an orphan re-parented to us, or a grandchild of
                    // the workload: collecting it was all there was to do.
                    if let Some(tx) = owned.remove(&pid) {
                        let _ = tx.send(exit);
                    }
                }
                // A signal interrupted the call: try again.
                Err(Errno::EINTR) => continue,
                // ECHILD: no children at all.
                Err(Errno::ECHILD) => return (n, false),
                // Anything else: nothing more to collect now.
                Err(_) => return (n, true),
            }
        }
    }
}

#[cfg(test)]
pub(crate) static TEST_CHILDREN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn owned_children_get_their_status() {
        let _serial = TEST_CHILDREN.lock().await;
        let r = Reaper::default();
        let (_c1, rx1) = r.spawn(Command::new("/bin/sh").args(["-c", "exit 7"])).unwrap();
        let (_c2, rx2) = r.spawn(Command::new("/bin/sh").args(["-c", "kill -9 $$"])).unwrap();
        let mut got = Vec::new();
        let mut rxs = vec![rx1, rx2];
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !rxs.is_empty() && std::time::Instant::now() < deadline {
            r.reap();
            let mut still = Vec::new();
            for mut rx in rxs {
                match rx.try_recv() {
                    Ok(e) => got.push(e),
                    Err(_) => still.push(rx),
                }
            }
            rxs = still;
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        got.sort_by_key(|e| format!("{e}"));
        assert_eq!(got, vec![Exit::Code(7), Exit::Signal(9)]);
    }

    #[test]
    fn exit_display() {
        assert_eq!(Exit::Code(3).to_string(), "exit code 3");
        assert_eq!(Exit::Signal(15).to_string(), "signal 15");
        assert_eq!((Exit::Code(3).status_code(), Exit::Signal(15).status_code()), (3, 143));
    }
}
