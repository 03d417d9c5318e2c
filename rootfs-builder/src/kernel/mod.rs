//! `rootfs-builder kernel`: build and cache the guest kernel.

/// Entry point of `rootfs-builder kernel ARGS...`; returns the process exit code.
pub fn main(_args: &[String]) -> i32 {
    eprintln!("rootfs-builder kernel: not yet");
    2
}
