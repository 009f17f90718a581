//! The EPCM: one entry per EPC page (spec §2), plus the per-page lock that leaves take on
//! their operands (spec §0.4).
//!
//! Lock order: a leaf holds page *leaf locks* (try-acquire only, never waiting, so no
//! deadlock is possible) and takes an entry's mutex briefly while it holds the leaf lock.
//! Never wait for a leaf lock. Hold at most two entry mutexes at once, and then the second is
//! a SECS's, taken to find the enclave a child page names (a SECS entry is innermost: nothing
//! is locked while it is held).
//!
//! The SECS is every leaf's shared operand when an enclave grows or shrinks (EADD, EAUG,
//! ELDU of a child, ETRACK, EINIT). Taking it through the page's lock word would make every
//! such leaf write one cache line shared by all logical processors, so a SECS is taken shared
//! in *big-reader* mode instead: the leaf counts itself in its own LP's shard of the
//! enclave's reader counters ([`crate::enclave::LpCounters`]) and then checks that nobody
//! holds the page exclusive; an exclusive acquirer of a page marked [`BIG_READERS`] claims the
//! lock word and then checks that every shard is zero. Both sides store, then load what the
//! other side stores, all sequentially consistent (Dekker's pattern): at least one of two
//! racing leaves sees the other and backs off — a conflict is #GP, never a wait, as before.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};

use parking_lot::{Mutex, MutexGuard};
use sgxemu_arch::{PageType, SecinfoFlags};

use crate::enclave::{Enclave, EnclaveRef};
use crate::epc::EpcIndex;

/// One EPCM entry (spec §2), plus the emulator-private tracking epochs of spec §7.
#[derive(Clone, Debug)]
pub struct EpcmEntry {
    /// The entry describes a page in use.
    pub valid: bool,
    /// Page type.
    pub page_type: PageType,
    /// R, W and X (only these bits of SECINFO.FLAGS).
    pub perms: SecinfoFlags,
    /// EBLOCK'd.
    pub blocked: bool,
    /// EAUG'd, not yet accepted.
    pub pending: bool,
    /// EMODT'd, not yet accepted.
    pub modified: bool,
    /// EMODPR'd, not yet accepted.
    pub pr: bool,
    /// The only linear address the enclave may use for this page (0 for SECS and VA).
    pub enclave_address: u64,
    /// The enclave a REG, TCS or TRIM page belongs to, named without a reference count.
    pub(crate) owner: Option<EnclaveRef>,
    /// The enclave a SECS page holds.
    pub(crate) secs: Option<Arc<Enclave>>,
    /// Tracking epoch captured by EBLOCK.
    pub(crate) bepoch: u64,
    /// Tracking epoch captured by EMODPR/EMODT, cleared by EACCEPT and ELDU.
    pub(crate) mod_epoch: Option<u64>,
}

impl Default for EpcmEntry {
    fn default() -> Self {
        EpcmEntry {
            valid: false,
            page_type: PageType::Reg,
            perms: SecinfoFlags::empty(),
            blocked: false,
            pending: false,
            modified: false,
            pr: false,
            enclave_address: 0,
            owner: None,
            secs: None,
            bepoch: 0,
            mod_epoch: None,
        }
    }
}

impl EpcmEntry {
    /// The SECINFO.FLAGS image of this entry (PT, RWX, PENDING, MODIFIED, PR) as EWB
    /// records it in the PCMD.
    pub fn secinfo_flags(&self) -> SecinfoFlags {
        let mut flags = self.perms.with_page_type(self.page_type);
        flags.set(SecinfoFlags::PENDING, self.pending);
        flags.set(SecinfoFlags::MODIFIED, self.modified);
        flags.set(SecinfoFlags::PR, self.pr);
        flags
    }

    /// True for REG/TCS/TRIM pages (children of a SECS).
    pub fn is_child(&self) -> bool {
        matches!(self.page_type, PageType::Reg | PageType::Tcs | PageType::Trim)
    }

    /// True if this is a child page of `enclave`.
    pub(crate) fn owned_by(&self, enclave: &Enclave) -> bool {
        self.owner == Some(enclave.reference())
    }
}

