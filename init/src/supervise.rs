//! The PID 1 loop, until the machine should end: reap on SIGCHLD; forward every other signal to the
//! workload's process group while it runs (as tini and catatonit do); with no workload, SIGTERM,
//! SIGINT (Ctrl-Alt-Del) and SIGPWR shut down. The workload's exit ends the machine
//! (`chinit.on_exit=poweroff`), and its status is kept: `/ready` shows it, the host is told
//! (`chinit.notify`), and in a namespace chinit exits with it. Then every process is stopped in order.
//! The table is [`reaction`]; `docs/signals.md` documents it.

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use agent::proto::{ShutdownAction, ShutdownRequest, Workload as WorkloadStatus};
use agent::workload::Spec;
use tokio::sync::{mpsc, oneshot};

use crate::cmdline::{Config, OnExit};
use crate::control::State;
use crate::exec;
use crate::reap::{Exit, Reaper};
use crate::say;
use crate::shutdown::{self, Action};
use crate::signals::{self, Signals, Signo};

/// What chinit does with a signal it read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reaction {
    /// SIGCHLD: collect every child that exited.
    Reap,
    /// Send it on to the workload's process group.
    Forward,
    /// An orderly power-off.
    Shutdown,
    /// Say so on the console; nothing else.
    Ignore,
}

/// The signal table (pure). While a workload runs, it gets every signal but SIGCHLD: its exit is
/// what ends the machine, so a SIGTERM reaches the program that must act on it. Without one,
/// SIGTERM, SIGINT and SIGPWR shut down and the rest is ignored.
pub fn reaction(sig: Signo, workload_running: bool) -> Reaction {
    match sig {
        libc::SIGCHLD => Reaction::Reap,
        _ if workload_running => Reaction::Forward,
        libc::SIGTERM | libc::SIGINT | libc::SIGPWR => Reaction::Shutdown,
        _ => Reaction::Ignore,
    }
}

/// The running workload (`chinit.exec=`, or the workload file), leader of its own process group.
pub struct Workload {
    /// Its pid, which is also its process group; 0 when it could not be started.
    pid: i32,
    exited: oneshot::Receiver<Exit>,
    /// The workload file's StopSignal: sent to it alone first on shutdown, before every process
    /// gets SIGTERM. `None` for `chinit.exec=` (everything gets SIGTERM at once, as before).
    stop: Option<Signo>,
}

/// How the machine ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ending {
    pub action: Action,
    /// The workload's exit, when that is what ends the machine.
    pub workload: Option<Exit>,
}

/// Runs until the machine should end; returns how, after every other process has been stopped.
pub async fn supervise(
    cfg: &Config,
    state: &State,
    stopping: &AtomicBool,
    sig: Option<Signals>,
    reaper: &Reaper,
    shutdown_rx: &mut mpsc::UnboundedReceiver<(ShutdownRequest, &'static str)>,
    mut workload: Option<Workload>,
) -> Ending {
    let Some(mut sig) = sig else {
        // Without signals all we can do is wait for a shutdown request.
        let action = requested(shutdown_rx).await;
        stopping.store(true, Ordering::Release);
        return Ending { action, workload: None };
    };
    let mut ended = None;
    let action = loop {
        tokio::select! {
            s = sig.recv() => match s {
                Ok(s) => match reaction(s, workload.is_some()) {
                    Reaction::Reap => { reaper.reap(); }
                    Reaction::Forward => if let Some(w) = &workload { forward(w, s) },
                    Reaction::Shutdown => { say!("{}: shutting down", signals::name(s)); break Action::Poweroff; }
                    Reaction::Ignore => say!("{}: no workload to forward it to; ignored", signals::name(s)),
                },
                Err(e) => {
                    // Cannot happen with a valid signalfd; carry on with requests only.
                    say!("signals: {e}; waiting for a shutdown request");
                    break requested(shutdown_rx).await;
                }
            },
            r = async { match workload.as_mut() { Some(w) => (&mut w.exited).await, None => std::future::pending().await } } => {
                let pid = workload.take().map(|w| w.pid).unwrap_or(0);
                let exit = match r {
                    Ok(exit) => exit,
                    // The reaper dropped the sender: it cannot have, but call it a failure.
                    Err(_) => Exit::Code(255),
                };
                say!("workload exited ({exit})");
                state.set_workload(status(pid, Some(exit)));
                crate::notify::push(state.notify_port(), &state.snapshot()).await;
                if cfg.on_exit == OnExit::Poweroff {
                    ended = Some(exit);
                    break Action::Poweroff;
                }
            }
            Some((req, from)) = shutdown_rx.recv() => {
                say!("{:?} requested by {from}: shutting down", req.action);
                break action_of(req);
            }
        }
    };
    stopping.store(true, Ordering::Release);
    let grace = Duration::from_millis(cfg.grace_ms);
    if let Some(w) = workload.as_mut() {
        stop_workload(w, &mut sig, reaper, state, grace).await;
    }
    shutdown::stop_processes(reaper, &mut sig, grace).await;
    Ending { action, workload: ended }
}

/// Sends a still-running workload its StopSignal and waits, reaping, until it exits or `grace` ends.
async fn stop_workload(w: &mut Workload, sig: &mut Signals, reaper: &Reaper, state: &State, grace: Duration) {
    let Some(stop) = w.stop else { return };
    say!("shutdown: sending the workload {} (its StopSignal)", signals::name(stop));
    forward(w, stop);
    let deadline = tokio::time::sleep(grace);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            r = &mut w.exited => {
                let exit = r.unwrap_or(Exit::Code(255));
                say!("workload exited ({exit})");
                state.set_workload(status(w.pid, Some(exit)));
                return;
            }
            s = sig.recv() => if s.is_ok() { reaper.reap(); } else { return },
            _ = &mut deadline => return,
        }
    }
}

