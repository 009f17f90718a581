//! The driver as a whole (the kernel's SGX subsystem): the processor, the EPC allocator, the
//! platform services, and the device nodes' `open`.

use std::sync::Arc;

use parking_lot::Mutex;
use sgxemu_arch::AttributesFlags;
use sgxemu_cpu::{EpcIndex, Processor};

use crate::encl::Encl;
use crate::encls::Cpu;
use crate::epc::{EpcPool, NR_LOW_PAGES, NR_TO_SCAN, ReclaimState};
use crate::errno::{Errno, KResult};
use crate::os::{Platform, Task};

/// The SGX driver of one machine: `/dev/sgx_enclave` and `/dev/sgx_provision`.
pub struct Sgx {
    pub(crate) processor: Arc<Processor>,
    pub(crate) pool: EpcPool,
    pub(crate) platform: Arc<dyn Platform>,
    /// Attribute bits SIGSTRUCT may not ask for (`sgx_attributes_reserved_mask`).
    pub(crate) attributes_reserved: u64,
    /// MISCSELECT bits SIGSTRUCT may not ask for.
    pub(crate) misc_reserved: u64,
    /// XFRM bits SIGSTRUCT may not ask for.
    pub(crate) xfrm_reserved: u64,
    warnings: Mutex<Vec<String>>,
}

impl std::fmt::Debug for Sgx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sgx").field("free_pages", &self.pool.nr_free()).finish_non_exhaustive()
    }
}

/// Why the driver did not load (the kernel then registers no `/dev/sgx_enclave`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InitError {
    /// The native driver requires flexible launch control.
    #[error("the emulated part has no flexible launch control; /dev/sgx_enclave needs it")]
    NoLaunchControl,
}

impl Sgx {
    /// Loads the driver on `processor`: every EPC page starts free (the kernel's sanitization
    /// with EREMOVE finds a fresh EPC empty).
    pub fn new(processor: Arc<Processor>, platform: Arc<dyn Platform>) -> Result<Arc<Sgx>, InitError> {
        let config = processor.config();
        if !config.flexible_launch_control {
            return Err(InitError::NoLaunchControl);
        }
        let [attr_lo, attr_hi, xfrm_lo, xfrm_hi] = config.cpuid_leaf12(1);
        let settable_attributes = u64::from(attr_lo) | u64::from(attr_hi) << 32;
        let settable_xfrm = u64::from(xfrm_lo) | u64::from(xfrm_hi) << 32;
        let misc = u64::from(config.cpuid_leaf12(0)[1]);
        Ok(Arc::new(Sgx {
            pool: EpcPool::new(processor.epc_pages()),
            attributes_reserved: !settable_attributes | sgxemu_uapi::SGX_ATTR_RESERVED_MASK,
            misc_reserved: !misc | sgxemu_uapi::SGX_MISC_RESERVED_MASK,
            // The OS has XSAVE enabled: the part's XFRM mask decides.
            xfrm_reserved: !settable_xfrm,
            processor,
            platform,
            warnings: Mutex::new(Vec::new()),
        }))
    }

    /// The processor the driver runs on.
    pub fn processor(&self) -> &Arc<Processor> {
        &self.processor
    }

    /// A logical processor for kernel work (each thread that enters the driver owns one).
    pub fn new_cpu(&self) -> Cpu {
        Cpu::new(&self.processor)
    }

    /// `open("/dev/sgx_enclave")`: a new, empty enclave object.
    pub fn open_enclave(self: &Arc<Self>) -> Arc<Encl> {
        Arc::new_cyclic(|weak| Encl::new(self.clone(), weak.clone()))
    }

    /// True if the part has the SGX2 leaves.
    pub fn sgx2(&self) -> bool {
        self.processor.config().sgx2
    }

    /// Free EPC pages.
    pub fn free_pages(&self) -> usize {
        self.pool.nr_free()
    }

    /// Kernel warnings so far (WARN_ON and "EPC page was leaked" messages). A correct run
    /// has none.
    pub fn warnings(&self) -> Vec<String> {
        self.warnings.lock().clone()
    }

    pub(crate) fn warn(&self, message: String) {
        self.platform.log_warning(&message);
        self.warnings.lock().push(message);
    }

