//! The tail of an SSA frame: GPRSGX, EXITINFO and EXINFO (spec §1.5; SDM Vol. 3D §34.9).
//!
//! An SSA frame is SECS.SSAFRAMESIZE pages. It starts with the XSAVE region (see
//! [`crate::xsave`]) and ends with GPRSGX, the last [`GPRSGX_SIZE`] bytes of the frame. The
//! MISC region grows downward from GPRSGX; with MISCSELECT.EXINFO the 16-byte [`Exinfo`]
//! sits immediately below GPRSGX.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::ArchError;

/// Size of GPRSGX, the last bytes of every SSA frame.
pub const GPRSGX_SIZE: usize = 184;

/// Size of EXINFO, the MISC component selected by MISCSELECT.EXINFO.
pub const EXINFO_SIZE: usize = 16;

/// GPRSGX: the general-purpose register state AEX saves and ERESUME restores (184 bytes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
#[expect(missing_docs, reason = "general-purpose registers are named after themselves")]
pub struct Gprsgx {
    pub rax: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rbx: u64,
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
    pub rflags: u64,
    pub rip: u64,
    /// Untrusted (outside) RSP, written by EENTER and restored on AEX.
    pub ursp: u64,
    /// Untrusted (outside) RBP, written by EENTER and restored on AEX.
    pub urbp: u64,
    /// Why the last AEX happened; see [`ExitInfo`].
    pub exitinfo: u32,
    /// Reserved (AEX-Notify byte on newer parts).
    pub reserved: u32,
    /// FS base at the time of the AEX.
    pub fsbase: u64,
    /// GS base at the time of the AEX.
    pub gsbase: u64,
}

layout!(Gprsgx, size = GPRSGX_SIZE, test = gprsgx_layout, {
    rax @ 0,
    rcx @ 8,
    rdx @ 16,
    rbx @ 24,
    rsp @ 32,
    rbp @ 40,
    rsi @ 48,
    rdi @ 56,
    r8 @ 64,
    r9 @ 72,
    r10 @ 80,
    r11 @ 88,
    r12 @ 96,
    r13 @ 104,
    r14 @ 112,
    r15 @ 120,
    rflags @ 128,
    rip @ 136,
    ursp @ 144,
    urbp @ 152,
    exitinfo @ 160,
    reserved @ 164,
    fsbase @ 168,
    gsbase @ 176,
});

impl Gprsgx {
    /// Architectural size in bytes.
    pub const SIZE: usize = GPRSGX_SIZE;
    /// Natural alignment; GPRSGX ends a page-aligned SSA frame, so it is 8-byte aligned.
    pub const ALIGN: usize = 8;

    /// EXITINFO as an [`ExitInfo`].
    #[must_use]
    pub const fn exit_info(&self) -> ExitInfo {
        ExitInfo(self.exitinfo)
    }
}

/// The EXITINFO word of GPRSGX (spec §1.5): bits 7:0 vector, bits 10:8 exit type, bit 31
/// valid, all else zero. It is [`ExitInfo::NONE`] for interrupts and for exceptions not
/// reported inside the enclave.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(transparent)]
pub struct ExitInfo(pub u32);

impl ExitInfo {
    /// No exception information (the value for interrupts, NMI, SMI and unreported faults).
    pub const NONE: ExitInfo = ExitInfo(0);
    /// VALID, bit 31.
    pub const VALID: u32 = 1 << 31;
    /// Mask of VECTOR, bits 7:0.
    pub const VECTOR_MASK: u32 = 0xFF;
    /// Shift of EXIT_TYPE, bits 10:8.
    pub const EXIT_TYPE_SHIFT: u32 = 8;
    /// Mask of EXIT_TYPE, bits 10:8, after shifting.
    pub const EXIT_TYPE_MASK: u32 = 0x7;

    /// A valid EXITINFO for `vector` raised as `exit_type`.
    #[must_use]
    pub const fn new(vector: u8, exit_type: ExitType) -> Self {
        ExitInfo(Self::VALID | ((exit_type as u32) << Self::EXIT_TYPE_SHIFT) | vector as u32)
    }

