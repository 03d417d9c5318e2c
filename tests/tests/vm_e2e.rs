//! End to end: real kernels under QEMU (KVM with hardware KVM, TCG otherwise), chinit as PID 1,
//! driven through host-probe (its binary or its library) and, where a test must talk to a guest that
//! stays up, through [`chinit_tests::e2e::Guest`], which starts exactly what host-probe plans.
//!
//! Every test is bounded in time and checks that it left nothing behind. A test skips (one line)
//! only when QEMU is missing, or, for the Debian cloud kernel, when apt cannot fetch it.
//! docs/testing.md says what each test proves.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use agent::proto::ExecRequest;
use chinit_tests::e2e::{self, json_u64 as u, Guest, Trigger, BOOT_TIMEOUT};
use chinit_tests::vm::{self, TempDir};
use host_probe::run::{self, Options, Wait};
use serde_json::Value;

fn skip_without_qemu(test: &str) -> bool {
    match e2e::qemu_missing() {
        Some(why) => {
            e2e::skip(test, why);
            true
        }
        None => false,
    }
}

/// QEMU and Debian's cloud kernel (vmlinuz, modules), or `None` after the test's one skip line.
fn debian_kernel_or_skip(test: &str) -> Option<(std::path::PathBuf, std::path::PathBuf)> {
    if skip_without_qemu(test) {
        return None;
    }
    e2e::debian_cloud_kernel().map_err(|why| e2e::skip(test, &why)).ok()
}

/// `true` (after the test's one skip line) when QEMU or vhost-device-vsock is missing.
fn skip_without_qemu_or_vsock(test: &str) -> bool {
    if skip_without_qemu(test) {
        return true;
    }
    if !e2e_vsock() {
        e2e::skip(test, "no vsock for QEMU guests: neither /dev/vhost-vsock nor vhost-device-vsock (scripts/setup.sh installs it)");
        return true;
    }
    false
}

/// QEMU and a container image ([`e2e::container_image`] of `script`, as `root`: `app.ext4` or
/// `app.cpio`) in a new temporary directory, or `None` after the test's one skip line.
fn container_image_or_skip(test: &str, script: &str, stop_signal: &str, root: &str) -> Option<(TempDir, std::path::PathBuf)> {
    if skip_without_qemu(test) {
        return None;
    }
    let tmp = TempDir::new("e2e-image").unwrap();
    match e2e::container_image(tmp.path(), script, stop_signal, &tmp.path().join(root)) {
        Ok(image) => Some((tmp, image)),
        Err(why) => {
            e2e::skip(test, &why);
            None
        }
    }
}

/// Everything a report must say about a run that reached ready, checked on its JSON (`--json`, or a
/// library report serialised the same way): every phase, monotonic clocks, sums that add up.
fn assert_consistent_timeline(j: &Value, over_vsock: bool) {
    assert_eq!(j["schema"], 1);
    let g = &j["guest"];
    assert_eq!(g["ready"], true, "{g:#}");
    assert_eq!(g["mode"], "vm");
    let (init_start, ready) = (u(j, "/guest/init_start_us"), u(j, "/guest/ready_us"));
    assert!(0 < init_start && init_start < ready, "kernel start < chinit start < ready: {g:#}");

    // chinit's steps: each inside [init start, ready] and after the previous one; only the late
    // mounts come after ready.
    let steps = g["steps"].as_array().expect("steps");
    let mut names = Vec::new();
    let mut prev_end = init_start;
    for s in steps {
        let (name, start, end) = (s["name"].as_str().unwrap(), u(s, "/start_us"), u(s, "/end_us"));
        assert!(s.get("error").is_none_or(Value::is_null), "step {name} failed: {s}");
        assert!(start <= end, "{name}: start after end: {s}");
        if name == "mounts.late" {
            assert!(start >= ready, "the late mounts run after ready: {s}");
            continue;
        }
        assert!(start >= prev_end, "{name} starts before the previous step ended ({prev_end}): {g:#}");
        assert!(end <= ready, "{name} ends after ready: {g:#}");
        prev_end = end;
        names.push(name);
    }
    for want in ["mounts", "cmdline", "network", "agent"] {
        assert!(names.contains(&want), "step {want} missing from {names:?}");
    }

    // The phases add up, and each comes from the clock the schema names.
    let e2e::BootPhases { init, total, .. } = e2e::phases_add_up(j);
    let p = &j["phases"];
    let tcp = u(j, "/host/ready_tcp_us");
    let mut answers = vec![tcp];
    if over_vsock {
        answers.push(u(j, "/host/ready_vsock_us"));
        answers.push(u(j, "/host/notify_us"));
    }
    assert_eq!(total, *answers.iter().min().unwrap(), "total is the first ready answer: {:#}", j["host"]);

    // Port-0x80 marks on the host clock: in arrival order, chinit's four once each, in order, after
    // the VMM was up; the host-side figures derive from them.
    let marks = j["host"]["marks"].as_array().expect("marks");
    let times: Vec<u64> = marks.iter().map(|m| u(m, "/t_us")).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "marks not monotonic: {times:?}");
    let chinit: Vec<(u64, u64)> = marks.iter().map(|m| (u(m, "/code"), u(m, "/t_us"))).filter(|(c, _)| (0x60..=0x63).contains(c)).collect();
    assert_eq!(chinit.iter().map(|m| m.0).collect::<Vec<_>>(), vec![0x60, 0x61, 0x62, 0x63], "{marks:?}");
    let (m60, m63) = (chinit[0].1, chinit[3].1);
    assert!(u(j, "/host/vmm_ready_us") <= m60);
    assert_eq!(u(p, "/kernel_start_host_us"), m60 - init_start, "{p:#}");
    assert_eq!(u(p, "/init_host_us"), m63 - m60, "{p:#}");
    // chinit writes the ready mark before it answers; allow for a busy host delaying the reader.
    assert!(m63 <= total + 5_000_000, "the ready mark arrives around the first answer: {m63} vs {total}");
    // Once chinit announced itself, the host sent it no SYN until it said it was ready: one ask.
    assert_eq!(j["host"]["tcp_attempts_after_init_mark"], 1, "the host polled the boot: {:#}", j["host"]);
    assert!(u(j, "/host/tcp_attempts") >= 1);

    // The console line agrees with the guest clock to the microsecond.
    let console_ms = j["console_ready_ms"].as_f64().expect("console_ready_ms");
    assert!((console_ms * 1000.0 - init as f64).abs() < 1.0, "console {console_ms} ms vs init {init} us");
    // Only KVM timings are representative, and not on a host that is itself emulated (L1).
    let emulated_host = j["notes"].as_array().unwrap().iter().any(|n| n.as_str().unwrap().contains("this host is itself emulated"));
    assert_eq!(j["representative"], j["accel"] == "kvm" && !emulated_host, "{:#}", j["notes"]);
    if j["accel"] == "tcg" {
        assert!(j["notes"].as_array().unwrap().iter().any(|n| n.as_str().unwrap().contains("using TCG emulation")), "{:#}", j["notes"]);
    }
}

