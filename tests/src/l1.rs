//! A simulated hardware-KVM host ("L1") for tests of the real KVM paths (cloud-hypervisor,
//! `qemu -accel kvm`, the kernel's vhost-vsock), which this machine's `/dev/kvm` (kvm_pvm) cannot
//! run.
//!
//! QEMU emulates (TCG) a q35 machine with `-cpu max`, which offers the guest AMD SVM with nested
//! paging. Debian's cloud kernel boots there from an initramfs whose init is chinit itself: it loads
//! `kvm_amd`, `tun`, `vhost_vsock`, virtio-fs and the rest, mounts this host's root read-only over
//! virtio-fs (QEMU's own `virtiofsd`), and runs one shell command chrooted into it, with fresh
//! `/proc`, `/sys`, `/dev`, and a tmpfs on `/run` whose `/run/tmp` is `$TMPDIR`. So the command finds
//! every program and library of this host, the workspace (wherever it is, `/tmp` included) and its
//! build, and the kernel cache, unchanged; it writes only to the tmpfs. Its output and exit status
//! come back over the serial console.
//!
//! Times inside L1 are emulation times: they prove code paths, never speed.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// QEMU's virtio-fs daemon (Debian's qemu-system-common ships it with QEMU 7.2).
pub const VIRTIOFSD: &str = "/usr/lib/qemu/virtiofsd";
/// L1's memory: room for a few 256 MiB guests.
const MEMORY: &str = "2G";
/// The modules L1 needs (their dependencies come along): KVM, TAPs, the kernel's vsock on both
/// sides, virtio-fs, and what tests put between guests.
const MODULES: &[&str] =
    &["kvm_amd", "tun", "vhost_vsock", "vhost_net", "virtiofs", "virtio_pci", "vmw_vsock_virtio_transport", "veth", "bridge"];

/// What runs as chinit's workload in L1: the host's root becomes `/`, then the command.
const RUN_SH: &str = r#"#!/bin/busybox sh
bb=/bin/busybox
# Guest kernels write AMD performance MSRs that KVM would refuse.
echo 1 > /sys/module/kvm/parameters/ignore_msrs
$bb mount --rbind /dev /host/dev
$bb mount -t proc proc /host/proc
$bb mount -t sysfs sys /host/sys
$bb mount -t tmpfs -o mode=755 run /host/run
$bb mkdir -m 1777 /host/run/tmp
dir=$($bb sed -n 's/.* l1dir=\([^ ]*\).*/\1/p' /proc/cmdline)
echo "l1: begin"
$bb chroot /host /bin/sh "$dir/hold.sh" && TMPDIR=/run/tmp $bb chroot /host /bin/sh "$dir/cmd.sh"
rc=$?
echo "l1: exit $rc"
exit $rc
"#;

/// What runs in L1 before the command (`hold.sh`, with this host's QEMU), so that no test makes
/// L1's kernel rewrite its own code:
///
/// - one idle KVM VM, held for L1's life, with a vCPU whose local APIC stays disabled: creating or
///   destroying a VM flips kernel static keys (the scheduler's preempt notifiers, the APIC's);
/// - one TCP connection over loopback: the first connection flips three once-only keys (secrets
///   set up on first use), in a worker, while the first guest would be running.
///
/// Every flip patches kernel code on all CPUs through int3 breakpoints. Under TCG such patching
/// next to nested guests occasionally livelocked L1 (both vCPUs looping through the int3 handler
/// at `__schedule`, interrupts off: about one `host-probe run` in twenty never ended). Traced with
/// ftrace after this script: a run, a snapshot and three copies patch nothing.
fn hold_sh(qemu: &Path) -> String {
    HOLD_SH.replace("{qemu}", &qemu.display().to_string())
}

/// [`hold_sh`]'s script: the VM is held once its vCPU exists; the once-only keys flip in a worker
/// within moments of the connection.
const HOLD_SH: &str = r#"{qemu} -M q35 -accel kvm -S -m 16 -nodefaults -no-user-config -display none -serial none -monitor none \
    </dev/null >/dev/null 2>&1 &
tries=0
until ls -l /proc/$!/fd 2>/dev/null | grep -q kvm-vcpu; do
    tries=$((tries + 1))
    if [ $tries -gt 200 ]; then echo "l1: could not hold a KVM VM (tests/src/l1.rs, hold_sh)"; exit 1; fi
    sleep 0.05
