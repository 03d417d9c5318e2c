//! chinit: PID 1 for microVMs. The boot, in order, each step stamped on CLOCK_BOOTTIME:
//! mounts → cmdline → modules → root → extra mounts → hostname → network → agent → ready, then the
//! PID 1 loop (reaping, signals, workload) until an orderly shutdown. See `docs/boot-phases.md`.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::exit))]

pub mod arp;
mod boot;
pub mod boottimer;
pub mod clock;
pub mod cmdline;
pub mod control;
pub mod error;
pub mod exec;
pub mod fds;
pub mod heap;
pub mod kmsg;
pub mod log;
pub mod mode;
pub mod modules;
pub mod mounts;
pub mod net;
pub mod netlink;
pub mod notify;
pub mod panic;
pub mod powerbutton;
pub mod reap;
pub mod restore;
pub mod root;
pub mod shutdown;
pub mod signals;
pub mod supervise;
pub mod timeline;
pub mod vmgenid;

use std::io::Write;

use boot::Boot;
use error::ExitCode;
use mode::Mode;

const USAGE: &str = "\
chinit: PID 1 for microVMs.

Boot it with init=/sbin/chinit (or as /init of an initramfs); it reads its settings from the kernel
command line (chinit.* keys, see docs/cmdline.md).

Options (for running as PID 1 of fresh namespaces, where /proc/cmdline is the host's):
  --cmdline STRING   use STRING instead of /proc/cmdline
  --version          print the version
  --help             print this text
";

/// Entry point of the binary. Returns an exit code only when chinit does not boot (not PID 1, or an
/// informational option); once booting it never returns.
pub fn main_exec(args: &[String]) -> ExitCode {
    let mut cmdline = None;
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            // Written, not printed: print! panics when stdout is closed.
            "--version" => {
                let _ = writeln!(std::io::stdout(), "chinit {}", env!("CARGO_PKG_VERSION"));
                return ExitCode::Ok;
            }
            "--help" | "-h" => {
                let _ = write!(std::io::stdout(), "{USAGE}");
                return ExitCode::Ok;
            }
            "--cmdline" => match it.next() {
                Some(v) => cmdline = Some(v.clone()),
                None => {
                    say!("--cmdline needs a value, e.g. --cmdline \"chinit.ip=169.254.1.2/16\"");
                    return ExitCode::Usage;
                }
            },
            // The kernel passes boot words it does not know to init: ignore them.
            _ => {}
        }
    }
    match mode::detect() {
        Ok(mode) => boot(mode, cmdline),
        Err(e) => {
            say!("{e}");
            ExitCode::Usage
        }
    }
}

/// The boot, phase by phase. Never returns.
fn boot(mode: Mode, cmdline: Option<String>) -> ! {
    let mut boot = Boot::start(mode);
    boot.mounts();
    boot.cmdline(cmdline);
    boot.modules();
    boot.root();
    boot.extra_mounts();
    boot.hostname();
    boot.network();
    // The agent step starts with the runtime it runs on.
    let (agent, rt) = boot.runtime();
    let ending = rt.block_on(async {
        boot.agent(agent).await;
        boot.ready().await;
        boot.supervise().await
    });
    // The connections go with the runtime.
    drop(rt);
    boot.finish(ending)
}
