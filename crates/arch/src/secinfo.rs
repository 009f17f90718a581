//! SECINFO and EPC page types (spec §1.7; SDM Vol. 3D §34.11, kernel `arch.h`
//! `struct sgx_secinfo`, `enum sgx_page_type`).

use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout};

use crate::ArchError;

/// Reserved SECINFO.FLAGS bits: 7:6 and 63:16 (spec §1.7).
///
/// Bits 5:3 (PENDING, MODIFIED, PR) are defined fields, not reserved: EACCEPT compares
/// PENDING and MODIFIED, and every other leaf ignores all three (Intel's enclave memory
/// manager passes PR to EMODPE, and that works on hardware) — see
/// [`SecinfoFlags::STATE_MASK`].
pub const SECINFO_FLAGS_RESERVED: u64 = 0xFFFF_FFFF_FFFF_00C0;

/// SECINFO (64 bytes, 64-byte aligned): the security attributes of a page, as passed to
/// EADD, EAUG, EMODPR, EMODT, EACCEPT, EACCEPTCOPY and EMODPE.
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C, align(64))]
pub struct Secinfo {
    /// Permission, state and page-type bits, see [`SecinfoFlags`].
    pub flags: u64,
    /// Reserved, must be zero.
    pub reserved: [u8; 56],
}

layout!(Secinfo, size = Secinfo::SIZE, test = secinfo_layout, { flags @ 0, reserved @ 8 });

const _: () = assert!(align_of::<Secinfo>() == Secinfo::ALIGN);

impl Secinfo {
    /// Architectural size in bytes.
    pub const SIZE: usize = 64;
    /// Required alignment of a SECINFO address.
    pub const ALIGN: usize = 64;

    /// A SECINFO with `flags` and zero reserved bytes.
    #[must_use]
    pub const fn new(flags: SecinfoFlags) -> Self {
        Secinfo { flags: flags.bits(), reserved: [0; 56] }
    }

    /// FLAGS as typed flags; page type and reserved bits are kept.
    #[must_use]
    pub const fn flags(&self) -> SecinfoFlags {
        SecinfoFlags::from_bits_retain(self.flags)
    }

    /// Whether any [`SECINFO_FLAGS_RESERVED`] bit or any reserved byte is set.
    #[must_use]
    pub fn has_reserved_bits(&self) -> bool {
        self.flags & SECINFO_FLAGS_RESERVED != 0 || self.reserved.iter().any(|&b| b != 0)
    }
}

impl Default for Secinfo {
    /// The all-zero SECINFO (no permissions, page type PT_SECS).
    fn default() -> Self {
        Self::new_zeroed()
    }
}

impl From<SecinfoFlags> for Secinfo {
    fn from(flags: SecinfoFlags) -> Self {
        Secinfo::new(flags)
    }
}

bitflags::bitflags! {
    /// SECINFO.FLAGS (spec §1.7). Bits 15:8 hold the page type, read with
    /// [`SecinfoFlags::page_type`]; they are not named flags, so use `from_bits_retain` (or
    /// [`Secinfo::flags`]) to keep them.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct SecinfoFlags: u64 {
        /// Readable.
        const R = 1 << 0;
        /// Writable.
        const W = 1 << 1;
        /// Executable.
        const X = 1 << 2;
        /// Page awaits EACCEPT after EAUG.
        const PENDING = 1 << 3;
        /// Page awaits EACCEPT after EMODT.
        const MODIFIED = 1 << 4;
        /// Page awaits EACCEPT after EMODPR.
        const PR = 1 << 5;
    }
}

impl SecinfoFlags {
    /// The permission bits R, W and X.
    pub const PERM_MASK: SecinfoFlags = SecinfoFlags::R.union(SecinfoFlags::W).union(SecinfoFlags::X);
    /// The EPCM state bits PENDING, MODIFIED and PR: only EACCEPT reads them from a SECINFO.
    pub const STATE_MASK: SecinfoFlags = SecinfoFlags::PENDING.union(SecinfoFlags::MODIFIED).union(SecinfoFlags::PR);
    /// Mask of the PAGE_TYPE field, bits 15:8.
    pub const PAGE_TYPE_MASK: u64 = 0xFF00;
    /// Shift of the PAGE_TYPE field.
    pub const PAGE_TYPE_SHIFT: u32 = 8;

    /// The raw PAGE_TYPE field, bits 15:8.
    #[must_use]
    pub const fn page_type_bits(self) -> u8 {
        ((self.bits() & Self::PAGE_TYPE_MASK) >> Self::PAGE_TYPE_SHIFT) as u8
    }

    /// The PAGE_TYPE field, if it names a page type.
    #[must_use]
    pub fn page_type(self) -> Option<PageType> {
        PageType::try_from(self.page_type_bits()).ok()
    }

