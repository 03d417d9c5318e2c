//! initramfs archives: content, compression, reproducibility, kernel modules.

mod common;
use common::*;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use rootfs_builder::cpio::{self, ReadEntry};

fn read_archive(path: &Path) -> Vec<ReadEntry> {
    let raw = std::fs::read(path).unwrap();
    let name = path.to_string_lossy();
    let tool = if name.ends_with(".gz") {
        Some("gzip")
    } else if name.ends_with(".zst") {
        Some("zstd")
    } else {
        None
    };
    let plain = match tool {
        None => raw,
        Some(t) => Command::new(t).args(["-dc"]).arg(path).output().unwrap().stdout,
    };
    let mut v = cpio::read(&plain).unwrap();
    cpio::resolve_links(&mut v);
    v
}

fn find<'a>(v: &'a [ReadEntry], name: &str) -> &'a ReadEntry {
    v.iter().find(|r| r.entry.name == name).unwrap_or_else(|| panic!("{name} not in archive"))
}

#[test]
fn initramfs_content_and_reproducibility() {
    let Some(init) = static_init() else { return };
    let t = TempDir::new("initramfs");
    let i = init.to_str().unwrap();
    let bytes = std::fs::read(&init).unwrap();
    std::fs::write(t.join("extra"), b"extra\n").unwrap();
    let mut hashes = Vec::new();
    for out in ["i.cpio", "i.cpio.gz", "i.cpio.zst"] {
        if out.ends_with(".gz") && !have("gzip") || out.ends_with(".zst") && !have("zstd") {
            continue;
        }
        let o = build(t.path(), &["--initramfs", out, "--init", i, "--add", "extra:/etc/extra:0600"], &[]);
        assert_ok(&o);
        let v = read_archive(&t.join(out));
        let names: Vec<&str> = v.iter().map(|r| r.entry.name.as_str()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted, "entries sorted");
        for d in ["dev", "proc", "sys", "run", "tmp", "newroot"] {
            assert_eq!(find(&v, d).entry.mode & 0o170000, 0o040000, "{d}");
        }
        assert_eq!(find(&v, "tmp").entry.mode, 0o041777);
        let init_e = find(&v, "init");
        assert_eq!(init_e.entry.mode, 0o100755);
        assert_eq!(init_e.entry.data, bytes, "/init is chinit byte for byte");
        assert_eq!(find(&v, "sbin/chinit").entry.data, bytes);
        let console = find(&v, "dev/console");
        assert_eq!((console.entry.mode, console.entry.rdev_major, console.entry.rdev_minor), (0o020600, 5, 1));
        assert_eq!(find(&v, "etc/extra").entry.mode, 0o100600);
        assert_eq!(find(&v, "etc/extra").entry.data, b"extra\n");
        assert!(v.iter().all(|r| r.entry.uid == 0 && r.entry.gid == 0 && r.mtime == 0));
        hashes.push((out, sha256(&t.join(out))));
    }
    // The cpio tool agrees on the listing.
    if have("cpio") {
        let o = Command::new("cpio").args(["-itv", "--quiet"]).stdin(std::fs::File::open(t.join("i.cpio")).unwrap()).output().unwrap();
        let list = String::from_utf8_lossy(&o.stdout);
        assert!(list.lines().any(|l| l.starts_with("crw-------") && l.contains("5,") && l.ends_with("dev/console")), "{list}");
        assert!(list.lines().any(|l| l.starts_with("-rwxr-xr-x") && l.ends_with(" init")), "{list}");
    }
    // A second later, same bytes; another SOURCE_DATE_EPOCH, other bytes and that mtime.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    for (out, h) in &hashes {
        let again = format!("again-{out}");
        assert_ok(&build(t.path(), &["--initramfs", &again, "--init", i, "--add", "extra:/etc/extra:0600"], &[]));
        assert_eq!(&sha256(&t.join(&again)), h, "{out} reproducible");
    }
    assert_ok(&build(t.path(), &["--initramfs", "e.cpio", "--init", i], &[("SOURCE_DATE_EPOCH", "1700000000")]));
    assert!(read_archive(&t.join("e.cpio")).iter().all(|r| r.mtime == 1_700_000_000));
}

/// A fake kernel package: lib/modules/6.1.0-test with modules.dep, .ko in each compression.
fn fake_modules(root: &Path) -> std::path::PathBuf {
    let dir = root.join("pkg/lib/modules/6.1.0-test");
    let k = dir.join("kernel");
    std::fs::create_dir_all(k.join("drivers/virtio")).unwrap();
    std::fs::create_dir_all(k.join("drivers/block")).unwrap();
    std::fs::create_dir_all(k.join("fs/ext4")).unwrap();
    std::fs::create_dir_all(k.join("lib")).unwrap();
    let write_compressed = |rel: &str, payload: &[u8], tool: Option<&str>| {
        let path = dir.join(rel);
        match tool {
            None => std::fs::write(&path, payload).unwrap(),
            Some(t) => {
                let mut c = Command::new(t).arg("-c").stdin(Stdio::piped()).stdout(std::fs::File::create(&path).unwrap()).spawn().unwrap();
                c.stdin.take().unwrap().write_all(payload).unwrap();
                assert!(c.wait().unwrap().success());
            }
        }
    };
    write_compressed("kernel/drivers/virtio/virtio.ko.xz", b"MOD virtio", Some("xz"));
    write_compressed("kernel/drivers/virtio/virtio_ring.ko.zst", b"MOD virtio_ring", Some("zstd"));
    write_compressed("kernel/drivers/block/virtio_blk.ko.gz", b"MOD virtio_blk", Some("gzip"));
    write_compressed("kernel/drivers/virtio/virtio_pci.ko", b"MOD virtio_pci", None);
    write_compressed("kernel/lib/crc16.ko", b"MOD crc16", None);
    write_compressed("kernel/fs/ext4/ext4.ko.xz", b"MOD ext4", Some("xz"));
    std::fs::write(
        dir.join("modules.dep"),
        "kernel/drivers/virtio/virtio.ko.xz:\n\
kernel/drivers/virtio/virtio_ring.ko.zst: kernel/drivers/virtio/virtio.ko.xz\n\
kernel/drivers/block/virtio_blk.ko.gz: kernel/drivers/virtio/virtio_ring.ko.zst kernel/drivers/virtio/virtio.ko.xz\n\
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_ring.ko.zst kernel/drivers/virtio/virtio.ko.xz\n\
kernel/lib/crc16.ko:\n\
kernel/fs/ext4/ext4.ko.xz: kernel/lib/crc16.ko\n",
    )
    .unwrap();
    std::fs::write(dir.join("modules.builtin"), "kernel/drivers/char/virtio_console.ko\n").unwrap();
    dir
}

