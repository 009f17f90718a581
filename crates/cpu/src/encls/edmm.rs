//! SGX2 ENCLS leaves: EAUG, EMODPR, EMODT (spec §4.12–§4.14).

use sgxemu_arch::{Encls, ErrorCode, PAGE_SIZE, PageType, Pageinfo, Secinfo, SecinfoFlags};

use crate::enclave::EnclaveRef;
use crate::epcm::EpcmEntry;
use crate::fault::{Exception, LeafResult, Status, fail};
use crate::lp::Lp;
use crate::memory::Memory;
use crate::processor::Processor;

impl Processor {
    /// #GP for SGX2 leaves on an SGX1-only part (an unsupported leaf, spec §3.3).
    pub(crate) fn require_sgx2(&self) -> Result<(), Exception> {
        if self.config.sgx2 { Ok(()) } else { Err(Exception::Gp) }
    }

    /// EAUG (RBX = PAGEINFO, RCX = EPC page): adds a zeroed, PENDING, RW regular page to an
    /// initialized enclave (spec §4.12).
    pub fn eaug(&self, lp: &mut Lp, mem: &mut dyn Memory, pageinfo: u64, target: u64) -> Result<(), Exception> {
        let _changed = crate::processor::EpcmChange::new(self, target);
        self.require_sgx2()?;
        lp.stats.count_encls(Encls::Eaug);
        // 1.
        if !pageinfo.is_multiple_of(Pageinfo::ALIGN as u64) || !target.is_multiple_of(PAGE_SIZE as u64) {
            return Err(Exception::Gp);
        }
        let index = self.epc_operand(target, true)?;
        // 2.
        let info: Pageinfo = self.read_operand(mem, pageinfo)?;
        if !info.secs.is_multiple_of(PAGE_SIZE as u64) || !info.linaddr.is_multiple_of(PAGE_SIZE as u64) {
            return Err(Exception::Gp);
        }
        if info.srcpge != 0 || info.secinfo != 0 {
            return Err(Exception::Gp);
        }
        // 3.
        let secs_index = self.epc_operand(info.secs, false)?;
        let lock = self.epcm.try_exclusive(index).ok_or(Exception::Gp)?;
        if lock.entry().valid {
            return Err(Exception::epcm_pf(target, true));
        }
        // 4.
        let (_secs_lock, enclave) = self.lock_secs_shared(&mut lp.enclaves, lp.id, secs_index, info.secs)?;
        if !enclave.is_initialized() || !enclave.params.contains(info.linaddr) {
            return Err(Exception::Gp);
        }
        // 5.
        self.epc.zero(index);
        enclave.add_child(lp.id);
        *lock.entry() = EpcmEntry {
            valid: true,
            page_type: PageType::Reg,
            perms: SecinfoFlags::R | SecinfoFlags::W,
            pending: true,
            enclave_address: info.linaddr,
            owner: Some(enclave.reference()),
            ..EpcmEntry::default()
        };
        Ok(())
    }

    /// The tracking epoch of the enclave `owner` names, if that enclave is initialized
    /// (EMODPR step 7, EMODT step 6).
    fn owner_epoch_if_initialized(&self, lp: &mut Lp, owner: Option<EnclaveRef>) -> Option<u64> {
        let enclave = self.owner_of(&mut lp.enclaves, owner?)?;
        enclave.is_initialized().then(|| enclave.tracking.epoch())
    }

