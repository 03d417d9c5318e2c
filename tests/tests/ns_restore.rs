//! `POST /v1/restore` in namespace mode (over TCP with `chinit.api=tcp`): what chinit does to make
//! a copy restored from a snapshot unique (docs/agent-protocol.md), for real, observed from the host
//! end of the veth.

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use agent::proto::{ExecRequest, ExecResponse, Ready, RestoreRequest};
use chinit_tests::ns::{self, boot, sh};

fn restore(wire: &ns::Wire, req: &RestoreRequest) -> agent::client::Response {
    ns::http(wire, "POST", "/v1/restore", Some(serde_json::to_vec(req).unwrap())).unwrap()
}

/// 32 random bytes, as hex.
fn entropy() -> String {
    let mut buf = [0u8; 32];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom").unwrap(), &mut buf).unwrap();
    buf.iter().map(|x| format!("{x:02x}")).collect()
}

/// A restore with entropy, a hostname and an address: 200 with the new ready document (the
/// generation, the address, the steps); the hostname and address are those of the guest now, its
/// old neighbours are gone, and the host reaches it at the new address (chinit announced it). The clock is not stepped in a
/// namespace (it is the host's).
#[test]
fn a_restore_makes_the_copy_unique() {
    let Some((wire, mut c)) = boot("chinit.api=tcp chinit.hostname=original") else { return };
    ns::wait_ready(&wire, &c, Duration::from_secs(10)).unwrap();
    // A neighbour the snapshot knew (a stale entry no traffic of the test renews).
    sh(&wire, "ip neigh replace 169.254.3.3 lladdr 02:00:00:00:03:03 dev eth0 nud stale");
    assert!(sh(&wire, "ip neigh show dev eth0").contains("169.254.3.3"));
    let new_ip = Ipv4Addr::new(169, 254, 7, 7);
    let req = RestoreRequest {
        generation: 7,
        entropy: entropy(),
        wall_clock_us: Some(1),
        hostname: Some("copy-7".into()),
        ip: Some(format!("{new_ip}/16")),
        notify_port: None,
    };
    let r = restore(&wire, &req);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let doc: Ready = r.json().unwrap();
    assert_eq!((doc.generation, doc.ip.as_deref()), (7, Some("169.254.7.7/16")));
    let steps: Vec<&str> = doc.steps.iter().filter(|s| s.name.starts_with("restore.")).map(|s| s.name.as_str()).collect();
    assert_eq!(steps, ["restore.entropy", "restore.hostname", "restore.network"], "{:?}", doc.steps);
    assert!(doc.steps.iter().all(|s| s.error.is_none()), "{:?}", doc.steps);
    // The host reaches the copy at its new address, learned by ARP (no static entry for it).
    let at_new = wire
        .host
        .run(move || {
            let mut s =
                TcpStream::connect_timeout(&SocketAddr::from((new_ip, ns::PORT)), Duration::from_secs(2)).map_err(|e| e.to_string())?;
            s.set_read_timeout(Some(Duration::from_secs(5))).map_err(|e| e.to_string())?;
            agent::client::request(&mut s, "GET", "/ready", None).map_err(|e| e.to_string())
        })
        .unwrap()
        .unwrap();
    assert_eq!(at_new.status, 200);
    assert_eq!(at_new.json::<Ready>().unwrap().generation, 7);
    // Through the new address: the guest's hostname and address are the new ones only.
    let exec_new = |script: &str| -> String {
        let script = script.to_string();
        wire.host
            .run(move || {
                let body =
                    serde_json::to_vec(&agent::proto::ExecRequest { argv: vec!["sh".into(), "-c".into(), script], ..Default::default() })
                        .unwrap();
                let mut s = TcpStream::connect((new_ip, ns::PORT)).unwrap();
                let r = agent::client::request(&mut s, "POST", "/v1/exec", Some(&body)).unwrap();
                r.json::<agent::proto::ExecResponse>().unwrap().stdout
            })
            .unwrap()
    };
    assert_eq!(exec_new("hostname"), "copy-7\n");
    let neighbours = exec_new("ip neigh show dev eth0");
    assert!(!neighbours.contains("169.254.3.3"), "the snapshot's neighbours are flushed: {neighbours}");
    // The old address goes a moment after the answer (which left over it).
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut addrs = exec_new("ip -4 -o addr show eth0");
    while addrs.contains("169.254.1.2") && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        addrs = exec_new("ip -4 -o addr show eth0");
    }
    assert!(addrs.contains("inet 169.254.7.7/16") && !addrs.contains("169.254.1.2"), "{addrs}");
    c.signal(nix::sys::signal::Signal::SIGTERM).unwrap();
    assert!(ns::is_poweroff(c.wait(Duration::from_secs(10)).unwrap()));
}

