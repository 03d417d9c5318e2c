//! chinit's memory allocator, behind the C `malloc` family that the binary exports (`main.rs`):
//! Rust's `System` allocator and musl both call those, so musl's own allocator is not linked.
//!
//! Why: musl's allocator sets its heap up on the first `malloc` (`brk`, a guard mapping) and keeps
//! mapping and unmapping groups of slots as the boot allocates and frees. Each of those is a trip
//! through the kernel's memory management, and on a cold kernel (first run after boot, emulation)
//! the boot paid ~10 ms for them. Here the boot's ~100 KiB of allocations come from a static arena
//! (.bss: pages only fault in when touched), managed by `talc`; no system call at all until it is
//! full. Past it the heap grows by mappings of at least [`CHUNK`]; allocations of [`LARGE`] bytes
//! and more get a mapping of their own, unmapped again on `free`, so a transient big buffer does
//! not stay in PID 1's memory.
//!
//! Every block carries a 16-byte header just below the pointer handed out: the size it was
//! allocated with, and its offset from the start of the underlying allocation (bit 0 set for a
//! mapping of its own). `free` and `realloc` need nothing else.

use std::alloc::Layout;
use std::ptr::{self, NonNull};
use std::sync::{Mutex, PoisonError};

use talc::{OomHandler, Span, Talc};

/// From this size up (header included) a block gets its own mapping.
pub const LARGE: usize = 128 * 1024;
/// The least the heap grows by once the arena is full.
pub const CHUNK: usize = 1024 * 1024;
/// What `malloc` guarantees, as every x86_64 and aarch64 libc does.
pub const MIN_ALIGN: usize = 16;
const HEADER: usize = 16;
const PAGE: usize = 4096;
const MAPPED: usize = 1;

/// A thread-safe heap with C allocation semantics: null on failure, never a panic.
pub struct Heap {
    inner: Mutex<Inner>,
}

struct Inner(Talc<Grow>);

// SAFETY: `Talc` holds raw pointers into memory that only it manages (the arena and the mappings
// its handler claims); every access goes through the mutex.
unsafe impl Send for Inner {}

/// Out of memory in talc: claim the arena first, then map more.
struct Grow {
    arena: Span,
}

impl OomHandler for Grow {
    fn handle_oom(talc: &mut Talc<Self>, layout: Layout) -> Result<(), ()> {
        let arena = std::mem::replace(&mut talc.oom_handler.arena, Span::empty());
        // SAFETY: `Heap::new`'s contract: the arena belongs to this heap alone.
        if !arena.is_empty() && unsafe { talc.claim(arena) }.is_ok() {
            return Ok(());
        }
        // Room for the request, its alignment, and talc's tags (its metadata, ~1 KiB, if the
        // arena was too small to hold it).
        let want = layout.size().checked_add(layout.align()).and_then(|n| n.checked_add(2 * PAGE)).ok_or(())?;
        let len = round_up(want.max(CHUNK), PAGE).ok_or(())?;
        let base = map(len).ok_or(())?;
        // SAFETY: a fresh private mapping, given to this heap for good.
        unsafe { talc.claim(Span::from_base_size(base.as_ptr(), len)) }.map(|_| ())
    }
}

impl Heap {
    /// A heap that first allocates from `arena`, then from mappings.
    ///
    /// # Safety
    /// Nothing else reads or writes `arena` while the heap lives, and it does not contain the
    /// null address.
    pub const unsafe fn new(arena: Span) -> Heap {
        Heap { inner: Mutex::new(Inner(Talc::new(Grow { arena }))) }
    }

