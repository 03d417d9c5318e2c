//! The kernel cache outside the clone.
//!
//! Layout under the cache root (`$CHINIT_CACHE`, else `$XDG_CACHE_HOME/chinit`, else
//! `$HOME/.cache/chinit`):
//! - `kernels/<arch>-<version>-<key>/{vmlinux,bzImage,config,build.log}`: complete entries only;
//! - `kernels/.build-<name>.<pid>/`: a build in progress (source, objects, staged files), renamed
//!   into place when complete, removed on failure or by the next run when its process is gone;
//! - `kernels/<name>.lock`: held while one process builds or checks an entry;
//! - `kernels/logs/<name>.log`: the log of the last failed build;
//! - `sources/<id>.version`: the kernel version of a tarball, so a cache hit needs no extraction;
//! - `distro/<package>_<version>/`: unpacked distro kernel packages.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

/// The cache root from the environment values (pure: callers pass `std::env::var_os` results).
pub fn root_from(chinit_cache: Option<&str>, xdg_cache_home: Option<&str>, home: Option<&str>) -> Option<PathBuf> {
    if let Some(c) = chinit_cache.filter(|s| !s.is_empty()) {
        return Some(PathBuf::from(c));
    }
    // The XDG spec says a relative XDG_CACHE_HOME is invalid and must be ignored.
    if let Some(x) = xdg_cache_home.filter(|x| x.starts_with('/')) {
        return Some(Path::new(x).join("chinit"));
    }
    home.filter(|s| !s.is_empty()).map(|h| Path::new(h).join(".cache").join("chinit"))
}

/// The cache root of this process.
pub fn root() -> Option<PathBuf> {
    let var = |k: &str| std::env::var(k).ok();
    root_from(var("CHINIT_CACHE").as_deref(), var("XDG_CACHE_HOME").as_deref(), var("HOME").as_deref())
}

/// The cache keys' hash ([`crate::hash::parts`]).
pub fn fnv1a64(parts: &[&[u8]]) -> u64 {
    crate::hash::parts(parts)
}

/// The directory name of a kernel entry: `<arch>-<version>-<12 hex digits>`, where the digits
/// hash the fragment text and anything else that changes the result (`extra`).
pub fn entry_name(arch: &str, version: &str, fragment: &str, extra: &[&[u8]]) -> String {
    let mut parts: Vec<&[u8]> = vec![arch.as_bytes(), version.as_bytes(), fragment.as_bytes()];
    parts.extend_from_slice(extra);
    let h = fnv1a64(&parts);
    format!("{arch}-{version}-{:012x}", h >> 16)
}

/// True when `dir` holds every file of a complete entry.
pub fn is_complete(dir: &Path, files: &[&str]) -> bool {
    files.iter().all(|f| dir.join(f).is_file())
}

/// The pid in a work directory name `.build-<name>.<pid>`, if it is one.
pub fn work_dir_pid(file_name: &str) -> Option<u32> {
    let rest = file_name.strip_prefix(".build-")?;
    let (_, pid) = rest.rsplit_once('.')?;
    pid.parse().ok()
}

/// Work directories left by processes that no longer run (killed, crashed, Ctrl-C).
pub fn stale_work_dirs(dir: &Path, alive: impl Fn(u32) -> bool) -> Vec<PathBuf> {
    let Ok(rd) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut stale: Vec<PathBuf> = rd
        .flatten()
        .filter(|ent| ent.file_name().to_str().and_then(work_dir_pid).is_some_and(|pid| !alive(pid)))
        .map(|ent| ent.path())
        .collect();
    stale.sort();
    stale
}

/// Removes the stale work directories of `dir`, saying so first (a kernel tree takes seconds).
pub fn remove_stale_work_dirs(dir: &Path, alive: impl Fn(u32) -> bool) {
    for p in stale_work_dirs(dir, alive) {
        eprintln!("removing a build left by an interrupted run: {}", p.display());
        if let Err(e) = fs::remove_dir_all(&p) {
            eprintln!("cannot remove {}: {e}; remove it by hand", p.display());
        }
    }
}

