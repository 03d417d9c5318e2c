//! ext4 root images: content, reproducibility, --add/--tree/--size, and injection into bases.

mod common;
use common::*;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

fn tools() -> bool {
    have("mkfs.ext4") && have("debugfs") && have("e2fsck")
}

#[test]
fn default_root_has_chinit_init_link_dirs_and_etc() {
    let Some(init) = static_init() else { return };
    if !tools() {
        return;
    }
    let t = TempDir::new("ext4-default");
    let o = build(t.path(), &["--out", "root.ext4", "--init", init.to_str().unwrap()], &[]);
    assert_ok(&o);
    let err = stderr(&o);
    assert!(err.contains("mkfs.ext4"), "progress lines: {err}");
    assert!(err.contains("sha256"), "final line names the hash: {err}");
    let img = t.join("root.ext4");
    // Nothing but the output is left next to it.
    assert_eq!(t.names(), ["root.ext4"]);
    fsck_clean(&img);

    assert_eq!(stat(&img, "/sbin/chinit"), ("regular".into(), "0755".into(), 0, 0));
    assert_eq!(dump(&img, "/sbin/chinit", t.path()), std::fs::read(&init).unwrap());
    let link = debugfs(&img, "stat /init");
    assert!(link.contains("Type: symlink"), "{link}");
    assert!(link.contains("Fast link dest: \"/sbin/chinit\""), "{link}");
    // The kernel's own fallback (no init= on the command line) finds chinit too.
    assert!(debugfs(&img, "stat /sbin/init").contains("Fast link dest: \"chinit\""));
    for (d, mode) in [
        ("/dev", "0755"),
        ("/proc", "0755"),
        ("/sys", "0755"),
        ("/run", "0755"),
        ("/tmp", "01777"),
        ("/etc", "0755"),
        ("/root", "0700"),
        ("/var", "0755"),
    ] {
        assert_eq!(stat(&img, d), ("directory".into(), mode.into(), 0, 0), "{d}");
    }
    assert_eq!(dump(&img, "/etc/hostname", t.path()), b"chinit\n");
    assert!(String::from_utf8(dump(&img, "/etc/passwd", t.path())).unwrap().starts_with("root:x:0:0:"));
    assert!(String::from_utf8(dump(&img, "/etc/group", t.path())).unwrap().starts_with("root:x:0:"));
    assert!(String::from_utf8(dump(&img, "/etc/hosts", t.path())).unwrap().contains("localhost"));
    // Timestamps come from SOURCE_DATE_EPOCH (unset: 0).
    assert!(debugfs(&img, "stat /sbin/chinit").contains("mtime: 0x00000000:00000000"));
    // Default size: the 16 MiB floor region, a whole number of MiB.
    let len = std::fs::metadata(&img).unwrap().len();
    assert!(len >= 16 << 20 && len % (1 << 20) == 0, "{len}");
}

#[test]
fn same_inputs_give_identical_images() {
    let Some(init) = static_init() else { return };
    if !tools() {
        return;
    }
    let t = TempDir::new("ext4-repro");
    let i = init.to_str().unwrap();
    assert_ok(&build(t.path(), &["--out", "a.ext4", "--init", i, "--label", "root"], &[]));
    // A second later: the clock must not leak into the image.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_ok(&build(t.path(), &["--out", "b.ext4", "--init", i, "--label", "root"], &[]));
    assert_eq!(sha256(&t.join("a.ext4")), sha256(&t.join("b.ext4")));

    let epoch = [("SOURCE_DATE_EPOCH", "1700000000")];
    assert_ok(&build(t.path(), &["--out", "c.ext4", "--init", i, "--label", "root"], &epoch));
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_ok(&build(t.path(), &["--out", "d.ext4", "--init", i, "--label", "root"], &epoch));
    assert_eq!(sha256(&t.join("c.ext4")), sha256(&t.join("d.ext4")));
    assert_ne!(sha256(&t.join("a.ext4")), sha256(&t.join("c.ext4")));
    // 1700000000 = 0x6553f100
    let s = debugfs(&t.join("c.ext4"), "stat /sbin/chinit");
    assert!(s.contains("mtime: 0x6553f100"), "{s}");
    assert!(s.contains("ctime: 0x6553f100"), "{s}");
    assert!(debugfs(&t.join("c.ext4"), "stats").contains("Filesystem volume name:   root"));
}

