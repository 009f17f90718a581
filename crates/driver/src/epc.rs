//! The EPC page allocator and the reclaimer's active list (the kernel's `main.c`):
//! free pages, pages reclaimable in LRU order, and who owns each.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

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

/// Where a page stands with the reclaimer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Tracking {
    /// Not reclaimable (free, pinned, or not yet marked).
    #[default]
    Untracked,
    /// On the active list.
    Linked,
    /// Taken off the list by the reclaimer ("isolated"), still tracked.
    Isolated,
}

/// No page: the end of the list.
const NIL: u32 = u32::MAX;

/// One page's place in the active list.
#[derive(Debug)]
struct Slot {
    prev: u32,
    next: u32,
    tracking: Tracking,
    owner: Option<Owner>,
}

impl Default for Slot {
    fn default() -> Self {
        Slot { prev: NIL, next: NIL, tracking: Tracking::Untracked, owner: None }
    }
}

/// The active (reclaimable) list in LRU order: a doubly linked list threaded through a
/// table indexed by EPC page, so marking, unmarking and isolating are O(1) with no hashing
/// (the SGX2 ioctls do one or two of them per page). The table grows to the highest page
/// ever tracked — pages are handed out from the lowest indices — not to the EPC's size.
#[derive(Debug)]
struct ActiveList {
    slots: Vec<Slot>,
    head: u32,
    tail: u32,
    /// Pages on the list.
    linked: usize,
    /// Pages on the list or isolated.
    tracked: usize,
}

impl Default for ActiveList {
    fn default() -> Self {
        ActiveList { slots: Vec::new(), head: NIL, tail: NIL, linked: 0, tracked: 0 }
    }
}

impl ActiveList {
    fn slot(&mut self, page: EpcIndex) -> &mut Slot {
        let index = page.as_usize();
        if index >= self.slots.len() {
            self.slots.resize_with(index + 1, Slot::default);
        }
        &mut self.slots[index]
    }

    fn tracking(&self, page: EpcIndex) -> Tracking {
        self.slots.get(page.as_usize()).map_or(Tracking::Untracked, |s| s.tracking)
    }

    /// Appends a page that is not on the list at the tail.
    fn link_tail(&mut self, page: EpcIndex) {
        let tail = self.tail;
        let slot = self.slot(page);
        (slot.prev, slot.next, slot.tracking) = (tail, NIL, Tracking::Linked);
        match tail {
            NIL => self.head = page.0,
            t => self.slots[t as usize].next = page.0,
        }
        self.tail = page.0;
        self.linked += 1;
    }

    /// Takes a linked page off the list (it stays tracked).
    fn unlink(&mut self, page: EpcIndex) {
        let slot = &mut self.slots[page.as_usize()];
        let (prev, next) = (slot.prev, slot.next);
        (slot.prev, slot.next, slot.tracking) = (NIL, NIL, Tracking::Isolated);
        match prev {
            NIL => self.head = next,
            p => self.slots[p as usize].next = next,
        }
        match next {
            NIL => self.tail = prev,
            n => self.slots[n as usize].prev = prev,
        }
        self.linked -= 1;
    }

    /// Stops tracking a page (on the list or isolated).
    fn forget(&mut self, page: EpcIndex) {
        match self.tracking(page) {
            Tracking::Untracked => return,
            Tracking::Linked => self.unlink(page),
            Tracking::Isolated => {}
        }
        let slot = &mut self.slots[page.as_usize()];
        (slot.tracking, slot.owner) = (Tracking::Untracked, None);
        self.tracked -= 1;
    }
}

/// Outcome of taking a page off the active list for the reclaimer.
pub(crate) struct Isolated {
    pub(crate) page: EpcIndex,
    /// The owning enclave, referenced from the moment the page left the list: a release
    /// that finds the page isolated leaves it (and the SECS) to the reclaimer, which must
    /// then still reach the enclave. `None` only for an enclave gone before it was
    /// released.
    pub(crate) encl: Option<Arc<Encl>>,
    pub(crate) addr: Option<u64>,
}

