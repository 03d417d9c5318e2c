//! Native benchmark: chinit as PID 1 of fresh namespaces, N times; how long from the clone (exec) to
//! the host's first 200 from `/ready` over the veth, and where that time goes. With
//! `--compare-baseline`, the baseline of docs/benchmarks.md (busybox shell init + Python agent) runs
//! too, interleaved A B A B in the same process, and each figure gets the B/A ratio of medians.
//!
//! With `--no-static-neighbour` the host end has no neighbour entry for the guest, as a bridge, an
//! orchestrator's veth or a user's own poller has none: the host polls from the moment the init is
//! started (before its address is up), so its first ARP request goes unanswered and the guest's
//! announcement is what answers it.
//!
//! With `--parallel N`, N chinits start at once, each PID 1 of its own fresh namespaces: exec →
//! first 200 and each chinit's RSS at ready (all N alive), min / median / p95 / max across the N.
//!
//! ```text
//! ns-bench [-n N] [--warmup W] [--json] [--cmdline "EXTRA chinit.* KEYS"] [--compare-baseline] [--no-static-neighbour] [--svg FILE]
//! ns-bench --parallel N [--cmdline "..."] [--no-static-neighbour]
//! ```

use std::path::PathBuf;
use std::time::Duration;

use chinit_tests::ns::{self, Chinit, Neighbour, Wire};
use nix::sys::signal::Signal;
use nix::sys::wait::WaitStatus;

const USAGE: &str = "usage: ns-bench [-n N] [--warmup W] [--json] [--cmdline \"EXTRA chinit.* KEYS\"] [--compare-baseline] [--no-static-neighbour] [--svg FILE]\n       ns-bench --parallel N [--cmdline \"...\"] [--no-static-neighbour]";

struct Args {
    n: usize,
    warmup: usize,
    json: bool,
    extra: String,
    compare: bool,
    neighbour: Neighbour,
    svg: Option<PathBuf>,
    parallel: Option<usize>,
}

fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Args, String> {
    let mut a = Args {
        n: 50,
        warmup: 3,
        json: false,
        extra: String::new(),
        compare: false,
        neighbour: Neighbour::Static,
        svg: None,
        parallel: None,
    };
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "-n" => a.n = it.next().and_then(|v| v.parse().ok()).filter(|n| *n > 0).ok_or("-n needs a positive number")?,
            "--warmup" => a.warmup = it.next().and_then(|v| v.parse().ok()).ok_or("--warmup needs a number")?,
            "--json" => a.json = true,
            "--cmdline" => a.extra = it.next().ok_or("--cmdline needs a value")?,
            "--compare-baseline" => a.compare = true,
            "--no-static-neighbour" => a.neighbour = Neighbour::Learned,
            "--svg" => a.svg = Some(it.next().ok_or("--svg needs a file name")?.into()),
            "--parallel" => {
                a.parallel = Some(it.next().and_then(|v| v.parse().ok()).filter(|n| *n > 0).ok_or("--parallel needs a positive number")?)
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}; see --help")),
        }
    }
    Ok(a)
}

/// What one side runs.
enum Init {
    Chinit(PathBuf),
    /// busybox, init.sh
    Baseline(PathBuf, PathBuf),
}

impl Init {
    fn name(&self) -> &'static str {
        match self {
            Init::Chinit(_) => "chinit",
            Init::Baseline(..) => "baseline",
        }
    }
}

/// One run's figures, µs.
struct Sample {
    /// execve → the host has the 200.
    total: u64,
    /// Just before the clone (new namespaces, process) → the host has the 200.
    clone_total: u64,
    exec_to_init: u64,
    init_to_ready: u64,
    ready_to_host: u64,
    /// A GET /ready on a fresh connection once ready: the floor under `ready_to_host`.
    rtt: u64,
    steps: Vec<(String, u64)>,
}

