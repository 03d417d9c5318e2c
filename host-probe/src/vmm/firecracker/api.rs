//! Firecracker's API on its `--api-sock`: HTTP/1.1 over a Unix socket, one request per connection,
//! each given up at one deadline however Firecracker answers (or does not: [`crate::bounded`]).
//! The transport is cloud-hypervisor's too ([`super::super::http_call`]); Firecracker's paths are
//! its own (`/boot-source`, `/actions`, ...).
//!
//! Firecracker answers `204` with no body to a configuration or action, `200` with JSON to a
//! `GET`, and `400` with `{"fault_message": "..."}` to what it refuses; the message is the error.

use std::path::Path;
use std::time::{Duration, Instant};

use super::super::ApiError;
use super::{Call, Method};
use crate::bounded;

/// One call: the status and body of a 2xx answer, else the status and Firecracker's
/// `fault_message` (or the body as it came).
pub fn call(socket: &Path, method: Method, path: &str, body: Option<&str>, deadline: Instant) -> Result<(u16, String), ApiError> {
    let what = format!("Firecracker API {} {path}", method.name());
    let r = super::super::http_call(&what, socket, method.name(), path, body.map(str::as_bytes), deadline)?;
    if (200..300).contains(&r.status) {
        Ok((r.status, String::from_utf8_lossy(&r.body).into_owned()))
    } else {
        let said = fault_message(&r.body).unwrap_or_else(|| String::from_utf8_lossy(&r.body).trim().to_string());
        Err(ApiError::Failed(format!("{what}: {} {said}", r.status)))
    }
}

/// The `fault_message` of an error answer's body.
pub fn fault_message(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    v.get("fault_message")?.as_str().map(str::to_string)
}

/// [`call`] of a [`Call`].
pub fn send(socket: &Path, c: &Call, deadline: Instant) -> Result<(u16, String), ApiError> {
    let body = c.body.as_ref().map(|b| b.to_string());
    call(socket, c.method, &c.path, body.as_deref(), deadline)
}

/// The calls in order ([`super::api_calls`]), all by one deadline; the first that fails ends it.
pub fn configure(socket: &Path, calls: &[Call], deadline: Instant) -> Result<(), ApiError> {
    calls.iter().try_for_each(|c| send(socket, c, deadline).map(drop))
}

