//! chinit, PID 1. See the library for the boot.
//!
//! `no_main`: the C `main` below is the entry, without Rust's runtime set-up before it (an
//! alternate signal stack and SIGSEGV/SIGBUS handlers for a stack-overflow message, a poll of fds
//! 0-2, SIGPIPE). Under emulation that set-up alone took 4-6 ms of a ~60 ms boot. What chinit
//! needs of it, it does itself: SIGPIPE ignored here (a write to a closed socket must not kill
//! PID 1; std's `Command` still gives children the default), stdio opened by the mounts step.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]
#![cfg_attr(not(test), no_main)]

use std::ffi::{c_char, c_int, CStr};

/// The earliest timestamp: runs before `main`.
#[ctor::ctor]
fn stamp() {
    chinit::clock::stamp_init_start();
}

#[cfg(not(test))]
#[no_mangle]
pub extern "C" fn main(argc: c_int, argv: *const *const c_char) -> c_int {
    // SAFETY: setting a signal's disposition to SIG_IGN has no memory effects.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    // Before any thread exists: chinit reads these from a signalfd (`signals`).
    if let Err(e) = chinit::signals::block() {
        chinit::say!("signals: cannot block them: {e}");
    }
    // Before chinit opens anything: what a parent left open reaches no child.
    if let Err(e) = chinit::fds::cloexec_inherited(&mut chinit::fds::Sys) {
        chinit::say!("inherited descriptors: cannot mark them close-on-exec: {e}");
    }
    chinit::panic::install();
    let args = args(argc, argv);
    let code = chinit::main_exec(&args);
    std::process::exit(code as c_int);
}

/// The arguments, lossily as UTF-8, from what the kernel (or the C start-up code) passed `main`.
fn args(argc: c_int, argv: *const *const c_char) -> Vec<String> {
    let n = usize::try_from(argc).unwrap_or(0);
    let mut out = Vec::with_capacity(n);
    if argv.is_null() {
        return out;
    }
    for i in 0..n {
        // SAFETY: the C start-up passes `argc` valid pointers in `argv`, followed by a null one;
        // a null pointer ends the loop early all the same.
        let p = unsafe { *argv.add(i) };
        if p.is_null() {
            break;
        }
        // SAFETY: each non-null `argv[i]` is a NUL-terminated string that lives for the process.
        out.push(unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned());
    }
    out
}

/// The C allocation functions of the whole binary, on [`chinit::heap`]: Rust's `System` allocator
/// and musl call these, and musl's own allocator is left out of the link. Only in the static musl
/// build: test binaries keep their libc's allocator.
#[cfg(all(target_env = "musl", not(test)))]
mod c_alloc {
    use std::ffi::{c_int, c_void};

    use chinit::heap::{Heap, MIN_ALIGN};

    /// The boot's allocations (~100 KiB) fit here; pages of it fault in only once used.
    const ARENA: usize = 256 * 1024;

    static mut ARENA_MEM: [u8; ARENA] = [0; ARENA];
    // SAFETY: the arena is only ever reached through this heap.
    static HEAP: Heap = unsafe { Heap::new(talc::Span::from_array(&raw mut ARENA_MEM)) };

    fn out_of_memory(p: *mut u8) -> *mut c_void {
        if p.is_null() {
            // SAFETY: errno is this thread's own.
            unsafe { *libc::__errno_location() = libc::ENOMEM };
        }
        p.cast()
    }

    #[no_mangle]
    extern "C" fn malloc(size: usize) -> *mut c_void {
        out_of_memory(HEAP.alloc(size, MIN_ALIGN))
    }

    #[no_mangle]
    extern "C" fn calloc(n: usize, size: usize) -> *mut c_void {
        out_of_memory(HEAP.alloc_zeroed(n, size))
    }

    #[no_mangle]
    extern "C" fn aligned_alloc(align: usize, size: usize) -> *mut c_void {
        out_of_memory(HEAP.alloc(size, align))
    }

    #[no_mangle]
    extern "C" fn memalign(align: usize, size: usize) -> *mut c_void {
        out_of_memory(HEAP.alloc(size, align))
    }

    /// # Safety
    /// C's contract: `out` is writable.
    #[no_mangle]
    unsafe extern "C" fn posix_memalign(out: *mut *mut c_void, align: usize, size: usize) -> c_int {
        if !align.is_power_of_two() || align % std::mem::size_of::<usize>() != 0 {
            return libc::EINVAL;
        }
        let p = HEAP.alloc(size, align);
        if p.is_null() {
            return libc::ENOMEM;
        }
        // SAFETY: the caller's contract.
        unsafe { *out = p.cast() };
        0
    }

    /// # Safety
    /// C's contract: `p` is null or a live block from these functions.
    #[no_mangle]
    unsafe extern "C" fn realloc(p: *mut c_void, size: usize) -> *mut c_void {
        // SAFETY: the caller's contract.
        out_of_memory(unsafe { HEAP.realloc(p.cast(), size) })
    }

    /// # Safety
    /// C's contract: `p` is null or a live block from these functions.
    #[no_mangle]
    unsafe extern "C" fn free(p: *mut c_void) {
        // SAFETY: the caller's contract.
        unsafe { HEAP.free(p.cast()) }
    }

    /// # Safety
    /// C's contract: `p` is null or a live block from these functions.
    #[no_mangle]
    unsafe extern "C" fn malloc_usable_size(p: *mut c_void) -> usize {
        // SAFETY: the caller's contract.
        unsafe { HEAP.usable_size(p.cast()) }
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::CString;

    #[test]
    fn args_from_argv() {
        let owned: Vec<CString> =
            ["/sbin/chinit", "--cmdline", "chinit.ip=169.254.1.2/16", "caf\u{e9}"].iter().map(|s| CString::new(*s).unwrap()).collect();
        let mut argv: Vec<*const libc::c_char> = owned.iter().map(|s| s.as_ptr()).collect();
        argv.push(std::ptr::null());
        let args = super::args(4, argv.as_ptr());
        assert_eq!(args, ["/sbin/chinit", "--cmdline", "chinit.ip=169.254.1.2/16", "caf\u{e9}"]);
        // A count past the terminating null stops at the null; nothing at all gives nothing.
        assert_eq!(super::args(9, argv.as_ptr()).len(), 4);
        assert!(super::args(3, std::ptr::null()).is_empty());
        assert!(super::args(-1, argv.as_ptr()).is_empty());
        // Bytes that are not UTF-8 are replaced, not refused.
        let latin1 = [b'c', b'a', b'f', 0xe9, 0];
        let argv = [latin1.as_ptr().cast::<libc::c_char>(), std::ptr::null()];
        assert_eq!(super::args(1, argv.as_ptr()), ["caf\u{fffd}"]);
    }
}
