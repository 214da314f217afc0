//! The process's allocator: mimalloc, called the way `std` calls the system `malloc`, and its
//! purge delay.
//!
//! mimalloc instead of glibc's malloc: every request allocates (JSON values, sled's node
//! copies), and glibc's malloc/free took about a quarter of the enqueue path's instructions.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as mi;

/// Every mimalloc block is a whole number of words from a word-aligned start, so a plain
/// `mi_malloc` of at least this alignment's size is aligned to it.
const PLAIN_ALIGN: usize = std::mem::size_of::<usize>();

/// mimalloc through its plain entry points wherever the alignment allows. The `mimalloc`
/// crate calls `mi_malloc_aligned` for every allocation, and mimalloc 3 serves that from its
/// fast path only for blocks of a power-of-two size: a 1,500-byte buffer went through the
/// generic path and an over-allocation (docs/PERFORMANCE.md, change 21).
pub struct Mimalloc;

fn plain(align: usize, size: usize) -> bool {
    align <= PLAIN_ALIGN && align <= size
}

// SAFETY: each method hands mimalloc a request it serves with at least `layout.align()`
// alignment (plain calls only under `plain`, see `PLAIN_ALIGN`), and every block, aligned or
// not, goes back through `mi_free` or `mi_realloc*`, which take both kinds.
unsafe impl GlobalAlloc for Mimalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if plain(layout.align(), layout.size()) {
            mi::mi_malloc(layout.size()).cast()
        } else {
            mi::mi_malloc_aligned(layout.size(), layout.align()).cast()
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if plain(layout.align(), layout.size()) {
            mi::mi_zalloc(layout.size()).cast()
        } else {
            mi::mi_zalloc_aligned(layout.size(), layout.align()).cast()
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        mi::mi_free(ptr.cast::<c_void>());
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if plain(layout.align(), new_size) {
            mi::mi_realloc(ptr.cast::<c_void>(), new_size).cast()
        } else {
            mi::mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align()).cast()
        }
    }
}

/// `mi_option_purge_delay` in mimalloc 3's option enum (`mimalloc.h`; the -sys crate names it
/// only for mimalloc 2).
const MI_OPTION_PURGE_DELAY: mi::mi_option_t = 15;
/// How long mimalloc keeps freed pages before handing them back to the OS. Its default, 1 s,
/// let the pages a burst of batches had freed count in RSS for seconds after it, enough to
/// pass 256 MiB with a million queued; 250 ms keeps the fill's speed (docs/PERFORMANCE.md,
/// change 18).
const PURGE_DELAY_MS: std::ffi::c_long = 250;

/// Sets mimalloc's purge delay unless `MIMALLOC_PURGE_DELAY` in the environment chose one.
pub fn tune() {
    // SAFETY: mimalloc's option setters are not thread-safe; this runs first in `main`,
    // before any other thread exists, and the option index is checked by a test below.
    unsafe { libmimalloc_sys::mi_option_set_default(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Index 15 is the purge delay: mimalloc 3's default for it, 1,000 ms, is there before
    /// and `PURGE_DELAY_MS` after.
    #[test]
    fn the_purge_delay_option_is_the_one_set() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return;
        }
        // SAFETY: reading an option is a plain load.
        let before = unsafe { mi::mi_option_get(MI_OPTION_PURGE_DELAY) };
        tune();
        let after = unsafe { mi::mi_option_get(MI_OPTION_PURGE_DELAY) };
        assert_eq!(before, 1000);
        assert_eq!(after, PURGE_DELAY_MS);
    }

    /// Every alignment a layout can ask for, over sizes across mimalloc's small, medium and
    /// large blocks, through allocation, zeroed allocation and growing and shrinking
    /// reallocation, comes back aligned, and zeroed where asked.
    #[test]
    fn blocks_are_aligned_as_their_layouts_ask() {
        let sizes = [
            1, 3, 7, 8, 12, 24, 40, 100, 1_000, 1_500, 3_000, 70_000, 600_000,
        ];
        let aligns = [1, 2, 4, 8, 16, 32, 64, 4_096];
        let a = Mimalloc;
        for &size in &sizes {
            for &align in &aligns {
                let Ok(layout) = Layout::from_size_align(size, align) else {
                    continue;
                };
                // SAFETY: `layout` has a non-zero size; each block is freed once, with the
                // layout it was allocated or reallocated with.
                unsafe {
                    let p = a.alloc(layout);
                    assert_aligned(p, align, "alloc", size);
                    p.write_bytes(0xa5, size);
                    let grown = size * 3 + 5;
                    let q = a.realloc(p, layout, grown);
                    assert_aligned(q, align, "realloc up", size);
                    assert_eq!(*q.add(size - 1), 0xa5, "growing keeps the contents");
                    let grown_layout = Layout::from_size_align(grown, align).unwrap();
                    let r = a.realloc(q, grown_layout, size);
                    assert_aligned(r, align, "realloc down", size);
                    assert_eq!(*r.add(size - 1), 0xa5, "shrinking keeps the contents");
                    a.dealloc(r, layout);
                    let z = a.alloc_zeroed(layout);
                    assert_aligned(z, align, "alloc_zeroed", size);
                    assert!(std::slice::from_raw_parts(z, size).iter().all(|&b| b == 0));
                    a.dealloc(z, layout);
                }
            }
        }
    }

    fn assert_aligned(p: *mut u8, align: usize, what: &str, size: usize) {
        assert!(!p.is_null(), "{what} {size} at {align}: null");
        assert_eq!(p as usize % align, 0, "{what} {size} at {align}");
    }
}
