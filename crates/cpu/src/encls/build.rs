//! Building an enclave: ECREATE, EADD, EEXTEND, EINIT (spec §4.1–§4.4).

use sgxemu_arch::{
    AttributesFlags, EEXTEND_CHUNK_SIZE, Einittoken, Encls, ErrorCode, Miscselect, PAGE_SIZE, PageType, Pageinfo,
    Secinfo, SecinfoFlags, Secs, Sigstruct, Tcs, xfrm_is_consistent, xsave_size,
};
use sgxemu_crypto::MeasurementState;
use zerocopy::{FromBytes, IntoBytes};

use crate::enclave::{Enclave, EnclaveParams, Identity};
use crate::epcm::EpcmEntry;
use crate::fault::{Exception, LeafResult, Status, fail};
use crate::lp::Lp;
use crate::memory::Memory;
use crate::processor::Processor;
use crate::regs::is_canonical;
use std::sync::Arc;
use std::sync::atomic::Ordering;

const GPRSGX_AND_EXINFO: u64 = sgxemu_arch::GPRSGX_SIZE as u64;

impl Processor {
    /// ECREATE (RBX = PAGEINFO, RCX = EPC page): creates a SECS from the image at
    /// PAGEINFO.SRCPGE, in the check order of spec §4.1.
    pub fn ecreate(&self, lp: &mut Lp, mem: &mut dyn Memory, pageinfo: u64, target: u64) -> Result<(), Exception> {
        lp.stats.count_encls(Encls::Ecreate);
        // 1.
        if !pageinfo.is_multiple_of(Pageinfo::ALIGN as u64) || !target.is_multiple_of(PAGE_SIZE as u64) {
            return Err(Exception::Gp);
        }
        let index = self.epc_operand(target, true)?;
        // 2.
        let info: Pageinfo = self.read_operand(mem, pageinfo)?;
        if !info.srcpge.is_multiple_of(PAGE_SIZE as u64) || !info.secinfo.is_multiple_of(Secinfo::ALIGN as u64) {
            return Err(Exception::Gp);
        }
        if info.linaddr != 0 || info.secs != 0 {
            return Err(Exception::Gp);
        }
        // 3.
        let secinfo: Secinfo = self.read_operand(mem, info.secinfo)?;
        if secinfo.has_reserved_bits() || secinfo.flags().page_type() != Some(PageType::Secs) {
            return Err(Exception::Gp);
        }
        // 4.
        let lock = self.epcm.try_exclusive(index).ok_or(Exception::Gp)?;
        if lock.entry().valid {
            return Err(Exception::epcm_pf(target, true));
        }
        // 5.
        let secs: Secs = self.read_operand(mem, info.srcpge)?;
        let params = self.validate_secs(&secs)?;
        // 6.
        let mut measurement = MeasurementState::new();
        measurement.ecreate(params.ssaframesize, params.size);
        let enclave = Enclave::new(self.next_eid(), self.new_enclave_ref(index), params, measurement);
        lock.admit_big_readers();
        *lock.entry() =
            EpcmEntry { valid: true, page_type: PageType::Secs, secs: Some(Arc::new(enclave)), ..EpcmEntry::default() };
        Ok(())
    }

