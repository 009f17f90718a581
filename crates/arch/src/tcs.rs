//! TCS, the Thread Control Structure (spec §1.4; SDM Vol. 3D §34.8, kernel `arch.h`
//! `struct sgx_tcs`).

use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout};

/// Size of the architectural TCS fields, i.e. the end of GSLIMIT. EDBGRD of a TCS at an offset
/// at or beyond this limit (the SDM's `SGX_TCS_LIMIT`) raises #GP (spec §4.6, a **\[DESIGN\]**
/// choice: 88 on CET parts, which add OCETSSA and PREVSSP).
pub const TCS_ARCH_SIZE: usize = 72;

/// A TCS page (4096 bytes, 4 KiB aligned): one enclave thread's entry point and SSA stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C, align(4096))]
pub struct Tcs {
    /// 0 = inactive, 1 = active. Forced to 0 by EADD; set by EENTER/ERESUME, cleared by
    /// EEXIT/AEX.
    pub state: u64,
    /// Thread flags, see [`TcsFlags`]; other bits must be 0.
    pub flags: u64,
    /// Offset of the SSA stack from the enclave base; page aligned.
    pub ossa: u64,
    /// Current SSA frame index; forced to 0 by EADD.
    pub cssa: u32,
    /// Number of SSA frames.
    pub nssa: u32,
    /// Entry point offset from the enclave base.
    pub oentry: u64,
    /// Hardware-written copy of the asynchronous exit pointer; forced to 0 by EADD.
    pub aep: u64,
    /// FS base offset from the enclave base; page aligned.
    pub ofsbase: u64,
    /// GS base offset from the enclave base; page aligned.
    pub ogsbase: u64,
    /// FS limit (32-bit enclaves only).
    pub fslimit: u32,
    /// GS limit (32-bit enclaves only).
    pub gslimit: u32,
    /// Reserved; must be zero at EADD and at EACCEPT of a new TCS.
    pub reserved: [u8; 4024],
}

layout!(Tcs, size = Tcs::SIZE, test = tcs_layout, {
    state @ 0,
    flags @ 8,
    ossa @ 16,
    cssa @ 24,
    nssa @ 28,
    oentry @ 32,
    aep @ 40,
    ofsbase @ 48,
    ogsbase @ 56,
    fslimit @ 64,
    gslimit @ 68,
    reserved @ TCS_ARCH_SIZE,
});

const _: () = assert!(align_of::<Tcs>() == Tcs::ALIGN);

impl Tcs {
    /// Architectural size in bytes.
    pub const SIZE: usize = 4096;
    /// Required alignment of a TCS page address.
    pub const ALIGN: usize = 4096;
    /// Byte offset of FLAGS, the only qword EDBGWR may write in a TCS (spec §4.6).
    pub const FLAGS_OFFSET: usize = 8;

    /// FLAGS as typed flags; reserved bits are kept.
    #[must_use]
    pub const fn flags(&self) -> TcsFlags {
        TcsFlags::from_bits_retain(self.flags)
    }
}

impl Default for Tcs {
    /// The all-zero TCS.
    fn default() -> Self {
        Self::new_zeroed()
    }
}

bitflags::bitflags! {
    /// TCS.FLAGS bits (spec §1.4). Any other bit set makes EENTER/ERESUME #GP.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct TcsFlags: u64 {
        /// Debug opt-in; forced to 0 by EADD, settable by EDBGWR in debug enclaves.
        const DBGOPTIN = 1 << 0;
        /// AEX-Notify (newer parts only).
        const AEXNOTIFY = 1 << 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_alignment_and_limits() {
        assert_eq!(size_of::<Tcs>(), 4096);
        assert_eq!(align_of::<Tcs>(), 4096);
        assert_eq!(core::mem::offset_of!(Tcs, reserved), TCS_ARCH_SIZE);
        assert_eq!(core::mem::offset_of!(Tcs, flags), Tcs::FLAGS_OFFSET);
    }

    #[test]
    fn flags_round_trip() {
        let tcs = Tcs { flags: 0x10 | 1, ..Tcs::default() };
        assert!(tcs.flags().contains(TcsFlags::DBGOPTIN));
        assert!(!tcs.flags().contains(TcsFlags::AEXNOTIFY));
        assert_eq!(tcs.flags().bits(), 0x11);
        assert_eq!(TcsFlags::from_bits(0x11), None);
        assert_eq!(TcsFlags::from_bits(3), Some(TcsFlags::all()));
    }
}
