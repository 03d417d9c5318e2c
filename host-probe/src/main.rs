use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use host_probe::error::{Error, ExitCode as Exit};
use host_probe::run::{self, Options, RootMode, VmmChoice, Wait};
use host_probe::shootout::{self, Selection};
use host_probe::{bench, check, report};

/// Launch a microVM with chinit, measure every boot phase, report it.
#[derive(Parser)]
#[command(name = "host-probe", version, about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Args, Clone)]
struct BootArgs {
    #[arg(long, value_name = "VMM", default_value = "auto", help = Selection::help(), value_parser = Selection::parse)]
    vmm: Selection,
    /// Kernel (bzImage for QEMU, PVH vmlinux for cloud-hypervisor); default: the newest in the kernel cache.
    #[arg(long)]
    kernel: Option<PathBuf>,
    /// ext4 root image, attached read-only; default: ./rootfs_fast.ext4 (unless --initramfs alone).
    #[arg(long)]
    rootfs: Option<PathBuf>,
    /// cpio initramfs with chinit as /init: alone it is the whole root; with --rootfs chinit starts
    /// from it and switches to the root image (chinit's initramfs mode).
    #[arg(long)]
    initramfs: Option<PathBuf>,
    /// How the root image is attached.
    #[arg(long, value_enum, default_value = "disk")]
    root: RootMode,
    #[arg(long, default_value_t = 1)]
    cpus: u32,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 256)]
    memory: u32,
    /// Appended to the kernel command line.
    #[arg(long, default_value = "")]
    cmdline_extra: String,
    /// The init the kernel starts from the root image. `/sbin/init` boots whatever the image has
    /// there: chinit in rootfs-builder's images, the shell init in the baseline image.
    #[arg(long, default_value = host_probe::cmdline::DEFAULT_INIT)]
    init: String,
    /// Seconds to wait for the guest before giving up (exit code 4); a guest with a workload: for
    /// the workload to exit too.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
    /// No vsock device (no notify, /ready over TAP only).
    #[arg(long)]
    no_vsock: bool,
    /// No network device (then vsock is the only way in).
    #[arg(long)]
    no_net: bool,
    /// Do not talk to chinit: wait until the guest powers off, report marks and VMM events only.
    #[arg(long)]
    no_agent: bool,
    /// The guest's layout: `kuasar` is the one Kuasar gives cloud-hypervisor guests (root on partition
    /// 1 of a read-only pmem device, built with `rootfs-builder --gpt`; console=hvc0; virtio-rng).
    #[arg(long, value_enum, default_value = "default")]
    layout: host_probe::options::Layout,
    #[arg(long, value_name = "DIR[:TAG]", help = host_probe::options::Share::SYNTAX, value_parser = host_probe::options::Share::parse)]
    share: Option<host_probe::options::Share>,
    /// The guest's architecture; default: the kernel's (from its header), else this host's.
    /// aarch64 boots QEMU `virt` (emulated on an x86_64 host).
    #[arg(long, value_enum)]
    arch: Option<host_probe::options::Arch>,
    /// Split the kernel's boot (phase 1) by initcall: boots with `initcall_debug`, reads the
    /// kernel's log from chinit over vsock once ready (never from the console).
    #[arg(long)]
    kernel_profile: bool,
}

