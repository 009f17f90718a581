//! The EPC as host memory: one memfd, mapped once read-write as the emulator's alias (the
//! hardware's physical view), and page by page at enclave addresses for natively running
//! enclave code. The processor model reads and writes pages through the alias only.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};

use libc::c_int;
use sgxemu_arch::PAGE_SIZE;
use sgxemu_cpu::{EpcIndex, EpcMemory};

use crate::sys;

/// Pages per populated chunk (2 MiB).
const CHUNK_PAGES: u64 = 512;

/// EPC storage in a memfd (sparse: untouched chunks cost nothing).
#[derive(Debug)]
pub struct MemfdEpc {
    fd: c_int,
    alias: u64,
    pages: u64,
    /// One bit per 2 MiB chunk of the alias already populated. A chunk is populated with one
    /// `MADV_POPULATE_WRITE` the first time a page of it is written, instead of taking a
    /// host page fault on each of its 512 pages (building a large enclave writes every page
    /// once, and those faults were a fifth of the time).
    populated: Box<[AtomicU64]>,
}

impl MemfdEpc {
    /// A memfd of `pages` pages and its alias mapping.
    pub fn new(pages: u64) -> io::Result<Self> {
        let size = pages * PAGE_SIZE as u64;
        let fd = sys::memfd(c"sgxemu-epc", size)?;
        let alias = match sys::mmap(0, size, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, fd, 0) {
            Ok(a) => a,
            Err(e) => {
                let _ = sys::close(fd);
                return Err(e);
            }
        };
        // Failed assertions abort(): a core dump must not contain the whole EPC (the kernel
        // marks enclave VMAs VM_DONTDUMP too).
        let _ = sys::madvise(alias, size, libc::MADV_DONTDUMP);
        let chunks = pages.div_ceil(CHUNK_PAGES);
        let populated = (0..chunks.div_ceil(64)).map(|_| AtomicU64::new(0)).collect();
        Ok(MemfdEpc { fd, alias, pages, populated })
    }

    /// The memfd enclave mappings are made from (offset = page index × 4096).
    pub fn fd(&self) -> c_int {
        self.fd
    }

    /// Before the first write into `page`'s chunk: populate the whole chunk at once. (Best
    /// effort: without MADV_POPULATE_WRITE, before Linux 5.14, the pages fault in one by one.)
    fn populate_chunk_of(&self, page: EpcIndex) {
        let chunk = u64::from(page.0) / CHUNK_PAGES;
        let (word, bit) = (&self.populated[(chunk / 64) as usize], 1u64 << (chunk % 64));
        if word.load(Ordering::Relaxed) & bit != 0 || word.fetch_or(bit, Ordering::Relaxed) & bit != 0 {
            return;
        }
        let start = chunk * CHUNK_PAGES;
        let len = CHUNK_PAGES.min(self.pages - start) * PAGE_SIZE as u64;
        let _ = sys::madvise(self.alias + start * PAGE_SIZE as u64, len, libc::MADV_POPULATE_WRITE);
    }

    fn ptr(&self, page: EpcIndex, offset: usize, len: usize) -> *mut u8 {
        assert!(u64::from(page.0) < self.pages && offset + len <= PAGE_SIZE, "EPC access out of range");
        (self.alias + u64::from(page.0) * PAGE_SIZE as u64 + offset as u64) as *mut u8
    }
}

impl EpcMemory for MemfdEpc {
    fn pages(&self) -> u64 {
        self.pages
    }

    fn read(&self, page: EpcIndex, offset: usize, buf: &mut [u8]) {
        let src = self.ptr(page, offset, buf.len());
        // SAFETY: `src..src + len` lies inside the alias mapping, which lives as long as
        // `self` and is never unmapped. Enclave code may write the same bytes concurrently
        // through its own mapping, as another CPU may on hardware: the copy then sees some
        // mix of old and new bytes, never memory outside the page.
        unsafe { std::ptr::copy_nonoverlapping(src, buf.as_mut_ptr(), buf.len()) };
    }

    fn write(&self, page: EpcIndex, offset: usize, data: &[u8]) {
        let dst = self.ptr(page, offset, data.len());
        self.populate_chunk_of(page);
        // SAFETY: as in `read`; `data` is a distinct Rust buffer, so no overlap.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), dst, data.len()) };
    }

    fn zero(&self, page: EpcIndex) {
        let dst = self.ptr(page, 0, PAGE_SIZE);
        self.populate_chunk_of(page);
        // SAFETY: one whole page of the alias mapping.
        unsafe { std::ptr::write_bytes(dst, 0, PAGE_SIZE) };
    }
}
