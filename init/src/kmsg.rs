//! The kernel's log buffer, read from `/dev/kmsg` for `GET /v1/kmsg`: what the kernel wrote at
//! boot (with `initcall_debug`, every initcall and its duration) without it ever reaching a
//! console, where printing would change what is measured.

use std::io::{ErrorKind, Read};
use std::os::unix::fs::OpenOptionsExt;

use agent::proto::{Kmsg, KmsgRecord};

/// The most records one answer carries (the buffer holds a few thousand at most).
const MAX_RECORDS: usize = 100_000;
/// A record is at most this long (the kernel refuses a read into less than the record).
const RECORD_MAX: usize = 8192;

/// The text of the record that ties the log's clock to CLOCK_BOOTTIME.
pub const ANCHOR: &str = "chinit: kmsg clock anchor";

/// Every record still in the buffer, oldest first: a fresh `/dev/kmsg` reader starts at the
/// oldest and reads one record per `read` until none is left (`EAGAIN`). Records overwritten
/// before they were read (`EPIPE`, or a gap in the sequence numbers) are counted as lost.
///
/// First, [`ANCHOR`] is written at debug level (no console shows it at the default level) between
/// two readings of CLOCK_BOOTTIME: its timestamp gives the log clock's offset.
pub fn read() -> std::io::Result<Kmsg> {
    let before = crate::clock::now_us();
    let anchored = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open("/dev/kmsg")
        .and_then(|mut w| std::io::Write::write_all(&mut w, format!("<7>{ANCHOR}\n").as_bytes()))
        .is_ok();
    let after = crate::clock::now_us();
    let mut out = read_all()?;
    if anchored {
        let at = out.records.iter().rev().find(|r| r.text == ANCHOR).map(|r| r.usec);
        out.clock_offset_us = at.map(|log| offset(log, before, after));
    }
    Ok(out)
}

/// The log clock's offset from CLOCK_BOOTTIME, given a record at `log` written between the
/// CLOCK_BOOTTIME readings `before` and `after` (pure).
fn offset(log: u64, before: u64, after: u64) -> i64 {
    log as i64 - (before + (after.saturating_sub(before)) / 2) as i64
}

/// What one read of a non-blocking `/dev/kmsg` reader gave.
pub enum Next {
    Record(KmsgRecord),
    /// Records were overwritten before they were read (`EPIPE`).
    Lost,
    /// No record is left for now.
    Empty,
}

/// One record from `f` (`/dev/kmsg`, opened non-blocking; one that does not parse is skipped);
/// `buf` holds [`RECORD_MAX`] bytes.
pub fn next(f: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<Next> {
    loop {
        return match f.read(buf) {
            Ok(0) => Ok(Next::Empty),
            Ok(n) => match KmsgRecord::parse(&String::from_utf8_lossy(&buf[..n])) {
                Some(r) => Ok(Next::Record(r)),
                None => continue,
            },
            Err(e) if e.kind() == ErrorKind::WouldBlock => Ok(Next::Empty),
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => Ok(Next::Lost),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => Err(e),
        };
    }
}

/// `/dev/kmsg` opened for reading, non-blocking.
pub fn open() -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC).open("/dev/kmsg")
}

/// A buffer for [`next`].
pub fn buffer() -> Vec<u8> {
    vec![0u8; RECORD_MAX]
}

fn read_all() -> std::io::Result<Kmsg> {
    let mut f = open()?;
    let mut buf = buffer();
    let mut out = Kmsg::default();
    while out.records.len() < MAX_RECORDS {
        match next(&mut f, &mut buf)? {
            Next::Record(r) => push(&mut out, r),
            Next::Lost => out.lost += 1,
            Next::Empty => break,
        }
    }
    Ok(out)
}

/// Adds `r`, counting the records a gap in the sequence numbers says were lost (pure).
fn push(out: &mut Kmsg, r: KmsgRecord) {
    if let Some(last) = out.records.last() {
        out.lost += r.seq.saturating_sub(last.seq + 1);
    }
    out.records.push(r);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gap_in_the_sequence_is_counted_as_lost() {
        let rec = |seq| KmsgRecord { priority: 6, seq, usec: seq * 10, text: String::new() };
        let mut k = Kmsg::default();
        for seq in [4, 5, 9, 10] {
            push(&mut k, rec(seq));
        }
        assert_eq!((k.records.len(), k.lost), (4, 3));
    }

    #[test]
    fn the_offset_is_taken_at_the_middle_of_the_two_readings() {
        assert_eq!(offset(1_500_000, 1_000, 1_010), 1_498_995);
        assert_eq!(offset(900, 1_000, 1_000), -100);
    }

    #[test]
    fn this_hosts_log_reads_oldest_first() {
        // Root (the tests' user) may read it; elsewhere the error is the kernel's.
        let Ok(k) = read() else { return };
        assert!(k.records.windows(2).all(|w| w[0].seq < w[1].seq && w[0].usec <= w[1].usec), "{:?}", &k.records[..k.records.len().min(5)]);
    }
}
