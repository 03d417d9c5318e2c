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
//! come back over L1's second serial port; the first carries L1's own kernel console alone, so a
//! death of L1's kernel (an emulator failure, never the code under test's) is told apart from
//! anything the command printed, and [`run`] runs the command again in a fresh L1.
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

/// What runs as chinit's workload in L1: the host's root becomes `/`, then the command. Everything
/// it prints goes to the second serial port (`ttyS1`), leaving the console (`ttyS0`) to L1's
/// kernel and chinit.
const RUN_SH: &str = r#"#!/bin/busybox sh
bb=/bin/busybox
# A beat on the third serial port every 2 s while L1's user space runs, whatever the command does:
# the host tells an L1 that stopped from a command that takes long (silence).
( while :; do echo; $bb sleep 2; done ) >/dev/ttyS2 2>&1 &
# For the harness's own test of a stopped L1 (vm_l1).
export L1_HEARTBEAT=$!
exec >/dev/ttyS1 2>&1
# kvm_amd with other parameters, when the command line asks (l1kvmamd=vgif=0:lbrv=0).
params=$($bb sed -n 's/.* l1kvmamd=\([^ ]*\).*/\1/p' /proc/cmdline)
if [ -n "$params" ]; then
    ko=$($bb find /lib/modules -name 'kvm[-_]amd.ko*' | $bb head -1)
    $bb rmmod kvm_amd && $bb insmod "$ko" $(echo "$params" | $bb tr : ' ') || { echo "l1: kvm_amd $params: could not reload"; exit 1; }
fi
# Guest kernels write AMD performance MSRs that KVM would refuse.
echo 1 > /sys/module/kvm/parameters/ignore_msrs
$bb mount --rbind /dev /host/dev
$bb mount -t proc proc /host/proc
$bb mount -t sysfs sys /host/sys
$bb mount -t tmpfs -o mode=755 run /host/run
$bb mkdir -m 1777 /host/run/tmp
dir=$($bb sed -n 's/.* l1dir=\([^ ]*\).*/\1/p' /proc/cmdline)
# Every shutdown exit of a nested guest (SVM exit code 0x7f: its CPU triple-faulted), kept by
# ftrace and printed after the command's end (guest_triple_faults).
t=/sys/kernel/tracing
$bb mount -t tracefs tracefs $t 2>/dev/null
echo 'exit_reason == 127' > $t/events/kvm/kvm_exit/filter && echo 1 > $t/events/kvm/kvm_exit/enable || echo "l1: no kvm_exit trace"
echo "l1: begin"
$bb chroot /host /bin/sh "$dir/hold.sh" && TMPDIR=/run/tmp $bb chroot /host /bin/sh "$dir/cmd.sh"
rc=$?
echo "l1: exit $rc"
$bb grep 'reason shutdown' $t/trace | while read -r line; do echo "l1: guest triple fault: $line"; done
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
    /// Its standard output and error, interleaved as L1's second serial port carried them.
    pub output: String,
    /// L1's console: its kernel's and chinit's lines.
    pub console: String,
    /// Start of QEMU to its end.
    pub wall: Duration,
    /// The run's directory (its sockets, console and command), removed when `run` returns.
    pub run_dir: PathBuf,
    /// The earlier L1 runs of the command, void (the emulator failed), oldest first.
    pub repeated: Vec<Void>,
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

/// How L1 is made: the emulated CPU model, its count, `kvm_amd`'s parameters and extra kernel
/// arguments. [`Config::chosen`] is what the tests use (docs/testing.md has the measurements
/// behind it); for measuring others, `CHINIT_L1_CPU` (`-cpu`), `CHINIT_L1_SMP`,
/// `CHINIT_L1_KVM_AMD` (`vgif=0:lbrv=0`) and `CHINIT_L1_APPEND` change it ([`Config::from_env`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// QEMU's `-cpu`.
    pub cpu: String,
    /// QEMU's `-smp`.
    pub smp: u32,
    /// `kvm_amd`'s parameters, `:`-separated (empty: its defaults).
    pub kvm_amd: String,
    /// More of L1's kernel command line.
    pub append: String,
}

