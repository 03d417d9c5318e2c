//! The real KVM paths, on a simulated hardware-KVM host (`chinit_tests::l1`): QEMU TCG with
//! `-cpu max` runs Debian's cloud kernel with `kvm_amd`, and the tests run this host's programs
//! inside it. Skips with one line only when a piece is missing on this host (QEMU, its virtiofsd,
//! busybox-static, or Debian's cloud kernel from apt).

use std::time::Duration;

use chinit_tests::l1;
use chinit_tests::vm;
use host_probe::vmm::{cloud_hypervisor, firecracker, stratovirt, Vmm};

/// Bounds one L1 run: ~3 s of L1 boot and the command, under emulation. Its runs take 45-90 s;
/// one that reaches the bound fails as the command's failure (an L1 that stops is void within a
/// minute, by its heartbeat: tests/src/l1.rs).
const L1_TIMEOUT: Duration = Duration::from_secs(480);

/// The bound of an L1 run of `n` tests: two minutes for L1's start and two a test, never less than
/// [`L1_TIMEOUT`]. A run of many tests that is merely slow must not fail at a bound made for one
/// command (five of vm_e2e's six took all of 480 s in one slow L1); an L1 that stops is void
/// within a minute anyway (its heartbeat), whatever the bound.
fn bound(n: usize) -> Duration {
    L1_TIMEOUT.max(Duration::from_secs(120 * (n as u64 + 1)))
}

fn available(test: &str) -> bool {
    match l1::available() {
        Ok(()) => true,
        Err(why) => {
            chinit_tests::ns::skip(&format!("{test}: {why}"));
            false
        }
    }
}

/// The harness itself: a command runs with this host's programs, sees a hardware KVM and the
/// kernel's vhost-vsock, and its output and exit status come back; nothing is left running.
#[test]
fn l1_runs_a_command_with_kvm_and_returns_its_output_and_status() {
    if !available("l1_runs_a_command_with_kvm_and_returns_its_output_and_status") {
        return;
    }
    let script =
        "set -e\necho from-l1\ncat /sys/module/kvm_amd/parameters/npt\ntest -c /dev/kvm && test -c /dev/vhost-vsock && echo devices-ok\n\
                  qemu-system-x86_64 --version | head -1\ntouch \"$TMPDIR/writable\" && echo tmp-ok\n\
                  echo \"vms-held=$(ls -l /proc/[0-9]*/fd 2>/dev/null | grep -c kvm-vm)\"\nexit 3\n";
    let out = l1::run("the harness", script, L1_TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.status, 3, "{}", out.console);
    // The command's output comes on its own serial port, never on L1's console.
    assert!(!out.console.contains("from-l1"), "{}", out.console);
    // "vms-held=1": the one idle VM that keeps L1's kernel from patching itself (l1.rs, hold_sh).
    for want in ["from-l1\n", "Y\n", "devices-ok\n", "QEMU emulator version", "tmp-ok\n", "vms-held=1\n"] {
        assert!(out.output.contains(want), "{want:?} missing from:\n{}", out.output);
    }
    println!("L1 run: {:?} wall", out.wall);
    // Its virtiofsd and QEMU are gone, and so is its directory.
    let left = chinit_tests::e2e::processes_mentioning(&out.run_dir.display().to_string());
    assert!(left.is_empty() && !out.run_dir.exists(), "left behind: {left:?}");
}

/// The command that runs tests of another test binary of this package inside L1 (where /dev/kvm
/// is hardware KVM and /dev/vhost-vsock the kernel's), with everything they need built here first.
/// `env` is put in front of it; an empty list of tests runs none.
fn tests_command(binary: &str, env: &str) -> impl Fn(&[String]) -> String {
    // What the tests would build, built now: L1 sees the target directory read-only.
    let chinit = chinit_tests::ns::chinit_bin().unwrap_or_else(|e| panic!("{e}"));
    chinit_tests::e2e::rootfs_builder();
    chinit_tests::vm::cargo_build("host-probe", "host-probe", None, false);
    chinit_tests::e2e::tiny_bzimage();
    let exe = chinit_tests::vm::test_binary(binary).unwrap_or_else(|e| panic!("{e}"));
    let env = env.to_string();
    move |tests: &[String]| {
        if tests.is_empty() {
            return "echo \"every test passed before the emulator failed\"\n".to_string();
        }
        format!(
            "cd {}\nexport {}=1 CHINIT_BIN={}\n{env} {} --exact --test-threads=1 --color never {}\n",
            env!("CARGO_MANIFEST_DIR"),
            chinit_tests::vm::PREBUILT,
            chinit.display(),
            exe.display(),
            tests.join(" ")
        )
    }
}

