//! A snapshot copy that learns by itself that it is one. Firecracker gives its guests a VM
//! generation ID (ACPI, always on) and changes it at every snapshot load, before the vCPUs resume.
//! Linux's vmgenid driver (5.18 on, `CONFIG_VMGENID`) then reseeds the random generator and logs
//! [`FORK_NOTICE`]; a uevent for it came only with Linux 6.10, so the kernel log is what every
//! kernel from 5.18 on tells user space. From ready on, in a VM, chinit watches the log for that
//! record (the kernel writes it only where the driver has a device) and makes the copy known
//! ([`crate::control::Chinit::noticed_fork`]): generation up by one, address re-announced,
//! neighbours flushed, restore marks, the ready document pushed, one console line. The host's
//! `POST /v1/restore` for the same load still makes the copy unique, and counts once.

use std::os::fd::AsRawFd;
use std::sync::Arc;

use agent::proto::KmsgRecord;

/// What the kernel logs (notice level) when the VM generation ID changed (`add_vmfork_randomness`).
pub const FORK_NOTICE: &str = "random: crng reseeded due to virtual machine fork";

/// The ACPI driver's directory: a device bound to it is a link among its entries.
const DRIVER: &str = "/sys/bus/acpi/drivers/vmgenid";

/// Whether the driver has a device, from the names in its directory (pure): the driver's own
/// entries are `bind`, `unbind`, `uevent` and `module`; a device is named by its ACPI id
/// (`FCVMGID:00`, `VMGENCTR:00`, `QEMUVGID:00`: the driver takes a `VM_GEN_COUNTER` compatible id).
pub fn has_device<'a>(entries: impl IntoIterator<Item = &'a str>) -> bool {
    entries.into_iter().any(|e| e.contains(':'))
}

/// Whether this machine has a VM generation ID the kernel watches.
pub fn present() -> bool {
    let Ok(dir) = std::fs::read_dir(DRIVER) else { return false };
    let names: Vec<String> = dir.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    has_device(names.iter().map(String::as_str))
}

/// Whether a log record is the kernel's notice (pure): the kernel's own facility (0), never a
/// record user space wrote to `/dev/kmsg` (the kernel gives those facility 1 or more).
pub fn is_fork_notice(r: &KmsgRecord) -> bool {
    r.priority >> 3 == 0 && r.text == FORK_NOTICE
}

/// The kernel log from here on: opened at its end at ready, before `/ready` answers, so that no
/// load can come between (a host may snapshot the machine the moment it hears of ready).
pub struct Log(std::fs::File);

impl Log {
    pub fn open() -> std::io::Result<Log> {
        let f = crate::kmsg::open()?;
        // SAFETY: lseek on a descriptor `f` owns; SEEK_END on /dev/kmsg moves past every record.
        if unsafe { libc::lseek(f.as_raw_fd(), 0, libc::SEEK_END) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Log(f))
    }
}

/// Says once on the console that loads cannot be noticed, and why.
pub fn cannot_watch(e: &std::io::Error) {
    crate::say!("vmgenid: cannot watch the kernel log: {e}; a snapshot copy learns it is one only from POST /v1/restore");
}

/// Reads `log` and tells `ctl` of each notice. Returns only when the log cannot be read (said
/// once on the console).
pub async fn watch(log: Log, ctl: Arc<crate::control::Chinit>) {
    if let Err(e) = watch_log(log, &ctl).await {
        cannot_watch(&e);
    }
}

async fn watch_log(Log(f): Log, ctl: &Arc<crate::control::Chinit>) -> std::io::Result<()> {
    // SAFETY: the `File` keeps the descriptor open, the same one, until the `AsyncFd` that owns it
    // is dropped.
    let mut f = unsafe { tokio::io::unix::AsyncFd::register_with_interest(f, tokio::io::Interest::READABLE) }?;
    let mut buf = crate::kmsg::buffer();
    loop {
        let mut guard = f.readable_mut().await?;
        loop {
            match crate::kmsg::next(guard.get_inner_mut(), &mut buf)? {
                crate::kmsg::Next::Record(r) if is_fork_notice(&r) => ctl.noticed_fork().await,
                // Records overwritten before they were read, and others: go on with the next.
                crate::kmsg::Next::Record(_) | crate::kmsg::Next::Lost => {}
                crate::kmsg::Next::Empty => {
                    guard.clear_ready();
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_is_an_acpi_id_among_the_driver_s_entries() {
        assert!(has_device(["bind", "FCVMGID:00", "module", "uevent", "unbind"]));
        assert!(has_device(["VMGENCTR:00"]));
        assert!(!has_device(["bind", "module", "uevent", "unbind"]));
        assert!(!has_device([]));
    }

    #[test]
    fn only_the_kernel_s_own_record_is_the_notice() {
        let rec = |line: &str| KmsgRecord::parse(line).unwrap();
        assert!(is_fork_notice(&rec("5,812,4123456,-;random: crng reseeded due to virtual machine fork")));
        // The same text written to /dev/kmsg by a process: facility user (13 = 1 << 3 | 5).
        assert!(!is_fork_notice(&rec("13,813,4123457,-;random: crng reseeded due to virtual machine fork")));
        assert!(!is_fork_notice(&rec("5,814,4123458,-;random: crng init done")));
        assert!(!is_fork_notice(&rec("5,815,4123459,-;random: crng reseeded due to virtual machine fork and more")));
    }
}
