//! XSAVE-family instructions of enclave code, run as under the enclave's XFRM.
//!
//! On hardware EENTER loads XCR0 with SECS.ATTRIBUTES.XFRM, so an enclave's XSAVE, XSAVEC,
//! XSAVEOPT and XRSTOR touch only the state components it was built for, and XGETBV reads
//! XFRM. Natively the host's XCR0 stays in force. Where it enables more than XFRM (AMX on
//! recent Xeons, PKRU, AVX-512 for an enclave without it) an XSAVE with an all-ones mask
//! overruns a buffer sized for XFRM (by 8 KiB with AMX), and an XRSTOR of a compacted image
//! touches memory past its end: Intel's SDK runtime sizes its save areas from XFRM and
//! crashes so.
//!
//! So on such hosts these instructions are patched to trap in the EPC at the enclave's
//! first entry ([`crate::patch`]), and the trap carries out the instruction on the signal
//! frame's extended state with RFBM = EDX:EAX ∧ XFRM, through the processor model's access
//! checks for the memory operand. Where host XCR0 equals XFRM nothing is patched and nothing
//! traps, and XRSTOR runs natively where the extra components are caller-saved registers
//! ([`must_emulate`]).

use std::sync::OnceLock;

use iced_x86::{Instruction, Mnemonic, Register};
use sgxemu_arch::PfErrorCode;
use sgxemu_cpu::{Access, AccessKind, Exception, Lp, Regs};

use crate::engine::Engine;

const PAGE: u64 = 4096;
/// The legacy region and the XSAVE header: where every image's components start.
const LEGACY_AND_HEADER: usize = 576;
const XSTATE_BV: usize = 512;
const XCOMP_BV: usize = 520;
const COMPACTED: u64 = 1 << 63;
/// x87 state in the legacy region (without MXCSR), XMM registers, and MXCSR with its mask.
const X87: std::ops::Range<usize> = 0..160;
const XMM: std::ops::Range<usize> = 160..416;
const MXCSR: std::ops::Range<usize> = 24..32;

/// XCR0 of this host: the XSAVE features it enabled, which bound what an enclave may select
/// here (x87 | SSE where the OS did not enable XSAVE).
pub fn host_xcr0() -> u64 {
    static XCR0: OnceLock<u64> = OnceLock::new();
    *XCR0.get_or_init(|| {
        const OSXSAVE: u32 = 1 << 27;
        if crate::cpuid::host(1, 0)[2] & OSXSAVE == 0 {
            return 0x3;
        }
        let (low, high): (u32, u32);
        // SAFETY: XGETBV(0) only reads XCR0; CR4.OSXSAVE was checked just above.
        unsafe { std::arch::asm!("xgetbv", in("ecx") 0u32, out("eax") low, out("edx") high, options(nomem, nostack)) };
        u64::from(high) << 32 | u64::from(low)
    })
}

/// Where state component `i` lies in a standard-format image and how it is laid out in a
/// compacted one (host CPUID leaf 0xD).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Component {
    offset: usize,
    size: usize,
    align64: bool,
}

fn components() -> &'static [Option<Component>; 64] {
    static TABLE: OnceLock<[Option<Component>; 64]> = OnceLock::new();
    TABLE.get_or_init(|| {
        let xcr0 = host_xcr0();
        std::array::from_fn(|i| {
            (i >= 2 && xcr0 & (1 << i) != 0).then(|| {
                let [size, offset, flags, _] = crate::cpuid::host(0xd, i as u32);
                Component { offset: offset as usize, size: size as usize, align64: flags & 2 != 0 }
            })
        })
    })
}

/// Offsets of the components of `xcomp_bv` in a compacted image.
fn compacted_offsets(xcomp_bv: u64) -> Vec<(usize, usize, Component)> {
    let mut at = LEGACY_AND_HEADER;
    let mut out = Vec::new();
    for (i, c) in components().iter().enumerate() {
        let Some(c) = c else { continue };
        if xcomp_bv & (1 << i) == 0 {
            continue;
        }
        if c.align64 {
            at = at.next_multiple_of(64);
        }
        out.push((i, at, *c));
        at += c.size;
    }
    out
}

/// State components whose contents the host's code never expects to survive a call: x87,
/// SSE, AVX, AVX-512 (opmask, ZMM_Hi256, Hi16_ZMM) and AMX (TILECFG, TILEDATA) registers
/// are all caller-saved in the x86-64 System V ABI. PKRU (bit 9), by contrast, is the
/// thread's memory-protection setting, and the MPX bound registers (3, 4) are left out as
/// well.
const CALLER_SAVED: u64 = 0x3 | 1 << 2 | 0x7 << 5 | 0x3 << 17;

