//! A QMP client: the JSON control protocol QEMU and StratoVirt serve on their `-qmp unix:` socket.
//! One command at a time; events that arrive meanwhile are skipped. Enough to stop, migrate, take a
//! migration in and continue a guest.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::bounded::{self, Bounded};
use crate::error::Error;
use crate::launch::{Phase, Running};
use crate::vmm::ApiError;

/// A QMP session with a running VMM (`label`: `QEMU`, `StratoVirt`) during `phase`, its commands
/// bound by the phase's deadline. A starting VMM opens its QMP socket late (seconds, for many
/// copies at once on a loaded host): it is tried until then, while the VMM lives. Once connected,
/// the greeting and the capabilities negotiation have the phase's time left: a session given up on
/// and opened again made QEMU answer the second negotiation with an error that the next command
/// took for its own.
pub fn session(running: &mut Running, phase: &Phase, path: &Path, label: &str) -> Result<Qmp, Error> {
    let mut q = running.wait_in(phase, &format!("{label}'s QMP socket {}", path.display()), QMP_EVERY, |left| {
        Qmp::connect(path, left).map_err(|e| e.to_string())
    })?;
    q.until(phase.deadline);
    Ok(q)
}

/// How often a starting VMM's QMP socket is tried.
const QMP_EVERY: Duration = Duration::from_millis(2);

/// One QMP session. Every read and write gives up at the session's deadline ([`Qmp::until`]).
pub struct Qmp {
    reader: BufReader<Bounded<UnixStream>>,
    writer: Bounded<UnixStream>,
}

impl Qmp {
    /// Connects (the VMM makes the socket as it starts: retried), reads the greeting and leaves
    /// capabilities negotiation, all within `timeout`; the session's commands get the same
    /// deadline until [`Qmp::until`] moves it.
    pub fn connect(path: &Path, timeout: Duration) -> Result<Qmp, ApiError> {
        let deadline = Instant::now() + timeout;
        let stream = loop {
            match bounded::connect_unix(path, deadline) {
                Ok(s) => break s,
                Err(e) if bounded::is_timeout(&e) || Instant::now() >= deadline => {
                    return Err(ApiError::NoAnswer(format!("QMP socket {}: no answer in time ({e})", path.display())))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(2)),
            }
        };
        let writer = stream.try_clone().map_err(|e| ApiError::io("QMP", &e))?;
        let mut q = Qmp { reader: BufReader::new(Bounded::new(stream, deadline)), writer: Bounded::new(writer, deadline) };
        let greeting = q.line()?;
        if greeting.get("QMP").is_none() {
            return Err(ApiError::Failed(format!("QMP: not a QMP greeting: {greeting}")));
        }
        q.execute("qmp_capabilities", None)?;
        Ok(q)
    }

    /// The session's next reads and writes give up at `deadline`.
    pub fn until(&mut self, deadline: Instant) {
        self.reader.get_mut().until(deadline);
        self.writer.until(deadline);
    }

