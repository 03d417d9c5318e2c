//! Opt-in: boot what rootfs-builder made under QEMU (TCG). Set ROOTFS_BUILDER_VM_KERNEL_PKG to an
//! extracted Debian kernel package (boot/vmlinuz-*, lib/modules/<version>/) to run it; it needs
//! the musl chinit build and qemu-system-x86_64. Plain `cargo test` skips it.

mod common;
use common::*;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn chinit_musl() -> Option<PathBuf> {
    let ws = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let p = ws.join("target/x86_64-unknown-linux-musl/release/chinit");
    p.is_file().then_some(p)
}

#[test]
fn debian_kernel_loads_modules_from_initramfs_and_runs_from_the_ext4_root() {
    let Some(pkg) = std::env::var_os("ROOTFS_BUILDER_VM_KERNEL_PKG").map(PathBuf::from) else {
        eprintln!("skip: set ROOTFS_BUILDER_VM_KERNEL_PKG to an extracted kernel package to boot");
        return;
    };
    let Some(chinit) = chinit_musl() else {
        eprintln!("skip: build chinit first: cargo build --release --target x86_64-unknown-linux-musl -p chinit");
        return;
    };
    if !have("qemu-system-x86_64") {
        return;
    }
    let kernel = std::fs::read_dir(pkg.join("boot"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("vmlinuz"))
        .expect("boot/vmlinuz-* in the package");
    let t = TempDir::new("boot");
    std::fs::write(t.join("hello"), b"#!/bin/sh\necho ROOT-OK-MARK\n").unwrap();
    let c = chinit.to_str().unwrap();
    let o = build(
        t.path(),
        &[
            "--initramfs",
            "initrd.cpio.zst",
            "--init",
            c,
            "--modules-from",
            pkg.to_str().unwrap(),
            "--module",
            "virtio_blk",
            "--module",
            "virtio_pci",
            "--module",
            "ext4",
        ],
        &[],
    );
    assert_ok(&o);
    let o = build(t.path(), &["--out", "root.ext4", "--init", c, "--add", "/bin/busybox:/bin/sh", "--add", "hello:/hello:0755"], &[]);
    assert_ok(&o);

    let mut child = Command::new("qemu-system-x86_64")
        .args(["-accel", "tcg", "-m", "512", "-nographic", "-no-reboot", "-kernel"])
        .arg(&kernel)
        .args(["-initrd", "initrd.cpio.zst", "-drive", "file=root.ext4,if=virtio,format=raw", "-append"])
        .arg("console=ttyS0 panic=-1 root=/dev/vda rootfstype=ext4 chinit.exec=/hello")
        .current_dir(t.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(240);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let log = reader.join().unwrap();
    assert!(status.is_some(), "the guest did not power off in time:\n{log}");
    assert!(log.contains("ROOT-OK-MARK"), "the workload from the ext4 root did not run:\n{log}");
}
