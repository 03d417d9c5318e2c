//! `host-probe run`: plan → launch → watch → collect.
//!
//! - [`crate::plan`] resolves the options against the host ([`plan`], pure given the host facts);
//! - [`crate::launch`] makes the run directory, TAP, vhost-device-vsock, listeners and the VMM,
//!   each behind a guard whose drop removes it;
//! - [`crate::watch`] turns what the readers heard into the host's figures and says when it is done;
//! - [`crate::collect`] builds the [`Report`].
//!
//! The names callers use from here (`run::Options`, `run::plan`, ...) are re-exported.

use std::time::Duration;

use crate::collect;
use crate::error::Error;
use crate::launch::Running;
use crate::launch::{self, progress};
use crate::report::Report;
use crate::watch::{Observed, Watch};

pub use crate::measure::parse_smaps_rollup;
pub use crate::options::{HostOffer, Options, RootMode, VmmChoice, Wait};
pub use crate::plan::{dry_run_text, kernel_supports_initrd, next_seq, plan, tcg_note, Plan, GUEST_CID, NOTIFY_PORT, TCG_NOTE};

/// How often the watch looks at what the readers heard.
const POLL_EVERY: Duration = Duration::from_millis(2);
/// How long a guest that accepted the power-off has to do it before the VMM is stopped.
pub const POWER_OFF_GRACE: Duration = Duration::from_secs(10);

/// Watches a launched plan until the guest is ready (or, with `Wait::Exit`, the VMM exited; with
/// `Wait::Workload` and a guest that has one, its workload exited).
pub fn watch(plan: &Plan, o: &Options, running: &mut Running) -> Result<Observed, Error> {
    let mut watch = Watch::new(plan, o, running);
    loop {
        watch.poll(running)?;
        if watch.done() {
            return Ok(watch.observed());
        }
        std::thread::sleep(POLL_EVERY);
    }
}

/// Carries out a plan and measures it.
pub fn execute(plan: &Plan, o: &Options) -> Result<Report, Error> {
    let mut running = launch::start(plan, o)?;
    let mut seen = watch(plan, o, &mut running)?;
    if o.kernel_profile {
        seen.kmsg = Some(crate::ask::kmsg(running.guest_addr(), running.guest_vsock()));
    }
    // A guest whose workload ended has usually powered off by itself; one that stays is asked to.
    if o.wait != Wait::Exit && seen.vmm_exit.is_none() {
        seen.vmm_exit = running.power_off(POWER_OFF_GRACE);
    }
    collect::report(plan, o, seen, running.finish())
}

/// Plans with this host's facts and executes.
pub fn run(o: &Options) -> Result<Report, Error> {
    execute_noted(&plan(o, &HostOffer::gather(), next_seq())?, o)
}

/// Says the plan's notes, then executes it.
pub fn execute_noted(plan: &Plan, o: &Options) -> Result<Report, Error> {
    for n in &plan.notes {
        progress(o.verbose, n);
    }
    execute(plan, o)
}
