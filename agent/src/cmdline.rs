//! The `chinit.*` kernel command-line keys, defined once: their names ([`key`], [`KEYS`]), the
//! values with a fixed set of words ([`Api`], [`OnExit`], [`OnError`]), and a typed [`Builder`] that
//! hosts (host-probe, the tests) use to write a command line chinit parses. chinit's parser
//! (`init/src/cmdline.rs`) reads the same names; `docs/cmdline.md` documents each (a test here fails
//! when it misses one).

use std::fmt::Write as _;
use std::net::Ipv4Addr;

/// The key names, without the `chinit.` prefix.
pub mod key {
    pub const ROOT: &str = "root";
    pub const ROOTFSTYPE: &str = "rootfstype";
    pub const ROOTFLAGS: &str = "rootflags";
    pub const ROOT_WAIT_MS: &str = "root_wait_ms";
    pub const MOUNT: &str = "mount";
    pub const HOSTNAME: &str = "hostname";
    pub const NET: &str = "net";
    pub const IFACE: &str = "iface";
    pub const IP: &str = "ip";
    pub const GW: &str = "gw";
    pub const MTU: &str = "mtu";
    pub const PORT: &str = "port";
    pub const VSOCK_PORT: &str = "vsock_port";
    pub const API: &str = "api";
    pub const NOTIFY: &str = "notify";
    pub const EXEC: &str = "exec";
    pub const ON_EXIT: &str = "on_exit";
    pub const ON_ERROR: &str = "on_error";
    pub const MARKS: &str = "marks";
    pub const GRACE_MS: &str = "grace_ms";
    pub const POWEROFF: &str = "poweroff";
    pub const BOOT_TIMER: &str = "boot_timer";
}

/// Every key chinit knows.
pub const KEYS: &[&str] = &[
    key::ROOT,
    key::ROOTFSTYPE,
    key::ROOTFLAGS,
    key::ROOT_WAIT_MS,
    key::MOUNT,
    key::HOSTNAME,
    key::NET,
    key::IFACE,
    key::IP,
    key::GW,
    key::MTU,
    key::PORT,
    key::VSOCK_PORT,
    key::API,
    key::NOTIFY,
    key::EXEC,
    key::ON_EXIT,
    key::ON_ERROR,
    key::MARKS,
    key::GRACE_MS,
    key::POWEROFF,
    key::BOOT_TIMER,
];

/// The byte a guest writes to Firecracker's boot timer device (`--boot-timer`) at its address
/// (`chinit.boot_timer=ADDR`): Firecracker logs the time since it started building the VM.
pub const BOOT_TIMER_MAGIC: u8 = 123;

/// The prefix of every key.
pub const PREFIX: &str = "chinit.";

/// `chinit.root=none`: stay in the initramfs.
pub const ROOT_NONE: &str = "none";

/// A value written as one of a few words.
pub trait Word: Sized + Copy + 'static {
    const ALL: &'static [Self];
    fn word(self) -> &'static str;
    /// The value a word names.
    fn from_word(w: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|v| v.word() == w)
    }
    /// `a, b or c`, for messages.
    fn choices() -> String {
        let words: Vec<&str> = Self::ALL.iter().map(|v| v.word()).collect();
        match words.split_last() {
            Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
            _ => words.join(""),
        }
    }
}

/// `chinit.api=`: where the control endpoints are served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// vsock only (the default): the TAP side cannot run commands.
    Vsock,
    /// vsock and TCP.
    Tcp,
}

impl Word for Api {
    const ALL: &'static [Self] = &[Api::Vsock, Api::Tcp];
    fn word(self) -> &'static str {
        match self {
            Api::Vsock => "vsock",
            Api::Tcp => "tcp",
        }
    }
}

/// `chinit.on_exit=`: what chinit does when the workload exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnExit {
    Poweroff,
    Stay,
}

impl Word for OnExit {
    const ALL: &'static [Self] = &[OnExit::Poweroff, OnExit::Stay];
    fn word(self) -> &'static str {
        match self {
            OnExit::Poweroff => "poweroff",
            OnExit::Stay => "stay",
        }
    }
}

/// `chinit.on_error=`: what chinit does when a step it cannot do without fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    Poweroff,
    Halt,
    /// Run `/bin/sh` on the console, power off when it exits.
    Shell,
}

