//! `--image`: container images made offline with umoci and skopeo from busybox-static and files the
//! test writes (several layers, a deleted file, an opaque directory, a non-root USER, ENV, WORKDIR,
//! a multi-platform index), turned into ext4 roots read back file by file; every refusal has its
//! own test and message.

mod common;
use common::*;

use std::path::Path;
use std::process::Command;

/// One skip line, written to stderr directly so `cargo test` shows it.
macro_rules! skip_line {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($t)*);
    }};
}

fn tools_here() -> bool {
    for (tool, package) in [("umoci", "umoci"), ("skopeo", "skopeo"), ("mkfs.ext4", "e2fsprogs"), ("debugfs", "e2fsprogs")] {
        if Command::new(tool).arg("--version").output().is_err() && Command::new(tool).arg("-V").output().is_err() {
            skip_line!("skipped: {tool} is not installed (apt-get install {package})");
            return false;
        }
    }
    if !Path::new("/bin/busybox").exists() {
        skip_line!("skipped: /bin/busybox is missing (apt-get install busybox-static)");
        return false;
    }
    true
}

fn run(cmd: &mut Command) {
    let o = cmd.output().unwrap();
    assert!(o.status.success(), "{cmd:?}: {}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
}

/// A plain tar layer of `(path, kind, content, mode, uid)`; kind `f` file, `d` dir, `l` symlink, `h` hard link.
fn layer(path: &Path, entries: &[(&str, char, &[u8], u32, u64)]) {
    let mut b = tar::Builder::new(std::fs::File::create(path).unwrap());
    for &(name, kind, data, mode, uid) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mode(mode);
        h.set_uid(uid);
        h.set_gid(uid);
        h.set_mtime(1_600_000_000);
        match kind {
            'd' => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                b.append_data(&mut h, name, std::io::empty()).unwrap();
            }
            'l' | 'h' => {
                h.set_entry_type(if kind == 'l' { tar::EntryType::Symlink } else { tar::EntryType::Link });
                h.set_size(0);
                b.append_link(&mut h, name, std::str::from_utf8(data).unwrap()).unwrap();
            }
            _ => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, name, data).unwrap();
            }
        }
    }
    b.into_inner().unwrap();
}

const SCRIPT: &str = "echo hello from the image; id; pwd; echo A=$A; exit 7";

