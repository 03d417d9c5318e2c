//! `POST /v1/restore`: a copy of a machine restored from a snapshot becomes unique. Copies of one
//! snapshot share the random generator's state, the clock's idea of now, the hostname and the
//! address; the host sends what makes this copy its own, and chinit, in order:
//!
//! 1. mixes the fresh entropy into the kernel's random generator and forces a reseed
//!    (`RNDADDENTROPY`, `RNDRESEEDCRNG`);
//! 2. steps `CLOCK_REALTIME` to the host's time (VM mode only: in a namespace the clock is the host's);
//! 3. sets the new hostname;
//! 4. swaps the address: the new one added, the link's neighbours flushed, the new address
//!    announced; the old one is removed once no connection to it is open (the answer to a request
//!    that came in over it leaves over it), at most [`OLD_ADDRESS_MAX_WAIT`] later, and never while
//!    a later restore made it the current address again;
//!
//! each a step of this restore (`restore.*`: `/ready` shows the boot's steps and the latest
//! restore's, and counts the restores), between marks 0x68 and 0x69, then sets the generation and
//! pushes the new ready document to the host (`chinit.notify`). The request is
//! checked whole before anything changes ([`plan`]): bad input changes nothing.

use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agent::proto::{RestoreRequest, MAX_GENERATION, MIN_RESTORE_ENTROPY};

/// A checked restore request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub generation: u64,
    pub entropy: Vec<u8>,
    /// Since the Unix epoch.
    pub wall_clock: Option<Duration>,
    pub hostname: Option<String>,
    pub ip: Option<(Ipv4Addr, u8)>,
    /// Where ready documents go from now on (a copy's host listens on its own port).
    pub notify_port: Option<u32>,
}

/// What a request is checked against: the machine as it is.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Now {
    pub generation: u64,
    /// The gateway of the network plan: the host's own address, never the guest's.
    pub gateway: Option<Ipv4Addr>,
    /// Addresses other machines on the link answer for (complete entries of the guest's ARP
    /// table: the host that just talked to chinit is among them, told with `chinit.gw` or not).
    pub neighbours: Vec<Ipv4Addr>,
}

/// Hex digits only, two a byte.
fn hex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok())).collect()
}

