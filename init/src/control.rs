//! chinit's side of the agent: the readiness state it publishes, the control endpoints, and the
//! listeners (TCP on the guest address, vsock).

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use agent::proto::{ExecRequest, ExecResponse, Ready, ShutdownRequest, Step, Workload};
use agent::server::{serve, Control, InFlight, Refusal, ServeOptions};
use tokio::sync::{mpsc, watch};

use crate::cmdline::{Api, Config};
use crate::reap::Reaper;
use crate::say;

/// What `/ready` shows.
pub struct State {
    pub mode: &'static str,
    pub init_start_us: u64,
    ready: AtomicBool,
    ready_us: AtomicU64,
    generation: AtomicU64,
    steps: Mutex<Vec<Step>>,
    ip: Mutex<Option<String>>,
    workload: Mutex<Option<Workload>>,
}

impl State {
    pub fn new(mode: &'static str, init_start_us: u64) -> State {
        State {
            mode,
            init_start_us,
            ready: AtomicBool::new(false),
            ready_us: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            steps: Mutex::new(Vec::new()),
            ip: Mutex::new(None),
            workload: Mutex::new(None),
        }
    }

    pub fn set_steps(&self, steps: &[Step]) {
        *self.steps.lock().unwrap_or_else(|e| e.into_inner()) = steps.to_vec();
    }

    /// Adds a step that ran after ready.
    pub fn push_step(&self, step: Step) {
        self.steps.lock().unwrap_or_else(|e| e.into_inner()).push(step);
    }

    pub fn set_ip(&self, ip: String) {
        *self.ip.lock().unwrap_or_else(|e| e.into_inner()) = Some(ip);
    }

    pub fn set_workload(&self, w: Workload) {
        *self.workload.lock().unwrap_or_else(|e| e.into_inner()) = Some(w);
    }

    /// Declares readiness (again, after a restore: the generation goes up each time).
    pub fn set_ready(&self, at_us: u64) {
        self.ready_us.store(at_us, Ordering::Relaxed);
        self.generation.fetch_add(1, Ordering::Relaxed);
        self.ready.store(true, Ordering::Release);
    }

    pub fn snapshot(&self) -> Ready {
        let ready = self.ready.load(Ordering::Acquire);
        Ready {
            ready,
            version: env!("CARGO_PKG_VERSION").to_string(),
            mode: self.mode.to_string(),
            init_start_us: self.init_start_us,
            ready_us: if ready { self.ready_us.load(Ordering::Relaxed) } else { 0 },
            steps: self.steps.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            ip: self.ip.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            generation: self.generation.load(Ordering::Relaxed),
            workload: *self.workload.lock().unwrap_or_else(|e| e.into_inner()),
        }
    }
}

/// The agent's view of chinit.
pub struct Chinit {
    pub state: Arc<State>,
    pub reaper: Arc<Reaper>,
    /// Shutdown requests, with who asked.
    pub shutdown: mpsc::UnboundedSender<(ShutdownRequest, &'static str)>,
    /// Becomes true when the late mounts are done; commands wait for it.
    pub system: watch::Receiver<bool>,
    /// Set once the machine is ending: no new command starts.
    pub stopping: AtomicBool,
    /// Answers under way: the shutdown waits for them.
    pub answers: InFlight,
}

impl Chinit {
    pub fn new(
        state: Arc<State>,
        reaper: Arc<Reaper>,
        shutdown: mpsc::UnboundedSender<(ShutdownRequest, &'static str)>,
        system: watch::Receiver<bool>,
    ) -> Chinit {
        Chinit { state, reaper, shutdown, system, stopping: AtomicBool::new(false), answers: InFlight::default() }
    }
}

/// Waits until the late mounts are done (or their thread is gone).
pub async fn system_ready(rx: &watch::Receiver<bool>) {
    let mut rx = rx.clone();
    let _ = rx.wait_for(|done| *done).await;
}

impl Control for Chinit {
    fn ready(&self) -> Ready {
        self.state.snapshot()
    }

    async fn exec(&self, req: ExecRequest) -> Result<ExecResponse, Refusal> {
        system_ready(&self.system).await;
        if self.stopping.load(Ordering::Acquire) {
            return Err(Refusal { status: 503, message: "chinit is shutting down: no new command starts".into() });
        }
        crate::exec::run(&self.reaper, req).await.map_err(Refusal::bad_request)
    }

    /// A request while a shutdown is under way joins it (the receiver may be gone already).
    fn shutdown(&self, req: ShutdownRequest) {
        let _ = self.shutdown.send((req, "the API"));
    }

    fn in_flight(&self) -> Option<&InFlight> {
        Some(&self.answers)
    }
}

/// Binds the TCP and vsock listeners and starts serving. `Err` when neither could be bound.
pub async fn start_agent(cfg: &Config, ip: Option<Ipv4Addr>, ctl: &Arc<Chinit>) -> Result<(), String> {
    let mut problems = Vec::new();
    let mut serving = 0;
    match ip {
        Some(ip) => match tokio::net::TcpListener::bind(SocketAddr::from((ip, cfg.port))).await {
            Ok(l) => {
                tokio::spawn(serve(l, Arc::clone(ctl), ServeOptions { control: cfg.api == Api::Tcp, ..ServeOptions::default() }));
                serving += 1;
            }
            Err(e) => problems.push(format!("tcp {ip}:{}: {e}", cfg.port)),
        },
        None => problems.push("tcp: no address".to_string()),
    }
    if let Some(port) = cfg.vsock_port {
        match tokio_vsock::VsockListener::bind(tokio_vsock::VsockAddr::new(libc::VMADDR_CID_ANY, port)) {
            Ok(l) => {
                tokio::spawn(serve(l, Arc::clone(ctl), ServeOptions { control: true, ..ServeOptions::default() }));
                serving += 1;
            }
            Err(e) => problems.push(format!("vsock port {port}: {e}")),
        }
    }
    if !problems.is_empty() {
        say!("agent: {}", problems.join("; "));
    }
    if serving == 0 {
        Err(problems.join("; "))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_follows_readiness() {
        let s = State::new("namespace", 100);
        let before = s.snapshot();
        assert!(!before.ready && before.ready_us == 0 && before.generation == 0);
        s.set_steps(&[Step { name: "mounts".into(), start_us: 101, end_us: 150, error: None }]);
        s.set_ip("169.254.1.2/16".into());
        s.set_ready(400);
        let after = s.snapshot();
        assert!(after.ready);
        assert_eq!((after.ready_us, after.generation, after.init_to_ready_us()), (400, 1, 300));
        assert_eq!(after.ip.as_deref(), Some("169.254.1.2/16"));
        assert_eq!(after.steps.len(), 1);
        s.set_ready(900);
        assert_eq!(s.snapshot().generation, 2);
    }
}