    fn line(&mut self) -> Result<Value, ApiError> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => Err(ApiError::Failed("QMP: the VMM closed the connection".into())),
            Ok(_) => serde_json::from_str(&line).map_err(|e| ApiError::Failed(format!("QMP: unreadable answer {line:?}: {e}"))),
            Err(e) => Err(ApiError::io("QMP", &e)),
        }
    }

    /// Runs one command; its `return` value, or its error's description.
    pub fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value, ApiError> {
        let mut msg = json!({ "execute": command });
        if let Some(a) = arguments {
            msg["arguments"] = a;
        }
        let mut text = msg.to_string();
        text.push('\n');
        self.writer.write_all(text.as_bytes()).map_err(|e| ApiError::io(&format!("QMP {command}"), &e))?;
        loop {
            let v = self.line()?;
            if v.get("event").is_some() {
                continue;
            }
            return answer(command, v).map_err(ApiError::Failed);
        }
    }

    /// Sets the migration capability `x-ignore-shared`: RAM mapped from a shared file is not sent
    /// (the snapshot's memory file has it).
    pub fn ignore_shared(&mut self) -> Result<(), ApiError> {
        self.execute("migrate-set-capabilities", Some(json!({"capabilities": [{"capability": "x-ignore-shared", "state": true}]})))
            .map(drop)
    }

    /// Waits until the migration (out or in) completed, within `timeout`; its error when it failed.
    pub fn wait_migration(&mut self, timeout: Duration) -> Result<(), ApiError> {
        let deadline = Instant::now() + timeout;
        self.until(deadline);
        loop {
            let r = self.execute("query-migrate", None)?;
            match migration_status(&r) {
                MigrationStatus::Completed => return Ok(()),
                MigrationStatus::Failed(why) => return Err(ApiError::Failed(format!("the migration failed: {why}"))),
                MigrationStatus::Going => {}
            }
            if Instant::now() >= deadline {
                return Err(ApiError::NoAnswer(format!("the migration did not complete within {} s", timeout.as_secs())));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// A command's answer (pure).
fn answer(command: &str, v: Value) -> Result<Value, String> {
    if let Some(r) = v.get("return") {
        return Ok(r.clone());
    }
    let desc = v.pointer("/error/desc").and_then(Value::as_str).unwrap_or("no description");
    Err(format!("QMP {command}: {desc}"))
}

#[derive(Debug, PartialEq, Eq)]
enum MigrationStatus {
    Going,
    Completed,
    Failed(String),
}

/// `query-migrate`'s answer (pure). An incoming migration that finished shows `completed`; one not
/// begun shows no status.
fn migration_status(r: &Value) -> MigrationStatus {
    match r.get("status").and_then(Value::as_str) {
        Some("completed") => MigrationStatus::Completed,
        Some(s @ ("failed" | "cancelled")) => MigrationStatus::Failed(r.get("error-desc").and_then(Value::as_str).unwrap_or(s).to_string()),
        _ => MigrationStatus::Going,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    #[test]
    fn answers_and_migration_states() {
        assert_eq!(answer("stop", json!({"return": {}})), Ok(json!({})));
        assert_eq!(answer("cont", json!({"error": {"class": "GenericError", "desc": "not paused"}})), Err("QMP cont: not paused".into()));
        let cases = [
            (json!({}), MigrationStatus::Going),
            (json!({"status": "setup"}), MigrationStatus::Going),
            (json!({"status": "active", "ram": {}}), MigrationStatus::Going),
            (json!({"status": "completed"}), MigrationStatus::Completed),
            (json!({"status": "failed", "error-desc": "Unable to write"}), MigrationStatus::Failed("Unable to write".into())),
            (json!({"status": "cancelled"}), MigrationStatus::Failed("cancelled".into())),
        ];
        for (r, want) in cases {
            assert_eq!(migration_status(&r), want, "{r}");
        }
    }

    /// A QMP socket that accepts and never greets (a QEMU that hangs): connecting gives up at its
    /// timeout, saying it had no answer.
    #[test]
    fn a_qmp_socket_that_never_answers_is_given_up_on_at_the_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qmp.sock");
        let l = UnixListener::bind(&path).unwrap();
        let (done, wait) = std::sync::mpsc::channel::<()>();
        let qemu = std::thread::spawn(move || {
            let held = l.accept().unwrap();
            let _ = wait.recv_timeout(Duration::from_secs(60));
            drop(held);
        });
        let t = Instant::now();
        let e = Qmp::connect(&path, Duration::from_secs(1)).err().expect("a session without a greeting");
        let took = t.elapsed();
        done.send(()).unwrap();
        qemu.join().unwrap();
        assert!(took < Duration::from_millis(1500), "gave up after {took:?}: {e}");
        assert!(e.to_string().contains("no answer"), "{e}");
    }

    /// A scripted QEMU: the greeting, then an answer per command, with an event in between.
    #[test]
    fn a_session_skips_events_and_returns_each_answer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qmp.sock");
        let l = UnixListener::bind(&path).unwrap();
        let qemu = std::thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            let mut w = s.try_clone().unwrap();
            let mut r = BufReader::new(s);
            writeln!(w, r#"{{"QMP": {{"version": {{}}, "capabilities": []}}}}"#).unwrap();
            let mut seen = Vec::new();
            for answer in [
                r#"{"return": {}}"#,
                r#"{"event": "STOP"}
{"return": {}}"#,
                r#"{"return": {"status": "completed"}}"#,
            ] {
                let mut line = String::new();
                r.read_line(&mut line).unwrap();
                seen.push(serde_json::from_str::<Value>(&line).unwrap()["execute"].as_str().unwrap().to_string());
                writeln!(w, "{answer}").unwrap();
            }
            seen
        });
        let mut q = Qmp::connect(&path, Duration::from_secs(2)).unwrap();
        assert_eq!(q.execute("stop", None), Ok(json!({})));
        q.wait_migration(Duration::from_secs(2)).unwrap();
        assert_eq!(qemu.join().unwrap(), ["qmp_capabilities", "stop", "query-migrate"]);
    }
}
