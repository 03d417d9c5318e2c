//! Snapshot start: `host-probe snapshot`, then copies restored at once, each made unique
//! (`POST /v1/restore`): different random bytes, hostnames and addresses, the host's time, generation
//! 1, ready over vsock, the TAP and the notify push; the snapshot and the image unchanged; nothing
//! left after success or Ctrl-C. Restores need hardware KVM (and, for QEMU, the kernel's
//! vhost-vsock), so on this project's machines `vm_l1` runs them on the simulated KVM host; here they
//! skip with one line. Bad snapshot directories are refused before anything starts, on any host.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use agent::proto::{ExecRequest, ExecResponse, Ready, RestoreRequest, DEFAULT_VSOCK_PORT};
use chinit_tests::e2e::{self, BOOT_TIMEOUT};
use chinit_tests::vm::{self, TempDir};
use host_probe::launch::Running;
use host_probe::report::Report;
use host_probe::run::{Options, Plan, VmmChoice};
use host_probe::snapshot::manifest::{self, Boot, Devices, FileId, Manifest};
use host_probe::snapshot::restore::{self, Copy};
use host_probe::snapshot::RestoreOptions;
use host_probe::vmm::{cloud_hypervisor, firecracker, qemu, Accel, MemoryRestoreMode, Vmm};

/// A copy that is not ready by then is stuck: it fails with its console well inside L1's own time
/// bound, instead of L1 timing out with nothing to say.
const RESTORE_TIMEOUT: Duration = Duration::from_secs(60);

/// Options for a guest that can be snapshotted and restored here; `None` (after one line) when
/// this host cannot.
fn restorable(test: &str, vmm: Vmm) -> Option<Options> {
    let host = chinit_tests::vm::host_offer();
    if !host.kvm.hardware() || !host.kvm_usable {
        e2e::skip(test, "no hardware KVM here (vm_l1 runs these tests on a simulated KVM host)");
        return None;
    }
    // A VMM whose copies use the kernel's vsock (QEMU) needs the host's vhost-vsock.
    if vmm.restorable_vsock() == "kernel" && !host.kernel_vsock {
        e2e::skip(test, &format!("no /dev/vhost-vsock: {} snapshots need the kernel's vhost-vsock (modprobe vhost_vsock)", vmm.name()));
        return None;
    }
    if let (Some(var), None) = (vmm.program_var(), host.program_of(vmm)) {
        e2e::skip(test, &format!("{} not found (set ${var} or put it on PATH)", vmm.name()));
        return None;
    }
    let kernel = e2e::tiny_bzimage().with_file_name(vmm.kernel_file(host_probe::locate::host_arch()));
    let choice = VmmChoice::Named(vmm);
    Some(Options { vmm: choice, kernel: Some(kernel), timeout: BOOT_TIMEOUT, ..Options::default() })
}

fn sha256(paths: &[PathBuf]) -> String {
    vm::run(Command::new("sha256sum").args(paths))
}

fn files_of(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    v.sort();
    v
}

fn exec(c: &Copy, script: &str) -> ExecResponse {
    exec_in(c.running(), script)
}

fn exec_in(running: &Running, script: &str) -> ExecResponse {
    let req = ExecRequest { argv: vec!["/bin/busybox".into(), "sh".into(), "-c".into(), script.into()], ..Default::default() };
    let body = serde_json::to_vec(&req).unwrap();
    let vsock = running.guest_vsock().unwrap();
    let mut s = vsock.connect(DEFAULT_VSOCK_PORT, Duration::from_secs(30)).unwrap();
    let r = agent::client::request(&mut s, "POST", "/v1/exec", Some(&body)).unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r.json().unwrap()
}

fn now_s() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// What one copy says of itself: 32 bytes of /dev/urandom, its hostname, its wall clock (seconds)
/// with the host's seconds before and after asking.
struct Seen {
    random: String,
    hostname: String,
    clock: (u64, u64, u64),
}

