//! chinit's side of the agent: the readiness state it publishes, the control endpoints, and the
//! listeners (TCP on the guest address, vsock).

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use agent::proto::{ExecRequest, ExecResponse, Kmsg, Ready, RestoreRequest, ShutdownRequest, Step, Workload};
use agent::server::{serve, Control, InFlight, Refusal, ServeOptions};
use tokio::sync::{mpsc, watch};

use crate::cmdline::{Api, Config};
use crate::reap::Reaper;
use crate::say;
use crate::timeline::Timeline;

/// What `/ready` shows.
pub struct State {
    pub mode: &'static str,
    pub init_start_us: u64,
    ready: AtomicBool,
    ready_us: AtomicU64,
    generation: AtomicU64,
    /// The boot's steps: the boot records into it, `/ready` shows it.
    pub timeline: Timeline,
    /// The latest restore's steps, and how many restores there were: `/ready` shows these after
    /// the boot's, whatever the number of restores.
    restores: Mutex<Restores>,
    /// The guest address and its prefix length.
    ip: Mutex<Option<(Ipv4Addr, u8)>>,
    workload: Mutex<Option<Workload>>,
    notify_port: Mutex<Option<u32>>,
}

impl State {
    pub fn new(mode: &'static str, init_start_us: u64) -> State {
        State {
            mode,
            init_start_us,
            ready: AtomicBool::new(false),
            ready_us: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            timeline: Timeline::default(),
            restores: Mutex::new(Restores::default()),
            ip: Mutex::new(None),
            workload: Mutex::new(None),
            notify_port: Mutex::new(None),
        }
    }

    pub fn set_ip(&self, addr: Ipv4Addr, prefix: u8) {
        *self.ip.lock().unwrap_or_else(|e| e.into_inner()) = Some((addr, prefix));
    }

    pub fn set_workload(&self, w: Workload) {
        *self.workload.lock().unwrap_or_else(|e| e.into_inner()) = Some(w);
    }

    /// 0 for a machine that booted; a restored copy's (`POST /v1/restore`).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    /// A restored copy's generation (`POST /v1/restore`).
    fn set_generation(&self, g: u64) {
        self.generation.store(g, Ordering::Relaxed);
    }

    /// A restore is done: its generation, and its steps in place of the restore's before; `counts`
    /// unless it completes a restore already counted (a load noticed by itself, then the host's
    /// request for it).
    pub fn restored(&self, generation: u64, steps: Vec<Step>, counts: bool) {
        let mut r = self.restores.lock().unwrap_or_else(|e| e.into_inner());
        r.count += u64::from(counts);
        r.steps = steps;
        self.set_generation(generation);
    }

    /// Declares readiness.
    pub fn set_ready(&self, at_us: u64) {
        self.ready_us.store(at_us, Ordering::Relaxed);
        self.ready.store(true, Ordering::Release);
    }

