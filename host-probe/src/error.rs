//! Errors of host-probe and their exit codes (docs/host-probe.md lists them).

use std::path::PathBuf;

/// Documented exit codes of `host-probe` (docs/host-probe.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    Ok,
    /// Anything else that failed (an I/O error, a setup command).
    Failure,
    /// Bad command line.
    Usage,
    /// A piece is missing on this host (VMM, kernel, image, permission): the message names the fix.
    Missing,
    /// A phase (boot, restore, make unique, snapshot pause or save) did not end within `--timeout`.
    Timeout,
    /// The VMM exited, or the guest failed, before the run was done.
    BootFailed,
    /// The snapshot directory is missing, incomplete, taken by another VMM or of another kernel or
    /// image, or cannot be restored on this host.
    BadSnapshot,
    /// Interrupted by this signal (SIGINT, SIGTERM, SIGHUP): 128 + its number (130, 143, 129).
    Signal(i32),
    /// `run` waited for the guest's workload: its exit code, or 128 + the signal that ended it.
    Workload(i32),
}

impl ExitCode {
    /// The exit code a run that waited for `w` ends with, once it ended.
    pub fn of_workload(w: &agent::proto::Workload) -> Option<ExitCode> {
        match (w.running, w.exit_code, w.signal) {
            (true, _, _) => None,
            (false, Some(c), _) => Some(ExitCode::Workload(c)),
            (false, None, Some(s)) => Some(ExitCode::Workload(128 + s)),
            (false, None, None) => None,
        }
    }

    /// The process exit status.
    pub fn code(self) -> i32 {
        match self {
            ExitCode::Ok => 0,
            ExitCode::Failure => 1,
            ExitCode::Usage => 2,
            ExitCode::Missing => 3,
            ExitCode::Timeout => 4,
            ExitCode::BootFailed => 5,
            ExitCode::BadSnapshot => 6,
            ExitCode::Signal(sig) => 128 + sig,
            ExitCode::Workload(code) => code,
        }
    }
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
    /// A phase of a run gave up at its deadline; `waiting_for` says what it was waiting for
    /// ("waiting for ...").
    #[error("{phase}: gave up after {secs} s {waiting_for}\n{diagnostics}")]
    Timeout { phase: String, secs: u64, waiting_for: String, diagnostics: String },
    /// The VMM exited (or the guest reset) during a phase; the diagnostics have its output.
    #[error("{phase}: {vmm} exited ({status})\n{diagnostics}")]
    VmmExited { phase: String, vmm: String, status: String, diagnostics: String },
    #[error("{what}\n  fix: {fix}")]
    BadSnapshot { what: String, fix: String },
    /// A VMM operation that failed (pause, snapshot, migration, restore).
    #[error("{0}")]
    Failed(String),
    #[error("interrupted by signal {0}; everything this run made was removed")]
    Interrupted(i32),
    /// One run of several failed (a bench's boot): which one, and why, with that run's exit code.
    #[error("{which}: {source}")]
    In {
        which: String,
        #[source]
        source: Box<Error>,
    },
}

impl Error {
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Error::Missing { .. } => ExitCode::Missing,
            Error::Usage(_) => ExitCode::Usage,
            Error::Io { .. } | Error::Tap(_) | Error::Helper { .. } | Error::Failed(_) => ExitCode::Failure,
            Error::BadSnapshot { .. } => ExitCode::BadSnapshot,
            Error::Timeout { .. } => ExitCode::Timeout,
            Error::VmmExited { .. } => ExitCode::BootFailed,
            Error::Interrupted(sig) => ExitCode::Signal(*sig),
            Error::In { source, .. } => source.exit_code(),
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
            (Error::Timeout { phase: "boot".into(), secs: 1, waiting_for: "w".into(), diagnostics: String::new() }, 4),
            (Error::VmmExited { phase: "boot".into(), vmm: "qemu".into(), status: "exit 1".into(), diagnostics: String::new() }, 5),
            (Error::BadSnapshot { what: "d".into(), fix: "f".into() }, 6),
            (Error::Interrupted(2), 130),
            (Error::Interrupted(15), 143),
            (Error::In { which: "boot 2 of 4".into(), source: Box::new(Error::Interrupted(15)) }, 143),
            (
                Error::In {
                    which: "boot 2 of 4".into(),
                    source: Box::new(Error::Timeout {
                        phase: "restore".into(),
                        secs: 1,
                        waiting_for: "w".into(),
                        diagnostics: String::new(),
                    }),
                },
                4,
            ),
        ];
        for (e, code) in cases {
            assert_eq!(e.exit_code().code(), code, "{e}");
        }
        let w = |exit_code, signal| agent::proto::Workload { pid: 9, running: false, exit_code, signal };
        assert_eq!(ExitCode::of_workload(&w(Some(7), None)).map(ExitCode::code), Some(7));
        assert_eq!(ExitCode::of_workload(&w(None, Some(9))).map(ExitCode::code), Some(137), "128 + the signal");
        assert_eq!(ExitCode::of_workload(&agent::proto::Workload { running: true, ..w(None, None) }), None, "still running");
        let m = Error::missing_file("kernel", std::path::Path::new("/k"), "run `rootfs-builder kernel`");
        assert_eq!(m.to_string(), "kernel /k does not exist\n  fix: run `rootfs-builder kernel`");
    }
}
