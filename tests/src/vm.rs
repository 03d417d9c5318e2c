//! VM boot harness: QEMU (TCG here) with the serial console in a file, bounded waits, and a guard
//! that kills QEMU on every path. Kernels come from the rootfs-builder cache.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The QEMU binary, if installed.
pub fn qemu_binary() -> Option<PathBuf> {
    find_in_path("qemu-system-x86_64")
}

/// A program on `$PATH`.
pub fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file())
}

/// `true` when guests should use KVM: hardware KVM (not kvm_pvm, a nested, software KVM that
/// cannot run a Linux guest, as host-probe decides it) and `/dev/kvm` opens.
/// `CHINIT_TEST_ACCEL=tcg|kvm` overrides.
pub fn kvm_usable() -> bool {
    match std::env::var("CHINIT_TEST_ACCEL").as_deref() {
        Ok("tcg") => return false,
        Ok("kvm") => return true,
        _ => {}
    }
    host_probe::check::host_kvm_kind().hardware() && fs::OpenOptions::new().read(true).write(true).open("/dev/kvm").is_ok()
}

/// Kernel parameters a TCG guest needs: under TCG the guest TSC runs at the host's rate, but
/// its PIT-based calibration fails often on a busy host, and microvm has no HPET or PM timer to
/// fall back on: the kernel marks the TSC unstable and hangs. `tsc_early_khz` gives the rate,
/// measured as host-probe does for its own TCG guests.
pub fn tcg_cmdline() -> String {
    host_probe::tsc::host_tsc_khz(Duration::from_millis(20)).map(|khz| format!("tsc_early_khz={khz}")).unwrap_or_default()
}

/// What to boot.
#[derive(Debug, Clone)]
pub struct Machine {
    pub qemu: PathBuf,
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub cmdline: String,
    /// Raw disk images, attached in order as virtio-blk (vda, vdb, ...).
    pub disks: Vec<PathBuf>,
    pub cpus: u32,
    pub memory_mib: u32,
    /// The guest's ttyS0 goes here.
    pub console: PathBuf,
    pub kvm: bool,
}

/// QEMU `microvm` argv (program first): virtio-mmio disks, ttyS0 to a file, no reboot.
pub fn qemu_argv(m: &Machine) -> Vec<String> {
    let mut a = vec![m.qemu.display().to_string()];
    let mut push = |k: &str, v: String| {
        a.push(k.to_string());
        a.push(v);
    };
    push("-machine", "microvm,x-option-roms=off,rtc=off".into());
    if m.kvm {
        push("-accel", "kvm".into());
        push("-cpu", "host".into());
    } else {
        push("-accel", "tcg".into());
        push("-cpu", "max".into());
    }
    push("-smp", m.cpus.to_string());
    push("-m", format!("{}M", m.memory_mib));
    push("-kernel", m.kernel.display().to_string());
    if let Some(i) = &m.initrd {
        push("-initrd", i.display().to_string());
    }
    push("-append", m.cmdline.clone());
    for (n, d) in m.disks.iter().enumerate() {
        push("-drive", format!("id=disk{n},file={},format=raw,if=none", d.display()));
        push("-device", format!("virtio-blk-device,drive=disk{n}"));
    }
    push("-serial", format!("file:{}", m.console.display()));
    for flag in ["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"] {
        a.push(flag.to_string());
    }
    a
}

/// A running QEMU; killed and reaped on drop.
pub struct Vm {
    child: Child,
    console: PathBuf,
    started: Instant,
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
    pub fn start(m: &Machine) -> io::Result<Vm> {
        let argv = qemu_argv(m);
        let child = Command::new(&argv[0]).args(&argv[1..]).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn()?;
        Ok(Vm { child, console: m.console.clone(), started: Instant::now() })
    }

    pub fn console(&self) -> String {
        String::from_utf8_lossy(&fs::read(&self.console).unwrap_or_default()).into_owned()
    }

    /// Wall time since QEMU started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
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
            if let Ok(Some(status)) = self.child.try_wait() {
                let mut stderr = String::new();
                if let Some(mut e) = self.child.stderr.take() {
                    let _ = io::Read::read_to_string(&mut e, &mut stderr);
                }
                return Err(WaitError {
                    reason: format!("QEMU exited ({status}) before {needle:?} appeared; stderr: {}", stderr.trim()),
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
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// The number of milliseconds in chinit's ready line: `chinit: ready in 12.345 ms (...)`.
pub fn ready_ms(line: &str) -> Option<f64> {
    let rest = line.split("chinit: ready in ").nth(1)?;
    let (num, unit) = rest.split_once(' ')?;
    unit.starts_with("ms").then_some(())?;
    num.parse().ok()
}

/// A temp directory removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(label: &str) -> io::Result<TempDir> {
        let base = std::env::temp_dir();
        for n in 0..1000u32 {
            let p = base.join(format!("chinit-{label}-{}-{n}", std::process::id()));
            match fs::create_dir(&p) {
                Ok(()) => return Ok(TempDir(p)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::other("no free temp dir name"))
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
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
    let mut p = target_dir();
    if let Some(t) = target {
        p.push(t);
    }
    p.push(if release { "release" } else { "debug" });
    p.push(bin);
    if !p.is_file() {
        return Err(format!("cargo built {bin} but {} is missing", p.display()));
    }
    Ok(p)
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
    fn microvm_argv() {
        let m = Machine {
            qemu: "qemu-system-x86_64".into(),
            kernel: "/k/bzImage".into(),
            initrd: Some("/i.cpio".into()),
            cmdline: "console=ttyS0 quiet".into(),
            disks: vec!["/a.img".into(), "/b.img".into()],
            cpus: 2,
            memory_mib: 256,
            console: "/t/console".into(),
            kvm: false,
        };
        let a = qemu_argv(&m).join(" ");
        assert_eq!(
            a,
            "qemu-system-x86_64 -machine microvm,x-option-roms=off,rtc=off -accel tcg -cpu max \
             -smp 2 -m 256M -kernel /k/bzImage -initrd /i.cpio -append console=ttyS0 quiet \
             -drive id=disk0,file=/a.img,format=raw,if=none -device virtio-blk-device,drive=disk0 \
             -drive id=disk1,file=/b.img,format=raw,if=none -device virtio-blk-device,drive=disk1 \
             -serial file:/t/console -nodefaults -no-user-config -nographic -no-reboot"
        );
        let kvm = qemu_argv(&Machine { kvm: true, initrd: None, disks: vec![], ..m });
        assert!(kvm.windows(2).any(|w| w == ["-accel", "kvm"]));
        assert!(!kvm.contains(&"-initrd".to_string()));
    }

    #[test]
    fn parses_ready_lines() {
        assert_eq!(ready_ms("chinit: ready in 12.345 ms (kernel 480.1 ms)"), Some(12.345));
        assert_eq!(ready_ms("[    0.5] chinit: ready in 7.000 ms"), Some(7.0));
        assert_eq!(ready_ms("chinit: ready in 7 s"), None);
        assert_eq!(ready_ms("chinit: starting"), None);
    }
}