/// True when a process with this pid exists (Linux /proc).
pub fn pid_alive(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

/// An exclusive `flock` on a file, released on drop or when the process dies (the file itself
/// stays; it is empty).
pub struct Lock {
    _file: File,
}

impl Lock {
    /// Blocks until the lock is held.
    pub fn acquire(path: &Path) -> io::Result<Lock> {
        use std::os::fd::AsRawFd;
        let file = File::options().create(true).truncate(false).write(true).open(path)?;
        loop {
            // SAFETY: flock on a file descriptor we own and keep open; no memory is passed.
            let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
            if r == 0 {
                return Ok(Lock { _file: file });
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

/// A directory removed, with everything in it, on drop.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates `path` (which must not exist yet).
    pub fn create(path: PathBuf) -> io::Result<TempDir> {
        fs::create_dir_all(path.parent().unwrap_or(Path::new("/")))?;
        fs::create_dir(&path)?;
        Ok(TempDir { path })
    }
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_order() {
        let p = |s: &str| Some(PathBuf::from(s));
        let cases = [
            ((Some("/c"), Some("/x"), Some("/h")), p("/c")),
            ((Some(""), Some("/x"), Some("/h")), p("/x/chinit")),
            ((None, Some("rel"), Some("/h")), p("/h/.cache/chinit")),
            ((None, None, Some("/h")), p("/h/.cache/chinit")),
            ((None, Some(""), None), None),
        ];
        for ((c, x, h), want) in cases {
            assert_eq!(root_from(c, x, h), want, "{c:?} {x:?} {h:?}");
        }
    }

    #[test]
    fn entry_names_change_with_every_input() {
        let base = entry_name("x86_64", "6.1.192", "CONFIG_A=y\n", &[]);
        assert!(base.starts_with("x86_64-6.1.192-"), "{base}");
        assert_eq!(base.len(), "x86_64-6.1.192-".len() + 12);
        assert_eq!(base, entry_name("x86_64", "6.1.192", "CONFIG_A=y\n", &[]));
        let others = [
            entry_name("x86_64", "6.1.192", "CONFIG_A=m\n", &[]),
            entry_name("x86_64", "6.1.193", "CONFIG_A=y\n", &[]),
            entry_name("aarch64", "6.1.192", "CONFIG_A=y\n", &[]),
            entry_name("x86_64", "6.1.192", "CONFIG_A=y\n", &[b"/src"]),
        ];
        for o in others {
            assert_ne!(o.rsplit('-').next(), base.rsplit('-').next());
        }
    }

    #[test]
    fn fnv_separates_parts() {
        assert_ne!(fnv1a64(&[b"ab", b"c"]), fnv1a64(&[b"a", b"bc"]));
    }

    #[test]
    fn work_dir_names() {
        assert_eq!(work_dir_pid(".build-x86_64-6.1-abc.1234"), Some(1234));
        assert_eq!(work_dir_pid("x86_64-6.1-abc"), None);
        assert_eq!(work_dir_pid(".build-x.y"), None);
    }

    #[test]
    fn stale_work_dirs_go_live_ones_and_entries_stay() {
        let tmp = std::env::temp_dir().join(format!("chinit-cache-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&tmp);
        for d in [".build-a.111", ".build-b.222", "x86_64-6.1-0123"] {
            fs::create_dir_all(tmp.join(d).join("sub")).unwrap();
        }
        assert_eq!(stale_work_dirs(&tmp, |pid| pid == 222), vec![tmp.join(".build-a.111")]);
        remove_stale_work_dirs(&tmp, |pid| pid == 222);
        assert!(!tmp.join(".build-a.111").exists());
        assert!(tmp.join(".build-b.222").exists());
        assert!(tmp.join("x86_64-6.1-0123").exists());
        fs::remove_dir_all(&tmp).unwrap();
    }

    #[test]
    fn lock_excludes_and_is_released_on_drop() {
        let p = std::env::temp_dir().join(format!("chinit-lock-test-{}", std::process::id()));
        let held = Lock::acquire(&p).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let p2 = p.clone();
        let waiter = std::thread::spawn(move || {
            let _l = Lock::acquire(&p2).unwrap();
            tx.send(()).unwrap();
        });
        assert!(rx.recv_timeout(std::time::Duration::from_millis(200)).is_err());
        drop(held);
        rx.recv_timeout(std::time::Duration::from_secs(5)).unwrap();
        waiter.join().unwrap();
        fs::remove_file(&p).unwrap();
    }

    #[test]
    fn temp_dir_is_removed_on_drop() {
        let p = std::env::temp_dir().join(format!("chinit-tempdir-test-{}", std::process::id()));
        {
            let t = TempDir::create(p.clone()).unwrap();
            fs::write(t.path().join("f"), b"x").unwrap();
            assert!(p.join("f").exists());
        }
        assert!(!p.exists());
    }
}
