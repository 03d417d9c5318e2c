//! The seam to external tools (mkfs.ext4, debugfs, e2fsck, resize2fs, tar, cp, compressors).

use std::process::{Child, Command, Output, Stdio};

use crate::error::{Error, Result};

/// Debian package that ships `tool`.
pub fn package_of(tool: &str) -> &'static str {
    match tool {
        "mkfs.ext4" | "debugfs" | "e2fsck" | "resize2fs" | "dumpe2fs" => "e2fsprogs",
        "xz" => "xz-utils",
        "zstd" => "zstd",
        "gzip" => "gzip",
        "tar" => "tar",
        "python3" => "python3",
        "busybox" => "busybox-static",
        "ldd" => "libc-bin",
        _ => "coreutils",
    }
}

/// Run `cmd` to completion, capturing stdout and stderr. A missing tool, a signal or a
/// non-zero exit (unless listed in `ok_codes`) is an error carrying the tool's last stderr lines.
pub fn run(tool: &'static str, cmd: &mut Command, ok_codes: &[i32]) -> Result<Output> {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    spawn_wait(tool, cmd, ok_codes)
}

/// Like [`run`], with stdio as already configured on `cmd`.
pub fn spawn_wait(tool: &'static str, cmd: &mut Command, ok_codes: &[i32]) -> Result<Output> {
    let child = spawn(tool, cmd)?;
    finish(tool, child, ok_codes)
}

/// Start a tool in its own process group, registered so that a signal stops it.
pub fn spawn(tool: &'static str, cmd: &mut Command) -> Result<Child> {
    use std::os::unix::process::CommandExt;
    cmd.process_group(0);
    crate::cleanup::start_child(|| cmd.spawn()).map_err(|e| spawn_error(tool, e))
}

/// Wait for a child from [`spawn`] and check its status.
pub fn finish(tool: &'static str, child: Child, ok_codes: &[i32]) -> Result<Output> {
    let pid = child.id();
    let out = child.wait_with_output();
    crate::cleanup::child_done(pid);
    let out = out.map_err(|e| Error::io(format!("waiting for {tool}"), e))?;
    check(tool, out, ok_codes)
}

pub fn spawn_error(tool: &'static str, e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::NotFound {
        Error::ToolMissing { tool, package: package_of(tool) }
    } else {
        Error::io(format!("starting {tool}"), e)
    }
}

/// Turn a finished tool's status into an error unless it is 0 or in `ok_codes`.
pub fn check(tool: &'static str, out: Output, ok_codes: &[i32]) -> Result<Output> {
    let code = out.status.code();
    if out.status.success() || code.is_some_and(|c| ok_codes.contains(&c)) {
        return Ok(out);
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    let detail = lines[lines.len().saturating_sub(6)..].join(" | ");
    Err(Error::ToolFailed {
        tool,
        status: match code {
            Some(c) => format!("exit {c}"),
            None => "killed by a signal".into(),
        },
        detail: if detail.is_empty() { "no message".into() } else { detail },
    })
}

/// `sha256sum FILE` → hex digest.
pub fn sha256(path: &std::path::Path) -> Result<String> {
    let out = run("sha256sum", Command::new("sha256sum").arg(path), &[])?;
    Ok(String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap_or_default().to_string())
}