/// A read-only snapshot of an EPCM entry, for tests, invariant checks and debuggers.
/// The driver never uses it: like the kernel it only learns EPCM state through leaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EpcmView {
    /// Entry valid.
    pub valid: bool,
    /// Page type.
    pub page_type: PageType,
    /// SECINFO-style flags: RWX, PENDING, MODIFIED, PR and the page type.
    pub flags: SecinfoFlags,
    /// BLOCKED.
    pub blocked: bool,
    /// ENCLAVEADDRESS.
    pub enclave_address: u64,
    /// EID of the owning enclave (the enclave itself for a SECS page).
    pub eid: Option<u64>,
    /// EPC page of the owning SECS.
    pub secs: Option<EpcIndex>,
}

const EXCLUSIVE: u32 = 1 << 31;
const SGX2_BUSY: u32 = 1 << 30;
/// The page holds (or once held) a SECS, so shared holders may be counted outside the lock
/// word, in the enclave's per-LP reader counters. Set by the exclusive holder that puts a
/// SECS on the page; never cleared (a page that held a SECS only makes its exclusive
/// acquirers look at its entry).
const BIG_READERS: u32 = 1 << 29;
const SHARED_MASK: u32 = BIG_READERS - 1;

/// The hardware's per-page operand lock: shared or exclusive, try-acquire only, plus the
/// "an SGX2 leaf is working on this page" bit that makes SGX2 leaves exclusive among
/// themselves while still sharing with SGX1 readers (spec §0.4), plus the big-reader mode of
/// SECS pages (see the module documentation).
#[derive(Debug, Default)]
pub(crate) struct LeafLock(AtomicU32);

impl LeafLock {
    fn try_shared(&self) -> bool {
        self.try_shared_or_state().is_ok()
    }

    /// As `try_shared`; on failure, the lock word that refused it.
    fn try_shared_or_state(&self) -> Result<(), u32> {
        let mut cur = self.0.load(Ordering::Relaxed);
        loop {
            if cur & EXCLUSIVE != 0 || cur & SHARED_MASK == SHARED_MASK {
                return Err(cur);
            }
            match self.0.compare_exchange_weak(cur, cur + 1, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => return Ok(()),
                Err(now) => cur = now,
            }
        }
    }

    /// Takes the page shared by counting the caller in `my_readers` (its own LP's counter,
    /// on a cache line no other LP writes) rather than in the lock word, which it only reads.
    fn try_big_reader(&self, my_readers: &AtomicU32) -> bool {
        my_readers.fetch_add(1, Ordering::SeqCst);
        if self.0.load(Ordering::SeqCst) & EXCLUSIVE == 0 {
            return true;
        }
        my_readers.fetch_sub(1, Ordering::Release);
        false
    }

    /// Claims the word with `bits` (EXCLUSIVE, maybe SGX2_BUSY) if nobody holds it. On a
    /// BIG_READERS page the claim stands only if `has_big_readers` then says no.
    fn try_exclusive_with(&self, bits: u32, has_big_readers: impl FnOnce() -> bool) -> bool {
        let mut expected = 0;
        let was = loop {
            match self.0.compare_exchange(expected, expected | bits, Ordering::SeqCst, Ordering::Relaxed) {
                Ok(was) => break was,
                // Only the sticky mark differs from what we expected: claim with it.
                Err(now) if now == BIG_READERS && expected == 0 => expected = now,
                Err(_) => return false,
            }
        };
        if was & BIG_READERS != 0 && has_big_readers() {
            self.release_exclusive();
            return false;
        }
        true
    }

    /// Marks an SGX2 leaf on a page already held shared by the caller.
    fn try_sgx2(&self) -> bool {
        self.0.fetch_or(SGX2_BUSY, Ordering::Acquire) & SGX2_BUSY == 0
    }

    /// Marks a page the caller holds exclusive as a SECS page (see [`BIG_READERS`]).
    fn admit_big_readers(&self) {
        self.0.fetch_or(BIG_READERS, Ordering::Relaxed);
    }

