//! One enclave object (the kernel's `encl.c`): its pages and their records, VA slots,
//! backing storage, the address spaces it is mapped into, page reload (ELDU), the mapping
//! rules and teardown.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::{Mutex, MutexGuard};
use sgxemu_arch::{PAGE_SIZE, PageType};
use sgxemu_cpu::EpcIndex;

use crate::encls::{Cpu, PCMD_SIZE};
use crate::epc::Owner;
use crate::errno::{Errno, KResult};
use crate::os::{AddressSpace, Backing, Prot};
use crate::page_array::PageArray;
use crate::sgx::Sgx;

const PAGE: u64 = PAGE_SIZE as u64;
/// Slots per VA page.
const VA_SLOTS: usize = sgxemu_arch::VA_SLOTS_PER_PAGE;

/// Where an evicted page's version lives. (Compact: one is kept in every page record.)
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct VaSlot {
    pub(crate) va: EpcIndex,
    pub(crate) slot: u16,
}

impl VaSlot {
    fn index(self) -> usize {
        usize::from(self.slot)
    }

    /// The EPC address of the slot's 8 bytes.
    pub(crate) fn epc_addr(self, sgx: &Sgx) -> u64 {
        sgx.epc_addr(self.va) + 8 * u64::from(self.slot)
    }
}

/// The driver's record of one enclave page (`struct sgx_encl_page`).
#[derive(Clone, Debug)]
pub(crate) struct EnclPage {
    /// Maximum VMA protections this page may be mapped with.
    pub(crate) max_prot: Prot,
    /// The kernel's record of the EPCM page type.
    pub(crate) page_type: PageType,
    /// The EPC page while resident.
    pub(crate) epc: Option<EpcIndex>,
    /// The version slot while evicted.
    pub(crate) va_slot: Option<VaSlot>,
    /// The reclaimer is writing it out.
    pub(crate) being_reclaimed: bool,
}

impl EnclPage {
    pub(crate) fn new(max_prot: Prot, page_type: PageType) -> Self {
        EnclPage { max_prot, page_type, epc: None, va_slot: None, being_reclaimed: false }
    }
}

/// A version-array page and which of its slots are in use.
#[derive(Debug)]
pub(crate) struct VaPage {
    used: Vec<bool>,
    nr_used: usize,
}

impl VaPage {
    fn new() -> Self {
        VaPage { used: vec![false; VA_SLOTS], nr_used: 0 }
    }

    fn is_full(&self) -> bool {
        self.nr_used == VA_SLOTS
    }
}

/// Lifecycle flags (`SGX_ENCL_*`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct EnclFlags {
    pub(crate) created: bool,
    pub(crate) initialized: bool,
    pub(crate) debug: bool,
    /// Released: every page returned (the object lingers only in stray references).
    pub(crate) released: bool,
}

/// Everything `encl->lock` protects.
pub(crate) struct EnclState {
    pub(crate) flags: EnclFlags,
    pub(crate) base: u64,
    pub(crate) size: u64,
    pub(crate) attributes: u64,
    pub(crate) attributes_mask: u64,
    /// Pages that need a VA slot, the SECS included.
    pub(crate) page_cnt: u64,
    /// Child pages resident in the EPC.
    pub(crate) secs_child_cnt: u64,
    /// Page records by linear address.
    pub(crate) pages: PageArray,
    /// The SECS's record (max_prot unused).
    pub(crate) secs: EnclPage,
    /// VA pages; the front ones have free slots.
    pub(crate) va_order: VecDeque<EpcIndex>,
    pub(crate) va_pages: BTreeMap<EpcIndex, VaPage>,
    pub(crate) backing: Option<Box<dyn Backing>>,
}

impl std::fmt::Debug for EnclState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnclState")
            .field("flags", &self.flags)
            .field("base", &format_args!("{:#x}", self.base))
            .field("size", &format_args!("{:#x}", self.size))
            .field("pages", &self.pages.len())
            .field("secs_child_cnt", &self.secs_child_cnt)
            .finish_non_exhaustive()
    }
}

