//! Runs one shell script on the simulated hardware-KVM host (`chinit_tests::l1`) and prints what it
//! printed; exits with its status. For trying the KVM paths by hand, and for measuring how often
//! L1 itself fails (`--once`: no second run when the emulator fails; exit 3 then):
//!
//! ```text
//! cargo run -p chinit-tests --bin l1-run -- [--once] SCRIPT.sh [TIMEOUT_SECS]
//! ```
//!
//! `CHINIT_L1_CPU`, `CHINIT_L1_SMP`, `CHINIT_L1_KVM_AMD` and `CHINIT_L1_APPEND` change L1
//! (`chinit_tests::l1::Config`).

use std::process::ExitCode;
use std::time::Duration;

use chinit_tests::l1::{self, Config, Failure};

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let once = args.first().is_some_and(|a| a == "--once");
    if once {
        args.remove(0);
    }
    let Some(path) = args.first() else {
        eprintln!("usage: l1-run [--once] SCRIPT.sh [TIMEOUT_SECS]");
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
    let timeout = Duration::from_secs(secs);
    let result = if once {
        l1::run_once(&script, timeout, &Config::from_env(), 1).map_err(|f| match f {
            Failure::Emulator(void) => (3, format!("emulator: {}", void.why)),
            Failure::Other(e) => (1, e),
        })
    } else {
        l1::run(path, &script, timeout).map_err(|e| (1, e))
    };
    match result {
        Ok(out) => {
            print!("{}", out.output);
            eprintln!("l1-run: exit {} after {:.1} s ({})", out.status, out.wall.as_secs_f64(), Config::from_env().describe());
            ExitCode::from(u8::try_from(out.status).unwrap_or(1))
        }
        Err((code, e)) => {
            eprintln!("l1-run: {e}");
            ExitCode::from(code)
        }
    }
}
