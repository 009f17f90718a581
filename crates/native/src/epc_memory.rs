//! The EPC as host memory.
//!
//! An EPC page that holds an enclave page lives in its enclave's *view*: a memfd as large
//! as ELRANGE in which the page at linear address `A` sits at file offset `A - base`. The
//! enclave's host mapping is then one shared mapping of the view over the whole range,
//! split only where protections differ (DESIGN.md), and giving natively running code a
//! page is one `mprotect` — not an `mmap` of some EPC page at that address, which cost
//! twice as much and left one host mapping per page. Pages that hold no enclave page (free
//! pages, SECS, VA) live in the pool, one more memfd indexed by EPC page.
//!
//! The processor model tells the storage where a page goes ([`EpcMemory::bind`]) before
//! EADD, EAUG or ELDU writes it, and when it dies ([`EpcMemory::unbind`]). A view lives
//! while any EPC page is bound to it. The model reads and writes every page through the
//! emulator's own read-write aliases of these memfds (the hardware's physical view).

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use libc::c_int;
use parking_lot::Mutex;
use rustc_hash::FxHashMap;
use sgxemu_arch::PAGE_SIZE;
use sgxemu_cpu::{EnclaveSpan, EpcIndex, EpcMemory};

use crate::sys;

const PAGE: u64 = PAGE_SIZE as u64;

/// Pages per populated chunk of the pool (2 MiB: the EPC is used densely).
const POOL_CHUNK_PAGES: u64 = 512;
/// Pages per populated chunk of a view (64 KiB: enclaves use their range sparsely — code,
/// heap, a stack per thread — so the memory committed ahead stays small).
const VIEW_CHUNK_PAGES: u64 = 16;

/// A memfd and the emulator's read-write alias of all of it.
#[derive(Debug)]
struct Backing {
    fd: c_int,
    alias: u64,
    pages: u64,
    chunk_pages: u64,
    /// One bit per chunk already populated. A chunk is populated with one
    /// `MADV_POPULATE_WRITE` the first time a page of it is written, instead of taking a
    /// host page fault on each of its pages (building a large enclave writes every page
    /// once, and those faults were a fifth of the time).
    populated: Box<[AtomicU64]>,
}

impl Backing {
    fn new(name: &std::ffi::CStr, pages: u64, chunk_pages: u64) -> io::Result<Self> {
        let size = pages * PAGE;
        let fd = sys::memfd(name, size)?;
        let alias = match sys::mmap(0, size, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, fd, 0) {
            Ok(a) => a,
            Err(e) => {
                let _ = sys::close(fd);
                return Err(e);
            }
        };
        // Failed assertions abort(): a core dump must not contain enclave memory (the kernel
        // marks enclave VMAs VM_DONTDUMP too).
        let _ = sys::madvise(alias, size, libc::MADV_DONTDUMP);
        let chunks = pages.div_ceil(chunk_pages);
        let populated = (0..chunks.div_ceil(64)).map(|_| AtomicU64::new(0)).collect();
        Ok(Backing { fd, alias, pages, chunk_pages, populated })
    }

    /// The alias address of page `page`.
    fn page_address(&self, page: u64) -> u64 {
        assert!(page < self.pages, "EPC storage page out of range");
        self.alias + page * PAGE
    }

    /// Before the first write into `page`'s chunk: populate the whole chunk at once. (Best
    /// effort: without MADV_POPULATE_WRITE, before Linux 5.14, the pages fault in one by one.)
    fn populate_chunk_of(&self, page: u64) {
        let chunk = page / self.chunk_pages;
        let (word, bit) = (&self.populated[(chunk / 64) as usize], 1u64 << (chunk % 64));
        if word.load(Ordering::Relaxed) & bit != 0 || word.fetch_or(bit, Ordering::Relaxed) & bit != 0 {
            return;
        }
        let start = chunk * self.chunk_pages;
        let len = self.chunk_pages.min(self.pages - start) * PAGE;
        let _ = sys::madvise(self.alias + start * PAGE, len, libc::MADV_POPULATE_WRITE);
    }
}

impl Backing {
    /// Returns the page at byte `offset` to the host (it reads as zero afterwards).
    fn discard(&self, offset: u64) {
        // SAFETY: fallocate on our own memfd; punching a hole only frees that page's memory.
        let _ = unsafe {
            libc::fallocate(
                self.fd,
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                offset as libc::off_t,
                PAGE as libc::off_t,
            )
        };
    }
}

impl Drop for Backing {
    fn drop(&mut self) {
        let _ = sys::munmap(self.alias, self.pages * PAGE);
        let _ = sys::close(self.fd);
    }
}

/// One enclave's view: where its resident pages live, at file offset = address − base.
#[derive(Debug)]
pub struct View {
    backing: Backing,
    base: u64,
    /// EPC pages bound to this view.
    bound: AtomicU64,
}

