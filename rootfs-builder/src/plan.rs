//! The file list of an image, decided before anything is written: pure and testable.
//!
//! A plan maps absolute paths inside the image to entries; every entry is owned by root (0:0)
//! and gets the timestamps of `SOURCE_DATE_EPOCH`. Keys sort parents before children.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Where the bytes of a file come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    Path(PathBuf),
    Bytes(Vec<u8>),
}

impl Content {
    pub fn read(&self) -> Result<Vec<u8>> {
        match self {
            Content::Bytes(b) => Ok(b.clone()),
            Content::Path(p) => std::fs::read(p).map_err(|e| Error::io(format!("reading {}", p.display()), e)),
        }
    }

    pub fn byte_len(&self) -> Result<u64> {
        match self {
            Content::Bytes(b) => Ok(b.len() as u64),
            Content::Path(p) => std::fs::metadata(p).map(|m| m.len()).map_err(|e| Error::io(format!("reading {}", p.display()), e)),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File(Content),
    Symlink(String),
    CharDev { major: u32, minor: u32 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: Kind,
    /// Permission bits, including setuid/setgid/sticky (no file type bits).
    pub perm: u32,
    /// Only written when the base has nothing at this path (defaults such as /etc/passwd must
    /// not replace a distribution's own).
    pub if_absent: bool,
}

impl Entry {
    pub fn dir(perm: u32) -> Self {
        Entry { kind: Kind::Dir, perm, if_absent: false }
    }
    pub fn file(content: Content, perm: u32) -> Self {
        Entry { kind: Kind::File(content), perm, if_absent: false }
    }
    pub fn symlink(target: &str) -> Self {
        Entry { kind: Kind::Symlink(target.to_string()), perm: 0o777, if_absent: false }
    }

    /// Mark the entry as a default that a base's own file wins over.
    pub fn if_absent(mut self) -> Self {
        self.if_absent = true;
        self
    }

    /// The full `st_mode` (type and permission bits).
    pub fn mode(&self) -> u32 {
        let ty = match self.kind {
            Kind::Dir => 0o040000,
            Kind::File(_) => 0o100000,
            Kind::Symlink(_) => 0o120000,
            Kind::CharDev { .. } => 0o020000,
        };
        ty | (self.perm & 0o7777)
    }
}

/// A set of image entries, keyed by absolute normalised path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub entries: BTreeMap<String, Entry>,
}

/// Normalise an absolute image path: `/a//b/` → `/a/b`. Refuses relative paths, `.`/`..`,
/// and characters the image tools cannot carry (newline, NUL).
pub fn normalize(path: &str) -> std::result::Result<String, String> {
    if !path.starts_with('/') {
        return Err("the path inside the image must be absolute (start with /)".into());
    }
    if path.contains('\n') || path.contains('\0') {
        return Err("the path contains a newline or NUL".into());
    }
    let mut out = String::new();
    for c in path.split('/').filter(|c| !c.is_empty()) {
        if c == "." || c == ".." {
            return Err("the path must not contain . or .. components".into());
        }
        out.push('/');
        out.push_str(c);
    }
    if out.is_empty() {
        out.push('/');
    }
    Ok(out)
}

/// Parent of a normalised path (`/` for top-level entries).
pub fn parent(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

/// The contents of /etc in every root image.
pub const HOSTNAME: &str = "chinit\n";
pub const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n";
pub const GROUP: &str = "root:x:0:\n";
pub const HOSTS: &str = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n";

impl Plan {
    /// Default content of an ext4 root: `/sbin/chinit`, `/init` → `/sbin/chinit`, `/sbin/init` →
    /// `chinit` (unless the base has one), the usual empty directories and a minimal /etc.
    pub fn root(init: Content) -> Self {
        let mut p = Plan::default();
        for d in ["/dev", "/proc", "/sys", "/run", "/etc", "/var", "/sbin"] {
            p.put(d, Entry::dir(0o755));
        }
        p.put("/root", Entry::dir(0o700));
        p.put("/tmp", Entry::dir(0o1777));
        p.put("/sbin/chinit", Entry::file(init, 0o755));
        p.put("/init", Entry::symlink("/sbin/chinit"));
        // Where the kernel looks when `init=` is not given; a base's own /sbin/init is kept.
        p.put("/sbin/init", Entry::symlink("chinit").if_absent());
        p.put("/etc/hostname", Entry::file(Content::Bytes(HOSTNAME.into()), 0o644).if_absent());
        p.put("/etc/passwd", Entry::file(Content::Bytes(PASSWD.into()), 0o644).if_absent());
        p.put("/etc/group", Entry::file(Content::Bytes(GROUP.into()), 0o644).if_absent());
        p.put("/etc/hosts", Entry::file(Content::Bytes(HOSTS.into()), 0o644).if_absent());
        p
    }

    /// Default content of an initramfs: chinit as a real file at `/init` and `/sbin/chinit`,
    /// mount points, and `/dev/console` so the kernel can open the console before devtmpfs.
    pub fn initramfs(init: Content) -> Self {
        let mut p = Plan::default();
        for d in ["/dev", "/proc", "/sys", "/run", "/newroot", "/sbin", "/etc"] {
            p.put(d, Entry::dir(0o755));
        }
        p.put("/tmp", Entry::dir(0o1777));
        p.put("/init", Entry::file(init.clone(), 0o755));
        p.put("/sbin/chinit", Entry::file(init, 0o755));
        p.put("/dev/console", Entry { kind: Kind::CharDev { major: 5, minor: 1 }, perm: 0o600, if_absent: false });
        p
    }

    /// Insert an entry at a normalised path, creating missing parents (0755). A later entry
    /// replaces an earlier one at the same path, unless that would put a non-directory where
    /// the plan has children.
    pub fn put(&mut self, path: &str, entry: Entry) {
        let mut cur = String::new();
        let comps: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
        for c in comps.iter().take(comps.len().saturating_sub(1)) {
            cur.push('/');
            cur.push_str(c);
            let keep_dir = matches!(self.entries.get(&cur), Some(e) if e.kind == Kind::Dir);
            if !keep_dir {
                self.entries.insert(cur.clone(), Entry::dir(0o755));
            }
        }
        if entry.kind != Kind::Dir {
            // Children of a directory replaced by a file would be lost: drop them explicitly.
            let prefix = format!("{path}/");
            self.entries.retain(|k, _| !k.starts_with(&prefix));
        }
        self.entries.insert(path.to_string(), entry);
    }

    /// `--add SRC:DST[:MODE]`: a file, or a directory copied recursively.
    pub fn add(&mut self, spec: &AddSpec) -> Result<()> {
        // The source is followed if it is a symlink: --add copies what it points to.
        let meta = std::fs::metadata(&spec.src).map_err(|e| Error::MissingSource { option: "--add", path: spec.src.clone(), source: e })?;
        if meta.is_dir() {
            self.tree(&spec.src, &spec.dst, "--add")?;
            if let Some(m) = spec.mode {
                self.put(&spec.dst, Entry::dir(m));
            }
            return Ok(());
        }
        if !meta.is_file() {
            return Err(Error::BadOption {
                option: "--add",
                value: spec.src.display().to_string(),
                problem: "only regular files and directories can be added".into(),
            });
        }
        // Check it can be read now rather than half-way through the build.
        std::fs::File::open(&spec.src).map_err(|e| Error::MissingSource { option: "--add", path: spec.src.clone(), source: e })?;
        let perm = spec.mode.unwrap_or(meta.permissions().mode() & 0o7777);
        self.put(&spec.dst, Entry::file(Content::Path(spec.src.clone()), perm));
        Ok(())
    }

    /// Copy the directory `src` recursively to `dst` in the image (`--tree DIR` is `dst = /`).
    /// Files, directories and symlinks keep their permission bits; ownership becomes root.
    pub fn tree(&mut self, src: &Path, dst: &str, option: &'static str) -> Result<()> {
        let meta = std::fs::metadata(src).map_err(|e| Error::MissingSource { option, path: src.to_path_buf(), source: e })?;
        if !meta.is_dir() {
            return Err(Error::BadOption { option, value: src.display().to_string(), problem: "not a directory".into() });
        }
        if dst != "/" {
            self.put(dst, Entry::dir(meta.permissions().mode() & 0o7777));
        }
        self.walk(src, dst, option)
    }

    fn walk(&mut self, dir: &Path, dst: &str, option: &'static str) -> Result<()> {
        let read = |e| Error::MissingSource { option, path: dir.to_path_buf(), source: e };
        let mut names: Vec<_> =
            std::fs::read_dir(dir).map_err(read)?.map(|r| r.map(|e| e.file_name())).collect::<std::io::Result<_>>().map_err(read)?;
        names.sort();
        for name in names {
            let src = dir.join(&name);
            let name = name.to_str().ok_or_else(|| Error::BadOption {
                option,
                value: src.display().to_string(),
                problem: "file name is not UTF-8".into(),
            })?;
            let path = normalize(&format!("{dst}/{name}")).map_err(|p| Error::BadOption {
                option,
                value: src.display().to_string(),
                problem: p,
            })?;
            let meta = std::fs::symlink_metadata(&src).map_err(|e| Error::MissingSource { option, path: src.clone(), source: e })?;
            let perm = meta.permissions().mode() & 0o7777;
            let ft = meta.file_type();
            if ft.is_dir() {
                self.put(&path, Entry::dir(perm));
                self.walk(&src, &path, option)?;
            } else if ft.is_file() {
                self.no_children(&path, option, &src)?;
                self.put(&path, Entry::file(Content::Path(src), perm));
            } else if ft.is_symlink() {
                self.no_children(&path, option, &src)?;
                let target = std::fs::read_link(&src).map_err(|e| Error::MissingSource { option, path: src.clone(), source: e })?;
                let target = target.to_str().ok_or_else(|| Error::BadOption {
                    option,
                    value: src.display().to_string(),
                    problem: "symlink target is not UTF-8".into(),
                })?;
                self.put(&path, Entry::symlink(target));
            } else {
                return Err(Error::BadOption {
                    option,
                    value: src.display().to_string(),
                    problem: "device nodes, sockets and FIFOs cannot be copied; use --base with an image or tarball for those".into(),
                });
            }
        }
        Ok(())
    }

    /// Refuse to put a file or symlink at `path` when the plan has entries below it (a tree with
    /// `sbin -> usr/sbin` would otherwise drop `/sbin/chinit`).
    fn no_children(&self, path: &str, option: &'static str, src: &Path) -> Result<()> {
        let prefix = format!("{path}/");
        match self.entries.keys().find(|k| k.starts_with(&prefix)) {
            None => Ok(()),
            Some(child) => Err(Error::BadOption {
                option,
                value: src.display().to_string(),
                problem: format!(
                    "it would replace the directory {path}, which holds {child}; give a base with such symlinks as --base DIR, where paths resolve through them"
                ),
            }),
        }
    }

    /// Bytes the plan's files take on disk, and its number of entries.
    pub fn footprint(&self) -> Result<(u64, u64)> {
        let mut bytes = 0;
        for e in self.entries.values() {
            bytes += match &e.kind {
                Kind::File(c) => crate::size::on_disk(c.byte_len()?),
                _ => 4096,
            };
        }
        Ok((bytes, self.entries.len() as u64))
    }
}

/// One `--add SRC:DST[:MODE]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddSpec {
    pub src: PathBuf,
    pub dst: String,
    pub mode: Option<u32>,
}

impl AddSpec {
    pub const SYNTAX: &'static str = "SRC:DST[:MODE]  copy host file or directory SRC to absolute path DST in the image; MODE is octal (e.g. 0755), default: SRC's permissions";

    pub fn parse(s: &str) -> std::result::Result<Self, String> {
        let (rest, mode) = match s.rsplit_once(':') {
            Some((r, m)) if r.contains(':') && !m.is_empty() && m.len() <= 5 && m.bytes().all(|b| (b'0'..=b'7').contains(&b)) => {
                let mode = u32::from_str_radix(m, 8).map_err(|e| e.to_string())?;
                if mode > 0o7777 {
                    return Err(format!("mode {m} is larger than 7777"));
                }
                (r, Some(mode))
            }
            _ => (s, None),
        };
        let (src, dst) = rest.split_once(':').ok_or_else(|| format!("expected {}", Self::SYNTAX))?;
        if src.is_empty() {
            return Err("empty SRC".into());
        }
        let dst = normalize(dst)?;
        if dst == "/" {
            return Err("DST must name a path below / (use --tree DIR to overlay a directory on /)".into());
        }
        Ok(AddSpec { src: PathBuf::from(src), dst, mode })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_table() {
        assert_eq!(normalize("/a//b/").as_deref(), Ok("/a/b"));
        assert_eq!(normalize("/").as_deref(), Ok("/"));
        assert!(normalize("a/b").is_err());
        assert!(normalize("/a/../b").is_err());
        assert!(normalize("/a/./b").is_err());
        assert!(normalize("/a\nb").is_err());
        assert_eq!(parent("/a/b"), "/a");
        assert_eq!(parent("/a"), "/");
    }

    #[test]
    fn add_spec_table() {
        let p = |s| AddSpec::parse(s);
        assert_eq!(p("bin/x:/usr/bin/x"), Ok(AddSpec { src: "bin/x".into(), dst: "/usr/bin/x".into(), mode: None }));
        assert_eq!(p("bin/x:/usr/bin/x:0755"), Ok(AddSpec { src: "bin/x".into(), dst: "/usr/bin/x".into(), mode: Some(0o755) }));
        assert_eq!(p("x:/y:4755").map(|s| s.mode), Ok(Some(0o4755)));
        assert!(p("x").is_err());
        assert!(p(":/y").is_err());
        assert!(p("x:y").is_err(), "relative DST");
        assert!(p("x:/").is_err());
        // Not an octal mode: the colon belongs to DST.
        assert_eq!(p("x:/y:0999").map(|s| s.dst), Ok("/y:0999".to_string()));
    }

    #[test]
    fn root_defaults() {
        let p = Plan::root(Content::Bytes(b"ELF".to_vec()));
        let mode = |k: &str| p.entries[k].mode();
        assert_eq!(mode("/sbin/chinit"), 0o100755);
        assert_eq!(mode("/tmp"), 0o41777);
        assert_eq!(mode("/root"), 0o40700);
        assert_eq!(p.entries["/init"].kind, Kind::Symlink("/sbin/chinit".into()));
        assert_eq!(p.entries["/sbin/init"].kind, Kind::Symlink("chinit".into()));
        assert!(p.entries["/sbin/init"].if_absent && !p.entries["/init"].if_absent);
        for d in ["/dev", "/proc", "/sys", "/run", "/etc", "/var"] {
            assert_eq!(p.entries[d].kind, Kind::Dir, "{d}");
        }
        let keys: Vec<&String> = p.entries.keys().collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
    }

    #[test]
    fn initramfs_defaults() {
        let p = Plan::initramfs(Content::Bytes(b"ELF".to_vec()));
        assert_eq!(p.entries["/init"].mode(), 0o100755);
        assert_eq!(p.entries["/dev/console"].mode(), 0o020600);
        assert_eq!(p.entries["/dev/console"].kind, Kind::CharDev { major: 5, minor: 1 });
        assert!(p.entries.contains_key("/newroot"));
    }

    #[test]
    fn tree_symlink_over_needed_dir_is_refused() {
        let dir = std::env::temp_dir().join(format!("plan-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("usr/sbin")).unwrap();
        std::os::unix::fs::symlink("usr/sbin", dir.join("sbin")).unwrap();
        let mut p = Plan::root(Content::Bytes(vec![1]));
        let e = p.tree(&dir, "/", "--tree").unwrap_err();
        assert!(e.to_string().contains("/sbin/chinit"), "{e}");
        // Without a conflict the tree is taken.
        std::fs::remove_file(dir.join("sbin")).unwrap();
        std::os::unix::fs::symlink("usr/sbin", dir.join("xbin")).unwrap();
        let mut p = Plan::root(Content::Bytes(vec![1]));
        p.tree(&dir, "/", "--tree").unwrap();
        assert_eq!(p.entries["/xbin"].kind, Kind::Symlink("usr/sbin".into()));
        assert_eq!(p.entries["/usr/sbin"].kind, Kind::Dir);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn put_creates_parents_and_replaces() {
        let mut p = Plan::default();
        p.put("/a/b/c", Entry::file(Content::Bytes(vec![1]), 0o644));
        assert_eq!(p.entries["/a"].kind, Kind::Dir);
        assert_eq!(p.entries["/a/b"].kind, Kind::Dir);
        p.put("/a", Entry::symlink("x"));
        assert!(!p.entries.contains_key("/a/b/c"));
        assert_eq!(p.entries.len(), 1);
    }
}
