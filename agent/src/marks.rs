//! Phase marks: the bytes chinit writes to I/O port 0x80 (x86) at the boundaries of its boot, so that
//! the VMM stamps them on the host's clock (cloud-hypervisor's debug port logs them, QEMU's
//! isa-debugcon carries them to a socket host-probe reads). Defined once, here: chinit writes them,
//! host-probe names them.
//!
//! Codes follow cloud-hypervisor's ranges ([`range`]): chinit uses the userspace range 0x60-0x7f.
//! 0x60-0x67 are the boot's; 0x68-0x6f are kept for the phases of a start from a snapshot
//! (restore → unique → ready); 0x70-0x7f are free.

/// chinit's first instruction.
pub const INIT_START: u8 = 0x60;
/// The early mounts, the command line, modules, the root and the extra mounts are done.
pub const MOUNTS_DONE: u8 = 0x61;
/// The network is up (or was left off).
pub const NETWORK_DONE: u8 = 0x62;
/// The agent answers: `/ready` is 200 from here on.
pub const READY: u8 = 0x63;
/// The codes of a start from a snapshot.
pub const RESTORE_RANGE: std::ops::RangeInclusive<u8> = 0x68..=0x6f;
/// A restored copy starts becoming unique (`POST /v1/restore` taken).
pub const RESTORE_START: u8 = 0x68;
/// The copy is unique and ready again.
pub const RESTORE_READY: u8 = 0x69;

/// What a chinit code means, or `None` for codes chinit does not write.
pub fn name(code: u8) -> Option<&'static str> {
    match code {
        INIT_START => Some("init start"),
        MOUNTS_DONE => Some("mounts done"),
        NETWORK_DONE => Some("network done"),
        READY => Some("ready"),
        RESTORE_START => Some("restore start"),
        RESTORE_READY => Some("restore ready"),
        _ => None,
    }
}

/// The range a port-0x80 code belongs to (cloud-hypervisor's convention).
pub fn range(code: u8) -> &'static str {
    match code {
        0x00..=0x1f => "firmware",
        0x20..=0x3f => "bootloader",
        0x40..=0x5f => "kernel",
        0x60..=0x7f => "userspace",
        _ => "custom",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_names_and_ranges() {
        let boot = [INIT_START, MOUNTS_DONE, NETWORK_DONE, READY];
        assert_eq!(boot, [0x60, 0x61, 0x62, 0x63], "the boot's codes are a contract with captured logs");
        for c in boot {
            assert!(name(c).is_some() && range(c) == "userspace" && !RESTORE_RANGE.contains(&c));
        }
        assert!(RESTORE_RANGE.contains(&RESTORE_START) && RESTORE_RANGE.contains(&RESTORE_READY));
        assert!(RESTORE_RANGE.clone().all(|c| range(c) == "userspace"));
        assert_eq!((range(0x00), range(0x20), range(0x40), range(0x80)), ("firmware", "bootloader", "kernel", "custom"));
    }
}
