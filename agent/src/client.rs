//! A small blocking HTTP/1.1 client over any `Read + Write`, for host-probe and the tests,
//! and the host side of cloud-hypervisor's hybrid vsock handshake (`CONNECT <port>\n` → `OK <n>\n`).

use std::fmt;
use std::io::{self, Read, Write};

/// Largest response head the client accepts.
const MAX_HEAD: usize = 16 * 1024;
/// Largest response body the client accepts.
const MAX_BODY: usize = 4 * 1024 * 1024;

#[derive(Debug)]
pub enum ClientError {
    Io(io::Error),
    /// The peer closed the connection before a whole response arrived.
    Closed,
    /// The response is not HTTP/1.x or breaks a limit.
    BadResponse(String),
    /// The hybrid vsock handshake did not end in `OK <port>`.
    Handshake(String),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Io(e) => write!(f, "{e}"),
            ClientError::Closed => write!(f, "connection closed before a complete response"),
            ClientError::BadResponse(why) => write!(f, "bad HTTP response: {why}"),
            ClientError::Handshake(why) => write!(f, "vsock handshake failed: {why}"),
        }
    }
}

impl std::error::Error for ClientError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ClientError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for ClientError {
    fn from(e: io::Error) -> Self {
        ClientError::Io(e)
    }
}

/// A complete response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, ClientError> {
        serde_json::from_slice(&self.body).map_err(|e| ClientError::BadResponse(format!("body is not the expected JSON: {e}")))
    }
}

/// Sends one request and reads one response. The connection stays usable (keep-alive).
pub fn request<S: Read + Write>(stream: &mut S, method: &str, path: &str, body: Option<&[u8]>) -> Result<Response, ClientError> {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: chinit\r\n");
    if let Some(b) = body {
        head.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", b.len()));
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    if let Some(b) = body {
        out.extend_from_slice(b);
    }
    stream.write_all(&out)?;
    read_response(stream)
}

/// Reads one response: head, then a `Content-Length` body.
pub fn read_response<S: Read>(stream: &mut S) -> Result<Response, ClientError> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(ClientError::Closed);
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(&buf) {
            Ok(httparse::Status::Complete(head_len)) => {
                let status = resp.code.unwrap_or(0);
                let headers: Vec<(String, String)> =
                    resp.headers.iter().map(|h| (h.name.to_string(), String::from_utf8_lossy(h.value).into_owned())).collect();
                let len = match headers.iter().find(|(k, _)| k.eq_ignore_ascii_case("content-length")) {
                    Some((_, v)) => v.trim().parse::<usize>().map_err(|_| ClientError::BadResponse(format!("Content-Length {v:?}")))?,
                    None => 0,
                };
                if len > MAX_BODY {
                    return Err(ClientError::BadResponse(format!("body of {len} bytes is over {MAX_BODY}")));
                }
                let mut body = buf.split_off(head_len);
                while body.len() < len {
                    let n = stream.read(&mut chunk)?;
                    if n == 0 {
                        return Err(ClientError::Closed);
                    }
                    body.extend_from_slice(&chunk[..n]);
                }
                body.truncate(len);
                return Ok(Response { status, headers, body });
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => continue,
            Ok(httparse::Status::Partial) => return Err(ClientError::BadResponse(format!("head over {MAX_HEAD} bytes"))),
            Err(e) => return Err(ClientError::BadResponse(e.to_string())),
        }
    }
}

/// Parses the answer to `CONNECT <port>\n`: `OK <host-side port>`.
pub fn parse_connect_reply(line: &str) -> Result<u32, ClientError> {
    let line = line.trim_end_matches(['\r', '\n']);
    match line.split_once(' ') {
        Some(("OK", port)) => port.trim().parse().map_err(|_| ClientError::Handshake(format!("bad port in {line:?}"))),
        _ => Err(ClientError::Handshake(format!("expected \"OK <port>\", got {line:?}"))),
    }
}

