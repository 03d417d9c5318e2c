//! `host-probe bench`: N boots per side, interleaved A B A B when comparing (so slow drift of the
//! host hits both sides alike), then min/median/p95/max per figure and the B/A ratio of medians.

use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::error::Error;
use crate::report::{self, Figure, Report};
use crate::run::{self, Options};

pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Side {
    A,
    B,
}

/// Nearest-rank statistics, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Stats {
    pub n: usize,
    pub min_us: u64,
    pub median_us: u64,
    pub p95_us: u64,
    pub max_us: u64,
}

/// The nearest-rank percentile `p` (0 < p ≤ 100) of sorted values.
fn rank(sorted: &[u64], p: usize) -> u64 {
    let idx = (p * sorted.len()).div_ceil(100).max(1) - 1;
    sorted[idx.min(sorted.len() - 1)]
}

pub fn stats(values: &[u64]) -> Option<Stats> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_unstable();
    Some(Stats { n: v.len(), min_us: v[0], median_us: rank(&v, 50), p95_us: rank(&v, 95), max_us: v[v.len() - 1] })
}

/// The boot order: warm-up boots first, then measured ones; A and B alternate throughout.
pub fn schedule(n: usize, warmup: usize, compare: bool) -> Vec<(Side, bool)> {
    let mut o = Vec::new();
    for (count, measured) in [(warmup, false), (n, true)] {
        for _ in 0..count {
            o.push((Side::A, measured));
            if compare {
                o.push((Side::B, measured));
            }
        }
    }
    o
}

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub figure: String,
    pub a: Option<Stats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub b: Option<Stats>,
    /// median(B) / median(A).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchResult {
    pub schema: u32,
    pub vmm: String,
    pub accel: String,
    pub representative: bool,
    pub notes: Vec<String>,
    pub n: usize,
    pub warmup: usize,
    pub a: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub b: Option<String>,
    pub rows: Vec<Row>,
}

/// Collects per-figure samples of one side, keeping the order figures first appear in.
#[derive(Default)]
struct Samples {
    order: Vec<Figure>,
    values: BTreeMap<Figure, Vec<u64>>,
}

impl Samples {
    fn add(&mut self, r: &Report) {
        for (name, v) in report::figures(r) {
            if !self.values.contains_key(&name) {
                self.order.push(name.clone());
            }
            let e = self.values.entry(name).or_default();
            if let Some(v) = v {
                e.push(v);
            }
        }
    }
}

/// A's figures in A's order, with each figure only B has placed before the next of B's figures
/// that A has too (the baseline's `step python` comes before `step agent`, as it ran).
pub fn merge_order<T: Clone + PartialEq>(a: &[T], b: &[T]) -> Vec<T> {
    let mut names = a.to_vec();
    for (i, n) in b.iter().enumerate() {
        if names.contains(n) {
            continue;
        }
        let pos = b[i + 1..].iter().find_map(|m| names.iter().position(|x| x == m)).unwrap_or(names.len());
        names.insert(pos, n.clone());
    }
    names
}

/// Builds the rows from both sides' samples.
fn rows(a: &Samples, b: Option<&Samples>) -> Vec<Row> {
    let names = match b {
        Some(b) => merge_order(&a.order, &b.order),
        None => a.order.clone(),
    };
    names
        .into_iter()
        .map(|name| {
            let sa = a.values.get(&name).and_then(|v| stats(v));
            let sb = b.and_then(|b| b.values.get(&name)).and_then(|v| stats(v));
            let ratio = match (sa, sb) {
                (Some(x), Some(y)) if x.median_us > 0 => Some(y.median_us as f64 / x.median_us as f64),
                _ => None,
            };
            Row { figure: name.to_string(), a: sa, b: sb, ratio }
        })
        .filter(|r| r.a.is_some() || r.b.is_some())
        .collect()
}

fn label(o: &Options) -> String {
    let root =
        o.initramfs.as_ref().or(o.rootfs.as_ref()).map(|p| p.display().to_string()).unwrap_or_else(|| crate::locate::DEFAULT_IMAGE.into());
    let kernel = o.kernel.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "default kernel".into());
    let profile = if o.kernel_profile { " + --kernel-profile" } else { "" };
    let extra = if o.cmdline_extra.is_empty() { String::new() } else { format!(" + \"{}\"", o.cmdline_extra) };
    format!("{root} + {kernel}{profile}{extra}")
}

/// Progress on stderr: `[i/total] A measured 1234.5 ms`.
pub fn stderr_progress(done: usize, total: usize, line: &str) {
    eprintln!("[{done}/{total}] {line}");
}

