//! chinit as PID 1 of fresh namespaces (PID, mount, UTS, network) with a veth pair: every step for
//! real, observed from the host end. Needs root; skips with one line only when namespaces or iproute2
//! are truly unavailable.

use std::time::{Duration, Instant};

use agent::proto::{ExecRequest, ExecResponse};
use chinit_tests::ns;
use nix::sys::signal::Signal;

use ns::{boot, exec, poweroff, sh};

#[test]
fn boots_to_ready_with_mounts_hostname_and_address() {
    let Some((wire, mut c)) = boot("chinit.api=tcp chinit.hostname=ns-test") else { return };
    let first = ns::wait_ready(&wire, &c, Duration::from_secs(10)).unwrap();
    let r = &first.ready;
    assert!(r.ready && r.mode == "namespace", "{r:?}");
    assert_eq!(r.ip.as_deref(), Some("169.254.1.2/16"));
    // The boot allocates from chinit's own heap (init/src/heap.rs), which never grows the data
    // segment: no `[heap]` region, as musl's allocator would have made on the first malloc.
    let regions = ns::special_regions(c.pid).unwrap();
    assert!(regions.contains(&"[stack]".to_string()) && !regions.contains(&"[heap]".to_string()), "{regions:?}");
    // Before ready, every step in order; after it, only the late mounts (which may be done already).
    let before: Vec<&str> = r.steps.iter().filter(|s| s.end_us <= r.ready_us).map(|s| s.name.as_str()).collect();
    let after: Vec<&str> = r.steps.iter().filter(|s| s.end_us > r.ready_us).map(|s| s.name.as_str()).collect();
    assert_eq!(before, ["mounts", "cmdline", "hostname", "network", "agent"]);
    assert!(after.is_empty() || after == ["mounts.late"], "{after:?}");
    // The timeline is consistent: each step within itself and after the previous, all after the clone
    // (same CLOCK_BOOTTIME across namespaces), ready after the steps before it, the host after ready.
    assert!(c.spawned_us <= r.init_start_us, "{} > {}", c.spawned_us, r.init_start_us);
    let mut t = r.init_start_us;
    for s in &r.steps {
        assert!(s.start_us >= t && s.end_us >= s.start_us, "{s:?} after {t}");
        assert!(s.error.is_none(), "{s:?}");
        t = s.end_us;
    }
    assert!(r.ready_us >= r.steps[4].end_us && first.seen_us >= r.ready_us);
    assert_eq!(r.generation, 0, "a machine that booted is generation 0");
    // The console line follows ready (written off the critical path).
    c.wait_console("chinit: ready in ", Duration::from_secs(5)).unwrap();

    // Commands wait for the late mounts, so the whole table is there.
    let mounts = sh(&wire, "cat /proc/self/mounts");
    for want in [
        "proc /proc proc",
        "sysfs /sys sysfs",
        "/dev/pts devpts",
        "/dev/shm tmpfs",
        "run /run tmpfs",
        "tmp /tmp tmpfs",
        "cgroup2 /sys/fs/cgroup cgroup2",
    ] {
        assert!(mounts.contains(want), "{want} missing from\n{mounts}");
    }
    assert_eq!(sh(&wire, "hostname"), "ns-test\n");
    assert!(sh(&wire, "ip -4 addr show eth0").contains("inet 169.254.1.2/16"));
    assert!(sh(&wire, "ip link show lo").contains("UP"));
    // chinit is PID 1 of its namespace.
    assert!(sh(&wire, "cat /proc/1/cmdline | tr '\\0' ' '").contains("chinit --cmdline"));
    let late = ns::http(&wire, "GET", "/ready", None).unwrap().json::<agent::proto::Ready>().unwrap();
    assert_eq!(late.steps.last().map(|s| s.name.as_str()), Some("mounts.late"));
    poweroff(&wire, &mut c);
}

#[test]
fn tcp_refuses_the_control_api_by_default() {
    let Some((wire, mut c)) = boot("") else { return };
    ns::wait_ready(&wire, &c, Duration::from_secs(10)).unwrap();
    let body = serde_json::to_vec(&ExecRequest { argv: vec!["true".into()], ..ExecRequest::default() }).unwrap();
    let r = ns::http(&wire, "POST", "/v1/exec", Some(body)).unwrap();
    assert_eq!(r.status, 403);
    assert!(String::from_utf8_lossy(&r.body).contains("chinit.api=tcp"));
    assert_eq!(ns::http(&wire, "POST", "/v1/shutdown", None).unwrap().status, 403);
    assert_eq!(ns::http(&wire, "GET", "/healthz", None).unwrap().status, 200);
    c.signal(Signal::SIGTERM).unwrap();
    assert!(ns::is_poweroff(c.wait(Duration::from_secs(10)).unwrap()));
}

