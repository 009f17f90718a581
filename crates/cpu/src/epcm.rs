//! The EPCM: one entry per EPC page (spec §2), plus the per-page lock that leaves take on
//! their operands (spec §0.4).
//!
//! Lock order: a leaf holds page *leaf locks* (try-acquire only, never waiting, so no
//! deadlock is possible) and takes an entry's mutex briefly while it holds the leaf lock.
//! Never hold two entry mutexes at once, and never wait for a leaf lock.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};

use parking_lot::{Mutex, MutexGuard};
use sgxemu_arch::{PageType, SecinfoFlags};

use crate::enclave::Enclave;
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
    /// The enclave this page belongs to (for a SECS page: the enclave it describes).
    pub(crate) enclave: Option<Arc<Enclave>>,
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
            enclave: None,
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

    pub(crate) fn owned_by(&self, enclave: &Arc<Enclave>) -> bool {
        self.enclave.as_ref().is_some_and(|e| Arc::ptr_eq(e, enclave))
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
const SHARED_MASK: u32 = SGX2_BUSY - 1;

/// The hardware's per-page operand lock: shared or exclusive, try-acquire only, plus the
/// "an SGX2 leaf is working on this page" bit that makes SGX2 leaves exclusive among
/// themselves while still sharing with SGX1 readers (spec §0.4).
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

    fn try_exclusive(&self) -> bool {
        self.0.compare_exchange(0, EXCLUSIVE, Ordering::Acquire, Ordering::Relaxed).is_ok()
    }

    /// Exclusive for an SGX2 leaf (EMODT): SGX2_BUSY marks the holder, so EMODPR can tell an
    /// SGX2 conflict (SGX_EPC_PAGE_CONFLICT) from an SGX1 one (#GP) (spec §0.4, §4.13 3–4).
    fn try_exclusive_sgx2(&self) -> bool {
        self.0.compare_exchange(0, EXCLUSIVE | SGX2_BUSY, Ordering::Acquire, Ordering::Relaxed).is_ok()
    }

    /// Marks an SGX2 leaf on a page already held shared by the caller.
    fn try_sgx2(&self) -> bool {
        self.0.fetch_or(SGX2_BUSY, Ordering::Acquire) & SGX2_BUSY == 0
    }

    fn release(&self, exclusive: bool, sgx2: bool) {
        if exclusive {
            self.0.store(0, Ordering::Release);
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
}

impl Drop for PageLock<'_> {
    fn drop(&mut self) {
        self.slot.lock.release(self.exclusive, self.sgx2);
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
        let slot = self.slot(index);
        slot.lock.try_exclusive().then(|| PageLock { slot, exclusive: true, sgx2: false })
    }

    /// Tries to take `index`'s leaf lock exclusive for an SGX2 leaf (EMODT).
    pub(crate) fn try_exclusive_sgx2(&self, index: EpcIndex) -> Option<PageLock<'_>> {
        let slot = self.slot(index);
        slot.lock.try_exclusive_sgx2().then(|| PageLock { slot, exclusive: true, sgx2: false })
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
}
