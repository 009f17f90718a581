//! ATTRIBUTES (FLAGS + XFRM) and MISCSELECT (spec §1.1, §1.2; SDM Vol. 3D §34.7.1, kernel
//! `arch.h` `enum sgx_attribute`, `enum sgx_miscselect`).

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// SECS.ATTRIBUTES and its copies in SIGSTRUCT, EINITTOKEN, REPORT, TARGETINFO, KEYREQUEST
/// (16 bytes).
///
/// `flags` is kept as a raw `u64` so reserved bits survive; read it through
/// [`Attributes::flags`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct Attributes {
    /// Attribute flags, see [`AttributesFlags`].
    pub flags: u64,
    /// XSAVE feature request mask, in XCR0 format (bits 1:0, x87 and SSE, must be set).
    pub xfrm: u64,
}

layout!(Attributes, size = Attributes::SIZE, test = attributes_layout, { flags @ 0, xfrm @ 8 });

impl Attributes {
    /// Architectural size in bytes.
    pub const SIZE: usize = 16;
    /// No leaf takes an ATTRIBUTES pointer; this is the natural alignment of the two words.
    pub const ALIGN: usize = 8;

    /// Builds ATTRIBUTES from typed flags and an XFRM mask.
    #[must_use]
    pub const fn new(flags: AttributesFlags, xfrm: u64) -> Self {
        Self { flags: flags.bits(), xfrm }
    }

    /// The FLAGS word as typed flags; reserved bits are kept (`from_bits_retain`).
    #[must_use]
    pub const fn flags(&self) -> AttributesFlags {
        AttributesFlags::from_bits_retain(self.flags)
    }

    /// Bitwise AND of both words with `mask` (how EINIT applies SIGSTRUCT.ATTRIBUTEMASK and
    /// EGETKEY applies KEYREQUEST.ATTRIBUTEMASK).
    #[must_use]
    pub const fn and(self, mask: Attributes) -> Attributes {
        Attributes { flags: self.flags & mask.flags, xfrm: self.xfrm & mask.xfrm }
    }
}

bitflags::bitflags! {
    /// ATTRIBUTES.FLAGS bits (spec §1.1). Bits not named here are reserved; which of them a
    /// part lets ECREATE set is enumerated by CPUID.(12h,1) (spec §10.2).
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct AttributesFlags: u64 {
        /// Enclave initialized; set only by EINIT, must be 0 in ECREATE's input.
        const INIT = 1 << 0;
        /// Debug enclave: EDBGRD/EDBGWR allowed.
        const DEBUG = 1 << 1;
        /// 64-bit enclave.
        const MODE64BIT = 1 << 2;
        /// May request the PROVISION and PROVISION_SEAL keys.
        const PROVISIONKEY = 1 << 4;
        /// May request the EINITTOKEN key (a "controlled" attribute at EINIT).
        const EINITTOKENKEY = 1 << 5;
        /// CET enabled (CET-capable parts only; reserved otherwise).
        const CET = 1 << 6;
        /// Key separation and sharing (CONFIGID, CONFIGSVN, ISVFAMILYID, ISVEXTPRODID).
        const KSS = 1 << 7;
        /// AEX-Notify (newer parts only; reserved otherwise).
        const AEXNOTIFY = 1 << 10;
    }
}

bitflags::bitflags! {
    /// MISCSELECT: which extra state AEX saves in the SSA frame's MISC region (spec §1.2).
    /// Supported bits are enumerated by CPUID.(12h,0).EBX.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct Miscselect: u32 {
        /// Save the 16-byte EXINFO (fault address and error code) on #PF/#GP.
        const EXINFO = 1 << 0;
        /// Save CET state (CET parts only).
        const CPINFO = 1 << 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_values_match_spec() {
        let expected: [(AttributesFlags, u64); 8] = [
            (AttributesFlags::INIT, 0x1),
            (AttributesFlags::DEBUG, 0x2),
            (AttributesFlags::MODE64BIT, 0x4),
            (AttributesFlags::PROVISIONKEY, 0x10),
            (AttributesFlags::EINITTOKENKEY, 0x20),
            (AttributesFlags::CET, 0x40),
            (AttributesFlags::KSS, 0x80),
            (AttributesFlags::AEXNOTIFY, 0x400),
        ];
        for (flag, bits) in expected {
            assert_eq!(flag.bits(), bits);
        }
        assert_eq!(Miscselect::EXINFO.bits(), 1);
        assert_eq!(Miscselect::CPINFO.bits(), 2);
    }

    #[test]
    fn flags_round_trip_keeps_reserved_bits() {
        let raw = 0x8000_0000_0000_0008 | AttributesFlags::DEBUG.bits();
        let attrs = Attributes { flags: raw, xfrm: 3 };
        let flags = attrs.flags();
        assert!(flags.contains(AttributesFlags::DEBUG));
        assert_eq!(flags.bits(), raw);
        assert_eq!(Attributes::new(flags, 3), attrs);
    }

    #[test]
    fn and_masks_both_words() {
        let a = Attributes { flags: 0xF6, xfrm: 0xE7 };
        let mask = Attributes { flags: 0x04, xfrm: 0x03 };
        assert_eq!(a.and(mask), Attributes { flags: 0x04, xfrm: 0x03 });
        assert_eq!(a.and(Attributes::default()), Attributes::default());
    }
}
