//! The result of one boot ([`Report`], also the `--json` schema, documented in docs/host-probe.md)
//! and its renderings: a text table, JSON, and an SVG waterfall.

use agent::proto::Ready;
use serde::Serialize;
use std::fmt::Write as _;

use crate::measure::{mark_name, Mark};

/// Version of the JSON schema; bumped only when a field changes meaning or goes away.
pub const SCHEMA_VERSION: u32 = 1;

/// A port-0x80 mark placed on the host clock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostMark {
    pub code: u8,
    pub name: String,
    /// Microseconds since the VMM was spawned.
    pub t_us: u64,
}

/// Host-clock figures: microseconds of CLOCK_MONOTONIC since the VMM process was spawned.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct HostTimes {
    /// The VMM is up: QEMU connected its debugcon socket; cloud-hypervisor's `vm booting` event.
    pub vmm_ready_us: Option<u64>,
    /// Where `marks` came from: `debugcon arrival` (QEMU) or `vmm log prefix` (cloud-hypervisor).
    pub marks_source: String,
    pub marks: Vec<HostMark>,
    /// chinit's Ready JSON pushed to the host vsock listener (`chinit.notify`).
    pub notify_us: Option<u64>,
    /// First `200` from `GET /ready` over the TAP.
    pub ready_tcp_us: Option<u64>,
    /// First `200` from `GET /ready` over vsock (`CONNECT <port>` on the hybrid socket).
    pub ready_vsock_us: Option<u64>,
    /// `GET /ready` attempts over the TAP up to the first `200`: each sent the guest a SYN (those
    /// before its driver is up wait in the TAP's queue, at most 8, or are dropped).
    pub tcp_attempts: u32,
    /// Of those, the ones made after the init's first port-0x80 mark (`None` without marks): 1
    /// when the host waited for the guest's word instead of polling its boot.
    pub tcp_attempts_after_init_mark: Option<u32>,
}

/// The four phases users know, plus the total, in microseconds. Each says which clock it is from in
/// docs/host-probe.md and in the text table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Phases {
    /// Guest clock: kernel start → chinit's first instruction (`init_start_us`).
    pub kernel_boot_us: u64,
    /// Guest clock: chinit start → ready.
    pub init_us: u64,
    /// Guest clock: kernel start → ready (`ready_us`).
    pub ready_in_guest_us: u64,
    /// Host total minus guest uptime at ready: VMM start, firmware, and the host learning of ready.
    pub host_overhead_us: u64,
    /// Host clock: spawn → first answer that says ready (the earliest of notify, TAP, vsock).
    pub total_us: u64,
    /// Host clock: spawn → kernel start, found by aligning the 0x60 mark with `init_start_us`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel_start_host_us: Option<u64>,
    /// Host clock: mark 0x60 → mark 0x63, the init phase as the host saw it (a check on the guest
    /// clock; includes the marks' own delivery delay).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init_host_us: Option<u64>,
}

/// Memory of the VMM process at ready, from `/proc/<pid>/smaps_rollup`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Memory {
    pub rss_kib: u64,
    pub pss_kib: u64,
}

/// Everything one boot measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub schema: u32,
    pub vmm: String,
    /// `kvm` or `tcg`.
    pub accel: String,
    /// False under TCG emulation: figures are not those of a real host.
    pub representative: bool,
    pub kernel: String,
    /// `disk`, `pmem` or `initramfs`.
    pub root_kind: String,
    pub root: String,
    /// How the user's image was protected: e.g. `read-only virtio-blk`.
    pub root_attach: String,
    /// Which vsock the guest had: the kernel's vhost-vsock, or a hybrid socket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vsock: Option<String>,
    pub cmdline: String,
    /// The VMM's command line, program first (what `--dry-run` prints).
    pub vmm_argv: Vec<String>,
    /// Warnings about this run (emulation, a missing helper), for people reading the report.
    pub notes: Vec<String>,
    pub host: HostTimes,
    /// cloud-hypervisor's event-monitor events (`t_us` from the monitor's start, about spawn).
    pub events: Vec<crate::measure::Event>,
    /// chinit's own timeline (`GET /ready`), CLOCK_BOOTTIME microseconds; absent with `--no-agent`.
    pub guest: Option<Ready>,
    /// Absent when there is no chinit timeline.
    pub phases: Option<Phases>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<Memory>,
    /// The workload (`chinit.exec=`) as last heard of: from chinit's last push, else `/ready`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<agent::proto::Workload>,
    /// The `chinit: ready in X ms` figure from the serial console, when it was printed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub console_ready_ms: Option<f64>,
    /// A copy restored from a snapshot (`run --restore`): its restore phases. `phases` is absent then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<crate::snapshot::RestoreFigures>,
    /// Phase 1 split by initcall (`--kernel-profile`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_profile: Option<crate::kprofile::KernelProfile>,
}