/// The next shutdown request's action (a power-off if every sender is gone).
async fn requested(rx: &mut mpsc::UnboundedReceiver<(ShutdownRequest, &'static str)>) -> Action {
    action_of(rx.recv().await.map(|(r, _)| r).unwrap_or_default())
}

fn action_of(req: ShutdownRequest) -> Action {
    match req.action {
        ShutdownAction::Poweroff => Action::Poweroff,
        ShutdownAction::Reboot => Action::Reboot,
    }
}

fn forward(w: &Workload, sig: Signo) {
    if w.pid > 0 {
        // SAFETY: kill only sends a signal; a negative pid names the workload's process group.
        if unsafe { libc::kill(-w.pid, sig) } != 0 {
            say!("{}: cannot forward it to the workload: {}", signals::name(sig), std::io::Error::last_os_error());
        }
    }
}

fn status(pid: i32, exit: Option<Exit>) -> WorkloadStatus {
    WorkloadStatus {
        pid: u32::try_from(pid).unwrap_or(0),
        running: exit.is_none(),
        exit_code: match exit {
            Some(Exit::Code(c)) => Some(c),
            _ => None,
        },
        signal: match exit {
            Some(Exit::Signal(s)) => Some(s),
            _ => None,
        },
    }
}

/// Starts `chinit.exec=`'s argv as the workload, with chinit's base environment.
pub fn start_workload(argv: &[String], reaper: &Reaper, state: &State) -> Option<Workload> {
    let (prog, args) = argv.split_first()?;
    let mut cmd = Command::new(prog);
    cmd.args(args).env_clear().envs(exec::BASE_ENV.iter().copied());
    spawn_workload(cmd, argv, None, reaper, state)
}

/// The workload file ([`agent::workload::PATH`]), when there is one. A file that cannot be read or
/// is not right gets one console line, and no workload is started (the control API still answers).
pub fn workload_file(path: &str) -> Option<Spec> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            say!("workload: cannot read {path}: {e}; no workload started");
            return None;
        }
    };
    match Spec::parse(&text) {
        Ok(s) => Some(s),
        Err(e) => {
            say!("workload: {path}: {e}; no workload started");
            None
        }
    }
}

