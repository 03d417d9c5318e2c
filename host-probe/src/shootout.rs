//! `host-probe bench --vmm qemu,cloud-hypervisor,... | --vmm all`: the VMM shoot-out. One guest
//! (the same image, the same kernel build) under every VMM asked for, interleaved round by round
//! so that the host's drift hits all alike; per VMM its start, the kernel, init, the host's total
//! and the VMM's memory at ready, and with `--restore` its snapshot's size, restore → ready and,
//! with `--clones N`, the memory per copy. Median, p95 and n of each.
//!
//! The VMMs come from the registry ([`crate::vmm::all`]) and are asked through their `Driver`
//! only: a VMM added to the registry joins with no change here. A VMM that is missing or cannot
//! run on this host is one line of the table, with the reason and the fix, not a failure.
//!
//! [`Selection::parse`], [`order`], [`figures`], [`summarize`], [`text`] and [`svg`] are pure and
//! tested on literal inputs; [`run`] boots.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::Error;
use crate::options::{HostOffer, Options, VmmChoice};
use crate::report::{self, Report};
use crate::vmm::Vmm;

pub const SCHEMA_VERSION: u32 = 1;

/// `--vmm` as `bench` takes it: one choice, as `run` does, or several VMMs for a shoot-out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    One(VmmChoice),
    /// Two or more names, or `all` (every VMM of the registry, in its order).
    Many(Vec<Vmm>),
}

impl Selection {
    /// `--vmm`'s help: the registry's names.
    pub fn help() -> String {
        format!(
            "VMM: auto (the first of the registry that fits this host; the last always does), or one of {}; \
             for bench also a comma-separated list of them, or all, for a shoot-out of them, interleaved",
            crate::vmm::registry::names().join(", ")
        )
    }

    pub fn parse(s: &str) -> Result<Selection, String> {
        let names = || crate::vmm::registry::names().join(", ");
        if s == "all" {
            return Ok(Selection::Many(crate::vmm::all().to_vec()));
        }
        let words: Vec<&str> = s.split(',').map(str::trim).collect();
        if let [one] = words[..] {
            return match one {
                "auto" => Ok(Selection::One(VmmChoice::Auto)),
                name => crate::vmm::by_name(name)
                    .map(|v| Selection::One(VmmChoice::Named(v)))
                    .ok_or_else(|| format!("no VMM {name:?}: auto, all, or one or more of {}", names())),
            };
        }
        let mut vmms: Vec<Vmm> = Vec::new();
        for w in words {
            let v = match w {
                "" => return Err(format!("--vmm {s:?}: an empty name in the list")),
                "auto" | "all" => return Err(format!("--vmm {s:?}: {w} stands alone, not in a list")),
                name => crate::vmm::by_name(name).ok_or_else(|| format!("no VMM {name:?}: one or more of {}", names()))?,
            };
            if vmms.contains(&v) {
                return Err(format!("--vmm {s:?}: {} twice", v.name()));
            }
            vmms.push(v);
        }
        Ok(Selection::Many(vmms))
    }

    /// The one VMM `run` and `snapshot` take, or a usage error for a list.
    pub fn one(&self) -> Result<VmmChoice, Error> {
        match self {
            Selection::One(c) => Ok(*c),
            Selection::Many(_) => Err(Error::Usage("--vmm: a list of VMMs (or all) is for `bench` only; pass one VMM".into())),
        }
    }
}

/// What one step of the shoot-out does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A cold boot to ready.
    Boot,
    /// A copy of the VMM's snapshot, restored and made unique.
    Restore,
}

/// One step: which VMM (an index into the list), what, in which round, measured or a warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    pub round: usize,
    pub vmm: usize,
    pub kind: Kind,
    pub measured: bool,
}

/// The order of `k` VMMs over `warmup` rounds then `n` measured ones (pure): every VMM once a
/// round (a boot, then a restore when `restore`), the first VMM of a round moving by one each
/// round, so that none always follows the same one or always comes first after a pause.
pub fn order(k: usize, n: usize, warmup: usize, restore: bool) -> Vec<Step> {
    let mut steps = Vec::new();
    for round in 0..warmup + n {
        for i in 0..k {
            let vmm = (round + i) % k;
            steps.push(Step { round, vmm, kind: Kind::Boot, measured: round >= warmup });
            if restore {
                steps.push(Step { round, vmm, kind: Kind::Restore, measured: round >= warmup });
            }
        }
    }
    steps
}