#[test]
fn a_run_of_many_tests_in_l1_gets_two_minutes_a_test() {
    let cases = [(0, 480), (1, 480), (3, 480), (4, 600), (6, 840)];
    for (n, secs) in cases {
        assert_eq!(bound(n), Duration::from_secs(secs), "{n} tests");
    }
}

/// Runs `tests` of `binary` in L1 ([`tests_command`]) and returns L1's output. After a void L1 run,
/// the next runs only the tests no void run passed ([`l1::tests_left`]).
fn run_tests_in_l1(binary: &str, tests: &[&str], env: &str) -> l1::Output {
    let command = tests_command(binary, env);
    let script = |voids: &[l1::Void]| command(&l1::tests_left(tests, voids));
    l1::run_remade(&format!("{binary} {}", tests.join(" ")), &script, bound(tests.len()), &l1::Config::from_env(), true)
        .unwrap_or_else(|e| panic!("{e}"))
}

/// After a void run, only the tests it did not pass run again: here L1's kernel dies right after
/// the first of two tests of ns_chinit passed, and the second run runs the other one alone.
#[test]
fn after_a_void_run_only_the_tests_it_did_not_pass_run_again() {
    let test = "after_a_void_run_only_the_tests_it_did_not_pass_run_again";
    if !available(test) {
        return;
    }
    let tests = ["refuses_to_run_when_not_pid_1", "bad_cmdline_values_are_reported_and_defaulted"];
    let command = tests_command("ns_chinit", "");
    let death = "echo '<0>BUG: chinit-tests: a death of L1 after a test' > /dev/kmsg\nsleep 2\n";
    let script = |voids: &[l1::Void]| {
        let left = l1::tests_left(&tests, voids);
        if voids.is_empty() {
            format!("{}{death}", command(&left[..1]))
        } else {
            command(&left)
        }
    };
    let out = l1::run_remade(test, &script, L1_TIMEOUT, &l1::Config::from_env(), false).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.repeated.len(), 1, "{:?}", out.repeated);
    assert!(out.repeated[0].why.contains("a death of L1 after a test"), "{:?}", out.repeated);
    assert!(out.repeated[0].output.contains("test refuses_to_run_when_not_pid_1 ... ok"), "{}", out.repeated[0].output);
    assert_eq!(out.status, 0, "{}", out.output);
    assert!(out.output.contains("running 1 test\n") && out.output.contains("test result: ok. 1 passed"), "{}", out.output);
    assert!(out.output.contains("test bad_cmdline_values_are_reported_and_defaulted ... ok"), "{}", out.output);
    assert!(!out.output.contains("refuses_to_run_when_not_pid_1"), "{}", out.output);
}

/// The harness tells the emulator's failures from the command's: a command that crashes L1's
/// kernel on its first run (sysrq) is run again in a fresh L1, and the void run is named; a
/// kernel that dies every time fails the run after [`l1::ATTEMPTS`] runs; a command that fails in
/// a healthy L1 runs once.
#[test]
fn an_l1_kernel_death_runs_the_command_once_more_and_a_failing_command_runs_once() {
    let test = "an_l1_kernel_death_runs_the_command_once_more_and_a_failing_command_runs_once";
    if !available(test) {
        return;
    }
    let config = l1::Config::from_env();
    let crash = "echo c > /proc/sysrq-trigger\nsleep 60\n";
    let once = format!("if [ \"$L1_ATTEMPT\" = 1 ]; then\n{crash}fi\necho attempt-$L1_ATTEMPT\n");
    let out = l1::run_with(test, &once, L1_TIMEOUT, &config, false).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((out.status, out.output.as_str()), (0, "attempt-2\n"), "{}", out.console);
    assert_eq!(out.repeated.len(), 1, "{:?}", out.repeated);
    let why = &out.repeated[0].why;
    assert!(why.contains("L1's kernel died: ") && why.contains("sysrq triggered crash"), "{why}");

    // Twice: a death line on L1's console each time, written at emergency level through the
    // kernel's log (a real crash, as above, now and then hangs an emulated L1 instead of ending it).
    let bug = "echo '<0>BUG: chinit-tests: a death of L1 on every run' > /dev/kmsg\nsleep 2\n";
    let err = l1::run_with(test, bug, L1_TIMEOUT, &config, false).map(|o| o.output).unwrap_err();
    assert!(err.contains("L1's emulator failed on all 4 runs"), "{err}");
    assert_eq!(err.matches("BUG: chinit-tests: a death of L1 on every run").count(), 4, "{err}");

    let out = l1::run_with(test, "echo attempt-$L1_ATTEMPT\nexit 1\n", L1_TIMEOUT, &config, false).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((out.status, out.output.as_str()), (1, "attempt-1\n"));
    assert!(out.repeated.is_empty(), "{:?}", out.repeated);
}

