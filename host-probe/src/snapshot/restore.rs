//! `host-probe run --restore DIR [--clones N]`: each copy is planned like a boot (its own run
//! directory, TAP, guest address, vsock and notify port), restored by its VMM, made unique over
//! vsock (`POST /v1/restore`) and asked `/ready` at its new address: plan → launch → restore →
//! make unique → collect. Every copy is planned, and the snapshot checked, before any starts.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use agent::proto::{Ready, RestoreRequest, DEFAULT_VSOCK_PORT, MIN_RESTORE_ENTROPY};
use serde::Serialize;

use super::manifest::Manifest;
use crate::bounded::Bounded;
use crate::error::Error;
use crate::launch::{self, progress, Phase, Running};
use crate::options::{HostOffer, Options};
use crate::plan::Plan;
use crate::report::{HostTimes, Report};
use crate::signals::interrupted;
use crate::vmm::{MemoryRestoreMode, Vmm};
use crate::watch::Observed;

/// What a restore section of the report says: the restore phases on the host clock
/// (microseconds since the copy's VMM was spawned) and the guest's restore steps.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RestoreFigures {
    pub snapshot: String,
    /// cloud-hypervisor's `memory_restore_mode` (QEMU maps the memory file copy-on-write).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_restore_mode: Option<String>,
    pub generation: u64,
    pub hostname: String,
    pub ip: Option<String>,
    /// The VM runs again: QEMU took the state in and continued; cloud-hypervisor says `Running`.
    pub vmm_restored_us: u64,
    /// The restore request that was answered was sent, after this many attempts (the first
    /// connections right after a restore can fail).
    pub request_sent_us: u64,
    pub request_attempts: u32,
    /// chinit's answer: the copy is unique and ready (its new ready document).
    pub answered_us: u64,
    /// Guest clock: the first restore step's start to the last one's end.
    pub guest_restore_us: u64,
    /// Host clock: spawn → ready as a unique copy (the answer).
    pub total_us: u64,
    /// The snapshotted machine's cold boot to ready, host clock, for comparison.
    pub cold_boot_us: u64,
}

/// `--restore DIR` and what goes with it.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    pub dir: PathBuf,
    pub clones: usize,
    pub mode: Option<MemoryRestoreMode>,
}

/// A checked snapshot and the plans of its copies.
pub struct Prepared {
    pub manifest: Manifest,
    pub dir: PathBuf,
    pub mode: Option<MemoryRestoreMode>,
    pub options: Options,
    pub plans: Vec<Plan>,
}

/// Reads and checks the snapshot, checks that the host can hold `ro.clones` copies (as `bench
/// --clones` does: [`crate::density::limit`]) and this host-probe can name them, and plans them:
/// every refusal comes before anything starts.
pub fn prepare(ro: &RestoreOptions, base: &Options, host: &HostOffer) -> Result<Prepared, Error> {
    if ro.clones == 0 {
        return Err(Error::Usage("--clones 0: at least one copy".into()));
    }
    let dir = crate::error::absolute(&ro.dir);
    let m = Manifest::read(&dir)?;
    m.copy_generation()?;
    let version = host.program_of(m.vmm).and_then(|b| m.vmm.version_line(&b));
    m.check(version.as_deref())?;
    let mode = m.vmm.restore_mode(ro.mode)?;
    if let Some(why) = unrestorable_vsock(m.vmm, &m.devices.vsock) {
        return Err(Error::BadSnapshot {
            what: format!("{}: {why}", dir.display()),
            fix: "take the snapshot again with host-probe snapshot (QEMU: with the kernel's vhost-vsock, modprobe vhost_vsock)".into(),
        });
    }
    if m.devices.vsock == "kernel" && !host.kernel_vsock {
        return Err(Error::BadSnapshot {
            what: "this snapshot's vsock is the host kernel's vhost-vsock, and this host has no /dev/vhost-vsock".into(),
            fix: "modprobe vhost_vsock".into(),
        });
    }
    crate::density::limit(ro.clones, m.boot.memory_mib, crate::density::Capacity::gather())?;
    crate::plan::room_for(ro.clones)?;
    let config = m.vmm.snapshot_config(&dir)?;
    let options = m.options(base);
    let plans = (0..ro.clones)
        .map(|_| plan_copy(&m, &dir, &options, host, crate::plan::next_seq(), mode, config.as_deref()))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Prepared { manifest: m, dir, mode, options, plans })
}