#[derive(Subcommand)]
enum Cmd {
    /// Boot one microVM and print where every millisecond went.
    ///
    /// A guest with a workload (`chinit.exec=`, or a container image's /etc/chinit/workload.json)
    /// runs until it exits: its console on stderr from its start, and host-probe's exit code is the
    /// workload's.
    Run {
        #[command(flatten)]
        boot: BootArgs,
        /// Print the report as JSON (schema in docs/host-probe.md).
        #[arg(long)]
        json: bool,
        /// Write an SVG waterfall of the boot.
        #[arg(long)]
        timeline: Option<PathBuf>,
        /// Print the commands (TAP, vhost-device-vsock, VMM) and exit.
        #[arg(long)]
        dry_run: bool,
        /// Keep the run directory (serial log, VMM log, events).
        #[arg(long)]
        keep: bool,
        /// Progress on stderr.
        #[arg(short, long)]
        verbose: bool,
        /// Restore copies of the snapshot in DIR (`host-probe snapshot --out DIR`) instead of
        /// booting: the VM, kernel and image are the snapshot's.
        #[arg(long, value_name = "DIR")]
        restore: Option<PathBuf>,
        /// With --restore: this many copies at once, each made unique.
        #[arg(long, default_value_t = 1, requires = "restore")]
        clones: usize,
        /// With --restore of a cloud-hypervisor snapshot: read the memory whole first (copy), or
        /// fill pages as the guest touches them (ondemand, userfaultfd).
        #[arg(long, value_enum, requires = "restore")]
        memory_restore_mode: Option<host_probe::vmm::MemoryRestoreMode>,
    },
    /// Boot to ready, pause, and save the VM into a new directory (with a manifest) that `run
    /// --restore` and `bench --restore` restore.
    Snapshot {
        #[command(flatten)]
        boot: BootArgs,
        /// The snapshot directory: new, or empty.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Print the snapshotted machine's boot report as JSON.
        #[arg(long)]
        json: bool,
        #[arg(short, long)]
        verbose: bool,
    },
    /// Boot N times (interleaved A/B when comparing) and print per-phase statistics.
    Bench {
        #[command(flatten)]
        boot: BootArgs,
        /// Measured boots per side.
        #[arg(short = 'n', long, default_value_t = 10)]
        n: usize,
        /// Unmeasured boots per side first.
        #[arg(long, default_value_t = 1)]
        warmup: usize,
        /// B side: another root image.
        #[arg(long, conflicts_with = "compare_kernel")]
        compare: Option<PathBuf>,
        /// B side: another kernel.
        #[arg(long)]
        compare_kernel: Option<PathBuf>,
        /// B side: the same boots with EXTRA appended to the kernel command line (a boot option
        /// measured side by side, e.g. `no_timer_check`).
        #[arg(long, value_name = "EXTRA", conflicts_with_all = ["compare", "compare_kernel"])]
        compare_cmdline: Option<String>,
        /// Cold boots of the snapshot's machine (A) against restores of a copy of the snapshot in
        /// DIR (B), interleaved.
        #[arg(long, value_name = "DIR", conflicts_with_all = ["compare", "compare_kernel", "compare_cmdline"])]
        restore: Option<PathBuf>,
        /// With --restore of a cloud-hypervisor snapshot: copy or ondemand.
        #[arg(long, value_enum, requires = "restore")]
        memory_restore_mode: Option<host_probe::vmm::MemoryRestoreMode>,
        /// Start N VMs at once (cold boots): phases across the N, failures, memory per VM.
        #[arg(long, value_name = "N", conflicts_with_all = ["compare", "compare_kernel", "compare_cmdline", "restore"])]
        parallel: Option<usize>,
        /// With --restore: restore N copies at once, each made unique: the same figures, and how
        /// much memory the copies share.
        #[arg(long, value_name = "N", requires = "restore")]
        clones: Option<usize>,
        #[arg(long)]
        json: bool,
        /// With --vmm a list (or all): write the shoot-out's chart (phases stacked per VMM, memory
        /// beside) to FILE.
        #[arg(long, value_name = "FILE")]
        svg: Option<PathBuf>,
    },
    /// What this host has and lacks to boot and measure, each with its fix.
    Check,
}

/// The boot options; `--vmm` a list (a shoot-out's) is refused here, `bench` takes it before.
fn options(b: &BootArgs) -> Result<Options, Error> {
    Ok(Options {
        vmm: b.vmm.one()?,
        kernel: b.kernel.clone(),
        rootfs: b.rootfs.clone(),
        initramfs: b.initramfs.clone(),
        root_mode: b.root,
        cpus: b.cpus,
        memory_mib: b.memory,
        cmdline_extra: b.cmdline_extra.clone(),
        init: b.init.clone(),
        timeout: Duration::from_secs(b.timeout),
        keep: false,
        wait: if b.no_agent { Wait::Exit } else { Wait::Agent },
        net: !b.no_net,
        vsock: !b.no_vsock,
        verbose: false,
        layout: b.layout,
        share: b.share.clone(),
        arch: b.arch,
        kernel_profile: b.kernel_profile,
    })
}

/// `--restore` takes the machine from the snapshot: boot options other than `--timeout` would be
/// ignored, so they are refused.
fn only_restore_options(b: &BootArgs) -> Result<(), Error> {
    let given = options(b)?;
    let d = Options::default();
    let differs = [
        ("--vmm", given.vmm != VmmChoice::Auto),
        ("--kernel", given.kernel.is_some()),
        ("--rootfs", given.rootfs.is_some()),
        ("--initramfs", given.initramfs.is_some()),
        ("--root", given.root_mode != d.root_mode),
        ("--cpus", given.cpus != d.cpus),
        ("--memory", given.memory_mib != d.memory_mib),
        ("--cmdline-extra", !given.cmdline_extra.is_empty()),
        ("--init", given.init != d.init),
        ("--no-vsock", !given.vsock),
        ("--no-net", !given.net),
        ("--no-agent", given.wait != d.wait),
        ("--layout", given.layout != d.layout),
        ("--share", given.share.is_some()),
        ("--arch", given.arch.is_some()),
        ("--kernel-profile", given.kernel_profile),
    ];
    let named: Vec<&str> = differs.iter().filter(|(_, d)| *d).map(|(n, _)| *n).collect();
    if named.is_empty() {
        Ok(())
    } else {
        Err(Error::Usage(format!("--restore takes the VM, kernel, image and devices from the snapshot: drop {}", named.join(", "))))
    }
}