impl View {
    /// The memfd to map at the enclave's addresses (offset = address − [`View::base`]).
    pub fn fd(&self) -> c_int {
        self.backing.fd
    }

    /// The enclave's ELRANGE base.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// The enclave's ELRANGE size.
    pub fn size(&self) -> u64 {
        self.backing.pages * PAGE
    }
}

/// Where a page's bytes are now: in the pool (0) or at this alias address of a view.
const IN_POOL: u64 = 0;

/// EPC storage in memfds (sparse: untouched chunks cost nothing).
#[derive(Debug)]
pub struct MemfdEpc {
    pool: Backing,
    /// Per EPC page: [`IN_POOL`] or the alias address of its bytes in its enclave's view.
    location: Box<[AtomicU64]>,
    /// Per EPC page: the eid of the view it is bound to (0: none).
    owner: Box<[AtomicU64]>,
    views: Mutex<FxHashMap<u64, Arc<View>>>,
}

impl MemfdEpc {
    /// Storage for `pages` EPC pages.
    pub fn new(pages: u64) -> io::Result<Self> {
        let pool = Backing::new(c"sgxemu-epc", pages, POOL_CHUNK_PAGES)?;
        let slots = || (0..pages).map(|_| AtomicU64::new(IN_POOL)).collect();
        Ok(MemfdEpc { pool, location: slots(), owner: slots(), views: Mutex::new(FxHashMap::default()) })
    }

    /// The view `page` is bound to (every page that holds an enclave page is).
    pub fn view_of(&self, page: EpcIndex) -> Option<Arc<View>> {
        let eid = self.owner[page.as_usize()].load(Ordering::Acquire);
        if eid == 0 {
            return None;
        }
        self.views.lock().get(&eid).cloned()
    }

    /// Number of live views (tests: views go away with their last page).
    pub fn views(&self) -> usize {
        self.views.lock().len()
    }

    /// The alias address of `len` bytes of `page` at `offset`.
    fn address(&self, page: EpcIndex, offset: usize, len: usize) -> u64 {
        assert!(offset + len <= PAGE_SIZE, "EPC access out of range");
        match self.location[page.as_usize()].load(Ordering::Acquire) {
            IN_POOL => self.pool.page_address(u64::from(page.0)) + offset as u64,
            at => at + offset as u64,
        }
    }

    /// Before a write: populate the pool chunk of `page` if that is where it lives (a view's
    /// chunk was populated when the page was bound).
    fn prepare_write(&self, page: EpcIndex) {
        if self.location[page.as_usize()].load(Ordering::Relaxed) == IN_POOL {
            self.pool.populate_chunk_of(u64::from(page.0));
        }
    }

    /// `owner`'s view (created on its first page), counting one more page bound to it. Under
    /// the views lock, like the count's decrement, so a view never goes while a page joins.
    fn attach(&self, owner: EnclaveSpan) -> io::Result<Arc<View>> {
        let mut views = self.views.lock();
        let view = match views.get(&owner.eid) {
            Some(view) => view.clone(),
            None => {
                let backing = Backing::new(c"sgxemu-enclave", owner.size / PAGE, VIEW_CHUNK_PAGES)?;
                let view = Arc::new(View { backing, base: owner.base, bound: AtomicU64::new(0) });
                views.insert(owner.eid, view.clone());
                view
            }
        };
        view.bound.fetch_add(1, Ordering::Relaxed);
        Ok(view)
    }
}

impl EpcMemory for MemfdEpc {
    fn pages(&self) -> u64 {
        self.pool.pages
    }

    fn read(&self, page: EpcIndex, offset: usize, buf: &mut [u8]) {
        let src = self.address(page, offset, buf.len()) as *const u8;
        // SAFETY: `src..src + len` lies inside one page of an alias mapping: the pool's lives
        // as long as `self`, a view's as long as a page is bound to it (and this one is, or
        // its location would be the pool). Enclave code may write the same bytes
        // concurrently through its own mapping, as another CPU may on hardware: the copy
        // then sees some mix of old and new bytes, never memory outside the page.
        unsafe { std::ptr::copy_nonoverlapping(src, buf.as_mut_ptr(), buf.len()) };
    }

    fn write(&self, page: EpcIndex, offset: usize, data: &[u8]) {
        self.prepare_write(page);
        let dst = self.address(page, offset, data.len()) as *mut u8;
        // SAFETY: as in `read`; `data` is a distinct Rust buffer, so no overlap.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), dst, data.len()) };
    }

    fn zero(&self, page: EpcIndex) {
        self.prepare_write(page);
        let dst = self.address(page, 0, PAGE_SIZE) as *mut u8;
        // SAFETY: one whole page of an alias mapping, as in `read`.
        unsafe { std::ptr::write_bytes(dst, 0, PAGE_SIZE) };
    }

