//! cloud-hypervisor's REST API on its `--api-socket`: the calls a snapshot and a restore need.

use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// One call; the body of a 2xx answer, else the status and what cloud-hypervisor said.
pub fn call(socket: &Path, method: &str, action: &str, body: Option<&[u8]>, timeout: Duration) -> Result<Vec<u8>, String> {
    let what = format!("cloud-hypervisor API {method} {action}");
    let mut s = UnixStream::connect(socket).map_err(|e| format!("{what}: {}: {e}", socket.display()))?;
    s.set_read_timeout(Some(timeout)).map_err(|e| format!("{what}: {e}"))?;
    let r = agent::client::request(&mut s, method, &format!("/api/v1/{action}"), Some(body.unwrap_or_default()))
        .map_err(|e| format!("{what}: {e}"))?;
    if (200..300).contains(&r.status) {
        Ok(r.body)
    } else {
        Err(format!("{what}: {} {}", r.status, String::from_utf8_lossy(&r.body).trim()))
    }
}

/// `vm.pause`.
pub fn pause(socket: &Path) -> Result<(), String> {
    call(socket, "PUT", "vm.pause", None, Duration::from_secs(10)).map(drop)
}

/// `vm.snapshot` into the directory `dir` (it must exist).
pub fn snapshot(socket: &Path, dir: &Path) -> Result<(), String> {
    let body = serde_json::json!({ "destination_url": format!("file://{}", dir.display()) }).to_string();
    call(socket, "PUT", "vm.snapshot", Some(body.as_bytes()), Duration::from_secs(120)).map(drop)
}

/// The VM's state from `vm.info` (`Created`, `Running`, `Paused`, `Shutdown`).
pub fn state(socket: &Path) -> Result<String, String> {
    let body = call(socket, "GET", "vm.info", None, Duration::from_secs(2))?;
    let v: serde_json::Value = serde_json::from_slice(&body).map_err(|e| format!("cloud-hypervisor API vm.info: {e}"))?;
    Ok(v.get("state").and_then(|s| s.as_str()).unwrap_or("").to_string())
}

/// Waits until the VM runs (a restore with `resume=true` ends so).
pub fn wait_running(socket: &Path, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let mut last = String::from("no answer");
    while Instant::now() < deadline {
        match state(socket) {
            Ok(s) if s == "Running" => return Ok(()),
            Ok(s) => last = format!("state {s}"),
            Err(e) => last = e,
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Err(format!("cloud-hypervisor's VM did not run within {} s ({last})", timeout.as_secs()))
}
