//! Networking: a pure plan (which link, which address, from where), applied over netlink
//! ([`crate::netlink`]).
//! `lo` up; the NIC up with a link-local address; optional gateway and MTU. No ARP probing, no DAD.

use std::net::Ipv4Addr;

use crate::cmdline::NetConfig;

/// What the plan needs to know of a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub loopback: bool,
    pub ethernet: bool,
    pub up: bool,
    pub mac: Option<[u8; 6]>,
}

/// Where the address came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddrSource {
    /// `chinit.ip=`
    Chinit,
    /// The kernel's `ip=`.
    KernelIp,
    /// Derived from the MAC.
    Mac,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Loopback to bring up, if it is down.
    pub lo: Option<u32>,
    pub index: u32,
    pub name: String,
    pub addr: Ipv4Addr,
    pub prefix: u8,
    pub source: AddrSource,
    pub gateway: Option<Ipv4Addr>,
    pub mtu: Option<u32>,
    /// The link's MAC, which announces the address ([`crate::arp`]); none on a link without one.
    pub mac: Option<[u8; 6]>,
}

/// The link-local address of a MAC: `169.254.A.B` with `A = mac[4]`, `B = mac[5]`; an `A` of 0 or
/// 255 (reserved by RFC 3927) becomes `1 + mac[3] % 254`. Deterministic, so the host can compute it.
pub fn addr_from_mac(mac: [u8; 6]) -> Ipv4Addr {
    let a = match mac[4] {
        0 | 255 => 1 + mac[3] % 254,
        a => a,
    };
    Ipv4Addr::new(169, 254, a, mac[5])
}

/// The addresses of complete entries (flag `ATF_COM`, 0x2) in `/proc/net/arp`'s text (pure):
/// machines that answered on the link.
pub fn arp_neighbours(table: &str) -> Vec<Ipv4Addr> {
    const ATF_COM: u32 = 0x2;
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let addr = f.next()?.parse().ok()?;
            let flags = u32::from_str_radix(f.nth(1)?.trim_start_matches("0x"), 16).ok()?;
            (flags & ATF_COM != 0).then_some(addr)
        })
        .collect()
}

/// [`arp_neighbours`] of this machine (none when the table cannot be read).
pub fn neighbours() -> Vec<Ipv4Addr> {
    std::fs::read_to_string("/proc/net/arp").map(|t| arp_neighbours(&t)).unwrap_or_default()
}

/// Why `addr/prefix` cannot be a host's address on a link, if it cannot: unspecified, loopback,
/// multicast, reserved (240/4, broadcast), or its subnet's network or broadcast address (prefixes
/// up to /30; /31 and /32 have no such addresses).
pub fn unusable(addr: Ipv4Addr, prefix: u8) -> Option<&'static str> {
    let host_bits = 32u32.saturating_sub(u32::from(prefix));
    let host_mask = u32::MAX.checked_shr(32 - host_bits).unwrap_or(0);
    let host = u32::from(addr) & host_mask;
    if addr.is_unspecified() {
        Some("is the unspecified address")
    } else if addr.is_loopback() {
        Some("is a loopback address")
    } else if addr.is_multicast() {
        Some("is a multicast address")
    } else if addr.octets()[0] >= 240 {
        Some("is reserved (240.0.0.0/4)")
    } else if host_bits >= 2 && host == 0 {
        Some("is its subnet's network address")
    } else if host_bits >= 2 && host == host_mask {
        Some("is its subnet's broadcast address")
    } else {
        None
    }
}