/// A hostname of RFC 1123 labels joined by single dots: each label 1-63 letters, digits and '-',
/// neither first nor last a '-'; at most 64 bytes in all (the kernel's limit).
pub fn valid_hostname(h: &str) -> bool {
    let label = |l: &str| {
        (1..=63).contains(&l.len()) && !l.starts_with('-') && !l.ends_with('-') && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    h.len() <= 64 && h.split('.').all(label)
}

/// Checks a request against the machine as it is (pure): everything is refused before anything
/// changes.
pub fn plan(req: &RestoreRequest, now: &Now) -> Result<Plan, String> {
    let g = req.generation;
    if g <= now.generation {
        return Err(format!(
            "generation {g} is not more than this machine's ({}): a copy's generation is its snapshot's + 1, and 0 is a booted machine's",
            now.generation
        ));
    }
    if g > MAX_GENERATION {
        return Err(format!("generation {g} is over {MAX_GENERATION} (2^53 - 1, the largest JSON readers hold exactly)"));
    }
    let entropy = hex(&req.entropy).ok_or("entropy is not hex (hex digits only, two a byte)")?;
    if entropy.len() < MIN_RESTORE_ENTROPY {
        return Err(format!("entropy has {} bytes: at least {MIN_RESTORE_ENTROPY} are needed", entropy.len()));
    }
    if let Some(h) = &req.hostname {
        if !valid_hostname(h) {
            return Err(format!(
                "hostname {h:?}: expected RFC 1123 labels (letters, digits and '-', not first or last) joined by single dots, at most 64 characters"
            ));
        }
    }
    let ip = req.ip.as_deref().map(crate::cmdline::parse_cidr).transpose().map_err(|e| format!("ip: {e}"))?;
    if let Some((addr, prefix)) = ip {
        if let Some(why) = crate::net::unusable(addr, prefix) {
            return Err(format!("ip: {addr}/{prefix} {why}"));
        }
        if now.gateway == Some(addr) {
            return Err(format!("ip: {addr} is the gateway's, the host's own address"));
        }
        if now.neighbours.contains(&addr) {
            return Err(format!("ip: {addr} is a neighbour's: another machine on the link (the host, most likely) answers for it"));
        }
    }
    Ok(Plan {
        generation: g,
        entropy,
        wall_clock: req.wall_clock_us.map(Duration::from_micros),
        hostname: req.hostname.clone(),
        ip,
        notify_port: req.notify_port,
    })
}

/// The network as configured (the address changes with a restore), shared with the removal of
/// old addresses.
type Net = Arc<Mutex<Option<crate::net::Plan>>>;

/// What a restore needs of the boot, known once chinit is ready.
pub struct Context {
    pub mode: crate::mode::Mode,
    pub marks: crate::timeline::Marks,
    /// This machine's vsock context id when it became ready: a copy restored under another one
    /// had its vsock transport reset (its connections from before are gone).
    pub vsock_cid: Option<u32>,
    net: Net,
    /// Addresses restores replaced, until they are removed.
    old: OldAddresses,
    /// chinit watches the kernel log for the VM generation ID's notice ([`crate::vmgenid`]).
    watching: bool,
    /// Whether the machine has a VM generation ID, known once `/sys` is mounted.
    genid: std::sync::OnceLock<bool>,
}

impl Context {
    /// `watching`: chinit watches the kernel log for the VM generation ID's notice.
    pub fn new(mode: crate::mode::Mode, marks: crate::timeline::Marks, net: Option<crate::net::Plan>, watching: bool) -> Context {
        Context {
            mode,
            marks,
            vsock_cid: local_cid(),
            net: Arc::new(Mutex::new(net)),
            old: OldAddresses::default(),
            watching,
            genid: std::sync::OnceLock::new(),
        }
    }

    /// Whether each snapshot load is noticed by itself ([`crate::vmgenid`]), to pair with the host's
    /// request for the same load: chinit watches, and the machine has a VM generation ID. Asked
    /// once the late mounts are done (`/sys`).
    pub fn loads_noticed(&self) -> bool {
        self.watching && *self.genid.get_or_init(crate::vmgenid::present)
    }

    /// The network plan's gateway: the host's own address.
    pub fn gateway(&self) -> Option<Ipv4Addr> {
        self.net.lock().unwrap_or_else(|e| e.into_inner()).as_ref().and_then(|p| p.gateway)
    }
}

/// Makes this copy unique as `p` says, each change a step of this restore (which `/ready` shows in
/// place of the restore's before); returns the new ready document. A step that fails is recorded
/// with its error and the others still run. `counts`: this is a new restore, not the request for a
/// load the machine noticed by itself ([`noticed`]).
pub fn apply(state: &crate::control::State, ctx: &Context, p: Plan, counts: bool) -> Applied {
    use crate::timeline::mark;
    let tl = &crate::timeline::Timeline::default();
    let marks = ctx.marks.first_after_restore(mark::RESTORE_START);
    let step = tl.start("restore.entropy");
    let _ = tl.end(step, add_entropy(&p.entropy));
    if let (crate::mode::Mode::Vm, Some(wall)) = (ctx.mode, p.wall_clock) {
        let step = tl.start("restore.clock");
        let _ = tl.end(step, step_clock(wall));
    }
    if let Some(h) = &p.hostname {
        let step = tl.start("restore.hostname");
        let _ = tl.end(step, nix::unistd::sethostname(h).map_err(|e| format!("sethostname {h}: {e}")));
    }
    let mut moved_to = None;
    if let Some((addr, prefix)) = p.ip {
        let mut net = ctx.net.lock().unwrap_or_else(|e| e.into_inner());
        let step = tl.start("restore.network");
        let swapped = match net.as_mut() {
            Some(plan) => {
                let before = plan.addr;
                swap_address(plan, addr, prefix, &ctx.net, &ctx.old).map(|()| (before != addr).then_some(addr))
            }
            None => Err("no network to change: the boot configured none".to_string()),
        };
        if let Ok(moved) = tl.end(step, swapped) {
            state.set_ip(addr, prefix);
            moved_to = moved;
        }
    }
    notice_vsock_reset(ctx.vsock_cid, local_cid());
    if p.notify_port.is_some() {
        state.set_notify_port(p.notify_port);
    }
    state.restored(p.generation, tl.steps(), counts);
    marks.mark(mark::RESTORE_READY);
    Applied { ready: state.snapshot(), moved_to }
}

/// A snapshot load the machine noticed by itself (its VM generation ID changed, and the kernel
/// reseeded its random generator): the snapshot's neighbours flushed and the address announced
/// again (step `restore.announce`, when the boot configured a network), between the restore marks;
/// the generation goes up by one. Returns the new ready document.
pub fn noticed(state: &crate::control::State, ctx: &Context) -> agent::proto::Ready {
    use crate::timeline::mark;
    let tl = &crate::timeline::Timeline::default();
    let marks = ctx.marks.first_after_restore(mark::RESTORE_START);
    {
        let net = ctx.net.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(plan) = net.as_ref() {
            let step = tl.start("restore.announce");
            let _ = tl.end(step, reannounce(plan));
        }
    }
    notice_vsock_reset(ctx.vsock_cid, local_cid());
    state.restored((state.generation() + 1).min(MAX_GENERATION), tl.steps(), true);
    marks.mark(mark::RESTORE_READY);
    state.snapshot()
}

/// The link's neighbours flushed (the snapshot's may be other copies' now) and its address
/// announced (gratuitous ARP), as a restore that moves the address does.
fn reannounce(plan: &crate::net::Plan) -> Result<(), String> {
    crate::netlink::Socket::open()?.flush_neighbours(plan.index)?;
    announce(plan)
}

/// The plan's address announced (gratuitous ARP), on a link with a MAC.
fn announce(plan: &crate::net::Plan) -> Result<(), String> {
    let Some(mac) = plan.mac else { return Ok(()) };
    let (socket, sent) = crate::arp::announce(plan.index, mac, plan.addr);
    // Closing a packet socket waits for an RCU grace period: not on the way to the answer.
    if let Some(s) = socket {
        std::thread::spawn(move || drop(s));
    }
    sent
}

/// What a restore did.
pub struct Applied {
    /// The new ready document.
    pub ready: agent::proto::Ready,
    /// The guest's new address, when it moved to another one (not when only the prefix changed):
    /// TCP is served there from now on.
    pub moved_to: Option<Ipv4Addr>,
}

/// `IOCTL_VM_SOCKETS_GET_LOCAL_CID` (linux/vm_sockets.h) on `/dev/vsock`.
const IOCTL_VM_SOCKETS_GET_LOCAL_CID: u32 = 0x7b9;

/// This machine's vsock context id, when it has vsock.
pub fn local_cid() -> Option<u32> {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open("/dev/vsock").ok()?;
    let mut cid: u32 = 0;
    // SAFETY: the ioctl writes one u32 into `cid`, alive for the call.
    let rc = unsafe { libc::ioctl(f.as_raw_fd(), IOCTL_VM_SOCKETS_GET_LOCAL_CID as libc::Ioctl, &mut cid as *mut u32) };
    (rc == 0 && cid != libc::VMADDR_CID_ANY).then_some(cid)
}

/// What a changed vsock context id means, in one console line (`None`: nothing to say).
pub fn vsock_reset_line(before: Option<u32>, now: Option<u32>) -> Option<String> {
    match (before, now) {
        (Some(b), Some(n)) if b != n => Some(format!(
            "restore: vsock context id {b} -> {n}: the host reset the vsock transport (connections from before the snapshot are gone)"
        )),
        _ => None,
    }
}

fn notice_vsock_reset(before: Option<u32>, now: Option<u32>) {
    if let Some(line) = vsock_reset_line(before, now) {
        crate::say!("{line}");
    }
}

/// The new address added and announced, the old one handed to [`retire`]; `plan` (locked in `net`)
/// follows.
fn swap_address(plan: &mut crate::net::Plan, addr: Ipv4Addr, prefix: u8, net: &Net, old: &OldAddresses) -> Result<(), String> {
    if (plan.addr, plan.prefix) == (addr, prefix) {
        return Ok(());
    }
    let nl = crate::netlink::Socket::open()?;
    let new = crate::net::Plan { lo: None, gateway: None, addr, prefix, ..plan.clone() };
    nl.apply(&new)?;
    // The neighbours the snapshot knew may belong to other copies now.
    nl.flush_neighbours(plan.index)?;
    // The new address is a secondary of the old one's subnet: without this the kernel removes
    // secondaries with their primary.
    let promote = format!("/proc/sys/net/ipv4/conf/{}/promote_secondaries", plan.name);
    std::fs::write(&promote, "1").map_err(|e| format!("{promote}: {e}"))?;
    retire(net, old, Old { index: plan.index, addr: plan.addr, prefix: plan.prefix, until: Instant::now() + OLD_ADDRESS_MAX_WAIT });
    (plan.addr, plan.prefix) = (addr, prefix);
    announce(plan)
}

/// The longest an old address outlives the restore that replaced it while connections to it are
/// still open (an answer under way, a client's idle keep-alive, which the agent drops after 5 s
/// anyway).
pub const OLD_ADDRESS_MAX_WAIT: Duration = Duration::from_secs(5);

/// How often the old addresses' connections are looked at.
const OLD_ADDRESS_POLL: Duration = Duration::from_millis(20);

/// An address a restore replaced, until it is removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Old {
    index: u32,
    addr: Ipv4Addr,
    prefix: u8,
    /// Removed by then whatever its connections.
    until: Instant,
}

