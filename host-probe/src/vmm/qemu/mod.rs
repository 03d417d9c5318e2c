//! QEMU (`microvm` on x86_64, `virt` on aarch64): its command line ([`argv`]), QMP ([`super::qmp`]), and
//! its [`Driver`]: KVM where hardware KVM is usable, else (and for a guest of another architecture)
//! TCG; vsock from the host kernel's vhost-vsock or vhost-device-vsock; port-0x80 marks over its
//! debugcon socket; snapshots by migrating its device state next to a shared memory file, copies
//! by taking that state in (`-incoming defer`) with the memory file mapped private.

pub mod argv;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use argv::{argv, PMEM_UNSUPPORTED, VHOST_USER_NOT_MIGRATABLE};

use super::qmp;
use super::{shell_quote, Accel, Driver, Feature, Marks, MemoryRestoreMode, Role, Spec, Vmm, Vsock, Wired};
use crate::check::{self, KvmKind, Line, Program, Status};
use crate::error::Error;
use crate::launch::{Captured, Phase, Running};
use crate::measure;
use crate::options::{Arch, HostOffer};
use crate::plan::{Plan, GUEST_CID};

/// QEMU.
pub const VMM: Vmm = Vmm::new(&Qemu);

/// Its name.
pub const NAME: &str = "qemu";

/// Its programs, for x86_64 and aarch64 guests.
pub const QEMU: &str = "qemu-system-x86_64";
pub const QEMU_AARCH64: &str = "qemu-system-aarch64";

/// The files of its snapshot, besides the manifest: the guest's memory and the device state.
const SNAPSHOT_FILES: &[&str] = &["memory", "state"];

pub struct Qemu;

/// QEMU for guests of `arch`.
pub fn program_for(arch: Arch) -> &'static str {
    match arch {
        Arch::X86_64 => QEMU,
        Arch::Aarch64 => QEMU_AARCH64,
    }
}

