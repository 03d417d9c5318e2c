//! The shoot-out's pure parts, on literal inputs.
use super::*;
use crate::check::KvmKind;
use crate::vmm::{cloud_hypervisor, firecracker, qemu};

#[test]
fn vmm_selection_syntax() {
    use Selection::*;
    let all = crate::vmm::all().to_vec();
    let cases: Vec<(&str, Result<Selection, &str>)> = vec![
        ("auto", Ok(One(VmmChoice::Auto))),
        ("qemu", Ok(One(VmmChoice::Named(qemu::VMM)))),
        ("qemu,firecracker", Ok(Many(vec![qemu::VMM, firecracker::VMM]))),
        ("cloud-hypervisor, qemu", Ok(Many(vec![cloud_hypervisor::VMM, qemu::VMM]))),
        ("all", Ok(Many(all))),
        ("no-such-vmm", Err("no VMM \"no-such-vmm\"")),
        ("qemu,qemu", Err("qemu twice")),
        ("qemu,auto", Err("auto stands alone")),
        ("all,qemu", Err("all stands alone")),
        ("qemu,", Err("an empty name")),
        ("qemu,nope", Err("no VMM \"nope\"")),
    ];
    for (s, want) in cases {
        match (Selection::parse(s), want) {
            (Ok(got), Ok(want)) => assert_eq!(got, want, "{s}"),
            (Err(e), Err(want)) => assert!(e.contains(want), "{s}: {e}"),
            (got, want) => panic!("{s}: {got:?}, want {want:?}"),
        }
    }
    assert!(Selection::parse("qemu,firecracker").unwrap().one().is_err());
    assert_eq!(Selection::parse("qemu").unwrap().one().unwrap(), VmmChoice::Named(qemu::VMM));
}

#[test]
fn every_vmm_runs_once_a_round_and_the_first_moves_on() {
    let boots = |steps: Vec<Step>| steps.iter().map(|s| (s.round, s.vmm, s.measured)).collect::<Vec<_>>();
    // (VMMs, rounds, warm-up rounds) → (round, VMM, measured) of each step.
    type Case = ((usize, usize, usize), Vec<(usize, usize, bool)>);
    let cases: Vec<Case> = vec![
        (
            (3, 2, 1),
            vec![
                (0, 0, false),
                (0, 1, false),
                (0, 2, false),
                (1, 1, true),
                (1, 2, true),
                (1, 0, true),
                (2, 2, true),
                (2, 0, true),
                (2, 1, true),
            ],
        ),
        ((2, 2, 0), vec![(0, 0, true), (0, 1, true), (1, 1, true), (1, 0, true)]),
        ((1, 3, 0), vec![(0, 0, true), (1, 0, true), (2, 0, true)]),
        ((0, 3, 1), vec![]),
    ];
    for ((k, n, w), want) in cases {
        assert_eq!(boots(order(k, n, w, false)), want, "k={k} n={n} warmup={w}");
    }
    // With restores: each VMM's boot, then its restore, in the same rotation.
    let r: Vec<(usize, Kind)> = order(2, 1, 0, true).iter().map(|s| (s.vmm, s.kind)).collect();
    assert_eq!(r, vec![(0, Kind::Boot), (0, Kind::Restore), (1, Kind::Boot), (1, Kind::Restore)]);
    // Over k rounds every VMM is first once.
    let firsts: Vec<usize> = order(4, 4, 0, false).chunks(4).map(|c| c[0].vmm).collect();
    assert_eq!(firsts, vec![0, 1, 2, 3]);
}

