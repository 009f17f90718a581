//! EENTER, ERESUME and EEXIT (spec §5.1–§5.3).

use std::mem::offset_of;
use std::sync::Arc;

use sgxemu_arch::{AttributesFlags, Enclu, GPRSGX_SIZE, Gprsgx, PAGE_SIZE, PageType, Tcs, TcsFlags, xsave_size};
use zerocopy::{FromBytes, IntoBytes};

use crate::enclave::Enclave;
use crate::epc::EpcIndex;
use crate::fault::Exception;
use crate::lp::{EnclaveContext, Lp};
use crate::memory::{AccessKind, PageTable};
use crate::processor::Processor;
use crate::regs::{ERESUME_RESTORED_FLAGS, RFLAGS_TF, Regs, is_canonical};

/// Length of the ENCLU instruction (0F 01 D7).
pub(crate) const ENCLU_LEN: u64 = 3;
/// The architectural part of the TCS (what leaves read and write).
const TCS_FIELDS: usize = sgxemu_arch::TCS_ARCH_SIZE;

/// What EENTER and ERESUME share: the TCS and the enclave behind it, after checks 2–9.
struct Entry {
    enclave: Arc<Enclave>,
    secs_page: EpcIndex,
    tcs_page: EpcIndex,
    tcs: TcsView,
}

/// The TCS fields EENTER and ERESUME use, read from the page's architectural bytes (a whole
/// [`Tcs`] is a 4 KiB-aligned 4 KiB value: zeroing and moving one on every entry cost more
/// than the rest of the leaf's own work).
struct TcsView {
    flags: u64,
    ossa: u64,
    cssa: u32,
    nssa: u32,
    oentry: u64,
    ofsbase: u64,
    ogsbase: u64,
}

impl TcsView {
    fn read(processor: &Processor, page: EpcIndex) -> Self {
        let mut raw = [0u8; TCS_FIELDS];
        processor.epc.read(page, 0, &mut raw);
        let u64_at = |at: usize| u64::from_le_bytes(raw[at..at + 8].try_into().expect("eight bytes"));
        let u32_at = |at: usize| u32::from_le_bytes(raw[at..at + 4].try_into().expect("four bytes"));
        TcsView {
            flags: u64_at(offset_of!(Tcs, flags)),
            ossa: u64_at(offset_of!(Tcs, ossa)),
            cssa: u32_at(offset_of!(Tcs, cssa)),
            nssa: u32_at(offset_of!(Tcs, nssa)),
            oentry: u64_at(offset_of!(Tcs, oentry)),
            ofsbase: u64_at(offset_of!(Tcs, ofsbase)),
            ogsbase: u64_at(offset_of!(Tcs, ogsbase)),
        }
    }
}

impl Processor {
    /// EENTER (RBX = TCS, RCX = AEP): enters the enclave at OENTRY (spec §5.1).
    /// `regs.rip` is the address of the ENCLU instruction.
    pub fn eenter(&self, lp: &mut Lp, regs: &mut Regs, pt: &dyn PageTable) -> Result<(), Exception> {
        lp.stats.count_enclu(Enclu::Eenter);
        self.enter(lp, regs, pt, false)
    }

    /// ERESUME (RBX = TCS, RCX = AEP): resumes from SSA frame CSSA−1 (spec §5.2).
    pub fn eresume(&self, lp: &mut Lp, regs: &mut Regs, pt: &dyn PageTable) -> Result<(), Exception> {
        lp.stats.count_enclu(Enclu::Eresume);
        self.enter(lp, regs, pt, true)
    }

