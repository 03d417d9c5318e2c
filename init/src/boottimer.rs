//! Firecracker's boot timer (`--boot-timer`): a device at a physical address the host names
//! (`chinit.boot_timer=ADDR`); a guest's write of [`BOOT_TIMER_MAGIC`] there makes Firecracker log
//! the time since it started building the VM, one host-side mark where the VMM logs no port-0x80
//! writes. chinit writes it once, at ready, through `/dev/mem` (`CONFIG_DEVMEM`).

use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;

use agent::cmdline::BOOT_TIMER_MAGIC;

/// Writes the byte at physical address `addr`; the error names what failed.
pub fn write(addr: u64) -> Result<(), String> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_SYNC | libc::O_CLOEXEC)
        .open("/dev/mem")
        .map_err(|e| format!("/dev/mem: {e} (a kernel without CONFIG_DEVMEM has none)"))?;
    let page = 4096u64;
    let base = addr & !(page - 1);
    let offset = libc::off_t::try_from(base).map_err(|_| format!("address {addr:#x} is out of range"))?;
    // SAFETY: a new shared mapping of one page of /dev/mem at `base`, unmapped below; nothing else
    // refers to it.
    let p = unsafe {
        libc::mmap(std::ptr::null_mut(), page as usize, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, f.as_raw_fd(), offset)
    };
    if p == libc::MAP_FAILED {
        return Err(format!("mmap /dev/mem at {base:#x}: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: `addr - base` is inside the page just mapped; one volatile byte write, as the device
    // takes it; then the page is unmapped.
    unsafe {
        std::ptr::write_volatile((p as *mut u8).add((addr - base) as usize), BOOT_TIMER_MAGIC);
        libc::munmap(p, page as usize);
    }
    Ok(())
}