/// A figure of the shoot-out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fig {
    /// Host clock: spawn → the kernel's first clock (the 0x60 mark less chinit's start on the
    /// guest clock), else → the first port-0x80 mark the VMM has.
    VmmStart,
    /// Guest clock: kernel start → chinit's first instruction.
    Kernel,
    /// Guest clock: chinit start → ready.
    Init,
    /// Host clock: spawn → the first answer that says ready.
    Total,
    /// The VMM's RSS at ready.
    Rss,
    /// The VMM's PSS at ready.
    Pss,
    /// The snapshot's files on disk (allocated).
    SnapshotSize,
    /// Host clock: a copy's spawn → ready as a unique copy.
    RestoreReady,
    /// The PSS of each of `--clones N` copies at once.
    PssPerCopy,
}

/// How a figure is measured and written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Unit {
    /// Microseconds, shown in ms.
    Us,
    /// KiB, shown in MiB.
    Kib,
}

impl Fig {
    pub const BOOT: [Fig; 6] = [Fig::VmmStart, Fig::Kernel, Fig::Init, Fig::Total, Fig::Rss, Fig::Pss];
    pub const RESTORE: [Fig; 3] = [Fig::SnapshotSize, Fig::RestoreReady, Fig::PssPerCopy];

    /// Its name in the JSON (with its unit).
    pub fn key(self) -> &'static str {
        match self {
            Fig::VmmStart => "vmm_start_us",
            Fig::Kernel => "kernel_us",
            Fig::Init => "init_us",
            Fig::Total => "total_us",
            Fig::Rss => "rss_kib",
            Fig::Pss => "pss_kib",
            Fig::SnapshotSize => "snapshot_kib",
            Fig::RestoreReady => "restore_ready_us",
            Fig::PssPerCopy => "pss_per_copy_kib",
        }
    }

    /// Its column head in the table.
    pub fn head(self) -> &'static str {
        match self {
            Fig::VmmStart => "VMM start",
            Fig::Kernel => "kernel",
            Fig::Init => "init",
            Fig::Total => "total (host)",
            Fig::Rss => "RSS",
            Fig::Pss => "PSS",
            Fig::SnapshotSize => "snapshot",
            Fig::RestoreReady => "restore -> ready",
            Fig::PssPerCopy => "PSS per copy",
        }
    }

    pub fn unit(self) -> Unit {
        match self {
            Fig::Rss | Fig::Pss | Fig::SnapshotSize | Fig::PssPerCopy => Unit::Kib,
            _ => Unit::Us,
        }
    }

    /// A value in the table's units: ms or MiB, one decimal.
    pub fn show(self, v: u64) -> String {
        match self.unit() {
            Unit::Us => format!("{:.1}", v as f64 / 1000.0),
            Unit::Kib => format!("{:.1}", v as f64 / 1024.0),
        }
    }
}

/// The shoot-out's figures of one cold boot (pure): each a value, or why the run has none.
pub fn figures(r: &Report) -> Vec<(Fig, Result<u64, String>)> {
    let no_timeline = || Err("no chinit timeline (--no-agent)".to_string());
    let start = r.phases.as_ref().and_then(|p| p.kernel_start_host_us).or_else(|| r.host.marks.first().map(|m| m.t_us));
    let start = start.ok_or_else(|| format!("no port-0x80 marks: {}", r.host.marks_source));
    let phase = |f: fn(&report::Phases) -> u64| r.phases.as_ref().map(f).map_or_else(no_timeline, Ok);
    let memory = |f: fn(&report::Memory) -> u64| {
        r.memory.as_ref().map(f).ok_or_else(|| "no memory figure: the VMM's /proc/<pid>/smaps_rollup was not read at ready".to_string())
    };
    vec![
        (Fig::VmmStart, start),
        (Fig::Kernel, phase(|p| p.kernel_boot_us)),
        (Fig::Init, phase(|p| p.init_us)),
        (Fig::Total, phase(|p| p.total_us)),
        (Fig::Rss, memory(|m| m.rss_kib)),
        (Fig::Pss, memory(|m| m.pss_kib)),
    ]
}

/// Median, p95 (nearest rank), min, max and n of one figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub n: usize,
    pub min: u64,
    pub median: u64,
    pub p95: u64,
    pub max: u64,
}

pub fn summary(values: &[u64]) -> Option<Summary> {
    crate::bench::stats(values).map(|s| Summary { n: s.n, min: s.min_us, median: s.median_us, p95: s.p95_us, max: s.max_us })
}

/// One figure of one VMM: its statistics, or why it has none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Row {
    pub figure: &'static str,
    pub unit: Unit,
    pub stats: Option<Summary>,
    /// Why this VMM cannot give the figure (when it has no value).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cannot: Option<String>,
}