done
ip link set lo up
/bin/busybox nc -l -p 9 127.0.0.1 >/dev/null 2>&1 &
tries=0
until echo x | /bin/busybox nc -w 1 127.0.0.1 9 2>/dev/null; do
    tries=$((tries + 1))
    if [ $tries -gt 100 ]; then echo "l1: no TCP connection over loopback (tests/src/l1.rs, hold_sh)"; exit 1; fi
    sleep 0.05
done
sleep 1
"#;

/// What a command in L1 did.
#[derive(Debug, Clone)]
pub struct Output {
    /// Its exit status.
    pub status: i32,
    /// Its standard output and error, interleaved as the console carried them.
    pub output: String,
    /// L1's whole console.
    pub console: String,
    /// Start of QEMU to its end.
    pub wall: Duration,
    /// The run's directory (its sockets, console and command), removed when `run` returns.
    pub run_dir: PathBuf,
}

/// Why L1 cannot run here (a missing piece, with how to get it), or `Ok`.
pub fn available() -> Result<(), String> {
    if crate::vm::qemu_binary().is_none() {
        return Err("qemu-system-x86_64 not found (apt-get install qemu-system-x86)".into());
    }
    if !Path::new(VIRTIOFSD).is_file() {
        return Err(format!("{VIRTIOFSD} not found (it comes with qemu-system-common)"));
    }
    if !Path::new("/bin/busybox").is_file() {
        return Err("/bin/busybox not found (apt-get install busybox-static)".into());
    }
    crate::e2e::debian_cloud_kernel().map(|_| ())
}

/// The initramfs of L1, built once per test process into the target directory.
fn initramfs() -> Result<PathBuf, String> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let (_, modules) = crate::e2e::debian_cloud_kernel()?;
            let dir = crate::vm::target_dir().join("tmp").join("l1");
            std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
            let script = dir.join("run.sh");
            std::fs::write(&script, RUN_SH).map_err(|e| format!("write {}: {e}", script.display()))?;
            let out = dir.join("l1.cpio");
            let mut cmd = Command::new(crate::e2e::rootfs_builder());
            cmd.env("ROOTFS_BUILDER_QUIET", "1")
                .arg("--initramfs")
                .arg(&out)
                .arg("--init")
                .arg(crate::ns::chinit_bin()?)
                .args(["--add", "/bin/busybox:/bin/busybox"])
                .arg("--add")
                .arg(format!("{}:/l1/run.sh:0755", script.display()))
                .arg("--modules-from")
                .arg(&modules);
            for m in MODULES {
                cmd.args(["--module", m]);
            }
            let o = cmd.output().map_err(|e| format!("rootfs-builder: {e}"))?;
            if !o.status.success() {
                return Err(format!("rootfs-builder for L1 failed: {}", String::from_utf8_lossy(&o.stderr)));
            }
            Ok(out)
        })
        .clone()
}

/// A child process killed and collected on drop.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The kernel command line of L1.
fn cmdline(run_dir: &Path) -> String {
    agent::cmdline::Builder::new()
        .root_none()
        .net(false)
        .vsock_port(None)
        .mount("host", "/host", "virtiofs", Some("ro"))
        .exec(&["/l1/run.sh"])
        .build()
        .map(|chinit| format!("console=ttyS0 loglevel=1 panic=-1 rdinit=/init {chinit} l1dir={}", run_dir.display()))
        .unwrap_or_default()
}