/// An OCI layout `dir` with tag `app`: three layers (busybox and /etc; a deletion and an opaque
/// directory; a file owned by the app user), USER app, ENV, WORKDIR, StopSignal SIGINT.
fn make_image(t: &TempDir) -> std::path::PathBuf {
    let oci = t.join("oci");
    let busybox = std::fs::read("/bin/busybox").unwrap();
    let img = format!("{}:app", oci.display());
    run(Command::new("umoci").arg("init").arg("--layout").arg(&oci));
    run(Command::new("umoci").args(["new", "--image", &img]));
    layer(
        &t.join("l1.tar"),
        &[
            ("bin", 'd', b"", 0o755, 0),
            ("bin/busybox", 'f', &busybox, 0o755, 0),
            ("bin/sh", 'h', b"bin/busybox", 0o755, 0),
            ("bin/id", 'l', b"busybox", 0o777, 0),
            ("etc", 'd', b"", 0o755, 0),
            ("etc/passwd", 'f', b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n", 0o644, 0),
            ("etc/group", 'f', b"root:x:0:\napp:x:1000:\nstaff:x:50:app\n", 0o644, 0),
            ("gone", 'f', b"deleted in layer 2", 0o644, 0),
            ("data", 'd', b"", 0o755, 0),
            ("data/old", 'f', b"hidden by the opaque directory", 0o644, 0),
            ("data/keep-not", 'f', b"also hidden", 0o644, 0),
        ],
    );
    layer(
        &t.join("l2.tar"),
        &[
            ("data", 'd', b"", 0o775, 0),
            ("data/.wh..wh..opq", 'f', b"", 0o644, 0),
            ("data/new", 'f', b"new", 0o640, 0),
            (".wh.gone", 'f', b"", 0o644, 0),
        ],
    );
    layer(
        &t.join("l3.tar"),
        &[("home", 'd', b"", 0o755, 0), ("home/app", 'd', b"", 0o700, 1000), ("home/app/notes", 'f', b"mine", 0o600, 1000)],
    );
    for l in ["l1.tar", "l2.tar", "l3.tar"] {
        run(Command::new("umoci").args(["raw", "add-layer", "--image", &img]).arg(t.join(l)));
    }
    run(Command::new("umoci").args([
        "config",
        "--image",
        &img,
        "--config.user",
        "app",
        "--config.env",
        "A=1",
        "--config.env",
        "PATH=/bin",
        "--config.workingdir",
        "/home/app",
        "--config.entrypoint",
        "/bin/sh",
        "--config.cmd",
        "-c",
        "--config.cmd",
        SCRIPT,
        "--config.stopsignal",
        "SIGINT",
    ]));
    oci
}

fn build_image(t: &TempDir, src: &Path, out: &str, extra: &[&str]) -> std::process::Output {
    let init = static_init().unwrap();
    let mut args = vec!["--out", out, "--image", src.to_str().unwrap(), "--init", init.to_str().unwrap()];
    args.extend_from_slice(extra);
    build(t.path(), &args, &[])
}

/// Whether debugfs finds something at `path`.
fn exists(img: &Path, path: &str) -> bool {
    !debugfs(img, &format!("stat {path}")).is_empty()
}

#[test]
fn layers_whiteouts_owners_and_the_workload_file() {
    if !tools_here() || static_init().is_none() {
        return;
    }
    let t = TempDir::new("oci-layers");
    let oci = make_image(&t);
    let o = build_image(&t, &oci, "app.ext4", &[]);
    assert_ok(&o);
    let img = t.join("app.ext4");
    fsck_clean(&img);

    assert_eq!(dump(&img, "/bin/busybox", t.path()), std::fs::read("/bin/busybox").unwrap());
    assert_eq!(stat(&img, "/bin/busybox"), ("regular".into(), "0755".into(), 0, 0));
    assert!(debugfs(&img, "stat /bin/id").contains("Fast link dest: \"busybox\""));
    // The hard link is the same inode as its target.
    let inode =
        |p: &str| debugfs(&img, &format!("stat {p}")).split("Inode:").nth(1).unwrap().split_whitespace().next().unwrap().to_string();
    assert_eq!(inode("/bin/sh"), inode("/bin/busybox"));
    // Layer 2 deleted /gone and made /data opaque.
    assert!(!exists(&img, "/gone"), "a .wh. whiteout deletes");
    assert!(!exists(&img, "/data/old") && !exists(&img, "/data/keep-not"), "an opaque directory hides the lower layers");
    assert_eq!(dump(&img, "/data/new", t.path()), b"new");
    assert_eq!(stat(&img, "/data"), ("directory".into(), "0775".into(), 0, 0));
    assert_eq!(stat(&img, "/data/new"), ("regular".into(), "0640".into(), 0, 0));
    assert!(!exists(&img, "/data/.wh..wh..opq") && !exists(&img, "/.wh.gone"), "whiteouts are not files");
    // Owners and modes are kept.
    assert_eq!(stat(&img, "/home/app"), ("directory".into(), "0700".into(), 1000, 1000));
    assert_eq!(stat(&img, "/home/app/notes"), ("regular".into(), "0600".into(), 1000, 1000));
    // The image's own /etc wins over chinit's defaults; chinit is there.
    assert!(String::from_utf8(dump(&img, "/etc/passwd", t.path())).unwrap().contains("app:x:1000"));
    assert_eq!(stat(&img, "/sbin/chinit"), ("regular".into(), "0755".into(), 0, 0));

    // The workload: Entrypoint + Cmd, Env, WorkingDir, User resolved in the image's /etc.
    let spec = agent::workload::Spec::parse(&String::from_utf8(dump(&img, agent::workload::PATH, t.path())).unwrap()).unwrap();
    assert_eq!(spec.argv, ["/bin/sh", "-c", SCRIPT]);
    assert_eq!(spec.env, ["A=1", "PATH=/bin"]);
    assert_eq!((spec.cwd.as_str(), spec.uid, spec.gid, spec.groups.as_slice()), ("/home/app", 1000, 1000, &[50][..]));
    assert_eq!(spec.stop_signal, "SIGINT");
    // A WorkingDir the layers lack is made (here /home/app is there, with its owner kept).
    assert_eq!(stat(&img, "/home/app"), ("directory".into(), "0700".into(), 1000, 1000));

    // Same image, same bytes; an oci-archive and a docker-archive of it give the same image too.
    let again = build_image(&t, &oci, "again.ext4", &[]);
    assert_ok(&again);
    assert_eq!(sha256(&img), sha256(&t.join("again.ext4")));
    let archive = t.join("app.oci.tar");
    run(Command::new("skopeo").arg("copy").arg(format!("oci:{}:app", oci.display())).arg(format!("oci-archive:{}", archive.display())));
    let docker = docker_archive(&t, &oci);
    for (src, name) in [(&archive, "archive.ext4"), (&docker, "docker.ext4")] {
        let o = build_image(&t, src, name, &[]);
        assert_ok(&o);
        assert_eq!(sha256(&img), sha256(&t.join(name)), "{}", src.display());
    }
}

/// `skopeo copy` of the layout's tag `app` to a docker-archive, `app.docker.tar` in `t`.
fn docker_archive(t: &TempDir, oci: &Path) -> std::path::PathBuf {
    let docker = t.join("app.docker.tar");
    run(Command::new("skopeo")
        .arg("copy")
        .arg(format!("oci:{}:app", oci.display()))
        .arg(format!("docker-archive:{}:app:latest", docker.display())));
    docker
}

/// Reads index.json, lets `f` change it, writes it back.
fn edit_index(oci: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let p = oci.join("index.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(&p, serde_json::to_vec(&v).unwrap()).unwrap();
}

/// The image's tag `app` again as tag `arm`, its config saying arm64; the index then lists both with
/// their platforms (arm64 first), or only `only_arm`.
fn multi_platform(oci: &Path, only_arm: bool) {
    run(Command::new("umoci").args(["config", "--architecture", "arm64", "--tag", "arm", "--image"]).arg(format!("{}:app", oci.display())));
    edit_index(oci, |v| {
        let list = v["manifests"].as_array_mut().unwrap();
        let mut arm = list.iter().find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == "arm").unwrap().clone();
        let mut amd = list.iter().find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == "app").unwrap().clone();
        arm["platform"] = serde_json::json!({"os": "linux", "architecture": "arm64"});
        amd["platform"] = serde_json::json!({"os": "linux", "architecture": "amd64"});
        *list = if only_arm { vec![arm] } else { vec![arm, amd] };
    });
}

