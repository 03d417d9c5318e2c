//! Wire types of the agent's HTTP API. See `docs/agent-protocol.md`.

use serde::{Deserialize, Serialize};

/// Default TCP port of the agent (`chinit.port`).
pub const DEFAULT_PORT: u16 = 1024;
/// Default vsock port of the agent (`chinit.vsock_port`).
pub const DEFAULT_VSOCK_PORT: u32 = 1024;
/// The host's vsock context id, as seen from a guest.
pub const HOST_CID: u32 = 2;

/// One boot step of chinit, in microseconds of CLOCK_BOOTTIME (time since the kernel started).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub name: String,
    pub start_us: u64,
    pub end_us: u64,
    /// Set when the step failed and chinit carried on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Step {
    pub fn duration_us(&self) -> u64 {
        self.end_us.saturating_sub(self.start_us)
    }
}

/// Body of `GET /ready` (200 when `ready`, 503 before).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Ready {
    pub ready: bool,
    /// chinit's version.
    pub version: String,
    /// `vm` when chinit is PID 1 of the machine, `namespace` when it is PID 1 of a child PID namespace.
    pub mode: String,
    /// CLOCK_BOOTTIME when chinit's first instruction ran: in a VM, the kernel's boot time up to init.
    pub init_start_us: u64,
    /// CLOCK_BOOTTIME when chinit declared itself ready (0 before).
    pub ready_us: u64,
    /// The boot's steps and the latest restore's (`restore.*`), in the order they ended.
    pub steps: Vec<Step>,
    /// The guest's IPv4 address with prefix, when networking is up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// 0 for a machine that booted; a copy restored from a snapshot has the generation the host
    /// gave it (`POST /v1/restore`): one more than the machine the snapshot was taken of.
    #[serde(default)]
    pub generation: u64,
    /// How many restores this machine has taken (`POST /v1/restore` answered 200): `steps` has
    /// the latest one's only.
    #[serde(default)]
    pub restores: u64,
    /// The workload (`chinit.exec=`), when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<Workload>,
}

/// The workload as `/ready` shows it: running, or how it ended.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Workload {
    /// Its pid (and process group); 0 when it could not be started.
    pub pid: u32,
    pub running: bool,
    /// Exit code when it exited (127: it could not be started).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Signal number when a signal ended it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
}

impl std::fmt::Display for Workload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.running, self.exit_code, self.signal) {
            (true, _, _) => write!(f, "running (pid {})", self.pid),
            (false, Some(c), _) => write!(f, "exited with code {c} (pid {})", self.pid),
            (false, None, Some(s)) => write!(f, "killed by signal {s} (pid {})", self.pid),
            (false, None, None) => write!(f, "ended, status unknown (pid {})", self.pid),
        }
    }
}

impl Ready {
    /// Init start to ready, in microseconds.
    pub fn init_to_ready_us(&self) -> u64 {
        self.ready_us.saturating_sub(self.init_start_us)
    }
}

/// Body of `POST /v1/exec`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct ExecRequest {
    /// Program and arguments; `argv[0]` is looked up in PATH when it has no `/`.
    pub argv: Vec<String>,
    /// Extra environment, `KEY=VALUE` each, added to chinit's minimal environment.
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// Kill the command (SIGKILL) after this many milliseconds. Default and maximum: see the docs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Bytes given on standard input (UTF-8); standard input is empty otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<String>,
}

/// Response of `POST /v1/exec`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct ExecResponse {
    /// Exit code when the command exited normally.
    pub exit_code: Option<i32>,
    /// Signal number when it was killed by a signal.
    pub signal: Option<i32>,
    pub timed_out: bool,
    /// Output, lossily decoded as UTF-8, at most the documented limit each.
    pub stdout: String,
    pub stderr: String,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    pub duration_us: u64,
}

/// What `POST /v1/shutdown` asks for.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum ShutdownAction {
    #[default]
    Poweroff,
    Reboot,
}

/// Body of `POST /v1/shutdown`; an empty body means power off.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ShutdownRequest {
    #[serde(default)]
    pub action: ShutdownAction,
}

/// The least entropy `POST /v1/restore` takes, in bytes.
pub const MIN_RESTORE_ENTROPY: usize = 32;

/// The largest generation `POST /v1/restore` takes: 2^53 - 1, the largest integer every JSON reader
/// holds exactly (JavaScript, jq; above it they round without a word).
pub const MAX_GENERATION: u64 = (1 << 53) - 1;

/// Body of `POST /v1/restore`: what makes a copy restored from a snapshot unique. The answer (200)
/// is the new ready document.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct RestoreRequest {
    /// The copy's generation: `/ready` shows it from now on. More than the machine's now (so never
    /// 0, a booted machine's), at most [`MAX_GENERATION`].
    pub generation: u64,
    /// Fresh entropy for the kernel's random generator, as hex: at least [`MIN_RESTORE_ENTROPY`] bytes.
    pub entropy: String,
    /// The host's wall-clock time, microseconds since the Unix epoch: the guest's clock is stepped to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wall_clock_us: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// A new address for the guest's interface, `A.B.C.D/P`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// The host vsock port ready documents go to from now on (`chinit.notify`): each copy's host
    /// listens on its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify_port: Option<u32>,
}

