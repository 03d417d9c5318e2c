//! Watch a booting guest: one [`Watch`] takes what the readers of a [`Running`] heard — port-0x80
//! marks, cloud-hypervisor's events, chinit's notify pushes, the `/ready` answers over TCP and
//! vsock — into the host's figures, decides when to ask the guest (see [`tcp_ask`]), and says when
//! the run is done, or why it failed (the VMM exited, the guest reset, the timeout). A run that
//! waits for the guest's workload also follows its console ([`ConsoleTail`]).

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
/// How often a run waiting for the workload reads the console and chinit's pushes.
const CONSOLE_EVERY: Duration = Duration::from_millis(50);
/// chinit's console line when it starts the workload (or fails to: `chinit: workload: ...`).
const WORKLOAD_LINE: &str = "chinit: workload";

/// The guest's console from chinit's first workload line on: what a run waiting for the workload
/// copies to stderr, fed the console's bytes as they come.
#[derive(Debug, Default)]
pub struct ConsoleTail {
    /// Bytes of the console read so far.
    pub offset: u64,
    partial: Vec<u8>,
    started: bool,
    /// chinit said the workload exited.
    pub exited: bool,
}

impl ConsoleTail {
    /// Takes the next bytes of the console; returns the whole lines to copy (without `\r\n`).
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<String> {
        self.offset += bytes.len() as u64;
        self.partial.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(nl) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=nl).collect();
            let line = String::from_utf8_lossy(&line).trim_end_matches(['\r', '\n']).to_string();
            self.take(line, &mut out);
        }
        out
    }

    /// The last line when it has no newline (the console ended).
    pub fn finish(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        if !self.partial.is_empty() {
            let line = String::from_utf8_lossy(&std::mem::take(&mut self.partial)).trim_end_matches('\r').to_string();
            self.take(line, &mut out);
        }
        out
    }

    fn take(&mut self, line: String, out: &mut Vec<String>) {
        self.started |= line.contains(WORKLOAD_LINE);
        self.exited |= line.contains(measure::WORKLOAD_EXITED);
        if self.started {
            out.push(line);
        }
    }
}

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
    /// Every way in said ready (or had its grace time after the first did).
    agent_done: bool,
    /// Waiting for the workload: its console, and when it was last read.
    tail: ConsoleTail,
    last_console_check: Instant,
    done: bool,
}

impl Watch {
    /// Starts watching `run`; waiting for chinit's agent starts its vsock `/ready` poller (eager
    /// when vsock is the only way in).
    pub fn new(plan: &Plan, o: &Options, run: &mut Running) -> Watch {
        let tcp = run.guest_addr();
        let wait = plan.wait(o);
        if wait != Wait::Exit {
            run.poll_vsock_ready(tcp.is_none());
        }
        Watch::awaiting(wait, o, plan.vmm, tcp, plan.guest_vsock.is_some(), run.listens_for_notify())
    }

    /// A watch that has heard nothing yet, awaiting the ways in given.
    fn awaiting(wait: Wait, o: &Options, vmm: Vmm, tcp: Option<SocketAddr>, vsock: bool, notify: bool) -> Watch {
        Watch {
            wait,
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
            agent_done: false,
            tail: ConsoleTail::default(),
            last_console_check: Instant::now(),
            done: false,
        }
    }

    /// Whether the run is over: the VMM exited (`Wait::Exit`), or every way in said ready (or had
    /// its grace time after the first did), and with `Wait::Workload` the workload ended.
    pub fn done(&self) -> bool {
        self.done
    }

