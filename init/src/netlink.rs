//! A minimal synchronous rtnetlink client: one link dump (stats skipped), then every change in one
//! `sendmsg`, then one acknowledgement per change. Message building and parsing are pure functions.
//!
//! Why not a general netlink crate: the whole network step is a dump and three or four requests, and on
//! the boot path the general crates cost more than the work (a full parse of every attribute of every
//! link, an async connection task); see docs/boot-phases.md for the figures.

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::net::{Link, Plan};

// Message types, flags and attributes (linux/netlink.h, linux/rtnetlink.h, linux/if_link.h).
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const RTM_NEWADDR: u16 = 20;
const RTM_DELADDR: u16 = 21;
const RTM_NEWROUTE: u16 = 24;
const RTM_NEWNEIGH: u16 = 28;
const RTM_DELNEIGH: u16 = 29;
const RTM_GETNEIGH: u16 = 30;
const NDA_DST: u16 = 1;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_EXT_MASK: u16 = 29;
const RTEXT_FILTER_SKIP_STATS: u32 = 1 << 3;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_BROADCAST: u16 = 4;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const IFF_UP: u32 = 0x1;
const IFF_LOOPBACK: u32 = 0x8;
const ARPHRD_ETHER: u16 = 1;
const ARPHRD_LOOPBACK: u16 = 772;
const AF_UNSPEC: u8 = 0;
const AF_INET: u8 = 2;
const RT_TABLE_MAIN: u8 = 254;
const RTPROT_BOOT: u8 = 3;
const RTN_UNICAST: u8 = 1;

const NLMSG_HDRLEN: usize = 16;

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Appends one netlink message: header, fixed payload, attributes.
fn push_msg(buf: &mut Vec<u8>, ty: u16, flags: u16, seq: u32, fixed: &[u8], attrs: &[(u16, &[u8])]) {
    let start = buf.len();
    buf.extend_from_slice(&[0; NLMSG_HDRLEN]);
    buf.extend_from_slice(fixed);
    buf.resize(start + align4(buf.len() - start), 0);
    for (kind, data) in attrs {
        let len = 4 + data.len();
        buf.extend_from_slice(&u16::try_from(len).unwrap_or(u16::MAX).to_ne_bytes());
        buf.extend_from_slice(&kind.to_ne_bytes());
        buf.extend_from_slice(data);
        buf.resize(start + align4(buf.len() - start), 0);
    }
    let total = u32::try_from(buf.len() - start).unwrap_or(u32::MAX);
    buf[start..start + 4].copy_from_slice(&total.to_ne_bytes());
    buf[start + 4..start + 6].copy_from_slice(&ty.to_ne_bytes());
    buf[start + 6..start + 8].copy_from_slice(&flags.to_ne_bytes());
    buf[start + 8..start + 12].copy_from_slice(&seq.to_ne_bytes());
    // nlmsg_pid 0: the kernel fills in our port.
}

/// `struct ifinfomsg`.
fn ifinfomsg(index: u32, flags: u32, change: u32) -> [u8; 16] {
    let mut m = [0u8; 16];
    m[0] = AF_UNSPEC;
    m[4..8].copy_from_slice(&index.to_ne_bytes());
    m[8..12].copy_from_slice(&flags.to_ne_bytes());
    m[12..16].copy_from_slice(&change.to_ne_bytes());
    m
}

/// The link dump request, with stats skipped.
pub fn dump_links(seq: u32) -> Vec<u8> {
    let mut buf = Vec::with_capacity(40);
    push_msg(
        &mut buf,
        RTM_GETLINK,
        NLM_F_REQUEST | NLM_F_DUMP,
        seq,
        &ifinfomsg(0, 0, 0),
        &[(IFLA_EXT_MASK, &RTEXT_FILTER_SKIP_STATS.to_ne_bytes())],
    );
    buf
}

/// One request of a plan; described (for an error) only when one needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    LoopbackUp,
    LinkUp,
    AddAddress,
    DefaultRoute,
}

