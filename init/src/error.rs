//! chinit's errors: each names the step's object and the errno; printed once, by the caller.

use nix::errno::Errno;

/// chinit's exit codes. As PID 1 of a VM it never exits (it powers off); as PID 1 of a namespace it
/// ends the namespace by powering it off (the namespace's waiter sees SIGINT; SIGHUP for a reboot),
/// or exits with the workload's status when the workload's exit ended it (its code, or 128 + the
/// signal). It exits by itself only when it does not boot:
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum ExitCode {
    /// `--version`, `--help`; or a namespace ended whose power-off the kernel refused.
    Ok = 0,
    /// Bad arguments, or not PID 1 (the message says how to start it).
    Usage = 2,
}

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("must run as PID 1 (this is pid {0}): boot it with init=/sbin/chinit, or start it as PID 1 of fresh namespaces: unshare --pid --mount --net --uts --fork chinit --cmdline \"...\"")]
    NotPid1(i32),
    #[error("PID 1 of a child PID namespace that shares the host's mount namespace: refusing to mount over the host's /proc, /dev and /run; start it with unshare --mount (e.g. unshare --pid --mount --net --uts --fork chinit ...)")]
    SharedMountNamespace,
    #[error("mount {fstype} {device} on {target}: {errno}")]
    Mount { fstype: String, device: String, target: String, errno: Errno },
    #[error("create directory {path}: {errno}")]
    Mkdir { path: String, errno: Errno },
    #[error("root device {device} did not appear within {waited_ms} ms: check the VMM attaches the disk (e.g. --disk path=...) and the kernel has its driver (virtio_blk), or set chinit.root=")]
    RootMissing { device: String, waited_ms: u64 },
    #[error("switch root to {newroot}: {what}: {errno}")]
    SwitchRoot { newroot: String, what: &'static str, errno: Errno },
    #[error("start the async runtime: {0}")]
    Runtime(std::io::Error),
}
