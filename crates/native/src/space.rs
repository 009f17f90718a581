//! The process's enclave mappings: the VMAs of `/dev/sgx_enclave` files, the PTEs the
//! driver's fault handler installs, and the host mappings that realise them. Host
//! protection of a mapped enclave page = VMA protection ∩ what the EPCM lets enclave code
//! do there (nothing for TCS, PENDING, MODIFIED, TRIM or blocked pages), so natively running
//! enclave code faults exactly where the processor would.
//!
//! Lock order: the driver's enclave lock, then this space's lock (innermost); nothing is
//! called with the space lock held that could take an enclave lock.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use libc::c_int;
use parking_lot::{Mutex, RwLock, RwLockReadGuard};
use rustc_hash::FxHashMap;
use sgxemu_arch::{PAGE_SIZE, PageType, SecinfoFlags};
use sgxemu_cpu::{AccessKind, EpcIndex, EpcmObserver, PageTable, Processor, Translation};
use sgxemu_driver::os::{AddressSpace, MmId, Prot, Vma};
use sgxemu_driver::{Cpu, Encl, Errno, FaultResult, KResult};

use crate::epc_memory::MemfdEpc;
use crate::sys;

const PAGE: u64 = PAGE_SIZE as u64;

/// The protection an access of `kind` needs.
fn prot_for(kind: AccessKind) -> Prot {
    match kind {
        AccessKind::Read => Prot::READ,
        AccessKind::Write => Prot::WRITE,
        AccessKind::Execute => Prot::EXEC,
    }
}

fn page_of(addr: u64) -> u64 {
    addr & !(PAGE - 1)
}

/// One mapping of an enclave file.
#[derive(Clone, Debug)]
struct EnclaveVma {
    end: u64,
    prot: Prot,
    encl: Arc<Encl>,
    /// VM_MAYWRITE: the descriptor it was mapped through was open for writing.
    may_write: bool,
}

/// A PTE: the EPC page a linear page maps, and what the host mapping currently allows.
#[derive(Clone, Copy, Debug)]
struct Pte {
    epc: EpcIndex,
    vma_prot: Prot,
    host_prot: c_int,
    /// Whether the EPC page is mapped at the address. A PTE whose page the host may not
    /// touch at all (PENDING, TCS, blocked…) leaves the inaccessible placeholder there
    /// instead: both fault alike, and the mapping is made once the EPCM allows access
    /// (EAUG then EACCEPT costs one `mmap`, not an `mmap` and an `mprotect`).
    mapped: bool,
    young: bool,
}

#[derive(Debug, Default)]
struct Inner {
    vmas: BTreeMap<u64, EnclaveVma>,
    ptes: FxHashMap<u64, Pte>,
    by_epc: FxHashMap<EpcIndex, u64>,
    /// Pages in the order their PTEs were installed (may hold stale entries).
    installed: std::collections::VecDeque<u64>,
}

/// At most this many enclave pages are mapped at once. Each mapped page can cost the host
/// two VMAs (EPC pages of neighbouring addresses are rarely neighbours in the EPC file),
/// and a process that reaches `vm.max_map_count` (65530) cannot even munmap any more. Past
/// the budget the oldest PTE is dropped, as the kernel may drop any PTE: the page stays in
/// the EPC and the next access maps it again.
pub const MAX_MAPPED_PAGES: usize = 16 * 1024;

/// How the memory manager resolved a fault in an enclave mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resolution {
    /// Mapped (or already mapped): retry the access.
    Retry,
    /// A present PTE: the access check (EPCM, PTE permissions) decides.
    Present,
    /// The VMA does not allow the access: SIGSEGV with an ordinary #PF.
    AccessError,
    /// The driver refused: SIGBUS.
    Bus,
    /// Out of memory.
    Oom,
    /// Not an enclave mapping.
    NotOurs,
}