    /// A broken internal invariant met on a path a program can reach: the kernel's answer
    /// to a driver bug is a failed call (EIO), never a crash. Logs one warning naming it.
    pub(crate) fn bug(&self, what: &str) -> Errno {
        self.warn(format!("driver bug: {what}; the call fails with EIO"));
        Errno::EIO
    }

    pub(crate) fn epc_addr(&self, page: EpcIndex) -> u64 {
        self.processor.epc_addr(page)
    }

    /// `sgx_alloc_epc_page(reclaim)`: a free page, or with `reclaim` run reclaim batches until
    /// one frees up. ENOMEM if nothing is reclaimable, EBUSY without `reclaim`,
    /// ERESTARTSYS on a pending signal.
    ///
    /// [DESIGN] Mainline says ENOMEM as soon as the active list is empty, even while the
    /// reclaimer holds isolated pages it is about to free. Here such pages still count:
    /// without `reclaim` the answer is EBUSY (the caller retries, as after a fault's
    /// NOPAGE); with `reclaim` the allocator waits for them, but only for a bounded time
    /// ([`IN_FLIGHT_PATIENCE`]) and never past a pending signal, then says ENOMEM — so a
    /// caller can never spin on pages that do not come back.
    pub(crate) fn alloc_epc(&self, cpu: &mut Cpu, reclaim: bool, task: Option<&dyn Task>) -> KResult<EpcIndex> {
        let mut waiting_since = None;
        let result = loop {
            if let Some(page) = self.pool.take_free() {
                break Ok(page);
            }
            let state = self.pool.reclaim_state();
            if state == ReclaimState::Exhausted {
                // The reclaimer frees a page before it stops tracking it, so a page freed
                // since the first look is on the free list now.
                break self.pool.take_free().ok_or(Errno::ENOMEM);
            }
            if !reclaim {
                break Err(Errno::EBUSY);
            }
            if task.is_some_and(|t| t.signal_pending()) {
                break Err(Errno::ERESTARTSYS);
            }
            if state == ReclaimState::Reclaimable {
                crate::reclaim::reclaim_pages(self, cpu, NR_TO_SCAN);
                continue;
            }
            let since = waiting_since.get_or_insert_with(std::time::Instant::now);
            if since.elapsed() >= IN_FLIGHT_PATIENCE {
                break Err(Errno::ENOMEM);
            }
            std::thread::yield_now();
        };
        if self.pool.should_reclaim(NR_LOW_PAGES) {
            self.platform.wake_reclaimer();
        }
        result
    }

    /// `sgx_reclaim_direct`: one batch if free pages are low.
    pub(crate) fn reclaim_direct(&self, cpu: &mut Cpu) {
        if self.pool.should_reclaim(NR_LOW_PAGES) {
            crate::reclaim::reclaim_pages(self, cpu, NR_TO_SCAN);
        }
    }

    /// Returns a page the reclaimer isolated and emptied to the free list: `written_out`
    /// (EWB invalidated it already), or else EREMOVEd here. The page is free before it
    /// stops counting as in flight, so an allocator that finds neither a free nor an
    /// in-flight page can trust that nothing is coming back.
    pub(crate) fn free_isolated(&self, cpu: &mut Cpu, page: EpcIndex, written_out: bool) {
        if written_out || self.eremove(cpu, page) {
            self.pool.put_free(page);
        }
        self.pool.untrack(page);
    }

    /// `sgx_encl_free_epc_page`: EREMOVE and return the page; a failing EREMOVE leaks it
    /// with the kernel's warning.
    pub(crate) fn free_epc(&self, cpu: &mut Cpu, page: EpcIndex) {
        if self.pool.is_tracked(page) {
            self.warn(format!("freeing EPC page {page:?} still tracked by the reclaimer"));
        }
        if self.eremove(cpu, page) {
            self.pool.put_free(page);
        }
    }

    /// EREMOVE of a page being freed; false (with the kernel's warning) leaks it.
    fn eremove(&self, cpu: &mut Cpu, page: EpcIndex) -> bool {
        let result = cpu.eremove(&self.processor, self.epc_addr(page));
        if let Err(e) = result {
            self.warn(format!("EREMOVE returned {e:?} and an EPC page was leaked"));
        }
        result.is_ok()
    }