/// Computes the phases from host times and chinit's timeline.
///
/// `marks` are on the host clock. The 0x60 mark is written by chinit as it starts, when the guest
/// clock reads about `init_start_us`: the kernel started at `mark(0x60) - init_start_us` on the host.
/// A VMM with a ready mark only (Firecracker's boot timer) gives it as `mark(0x63) - ready_us`.
pub fn phases(host: &HostTimes, guest: &Ready) -> Phases {
    let total_us = [host.notify_us, host.ready_tcp_us, host.ready_vsock_us].into_iter().flatten().min().unwrap_or(0);
    let first = |code: u8| host.marks.iter().find(|m| m.code == code).map(|m| m.t_us);
    let kernel_start_host_us = first(crate::measure::MARK_INIT_START)
        .and_then(|t| t.checked_sub(guest.init_start_us))
        .or_else(|| first(crate::measure::MARK_READY).and_then(|t| t.checked_sub(guest.ready_us)));
    let init_host_us =
        first(crate::measure::MARK_READY).zip(first(crate::measure::MARK_INIT_START)).and_then(|(ready, start)| ready.checked_sub(start));
    Phases {
        kernel_boot_us: guest.init_start_us,
        init_us: guest.init_to_ready_us(),
        ready_in_guest_us: guest.ready_us,
        host_overhead_us: total_us.saturating_sub(guest.ready_us),
        total_us,
        kernel_start_host_us,
        init_host_us,
    }
}

/// Marks on the host clock: `offset_us` is added to each (the VMM's clock start after spawn).
pub fn host_marks(marks: &[Mark], offset_us: u64) -> Vec<HostMark> {
    marks
        .iter()
        .map(|m| HostMark {
            code: m.code,
            name: mark_name(m.code).unwrap_or(crate::measure::mark_range(m.code)).to_string(),
            t_us: m.t_us + offset_us,
        })
        .collect()
}

/// A figure benchmarks compare.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Figure {
    KernelBoot,
    Init,
    ReadyInGuest,
    HostOverhead,
    Total,
    InitHost,
    Notify,
    ReadyTcp,
    ReadyVsock,
    /// When a port-0x80 mark of chinit's reached the host.
    Mark(u8),
    /// One of chinit's steps (the baseline's too), by name.
    Step(String),
    /// A restored copy: spawn → the VM runs again.
    VmmRestore,
    /// A restored copy: the restore request → chinit's answer.
    MakeUnique,
    /// A restored copy: chinit's restore steps, first start → last end (guest clock).
    GuestRestore,
}

impl std::fmt::Display for Figure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Figure::KernelBoot => f.write_str("kernel boot"),
            Figure::Init => f.write_str("init"),
            Figure::ReadyInGuest => f.write_str("ready in guest"),
            Figure::HostOverhead => f.write_str("host overhead"),
            Figure::Total => f.write_str("total (host)"),
            Figure::InitHost => f.write_str("init (host, marks)"),
            Figure::Notify => f.write_str("notify (host)"),
            Figure::ReadyTcp => f.write_str("/ready tcp (host)"),
            Figure::ReadyVsock => f.write_str("/ready vsock (host)"),
            Figure::Mark(code) => write!(f, "mark 0x{code:02x} (host)"),
            Figure::Step(name) => write!(f, "step {name}"),
            Figure::VmmRestore => f.write_str("VMM restore (host)"),
            Figure::MakeUnique => f.write_str("make unique (host)"),
            Figure::GuestRestore => f.write_str("restore steps (guest)"),
        }
    }
}