/// The old addresses, and whether a thread is removing them.
#[derive(Debug, Default)]
struct Retiring {
    old: Vec<Old>,
    removing: bool,
}

type OldAddresses = Arc<Mutex<Retiring>>;

/// What becomes of an old address now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// It is the current address again: it stays, and is forgotten.
    Stays,
    Goes,
    Waits,
}

/// The fate of old address `old` (pure): never the current address; at once when the current one
/// is the same address with another prefix (its connections keep it); otherwise once no
/// connection to it is open (`open`: `None` when that cannot be known) or at its bound.
fn fate(old: (Ipv4Addr, u8), current: Option<(Ipv4Addr, u8)>, open: Option<usize>, past_bound: bool) -> Fate {
    match current {
        Some(c) if c == old => Fate::Stays,
        Some((addr, _)) if addr == old.0 => Fate::Goes,
        _ if open == Some(0) || past_bound => Fate::Goes,
        _ => Fate::Waits,
    }
}

/// TCP states (include/net/tcp_states.h) in which a connection may still carry an answer:
/// ESTABLISHED, SYN_SENT, SYN_RECV, FIN_WAIT1, CLOSE_WAIT, LAST_ACK, CLOSING. Not LISTEN, and not
/// FIN_WAIT2, TIME_WAIT or CLOSE, whose data has all been taken.
const OPEN_STATES: [u8; 7] = [0x01, 0x02, 0x03, 0x04, 0x08, 0x09, 0x0b];