/// The enclave side of this process's address space.
#[derive(Debug)]
pub struct Space {
    inner: Mutex<Inner>,
    processor: Arc<Processor>,
    epc: Arc<MemfdEpc>,
    /// Number of enclave VMAs: lets munmap/mprotect of ordinary memory skip the lock.
    vma_count: AtomicUsize,
    /// Held (shared) by an ENCLU run from outside enclave mode — EENTER, ERESUME — for
    /// as long as the leaf uses the translations it looked up; a zap takes it exclusively
    /// once the PTE is gone. That is the TLB shootdown: on hardware the reclaimer's IPI
    /// waits for an instruction in flight, so EWB never frees a page an ENCLU is about to
    /// use through a stale translation.
    translations_in_use: RwLock<()>,
}

impl Space {
    /// An empty space over `epc`.
    pub fn new(processor: Arc<Processor>, epc: Arc<MemfdEpc>) -> Arc<Self> {
        Arc::new(Space {
            inner: Mutex::new(Inner::default()),
            processor,
            epc,
            vma_count: AtomicUsize::new(0),
            translations_in_use: RwLock::new(()),
        })
    }

    /// True if `[addr, addr + len)` overlaps an enclave mapping (lock-free when there are
    /// none, the common case for ordinary munmap/mprotect calls).
    pub fn overlaps(&self, addr: u64, len: u64) -> bool {
        if self.vma_count.load(Ordering::Acquire) == 0 {
            return false;
        }
        let end = addr.saturating_add(len);
        self.inner.lock().vmas.range(..end).any(|(&start, v)| v.end > addr && start < end)
    }

    /// Every enclave mapping: its range and protections, by address.
    pub fn mappings(&self) -> Vec<(std::ops::Range<u64>, Prot)> {
        if self.vma_count.load(Ordering::Acquire) == 0 {
            return Vec::new();
        }
        self.inner.lock().vmas.iter().map(|(&start, v)| (start..v.end, v.prot)).collect()
    }

    /// The enclave and protections of the mapping containing `addr`.
    pub fn vma_at(&self, addr: u64) -> Option<(Arc<Encl>, Prot)> {
        if self.vma_count.load(Ordering::Acquire) == 0 {
            return None;
        }
        let inner = self.inner.lock();
        Self::find(&inner, addr).map(|(_, v)| (v.encl.clone(), v.prot))
    }

    fn find(inner: &Inner, addr: u64) -> Option<(u64, &EnclaveVma)> {
        inner.vmas.range(..=addr).next_back().filter(|(_, v)| v.end > addr).map(|(&s, v)| (s, v))
    }

    /// Records a mapping of `encl` over `[addr, addr + len)` (page aligned, already
    /// validated by the driver) and reserves the host range inaccessible: pages become
    /// accessible only as the fault handler maps them. With `fixed` false the host picks
    /// the address; `may_write` is false for a descriptor opened read-only (no later
    /// mprotect may make it writable). Returns the address.
    pub fn map(
        &self,
        addr: u64,
        len: u64,
        prot: Prot,
        encl: Arc<Encl>,
        fixed: bool,
        may_write: bool,
    ) -> std::io::Result<u64> {
        let len = len.div_ceil(PAGE) * PAGE;
        let mut flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE;
        if fixed {
            flags |= libc::MAP_FIXED;
        }
        let mut inner = self.inner.lock();
        let start = sys::mmap(addr, len, libc::PROT_NONE, flags, -1, 0)?;
        // The kernel sets VM_DONTDUMP on enclave VMAs. (A fork child gets none of the
        // enclave: see `exclude_from_fork`.)
        let _ = sys::madvise(start, len, libc::MADV_DONTDUMP);
        Self::remove_range(&mut inner, start, start + len);
        inner.vmas.insert(start, EnclaveVma { end: start + len, prot, encl, may_write });
        self.vma_count.store(inner.vmas.len(), Ordering::Release);
        Ok(start)
    }

    /// munmap of `[addr, addr + len)`: forgets the enclave mappings there and unmaps the
    /// host range. Returns the enclaves that lost a mapping.
    pub fn unmap(&self, addr: u64, len: u64) -> std::io::Result<Vec<Arc<Encl>>> {
        let end = addr.saturating_add(len.div_ceil(PAGE) * PAGE);
        let mut inner = self.inner.lock();
        sys::munmap(addr, end - addr)?;
        let touched = Self::remove_range(&mut inner, addr, end);
        self.vma_count.store(inner.vmas.len(), Ordering::Release);
        Ok(touched)
    }