/// The figures of a run for benchmarks, in microseconds, in display order. A restored copy's
/// `total (host)` is spawn → ready as a unique copy, so it compares with a cold boot's.
pub fn figures(r: &Report) -> Vec<(Figure, Option<u64>)> {
    if let Some(rs) = &r.restore {
        let mut v = vec![
            (Figure::Total, Some(rs.total_us)),
            (Figure::VmmRestore, Some(rs.vmm_restored_us)),
            (Figure::MakeUnique, Some(rs.answered_us.saturating_sub(rs.request_sent_us))),
            (Figure::GuestRestore, Some(rs.guest_restore_us)),
            (Figure::Notify, r.host.notify_us),
            (Figure::ReadyTcp, r.host.ready_tcp_us),
        ];
        for s in r.guest.iter().flat_map(|g| &g.steps).filter(|s| s.name.starts_with("restore.")) {
            v.push((Figure::Step(s.name.clone()), Some(s.duration_us())));
        }
        return v;
    }
    let p = r.phases.clone().unwrap_or_default();
    let have = r.phases.is_some();
    let mut v = vec![
        (Figure::KernelBoot, have.then_some(p.kernel_boot_us)),
        (Figure::Init, have.then_some(p.init_us)),
        (Figure::ReadyInGuest, have.then_some(p.ready_in_guest_us)),
        (Figure::HostOverhead, have.then_some(p.host_overhead_us)),
        (Figure::Total, have.then_some(p.total_us)),
        (Figure::InitHost, p.init_host_us),
        (Figure::Notify, r.host.notify_us),
        (Figure::ReadyTcp, r.host.ready_tcp_us),
        (Figure::ReadyVsock, r.host.ready_vsock_us),
    ];
    for m in &r.host.marks {
        if crate::measure::mark_name(m.code).is_some() {
            v.push((Figure::Mark(m.code), Some(m.t_us)));
        }
    }
    if let Some(g) = &r.guest {
        for s in &g.steps {
            v.push((Figure::Step(s.name.clone()), Some(s.duration_us())));
        }
    }
    v
}

/// Milliseconds, three decimals (`agent::units`).
pub use agent::units::ms;

/// A duration in microseconds, the unit of every figure.
pub fn micros(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn opt_ms(us: Option<u64>) -> String {
    us.map(ms).unwrap_or_else(|| "-".into())
}

/// The text table.
pub fn text(r: &Report) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "host-probe: {} ({})", r.vmm, r.accel);
    for n in &r.notes {
        let _ = writeln!(o, "  note: {n}");
    }
    let _ = writeln!(o, "  kernel  {}", r.kernel);
    let _ = writeln!(o, "  root    {} ({}, {})", r.root, r.root_kind, r.root_attach);
    if let Some(v) = &r.vsock {
        let _ = writeln!(o, "  vsock   {v}");
    }
    let _ = writeln!(o);
    if let (Some(rs), Some(g)) = (&r.restore, &r.guest) {
        restore_table(&mut o, rs, g);
    } else if let (Some(p), Some(g)) = (&r.phases, &r.guest) {
        phase_table(&mut o, p, g);
        if let Some(k) = &r.kernel_profile {
            kernel_profile_table(&mut o, k);
        }
    } else {
        let _ = writeln!(o, "  no chinit timeline (--no-agent): host-side figures only");
    }
    host_table(&mut o, r);
    o
}

fn phase_table(o: &mut String, p: &Phases, g: &Ready) {
    let _ = writeln!(o, "  {:<42} {:>10}  clock", "phase", "ms");
    let rows = [
        ("1. kernel boot (power on -> init)", p.kernel_boot_us, "guest CLOCK_BOOTTIME at chinit start"),
        ("2. init (mounts, network, agent)", p.init_us, "guest CLOCK_BOOTTIME, chinit start -> ready"),
        ("3. ready in guest (uptime)", p.ready_in_guest_us, "guest CLOCK_BOOTTIME at ready"),
        ("4. host overhead (VMM start, handshake)", p.host_overhead_us, "host total - guest uptime"),
        ("   total (host view)", p.total_us, "host CLOCK_MONOTONIC, spawn -> first ready answer"),
    ];
    for (name, us, clock) in rows {
        let _ = writeln!(o, "  {:<42} {:>10}  {}", name, ms(us), clock);
    }
    if let Some(us) = p.init_host_us {
        let _ = writeln!(o, "  {:<42} {:>10}  host, mark 0x60 -> mark 0x63", "   init as the host saw it", ms(us));
    }
    let _ = writeln!(o);
    step_table(o, "chinit steps", g.steps.iter());
}

