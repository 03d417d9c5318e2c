//! Kernel command line → [`Config`]. Pure: takes the text, never reads `/proc/cmdline` itself.
//!
//! Every `chinit.*` key is documented in `docs/cmdline.md`. Unknown `chinit.*` keys and bad values are
//! reported as [`Warning`]s and the default is kept: a typo never stops a boot.

use std::fmt;
use std::net::Ipv4Addr;

use agent::proto::{DEFAULT_PORT, DEFAULT_VSOCK_PORT};

use agent::cmdline::{key, Word};
pub use agent::cmdline::{Api, OnError, OnExit, PowerOff};

/// `chinit.root=`: the root device to switch to when chinit is `/init` of an initramfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Root {
    /// A device path under `/dev` (the default: `/dev/vda`).
    Device(String),
    /// `chinit.root=none`: stay in the initramfs.
    None,
}

/// `chinit.mount=<source>:<target>:<fstype>[:<options>]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtraMount {
    pub source: String,
    pub target: String,
    pub fstype: String,
    pub options: Option<String>,
}

/// The kernel's `ip=<client>:<server>:<gw>:<netmask>:<hostname>:<device>:<autoconf>` (static form).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KernelIp {
    pub client: Option<Ipv4Addr>,
    pub gateway: Option<Ipv4Addr>,
    pub prefix: Option<u8>,
    pub hostname: Option<String>,
    pub device: Option<String>,
}

/// Network settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConfig {
    pub enabled: bool,
    pub iface: Option<String>,
    /// `chinit.ip=A.B.C.D/P`.
    pub ip: Option<(Ipv4Addr, u8)>,
    pub gateway: Option<Ipv4Addr>,
    pub mtu: Option<u32>,
    /// The kernel's own `ip=` parameter, used when `chinit.ip` is absent.
    pub kernel_ip: Option<KernelIp>,
}

/// Everything chinit takes from the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Root device for initramfs mode.
    pub root: Root,
    pub rootfstype: String,
    pub rootflags: Option<String>,
    /// Mount the root read-only (the kernel's `ro`, its default) or read-write (`rw`).
    pub root_ro: bool,
    /// How long to wait for the root device node, in ms.
    pub root_wait_ms: u64,
    pub mounts: Vec<ExtraMount>,
    pub hostname: Option<String>,
    pub net: NetConfig,
    pub port: u16,
    /// `None`: vsock disabled (`chinit.vsock_port=off`).
    pub vsock_port: Option<u32>,
    pub api: Api,
    /// `chinit.notify=vsock:<port>`: push the ready document to the host (CID 2) on that port.
    pub notify_vsock_port: Option<u32>,
    /// `chinit.boot_timer=ADDR` (hex with `0x`, or decimal): the physical address of Firecracker's
    /// boot timer device, written once at ready ([`crate::boottimer`]).
    pub boot_timer: Option<u64>,
    pub exec: Option<Vec<String>>,
    pub on_exit: OnExit,
    pub on_error: OnError,
    /// Write phase marks to I/O port 0x80 (x86, VM mode).
    pub marks: bool,
    /// Grace period between SIGTERM and SIGKILL at shutdown, in ms.
    pub grace_ms: u64,
    /// How a power-off ends the machine (`chinit.poweroff=`).
    pub poweroff: PowerOff,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            root: Root::Device("/dev/vda".into()),
            rootfstype: "ext4".into(),
            rootflags: None,
            root_ro: true,
            root_wait_ms: 5000,
            mounts: Vec::new(),
            hostname: None,
            net: NetConfig { enabled: true, iface: None, ip: None, gateway: None, mtu: None, kernel_ip: None },
            port: DEFAULT_PORT,
            vsock_port: Some(DEFAULT_VSOCK_PORT),
            api: Api::Vsock,
            notify_vsock_port: None,
            boot_timer: None,
            exec: None,
            on_exit: OnExit::Poweroff,
            on_error: OnError::Poweroff,
            marks: true,
            grace_ms: 2000,
            poweroff: PowerOff::Off,
        }
    }
}