impl EnclState {
    /// Backing offset of enclave page `addr` (the SECS uses `None`).
    pub(crate) fn page_index(&self, addr: Option<u64>) -> u64 {
        match addr {
            Some(addr) => (addr - self.base) / PAGE,
            None => self.size / PAGE,
        }
    }

    pub(crate) fn contents_offset(&self, addr: Option<u64>) -> u64 {
        self.page_index(addr) * PAGE
    }

    pub(crate) fn pcmd_offset(&self, addr: Option<u64>) -> u64 {
        self.size + PAGE + self.page_index(addr) * PCMD_SIZE as u64
    }

    pub(crate) fn record(&mut self, addr: Option<u64>) -> Option<&mut EnclPage> {
        match addr {
            Some(addr) => self.pages.get_mut(addr),
            None => Some(&mut self.secs),
        }
    }

    /// Takes the first free slot of the first VA page; a page that fills up moves to the
    /// back (`sgx_alloc_va_slot`).
    pub(crate) fn alloc_va_slot(&mut self) -> Option<VaSlot> {
        let &va = self.va_order.front()?;
        let page = self.va_pages.get_mut(&va)?;
        let slot = page.used.iter().position(|used| !used)?;
        page.used[slot] = true;
        page.nr_used += 1;
        if page.is_full() {
            self.va_order.pop_front();
            self.va_order.push_back(va);
        }
        // A VA page has 512 slots: the index always fits.
        Some(VaSlot { va, slot: u16::try_from(slot).ok()? })
    }

    /// Frees a slot; its VA page moves to the front (`sgx_free_va_slot` + list_move).
    pub(crate) fn free_va_slot(&mut self, slot: VaSlot) {
        if let Some(page) = self.va_pages.get_mut(&slot.va)
            && page.used[slot.index()]
        {
            page.used[slot.index()] = false;
            page.nr_used -= 1;
        }
        if let Some(pos) = self.va_order.iter().position(|&va| va == slot.va) {
            self.va_order.remove(pos);
        }
        self.va_order.push_front(slot.va);
    }
}

/// One open `/dev/sgx_enclave`.
pub struct Encl {
    pub(crate) sgx: Arc<Sgx>,
    /// SGX_ENCL_IOCTL: an ioctl is running.
    /// This enclave's own weak reference (the reclaimer's list holds these).
    self_weak: Weak<Encl>,
    ioctl_busy: AtomicBool,
    state: Mutex<EnclState>,
    mms: Mutex<Vec<Arc<dyn AddressSpace>>>,
}

impl std::fmt::Debug for Encl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encl").field("state", &*self.state.lock()).finish_non_exhaustive()
    }
}

/// Why a page could not be made resident.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LoadError {
    /// No record at the address (a hole).
    NoPage,
    /// The VMA asks for more than the page's maximum protections.
    Access,
    /// Resident but being written out, or no free EPC page to reload into.
    Busy,
    /// Anything else (ELDU failure, backing error): the errno.
    Other(Errno),
}

/// A snapshot of an enclave for tests and tools.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnclInfo {
    /// ELRANGE base (0 before CREATE).
    pub base: u64,
    /// ELRANGE size.
    pub size: u64,
    /// CREATE done.
    pub created: bool,
    /// INIT done.
    pub initialized: bool,
    /// Page records (child pages, resident or not).
    pub pages: usize,
    /// Child pages resident in the EPC.
    pub resident: u64,
    /// VA pages.
    pub va_pages: usize,
    /// Pages needing a VA slot (SECS included).
    pub page_cnt: u64,
    /// SECS resident.
    pub secs_resident: bool,
    /// Bytes in the backing store.
    pub backing_bytes: u64,
}

