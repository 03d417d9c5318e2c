//! Where chinit runs: PID 1 of a machine (VM mode), or PID 1 of a child PID namespace (namespace
//! mode, for tests and native benchmarks). Namespace mode never touches what belongs to the host:
//! no module loading, no I/O port marks, no Ctrl-Alt-Del setting, no remounting the shared root.

use std::os::unix::fs::MetadataExt;

use crate::error::InitError;

/// Inode of the initial PID namespace (`PROC_PID_INIT_INO` in the kernel).
const PROC_PID_INIT_INO: u64 = 0xEFFF_FFFC;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Vm,
    Namespace,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Vm => "vm",
            Mode::Namespace => "namespace",
        }
    }
}

/// What the checks saw; pure decision in [`decide`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    pub pid: i32,
    /// Inode of `/proc/self/ns/pid`, when a procfs is mounted.
    pub pid_ns: Option<u64>,
    /// Inodes of `/proc/self/ns/mnt` and `/proc/1/ns/mnt` (PID 1 of the procfs's namespace).
    pub mnt_ns: Option<(u64, u64)>,
    /// Whether `/proc/1` is this process (the procfs belongs to our PID namespace).
    pub proc_is_ours: bool,
}

pub fn decide(s: Seen) -> Result<Mode, InitError> {
    if s.pid != 1 {
        return Err(InitError::NotPid1(s.pid));
    }
    match s.pid_ns {
        // No procfs yet: the first moments of a machine.
        None => Ok(Mode::Vm),
        Some(PROC_PID_INIT_INO) => Ok(Mode::Vm),
        Some(_) if s.proc_is_ours => Ok(Mode::Namespace),
        Some(_) => match s.mnt_ns {
            Some((ours, host)) if ours == host => Err(InitError::SharedMountNamespace),
            _ => Ok(Mode::Namespace),
        },
    }
}

fn ino(path: &str) -> Option<u64> {
    std::fs::metadata(path).ok().map(|m| m.ino())
}

/// Whether a procfs is mounted on `/proc`. Asked of `/proc` itself: in the first moments of a
/// machine it is a directory of the root filesystem, and a lookup inside it would read that
/// directory from the disk only to find it empty.
fn procfs_mounted() -> bool {
    nix::sys::statfs::statfs("/proc").is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::PROC_SUPER_MAGIC)
}

/// Looks at `/proc` (if mounted) and decides.
pub fn detect() -> Result<Mode, InitError> {
    let pid = std::process::id();
    let pid = i32::try_from(pid).unwrap_or(i32::MAX);
    let pid_ns = if pid == 1 && procfs_mounted() { ino("/proc/self/ns/pid") } else { None };
    // Not PID 1, or no procfs (the first moments of a machine), decides alone: skip the lookups.
    let seen = match pid_ns {
        None => Seen { pid, pid_ns, mnt_ns: None, proc_is_ours: false },
        Some(_) => {
            let self_pid = std::fs::read_link("/proc/self").ok().and_then(|p| p.to_str().and_then(|s| s.parse::<i32>().ok()));
            Seen { pid, pid_ns, mnt_ns: ino("/proc/self/ns/mnt").zip(ino("/proc/1/ns/mnt")), proc_is_ours: self_pid == Some(1) }
        }
    };
    decide(seen)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decide_table() {
        let base = Seen { pid: 1, pid_ns: None, mnt_ns: None, proc_is_ours: false };
        let cases = [
            (base, Ok(Mode::Vm)),
            (Seen { pid_ns: Some(PROC_PID_INIT_INO), ..base }, Ok(Mode::Vm)),
            (Seen { pid_ns: Some(4026532000), proc_is_ours: true, ..base }, Ok(Mode::Namespace)),
            (Seen { pid_ns: Some(4026532000), mnt_ns: Some((1, 2)), ..base }, Ok(Mode::Namespace)),
            (Seen { pid_ns: Some(4026532000), mnt_ns: Some((7, 7)), ..base }, Err("shares")),
            (Seen { pid: 42, ..base }, Err("must run as PID 1")),
        ];
        for (seen, want) in cases {
            match (decide(seen), want) {
                (Ok(m), Ok(w)) => assert_eq!(m, w, "{seen:?}"),
                (Err(e), Err(w)) => assert!(e.to_string().contains(w), "{seen:?}: {e}"),
                (got, want) => panic!("{seen:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn procfs_is_seen_where_it_is_mounted() {
        // The test host has its procfs on /proc.
        assert!(procfs_mounted());
    }

    #[test]
    fn a_test_process_is_not_pid_1() {
        assert!(matches!(detect(), Err(InitError::NotPid1(_))));
    }
}
