//! Descriptors chinit inherited. The kernel starts init with 0, 1 and 2 at most, but a parent (a
//! shell, a test harness, a container runtime) may leave others open. chinit uses none of them and
//! none may reach what it starts, so at the start of `main`, before chinit opens anything itself,
//! every descriptor above 2 is marked close-on-exec ([`cloexec_inherited`]). They are marked, not
//! closed: chinit keeps nothing it does not know, yet marking can never take a descriptor from
//! under code that opened it before `main`.
//!
//! `close_range(3, ~0, CLOSE_RANGE_CLOEXEC)` does it in one call (Linux 5.11); without it, the
//! descriptors listed in `/proc/self/fd` are marked one by one.

use std::io;
use std::os::fd::RawFd;

/// The first descriptor that is not standard input, output or error.
const FIRST: RawFd = 3;

/// The system calls this needs: the seam that lets the logic run in tests.
pub trait Descriptors {
    /// Marks every descriptor from `first` up close-on-exec at once (`close_range`).
    fn cloexec_range(&mut self, first: RawFd) -> io::Result<()>;
    /// The names in `/proc/self/fd`.
    fn list(&mut self) -> io::Result<Vec<String>>;
    /// Marks one descriptor close-on-exec.
    fn cloexec(&mut self, fd: RawFd) -> io::Result<()>;
}

/// The real system calls.
pub struct Sys;

impl Descriptors for Sys {
    fn cloexec_range(&mut self, first: RawFd) -> io::Result<()> {
        let first = libc::c_uint::try_from(first).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets a flag on descriptors; it closes none.
        let rc = unsafe { libc::syscall(libc::SYS_close_range, first, libc::c_uint::MAX, libc::CLOSE_RANGE_CLOEXEC) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    fn list(&mut self) -> io::Result<Vec<String>> {
        std::fs::read_dir("/proc/self/fd")?.map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned())).collect()
    }

    fn cloexec(&mut self, fd: RawFd) -> io::Result<()> {
        // SAFETY: F_GETFD and F_SETFD only read and set the descriptor's flags.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
        // SAFETY: as above.
        if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// The descriptors above 2 among the names of `/proc/self/fd` (pure).
fn inherited(names: &[String]) -> Vec<RawFd> {
    let mut fds: Vec<RawFd> = names.iter().filter_map(|n| n.parse().ok()).filter(|fd| *fd >= FIRST).collect();
    fds.sort_unstable();
    fds
}

/// Marks every descriptor above 2 close-on-exec. `Err` says what could not be done, once.
pub fn cloexec_inherited(sys: &mut impl Descriptors) -> Result<(), String> {
    let Err(range) = sys.cloexec_range(FIRST) else {
        return Ok(());
    };
    let names = sys.list().map_err(|e| format!("close_range: {range}; /proc/self/fd: {e}"))?;
    let failed: Vec<String> = inherited(&names)
        .into_iter()
        .filter_map(|fd| match sys.cloexec(fd) {
            // The descriptor that listed /proc/self/fd, closed since: nothing to do.
            Err(e) if e.raw_os_error() == Some(libc::EBADF) => None,
            Err(e) => Some(format!("descriptor {fd}: {e}")),
            Ok(()) => None,
        })
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(failed.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inherited_descriptors_are_those_above_2() {
        let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let cases: [(&[&str], &[RawFd]); 5] = [
            (&["0", "1", "2"], &[]),
            (&[], &[]),
            (&["0", "1", "2", "251", "10", "3"], &[3, 10, 251]),
            (&[".", "..", "x", "-4", "12"], &[12]),
            (&["2", " 7", "8 "], &[]),
        ];
        for (input, want) in cases {
            assert_eq!(inherited(&names(input)), want, "{input:?}");
        }
    }

    /// Records what was marked; answers as scripted.
    #[derive(Default)]
    struct Fake {
        range: Option<i32>,
        list: Option<Vec<&'static str>>,
        /// Descriptors that are gone (EBADF) or refuse (EPERM).
        gone: Vec<RawFd>,
        refuse: Vec<RawFd>,
        marked: Vec<RawFd>,
    }

    impl Descriptors for Fake {
        fn cloexec_range(&mut self, _first: RawFd) -> io::Result<()> {
            self.range.map_or(Ok(()), |e| Err(io::Error::from_raw_os_error(e)))
        }
        fn list(&mut self) -> io::Result<Vec<String>> {
            self.list.as_ref().map(|l| l.iter().map(|s| s.to_string()).collect()).ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))
        }
        fn cloexec(&mut self, fd: RawFd) -> io::Result<()> {
            if self.gone.contains(&fd) {
                return Err(io::Error::from_raw_os_error(libc::EBADF));
            }
            if self.refuse.contains(&fd) {
                return Err(io::Error::from_raw_os_error(libc::EPERM));
            }
            self.marked.push(fd);
            Ok(())
        }
    }

    /// The fallback's system calls on a real descriptor: listed, then marked.
    #[test]
    fn the_real_fallback_lists_and_marks() {
        let f = std::fs::File::open("/dev/null").unwrap();
        // SAFETY: F_DUPFD makes a new descriptor (without close-on-exec), closed below.
        let fd = unsafe { libc::fcntl(std::os::fd::AsRawFd::as_raw_fd(&f), libc::F_DUPFD, 100) };
        assert!(fd >= 100);
        assert!(inherited(&Sys.list().unwrap()).contains(&fd));
        // SAFETY: F_GETFD only reads the flags.
        assert_eq!(unsafe { libc::fcntl(fd, libc::F_GETFD) } & libc::FD_CLOEXEC, 0);
        Sys.cloexec(fd).unwrap();
        // SAFETY: as above.
        assert_eq!(unsafe { libc::fcntl(fd, libc::F_GETFD) } & libc::FD_CLOEXEC, libc::FD_CLOEXEC);
        // SAFETY: the descriptor made above, closed once.
        unsafe { libc::close(fd) };
    }

    #[test]
    fn close_range_alone_when_it_works() {
        let mut f = Fake { list: Some(vec!["10"]), ..Fake::default() };
        assert_eq!(cloexec_inherited(&mut f), Ok(()));
        assert!(f.marked.is_empty());
    }

    #[test]
    fn without_close_range_each_listed_descriptor_is_marked() {
        // The listing's own descriptor (3 here) is closed by the time it is marked: not an error.
        let mut f = Fake { range: Some(libc::ENOSYS), list: Some(vec!["0", "1", "2", "3", "10", "251"]), gone: vec![3], ..Fake::default() };
        assert_eq!(cloexec_inherited(&mut f), Ok(()));
        assert_eq!(f.marked, [10, 251]);
    }

    #[test]
    fn failures_name_what_failed() {
        let mut f = Fake { range: Some(libc::ENOSYS), ..Fake::default() };
        let e = cloexec_inherited(&mut f).unwrap_err();
        assert!(e.starts_with("close_range: ") && e.contains("/proc/self/fd: "), "{e}");
        let mut f = Fake { range: Some(libc::EINVAL), list: Some(vec!["10", "11"]), refuse: vec![10], ..Fake::default() };
        let e = cloexec_inherited(&mut f).unwrap_err();
        assert!(e.starts_with("descriptor 10: "), "{e}");
        assert_eq!(f.marked, [11]);
    }
}
