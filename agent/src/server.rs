//! HTTP/1.1 server of the agent, over any listener (TCP in tests and on the TAP, vsock in a VM).
//!
//! Every resource a client can hold is bounded: the request head ([`Limits::max_head`]), the body
//! ([`Limits::max_body`]), the number of connections ([`Limits::max_connections`]), and time: a request
//! must arrive whole within [`Limits::request_timeout`] of the previous one (slow clients are dropped),
//! and a response must be taken within [`Limits::write_timeout`].
//!
//! At the connection limit a new connection evicts the oldest one that is not in the middle of
//! answering a request, so a flood of idle or trickling connections cannot lock real clients out; when
//! every connection is busy answering, the new one is answered 503 and closed.
//!
//! Strict where leniency is a risk: one `Content-Length` of digits only (two that differ are a
//! smuggling attempt), no chunked bodies, JSON objects only. Every error answer closes the
//! connection. `Connection` is read as comma-separated tokens over every such header, and `close`
//! anywhere closes (`keeps_alive`). `Expect: 100-continue` is answered before the body is read;
//! an HTTP/1.0 client that asks for keep-alive is told it got it.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;
use tokio::time::{timeout, timeout_at, Instant};

use crate::proto::{ErrorBody, ExecRequest, ExecResponse, Kmsg, Ready, RestoreRequest, ShutdownRequest, KMSG_PATH};

/// A refusal of the owner's, with the HTTP status that says why (400: bad request, 503: shutting
/// down, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub message: String,
}

impl Refusal {
    pub fn bad_request(message: impl Into<String>) -> Refusal {
        Refusal { status: 400, message: message.into() }
    }
}

/// Answers being prepared or written, across every listener that shares it: an owner that is
/// about to stop waits for [`InFlight::idle`] so that no request it took goes unanswered.
#[derive(Debug, Default)]
pub struct InFlight {
    answering: AtomicUsize,
    /// Answers ever started: a quiet period is one in which this does not move.
    started: AtomicUsize,
    idle: Notify,
}

impl InFlight {
    fn enter(&self) -> Answering<'_> {
        self.started.fetch_add(1, Ordering::AcqRel);
        self.answering.fetch_add(1, Ordering::AcqRel);
        Answering(self)
    }

    /// Returns once no answer is being prepared or written and none has started for `quiet`: a
    /// request already sent but not yet read (its connection waiting to be accepted or scheduled)
    /// gets that long to start.
    pub async fn idle(&self, quiet: Duration) {
        loop {
            loop {
                let idle = self.idle.notified();
                if self.answering.load(Ordering::Acquire) == 0 {
                    break;
                }
                idle.await;
            }
            let seen = self.started.load(Ordering::Acquire);
            tokio::time::sleep(quiet).await;
            if self.started.load(Ordering::Acquire) == seen && self.answering.load(Ordering::Acquire) == 0 {
                return;
            }
        }
    }
}

/// One answer under way; dropped once it is written (or abandoned).
struct Answering<'a>(&'a InFlight);

impl Drop for Answering<'_> {
    fn drop(&mut self) {
        if self.0.answering.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// Resource bounds of one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_head: usize,
    pub max_body: usize,
    pub max_connections: usize,
    pub request_timeout: Duration,
    pub write_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_head: 8 * 1024,
            max_body: 64 * 1024,
            max_connections: 64,
            request_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(5),
        }
    }
}

/// What one listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ServeOptions {
    pub limits: Limits,
    /// Serve the control endpoints (`/v1/exec`, `/v1/shutdown`); otherwise they answer 403.
    pub control: bool,
}

/// What the server asks of its owner (chinit).
pub trait Control: Send + Sync + 'static {
    /// The current readiness document (`ready` false before chinit is ready).
    fn ready(&self) -> Ready;
    /// Runs a command for `POST /v1/exec`.
    fn exec(&self, req: ExecRequest) -> impl Future<Output = Result<ExecResponse, Refusal>> + Send;
    /// Starts the requested shutdown (or joins one under way); the answer (202) is sent before it
    /// proceeds.
    fn shutdown(&self, req: ShutdownRequest);
    /// Makes a copy restored from a snapshot unique (`POST /v1/restore`); the new ready document.
    fn restore(&self, req: RestoreRequest) -> impl Future<Output = Result<Ready, Refusal>> + Send;
    /// The kernel's log buffer (`GET /v1/kmsg`); an owner that cannot read it says why.
    fn kmsg(&self) -> Result<Kmsg, Refusal> {
        Err(Refusal { status: 404, message: "no kernel log here".into() })
    }
    /// Where the server counts its answers under way, if the owner waits for them.
    fn in_flight(&self) -> Option<&InFlight> {
        None
    }
}

/// Something that yields connections.
pub trait Listener: Send + 'static {
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    fn accept(&mut self) -> impl Future<Output = io::Result<Self::Io>> + Send;
}

