//! Every bad input gives its error, its exit code, and leaves no file behind.

mod common;
use common::*;

use std::process::Command;

/// An ELF64 header for `machine` with one program header of type `ptype`.
fn crafted_elf(machine: u16, ptype: u32) -> Vec<u8> {
    let mut b = vec![0u8; 64 + 56];
    b[..4].copy_from_slice(b"\x7fELF");
    b[4] = 2;
    b[5] = 1;
    b[6] = 1;
    b[16..18].copy_from_slice(&2u16.to_le_bytes());
    b[18..20].copy_from_slice(&machine.to_le_bytes());
    b[32..40].copy_from_slice(&64u64.to_le_bytes());
    b[54..56].copy_from_slice(&56u16.to_le_bytes());
    b[56..58].copy_from_slice(&1u16.to_le_bytes());
    b[64..68].copy_from_slice(&ptype.to_le_bytes());
    b
}

const BUILD_HINT: &str = "cargo build --release --target x86_64-unknown-linux-musl -p chinit";

fn refused(t: &TempDir, args: &[&str], code: i32, needles: &[&str]) {
    let before = t.names();
    let o = build(t.path(), args, &[]);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(code), "{args:?}: {e}");
    for n in needles {
        assert!(e.contains(n), "{args:?}: {e:?} should mention {n:?}");
    }
    // Printed once: a single error line.
    assert_eq!(e.lines().filter(|l| l.starts_with("rootfs-builder: ") && !l.ends_with('…')).count(), 1, "{e}");
    assert_eq!(t.names(), before, "{args:?} left files behind");
}

#[test]
fn bad_inits_are_refused_with_the_build_command() {
    let t = TempDir::new("bad-init");
    std::fs::write(t.join("aarch64-elf"), crafted_elf(183, 1)).unwrap();
    std::fs::write(t.join("dynamic-elf"), crafted_elf(62, 3)).unwrap();
    std::fs::write(t.join("empty"), b"").unwrap();
    std::fs::write(t.join("script"), b"#!/bin/sh\nexec /bin/sh\n").unwrap();
    for out in [&["--out", "r.ext4"][..], &["--initramfs", "i.cpio"]] {
        fn with<'a>(out: &[&'a str], init: &'a str) -> Vec<&'a str> {
            [out, &["--init", init]].concat()
        }
        refused(&t, &with(out, "aarch64-elf"), 3, &["built for aarch64, not x86_64", BUILD_HINT]);
        refused(&t, &with(out, "dynamic-elf"), 3, &["dynamically linked", BUILD_HINT]);
        refused(&t, &with(out, "empty"), 3, &["empty", BUILD_HINT]);
        refused(&t, &with(out, "script"), 3, &["not an ELF", BUILD_HINT]);
        refused(&t, &with(out, "missing"), 3, &["missing", "--init"]);
        if std::path::Path::new("/bin/ls").exists() {
            refused(&t, &with(out, "/bin/ls"), 3, &["dynamically linked", BUILD_HINT]);
        }
    }
    // The target architecture decides: an x86_64 init is refused for aarch64.
    if let Some(init) = static_init() {
        refused(
            &t,
            &["--out", "r.ext4", "--arch", "aarch64", "--init", init.to_str().unwrap()],
            3,
            &["built for x86_64, not aarch64", "aarch64-unknown-linux-musl"],
        );
    }
}

#[test]
fn missing_default_init_says_how_to_build_it() {
    let t = TempDir::new("no-default-init");
    let o = Command::new(BIN)
        .current_dir(t.path())
        .args(["--out", "r.ext4"])
        .env("CARGO_TARGET_DIR", t.join("no-such-target"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3));
    let e = stderr(&o);
    assert!(e.contains(BUILD_HINT), "{e}");
    assert!(e.contains("no-such-target/x86_64-unknown-linux-musl/release/chinit"), "{e}");
    assert!(t.names().is_empty());
}