impl Config {
    /// The configuration the tests run.
    pub fn chosen() -> Config {
        Config { cpu: "max".into(), smp: 2, kvm_amd: String::new(), append: String::new() }
    }

    /// [`Config::chosen`] with the environment's changes.
    pub fn from_env() -> Config {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let mut c = Config::chosen();
        if let Some(v) = var("CHINIT_L1_CPU") {
            c.cpu = v;
        }
        if let Some(n) = var("CHINIT_L1_SMP").and_then(|v| v.parse().ok()) {
            c.smp = n;
        }
        if let Some(v) = var("CHINIT_L1_KVM_AMD") {
            c.kvm_amd = v;
        }
        if let Some(v) = var("CHINIT_L1_APPEND") {
            c.append = v;
        }
        c
    }

    /// One line for reports: `-cpu max -smp 2, kvm_amd vgif=0, append "mitigations=off"`.
    pub fn describe(&self) -> String {
        let mut d = format!("-cpu {} -smp {}", self.cpu, self.smp);
        if !self.kvm_amd.is_empty() {
            d += &format!(", kvm_amd {}", self.kvm_amd.replace(':', " "));
        }
        if !self.append.is_empty() {
            d += &format!(", append {:?}", self.append);
        }
        d
    }
}

/// The kernel command line of L1.
fn cmdline(run_dir: &Path, config: &Config) -> String {
    let mut extra = String::new();
    if !config.kvm_amd.is_empty() {
        extra += &format!(" l1kvmamd={}", config.kvm_amd);
    }
    if !config.append.is_empty() {
        extra += &format!(" {}", config.append);
    }
    agent::cmdline::Builder::new()
        .root_none()
        .net(false)
        .vsock_port(None)
        .mount("host", "/host", "virtiofs", Some("ro"))
        .exec(&["/l1/run.sh"])
        .build()
        .map(|chinit| format!("console=ttyS0 loglevel=2 panic=-1 rdinit=/init {chinit}{extra} l1dir={}", run_dir.display()))
        .unwrap_or_default()
}

/// An L1 run that said nothing of the command: the emulator failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Void {
    /// Why: the line of L1's death, QEMU's crash, a nested guest's triple fault.
    pub why: String,
    /// What the command printed until then (empty when L1 failed before it began).
    pub output: String,
}

/// Why a run of L1 gave no result for the command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The emulator failed: L1's own kernel died (the line that says so), L1's QEMU crashed, or a
    /// nested guest's CPU triple-faulted during a command that failed ([`guest_triple_faults`]).
    /// Says nothing of the code under test.
    Emulator(Void),
    /// Anything else: the harness could not start L1, or the command did not finish (a timeout, a
    /// chinit that ended L1): the code under test may be at fault.
    Other(String),
}

/// The line of L1's console (its kernel's and chinit's, never the command's) that says L1's own
/// kernel died or broke (pure): a panic, an oops, a `BUG:`. A panic because init (chinit) died is
/// not the emulator's: `None` for it.
pub fn kernel_death(console: &str) -> Option<String> {
    const SIGNS: &[&str] = &["Kernel panic - not syncing", "BUG: ", "kernel BUG at", "Oops: ", "general protection fault", "double fault:"];
    console
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.starts_with("chinit:") && !l.contains("Attempted to kill init"))
        .find(|l| SIGNS.iter().any(|s| l.contains(s)))
        .map(|l| l.trim().to_string())
}

/// Whether QEMU's `-d cpu_reset` log says an L1 CPU triple-faulted (pure).
pub fn triple_fault(log: &str) -> bool {
    log.lines().any(|l| l.trim() == "Triple fault")
}