impl Listener for tokio::net::TcpListener {
    type Io = tokio::net::TcpStream;
    async fn accept(&mut self) -> io::Result<Self::Io> {
        let (s, _) = tokio::net::TcpListener::accept(self).await?;
        // Answers are small and latency is the point.
        let _ = s.set_nodelay(true);
        Ok(s)
    }
}

impl Listener for tokio::net::UnixListener {
    type Io = tokio::net::UnixStream;
    async fn accept(&mut self) -> io::Result<Self::Io> {
        tokio::net::UnixListener::accept(self).await.map(|(s, _)| s)
    }
}

#[cfg(feature = "vsock")]
impl Listener for tokio_vsock::VsockListener {
    type Io = tokio_vsock::VsockStream;
    async fn accept(&mut self) -> io::Result<Self::Io> {
        tokio_vsock::VsockListener::accept(self).await.map(|(s, _)| s)
    }
}

/// A live connection, as the accept loop sees it.
#[derive(Default)]
struct Slot {
    /// Answering a request (not evictable).
    busy: AtomicBool,
    evict: Notify,
}

/// Serves connections from `listener` until the task is dropped.
pub async fn serve<L: Listener, C: Control>(mut listener: L, ctl: Arc<C>, opts: ServeOptions) {
    // Oldest first; an entry that no longer upgrades is a finished connection.
    let mut live: VecDeque<Weak<Slot>> = VecDeque::new();
    loop {
        match listener.accept().await {
            Ok(io) => {
                live.retain(|w| w.strong_count() > 0);
                if live.len() >= opts.limits.max_connections {
                    let idle = live.iter().position(|w| w.upgrade().is_some_and(|s| !s.busy.load(Ordering::Acquire)));
                    match idle.and_then(|i| live.remove(i)).and_then(|w| w.upgrade()) {
                        Some(old) => old.evict.notify_one(),
                        // Every connection is answering: say so, and close the new one.
                        None => {
                            let timeout = opts.limits.write_timeout;
                            tokio::spawn(async move { refuse_busy(io, timeout).await });
                            continue;
                        }
                    }
                }
                let slot = Arc::new(Slot::default());
                live.push_back(Arc::downgrade(&slot));
                let ctl = Arc::clone(&ctl);
                tokio::spawn(async move {
                    connection(io, ctl, opts, &slot).await;
                    drop(slot);
                });
            }
            // Out of file descriptors or memory: let existing connections finish first.
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// Answers a connection the server has no room for: 503, then close.
async fn refuse_busy<IO: AsyncWrite + Unpin>(mut io: IO, wait: Duration) {
    let body = error_json("every connection is answering a request; try again shortly");
    let out = response(503, &body, Connection::Close);
    let _ = timeout(wait, async {
        io.write_all(&out).await?;
        io.shutdown().await
    })
    .await;
}

/// One parsed request.
#[derive(Debug, PartialEq, Eq)]
struct Request {
    method: String,
    path: String,
    keep_alive: bool,
    /// HTTP/1.0 (which keeps a connection only when asked, and is told so).
    http10: bool,
    body: Vec<u8>,
}

/// Why a request could not be read; each maps to an answer (or to a silent close).
#[derive(Debug, PartialEq, Eq)]
enum ReadError {
    /// Clean end of a keep-alive connection, a timeout, or an I/O error: close without answering.
    Gone,
    Status(u16, String),
}

/// Outcome of parsing the bytes received so far.
#[derive(Debug, PartialEq, Eq)]
enum Parsed {
    /// Need more bytes.
    Partial,
    /// A complete head of `head_len` bytes announcing a body of `body_len` bytes.
    Head(Head),
}

/// A complete request head.
#[derive(Debug, PartialEq, Eq)]
struct Head {
    head_len: usize,
    body_len: usize,
    method: String,
    path: String,
    keep_alive: bool,
    http10: bool,
    /// `Expect: 100-continue`: the client waits for a 100 before it sends the body.
    expect_continue: bool,
}

/// A `Content-Length` value: digits only (no sign, no list, no spaces inside).
fn content_length(v: &[u8]) -> Option<usize> {
    let v = v.trim_ascii();
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// The tokens of one `Connection` value: a comma-separated list, white space around each element
/// and empty elements dropped (RFC 9110 section 5.6.1).
fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|b| *b == b',').map(<[u8]>::trim_ascii).filter(|t| !t.is_empty())
}

/// Whether the connection is kept after the answer, from the values of every `Connection` header
/// (pure): `close` anywhere closes (RFC 9110 section 9.6); otherwise HTTP/1.1 keeps it, and
/// HTTP/1.0 only with `keep-alive`. Tokens are whole words, of any case.
fn keeps_alive<'a>(http10: bool, values: impl IntoIterator<Item = &'a [u8]>) -> bool {
    let mut asked = false;
    for t in values.into_iter().flat_map(tokens) {
        if t.eq_ignore_ascii_case(b"close") {
            return false;
        }
        asked |= t.eq_ignore_ascii_case(b"keep-alive");
    }
    !http10 || asked
}

/// Parses a request head (pure; table-tested).
fn parse_head(buf: &[u8], limits: &Limits) -> Result<Parsed, ReadError> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Partial) if buf.len() >= limits.max_head => {
            Err(ReadError::Status(431, format!("request head is over {} bytes", limits.max_head)))
        }
        Ok(httparse::Status::Partial) => Ok(Parsed::Partial),
        Err(httparse::Error::TooManyHeaders) => Err(ReadError::Status(431, "too many headers (at most 32)".into())),
        Err(e) => Err(ReadError::Status(400, format!("malformed request: {e}"))),
        Ok(httparse::Status::Complete(head_len)) => {
            if head_len > limits.max_head {
                return Err(ReadError::Status(431, format!("request head is over {} bytes", limits.max_head)));
            }
            let mut body_len = None;
            let http10 = req.version == Some(0);
            let connection = req.headers.iter().filter(|h| h.name.eq_ignore_ascii_case("connection")).map(|h| h.value);
            let keep_alive = keeps_alive(http10, connection);
            let mut expect_continue = false;
            for h in req.headers.iter() {
                if h.name.eq_ignore_ascii_case("content-length") {
                    let n = content_length(h.value)
                        .ok_or_else(|| ReadError::Status(400, "Content-Length is not a number (digits only)".into()))?;
                    if body_len.is_some_and(|b| b != n) {
                        return Err(ReadError::Status(400, "two different Content-Length headers".into()));
                    }
                    body_len = Some(n);
                } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                    return Err(ReadError::Status(411, "chunked bodies are not accepted: send Content-Length".into()));
                } else if h.name.eq_ignore_ascii_case("expect") {
                    if !h.value.trim_ascii().eq_ignore_ascii_case(b"100-continue") {
                        return Err(ReadError::Status(417, "the only expectation served is 100-continue".into()));
                    }
                    expect_continue = true;
                }
            }
            // HTTP/1.0 has no 100 Continue.
            expect_continue &= !http10;
            let body_len = body_len.unwrap_or(0);
            if body_len > limits.max_body {
                return Err(ReadError::Status(413, format!("body of {body_len} bytes is over {} bytes", limits.max_body)));
            }
            Ok(Parsed::Head(Head {
                head_len,
                body_len,
                method: req.method.unwrap_or_default().to_string(),
                path: req.path.unwrap_or_default().to_string(),
                keep_alive,
                http10,
                expect_continue,
            }))
        }
    }
}