/// Whether enclave code with XFRM `xfrm` may have anything to emulate at all: this host's
/// XCR0 enables components outside it.
pub fn needed(xfrm: u64) -> bool {
    host_xcr0() & !xfrm != 0
}

/// Whether `insn` in enclave code with XFRM `xfrm` must be carried out by [`emulate`]
/// rather than run natively under the host's larger XCR0.
///
/// Saves (XSAVE, XSAVEC, XSAVEOPT) always: natively they write every host component, past a
/// save area sized for XFRM. XGETBV always: it must read XFRM. XRSTOR only where the host
/// enables a component outside XFRM that is not caller-saved (`CALLER_SAVED`): natively it reads just
/// the components of the image's header (within an image sized for XFRM, as every image an
/// enclave can produce here is: its saves are emulated, and on hardware a header naming more
/// is a #GP), and it initialises the host's components outside XFRM, which no conforming
/// caller of an ECALL can tell apart from an enclave that left them alone. That keeps
/// runtimes that clear the extended state at each entry and exit (Intel's SDK runs two such
/// XRSTORs per ECALL) from paying a trap for each. (Fidelity limit: a header naming a
/// component the host has but XFRM lacks loads it instead of raising #GP.)
pub fn must_emulate(insn: &Instruction, xfrm: u64) -> bool {
    must_emulate_on(host_xcr0(), insn, xfrm)
}

fn must_emulate_on(host_xcr0: u64, insn: &Instruction, xfrm: u64) -> bool {
    let outside = host_xcr0 & !xfrm;
    match insn.mnemonic() {
        Mnemonic::Xrstor | Mnemonic::Xrstor64 => outside & !CALLER_SAVED != 0,
        Mnemonic::Xsave
        | Mnemonic::Xsave64
        | Mnemonic::Xsaveopt
        | Mnemonic::Xsaveopt64
        | Mnemonic::Xsavec
        | Mnemonic::Xsavec64
        | Mnemonic::Xgetbv => outside != 0,
        _ => false,
    }
}

/// The XRSTOR that faulted at `fault_addr`, if the emulator takes the fault over: `code`
/// (the bytes at `regs.rip`) is an XRSTOR that an enclave with XFRM `xfrm` runs natively
/// ([`must_emulate`] leaves it unpatched), and the address lies past its XFRM-sized image.
///
/// A native XRSTOR may check or read the memory of every component the host's XCR0 and
/// its mask select, whatever its header says (SDM Vol. 1 §13.8: it may read components
/// whose XSTATE_BV bit is clear) — up to 8 KiB past an image sized for XFRM on an AMX host.
/// Where that memory is not accessible the fault is not the enclave's: [`emulate`] carries
/// the instruction out instead, touching only the image, as hardware under XCR0 = XFRM
/// does. A fault inside the image is the enclave's own (or a page to map) as usual.
pub fn xrstor_fault_past_image(code: &[u8], regs: &Regs, xfrm: u64, fault_addr: u64) -> Option<Instruction> {
    if !needed(xfrm) {
        return None;
    }
    let insn = iced_x86::Decoder::with_ip(64, code, regs.rip, iced_x86::DecoderOptions::NONE).decode();
    if !matches!(insn.mnemonic(), Mnemonic::Xrstor | Mnemonic::Xrstor64) || must_emulate(&insn, xfrm) {
        return None;
    }
    let image = operand_address(&insn, regs)?;
    let past = fault_addr.wrapping_sub(image) >= standard_len(xfrm) as u64;
    past.then_some(insn)
}

/// An exception the emulated instruction raised, and whether the driver's fault handler
/// must run first (a not-present #PF on its memory operand).
#[derive(Debug, Clone, Copy)]
pub struct Raised {
    /// The exception.
    pub exception: Exception,
    /// The access that faulted, for the driver.
    pub access: Option<AccessKind>,
}

impl From<Exception> for Raised {
    fn from(exception: Exception) -> Self {
        Raised { exception, access: None }
    }
}