    /// The host vsock port ready documents are pushed to (`chinit.notify`; a restore may change it).
    pub fn notify_port(&self) -> Option<u32> {
        *self.notify_port.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set_notify_port(&self, port: Option<u32>) {
        *self.notify_port.lock().unwrap_or_else(|e| e.into_inner()) = port;
    }

    pub fn snapshot(&self) -> Ready {
        let ready = self.ready.load(Ordering::Acquire);
        let (restores, restore_steps) = {
            let r = self.restores.lock().unwrap_or_else(|e| e.into_inner());
            (r.count, if ready { r.steps.clone() } else { Vec::new() })
        };
        Ready {
            ready,
            version: env!("CARGO_PKG_VERSION").to_string(),
            mode: self.mode.to_string(),
            init_start_us: self.init_start_us,
            ready_us: if ready { self.ready_us.load(Ordering::Relaxed) } else { 0 },
            // Like `ready_us`, the steps are shown once ready.
            steps: if ready { in_order(self.timeline.steps(), restore_steps) } else { Vec::new() },
            ip: self.ip.lock().unwrap_or_else(|e| e.into_inner()).map(|(addr, prefix)| format!("{addr}/{prefix}")),
            generation: self.generation.load(Ordering::Relaxed),
            restores,
            workload: *self.workload.lock().unwrap_or_else(|e| e.into_inner()),
        }
    }
}

/// The latest restore's steps, and how many restores there were.
#[derive(Debug, Default)]
struct Restores {
    count: u64,
    steps: Vec<Step>,
}

/// The boot's steps and a restore's, each in the order they ended, as one list in that order (a
/// boot step can end after a restore: the late mounts run after ready).
fn in_order(mut boot: Vec<Step>, restore: Vec<Step>) -> Vec<Step> {
    boot.extend(restore);
    // Stable: steps that ended at the same microsecond keep their order.
    boot.sort_by_key(|s| s.end_us);
    boot
}

/// The agent's view of chinit.
pub struct Chinit {
    pub state: Arc<State>,
    pub reaper: Arc<Reaper>,
    /// Shutdown requests, with who asked.
    pub shutdown: mpsc::UnboundedSender<(ShutdownRequest, &'static str)>,
    /// Becomes true when the late mounts are done; commands wait for it.
    pub system: watch::Receiver<bool>,
    /// Set once the machine is ending (a shutdown asked for, a signal, the workload's exit): no new
    /// command or restore starts.
    pub stopping: AtomicBool,
    /// Answers under way: the shutdown waits for them.
    pub answers: InFlight,
    /// What a restore needs of the boot, set once ready.
    pub restore: std::sync::OnceLock<crate::restore::Context>,
    /// A restore is under way.
    restoring: AtomicBool,
    /// The latest snapshot load, as the VM generation ID's notice and the host's request pair up.
    load: Mutex<Load>,
    /// Held while a restore (a request's, or a noticed load's) changes the machine: a request waits
    /// for a notice's, and the other way round.
    changing: tokio::sync::Mutex<()>,
    /// The TCP listener's task and options: a restore that changes the address serves the new one.
    tcp: Mutex<Option<(tokio::task::AbortHandle, ServeOptions, u16)>>,
    /// Itself, for the listeners a restore starts.
    me: std::sync::OnceLock<std::sync::Weak<Chinit>>,
}

impl Chinit {
    pub fn new(
        state: Arc<State>,
        reaper: Arc<Reaper>,
        shutdown: mpsc::UnboundedSender<(ShutdownRequest, &'static str)>,
        system: watch::Receiver<bool>,
    ) -> Chinit {
        Chinit {
            state,
            reaper,
            shutdown,
            system,
            stopping: AtomicBool::new(false),
            answers: InFlight::default(),
            restore: std::sync::OnceLock::new(),
            restoring: AtomicBool::new(false),
            load: Mutex::new(Load::Settled),
            changing: tokio::sync::Mutex::new(()),
            tcp: Mutex::new(None),
            me: std::sync::OnceLock::new(),
        }
    }
}

/// The restore under way: the flag is cleared when it ends, however it ends.
struct Restoring<'a>(&'a AtomicBool);

impl Drop for Restoring<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
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

    /// From the request on no command or restore starts (503). A request while a shutdown is
    /// under way joins it (the receiver may be gone already).
    fn shutdown(&self, req: ShutdownRequest) {
        self.stopping.store(true, Ordering::Release);
        let _ = self.shutdown.send((req, "the API"));
    }

    /// Only once ready and until the machine is ending (503), one restore at a time (409 for
    /// another meanwhile), bad input refused before anything changes (400): the request is checked
    /// against the machine as it is while no other restore can change it.
    async fn restore(&self, req: RestoreRequest) -> Result<Ready, Refusal> {
        if self.stopping.load(Ordering::Acquire) {
            return Err(Refusal { status: 503, message: "chinit is shutting down: no restore is taken".into() });
        }
        let Some(ctx) = self.restore.get() else {
            return Err(Refusal { status: 503, message: "not ready yet: a restore is taken once chinit is ready".into() });
        };
        if self.restoring.swap(true, Ordering::AcqRel) {
            return Err(Refusal { status: 409, message: "a restore is under way".into() });
        }
        let one = Restoring(&self.restoring);
        // `/sys`, which says whether loads are noticed, is a late mount.
        system_ready(&self.system).await;
        let loads_noticed = ctx.loads_noticed();
        let changing = self.changing.lock().await;
        let load = *self.load.lock().unwrap_or_else(|e| e.into_inner());
        let (generation, counts, next) = load.request(self.state.generation(), loads_noticed);
        let now = crate::restore::Now { generation, gateway: ctx.gateway(), neighbours: crate::net::neighbours() };
        let plan = crate::restore::plan(&req, &now).map_err(|e| Refusal::bad_request(format!("restore request: {e}")))?;
        *self.load.lock().unwrap_or_else(|e| e.into_inner()) = next;
        let crate::restore::Applied { ready, moved_to } = crate::restore::apply(&self.state, ctx, plan, counts);
        if let Some(addr) = moved_to {
            self.serve_tcp_at(addr).await;
        }
        drop(changing);
        drop(one);
        crate::notify::push(self.state.notify_port(), &ready).await;
        Ok(ready)
    }

