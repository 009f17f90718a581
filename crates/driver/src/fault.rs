//! The page-fault handler of enclave VMAs (`sgx_vma_fault`, driver spec §5): reload a
//! written-out page, EAUG a new page into a hole of an initialized SGX2 enclave, or SIGBUS.

use sgxemu_arch::{PAGE_SIZE, PageType};

use crate::encl::{Encl, EnclPage, LoadError};
use crate::encls::Cpu;
use crate::errno::Errno;
use crate::os::{Prot, Vma};

/// What the fault handler tells the memory manager.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultResult {
    /// VM_FAULT_NOPAGE: a PTE was installed, or the access should simply be retried.
    NoPage,
    /// VM_FAULT_SIGBUS.
    SigBus,
    /// VM_FAULT_OOM (kernel memory exhausted).
    Oom,
}

impl Encl {
    /// Handles a not-present or protection fault at `addr` in an enclave VMA. `vma` is `None`
    /// for a VMA whose enclave reference was lost (a failed `.open` after fork).
    pub fn fault(&self, cpu: &mut Cpu, vma: Option<&mut dyn Vma>, addr: u64) -> FaultResult {
        // 1.
        let Some(vma) = vma else { return FaultResult::SigBus };
        let addr = addr & !(PAGE_SIZE as u64 - 1);
        let mut st = self.lock();
        // 2.
        if self.sgx.sgx2() && !st.pages.contains(addr) {
            drop(st);
            return self.eaug_page(cpu, vma, addr);
        }
        // 3.
        let epc = match self.load_page(&mut st, cpu, addr, Some(vma.prot())) {
            Ok(epc) => epc,
            Err(LoadError::Busy) => return FaultResult::NoPage,
            Err(LoadError::NoPage | LoadError::Access | LoadError::Other(_)) => return FaultResult::SigBus,
        };
        // 4. and 5.
        if vma.insert_pfn(addr, self.sgx.epc_addr(epc)).is_err() {
            return FaultResult::SigBus;
        }
        vma.clear_young(addr);
        FaultResult::NoPage
    }

    /// Test hook (driver spec §5.2 step 7): the dynamic-add half of [`Encl::fault`], entered
    /// for `addr` as a fault continues after step 2 saw no record there. Calling it for an
    /// address another fault has meanwhile added replays, deterministically, the loser's side
    /// of two concurrent faults on the same hole.
    #[doc(hidden)]
    pub fn fault_after_seeing_a_hole(&self, cpu: &mut Cpu, vma: &mut dyn Vma, addr: u64) -> FaultResult {
        self.eaug_page(cpu, vma, addr & !(PAGE_SIZE as u64 - 1))
    }

    /// `sgx_encl_eaug_page` (driver spec §5.2). Never reclaims: EPC shortage gives NOPAGE
    /// (retry after ksgxd freed pages) or SIGBUS when nothing is reclaimable.
    fn eaug_page(&self, cpu: &mut Cpu, vma: &mut dyn Vma, addr: u64) -> FaultResult {
        let sgx = self.sgx.clone();
        // 1.
        let mut st = self.lock();
        if !st.flags.initialized {
            return FaultResult::SigBus;
        }
        // 2. (A page record costs no memory this process can run out of: never OOM.)
        // 3. and 4.
        let secs = match self.load_secs(&mut st, cpu) {
            Ok(secs) => sgx.epc_addr(secs),
            Err(LoadError::Busy) => return FaultResult::NoPage,
            Err(_) => return FaultResult::SigBus,
        };
        // 7. A concurrent fault may have added the page while this one waited for the lock.
        // Mainline then frees its page and returns SIGBUS (a known race); we take the fix
        // proposed upstream and let the access retry, which maps the winner's page.
        if st.pages.contains(addr) {
            return FaultResult::NoPage;
        }
        // 5.
        let epc = match sgx.alloc_epc(cpu, false, None) {
            Ok(epc) => epc,
            Err(Errno::EBUSY) => return FaultResult::NoPage,
            Err(_) => return FaultResult::SigBus,
        };
        // 6.
        let va = match self.grow(cpu, &mut st) {
            Ok(va) => va,
            Err(e) => {
                sgx.pool.put_free(epc);
                return if e == Errno::EBUSY { FaultResult::NoPage } else { FaultResult::SigBus };
            }
        };
        if let Some(va) = va {
            Encl::link_va(&mut st, va);
        }
        // 8.
        if cpu.eaug(&sgx.processor, secs, addr, sgx.epc_addr(epc)).is_err() {
            self.shrink(cpu, &mut st, va);
            sgx.free_epc(cpu, epc);
            return FaultResult::SigBus;
        }
        // 9.
        let mut record = EnclPage::new(Prot::READ | Prot::WRITE | Prot::EXEC, PageType::Reg);
        record.epc = Some(epc);
        st.pages.insert(addr, record);
        st.secs_child_cnt += 1;
        sgx.pool.mark_reclaimable(epc, self.owner(Some(addr)));
        // 10. A failed insert leaves the page added; a later fault maps it.
        if vma.insert_pfn(addr, sgx.epc_addr(epc)).is_err() {
            return FaultResult::SigBus;
        }
        FaultResult::NoPage
    }
}