/// Whether a VMM was measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Measured,
    /// It cannot run here (missing, or not on this host): nothing was started.
    Cannot,
    /// A run of it failed; its other runs were left out.
    Failed,
}

/// One VMM's line of the shoot-out.
#[derive(Debug, Clone, Serialize)]
pub struct VmmResult {
    pub vmm: String,
    pub status: Status,
    /// `kvm` or `tcg`, once it ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accel: Option<String>,
    pub representative: bool,
    /// The kernel it booted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel: Option<String>,
    pub notes: Vec<String>,
    /// Why it cannot run here, or why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
    /// Every figure, with its statistics or why it has none (empty when it did not run).
    pub rows: Vec<Row>,
}

/// The shoot-out.
#[derive(Debug, Clone, Serialize)]
pub struct Shootout {
    pub schema: u32,
    pub what: &'static str,
    pub n: usize,
    pub warmup: usize,
    /// The root image every VMM booted.
    pub image: String,
    /// `--restore`: the directory of the VMMs' snapshots (one each, `DIR/<vmm>`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshots: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clones: Option<usize>,
    /// The first round's order (each round starts one VMM further on).
    pub order: Vec<String>,
    pub vmms: Vec<VmmResult>,
}

/// What the runs of one VMM gave: samples per figure, and the first reason for each missing one.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    pub values: BTreeMap<Fig, Vec<u64>>,
    pub why_not: BTreeMap<Fig, String>,
}

impl Tally {
    pub fn add(&mut self, fig: Fig, v: Result<u64, String>) {
        let values = self.values.entry(fig).or_default();
        match v {
            Ok(v) => values.push(v),
            Err(why) => {
                self.why_not.entry(fig).or_insert(why);
            }
        }
    }

    /// The rows of `figs` (pure): statistics where there are values, else why not.
    pub fn rows(&self, figs: &[Fig]) -> Vec<Row> {
        figs.iter()
            .map(|&f| {
                let stats = self.values.get(&f).and_then(|v| summary(v));
                let cannot = match stats {
                    Some(_) => None,
                    None => Some(self.why_not.get(&f).cloned().unwrap_or_else(|| "not measured".into())),
                };
                Row { figure: f.key(), unit: f.unit(), stats, cannot }
            })
            .collect()
    }
}

/// A VMM that cannot run here: why, and the fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cannot {
    pub why: String,
    pub fix: Option<String>,
}

impl Cannot {
    /// An error's words: its message, and its fix when it gives one.
    pub fn of(e: &Error) -> Cannot {
        let text = e.to_string();
        match text.split_once("\n  fix: ") {
            Some((why, fix)) => Cannot { why: why.trim().to_string(), fix: Some(fix.trim().to_string()) },
            None => Cannot { why: text.trim().to_string(), fix: None },
        }
    }
}

/// A VMM that boots Linux under hardware KVM only, on a host without it (pure).
pub fn kvm_refusal(vmm: Vmm, host: &HostOffer) -> Option<Cannot> {
    use crate::check::KvmKind;
    if !vmm.needs_hardware_kvm() || (host.kvm.hardware() && host.kvm_usable) {
        return None;
    }
    let (here, fix) = match host.kvm {
        KvmKind::Hardware(m) => (format!("/dev/kvm ({m}) cannot be opened read-write"), "run as root, or join the kvm group"),
        KvmKind::Pvm => ("this host's /dev/kvm is kvm_pvm (software, nested), which runs no Linux guest".to_string(), HARDWARE_FIX),
        KvmKind::Unknown => ("no kvm_intel or kvm_amd is loaded".to_string(), HARDWARE_FIX),
        KvmKind::Absent => ("this host has no KVM".to_string(), HARDWARE_FIX),
    };
    Some(Cannot { why: format!("{} runs Linux guests under hardware KVM only: {here}", vmm.name()), fix: Some(fix.into()) })
}

const HARDWARE_FIX: &str = "run it on a host with hardware KVM (kvm_intel, kvm_amd), such as the simulated KVM host of the tests";

/// The kernel `vmm` boots when the user gave `given` (pure, but for looking whether a file
/// exists): a kernel cache's file (`bzImage`, `vmlinux`, `Image`) that this VMM does not boot is
/// swapped for the file it boots beside it, of the same build; anything else is given as it is.
pub fn kernel_for(vmm: Vmm, given: &Path, arch: crate::options::Arch, exists: impl Fn(&Path) -> bool) -> PathBuf {
    let file = vmm.kernel_file(arch);
    let cache_names: Vec<&str> = crate::vmm::all().iter().map(|v| v.kernel_file(arch)).collect();
    let name = given.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    if name != file && cache_names.contains(&name) {
        let sibling = given.with_file_name(file);
        if exists(&sibling) {
            return sibling;
        }
    }
    given.to_path_buf()
}

