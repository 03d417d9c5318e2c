//! How the host reaches a guest's vsock, and how the guest reaches the host, over either kind:
//!
//! - **hybrid**: a Unix socket that speaks cloud-hypervisor's protocol (`CONNECT <port>\n`, then
//!   `OK <port>\n`): cloud-hypervisor's own, or vhost-device-vsock's in front of QEMU. A guest's
//!   connection to the host's port P arrives at the Unix socket `<socket>_P`.
//! - **kernel**: the host kernel's vhost-vsock (`/dev/vhost-vsock`, QEMU's `vhost-vsock-device`):
//!   `AF_VSOCK` to the guest's context id; the guest reaches host listeners at CID 2.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::bounded::{Bounded, Timeouts};

/// A connection of either kind (its reads and writes can be bounded: [`crate::bounded`]).
pub trait Stream: Read + Write + Send + Timeouts {}
impl<T: Read + Write + Send + Timeouts> Stream for T {}

/// The host's way to the guest's vsock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestVsock {
    /// The hybrid Unix socket.
    Hybrid(PathBuf),
    /// The kernel's vsock, to this context id.
    Kernel { cid: u32 },
}

/// `setsockopt(AF_VSOCK, SO_VM_SOCKETS_CONNECT_TIMEOUT)` (linux/vm_sockets.h; a `timeval`).
const SO_VM_SOCKETS_CONNECT_TIMEOUT: libc::c_int = 6;

impl GuestVsock {
    /// Connects to the guest's `port`, giving up after `timeout` (a guest whose driver is not up yet
    /// never answers); reads and writes give up after `timeout` too.
    pub fn connect(&self, port: u32, timeout: Duration) -> io::Result<Box<dyn Stream>> {
        self.connect_then(port, timeout, timeout)
    }

    /// [`GuestVsock::connect`] giving up after `connect_timeout`, reads and writes after `io_timeout`.
    pub fn connect_then(&self, port: u32, connect_timeout: Duration, io_timeout: Duration) -> io::Result<Box<dyn Stream>> {
        match self {
            GuestVsock::Hybrid(uds) => {
                let s = hybrid_connect(uds, port, Instant::now() + connect_timeout)?;
                s.set_read_timeout(Some(io_timeout))?;
                s.set_write_timeout(Some(io_timeout))?;
                Ok(Box::new(s))
            }
            GuestVsock::Kernel { cid } => {
                let s = kernel_connect(*cid, port, connect_timeout)?;
                s.set_read_timeout(Some(io_timeout))?;
                s.set_write_timeout(Some(io_timeout))?;
                Ok(Box::new(s))
            }
        }
    }

    /// Listens for the guest's connections to the host's `port`.
    pub fn listen(&self, port: u32) -> io::Result<Listener> {
        match self {
            GuestVsock::Hybrid(uds) => UnixListener::bind(hybrid_listener_path(uds, port)).map(Listener::Unix),
            GuestVsock::Kernel { .. } => {
                vsock::VsockListener::bind_with_cid_port(libc::VMADDR_CID_ANY, port).map(|l| Listener::Kernel(Box::new(l)))
            }
        }
    }

    /// For reports: which vsock it is.
    pub fn describe(&self) -> String {
        match self {
            GuestVsock::Hybrid(uds) => format!("hybrid (Unix socket {})", uds.display()),
            GuestVsock::Kernel { cid } => format!("kernel vhost-vsock (guest CID {cid})"),
        }
    }
}

/// Connects to the guest's `port` through a hybrid socket by `deadline`
/// ([`agent::client::vsock_handshake`]). The VMM's socket may not accept, nor answer, while the
/// guest's driver is not up: the connect and the handshake give up by the deadline.
fn hybrid_connect(uds: &Path, port: u32, deadline: Instant) -> io::Result<UnixStream> {
    let mut b = Bounded::new(crate::bounded::connect_unix(uds, deadline)?, deadline);
    agent::client::vsock_handshake(&mut b, port).map_err(|e| match e {
        agent::client::ClientError::Io(e) => e,
        other => io::Error::other(other.to_string()),
    })?;
    Ok(b.into_inner())
}

/// Where a guest's connection to the host's `port` arrives, with a hybrid socket.
pub fn hybrid_listener_path(uds: &Path, port: u32) -> PathBuf {
    PathBuf::from(format!("{}_{port}", uds.display()))
}

