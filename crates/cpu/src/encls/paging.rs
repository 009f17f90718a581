//! EPC paging: EPA, EBLOCK, ETRACK, EWB, ELDB/ELDU (spec §4.7–§4.11, tracking of §7).

use std::sync::Arc;

use sgxemu_arch::{Encls, ErrorCode, PAGE_SIZE, PageType, Pageinfo, Pcmd, SecinfoFlags, VA_SLOT_SIZE};
use sgxemu_crypto::{build_mac_header, open_page, seal_page};
use zerocopy::{FromZeros, IntoBytes};

use crate::enclave::Enclave;
use crate::epc::EpcIndex;
use crate::epcm::EpcmEntry;
use crate::fault::{Exception, LeafResult, Status, fail};
use crate::lp::Lp;
use crate::memory::Memory;
use crate::processor::Processor;

/// RBX value EPA requires (PT_VA).
const EPA_RBX: u64 = PageType::Va as u64;

impl Processor {
    /// EPA (RBX = PT_VA, RCX = EPC page): makes an empty version-array page (spec §4.9).
    pub fn epa(&self, lp: &mut Lp, rbx: u64, target: u64) -> Result<(), Exception> {
        lp.stats.count_encls(Encls::Epa);
        if rbx != EPA_RBX || !target.is_multiple_of(PAGE_SIZE as u64) {
            return Err(Exception::Gp);
        }
        let index = self.epc_operand(target, true)?;
        let lock = self.epcm.try_exclusive(index).ok_or(Exception::Gp)?;
        if lock.entry().valid {
            return Err(Exception::epcm_pf(target, true));
        }
        self.epc.zero(index);
        *lock.entry() = EpcmEntry { valid: true, page_type: PageType::Va, ..EpcmEntry::default() };
        Ok(())
    }

    /// EBLOCK (RCX = EPC page): marks a page blocked and captures the tracking epoch
    /// (spec §4.7).
    pub fn eblock(&self, lp: &mut Lp, target: u64) -> LeafResult {
        let _changed = crate::processor::EpcmChange::new(self, target);
        lp.stats.count_encls(Encls::Eblock);
        // 1.
        if !target.is_multiple_of(PAGE_SIZE as u64) {
            return Err(Exception::Gp);
        }
        let index = self.epc_operand(target, false)?;
        // 2.
        let Some(lock) = self.epcm.try_shared(index) else {
            return fail(ErrorCode::EpcPageConflict);
        };
        let mut entry = lock.entry();
        // 3.
        if !entry.valid {
            return fail(ErrorCode::PgInvld);
        }
        // 4.
        match entry.page_type {
            PageType::Secs => return Ok(Status::Info(ErrorCode::PgIsSecs)),
            PageType::Va => return Ok(Status::Info(ErrorCode::Notblockable)),
            _ => {}
        }
        // 5.
        if entry.blocked {
            return Ok(Status::Info(ErrorCode::Blkstate));
        }
        entry.blocked = true;
        let owner = entry.owner.and_then(|owner| self.owner_of(&mut lp.enclaves, owner));
        entry.bepoch = owner.map_or(0, |e| e.tracking.epoch());
        Ok(Status::Success)
    }

    /// ETRACK (RCX = SECS): starts a new tracking cycle (spec §4.8, §7).
    pub fn etrack(&self, lp: &mut Lp, secs: u64) -> LeafResult {
        lp.stats.count_encls(Encls::Etrack);
        // 1.
        if !secs.is_multiple_of(PAGE_SIZE as u64) {
            return Err(Exception::Gp);
        }
        let index = self.epc_operand(secs, false)?;
        // 2. and 3. (a concurrent ETRACK holds the tracking state: #GP, spec §13.13)
        let (_secs_lock, enclave) = self.lock_secs_shared(&mut lp.enclaves, lp.id, index, secs)?;
        // 4.
        match enclave.tracking.etrack().map_err(|_| Exception::Gp)? {
            Ok(()) => Ok(Status::Success),
            Err(_) => fail(ErrorCode::PrevTrkIncmpl),
        }
    }