    fn enter(&self, lp: &mut Lp, regs: &mut Regs, pt: &dyn PageTable, resume: bool) -> Result<(), Exception> {
        if lp.in_enclave() {
            return Err(Exception::Gp);
        }
        let tcs_la = regs.rbx;
        let aep = regs.rcx;
        let Entry { enclave, secs_page, tcs_page, tcs } = self.entry_checks(lp, tcs_la, aep, pt)?;
        let p = &enclave.params;
        // 10.
        let frame_index = if resume {
            tcs.cssa.checked_sub(1).ok_or(Exception::Gp)?
        } else {
            if tcs.cssa >= tcs.nssa {
                return Err(Exception::Gp);
            }
            tcs.cssa
        };
        // 11.
        let frame_la = p.baseaddr.wrapping_add(tcs.ossa).wrapping_add(u64::from(frame_index) * p.frame_bytes());
        let frame_pages = self.validate_ssa_frame(&enclave, pt, frame_la)?;
        let ctx_probe = FrameAccess {
            processor: self,
            enclave: &enclave,
            frame_la,
            frame_bytes: p.frame_bytes(),
            pages: &frame_pages,
        };
        // 12.
        let (target, fsbase, gsbase, gpr) = if resume {
            let gpr: Gprsgx = ctx_probe.read_obj(p.frame_bytes() - GPRSGX_SIZE as u64);
            if !is_canonical(gpr.fsbase) || !is_canonical(gpr.gsbase) {
                return Err(Exception::Gp);
            }
            (gpr.rip, gpr.fsbase, gpr.gsbase, Some(gpr))
        } else {
            (
                p.baseaddr.wrapping_add(tcs.oentry),
                p.baseaddr.wrapping_add(tcs.ofsbase),
                p.baseaddr.wrapping_add(tcs.ogsbase),
                None,
            )
        };
        if !is_canonical(target) {
            return Err(Exception::Gp);
        }
        let xsave_len = xsave_size(p.attributes.xfrm);
        let restored_xsave = if resume {
            let mut image = vec![0u8; xsave_len];
            ctx_probe.read(0, &mut image);
            if !xsave_image_ok(&image, p.attributes.xfrm) {
                return Err(Exception::Gp);
            }
            Some(image)
        } else {
            None
        };
        // 13. STATE check-and-set is atomic under the TCS entry lock.
        {
            let _entry = self.epcm.entry(tcs_page);
            let mut state = [0u8; 8];
            self.epc.read(tcs_page, 0, &mut state);
            if u64::from_le_bytes(state) != 0 {
                return Err(Exception::Gp);
            }
            self.epc.write(tcs_page, 0, &1u64.to_le_bytes());
            self.epc.write(tcs_page, offset_of!(Tcs, aep), &aep.to_le_bytes());
            if resume {
                self.epc.write(tcs_page, offset_of!(Tcs, cssa), &frame_index.to_le_bytes());
            }
        }
        // Effects.
        let opt_out = tcs.flags & TcsFlags::DBGOPTIN.bits() == 0;
        let saved_tf = opt_out && regs.rflags & RFLAGS_TF != 0;
        let ctx = EnclaveContext {
            enclave: enclave.clone(),
            secs_page,
            tcs_la,
            tcs_page,
            frame_la,
            frame_pages,
            saved_fsbase: regs.fsbase,
            saved_gsbase: regs.gsbase,
            saved_xcr0: lp.xcr0,
            saved_tf,
        };
        enclave.tracking.enter(lp.id);
        if lp.osxsave {
            lp.xcr0 = p.attributes.xfrm;
        }
        match (gpr, restored_xsave) {
            (Some(gpr), Some(image)) => {
                restore_gprs(regs, &gpr);
                lp.xsave[..xsave_len].copy_from_slice(&image);
            }
            _ => {
                let ursp_urbp = [regs.rsp, regs.rbp];
                let offset = p.frame_bytes() - GPRSGX_SIZE as u64 + offset_of!(Gprsgx, ursp) as u64;
                let frame = FrameAccess {
                    processor: self,
                    enclave: &ctx.enclave,
                    frame_la,
                    frame_bytes: p.frame_bytes(),
                    pages: &ctx.frame_pages,
                };
                frame.write(offset, ursp_urbp.as_bytes());
                regs.rcx = regs.rip.wrapping_add(ENCLU_LEN);
                regs.rax = u64::from(tcs.cssa);
                regs.rip = target;
            }
        }
        if saved_tf {
            regs.rflags &= !RFLAGS_TF;
        }
        regs.fsbase = fsbase;
        regs.gsbase = gsbase;
        lp.enclave = Some(ctx);
        Ok(())
    }