    /// One look at what the readers heard; `Err` when the run failed or was interrupted.
    pub fn poll(&mut self, run: &mut Running) -> Result<(), Error> {
        interrupted()?;
        if let Some(status) = run.exited() {
            self.vmm_exit = Some(status);
            if self.wait == Wait::Workload {
                self.hear_notify(run);
                self.follow_console(run, true);
            }
            // A guest that powers off after its workload exited is a run that ended well.
            if self.wait == Wait::Exit || (self.wait == Wait::Workload && self.workload_ended(run)) {
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
        match self.wait {
            Wait::Exit => {}
            Wait::Agent => {
                self.hear_agent(run);
                self.done = self.agent_done;
            }
            Wait::Workload => {
                if !self.agent_done {
                    self.hear_agent(run);
                }
                if self.last_console_check.elapsed() > CONSOLE_EVERY {
                    self.last_console_check = Instant::now();
                    self.follow_console(run, false);
                    // Ended with the guest still up (`chinit.on_exit=stay`): it is powered off.
                    self.done = self.agent_done && self.workload_ended(run);
                }
            }
        }
        Ok(())
    }

    /// Copies what the console got since the last look, from chinit's first workload line on, to
    /// stderr; `last`: the VMM exited, so a line without its newline is whole too.
    fn follow_console(&mut self, run: &Running, last: bool) {
        use std::io::{Read, Seek, SeekFrom};
        let mut bytes = Vec::new();
        let read = std::fs::File::open(run.console())
            .and_then(|mut f| f.seek(SeekFrom::Start(self.tail.offset)).and_then(|_| f.read_to_end(&mut bytes)));
        if read.is_err() {
            return;
        }
        let mut lines = self.tail.feed(&bytes);
        if last {
            lines.extend(self.tail.finish());
        }
        for l in lines {
            eprintln!("{l}");
        }
    }

    /// Whether the workload ended: chinit's last push says so, or its console line does.
    fn workload_ended(&self, run: &Running) -> bool {
        self.tail.exited || crate::collect::latest_workload(&run.pushes(), None).is_some_and(|w| !w.running)
    }

    /// chinit's first notify push (its Ready document), once.
    fn hear_notify(&mut self, run: &Running) {
        if self.host.notify_us.is_none() {
            if let Some((t, body)) = run.first_push() {
                self.host.notify_us = Some(t);
                self.notify_body = Some(body);
                progress(self.verbose, &format!("notify at {} ms", report::ms(t)));
            }
        }
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
        self.hear_notify(run);
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
            self.agent_done = self.pending().is_empty() || since.elapsed() > OTHERS_GRACE;
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
            Wait::Workload if self.agent_done => "waiting for the workload to exit (a longer one needs a larger --timeout)".to_string(),
            Wait::Agent | Wait::Workload => format!("waiting for the guest to say it is ready ({})", self.pending().join(", ")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watch(wait: Wait, tcp: bool, vsock: bool, notify: bool) -> Watch {
        let addr = tcp.then(|| SocketAddr::from(([169, 254, 1, 2], agent::proto::DEFAULT_PORT)));
        Watch::awaiting(wait, &Options::default(), crate::vmm::qemu::VMM, addr, vsock, notify)
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
        let mut w = watch(Wait::Workload, true, true, true);
        assert_eq!(w.waiting_for(), "waiting for the guest to say it is ready (/ready over TAP, /ready over vsock, notify)");
        w.agent_done = true;
        assert_eq!(w.waiting_for(), "waiting for the workload to exit (a longer one needs a larger --timeout)");
    }

    #[test]
    fn the_console_is_copied_from_the_workloads_first_line() {
        let mut t = ConsoleTail::default();
        assert_eq!(t.feed(b"[    0.1] booting\r\nchinit: ready in 3.2 ms\r\n"), Vec::<String>::new(), "the boot is not copied");
        assert_eq!(
            t.feed(b"chinit: workload started: /bin/sh -c x (pid 40)\r\nimage says 4"),
            ["chinit: workload started: /bin/sh -c x (pid 40)"]
        );
        assert!(!t.exited);
        assert_eq!(t.feed(b"2\r\n"), ["image says 42"], "a line cut across two reads is one line");
        assert_eq!(t.feed(b"chinit: workload exited (exit code 7)\r\nreboot: Power d"), ["chinit: workload exited (exit code 7)"]);
        assert!(t.exited);
        assert_eq!(t.finish(), ["reboot: Power d"], "the console's last bytes, once it ended");
        assert_eq!(t.offset, 162, "every byte fed is counted, so the next read starts after it");
        // A workload file chinit could not start: its one line is copied.
        let mut bad = ConsoleTail::default();
        assert_eq!(bad.feed(b"chinit: workload: /etc/chinit/workload.json: bad\n"), ["chinit: workload: /etc/chinit/workload.json: bad"]);
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
