//! The report, from a literal run.
use super::*;
use agent::proto::Step;

fn ready() -> Ready {
    Ready {
        ready: true,
        version: "0.1.0".into(),
        mode: "vm".into(),
        init_start_us: 600_000,
        ready_us: 612_000,
        steps: vec![
            Step { name: "mounts".into(), start_us: 600_100, end_us: 601_000, error: None },
            Step { name: "network".into(), start_us: 601_000, end_us: 605_000, error: Some("no carrier".into()) },
        ],
        ip: Some("169.254.3.4/16".into()),
        generation: 1,
        restores: 1,
        workload: None,
    }
}

pub(crate) fn report() -> Report {
    let host = HostTimes {
        vmm_ready_us: Some(40_000),
        marks_source: "debugcon arrival".into(),
        marks: host_marks(
            &[
                Mark { code: 0x00, t_us: 40_000 },
                Mark { code: 0x01, t_us: 41_000 },
                Mark { code: 0x60, t_us: 1_500_000 },
                Mark { code: 0x63, t_us: 1_512_500 },
            ],
            0,
        ),
        notify_us: Some(1_513_000),
        ready_tcp_us: Some(1_520_000),
        ready_vsock_us: None,
        tcp_attempts: 1,
        tcp_attempts_after_init_mark: Some(1),
    };
    let guest = ready();
    let phases = phases(&host, &guest);
    Report {
        schema: SCHEMA_VERSION,
        vmm: "qemu".into(),
        accel: "tcg".into(),
        representative: false,
        kernel: "/k/bzImage".into(),
        root_kind: "disk".into(),
        root: "/i/rootfs.ext4".into(),
        vsock: None,
        root_attach: "read-only virtio-blk".into(),
        cmdline: "console=ttyS0".into(),
        vmm_argv: vec!["qemu-system-x86_64".into(), "-machine".into()],
        notes: vec!["no hardware KVM (kvm_pvm): using TCG emulation, timings are not representative".into()],
        host,
        events: vec![],
        guest: Some(guest),
        phases: Some(phases),
        memory: Some(Memory { rss_kib: 204_800, pss_kib: 102_400 }),
        console_ready_ms: Some(12.0),
        workload: None,
        restore: None,
        kernel_profile: None,
    }
}

#[test]
fn phases_come_from_the_right_clocks() {
    let r = report();
    assert_eq!(
        r.phases.unwrap(),
        Phases {
            kernel_boot_us: 600_000,
            init_us: 12_000,
            ready_in_guest_us: 612_000,
            host_overhead_us: 1_513_000 - 612_000,
            total_us: 1_513_000,
            kernel_start_host_us: Some(900_000),
            init_host_us: Some(12_500),
        }
    );
    // Without any host answer there is no total, and no mark means no alignment.
    let p = phases(&HostTimes::default(), &ready());
    assert_eq!((p.total_us, p.kernel_start_host_us, p.host_overhead_us), (0, None, 0));
}

#[test]
fn text_table_names_phases_steps_and_clocks() {
    let t = text(&report());
    for want in [
        "timings are not representative",
        "1. kernel boot (power on -> init)",
        "600.000",
        "2. init (mounts, network, agent)",
        "12.000",
        "1513.000",
        "mounts",
        "error: no carrier",
        "mark 0x60 init start (debugcon arrival)",
        "2 other port-0x80 write(s), firmware range, first",
        "kernel start (0x60 mark - init_start_us)",
        "900.000",
        "RSS 200.0 MiB, PSS 100.0 MiB",
        "init as the host saw it",
        "12.500",
        "guest CLOCK_BOOTTIME",
        "host CLOCK_MONOTONIC",
    ] {
        assert!(t.contains(want), "missing {want:?} in\n{t}");
    }
}