/// Phase 1 attributed: its parts, which add up to it, the levels, the longest initcalls and gaps.
fn kernel_profile_table(o: &mut String, k: &crate::kprofile::KernelProfile) {
    let _ = writeln!(o);
    let _ = writeln!(o, "  kernel boot by initcall (--kernel-profile: initcall_debug, the kernel's log read from chinit)");
    let ms_i = |us: i64| if us < 0 { format!("-{}", ms(us.unsigned_abs())) } else { ms(us as u64) };
    let rows = [
        ("early set-up (clock zero -> first initcall)", ms(k.early_us)),
        (&*format!("initcalls ({})", k.initcalls.len()), ms(k.initcalls_us)),
        ("gaps (between initcalls, root, init)", ms(k.gaps_us)),
        ("Run init -> chinit's first instruction", ms_i(k.exec_us)),
    ];
    for (name, v) in rows {
        let _ = writeln!(o, "  {name:<44} {v:>10}");
    }
    let sum = k.sum_us();
    let _ = writeln!(
        o,
        "  {:<44} {:>10}  {}",
        "sum",
        ms_i(sum),
        if sum == k.phase1_us as i64 { format!("= phase 1 ({})", ms(k.phase1_us)) } else { format!("!= phase 1 ({})", ms(k.phase1_us)) }
    );
    let _ = writeln!(
        o,
        "  note: these figures include initcall_debug's own cost; `host-probe bench --kernel-profile` measures it (A without, B with)"
    );
    let levels: Vec<String> = k.levels.iter().map(|l| format!("{} {} ({})", l.level, ms(l.us), l.count)).collect();
    let _ = writeln!(o, "  by level: {}", levels.join(", "));
    if k.lost > 0 {
        let _ = writeln!(o, "  note: {} log records were lost before chinit read them: some initcalls are missing", k.lost);
    }
    let _ = writeln!(o, "  {:<44} {:>10} {:>10}  level", "longest initcalls", "start", "took");
    for i in k.longest().into_iter().take(crate::kprofile::TOP) {
        let _ = writeln!(o, "  {:<44} {:>10} {:>10}  {}", i.name, ms(i.start_us), ms(i.us), i.level.as_deref().unwrap_or("?"));
    }
    for h in &k.hints {
        let _ = writeln!(o, "  hint: {h}");
    }
    let _ = writeln!(o, "  {:<44} {:>10} {:>10}", "longest early set-up stretches (after)", "start", "took");
    for g in k.early.iter().take(5) {
        let after: String = g.after.chars().take(44).collect();
        let _ = writeln!(o, "  {after:<44} {:>10} {:>10}", ms(g.start_us), ms(g.us));
    }
    let _ = writeln!(o, "  {:<44} {:>10} {:>10}", "longest gaps (after)", "start", "took");
    for g in k.gaps.iter().take(5) {
        let after: String = g.after.chars().take(44).collect();
        let _ = writeln!(o, "  {after:<44} {:>10} {:>10}", ms(g.start_us), ms(g.us));
    }
}

/// The steps, one row each, on the guest clock.
fn step_table<'a>(o: &mut String, title: &str, steps: impl Iterator<Item = &'a agent::proto::Step>) {
    let _ = writeln!(o, "  {title} (guest CLOCK_BOOTTIME, ms since kernel start)");
    let _ = writeln!(o, "  {:<30} {:>10} {:>10} {:>10}", "step", "start", "end", "took");
    for s in steps {
        let _ = writeln!(
            o,
            "  {:<30} {:>10} {:>10} {:>10}{}",
            s.name,
            ms(s.start_us),
            ms(s.end_us),
            ms(s.duration_us()),
            s.error.as_ref().map(|e| format!("  error: {e}")).unwrap_or_default()
        );
    }
    let _ = writeln!(o);
}