impl Encl {
    pub(crate) fn new(sgx: Arc<Sgx>, self_weak: Weak<Encl>) -> Self {
        Encl {
            sgx,
            self_weak,
            ioctl_busy: AtomicBool::new(false),
            state: Mutex::new(EnclState {
                flags: EnclFlags::default(),
                base: 0,
                size: 0,
                attributes: 0,
                attributes_mask: 0,
                page_cnt: 0,
                secs_child_cnt: 0,
                pages: PageArray::default(),
                secs: EnclPage::new(Prot::empty(), PageType::Secs),
                va_order: VecDeque::new(),
                va_pages: BTreeMap::new(),
                backing: None,
            }),
            mms: Mutex::new(Vec::new()),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, EnclState> {
        self.state.lock()
    }

    /// Sets the IOCTL flag; false if another ioctl holds it.
    pub(crate) fn try_begin_ioctl(&self) -> bool {
        !self.ioctl_busy.swap(true, Ordering::AcqRel)
    }

    pub(crate) fn end_ioctl(&self) {
        self.ioctl_busy.store(false, Ordering::Release);
    }

    /// A snapshot of the driver's bookkeeping.
    pub fn info(&self) -> EnclInfo {
        let st = self.lock();
        EnclInfo {
            base: st.base,
            size: st.size,
            created: st.flags.created,
            initialized: st.flags.initialized,
            pages: st.pages.len(),
            resident: st.secs_child_cnt,
            va_pages: st.va_pages.len(),
            page_cnt: st.page_cnt,
            secs_resident: st.secs.epc.is_some(),
            backing_bytes: st.backing.as_ref().map_or(0, |b| b.stored_bytes()),
        }
    }

    /// EPC pages (child pages, SECS and VA pages) this enclave holds.
    pub fn epc_pages(&self) -> Vec<EpcIndex> {
        let st = self.lock();
        let children = st.pages.iter().filter_map(|(_, p)| p.epc);
        children.chain(st.secs.epc).chain(st.va_pages.keys().copied()).collect()
    }

    /// The kernel's record of the page at `addr`: (page type, max protections, resident).
    pub fn page_record(&self, addr: u64) -> Option<(PageType, Prot, bool)> {
        let st = self.lock();
        st.pages.get(addr).map(|p| (p.page_type, p.max_prot, p.epc.is_some()))
    }

    // ---- address spaces --------------------------------------------------------------

    /// `sgx_encl_mm_add`: remembers an address space that maps this enclave (once per mm).
    pub fn mm_add(&self, mm: Arc<dyn AddressSpace>) {
        let mut mms = self.mms.lock();
        if !mms.iter().any(|m| m.id() == mm.id()) {
            mms.push(mm);
        }
    }

    /// Forgets an address space (it exited).
    pub fn mm_remove(&self, id: crate::os::MmId) {
        self.mms.lock().retain(|m| m.id() != id);
    }

    /// `sgx_zap_enclave_ptes`: removes the PTEs of `addr` in every mm. Called without the
    /// enclave lock.
    pub(crate) fn zap(&self, addr: u64) {
        // Lock order: the mm list, then each mm's page-table lock.
        for mm in self.mms.lock().iter().filter(|m| m.alive()) {
            mm.zap(addr);
        }
    }

    /// Any mm has a young PTE for `addr` (test-and-clear in all of them).
    pub(crate) fn test_and_clear_young(&self, addr: u64) -> bool {
        self.mms.lock().iter().filter(|m| m.alive()).fold(false, |young, mm| mm.test_and_clear_young(addr) | young)
    }

    // ---- mapping rules -----------------------------------------------------------------

    /// `sgx_encl_may_map` (mmap and mprotect): EACCES past ELRANGE after INIT, with
    /// READ_IMPLIES_EXEC, or for any page whose maximum protections lack a requested bit;
    /// holes impose nothing (driver spec §4.2).
    pub fn may_map(&self, start: u64, end: u64, prot: Prot, read_implies_exec: bool) -> KResult<()> {
        let st = self.lock();
        if st.flags.initialized && (start < st.base || end > st.base + st.size) {
            return Err(Errno::EACCES);
        }
        if read_implies_exec {
            return Err(Errno::EACCES);
        }
        let denied = st.pages.range(start..end).any(|(_, page)| !page.max_prot.contains(prot));
        if denied { Err(Errno::EACCES) } else { Ok(()) }
    }

    // ---- page loading ------------------------------------------------------------------

    /// `sgx_encl_load_page`/`__sgx_encl_load_page`: makes the page at `addr` resident,
    /// reloading the SECS first if needed. With `vm_prot`, the VMA's protections must lie
    /// within the page's maximum.
    pub(crate) fn load_page(
        &self,
        st: &mut EnclState,
        cpu: &mut Cpu,
        addr: u64,
        vm_prot: Option<Prot>,
    ) -> Result<EpcIndex, LoadError> {
        let page = st.pages.get(addr).ok_or(LoadError::NoPage)?;
        if vm_prot.is_some_and(|prot| !page.max_prot.contains(prot)) {
            return Err(LoadError::Access);
        }
        if let Some(epc) = page.epc {
            return if page.being_reclaimed { Err(LoadError::Busy) } else { Ok(epc) };
        }
        self.load_secs(st, cpu)?;
        let epc = self.eldu(st, cpu, Some(addr))?;
        st.secs_child_cnt += 1;
        self.sgx.pool.mark_reclaimable(epc, self.owner(Some(addr)));
        Ok(epc)
    }

    /// `sgx_encl_load_secs`: reloads a written-out SECS.
    pub(crate) fn load_secs(&self, st: &mut EnclState, cpu: &mut Cpu) -> Result<EpcIndex, LoadError> {
        match st.secs.epc {
            Some(epc) => Ok(epc),
            None => self.eldu(st, cpu, None),
        }
    }

    pub(crate) fn owner(self: &Encl, addr: Option<u64>) -> Owner {
        Owner { encl: self.weak(), addr }
    }

    /// A weak reference to this enclave, for the reclaimer's list.
    pub(crate) fn weak(&self) -> Weak<Encl> {
        self.self_weak.clone()
    }

    /// `__sgx_encl_eldu`: ELDU of the page at `addr` (`None` = the SECS) from the backing
    /// store into a fresh EPC page, allocated without reclaim.
    fn eldu(&self, st: &mut EnclState, cpu: &mut Cpu, addr: Option<u64>) -> Result<EpcIndex, LoadError> {
        let sgx = &self.sgx;
        let epc = sgx
            .alloc_epc(cpu, false, None)
            .map_err(|e| if e == Errno::EBUSY { LoadError::Busy } else { LoadError::Other(e) })?;
        let (contents_off, pcmd_off) = (st.contents_offset(addr), st.pcmd_offset(addr));
        let mut contents = vec![0u8; PAGE_SIZE];
        let mut pcmd = [0u8; PCMD_SIZE];
        let Some(backing) = st.backing.as_mut() else {
            sgx.pool.put_free(epc);
            return Err(LoadError::Other(Errno::EFAULT));
        };
        backing.read(contents_off, &mut contents);
        backing.read(pcmd_off, &mut pcmd);
        let secs_addr = if addr.is_some() { st.secs.epc.map_or(0, |p| sgx.epc_addr(p)) } else { 0 };
        let slot = st.record(addr).and_then(|r| r.va_slot);
        let slot_addr = slot.map_or(0, |s| s.epc_addr(sgx));
        let linaddr = addr.unwrap_or(0);
        let result = cpu.eldu(&sgx.processor, secs_addr, linaddr, &contents, &pcmd, sgx.epc_addr(epc), slot_addr);
        // Whatever happened, the PCMD entry and the contents page are consumed.
        if let Some(backing) = st.backing.as_mut() {
            let _ = backing.write(pcmd_off, &[0; PCMD_SIZE]);
            backing.drop_page(contents_off);
        }
        self.maybe_drop_pcmd_page(st, addr);
        match result {
            Ok(()) => {
                if let Some(slot) = slot {
                    st.free_va_slot(slot);
                }
                if let Some(record) = st.record(addr) {
                    record.epc = Some(epc);
                    record.va_slot = None;
                }
                Ok(epc)
            }
            Err(e) => {
                if e.failed() {
                    sgx.warn(format!("ELDU of {addr:x?} failed: {e:?}"));
                }
                sgx.free_epc(cpu, epc);
                Err(LoadError::Other(Errno::EFAULT))
            }
        }
    }

    /// Truncates the PCMD page of `addr` once all its entries are zero and none of the
    /// enclave pages sharing it is being reclaimed (driver spec §5.1 step 4).
    fn maybe_drop_pcmd_page(&self, st: &mut EnclState, addr: Option<u64>) {
        let pcmd_page = st.pcmd_offset(addr) & !(PAGE - 1);
        let first_index = (pcmd_page - st.size - PAGE) / PCMD_SIZE as u64;
        let secs_index = st.size / PAGE;
        let sharer_busy = (first_index..(first_index + 32).min(secs_index))
            .any(|i| st.pages.get(st.base + i * PAGE).is_some_and(|p| p.epc.is_some() && p.being_reclaimed));
        if sharer_busy {
            return;
        }
        let Some(backing) = st.backing.as_mut() else { return };
        let mut bytes = vec![0u8; PAGE_SIZE];
        backing.read(pcmd_page, &mut bytes);
        if bytes.iter().all(|&b| b == 0) {
            backing.drop_page(pcmd_page);
        }
    }

    /// `sgx_encl_grow`, first half: whether the next page needs a new VA page (the count of
    /// pages needing slots is at a multiple of 512).
    pub(crate) fn needs_va_page(st: &EnclState) -> bool {
        st.page_cnt.is_multiple_of(VA_SLOTS as u64)
    }

    /// `sgx_alloc_va_page`: an EPC page made a VA page by EPA. With `reclaim` this may run
    /// the reclaimer, so it must be called without the enclave lock.
    pub(crate) fn alloc_va_page(
        &self,
        cpu: &mut Cpu,
        reclaim: bool,
        task: Option<&dyn crate::os::Task>,
    ) -> KResult<EpcIndex> {
        let va = self.sgx.alloc_epc(cpu, reclaim, task)?;
        if cpu.epa(&self.sgx.processor, self.sgx.epc_addr(va)).is_err() {
            self.sgx.warn("EPA failed".to_string());
            self.sgx.pool.put_free(va);
            return Err(Errno::EFAULT);
        }
        Ok(va)
    }

    /// `sgx_encl_grow` under the lock without reclaim (the EAUG path): one more page needs
    /// a slot; returns the new VA page, if one was needed, for the caller to link.
    pub(crate) fn grow(&self, cpu: &mut Cpu, st: &mut EnclState) -> KResult<Option<EpcIndex>> {
        let va = if Self::needs_va_page(st) { Some(self.alloc_va_page(cpu, false, None)?) } else { None };
        st.page_cnt += 1;
        Ok(va)
    }

    /// Links a new VA page at the front.
    pub(crate) fn link_va(st: &mut EnclState, va: EpcIndex) {
        st.va_pages.insert(va, VaPage::new());
        st.va_order.push_front(va);
    }

    /// `sgx_encl_shrink`: undoes a grow; frees the VA page it allocated, if any.
    pub(crate) fn shrink(&self, cpu: &mut Cpu, st: &mut EnclState, va: Option<EpcIndex>) {
        st.page_cnt -= 1;
        if let Some(va) = va {
            st.va_pages.remove(&va);
            st.va_order.retain(|&p| p != va);
            self.sgx.free_epc(cpu, va);
        }
    }

    // ---- teardown ----------------------------------------------------------------------

    /// `sgx_encl_release`: every EPC page goes back — children, then the SECS, then the VA
    /// pages — and the backing store is dropped. Called when the last reference (file and
    /// VMAs) is gone. Leaks are reported as warnings, as the kernel does.
    pub fn release(&self, cpu: &mut Cpu) {
        let sgx = &self.sgx;
        let mut st = self.lock();
        if st.flags.released {
            return;
        }
        // Pages the reclaimer holds stay counted in secs_child_cnt: it finds the enclave
        // released, frees them and then the SECS (`free_orphan`).
        let mut held = 0;
        let records: Vec<EnclPage> = st.pages.drain().map(|(_, page)| page).collect();
        for page in records {
            let Some(epc) = page.epc else { continue };
            if sgx.pool.unmark_reclaimable(epc).is_err() {
                held += 1;
                continue;
            }
            sgx.free_epc(cpu, epc);
            st.secs_child_cnt -= 1;
        }
        if st.secs_child_cnt == 0
            && let Some(secs) = st.secs.epc.take()
        {
            let _ = sgx.pool.unmark_reclaimable(secs);
            sgx.free_epc(cpu, secs);
        }
        let va_pages: Vec<EpcIndex> = st.va_pages.keys().copied().collect();
        for va in va_pages {
            sgx.free_epc(cpu, va);
        }
        st.va_pages.clear();
        st.va_order.clear();
        st.backing = None;
        if st.secs_child_cnt != held || (held == 0 && st.secs.epc.is_some()) {
            sgx.warn(format!("enclave released with {} resident children", st.secs_child_cnt));
        }
        st.flags.released = true;
        drop(st);
        self.mms.lock().clear();
    }

    /// Maps a failed page load to the ioctls' errno (EAGAIN for "try again", else EFAULT).
    pub(crate) fn ioctl_load_errno(e: LoadError) -> Errno {
        match e {
            LoadError::Busy => Errno::EAGAIN,
            LoadError::NoPage | LoadError::Access | LoadError::Other(_) => Errno::EFAULT,
        }
    }
}

impl Encl {
    /// The VMA's `.access` hook (ptrace, `/proc/PID/mem`): reads (or, with `write`, writes)
    /// `buf.len()` bytes at `addr` of a debug enclave through EDBGRD/EDBGWR, one aligned
    /// 8-byte word at a time (driver spec §4.3). `vma_prot` is the VMA's protection, which
    /// the pages' maximum must allow. Returns the bytes processed.
    ///
    /// Mainline's EDBGRD/EDBGWR wrappers clear EAX, so an SGX code (e.g.
    /// SGX_PAGE_NOT_DEBUGGABLE for a pending page) passes as success with stale data; this
    /// port reports it as EIO instead.
    pub fn access(&self, cpu: &mut Cpu, addr: u64, buf: &mut [u8], write: bool, vma_prot: Prot) -> KResult<usize> {
        if !self.lock().flags.debug {
            return Err(Errno::EFAULT);
        }
        let processor = self.sgx.processor.clone();
        let mut done = 0;
        while done < buf.len() {
            let at = addr + done as u64;
            let word = at & !7;
            let within = (at - word) as usize;
            let n = (8 - within).min(buf.len() - done);
            loop {
                let mut st = self.lock();
                let epc = match self.load_page(&mut st, cpu, word & !(PAGE - 1), Some(vma_prot)) {
                    Ok(epc) => epc,
                    // The kernel retries while the page is being reclaimed or EPC is short.
                    Err(LoadError::Busy) => {
                        drop(st);
                        self.sgx.reclaim_direct(cpu);
                        continue;
                    }
                    Err(LoadError::Other(e)) => return Err(e),
                    Err(LoadError::NoPage | LoadError::Access) => return Err(Errno::EFAULT),
                };
                let epc_word = self.sgx.epc_addr(epc) + (word & (PAGE - 1));
                let mut bytes = cpu.edbgrd(&processor, epc_word).map_err(|_| Errno::EIO)?.to_le_bytes();
                if write {
                    bytes[within..within + n].copy_from_slice(&buf[done..done + n]);
                    cpu.edbgwr(&processor, epc_word, u64::from_le_bytes(bytes)).map_err(|_| Errno::EIO)?;
                } else {
                    buf[done..done + n].copy_from_slice(&bytes[within..within + n]);
                }
                break;
            }
            done += n;
        }
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_record_stays_small() {
        // Page records are walked by the million in the SGX2 ioctls: keep them cache-friendly.
        assert!(size_of::<Option<EnclPage>>() <= 24, "{}", size_of::<Option<EnclPage>>());
    }
}