/// The text table: one line per VMM (median / p95, n), then the figures a VMM cannot give and
/// why; with snapshots a second table.
pub fn text(s: &Shootout) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "host-probe bench: VMM shoot-out, {} VMM(s), {} round(s) after {} warm-up, interleaved (each round starts one VMM further on)",
        s.vmms.len(),
        s.n,
        s.warmup
    );
    let _ = writeln!(o, "  image {}; order of the first round: {}", s.image, s.order.join(", "));
    if let Some(d) = &s.snapshots {
        let _ = writeln!(o, "  snapshots in {d}{}", s.clones.map(|n| format!(", {n} copies at once for PSS per copy")).unwrap_or_default());
    }
    let _ =
        writeln!(o, "  each figure: median / p95 (ms, MiB); n = measured runs of the VMM (a snapshot is one; PSS per copy: the copies)");
    let mut footnotes: Vec<Footnote> = Vec::new();
    table(&mut o, s, &Fig::BOOT, &mut footnotes);
    if s.snapshots.is_some() {
        let _ = writeln!(o);
        table(&mut o, s, &Fig::RESTORE, &mut footnotes);
    }
    for v in &s.vmms {
        for n in &v.notes {
            let _ = writeln!(o, "  note ({}): {n}", v.vmm);
        }
        if let Some(k) = &v.kernel {
            let _ = writeln!(o, "  kernel ({}): {k}", v.vmm);
        }
    }
    for (i, (vmm, heads, why)) in footnotes.iter().enumerate() {
        let _ = writeln!(o, "  [{}] {vmm} {}: {why}", i + 1, heads.join(", "));
    }
    o
}

const CELL: usize = 17;

