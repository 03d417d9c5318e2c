//! Native benchmark of chinit's restore handling (`POST /v1/restore`): chinit as PID 1 of fresh
//! namespaces with `chinit.api=tcp`, then N restore requests from the host end of the veth, each
//! with fresh entropy and a new hostname, and with `--address` a new address each time (the swap,
//! the neighbour flush and the announcement). Reports the host's round trip and the guest's restore
//! steps (CLOCK_BOOTTIME), min / median / p95 / max in µs.
//!
//! ```text
//! restore-bench [-n N] [--address]
//! ```

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use agent::proto::{Ready, RestoreRequest};
use chinit_tests::ns;

const USAGE: &str = "usage: restore-bench [-n N] [--address]";

fn entropy() -> String {
    let mut buf = [0u8; 32];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut f, &mut buf);
    }
    buf.iter().map(|x| format!("{x:02x}")).collect()
}

/// One restore over TCP to `at`; the round trip in µs and the answer.
fn restore(wire: &ns::Wire, at: Ipv4Addr, req: RestoreRequest) -> Result<(u64, Ready), String> {
    wire.host.run(move || {
        let body = serde_json::to_vec(&req).map_err(|e| e.to_string())?;
        let start = Instant::now();
        let mut s = TcpStream::connect_timeout(&SocketAddr::from((at, ns::PORT)), Duration::from_secs(2))
            .map_err(|e| format!("connect {at}: {e}"))?;
        let _ = s.set_nodelay(true);
        let r = agent::client::request(&mut s, "POST", "/v1/restore", Some(&body)).map_err(|e| e.to_string())?;
        let rtt = start.elapsed().as_micros() as u64;
        if r.status != 200 {
            return Err(format!("{} {}", r.status, String::from_utf8_lossy(&r.body)));
        }
        Ok((rtt, r.json::<Ready>().map_err(|e| e.to_string())?))
    })?
}

fn stats(mut v: Vec<u64>) -> String {
    if v.is_empty() {
        return "-".into();
    }
    v.sort_unstable();
    let at = |p: usize| v[((p * v.len()).div_ceil(100).max(1) - 1).min(v.len() - 1)];
    format!("{:>8} {:>8} {:>8} {:>8}", v[0], at(50), at(95), v[v.len() - 1])
}

fn main() {
    let mut n = 50usize;
    let mut address = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "-n" => n = args.next().and_then(|v| v.parse().ok()).filter(|n| *n > 0).unwrap_or_else(|| fail("-n needs a positive number")),
            "--address" => address = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return;
            }
            other => fail(&format!("unknown argument {other:?}; {USAGE}")),
        }
    }
    let Some((wire, mut c)) = ns::boot("chinit.api=tcp") else { fail("cannot make namespaces here") };
    if let Err(e) = ns::wait_ready(&wire, &c, Duration::from_secs(10)) {
        fail(&e);
    }
    let mut at = ns::GUEST_IP;
    let (mut rtts, mut guest, mut steps) = (Vec::new(), Vec::new(), std::collections::BTreeMap::<String, Vec<u64>>::new());
    for i in 0..n {
        // Each copy a new address, never one used before (an old one goes once no connection to it is open).
        let ip = address.then(|| Ipv4Addr::new(169, 254, 20 + (i / 250) as u8, 1 + (i % 250) as u8));
        let req = RestoreRequest {
            generation: i as u64 + 1,
            entropy: entropy(),
            hostname: Some(format!("copy-{i}")),
            ip: ip.map(|ip| format!("{ip}/16")),
            ..RestoreRequest::default()
        };
        let (rtt, doc) = restore(&wire, at, req).unwrap_or_else(|e| fail(&format!("restore {}: {e}\n{}", i + 1, c.console())));
        at = ip.unwrap_or(at);
        rtts.push(rtt);
        // The steps of this restore: from its entropy step (every restore's first) on.
        let first = doc.steps.iter().rposition(|s| s.name == "restore.entropy").unwrap_or(doc.steps.len());
        let mine: Vec<_> = doc.steps[first..].iter().filter(|s| s.name.starts_with("restore.")).collect();
        let start = mine.iter().map(|s| s.start_us).min().unwrap_or(0);
        let end = mine.iter().map(|s| s.end_us).max().unwrap_or(0);
        guest.push(end.saturating_sub(start));
        for s in mine {
            steps.entry(s.name.clone()).or_default().push(s.duration_us());
        }
        if address {
            // Let the old address go (its connection closed) before the next swap.
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    println!("restore-bench: {n} restores of chinit in namespaces over TCP{}", if address { ", each with a new address" } else { "" });
    println!("  µs                                  min   median      p95      max");
    println!("  {:<32} {}", "host round trip (POST -> 200)", stats(rtts));
    println!("  {:<32} {}", "guest restore steps, in all", stats(guest));
    for (name, v) in steps {
        println!("  {:<32} {}", name, stats(v));
    }
    let _ = c.signal(nix::sys::signal::Signal::SIGTERM);
    let _ = c.wait(Duration::from_secs(10));
}

fn fail(msg: &str) -> ! {
    eprintln!("restore-bench: {msg}");
    std::process::exit(1)
}