    /// Checks 2–9 of EENTER/ERESUME.
    fn entry_checks(&self, lp: &mut Lp, tcs_la: u64, aep: u64, pt: &dyn PageTable) -> Result<Entry, Exception> {
        // 2.
        if !tcs_la.is_multiple_of(PAGE_SIZE as u64) {
            return Err(Exception::Gp);
        }
        let tcs_page = self.translate_operand(pt, tcs_la, AccessKind::Write)?;
        if lp.mode64 && !is_canonical(aep) {
            return Err(Exception::Gp);
        }
        // 3.
        let lock = self.epcm.try_shared(tcs_page).ok_or(Exception::Gp)?;
        // 4.
        let enclave = {
            let e = lock.entry();
            let ok = e.valid
                && !e.blocked
                && e.enclave_address == tcs_la
                && e.page_type == PageType::Tcs
                && !e.pending
                && !e.modified;
            match (e.owner.and_then(|owner| self.owner_of(&mut lp.enclaves, owner)), ok) {
                (Some(enclave), true) => enclave.clone(),
                _ => return Err(Exception::epcm_pf_user(tcs_la, true)),
            }
        };
        let tcs = TcsView::read(self, tcs_page);
        let p = &enclave.params;
        // 5.
        let aligned = |v: u64| v.is_multiple_of(PAGE_SIZE as u64);
        if !aligned(tcs.ossa) || !aligned(tcs.ofsbase) || !aligned(tcs.ogsbase) {
            return Err(Exception::Gp);
        }
        // 6.
        if !is_canonical(p.baseaddr.wrapping_add(tcs.ofsbase)) || !is_canonical(p.baseaddr.wrapping_add(tcs.ogsbase)) {
            return Err(Exception::Gp);
        }
        // 7.
        if tcs.flags & !TcsFlags::DBGOPTIN.bits() != 0 {
            return Err(Exception::Gp);
        }
        // 8.
        if !enclave.is_initialized() || lp.mode64 != p.flags().contains(AttributesFlags::MODE64BIT) {
            return Err(Exception::Gp);
        }
        // 9.
        let xfrm = p.attributes.xfrm;
        if !lp.osfxsr || (!lp.osxsave && xfrm != 0x3) || (lp.osxsave && xfrm & !lp.xcr0 != 0) {
            return Err(Exception::Gp);
        }
        Ok(Entry { secs_page: enclave.secs_page, enclave, tcs_page, tcs })
    }

    /// SSA frame validation (spec §5 preamble): every page of the XSAVE area and the page
    /// holding GPRSGX must be read/write mapped regular pages of this enclave.
    fn validate_ssa_frame(
        &self,
        enclave: &Arc<Enclave>,
        pt: &dyn PageTable,
        frame_la: u64,
    ) -> Result<Vec<(u64, EpcIndex)>, Exception> {
        let p = &enclave.params;
        let page = PAGE_SIZE as u64;
        let xsave_end = frame_la.wrapping_add(xsave_size(p.attributes.xfrm) as u64);
        let gpr_page = frame_la.wrapping_add(p.frame_bytes() - GPRSGX_SIZE as u64) & !(page - 1);
        let mut pages: Vec<u64> =
            (0..).map(|i| frame_la.wrapping_add(i * page)).take_while(|&la| la < xsave_end).collect();
        if !pages.contains(&gpr_page) {
            pages.push(gpr_page);
        }
        pages
            .into_iter()
            .map(|la| {
                let index = self.translate_operand(pt, la, AccessKind::Write)?;
                let e = self.epcm.entry(index);
                let ok = e.valid
                    && !e.blocked
                    && !e.pending
                    && !e.modified
                    && e.enclave_address == la
                    && e.page_type == PageType::Reg
                    && e.owned_by(enclave)
                    && e.perms.contains(sgxemu_arch::SecinfoFlags::R | sgxemu_arch::SecinfoFlags::W);
                if ok { Ok((la, index)) } else { Err(Exception::epcm_pf_user(la, true)) }
            })
            .collect()
    }

    /// EEXIT (RBX = target outside the enclave): leaves enclave mode; RCX := AEP
    /// (spec §5.3). Other registers stay as the enclave left them.
    pub fn eexit(&self, lp: &mut Lp, regs: &mut Regs) -> Result<(), Exception> {
        lp.stats.count_enclu(Enclu::Eexit);
        Self::context(lp)?;
        if lp.mode64 && !is_canonical(regs.rbx) {
            return Err(Exception::Gp);
        }
        let Some(ctx) = lp.enclave.take() else {
            return Err(Exception::Gp);
        };
        let mut aep = [0u8; 8];
        self.epc.read(ctx.tcs_page, offset_of!(Tcs, aep), &mut aep);
        regs.rip = regs.rbx;
        regs.rcx = u64::from_le_bytes(aep);
        self.leave_enclave(lp, regs, ctx);
        Ok(())
    }