fn look(c: &Copy) -> Seen {
    let before = now_s();
    let out =
        exec(c, "bb=/bin/busybox; $bb head -c 32 /dev/urandom | $bb od -An -tx1 | $bb tr -d ' \\n'; echo; $bb hostname; $bb date +%s");
    let after = now_s();
    assert_eq!(out.exit_code, Some(0), "{out:?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{out:?}");
    Seen { random: lines[0].into(), hostname: lines[1].into(), clock: (before, lines[2].parse().unwrap(), after) }
}

/// Snapshots a guest, then for each memory mode restores two copies at once and checks that they
/// are unique copies of it; the snapshot and the image stay as they were.
fn copies_are_unique(test: &str, vmm: Vmm, modes: &[Option<MemoryRestoreMode>]) -> Option<(TempDir, PathBuf)> {
    let mut o = restorable(test, vmm)?;
    let tmp = TempDir::new("snapshot").unwrap();
    let image = e2e::chinit_image(&tmp.path().join("rootfs.ext4"), true);
    o.rootfs = Some(image.clone());
    let dir = tmp.path().join("snap");
    let image_sum = sha256(std::slice::from_ref(&image));

    let taken = host_probe::snapshot::take(&o, &dir).unwrap_or_else(|e| panic!("snapshot: {e}"));
    assert_eq!((taken.manifest.vmm, taken.manifest.generation), (vmm, 0));
    assert!(taken.report.guest.as_ref().is_some_and(|g| g.ready && g.generation == 0));
    let mut want: Vec<String> = manifest::vmm_files(vmm).iter().map(|f| f.to_string()).collect();
    want.push(manifest::MANIFEST.into());
    want.sort();
    let have: Vec<String> = files_of(&dir).iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    assert_eq!(have, want);
    let dir_sum = sha256(&files_of(&dir));
    // Long enough that a copy whose clock was not stepped is off by more than a second.
    std::thread::sleep(Duration::from_secs(2));

    for &mode in modes {
        let what = format!("{} {:?}", vmm.name(), mode);
        let base = Options { timeout: RESTORE_TIMEOUT, ..Options::default() };
        let prep = restore::prepare(&RestoreOptions { dir: dir.clone(), clones: 2, mode }, &base, &chinit_tests::vm::host_offer())
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        // Each copy lives in its own thread, start to finish: a VMM dies with the thread that
        // started it (PR_SET_PDEATHSIG).
        let copies: Vec<(Seen, RestoreRequest, Ready, Report, Plan)> = std::thread::scope(|s| {
            let threads: Vec<_> = prep
                .plans
                .iter()
                .map(|p| {
                    s.spawn(|| {
                        let c = restore::start(&prep, p, &prep.options).unwrap_or_else(|e| panic!("{what}: {e}"));
                        let seen = look(&c);
                        let (req, ready, plan) = (c.request().clone(), c.ready().clone(), c.running().plan().clone());
                        let report = c.finish(&prep.options).unwrap_or_else(|e| panic!("{what}: {e}"));
                        (seen, req, ready, report, plan)
                    })
                })
                .collect();
            threads.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (s, req, ready, r, _) in &copies {
            assert_eq!(ready.generation, 1, "{what}");
            assert_eq!(ready.ip, req.ip, "{what}");
            assert_eq!(Some(&s.hostname), req.hostname.as_ref(), "{what}");
            let (before, guest, after) = s.clock;
            assert!(guest + 1 >= before && guest <= after + 1, "{what}: guest clock {guest}, host {before}..{after}");
            assert_eq!(s.random.len(), 64, "{what}: {}", s.random);
            let rs = r.restore.as_ref().unwrap();
            assert_eq!((rs.generation, rs.memory_restore_mode.clone()), (1, mode.map(|m| m.name().to_string())), "{what}");
            assert!(rs.vmm_restored_us <= rs.request_sent_us && rs.request_sent_us < rs.answered_us, "{what}: {rs:?}");
            assert!(r.host.ready_tcp_us.is_some(), "{what}: /ready at the new address: {:?}", r.host);
            assert!(r.host.notify_us.is_some(), "{what}: the pushed ready document on the copy's port: {:?}", r.host);
            let steps = &r.guest.as_ref().unwrap().steps;
            let names: Vec<&str> = steps.iter().map(|s| s.name.as_str()).filter(|n| n.starts_with("restore.")).collect();
            assert_eq!(names, ["restore.entropy", "restore.clock", "restore.hostname", "restore.network"], "{what}");
            assert!(steps.iter().all(|s| s.error.is_none()), "{what}: {steps:?}");
        }
        let (a, b) = (&copies[0], &copies[1]);
        assert_ne!(a.0.random, b.0.random, "{what}: the copies' random generators agree");
        assert_ne!(a.0.hostname, b.0.hostname, "{what}");
        assert_ne!(a.2.ip, b.2.ip, "{what}");
        let plans: Vec<Plan> = copies.into_iter().map(|c| c.4).collect();
        for p in &plans {
            assert!(!p.run_dir.exists(), "{what}: {} left", p.run_dir.display());
            assert!(!host_probe::tap::exists(&p.tap.as_ref().unwrap().tap), "{what}: TAP left");
            assert_eq!(e2e::processes_mentioning(&p.run_dir.display().to_string()), Vec::<String>::new(), "{what}");
        }
    }
    assert_eq!(sha256(&files_of(&dir)), dir_sum, "the snapshot changed");
    assert_eq!(sha256(std::slice::from_ref(&image)), image_sum, "the image changed");
    Some((tmp, dir))
}

/// Ctrl-C while a copy is being restored: exit 130, and its VMM, TAP and run directory are gone.
fn ctrl_c_during_restore_leaves_nothing(dir: &Path) {
    let child = vm::host_probe_command().args(["run", "--restore"]).arg(dir).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let pid = child.id();
    let run_dirs = format!("host-probe-{pid}-");
    let deadline = Instant::now() + Duration::from_secs(60);
    while e2e::processes_mentioning(&run_dirs).is_empty() {
        assert!(Instant::now() < deadline, "the copy's VMM never started");
        std::thread::sleep(Duration::from_millis(5));
    }
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGINT).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{:?} {}", out.status.signal(), String::from_utf8_lossy(&out.stderr));
    assert_eq!(e2e::left_by_host_probe(pid), Vec::<String>::new());
}

#[test]
fn qemu_copies_of_a_snapshot_are_unique_and_the_snapshot_is_untouched() {
    let test = "qemu_copies_of_a_snapshot_are_unique_and_the_snapshot_is_untouched";
    if let Some((_tmp, dir)) = copies_are_unique(test, qemu::VMM, &[None]) {
        ctrl_c_during_restore_leaves_nothing(&dir);
        three_copies_at_once_share_memory(&dir);
    }
}

/// `bench --restore DIR --clones 3`: three copies at once, all ready with their own addresses,
/// each VMM's PSS measured against the guest's memory; nothing left.
fn three_copies_at_once_share_memory(dir: &Path) {
    let base = Options { timeout: RESTORE_TIMEOUT, ..Options::default() };
    let d = host_probe::density::clones(&RestoreOptions { dir: dir.to_path_buf(), clones: 3, mode: None }, &base).unwrap();
    assert_eq!((d.n, d.ready, d.failures.len()), (3, 3, 0), "{}", host_probe::density::text(&d));
    let mut a = d.addresses.clone();
    a.sort();
    a.dedup();
    assert_eq!(a.len(), 3, "{:?}", d.addresses);
    assert_eq!(d.memory.len(), 3);
    assert!(d.pss_fraction.is_some_and(|f| f > 0.0 && f < 1.0), "{d:?}");
    println!("{}", host_probe::density::text(&d));
    assert_eq!(e2e::left_by_host_probe(std::process::id()), Vec::<String>::new());
}

#[test]
fn cloud_hypervisor_copies_are_unique_in_both_memory_restore_modes() {
    let test = "cloud_hypervisor_copies_are_unique_in_both_memory_restore_modes";
    if let Some((_tmp, dir)) =
        copies_are_unique(test, cloud_hypervisor::VMM, &[Some(MemoryRestoreMode::Copy), Some(MemoryRestoreMode::Ondemand)])
    {
        ctrl_c_during_restore_leaves_nothing(&dir);
    }
}

/// Firecracker: `PATCH /vm Paused` and `PUT /snapshot/create`, each copy a fresh Firecracker that
/// loads it (`PUT /snapshot/load` with its own TAP and vsock socket, resumed), made unique; then
/// copies loaded with no restore request notice it by themselves.
#[test]
fn firecracker_copies_are_unique() {
    if let Some((_tmp, dir)) = copies_are_unique("firecracker_copies_are_unique", firecracker::VMM, &[None]) {
        loaded_copies_notice_by_themselves(&dir);
        ctrl_c_during_restore_leaves_nothing(&dir);
    }
}

/// Two copies loaded by the VMM alone, at once, as a platform that loads snapshots with plain
/// Firecracker API calls does (no `POST /v1/restore`): each notices its new VM generation ID by
/// itself (the kernel's notice), and becomes generation 1 with one restore, its address announced
/// again, its ready document pushed and a console line; the kernel reseeded their random
/// generators, so their bytes differ. The host's request for the same load, later, still makes the
/// copy unique and counts once.
fn loaded_copies_notice_by_themselves(dir: &Path) {
    let what = "firecracker, loaded with no restore request";
    let base = Options { timeout: RESTORE_TIMEOUT, ..Options::default() };
    let prep = restore::prepare(&RestoreOptions { dir: dir.to_path_buf(), clones: 2, mode: None }, &base, &chinit_tests::vm::host_offer())
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let copies: Vec<(Ready, String, Ready, String, Plan)> = std::thread::scope(|s| {
        let threads: Vec<_> = prep
            .plans
            .iter()
            .map(|p| {
                s.spawn(|| {
                    let (mut running, _) = restore::load(&prep, p, &prep.options).unwrap_or_else(|e| panic!("{what}: {e}"));
                    let t0 = Instant::now();
                    let pushed = loop {
                        let doc = running.pushes().into_iter().find_map(|(_, b)| serde_json::from_slice::<Ready>(&b).ok());
                        if let Some(doc) = doc.filter(|d| d.generation == 1) {
                            break doc;
                        }
                        if t0.elapsed() > RESTORE_TIMEOUT {
                            let seen = exec_in(&running, "bb=/bin/busybox; $bb ls /sys/bus/acpi/drivers/vmgenid; $bb dmesg | $bb grep -i -e vmgen -e crng -e ACPI -e GED | $bb tail -20");
                            panic!("{what}: no push of generation 1 in {RESTORE_TIMEOUT:?}; in the copy:\n{}{}", seen.stdout, seen.stderr);
                        }
                        std::thread::sleep(Duration::from_millis(10));
                    };
                    let out =
                        exec_in(&running, "/bin/busybox head -c 32 /dev/urandom | /bin/busybox od -An -tx1 | /bin/busybox tr -d ' \\n'");
                    assert_eq!((out.exit_code, out.stdout.len()), (Some(0), 64), "{what}: {out:?}");
                    let mut req = restore::request(&prep.manifest, p).unwrap();
                    req.wall_clock_us = Some(SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_micros() as u64);
                    let body = serde_json::to_vec(&req).unwrap();
                    let mut sock = running.guest_vsock().unwrap().connect(DEFAULT_VSOCK_PORT, Duration::from_secs(30)).unwrap();
                    let r = agent::client::request(&mut sock, "POST", "/v1/restore", Some(&body)).unwrap();
                    assert_eq!(r.status, 200, "{what}: {}", String::from_utf8_lossy(&r.body));
                    let after: Ready = r.json().unwrap();
                    let console = running.console_text();
                    running.power_off(host_probe::run::POWER_OFF_GRACE);
                    let _ = running.finish();
                    (pushed, out.stdout, after, console, p.clone())
                })
            })
            .collect();
        threads.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (pushed, _, after, console, _) in &copies {
        assert_eq!((pushed.generation, pushed.restores), (1, 1), "{what}: {pushed:?}");
        let announce = pushed.steps.iter().find(|s| s.name == "restore.announce");
        assert!(announce.is_some_and(|s| s.error.is_none()), "{what}: {:?}", pushed.steps);
        assert!(
            console.contains("restore: the VM generation ID changed: a copy loaded from a snapshot, now generation 1"),
            "{what}: {console}"
        );
        // The request completes the load: unique as asked, still one restore.
        assert_eq!((after.generation, after.restores), (1, 1), "{what}: {after:?}");
        let names: Vec<&str> = after.steps.iter().map(|s| s.name.as_str()).filter(|n| n.starts_with("restore.")).collect();
        assert_eq!(names, ["restore.entropy", "restore.clock", "restore.hostname", "restore.network"], "{what}");
    }
    assert_ne!(copies[0].1, copies[1].1, "{what}: the copies' random generators agree");
    for (.., p) in &copies {
        assert!(!p.run_dir.exists(), "{what}: {} left", p.run_dir.display());
        assert!(!host_probe::tap::exists(&p.tap.as_ref().unwrap().tap), "{what}: TAP left");
    }
}

/// A QEMU snapshot directory made by hand (the files' contents do not matter to the checks):
/// manifest, state and memory, of `kernel` and `image`.
fn fake_snapshot(dir: &Path, kernel: &Path, image: &Path, version: &str) -> Manifest {
    std::fs::create_dir_all(dir).unwrap();
    let m = Manifest {
        format: manifest::FORMAT,
        vmm: qemu::VMM,
        vmm_binary: vm::qemu_binary().unwrap(),
        vmm_version: version.into(),
        accel: Accel::Kvm,
        boot: Boot {
            kernel: FileId::of(kernel).unwrap(),
            rootfs: Some(FileId::of(image).unwrap()),
            initramfs: None,
            root_mode: "disk".into(),
            cpus: 1,
            memory_mib: 256,
            cmdline_extra: String::new(),
            init: "/sbin/chinit".into(),
            layout: "default".into(),
            cmdline: "console=ttyS0".into(),
        },
        devices: Devices { mac: Some("02:68:70:fe:01:02".into()), ip: Some("169.254.1.2".into()), vsock: "kernel".into() },
        generation: 0,
        files: vec!["memory".into(), "state".into()],
        created_unix_s: 0,
        boot_ready_us: 1,
        pause_us: 1,
        save_us: 1,
    };
    std::fs::write(dir.join("memory"), b"m").unwrap();
    std::fs::write(dir.join("state"), b"s").unwrap();
    std::fs::write(dir.join(manifest::MANIFEST), serde_json::to_vec_pretty(&m).unwrap()).unwrap();
    m
}

/// host-probe's exit code and stderr.
fn host_probe_says(args: &[&str]) -> (i32, String) {
    let out = vm::host_probe_command().args(args).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Every bad snapshot directory and option is refused with its reason and fix (exit 6 for the
/// snapshot, 2 for the command line) before anything starts; what was given is left as it was.
#[test]
fn bad_snapshots_and_options_are_refused_before_anything_starts() {
    if vm::qemu_binary().is_none() {
        e2e::skip("bad_snapshots_and_options_are_refused_before_anything_starts", "no qemu-system-x86_64");
        return;
    }
    let tmp = TempDir::new("bad-snapshots").unwrap();
    let kernel = tmp.path().join("bzImage");
    let image = tmp.path().join("rootfs.ext4");
    std::fs::write(&kernel, b"kernel").unwrap();
    std::fs::write(&image, b"image").unwrap();
    let version = manifest::vmm_version(&vm::qemu_binary().unwrap()).unwrap();
    let s = |p: &Path| p.display().to_string();

    let missing = tmp.path().join("nowhere");
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let no_state = tmp.path().join("no-state");
    fake_snapshot(&no_state, &kernel, &image, &version);
    std::fs::remove_file(no_state.join("state")).unwrap();
    let garbled = tmp.path().join("garbled");
    fake_snapshot(&garbled, &kernel, &image, &version);
    std::fs::write(garbled.join(manifest::MANIFEST), b"{\"format\":").unwrap();
    let other_version = tmp.path().join("other-version");
    fake_snapshot(&other_version, &kernel, &image, "QEMU emulator version 1.0");
    let hybrid = tmp.path().join("hybrid");
    let mut m = fake_snapshot(&hybrid, &kernel, &image, &version);
    m.devices.vsock = "hybrid".into();
    std::fs::write(hybrid.join(manifest::MANIFEST), serde_json::to_vec_pretty(&m).unwrap()).unwrap();
    let good = tmp.path().join("good");
    fake_snapshot(&good, &kernel, &image, &version);

    let cases: Vec<(Vec<String>, i32, &str)> = vec![
        (vec![s(&missing)], 6, "does not exist"),
        (vec![s(&kernel)], 6, "is not a directory"),
        (vec![s(&hybrid)], 6, "qemu cannot restore"),
        (vec![s(&empty)], 6, "is not a complete snapshot"),
        (vec![s(&no_state)], 6, "state missing"),
        (vec![s(&garbled)], 6, "not a snapshot manifest"),
        (vec![s(&other_version)], 6, "was taken by QEMU emulator version 1.0"),
        (vec![s(&good), "--kernel".into(), s(&kernel)], 2, "drop --kernel"),
        (vec![s(&good), "--memory".into(), "512".into(), "--no-net".into()], 2, "drop --memory, --no-net"),
        (vec![s(&good), "--clones".into(), "0".into()], 2, "at least one copy"),
        (vec![s(&good), "--memory-restore-mode".into(), "ondemand".into()], 2, "cloud-hypervisor's"),
    ];
    for (args, code, want) in cases {
        let mut all = vec!["run".to_string(), "--restore".into()];
        all.extend(args);
        let argv: Vec<&str> = all.iter().map(String::as_str).collect();
        let (got, err) = host_probe_says(&argv);
        assert_eq!(got, code, "{all:?}: {err}");
        assert!(err.contains(want), "{all:?}: {want:?} missing from: {err}");
        assert!(err.contains("fix:") || code == 2, "{all:?}: no fix in: {err}");
    }
    // The kernel or the image changed since: refused, named.
    let before = sha256(&files_of(&good));
    std::fs::write(&image, b"image, changed").unwrap();
    let (code, err) = host_probe_says(&["run", "--restore", &s(&good)]);
    assert_eq!(code, 6, "{err}");
    assert!(err.contains(&format!("root image {} changed since it was taken", image.display())), "{err}");
    std::fs::write(&image, b"image").unwrap();
    filetime_touch(&kernel);
    let (code, err) = host_probe_says(&["run", "--restore", &s(&good)]);
    assert_eq!(code, 6, "{err}");
    assert!(err.contains("kernel") && err.contains("modified since it was taken"), "{err}");
    assert_eq!(sha256(&files_of(&good)), before, "a refused restore changed the snapshot");

    // snapshot: an output directory that is not empty is never written; a guest without vsock or
    // without chinit's agent cannot be snapshotted.
    let (code, err) = host_probe_says(&["snapshot", "--vmm", "qemu", "--kernel", &s(&kernel), "--rootfs", &s(&image), "--out", &s(&good)]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("is not empty"), "{err}");
    assert_eq!(sha256(&files_of(&good)), before);
    let out = tmp.path().join("new-snapshot");
    for (flag, code, want) in [("--no-vsock", 3, "snapshot needs vsock"), ("--no-agent", 2, "drop --no-agent")] {
        let (got, err) =
            host_probe_says(&["snapshot", "--vmm", "qemu", "--kernel", &s(&kernel), "--rootfs", &s(&image), flag, "--out", &s(&out)]);
        assert_eq!(got, code, "{flag}: {err}");
        assert!(err.contains(want), "{flag}: {err}");
        assert!(!out.exists(), "{flag}: the refused snapshot left {}", out.display());
    }
    // Without the kernel's vhost-vsock, QEMU's vsock is vhost-device-vsock, which QEMU cannot migrate.
    let host = chinit_tests::vm::host_offer();
    if !host.kernel_vsock && host.vhost_vsock.is_some() {
        let (got, err) =
            host_probe_says(&["snapshot", "--vmm", "qemu", "--kernel", &s(&kernel), "--rootfs", &s(&image), "--out", &s(&out)]);
        assert_eq!(got, 3, "{err}");
        assert!(err.contains("non-migratable device") && err.contains("modprobe vhost_vsock"), "{err}");
        assert!(!out.exists());
    }
}

/// Sets a file's modification time to now + 1 s (its content unchanged).
fn filetime_touch(p: &Path) {
    let t = SystemTime::now() + Duration::from_secs(1);
    std::fs::File::options().write(true).open(p).unwrap().set_modified(t).unwrap();
}
