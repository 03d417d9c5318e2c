//! `--profile baseline`: the busybox shell init + Python agent image of docs/benchmarks.md, built
//! from this host's busybox-static and python3, and what it must hold to boot and answer /ready.

mod common;
use common::*;

use std::process::Command;

/// One skip line, written to stderr directly so `cargo test` shows it even while it captures the
/// output of passing tests.
macro_rules! skip_line {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($t)*);
    }};
}

#[test]
fn baseline_image_holds_the_init_script_busybox_python_and_its_modules() {
    if !(have("mkfs.ext4") && have("debugfs") && have("e2fsck")) {
        return;
    }
    for (path, package) in [("/bin/busybox", "busybox-static"), ("/usr/bin/python3", "python3")] {
        if !std::path::Path::new(path).exists() {
            skip_line!("skipped: {path} is missing (apt-get install {package})");
            return;
        }
    }
    let t = TempDir::new("ext4-baseline");
    let o = build(t.path(), &["--out", "baseline.ext4", "--profile", "baseline"], &[]);
    assert_ok(&o);
    let img = t.join("baseline.ext4");
    assert_eq!(t.names(), ["baseline.ext4"], "the work directory (and its copy of the agent) is gone");
    fsck_clean(&img);

    // The init is the committed script, where the kernel looks; the agent beside it; no chinit.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    assert_eq!(stat(&img, "/sbin/init"), ("regular".into(), "0755".into(), 0, 0));
    assert_eq!(dump(&img, "/sbin/init", t.path()), std::fs::read(root.join("baseline/init.sh")).unwrap());
    assert_eq!(dump(&img, "/sbin/agent.py", t.path()), std::fs::read(root.join("baseline/agent.py")).unwrap());
    assert!(!debugfs(&img, "stat /sbin/chinit").contains("Type: regular"));
    assert_eq!(dump(&img, "/bin/busybox", t.path()), std::fs::read("/bin/busybox").unwrap());
    assert!(debugfs(&img, "stat /bin/sh").contains("Fast link dest: \"busybox\""));

    // The interpreter, named as on the host, and python3 pointing at it.
    let real = std::fs::canonicalize("/usr/bin/python3").unwrap();
    let name = real.file_name().unwrap().to_str().unwrap().to_string();
    assert_eq!(dump(&img, &format!("/usr/bin/{name}"), t.path()), std::fs::read(&real).unwrap());
    assert!(debugfs(&img, "stat /usr/bin/python3").contains(&format!("Fast link dest: \"{name}\"")));
    // The shared libraries ldd names, at the paths the loader looks at.
    let ldd = Command::new("ldd").arg(&real).output().unwrap();
    for lib in String::from_utf8_lossy(&ldd.stdout).split_whitespace().filter(|w| w.starts_with('/')) {
        assert!(debugfs(&img, &format!("stat {lib}")).contains("Type: regular"), "{lib} missing");
    }
    // The standard library the agent needs, compiled and without sources; nothing it does not use.
    let lib = format!("/usr/lib/{name}");
    for m in ["os.pyc", "encodings/__init__.pyc", "encodings/utf_8.pyc", "json/__init__.pyc", "http/server.pyc", "socketserver.pyc"] {
        assert!(debugfs(&img, &format!("stat {lib}/{m}")).contains("Type: regular"), "{lib}/{m} missing");
    }
    assert!(!debugfs(&img, &format!("stat {lib}/os.py")).contains("Type: regular"), "sources are not copied");
    assert!(!debugfs(&img, &format!("stat {lib}/tkinter")).contains("Type: directory"));
    let dynload = debugfs(&img, &format!("ls {lib}/lib-dynload"));
    assert!(dynload.contains("_json."), "{dynload}");
}