/// Runs `script` (a shell script, run by the host's `/bin/sh`) in a fresh L1 and returns what it
/// did. Nothing is left running on this host afterwards, whatever happens; `timeout` bounds the
/// whole run.
pub fn run(script: &str, timeout: Duration) -> Result<Output, String> {
    available()?;
    // One L1 at a time: each emulates two CPUs, and two at once on a 2-core host starve the
    // guests inside them (their port-0x80 marks reach the host late, timeouts near).
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (vmlinuz, _) = crate::e2e::debian_cloud_kernel()?;
    let initramfs = initramfs()?;
    // Under the target directory, not /tmp: L1 sees this host's files, but its /tmp is its own.
    let parent = crate::vm::target_dir().join("tmp");
    std::fs::create_dir_all(&parent).map_err(|e| format!("create {}: {e}", parent.display()))?;
    let dir = tempfile::Builder::new().prefix("l1-").tempdir_in(&parent).map_err(|e| format!("temporary directory: {e}"))?;
    std::fs::write(dir.path().join("cmd.sh"), script).map_err(|e| format!("write cmd.sh: {e}"))?;
    let qemu_binary = crate::vm::qemu_binary().unwrap_or_default();
    std::fs::write(dir.path().join("hold.sh"), hold_sh(&qemu_binary)).map_err(|e| format!("write hold.sh: {e}"))?;
    let sock = dir.path().join("fs.sock");
    let console = dir.path().join("console.log");

    let fsd = Command::new(VIRTIOFSD)
        .arg(format!("--socket-path={}", sock.display()))
        .args(["-o", "source=/", "-o", "cache=auto", "-o", "sandbox=chroot"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("{VIRTIOFSD}: {e}"))?;
    let _fsd = Killed(fsd);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !sock.exists() {
        if Instant::now() > deadline {
            return Err(format!("{VIRTIOFSD} made no socket within 5 s"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }

    let started = Instant::now();
    let qemu = Command::new(&qemu_binary)
        .args(["-M", "q35", "-cpu", "max", "-accel", "tcg", "-smp", "2", "-m", MEMORY])
        .args(["-nodefaults", "-no-user-config", "-display", "none", "-no-reboot"])
        .arg("-kernel")
        .arg(&vmlinuz)
        .arg("-initrd")
        .arg(&initramfs)
        .arg("-append")
        .arg(cmdline(dir.path()))
        .arg("-chardev")
        .arg(format!("socket,id=fs,path={}", sock.display()))
        .args(["-device", "vhost-user-fs-pci,chardev=fs,tag=host"])
        .args(["-object", &format!("memory-backend-memfd,id=mem,size={MEMORY},share=on"), "-numa", "node,memdev=mem"])
        .arg("-serial")
        .arg(format!("file:{}", console.display()))
        // For looking into a stuck L1 (`info registers`, `x/8i $pc`): QEMU's monitor on a socket.
        .args(
            std::env::var_os("CHINIT_L1_MONITOR")
                .map(|m| vec!["-monitor".to_string(), format!("unix:{},server,nowait", Path::new(&m).display())])
                .unwrap_or_default(),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("qemu: {e}"))?;
    let mut qemu = Killed(qemu);
    let read_console = || std::fs::read_to_string(&console).unwrap_or_default();
    loop {
        match qemu.0.try_wait() {
            Ok(Some(status)) => {
                if !status.success() {
                    let mut err = String::new();
                    if let Some(mut e) = qemu.0.stderr.take() {
                        let _ = std::io::Read::read_to_string(&mut e, &mut err);
                    }
                    return Err(format!("L1's QEMU exited with {status}: {err}\nconsole:\n{}", read_console()));
                }
                break;
            }
            Ok(None) => {}
            Err(e) => return Err(format!("waiting for L1's QEMU: {e}")),
        }
        if started.elapsed() > timeout {
            return Err(format!("L1 did not finish within {timeout:?}; console:\n{}", read_console()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let wall = started.elapsed();
    let console = read_console();
    let (output, status) = parse_console(&console).ok_or_else(|| format!("L1 did not run the command; console:\n{console}"))?;
    Ok(Output { status, output, console, wall, run_dir: dir.path().to_path_buf() })
}

/// The command's output and status from L1's console (pure): the lines between `l1: begin` and
/// `l1: exit N`.
pub fn parse_console(console: &str) -> Option<(String, i32)> {
    // A serial console ends its lines with CR LF.
    let console = console.replace("\r\n", "\n");
    let start = console.find("l1: begin\n")? + "l1: begin\n".len();
    let rest = &console[start..];
    let end = rest.rfind("l1: exit ")?;
    let status = rest[end + "l1: exit ".len()..].split_whitespace().next()?.parse().ok()?;
    Some((rest[..end].to_string(), status))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_parsing() {
        let c = "SeaBIOS\r\nchinit: ready\r\nl1: begin\r\nhello\r\nl1: exit in a line\r\nl1: exit 3\r\nchinit: workload exited\n";
        assert_eq!(parse_console(c), Some(("hello\nl1: exit in a line\n".to_string(), 3)));
        assert_eq!(parse_console("l1: begin\nno end"), None);
        assert_eq!(parse_console("nothing"), None);
    }

    #[test]
    fn the_command_line_is_what_chinit_and_the_script_read() {
        let c = cmdline(Path::new("/work/target/tmp/l1-x"));
        assert!(c.contains("chinit.root=none chinit.net=off chinit.vsock_port=off chinit.mount=host:/host:virtiofs:ro"), "{c}");
        assert!(c.contains("chinit.exec=\"/l1/run.sh\"") && c.ends_with(" l1dir=/work/target/tmp/l1-x"), "{c}");
    }
}