    /// EWB (RBX = PAGEINFO, RCX = EPC page, RDX = VA slot): encrypts a page out of the EPC
    /// with a fresh version recorded in the slot (spec §4.10).
    pub fn ewb(&self, lp: &mut Lp, mem: &mut dyn Memory, pageinfo: u64, target: u64, va_slot: u64) -> LeafResult {
        let _changed = crate::processor::EpcmChange::new(self, target);
        lp.stats.count_encls(Encls::Ewb);
        // 1.
        if !pageinfo.is_multiple_of(Pageinfo::ALIGN as u64) || !target.is_multiple_of(PAGE_SIZE as u64) {
            return Err(Exception::Gp);
        }
        let index = self.epc_operand(target, false)?;
        if !va_slot.is_multiple_of(VA_SLOT_SIZE as u64) {
            return Err(Exception::Gp);
        }
        let va_index = self.epc_operand(va_slot, true)?;
        if va_index == index {
            return Err(Exception::Gp);
        }
        // 2.
        let mut info: Pageinfo = self.read_operand(mem, pageinfo)?;
        if info.linaddr != 0 || info.secs != 0 {
            return Err(Exception::Gp);
        }
        if !info.secinfo.is_multiple_of(Pcmd::ALIGN as u64) || !info.srcpge.is_multiple_of(PAGE_SIZE as u64) {
            return Err(Exception::Gp);
        }
        // 3.
        let lock = self.epcm.try_exclusive(index).ok_or(Exception::Gp)?;
        let va_lock = self.epcm.try_shared(va_index).ok_or(Exception::Gp)?;
        // 4.
        let entry = lock.entry().clone();
        if !entry.valid {
            return Err(Exception::epcm_pf(target, false));
        }
        check_va_page(&va_lock.entry(), va_slot)?;
        // 6.
        let owner = entry.owner.and_then(|owner| self.owner_of(&mut lp.enclaves, owner));
        let (header_eid, pcmd_eid) = match (entry.page_type, &entry.secs, owner) {
            (PageType::Secs, Some(enclave), _) => {
                if enclave.child_count() > 0 {
                    return fail(ErrorCode::ChildPresent);
                }
                (0, enclave.eid)
            }
            (PageType::Va, _, _) => (0, 0),
            (_, _, Some(enclave)) => {
                if !entry.blocked {
                    return fail(ErrorCode::PageNotBlocked);
                }
                if !enclave.tracking.is_tracked(entry.bepoch) {
                    return fail(ErrorCode::NotTracked);
                }
                (enclave.eid, enclave.eid)
            }
            (_, _, None) => return Err(Exception::Gp),
        };
        // 7.
        let flags = entry.secinfo_flags();
        let header = build_mac_header(header_eid, flags.bits(), entry.enclave_address, &[0; 40]);
        // 8.
        let version = self.next_paging_version();
        let mut page = match (entry.page_type, &entry.secs) {
            (PageType::Secs, Some(enclave)) => enclave.to_secs_page(),
            _ => {
                let mut page = Box::new([0u8; PAGE_SIZE]);
                self.epc.read(index, 0, &mut page[..]);
                page
            }
        };
        let mac = seal_page(&self.paging_key, version, &header, &mut page);
        // 9. Outputs first, so a faulting output operand leaves the EPC unchanged.
        let mut pcmd = Pcmd::new_zeroed();
        pcmd.secinfo.flags = flags.bits();
        pcmd.enclaveid = pcmd_eid;
        pcmd.mac = mac;
        self.write_bytes(mem, info.srcpge, &page[..])?;
        self.write_bytes(mem, info.secinfo, pcmd.as_bytes())?;
        info.linaddr = entry.enclave_address;
        self.write_bytes(mem, pageinfo, info.as_bytes())?;
        // 10.
        let old = self.read_va_slot(va_index, va_slot);
        self.epc.write(va_index, slot_offset(va_slot), &version.to_le_bytes());
        // 11.
        if let Some(enclave) = owner {
            enclave.remove_child(lp.id);
        }
        if let Some(enclave) = &entry.secs {
            enclave.retire();
        }
        *lock.entry() = EpcmEntry::default();
        if old != 0 {
            return Ok(Status::Info(ErrorCode::VaSlotOccupied));
        }
        Ok(Status::Success)
    }

    /// ELDU (RBX = PAGEINFO, RCX = EPC page, RDX = VA slot): decrypts an evicted page back
    /// into the EPC, unblocked (spec §4.11).
    pub fn eldu(&self, lp: &mut Lp, mem: &mut dyn Memory, pageinfo: u64, target: u64, va_slot: u64) -> LeafResult {
        let _changed = crate::processor::EpcmChange::new(self, target);
        lp.stats.count_encls(Encls::Eldu);
        self.load_page(lp, mem, pageinfo, target, va_slot, false)
    }

    /// ELDB: as [`Processor::eldu`], but the reloaded child page comes back blocked.
    pub fn eldb(&self, lp: &mut Lp, mem: &mut dyn Memory, pageinfo: u64, target: u64, va_slot: u64) -> LeafResult {
        let _changed = crate::processor::EpcmChange::new(self, target);
        lp.stats.count_encls(Encls::Eldb);
        self.load_page(lp, mem, pageinfo, target, va_slot, true)
    }