/// Waits until Firecracker listens on `socket` (it binds it shortly after it starts), or the
/// deadline passes.
pub fn wait_listening(socket: &Path, deadline: Instant) -> Result<(), ApiError> {
    loop {
        match bounded::connect_unix(socket, deadline) {
            Ok(_) => return Ok(()),
            Err(e) if bounded::is_timeout(&e) => return Err(ApiError::io(&format!("Firecracker API ({})", socket.display()), &e)),
            Err(e) => {
                if Instant::now() >= deadline {
                    return Err(ApiError::NoAnswer(format!("Firecracker API ({}): not listening in time: {e}", socket.display())));
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    }
}

/// The VM's state from `GET /` (`Not started`, `Running`, `Paused`).
pub fn state(socket: &Path, deadline: Instant) -> Result<String, ApiError> {
    let (_, body) = call(socket, Method::Get, "/", None, deadline)?;
    let v: serde_json::Value = serde_json::from_str(&body).map_err(|e| ApiError::Failed(format!("Firecracker API GET /: {e}")))?;
    Ok(v.get("state").and_then(|s| s.as_str()).unwrap_or("").to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::{UnixListener, UnixStream};

    /// One request as a server reads it: method, path, Content-Length header, body.
    type Request = (String, String, Option<String>, String);

    fn read_request(s: &mut UnixStream) -> Request {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 1024];
        loop {
            let n = s.read(&mut chunk).unwrap();
            assert!(n > 0, "closed before a whole request");
            buf.extend_from_slice(&chunk[..n]);
            let mut headers = [httparse::EMPTY_HEADER; 16];
            let mut req = httparse::Request::new(&mut headers);
            if let httparse::Status::Complete(head) = req.parse(&buf).unwrap() {
                let len = req.headers.iter().find(|h| h.name.eq_ignore_ascii_case("content-length"));
                let len = len.map(|h| String::from_utf8_lossy(h.value).to_string());
                let want = len.as_deref().map_or(0, |l| l.parse::<usize>().unwrap());
                let (method, path) = (req.method.unwrap().to_string(), req.path.unwrap().to_string());
                while buf.len() < head + want {
                    let n = s.read(&mut chunk).unwrap();
                    buf.extend_from_slice(&chunk[..n]);
                }
                return (method, path, len, String::from_utf8_lossy(&buf[head..head + want]).into_owned());
            }
        }
    }

    /// Answers as v1.16.1 does (its bytes, captured with curl): a 204 with an empty reason and no
    /// length, a 200 with JSON, a 400 with a fault message; connections kept alive.
    fn stand_in(l: UnixListener, n: usize) -> std::thread::JoinHandle<Vec<Request>> {
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            for _ in 0..n {
                let (mut s, _) = l.accept().unwrap();
                let r = read_request(&mut s);
                let answer = match (r.0.as_str(), r.1.as_str()) {
                    ("GET", "/machine-config") => {
                        let body = r#"{"vcpu_count":1,"mem_size_mib":128,"smt":false,"track_dirty_pages":false,"huge_pages":"None"}"#;
                        format!(
                            "HTTP/1.1 200 \r\nServer: Firecracker API\r\nConnection: keep-alive\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                            body.len()
                        )
                    }
                    ("PUT", "/boot-source") => {
                        let body = r#"{"fault_message":"Boot source error: The kernel file cannot be opened: No such file or directory (os error 2)"}"#;
                        format!(
                            "HTTP/1.1 400 \r\nServer: Firecracker API\r\nConnection: keep-alive\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                            body.len()
                        )
                    }
                    ("PUT", "/oops") => "HTTP/1.1 500 \r\nContent-Length: 5\r\n\r\nbroke".to_string(),
                    _ => "HTTP/1.1 204 \r\nServer: Firecracker API\r\nConnection: keep-alive\r\n\r\n".to_string(),
                };
                s.write_all(answer.as_bytes()).unwrap();
                seen.push(r);
                // Kept alive, as Firecracker does: the client must not wait for the close.
                std::thread::sleep(Duration::from_millis(20));
            }
            seen
        })
    }

    #[test]
    fn answers_as_firecracker_gives_them() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("api.sock");
        let fc = stand_in(UnixListener::bind(&sock).unwrap(), 5);
        let deadline = Instant::now() + Duration::from_secs(10);
        assert_eq!(
            call(&sock, Method::Put, "/machine-config", Some(r#"{"vcpu_count":1,"mem_size_mib":128}"#), deadline),
            Ok((204, String::new()))
        );
        let (status, body) = call(&sock, Method::Get, "/machine-config", None, deadline).unwrap();
        assert_eq!((status, &body[..20]), (200, r#"{"vcpu_count":1,"mem"#));
        assert_eq!(
            send(&sock, &Call::put("/boot-source", serde_json::json!({ "kernel_image_path": "/none" })), deadline),
            Err(ApiError::Failed(
                "Firecracker API PUT /boot-source: 400 Boot source error: The kernel file cannot be opened: No such file or directory (os error 2)"
                    .into()
            ))
        );
        assert_eq!(
            call(&sock, Method::Put, "/oops", Some("{}"), deadline),
            Err(ApiError::Failed("Firecracker API PUT /oops: 500 broke".into()))
        );
        assert_eq!(call(&sock, Method::Patch, "/vm", Some(r#"{"state":"Paused"}"#), deadline), Ok((204, String::new())));
        let seen = fc.join().unwrap();
        let want = [
            ("PUT", "/machine-config", Some("35"), r#"{"vcpu_count":1,"mem_size_mib":128}"#),
            ("GET", "/machine-config", None, ""),
            ("PUT", "/boot-source", Some("29"), r#"{"kernel_image_path":"/none"}"#),
            ("PUT", "/oops", Some("2"), "{}"),
            ("PATCH", "/vm", Some("18"), r#"{"state":"Paused"}"#),
        ];
        for (got, want) in seen.iter().zip(want) {
            assert_eq!((got.0.as_str(), got.1.as_str(), got.2.as_deref(), got.3.as_str()), want);
        }
    }

    #[test]
    fn configure_stops_at_the_first_refusal() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("api.sock");
        let fc = stand_in(UnixListener::bind(&sock).unwrap(), 2);
        let calls = [
            Call::put("/machine-config", serde_json::json!({ "vcpu_count": 1, "mem_size_mib": 128 })),
            Call::put("/boot-source", serde_json::json!({ "kernel_image_path": "/none" })),
            Call::put("/actions", super::super::instance_start_body()),
        ];
        let e = configure(&sock, &calls, Instant::now() + Duration::from_secs(10)).unwrap_err();
        assert!(e.to_string().starts_with("Firecracker API PUT /boot-source: 400 Boot source error"), "{e}");
        let seen: Vec<String> = fc.join().unwrap().into_iter().map(|r| r.1).collect();
        assert_eq!(seen, ["/machine-config", "/boot-source"]);
    }

    #[test]
    fn fault_messages() {
        let cases: [(&[u8], Option<&str>); 4] = [
            (br#"{"fault_message":"Invalid request method"}"#, Some("Invalid request method")),
            (br#"{"error":"x"}"#, None),
            (b"", None),
            (b"not json", None),
        ];
        for (body, want) in cases {
            assert_eq!(fault_message(body).as_deref(), want);
        }
    }

    /// No socket: said at once, not waited for; a socket that never comes: given up at the deadline.
    #[test]
    fn a_missing_socket_fails_at_once_and_is_waited_for_until_the_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("none.sock");
        let t = Instant::now();
        let e = call(&sock, Method::Get, "/", None, Instant::now() + Duration::from_secs(10)).unwrap_err();
        assert!(matches!(e, ApiError::Failed(_)) && t.elapsed() < Duration::from_secs(1), "{e} after {:?}", t.elapsed());
        let e = wait_listening(&sock, Instant::now() + Duration::from_millis(100)).unwrap_err();
        assert!(matches!(e, ApiError::NoAnswer(_)) && e.to_string().contains("not listening in time"), "{e}");
        let later = sock.clone();
        let binder = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            UnixListener::bind(later).unwrap()
        });
        wait_listening(&sock, Instant::now() + Duration::from_secs(10)).unwrap();
        drop(binder.join());
    }

    /// An API that answers a byte at a time, slower than the whole call may take: the call gives up
    /// at its deadline however the bytes trickle.
    #[test]
    fn an_api_that_trickles_its_answer_is_given_up_on_at_the_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.sock");
        let l = UnixListener::bind(&path).unwrap();
        let fc = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let _ = read_request(&mut s);
            for b in b"HTTP/1.1 204 \r\nServer: Firecracker API\r\n".iter().cycle().take(100) {
                std::thread::sleep(Duration::from_millis(200));
                if s.write_all(&[*b]).is_err() {
                    return;
                }
            }
        });
        let (tx, rx) = std::sync::mpsc::channel();
        let t = Instant::now();
        std::thread::spawn(move || tx.send(call(&path, Method::Put, "/actions", Some("{}"), Instant::now() + Duration::from_secs(1))));
        let r = rx.recv_timeout(Duration::from_secs(10)).expect("the call was still waiting after 10 s (deadline 1 s)");
        let took = t.elapsed();
        assert!(matches!(r, Err(ApiError::NoAnswer(_))), "{r:?}");
        assert!(took < Duration::from_millis(1500), "gave up after {took:?}");
        fc.join().unwrap();
    }

    /// Against the real binary, by hand (no guest is booted; the kernel is a stand-in file):
    /// `FIRECRACKER=/path/to/firecracker [FIRECRACKER_TAP=tap0] cargo test -p host-probe
    /// vmm::firecracker -- --ignored`. Every body host-probe sends before `InstanceStart` is accepted,
    /// the snapshot bodies parse (Firecracker denies unknown fields), and a refusal's fault message is
    /// the error.
    #[test]
    #[ignore = "needs FIRECRACKER=/path/to/firecracker"]
    fn the_real_firecracker_takes_every_body() {
        use super::super::{api_calls, argv, pause_body, snapshot_create_body, snapshot_load_body};
        use crate::vmm::{Accel, Console, Net, Role, Root, Spec, Vsock};
        let binary = std::env::var("FIRECRACKER").expect("FIRECRACKER=/path/to/firecracker");
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mut elf = vec![0u8; 4096];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[18] = 62;
        std::fs::write(d.join("vmlinux"), &elf).unwrap();
        std::fs::write(d.join("rootfs.ext4"), vec![0u8; 1 << 20]).unwrap();
        let spec = |n: u32| Spec {
            binary: binary.clone().into(),
            kernel: d.join("vmlinux"),
            root: Root::Disk(d.join("rootfs.ext4")),
            initramfs: None,
            cmdline: "console=ttyS0 reboot=k panic=-1 root=/dev/vda ro".into(),
            cpus: 2,
            memory_mib: 128,
            net: std::env::var("FIRECRACKER_TAP").ok().map(|tap| Net { tap, mac: "02:68:70:00:00:02".into() }),
            vsock: Some(Vsock::Hybrid { cid: 3, socket: d.join(format!("vsock{n}.sock")) }),
            serial: d.join(format!("serial{n}.log")),
            console: Console::Serial,
            fs: None,
            rng: true,
            api_socket: d.join(format!("api{n}.sock")),
            event_monitor: d.join("events"),
            log_file: d.join(format!("fc{n}.log")),
            debugcon_socket: d.join("debugcon.sock"),
            accel: Accel::Kvm,
            role: Role::Boot,
            root_writable: false,
            arch: crate::locate::host_arch(),
        };
        let start = |s: &Spec| {
            std::fs::write(&s.serial, "").unwrap();
            let a = argv(s, "hp-test").unwrap();
            let out = std::fs::File::create(s.log_file.with_extension("out")).unwrap();
            let child = std::process::Command::new(&a[0]).args(&a[1..]).stdout(out.try_clone().unwrap()).stderr(out).spawn().unwrap();
            (child, s.api_socket.clone())
        };
        let soon = || Instant::now() + Duration::from_secs(10);
        let put = |sock: &Path, path: &str, body: serde_json::Value| send(sock, &Call::put(path, body), soon());

        // A boot over the API, up to InstanceStart.
        let boot = spec(1);
        let (mut fc, sock) = start(&boot);
        wait_listening(&sock, soon()).unwrap();
        assert_eq!(put(&sock, "/machine-config", serde_json::json!({ "vcpu_count": 1, "mem_size_mib": 128 })), Ok((204, String::new())));
        let (_, got) = call(&sock, Method::Get, "/machine-config", None, soon()).unwrap();
        assert!(got.contains(r#""vcpu_count":1,"mem_size_mib":128"#), "{got}");
        let e = put(&sock, "/boot-source", serde_json::json!({ "kernel_image_path": d.join("none") })).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Firecracker API PUT /boot-source: 400 Boot source error: The kernel file cannot be opened: No such file or directory (os error 2)"
        );
        let calls = api_calls(&boot).unwrap();
        let (start_call, setup) = calls.split_last().unwrap();
        assert_eq!(start_call.path, "/actions");
        configure(&sock, setup, soon()).unwrap();
        assert_eq!(state(&sock, soon()).unwrap(), "Not started");
        let (_, vm) = call(&sock, Method::Get, "/vm/config", None, soon()).unwrap();
        eprintln!("GET /vm/config: {vm}");
        for (method, path, body) in [
            (Method::Patch, "/vm", pause_body()),
            (Method::Put, "/snapshot/create", snapshot_create_body(&d.join("state"), &d.join("memory"))),
        ] {
            let e = send(&sock, &Call { method, path: path.into(), body: Some(body) }, soon()).unwrap_err().to_string();
            eprintln!("before InstanceStart: {e}");
            assert!(!e.contains("unknown field") && !e.contains("missing field"), "{e}");
        }
        fc.kill().unwrap();
        fc.wait().unwrap();

        // A copy: a fresh Firecracker takes the console and the load's body (the snapshot is missing).
        let copy = spec(2);
        let (mut fc, sock) = start(&copy);
        wait_listening(&sock, soon()).unwrap();
        assert_eq!(put(&sock, "/serial", serde_json::json!({ "serial_out_path": copy.serial })), Ok((204, String::new())));
        let tap = copy.net.as_ref().map(|n| ("eth0", n.tap.as_str()));
        let body = snapshot_load_body(&d.join("state"), &d.join("memory"), tap, Some(&d.join("vsock2.sock")));
        let e = put(&sock, "/snapshot/load", body).unwrap_err().to_string();
        eprintln!("snapshot load of nothing: {e}");
        assert!(e.starts_with("Firecracker API PUT /snapshot/load: 400 ") && !e.contains("unknown field"), "{e}");
        fc.kill().unwrap();
        fc.wait().unwrap();
    }
}
