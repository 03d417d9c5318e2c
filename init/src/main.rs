//! chinit, PID 1. See the library for the boot.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

/// The earliest timestamp: runs before `main`.
#[ctor::ctor]
fn stamp() {
    chinit::clock::stamp_init_start();
}

fn main() {
    chinit::panic::install();
    let args: Vec<String> = std::env::args_os().map(|a| a.to_string_lossy().into_owned()).collect();
    let code = chinit::main_exec(&args);
    std::process::exit(code);
}