    /// What EEXIT and AEX share on the way out: FS/GS, XCR0 and TF restored, TCS inactive,
    /// tracking told the LP left.
    pub(crate) fn leave_enclave(&self, lp: &mut Lp, regs: &mut Regs, ctx: EnclaveContext) {
        regs.fsbase = ctx.saved_fsbase;
        regs.gsbase = ctx.saved_gsbase;
        lp.xcr0 = ctx.saved_xcr0;
        if ctx.saved_tf {
            regs.rflags |= RFLAGS_TF;
        }
        {
            let _entry = self.epcm.entry(ctx.tcs_page);
            self.epc.write(ctx.tcs_page, 0, &0u64.to_le_bytes());
        }
        ctx.enclave.tracking.leave(lp.id);
    }
}

/// Reads and writes of an SSA frame through the pages cached at entry (implicit accesses
/// during AEX never fault, spec §5 preamble).
///
/// A cached page is used only while its EPCM entry still names it as this enclave's page
/// at that address: an epoch completed without an AEX (`Processor::retire_translations`)
/// leaves the cache in place while the enclave may trim and remove the page, and its EPC
/// page must then never be written for another enclave.
pub(crate) struct FrameAccess<'a> {
    pub(crate) processor: &'a Processor,
    pub(crate) enclave: &'a Enclave,
    pub(crate) frame_la: u64,
    pub(crate) frame_bytes: u64,
    pub(crate) pages: &'a [(u64, EpcIndex)],
}

impl FrameAccess<'_> {
    fn for_each_page(&self, offset: u64, len: usize, mut f: impl FnMut(EpcIndex, usize, std::ops::Range<usize>)) {
        debug_assert!(offset + len as u64 <= self.frame_bytes);
        let mut done = 0;
        while done < len {
            let la = self.frame_la.wrapping_add(offset + done as u64);
            let in_page = (la % PAGE_SIZE as u64) as usize;
            let n = (PAGE_SIZE - in_page).min(len - done);
            let page_la = la - in_page as u64;
            if let Some(&(_, index)) = self.pages.iter().find(|(p, _)| *p == page_la) {
                let entry = self.processor.epcm.entry(index);
                if entry.valid && entry.enclave_address == page_la && entry.owned_by(self.enclave) {
                    f(index, in_page, done..done + n);
                }
            }
            done += n;
        }
    }

    pub(crate) fn read(&self, offset: u64, buf: &mut [u8]) {
        self.for_each_page(offset, buf.len(), |index, in_page, range| {
            self.processor.epc.read(index, in_page, &mut buf[range]);
        });
    }

    pub(crate) fn write(&self, offset: u64, data: &[u8]) {
        self.for_each_page(offset, data.len(), |index, in_page, range| {
            self.processor.epc.write(index, in_page, &data[range]);
        });
    }

    pub(crate) fn read_obj<T: FromBytes + IntoBytes>(&self, offset: u64) -> T {
        let mut value = T::new_zeroed();
        self.read(offset, value.as_mut_bytes());
        value
    }
}

/// XRSTOR's header checks on a non-compacted image: XSTATE_BV ⊆ XFRM, XCOMP_BV = 0, the
/// rest of the header zero (spec §5.2: a malformed image makes ERESUME #GP).
fn xsave_image_ok(image: &[u8], xfrm: u64) -> bool {
    let header = &image[sgxemu_arch::XSTATE_BV_OFFSET..sgxemu_arch::XSTATE_BV_OFFSET + sgxemu_arch::XSAVE_HEADER_SIZE];
    let xstate_bv = u64::from_le_bytes(header[..8].try_into().unwrap_or_default());
    let xcomp_bv = u64::from_le_bytes(header[8..16].try_into().unwrap_or_default());
    xstate_bv & !xfrm == 0 && xcomp_bv == 0 && header[16..].iter().all(|&b| b == 0)
}

fn restore_gprs(regs: &mut Regs, gpr: &Gprsgx) {
    regs.rax = gpr.rax;
    regs.rcx = gpr.rcx;
    regs.rdx = gpr.rdx;
    regs.rbx = gpr.rbx;
    regs.rsp = gpr.rsp;
    regs.rbp = gpr.rbp;
    regs.rsi = gpr.rsi;
    regs.rdi = gpr.rdi;
    regs.r8 = gpr.r8;
    regs.r9 = gpr.r9;
    regs.r10 = gpr.r10;
    regs.r11 = gpr.r11;
    regs.r12 = gpr.r12;
    regs.r13 = gpr.r13;
    regs.r14 = gpr.r14;
    regs.r15 = gpr.r15;
    regs.rip = gpr.rip;
    regs.rflags = (regs.rflags & !ERESUME_RESTORED_FLAGS) | (gpr.rflags & ERESUME_RESTORED_FLAGS);
}