/// A footnote: the VMM, the figures it cannot give, and why.
type Footnote = (String, Vec<&'static str>, String);

fn table(o: &mut String, s: &Shootout, figs: &[Fig], footnotes: &mut Vec<Footnote>) {
    let _ = write!(o, "  {:<18} {:<5}", "VMM", "accel");
    for f in figs {
        let _ = write!(o, " {:>CELL$}", f.head());
    }
    let _ = writeln!(o, " {:>3}", "n");
    for v in &s.vmms {
        let _ = write!(o, "  {:<18} {:<5}", v.vmm, v.accel.as_deref().unwrap_or("-"));
        if v.status == Status::Cannot || (v.status == Status::Failed && v.rows.is_empty()) {
            let what = if v.status == Status::Cannot { "cannot run here" } else { "failed" };
            let fix = v.fix.as_ref().map(|f| format!("; fix: {f}")).unwrap_or_default();
            let _ = writeln!(o, " {what}: {}{fix}", v.why.as_deref().unwrap_or("-"));
            continue;
        }
        let mut n = 0;
        for &f in figs {
            let row = v.rows.iter().find(|r| r.figure == f.key());
            let cell = match row.and_then(|r| r.stats) {
                Some(st) => {
                    n = n.max(st.n);
                    format!("{} / {}", f.show(st.median), f.show(st.p95))
                }
                None => {
                    let why = row.and_then(|r| r.cannot.clone()).unwrap_or_else(|| "not measured".into());
                    let k = match footnotes.iter().position(|(vmm, _, w)| *vmm == v.vmm && *w == why) {
                        Some(k) => {
                            footnotes[k].1.push(f.head());
                            k
                        }
                        None => {
                            footnotes.push((v.vmm.clone(), vec![f.head()], why));
                            footnotes.len() - 1
                        }
                    };
                    format!("-[{}]", k + 1)
                }
            };
            let _ = write!(o, " {cell:>CELL$}");
        }
        let _ = writeln!(o, " {n:>3}");
        if v.status == Status::Failed {
            let _ = writeln!(o, "  {:<24} failed: {}", "", v.why.as_deref().unwrap_or("-"));
        }
    }
}

/// What the user asked of a shoot-out.
#[derive(Debug, Clone)]
pub struct Asked {
    /// The boot options every VMM gets (`vmm` is set per VMM).
    pub base: Options,
    pub vmms: Vec<Vmm>,
    pub n: usize,
    pub warmup: usize,
    /// `--restore DIR`: each VMM's snapshot is `DIR/<vmm>`, taken first when it is not there.
    pub snapshots: Option<PathBuf>,
    /// `--clones N` (with `--restore`): N copies of each VMM's snapshot at once, once, after the rounds.
    pub clones: Option<usize>,
}

/// One VMM as the shoot-out goes: its options, what its runs gave, and how it stands.
struct Entrant {
    vmm: Vmm,
    options: Options,
    tally: Tally,
    first: Option<Report>,
    /// Why it cannot run here (set before anything starts), or why it failed.
    out: Option<(Status, Cannot)>,
    snapshot: Option<PathBuf>,
}

/// Runs the shoot-out: each VMM's snapshot (`--restore`), the rounds, the copies at once
/// (`--clones`), then the result. A VMM that cannot run here is left out, with why; a VMM whose
/// run fails is stopped there (the others go on) and the first such error is returned beside the
/// result, for the exit code. Only a signal ends the whole at once (every run cleans up after
/// itself).
pub fn run(a: &Asked, progress: &mut dyn FnMut(usize, usize, &str)) -> Result<(Shootout, Option<Error>), Error> {
    if a.n == 0 {
        return Err(Error::Usage("-n must be at least 1".into()));
    }
    if let Some(c) = a.clones {
        crate::density::limit(c, a.base.memory_mib, crate::density::Capacity::gather())?;
    }
    let host = HostOffer::gather();
    let mut s = Shoot { entrants: a.vmms.iter().map(|&vmm| entrant(vmm, &a.base, &host)).collect(), failure: None };
    let runnable = s.runnable();
    let steps = order(runnable.len(), a.n, a.warmup, a.snapshots.is_some());
    let snapshots = if a.snapshots.is_some() { runnable.len() } else { 0 };
    crate::plan::room_for(snapshots + steps.len() + a.clones.unwrap_or(0) * runnable.len())?;
    let restore_base = Options { timeout: a.base.timeout, ..Options::default() };
    if let Some(dir) = &a.snapshots {
        s.snapshots(dir)?;
    }
    s.rounds(&runnable, &steps, &restore_base, &host, progress)?;
    if a.snapshots.is_some() {
        s.copies(a.clones, &restore_base)?;
    }
    let figs: Vec<Fig> = Fig::BOOT.iter().chain(if a.snapshots.is_some() { &Fig::RESTORE[..] } else { &[] }).copied().collect();
    let shootout = Shootout {
        schema: SCHEMA_VERSION,
        what: "vmm shoot-out",
        n: a.n,
        warmup: a.warmup,
        image: a
            .base
            .initramfs
            .as_ref()
            .or(a.base.rootfs.as_ref())
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| crate::locate::DEFAULT_IMAGE.into()),
        snapshots: a.snapshots.as_ref().map(|d| d.display().to_string()),
        clones: a.clones,
        order: runnable.iter().map(|&i| s.entrants[i].vmm.name().to_string()).collect(),
        vmms: s.entrants.iter().map(|e| result_of(e, &figs)).collect(),
    };
    Ok((shootout, s.failure))
}

/// The shoot-out as it goes: the VMMs, and the first failure.
struct Shoot {
    entrants: Vec<Entrant>,
    failure: Option<Error>,
}

impl Shoot {
    /// The VMMs that can run here, by their place in the list.
    fn runnable(&self) -> Vec<usize> {
        (0..self.entrants.len()).filter(|&i| self.entrants[i].out.is_none()).collect()
    }

    /// Each VMM's snapshot `dir/<vmm>`, taken when it is not there. One the VMM refuses leaves its
    /// cold boots to go on, its snapshot's figures saying why there are none.
    fn snapshots(&mut self, dir: &Path) -> Result<(), Error> {
        for e in self.entrants.iter_mut().filter(|e| e.out.is_none()) {
            let at = dir.join(e.vmm.name());
            crate::launch::progress(true, &format!("{}: snapshot {}", e.vmm.name(), at.display()));
            match snapshot(e.vmm, &e.options, &at) {
                Ok(()) => e.snapshot = Some(at),
                Err(err @ Error::Interrupted(_)) => return Err(err),
                Err(err) => {
                    let why = format!("no snapshot: {}", Cannot::of(&err).why.lines().next().unwrap_or_default());
                    for f in Fig::RESTORE {
                        e.tally.add(f, Err(why.clone()));
                    }
                    // Refused before anything started (this VMM cannot snapshot this guest here) is
                    // not a failure; a snapshot that ran and failed is.
                    if !refused_before_start(&err) {
                        let which = format!("{}: snapshot into {}", e.vmm.name(), at.display());
                        self.failure.get_or_insert(Error::In { which, source: Box::new(err) });
                    }
                }
            }
        }
        Ok(())
    }

