//! A restored copy's `config.json`: cloud-hypervisor restores every device from the snapshot's, so
//! each copy gets it with its own console file, vsock socket and TAP.

use std::path::Path;

/// A copy's `config.json` (pure): the snapshot's, with this copy's console file, vsock socket and
/// TAP; every other device as it was (the disk is read-only: copies share it).
pub fn copy_config(config: &str, serial: &Path, vsock: Option<&Path>, tap: Option<&str>) -> Result<String, String> {
    let mut v: serde_json::Value = serde_json::from_str(config).map_err(|e| format!("not JSON: {e}"))?;
    let file = serde_json::Value::String(serial.display().to_string());
    for console in ["serial", "console"] {
        if v.pointer(&format!("/{console}/mode")).and_then(|m| m.as_str()) == Some("File") {
            v[console]["file"] = file.clone();
        }
    }
    match (v.get_mut("vsock").filter(|s| !s.is_null()), vsock) {
        (Some(vs), Some(socket)) => vs["socket"] = serde_json::Value::String(socket.display().to_string()),
        (None, None) => {}
        _ => return Err("its vsock device is not the one a copy gets".into()),
    }
    let nets = v.get_mut("net").and_then(|n| n.as_array_mut());
    match (nets, tap) {
        (Some(nets), Some(tap)) if nets.len() == 1 => nets[0]["tap"] = serde_json::Value::String(tap.to_string()),
        (None, None) => {}
        (Some(nets), None) if nets.is_empty() => {}
        _ => return Err("its network devices are not the one a copy gets".into()),
    }
    serde_json::to_string_pretty(&v).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What cloud-hypervisor v53 writes (trimmed to the devices a copy changes, and one it keeps).
    const CONFIG: &str = r#"{"payload":{"kernel":"/k/vmlinux"},"disks":[{"id":"_disk0","path":"/img/r.ext4","readonly":true}],
        "serial":{"file":"/run/host-probe-1-0/serial.log","mode":"File"},"console":{"mode":"Off"},
        "vsock":{"id":"_vsock1","cid":3,"socket":"/run/host-probe-1-0/vsock.sock"},
        "net":[{"id":"_net1","tap":"hp1x0","mac":"02:68:70:fe:01:02","host_mac":"de:48:56:6f:a6:59"}]}"#;

    #[test]
    fn a_copys_config_has_its_own_console_vsock_and_tap_and_everything_else_as_it_was() {
        let edited = copy_config(CONFIG, Path::new("/run/c/serial.log"), Some(Path::new("/run/c/vsock.sock")), Some("hp2x5")).unwrap();
        let v: serde_json::Value = serde_json::from_str(&edited).unwrap();
        let was: serde_json::Value = serde_json::from_str(CONFIG).unwrap();
        assert_eq!(v["serial"], serde_json::json!({"file": "/run/c/serial.log", "mode": "File"}));
        assert_eq!(v["vsock"]["socket"], "/run/c/vsock.sock");
        assert_eq!(v["net"][0]["tap"], "hp2x5");
        for same in ["/payload", "/disks", "/console", "/vsock/cid", "/net/0/mac", "/net/0/host_mac"] {
            assert_eq!(v.pointer(same), was.pointer(same), "{same}");
        }
        // A snapshot whose devices are not those a copy gets is refused.
        let cases = [
            (CONFIG, None, Some("t"), "vsock"),
            (CONFIG, Some(Path::new("/v")), None, "network"),
            ("{\"serial\":", Some(Path::new("/v")), Some("t"), "not JSON"),
        ];
        for (config, vsock, tap, want) in cases {
            let e = copy_config(config, Path::new("/s"), vsock, tap).unwrap_err();
            assert!(e.contains(want), "{e}");
        }
        let bare = r#"{"serial":{"mode":"Off"},"console":{"file":"/old","mode":"File"},"vsock":null}"#;
        let v: serde_json::Value = serde_json::from_str(&copy_config(bare, Path::new("/s"), None, None).unwrap()).unwrap();
        assert_eq!((v["console"]["file"].as_str(), v["serial"].get("file")), (Some("/s"), None));
    }
}
