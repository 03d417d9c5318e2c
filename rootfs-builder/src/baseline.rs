//! `--profile baseline`: the image chinit is compared against (docs/benchmarks.md). A busybox shell
//! init (`/sbin/init`, the repository's `baseline/init.sh`) that mounts and configures the network
//! like chinit, then execs a Python 3 HTTP agent (`/sbin/agent.py`, `baseline/agent.py`) serving the
//! same `GET /ready`.
//!
//! Everything comes from the host's Debian packages: busybox-static's `/bin/busybox`, and a minimal
//! copy of python3: the interpreter, the shared libraries `ldd` names, and the standard-library
//! modules the agent loads while answering one request (`agent.py --list-modules`, run on the host).
//! Modules are stored as their compiled `.pyc` in place of the `.py` (sourceless), as Python would
//! otherwise find the image's epoch timestamps newer than its caches, recompile every module at boot
//! and fail to write the caches to a read-only root.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{Error, Result};
use crate::plan::{Content, Entry, Plan};
use crate::tools;

/// The init script, as committed in `baseline/init.sh`.
pub const INIT_SH: &str = include_str!("../../baseline/init.sh");
/// The agent, as committed in `baseline/agent.py`.
pub const AGENT_PY: &str = include_str!("../../baseline/agent.py");

/// Where the host programs come from; overridable for tests.
#[derive(Debug, Clone)]
pub struct Hosts {
    pub busybox: PathBuf,
    pub python: PathBuf,
}

impl Default for Hosts {
    fn default() -> Self {
        Hosts { busybox: PathBuf::from("/bin/busybox"), python: PathBuf::from("/usr/bin/python3") }
    }
}

/// One shared object from `ldd` output: the path it resolved to.
/// `libz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x…)` and `/lib64/ld-linux-x86-64.so.2 (0x…)`
/// give their paths; `linux-vdso.so.1 (0x…)` (no file) gives nothing. A `not found` is an error.
pub fn parse_ldd(text: &str) -> std::result::Result<Vec<String>, String> {
    let mut out = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if line.contains("not found") {
            return Err(format!("a library is missing on this host: {line}"));
        }
        if line.starts_with("statically linked") || line.contains("not a dynamic executable") {
            continue;
        }
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next().unwrap_or(""),
            None => line.split_whitespace().next().unwrap_or(""),
        };
        if path.starts_with('/') && !out.iter().any(|p| p == path) {
            out.push(path.to_string());
        }
    }
    Ok(out)
}

/// Where a module file goes in the image: a `.py` becomes its compiled `.pyc` next to where the
/// `.py` was (`/usr/lib/python3.11/json/__init__.py` → `/usr/lib/python3.11/json/__init__.pyc`,
/// from `json/__pycache__/__init__.cpython-311.pyc`); anything else (`.so`) keeps its path.
/// Returns (image path, host source).
pub fn module_entry(file: &str, cache_tag: &str) -> (String, PathBuf) {
    match file.strip_suffix(".py") {
        Some(stem) => {
            let p = Path::new(file);
            let dir = p.parent().unwrap_or(Path::new("/"));
            let name = p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            (format!("{stem}.pyc"), dir.join("__pycache__").join(format!("{name}.{cache_tag}.pyc")))
        }
        None => (file.to_string(), PathBuf::from(file)),
    }
}

/// The host commands' output, behind a seam so the plan can be checked without them.
pub trait Probe {
    /// `python3 agent.py --list-modules`: one module file per line.
    fn modules(&self, python: &Path, agent: &Path) -> Result<String>;
    /// `python3 -c 'import sys; print(sys.implementation.cache_tag)'`.
    fn cache_tag(&self, python: &Path) -> Result<String>;
    /// `ldd FILE`.
    fn ldd(&self, file: &Path) -> Result<String>;
}

/// The real host.
pub struct Host;