#[test]
fn the_manifest_for_the_arch_is_picked_from_an_index() {
    if !tools_here() || static_init().is_none() {
        return;
    }
    let t = TempDir::new("oci-index");
    let oci = make_image(&t);
    multi_platform(&oci, false);
    let o = build_image(&t, &oci, "app.ext4", &[]);
    assert_ok(&o);
    assert!(stderr(&o).contains("image linux/amd64"), "{}", stderr(&o));
    assert!(exists(&t.join("app.ext4"), "/data/new"));
}

#[test]
fn a_missing_platform_is_refused_naming_the_platforms_there() {
    if !tools_here() || static_init().is_none() {
        return;
    }
    let t = TempDir::new("oci-noplatform");
    let oci = make_image(&t);
    multi_platform(&oci, true);
    let o = build_image(&t, &oci, "app.ext4", &[]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("no manifest for linux/amd64 (--arch x86_64); the image has linux/arm64"), "{}", stderr(&o));
    assert!(!t.join("app.ext4").exists());
}

/// The file of the layout's blob `digest` (`sha256:...`).
fn blob(oci: &Path, digest: &str) -> std::path::PathBuf {
    oci.join("blobs/sha256").join(digest.trim_start_matches("sha256:"))
}

/// The manifest the index names first.
fn first_manifest(oci: &Path) -> serde_json::Value {
    let index: serde_json::Value = serde_json::from_slice(&std::fs::read(oci.join("index.json")).unwrap()).unwrap();
    serde_json::from_slice(&std::fs::read(blob(oci, index["manifests"][0]["digest"].as_str().unwrap())).unwrap()).unwrap()
}