    /// A mapping the program puts over `[addr, addr + len)` that is not of an enclave file
    /// (`mmap` with MAP_FIXED, `mremap` with MREMAP_FIXED): `map` makes it on the host, and
    /// if it succeeds the enclave mappings there are gone, as the kernel's new VMA replaces
    /// the old ones. Both under the space lock, so no zap (the reclaimer's EWB) can put an
    /// inaccessible placeholder over the program's new page and no fault can map an EPC
    /// page over it. Returns `map`'s result and the enclaves that lost a mapping.
    pub fn replace<T>(
        &self,
        addr: u64,
        len: u64,
        map: impl FnOnce() -> std::io::Result<T>,
    ) -> std::io::Result<(T, Vec<Arc<Encl>>)> {
        let end = addr.saturating_add(len.div_ceil(PAGE) * PAGE);
        let mut inner = self.inner.lock();
        let made = map()?;
        let touched = Self::remove_range(&mut inner, addr, end);
        self.vma_count.store(inner.vmas.len(), Ordering::Release);
        Ok((made, touched))
    }

    /// Whether `encl` still has a mapping in this space.
    pub fn maps(&self, encl: &Arc<Encl>) -> bool {
        self.inner.lock().vmas.values().any(|v| Arc::ptr_eq(&v.encl, encl))
    }

    /// The enclaves mapped in `[addr, addr + len)`.
    pub fn enclaves_in(&self, addr: u64, len: u64) -> Vec<Arc<Encl>> {
        let end = addr.saturating_add(len);
        let inner = self.inner.lock();
        inner.vmas.range(..end).filter(|&(&s, v)| v.end > addr && s < end).map(|(_, v)| v.encl.clone()).collect()
    }

    /// The enclave mappings overlapping `[addr, end)`, each clipped to it, in address order,
    /// with its VM_MAYWRITE.
    pub fn enclave_vmas_in(&self, addr: u64, end: u64) -> Vec<(std::ops::Range<u64>, Arc<Encl>, bool)> {
        let inner = self.inner.lock();
        inner
            .vmas
            .range(..end)
            .filter(|&(&s, v)| v.end > addr && s < end)
            .map(|(&s, v)| (s.max(addr)..v.end.min(end), v.encl.clone(), v.may_write))
            .collect()
    }

    fn split(inner: &mut Inner, at: u64) {
        let Some((&start, vma)) = inner.vmas.range(..at).next_back() else { return };
        if vma.end > at {
            let tail = vma.clone();
            if let Some(head) = inner.vmas.get_mut(&start) {
                head.end = at;
            }
            inner.vmas.insert(at, tail);
        }
    }

    fn remove_range(inner: &mut Inner, addr: u64, end: u64) -> Vec<Arc<Encl>> {
        Self::split(inner, addr);
        Self::split(inner, end);
        let starts: Vec<u64> = inner.vmas.range(addr..end).map(|(&s, _)| s).collect();
        let touched = starts.iter().filter_map(|s| inner.vmas.remove(s)).map(|v| v.encl).collect();
        let pages: Vec<u64> = inner.ptes.keys().copied().filter(|&p| p >= addr && p < end).collect();
        for page in pages {
            if let Some(pte) = inner.ptes.remove(&page) {
                inner.by_epc.remove(&pte.epc);
            }
        }
        touched
    }

    /// mprotect of an enclave range (already validated by the driver): new VMA protections,
    /// and the host protections of every mapped page recomputed.
    pub fn protect(&self, addr: u64, len: u64, prot: Prot) -> std::io::Result<()> {
        let end = addr.saturating_add(len.div_ceil(PAGE) * PAGE);
        let mut inner = self.inner.lock();
        Self::split(&mut inner, addr);
        Self::split(&mut inner, end);
        for (_, vma) in inner.vmas.range_mut(addr..end) {
            vma.prot = prot;
        }
        let pages: Vec<u64> = inner.ptes.keys().copied().filter(|&p| p >= addr && p < end).collect();
        for page in pages {
            if let Some(pte) = inner.ptes.get_mut(&page) {
                pte.vma_prot = prot;
            }
            self.sync_host(&mut inner, page)?;
        }
        Ok(())
    }