    fn bind(&self, page: EpcIndex, owner: EnclaveSpan, linaddr: u64) {
        self.unbind(page);
        let offset = linaddr.wrapping_sub(owner.base);
        if offset >= owner.size {
            // Not an address of this enclave (the model checked it is): stay in the pool.
            return;
        }
        let Ok(view) = self.attach(owner) else {
            // No memory for a view: the page stays in the pool, and mapping it at its
            // address will fail with ENOMEM, as the kernel's would.
            return;
        };
        view.backing.populate_chunk_of(offset / PAGE);
        self.owner[page.as_usize()].store(owner.eid, Ordering::Release);
        self.location[page.as_usize()].store(view.backing.alias + offset, Ordering::Release);
    }

    fn unbind(&self, page: EpcIndex) {
        let eid = self.owner[page.as_usize()].swap(0, Ordering::AcqRel);
        if eid == 0 {
            return;
        }
        let at = self.location[page.as_usize()].swap(IN_POOL, Ordering::AcqRel);
        let mut views = self.views.lock();
        let Some(view) = views.get(&eid) else { return };
        // The page's memory goes back to the host (EREMOVE, EWB: its bytes are dead), so a
        // view holds only resident pages, as the EPC does.
        view.backing.discard(at - view.backing.alias);
        if view.bound.fetch_sub(1, Ordering::Relaxed) == 1 {
            // The enclave's last resident page: its memory goes (a mapping of it may keep the
            // file until that is unmapped or replaced).
            views.remove(&eid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: u64 = 0x7000_0000_0000;
    const SIZE: u64 = 1 << 20;

    fn span(eid: u64) -> EnclaveSpan {
        EnclaveSpan { eid, base: BASE + eid * SIZE, size: SIZE }
    }

    /// The bytes at `offset` of `view`'s file, read with the kernel (not the alias).
    fn file_bytes(view: &View, offset: u64) -> [u8; 8] {
        let mut bytes = [0u8; 8];
        // SAFETY: pread into a local buffer from the view's own descriptor.
        let n = unsafe { libc::pread(view.fd(), bytes.as_mut_ptr().cast(), 8, offset as libc::off_t) };
        assert_eq!(n, 8);
        bytes
    }

    #[test]
    fn a_bound_page_lives_in_its_enclave_s_view_at_its_address() {
        let epc = MemfdEpc::new(64).expect("EPC storage");
        let page = EpcIndex(5);
        epc.write(page, 0, b"in pool!");
        assert!(epc.view_of(page).is_none());
        epc.bind(page, span(1), span(1).base + 3 * PAGE);
        epc.write(page, 8, b"in view!");
        let view = epc.view_of(page).expect("bound");
        assert_eq!((view.base(), view.size()), (span(1).base, SIZE));
        assert_eq!(&file_bytes(&view, 3 * PAGE + 8), b"in view!");
        let mut back = [0u8; 8];
        epc.read(page, 8, &mut back);
        assert_eq!(&back, b"in view!");
        // Other pages stay in the pool.
        epc.read(EpcIndex(6), 0, &mut back);
        assert_eq!(back, [0; 8]);
    }

    #[test]
    fn a_view_lives_while_a_page_is_bound_and_dead_pages_are_discarded() {
        let epc = MemfdEpc::new(64).expect("EPC storage");
        let (a, b, other) = (EpcIndex(1), EpcIndex(2), EpcIndex(3));
        epc.bind(a, span(1), span(1).base);
        epc.bind(b, span(1), span(1).base + PAGE);
        epc.bind(other, span(2), span(2).base);
        assert_eq!(epc.views(), 2);
        epc.write(a, 0, &[0xAB; 8]);
        let view = epc.view_of(b).expect("bound");
        assert_eq!(file_bytes(&view, 0), [0xAB; 8]);
        epc.unbind(a);
        assert_eq!(file_bytes(&view, 0), [0; 8], "EREMOVE/EWB return the page's memory");
        assert_eq!(epc.views(), 2, "one page of enclave 1 is still resident");
        epc.unbind(b);
        epc.unbind(b); // twice is harmless
        assert_eq!(epc.views(), 1);
        epc.unbind(other);
        assert_eq!(epc.views(), 0);
    }

    #[test]
    fn binding_again_moves_the_page_and_an_address_outside_elrange_keeps_it_in_the_pool() {
        let epc = MemfdEpc::new(64).expect("EPC storage");
        let page = EpcIndex(9);
        epc.bind(page, span(1), span(1).base);
        epc.bind(page, span(2), span(2).base + PAGE);
        assert_eq!(epc.views(), 1, "the first view went with its only page");
        assert_eq!(epc.view_of(page).expect("bound").base(), span(2).base);
        epc.bind(page, span(3), span(3).base + SIZE);
        assert!(epc.view_of(page).is_none());
        assert_eq!(epc.views(), 0);
    }
}
