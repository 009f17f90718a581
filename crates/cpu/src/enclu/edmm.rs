//! SGX2 ENCLU leaves: EACCEPT, EACCEPTCOPY, EMODPE (spec §5.7–§5.9).

use sgxemu_arch::{Enclu, ErrorCode, PAGE_SIZE, PageType, Secinfo, SecinfoFlags, Tcs, TcsFlags};
use zerocopy::FromBytes;

use crate::epc::EpcIndex;
use crate::fault::{Exception, LeafResult, Status, fail};
use crate::lp::{EnclaveContext, Lp};
use crate::memory::{AccessKind, PageTable};
use crate::processor::Processor;
use crate::regs::Regs;

use super::Need;
use super::entry::ENCLU_LEN;

impl Processor {
    /// The SECINFO operand of EACCEPT/EACCEPTCOPY/EMODPE (step 1 of each): 64-byte aligned,
    /// in ELRANGE (#GP), a readable regular page of this enclave (#PF).
    fn secinfo_operand(&self, ctx: &EnclaveContext, pt: &dyn PageTable, la: u64) -> Result<Secinfo, Exception> {
        if !la.is_multiple_of(Secinfo::ALIGN as u64) || !ctx.enclave.params.contains(la) {
            return Err(Exception::Gp);
        }
        let page = self.own_reg_page(ctx, pt, la, Need::Read)?;
        Ok(self.read_epc_obj(page, la))
    }

    /// A page-aligned target inside ELRANGE (#GP), translated by an ordinary walk.
    fn target_operand(
        &self,
        ctx: &EnclaveContext,
        pt: &dyn PageTable,
        la: u64,
        kind: AccessKind,
    ) -> Result<EpcIndex, Exception> {
        if !la.is_multiple_of(PAGE_SIZE as u64) || !ctx.enclave.params.contains(la) {
            return Err(Exception::Gp);
        }
        self.translate_operand(pt, la, kind)
    }

    /// EACCEPT (RBX = SECINFO, RCX = page): the enclave accepts an EAUG, EMODPR or EMODT
    /// of one of its pages (spec §5.7, checks in order).
    pub fn eaccept(&self, lp: &mut Lp, regs: &mut Regs, pt: &dyn PageTable) -> LeafResult {
        let result = self.eaccept_checked(lp, regs, pt);
        super::complete_with_status(regs, result)
    }

    fn eaccept_checked(&self, lp: &mut Lp, regs: &Regs, pt: &dyn PageTable) -> LeafResult {
        self.require_sgx2()?;
        lp.stats.count_enclu(Enclu::Eaccept);
        let ctx = Self::context(lp)?;
        let (secinfo_la, target_la) = (regs.rbx, regs.rcx);
        // 1.
        let secinfo = self.secinfo_operand(ctx, pt, secinfo_la)?;
        // 2.
        if secinfo.has_reserved_bits() {
            return Err(Exception::Gp);
        }
        // 3.
        let index = self.target_operand(ctx, pt, target_la, AccessKind::Read)?;
        // 4.
        let flags = secinfo.flags();
        let (pending, modified, pr) = (
            flags.contains(SecinfoFlags::PENDING),
            flags.contains(SecinfoFlags::MODIFIED),
            flags.contains(SecinfoFlags::PR),
        );
        let shape_ok = match flags.page_type() {
            Some(PageType::Reg) => (pr || pending) && !modified,
            Some(PageType::Tcs | PageType::Trim) => !pr && !pending && modified,
            _ => false,
        };
        if !shape_ok {
            return Err(Exception::Gp);
        }
        // 5.
        let target_fault = || Exception::epcm_pf_user(target_la, false);
        {
            let e = self.epcm.entry(index);
            let ok = e.valid && !e.blocked && e.is_child() && e.owned_by(&ctx.enclave);
            if !ok {
                return Err(target_fault());
            }
        }
        // 6.
        let mut lock = self.epcm.try_shared(index).ok_or(Exception::Gp)?;
        if !lock.try_sgx2() {
            return Err(Exception::Gp);
        }
        let mut entry = lock.entry();
        if !entry.valid || !entry.owned_by(&ctx.enclave) {
            return Err(target_fault());
        }
        // 7.
        let perms = flags & SecinfoFlags::PERM_MASK;
        let matches = entry.enclave_address == target_la
            && entry.pending == pending
            && entry.modified == modified
            && entry.perms == perms
            && Some(entry.page_type) == flags.page_type();
        if !matches {
            return fail(ErrorCode::PageAttributesMismatch);
        }
        // 8.
        if let Some(captured) = entry.mod_epoch
            && !ctx.enclave.tracking.is_tracked(captured)
        {
            return fail(ErrorCode::NotTracked);
        }
        // 9.
        if entry.page_type == PageType::Tcs && !self.new_tcs_ok(index, ctx) {
            return Err(Exception::Gp);
        }
        // 10.
        entry.pending = false;
        entry.modified = false;
        entry.pr = false;
        entry.mod_epoch = None;
        Ok(Status::Success)
    }