/// An L1 that stops (its user space runs no more; here the command stops the heartbeat and waits)
/// is void within a minute of its last beat, not at the run's bound, and the command runs again.
#[test]
fn an_l1_that_stops_is_void_within_a_minute_and_the_command_runs_again() {
    let test = "an_l1_that_stops_is_void_within_a_minute_and_the_command_runs_again";
    if !available(test) {
        return;
    }
    let script = "if [ \"$L1_ATTEMPT\" = 1 ]; then kill -STOP $L1_HEARTBEAT; sleep 600; fi\necho attempt-$L1_ATTEMPT\n";
    let started = std::time::Instant::now();
    let out = l1::run_with(test, script, L1_TIMEOUT, &l1::Config::from_env(), false).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((out.status, out.output.as_str()), (0, "attempt-2\n"), "{}", out.console);
    assert_eq!(out.repeated.len(), 1, "{:?}", out.repeated);
    assert!(out.repeated[0].why.contains("no heartbeat from its user space for 60s"), "{:?}", out.repeated);
    assert!(started.elapsed() < L1_TIMEOUT, "ended by the run's bound: {:?}", started.elapsed());
}

/// A nested guest whose CPU triple-faults on a hardware exception (a PVH guest that loads an empty
/// IDT and runs `ud2`, under QEMU with L1's KVM) while the command fails: the run is void, named by
/// KVM's shutdown exit, and the command runs again. The second run boots the same guest and
/// passes: a triple fault in a command that passes is not the emulator's failure, and is not
/// repeated. (One on purpose, `int3` with no IDT, is never void: `l1::unasked_fault`'s table.)
#[test]
fn a_guest_triple_fault_in_a_failed_command_runs_it_once_more() {
    let test = "a_guest_triple_fault_in_a_failed_command_runs_it_once_more";
    if !available(test) {
        return;
    }
    // Under the target directory: L1 sees this host's files, not its /tmp.
    let parent = vm::target_dir().join("tmp");
    std::fs::create_dir_all(&parent).unwrap();
    let dir = tempfile::Builder::new().prefix("l1-tf-").tempdir_in(&parent).unwrap();
    let kernel = dir.path().join("pvh-triple-fault.elf");
    // The PVH guest that triple-faults by `int3` (a reset on purpose), made to fault by `ud2`.
    let mut elf = host_probe::pvh::elf(host_probe::pvh::End::TripleFault);
    let at = elf.windows(4).position(|w| w == [0xCC, 0xF4, 0xEB, 0xFD]).unwrap();
    elf[at..at + 2].copy_from_slice(&[0x0F, 0x0B]);
    std::fs::write(&kernel, elf).unwrap();
    let qemu = vm::qemu_binary().unwrap();
    let script = format!(
        "{} -M microvm -accel kvm -m 32 -nodefaults -no-user-config -display none -no-reboot -kernel {} </dev/null\n\
         echo qemu-exit-$?\n\
         if [ \"$L1_ATTEMPT\" = 1 ]; then exit 1; fi\n\
         echo attempt-$L1_ATTEMPT\n",
        qemu.display(),
        kernel.display()
    );
    let out = l1::run_with(test, &script, L1_TIMEOUT, &l1::Config::from_env(), false).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((out.status, out.output.as_str()), (0, "qemu-exit-0\nattempt-2\n"), "{}", out.console);
    assert_eq!(out.repeated.len(), 1, "{:?}", out.repeated);
    let void = &out.repeated[0].why;
    assert!(void.contains("triple-faulted under L1's KVM (vcpu 0 reason shutdown rip "), "{void}");
    assert!(l1::unasked_fault(void), "a hardware exception being delivered: {void}");
    assert!(void.contains("qemu-exit-0"), "the failed run's last lines: {void}");
}