/// What [`EpcPool::reclaim_state`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReclaimState {
    /// Pages wait on the active list.
    Reclaimable,
    /// None on the list, but the reclaimer holds some: they come free or go back soon.
    InFlight,
    /// Nothing to reclaim now or soon.
    Exhausted,
}

/// One bit per EPC page: set while the reclaimer tracks it (the kernel's
/// `SGX_EPC_PAGE_RECLAIMER_TRACKED` page flag). Written only under the active list's lock,
/// read without it, as the kernel reads the flag: freeing a page checks it on every free,
/// and taking the list's lock just for that check cost as much as the free itself.
#[derive(Debug)]
struct TrackedBits(Box<[AtomicU64]>);

impl TrackedBits {
    fn new(pages: u64) -> Self {
        TrackedBits((0..pages.div_ceil(64)).map(|_| AtomicU64::new(0)).collect())
    }

    fn word(&self, page: EpcIndex) -> (&AtomicU64, u64) {
        (&self.0[page.as_usize() / 64], 1 << (page.as_usize() % 64))
    }

    fn get(&self, page: EpcIndex) -> bool {
        let (word, bit) = self.word(page);
        word.load(Ordering::Relaxed) & bit != 0
    }

    /// Called with the active list's lock held: writers never race, so a plain load and
    /// store do (no locked read-modify-write), and the lock orders them.
    fn set(&self, page: EpcIndex, tracked: bool) {
        let (word, bit) = self.word(page);
        let old = word.load(Ordering::Relaxed);
        word.store(if tracked { old | bit } else { old & !bit }, Ordering::Relaxed);
    }
}