#[test]
fn figures_of_a_boot_say_why_one_is_missing() {
    let r = crate::report::tests::report();
    let got: Vec<(Fig, Option<u64>)> = figures(&r).into_iter().map(|(k, v)| (k, v.ok())).collect();
    assert_eq!(
        got,
        vec![
            (Fig::VmmStart, Some(900_000)),
            (Fig::Kernel, Some(600_000)),
            (Fig::Init, Some(12_000)),
            (Fig::Total, Some(1_513_000)),
            (Fig::Rss, Some(204_800)),
            (Fig::Pss, Some(102_400)),
        ]
    );
    // Firecracker's: no marks at all, so no VMM start; the rest is there.
    let mut fc = r.clone();
    fc.host.marks.clear();
    fc.host.marks_source = "none (Firecracker logs no port-0x80 writes)".into();
    fc.phases = Some(crate::report::phases(&fc.host, fc.guest.as_ref().unwrap()));
    let f = figures(&fc);
    assert_eq!(f[0].1, Err("no port-0x80 marks: none (Firecracker logs no port-0x80 writes)".to_string()));
    assert!(f[1..].iter().all(|(_, v)| v.is_ok()), "{f:?}");
    // Marks but no chinit timeline (--no-agent): the first mark is the VMM's start.
    let mut bare = r.clone();
    bare.phases = None;
    bare.guest = None;
    bare.memory = None;
    let f = figures(&bare);
    assert_eq!(f[0].1, Ok(40_000));
    assert_eq!(f[1].1, Err("no chinit timeline (--no-agent)".to_string()));
    assert!(f[4].1.as_ref().unwrap_err().contains("smaps_rollup"));
}

fn host(kvm: KvmKind, usable: bool) -> HostOffer {
    HostOffer {
        kvm,
        kvm_usable: usable,
        vmm_programs: Default::default(),
        arch: crate::options::Arch::X86_64,
        vhost_vsock: None,
        kernel_vsock: false,
        virtiofsd: None,
        hypervisor: crate::cpuid::Hypervisor::None,
        cache_root: None,
        tsc_khz: None,
    }
}

#[test]
fn a_vmm_that_needs_hardware_kvm_cannot_run_without_it() {
    let cases = [
        (KvmKind::Pvm, true, qemu::VMM, None),
        (KvmKind::Pvm, true, cloud_hypervisor::VMM, Some("kvm_pvm")),
        (KvmKind::Pvm, true, firecracker::VMM, Some("firecracker runs Linux guests under hardware KVM only")),
        (KvmKind::Absent, false, firecracker::VMM, Some("no KVM")),
        (KvmKind::Hardware("kvm_amd"), false, cloud_hypervisor::VMM, Some("cannot be opened read-write")),
        (KvmKind::Hardware("kvm_amd"), true, cloud_hypervisor::VMM, None),
    ];
    for (kvm, usable, vmm, want) in cases {
        let got = kvm_refusal(vmm, &host(kvm, usable));
        match want {
            None => assert_eq!(got, None, "{vmm:?} {kvm:?}"),
            Some(w) => {
                let c = got.unwrap_or_else(|| panic!("{vmm:?} {kvm:?}: no refusal"));
                assert!(c.why.contains(w), "{}", c.why);
                assert!(c.fix.is_some());
            }
        }
    }
}

#[test]
fn an_error_splits_into_why_and_fix() {
    let e = Error::Missing { what: "firecracker not found".into(), fix: "set $FIRECRACKER".into() };
    assert_eq!(Cannot::of(&e), Cannot { why: "firecracker not found".into(), fix: Some("set $FIRECRACKER".into()) });
    assert_eq!(Cannot::of(&Error::Usage("drop --share".into())), Cannot { why: "drop --share".into(), fix: None });
}