/// How many TCP connections on local address `addr` the text of `/proc/net/tcp` lists in an
/// [`OPEN_STATES`] state (pure). The kernel writes an address as the hex of its 32-bit value in
/// the machine's byte order.
fn open_connections(table: &str, addr: Ipv4Addr) -> usize {
    let open = |line: &str| {
        let mut fields = line.split_whitespace().skip(1);
        let (Some(local), Some(_remote), Some(state)) = (fields.next(), fields.next(), fields.next()) else { return false };
        let local = local.split_once(':').and_then(|(a, _)| u32::from_str_radix(a, 16).ok()).map(|a| Ipv4Addr::from(a.to_ne_bytes()));
        let state = u8::from_str_radix(state, 16).ok();
        local == Some(addr) && state.is_some_and(|s| OPEN_STATES.contains(&s))
    };
    table.lines().skip(1).filter(|l| open(l)).count()
}

/// Puts `old` on the list (a later swap away from the same address moves its bound) and starts the
/// thread that removes old addresses unless it runs.
fn retire(net: &Net, list: &OldAddresses, old: Old) {
    let mut r = list.lock().unwrap_or_else(|e| e.into_inner());
    match r.old.iter_mut().find(|o| (o.index, o.addr, o.prefix) == (old.index, old.addr, old.prefix)) {
        Some(o) => o.until = old.until,
        None => r.old.push(old),
    }
    if r.removing {
        return;
    }
    let (net, list) = (Arc::clone(net), Arc::clone(list));
    match std::thread::Builder::new().name("old-addresses".into()).spawn(move || remove_old(&net, &list)) {
        Ok(_) => r.removing = true,
        Err(e) => crate::say!("restore: cannot start a thread ({e}): {}/{} stays until the next restore", old.addr, old.prefix),
    }
}