    /// The SECS checks of spec §4.1 step 5 (all #GP).
    fn validate_secs(&self, secs: &Secs) -> Result<EnclaveParams, Exception> {
        let cfg = &self.config;
        let xfrm = secs.attributes.xfrm;
        if xfrm & 0x3 != 0x3 || xfrm & !cfg.xfrm != 0 || !xfrm_is_consistent(xfrm) {
            return Err(Exception::Gp);
        }
        let miscselect = Miscselect::from_bits_retain(secs.miscselect);
        if secs.miscselect & !cfg.miscselect.bits() != 0 {
            return Err(Exception::Gp);
        }
        let misc_size = if miscselect.contains(Miscselect::EXINFO) { sgxemu_arch::EXINFO_SIZE as u64 } else { 0 };
        let needed = xsave_size(xfrm) as u64 + GPRSGX_AND_EXINFO + misc_size;
        if u64::from(secs.ssaframesize) * (PAGE_SIZE as u64) < needed {
            return Err(Exception::Gp);
        }
        let flags = secs.attributes.flags();
        let mode64 = flags.contains(AttributesFlags::MODE64BIT);
        if (mode64 && !is_canonical(secs.baseaddr)) || (!mode64 && secs.baseaddr >= 1 << 32) {
            return Err(Exception::Gp);
        }
        // CPUID gives the largest supported size, and hardware creates an enclave of exactly
        // that size: the SDM pseudocode's ">=" is a typo for ">" (spec §4.1).
        let max_log2 = if mode64 { cfg.max_enclave_size_64_log2 } else { cfg.max_enclave_size_32_log2 };
        if secs.size > 1u64 << max_log2 {
            return Err(Exception::Gp);
        }
        if secs.size < 2 * PAGE_SIZE as u64 || !secs.size.is_power_of_two() || secs.baseaddr & (secs.size - 1) != 0 {
            return Err(Exception::Gp);
        }
        if secs.attributes.flags & !cfg.attributes.bits() != 0 {
            return Err(Exception::Gp);
        }
        let reserved_clear = secs.reserved1 == [0; 24]
            && secs.reserved2 == [0; 32]
            && secs.reserved3 == [0; 32]
            && secs.reserved4.iter().all(|&b| b == 0);
        if !reserved_clear {
            return Err(Exception::Gp);
        }
        if (secs.configid != [0; 64] || secs.configsvn != 0) && !flags.contains(AttributesFlags::KSS) {
            return Err(Exception::Gp);
        }
        Ok(EnclaveParams {
            baseaddr: secs.baseaddr,
            size: secs.size,
            ssaframesize: secs.ssaframesize,
            miscselect,
            attributes: secs.attributes,
            configid: secs.configid,
            configsvn: secs.configsvn,
        })
    }

    /// EADD (RBX = PAGEINFO, RCX = EPC page): adds a REG or TCS page before EINIT and
    /// extends MRENCLAVE with its EADD record (spec §4.2).
    pub fn eadd(&self, lp: &mut Lp, mem: &mut dyn Memory, pageinfo: u64, target: u64) -> Result<(), Exception> {
        lp.stats.count_encls(Encls::Eadd);
        // 1.
        if !pageinfo.is_multiple_of(Pageinfo::ALIGN as u64) || !target.is_multiple_of(PAGE_SIZE as u64) {
            return Err(Exception::Gp);
        }
        let index = self.epc_operand(target, true)?;
        // 2.
        let info: Pageinfo = self.read_operand(mem, pageinfo)?;
        let page_aligned = |a: u64| a.is_multiple_of(PAGE_SIZE as u64);
        if !page_aligned(info.srcpge) || !page_aligned(info.secs) || !page_aligned(info.linaddr) {
            return Err(Exception::Gp);
        }
        if !info.secinfo.is_multiple_of(Secinfo::ALIGN as u64) {
            return Err(Exception::Gp);
        }
        let secs_index = self.epc_operand(info.secs, false)?;
        // 3.
        let secinfo: Secinfo = self.read_operand(mem, info.secinfo)?;
        let mut flags = secinfo.flags();
        let page_type = flags.page_type();
        if secinfo.has_reserved_bits() || !matches!(page_type, Some(PageType::Reg | PageType::Tcs)) {
            return Err(Exception::Gp);
        }
        // 4.
        let lock = self.epcm.try_exclusive(index).ok_or(Exception::Gp)?;
        if lock.entry().valid {
            return Err(Exception::epcm_pf(target, true));
        }
        // 5.
        let (_secs_lock, enclave) = self.lock_secs_shared(&mut lp.enclaves, lp.id, secs_index, info.secs)?;
        // 6. (Where the memory lends the source in place, it goes into the EPC with one copy;
        // an EPC address reads as abort-page data, so that always takes the copy.)
        let is_tcs = page_type == Some(PageType::Tcs);
        let lent = mem.lend(info.srcpge, PAGE_SIZE).filter(|_| self.epc_index(info.srcpge).is_none());
        let mut copied: [u8; PAGE_SIZE];
        let page: &[u8] = match lent {
            Some(page) => page,
            None => {
                copied = [0u8; PAGE_SIZE];
                self.read_bytes(mem, info.srcpge, &mut copied)?;
                &copied
            }
        };
        // 7.
        let mode64 = enclave.params.flags().contains(AttributesFlags::MODE64BIT);
        if is_tcs {
            let tcs = Tcs::read_from_bytes(page).map_err(|_| Exception::Gp)?;
            if tcs.reserved.iter().any(|&b| b != 0) {
                return Err(Exception::Gp);
            }
            if !mode64 && (tcs.fslimit & 0xFFF != 0xFFF || tcs.gslimit & 0xFFF != 0xFFF) {
                return Err(Exception::Gp);
            }
        } else if flags.contains(SecinfoFlags::W) && !flags.contains(SecinfoFlags::R) {
            return Err(Exception::Gp);
        }
        // 8.
        if !enclave.params.contains(info.linaddr) {
            return Err(Exception::Gp);
        }
        let mut measurement = enclave.measurement.try_lock().ok_or(Exception::Gp)?;
        if enclave.is_initialized() {
            return Err(Exception::Gp);
        }
        // 9.
        let tcs = if is_tcs {
            flags.remove(SecinfoFlags::PERM_MASK);
            let mut tcs = Tcs::read_from_bytes(page).map_err(|_| Exception::Gp)?;
            tcs.flags &= !sgxemu_arch::TcsFlags::DBGOPTIN.bits();
            tcs.cssa = 0;
            tcs.aep = 0;
            tcs.state = 0;
            Some(tcs)
        } else {
            None
        };
        // 10.
        measurement.eadd(info.linaddr - enclave.params.baseaddr, flags.bits());
        drop(measurement);
        // 11.
        self.epc.write(index, 0, tcs.as_ref().map_or(page, |tcs| tcs.as_bytes()));
        enclave.add_child(lp.id);
        *lock.entry() = EpcmEntry {
            valid: true,
            page_type: page_type.unwrap_or(PageType::Reg),
            perms: flags & SecinfoFlags::PERM_MASK,
            enclave_address: info.linaddr,
            owner: Some(enclave.reference()),
            ..EpcmEntry::default()
        };
        Ok(())
    }

