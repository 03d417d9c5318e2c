//! `host-probe snapshot --out DIR`: boot to ready (the plan of `run`, with QEMU's memory in a file
//! of DIR), pause, save, stop the VMM, write the manifest last. DIR is new (or empty) and is removed
//! again when anything fails or the run is interrupted: there is a whole snapshot or none.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::manifest::{self, Boot, Devices, FileId, Manifest, MANIFEST};
use crate::cmdline::RootKind;
use crate::error::{absolute, Error};
use crate::launch::{self, progress};
use crate::options::{HostOffer, Layout, Options, Wait};
use crate::plan::Plan;
use crate::report::Report;
use crate::run;
use crate::vmm::{Role, Vsock};

/// What a snapshot made.
pub struct Taken {
    pub dir: PathBuf,
    pub manifest: Manifest,
    /// The cold boot of the machine that was snapshotted.
    pub report: Report,
}

/// Why a plan cannot be snapshotted (pure): a copy is made unique over vsock, so it needs a vsock
/// both VMMs can save, and a ready chinit.
pub fn refusal(plan: &Plan, o: &Options) -> Option<Error> {
    let missing = |what: &str, fix: &str| Some(Error::Missing { what: what.into(), fix: fix.into() });
    if o.wait != Wait::Agent {
        return Some(Error::Usage("snapshot takes a ready guest: drop --no-agent".into()));
    }
    if o.share.is_some() {
        return Some(Error::Usage("a guest with a shared directory (--share, virtio-fs) cannot be snapshotted: drop --share".into()));
    }
    // The VMM's own reason first: it may be why the guest has no vsock.
    plan.vmm.snapshot_refusal(&plan.spec).or_else(|| match &plan.spec.vsock {
        None => missing(
            "snapshot needs vsock: each copy is made unique over it (POST /v1/restore)",
            "drop --no-vsock (QEMU: modprobe vhost_vsock, so /dev/vhost-vsock exists)",
        ),
        Some(_) => None,
    })
}

/// The output directory: new, or empty. Until the snapshot is complete, dropping it removes what
/// the snapshot wrote there — the VMM's files and the manifest, by name, nothing else that appears
/// there meanwhile — and then each directory it made, innermost first, while they are empty.
struct OutDir {
    path: PathBuf,
    /// The directories made for it, outermost first.
    made: Vec<PathBuf>,
    /// The names of the files the snapshot writes into it.
    files: Vec<String>,
    done: bool,
}

impl OutDir {
    fn create(path: &Path) -> Result<OutDir, Error> {
        let dir = |made| OutDir { path: path.to_path_buf(), made, files: vec![MANIFEST.into(), manifest_tmp()], done: false };
        match std::fs::read_dir(path).map(|mut entries| entries.next().is_none()) {
            // Refused before it is ours: nothing in it is touched.
            Ok(false) => Err(Error::Usage(format!(
                "{} exists and is not empty: a snapshot never overwrites anything; pass a new directory to --out",
                path.display()
            ))),
            Ok(true) => Ok(dir(Vec::new())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // Dropped on an error below, it removes what it made so far.
                let mut out = dir(Vec::new());
                for d in to_make(path, |p| p.exists()) {
                    match std::fs::create_dir(&d) {
                        Ok(()) => out.made.push(d),
                        // Made by someone else meanwhile: not ours to remove.
                        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                        Err(e) => return Err(Error::Io { context: format!("create {}", d.display()), source: e }),
                    }
                }
                Ok(out)
            }
            Err(e) => Err(Error::Io { context: format!("read {}", path.display()), source: e }),
        }
    }

    /// The snapshot will write these files too.
    fn will_write(&mut self, names: &[&str]) {
        self.files.extend(names.iter().map(|n| n.to_string()));
    }
}

/// The directories to make for `path` (pure, given which exist): each of its ancestors that does
/// not exist, and itself, outermost first.
fn to_make(path: &Path, exists: impl Fn(&Path) -> bool) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = path.ancestors().take_while(|a| !a.as_os_str().is_empty() && !exists(a)).map(Path::to_path_buf).collect();
    v.reverse();
    v
}

