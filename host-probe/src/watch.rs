//! Watch a booting guest: one [`Watch`] takes what the readers of a [`Running`] heard — port-0x80
//! marks, cloud-hypervisor's events, chinit's notify pushes, the `/ready` answers over TCP and
//! vsock — into the host's figures, decides when to ask the guest (see [`tcp_ask`]), and says when
//! the run is done, or why it failed (the VMM exited, the guest reset, the timeout).

use std::net::SocketAddr;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use agent::proto::Ready;

use crate::ask;
use crate::error::Error;
use crate::launch::{progress, Running};
use crate::measure;
use crate::options::{Options, Wait};
use crate::plan::Plan;
use crate::report::{self, HostTimes, Memory};
use crate::signals::interrupted;
use crate::vmm::Vmm;

/// The phase a watch is, in error messages.
const PHASE: &str = "boot";
/// How often the VMM is asked whether the guest reset.
const EVENT_CHECK_EVERY: Duration = Duration::from_millis(50);
/// After this long any guest is asked over the TAP, marks or not.
const LONG_BOOT: Duration = Duration::from_secs(10);
/// Once one path said ready, the others get this long to say it too.
const OTHERS_GRACE: Duration = Duration::from_secs(2);

/// What the host knows of the guest while it waits for `/ready` over the TAP.
#[derive(Debug, Clone, Copy, Default)]
pub struct Heard {
    /// The init wrote its first port-0x80 mark: it will write the ready mark too.
    pub init_mark: bool,
    pub ready_mark: bool,
    pub notified: bool,
    /// Waited long enough that the guest is slow anyway (or its marks went missing).
    pub long: bool,
}

/// Whether to send a `GET /ready` over the TAP now, and the connect timeout to give it.
///
/// Every connection attempt costs the guest: a SYN that reaches it before its agent listens is
/// answered with a reset, in the guest's time, and under emulation the first of them cost
/// milliseconds of the boot being measured. So a guest whose init announces itself on port 0x80
/// (chinit's first mark) is asked only once it said it is ready (its ready mark, or the vsock
/// notify); a guest that writes no marks can only be polled, with short connects.
pub fn tcp_ask(h: Heard) -> Option<Duration> {
    let told = h.ready_mark || h.notified;
    if told || h.long {
        // A guest that said it is ready answers: a slow one (emulated, nested, loaded) is waited
        // for rather than asked twice. The connect returns as soon as it is answered.
        Some(Duration::from_secs(2))
    } else if h.init_mark {
        None
    } else {
        Some(Duration::from_millis(20))
    }
}

/// What a watch observed, for the report.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub host: HostTimes,
    /// chinit's Ready document: the first `/ready` answer, else its notify push.
    pub ready: Option<Ready>,
    /// The VMM's memory once the guest said ready.
    pub memory: Option<Memory>,
    /// How the VMM exited, when it did.
    pub vmm_exit: Option<ExitStatus>,
    /// The kernel's log, asked of chinit once ready (`--kernel-profile`).
    pub kmsg: Option<Result<agent::proto::Kmsg, String>>,
}

/// The state of one run's watch: what is awaited, what was heard, whether it is done.
pub struct Watch {
    wait: Wait,
    timeout: Duration,
    verbose: bool,
    vmm: Vmm,
    /// The ways in that are awaited: `/ready` over the TAP, over vsock, and the notify push.
    tcp: Option<SocketAddr>,
    vsock: bool,
    notify: bool,
    host: HostTimes,
    ready: Option<Ready>,
    notify_body: Option<Vec<u8>>,
    memory: Option<Memory>,
    first_ready_at: Option<Instant>,
    vmm_exit: Option<ExitStatus>,
    last_event_check: Instant,
    done: bool,
}

impl Watch {
    /// Starts watching `run`; waiting for chinit's agent starts its vsock `/ready` poller (eager
    /// when vsock is the only way in).
    pub fn new(plan: &Plan, o: &Options, run: &mut Running) -> Watch {
        let tcp = run.guest_addr();
        if o.wait == Wait::Agent {
            run.poll_vsock_ready(tcp.is_none());
        }
        Watch::awaiting(o, plan.vmm, tcp, plan.guest_vsock.is_some(), run.listens_for_notify())
    }

    /// A watch that has heard nothing yet, awaiting the ways in given.
    fn awaiting(o: &Options, vmm: Vmm, tcp: Option<SocketAddr>, vsock: bool, notify: bool) -> Watch {
        Watch {
            wait: o.wait,
            timeout: o.timeout,
            verbose: o.verbose,
            vmm,
            tcp,
            vsock,
            notify,
            host: HostTimes::default(),
            ready: None,
            notify_body: None,
            memory: None,
            first_ready_at: None,
            vmm_exit: None,
            last_event_check: Instant::now(),
            done: false,
        }
    }