    fn release_exclusive(&self) {
        // Nobody else writes the word while it is held exclusive: keep only the mark.
        let mark = self.0.load(Ordering::Relaxed) & BIG_READERS;
        self.0.store(mark, Ordering::Release);
    }

    fn release(&self, exclusive: bool, sgx2: bool) {
        if exclusive {
            self.release_exclusive();
            return;
        }
        if sgx2 {
            self.0.fetch_and(!SGX2_BUSY, Ordering::Release);
        }
        self.0.fetch_sub(1, Ordering::Release);
    }
}

/// One EPC page's EPCM slot.
#[derive(Debug, Default)]
pub(crate) struct EpcmSlot {
    lock: LeafLock,
    entry: Mutex<EpcmEntry>,
}

/// Holds a page's leaf lock for the duration of a leaf.
#[derive(Debug)]
pub(crate) struct PageLock<'a> {
    slot: &'a EpcmSlot,
    exclusive: bool,
    sgx2: bool,
}

impl PageLock<'_> {
    /// The entry, locked briefly (see the module's lock order).
    pub(crate) fn entry(&self) -> MutexGuard<'_, EpcmEntry> {
        self.slot.entry.lock()
    }

    /// Upgrades a shared hold to "SGX2 leaf in progress"; fails if another SGX2 leaf is.
    pub(crate) fn try_sgx2(&mut self) -> bool {
        debug_assert!(!self.exclusive);
        if !self.sgx2 {
            self.sgx2 = self.slot.lock.try_sgx2();
        }
        self.sgx2
    }

    /// The page now holds a SECS: from here on it may be taken shared in big-reader mode.
    /// Called by the exclusive holder that writes the SECS entry.
    pub(crate) fn admit_big_readers(&self) {
        debug_assert!(self.exclusive);
        self.slot.lock.admit_big_readers();
    }
}

impl Drop for PageLock<'_> {
    fn drop(&mut self) {
        self.slot.lock.release(self.exclusive, self.sgx2);
    }
}

/// A shared hold of a SECS page in big-reader mode: counted in one LP's reader counter.
#[derive(Debug)]
pub(crate) struct BigReadLock<'a> {
    my_readers: &'a AtomicU32,
}

impl Drop for BigReadLock<'_> {
    fn drop(&mut self) {
        self.my_readers.fetch_sub(1, Ordering::Release);
    }
}

impl EpcmSlot {
    /// For an exclusive acquirer of a BIG_READERS page: does any LP hold the SECS on it shared?
    fn has_big_readers(&self) -> bool {
        self.entry.lock().secs.as_ref().is_some_and(|enclave| enclave.per_lp.any_secs_reader())
    }
}

const CHUNK: usize = 512;

/// All EPCM slots, allocated in chunks on first use.
#[derive(Debug)]
pub(crate) struct Epcm {
    chunks: Vec<OnceLock<Box<[EpcmSlot]>>>,
}

impl Epcm {
    pub(crate) fn new(pages: u64) -> Self {
        let chunks = (pages as usize).div_ceil(CHUNK);
        Epcm { chunks: (0..chunks).map(|_| OnceLock::new()).collect() }
    }

    fn slot(&self, index: EpcIndex) -> &EpcmSlot {
        let chunk =
            self.chunks[index.as_usize() / CHUNK].get_or_init(|| (0..CHUNK).map(|_| EpcmSlot::default()).collect());
        &chunk[index.as_usize() % CHUNK]
    }

