//! chinit's errors: each names the step's object and the errno; printed once, by the caller.

use nix::errno::Errno;

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
