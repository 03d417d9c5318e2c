//! Where the kernel's time goes (`--kernel-profile`): phase 1 (the kernel's clock zero → chinit's
//! first instruction) split into early set-up, every initcall (`initcall_debug`) and the gaps no
//! initcall explains, from the kernel's log buffer as chinit hands it over (`GET /v1/kmsg`), never
//! from the console. Pure: records, a `System.map` and chinit's start in, a profile out.

use agent::proto::{Kmsg, KmsgRecord};
use serde::Serialize;

/// What `--kernel-profile` adds to the kernel command line: every initcall logged (at debug level,
/// so into the buffer, not onto a quiet console), and a buffer with room for them.
pub const CMDLINE: &str = "initcall_debug log_buf_len=1M";

/// An avoidable initcall this long or longer gets a hint in the report.
pub const HINT_AT_US: u64 = 1_000;

/// How many initcalls and gaps the text report names.
pub const TOP: usize = 15;

/// One initcall: its function, its level, when it started and how long it ran (the log records'
/// clock, microseconds since the kernel's clock zero).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Initcall {
    pub name: String,
    /// `early`, `0` .. `7`, `rootfs` (from `System.map`); absent when nothing says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
    pub start_us: u64,
    pub us: u64,
    /// What the kernel itself printed as the duration (`after N usecs`): a coarse clock until the
    /// clocksource switch (jiffies), so `us` is taken from the records' own clock instead.
    pub reported_us: u64,
}

/// A stretch of phase 1 inside no initcall, named by the log record that starts it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Gap {
    pub after: String,
    /// The record that ends it (the next initcall's start, or another record).
    pub until: String,
    pub start_us: u64,
    pub us: u64,
}

/// Initcall time of one level.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Level {
    pub level: String,
    pub count: usize,
    pub us: u64,
}

/// Phase 1, attributed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KernelProfile {
    /// Phase 1 as chinit measured it (`init_start_us`, CLOCK_BOOTTIME).
    pub phase1_us: u64,
    /// The kernel's clock zero → the first initcall.
    pub early_us: u64,
    /// All initcalls before init started.
    pub initcalls_us: u64,
    /// Between initcalls, and after the last until the kernel starts init.
    pub gaps_us: u64,
    /// The kernel's `Run <init> as init process` → chinit's first clock reading: the exec, and the
    /// difference between the log's clock and CLOCK_BOOTTIME.
    pub exec_us: i64,
    /// Every initcall before init, in the order they ran.
    pub initcalls: Vec<Initcall>,
    pub levels: Vec<Level>,
    /// The gaps of 1 ms or more, longest first.
    pub gaps: Vec<Gap>,
    /// The early set-up's stretches of 1 ms or more, each between two log records, longest first.
    pub early: Vec<Gap>,
    /// Log records lost before chinit read them (the buffer was too small): the profile is
    /// incomplete when not 0.
    pub lost: u64,
    /// One line for each known avoidable initcall this kernel ran, with its fix ([`hints`]).
    pub hints: Vec<String>,
}

impl KernelProfile {
    /// early + initcalls + gaps + exec: phase 1 by construction of the exec part; the three parts
    /// before it are each measured on the log's clock.
    pub fn sum_us(&self) -> i64 {
        (self.early_us + self.initcalls_us + self.gaps_us) as i64 + self.exec_us
    }

    /// The initcalls, longest first.
    pub fn longest(&self) -> Vec<&Initcall> {
        let mut v: Vec<&Initcall> = self.initcalls.iter().collect();
        v.sort_by(|a, b| b.us.cmp(&a.us).then(a.start_us.cmp(&b.start_us)));
        v
    }
}

/// Initcalls known to cost boot time that a microVM can do without: the kernel option that makes
/// them slow, and the fix.
const AVOIDABLE: &[(&str, &str, &str)] = &[
    ("pty_init", "CONFIG_LEGACY_PTYS", "registers 256 legacy BSD pty pairs: build with CONFIG_LEGACY_PTYS=n"),
    (
        "i8042_init",
        "CONFIG_SERIO_I8042",
        "probes a PS/2 controller: i8042.noaux i8042.nomux i8042.dumbkbd on the command line, or CONFIG_SERIO_I8042=n",
    ),
    ("raid6_select_algo", "CONFIG_RAID6_PQ_BENCHMARK", "benchmarks RAID6 algorithms at boot: CONFIG_RAID6_PQ_BENCHMARK=n"),
    ("vga_arb_device_init", "CONFIG_VGA_ARB", "the VGA arbiter on a machine without VGA: CONFIG_VGA_ARB=n"),
];