impl Request {
    pub fn describe(self, p: &Plan) -> String {
        match self {
            Request::LoopbackUp => "set lo up".to_string(),
            Request::LinkUp => format!("set {} up{}", p.name, p.mtu.map(|m| format!(" with mtu {m}")).unwrap_or_default()),
            Request::AddAddress => format!("add {}/{} to {}", p.addr, p.prefix, p.name),
            Request::DefaultRoute => {
                format!("add default route via {} on {}", p.gateway.map(|g| g.to_string()).unwrap_or_default(), p.name)
            }
        }
    }
}

/// Every change of a plan, in order, one message each; `seq` numbers start at `first_seq`.
/// Returns the bytes and which request each message is.
pub fn plan_messages(p: &Plan, first_seq: u32) -> (Vec<u8>, Vec<Request>) {
    let mut buf = Vec::with_capacity(256);
    let mut what = Vec::new();
    let mut seq = first_seq;
    let mut next = || {
        let s = seq;
        seq += 1;
        s
    };
    if let Some(lo) = p.lo {
        push_msg(&mut buf, RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK, next(), &ifinfomsg(lo, IFF_UP, IFF_UP), &[]);
        what.push(Request::LoopbackUp);
    }
    let mtu = p.mtu.map(u32::to_ne_bytes);
    let link_attrs: Vec<(u16, &[u8])> = mtu.as_ref().map(|m| (IFLA_MTU, &m[..])).into_iter().collect();
    push_msg(&mut buf, RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK, next(), &ifinfomsg(p.index, IFF_UP, IFF_UP), &link_attrs);
    what.push(Request::LinkUp);

    let mut ifa = [0u8; 8];
    ifa[0] = AF_INET;
    ifa[1] = p.prefix;
    ifa[4..8].copy_from_slice(&p.index.to_ne_bytes());
    let addr = p.addr.octets();
    let host_mask = u32::MAX.checked_shr(u32::from(p.prefix)).unwrap_or(0);
    let brd = Ipv4Addr::from(u32::from(p.addr) | host_mask).octets();
    push_msg(
        &mut buf,
        RTM_NEWADDR,
        NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        next(),
        &ifa,
        &[(IFA_LOCAL, &addr), (IFA_ADDRESS, &addr), (IFA_BROADCAST, &brd)],
    );
    what.push(Request::AddAddress);

    if let Some(gw) = p.gateway {
        let rtm = [AF_INET, 0, 0, 0, RT_TABLE_MAIN, RTPROT_BOOT, 0, RTN_UNICAST, 0, 0, 0, 0];
        let oif = p.index.to_ne_bytes();
        push_msg(
            &mut buf,
            RTM_NEWROUTE,
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
            next(),
            &rtm,
            &[(RTA_GATEWAY, &gw.octets()), (RTA_OIF, &oif)],
        );
        what.push(Request::DefaultRoute);
    }
    (buf, what)
}

/// One message read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Link(Link),
    /// An acknowledgement: 0 or a negative errno.
    Ack {
        seq: u32,
        errno: i32,
    },
    Done,
    /// A neighbour entry: its link and IPv4 address.
    Neigh {
        index: u32,
        dst: Ipv4Addr,
    },
    Other,
}

fn u16_at(b: &[u8], i: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(i..i + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], i: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(i..i + 4)?.try_into().ok()?))
}

/// Parses the messages of one datagram.
pub fn parse(datagram: &[u8]) -> Vec<Reply> {
    let mut out = Vec::new();
    let mut off = 0;
    while off + NLMSG_HDRLEN <= datagram.len() {
        let Some(len) = u32_at(datagram, off).map(|l| l as usize) else { break };
        if len < NLMSG_HDRLEN || off + len > datagram.len() {
            break;
        }
        let ty = u16_at(datagram, off + 4).unwrap_or(0);
        let seq = u32_at(datagram, off + 8).unwrap_or(0);
        let body = &datagram[off + NLMSG_HDRLEN..off + len];
        out.push(match ty {
            NLMSG_DONE => Reply::Done,
            NLMSG_ERROR => Reply::Ack { seq, errno: u32_at(body, 0).map(|e| e as i32).unwrap_or(-libc::EIO) },
            RTM_NEWLINK => parse_link(body).map(Reply::Link).unwrap_or(Reply::Other),
            RTM_NEWNEIGH => parse_neigh(body).unwrap_or(Reply::Other),
            _ => Reply::Other,
        });
        off += align4(len);
    }
    out
}