fn one(init: &Init, extra: &str, neighbour: Neighbour) -> Result<Sample, String> {
    let wire = Wire::with_neighbour(neighbour)?;
    let cmdline = format!("{} {extra}", ns::base_cmdline());
    let mut c = match init {
        Init::Chinit(bin) => Chinit::start(bin, &wire, &cmdline)?,
        Init::Baseline(busybox, script) => Chinit::start_program(busybox, &ns::baseline_args(script, &cmdline), &wire)?,
    };
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
    let clean = match init {
        Init::Chinit(_) => ns::is_poweroff(st),
        Init::Baseline(..) => matches!(st, WaitStatus::Exited(_, 0)),
    };
    if !clean {
        return Err(format!("{} did not end cleanly on SIGTERM: {st:?}\n{}", init.name(), c.console()));
    }
    let r = &first.ready;
    Ok(Sample {
        total: first.exec_to_200_us,
        clone_total: first.host_us,
        exec_to_init: r.init_start_us.saturating_sub(c.exec_us),
        init_to_ready: r.init_to_ready_us(),
        ready_to_host: first.seen_us.saturating_sub(r.ready_us),
        rtt,
        steps: r.steps.iter().filter(|s| s.end_us <= r.ready_us).map(|s| (s.name.clone(), s.duration_us())).collect(),
    })
}

fn pct(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// min, median, p95, max.
fn stats(mut v: Vec<u64>) -> Option<[u64; 4]> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    Some([pct(&v, 0.0), pct(&v, 0.5), pct(&v, 0.95), pct(&v, 1.0)])
}

/// One figure of the table: its name and each side's statistics.
struct Row {
    name: String,
    a: Option<[u64; 4]>,
    b: Option<[u64; 4]>,
}

impl Row {
    fn ratio(&self) -> Option<f64> {
        match (self.a, self.b) {
            (Some(a), Some(b)) if a[1] > 0 => Some(b[1] as f64 / a[1] as f64),
            _ => None,
        }
    }
}

/// Step names in the order they first appear (steps that failed to run in some runs still line up by name).
fn step_names(samples: &[Sample]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for s in samples {
        for (n, _) in &s.steps {
            if !names.contains(n) {
                names.push(n.clone());
            }
        }
    }
    names
}

fn step_stats(samples: &[Sample], name: &str) -> Option<[u64; 4]> {
    stats(samples.iter().filter_map(|s| s.steps.iter().find(|x| x.0 == name).map(|x| x.1)).collect())
}

fn rows(a: &[Sample], b: &[Sample]) -> Vec<Row> {
    let fig = |f: fn(&Sample) -> u64, v: &[Sample]| stats(v.iter().map(f).collect());
    let mut out = vec![
        Row { name: "exec → first 200 (host)".into(), a: fig(|s| s.total, a), b: fig(|s| s.total, b) },
        Row { name: "  (clone → first 200)".into(), a: fig(|s| s.clone_total, a), b: fig(|s| s.clone_total, b) },
        Row { name: "exec → init's first line".into(), a: fig(|s| s.exec_to_init, a), b: fig(|s| s.exec_to_init, b) },
        Row { name: "init → ready".into(), a: fig(|s| s.init_to_ready, a), b: fig(|s| s.init_to_ready, b) },
        Row { name: "ready → host has 200".into(), a: fig(|s| s.ready_to_host, a), b: fig(|s| s.ready_to_host, b) },
        Row { name: "  (one GET /ready, once ready)".into(), a: fig(|s| s.rtt, a), b: fig(|s| s.rtt, b) },
    ];
    let names = host_probe::bench::merge_order(&step_names(a), &step_names(b));
    for n in names {
        out.push(Row { name: format!("  step {n}"), a: step_stats(a, &n), b: step_stats(b, &n) });
    }
    out
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg").map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" ")).unwrap_or_default()
}

/// The run whose exec → first 200 is the median (the upper one of an even count, as [`pct`]).
fn median_run(v: &[Sample]) -> Option<&Sample> {
    let mut by_total: Vec<&Sample> = v.iter().collect();
    by_total.sort_by_key(|s| s.total);
    let i = ((by_total.len().checked_sub(1)?) as f64 * 0.5).round() as usize;
    by_total.get(i).copied()
}

/// The chart: one horizontal bar per side, the phases of its median run stacked from exec to the
/// host's first 200, on one linear scale, so the two lengths compare directly.
fn svg(a: &[Sample], b: &[Sample], title: &str) -> String {
    let bars: Vec<chinit_tests::chart::Bar> = [("chinit", a), ("baseline", b)]
        .into_iter()
        .filter_map(|(name, v)| Some((name, median_run(v)?)))
        .map(|(name, run)| {
            let mut segs = vec![("exec → init".to_string(), run.exec_to_init)];
            segs.extend(run.steps.iter().cloned());
            let used: u64 = segs.iter().map(|s| s.1).sum();
            segs.push(("rest → host's 200".to_string(), run.total.saturating_sub(used)));
            (name.to_string(), segs)
        })
        .collect();
    chinit_tests::chart::stacked_bars(title, &bars)
}