fn restore_table(o: &mut String, r: &crate::snapshot::RestoreFigures, g: &Ready) {
    let mode = r.memory_restore_mode.as_ref().map(|m| format!(", memory_restore_mode={m}")).unwrap_or_default();
    let _ = writeln!(o, "  restored from {} (generation {}{mode})", r.snapshot, r.generation);
    let _ = writeln!(o, "  this copy: hostname {}, address {}", r.hostname, r.ip.as_deref().unwrap_or("-"));
    let _ = writeln!(o);
    let _ = writeln!(o, "  {:<42} {:>10}  clock", "phase", "ms");
    let rows = [
        ("1. VMM restore (spawn -> VM runs)", r.vmm_restored_us, "host CLOCK_MONOTONIC"),
        ("2. make unique (request -> answer)", r.answered_us.saturating_sub(r.request_sent_us), "host CLOCK_MONOTONIC"),
        ("   of which chinit's restore steps", r.guest_restore_us, "guest CLOCK_BOOTTIME"),
        ("   total: restore -> ready (host view)", r.total_us, "host, spawn -> chinit's answer"),
        ("   the snapshot's machine: boot -> ready", r.cold_boot_us, "host, when it was snapshotted"),
    ];
    for (name, us, clock) in rows {
        let _ = writeln!(o, "  {:<42} {:>10}  {}", name, ms(us), clock);
    }
    if r.total_us > 0 && r.cold_boot_us > 0 {
        let _ = writeln!(o, "  {:<42} {:>10}", "   restore / cold boot", format!("1/{:.1}", r.cold_boot_us as f64 / r.total_us as f64));
    }
    if r.request_attempts > 1 {
        let _ = writeln!(o, "  (the restore request was answered at attempt {})", r.request_attempts);
    }
    let _ = writeln!(o);
    step_table(o, "chinit's restore steps", g.steps.iter().filter(|s| s.name.starts_with("restore.")));
}

