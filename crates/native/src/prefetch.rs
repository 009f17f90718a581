//! Cache prefetch hints for memory the emulator is about to touch.
//!
//! Building an enclave hashes each page it adds with SHA-256, whose rounds are bound by
//! their own latency and leave the memory system idle; the driver uses that time to bring
//! in the next page's source and destination (see `Processor::eextend_page_overlapped`).
//! Copying a page whose lines are all still in memory otherwise costs about as much as a
//! fifth of hashing it.

use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};

/// The cache line size of every x86-64 part this runs on.
const LINE: u64 = 64;

/// Asks for the cache lines of `addr..addr + len` to be brought into every cache level.
///
/// A hint only: `addr` may be anything, mapped or not, since a prefetch never faults and
/// changes no architectural state.
pub fn lines(addr: u64, len: usize) {
    let first = addr & !(LINE - 1);
    let count = addr.saturating_add(len as u64).saturating_sub(first).div_ceil(LINE);
    for line in (0..count).map(|i| first.wrapping_add(i * LINE)) {
        // SAFETY: PREFETCHT0 is a hint: it neither reads memory architecturally nor faults,
        // whatever the address (an unmapped or protected line is simply not fetched).
        unsafe { _mm_prefetch::<_MM_HINT_T0>(line as *const i8) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefetching_any_address_is_harmless() {
        let page = [7u8; 4096];
        lines(page.as_ptr() as u64, page.len());
        lines(0, 4096);
        lines(u64::MAX - 100, 4096);
        lines(0xFFFF_8000_0000_0000, 256);
        assert_eq!(page, [7u8; 4096]);
    }
}