/// A problem with one parameter; the boot goes on with the default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub param: String,
    pub problem: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.param, self.problem)
    }
}

/// Words of a line, and the words that had a quote left open.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Words {
    pub words: Vec<String>,
    /// Each word in which a quote was never closed, as written up to the next whitespace: it is
    /// left out, and the words after it are split as if it had not been there.
    pub unbalanced: Vec<String>,
}

/// Splits a command line into words the way the kernel does: on whitespace, with double quotes
/// grouping (`chinit.exec="/bin/app --x 1"` and `"key=a b"` are one word each); quotes are removed.
/// A quote never closed does not swallow the rest of the line (see [`Words::unbalanced`]).
pub fn split_words(s: &str) -> Words {
    split_quoted(s, '"')
}

/// Splits on whitespace outside `quote`s; the quotes themselves are removed, and an empty quoted
/// word (`''`) is kept.
fn split_quoted(s: &str, quote: char) -> Words {
    let mut out = Words::default();
    let mut cur = String::new();
    let mut in_quote = false;
    // Byte offset where the current word started.
    let mut word_start: Option<usize> = None;
    for (i, c) in s.char_indices() {
        if c == quote {
            in_quote = !in_quote;
            word_start.get_or_insert(i);
        } else if c.is_whitespace() && !in_quote {
            if word_start.take().is_some() {
                out.words.push(std::mem::take(&mut cur));
            }
        } else {
            cur.push(c);
            word_start.get_or_insert(i);
        }
    }
    match (in_quote, word_start) {
        (true, Some(start)) => {
            // The open quote's word ends at the first whitespace after its start; go on from there.
            let rest = &s[start..];
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            out.unbalanced.push(rest[..end].to_string());
            let after = split_quoted(&rest[end..], quote);
            out.words.extend(after.words);
            out.unbalanced.extend(after.unbalanced);
        }
        (_, Some(_)) => out.words.push(cur),
        (_, None) => {}
    }
    out
}

/// Parses `A.B.C.D/P`.
pub fn parse_cidr(s: &str) -> Result<(Ipv4Addr, u8), String> {
    let (addr, prefix) = s.split_once('/').ok_or("expected A.B.C.D/PREFIX, e.g. 169.254.1.2/16")?;
    let addr: Ipv4Addr = addr.parse().map_err(|_| format!("{addr:?} is not an IPv4 address"))?;
    let prefix: u8 = prefix.parse().ok().filter(|p| (1..=32).contains(p)).ok_or_else(|| format!("prefix {prefix:?} is not 1-32"))?;
    if addr.is_unspecified() || addr.is_broadcast() || addr.is_multicast() {
        return Err(format!("{addr} cannot be an interface address"));
    }
    Ok((addr, prefix))
}

/// Prefix length of a dotted netmask (`255.255.0.0` → 16); `None` when not contiguous.
fn netmask_prefix(mask: Ipv4Addr) -> Option<u8> {
    let m = u32::from(mask);
    let ones = m.leading_ones();
    (m.checked_shl(ones).unwrap_or(0) == 0 && ones > 0).then_some(ones as u8)
}

/// Parses the kernel's `ip=` value. Only the static form is ours to apply; `dhcp`, `on`, `any`,
/// `off`, `none` and values without a client address give `None`.
pub fn parse_kernel_ip(v: &str) -> Result<Option<KernelIp>, String> {
    if matches!(v, "off" | "none" | "dhcp" | "on" | "any" | "bootp" | "rarp" | "both") {
        return Ok(None);
    }
    let f: Vec<&str> = v.split(':').collect();
    let field = |i: usize| f.get(i).copied().filter(|s| !s.is_empty());
    let addr = |i: usize| -> Result<Option<Ipv4Addr>, String> {
        field(i).map(|s| s.parse().map_err(|_| format!("{s:?} is not an IPv4 address"))).transpose()
    };
    let client = addr(0)?;
    if client.is_none() {
        return Ok(None);
    }
    let prefix = match addr(3)? {
        Some(mask) => Some(netmask_prefix(mask).ok_or_else(|| format!("netmask {mask} is not contiguous"))?),
        None => None,
    };
    Ok(Some(KernelIp { client, gateway: addr(2)?, prefix, hostname: field(4).map(str::to_string), device: field(5).map(str::to_string) }))
}