/// The shutdown exits of nested guests that L1's KVM saw during the command (pure): the trace lines
/// `RUN_SH` prints after the command's end, e.g. `qemu-system-x86-210 [001] ..... 81.5: kvm_exit:
/// vcpu 0 reason shutdown rip 0xffffffff810291cf info1 0x0 info2 0x0 intr_info 0x80000b0e
/// error_code 0x10`. A guest whose CPU triple-faults exits so.
pub fn guest_triple_faults(command_log: &str) -> Vec<String> {
    command_log
        .lines()
        .filter_map(|l| l.trim_end_matches('\r').split_once("l1: guest triple fault: "))
        .map(|(_, trace)| trace.split_once("kvm_exit: ").map_or(trace, |(_, exit)| exit).trim().to_string())
        .collect()
}

/// Whether a shutdown exit ([`guest_triple_faults`]) came while the guest's CPU was delivering a
/// hardware exception (`intr_info` valid, type 3: a fault it did not ask for), not a software one
/// (type 4: `int3` after loading an empty IDT, how a guest resets itself on purpose: Linux's
/// `reboot=t`, a test's triple fault) (pure).
pub fn unasked_fault(exit: &str) -> bool {
    let info = exit.split_whitespace().skip_while(|w| *w != "intr_info").nth(1);
    let info = info.and_then(|v| u32::from_str_radix(v.trim_start_matches("0x"), 16).ok()).unwrap_or(0);
    info >> 31 == 1 && (info >> 8) & 7 == 3
}

/// How many L1 runs a command gets when the emulator fails: the first and three more. The
/// shoot-out, one test of some twenty guest starts, was void in about one L1 run in three in
/// fresh-clone CI runs (docs/testing.md): four runs leave it about one CI run in a hundred.
pub const ATTEMPTS: u32 = 4;

/// Runs `script` (a shell script, run by the host's `/bin/sh`) in a fresh L1 and returns what it
/// did. Nothing is left running on this host afterwards, whatever happens; `timeout` bounds each
/// L1 run. `what` names the run in messages.
///
/// When the emulator fails ([`Failure::Emulator`]: L1's own kernel died, its QEMU crashed, or a
/// nested guest triple-faulted in a failed command), the run says nothing of the command: one line
/// on standard error names the failure, it is recorded (see [`repeats_log`]), and the command runs
/// again in a fresh L1, up to [`ATTEMPTS`] runs in all; then it is an error. A command that fails
/// inside a healthy L1 is never run again.
pub fn run(what: &str, script: &str, timeout: Duration) -> Result<Output, String> {
    run_with(what, script, timeout, &Config::from_env(), true)
}

/// [`run`] with a given [`Config`]; `record` false keeps repeats out of [`repeats_log`] (for the
/// harness's own test of them).
pub fn run_with(what: &str, script: &str, timeout: Duration, config: &Config, record: bool) -> Result<Output, String> {
    run_remade(what, &|_| script.to_string(), timeout, config, record)
}

/// [`run`] of a command made again after each void run from what the void runs printed, oldest
/// first (a run of tests repeats only those not passed yet: [`tests_left`]).
pub fn run_remade(
    what: &str,
    script: &dyn Fn(&[Void]) -> String,
    timeout: Duration,
    config: &Config,
    record: bool,
) -> Result<Output, String> {
    let mut voids: Vec<Void> = Vec::new();
    for attempt in 1..=ATTEMPTS {
        match run_once(&script(&voids), timeout, config, attempt) {
            Ok(mut out) => {
                out.repeated = voids;
                return Ok(out);
            }
            Err(Failure::Other(e)) => return Err(e),
            Err(Failure::Emulator(void)) => {
                let line = format!("{what}: L1 run {attempt} void: {} (the emulator's failure, not the code under test's)", void.why);
                use std::io::Write;
                let _ = writeln!(
                    std::io::stderr().lock(),
                    "l1: {line}{}",
                    if attempt < ATTEMPTS { "; running it again in a fresh L1" } else { "" }
                );
                if record {
                    record_repeat(&line);
                }
                voids.push(void);
            }
        }
    }
    let whys: Vec<&str> = voids.iter().map(|v| v.why.as_str()).collect();
    Err(format!(
        "{what}: L1's emulator failed on all {ATTEMPTS} runs, so the command was not tested ({}); L1 config: {}",
        whys.join("; then "),
        config.describe()
    ))
}