/// Bad input changes nothing: short or non-hex entropy, a bad hostname or address, a body that is
/// not an object: 400, and the hostname and generation are as they were. Without `chinit.api=tcp`
/// the endpoint answers 403 on TCP.
#[test]
fn bad_restores_change_nothing() {
    let Some((wire, mut c)) = boot("chinit.api=tcp chinit.hostname=original") else { return };
    ns::wait_ready(&wire, &c, Duration::from_secs(10)).unwrap();
    let good = entropy();
    for (req, want) in [
        (RestoreRequest { generation: 2, entropy: good[..62].into(), hostname: Some("x".into()), ..Default::default() }, "31 bytes"),
        (RestoreRequest { generation: 2, entropy: "zz".repeat(32), hostname: Some("x".into()), ..Default::default() }, "not hex"),
        (RestoreRequest { generation: 2, entropy: good.clone(), hostname: Some("bad name".into()), ..Default::default() }, "hostname"),
        (
            RestoreRequest {
                generation: 2,
                entropy: good.clone(),
                hostname: Some("x".into()),
                ip: Some("nonsense".into()),
                ..Default::default()
            },
            "ip",
        ),
    ] {
        let r = restore(&wire, &req);
        assert_eq!(r.status, 400, "{req:?}");
        assert!(String::from_utf8_lossy(&r.body).contains(want), "{}", String::from_utf8_lossy(&r.body));
    }
    let r = ns::http(&wire, "POST", "/v1/restore", Some(b"[7]".to_vec())).unwrap();
    assert_eq!(r.status, 400);
    assert_eq!(sh(&wire, "hostname"), "original\n");
    let doc: Ready = ns::http(&wire, "GET", "/ready", None).unwrap().json().unwrap();
    assert_eq!(doc.generation, 0, "a booted machine's generation, unchanged");
    assert!(!doc.steps.iter().any(|s| s.name.starts_with("restore.")));
    ns::poweroff(&wire, &mut c);

    let Some((wire, mut c)) = boot("") else { return };
    ns::wait_ready(&wire, &c, Duration::from_secs(10)).unwrap();
    let r = restore(&wire, &RestoreRequest { generation: 2, entropy: good, ..Default::default() });
    assert_eq!(r.status, 403);
    c.signal(nix::sys::signal::Signal::SIGTERM).unwrap();
    assert!(ns::is_poweroff(c.wait(Duration::from_secs(10)).unwrap()));
}

