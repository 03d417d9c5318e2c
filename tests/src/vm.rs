//! VM boot harness: QEMU booted through host-probe's own plan and launch (the same argv, the serial
//! console in a file, a guard that stops QEMU on every path), bounded waits on the console, and
//! build helpers. Kernels come from the rootfs-builder cache.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use host_probe::check::KvmKind;
use host_probe::error::Error;
use host_probe::launch::{self, Running};
use host_probe::run::{self, HostOffer, Options, VmmChoice, Wait};

/// A VMM's program as the tests find it: as host-probe does (its variable, such as
/// `$CLOUD_HYPERVISOR` or `$FIRECRACKER`, then PATH), else in `../shared/vmm` beside the workspace,
/// where this project's machines keep the VMMs no registry packages.
pub fn vmm_program(vmm: host_probe::vmm::Vmm) -> Option<PathBuf> {
    host_offer().program_of(vmm)
}

/// `vmm`'s program in `../shared/vmm` beside the workspace, if it is there.
fn shared_vmm(vmm: host_probe::vmm::Vmm) -> Option<PathBuf> {
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/vmm").join(vmm.program_name(host_probe::locate::host_arch()));
    host_probe::locate::is_executable(&shared).then(|| std::fs::canonicalize(&shared).unwrap_or(shared))
}

/// The VMMs whose program host-probe itself would not find here (neither its variable nor PATH
/// names one) but `../shared/vmm` has, with their programs.
fn only_in_shared(host: &HostOffer) -> Vec<(host_probe::vmm::Vmm, PathBuf)> {
    host_probe::vmm::registry::all()
        .iter()
        .filter(|v| host.program_of(**v).is_none())
        .filter_map(|v| shared_vmm(*v).map(|p| (*v, p)))
        .collect()
}

/// `host-probe` as the tests run it: this run's build, with the variable of each VMM found only in
/// `../shared/vmm` set to it ([`vmm_program`]'s order: the variable, PATH, then `../shared/vmm`).
/// A test that sets a variable itself (a stand-in program) sets it after.
pub fn host_probe_command() -> Command {
    let mut cmd = Command::new(cargo_build("host-probe", "host-probe", None, false));
    for (vmm, program) in only_in_shared(&HostOffer::gather()) {
        if let Some(var) = vmm.program_var() {
            cmd.env(var, program);
        }
    }
    cmd
}

/// The QEMU binary, if installed.
pub fn qemu_binary() -> Option<PathBuf> {
    find_in_path("qemu-system-x86_64")
}

/// A program on `$PATH`.
pub fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file())
}

/// host-probe's view of this host as the tests see it: each VMM's program as [`vmm_program`] finds
/// it (`../shared/vmm` too), and `CHINIT_TEST_ACCEL=tcg|kvm` forcing the accelerator (else KVM only
/// with hardware KVM, not kvm_pvm, and a `/dev/kvm` that opens, as host-probe decides it).
pub fn host_offer() -> HostOffer {
    let mut host = HostOffer::gather();
    for (vmm, program) in only_in_shared(&host) {
        host.vmm_programs.insert(vmm.program_name(host.arch), program);
    }
    match std::env::var("CHINIT_TEST_ACCEL").as_deref() {
        Ok("tcg") => host.kvm_usable = false,
        Ok("kvm") => {
            host.kvm_usable = true;
            if !host.kvm.hardware() {
                host.kvm = KvmKind::Hardware("CHINIT_TEST_ACCEL=kvm");
            }
        }
        _ => {}
    }
    host
}

/// host-probe options for a bare QEMU boot of `kernel`: no network, no vsock, no agent awaited.
/// The caller adds the root (`rootfs`, `initramfs`), `init` and the rest.
pub fn bare_options(kernel: &Path) -> Options {
    Options {
        vmm: VmmChoice::Named(host_probe::vmm::qemu::VMM),
        kernel: Some(kernel.to_path_buf()),
        wait: Wait::Exit,
        net: false,
        vsock: false,
        ..Options::default()
    }
}

/// A guest booted as host-probe plans and launches it ([`host_probe::launch::Running`]); dropping
/// it stops QEMU and removes its run directory.
pub struct Vm {
    run: Running,
}

/// Why waiting on the console failed; carries the console text for the assertion message.
#[derive(Debug)]
pub struct WaitError {
    pub reason: String,
    pub console: String,
}

impl std::fmt::Display for WaitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tail: Vec<&str> = self.console.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        write!(f, "{}\n--- console (last 40 lines) ---\n{}", self.reason, tail.join("\n"))
    }
}

impl Vm {
    /// Plans `o` against this host ([`host_offer`]) and launches it.
    pub fn start(o: &Options) -> Result<Vm, Error> {
        let plan = run::plan(o, &host_offer(), run::next_seq())?;
        Ok(Vm { run: launch::start(&plan, o)? })
    }

    pub fn console(&self) -> String {
        self.run.console_text()
    }

    /// Wall time since QEMU started.
    pub fn elapsed(&self) -> Duration {
        self.run.elapsed()
    }