#[test]
fn exec_api_returns_output_and_exit_codes() {
    let Some((wire, mut c)) = boot("chinit.api=tcp") else { return };
    ns::wait_ready(&wire, &c, Duration::from_secs(10)).unwrap();
    let r = exec(&wire, &["sh", "-c", "echo out; echo err >&2; exit 42"]);
    assert_eq!((r.exit_code, r.stdout.as_str(), r.stderr.as_str()), (Some(42), "out\n", "err\n"));
    let req = ExecRequest { argv: vec!["sleep".into(), "30".into()], timeout_ms: Some(100), ..ExecRequest::default() };
    let r: ExecResponse = ns::http(&wire, "POST", "/v1/exec", Some(serde_json::to_vec(&req).unwrap())).unwrap().json().unwrap();
    assert!(r.timed_out && r.signal == Some(9), "{r:?}");
    let r = ns::http(&wire, "POST", "/v1/exec", Some(br#"{"argv":["/no/such/program"]}"#.to_vec())).unwrap();
    assert_eq!(r.status, 400);
    assert!(String::from_utf8_lossy(&r.body).contains("/no/such/program"));
    // chinit ignores SIGPIPE (a write to a closed socket must not kill PID 1); its children get the
    // default disposition back.
    let mask = ns::status_mask;
    let ignored = |status: &str| mask(status, "SigIgn:") & (1 << (libc::SIGPIPE - 1)) != 0;
    let pid1 = sh(&wire, "cat /proc/1/status");
    let child = sh(&wire, "cat /proc/self/status");
    assert!(ignored(&pid1), "chinit does not ignore SIGPIPE");
    assert!(!ignored(&child), "a command inherited SIGPIPE ignored");
    // chinit blocks the signals it reads from its signalfd; its children start with none blocked.
    let blocked = |status: &str| mask(status, "SigBlk:");
    let handled = [libc::SIGCHLD, libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGPWR].iter().fold(0u64, |m, s| m | 1 << (s - 1));
    assert_eq!(blocked(&pid1) & handled, handled, "chinit does not block the signals it reads");
    assert_eq!(blocked(&child), 0, "a command inherited chinit's blocked signals");
    poweroff(&wire, &mut c);
}

/// A command that cannot start is refused with what is wrong: a missing or non-directory `cwd` is
/// named as the cwd, not blamed on the program.
#[test]
fn exec_errors_name_the_cwd_or_the_program() {
    let Some((wire, mut c)) = boot("chinit.api=tcp") else { return };
    ns::wait_ready(&wire, &c, Duration::from_secs(10)).unwrap();
    let refusal = |argv: &[&str], cwd: &str| {
        let req = ExecRequest { argv: argv.iter().map(|s| s.to_string()).collect(), cwd: Some(cwd.into()), ..ExecRequest::default() };
        let r = ns::http(&wire, "POST", "/v1/exec", Some(serde_json::to_vec(&req).unwrap())).unwrap();
        assert_eq!(r.status, 400, "{argv:?} in {cwd}: {}", String::from_utf8_lossy(&r.body));
        r.json::<agent::proto::ErrorBody>().unwrap().error
    };
    let e = refusal(&["pwd"], "/nope");
    assert_eq!(e, "cannot change to cwd \"/nope\": No such file or directory (os error 2)");
    let e = refusal(&["pwd"], "/dev/null");
    assert_eq!(e, "cannot change to cwd \"/dev/null\": Not a directory (os error 20)");
    // The cwd comes first: a missing program in a missing cwd is told about the cwd.
    let e = refusal(&["/no/such/program"], "/nope");
    assert!(e.starts_with("cannot change to cwd \"/nope\""), "{e}");
    let e = refusal(&["/no/such/program"], "/tmp");
    assert!(e.starts_with("cannot run \"/no/such/program\": No such file or directory"), "{e}");
    assert_eq!(exec_in(&wire, &["pwd"], "/tmp").stdout, "/tmp\n");
    poweroff(&wire, &mut c);
}

/// `argv` run in `cwd` through the exec API; asserts the 200.
fn exec_in(wire: &ns::Wire, argv: &[&str], cwd: &str) -> ExecResponse {
    ns::exec_req(wire, &ExecRequest { argv: argv.iter().map(|s| s.to_string()).collect(), cwd: Some(cwd.into()), ..ExecRequest::default() })
}

#[test]
fn orphans_are_reaped() {
    let Some((wire, mut c)) = boot("chinit.api=tcp") else { return };
    ns::wait_ready(&wire, &c, Duration::from_secs(10)).unwrap();
    // Five grandchildren whose parents exit at once: they are re-parented to chinit, then exit.
    sh(&wire, "for i in 1 2 3 4 5; do (sleep 0.05 &); done");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let states = sh(&wire, "cat /proc/[0-9]*/stat 2>/dev/null | sed 's/.*) \\(.\\).*/\\1/' | sort | uniq -c");
        if !states.contains(" Z") {
            break;
        }
        assert!(Instant::now() < deadline, "zombies left:\n{states}");
        std::thread::sleep(Duration::from_millis(50));
    }
    poweroff(&wire, &mut c);
}

#[test]
fn sigterm_stops_children_in_order_then_powers_off() {
    let Some((wire, mut c)) = boot("chinit.api=tcp chinit.grace_ms=300") else { return };
    ns::wait_ready(&wire, &c, Duration::from_secs(10)).unwrap();
    sh(&wire, "sleep 300 >/dev/null 2>&1 & trap '' TERM; (trap '' TERM; exec sleep 301) >/dev/null 2>&1 &");
    c.signal(Signal::SIGTERM).unwrap();
    let st = c.wait(Duration::from_secs(10)).unwrap();
    let console = c.console();
    assert!(ns::is_poweroff(st), "{st:?}\n{console}");
    assert!(console.contains("SIGTERM: shutting down"), "{console}");
    // One child ignores SIGTERM: after the grace period it gets SIGKILL.
    assert!(console.contains("still running after 300 ms, sending SIGKILL"), "{console}");
}

#[test]
fn workload_runs_and_its_exit_ends_the_namespace_with_its_code() {
    let Some((wire, mut c)) = boot("chinit.exec=\"sh -c 'echo workload-says-hi; exit 3'\"") else { return };
    let st = c.wait(Duration::from_secs(10)).unwrap();
    let console = c.console();
    // As tini does: the workload's exit ends chinit with the workload's code.
    assert!(matches!(st, nix::sys::wait::WaitStatus::Exited(_, 3)), "{st:?}\n{console}");
    assert!(console.contains("workload-says-hi"), "{console}");
    assert!(console.contains("workload exited (exit code 3)"), "{console}");
    drop(wire);
}

#[test]
fn workload_with_on_exit_stay_keeps_serving_and_gets_signals_forwarded() {
    let Some((wire, mut c)) =
        boot("chinit.on_exit=stay chinit.exec=\"sh -c 'h() { echo got-hup; }; trap h HUP; while :; do sleep 0.05; done'\"")
    else {
        return;
    };
    ns::wait_ready(&wire, &c, Duration::from_secs(10)).unwrap();
    // Let the shell install its trap.
    c.wait_console("workload started", Duration::from_secs(5)).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    c.signal(Signal::SIGHUP).unwrap();
    c.wait_console("got-hup", Duration::from_secs(5)).unwrap();
    // SIGTERM goes to the workload, which dies of it; chinit stays (on_exit=stay).
    c.signal(Signal::SIGTERM).unwrap();
    c.wait_console("workload exited (signal 15)", Duration::from_secs(5)).unwrap();
    assert_eq!(ns::http(&wire, "GET", "/ready", None).unwrap().status, 200);
    // With no workload left, SIGTERM shuts down.
    c.signal(Signal::SIGTERM).unwrap();
    assert!(ns::is_poweroff(c.wait(Duration::from_secs(10)).unwrap()));
}

#[test]
fn bad_cmdline_values_are_reported_and_defaulted() {
    let Some((wire, mut c)) = boot("chinit.port=abc chinit.colour=blue chinit.mtu=1") else { return };
    ns::wait_ready(&wire, &c, Duration::from_secs(10)).unwrap();
    let console = c.console();
    assert!(console.contains("chinit: cmdline: chinit.port=abc: \"abc\" is not a port number"), "{console}");
    assert!(console.contains("chinit: cmdline: chinit.colour=blue: unknown key chinit.colour"), "{console}");
    assert!(console.contains("chinit: cmdline: chinit.mtu=1: MTU must be 68-65535"), "{console}");
    c.signal(Signal::SIGTERM).unwrap();
    assert!(ns::is_poweroff(c.wait(Duration::from_secs(10)).unwrap()));
}

#[test]
fn a_missing_nic_is_reported_and_the_boot_goes_on() {
    let Some((wire, mut c)) = boot("chinit.iface=eth7") else { return };
    c.wait_console("chinit: ready in", Duration::from_secs(10)).unwrap();
    let console = c.console();
    assert!(console.contains("network: no link named eth7 (links: eth0); fix chinit.iface="), "{console}");
    c.signal(Signal::SIGTERM).unwrap();
    assert!(ns::is_poweroff(c.wait(Duration::from_secs(10)).unwrap()));
    drop(wire);
}

#[test]
fn refuses_to_run_when_not_pid_1() {
    let Ok(bin) = ns::chinit_bin() else { panic!("no chinit build") };
    let out = std::process::Command::new(bin).args(["--cmdline", "chinit.net=off"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("must run as PID 1") && err.contains("unshare --pid --mount"), "{err}");
}

#[test]
fn hostile_clients_leave_it_serving_with_bounded_memory() {
    let Some((wire, mut c)) = boot("") else { return };
    ns::wait_ready(&wire, &c, Duration::from_secs(10)).unwrap();
    let rss_before = ns::rss_kib(c.pid).unwrap();

    // Garbage: a clear 400 and a close.
    let reply = ns::with_stream(&wire, |mut s| {
        ns::send(&mut s, b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03garbage\r\n\r\n");
        ns::read_all(s, Duration::from_secs(5))
    })
    .unwrap();
    assert!(reply.starts_with(b"HTTP/1.1 400 "), "{}", String::from_utf8_lossy(&reply));

    // 64 KiB of headers: refused at the head limit, without reading it all.
    let reply = ns::with_stream(&wire, |mut s| {
        let mut req = b"GET /ready HTTP/1.1\r\n".to_vec();
        while req.len() < 64 * 1024 {
            req.extend_from_slice(b"X-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        ns::send(&mut s, &req);
        ns::read_all(s, Duration::from_secs(5))
    })
    .unwrap();
    assert!(reply.starts_with(b"HTTP/1.1 431 "), "{}", String::from_utf8_lossy(&reply));

    // Slowloris: connections that trickle a head are dropped after the request timeout, and /ready
    // answers meanwhile.
    let slow: Vec<_> = (0..8)
        .map(|_| {
            wire.host
                .run(|| {
                    let mut s = std::net::TcpStream::connect((ns::GUEST_IP, ns::PORT)).unwrap();
                    ns::send(&mut s, b"GET /ready HTTP/1.1\r\nX-A: ");
                    s
                })
                .unwrap()
        })
        .collect();
    assert_eq!(ns::http(&wire, "GET", "/ready", None).unwrap().status, 200);
    let closed_by_server = wire
        .host
        .run(move || {
            slow.into_iter().all(|mut s| {
                // Trickle a byte every 100 ms until the server drops us (it allows 5 s per request).
                use std::io::{Read, Write};
                let start = Instant::now();
                s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
                while start.elapsed() < Duration::from_secs(15) {
                    if s.write_all(b"a").is_err() {
                        return true;
                    }
                    let mut b = [0u8; 1];
                    if let Ok(0) = s.read(&mut b) {
                        return true;
                    }
                }
                false
            })
        })
        .unwrap();
    assert!(closed_by_server, "slow connections were never dropped");

    // 1000 connections at once: each newcomer evicts the oldest idle one; it keeps serving.
    // SAFETY: setrlimit on this process, with a valid struct.
    unsafe {
        let lim = libc::rlimit { rlim_cur: 8192, rlim_max: 8192 };
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
    let held = wire
        .host
        .run(|| (0..1000).filter_map(|_| std::net::TcpStream::connect((ns::GUEST_IP, ns::PORT)).ok()).collect::<Vec<_>>())
        .unwrap();
    assert!(held.len() >= 900, "only {} connections opened", held.len());
    let during = ns::rss_kib(c.pid).unwrap();
    assert_eq!(ns::http(&wire, "GET", "/ready", None).unwrap().status, 200);
    drop(held);
    assert_eq!(ns::http(&wire, "GET", "/ready", None).unwrap().status, 200);
    let after = ns::rss_kib(c.pid).unwrap();
    // Bounded: a few MiB at most over the idle footprint, whatever the clients did.
    assert!(during < rss_before + 16 * 1024 && after < rss_before + 16 * 1024, "RSS {rss_before} KiB → {during} KiB → {after} KiB");
    println!("chinit RSS: idle {rss_before} KiB, 1000 connections {during} KiB, after {after} KiB");
    c.signal(Signal::SIGTERM).unwrap();
    assert!(ns::is_poweroff(c.wait(Duration::from_secs(10)).unwrap()));
}