/// Runs `tests` of `binary` in L1 and asserts that every one ran there (none skipped) and passed:
/// in the last run, or whole in a void run before it.
fn assert_all_ran_and_passed(binary: &str, tests: &[&str], env: &str) {
    let out = run_tests_in_l1(binary, tests, env);
    println!("L1 run of {} {binary} test(s): {:?} wall, {} void run(s) before it", tests.len(), out.wall, out.repeated.len());
    assert_eq!(out.status, 0, "{}", out.output);
    let last = l1::tests_left(tests, &out.repeated);
    if !last.is_empty() {
        assert!(out.output.contains(&format!("test result: ok. {} passed", last.len())), "{}", out.output);
    }
    for run in out.repeated.iter().map(|v| &v.output).chain([&out.output]) {
        assert!(!run.contains("skipped"), "every test ran in L1:\n{run}");
    }
}

/// QEMU with hardware KVM and the kernel's vhost-vsock, end to end: vm_e2e's own tests, run in
/// L1. Ready over the TAP and vsock with every phase and mark, the notify push, the exec API over
/// vsock, the power button and the API powering off with a clean filesystem, an initramfs as the
/// whole root, a workload whose status reaches the host.
#[test]
fn qemu_with_kvm_and_kernel_vsock_passes_the_end_to_end_tests() {
    if !available("qemu_with_kvm_and_kernel_vsock_passes_the_end_to_end_tests") {
        return;
    }
    let tests = [
        "host_probe_run_json_has_every_phase_and_consistent_numbers",
        "exec_api_over_vsock_runs_commands_and_tcp_refuses_it_by_default",
        "power_button_powers_off_in_order_and_the_filesystem_is_clean",
        "api_shutdown_powers_off_in_order_and_the_filesystem_is_clean",
        "an_initramfs_alone_is_the_whole_root_and_gets_ready",
        "workload_output_reaches_the_console_and_its_exit_powers_off",
    ];
    assert_all_ran_and_passed("vm_e2e", &tests, "");
}

/// cloud-hypervisor with real Linux guests, in L1: vm_ch's tests (disk, pmem and initramfs roots,
/// the power button, Kuasar's layout with a virtio-fs share, timeout and Ctrl-C cleanup). Needs a
/// cloud-hypervisor here (`$CLOUD_HYPERVISOR`, PATH or ../shared/vmm: [`vm::vmm_program`]).
#[test]
fn cloud_hypervisor_passes_its_tests_on_hardware_kvm() {
    let tests = [
        "boots_chinit_from_disk_pmem_and_an_initramfs",
        "the_power_button_and_the_api_power_off_in_order",
        "kuasar_layout_boots_to_ready_with_the_share_mounted",
        "timeout_and_ctrl_c_leave_nothing_behind",
    ];
    vmm_passes_its_tests("cloud_hypervisor_passes_its_tests_on_hardware_kvm", cloud_hypervisor::VMM, "vm_ch", &tests);
}

/// Firecracker with real Linux guests, in L1: vm_firecracker's tests (ready over the TAP and vsock
/// with the notify push and every phase, a workload's exit code at the host, the API's power-off
/// in order with a clean filesystem, timeout and Ctrl-C cleanup). Needs a Firecracker v1.16 here.
#[test]
fn firecracker_passes_its_tests_on_hardware_kvm() {
    vmm_passes_its_tests("firecracker_passes_its_tests_on_hardware_kvm", firecracker::VMM, "vm_firecracker", &VMM_TESTS);
}