/// Which of `tests` (libtest names, run with `--exact`) no void run passed (pure): a test passed
/// where its line `test NAME ... ok` was printed whole. A run that ended a test early, or wrote
/// into its line, leaves it to be run again.
pub fn tests_left(tests: &[&str], voids: &[Void]) -> Vec<String> {
    tests
        .iter()
        .filter(|t| {
            let passed = format!("test {t} ... ok");
            !voids.iter().any(|v| v.output.lines().any(|l| l.trim_end() == passed))
        })
        .map(|t| t.to_string())
        .collect()
}

/// Where [`run`] records each void L1 run, one line each, for a summary at the end of a test run
/// (`scripts/test.sh` prints it): `target/l1-repeats.log`.
pub fn repeats_log() -> PathBuf {
    crate::vm::target_dir().join("l1-repeats.log")
}

fn record_repeat(line: &str) {
    use std::io::Write;
    if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(repeats_log()) {
        let _ = writeln!(f, "{line}");
    }
}

/// `cmd`, made to receive SIGKILL when the process that started it dies (killed, it runs no
/// destructor: L1's QEMU and virtiofsd must not outlive it).
fn dies_with_us(mut cmd: Command) -> Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd
}

/// Holds this host's L1 lock (`flock` on `/tmp/chinit-l1.lock`) until dropped; waits for it.
fn one_at_a_time() -> Result<std::fs::File, String> {
    use std::os::fd::AsRawFd;
    let path = std::env::temp_dir().join("chinit-l1.lock");
    let f =
        std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    // SAFETY: flock on a descriptor this function owns; released when the file is closed.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(format!("flock {}: {}", path.display(), std::io::Error::last_os_error()));
    }
    Ok(f)
}

