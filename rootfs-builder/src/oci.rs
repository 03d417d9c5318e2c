//! `--image SRC`: a container image as the guest's root. SRC is an OCI image layout directory, an
//! `oci-archive` tarball, or a `docker save` / `podman save` archive. The manifest for `--arch` is
//! picked, every blob's sha256 is checked before use, the layers are applied in order (whiteouts,
//! opaque directories, hard links; no entry may go through a symlink) into one merged tree, which
//! the ext4 build takes as a `--base` tarball and the initramfs build as cpio entries, and the
//! config becomes chinit's workload file.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use agent::workload::Spec;
use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest, MediaType};
use sha2::{Digest as _, Sha256};

use crate::cpio::CpioEntry;
use crate::elf::Arch;
use crate::error::{Error, Result};
use crate::initramfs;
use crate::plan::normalize;
use crate::resolve::{self, Lookup};

/// What a flattened image gives the build.
#[derive(Debug)]
pub struct Flat {
    /// The merged layers.
    pub tree: Tree,
    /// The workload from the config; `None` when it has neither Entrypoint nor Cmd.
    pub workload: Option<Spec>,
    /// `os/arch` of the manifest taken, for the progress line.
    pub platform: String,
}

fn bad(src: &Path, problem: impl Into<String>) -> Error {
    Error::BadImage { path: src.to_path_buf(), problem: problem.into() }
}

/// The OCI name of an architecture (`GOARCH`).
pub fn oci_arch(arch: Arch) -> &'static str {
    match arch {
        Arch::X86_64 => "amd64",
        Arch::Aarch64 => "arm64",
    }
}

/// Reads SRC (an archive is unpacked into `work`), picks the manifest for `arch`, applies its layers.
pub fn flatten(src: &Path, arch: Arch, work: &Path) -> Result<Flat> {
    let meta = std::fs::metadata(src).map_err(|e| bad(src, format!("cannot read it: {e}")))?;
    let dir = if meta.is_dir() {
        src.to_path_buf()
    } else {
        let d = work.join("image-src");
        unpack_archive(src, &d)?;
        d
    };
    let store = Store { src, dir: &dir };
    let (config, layers) = if dir.join("index.json").is_file() {
        oci_manifest(&store, arch)?
    } else if dir.join("manifest.json").is_file() {
        docker_manifest(&store)?
    } else {
        return Err(bad(src, "neither an OCI image layout (index.json) nor a docker or podman save archive (manifest.json)"));
    };
    let want = oci_arch(arch);
    let have = config.architecture().to_string();
    if have != want {
        return Err(bad(src, format!("the image is for {}/{have}, not {want} (--arch {})", config.os(), arch.name())));
    }
    let mut tree = Tree::default();
    for (i, layer) in layers.iter().enumerate() {
        let mut reader = layer.open(&store)?;
        tree.apply(i, &mut reader).map_err(|p| bad(src, format!("layer {} ({}): {p}", i + 1, layer.name)))?;
        layer.check_diff_id(src, reader)?;
    }
    let workload = workload(&config, &tree).map_err(|p| bad(src, p))?;
    Ok(Flat { tree, workload, platform: format!("{}/{have}", config.os()) })
}

