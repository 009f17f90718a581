//! ENCLU leaves (ring 3) and asynchronous enclave exits, one module per group of spec §5.

mod aex;
mod attest;
mod edmm;
mod entry;

pub use aex::{AexEvent, AexReport, EventKind};

use sgxemu_arch::PageType;

use crate::epc::EpcIndex;
use crate::epcm::EpcmEntry;
use crate::fault::Exception;
use crate::lp::{EnclaveContext, Lp};
use crate::memory::{AccessKind, PageTable, walk};
use crate::processor::Processor;
use crate::regs::Regs;

/// Which EPCM permission an enclave-page operand needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Need {
    Read,
    Write,
}

impl Processor {
    /// The active enclave context; #GP outside enclave mode (spec §3.3).
    pub(crate) fn context(lp: &Lp) -> Result<&EnclaveContext, Exception> {
        lp.enclave.as_ref().ok_or(Exception::Gp)
    }

    /// Translates an ENCLU memory operand at `la` with an ordinary page walk of the given
    /// access kind; the page must be in the EPC, else #PF(la) with the SGX bit (spec §6.3).
    pub(crate) fn translate_operand(
        &self,
        pt: &dyn PageTable,
        la: u64,
        kind: AccessKind,
    ) -> Result<EpcIndex, Exception> {
        let pa = walk(pt, la, kind)?;
        self.epc_index(pa).ok_or_else(|| Exception::epcm_pf_user(la, kind == AccessKind::Write))
    }

    /// An operand that must be a regular page of the current enclave at its own address,
    /// valid, unblocked, not PENDING/MODIFIED, with the needed EPCM permissions — the page
    /// checks EREPORT, EGETKEY and the SGX2 leaves apply to their SECINFO/data operands.
    pub(crate) fn own_reg_page(
        &self,
        ctx: &EnclaveContext,
        pt: &dyn PageTable,
        la: u64,
        need: Need,
    ) -> Result<EpcIndex, Exception> {
        let kind = if need == Need::Read { AccessKind::Read } else { AccessKind::Write };
        let index = self.translate_operand(pt, la, kind)?;
        let entry = self.epcm.entry(index);
        if !is_own_reg_page(&entry, ctx, la, need) {
            return Err(Exception::epcm_pf_user(la, need != Need::Read));
        }
        Ok(index)
    }
}

/// Completes a code-returning ENCLU leaf: on success (of the instruction, whatever the
/// code) RAX and RFLAGS take the status and RIP moves past ENCLU; on an exception the
/// registers are untouched.
pub(crate) fn complete_with_status(regs: &mut Regs, result: crate::fault::LeafResult) -> crate::fault::LeafResult {
    if let Ok(status) = result {
        regs.rax = status.rax();
        regs.rflags = status.apply_to_rflags(regs.rflags);
        regs.rip = regs.rip.wrapping_add(entry::ENCLU_LEN);
    }
    result
}

fn page_of(la: u64) -> u64 {
    la & !(sgxemu_arch::PAGE_SIZE as u64 - 1)
}

pub(crate) fn is_own_reg_page(entry: &EpcmEntry, ctx: &EnclaveContext, la: u64, need: Need) -> bool {
    use sgxemu_arch::SecinfoFlags as F;
    let perms_ok = match need {
        Need::Read => entry.perms.contains(F::R),
        Need::Write => entry.perms.contains(F::W),
    };
    entry.valid
        && !entry.blocked
        && !entry.pending
        && !entry.modified
        && entry.page_type == PageType::Reg
        && entry.owned_by(&ctx.enclave)
        && entry.enclave_address == page_of(la)
        && perms_ok
}