/// An `ndmsg` (12 bytes: family, padding, ifindex, state, flags, type) and its `NDA_DST`.
fn parse_neigh(body: &[u8]) -> Option<Reply> {
    if *body.first()? != AF_INET {
        return None;
    }
    let index = u32_at(body, 4)?;
    let mut off = 12;
    while off + 4 <= body.len() {
        let len = usize::from(u16_at(body, off)?);
        if len < 4 || off + len > body.len() {
            break;
        }
        if u16_at(body, off + 2)? & 0x3fff == NDA_DST && len == 8 {
            let a: [u8; 4] = body[off + 4..off + 8].try_into().ok()?;
            return Some(Reply::Neigh { index, dst: Ipv4Addr::from(a) });
        }
        off += align4(len);
    }
    None
}

/// An `ndmsg` for `index` (0: every link), with `dst` when given.
fn neigh_msg(buf: &mut Vec<u8>, ty: u16, flags: u16, seq: u32, index: u32, dst: Option<Ipv4Addr>) {
    let mut nd = [0u8; 12];
    nd[0] = AF_INET;
    nd[4..8].copy_from_slice(&index.to_ne_bytes());
    let d = dst.map(|a| a.octets());
    let attrs: Vec<(u16, &[u8])> = d.as_ref().map(|a| (NDA_DST, &a[..])).into_iter().collect();
    push_msg(buf, ty, flags, seq, &nd, &attrs);
}

fn parse_link(body: &[u8]) -> Option<Link> {
    let ty = u16_at(body, 2)?;
    let index = u32_at(body, 4)?;
    let flags = u32_at(body, 8)?;
    let mut link = Link {
        index,
        name: String::new(),
        loopback: flags & IFF_LOOPBACK != 0 || ty == ARPHRD_LOOPBACK,
        ethernet: ty == ARPHRD_ETHER,
        up: flags & IFF_UP != 0,
        mac: None,
    };
    let mut off = 16;
    while off + 4 <= body.len() {
        let len = usize::from(u16_at(body, off)?);
        let kind = u16_at(body, off + 2)? & 0x3fff;
        if len < 4 || off + len > body.len() {
            break;
        }
        let data = &body[off + 4..off + len];
        match kind {
            IFLA_IFNAME => link.name = String::from_utf8_lossy(data.split(|b| *b == 0).next().unwrap_or(&[])).into_owned(),
            IFLA_ADDRESS if data.len() == 6 => link.mac = data.try_into().ok(),
            _ => {}
        }
        off += align4(len);
    }
    Some(link)
}

/// A NETLINK_ROUTE socket.
pub struct Socket {
    fd: OwnedFd,
}