    fn load_page(
        &self,
        lp: &mut Lp,
        mem: &mut dyn Memory,
        pageinfo: u64,
        target: u64,
        va_slot: u64,
        blocked: bool,
    ) -> LeafResult {
        // 1.
        if !pageinfo.is_multiple_of(Pageinfo::ALIGN as u64) || !target.is_multiple_of(PAGE_SIZE as u64) {
            return Err(Exception::Gp);
        }
        let index = self.epc_operand(target, true)?;
        if !va_slot.is_multiple_of(VA_SLOT_SIZE as u64) {
            return Err(Exception::Gp);
        }
        let va_index = self.epc_operand(va_slot, true)?;
        // 2.
        let info: Pageinfo = self.read_operand(mem, pageinfo)?;
        if !info.secinfo.is_multiple_of(Pcmd::ALIGN as u64) || !info.srcpge.is_multiple_of(PAGE_SIZE as u64) {
            return Err(Exception::Gp);
        }
        let lock = self.epcm.try_exclusive(index).ok_or(Exception::Gp)?;
        let va_lock = self.epcm.try_shared(va_index).ok_or(Exception::Gp)?;
        // 3.
        if lock.entry().valid {
            return Err(Exception::epcm_pf(target, true));
        }
        check_va_page(&va_lock.entry(), va_slot)?;
        // 4.
        let pcmd: Pcmd = self.read_operand(mem, info.secinfo)?;
        let flags = pcmd.secinfo.flags();
        let page_type = flags.page_type();
        // 5.
        let is_child = matches!(page_type, Some(PageType::Reg | PageType::Tcs | PageType::Trim));
        let (_secs_lock, owner) = if is_child {
            if !info.secs.is_multiple_of(PAGE_SIZE as u64) {
                return Err(Exception::Gp);
            }
            let secs_index = self.epc_operand(info.secs, false)?;
            let (secs_lock, enclave) = self.lock_secs_shared(&mut lp.enclaves, lp.id, secs_index, info.secs)?;
            (Some(secs_lock), Some(enclave))
        } else {
            if info.secs != 0 {
                return Err(Exception::Gp);
            }
            (None, None)
        };
        let header_eid = owner.as_ref().map_or(0, |e| e.eid);
        let header = build_mac_header(header_eid, flags.bits(), info.linaddr, &pcmd.reserved);
        // 6.
        let mut page = Box::new([0u8; PAGE_SIZE]);
        self.read_bytes(mem, info.srcpge, &mut page[..])?;
        let version = self.read_va_slot(va_index, va_slot);
        let (Some(page_type), Ok(())) =
            (page_type, open_page(&self.paging_key, version, &header, &mut page, &pcmd.mac))
        else {
            return fail(ErrorCode::MacCompareFail);
        };
        // 7.
        self.epc.write(va_index, slot_offset(va_slot), &0u64.to_le_bytes());
        // 8.
        let (secs, owner) = match (page_type, owner) {
            (PageType::Secs, _) => {
                lock.admit_big_readers();
                let at = self.new_enclave_ref(index);
                (Some(Arc::new(Enclave::from_secs_page(&page, at))), None)
            }
            (_, Some(owner)) => {
                owner.add_child(lp.id);
                self.epc.write(index, 0, &page[..]);
                (None, Some(owner.reference()))
            }
            (_, None) => {
                self.epc.write(index, 0, &page[..]);
                (None, None)
            }
        };
        *lock.entry() = EpcmEntry {
            valid: true,
            page_type,
            perms: flags & SecinfoFlags::PERM_MASK,
            blocked: blocked && is_child,
            pending: flags.contains(SecinfoFlags::PENDING),
            modified: flags.contains(SecinfoFlags::MODIFIED),
            pr: flags.contains(SecinfoFlags::PR),
            enclave_address: if page_type == PageType::Secs || page_type == PageType::Va { 0 } else { info.linaddr },
            owner,
            secs,
            bepoch: 0,
            mod_epoch: None,
        };
        Ok(Status::Success)
    }

    fn read_va_slot(&self, va_index: EpcIndex, va_slot: u64) -> u64 {
        let mut bytes = [0u8; 8];
        self.epc.read(va_index, slot_offset(va_slot), &mut bytes);
        u64::from_le_bytes(bytes)
    }
}

fn slot_offset(va_slot: u64) -> usize {
    (va_slot % PAGE_SIZE as u64) as usize
}

/// The VA operand must be a valid PT_VA page (#PF on the slot address otherwise).
fn check_va_page(entry: &EpcmEntry, va_slot: u64) -> Result<(), Exception> {
    if entry.valid && entry.page_type == PageType::Va { Ok(()) } else { Err(Exception::epcm_pf(va_slot, true)) }
}
