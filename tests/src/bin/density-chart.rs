//! The density chart of docs/benchmarks.md: ready latency (median, and p95) and memory per instance
//! against N, from the JSON of `host-probe bench --parallel N --json`, `host-probe bench --restore
//! DIR --clones N --json` and `ns-bench --parallel N --json`.
//!
//! ```text
//! density-chart OUT.svg SERIES=FILE.json [SERIES=FILE.json ...]
//! ```
//!
//! Rows are grouped by series, in the order given; each row is one file (one N).

use serde_json::Value;

/// One row: series, N, ready latency median and p95 (µs), memory per instance (KiB, median).
struct Row {
    series: String,
    n: u64,
    median_us: u64,
    p95_us: u64,
    memory_kib: Option<u64>,
    memory_what: &'static str,
}

fn row(series: &str, v: &Value) -> Result<Row, String> {
    let n = v["n"].as_u64().ok_or("no \"n\": give host-probe bench --parallel/--clones --json or ns-bench --parallel --json")?;
    // ns-bench --parallel --json
    if let Some(t) = v.get("exec_to_200_us").filter(|t| !t.is_null()) {
        return Ok(Row {
            series: series.into(),
            n,
            median_us: t["median"].as_u64().unwrap_or(0),
            p95_us: t["p95"].as_u64().unwrap_or(0),
            memory_kib: v["rss_kib"]["median"].as_u64(),
            memory_what: "RSS of chinit",
        });
    }
    // host-probe bench --parallel / --clones --json: rows of [figure, stats].
    let rows = v["rows"].as_array().ok_or("no \"rows\"")?;
    let total = rows.iter().find(|r| r[0] == "total (host)").ok_or("no \"total (host)\" row (did every VM fail?)")?;
    let mut pss: Vec<u64> = v["memory"].as_array().into_iter().flatten().filter_map(|m| m["pss_kib"].as_u64()).collect();
    pss.sort_unstable();
    Ok(Row {
        series: series.into(),
        n,
        median_us: total[1]["median_us"].as_u64().unwrap_or(0),
        p95_us: total[1]["p95_us"].as_u64().unwrap_or(0),
        memory_kib: pss.get(pss.len().saturating_sub(1) / 2).copied(),
        memory_what: "PSS of the VMM",
    })
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// Two panels side by side, one line per row: latency (median bar, p95 as a lighter extension)
/// and memory per instance. Each panel has its own linear scale, per series (so microsecond
/// namespaces and second-long TCG boots are both readable).
fn svg(rows: &[Row]) -> String {
    let (row_h, top, label_w, panel_w) = (22.0, 50.0, 190.0, 330.0);
    let height = top + row_h * rows.len() as f64 + 30.0;
    let mut o = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"10\" y=\"20\" font-size=\"13\">Many at once: ready latency (median; p95 lighter) and memory per instance, against N</text>\n\
         <text x=\"{label_w}\" y=\"40\">spawn → ready, ms (scale per series)</text><text x=\"{}\" y=\"40\">memory per instance, MiB</text>\n",
        label_w + 2.0 * panel_w + 260.0,
        label_w + panel_w + 80.0
    );
    for (i, r) in rows.iter().enumerate() {
        let y = top + row_h * i as f64;
        let same: Vec<&Row> = rows.iter().filter(|x| x.series == r.series).collect();
        let max_t = same.iter().map(|x| x.p95_us).max().unwrap_or(1).max(1) as f64;
        let max_m = rows.iter().filter_map(|x| x.memory_kib).max().unwrap_or(1).max(1) as f64;
        let (wm, wp) = (panel_w * r.median_us as f64 / max_t, panel_w * r.p95_us as f64 / max_t);
        o += &format!("<text x=\"10\" y=\"{}\">{} N={}</text>\n", y + 14.0, esc(&r.series), r.n);
        o += &format!(
            "<rect x=\"{label_w}\" y=\"{y}\" width=\"{wp:.1}\" height=\"16\" fill=\"#b9cdee\"><title>p95 {:.3} ms</title></rect>\n",
            r.p95_us as f64 / 1000.0
        );
        o += &format!(
            "<rect x=\"{label_w}\" y=\"{y}\" width=\"{wm:.1}\" height=\"16\" fill=\"#4a7bd0\"><title>median {:.3} ms</title></rect>\n",
            r.median_us as f64 / 1000.0
        );
        o += &format!(
            "<text x=\"{:.1}\" y=\"{}\">{:.1} / {:.1}</text>\n",
            label_w + wp + 4.0,
            y + 13.0,
            r.median_us as f64 / 1000.0,
            r.p95_us as f64 / 1000.0
        );
        if let Some(m) = r.memory_kib {
            let x = label_w + panel_w + 80.0;
            let w = (panel_w * m as f64 / max_m).max(1.0);
            o += &format!(
                "<rect x=\"{x}\" y=\"{y}\" width=\"{w:.1}\" height=\"16\" fill=\"#3a9e5c\"><title>{}</title></rect>\n",
                r.memory_what
            );
            o += &format!("<text x=\"{:.1}\" y=\"{}\">{:.1} ({})</text>\n", x + w + 4.0, y + 13.0, m as f64 / 1024.0, r.memory_what);
        }
    }
    o.push_str("</svg>\n");
    o
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 {
        eprintln!("usage: density-chart OUT.svg SERIES=FILE.json [SERIES=FILE.json ...]");
        std::process::exit(2);
    }
    let mut rows = Vec::new();
    for a in &args[1..] {
        let Some((series, file)) = a.split_once('=') else {
            eprintln!("density-chart: {a:?}: expected SERIES=FILE.json");
            std::process::exit(2);
        };
        let parsed = std::fs::read_to_string(file)
            .map_err(|e| e.to_string())
            .and_then(|t| serde_json::from_str::<Value>(&t).map_err(|e| e.to_string()));
        match parsed.and_then(|v| row(series, &v)) {
            Ok(r) => rows.push(r),
            Err(e) => {
                eprintln!("density-chart: {file}: {e}");
                std::process::exit(1);
            }
        }
    }
    if let Err(e) = std::fs::write(&args[0], svg(&rows)) {
        eprintln!("density-chart: write {}: {e}", args[0]);
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_from_both_kinds_of_json() {
        let ns = serde_json::json!({"n": 10, "exec_to_200_us": {"median": 3600, "p95": 8000}, "rss_kib": {"median": 752}});
        let hp = serde_json::json!({"n": 4, "rows": [["total (host)", {"median_us": 931203, "p95_us": 1038573}]],
            "memory": [{"pss_kib": 3}, {"pss_kib": 1}, {"pss_kib": 2}]});
        let a = row("ns", &ns).unwrap();
        let b = row("vm", &hp).unwrap();
        assert_eq!((a.n, a.median_us, a.p95_us, a.memory_kib), (10, 3600, 8000, Some(752)));
        assert_eq!((b.n, b.median_us, b.p95_us, b.memory_kib), (4, 931203, 1038573, Some(2)));
        assert!(row("x", &serde_json::json!({"rows": []})).is_err());
        let s = svg(&[a, b]);
        assert!(s.contains("ns N=10") && s.contains("vm N=4") && s.contains("931.2 / 1038.6"), "{s}");
    }
}