/// Extracts the regular files of an archive (oci-archive, docker save) into `dir`.
fn unpack_archive(src: &Path, dir: &Path) -> Result<()> {
    let f = std::fs::File::open(src).map_err(|e| bad(src, format!("cannot read it: {e}")))?;
    std::fs::create_dir_all(dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    let mut ar = tar::Archive::new(f);
    let entries = ar.entries().map_err(|e| bad(src, format!("not a tar archive: {e}")))?;
    // Older `docker save` archives store a layer two images share once, and a symlink to it.
    let mut links = Vec::new();
    for entry in entries {
        let mut entry = entry.map_err(|e| bad(src, format!("not a tar archive: {e}")))?;
        let name = entry.path().map_err(|e| bad(src, e.to_string()))?.to_string_lossy().into_owned();
        let rel = normalize(&format!("/{}", name.trim_start_matches("./"))).map_err(|p| bad(src, format!("{name}: {p}")))?;
        match entry.header().entry_type() {
            tar::EntryType::Regular => {}
            tar::EntryType::Symlink | tar::EntryType::Link => {
                if let Ok(Some(t)) = entry.link_name() {
                    links.push((rel, entry.header().entry_type(), t.to_string_lossy().into_owned()));
                }
                continue;
            }
            _ => continue,
        }
        let out = dir.join(rel.trim_start_matches('/'));
        if let Some(p) = out.parent() {
            std::fs::create_dir_all(p).map_err(|e| Error::io(format!("creating {}", p.display()), e))?;
        }
        let mut o = std::fs::File::create(&out).map_err(|e| Error::io(format!("writing {}", out.display()), e))?;
        std::io::copy(&mut entry, &mut o).map_err(|e| bad(src, format!("{name}: {e} (truncated archive?)")))?;
    }
    for (rel, kind, target) in links {
        // A symlink's target is relative to its directory, a hard link's to the archive's root; both
        // must stay in the archive (normalize refuses `..` left over).
        let joined = if kind == tar::EntryType::Symlink && !target.starts_with('/') {
            let mut parts: Vec<&str> = crate::plan::parent(&rel).split('/').filter(|c| !c.is_empty()).collect();
            for c in target.split('/').filter(|c| !c.is_empty() && *c != ".") {
                if c == ".." {
                    parts.pop().ok_or_else(|| bad(src, format!("{rel} -> {target} leads out of the archive")))?;
                } else {
                    parts.push(c);
                }
            }
            format!("/{}", parts.join("/"))
        } else {
            format!("/{}", target.trim_start_matches("./").trim_start_matches('/'))
        };
        let from = normalize(&joined).map_err(|p| bad(src, format!("{rel} -> {target}: {p}")))?;
        let (from, to) = (dir.join(from.trim_start_matches('/')), dir.join(rel.trim_start_matches('/')));
        if from.is_file() {
            if let Some(p) = to.parent() {
                std::fs::create_dir_all(p).map_err(|e| Error::io(format!("creating {}", p.display()), e))?;
            }
            std::fs::copy(&from, &to).map_err(|e| Error::io(format!("copying {} to {}", from.display(), to.display()), e))?;
        }
    }
    Ok(())
}

/// The blobs of an unpacked image, read only after their sha256 is checked.
struct Store<'a> {
    src: &'a Path,
    dir: &'a Path,
}

fn sha256_file(path: &Path) -> std::io::Result<(String, u64)> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let n = std::io::copy(&mut f, &mut h)?;
    Ok((hex(&h.finalize()), n))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Store<'_> {
    /// The path of a descriptor's blob, its size and sha256 checked.
    fn blob(&self, d: &Descriptor) -> Result<PathBuf> {
        let digest = d.digest();
        let alg = digest.algorithm().to_string();
        if alg != "sha256" {
            return Err(bad(self.src, format!("blob {digest}: only sha256 digests are checked, not {alg}")));
        }
        let path = self.dir.join("blobs").join("sha256").join(digest.digest());
        let (sum, len) = sha256_file(&path).map_err(|e| bad(self.src, format!("blob {digest} is missing: {e}")))?;
        if len != d.size() {
            return Err(bad(self.src, format!("blob {digest} has {len} bytes, the manifest says {} (truncated or tampered)", d.size())));
        }
        if sum != digest.digest() {
            return Err(bad(self.src, format!("blob {digest} does not match its sha256 (it is sha256:{sum}): tampered or corrupt")));
        }
        Ok(path)
    }

    fn read(&self, d: &Descriptor) -> Result<Vec<u8>> {
        let p = self.blob(d)?;
        std::fs::read(&p).map_err(|e| Error::io(format!("reading {}", p.display()), e))
    }
}

/// One layer to apply: a verified file, and for docker archives the uncompressed digest to check.
struct Layer {
    path: PathBuf,
    name: String,
    diff_id: Option<String>,
}

/// A reader that hashes what goes through it, when there is a digest to check.
struct Hashing<R> {
    inner: R,
    hash: Option<Sha256>,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(h) = &mut self.hash {
            h.update(&buf[..n]);
        }
        Ok(n)
    }
}

impl Layer {
    /// The layer's tar stream: gzip, zstd or plain, by its first bytes; hashed when it has a diff_id.
    fn open(&self, store: &Store) -> Result<Hashing<Box<dyn Read>>> {
        let mut f = std::fs::File::open(&self.path).map_err(|e| bad(store.src, format!("{}: {e}", self.name)))?;
        let mut head = [0u8; 4];
        let n = f.read(&mut head).map_err(|e| bad(store.src, format!("{}: {e}", self.name)))?;
        let f = std::io::BufReader::new(std::io::Cursor::new(head[..n].to_vec()).chain(f));
        let plain: Box<dyn Read> = if head[..n].starts_with(&[0x1f, 0x8b]) {
            Box::new(flate2::read::GzDecoder::new(f))
        } else if head[..n].starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Box::new(
                ruzstd::decoding::StreamingDecoder::new(f).map_err(|e| bad(store.src, format!("{}: not a zstd stream: {e}", self.name)))?,
            )
        } else {
            Box::new(f)
        };
        Ok(Hashing { inner: plain, hash: self.diff_id.as_ref().map(|_| Sha256::new()) })
    }

    /// A docker archive names its layers by their uncompressed digest (the config's diff_ids):
    /// `read` is the layer's stream, read to its end.
    fn check_diff_id(&self, src: &Path, read: Hashing<Box<dyn Read>>) -> Result<()> {
        let (Some(want), Some(h)) = (&self.diff_id, read.hash) else { return Ok(()) };
        let got = hex(&h.finalize());
        if want.strip_prefix("sha256:") != Some(got.as_str()) {
            return Err(bad(
                src,
                format!("layer {} does not match its digest {want} (it is sha256:{got}): tampered or corrupt", self.name),
            ));
        }
        Ok(())
    }
}