    /// `aligned_alloc`: at least `size` bytes aligned to `align` (a power of two; below
    /// [`MIN_ALIGN`] means [`MIN_ALIGN`]), or null.
    pub fn alloc(&self, size: usize, align: usize) -> *mut u8 {
        if !align.is_power_of_two() {
            return ptr::null_mut();
        }
        // The header sits in the `offset` bytes below the block: a multiple of the alignment.
        let offset = align.max(MIN_ALIGN);
        let size = size.max(1);
        let Some(total) = offset.checked_add(size) else { return ptr::null_mut() };
        let (base, word) = if total >= LARGE && offset <= PAGE {
            let Some(len) = round_up(total, PAGE) else { return ptr::null_mut() };
            match map(len) {
                Some(base) => (base, offset | MAPPED),
                None => return ptr::null_mut(),
            }
        } else {
            let Ok(layout) = Layout::from_size_align(total, offset) else { return ptr::null_mut() };
            // SAFETY: the layout's size is not zero.
            match unsafe { self.lock().0.malloc(layout) } {
                Ok(base) => (base, offset),
                Err(()) => return ptr::null_mut(),
            }
        };
        // SAFETY: `base` starts `total` bytes we own; the block starts `offset` ≥ 16 bytes in, so
        // the header's two words (16-byte aligned, as `offset` is a multiple of 16) are ours too.
        unsafe {
            let block = base.as_ptr().add(offset);
            write_header(block, size, word);
            block
        }
    }

    /// `calloc`: `n` zeroed elements of `size` bytes, or null (also when the product overflows).
    pub fn alloc_zeroed(&self, n: usize, size: usize) -> *mut u8 {
        let Some(bytes) = n.checked_mul(size) else { return ptr::null_mut() };
        let block = self.alloc(bytes, MIN_ALIGN);
        if !block.is_null() {
            // SAFETY: `block` came from `alloc` just now, with a header and `bytes` bytes.
            let (_, word) = unsafe { read_header(block) };
            // A mapping of its own is zeroed by the kernel; heap memory may have been used.
            if word & MAPPED == 0 {
                // SAFETY: the block has at least `bytes` writable bytes.
                unsafe { ptr::write_bytes(block, 0, bytes) };
            }
        }
        block
    }

    /// `free`.
    ///
    /// # Safety
    /// `block` is null or came from this heap and was not freed since.
    pub unsafe fn free(&self, block: *mut u8) {
        let Some(block) = NonNull::new(block) else { return };
        // SAFETY: the caller's contract: a live block of this heap, with its header.
        let (size, word) = unsafe { read_header(block.as_ptr()) };
        let offset = word & !MAPPED;
        // SAFETY: the block starts `offset` bytes into its allocation.
        let base = unsafe { block.as_ptr().sub(offset) };
        if word & MAPPED != 0 {
            if let Some(len) = round_up(offset + size, PAGE) {
                // SAFETY: the block's own mapping, `len` bytes, as `alloc` made it.
                unsafe { libc::munmap(base.cast(), len) };
            }
        } else if let (Ok(layout), Some(base)) = (Layout::from_size_align(offset + size, offset), NonNull::new(base)) {
            // SAFETY: `base` was allocated from talc with exactly this layout.
            unsafe { self.lock().0.free(base, layout) };
        }
    }

    /// `realloc`: the block moved or kept, with its contents up to the smaller size; null (and
    /// the old block untouched) if there is no memory.
    ///
    /// # Safety
    /// As for [`Heap::free`].
    pub unsafe fn realloc(&self, block: *mut u8, size: usize) -> *mut u8 {
        if block.is_null() {
            return self.alloc(size, MIN_ALIGN);
        }
        // SAFETY: the caller's contract.
        let old = unsafe { read_header(block) }.0;
        // Shrinking by up to half keeps the block where it is.
        if size <= old && size >= old / 2 {
            return block;
        }
        let new = self.alloc(size, MIN_ALIGN);
        if !new.is_null() {
            // SAFETY: both blocks hold at least `min(old, size)` bytes and do not overlap.
            unsafe {
                ptr::copy_nonoverlapping(block, new, old.min(size));
                self.free(block);
            }
        }
        new
    }

