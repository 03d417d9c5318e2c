//! Build an ext4 root image from a plan: stage files and `mkfs.ext4 -d`, or inject into a copy
//! of an existing image with `debugfs -w`. Never mounts anything; never writes the base.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::debugfs::{self, Attrs};
use crate::error::{Error, Result};
use crate::plan::{Content, Kind, Plan};
use crate::progress;
use crate::resolve::{self, Lookup, Node};
use crate::size::{self, MIB};
use crate::tools;

/// What the image starts from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Base {
    None,
    Dir(PathBuf),
    Tarball(PathBuf),
    Image(PathBuf),
}

impl Base {
    /// Classify `--base PATH`: a directory, an ext4 image (superblock magic), or a tarball.
    pub fn detect(path: &Path) -> Result<Base> {
        let bad = |problem: String| Error::BadBase { path: path.to_path_buf(), problem };
        let meta = std::fs::metadata(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
        if meta.is_dir() {
            return Ok(Base::Dir(path.to_path_buf()));
        }
        // A pipe (`--base <(zcat rootfs.tar.gz)`) can only be a tar stream: read it once, by tar.
        {
            use std::os::unix::fs::FileTypeExt;
            if meta.file_type().is_fifo() {
                return Ok(Base::Tarball(path.to_path_buf()));
            }
        }
        let mut head = vec![0u8; 1082];
        let mut f = std::fs::File::open(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
        let mut n = 0;
        while n < head.len() {
            match f.read(&mut head[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) => return Err(bad(format!("cannot read it: {e}"))),
            }
        }
        if n == head.len() && head[1080..1082] == [0x53, 0xEF] {
            return Ok(Base::Image(path.to_path_buf()));
        }
        let tar_magic = n >= 262 && &head[257..262] == b"ustar";
        let compressed = head.starts_with(&[0x1f, 0x8b])
            || head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z'])
            || head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
            || head.starts_with(b"BZh");
        if tar_magic || compressed {
            return Ok(Base::Tarball(path.to_path_buf()));
        }
        Err(bad("not a directory, an ext4 image or a tar archive (a partitioned disk image must have its root partition extracted first)"
            .into()))
    }
}

/// Options of one ext4 build.
#[derive(Debug, Clone)]
pub struct Ext4Options {
    pub size: Option<u64>,
    pub label: Option<String>,
    pub epoch: i64,
    pub base: Base,
}

/// E2FSPROGS_FAKE_TIME for `epoch`: e2fsprogs reads 0 as "unset", so epoch 0 becomes 1 second
/// for filesystem-level times (superblock, journal); inode times are set to `epoch` exactly.
pub fn fake_time(epoch: i64) -> i64 {
    epoch.max(1)
}

/// A fixed UUID derived from the inputs (FNV-1a over the options, the plan's paths and modes,
/// the bytes of in-memory files such as the init, and the staged content's size), so equal
/// inputs give equal images and different inits give different UUIDs.
pub fn uuid_for(plan: &Plan, opts: &Ext4Options, content_sizes: &[u64]) -> String {
    let mut text = format!("{}|{:?}|", opts.epoch, opts.label);
    for (k, e) in &plan.entries {
        let _ = write!(text, "{k}:{:o};", e.mode());
    }
    for s in content_sizes {
        let _ = write!(text, "{s},");
    }
    let contents = plan.entries.values().filter_map(|e| match &e.kind {
        Kind::File(Content::Bytes(b)) => Some(b.as_slice()),
        _ => None,
    });
    // Two lanes for 128 bits: the second from another basis, over rotated bytes.
    let (mut a, mut b) = (crate::hash::Fnv1a::default(), crate::hash::Fnv1a::with_basis(0x84222325cbf29ce4));
    for chunk in std::iter::once(text.as_bytes()).chain(contents) {
        for &byte in chunk {
            a.byte(byte);
            b.byte(byte.rotate_left(3));
        }
    }
    let (a, b) = (a.finish(), b.finish());
    let b = (b & 0x3fff_ffff_ffff_ffff) | 0x8000_0000_0000_0000; // RFC 4122 variant
    let a = (a & 0xffff_ffff_ffff_0fff) | 0x4000; // version 4 layout
    format!("{:08x}-{:04x}-{:04x}-{:04x}-{:012x}", a >> 32, (a >> 16) & 0xffff, a & 0xffff, b >> 48, b & 0xffff_ffff_ffff)
}

/// Looks paths up in a staging directory without following host symlinks.
struct StagingLookup<'a> {
    root: &'a Path,
}

impl Lookup for StagingLookup<'_> {
    fn node(&mut self, path: &str) -> std::result::Result<Node, String> {
        let p = self.root.join(path.trim_start_matches('/'));
        match std::fs::symlink_metadata(&p) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Node::Missing),
            Err(e) => Err(format!("{}: {e}", p.display())),
            Ok(m) if m.is_dir() => Ok(Node::Dir),
            Ok(m) if m.file_type().is_symlink() => {
                std::fs::read_link(&p).map(|t| Node::Symlink(t.to_string_lossy().into_owned())).map_err(|e| format!("{}: {e}", p.display()))
            }
            Ok(_) => Ok(Node::Other),
        }
    }
}

