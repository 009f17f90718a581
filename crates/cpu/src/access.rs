//! The access check of spec §6: what a load, store or fetch at a linear address does on a
//! logical processor. The native engine and the driver's test platform both ask it.

use sgxemu_arch::{PAGE_SIZE, PageType, PfErrorCode, SecinfoFlags};

use crate::epc::EpcIndex;
use crate::fault::Exception;
use crate::lp::Lp;
use crate::memory::{AccessKind, PageTable, walk};
use crate::processor::Processor;

/// Where an allowed access lands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// An enclave access to its own EPC page (spec §6.1 step 3 passed).
    Enclave {
        /// The EPC page.
        page: EpcIndex,
        /// Offset of the address in the page.
        offset: usize,
    },
    /// Ordinary memory at this physical address.
    Normal {
        /// Physical address of the byte.
        pa: u64,
    },
    /// A non-enclave access to EPC memory: reads return all ones, writes are dropped
    /// (abort-page semantics, spec §6.2).
    AbortPage,
}

impl Processor {
    /// Classifies an access of `kind` at `la` by `lp` through `pt`: allowed (and where it
    /// lands), an ordinary #PF (paging said no; bit 15 clear), a #PF with the SGX bit (the
    /// EPCM said no), or #GP (enclave-mode fetch outside ELRANGE) — spec §6.1, §6.2.
    pub fn check_access(&self, lp: &Lp, pt: &dyn PageTable, la: u64, kind: AccessKind) -> Result<Access, Exception> {
        // 1. Ordinary paging first: EPCM checks only ever restrict further.
        let pa = walk(pt, la, kind)? + la % PAGE_SIZE as u64;
        let Some(ctx) = &lp.enclave else {
            return Ok(self.outside_access(pa));
        };
        let params = &ctx.enclave.params;
        if !params.contains(la) {
            // 2.
            if kind == AccessKind::Execute {
                return Err(Exception::Gp);
            }
            // 4.
            return Ok(self.outside_access(pa));
        }
        // 3.
        let epcm_fault = || Exception::Pf { addr: la, code: PfErrorCode::P | PfErrorCode::SGX | kind.pf_bits() };
        let page = self.epc_index(pa).ok_or_else(epcm_fault)?;
        let entry = self.epcm.entry(page);
        let needed = match kind {
            AccessKind::Read => SecinfoFlags::R,
            AccessKind::Write => SecinfoFlags::W,
            AccessKind::Execute => SecinfoFlags::X,
        };
        let allowed = entry.valid
            && entry.owned_by(&ctx.enclave)
            && entry.enclave_address == la & !(PAGE_SIZE as u64 - 1)
            && entry.page_type == PageType::Reg
            && !entry.blocked
            && !entry.pending
            && !entry.modified
            && entry.perms.contains(needed);
        if !allowed {
            return Err(epcm_fault());
        }
        Ok(Access::Enclave { page, offset: (la % PAGE_SIZE as u64) as usize })
    }

    fn outside_access(&self, pa: u64) -> Access {
        if self.epc_index(pa).is_some() { Access::AbortPage } else { Access::Normal { pa } }
    }

    /// Reads bytes of an EPC page (for platforms that performed [`Processor::check_access`]
    /// and for tests; callers keep `offset + buf.len() <= 4096`).
    pub fn read_epc(&self, page: EpcIndex, offset: usize, buf: &mut [u8]) {
        self.epc.read(page, offset, buf);
    }

    /// Writes bytes of an EPC page (see [`Processor::read_epc`]).
    pub fn write_epc(&self, page: EpcIndex, offset: usize, data: &[u8]) {
        self.epc.write(page, offset, data);
    }

    /// Writes bytes of an EPC page only while its EPCM entry names a valid page of the
    /// enclave `eid` at `linaddr`, and returns whether it did (for an emulator patching
    /// enclave code: a page the reclaimer writes out or frees meanwhile, or that another
    /// page has replaced, is left alone). The page's leaf lock is held shared for the check
    /// and the write, so no leaf that changes the page (EWB, ELDU, EREMOVE, EMODT…) runs in
    /// between; `false` too if such a leaf holds it now.
    pub fn write_epc_if_owned(&self, page: EpcIndex, eid: u64, linaddr: u64, offset: usize, data: &[u8]) -> bool {
        let Some(_held) = self.epcm.try_shared(page) else { return false };
        let view = self.epcm_view(page);
        if !(view.valid && view.eid == Some(eid) && view.enclave_address == linaddr) {
            return false;
        }
        self.epc.write(page, offset, data);
        true
    }
}