    /// Host protection for an EPC page under `vma_prot`: what the EPCM lets enclave code do.
    fn host_prot(&self, epc: EpcIndex, vma_prot: Prot) -> c_int {
        Self::host_prot_of(&self.processor.epcm_view(epc), vma_prot)
    }

    /// [`Space::host_prot`] for an EPCM entry already read.
    fn host_prot_of(view: &sgxemu_cpu::EpcmView, vma_prot: Prot) -> c_int {
        let usable = view.valid
            && view.page_type == PageType::Reg
            && !view.blocked
            && !view.flags.intersects(SecinfoFlags::PENDING | SecinfoFlags::MODIFIED);
        if !usable {
            return libc::PROT_NONE;
        }
        let mut prot = libc::PROT_NONE;
        if vma_prot.contains(Prot::READ) && view.flags.contains(SecinfoFlags::R) {
            prot |= libc::PROT_READ;
        }
        if vma_prot.contains(Prot::WRITE) && view.flags.contains(SecinfoFlags::W) {
            prot |= libc::PROT_WRITE;
        }
        if vma_prot.contains(Prot::EXEC) && view.flags.contains(SecinfoFlags::X) {
            prot |= libc::PROT_EXEC;
        }
        prot
    }

    /// Brings the host protection of the page at `page` in line with its PTE and EPCM entry.
    fn sync_host(&self, inner: &mut Inner, page: u64) -> std::io::Result<()> {
        let Some(pte) = inner.ptes.get_mut(&page) else { return Ok(()) };
        let wanted = self.host_prot(pte.epc, pte.vma_prot);
        if wanted == pte.host_prot {
            return Ok(());
        }
        if pte.mapped {
            sys::mprotect(page, PAGE, wanted)?;
        } else {
            self.map_epc_page(page, pte.epc, wanted)?;
            pte.mapped = true;
        }
        pte.host_prot = wanted;
        Ok(())
    }

    /// Maps EPC page `epc` at `page` with `prot`.
    fn map_epc_page(&self, page: u64, epc: EpcIndex, prot: c_int) -> std::io::Result<()> {
        let offset = u64::from(epc.0) * PAGE;
        sys::mmap(page, PAGE, prot, libc::MAP_SHARED | libc::MAP_FIXED, self.epc.fd(), offset).map(drop)
    }

    fn install(&self, addr: u64, pa: u64, vma_prot: Prot) -> KResult<()> {
        let page = page_of(addr);
        let epc = self.processor.epc_index(pa).ok_or(Errno::EFAULT)?;
        // Never an EPC page at an address the EPCM does not give it (another enclave's page
        // is reached only where its own enclave's mapping puts it).
        let view = self.processor.epcm_view(epc);
        if view.valid && view.enclave_address != page {
            return Err(Errno::EFAULT);
        }
        let mut inner = self.inner.lock();
        if Self::find(&inner, page).is_none() {
            return Err(Errno::EFAULT);
        }
        let host_prot = Self::host_prot_of(&view, vma_prot);
        // Without access, the placeholder already there serves — unless an older PTE's EPC
        // page is still mapped at the address.
        let replaces_mapping = inner.ptes.get(&page).is_some_and(|old| old.mapped);
        let mapped = host_prot != libc::PROT_NONE || replaces_mapping;
        if mapped {
            self.map_epc_page(page, epc, host_prot).map_err(|_| Errno::ENOMEM)?;
        }
        if let Some(old) = inner.ptes.insert(page, Pte { epc, vma_prot, host_prot, mapped, young: true }) {
            inner.by_epc.remove(&old.epc);
        }
        inner.by_epc.insert(epc, page);
        inner.installed.push_back(page);
        while inner.ptes.len() > MAX_MAPPED_PAGES {
            let Some(oldest) = inner.installed.pop_front() else { break };
            if oldest != page {
                Self::drop_pte(&mut inner, oldest);
            }
        }
        if inner.installed.len() > 4 * MAX_MAPPED_PAGES {
            let ptes = &inner.ptes;
            let live: std::collections::VecDeque<u64> =
                inner.installed.iter().copied().filter(|p| ptes.contains_key(p)).collect();
            inner.installed = live;
        }
        Ok(())
    }

