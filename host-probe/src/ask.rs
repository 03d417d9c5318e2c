//! Asking chinit's agent: one `GET /ready` over the TAP or over vsock (either kind), and `POST
//! /v1/shutdown` over whichever of the two accepts it. Each is one short connection whose request
//! and answer end by a deadline, however the guest answers ([`crate::bounded::Bounded`]).

use crate::bounded::Bounded;
use crate::vsock::GuestVsock;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use agent::proto::{Ready, DEFAULT_VSOCK_PORT};

/// How long a request over TCP may take once connected.
const TCP_ANSWER: Duration = Duration::from_secs(2);
/// How long a request over vsock may take, connecting included.
const VSOCK_ANSWER: Duration = Duration::from_secs(1);

/// One `GET /ready` over TCP; `Some` on a 200 with a Ready body.
pub fn ready_over_tcp(addr: SocketAddr, connect_timeout: Duration) -> Option<Ready> {
    let s = TcpStream::connect_timeout(&addr, connect_timeout).ok()?;
    let r = agent::client::request(&mut Bounded::new(s, Instant::now() + TCP_ANSWER), "GET", "/ready", None).ok()?;
    (r.status == 200).then(|| r.json().ok()).flatten()
}

/// One `GET /ready` over vsock.
pub fn ready_over_vsock(vsock: &GuestVsock) -> Option<Ready> {
    let deadline = Instant::now() + VSOCK_ANSWER;
    let s = vsock.connect(DEFAULT_VSOCK_PORT, VSOCK_ANSWER).ok()?;
    let r = agent::client::request(&mut Bounded::new(s, deadline), "GET", "/ready", None).ok()?;
    (r.status == 200).then(|| r.json().ok()).flatten()
}

/// How long reading the kernel's log over vsock may take, connecting included.
const KMSG_ANSWER: Duration = Duration::from_secs(5);

/// `GET /v1/kmsg`: the kernel's log buffer as chinit read it, over vsock, else over the TAP (where
/// host-probe's guests serve the control API too: `chinit.api=tcp`).
pub fn kmsg(addr: Option<SocketAddr>, vsock: Option<&GuestVsock>) -> Result<agent::proto::Kmsg, String> {
    let deadline = Instant::now() + KMSG_ANSWER;
    let r = match (vsock, addr) {
        (Some(v), _) => {
            let s = v.connect(DEFAULT_VSOCK_PORT, KMSG_ANSWER).map_err(|e| format!("vsock connect: {e}"))?;
            agent::client::request(&mut Bounded::new(s, deadline), "GET", agent::proto::KMSG_PATH, None)
        }
        (None, Some(a)) => {
            let s = TcpStream::connect_timeout(&a, KMSG_ANSWER).map_err(|e| format!("connect {a}: {e}"))?;
            agent::client::request(&mut Bounded::new(s, deadline), "GET", agent::proto::KMSG_PATH, None)
        }
        (None, None) => return Err("the guest has neither vsock nor a TAP".into()),
    }
    .map_err(|e| e.to_string())?;
    if r.status != 200 {
        return Err(format!("chinit answered {}: {}", r.status, String::from_utf8_lossy(&r.body).trim()));
    }
    r.json().map_err(|e| format!("its answer: {e}"))
}

/// Asks chinit to power off: over TCP, else (no TAP, or the control API is not served on TCP:
/// 403 without `chinit.api=tcp`) over vsock. True once an answer accepted it (202).
pub fn shutdown_guest(addr: Option<SocketAddr>, vsock: Option<&GuestVsock>) -> bool {
    let body = br#"{"action":"poweroff"}"#;
    let accepted = |r: Result<agent::client::Response, _>| r.is_ok_and(|r| r.status == 202);
    if let Some(a) = addr {
        if let Ok(s) = TcpStream::connect_timeout(&a, Duration::from_millis(500)) {
            if accepted(agent::client::request(&mut Bounded::new(s, Instant::now() + TCP_ANSWER), "POST", "/v1/shutdown", Some(body))) {
                return true;
            }
        }
    }
    if let Some(v) = vsock {
        let deadline = Instant::now() + VSOCK_ANSWER;
        if let Ok(s) = v.connect(DEFAULT_VSOCK_PORT, VSOCK_ANSWER) {
            return accepted(agent::client::request(&mut Bounded::new(s, deadline), "POST", "/v1/shutdown", Some(body)));
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;
    use std::thread::JoinHandle;

    /// A one-connection HTTP server answering `status`; `hybrid` first does the vsock handshake.
    fn fake_agent<S: std::io::Read + std::io::Write + Send + 'static>(mut s: S, hybrid: bool, status: &'static str) -> JoinHandle<String> {
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            let mut buf = [0u8; 1024];
            if hybrid {
                while !seen.ends_with(b"\n") {
                    let n = s.read(&mut buf[..1]).unwrap();
                    assert!(n > 0);
                    seen.extend_from_slice(&buf[..n]);
                }
                std::io::Write::write_all(&mut s, b"OK 1073741824\n").unwrap();
            }
            while !String::from_utf8_lossy(&seen).contains("poweroff\"}") {
                let n = s.read(&mut buf).unwrap();
                assert!(n > 0);
                seen.extend_from_slice(&buf[..n]);
            }
            let answer = format!("HTTP/1.1 {status}\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}");
            std::io::Write::write_all(&mut s, answer.as_bytes()).unwrap();
            String::from_utf8_lossy(&seen).into_owned()
        })
    }

    #[test]
    fn shutdown_falls_back_to_vsock_when_tcp_refuses_the_control_api() {
        let dir = std::env::temp_dir().join(format!("hp-shutdown-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let uds = dir.join("vsock.sock");
        for (tcp_status, vsock_used, want) in [("202 Accepted", false, true), ("403 Forbidden", true, true)] {
            let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = tcp.local_addr().unwrap();
            let _ = std::fs::remove_file(&uds);
            let vsock = UnixListener::bind(&uds).unwrap();
            let t = std::thread::spawn(move || fake_agent(tcp.accept().unwrap().0, false, tcp_status).join().unwrap());
            let v = std::thread::spawn(move || {
                vsock.set_nonblocking(true).unwrap();
                for _ in 0..500 {
                    if let Ok((s, _)) = vsock.accept() {
                        s.set_nonblocking(false).unwrap();
                        return Some(fake_agent(s, true, "202 Accepted").join().unwrap());
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
                None
            });
            assert_eq!(shutdown_guest(Some(addr), Some(&GuestVsock::Hybrid(uds.clone()))), want, "TCP answered {tcp_status}");
            assert!(t.join().unwrap().starts_with("POST /v1/shutdown "));
            let over_vsock = v.join().unwrap();
            assert_eq!(over_vsock.is_some(), vsock_used, "TCP answered {tcp_status}: {over_vsock:?}");
            if let Some(text) = over_vsock {
                assert!(text.starts_with("CONNECT 1024\n") && text.contains("POST /v1/shutdown "), "{text}");
            }
        }
        // Refused everywhere: not asked.
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = tcp.local_addr().unwrap();
        let t = std::thread::spawn(move || fake_agent(tcp.accept().unwrap().0, false, "403 Forbidden").join().unwrap());
        assert!(!shutdown_guest(Some(addr), None));
        t.join().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