/// The digest of the largest layer blob, from the manifest the index names first.
fn a_layer(oci: &Path) -> String {
    let m = first_manifest(oci);
    let layers = m["layers"].as_array().unwrap();
    layers.iter().max_by_key(|l| l["size"].as_u64().unwrap()).unwrap()["digest"].as_str().unwrap().to_string()
}

/// Writes `bytes` as a blob of the layout; its descriptor's digest and size.
fn put_blob(oci: &Path, bytes: &[u8]) -> (String, u64) {
    let tmp = oci.join("blob.tmp");
    std::fs::write(&tmp, bytes).unwrap();
    let digest = sha256(&tmp);
    std::fs::rename(&tmp, oci.join("blobs/sha256").join(&digest)).unwrap();
    (format!("sha256:{digest}"), bytes.len() as u64)
}

#[test]
fn zstd_and_plain_layers_give_the_same_image_as_gzip() {
    if !tools_here() || static_init().is_none() {
        return;
    }
    if Command::new("zstd").arg("--version").output().is_err() {
        skip_line!("skipped: zstd is not installed (apt-get install zstd)");
        return;
    }
    let t = TempDir::new("oci-zstd");
    let oci = make_image(&t);
    assert_ok(&build_image(&t, &oci, "gzip.ext4", &[]));
    // Layer 1 recompressed with zstd, layer 2 stored plain; the manifest and index rewritten to match.
    let mut m = first_manifest(&oci);
    for (i, media) in [(0, "application/vnd.oci.image.layer.v1.tar+zstd"), (1, "application/vnd.oci.image.layer.v1.tar")] {
        let gz = blob(&oci, m["layers"][i]["digest"].as_str().unwrap());
        let plain = Command::new("gzip").arg("-dc").arg(&gz).output().unwrap().stdout;
        let bytes = if i == 0 {
            let raw = t.join("layer.tar");
            std::fs::write(&raw, &plain).unwrap();
            run(Command::new("zstd").args(["-q", "-f", "-19"]).arg(&raw).arg("-o").arg(t.join("layer.tar.zst")));
            std::fs::read(t.join("layer.tar.zst")).unwrap()
        } else {
            plain
        };
        let (digest, size) = put_blob(&oci, &bytes);
        m["layers"][i] = serde_json::json!({"mediaType": media, "digest": digest, "size": size});
    }
    let (digest, size) = put_blob(&oci, &serde_json::to_vec(&m).unwrap());
    edit_index(&oci, |v| {
        v["manifests"][0]["digest"] = digest.clone().into();
        v["manifests"][0]["size"] = size.into();
    });
    let o = build_image(&t, &oci, "zstd.ext4", &[]);
    assert_ok(&o);
    assert_eq!(sha256(&t.join("gzip.ext4")), sha256(&t.join("zstd.ext4")));
}

#[test]
fn a_tampered_blob_is_refused_naming_it() {
    if !tools_here() || static_init().is_none() {
        return;
    }
    let t = TempDir::new("oci-tampered");
    let oci = make_image(&t);
    let digest = a_layer(&oci);
    let path = blob(&oci, &digest);
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    let o = build_image(&t, &oci, "app.ext4", &[]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains(&format!("blob {digest} does not match its sha256")), "{}", stderr(&o));
}