    /// The interleaved rounds: `steps` of the VMMs `runnable` (indices into it).
    fn rounds(
        &mut self,
        runnable: &[usize],
        steps: &[Step],
        restore_base: &Options,
        host: &HostOffer,
        progress: &mut dyn FnMut(usize, usize, &str),
    ) -> Result<(), Error> {
        let total = steps.len();
        for (i, step) in steps.iter().enumerate() {
            let e = &mut self.entrants[runnable[step.vmm]];
            if e.out.is_some() {
                continue;
            }
            let result = match (step.kind, &e.snapshot) {
                (Kind::Boot, _) => crate::run::run(&e.options),
                (Kind::Restore, Some(dir)) => restore_once(dir, restore_base, host),
                // No snapshot: its figures say why.
                (Kind::Restore, None) => continue,
            };
            let warmup = if step.measured { "" } else { " (warm-up)" };
            let what = format!("{} {} of round {}", e.vmm.name(), kind_name(step.kind), step.round + 1);
            let r = match result {
                Ok(r) => r,
                Err(err @ Error::Interrupted(_)) => return Err(err),
                Err(err) => {
                    progress(i + 1, total, &format!("{what}{warmup}: failed"));
                    fail(e, &mut self.failure, what, err);
                    continue;
                }
            };
            let took = r.restore.as_ref().map(|x| x.total_us).or(r.phases.as_ref().map(|p| p.total_us));
            progress(i + 1, total, &format!("{what}{warmup}: total {} ms", took.map(report::ms).unwrap_or_else(|| "-".into())));
            match (step.measured, step.kind) {
                (false, _) => {}
                (true, Kind::Boot) => figures(&r).into_iter().for_each(|(f, v)| e.tally.add(f, v)),
                (true, Kind::Restore) => {
                    e.tally.add(Fig::RestoreReady, r.restore.as_ref().map(|x| x.total_us).ok_or_else(|| "no restore figures".into()))
                }
            }
            if step.kind == Kind::Boot && e.first.is_none() {
                e.first = Some(r);
            }
        }
        Ok(())
    }

    /// Each snapshot's size, and with `clones` that many copies of each at once.
    fn copies(&mut self, clones: Option<usize>, restore_base: &Options) -> Result<(), Error> {
        for e in self.entrants.iter_mut() {
            let Some(dir) = e.snapshot.clone() else { continue };
            e.tally.add(Fig::SnapshotSize, disk_kib(&dir).map_err(|err| format!("{}: {err}", dir.display())));
            let n = match clones {
                None => {
                    e.tally.add(Fig::PssPerCopy, Err("not asked (--clones N)".into()));
                    continue;
                }
                Some(_) if e.out.is_some() => continue,
                Some(n) => n,
            };
            crate::launch::progress(true, &format!("{}: {n} copies of its snapshot at once", e.vmm.name()));
            let which = format!("{} --clones {n}", e.vmm.name());
            let ro = crate::snapshot::RestoreOptions { dir: dir.clone(), clones: n, mode: None };
            match crate::density::clones(&ro, restore_base) {
                Ok(d) => {
                    d.memory.iter().for_each(|m| e.tally.add(Fig::PssPerCopy, Ok(m.pss_kib)));
                    if !d.failures.is_empty() {
                        let err = Error::Failed(format!("{} of {n} copies failed: {}", d.failures.len(), d.failures.join("; ")));
                        e.tally.add(Fig::PssPerCopy, Err(format!("copies failed: {}", d.failures.join("; "))));
                        fail(e, &mut self.failure, which, err);
                    }
                }
                Err(err @ Error::Interrupted(_)) => return Err(err),
                Err(err) => fail(e, &mut self.failure, which, err),
            }
        }
        Ok(())
    }
}

fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::Boot => "boot",
        Kind::Restore => "restore",
    }
}

/// A VMM's entry: its options, or why it cannot run here (nothing is started to find out).
fn entrant(vmm: Vmm, base: &Options, host: &HostOffer) -> Entrant {
    let arch = base.arch.or_else(|| base.kernel.as_deref().and_then(crate::locate::kernel_file_arch)).unwrap_or(host.arch);
    let kernel = base.kernel.as_deref().map(|k| kernel_for(vmm, k, arch, Path::is_file));
    let options = Options { vmm: VmmChoice::Named(vmm), kernel, ..base.clone() };
    // What the VMM itself refuses (its program missing, the kernel, an option) first: the fix to
    // make before the host's. Planned as the first run would be (pure: nothing is made, and no
    // run's name is used up).
    let refused = crate::plan::plan(&options, host, 0).err().map(|e| Cannot::of(&e));
    let cannot = refused.or_else(|| kvm_refusal(vmm, host));
    Entrant { vmm, options, tally: Tally::default(), first: None, out: cannot.map(|c| (Status::Cannot, c)), snapshot: None }
}

