//! Every way a build can fail, each message naming the problem and the fix, and the exit codes.

use std::path::PathBuf;

/// The command that builds a static chinit for x86_64.
pub const BUILD_CHINIT_X86_64: &str = "cargo build --release --target x86_64-unknown-linux-musl -p chinit";
/// The command that builds a static chinit for aarch64.
pub const BUILD_CHINIT_AARCH64: &str = "cargo build --release --target aarch64-unknown-linux-musl -p chinit";

/// Documented exit codes of `rootfs-builder` and `rootfs-builder kernel` (see docs/rootfs-builder.md
/// and docs/kernel.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum ExitCode {
    Ok = 0,
    /// An external tool, an I/O step, a kernel build or a download failed.
    BuildFailed = 1,
    /// Bad command line (clap's own code), or a kernel or distro kernel that is not offered.
    Usage = 2,
    /// Bad input: init binary, sources, size, modules, base; a kernel source or fragment.
    BadInput = 3,
    /// The output cannot be written where asked.
    Output = 4,
    /// Interrupted by SIGINT.
    Interrupted = 130,
    /// Terminated by SIGTERM.
    Terminated = 143,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no init binary at {path}: build it with `{command}`, or pass --init PATH")]
    InitMissing { path: PathBuf, command: &'static str },

    #[error(
        "{path}: {problem}; the init must be a static ELF executable for {arch}: \
         build chinit with `{command}` and pass --init to the file it writes"
    )]
    BadInit { path: PathBuf, problem: String, arch: &'static str, command: &'static str },

    #[error("{option} {value}: {problem}")]
    BadOption { option: &'static str, value: String, problem: String },

    #[error("{path}: source does not exist or cannot be read ({source}); check the path given to {option}")]
    MissingSource { option: &'static str, path: PathBuf, source: std::io::Error },

    #[error("--size {requested} is too small: the content needs at least {needed} bytes ({needed_mib} MiB); pass --size {needed_mib}M or more, or leave --size out")]
    TooSmall { requested: u64, needed: u64, needed_mib: u64 },

    #[error("cannot write the output in {dir}: {source}; choose a writable directory for the output")]
    OutputDir { dir: PathBuf, source: std::io::Error },

    #[error("{tool} not found: install {package} (e.g. `apt-get install {package}`)")]
    ToolMissing { tool: &'static str, package: &'static str },

    #[error("{tool} failed ({status}): {detail}")]
    ToolFailed { tool: &'static str, status: String, detail: String },

    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },

    #[error("{path}: no modules.dep here or in lib/modules/<version>/ below it; pass --modules-from /lib/modules/<version> or an extracted kernel package that contains one (run `depmod` if it is missing)")]
    NoModulesDep { path: PathBuf },

    #[error("{path}: several kernel versions ({versions}); pass --modules-from {path}/lib/modules/<version>")]
    ManyKernels { path: PathBuf, versions: String },

    #[error("module {name} is not in {dep}{near}")]
    ModuleNotFound { name: String, dep: PathBuf, near: String },

    #[error("--module needs --modules-from DIR (a /lib/modules/<version> directory)")]
    ModulesWithoutDir,

    #[error("--base {path}: {problem}")]
    BadBase { path: PathBuf, problem: String },

    #[error("--image {path}: {problem}")]
    BadImage { path: PathBuf, problem: String },

    #[error("interrupted by signal {0}; temporary files removed")]
    Interrupted(i32),
}

impl Error {
    /// The documented exit code of this error.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Error::InitMissing { .. }
            | Error::BadInit { .. }
            | Error::BadOption { .. }
            | Error::MissingSource { .. }
            | Error::TooSmall { .. }
            | Error::NoModulesDep { .. }
            | Error::ManyKernels { .. }
            | Error::ModuleNotFound { .. }
            | Error::ModulesWithoutDir
            | Error::BadBase { .. }
            | Error::BadImage { .. } => ExitCode::BadInput,
            Error::OutputDir { .. } => ExitCode::Output,
            Error::ToolMissing { .. } | Error::ToolFailed { .. } | Error::Io { .. } => ExitCode::BuildFailed,
            Error::Interrupted(libc::SIGTERM) => ExitCode::Terminated,
            Error::Interrupted(_) => ExitCode::Interrupted,
        }
    }

    /// An I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io { context: context.into(), source }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
