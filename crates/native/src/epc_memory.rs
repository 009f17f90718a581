//! The EPC as host memory: one memfd, mapped once read-write as the emulator's alias (the
//! hardware's physical view), and page by page at enclave addresses for natively running
//! enclave code. The processor model reads and writes pages through the alias only.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};

use libc::c_int;
use sgxemu_arch::PAGE_SIZE;
use sgxemu_cpu::{EpcIndex, EpcMemory};

use crate::sys;

/// Pages per populated chunk (2 MiB).
const CHUNK_PAGES: u64 = 512;

/// EPC storage in a memfd (sparse: untouched chunks cost nothing).
#[derive(Debug)]
pub struct MemfdEpc {
    /// The memfd, at a number far from the program's (see [`crate::own_fds`]); it moves
    /// when the program `dup2`s onto it.
    fd: AtomicI32,
    chunks: Arc<Chunks>,
    /// The thread that populates the chunk after the one being written, so that giving a
    /// page to an enclave (EAUG, ELDU, EADD) does not wait for the host to allocate and
    /// zero memory — EPC is memory that exists already. `None` if it could not start (or in
    /// a fork child): chunks are then populated on demand only.
    ahead: Option<std::thread::Thread>,
}

/// The alias mapping and which of its 2 MiB chunks are populated.
#[derive(Debug)]
struct Chunks {
    alias: u64,
    pages: u64,
    /// One bit per chunk already populated (or being populated). A chunk is populated with
    /// one `MADV_POPULATE_WRITE`, instead of taking a host page fault on each of its 512
    /// pages (building a large enclave writes every page once, and those faults were a
    /// fifth of the time).
    populated: Box<[AtomicU64]>,
    /// The chunk the populating thread should do next, plus one (0: none).
    requested: AtomicU64,
}

impl Chunks {
    fn count(&self) -> u64 {
        self.pages.div_ceil(CHUNK_PAGES)
    }

    fn is_populated(&self, chunk: u64) -> bool {
        self.populated[(chunk / 64) as usize].load(Ordering::Relaxed) & (1 << (chunk % 64)) != 0
    }

    /// Populates `chunk` unless someone claimed it already (best effort: without
    /// MADV_POPULATE_WRITE, before Linux 5.14, its pages fault in one by one).
    fn populate(&self, chunk: u64) {
        let (word, bit) = (&self.populated[(chunk / 64) as usize], 1u64 << (chunk % 64));
        if word.load(Ordering::Relaxed) & bit != 0 || word.fetch_or(bit, Ordering::Relaxed) & bit != 0 {
            return;
        }
        let start = chunk * CHUNK_PAGES;
        let len = CHUNK_PAGES.min(self.pages - start) * PAGE_SIZE as u64;
        let _ = sys::madvise(self.alias + start * PAGE_SIZE as u64, len, libc::MADV_POPULATE_WRITE);
    }

    /// The populating thread's loop: the latest requested chunk each time it is woken.
    fn populate_requested(&self) -> ! {
        loop {
            std::thread::park();
            let wanted = self.requested.swap(0, Ordering::AcqRel);
            if wanted != 0 {
                self.populate(wanted - 1);
            }
        }
    }
}

impl MemfdEpc {
    /// A memfd of `pages` pages and its alias mapping.
    pub fn new(pages: u64) -> io::Result<Self> {
        let size = pages * PAGE_SIZE as u64;
        let fd = sys::memfd(c"sgxemu-epc", size)?;
        // Out of the program's way; where no number is free up there (a tiny descriptor
        // limit, all used), it stays where it is, protected the same (see `own_fds`).
        let fd = crate::own_fds::move_high(fd).unwrap_or(fd);
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
        let count = pages.div_ceil(CHUNK_PAGES);
        let populated = (0..count.div_ceil(64)).map(|_| AtomicU64::new(0)).collect();
        let chunks = Arc::new(Chunks { alias, pages, populated, requested: AtomicU64::new(0) });
        let ahead = Self::start_populating_ahead(chunks.clone());
        Ok(MemfdEpc { fd: AtomicI32::new(fd), chunks, ahead })
    }