/// One request from the host namespace to the guest at `addr`, on a connection of its own (closed
/// after the answer).
fn http_at(
    wire: &ns::Wire,
    addr: Ipv4Addr,
    method: &'static str,
    path: &'static str,
    body: Option<Vec<u8>>,
) -> Result<agent::client::Response, String> {
    wire.host.run(move || -> Result<agent::client::Response, String> {
        let to = SocketAddr::from((addr, ns::PORT));
        let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(2)).map_err(|e| format!("connect {to}: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
        agent::client::request(&mut s, method, path, body.as_deref()).map_err(|e| format!("{method} {path} at {to}: {e}"))
    })?
}

/// `POST /v1/restore` at `addr`.
fn restore_at(wire: &ns::Wire, addr: Ipv4Addr, req: &RestoreRequest) -> Result<agent::client::Response, String> {
    http_at(wire, addr, "POST", "/v1/restore", Some(serde_json::to_vec(req).unwrap()))
}

/// The body of `POST /v1/exec` for `sh -c script`.
fn exec_body(script: &str) -> Vec<u8> {
    serde_json::to_vec(&ExecRequest { argv: vec!["sh".into(), "-c".into(), script.into()], ..Default::default() }).unwrap()
}

/// A request of generation `generation` with fresh entropy and nothing else.
fn plain(generation: u64) -> RestoreRequest {
    RestoreRequest { generation, entropy: entropy(), ..Default::default() }
}

/// The guest's IPv4 addresses on eth0 (`A.B.C.D/P` each), read in its network namespace.
fn guest_addrs(wire: &ns::Wire) -> Vec<String> {
    let out =
        wire.guest.run(|| std::process::Command::new("ip").args(["-4", "-o", "addr", "show", "dev", "eth0"]).output()).unwrap().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines().filter_map(|l| l.split_whitespace().skip_while(|w| *w != "inet").nth(1)).map(str::to_string).collect()
}

/// Waits up to `within` for the guest's addresses to be exactly `want`; returns how long it took,
/// or what they were.
fn wait_addrs(wire: &ns::Wire, want: &[&str], within: Duration) -> Result<Duration, Vec<String>> {
    let start = Instant::now();
    loop {
        let now = guest_addrs(wire);
        if now == want {
            return Ok(start.elapsed());
        }
        if start.elapsed() > within {
            return Err(now);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Restore to B, then at once (from B) back to A: the first swap's removal of its old address
/// must not take A, the current address again. The guest keeps A, `/ready` says A, B goes.
#[test]
fn swapping_back_at_once_keeps_the_address() {
    let Some((wire, mut c)) = boot("chinit.api=tcp") else { return };
    ns::wait_ready(&wire, &c, Duration::from_secs(10)).unwrap();
    let (a, b) = (ns::GUEST_IP, Ipv4Addr::new(169, 254, 7, 7));
    let start = Instant::now();
    let r = restore_at(&wire, a, &RestoreRequest { ip: Some(format!("{b}/16")), ..plain(1) }).unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let r = restore_at(&wire, b, &RestoreRequest { ip: Some(format!("{a}/16")), ..plain(2) }).unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    println!("A -> B -> A in {:?}", start.elapsed());
    // Past the 250 ms after which the first swap used to remove A.
    std::thread::sleep(Duration::from_millis(600));
    let took = wait_addrs(&wire, &["169.254.1.2/16"], Duration::from_secs(3));
    assert!(took.is_ok(), "the guest's addresses: {took:?}; console:\n{}", c.console());
    let doc: Ready = http_at(&wire, a, "GET", "/ready", None).unwrap().json().unwrap();
    assert_eq!((doc.ip.as_deref(), doc.generation), (Some("169.254.1.2/16"), 2));
    assert!(!c.console().contains("restore:"), "{}", c.console());
    ns::poweroff(&wire, &mut c);
}

/// An answer under way when the address changes still leaves over the old address: a command of
/// 1.5 s started there answers after a restore to a new address, and the old address goes once
/// that connection closes. A connection held open longer does not keep the old address past its
/// bound (5 s).
#[test]
fn an_answer_under_way_leaves_over_the_old_address() {
    let Some((wire, mut c)) = boot("chinit.api=tcp") else { return };
    ns::wait_ready(&wire, &c, Duration::from_secs(10)).unwrap();
    let (a, b, d) = (ns::GUEST_IP, Ipv4Addr::new(169, 254, 7, 7), Ipv4Addr::new(169, 254, 8, 8));
    let body = exec_body("sleep 1.5; echo done");
    let slow = std::thread::scope(|s| {
        let slow = s.spawn(|| http_at(&wire, a, "POST", "/v1/exec", Some(body)));
        std::thread::sleep(Duration::from_millis(300));
        let r = restore_at(&wire, a, &RestoreRequest { ip: Some(format!("{b}/16")), ..plain(1) }).unwrap();
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        slow.join().unwrap()
    });
    let slow = slow.unwrap_or_else(|e| panic!("the command's answer never came: {e}; console:\n{}", c.console()));
    assert_eq!(slow.status, 200);
    assert_eq!(slow.json::<ExecResponse>().unwrap().stdout, "done\n");
    // That connection closed: the old address goes.
    let gone = wait_addrs(&wire, &["169.254.7.7/16"], Duration::from_secs(2));
    assert!(gone.is_ok(), "the guest's addresses: {gone:?}");

    // A command of 8 s on B, then a restore to D: B goes at its bound, not with the command.
    let body = exec_body("sleep 8");
    std::thread::scope(|s| {
        let _held = s.spawn(|| http_at(&wire, b, "POST", "/v1/exec", Some(body)));
        std::thread::sleep(Duration::from_millis(300));
        let r = restore_at(&wire, b, &RestoreRequest { ip: Some(format!("{d}/16")), ..plain(2) }).unwrap();
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let took = wait_addrs(&wire, &["169.254.8.8/16"], Duration::from_secs(8));
        println!("B with a connection open went {took:?} after the restore");
        let took = took.unwrap_or_else(|addrs| panic!("B still there: {addrs:?}"));
        assert!(took >= Duration::from_secs(4) && took <= Duration::from_millis(6500), "B went after {took:?}, not at its 5 s bound");
        c.signal(nix::sys::signal::Signal::SIGTERM).unwrap();
    });
    assert!(ns::is_poweroff(c.wait(Duration::from_secs(10)).unwrap()));
}

/// Every restore used to add its steps to `/ready` for good. Over 2 000 restores on one
/// connection, `/ready` keeps the boot's steps and the latest restore's (and counts the restores),
/// and neither its size nor chinit's memory grows.
#[test]
fn two_thousand_restores_keep_ready_and_memory_flat() {
    let Some((wire, mut c)) = boot("chinit.api=tcp") else { return };
    ns::wait_ready(&wire, &c, Duration::from_secs(10)).unwrap();
    // The boot's last step (the late mounts, after ready) done first.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ns::http(&wire, "GET", "/ready", None).unwrap().json::<Ready>().unwrap().steps.iter().any(|s| s.name == "mounts.late") {
        assert!(Instant::now() < deadline, "no mounts.late step within 10 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = c.pid;
    const N: u64 = 2000;
    // (restores, /ready bytes, steps, RSS KiB) along the way.
    let figures = ns::with_stream(&wire, move |mut s| {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut figures = Vec::new();
        for g in 1..=N {
            let req = RestoreRequest { hostname: Some(format!("copy-{g}")), ..plain(g) };
            let r = agent::client::request(&mut s, "POST", "/v1/restore", Some(&serde_json::to_vec(&req).unwrap())).unwrap();
            assert_eq!(r.status, 200, "restore {g}: {}", String::from_utf8_lossy(&r.body));
            if [1, 100, 500, 1000, 1500, N].contains(&g) {
                let r = agent::client::request(&mut s, "GET", "/ready", None).unwrap();
                let doc: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
                let steps = doc["steps"].as_array().map_or(0, Vec::len);
                assert_eq!(doc["generation"], g);
                figures.push((g, r.body.len(), steps, ns::rss_kib(pid).unwrap_or(0), doc["restores"].clone()));
            }
        }
        figures
    })
    .unwrap();
    for (g, bytes, steps, rss, restores) in &figures {
        println!("after {g:>4} restores: /ready {bytes} bytes, {steps} steps, restores {restores}, chinit RSS {rss} kB");
    }
    // The same steps and the same size give or take a few digits; from the 100th restore on, the
    // same memory give or take a few pages.
    let (first, warm, last) = (&figures[0], &figures[1], &figures[figures.len() - 1]);
    assert_eq!(last.2, first.2, "the steps are the boot's and the latest restore's only");
    assert!(last.1 <= first.1 + 64, "/ready grew from {} to {} bytes", first.1, last.1);
    assert!(last.3 <= warm.3 + 64, "chinit's RSS grew from {} kB (100 restores) to {} kB", warm.3, last.3);
    assert_eq!((first.4.as_u64(), last.4.as_u64()), (Some(1), Some(N)), "restores are counted");
    ns::poweroff(&wire, &mut c);
}

/// The rules a request must keep, each refused with 400 and nothing changed: a generation that
/// does not increase (or 0, or one no JSON reader holds exactly), entropy that is not hex digits
/// only, a hostname that is not RFC 1123 labels, an address that is the host's own (the gateway)
/// or no host's at all.
#[test]
fn restores_against_the_rules_are_refused() {
    let Some((wire, mut c)) = boot("chinit.api=tcp chinit.hostname=original chinit.gw=169.254.0.1") else { return };
    ns::wait_ready(&wire, &c, Duration::from_secs(10)).unwrap();
    let r = restore(&wire, &RestoreRequest { hostname: Some("copy-5".into()), ..plain(5) });
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let with_ip = |ip: &str| RestoreRequest { ip: Some(ip.into()), ..plain(6) };
    let with_host = |h: &str| RestoreRequest { hostname: Some(h.into()), ..plain(6) };
    let cases = [
        (plain(5), "generation"),
        (plain(3), "generation"),
        (plain(0), "generation"),
        (plain(u64::MAX), "generation"),
        (RestoreRequest { entropy: "+a".repeat(32), ..plain(6) }, "hex"),
        (RestoreRequest { entropy: format!(" {}", "ab".repeat(32)), ..plain(6) }, "hex"),
        (with_host("-"), "hostname"),
        (with_host(".."), "hostname"),
        (with_host("a..b"), "hostname"),
        (with_host("-copy"), "hostname"),
        (with_host("copy-"), "hostname"),
        (with_host("copy."), "hostname"),
        (with_ip("169.254.0.1/16"), "gateway"),
        (with_ip("0.0.0.0/16"), "ip"),
        (with_ip("169.254.255.255/16"), "ip"),
        (with_ip("224.0.0.1/16"), "ip"),
        (with_ip("127.0.0.1/8"), "ip"),
    ];
    for (req, want) in &cases {
        let r = restore(&wire, req);
        let body = String::from_utf8_lossy(&r.body);
        assert_eq!(r.status, 400, "{req:?}: {body}");
        assert!(body.contains(want), "{req:?}: {body}");
    }
    assert_eq!(sh(&wire, "hostname"), "copy-5\n");
    let doc: Ready = ns::http(&wire, "GET", "/ready", None).unwrap().json().unwrap();
    assert_eq!((doc.generation, doc.ip.as_deref()), (5, Some("169.254.1.2/16")));
    assert_eq!(guest_addrs(&wire), ["169.254.1.2/16"]);
    ns::poweroff(&wire, &mut c);
}

/// The host's own address is refused without `chinit.gw` too: the host that asks is a neighbour
/// the guest's ARP table knows. Refused with 400, the guest keeps its address and stays reachable.
#[test]
fn the_hosts_own_address_is_refused_without_a_gateway() {
    let Some((wire, mut c)) = boot("chinit.api=tcp") else { return };
    ns::wait_ready(&wire, &c, Duration::from_secs(10)).unwrap();
    let r = restore(&wire, &RestoreRequest { ip: Some("169.254.0.1/16".into()), ..plain(1) });
    let body = String::from_utf8_lossy(&r.body).into_owned();
    assert_eq!(r.status, 400, "{body}");
    assert!(body.contains("169.254.0.1 is a neighbour's"), "{body}");
    let doc: Ready = ns::http(&wire, "GET", "/ready", None).unwrap().json().unwrap();
    assert_eq!(doc.generation, 0, "nothing changed");
    assert_eq!(guest_addrs(&wire), [format!("{}/16", ns::GUEST_IP)]);
    ns::poweroff(&wire, &mut c);
}

/// Once a shutdown is under way a restore is refused like a command (503), not applied. A command
/// that ignores SIGTERM holds the shutdown in its grace period meanwhile.
#[test]
fn a_restore_during_shutdown_is_refused() {
    let Some((wire, mut c)) = boot("chinit.api=tcp chinit.hostname=original") else { return };
    ns::wait_ready(&wire, &c, Duration::from_secs(10)).unwrap();
    std::thread::scope(|s| {
        let _held = s.spawn(|| ns::http(&wire, "POST", "/v1/exec", Some(exec_body("trap '' TERM; exec sleep 5"))));
        std::thread::sleep(Duration::from_millis(300));
        let r = ns::http(&wire, "POST", "/v1/shutdown", None).unwrap();
        assert_eq!(r.status, 202);
        let r = restore(&wire, &RestoreRequest { hostname: Some("copy-1".into()), ..plain(1) });
        let body = String::from_utf8_lossy(&r.body).into_owned();
        assert_eq!(r.status, 503, "{body}");
        assert!(body.contains("shutting down"), "{body}");
        let r = ns::http(&wire, "POST", "/v1/exec", Some(exec_body("hostname"))).unwrap();
        assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
        assert!(ns::is_poweroff(c.wait(Duration::from_secs(10)).unwrap()));
    });
}

/// A restore to the same address with another prefix (and one to the same address and prefix)
/// changes the prefix, keeps serving, and says nothing false on the console (it used to print
/// `serve tcp ...: Address in use`).
#[test]
fn a_new_prefix_for_the_same_address_prints_no_false_error() {
    let Some((wire, mut c)) = boot("chinit.api=tcp") else { return };
    ns::wait_ready(&wire, &c, Duration::from_secs(10)).unwrap();
    let before = c.console();
    // /17 still holds the host (169.254.0.1).
    for g in [1, 2] {
        let r = restore(&wire, &RestoreRequest { ip: Some("169.254.1.2/17".into()), ..plain(g) });
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let doc: Ready = r.json().unwrap();
        assert_eq!(doc.ip.as_deref(), Some("169.254.1.2/17"));
        assert!(doc.steps.iter().all(|s| s.error.is_none()), "{:?}", doc.steps);
    }
    let took = wait_addrs(&wire, &["169.254.1.2/17"], Duration::from_secs(3));
    assert!(took.is_ok(), "the guest's addresses: {took:?}");
    std::thread::sleep(Duration::from_millis(300));
    let doc: Ready = ns::http(&wire, "GET", "/ready", None).unwrap().json().unwrap();
    assert_eq!((doc.ip.as_deref(), doc.generation), (Some("169.254.1.2/17"), 2));
    let console = c.console();
    let new = &console[before.len()..];
    assert!(!new.contains("restore") && !new.contains("in use"), "console after the restores:\n{new}");
    ns::poweroff(&wire, &mut c);
}