/// Whether `e` refused before anything started: a usage error, something missing, a snapshot
/// that cannot be taken or restored here.
fn refused_before_start(e: &Error) -> bool {
    use crate::error::ExitCode;
    matches!(e.exit_code(), ExitCode::Usage | ExitCode::Missing | ExitCode::BadSnapshot)
}

/// A run of `e` failed: it is stopped, and the first failure sets the exit code.
fn fail(e: &mut Entrant, failure: &mut Option<Error>, which: String, err: Error) {
    let c = Cannot::of(&err);
    e.out = Some((Status::Failed, Cannot { why: format!("{which}: {}", c.why.lines().next().unwrap_or_default()), fix: c.fix }));
    failure.get_or_insert(Error::In { which, source: Box::new(err) });
}

/// `dir` holds a snapshot of `vmm` already (kept from an earlier shoot-out), or gets one now.
fn snapshot(vmm: Vmm, o: &Options, dir: &Path) -> Result<(), Error> {
    if dir.join(crate::snapshot::manifest::MANIFEST).is_file() {
        let m = crate::snapshot::Manifest::read(dir)?;
        if m.vmm != vmm {
            return Err(Error::BadSnapshot {
                what: format!("{} is a snapshot of {}, not of {}", dir.display(), m.vmm.name(), vmm.name()),
                fix: "pass a --restore directory of the shoot-out's own (one snapshot per VMM, named after it)".into(),
            });
        }
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent).map_err(Error::io(format!("create {}", parent.display())))?;
    }
    crate::snapshot::take(o, dir).map(|_| ())
}

/// One copy of the snapshot in `dir`, restored and made unique.
fn restore_once(dir: &Path, base: &Options, host: &HostOffer) -> Result<Report, Error> {
    use crate::snapshot::restore;
    let ro = crate::snapshot::RestoreOptions { dir: dir.to_path_buf(), clones: 1, mode: None };
    let prep = restore::prepare(&ro, base, host)?;
    restore::one(&prep, &prep.plans[0], &prep.options)
}

/// The space a snapshot's files take on disk, KiB (a sparse memory file counts what it holds).
fn disk_kib(dir: &Path) -> Result<u64, std::io::Error> {
    use std::os::unix::fs::MetadataExt;
    let mut blocks = 0;
    for f in std::fs::read_dir(dir)? {
        let m = f?.metadata()?;
        if m.is_file() {
            blocks += m.blocks();
        }
    }
    Ok(blocks / 2)
}