/// The handshake of a VMM's hybrid vsock Unix socket (cloud-hypervisor, Firecracker,
/// vhost-device-vsock) on a connection to it: `CONNECT <port>\n`, then `OK <n>\n`; raw bytes
/// follow. The caller bounds the reads and writes: they hang while the guest's driver is not up.
pub fn vsock_handshake<S: Read + Write>(s: &mut S, port: u32) -> Result<u32, ClientError> {
    s.write_all(format!("CONNECT {port}\n").as_bytes())?;
    let mut line = Vec::with_capacity(32);
    let mut byte = [0u8; 1];
    while line.len() < 64 {
        match s.read(&mut byte)? {
            0 => return Err(ClientError::Handshake(format!("closed by the VMM: no guest listener on vsock port {port}"))),
            _ if byte[0] == b'\n' => break,
            _ => line.push(byte[0]),
        }
    }
    parse_connect_reply(&String::from_utf8_lossy(&line))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// A stream that reads canned bytes in small pieces and records what was written.
    struct Canned {
        input: Cursor<Vec<u8>>,
        piece: usize,
        written: Vec<u8>,
    }

    impl Read for Canned {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(self.piece);
            self.input.read(&mut buf[..n])
        }
    }

    impl Write for Canned {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.written.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn canned(text: &str, piece: usize) -> Canned {
        Canned { input: Cursor::new(text.as_bytes().to_vec()), piece, written: Vec::new() }
    }

    #[test]
    fn reads_a_response_that_arrives_in_pieces() {
        for piece in [1, 3, 4096] {
            let mut s = canned("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 5\r\n\r\nhello", piece);
            let r = request(&mut s, "GET", "/ready", None).unwrap();
            assert_eq!((r.status, r.body.as_slice()), (503, &b"hello"[..]), "piece size {piece}");
            assert_eq!(String::from_utf8(s.written).unwrap(), "GET /ready HTTP/1.1\r\nHost: chinit\r\n\r\n");
        }
    }

    #[test]
    fn sends_a_body_with_its_length() {
        let mut s = canned("HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n", 4096);
        let r = request(&mut s, "POST", "/v1/shutdown", Some(b"{}")).unwrap();
        assert_eq!(r.status, 202);
        assert_eq!(r.header("Content-Length"), Some("0"));
        assert!(String::from_utf8(s.written).unwrap().ends_with("Content-Length: 2\r\n\r\n{}"));
    }

    #[test]
    fn truncated_and_malformed_responses_are_errors() {
        let cases = [
            ("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", "closed"),
            ("HTTP/1.1 200 OK\r\n", "closed"),
            ("SSH-2.0-OpenSSH\r\n\r\n", "bad HTTP"),
            ("HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", "Content-Length"),
        ];
        for (text, want) in cases {
            let err = read_response(&mut canned(text, 4096)).unwrap_err().to_string();
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }

    #[test]
    fn connect_reply_parsing() {
        assert_eq!(parse_connect_reply("OK 1073741824\n").unwrap(), 1_073_741_824);
        assert_eq!(parse_connect_reply("OK 5").unwrap(), 5);
        for bad in ["", "ok", "ERR 1", "OK x", "OK"] {
            assert!(parse_connect_reply(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn vsock_handshake_says_connect_and_reads_ok() {
        let mut s = canned("OK 1073741824\nraw bytes", 1);
        assert_eq!(vsock_handshake(&mut s, 1024).unwrap(), 1_073_741_824);
        assert_eq!(s.written, b"CONNECT 1024\n");
        let mut rest = String::new();
        s.read_to_string(&mut rest).unwrap();
        assert_eq!(rest, "raw bytes", "nothing past the reply's line is taken");
        let e = vsock_handshake(&mut canned("", 8), 5).unwrap_err().to_string();
        assert!(e.contains("no guest listener on vsock port 5"), "{e}");
    }
}