/// Reads one request; `buf` carries pipelined bytes from one request to the next. Writes only an
/// interim `100 Continue`, when the client asked for one.
async fn read_request<IO: AsyncRead + AsyncWrite + Unpin>(io: &mut IO, buf: &mut Vec<u8>, limits: &Limits) -> Result<Request, ReadError> {
    let deadline = Instant::now() + limits.request_timeout;
    let mut chunk = [0u8; 2048];
    loop {
        if let Parsed::Head(h) = parse_head(buf, limits)? {
            let whole = h.head_len + h.body_len;
            if h.expect_continue && buf.len() < whole {
                match timeout_at(deadline, io.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")).await {
                    Ok(Ok(())) => {}
                    _ => return Err(ReadError::Gone),
                }
            }
            while buf.len() < whole {
                let want = (whole - buf.len()).min(chunk.len());
                match timeout_at(deadline, io.read(&mut chunk[..want])).await {
                    Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                    _ => return Err(ReadError::Gone),
                }
            }
            let body = buf[h.head_len..whole].to_vec();
            buf.drain(..whole);
            return Ok(Request { method: h.method, path: h.path, keep_alive: h.keep_alive, http10: h.http10, body });
        }
        let room = limits.max_head.saturating_sub(buf.len()).clamp(1, chunk.len());
        match timeout_at(deadline, io.read(&mut chunk[..room])).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return Err(ReadError::Gone),
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        411 => "Length Required",
        413 => "Content Too Large",
        417 => "Expectation Failed",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "",
    }
}

/// What the answer says of the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Connection {
    /// Kept (HTTP/1.1's default: nothing to say).
    Kept,
    /// Kept, for an HTTP/1.0 client that asked: `Connection: keep-alive`.
    KeptHttp10,
    /// `Connection: close`, and closed after the answer.
    Close,
}

/// Formats a whole response.
fn response(status: u16, body: &[u8], conn: Connection) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{}\r\n",
        reason(status),
        body.len(),
        match conn {
            Connection::Kept => "",
            Connection::KeptHttp10 => "Connection: keep-alive\r\n",
            Connection::Close => "Connection: close\r\n",
        }
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

