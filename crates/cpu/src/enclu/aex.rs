//! Asynchronous Enclave Exit (spec §5.4): state into the SSA frame, synthetic state out.

use sgxemu_arch::{
    Exinfo, ExitInfo, ExitType, GPRSGX_SIZE, Gprsgx, Miscselect, PAGE_SIZE, PfErrorCode, Tcs, Vector, xsave_size,
};
use zerocopy::{FromZeros, IntoBytes};

use crate::fault::Exception;
use crate::lp::Lp;
use crate::processor::Processor;
use crate::regs::{RFLAGS_AF, RFLAGS_CF, RFLAGS_OF, RFLAGS_PF, RFLAGS_RF, RFLAGS_SF, RFLAGS_ZF, Regs};

use super::entry::FrameAccess;

/// What caused an AEX.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// An exception on `vector` (faults: RIP at the faulting instruction; traps such as
    /// INT3: RIP after it).
    Exception {
        /// Exception vector.
        vector: Vector,
        /// Error code (#PF: PFEC incl. bit 15; #GP: 0).
        error_code: u32,
        /// Faulting linear address (#PF only).
        addr: u64,
    },
    /// An interrupt, NMI, or an IPI the driver sent: EXITINFO stays 0.
    Interrupt,
}

/// An AEX request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AexEvent {
    /// The event.
    pub kind: EventKind,
}

impl AexEvent {
    /// AEX caused by an exception a leaf or an access raised.
    pub fn from_exception(exception: Exception) -> Self {
        let kind = match exception {
            Exception::Gp => EventKind::Exception { vector: Vector::Gp, error_code: 0, addr: 0 },
            Exception::Ud => EventKind::Exception { vector: Vector::Ud, error_code: 0, addr: 0 },
            Exception::Pf { addr, code } => EventKind::Exception { vector: Vector::Pf, error_code: code.bits(), addr },
        };
        AexEvent { kind }
    }

    /// AEX caused by an interrupt (e.g. the driver's IPI).
    pub fn interrupt() -> Self {
        AexEvent { kind: EventKind::Interrupt }
    }
}

/// What the untrusted side sees after an AEX: the event is delivered from the synthetic
/// state (RIP = AEP) with these values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AexReport {
    /// The exception vector, or `None` for an interrupt.
    pub vector: Option<Vector>,
    /// The error code delivered with it.
    pub error_code: u32,
    /// CR2 for a #PF: the faulting address with bits 11:0 cleared.
    pub cr2: u64,
}

/// Vectors whose EXITINFO is always reported (spec §1.5).
fn always_reported(vector: Vector) -> bool {
    matches!(
        vector,
        Vector::De | Vector::Db | Vector::Bp | Vector::Br | Vector::Ud | Vector::Mf | Vector::Ac | Vector::Xm
    )
}

