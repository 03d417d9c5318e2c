//! The `host-probe` binary: exit codes, `--dry-run`, and cleanup on SIGTERM.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// One skip line, written to stderr directly so `cargo test` shows it even while it captures the
/// output of passing tests.
macro_rules! skip_line {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($t)*);
    }};
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_host-probe"))
}

/// A fresh directory under the system temp dir (`tempfile`), removed when dropped.
fn temp_dir(tag: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(&format!("hp-cli-{tag}-")).tempdir().unwrap()
}

#[test]
fn missing_kernel_exits_3_and_names_the_fix() {
    let d = temp_dir("nokernel");
    let out = bin().args(["run", "--vmm", "qemu", "--rootfs", "/etc/hostname"]).env("CHINIT_CACHE", d.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("run `rootfs-builder kernel --arch x86_64`"), "{err}");
    assert_eq!(err.lines().filter(|l| l.starts_with("host-probe:")).count(), 1, "printed once: {err}");
}

#[test]
fn bad_usage_exits_2() {
    let out = bin().args(["run", "--vmm", "no-such-vmm"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn dry_run_prints_the_exact_commands() {
    let d = temp_dir("dry");
    let k = d.path().join("bzImage");
    let r = d.path().join("rootfs.ext4");
    std::fs::write(&k, b"k").unwrap();
    std::fs::write(&r, b"r").unwrap();
    let out = bin()
        .args(["run", "--dry-run", "--vmm", "qemu", "--no-vsock", "--cpus", "2", "--memory", "128"])
        .arg("--kernel")
        .arg(&k)
        .arg("--rootfs")
        .arg(&r)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().last().unwrap();
    // The RTC: off under KVM (kvm-clock gives the wall clock), on under TCG.
    let rtc = if last.contains(" -accel kvm ") { "off" } else { "on" };
    assert!(last.contains(&format!(" -machine microvm,x-option-roms=off,rtc={rtc} ")), "{last}");
    assert!(last.contains(" -smp 2 -m 128M "), "{last}");
    assert!(last.contains(&format!("-kernel {} ", k.display())), "{last}");
    assert!(last.contains(&format!("file={},format=raw,if=none,read-only=on", r.display())), "{last}");
    assert!(text.contains("ip tuntap add dev hp"), "{text}");
    assert!(!text.contains("vhost-device-vsock"), "--no-vsock: {text}");
}

fn tap_names() -> Vec<String> {
    std::fs::read_dir("/sys/class/net").unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect()
}

fn wait_until(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + within;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// A guest that halts forever; SIGTERM must stop QEMU and vhost-device-vsock and remove the TAP and
/// the run directory, and the exit code must say which signal.
#[test]
fn sigterm_cleans_up_everything() {
    if host_probe::locate::which(host_probe::vmm::qemu::QEMU).is_none() {
        skip_line!("skipped: qemu-system-x86_64 not found (apt-get install qemu-system-x86)");
        return;
    }
    let d = temp_dir("sigterm");
    let k = d.path().join("halt.elf");
    let r = d.path().join("disk.img");
    std::fs::write(&k, host_probe::pvh::elf(host_probe::pvh::End::Halt)).unwrap();
    std::fs::write(&r, vec![0u8; 1 << 20]).unwrap();
    let before_taps = tap_names();
    let mut child = bin()
        .args(["run", "--vmm", "qemu", "--no-agent", "--timeout", "120", "-v"])
        .arg("--kernel")
        .arg(&k)
        .arg("--rootfs")
        .arg(&r)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let run_dir = std::env::temp_dir().join(format!("host-probe-{}-0", child.id()));
    // Wait until the VMM is up: its serial file exists in the run directory.
    assert!(
        wait_until(Duration::from_secs(30), || run_dir.join("serial.log").exists()),
        "run directory {} never filled",
        run_dir.display()
    );
    let ours: Vec<String> = tap_names().into_iter().filter(|t| !before_taps.contains(t) && t.starts_with("hp")).collect();
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: signalling our own child, which has not been reaped.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let status = child.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(143), "{err}");
    assert!(err.contains("interrupted by signal 15"), "{err}");
    assert!(!Path::new(&run_dir).exists(), "run directory removed");
    for t in &ours {
        assert!(!host_probe::tap::exists(t), "TAP {t} removed");
    }
    let needle = run_dir.display().to_string();
    let left: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(&needle))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// An A/B bench of two minimal guests: interleaved boots, progress, and per-figure statistics.
#[test]
fn bench_compares_two_kernels() {
    if host_probe::locate::which(host_probe::vmm::qemu::QEMU).is_none() {
        skip_line!("skipped: qemu-system-x86_64 not found (apt-get install qemu-system-x86)");
        return;
    }
    let d = temp_dir("bench");
    let (ka, kb, r) = (d.path().join("a.elf"), d.path().join("b.elf"), d.path().join("disk.img"));
    std::fs::write(&ka, host_probe::pvh::elf(host_probe::pvh::End::TripleFault)).unwrap();
    std::fs::write(&kb, host_probe::pvh::elf(host_probe::pvh::End::TripleFault)).unwrap();
    std::fs::write(&r, vec![0u8; 1 << 20]).unwrap();
    let out = bin()
        .args(["bench", "-n", "2", "--warmup", "1", "--vmm", "qemu", "--no-agent", "--no-vsock", "--json"])
        .arg("--kernel")
        .arg(&ka)
        .arg("--compare-kernel")
        .arg(&kb)
        .arg("--rootfs")
        .arg(&r)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let progress: Vec<&str> = err.lines().filter(|l| l.starts_with('[')).collect();
    assert_eq!(progress.len(), 6, "{err}");
    assert!(progress[0].starts_with("[1/6] A warm-up"), "{err}");
    assert!(progress[1].starts_with("[2/6] B warm-up"), "{err}");
    assert!(progress[5].starts_with("[6/6] B measured"), "{err}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["schema"], 1);
    assert_eq!(v["n"], 2);
    let rows = v["rows"].as_array().unwrap();
    let ready = rows.iter().find(|r| r["figure"] == "mark 0x63 (host)").unwrap_or_else(|| panic!("{v:#}"));
    assert_eq!(ready["a"]["n"], 2);
    assert_eq!(ready["b"]["n"], 2);
    assert!(ready["ratio"].as_f64().unwrap() > 0.0);
    let a = &ready["a"];
    assert!(a["min_us"].as_u64() <= a["median_us"].as_u64());
    assert!(a["median_us"].as_u64() <= a["max_us"].as_u64());
}

/// `bench --compare-cmdline EXTRA`: the B side is the same boot with EXTRA on the kernel command
/// line, interleaved with A, and says so; it compares one thing at a time.
#[test]
fn bench_compares_a_boot_option_side_by_side() {
    if host_probe::locate::which(host_probe::vmm::qemu::QEMU).is_none() {
        skip_line!("skipped: qemu-system-x86_64 not found (apt-get install qemu-system-x86)");
        return;
    }
    let d = temp_dir("bench-cmdline");
    let (k, r) = (d.path().join("k.elf"), d.path().join("disk.img"));
    std::fs::write(&k, host_probe::pvh::elf(host_probe::pvh::End::TripleFault)).unwrap();
    std::fs::write(&r, vec![0u8; 1 << 20]).unwrap();
    let bench = |extra: &[&str]| {
        bin()
            .args(["bench", "-n", "1", "--warmup", "0", "--vmm", "qemu", "--no-agent", "--no-vsock", "--json"])
            .arg("--kernel")
            .arg(&k)
            .arg("--rootfs")
            .arg(&r)
            .args(extra)
            .output()
            .unwrap()
    };
    let out = bench(&["--compare-cmdline", "no_timer_check"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let (a, b) = (v["a"].as_str().unwrap_or_default(), v["b"].as_str().unwrap_or_default());
    assert!(b.ends_with(" + \"no_timer_check\"") && !a.contains("no_timer_check"), "{v:#}");
    assert_eq!(err.lines().filter(|l| l.starts_with('[')).count(), 2, "{err}");
    let out = bench(&["--compare-cmdline", "x", "--compare-kernel", "/k"]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
}

/// SIGKILL gives no chance to clean up: the VMM and vhost-device-vsock still die with host-probe
/// (parent-death signal), and the next run removes the TAP and run directory left behind (the
/// sweep itself is unit-tested in `stale`).
#[test]
fn after_sigkill_helpers_die_and_the_next_run_sweeps_the_rest() {
    if host_probe::locate::which(host_probe::vmm::qemu::QEMU).is_none() {
        skip_line!("skipped: qemu-system-x86_64 not found (apt-get install qemu-system-x86)");
        return;
    }
    let d = temp_dir("sigkill");
    let (halt, reset, r) = (d.path().join("halt.elf"), d.path().join("reset.elf"), d.path().join("disk.img"));
    std::fs::write(&halt, host_probe::pvh::elf(host_probe::pvh::End::Halt)).unwrap();
    std::fs::write(&reset, host_probe::pvh::elf(host_probe::pvh::End::TripleFault)).unwrap();
    std::fs::write(&r, vec![0u8; 1 << 20]).unwrap();
    let mut child = bin()
        .args(["run", "--vmm", "qemu", "--no-agent", "--timeout", "120"])
        .arg("--kernel")
        .arg(&halt)
        .arg("--rootfs")
        .arg(&r)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let run_dir = std::env::temp_dir().join(format!("host-probe-{pid}-0"));
    let tap = host_probe::tap::tap_name(pid, 0);
    assert!(wait_until(Duration::from_secs(30), || run_dir.join("serial.log").exists()));
    child.kill().unwrap();
    child.wait().unwrap();
    let needle = run_dir.display().to_string();
    let mentioning = || {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
            .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
            .filter(|c| c.contains(&needle))
            .count()
    };
    assert!(wait_until(Duration::from_secs(5), || mentioning() == 0), "QEMU and vhost-device-vsock died with host-probe");
    // The TAP and run directory are left behind now; any run sweeps them (another test running at
    // the same time may be the one that does), so only the end state is checked.

    let out = bin()
        .args(["run", "--vmm", "qemu", "--no-agent", "--no-vsock"])
        .arg("--kernel")
        .arg(&reset)
        .arg("--rootfs")
        .arg(&r)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(!host_probe::tap::exists(&tap));
    assert!(!run_dir.exists());
}

/// `run --restore DIR --clones N` beyond what one host-probe can name is refused at once (exit 2),
/// dry run or not; it used to plan 100 000 copies (seconds and hundreds of MiB) and print them.
#[test]
fn too_many_copies_are_refused_before_anything_is_planned() {
    use host_probe::vmm::cloud_hypervisor;
    let d = temp_dir("clones");
    let (kernel, rootfs) = host_probe::standin::boot_files(d.path());
    let ch = host_probe::standin::vmm(d.path(), "cloud-hypervisor", cloud_hypervisor::VMM, "exit 1");
    let snap = d.path().join("snapshot");
    host_probe::standin::snapshot(&snap, cloud_hypervisor::VMM, &ch, &kernel, &rootfs);
    for dry in [true, false] {
        let t = Instant::now();
        let mut cmd = bin();
        cmd.args(["run", "--clones", "100000", "--restore"]).arg(&snap).env("CLOUD_HYPERVISOR", &ch);
        if dry {
            cmd.arg("--dry-run");
        }
        let out = cmd.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "dry run {dry}: {err}");
        assert!(err.contains("at most 4096"), "dry run {dry}: {err}");
        assert!(out.stdout.is_empty(), "dry run {dry}: planned copies printed");
        assert!(t.elapsed() < Duration::from_secs(2), "dry run {dry}: refused after {:?}", t.elapsed());
    }
}

/// A snapshot whose boot fails removes what it wrote and the directories it made, and nothing else:
/// not a file another process put into the output directory meanwhile, nor a directory it did not
/// make. The stand-in cloud-hypervisor writes that other file (it is another process), then exits.
#[test]
fn a_failed_snapshot_removes_only_what_it_made() {
    use host_probe::vmm::cloud_hypervisor;
    let d = temp_dir("snapfail");
    let (kernel, rootfs) = host_probe::standin::boot_files(d.path());
    let body = r#"[ -n "$THEIRS" ] && echo theirs > "$THEIRS"; echo "stand-in: no guest here" >&2; sleep 1; exit 1"#;
    let ch = host_probe::standin::vmm(d.path(), "cloud-hypervisor", cloud_hypervisor::VMM, body);
    let existing = d.path().join("existing");
    std::fs::create_dir(&existing).unwrap();
    let cases = [
        // An empty directory that was there: it stays, with the other file.
        (existing.clone(), Some(existing.join("theirs")), vec![existing.join("theirs")], vec![]),
        // a/b/c made by the snapshot: all three go.
        (d.path().join("a/b/c"), None, vec![], vec![d.path().join("a")]),
        // x/y/z made, and another file in x meanwhile: x stays with it, y and z go.
        (d.path().join("x/y/z"), Some(d.path().join("x/theirs")), vec![d.path().join("x/theirs")], vec![d.path().join("x/y")]),
    ];
    for (out, theirs, kept, gone) in cases {
        let mut cmd = bin();
        cmd.args(["snapshot", "--vmm", "cloud-hypervisor", "--no-net", "--timeout", "20", "--kernel"]).arg(&kernel);
        cmd.arg("--rootfs").arg(&rootfs).arg("--out").arg(&out).env("CLOUD_HYPERVISOR", &ch);
        if let Some(t) = &theirs {
            cmd.env("THEIRS", t);
        }
        let o = cmd.output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(5), "{}: {err}", out.display());
        assert!(err.contains("stand-in: no guest here"), "{}: the VMM's output is missing: {err}", out.display());
        for k in &kept {
            assert!(k.exists(), "{}: {} was removed", out.display(), k.display());
        }
        for g in &gone {
            assert!(!g.exists(), "{}: {} was left", out.display(), g.display());
        }
    }
    assert!(existing.is_dir());
    assert_eq!(std::fs::read_dir(&existing).unwrap().count(), 1, "only the other file is left in {}", existing.display());
}

/// A restore whose VMM exits fails as soon as it does, with the VMM's output (exit 5), not at
/// `--timeout`: the stand-in cloud-hypervisor says why and exits after a second.
#[test]
fn a_restore_whose_vmm_exits_fails_at_once_with_its_output() {
    use host_probe::vmm::cloud_hypervisor;
    let d = temp_dir("restore-exit");
    let (kernel, rootfs) = host_probe::standin::boot_files(d.path());
    let body = r#"echo "stand-in: cannot restore this snapshot" >&2; sleep 1; exit 1"#;
    let ch = host_probe::standin::vmm(d.path(), "cloud-hypervisor", cloud_hypervisor::VMM, body);
    let snap = d.path().join("snapshot");
    host_probe::standin::snapshot(&snap, cloud_hypervisor::VMM, &ch, &kernel, &rootfs);
    let t = Instant::now();
    let out = bin().args(["run", "--timeout", "20", "--restore"]).arg(&snap).env("CLOUD_HYPERVISOR", &ch).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(err.contains("stand-in: cannot restore this snapshot") && err.contains("restore"), "{err}");
    assert!(t.elapsed() < Duration::from_secs(8), "failed after {:?} (--timeout 20): {err}", t.elapsed());
}

/// A list of VMMs is a shoot-out, for `bench` only, and alone: each refusal is a usage error
/// (exit 2) before anything starts, naming what to drop.
#[test]
fn a_shoot_out_refuses_what_compares_one_vmm() {
    let cases: &[(&[&str], &str)] = &[
        (&["run", "--vmm", "qemu,firecracker", "--dry-run"], "for `bench` only"),
        (&["snapshot", "--vmm", "all", "--out", "/nonexistent/x"], "for `bench` only"),
        (&["bench", "--vmm", "all", "--compare", "/etc/hostname"], "--compare compares one VMM's runs"),
        (&["bench", "--vmm", "qemu,cloud-hypervisor", "--parallel", "2"], "--parallel compares one VMM's runs"),
        (&["bench", "--vmm", "qemu", "--svg", "/nonexistent/x.svg"], "--svg draws a shoot-out"),
        (&["bench", "--vmm", "qemu,qemu"], "qemu twice"),
        (&["bench", "--vmm", "all,qemu"], "stands alone"),
    ];
    for (args, want) in cases {
        let out = bin().args(*args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
}