fn error_json(msg: &str) -> Vec<u8> {
    serde_json::to_vec(&ErrorBody { error: msg.to_string() }).unwrap_or_default()
}

/// A JSON object of type `T`; anything else (an array, a number) is refused, though serde would
/// read a struct from an array.
fn json_object<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    // A JSON text is an object exactly when its first character past white space is `{`.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err("expected a JSON object".into());
    }
    serde_json::from_slice(body).map_err(|e| e.to_string())
}

/// Routes one request to (status, body).
async fn route<C: Control>(req: &Request, ctl: &C, control: bool) -> (u16, Vec<u8>) {
    let path = req.path.split('?').next().unwrap_or("");
    let method = req.method.as_str();
    match (method, path) {
        ("GET" | "HEAD", "/ready") => {
            let ready = ctl.ready();
            let status = if ready.ready { 200 } else { 503 };
            (status, serde_json::to_vec(&ready).unwrap_or_default())
        }
        ("GET" | "HEAD", "/healthz") => (200, b"{\"ok\":true}".to_vec()),
        ("POST", "/v1/exec" | "/v1/shutdown" | "/v1/restore") | ("GET", KMSG_PATH) if !control => {
            (403, error_json("the control API is served on vsock only; boot with chinit.api=tcp to serve it on TCP too"))
        }
        ("POST", "/v1/exec") => match json_object::<ExecRequest>(&req.body) {
            Err(e) => (400, error_json(&format!("exec request: {e}"))),
            Ok(r) if r.argv.is_empty() => (400, error_json("exec request: argv is empty")),
            Ok(r) => match ctl.exec(r).await {
                Ok(resp) => (200, serde_json::to_vec(&resp).unwrap_or_default()),
                Err(e) => (e.status, error_json(&e.message)),
            },
        },
        ("POST", "/v1/restore") => match json_object::<RestoreRequest>(&req.body) {
            Err(e) => (400, error_json(&format!("restore request: {e}"))),
            Ok(r) => match ctl.restore(r).await {
                Ok(ready) => (200, serde_json::to_vec(&ready).unwrap_or_default()),
                Err(e) => (e.status, error_json(&e.message)),
            },
        },
        ("GET", KMSG_PATH) => match ctl.kmsg() {
            Ok(k) => (200, serde_json::to_vec(&k).unwrap_or_default()),
            Err(e) => (e.status, error_json(&e.message)),
        },
        ("POST", "/v1/shutdown") => {
            let parsed = if req.body.iter().all(u8::is_ascii_whitespace) {
                Ok(ShutdownRequest::default())
            } else {
                json_object::<ShutdownRequest>(&req.body)
            };
            match parsed {
                Ok(r) => {
                    ctl.shutdown(r);
                    (202, b"{\"accepted\":true}".to_vec())
                }
                Err(e) => (400, error_json(&format!("shutdown request: {e}"))),
            }
        }
        (_, "/ready" | "/healthz" | "/v1/exec" | "/v1/shutdown" | "/v1/restore" | KMSG_PATH) => {
            (405, error_json(&format!("{method} is not allowed on {path}")))
        }
        _ => (404, error_json(&format!("no such endpoint: {path}"))),
    }
}