/// One line each for the initcalls in `p` known to be avoidable that took at least `at_least_us`:
/// its name, its time and the fix. With the kernel's `.config` (`config`), only those its option
/// is built in for (pure).
///
/// Then one line for each gap of [`SLOW_GAPS`] that long, when the config is known and sets its
/// option.
pub fn hints(p: &KernelProfile, config: Option<&str>, at_least_us: u64) -> Vec<String> {
    let set = |c: &str, option: &str| c.lines().any(|l| l.trim() == format!("{option}=y"));
    let built_in = |option: &str| config.is_none_or(|c| set(c, option));
    let initcalls = p.longest().into_iter().filter(|i| i.us >= at_least_us).filter_map(|i| {
        let (_, _, fix) = AVOIDABLE.iter().find(|(f, option, _)| *f == i.name && built_in(option))?;
        Some(format!("{} took {:.1} ms: {fix}", i.name, i.us as f64 / 1000.0))
    });
    let gaps = p.gaps.iter().filter(|g| g.us >= at_least_us).filter_map(|g| {
        let (_, _, fix) =
            SLOW_GAPS.iter().find(|(until, option, _)| g.until.starts_with(until) && config.is_some_and(|c| set(c, option)))?;
        Some(format!("the time before \"{}\" took {:.1} ms: {fix}", g.until, g.us as f64 / 1000.0))
    });
    initcalls.chain(gaps).collect()
}

/// Gaps between initcalls known to be slow because of how the kernel was built: the record that
/// ends the gap, the kernel option behind it, and the fix (docs/kernel.md, "The diet").
const SLOW_GAPS: &[(&str, &str, &str)] = &[(
    "Freeing unused kernel image (initmem)",
    "CONFIG_CC_OPTIMIZE_FOR_SIZE",
    "this kernel is built with -Os, which poisons the freed init memory one byte at a time (slow wherever the guest's code is translated: TCG, nested KVM): build it with CONFIG_CC_OPTIMIZE_FOR_PERFORMANCE=y",
)];

/// The `System.map` of `kernel`: beside it (the kernel cache), or `System.map-V` beside
/// `vmlinuz-V` (a Debian kernel package).
pub fn system_map_beside(kernel: &std::path::Path) -> Option<std::path::PathBuf> {
    let dir = kernel.parent()?;
    let name = kernel.file_name()?.to_str()?;
    let version = name.strip_prefix("vmlinuz-").or_else(|| name.strip_prefix("vmlinux-"));
    [Some(dir.join("System.map")), version.map(|v| dir.join(format!("System.map-{v}")))].into_iter().flatten().find(|p| p.is_file())
}