    /// EEXTEND (RBX = SECS, RCX = 256-byte chunk in an EPC page): extends MRENCLAVE with
    /// the chunk as it is now in the EPC (spec §4.3).
    pub fn eextend(&self, lp: &mut Lp, secs: u64, chunk: u64) -> Result<(), Exception> {
        self.eextend_run::<1>(lp, secs, chunk, &mut |_| {})
    }

    /// The sixteen EEXTENDs of one page (`page` = its EPC address), issued back to back as
    /// a driver measuring a page does: each does exactly what [`Processor::eextend`] does,
    /// and no leaf of another logical processor comes between them (the page's entry and
    /// the measurement stay locked throughout) — one of the orders in which the hardware
    /// could have run them, checked once (their checks are the same) and hashed in place. Stops at
    /// the first fault, as the sixteen single leaves would at their first.
    pub fn eextend_page(&self, lp: &mut Lp, secs: u64, page: u64) -> Result<(), Exception> {
        self.eextend_page_overlapped(lp, secs, page, &mut |_| {})
    }

    /// [`Processor::eextend_page`], calling `alongside(i)` before it hashes chunk `i`: the
    /// SHA-256 rounds are bound by their own latency and leave the memory system idle, so
    /// host work that waits on memory overlaps them there (the driver brings in the next
    /// page it will add). `alongside` runs with the page's entry and the measurement
    /// locked: it must not reach the processor. It is not called for a faulting page.
    pub fn eextend_page_overlapped(
        &self,
        lp: &mut Lp,
        secs: u64,
        page: u64,
        alongside: &mut dyn FnMut(usize),
    ) -> Result<(), Exception> {
        if !page.is_multiple_of(PAGE_SIZE as u64) {
            // Only a page's first chunk is page aligned: the single leaf says what this is.
            return self.eextend(lp, secs, page);
        }
        self.eextend_run::<{ PAGE_SIZE / EEXTEND_CHUNK_SIZE }>(lp, secs, page, alongside)
    }