    /// Whether the run is over: the VMM exited (`Wait::Exit`), or every way in said ready (or had
    /// its grace time after the first did).
    pub fn done(&self) -> bool {
        self.done
    }

    /// One look at what the readers heard; `Err` when the run failed or was interrupted.
    pub fn poll(&mut self, run: &mut Running) -> Result<(), Error> {
        interrupted()?;
        if let Some(status) = run.exited() {
            self.vmm_exit = Some(status);
            if self.wait == Wait::Exit {
                self.done = true;
                return Ok(());
            }
            return Err(Error::VmmExited {
                phase: PHASE.into(),
                vmm: self.vmm.name().into(),
                status: status.to_string(),
                diagnostics: run.diagnostics(),
            });
        }
        self.check_reset(run)?;
        if run.elapsed() > self.timeout {
            return Err(Error::Timeout {
                phase: PHASE.into(),
                secs: self.timeout.as_secs(),
                waiting_for: self.waiting_for(),
                diagnostics: run.diagnostics(),
            });
        }
        if self.wait == Wait::Agent {
            self.hear_agent(run);
        }
        Ok(())
    }

    /// What was observed; the Ready document falls back to the notify push.
    pub fn observed(self) -> Observed {
        let pushed = || self.notify_body.as_deref().and_then(|b| serde_json::from_slice(b).ok());
        let ready = self.ready.clone().or_else(pushed);
        Observed { host: self.host, ready, memory: self.memory, vmm_exit: self.vmm_exit, kmsg: None }
    }

    /// A VMM that reports a guest reset (kernel panic or reboot) without exiting (cloud-hypervisor,
    /// as an event): the run failed.
    fn check_reset(&mut self, run: &Running) -> Result<(), Error> {
        if self.last_event_check.elapsed() <= EVENT_CHECK_EVERY {
            return Ok(());
        }
        self.last_event_check = Instant::now();
        if self.vmm.guest_reset(&run.plan().spec) {
            return Err(Error::VmmExited {
                phase: PHASE.into(),
                vmm: self.vmm.name().into(),
                status: "the guest reset (kernel panic or reboot)".into(),
                diagnostics: run.diagnostics(),
            });
        }
        Ok(())
    }

    /// chinit's agent: the notify push, `/ready` over the TAP and over vsock, memory at ready.
    fn hear_agent(&mut self, run: &mut Running) {
        if self.host.notify_us.is_none() {
            if let Some((t, body)) = run.first_push() {
                self.host.notify_us = Some(t);
                self.notify_body = Some(body);
                progress(self.verbose, &format!("notify at {} ms", report::ms(t)));
            }
        }
        let ready_mark = run.mark_seen(measure::MARK_READY);
        self.ask_tcp(run, ready_mark);
        let said_ready = self.host.ready_tcp_us.is_some() || self.host.notify_us.is_some();
        if said_ready || ready_mark {
            run.vsock_go();
        }
        if let Some((t, r)) = run.vsock_ready() {
            self.host.ready_vsock_us = Some(t);
            progress(self.verbose, &format!("/ready over vsock at {} ms", report::ms(t)));
            self.ready.get_or_insert(r);
        }
        if said_ready {
            let since = *self.first_ready_at.get_or_insert_with(Instant::now);
            if self.memory.is_none() {
                self.memory = run.vmm_memory();
            }
            self.done = self.pending().is_empty() || since.elapsed() > OTHERS_GRACE;
        }
    }

    /// `GET /ready` over the TAP, when [`tcp_ask`] says so and it has not answered yet.
    fn ask_tcp(&mut self, run: &Running, ready_mark: bool) {
        let (Some(addr), None) = (self.tcp, self.host.ready_tcp_us) else {
            return;
        };
        let heard = Heard {
            init_mark: run.mark_seen(measure::MARK_INIT_START),
            ready_mark,
            notified: self.host.notify_us.is_some(),
            long: run.elapsed() > LONG_BOOT,
        };
        let Some(connect_timeout) = tcp_ask(heard) else {
            return;
        };
        self.host.tcp_attempts += 1;
        if heard.init_mark {
            *self.host.tcp_attempts_after_init_mark.get_or_insert(0) += 1;
        }
        if let Some(r) = ask::ready_over_tcp(addr, connect_timeout) {
            let t = run.now_us();
            self.host.ready_tcp_us = Some(t);
            progress(self.verbose, &format!("/ready over TAP at {} ms", report::ms(t)));
            self.ready.get_or_insert(r);
        }
    }