fn manifest_of(store: &Store, d: &Descriptor) -> Result<(ImageConfiguration, Vec<Layer>)> {
    let m = ImageManifest::from_reader(&store.read(d)?[..]).map_err(|e| bad(store.src, format!("manifest {}: {e}", d.digest())))?;
    let config = ImageConfiguration::from_reader(&store.read(m.config())?[..])
        .map_err(|e| bad(store.src, format!("config {}: {e}", m.config().digest())))?;
    let mut layers = Vec::new();
    for l in m.layers() {
        layers.push(Layer { path: store.blob(l)?, name: l.digest().to_string(), diff_id: None });
    }
    Ok((config, layers))
}

/// The manifest for `arch` in an OCI layout's index (nested indexes followed).
fn oci_manifest(store: &Store, arch: Arch) -> Result<(ImageConfiguration, Vec<Layer>)> {
    let index = ImageIndex::from_file(store.dir.join("index.json")).map_err(|e| bad(store.src, format!("index.json: {e}")))?;
    pick(store, &index, arch, 0)
}

fn pick(store: &Store, index: &ImageIndex, arch: Arch, depth: u32) -> Result<(ImageConfiguration, Vec<Layer>)> {
    let want = oci_arch(arch);
    let mut platforms = Vec::new();
    let mut unnamed = Vec::new();
    for d in index.manifests() {
        if *d.media_type() == MediaType::ImageIndex && depth < 4 {
            let inner = ImageIndex::from_reader(&store.read(d)?[..]).map_err(|e| bad(store.src, format!("index {}: {e}", d.digest())))?;
            return pick(store, &inner, arch, depth + 1);
        }
        match d.platform() {
            Some(p) if p.os().to_string() == "linux" && p.architecture().to_string() == want => return manifest_of(store, d),
            Some(p) => platforms.push(format!("{}/{}", p.os(), p.architecture())),
            None => unnamed.push(d),
        }
    }
    match (unnamed.as_slice(), platforms.is_empty()) {
        ([d], true) => manifest_of(store, d),
        ([], true) => Err(bad(store.src, "the index lists no manifest")),
        (_, true) => Err(bad(store.src, "the index lists several manifests and none names its platform")),
        _ => Err(bad(store.src, format!("no manifest for linux/{want} (--arch {}); the image has {}", arch.name(), platforms.join(", ")))),
    }
}

/// `manifest.json` of `docker save` / `podman save`: the first image; its config checked against
/// its name, its layers against the config's diff_ids.
fn docker_manifest(store: &Store) -> Result<(ImageConfiguration, Vec<Layer>)> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Entry {
        config: String,
        layers: Vec<String>,
    }
    let text = std::fs::read(store.dir.join("manifest.json")).map_err(|e| bad(store.src, format!("manifest.json: {e}")))?;
    let list: Vec<Entry> = serde_json::from_slice(&text).map_err(|e| bad(store.src, format!("manifest.json: {e}")))?;
    let e = list.into_iter().next().ok_or_else(|| bad(store.src, "manifest.json lists no image"))?;
    let in_dir = |name: &str| -> Result<PathBuf> {
        let rel = normalize(&format!("/{name}")).map_err(|p| bad(store.src, format!("{name}: {p}")))?;
        Ok(store.dir.join(rel.trim_start_matches('/')))
    };
    let config_path = in_dir(&e.config)?;
    let (sum, _) = sha256_file(&config_path).map_err(|err| bad(store.src, format!("config {} is missing: {err}", e.config)))?;
    let named = Path::new(&e.config).file_name().map(|n| n.to_string_lossy().trim_end_matches(".json").to_string()).unwrap_or_default();
    if named != sum {
        return Err(bad(store.src, format!("config {} does not match its sha256 (it is sha256:{sum}): tampered or corrupt", e.config)));
    }
    let config = ImageConfiguration::from_file(&config_path).map_err(|err| bad(store.src, format!("config {}: {err}", e.config)))?;
    let diff_ids = config.rootfs().diff_ids();
    if diff_ids.len() != e.layers.len() {
        return Err(bad(store.src, format!("{} layers but the config lists {} diff_ids", e.layers.len(), diff_ids.len())));
    }
    let mut layers = Vec::new();
    for (name, id) in e.layers.iter().zip(diff_ids) {
        layers.push(Layer { path: in_dir(name)?, name: name.clone(), diff_id: Some(id.clone()) });
    }
    Ok((config, layers))
}