    /// `CHUNKS` EEXTENDs of consecutive chunks of one page from `chunk` on, back to back.
    /// The checks of the first leaf hold for all of them: they share the page, its entry
    /// and its enclave. `alongside(i)` is called before chunk `i` is hashed.
    fn eextend_run<const CHUNKS: usize>(
        &self,
        lp: &mut Lp,
        secs: u64,
        chunk: u64,
        alongside: &mut dyn FnMut(usize),
    ) -> Result<(), Exception> {
        lp.stats.count_encls(Encls::Eextend);
        // 1.
        if !secs.is_multiple_of(PAGE_SIZE as u64) {
            return Err(Exception::Gp);
        }
        let secs_index = self.epc_operand(secs, false)?;
        // 2.
        if !chunk.is_multiple_of(EEXTEND_CHUNK_SIZE as u64) {
            return Err(Exception::Gp);
        }
        let index = self.epc_operand(chunk, false)?;
        // 3.
        // The entry stays locked for the whole run: no owner reference is copied out.
        let entry = self.epcm.entry_unless_exclusive(index).ok_or(Exception::Gp)?;
        if !entry.valid || !matches!(entry.page_type, PageType::Reg | PageType::Tcs) {
            return Err(Exception::epcm_pf(chunk, false));
        }
        let linaddr = entry.enclave_address;
        // 4.
        let owner = entry.owner.filter(|owner| owner.secs == secs_index).ok_or(Exception::Gp)?;
        let enclave = self.owner_of(&mut lp.enclaves, owner).ok_or(Exception::Gp)?;
        let mut measurement = enclave.measurement.try_lock().ok_or(Exception::Gp)?;
        if enclave.is_initialized() {
            return Err(Exception::Gp);
        }
        // 5.
        // The chunks are hashed where they lie in the EPC, each behind its header record.
        let first = (chunk % PAGE_SIZE as u64) as usize;
        let offset = linaddr - enclave.params.baseaddr + first as u64;
        self.epc.lend(index, first, CHUNKS * EEXTEND_CHUNK_SIZE, &mut |data| {
            let (chunks, _) = data.as_chunks::<EEXTEND_CHUNK_SIZE>();
            for (i, data) in chunks.iter().enumerate() {
                alongside(i);
                measurement.eextend(offset + (i * EEXTEND_CHUNK_SIZE) as u64, data);
            }
        });
        for _ in 1..CHUNKS {
            lp.stats.count_encls(Encls::Eextend);
        }
        Ok(())
    }

    /// EINIT (RBX = SIGSTRUCT, RCX = SECS, RDX = EINITTOKEN): verifies the signature and
    /// launch policy and finalizes MRENCLAVE (spec §4.4, checks in its order).
    pub fn einit(&self, lp: &mut Lp, mem: &mut dyn Memory, sigstruct: u64, secs: u64, token: u64) -> LeafResult {
        lp.stats.count_encls(Encls::Einit);
        // 1.
        if !sigstruct.is_multiple_of(Sigstruct::ALIGN as u64) || !secs.is_multiple_of(PAGE_SIZE as u64) {
            return Err(Exception::Gp);
        }
        if !token.is_multiple_of(Einittoken::ALIGN as u64) {
            return Err(Exception::Gp);
        }
        let secs_index = self.epc_operand(secs, false)?;
        // 2.
        let sig: Sigstruct = self.read_operand(mem, sigstruct)?;
        let token: Einittoken = self.read_operand(mem, token)?;
        // 3.
        if !sigstruct_header_ok(&sig) {
            return fail(ErrorCode::InvalidSigStruct);
        }
        // 4.
        if self.take_unmasked_event() {
            return fail(ErrorCode::UnmaskedEvent);
        }
        // 5.
        let Ok(verified) = sgxemu_crypto::verify(&sig) else {
            return fail(ErrorCode::InvalidSignature);
        };
        // 6.
        let (_secs_lock, enclave) = self.lock_secs_shared(&mut lp.enclaves, lp.id, secs_index, secs)?;
        let secs_flags = enclave.params.flags();
        // 7.
        if sig.isvfamilyid != [0; 16] && !secs_flags.contains(AttributesFlags::KSS) {
            return fail(ErrorCode::InvalidSigStruct);
        }
        // 8.
        let measurement = enclave.measurement.try_lock().ok_or(Exception::Gp)?;
        if enclave.is_initialized() {
            return Err(Exception::Gp);
        }
        // 9.
        let mrenclave = measurement.finalize();
        if mrenclave != sig.enclavehash {
            return fail(ErrorCode::InvalidMeasurement);
        }
        // 10.
        let mrsigner = verified.mrsigner;
        let launch_hash_matches = lehash_bytes(lp.lepubkeyhash) == mrsigner;
        // 11.
        if secs_flags.contains(AttributesFlags::EINITTOKENKEY) && !launch_hash_matches {
            return fail(ErrorCode::InvalidAttribute);
        }
        // 12.
        let secs_attrs = enclave.params.attributes;
        if secs_attrs.and(sig.attributemask) != sig.attributes.and(sig.attributemask) {
            return fail(ErrorCode::InvalidAttribute);
        }
        if enclave.params.miscselect.bits() & sig.miscmask != sig.miscselect & sig.miscmask {
            return fail(ErrorCode::InvalidAttribute);
        }
        // 13./14.
        if token.valid & 1 == 0 {
            if !launch_hash_matches {
                return fail(ErrorCode::InvalidEinittoken);
            }
        } else if let Some(code) = self.check_einittoken(&lp.lepubkeyhash, &token, enclave, mrenclave, mrsigner) {
            return fail(code);
        }
        // 15.
        let identity = Identity {
            mrenclave,
            mrsigner,
            isvprodid: sig.isvprodid,
            isvsvn: sig.isvsvn,
            isvextprodid: if secs_flags.contains(AttributesFlags::KSS) { sig.isvextprodid } else { [0; 16] },
            isvfamilyid: if secs_flags.contains(AttributesFlags::KSS) { sig.isvfamilyid } else { [0; 16] },
            padding: verified.padding,
        };
        // The measurement lock is held, so no other EINIT can have set it.
        let _ = enclave.identity.set(identity);
        Ok(Status::Success)
    }