#[test]
fn json_has_the_documented_top_level_fields() {
    let v = serde_json::to_value(report()).unwrap();
    for key in [
        "schema",
        "vmm",
        "accel",
        "representative",
        "kernel",
        "root_kind",
        "root",
        "root_attach",
        "cmdline",
        "host",
        "guest",
        "phases",
        "memory",
        "console_ready_ms",
    ] {
        assert!(v.get(key).is_some(), "missing {key}");
    }
    assert_eq!(v["schema"], 1);
    assert_eq!(v["phases"]["kernel_start_host_us"], 900_000);
    assert_eq!(v["phases"]["init_host_us"], 12_500);
    assert_eq!(v["vmm_argv"][0], "qemu-system-x86_64");
    assert_eq!(v["host"]["marks"][3]["name"], "ready");
    assert_eq!(v["host"]["marks"][0]["name"], "firmware");
    assert_eq!(v["guest"]["steps"][0]["name"], "mounts");
}

#[test]
fn svg_has_one_bar_per_span_in_host_time() {
    let s = svg(&report());
    assert!(s.starts_with("<svg"), "{s}");
    assert_eq!(s.matches("<rect").count(), 5, "vmm, kernel, 2 steps, host learns: {s}");
    assert!(s.contains(">VMM start + firmware<") && s.contains("900.000 ms"));
    assert!(s.trim_end().ends_with("</svg>"));
}

#[test]
fn figures_list_phases_then_steps() {
    let f = figures(&report());
    assert_eq!(f[0], (Figure::KernelBoot, Some(600_000)));
    assert_eq!(f.last().unwrap(), &(Figure::Step("network".into()), Some(4_000)));
    assert!(f.iter().any(|(n, v)| *n == Figure::ReadyVsock && v.is_none()));
    // What tables and JSON show.
    let names: Vec<String> = [Figure::KernelBoot, Figure::Total, Figure::ReadyVsock, Figure::Mark(0x63), Figure::Step("agent".into())]
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(names, ["kernel boot", "total (host)", "/ready vsock (host)", "mark 0x63 (host)", "step agent"]);
}

/// A restored copy: its report has the restore phases instead of a boot's, on the same clocks, and
/// its benchmark figures compare with a cold boot's `total (host)`.
#[test]
fn a_restored_copy_reports_its_restore_phases() {
    let mut r = report();
    let mut g = ready();
    g.steps.push(Step { name: "restore.entropy".into(), start_us: 900_000, end_us: 900_010, error: None });
    g.steps.push(Step { name: "restore.network".into(), start_us: 900_010, end_us: 900_300, error: None });
    r.guest = Some(g);
    r.phases = None;
    r.restore = Some(crate::snapshot::RestoreFigures {
        snapshot: "/snap".into(),
        memory_restore_mode: Some("ondemand".into()),
        generation: 1,
        hostname: "copy-ab".into(),
        ip: Some("169.254.9.9/16".into()),
        vmm_restored_us: 20_000,
        request_sent_us: 21_000,
        request_attempts: 2,
        answered_us: 22_000,
        guest_restore_us: 300,
        total_us: 22_000,
        cold_boot_us: 220_000,
    });
    let t = text(&r);
    for want in [
        "restored from /snap (generation 1, memory_restore_mode=ondemand)",
        "this copy: hostname copy-ab, address 169.254.9.9/16",
        "1. VMM restore (spawn -> VM runs)",
        "1/10.0",
        "answered at attempt 2",
        "restore.network",
    ] {
        assert!(t.contains(want), "{want:?} missing from:\n{t}");
    }
    assert!(!t.contains("  mounts "), "a copy lists its restore steps only:\n{t}");
    let f = figures(&r);
    assert_eq!(f[0], (Figure::Total, Some(22_000)));
    assert!(f.contains(&(Figure::MakeUnique, Some(1_000))) && f.contains(&(Figure::Step("restore.network".into()), Some(290))));
    let svg = svg(&r);
    assert!(svg.contains(">VMM restore<") && svg.contains(">restore.entropy<"), "{svg}");
    let j = serde_json::to_value(&r).unwrap();
    assert_eq!(j["restore"]["total_us"], 22_000);
    assert!(j.get("phases").is_none_or(|p| p.is_null()));
}
