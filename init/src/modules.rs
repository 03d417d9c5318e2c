//! Kernel modules for distro kernels whose virtio drivers are modules: `/etc/chinit/modules.load`
//! (written by `rootfs-builder --initramfs --modules-from`) lists module files in load order,
//! dependencies first, one per line, optionally followed by parameters; `#` starts a comment.

use std::ffi::CString;
use std::os::fd::AsRawFd;

pub const LIST: &str = "/etc/chinit/modules.load";

/// One line of the list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub path: String,
    pub params: String,
}

pub fn parse_list(text: &str) -> Vec<Entry> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(|l| match l.split_once(char::is_whitespace) {
            Some((p, rest)) => Entry { path: p.to_string(), params: rest.trim().to_string() },
            None => Entry { path: l.to_string(), params: String::new() },
        })
        .collect()
}

/// Loads one module with finit_module; an already-loaded module is fine.
fn load(e: &Entry) -> Result<(), String> {
    let f = std::fs::File::open(&e.path).map_err(|err| format!("open {}: {err}", e.path))?;
    let params = CString::new(e.params.as_str()).map_err(|_| format!("{}: parameters contain NUL", e.path))?;
    // SAFETY: finit_module reads the open module file and the NUL-terminated parameter string.
    let rc = unsafe { libc::syscall(libc::SYS_finit_module, f.as_raw_fd(), params.as_ptr(), 0) };
    match nix::errno::Errno::result(rc) {
        Ok(_) | Err(nix::errno::Errno::EEXIST) => Ok(()),
        Err(errno) => Err(format!("finit_module {}: {errno}", e.path)),
    }
}

/// Loads every listed module, in order. Returns how many were listed and the failures.
pub fn load_all() -> Option<(usize, Vec<String>)> {
    let text = std::fs::read_to_string(LIST).ok()?;
    let entries = parse_list(&text);
    let failures = entries.iter().filter_map(|e| load(e).err()).collect();
    Some((entries.len(), failures))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_list_table() {
        let text = "# virtio\n/lib/modules/6.1/virtio.ko\n\n  /lib/modules/6.1/virtio_blk.ko  queue_depth=64 # deep\n/x.ko\t a=1 b=2\n";
        assert_eq!(
            parse_list(text),
            vec![
                Entry { path: "/lib/modules/6.1/virtio.ko".into(), params: "".into() },
                Entry { path: "/lib/modules/6.1/virtio_blk.ko".into(), params: "queue_depth=64".into() },
                Entry { path: "/x.ko".into(), params: "a=1 b=2".into() },
            ]
        );
    }

    #[test]
    fn a_missing_file_is_a_clear_error() {
        let e = load(&Entry { path: "/nonexistent/x.ko".into(), params: String::new() }).unwrap_err();
        assert!(e.starts_with("open /nonexistent/x.ko: "), "{e}");
    }
}