    /// Removes the PTE of `page` and makes the host page inaccessible again.
    fn drop_pte(inner: &mut Inner, page: u64) {
        if let Some(pte) = inner.ptes.remove(&page) {
            inner.by_epc.remove(&pte.epc);
            if !pte.mapped {
                return;
            }
            // Replace the page with an inaccessible placeholder: the next access faults into
            // the driver again. The host flushes TLBs of every thread before mmap returns,
            // the shootdown ETRACK's IPIs stand for.
            let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_FIXED;
            if sys::mmap(page, PAGE, libc::PROT_NONE, flags, -1, 0).is_err() {
                // Never leave the old EPC page reachable: fall back to revoking access.
                let _ = sys::mprotect(page, PAGE, libc::PROT_NONE);
            }
        }
    }

    /// Moves the EPC memfd to another descriptor number, with no EPC page being mapped
    /// meanwhile (every mapping from the memfd is made under the space lock), so none is
    /// made from the old number once the program has put its own file there.
    pub fn move_epc_fd(&self) -> std::io::Result<()> {
        let _inner = self.inner.lock();
        self.epc.move_fd()
    }

    /// Before `fork`: no enclave page may be inherited (an enclave belongs to the process
    /// that created it). One `MADV_DONTFORK` per enclave mapping here, rather than one per
    /// page each time a page is mapped.
    pub fn exclude_from_fork(&self) {
        let inner = self.inner.lock();
        for (&start, vma) in &inner.vmas {
            // Covers every host mapping in the range (EPC pages and placeholders alike).
            let _ = sys::madvise(start, vma.end - start, libc::MADV_DONTFORK);
        }
    }

    /// Resolves a fault at `addr` for an access of `kind`: the driver's fault handler for a
    /// page without a PTE, else what the VMA says.
    pub fn fault(&self, cpu: &mut Cpu, addr: u64, kind: AccessKind) -> Resolution {
        let page = page_of(addr);
        let (resolution, found) = self.classify(page, kind);
        let Some((encl, prot)) = found.filter(|_| resolution == Resolution::Retry) else { return resolution };
        let mut vma = VmaAdapter { space: self, prot };
        match encl.fault(cpu, Some(&mut vma), page) {
            FaultResult::NoPage => Resolution::Retry,
            FaultResult::SigBus => Resolution::Bus,
            FaultResult::Oom => Resolution::Oom,
        }
    }

    /// What a fault at `addr` for `kind` is, without running the driver: `Retry` means "no
    /// PTE, the VMA allows it: the driver's fault handler decides" (with the VMA's enclave).
    pub fn classify(&self, addr: u64, kind: AccessKind) -> (Resolution, Option<(Arc<Encl>, Prot)>) {
        let page = page_of(addr);
        let inner = self.inner.lock();
        let Some((_, vma)) = Self::find(&inner, page) else { return (Resolution::NotOurs, None) };
        let needed = prot_for(kind);
        if !vma.prot.contains(needed) {
            return (Resolution::AccessError, None);
        }
        if inner.ptes.contains_key(&page) {
            return (Resolution::Present, None);
        }
        (Resolution::Retry, Some((vma.encl.clone(), vma.prot)))
    }

    /// Whether a fault at `addr` for `kind` only waits for the driver to map (or reload) a
    /// page the enclave has, with that permission: not a hole the driver would EAUG, not a
    /// page mapped already that the access checks refuse.
    pub fn maps_existing_page(&self, addr: u64, kind: AccessKind) -> bool {
        let (resolution, found) = self.classify(addr, kind);
        let needed = prot_for(kind);
        resolution == Resolution::Retry
            && found.is_some_and(|(encl, _)| {
                encl.page_record(page_of(addr))
                    .is_some_and(|(kind, prot, _)| kind == PageType::Reg && prot.contains(needed))
            })
    }

