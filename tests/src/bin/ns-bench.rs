//! Native benchmark: chinit as PID 1 of fresh namespaces, N times; how long from the clone (exec) to
//! the host's first 200 from `/ready` over the veth, and where that time goes.
//!
//! ```text
//! ns-bench [-n N] [--warmup W] [--json] [--cmdline "EXTRA chinit.* KEYS"]
//! ```

use std::time::Duration;

use chinit_tests::ns::{self, Chinit, Wire};
use nix::sys::signal::Signal;

struct Args {
    n: usize,
    warmup: usize,
    json: bool,
    extra: String,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args { n: 50, warmup: 3, json: false, extra: String::new() };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "-n" => a.n = it.next().and_then(|v| v.parse().ok()).filter(|n| *n > 0).ok_or("-n needs a positive number")?,
            "--warmup" => a.warmup = it.next().and_then(|v| v.parse().ok()).ok_or("--warmup needs a number")?,
            "--json" => a.json = true,
            "--cmdline" => a.extra = it.next().ok_or("--cmdline needs a value")?,
            "-h" | "--help" => {
                println!("usage: ns-bench [-n N] [--warmup W] [--json] [--cmdline \"EXTRA chinit.* KEYS\"]");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}; see --help")),
        }
    }
    Ok(a)
}

/// One run's figures, µs.
struct Sample {
    total: u64,
    exec_to_init: u64,
    init_to_ready: u64,
    ready_to_host: u64,
    /// A GET /ready on a fresh connection once ready: the floor under `ready_to_host`.
    rtt: u64,
    steps: Vec<(String, u64)>,
}

fn one(bin: &std::path::Path, extra: &str) -> Result<Sample, String> {
    let wire = Wire::new()?;
    let mut c = Chinit::start(bin, &wire, &format!("chinit.ip=169.254.1.2/16 chinit.vsock_port=off {extra}"))?;
    let first = ns::wait_ready(&wire, &c, Duration::from_secs(10))?;
    let rtt = wire.host.run(|| {
        let start = std::time::Instant::now();
        let mut s = std::net::TcpStream::connect((ns::GUEST_IP, ns::PORT)).map_err(|e| e.to_string())?;
        let _ = s.set_nodelay(true);
        agent::client::request(&mut s, "GET", "/ready", None).map_err(|e| e.to_string())?;
        Ok::<u64, String>(start.elapsed().as_micros() as u64)
    })??;
    c.signal(Signal::SIGTERM)?;
    let st = c.wait(Duration::from_secs(10))?;
    if !ns::is_poweroff(st) {
        return Err(format!("chinit did not power off cleanly: {st:?}\n{}", c.console()));
    }
    let r = &first.ready;
    Ok(Sample {
        total: first.host_us,
        exec_to_init: r.init_start_us.saturating_sub(c.spawned_us),
        init_to_ready: r.init_to_ready_us(),
        ready_to_host: first.seen_us.saturating_sub(r.ready_us),
        rtt,
        steps: r.steps.iter().map(|s| (s.name.clone(), s.duration_us())).collect(),
    })
}

fn pct(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn stats(mut v: Vec<u64>) -> [u64; 4] {
    v.sort_unstable();
    [pct(&v, 0.0), pct(&v, 0.5), pct(&v, 0.95), pct(&v, 1.0)]
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("ns-bench: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = ns::can_make_namespaces() {
        eprintln!("ns-bench: {e}");
        std::process::exit(2);
    }
    let bin = match ns::chinit_bin() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("ns-bench: {e}");
            std::process::exit(2);
        }
    };
    let mut samples = Vec::new();
    for i in 0..args.warmup + args.n {
        match one(&bin, &args.extra) {
            Ok(s) if i >= args.warmup => samples.push(s),
            Ok(_) => {}
            Err(e) => {
                eprintln!("ns-bench: run {}: {e}", i + 1);
                std::process::exit(1);
            }
        }
        if !args.json {
            eprint!("\rns-bench: {}/{}", i + 1, args.warmup + args.n);
        }
    }
    if !args.json {
        eprintln!();
    }
    let mut rows: Vec<(String, [u64; 4])> = vec![
        ("exec → first 200 (host)".into(), stats(samples.iter().map(|s| s.total).collect())),
        ("exec → chinit main".into(), stats(samples.iter().map(|s| s.exec_to_init).collect())),
        ("chinit start → ready".into(), stats(samples.iter().map(|s| s.init_to_ready).collect())),
        ("ready → host has 200".into(), stats(samples.iter().map(|s| s.ready_to_host).collect())),
        ("  (one GET /ready, ready VM)".into(), stats(samples.iter().map(|s| s.rtt).collect())),
    ];
    if let Some(first) = samples.first() {
        for (k, (name, _)) in first.steps.iter().enumerate() {
            let v = samples.iter().filter_map(|s| s.steps.get(k).map(|x| x.1)).collect();
            rows.push((format!("  step {name}"), stats(v)));
        }
    }
    if args.json {
        let obj: Vec<serde_json::Value> = rows
            .iter()
            .map(|(name, [min, med, p95, max])| serde_json::json!({"metric": name.trim(), "min_us": min, "median_us": med, "p95_us": p95, "max_us": max}))
            .collect();
        println!("{}", serde_json::json!({"runs": samples.len(), "metrics": obj}));
        return;
    }
    println!("chinit in fresh namespaces, {} runs ({} warm-up), µs", samples.len(), args.warmup);
    println!("{:<28} {:>8} {:>8} {:>8} {:>8}", "", "min", "median", "p95", "max");
    for (name, [min, med, p95, max]) in rows {
        println!("{name:<28} {min:>8} {med:>8} {p95:>8} {max:>8}");
    }
}