/// One plan entry placed at its real path in the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// The directory (or, for an `if_absent` default, the file) exists in the base: keep it.
    KeepDir,
    MakeDir,
    /// Write the entry, replacing a non-directory that is there (`replace`).
    Write {
        replace: bool,
    },
}

/// Place every plan entry: resolve its path through the base's symlinks and decide the action.
pub fn place(plan: &Plan, l: &mut impl Lookup) -> Result<Vec<(String, Action)>> {
    let mut out = Vec::new();
    let mut made: std::collections::BTreeSet<String> = Default::default();
    for (path, entry) in &plan.entries {
        let is_dir = entry.kind == Kind::Dir;
        let real = resolve::resolve(l, path, is_dir).map_err(|p| Error::BadBase { path: PathBuf::from(path), problem: p })?;
        let node = if made.contains(&real) {
            Node::Dir
        } else {
            l.node(&real).map_err(|p| Error::BadBase { path: PathBuf::from(&real), problem: p })?
        };
        let action = match (is_dir, node) {
            (true, Node::Dir) => Action::KeepDir,
            (true, Node::Missing) => {
                made.insert(real.clone());
                Action::MakeDir
            }
            (true, _) => {
                return Err(Error::BadBase {
                    path: PathBuf::from(&real),
                    problem: format!("the base has a file where {path} must be a directory"),
                })
            }
            (false, Node::Dir) => {
                return Err(Error::BadBase {
                    path: PathBuf::from(&real),
                    problem: format!("the base has a directory where {path} must go"),
                })
            }
            (false, Node::Missing) => Action::Write { replace: false },
            (false, _) if entry.if_absent => Action::KeepDir,
            (false, _) => Action::Write { replace: true },
        };
        out.push((real, action));
    }
    Ok(out)
}

/// Build the ext4 image for `plan` at `image` (a fresh temporary file path inside `work`).
pub fn build(plan: &Plan, opts: &Ext4Options, work: &Path, image: &Path) -> Result<()> {
    match &opts.base {
        Base::Image(base) => inject(plan, opts, work, base, image),
        _ => build_new(plan, opts, work, image),
    }
}

/// An ext4 image gets no device nodes (they come from a base image or tarball instead).
fn device_node_refused(path: &str) -> Error {
    Error::BadOption { option: "--add", value: path.to_string(), problem: "device nodes are only supported in an initramfs".into() }
}

fn io(ctx: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let ctx = ctx.into();
    move |e| Error::io(ctx, e)
}

fn euid_is_root() -> bool {
    // SAFETY: geteuid has no preconditions and touches no memory.
    unsafe { libc::geteuid() == 0 }
}