/// `host-probe run --vmm qemu --timeout 180 EXTRA... --kernel K --rootfs R`, as users run it.
fn host_probe_run(kernel: &Path, image: &Path, extra: &[&str]) -> Command {
    let mut c = vm::host_probe_command();
    c.args(["run", "--vmm", "qemu", "--timeout", "180"]).args(extra).arg("--kernel").arg(kernel).arg("--rootfs").arg(image);
    c.stdin(Stdio::null());
    c
}

/// [`host_probe_run`] with `--json`: it must succeed; its report.
fn host_probe_run_json(kernel: &Path, image: &Path, extra: &[&str]) -> Value {
    let out = host_probe_run(kernel, image, &[&["--json"], extra].concat()).output().unwrap();
    assert!(out.status.success(), "host-probe run: {}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// What `host-probe run` made for the process `pid` (its first run): TAP and run directory.
fn leftovers(pid: u32) -> Vec<String> {
    let tap = host_probe::tap::tap_name(pid, 0);
    let dir = std::env::temp_dir().join(format!("host-probe-{pid}-0"));
    let mut left = Vec::new();
    if host_probe::tap::exists(&tap) {
        left.push(format!("TAP {tap}"));
    }
    if dir.exists() {
        left.push(format!("run directory {}", dir.display()));
    }
    let d = dir.display().to_string();
    left.extend(e2e::processes_mentioning(&d).into_iter().map(|p| format!("process {p}")));
    left.extend(e2e::unix_sockets_mentioning(&d).into_iter().map(|s| format!("socket {s}")));
    left
}

/// `host-probe run --json` through the binary, as users run it: a consistent report over both ways in.
#[test]
fn host_probe_run_json_has_every_phase_and_consistent_numbers() {
    if skip_without_qemu("host_probe_run_json_has_every_phase_and_consistent_numbers") {
        return;
    }
    let tmp = TempDir::new("e2e-json").unwrap();
    let image = e2e::chinit_image(&tmp.path().join("rootfs.ext4"), false);
    let before = std::fs::read(&image).unwrap();
    let kernel = e2e::tiny_bzimage();
    let j = host_probe_run_json(&kernel, &image, &[]);
    assert_consistent_timeline(&j, e2e_vsock());
    assert_eq!(j["kernel"], kernel.display().to_string());
    assert_eq!(j["root_kind"], "disk");
    assert!(j["cmdline"].as_str().unwrap().contains("root=/dev/vda ro"), "{}", j["cmdline"]);
    assert!(!j["notes"].as_array().unwrap().iter().any(|n| n.as_str().unwrap().contains("exited")), "clean power-off: {:#}", j["notes"]);
    assert_eq!(std::fs::read(&image).unwrap(), before, "the image is never written");
}

/// The baseline image of docs/benchmarks.md boots under host-probe with `--init /sbin/init`: its
/// shell init and Python agent answer `/ready` in chinit's schema, and host-probe, seeing no marks
/// from it, polls (so the comparison's other side is a working guest).
#[test]
fn host_probe_boots_the_baseline_image_with_its_own_init() {
    if skip_without_qemu("host_probe_boots_the_baseline_image_with_its_own_init") {
        return;
    }
    let tmp = TempDir::new("e2e-baseline").unwrap();
    let image = tmp.path().join("rootfs_baseline.ext4");
    vm::run(Command::new(e2e::rootfs_builder()).env("ROOTFS_BUILDER_QUIET", "1").args(["--profile", "baseline", "--out"]).arg(&image));
    let before = std::fs::read(&image).unwrap();
    let j = host_probe_run_json(&e2e::tiny_bzimage(), &image, &["--init", "/sbin/init"]);
    assert!(j["cmdline"].as_str().unwrap().contains(" init=/sbin/init "), "{}", j["cmdline"]);
    let g = &j["guest"];
    assert_eq!((g["ready"].as_bool(), g["version"].as_str()), (Some(true), Some("baseline")), "{g:#}");
    let names: Vec<&str> = g["steps"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["mounts", "cmdline", "network", "python", "agent"]);
    assert_eq!(u(&j, "/phases/init_us"), u(&j, "/guest/ready_us") - u(&j, "/guest/init_start_us"));
    assert!(j["host"]["marks"].as_array().unwrap().iter().all(|m| !(0x60..=0x63).contains(&u(m, "/code"))), "{:#}", j["host"]);
    assert!(j["host"]["tcp_attempts_after_init_mark"].is_null() && u(&j, "/host/tcp_attempts") >= 1, "{:#}", j["host"]);
    assert_eq!(std::fs::read(&image).unwrap(), before, "the image is never written");
}

/// Whether this host gives QEMU guests vsock: the kernel's vhost-vsock, or vhost-device-vsock.
fn e2e_vsock() -> bool {
    let host = chinit_tests::vm::host_offer();
    host.kernel_vsock || host.vhost_vsock.is_some()
}

/// Two `host-probe run` processes at once: both reach ready, on their own TAP and address.
#[test]
fn two_host_probe_runs_at_once_both_succeed() {
    if skip_without_qemu("two_host_probe_runs_at_once_both_succeed") {
        return;
    }
    let tmp = TempDir::new("e2e-two").unwrap();
    let image = e2e::chinit_image(&tmp.path().join("rootfs.ext4"), false);
    let kernel = e2e::tiny_bzimage();
    let children: Vec<_> = (0..2)
        .map(|_| host_probe_run(&kernel, &image, &["--json"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap())
        .collect();
    let pids: Vec<u32> = children.iter().map(|c| c.id()).collect();
    let mut ips = Vec::new();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "host-probe run: {}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
        let j: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_consistent_timeline(&j, e2e_vsock());
        ips.push(j["guest"]["ip"].as_str().unwrap().to_string());
    }
    assert_ne!(ips[0], ips[1], "each run has its own guest address");
    for pid in pids {
        assert_eq!(leftovers(pid), Vec::<String>::new(), "run of pid {pid}");
    }
}

/// Ctrl-C (SIGINT) while the guest boots: exit 130, and no TAP, process, socket or run directory.
/// The guest waits for a root disk that never comes (`root=/dev/vdz rootwait`, the last `root=` wins),
/// so the run is still booting when the signal arrives, however fast the host is.
#[test]
fn sigint_mid_boot_leaves_nothing_behind() {
    if skip_without_qemu("sigint_mid_boot_leaves_nothing_behind") {
        return;
    }
    let tmp = TempDir::new("e2e-sigint").unwrap();
    let image = e2e::chinit_image(&tmp.path().join("rootfs.ext4"), false);
    let kernel = e2e::tiny_bzimage();
    let mut child = host_probe_run(&kernel, &image, &["--cmdline-extra", "root=/dev/vdz rootwait"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let run_dir = std::env::temp_dir().join(format!("host-probe-{pid}-0"));
    let serial = run_dir.join("serial.log");
    // Mid-boot: QEMU runs (its serial file exists) and the TAP is up.
    let end = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    while Instant::now() < end {
        let d = run_dir.display().to_string();
        let qemu_up = serial.exists() && e2e::processes_mentioning(&d).iter().any(|p| p.contains("qemu-system"));
        if qemu_up && host_probe::tap::exists(&host_probe::tap::tap_name(pid, 0)) {
            seen = e2e::processes_mentioning(&d);
            break;
        }
        assert!(child.try_wait().unwrap().is_none(), "host-probe ended before the VM started");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(seen.iter().any(|p| p.contains("qemu-system")), "QEMU never started");
    let host = chinit_tests::vm::host_offer();
    if !host.kernel_vsock && host.vhost_vsock.is_some() {
        assert!(seen.iter().any(|p| p.contains("vhost-device-vsock")), "{seen:?}");
    }
    // Well into the guest kernel's boot.
    std::thread::sleep(Duration::from_millis(500));
    assert!(child.try_wait().unwrap().is_none(), "host-probe ended before the signal");
    // SAFETY: kill(2) on our own child, which has not been reaped (try_wait said it runs).
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGINT);
    }
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "host-probe did not stop on SIGINT");
        std::thread::sleep(Duration::from_millis(10));
    };
    let out = child.wait_with_output().unwrap();
    assert_eq!(status.code(), Some(130), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stdout.is_empty(), "no report from an interrupted run: {}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(leftovers(pid), Vec::<String>::new());
}

/// Debian's cloud kernel (virtio as modules) with an initramfs: chinit loads the modules, mounts
/// /dev/vda, switches root and is ready over the TAP and over vsock.
#[test]
fn debian_cloud_kernel_initramfs_loads_modules_switches_root_and_gets_ready() {
    let test = "debian_cloud_kernel_initramfs_loads_modules_switches_root_and_gets_ready";
    let Some((vmlinuz, modules)) = debian_kernel_or_skip(test) else { return };
    let tmp = TempDir::new("e2e-distro").unwrap();
    let image = e2e::chinit_image(&tmp.path().join("rootfs.ext4"), false);
    let cpio = e2e::chinit_initramfs(&tmp.path().join("initramfs.cpio"), Some(&modules), e2e::DISTRO_MODULES);
    let o = Options { initramfs: Some(cpio), memory_mib: 512, keep: true, ..e2e::qemu_options(&vmlinuz, Some(&image), "") };
    let plan = run::plan(&o, &chinit_tests::vm::host_offer(), run::next_seq()).unwrap();
    let result = run::execute(&plan, &o);
    let console = std::fs::read_to_string(plan.spec.serial.clone()).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&plan.run_dir);
    let r = result.unwrap_or_else(|e| panic!("{e}"));

    let j = serde_json::to_value(&r).unwrap();
    assert_consistent_timeline(&j, e2e_vsock());
    let steps: Vec<&str> = j["guest"]["steps"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    for want in ["modules", "root"] {
        assert!(steps.contains(&want), "{want} missing from {steps:?}");
    }
    assert!(console.contains("chinit: root: /dev/vda (ext4) switched to"), "{console}");
    assert!(!console.contains("chinit: modules:"), "a module failed to load:\n{console}");
    assert!(!host_probe::tap::exists(&plan.tap.clone().unwrap().tap));
}

/// The exec API over vsock: output, exit codes, stdin, env, signals, errors; the TCP side refuses the
/// control API by default (403) and the guest stays up; `POST /v1/shutdown` over vsock ends it.
#[test]
fn exec_api_over_vsock_runs_commands_and_tcp_refuses_it_by_default() {
    if skip_without_qemu_or_vsock("exec_api_over_vsock_runs_commands_and_tcp_refuses_it_by_default") {
        return;
    }
    let tmp = TempDir::new("e2e-exec").unwrap();
    let image = e2e::chinit_image(&tmp.path().join("rootfs.ext4"), true);
    // host-probe serves the control API on TCP for its own use; the last chinit.api wins, so this
    // guest has chinit's default.
    let mut g = Guest::start(&e2e::qemu_options(&e2e::tiny_bzimage(), Some(&image), "chinit.api=vsock"), false);
    g.wait_ready(BOOT_TIMEOUT);
    let r = g.vsock("GET", "/ready", None).unwrap();
    assert_eq!(r.status, 200);

    let sh =
        |script: &str| ExecRequest { argv: vec!["/bin/busybox".into(), "sh".into(), "-c".into(), script.into()], ..Default::default() };
    let out = g.exec(&sh("echo out; echo err >&2; exit 3"));
    assert_eq!((out.exit_code, out.signal, out.timed_out), (Some(3), None, false), "{out:?}");
    assert_eq!((out.stdout.as_str(), out.stderr.as_str()), ("out\n", "err\n"));

    let out = g.exec(&ExecRequest {
        env: vec!["GREETING=hello".into()],
        cwd: Some("/tmp".into()),
        stdin: Some("from the host".into()),
        ..sh("echo $GREETING; pwd; /bin/busybox cat")
    });
    assert_eq!(out.exit_code, Some(0), "{out:?}");
    assert_eq!(out.stdout, "hello\n/tmp\nfrom the host");

    let out = g.exec(&sh("kill -9 $$"));
    assert_eq!((out.exit_code, out.signal), (None, Some(9)), "{out:?}");

    let out = g.exec(&ExecRequest { timeout_ms: Some(300), ..sh("/bin/busybox sleep 30") });
    assert!(out.timed_out && out.signal == Some(9), "{out:?}");

    let bad = serde_json::to_vec(&ExecRequest { argv: vec!["/no/such/program".into()], ..Default::default() }).unwrap();
    let r = g.vsock("POST", "/v1/exec", Some(&bad)).unwrap();
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
    assert!(String::from_utf8_lossy(&r.body).contains("/no/such/program"));

    // TCP: readiness yes, control no.
    let body = serde_json::to_vec(&sh("echo must-not-run > /tmp/ran")).unwrap();
    for (path, body) in [("/v1/exec", &body[..]), ("/v1/shutdown", &b"{\"action\":\"poweroff\"}"[..])] {
        let r = g.tcp("POST", path, Some(body)).unwrap();
        assert_eq!(r.status, 403, "{path} over TCP: {}", String::from_utf8_lossy(&r.body));
        assert!(String::from_utf8_lossy(&r.body).contains("chinit.api=tcp"), "the refusal says how to allow it");
    }
    assert!(g.exited().is_none(), "a refused shutdown does not power off");
    assert_eq!(g.tcp("GET", "/ready", None).unwrap().status, 200);
    let out = g.exec(&sh("test -e /tmp/ran && echo ran || echo not-run"));
    assert_eq!(out.stdout, "not-run\n");

    let r = g.vsock("POST", "/v1/shutdown", Some(b"{\"action\":\"poweroff\"}")).unwrap();
    assert_eq!(r.status, 202);
    let status = g.wait_exit(Duration::from_secs(60)).unwrap_or_else(|| panic!("no power-off\n{}", g.diagnostics()));
    assert!(status.success(), "QEMU: {status}\n{}", g.diagnostics());
}

#[test]
fn api_shutdown_powers_off_in_order_and_the_filesystem_is_clean() {
    if skip_without_qemu("api_shutdown_powers_off_in_order_and_the_filesystem_is_clean") {
        return;
    }
    e2e::orderly_poweroff(&e2e::qemu_options(&e2e::tiny_bzimage(), None, ""), Trigger::Api);
}

#[test]
fn power_button_powers_off_in_order_and_the_filesystem_is_clean() {
    if skip_without_qemu("power_button_powers_off_in_order_and_the_filesystem_is_clean") {
        return;
    }
    e2e::orderly_poweroff(&e2e::qemu_options(&e2e::tiny_bzimage(), None, ""), Trigger::PowerButton);
}

/// Runs one host-probe run with the run directory kept; returns the result and the console, and
/// removes the run directory.
fn run_keeping_console(o: Options) -> (Result<host_probe::report::Report, host_probe::error::Error>, String, run::Plan) {
    let o = Options { keep: true, ..o };
    let plan = run::plan(&o, &chinit_tests::vm::host_offer(), run::next_seq()).unwrap();
    let result = run::execute(&plan, &o);
    let console = std::fs::read_to_string(&plan.spec.serial).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&plan.run_dir);
    (result, console, plan)
}

/// `chinit.exec=`: the workload's output reaches the console, and its exit powers the VM off.
#[test]
fn workload_output_reaches_the_console_and_its_exit_powers_off() {
    if skip_without_qemu("workload_output_reaches_the_console_and_its_exit_powers_off") {
        return;
    }
    let tmp = TempDir::new("e2e-workload").unwrap();
    let image = e2e::chinit_image(&tmp.path().join("rootfs.ext4"), true);
    let extra = r#"chinit.exec="/bin/busybox sh -c 'echo workload says hello; exit 7'""#;
    let o = Options { wait: Wait::Exit, ..e2e::qemu_options(&e2e::tiny_bzimage(), Some(&image), extra) };
    let started = Instant::now();
    let (r, console, _) = run_keeping_console(o);
    let r = r.unwrap_or_else(|e| panic!("{e}"));
    assert!(!r.notes.iter().any(|n| n.contains("exited")), "QEMU exited 0: {:?}\n{console}", r.notes);
    let lines: Vec<&str> = console.lines().collect();
    let pos =
        |needle: &str| lines.iter().position(|l| l.contains(needle)).unwrap_or_else(|| panic!("{needle:?} not on the console:\n{console}"));
    let (ready, hello, exited) = (pos("chinit: ready in "), pos("workload says hello"), pos("chinit: workload exited ("));
    assert!(ready < hello && hello < exited, "ready, then the output, then the exit:\n{console}");
    assert!(lines[exited].contains('7'), "the exit code is reported: {}", lines[exited]);
    assert!(r.host.marks.iter().any(|m| m.code == 0x63), "the workload ran after ready");
    // chinit pushes its status over vsock before powering off, and host-probe reports it.
    if e2e_vsock() {
        let w = r.workload.unwrap_or_else(|| panic!("no workload status reached the host\n{console}"));
        assert!(!w.running && w.exit_code == Some(7), "{w:?}");
        assert!(host_probe::report::text(&r).contains("workload: exited with code 7"), "{}", host_probe::report::text(&r));
    }
    assert!(started.elapsed() < BOOT_TIMEOUT);
}

/// `rootfs-builder --image`: the container image's config is the workload, run with exactly its
/// argv, Env, WorkingDir and User; its output reaches the console and its exit code the host.
#[test]
fn a_container_image_runs_as_its_config_says_and_its_exit_reaches_the_host() {
    container_image_runs_as_its_config_says("a_container_image_runs_as_its_config_says_and_its_exit_reaches_the_host", "app.ext4");
}

/// The same container image as an initramfs (`rootfs-builder --image --initramfs`), the whole root
/// (`host-probe run --initramfs` alone): its owners survive the cpio archive, so it runs the same.
#[test]
fn a_container_image_as_an_initramfs_runs_as_its_config_says() {
    container_image_runs_as_its_config_says("a_container_image_as_an_initramfs_runs_as_its_config_says", "app.cpio");
}

/// Builds the container image into `root` (`app.ext4`, or `app.cpio` booted as the whole root) and
/// checks that it runs as its config says.
fn container_image_runs_as_its_config_says(test: &str, root: &str) {
    // Each line looked for on the console is computed by the shell, so the argv chinit logs never matches it.
    let script = "echo image says $((6*7)); echo ids $(/bin/busybox id -u) $(/bin/busybox id -g) $(/bin/busybox id -G); echo cwd $(/bin/busybox pwd) A=$A; echo owner $(/bin/busybox stat -c %u:%g .); exit 7";
    let Some((_tmp, image)) = container_image_or_skip(test, script, "SIGTERM", root) else { return };
    let base = if root.ends_with(".cpio") {
        Options { initramfs: Some(image), ..e2e::qemu_options(&e2e::tiny_bzimage(), None, "") }
    } else {
        e2e::qemu_options(&e2e::tiny_bzimage(), Some(&image), "")
    };
    let o = Options { wait: Wait::Exit, ..base };
    let (r, console, _) = run_keeping_console(o);
    let r = r.unwrap_or_else(|e| panic!("{e}\n{console}"));
    for line in ["image says 42", "ids 1000 1000 1000 50", "cwd /home/app A=1", "owner 1000:1000", "chinit: workload exited (exit code 7)"]
    {
        assert!(console.contains(line), "{line:?} not on the console:\n{console}");
    }
    if e2e_vsock() {
        let w = r.workload.unwrap_or_else(|| panic!("no workload status reached the host\n{console}"));
        assert!(!w.running && w.exit_code == Some(7), "{w:?}");
    }
}

/// `host-probe run --rootfs app.ext4` as users run it, on a container image: host-probe sees the
/// workload file, waits for the workload instead of powering the guest off at ready, copies its
/// console output to stderr, reports its exit and exits with its code; the image is never written.
#[test]
fn host_probe_run_on_a_container_image_ends_as_its_workload_does() {
    let test = "host_probe_run_on_a_container_image_ends_as_its_workload_does";
    // Computed by the shell: the argv chinit logs never matches it.
    let Some((_tmp, image)) = container_image_or_skip(test, "echo image says $((6*7)); exit 7", "SIGTERM", "app.ext4") else { return };
    let before = std::fs::read(&image).unwrap();
    let child = host_probe_run(&e2e::tiny_bzimage(), &image, &[]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(7), "host-probe exits with the workload's code\n{stdout}\n{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    let pos = |needle: &str| lines.iter().position(|l| l.contains(needle)).unwrap_or_else(|| panic!("{needle:?} not on stderr:\n{stderr}"));
    assert!(
        pos("chinit: workload started: ") < pos("image says 42") && pos("image says 42") < pos("chinit: workload exited (exit code 7)"),
        "{stderr}"
    );
    assert!(!stderr.contains("chinit: ready in "), "only the workload's part of the console is copied:\n{stderr}");
    assert!(stdout.contains("note: the guest runs a workload (/etc/chinit/workload.json in "), "{stdout}");
    assert!(stdout.contains("workload: exited with code 7"), "{stdout}");
    assert!(stdout.contains("3. ready in guest (uptime)"), "the boot is measured as always:\n{stdout}");
    assert_eq!(std::fs::read(&image).unwrap(), before, "the image is never written");
    assert_eq!(leftovers(pid), Vec::<String>::new());
}

/// The image's StopSignal is what its workload gets when the machine is shut down.
#[test]
fn a_container_images_stop_signal_reaches_it_on_shutdown() {
    let test = "a_container_images_stop_signal_reaches_it_on_shutdown";
    // Looked for on the console: computed by the shell, never in the argv chinit logs.
    let script = "trap 'echo the image got $((1+1)); exit 3' INT; echo image waiting $((6*7)); while true; do /bin/busybox sleep 1; done";
    let Some((_tmp, image)) = container_image_or_skip(test, script, "SIGINT", "app.ext4") else { return };
    let mut g = Guest::start(&e2e::qemu_options(&e2e::tiny_bzimage(), Some(&image), ""), false);
    g.wait_ready(BOOT_TIMEOUT);
    let waited = Instant::now();
    while !g.console().contains("image waiting 42") {
        assert!(waited.elapsed() < BOOT_TIMEOUT, "the workload did not start:\n{}", g.console());
        std::thread::sleep(Duration::from_millis(100));
    }
    g.power_button();
    let status = g.wait_exit(Duration::from_secs(60)).unwrap_or_else(|| panic!("no power-off\n{}", g.diagnostics()));
    assert!(status.success(), "QEMU: {status}\n{}", g.diagnostics());
    let console = g.console();
    for line in ["sending the workload SIGINT (its StopSignal)", "the image got 2", "chinit: workload exited (exit code 3)"] {
        assert!(console.contains(line), "{line:?} not on the console:\n{console}");
    }
}

/// A workload file chinit cannot start gets one console line, and chinit stays ready: the control
/// API still answers.
#[test]
fn a_bad_workload_file_gets_one_line_and_chinit_stays_ready() {
    let test = "a_bad_workload_file_gets_one_line_and_chinit_stays_ready";
    if skip_without_qemu(test) {
        return;
    }
    let tmp = TempDir::new("e2e-bad-workload").unwrap();
    let bad = tmp.path().join("workload.json");
    std::fs::write(&bad, r#"{"argv":["/bin/busybox"],"stop_signal":"SIGNOPE"}"#).unwrap();
    let image = tmp.path().join("rootfs.ext4");
    vm::run(
        Command::new(e2e::rootfs_builder())
            .env("ROOTFS_BUILDER_QUIET", "1")
            .arg("--init")
            .arg(vm::chinit_binary())
            .arg("--out")
            .arg(&image)
            .arg("--add")
            .arg(format!("{}:{}", bad.display(), agent::workload::PATH)),
    );
    let mut g = Guest::start(&e2e::qemu_options(&e2e::tiny_bzimage(), Some(&image), ""), false);
    g.wait_ready(BOOT_TIMEOUT);
    let r = g.tcp("GET", "/ready", None).unwrap_or_else(|e| panic!("{e}\n{}", g.diagnostics()));
    assert_eq!(r.status, 200);
    let line = "chinit: workload: /etc/chinit/workload.json: stop signal \"SIGNOPE\" is not one of";
    let waited = Instant::now();
    while !g.console().contains(line) && waited.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let console = g.console();
    assert_eq!(console.matches(line).count(), 1, "{line:?} once on the console:\n{console}");
    assert!(!console.contains("chinit: workload started:"), "{console}");
}

/// `host-probe run --initramfs I` alone: the initramfs is the whole root (host-probe tells chinit
/// `chinit.root=none`), and chinit gets ready from it, over the TAP and vsock.
#[test]
fn an_initramfs_alone_is_the_whole_root_and_gets_ready() {
    if skip_without_qemu("an_initramfs_alone_is_the_whole_root_and_gets_ready") {
        return;
    }
    let tmp = TempDir::new("e2e-initramfs-alone").unwrap();
    let cpio = tmp.path().join("initramfs.cpio");
    e2e::chinit_initramfs(&cpio, None, &[]);
    let o = Options { initramfs: Some(cpio), ..e2e::qemu_options(&e2e::tiny_bzimage(), None, "") };
    let (r, console, plan) = run_keeping_console(o);
    let r = r.unwrap_or_else(|e| panic!("{e}\n{console}"));
    assert_eq!(r.root_kind, "initramfs");
    assert!(r.cmdline.contains("rdinit=/init chinit.root=none"), "{}", r.cmdline);
    let g = r.guest.as_ref().unwrap_or_else(|| panic!("no ready document\n{console}"));
    assert!(g.ready && !g.steps.iter().any(|s| s.name == "root"), "{g:?}");
    assert!(r.host.ready_tcp_us.is_some(), "{:?}", r.host);
    if e2e_vsock() {
        assert!(r.host.ready_vsock_us.is_some(), "{:?}", r.host);
    }
    assert!(!console.contains("did not appear"), "{console}");
    assert!(!plan.run_dir.exists());
}

/// Unknown and malformed `chinit.*` values: one console line each, and the boot goes on to ready.
#[test]
fn bad_chinit_values_still_boot_with_a_clear_console_line() {
    if skip_without_qemu("bad_chinit_values_still_boot_with_a_clear_console_line") {
        return;
    }
    let tmp = TempDir::new("e2e-badargs").unwrap();
    let image = e2e::chinit_image(&tmp.path().join("rootfs.ext4"), false);
    let extra = "chinit.colour=blue chinit.grace_ms=soon chinit.mtu=20 chinit.on_error=panic";
    let (r, console, _) = run_keeping_console(e2e::qemu_options(&e2e::tiny_bzimage(), Some(&image), extra));
    let r = r.unwrap_or_else(|e| panic!("{e}\n{console}"));
    assert!(r.guest.as_ref().is_some_and(|g| g.ready));
    for want in [
        "chinit: cmdline: chinit.colour=blue: unknown key chinit.colour",
        "chinit: cmdline: chinit.grace_ms=soon: ",
        "chinit: cmdline: chinit.mtu=20: ",
        "chinit: cmdline: chinit.on_error=panic: ",
    ] {
        assert_eq!(console.lines().filter(|l| l.starts_with(want)).count(), 1, "{want:?} once:\n{console}");
    }
    assert!(console.contains("chinit: ready in "), "{console}");
}

/// A root device that never appears (initramfs mode): chinit says which and why, and powers off.
/// The kernel never panics ("Attempted to kill init").
#[test]
fn missing_root_device_gives_a_clear_error_and_powers_off_without_a_panic() {
    let test = "missing_root_device_gives_a_clear_error_and_powers_off_without_a_panic";
    let Some((vmlinuz, modules)) = debian_kernel_or_skip(test) else { return };
    let tmp = TempDir::new("e2e-noroot").unwrap();
    let cpio = e2e::chinit_initramfs(&tmp.path().join("initramfs.cpio"), Some(&modules), &["virtio_mmio", "virtio_blk"]);
    // The initramfs alone, told to switch to a disk that the VM does not have.
    let o = Options {
        initramfs: Some(cpio),
        memory_mib: 512,
        wait: Wait::Exit,
        vsock: false,
        ..e2e::qemu_options(&vmlinuz, None, "chinit.root=/dev/vda chinit.root_wait_ms=1500")
    };
    let (r, console, plan) = run_keeping_console(o);
    let r = r.unwrap_or_else(|e| panic!("{e}\n{console}"));
    assert!(
        console.lines().any(|l| l.starts_with("chinit: root: root device /dev/vda did not appear within 1500 ms")),
        "the clear error:\n{console}"
    );
    assert!(console.contains("chinit: powering off (chinit.on_error=poweroff)"), "{console}");
    assert!(!e2e::has_kernel_panic(&console) && !console.contains("Attempted to kill init"), "{console}");
    assert!(!r.notes.iter().any(|n| n.contains("exited")), "QEMU exited 0 (power-off): {:?}", r.notes);
    assert!(!r.host.marks.iter().any(|m| m.code == 0x63), "never ready");
    assert!(!plan.run_dir.exists());
    assert!(!Path::new("/sys/class/net").join(plan.tap.unwrap().tap).exists());
}

/// A guest with chinit's default `chinit.api=vsock` refuses the shutdown over TCP (403): host-probe
/// asks over vsock instead, and the guest powers off in order instead of being stopped.
#[test]
fn host_probe_powers_off_a_guest_that_serves_the_control_api_on_vsock_only() {
    if skip_without_qemu_or_vsock("host_probe_powers_off_a_guest_that_serves_the_control_api_on_vsock_only") {
        return;
    }
    let tmp = TempDir::new("e2e-vsockapi").unwrap();
    let image = e2e::chinit_image(&tmp.path().join("rootfs.ext4"), false);
    let (r, console, _) = run_keeping_console(e2e::qemu_options(&e2e::tiny_bzimage(), Some(&image), "chinit.api=vsock"));
    let r = r.unwrap_or_else(|e| panic!("{e}\n{console}"));
    assert!(console.contains("chinit: Poweroff requested by the API: shutting down"), "{console}");
    assert!(!r.notes.iter().any(|n| n.contains("exited")), "QEMU exited by itself, 0: {:?}", r.notes);
}

/// `--kernel-profile`'s parts on a real boot: early set-up, every initcall, the gaps and the exec
/// of init add up to phase 1 exactly; every initcall lies inside phase 1, in order, none inside
/// another; nothing was lost; `named` initcalls are there by name (the tiny kernel's addresses
/// resolved with its System.map), at `levels` when given. The log never reached the console.
fn assert_kernel_profile(r: &host_probe::report::Report, console: &str, named: &[(&str, Option<&str>)]) {
    let k = r.kernel_profile.as_ref().unwrap_or_else(|| panic!("no kernel profile; notes: {:?}", r.notes));
    let g = r.guest.as_ref().unwrap();
    assert_eq!((k.sum_us(), k.phase1_us), (g.init_start_us as i64, g.init_start_us), "{k:#?}");
    // The early set-up may be 0: a kernel may run its console initcalls before CLOCK_BOOTTIME
    // starts (Debian's does).
    assert!(k.initcalls_us > 0 && k.gaps_us > 0 && k.exec_us >= 0, "{k:#?}");
    assert!(k.initcalls.len() > 50, "{} initcalls", k.initcalls.len());
    assert_eq!(k.lost, 0);
    let mut end = 0;
    for i in &k.initcalls {
        assert!(i.start_us >= end && i.start_us + i.us <= k.phase1_us, "{i:?} after {end}");
        end = i.start_us + i.us;
    }
    for (name, level) in named {
        let i = k.initcalls.iter().find(|i| i.name == *name).unwrap_or_else(|| panic!("{name} missing"));
        if let Some(l) = level {
            assert_eq!(i.level.as_deref(), Some(*l), "{i:?}");
        }
    }
    assert!(!console.contains("calling  ") && !console.contains(" returned 0 after "), "the log reached the console:\n{console}");
    let text = host_probe::report::text(r);
    assert!(text.contains(&format!("= phase 1 ({})", host_probe::report::ms(k.phase1_us))), "{text}");
    assert!(text.contains("longest initcalls"), "{text}");
    let svg = host_probe::report::svg(r);
    assert!(svg.contains(&k.longest()[0].name), "the largest initcall is labelled in the SVG");
}

/// `host-probe run --kernel-profile` on the tiny kernel: phase 1 split by initcall from the kernel's
/// log buffer, which chinit hands over on vsock (`GET /v1/kmsg`) once ready.
#[test]
fn kernel_profile_splits_phase_one_by_initcall() {
    let test = "kernel_profile_splits_phase_one_by_initcall";
    if skip_without_qemu_or_vsock(test) {
        return;
    }
    let tmp = TempDir::new("e2e-kprofile").unwrap();
    let image = e2e::chinit_image(&tmp.path().join("rootfs.ext4"), false);
    let o = Options { kernel_profile: true, ..e2e::qemu_options(&e2e::tiny_bzimage(), Some(&image), "") };
    let (result, console, plan) = run_keeping_console(o);
    let r = result.unwrap_or_else(|e| panic!("{e}"));
    assert!(plan.spec.cmdline.contains("initcall_debug"), "{}", plan.spec.cmdline);
    assert_kernel_profile(&r, &console, &[("virtio_blk_init", Some("6")), ("inet_init", Some("5")), ("acpi_init", Some("4"))]);
    let k = r.kernel_profile.as_ref().unwrap();
    assert!(k.early_us > 0, "the tiny kernel's first initcall runs after CLOCK_BOOTTIME starts: {k:#?}");
    assert_eq!(k.hints, Vec::<String>::new(), "the tiny kernel builds in none of them (its config beside it says so)");
}

/// The same with Debian's cloud kernel through chinit's initramfs (kallsyms names the initcalls).
#[test]
fn kernel_profile_of_the_debian_cloud_kernel() {
    let test = "kernel_profile_of_the_debian_cloud_kernel";
    let Some((vmlinuz, modules)) = debian_kernel_or_skip(test) else { return };
    if !e2e_vsock() {
        return e2e::skip(test, "no vsock for QEMU guests (scripts/setup.sh installs vhost-device-vsock)");
    }
    let tmp = TempDir::new("e2e-kprofile-distro").unwrap();
    let image = e2e::chinit_image(&tmp.path().join("rootfs.ext4"), false);
    let cpio = e2e::chinit_initramfs(&tmp.path().join("initramfs.cpio"), Some(&modules), e2e::DISTRO_MODULES);
    let o = Options { initramfs: Some(cpio), memory_mib: 512, kernel_profile: true, ..e2e::qemu_options(&vmlinuz, Some(&image), "") };
    let (result, console, _) = run_keeping_console(o);
    let r = result.unwrap_or_else(|e| panic!("{e}"));
    assert_kernel_profile(&r, &console, &[("inet_init", None)]);
}
