//! VM boots of the guest kernels: the tiny kernel directly (root on virtio-blk ext4, no initrd)
//! and Debian's cloud kernel through an initramfs that loads the virtio modules.
//!
//! QEMU microvm with KVM where the host has usable KVM, TCG otherwise. Kernels come from the
//! rootfs-builder cache: the first run builds the tiny kernel (minutes), later runs hit the cache.
//! Each test skips with one line only when qemu-system-x86_64 (or busybox, for the busybox boot)
//! is missing.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use chinit_tests::vm::{self, TempDir, Vm};
use host_probe::run::Options;

/// Generous: TCG on 2 shared cores, with other tests booting at the same time.
const BOOT_TIMEOUT: Duration = Duration::from_secs(120);

fn qemu_or_skip(test: &str) -> Option<PathBuf> {
    let q = vm::qemu_binary();
    if q.is_none() {
        eprintln!("skipping {test}: qemu-system-x86_64 not found (apt-get install qemu-system-x86)");
    }
    q
}

fn tiny_kernel() -> PathBuf {
    rootfs_builder::kernel::tiny_kernel(rootfs_builder::elf::Arch::X86_64).unwrap_or_else(|e| panic!("tiny kernel: {e}"))
}

/// A bare QEMU boot of `kernel` from the read-only ext4 `image` (`/dev/vda`), `init` as the init,
/// as host-probe plans it (its command line: `console=ttyS0 quiet`, `tsc_early_khz=` under TCG).
fn options(kernel: PathBuf, image: PathBuf, init: &str) -> Options {
    Options { rootfs: Some(image), init: init.into(), ..vm::bare_options(&kernel) }
}