#[test]
fn a_kernel_of_the_cache_is_swapped_for_the_file_this_vmm_boots() {
    use crate::options::Arch;
    let there = |p: &Path| p.starts_with("/cache");
    let cases = [
        (qemu::VMM, "/cache/x86_64-1/vmlinux", "/cache/x86_64-1/bzImage"),
        (firecracker::VMM, "/cache/x86_64-1/bzImage", "/cache/x86_64-1/vmlinux"),
        (firecracker::VMM, "/cache/x86_64-1/vmlinux", "/cache/x86_64-1/vmlinux"),
        // Not a cache's name: as given, even when a sibling exists.
        (firecracker::VMM, "/cache/x86_64-1/pvh.elf", "/cache/x86_64-1/pvh.elf"),
        // No sibling: as given (the VMM says whether it boots it).
        (firecracker::VMM, "/elsewhere/bzImage", "/elsewhere/bzImage"),
    ];
    for (vmm, given, want) in cases {
        assert_eq!(kernel_for(vmm, Path::new(given), Arch::X86_64, there), PathBuf::from(want), "{vmm:?} {given}");
    }
}

/// qemu measured, firecracker without VMM start, cloud-hypervisor cannot run.
pub(crate) fn literal() -> Shootout {
    let mut q = Tally::default();
    let mut f = Tally::default();
    for (fig, qv, fv) in [
        (Fig::VmmStart, [1_400_000, 1_500_000], None),
        (Fig::Kernel, [400_000, 420_000], Some([90_000, 95_000])),
        (Fig::Init, [40_000, 44_000], Some([9_000, 10_000])),
        (Fig::Total, [1_900_000, 2_000_000], Some([300_000, 320_000])),
        (Fig::Rss, [104_000, 106_000], Some([40_960, 41_000])),
        (Fig::Pss, [102_400, 103_000], Some([30_720, 31_000])),
    ] {
        for v in qv {
            q.add(fig, Ok(v));
        }
        match fv {
            Some(fv) => fv.iter().for_each(|v| f.add(fig, Ok(*v))),
            None => f.add(fig, Err("no port-0x80 marks: none (Firecracker logs no port-0x80 writes)".into())),
        }
    }
    let measured = |vmm: &str, accel: &str, t: &Tally| VmmResult {
        vmm: vmm.into(),
        status: Status::Measured,
        accel: Some(accel.into()),
        representative: false,
        kernel: Some("/k".into()),
        notes: vec![],
        why: None,
        fix: None,
        rows: t.rows(&Fig::BOOT),
    };
    Shootout {
        schema: SCHEMA_VERSION,
        what: "vmm shoot-out",
        n: 2,
        warmup: 0,
        image: "rootfs_fast.ext4".into(),
        snapshots: None,
        clones: None,
        order: vec!["qemu".into(), "firecracker".into()],
        vmms: vec![
            VmmResult {
                vmm: "cloud-hypervisor".into(),
                status: Status::Cannot,
                accel: None,
                representative: false,
                kernel: None,
                notes: vec![],
                why: Some("cloud-hypervisor runs Linux guests under hardware KVM only: kvm_pvm".into()),
                fix: Some("a host with hardware KVM".into()),
                rows: vec![],
            },
            measured("firecracker", "kvm", &f),
            measured("qemu", "tcg", &q),
        ],
    }
}

