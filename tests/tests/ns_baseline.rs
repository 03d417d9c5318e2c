//! The baseline of docs/benchmarks.md (busybox shell init + Python agent, `baseline/`) as PID 1 of
//! fresh namespaces with the same veth as chinit's tests: it must answer `GET /ready` with 200 and
//! chinit's ready document, or the benchmark compares against something broken. Correctness only.

use std::time::Duration;

use agent::proto::Ready;
use chinit_tests::ns::{self, Chinit, Wire};
use nix::sys::signal::Signal;
use nix::sys::wait::WaitStatus;

/// Starts the baseline with `cmdline`; `None` (after printing why) when namespaces, busybox-static
/// or python3 are unavailable.
/// One skip line, written to stderr directly so `cargo test` shows it even while it captures the
/// output of passing tests.
macro_rules! skip_line {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($t)*);
    }};
}

fn boot(cmdline: &str) -> Option<(Wire, Chinit)> {
    let found = ns::can_make_namespaces().and_then(|()| ns::baseline_init());
    let (busybox, script) = match found {
        Ok(x) => x,
        Err(why) => {
            skip_line!("skipped: {why}");
            return None;
        }
    };
    let wire = Wire::new().unwrap();
    let c = Chinit::start_program(&busybox, &ns::baseline_args(&script, cmdline), &wire).unwrap();
    Some((wire, c))
}

fn stop(c: &mut Chinit) {
    c.signal(Signal::SIGTERM).unwrap();
    let st = c.wait(Duration::from_secs(10)).unwrap();
    assert!(matches!(st, WaitStatus::Exited(_, 0)), "the agent ends on SIGTERM with 0, got {st:?}; console:\n{}", c.console());
}

#[test]
fn baseline_answers_ready_with_chinits_document() {
    let Some((wire, mut c)) = boot("chinit.ip=169.254.1.2/16 chinit.vsock_port=off") else { return };
    let first = ns::wait_ready(&wire, &c, Duration::from_secs(20)).unwrap();
    let r: &Ready = &first.ready;
    assert!(r.ready, "{r:?}");
    assert_eq!((r.version.as_str(), r.mode.as_str()), ("baseline", "namespace"));
    assert_eq!(r.ip.as_deref(), Some("169.254.1.2/16"));
    let names: Vec<&str> = r.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["mounts", "cmdline", "network", "python", "agent"]);
    // One clock with chinit's: CLOCK_BOOTTIME, after the clone, steps in order, ready before the host saw it.
    assert!(c.spawned_us <= r.init_start_us, "{} > {}", c.spawned_us, r.init_start_us);
    let mut t = r.init_start_us;
    for s in &r.steps {
        assert!(s.start_us >= t && s.end_us >= s.start_us, "{s:?} after {t}");
        t = s.end_us;
    }
    assert_eq!(r.ready_us, t);
    assert!(r.ready_us <= first.seen_us);
    let h = ns::http(&wire, "GET", "/healthz", None).unwrap();
    assert_eq!((h.status, h.body.as_slice()), (200, &br#"{"ok":true}"#[..]));
    assert_eq!(ns::http(&wire, "GET", "/nope", None).unwrap().status, 404);
    // The late mounts run in the background (after ready: on a loaded host they may still be
    // under way), in the namespace's own mount table only.
    let targets = [" /proc proc ", " /dev/pts devpts ", " /run tmpfs ", " /tmp tmpfs ", " /sys/fs/cgroup cgroup2 "];
    let read = || std::fs::read_to_string(format!("/proc/{}/mounts", c.pid)).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut mounts = read();
    while !targets.iter().all(|t| mounts.contains(t)) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        mounts = read();
    }
    for target in targets {
        assert!(mounts.contains(target), "{target:?} not mounted within 10 s of ready:\n{mounts}");
    }
    stop(&mut c);
}

#[test]
fn baseline_takes_its_address_from_the_mac_and_powers_off_like_chinit() {
    // The guest MAC 02:00:00:00:01:02 gives 169.254.1.2 by chinit's rule.
    let Some((wire, mut c)) = boot("chinit.vsock_port=off") else { return };
    let first = ns::wait_ready(&wire, &c, Duration::from_secs(20)).unwrap();
    assert_eq!(first.ready.ip.as_deref(), Some("169.254.1.2/16"));
    // The host tools end a guest with POST /v1/shutdown: the baseline powers off like chinit.
    assert_eq!(ns::http(&wire, "POST", "/v1/shutdown", None).unwrap().status, 202);
    let st = c.wait(Duration::from_secs(10)).unwrap();
    assert!(ns::is_poweroff(st), "expected a power-off, got {st:?}; console:\n{}", c.console());
}