    /// A page about to become a TCS must look like a fresh one (spec §5.7 step 9): no
    /// reserved bits, DBGOPTIN, AEP or STATE set, and 32-bit FS/GS limits ending in 0xFFF.
    ///
    /// The SDM also lists CSSA ≥ NSSA as a #GP, but hardware accepts an all-zero page (CSSA =
    /// NSSA = 0) converted to a TCS — Intel's enclave memory manager tests do exactly that — so
    /// the model leaves that check to EENTER, which makes it anyway.
    fn new_tcs_ok(&self, index: EpcIndex, ctx: &EnclaveContext) -> bool {
        let mut page = [0u8; PAGE_SIZE];
        self.epc.read(index, 0, &mut page);
        let Ok(tcs) = Tcs::read_from_bytes(&page[..]) else {
            return false;
        };
        let mode64 = ctx.enclave.params.flags().contains(sgxemu_arch::AttributesFlags::MODE64BIT);
        let limits_ok = mode64 || (tcs.fslimit & 0xFFF == 0xFFF && tcs.gslimit & 0xFFF == 0xFFF);
        tcs.reserved.iter().all(|&b| b == 0)
            && tcs.flags & TcsFlags::DBGOPTIN.bits() == 0
            && tcs.aep == 0
            && tcs.state == 0
            && limits_ok
    }

    /// EACCEPTCOPY (RBX = SECINFO, RCX = pending destination, RDX = source): initializes an
    /// EAUG'd page from another page and gives it SECINFO's permissions (spec §5.8).
    pub fn eacceptcopy(&self, lp: &mut Lp, regs: &mut Regs, pt: &dyn PageTable) -> LeafResult {
        let result = self.eacceptcopy_checked(lp, regs, pt);
        super::complete_with_status(regs, result)
    }

    fn eacceptcopy_checked(&self, lp: &mut Lp, regs: &Regs, pt: &dyn PageTable) -> LeafResult {
        self.require_sgx2()?;
        lp.stats.count_enclu(Enclu::Eacceptcopy);
        let ctx = Self::context(lp)?;
        let (secinfo_la, dest_la, src_la) = (regs.rbx, regs.rcx, regs.rdx);
        // 1. All alignment and ELRANGE checks (#GP), then the translations in operand order
        // (#PF), then the SECINFO page's EPCM checks (#PF(RBX)).
        let elrange = &ctx.enclave.params;
        let page = PAGE_SIZE as u64;
        if secinfo_la % Secinfo::ALIGN as u64 != 0 || dest_la % page != 0 || src_la % page != 0 {
            return Err(Exception::Gp);
        }
        if !elrange.contains(secinfo_la) || !elrange.contains(dest_la) || !elrange.contains(src_la) {
            return Err(Exception::Gp);
        }
        let secinfo_page = self.translate_operand(pt, secinfo_la, AccessKind::Read)?;
        let dest = self.translate_operand(pt, dest_la, AccessKind::Write)?;
        let src = self.translate_operand(pt, src_la, AccessKind::Read)?;
        if !super::is_own_reg_page(&self.epcm.entry(secinfo_page), ctx, secinfo_la, Need::Read) {
            return Err(Exception::epcm_pf_user(secinfo_la, false));
        }
        let secinfo: Secinfo = self.read_epc_obj(secinfo_page, secinfo_la);
        // 2. PENDING/MODIFIED/PR are not reserved and not read here: sgx-emm passes
        // PT_REG | PENDING | permissions (spec §1.7).
        let flags = secinfo.flags();
        let perms = flags & SecinfoFlags::PERM_MASK;
        let w_without_r = perms.contains(SecinfoFlags::W) && !perms.contains(SecinfoFlags::R);
        if secinfo.has_reserved_bits() || w_without_r || flags.page_type() != Some(PageType::Reg) {
            return Err(Exception::Gp);
        }
        // 3.
        if !super::is_own_reg_page(&self.epcm.entry(src), ctx, src_la, Need::Read) {
            return Err(Exception::epcm_pf_user(src_la, false));
        }
        // 4.
        let dest_ok = |e: &crate::epcm::EpcmEntry| {
            e.valid && e.pending && !e.modified && e.page_type == PageType::Reg && e.owned_by(&ctx.enclave)
        };
        if !dest_ok(&self.epcm.entry(dest)) {
            return fail(ErrorCode::PageAttributesMismatch);
        }
        let mut lock = self.epcm.try_shared(dest).ok_or(Exception::Gp)?;
        if !lock.try_sgx2() {
            return Err(Exception::Gp);
        }
        let mut entry = lock.entry();
        let rw = SecinfoFlags::R | SecinfoFlags::W;
        if !dest_ok(&entry) || entry.perms != rw || entry.enclave_address != dest_la {
            return fail(ErrorCode::PageAttributesMismatch);
        }
        // 5.
        let mut page = [0u8; PAGE_SIZE];
        self.epc.read(src, 0, &mut page);
        self.epc.write(dest, 0, &page);
        entry.perms = perms;
        entry.pending = false;
        Ok(Status::Success)
    }