/// Phase 1 attributed, from the kernel's log (`kmsg`: its records on the log's clock, and that
/// clock's offset from CLOCK_BOOTTIME), its `System.map` when there is one, and chinit's start
/// (CLOCK_BOOTTIME); `Err` says why there is no profile.
pub fn profile(kmsg: &Kmsg, system_map: Option<&str>, init_start_us: u64) -> Result<KernelProfile, String> {
    let Some(offset) = kmsg.clock_offset_us else {
        return Err("chinit gave no clock anchor for the kernel's log (a chinit older than --kernel-profile?)".into());
    };
    // Every record on CLOCK_BOOTTIME, `/ready`'s clock (before its zero: 0).
    let records: Vec<KmsgRecord> =
        kmsg.records.iter().map(|r| KmsgRecord { usec: (r.usec as i64 - offset).max(0) as u64, ..r.clone() }).collect();
    let lost = kmsg.lost;
    let symbols = system_map.map(Symbols::parse).unwrap_or_default();
    let run_init = records.iter().find(|r| r.text.starts_with("Run ") && r.text.ends_with(" as init process"));
    let end_us = run_init.map_or(init_start_us, |r| r.usec);
    let mut initcalls: Vec<Initcall> = Vec::new();
    let mut gaps = Vec::new();
    // The stretches before the first initcall: the early set-up, record by record.
    let mut early = Vec::new();
    let mut open: Option<(&str, u64)> = None;
    // Since when the time is outside every initcall, and what began it.
    let mut outside: Option<(u64, String)> = Some((0, "the kernel's clock zero".into()));
    for r in records.iter().take_while(|r| r.usec <= end_us) {
        if let Some(f) = r.text.strip_prefix("calling  ") {
            if let Some((since, after)) = outside.take() {
                let until = format!("{} starts", symbols.name(f.split(" @ ").next().unwrap_or(f).trim()));
                let gap = Gap { after, until, start_us: since, us: r.usec.saturating_sub(since) };
                if initcalls.is_empty() { &mut early } else { &mut gaps }.push(gap);
            }
            open = Some((f.split(" @ ").next().unwrap_or(f).trim(), r.usec));
        } else if let Some(rest) = r.text.strip_prefix("initcall ") {
            let (Some((f, after)), Some((started, start))) = (rest.split_once(" returned "), open) else { continue };
            if started != f.trim() {
                continue;
            }
            open = None;
            let reported =
                after.split(" after ").nth(1).and_then(|t| t.split_whitespace().next()).and_then(|n| n.parse().ok()).unwrap_or(0);
            let name = symbols.name(started);
            let level = symbols.level_of(&name);
            outside = Some((r.usec, format!("after {name}")));
            initcalls.push(Initcall { name, level, start_us: start, us: r.usec.saturating_sub(start), reported_us: reported });
        } else if let Some((since, after)) = outside.take() {
            // A record between initcalls splits the time outside them: what follows is its.
            let gap = Gap { after, until: r.text.clone(), start_us: since, us: r.usec.saturating_sub(since) };
            if initcalls.is_empty() { &mut early } else { &mut gaps }.push(gap);
            outside = Some((r.usec, r.text.clone()));
        }
    }
    let Some(first) = initcalls.first() else {
        return Err("the kernel's log has no initcall (boot with initcall_debug, and a log buffer that holds them: log_buf_len=1M)".into());
    };
    let early_us = first.start_us;
    if let Some((since, after)) = outside {
        gaps.push(Gap {
            after,
            until: run_init.map_or_else(|| "init starts".into(), |r| r.text.clone()),
            start_us: since,
            us: end_us.saturating_sub(since),
        });
    }
    let initcalls_us = initcalls.iter().map(|i| i.us).sum();
    let gaps_us = gaps.iter().map(|g| g.us).sum();
    let mut levels: Vec<Level> = Vec::new();
    for i in &initcalls {
        let l = i.level.clone().unwrap_or_else(|| "?".into());
        match levels.iter_mut().find(|x| x.level == l) {
            Some(x) => {
                x.count += 1;
                x.us += i.us;
            }
            None => levels.push(Level { level: l, count: 1, us: i.us }),
        }
    }
    for stretches in [&mut gaps, &mut early] {
        stretches.retain(|g| g.us >= 1000);
        stretches.sort_by_key(|g| std::cmp::Reverse(g.us));
    }
    Ok(KernelProfile {
        phase1_us: init_start_us,
        early_us,
        initcalls_us,
        gaps_us,
        exec_us: init_start_us as i64 - (early_us + initcalls_us + gaps_us) as i64,
        initcalls,
        levels,
        gaps,
        early,
        lost,
        hints: Vec::new(),
    })
}

/// What `System.map` says: the function at each address, and the level of each initcall.
#[derive(Debug, Default)]
struct Symbols {
    /// (address, name), text symbols only.
    text: Vec<(u64, String)>,
    /// (initcall entry symbol, its level), from the entry's place between the levels' bounds.
    entries: Vec<(String, String)>,
}

/// The levels in the order the kernel lays them out, each with the symbol that starts it.
const LEVELS: &[(&str, &str)] = &[
    ("__initcall_start", "early"),
    ("__initcall0_start", "0"),
    ("__initcall1_start", "1"),
    ("__initcall2_start", "2"),
    ("__initcall3_start", "3"),
    ("__initcall4_start", "4"),
    ("__initcall5_start", "5"),
    ("__initcallrootfs_start", "rootfs"),
    ("__initcall6_start", "6"),
    ("__initcall7_start", "7"),
    ("__initcall_end", ""),
];

