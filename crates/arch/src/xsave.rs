//! The XSAVE region at the start of an SSA frame, **non-compacted** format (spec §1.5, §5.4;
//! SDM Vol. 1 §13.4 and Vol. 3D §34.9.1).
//!
//! AEX saves the state components enabled in SECS.ATTRIBUTES.XFRM with XSAVE semantics into
//! the start of the SSA frame; ERESUME restores them. The offsets here are the standard
//! (non-compacted) ones, i.e. what CPUID.(0Dh,i).EBX reports on current Intel parts; the
//! emulator uses this table instead of the host's CPUID so that frame layouts do not depend
//! on the machine it runs on.

/// Size of the legacy region (the FXSAVE image) at offset 0.
pub const LEGACY_REGION_SIZE: usize = 512;

/// Size of the XSAVE header that follows the legacy region.
pub const XSAVE_HEADER_SIZE: usize = 64;

/// Smallest XSAVE region: legacy region plus header (x87 and SSE state only).
pub const MIN_XSAVE_SIZE: usize = LEGACY_REGION_SIZE + XSAVE_HEADER_SIZE;

/// XFRM with only x87 (bit 0) and SSE (bit 1): the minimum ECREATE accepts (spec §1.1).
pub const XFRM_LEGACY: u64 = 0x3;

/// x87 FPU control word after FNINIT; what AEX leaves for the outside world (spec §5.4, §13
/// item 14).
pub const FCW_INIT: u16 = 0x037F;

/// MXCSR after reset; what AEX leaves for the outside world (spec §5.4).
pub const MXCSR_INIT: u32 = 0x1F80;

/// Offset of FCW (u16) in the legacy region.
pub const FCW_OFFSET: usize = 0;

/// Offset of FSW (u16) in the legacy region.
pub const FSW_OFFSET: usize = 2;

/// Offset of the abridged FTW (u8) in the legacy region.
pub const FTW_OFFSET: usize = 4;

/// Offset of MXCSR (u32) in the legacy region.
pub const MXCSR_OFFSET: usize = 24;

/// Offset of MXCSR_MASK (u32) in the legacy region.
pub const MXCSR_MASK_OFFSET: usize = 28;

/// Offset of XSTATE_BV (u64) in the XSAVE region, i.e. the first word of the header.
pub const XSTATE_BV_OFFSET: usize = LEGACY_REGION_SIZE;

/// Offset of XCOMP_BV (u64) in the XSAVE region; zero in the non-compacted format.
pub const XCOMP_BV_OFFSET: usize = LEGACY_REGION_SIZE + 8;

/// One extended state component: its XCR0/XFRM bit and where it lives in the non-compacted
/// XSAVE region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XsaveComponent {
    /// XCR0 bit number.
    pub bit: u32,
    /// Component name as the SDM writes it.
    pub name: &'static str,
    /// Standard offset from the start of the XSAVE region (CPUID.(0Dh,bit).EBX).
    pub offset: usize,
    /// Size in bytes (CPUID.(0Dh,bit).EAX).
    pub size: usize,
}

impl XsaveComponent {
    /// The component's XCR0 mask.
    #[must_use]
    pub const fn mask(&self) -> u64 {
        1 << self.bit
    }

    /// First byte after the component.
    #[must_use]
    pub const fn end(&self) -> usize {
        self.offset + self.size
    }
}