/// Carries out `insn` for `lp` (in enclave mode, XCR0 = XFRM) with `regs` and the frame's
/// extended state `area` (a standard-format XSAVE image); on success `regs` is past it.
pub fn emulate(engine: &Engine, lp: &Lp, regs: &mut Regs, area: &mut [u8], insn: &Instruction) -> Result<(), Raised> {
    let xfrm = lp.xcr0;
    let rfbm = (regs.rdx << 32 | (regs.rax & 0xffff_ffff)) & xfrm;
    match insn.mnemonic() {
        Mnemonic::Xgetbv => {
            let value = match regs.rcx as u32 {
                0 => xfrm,
                1 => xstate_bv(area) & xfrm,
                _ => return Err(Exception::Gp.into()),
            };
            (regs.rax, regs.rdx) = (value & 0xffff_ffff, value >> 32);
        }
        mnemonic => {
            let addr = operand_address(insn, regs).ok_or(Exception::Gp)?;
            if addr % 64 != 0 {
                return Err(Exception::Gp.into());
            }
            let memory = EnclaveMemory { engine, lp };
            match mnemonic {
                Mnemonic::Xrstor | Mnemonic::Xrstor64 => xrstor(&memory, addr, rfbm, xfrm, area)?,
                Mnemonic::Xsavec | Mnemonic::Xsavec64 => xsavec(&memory, addr, rfbm, area)?,
                _ => xsave(&memory, addr, rfbm, area)?,
            }
        }
    }
    regs.rip = regs.rip.wrapping_add(insn.len() as u64);
    Ok(())
}

fn operand_address(insn: &Instruction, regs: &Regs) -> Option<u64> {
    insn.virtual_address(0, 0, |register, _, _| register_value(register, regs))
}

fn register_value(register: Register, regs: &Regs) -> Option<u64> {
    use Register::*;
    let full = [
        (RAX, EAX, regs.rax),
        (RBX, EBX, regs.rbx),
        (RCX, ECX, regs.rcx),
        (RDX, EDX, regs.rdx),
        (RSI, ESI, regs.rsi),
        (RDI, EDI, regs.rdi),
        (RSP, ESP, regs.rsp),
        (RBP, EBP, regs.rbp),
        (R8, R8D, regs.r8),
        (R9, R9D, regs.r9),
        (R10, R10D, regs.r10),
        (R11, R11D, regs.r11),
        (R12, R12D, regs.r12),
        (R13, R13D, regs.r13),
        (R14, R14D, regs.r14),
        (R15, R15D, regs.r15),
        (RIP, EIP, regs.rip),
    ];
    if let Some(&(_, _, value)) = full.iter().find(|(wide, _, _)| *wide == register) {
        return Some(value);
    }
    if let Some(&(_, _, value)) = full.iter().find(|(_, narrow, _)| *narrow == register) {
        return Some(value & 0xffff_ffff);
    }
    match register {
        FS => Some(regs.fsbase),
        GS => Some(regs.gsbase),
        ES | CS | SS | DS => Some(0),
        _ => Option::None,
    }
}

fn xstate_bv(image: &[u8]) -> u64 {
    u64_at(image, XSTATE_BV)
}

fn u64_at(image: &[u8], at: usize) -> u64 {
    image.get(at..at + 8).map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap_or_default()))
}

fn set_u64(image: &mut [u8], at: usize, value: u64) {
    if let Some(b) = image.get_mut(at..at + 8) {
        b.copy_from_slice(&value.to_le_bytes());
    }
}

/// Copies `range` from `from` to `to` where both hold it.
fn copy_range(to: &mut [u8], to_at: usize, from: &[u8], from_at: usize, len: usize) {
    if let (Some(dst), Some(src)) = (to.get_mut(to_at..to_at + len), from.get(from_at..from_at + len)) {
        dst.copy_from_slice(src);
    }
}

/// The legacy region's parts that `rfbm` selects.
fn legacy_ranges(rfbm: u64) -> impl Iterator<Item = std::ops::Range<usize>> {
    [(rfbm & 1 != 0, X87), (rfbm & 2 != 0, XMM), (rfbm & 6 != 0, MXCSR)]
        .into_iter()
        .filter_map(|(on, r)| on.then_some(r))
}

/// The extended components (2 and up) of `mask` with their standard layout.
fn extended(mask: u64) -> impl Iterator<Item = (usize, Component)> {
    components().iter().enumerate().filter_map(move |(i, c)| c.filter(|_| mask & (1 << i) != 0).map(|c| (i, c)))
}

fn standard_len(mask: u64) -> usize {
    extended(mask).map(|(_, c)| c.offset + c.size).max().unwrap_or(0).max(LEGACY_AND_HEADER)
}

/// XSAVE and XSAVEOPT (which may always save like XSAVE): the standard format.
fn xsave(memory: &EnclaveMemory, addr: u64, rfbm: u64, state: &[u8]) -> Result<(), Raised> {
    let mut image = memory.read(addr, standard_len(rfbm), AccessKind::Write)?;
    for range in legacy_ranges(rfbm) {
        copy_range(&mut image, range.start, state, range.start, range.len());
    }
    let in_use = xstate_bv(state);
    for (i, c) in extended(rfbm) {
        if in_use & (1 << i) != 0 {
            copy_range(&mut image, c.offset, state, c.offset, c.size);
        } else if let Some(init) = image.get_mut(c.offset..c.offset + c.size) {
            init.fill(0);
        }
    }
    let header = (xstate_bv(&image) & !rfbm) | (in_use & rfbm);
    set_u64(&mut image, XSTATE_BV, header);
    memory.write(addr, &image)
}