/// Parses `<source>:<target>:<fstype>[:<options>]`.
fn parse_mount(v: &str) -> Result<ExtraMount, String> {
    let mut it = v.splitn(4, ':');
    let (Some(source), Some(target), Some(fstype)) = (it.next(), it.next(), it.next()) else {
        return Err("expected <source>:<target>:<fstype>[:<options>]".into());
    };
    if source.is_empty() || fstype.is_empty() {
        return Err("source and fstype must not be empty".into());
    }
    if !target.starts_with('/') {
        return Err(format!("target {target:?} must be an absolute path"));
    }
    Ok(ExtraMount {
        source: source.into(),
        target: target.into(),
        fstype: fstype.into(),
        options: it.next().filter(|o| !o.is_empty()).map(str::to_string),
    })
}

/// One of a value's words (`chinit.api=tcp`).
fn word<W: Word>(v: &str) -> Result<W, String> {
    W::from_word(v).ok_or_else(|| format!("expected {}", W::choices()))
}

fn parse_bool(v: &str) -> Result<bool, String> {
    match v {
        "1" | "on" | "yes" | "true" => Ok(true),
        "0" | "off" | "no" | "false" => Ok(false),
        _ => Err("expected on or off".into()),
    }
}

fn parse_num<T: std::str::FromStr>(v: &str, what: &str) -> Result<T, String> {
    v.parse().map_err(|_| format!("{v:?} is not {what}"))
}

/// Every key chinit knows (defined with the hosts' builder, in `agent::cmdline`).
pub use agent::cmdline::KEYS;