/// Runs the benchmark. The first failed boot stops it, naming which boot failed.
pub fn bench(
    a: &Options,
    b: Option<&Options>,
    n: usize,
    warmup: usize,
    progress: &mut dyn FnMut(usize, usize, &str),
) -> Result<BenchResult, Error> {
    let mut run_a = || run::run(a);
    let mut run_b = b.map(|b| move || run::run(b));
    let run_b = run_b.as_mut().map(|f| f as &mut dyn FnMut() -> Result<Report, Error>);
    interleave((label(a), &mut run_a), run_b.map(|f| (b.map(label).unwrap_or_default(), f)), n, warmup, progress)
}

/// `bench --restore DIR`: cold boots of the snapshot's machine (A) interleaved with restores of a
/// copy (B); `total (host)` compares spawn → ready of one with spawn → ready as a unique copy.
pub fn bench_restore(
    ro: &crate::snapshot::RestoreOptions,
    base: &Options,
    n: usize,
    warmup: usize,
    progress: &mut dyn FnMut(usize, usize, &str),
) -> Result<BenchResult, Error> {
    use crate::snapshot::restore;
    let host = crate::options::HostOffer::gather();
    let one = crate::snapshot::RestoreOptions { clones: 1, ..ro.clone() };
    let first = restore::prepare(&one, base, &host)?;
    let cold = first.options.clone();
    let mode = first.mode.map(|m| format!(", memory_restore_mode={}", m.name())).unwrap_or_default();
    let b_label = format!("restore of {}{mode}", first.dir.display());
    let mut run_a = || run::run(&cold);
    let mut run_b = || {
        let prep = restore::prepare(&one, base, &host)?;
        restore::one(&prep, &prep.plans[0], &prep.options)
    };
    interleave((format!("cold boot of {}", label(&cold)), &mut run_a), Some((b_label, &mut run_b)), n, warmup, progress)
}

type Runner<'a> = (String, &'a mut dyn FnMut() -> Result<Report, Error>);

/// Runs side A (and B) as [`schedule`] says and gathers the statistics.
fn interleave(
    a: Runner,
    b: Option<Runner>,
    n: usize,
    warmup: usize,
    progress: &mut dyn FnMut(usize, usize, &str),
) -> Result<BenchResult, Error> {
    if n == 0 {
        return Err(Error::Usage("-n must be at least 1".into()));
    }
    let plan = schedule(n, warmup, b.is_some());
    let total = plan.len();
    crate::plan::room_for(total)?;
    let (mut sa, mut sb) = (Samples::default(), Samples::default());
    let mut meta: Option<(String, String, bool, Vec<String>)> = None;
    let (a_label, run_a) = a;
    let (b_label, mut run_b) = match b {
        Some((l, f)) => (Some(l), Some(f)),
        None => (None, None),
    };
    for (i, (side, measured)) in plan.into_iter().enumerate() {
        let r = match (side, run_b.as_mut()) {
            (Side::B, Some(f)) => f(),
            _ => run_a(),
        };
        let r = r.map_err(|e| match e {
            Error::Interrupted(_) => e,
            other => Error::In { which: format!("boot {} of {total} (side {side:?})", i + 1), source: Box::new(other) },
        })?;
        let total_us = r.restore.as_ref().map(|rs| rs.total_us).or(r.phases.as_ref().map(|p| p.total_us));
        let total_ms = total_us.map(report::ms).unwrap_or_else(|| "-".into());
        progress(i + 1, total, &format!("{side:?} {} total {total_ms} ms", if measured { "measured" } else { "warm-up" }));
        meta.get_or_insert_with(|| (r.vmm.clone(), r.accel.clone(), r.representative, r.notes.clone()));
        if measured {
            match side {
                Side::A => sa.add(&r),
                Side::B => sb.add(&r),
            }
        }
    }
    let (vmm, accel, representative, notes) = meta.unwrap_or_default();
    Ok(BenchResult {
        schema: SCHEMA_VERSION,
        vmm,
        accel,
        representative,
        notes,
        n,
        warmup,
        rows: rows(&sa, b_label.as_ref().map(|_| &sb)),
        a: a_label,
        b: b_label,
    })
}

fn cell(s: Option<Stats>) -> String {
    match s {
        Some(s) => {
            format!("{:>9} {:>9} {:>9} {:>9}", report::ms(s.min_us), report::ms(s.median_us), report::ms(s.p95_us), report::ms(s.max_us))
        }
        None => format!("{:>9} {:>9} {:>9} {:>9}", "-", "-", "-", "-"),
    }
}

