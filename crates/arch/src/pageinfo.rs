//! PAGEINFO (spec §1.6; SDM Vol. 3D §34.10, kernel `arch.h` `struct sgx_pageinfo`).

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// PAGEINFO (32 bytes, 32-byte aligned): the operand block of ECREATE, EADD, EAUG, EWB,
/// ELDB and ELDU. All four fields are linear addresses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C, align(32))]
pub struct Pageinfo {
    /// Enclave linear address of the page (EADD, EAUG, ELDB/ELDU; output of EWB).
    pub linaddr: u64,
    /// Source page (ECREATE, EADD, ELDB/ELDU) or destination page (EWB), outside the EPC.
    pub srcpge: u64,
    /// Address of the SECINFO (ECREATE, EADD, EAUG) or of the PCMD (EWB, ELDB, ELDU).
    pub secinfo: u64,
    /// EPC address of the owning SECS (EADD, EAUG, ELDB/ELDU of a non-SECS page).
    pub secs: u64,
}

layout!(Pageinfo, size = Pageinfo::SIZE, test = pageinfo_layout, {
    linaddr @ 0,
    srcpge @ 8,
    secinfo @ 16,
    secs @ 24,
});

const _: () = assert!(align_of::<Pageinfo>() == Pageinfo::ALIGN);

impl Pageinfo {
    /// Architectural size in bytes.
    pub const SIZE: usize = 32;
    /// Required alignment of a PAGEINFO address.
    pub const ALIGN: usize = 32;
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::IntoBytes;

    #[test]
    fn size_and_byte_order() {
        assert_eq!(size_of::<Pageinfo>(), 32);
        assert_eq!(align_of::<Pageinfo>(), 32);
        let p = Pageinfo { linaddr: 0x0102, srcpge: 0, secinfo: 0, secs: 0xAA00_0000_0000_0000 };
        let b = p.as_bytes();
        assert_eq!(&b[..2], &[0x02, 0x01]);
        assert_eq!(b[31], 0xAA);
    }
}