    /// Tries to take `index`'s leaf lock shared.
    pub(crate) fn try_shared(&self, index: EpcIndex) -> Option<PageLock<'_>> {
        let slot = self.slot(index);
        slot.lock.try_shared().then(|| PageLock { slot, exclusive: false, sgx2: false })
    }

    /// The entry, locked, unless a leaf holds the page exclusively (`None`: the caller's
    /// "page busy" #GP). For short shared leaves (EEXTEND): holding the entry lock for the
    /// whole leaf serializes it against every leaf that would change the page, which spec
    /// §0.4 allows, at two atomic operations fewer than the operand lock.
    pub(crate) fn entry_unless_exclusive(&self, index: EpcIndex) -> Option<MutexGuard<'_, EpcmEntry>> {
        let slot = self.slot(index);
        if slot.lock.0.load(Ordering::Acquire) & EXCLUSIVE != 0 {
            return None;
        }
        Some(slot.entry.lock())
    }

    /// Tries to take `index`'s leaf lock exclusive.
    pub(crate) fn try_exclusive(&self, index: EpcIndex) -> Option<PageLock<'_>> {
        self.try_exclusive_with(index, EXCLUSIVE)
    }

    /// Tries to take `index`'s leaf lock exclusive for an SGX2 leaf (EMODT): SGX2_BUSY marks
    /// the holder, so EMODPR can tell an SGX2 conflict (SGX_EPC_PAGE_CONFLICT) from an SGX1
    /// one (#GP) (spec §0.4, §4.13 3–4).
    pub(crate) fn try_exclusive_sgx2(&self, index: EpcIndex) -> Option<PageLock<'_>> {
        self.try_exclusive_with(index, EXCLUSIVE | SGX2_BUSY)
    }

    fn try_exclusive_with(&self, index: EpcIndex, bits: u32) -> Option<PageLock<'_>> {
        let slot = self.slot(index);
        slot.lock.try_exclusive_with(bits, || slot.has_big_readers()).then(|| PageLock {
            slot,
            exclusive: true,
            sgx2: false,
        })
    }

    /// Tries to take the SECS page `index` shared in big-reader mode, counting the caller in
    /// `my_readers` (its LP's reader counter of the enclave on that page, which the caller
    /// must check is still there once it holds the lock).
    pub(crate) fn try_big_reader<'a>(&'a self, index: EpcIndex, my_readers: &'a AtomicU32) -> Option<BigReadLock<'a>> {
        // `then`, not `then_some`: a guard built for a refused hold would release it on drop.
        self.slot(index).lock.try_big_reader(my_readers).then(|| BigReadLock { my_readers })
    }

    /// Tries to take `index`'s leaf lock shared; `Err(true)` if an SGX2 leaf holds it
    /// exclusive, `Err(false)` for any other holder.
    pub(crate) fn try_shared_vs_sgx2(&self, index: EpcIndex) -> Result<PageLock<'_>, bool> {
        let slot = self.slot(index);
        match slot.lock.try_shared_or_state() {
            Ok(()) => Ok(PageLock { slot, exclusive: false, sgx2: false }),
            Err(state) => Err(state & SGX2_BUSY != 0),
        }
    }

    /// Locks an entry without taking the leaf lock: for enclave-mode memory accesses, which
    /// hardware performs through cached translations rather than as leaves.
    pub(crate) fn entry(&self, index: EpcIndex) -> MutexGuard<'_, EpcmEntry> {
        self.slot(index).entry.lock()
    }

    /// A snapshot of an entry, without allocating a chunk that was never used.
    pub(crate) fn snapshot(&self, index: EpcIndex) -> Option<EpcmEntry> {
        let chunk = self.chunks[index.as_usize() / CHUNK].get()?;
        Some(chunk[index.as_usize() % CHUNK].entry.lock().clone())
    }

    /// Indices of chunks that have been allocated (for scans over used pages).
    pub(crate) fn allocated_ranges(&self) -> impl Iterator<Item = std::ops::Range<u32>> + '_ {
        self.chunks.iter().enumerate().filter(|(_, c)| c.get().is_some()).map(|(i, _)| {
            let start = (i * CHUNK) as u32;
            start..start + CHUNK as u32
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lp::LpId;

    /// An EPCM with a valid SECS on page `index`, put there as ECREATE does.
    fn epcm_with_secs(index: EpcIndex) -> (Epcm, Arc<Enclave>) {
        let epcm = Epcm::new(1024);
        let enclave = Arc::new(Enclave::sample(EnclaveRef { secs: index, instance: 1 }));
        let lock = epcm.try_exclusive(index).unwrap();
        lock.admit_big_readers();
        *lock.entry() =
            EpcmEntry { valid: true, page_type: PageType::Secs, secs: Some(enclave.clone()), ..EpcmEntry::default() };
        drop(lock);
        (epcm, enclave)
    }

    #[test]
    fn shared_holders_coexist_and_exclude_exclusive() {
        let epcm = Epcm::new(1024);
        let a = epcm.try_shared(EpcIndex(3)).unwrap();
        let b = epcm.try_shared(EpcIndex(3)).unwrap();
        assert!(epcm.try_exclusive(EpcIndex(3)).is_none());
        drop(a);
        assert!(epcm.try_exclusive(EpcIndex(3)).is_none());
        drop(b);
        let x = epcm.try_exclusive(EpcIndex(3)).unwrap();
        assert!(epcm.try_shared(EpcIndex(3)).is_none());
        assert!(epcm.try_exclusive(EpcIndex(3)).is_none());
        assert!(epcm.try_exclusive(EpcIndex(4)).is_some());
        drop(x);
        assert!(epcm.try_shared(EpcIndex(3)).is_some());
    }

    #[test]
    fn sgx2_leaves_exclude_each_other_but_not_readers() {
        let epcm = Epcm::new(1024);
        let mut a = epcm.try_shared(EpcIndex(1)).unwrap();
        let mut b = epcm.try_shared(EpcIndex(1)).unwrap();
        assert!(a.try_sgx2());
        assert!(!b.try_sgx2());
        drop(a);
        assert!(b.try_sgx2());
        assert!(epcm.try_exclusive(EpcIndex(1)).is_none());
        drop(b);
        assert!(epcm.try_exclusive(EpcIndex(1)).is_some());
    }

    #[test]
    fn an_exclusive_sgx2_holder_is_told_apart_from_an_sgx1_one() {
        let epcm = Epcm::new(1024);
        let emodt = epcm.try_exclusive_sgx2(EpcIndex(2)).unwrap();
        assert!(matches!(epcm.try_shared_vs_sgx2(EpcIndex(2)), Err(true)));
        assert!(epcm.try_shared(EpcIndex(2)).is_none());
        assert!(epcm.try_exclusive(EpcIndex(2)).is_none());
        drop(emodt);
        let ewb = epcm.try_exclusive(EpcIndex(2)).unwrap();
        assert!(matches!(epcm.try_shared_vs_sgx2(EpcIndex(2)), Err(false)));
        assert!(epcm.try_exclusive_sgx2(EpcIndex(2)).is_none());
        drop(ewb);
        let mut emodpr = epcm.try_shared_vs_sgx2(EpcIndex(2)).unwrap();
        assert!(emodpr.try_sgx2());
        assert!(epcm.try_exclusive_sgx2(EpcIndex(2)).is_none());
        drop(emodpr);
        assert!(epcm.try_exclusive_sgx2(EpcIndex(2)).is_some());
    }

    #[test]
    fn snapshots_do_not_allocate() {
        let epcm = Epcm::new(4096);
        assert!(epcm.snapshot(EpcIndex(2000)).is_none());
        assert_eq!(epcm.allocated_ranges().count(), 0);
        epcm.entry(EpcIndex(2000)).valid = true;
        assert!(epcm.snapshot(EpcIndex(2000)).unwrap().valid);
        assert_eq!(epcm.allocated_ranges().collect::<Vec<_>>(), vec![1536..2048]);
    }

    #[test]
    fn big_readers_exclude_exclusive_holders_and_share_with_other_readers() {
        let (epcm, enclave) = epcm_with_secs(EpcIndex(9));
        let page = EpcIndex(9);
        let readers = |lp| enclave.per_lp.secs_readers(LpId(lp));
        let a = epcm.try_big_reader(page, readers(1)).unwrap();
        let b = epcm.try_big_reader(page, readers(2)).unwrap();
        let word_reader = epcm.try_shared(page).unwrap();
        assert!(epcm.try_exclusive(page).is_none());
        assert!(epcm.try_exclusive_sgx2(page).is_none());
        drop((a, word_reader));
        assert!(epcm.try_exclusive(page).is_none(), "LP 2 still holds the SECS");
        drop(b);
        let x = epcm.try_exclusive(page).unwrap();
        assert!(epcm.try_big_reader(page, readers(1)).is_none());
        assert_eq!(readers(1).load(Ordering::SeqCst), 0, "a refused reader leaves no count behind");
        assert!(epcm.try_shared(page).is_none());
        drop(x);
        assert!(epcm.try_exclusive_sgx2(page).is_some(), "the mark alone does not block");
        assert!(epcm.try_big_reader(page, readers(1)).is_some());
    }

    #[test]
    fn a_page_keeps_its_big_reader_mark_through_other_holds() {
        let (epcm, _) = epcm_with_secs(EpcIndex(4));
        let word = || epcm.slot(EpcIndex(4)).lock.0.load(Ordering::SeqCst);
        assert_eq!(word(), BIG_READERS);
        let mut shared = epcm.try_shared(EpcIndex(4)).unwrap();
        assert!(shared.try_sgx2());
        drop(shared);
        drop(epcm.try_exclusive_sgx2(EpcIndex(4)).unwrap());
        assert_eq!(word(), BIG_READERS);
        // Once the page holds no SECS any more, counters of its old enclave do not matter.
        let lock = epcm.try_exclusive(EpcIndex(4)).unwrap();
        *lock.entry() = EpcmEntry::default();
        drop(lock);
        assert!(epcm.try_exclusive(EpcIndex(4)).is_some());
    }

    /// Threads on their own LPs take one SECS page in every mode at random; a shadow count
    /// of holders checks that an exclusive holder never overlaps any other holder.
    #[test]
    fn big_reader_lock_stress_from_several_threads() {
        const THREADS: u32 = 4;
        const ROUNDS: u32 = 20_000;
        const EXCLUSIVE_UNIT: u64 = 1 << 32;
        let (epcm, enclave) = epcm_with_secs(EpcIndex(1));
        let holders = std::sync::atomic::AtomicU64::new(0);
        let acquired: [std::sync::atomic::AtomicU32; 4] = Default::default();
        std::thread::scope(|s| {
            for t in 0..THREADS {
                let (epcm, enclave, holders, acquired) = (&epcm, &enclave, &holders, &acquired);
                s.spawn(move || {
                    let mut rng = 0x9E37_79B9_u32.wrapping_mul(t + 1);
                    let my_readers = enclave.per_lp.secs_readers(LpId(t));
                    for _ in 0..ROUNDS {
                        rng ^= rng << 13;
                        rng ^= rng >> 17;
                        rng ^= rng << 5;
                        let mode = (rng % 4) as usize;
                        // Counted in the shadow only while the lock is held (`_lock` lives
                        // to the end of each closure).
                        let occupy = |unit: u64| {
                            let before = holders.fetch_add(unit, Ordering::SeqCst);
                            let alone = if unit == EXCLUSIVE_UNIT { before == 0 } else { before < EXCLUSIVE_UNIT };
                            assert!(alone, "mode {mode} overlapped an exclusive holder ({before:#x})");
                            std::hint::spin_loop();
                            holders.fetch_sub(unit, Ordering::SeqCst);
                        };
                        let held = match mode {
                            0 => epcm.try_big_reader(EpcIndex(1), my_readers).map(|_lock| occupy(1)),
                            1 => epcm.try_shared(EpcIndex(1)).map(|_lock| occupy(1)),
                            2 => epcm.try_exclusive(EpcIndex(1)).map(|_lock| occupy(EXCLUSIVE_UNIT)),
                            _ => epcm.try_exclusive_sgx2(EpcIndex(1)).map(|_lock| occupy(EXCLUSIVE_UNIT)),
                        };
                        if held.is_some() {
                            acquired[mode].fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        assert_eq!(holders.load(Ordering::SeqCst), 0);
        assert!(!enclave.per_lp.any_secs_reader(), "every reader count was released");
        assert_eq!(epcm.slot(EpcIndex(1)).lock.0.load(Ordering::SeqCst), BIG_READERS);
        for (mode, n) in acquired.iter().enumerate() {
            assert!(n.load(Ordering::Relaxed) > 0, "mode {mode} never acquired");
        }
    }
}