/// The extended components (bits ≥ 2) this model supports, in bit order. Bits 0 (x87) and 1
/// (SSE) live in the legacy region and are not listed.
pub const XSAVE_COMPONENTS: [XsaveComponent; 9] = [
    XsaveComponent { bit: 2, name: "AVX", offset: 576, size: 256 },
    XsaveComponent { bit: 3, name: "BNDREGS", offset: 960, size: 64 },
    XsaveComponent { bit: 4, name: "BNDCSR", offset: 1024, size: 64 },
    XsaveComponent { bit: 5, name: "opmask", offset: 1088, size: 64 },
    XsaveComponent { bit: 6, name: "ZMM_Hi256", offset: 1152, size: 512 },
    XsaveComponent { bit: 7, name: "Hi16_ZMM", offset: 1664, size: 1024 },
    XsaveComponent { bit: 9, name: "PKRU", offset: 2688, size: 8 },
    XsaveComponent { bit: 17, name: "XTILECFG", offset: 2752, size: 64 },
    XsaveComponent { bit: 18, name: "XTILEDATA", offset: 2816, size: 8192 },
];

/// x87 state, XCR0 bit 0.
pub const XFEATURE_X87: u64 = 1 << 0;
/// SSE state, XCR0 bit 1.
pub const XFEATURE_SSE: u64 = 1 << 1;
/// AVX state, XCR0 bit 2.
pub const XFEATURE_AVX: u64 = 1 << 2;
/// MPX state (BNDREGS | BNDCSR), XCR0 bits 4:3.
pub const XFEATURE_MPX: u64 = (1 << 3) | (1 << 4);
/// AVX-512 state (opmask | ZMM_Hi256 | Hi16_ZMM), XCR0 bits 7:5.
pub const XFEATURE_AVX512: u64 = (1 << 5) | (1 << 6) | (1 << 7);
/// PKRU state, XCR0 bit 9.
pub const XFEATURE_PKRU: u64 = 1 << 9;
/// AMX state (XTILECFG | XTILEDATA), XCR0 bits 18:17.
pub const XFEATURE_AMX: u64 = (1 << 17) | (1 << 18);

/// Every XFRM bit this model knows: x87, SSE and the [`XSAVE_COMPONENTS`].
pub const XFRM_SUPPORTED_MASK: u64 = {
    let mut mask = XFRM_LEGACY;
    let mut i = 0;
    while i < XSAVE_COMPONENTS.len() {
        mask |= XSAVE_COMPONENTS[i].mask();
        i += 1;
    }
    mask
};

/// The component for XCR0 bit `bit`, if it is one of [`XSAVE_COMPONENTS`].
#[must_use]
pub fn component(bit: u32) -> Option<&'static XsaveComponent> {
    XSAVE_COMPONENTS.iter().find(|c| c.bit == bit)
}

/// Size of the non-compacted XSAVE region for `xfrm`: what CPUID.(0Dh,0).EBX reports with
/// XCR0 = `xfrm`, i.e. the end of the highest enabled component, at least [`MIN_XSAVE_SIZE`]
/// (spec §1.5). Bits not in [`XSAVE_COMPONENTS`] contribute nothing; reject them first with
/// [`xfrm_is_consistent`].
#[must_use]
pub const fn xsave_size(xfrm: u64) -> usize {
    let mut size = MIN_XSAVE_SIZE;
    let mut i = 0;
    while i < XSAVE_COMPONENTS.len() {
        let c = &XSAVE_COMPONENTS[i];
        if xfrm & c.mask() != 0 && c.end() > size {
            size = c.end();
        }
        i += 1;
    }
    size
}

/// Whether `xfrm` is a value XSETBV would accept as XCR0 on a part supporting every
/// component in [`XSAVE_COMPONENTS`] (ECREATE's XFRM check, spec §4.1):
///
/// * x87 (bit 0) is set;
/// * AVX (bit 2) requires SSE (bit 1);
/// * BNDREGS and BNDCSR (bits 3, 4) are both set or both clear;
/// * opmask, ZMM_Hi256, Hi16_ZMM (bits 5–7) are all set or all clear, and if set need AVX;
/// * XTILECFG and XTILEDATA (bits 17, 18) are both set or both clear;
/// * no bit outside [`XFRM_SUPPORTED_MASK`] is set.
///
/// ECREATE additionally requires SSE (bits 1:0 = [`XFRM_LEGACY`]); that is not an XSETBV rule
/// and is not checked here.
#[must_use]
pub const fn xfrm_is_consistent(xfrm: u64) -> bool {
    xfrm & XFEATURE_X87 != 0
        && xfrm & !XFRM_SUPPORTED_MASK == 0
        && (xfrm & XFEATURE_AVX == 0 || xfrm & XFEATURE_SSE != 0)
        && all_or_none(xfrm, XFEATURE_MPX)
        && all_or_none(xfrm, XFEATURE_AVX512)
        && (xfrm & XFEATURE_AVX512 == 0 || xfrm & XFEATURE_AVX != 0)
        && all_or_none(xfrm, XFEATURE_AMX)
}

