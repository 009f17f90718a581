//! EPC page storage: the bytes of every EPC page, reached by page index.
//!
//! The processor only touches page contents through [`EpcMemory`], so the same model runs
//! over the lazily allocated [`SparseEpc`] below (tests, the in-process platform) and over
//! host memory that natively running enclave code also maps (the native engine).

use std::sync::OnceLock;

use parking_lot::RwLock;
use sgxemu_arch::PAGE_SIZE;

/// Index of a page inside the EPC (0-based). Deliberately no arithmetic: convert with
/// [`crate::Processor::epc_addr`] / [`crate::Processor::epc_index`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EpcIndex(pub u32);

impl EpcIndex {
    /// The index as a `usize`, for table lookups.
    pub fn as_usize(self) -> usize {
        self.0 as usize
    }
}

/// Byte storage of the EPC. Callers always pass `offset + len <= 4096`.
pub trait EpcMemory: Send + Sync + std::fmt::Debug {
    /// Number of pages this storage holds.
    fn pages(&self) -> u64;
    /// Copies `buf.len()` bytes of `page` starting at `offset` into `buf`.
    fn read(&self, page: EpcIndex, offset: usize, buf: &mut [u8]);
    /// Copies `data` into `page` at `offset`.
    fn write(&self, page: EpcIndex, offset: usize, data: &[u8]);
    /// Sets every byte of `page` to zero.
    fn zero(&self, page: EpcIndex);
    /// Calls `f` with the `len` bytes of `page` from `offset` in place, so a leaf that only
    /// hashes a page (EEXTEND) reads it once instead of copying it first. `f` must not reach
    /// this storage itself.
    fn lend(&self, page: EpcIndex, offset: usize, len: usize, f: &mut dyn FnMut(&[u8]));
    /// A hint that `len` bytes of `page` from `offset` will be written soon: storage that
    /// lives in host memory brings them into the cache. Changes no contents.
    fn prefetch(&self, _page: EpcIndex, _offset: usize, _len: usize) {}
}

/// Pages per lazily allocated chunk (2 MiB of EPC).
const CHUNK_PAGES: usize = 512;

/// One page behind its own reader-writer lock: leaves on different pages never wait for
/// each other, racing accesses to one page are each all-or-nothing (never torn), and a
/// reader can be lent the bytes in place. No caller holds two pages' locks at once.
type Page = RwLock<PageBytes>;

/// A page's bytes, cache-line aligned as a real page is (hashing and copying a page that
/// straddles one more line than it needs is measurably slower).
#[repr(align(64))]
struct PageBytes([u8; PAGE_SIZE]);

/// EPC storage allocated in 2 MiB chunks on first write, so a 64 GiB EPC costs memory only
/// for the pages an enclave actually uses. Never-written pages read as zero.
pub struct SparseEpc {
    pages: u64,
    chunks: Vec<OnceLock<Box<[Page]>>>,
}

impl std::fmt::Debug for SparseEpc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let allocated = self.chunks.iter().filter(|c| c.get().is_some()).count();
        f.debug_struct("SparseEpc").field("pages", &self.pages).field("allocated_chunks", &allocated).finish()
    }
}

impl SparseEpc {
    /// Storage for `pages` EPC pages; allocates only the chunk index.
    pub fn new(pages: u64) -> Self {
        let chunks = (pages as usize).div_ceil(CHUNK_PAGES);
        SparseEpc { pages, chunks: (0..chunks).map(|_| OnceLock::new()).collect() }
    }

    fn existing(&self, page: EpcIndex) -> Option<&Page> {
        let chunk = self.chunks[page.as_usize() / CHUNK_PAGES].get()?;
        Some(&chunk[page.as_usize() % CHUNK_PAGES])
    }

    fn page(&self, page: EpcIndex) -> &Page {
        let chunk = self.chunks[page.as_usize() / CHUNK_PAGES]
            .get_or_init(|| (0..CHUNK_PAGES).map(|_| RwLock::new(PageBytes([0; PAGE_SIZE]))).collect());
        &chunk[page.as_usize() % CHUNK_PAGES]
    }

    /// Bytes of memory currently allocated for page contents.
    pub fn allocated_bytes(&self) -> usize {
        self.chunks.iter().filter(|c| c.get().is_some()).count() * CHUNK_PAGES * PAGE_SIZE
    }
}

