//! The general-purpose register file of a logical processor, as ENCLU leaves and AEX see it.

/// RFLAGS.CF.
pub const RFLAGS_CF: u64 = 1 << 0;
/// RFLAGS.PF.
pub const RFLAGS_PF: u64 = 1 << 2;
/// RFLAGS.AF.
pub const RFLAGS_AF: u64 = 1 << 4;
/// RFLAGS.ZF.
pub const RFLAGS_ZF: u64 = 1 << 6;
/// RFLAGS.SF.
pub const RFLAGS_SF: u64 = 1 << 7;
/// RFLAGS.TF.
pub const RFLAGS_TF: u64 = 1 << 8;
/// RFLAGS.IF.
pub const RFLAGS_IF: u64 = 1 << 9;
/// RFLAGS.DF.
pub const RFLAGS_DF: u64 = 1 << 10;
/// RFLAGS.OF.
pub const RFLAGS_OF: u64 = 1 << 11;
/// RFLAGS.NT.
pub const RFLAGS_NT: u64 = 1 << 14;
/// RFLAGS.RF.
pub const RFLAGS_RF: u64 = 1 << 16;
/// RFLAGS.VM.
pub const RFLAGS_VM: u64 = 1 << 17;
/// RFLAGS.AC.
pub const RFLAGS_AC: u64 = 1 << 18;
/// RFLAGS.ID.
pub const RFLAGS_ID: u64 = 1 << 21;
/// The arithmetic flags every code-returning leaf clears (spec §3.2).
pub const ARITH_FLAGS: u64 = RFLAGS_CF | RFLAGS_PF | RFLAGS_AF | RFLAGS_ZF | RFLAGS_SF | RFLAGS_OF;
/// Flags ERESUME restores from the SSA frame (spec §5.2).
pub const ERESUME_RESTORED_FLAGS: u64 = RFLAGS_CF
    | RFLAGS_PF
    | RFLAGS_AF
    | RFLAGS_ZF
    | RFLAGS_SF
    | RFLAGS_DF
    | RFLAGS_OF
    | RFLAGS_NT
    | RFLAGS_AC
    | RFLAGS_ID
    | RFLAGS_RF;

/// The user-visible register state of one logical processor.
///
/// Extended (XSAVE) state is kept by [`crate::Lp`] itself; this is the part leaves read
/// and write as register operands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[allow(missing_docs, reason = "register names are self-describing")]
pub struct Regs {
    pub rax: u64,
    pub rbx: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsp: u64,
    pub rbp: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
    pub rip: u64,
    pub rflags: u64,
    pub fsbase: u64,
    pub gsbase: u64,
}

/// True if `addr` is canonical for 48-bit linear addresses.
pub fn is_canonical(addr: u64) -> bool {
    let top = (addr as i64) >> 47;
    top == 0 || top == -1
}