    /// The awaited ways in that have not said ready yet.
    fn pending(&self) -> Vec<&'static str> {
        let awaited = [
            (self.tcp.is_some() && self.host.ready_tcp_us.is_none(), "/ready over TAP"),
            (self.vsock && self.host.ready_vsock_us.is_none(), "/ready over vsock"),
            (self.notify && self.host.notify_us.is_none(), "notify"),
        ];
        awaited.iter().filter(|(missing, _)| *missing).map(|(_, what)| *what).collect()
    }

    /// What a timed-out run was still waiting for, in the words of the error.
    fn waiting_for(&self) -> String {
        match self.wait {
            Wait::Exit => "waiting for the VMM to exit".to_string(),
            Wait::Agent => format!("waiting for the guest to say it is ready ({})", self.pending().join(", ")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watch(wait: Wait, tcp: bool, vsock: bool, notify: bool) -> Watch {
        let addr = tcp.then(|| SocketAddr::from(([169, 254, 1, 2], agent::proto::DEFAULT_PORT)));
        Watch::awaiting(&Options { wait, ..Options::default() }, crate::vmm::qemu::VMM, addr, vsock, notify)
    }

    #[test]
    fn a_timeout_names_what_was_still_awaited() {
        let answered = |tcp: bool, vsock: bool, notify: bool| HostTimes {
            ready_tcp_us: tcp.then_some(1),
            ready_vsock_us: vsock.then_some(2),
            notify_us: notify.then_some(3),
            ..HostTimes::default()
        };
        let cases = [
            (watch(Wait::Exit, true, true, true), answered(false, false, false), "waiting for the VMM to exit"),
            (
                watch(Wait::Agent, true, false, false),
                answered(false, false, false),
                "waiting for the guest to say it is ready (/ready over TAP)",
            ),
            (
                watch(Wait::Agent, true, true, true),
                answered(false, false, false),
                "waiting for the guest to say it is ready (/ready over TAP, /ready over vsock, notify)",
            ),
            (
                watch(Wait::Agent, true, true, true),
                answered(true, false, true),
                "waiting for the guest to say it is ready (/ready over vsock)",
            ),
            (watch(Wait::Agent, false, true, true), answered(false, true, false), "waiting for the guest to say it is ready (notify)"),
        ];
        for (mut w, host, want) in cases {
            w.host = host;
            assert_eq!(w.waiting_for(), want);
        }
        let mut all = watch(Wait::Agent, true, true, true);
        all.host = answered(true, true, true);
        assert!(all.pending().is_empty());
    }

    #[test]
    fn the_ready_document_falls_back_to_the_notify_push() {
        let doc = br#"{"ready":true,"version":"v","mode":"vm","init_start_us":1,"ready_us":2,"steps":[]}"#;
        let mut w = watch(Wait::Agent, true, true, true);
        assert!(w.observed().ready.is_none());
        w = watch(Wait::Agent, true, true, true);
        w.notify_body = Some(doc.to_vec());
        assert_eq!(w.observed().ready.map(|r| r.ready_us), Some(2));
        w = watch(Wait::Agent, true, true, true);
        w.notify_body = Some(b"{\"ready\":tr".to_vec());
        assert!(w.observed().ready.is_none(), "a push cut short says nothing");
    }

    #[test]
    fn tcp_polling_waits_for_a_guest_that_announces_itself() {
        let quiet = Heard::default();
        let short = Some(Duration::from_millis(20));
        let patient = Some(Duration::from_secs(2));
        let cases = [
            // No marks (not chinit, or marks off): poll with short connects.
            (quiet, short),
            // chinit started: wait for its word instead of sending SYNs into its boot.
            (Heard { init_mark: true, ..quiet }, None),
            (Heard { init_mark: true, ready_mark: true, ..quiet }, patient),
            (Heard { init_mark: true, notified: true, ..quiet }, patient),
            (Heard { notified: true, ..quiet }, patient),
            // The ready mark without the first one (a lost byte) still counts.
            (Heard { ready_mark: true, ..quiet }, patient),
            // Slow anyway, or its marks went missing: ask.
            (Heard { init_mark: true, long: true, ..quiet }, patient),
            (Heard { long: true, ..quiet }, patient),
        ];
        for (heard, want) in cases {
            assert_eq!(tcp_ask(heard), want, "{heard:?}");
        }
    }
}