#[test]
fn modules_with_dependencies_in_load_order() {
    let Some(init) = static_init() else { return };
    if !have("xz") || !have("zstd") || !have("gzip") {
        return;
    }
    let t = TempDir::new("initramfs-modules");
    let dir = fake_modules(t.path());
    let i = init.to_str().unwrap();
    // Both the package root and the module dir itself are accepted.
    for from in [t.join("pkg"), dir.clone()] {
        let o = build(
            t.path(),
            &[
                "--initramfs",
                "m.cpio",
                "--init",
                i,
                "--modules-from",
                from.to_str().unwrap(),
                "--module",
                "virtio-blk",
                "--module",
                "virtio_pci",
                "--module",
                "ext4",
                "--module",
                "virtio_console",
            ],
            &[],
        );
        assert_ok(&o);
        assert!(stderr(&o).contains("virtio_console is built into this kernel"), "{}", stderr(&o));
        let v = read_archive(&t.join("m.cpio"));
        let load = String::from_utf8(find(&v, "etc/chinit/modules.load").entry.data.clone()).unwrap();
        let base = "/lib/modules/6.1.0-test/kernel";
        assert_eq!(
            load.lines().collect::<Vec<_>>(),
            [
                format!("{base}/drivers/virtio/virtio.ko"),
                format!("{base}/drivers/virtio/virtio_ring.ko"),
                format!("{base}/drivers/block/virtio_blk.ko"),
                format!("{base}/drivers/virtio/virtio_pci.ko"),
                format!("{base}/lib/crc16.ko"),
                format!("{base}/fs/ext4/ext4.ko"),
            ]
        );
        // Every listed file is in the archive, decompressed.
        for (line, payload) in load.lines().zip(["virtio", "virtio_ring", "virtio_blk", "virtio_pci", "crc16", "ext4"]) {
            let e = find(&v, line.trim_start_matches('/'));
            assert_eq!(e.entry.data, format!("MOD {payload}").into_bytes(), "{line}");
            assert_eq!(e.entry.mode, 0o100644);
        }
    }
}

#[test]
fn unknown_module_lists_near_matches() {
    let Some(init) = static_init() else { return };
    if !have("xz") || !have("zstd") || !have("gzip") {
        return;
    }
    let t = TempDir::new("initramfs-nomod");
    let dir = fake_modules(t.path());
    let before = t.names();
    let o = build(
        t.path(),
        &["--initramfs", "m.cpio.gz", "--init", init.to_str().unwrap(), "--modules-from", dir.to_str().unwrap(), "--module", "virtio_bl"],
        &[],
    );
    assert_eq!(o.status.code(), Some(3));
    let e = stderr(&o);
    assert!(e.contains("module virtio_bl is not in") && e.contains("did you mean: virtio_blk"), "{e}");
    assert_eq!(t.names(), before);

    let o = build(
        t.path(),
        &["--initramfs", "m.cpio", "--init", init.to_str().unwrap(), "--modules-from", t.path().to_str().unwrap(), "--module", "ext4"],
        &[],
    );
    assert_eq!(o.status.code(), Some(3));
    assert!(stderr(&o).contains("no modules.dep"), "{}", stderr(&o));
    assert_eq!(t.names(), before);
}

#[test]
fn host_modules_if_present() {
    let Some(init) = static_init() else { return };
    let Some(dir) =
        std::fs::read_dir("/lib/modules").ok().and_then(|rd| rd.flatten().map(|e| e.path()).find(|p| p.join("modules.dep").is_file()))
    else {
        eprintln!("skip: no /lib/modules/<version>/modules.dep on this host");
        return;
    };
    let dep = std::fs::read_to_string(dir.join("modules.dep")).unwrap();
    let Some(name) = ["virtio_blk", "ext4", "loop"]
        .into_iter()
        .find(|n| dep.lines().any(|l| rootfs_builder::modules::name_of(l.split(':').next().unwrap()) == *n))
    else {
        eprintln!("skip: no well-known module in {}", dir.display());
        return;
    };
    let t = TempDir::new("initramfs-host");
    let o = build(
        t.path(),
        &["--initramfs", "h.cpio", "--init", init.to_str().unwrap(), "--modules-from", dir.to_str().unwrap(), "--module", name],
        &[],
    );
    assert_ok(&o);
    let v = read_archive(&t.join("h.cpio"));
    let load = String::from_utf8(find(&v, "etc/chinit/modules.load").entry.data.clone()).unwrap();
    assert!(load.lines().last().unwrap().ends_with(&format!("/{name}.ko")), "{load}");
    for l in load.lines() {
        assert!(find(&v, l.trim_start_matches('/')).entry.data.starts_with(b"\x7fELF"), "{l} is a plain ELF module");
    }
}
