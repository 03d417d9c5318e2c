//! Leftovers of runs that were killed outright (SIGKILL gives no chance to clean up): TAPs named
//! `hp<pid>x<n>` and run directories `host-probe-<pid>-<n>` whose process is gone. Every run sweeps
//! them first. The VMM and helpers die with host-probe on their own (`PR_SET_PDEATHSIG`).

use std::path::Path;

/// The pid a TAP name encodes (`hp` + hex pid + `x` + hex counter).
pub fn tap_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("hp")?;
    let (pid, seq) = rest.split_once('x')?;
    let hex = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
    (hex(pid) && hex(seq)).then(|| u32::from_str_radix(pid, 16).ok())?
}

/// The pid a run directory name encodes (`host-probe-<pid>-<n>`).
pub fn dir_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("host-probe-")?;
    let (pid, seq) = rest.split_once('-')?;
    seq.parse::<u32>().ok()?;
    pid.parse().ok()
}

/// Whether a process with this pid exists.
pub fn alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks that the process exists and may be signalled.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Removes TAPs and run directories of dead host-probe processes; returns what was removed.
pub fn sweep(tmp: &Path) -> Vec<String> {
    let mut removed = Vec::new();
    if let Ok(d) = std::fs::read_dir("/sys/class/net") {
        for e in d.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if tap_pid(&name).is_some_and(|p| !alive(p)) {
                let mut del = std::process::Command::new("ip");
                del.args(["link", "del", "dev", &name]);
                let ok = crate::bounded::output_within(&mut del, crate::tap::IP_TIME).is_ok_and(|o| o.status.success());
                if ok {
                    removed.push(format!("TAP {name}"));
                }
            }
        }
    }
    if let Ok(d) = std::fs::read_dir(tmp) {
        for e in d.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if dir_pid(&name).is_some_and(|p| !alive(p)) && std::fs::remove_dir_all(e.path()).is_ok() {
                removed.push(e.path().display().to_string());
            }
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_encode_pids() {
        assert_eq!(tap_pid("hp6f76x0"), Some(0x6f76));
        assert_eq!(tap_pid("hp1x1f"), Some(1));
        for other in ["hp", "hpx0", "hp12", "hp12x", "hpZZx0", "eth0", "hp6F76x0", "vmtap0"] {
            assert_eq!(tap_pid(other), None, "{other}");
        }
        assert_eq!(dir_pid("host-probe-28534-0"), Some(28534));
        for other in ["host-probe-x-0", "host-probe-12", "host-probe-12-a", "hp-cli-x"] {
            assert_eq!(dir_pid(other), None, "{other}");
        }
    }

    #[test]
    fn liveness() {
        assert!(alive(std::process::id()));
        assert!(!alive(0));
        assert!(!alive(u32::MAX));
    }

    #[test]
    fn sweeps_a_dead_runs_directory_and_tap_but_not_a_live_ones() {
        // A pid that is surely not running: a child that has exited and been reaped.
        let dead = std::process::Command::new("true").spawn().unwrap();
        let dead_pid = dead.id();
        let mut dead = dead;
        dead.wait().unwrap();
        assert!(!alive(dead_pid));
        let tmp = std::env::temp_dir().join(format!("hp-stale-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        let stale = tmp.join(format!("host-probe-{dead_pid}-0"));
        let live = tmp.join(format!("host-probe-{}-77", std::process::id()));
        std::fs::create_dir_all(&stale).unwrap();
        std::fs::create_dir_all(&live).unwrap();
        let tap = crate::tap::tap_name(dead_pid, 3);
        let have_ip = crate::locate::which("ip").is_some();
        if have_ip {
            let ok = std::process::Command::new("ip").args(["tuntap", "add", "dev", &tap, "mode", "tap"]).status().unwrap();
            assert!(ok.success());
        }
        let removed = sweep(&tmp);
        assert!(!stale.exists() && live.exists(), "{removed:?}");
        if have_ip {
            assert!(!crate::tap::exists(&tap), "{removed:?}");
            assert!(removed.contains(&format!("TAP {tap}")), "{removed:?}");
        }
        std::fs::remove_dir_all(&tmp).unwrap();
    }
}