impl Processor {
    /// Performs an AEX on `lp`, which must be in enclave mode: saves `regs` and the
    /// extended state into the current SSA frame, loads the synthetic state, increments
    /// CSSA and leaves enclave mode. Returns `None` (and changes nothing) outside enclave
    /// mode.
    pub fn aex(&self, lp: &mut Lp, regs: &mut Regs, event: AexEvent) -> Option<AexReport> {
        let ctx = lp.enclave.take()?;
        lp.stats.aex += 1;
        let p = &ctx.enclave.params;
        let frame = FrameAccess {
            processor: self,
            enclave: &ctx.enclave,
            frame_la: ctx.frame_la,
            frame_bytes: p.frame_bytes(),
            pages: &ctx.frame_pages,
        };
        let gpr_offset = p.frame_bytes() - GPRSGX_SIZE as u64;
        // 2. Save state.
        let xsave_len = xsave_size(p.attributes.xfrm);
        frame.write(0, &lp.xsave[..xsave_len]);
        // XSAVE with RFBM = XFRM writes only the XSTATE_BV bits of XFRM: state the LP holds
        // for features outside XFRM must not leak into the header ERESUME checks (spec §5.2).
        let bv_offset = sgxemu_arch::XSTATE_BV_OFFSET;
        let live_bv = u64::from_le_bytes(lp.xsave[bv_offset..bv_offset + 8].try_into().unwrap_or_default());
        if live_bv & !p.attributes.xfrm != 0 {
            frame.write(bv_offset as u64, &(live_bv & p.attributes.xfrm).to_le_bytes());
        }
        let old: Gprsgx = frame.read_obj(gpr_offset);
        let (exitinfo, exinfo, report) = self.describe_event(&ctx.enclave.params.miscselect, event);
        let gpr = Gprsgx {
            rax: regs.rax,
            rcx: regs.rcx,
            rdx: regs.rdx,
            rbx: regs.rbx,
            rsp: regs.rsp,
            rbp: regs.rbp,
            rsi: regs.rsi,
            rdi: regs.rdi,
            r8: regs.r8,
            r9: regs.r9,
            r10: regs.r10,
            r11: regs.r11,
            r12: regs.r12,
            r13: regs.r13,
            r14: regs.r14,
            r15: regs.r15,
            rflags: regs.rflags,
            rip: regs.rip,
            ursp: old.ursp,
            urbp: old.urbp,
            exitinfo: exitinfo.0,
            reserved: 0,
            fsbase: regs.fsbase,
            gsbase: regs.gsbase,
        };
        frame.write(gpr_offset, gpr.as_bytes());
        if let Some(exinfo) = exinfo {
            frame.write(gpr_offset - sgxemu_arch::EXINFO_SIZE as u64, exinfo.as_bytes());
        }
        // 3. Synthetic state.
        let mut aep = [0u8; 8];
        self.epc.read(ctx.tcs_page, std::mem::offset_of!(Tcs, aep), &mut aep);
        let aep = u64::from_le_bytes(aep);
        *regs = Regs {
            rax: sgxemu_arch::Enclu::Eresume as u64,
            rbx: ctx.tcs_la,
            rcx: aep,
            rip: aep,
            rsp: old.ursp,
            rbp: old.urbp,
            rflags: regs.rflags & !(RFLAGS_CF | RFLAGS_PF | RFLAGS_AF | RFLAGS_ZF | RFLAGS_SF | RFLAGS_OF | RFLAGS_RF),
            ..Regs::default()
        };
        lp.reset_extended_state();
        self.apply_math_exception_state(lp, report.vector);
        // 4. CSSA += 1, then leave (STATE := INACTIVE, FS/GS/XCR0/TF restored).
        {
            let _entry = self.epcm.entry(ctx.tcs_page);
            let off = std::mem::offset_of!(Tcs, cssa);
            let mut cssa = [0u8; 4];
            self.epc.read(ctx.tcs_page, off, &mut cssa);
            let cssa = u32::from_le_bytes(cssa).wrapping_add(1);
            self.epc.write(ctx.tcs_page, off, &cssa.to_le_bytes());
        }
        self.leave_enclave(lp, regs, ctx);
        Some(report)
    }

    /// EXITINFO, EXINFO and the delivered event for an AEX (spec §1.5, §5.4 steps 2 and 5).
    fn describe_event(&self, miscselect: &Miscselect, event: AexEvent) -> (ExitInfo, Option<Exinfo>, AexReport) {
        let EventKind::Exception { vector, error_code, addr } = event.kind else {
            return (ExitInfo::NONE, None, AexReport { vector: None, error_code: 0, cr2: 0 });
        };
        let exinfo_enabled = miscselect.contains(Miscselect::EXINFO);
        let gp_or_pf = matches!(vector, Vector::Gp | Vector::Pf);
        let exit_type = if matches!(vector, Vector::Bp | Vector::Of) {
            ExitType::SoftwareException
        } else {
            ExitType::HardwareException
        };
        let valid = always_reported(vector) || (gp_or_pf && exinfo_enabled);
        let exitinfo = if valid { ExitInfo::new(vector as u8, exit_type) } else { ExitInfo::NONE };
        let exinfo = (gp_or_pf && exinfo_enabled).then(|| {
            let mut e = Exinfo::new_zeroed();
            e.maddr = if vector == Vector::Pf { addr } else { 0 };
            // #PF codes are reported with U/S forced to 1 (spec §1.5).
            e.errcd = if vector == Vector::Pf { error_code | PfErrorCode::U.bits() } else { error_code };
            e
        });
        let cr2 = if vector == Vector::Pf { addr & !(PAGE_SIZE as u64 - 1) } else { 0 };
        (exitinfo, exinfo, AexReport { vector: Some(vector), error_code, cr2 })
    }

    /// #MF and #XM leave the x87/SSE status that lets the OS classify the exception
    /// (spec §5.4 step 3, §13.14): without it Linux sees a spurious exception forever.
    fn apply_math_exception_state(&self, lp: &mut Lp, vector: Option<Vector>) {
        match vector {
            Some(Vector::Mf) => {
                lp.xsave[sgxemu_arch::FCW_OFFSET..sgxemu_arch::FCW_OFFSET + 2]
                    .copy_from_slice(&0x037Eu16.to_le_bytes());
                lp.xsave[sgxemu_arch::FSW_OFFSET..sgxemu_arch::FSW_OFFSET + 2]
                    .copy_from_slice(&0x8081u16.to_le_bytes());
            }
            Some(Vector::Xm) => {
                lp.xsave[sgxemu_arch::MXCSR_OFFSET..sgxemu_arch::MXCSR_OFFSET + 4]
                    .copy_from_slice(&0x1F01u32.to_le_bytes());
            }
            _ => {}
        }
    }
}
