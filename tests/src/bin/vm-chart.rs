//! The VM chart of docs/benchmarks.md from `host-probe bench --compare ... --json`: one bar per side,
//! the median of each phase stacked (kernel boot, then the init's steps up to ready).
//!
//! ```text
//! vm-chart BENCH.json OUT.svg [NAME_A NAME_B]
//! ```

use chinit_tests::chart;
use serde_json::Value;

/// The order steps run in, chinit's and the baseline's merged (host-probe lists rows in the order
/// they first appear in side A). Unknown steps go last, in row order.
const STEP_ORDER: &[&str] = &["mounts", "cmdline", "modules", "root", "mounts.extra", "hostname", "network", "python", "agent"];

/// The bars: per side, `kernel boot` then every `step *` row the side has, in [`STEP_ORDER`],
/// medians in µs. Steps after ready (`mounts.late`) are left out.
fn bars(bench: &Value, names: [&str; 2]) -> Result<Vec<chart::Bar>, String> {
    let rows = bench["rows"].as_array().ok_or("no \"rows\": give the output of host-probe bench --json")?;
    let mut out = Vec::new();
    for (side, name) in ["a", "b"].into_iter().zip(names) {
        let median = |row: &Value| row[side]["median_us"].as_u64();
        let mut segs = Vec::new();
        for row in rows {
            let figure = row["figure"].as_str().unwrap_or("");
            let label = match figure {
                "kernel boot" => "kernel boot",
                "step mounts.late" => continue,
                f => match f.strip_prefix("step ") {
                    Some(step) => step,
                    None => continue,
                },
            };
            if let Some(us) = median(row) {
                segs.push((label.to_string(), us));
            }
        }
        segs.sort_by_key(|(label, _)| match label.as_str() {
            "kernel boot" => 0,
            l => 1 + STEP_ORDER.iter().position(|x| *x == l).unwrap_or(STEP_ORDER.len()),
        });
        if !segs.is_empty() {
            out.push((name.to_string(), segs));
        }
    }
    if out.is_empty() {
        return Err("no \"kernel boot\" or \"step\" rows with medians".into());
    }
    Ok(out)
}

fn title(bench: &Value) -> String {
    let accel = bench["accel"].as_str().unwrap_or("?");
    let vmm = bench["vmm"].as_str().unwrap_or("?");
    let n = bench["n"].as_u64().unwrap_or(0);
    let kvm = if accel == "tcg" { " (emulation, no KVM)" } else { "" };
    format!("kernel start → ready in the guest, {vmm} {accel}{kvm}: medians of each phase, {n} interleaved boots each")
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() != 2 && args.len() != 4 {
        eprintln!("usage: vm-chart BENCH.json OUT.svg [NAME_A NAME_B]");
        std::process::exit(2);
    }
    let names = if args.len() == 4 { [args[2].as_str(), args[3].as_str()] } else { ["chinit", "baseline"] };
    let run = || -> Result<(), String> {
        let text = std::fs::read_to_string(&args[0]).map_err(|e| format!("read {}: {e}", args[0]))?;
        let bench: Value = serde_json::from_str(&text).map_err(|e| format!("{}: not JSON: {e}", args[0]))?;
        let svg = chart::stacked_bars(&title(&bench), &bars(&bench, names)?);
        std::fs::write(&args[1], svg).map_err(|e| format!("write {}: {e}", args[1]))
    };
    if let Err(e) = run() {
        eprintln!("vm-chart: {e}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_from_host_probe_rows() {
        let bench = serde_json::json!({"vmm": "qemu", "accel": "tcg", "n": 10, "rows": [
            {"figure": "kernel boot", "a": {"median_us": 500_000}, "b": {"median_us": 560_000}},
            {"figure": "init", "a": {"median_us": 120_000}, "b": {"median_us": 2_700_000}},
            {"figure": "step mounts", "a": {"median_us": 4_000}, "b": {"median_us": 60_000}},
            {"figure": "step agent", "a": {"median_us": 30_000}, "b": {"median_us": 700_000}},
            {"figure": "step mounts.late", "a": {"median_us": 7_000}},
            {"figure": "step python", "b": {"median_us": 1_600_000}},
        ]});
        let b = bars(&bench, ["chinit", "baseline"]).unwrap();
        let seg = |n: &str, us| (n.to_string(), us);
        assert_eq!(b[0], ("chinit".to_string(), vec![seg("kernel boot", 500_000), seg("mounts", 4_000), seg("agent", 30_000)]));
        // python runs before agent, though host-probe lists it last.
        assert_eq!(b[1].1.iter().map(|s| s.0.as_str()).collect::<Vec<_>>(), ["kernel boot", "mounts", "python", "agent"]);
        assert!(title(&bench).contains("qemu tcg (emulation, no KVM)"));
        assert!(bars(&serde_json::json!({"rows": []}), ["a", "b"]).is_err());
        assert!(bars(&serde_json::json!({}), ["a", "b"]).is_err());
    }
}
