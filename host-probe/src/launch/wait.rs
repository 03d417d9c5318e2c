//! The phases of a run that wait on its VMM or guest: boot, restore, make unique, snapshot pause,
//! snapshot save. Each ends by a deadline from `--timeout`; every wait in it gives up there, as
//! soon as the VMM exits, or on Ctrl-C, and says which phase and what it was waiting for.

use std::process::ExitStatus;
use std::time::{Duration, Instant};

use super::Running;
use crate::error::Error;
use crate::signals::interrupted;
use crate::vmm::ApiError;

/// A phase of a run: its name (in messages) and when it gives up.
#[derive(Debug, Clone, Copy)]
pub struct Phase {
    pub name: &'static str,
    pub timeout: Duration,
    pub deadline: Instant,
}

impl Phase {
    /// A phase that starts now and may take `timeout`.
    pub fn start(name: &'static str, timeout: Duration) -> Phase {
        Phase { name, timeout, deadline: Instant::now() + timeout }
    }

    /// The next phase, by the same deadline.
    pub fn then(self, name: &'static str) -> Phase {
        Phase { name, ..self }
    }

    /// The time left (at least a millisecond, which a socket timeout can take).
    pub fn left(&self) -> Duration {
        crate::bounded::left(self.deadline).unwrap_or(Duration::from_millis(1))
    }

    pub fn over(&self) -> bool {
        Instant::now() >= self.deadline
    }

    /// The phase gave up; `waiting_for` says what for ("waiting for ...").
    pub fn timed_out(&self, waiting_for: String, diagnostics: String) -> Error {
        Error::Timeout { phase: self.name.into(), secs: self.timeout.as_secs(), waiting_for, diagnostics }
    }
}

/// How long a VMM whose API failed has to be seen exiting: one that dies closes its sockets
/// first, and is reaped a moment later.
const EXIT_SEEN: Duration = Duration::from_millis(200);

impl Running {
    /// The VMM exited during `phase` (`doing`: what the phase was doing), with its output.
    pub fn exited_during(&self, phase: &Phase, status: ExitStatus, doing: &str) -> Error {
        Error::VmmExited {
            phase: phase.name.into(),
            vmm: self.plan.vmm.name().into(),
            status: format!("{status}, {doing}"),
            diagnostics: self.diagnostics(),
        }
    }

    /// Calls `step` every `every` until it gives a value: gives up at the phase's deadline, as soon
    /// as the VMM exits, or on Ctrl-C. `step` gets the time left (its own waits stay within it) and
    /// says why not yet.
    pub fn wait_in<T>(
        &mut self,
        phase: &Phase,
        what: &str,
        every: Duration,
        mut step: impl FnMut(Duration) -> Result<T, String>,
    ) -> Result<T, Error> {
        let mut last = String::from("nothing yet");
        loop {
            interrupted()?;
            if let Some(status) = self.exited() {
                return Err(self.exited_during(phase, status, &format!("waiting for {what} ({last})")));
            }
            if phase.over() {
                return Err(phase.timed_out(format!("waiting for {what} ({last})"), self.diagnostics()));
            }
            match step(phase.left()) {
                Ok(t) => return Ok(t),
                Err(why) => last = why,
            }
            std::thread::sleep(every.min(phase.left()));
        }
    }

    /// The result of one call to the VMM's API during `phase`: a failure is the VMM's exit (with
    /// its output) when it is gone, the phase giving up when the call had no answer in time, else
    /// a failure of the phase.
    pub fn call<T>(&mut self, phase: &Phase, what: &str, r: Result<T, ApiError>) -> Result<T, Error> {
        let e = match r {
            Ok(t) => return Ok(t),
            Err(e) => e,
        };
        interrupted()?;
        if let Some(status) = self.vmm.wait_for(EXIT_SEEN) {
            return Err(self.exited_during(phase, status, &format!("during {what} ({e})")));
        }
        match e {
            ApiError::NoAnswer(why) => Err(phase.timed_out(format!("waiting for {what} ({why})"), self.diagnostics())),
            ApiError::Failed(why) => Err(Error::Failed(format!("{}: {what}: {why}", phase.name))),
        }
    }
}