impl Symbols {
    fn parse(map: &str) -> Symbols {
        let mut all: Vec<(u64, &str, &str)> = Vec::new();
        for l in map.lines() {
            let mut f = l.split_whitespace();
            let (Some(a), Some(kind), Some(name)) = (f.next(), f.next(), f.next()) else { continue };
            let Ok(a) = u64::from_str_radix(a, 16) else { continue };
            all.push((a, kind, name));
        }
        let bound = |s: &str| all.iter().find(|(_, _, n)| *n == s).map(|(a, _, _)| *a);
        let bounds: Vec<(u64, &str)> = LEVELS.iter().filter_map(|(s, l)| bound(s).map(|a| (a, *l))).collect();
        let level_at = |a: u64| bounds.windows(2).find(|w| a >= w[0].0 && a < w[1].0).map(|w| w[0].1.to_string());
        let entries = all
            .iter()
            .filter(|(_, _, n)| n.starts_with("__initcall_") && !n.ends_with("_start") && !n.ends_with("_end"))
            .filter_map(|(a, _, n)| level_at(*a).map(|l| (n.to_string(), l)))
            .collect();
        let mut text: Vec<(u64, String)> =
            all.iter().filter(|(_, k, _)| matches!(*k, "t" | "T")).map(|(a, _, n)| (*a, n.to_string())).collect();
        text.sort();
        Symbols { text, entries }
    }

    /// A function as the log names it: `virtio_blk_init+0x0/0x90` (a kernel with kallsyms),
    /// `0xffffffff81a1b2c3` (one without: looked up here), `foo+0x0/0x10 [mod]` (a module's).
    fn name(&self, logged: &str) -> String {
        if let Some(hex) = logged.strip_prefix("0x") {
            if let Ok(a) = u64::from_str_radix(hex, 16) {
                if let Ok(i) = self.text.binary_search_by(|(x, _)| x.cmp(&a)) {
                    return self.text[i].1.clone();
                }
            }
            return logged.to_string();
        }
        logged.split(['+', ' ']).next().unwrap_or(logged).to_string()
    }

