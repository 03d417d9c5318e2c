//! `chinit.notify=vsock:<port>`: push the ready document to the host (CID 2) so it learns of
//! readiness without polling. One JSON line, then close.

use std::time::Duration;

use agent::proto::{Ready, HOST_CID};
use tokio::io::AsyncWriteExt;

const TIMEOUT: Duration = Duration::from_secs(2);

/// Pushes `ready` to the host's notify port, when there is one; a failure is one console line.
pub async fn push(port: Option<u32>, ready: &Ready) {
    if let Some(port) = port {
        if let Err(e) = send(port, ready).await {
            crate::say!("notify: {e}");
        }
    }
}

pub async fn send(port: u32, ready: &Ready) -> Result<(), String> {
    let mut line = serde_json::to_vec(ready).map_err(|e| e.to_string())?;
    line.push(b'\n');
    let addr = tokio_vsock::VsockAddr::new(HOST_CID, port);
    let io = async {
        let mut s = tokio_vsock::VsockStream::connect(addr).await?;
        s.write_all(&line).await?;
        s.flush().await?;
        s.shutdown(std::net::Shutdown::Write)
    };
    match tokio::time::timeout(TIMEOUT, io).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("notify host vsock port {port}: {e}")),
        Err(_) => Err(format!("notify host vsock port {port}: no answer within {} s", TIMEOUT.as_secs())),
    }
}