/// Reads a kernel command line file (`/proc/cmdline`): one `open` and, as the kernel hands the
/// line over whole, usually one `read`. (`fs::read_to_string` would also `fstat` it and probe with
/// a small read first: procfs files report no size.)
pub fn read(path: &str) -> std::io::Result<String> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    // Larger than any architecture's COMMAND_LINE_SIZE (2 or 4 KiB); a longer file still reads whole.
    let mut buf = vec![0u8; 4096];
    let mut len = 0;
    loop {
        if len == buf.len() {
            buf.resize(2 * len, 0);
        }
        match f.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => {
                len += n;
                // procfs ends the line with a newline: no need to ask again for the end of the file.
                if buf[..len].ends_with(b"\n") {
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(len);
    Ok(String::from_utf8(buf).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
}

/// Parses a whole kernel command line.
pub fn parse(cmdline: &str) -> (Config, Vec<Warning>) {
    let mut c = Config::default();
    let warnings = parse_onto(&mut c, cmdline);
    (c, warnings)
}

/// Parses a whole kernel command line onto `c` (the defaults, as [`parse`] does, or the boot's
/// config, which starts as the defaults): each key given replaces its value, `chinit.mount` adds.
pub fn parse_onto(c: &mut Config, cmdline: &str) -> Vec<Warning> {
    let mut warnings = Vec::new();
    let Words { words, unbalanced } = split_words(cmdline);
    for word in unbalanced {
        let key = word.split_once('=').map_or(word.as_str(), |(k, _)| k).to_string();
        warnings.push(Warning {
            param: word,
            problem: format!("a double quote is never closed: {key} is ignored and the words after it are read; close the quote"),
        });
    }
    for word in words {
        let (key, value) = match word.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (word.as_str(), None),
        };
        let mut warn = |problem: String| warnings.push(Warning { param: word.clone(), problem });
        match (key, value) {
            ("ro", None) => c.root_ro = true,
            ("rw", None) => c.root_ro = false,
            ("ip", Some(v)) => match parse_kernel_ip(v) {
                Ok(ip) => c.net.kernel_ip = ip,
                Err(e) => warn(e),
            },
            (k, v) if k.starts_with(agent::cmdline::PREFIX) => {
                let name = &k[agent::cmdline::PREFIX.len()..];
                let Some(v) = v else {
                    warn(if KEYS.contains(&name) { "needs a value (key=value)".into() } else { unknown(name) });
                    continue;
                };
                if let Err(e) = apply(c, name, v) {
                    warn(e);
                }
            }
            _ => {}
        }
    }
    warnings
}

fn unknown(name: &str) -> String {
    format!("unknown key chinit.{name} (ignored); known keys are listed in docs/cmdline.md")
}

/// Applies one `chinit.<name>=<v>`.
fn apply(c: &mut Config, name: &str, v: &str) -> Result<(), String> {
    match name {
        key::ROOT if v == agent::cmdline::ROOT_NONE => c.root = Root::None,
        key::ROOT if v.starts_with("/dev/") => c.root = Root::Device(v.into()),
        key::ROOT => return Err("expected a device path under /dev (e.g. /dev/vda, /dev/pmem0) or none".into()),
        key::ROOTFSTYPE if !v.is_empty() => c.rootfstype = v.into(),
        key::ROOTFLAGS => c.rootflags = Some(v.into()).filter(|s: &String| !s.is_empty()),
        key::ROOT_WAIT_MS => c.root_wait_ms = parse_num(v, "a number of milliseconds")?,
        key::MOUNT => c.mounts.push(parse_mount(v)?),
        key::HOSTNAME if valid_hostname(v) => c.hostname = Some(v.into()),
        key::HOSTNAME => return Err("expected 1-64 characters of letters, digits, '-' and '.'".into()),
        key::NET => c.net.enabled = parse_bool(v)?,
        key::IFACE if !v.is_empty() && v.len() < 16 && !v.contains('/') => c.net.iface = Some(v.into()),
        key::IFACE => return Err("expected an interface name of at most 15 characters".into()),
        key::IP => c.net.ip = Some(parse_cidr(v)?),
        key::GW => c.net.gateway = Some(v.parse().map_err(|_| format!("{v:?} is not an IPv4 address"))?),
        key::MTU => {
            c.net.mtu = Some(parse_num::<u32>(v, "an MTU").and_then(|m| {
                if (68..=65535).contains(&m) {
                    Ok(m)
                } else {
                    Err("MTU must be 68-65535".into())
                }
            })?)
        }
        key::PORT => {
            c.port =
                parse_num::<u16>(v, "a port number (1-65535)").and_then(
                    |p| {
                        if p == 0 {
                            Err("port 0 is not allowed".into())
                        } else {
                            Ok(p)
                        }
                    },
                )?
        }
        key::VSOCK_PORT if v == "off" => c.vsock_port = None,
        key::VSOCK_PORT => c.vsock_port = Some(parse_num(v, "a vsock port number, or off")?),
        key::API => c.api = word(v)?,
        key::NOTIFY => {
            let port = v.strip_prefix("vsock:").ok_or("expected vsock:<port>")?;
            c.notify_vsock_port = Some(parse_num(port, "a vsock port number")?);
        }
        key::BOOT_TIMER => {
            let addr = match v.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16).ok(),
                None => v.parse().ok(),
            };
            c.boot_timer = Some(addr.ok_or_else(|| format!("{v:?} is not a physical address (0x hex or decimal)"))?);
        }
        key::EXEC => {
            let words = split_exec(v)?;
            if words.is_empty() {
                return Err("empty command".into());
            }
            c.exec = Some(words);
        }
        key::ON_EXIT => c.on_exit = word(v)?,
        key::ON_ERROR => c.on_error = word(v)?,
        key::MARKS => c.marks = parse_bool(v)?,
        key::GRACE_MS => c.grace_ms = parse_num(v, "a number of milliseconds")?,
        key::POWEROFF => c.poweroff = word(v)?,
        _ if KEYS.contains(&name) => return Err("empty value".into()),
        _ => return Err(unknown(name)),
    }
    Ok(())
}