/// The EPC allocator shared by all enclaves.
#[derive(Debug)]
pub(crate) struct EpcPool {
    free: Mutex<Vec<EpcIndex>>,
    nr_free: AtomicUsize,
    active: Mutex<ActiveList>,
    /// Which pages `active` tracks, readable without its lock.
    tracked: TrackedBits,
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
            tracked: TrackedBits::new(pages),
        }
    }

    /// Pops a free page, if any.
    pub(crate) fn take_free(&self) -> Option<EpcIndex> {
        let page = self.free.lock().pop()?;
        self.nr_free.fetch_sub(1, Ordering::Relaxed);
        Some(page)
    }

    /// The page [`EpcPool::take_free`] would pop now, if any (a hint: another thread may
    /// take it first).
    pub(crate) fn peek_free(&self) -> Option<EpcIndex> {
        self.free.lock().last().copied()
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
        self.active.lock().linked > 0
    }

    /// What the reclaimer could still give, read in one look under the list's lock: with
    /// two looks, pages put back between them were seen as neither reclaimable nor in
    /// flight.
    pub(crate) fn reclaim_state(&self) -> ReclaimState {
        let active = self.active.lock();
        if active.linked > 0 {
            ReclaimState::Reclaimable
        } else if active.tracked > active.linked {
            ReclaimState::InFlight
        } else {
            ReclaimState::Exhausted
        }
    }

    /// Below the low watermark with something reclaimable (`sgx_should_reclaim(LOW)`).
    pub(crate) fn should_reclaim(&self, watermark: usize) -> bool {
        self.nr_free() < watermark && self.has_reclaimable()
    }

    /// `sgx_mark_page_reclaimable`: appends the page at the tail of the active list.
    pub(crate) fn mark_reclaimable(&self, page: EpcIndex, owner: Owner) {
        let mut active = self.active.lock();
        match active.tracking(page) {
            Tracking::Untracked => {
                active.tracked += 1;
                self.tracked.set(page, true);
            }
            Tracking::Linked => active.unlink(page),
            Tracking::Isolated => {}
        }
        active.link_tail(page);
        active.slot(page).owner = Some(owner);
    }

    /// `sgx_unmark_page_reclaimable`: EBUSY (as `Err(())`) if the reclaimer holds the page.
    pub(crate) fn unmark_reclaimable(&self, page: EpcIndex) -> Result<(), ()> {
        let mut active = self.active.lock();
        match active.tracking(page) {
            Tracking::Isolated => Err(()),
            _ => {
                self.forget(&mut active, page);
                Ok(())
            }
        }
    }

    /// Takes up to `n` pages off the head of the active list; they stay tracked (the
    /// "isolated" state the reclaimer owns).
    pub(crate) fn isolate(&self, n: usize) -> Vec<Isolated> {
        let mut active = self.active.lock();
        let mut out = Vec::with_capacity(n);
        while out.len() < n && active.head != NIL {
            let page = EpcIndex(active.head);
            active.unlink(page);
            match &active.slots[page.as_usize()].owner {
                Some(owner) => out.push(Isolated { page, encl: owner.encl.upgrade(), addr: owner.addr }),
                // Every marked page has an owner; never strand one that had none.
                None => self.forget(&mut active, page),
            }
        }
        out
    }

    /// Puts an isolated page back at the tail (young, or could not be written out).
    pub(crate) fn putback(&self, page: EpcIndex) {
        let mut active = self.active.lock();
        if active.tracking(page) == Tracking::Isolated {
            active.link_tail(page);
        }
    }

    /// Forgets an isolated page (written out, or its enclave is gone).
    pub(crate) fn untrack(&self, page: EpcIndex) {
        self.forget(&mut self.active.lock(), page);
    }

    /// Stops tracking `page` (the active list's lock held).
    fn forget(&self, active: &mut ActiveList, page: EpcIndex) {
        active.forget(page);
        self.tracked.set(page, false);
    }

    /// Whether `page` is tracked (on the list or held by the reclaimer). A lock-free read,
    /// for the free path's sanity check: exact unless someone races with the page's owner.
    pub(crate) fn is_tracked(&self, page: EpcIndex) -> bool {
        self.tracked.get(page)
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

    #[test]
    fn marking_again_moves_to_the_tail_and_counts_stay_exact() {
        let pool = EpcPool::new(8);
        for i in [5, 1, 7] {
            pool.mark_reclaimable(EpcIndex(i), owner());
        }
        pool.mark_reclaimable(EpcIndex(5), owner());
        assert_eq!(pool.reclaim_state(), ReclaimState::Reclaimable);
        let all = pool.isolate(8);
        assert_eq!(all.iter().map(|i| i.page.0).collect::<Vec<_>>(), vec![1, 7, 5]);
        assert_eq!(pool.reclaim_state(), ReclaimState::InFlight);
        pool.untrack(EpcIndex(1));
        pool.putback(EpcIndex(7));
        pool.putback(EpcIndex(1)); // no longer tracked: stays off the list
        pool.mark_reclaimable(EpcIndex(5), owner()); // isolated → linked again
        assert_eq!(pool.isolate(8).iter().map(|i| i.page.0).collect::<Vec<_>>(), vec![7, 5]);
        pool.untrack(EpcIndex(7));
        pool.untrack(EpcIndex(5));
        assert_eq!(pool.reclaim_state(), ReclaimState::Exhausted);
        assert!(!(0..8).any(|i| pool.is_tracked(EpcIndex(i))));
    }

    #[test]
    fn the_tracked_flag_follows_the_list_without_its_lock() {
        let pool = EpcPool::new(130);
        let page = EpcIndex(129); // the last word's first bit
        assert!(!pool.is_tracked(page));
        pool.mark_reclaimable(page, owner());
        pool.mark_reclaimable(EpcIndex(65), owner());
        assert!(pool.is_tracked(page) && pool.is_tracked(EpcIndex(65)) && !pool.is_tracked(EpcIndex(64)));
        let isolated = pool.isolate(1);
        assert_eq!(isolated[0].page, page);
        assert!(pool.is_tracked(page), "isolated pages stay tracked");
        pool.putback(page);
        assert!(pool.is_tracked(page));
        assert_eq!(pool.unmark_reclaimable(page), Ok(()));
        assert!(!pool.is_tracked(page) && pool.is_tracked(EpcIndex(65)), "neighbours in the word keep theirs");
        pool.isolate(1);
        pool.untrack(EpcIndex(65));
        assert!(!pool.is_tracked(EpcIndex(65)));
    }
}
