//! Helpers shared by the integration tests: a temp dir, the builder binary, tool wrappers.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const BIN: &str = env!("CARGO_BIN_EXE_rootfs-builder");

/// A new directory under the system temp dir (`tempfile`), removed when dropped.
pub struct TempDir(tempfile::TempDir);

impl TempDir {
    pub fn new(name: &str) -> Self {
        TempDir(tempfile::Builder::new().prefix(&format!("rb-test-{name}-")).tempdir().unwrap())
    }
    pub fn path(&self) -> &Path {
        self.0.path()
    }
    pub fn join(&self, s: &str) -> PathBuf {
        self.path().join(s)
    }
    /// Names in the directory, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> =
            std::fs::read_dir(self.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    }
}

/// A static x86_64 ELF to use as init: the workspace's musl chinit if built, else busybox-static.
pub fn static_init() -> Option<PathBuf> {
    let ws = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut candidates = vec![ws.join("target/x86_64-unknown-linux-musl/release/chinit")];
    if let Ok(t) = std::env::var("CARGO_TARGET_DIR") {
        candidates.insert(0, PathBuf::from(t).join("x86_64-unknown-linux-musl/release/chinit"));
    }
    candidates.push(PathBuf::from("/bin/busybox"));
    let found = candidates.into_iter().find(|p| {
        std::fs::read(p).map(|b| rootfs_builder::elf::check_static(&b, rootfs_builder::elf::Arch::X86_64).is_ok()).unwrap_or(false)
    });
    if found.is_none() {
        eprintln!("skip: no static x86_64 ELF (build chinit for musl or install busybox-static)");
    }
    found
}

/// True when `tool` can be run; prints one skip line when not.
pub fn have(tool: &str) -> bool {
    let ok = Command::new(tool).arg("--help").output().is_ok() || Command::new(tool).arg("-V").output().is_ok();
    if !ok {
        eprintln!("skip: {tool} not installed");
    }
    ok
}

/// Run the builder in `dir` with `args`, quietly unless asked, with SOURCE_DATE_EPOCH unset.
pub fn build(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(BIN);
    c.current_dir(dir).args(args).env_remove("SOURCE_DATE_EPOCH");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn assert_ok(o: &Output) {
    assert!(o.status.success(), "builder failed: {}", stderr(o));
}

/// `debugfs -R REQ IMAGE` stdout.
pub fn debugfs(image: &Path, req: &str) -> String {
    let o = Command::new("debugfs").arg("-R").arg(req).arg(image).output().unwrap();
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Bytes of a file inside an image (`debugfs dump`).
pub fn dump(image: &Path, path: &str, scratch: &Path) -> Vec<u8> {
    let out = scratch.join("dumped");
    let _ = std::fs::remove_file(&out);
    let o = Command::new("debugfs").arg("-R").arg(format!("dump {path} {}", out.display())).arg(image).output().unwrap();
    assert!(o.status.success());
    let b = std::fs::read(&out).unwrap_or_default();
    let _ = std::fs::remove_file(&out);
    b
}

/// (Type, octal Mode, uid, gid) from `debugfs stat`.
pub fn stat(image: &Path, path: &str) -> (String, String, u32, u32) {
    let s = debugfs(image, &format!("stat {path}"));
    let word_after = |key: &str| s.split(key).nth(1).and_then(|r| r.split_whitespace().next()).unwrap_or("").to_string();
    (
        word_after("Type:"),
        word_after("Mode:"),
        word_after("User:").parse().unwrap_or(u32::MAX),
        word_after("Group:").parse().unwrap_or(u32::MAX),
    )
}

pub fn sha256(p: &Path) -> String {
    let o = Command::new("sha256sum").arg(p).output().unwrap();
    String::from_utf8_lossy(&o.stdout).split_whitespace().next().unwrap().to_string()
}

/// `e2fsck -fn` finds no problem.
pub fn fsck_clean(image: &Path) {
    let o = Command::new("e2fsck").arg("-fn").arg(image).output().unwrap();
    assert!(
        o.status.success(),
        "e2fsck -fn {}: {}{}",
        image.display(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}
