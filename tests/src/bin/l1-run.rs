//! Runs one shell script on the simulated hardware-KVM host (`chinit_tests::l1`) and prints what it
//! printed; exits with its status. For trying the KVM paths by hand:
//!
//! ```text
//! cargo run -p chinit-tests --bin l1-run -- SCRIPT.sh [TIMEOUT_SECS]
//! ```

use std::process::ExitCode;
use std::time::Duration;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(path) = args.first() else {
        eprintln!("usage: l1-run SCRIPT.sh [TIMEOUT_SECS]");
        return ExitCode::from(2);
    };
    let script = match std::fs::read_to_string(path) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("l1-run: {path}: {e}");
            return ExitCode::from(2);
        }
    };
    let secs = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(300);
    match chinit_tests::l1::run(path, &script, Duration::from_secs(secs)) {
        Ok(out) => {
            print!("{}", out.output);
            eprintln!("l1-run: exit {} after {:.1} s", out.status, out.wall.as_secs_f64());
            ExitCode::from(u8::try_from(out.status).unwrap_or(1))
        }
        Err(e) => {
            eprintln!("l1-run: {e}");
            ExitCode::from(1)
        }
    }
}
