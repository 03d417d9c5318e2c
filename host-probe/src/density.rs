//! `host-probe bench --parallel N` and `bench --restore DIR --clones N`: N VMs started at once (cold
//! boots, or copies of one snapshot), each with its own TAP, vsock and run directory; per-phase
//! statistics across the N, the failures and why, and memory: each VMM's RSS and PSS at ready
//! against the guest's memory, and the host's total. N is checked against what the host can hold
//! before anything starts ([`limit`]).

use std::fmt::Write as _;

use serde::Serialize;

use crate::bench::{stats, Stats};
use crate::error::Error;
use crate::report::{self, Figure, Report};
use crate::run::Options;

/// What the VMM process needs besides the guest's memory, by measurement (QEMU and
/// cloud-hypervisor, at ready, with the tiny kernel): the margin [`limit`] counts per VM.
pub const VMM_OVERHEAD_MIB: u64 = 64;
/// Descriptors one VM's run holds at most (VMM pipes, TAP, sockets, readers), with margin.
pub const FDS_PER_VM: u64 = 32;
/// One host-probe names this many runs, so starts at most this many VMs ([`crate::plan::MAX_RUNS`]).
pub use crate::plan::MAX_RUNS;

/// What the host offers for N VMs (pure inputs to [`limit`]).
#[derive(Debug, Clone, Copy)]
pub struct Capacity {
    pub mem_available_mib: u64,
    pub fd_limit: u64,
}

impl Capacity {
    pub fn gather() -> Capacity {
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let kib = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemAvailable:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0);
        let mut rl = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit fills the struct it is given.
        let fd_limit = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } == 0 { rl.rlim_cur } else { 1024 };
        Capacity { mem_available_mib: kib / 1024, fd_limit }
    }
}

/// Refuses an N the host cannot hold (pure): guest memory plus the VMM's own for each VM within
/// the memory available (a copy of a snapshot may share its memory, but may also touch all of it),
/// descriptors within the limit, names within what one process makes.
pub fn limit(n: usize, guest_mib: u32, cap: Capacity) -> Result<(), Error> {
    if n == 0 {
        return Err(Error::Usage("--parallel / --clones 0: at least one VM".into()));
    }
    if n > MAX_RUNS {
        return Err(Error::Usage(format!(
            "{n} VMs: one host-probe makes at most {MAX_RUNS} runs (their TAP names, guest addresses and vsock ids never repeat)"
        )));
    }
    let need = n as u64 * (u64::from(guest_mib) + VMM_OVERHEAD_MIB);
    if need > cap.mem_available_mib {
        return Err(Error::Usage(format!(
            "{n} VMs of {guest_mib} MiB need about {need} MiB ({guest_mib} MiB of guest memory and {VMM_OVERHEAD_MIB} MiB for the VMM each); \
             this host has {} MiB available: lower N or --memory",
            cap.mem_available_mib
        )));
    }
    let fds = n as u64 * FDS_PER_VM + 64;
    if fds > cap.fd_limit {
        return Err(Error::Usage(format!(
            "{n} VMs need about {fds} file descriptors and the limit is {}: raise it (ulimit -n) or lower N",
            cap.fd_limit
        )));
    }
    Ok(())
}

/// One VM's memory at ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct VmMemory {
    pub rss_kib: u64,
    pub pss_kib: u64,
}

/// The result of N at once.
#[derive(Debug, Clone, Serialize)]
pub struct Density {
    pub what: String,
    pub vmm: String,
    pub accel: String,
    pub representative: bool,
    pub notes: Vec<String>,
    pub n: usize,
    pub ready: usize,
    /// One line per VM that failed: which, and why.
    pub failures: Vec<String>,
    /// Per figure across the VMs that got ready.
    pub rows: Vec<(String, Stats)>,
    /// Each ready VM's address, as chinit reported it.
    pub addresses: Vec<String>,
    pub guest_memory_mib: u32,
    pub memory: Vec<VmMemory>,
    pub total_pss_kib: u64,
    /// Median PSS per VM over the guest's memory.
    pub pss_fraction: Option<f64>,
    /// Wall time from starting them to the last one done (ready, then powered off), µs.
    pub wall_us: u64,
}

