//! The threads that listen while a guest boots: QEMU's debugcon (port-0x80 marks), chinit's notify
//! pushes, and the vsock `/ready` poller. Each stamps what it hears with the time since the VMM was
//! started and stops when its [`Reader`] is finished or dropped.

use std::io::Read;
use std::os::unix::net::UnixListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use agent::proto::Ready;

use crate::ask;
use crate::bounded::Bounded;
use crate::vsock::{GuestVsock, Listener};

/// A background thread that stops when asked: on [`Reader::finish`], or on drop.
pub(super) struct Reader<T> {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<T>>,
}

impl<T: Send + 'static> Reader<T> {
    /// Runs `body` on its own thread; it should return soon after its flag is set.
    fn spawn(body: impl FnOnce(&AtomicBool) -> T + Send + 'static) -> Reader<T> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || body(&flag));
        Reader { stop, handle: Some(handle) }
    }

    /// Whether the thread has ended by itself.
    pub(super) fn is_finished(&self) -> bool {
        self.handle.as_ref().is_some_and(JoinHandle::is_finished)
    }

    /// Stops the thread and returns what it returned.
    pub(super) fn finish(mut self) -> Option<T> {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.take().and_then(|h| h.join().ok())
    }
}

impl<T> Drop for Reader<T> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Pieces of bytes, each with the time it arrived (µs since the VMM was started).
pub(super) type Pieces = Vec<(u64, Vec<u8>)>;

/// What a reader heard, shared with the thread that hears it.
#[derive(Clone, Default)]
pub(super) struct Stamped(Arc<Mutex<Pieces>>);

impl Stamped {
    fn push(&self, t: u64, bytes: Vec<u8>) {
        if let Ok(mut v) = self.0.lock() {
            v.push((t, bytes));
        }
    }

    /// Everything so far.
    pub(super) fn snapshot(&self) -> Pieces {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// The first piece, if any.
    pub(super) fn first(&self) -> Option<(u64, Vec<u8>)> {
        self.0.lock().ok().and_then(|v| v.first().cloned())
    }

    /// Whether any piece holds this byte.
    pub(super) fn contains(&self, byte: u8) -> bool {
        self.0.lock().map(|v| v.iter().any(|(_, b)| b.contains(&byte))).unwrap_or(false)
    }
}

pub(super) fn micros_since(t0: Instant) -> u64 {
    crate::report::micros(t0.elapsed())
}

/// QEMU's debugcon: one connection; every chunk read is stamped on arrival, and so is the
/// connection itself (`connected`: QEMU is up).
pub(super) fn debugcon_reader(l: UnixListener, t0: Instant, chunks: Stamped, connected: Arc<Mutex<Option<u64>>>) -> Reader<()> {
    Reader::spawn(move |stop| {
        // Reads time out every 20 ms, so `stop` is seen.
        let Some(mut s) = Listener::Unix(l).accept_until(stop, Duration::from_millis(20)) else {
            return;
        };
        if let Ok(mut c) = connected.lock() {
            *c = Some(micros_since(t0));
        }
        let mut buf = [0u8; 256];
        // Once stopped, what is still on its way is read for a moment more, not for as long as a
        // guest keeps writing.
        let mut stopped: Option<Instant> = None;
        loop {
            if stop.load(Ordering::SeqCst) && stopped.get_or_insert_with(Instant::now).elapsed() > DRAIN {
                return;
            }
            match s.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => chunks.push(micros_since(t0), buf[..n].to_vec()),
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                }
                Err(_) => return,
            }
        }
    })
}

/// How long a stopped debugcon reader still reads what arrives.
const DRAIN: Duration = Duration::from_millis(100);

/// chinit's notify: one connection per push (ready, then the workload's exit), each a Ready JSON
/// line then EOF. The time is taken at EOF. A push gets [`PUSH_TIME`] to arrive whole, so the thread
/// (and the run's end, which joins it) never waits longer on one.
pub(super) fn notify_reader(l: Listener, t0: Instant, pushes: Stamped) -> Reader<()> {
    Reader::spawn(move |stop| {
        while let Some(s) = l.accept_until(stop, PUSH_TIME) {
            let mut body = Vec::new();
            let _ = Bounded::new(s, Instant::now() + PUSH_TIME).read_to_end(&mut body);
            pushes.push(micros_since(t0), body);
        }
    })
}

/// How long one notify push may take to arrive.
const PUSH_TIME: Duration = Duration::from_secs(2);

/// Polls `GET /ready` over vsock on its own thread, so its time does not wait on the TAP's: once
/// `go` is set every 5 ms (a connection can hang while the guest's driver is not up, so not before
/// something said ready), or every 100 ms from the start when vsock is the only way in (`eager`).
pub(super) fn vsock_poller(vsock: GuestVsock, t0: Instant, go: Arc<AtomicBool>, eager: bool) -> Reader<Option<(u64, Ready)>> {
    Reader::spawn(move |stop| {
        let mut last: Option<Instant> = None;
        while !stop.load(Ordering::SeqCst) {
            let due = go.load(Ordering::SeqCst) || (eager && last.is_none_or(|l| l.elapsed() > Duration::from_millis(100)));
            if due {
                last = Some(Instant::now());
                if let Some(r) = ask::ready_over_vsock(&vsock) {
                    return Some((micros_since(t0), r));
                }
                std::thread::sleep(Duration::from_millis(5));
            } else {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        None
    })
}
