//! Kernel modules for an initramfs: find modules.dep, resolve names and their dependencies,
//! and order them so that dependencies load first.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The module directory (`/lib/modules/<ver>`) for `dir`: `dir` itself when it holds
/// modules.dep, else the single `lib/modules/<ver>` (or `usr/lib/modules/<ver>`) below it.
pub fn find_dep_dir(dir: &Path) -> Result<PathBuf> {
    if dir.join("modules.dep").is_file() {
        return Ok(dir.to_path_buf());
    }
    let mut found = Vec::new();
    for base in ["lib/modules", "usr/lib/modules"] {
        if let Ok(rd) = std::fs::read_dir(dir.join(base)) {
            for e in rd.flatten() {
                if e.path().join("modules.dep").is_file() {
                    found.push(e.path());
                }
            }
        }
    }
    found.sort();
    match found.len() {
        0 => Err(Error::NoModulesDep { path: dir.to_path_buf() }),
        1 => Ok(found.remove(0)),
        _ => Err(Error::ManyKernels {
            path: dir.to_path_buf(),
            versions: found.iter().filter_map(|p| p.file_name()?.to_str().map(String::from)).collect::<Vec<_>>().join(", "),
        }),
    }
}

/// Module name of a path in modules.dep: basename without `.ko[.xz|.zst|.gz]`, `-` as `_`.
pub fn name_of(path: &str) -> String {
    let base = path.rsplit('/').next().unwrap_or(path);
    let base = ["xz", "zst", "gz"]
        .iter()
        .find_map(|c| base.strip_suffix(&format!(".ko.{c}")))
        .or_else(|| base.strip_suffix(".ko"))
        .unwrap_or(base);
    canonical(base)
}

/// `-` and `_` are the same in module names.
pub fn canonical(name: &str) -> String {
    name.replace('-', "_")
}

/// Path of the module in the initramfs: the modules.dep path with its compression suffix removed.
pub fn plain_path(path: &str) -> &str {
    ["xz", "zst", "gz"].iter().find_map(|c| path.strip_suffix(&format!(".{c}")).filter(|p| p.ends_with(".ko"))).unwrap_or(path)
}

/// Parsed modules.dep: module name → (file path relative to the module dir, its dependencies).
#[derive(Debug, Default)]
pub struct DepMap {
    pub modules: BTreeMap<String, (String, Vec<String>)>,
}

impl DepMap {
    pub fn parse(text: &str) -> Self {
        let mut modules = BTreeMap::new();
        for line in text.lines() {
            let Some((path, deps)) = line.split_once(':') else {
                continue;
            };
            let path = path.trim();
            if path.is_empty() {
                continue;
            }
            let deps = deps.split_whitespace().map(String::from).collect();
            modules.insert(name_of(path), (path.to_string(), deps));
        }
        DepMap { modules }
    }

    /// Files (paths relative to the module dir) for `names` and everything they depend on,
    /// dependencies before dependents, each once. Unknown names are returned in `Err`.
    pub fn resolve(&self, names: &[String]) -> std::result::Result<Vec<String>, String> {
        let by_path: BTreeMap<&str, &Vec<String>> = self.modules.values().map(|(p, d)| (p.as_str(), d)).collect();
        let mut out = Vec::new();
        let mut seen = BTreeSet::new();
        for name in names {
            let (path, _) = self.modules.get(&canonical(name)).ok_or_else(|| name.clone())?;
            visit(path, &by_path, &mut seen, &mut out);
        }
        Ok(out)
    }

    /// Known names close to `name`: containing it, or within edit distance 2.
    pub fn near(&self, name: &str) -> Vec<String> {
        let want = canonical(name);
        let mut v: Vec<(usize, &String)> = self
            .modules
            .keys()
            .filter_map(|k| {
                let d = distance(k, &want);
                (d <= 2 || (want.len() >= 3 && k.contains(&want))).then_some((d, k))
            })
            .collect();
        v.sort();
        v.into_iter().take(8).map(|(_, k)| k.clone()).collect()
    }
}

