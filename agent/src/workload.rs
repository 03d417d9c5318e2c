//! The workload file: what chinit starts when the command line has no `chinit.exec=`. rootfs-builder
//! writes it from a container image's config (`--image`); chinit reads it at boot. Defined once here,
//! for both; `docs/cmdline.md` documents it.
//!
//! It is JSON, one object:
//! `{"argv":["/app","--x"],"env":["PATH=/bin"],"cwd":"/srv","uid":1000,"gid":1000,"groups":[1000],"stop_signal":"SIGTERM"}`.
//! `argv` is required; the rest defaults to no environment, `/`, root (0:0, no extra groups) and
//! SIGTERM.

use serde::{Deserialize, Serialize};

/// Where the file is, in the root chinit boots.
pub const PATH: &str = "/etc/chinit/workload.json";

/// The workload as the image's config says (Entrypoint + Cmd, Env, WorkingDir, User resolved to
/// numbers, StopSignal).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    pub argv: Vec<String>,
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default = "root_dir")]
    pub cwd: String,
    #[serde(default)]
    pub uid: u32,
    #[serde(default)]
    pub gid: u32,
    /// Supplementary groups (the user's groups in the image's /etc/group).
    #[serde(default)]
    pub groups: Vec<u32>,
    /// A signal name (`SIGTERM`, `SIGINT`...) or number, as OCI's StopSignal.
    #[serde(default = "sigterm")]
    pub stop_signal: String,
}

fn root_dir() -> String {
    "/".into()
}

fn sigterm() -> String {
    "SIGTERM".into()
}

/// The signals a StopSignal may name, with their Linux numbers (the same on x86_64 and aarch64).
pub const SIGNALS: &[(&str, i32)] = &[
    ("SIGHUP", 1),
    ("SIGINT", 2),
    ("SIGQUIT", 3),
    ("SIGKILL", 9),
    ("SIGUSR1", 10),
    ("SIGUSR2", 12),
    ("SIGTERM", 15),
    ("SIGWINCH", 28),
    ("SIGPWR", 30),
];

/// The number of a StopSignal: `SIGTERM`, `TERM` or `15` (1-64).
pub fn signal_number(s: &str) -> Result<i32, String> {
    if let Ok(n) = s.parse::<i32>() {
        return if (1..=64).contains(&n) { Ok(n) } else { Err(format!("stop signal {n} is not a signal number (1-64)")) };
    }
    let upper = s.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") { upper } else { format!("SIG{upper}") };
    SIGNALS.iter().find(|(n, _)| *n == name).map(|&(_, v)| v).ok_or_else(|| {
        let known: Vec<&str> = SIGNALS.iter().map(|(n, _)| *n).collect();
        format!("stop signal {s:?} is not one of {} or a number", known.join(", "))
    })
}

impl Spec {
    /// Parses and checks the file's text; `Err` is one line for the console.
    pub fn parse(text: &str) -> Result<Spec, String> {
        let spec: Spec = serde_json::from_str(text).map_err(|e| format!("not a workload file: {e}"))?;
        spec.check()?;
        Ok(spec)
    }

    /// What chinit cannot start: an empty argv or program, an env entry without `=`, a relative
    /// cwd, an unknown stop signal.
    pub fn check(&self) -> Result<(), String> {
        match self.argv.first() {
            None => return Err("argv is empty".into()),
            Some(p) if p.is_empty() => return Err("argv[0] is empty".into()),
            Some(_) => {}
        }
        if let Some(bad) = self.env.iter().find(|e| !e.contains('=') || e.starts_with('=')) {
            return Err(format!("env entry {bad:?} is not NAME=VALUE"));
        }
        if !self.cwd.starts_with('/') {
            return Err(format!("cwd {:?} is not an absolute path", self.cwd));
        }
        signal_number(&self.stop_signal)?;
        Ok(())
    }

    /// The file's text (one line, then a newline).
    pub fn to_text(&self) -> String {
        let mut s = serde_json::to_string(self).unwrap_or_default();
        s.push('\n');
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_defaults() {
        let s = Spec {
            argv: vec!["/bin/app".into(), "a b".into()],
            env: vec!["PATH=/bin".into(), "X=1=2".into()],
            cwd: "/srv".into(),
            uid: 1000,
            gid: 100,
            groups: vec![100, 27],
            stop_signal: "SIGINT".into(),
        };
        assert_eq!(Spec::parse(&s.to_text()).unwrap(), s);
        let d = Spec::parse(r#"{"argv":["/app"]}"#).unwrap();
        assert_eq!((d.cwd.as_str(), d.uid, d.gid, d.stop_signal.as_str()), ("/", 0, 0, "SIGTERM"));
        assert!(d.env.is_empty() && d.groups.is_empty());
    }

    #[test]
    fn refusals_say_what() {
        for (text, want) in [
            ("", "not a workload file"),
            ("{}", "argv"),
            (r#"{"argv":[]}"#, "argv is empty"),
            (r#"{"argv":[""]}"#, "argv[0] is empty"),
            (r#"{"argv":["/a"],"env":["NOEQ"]}"#, "NOEQ"),
            (r#"{"argv":["/a"],"cwd":"srv"}"#, "absolute"),
            (r#"{"argv":["/a"],"stop_signal":"SIGFOO"}"#, "SIGFOO"),
            (r#"{"argv":["/a"],"uid":-1}"#, "not a workload file"),
            (r#"{"argv":["/a"],"user":"app"}"#, "unknown field"),
        ] {
            let e = Spec::parse(text).unwrap_err();
            assert!(e.contains(want), "{text}: {e}");
        }
    }

    #[test]
    fn signal_names() {
        assert_eq!(signal_number("SIGTERM"), Ok(15));
        assert_eq!(signal_number("int"), Ok(2));
        assert_eq!(signal_number("9"), Ok(9));
        assert!(signal_number("SIGRTMIN+3").unwrap_err().contains("SIGRTMIN+3"));
        assert!(signal_number("0").is_err());
    }
}