async fn connection<IO: AsyncRead + AsyncWrite + Unpin, C: Control>(mut io: IO, ctl: Arc<C>, opts: ServeOptions, slot: &Slot) {
    let mut buf = Vec::new();
    loop {
        let read = tokio::select! {
            r = read_request(&mut io, &mut buf, &opts.limits) => r,
            _ = slot.evict.notified() => return,
        };
        slot.busy.store(true, Ordering::Release);
        let answering = ctl.in_flight().map(InFlight::enter);
        let (status, body, conn, head_only) = match read {
            Err(ReadError::Gone) => return,
            Err(ReadError::Status(status, msg)) => (status, error_json(&msg), Connection::Close, false),
            Ok(req) => {
                let (status, body) = route(&req, &*ctl, opts.control).await;
                // Error answers close; a 503 from /ready is the ready document, not an error.
                let error = status >= 400 && !(status == 503 && req.path.split('?').next() == Some("/ready"));
                let conn = match (req.keep_alive && !error, req.http10) {
                    (false, _) => Connection::Close,
                    (true, false) => Connection::Kept,
                    (true, true) => Connection::KeptHttp10,
                };
                (status, body, conn, req.method == "HEAD")
            }
        };
        let mut out = response(status, &body, conn);
        if head_only {
            out.truncate(out.len() - body.len());
        }
        let written = timeout(opts.limits.write_timeout, io.write_all(&out)).await;
        let closing = conn == Connection::Close || !matches!(written, Ok(Ok(())));
        if closing && written.as_ref().is_ok_and(Result::is_ok) {
            let _ = timeout(opts.limits.write_timeout, io.shutdown()).await;
        }
        drop(answering);
        slot.busy.store(false, Ordering::Release);
        if closing {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::ShutdownAction;
    use std::sync::Mutex;
    use tokio::io::AsyncWriteExt;

    fn limits() -> Limits {
        Limits { max_head: 256, max_body: 64, ..Limits::default() }
    }

    #[test]
    fn connection_tokens_table() {
        let cases: [(&[u8], &[&[u8]]); 6] = [
            (b"close", &[b"close"]),
            (b"keep-alive, Upgrade", &[b"keep-alive", b"Upgrade"]),
            (b" ,, close ,\tx,", &[b"close", b"x"]),
            (b"notclosed", &[b"notclosed"]),
            (b"", &[]),
            (b"a b", &[b"a b"]),
        ];
        for (value, want) in cases {
            assert_eq!(tokens(value).collect::<Vec<_>>(), want, "{:?}", String::from_utf8_lossy(value));
        }
    }

    #[test]
    fn keep_alive_table() {
        // (HTTP/1.0, the values of every Connection header, kept)
        let cases: [(bool, &[&[u8]], bool); 14] = [
            (false, &[], true),
            (true, &[], false),
            (false, &[b"close"], false),
            (false, &[b"CLOSE"], false),
            (false, &[b"notclosed"], true),
            (false, &[b"closed"], true),
            (false, &[b"close", b"keep-alive"], false),
            (false, &[b"keep-alive", b"close"], false),
            (false, &[b"keep-alive, close"], false),
            (false, &[b"Upgrade,  Close "], false),
            (true, &[b"keep-alive"], true),
            (true, &[b"Keep-Alive, Upgrade"], true),
            (true, &[b"keep-alives"], false),
            (true, &[b"keep-alive", b"close"], false),
        ];
        for (http10, values, want) in cases {
            assert_eq!(keeps_alive(http10, values.iter().copied()), want, "HTTP/1.0 {http10}, {values:?}");
        }
    }

    #[test]
    fn parse_head_table() {
        let l = limits();
        let big_head = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(300));
        let cases: Vec<(&[u8], Result<&str, u16>)> = vec![
            (b"GET /ready HTTP/1.1\r\n\r\n", Ok("GET /ready ka=true body=0")),
            (b"GET /ready HTTP/1.0\r\n\r\n", Ok("GET /ready ka=false body=0")),
            (b"GET /ready HTTP/1.1\r\nConnection: close\r\n\r\n", Ok("GET /ready ka=false body=0")),
            (b"POST /v1/exec HTTP/1.1\r\nContent-Length: 12\r\n\r\n", Ok("POST /v1/exec ka=true body=12")),
            (b"GET /ready HTTP/1.1\r\n", Ok("partial")),
            (b"", Ok("partial")),
            (b"\x16\x03\x01\x02\x00garbage\r\n\r\n", Err(400)),
            (b"POST / HTTP/1.1\r\nContent-Length: 65\r\n\r\n", Err(413)),
            (b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", Err(400)),
            (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", Err(411)),
            (b"GET /ready HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", Ok("GET /ready ka=true body=0")),
            // Connection is a list of tokens over every such header; close anywhere wins.
            (b"GET /ready HTTP/1.1\r\nConnection: notclosed\r\n\r\n", Ok("GET /ready ka=true body=0")),
            (b"GET /ready HTTP/1.1\r\nConnection: close\r\nConnection: keep-alive\r\n\r\n", Ok("GET /ready ka=false body=0")),
            (b"GET /ready HTTP/1.1\r\nConnection: keep-alive, CLOSE\r\n\r\n", Ok("GET /ready ka=false body=0")),
            (b"GET /ready HTTP/1.0\r\nConnection: keep-alives\r\n\r\n", Ok("GET /ready ka=false body=0")),
            (b"GET /ready HTTP/1.0\r\nConnection: Upgrade,Keep-Alive\r\n\r\n", Ok("GET /ready ka=true body=0")),
            // Content-Length: digits only, and never two that differ (request smuggling).
            (b"POST / HTTP/1.1\r\nContent-Length: +3\r\n\r\n", Err(400)),
            (b"POST / HTTP/1.1\r\nContent-Length: 3 3\r\n\r\n", Err(400)),
            (b"POST / HTTP/1.1\r\nContent-Length: 3, 4\r\n\r\n", Err(400)),
            (b"POST / HTTP/1.1\r\nContent-Length:\r\n\r\n", Err(400)),
            (b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", Err(400)),
            (b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n", Ok("POST / ka=true body=3")),
            (b"POST / HTTP/1.1\r\nContent-Length:  7 \r\n\r\n", Ok("POST / ka=true body=7")),
            (b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n", Ok("POST / ka=true body=2")),
            (b"POST / HTTP/1.1\r\nExpect: 200-ok\r\nContent-Length: 2\r\n\r\n", Err(417)),
            (big_head.as_bytes(), Err(431)),
        ];
        for (input, want) in cases {
            let got = match parse_head(input, &l) {
                Ok(Parsed::Partial) => Ok("partial".to_string()),
                Ok(Parsed::Head(Head { method, path, keep_alive, body_len, .. })) => {
                    Ok(format!("{method} {path} ka={keep_alive} body={body_len}"))
                }
                Err(ReadError::Status(s, _)) => Err(s),
                Err(ReadError::Gone) => Err(0),
            };
            assert_eq!(got, want.map(str::to_string), "{:?}", String::from_utf8_lossy(input));
        }
        // An unfinished head that already fills the limit is refused rather than buffered further.
        assert!(matches!(parse_head("GET / HTTP/1.1\r\nX: ".repeat(20).as_bytes(), &l), Err(ReadError::Status(431, _))));
    }

    struct Fake {
        ready: bool,
        shutdowns: Mutex<Vec<ShutdownAction>>,
    }

    impl Control for Fake {
        fn ready(&self) -> Ready {
            Ready {
                ready: self.ready,
                version: "test".into(),
                mode: "namespace".into(),
                init_start_us: 10,
                ready_us: if self.ready { 20 } else { 0 },
                steps: vec![],
                ip: None,
                generation: 0,
                restores: 0,
                workload: None,
            }
        }
        async fn exec(&self, req: ExecRequest) -> Result<ExecResponse, Refusal> {
            Ok(ExecResponse { exit_code: Some(0), stdout: req.argv.join(" "), ..ExecResponse::default() })
        }
        fn shutdown(&self, req: ShutdownRequest) {
            self.shutdowns.lock().unwrap().push(req.action);
        }
        async fn restore(&self, req: RestoreRequest) -> Result<Ready, Refusal> {
            Ok(Ready { generation: req.generation, ..self.ready() })
        }
    }

    /// Runs one connection over an in-memory pipe, sends `input`, returns everything the server wrote.
    async fn exchange(ready: bool, control: bool, input: &[u8]) -> (String, Vec<ShutdownAction>) {
        let ctl = Arc::new(Fake { ready, shutdowns: Mutex::new(vec![]) });
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let ctl2 = Arc::clone(&ctl);
        let task =
            tokio::spawn(async move { connection(server, ctl2, ServeOptions { limits: limits(), control }, &Slot::default()).await });
        client.write_all(input).await.unwrap();
        client.shutdown().await.unwrap();
        let mut out = Vec::new();
        client.read_to_end(&mut out).await.unwrap();
        task.await.unwrap();
        let shutdowns = ctl.shutdowns.lock().unwrap().clone();
        (String::from_utf8_lossy(&out).into_owned(), shutdowns)
    }

    #[tokio::test]
    async fn ready_is_503_until_ready_then_200() {
        let (out, _) = exchange(false, false, b"GET /ready HTTP/1.1\r\n\r\n").await;
        assert!(out.starts_with("HTTP/1.1 503 "), "{out}");
        assert!(out.contains("\"ready\":false"), "{out}");
        let (out, _) = exchange(true, false, b"GET /ready HTTP/1.1\r\n\r\n").await;
        assert!(out.starts_with("HTTP/1.1 200 "), "{out}");
        let body = out.split("\r\n\r\n").nth(1).unwrap();
        let r: Ready = serde_json::from_str(body).unwrap();
        assert!(r.ready && r.ready_us == 20);
    }

    #[tokio::test]
    async fn keep_alive_serves_pipelined_requests_in_order() {
        let (out, _) = exchange(
            true,
            false,
            b"GET /healthz HTTP/1.1\r\n\r\nHEAD /ready HTTP/1.1\r\n\r\nGET /ready HTTP/1.1\r\nConnection: close\r\n\r\n",
        )
        .await;
        let statuses: Vec<&str> = out.match_indices("HTTP/1.1 ").map(|(i, _)| &out[i + 9..i + 12]).collect();
        assert_eq!(statuses, ["200", "200", "200"], "{out}");
        assert!(out.contains("Connection: close"), "{out}");
    }

    #[tokio::test]
    async fn control_endpoints_need_control() {
        let exec = b"POST /v1/exec HTTP/1.1\r\nContent-Length: 20\r\n\r\n{\"argv\":[\"a\",\"b\"]}  ";
        let (out, _) = exchange(true, false, exec).await;
        assert!(out.starts_with("HTTP/1.1 403 ") && out.contains("chinit.api=tcp"), "{out}");
        let (out, _) = exchange(true, true, exec).await;
        assert!(out.starts_with("HTTP/1.1 200 ") && out.contains("\"stdout\":\"a b\""), "{out}");
        let (out, shut) = exchange(true, false, b"POST /v1/shutdown HTTP/1.1\r\n\r\n").await;
        assert!(out.starts_with("HTTP/1.1 403 ") && shut.is_empty(), "{out}");
        let restore = b"POST /v1/restore HTTP/1.1\r\nContent-Length: 31\r\n\r\n{\"generation\":4,\"entropy\":\"00\"}";
        let (out, _) = exchange(true, false, restore).await;
        assert!(out.starts_with("HTTP/1.1 403 "), "{out}");
        let (out, _) = exchange(true, true, restore).await;
        assert!(out.starts_with("HTTP/1.1 200 ") && out.contains("\"generation\":4"), "{out}");
        let (out, shut) = exchange(true, true, b"POST /v1/shutdown HTTP/1.1\r\nContent-Length: 19\r\n\r\n{\"action\":\"reboot\"}").await;
        assert!(out.starts_with("HTTP/1.1 202 "), "{out}");
        assert_eq!(shut, vec![ShutdownAction::Reboot]);
        let kmsg = b"GET /v1/kmsg HTTP/1.1\r\n\r\n";
        let (out, _) = exchange(true, false, kmsg).await;
        assert!(out.starts_with("HTTP/1.1 403 "), "{out}");
        let (out, _) = exchange(true, true, kmsg).await;
        assert!(out.starts_with("HTTP/1.1 404 ") && out.contains("no kernel log here"), "{out}");
        let (out, _) = exchange(true, true, b"POST /v1/kmsg HTTP/1.1\r\n\r\n").await;
        assert!(out.starts_with("HTTP/1.1 405 "), "{out}");
    }

    #[tokio::test]
    async fn bad_requests_get_an_answer_and_a_close() {
        let cases: [(&[u8], &str); 5] = [
            (b"POST /v1/exec HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}", "400"),
            (b"POST /v1/exec HTTP/1.1\r\nContent-Length: 13\r\n\r\n{\"argv\":[]}  ", "400"),
            (b"DELETE /ready HTTP/1.1\r\n\r\n", "405"),
            (b"\x00\x01\x02garbage\r\n\r\n", "400"),
            (b"POST /v1/exec HTTP/1.1\r\nContent-Length: 100000\r\n\r\n", "413"),
        ];
        for (input, want) in cases {
            let (out, _) = exchange(true, true, input).await;
            assert!(out.starts_with(&format!("HTTP/1.1 {want} ")), "{:?} -> {out}", String::from_utf8_lossy(input));
        }
    }

    /// Error answers close the connection, whatever came after them; a 503 from /ready does not.
    #[tokio::test]
    async fn errors_close_the_connection() {
        for first in [
            &b"GET /nope HTTP/1.1\r\n\r\n"[..],
            b"DELETE /ready HTTP/1.1\r\n\r\n",
            b"POST /v1/exec HTTP/1.1\r\nContent-Length: 2\r\n\r\n[]",
        ] {
            let mut input = first.to_vec();
            input.extend_from_slice(b"GET /healthz HTTP/1.1\r\n\r\n");
            let (out, _) = exchange(true, true, &input).await;
            assert_eq!(out.matches("HTTP/1.1 ").count(), 1, "{out}");
            assert!(out.contains("Connection: close"), "{out}");
        }
        let (out, _) = exchange(false, false, b"GET /ready HTTP/1.1\r\n\r\nGET /healthz HTTP/1.1\r\n\r\n").await;
        assert!(out.starts_with("HTTP/1.1 503 ") && out.matches("HTTP/1.1 ").count() == 2, "{out}");
    }

    /// An HTTP/1.0 client that asks for keep-alive is told it has it (and is served twice); one
    /// that does not ask is closed.
    #[tokio::test]
    async fn http10_keep_alive_is_announced() {
        let (out, _) = exchange(true, false, b"GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /healthz HTTP/1.0\r\n\r\n").await;
        let answers: Vec<&str> = out.split("HTTP/1.1 200 ").skip(1).collect();
        assert_eq!(answers.len(), 2, "{out}");
        assert!(answers[0].contains("Connection: keep-alive\r\n"), "{out}");
        assert!(answers[1].contains("Connection: close\r\n"), "{out}");
    }

    /// `Expect: 100-continue`: the 100 comes before the client sends its body, then the answer.
    #[tokio::test]
    async fn expect_100_continue_is_answered_before_the_body() {
        let ctl = Arc::new(Fake { ready: true, shutdowns: Mutex::new(vec![]) });
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let task =
            tokio::spawn(async move { connection(server, ctl, ServeOptions { limits: limits(), control: true }, &Slot::default()).await });
        let body = br#"{"argv":["a","b"]}"#;
        let head = format!("POST /v1/exec HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
        client.write_all(head.as_bytes()).await.unwrap();
        let mut interim = [0u8; 25];
        timeout(Duration::from_secs(5), client.read_exact(&mut interim)).await.unwrap().unwrap();
        assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
        client.write_all(body).await.unwrap();
        let mut out = Vec::new();
        client.read_to_end(&mut out).await.unwrap();
        task.await.unwrap();
        let out = String::from_utf8_lossy(&out);
        assert!(out.starts_with("HTTP/1.1 200 ") && out.contains("\"stdout\":\"a b\""), "{out}");
    }

    /// Only a JSON object is a request: serde alone would read a struct from an array.
    #[tokio::test]
    async fn only_json_objects_are_requests() {
        for body in [&b"[]"[..], b"[\"poweroff\"]", b"3", b"\"poweroff\""] {
            let input = [format!("POST /v1/shutdown HTTP/1.1\r\nContent-Length: {}\r\n\r\n", body.len()).as_bytes(), body].concat();
            let (out, shut) = exchange(true, true, &input).await;
            assert!(out.starts_with("HTTP/1.1 400 ") && out.contains("JSON object"), "{out}");
            assert!(shut.is_empty());
        }
        let (out, _) = exchange(true, true, b"POST /v1/exec HTTP/1.1\r\nContent-Length: 11\r\n\r\n[[\"a\",\"b\"]]").await;
        assert!(out.starts_with("HTTP/1.1 400 "), "{out}");
    }

    /// With every connection answering, a newcomer gets a 503 rather than a silent close.
    #[tokio::test]
    async fn a_connection_beyond_the_limit_gets_503() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        struct Slow;
        impl Control for Slow {
            fn ready(&self) -> Ready {
                Fake { ready: true, shutdowns: Mutex::new(vec![]) }.ready()
            }
            async fn exec(&self, _: ExecRequest) -> Result<ExecResponse, Refusal> {
                tokio::time::sleep(Duration::from_secs(3)).await;
                Ok(ExecResponse::default())
            }
            fn shutdown(&self, _: ShutdownRequest) {}
            async fn restore(&self, _: RestoreRequest) -> Result<Ready, Refusal> {
                Err(Refusal { status: 409, message: "busy".into() })
            }
        }
        let opts = ServeOptions { limits: Limits { max_connections: 1, ..limits() }, control: true };
        let server = tokio::spawn(serve(l, Arc::new(Slow), opts));
        let mut busy = tokio::net::TcpStream::connect(addr).await.unwrap();
        busy.write_all(b"POST /v1/exec HTTP/1.1\r\nContent-Length: 14\r\n\r\n{\"argv\":[\"a\"]}").await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut late = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut out = Vec::new();
        timeout(Duration::from_secs(2), late.read_to_end(&mut out)).await.unwrap().unwrap();
        let out = String::from_utf8_lossy(&out);
        assert!(out.starts_with("HTTP/1.1 503 ") && out.contains("Connection: close"), "{out}");
        server.abort();
    }

    #[tokio::test]
    async fn a_silent_client_is_dropped_after_the_request_timeout() {
        tokio::time::pause();
        let ctl = Arc::new(Fake { ready: true, shutdowns: Mutex::new(vec![]) });
        let (mut client, server) = tokio::io::duplex(1024);
        let task =
            tokio::spawn(async move { connection(server, ctl, ServeOptions { limits: limits(), control: false }, &Slot::default()).await });
        client.write_all(b"GET /rea").await.unwrap();
        tokio::time::advance(limits().request_timeout + Duration::from_millis(1)).await;
        task.await.unwrap();
        let mut out = Vec::new();
        client.read_to_end(&mut out).await.unwrap();
        assert!(out.is_empty(), "a timed-out request gets no answer");
    }

    #[tokio::test]
    async fn at_the_limit_the_oldest_idle_connection_makes_room() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let ctl = Arc::new(Fake { ready: true, shutdowns: Mutex::new(vec![]) });
        let opts = ServeOptions { limits: Limits { max_connections: 2, ..limits() }, control: false };
        let server = tokio::spawn(serve(l, ctl, opts));
        async fn get(s: &mut tokio::net::TcpStream) -> usize {
            let _ = s.write_all(b"GET /healthz HTTP/1.1\r\n\r\n").await;
            let mut b = [0u8; 256];
            timeout(Duration::from_secs(2), s.read(&mut b)).await.ok().and_then(Result::ok).unwrap_or(0)
        }
        let mut first = tokio::net::TcpStream::connect(addr).await.unwrap();
        assert!(get(&mut first).await > 0);
        let mut second = tokio::net::TcpStream::connect(addr).await.unwrap();
        assert!(get(&mut second).await > 0);
        // A third connection is served; the oldest idle one (the first) is closed to make room.
        let mut third = tokio::net::TcpStream::connect(addr).await.unwrap();
        assert!(get(&mut third).await > 0, "the newcomer is served");
        let mut b = [0u8; 16];
        let n = timeout(Duration::from_secs(2), first.read(&mut b)).await.unwrap().unwrap_or(0);
        assert_eq!(n, 0, "the oldest idle connection was closed");
        assert!(get(&mut second).await > 0, "the others keep working");
        server.abort();
    }
}