#[test]
fn a_truncated_blob_is_refused_naming_it() {
    if !tools_here() || static_init().is_none() {
        return;
    }
    let t = TempDir::new("oci-truncated");
    let oci = make_image(&t);
    let digest = a_layer(&oci);
    let path = blob(&oci, &digest);
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let o = build_image(&t, &oci, "app.ext4", &[]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains(&format!("blob {digest} has {} bytes", bytes.len() / 2)), "{}", stderr(&o));
}

#[test]
fn a_tampered_docker_archive_layer_is_refused_naming_it() {
    if !tools_here() || static_init().is_none() {
        return;
    }
    let t = TempDir::new("oci-docker-tampered");
    let oci = make_image(&t);
    let docker = docker_archive(&t, &oci);
    // Flip one byte inside busybox's bytes in the archive (the layers are stored uncompressed).
    let mut bytes = std::fs::read(&docker).unwrap();
    let busybox = std::fs::read("/bin/busybox").unwrap();
    let at = bytes.windows(64).position(|w| w == &busybox[4096..4160]).unwrap();
    bytes[at] ^= 0xff;
    std::fs::write(&docker, &bytes).unwrap();
    let o = build_image(&t, &docker, "app.ext4", &[]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("does not match its digest sha256:"), "{}", stderr(&o));
}

#[test]
fn a_working_dir_the_layers_lack_is_made() {
    if !tools_here() || static_init().is_none() {
        return;
    }
    let t = TempDir::new("oci-workdir");
    let oci = make_image(&t);
    run(Command::new("umoci").args(["config", "--config.workingdir", "/srv/app", "--image"]).arg(format!("{}:app", oci.display())));
    let o = build_image(&t, &oci, "app.ext4", &[]);
    assert_ok(&o);
    assert_eq!(stat(&t.join("app.ext4"), "/srv/app"), ("directory".into(), "0755".into(), 0, 0));
}

#[test]
fn a_user_the_image_does_not_have_is_refused() {
    if !tools_here() || static_init().is_none() {
        return;
    }
    let t = TempDir::new("oci-nouser");
    let oci = make_image(&t);
    run(Command::new("umoci").args(["config", "--config.user", "nobody", "--image"]).arg(format!("{}:app", oci.display())));
    let o = build_image(&t, &oci, "app.ext4", &[]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("no user \"nobody\" in the image's /etc/passwd"), "{}", stderr(&o));
}

#[test]
fn not_an_image_is_refused() {
    let t = TempDir::new("oci-notimage");
    std::fs::create_dir(t.join("empty")).unwrap();
    let Some(init) = static_init() else { return };
    let o = build(t.path(), &["--out", "x.ext4", "--image", "empty", "--init", init.to_str().unwrap()], &[]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("neither an OCI image layout (index.json) nor a docker or podman save archive"), "{}", stderr(&o));
}

/// `cpio -itv --numeric-uid-gid` of an archive: (mode string, uid, gid) by name (symlinks as
/// `name -> target`).
fn cpio_listing(archive: &Path) -> std::collections::BTreeMap<String, (String, u32, u32)> {
    let o =
        Command::new("cpio").args(["-itv", "--quiet", "--numeric-uid-gid"]).stdin(std::fs::File::open(archive).unwrap()).output().unwrap();
    assert!(o.status.success(), "cpio -itv: {}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8(o.stdout).unwrap();
    text.lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // A device has "major, minor" where a file has its size.
            let name = if f[0].starts_with(['c', 'b']) { 9 } else { 8 };
            (f[name..].join(" "), (f[0].to_string(), f[2].parse().unwrap(), f[3].parse().unwrap()))
        })
        .collect()
}