fn result_of(e: &Entrant, figs: &[Fig]) -> VmmResult {
    let status = e.out.as_ref().map(|(s, _)| *s).unwrap_or(Status::Measured);
    let ran = e.first.is_some();
    VmmResult {
        vmm: e.vmm.name().to_string(),
        status,
        accel: e.first.as_ref().map(|r| r.accel.clone()),
        representative: e.first.as_ref().is_some_and(|r| r.representative),
        kernel: e.first.as_ref().map(|r| r.kernel.clone()),
        notes: e.first.as_ref().map(|r| r.notes.clone()).unwrap_or_default(),
        why: e.out.as_ref().map(|(_, c)| c.why.clone()),
        fix: e.out.as_ref().and_then(|(_, c)| c.fix.clone()),
        rows: if ran || e.tally.values.values().any(|v| !v.is_empty()) { e.tally.rows(figs) } else { Vec::new() },
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// The chart: a bar group per VMM, its phases stacked (medians, ms, one scale), and beside it the
/// VMM's RSS and PSS at ready (MiB, a scale of their own); with snapshots, restore → ready under
/// the phases. A VMM that did not run is its line of text.
pub fn svg(s: &Shootout) -> String {
    let median = |v: &VmmResult, f: Fig| v.rows.iter().find(|r| r.figure == f.key()).and_then(|r| r.stats).map(|st| st.median);
    let restore = s.snapshots.is_some();
    let group_h = if restore { 72.0 } else { 52.0 };
    let (label_w, time_w, mem_x, mem_w) = (150.0, 520.0, 760.0, 200.0);
    let max_ms =
        s.vmms.iter().flat_map(|v| [median(v, Fig::Total), median(v, Fig::RestoreReady)]).flatten().max().unwrap_or(1).max(1) as f64;
    let max_kib = s.vmms.iter().flat_map(|v| [median(v, Fig::Rss), median(v, Fig::Pss)]).flatten().max().unwrap_or(1).max(1) as f64;
    let height = 70.0 + group_h * s.vmms.len() as f64 + 30.0;
    let mut o = String::new();
    let _ = writeln!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="1040" height="{height}" font-family="monospace" font-size="12"><rect width="100%" height="100%" fill="white"/>"#
    );
    let _ = writeln!(
        o,
        r#"<text x="4" y="16">VMM shoot-out: medians of {} round(s), host clock (ms since the VMM's spawn)</text><text x="{mem_x}" y="16">VMM memory at ready (MiB)</text>"#,
        s.n
    );
    let legend = [("VMM start", "#999"), ("kernel", "#4a7bd0"), ("init", "#3a9e5c"), ("host learns of ready", "#d08a2a")];
    for (i, (name, colour)) in legend.iter().enumerate() {
        let x = 4.0 + 170.0 * i as f64;
        let _ = writeln!(o, r#"<rect x="{x}" y="26" width="10" height="10" fill="{colour}"/><text x="{}" y="35">{name}</text>"#, x + 14.0);
    }
    for (i, v) in s.vmms.iter().enumerate() {
        let y = 56.0 + group_h * i as f64;
        let _ = writeln!(o, r#"<text x="4" y="{}">{} ({})</text>"#, y + 14.0, esc(&v.vmm), esc(v.accel.as_deref().unwrap_or("-")));
        let Some(total) = median(v, Fig::Total) else {
            let why = v.why.clone().unwrap_or_else(|| "no figures".into());
            let what = if v.status == Status::Cannot { "cannot run here" } else { "not measured" };
            let _ = writeln!(o, r##"<text x="{label_w}" y="{}" fill="#a00">{what}: {}</text>"##, y + 14.0, esc(&why));
            continue;
        };
        let (kernel, init) = (median(v, Fig::Kernel).unwrap_or(0), median(v, Fig::Init).unwrap_or(0));
        // Without a VMM start, what is not the guest's (before the kernel, after ready) is one grey span.
        let start = median(v, Fig::VmmStart).unwrap_or_else(|| total.saturating_sub(kernel + init));
        let learn = total.saturating_sub(start + kernel + init);
        let mut x = label_w;
        for (us, colour, name) in [
            (start, "#999", "VMM start"),
            (kernel, "#4a7bd0", "kernel"),
            (init, "#3a9e5c", "init"),
            (learn, "#d08a2a", "host learns of ready"),
        ] {
            let w = time_w * us as f64 / max_ms;
            let _ = writeln!(
                o,
                r#"<rect x="{x:.1}" y="{y}" width="{w:.1}" height="18" fill="{colour}"><title>{} {name} {} ms</title></rect>"#,
                esc(&v.vmm),
                report::ms(us)
            );
            x += w;
        }
        let _ = writeln!(o, r#"<text x="{:.1}" y="{}">{} ms</text>"#, x + 4.0, y + 14.0, report::ms(total));
        if let Some(r) = median(v, Fig::RestoreReady).filter(|_| restore) {
            let w = time_w * r as f64 / max_ms;
            let _ = writeln!(
                o,
                r##"<rect x="{label_w}" y="{}" width="{w:.1}" height="14" fill="#7a5cc0"><title>restore -> ready</title></rect><text x="{:.1}" y="{}">restore -> ready {} ms</text>"##,
                y + 22.0,
                label_w + w + 4.0,
                y + 33.0,
                report::ms(r)
            );
        }
        for (j, (f, colour)) in [(Fig::Rss, "#b0b0b0"), (Fig::Pss, "#606060")].into_iter().enumerate() {
            let Some(kib) = median(v, f) else { continue };
            let yy = y + 10.0 * j as f64;
            let w = mem_w * kib as f64 / max_kib;
            let _ = writeln!(
                o,
                r#"<rect x="{mem_x}" y="{yy}" width="{w:.1}" height="9" fill="{colour}"/><text x="{:.1}" y="{}" font-size="10">{} {}</text>"#,
                mem_x + w + 4.0,
                yy + 8.0,
                f.head(),
                f.show(kib)
            );
        }
    }
    o.push_str("</svg>\n");
    o
}

#[cfg(test)]
mod tests;
