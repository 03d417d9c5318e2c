//! Build an initramfs: newc cpio of a plan (plus kernel modules), over a container image's layers
//! when `--image` gave them, compressed by extension.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::cpio::{self, CpioEntry};
use crate::error::{Error, Result};
use crate::modules::{self, DepMap};
use crate::plan::{Content, Entry, Kind, Plan};
use crate::progress;
use crate::resolve::{Lookup, Node};
use crate::tools;

/// Compression chosen by the output file name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    pub fn from_name(name: &str) -> std::result::Result<Self, String> {
        if name.ends_with(".cpio.gz") || name.ends_with(".gz") {
            Ok(Compression::Gzip)
        } else if name.ends_with(".zst") {
            Ok(Compression::Zstd)
        } else if name.ends_with(".cpio") {
            Ok(Compression::None)
        } else {
            Err("the name must end in .cpio, .cpio.gz or .cpio.zst (the compression follows the extension)".into())
        }
    }

    /// The compressor command line, reading stdin and writing stdout; `None` when uncompressed.
    pub fn argv(self) -> Option<(&'static str, &'static [&'static str])> {
        match self {
            Compression::None => None,
            // -n: no name or time stamp in the header, so the output is reproducible.
            Compression::Gzip => Some(("gzip", &["-n", "-9", "-c"])),
            Compression::Zstd => Some(("zstd", &["-q", "-19", "-c", "--no-progress"])),
        }
    }
}

/// Read a module file, decompressing `.ko.xz` / `.ko.zst` / `.ko.gz` with the matching tool:
/// chinit loads plain files with finit_module.
pub fn read_module(path: &Path) -> Result<Vec<u8>> {
    let name = path.to_string_lossy();
    let tool: Option<&'static str> = if name.ends_with(".xz") {
        Some("xz")
    } else if name.ends_with(".zst") {
        Some("zstd")
    } else if name.ends_with(".gz") {
        Some("gzip")
    } else {
        None
    };
    match tool {
        None => std::fs::read(path).map_err(|e| Error::io(format!("reading {}", path.display()), e)),
        Some(t) => Ok(tools::run(t, Command::new(t).arg("-dc").arg(path), &[])?.stdout),
    }
}

/// Add `names` and their dependencies from `dir` to the plan, with `/etc/chinit/modules.load`
/// listing them in load order. Returns the number of module files added.
pub fn add_modules(plan: &mut Plan, dir: &Path, names: &[String]) -> Result<usize> {
    let dep_dir = modules::find_dep_dir(dir)?;
    let dep_file = dep_dir.join("modules.dep");
    let text = std::fs::read_to_string(&dep_file).map_err(|e| Error::io(format!("reading {}", dep_file.display()), e))?;
    let map = DepMap::parse(&text);
    let builtin = modules::builtin(&dep_dir);
    let mut wanted = Vec::new();
    for n in names {
        let c = modules::canonical(n);
        if !map.modules.contains_key(&c) && builtin.contains(&c) {
            progress::step(&format!("module {n} is built into this kernel: nothing to include"));
        } else {
            wanted.push(n.clone());
        }
    }
    let files = map.resolve(&wanted).map_err(|name| {
        let near = map.near(&name);
        Error::ModuleNotFound {
            near: if near.is_empty() {
                "; check the name with `modinfo` or `ls` in the modules directory".into()
            } else {
                format!("; did you mean: {}?", near.join(", "))
            },
            name,
            dep: dep_file.clone(),
        }
    })?;
    let ver = dep_dir.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let mut load = String::new();
    for f in &files {
        let src = dep_dir.join(f);
        let data = read_module(&src).map_err(|e| match e {
            Error::Io { source, .. } => Error::MissingSource { option: "--modules-from", path: src.clone(), source },
            e => e,
        })?;
        let dst = format!("/lib/modules/{ver}/{}", modules::plain_path(f));
        let _ = writeln!(load, "{dst}");
        plan.put(&dst, Entry::file(Content::Bytes(data), 0o644));
    }
    if !files.is_empty() {
        plan.put("/etc/chinit/modules.load", Entry::file(Content::Bytes(load.into_bytes()), 0o644));
    }
    Ok(files.len())
}

/// Cpio entries by absolute path (a container image's merged layers, [`crate::oci::Tree::into_cpio`]),
/// and how many hard-link groups they use.
#[derive(Debug, Default)]
pub struct Tree {
    pub entries: BTreeMap<String, CpioEntry>,
    pub groups: u32,
}

impl Lookup for &Tree {
    fn node(&mut self, path: &str) -> std::result::Result<Node, String> {
        if path == "/" {
            return Ok(Node::Dir);
        }
        Ok(match self.entries.get(path) {
            None => Node::Missing,
            Some(e) if e.mode & libc::S_IFMT == libc::S_IFDIR => Node::Dir,
            Some(e) if e.mode & libc::S_IFMT == libc::S_IFLNK => Node::Symlink(String::from_utf8_lossy(&e.data).into_owned()),
            Some(_) => Node::Other,
        })
    }
}