#[test]
fn the_table_has_a_line_per_vmm_and_says_why_a_figure_is_missing() {
    assert_eq!(summary(&[3, 1, 2]).map(|s| (s.median, s.p95, s.n)), Some((2, 3, 3)));
    let s = literal();
    let t = text(&s);
    let lines: Vec<&str> = t.lines().collect();
    let line = |vmm: &str| lines.iter().find(|l| l.trim_start().starts_with(vmm)).copied().unwrap_or_else(|| panic!("{vmm}: {t}"));
    let ch = line("cloud-hypervisor");
    assert!(
        ch.contains("cannot run here: cloud-hypervisor runs Linux guests under hardware KVM only: kvm_pvm; fix: a host with hardware KVM"),
        "{t}"
    );
    let q = line("qemu");
    // median / p95 of each figure, in ms and MiB, and n.
    for want in ["1400.0 / 1500.0", "400.0 / 420.0", "40.0 / 44.0", "1900.0 / 2000.0", "101.6 / 103.5", "100.0 / 100.6", "  2"] {
        assert!(q.contains(want), "{want}: {q}");
    }
    let fc = line("firecracker");
    assert!(fc.contains("-[1]") && fc.contains("300.0 / 320.0") && fc.contains(" kvm "), "{fc}");
    assert!(t.contains("[1] firecracker VMM start: no port-0x80 marks: none (Firecracker logs no port-0x80 writes)"), "{t}");
    // Every VMM is one line of the table.
    let vmm_lines = lines.iter().filter(|l| ["cloud-hypervisor", "firecracker", "qemu"].iter().any(|v| l.trim_start().starts_with(v)));
    assert_eq!(vmm_lines.count(), 3, "{t}");

    let j = serde_json::to_value(&s).unwrap();
    assert_eq!(j["vmms"][0]["status"], "cannot");
    assert!(j["vmms"][0]["fix"].is_string());
    let fc_rows = j["vmms"][1]["rows"].as_array().unwrap();
    assert_eq!(fc_rows.len(), 6, "every figure, with statistics or why not");
    assert_eq!(fc_rows[0]["figure"], "vmm_start_us");
    assert!(fc_rows[0]["stats"].is_null() && fc_rows[0]["cannot"].as_str().unwrap().contains("Firecracker"));
    assert_eq!(j["vmms"][2]["rows"][3]["stats"]["median"], 1_900_000);
    assert_eq!(j["vmms"][2]["rows"][4]["unit"], "kib");
}

#[test]
fn the_chart_has_a_group_per_vmm_phases_stacked_and_memory_beside() {
    let svg = svg(&literal());
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert!(svg.contains("cannot run here: cloud-hypervisor runs Linux guests"), "{svg}");
    for want in [
        "qemu VMM start 1400.000 ms",
        "qemu kernel 400.000 ms",
        "qemu init 40.000 ms",
        "firecracker kernel 90.000 ms",
        ">PSS 100.0<",
        ">RSS 40.0<",
    ] {
        assert!(svg.contains(want), "{want}: {svg}");
    }
    // The background, the legend's 4, then per measured VMM 4 stacked segments and 2 memory bars.
    assert_eq!(svg.matches("<rect").count(), 1 + 4 + 2 * 4 + 2 * 2, "{svg}");
}

#[test]
fn with_snapshots_a_second_table_and_one_note_per_reason() {
    let mut s = literal();
    s.snapshots = Some("/snaps".into());
    s.clones = Some(2);
    let why = "no snapshot: QEMU cannot snapshot this guest";
    let mut q = Tally::default();
    for f in Fig::RESTORE {
        q.add(f, Err(why.into()));
    }
    let mut f = Tally::default();
    f.add(Fig::SnapshotSize, Ok(65_536));
    f.add(Fig::RestoreReady, Ok(50_000));
    f.add(Fig::RestoreReady, Ok(70_000));
    f.add(Fig::PssPerCopy, Ok(20_480));
    f.add(Fig::PssPerCopy, Ok(21_504));
    s.vmms[1].rows.extend(f.rows(&Fig::RESTORE));
    s.vmms[2].rows.extend(q.rows(&Fig::RESTORE));
    let t = text(&s);
    assert!(t.contains("snapshots in /snaps, 2 copies at once"), "{t}");
    let restore_head = t.lines().position(|l| l.contains("restore -> ready")).unwrap_or_else(|| panic!("{t}"));
    let below: Vec<&str> = t.lines().skip(restore_head).collect();
    let fc = below.iter().find(|l| l.trim_start().starts_with("firecracker")).unwrap();
    assert!(fc.contains("64.0 / 64.0") && fc.contains("50.0 / 70.0") && fc.contains("20.0 / 21.0"), "{fc}");
    let q = below.iter().find(|l| l.trim_start().starts_with("qemu")).unwrap();
    assert_eq!(q.matches("-[2]").count(), 3, "one note for the three figures: {q}");
    assert!(t.contains(&format!("[2] qemu snapshot, restore -> ready, PSS per copy: {why}")), "{t}");
}
