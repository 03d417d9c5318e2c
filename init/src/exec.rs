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
/// After the command exits (or is killed), how long chinit goes on reading output its pipes still
/// hold or receive. A background process it started may keep them open for ever: chinit never
/// waits for it, and closes its ends of the pipes when this runs out.
pub const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(50);

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

/// Why the command could not start, for the client (pure). The child changes to the cwd before it
/// runs the program, so a cwd that cannot be entered (`cwd`: it and why) is what failed.
fn start_error(program: &str, spawn: &std::io::Error, cwd: Option<(&str, std::io::Error)>) -> String {
    match cwd {
        Some((dir, e)) => format!("cannot change to cwd {dir:?}: {e}"),
        None => format!("cannot run {program:?}: {spawn}"),
    }
}

/// Why `dir` cannot be a command's cwd, if it cannot: opened as a directory (`O_PATH`), it fails as
/// `chdir` would (missing, not a directory, a component not searchable).
fn cwd_error(dir: &str) -> Option<std::io::Error> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().read(true).custom_flags(libc::O_PATH | libc::O_DIRECTORY).open(dir).err()
}

/// One output stream of the command: what was kept of it, and the pipe while it is open.
struct Stream {
    rx: Option<pipe::Receiver>,
    kept: Vec<u8>,
    truncated: bool,
}

impl Stream {
    fn new(fd: Option<std::os::fd::OwnedFd>) -> Stream {
        Stream { rx: fd.and_then(|fd| pipe::Receiver::from_owned_fd(fd).ok()), kept: Vec::new(), truncated: false }
    }

    fn open(&self) -> bool {
        self.rx.is_some()
    }

    /// Reads once, keeping up to [`MAX_OUTPUT`]; closes the pipe at its end. Cancel-safe.
    async fn read(&mut self) {
        let Some(rx) = self.rx.as_mut() else { return };
        let mut buf = [0u8; 8192];
        match rx.read(&mut buf).await {
            Ok(0) | Err(_) => self.rx = None,
            Ok(n) => {
                let room = MAX_OUTPUT.saturating_sub(self.kept.len());
                self.kept.extend_from_slice(&buf[..n.min(room)]);
                self.truncated |= n > room;
            }
        }
    }
}

/// Runs the request to completion: until the command exits (or times out and is killed), then
/// [`DRAIN_AFTER_EXIT`] at most for the rest of its output. Everything it opened (pipes, the stdin
/// writer) is closed when this returns.
pub async fn run(reaper: &Reaper, req: ExecRequest) -> Result<ExecResponse, String> {
    let mut cmd = command(&req)?;
    let timeout = req.timeout_ms.map(Duration::from_millis).unwrap_or(DEFAULT_TIMEOUT).min(MAX_TIMEOUT);
    let start = Instant::now();
    let (mut child, mut exited) = reaper.spawn(&mut cmd).map_err(|e| {
        let cwd = req.cwd.as_deref().and_then(|dir| cwd_error(dir).map(|e| (dir, e)));
        start_error(&req.argv[0], &e, cwd)
    })?;
    let pgid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap_or(0));
    let mut out = Stream::new(child.stdout.take().map(Into::into));
    let mut err = Stream::new(child.stderr.take().map(Into::into));
    let writer = match (req.stdin, child.stdin.take()) {
        (Some(input), Some(stdin)) => pipe::Sender::from_owned_fd(stdin.into()).ok().map(|mut tx| {
            tokio::spawn(async move {
                let _ = tx.write_all(input.as_bytes()).await;
            })
        }),
        _ => None,
    };
    let kill_at = tokio::time::Instant::from_std(start + timeout);
    let mut exit = None;
    let mut timed_out = false;
    // Set once the command is gone: reading stops then at the latest.
    let mut drain_until: Option<tokio::time::Instant> = None;
    while out.open() || err.open() || drain_until.is_none() {
        let gone = drain_until.is_some();
        tokio::select! {
            () = out.read(), if out.open() => {}
            () = err.read(), if err.open() => {}
            r = &mut exited, if !gone => {
                exit = r.ok();
                drain_until = Some(tokio::time::Instant::now() + DRAIN_AFTER_EXIT);
            }
            () = tokio::time::sleep_until(kill_at), if !gone => {
                let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
                timed_out = true;
                drain_until = Some(tokio::time::Instant::now() + DRAIN_AFTER_EXIT);
            }
            () = tokio::time::sleep_until(drain_until.unwrap_or(kill_at)), if gone => break,
        }
    }
    if let Some(w) = writer {
        w.abort();
    }
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
        stdout: String::from_utf8_lossy(&out.kept).into_owned(),
        stderr: String::from_utf8_lossy(&err.kept).into_owned(),
        stdout_truncated: out.truncated,
        stderr_truncated: err.truncated,
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

    /// A background process that keeps the pipes open neither hides the output nor holds the
    /// request; one that writes for ever is cut off when the drain ends (and dies of SIGPIPE).
    #[tokio::test(flavor = "current_thread")]
    async fn background_children_do_not_hold_the_answer() {
        let start = Instant::now();
        let resp = run_reaped(req(&["sh", "-c", "echo important; sleep 5 &"])).await.unwrap();
        assert_eq!((resp.exit_code, resp.stdout.as_str()), (Some(0), "important\n"));
        assert!(start.elapsed() < Duration::from_secs(3), "waited for the background sleep: {:?}", start.elapsed());
        let resp = run_reaped(req(&["sh", "-c", "echo started; yes &"])).await.unwrap();
        assert_eq!(resp.exit_code, Some(0));
        assert!(resp.stdout.starts_with("started\n") && resp.stdout_truncated, "{:?}", &resp.stdout[..resp.stdout.len().min(200)]);
    }

    #[test]
    fn start_errors_blame_what_failed() {
        let enoent = || std::io::Error::from_raw_os_error(libc::ENOENT);
        let enotdir = std::io::Error::from_raw_os_error(libc::ENOTDIR);
        let cases = [
            ("pwd", enoent(), None, "cannot run \"pwd\": No such file or directory (os error 2)"),
            ("pwd", enoent(), Some(("/nope", enoent())), "cannot change to cwd \"/nope\": No such file or directory (os error 2)"),
            ("/x", enoent(), Some(("/dev/null", enotdir)), "cannot change to cwd \"/dev/null\": Not a directory (os error 20)"),
        ];
        for (program, spawn, cwd, want) in cases {
            assert_eq!(start_error(program, &spawn, cwd), want);
        }
        assert!(cwd_error("/tmp").is_none() && cwd_error("/").is_none());
        assert_eq!(cwd_error("/nonexistent/dir").and_then(|e| e.raw_os_error()), Some(libc::ENOENT));
        assert_eq!(cwd_error("/dev/null").and_then(|e| e.raw_os_error()), Some(libc::ENOTDIR));
    }

    /// A cwd that cannot be entered is named, not blamed on the program.
    #[tokio::test(flavor = "current_thread")]
    async fn a_missing_cwd_is_named() {
        let mut r = req(&["pwd"]);
        r.cwd = Some("/nonexistent/dir".into());
        let e = run_reaped(r).await.unwrap_err();
        assert_eq!(e, "cannot change to cwd \"/nonexistent/dir\": No such file or directory (os error 2)");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_missing_program_is_an_error() {
        let e = run_reaped(req(&["/nonexistent/prog"])).await.unwrap_err();
        assert!(e.contains("cannot run \"/nonexistent/prog\""), "{e}");
    }
}
