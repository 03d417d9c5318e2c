//! The host's TSC rate. Under QEMU TCG the guest's TSC is the host's (QEMU reads the host counter),
//! so host-probe tells the guest its rate (`tsc_early_khz=`) instead of letting it calibrate against
//! the emulated PIT: that calibration fails on a loaded host and the boot then hangs.

use std::time::{Duration, Instant};

/// Whether a `/proc/cpuinfo` text says the TSC ticks at a constant rate in all states.
pub fn constant_tsc(cpuinfo: &str) -> bool {
    cpuinfo
        .lines()
        .find(|l| l.starts_with("flags"))
        .map(|l| {
            let flags: Vec<&str> = l.split_whitespace().collect();
            flags.contains(&"constant_tsc") && flags.contains(&"nonstop_tsc")
        })
        .unwrap_or(false)
}

/// kHz from a count of ticks over an interval.
pub fn khz(ticks: u64, over: Duration) -> Option<u64> {
    let us = u64::try_from(over.as_micros()).ok()?;
    (us > 0).then(|| ticks.saturating_mul(1000) / us)
}

fn rdtsc() -> u64 {
    // SAFETY: RDTSC has no memory effects; every x86_64 CPU has it.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Measures the host TSC against CLOCK_MONOTONIC over `window`; `None` without a constant TSC.
pub fn host_tsc_khz(window: Duration) -> Option<u64> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    if !constant_tsc(&info) {
        return None;
    }
    let (t0, c0) = (Instant::now(), rdtsc());
    std::thread::sleep(window);
    let (c1, t1) = (rdtsc(), Instant::now());
    khz(c1.wrapping_sub(c0), t1 - t0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_and_rate() {
        assert!(constant_tsc("processor\t: 0\nflags\t\t: fpu tsc constant_tsc nonstop_tsc\n"));
        assert!(!constant_tsc("flags\t\t: fpu tsc constant_tsc\n"));
        assert!(!constant_tsc("no flags line"));
        assert_eq!(khz(2_600_000_000, Duration::from_secs(1)), Some(2_600_000));
        assert_eq!(khz(52_000_000, Duration::from_millis(20)), Some(2_600_000));
        assert_eq!(khz(1, Duration::ZERO), None);
    }

    #[test]
    fn measured_rate_is_plausible_and_stable() {
        let Some(a) = host_tsc_khz(Duration::from_millis(20)) else {
            eprintln!("skipped: this CPU has no constant TSC");
            return;
        };
        let b = host_tsc_khz(Duration::from_millis(20)).unwrap();
        assert!((100_000..20_000_000).contains(&a), "{a} kHz");
        let diff = a.abs_diff(b) as f64 / a as f64;
        assert!(diff < 0.01, "{a} vs {b}");
    }
}
