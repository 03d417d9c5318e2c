//! chinit: PID 1 for microVMs. The boot, in order, each step stamped on CLOCK_BOOTTIME:
//! mounts → cmdline → modules → root → extra mounts → hostname → network → agent → ready, then the
//! PID 1 loop (reaping, signals, workload) until an orderly shutdown. See `docs/boot-phases.md`.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::exit))]

pub mod arp;
pub mod clock;
pub mod cmdline;
pub mod control;
pub mod error;
pub mod exec;
pub mod heap;
pub mod log;
pub mod mode;
pub mod modules;
pub mod mounts;
pub mod net;
pub mod netlink;
pub mod notify;
pub mod panic;
pub mod powerbutton;
pub mod reap;
pub mod root;
pub mod shutdown;
pub mod signals;
pub mod supervise;
pub mod timeline;

use std::io::Write;
use std::process::Command;
use std::sync::Arc;

use agent::proto::ShutdownRequest;
use tokio::sync::{mpsc, watch};

use cmdline::{Config, OnError};
use control::{Chinit, State};
use mode::Mode;
use reap::Reaper;
use shutdown::Action;
use timeline::{mark, Marks, Timeline};

const USAGE: &str = "\
chinit: PID 1 for microVMs.

Boot it with init=/sbin/chinit (or as /init of an initramfs); it reads its settings from the kernel
command line (chinit.* keys, see docs/cmdline.md).

Options (for running as PID 1 of fresh namespaces, where /proc/cmdline is the host's):
  --cmdline STRING   use STRING instead of /proc/cmdline
  --version          print the version
  --help             print this text
";

/// Entry point of the binary. Returns an exit code only when chinit does not boot (not PID 1, or an
/// informational option); once booting it never returns.
pub fn main_exec(args: &[String]) -> i32 {
    let mut cmdline = None;
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            // Written, not printed: print! panics when stdout is closed.
            "--version" => {
                let _ = writeln!(std::io::stdout(), "chinit {}", env!("CARGO_PKG_VERSION"));
                return 0;
            }
            "--help" | "-h" => {
                let _ = write!(std::io::stdout(), "{USAGE}");
                return 0;
            }
            "--cmdline" => match it.next() {
                Some(v) => cmdline = Some(v.clone()),
                None => {
                    say!("--cmdline needs a value, e.g. --cmdline \"chinit.ip=169.254.1.2/16\"");
                    return 2;
                }
            },
            // The kernel passes boot words it does not know to init: ignore them.
            _ => {}
        }
    }
    match mode::detect() {
        Ok(mode) => boot(mode, cmdline),
        Err(e) => {
            say!("{e}");
            2
        }
    }
}

