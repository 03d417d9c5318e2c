//! Orderly shutdown, always in this order: SIGTERM to every process → grace period → SIGKILL →
//! sync → unmount the extra mounts (retry, then lazily) → remount the root read-only (VM mode) →
//! sync → `reboot(POWER_OFF)` (never a reboot unless asked: cloud-hypervisor restarts a VM that
//! reboots; but `chinit.poweroff=reboot` powers off by a CPU reset, for a VMM with no power-off that
//! exits when its guest resets: Firecracker). In a PID namespace, `reboot()` ends the namespace, as it should; when the workload
//! ended by itself, chinit exits with its status instead (its code, or 128 + the signal), as tini
//! does, so whoever started the namespace learns it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nix::mount::{MntFlags, MsFlags};
use nix::sys::reboot::RebootMode;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::time::Instant;

use crate::cmdline::{ExtraMount, PowerOff};
use crate::mode::Mode;
use crate::reap::Reaper;
use crate::say;
use crate::signals::Signals;
use crate::supervise::Ending;

/// How the machine ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Poweroff,
    Reboot,
    Halt,
}

/// Whether a power-off is a CPU reset (`chinit.poweroff=reboot`), set once the command line is read.
static POWEROFF_BY_RESET: AtomicBool = AtomicBool::new(false);

/// How every later power-off ends the machine (`chinit.poweroff=`).
pub fn set_poweroff(p: PowerOff) {
    POWEROFF_BY_RESET.store(p == PowerOff::Reboot, Ordering::SeqCst);
}

fn poweroff() -> PowerOff {
    if POWEROFF_BY_RESET.load(Ordering::SeqCst) {
        PowerOff::Reboot
    } else {
        PowerOff::Off
    }
}

/// The `reboot(2)` command of a power-off now.
pub fn power_off_mode() -> RebootMode {
    reboot_mode(Action::Poweroff, poweroff())
}

/// The `reboot(2)` command that ends the machine as `action` says, under `chinit.poweroff=`.
pub fn reboot_mode(action: Action, poweroff: PowerOff) -> RebootMode {
    match (action, poweroff) {
        (Action::Poweroff, PowerOff::Off) => RebootMode::RB_POWER_OFF,
        (Action::Poweroff, PowerOff::Reboot) | (Action::Reboot, _) => RebootMode::RB_AUTOBOOT,
        (Action::Halt, _) => RebootMode::RB_HALT_SYSTEM,
    }
}

/// Signals every process but us and waits, reacting to SIGCHLD, until none is left or `deadline`.
async fn signal_and_wait(sig: Signal, reaper: &Reaper, signals: &mut Signals, wait: Duration) -> bool {
    // -1: every process we may signal except ourselves (in a PID namespace: only its members).
    let _ = kill(Pid::from_raw(-1), sig);
    let deadline = Instant::now() + wait;
    loop {
        if !reaper.reap().1 {
            return true;
        }
        tokio::select! {
            // Any signal: reaping again is harmless. Others are ignored while shutting down.
            r = signals.recv() => if r.is_err() {
                // No more signals to wait for: poll until the deadline.
                tokio::time::sleep(Duration::from_millis(10)).await;
            },
            _ = tokio::time::sleep_until(deadline) => return !reaper.reap().1,
        }
    }
}

/// Ends every process, in order. Returns when only chinit is left (or the KILL wait ran out).
pub async fn stop_processes(reaper: &Reaper, signals: &mut Signals, grace: Duration) {
    if !signal_and_wait(Signal::SIGTERM, reaper, signals, grace).await {
        say!("shutdown: processes still running after {} ms, sending SIGKILL", grace.as_millis());
        if !signal_and_wait(Signal::SIGKILL, reaper, signals, Duration::from_secs(2)).await {
            say!("shutdown: some processes did not die after SIGKILL (stuck in the kernel?)");
        }
    }
}

/// Unmounts the extra mounts (`chinit.mount=`, last first) and finishes the machine. Never returns.
pub fn finish(mode: Mode, extra: &[ExtraMount], ending: Ending) -> ! {
    nix::unistd::sync();
    for t in extra.iter().rev().map(|m| &m.target) {
        let ok = (0..3).any(|i| {
            if i > 0 {
                std::thread::sleep(Duration::from_millis(20));
            }
            nix::mount::umount2(t.as_str(), MntFlags::empty()).is_ok()
        });
        if !ok {
            if let Err(e) = nix::mount::umount2(t.as_str(), MntFlags::MNT_DETACH) {
                say!("shutdown: unmount {t}: {e}");
            }
        }
    }
    if mode == Mode::Vm {
        if let Err(e) = nix::mount::mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY, None::<&str>) {
            say!("shutdown: remount / read-only: {e}");
        }
    }
    nix::unistd::sync();
    if let (Mode::Namespace, Action::Poweroff, Some(exit)) = (mode, ending.action, ending.workload) {
        let code = exit.status_code();
        say!("exiting with the workload's status {code}");
        #[allow(clippy::exit)]
        std::process::exit(code);
    }
    power(mode, ending.action)
}

/// The final syscall. Never returns: if the kernel refuses, PID 1 of a VM waits forever (exiting
/// would panic the kernel); PID 1 of a namespace exits.
pub fn power(mode: Mode, action: Action) -> ! {
    let how = reboot_mode(action, poweroff());
    let err = nix::sys::reboot::reboot(how).err();
    say!("shutdown: reboot({how:?}) failed: {}", err.map(|e| e.to_string()).unwrap_or_default());
    if mode == Mode::Namespace {
        // PID 1 of a namespace may end: the namespace ends with it, no kernel panics.
        #[allow(clippy::exit)]
        std::process::exit(crate::error::ExitCode::Ok as i32);
    }
    loop {
        nix::unistd::pause();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn power_off_is_a_reset_only_when_the_command_line_says_so() {
        let cases = [
            (Action::Poweroff, PowerOff::Off, RebootMode::RB_POWER_OFF),
            (Action::Poweroff, PowerOff::Reboot, RebootMode::RB_AUTOBOOT),
            (Action::Reboot, PowerOff::Off, RebootMode::RB_AUTOBOOT),
            (Action::Reboot, PowerOff::Reboot, RebootMode::RB_AUTOBOOT),
            (Action::Halt, PowerOff::Off, RebootMode::RB_HALT_SYSTEM),
            (Action::Halt, PowerOff::Reboot, RebootMode::RB_HALT_SYSTEM),
        ];
        for (action, p, want) in cases {
            assert_eq!(reboot_mode(action, p), want, "{action:?} {p:?}");
        }
    }
}