fn stdout_of(tool: &'static str, cmd: &mut Command) -> Result<String> {
    let out = tools::run(tool, cmd, &[0])?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl Probe for Host {
    fn modules(&self, python: &Path, agent: &Path) -> Result<String> {
        // A clean environment, as at boot: no PYTHON* variables, no locale.
        stdout_of("python3", Command::new(python).arg(agent).arg("--list-modules").env_clear().env("PATH", "/usr/bin:/bin"))
    }
    fn cache_tag(&self, python: &Path) -> Result<String> {
        Ok(stdout_of("python3", Command::new(python).args(["-c", "import sys; print(sys.implementation.cache_tag)"]))?.trim().to_string())
    }
    fn ldd(&self, file: &Path) -> Result<String> {
        stdout_of("ldd", Command::new("ldd").arg(file))
    }
}

fn missing(tool: &'static str, package: &'static str, path: &Path) -> Result<()> {
    if path.exists() {
        Ok(())
    } else {
        Err(Error::ToolMissing { tool, package })
    }
}

/// The baseline image's file list. `work` holds a copy of the agent for `--list-modules`.
pub fn plan(hosts: &Hosts, probe: &impl Probe, work: &Path) -> Result<Plan> {
    missing("busybox", "busybox-static", &hosts.busybox)?;
    missing("python3", "python3", &hosts.python)?;
    let busybox = std::fs::read(&hosts.busybox).map_err(|e| Error::io(format!("reading {}", hosts.busybox.display()), e))?;
    if crate::elf::check_static(&busybox, crate::elf::Arch::X86_64).is_err() {
        return Err(Error::BadOption {
            option: "--profile baseline",
            value: hosts.busybox.display().to_string(),
            problem: "busybox must be the static build: apt-get install busybox-static".into(),
        });
    }
    let python = std::fs::canonicalize(&hosts.python).map_err(|e| Error::io(format!("resolving {}", hosts.python.display()), e))?;
    let python_name = python.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "python3".into());

    let agent = work.join("agent.py");
    std::fs::write(&agent, AGENT_PY).map_err(|e| Error::io(format!("writing {}", agent.display()), e))?;
    let tag = probe.cache_tag(&python)?;
    let modules = probe.modules(&python, &agent)?;

    let mut p = Plan::default();
    for d in ["/dev", "/proc", "/sys", "/run", "/etc", "/var", "/sbin", "/bin", "/usr/bin"] {
        p.put(d, Entry::dir(0o755));
    }
    p.put("/root", Entry::dir(0o700));
    p.put("/tmp", Entry::dir(0o1777));
    p.put("/bin/busybox", Entry::file(Content::Bytes(busybox), 0o755));
    p.put("/bin/sh", Entry::symlink("busybox"));
    p.put("/sbin/init", Entry::file(Content::Bytes(INIT_SH.into()), 0o755));
    p.put("/sbin/agent.py", Entry::file(Content::Bytes(AGENT_PY.into()), 0o644));
    p.put(&format!("/usr/bin/{python_name}"), Entry::file(Content::Path(python.clone()), 0o755));
    if python_name != "python3" {
        p.put("/usr/bin/python3", Entry::symlink(&python_name));
    }
    p.put("/etc/hostname", Entry::file(Content::Bytes(b"baseline\n".to_vec()), 0o644));
    p.put("/etc/passwd", Entry::file(Content::Bytes(crate::plan::PASSWD.into()), 0o644));
    p.put("/etc/group", Entry::file(Content::Bytes(crate::plan::GROUP.into()), 0o644));
    p.put("/etc/hosts", Entry::file(Content::Bytes(crate::plan::HOSTS.into()), 0o644));

    let mut objects = vec![python.clone()];
    let agent_real = std::fs::canonicalize(&agent).ok();
    for file in modules.lines().map(str::trim).filter(|l| l.starts_with('/')) {
        // The agent itself is listed (as __main__), under whatever spelling of the work directory.
        if std::fs::canonicalize(file).ok() == agent_real {
            continue;
        }
        let (dst, src) = module_entry(file, &tag);
        if !src.is_file() {
            return Err(Error::BadOption {
                option: "--profile baseline",
                value: src.display().to_string(),
                problem: "the compiled module is missing; reinstall python3 (`apt-get install --reinstall python3.11-minimal libpython3.11-stdlib`) so its caches are built".into(),
            });
        }
        if dst.ends_with(".so") {
            objects.push(src.clone());
        }
        p.put(&dst, Entry::file(Content::Path(src), 0o644));
    }
    for o in &objects {
        let libs = parse_ldd(&probe.ldd(o)?).map_err(|problem| Error::BadOption {
            option: "--profile baseline",
            value: o.display().to_string(),
            problem,
        })?;
        for lib in libs {
            p.put(&lib, Entry::file(Content::Path(PathBuf::from(&lib)), 0o755));
        }
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_table() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                    \tlibm.so.6 => /lib/x86_64-linux-gnu/libm.so.6 (0x00007f01)\n\
                    \tlibz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x00007f02)\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007f03)\n\
                    \tlibm.so.6 => /lib/x86_64-linux-gnu/libm.so.6 (0x00007f01)\n";
        assert_eq!(
            parse_ldd(text).unwrap(),
            ["/lib/x86_64-linux-gnu/libm.so.6", "/lib/x86_64-linux-gnu/libz.so.1", "/lib64/ld-linux-x86-64.so.2"]
        );
        assert_eq!(parse_ldd("\tstatically linked\n").unwrap(), Vec::<String>::new());
        assert!(parse_ldd("\tlibfoo.so.1 => not found\n").unwrap_err().contains("libfoo"));
    }

    #[test]
    fn modules_become_sourceless_pyc() {
        assert_eq!(
            module_entry("/usr/lib/python3.11/json/__init__.py", "cpython-311"),
            (
                "/usr/lib/python3.11/json/__init__.pyc".into(),
                PathBuf::from("/usr/lib/python3.11/json/__pycache__/__init__.cpython-311.pyc")
            )
        );
        let so = "/usr/lib/python3.11/lib-dynload/_json.cpython-311-x86_64-linux-gnu.so";
        assert_eq!(module_entry(so, "cpython-311"), (so.into(), PathBuf::from(so)));
    }

    /// A fake host: the modules and libraries are files made in a temporary directory.
    struct Fake {
        root: PathBuf,
    }

    impl Probe for Fake {
        fn modules(&self, _python: &Path, agent: &Path) -> Result<String> {
            let r = self.root.display();
            let dir = agent.parent().unwrap().display();
            Ok(format!("{dir}/./agent.py\n{r}/lib/py/os.py\n{r}/lib/py/dyn/_json.so\n"))
        }
        fn cache_tag(&self, _python: &Path) -> Result<String> {
            Ok("cpython-311".into())
        }
        fn ldd(&self, file: &Path) -> Result<String> {
            let r = self.root.display();
            Ok(if file.ends_with("_json.so") {
                format!("\tlinux-vdso.so.1 (0x1)\n\tlibc.so.6 => {r}/lib/libc.so.6 (0x2)\n")
            } else {
                format!("\tlibz.so.1 => {r}/lib/libz.so.1 (0x3)\n\tlibc.so.6 => {r}/lib/libc.so.6 (0x2)\n")
            })
        }
    }

    #[test]
    fn plan_holds_init_agent_python_modules_and_libraries() {
        let root = std::env::temp_dir().join(format!("baseline-plan-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for d in ["lib/py/__pycache__", "lib/py/dyn", "bin", "work"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        for f in ["lib/py/__pycache__/os.cpython-311.pyc", "lib/py/dyn/_json.so", "lib/libc.so.6", "lib/libz.so.1", "bin/python3.11"] {
            std::fs::write(root.join(f), f).unwrap();
        }
        std::os::unix::fs::symlink("python3.11", root.join("bin/python3")).unwrap();
        let busybox = Path::new("/bin/busybox");
        if !busybox.exists() {
            eprintln!("skipped: /bin/busybox (busybox-static) is not installed");
            return;
        }
        let hosts = Hosts { busybox: busybox.into(), python: root.join("bin/python3") };
        let p = plan(&hosts, &Fake { root: root.clone() }, &root.join("work")).unwrap();
        let r = root.display();
        assert_eq!(p.entries["/sbin/init"].kind, crate::plan::Kind::File(Content::Bytes(INIT_SH.into())));
        assert_eq!(p.entries["/sbin/init"].mode(), 0o100755);
        assert_eq!(p.entries["/bin/sh"].kind, crate::plan::Kind::Symlink("busybox".into()));
        assert_eq!(p.entries["/usr/bin/python3"].kind, crate::plan::Kind::Symlink("python3.11".into()));
        assert!(p.entries.contains_key("/usr/bin/python3.11"));
        assert_eq!(
            p.entries[&format!("{r}/lib/py/os.pyc")].kind,
            crate::plan::Kind::File(Content::Path(root.join("lib/py/__pycache__/os.cpython-311.pyc")))
        );
        assert!(!p.entries.contains_key(&format!("{r}/lib/py/os.py")), "sources are not copied");
        // Libraries of the interpreter and of the extension modules, once each.
        for lib in ["lib/libc.so.6", "lib/libz.so.1", "lib/py/dyn/_json.so"] {
            assert!(p.entries.contains_key(&format!("{r}/{lib}")), "{lib}");
        }
        assert!(!p.entries.keys().any(|k| k.ends_with("agent.py") && k != "/sbin/agent.py"), "the work copy of the agent is not a module");
        // A module without its compiled cache is refused, naming the fix.
        std::fs::remove_file(root.join("lib/py/__pycache__/os.cpython-311.pyc")).unwrap();
        let e = plan(&hosts, &Fake { root: root.clone() }, &root.join("work")).unwrap_err();
        assert!(e.to_string().contains("--reinstall"), "{e}");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
