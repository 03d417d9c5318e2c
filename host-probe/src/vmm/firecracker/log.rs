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
//! `InstanceStart` request, or right after start-up with `--config-file`), and the CPU time
//! Firecracker's process used meanwhile. Not after a snapshot load: a copy has no boot timer.

/// Where the boot timer device is (`BOOT_DEVICE_MEM_START`): a guest writes the byte
/// [`BOOT_TIMER_MAGIC`] at offset 0 (one byte; any other write is ignored).
pub const BOOT_TIMER_X86_64: u64 = 0xc000_0000;
pub const BOOT_TIMER_AARCH64: u64 = 0x4000_0000;
pub const BOOT_TIMER_MAGIC: u8 = 123;

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

/// One log line, split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line<'a> {
    /// The wall-clock time, nanoseconds since 1970-01-01 00:00 of the host's local time zone.
    pub local_ns: i128,
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
    let local_ns = timestamp(stamp)?;
    let rest = rest.strip_prefix('[')?;
    let (tag, message) = rest.split_once("] ")?;
    // id (letters, digits, '-'): thread (any name but ':' and ']'), then an optional level and origin.
    let mut fields = tag.split(':');
    let id = fields.next()?;
    let thread = fields.next()?;
    let level = fields.next().filter(|f| LEVELS.contains(f));
    Some(Line { local_ns, id, thread, level, message })
}

/// `YYYY-MM-DDTHH:MM:SS.NNNNNNNNN` (`LocalTime`'s Display) as nanoseconds since 1970-01-01 00:00 of
/// the same zone: the difference of two stamps is the time between them (but across a DST change).
pub fn timestamp(s: &str) -> Option<i128> {
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-');
    let (y, mo, day): (i64, u32, u32) = (d.next()?.parse().ok()?, d.next()?.parse().ok()?, d.next()?.parse().ok()?);
    let (hms, frac) = time.split_once('.')?;
    let mut t = hms.split(':');
    let (h, mi, sec): (u32, u32, u32) = (t.next()?.parse().ok()?, t.next()?.parse().ok()?, t.next()?.parse().ok()?);
    if d.next().is_some() || t.next().is_some() || frac.len() != 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !(1..=12).contains(&mo) || !(1..=31).contains(&day) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let ns: i128 = frac.parse().ok()?;
    let secs = days_from_civil(y, mo, day) * 86_400 + i64::from(h * 3600 + mi * 60 + sec);
    Some(i128::from(secs) * 1_000_000_000 + ns)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
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
    fn log_lines_split_and_their_stamps_subtract() {
        let lines: Vec<Option<Line>> = LOG.lines().map(line).collect();
        let first = lines[0].clone().unwrap();
        assert_eq!((first.id, first.thread, first.level, first.message), ("probe-1", "main", Some("INFO"), "Running Firecracker v1.16.1"));
        let err = lines[2].clone().unwrap();
        assert_eq!((err.thread, err.level), ("fc_api", Some("ERROR")));
        assert!(err.message.starts_with("Received Error. Status code: 400"));
        assert_eq!(lines[3], None);
        let vcpu = lines[5].clone().unwrap();
        assert_eq!((vcpu.thread, vcpu.level), ("fc_vcpu 1", None));
        assert_eq!(vcpu.local_ns - first.local_ns, 3_435_266_758);
        assert_eq!(lines[4].clone().unwrap().local_ns - lines[2].clone().unwrap().local_ns, 1_717_169_942);
    }

    #[test]
    fn stamps_as_nanoseconds_of_the_local_calendar() {
        let cases = [
            ("1970-01-01T00:00:00.000000000", Some(0)),
            ("1970-01-02T00:00:01.000000001", Some(86_401_000_000_001)),
            ("2000-03-01T00:00:00.000000000", Some(951_868_800_000_000_000)),
            ("2026-12-07T10:38:36.565735245", Some(1_796_639_916_565_735_245)),
            ("2026-12-07T10:38:36.565735", None),
            ("2026-13-07T10:38:36.565735245", None),
            ("2026-12-07 10:38:36.565735245", None),
            ("2026-12-07T10:38:36", None),
        ];
        for (s, want) in cases {
            assert_eq!(timestamp(s), want, "{s}");
        }
        // Across a month and a leap day.
        let d = timestamp("2028-03-01T00:00:00.000000000").unwrap() - timestamp("2028-02-28T23:59:59.500000000").unwrap();
        assert_eq!(d, 86_400_500_000_000);
    }
}