fn build_new(plan: &Plan, opts: &Ext4Options, work: &Path, image: &Path) -> Result<()> {
    let staging = work.join("staging");
    std::fs::create_dir(&staging).map_err(io(format!("creating {}", staging.display())))?;
    match &opts.base {
        Base::Dir(dir) => {
            progress::step(&format!("copying base directory {}…", dir.display()));
            let mut src = dir.clone().into_os_string();
            src.push("/.");
            tools::run("cp", Command::new("cp").args(["-a", "--reflink=auto"]).arg(src).arg(&staging), &[])?;
        }
        Base::Tarball(tar) => {
            progress::step(&format!("extracting base tarball {}…", tar.display()));
            let mut cmd = Command::new("tar");
            cmd.args(["-x", "-p", "--numeric-owner"]);
            if euid_is_root() {
                // File capabilities (e.g. ping's cap_net_raw) live in xattrs; only root may set them.
                cmd.args(["--xattrs", "--xattrs-include=*"]);
            }
            tools::run("tar", cmd.arg("-f").arg(tar).arg("-C").arg(&staging), &[])?;
        }
        _ => {}
    }
    progress::step(&format!("staging {} entries…", plan.entries.len()));
    let placed = place(plan, &mut StagingLookup { root: &staging })?;
    let mut ours: BTreeMap<String, u32> = BTreeMap::new();
    for ((_, entry), (real, action)) in plan.entries.iter().zip(&placed) {
        let host = staging.join(real.trim_start_matches('/'));
        match action {
            Action::KeepDir => continue,
            Action::MakeDir => std::fs::create_dir(&host).map_err(io(format!("creating {}", host.display())))?,
            Action::Write { replace } => {
                if *replace {
                    std::fs::remove_file(&host).map_err(io(format!("replacing {}", host.display())))?;
                }
                match &entry.kind {
                    Kind::File(Content::Path(src)) => {
                        std::fs::copy(src, &host).map_err(|e| Error::MissingSource { option: "--add", path: src.clone(), source: e })?;
                    }
                    Kind::File(Content::Bytes(b)) => std::fs::write(&host, b).map_err(io(format!("writing {}", host.display())))?,
                    Kind::Symlink(t) => std::os::unix::fs::symlink(t, &host).map_err(io(format!("writing {}", host.display())))?,
                    Kind::CharDev { .. } => return Err(device_node_refused(real)),
                    Kind::Dir => {}
                }
            }
        }
        if !matches!(entry.kind, Kind::Symlink(_)) {
            std::fs::set_permissions(&host, std::fs::Permissions::from_mode(entry.perm))
                .map_err(io(format!("setting mode of {}", host.display())))?;
        }
        ours.insert(real.clone(), entry.mode());
    }
    if matches!(opts.base, Base::None) {
        ours.insert("/".into(), 0o40755);
    }

    // Walk the staging tree: footprint for the size, and the attribute fix-ups for debugfs.
    let root = euid_is_root();
    let mut script = String::new();
    let (mut bytes, mut inodes) = (0u64, 0u64);
    let mut stack = vec![(staging.clone(), "/".to_string())];
    while let Some((host, path)) = stack.pop() {
        let m = std::fs::symlink_metadata(&host).map_err(io(format!("reading {}", host.display())))?;
        inodes += 1;
        bytes += if m.is_file() { size::on_disk(m.len()) } else { 4096 };
        let attrs = match ours.get(&path) {
            Some(&mode) => Attrs::ours(mode, opts.epoch),
            None => Attrs {
                mode: None,
                owner: (!root).then_some((0, 0)),
                atime: Some(m.atime().min(opts.epoch)),
                mtime: Some(m.mtime().min(opts.epoch)),
                ctime: Some(opts.epoch),
            },
        };
        for line in debugfs::sif(&path, &attrs).map_err(|p| Error::BadBase { path: host.clone(), problem: p })? {
            script.push_str(&line);
            script.push('\n');
        }
        if m.is_dir() {
            let mut names: Vec<_> = std::fs::read_dir(&host)
                .map_err(io(format!("reading {}", host.display())))?
                .map(|r| r.map(|e| e.file_name()))
                .collect::<std::io::Result<_>>()
                .map_err(io(format!("reading {}", host.display())))?;
            names.sort();
            for n in names.into_iter().rev() {
                let name = n.to_string_lossy().into_owned();
                let child = if path == "/" { format!("/{name}") } else { format!("{path}/{name}") };
                stack.push((host.join(&n), child));
            }
        }
    }

    let min = size::minimum(bytes, inodes);
    let size = match opts.size {
        Some(s) if s < min => return Err(Error::TooSmall { requested: s, needed: min, needed_mib: min / MIB }),
        Some(s) => s,
        None => size::default_for(bytes, inodes),
    };
    let sizes: Vec<u64> = vec![bytes, inodes];
    let uuid = uuid_for(plan, opts, &sizes);
    let f = std::fs::File::create(image).map_err(io(format!("creating {}", image.display())))?;
    f.set_len(size).map_err(io(format!("sizing {}", image.display())))?;
    drop(f);
    progress::step(&format!("mkfs.ext4 ({} MiB, {} MiB of content, {inodes} inodes)…", size / MIB, bytes.div_ceil(MIB)));
    let mut mkfs = Command::new("mkfs.ext4");
    mkfs.env("E2FSPROGS_FAKE_TIME", fake_time(opts.epoch).to_string())
        .args(["-q", "-F", "-t", "ext4", "-U", &uuid, "-E"])
        .arg(format!("hash_seed={uuid},root_owner=0:0,nodiscard"));
    if let Some(l) = &opts.label {
        mkfs.args(["-L", l]);
    }
    mkfs.arg("-d").arg(&staging).arg(image);
    tools::run("mkfs.ext4", &mut mkfs, &[]).map_err(|e| match e {
        Error::ToolFailed { ref detail, .. } if detail.contains("Could not allocate") || detail.contains("No space") => {
            let needed = size::default_for(bytes, inodes);
            Error::TooSmall { requested: size, needed, needed_mib: needed / MIB }
        }
        e => e,
    })?;
    progress::step("setting owners, modes and timestamps…");
    let script_path = work.join("attrs.debugfs");
    std::fs::write(&script_path, script).map_err(io("writing the debugfs script"))?;
    debugfs::run_script(image, &script_path, fake_time(opts.epoch))
}

