//! `host-probe bench --vmm all`: the VMM shoot-out, every VMM of the registry with the same image
//! and kernel build, interleaved. On a host without hardware KVM (this one: kvm_pvm) QEMU is
//! measured under TCG and each VMM that needs hardware KVM is one line saying why, with the fix;
//! on a host with it (the simulated KVM host, `vm_l1`) every VMM found is measured, with its
//! snapshot, restores and copies too.

use std::path::PathBuf;

use chinit_tests::{e2e, vm};
use serde_json::Value;

/// The rounds of the shoot-out, and the copies at once with snapshots.
const ROUNDS: u64 = 2;
const CLONES: u64 = 2;

#[test]
fn a_shoot_out_of_every_vmm_measures_what_runs_here_and_says_why_of_the_rest() {
    let test = "a_shoot_out_of_every_vmm_measures_what_runs_here_and_says_why_of_the_rest";
    if let Some(why) = e2e::qemu_missing() {
        e2e::skip(test, why);
        return;
    }
    let dir = vm::TempDir::new("shootout").unwrap();
    let image = e2e::chinit_image(&dir.path().join("rootfs.ext4"), false);
    let kernel = e2e::tiny_bzimage();
    let host = chinit_tests::vm::host_offer();
    let kvm = host.kvm.hardware() && host.kvm_usable;
    // The VMMs that no registry packages are found where the tests find them (../shared/vmm),
    // so host-probe is given their directories on PATH.
    let found: Vec<(&str, PathBuf)> = host_probe::vmm::all().iter().filter_map(|v| vm::vmm_program(*v).map(|p| (v.name(), p))).collect();
    let mut path: Vec<PathBuf> = found.iter().filter_map(|(_, p)| p.parent().map(PathBuf::from)).collect();
    path.extend(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()));
    let svg = dir.path().join("shootout.svg");
    let mut cmd = vm::host_probe_command();
    cmd.args(["bench", "--vmm", "all", "-n", &ROUNDS.to_string(), "--warmup", "0", "--memory", "128", "--json", "--timeout", "180"])
        .arg("--kernel")
        .arg(&kernel)
        .arg("--rootfs")
        .arg(&image)
        .arg("--svg")
        .arg(&svg)
        .env("PATH", std::env::join_paths(path).unwrap());
    if kvm {
        cmd.arg("--restore").arg(dir.path().join("snapshots")).args(["--clones", &CLONES.to_string()]);
    }
    let child = cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}\n{}", String::from_utf8_lossy(&out.stdout));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {err}"));
    eprintln!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());

    let vmms = v["vmms"].as_array().unwrap();
    assert_eq!(vmms.len(), host_probe::vmm::all().len(), "one entry per VMM of the registry: {v:#}");
    for vmm in host_probe::vmm::all() {
        let name = vmm.name();
        let e = vmms.iter().find(|e| e["vmm"] == name).unwrap_or_else(|| panic!("{name} missing: {v:#}"));
        let is_found = found.iter().any(|(n, _)| *n == name);
        match e["status"].as_str() {
            Some("measured") => {
                assert!(is_found && (kvm || !vmm.needs_hardware_kvm()), "{name} measured here: {e:#}");
                let rows = e["rows"].as_array().unwrap();
                let row = |key: &str| rows.iter().find(|r| r["figure"] == key).unwrap_or_else(|| panic!("{name}: no {key}: {e:#}"));
                for key in ["kernel_us", "init_us", "total_us", "rss_kib", "pss_kib"] {
                    assert_eq!(row(key)["stats"]["n"], ROUNDS, "{name} {key}: {e:#}");
                    assert!(row(key)["stats"]["median"].as_u64() > Some(0), "{name} {key}: {e:#}");
                }
                // VMM start needs port-0x80 marks; a VMM without them says so.
                let start = row("vmm_start_us");
                assert!(
                    start["stats"]["n"] == ROUNDS || start["cannot"].as_str().is_some_and(|w| w.contains("port-0x80")),
                    "{name}: {start:#}"
                );
                let no_snapshot = |key: &str| row(key)["cannot"].as_str().is_some_and(|w| w.starts_with("no snapshot: "));
                if kvm && no_snapshot("snapshot_kib") {
                    // A VMM that takes no snapshots (refused before anything starts) says why in
                    // each of the restore figures, and its cold boots are measured all the same.
                    for key in ["restore_ready_us", "pss_per_copy_kib"] {
                        assert!(no_snapshot(key), "{name} {key}: {e:#}");
                    }
                } else if kvm {
                    assert_eq!(row("snapshot_kib")["stats"]["n"], 1, "{name}: {e:#}");
                    assert_eq!(row("restore_ready_us")["stats"]["n"], ROUNDS, "{name}: {e:#}");
                    assert_eq!(row("pss_per_copy_kib")["stats"]["n"], CLONES, "{name}: {e:#}");
                }
                assert!(std::fs::read_to_string(&svg).unwrap().contains(&format!(">{name} (")), "{name} in the chart");
            }
            Some("cannot") => {
                assert!(!is_found || (!kvm && vmm.needs_hardware_kvm()), "{name} can run here: {e:#}");
                assert!(e["why"].as_str().is_some_and(|w| !w.is_empty()) && e["fix"].as_str().is_some_and(|f| !f.is_empty()), "{e:#}");
                if is_found {
                    assert!(e["why"].as_str().unwrap().contains("hardware KVM"), "{e:#}");
                }
            }
            other => panic!("{name}: status {other:?}: {e:#}"),
        }
    }
    let qemu = vmms.iter().find(|e| e["vmm"] == "qemu").unwrap();
    assert_eq!(qemu["status"], "measured", "QEMU runs everywhere (TCG without hardware KVM): {qemu:#}");
    let left = e2e::left_by_host_probe(pid);
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// Ctrl-C in the middle of a shoot-out: exit 130, and nothing of any run is left (each run's
/// guards remove its VMM, helpers, TAP and run directory).
#[test]
fn ctrl_c_in_a_shoot_out_leaves_nothing_behind() {
    let test = "ctrl_c_in_a_shoot_out_leaves_nothing_behind";
    if let Some(why) = e2e::qemu_missing() {
        e2e::skip(test, why);
        return;
    }
    let dir = vm::TempDir::new("shootout-int").unwrap();
    let image = e2e::chinit_image(&dir.path().join("rootfs.ext4"), false);
    let child = vm::host_probe_command()
        .args(["bench", "--vmm", "all", "-n", "5", "--warmup", "0", "--memory", "128"])
        .arg("--kernel")
        .arg(e2e::tiny_bzimage())
        .arg("--rootfs")
        .arg(&image)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    // The second run is under way once its run directory is there.
    let second = std::env::temp_dir().join(format!("host-probe-{pid}-1"));
    let started = std::time::Instant::now();
    while !second.exists() && started.elapsed() < std::time::Duration::from_secs(120) {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    // SAFETY: signalling our own child, which has not been reaped.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGINT);
    }
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(err.contains("interrupted by signal 2"), "{err}");
    let left = e2e::left_by_host_probe(pid);
    assert!(left.is_empty(), "left behind: {left:?}");
}
