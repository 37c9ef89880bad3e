//! The process allocator of both binaries, with its measured reasons.

use std::alloc::{GlobalAlloc, Layout};

/// Installed by each binary (`#[global_allocator] static ALLOCATOR: Allocator = Allocator;`).
///
/// glibc malloc took ~18% of the server's CPU under load (perf); mimalloc's thread-local free lists
/// make the many small per-request allocations cheap, and musl's malloc (the static image) is slower
/// still. Its `no_thp` feature keeps RSS where it was: with transparent huge pages it doubled (13 ->
/// 27 MiB).
///
/// mimalloc, except for blocks of 1 MiB and more (large request bodies and answers), which are
/// mapped and unmapped directly: mimalloc kept freed large blocks for its purge delay, and the
/// worst-case benchmark of 3 MiB reviews peaked at 103 MiB instead of 45 MiB.
pub struct Allocator;

const MAPPED_FROM: usize = 1 << 20;
const PAGE: usize = 4096;

fn mapped(layout: Layout) -> bool {
    layout.size() >= MAPPED_FROM && layout.align() <= PAGE
}

// SAFETY: every block is freed by the allocator that made it, told apart by its layout, which
// `dealloc` and `realloc` receive as it was allocated; mmap gives page-aligned, zeroed memory.
unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if mapped(layout) {
            map(layout.size())
        } else {
            // SAFETY: forwarded as received.
            unsafe { mimalloc::MiMalloc.alloc(layout) }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if mapped(layout) {
            map(layout.size())
        } else {
            // SAFETY: forwarded as received.
            unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if mapped(layout) {
            // SAFETY: mapped by `map` with this size.
            unsafe { libc::munmap(ptr.cast(), layout.size()) };
        } else {
            // SAFETY: forwarded as received.
            unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees a valid layout for new_size with the same alignment.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        match (mapped(layout), mapped(new_layout)) {
            // SAFETY: forwarded as received.
            (false, false) => unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) },
            (true, true) => {
                // SAFETY: `ptr` was mapped with `layout.size()`; the kernel moves it if needed.
                let moved = unsafe { libc::mremap(ptr.cast(), layout.size(), new_size, libc::MREMAP_MAYMOVE) };
                if moved == libc::MAP_FAILED {
                    std::ptr::null_mut()
                } else {
                    moved.cast()
                }
            }
            _ => {
                // SAFETY: a fresh block of the new layout, the old one copied and freed.
                unsafe {
                    let new = self.alloc(new_layout);
                    if !new.is_null() {
                        std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                        self.dealloc(ptr, layout);
                    }
                    new
                }
            }
        }
    }
}

fn map(size: usize) -> *mut u8 {
    // SAFETY: an anonymous private mapping touches no existing memory.
    let block = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if block == libc::MAP_FAILED {
        std::ptr::null_mut()
    } else {
        block.cast()
    }
}

#[cfg(test)]
mod tests {
    use super::Allocator;

    #[global_allocator]
    static ALLOCATOR: Allocator = Allocator;

    /// The allocator across the mapped threshold, both ways, keeps every byte.
    #[test]
    fn blocks_move_between_mimalloc_and_mappings_intact() {
        let pattern = |index: usize| (index % 251) as u8;
        let mut bytes: Vec<u8> = Vec::with_capacity(512 * 1024);
        for index in 0..3 * 1024 * 1024 + 17 {
            bytes.push(pattern(index));
        }
        assert!(bytes.capacity() >= super::MAPPED_FROM);
        bytes.extend((0..5 * 1024 * 1024).map(pattern));
        bytes.truncate(100 * 1024);
        bytes.shrink_to_fit();
        assert!(bytes.capacity() < super::MAPPED_FROM);
        assert!(bytes.iter().enumerate().all(|(index, byte)| *byte == pattern(index)));
        let zeroed = vec![0u64; 512 * 1024];
        assert!(zeroed.iter().all(|word| *word == 0));
    }
}
