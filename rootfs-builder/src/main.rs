//! rootfs-builder: bake chinit into root images and build guest kernels.
//!
//! `rootfs-builder kernel ...` builds the guest kernel; every other invocation builds an image.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = match args.first().map(String::as_str) {
        Some("kernel") => rootfs_builder::kernel::main(&args[1..]),
        _ => rootfs_builder::run::main(&args),
    };
    std::process::exit(code);
}