    /// ksgxd's loop body: reclaim while below the high watermark. Returns pages reclaimed.
    pub fn ksgxd_run(&self, cpu: &mut Cpu) -> usize {
        let before = self.pool.nr_free();
        while self.pool.should_reclaim(crate::epc::NR_HIGH_PAGES) {
            if crate::reclaim::reclaim_pages(self, cpu, NR_TO_SCAN) == 0 {
                break;
            }
        }
        self.pool.nr_free().saturating_sub(before)
    }

    /// Whether ksgxd has work (below the high watermark with something reclaimable).
    pub fn ksgxd_should_run(&self) -> bool {
        self.pool.should_reclaim(crate::epc::NR_HIGH_PAGES)
    }
}

/// How long a reclaiming allocation waits for pages another reclaimer holds when nothing
/// else is reclaimable (a batch writes out at most 16 pages; this is far longer).
const IN_FLIGHT_PATIENCE: std::time::Duration = std::time::Duration::from_secs(1);

/// Attributes every enclave may have without a token (`SGX_ATTR_UNPRIV_MASK`).
pub(crate) const UNPRIV_ATTRIBUTES: u64 = sgxemu_uapi::SGX_ATTR_UNPRIV_MASK;

/// The uapi mask is exactly the architecture's unprivileged attribute bits.
const _: () = {
    let unpriv = AttributesFlags::DEBUG.bits()
        | AttributesFlags::MODE64BIT.bits()
        | AttributesFlags::KSS.bits()
        | AttributesFlags::AEXNOTIFY.bits();
    assert!(unpriv == UNPRIV_ATTRIBUTES);
};

#[cfg(test)]
mod tests {
    use std::sync::Weak;

    use super::*;
    use crate::epc::Owner;

    /// An allocation concludes ENOMEM only from a consistent view of the reclaimer: the
    /// reclaimer frees a written-out page before it stops counting it as in flight, and the
    /// allocator reads "on the list" and "in flight" in one look. Here every EPC page is in
    /// use and one of them, reclaimable, is held by a "reclaimer" thread that frees it or
    /// puts it back while the test allocates without reclaim: the answer may be EBUSY
    /// (retry), never ENOMEM. Before, a look between the untrack and the free of the page,
    /// or one look before and one after it was put back, gave ENOMEM — a fault's SIGBUS
    /// that killed a thrashing enclave entry (the native `killable` test, 1 run in 10–40).
    #[test]
    fn an_allocation_never_concludes_enomem_while_the_reclaimer_holds_a_page() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let machine = crate::sim::Machine::with_epc(16 * 4096);
        let sgx = &machine.sgx;
        for round in 0..20_000 {
            let in_use: Vec<EpcIndex> = std::iter::from_fn(|| sgx.pool.take_free()).collect();
            sgx.pool.mark_reclaimable(in_use[0], Owner { encl: Weak::new(), addr: Some(0x1000) });
            let held = sgx.pool.isolate(1);
            assert_eq!(held.len(), 1);
            let done = AtomicBool::new(false);
            std::thread::scope(|s| {
                s.spawn(|| {
                    if round % 2 == 0 {
                        sgx.pool.putback(held[0].page);
                    } else {
                        sgx.free_isolated(&mut sgx.new_cpu(), held[0].page, true);
                    }
                    done.store(true, Ordering::Release);
                });
                let mut cpu = sgx.new_cpu();
                while !done.load(Ordering::Acquire) {
                    match sgx.alloc_epc(&mut cpu, false, None) {
                        Ok(page) => sgx.pool.put_free(page),
                        Err(Errno::EBUSY) => {}
                        Err(e) => panic!("round {round}: {e:?} while the reclaimer held a page"),
                    }
                }
            });
            // Every page free and untracked for the next round.
            for isolated in sgx.pool.isolate(1) {
                sgx.pool.untrack(isolated.page);
            }
            for &page in &in_use[1..] {
                sgx.pool.put_free(page);
            }
            if round % 2 == 0 {
                sgx.pool.put_free(in_use[0]);
            }
            assert_eq!(sgx.pool.nr_free(), 16, "round {round}");
        }
    }
}
