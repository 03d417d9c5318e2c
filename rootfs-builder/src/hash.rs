//! FNV-1a, 64 bits: a stable, dependency-free hash for cache keys and image UUIDs (not for
//! security). One implementation for every use in this crate.

const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const PRIME: u64 = 0x0000_0100_0000_01b3;

/// A running FNV-1a hash.
#[derive(Debug, Clone, Copy)]
pub struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Fnv1a(OFFSET)
    }
}

impl Fnv1a {
    /// Starts from another offset basis (a second, independent lane).
    pub fn with_basis(basis: u64) -> Fnv1a {
        Fnv1a(basis)
    }

    pub fn byte(&mut self, b: u8) {
        self.0 = (self.0 ^ u64::from(b)).wrapping_mul(PRIME);
    }

    pub fn bytes(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.byte(b);
        }
    }

    pub fn finish(self) -> u64 {
        self.0
    }
}

/// The hash of several parts, each followed by a separator byte, so `("ab", "c")` and
/// `("a", "bc")` differ.
pub fn parts(parts: &[&[u8]]) -> u64 {
    let mut h = Fnv1a::default();
    for part in parts {
        h.bytes(part);
        h.byte(0xff);
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values_and_separated_parts() {
        // FNV-1a 64 reference values.
        let mut h = Fnv1a::default();
        assert_eq!(h.finish(), 0xcbf29ce484222325);
        h.bytes(b"a");
        assert_eq!(h.finish(), 0xaf63dc4c8601ec8c);
        assert_ne!(parts(&[b"ab", b"c"]), parts(&[b"a", b"bc"]));
    }
}
