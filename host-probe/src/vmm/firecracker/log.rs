//! Firecracker's log (v1.16, `src/vmm/src/logger/logging.rs`): every line is
//!
//! ```text
//! 2026-12-07T10:38:36.565735245 [hp-1:main:INFO] Running Firecracker v1.16.1
//! ```
//!
//! the host's local wall-clock time to the nanosecond, then `[id:thread]` with `:LEVEL` when
//! `--show-level` and `:file:line` when `--show-log-origin`, then the message.
//!
//! With `--boot-timer`, a guest's write of the byte 123 to the boot timer device (the first page
//! of the MMIO device range, `BOOT_DEVICE_MEM_START`) makes Firecracker log, at Info, from the vCPU's
//! thread (`src/vmm/src/devices/pseudo/boot_timer.rs`):
//!
//! ```text
//! Guest-boot-time = {:>6} us {} ms, {:>6} CPU us {} CPU ms
//! ```
//!
//! the time since Firecracker began building the VM (monotonic clock; `build_microvm_for_boot`: the
//! `InstanceStart` request), and the CPU time
//! Firecracker's process used meanwhile. Not after a snapshot load: a copy has no boot timer.

/// Where the boot timer device is (`BOOT_DEVICE_MEM_START`): a guest writes the byte
/// [`agent::cmdline::BOOT_TIMER_MAGIC`] at offset 0 (one byte; any other write is ignored).
/// chinit writes it at ready when the command line names the address (`chinit.boot_timer`).
pub const BOOT_TIMER_X86_64: u64 = 0xc000_0000;
pub const BOOT_TIMER_AARCH64: u64 = 0x4000_0000;

/// The boot timer's line: wall-clock and CPU microseconds from the VM's build to the guest's write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootTime {
    pub us: u64,
    pub cpu_us: u64,
}

/// The boot timer's message in one log line, wherever the line's prefix ends.
pub fn boot_time(line: &str) -> Option<BootTime> {
    let (_, rest) = line.split_once("Guest-boot-time =")?;
    let mut words = rest.split_whitespace();
    let us = words.next()?.parse().ok()?;
    // "us", the ms, "ms,"
    if words.next()? != "us" {
        return None;
    }
    words.next()?;
    if words.next()? != "ms," {
        return None;
    }
    let cpu_us = words.next()?.parse().ok()?;
    (words.next()? == "CPU").then_some(BootTime { us, cpu_us })
}

/// The first boot timer line of a log (a guest that writes 123 again logs again).
pub fn boot_time_in(log: &str) -> Option<BootTime> {
    log.lines().find_map(boot_time)
}

