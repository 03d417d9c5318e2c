//! host-probe: launch a microVM with chinit under cloud-hypervisor or QEMU, measure every boot phase
//! from the host's clock and the guest's, and report it. See docs/host-probe.md.

pub mod ask;
pub mod bench;
pub mod bounded;
pub mod check;
pub mod cmdline;
pub mod collect;
pub mod cpuid;
pub mod density;
pub mod error;
pub mod kprofile;
pub mod launch;
pub mod locate;
pub mod measure;
pub mod options;
pub mod plan;
pub mod pvh;
pub mod report;
pub mod run;
pub mod shootout;
pub mod signals;
pub mod snapshot;
pub mod stale;
pub mod standin;
pub mod tap;
pub mod tsc;
pub mod vmm;
pub mod vsock;
pub mod watch;
pub mod workload;
