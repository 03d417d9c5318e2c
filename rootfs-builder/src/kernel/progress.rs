//! Compact progress for long `make` runs: the full output goes to a log file, the terminal sees
//! one status line (rewritten in place on a terminal, every 30 s otherwise).

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// A kbuild step line (`  CC      kernel/fork.o`): its tag and target.
pub fn kbuild_step(line: &str) -> Option<(&str, &str)> {
    let rest = line.strip_prefix("  ")?;
    let (tag, target) = rest.split_once(' ')?;
    let tag_ok =
        !tag.is_empty() && tag.len() <= 10 && tag.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    let target = target.trim();
    (tag_ok && !target.is_empty()).then_some((tag, target))
}

/// `m:ss`.
pub fn clock(d: Duration) -> String {
    let s = d.as_secs();
    format!("{}:{:02}", s / 60, s % 60)
}

/// The status text: phase, elapsed time, steps (with a percentage when an estimate of the total
/// is known) and the current step.
pub fn status(phase: &str, elapsed: Duration, steps: usize, estimate: Option<usize>, last: &str) -> String {
    let pct = match estimate {
        Some(total) if total > 0 => format!(" ~{}%", (steps * 100 / total).min(99)),
        _ => String::new(),
    };
    format!("{phase} {} {steps} steps{pct} {last}", clock(elapsed))
}

/// Reports progress of one phase to stderr.
pub struct Reporter {
    phase: String,
    start: Instant,
    last_print: Instant,
    steps: usize,
    estimate: Option<usize>,
    last: String,
    tty: bool,
}

impl Reporter {
    pub fn new(phase: &str, estimate: Option<usize>) -> Reporter {
        let now = Instant::now();
        Reporter {
            phase: phase.to_string(),
            start: now,
            last_print: now,
            steps: 0,
            estimate,
            last: String::new(),
            tty: std::io::stderr().is_terminal(),
        }
    }

    /// Feeds one line of make output.
    pub fn line(&mut self, line: &str) {
        let Some((tag, target)) = kbuild_step(line) else {
            return;
        };
        self.steps += 1;
        self.last = format!("{tag} {target}");
        let every = if self.tty { Duration::from_millis(200) } else { Duration::from_secs(30) };
        if self.last_print.elapsed() >= every {
            self.last_print = Instant::now();
            self.print();
        }
    }

    fn print(&self) {
        let mut text = status(&self.phase, self.start.elapsed(), self.steps, self.estimate, &self.last);
        let mut err = std::io::stderr().lock();
        if self.tty {
            text.truncate(text.char_indices().nth(100).map_or(text.len(), |(i, _)| i));
            let _ = write!(err, "\r\x1b[K{text}");
        } else {
            let _ = writeln!(err, "{text}");
        }
        let _ = err.flush();
    }

    /// Ends the status line with the phase's total time.
    pub fn finish(&self, ok: bool) {
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r\x1b[K");
        }
        let _ = writeln!(
            err,
            "{} {} in {} ({} steps)",
            self.phase,
            if ok { "done" } else { "FAILED" },
            clock(self.start.elapsed()),
            self.steps
        );
    }
}

/// Counts the kbuild steps in a log (the estimate for the next build).
pub fn count_steps(log: &str) -> usize {
    log.lines().filter(|l| kbuild_step(l).is_some()).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_kbuild_steps() {
        let cases: &[(&str, Option<(&str, &str)>)] = &[
            ("  CC      kernel/fork.o", Some(("CC", "kernel/fork.o"))),
            ("  LD      vmlinux.o", Some(("LD", "vmlinux.o"))),
            ("  HOSTCC  scripts/basic/fixdep", Some(("HOSTCC", "scripts/basic/fixdep"))),
            (
                "  SYSHDR  arch/x86/include/generated/uapi/asm/unistd_32.h",
                Some(("SYSHDR", "arch/x86/include/generated/uapi/asm/unistd_32.h")),
            ),
            ("  ZSTD22  arch/x86/boot/compressed/vmlinux.bin.zst", Some(("ZSTD22", "arch/x86/boot/compressed/vmlinux.bin.zst"))),
            ("Kernel: arch/x86/boot/bzImage is ready  (#1)", None),
            ("make[1]: Entering directory '/x'", None),
            ("kernel/fork.c:12:1: error: expected ';'", None),
            ("  CC", None),
            ("   12 |   int x", None),
        ];
        for (line, want) in cases {
            assert_eq!(&kbuild_step(line), want, "{line:?}");
        }
        assert_eq!(count_steps("  CC      a.o\nnoise\n  LD      b\n"), 2);
    }

    #[test]
    fn status_text() {
        let d = Duration::from_secs(125);
        assert_eq!(status("build", d, 300, Some(1200), "CC a.o"), "build 2:05 300 steps ~25% CC a.o");
        assert_eq!(status("build", d, 3000, Some(1200), "LD x"), "build 2:05 3000 steps ~99% LD x");
        assert_eq!(status("build", d, 3, None, ""), "build 2:05 3 steps ");
    }
}