/// A stamp as microseconds since the Unix epoch, read as if it were UTC (pure): differences
/// between two stamps of one log are right whatever its time zone, across midnight too.
pub fn stamp_us(stamp: &str) -> Option<u64> {
    let (date, time) = stamp.split_once('T')?;
    let mut d = date.split('-').map(|f| f.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let mut t = time.split(':');
    let (h, min, sec) = (t.next()?.parse::<u64>().ok()?, t.next()?.parse::<u64>().ok()?, t.next()?);
    let (whole, frac) = sec.split_once('.').unwrap_or((sec, "0"));
    let frac: String = frac.chars().chain(std::iter::repeat('0')).take(6).collect();
    let (whole, frac) = (whole.parse::<u64>().ok()?, frac.parse::<u64>().ok()?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || h > 23 || min > 59 || whole > 60 {
        return None;
    }
    // Days from the civil date (Howard Hinnant's `days_from_civil`).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = u64::try_from(era * 146_097 + doe - 719_468).ok()?;
    Some(((days * 86_400 + h * 3600 + min * 60 + whole) * 1_000_000) + frac)
}

/// The guest's boot timer write on the clock of Firecracker's log (pure): microseconds from its
/// first line (the process starting, as cloud-hypervisor's marks count from its logger's start) to
/// the first boot timer line.
pub fn boot_timer_us(log: &str) -> Option<u64> {
    let mut lines = log.lines().filter_map(line);
    let first = stamp_us(lines.next()?.stamp)?;
    let timer = log.lines().filter_map(line).find(|l| boot_time(l.message).is_some())?;
    stamp_us(timer.stamp)?.checked_sub(first)
}

/// One log line, split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line<'a> {
    /// The host's local wall-clock time, as written.
    pub stamp: &'a str,
    pub id: &'a str,
    pub thread: &'a str,
    /// `INFO`, `WARN`, ... with `--show-level`.
    pub level: Option<&'a str>,
    pub message: &'a str,
}

const LEVELS: [&str; 5] = ["ERROR", "WARN", "INFO", "DEBUG", "TRACE"];

/// Splits a log line; `None` for anything else (a guest's console on stdout, a panic's text).
pub fn line(l: &str) -> Option<Line<'_>> {
    let (stamp, rest) = l.split_once(' ')?;
    if !stamp.starts_with(|c: char| c.is_ascii_digit()) || !stamp.contains('T') {
        return None;
    }
    let rest = rest.strip_prefix('[')?;
    let (tag, message) = rest.split_once("] ")?;
    // id (letters, digits, '-'): thread (any name but ':' and ']'), then an optional level and origin.
    let mut fields = tag.split(':');
    let id = fields.next()?;
    let thread = fields.next()?;
    let level = fields.next().filter(|f| LEVELS.contains(f));
    Some(Line { stamp, id, thread, level, message })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines made from v1.16.1's format strings, with and without `--show-level` and
    /// `--show-log-origin`; the first three as the real binary wrote them.
    const LOG: &str = "\
2026-12-07T10:38:36.565735245 [probe-1:main:INFO:src/firecracker/src/main.rs:333] Running Firecracker v1.16.1
2026-12-07T10:38:36.566075607 [probe-1:main:INFO:src/firecracker/src/api_server_adapter.rs:189] Listening on API socket (\"/tmp/fct/api.sock\").
2026-12-07T10:38:37.283832061 [probe-1:fc_api:ERROR:src/firecracker/src/api_server/parsed_request.rs:225] Received Error. Status code: 400 Bad Request. Message: Boot source error: The kernel file cannot be opened: No such file or directory (os error 2)
[    0.000000] Linux version 6.1.0 (guest console on stdout)
2026-12-07T10:38:39.001002003 [probe-1:fc_vcpu 0:INFO] Guest-boot-time =   2931 us 2 ms,   1840 CPU us 1 CPU ms
2026-12-07T10:38:40.001002003 [probe-1:fc_vcpu 1] Guest-boot-time = 1234567 us 1234 ms, 345678 CPU us 345 CPU ms
";

    #[test]
    fn stamps_and_the_boot_timer_on_the_log_s_clock() {
        // 2026-12-07T00:00:00Z is 1_796_601_600 s after the epoch.
        assert_eq!(stamp_us("2026-12-07T00:00:00.000000000"), Some(1_796_601_600_000_000));
        assert_eq!(stamp_us("1970-01-01T00:00:00.5"), Some(500_000));
        assert_eq!(stamp_us("2024-03-01T00:00:00.000001999"), stamp_us("2024-02-29T00:00:00").map(|t| t + 86_400_000_000 + 1));
        for bad in ["2026-13-07T00:00:00.0", "2026-12-07 10:38:36.5", "2026-12-07T25:00:00.0", "x-12-07T00:00:00.0", "2026-12-07T10:38"] {
            assert_eq!(stamp_us(bad), None, "{bad}");
        }
        // From the first line (10:38:36.565735) to the first boot timer line (10:38:39.001002).
        assert_eq!(boot_timer_us(LOG), Some(2_435_267));
        // Across midnight.
        let night = "2026-12-07T23:59:59.999000000 [a:main:INFO] Running Firecracker v1.16.1\n\
                     2026-12-08T00:00:00.001000000 [a:fc_vcpu 0:INFO] Guest-boot-time =   1000 us 1 ms,   900 CPU us 0 CPU ms";
        assert_eq!(boot_timer_us(night), Some(2_000));
        assert_eq!(boot_timer_us(&LOG.lines().take(4).collect::<Vec<_>>().join("\n")), None);
    }

    #[test]
    fn the_boot_timer_line_in_each_format() {
        let cases = [
            (LOG.lines().nth(4).unwrap(), Some(BootTime { us: 2931, cpu_us: 1840 })),
            (LOG.lines().nth(5).unwrap(), Some(BootTime { us: 1_234_567, cpu_us: 345_678 })),
            (
                "2026-12-07T10:38:39.001002003 [hp-1:fc_vcpu 0:INFO:src/vmm/src/devices/pseudo/boot_timer.rs:33] Guest-boot-time =     87 us 0 ms,     87 CPU us 0 CPU ms",
                Some(BootTime { us: 87, cpu_us: 87 }),
            ),
            ("Guest-boot-time =   2931 us 2 ms,   1840 CPU us 1 CPU ms", Some(BootTime { us: 2931, cpu_us: 1840 })),
            ("Guest-boot-time =   2931 us 2 ms", None),
            ("Guest-boot-time = -1 us 0 ms, 1 CPU us 0 CPU ms", None),
            ("Guest-boot-time = 12 ms, 1 CPU us 0 CPU ms", None),
            (LOG.lines().next().unwrap(), None),
        ];
        for (l, want) in cases {
            assert_eq!(boot_time(l), want, "{l}");
        }
        assert_eq!(boot_time_in(LOG), Some(BootTime { us: 2931, cpu_us: 1840 }));
        assert_eq!(boot_time_in(&LOG.lines().take(4).collect::<Vec<_>>().join("\n")), None);
    }

    #[test]
    fn log_lines_split() {
        let lines: Vec<Option<Line>> = LOG.lines().map(line).collect();
        let first = lines[0].clone().unwrap();
        assert_eq!((first.id, first.thread, first.level, first.message), ("probe-1", "main", Some("INFO"), "Running Firecracker v1.16.1"));
        let err = lines[2].clone().unwrap();
        assert_eq!((err.thread, err.level), ("fc_api", Some("ERROR")));
        assert!(err.message.starts_with("Received Error. Status code: 400"));
        assert_eq!(lines[3], None);
        let vcpu = lines[5].clone().unwrap();
        assert_eq!((vcpu.thread, vcpu.level), ("fc_vcpu 1", None));
        assert_eq!(first.stamp, "2026-12-07T10:38:36.565735245");
    }
}