impl Socket {
    pub fn open() -> Result<Socket, String> {
        // SAFETY: plain socket(2); the descriptor is owned at once.
        let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_ROUTE) };
        if fd < 0 {
            return Err(format!("open netlink socket: {}", std::io::Error::last_os_error()));
        }
        // SAFETY: `fd` is a new descriptor nobody else owns.
        Ok(Socket { fd: unsafe { OwnedFd::from_raw_fd(fd) } })
    }

    fn send(&self, buf: &[u8]) -> Result<(), String> {
        // SAFETY: `buf` is valid for its length; the kernel is the destination (default address).
        let n = unsafe { libc::send(self.fd.as_raw_fd(), buf.as_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(format!("netlink send: {}", std::io::Error::last_os_error()));
        }
        Ok(())
    }

    fn recv(&self, buf: &mut [u8]) -> Result<usize, String> {
        loop {
            // SAFETY: `buf` is valid and writable for its length.
            let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(format!("netlink receive: {e}"));
            }
        }
    }

    /// Every link.
    pub fn links(&self) -> Result<Vec<Link>, String> {
        self.send(&dump_links(1))?;
        let mut buf = vec![0u8; 32 * 1024];
        let mut links = Vec::new();
        loop {
            let n = self.recv(&mut buf)?;
            for r in parse(&buf[..n]) {
                match r {
                    Reply::Link(l) => links.push(l),
                    Reply::Done => return Ok(links),
                    Reply::Ack { errno, .. } if errno != 0 => {
                        return Err(format!("list links: {}", std::io::Error::from_raw_os_error(-errno)))
                    }
                    _ => {}
                }
            }
        }
    }

    /// Forgets every IPv4 neighbour of link `index` (a restored copy must not trust the MACs its
    /// snapshot knew). Returns how many entries went.
    pub fn flush_neighbours(&self, index: u32) -> Result<usize, String> {
        let mut req = Vec::with_capacity(32);
        neigh_msg(&mut req, RTM_GETNEIGH, NLM_F_REQUEST | NLM_F_DUMP, 300, 0, None);
        self.send(&req)?;
        let mut buf = vec![0u8; 32 * 1024];
        let mut dsts = Vec::new();
        'dump: loop {
            let n = self.recv(&mut buf)?;
            for r in parse(&buf[..n]) {
                match r {
                    Reply::Neigh { index: i, dst } if i == index => dsts.push(dst),
                    Reply::Done => break 'dump,
                    Reply::Ack { errno, .. } if errno != 0 => {
                        return Err(format!("list neighbours: {}", std::io::Error::from_raw_os_error(-errno)))
                    }
                    _ => {}
                }
            }
        }
        if dsts.is_empty() {
            return Ok(0);
        }
        let mut del = Vec::with_capacity(40 * dsts.len());
        for (i, d) in dsts.iter().enumerate() {
            neigh_msg(&mut del, RTM_DELNEIGH, NLM_F_REQUEST | NLM_F_ACK, 400 + i as u32, index, Some(*d));
        }
        self.send(&del)?;
        let mut acked = 0;
        while acked < dsts.len() {
            let n = self.recv(&mut buf)?;
            acked += parse(&buf[..n]).iter().filter(|r| matches!(r, Reply::Ack { .. })).count();
        }
        Ok(dsts.len())
    }

    /// Removes `addr/prefix` from link `index` (a restored copy's old address).
    pub fn delete_address(&self, index: u32, addr: Ipv4Addr, prefix: u8) -> Result<(), String> {
        let mut buf = Vec::with_capacity(64);
        let mut ifa = [0u8; 8];
        ifa[0] = AF_INET;
        ifa[1] = prefix;
        ifa[4..8].copy_from_slice(&index.to_ne_bytes());
        let a = addr.octets();
        push_msg(&mut buf, RTM_DELADDR, NLM_F_REQUEST | NLM_F_ACK, 200, &ifa, &[(IFA_LOCAL, &a), (IFA_ADDRESS, &a)]);
        self.send(&buf)?;
        let mut reply = vec![0u8; 4096];
        loop {
            let n = self.recv(&mut reply)?;
            for r in parse(&reply[..n]) {
                if let Reply::Ack { errno, .. } = r {
                    return match errno {
                        0 => Ok(()),
                        e => Err(format!("remove {addr}/{prefix}: {}", std::io::Error::from_raw_os_error(-e))),
                    };
                }
            }
        }
    }

    /// Applies a plan: all changes in one send, then their acknowledgements. An address or route that
    /// already exists is fine.
    pub fn apply(&self, p: &Plan) -> Result<(), String> {
        let first = 100;
        let (msgs, what) = plan_messages(p, first);
        self.send(&msgs)?;
        let mut buf = vec![0u8; 8 * 1024];
        let mut acked = 0;
        let mut errors = Vec::new();
        while acked < what.len() {
            let n = self.recv(&mut buf)?;
            for r in parse(&buf[..n]) {
                if let Reply::Ack { seq, errno } = r {
                    acked += 1;
                    if errno != 0 && errno != -libc::EEXIST {
                        let i = seq.wrapping_sub(first) as usize;
                        let step = what.get(i).map(|r| r.describe(p)).unwrap_or_else(|| "netlink request".to_string());
                        errors.push(format!("{step}: {}", std::io::Error::from_raw_os_error(-errno)));
                    }
                }
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::AddrSource;

    fn plan(lo: Option<u32>, gw: Option<Ipv4Addr>, mtu: Option<u32>) -> Plan {
        Plan {
            lo,
            index: 2,
            name: "eth0".into(),
            addr: Ipv4Addr::new(169, 254, 1, 2),
            prefix: 16,
            source: AddrSource::Chinit,
            gateway: gw,
            mtu,
            mac: None,
        }
    }

    /// Splits a batch back into (type, flags, seq, payload) per message.
    fn split(buf: &[u8]) -> Vec<(u16, u16, u32, Vec<u8>)> {
        let mut out = Vec::new();
        let mut off = 0;
        while off < buf.len() {
            let len = u32_at(buf, off).unwrap() as usize;
            assert_eq!(len % 4, 0, "messages are 4-byte aligned");
            out.push((
                u16_at(buf, off + 4).unwrap(),
                u16_at(buf, off + 6).unwrap(),
                u32_at(buf, off + 8).unwrap(),
                buf[off + 16..off + len].to_vec(),
            ));
            off += len;
        }
        assert_eq!(off, buf.len());
        out
    }

    #[test]
    fn dump_request_layout() {
        let b = dump_links(7);
        let msgs = split(&b);
        assert_eq!(msgs.len(), 1);
        let (ty, flags, seq, body) = &msgs[0];
        assert_eq!((*ty, *flags, *seq), (RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP, 7));
        // ifinfomsg (16) + IFLA_EXT_MASK attribute (8).
        assert_eq!(body.len(), 24);
        assert_eq!(&body[16..20], &[8, 0, 29, 0][..]);
        assert_eq!(u32_at(body, 20), Some(RTEXT_FILTER_SKIP_STATS));
    }

    #[test]
    fn plan_batches_every_change_in_order() {
        let p = plan(Some(1), Some(Ipv4Addr::new(169, 254, 0, 1)), Some(1400));
        let (b, what) = plan_messages(&p, 100);
        assert_eq!(
            what.iter().map(|r| r.describe(&p)).collect::<Vec<_>>(),
            ["set lo up", "set eth0 up with mtu 1400", "add 169.254.1.2/16 to eth0", "add default route via 169.254.0.1 on eth0"]
        );
        let msgs = split(&b);
        let kinds: Vec<(u16, u32)> = msgs.iter().map(|m| (m.0, m.2)).collect();
        assert_eq!(kinds, [(RTM_NEWLINK, 100), (RTM_NEWLINK, 101), (RTM_NEWADDR, 102), (RTM_NEWROUTE, 103)]);
        assert!(msgs.iter().all(|m| m.1 & (NLM_F_REQUEST | NLM_F_ACK) == NLM_F_REQUEST | NLM_F_ACK));
        // lo: index 1, IFF_UP in flags and change.
        assert_eq!((u32_at(&msgs[0].3, 4), u32_at(&msgs[0].3, 8), u32_at(&msgs[0].3, 12)), (Some(1), Some(IFF_UP), Some(IFF_UP)));
        // eth0 with IFLA_MTU 1400.
        assert_eq!(&msgs[1].3[16..20], &[8, 0, 4, 0][..]);
        assert_eq!(u32_at(&msgs[1].3, 20), Some(1400));
        // Address: AF_INET, /16, index 2, then LOCAL, ADDRESS, BROADCAST.
        let a = &msgs[2].3;
        assert_eq!((a[0], a[1], u32_at(a, 4)), (AF_INET, 16, Some(2)));
        assert_eq!(&a[8..16], &[8, 0, 2, 0, 169, 254, 1, 2][..]);
        assert_eq!(&a[16..24], &[8, 0, 1, 0, 169, 254, 1, 2][..]);
        assert_eq!(&a[24..32], &[8, 0, 4, 0, 169, 254, 255, 255][..]);
        assert!(msgs[2].1 & (NLM_F_CREATE | NLM_F_EXCL) == NLM_F_CREATE | NLM_F_EXCL);
        // Route: main table, unicast, gateway then oif.
        let r = &msgs[3].3;
        assert_eq!((r[0], r[4], r[7]), (AF_INET, RT_TABLE_MAIN, RTN_UNICAST));
        assert_eq!(&r[12..20], &[8, 0, 5, 0, 169, 254, 0, 1][..]);
        assert_eq!(u32_at(r, 24), Some(2));
    }

    #[test]
    fn minimal_plan_is_link_and_address() {
        let (b, what) = plan_messages(&plan(None, None, None), 1);
        assert_eq!(what.len(), 2);
        assert_eq!(split(&b).len(), 2);
    }

    /// Builds a RTM_NEWLINK reply as the kernel would.
    fn link_reply(seq: u32, index: u32, ty: u16, flags: u32, name: &str, mac: Option<[u8; 6]>) -> Vec<u8> {
        let mut info = ifinfomsg(index, flags, 0);
        info[2..4].copy_from_slice(&ty.to_ne_bytes());
        let mut name_z = name.as_bytes().to_vec();
        name_z.push(0);
        let mut attrs: Vec<(u16, &[u8])> = vec![(IFLA_IFNAME, &name_z), (IFLA_MTU, &[0xdc, 5, 0, 0])];
        let mac_v;
        if let Some(m) = mac {
            mac_v = m.to_vec();
            attrs.push((IFLA_ADDRESS, &mac_v));
        }
        let mut b = Vec::new();
        push_msg(&mut b, RTM_NEWLINK, 0x2, seq, &info, &attrs);
        b
    }

    #[test]
    fn parses_a_dump_acks_and_done() {
        let mut d = link_reply(1, 1, ARPHRD_LOOPBACK, IFF_UP | IFF_LOOPBACK, "lo", Some([0; 6]));
        d.extend(link_reply(1, 2, ARPHRD_ETHER, 0, "eth0", Some([2, 0, 0, 0, 1, 2])));
        let mut done = Vec::new();
        push_msg(&mut done, NLMSG_DONE, 0x2, 1, &[0, 0, 0, 0], &[]);
        d.extend(done);
        let mut ack = Vec::new();
        push_msg(&mut ack, NLMSG_ERROR, 0, 102, &(-libc::EEXIST).to_ne_bytes(), &[]);
        d.extend(ack);
        let got = parse(&d);
        assert_eq!(
            got,
            vec![
                Reply::Link(Link { index: 1, name: "lo".into(), loopback: true, ethernet: false, up: true, mac: Some([0; 6]) }),
                Reply::Link(Link {
                    index: 2,
                    name: "eth0".into(),
                    loopback: false,
                    ethernet: true,
                    up: false,
                    mac: Some([2, 0, 0, 0, 1, 2])
                }),
                Reply::Done,
                Reply::Ack { seq: 102, errno: -libc::EEXIST },
            ]
        );
    }

    /// A neighbour message as the kernel sends it reads back; one for another family is skipped.
    #[test]
    fn neighbour_messages_round_trip() {
        let mut b = Vec::new();
        neigh_msg(&mut b, RTM_NEWNEIGH, 0, 9, 3, Some(Ipv4Addr::new(169, 254, 0, 1)));
        assert_eq!(parse(&b), vec![Reply::Neigh { index: 3, dst: Ipv4Addr::new(169, 254, 0, 1) }]);
        let mut dump = Vec::new();
        neigh_msg(&mut dump, RTM_GETNEIGH, NLM_F_REQUEST | NLM_F_DUMP, 1, 0, None);
        let msgs = split(&dump);
        assert_eq!((msgs[0].0, msgs[0].1, msgs[0].3.len()), (RTM_GETNEIGH, NLM_F_REQUEST | NLM_F_DUMP, 12));
        let mut v6 = b.clone();
        v6[16] = 10; // AF_INET6
        assert_eq!(parse(&v6), vec![Reply::Other]);
    }

    #[test]
    fn truncated_input_stops_cleanly() {
        let d = link_reply(1, 2, ARPHRD_ETHER, 0, "eth0", None);
        for cut in [0, 3, 15, 16, d.len() - 1] {
            let got = parse(&d[..cut]);
            assert!(got.is_empty(), "cut at {cut}: {got:?}");
        }
    }
}
