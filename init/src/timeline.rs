//! The boot timeline: each step's start and end in µs of CLOCK_BOOTTIME, and the phase marks written
//! to I/O port 0x80 so the VMM (cloud-hypervisor's debug port, QEMU's isa-debugcon) timestamps them
//! on the host clock.

use agent::proto::Step;

use crate::clock;

/// Mark codes (userspace range 0x60-0x7f of the debug port).
pub mod mark {
    pub const INIT_START: u8 = 0x60;
    pub const MOUNTS_DONE: u8 = 0x61;
    pub const NETWORK_DONE: u8 = 0x62;
    pub const READY: u8 = 0x63;
}

#[derive(Debug, Default)]
pub struct Timeline {
    pub steps: Vec<Step>,
}

impl Timeline {
    /// Runs `f` as step `name`; an `Err` is recorded on the step and returned.
    pub fn step<T, E: std::fmt::Display>(&mut self, name: &str, f: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
        let start = clock::now_us();
        let r = f();
        let error = r.as_ref().err().map(ToString::to_string);
        self.record(name, start, clock::now_us(), error);
        r
    }

    pub fn record(&mut self, name: &str, start_us: u64, end_us: u64, error: Option<String>) {
        self.steps.push(Step { name: name.to_string(), start_us, end_us, error });
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
}

#[cfg(target_arch = "x86_64")]
mod port {
    const DEBUG_PORT: u16 = 0x80;

    pub fn allow() -> bool {
        // SAFETY: ioperm only changes this process's I/O permission bitmap.
        unsafe { libc::ioperm(libc::c_ulong::from(DEBUG_PORT), 1, 1) == 0 }
    }

    pub fn write(code: u8) {
        // SAFETY: access to port 0x80 was granted by ioperm; the debug port has no side effects
        // besides the VMM logging the byte.
        unsafe { core::arch::asm!("out dx, al", in("dx") DEBUG_PORT, in("al") code, options(nomem, nostack, preserves_flags)) };
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod port {
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
        let mut t = Timeline::default();
        let ok: Result<u8, String> = t.step("a", || Ok(1));
        let bad: Result<u8, String> = t.step("b", || Err("mount proc on /proc: EPERM".into()));
        assert_eq!(ok, Ok(1));
        assert!(bad.is_err());
        assert_eq!(t.steps.len(), 2);
        assert!(t.steps[0].start_us <= t.steps[0].end_us && t.steps[0].end_us <= t.steps[1].start_us);
        assert_eq!(t.steps[1].error.as_deref(), Some("mount proc on /proc: EPERM"));
        assert!(summary(&t.steps).starts_with("a 0.0"));
    }

    #[test]
    fn marks_off_write_nothing() {
        // Would fault (SIGSEGV) without ioperm if it wrote.
        Marks::off().mark(mark::READY);
        assert!(!Marks::off().enabled());
    }
}