    fn kmsg(&self) -> Result<Kmsg, Refusal> {
        crate::kmsg::read().map_err(|e| Refusal { status: 500, message: format!("/dev/kmsg: {e}") })
    }

    fn in_flight(&self) -> Option<&InFlight> {
        Some(&self.answers)
    }
}

/// How a snapshot load's two signs pair up: the VM generation ID's notice (the kernel's, on a VMM
/// that gives one) and the host's `POST /v1/restore`. Whichever comes first makes the copy a new
/// generation and counts one restore; the other completes it: the request still makes the copy
/// unique (checked against the generation before the notice), and counts no second restore.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Load {
    /// No load waits for its other sign.
    Settled,
    /// Noticed by itself: the generation it had before.
    Noticed { before: u64 },
    /// Requested by the host on a machine whose loads are noticed: the notice is still to come.
    Requested,
}

impl Load {
    /// A restore request on a machine at `generation` (`vmgenid`: its loads are noticed): the
    /// generation the request is checked against, whether it counts as a restore, and what follows
    /// when it is taken (pure).
    pub fn request(self, generation: u64, vmgenid: bool) -> (u64, bool, Load) {
        match self {
            Load::Noticed { before } => (before, false, Load::Settled),
            Load::Settled | Load::Requested => (generation, true, if vmgenid { Load::Requested } else { Load::Settled }),
        }
    }

    /// The notice on a machine at `generation`: whether it makes the copy known (the request did
    /// not come first), and what follows (pure).
    pub fn notice(self, generation: u64) -> (bool, Load) {
        match self {
            Load::Requested => (false, Load::Settled),
            Load::Settled | Load::Noticed { .. } => (true, Load::Noticed { before: generation }),
        }
    }
}

impl Chinit {
    /// The kernel said the VM generation ID changed: this machine is a copy loaded from a snapshot
    /// ([`crate::vmgenid`]). Unless the host's request for this load came first, the copy is made
    /// known ([`crate::restore::noticed`]), says so on the console and pushes its ready document.
    /// Waits for a restore under way; nothing once the machine is ending.
    pub async fn noticed_fork(&self) {
        let Some(ctx) = self.restore.get() else { return };
        let changing = self.changing.lock().await;
        if self.stopping.load(Ordering::Acquire) {
            return;
        }
        let known = {
            let mut load = self.load.lock().unwrap_or_else(|e| e.into_inner());
            let (known, next) = load.notice(self.state.generation());
            *load = next;
            known
        };
        if !known {
            say!("restore: the VM generation ID changed; the host's restore request for this load came first");
            return;
        }
        let ready = crate::restore::noticed(&self.state, ctx);
        drop(changing);
        say!("restore: the VM generation ID changed: a copy loaded from a snapshot, now generation {}", ready.generation);
        crate::notify::push(self.state.notify_port(), &ready).await;
    }
}

/// Binds the TCP and vsock listeners and starts serving. `Err` when neither could be bound.
impl Chinit {
    /// Serves TCP on `addr` instead of the address before (a restore changed it); the old listener
    /// stops taking connections, those it took go on.
    async fn serve_tcp_at(&self, addr: Ipv4Addr) {
        let Some(me) = self.me.get().and_then(std::sync::Weak::upgrade) else { return };
        let Some((old, opts, port)) = self.tcp.lock().unwrap_or_else(|e| e.into_inner()).clone() else { return };
        match tokio::net::TcpListener::bind(SocketAddr::from((addr, port))).await {
            Ok(l) => {
                let task = tokio::spawn(serve(l, me, opts)).abort_handle();
                old.abort();
                *self.tcp.lock().unwrap_or_else(|e| e.into_inner()) = Some((task, opts, port));
            }
            Err(e) => say!("restore: serve tcp {addr}:{port}: {e}"),
        }
    }
}

