//! Progress lines on stderr for steps that take seconds.

/// Print one `rootfs-builder: ...` progress line, unless `ROOTFS_BUILDER_QUIET` is set.
pub fn step(msg: &str) {
    if std::env::var_os("ROOTFS_BUILDER_QUIET").is_none() {
        eprintln!("rootfs-builder: {msg}");
    }
}