/// `--image --initramfs`: the image's layers as a cpio archive, read back by GNU cpio file by file:
/// owners and modes kept, the deleted file and the opaque directory's lower files absent, the hard
/// link one inode, chinit at /init; the same image gives the same bytes from a layout and a docker
/// archive.
#[test]
fn the_image_as_an_initramfs_keeps_owners_links_and_deletions() {
    if !tools_here() || static_init().is_none() || !have("cpio") {
        return;
    }
    let t = TempDir::new("oci-initramfs");
    let oci = make_image(&t);
    let init = static_init().unwrap();
    let build_cpio = |src: &Path, out: &str| {
        let o = build(t.path(), &["--initramfs", out, "--image", src.to_str().unwrap(), "--init", init.to_str().unwrap()], &[]);
        assert_ok(&o);
        t.join(out)
    };
    let cpio = build_cpio(&oci, "app.cpio");

    let list = cpio_listing(&cpio);
    let at = |name: &str| list.get(name).unwrap_or_else(|| panic!("{name} not in the archive: {list:#?}")).clone();
    assert_eq!(at("home/app"), ("drwx------".into(), 1000, 1000));
    assert_eq!(at("home/app/notes"), ("-rw-------".into(), 1000, 1000));
    assert_eq!(at("bin/busybox"), ("-rwxr-xr-x".into(), 0, 0));
    assert_eq!(at("bin/id -> busybox"), ("lrwxrwxrwx".into(), 0, 0));
    assert_eq!(at("data"), ("drwxrwxr-x".into(), 0, 0));
    assert_eq!(at("data/new"), ("-rw-r-----".into(), 0, 0));
    assert_eq!(at("init"), ("-rwxr-xr-x".into(), 0, 0));
    assert_eq!(at("etc/chinit/workload.json"), ("-rw-r--r--".into(), 0, 0));
    assert_eq!(at("dev/console").0, "crw-------");
    for gone in ["gone", ".wh.gone", "data/old", "data/keep-not", "data/.wh..wh..opq"] {
        assert!(!list.contains_key(gone), "{gone} must not be in the archive: {list:#?}");
    }

    // Unpacked by GNU cpio: the bytes, the hard link as one inode, the image's /etc.
    let dir = t.join("unpacked");
    std::fs::create_dir(&dir).unwrap();
    let o = Command::new("cpio")
        .args(["-idv", "--quiet", "--no-absolute-filenames"])
        .current_dir(&dir)
        .stdin(std::fs::File::open(&cpio).unwrap())
        .output()
        .unwrap();
    assert!(o.status.success(), "cpio -idv: {}", String::from_utf8_lossy(&o.stderr));
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::read(dir.join("bin/busybox")).unwrap(), std::fs::read("/bin/busybox").unwrap());
    let (sh, bb) = (std::fs::metadata(dir.join("bin/sh")).unwrap(), std::fs::metadata(dir.join("bin/busybox")).unwrap());
    assert_eq!((sh.ino(), sh.nlink()), (bb.ino(), 2), "bin/sh is a hard link to bin/busybox");
    assert_eq!(std::fs::read(dir.join("init")).unwrap(), std::fs::read(&init).unwrap());
    assert_eq!(std::fs::read(dir.join("data/new")).unwrap(), b"new");
    assert!(std::fs::read_to_string(dir.join("etc/passwd")).unwrap().contains("app:x:1000"), "the image's /etc/passwd wins");
    let spec = agent::workload::Spec::parse(&std::fs::read_to_string(dir.join("etc/chinit/workload.json")).unwrap()).unwrap();
    assert_eq!(
        (spec.argv.as_slice(), spec.uid, spec.cwd.as_str()),
        (&["/bin/sh".to_string(), "-c".into(), SCRIPT.into()][..], 1000, "/home/app")
    );

    // Same image, same bytes, whichever form it comes in.
    assert_eq!(sha256(&cpio), sha256(&build_cpio(&oci, "again.cpio")));
    let docker = docker_archive(&t, &oci);
    assert_eq!(sha256(&cpio), sha256(&build_cpio(&docker, "docker.cpio")));
}