    /// VECTOR, bits 7:0.
    #[must_use]
    pub const fn vector(self) -> u8 {
        (self.0 & Self::VECTOR_MASK) as u8
    }

    /// EXIT_TYPE, bits 10:8, if it is one the architecture defines.
    #[must_use]
    pub fn exit_type(self) -> Option<ExitType> {
        ExitType::try_from(self.exit_type_bits()).ok()
    }

    /// EXIT_TYPE, bits 10:8, raw.
    #[must_use]
    pub const fn exit_type_bits(self) -> u8 {
        ((self.0 >> Self::EXIT_TYPE_SHIFT) & Self::EXIT_TYPE_MASK) as u8
    }

    /// VALID, bit 31.
    #[must_use]
    pub const fn is_valid(self) -> bool {
        self.0 & Self::VALID != 0
    }
}

impl From<ExitInfo> for u32 {
    fn from(value: ExitInfo) -> u32 {
        value.0
    }
}

numeric_enum! {
    /// EXITINFO.EXIT_TYPE (spec §1.5).
    pub enum ExitType: u8, error = ArchError::UnknownExitType {
        /// A hardware exception (fault or trap).
        HardwareException = 3 => "hardware exception",
        /// A software exception: INT3 or INTO.
        SoftwareException = 6 => "software exception",
    }
}

/// EXINFO (16 bytes): the fault details AEX saves when MISCSELECT.EXINFO is set (spec §1.5).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct Exinfo {
    /// Faulting linear address for #PF; 0 for #GP.
    pub maddr: u64,
    /// Exception error code (#PF codes have U/S forced to 1 and bit 15 for EPCM faults).
    pub errcd: u32,
    /// Reserved.
    pub reserved: u32,
}

layout!(Exinfo, size = EXINFO_SIZE, test = exinfo_layout, { maddr @ 0, errcd @ 8, reserved @ 12 });

impl Exinfo {
    /// Architectural size in bytes.
    pub const SIZE: usize = EXINFO_SIZE;
    /// Natural alignment; EXINFO sits right below GPRSGX.
    pub const ALIGN: usize = 8;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(size_of::<Gprsgx>(), 184);
        assert_eq!(size_of::<Exinfo>(), 16);
        assert_eq!(size_of::<ExitInfo>(), 4);
    }

    #[test]
    fn exit_info_encoding() {
        // #PF (14) as a hardware exception: VALID | 3 << 8 | 14.
        let pf = ExitInfo::new(14, ExitType::HardwareException);
        assert_eq!(pf.0, 0x8000_030E);
        assert!(pf.is_valid());
        assert_eq!(pf.vector(), 14);
        assert_eq!(pf.exit_type(), Some(ExitType::HardwareException));

        // INT3 (#BP, 3) as a software exception.
        let bp = ExitInfo::new(3, ExitType::SoftwareException);
        assert_eq!(bp.0, 0x8000_0603);
        assert_eq!(bp.exit_type(), Some(ExitType::SoftwareException));

        assert!(!ExitInfo::NONE.is_valid());
        assert_eq!(ExitInfo::NONE.exit_type(), None);
        assert_eq!(ExitInfo::default(), ExitInfo::NONE);

        let odd = ExitInfo(0x8000_0100);
        assert_eq!(odd.exit_type_bits(), 1);
        assert_eq!(odd.exit_type(), None);
    }

    #[test]
    fn exit_type_try_from() {
        assert_eq!(ExitType::try_from(3), Ok(ExitType::HardwareException));
        assert_eq!(ExitType::try_from(6), Ok(ExitType::SoftwareException));
        assert_eq!(ExitType::try_from(4), Err(ArchError::UnknownExitType(4)));
    }

    #[test]
    fn gprsgx_exit_info_view() {
        let g = Gprsgx { exitinfo: 0x8000_0306, ..Gprsgx::default() };
        assert_eq!(g.exit_info().vector(), 6);
    }
}