/// Gathers the reports of N VMs started at once.
pub fn summarize(what: String, guest_memory_mib: u32, results: Vec<Result<Report, Error>>, wall_us: u64) -> Density {
    let n = results.len();
    let mut failures = Vec::new();
    let mut reports = Vec::new();
    for (i, r) in results.into_iter().enumerate() {
        match r {
            Ok(r) => reports.push(r),
            Err(e) => failures.push(format!("VM {}: {}", i + 1, e.to_string().lines().next().unwrap_or_default())),
        }
    }
    let mut order: Vec<Figure> = Vec::new();
    let mut values: std::collections::BTreeMap<Figure, Vec<u64>> = Default::default();
    for r in &reports {
        for (f, v) in report::figures(r) {
            if matches!(f, Figure::Mark(_) | Figure::Step(_)) {
                continue;
            }
            if !order.contains(&f) {
                order.push(f.clone());
            }
            if let Some(v) = v {
                values.entry(f).or_default().push(v);
            }
        }
    }
    let rows = order.into_iter().filter_map(|f| stats(values.get(&f)?).map(|s| (f.to_string(), s))).collect();
    let memory: Vec<VmMemory> =
        reports.iter().filter_map(|r| r.memory).map(|m| VmMemory { rss_kib: m.rss_kib, pss_kib: m.pss_kib }).collect();
    let total_pss_kib = memory.iter().map(|m| m.pss_kib).sum();
    let pss_fraction = stats(&memory.iter().map(|m| m.pss_kib).collect::<Vec<_>>())
        .filter(|_| guest_memory_mib > 0)
        .map(|s| s.median_us as f64 / (f64::from(guest_memory_mib) * 1024.0));
    let first = reports.first();
    Density {
        what,
        vmm: first.map(|r| r.vmm.clone()).unwrap_or_default(),
        accel: first.map(|r| r.accel.clone()).unwrap_or_default(),
        representative: first.is_some_and(|r| r.representative),
        notes: first.map(|r| r.notes.clone()).unwrap_or_default(),
        n,
        ready: reports.len(),
        failures,
        rows,
        addresses: reports.iter().filter_map(|r| r.guest.as_ref()?.ip.clone()).collect(),
        guest_memory_mib,
        memory,
        total_pss_kib,
        pss_fraction,
        wall_us,
    }
}

/// N cold boots of `o` at once, each in its own thread (a VMM dies with the thread that started it).
pub fn parallel(o: &Options, n: usize) -> Result<Density, Error> {
    limit(n, o.memory_mib, Capacity::gather())?;
    crate::plan::room_for(n)?;
    let start = std::time::Instant::now();
    let results: Vec<Result<Report, Error>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..n).map(|_| s.spawn(|| crate::run::run(o))).collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err(Error::Failed("a VM's thread panicked".into())))).collect()
    });
    interrupted_in(&results)?;
    Ok(summarize(format!("{n} cold boots at once"), o.memory_mib, results, report::micros(start.elapsed())))
}

/// N copies of a snapshot restored at once, each made unique ([`limit`] is checked as they are
/// planned).
pub fn clones(ro: &crate::snapshot::RestoreOptions, base: &Options) -> Result<Density, Error> {
    use crate::snapshot::restore;
    let prep = restore::prepare(ro, base, &crate::options::HostOffer::gather())?;
    let start = std::time::Instant::now();
    let results = restore::all(&prep, &prep.options);
    interrupted_in(&results)?;
    let mode = prep.mode.map(|m| format!(", memory_restore_mode={}", m.name())).unwrap_or_default();
    let what = format!("{} copies of {} at once{mode}", ro.clones, prep.dir.display());
    Ok(summarize(what, prep.options.memory_mib, results, report::micros(start.elapsed())))
}

/// A signal that interrupted any of the runs, so the bench ends as one interrupted run does.
fn interrupted_in(results: &[Result<Report, Error>]) -> Result<(), Error> {
    match results.iter().find_map(|r| match r {
        Err(Error::Interrupted(sig)) => Some(*sig),
        _ => None,
    }) {
        Some(sig) => Err(Error::Interrupted(sig)),
        None => Ok(()),
    }
}