/// Splits the workload command: whitespace separates words, single quotes group
/// (`chinit.exec="sh -c 'echo hi'"` → `sh`, `-c`, `echo hi`).
pub fn split_exec(v: &str) -> Result<Vec<String>, String> {
    let w = split_quoted(v, '\'');
    match w.unbalanced.first() {
        None => Ok(w.words),
        Some(word) => Err(format!("a single quote is never closed at {word:?}; the workload is not started")),
    }
}

pub(crate) fn valid_hostname(v: &str) -> bool {
    !v.is_empty() && v.len() <= 64 && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_command_line_file_whole() {
        let dir = std::env::temp_dir().join(format!("chinit-cmdline-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let long = format!("chinit.hostname=a {}\n", "x".repeat(9000));
        for content in ["console=ttyS0 chinit.ip=169.254.1.2/16\n", "no newline at the end", "", long.as_str()] {
            let p = dir.join("cmdline");
            std::fs::write(&p, content).unwrap();
            assert_eq!(read(p.to_str().unwrap()).unwrap(), content);
        }
        std::fs::write(dir.join("latin1"), b"caf\xe9\n").unwrap();
        assert_eq!(read(dir.join("latin1").to_str().unwrap()).unwrap(), "caf\u{fffd}\n");
        assert_eq!(read(dir.join("missing").to_str().unwrap()).unwrap_err().kind(), std::io::ErrorKind::NotFound);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn split_words_table() {
        let cases: &[(&str, &[&str])] = &[
            ("", &[]),
            ("  a  b ", &["a", "b"]),
            ("console=ttyS0 quiet", &["console=ttyS0", "quiet"]),
            (r#"chinit.exec="/bin/app --x 1" rw"#, &["chinit.exec=/bin/app --x 1", "rw"]),
            (r#""chinit.hostname=a b""#, &["chinit.hostname=a b"]),
            ("a=b=c", &["a=b=c"]),
            ("\tx\ny", &["x", "y"]),
            (r#"k="""#, &["k="]),
        ];
        for (input, want) in cases {
            let w = split_words(input);
            assert_eq!(w.words, *want, "{input:?}");
            assert!(w.unbalanced.is_empty(), "{input:?}");
        }
        // A quote never closed drops only its own word; what follows is read as usual.
        let cases: &[(&str, &[&str], &[&str])] = &[
            (r#"unterminated="a b"#, &["b"], &[r#"unterminated="a"#]),
            (r#"a chinit.exec="/bin/echo hi chinit.port=2000"#, &["a", "hi", "chinit.port=2000"], &[r#"chinit.exec="/bin/echo"#]),
            (r#"x="1 2" y="3 z=4"#, &["x=1 2", "z=4"], &[r#"y="3"#]),
            // Two quotes pair up, however far apart: the kernel reads one word here too.
            (r#"y="3 z=4 w="5"#, &["y=3 z=4 w=5"], &[]),
            (r#"k=""#, &[], &[r#"k=""#]),
        ];
        for (input, words, unbalanced) in cases {
            let w = split_words(input);
            assert_eq!(w.words, *words, "{input:?}");
            assert_eq!(w.unbalanced, *unbalanced, "{input:?}");
        }
    }

    #[test]
    fn an_unbalanced_quote_warns_once_and_the_keys_after_it_are_read() {
        let (c, w) = parse(r#"chinit.exec="/bin/echo hi chinit.port=2000 chinit.hostname=h"#);
        assert_eq!((c.exec, c.port, c.hostname.as_deref()), (None, 2000, Some("h")));
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].to_string().contains("chinit.exec is ignored") && w[0].to_string().contains("close the quote"), "{}", w[0]);
        let (c, w) = parse(r#"chinit.exec="sh -c 'echo hi" chinit.port=2000"#);
        assert_eq!((c.exec, c.port), (None, 2000));
        assert!(w.len() == 1 && w[0].problem.contains("single quote"), "{w:?}");
    }

    #[test]
    fn defaults() {
        let (c, w) = parse("console=ttyS0 reboot=k panic=1 pci=off");
        assert!(w.is_empty());
        assert_eq!(c, Config::default());
        assert_eq!(
            (c.port, c.vsock_port, c.api, &c.root, c.root_ro),
            (1024, Some(1024), Api::Vsock, &Root::Device("/dev/vda".into()), true)
        );
    }

    #[test]
    fn every_key() {
        let (c, w) = parse(concat!(
            "rw chinit.root=/dev/pmem0p1 chinit.rootfstype=xfs chinit.rootflags=dax,noatime chinit.root_wait_ms=100 ",
            "chinit.mount=myfs:/mnt/data:virtiofs chinit.mount=/dev/vdb:/srv:ext4:ro,noatime ",
            "chinit.hostname=vm-1 chinit.iface=eth1 chinit.ip=169.254.7.9/16 chinit.gw=169.254.0.1 chinit.mtu=1400 ",
            "chinit.port=8080 chinit.vsock_port=5000 chinit.api=tcp chinit.notify=vsock:9999 ",
            "chinit.exec=\"/bin/sh -c 'echo hi there'\" chinit.on_exit=stay chinit.on_error=shell chinit.marks=off chinit.grace_ms=50 ",
            "chinit.poweroff=reboot chinit.boot_timer=0xc0000000"
        ));
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(c.root, Root::Device("/dev/pmem0p1".into()));
        assert_eq!(c.rootfstype, "xfs");
        assert_eq!(c.rootflags.as_deref(), Some("dax,noatime"));
        assert!(!c.root_ro);
        assert_eq!(c.root_wait_ms, 100);
        assert_eq!(
            c.mounts,
            vec![
                ExtraMount { source: "myfs".into(), target: "/mnt/data".into(), fstype: "virtiofs".into(), options: None },
                ExtraMount { source: "/dev/vdb".into(), target: "/srv".into(), fstype: "ext4".into(), options: Some("ro,noatime".into()) },
            ]
        );
        assert_eq!(c.hostname.as_deref(), Some("vm-1"));
        assert_eq!(c.net.iface.as_deref(), Some("eth1"));
        assert_eq!(c.net.ip, Some((Ipv4Addr::new(169, 254, 7, 9), 16)));
        assert_eq!(c.net.gateway, Some(Ipv4Addr::new(169, 254, 0, 1)));
        assert_eq!(c.net.mtu, Some(1400));
        assert_eq!((c.port, c.vsock_port, c.api, c.notify_vsock_port), (8080, Some(5000), Api::Tcp, Some(9999)));
        assert_eq!(c.exec, Some(vec!["/bin/sh".to_string(), "-c".into(), "echo hi there".into()]));
        assert_eq!((c.on_exit, c.on_error, c.marks, c.grace_ms), (OnExit::Stay, OnError::Shell, false, 50));
        assert_eq!(c.poweroff, PowerOff::Reboot);
        assert_eq!(c.boot_timer, Some(0xc000_0000));
        assert_eq!(parse("chinit.boot_timer=1073741824").0.boot_timer, Some(0x4000_0000));
    }

    #[test]
    fn bad_values_warn_and_keep_defaults() {
        let cases: &[(&str, &str)] = &[
            ("chinit.port=abc", "not a port"),
            ("chinit.port=0", "port 0"),
            ("chinit.port=70000", "not a port"),
            ("chinit.ip=169.254.1.2", "A.B.C.D/PREFIX"),
            ("chinit.ip=300.1.1.1/16", "not an IPv4"),
            ("chinit.ip=169.254.1.2/33", "prefix"),
            ("chinit.ip=0.0.0.0/8", "cannot be"),
            ("chinit.gw=nope", "not an IPv4"),
            ("chinit.mtu=20", "68-65535"),
            ("chinit.api=http", "vsock or tcp"),
            ("chinit.notify=tcp:1", "vsock:<port>"),
            ("chinit.on_exit=reboot", "poweroff or stay"),
            ("chinit.on_error=panic", "poweroff, halt or shell"),
            ("chinit.poweroff=halt", "off or reboot"),
            ("chinit.boot_timer=0xzz", "not a physical address"),
            ("chinit.boot_timer=c0000000", "not a physical address"),
            ("chinit.mount=a:b", "<source>:<target>"),
            ("chinit.mount=a:rel:ext4", "absolute"),
            ("chinit.root=vda", "/dev"),
            ("chinit.root=", "/dev"),
            ("chinit.hostname=bad_name!", "letters"),
            ("chinit.marks=maybe", "on or off"),
            ("chinit.exec=", "empty command"),
            ("chinit.port", "needs a value"),
            ("chinit.colour=blue", "unknown key chinit.colour"),
            ("chinit.verbose", "unknown key chinit.verbose"),
            ("ip=1.2.3.4::x", "not an IPv4"),
            ("ip=10.0.0.2::10.0.0.1:255.0.255.0", "not contiguous"),
        ];
        for (input, want) in cases {
            let (c, w) = parse(input);
            assert_eq!(w.len(), 1, "{input}: {w:?}");
            assert_eq!(w[0].param, *input);
            assert!(w[0].to_string().contains(want), "{input}: {}", w[0]);
            assert_eq!(c, Config::default(), "{input} keeps the defaults");
        }
    }

    #[test]
    fn equals_inside_values_and_last_one_wins() {
        let (c, w) = parse("chinit.exec=\"env A=1 B=2 /app\" chinit.port=1 chinit.port=2");
        assert!(w.is_empty());
        assert_eq!(c.exec, Some(vec!["env".to_string(), "A=1".into(), "B=2".into(), "/app".into()]));
        assert_eq!(c.port, 2);
    }

    #[test]
    fn root_none_stays_in_the_initramfs() {
        let (c, w) = parse("chinit.root=none");
        assert!(w.is_empty());
        assert_eq!(c.root, Root::None);
    }

    #[test]
    fn kernel_ip_table() {
        let ip = |a, b, c, d| Some(Ipv4Addr::new(a, b, c, d));
        let cases: Vec<(&str, Option<KernelIp>)> = vec![
            ("dhcp", None),
            ("off", None),
            ("::::::off", None),
            (
                "169.254.3.4::169.254.0.1:255.255.0.0:guest:eth0:off",
                Some(KernelIp {
                    client: ip(169, 254, 3, 4),
                    gateway: ip(169, 254, 0, 1),
                    prefix: Some(16),
                    hostname: Some("guest".into()),
                    device: Some("eth0".into()),
                }),
            ),
            ("10.0.0.2", Some(KernelIp { client: ip(10, 0, 0, 2), ..KernelIp::default() })),
            ("10.0.0.2:::255.255.255.252::", Some(KernelIp { client: ip(10, 0, 0, 2), prefix: Some(30), ..KernelIp::default() })),
        ];
        for (input, want) in cases {
            assert_eq!(parse_kernel_ip(input).unwrap(), want, "{input}");
        }
        let (c, _) = parse("ip=169.254.3.4::169.254.0.1:255.255.0.0:guest:eth0:off");
        assert_eq!(c.net.kernel_ip.and_then(|k| k.client), ip(169, 254, 3, 4));
    }

    /// Every key, written by the hosts' builder (`agent::cmdline::Builder`), reads back as
    /// written; a key the builder cannot write fails here too, as does a key the parser lacks.
    #[test]
    fn every_key_round_trips_through_the_hosts_builder() {
        use agent::cmdline::Builder;
        let line = Builder::new()
            .root("/dev/pmem0p1")
            .rootfstype("xfs")
            .rootflags("data=ordered,errors=remount-ro")
            .root_wait_ms(250)
            .mount("share", "/mnt/share", "virtiofs", None)
            .mount("/dev/vdb", "/srv", "ext4", Some("ro,noatime"))
            .hostname("guest-1")
            .net(true)
            .iface("eth1")
            .ip(Ipv4Addr::new(169, 254, 7, 9), 16)
            .gw(Ipv4Addr::new(169, 254, 0, 1))
            .mtu(1400)
            .port(8080)
            .vsock_port(Some(5000))
            .api(Api::Tcp)
            .notify_vsock(10_000)
            .exec(&["sh", "-c", "echo a b; exit 3", ""])
            .on_exit(OnExit::Stay)
            .on_error(OnError::Shell)
            .marks(false)
            .grace_ms(750)
            .boot_timer(0xc000_0000)
            .build()
            .unwrap();
        let (c, w) = parse(&line);
        assert!(w.is_empty(), "{line}: {w:?}");
        assert_eq!(c.root, Root::Device("/dev/pmem0p1".into()));
        assert_eq!((c.rootfstype.as_str(), c.rootflags.as_deref(), c.root_wait_ms), ("xfs", Some("data=ordered,errors=remount-ro"), 250));
        assert_eq!(c.mounts.len(), 2);
        assert_eq!((c.mounts[0].fstype.as_str(), c.mounts[1].options.as_deref()), ("virtiofs", Some("ro,noatime")));
        assert_eq!(c.hostname.as_deref(), Some("guest-1"));
        assert!(c.net.enabled);
        assert_eq!(
            (c.net.iface.as_deref(), c.net.ip, c.net.gateway, c.net.mtu),
            (Some("eth1"), Some((Ipv4Addr::new(169, 254, 7, 9), 16)), Some(Ipv4Addr::new(169, 254, 0, 1)), Some(1400))
        );
        assert_eq!((c.port, c.vsock_port, c.api, c.notify_vsock_port), (8080, Some(5000), Api::Tcp, Some(10_000)));
        assert_eq!(c.exec, Some(vec!["sh".to_string(), "-c".into(), "echo a b; exit 3".into(), String::new()]));
        assert_eq!((c.on_exit, c.on_error, c.marks, c.grace_ms), (OnExit::Stay, OnError::Shell, false, 750));
        assert_eq!(c.boot_timer, Some(0xc000_0000));
        // The other spellings.
        let (c, w) = parse(&Builder::new().root_none().net(false).vsock_port(None).build().unwrap());
        assert!(w.is_empty());
        assert_eq!((c.root, c.net.enabled, c.vsock_port), (Root::None, false, None));
        // Every key the builder knows, the parser knows.
        for k in KEYS {
            let (_, w) = parse(&format!("chinit.{k}"));
            assert!(w.iter().all(|w| w.problem.contains("needs a value")), "chinit.{k}: {w:?}");
        }
    }

    #[test]
    fn split_exec_table() {
        let cases: &[(&str, &[&str])] = &[
            ("/bin/app", &["/bin/app"]),
            ("/bin/app  -x 1", &["/bin/app", "-x", "1"]),
            ("sh -c 'echo a b; exit 3'", &["sh", "-c", "echo a b; exit 3"]),
            ("a '' b", &["a", "", "b"]),
        ];
        for (input, want) in cases {
            assert_eq!(split_exec(input).unwrap(), *want, "{input:?}");
        }
    }
}
