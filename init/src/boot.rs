//! The boot's phases, one method each on [`Boot`], the value that carries what they share; the
//! order is [`crate::boot`]'s. Every step is recorded on the one timeline `/ready` shows
//! ([`Timeline`]), and the marks are written where the phases they close end.

use std::convert::Infallible;
use std::process::Command;
use std::sync::Arc;

use agent::proto::ShutdownRequest;
use tokio::runtime::Runtime;
use tokio::sync::{mpsc, watch};

use crate::cmdline::{self, Config, OnError, Root};
use crate::control::{self, Chinit, State};
use crate::mode::Mode;
use crate::reap::Reaper;
use crate::shutdown::{self, Action};
use crate::signals::{self, Signals};
use crate::supervise::{self, Ending};
use crate::timeline::{mark, Marks, Started, Timeline};
use crate::{arp, clock, error, exec, modules, mounts, net, netlink, notify, powerbutton, root, say};

/// How long the end of the machine waits for answers under way, and the quiet period that says
/// none is coming (requests sent at the same time as the one that ended it).
const ANSWER_WAIT: std::time::Duration = std::time::Duration::from_secs(1);
const ANSWER_QUIET: std::time::Duration = std::time::Duration::from_millis(10);

type ShutdownRx = mpsc::UnboundedReceiver<(ShutdownRequest, &'static str)>;

/// The boot under way.
pub struct Boot {
    mode: Mode,
    /// The defaults until the `cmdline` phase reads the command line onto them.
    cfg: Config,
    marks: Marks,
    /// What the agent serves and controls. Its `state` holds the timeline.
    ctl: Arc<Chinit>,
    /// Shutdown requests (the API, the power button), read by `supervise`.
    shutdown: ShutdownRx,
    /// Flipped when the late mounts are done; `None` once given to the after-ready thread.
    system: Option<watch::Sender<bool>>,
    /// The network as configured.
    net: Option<net::Plan>,
    /// Sockets whose closing costs time, closed after ready (see [`after_ready`]).
    closing: Vec<Box<dyn Send>>,
    /// The signalfd, from ready on.
    signals: Option<Signals>,
}

impl Boot {
    /// Init starts: mark 0x60, and the state `/ready` shows.
    pub fn start(mode: Mode) -> Boot {
        let init_start = clock::init_start_us();
        let marks = if mode == Mode::Vm { Marks::enable() } else { Marks::off() };
        marks.mark(mark::INIT_START);
        let state = Arc::new(State::new(mode.name(), init_start));
        let (shutdown_tx, shutdown) = mpsc::unbounded_channel();
        let (system, system_rx) = watch::channel(false);
        let ctl = Arc::new(Chinit::new(state, Arc::new(Reaper::default()), shutdown_tx, system_rx));
        Boot { mode, cfg: Config::default(), marks, ctl, shutdown, system: Some(system), net: None, closing: Vec::new(), signals: None }
    }

    fn timeline(&self) -> &Timeline {
        &self.ctl.state.timeline
    }

    /// `/proc`, `/dev` and stdio.
    pub fn mounts(&mut self) {
        let step = self.timeline().start("mounts");
        let failures = mounts::mount_table(&mut mounts::Sys, mounts::EARLY);
        mounts::ensure_stdio();
        if let Err(e) = self.timeline().end(step, joined(failures)) {
            say!("mounts: {e}");
        }
    }

    /// The command line (`text`, or `/proc/cmdline`) onto the config.
    pub fn cmdline(&mut self, text: Option<String>) {
        let step = self.timeline().start("cmdline");
        let text = text.unwrap_or_else(|| {
            cmdline::read("/proc/cmdline").unwrap_or_else(|e| {
                say!("cmdline: read /proc/cmdline: {e}; using defaults");
                String::new()
            })
        });
        let warnings = cmdline::parse_onto(&mut self.cfg, &text);
        shutdown::set_poweroff(self.cfg.poweroff);
        let _ = self.timeline().end(step, Ok::<(), Infallible>(()));
        for w in &warnings {
            say!("cmdline: {w}");
        }
        if !self.cfg.marks {
            self.marks = Marks::off();
        }
    }

    /// VM mode: the modules of [`modules::LIST`], when it exists.
    pub fn modules(&mut self) {
        if self.mode != Mode::Vm {
            return;
        }
        let step = self.timeline().start("modules");
        let Some((n, failures)) = modules::load_all() else {
            return;
        };
        for f in &failures {
            say!("modules: {f}");
        }
        let outcome = if failures.is_empty() { Ok(()) } else { Err(format!("{} of {n} failed", failures.len())) };
        let _ = self.timeline().end(step, outcome);
    }

    /// VM mode, from an initramfs: switch to `chinit.root` (unless `none`); `chinit.on_error` if
    /// that fails.
    pub fn root(&mut self) {
        if self.mode != Mode::Vm {
            return;
        }
        let Root::Device(device) = &self.cfg.root else {
            return;
        };
        if !root::root_is_initramfs() {
            return;
        }
        let step = self.timeline().start("root");
        match self.timeline().end(step, root::mount_and_switch(device, &self.cfg)) {
            Ok(what) => say!("root: {what}"),
            Err(e) => {
                say!("root: {e}");
                self.fail();
            }
        }
    }

    /// Every `chinit.mount=`; then mark 0x61.
    pub fn extra_mounts(&mut self) {
        if !self.cfg.mounts.is_empty() {
            let step = self.timeline().start("mounts.extra");
            let failures = mounts::mount_extra(&mut mounts::Sys, &self.cfg.mounts);
            if let Err(e) = self.timeline().end(step, joined(failures)) {
                say!("mounts.extra: {e}");
            }
        }
        self.marks.mark(mark::MOUNTS_DONE);
    }

    /// `chinit.hostname`, or the hostname of `ip=`.
    pub fn hostname(&mut self) {
        let from_ip = self.cfg.net.kernel_ip.as_ref().and_then(|k| k.hostname.as_deref());
        let Some(h) = self.cfg.hostname.as_deref().or(from_ip) else {
            return;
        };
        let step = self.timeline().start("hostname");
        if let Err(e) = self.timeline().end(step, nix::unistd::sethostname(h).map_err(|e| format!("sethostname {h}: {e}"))) {
            say!("hostname: {e}");
        }
    }

    /// Unless `chinit.net=off`: the plan applied over netlink; then mark 0x62.
    pub fn network(&mut self) {
        if self.cfg.net.enabled {
            let step = self.timeline().start("network");
            match self.timeline().end(step, network(&self.cfg)) {
                Ok((plan, netlink)) => {
                    self.ctl.state.set_ip(plan.addr, plan.prefix);
                    self.net = Some(plan);
                    self.closing.push(Box::new(netlink));
                }
                Err(e) => say!("network: {e}; the agent serves vsock only"),
            }
        }
        self.marks.mark(mark::NETWORK_DONE);
    }

    /// Starts the agent step with the runtime it runs on: building it is part of the step's cost.
    pub fn runtime(&self) -> (Started, Runtime) {
        let step = self.timeline().start("agent");
        match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => (step, rt),
            Err(e) => {
                say!("{}", error::InitError::Runtime(e));
                self.fail();
            }
        }
    }

    /// Ends the agent `step`: the listeners bound and serving, then the gratuitous ARP.
    pub async fn agent(&mut self, step: Started) {
        let mut served = control::start_agent(&self.cfg, self.net.as_ref().map(|p| p.addr), &self.ctl).await;
        // Listening now: tell a host that asked for the address too early that it is here.
        if let Some(p) = self.net.as_ref().filter(|_| served.is_ok()) {
            if let Some(mac) = p.mac {
                let (socket, sent) = arp::announce(p.index, mac, p.addr);
                if let Some(s) = socket {
                    self.closing.push(Box::new(s));
                }
                if let Err(e) = &sent {
                    say!("network: {e}");
                }
                served = sent;
            }
        }
        let _ = self.timeline().end(step, served);
    }

    /// Ready: `/ready` answers 200, mark 0x63; then the signalfd, the after-ready thread (console
    /// line, slow closes, late mounts) and `chinit.notify`.
    pub async fn ready(&mut self) {
        let state = &self.ctl.state;
        let ready_at = clock::now_us();
        state.set_notify_port(self.cfg.notify_vsock_port);
        state.set_ready(ready_at);
        self.marks.mark(mark::READY);
        if let Some(addr) = self.cfg.boot_timer {
            if let Err(e) = crate::boottimer::write(addr) {
                say!("boot timer: {e}");
            }
        }
        // The kernel log, from here on ([`crate::vmgenid`]): opened before the next `.await`, so
        // before `/ready` answers or the ready document goes out (the runtime has one thread), and
        // a snapshot a host takes the moment it hears of ready is a load this log sees.
        let vmgenid = (self.mode == Mode::Vm).then(crate::vmgenid::Log::open);
        let origin = match self.mode {
            Mode::Vm => format!("kernel {} ms before init", clock::ms(state.init_start_us)),
            Mode::Namespace => "namespace mode".to_string(),
        };
        let line =
            format!("ready in {} ms ({}; {origin})", clock::ms(ready_at.saturating_sub(state.init_start_us)), state.timeline.summary());
        // Let the agent take connections that are already waiting before anything else runs here.
        tokio::task::yield_now().await;
        // The signalfd after ready: no child exists before (commands and the workload wait for the
        // late mounts, which start below); signals sent until then are pending, blocked since `main`.
        self.signals = match Signals::new() {
            Ok(s) => Some(s),
            Err(e) => {
                say!("signals: cannot read them from a signalfd: {e}; reaping falls back to the shutdown path");
                // Before the helper thread starts, so that it inherits the mask too.
                let _ = signals::unblock();
                None
            }
        };
        let button = (self.mode == Mode::Vm).then(|| self.ctl.shutdown.clone());
        after_ready(state, self.system.take(), line, button, std::mem::take(&mut self.closing));
        if let Some(port) = state.notify_port() {
            let doc = state.snapshot();
            tokio::spawn(async move { notify::push(Some(port), &doc).await });
        }
        // From now on a restored copy can be made unique (`POST /v1/restore`).
        let ctx = crate::restore::Context::new(self.mode, self.marks, self.net.clone(), matches!(vmgenid, Some(Ok(_))));
        match vmgenid {
            Some(Ok(log)) => drop(tokio::spawn(crate::vmgenid::watch(log, Arc::clone(&self.ctl)))),
            Some(Err(e)) => crate::vmgenid::cannot_watch(&e),
            None => {}
        }
        let _ = self.ctl.restore.set(ctx);
    }

    /// The workload (after the late mounts), the PID 1 loop until the machine should end, then the
    /// answers under way. Returns how the machine ends, every other process stopped.
    pub async fn supervise(&mut self) -> Ending {
        let ctl = &self.ctl;
        let workload = match &self.cfg.exec {
            Some(argv) => {
                control::system_ready(&ctl.system).await;
                supervise::start_workload(argv, &ctl.reaper, &ctl.state)
            }
            // Without chinit.exec=, the workload file a container image gave (rootfs-builder --image).
            None => match supervise::workload_file(agent::workload::PATH) {
                Some(spec) => {
                    control::system_ready(&ctl.system).await;
                    supervise::start_spec(&spec, &ctl.reaper, &ctl.state)
                }
                None => None,
            },
        };
        let ending =
            supervise::supervise(&self.cfg, &ctl.state, &ctl.stopping, self.signals.take(), &ctl.reaper, &mut self.shutdown, workload)
                .await;
        // Every request taken gets its answer (the commands it ran are gone now) before the runtime,
        // and the connections with it, is dropped.
        if tokio::time::timeout(ANSWER_WAIT, ctl.answers.idle(ANSWER_QUIET)).await.is_err() {
            say!("shutdown: answers still being written after {} ms; going on", ANSWER_WAIT.as_millis());
        }
        ending
    }

    /// Unmounts and ends the machine as `ending` says. Never returns.
    pub fn finish(self, ending: Ending) -> ! {
        shutdown::finish(self.mode, &self.cfg.mounts, ending)
    }

    /// A step that cannot be done without failed: act on `chinit.on_error`. Never returns.
    fn fail(&self) -> ! {
        match self.cfg.on_error {
            OnError::Poweroff => {
                say!("powering off (chinit.on_error=poweroff)");
                shutdown::power(self.mode, Action::Poweroff)
            }
            OnError::Halt => {
                say!("halting (chinit.on_error=halt)");
                shutdown::power(self.mode, Action::Halt)
            }
            OnError::Shell => {
                say!("starting /bin/sh on the console (chinit.on_error=shell); exit it to power off");
                let mut sh = Command::new("/bin/sh");
                sh.env_clear().envs(exec::BASE_ENV.iter().copied());
                signals::reset_in_child(&mut sh);
                match sh.spawn() {
                    Ok(child) => {
                        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap_or(0));
                        // Reap everything until the shell itself is gone.
                        while let Ok(status) = nix::sys::wait::waitpid(None, None) {
                            if status.pid() == Some(pid) {
                                break;
                            }
                        }
                    }
                    Err(e) => say!("cannot start /bin/sh: {e}"),
                }
                shutdown::power(self.mode, Action::Poweroff)
            }
        }
    }
}

