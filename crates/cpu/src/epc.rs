//! EPC page storage: the bytes of every EPC page, reached by page index.
//!
//! The processor only touches page contents through [`EpcMemory`], so the same model runs
//! over the lazily allocated [`SparseEpc`] below (tests, the in-process platform) and over
//! host memory that natively running enclave code also maps (the native engine).

use std::sync::OnceLock;

use sgxemu_arch::PAGE_SIZE;
use std::sync::atomic::{AtomicU64, Ordering};

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
}

/// Pages per lazily allocated chunk (2 MiB of EPC).
const CHUNK_PAGES: usize = 512;
const WORDS: usize = PAGE_SIZE / 8;

/// One page as 512 atomic words: accesses are lock-free and byte-exact like RAM (racing
/// accessors see each other's bytes, never a torn lock), and aligned copies compile to
/// plain loads and stores.
type Page = [AtomicU64; WORDS];

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
            .get_or_init(|| (0..CHUNK_PAGES).map(|_| std::array::from_fn(|_| AtomicU64::new(0))).collect());
        &chunk[page.as_usize() % CHUNK_PAGES]
    }

    /// Bytes of memory currently allocated for page contents.
    pub fn allocated_bytes(&self) -> usize {
        self.chunks.iter().filter(|c| c.get().is_some()).count() * CHUNK_PAGES * PAGE_SIZE
    }
}

/// Mask selecting bytes `[from, to)` of a little-endian word.
fn byte_mask(from: usize, to: usize) -> u64 {
    let bits = |n: usize| if n >= 8 { u64::MAX } else { (1u64 << (8 * n)) - 1 };
    bits(to) & !bits(from)
}

impl EpcMemory for SparseEpc {
    fn pages(&self) -> u64 {
        self.pages
    }

    fn read(&self, page: EpcIndex, offset: usize, buf: &mut [u8]) {
        let Some(words) = self.existing(page) else {
            buf.fill(0);
            return;
        };
        if offset.is_multiple_of(8) && buf.len().is_multiple_of(8) {
            // Whole words: plain loads, no per-byte work.
            for (chunk, word) in buf.chunks_exact_mut(8).zip(&words[offset / 8..]) {
                chunk.copy_from_slice(&word.load(Ordering::Relaxed).to_le_bytes());
            }
            return;
        }
        let mut at = offset;
        let mut out = buf;
        while !out.is_empty() {
            let (word, within) = (at / 8, at % 8);
            let n = (8 - within).min(out.len());
            let bytes = words[word].load(Ordering::Relaxed).to_le_bytes();
            out[..n].copy_from_slice(&bytes[within..within + n]);
            out = &mut out[n..];
            at += n;
        }
    }

    fn write(&self, page: EpcIndex, offset: usize, data: &[u8]) {
        let words = self.page(page);
        if offset.is_multiple_of(8) && data.len().is_multiple_of(8) {
            for (chunk, word) in data.chunks_exact(8).zip(&words[offset / 8..]) {
                word.store(u64::from_le_bytes(chunk.try_into().expect("eight bytes")), Ordering::Relaxed);
            }
            return;
        }
        let mut at = offset;
        let mut rest = data;
        while !rest.is_empty() {
            let (word, within) = (at / 8, at % 8);
            let n = (8 - within).min(rest.len());
            if n == 8 {
                let value = u64::from_le_bytes(rest[..8].try_into().expect("eight bytes"));
                words[word].store(value, Ordering::Relaxed);
            } else {
                // A partial word: replace only its bytes, so racing writers of the
                // neighbouring bytes are not undone (byte-granular, like RAM).
                let mut bytes = [0u8; 8];
                bytes[within..within + n].copy_from_slice(&rest[..n]);
                let mask = byte_mask(within, within + n);
                words[word].fetch_and(!mask, Ordering::Relaxed);
                words[word].fetch_or(u64::from_le_bytes(bytes), Ordering::Relaxed);
            }
            rest = &rest[n..];
            at += n;
        }
    }

    fn zero(&self, page: EpcIndex) {
        if let Some(words) = self.existing(page) {
            words.iter().for_each(|w| w.store(0, Ordering::Relaxed));
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
    fn byte_masks_cover_exactly_the_range() {
        assert_eq!(byte_mask(0, 8), u64::MAX);
        assert_eq!(byte_mask(0, 1), 0xFF);
        assert_eq!(byte_mask(3, 5), 0x00FF_FF00_0000);
    }
}