/// Every [`OLD_ADDRESS_POLL`], each old address's [`fate`], until none is left.
fn remove_old(net: &Net, list: &OldAddresses) {
    loop {
        std::thread::sleep(OLD_ADDRESS_POLL);
        let table = std::fs::read_to_string("/proc/net/tcp").ok();
        // Locked in a restore's order, and while an address is removed: a restore cannot choose
        // it meanwhile.
        let net = net.lock().unwrap_or_else(|e| e.into_inner());
        let mut r = list.lock().unwrap_or_else(|e| e.into_inner());
        let current = net.as_ref().map(|p| (p.addr, p.prefix));
        let now = Instant::now();
        r.old.retain(|o| {
            let open = table.as_deref().map(|t| open_connections(t, o.addr));
            match fate((o.addr, o.prefix), current, open, now >= o.until) {
                Fate::Stays => false,
                Fate::Waits => true,
                Fate::Goes => {
                    let removed = crate::netlink::Socket::open().and_then(|nl| nl.delete_address(o.index, o.addr, o.prefix));
                    if let Err(e) = removed {
                        crate::say!("restore: {e}");
                    }
                    false
                }
            }
        });
        if r.old.is_empty() {
            r.removing = false;
            return;
        }
    }
}

/// `RNDADDENTROPY` and `RNDRESEEDCRNG` (linux/random.h).
const RNDADDENTROPY: u32 = 0x4008_5203;
const RNDRESEEDCRNG: u32 = 0x5207;

