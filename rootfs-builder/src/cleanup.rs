//! Temporary files and child processes are removed on success, on error and on SIGINT/SIGTERM.
//!
//! `install()` starts one thread that receives SIGINT and SIGTERM (`signal-hook`): it stops the
//! registered children, removes the registered temporary paths, and exits with 128 + signal.
//! Tools are started by [`crate::tools::spawn`] in their own process group.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

static TEMPS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
static CHILDREN: Mutex<Vec<u32>> = Mutex::new(Vec::new());
static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// If a signal is being handled, wait for the signal thread to clean up and exit; the failure
/// the main thread sees (a killed tool) is a consequence, not the error to report.
pub fn yield_to_signal() {
    if INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst) {
        loop {
            std::thread::park();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn remove(path: &Path) {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {
            let _ = std::fs::remove_dir_all(path);
        }
        Ok(_) => {
            let _ = std::fs::remove_file(path);
        }
        Err(_) => {}
    }
}

/// A temporary file or directory, removed when dropped (or on a signal).
#[derive(Debug)]
pub struct TempPath {
    path: PathBuf,
}

impl TempPath {
    /// Register `path` (not created here) for removal.
    pub fn new(path: PathBuf) -> Self {
        lock(&TEMPS).push(path.clone());
        TempPath { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        let mut temps = lock(&TEMPS);
        remove(&self.path);
        temps.retain(|p| p != &self.path);
    }
}

/// Starts a child with `spawn` and registers it so a signal stops it (unregister with
/// [`child_done`]). The registry is held across the spawn, so a signal arriving meanwhile waits for
/// the child to be registered and stops it too; once a signal is being handled no child starts.
pub fn start_child(spawn: impl FnOnce() -> std::io::Result<std::process::Child>) -> std::io::Result<std::process::Child> {
    let mut children = lock(&CHILDREN);
    if INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst) {
        // The signal thread cleans up and exits the process.
        drop(children);
        loop {
            std::thread::park();
        }
    }
    let child = spawn()?;
    children.push(child.id());
    Ok(child)
}

pub fn child_done(pid: u32) {
    lock(&CHILDREN).retain(|&p| p != pid);
}

/// Starts the thread that handles SIGINT and SIGTERM.
pub fn install() -> std::io::Result<()> {
    let mut signals = signal_hook::iterator::Signals::new([libc::SIGINT, libc::SIGTERM])?;
    std::thread::Builder::new().name("signals".into()).spawn(move || {
        if let Some(sig) = signals.forever().next() {
            on_signal(sig);
        }
    })?;
    Ok(())
}

fn on_signal(sig: i32) -> ! {
    INTERRUPTED.store(true, std::sync::atomic::Ordering::SeqCst);
    let children: Vec<i32> = lock(&CHILDREN).iter().filter_map(|&p| i32::try_from(p).ok()).collect();
    for &pid in &children {
        // SAFETY: kill(2) on the process group of a child we spawned with process_group(0)
        // (its pgid is its pid); no memory involved.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
    }
    // Let the killed tools stop writing before their files are removed.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while children.iter().any(|&pid| running(pid)) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    // Holding the lock keeps the main thread from registering new paths meanwhile.
    let temps = lock(&TEMPS);
    for p in temps.iter().rev() {
        remove(p);
    }
    let err = crate::error::Error::Interrupted(sig);
    eprintln!("rootfs-builder: {err}");
    std::process::exit(err.exit_code() as i32)
}

/// True while `pid` exists and is not a zombie.
fn running(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        // The state follows the parenthesised command name.
        Ok(s) => s.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next()).is_some_and(|state| state != "Z" && state != "X"),
    }
}
