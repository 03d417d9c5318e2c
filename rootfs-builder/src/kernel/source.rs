//! Kernel sources: a tarball (extracted into the cache) or a directory (built out of tree).

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Debian's `linux-source-6.1` package installs this.
pub const DEFAULT_SOURCE: &str = "/usr/src/linux-source-6.1.tar.xz";

/// Where the kernel source comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A `.tar`, `.tar.xz`, `.tar.gz`... with one top directory holding the tree.
    Tarball(PathBuf),
    /// A kernel tree; never written to (the build uses `make O=`).
    Dir(PathBuf),
}

impl Source {
    /// Classifies an existing path; `None` when it does not exist.
    pub fn from_path(path: &Path) -> Option<Source> {
        let meta = fs::metadata(path).ok()?;
        let canon = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        Some(if meta.is_dir() { Source::Dir(canon) } else { Source::Tarball(canon) })
    }

    pub fn path(&self) -> &Path {
        match self {
            Source::Tarball(p) | Source::Dir(p) => p,
        }
    }

    /// Bytes that identify this source for cache keys: its path, and for a tarball its size and
    /// modification time (so a replaced tarball of the same version gets a new entry).
    pub fn identity(&self) -> Vec<u8> {
        let mut id = self.path().as_os_str().as_encoded_bytes().to_vec();
        if let Source::Tarball(p) = self {
            if let Ok(m) = fs::metadata(p) {
                id.extend(format!(":{}:{}.{}", m.size(), m.mtime(), m.mtime_nsec()).bytes());
            }
        }
        id
    }
}

/// The kernel version (`make kernelversion`) from the top-level Makefile text:
/// `VERSION.PATCHLEVEL.SUBLEVEL` plus `EXTRAVERSION`.
pub fn version_from_makefile(text: &str) -> Option<String> {
    let var = |name: &str| -> Option<String> {
        text.lines().take(40).find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == name).then(|| v.trim().to_string())
        })
    };
    let (v, p, s) = (var("VERSION")?, var("PATCHLEVEL")?, var("SUBLEVEL")?);
    let extra = var("EXTRAVERSION").unwrap_or_default();
    let numeric = |x: &str| !x.is_empty() && x.bytes().all(|b| b.is_ascii_digit());
    if !(numeric(&v) && numeric(&p) && numeric(&s)) {
        return None;
    }
    let extra: String = extra.chars().filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '+')).collect();
    Some(format!("{v}.{p}.{s}{extra}"))
}

/// Reads the version of a kernel tree.
pub fn tree_version(tree: &Path) -> Option<String> {
    version_from_makefile(&fs::read_to_string(tree.join("Makefile")).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_from_makefiles() {
        let debian =
            "# SPDX-License-Identifier: GPL-2.0\nVERSION = 6\nPATCHLEVEL = 1\nSUBLEVEL = 192\nEXTRAVERSION =\nNAME = Curry Ramen\n";
        assert_eq!(version_from_makefile(debian).as_deref(), Some("6.1.192"));
        let rc = "VERSION = 6\nPATCHLEVEL = 12\nSUBLEVEL = 0\nEXTRAVERSION = -rc3\n";
        assert_eq!(version_from_makefile(rc).as_deref(), Some("6.12.0-rc3"));
        let odd = "VERSION = 6\nPATCHLEVEL = 1\nSUBLEVEL = 0\nEXTRAVERSION = /../x y\n";
        assert_eq!(version_from_makefile(odd).as_deref(), Some("6.1.0..xy"));
        assert_eq!(version_from_makefile("VERSION = 6\nPATCHLEVEL = 1\n"), None);
        assert_eq!(version_from_makefile("VERSION = $(X)\nPATCHLEVEL = 1\nSUBLEVEL = 0\n"), None);
    }

    #[test]
    fn identity_of_a_tarball_changes_when_it_is_replaced() {
        let p = std::env::temp_dir().join(format!("chinit-src-test-{}.tar", std::process::id()));
        fs::write(&p, b"one").unwrap();
        let a = Source::from_path(&p).unwrap();
        assert!(matches!(a, Source::Tarball(_)));
        let id1 = a.identity();
        fs::write(&p, b"longer").unwrap();
        assert_ne!(id1, a.identity());
        fs::remove_file(&p).unwrap();
        assert_eq!(Source::from_path(&p), None);
        let d = Source::from_path(&std::env::temp_dir()).unwrap();
        assert!(matches!(d, Source::Dir(_)));
    }
}
