//! The one list of VMMs host-probe drives. `--vmm` takes their names (and `auto`), `--vmm auto`
//! tries them in this order, and a manifest's `vmm` is read by name here.

use std::sync::OnceLock;

use super::{cloud_hypervisor, firecracker, qemu, stratovirt, Vmm};

/// Every VMM, in the order `--vmm auto` tries them (the last one always fits).
const ALL: &[Vmm] = &[cloud_hypervisor::VMM, firecracker::VMM, stratovirt::VMM, qemu::VMM];

/// Every VMM, in the order `--vmm auto` tries them.
pub fn all() -> &'static [Vmm] {
    ALL
}

/// The VMM of this name.
pub fn by_name(name: &str) -> Option<Vmm> {
    ALL.iter().copied().find(|v| v.name() == name)
}

/// Their names, in order.
pub fn names() -> &'static [&'static str] {
    static NAMES: OnceLock<Vec<&'static str>> = OnceLock::new();
    NAMES.get_or_init(|| ALL.iter().map(|v| v.name()).collect())
}
