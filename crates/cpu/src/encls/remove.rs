//! EREMOVE (spec §4.5) and the debug leaves EDBGRD/EDBGWR (spec §4.6).

use sgxemu_arch::{AttributesFlags, Encls, ErrorCode, PAGE_SIZE, PageType, TCS_ARCH_SIZE};

use crate::epcm::EpcmEntry;
use crate::fault::{Exception, LeafResult, Status, fail};
use crate::lp::Lp;
use crate::processor::Processor;

/// Offset of TCS.FLAGS, the only TCS field EDBGWR may write.
const TCS_FLAGS_OFFSET: usize = 8;

impl Processor {
    /// EREMOVE (RCX = EPC page): frees a page, in the order of spec §4.5 (with the §13.1
    /// reading of the duplicated first condition).
    pub fn eremove(&self, lp: &mut Lp, target: u64) -> LeafResult {
        let _changed = crate::processor::EpcmChange::new(self, target);
        lp.stats.count_encls(Encls::Eremove);
        // 1.
        if !target.is_multiple_of(PAGE_SIZE as u64) {
            return Err(Exception::Gp);
        }
        let index = self.epc_operand(target, true)?;
        // 2.
        let lock = self.epcm.try_exclusive(index).ok_or(Exception::Gp)?;
        let mut entry = lock.entry();
        // 3.
        if !entry.valid {
            return Ok(Status::Success);
        }
        let owner = entry.owner.and_then(|owner| self.owner_of(&mut lp.enclaves, owner));
        match entry.page_type {
            // 4.
            PageType::Va => {}
            PageType::Trim if !entry.modified => {}
            // 5.
            PageType::Secs => {
                if let Some(enclave) = &entry.secs {
                    if enclave.child_count() > 0 {
                        return fail(ErrorCode::ChildPresent);
                    }
                    enclave.retire();
                }
            }
            // 6. and 7.
            _ => {
                if owner.is_some_and(|e| e.tracking.anyone_inside()) {
                    return fail(ErrorCode::EnclaveAct);
                }
            }
        }
        if let Some(e) = owner {
            e.remove_child(lp.id);
        }
        *entry = EpcmEntry::default();
        Ok(Status::Success)
    }

    /// EDBGRD (RCX = EPC address): reads 8 bytes (4 outside 64-bit mode) of a debug
    /// enclave's page; returns the status and the value for RBX (spec §4.6).
    pub fn edbgrd(&self, lp: &mut Lp, addr: u64) -> Result<(Status, u64), Exception> {
        lp.stats.count_encls(Encls::Edbgrd);
        let width = if lp.mode64 { 8 } else { 4 };
        let (index, offset, entry) = match self.debug_access(lp, addr, width, false)? {
            Ok(found) => found,
            Err(status) => return Ok((status, 0)),
        };
        let mut bytes = [0u8; 8];
        self.epc.read(index, offset, &mut bytes[..width]);
        let value = u64::from_le_bytes(bytes);
        if entry.page_type == PageType::Va {
            // Version values are never disclosed, only whether the slot is in use.
            let in_use = value & !0x7 != 0;
            return Ok((Status::Success, if in_use { u64::MAX >> (64 - 8 * width) } else { 0 }));
        }
        Ok((Status::Success, value))
    }

    /// EDBGWR (RCX = EPC address, RBX = data): writes 8 bytes (4 outside 64-bit mode) of a
    /// debug enclave's page; of a TCS only FLAGS is writable (spec §4.6).
    pub fn edbgwr(&self, lp: &mut Lp, addr: u64, data: u64) -> LeafResult {
        lp.stats.count_encls(Encls::Edbgwr);
        let width = if lp.mode64 { 8 } else { 4 };
        let (index, offset, _) = match self.debug_access(lp, addr, width, true)? {
            Ok(found) => found,
            Err(status) => return Ok(status),
        };
        self.epc.write(index, offset, &data.to_le_bytes()[..width]);
        Ok(Status::Success)
    }

    /// The shared checks of EDBGRD/EDBGWR. The outer error is an exception, the inner one a
    /// ZF-error status; success gives the page, the offset in it and a snapshot of its entry.
    #[allow(clippy::type_complexity, reason = "two distinct failure kinds, documented above")]
    fn debug_access(
        &self,
        lp: &mut Lp,
        addr: u64,
        width: usize,
        write: bool,
    ) -> Result<Result<(crate::epc::EpcIndex, usize, EpcmEntry), Status>, Exception> {
        // 1.
        if !addr.is_multiple_of(width as u64) {
            return Err(Exception::Gp);
        }
        let index = self.epc_operand(addr, write)?;
        let lock = self.epcm.try_shared(index).ok_or(Exception::Gp)?;
        let entry = lock.entry().clone();
        if !entry.valid {
            return Err(Exception::epcm_pf(addr, write));
        }
        // 2.
        let allowed = match entry.page_type {
            PageType::Reg | PageType::Tcs => true,
            PageType::Va => !write,
            _ => false,
        };
        if !allowed {
            return Err(Exception::epcm_pf(addr, write));
        }
        // 3.
        if entry.pending || entry.modified {
            return Ok(Err(Status::Error(ErrorCode::PageNotDebuggable)));
        }
        // 4.
        let offset = (addr % PAGE_SIZE as u64) as usize;
        if entry.page_type == PageType::Tcs {
            let permitted = if write { offset == TCS_FLAGS_OFFSET } else { offset < TCS_ARCH_SIZE };
            if !permitted {
                return Err(Exception::Gp);
            }
        }
        // 5.
        if entry.page_type != PageType::Va {
            let owner = entry.owner.and_then(|owner| self.owner_of(&mut lp.enclaves, owner));
            let debug = owner.is_some_and(|e| e.params.flags().contains(AttributesFlags::DEBUG));
            if !debug {
                return Err(Exception::Gp);
            }
        }
        Ok(Ok((index, offset, entry)))
    }
}