    /// EMODPR (RBX = SECINFO, RCX = EPC page): restricts a regular page's permissions to
    /// SECINFO's RWX and marks it PR until the enclave accepts (spec §4.13, checks in order;
    /// PENDING/MODIFIED is checked before the page type, which REMOVE_PAGES relies on).
    pub fn emodpr(&self, lp: &mut Lp, mem: &mut dyn Memory, secinfo: u64, target: u64) -> LeafResult {
        let _changed = crate::processor::EpcmChange::new(self, target);
        self.require_sgx2()?;
        lp.stats.count_encls(Encls::Emodpr);
        // 1.
        if !secinfo.is_multiple_of(Secinfo::ALIGN as u64) || !target.is_multiple_of(PAGE_SIZE as u64) {
            return Err(Exception::Gp);
        }
        let index = self.epc_operand(target, false)?;
        // 2.
        let request: Secinfo = self.read_operand(mem, secinfo)?;
        let perms = request.flags() & SecinfoFlags::PERM_MASK;
        if request.has_reserved_bits() || (perms.contains(SecinfoFlags::W) && !perms.contains(SecinfoFlags::R)) {
            return Err(Exception::Gp);
        }
        // 3. (and 4. when the holder is EMODT, an SGX2 leaf holding the page exclusive)
        let mut lock = match self.epcm.try_shared_vs_sgx2(index) {
            Ok(lock) => lock,
            Err(true) => return fail(ErrorCode::EpcPageConflict),
            Err(false) => return Err(Exception::Gp),
        };
        if !lock.entry().valid {
            return Err(Exception::epcm_pf(target, false));
        }
        // 4.
        if !lock.try_sgx2() {
            return fail(ErrorCode::EpcPageConflict);
        }
        let mut entry = lock.entry();
        // 5.
        if entry.pending || entry.modified {
            return fail(ErrorCode::PageNotModifiable);
        }
        // 6.
        if entry.page_type != PageType::Reg {
            return Err(Exception::epcm_pf(target, false));
        }
        // 7.
        let Some(epoch) = self.owner_epoch_if_initialized(lp, entry.owner) else {
            return Err(Exception::Gp);
        };
        // 8.
        entry.pr = true;
        entry.perms &= perms;
        entry.mod_epoch = Some(epoch);
        Ok(Status::Success)
    }

    /// EMODT (RBX = SECINFO, RCX = EPC page): changes a page's type to TCS or TRIM, pending
    /// the enclave's EACCEPT (spec §4.14).
    pub fn emodt(&self, lp: &mut Lp, mem: &mut dyn Memory, secinfo: u64, target: u64) -> LeafResult {
        let _changed = crate::processor::EpcmChange::new(self, target);
        self.require_sgx2()?;
        lp.stats.count_encls(Encls::Emodt);
        // 1.
        if !secinfo.is_multiple_of(Secinfo::ALIGN as u64) || !target.is_multiple_of(PAGE_SIZE as u64) {
            return Err(Exception::Gp);
        }
        let index = self.epc_operand(target, false)?;
        // 2.
        let request: Secinfo = self.read_operand(mem, secinfo)?;
        let new_type = request.flags().page_type();
        if request.has_reserved_bits() || !matches!(new_type, Some(PageType::Tcs | PageType::Trim)) {
            return Err(Exception::Gp);
        }
        let new_type = new_type.unwrap_or(PageType::Trim);
        // 3.
        let Some(lock) = self.epcm.try_exclusive_sgx2(index) else {
            return fail(ErrorCode::EpcPageConflict);
        };
        let mut entry = lock.entry();
        if !entry.valid {
            return Err(Exception::epcm_pf(target, false));
        }
        // 4.
        let allowed =
            entry.page_type == PageType::Reg || (entry.page_type == PageType::Tcs && new_type == PageType::Trim);
        if !allowed {
            return Err(Exception::epcm_pf(target, false));
        }
        // 5.
        if entry.pending || entry.modified {
            return fail(ErrorCode::PageNotModifiable);
        }
        // 6.
        let Some(epoch) = self.owner_epoch_if_initialized(lp, entry.owner) else {
            return Err(Exception::Gp);
        };
        // 7.
        entry.pr = false;
        entry.modified = true;
        entry.perms = SecinfoFlags::empty();
        entry.page_type = new_type;
        entry.mod_epoch = Some(epoch);
        Ok(Status::Success)
    }
}
