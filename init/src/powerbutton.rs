//! The ACPI power button (cloud-hypervisor `ch-remote power-button`, QEMU `system_powerdown`): the
//! kernel's button driver reports KEY_POWER on an evdev device named "Power Button"; a press starts
//! the orderly shutdown. Needs CONFIG_ACPI_BUTTON and CONFIG_INPUT_EVDEV in the guest kernel.

use std::io::Read;
use std::path::{Path, PathBuf};

const EV_KEY: u16 = 1;
const KEY_POWER: u16 = 116;
/// `struct input_event` on 64-bit: a timeval (16 bytes), type, code, value.
const EVENT_SIZE: usize = 24;

/// Whether one input event is a power-button press.
pub fn is_power_press(ev: &[u8; EVENT_SIZE]) -> bool {
    let ty = u16::from_ne_bytes([ev[16], ev[17]]);
    let code = u16::from_ne_bytes([ev[18], ev[19]]);
    let value = i32::from_ne_bytes([ev[20], ev[21], ev[22], ev[23]]);
    ty == EV_KEY && code == KEY_POWER && value == 1
}

/// The event devices whose name says they are a power button, under a sysfs `class/input`.
pub fn find(class_input: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(class_input) else { return Vec::new() };
    let mut found: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("event"))
        .filter(|e| std::fs::read_to_string(e.path().join("device/name")).is_ok_and(|n| n.trim() == "Power Button"))
        .map(|e| Path::new("/dev/input").join(e.file_name()))
        .collect();
    found.sort();
    found
}

/// Watches every power button on its own thread; `on_press` runs once per press.
pub fn watch(on_press: impl Fn() + Send + Clone + 'static) -> usize {
    let devices = find(Path::new("/sys/class/input"));
    let mut watching = 0;
    for dev in devices {
        let Ok(mut f) = std::fs::File::open(&dev) else { continue };
        let on_press = on_press.clone();
        let spawned = std::thread::Builder::new().name("power-button".into()).spawn(move || {
            let mut ev = [0u8; EVENT_SIZE];
            while f.read_exact(&mut ev).is_ok() {
                if is_power_press(&ev) {
                    on_press();
                }
            }
        });
        watching += usize::from(spawned.is_ok());
    }
    watching
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(ty: u16, code: u16, value: i32) -> [u8; EVENT_SIZE] {
        let mut e = [0u8; EVENT_SIZE];
        e[16..18].copy_from_slice(&ty.to_ne_bytes());
        e[18..20].copy_from_slice(&code.to_ne_bytes());
        e[20..24].copy_from_slice(&value.to_ne_bytes());
        e
    }

    #[test]
    fn only_a_power_key_press_counts() {
        assert!(is_power_press(&event(EV_KEY, KEY_POWER, 1)));
        assert!(!is_power_press(&event(EV_KEY, KEY_POWER, 0)), "release");
        assert!(!is_power_press(&event(EV_KEY, 30, 1)), "another key");
        assert!(!is_power_press(&event(0, 0, 0)), "EV_SYN");
    }

    #[test]
    fn finds_devices_by_name() {
        let dir = std::env::temp_dir().join(format!("chinit-input-{}", std::process::id()));
        for (ev, name) in
            [("event0", "AT Translated Set 2 keyboard"), ("event2", "Power Button"), ("event1", "Power Button"), ("mouse0", "Power Button")]
        {
            std::fs::create_dir_all(dir.join(ev).join("device")).unwrap();
            std::fs::write(dir.join(ev).join("device/name"), format!("{name}\n")).unwrap();
        }
        assert_eq!(find(&dir), vec![PathBuf::from("/dev/input/event1"), PathBuf::from("/dev/input/event2")]);
        assert!(find(&dir.join("missing")).is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