impl Drop for OutDir {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        for f in &self.files {
            let _ = std::fs::remove_file(self.path.join(f));
        }
        // Innermost first; one that is not empty holds something of someone else's, and so do
        // those around it.
        for d in self.made.iter().rev() {
            if std::fs::remove_dir(d).is_err() {
                break;
            }
        }
    }
}

/// Boots, snapshots into `out`, and stops the VMM.
pub fn take(o: &Options, out: &Path) -> Result<Taken, Error> {
    let out = absolute(out);
    // First: a directory that is not empty is never written to (refusals below remove what it made).
    let mut dir = OutDir::create(&out)?;
    let host = HostOffer::gather();
    let mut plan = crate::plan::plan(o, &host, crate::plan::next_seq())?;
    if let Some(e) = refusal(&plan, o) {
        return Err(e);
    }
    dir.will_write(manifest::vmm_files(plan.vmm));
    plan.spec.role = Role::Source { memory: out.join("memory"), qmp: plan.run_dir.join("qmp.sock") };
    plan.argv = plan.vmm.argv(&plan.spec).map_err(Error::Usage)?;
    let version = plan.vmm.version_line(&plan.spec.binary).unwrap_or_else(|| "unknown".into());
    for n in &plan.notes {
        progress(o.verbose, n);
    }

    let mut running = launch::start(&plan, o)?;
    let seen = run::watch(&plan, o, &mut running)?;
    let generation = seen.ready.as_ref().map(|r| r.generation).unwrap_or(0);
    progress(o.verbose, &format!("ready; pausing and saving into {}", out.display()));
    let (pause, save) = plan.vmm.save(&mut running, &out, o.timeout)?;
    let report = crate::collect::report(&plan, o, seen, running.finish())?;
    // The VMM is gone: what it saved goes to disk now.
    plan.vmm.saved(&out)?;
    let manifest = manifest(&plan, o, &version, generation, &report, (pause, save))?;
    write_manifest(&out, &manifest)?;
    dir.done = true;
    Ok(Taken { dir: out, manifest, report })
}

fn manifest(
    plan: &Plan,
    o: &Options,
    version: &str,
    generation: u64,
    report: &Report,
    (pause, save): (Duration, Duration),
) -> Result<Manifest, Error> {
    let id = |p: &Path| FileId::of(p).map_err(|e| Error::Failed(format!("snapshot manifest: {e}")));
    let initramfs = match (&plan.spec.initramfs, plan.root_kind) {
        (Some(i), _) => Some(id(i)?),
        (None, RootKind::Initramfs) => Some(id(&plan.root_path)?),
        (None, _) => None,
    };
    let rootfs = if plan.root_kind == RootKind::Initramfs { None } else { Some(id(&plan.root_path)?) };
    Ok(Manifest {
        format: manifest::FORMAT,
        vmm: plan.vmm,
        vmm_binary: plan.spec.binary.clone(),
        vmm_version: version.to_string(),
        accel: plan.accel,
        boot: Boot {
            kernel: id(&plan.spec.kernel)?,
            rootfs,
            initramfs,
            root_mode: if plan.root_kind == RootKind::Pmem { "pmem" } else { "disk" }.into(),
            cpus: o.cpus,
            memory_mib: o.memory_mib,
            cmdline_extra: o.cmdline_extra.clone(),
            init: o.init.clone(),
            layout: if o.layout == Layout::Kuasar { "kuasar" } else { "default" }.into(),
            cmdline: plan.spec.cmdline.clone(),
        },
        devices: Devices {
            mac: plan.tap.as_ref().map(|n| n.mac.clone()),
            ip: plan.guest_ip.map(|ip| ip.to_string()),
            vsock: match plan.spec.vsock {
                Some(Vsock::Kernel { .. }) => "kernel",
                _ => "hybrid",
            }
            .into(),
        },
        generation,
        files: manifest::vmm_files(plan.vmm).iter().map(|f| f.to_string()).collect(),
        created_unix_s: SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
        boot_ready_us: report.phases.as_ref().map(|p| p.total_us).unwrap_or(0),
        pause_us: crate::report::micros(pause),
        save_us: crate::report::micros(save),
    })
}

