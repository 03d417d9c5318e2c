//! One TAP per run: a unique name, 169.254.0.1/16 on the host side, a /32 route and a permanent
//! neighbour entry for the guest (so two runs at once do not clash and the host never waits on ARP),
//! and removal on every path ([`Tap`]'s `Drop`). Made with iproute2's `ip`.

use std::net::Ipv4Addr;

use std::process::Command;

/// Packets the host may queue for the guest. While the guest's driver is not up, what the host
/// sends waits in this queue and reaches the guest all at once when the driver comes up, in the
/// middle of its boot; a short queue keeps that burst small (the tun driver drops the rest).
pub const TX_QUEUE_LEN: u32 = 8;

/// The host side of every TAP.
pub const HOST_ADDR: &str = "169.254.0.1/16";

/// A TAP name from the process id and a per-process counter: `hp` + hex, at most 15 bytes.
pub fn tap_name(pid: u32, seq: u32) -> String {
    format!("hp{:x}x{:x}", pid & 0x0fff_ffff, seq & 0xfff)
}

/// The guests' prefix length: every address is in 169.254.0.0/16, the host's is 169.254.0.1.
pub const GUEST_PREFIX: u8 = 16;

/// A guest address in 169.254.0.0/16 that differs between runs: never .0.x (the host's) or x.0/x.255.
pub fn guest_ip(pid: u32, seq: u32) -> Ipv4Addr {
    let n = pid.wrapping_mul(31).wrapping_add(seq.wrapping_mul(7919));
    let hi = 1 + (n % 254) as u8;
    let lo = 1 + ((n / 254) % 254) as u8;
    Ipv4Addr::new(169, 254, hi, lo)
}

/// A locally administered unicast MAC that encodes the guest address.
pub fn guest_mac(ip: Ipv4Addr) -> String {
    let [_, _, c, d] = ip.octets();
    format!("02:68:70:fe:{c:02x}:{d:02x}")
}

/// The `ip` commands that set a TAP up, in order.
pub fn setup_commands(name: &str, guest_ip: Ipv4Addr, guest_mac: &str) -> Vec<Vec<String>> {
    let v = |s: &str| s.split(' ').map(String::from).collect::<Vec<_>>();
    vec![
        v(&format!("tuntap add dev {name} mode tap")),
        v(&format!("addr add {HOST_ADDR} dev {name}")),
        v(&format!("link set dev {name} txqueuelen {TX_QUEUE_LEN} up")),
        v(&format!("route replace {guest_ip}/32 dev {name} src 169.254.0.1")),
        v(&format!("neigh replace {guest_ip} lladdr {guest_mac} dev {name} nud permanent")),
    ]
}

#[derive(Debug, thiserror::Error)]
#[error("`ip {args}` failed: {detail}")]
pub struct TapError {
    pub args: String,
    pub detail: String,
}

/// A TAP that exists until dropped.
#[derive(Debug)]
pub struct Tap {
    pub name: String,
    pub guest_ip: Ipv4Addr,
    pub guest_mac: String,
}

/// How long one `ip` command may take (one that hangs in the kernel is killed and said).
pub const IP_TIME: std::time::Duration = std::time::Duration::from_secs(10);

fn ip(args: &[String]) -> Result<(), TapError> {
    let out = crate::bounded::output_within(Command::new("ip").args(args), IP_TIME).map_err(|e| TapError {
        args: args.join(" "),
        detail: if crate::bounded::is_timeout(&e) { e.to_string() } else { format!("{e} (install iproute2)") },
    })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(TapError { args: args.join(" "), detail: String::from_utf8_lossy(&out.stderr).trim().to_string() })
    }
}

impl Tap {
    /// Creates and configures the TAP; on any failure what was made is removed again.
    pub fn create(name: &str, guest_ip: Ipv4Addr, guest_mac: &str) -> Result<Tap, TapError> {
        let mut tap = None;
        for (i, args) in setup_commands(name, guest_ip, guest_mac).iter().enumerate() {
            ip(args)?;
            if i == 0 {
                tap = Some(Tap { name: name.to_string(), guest_ip, guest_mac: guest_mac.to_string() });
            }
        }
        tap.ok_or_else(|| TapError { args: String::new(), detail: "no commands".into() })
    }
}

/// Whether a network interface of this name exists.
pub fn exists(name: &str) -> bool {
    std::path::Path::new("/sys/class/net").join(name).exists()
}

impl Drop for Tap {
    fn drop(&mut self) {
        // Deleting the link removes its address, route and neighbour entry too.
        if let Err(e) = ip(&["link".into(), "del".into(), "dev".into(), self.name.clone()]) {
            eprintln!("host-probe: TAP {} left: {e}", self.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_addresses_and_macs() {
        assert_eq!(tap_name(0x1234, 0), "hp1234x0");
        assert!(tap_name(u32::MAX, u32::MAX).len() <= 15, "IFNAMSIZ");
        for pid in [1, 2, 4_194_304, u32::MAX] {
            for seq in [0, 1, 99] {
                let ip = guest_ip(pid, seq);
                let o = ip.octets();
                assert_eq!(&o[..2], &[169, 254]);
                assert!((1..=254).contains(&o[2]) && (1..=254).contains(&o[3]), "{ip}");
            }
        }
        assert_ne!(guest_ip(100, 0), guest_ip(100, 1));
        assert_ne!(guest_ip(100, 0), guest_ip(101, 0));
        assert_eq!(guest_mac(Ipv4Addr::new(169, 254, 10, 255)), "02:68:70:fe:0a:ff");
    }

    #[test]
    fn setup_is_tap_address_up_route_neighbour() {
        let c = setup_commands("hp1x0", Ipv4Addr::new(169, 254, 3, 4), "02:68:70:fe:03:04");
        let lines: Vec<String> = c.iter().map(|a| a.join(" ")).collect();
        assert_eq!(
            lines,
            vec![
                "tuntap add dev hp1x0 mode tap",
                "addr add 169.254.0.1/16 dev hp1x0",
                "link set dev hp1x0 txqueuelen 8 up",
                "route replace 169.254.3.4/32 dev hp1x0 src 169.254.0.1",
                "neigh replace 169.254.3.4 lladdr 02:68:70:fe:03:04 dev hp1x0 nud permanent",
            ]
        );
    }

    /// Root and iproute2 are there on the machines this project runs on; a real TAP is made and gone.
    #[test]
    fn a_real_tap_is_created_and_removed_on_drop() {
        if crate::locate::which("ip").is_none() {
            eprintln!("skipped: no `ip` (iproute2) on this host");
            return;
        }
        let name = tap_name(std::process::id(), 0xfe);
        let ip = guest_ip(std::process::id(), 0xfe);
        let mac = guest_mac(ip);
        {
            let tap = Tap::create(&name, ip, &mac).expect("create the TAP (needs CAP_NET_ADMIN)");
            assert!(exists(&tap.name));
            let route = Command::new("ip").args(["route", "get", &ip.to_string()]).output().unwrap();
            assert!(String::from_utf8_lossy(&route.stdout).contains(&format!("dev {name}")), "{route:?}");
            // The same name again fails, and the failure leaves the first TAP alone.
            assert!(Tap::create(&name, ip, &mac).is_err());
            assert!(exists(&name));
        }
        assert!(!exists(&name), "removed on drop");
    }
}