impl Word for OnError {
    const ALL: &'static [Self] = &[OnError::Poweroff, OnError::Halt, OnError::Shell];
    fn word(self) -> &'static str {
        match self {
            OnError::Poweroff => "poweroff",
            OnError::Halt => "halt",
            OnError::Shell => "shell",
        }
    }
}

/// `chinit.poweroff=`: how chinit ends the machine when it powers off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerOff {
    /// `reboot(RB_POWER_OFF)`: the ACPI power-off that cloud-hypervisor and QEMU end on.
    Off,
    /// `reboot(RB_AUTOBOOT)`: a CPU reset, for a VMM that has no power-off but exits when its
    /// guest resets (Firecracker). Everything before it is the same orderly shutdown.
    Reboot,
}

impl Word for PowerOff {
    const ALL: &'static [Self] = &[PowerOff::Off, PowerOff::Reboot];
    fn word(self) -> &'static str {
        match self {
            PowerOff::Off => "off",
            PowerOff::Reboot => "reboot",
        }
    }
}

/// A `chinit.*` command line, built key by key in the order given. Values are written as chinit
/// reads them: `chinit.exec` quotes its words (double quotes around the whole, single quotes around
/// a word with spaces).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Builder {
    words: Vec<String>,
    problems: Vec<String>,
}

impl Builder {
    pub fn new() -> Builder {
        Builder::default()
    }

    fn kv(mut self, key: &str, value: impl std::fmt::Display) -> Builder {
        let mut w = String::from(PREFIX);
        let _ = write!(w, "{key}={value}");
        if w.chars().any(|c| c.is_whitespace() || c == '"') {
            self.problems.push(format!("{PREFIX}{key}: a value with spaces or quotes cannot be written: {value}"));
        }
        self.words.push(w);
        self
    }

    /// `chinit.root=DEV`: the root device in initramfs mode.
    pub fn root(self, device: &str) -> Builder {
        self.kv(key::ROOT, device)
    }

    /// `chinit.root=none`: stay in the initramfs.
    pub fn root_none(self) -> Builder {
        self.kv(key::ROOT, ROOT_NONE)
    }

    pub fn rootfstype(self, fstype: &str) -> Builder {
        self.kv(key::ROOTFSTYPE, fstype)
    }

    pub fn rootflags(self, flags: &str) -> Builder {
        self.kv(key::ROOTFLAGS, flags)
    }

    pub fn root_wait_ms(self, ms: u64) -> Builder {
        self.kv(key::ROOT_WAIT_MS, ms)
    }

    /// `chinit.mount=SOURCE:TARGET:FSTYPE[:OPTIONS]` (one more mount each call).
    pub fn mount(self, source: &str, target: &str, fstype: &str, options: Option<&str>) -> Builder {
        let value = match options {
            Some(o) => format!("{source}:{target}:{fstype}:{o}"),
            None => format!("{source}:{target}:{fstype}"),
        };
        self.kv(key::MOUNT, value)
    }

    pub fn hostname(self, name: &str) -> Builder {
        self.kv(key::HOSTNAME, name)
    }

    /// `chinit.net=off` (false) or `on`.
    pub fn net(self, on: bool) -> Builder {
        self.kv(key::NET, if on { "on" } else { "off" })
    }

    pub fn iface(self, name: &str) -> Builder {
        self.kv(key::IFACE, name)
    }

    /// `chinit.ip=A.B.C.D/P`.
    pub fn ip(self, addr: Ipv4Addr, prefix: u8) -> Builder {
        self.kv(key::IP, format_args!("{addr}/{prefix}"))
    }

    pub fn gw(self, addr: Ipv4Addr) -> Builder {
        self.kv(key::GW, addr)
    }

    pub fn mtu(self, mtu: u32) -> Builder {
        self.kv(key::MTU, mtu)
    }

    pub fn port(self, port: u16) -> Builder {
        self.kv(key::PORT, port)
    }

    /// `chinit.vsock_port=N`, or `off` for `None`.
    pub fn vsock_port(self, port: Option<u32>) -> Builder {
        match port {
            Some(p) => self.kv(key::VSOCK_PORT, p),
            None => self.kv(key::VSOCK_PORT, "off"),
        }
    }

    pub fn api(self, api: Api) -> Builder {
        self.kv(key::API, api.word())
    }