#[test]
fn add_tree_and_size() {
    let Some(init) = static_init() else { return };
    if !tools() {
        return;
    }
    let t = TempDir::new("ext4-add");
    std::fs::write(t.join("app"), b"#!/bin/sh\necho app\n").unwrap();
    std::fs::set_permissions(t.join("app"), std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::create_dir_all(t.join("tree/etc/app")).unwrap();
    std::fs::write(t.join("tree/etc/app/conf"), b"k=v\n").unwrap();
    std::fs::write(t.join("tree/etc/hostname"), b"custom\n").unwrap();
    std::os::unix::fs::symlink("app/conf", t.join("tree/etc/conf-link")).unwrap();
    let o = build(
        t.path(),
        &["--out", "out/r.ext4", "--init", init.to_str().unwrap(), "--add", "app:/usr/bin/app:0750", "--tree", "tree", "--size", "64M"],
        &[],
    );
    // The output directory does not exist yet: refused, nothing created.
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(!t.join("out").exists());

    std::fs::create_dir(t.join("out")).unwrap();
    let o = build(
        t.path(),
        &["--out", "out/r.ext4", "--init", init.to_str().unwrap(), "--add", "app:/usr/bin/app:0750", "--tree", "tree", "--size", "64M"],
        &[],
    );
    assert_ok(&o);
    let img = t.join("out/r.ext4");
    assert_eq!(std::fs::metadata(&img).unwrap().len(), 64 << 20);
    fsck_clean(&img);
    assert_eq!(stat(&img, "/usr/bin/app"), ("regular".into(), "0750".into(), 0, 0));
    assert_eq!(dump(&img, "/usr/bin/app", t.path()), b"#!/bin/sh\necho app\n");
    assert_eq!(dump(&img, "/etc/app/conf", t.path()), b"k=v\n");
    // --tree overrides the default /etc/hostname.
    assert_eq!(dump(&img, "/etc/hostname", t.path()), b"custom\n");
    assert!(debugfs(&img, "stat /etc/conf-link").contains("Fast link dest: \"app/conf\""));
    assert_eq!(stat(&img, "/usr").0, "directory");
}

#[test]
fn too_small_size_is_refused_and_existing_output_kept() {
    let Some(init) = static_init() else { return };
    if !tools() {
        return;
    }
    let t = TempDir::new("ext4-small");
    std::fs::write(t.join("r.ext4"), b"previous image").unwrap();
    let o = build(t.path(), &["--out", "r.ext4", "--init", init.to_str().unwrap(), "--size", "1M"], &[]);
    assert_eq!(o.status.code(), Some(3));
    let e = stderr(&o);
    assert!(e.contains("too small") && e.contains("--size"), "{e}");
    assert_eq!(std::fs::read(t.join("r.ext4")).unwrap(), b"previous image");
    assert_eq!(t.names(), ["r.ext4"]);
}

/// A small "distribution" tree: merged /usr (/sbin → usr/sbin, /bin → /usr/bin absolute),
/// its own /etc/hostname and passwd, and a python stand-in.
fn distro_tree(dir: &std::path::Path) {
    std::fs::create_dir_all(dir.join("usr/sbin")).unwrap();
    std::fs::create_dir_all(dir.join("usr/bin")).unwrap();
    std::fs::create_dir_all(dir.join("etc")).unwrap();
    std::os::unix::fs::symlink("usr/sbin", dir.join("sbin")).unwrap();
    std::os::unix::fs::symlink("/usr/bin", dir.join("bin")).unwrap();
    std::os::unix::fs::symlink("../lib/systemd/systemd", dir.join("usr/sbin/init")).unwrap();
    std::fs::write(dir.join("usr/bin/python3"), b"python stand-in\n").unwrap();
    std::fs::write(dir.join("etc/hostname"), b"debian\n").unwrap();
    std::fs::write(dir.join("etc/passwd"), b"root:x:0:0::/root:/bin/bash\nuser:x:1000:1000::/home/user:/bin/sh\n").unwrap();
}

fn check_injected(img: &std::path::Path, init: &[u8], scratch: &std::path::Path) {
    fsck_clean(img);
    // chinit lands in the real directory behind the /sbin symlink.
    assert_eq!(stat(img, "/usr/sbin/chinit"), ("regular".into(), "0755".into(), 0, 0));
    assert_eq!(dump(img, "/usr/sbin/chinit", scratch), init);
    assert!(debugfs(img, "stat /sbin").contains("Fast link dest: \"usr/sbin\""));
    assert!(debugfs(img, "stat /init").contains("Fast link dest: \"/sbin/chinit\""));
    // The base's files are still there, its own /sbin/init and /etc win over the defaults.
    assert!(debugfs(img, "stat /usr/sbin/init").contains("Fast link dest: \"../lib/systemd/systemd\""));
    assert_eq!(dump(img, "/usr/bin/python3", scratch), b"python stand-in\n");
    assert_eq!(dump(img, "/etc/hostname", scratch), b"debian\n");
    assert!(String::from_utf8(dump(img, "/etc/passwd", scratch)).unwrap().contains("user:x:1000"));
    assert_eq!(stat(img, "/tmp").1, "01777");
}

#[test]
fn inject_into_base_image_leaves_base_untouched() {
    let Some(init) = static_init() else { return };
    if !tools() {
        return;
    }
    let t = TempDir::new("ext4-base-img");
    distro_tree(&t.join("tree"));
    // A deliberately small base (4 MiB): the copy must be grown to take chinit.
    let base = t.join("base.ext4");
    std::fs::File::create(&base).unwrap().set_len(4 << 20).unwrap();
    let o = Command::new("mkfs.ext4").args(["-q", "-d"]).arg(t.join("tree")).arg(&base).output().unwrap();
    assert!(o.status.success());
    let before = sha256(&base);
    let i = init.to_str().unwrap();
    // 3 MiB more than the base has room for.
    std::fs::write(t.join("big"), vec![0x5a; 3 << 20]).unwrap();
    let o = build(t.path(), &["--out", "a.ext4", "--base", "base.ext4", "--init", i, "--label", "injected", "--add", "big:/opt/big"], &[]);
    assert_ok(&o);
    assert!(stderr(&o).contains("resize2fs"), "{}", stderr(&o));
    assert_eq!(sha256(&base), before, "the base image must not change");
    let bytes = std::fs::read(&init).unwrap();
    check_injected(&t.join("a.ext4"), &bytes, t.path());
    assert!(std::fs::metadata(t.join("a.ext4")).unwrap().len() > 4 << 20);
    assert!(debugfs(&t.join("a.ext4"), "stats").contains("Filesystem volume name:   injected"));
    assert_eq!(dump(&t.join("a.ext4"), "/opt/big", t.path()).len(), 3 << 20);

    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_ok(&build(
        t.path(),
        &["--out", "b.ext4", "--base", "base.ext4", "--init", i, "--label", "injected", "--add", "big:/opt/big"],
        &[],
    ));
    assert_eq!(sha256(&t.join("a.ext4")), sha256(&t.join("b.ext4")), "injection is reproducible");
    assert_eq!(sha256(&base), before);

    // Shrinking is refused, and leaves nothing behind.
    let o = build(t.path(), &["--out", "c.ext4", "--base", "base.ext4", "--init", i, "--size", "2M"], &[]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(!t.join("c.ext4").exists());
    assert_eq!(t.names(), ["a.ext4", "b.ext4", "base.ext4", "big", "tree"]);
}

#[test]
fn base_dir_and_tarball_never_write_through_host_symlinks() {
    let Some(init) = static_init() else { return };
    if !tools() || !have("tar") {
        return;
    }
    let t = TempDir::new("ext4-base-dir");
    distro_tree(&t.join("tree"));
    // An absolute symlink in the base must resolve inside the image, not on the host.
    std::fs::create_dir_all(t.join("tree/usr/local")).unwrap();
    std::os::unix::fs::symlink("/usr/local", t.join("tree/opt")).unwrap();
    std::fs::write(t.join("extra"), b"x").unwrap();
    let i = init.to_str().unwrap();
    let o = build(t.path(), &["--out", "d.ext4", "--base", "tree", "--init", i, "--add", "extra:/opt/extra-rb-test"], &[]);
    assert_ok(&o);
    assert!(!std::path::Path::new("/usr/local/extra-rb-test").exists());
    let bytes = std::fs::read(&init).unwrap();
    check_injected(&t.join("d.ext4"), &bytes, t.path());
    assert_eq!(dump(&t.join("d.ext4"), "/usr/local/extra-rb-test", t.path()), b"x");
    // The base directory itself is unchanged.
    assert!(!t.join("tree/usr/sbin/chinit").exists());

    // The same tree as a tarball, with a file owned by 1234:5678 and a file capability
    // (security.capability, as ping has): both survive into the image when building as root.
    std::fs::write(t.join("tree/usr/bin/owned"), b"o").unwrap();
    let o = Command::new("chown").args(["1234:5678"]).arg(t.join("tree/usr/bin/owned")).output().unwrap();
    let chowned = o.status.success();
    let cap: [u8; 20] = [1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]; // cap_net_raw+ep
    let path = std::ffi::CString::new(t.join("tree/usr/bin/owned").to_str().unwrap()).unwrap();
    // SAFETY: valid NUL-terminated strings and a buffer of the given length.
    let capped = unsafe { libc::setxattr(path.as_ptr(), c"security.capability".as_ptr(), cap.as_ptr().cast(), cap.len(), 0) } == 0;
    let o = Command::new("tar")
        .args(["--numeric-owner", "--xattrs", "--xattrs-include=*", "-czf"])
        .arg(t.join("base.tar.gz"))
        .arg("-C")
        .arg(t.join("tree"))
        .arg(".")
        .output()
        .unwrap();
    assert!(o.status.success());
    assert_ok(&build(t.path(), &["--out", "t.ext4", "--base", "base.tar.gz", "--init", i], &[]));
    check_injected(&t.join("t.ext4"), &bytes, t.path());
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if chowned && root {
        let s = stat(&t.join("t.ext4"), "/usr/bin/owned");
        assert_eq!((s.2, s.3), (1234, 5678));
    }
    if capped && root {
        let ea = debugfs(&t.join("t.ext4"), "ea_list /usr/bin/owned");
        assert!(ea.contains("security.capability (20) = 01 00 00 02 00 20"), "{ea}");
    }
}

#[test]
fn unprivileged_user_gets_the_same_root_owned_image() {
    let Some(init) = static_init() else { return };
    // SAFETY: geteuid has no preconditions.
    if !tools() || unsafe { libc::geteuid() } != 0 || !have("setpriv") {
        eprintln!("skip: needs root (to switch to an unprivileged user) and setpriv");
        return;
    }
    let t = TempDir::new("ext4-nobody");
    std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::copy(&init, t.join("init")).unwrap();
    std::fs::set_permissions(t.join("init"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let args = ["--out", "user.ext4", "--init", "init"];
    let o = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", BIN])
        .args(args)
        .current_dir(t.path())
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .unwrap();
    assert_ok(&o);
    let img = t.join("user.ext4");
    assert_eq!(stat(&img, "/sbin/chinit"), ("regular".into(), "0755".into(), 0, 0));
    assert_eq!(stat(&img, "/etc/passwd").2, 0);
    fsck_clean(&img);
    assert_ok(&build(t.path(), &["--out", "root.ext4", "--init", "init"], &[]));
    assert_eq!(sha256(&img), sha256(&t.join("root.ext4")), "same inputs, same image, whoever builds it");
}
