//! Collect a run's [`Report`]: the plan, what the watch observed and what launch captured once the
//! VMM stopped. Pure: it parses captured text and assembles, so it is tested on literal inputs.

use agent::proto::{Ready, Workload};

use crate::cmdline::RootKind;
use crate::error::Error;
use crate::launch::Captured;
use crate::measure;
use crate::options::{Options, Wait};
use crate::plan::Plan;
use crate::report::{self, Report};
use crate::vmm::{self, Accel};
use crate::watch::Observed;

/// The report of one run; a timeout when chinit's agent was awaited and no Ready JSON was readable.
pub fn report(plan: &Plan, o: &Options, seen: Observed, c: Captured) -> Result<Report, Error> {
    let mut host = seen.host;
    let vmm::Marks { marks, source, events, vmm_ready_us } = plan.vmm.marks(&plan.spec, &c);
    host.vmm_ready_us = vmm_ready_us;
    host.marks_source = source.into();
    host.marks = report::host_marks(&marks, 0);
    let ready = seen.ready;
    let wait = plan.wait(o);
    if wait == Wait::Agent && ready.is_none() {
        return Err(Error::Timeout {
            phase: "boot".into(),
            secs: o.timeout.as_secs(),
            waiting_for: "waiting for a readable Ready JSON".into(),
            diagnostics: c.diagnostics,
        });
    }
    let phases = ready.as_ref().map(|g| report::phases(&host, g));
    let mut workload = latest_workload(&c.pushes, ready.as_ref());
    // Without vsock (or a push cut short) chinit's console line still says how the workload ended.
    if wait == Wait::Workload && workload.as_ref().is_none_or(|w| w.running) {
        workload = measure::console_workload(&c.serial).or(workload);
    }
    let mut notes = plan.notes.clone();
    let kernel_profile = match (seen.kmsg, ready.as_ref()) {
        (Some(Ok(k)), Some(g)) => {
            let map = crate::kprofile::system_map_beside(&plan.spec.kernel).and_then(|p| std::fs::read_to_string(p).ok());
            let config = plan.spec.kernel.parent().and_then(|d| std::fs::read_to_string(d.join("config")).ok());
            crate::kprofile::profile(&k, map.as_deref(), g.init_start_us)
                .map(|p| crate::kprofile::KernelProfile {
                    hints: crate::kprofile::hints(&p, config.as_deref(), crate::kprofile::HINT_AT_US),
                    ..p
                })
                .map_err(|e| notes.push(format!("kernel profile: {e}")))
                .ok()
        }
        (Some(Err(e)), _) => {
            notes.push(format!("kernel profile: the kernel's log could not be read from chinit: {e}"));
            None
        }
        _ => None,
    };
    if let Some(s) = seen.vmm_exit.filter(|s| !s.success()) {
        notes.push(format!("{} exited: {s}", plan.vmm.name()));
    }
    Ok(Report {
        schema: report::SCHEMA_VERSION,
        vmm: plan.vmm.name().into(),
        accel: match plan.accel {
            Accel::Kvm => "kvm".into(),
            Accel::Tcg => "tcg".into(),
        },
        representative: plan.representative,
        kernel: plan.spec.kernel.display().to_string(),
        root_kind: match plan.root_kind {
            RootKind::Disk => "disk",
            RootKind::Pmem => "pmem",
            RootKind::Initramfs => "initramfs",
        }
        .into(),
        root: plan.root_path.display().to_string(),
        root_attach: plan.root_attach.clone(),
        vsock: plan.guest_vsock.as_ref().map(|v| v.describe()),
        cmdline: plan.spec.cmdline.clone(),
        vmm_argv: plan.argv.clone(),
        notes,
        host,
        events,
        guest: ready,
        phases,
        memory: seen.memory,
        console_ready_ms: measure::console_ready_ms(&c.serial),
        workload,
        restore: None,
        kernel_profile,
    })
}