/// Facts from `dumpe2fs -h`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuperInfo {
    pub block_size: u64,
    pub block_count: u64,
    pub free_blocks: u64,
    pub needs_recovery: bool,
}

pub fn parse_dumpe2fs(text: &str) -> Option<SuperInfo> {
    let field = |name: &str| text.lines().find_map(|l| l.strip_prefix(name)).map(|v| v.trim_start_matches(':').trim());
    Some(SuperInfo {
        block_size: field("Block size")?.parse().ok()?,
        block_count: field("Block count")?.parse().ok()?,
        free_blocks: field("Free blocks")?.parse().ok()?,
        needs_recovery: field("Filesystem features")?.split_whitespace().any(|f| f == "needs_recovery"),
    })
}

fn super_info(image: &Path) -> Result<SuperInfo> {
    let out = tools::run("dumpe2fs", Command::new("dumpe2fs").arg("-h").arg(image), &[])?;
    parse_dumpe2fs(&String::from_utf8_lossy(&out.stdout)).ok_or_else(|| Error::ToolFailed {
        tool: "dumpe2fs",
        status: "unexpected output".into(),
        detail: "no block size / count in dumpe2fs -h".into(),
    })
}

fn inject(plan: &Plan, opts: &Ext4Options, work: &Path, base: &Path, image: &Path) -> Result<()> {
    progress::step(&format!("copying base image {}…", base.display()));
    // The base is only ever read, by cp.
    tools::run("cp", Command::new("cp").args(["--reflink=auto", "--sparse=always"]).arg(base).arg(image), &[])?;
    let fake = fake_time(opts.epoch);
    let info = super_info(image)?;
    let current = info.block_size * info.block_count;
    let free = info.block_size * info.free_blocks;
    let (bytes, inodes) = plan.footprint()?;
    let need = size::minimum(bytes, inodes) - 4 * MIB + MIB;
    let target = match opts.size {
        Some(s) if s < current => {
            return Err(Error::BadOption {
                option: "--size",
                value: s.to_string(),
                problem: format!(
                    "smaller than the base image ({current} bytes); shrinking is not supported, leave --size out or pass at least {}M",
                    current.div_ceil(MIB)
                ),
            })
        }
        Some(s) => s,
        None if free >= need + need / 4 => current,
        None => size::round_mib(current + need + need / 4 + 8 * MIB),
    };
    if info.needs_recovery || target > current {
        progress::step("e2fsck -fy on the copy…");
        tools::run(
            "e2fsck",
            Command::new("e2fsck").env("E2FSCK_TIME", fake.to_string()).env("E2FSPROGS_FAKE_TIME", fake.to_string()).arg("-fy").arg(image),
            // 1: errors corrected; 2: corrected, "reboot" (meaningless for an image file).
            &[1, 2],
        )?;
    }
    if target > current {
        progress::step(&format!("resize2fs {} MiB → {} MiB…", current / MIB, target / MIB));
        let f = std::fs::OpenOptions::new().write(true).open(image).map_err(io(format!("opening {}", image.display())))?;
        f.set_len(target).map_err(io(format!("growing {}", image.display())))?;
        drop(f);
        tools::run("resize2fs", Command::new("resize2fs").env("E2FSPROGS_FAKE_TIME", fake.to_string()).arg(image), &[])?;
    }
    progress::step(&format!("writing {} entries with debugfs…", plan.entries.len()));
    let placed = place(plan, &mut debugfs::ImageLookup { image })?;
    let files = work.join("files");
    std::fs::create_dir(&files).map_err(io("creating a work directory"))?;
    let mut script = String::new();
    let q = |s: &str| debugfs::quote(s).map_err(|p| Error::BadBase { path: PathBuf::from(s), problem: p });
    for (i, ((_, entry), (real, action))) in plan.entries.iter().zip(&placed).enumerate() {
        let qr = q(real)?;
        match action {
            Action::KeepDir => continue,
            Action::MakeDir => {
                let _ = writeln!(script, "mkdir {qr}");
            }
            Action::Write { replace } => {
                if *replace {
                    let _ = writeln!(script, "rm {qr}");
                }
                match &entry.kind {
                    Kind::File(c) => {
                        let src = match c {
                            Content::Path(p) => p.clone(),
                            Content::Bytes(b) => {
                                let p = files.join(i.to_string());
                                std::fs::write(&p, b).map_err(io("writing a work file"))?;
                                p
                            }
                        };
                        let src = src.to_str().ok_or_else(|| Error::BadOption {
                            option: "--add",
                            value: src.display().to_string(),
                            problem: "the source path is not UTF-8".into(),
                        })?;
                        let _ = writeln!(script, "write {} {qr}", q(src)?);
                    }
                    Kind::Symlink(t) => {
                        let _ = writeln!(script, "symlink {qr} {}", q(t)?);
                    }
                    Kind::CharDev { .. } => return Err(device_node_refused(real)),
                    Kind::Dir => {}
                }
            }
        }
        for line in debugfs::sif(real, &Attrs::ours(entry.mode(), opts.epoch))
            .map_err(|p| Error::BadBase { path: PathBuf::from(real), problem: p })?
        {
            script.push_str(&line);
            script.push('\n');
        }
    }
    if let Some(l) = &opts.label {
        let _ = writeln!(script, "ssv volume_name {}", q(l)?);
    }
    let script_path = work.join("inject.debugfs");
    std::fs::write(&script_path, script).map_err(io("writing the debugfs script"))?;
    debugfs::run_script(image, &script_path, fake)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resolve::tests::Fake;

    #[test]
    fn detect_base_kinds() {
        let dir = std::env::temp_dir().join(format!("detect-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let write = |name: &str, at: usize, bytes: &[u8]| {
            let mut b = vec![0u8; 4096];
            b[at..at + bytes.len()].copy_from_slice(bytes);
            std::fs::write(dir.join(name), b).unwrap();
            dir.join(name)
        };
        let ext4 = write("img", 1080, &[0x53, 0xEF]);
        let tar = write("t.tar", 257, b"ustar");
        let gz = write("t.tgz", 0, &[0x1f, 0x8b]);
        let zst = write("t.tar.zst", 0, &[0x28, 0xb5, 0x2f, 0xfd]);
        let junk = write("junk", 0, b"hello");
        assert_eq!(Base::detect(&dir).unwrap(), Base::Dir(dir.clone()));
        assert_eq!(Base::detect(&ext4).unwrap(), Base::Image(ext4.clone()));
        for t in [&tar, &gz, &zst] {
            assert_eq!(Base::detect(t).unwrap(), Base::Tarball(t.clone()));
        }
        assert!(matches!(Base::detect(&junk), Err(Error::BadBase { .. })));
        assert!(matches!(Base::detect(&dir.join("missing")), Err(Error::BadBase { .. })));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn dumpe2fs_parse() {
        let text = "Filesystem volume name:   <none>\nFilesystem features:      has_journal ext_attr needs_recovery extent\nBlock count:              32768\nFree blocks:              23895\nBlock size:               1024\n";
        assert_eq!(
            parse_dumpe2fs(text),
            Some(SuperInfo { block_size: 1024, block_count: 32768, free_blocks: 23895, needs_recovery: true })
        );
        assert_eq!(parse_dumpe2fs("nothing"), None);
    }

    #[test]
    fn place_on_merged_usr() {
        let mut l = Fake(std::collections::BTreeMap::from([
            ("/usr", Node::Dir),
            ("/usr/sbin", Node::Dir),
            ("/sbin", Node::Symlink("usr/sbin".into())),
            ("/etc", Node::Dir),
            ("/etc/hostname", Node::Other),
            ("/tmp", Node::Dir),
        ]));
        let plan = Plan::root(Content::Bytes(vec![1]));
        let placed: BTreeMap<String, Action> = place(&plan, &mut l).unwrap().into_iter().collect();
        assert_eq!(placed["/usr/sbin"], Action::KeepDir);
        assert_eq!(placed["/usr/sbin/chinit"], Action::Write { replace: false });
        // The base's own /etc/hostname wins over the default one.
        assert_eq!(placed["/etc/hostname"], Action::KeepDir);
        assert_eq!(placed["/etc/passwd"], Action::Write { replace: false });
        assert_eq!(placed["/etc"], Action::KeepDir);
        assert_eq!(placed["/dev"], Action::MakeDir);
        assert_eq!(placed["/init"], Action::Write { replace: false });
    }

    #[test]
    fn place_refuses_dir_conflicts() {
        let mut l = Fake(std::collections::BTreeMap::from([("/init", Node::Dir)]));
        let plan = Plan::root(Content::Bytes(vec![1]));
        assert!(matches!(place(&plan, &mut l), Err(Error::BadBase { .. })));
    }

    #[test]
    fn uuid_is_stable_and_input_dependent() {
        let plan = Plan::root(Content::Bytes(vec![1]));
        let o = Ext4Options { size: None, label: None, epoch: 0, base: Base::None };
        let a = uuid_for(&plan, &o, &[1, 2]);
        assert_eq!(a, uuid_for(&plan, &o, &[1, 2]));
        assert_ne!(a, uuid_for(&plan, &o, &[1, 3]));
        assert_ne!(a, uuid_for(&Plan::root(Content::Bytes(vec![2])), &o, &[1, 2]), "another init, another UUID");
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
    }
}