    /// `malloc_usable_size`: what the block can hold.
    ///
    /// # Safety
    /// As for [`Heap::free`].
    pub unsafe fn usable_size(&self, block: *mut u8) -> usize {
        if block.is_null() {
            return 0;
        }
        // SAFETY: the caller's contract.
        unsafe { read_header(block) }.0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Nothing panics while holding the lock; if it ever did, the heap itself is still sound.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// # Safety
/// The 16 bytes below `block` are writable and 8-byte aligned.
unsafe fn write_header(block: *mut u8, size: usize, word: usize) {
    // SAFETY: the caller's contract.
    unsafe {
        block.sub(HEADER).cast::<usize>().write(size);
        block.sub(HEADER / 2).cast::<usize>().write(word);
    }
}

/// # Safety
/// `block` came from [`Heap::alloc`].
unsafe fn read_header(block: *mut u8) -> (usize, usize) {
    // SAFETY: the caller's contract.
    unsafe { (block.sub(HEADER).cast::<usize>().read(), block.sub(HEADER / 2).cast::<usize>().read()) }
}

fn round_up(n: usize, to: usize) -> Option<usize> {
    Some(n.checked_add(to - 1)? & !(to - 1))
}

fn map(len: usize) -> Option<NonNull<u8>> {
    // SAFETY: a new private anonymous mapping; no existing memory is touched.
    let p = unsafe { libc::mmap(ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0) };
    if p == libc::MAP_FAILED {
        None
    } else {
        NonNull::new(p.cast())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn heap(arena: usize) -> Heap {
        let mem: &'static mut [u8] = Box::leak(vec![0u8; arena].into_boxed_slice());
        // SAFETY: leaked: nothing else ever sees this memory.
        unsafe { Heap::new(Span::from_base_size(mem.as_mut_ptr(), mem.len())) }
    }

    fn fill(p: *mut u8, n: usize, v: u8) {
        // SAFETY: the tests only fill blocks they allocated with at least `n` bytes.
        unsafe { ptr::write_bytes(p, v, n) }
    }

    fn all(p: *mut u8, n: usize, v: u8) -> bool {
        // SAFETY: as in `fill`.
        unsafe { std::slice::from_raw_parts(p, n) }.iter().all(|&b| b == v)
    }

    #[test]
    fn alignment_and_usable_size() {
        let h = heap(64 * 1024);
        for (size, align) in [(0, 1), (1, 1), (7, 8), (24, 16), (100, 64), (3000, 4096), (200 * 1024, 16), (200 * 1024, 8192)] {
            let p = h.alloc(size, align);
            assert!(!p.is_null(), "{size} bytes aligned {align}");
            assert_eq!(p as usize % align.max(MIN_ALIGN), 0, "{size} bytes aligned {align}");
            // SAFETY: just allocated.
            assert_eq!(unsafe { h.usable_size(p) }, size.max(1));
            fill(p, size, 0xa5);
            // SAFETY: just allocated, freed once.
            unsafe { h.free(p) };
        }
        assert!(h.alloc(8, 24).is_null(), "an alignment that is not a power of two is refused");
        assert!(h.alloc(usize::MAX - 8, 16).is_null(), "an impossible size gives null, not a panic");
        assert!(h.alloc_zeroed(usize::MAX / 2, 3).is_null(), "calloc's overflow gives null");
        // SAFETY: null is allowed.
        unsafe { h.free(ptr::null_mut()) };
    }

    #[test]
    fn freed_memory_is_reused() {
        let h = heap(64 * 1024);
        let a = h.alloc(256, 16);
        // SAFETY: `a` is live.
        unsafe { h.free(a) };
        let b = h.alloc(256, 16);
        assert_eq!(a, b, "the same size right after a free takes the same place");
        // SAFETY: `b` is live.
        unsafe { h.free(b) };
        // Many rounds of allocate-and-free stay within the arena: no growth, no leak.
        for round in 0..10_000 {
            let p = h.alloc(1000 + round % 3000, 16);
            assert!(!p.is_null());
            // SAFETY: live.
            unsafe { h.free(p) };
        }
    }

    #[test]
    fn calloc_zeroes_reused_memory() {
        let h = heap(64 * 1024);
        let p = h.alloc(512, 16);
        fill(p, 512, 0xff);
        // SAFETY: live.
        unsafe { h.free(p) };
        let q = h.alloc_zeroed(64, 8);
        assert_eq!(p, q, "the dirty block is handed out again");
        assert!(all(q, 512, 0));
        let big = h.alloc_zeroed(LARGE, 2);
        assert!(all(big, 2 * LARGE, 0));
        // SAFETY: live.
        unsafe {
            h.free(q);
            h.free(big);
        }
    }

    #[test]
    fn realloc_keeps_contents() {
        let h = heap(64 * 1024);
        // SAFETY: each pointer is the live result of the previous call.
        unsafe {
            let p = h.realloc(ptr::null_mut(), 40);
            fill(p, 40, 7);
            let p = h.realloc(p, 30);
            assert_eq!(h.usable_size(p), 40, "a small shrink stays in place");
            let p = h.realloc(p, 5000);
            assert!(all(p, 40, 7));
            fill(p, 5000, 9);
            // Into its own mapping and back.
            let p = h.realloc(p, 3 * LARGE);
            assert!(all(p, 5000, 9));
            let p = h.realloc(p, 100);
            assert_eq!(h.usable_size(p), 100);
            assert!(all(p, 100, 9));
            h.free(p);
        }
    }

    /// Mapped memory of this process, in bytes (from /proc/self/maps).
    fn mapped_bytes() -> usize {
        std::fs::read_to_string("/proc/self/maps")
            .unwrap()
            .lines()
            .filter_map(|l| {
                let (a, b) = l.split_whitespace().next()?.split_once('-')?;
                Some(usize::from_str_radix(b, 16).ok()? - usize::from_str_radix(a, 16).ok()?)
            })
            .sum()
    }

    #[test]
    fn large_blocks_are_mapped_and_returned() {
        let h = heap(64 * 1024);
        let size = 64 << 20;
        let before = mapped_bytes();
        let p = h.alloc(size, 16);
        assert!(!p.is_null());
        // Other test threads map and unmap meanwhile; 64 MiB stands out from their noise.
        assert!(mapped_bytes() >= before + size - (8 << 20), "a large block has a mapping of its own");
        // SAFETY: live.
        unsafe { h.free(p) };
        assert!(mapped_bytes() < before + size / 2, "freeing it gives the memory back to the kernel");
    }

    #[test]
    fn grows_past_the_arena() {
        // An arena too small even for talc's metadata: everything comes from mappings.
        for arena in [0, 512, 64 * 1024] {
            let h = heap(arena.max(1));
            let blocks: Vec<(*mut u8, u8)> = (0..3000u32)
                .map(|i| {
                    let n = 16 + (i as usize * 37) % 4000;
                    let p = h.alloc(n, 16);
                    assert!(!p.is_null(), "block {i} of {n} bytes, arena {arena}");
                    fill(p, n, i as u8);
                    (p, i as u8)
                })
                .collect();
            for &(p, v) in &blocks {
                // SAFETY: live.
                let n = unsafe { h.usable_size(p) };
                assert!(all(p, n, v), "block contents survive the heap's growth");
            }
            for (p, _) in blocks {
                // SAFETY: live, freed once.
                unsafe { h.free(p) };
            }
        }
    }

    #[test]
    fn threads_share_one_heap() {
        let h: &'static Heap = Box::leak(Box::new(heap(256 * 1024)));
        let workers: Vec<_> = (0..4u8)
            .map(|t| {
                std::thread::spawn(move || {
                    let mut live = Vec::new();
                    for i in 0..4_000usize {
                        let n = 1 + (i * 131 + t as usize * 17) % 2048;
                        let p = h.alloc(n, 16);
                        fill(p, n, t);
                        live.push((p, n));
                        if i % 3 != 0 {
                            let (q, m) = live.swap_remove((i * 7) % live.len());
                            assert!(all(q, m, t), "another thread wrote into this thread's block");
                            // SAFETY: live, freed once.
                            unsafe { h.free(q) };
                        }
                    }
                    for (q, m) in live {
                        assert!(all(q, m, t));
                        // SAFETY: live, freed once.
                        unsafe { h.free(q) };
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
    }
}