/// StratoVirt with real Linux guests, in L1: vm_stratovirt's tests (ready over the TAP and vsock
/// with the notify push and every phase, a workload's exit code at the host, the API's power-off
/// in order with a clean filesystem, timeout and Ctrl-C cleanup). Needs a StratoVirt v2.5 here.
#[test]
fn stratovirt_passes_its_tests_on_hardware_kvm() {
    vmm_passes_its_tests("stratovirt_passes_its_tests_on_hardware_kvm", stratovirt::VMM, "vm_stratovirt", &VMM_TESTS);
}

/// `VAR=PROGRAM` for `vmm`'s program as [`vm::vmm_program`] finds it (its variable, PATH,
/// ../shared/vmm), or why there is none: the end of a skip line.
fn vmm_env(vmm: Vmm) -> Result<String, String> {
    let var = chinit_tests::e2e::program_var(vmm);
    vm::vmm_program(vmm)
        .map(|p| format!("{var}={}", p.display()))
        .ok_or_else(|| format!("{} not found (set ${var} to its binary, put it on PATH, or in ../shared/vmm)", vmm.name()))
}

/// The four tests `vm_firecracker` and `vm_stratovirt` each have, by the same names.
const VMM_TESTS: [&str; 4] = [
    "boots_to_ready_over_the_tap_and_vsock_with_every_phase",
    "a_workload_s_exit_code_reaches_the_host",
    "the_api_powers_off_in_order_and_the_filesystem_is_clean",
    "timeout_and_ctrl_c_leave_nothing_behind",
];

/// `tests` of the test binary `binary` for a VMM found as [`vm::vmm_program`] finds it, run in L1;
/// one skip line saying where to put it when none is here.
fn vmm_passes_its_tests(test: &str, vmm: Vmm, binary: &str, tests: &[&str]) {
    if !available(test) {
        return;
    }
    let env = match vmm_env(vmm) {
        Ok(env) => env,
        Err(missing) => return chinit_tests::ns::skip(&format!("{test}: {missing}")),
    };
    assert_all_ran_and_passed(binary, tests, &env);
}

/// Snapshot start on hardware KVM, in L1: vm_snapshot's tests. QEMU (the kernel's vhost-vsock)
/// always; cloud-hypervisor, in both memory restore modes, and Firecracker, when they are here
/// ([`vm::vmm_program`]). Two copies restored at once are unique and
/// ready, the snapshot and image unchanged, and Ctrl-C during a restore leaves nothing.
#[test]
fn snapshots_restore_into_unique_copies_on_hardware_kvm() {
    let test = "snapshots_restore_into_unique_copies_on_hardware_kvm";
    if !available(test) {
        return;
    }
    // One L1 run per VMM: each stays well inside L1_TIMEOUT.
    let mut runs = vec![("qemu_copies_of_a_snapshot_are_unique_and_the_snapshot_is_untouched", String::new())];
    for (one, vmm) in [
        ("cloud_hypervisor_copies_are_unique_in_both_memory_restore_modes", cloud_hypervisor::VMM),
        ("firecracker_copies_are_unique", firecracker::VMM),
    ] {
        match vmm_env(vmm) {
            Ok(env) => runs.push((one, env)),
            Err(missing) => chinit_tests::ns::skip(&format!("{test}: its {} part: {missing}", vmm.name())),
        }
    }
    for (one, env) in runs {
        assert_all_ran_and_passed("vm_snapshot", &[one], &env);
    }
}

/// The VMM shoot-out on hardware KVM, in L1: vm_shootout's test with every VMM found here (QEMU
/// with KVM, and cloud-hypervisor, Firecracker and StratoVirt when they are here,
/// [`vm::vmm_program`]) measured with every figure: two rounds of cold boots and restores of each
/// one's snapshot, and two copies of each at once (StratoVirt, which takes no snapshots, its cold
/// boots, each restore figure saying why).
#[test]
fn the_vmm_shoot_out_measures_every_vmm_on_hardware_kvm() {
    let test = "the_vmm_shoot_out_measures_every_vmm_on_hardware_kvm";
    if !available(test) {
        return;
    }
    let env: Vec<String> =
        host_probe::vmm::registry::all().iter().filter(|v| v.program_var().is_some()).filter_map(|v| vmm_env(*v).ok()).collect();
    assert_all_ran_and_passed(
        "vm_shootout",
        &["a_shoot_out_of_every_vmm_measures_what_runs_here_and_says_why_of_the_rest"],
        &env.join(" "),
    );
}
