//! Console output: one line per event, `chinit: ` first, written with one `write(2)` and never
//! panicking (std's `eprintln!` panics when stderr is gone).

use std::io::Write;

/// Writes one line to standard error (the console in a VM).
pub fn line(args: std::fmt::Arguments<'_>) {
    let text = format!("chinit: {args}\n");
    let _ = std::io::stderr().write_all(text.as_bytes());
}

/// Writes one line to the kernel log (`/dev/kmsg`), at level 2 (critical); used when the console may
/// be gone.
pub fn kmsg(args: std::fmt::Arguments<'_>) {
    if let Ok(mut f) = std::fs::OpenOptions::new().write(true).open("/dev/kmsg") {
        for l in format!("{args}").lines() {
            let _ = f.write_all(format!("<2>chinit: {l}\n").as_bytes());
        }
    }
}

/// `say!("...")`: one console line.
#[macro_export]
macro_rules! say {
    ($($t:tt)*) => { $crate::log::line(format_args!($($t)*)) };
}