    /// The populating thread, with every signal blocked (the program's signals are for its
    /// own threads, and the emulator's IPIs for threads that run enclave code).
    fn start_populating_ahead(chunks: Arc<Chunks>) -> Option<std::thread::Thread> {
        let spawn = || {
            std::thread::Builder::new()
                .name("sgxemu-epc".into())
                .spawn(move || chunks.populate_requested())
                .ok()
                .map(|handle| handle.thread().clone())
        };
        // SAFETY: sigfillset/pthread_sigmask on locals and the calling thread only; the new
        // thread inherits the full mask, then this thread's mask is restored.
        unsafe {
            let (mut all, mut old): (libc::sigset_t, libc::sigset_t) = (std::mem::zeroed(), std::mem::zeroed());
            libc::sigfillset(&mut all);
            libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
            let thread = spawn();
            libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
            thread
        }
    }

    /// The memfd enclave mappings are made from (offset = page index × 4096).
    pub fn fd(&self) -> c_int {
        self.fd.load(Ordering::Acquire)
    }

    /// Moves the memfd to another free number far from the program's (the program
    /// `dup2`s onto this one). The caller keeps every mapping from the memfd waiting
    /// meanwhile (see `Space::move_epc_fd`).
    pub fn move_fd(&self) -> io::Result<()> {
        let old = self.fd();
        // Copy first, then close: the memfd is never without a descriptor.
        let new = crate::own_fds::move_high(old)?;
        self.fd.store(new, Ordering::Release);
        Ok(())
    }

    /// Before a write into `page`: its chunk populated (now, if the thread ahead has not
    /// done it yet), and the next chunk requested from the thread ahead — the EPC allocator
    /// hands out pages in order, so that is where the next writes will go.
    fn populate_chunk_of(&self, page: EpcIndex) {
        let chunk = u64::from(page.0) / CHUNK_PAGES;
        self.chunks.populate(chunk);
        let next = chunk + 1;
        if next < self.chunks.count()
            && !self.chunks.is_populated(next)
            && let Some(thread) = &self.ahead
            && self.chunks.requested.swap(next + 1, Ordering::AcqRel) != next + 1
        {
            // One futex wake per chunk, lock-free: safe in the signal handlers EAUG runs in.
            thread.unpark();
        }
    }

    fn ptr(&self, page: EpcIndex, offset: usize, len: usize) -> *mut u8 {
        assert!(u64::from(page.0) < self.chunks.pages && offset + len <= PAGE_SIZE, "EPC access out of range");
        (self.chunks.alias + u64::from(page.0) * PAGE_SIZE as u64 + offset as u64) as *mut u8
    }
}

impl EpcMemory for MemfdEpc {
    fn pages(&self) -> u64 {
        self.chunks.pages
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

    fn prefetch(&self, page: EpcIndex, offset: usize, len: usize) {
        crate::prefetch::lines(self.ptr(page, offset, len) as u64, len);
    }

    fn lend(&self, page: EpcIndex, offset: usize, len: usize, f: &mut dyn FnMut(&[u8])) {
        let src = self.ptr(page, offset, len);
        // SAFETY: `src..src + len` lies inside the alias mapping, which lives as long as
        // `self` and is never unmapped; the slice does not outlive this call. The bytes
        // are only read, as in `read`: enclave code writing them at the same moment (an
        // initialized enclave's, never the case for EEXTEND, the leaf that lends) would
        // make the reader see some mix of old and new bytes, as another CPU would.
        f(unsafe { std::slice::from_raw_parts(src, len) });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writing_a_chunk_has_the_next_one_populated_ahead_and_nothing_further() {
        let epc = MemfdEpc::new(4 * CHUNK_PAGES).expect("EPC storage");
        assert!(!epc.chunks.is_populated(0));
        epc.write(EpcIndex(3), 0, &[0xAB; 8]);
        assert!(epc.chunks.is_populated(0), "the written chunk, on demand");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !epc.chunks.is_populated(1) {
            assert!(std::time::Instant::now() < deadline, "the next chunk was never populated");
            std::thread::yield_now();
        }
        assert!(!epc.chunks.is_populated(2), "only one chunk ahead");
        let mut back = [0u8; 8];
        epc.read(EpcIndex(3), 0, &mut back);
        assert_eq!(back, [0xAB; 8]);
        // The last chunk has no next one to ask for.
        epc.zero(EpcIndex(4 * CHUNK_PAGES as u32 - 1));
        assert!(epc.chunks.is_populated(3));
    }
}