/// Whether the bits of `group` are all set or all clear in `xfrm`.
const fn all_or_none(xfrm: u64, group: u64) -> bool {
    xfrm & group == 0 || xfrm & group == group
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_for_common_xfrms() {
        assert_eq!(xsave_size(0x3), 576);
        assert_eq!(xsave_size(0x7), 832);
        assert_eq!(xsave_size(0x1F), 1088);
        assert_eq!(xsave_size(0xE7), 2688);
        assert_eq!(xsave_size(0x207), 2696);
        assert_eq!(xsave_size(0x2E7), 2696);
        assert_eq!(xsave_size(0x6_0003), 11008);
        assert_eq!(xsave_size(0), MIN_XSAVE_SIZE);
        // Unknown bits contribute nothing.
        assert_eq!(xsave_size(0x3 | 1 << 40), 576);
    }

    #[test]
    fn table_is_ordered_and_disjoint() {
        assert_eq!(XSAVE_COMPONENTS[0].offset, MIN_XSAVE_SIZE);
        for pair in XSAVE_COMPONENTS.windows(2) {
            assert!(pair[0].bit < pair[1].bit);
            assert!(pair[0].end() <= pair[1].offset, "{} overlaps {}", pair[0].name, pair[1].name);
        }
        assert_eq!(component(9).map(|c| c.name), Some("PKRU"));
        assert_eq!(component(8), None);
        assert_eq!(XFRM_SUPPORTED_MASK, 0x6_02FF);
    }

    #[test]
    fn legacy_offsets() {
        assert_eq!(MIN_XSAVE_SIZE, 576);
        assert_eq!(XSTATE_BV_OFFSET, 512);
        assert_eq!(XCOMP_BV_OFFSET, 520);
        assert_eq!((FCW_OFFSET, FSW_OFFSET, MXCSR_OFFSET), (0, 2, 24));
        assert_eq!((FCW_INIT, MXCSR_INIT), (0x037F, 0x1F80));
    }

    #[test]
    fn consistency_rules() {
        for ok in [0x1, 0x3, 0x7, 0x1F, 0xE7, 0xFF, 0x207, 0x2FF, 0x6_0003, 0x6_02FF] {
            assert!(xfrm_is_consistent(ok), "{ok:#x} should be consistent");
        }
        let bad = [
            (0x0, "no x87"),
            (0x2, "no x87"),
            (0x5, "AVX without SSE"),
            (0xB, "BNDREGS without BNDCSR"),
            (0x13, "BNDCSR without BNDREGS"),
            (0x67, "opmask and ZMM_Hi256 without Hi16_ZMM"),
            (0x27, "opmask alone"),
            (0xE3, "AVX-512 without AVX"),
            (0x2_0003, "XTILECFG without XTILEDATA"),
            (0x4_0003, "XTILEDATA without XTILECFG"),
            (0x103, "bit 8 (PT) unsupported"),
            (0x403, "bit 10 unsupported"),
            (0x3 | 1 << 63, "bit 63 unsupported"),
        ];
        for (xfrm, why) in bad {
            assert!(!xfrm_is_consistent(xfrm), "{xfrm:#x} should be rejected: {why}");
        }
    }
}