pub async fn start_agent(cfg: &Config, ip: Option<Ipv4Addr>, ctl: &Arc<Chinit>) -> Result<(), String> {
    let mut problems = Vec::new();
    let mut serving = 0;
    let _ = ctl.me.set(Arc::downgrade(ctl));
    match ip {
        Some(ip) => match tokio::net::TcpListener::bind(SocketAddr::from((ip, cfg.port))).await {
            Ok(l) => {
                let opts = ServeOptions { control: cfg.api == Api::Tcp, ..ServeOptions::default() };
                let task = tokio::spawn(serve(l, Arc::clone(ctl), opts)).abort_handle();
                *ctl.tcp.lock().unwrap_or_else(|e| e.into_inner()) = Some((task, opts, cfg.port));
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
        let step = s.timeline.start("mounts");
        let _ = s.timeline.end(step, Ok::<(), String>(()));
        s.set_ip(Ipv4Addr::new(169, 254, 1, 2), 16);
        s.set_ready(400);
        let after = s.snapshot();
        assert!(after.ready);
        // A machine that booted is generation 0; only a restore sets it.
        assert_eq!((after.ready_us, after.generation, after.init_to_ready_us()), (400, 0, 300));
        assert_eq!(after.ip.as_deref(), Some("169.254.1.2/16"));
        assert_eq!(after.steps.len(), 1);
        s.set_generation(2);
        assert_eq!(s.snapshot().generation, 2);
    }

    #[test]
    fn ready_keeps_the_boot_steps_and_the_latest_restore() {
        let step = |name: &str, start_us, end_us| Step { name: name.into(), start_us, end_us, error: None };
        let s = State::new("namespace", 100);
        let boot = s.timeline.start("mounts");
        let _ = s.timeline.end(boot, Ok::<(), String>(()));
        s.set_ready(400);
        let boot = s.snapshot();
        assert_eq!((boot.steps.len(), boot.restores), (1, 0));
        let t = boot.steps[0].end_us;
        for g in 1..=1000 {
            s.restored(
                g,
                vec![step("restore.entropy", t + g * 10, t + g * 10 + 1), step("restore.hostname", t + g * 10 + 1, t + g * 10 + 2)],
                true,
            );
        }
        let doc = s.snapshot();
        assert_eq!((doc.generation, doc.restores), (1000, 1000));
        let names: Vec<&str> = doc.steps.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["mounts", "restore.entropy", "restore.hostname"]);
        assert_eq!(doc.steps[1].start_us, t + 10_000, "the latest restore's");

        // A request that completes a load noticed by itself replaces the steps, and counts no restore.
        s.restored(1001, vec![step("restore.announce", t + 20_000, t + 20_001)], true);
        s.restored(1001, vec![step("restore.entropy", t + 20_002, t + 20_003)], false);
        let doc = s.snapshot();
        assert_eq!((doc.generation, doc.restores, doc.steps[1].name.as_str()), (1001, 1001, "restore.entropy"));
    }

    #[test]
    fn a_load_s_notice_and_its_request_count_once_in_either_order() {
        use Load::*;
        // request(load, generation, vmgenid) → (checked against, counts, next)
        let requests = [
            (Settled, 0, false, (0, true, Settled)),
            (Settled, 0, true, (0, true, Requested)),
            (Noticed { before: 0 }, 1, true, (0, false, Settled)),
            (Noticed { before: 4 }, 5, true, (4, false, Settled)),
            // A second request with no notice between: a restore of its own.
            (Requested, 1, true, (1, true, Requested)),
        ];
        for (load, g, vmgenid, want) in requests {
            assert_eq!(load.request(g, vmgenid), want, "{load:?} request at {g}");
        }
        // notice(load, generation) → (makes the copy known, next)
        let notices = [
            (Settled, 0, (true, Noticed { before: 0 })),
            (Requested, 1, (false, Settled)),
            // A copy of a copy noticed again before any request: a load of its own.
            (Noticed { before: 0 }, 1, (true, Noticed { before: 1 })),
        ];
        for (load, g, want) in notices {
            assert_eq!(load.notice(g), want, "{load:?} notice at {g}");
        }
        // Notice first: generation 0 → 1, and the host's request for generation 1 is taken.
        let (known, load) = Settled.notice(0);
        let (checked, counts, load) = load.request(1, true);
        assert_eq!((known, checked, counts, load), (true, 0, false, Settled));
        // Request first: the notice that follows changes nothing.
        let (_, counts, load) = Settled.request(0, true);
        assert_eq!((counts, load.notice(1)), (true, (false, Settled)));
    }

    #[test]
    fn steps_are_in_the_order_they_ended() {
        let step = |name: &str, end_us| Step { name: name.into(), start_us: 0, end_us, error: None };
        // (boot steps, restore steps, the order shown); a step is (name, end).
        type Steps<'a> = &'a [(&'a str, u64)];
        let cases: &[(Steps, Steps, &[&str])] = &[
            (&[("a", 1), ("b", 2)], &[], &["a", "b"]),
            (&[("a", 1), ("late", 9)], &[("r1", 5), ("r2", 6)], &["a", "r1", "r2", "late"]),
            (&[("a", 5)], &[("r1", 5)], &["a", "r1"]),
        ];
        for (boot, restore, want) in cases {
            let got = in_order(boot.iter().map(|(n, e)| step(n, *e)).collect(), restore.iter().map(|(n, e)| step(n, *e)).collect());
            assert_eq!(got.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), *want);
        }
    }
}