impl EpcMemory for SparseEpc {
    fn pages(&self) -> u64 {
        self.pages
    }

    fn read(&self, page: EpcIndex, offset: usize, buf: &mut [u8]) {
        match self.existing(page) {
            Some(bytes) => buf.copy_from_slice(&bytes.read().0[offset..offset + buf.len()]),
            None => buf.fill(0),
        }
    }

    fn write(&self, page: EpcIndex, offset: usize, data: &[u8]) {
        self.page(page).write().0[offset..offset + data.len()].copy_from_slice(data);
    }

    fn zero(&self, page: EpcIndex) {
        if let Some(bytes) = self.existing(page) {
            bytes.write().0.fill(0);
        }
    }

    fn lend(&self, page: EpcIndex, offset: usize, len: usize, f: &mut dyn FnMut(&[u8])) {
        match self.existing(page) {
            Some(bytes) => f(&bytes.read().0[offset..offset + len]),
            None => f(&[0; PAGE_SIZE][..len]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn untouched_pages_read_zero_without_allocating() {
        let epc = SparseEpc::new(16 << 18); // 64 GiB of pages
        let mut buf = [1u8; 64];
        epc.read(EpcIndex(12345), 100, &mut buf);
        assert_eq!(buf, [0; 64]);
        assert_eq!(epc.allocated_bytes(), 0);
    }

    #[test]
    fn writes_round_trip_and_allocate_one_chunk() {
        let epc = SparseEpc::new(2048);
        epc.write(EpcIndex(1000), 4090, &[1, 2, 3, 4, 5, 6]);
        let mut buf = [0u8; 6];
        epc.read(EpcIndex(1000), 4090, &mut buf);
        assert_eq!(buf, [1, 2, 3, 4, 5, 6]);
        assert_eq!(epc.allocated_bytes(), CHUNK_PAGES * PAGE_SIZE);
        epc.zero(EpcIndex(1000));
        epc.read(EpcIndex(1000), 4090, &mut buf);
        assert_eq!(buf, [0; 6]);
    }

    #[test]
    fn unaligned_partial_writes_touch_only_their_bytes() {
        let epc = SparseEpc::new(1);
        let pattern: Vec<u8> = (0..64).collect();
        epc.write(EpcIndex(0), 0, &pattern);
        epc.write(EpcIndex(0), 3, &[0xAA, 0xBB]);
        epc.write(EpcIndex(0), 13, &[0xCC; 7]);
        let mut back = [0u8; 64];
        epc.read(EpcIndex(0), 0, &mut back);
        let mut expected = pattern.clone();
        expected[3..5].copy_from_slice(&[0xAA, 0xBB]);
        expected[13..20].copy_from_slice(&[0xCC; 7]);
        assert_eq!(back.to_vec(), expected);
        let mut middle = [0u8; 5];
        epc.read(EpcIndex(0), 11, &mut middle);
        assert_eq!(middle.to_vec(), expected[11..16].to_vec());
    }

    #[test]
    fn lent_bytes_are_the_stored_ones_and_unwritten_pages_lend_zeros_without_allocating() {
        let epc = SparseEpc::new(2048);
        let mut lent = Vec::new();
        epc.lend(EpcIndex(7), 0, PAGE_SIZE, &mut |bytes| lent = bytes.to_vec());
        assert_eq!(lent, vec![0; PAGE_SIZE]);
        assert_eq!(epc.allocated_bytes(), 0);
        epc.write(EpcIndex(7), 250, &[9; 12]);
        epc.lend(EpcIndex(7), 256, 8, &mut |bytes| lent = bytes.to_vec());
        assert_eq!(lent, [9, 9, 9, 9, 9, 9, 0, 0]);
    }

    #[test]
    fn racing_writers_of_one_page_never_tear_each_others_copies() {
        let epc = SparseEpc::new(1);
        std::thread::scope(|scope| {
            for value in [0x11u8, 0x22] {
                let epc = &epc;
                scope.spawn(move || (0..2000).for_each(|_| epc.write(EpcIndex(0), 0, &[value; PAGE_SIZE])));
            }
            for _ in 0..2000 {
                epc.lend(EpcIndex(0), 0, PAGE_SIZE, &mut |bytes| {
                    assert!(bytes.iter().all(|&b| b == bytes[0]), "a torn page");
                });
            }
        });
    }
}