/// Mixes `bytes` into the kernel's random generator, credited as entropy, and reseeds it.
pub fn add_entropy(bytes: &[u8]) -> Result<(), String> {
    use std::os::fd::AsRawFd;
    let f = std::fs::OpenOptions::new().write(true).open("/dev/urandom").map_err(|e| format!("open /dev/urandom: {e}"))?;
    // struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[]; }
    let bits = i32::try_from(bytes.len() * 8).map_err(|_| "too much entropy".to_string())?;
    let size = i32::try_from(bytes.len()).map_err(|_| "too much entropy".to_string())?;
    let mut info = Vec::with_capacity(8 + bytes.len().div_ceil(4) * 4);
    info.extend_from_slice(&bits.to_ne_bytes());
    info.extend_from_slice(&size.to_ne_bytes());
    info.extend_from_slice(bytes);
    info.resize(8 + bytes.len().div_ceil(4) * 4, 0);
    // SAFETY: the buffer is a rand_pool_info of the size it says, alive for the call.
    if unsafe { libc::ioctl(f.as_raw_fd(), RNDADDENTROPY as libc::Ioctl, info.as_ptr()) } != 0 {
        return Err(format!("RNDADDENTROPY: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: an ioctl without argument.
    if unsafe { libc::ioctl(f.as_raw_fd(), RNDRESEEDCRNG as libc::Ioctl) } != 0 {
        return Err(format!("RNDRESEEDCRNG: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Steps `CLOCK_REALTIME` to `since_epoch`.
pub fn step_clock(since_epoch: Duration) -> Result<(), String> {
    let ts = libc::timespec {
        tv_sec: since_epoch.as_secs().try_into().map_err(|_| "time out of range".to_string())?,
        tv_nsec: since_epoch.subsec_nanos().into(),
    };
    // SAFETY: a valid timespec.
    if unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &ts) } != 0 {
        return Err(format!("clock_settime: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(entropy: &str) -> RestoreRequest {
        RestoreRequest { generation: 3, entropy: entropy.into(), ..RestoreRequest::default() }
    }

    #[test]
    fn a_changed_vsock_context_id_is_noticed() {
        assert_eq!(vsock_reset_line(Some(5), Some(5)), None);
        assert_eq!(vsock_reset_line(None, Some(5)), None);
        assert_eq!(vsock_reset_line(Some(5), None), None);
        let line = vsock_reset_line(Some(5), Some(9)).unwrap();
        assert!(line.contains("5 -> 9") && line.contains("reset the vsock transport"), "{line}");
    }

    #[test]
    fn plans_and_refusals() {
        let good = "ab".repeat(32);
        let now = Now { generation: 2, gateway: Some(Ipv4Addr::new(169, 254, 0, 1)), neighbours: vec![Ipv4Addr::new(169, 254, 9, 9)] };
        let p = plan(
            &RestoreRequest {
                wall_clock_us: Some(1_700_000_000_123_456),
                hostname: Some("copy-2".into()),
                ip: Some("169.254.9.8/16".into()),
                ..req(&good)
            },
            &now,
        )
        .unwrap();
        assert_eq!((p.generation, p.entropy.len(), p.entropy[0]), (3, 32, 0xab));
        assert_eq!(p.wall_clock, Some(Duration::from_micros(1_700_000_000_123_456)));
        assert_eq!((p.hostname.as_deref(), p.ip), (Some("copy-2"), Some((Ipv4Addr::new(169, 254, 9, 8), 16))));
        assert_eq!(plan(&RestoreRequest { generation: MAX_GENERATION, ..req(&good) }, &now).map(|p| p.generation), Ok(MAX_GENERATION));
        assert!(plan(&RestoreRequest { entropy: "AB".repeat(32), ..req(&good) }, &now).is_ok(), "upper case is hex too");
        let host = |h: &str| RestoreRequest { hostname: Some(h.into()), ..req(&good) };
        let ip = |a: &str| RestoreRequest { ip: Some(a.into()), ..req(&good) };
        let cases: &[(RestoreRequest, &str)] = &[
            (RestoreRequest { generation: 2, ..req(&good) }, "generation 2 is not more than this machine's (2)"),
            (RestoreRequest { generation: 1, ..req(&good) }, "generation 1"),
            (RestoreRequest { generation: 0, ..req(&good) }, "generation 0"),
            (RestoreRequest { generation: MAX_GENERATION + 1, ..req(&good) }, "2^53 - 1"),
            (RestoreRequest { generation: u64::MAX, ..req(&good) }, "2^53 - 1"),
            (req(&"ab".repeat(31)), "31 bytes: at least 32"),
            (req("zz"), "not hex"),
            (req("abc"), "not hex"),
            (req(&"+a".repeat(32)), "not hex"),
            (req(&format!(" {good}")), "not hex"),
            (req(&format!("{good} ")), "not hex"),
            (req(""), "0 bytes"),
            (host("bad host"), "hostname"),
            (host(""), "hostname"),
            (host("-"), "hostname"),
            (host(".."), "hostname"),
            (host("a..b"), "hostname"),
            (host(".copy"), "hostname"),
            (host("copy."), "hostname"),
            (host("-copy"), "hostname"),
            (host("copy-"), "hostname"),
            (host("copy_1"), "hostname"),
            (host(&"a".repeat(64)), "hostname"),
            (host(&format!("{}.{}", "a".repeat(32), "b".repeat(32))), "hostname"),
            (ip("10.0.0.1"), "ip:"),
            (ip("169.254.0.1/16"), "the gateway's"),
            (ip("169.254.0.1/24"), "the gateway's"),
            (ip("169.254.9.9/16"), "a neighbour's"),
            (ip("0.0.0.0/16"), "cannot be an interface address"),
            (ip("127.0.0.1/8"), "loopback"),
            (ip("169.254.0.0/16"), "network address"),
            (ip("169.254.255.255/16"), "broadcast"),
        ];
        for (r, want) in cases {
            let e = plan(r, &now).unwrap_err();
            assert!(e.contains(want), "{r:?}: {e}");
        }
        // Without a gateway there is no host address to refuse.
        assert!(plan(&ip("169.254.0.1/16"), &Now { generation: 2, gateway: None, neighbours: Vec::new() }).is_ok());
    }

    #[test]
    fn old_address_fates() {
        let a = (Ipv4Addr::new(169, 254, 1, 2), 16);
        let b = (Ipv4Addr::new(169, 254, 7, 7), 16);
        let a17 = (a.0, 17);
        let cases = [
            // (current, open connections, past the bound) -> fate of old address a
            (Some(a), Some(3), false, Fate::Stays),
            (Some(a), Some(0), true, Fate::Stays),
            (Some(a17), Some(3), false, Fate::Goes),
            (Some(b), Some(0), false, Fate::Goes),
            (Some(b), Some(2), false, Fate::Waits),
            (Some(b), Some(2), true, Fate::Goes),
            (Some(b), None, false, Fate::Waits),
            (Some(b), None, true, Fate::Goes),
            (None, Some(0), false, Fate::Goes),
        ];
        for (current, open, past, want) in cases {
            assert_eq!(fate(a, current, open, past), want, "{current:?} {open:?} {past}");
        }
    }

    #[test]
    fn connections_from_proc_net_tcp() {
        // As the kernel writes an address: the hex of its 32-bit value in this machine's order.
        let hex = |a: [u8; 4]| format!("{:08X}", u32::from_ne_bytes(a));
        let (guest, old, host) = (hex([169, 254, 7, 7]), hex([169, 254, 1, 2]), hex([169, 254, 0, 1]));
        let line = |i: usize, local: &str, state: &str| {
            format!("{i:4}: {local}:0400 {host}:D4C2 {state} 00000000:00000000 00:00000000 00000000     0        0 1234 1 0000000000000000 20 4 30 10 -1")
        };
        let table = [
            "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode".to_string(),
            line(0, &old, "0A"),
            line(1, &old, "01"),
            line(2, &old, "06"),
            line(3, &old, "04"),
            line(4, &old, "05"),
            line(5, &old, "08"),
            line(6, &guest, "01"),
            line(7, &old, "09"),
        ]
        .join("\n");
        // Listening, TIME_WAIT and FIN_WAIT2 do not count.
        assert_eq!(open_connections(&table, Ipv4Addr::new(169, 254, 1, 2)), 4);
        assert_eq!(open_connections(&table, Ipv4Addr::new(169, 254, 7, 7)), 1);
        assert_eq!(open_connections(&table, Ipv4Addr::new(169, 254, 9, 9)), 0);
        assert_eq!(open_connections("", Ipv4Addr::new(169, 254, 1, 2)), 0);
        assert_eq!(open_connections("garbage\n1: nonsense", Ipv4Addr::new(169, 254, 1, 2)), 0);
    }

    #[test]
    fn hostnames() {
        for ok in ["a", "copy-1", "Copy-1.example", "x1.y2.z3", &"a".repeat(63), &format!("{}.{}", "a".repeat(31), "b".repeat(32))] {
            assert!(valid_hostname(ok), "{ok}");
        }
        for bad in ["", "-", ".", "..", "a..b", "a.", ".a", "-a", "a-", "a_b", "a b", "é", &"a".repeat(64), &"a".repeat(65)] {
            assert!(!valid_hostname(bad), "{bad}");
        }
    }
}