fn host_table(o: &mut String, r: &Report) {
    let _ = writeln!(o, "  host timeline (host CLOCK_MONOTONIC, ms since VMM spawn)");
    let h = &r.host;
    let mut events: Vec<(String, Option<u64>)> = vec![("VMM ready".into(), h.vmm_ready_us)];
    if let Some(p) = &r.phases {
        events.push(("kernel start (0x60 mark - init_start_us)".into(), p.kernel_start_host_us));
    }
    // chinit's marks one by one; anything else (firmware, kernel) grouped by range.
    let mut others: Vec<(&str, usize, u64)> = Vec::new();
    for m in &h.marks {
        if mark_name(m.code).is_some() {
            events.push((format!("mark 0x{:02x} {} ({})", m.code, m.name, h.marks_source), Some(m.t_us)));
        } else {
            let range = crate::measure::mark_range(m.code);
            match others.iter_mut().find(|(r, _, _)| *r == range) {
                Some(o) => o.1 += 1,
                None => others.push((range, 1, m.t_us)),
            }
        }
    }
    for (range, n, first) in others {
        events.push((format!("{n} other port-0x80 write(s), {range} range, first"), Some(first)));
    }
    // In time order; figures that never came last.
    events.sort_by_key(|(_, t)| t.unwrap_or(u64::MAX));
    events.push(("ready pushed over vsock (notify)".into(), h.notify_us));
    events.push(("first 200 from /ready over TAP".into(), h.ready_tcp_us));
    events.push(("first 200 from /ready over vsock".into(), h.ready_vsock_us));
    for (name, t) in events {
        let _ = writeln!(o, "  {:<54} {:>10}", name, opt_ms(t));
    }
    if let Some(m) = r.memory {
        let _ = writeln!(o);
        let _ = writeln!(
            o,
            "  VMM memory at ready: RSS {:.1} MiB, PSS {:.1} MiB (/proc/<pid>/smaps_rollup)",
            m.rss_kib as f64 / 1024.0,
            m.pss_kib as f64 / 1024.0
        );
    }
    if let Some(c) = r.console_ready_ms {
        let _ = writeln!(o, "  console: chinit: ready in {c:.3} ms");
    }
    if let Some(w) = &r.workload {
        let _ = writeln!(o, "  workload: {w}");
    }
    if !r.events.is_empty() {
        let _ = writeln!(o);
        let _ = writeln!(o, "  VMM events (event monitor, ms since VMM start)");
        for e in &r.events {
            let _ = writeln!(o, "  {:<54} {:>10}", format!("{} {}", e.source, e.event), ms(e.t_us));
        }
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// The waterfall: one bar per span on the host clock (guest spans moved by the aligned kernel start).
pub fn svg(r: &Report) -> String {
    let mut bars: Vec<(String, u64, u64, &str)> = Vec::new();
    if let (Some(rs), Some(g)) = (&r.restore, &r.guest) {
        bars.push(("VMM restore".into(), 0, rs.vmm_restored_us, "#999"));
        bars.push(("restore request -> answer".into(), rs.request_sent_us, rs.answered_us, "#d08a2a"));
        // Guest steps on the host clock: the 0x68 mark (restore start) aligns the two, else the
        // request's sending does.
        let steps: Vec<_> = g.steps.iter().filter(|s| s.name.starts_with("restore.")).collect();
        let first = steps.iter().map(|s| s.start_us).min().unwrap_or(0);
        let anchor = r.host.marks.iter().find(|m| m.code == agent::marks::RESTORE_START).map(|m| m.t_us).unwrap_or(rs.request_sent_us);
        for s in steps {
            let at = anchor + s.start_us.saturating_sub(first);
            bars.push((s.name.clone(), at, at + s.duration_us(), "#3a9e5c"));
        }
        return svg_bars(r, &bars);
    }
    let (p, g) = match (&r.phases, &r.guest) {
        (Some(p), Some(g)) => (p, g),
        _ => {
            for m in &r.host.marks {
                bars.push((format!("0x{:02x} {}", m.code, m.name), 0, m.t_us, "#3a9e5c"));
            }
            return svg_bars(r, &bars);
        }
    };
    let ks = p.kernel_start_host_us;
    if let Some(ks) = ks {
        bars.push(("VMM start + firmware".into(), 0, ks, "#999"));
        bars.push(("kernel boot".into(), ks, ks + g.init_start_us, "#4a7bd0"));
        kernel_bars(&mut bars, r, ks);
        for s in &g.steps {
            bars.push((s.name.clone(), ks + s.start_us, ks + s.end_us, "#3a9e5c"));
        }
        bars.push(("host learns of ready".into(), ks + g.ready_us, p.total_us.max(ks + g.ready_us), "#d08a2a"));
    } else {
        bars.push(("kernel boot (guest)".into(), 0, g.init_start_us, "#4a7bd0"));
        kernel_bars(&mut bars, r, 0);
        for s in &g.steps {
            bars.push((s.name.clone(), s.start_us, s.end_us, "#3a9e5c"));
        }
        bars.push(("total (host)".into(), 0, p.total_us, "#d08a2a"));
    }
    svg_bars(r, &bars)
}

/// With `--kernel-profile`: the kernel's early set-up and its largest initcalls, labelled, at
/// `at` + their guest-clock start.
fn kernel_bars(bars: &mut Vec<(String, u64, u64, &str)>, r: &Report, at: u64) {
    let Some(k) = &r.kernel_profile else { return };
    bars.push(("  early set-up".into(), at, at + k.early_us, "#7fa3e0"));
    let mut top: Vec<_> = k.longest().into_iter().take(8).collect();
    top.sort_by_key(|i| i.start_us);
    for i in top {
        bars.push((format!("  {}", i.name), at + i.start_us, at + i.start_us + i.us, "#7fa3e0"));
    }
}

fn svg_bars(r: &Report, bars: &[(String, u64, u64, &str)]) -> String {
    let end = bars.iter().map(|b| b.2).max().unwrap_or(1).max(1);
    let (label_w, chart_w, row_h) = (220.0, 760.0, 22.0);
    let height = 40.0 + row_h * bars.len() as f64;
    let mut o = String::new();
    let _ = writeln!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{height}" font-family="monospace" font-size="12">"#,
        label_w + chart_w + 90.0
    );
    let _ = writeln!(o, r#"<text x="4" y="16">{} ({}): ms since VMM spawn, host clock</text>"#, esc(&r.vmm), esc(&r.accel));
    for (i, (name, a, b, color)) in bars.iter().enumerate() {
        let y = 28.0 + row_h * i as f64;
        let x = label_w + chart_w * (*a as f64) / (end as f64);
        let w = (chart_w * (b.saturating_sub(*a) as f64) / (end as f64)).max(1.0);
        let _ = writeln!(
            o,
            r#"<text x="4" y="{}">{}</text><rect x="{x:.1}" y="{y}" width="{w:.1}" height="{}" fill="{color}"/><text x="{:.1}" y="{}">{} ms</text>"#,
            y + 14.0,
            esc(name),
            row_h - 6.0,
            x + w + 4.0,
            y + 14.0,
            ms(b.saturating_sub(*a))
        );
    }
    o.push_str("</svg>\n");
    o
}

#[cfg(test)]
pub(crate) mod tests;