fn visit<'a>(path: &'a str, by_path: &BTreeMap<&'a str, &'a Vec<String>>, seen: &mut BTreeSet<&'a str>, out: &mut Vec<String>) {
    if !seen.insert(path) {
        return;
    }
    if let Some(deps) = by_path.get(path) {
        // modules.dep lists dependencies so that loading them last-to-first works.
        for d in deps.iter().rev() {
            visit(d.as_str(), by_path, seen, out);
        }
    }
    out.push(path.to_string());
}

fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Names of modules built into the kernel (modules.builtin), canonical.
pub fn builtin(dep_dir: &Path) -> BTreeSet<String> {
    std::fs::read_to_string(dep_dir.join("modules.builtin")).map(|t| t.lines().map(name_of).collect()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "\
kernel/drivers/block/virtio_blk.ko.xz: kernel/drivers/virtio/virtio_ring.ko.xz kernel/drivers/virtio/virtio.ko.xz
kernel/drivers/virtio/virtio_ring.ko.xz: kernel/drivers/virtio/virtio.ko.xz
kernel/drivers/virtio/virtio.ko.xz:
kernel/drivers/virtio/virtio_pci.ko.xz: kernel/drivers/virtio/virtio_pci_modern_dev.ko.xz kernel/drivers/virtio/virtio_ring.ko.xz kernel/drivers/virtio/virtio.ko.xz
kernel/drivers/virtio/virtio_pci_modern_dev.ko.xz:
kernel/fs/ext4/ext4.ko.zst: kernel/fs/jbd2/jbd2.ko.zst kernel/fs/mbcache.ko.zst kernel/lib/crc16.ko
kernel/fs/jbd2/jbd2.ko.zst:
kernel/fs/mbcache.ko.zst:
kernel/lib/crc16.ko:
kernel/net/vmw_vsock/vsock-loopback.ko.gz:
";

    #[test]
    fn names() {
        assert_eq!(name_of("kernel/a/virtio_blk.ko.xz"), "virtio_blk");
        assert_eq!(name_of("kernel/a/vsock-loopback.ko.gz"), "vsock_loopback");
        assert_eq!(name_of("crc16.ko"), "crc16");
        assert_eq!(plain_path("kernel/a/x.ko.zst"), "kernel/a/x.ko");
        assert_eq!(plain_path("kernel/a/x.ko"), "kernel/a/x.ko");
    }

    #[test]
    fn resolve_orders_dependencies_first_once() {
        let m = DepMap::parse(DEP);
        let got = m.resolve(&["virtio_blk".into(), "virtio-pci".into(), "ext4".into()]).unwrap();
        assert_eq!(
            got,
            [
                "kernel/drivers/virtio/virtio.ko.xz",
                "kernel/drivers/virtio/virtio_ring.ko.xz",
                "kernel/drivers/block/virtio_blk.ko.xz",
                "kernel/drivers/virtio/virtio_pci_modern_dev.ko.xz",
                "kernel/drivers/virtio/virtio_pci.ko.xz",
                "kernel/lib/crc16.ko",
                "kernel/fs/mbcache.ko.zst",
                "kernel/fs/jbd2/jbd2.ko.zst",
                "kernel/fs/ext4/ext4.ko.zst",
            ]
        );
        // Every dependency comes before its dependents.
        for (path, deps) in m.modules.values() {
            if let Some(i) = got.iter().position(|g| g == path) {
                for d in deps {
                    assert!(got.iter().position(|g| g == d).unwrap() < i, "{d} before {path}");
                }
            }
        }
        assert_eq!(m.resolve(&["vsock_loopback".into()]).unwrap().len(), 1);
    }

    #[test]
    fn missing_name_and_near_matches() {
        let m = DepMap::parse(DEP);
        assert_eq!(m.resolve(&["virtio_blk".into(), "virtio_bl".into()]), Err("virtio_bl".into()));
        assert_eq!(m.near("virtio_bl")[0], "virtio_blk");
        assert!(m.near("virtio").contains(&"virtio_pci".to_string()));
        assert!(m.near("zzzzzzzz").is_empty());
    }
}
