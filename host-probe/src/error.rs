//! Errors of host-probe and their exit codes (docs/host-probe.md lists them).

use std::path::PathBuf;

/// Documented exit codes.
pub mod exit {
    pub const OK: i32 = 0;
    /// Anything else that failed (an I/O error, a setup command).
    pub const FAILURE: i32 = 1;
    /// Bad command line.
    pub const USAGE: i32 = 2;
    /// A piece is missing on this host (VMM, kernel, image, permission): the message names the fix.
    pub const MISSING: i32 = 3;
    /// The guest did not become ready in time.
    pub const TIMEOUT: i32 = 4;
    /// The VMM exited, or the guest failed, before it was ready.
    pub const BOOT_FAILED: i32 = 5;
    /// Interrupted by SIGINT/SIGTERM/SIGHUP: 128 + the signal number (130, 143, 129).
    pub const SIGNAL_BASE: i32 = 128;
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what}\n  fix: {fix}")]
    Missing { what: String, fix: String },
    #[error("{0}")]
    Usage(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Tap(#[from] crate::tap::TapError),
    #[error("{what} failed to start: {detail}\n  fix: {fix}")]
    Helper { what: String, detail: String, fix: String },
    #[error("the guest was not ready after {secs} s ({waiting_for})\n{diagnostics}")]
    Timeout { secs: u64, waiting_for: String, diagnostics: String },
    #[error("{vmm} exited ({status}) before the guest was ready\n{diagnostics}")]
    VmmExited { vmm: String, status: String, diagnostics: String },
    #[error("interrupted by signal {0}; everything this run made was removed")]
    Interrupted(i32),
}

impl Error {
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Missing { .. } => exit::MISSING,
            Error::Usage(_) => exit::USAGE,
            Error::Io { .. } | Error::Tap(_) | Error::Helper { .. } => exit::FAILURE,
            Error::Timeout { .. } => exit::TIMEOUT,
            Error::VmmExited { .. } => exit::BOOT_FAILED,
            Error::Interrupted(sig) => exit::SIGNAL_BASE + sig,
        }
    }

    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
    }

    pub fn missing_file(what: &str, path: &std::path::Path, fix: &str) -> Error {
        Error::Missing { what: format!("{what} {} does not exist", path.display()), fix: fix.into() }
    }
}

/// Makes a path absolute against the current directory (VMMs get absolute paths).
pub fn absolute(p: &std::path::Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_per_kind() {
        let cases = [
            (Error::Usage("x".into()), 2),
            (Error::Missing { what: "k".into(), fix: "f".into() }, 3),
            (Error::Timeout { secs: 1, waiting_for: "w".into(), diagnostics: String::new() }, 4),
            (Error::VmmExited { vmm: "qemu".into(), status: "exit 1".into(), diagnostics: String::new() }, 5),
            (Error::Interrupted(2), 130),
            (Error::Interrupted(15), 143),
        ];
        for (e, code) in cases {
            assert_eq!(e.exit_code(), code, "{e}");
        }
        let m = Error::missing_file("kernel", std::path::Path::new("/k"), "run `rootfs-builder kernel`");
        assert_eq!(m.to_string(), "kernel /k does not exist\n  fix: run `rootfs-builder kernel`");
    }
}