#[test]
fn bad_sources_sizes_and_outputs() {
    let Some(init) = static_init() else { return };
    let i = init.to_str().unwrap();
    let t = TempDir::new("bad-misc");
    refused(&t, &["--out", "r.ext4", "--init", i, "--add", "/nonexistent/file:/x"], 3, &["/nonexistent/file", "--add"]);
    refused(&t, &["--out", "r.ext4", "--init", i, "--tree", "/nonexistent/dir"], 3, &["/nonexistent/dir", "--tree"]);
    refused(&t, &["--out", "r.ext4", "--init", i, "--base", "/nonexistent/base"], 3, &["--base"]);
    std::fs::write(t.join("junk"), vec![0x55u8; 4096]).unwrap();
    refused(&t, &["--out", "r.ext4", "--init", i, "--base", "junk"], 3, &["not a directory, an ext4 image or a tar archive"]);
    refused(&t, &["--out", "r.ext4", "--init", i, "--size", "2M"], 3, &["too small"]);
    refused(&t, &["--out", "r.ext4", "--init", i, "--label", "a-label-that-is-too-long"], 3, &["16 bytes"]);
    refused(&t, &["--initramfs", "i.tar", "--init", i], 3, &[".cpio.gz"]);
    refused(&t, &["--out", "no/such/dir/r.ext4", "--init", i], 4, &["no/such/dir", "writable"]);
    // Usage errors are clap's, exit 2.
    let o = build(t.path(), &["--out", "r.ext4", "--size", "lots"], &[]);
    assert_eq!(o.status.code(), Some(2));
    let o = build(t.path(), &["--initramfs", "i.cpio", "--module", "virtio_blk"], &[]);
    assert_eq!(o.status.code(), Some(2));
    let o = build(t.path(), &["--help"], &[]);
    assert_eq!(o.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&o.stdout).contains("--initramfs"));
    let junk = t.names();
    assert_eq!(junk, ["junk"]);
}

#[test]
fn read_only_output_directory() {
    let Some(init) = static_init() else { return };
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 || !have("unshare") {
        eprintln!("skip: needs root and unshare for a read-only mount");
        return;
    }
    let t = TempDir::new("ro-out");
    std::fs::create_dir(t.join("ro")).unwrap();
    // A read-only tmpfs in a private mount namespace: root cannot write there either.
    let script = format!(
        "mount -t tmpfs -o ro none {ro} && {bin} --out {ro}/r.ext4 --init {init}; echo \"rc=$?\"; ls -A {ro}",
        ro = t.join("ro").display(),
        bin = BIN,
        init = init.display()
    );
    let o = Command::new("unshare").args(["-m", "--propagation", "private", "sh", "-c", &script]).output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(out.contains("rc=4"), "{out} {err}");
    assert!(err.contains("writable"), "{err}");
    assert_eq!(out.trim(), "rc=4", "nothing written: {out}");
}

/// Pids of the children of `pid`.
fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

#[test]
fn interrupt_stops_the_tool_and_removes_temporary_files() {
    let Some(init) = static_init() else { return };
    if !have("tar") {
        return;
    }
    let t = TempDir::new("sigint");
    // A FIFO as --base is a tar stream: tar blocks reading it, inside the build.
    let fifo = t.join("base.fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    for (sig, code) in [(libc::SIGINT, 130), (libc::SIGTERM, 143)] {
        let child = Command::new(BIN)
            .current_dir(t.path())
            .args(["--out", "r.ext4", "--init", init.to_str().unwrap(), "--base", "base.fifo"])
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Wait until tar runs (the work directory exists by then).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let tar = loop {
            if let Some(&p) = children(child.id()).first() {
                break p;
            }
            assert!(std::time::Instant::now() < deadline, "tar never started");
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        assert_eq!(t.names().len(), 2, "{:?}", t.names());
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(child.id() as i32, sig) };
        let o = child.wait_with_output().unwrap();
        assert_eq!(o.status.code(), Some(code), "{}", stderr(&o));
        let e = stderr(&o);
        assert!(e.contains("interrupted"), "{e}");
        assert!(!e.contains("tar failed"), "the killed tool's failure is not reported: {e}");
        assert_eq!(t.names(), ["base.fifo"]);
        // The tool was stopped too: gone, or a zombie waiting to be reaped by its new parent.
        let stat = std::fs::read_to_string(format!("/proc/{tar}/stat")).unwrap_or_default();
        let state = stat.rsplit_once(')').and_then(|(_, r)| r.split_whitespace().next()).unwrap_or("gone");
        assert!(matches!(state, "gone" | "Z" | "X"), "tar still {state}");
    }
}