/// XSAVEC: the compacted format, components in use only.
fn xsavec(memory: &EnclaveMemory, addr: u64, rfbm: u64, state: &[u8]) -> Result<(), Raised> {
    let layout = compacted_offsets(rfbm);
    let len = layout.last().map_or(LEGACY_AND_HEADER, |&(_, at, c)| at + c.size);
    let mut image = memory.read(addr, len, AccessKind::Write)?;
    for range in legacy_ranges(rfbm) {
        copy_range(&mut image, range.start, state, range.start, range.len());
    }
    let in_use = xstate_bv(state) & rfbm;
    for &(i, at, c) in &layout {
        if in_use & (1 << i) != 0 {
            copy_range(&mut image, at, state, c.offset, c.size);
        }
    }
    set_u64(&mut image, XSTATE_BV, in_use);
    set_u64(&mut image, XCOMP_BV, rfbm | COMPACTED);
    memory.write(addr, &image)
}

/// XRSTOR of a standard or compacted image, with the header checks that raise #GP.
fn xrstor(memory: &EnclaveMemory, addr: u64, rfbm: u64, xfrm: u64, state: &mut [u8]) -> Result<(), Raised> {
    let header = memory.read(addr + XSTATE_BV as u64, LEGACY_AND_HEADER - XSTATE_BV, AccessKind::Read)?;
    let (bv, comp) = (u64_at(&header, 0), u64_at(&header, 8));
    let reserved_clear = header[16..].iter().all(|&b| b == 0);
    let compacted = comp & COMPACTED != 0;
    let valid = reserved_clear
        && bv & !xfrm == 0
        && if compacted { comp & !COMPACTED & !xfrm == 0 && bv & !comp == 0 } else { comp == 0 };
    if !valid {
        return Err(Exception::Gp.into());
    }
    let layout: Vec<(usize, usize, Component)> = if compacted {
        compacted_offsets(comp & !COMPACTED)
    } else {
        extended(xfrm).map(|(i, c)| (i, c.offset, c)).collect()
    };
    let wanted = bv & rfbm;
    let len = layout
        .iter()
        .filter(|(i, ..)| wanted & (1 << i) != 0)
        .map(|&(_, at, c)| at + c.size)
        .max()
        .unwrap_or(0)
        .max(LEGACY_AND_HEADER);
    let image = memory.read(addr, len, AccessKind::Read)?;
    for range in legacy_ranges(rfbm & bv) {
        copy_range(state, range.start, &image, range.start, range.len());
    }
    if rfbm & 6 != 0 {
        copy_range(state, MXCSR.start, &image, MXCSR.start, MXCSR.len());
    }
    for &(i, at, c) in &layout {
        if wanted & (1 << i) != 0 {
            copy_range(state, c.offset, &image, at, c.size);
        }
    }
    // Components of RFBM whose XSTATE_BV bit is clear return to their initial state: the
    // kernel's sigreturn initialises what the frame's XSTATE_BV leaves out.
    let loaded = (xstate_bv(state) & !rfbm) | wanted;
    set_u64(state, XSTATE_BV, loaded);
    Ok(())
}

/// Enclave memory as the emulated instruction sees it: every byte through the processor
/// model's access checks, then the EPC (or ordinary memory outside ELRANGE).
struct EnclaveMemory<'a> {
    engine: &'a Engine,
    lp: &'a Lp,
}