/// The newest workload status among the pushes, else the one in `ready`.
pub(crate) fn latest_workload(pushes: &[(u64, Vec<u8>)], ready: Option<&Ready>) -> Option<Workload> {
    pushes
        .iter()
        .rev()
        .find_map(|(_, b)| serde_json::from_slice::<Ready>(b).ok().and_then(|r| r.workload))
        .or(ready.and_then(|r| r.workload))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::HostTimes;
    use crate::vmm::{Root, Spec, Vmm};
    use std::os::unix::process::ExitStatusExt;
    use std::path::PathBuf;
    use std::process::ExitStatus;

    fn plan(vmm: Vmm, accel: Accel) -> Plan {
        let dir = PathBuf::from("/r");
        let spec = Spec {
            binary: "/bin/vmm".into(),
            kernel: "/k/bzImage".into(),
            root: Root::Disk("/img/rootfs.ext4".into()),
            initramfs: None,
            cmdline: "console=ttyS0".into(),
            cpus: 1,
            memory_mib: 256,
            net: None,
            vsock: None,
            serial: dir.join("serial.log"),
            console: crate::vmm::Console::Serial,
            fs: None,
            rng: false,
            api_socket: dir.join("api.sock"),
            event_monitor: dir.join("events.json"),
            log_file: dir.join("vmm.log"),
            debugcon_socket: dir.join("debugcon.sock"),
            accel,
            role: crate::vmm::Role::Boot,
            root_writable: false,
            arch: rootfs_builder::elf::Arch::X86_64,
        };
        Plan {
            vmm,
            accel,
            spec,
            argv: vec!["/bin/vmm".into()],
            vhost_argv: None,
            virtiofsd_argv: None,
            run_dir: dir,
            guest_vsock: None,
            notify_port: None,
            tap: None,
            guest_ip: None,
            notes: vec![],
            representative: accel == Accel::Kvm,
            root_kind: RootKind::Disk,
            root_path: "/img/rootfs.ext4".into(),
            root_attach: "read-only".into(),
            files: vec![],
            workload: None,
        }
    }

    fn doc(workload: &str) -> Vec<u8> {
        format!(r#"{{"ready":true,"version":"v","mode":"vm","init_start_us":1000,"ready_us":3000,"steps":[]{workload}}}"#).into_bytes()
    }

    #[test]
    fn the_newest_pushed_workload_status_wins() {
        let running = r#","workload":{"pid":9,"running":true}"#;
        let exited = r#","workload":{"pid":9,"running":false,"exit_code":3}"#;
        let ready: Ready = serde_json::from_slice(&doc(running)).unwrap();
        let got = |pushes: &[(u64, Vec<u8>)], ready: Option<&Ready>| latest_workload(pushes, ready).map(|w| w.to_string());
        assert_eq!(got(&[(5, doc(running)), (9, doc(exited))], Some(&ready)).as_deref(), Some("exited with code 3 (pid 9)"));
        // A push cut short says nothing; /ready's status stands then.
        assert_eq!(got(&[(9, b"{\"ready\":tr".to_vec())], Some(&ready)).as_deref(), Some("running (pid 9)"));
        assert_eq!(got(&[(5, doc(""))], None), None);
    }

    #[test]
    fn marks_come_from_debugcon_under_qemu_and_from_the_log_under_cloud_hypervisor() {
        let ready: Ready = serde_json::from_slice(&doc("")).unwrap();
        let seen = || Observed {
            host: HostTimes { ready_tcp_us: Some(9_000), ..HostTimes::default() },
            ready: Some(ready.clone()),
            ..Observed::default()
        };
        let qemu = Captured {
            debugcon: vec![(5_000, vec![0x60]), (6_000, vec![0x61, 0x62]), (8_000, vec![0x63])],
            debugcon_connected_us: Some(100),
            serial: "chinit: ready in 2.000 ms\n".into(),
            ..Captured::default()
        };
        let ch = Captured {
            vmm_log: "cloud-hypervisor:   0.031207s: <vcpu0> WARN:devices/src/legacy/debug_port.rs:74 -- [Debug I/O port: Userspace code 0x60] 0.026110 seconds\n".into(),
            event_monitor: r#"{"timestamp":{"secs":0,"nanos":20000000},"source":"vm","event":"booting","properties":null}"#.into(),
            ..Captured::default()
        };
        let o = Options::default();
        let r = report(&plan(vmm::qemu::VMM, Accel::Tcg), &o, seen(), qemu).unwrap();
        assert_eq!((r.host.marks_source.as_str(), r.host.vmm_ready_us, r.host.marks.len()), ("debugcon arrival", Some(100), 4));
        assert_eq!((r.accel.as_str(), r.representative, r.console_ready_ms), ("tcg", false, Some(2.0)));
        assert_eq!(r.phases.map(|p| (p.total_us, p.kernel_start_host_us)), Some((9_000, Some(4_000))));
        let r = report(&plan(vmm::cloud_hypervisor::VMM, Accel::Kvm), &o, seen(), ch).unwrap();
        assert_eq!((r.host.marks_source.as_str(), r.host.vmm_ready_us, r.host.marks.len()), ("vmm log prefix", Some(20_000), 1));
        assert_eq!((r.representative, r.events.len()), (true, 1));
    }

    #[test]
    fn a_failed_exit_is_noted_and_a_missing_ready_document_is_a_timeout() {
        let o = Options::default();
        let failed = Observed { vmm_exit: Some(ExitStatus::from_raw(256)), ..Observed::default() };
        let r = report(&plan(vmm::qemu::VMM, Accel::Kvm), &Options { wait: Wait::Exit, ..o.clone() }, failed, Captured::default()).unwrap();
        assert_eq!(r.notes, vec!["qemu exited: exit status: 1".to_string()]);
        assert!(r.guest.is_none() && r.phases.is_none());
        let e = report(&plan(vmm::qemu::VMM, Accel::Kvm), &o, Observed::default(), Captured::default()).unwrap_err();
        assert_eq!(e.exit_code().code(), 4);
        assert!(e.to_string().contains("a readable Ready JSON"), "{e}");
    }
}