/// Chooses the link and the address. `Err` says why there is nothing to configure.
pub fn plan(cfg: &NetConfig, links: &[Link]) -> Result<Plan, String> {
    let lo = links.iter().find(|l| l.loopback && !l.up).map(|l| l.index);
    let kip = cfg.kernel_ip.as_ref();
    let wanted = cfg.iface.clone().or_else(|| kip.and_then(|k| k.device.clone()));
    let link = match &wanted {
        Some(name) => links.iter().find(|l| &l.name == name).ok_or_else(|| {
            let names: Vec<&str> = links.iter().filter(|l| !l.loopback).map(|l| l.name.as_str()).collect();
            format!("no link named {name} (links: {}); fix chinit.iface=", if names.is_empty() { "none".into() } else { names.join(", ") })
        })?,
        None => {
            let mut candidates: Vec<&Link> = links.iter().filter(|l| l.ethernet && !l.loopback).collect();
            candidates.sort_by_key(|l| l.index);
            *candidates.first().ok_or("no ethernet link: attach a NIC (e.g. --net tap=...) or boot with chinit.net=off")?
        }
    };
    let (addr, prefix, source) = if let Some((a, p)) = cfg.ip {
        (a, p, AddrSource::Chinit)
    } else if let Some(a) = kip.and_then(|k| k.client) {
        (a, kip.and_then(|k| k.prefix).unwrap_or(16), AddrSource::KernelIp)
    } else {
        let mac = link.mac.ok_or_else(|| format!("{} has no MAC address to derive an address from; set chinit.ip=", link.name))?;
        (addr_from_mac(mac), 16, AddrSource::Mac)
    };
    let gateway = cfg.gateway.or_else(|| kip.and_then(|k| k.gateway));
    Ok(Plan { lo, index: link.index, name: link.name.clone(), addr, prefix, source, gateway, mtu: cfg.mtu, mac: link.mac })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmdline::parse;

    fn link(index: u32, name: &str, mac: Option<[u8; 6]>) -> Link {
        let lo = name == "lo";
        Link { index, name: name.into(), loopback: lo, ethernet: !lo && mac.is_some(), up: false, mac }
    }

    fn links() -> Vec<Link> {
        vec![
            link(1, "lo", None),
            link(3, "eth1", Some([2, 0, 0, 0, 0, 9])),
            link(2, "eth0", Some([0x52, 0x54, 0, 0x12, 0x34, 0x56])),
            link(4, "tun0", None),
        ]
    }

    #[test]
    fn addr_from_mac_table() {
        let cases = [
            ([0x52, 0x54, 0, 0x12, 0x34, 0x56], Ipv4Addr::new(169, 254, 0x34, 0x56)),
            ([0, 0, 0, 7, 0, 0], Ipv4Addr::new(169, 254, 8, 0)),
            ([0, 0, 0, 0xff, 0xff, 1], Ipv4Addr::new(169, 254, 2, 1)),
            ([0, 0, 0, 0xfe, 0, 1], Ipv4Addr::new(169, 254, 1, 1)),
        ];
        for (mac, want) in cases {
            let got = addr_from_mac(mac);
            assert_eq!(got, want, "{mac:x?}");
            assert!(got.octets()[2] != 0 && got.octets()[2] != 255);
        }
    }

    type Want = Result<(&'static str, Ipv4Addr, u8, AddrSource, Option<Ipv4Addr>), &'static str>;

    #[test]
    fn plan_table() {
        let cases: &[(&str, Want)] = &[
            ("", Ok(("eth0", Ipv4Addr::new(169, 254, 0x34, 0x56), 16, AddrSource::Mac, None))),
            (
                "chinit.ip=169.254.9.9/16 chinit.gw=169.254.0.1",
                Ok(("eth0", Ipv4Addr::new(169, 254, 9, 9), 16, AddrSource::Chinit, Some(Ipv4Addr::new(169, 254, 0, 1)))),
            ),
            ("chinit.iface=eth1", Ok(("eth1", Ipv4Addr::new(169, 254, 1, 9), 16, AddrSource::Mac, None))),
            (
                "ip=10.1.2.3::10.1.0.1:255.255.0.0:h:eth1:off",
                Ok(("eth1", Ipv4Addr::new(10, 1, 2, 3), 16, AddrSource::KernelIp, Some(Ipv4Addr::new(10, 1, 0, 1)))),
            ),
            ("ip=10.1.2.3 chinit.ip=169.254.1.1/16", Ok(("eth0", Ipv4Addr::new(169, 254, 1, 1), 16, AddrSource::Chinit, None))),
            ("chinit.iface=eth9", Err("no link named eth9 (links: eth1, eth0, tun0)")),
            ("chinit.iface=tun0", Err("tun0 has no MAC")),
        ];
        for (line, want) in cases {
            let got = plan(&parse(line).0.net, &links());
            match (got, want) {
                (Ok(p), Ok((name, addr, prefix, source, gw))) => {
                    assert_eq!((p.name.as_str(), p.addr, p.prefix, p.source, p.gateway), (*name, *addr, *prefix, *source, *gw), "{line}");
                    assert_eq!(p.lo, Some(1), "{line}: lo is brought up");
                }
                (Err(e), Err(w)) => assert!(e.contains(w), "{line}: {e}"),
                (got, want) => panic!("{line}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn unusable_addresses() {
        let cases: &[(&str, u8, Option<&str>)] = &[
            ("169.254.1.2", 16, None),
            ("169.254.0.1", 16, None),
            ("10.0.0.0", 8, Some("network")),
            ("169.254.0.0", 16, Some("network")),
            ("169.254.255.255", 16, Some("broadcast")),
            ("169.254.1.255", 24, Some("broadcast")),
            ("169.254.1.255", 16, None),
            ("192.168.0.4", 30, Some("network")),
            ("192.168.0.5", 30, None),
            ("192.168.0.7", 30, Some("broadcast")),
            ("192.168.0.4", 31, None),
            ("192.168.0.5", 31, None),
            ("192.168.0.5", 32, None),
            ("0.0.0.0", 16, Some("unspecified")),
            ("127.0.0.1", 8, Some("loopback")),
            ("224.0.0.1", 16, Some("multicast")),
            ("240.0.0.1", 8, Some("reserved")),
            ("255.255.255.255", 32, Some("reserved")),
        ];
        for (addr, prefix, want) in cases {
            let got = unusable(addr.parse().unwrap(), *prefix);
            match (got, want) {
                (None, None) => {}
                (Some(why), Some(w)) => assert!(why.contains(w), "{addr}/{prefix}: {why}"),
                _ => panic!("{addr}/{prefix}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn no_ethernet_link_says_what_to_do() {
        let e = plan(&parse("").0.net, &[link(1, "lo", None)]).unwrap_err();
        assert!(e.contains("attach a NIC") && e.contains("chinit.net=off"), "{e}");
    }

    #[test]
    fn lo_already_up_is_left_alone() {
        let mut l = links();
        l[0].up = true;
        assert_eq!(plan(&parse("").0.net, &l).unwrap().lo, None);
    }

    #[test]
    fn neighbours_are_the_complete_arp_entries() {
        let table = "IP address       HW type     Flags       HW address            Mask     Device\n\
                     169.254.0.1      0x1         0x2         6a:1c:2b:00:00:01     *        eth0\n\
                     169.254.3.3      0x1         0x0         00:00:00:00:00:00     *        eth0\n\
                     169.254.4.4      0x1         0x6         6a:1c:2b:00:00:04     *        eth0\n\
                     garbage\n";
        assert_eq!(arp_neighbours(table), vec![Ipv4Addr::new(169, 254, 0, 1), Ipv4Addr::new(169, 254, 4, 4)]);
        assert_eq!(arp_neighbours(""), Vec::<Ipv4Addr>::new());
    }
}