    /// The level of initcall `f`: its entry is `__initcall__kmod_<module>__<id>_<line>_<f><level>`.
    fn level_of(&self, f: &str) -> Option<String> {
        // The name right after the line number (or `__initcall_` alone, without a module's id).
        let after = |head: &str| head.ends_with(|c: char| c.is_ascii_digit()) || head == "__initcall";
        // A level's synchronous calls end in `<level>s` (`6s`).
        let of = |entry: &str, level: &str| {
            [format!("{level}s"), level.to_string()].iter().any(|suffix| {
                entry.strip_suffix(suffix.as_str()).and_then(|s| s.strip_suffix(f)).and_then(|s| s.strip_suffix('_')).is_some_and(after)
            })
        };
        self.entries.iter().find(|(n, l)| of(n, l)).map(|(_, l)| l.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAP: &str = "\
ffffffff81000000 T _text
ffffffff81a00010 t cpu_init_early
ffffffff81a00100 t virtio_blk_init
ffffffff81a00200 T inet_init
ffffffff81b85440 D __initcall_start
ffffffff81b85440 d __initcall__kmod_core__1_2_cpu_init_earlyearly
ffffffff81b8548c D __initcall0_start
ffffffff81b85530 D __initcall3_start
ffffffff81b855f4 D __initcall5_start
ffffffff81b85600 d __initcall__kmod_af_inet__7_2030_inet_init5
ffffffff81b856a4 D __initcallrootfs_start
ffffffff81b856ac D __initcall6_start
ffffffff81b85700 d __initcall__kmod_virtio_blk__3_1222_virtio_blk_init6
ffffffff81b8580c D __initcall7_start
ffffffff81b85820 d __initcall__kmod_clk__12_40_clk_disable_unused7s
ffffffff81b85898 D __initcall_end
";

    fn rec(usec: u64, text: &str) -> KmsgRecord {
        KmsgRecord { priority: 7, seq: usec, usec, text: text.into() }
    }

    /// A boot on a log clock 1 s ahead of CLOCK_BOOTTIME (a VM's TSC counting from power-on).
    fn boot() -> Kmsg {
        let records = vec![
            rec(0, "Linux version 6.1"),
            rec(900, "calling  0xffffffff81a00010 @ 1"),
            rec(1_000, "initcall 0xffffffff81a00010 returned 0 after 0 usecs"),
            rec(3_000, "Memory: 240000K/261632K available"),
            rec(5_000, "calling  0xffffffff81a00200 @ 1"),
            rec(16_000, "initcall 0xffffffff81a00200 returned 0 after 12000 usecs"),
            rec(16_100, "calling  0xffffffff81a00100 @ 1"),
            rec(40_100, "initcall 0xffffffff81a00100 returned 0 after 24000 usecs"),
            rec(52_000, "Run /sbin/chinit as init process"),
            // After init started: a module's initcall, outside phase 1.
            rec(60_000, "calling  vsock_init+0x0/0x100 [vsock] @ 77"),
            rec(61_000, "initcall vsock_init+0x0/0x100 [vsock] returned 0 after 1000 usecs"),
        ];
        let ahead = |r: KmsgRecord| KmsgRecord { usec: r.usec + 1_000_000, ..r };
        Kmsg { records: records.into_iter().map(ahead).collect(), lost: 0, clock_offset_us: Some(1_000_000) }
    }

    #[test]
    fn phase_one_is_early_set_up_initcalls_gaps_and_the_exec_of_init() {
        let p = profile(&boot(), Some(MAP), 53_000).unwrap();
        let calls: Vec<(&str, Option<&str>, u64, u64)> =
            p.initcalls.iter().map(|i| (i.name.as_str(), i.level.as_deref(), i.us, i.reported_us)).collect();
        assert_eq!(
            calls,
            vec![
                ("cpu_init_early", Some("early"), 100, 0),
                ("inet_init", Some("5"), 11_000, 12_000),
                ("virtio_blk_init", Some("6"), 24_000, 24_000)
            ]
        );
        assert_eq!((p.early_us, p.initcalls_us, p.gaps_us, p.exec_us), (900, 35_100, 16_000, 1_000));
        assert_eq!(p.sum_us(), 53_000);
        // The gaps, each named by the record that began it; under 1 ms dropped.
        let gaps: Vec<(&str, u64)> = p.gaps.iter().map(|g| (g.after.as_str(), g.us)).collect();
        assert_eq!(
            gaps,
            vec![("after virtio_blk_init", 11_900), ("after cpu_init_early", 2_000), ("Memory: 240000K/261632K available", 2_000)]
        );
        assert_eq!(p.longest()[0].name, "virtio_blk_init");
        // The early set-up, record by record (stretches under 1 ms dropped).
        let log = Kmsg {
            records: vec![
                rec(0, "Linux version 6.1"),
                rec(1_500, "tsc: Refined TSC clocksource calibration"),
                rec(4_000, "calling  0xffffffff81a00200 @ 1"),
                rec(4_100, "initcall 0xffffffff81a00200 returned 0 after 0 usecs"),
                rec(5_000, "Run /sbin/chinit as init process"),
            ],
            lost: 0,
            clock_offset_us: Some(0),
        };
        let q = profile(&log, Some(MAP), 5_200).unwrap();
        let early: Vec<(&str, &str, u64)> = q.early.iter().map(|g| (g.after.as_str(), g.until.as_str(), g.us)).collect();
        assert_eq!(
            early,
            vec![
                ("tsc: Refined TSC clocksource calibration", "inet_init starts", 2_500),
                ("Linux version 6.1", "tsc: Refined TSC clocksource calibration", 1_500)
            ]
        );
        assert_eq!((q.early_us, q.sum_us()), (4_000, 5_200));
        let levels: Vec<(&str, usize, u64)> = p.levels.iter().map(|l| (l.level.as_str(), l.count, l.us)).collect();
        assert_eq!(levels, vec![("early", 1, 100), ("5", 1, 11_000), ("6", 1, 24_000)]);
    }

    #[test]
    fn names_come_from_kallsyms_or_the_map_and_levels_only_from_the_map() {
        let s = Symbols::parse(MAP);
        assert_eq!(s.name("0xffffffff81a00100"), "virtio_blk_init");
        assert_eq!(s.name("0xffffffff81a00104"), "0xffffffff81a00104");
        assert_eq!(s.name("inet_init+0x0/0x3a0"), "inet_init");
        assert_eq!(s.name("vsock_init+0x0/0x100 [vsock]"), "vsock_init");
        assert_eq!(s.level_of("inet_init").as_deref(), Some("5"));
        assert_eq!(s.level_of("init"), None);
        assert_eq!(s.level_of("clk_disable_unused").as_deref(), Some("7"));
        let p = profile(&boot(), None, 53_000).unwrap();
        assert_eq!((p.initcalls[1].name.as_str(), p.initcalls[1].level.as_deref()), ("0xffffffff81a00200", None));
        assert_eq!(p.levels[0].level, "?");
    }

    #[test]
    fn an_avoidable_slow_initcall_gets_one_line_with_its_fix() {
        let mut p = profile(&boot(), Some(MAP), 53_000).unwrap();
        assert!(hints(&p, None, 1_000).is_empty());
        p.initcalls.push(Initcall { name: "pty_init".into(), level: Some("6".into()), start_us: 41_000, us: 9_600, reported_us: 9_600 });
        p.initcalls.push(Initcall { name: "i8042_init".into(), level: Some("6".into()), start_us: 51_000, us: 400, reported_us: 0 });
        let pty = "pty_init took 9.6 ms: registers 256 legacy BSD pty pairs: build with CONFIG_LEGACY_PTYS=n";
        assert_eq!(hints(&p, None, 1_000), vec![pty]);
        assert_eq!(hints(&p, None, 100).len(), 2);
        // With the kernel's config: only what its options build in.
        assert_eq!(hints(&p, Some("CONFIG_LEGACY_PTYS=y\nCONFIG_SERIO_I8042=y\n"), 100).len(), 2);
        let i8042 = "i8042_init took 0.4 ms: probes a PS/2 controller: i8042.noaux i8042.nomux i8042.dumbkbd on the command line, or CONFIG_SERIO_I8042=n";
        assert_eq!(hints(&p, Some("# CONFIG_LEGACY_PTYS is not set\nCONFIG_SERIO_I8042=y\n"), 100), vec![i8042]);
        // A slow gap: only with a config that says why.
        let freeing = "Freeing unused kernel image (initmem) memory: 744K";
        p.gaps.push(Gap { after: "devtmpfs: mounted".into(), until: freeing.into(), start_us: 30_000, us: 210_000 });
        let os = "CONFIG_CC_OPTIMIZE_FOR_SIZE=y\nCONFIG_LEGACY_PTYS=y\n";
        let want = format!("the time before \"{freeing}\" took 210.0 ms: {}", SLOW_GAPS[0].2);
        assert_eq!(hints(&p, Some(os), 1_000), vec![pty.to_string(), want]);
        assert_eq!(hints(&p, None, 1_000), vec![pty], "no config: nothing said of the gap");
        assert_eq!(hints(&p, Some("CONFIG_CC_OPTIMIZE_FOR_PERFORMANCE=y\nCONFIG_LEGACY_PTYS=y\n"), 1_000), vec![pty]);
        assert_eq!(hints(&p, Some(os), 300_000), Vec::<String>::new());
        assert_eq!(hints(&p, Some("CONFIG_CC_OPTIMIZE_FOR_SIZE=y\n"), 1_000).len(), 1);
    }

    #[test]
    fn a_log_without_initcalls_says_what_to_boot_with() {
        let log = Kmsg {
            records: vec![rec(0, "Linux version 6.1"), rec(9, "Run /sbin/chinit as init process")],
            lost: 0,
            clock_offset_us: Some(0),
        };
        let e = profile(&log, None, 10).unwrap_err();
        assert!(e.contains("initcall_debug"), "{e}");
        let e = profile(&Kmsg { clock_offset_us: None, ..boot() }, None, 53_000).unwrap_err();
        assert!(e.contains("clock anchor"), "{e}");
    }
}