pub fn text(r: &BenchResult) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "host-probe bench: {} ({}), n={} per side, warm-up {}", r.vmm, r.accel, r.n, r.warmup);
    for n in &r.notes {
        let _ = writeln!(o, "  note: {n}");
    }
    let _ = writeln!(o, "  A: {}", r.a);
    if let Some(b) = &r.b {
        let _ = writeln!(o, "  B: {b}");
    }
    let _ = writeln!(o, "  figures in ms (min median p95 max); phases as in `host-probe run`");
    let head = format!("{:>9} {:>9} {:>9} {:>9}", "min", "median", "p95", "max");
    if r.b.is_some() {
        let _ = writeln!(o, "  {:<26} A {head}   B {head}   B/A", "figure");
    } else {
        let _ = writeln!(o, "  {:<26} {head}", "figure");
    }
    for row in &r.rows {
        if r.b.is_some() {
            let ratio = row.ratio.map(|x| format!("{x:.3}")).unwrap_or_else(|| "-".into());
            let _ = writeln!(o, "  {:<26} A {}   B {}   {ratio}", row.figure, cell(row.a), cell(row.b));
        } else {
            let _ = writeln!(o, "  {:<26} {}", row.figure, cell(row.a));
        }
    }
    let total = r.rows.iter().find(|row| row.figure == Figure::Total.to_string());
    if let (true, Some(Row { a: Some(a), b: Some(b), .. })) = (r.b.as_deref().is_some_and(|b| b.starts_with("restore of")), total) {
        if b.median_us > 0 {
            let _ = writeln!(
                o,
                "  restore -> ready {} ms vs cold boot -> ready {} ms (medians): 1/{:.1}",
                report::ms(b.median_us),
                report::ms(a.median_us),
                a.median_us as f64 / b.median_us as f64
            );
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_statistics() {
        type Quad = (u64, u64, u64, u64);
        let cases: [(&[u64], Option<Quad>); 4] = [
            (&[], None),
            (&[7], Some((7, 7, 7, 7))),
            (&[4, 1, 3, 2], Some((1, 2, 4, 4))),
            (&[10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110, 120, 130, 140, 150, 160, 170, 180, 190, 200], Some((10, 100, 190, 200))),
        ];
        for (v, want) in cases {
            let got = stats(v).map(|s| (s.min_us, s.median_us, s.p95_us, s.max_us));
            assert_eq!(got, want, "{v:?}");
        }
    }

    #[test]
    fn schedule_interleaves_after_warmup() {
        use Side::*;
        assert_eq!(schedule(2, 1, true), vec![(A, false), (B, false), (A, true), (B, true), (A, true), (B, true)]);
        assert_eq!(schedule(2, 0, false), vec![(A, true), (A, true)]);
    }

    #[test]
    fn figures_only_one_side_has_keep_their_place() {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let cases: &[(&[&str], &[&str], &[&str])] = &[
            (
                &["init", "step network", "step agent", "step mounts.late"],
                &["init", "step network", "step python", "step agent"],
                &["init", "step network", "step python", "step agent", "step mounts.late"],
            ),
            (&["a", "b"], &["a", "b", "c"], &["a", "b", "c"]),
            (&["a", "b"], &["x", "y", "b"], &["a", "x", "y", "b"]),
            (&["a"], &["x"], &["a", "x"]),
            (&[], &["x", "y"], &["x", "y"]),
        ];
        for (a, b, want) in cases {
            assert_eq!(merge_order(&v(a), &v(b)), v(want), "{a:?} + {b:?}");
        }
    }

    #[test]
    fn rows_compare_medians() {
        let mut a = Samples::default();
        let mut b = Samples::default();
        for (name, va, vb) in [(Figure::KernelBoot, [100, 300, 200], [50, 60, 70]), (Figure::Init, [10, 10, 10], [20, 20, 20])] {
            a.order.push(name.clone());
            a.values.insert(name.clone(), va.to_vec());
            b.order.push(name.clone());
            b.values.insert(name, vb.to_vec());
        }
        let only_b = Figure::Step("only-b".into());
        b.order.push(only_b.clone());
        b.values.insert(only_b, vec![5]);
        let r = rows(&a, Some(&b));
        assert_eq!(r.len(), 3);
        assert_eq!(r[0].ratio, Some(60.0 / 200.0));
        assert_eq!(r[1].ratio, Some(2.0));
        assert!(r[2].a.is_none() && r[2].ratio.is_none());
        let res = BenchResult {
            schema: 1,
            vmm: "qemu".into(),
            accel: "tcg".into(),
            representative: false,
            notes: vec![],
            n: 3,
            warmup: 0,
            a: "a.ext4".into(),
            b: Some("b.ext4".into()),
            rows: r,
        };
        let t = text(&res);
        assert!(t.contains("0.300"), "{t}");
        assert!(t.contains("2.000"), "{t}");
        let j = serde_json::to_value(&res).unwrap();
        assert_eq!(j["rows"][0]["a"]["median_us"], 200);
    }
}
