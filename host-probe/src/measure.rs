//! Parsers for what the VMMs and the guest tell us: cloud-hypervisor's log (guest writes to I/O port
//! 0x80), its event-monitor JSON stream, QEMU's isa-debugcon byte stream timestamped on arrival, and
//! the VMM's memory from `/proc/<pid>/smaps_rollup`.

use serde::Deserialize;

use crate::report::Memory;

/// chinit's port-0x80 codes: the contract is `agent::marks`.
pub use agent::marks::{
    name as mark_name, range as mark_range, INIT_START as MARK_INIT_START, MOUNTS_DONE as MARK_MOUNTS_DONE,
    NETWORK_DONE as MARK_NETWORK_DONE, READY as MARK_READY,
};

/// One byte the guest wrote to port 0x80, and when, in microseconds of the source's own clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Mark {
    pub code: u8,
    pub t_us: u64,
}

/// The first time each chinit code was written; later repeats (a reboot) are ignored.
pub fn first_of(marks: &[Mark], code: u8) -> Option<u64> {
    marks.iter().find(|m| m.code == code).map(|m| m.t_us)
}

/// Port-0x80 writes from a cloud-hypervisor log, in microseconds since its logger started.
///
/// Lines look like
/// `cloud-hypervisor:   0.412030s: <vcpu0> WARN:devices/src/legacy/debug_port.rs:74 -- [Debug I/O port: Userspace code 0x60] 0.411982 seconds`.
/// The seconds printed at the end are wrong in v53 (the digits after the dot are the *total*
/// microseconds), so the time comes from the line's own prefix.
pub fn parse_ch_log(text: &str) -> Vec<Mark> {
    text.lines().filter_map(parse_ch_log_line).collect()
}

fn parse_ch_log_line(line: &str) -> Option<Mark> {
    let (_, after) = line.split_once("[Debug I/O port: ")?;
    let (_, code) = after.split_once(" code 0x")?;
    let code = code.split(']').next()?;
    let code = u8::from_str_radix(code.trim(), 16).ok()?;
    let prefix = line.strip_prefix("cloud-hypervisor:")?;
    let (secs, _) = prefix.split_once("s:")?;
    Some(Mark { code, t_us: seconds_to_us(secs.trim())? })
}

/// `"1.250000"` → 1_250_000, without going through a float.
fn seconds_to_us(s: &str) -> Option<u64> {
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut frac6: String = frac.chars().take(6).collect();
    while frac6.len() < 6 {
        frac6.push('0');
    }
    Some(whole.parse::<u64>().ok()? * 1_000_000 + frac6.parse::<u64>().ok()?)
}

/// The log's ERROR lines, for diagnostics.
pub fn ch_log_errors(text: &str) -> Vec<&str> {
    text.lines().filter(|l| l.contains(" ERROR:")).collect()
}

/// The first error of a cloud-hypervisor log with its `Caused by:` chain, without the stack
/// backtrace that follows, blank lines dropped.
pub fn ch_first_error(text: &str) -> Option<String> {
    let start = text.lines().position(|l| l.contains(" ERROR:"))?;
    let block: Vec<&str> =
        text.lines().skip(start).take_while(|l| !l.starts_with("Stack backtrace:")).filter(|l| !l.trim().is_empty()).take(12).collect();
    Some(block.join("\n"))
}

/// One cloud-hypervisor event-monitor event; `t_us` counts from the monitor's start.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Event {
    pub t_us: u64,
    pub source: String,
    pub event: String,
}

#[derive(Deserialize)]
struct RawDuration {
    secs: u64,
    nanos: u32,
}

#[derive(Deserialize)]
struct RawEvent {
    timestamp: RawDuration,
    source: String,
    event: String,
}

/// The events of an event-monitor file: pretty-printed JSON objects one after another. A trailing
/// incomplete object (the VMM is still writing) is left out.
pub fn parse_ch_events(text: &str) -> Vec<Event> {
    serde_json::Deserializer::from_str(text)
        .into_iter::<RawEvent>()
        .map_while(Result::ok)
        .map(|e| Event { t_us: e.timestamp.secs * 1_000_000 + u64::from(e.timestamp.nanos) / 1_000, source: e.source, event: e.event })
        .collect()
}

/// The first event named `source`/`event`.
pub fn event_at(events: &[Event], source: &str, event: &str) -> Option<u64> {
    events.iter().find(|e| e.source == source && e.event == event).map(|e| e.t_us)
}

/// Turns chunks read from QEMU's debugcon stream into marks: every byte of a chunk takes the
/// chunk's arrival time (host clock, microseconds since spawn).
pub fn debugcon_marks(chunks: &[(u64, Vec<u8>)]) -> Vec<Mark> {
    chunks.iter().flat_map(|(t, bytes)| bytes.iter().map(move |&code| Mark { code, t_us: *t })).collect()
}

