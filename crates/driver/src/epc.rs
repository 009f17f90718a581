//! The EPC page allocator and the reclaimer's active list (the kernel's `main.c`):
//! free pages, pages reclaimable in LRU order, and who owns each.

use std::collections::BTreeMap;

use rustc_hash::FxHashMap;
use std::sync::Weak;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;
use sgxemu_cpu::EpcIndex;

use crate::encl::Encl;

/// Reclaim this many pages per batch (SGX_NR_TO_SCAN).
pub const NR_TO_SCAN: usize = 16;
/// Wake the reclaimer below this many free pages (SGX_NR_LOW_PAGES).
pub const NR_LOW_PAGES: usize = 32;
/// The reclaimer stops once this many pages are free (SGX_NR_HIGH_PAGES).
pub const NR_HIGH_PAGES: usize = 64;

/// Who a reclaimable EPC page belongs to: an enclave page at a linear address, or an
/// enclave's SECS (`addr` = None).
#[derive(Clone, Debug)]
pub(crate) struct Owner {
    pub(crate) encl: Weak<Encl>,
    pub(crate) addr: Option<u64>,
}

/// The active (reclaimable) list in LRU order, with the "tracked" flag of each page.
#[derive(Debug, Default)]
struct ActiveList {
    /// Sequence number → page; the smallest key is the head (oldest).
    order: BTreeMap<u64, EpcIndex>,
    /// Tracked pages: `Some(seq)` while linked, `None` while the reclaimer holds it.
    tracked: FxHashMap<EpcIndex, (Option<u64>, Owner)>,
    next_seq: u64,
}

/// Outcome of taking a page off the active list for the reclaimer.
pub(crate) struct Isolated {
    pub(crate) page: EpcIndex,
    pub(crate) owner: Owner,
}

/// The EPC allocator shared by all enclaves.
#[derive(Debug)]
pub(crate) struct EpcPool {
    free: Mutex<Vec<EpcIndex>>,
    nr_free: AtomicUsize,
    active: Mutex<ActiveList>,
}

impl EpcPool {
    /// A pool of every page of an `pages`-page EPC (sanitized: all free).
    pub(crate) fn new(pages: u64) -> Self {
        // Hand out low indices first (the free list is a stack).
        let free: Vec<EpcIndex> = (0..pages as u32).rev().map(EpcIndex).collect();
        EpcPool {
            nr_free: AtomicUsize::new(free.len()),
            free: Mutex::new(free),
            active: Mutex::new(ActiveList::default()),
        }
    }

    /// Pops a free page, if any.
    pub(crate) fn take_free(&self) -> Option<EpcIndex> {
        let page = self.free.lock().pop()?;
        self.nr_free.fetch_sub(1, Ordering::Relaxed);
        Some(page)
    }

    /// Returns a page to the free list (after EREMOVE, or after EWB invalidated it).
    pub(crate) fn put_free(&self, page: EpcIndex) {
        self.free.lock().push(page);
        self.nr_free.fetch_add(1, Ordering::Relaxed);
    }

    /// Number of free pages.
    pub(crate) fn nr_free(&self) -> usize {
        self.nr_free.load(Ordering::Relaxed)
    }

    /// True if some page could be reclaimed.
    pub(crate) fn has_reclaimable(&self) -> bool {
        !self.active.lock().order.is_empty()
    }

    /// True while the reclaimer holds isolated pages (they come free or go back soon).
    pub(crate) fn reclaim_in_flight(&self) -> bool {
        let active = self.active.lock();
        active.tracked.len() > active.order.len()
    }

    /// Below the low watermark with something reclaimable (`sgx_should_reclaim(LOW)`).
    pub(crate) fn should_reclaim(&self, watermark: usize) -> bool {
        self.nr_free() < watermark && self.has_reclaimable()
    }

    /// `sgx_mark_page_reclaimable`: appends the page at the tail of the active list.
    pub(crate) fn mark_reclaimable(&self, page: EpcIndex, owner: Owner) {
        let mut active = self.active.lock();
        let seq = active.next_seq;
        active.next_seq += 1;
        active.order.insert(seq, page);
        active.tracked.insert(page, (Some(seq), owner));
    }

    /// `sgx_unmark_page_reclaimable`: EBUSY (as `Err(())`) if the reclaimer holds the page.
    pub(crate) fn unmark_reclaimable(&self, page: EpcIndex) -> Result<(), ()> {
        let mut active = self.active.lock();
        match active.tracked.get(&page) {
            None => Ok(()),
            Some((None, _)) => Err(()),
            Some(&(Some(seq), _)) => {
                active.order.remove(&seq);
                active.tracked.remove(&page);
                Ok(())
            }
        }
    }

    /// Takes up to `n` pages off the head of the active list; they stay tracked (the
    /// "isolated" state the reclaimer owns).
    pub(crate) fn isolate(&self, n: usize) -> Vec<Isolated> {
        let mut active = self.active.lock();
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let Some((_, page)) = active.order.pop_first() else { break };
            if let Some(entry) = active.tracked.get_mut(&page) {
                entry.0 = None;
                out.push(Isolated { page, owner: entry.1.clone() });
            }
        }
        out
    }

    /// Puts an isolated page back at the tail (young, or could not be written out).
    pub(crate) fn putback(&self, page: EpcIndex) {
        let mut active = self.active.lock();
        let seq = active.next_seq;
        active.next_seq += 1;
        if let Some(entry) = active.tracked.get_mut(&page) {
            entry.0 = Some(seq);
            active.order.insert(seq, page);
        }
    }

    /// Forgets an isolated page (written out, or its enclave is gone).
    pub(crate) fn untrack(&self, page: EpcIndex) {
        self.active.lock().tracked.remove(&page);
    }

    /// Whether `page` is tracked (on the list or held by the reclaimer).
    pub(crate) fn is_tracked(&self, page: EpcIndex) -> bool {
        self.active.lock().tracked.contains_key(&page)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner() -> Owner {
        Owner { encl: Weak::new(), addr: Some(0x1000) }
    }

    #[test]
    fn allocation_is_lifo_and_counted() {
        let pool = EpcPool::new(4);
        assert_eq!(pool.nr_free(), 4);
        assert_eq!(pool.take_free(), Some(EpcIndex(0)));
        assert_eq!(pool.take_free(), Some(EpcIndex(1)));
        pool.put_free(EpcIndex(0));
        assert_eq!(pool.take_free(), Some(EpcIndex(0)));
        assert_eq!(pool.nr_free(), 2);
    }

    #[test]
    fn active_list_is_fifo_and_unmark_respects_isolation() {
        let pool = EpcPool::new(8);
        for i in 0..4 {
            pool.mark_reclaimable(EpcIndex(i), owner());
        }
        let batch = pool.isolate(2);
        assert_eq!(batch.iter().map(|i| i.page).collect::<Vec<_>>(), vec![EpcIndex(0), EpcIndex(1)]);
        assert_eq!(pool.unmark_reclaimable(EpcIndex(0)), Err(()), "reclaimer holds it");
        assert_eq!(pool.unmark_reclaimable(EpcIndex(2)), Ok(()));
        pool.putback(EpcIndex(0));
        pool.untrack(EpcIndex(1));
        let next = pool.isolate(4);
        assert_eq!(next.iter().map(|i| i.page).collect::<Vec<_>>(), vec![EpcIndex(3), EpcIndex(0)]);
        assert_eq!(pool.unmark_reclaimable(EpcIndex(3)), Err(()), "isolated again");
        assert!(!pool.is_tracked(EpcIndex(1)));
    }
}