/// Starts the workload a workload file describes: exactly its argv, environment, directory, user,
/// group and supplementary groups; its StopSignal is kept for the shutdown.
pub fn start_spec(spec: &Spec, reaper: &Reaper, state: &State) -> Option<Workload> {
    let (prog, args) = spec.argv.split_first()?;
    let stop = match agent::workload::signal_number(&spec.stop_signal) {
        Ok(s) => s,
        Err(e) => {
            say!("workload: {e}; no workload started");
            return None;
        }
    };
    if let Err(e) = std::fs::read_dir(&spec.cwd) {
        // Said here: the spawn's own error would name the program, not the directory.
        say!("workload: its working directory {}: {e}", spec.cwd);
    }
    let mut cmd = Command::new(prog);
    cmd.args(args).env_clear().current_dir(&spec.cwd);
    for e in &spec.env {
        if let Some((k, v)) = e.split_once('=') {
            cmd.env(k, v);
        }
    }
    let (uid, gid) = (spec.uid, spec.gid);
    let groups: Vec<libc::gid_t> = spec.groups.clone();
    // SAFETY: the closure runs in the child between fork and exec and makes only system calls
    // (setgroups, setgid, setuid) on values it owns; the groups before the ids, while still root.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
            if libc::setgroups(groups.len(), groups.as_ptr()) != 0 || libc::setgid(gid) != 0 || libc::setuid(uid) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    spawn_workload(cmd, &spec.argv, Some(stop), reaper, state)
}

/// Starts the workload as the leader of its own process group (so forwarded signals reach what it
/// starts too, as a terminal's do) and publishes it in `state`.
fn spawn_workload(mut cmd: Command, argv: &[String], stop: Option<Signo>, reaper: &Reaper, state: &State) -> Option<Workload> {
    let prog = argv.first()?;
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let (pid, exited) = match reaper.spawn(&mut cmd) {
        Ok((child, exited)) => {
            let pid = i32::try_from(child.id()).unwrap_or(0);
            say!("workload started: {} (pid {pid})", argv.join(" "));
            (pid, exited)
        }
        Err(e) => {
            say!("workload: cannot run {prog:?}: {e}");
            // Behave as if it had exited at once with the shell's "not found", so chinit.on_exit
            // still applies.
            let (tx, exited) = oneshot::channel();
            let _ = tx.send(Exit::Code(127));
            (0, exited)
        }
    };
    state.set_workload(status(pid, None));
    Some(Workload { pid, exited, stop })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_table() {
        let rtmin = libc::SIGRTMIN();
        let cases = [
            (libc::SIGCHLD, true, Reaction::Reap),
            (libc::SIGCHLD, false, Reaction::Reap),
            (libc::SIGTERM, true, Reaction::Forward),
            (libc::SIGINT, true, Reaction::Forward),
            (libc::SIGPWR, true, Reaction::Forward),
            (libc::SIGUSR1, true, Reaction::Forward),
            (libc::SIGQUIT, true, Reaction::Forward),
            (libc::SIGWINCH, true, Reaction::Forward),
            (libc::SIGCONT, true, Reaction::Forward),
            (rtmin + 1, true, Reaction::Forward),
            (libc::SIGTERM, false, Reaction::Shutdown),
            (libc::SIGINT, false, Reaction::Shutdown),
            (libc::SIGPWR, false, Reaction::Shutdown),
            (libc::SIGHUP, false, Reaction::Ignore),
            (libc::SIGUSR2, false, Reaction::Ignore),
            (rtmin, false, Reaction::Ignore),
        ];
        for (sig, running, want) in cases {
            assert_eq!(reaction(sig, running), want, "{} with a workload: {running}", signals::name(sig));
        }
    }

    #[test]
    fn workload_file_missing_bad_or_good() {
        let dir = std::env::temp_dir().join(format!("chinit-workload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("workload.json");
        let p = path.to_str().unwrap();
        assert_eq!(workload_file(p), None, "no file, no workload, no line");
        std::fs::write(&path, r#"{"argv":[]}"#).unwrap();
        assert_eq!(workload_file(p), None, "a bad file: one console line, no workload");
        std::fs::write(&path, r#"{"argv":["/bin/app"],"stop_signal":"SIGINT"}"#).unwrap();
        assert_eq!(workload_file(p).map(|s| s.argv), Some(vec!["/bin/app".to_string()]));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn workload_status_follows_the_exit() {
        assert_eq!(status(7, None), WorkloadStatus { pid: 7, running: true, exit_code: None, signal: None });
        assert_eq!(status(7, Some(Exit::Code(3))), WorkloadStatus { pid: 7, running: false, exit_code: Some(3), signal: None });
        assert_eq!(status(7, Some(Exit::Signal(15))), WorkloadStatus { pid: 7, running: false, exit_code: None, signal: Some(15) });
    }
}
