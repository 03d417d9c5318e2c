//! `POST /v1/exec`: run a command in the guest, with a timeout, bounded output, and the exit status
//! delivered by the [`Reaper`] (never stolen by the orphan reaping).

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use agent::proto::{ExecRequest, ExecResponse};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;

use crate::reap::{Exit, Reaper};

/// Default and maximum command timeouts.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
pub const MAX_TIMEOUT: Duration = Duration::from_secs(3600);
/// Output kept per stream; the rest is read and dropped so the command never blocks on a full pipe.
pub const MAX_OUTPUT: usize = 64 * 1024;
/// After the command exits, how long to wait for its output pipes to close (a background process it
/// started may hold them open).
const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(500);

/// The environment every command starts from.
pub const BASE_ENV: &[(&str, &str)] =
    &[("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"), ("HOME", "/root"), ("TERM", "linux")];

/// Builds the command (pure apart from `Command` itself); `Err` is a message for the client.
pub fn command(req: &ExecRequest) -> Result<Command, String> {
    let (prog, args) = req.argv.split_first().ok_or("argv is empty")?;
    let mut cmd = Command::new(prog);
    cmd.args(args).env_clear();
    for (k, v) in BASE_ENV {
        cmd.env(k, v);
    }
    for kv in &req.env {
        let (k, v) = kv.split_once('=').filter(|(k, _)| !k.is_empty()).ok_or_else(|| format!("env entry {kv:?} is not KEY=VALUE"))?;
        cmd.env(k, v);
    }
    if let Some(cwd) = &req.cwd {
        cmd.current_dir(cwd);
    }
    cmd.stdin(if req.stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    // Its own process group, so a timeout kills what it started too.
    cmd.process_group(0);
    Ok(cmd)
}

async fn read_bounded(mut rx: pipe::Receiver) -> (Vec<u8>, bool) {
    let mut kept = Vec::new();
    let mut truncated = false;
    let mut buf = [0u8; 8192];
    loop {
        match rx.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = MAX_OUTPUT.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
                truncated |= n > room;
            }
        }
    }
    (kept, truncated)
}

/// Runs the request to completion.
pub async fn run(reaper: &Reaper, req: ExecRequest) -> Result<ExecResponse, String> {
    let mut cmd = command(&req)?;
    let timeout = req.timeout_ms.map(Duration::from_millis).unwrap_or(DEFAULT_TIMEOUT).min(MAX_TIMEOUT);
    let start = Instant::now();
    let (mut child, exited) = reaper.spawn(&mut cmd).map_err(|e| format!("cannot run {:?}: {e}", req.argv[0]))?;
    let pgid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap_or(0));
    let out = child.stdout.take().and_then(|s| pipe::Receiver::from_owned_fd(s.into()).ok());
    let err = child.stderr.take().and_then(|s| pipe::Receiver::from_owned_fd(s.into()).ok());
    let out = tokio::spawn(async move {
        if let Some(rx) = out {
            read_bounded(rx).await
        } else {
            (Vec::new(), false)
        }
    });
    let err = tokio::spawn(async move {
        if let Some(rx) = err {
            read_bounded(rx).await
        } else {
            (Vec::new(), false)
        }
    });
    if let (Some(input), Some(stdin)) = (req.stdin, child.stdin.take()) {
        if let Ok(mut tx) = pipe::Sender::from_owned_fd(stdin.into()) {
            tokio::spawn(async move {
                let _ = tx.write_all(input.as_bytes()).await;
            });
        }
    }
    let (exit, timed_out) = match tokio::time::timeout(timeout, exited).await {
        Ok(Ok(exit)) => (Some(exit), false),
        Ok(Err(_)) => (None, false),
        Err(_) => {
            let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
            (None, true)
        }
    };
    let drain = |h: tokio::task::JoinHandle<(Vec<u8>, bool)>| async move {
        match tokio::time::timeout(DRAIN_AFTER_EXIT, h).await {
            Ok(Ok(v)) => v,
            _ => (Vec::new(), false),
        }
    };
    let (stdout, stdout_truncated) = drain(out).await;
    let (stderr, stderr_truncated) = drain(err).await;
    Ok(ExecResponse {
        exit_code: match exit {
            Some(Exit::Code(c)) => Some(c),
            _ => None,
        },
        signal: match exit {
            Some(Exit::Signal(s)) => Some(s),
            _ if timed_out => Some(libc::SIGKILL),
            _ => None,
        },
        timed_out,
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
        stdout_truncated,
        stderr_truncated,
        duration_us: u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn req(argv: &[&str]) -> ExecRequest {
        ExecRequest { argv: argv.iter().map(|s| s.to_string()).collect(), ..ExecRequest::default() }
    }

    /// Runs a request while a background task reaps (as chinit's SIGCHLD loop does).
    async fn run_reaped(r: ExecRequest) -> Result<ExecResponse, String> {
        let _serial = crate::reap::TEST_CHILDREN.lock().await;
        let reaper = Arc::new(Reaper::default());
        let bg = Arc::clone(&reaper);
        let reaping = tokio::spawn(async move {
            loop {
                bg.reap();
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        });
        let out = run(&reaper, r).await;
        reaping.abort();
        out
    }

    #[test]
    fn command_rejects_bad_env() {
        let mut r = req(&["/bin/true"]);
        r.env = vec!["NOEQUALS".into()];
        assert!(command(&r).unwrap_err().contains("KEY=VALUE"));
        r.env = vec!["=x".into()];
        assert!(command(&r).is_err());
        assert!(command(&req(&[])).is_err());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn runs_with_env_cwd_stdin_and_exit_code() {
        let mut r = req(&["sh", "-c", "echo \"$GREETING $(pwd)\"; cat; echo oops >&2; exit 3"]);
        r.env = vec!["GREETING=hello=world".into()];
        r.cwd = Some("/tmp".into());
        r.stdin = Some("from stdin\n".into());
        let resp = run_reaped(r).await.unwrap();
        assert_eq!(resp.exit_code, Some(3));
        assert_eq!(resp.stdout, "hello=world /tmp\nfrom stdin\n");
        assert_eq!(resp.stderr, "oops\n");
        assert!(!resp.timed_out && resp.signal.is_none());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn output_is_bounded() {
        let resp = run_reaped(req(&["sh", "-c", "head -c 200000 /dev/zero | tr '\\0' x"])).await.unwrap();
        assert_eq!(resp.exit_code, Some(0));
        assert_eq!(resp.stdout.len(), MAX_OUTPUT);
        assert!(resp.stdout_truncated && !resp.stderr_truncated);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn timeout_kills_the_process_group() {
        let mut r = req(&["sh", "-c", "sleep 30 & sleep 30"]);
        r.timeout_ms = Some(200);
        let start = Instant::now();
        let resp = run_reaped(r).await.unwrap();
        assert!(resp.timed_out);
        assert_eq!(resp.signal, Some(libc::SIGKILL));
        assert!(start.elapsed() < Duration::from_secs(10));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_missing_program_is_an_error() {
        let e = run_reaped(req(&["/nonexistent/prog"])).await.unwrap_err();
        assert!(e.contains("cannot run \"/nonexistent/prog\""), "{e}");
    }
}