/// ns-bench's exit codes (0: the table was printed).
#[derive(Debug, Clone, Copy)]
enum Exit {
    /// A run failed: the namespaces, chinit or the baseline.
    Failed = 1,
    /// Bad arguments, or this host cannot make namespaces.
    Usage = 2,
}

/// One of N chinits started at once: exec → first 200, and its RSS at ready (KiB).
fn parallel(bin: &std::path::Path, n: usize, extra: &str, neighbour: Neighbour) -> Vec<Result<(u64, u64), String>> {
    let all_ready = std::sync::Barrier::new(n);
    std::thread::scope(|s| {
        let threads: Vec<_> = (0..n)
            .map(|_| {
                s.spawn(|| {
                    let up = (|| {
                        let wire = Wire::with_neighbour(neighbour)?;
                        let c = Chinit::start(bin, &wire, &format!("{} {extra}", ns::base_cmdline()))?;
                        let first = ns::wait_ready(&wire, &c, Duration::from_secs(60))?;
                        let status = std::fs::read_to_string(format!("/proc/{}/status", c.pid)).unwrap_or_default();
                        let rss =
                            status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next()?.parse().ok());
                        Ok::<_, String>((wire, c, first.exec_to_200_us, rss.unwrap_or(0)))
                    })();
                    // Every instance stays up until all are ready (or failed): they are measured together.
                    all_ready.wait();
                    let (_wire, mut c, total, rss) = up?;
                    c.signal(Signal::SIGTERM)?;
                    c.wait(Duration::from_secs(30))?;
                    Ok((total, rss))
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap_or_else(|_| Err("thread panicked".into()))).collect()
    })
}

/// `{n, ready, failures, exec_to_200_us: {min, median, p95, max}, rss_kib: {...}, load}`.
fn parallel_json(n: usize, results: &[Result<(u64, u64), String>], load: &str) -> serde_json::Value {
    let ok: Vec<(u64, u64)> = results.iter().filter_map(|r| r.as_ref().ok().copied()).collect();
    let s = |v: Vec<u64>| stats(v).map(|[min, median, p95, max]| serde_json::json!({"min": min, "median": median, "p95": p95, "max": max}));
    serde_json::json!({
        "n": n,
        "ready": ok.len(),
        "failures": results.iter().filter_map(|r| r.as_ref().err()).collect::<Vec<_>>(),
        "exec_to_200_us": s(ok.iter().map(|r| r.0).collect()),
        "rss_kib": s(ok.iter().map(|r| r.1).collect()),
        "load": load,
    })
}

fn parallel_text(n: usize, results: &[Result<(u64, u64), String>], load: &str) -> String {
    let ok: Vec<(u64, u64)> = results.iter().filter_map(|r| r.as_ref().ok().copied()).collect();
    let mut o = format!("ns-bench: {n} chinits at once, each PID 1 of fresh namespaces (load {load}): {} of {n} ready\n", ok.len());
    for (i, e) in results.iter().enumerate().filter_map(|(i, r)| r.as_ref().err().map(|e| (i, e))) {
        o.push_str(&format!("  failed: instance {}: {e}\n", i + 1));
    }
    let row = |name: &str, v: Vec<u64>, unit: &str| match stats(v) {
        Some([min, med, p95, max]) => format!("  {name:<30} {min:>9} {med:>9} {p95:>9} {max:>9}  {unit}\n"),
        None => format!("  {name:<30} -\n"),
    };
    o.push_str(&format!("  {:<30} {:>9} {:>9} {:>9} {:>9}\n", "", "min", "median", "p95", "max"));
    o.push_str(&row("exec -> first 200", ok.iter().map(|r| r.0).collect(), "µs"));
    o.push_str(&row("RSS at ready, per chinit", ok.iter().map(|r| r.1).collect(), "KiB"));
    o
}

fn fail(e: impl std::fmt::Display, code: Exit) -> ! {
    eprintln!("ns-bench: {e}");
    std::process::exit(code as i32)
}

fn main() {
    let args = parse_args(std::env::args().skip(1)).unwrap_or_else(|e| fail(e, Exit::Usage));
    ns::can_make_namespaces().unwrap_or_else(|e| fail(e, Exit::Usage));
    let mut sides = vec![Init::Chinit(ns::chinit_bin().unwrap_or_else(|e| fail(e, Exit::Usage)))];
    if args.compare {
        let (busybox, script) = ns::baseline_init().unwrap_or_else(|e| fail(e, Exit::Usage));
        sides.push(Init::Baseline(busybox, script));
    }
    if let Some(n) = args.parallel {
        let bin = ns::chinit_bin().unwrap_or_else(|e| fail(e, Exit::Usage));
        let load_before = load();
        let results = parallel(&bin, n, &args.extra, args.neighbour);
        if args.json {
            println!("{}", parallel_json(n, &results, &load_before));
        } else {
            print!("{}", parallel_text(n, &results, &load_before));
        }
        if results.iter().any(Result::is_err) {
            std::process::exit(Exit::Failed as i32);
        }
        return;
    }
    let load_before = load();
    let mut samples: Vec<Vec<Sample>> = sides.iter().map(|_| Vec::new()).collect();
    let total = args.warmup + args.n;
    for i in 0..total {
        // A B A B: slow drift of the host hits both sides alike.
        for (k, side) in sides.iter().enumerate() {
            match one(side, &args.extra, args.neighbour) {
                Ok(s) if i >= args.warmup => samples[k].push(s),
                Ok(_) => {}
                Err(e) => fail(format!("run {} ({}): {e}", i + 1, side.name()), Exit::Failed),
            }
        }
        if !args.json {
            eprint!("\rns-bench: {}/{total}", i + 1);
        }
    }
    if !args.json {
        eprintln!();
    }
    let load_after = load();
    let empty = Vec::new();
    let b = samples.get(1).unwrap_or(&empty);
    let table = rows(&samples[0], b);
    let neighbour = match args.neighbour {
        Neighbour::Static => "",
        Neighbour::Learned => ", no static neighbour entry",
    };
    let title = if args.compare {
        format!("exec → first 200 in fresh namespaces{neighbour}: the median of {} interleaved runs each (load {load_before})", args.n)
    } else {
        format!("chinit: exec → first 200 in fresh namespaces{neighbour}: the median of {} runs (load {load_before})", args.n)
    };
    if let Some(path) = &args.svg {
        std::fs::write(path, svg(&samples[0], b, &title)).unwrap_or_else(|e| fail(format!("write {}: {e}", path.display()), Exit::Failed));
    }
    if args.json {
        let side = |s: Option<[u64; 4]>| {
            s.map(|[min, med, p95, max]| serde_json::json!({"min_us": min, "median_us": med, "p95_us": p95, "max_us": max}))
        };
        let obj: Vec<serde_json::Value> = table
            .iter()
            .map(|r| {
                let mut v = serde_json::json!({"metric": r.name.trim(), "chinit": side(r.a)});
                if args.compare {
                    v["baseline"] = serde_json::json!(side(r.b));
                    v["ratio"] = serde_json::json!(r.ratio());
                }
                v
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({"runs": args.n, "warmup": args.warmup, "static_neighbour": args.neighbour == Neighbour::Static,
                "load_before": load_before, "load_after": load_after, "metrics": obj})
        );
        return;
    }
    print!("{}", text(&args, &table, &load_before, &load_after));
}

fn text(args: &Args, table: &[Row], load_before: &str, load_after: &str) -> String {
    let cell = |s: Option<[u64; 4]>, i: usize| s.map(|s| s[i].to_string()).unwrap_or_else(|| "-".into());
    let mut o = String::new();
    let neighbour = match args.neighbour {
        Neighbour::Static => "static neighbour entry on the host",
        Neighbour::Learned => "no neighbour entry on the host (learned by ARP)",
    };
    if !args.compare {
        o += &format!(
            "chinit in fresh namespaces, {neighbour}, {} runs ({} warm-up), µs; load {load_before} → {load_after}\n",
            args.n, args.warmup
        );
        o += &format!("{:<32} {:>8} {:>8} {:>8} {:>8}\n", "", "min", "median", "p95", "max");
        for r in table {
            o += &format!("{:<32} {:>8} {:>8} {:>8} {:>8}\n", r.name, cell(r.a, 0), cell(r.a, 1), cell(r.a, 2), cell(r.a, 3));
        }
        return o;
    }
    o += &format!(
        "A = chinit, B = baseline (busybox sh + python3 http.server), fresh namespaces, {neighbour}, {} runs each ({} warm-up), interleaved A B A B, µs; load {load_before} → {load_after}\n",
        args.n, args.warmup
    );
    o += &format!(
        "{:<32} {:>8} {:>8} {:>8}   {:>8} {:>8} {:>8}   {:>7}\n",
        "", "A min", "A median", "A p95", "B min", "B median", "B p95", "B/A"
    );
    for r in table {
        let ratio = r.ratio().map(|x| format!("{x:.1}×")).unwrap_or_else(|| "-".into());
        o += &format!(
            "{:<32} {:>8} {:>8} {:>8}   {:>8} {:>8} {:>8}   {:>7}\n",
            r.name,
            cell(r.a, 0),
            cell(r.a, 1),
            cell(r.a, 2),
            cell(r.b, 0),
            cell(r.b, 1),
            cell(r.b, 2),
            ratio
        );
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn sample(total: u64, steps: &[(&str, u64)]) -> Sample {
        Sample {
            total,
            clone_total: total + 100,
            exec_to_init: 10,
            init_to_ready: total - 30,
            ready_to_host: 20,
            rtt: 5,
            steps: steps.iter().map(|(n, d)| (n.to_string(), *d)).collect(),
        }
    }

    #[test]
    fn args_table() {
        let p = |v: &[&str]| parse_args(v.iter().map(|s| s.to_string()));
        let a = p(&["-n", "7", "--compare-baseline", "--svg", "x.svg"]).unwrap();
        assert_eq!((a.n, a.compare, a.svg.as_deref()), (7, true, Some(Path::new("x.svg"))));
        assert!(!p(&[]).unwrap().compare);
        assert_eq!((p(&[]).unwrap().neighbour, p(&["--no-static-neighbour"]).unwrap().neighbour), (Neighbour::Static, Neighbour::Learned));
        assert!(p(&["-n", "0"]).is_err());
        assert!(p(&["--svg"]).is_err());
        assert!(p(&["--bogus"]).is_err());
    }

    #[test]
    fn rows_pair_figures_and_steps_by_name_with_ratios() {
        let a = [sample(1000, &[("mounts", 100), ("network", 200)]), sample(1200, &[("mounts", 120), ("network", 220)])];
        let b = [sample(40_000, &[("mounts", 900), ("python", 30_000)])];
        let r = rows(&a, &b);
        assert_eq!(r[0].a, Some([1000, 1200, 1200, 1200]), "median rounds up between two");
        assert_eq!(r[0].ratio().map(|x| (x * 10.0).round() / 10.0), Some(33.3));
        let names: Vec<&str> = r.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(&names[6..], ["  step mounts", "  step network", "  step python"]);
        let v = |x: &[&str]| x.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let m = host_probe::bench::merge_order(
            &v(&["mounts", "cmdline", "hostname", "network", "agent"]),
            &v(&["mounts", "cmdline", "network", "python", "agent"]),
        );
        assert_eq!(m, v(&["mounts", "cmdline", "hostname", "network", "python", "agent"]));
        assert_eq!((r[7].b, r[8].a), (None, None), "a step one side lacks stays empty on that side");
        assert_eq!(r[8].ratio(), None);
    }

    #[test]
    fn svg_bars_are_proportional_and_sum_to_the_total() {
        let a = [sample(1000, &[("mounts", 100), ("network", 200)])];
        let b = [sample(40_000, &[("mounts", 900), ("python", 30_000)])];
        let s = svg(&a, &b, "t <1>");
        assert!(s.starts_with("<svg") && s.trim_end().ends_with("</svg>"));
        assert!(s.contains("t &lt;1&gt;"));
        // One scale: the baseline's 40 ms bar is 620 px, chinit's 1 ms bar 15.5 px, segments included.
        let widths: f64 = s
            .lines()
            .filter(|l| l.contains("<title>"))
            .map(|l| l.split("width=\"").nth(1).unwrap().split('"').next().unwrap().parse::<f64>().unwrap())
            .sum();
        assert!((widths - (620.0 + 15.5)).abs() < 0.05, "{widths}");
        assert!(s.contains("<title>python 30.00 ms</title>"));
        assert!(s.contains(">40.00 ms</text>") && s.contains(">1.00 ms</text>"));
    }
}