/// The manifest's name while it is written.
fn manifest_tmp() -> String {
    format!(".{MANIFEST}.tmp")
}

/// Written to a temporary name and renamed: the manifest appears whole, last.
fn write_manifest(out: &Path, m: &Manifest) -> Result<(), Error> {
    let text = serde_json::to_string_pretty(m).map_err(|e| Error::Failed(format!("snapshot manifest: {e}")))?;
    let tmp = out.join(manifest_tmp());
    std::fs::write(&tmp, text + "\n").map_err(Error::io(format!("write {}", tmp.display())))?;
    std::fs::rename(&tmp, out.join(MANIFEST)).map_err(Error::io(format!("rename {}", tmp.display())))
}

/// What `host-probe snapshot` prints after the boot's report.
pub fn text(t: &Taken) -> String {
    let m = &t.manifest;
    let size = |f: &str| {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(t.dir.join(f)).map(|md| (md.len(), md.blocks() * 512)).unwrap_or((0, 0))
    };
    let copies = m.copy_generation().map(|g| format!("copies are generation {g}")).unwrap_or_else(|_| "it has no copies".into());
    let mut o = format!("\nsnapshot {} ({}, generation {}; {copies})\n", t.dir.display(), m.vmm_version, m.generation);
    o.push_str(&format!("  pause {} ms, save {} ms\n", crate::report::ms(m.pause_us), crate::report::ms(m.save_us)));
    for f in m.files.iter().map(String::as_str).chain([MANIFEST]) {
        let (len, used) = size(f);
        o.push_str(&format!("  {f:<16} {:>12} bytes ({:.1} MiB on disk)\n", len, used as f64 / 1048576.0));
    }
    o.push_str(&format!("  restore: host-probe run --restore {}\n", t.dir.display()));
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_directories_that_do_not_exist_are_made_outermost_first() {
        let p = |s: &str| PathBuf::from(s);
        let cases: [(&str, &[&str], &[&str]); 4] = [
            ("/a/b/c", &["/", "/a"], &["/a/b", "/a/b/c"]),
            ("/a/b/c", &["/", "/a", "/a/b"], &["/a/b/c"]),
            ("/a/b/c", &["/", "/a", "/a/b", "/a/b/c"], &[]),
            ("/x", &["/"], &["/x"]),
        ];
        for (path, existing, want) in cases {
            let got = to_make(Path::new(path), |a| existing.iter().any(|e| Path::new(e) == a));
            assert_eq!(got, want.iter().map(|w| p(w)).collect::<Vec<_>>(), "{path} with {existing:?}");
        }
    }

    /// A snapshot that completed keeps everything; one that did not removes its files by name and
    /// the directories it made, never what another process put there.
    #[test]
    fn a_snapshot_removes_what_it_made_unless_it_completed() {
        let tmp = tempfile::tempdir().unwrap();
        let write = |p: PathBuf| std::fs::write(p, b"x").unwrap();
        // Not empty: refused, and nothing in it touched, not even a file of a snapshot's name.
        let full = tmp.path().join("full");
        std::fs::create_dir(&full).unwrap();
        write(full.join(MANIFEST));
        assert_eq!(OutDir::create(&full).err().map(|e| e.exit_code().code()), Some(2));
        assert!(full.join(MANIFEST).exists());
        {
            let mut done = OutDir::create(&tmp.path().join("done/snap")).unwrap();
            done.will_write(manifest::vmm_files(crate::vmm::qemu::VMM));
            write(tmp.path().join("done/snap/state"));
            done.done = true;
        }
        assert!(tmp.path().join("done/snap/state").exists());
        {
            let mut out = OutDir::create(&tmp.path().join("p/q/snap")).unwrap();
            out.will_write(manifest::vmm_files(crate::vmm::cloud_hypervisor::VMM));
            for f in ["state.json", "memory-ranges", ".manifest.json.tmp"] {
                write(tmp.path().join("p/q/snap").join(f));
            }
            write(tmp.path().join("p/theirs"));
        }
        assert!(!tmp.path().join("p/q").exists());
        assert!(tmp.path().join("p/theirs").exists());
    }
}
