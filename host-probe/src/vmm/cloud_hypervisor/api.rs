//! cloud-hypervisor's REST API on its `--api-socket`: the calls a snapshot and a restore need. Each
//! call gives up by its timeout, however the VMM answers (or does not: [`crate::bounded`]).

use std::path::Path;
use std::time::{Duration, Instant};

use crate::vmm::ApiError;

/// One call; the body of a 2xx answer, else the status and what cloud-hypervisor said.
pub fn call(socket: &Path, method: &str, action: &str, body: Option<&[u8]>, timeout: Duration) -> Result<Vec<u8>, ApiError> {
    let what = format!("cloud-hypervisor API {method} {action}");
    let deadline = Instant::now() + timeout;
    let r = super::super::http_call(&what, socket, method, &format!("/api/v1/{action}"), Some(body.unwrap_or_default()), deadline)?;
    if (200..300).contains(&r.status) {
        Ok(r.body)
    } else {
        Err(ApiError::Failed(format!("{what}: {} {}", r.status, String::from_utf8_lossy(&r.body).trim())))
    }
}

/// `vm.pause`.
pub fn pause(socket: &Path, timeout: Duration) -> Result<(), ApiError> {
    call(socket, "PUT", "vm.pause", None, timeout).map(drop)
}

/// `vm.snapshot` into the directory `dir` (it must exist).
pub fn snapshot(socket: &Path, dir: &Path, timeout: Duration) -> Result<(), ApiError> {
    let body = serde_json::json!({ "destination_url": format!("file://{}", dir.display()) }).to_string();
    call(socket, "PUT", "vm.snapshot", Some(body.as_bytes()), timeout).map(drop)
}

/// The VM's state from `vm.info` (`Created`, `Running`, `Paused`, `Shutdown`).
pub fn state(socket: &Path, timeout: Duration) -> Result<String, ApiError> {
    let body = call(socket, "GET", "vm.info", None, timeout)?;
    let v: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| ApiError::Failed(format!("cloud-hypervisor API GET vm.info: {e}")))?;
    Ok(v.get("state").and_then(|s| s.as_str()).unwrap_or("").to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixListener;

    /// An API that answers a byte at a time, slower than the whole call may take, never finishing:
    /// the call gives up at its timeout however the bytes trickle.
    #[test]
    fn an_api_that_trickles_its_answer_is_given_up_on_at_the_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.sock");
        let l = UnixListener::bind(&path).unwrap();
        let vmm = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            for b in b"HTTP/1.1 200 OK\r\nContent-Length: 2000\r\n\r\n".iter().cycle().take(100) {
                std::thread::sleep(Duration::from_millis(200));
                if s.write_all(&[*b]).is_err() {
                    return;
                }
            }
        });
        let (tx, rx) = std::sync::mpsc::channel();
        let t = Instant::now();
        std::thread::spawn(move || tx.send(call(&path, "GET", "vm.info", None, Duration::from_secs(1))));
        let r = rx.recv_timeout(Duration::from_secs(10)).expect("the call was still waiting after 10 s (timeout 1 s)");
        let took = t.elapsed();
        assert!(r.is_err(), "{r:?}");
        assert!(took < Duration::from_millis(1500), "gave up after {took:?}");
        vmm.join().unwrap();
    }
}