    /// Whether `addr`, inside the ELRANGE of the enclave `lp` runs, is covered by a mapping
    /// of another enclave `encl` (the enclave running is the one its TCS is mapped from).
    pub fn foreign_in_elrange(&self, lp: &sgxemu_cpu::Lp, addr: u64, encl: &Arc<Encl>) -> bool {
        let (Some((base, size)), Some(tcs)) = (lp.elrange(), lp.tcs()) else { return false };
        if addr.wrapping_sub(base) >= size {
            return false;
        }
        let inner = self.inner.lock();
        Self::find(&inner, page_of(tcs)).is_some_and(|(_, running)| !Arc::ptr_eq(&running.encl, encl))
    }

    /// Keeps zaps waiting while an ENCLU from outside enclave mode uses its translations
    /// (see `translations_in_use`). Drop it before running the driver's fault handler.
    pub fn translations(&self) -> RwLockReadGuard<'_, ()> {
        self.translations_in_use.read()
    }

    /// Re-derives the host protection of the page `epc` is mapped at, if any (an EPCM
    /// entry changed).
    pub fn refresh(&self, epc: EpcIndex) {
        let mut inner = self.inner.lock();
        if let Some(&page) = inner.by_epc.get(&epc) {
            let _ = self.sync_host(&mut inner, page);
        }
    }

    /// Re-derives the host protection of the page at `addr`.
    pub fn refresh_addr(&self, addr: u64) {
        let _ = self.sync_host(&mut self.inner.lock(), page_of(addr));
    }

    /// The EPC page mapped at `addr`, if any.
    pub fn epc_at(&self, addr: u64) -> Option<EpcIndex> {
        self.inner.lock().ptes.get(&page_of(addr)).map(|p| p.epc)
    }
}

/// The faulting VMA as the driver sees it.
struct VmaAdapter<'a> {
    space: &'a Space,
    prot: Prot,
}

impl Vma for VmaAdapter<'_> {
    fn prot(&self) -> Prot {
        self.prot
    }

    fn insert_pfn(&mut self, addr: u64, pa: u64) -> KResult<()> {
        self.space.install(addr, pa, self.prot)
    }

    fn clear_young(&mut self, addr: u64) {
        if let Some(pte) = self.space.inner.lock().ptes.get_mut(&page_of(addr)) {
            pte.young = false;
        }
    }
}

impl AddressSpace for Space {
    fn id(&self) -> MmId {
        1
    }

    fn alive(&self) -> bool {
        // The process's own address space: alive for as long as anything can ask.
        true
    }

    fn zap(&self, addr: u64) {
        Self::drop_pte(&mut self.inner.lock(), page_of(addr));
        // The shootdown: wait for every leaf that may have looked the old PTE up.
        drop(self.translations_in_use.write());
    }

    fn test_and_clear_young(&self, addr: u64) -> bool {
        // Host page tables do not tell us about accesses; a PTE counts as young once after it
        // was installed, so the reclaimer's aging still skips a just-faulted page one round.
        match self.inner.lock().ptes.get_mut(&page_of(addr)) {
            Some(pte) => std::mem::replace(&mut pte.young, false),
            None => false,
        }
    }
}

impl PageTable for Space {
    fn translate(&self, la: u64) -> Translation {
        let inner = self.inner.lock();
        match inner.ptes.get(&page_of(la)) {
            Some(pte) => Translation::Present {
                pa: self.processor.epc_addr(pte.epc),
                writable: pte.vma_prot.contains(Prot::WRITE),
                executable: pte.vma_prot.contains(Prot::EXEC),
            },
            None => Translation::NotPresent,
        }
    }
}

/// Follows EPCM changes into host protections.
#[derive(Debug)]
pub struct EpcmFollower(pub std::sync::Weak<Space>);

impl EpcmObserver for EpcmFollower {
    fn epcm_changed(&self, page: EpcIndex) {
        if let Some(space) = self.0.upgrade() {
            space.refresh(page);
        }
    }
}