/// `GET /v1/kmsg` (control API): the kernel's log buffer as chinit read it from `/dev/kmsg`.
pub const KMSG_PATH: &str = "/v1/kmsg";

/// One record of the kernel's log buffer.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct KmsgRecord {
    /// The record's priority: its level (0 emergency .. 7 debug) in the low three bits.
    pub priority: u32,
    /// Its sequence number: a gap means records lost (overwritten before they were read).
    pub seq: u64,
    /// When it was written, microseconds of the kernel's clock (`local_clock`) since boot.
    pub usec: u64,
    /// Its text, without the dictionary lines.
    pub text: String,
}

impl KmsgRecord {
    /// One record as `/dev/kmsg` gives it (pure): `PRIORITY,SEQ,USEC,FLAGS[,...];TEXT`, then
    /// dictionary lines starting with a space, which are dropped. `None` for anything else.
    pub fn parse(record: &str) -> Option<KmsgRecord> {
        let (head, rest) = record.split_once(';')?;
        let mut f = head.split(',');
        let priority = f.next()?.parse().ok()?;
        let seq = f.next()?.parse().ok()?;
        let usec = f.next()?.parse().ok()?;
        let text = rest.split('\n').next().unwrap_or("").to_string();
        Some(KmsgRecord { priority, seq, usec, text })
    }
}

/// Body of `GET /v1/kmsg`: every record still in the buffer, oldest first.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct Kmsg {
    pub records: Vec<KmsgRecord>,
    /// Records lost before chinit read them (overwritten: the buffer is too small).
    pub lost: u64,
    /// The log's clock minus CLOCK_BOOTTIME (the clock of `/ready`'s figures), microseconds:
    /// a record at `usec` happened at `usec - clock_offset_us` on `/ready`'s clock. The log's clock
    /// may start before the kernel (a VM's TSC counts from power-on). Measured by chinit with a
    /// record of its own (`chinit: kmsg clock anchor`) written between two clock readings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_offset_us: Option<i64>,
}

/// Body of every 4xx/5xx answer except 503 from `/ready`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ErrorBody {
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kmsg_records_are_read_as_the_kernel_writes_them() {
        let r = |s: &str| KmsgRecord::parse(s).map(|r| (r.priority, r.seq, r.usec, r.text));
        type Want = Option<(u32, u64, u64, &'static str)>;
        let table: &[(&str, Want)] = &[
            ("7,160,5003,-;calling  0xffffffff81a1b2c3 @ 1\n", Some((7, 160, 5003, "calling  0xffffffff81a1b2c3 @ 1"))),
            (
                "7,161,5012,-;initcall virtio_blk_init+0x0/0x90 returned 0 after 8 usecs",
                Some((7, 161, 5012, "initcall virtio_blk_init+0x0/0x90 returned 0 after 8 usecs")),
            ),
            // A continuation flag, a caller field, and dictionary lines after the text.
            ("6,2,0,c,caller=T0;Linux version 6.1\n SUBSYSTEM=cpu\n DEVICE=+cpu:0\n", Some((6, 2, 0, "Linux version 6.1"))),
            ("14,9,77,-;text; with a semicolon", Some((14, 9, 77, "text; with a semicolon"))),
            ("garbage", None),
            ("x,1,2,-;t", None),
            ("6,1;t", None),
        ];
        for (line, want) in table {
            assert_eq!(r(line), want.map(|(p, s, u, t)| (p, s, u, t.to_string())), "{line:?}");
        }
    }

    #[test]
    fn ready_round_trips_and_computes_init_to_ready() {
        let r = Ready {
            ready: true,
            version: "0.1.0".into(),
            mode: "vm".into(),
            init_start_us: 85_200,
            ready_us: 86_100,
            steps: vec![Step { name: "mounts".into(), start_us: 85_210, end_us: 85_300, error: None }],
            ip: Some("169.254.1.2/16".into()),
            generation: 1,
            restores: 1,
            workload: None,
        };
        let text = serde_json::to_string(&r).unwrap();
        assert!(!text.contains("\"error\""), "absent errors are not serialised: {text}");
        let back: Ready = serde_json::from_str(&text).unwrap();
        assert_eq!(back, r);
        assert_eq!(back.init_to_ready_us(), 900);
        assert_eq!(back.steps[0].duration_us(), 90);
    }

    #[test]
    fn shutdown_defaults_to_poweroff_and_rejects_unknown_actions() {
        let empty: ShutdownRequest = serde_json::from_str("{}").unwrap();
        assert_eq!(empty.action, ShutdownAction::Poweroff);
        let reboot: ShutdownRequest = serde_json::from_str(r#"{"action":"reboot"}"#).unwrap();
        assert_eq!(reboot.action, ShutdownAction::Reboot);
        assert!(serde_json::from_str::<ShutdownRequest>(r#"{"action":"explode"}"#).is_err());
    }

    #[test]
    fn exec_request_needs_only_argv() {
        let req: ExecRequest = serde_json::from_str(r#"{"argv":["/bin/true"]}"#).unwrap();
        assert_eq!(req.argv, vec!["/bin/true"]);
        assert!(req.env.is_empty() && req.cwd.is_none() && req.timeout_ms.is_none());
    }
}
