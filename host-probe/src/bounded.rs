//! Waits that end. A socket timeout bounds one read, not a request: a peer that sends a byte now
//! and then, or a listener that never accepts (a plain connect then waits while its backlog is
//! full), would hold host-probe forever. So every conversation with a VMM or a guest goes through
//! a [`Bounded`] stream that gives up at one deadline, Unix sockets are connected with
//! [`connect_unix`], and programs host-probe runs to their end (`ip`, `--version`) with
//! [`output_within`].

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A stream whose single reads and writes can be given a timeout.
pub trait Timeouts {
    fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()>;
    fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()>;
}

macro_rules! timeouts {
    ($($t:ty),*) => {$(
        impl Timeouts for $t {
            fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
                <$t>::set_read_timeout(self, t)
            }
            fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
                <$t>::set_write_timeout(self, t)
            }
        }
    )*};
}
timeouts!(UnixStream, TcpStream, vsock::VsockStream);

impl<T: Timeouts + ?Sized> Timeouts for Box<T> {
    fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        (**self).set_read_timeout(t)
    }
    fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        (**self).set_write_timeout(t)
    }
}

/// The time left until `deadline` (at least a millisecond: a socket timeout of zero means none),
/// or `TimedOut` once it has passed.
pub fn left(deadline: Instant) -> io::Result<Duration> {
    match deadline.checked_duration_since(Instant::now()) {
        Some(d) if !d.is_zero() => Ok(d.max(Duration::from_millis(1))),
        _ => Err(io::Error::new(io::ErrorKind::TimedOut, "no answer in time")),
    }
}

/// Whether an I/O error means the time ran out (rather than a refusal or a closed connection).
pub fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock)
}

/// A stream that gives up at one deadline: each read or write waits at most the time left.
pub struct Bounded<S> {
    inner: S,
    deadline: Instant,
}

impl<S> Bounded<S> {
    pub fn new(inner: S, deadline: Instant) -> Bounded<S> {
        Bounded { inner, deadline }
    }

    /// Moves the deadline (a session's next command).
    pub fn until(&mut self, deadline: Instant) {
        self.deadline = deadline;
    }

    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Read + Timeouts> Read for Bounded<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.set_read_timeout(Some(left(self.deadline)?))?;
        self.inner.read(buf)
    }
}

impl<S: Write + Timeouts> Write for Bounded<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.set_write_timeout(Some(left(self.deadline)?))?;
        self.inner.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Connects to the Unix stream socket `path` by `deadline`. A listener that does not accept fills
/// its backlog, and then a plain connect waits for as long as it does; this one tries again until
/// the deadline (`TimedOut`). A socket that is not there, or refuses, is said at once.
pub fn connect_unix(path: &Path, deadline: Instant) -> io::Result<UnixStream> {
    use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, UnixAddr};
    let addr = UnixAddr::new(path).map_err(io::Error::from)?;
    loop {
        let fd = socket(AddressFamily::Unix, SockType::Stream, SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC, None)
            .map_err(io::Error::from)?;
        match connect(fd.as_raw_fd(), &addr) {
            Ok(()) => {
                let s = UnixStream::from(fd);
                s.set_nonblocking(false)?;
                return Ok(s);
            }
            // The listener's backlog is full (a Unix socket says so rather than waiting).
            Err(nix::errno::Errno::EAGAIN) => {
                left(deadline)?;
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) => return Err(io::Error::from(e)),
        }
    }
}

/// Runs `cmd` to its end and returns its output, or gives up after `within`: the program is killed
/// (and given a moment to go) and the error says so. Its output is read once it ended: the programs
/// run this way (`ip`, `--version`) print little.
pub fn output_within(cmd: &mut Command, within: Duration) -> io::Result<Output> {
    let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    let end = Instant::now() + within;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= end {
            let _ = child.kill();
            // A program stuck in the kernel does not die at once: it is left to init after a while.
            let gone = Instant::now() + Duration::from_secs(2);
            while child.try_wait()?.is_none() && Instant::now() < gone {
                std::thread::sleep(Duration::from_millis(5));
            }
            return Err(io::Error::new(io::ErrorKind::TimedOut, format!("did not end within {} s; killed", within.as_secs_f32())));
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    Ok(Output { status, stdout: drain(child.stdout.take()), stderr: drain(child.stderr.take()) })
}

/// What is in a pipe now, without waiting: a child of the program may still hold it open.
fn drain<R: Read + std::os::fd::AsFd>(r: Option<R>) -> Vec<u8> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let mut v = Vec::new();
    if let Some(mut r) = r {
        if fcntl(r.as_fd(), FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).is_ok() {
            let _ = r.read_to_end(&mut v);
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    #[test]
    fn a_program_that_does_not_end_is_killed_at_the_bound() {
        let t = Instant::now();
        let e = output_within(Command::new("sleep").arg("30"), Duration::from_millis(300)).unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
        assert!(is_timeout(&e) && e.to_string().contains("killed"), "{e}");
        let out = output_within(Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]), Duration::from_secs(10)).unwrap();
        assert_eq!((out.status.code(), &out.stdout[..], &out.stderr[..]), (Some(3), &b"out\n"[..], &b"err\n"[..]));
    }

    /// A listener that never accepts: once its backlog is full the connect gives up at the deadline.
    #[test]
    fn a_listener_that_never_accepts_is_given_up_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("full.sock");
        let _l = UnixListener::bind(&path).unwrap();
        let mut held = Vec::new();
        let t = Instant::now();
        let e = loop {
            match connect_unix(&path, Instant::now() + Duration::from_millis(200)) {
                Ok(s) => held.push(s),
                Err(e) => break e,
            }
            assert!(held.len() < 10_000, "never full");
        };
        assert!(is_timeout(&e), "{e}");
        assert!(t.elapsed() < Duration::from_secs(5));
        assert!(connect_unix(&dir.path().join("none.sock"), Instant::now() + Duration::from_secs(5)).is_err_and(|e| !is_timeout(&e)));
    }

    /// However a peer trickles, a bounded read gives up at the deadline.
    #[test]
    fn reads_give_up_at_the_deadline_not_per_read() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let peer = std::thread::spawn(move || {
            for _ in 0..20 {
                std::thread::sleep(Duration::from_millis(100));
                if b.write_all(b"x").is_err() {
                    return;
                }
            }
        });
        let t = Instant::now();
        let mut s = Bounded::new(a, Instant::now() + Duration::from_millis(500));
        let mut got = Vec::new();
        let e = s.read_to_end(&mut got).unwrap_err();
        assert!(is_timeout(&e), "{e}");
        assert!(t.elapsed() < Duration::from_millis(800), "{:?}", t.elapsed());
        drop(s);
        peer.join().unwrap();
    }
}
