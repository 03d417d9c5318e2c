//! Announcing the guest's address: one gratuitous ARP once the agent listens. A host that asked for
//! the address before it was up (its ARP request found nobody) keeps its packets queued and asks
//! again only a second later; the announcement answers it at once, and the queued SYN goes out.
//! Benchmarks put a static neighbour entry on the host; bridges, orchestrators' veths and users'
//! own pollers have none.

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const ETH_P_ARP: u16 = 0x0806;
const BROADCAST: [u8; 6] = [0xff; 6];

/// The frame (pure): an ARP request from `mac` for its own `addr` (sender and target address the
/// same), broadcast; Linux's own announcements have this form.
pub fn gratuitous(mac: [u8; 6], addr: Ipv4Addr) -> [u8; 42] {
    let mut f = [0u8; 42];
    f[0..6].copy_from_slice(&BROADCAST);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&ETH_P_ARP.to_be_bytes());
    // Ethernet hardware (1), IPv4 (0x0800), address lengths 6 and 4, operation request (1).
    f[14..22].copy_from_slice(&[0, 1, 0x08, 0, 6, 4, 0, 1]);
    f[22..28].copy_from_slice(&mac);
    f[28..32].copy_from_slice(&addr.octets());
    // Target hardware address: zero (unknown), as in a request.
    f[38..42].copy_from_slice(&addr.octets());
    f
}

/// Sends [`gratuitous`] on link `index` through a packet socket, and returns the socket (when it
/// was made) with the outcome. Closing a packet socket waits for an RCU grace period
/// (`synchronize_net`, milliseconds): the caller closes it off the boot path.
pub fn announce(index: u32, mac: [u8; 6], addr: Ipv4Addr) -> (Option<OwnedFd>, Result<(), String>) {
    let frame = gratuitous(mac, addr);
    // SAFETY: socket() only makes a descriptor, owned at once by an OwnedFd.
    let fd = unsafe {
        // Protocol 0: this socket receives nothing.
        let raw = libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0);
        if raw < 0 {
            return (None, Err(format!("packet socket: {}", std::io::Error::last_os_error())));
        }
        OwnedFd::from_raw_fd(raw)
    };
    // SAFETY: sockaddr_ll is plain data; zeroed is a valid value of it.
    let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    to.sll_family = libc::AF_PACKET as u16;
    to.sll_protocol = ETH_P_ARP.to_be();
    to.sll_ifindex = i32::try_from(index).unwrap_or(0);
    to.sll_halen = 6;
    to.sll_addr[..6].copy_from_slice(&BROADCAST);
    // SAFETY: the frame and the address are valid for the lengths given.
    let sent = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            frame.as_ptr().cast(),
            frame.len(),
            0,
            (&raw const to).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    let outcome = if sent < 0 { Err(format!("gratuitous ARP for {addr}: {}", std::io::Error::last_os_error())) } else { Ok(()) };
    (Some(fd), outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_layout() {
        let f = gratuitous([2, 0, 0, 0, 1, 2], Ipv4Addr::new(169, 254, 1, 2));
        let want: [u8; 42] = [
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 1, 2, 0x08, 0x06, // Ethernet
            0, 1, 0x08, 0, 6, 4, 0, 1, // ARP request, Ethernet/IPv4
            2, 0, 0, 0, 1, 2, 169, 254, 1, 2, // sender: our MAC and address
            0, 0, 0, 0, 0, 0, 169, 254, 1, 2, // target: the same address
        ];
        assert_eq!(f, want);
    }
}
