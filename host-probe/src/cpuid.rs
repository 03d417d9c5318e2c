//! What this host itself runs on, from the CPUID hypervisor leaves: bit 31 of leaf 1's ECX says a
//! hypervisor is present, leaf 0x4000_0000 names it in 12 bytes. A host that is itself emulated
//! (QEMU TCG says `TCGTCGTCGTCG`) gives VM timings that are emulation times even under its own
//! KVM: host-probe marks such runs not representative, as it marks runs under TCG.

/// The hypervisor this host runs under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hypervisor {
    /// None: bare metal.
    None,
    /// A hypervisor that runs guests on hardware virtualisation (KVM, Hyper-V, Xen, VMware, ...).
    Hardware(String),
    /// An emulator: every instruction is translated (QEMU TCG).
    Emulated(String),
}

impl Hypervisor {
    /// From leaf 1's "hypervisor present" bit and the signature of leaf 0x4000_0000 (pure).
    pub fn from_cpuid(present: bool, signature: [u8; 12]) -> Hypervisor {
        if !present {
            return Hypervisor::None;
        }
        let name = String::from_utf8_lossy(&signature).trim_end_matches('\0').to_string();
        match name.as_str() {
            "TCGTCGTCGTCG" => Hypervisor::Emulated(name),
            _ => Hypervisor::Hardware(name),
        }
    }

    /// This host's.
    pub fn detect() -> Hypervisor {
        let (present, signature) = read();
        Hypervisor::from_cpuid(present, signature)
    }

    /// The note for a run's report when guests' times are emulation times, else `None`.
    pub fn note(&self) -> Option<String> {
        match self {
            Hypervisor::Emulated(sig) => Some(format!(
                "this host is itself emulated (CPUID hypervisor {sig:?}): its KVM runs guests at emulation speed, timings are not representative"
            )),
            _ => None,
        }
    }
}

#[cfg(target_arch = "x86_64")]
fn read() -> (bool, [u8; 12]) {
    use std::arch::x86_64::__cpuid;
    // CPUID exists on every x86_64 CPU; leaf 0x4000_0000 is reserved for hypervisors (a bare CPU
    // answers it with whatever it answers for unknown leaves, which the present bit says to ignore).
    let (leaf1, hv) = (__cpuid(1), __cpuid(0x4000_0000));
    let present = leaf1.ecx & (1 << 31) != 0;
    let mut sig = [0u8; 12];
    sig[0..4].copy_from_slice(&hv.ebx.to_le_bytes());
    sig[4..8].copy_from_slice(&hv.ecx.to_le_bytes());
    sig[8..12].copy_from_slice(&hv.edx.to_le_bytes());
    (present, sig)
}

#[cfg(not(target_arch = "x86_64"))]
fn read() -> (bool, [u8; 12]) {
    (false, [0; 12])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures() {
        let sig = |s: &[u8]| {
            let mut b = [0u8; 12];
            b[..s.len()].copy_from_slice(s);
            b
        };
        assert_eq!(Hypervisor::from_cpuid(false, sig(b"TCGTCGTCGTCG")), Hypervisor::None);
        assert_eq!(Hypervisor::from_cpuid(true, sig(b"TCGTCGTCGTCG")), Hypervisor::Emulated("TCGTCGTCGTCG".into()));
        assert_eq!(Hypervisor::from_cpuid(true, sig(b"KVMKVMKVM")), Hypervisor::Hardware("KVMKVMKVM".into()));
        assert_eq!(Hypervisor::from_cpuid(true, sig(b"Microsoft Hv")), Hypervisor::Hardware("Microsoft Hv".into()));
        assert!(Hypervisor::Emulated("TCGTCGTCGTCG".into()).note().is_some_and(|n| n.contains("not representative")));
        assert!(Hypervisor::Hardware("KVMKVMKVM".into()).note().is_none());
        // This host answers something consistent.
        let _ = Hypervisor::detect();
    }
}