fn write_exec(path: &Path, text: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

/// The PVH entry (what cloud-hypervisor uses) boots, `quiet` keeps the kernel off the console
/// (everything on it comes from init), and the random generator is ready when init starts.
#[test]
fn tiny_kernel_pvh_boots_quietly_to_init() {
    let Some(_qemu) = qemu_or_skip("tiny_kernel_pvh_boots_quietly_to_init") else {
        return;
    };
    let busybox = Path::new("/bin/busybox");
    if !busybox.is_file() {
        eprintln!("skipping tiny_kernel_pvh_boots_quietly_to_init: /bin/busybox not found (apt-get install busybox-static)");
        return;
    }
    let kernel = tiny_kernel();
    let tmp = TempDir::new("vm-pvh").unwrap();
    let root = tmp.path().join("root");
    for d in ["bin", "dev", "proc", "sys"] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    fs::copy(busybox, root.join("bin/busybox")).unwrap();
    write_exec(
        &root.join("sbin/init"),
        "#!/bin/busybox sh\n\
         /bin/busybox mount -t proc proc /proc\n\
         read up idle < /proc/uptime\n\
         echo \"init-marker uptime=$up cpus=$(/bin/busybox nproc) entropy=$(/bin/busybox cat /proc/sys/kernel/random/entropy_avail)\"\n\
         /bin/busybox poweroff -f\n",
    );
    let image = tmp.path().join("root.img");
    vm::ext4_from_dir(&root, &image, 16);

    let mut guest = Vm::start(&options(kernel.join("vmlinux"), image, "/sbin/init")).unwrap();
    let line = guest.wait_for_line("init-marker", BOOT_TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
    assert!(line.contains("cpus=1"), "{line}");
    // The random generator is seeded before init runs (RANDOM_TRUST_CPU): getrandom() never blocks.
    assert!(line.contains("entropy=256"), "{line}");
    assert!(guest.wait_exit(Duration::from_secs(30)).is_some(), "poweroff -f did not end QEMU");
    let console = guest.console();
    // Only the power-off notice (KERN_EMERG, printed after init asked for it) may remain.
    let kernel_lines: Vec<&str> = console
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.contains("init-marker"))
        .filter(|l| !l.starts_with("reboot: Power down"))
        .collect();
    assert!(kernel_lines.is_empty(), "with `quiet` the kernel printed:\n{}", kernel_lines.join("\n"));
}

/// Direct boot of the bzImage, root on /dev/vda (ext4, no initrd), chinit as init.
#[test]
fn tiny_kernel_boots_chinit_from_ext4_root() {
    let Some(_qemu) = qemu_or_skip("tiny_kernel_boots_chinit_from_ext4_root") else {
        return;
    };
    let kernel = tiny_kernel();
    let chinit = vm::chinit_binary();
    let tmp = TempDir::new("vm-tiny").unwrap();
    let root = tmp.path().join("root");
    for d in ["dev", "proc", "sys", "run", "tmp", "sbin"] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    fs::copy(&chinit, root.join("sbin/chinit")).unwrap();
    let image = tmp.path().join("root.img");
    vm::ext4_from_dir(&root, &image, 32);

    let mut guest = Vm::start(&options(kernel.join("bzImage"), image, "/sbin/chinit")).unwrap();
    let line = guest.wait_for_line("chinit: ready in ", BOOT_TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
    let ms = vm::ready_ms(&line).unwrap_or_else(|| panic!("unparsable ready line: {line}"));
    assert!(ms > 0.0, "{line}");
    eprintln!("tiny kernel: {line} (wall {:?})", guest.elapsed());
}

/// Modules of the Debian cloud kernel that a virtio-mmio root disk needs, dependencies first.
const VIRTIO_MODULES: &[&str] = &["virtio", "virtio_ring", "virtio_mmio", "virtio_blk"];

/// Builds the initramfs with `rootfs-builder --initramfs`.
fn initramfs(out: &Path, modules_dir: &Path, chinit: &Path) {
    let builder = vm::cargo_build("rootfs-builder", "rootfs-builder", None, false);
    let mut cmd = Command::new(builder);
    cmd.arg("--initramfs").arg(out).arg("--init").arg(chinit).arg("--modules-from").arg(modules_dir);
    for m in VIRTIO_MODULES {
        cmd.args(["--module", m]);
    }
    vm::run(&mut cmd);
}

/// Debian's cloud kernel with an initramfs holding chinit and the virtio modules: chinit loads
/// them, mounts /dev/vda and switches root.
#[test]
fn debian_cloud_kernel_boots_chinit_through_initramfs() {
    let Some(_qemu) = qemu_or_skip("debian_cloud_kernel_boots_chinit_through_initramfs") else {
        return;
    };
    let (vmlinuz, modules) = rootfs_builder::kernel::distro_kernel("debian-cloud", rootfs_builder::elf::Arch::X86_64)
        .unwrap_or_else(|e| panic!("distro kernel: {e}"));
    let chinit = vm::chinit_binary();
    let tmp = TempDir::new("vm-distro").unwrap();
    let cpio = tmp.path().join("initramfs.cpio");
    initramfs(&cpio, &modules, &chinit);

    // The root the initramfs switches to: chinit again, as /sbin/chinit.
    let root = tmp.path().join("root");
    for d in ["dev", "proc", "sys", "run", "tmp", "sbin"] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    fs::copy(&chinit, root.join("sbin/chinit")).unwrap();
    let image = tmp.path().join("root.img");
    vm::ext4_from_dir(&root, &image, 32);

    // chinit's initramfs mode as host-probe plans it: `rdinit=/init chinit.root=/dev/vda ro`.
    let o = Options { initramfs: Some(cpio), memory_mib: 512, ..options(vmlinuz, image, "/sbin/chinit") };
    let mut guest = Vm::start(&o).unwrap();
    let line = guest.wait_for_line("chinit: ready in ", BOOT_TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
    assert!(vm::ready_ms(&line).is_some(), "{line}");
    let console = guest.console();
    assert!(console.contains("root: "), "chinit did not report switching root:\n{console}");
    eprintln!("debian cloud kernel: {line} (wall {:?})", guest.elapsed());
}

/// `olddefconfig` silently drops an option whose dependencies are off and turns on one that
/// something selects: the build stops, lists both, and leaves no cache entry behind.
#[test]
fn kernel_build_refuses_a_fragment_that_olddefconfig_changes() {
    let source = Path::new("/usr/src/linux-source-6.1.tar.xz");
    if !source.is_file() {
        eprintln!(
            "skipping kernel_build_refuses_a_fragment_that_olddefconfig_changes: {} not found (apt-get install linux-source-6.1)",
            source.display()
        );
        return;
    }
    let builder = vm::cargo_build("rootfs-builder", "rootfs-builder", None, false);
    let tmp = TempDir::new("kernel-frag").unwrap();
    let fragment = tmp.path().join("bad.fragment");
    // VIRTIO_BLK without VIRTIO and BLOCK disappears; ACPI selects PNP on x86; TTY is kept.
    fs::write(&fragment, "CONFIG_VIRTIO_BLK=y\nCONFIG_ACPI=y\n# CONFIG_PNP is not set\nCONFIG_TTY=y\n").unwrap();
    let cache = tmp.path().join("cache");
    let out = Command::new(builder).args(["kernel", "--fragment"]).arg(&fragment).env("CHINIT_CACHE", &cache).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("CONFIG_VIRTIO_BLK=y → absent"), "{stderr}");
    assert!(stderr.contains("# CONFIG_PNP is not set → y"), "{stderr}");
    assert!(!stderr.contains("CONFIG_TTY"), "{stderr}");
    // Nothing that looks like an entry, no work directory; the resulting config is kept for reading.
    let names: Vec<String> =
        fs::read_dir(cache.join("kernels")).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert!(names.iter().all(|n| n == "logs" || n.ends_with(".lock")), "{names:?}");
    let kept = stderr.lines().find_map(|l| l.strip_prefix("resulting config: ")).expect("the error names the resulting config");
    assert!(fs::read_to_string(kept).unwrap().contains("CONFIG_PNP=y"));
}

/// The command line and the library agree on the cache entry, and the entry is complete: both
/// images, the config the fragment produced, and the PVH note cloud-hypervisor needs.
#[test]
fn print_path_names_the_complete_cached_kernel() {
    let dir = tiny_kernel();
    let builder = vm::cargo_build("rootfs-builder", "rootfs-builder", None, false);
    let out = vm::run(Command::new(builder).args(["kernel", "--print-path"]));
    assert_eq!(out.trim_end(), dir.display().to_string());
    for f in ["vmlinux", "bzImage", "config", "build.log", "fragment"] {
        assert!(dir.join(f).is_file(), "{} missing", dir.join(f).display());
    }
    let config = fs::read_to_string(dir.join("config")).unwrap();
    // The fragment's key options, then options no fragment line names, which other options
    // select: leaving out the wrong one breaks a VMM's boot that only the simulated KVM host shows.
    for (line, why) in [
        ("CONFIG_PVH=y", "cloud-hypervisor's and Firecracker's entry"),
        ("CONFIG_VIRTIO_BLK=y", "the root disk"),
        ("CONFIG_EXT4_FS=y", "the root's filesystem"),
        ("# CONFIG_MODULES is not set", "everything built in"),
        ("CONFIG_ND_CLAIM=y", "pmem enables no namespace without it (cloud-hypervisor's --root pmem): keep CONFIG_BTT"),
        ("CONFIG_X86_MPPARSE=y", "StratoVirt describes its CPUs with an MP table only"),
        ("CONFIG_ACPI_BUTTON=y", "the power button of QEMU and cloud-hypervisor"),
        ("CONFIG_VMGENID=y", "Firecracker's copies learn they are copies through it"),
    ] {
        assert!(config.lines().any(|l| l == line), "config lacks {line}: {why}");
    }
    if vm::find_in_path("readelf").is_some() {
        let notes = vm::run(Command::new("readelf").arg("-n").arg(dir.join("vmlinux")));
        assert!(notes.lines().any(|l| l.contains("Xen") && l.contains("0x00000012")), "no PVH note:\n{notes}");
    }
}