/// One entry of the merged tree.
#[derive(Debug, Clone)]
struct Node {
    header: tar::Header,
    kind: NodeKind,
    /// PAX records to keep (xattrs), as (key, value).
    pax: Vec<(String, Vec<u8>)>,
    layer: usize,
}

#[derive(Debug, Clone)]
enum NodeKind {
    Dir,
    File(Rc<[u8]>),
    Symlink(String),
    /// A hard link to `target`, with the bytes it had when linked (used if the target goes).
    Link {
        target: String,
        data: Rc<[u8]>,
    },
    Other,
}

/// The layers applied so far, by path.
#[derive(Debug, Default)]
pub struct Tree {
    nodes: BTreeMap<String, Node>,
}

fn remove_under(nodes: &mut BTreeMap<String, Node>, path: &str, keep_layer: Option<usize>) {
    let prefix = if path == "/" { "/".to_string() } else { format!("{path}/") };
    nodes.retain(|k, n| !(k.starts_with(&prefix) && Some(n.layer) != keep_layer));
}

impl Tree {
    /// Applies one layer's tar stream.
    pub fn apply(&mut self, layer: usize, r: impl Read) -> std::result::Result<(), String> {
        let mut ar = tar::Archive::new(r);
        for entry in ar.entries().map_err(|e| format!("not a tar stream: {e}"))? {
            let mut entry = entry.map_err(|e| format!("not a tar stream: {e}"))?;
            let raw = entry.path().map_err(|e| e.to_string())?.to_string_lossy().into_owned();
            let rel = raw.trim_start_matches("./").trim_start_matches('/');
            if rel.is_empty() || rel == "." {
                continue;
            }
            let path = normalize(&format!("/{rel}")).map_err(|p| format!("{raw}: {p}"))?;
            self.through_symlink(&path).map_err(|p| format!("{raw}: {p}"))?;
            let (parent, base) = path.rsplit_once('/').unwrap_or(("", &path));
            let parent = if parent.is_empty() { "/" } else { parent };
            if base == ".wh..wh..opq" {
                remove_under(&mut self.nodes, parent, Some(layer));
                continue;
            }
            if let Some(name) = base.strip_prefix(".wh.") {
                let gone = if parent == "/" { format!("/{name}") } else { format!("{parent}/{name}") };
                self.nodes.remove(&gone);
                remove_under(&mut self.nodes, &gone, None);
                continue;
            }
            let mut pax = Vec::new();
            if let Some(exts) = entry.pax_extensions().map_err(|e| e.to_string())? {
                for ext in exts {
                    let ext = ext.map_err(|e| e.to_string())?;
                    if let Ok(k) = ext.key() {
                        if k.starts_with("SCHILY.xattr.") {
                            pax.push((k.to_string(), ext.value_bytes().to_vec()));
                        }
                    }
                }
            }
            let header = entry.header().clone();
            let kind = match header.entry_type() {
                tar::EntryType::Directory => NodeKind::Dir,
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    let mut data = Vec::new();
                    entry.read_to_end(&mut data).map_err(|e| format!("{raw}: {e}"))?;
                    NodeKind::File(data.into())
                }
                tar::EntryType::Symlink => {
                    let t = entry.link_name().map_err(|e| e.to_string())?.ok_or(format!("{raw}: symlink without a target"))?;
                    NodeKind::Symlink(t.to_string_lossy().into_owned())
                }
                tar::EntryType::Link => {
                    let t = entry.link_name().map_err(|e| e.to_string())?.ok_or(format!("{raw}: hard link without a target"))?;
                    let t = t.to_string_lossy();
                    let target = normalize(&format!("/{}", t.trim_start_matches("./").trim_start_matches('/')))
                        .map_err(|p| format!("{raw}: hard link target {t}: {p}"))?;
                    let data = match self.nodes.get(&target).map(|n| &n.kind) {
                        Some(NodeKind::File(d)) | Some(NodeKind::Link { data: d, .. }) => Rc::clone(d),
                        _ => return Err(format!("{raw}: hard link to {target}, which is not a file in the image")),
                    };
                    let target = match self.nodes.get(&target).map(|n| &n.kind) {
                        Some(NodeKind::Link { target: t, .. }) => t.clone(),
                        _ => target,
                    };
                    NodeKind::Link { target, data }
                }
                tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => NodeKind::Other,
                other => return Err(format!("{raw}: entry type {other:?} is not supported")),
            };
            let is_dir = matches!(kind, NodeKind::Dir);
            match self.nodes.get(&path) {
                Some(n) if is_dir && matches!(n.kind, NodeKind::Dir) => {}
                _ => remove_under(&mut self.nodes, &path, None),
            }
            self.nodes.insert(path, Node { header, kind, pax, layer });
        }
        // The end-of-archive blocks and padding too: a docker archive's digest covers every byte.
        std::io::copy(&mut ar.into_inner(), &mut std::io::sink()).map_err(|e| format!("reading past the last entry: {e}"))?;
        Ok(())
    }

    /// Refuses a path whose parent directories include a symlink: writing it would follow the link,
    /// maybe out of the image.
    fn through_symlink(&self, path: &str) -> std::result::Result<(), String> {
        let mut cur = String::new();
        let comps: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
        for c in comps.iter().take(comps.len().saturating_sub(1)) {
            cur.push('/');
            cur.push_str(c);
            if let Some(Node { kind: NodeKind::Symlink(t), .. }) = self.nodes.get(&cur) {
                return Err(format!("goes through the symlink {cur} -> {t}; refused (a layer must not write through a symlink)"));
            }
        }
        Ok(())
    }

    /// A regular file's bytes in the merged tree (symlinks followed inside the tree).
    pub fn file(&self, path: &str) -> Option<&[u8]> {
        let real = resolve::resolve(&mut &*self, path, true).ok()?;
        match &self.nodes.get(&real)?.kind {
            NodeKind::File(d) | NodeKind::Link { data: d, .. } => Some(d),
            _ => None,
        }
    }

    /// The target of a hard link that is still the file it was linked to (the same bytes, not a copy);
    /// `None` when a later layer deleted or replaced it (the link then stands alone, with its bytes,
    /// as it would after the layers were unpacked one over another).
    fn link_target<'a>(&self, n: &'a Node) -> Option<&'a str> {
        let NodeKind::Link { target, data } = &n.kind else { return None };
        match self.nodes.get(target).map(|t| &t.kind) {
            Some(NodeKind::File(now)) if Rc::ptr_eq(now, data) => Some(target),
            _ => None,
        }
    }

    /// Paths in the merged tree, for tests and messages.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.nodes.keys().map(String::as_str)
    }

    /// Writes the merged tree as one tarball: everything by path, then the hard links (their targets
    /// must come first). Equal trees give equal bytes.
    pub fn write(&self, out: &Path) -> std::io::Result<()> {
        let f = std::io::BufWriter::new(std::fs::File::create(out)?);
        let mut b = tar::Builder::new(f);
        b.mode(tar::HeaderMode::Complete);
        let links = self.nodes.iter().filter(|(_, n)| matches!(n.kind, NodeKind::Link { .. }));
        let rest = self.nodes.iter().filter(|(_, n)| !matches!(n.kind, NodeKind::Link { .. }));
        for (path, n) in rest.chain(links) {
            if !n.pax.is_empty() {
                b.append_pax_extensions(n.pax.iter().map(|(k, v)| (k.as_str(), v.as_slice())))?;
            }
            let name = path.trim_start_matches('/');
            let mut h = n.header.clone();
            match &n.kind {
                NodeKind::Dir | NodeKind::Other => {
                    h.set_size(0);
                    b.append_data(&mut h, name, std::io::empty())?;
                }
                NodeKind::File(d) => {
                    h.set_size(d.len() as u64);
                    b.append_data(&mut h, name, &d[..])?;
                }
                NodeKind::Symlink(t) => {
                    h.set_size(0);
                    b.append_link(&mut h, name, t)?;
                }
                NodeKind::Link { data, .. } => match self.link_target(n) {
                    Some(target) => {
                        h.set_size(0);
                        b.append_link(&mut h, name, target.trim_start_matches('/'))?;
                    }
                    None => {
                        h.set_entry_type(tar::EntryType::Regular);
                        h.as_old_mut().linkname = [0; 100];
                        h.set_size(data.len() as u64);
                        b.append_data(&mut h, name, &data[..])?;
                    }
                },
            }
        }
        b.into_inner()?.flush()
    }

    /// The merged tree as cpio entries by path, owners, modes and device numbers kept, a hard link in
    /// one link group with its target; and how many entries have extended attributes, which a cpio
    /// archive cannot carry. The tree's bytes move into the entries.
    pub fn into_cpio(mut self) -> std::result::Result<(initramfs::Tree, usize), String> {
        let xattrs = self.nodes.values().filter(|n| !n.pax.is_empty()).count();
        let targets: Vec<Option<String>> = self.nodes.values().map(|n| self.link_target(n).map(String::from)).collect();
        let mut out = initramfs::Tree::default();
        let mut links = Vec::new();
        for ((path, n), target) in std::mem::take(&mut self.nodes).into_iter().zip(targets) {
            match target {
                Some(target) => links.push((path, target)),
                None => {
                    let e = cpio_entry(&path, &n)?;
                    out.entries.insert(path, e);
                }
            }
        }
        // A hard link shares its target's inode: its owner, mode and bytes.
        for (path, target) in links {
            let next = out.groups;
            let to = out.entries.get_mut(&target).ok_or_else(|| format!("{path}: hard link to {target}, which is not in the image"))?;
            if to.link.is_none() {
                to.link = Some(next);
                out.groups += 1;
            }
            let e = CpioEntry { name: path.trim_start_matches('/').to_string(), ..to.clone() };
            out.entries.insert(path, e);
        }
        Ok((out, xattrs))
    }
}

