//! cloud-hypervisor (v53): its command line ([`argv`]), its REST API ([`api`]), a restored copy's
//! `config.json` ([`config`]), and its [`Driver`]: KVM only, guests of the host's architecture, its
//! own hybrid vsock, port-0x80 marks in its log and events from its event monitor, snapshots by
//! `vm.pause` and `vm.snapshot`, copies by `--restore` with an edited `config.json`.

pub mod api;
pub mod argv;
pub mod config;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use argv::argv;

use super::{Accel, Driver, Feature, Marks, MemoryRestoreMode, Role, Spec, Vmm, Vsock, Wired};
use crate::check::{self, KvmKind, Line, Program, Status};
use crate::error::Error;
use crate::launch::{read_lossy, Captured, Phase, Running};
use crate::measure;
use crate::options::{Arch, HostOffer};
use crate::plan::{Plan, RunFile, GUEST_CID};

/// cloud-hypervisor.
pub const VMM: Vmm = Vmm::new(&CloudHypervisor);

/// Its name, and the program's.
pub const NAME: &str = "cloud-hypervisor";

/// The files of its snapshot, besides the manifest: `--restore` reads them.
const SNAPSHOT_FILES: &[&str] = &["config.json", "state.json", "memory-ranges"];

pub struct CloudHypervisor;

/// Its program: `$CLOUD_HYPERVISOR`, else on PATH.
pub fn find() -> Option<PathBuf> {
    super::find_program(PROGRAM_VAR, NAME)
}

/// The environment variable that names its program.
const PROGRAM_VAR: &str = "CLOUD_HYPERVISOR";