/// The boot. Never returns.
fn boot(mode: Mode, cmdline_override: Option<String>) -> ! {
    let init_start = clock::init_start_us();
    let mut marks = if mode == Mode::Vm { Marks::enable() } else { Marks::off() };
    marks.mark(mark::INIT_START);
    let mut tl = Timeline::default();

    if let Err(e) = tl.step("mounts", || {
        let failures = mounts::mount_table(&mut mounts::Sys, mounts::EARLY);
        mounts::ensure_stdio();
        if failures.is_empty() {
            Ok(())
        } else {
            Err(failures.join("; "))
        }
    }) {
        say!("mounts: {e}");
    }

    let start = clock::now_us();
    let text = match cmdline_override {
        Some(s) => s,
        None => cmdline::read("/proc/cmdline").unwrap_or_else(|e| {
            say!("cmdline: read /proc/cmdline: {e}; using defaults");
            String::new()
        }),
    };
    let (cfg, warnings) = cmdline::parse(&text);
    tl.record("cmdline", start, clock::now_us(), None);
    for w in &warnings {
        say!("cmdline: {w}");
    }
    if !cfg.marks {
        marks = Marks::off();
    }
    if mode == Mode::Vm {
        let start = clock::now_us();
        if let Some((n, failures)) = modules::load_all() {
            for f in &failures {
                say!("modules: {f}");
            }
            tl.record("modules", start, clock::now_us(), (!failures.is_empty()).then(|| format!("{} of {n} failed", failures.len())));
        }
        if cfg.root != "none" && root::root_is_initramfs() {
            match tl.step("root", || root::mount_and_switch(&cfg)) {
                Ok(what) => say!("root: {what}"),
                Err(e) => {
                    say!("root: {e}");
                    fail(mode, &cfg);
                }
            }
        }
    }
    if !cfg.mounts.is_empty() {
        if let Err(e) = tl.step("mounts.extra", || {
            let failures = mounts::mount_extra(&mut mounts::Sys, &cfg.mounts);
            if failures.is_empty() {
                Ok(())
            } else {
                Err(failures.join("; "))
            }
        }) {
            say!("mounts.extra: {e}");
        }
    }
    marks.mark(mark::MOUNTS_DONE);

    let hostname = cfg.hostname.clone().or_else(|| cfg.net.kernel_ip.as_ref().and_then(|k| k.hostname.clone()));
    if let Some(h) = hostname {
        if let Err(e) = tl.step("hostname", || nix::unistd::sethostname(&h).map_err(|e| format!("sethostname {h}: {e}"))) {
            say!("hostname: {e}");
        }
    }

    let mut net_plan = None;
    let mut netlink = None;
    if cfg.net.enabled {
        match tl.step("network", || network(&cfg)) {
            Ok((p, nl)) => {
                net_plan = Some(p);
                netlink = Some(nl);
            }
            Err(e) => say!("network: {e}; the agent serves vsock only"),
        }
    }
    marks.mark(mark::NETWORK_DONE);

    // The agent step starts here: its runtime is part of its cost.
    let agent_start = clock::now_us();
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            say!("{}", error::InitError::Runtime(e));
            fail(mode, &cfg);
        }
    };
    let extra_targets: Vec<String> = cfg.mounts.iter().map(|m| m.target.clone()).collect();
    let ending = rt.block_on(run(mode, &cfg, tl, marks, (init_start, agent_start), net_plan, netlink));
    drop(rt);
    shutdown::finish(mode, &extra_targets, ending)
}