/// Lets [`resolve::resolve`] follow the tree's own symlinks.
impl Lookup for &Tree {
    fn node(&mut self, path: &str) -> std::result::Result<resolve::Node, String> {
        Ok(match self.nodes.get(path).map(|n| &n.kind) {
            None => resolve::Node::Missing,
            Some(NodeKind::Dir) => resolve::Node::Dir,
            Some(NodeKind::Symlink(t)) => resolve::Node::Symlink(t.clone()),
            Some(_) => resolve::Node::Other,
        })
    }
}

/// One entry of the tree, not a hard link to a file in it, as cpio: its own header's owner and mode.
fn cpio_entry(path: &str, n: &Node) -> std::result::Result<CpioEntry, String> {
    let h = &n.header;
    let num =
        |v: std::io::Result<u64>| v.ok().and_then(|v| u32::try_from(v).ok()).ok_or_else(|| format!("{path}: bad number in its header"));
    let dev = |v: std::io::Result<Option<u32>>| v.ok().flatten().unwrap_or(0);
    let mut e = CpioEntry {
        name: path.trim_start_matches('/').to_string(),
        mode: num(h.mode().map(u64::from))? & 0o7777,
        uid: num(h.uid())?,
        gid: num(h.gid())?,
        ..CpioEntry::default()
    };
    let kind = match &n.kind {
        NodeKind::Dir => libc::S_IFDIR,
        NodeKind::File(d) | NodeKind::Link { data: d, .. } => {
            e.data = d.to_vec();
            libc::S_IFREG
        }
        NodeKind::Symlink(t) => {
            e.data = t.clone().into_bytes();
            libc::S_IFLNK
        }
        NodeKind::Other => match h.entry_type() {
            tar::EntryType::Char | tar::EntryType::Block => {
                (e.rdev_major, e.rdev_minor) = (dev(h.device_major()), dev(h.device_minor()));
                if h.entry_type() == tar::EntryType::Char {
                    libc::S_IFCHR
                } else {
                    libc::S_IFBLK
                }
            }
            _ => libc::S_IFIFO,
        },
    };
    e.mode |= kind;
    Ok(e)
}