/// `out.svg` → `out-2.svg`.
fn numbered(path: &std::path::Path, n: usize) -> PathBuf {
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let name = match path.extension() {
        Some(ext) => format!("{stem}-{n}.{}", ext.to_string_lossy()),
        None => format!("{stem}-{n}"),
    };
    path.with_file_name(name)
}

fn main_exec(cli: Cli) -> Result<Exit, Error> {
    match cli.cmd {
        Cmd::Check => {
            let facts = check::gather();
            print!("{}", check::render(&check::lines(&facts)));
            Ok(if check::can_boot(&facts) { Exit::Ok } else { Exit::Missing })
        }
        Cmd::Snapshot { boot, out, json, verbose } => {
            let o = Options { verbose, ..options(&boot)? };
            let taken = host_probe::snapshot::take(&o, &out)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&taken.report).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}")));
            } else {
                print!("{}", report::text(&taken.report));
                print!("{}", host_probe::snapshot::take::text(&taken));
            }
            Ok(Exit::Ok)
        }
        Cmd::Run { boot, json, timeline, dry_run, keep, verbose, restore: Some(dir), clones, memory_restore_mode } => {
            only_restore_options(&boot)?;
            let o = Options { keep, verbose, timeout: Duration::from_secs(boot.timeout), ..Options::default() };
            let ro = host_probe::snapshot::RestoreOptions { dir, clones, mode: memory_restore_mode };
            let prep = host_probe::snapshot::restore::prepare(&ro, &o, &run::HostOffer::gather())?;
            if dry_run {
                for p in &prep.plans {
                    print!("{}", run::dry_run_text(p));
                }
                return Ok(Exit::Ok);
            }
            let results = host_probe::snapshot::restore::all(&prep, &prep.options);
            let mut reports = Vec::new();
            let mut failed = None;
            for (i, r) in results.into_iter().enumerate() {
                match r {
                    Ok(r) => reports.push(r),
                    Err(e) => {
                        eprintln!("host-probe: copy {}: {e}", i + 1);
                        failed.get_or_insert(e.exit_code());
                    }
                }
            }
            if json {
                let text = if clones == 1 && reports.len() == 1 {
                    serde_json::to_string_pretty(&reports[0])
                } else {
                    serde_json::to_string_pretty(&reports)
                };
                println!("{}", text.unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}")));
            } else {
                for (i, r) in reports.iter().enumerate() {
                    if reports.len() > 1 {
                        println!("copy {} of {}", i + 1, reports.len());
                    }
                    print!("{}", report::text(r));
                }
            }
            if let Some(path) = timeline {
                for (i, r) in reports.iter().enumerate() {
                    let path = if reports.len() > 1 { numbered(&path, i + 1) } else { path.clone() };
                    std::fs::write(&path, report::svg(r)).map_err(Error::io(format!("write {}", path.display())))?;
                }
            }
            Ok(failed.unwrap_or(Exit::Ok))
        }
        Cmd::Run { boot, json, timeline, dry_run, keep, verbose, .. } => {
            // A guest with a workload runs until it exits (`--no-agent`: until it powers off).
            let o = Options { keep, verbose, ..options(&boot)? };
            let o = Options { wait: if o.wait == Wait::Agent { Wait::Workload } else { o.wait }, ..o };
            let plan = run::plan(&o, &run::HostOffer::gather(), run::next_seq())?;
            if dry_run {
                print!("{}", run::dry_run_text(&plan));
                return Ok(Exit::Ok);
            }
            let r = run::execute_noted(&plan, &o)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}")));
            } else {
                print!("{}", report::text(&r));
            }
            if let Some(path) = timeline {
                std::fs::write(&path, report::svg(&r)).map_err(Error::io(format!("write {}", path.display())))?;
            }
            // A run that waited for the guest's workload ends as the workload did.
            let waited = plan.wait(&o) == Wait::Workload;
            Ok(r.workload.as_ref().and_then(Exit::of_workload).filter(|_| waited).unwrap_or(Exit::Ok))
        }
        Cmd::Bench {
            boot,
            n,
            warmup,
            compare,
            compare_kernel,
            compare_cmdline,
            restore,
            memory_restore_mode,
            parallel,
            clones,
            json,
            svg,
        } if matches!(boot.vmm, Selection::Many(_)) => {
            let Selection::Many(vmms) = boot.vmm.clone() else {
                return Err(Error::Usage("--vmm: a shoot-out needs a list of VMMs".into()));
            };
            let given = [
                ("--compare", compare.is_some()),
                ("--compare-kernel", compare_kernel.is_some()),
                ("--compare-cmdline", compare_cmdline.is_some()),
                ("--parallel", parallel.is_some()),
                ("--memory-restore-mode", memory_restore_mode.is_some()),
            ];
            if let Some((name, _)) = given.iter().find(|(_, g)| *g) {
                return Err(Error::Usage(format!("{name} compares one VMM's runs: with --vmm a list (a shoot-out) drop it")));
            }
            let base = options(&BootArgs { vmm: Selection::One(VmmChoice::Auto), ..boot })?;
            let asked = shootout::Asked { base, vmms, n, warmup, snapshots: restore, clones };
            let (result, failure) = shootout::run(&asked, &mut bench::stderr_progress)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&result).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}")));
            } else {
                print!("{}", shootout::text(&result));
            }
            if let Some(path) = svg {
                std::fs::write(&path, shootout::svg(&result)).map_err(Error::io(format!("write {}", path.display())))?;
            }
            if let Some(e) = failure {
                eprintln!("host-probe: {e}");
                return Ok(e.exit_code());
            }
            let measured = result.vmms.iter().any(|v| v.status == shootout::Status::Measured);
            Ok(if measured { Exit::Ok } else { Exit::Missing })
        }
        Cmd::Bench { svg: Some(_), .. } => Err(Error::Usage("--svg draws a shoot-out: pass --vmm a list of VMMs, or all".into())),
        Cmd::Bench { boot, parallel, clones, restore, memory_restore_mode, json, .. } if parallel.is_some() || clones.is_some() => {
            let d = match (parallel, clones, restore) {
                (Some(n), _, _) => host_probe::density::parallel(&options(&boot)?, n)?,
                (None, Some(n), Some(dir)) => {
                    only_restore_options(&boot)?;
                    let base = Options { timeout: Duration::from_secs(boot.timeout), ..Options::default() };
                    host_probe::density::clones(&host_probe::snapshot::RestoreOptions { dir, clones: n, mode: memory_restore_mode }, &base)?
                }
                _ => return Err(Error::Usage("--clones needs --restore DIR".into())),
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&d).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}")));
            } else {
                print!("{}", host_probe::density::text(&d));
            }
            Ok(if d.failures.is_empty() { Exit::Ok } else { Exit::BootFailed })
        }
        Cmd::Bench { boot, n, warmup, compare, compare_kernel, compare_cmdline, restore, memory_restore_mode, json, .. } => {
            let mut a = options(&boot)?;
            let b = match (compare, compare_kernel) {
                (Some(r), _) => Some(Options { rootfs: Some(r), initramfs: None, ..a.clone() }),
                (None, Some(k)) => Some(Options { kernel: Some(k), ..a.clone() }),
                (None, None) if compare_cmdline.is_some() => {
                    let extra = compare_cmdline.unwrap_or_default();
                    Some(Options { cmdline_extra: format!("{} {extra}", a.cmdline_extra).trim().to_string(), ..a.clone() })
                }
                // The profile's own cost: the same boots without it (A) and with it (B).
                (None, None) if a.kernel_profile => {
                    a.kernel_profile = false;
                    Some(Options { kernel_profile: true, ..a.clone() })
                }
                (None, None) => None,
            };
            let result = match restore {
                Some(dir) => {
                    only_restore_options(&boot)?;
                    let base = Options { timeout: Duration::from_secs(boot.timeout), ..Options::default() };
                    let ro = host_probe::snapshot::RestoreOptions { dir, clones: 1, mode: memory_restore_mode };
                    bench::bench_restore(&ro, &base, n, warmup, &mut bench::stderr_progress)?
                }
                None => bench::bench(&a, b.as_ref(), n, warmup, &mut bench::stderr_progress)?,
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&result).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}")));
            } else {
                print!("{}", bench::text(&result));
            }
            Ok(Exit::Ok)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    host_probe::signals::install();
    let code = match main_exec(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("host-probe: {e}");
            e.exit_code()
        }
    };
    ExitCode::from(u8::try_from(code.code()).unwrap_or(1))
}