    fn take_unmasked_event(&self) -> bool {
        self.pending_unmasked_events.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1)).is_ok()
    }

    /// The token checks of spec §4.4 step 14 for a VALID token.
    fn check_einittoken(
        &self,
        lepubkeyhash: &[u64; 4],
        token: &Einittoken,
        enclave: &Enclave,
        mrenclave: [u8; 32],
        mrsigner: [u8; 32],
    ) -> Option<ErrorCode> {
        let masked_debug = token.maskedattributesle.flags().contains(AttributesFlags::DEBUG);
        if masked_debug && !enclave.params.flags().contains(AttributesFlags::DEBUG) {
            return Some(ErrorCode::InvalidEinittoken);
        }
        let reserved_clear = token.valid & !1 == 0
            && token.reserved1 == [0; 44]
            && token.reserved2 == [0; 32]
            && token.reserved3 == [0; 32]
            && token.reserved4 == [0; 24];
        if !reserved_clear {
            return Some(ErrorCode::InvalidEinittoken);
        }
        if !crate::keys::cpusvn_within(&token.cpusvnle, &self.secrets.cpusvn) {
            return Some(ErrorCode::InvalidCpusvn);
        }
        if self.einittoken_mac(lepubkeyhash, token) != token.mac {
            return Some(ErrorCode::InvalidEinittoken);
        }
        if token.mrenclave != mrenclave || token.mrsigner != mrsigner {
            return Some(ErrorCode::InvalidMeasurement);
        }
        if token.attributes != enclave.params.attributes {
            return Some(ErrorCode::INVALID_EINIT_ATTRIBUTE);
        }
        None
    }
}

/// LEPUBKEYHASH MSRs as the 32 digest bytes they hold (MSR 0x8C = bytes 0..8).
pub(crate) fn lehash_bytes(msrs: [u64; 4]) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (chunk, msr) in out.chunks_exact_mut(8).zip(msrs) {
        chunk.copy_from_slice(&msr.to_le_bytes());
    }
    out
}

/// SIGSTRUCT header, vendor, exponent and reserved-field checks (spec §4.4 step 3, §13.7).
fn sigstruct_header_ok(sig: &Sigstruct) -> bool {
    let header = sig.header;
    let sdk_type = u32::from_le_bytes(header[12..16].try_into().unwrap_or_default());
    header[..12] == sgxemu_arch::SIGSTRUCT_HEADER[..12]
        && sdk_type & 0x7FFF_FFFF == 0
        && (sig.vendor == 0 || sig.vendor == sgxemu_arch::VENDOR_INTEL)
        && sig.header2 == sgxemu_arch::SIGSTRUCT_HEADER2
        && sig.exponent == 3
        && sig.reserved1 == [0; 84]
        && sig.cet_attributes == 0
        && sig.cet_attributes_mask == 0
        && sig.reserved2 == [0; 2]
        && sig.reserved3 == [0; 16]
        && sig.reserved4 == [0; 12]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lehash_bytes_put_msr_8c_first_little_endian() {
        let bytes = lehash_bytes([0x0807060504030201, 0, 0, 0xFF]);
        assert_eq!(bytes[..8], [1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(bytes[24], 0xFF);
    }

    #[test]
    fn sdk_debug_type_bit_is_accepted_other_type_bits_are_not() {
        let mut sig = Sigstruct::new_unsigned();
        assert!(sigstruct_header_ok(&sig));
        sig.header[15] = 0x80;
        assert!(sigstruct_header_ok(&sig));
        sig.header[12] = 1;
        assert!(!sigstruct_header_ok(&sig));
    }
}