/// The text table.
pub fn text(d: &Density) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "host-probe bench: {} ({}, {}): {} of {} ready", d.what, d.vmm, d.accel, d.ready, d.n);
    for n in &d.notes {
        let _ = writeln!(o, "  note: {n}");
    }
    for f in &d.failures {
        let _ = writeln!(o, "  failed: {f}");
    }
    let _ = writeln!(o, "  figures in ms across the VMs (min median p95 max)");
    for (figure, s) in &d.rows {
        let _ = writeln!(
            o,
            "  {:<26} {:>9} {:>9} {:>9} {:>9}",
            figure,
            report::ms(s.min_us),
            report::ms(s.median_us),
            report::ms(s.p95_us),
            report::ms(s.max_us)
        );
    }
    let _ = writeln!(o, "  all started -> all done (ready, then powered off): {} ms", report::ms(d.wall_us));
    if let (Some(rss), Some(pss)) =
        (stats(&d.memory.iter().map(|m| m.rss_kib).collect::<Vec<_>>()), stats(&d.memory.iter().map(|m| m.pss_kib).collect::<Vec<_>>()))
    {
        let mib = |k: u64| k as f64 / 1024.0;
        let _ = writeln!(
            o,
            "  VMM memory at ready, per VM (MiB, min median max): RSS {:.1} {:.1} {:.1}, PSS {:.1} {:.1} {:.1}; guest memory {} MiB",
            mib(rss.min_us),
            mib(rss.median_us),
            mib(rss.max_us),
            mib(pss.min_us),
            mib(pss.median_us),
            mib(pss.max_us),
            d.guest_memory_mib
        );
        let _ = writeln!(
            o,
            "  all {} VMMs: PSS {:.1} MiB; PSS per VM / guest memory: {}",
            d.memory.len(),
            mib(d.total_pss_kib),
            d.pss_fraction.map(|f| format!("{:.1} %", f * 100.0)).unwrap_or_else(|| "-".into())
        );
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn n_is_refused_beyond_memory_descriptors_and_names() {
        let cap = Capacity { mem_available_mib: 4096, fd_limit: 1024 };
        assert!(limit(3, 256, cap).is_ok());
        let cases = [
            (0, 256, cap, "at least one"),
            (13, 256, cap, "need about 4160 MiB"),
            (31, 64, cap, "file descriptors"),
            (5000, 1, Capacity { mem_available_mib: u64::MAX, fd_limit: u64::MAX }, "at most 4096"),
        ];
        for (n, mib, cap, want) in cases {
            let e = limit(n, mib, cap).unwrap_err();
            assert!(e.to_string().contains(want), "{n}: {e}");
            assert_eq!(e.exit_code().code(), 2);
        }
    }

    #[test]
    fn failures_are_named_and_memory_is_per_vm() {
        let mut r = crate::report::tests::report();
        r.memory = Some(crate::report::Memory { rss_kib: 40 * 1024, pss_kib: 20 * 1024 });
        let results = vec![
            Ok(r.clone()),
            Err(Error::Timeout { phase: "boot".into(), secs: 9, waiting_for: "waiting for notify".into(), diagnostics: "x".into() }),
            Ok(r),
        ];
        let d = summarize("3 cold boots at once".into(), 256, results, 1_000);
        assert_eq!((d.n, d.ready, d.failures.len()), (3, 2, 1));
        assert_eq!(d.failures, ["VM 2: boot: gave up after 9 s waiting for notify"]);
        assert_eq!(d.total_pss_kib, 40 * 1024);
        assert_eq!(d.pss_fraction, Some(20.0 / 256.0));
        let t = text(&d);
        assert!(t.contains("2 of 3 ready") && t.contains("failed: VM 2") && t.contains("7.8 %"), "{t}");
        assert!(d.rows.iter().any(|(f, s)| f == "total (host)" && s.n == 2), "{:?}", d.rows);
    }
}
