//! EINITTOKEN, the launch token (spec §1.11; SDM Vol. 3D §34.16).
//!
//! The Linux driver always passes an all-zero token (VALID = 0) and relies on flexible launch
//! control instead (spec §10.3); the full layout is still modelled for EINIT's checks.

use core::ops::Range;

use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout};

use crate::attributes::Attributes;

/// EINITTOKEN (304 bytes; EINIT requires its address to be 512-byte aligned).
///
/// No `align(512)` attribute: it would pad the type to 512 bytes. [`Einittoken::ALIGN`]
/// states the address requirement instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct Einittoken {
    /// Bit 0: the token is valid; bits 31:1 reserved.
    pub valid: u32,
    /// Reserved.
    pub reserved1: [u8; 44],
    /// Attributes of the enclave the token launches.
    pub attributes: Attributes,
    /// MRENCLAVE of the enclave the token launches.
    pub mrenclave: [u8; 32],
    /// Reserved.
    pub reserved2: [u8; 32],
    /// MRSIGNER of the enclave the token launches.
    pub mrsigner: [u8; 32],
    /// Reserved.
    pub reserved3: [u8; 32],
    /// CPUSVN of the launch enclave that made the token.
    pub cpusvnle: [u8; 16],
    /// ISVPRODID of the launch enclave.
    pub isvprodidle: u16,
    /// ISVSVN of the launch enclave.
    pub isvsvnle: u16,
    /// Reserved (CET parts: CET_MASKED_ATTRIBUTES_LE at offset 212).
    pub reserved4: [u8; 24],
    /// Launch enclave's masked MISCSELECT.
    pub maskedmiscselectle: u32,
    /// Launch enclave's masked ATTRIBUTES.
    pub maskedattributesle: Attributes,
    /// Key id used to derive the EINITTOKEN key.
    pub keyid: [u8; 32],
    /// AES-CMAC with the EINITTOKEN key over [`Einittoken::mac_data`].
    pub mac: [u8; 16],
}

layout!(Einittoken, size = Einittoken::SIZE, test = einittoken_layout, {
    valid @ 0,
    reserved1 @ 4,
    attributes @ 48,
    mrenclave @ 64,
    reserved2 @ 96,
    mrsigner @ 128,
    reserved3 @ 160,
    cpusvnle @ 192,
    isvprodidle @ 208,
    isvsvnle @ 210,
    reserved4 @ 212,
    maskedmiscselectle @ 236,
    maskedattributesle @ 240,
    keyid @ 256,
    mac @ 288,
});

impl Einittoken {
    /// Architectural size in bytes.
    pub const SIZE: usize = 304;
    /// Alignment EINIT requires of the EINITTOKEN address.
    pub const ALIGN: usize = 512;
    /// The bytes the MAC covers.
    pub const MAC_RANGE: Range<usize> = 0..192;
    /// VALID bit 0.
    pub const VALID: u32 = 1;

    /// The MACed bytes `[0, 192)`.
    #[must_use]
    pub fn mac_data(&self) -> &[u8] {
        &self.as_bytes()[Self::MAC_RANGE]
    }

    /// Whether VALID bit 0 is set.
    #[must_use]
    pub const fn is_valid(&self) -> bool {
        self.valid & Self::VALID != 0
    }
}

impl Default for Einittoken {
    /// The all-zero token the Linux driver passes (VALID = 0).
    fn default() -> Self {
        Self::new_zeroed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_data_is_first_192_bytes() {
        let pattern: [u8; 304] = core::array::from_fn(|i| i as u8);
        let t = Einittoken::read_from_bytes(&pattern).unwrap();
        assert_eq!(t.mac_data(), &pattern[..192]);
        assert_eq!(t.mac_data().len(), 192);
    }

    #[test]
    fn default_is_invalid() {
        assert!(!Einittoken::default().is_valid());
        assert!(Einittoken { valid: 0xFFFF_FFFF, ..Einittoken::default() }.is_valid());
        assert_eq!(size_of::<Einittoken>(), 304);
    }
}