/// Why a snapshot's vsock cannot be restored by its VMM (pure): each restores one kind
/// ([`crate::vmm::Driver::restorable_vsock`]).
pub fn unrestorable_vsock(vmm: Vmm, vsock: &str) -> Option<String> {
    let restorable = vmm.restorable_vsock();
    (vsock != restorable).then(|| {
        format!(
            "a {} snapshot whose vsock is {vsock:?}, which {} cannot restore (it restores a {restorable:?} one)",
            vmm.name(),
            vmm.name()
        )
    })
}

/// One copy's plan: a boot's plan (new names, address, vsock, notify port) turned into a restore.
pub fn plan_copy(
    m: &Manifest,
    dir: &Path,
    o: &Options,
    host: &HostOffer,
    seq: u32,
    mode: Option<MemoryRestoreMode>,
    config: Option<&str>,
) -> Result<Plan, Error> {
    let mut p = crate::plan::plan(o, host, seq)?;
    // The guest's MAC is in its memory: each copy keeps it, on a TAP of its own.
    if let (Some(net), Some(mac)) = (p.tap.as_mut(), &m.devices.mac) {
        net.mac = mac.clone();
    }
    p.spec.net = p.tap.clone();
    // The VM is the snapshot's: a copy its VMM cannot take is a bad snapshot, not a bad option.
    m.vmm.restore_copy(&mut p, dir, mode.unwrap_or_default(), config)?;
    p.notes.push(format!("restoring {}: a copy of generation {}", dir.display(), m.copy_generation()?));
    Ok(p)
}

/// What makes copy `p` unique: a generation one past the snapshot's, fresh entropy, the host's
/// time, a hostname, its address and its notify port.
pub fn request(m: &Manifest, p: &Plan) -> Result<RestoreRequest, Error> {
    let mut bytes = [0u8; MIN_RESTORE_ENTROPY + 3];
    use std::io::Read;
    std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes)).map_err(Error::io("read /dev/urandom"))?;
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    Ok(RestoreRequest {
        generation: m.copy_generation()?,
        entropy: hex(&bytes[..MIN_RESTORE_ENTROPY]),
        wall_clock_us: None,
        hostname: Some(format!("copy-{}", hex(&bytes[MIN_RESTORE_ENTROPY..]))),
        ip: p.guest_ip.map(|ip| format!("{ip}/{}", crate::tap::GUEST_PREFIX)),
        notify_port: p.notify_port,
    })
}

/// How long the other ways in get once the copy answered.
const OTHERS_GRACE: Duration = Duration::from_secs(2);

/// A restored copy, unique and ready, still running: tests talk to it before [`Copy::finish`].
pub struct Copy<'a> {
    prep: &'a Prepared,
    plan: &'a Plan,
    running: Running,
    req: RestoreRequest,
    asked: Asked,
    vmm_restored_us: u64,
    host: HostTimes,
}

