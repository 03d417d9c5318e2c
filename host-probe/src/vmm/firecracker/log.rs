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