    /// Waits until the console holds a line containing `needle`; returns that line. Fails when
    /// QEMU exits first or `timeout` passes.
    pub fn wait_for_line(&mut self, needle: &str, timeout: Duration) -> Result<String, WaitError> {
        let deadline = Instant::now() + timeout;
        loop {
            let text = self.console();
            if let Some(line) = text.lines().find(|l| l.contains(needle)) {
                return Ok(line.to_string());
            }
            if let Some(status) = self.run.exited() {
                return Err(WaitError {
                    reason: format!("QEMU exited ({status}) before {needle:?} appeared; stderr: {}", self.run.vmm_output().trim()),
                    console: self.console(),
                });
            }
            if Instant::now() >= deadline {
                return Err(WaitError { reason: format!("{needle:?} did not appear within {timeout:?}"), console: text });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for QEMU to exit by itself (guest power-off); `None` on timeout.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.run.wait_exit(timeout)
    }
}

/// The number of milliseconds in chinit's ready line: `chinit: ready in 12.345 ms (...)`.
pub fn ready_ms(line: &str) -> Option<f64> {
    let rest = line.split("chinit: ready in ").nth(1)?;
    let (num, unit) = rest.split_once(' ')?;
    unit.starts_with("ms").then_some(())?;
    num.parse().ok()
}

/// A fresh directory under the system temp dir, removed with everything in it when dropped.
pub struct TempDir(tempfile::TempDir);

impl TempDir {
    pub fn new(label: &str) -> io::Result<TempDir> {
        tempfile::Builder::new().prefix(&format!("chinit-{label}-")).tempdir().map(TempDir)
    }
    pub fn path(&self) -> &Path {
        self.0.path()
    }
}

/// Runs a command; on failure panics with its output (test helper).
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Makes an ext4 image of `size_mib` from a directory, without mounting (`mkfs.ext4 -d`).
pub fn ext4_from_dir(dir: &Path, image: &Path, size_mib: u32) {
    run(Command::new("mkfs.ext4").args(["-q", "-F", "-E", "root_owner=0:0", "-d"]).arg(dir).arg(image).arg(format!("{size_mib}M")));
}

/// The workspace's target directory (what cargo uses for this test run).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

/// Builds a workspace binary with cargo and returns its path: `target` is a target triple
/// (`None`: the host), `release` the profile. `Err` has cargo's output.
pub fn try_cargo_build(package: &str, bin: &str, target: Option<&str>, release: bool) -> Result<PathBuf, String> {
    if std::env::var_os(PREBUILT).is_some() {
        // Inside a simulated KVM host (`crate::l1`) the target directory is read-only: the build
        // that started L1 made every binary already.
        let p = binary_path(bin, target, release);
        return if p.is_file() { Ok(p) } else { Err(format!("{} is not built (${PREBUILT} is set: nothing is built here)", p.display())) };
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("..")).args(["build", "--quiet", "-p", package, "--bin", bin]);
    if release {
        cmd.arg("--release");
    }
    if let Some(t) = target {
        cmd.args(["--target", t]);
    }
    let out = cmd.stdin(Stdio::null()).output().map_err(|e| format!("cannot run {}: {e}", cargo.to_string_lossy()))?;
    if !out.status.success() {
        return Err(format!("{cmd:?} failed ({}):\n{}", out.status, String::from_utf8_lossy(&out.stderr)));
    }
    let p = binary_path(bin, target, release);
    if !p.is_file() {
        return Err(format!("cargo built {bin} but {} is missing", p.display()));
    }
    Ok(p)
}

/// Set in a test process that must not build (it runs where the target directory is read-only).
pub const PREBUILT: &str = "CHINIT_TESTS_PREBUILT";

/// Where cargo puts `bin` for `target` and the profile.
fn binary_path(bin: &str, target: Option<&str>, release: bool) -> PathBuf {
    let mut p = target_dir();
    if let Some(t) = target {
        p.push(t);
    }
    p.push(if release { "release" } else { "debug" });
    p.push(bin);
    p
}

/// A test executable of this package (`tests/tests/<name>.rs`), built if needed: its path, from
/// cargo itself.
pub fn test_binary(name: &str) -> Result<PathBuf, String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(&cargo)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .args(["test", "--quiet", "--no-run", "--message-format=json", "-p", "chinit-tests", "--test", name])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", cargo.to_string_lossy()))?;
    if !out.status.success() {
        return Err(format!("building the {name} tests failed:\n{}", String::from_utf8_lossy(&out.stderr)));
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"]["name"] == name && v["profile"]["test"] == true)
        .find_map(|v| v["executable"].as_str().map(PathBuf::from))
        .ok_or_else(|| format!("cargo named no executable for the {name} tests"))
}

/// [`try_cargo_build`] for tests: panics with cargo's output.
pub fn cargo_build(package: &str, bin: &str, target: Option<&str>, release: bool) -> PathBuf {
    try_cargo_build(package, bin, target, release).unwrap_or_else(|e| panic!("{e}"))
}

/// chinit, static (musl), release: what goes into guests ([`crate::ns::chinit_bin`]).
pub fn chinit_binary() -> PathBuf {
    crate::ns::chinit_bin().unwrap_or_else(|e| panic!("{e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ready_lines() {
        assert_eq!(ready_ms("chinit: ready in 12.345 ms (kernel 480.1 ms)"), Some(12.345));
        assert_eq!(ready_ms("[    0.5] chinit: ready in 7.000 ms"), Some(7.0));
        assert_eq!(ready_ms("chinit: ready in 7 s"), None);
        assert_eq!(ready_ms("chinit: starting"), None);
    }
}