impl Driver for Qemu {
    fn name(&self) -> &'static str {
        NAME
    }

    fn locate(&self) -> Vec<(&'static str, PathBuf)> {
        [QEMU, QEMU_AARCH64].into_iter().filter_map(|p| crate::locate::which(p).map(|path| (p, path))).collect()
    }

    /// It runs anywhere (with TCG at worst).
    fn auto_fits(&self, _host: &HostOffer, _native: bool) -> bool {
        true
    }

    fn chosen(&self, _host: &HostOffer, _notes: &mut Vec<String>) -> Result<(), Error> {
        Ok(())
    }

    fn program_name(&self, arch: Arch) -> &'static str {
        program_for(arch)
    }

    /// KVM where hardware KVM is usable and the guest is of the host's architecture, else TCG
    /// (noted: the timings are not representative).
    fn runs(&self, host: &HostOffer, arch: Arch, notes: &mut Vec<String>) -> Result<(PathBuf, Accel), Error> {
        let package = match arch {
            Arch::X86_64 => "qemu-system-x86",
            Arch::Aarch64 => "qemu-system-arm",
        };
        let bin = host.program(VMM, arch).ok_or_else(|| Error::Missing {
            what: format!("{} not found", program_for(arch)),
            fix: format!("apt-get install {package}"),
        })?;
        if arch != host.arch {
            notes.push(format!(
                "an {} guest on an {} host: using TCG emulation, timings are not representative",
                arch.name(),
                host.arch.name()
            ));
            Ok((bin, Accel::Tcg))
        } else if host.kvm.hardware() && host.kvm_usable {
            Ok((bin, Accel::Kvm))
        } else {
            notes.push(crate::plan::tcg_note(host.kvm, host.kvm_usable));
            Ok((bin, Accel::Tcg))
        }
    }

    /// On x86_64 the `bzImage`; on aarch64 the `Image`.
    fn kernel_file(&self, arch: Arch) -> &'static str {
        match arch {
            Arch::X86_64 => "bzImage",
            Arch::Aarch64 => "Image",
        }
    }

    /// It emulates (TCG) without it.
    fn needs_hardware_kvm(&self) -> bool {
        false
    }

    fn check_line(&self, program: Option<&Program>, _kvm: KvmKind) -> Line {
        match program {
            Some(p) => check::line(Status::Ok, NAME, check::program(Some(p)), None),
            None => check::line(Status::Missing, NAME, format!("{QEMU} not found"), Some("apt-get install qemu-system-x86")),
        }
    }

    fn cannot(&self, what: Feature) -> Option<&'static str> {
        Some(match what {
            Feature::PmemRoot => PMEM_UNSUPPORTED,
            Feature::KuasarLayout => "--layout kuasar is cloud-hypervisor's: pass --vmm cloud-hypervisor",
            Feature::Share => "--share is served to cloud-hypervisor guests only: pass --vmm cloud-hypervisor",
        })
    }

    /// The host kernel's vhost-vsock where `/dev/vhost-vsock` exists (a context id and notify port
    /// of the run's own), else vhost-device-vsock, else none (with a note that says how).
    fn wire_vsock(&self, host: &HostOffer, run_dir: &Path, ids: (u32, u32), notes: &mut Vec<String>) -> Wired {
        if host.kernel_vsock {
            return Wired::kernel(ids);
        }
        match &host.vhost_vsock {
            Some(bin) => {
                let uds = run_dir.join("vsock.sock");
                let user = run_dir.join("vhost-user.sock");
                let argv = vec![
                    bin.display().to_string(),
                    "--guest-cid".into(),
                    GUEST_CID.to_string(),
                    "--socket".into(),
                    user.display().to_string(),
                    "--uds-path".into(),
                    uds.display().to_string(),
                ];
                Wired::hybrid(Vsock::VhostUser { socket: user }, Some(argv), &uds)
            }
            None => {
                notes.push("no /dev/vhost-vsock and no vhost-device-vsock: no vsock (fix: modprobe vhost_vsock, or cargo install vhost-device-vsock)".into());
                Wired::default()
            }
        }
    }

    fn argv(&self, spec: &Spec) -> Result<Vec<String>, String> {
        argv(spec).map_err(String::from)
    }

    /// Its isa-debugcon on port 0x80 connects to host-probe's socket (x86_64: aarch64 has no port 0x80).
    fn debugcon<'a>(&self, spec: &'a Spec) -> Option<&'a Path> {
        (spec.arch == Arch::X86_64).then_some(spec.debugcon_socket.as_path())
    }

    /// `-no-reboot`: a guest that resets makes it exit.
    fn guest_reset(&self, _spec: &Spec) -> bool {
        false
    }

    /// Marks as debugcon bytes arrived; it is up when it connected its debugcon.
    fn marks(&self, spec: &Spec, c: &Captured) -> Marks {
        if spec.arch != Arch::X86_64 {
            // No port 0x80 on arm: the host's figures are its answers (notify, /ready).
            return Marks { source: "none (aarch64 has no port 0x80)", ..Marks::default() };
        }
        Marks {
            marks: measure::debugcon_marks(&c.debugcon),
            source: "debugcon arrival",
            events: Vec::new(),
            vmm_ready_us: c.debugcon_connected_us,
        }
    }

    /// It writes no log file: its own output (stderr) is the diagnostic.
    fn first_error(&self, _log: &str) -> Option<String> {
        None
    }

    /// vhost-device-vsock is a "non-migratable device".
    fn snapshot_refusal(&self, spec: &Spec) -> Option<Error> {
        matches!(spec.vsock, Some(Vsock::VhostUser { .. })).then(|| Error::Missing {
            what: "QEMU cannot snapshot this guest: its vsock is vhost-device-vsock (vhost-user), a \"non-migratable device\"".into(),
            fix: "load the kernel's vhost-vsock (modprobe vhost_vsock, so /dev/vhost-vsock exists), or use --vmm cloud-hypervisor".into(),
        })
    }

    fn snapshot_files(&self) -> &'static [&'static str] {
        SNAPSHOT_FILES
    }

    /// Stop, then migrate to `exec:cat > DIR/state` with `x-ignore-shared` (the memory is the
    /// shared file, already in DIR; only device state is written). Pausing and saving are phases
    /// of `timeout` each.
    fn save(&self, running: &mut Running, out: &Path, timeout: Duration) -> Result<(Duration, Duration), Error> {
        let Role::Source { qmp, .. } = &running.plan().spec.role else {
            return Err(Error::Failed("internal: a QEMU snapshot without its QMP socket".into()));
        };
        let qmp = qmp.clone();
        let phase = Phase::start("snapshot pause", timeout);
        let mut q = qmp::session(running, &phase, &qmp, "QEMU")?;
        let t = Instant::now();
        let r = q.execute("stop", None);
        running.call(&phase, "QMP stop", r)?;
        let pause = t.elapsed();
        let phase = Phase::start("snapshot save", timeout);
        q.until(phase.deadline);
        let t = Instant::now();
        let r = q.ignore_shared();
        running.call(&phase, "QMP migrate-set-capabilities", r)?;
        let state = out.join("state");
        let uri = format!("exec:cat > {}", shell_quote(&state.display().to_string()));
        let r = q.execute("migrate", Some(serde_json::json!({ "uri": uri })));
        running.call(&phase, "QMP migrate", r)?;
        let r = q.wait_migration(phase.left());
        running.call(&phase, "QEMU's migration into the snapshot (query-migrate)", r)?;
        Ok((pause, t.elapsed()))
    }

    /// It is gone: what it wrote of the guest's memory goes to disk now.
    fn saved(&self, out: &Path) -> Result<(), Error> {
        let memory = out.join("memory");
        std::fs::File::open(&memory).and_then(|f| f.sync_all()).map_err(Error::io(format!("sync {}", memory.display())))
    }

    fn restore_mode(&self, asked: Option<MemoryRestoreMode>) -> Result<Option<MemoryRestoreMode>, Error> {
        match asked {
            Some(_) => {
                Err(Error::Usage("--memory-restore-mode is cloud-hypervisor's: QEMU maps the snapshot's memory file copy-on-write".into()))
            }
            None => Ok(None),
        }
    }

    /// It migrates only the kernel's vhost-vsock.
    fn restorable_vsock(&self) -> &'static str {
        "kernel"
    }

    /// The snapshot's memory file mapped private (copy-on-write: the file is only read), waiting
    /// for its state (`-incoming defer`), QMP in the copy's run directory.
    fn restore_copy(&self, p: &mut Plan, dir: &Path, mode: MemoryRestoreMode, _config: Option<&str>) -> Result<(), Error> {
        p.spec.role = Role::Restore { from: dir.to_path_buf(), memory: dir.join("memory"), qmp: p.run_dir.join("qmp.sock"), mode };
        p.argv = argv(&p.spec).map_err(|e| super::unrestorable(dir, e))?;
        Ok(())
    }

    /// Takes the snapshot's state in (`migrate-incoming exec:cat DIR/state`, with
    /// `x-ignore-shared`: the memory is the file already mapped) and continues.
    fn resume_copy(&self, running: &mut Running, dir: &Path, phase: &Phase) -> Result<(), Error> {
        let Role::Restore { qmp, .. } = &running.plan().spec.role else {
            return Err(Error::Failed("internal: a QEMU copy without its QMP socket".into()));
        };
        let qmp = qmp.clone();
        let mut q = qmp::session(running, phase, &qmp, "QEMU")?;
        let r = q.ignore_shared();
        running.call(phase, "QMP migrate-set-capabilities", r)?;
        let uri = format!("exec:cat {}", shell_quote(&dir.join("state").display().to_string()));
        let r = q.execute("migrate-incoming", Some(serde_json::json!({ "uri": uri })));
        running.call(phase, "QMP migrate-incoming", r)?;
        let r = q.wait_migration(phase.left());
        running.call(phase, "QEMU to take the snapshot's state in (query-migrate)", r)?;
        let r = q.execute("cont", None);
        running.call(phase, "QMP cont", r)?;
        Ok(())
    }
}