/// One L1 run of `script`, never repeated (for measuring how often L1 fails: `l1-run --once`);
/// `attempt` reaches the command as `$L1_ATTEMPT`.
pub fn run_once(script: &str, timeout: Duration, config: &Config, attempt: u32) -> Result<Output, Failure> {
    let other = Failure::Other;
    available().map_err(other)?;
    // One L1 at a time on this host, across processes: each emulates two CPUs, and two at once on
    // a 2-core host starve the guests inside them (their port-0x80 marks reach the host late,
    // timeouts near).
    let _turn = one_at_a_time().map_err(other)?;
    let (vmlinuz, _) = crate::e2e::debian_cloud_kernel().map_err(other)?;
    let initramfs = initramfs().map_err(other)?;
    // Under the target directory, not /tmp: L1 sees this host's files, but its /tmp is its own.
    let parent = crate::vm::target_dir().join("tmp");
    std::fs::create_dir_all(&parent).map_err(|e| other(format!("create {}: {e}", parent.display())))?;
    let dir = tempfile::Builder::new().prefix("l1-").tempdir_in(&parent).map_err(|e| other(format!("temporary directory: {e}")))?;
    std::fs::write(dir.path().join("cmd.sh"), format!("export L1_ATTEMPT={attempt}\n{script}"))
        .map_err(|e| other(format!("write cmd.sh: {e}")))?;
    let qemu_binary = crate::vm::qemu_binary().unwrap_or_default();
    std::fs::write(dir.path().join("hold.sh"), hold_sh(&qemu_binary)).map_err(|e| other(format!("write hold.sh: {e}")))?;
    let sock = dir.path().join("fs.sock");
    let console = dir.path().join("console.log");
    let commands = dir.path().join("command.log");
    // QEMU's own log of CPU resets: a triple fault of L1 (which resets it without a word on its
    // console, and `-no-reboot` turns into an exit) is written there.
    let resets = dir.path().join("resets.log");
    let beats = dir.path().join("beats.log");

    let fsd = dies_with_us(Command::new(VIRTIOFSD))
        .arg(format!("--socket-path={}", sock.display()))
        .args(["-o", "source=/", "-o", "cache=auto", "-o", "sandbox=chroot"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| other(format!("{VIRTIOFSD}: {e}")))?;
    let _fsd = Killed(fsd);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !sock.exists() {
        if Instant::now() > deadline {
            return Err(other(format!("{VIRTIOFSD} made no socket within 5 s")));
        }
        std::thread::sleep(Duration::from_millis(10));
    }

    let started = Instant::now();
    let qemu = dies_with_us(Command::new(&qemu_binary))
        .args(["-M", "q35", "-cpu", &config.cpu, "-accel", "tcg", "-smp", &config.smp.to_string(), "-m", MEMORY])
        .args(["-nodefaults", "-no-user-config", "-display", "none", "-no-reboot"])
        .args(["-d", "cpu_reset", "-D"])
        .arg(&resets)
        .arg("-kernel")
        .arg(&vmlinuz)
        .arg("-initrd")
        .arg(&initramfs)
        .arg("-append")
        .arg(cmdline(dir.path(), config))
        .arg("-chardev")
        .arg(format!("socket,id=fs,path={}", sock.display()))
        .args(["-device", "vhost-user-fs-pci,chardev=fs,tag=host"])
        .args(["-object", &format!("memory-backend-memfd,id=mem,size={MEMORY},share=on"), "-numa", "node,memdev=mem"])
        // ttyS0: L1's kernel console (and chinit's); ttyS1: the command's output.
        .arg("-serial")
        .arg(format!("file:{}", console.display()))
        .arg("-serial")
        .arg(format!("file:{}", commands.display()))
        // ttyS2: RUN_SH's heartbeat.
        .arg("-serial")
        .arg(format!("file:{}", beats.display()))
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
        .map_err(|e| other(format!("qemu: {e}")))?;
    let mut qemu = Killed(qemu);
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    let void = |why: String| Failure::Emulator(Void { why, output: printed_so_far(&read(&commands)) });
    let died = |console: &str| kernel_death(console).map(|line| void(format!("L1's kernel died: {line}")));
    // The heartbeat's bytes so far, and when they last grew.
    let mut last = (0u64, Instant::now());
    loop {
        match qemu.0.try_wait() {
            Ok(Some(status)) => {
                if !status.success() {
                    let mut err = String::new();
                    if let Some(mut e) = qemu.0.stderr.take() {
                        let _ = std::io::Read::read_to_string(&mut e, &mut err);
                    }
                    // Killed by a signal (an abort, a crash): the emulator's failure.
                    use std::os::unix::process::ExitStatusExt;
                    let msg = format!("L1's QEMU exited with {status}: {}", err.trim());
                    return Err(if status.signal().is_some() { void(msg) } else { other(format!("{msg}\nconsole:\n{}", read(&console))) });
                }
                break;
            }
            Ok(None) => {}
            Err(e) => return Err(other(format!("waiting for L1's QEMU: {e}"))),
        }
        let heard = std::fs::metadata(&beats).map(|m| m.len()).unwrap_or(0);
        if heard != last.0 {
            last = (heard, Instant::now());
        }
        if let Some(why) = silence(last.0, last.1.elapsed(), started.elapsed()) {
            return Err(died(&read(&console)).unwrap_or_else(|| void(why)));
        }
        if started.elapsed() > timeout {
            let c = read(&console);
            return Err(died(&c).unwrap_or_else(|| {
                other(format!("L1 did not finish within {timeout:?}\ncommand output:\n{}\nL1 console:\n{c}", read(&commands)))
            }));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let wall = started.elapsed();
    let console = read(&console);
    if let Some(death) = died(&console) {
        return Err(death);
    }
    if triple_fault(&read(&resets)) {
        return Err(void("L1's CPU triple-faulted (QEMU: \"Triple fault\"), which reset L1 without a word on its console".into()));
    }
    let command_log = read(&commands);
    let (output, status) = parse_console(&command_log)
        .ok_or_else(|| other(format!("L1 did not run the command to its end\ncommand output:\n{command_log}\nL1 console:\n{console}")))?;
    // A failed command during which a nested guest's CPU triple-faulted on a hardware exception:
    // under this emulator a guest kernel's CPU now and then takes a page fault fetching its own
    // mapped text right after a VM exit (traced: an instruction fetch #PF on the `ret` after a
    // `wrmsr`, then a triple fault), which no guest of ours does on its own. The run is void,
    // like L1's own death. Not so: a command that passes with such a guest, or a guest that reset
    // itself on purpose (`int3` with no IDT: `reboot=t`).
    let faults: Vec<String> = guest_triple_faults(&command_log).into_iter().filter(|f| unasked_fault(f)).collect();
    if status != 0 && !faults.is_empty() {
        return Err(void(format!(
            "a nested guest's CPU triple-faulted under L1's KVM ({}), and the command failed (its last lines: {})",
            faults.join("; "),
            last_lines(&output, 3)
        )));
    }
    Ok(Output { status, output, console, wall, run_dir: dir.path().to_path_buf(), repeated: Vec::new() })
}

/// How long L1 may take from its start to the first heartbeat (its kernel's boot and chinit's
/// modules take 3-10 s under emulation), and how long it may then go without one (one comes every
/// 2 s, even while nested guests take both emulated CPUs).
const FIRST_BEAT: Duration = Duration::from_secs(120);
const SILENCE: Duration = Duration::from_secs(60);

/// Why L1 stopped, from its heartbeat (pure): `heard` bytes of it so far, the last `since_beat`
/// ago, L1 started `since_start` ago. An L1 whose user space runs no more, its kernel stuck under
/// emulation (both CPUs looping with interrupts off, or a crash that never ended it), says nothing
/// on its console; a command that merely takes long leaves the beat going.
pub fn silence(heard: u64, since_beat: Duration, since_start: Duration) -> Option<String> {
    if heard == 0 && since_start > FIRST_BEAT {
        return Some(format!("L1 stopped: no heartbeat from its user space within {FIRST_BEAT:?} of its start"));
    }
    (heard > 0 && since_beat > SILENCE)
        .then(|| format!("L1 stopped: no heartbeat from its user space for {SILENCE:?} (its kernel hung under emulation)"))
}

/// The last `n` non-empty lines of `text`, joined with ` | ` (pure).
fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

/// What the command printed until its end or L1's (pure): the lines after `l1: begin`, up to
/// `l1: exit N` when it came.
pub fn printed_so_far(console: &str) -> String {
    parse_console(console).map(|(output, _)| output).or_else(|| after_begin(console)).unwrap_or_default()
}

/// What came after `l1: begin`, with a serial console's CR LF made LF (pure).
fn after_begin(console: &str) -> Option<String> {
    let console = console.replace("\r\n", "\n");
    let start = console.find("l1: begin\n")? + "l1: begin\n".len();
    Some(console[start..].to_string())
}

/// The command's output and status from what it printed (pure): the lines between `l1: begin`
/// and `l1: exit N`.
pub fn parse_console(console: &str) -> Option<(String, i32)> {
    let rest = after_begin(console)?;
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
        assert_eq!(printed_so_far(c), "hello\nl1: exit in a line\n");
        assert_eq!(
            printed_so_far("chinit: ready\r\nl1: begin\r\nrunning 4 tests\r\ntest a ... ok\r\ntest b ... "),
            "running 4 tests\ntest a ... ok\ntest b ... "
        );
        assert_eq!(printed_so_far("chinit: ready\r\n[ 3.1] BUG: before the command\r\n"), "");
    }

    #[test]
    fn an_l1_that_stopped_is_told_from_a_command_that_takes_long() {
        let s = Duration::from_secs;
        let cases = [
            // Booting, then beating: a long command is not a stopped L1.
            (0, s(0), s(30), false),
            (0, s(0), s(119), false),
            (40, s(2), s(400), false),
            (40, s(59), s(400), false),
            // No beat at all, or none for a minute.
            (0, s(0), s(121), true),
            (40, s(61), s(400), true),
        ];
        for (heard, since_beat, since_start, stopped) in cases {
            assert_eq!(silence(heard, since_beat, since_start).is_some(), stopped, "{heard} {since_beat:?} {since_start:?}");
        }
        assert!(silence(40, s(61), s(400)).unwrap().contains("for 60s"));
    }

    #[test]
    fn a_void_run_leaves_the_tests_it_did_not_pass() {
        let tests = ["boots", "powers_off", "cleans_up", "boots_twice"];
        let void = |output: &str| Void { why: "L1's kernel died".into(), output: output.into() };
        let cases: &[(&[&str], &[&str])] = &[
            // A failed test in a finished run: it alone (CI's vm_ch run).
            (
                &["running 4 tests\ntest boots ... FAILED\ntest powers_off ... ok\ntest cleans_up ... ok\ntest boots_twice ... ok\n\nfailures:\n    boots\n"],
                &["boots"],
            ),
            // L1 died during the third: it and the fourth. A name is matched whole.
            (&["running 4 tests\ntest boots ... ok\ntest powers_off ... ok\ntest cleans_up ... "], &["cleans_up", "boots_twice"]),
            // A child's line written into the test's own: run again.
            (&["test boots ... qemu: terminating on signal 15\nok\ntest powers_off ... ok\n"], &["boots", "cleans_up", "boots_twice"]),
            // Two void runs: what either passed.
            (&["test boots ... ok\ntest powers_off ... FAILED\n", "test powers_off ... ok\ntest cleans_up ... FAILED\n"], &["cleans_up", "boots_twice"]),
            // Died before the command began; every test passed before a death at the end.
            (&[""], &["boots", "powers_off", "cleans_up", "boots_twice"]),
            (&["test boots ... ok\ntest powers_off ... ok\ntest cleans_up ... ok\ntest boots_twice ... ok\n"], &[]),
        ];
        for (outputs, left) in cases {
            let voids: Vec<Void> = outputs.iter().map(|o| void(o)).collect();
            assert_eq!(tests_left(&tests, &voids), *left, "{outputs:?}");
        }
        assert_eq!(tests_left(&tests, &[]), tests);
    }

    #[test]
    fn the_command_line_is_what_chinit_and_the_script_read() {
        let c = cmdline(Path::new("/work/target/tmp/l1-x"), &Config::chosen());
        assert!(c.contains("chinit.root=none chinit.net=off chinit.vsock_port=off chinit.mount=host:/host:virtiofs:ro"), "{c}");
        assert!(c.contains("chinit.exec=\"/l1/run.sh\"") && c.ends_with(" l1dir=/work/target/tmp/l1-x"), "{c}");
        assert!(!c.contains("l1kvmamd"), "{c}");
        let other = Config { kvm_amd: "vgif=0:lbrv=0".into(), append: "mitigations=off".into(), ..Config::chosen() };
        let c = cmdline(Path::new("/x"), &other);
        assert!(c.contains(" l1kvmamd=vgif=0:lbrv=0 mitigations=off l1dir=/x"), "{c}");
        assert_eq!(other.describe(), "-cpu max -smp 2, kvm_amd vgif=0 lbrv=0, append \"mitigations=off\"");
    }

    #[test]
    fn a_guests_triple_fault_is_read_after_the_commands_end() {
        let log = "l1: begin\r\ntest result: FAILED\r\nl1: exit 101\r\nl1: guest triple fault:   cloud-hyperviso-412 [001] ..... 81.5: kvm_exit: vcpu 0 reason shutdown rip 0xffffffff810291cf info1 0x0 info2 0x0 intr_info 0x80000b0e error_code 0x10\r\n";
        assert_eq!(
            guest_triple_faults(log),
            vec!["vcpu 0 reason shutdown rip 0xffffffff810291cf info1 0x0 info2 0x0 intr_info 0x80000b0e error_code 0x10"]
        );
        assert_eq!(parse_console(log), Some(("test result: FAILED\n".to_string(), 101)));
        assert!(guest_triple_faults("l1: begin\nl1: exit 0\n").is_empty());
        assert_eq!(last_lines("a\n\nb\nc\n  d \n", 3), "b | c | d");
        assert_eq!(last_lines("", 3), "");
    }

    #[test]
    fn only_a_fault_the_guest_did_not_ask_for_is_the_emulators() {
        let exit =
            |info: &str| format!("vcpu 0 reason shutdown rip 0xffffffff810291cf info1 0x0 info2 0x0 intr_info {info} error_code 0x10");
        // A page fault on an instruction fetch (CI5's cloud-hypervisor guest); a #UD, a #GP.
        for info in ["0x80000b0e", "0x80000306", "0x80000b0d"] {
            assert!(unasked_fault(&exit(info)), "{info}");
        }
        // int3 with an empty IDT (reboot=t, the PVH test guest); nothing being delivered; garbage.
        for info in ["0x80000403", "0x00000000", "0x0000030e", "zz"] {
            assert!(!unasked_fault(&exit(info)), "{info}");
        }
        assert!(!unasked_fault("vcpu 0 reason shutdown rip 0x100017"));
    }

    #[test]
    fn a_triple_fault_is_read_from_qemus_reset_log() {
        // `-d cpu_reset` logs every CPU reset (at power-on too) with the registers; a triple fault
        // adds its own line first.
        let boot = "CPU Reset (CPU 0)\nEAX=00000000 EBX=00000000 ECX=00000000 EDX=00000663\n";
        assert!(!triple_fault(boot));
        assert!(triple_fault(&format!("{boot}Triple fault\nCPU Reset (CPU 1)\n")));
        assert!(!triple_fault(""));
    }

    #[test]
    fn a_death_of_l1s_kernel_is_told_from_the_rest() {
        // The console of a CI run whose L1 died (lines as L1's serial port carried them).
        let died = "chinit: ready in 180.2 ms\r\n[   12.041771] BUG: TASK stack guard page was hit at 00000000a2d1c2f5 (stack is 00000000e0b4c8a9..0000000046ba5b05)\r\n\
                    [   12.043102] stack guard page: 0000 [#1] PREEMPT SMP NOPTI\r\n[   12.050311] Kernel panic - not syncing: corrupted stack end detected inside scheduler\r\n";
        let cases: &[(&str, Option<&str>)] = &[
            (
                died,
                Some("[   12.041771] BUG: TASK stack guard page was hit at 00000000a2d1c2f5 (stack is 00000000e0b4c8a9..0000000046ba5b05)"),
            ),
            (
                "[    3.1] Kernel panic - not syncing: sysrq triggered crash\n",
                Some("[    3.1] Kernel panic - not syncing: sysrq triggered crash"),
            ),
            (
                "[    9.0] general protection fault, probably for non-canonical address 0xdead: 0000 [#1]\n",
                Some("[    9.0] general protection fault, probably for non-canonical address 0xdead: 0000 [#1]"),
            ),
            (
                "[    9.0] watchdog: BUG: soft lockup - CPU#1 stuck for 22s! [qemu-system-x86:301]\n",
                Some("[    9.0] watchdog: BUG: soft lockup - CPU#1 stuck for 22s! [qemu-system-x86:301]"),
            ),
            // chinit (the code under test) ending L1 is not the emulator's failure.
            ("[    2.0] Kernel panic - not syncing: Attempted to kill init! exitcode=0x0000000b\n", None),
            ("chinit: workload: BUG: in the output of a program\nchinit: ready in 90 ms\n", None),
            ("chinit: ready in 180.2 ms\r\nchinit: workload exited with status 0\r\n", None),
            ("", None),
        ];
        for (console, want) in cases {
            assert_eq!(kernel_death(console).as_deref(), *want, "{console:?}");
        }
    }
}
