//! A helper or VMM process: its own process group, output to a file, and a guard that stops it.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::error::Error;

/// A child process in its own process group: on drop it gets SIGTERM, then SIGKILL after a grace time.
pub(super) struct Proc {
    child: Child,
    name: String,
}

impl Proc {
    pub(super) fn spawn(argv: &[String], name: &str, out: &Path) -> Result<Proc, Error> {
        let Some((program, args)) = argv.split_first() else {
            return Err(Error::Usage(format!("{name}: an empty command line")));
        };
        let log = std::fs::File::create(out).map_err(Error::io(format!("create {}", out.display())))?;
        let err = log.try_clone().map_err(Error::io("dup a log file"))?;
        let mut cmd = Command::new(program);
        cmd.args(args)
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
            detail: format!("{program}: {e}"),
            fix: "check that the program exists and is executable (host-probe check)".into(),
        })?;
        Ok(Proc { child, name: name.to_string() })
    }

    pub(super) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(super) fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits up to `grace` for a voluntary exit.
    pub(super) fn wait_for(&mut self, grace: Duration) -> Option<ExitStatus> {
        poll_until(grace, Duration::from_millis(5), || self.exited())
    }

    /// Waits up to `within` for the process to make `p` (a socket it binds); false when it exits first.
    pub(super) fn wait_for_path(&mut self, p: &Path, within: Duration) -> bool {
        let seen = poll_until(within, Duration::from_millis(2), || match (p.exists(), self.exited()) {
            (true, _) => Some(true),
            (false, Some(_)) => Some(false),
            (false, None) => None,
        });
        seen == Some(true)
    }

    fn signal(&self, sig: i32) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) with a pid we own and have not reaped yet (the caller checked exited()).
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

/// How long a process has to be gone after SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(10);

impl Drop for Proc {
    fn drop(&mut self) {
        if self.exited().is_some() {
            return;
        }
        self.signal(libc::SIGTERM);
        if self.wait_for(Duration::from_secs(2)).is_none() {
            self.signal(libc::SIGKILL);
            // Bounded: a process stuck in the kernel (uninterruptible) would hold host-probe
            // forever; it is left to init, and said so.
            if self.wait_for(KILL_GRACE).is_some() {
                eprintln!("host-probe: {} did not stop on SIGTERM; killed", self.name);
            } else {
                eprintln!(
                    "host-probe: {} (pid {}) did not exit {} s after SIGKILL (stuck in the kernel); left to init",
                    self.name,
                    self.child.id(),
                    KILL_GRACE.as_secs()
                );
            }
        }
    }
}

/// Calls `f` every `step` until it answers or `within` has passed (it is called at least once).
pub(super) fn poll_until<T>(within: Duration, step: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + within;
    loop {
        if let Some(t) = f() {
            return Some(t);
        }
        if Instant::now() >= end {
            return None;
        }
        std::thread::sleep(step);
    }
}