impl EnclaveMemory<'_> {
    /// Each page piece of `[addr, addr + len)` and where it lands, checked for `kind`.
    fn pieces(&self, addr: u64, len: usize, kind: AccessKind) -> Result<Vec<(Access, usize)>, Raised> {
        let mut pieces = Vec::new();
        let mut at = addr;
        let end = addr + len as u64;
        while at < end {
            let piece = (end.min((at / PAGE + 1) * PAGE) - at) as usize;
            let access = self.engine.processor.check_access(self.lp, &*self.engine.space, at, kind).map_err(|e| {
                let not_present = matches!(e, Exception::Pf { code, .. } if !code.contains(PfErrorCode::P));
                Raised { exception: e, access: not_present.then_some(kind) }
            })?;
            pieces.push((access, piece));
            at += piece as u64;
        }
        Ok(pieces)
    }

    fn read(&self, addr: u64, len: usize, kind: AccessKind) -> Result<Vec<u8>, Raised> {
        let mut out = vec![0u8; len];
        let mut done = 0;
        for (access, piece) in self.pieces(addr, len, kind)? {
            let buf = &mut out[done..done + piece];
            match access {
                Access::Enclave { page, offset } => self.engine.processor.read_epc(page, offset, buf),
                Access::Normal { .. } => {
                    crate::sys::read_own_memory(addr + done as u64, buf).map_err(|_| Exception::Gp)?;
                }
                Access::AbortPage => buf.fill(0xff),
            }
            done += piece;
        }
        Ok(out)
    }

    fn write(&self, addr: u64, data: &[u8]) -> Result<(), Raised> {
        let mut done = 0;
        for (access, piece) in self.pieces(addr, data.len(), AccessKind::Write)? {
            let bytes = &data[done..done + piece];
            match access {
                Access::Enclave { page, offset } => self.engine.processor.write_epc(page, offset, bytes),
                Access::Normal { .. } => {
                    crate::sys::write_memory_of(crate::sys::getpid(), addr + done as u64, bytes)
                        .map_err(|_| Exception::Gp)?;
                }
                Access::AbortPage => {}
            }
            done += piece;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use iced_x86::{Decoder, DecoderOptions};

    use super::*;

    #[test]
    fn compacted_layout_packs_selected_components_in_order() {
        let layout = compacted_offsets(host_xcr0() & !3);
        let mut at = LEGACY_AND_HEADER;
        for (i, offset, c) in layout {
            assert!(host_xcr0() & (1 << i) != 0);
            if c.align64 {
                at = at.next_multiple_of(64);
            }
            assert_eq!(offset, at, "component {i}");
            at += c.size;
        }
    }

    #[test]
    fn avx_sits_at_its_architectural_offset() {
        if host_xcr0() & 4 == 0 {
            eprintln!("skipped: this host has no AVX state in XCR0");
            return;
        }
        assert_eq!(components()[2], Some(Component { offset: 576, size: 256, align64: false }));
        assert_eq!(compacted_offsets(4), vec![(2, 576, components()[2].unwrap())]);
        assert_eq!(standard_len(3), LEGACY_AND_HEADER);
        assert_eq!(standard_len(7), 832);
    }

    #[test]
    fn saves_and_xgetbv_are_emulated_and_xrstor_only_past_caller_saved_components() {
        // mov eax,-1; xsavec64 [rcx]; xrstor64 [rcx]; fxsave64 [rcx]; xgetbv; xsave [rsp+8]; ret
        let code = [
            0xb8, 0xff, 0xff, 0xff, 0xff, 0x48, 0x0f, 0xc7, 0x21, 0x48, 0x0f, 0xae, 0x29, 0x48, 0x0f, 0xae, 0x01, 0x0f,
            0x01, 0xd0, 0x0f, 0xae, 0x64, 0x24, 0x08, 0xc3,
        ];
        let emulated = |host: u64, xfrm: u64| -> Vec<(u64, Mnemonic)> {
            Decoder::with_ip(64, &code, 0x1000, DecoderOptions::NONE)
                .into_iter()
                .filter(|insn| must_emulate_on(host, insn, xfrm))
                .map(|i| (i.ip(), i.mnemonic()))
                .collect()
        };
        let saves = vec![(0x1005, Mnemonic::Xsavec64), (0x1011, Mnemonic::Xgetbv), (0x1014, Mnemonic::Xsave)];
        // AMX and AVX-512 outside XFRM: caller-saved registers, XRSTOR runs natively.
        assert_eq!(emulated(0x600e7, 0x3), saves);
        // PKRU outside XFRM: an XRSTOR would reset the thread's protection keys.
        let mut all = saves.clone();
        all.insert(1, (0x1009, Mnemonic::Xrstor64));
        assert_eq!(emulated(0x2e7, 0xe7), all);
        assert_eq!(emulated(0xe7, 0xe7), vec![]);
    }

    #[test]
    fn operands_use_the_enclave_s_registers_and_segment_bases() {
        let code = [0x64, 0x48, 0x0f, 0xae, 0x64, 0x24, 0x40]; // xsave64 fs:[rsp+0x40]
        let insn = Decoder::with_ip(64, &code, 0, DecoderOptions::NONE).decode();
        let regs = Regs { rsp: 0x7000, fsbase: 0x10_0000, ..Regs::default() };
        assert_eq!(operand_address(&insn, &regs), Some(0x10_7040));
    }
}