    /// `chinit.notify=vsock:PORT`.
    pub fn notify_vsock(self, port: u32) -> Builder {
        self.kv(key::NOTIFY, format_args!("vsock:{port}"))
    }

    /// `chinit.boot_timer=0xADDR`: at ready, write [`BOOT_TIMER_MAGIC`] to the boot timer device
    /// at that physical address.
    pub fn boot_timer(self, addr: u64) -> Builder {
        self.kv(key::BOOT_TIMER, format_args!("{addr:#x}"))
    }

    /// `chinit.exec="ARGV..."`: words with spaces are single-quoted; a word with a quote of either
    /// kind cannot be written (chinit's command line has no escapes), and [`Builder::build`] says so.
    pub fn exec(mut self, argv: &[&str]) -> Builder {
        let mut value = String::new();
        for (i, a) in argv.iter().enumerate() {
            if a.contains(['\'', '"']) {
                self.problems.push(format!("{PREFIX}{}: the word {a:?} has a quote, which chinit's command line cannot carry", key::EXEC));
            }
            if i > 0 {
                value.push(' ');
            }
            if a.is_empty() || a.contains(char::is_whitespace) {
                let _ = write!(value, "'{a}'");
            } else {
                value.push_str(a);
            }
        }
        if argv.is_empty() {
            self.problems.push(format!("{PREFIX}{}: no program given", key::EXEC));
        }
        self.words.push(format!("{PREFIX}{}=\"{value}\"", key::EXEC));
        self
    }

    pub fn on_exit(self, v: OnExit) -> Builder {
        self.kv(key::ON_EXIT, v.word())
    }

    pub fn on_error(self, v: OnError) -> Builder {
        self.kv(key::ON_ERROR, v.word())
    }

    pub fn marks(self, on: bool) -> Builder {
        self.kv(key::MARKS, if on { "on" } else { "off" })
    }

    pub fn grace_ms(self, ms: u64) -> Builder {
        self.kv(key::GRACE_MS, ms)
    }

    pub fn poweroff(self, v: PowerOff) -> Builder {
        self.kv(key::POWEROFF, v.word())
    }

    /// The words, space-separated; `Err` names every value that cannot be written.
    pub fn build(&self) -> Result<String, String> {
        if self.problems.is_empty() {
            Ok(self.words.join(" "))
        } else {
            Err(self.problems.join("; "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_what_chinit_reads() {
        let line = Builder::new()
            .ip(Ipv4Addr::new(169, 254, 1, 2), 16)
            .port(1024)
            .api(Api::Tcp)
            .vsock_port(None)
            .notify_vsock(10000)
            .exec(&["sh", "-c", "echo hi; exit 3"])
            .build()
            .unwrap();
        assert_eq!(
            line,
            "chinit.ip=169.254.1.2/16 chinit.port=1024 chinit.api=tcp chinit.vsock_port=off chinit.notify=vsock:10000 \
             chinit.exec=\"sh -c 'echo hi; exit 3'\""
        );
    }

    #[test]
    fn values_that_cannot_be_written_are_refused() {
        assert!(Builder::new().hostname("a b").build().unwrap_err().contains("chinit.hostname"));
        assert!(Builder::new().exec(&["echo", "it's"]).build().unwrap_err().contains("quote"));
        assert!(Builder::new().exec(&[]).build().is_err());
        assert_eq!(Builder::new().exec(&["a", ""]).build().unwrap(), "chinit.exec=\"a ''\"");
    }

    #[test]
    fn words_round_trip() {
        fn check<W: Word + PartialEq + std::fmt::Debug>() {
            for v in W::ALL {
                assert_eq!(W::from_word(v.word()), Some(*v));
            }
            assert_eq!(W::from_word("nonsense"), None);
        }
        check::<Api>();
        check::<OnExit>();
        check::<OnError>();
        assert_eq!(OnError::choices(), "poweroff, halt or shell");
    }

    /// docs/cmdline.md documents every key.
    #[test]
    fn the_docs_name_every_key() {
        let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/cmdline.md")).unwrap();
        let missing: Vec<&&str> = KEYS.iter().filter(|k| !doc.contains(&format!("`{PREFIX}{k}="))).collect();
        assert!(missing.is_empty(), "docs/cmdline.md does not document {missing:?}");
    }
}
