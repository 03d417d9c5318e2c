//! The boot timeline: each step's start and end in µs of CLOCK_BOOTTIME, and the phase marks written
//! to I/O port 0x80 so the VMM (cloud-hypervisor's debug port, QEMU's isa-debugcon) timestamps them
//! on the host clock.

use std::sync::{Mutex, MutexGuard};

use agent::proto::Step;

use crate::clock;

/// Mark codes: the contract with host-probe, defined in `agent::marks`.
pub use agent::marks as mark;

/// The boot's steps, in the order they ended: one list, which the boot records into and `/ready`
/// reads ([`crate::control::State`] holds it). Every step is recorded the same way:
/// `let step = timeline.start(name);`, the work, then `timeline.end(step, outcome)`. A step that
/// turns out not to apply is never ended, and so not listed.
#[derive(Debug, Default)]
pub struct Timeline {
    steps: Mutex<Vec<Step>>,
}

/// A step under way: its name and when it started.
#[derive(Debug)]
#[must_use = "a step is recorded by `Timeline::end`"]
pub struct Started {
    name: &'static str,
    start_us: u64,
}

impl Timeline {
    /// Starts step `name` now.
    pub fn start(&self, name: &'static str) -> Started {
        Started { name, start_us: clock::now_us() }
    }

    /// Ends `step` now and records it, with the error of `outcome` if it is one; returns `outcome`.
    pub fn end<T, E: std::fmt::Display>(&self, step: Started, outcome: Result<T, E>) -> Result<T, E> {
        let end_us = clock::now_us();
        let error = outcome.as_ref().err().map(ToString::to_string);
        self.lock().push(Step { name: step.name.to_string(), start_us: step.start_us, end_us, error });
        outcome
    }

    /// The steps so far.
    pub fn steps(&self) -> Vec<Step> {
        self.lock().clone()
    }

    /// See [`summary`].
    pub fn summary(&self) -> String {
        summary(&self.lock())
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Step>> {
        self.steps.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Summary for the ready line: `mounts 0.120, network 0.450, ...`.
pub fn summary(steps: &[Step]) -> String {
    steps.iter().map(|s| format!("{} {}", s.name, clock::ms(s.duration_us()))).collect::<Vec<_>>().join(", ")
}

/// Writes phase marks to port 0x80 when allowed (x86, VM mode, `chinit.marks=on`).
#[derive(Debug, Clone, Copy)]
pub struct Marks {
    enabled: bool,
}

impl Marks {
    pub fn off() -> Marks {
        Marks { enabled: false }
    }

    /// Asks for access to port 0x80; marks stay off if that fails or the machine has no port I/O.
    pub fn enable() -> Marks {
        Marks { enabled: port::allow() }
    }

    pub fn enabled(self) -> bool {
        self.enabled
    }

    pub fn mark(self, code: u8) {
        if self.enabled {
            port::write(code);
        }
    }

    /// Writes `code` as the first mark after a snapshot restore, from a child process: a restored
    /// machine's processor can refuse the port access the kernel granted (seen with QEMU's
    /// restore), and the write would kill PID 1. The marks that follow are written only when that
    /// one could be.
    pub fn first_after_restore(self, code: u8) -> Marks {
        if !self.enabled {
            return self;
        }
        if port::write_in_child(code) {
            self
        } else {
            crate::say!("restore: port 0x80 refuses writes after this restore: restore marks off");
            Marks::off()
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod port {
    const DEBUG_PORT: u16 = 0x80;

    pub fn allow() -> bool {
        // SAFETY: ioperm only changes this process's I/O permission bitmap.
        unsafe { libc::ioperm(libc::c_ulong::from(DEBUG_PORT), 1, 1) == 0 }
    }

    /// [`write`] in a child (a clone whose exit signals no one, so the reaper never sees it);
    /// whether it could.
    pub fn write_in_child(code: u8) -> bool {
        // SAFETY: clone without flags is a fork; the child only writes the port and exits.
        let pid = unsafe { libc::syscall(libc::SYS_clone, 0 as libc::c_ulong, 0 as libc::c_ulong, 0usize, 0usize, 0 as libc::c_ulong) };
        if pid == 0 {
            write(code);
            // SAFETY: _exit is async-signal-safe.
            unsafe { libc::_exit(0) };
        }
        let Ok(pid) = libc::pid_t::try_from(pid) else { return false };
        if pid <= 0 {
            return false;
        }
        let mut status = 0;
        // SAFETY: waits for that child only; `status` is alive for the call.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::__WCLONE) };
        r == pid && libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0
    }

    pub fn write(code: u8) {
        // SAFETY: access to port 0x80 was granted by ioperm; the debug port has no side effects
        // besides the VMM logging the byte.
        unsafe { core::arch::asm!("out dx, al", in("dx") DEBUG_PORT, in("al") code, options(nomem, nostack, preserves_flags)) };
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod port {
    pub fn write_in_child(_code: u8) -> bool {
        false
    }

    pub fn allow() -> bool {
        false
    }
    pub fn write(_code: u8) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_record_errors_and_order() {
        let t = Timeline::default();
        let a = t.start("a");
        let ok: Result<u8, String> = t.end(a, Ok(1));
        let b = t.start("b");
        let bad: Result<u8, String> = t.end(b, Err("mount proc on /proc: EPERM".into()));
        assert_eq!(ok, Ok(1));
        assert!(bad.is_err());
        let steps = t.steps();
        assert_eq!(steps.len(), 2);
        assert!(steps[0].start_us <= steps[0].end_us && steps[0].end_us <= steps[1].start_us);
        assert_eq!(steps[1].error.as_deref(), Some("mount proc on /proc: EPERM"));
        assert!(summary(&steps).starts_with("a 0.0"));
        assert_eq!(t.summary(), summary(&steps));
    }

    #[test]
    fn marks_off_write_nothing() {
        // Would fault (SIGSEGV) without ioperm if it wrote.
        Marks::off().mark(mark::READY);
        assert!(!Marks::off().enabled());
    }
}