/// Failures as a step's outcome.
fn joined(failures: Vec<String>) -> Result<(), String> {
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("; "))
    }
}

/// The plan applied, and the socket that applied it: it is closed after ready, because closing a
/// netlink socket runs the kernel's socket teardown and a deferred resize of its hash table.
fn network(cfg: &Config) -> Result<(net::Plan, netlink::Socket), String> {
    let nl = netlink::Socket::open()?;
    let plan = net::plan(&cfg.net, &nl.links()?)?;
    nl.apply(&plan)?;
    Ok((plan, nl))
}

/// Step `mounts.late`: [`mounts::LATE`].
fn late_mounts(timeline: &Timeline) {
    let step = timeline.start("mounts.late");
    let failures = mounts::mount_table(&mut mounts::Sys, mounts::LATE);
    if let Err(e) = timeline.end(step, joined(failures)) {
        say!("mounts.late: {e}");
    }
}

/// On a helper thread: prints the ready line, closes the boot's sockets (closing a netlink socket
/// runs the kernel's socket teardown and a deferred resize of its hash table; a packet socket waits
/// for an RCU grace period), mounts [`mounts::LATE`] (mounts belong to the process, not the thread)
/// so the agent keeps answering meanwhile, flips `done`, then (VM mode) turns Ctrl-Alt-Del into
/// SIGINT and watches the power button.
fn after_ready(
    state: &Arc<State>,
    done: Option<watch::Sender<bool>>,
    ready_line: String,
    button: Option<mpsc::UnboundedSender<(ShutdownRequest, &'static str)>>,
    closing: Vec<Box<dyn Send>>,
) {
    let thread_state = Arc::clone(state);
    let spawned = std::thread::Builder::new().name("after-ready".into()).spawn(move || {
        say!("{ready_line}");
        drop(closing);
        late_mounts(&thread_state.timeline);
        if let Some(done) = done {
            let _ = done.send(true);
        }
        if let Some(tx) = button {
            // Ctrl-Alt-Del becomes SIGINT to us instead of an immediate reboot.
            let _ = nix::sys::reboot::set_cad_enabled(false);
            // Found through /sys, which the late mounts provide.
            powerbutton::watch(move || {
                let _ = tx.send((ShutdownRequest::default(), "the power button"));
            });
        }
    });
    if let Err(e) = spawned {
        say!("after ready: cannot start a thread ({e}); mounting the rest here");
        late_mounts(&state.timeline);
    }
}
