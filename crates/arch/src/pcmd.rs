//! PCMD, the Paging Crypto MetaData of an evicted page (spec §1.8; SDM Vol. 3D §34.13,
//! kernel `arch.h` `struct sgx_pcmd`).

use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout};

use crate::secinfo::Secinfo;

/// PCMD (128 bytes, 128-byte aligned): written by EWB next to the encrypted page, checked by
/// ELDB/ELDU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C, align(128))]
pub struct Pcmd {
    /// The evicted page's type, RWX, PENDING, MODIFIED and PR (other bits zero).
    pub secinfo: Secinfo,
    /// Identifier of the owning enclave (zero for SECS and VA pages).
    pub enclaveid: u64,
    /// Reserved; written zero by EWB and covered by the MAC.
    pub reserved: [u8; 40],
    /// MAC over the page, its metadata and version.
    pub mac: [u8; 16],
}

layout!(Pcmd, size = Pcmd::SIZE, test = pcmd_layout, {
    secinfo @ 0,
    enclaveid @ 64,
    reserved @ 72,
    mac @ 112,
});

const _: () = assert!(align_of::<Pcmd>() == Pcmd::ALIGN);

impl Pcmd {
    /// Architectural size in bytes.
    pub const SIZE: usize = 128;
    /// Required alignment of a PCMD address.
    pub const ALIGN: usize = 128;
}

impl Default for Pcmd {
    /// The all-zero PCMD.
    fn default() -> Self {
        Self::new_zeroed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_and_alignment() {
        assert_eq!(size_of::<Pcmd>(), 128);
        assert_eq!(align_of::<Pcmd>(), 128);
        assert_eq!(Pcmd::default().mac, [0; 16]);
    }
}