/// Restores one planned copy and makes it unique: launch, restore (the VMM's way), `POST
/// /v1/restore` over vsock, then `/ready` at its new address and its pushed ready document.
///
/// Restore and make unique are two phases by one deadline (`--timeout` from the start); each gives
/// up there, or as soon as the VMM exits, saying where it waited.
pub fn start<'a>(prep: &'a Prepared, plan: &'a Plan, o: &Options) -> Result<Copy<'a>, Error> {
    let mut req = request(&prep.manifest, plan)?;
    let (mut running, phase) = load(prep, plan, o)?;
    let vmm_restored_us = running.now_us();
    progress(o.verbose, &format!("VM restored at {} ms; making it unique", crate::report::ms(vmm_restored_us)));
    let asked = ask_restore(&mut running, &mut req, &phase.then("make unique"))?;
    let mut host = HostTimes { ready_vsock_us: Some(asked.answered_us), ..HostTimes::default() };
    // The new address answers.
    if let Some(addr) = running.guest_addr() {
        host.tcp_attempts = 1;
        if crate::ask::ready_over_tcp(addr, OTHERS_GRACE).is_some_and(|r| r.generation == req.generation) {
            host.ready_tcp_us = Some(running.now_us());
        }
    }
    // The pushed ready document, on this copy's own port.
    let wait_push = Instant::now();
    while running.listens_for_notify() && wait_push.elapsed() < OTHERS_GRACE {
        interrupted()?;
        let pushed =
            running.pushes().into_iter().find(|(_, b)| serde_json::from_slice::<Ready>(b).is_ok_and(|r| r.generation == req.generation));
        if let Some((t, _)) = pushed {
            host.notify_us = Some(t);
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(Copy { prep, plan, running, req, asked, vmm_restored_us, host })
}

/// Restores one planned copy its VMM's way and nothing more, as a platform that loads snapshots
/// with the VMM alone does: no restore request. A copy whose VMM changes its VM generation ID
/// (Firecracker) notices by itself and pushes its ready document. Returns the running copy and
/// what is left of the restore's time.
pub fn load(prep: &Prepared, plan: &Plan, o: &Options) -> Result<(Running, Phase), Error> {
    let phase = Phase::start("restore", o.timeout);
    let mut running = launch::start(plan, o)?;
    plan.vmm.resume_copy(&mut running, &prep.dir, &phase)?;
    Ok((running, phase))
}

impl Copy<'_> {
    /// The running copy (its vsock, address, console).
    pub fn running(&self) -> &Running {
        &self.running
    }

    /// Its ready document as it answered the restore.
    pub fn ready(&self) -> &Ready {
        &self.asked.doc
    }

    /// What made it unique.
    pub fn request(&self) -> &RestoreRequest {
        &self.req
    }

    /// Powers it off, removes what it made, and reports it.
    pub fn finish(self, o: &Options) -> Result<Report, Error> {
        let Copy { prep, plan, mut running, req, asked, vmm_restored_us, host } = self;
        let memory = running.vmm_memory();
        let vmm_exit = running.power_off(crate::run::POWER_OFF_GRACE);
        let seen = Observed { host, ready: Some(asked.doc.clone()), memory, vmm_exit, kmsg: None };
        let mut report = crate::collect::report(plan, o, seen, running.finish())?;
        report.phases = None;
        report.restore = Some(RestoreFigures {
            snapshot: prep.dir.display().to_string(),
            memory_restore_mode: prep.mode.map(|m| m.name().to_string()),
            generation: asked.doc.generation,
            hostname: req.hostname.clone().unwrap_or_default(),
            ip: asked.doc.ip.clone(),
            vmm_restored_us,
            request_sent_us: asked.sent_us,
            request_attempts: asked.attempts,
            answered_us: asked.answered_us,
            guest_restore_us: guest_restore_us(&asked.doc),
            total_us: asked.answered_us,
            cold_boot_us: prep.manifest.boot_ready_us,
        });
        Ok(report)
    }
}

/// Restores one planned copy, makes it unique, measures it; powers it off and removes what it made.
pub fn one(prep: &Prepared, plan: &Plan, o: &Options) -> Result<Report, Error> {
    start(prep, plan, o)?.finish(o)
}

/// The guest's restore steps, first start to last end.
fn guest_restore_us(doc: &Ready) -> u64 {
    let steps = doc.steps.iter().filter(|s| s.name.starts_with("restore."));
    let (start, end) = steps.fold((u64::MAX, 0), |(a, b), s| (a.min(s.start_us), b.max(s.end_us)));
    end.saturating_sub(start.min(end))
}

/// The answered restore request.
struct Asked {
    doc: Ready,
    attempts: u32,
    sent_us: u64,
    answered_us: u64,
}

/// How long the first attempt waits to connect, doubling each attempt up to [`CONNECT_TIMEOUT_MAX`]:
/// the first connections after a restore can hang (the vsock transport is being reset).
const CONNECT_TIMEOUT_FIRST: Duration = Duration::from_millis(20);
const CONNECT_TIMEOUT_MAX: Duration = Duration::from_millis(640);
/// How long a connected request may take to be answered.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// `POST /v1/restore` over vsock until chinit answers it (the first connections right after a
/// restore can fail: retried). A refusal (4xx) is an error: the request is not sent again.
fn ask_restore(running: &mut Running, req: &mut RestoreRequest, phase: &Phase) -> Result<Asked, Error> {
    let vsock = running.guest_vsock().cloned().ok_or_else(|| Error::Failed("internal: a copy without vsock".into()))?;
    let mut attempts = 0u32;
    let mut sent_us = 0;
    let spawned = running.spawned();
    let answer = running.wait_in(phase, "the copy to answer POST /v1/restore over vsock", ASK_EVERY, |left| {
        attempts += 1;
        req.wall_clock_us = SystemTime::now().duration_since(UNIX_EPOCH).ok().and_then(|d| u64::try_from(d.as_micros()).ok());
        let body = serde_json::to_vec(&req).map_err(|e| e.to_string())?;
        sent_us = crate::report::micros(spawned.elapsed());
        let connect_timeout = CONNECT_TIMEOUT_FIRST.saturating_mul(1 << (attempts - 1).min(5)).min(CONNECT_TIMEOUT_MAX);
        let s = vsock.connect_then(DEFAULT_VSOCK_PORT, connect_timeout.min(left), ANSWER_TIMEOUT.min(left));
        let mut s = Bounded::new(s.map_err(|e| format!("attempt {attempts}: {e}"))?, Instant::now() + ANSWER_TIMEOUT.min(left));
        agent::client::request(&mut s, "POST", "/v1/restore", Some(&body)).map_err(|e| format!("attempt {attempts}: {e}"))
    })?;
    if answer.status != 200 {
        return Err(Error::Failed(format!(
            "make unique: the copy refused POST /v1/restore: {} {}",
            answer.status,
            String::from_utf8_lossy(&answer.body).trim()
        )));
    }
    let answered_us = running.now_us();
    let doc: Ready = answer.json().map_err(|e| Error::Failed(format!("make unique: the copy's answer to POST /v1/restore: {e}")))?;
    Ok(Asked { doc, attempts, sent_us, answered_us })
}

/// How long between two restore requests that were not answered.
const ASK_EVERY: Duration = Duration::from_millis(5);

/// Restores every prepared copy at once; one result per copy, in order.
pub fn all(prep: &Prepared, o: &Options) -> Vec<Result<Report, Error>> {
    std::thread::scope(|s| {
        let handles: Vec<_> = prep.plans.iter().map(|p| s.spawn(move || one(prep, p, o))).collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err(Error::Failed("a copy's thread panicked".into())))).collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// `run --restore --clones N` is held to the limits of `bench --clones`, before a copy is planned.
    #[test]
    fn more_copies_than_one_host_probe_can_name_are_refused_before_any_is_planned() {
        let tmp = tempfile::tempdir().unwrap();
        let (kernel, rootfs) = crate::standin::boot_files(tmp.path());
        let ch = crate::standin::vmm(tmp.path(), "cloud-hypervisor", crate::vmm::cloud_hypervisor::VMM, "exit 1");
        let dir = tmp.path().join("snapshot");
        crate::standin::snapshot(&dir, crate::vmm::cloud_hypervisor::VMM, &ch, &kernel, &rootfs);
        let t = Instant::now();
        let ro = RestoreOptions { dir, clones: 100_000, mode: None };
        let e = prepare(&ro, &Options::default(), &crate::standin::host(Some(&ch), None)).err().expect("100000 copies planned");
        assert_eq!(e.exit_code().code(), 2, "{e}");
        assert!(e.to_string().contains("at most 4096"), "{e}");
        assert!(t.elapsed() < Duration::from_secs(1), "refused after {:?}", t.elapsed());
    }

    /// A cloud-hypervisor whose API accepts and never answers: the restore gives up at its
    /// `--timeout`, naming the phase and what it waited for (exit 4), while the VMM still runs.
    #[test]
    fn a_restore_gives_up_at_its_timeout_and_says_where_it_waited() {
        let tmp = tempfile::tempdir().unwrap();
        let (kernel, rootfs) = crate::standin::boot_files(tmp.path());
        let ch = crate::standin::vmm(tmp.path(), "cloud-hypervisor", crate::vmm::cloud_hypervisor::VMM, "exec sleep 30");
        let dir = tmp.path().join("snapshot");
        crate::standin::snapshot(&dir, crate::vmm::cloud_hypervisor::VMM, &ch, &kernel, &rootfs);
        let o = Options { timeout: Duration::from_secs(2), ..Options::default() };
        let ro = RestoreOptions { dir, clones: 1, mode: None };
        let prep = prepare(&ro, &o, &crate::standin::host(Some(&ch), None)).unwrap();
        let api = prep.plans[0].spec.api_socket.clone();
        let (stop, held) = (std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false)), std::sync::Arc::new(Mutex::new(Vec::new())));
        let (stop2, held2) = (stop.clone(), held.clone());
        let silent = std::thread::spawn(move || {
            while !api.parent().unwrap().exists() && !stop2.load(std::sync::atomic::Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(1));
            }
            let l = std::os::unix::net::UnixListener::bind(&api).unwrap();
            l.set_nonblocking(true).unwrap();
            while !stop2.load(std::sync::atomic::Ordering::SeqCst) {
                if let Ok((s, _)) = l.accept() {
                    held2.lock().unwrap().push(s);
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        let t = Instant::now();
        let e = start(&prep, &prep.plans[0], &prep.options).err().expect("restored without an answer");
        let took = t.elapsed();
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        silent.join().unwrap();
        assert!(!held.lock().unwrap().is_empty(), "the API was never asked");
        assert_eq!(e.exit_code().code(), 4, "{e}");
        let text = e.to_string();
        assert!(text.starts_with("restore: gave up after 2 s waiting for") && text.contains("vm.info"), "{text}");
        assert!(took < Duration::from_millis(3500), "gave up after {took:?}");
    }

    #[test]
    fn each_vmm_restores_its_own_vsock_only() {
        let cases = [
            (crate::vmm::qemu::VMM, "kernel", false),
            (crate::vmm::qemu::VMM, "hybrid", true),
            (crate::vmm::cloud_hypervisor::VMM, "hybrid", false),
            (crate::vmm::cloud_hypervisor::VMM, "kernel", true),
            (crate::vmm::qemu::VMM, "", true),
        ];
        for (vmm, vsock, refused) in cases {
            assert_eq!(unrestorable_vsock(vmm, vsock).is_some(), refused, "{vmm:?} {vsock:?}");
        }
        assert!(unrestorable_vsock(crate::vmm::qemu::VMM, "hybrid").unwrap().contains("qemu cannot restore"));
    }

    /// A snapshot `host-probe snapshot` could not have made is refused before anything starts, as
    /// a bad snapshot (exit 6), saying why it cannot be restored.
    #[test]
    fn snapshots_that_cannot_be_restored_are_refused_with_exit_6() {
        let tmp = tempfile::tempdir().unwrap();
        let (kernel, rootfs) = crate::standin::boot_files(tmp.path());
        let ch = crate::standin::vmm(tmp.path(), "cloud-hypervisor", crate::vmm::cloud_hypervisor::VMM, "exit 1");
        let qemu = crate::standin::vmm(tmp.path(), "qemu", crate::vmm::qemu::VMM, "exit 1");
        let host = crate::standin::host(Some(&ch), Some(&qemu));
        let host_with_vhost_user = HostOffer { vhost_vsock: Some(PathBuf::from("/bin/true")), ..host.clone() };

        let last = tmp.path().join("last-generation");
        let mut m = crate::standin::snapshot(&last, crate::vmm::cloud_hypervisor::VMM, &ch, &kernel, &rootfs);
        m.generation = u64::MAX;
        crate::standin::write_manifest(&last, &m);
        let hybrid_qemu = tmp.path().join("hybrid-qemu");
        let mut m = crate::standin::snapshot(&hybrid_qemu, crate::vmm::qemu::VMM, &qemu, &kernel, &rootfs);
        m.devices.vsock = "hybrid".into();
        crate::standin::write_manifest(&hybrid_qemu, &m);

        let cases = [(&last, &host, "generation 18446744073709551615"), (&hybrid_qemu, &host_with_vhost_user, "qemu cannot restore")];
        for (dir, host, want) in cases {
            let ro = RestoreOptions { dir: dir.clone(), clones: 1, mode: None };
            let e = prepare(&ro, &Options::default(), host).err().unwrap_or_else(|| panic!("{}: restored", dir.display()));
            assert_eq!(e.exit_code().code(), 6, "{}: {e}", dir.display());
            let text = e.to_string();
            assert!(text.contains(want) && text.contains("fix: "), "{}: {want:?} missing from: {text}", dir.display());
        }
    }

    #[test]
    fn the_guest_restore_time_spans_the_restore_steps_only() {
        let step = |name: &str, start_us, end_us| agent::proto::Step { name: name.into(), start_us, end_us, error: None };
        let doc = Ready {
            ready: true,
            version: "v".into(),
            mode: "vm".into(),
            init_start_us: 1,
            ready_us: 2,
            steps: vec![step("mounts", 10, 20), step("restore.entropy", 1000, 1004), step("restore.network", 1005, 1030)],
            ip: None,
            generation: 1,
            restores: 1,
            workload: None,
        };
        assert_eq!(guest_restore_us(&doc), 30);
        assert_eq!(guest_restore_us(&Ready { steps: vec![], ..doc }), 0);
    }
}
