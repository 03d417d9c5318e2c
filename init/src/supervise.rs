//! The PID 1 loop: reap on SIGCHLD; forward SIGTERM, SIGINT and SIGHUP to the workload while it runs
//! (otherwise SIGTERM, SIGINT — Ctrl-Alt-Del — and SIGPWR shut down); end when the workload exits
//! (`chinit.on_exit=poweroff`) or a shutdown is requested; then stop every process in order.

use std::process::Command;
use std::time::Duration;

use agent::proto::{ShutdownAction, ShutdownRequest};
use nix::sys::signal::Signal;
use tokio::sync::{mpsc, oneshot};

use crate::cmdline::{Config, OnExit};
use crate::exec;
use crate::reap::{Exit, Reaper};
use crate::say;
use crate::shutdown::{self, Action};
use crate::signals::Signals;

/// The running workload (`chinit.exec=`).
pub struct Workload {
    pid: nix::unistd::Pid,
    exited: oneshot::Receiver<Exit>,
}

/// Runs until the machine should end; returns how, after every other process has been stopped.
pub async fn supervise(
    cfg: &Config,
    sig: Option<Signals>,
    reaper: &Reaper,
    mut shutdown_rx: mpsc::UnboundedReceiver<(ShutdownRequest, &'static str)>,
    mut workload: Option<Workload>,
) -> Action {
    let Some(mut sig) = sig else {
        // Without signal handlers all we can do is wait for a shutdown request.
        return requested(&mut shutdown_rx).await;
    };
    let action = loop {
        tokio::select! {
            s = sig.recv() => match s {
                Ok(Signal::SIGCHLD) => {
                    reaper.reap();
                }
                Ok(Signal::SIGTERM) => match &workload {
                    Some(w) => forward(w, Signal::SIGTERM),
                    None => { say!("SIGTERM: shutting down"); break Action::Poweroff; }
                },
                Ok(Signal::SIGINT) => match &workload {
                    Some(w) => forward(w, Signal::SIGINT),
                    None => { say!("SIGINT (Ctrl-Alt-Del): shutting down"); break Action::Poweroff; }
                },
                Ok(Signal::SIGHUP) => if let Some(w) = &workload { forward(w, Signal::SIGHUP) },
                Ok(Signal::SIGPWR) => { say!("SIGPWR: shutting down"); break Action::Poweroff; }
                Ok(_) => {}
                Err(e) => {
                    // Cannot happen with a valid signalfd; carry on with requests only.
                    say!("signals: {e}; waiting for a shutdown request");
                    break requested(&mut shutdown_rx).await;
                }
            },
            r = async { match workload.as_mut() { Some(w) => (&mut w.exited).await, None => std::future::pending().await } } => {
                workload = None;
                match r {
                    Ok(exit) => say!("workload exited ({exit})"),
                    Err(_) => say!("workload exited (status lost)"),
                }
                if cfg.on_exit == OnExit::Poweroff {
                    break Action::Poweroff;
                }
            }
            Some((req, from)) = shutdown_rx.recv() => {
                say!("{:?} requested by {from}: shutting down", req.action);
                break action_of(req);
            }
        }
    };
    shutdown::stop_processes(reaper, &mut sig, Duration::from_millis(cfg.grace_ms)).await;
    action
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

fn forward(w: &Workload, sig: Signal) {
    let _ = nix::sys::signal::kill(w.pid, sig);
}

pub fn start_workload(argv: &[String], reaper: &Reaper) -> Option<Workload> {
    let (prog, args) = argv.split_first()?;
    let mut cmd = Command::new(prog);
    cmd.args(args).env_clear().envs(exec::BASE_ENV.iter().copied());
    match reaper.spawn(&mut cmd) {
        Ok((child, exited)) => {
            let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap_or(0));
            say!("workload started: {} (pid {pid})", argv.join(" "));
            Some(Workload { pid, exited })
        }
        Err(e) => {
            say!("workload: cannot run {prog:?}: {e}");
            // Behave as if it had exited at once, so chinit.on_exit still applies.
            let (tx, exited) = oneshot::channel();
            let _ = tx.send(Exit::Code(127));
            Some(Workload { pid: nix::unistd::Pid::from_raw(0), exited })
        }
    }
}