fn kernel_connect(cid: u32, port: u32, timeout: Duration) -> io::Result<vsock::VsockStream> {
    // SAFETY: socket() makes a descriptor that the OwnedFd owns from here on.
    let fd = unsafe {
        let raw = libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        OwnedFd::from_raw_fd(raw)
    };
    let tv = libc::timeval {
        tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_usec: libc::suseconds_t::from(timeout.subsec_micros()),
    };
    // SAFETY: a valid descriptor, and a timeval of the size given.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::AF_VSOCK,
            SO_VM_SOCKETS_CONNECT_TIMEOUT,
            (&raw const tv).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: sockaddr_vm is plain data; zeroed is a valid value of it.
    let mut addr: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
    addr.svm_family = libc::AF_VSOCK as libc::sa_family_t;
    addr.svm_cid = cid;
    addr.svm_port = port;
    // SAFETY: the address is fully set and passed with its size.
    let rc =
        unsafe { libc::connect(fd.as_raw_fd(), (&raw const addr).cast(), std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the descriptor is a connected AF_VSOCK stream socket, handed over whole.
    let s = unsafe { vsock::VsockStream::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(fd)) };
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    Ok(s)
}

/// A host listener: for a guest's vsock connections, or a VMM's (QEMU's debugcon).
pub enum Listener {
    Unix(UnixListener),
    Kernel(Box<vsock::VsockListener>),
}

impl Listener {
    /// Accepts one connection, checking `stop` every millisecond; `None` once stopped or broken.
    /// Reads from it give up after `read_timeout`.
    pub fn accept_until(&self, stop: &AtomicBool, read_timeout: Duration) -> Option<Box<dyn Stream>> {
        let nonblocking = match self {
            Listener::Unix(l) => l.set_nonblocking(true),
            Listener::Kernel(l) => l.set_nonblocking(true),
        };
        nonblocking.ok()?;
        while !stop.load(Ordering::SeqCst) {
            let accepted: io::Result<Box<dyn Stream>> = match self {
                Listener::Unix(l) => l.accept().and_then(|(s, _)| {
                    s.set_nonblocking(false)?;
                    s.set_read_timeout(Some(read_timeout))?;
                    Ok(Box::new(s) as Box<dyn Stream>)
                }),
                Listener::Kernel(l) => l.accept().and_then(|(s, _)| {
                    s.set_nonblocking(false)?;
                    s.set_read_timeout(Some(read_timeout))?;
                    Ok(Box::new(s) as Box<dyn Stream>)
                }),
            };
            match accepted {
                Ok(s) => return Some(s),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(1)),
                Err(_) => return None,
            }
        }
        None
    }
}

/// A guest context id and a host notify port for the kernel's vsock that no other run of this
/// machine uses at the same time: from the run's number in the process (12 bits: every run one
/// host-probe makes, [`crate::plan::MAX_RUNS`]) and the process id (19 bits: processes whose ids
/// differ below 524 288 never clash; 31 bits in all keep both clear of the reserved values).
pub fn kernel_ids(pid: u32, seq: u32) -> (u32, u32) {
    let unique = ((pid & 0x0007_ffff) << 12) | (seq & 0xfff);
    (3 + unique, 0x4000_0000 + unique)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_differ_between_runs_and_stay_valid() {
        let (cid, port) = kernel_ids(1234, 0);
        assert!(cid > 2 && port >= 1024);
        assert_ne!(kernel_ids(1234, 0), kernel_ids(1234, 1));
        assert_ne!(kernel_ids(1234, 0), kernel_ids(1235, 0));
        let (cid, port) = kernel_ids(u32::MAX, u32::MAX);
        assert!(cid < u32::MAX && port < u32::MAX, "VMADDR_CID_ANY and VMADDR_PORT_ANY are reserved");
    }

    #[test]
    fn hybrid_listener_paths_and_descriptions() {
        assert_eq!(hybrid_listener_path(Path::new("/r/vsock.sock"), 10_000), PathBuf::from("/r/vsock.sock_10000"));
        assert!(GuestVsock::Kernel { cid: 7 }.describe().contains("kernel vhost-vsock (guest CID 7)"));
        assert!(GuestVsock::Hybrid("/r/v.sock".into()).describe().starts_with("hybrid"));
    }

    /// A hybrid listener takes the connection the guest side makes to `<socket>_<port>`.
    #[test]
    fn a_hybrid_listener_accepts() {
        let dir = tempfile::tempdir().unwrap();
        let uds = dir.path().join("v.sock");
        let l = GuestVsock::Hybrid(uds.clone()).listen(42).unwrap();
        let path = hybrid_listener_path(&uds, 42);
        let t = std::thread::spawn(move || {
            let mut s = std::os::unix::net::UnixStream::connect(path).unwrap();
            s.write_all(b"pushed").unwrap();
        });
        let stop = AtomicBool::new(false);
        let mut s = l.accept_until(&stop, Duration::from_secs(5)).unwrap();
        let mut got = String::new();
        s.read_to_string(&mut got).unwrap();
        t.join().unwrap();
        assert_eq!(got, "pushed");
    }
}