/// The line chinit prints on the console when ready: `chinit: ready in X.XXX ms (...)`.
pub fn console_ready_ms(serial: &str) -> Option<f64> {
    serial.lines().find_map(|l| {
        let rest = l.split_once("chinit: ready in ")?.1;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// chinit's console line when the workload ended.
pub const WORKLOAD_EXITED: &str = "chinit: workload exited (";

/// How the workload ended, from chinit's console lines: the last `chinit: workload exited (exit
/// code N)` or `(signal N)`, with the pid of the last `workload started: ... (pid N)`.
pub fn console_workload(serial: &str) -> Option<agent::proto::Workload> {
    let exited = serial.lines().rev().find_map(|l| l.split_once(WORKLOAD_EXITED))?.1;
    let how = exited.split(')').next()?;
    let number = |prefix: &str| how.strip_prefix(prefix).and_then(|n| n.trim().parse::<i32>().ok());
    let pid = serial
        .lines()
        .rev()
        .find_map(|l| l.split_once("chinit: workload started: ")?.1.rsplit_once("(pid ")?.1.trim_end().strip_suffix(')')?.parse().ok())
        .unwrap_or(0);
    Some(agent::proto::Workload { pid, running: false, exit_code: number("exit code "), signal: number("signal ") })
}

/// The last `n` lines of a console, for error messages.
pub fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// RSS and PSS in KiB from a `/proc/<pid>/smaps_rollup` text.
pub fn parse_smaps_rollup(text: &str) -> Option<Memory> {
    let field = |name: &str| {
        text.lines().find_map(|l| l.strip_prefix(name)).and_then(|rest| rest.split_whitespace().next()).and_then(|n| n.parse::<u64>().ok())
    };
    Some(Memory { rss_kib: field("Rss:")?, pss_kib: field("Pss:")? })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smaps_rollup_rss_and_pss() {
        let text = "55d0c0000000-7ffc0000000 ---p 00000000 00:00 0   [rollup]\nRss:              204800 kB\nPss:              102400 kB\nPss_Anon:          90000 kB\n";
        assert_eq!(parse_smaps_rollup(text), Some(Memory { rss_kib: 204_800, pss_kib: 102_400 }));
        assert_eq!(parse_smaps_rollup("Rss: 1 kB\n"), None);
    }

    /// Captured from cloud-hypervisor v53 running a PVH guest that writes 0x60..0x63.
    const CH_LOG: &str = "\
cloud-hypervisor:   0.004512s: <vmm> WARN:vmm/src/lib.rs:123 -- something unrelated
cloud-hypervisor:   0.031207s: <vcpu0> WARN:devices/src/legacy/debug_port.rs:74 -- [Debug I/O port: Userspace code 0x60] 0.026110 seconds
cloud-hypervisor:   0.031250s: <vcpu0> WARN:devices/src/legacy/debug_port.rs:74 -- [Debug I/O port: Userspace code 0x61] 0.026153 seconds
cloud-hypervisor:   1.031290s: <vcpu0> WARN:devices/src/legacy/debug_port.rs:74 -- [Debug I/O port: Userspace code 0x62] 1.1026190 seconds
cloud-hypervisor:  12.500000s: <vcpu0> WARN:devices/src/legacy/debug_port.rs:74 -- [Debug I/O port: Custom code 0xff] 12.12494900 seconds
cloud-hypervisor:   0.0s: broken line [Debug I/O port: Userspace code 0xzz] 0 seconds
cloud-hypervisor:  12.600000s: <vmm> ERROR:vmm/src/lib.rs:99 -- VM exited: InternalError
";

    #[test]
    fn ch_log_marks_take_the_prefix_time_not_the_printed_seconds() {
        assert_eq!(
            parse_ch_log(CH_LOG),
            vec![
                Mark { code: 0x60, t_us: 31_207 },
                Mark { code: 0x61, t_us: 31_250 },
                Mark { code: 0x62, t_us: 1_031_290 },
                Mark { code: 0xff, t_us: 12_500_000 },
            ]
        );
        assert_eq!(ch_log_errors(CH_LOG).len(), 1);
    }

    #[test]
    fn first_error_keeps_its_cause_and_drops_the_backtrace() {
        let log = "\
cloud-hypervisor:   0.014417s: <vcpu0> WARN:vmm/src/cpu.rs:268 -- Kernel lacks CONFIG_SCHED_CORE support
cloud-hypervisor:   4.149167s: <vcpu0> ERROR:vmm/src/cpu.rs:1460 -- VCPU generated error: VcpuRun(Failed to run vcpu

Caused by:
    Unexpected exit reason on vcpu run: InternalError

Stack backtrace:
   0: <unknown>
   4: start_thread
";
        assert_eq!(
            ch_first_error(log).unwrap(),
            "cloud-hypervisor:   4.149167s: <vcpu0> ERROR:vmm/src/cpu.rs:1460 -- VCPU generated error: VcpuRun(Failed to run vcpu\nCaused by:\n    Unexpected exit reason on vcpu run: InternalError"
        );
        assert_eq!(ch_first_error("cloud-hypervisor: 0.1s: <vmm> WARN:x -- fine"), None);
    }

    #[test]
    fn seconds_parse_without_floats() {
        let cases = [
            ("0.000001", Some(1)),
            ("1.5", Some(1_500_000)),
            ("3", Some(3_000_000)),
            ("2.1234567", Some(2_123_456)),
            ("x.1", None),
            (".5", None),
            ("1.-2", None),
        ];
        for (s, want) in cases {
            assert_eq!(seconds_to_us(s), want, "{s:?}");
        }
    }

    /// The shape cloud-hypervisor's event monitor writes: pretty JSON, one object after another.
    const EVENTS: &str = r#"{
  "timestamp": {
    "secs": 0,
    "nanos": 19543
  },
  "source": "vmm",
  "event": "starting",
  "properties": null
}
{
  "timestamp": {
    "secs": 0,
    "nanos": 5123456
  },
  "source": "vm",
  "event": "booting",
  "properties": null
}
{
  "timestamp": {
    "secs": 1,
    "nanos": 7000
  },
  "source": "cpu_manager",
  "event": "create_vcpu",
  "properties": {
    "id": "0"
  }
}
{
  "timestamp": {
    "secs": 1,
    "nanos""#;

    #[test]
    fn event_stream_parses_complete_objects_and_stops_at_a_partial_one() {
        let ev = parse_ch_events(EVENTS);
        let got: Vec<(u64, &str, &str)> = ev.iter().map(|e| (e.t_us, e.source.as_str(), e.event.as_str())).collect();
        assert_eq!(got, vec![(19, "vmm", "starting"), (5_123, "vm", "booting"), (1_000_007, "cpu_manager", "create_vcpu"),]);
        assert_eq!(event_at(&ev, "vm", "booting"), Some(5_123));
        assert_eq!(event_at(&ev, "vm", "booted"), None);
        assert!(parse_ch_events("").is_empty());
    }

    #[test]
    fn debugcon_bytes_take_their_chunk_arrival_time() {
        let chunks = vec![(100, vec![0x60]), (250, vec![0x61, 0x62]), (900, vec![0x63, 0x60])];
        let m = debugcon_marks(&chunks);
        assert_eq!(
            m.iter().map(|m| (m.code, m.t_us)).collect::<Vec<_>>(),
            vec![(0x60, 100), (0x61, 250), (0x62, 250), (0x63, 900), (0x60, 900)]
        );
        assert_eq!(first_of(&m, 0x60), Some(100), "a repeated code keeps its first time");
        assert_eq!(first_of(&m, 0x40), None);
        assert_eq!(mark_name(0x62), Some("network done"));
        assert_eq!(mark_name(0x10), None);
        let ranges: Vec<&str> = [0x00, 0x3f, 0x40, 0x7f, 0x80].map(mark_range).to_vec();
        assert_eq!(ranges, ["firmware", "bootloader", "kernel", "userspace", "custom"]);
    }

    #[test]
    fn console_ready_line_and_tail() {
        let serial = "[    0.1] booting\nchinit: ready in 12.345 ms (mounts 1.0 ms, net 2.0 ms)\nbye\n";
        assert_eq!(console_ready_ms(serial), Some(12.345));
        assert_eq!(console_ready_ms("nothing here"), None);
        assert_eq!(last_lines(serial, 2), "chinit: ready in 12.345 ms (mounts 1.0 ms, net 2.0 ms)\nbye");
        assert_eq!(last_lines("a", 5), "a");
    }

    #[test]
    fn how_the_workload_ended_from_the_console() {
        let serial = "chinit: ready in 3 ms\r\nchinit: workload started: /bin/sh -c echo (pid 1) (pid 41)\r\nhi\r\nchinit: workload exited (exit code 7)\r\n";
        let w = console_workload(serial).unwrap();
        assert_eq!((w.pid, w.running, w.exit_code, w.signal), (41, false, Some(7), None));
        let killed = console_workload("chinit: workload exited (signal 9)\n").unwrap();
        assert_eq!((killed.pid, killed.exit_code, killed.signal), (0, None, Some(9)));
        assert!(console_workload("chinit: workload started: x (pid 3)\n").is_none(), "still running");
    }
}