/// A step that cannot be done without failed: act on `chinit.on_error`. Never returns.
fn fail(mode: Mode, cfg: &Config) -> ! {
    match cfg.on_error {
        OnError::Poweroff => {
            say!("powering off (chinit.on_error=poweroff)");
            shutdown::power(mode, Action::Poweroff)
        }
        OnError::Halt => {
            say!("halting (chinit.on_error=halt)");
            shutdown::power(mode, Action::Halt)
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
            shutdown::power(mode, Action::Poweroff)
        }
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

/// Agent, ready, then the PID 1 loop. Returns how the machine ends, after every process has
/// been stopped.
async fn run(
    mode: Mode,
    cfg: &Config,
    mut tl: Timeline,
    marks: Marks,
    (init_start, agent_start): (u64, u64),
    net_plan: Option<net::Plan>,
    netlink: Option<netlink::Socket>,
) -> supervise::Ending {
    let state = Arc::new(State::new(mode.name(), init_start));
    let reaper = Arc::new(Reaper::default());

    if let Some(p) = &net_plan {
        state.set_ip(format!("{}/{}", p.addr, p.prefix));
    }

    let (shutdown_tx, shutdown_rx) = mpsc::unbounded_channel();
    let (system_tx, system_rx) = watch::channel(false);
    let button_tx = shutdown_tx.clone();
    let ctl = Arc::new(Chinit::new(Arc::clone(&state), Arc::clone(&reaper), shutdown_tx, system_rx.clone()));
    // Sockets whose closing costs time, closed after ready (see `after_ready`).
    let mut closing: Vec<Box<dyn Send>> = Vec::new();
    if let Some(nl) = netlink {
        closing.push(Box::new(nl));
    }
    let mut served = control::start_agent(cfg, net_plan.as_ref().map(|p| p.addr), &ctl).await;
    // Listening now: tell a host that asked for the address too early that it is here.
    if let Some(p) = net_plan.as_ref().filter(|_| served.is_ok()) {
        if let Some(mac) = p.mac {
            let (socket, sent) = arp::announce(p.index, mac, p.addr);
            if let Some(s) = socket {
                closing.push(Box::new(s));
            }
            if let Err(e) = &sent {
                say!("network: {e}");
            }
            served = sent;
        }
    }
    tl.record("agent", agent_start, clock::now_us(), served.err());

    let ready_at = clock::now_us();
    state.set_steps(&tl.steps);
    state.set_ready(ready_at);
    marks.mark(mark::READY);
    let origin = match mode {
        Mode::Vm => format!("kernel {} ms before init", clock::ms(init_start)),
        Mode::Namespace => "namespace mode".to_string(),
    };
    let line = format!("ready in {} ms ({}; {origin})", clock::ms(ready_at.saturating_sub(init_start)), timeline::summary(&tl.steps));
    // Let the agent take connections that are already waiting before anything else runs here.
    tokio::task::yield_now().await;
    // The signalfd after ready: no child exists before (commands and the workload wait for the
    // late mounts, which start below); signals sent until then are pending, blocked since `main`.
    let sig = match signals::Signals::new() {
        Ok(s) => Some(s),
        Err(e) => {
            say!("signals: cannot read them from a signalfd: {e}; reaping falls back to the shutdown path");
            // Before the helper thread starts, so that it inherits the mask too.
            let _ = signals::unblock();
            None
        }
    };
    // The console line (slow on a serial port) and the late mounts run on a helper thread.
    after_ready(Arc::clone(&state), system_tx, line, (mode == Mode::Vm).then_some(button_tx), closing);
    if let Some(port) = cfg.notify_vsock_port {
        let doc = state.snapshot();
        tokio::spawn(async move {
            if let Err(e) = notify::send(port, &doc).await {
                say!("notify: {e}");
            }
        });
    }

    let workload = match &cfg.exec {
        Some(argv) => {
            control::system_ready(&system_rx).await;
            supervise::start_workload(argv, &reaper, &state)
        }
        None => None,
    };
    let ending = supervise::supervise(cfg, &state, &ctl.stopping, sig, &reaper, shutdown_rx, workload).await;
    // Every request taken gets its answer (the commands it ran are gone now) before the runtime,
    // and the connections with it, is dropped.
    if tokio::time::timeout(ANSWER_WAIT, ctl.answers.idle(ANSWER_QUIET)).await.is_err() {
        say!("shutdown: answers still being written after {} ms; going on", ANSWER_WAIT.as_millis());
    }
    ending
}

/// How long the end of the machine waits for answers under way, and the quiet period that says
/// none is coming (requests sent at the same time as the one that ended it).
const ANSWER_WAIT: std::time::Duration = std::time::Duration::from_secs(1);
const ANSWER_QUIET: std::time::Duration = std::time::Duration::from_millis(10);

/// On a helper thread: prints the ready line, closes the boot's sockets (closing a netlink socket
/// runs the kernel's socket teardown and a deferred resize of its hash table; a packet socket waits
/// for an RCU grace period), mounts
/// [`mounts::LATE`] (mounts belong to the process, not the thread) so the agent keeps answering
/// meanwhile, flips `done`, then (VM mode) turns Ctrl-Alt-Del into SIGINT and watches the power
/// button.
fn after_ready(
    state: Arc<State>,
    done: watch::Sender<bool>,
    ready_line: String,
    button: Option<mpsc::UnboundedSender<(ShutdownRequest, &'static str)>>,
    closing: Vec<Box<dyn Send>>,
) {
    let spawned = std::thread::Builder::new().name("after-ready".into()).spawn(move || {
        say!("{ready_line}");
        drop(closing);
        let start = clock::now_us();
        let failures = mounts::mount_table(&mut mounts::Sys, mounts::LATE);
        let error = (!failures.is_empty()).then(|| failures.join("; "));
        if let Some(e) = &error {
            say!("mounts.late: {e}");
        }
        state.push_step(agent::proto::Step { name: "mounts.late".into(), start_us: start, end_us: clock::now_us(), error });
        let _ = done.send(true);
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
        let failures = mounts::mount_table(&mut mounts::Sys, mounts::LATE);
        if !failures.is_empty() {
            say!("mounts.late: {}", failures.join("; "));
        }
    }
}
