//! The reclaimer (the kernel's `sgx_reclaim_pages`, driver spec §6.4): age, block, track and
//! write out EPC pages to the enclaves' backing stores; the SECS goes last.

use std::sync::Arc;

use sgxemu_arch::{ErrorCode, PAGE_SIZE};
use sgxemu_cpu::EpcIndex;

use crate::encl::{Encl, EnclState};
use crate::encls::{Cpu, EnclsError, PCMD_SIZE};
use crate::sgx::Sgx;

/// One batch: takes up to `n` pages off the head of the active list and writes out those
/// that are not young. Returns the number of EPC pages freed.
pub(crate) fn reclaim_pages(sgx: &Sgx, cpu: &mut Cpu, n: usize) -> usize {
    let mut chosen: Vec<(Arc<Encl>, EpcIndex, u64)> = Vec::new();
    let mut freed = 0;
    // 1.–3.
    for isolated in sgx.pool.isolate(n) {
        let page = isolated.page;
        let (Some(encl), Some(addr)) = (isolated.encl, isolated.addr) else {
            sgx.pool.untrack(page);
            continue;
        };
        if encl.test_and_clear_young(addr) {
            sgx.pool.putback(page);
            continue;
        }
        let mut st = encl.lock();
        if st.flags.released {
            // The enclave was torn down while we held the page: free it for its owner.
            drop(st);
            freed += free_orphan(sgx, cpu, &encl, page);
            continue;
        }
        match st.pages.get_mut(addr) {
            Some(record) if record.epc == Some(page) => record.being_reclaimed = true,
            _ => {
                sgx.pool.untrack(page);
                continue;
            }
        }
        drop(st);
        chosen.push((encl, page, addr));
    }
    // 4. Block: zap every mapping (without the enclave lock), then EBLOCK.
    for (encl, page, addr) in &chosen {
        encl.zap(*addr);
        let _st = encl.lock();
        if let Err(e) = cpu.eblock(&sgx.processor, sgx.epc_addr(*page)) {
            sgx.warn(format!("EBLOCK returned {e:?}"));
        }
    }
    // 5.–6. Write out.
    for (encl, page, addr) in &chosen {
        let mut st = encl.lock();
        if st.flags.released {
            // Released after step 3 (its VA pages and backing are gone): free the page.
            drop(st);
            freed += free_orphan(sgx, cpu, encl, *page);
            continue;
        }
        write_out(sgx, cpu, encl, &mut st, *page, Some(*addr));
        st.secs_child_cnt -= 1;
        if st.secs_child_cnt == 0
            && st.flags.initialized
            && let Some(secs) = st.secs.epc
        {
            write_out(sgx, cpu, encl, &mut st, secs, None);
            sgx.free_epc(cpu, secs);
            freed += 1;
        }
        drop(st);
        sgx.free_isolated(cpu, *page, true);
        freed += 1;
    }
    freed
}

/// `sgx_encl_ewb` + bookkeeping: EWB with the NOT_TRACKED retries (ETRACK, then IPIs), the
/// ciphertext and PCMD into the backing store, the slot recorded. A final failure loses the
/// page's data (the kernel warns; it must not happen).
fn write_out(sgx: &Sgx, cpu: &mut Cpu, encl: &Encl, st: &mut EnclState, page: EpcIndex, addr: Option<u64>) {
    if let Some(record) = st.record(addr) {
        record.being_reclaimed = false;
    }
    let Some(slot) = st.alloc_va_slot() else {
        sgx.warn(format!("no free VA slot for {addr:x?}"));
        return;
    };
    let slot_addr = slot.epc_addr(sgx);
    let epc_addr = sgx.epc_addr(page);
    let mut contents = vec![0u8; PAGE_SIZE];
    let mut pcmd = [0u8; PCMD_SIZE];
    let mut ewb = |cpu: &mut Cpu| cpu.ewb(&sgx.processor, epc_addr, slot_addr, &mut contents, &mut pcmd);
    let mut result = ewb(cpu);
    if result == Err(EnclsError::Code(ErrorCode::NotTracked)) {
        let secs = st.secs.epc.map_or(0, |s| sgx.epc_addr(s));
        if let Err(e) = cpu.etrack(&sgx.processor, secs) {
            sgx.warn(format!("ETRACK returned {e:?}"));
        }
        result = ewb(cpu);
        if result == Err(EnclsError::Code(ErrorCode::NotTracked)) {
            sgx.platform.kick(secs, &sgx.processor.lps_inside(secs));
            result = ewb(cpu);
        }
    }
    let _ = encl;
    match result {
        Ok(()) => {
            let (contents_off, pcmd_off) = (st.contents_offset(addr), st.pcmd_offset(addr));
            let stored = match st.backing.as_mut() {
                Some(backing) => backing.write(contents_off, &contents).and_then(|()| backing.write(pcmd_off, &pcmd)),
                None => Err(crate::errno::Errno::EIO),
            };
            if stored.is_err() {
                sgx.warn(format!("backing store full: page {addr:x?} lost"));
            }
            if let Some(record) = st.record(addr) {
                record.va_slot = Some(slot);
                record.epc = None;
            }
        }
        Err(e) => {
            sgx.warn(format!("EWB of {addr:x?} returned {e:?}: the page is lost"));
            st.free_va_slot(slot);
            if let Some(record) = st.record(addr) {
                record.epc = None;
            }
        }
    }
}

/// Frees a page the reclaimer held while its enclave was released, and the SECS after the
/// last such child.
fn free_orphan(sgx: &Sgx, cpu: &mut Cpu, encl: &Encl, page: EpcIndex) -> usize {
    sgx.free_isolated(cpu, page, false);
    let mut st = encl.lock();
    st.secs_child_cnt = st.secs_child_cnt.saturating_sub(1);
    let mut freed = 1;
    if st.secs_child_cnt == 0
        && let Some(secs) = st.secs.epc.take()
    {
        sgx.free_epc(cpu, secs);
        freed += 1;
    }
    freed
}
