//! rootfs-builder: bake chinit into root images (`rootfs-builder --out ...`) and build guest
//! kernels (`rootfs-builder kernel ...`). Exit codes: [`rootfs_builder::error::ExitCode`].

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(rootfs_builder::run::main(&args) as i32);
}