    /// EMODPE (RBX = SECINFO, RCX = page): extends a regular page's EPCM permissions
    /// (spec §5.9). Needs no tracking: extension is always safe.
    pub fn emodpe(&self, lp: &mut Lp, regs: &mut Regs, pt: &dyn PageTable) -> Result<(), Exception> {
        self.require_sgx2()?;
        lp.stats.count_enclu(Enclu::Emodpe);
        let ctx = Self::context(lp)?;
        let (secinfo_la, target_la) = (regs.rbx, regs.rcx);
        // 1. Alignment and ELRANGE (#GP), the translations in operand order (#PF), then the
        // SECINFO page's EPCM checks (#PF(RBX)).
        let elrange = &ctx.enclave.params;
        if secinfo_la % Secinfo::ALIGN as u64 != 0 || target_la % PAGE_SIZE as u64 != 0 {
            return Err(Exception::Gp);
        }
        if !elrange.contains(secinfo_la) || !elrange.contains(target_la) {
            return Err(Exception::Gp);
        }
        let secinfo_page = self.translate_operand(pt, secinfo_la, AccessKind::Read)?;
        let index = self.translate_operand(pt, target_la, AccessKind::Read)?;
        if !super::is_own_reg_page(&self.epcm.entry(secinfo_page), ctx, secinfo_la, Need::Read) {
            return Err(Exception::epcm_pf_user(secinfo_la, false));
        }
        let secinfo: Secinfo = self.read_epc_obj(secinfo_page, secinfo_la);
        // 2. Only the reserved bits: EMODPE reads nothing but R, W and X, so the PT_REG | PR
        // that sgx-emm passes with the new permissions is accepted, as on hardware (spec §1.7).
        if secinfo.has_reserved_bits() {
            return Err(Exception::Gp);
        }
        // 3.
        let target_ok = |e: &crate::epcm::EpcmEntry| {
            e.valid
                && !e.pending
                && !e.modified
                && !e.blocked
                && e.page_type == PageType::Reg
                && e.owned_by(&ctx.enclave)
                && e.enclave_address == target_la
        };
        let mut lock = self.epcm.try_shared(index).ok_or(Exception::Gp)?;
        if !target_ok(&lock.entry()) {
            return Err(Exception::epcm_pf_user(target_la, false));
        }
        if !lock.try_sgx2() {
            return Err(Exception::Gp);
        }
        let mut entry = lock.entry();
        // 4.
        let requested = secinfo.flags() & SecinfoFlags::PERM_MASK;
        if !entry.perms.contains(SecinfoFlags::R)
            && !requested.contains(SecinfoFlags::R)
            && requested.contains(SecinfoFlags::W)
        {
            return Err(Exception::Gp);
        }
        // 5.
        entry.perms |= requested;
        drop(entry);
        regs.rip = regs.rip.wrapping_add(ENCLU_LEN);
        Ok(())
    }
}
