//! CLOCK_BOOTTIME in microseconds: time since the kernel started, across suspend, the same clock in
//! every namespace (so a host in the same kernel can compare it with its own).

use std::sync::atomic::{AtomicU64, Ordering};

static INIT_START_US: AtomicU64 = AtomicU64::new(0);

/// Microseconds of CLOCK_BOOTTIME now.
pub fn now_us() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes only into `ts`, a valid timespec we own.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    if rc != 0 {
        return 0;
    }
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0) / 1_000
}

/// Records the start of init. Called by a constructor in the binary, before `main`.
pub fn stamp_init_start() {
    let _ = INIT_START_US.compare_exchange(0, now_us(), Ordering::Relaxed, Ordering::Relaxed);
}

/// When chinit's first instruction ran (the constructor's stamp; now, if it did not run).
pub fn init_start_us() -> u64 {
    stamp_init_start();
    INIT_START_US.load(Ordering::Relaxed)
}

/// Formats microseconds as milliseconds with three decimals.
pub use agent::units::ms;

#[cfg(test)]
mod tests {
    #[test]
    fn ms_formatting() {
        assert_eq!(super::ms(0), "0.000");
        assert_eq!(super::ms(845), "0.845");
        assert_eq!(super::ms(85_200), "85.200");
    }

    #[test]
    fn boottime_moves_forward() {
        let a = super::now_us();
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert!(super::now_us() >= a + 2000);
    }
}