/// The workload of an image config: argv = Entrypoint + Cmd, Env, WorkingDir, User resolved in the
/// image's own /etc/passwd and /etc/group, StopSignal. `None` without Entrypoint and Cmd.
fn workload(config: &ImageConfiguration, tree: &Tree) -> std::result::Result<Option<Spec>, String> {
    let Some(c) = config.config() else { return Ok(None) };
    let argv: Vec<String> = c.entrypoint().iter().flatten().chain(c.cmd().iter().flatten()).cloned().collect();
    if argv.is_empty() {
        return Ok(None);
    }
    let user = c.user().as_deref().unwrap_or("");
    let (uid, gid, groups) = resolve_user(user, tree.file("/etc/passwd"), tree.file("/etc/group"))?;
    let spec = Spec {
        argv,
        env: c.env().clone().unwrap_or_default(),
        cwd: c.working_dir().clone().filter(|w| !w.is_empty()).unwrap_or_else(|| "/".into()),
        uid,
        gid,
        groups,
        stop_signal: c.stop_signal().clone().filter(|s| !s.is_empty()).unwrap_or_else(|| "SIGTERM".into()),
    };
    spec.check().map_err(|p| format!("the image's config: {p}"))?;
    Ok(Some(spec))
}

/// `User` of an image config: `name`, `uid`, `name:group`, `uid:gid` (any mix), resolved in the
/// image's /etc/passwd and /etc/group as the container runtimes do. Empty is root.
pub fn resolve_user(user: &str, passwd: Option<&[u8]>, group: Option<&[u8]>) -> std::result::Result<(u32, u32, Vec<u32>), String> {
    let passwd = passwd.map(String::from_utf8_lossy).unwrap_or_default();
    let group = group.map(String::from_utf8_lossy).unwrap_or_default();
    let users: Vec<Vec<&str>> = passwd.lines().map(|l| l.split(':').collect::<Vec<_>>()).filter(|f| f.len() >= 4).collect();
    let groups: Vec<Vec<&str>> = group.lines().map(|l| l.split(':').collect::<Vec<_>>()).filter(|f| f.len() >= 3).collect();
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let (uid, name, primary) = if u.is_empty() {
        (0, Some("root".to_string()), 0)
    } else if let Ok(n) = u.parse::<u32>() {
        let row = users.iter().find(|f| f[2] == u);
        (n, row.map(|f| f[0].to_string()), row.and_then(|f| f[3].parse().ok()).unwrap_or(0))
    } else {
        let row = users.iter().find(|f| f[0] == u).ok_or_else(|| format!("User {user:?}: no user {u:?} in the image's /etc/passwd"))?;
        let uid = row[2].parse().map_err(|_| format!("User {user:?}: the image's /etc/passwd has a bad uid for {u}"))?;
        (uid, Some(u.to_string()), row[3].parse().map_err(|_| format!("User {user:?}: the image's /etc/passwd has a bad gid for {u}"))?)
    };
    let gid = match g {
        None | Some("") => primary,
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => groups
                .iter()
                .find(|f| f[0] == g)
                .and_then(|f| f[2].parse().ok())
                .ok_or_else(|| format!("User {user:?}: no group {g:?} in the image's /etc/group"))?,
        },
    };
    let mut extra = Vec::new();
    if let Some(name) = &name {
        for f in &groups {
            if f.get(3).is_some_and(|m| m.split(',').any(|m| m == name)) {
                if let Ok(n) = f[2].parse::<u32>() {
                    if n != gid && !extra.contains(&n) {
                        extra.push(n);
                    }
                }
            }
        }
    }
    Ok((uid, gid, extra))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &[u8] = b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n";
    const GROUP: &[u8] = b"root:x:0:\napp:x:1000:\nstaff:x:50:app,bob\n";

    #[test]
    fn users_resolve_as_runtimes_do() {
        let r = |u| resolve_user(u, Some(PASSWD), Some(GROUP));
        assert_eq!(r(""), Ok((0, 0, vec![])));
        assert_eq!(r("app"), Ok((1000, 1000, vec![50])));
        assert_eq!(r("1000"), Ok((1000, 1000, vec![50])));
        assert_eq!(r("app:staff"), Ok((1000, 50, vec![])));
        assert_eq!(r("4242:77"), Ok((4242, 77, vec![])));
        assert_eq!(r("4242"), Ok((4242, 0, vec![])));
        assert!(r("nobody").unwrap_err().contains("no user \"nobody\""));
        assert!(r("app:wheel").unwrap_err().contains("no group \"wheel\""));
        assert!(resolve_user("app", None, None).unwrap_err().contains("/etc/passwd"));
    }

    fn layer(entries: &[(&str, tar::EntryType, &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, ty, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*ty);
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            match ty {
                tar::EntryType::Symlink | tar::EntryType::Link => {
                    h.set_size(0);
                    b.append_link(&mut h, path, data).unwrap();
                }
                _ if path.starts_with("..") => {
                    // The tar crate refuses to write such a name; a hostile layer has it anyway.
                    h.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
                    h.set_size(data.len() as u64);
                    h.set_cksum();
                    b.append(&h, data.as_bytes()).unwrap();
                }
                _ => {
                    h.set_size(data.len() as u64);
                    b.append_data(&mut h, path, data.as_bytes()).unwrap();
                }
            }
        }
        b.into_inner().unwrap()
    }

    use tar::EntryType::{Directory as D, Link as H, Regular as F, Symlink as S};

    #[test]
    fn whiteouts_opaque_dirs_and_links() {
        let mut t = Tree::default();
        let l0 = layer(&[("a/", D, ""), ("a/x", F, "x"), ("a/y", F, "y"), ("o/", D, ""), ("o/old", F, "1"), ("f", F, "f"), ("h", H, "f")]);
        t.apply(0, &l0[..]).unwrap();
        let l1 = layer(&[("a/.wh.x", F, ""), ("o/.wh..wh..opq", F, ""), ("o/new", F, "2"), ("./.wh.f", F, "")]);
        t.apply(1, &l1[..]).unwrap();
        let paths: Vec<&str> = t.paths().collect();
        assert_eq!(paths, ["/a", "/a/y", "/h", "/o", "/o/new"]);
        assert_eq!(t.file("/h"), Some(&b"f"[..]), "a hard link keeps its bytes when its target goes");
    }

    #[test]
    fn a_hard_link_whose_target_a_later_layer_replaced_keeps_the_old_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = Tree::default();
        t.apply(0, &layer(&[("f", F, "old"), ("h", H, "f"), ("g", F, "g"), ("k", H, "g")])[..]).unwrap();
        t.apply(1, &layer(&[("f", F, "new")])[..]).unwrap();
        let out = dir.path().join("merged.tar");
        t.write(&out).unwrap();
        let mut entries = std::collections::BTreeMap::new();
        for e in tar::Archive::new(std::fs::File::open(&out).unwrap()).entries().unwrap() {
            let mut e = e.unwrap();
            let path = e.path().unwrap().to_string_lossy().into_owned();
            let link = e.link_name().unwrap().map(|l| l.to_string_lossy().into_owned());
            let mut data = String::new();
            e.read_to_string(&mut data).unwrap();
            entries.insert(path, (e.header().entry_type(), link, data));
        }
        assert_eq!(entries["f"], (F, None, "new".to_string()));
        assert_eq!(entries["h"], (F, None, "old".to_string()), "the link stands alone with the bytes it was linked to");
        assert_eq!(entries["k"], (H, Some("g".to_string()), String::new()), "a link whose target stayed is still a link");
        assert_eq!(t.file("/h"), Some(&b"old"[..]));
        let (cpio, _) = t.into_cpio().unwrap();
        let (h, f, k, g) = (&cpio.entries["/h"], &cpio.entries["/f"], &cpio.entries["/k"], &cpio.entries["/g"]);
        assert_eq!((h.data.as_slice(), h.link), (&b"old"[..], None));
        assert_eq!((f.data.as_slice(), f.link), (&b"new"[..], None));
        assert!(k.link.is_some() && k.link == g.link && k.data == b"g", "{k:?} {g:?}");
    }

    #[test]
    fn writing_through_a_symlink_is_refused() {
        let mut t = Tree::default();
        let l0 = layer(&[("etc", S, "/tmp/host")]);
        t.apply(0, &l0[..]).unwrap();
        let l1 = layer(&[("etc/passwd", F, "x")]);
        let e = t.apply(1, &l1[..]).unwrap_err();
        assert!(e.contains("symlink /etc -> /tmp/host"), "{e}");
        let l2 = layer(&[("../escape", F, "x")]);
        assert!(t.apply(2, &l2[..]).unwrap_err().contains(".."));
        let l3 = layer(&[("bad", H, "nothere")]);
        assert!(t.apply(3, &l3[..]).unwrap_err().contains("not a file in the image"));
    }

    #[test]
    fn archive_symlinks_are_copies_inside_the_archive() {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("save.tar");
        std::fs::write(&archive, layer(&[("a/layer.tar", F, "bytes"), ("b/layer.tar", S, "../a/layer.tar")])).unwrap();
        unpack_archive(&archive, &dir.path().join("out")).unwrap();
        assert_eq!(std::fs::read(dir.path().join("out/b/layer.tar")).unwrap(), b"bytes");
        std::fs::write(&archive, layer(&[("a/layer.tar", F, "bytes"), ("b", S, "../../etc/passwd")])).unwrap();
        let e = unpack_archive(&archive, &dir.path().join("out2")).unwrap_err();
        assert!(e.to_string().contains("leads out of the archive"), "{e}");
    }

    #[test]
    fn equal_trees_write_equal_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let l0 = layer(&[("z", F, "z"), ("b/", D, ""), ("a", H, "z")]);
        let write = |name: &str| {
            let mut t = Tree::default();
            t.apply(0, &l0[..]).unwrap();
            t.write(&dir.path().join(name)).unwrap();
            std::fs::read(dir.path().join(name)).unwrap()
        };
        assert_eq!(write("1"), write("2"));
    }
}
