//! debugfs command lines (quoting, attribute commands) and parsing of its output.

use std::path::Path;
use std::process::Command;

use crate::error::{Error, Result};
use crate::resolve::{Lookup, Node};
use crate::tools;

/// Quote an argument for debugfs's command parser: double quotes, with `"` written as `""`.
pub fn quote(arg: &str) -> std::result::Result<String, String> {
    if arg.contains('\n') || arg.contains('\0') {
        return Err(format!("{arg:?}: names with a newline or NUL cannot be written"));
    }
    Ok(format!("\"{}\"", arg.replace('"', "\"\"")))
}

/// Attributes to give one inode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attrs {
    /// Full st_mode, when it is to be set.
    pub mode: Option<u32>,
    /// Owner (uid, gid), when it is to be set.
    pub owner: Option<(u32, u32)>,
    pub atime: Option<i64>,
    pub mtime: Option<i64>,
    /// ctime and crtime.
    pub ctime: Option<i64>,
}

impl Attrs {
    /// Root-owned, every time set to `epoch`.
    pub fn ours(mode: u32, epoch: i64) -> Self {
        Attrs { mode: Some(mode), owner: Some((0, 0)), atime: Some(epoch), mtime: Some(epoch), ctime: Some(epoch) }
    }
}

/// `set_inode_field` commands giving `path` the attributes `a`.
pub fn sif(path: &str, a: &Attrs) -> std::result::Result<Vec<String>, String> {
    let q = quote(path)?;
    let mut v = Vec::new();
    if let Some(m) = a.mode {
        v.push(format!("sif {q} mode 0{m:o}"));
    }
    if let Some((u, g)) = a.owner {
        v.push(format!("sif {q} uid {u}"));
        v.push(format!("sif {q} gid {g}"));
    }
    for (field, t) in [("atime", a.atime), ("mtime", a.mtime), ("ctime", a.ctime), ("crtime", a.ctime)] {
        if let Some(t) = t {
            v.push(format!("sif {q} {field} @{t}"));
        }
    }
    Ok(v)
}

/// Run a debugfs command file against `image` (read-write). debugfs reports failed commands
/// on stderr but exits 0, so any stderr line other than its version banner is an error.
pub fn run_script(image: &Path, script: &Path, fake_time: i64) -> Result<()> {
    let out = tools::run(
        "debugfs",
        Command::new("debugfs").env("E2FSPROGS_FAKE_TIME", fake_time.to_string()).arg("-w").arg("-f").arg(script).arg(image),
        &[],
    )?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty() && !l.starts_with("debugfs ")).collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Error::ToolFailed { tool: "debugfs", status: "command failed".into(), detail: errors[..errors.len().min(6)].join(" | ") })
    }
}

/// Run one read-only debugfs request; returns (stdout, stderr).
pub fn request(image: &Path, req: &str) -> Result<(String, String)> {
    let out = tools::run("debugfs", Command::new("debugfs").arg("-R").arg(req).arg(image), &[])?;
    Ok((String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned()))
}

/// Parse `debugfs -R 'stat PATH'` output into a node kind (and the fast symlink target).
pub fn parse_stat(stdout: &str, stderr: &str) -> Node {
    if stderr.contains("File not found") || !stdout.contains("Inode:") {
        return Node::Missing;
    }
    let ty = stdout.split("Type:").nth(1).and_then(|s| s.split_whitespace().next()).unwrap_or("");
    match ty {
        "directory" => Node::Dir,
        "symlink" => Node::Symlink(
            stdout
                .lines()
                .find_map(|l| l.trim().strip_prefix("Fast link dest: "))
                .map(|s| s.trim().trim_matches('"').to_string())
                .unwrap_or_default(),
        ),
        _ => Node::Other,
    }
}

/// Looks paths up in an ext4 image with read-only debugfs requests.
pub struct ImageLookup<'a> {
    pub image: &'a Path,
}

impl Lookup for ImageLookup<'_> {
    fn node(&mut self, path: &str) -> std::result::Result<Node, String> {
        let q = quote(path)?;
        let (out, err) = request(self.image, &format!("stat {q}")).map_err(|e| e.to_string())?;
        match parse_stat(&out, &err) {
            Node::Symlink(t) if t.is_empty() => {
                // A slow symlink keeps its target in a data block: read it with `cat`.
                let (out, _) = request(self.image, &format!("cat {q}")).map_err(|e| e.to_string())?;
                Ok(Node::Symlink(out.trim_end_matches('\0').to_string()))
            }
            n => Ok(n),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote("/a b/c").unwrap(), "\"/a b/c\"");
        assert_eq!(quote("/x\"y").unwrap(), "\"/x\"\"y\"");
        assert!(quote("/a\nb").is_err());
    }

    #[test]
    fn sif_lines() {
        let v = sif("/sbin/chinit", &Attrs::ours(0o100755, 0)).unwrap();
        assert_eq!(
            v,
            [
                "sif \"/sbin/chinit\" mode 0100755",
                "sif \"/sbin/chinit\" uid 0",
                "sif \"/sbin/chinit\" gid 0",
                "sif \"/sbin/chinit\" atime @0",
                "sif \"/sbin/chinit\" mtime @0",
                "sif \"/sbin/chinit\" ctime @0",
                "sif \"/sbin/chinit\" crtime @0",
            ]
        );
        let only_ctime = Attrs { mode: None, owner: None, atime: None, mtime: None, ctime: Some(7) };
        assert_eq!(sif("/a", &only_ctime).unwrap(), ["sif \"/a\" ctime @7", "sif \"/a\" crtime @7"]);
    }

    // Captured from debugfs 1.47.0.
    const STAT_SYMLINK: &str = "Inode: 13   Type: symlink    Mode:  0777   Flags: 0x0\nGeneration: 0    Version: 0x00000000:00000000\nUser:     0   Group:     0   Project:     0   Size: 8\nFile ACL: 0\nLinks: 1   Blockcount: 0\nFragment:  Address: 0    Number: 0    Size: 0\n ctime: 0x00000000:00000000 -- Thu Jan  1 00:00:00 1970\nSize of extra inode fields: 32\nFast link dest: \"usr/sbin\"\n";
    const STAT_DIR: &str = "Inode: 2   Type: directory    Mode:  0755   Flags: 0x80000\n";
    const STAT_FILE: &str = "Inode: 12   Type: regular    Mode:  0755   Flags: 0x80000\n";

    #[test]
    fn parse_stat_table() {
        assert_eq!(parse_stat(STAT_SYMLINK, ""), Node::Symlink("usr/sbin".into()));
        assert_eq!(parse_stat(STAT_DIR, ""), Node::Dir);
        assert_eq!(parse_stat(STAT_FILE, ""), Node::Other);
        assert_eq!(parse_stat("", "debugfs 1.47.0 (5-Feb-2023)\n/x: File not found by ext2_lookup \n"), Node::Missing);
    }
}