impl Driver for CloudHypervisor {
    fn name(&self) -> &'static str {
        NAME
    }

    fn program_var(&self) -> Option<&'static str> {
        Some(PROGRAM_VAR)
    }

    fn locate(&self) -> Vec<(&'static str, PathBuf)> {
        find().map(|p| (NAME, p)).into_iter().collect()
    }

    /// Only when it is installed, hardware KVM is usable and the guest is of the host's architecture.
    fn auto_fits(&self, host: &HostOffer, native: bool) -> bool {
        native && host.vmm_programs.contains_key(NAME) && host.kvm.hardware() && host.kvm_usable
    }

    fn chosen(&self, host: &HostOffer, notes: &mut Vec<String>) -> Result<(), Error> {
        let missing = Error::Missing {
            what: "cloud-hypervisor not found (neither $CLOUD_HYPERVISOR nor on PATH)".into(),
            fix: "install cloud-hypervisor v53, or use --vmm qemu".into(),
        };
        super::kvm_only_chosen(host, NAME, NAME, missing, notes)
    }

    fn program_name(&self, _arch: Arch) -> &'static str {
        NAME
    }

    fn runs(&self, host: &HostOffer, arch: Arch, _notes: &mut Vec<String>) -> Result<(PathBuf, Accel), Error> {
        super::native_only(NAME, host, arch)?;
        Ok((host.program(VMM, arch).unwrap_or_default(), Accel::Kvm))
    }

    /// On x86_64 the PVH `vmlinux`; on aarch64 the `Image`.
    fn kernel_file(&self, arch: Arch) -> &'static str {
        match arch {
            Arch::X86_64 => "vmlinux",
            Arch::Aarch64 => "Image",
        }
    }

    fn needs_hardware_kvm(&self) -> bool {
        true
    }

    /// Found, and usable only with hardware KVM; without it `--vmm qemu` still works.
    fn check_line(&self, program: Option<&Program>, kvm: KvmKind) -> Line {
        match (program, kvm.hardware()) {
            (Some(p), true) => check::line(Status::Ok, NAME, check::program(Some(p)), None),
            (Some(p), false) => {
                check::line(Status::Warn, NAME, format!("{}; cannot boot Linux without hardware KVM", check::program(Some(p))), None)
            }
            (None, _) => check::line(
                Status::Warn,
                NAME,
                "not found (set $CLOUD_HYPERVISOR or put it on PATH)".into(),
                Some("install cloud-hypervisor v53 from its releases; --vmm qemu works without it"),
            ),
        }
    }

    fn cannot(&self, _what: Feature) -> Option<&'static str> {
        None
    }

    /// Its own hybrid vsock: a Unix socket it binds in the run directory.
    fn wire_vsock(&self, _host: &HostOffer, run_dir: &Path, _ids: (u32, u32), _notes: &mut Vec<String>) -> Wired {
        let uds = run_dir.join("vsock.sock");
        Wired::hybrid(Vsock::Hybrid { cid: GUEST_CID, socket: uds.clone() }, None, &uds)
    }

    fn argv(&self, spec: &Spec) -> Result<Vec<String>, String> {
        Ok(argv(spec))
    }

    /// Its marks are in its log, not on a socket.
    fn debugcon<'a>(&self, _spec: &'a Spec) -> Option<&'a Path> {
        None
    }

    /// A guest reset (kernel panic or reboot) is an event, not an exit.
    fn guest_reset(&self, spec: &Spec) -> bool {
        let events = measure::parse_ch_events(&read_lossy(&spec.event_monitor));
        measure::event_at(&events, "vm", "rebooting").is_some()
    }

    /// Marks from its log's prefixes, events from its event monitor; it is up at `vm booting`.
    fn marks(&self, _spec: &Spec, c: &Captured) -> Marks {
        let events = measure::parse_ch_events(&c.event_monitor);
        Marks {
            marks: measure::parse_ch_log(&c.vmm_log),
            source: "vmm log prefix",
            vmm_ready_us: measure::event_at(&events, "vm", "booting"),
            events,
        }
    }

    fn first_error(&self, log: &str) -> Option<String> {
        measure::ch_first_error(log)
    }

    /// Its vsock is always its own, which it saves.
    fn snapshot_refusal(&self, _spec: &Spec) -> Option<Error> {
        None
    }

    fn snapshot_files(&self) -> &'static [&'static str] {
        SNAPSHOT_FILES
    }

    /// `vm.pause`, then `vm.snapshot` into `out`; phases of `timeout` each.
    fn save(&self, running: &mut Running, out: &Path, timeout: Duration) -> Result<(Duration, Duration), Error> {
        let socket = running.plan().spec.api_socket.clone();
        let phase = Phase::start("snapshot pause", timeout);
        let t = Instant::now();
        let r = api::pause(&socket, phase.left());
        running.call(&phase, "cloud-hypervisor's API (vm.pause)", r)?;
        let pause = t.elapsed();
        let phase = Phase::start("snapshot save", timeout);
        let t = Instant::now();
        let r = api::snapshot(&socket, out, phase.left());
        running.call(&phase, "cloud-hypervisor's API (vm.snapshot)", r)?;
        Ok((pause, t.elapsed()))
    }

    fn saved(&self, _out: &Path) -> Result<(), Error> {
        Ok(())
    }

    fn restore_mode(&self, asked: Option<MemoryRestoreMode>) -> Result<Option<MemoryRestoreMode>, Error> {
        Ok(Some(asked.unwrap_or_default()))
    }

    fn restorable_vsock(&self) -> &'static str {
        "hybrid"
    }

    /// The snapshot's `config.json`: each copy gets it with its own devices.
    fn snapshot_config(&self, dir: &Path) -> Result<Option<String>, Error> {
        let p = dir.join("config.json");
        Ok(Some(std::fs::read_to_string(&p).map_err(Error::io(format!("read {}", p.display())))?))
    }

    /// `--restore` from `snapshot/` in the copy's run directory: the snapshot's `config.json` with
    /// the copy's console, vsock socket and TAP, and links to its state and memory.
    fn restore_copy(&self, p: &mut Plan, dir: &Path, mode: MemoryRestoreMode, config: Option<&str>) -> Result<(), Error> {
        let from = p.run_dir.join("snapshot");
        p.spec.role = Role::Restore { from: from.clone(), memory: dir.join("memory"), qmp: p.run_dir.join("qmp.sock"), mode };
        let config = config.ok_or_else(|| Error::Failed("internal: no config.json for a cloud-hypervisor copy".into()))?;
        let vsock = match &p.spec.vsock {
            Some(Vsock::Hybrid { socket, .. }) => Some(socket.as_path()),
            _ => None,
        };
        let edited = config::copy_config(config, &p.spec.serial, vsock, p.tap.as_ref().map(|n| n.tap.as_str()))
            .map_err(|e| super::unrestorable(dir, &format!("its config.json: {e}")))?;
        p.files = vec![RunFile::Write { path: from.join("config.json"), bytes: edited.into_bytes() }];
        for f in ["state.json", "memory-ranges"] {
            p.files.push(RunFile::Link { path: from.join(f), target: dir.join(f) });
        }
        p.argv = argv(&p.spec);
        Ok(())
    }

    /// `--restore ...,resume=true` ends with the VM running; its API says so.
    fn resume_copy(&self, running: &mut Running, _dir: &Path, phase: &Phase) -> Result<(), Error> {
        let socket = running.plan().spec.api_socket.clone();
        running.wait_in(phase, "cloud-hypervisor's API (vm.info) to say the VM is Running", API_EVERY, |left| {
            match api::state(&socket, left.min(API_TRY)) {
                Ok(s) if s == "Running" => Ok(()),
                Ok(s) => Err(format!("state {s}")),
                Err(e) => Err(e.to_string()),
            }
        })
    }
}

/// How often a restoring cloud-hypervisor is asked, and how long one question may take.
const API_EVERY: Duration = Duration::from_millis(5);
const API_TRY: Duration = Duration::from_secs(2);
