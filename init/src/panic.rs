//! The panic hook: PID 1 must never die (the kernel would panic with "Attempted to kill init").
//! It writes the location and message to the console and /dev/kmsg, then powers off.

use crate::log;

pub fn install() {
    std::panic::set_hook(Box::new(|info| {
        log::line(format_args!("panic: {info}"));
        log::kmsg(format_args!("panic: {info}"));
        if std::process::id() == 1 {
            nix::unistd::sync();
            let _ = nix::sys::reboot::reboot(crate::shutdown::power_off_mode());
            loop {
                nix::unistd::pause();
            }
        }
    }));
}