    /// These flags with PAGE_TYPE replaced by `page_type`; all other bits unchanged.
    #[must_use]
    pub const fn with_page_type(self, page_type: PageType) -> Self {
        let others = self.bits() & !Self::PAGE_TYPE_MASK;
        Self::from_bits_retain(others | ((page_type as u64) << Self::PAGE_TYPE_SHIFT))
    }

    /// Only the R, W and X bits.
    #[must_use]
    pub const fn perms(self) -> SecinfoFlags {
        self.intersection(Self::PERM_MASK)
    }
}

impl From<PageType> for SecinfoFlags {
    /// Flags with only PAGE_TYPE set.
    fn from(page_type: PageType) -> Self {
        SecinfoFlags::empty().with_page_type(page_type)
    }
}

numeric_enum! {
    /// EPC page type (SECINFO.FLAGS.PAGE_TYPE and EPCM.PT; spec §1.7).
    pub enum PageType: u8, error = ArchError::UnknownPageType {
        /// The enclave's SECS.
        Secs = 0 => "PT_SECS",
        /// A thread control structure.
        Tcs = 1 => "PT_TCS",
        /// A regular code/data page.
        Reg = 2 => "PT_REG",
        /// A version-array page.
        Va = 3 => "PT_VA",
        /// A page being removed (EMODT to TRIM, then EACCEPT, then EREMOVE).
        Trim = 4 => "PT_TRIM",
        /// First page of a CET shadow stack (CET parts only).
        SsFirst = 5 => "PT_SS_FIRST",
        /// Other pages of a CET shadow stack (CET parts only).
        SsRest = 6 => "PT_SS_REST",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eadd_record_flags_match_spec() {
        // Spec §9.1: typical SECINFO.FLAGS values in EADD records.
        let reg = |p: SecinfoFlags| p.with_page_type(PageType::Reg).bits();
        assert_eq!(SecinfoFlags::from(PageType::Tcs).bits(), 0x100);
        assert_eq!(reg(SecinfoFlags::R), 0x201);
        assert_eq!(reg(SecinfoFlags::R | SecinfoFlags::W), 0x203);
        assert_eq!(reg(SecinfoFlags::R | SecinfoFlags::X), 0x205);
        assert_eq!(reg(SecinfoFlags::PERM_MASK), 0x207);
    }

    #[test]
    fn page_type_round_trips() {
        for &pt in PageType::ALL {
            let flags = (SecinfoFlags::R | SecinfoFlags::PR).with_page_type(pt);
            assert_eq!(flags.page_type(), Some(pt));
            assert_eq!(flags.page_type_bits(), pt.raw());
            assert_eq!(flags.perms(), SecinfoFlags::R);
            assert!(flags.contains(SecinfoFlags::PR));
            assert_eq!(PageType::try_from(pt.raw()), Ok(pt));
        }
        // Replacing keeps the other bits and clears the old type.
        let f = SecinfoFlags::W.with_page_type(PageType::Trim).with_page_type(PageType::Tcs);
        assert_eq!(f.bits(), 0x102);
    }

    #[test]
    fn unknown_page_types() {
        assert_eq!(PageType::try_from(7), Err(ArchError::UnknownPageType(7)));
        assert_eq!(PageType::try_from(0xFF), Err(ArchError::UnknownPageType(0xFF)));
        assert_eq!(SecinfoFlags::from_bits_retain(0x0700).page_type(), None);
        assert_eq!(PageType::Trim.name(), "PT_TRIM");
        assert_eq!(PageType::SsRest.to_string(), "PT_SS_REST");
    }

    #[test]
    fn reserved_bits() {
        assert_eq!(SECINFO_FLAGS_RESERVED, !0xFF3F);
        assert!(
            !Secinfo::new(SecinfoFlags::PERM_MASK.union(SecinfoFlags::STATE_MASK).with_page_type(PageType::SsRest))
                .has_reserved_bits()
        );
        for bit in [6, 7, 16, 40, 63] {
            assert!(Secinfo { flags: 1 << bit, ..Secinfo::default() }.has_reserved_bits(), "bit {bit}");
        }
        let mut s = Secinfo::default();
        s.reserved[55] = 1;
        assert!(s.has_reserved_bits());
    }

    #[test]
    fn flags_keep_unknown_bits() {
        let s = Secinfo { flags: 0x8000_0000_0000_0205, ..Secinfo::default() };
        assert_eq!(s.flags().bits(), 0x8000_0000_0000_0205);
        assert_eq!(s.flags().page_type(), Some(PageType::Reg));
        assert_eq!(SecinfoFlags::PERM_MASK.bits(), 0x7);
        assert_eq!(SecinfoFlags::STATE_MASK.bits(), 0x38);
    }
}