/// The cpio entries of a plan laid over `base` (a container image's merged layers, owners kept),
/// in path order (parents first). The plan's paths are resolved through the base's symlinks (its
/// `/sbin` may be `usr/sbin`), its directories keep the base's where they exist, and its
/// `if_absent` defaults give way to the base's files, as in an ext4 root. Plan files with the same
/// content source (chinit at `/init` and `/sbin/chinit`) become hard links, so the archive holds
/// the bytes once. Plan entries are owned by root.
pub fn entries(plan: &Plan, mut base: Tree) -> Result<Vec<CpioEntry>> {
    let placed = crate::ext4::place(plan, &mut &base)?;
    let mut sources: Vec<&Content> = Vec::new();
    for ((path, e), (real, action)) in plan.entries.iter().zip(placed) {
        if path == "/" || real == "/" || action == crate::ext4::Action::KeepDir {
            continue;
        }
        let (data, rdev_major, rdev_minor, link) = match &e.kind {
            Kind::Dir => (vec![], 0, 0, None),
            Kind::File(c) => {
                let k = sources.iter().position(|s| *s == c).unwrap_or_else(|| {
                    sources.push(c);
                    sources.len() - 1
                });
                (c.read()?, 0, 0, u32::try_from(k).ok().map(|k| k + base.groups))
            }
            Kind::Symlink(t) => (t.clone().into_bytes(), 0, 0, None),
            Kind::CharDev { major, minor } => (vec![], *major, *minor, None),
        };
        let name = real.trim_start_matches('/').to_string();
        base.entries.insert(real, CpioEntry { name, mode: e.mode(), data, rdev_major, rdev_minor, link, ..CpioEntry::default() });
    }
    Ok(base.entries.into_values().collect())
}

/// Write the plan, over `base` ([`entries`]; empty without an image), as a (compressed) cpio archive
/// to `out`.
pub fn build(plan: &Plan, base: Tree, compression: Compression, epoch: i64, out: &Path) -> Result<()> {
    let mtime = u32::try_from(epoch).map_err(|_| Error::BadOption {
        option: "SOURCE_DATE_EPOCH",
        value: epoch.to_string(),
        problem: "cpio times must fit in 32 bits (0 ..= 4294967295)".into(),
    })?;
    let mut buf = Vec::new();
    cpio::write(&mut buf, &entries(plan, base)?, mtime).map_err(|e| Error::io("writing the cpio archive", e))?;
    let file = std::fs::File::create(out).map_err(|e| Error::io(format!("creating {}", out.display()), e))?;
    match compression.argv() {
        None => {
            let mut f = file;
            f.write_all(&buf).and_then(|()| f.sync_all()).map_err(|e| Error::io(format!("writing {}", out.display()), e))
        }
        Some((tool, args)) => {
            progress::step(&format!("compressing with {tool}…"));
            let mut child = tools::spawn(tool, Command::new(tool).args(args).stdin(Stdio::piped()).stdout(file).stderr(Stdio::piped()))?;
            let written = child.stdin.take().map(|mut s| s.write_all(&buf));
            tools::finish(tool, child, &[])?;
            if let Some(Err(e)) = written {
                return Err(Error::io(format!("piping to {tool}"), e));
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compression_by_name() {
        assert_eq!(Compression::from_name("a.cpio"), Ok(Compression::None));
        assert_eq!(Compression::from_name("a.cpio.gz"), Ok(Compression::Gzip));
        assert_eq!(Compression::from_name("a.cpio.zst"), Ok(Compression::Zstd));
        assert!(Compression::from_name("a.tar").is_err());
    }

    #[test]
    fn entries_have_no_leading_slash_and_keep_modes() {
        let plan = Plan::initramfs(Content::Bytes(b"x".to_vec()));
        let e = entries(&plan, Tree::default()).unwrap();
        assert!(e.iter().all(|e| !e.name.starts_with('/')));
        let console = e.iter().find(|e| e.name == "dev/console").unwrap();
        assert_eq!((console.mode, console.rdev_major, console.rdev_minor), (0o20600, 5, 1));
        let names: Vec<&str> = e.iter().map(|e| e.name.as_str()).collect();
        assert!(names.iter().position(|n| *n == "dev").unwrap() < names.iter().position(|n| *n == "dev/console").unwrap());
        let init = e.iter().find(|e| e.name == "init").unwrap();
        let sbin = e.iter().find(|e| e.name == "sbin/chinit").unwrap();
        assert!(init.link.is_some() && init.link == sbin.link);
    }
}
