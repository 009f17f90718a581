//! SIGSTRUCT, the enclave signature structure (spec §1.10; SDM Vol. 3D §34.15, kernel
//! `arch.h` `struct sgx_sigstruct`).

use core::ops::Range;

use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout};

use crate::attributes::{Attributes, Miscselect};

/// The fixed first header (SIGSTRUCT bytes `[0, 16)`).
///
/// Intel's SDK signer may set bit 31 of bytes 12..15 ("type"); EINIT's tolerance of that is a
/// **\[DESIGN\]** choice of the CPU model (spec §13 item 7).
pub const SIGSTRUCT_HEADER: [u8; 16] =
    [0x06, 0x00, 0x00, 0x00, 0xE1, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00];

/// The fixed second header (SIGSTRUCT bytes `[24, 40)`).
pub const SIGSTRUCT_HEADER2: [u8; 16] =
    [0x01, 0x01, 0x00, 0x00, 0x60, 0x00, 0x00, 0x00, 0x60, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00];

/// SIGSTRUCT.VENDOR of an Intel-signed enclave; the only other valid value is 0.
pub const VENDOR_INTEL: u32 = 0x8086;

/// SIGSTRUCT (1808 bytes; EINIT requires its address to be 4 KiB aligned).
///
/// Big numbers (MODULUS, SIGNATURE, Q1, Q2) are little-endian. The signature is
/// RSASSA-PKCS1-v1_5 / SHA-256 / RSA-3072, e = 3, over [`Sigstruct::signed_message`].
///
/// No `align(4096)` attribute: it would pad the type to 4096 bytes. [`Sigstruct::ALIGN`]
/// states the address requirement instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct Sigstruct {
    /// Must equal [`SIGSTRUCT_HEADER`].
    pub header: [u8; 16],
    /// 0 or [`VENDOR_INTEL`].
    pub vendor: u32,
    /// Build date, BCD `yyyymmdd` (not checked).
    pub date: u32,
    /// Must equal [`SIGSTRUCT_HEADER2`].
    pub header2: [u8; 16],
    /// Software-defined.
    pub swdefined: u32,
    /// Reserved, zero.
    pub reserved1: [u8; 84],
    /// RSA-3072 modulus, little-endian. MRSIGNER is SHA-256 of these bytes as stored.
    pub modulus: [u8; 384],
    /// RSA public exponent; must be 3.
    pub exponent: u32,
    /// RSA signature, little-endian.
    pub signature: [u8; 384],
    /// Expected SECS.MISCSELECT (after masking).
    pub miscselect: u32,
    /// Mask applied to SECS.MISCSELECT before comparing.
    pub miscmask: u32,
    /// CET attributes (CET parts; reserved zero otherwise).
    pub cet_attributes: u8,
    /// CET attributes mask (CET parts; reserved zero otherwise).
    pub cet_attributes_mask: u8,
    /// Reserved, zero.
    pub reserved2: [u8; 2],
    /// ISV family id (KSS); must be zero unless SECS.ATTRIBUTES.KSS.
    pub isvfamilyid: [u8; 16],
    /// Expected SECS.ATTRIBUTES (after masking).
    pub attributes: Attributes,
    /// Mask applied to SECS.ATTRIBUTES before comparing.
    pub attributemask: Attributes,
    /// Expected MRENCLAVE.
    pub enclavehash: [u8; 32],
    /// Reserved, zero.
    pub reserved3: [u8; 16],
    /// ISV extended product id (KSS).
    pub isvextprodid: [u8; 16],
    /// ISV product id, copied to SECS by EINIT.
    pub isvprodid: u16,
    /// ISV security version, copied to SECS by EINIT.
    pub isvsvn: u16,
    /// Reserved, zero.
    pub reserved4: [u8; 12],
    /// ⌊signature² / modulus⌋, little-endian.
    pub q1: [u8; 384],
    /// ⌊(signature³ − q1·signature·modulus) / modulus⌋, little-endian.
    pub q2: [u8; 384],
}

layout!(Sigstruct, size = Sigstruct::SIZE, test = sigstruct_layout, {
    header @ 0,
    vendor @ 16,
    date @ 20,
    header2 @ 24,
    swdefined @ 40,
    reserved1 @ 44,
    modulus @ 128,
    exponent @ 512,
    signature @ 516,
    miscselect @ 900,
    miscmask @ 904,
    cet_attributes @ 908,
    cet_attributes_mask @ 909,
    reserved2 @ 910,
    isvfamilyid @ 912,
    attributes @ 928,
    attributemask @ 944,
    enclavehash @ 960,
    reserved3 @ 992,
    isvextprodid @ 1008,
    isvprodid @ 1024,
    isvsvn @ 1026,
    reserved4 @ 1028,
    q1 @ 1040,
    q2 @ 1424,
});

impl Sigstruct {
    /// Architectural size in bytes.
    pub const SIZE: usize = 1808;
    /// Alignment EINIT requires of the SIGSTRUCT address.
    pub const ALIGN: usize = 4096;
    /// The public exponent EINIT requires.
    pub const EXPONENT: u32 = 3;
    /// First signed byte range: header through the end of the reserved block before MODULUS.
    pub const SIGNED_RANGE_1: Range<usize> = 0..128;
    /// Second signed byte range: MISCSELECT through ISVSVN.
    pub const SIGNED_RANGE_2: Range<usize> = 900..1028;
    /// Length of [`Sigstruct::signed_message`].
    pub const SIGNED_MESSAGE_SIZE: usize = 256;

    /// A SIGSTRUCT with both headers set, exponent 3, and every other byte zero.
    #[must_use]
    pub fn new_unsigned() -> Self {
        Sigstruct {
            header: SIGSTRUCT_HEADER,
            header2: SIGSTRUCT_HEADER2,
            exponent: Self::EXPONENT,
            ..Self::new_zeroed()
        }
    }

    /// The 256 bytes the signature covers: bytes `[0, 128)` followed by bytes `[900, 1028)`
    /// (spec §1.10). Hash these with SHA-256 for RSASSA-PKCS1-v1_5.
    #[must_use]
    pub fn signed_message(&self) -> [u8; Self::SIGNED_MESSAGE_SIZE] {
        let bytes = self.as_bytes();
        let (first, second) = (&bytes[Self::SIGNED_RANGE_1], &bytes[Self::SIGNED_RANGE_2]);
        let mut message = [0_u8; Self::SIGNED_MESSAGE_SIZE];
        message[..first.len()].copy_from_slice(first);
        message[first.len()..].copy_from_slice(second);
        message
    }

    /// MISCSELECT as typed flags; reserved bits are kept.
    #[must_use]
    pub const fn miscselect(&self) -> Miscselect {
        Miscselect::from_bits_retain(self.miscselect)
    }
}

impl Default for Sigstruct {
    /// The all-zero SIGSTRUCT (not even the headers; see [`Sigstruct::new_unsigned`]).
    fn default() -> Self {
        Self::new_zeroed()
    }
}

const _: () = assert!(
    (Sigstruct::SIGNED_RANGE_1.end - Sigstruct::SIGNED_RANGE_1.start)
        + (Sigstruct::SIGNED_RANGE_2.end - Sigstruct::SIGNED_RANGE_2.start)
        == Sigstruct::SIGNED_MESSAGE_SIZE
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_unsigned_sets_headers_and_exponent_only() {
        let s = Sigstruct::new_unsigned();
        let bytes = s.as_bytes();
        assert_eq!(bytes.len(), 1808);
        assert_eq!(&bytes[0..16], &SIGSTRUCT_HEADER);
        assert_eq!(&bytes[24..40], &SIGSTRUCT_HEADER2);
        assert_eq!(&bytes[512..516], &[3, 0, 0, 0]);
        let nonzero: usize = bytes.iter().filter(|&&b| b != 0).count();
        let expected = SIGSTRUCT_HEADER.iter().chain(&SIGSTRUCT_HEADER2).filter(|&&b| b != 0).count() + 1;
        assert_eq!(nonzero, expected);
    }

    #[test]
    fn signed_message_picks_the_two_ranges() {
        // Every byte holds (its offset mod 251), so each message byte says where it came from.
        let pattern: [u8; 1808] = core::array::from_fn(|i| (i % 251) as u8);
        let s = Sigstruct::read_from_bytes(&pattern).unwrap();
        let msg = s.signed_message();
        for (i, &b) in msg.iter().enumerate() {
            let source = if i < 128 { i } else { 900 + (i - 128) };
            assert_eq!(b, (source % 251) as u8, "message byte {i}");
        }
    }

    #[test]
    fn signed_message_ignores_modulus_signature_and_q() {
        let mut s = Sigstruct::new_unsigned();
        s.isvprodid = 7;
        let before = s.signed_message();
        s.modulus = [0xAA; 384];
        s.signature = [0xBB; 384];
        s.exponent = 5;
        s.q1 = [1; 384];
        s.q2 = [2; 384];
        assert_eq!(s.signed_message(), before);
        s.isvsvn = 1;
        assert_ne!(s.signed_message(), before);
        assert_eq!(&before[124..128], &[0; 4]);
        assert_eq!(before[128 + 124], 7, "ISVPRODID is at message offset 252");
    }

    #[test]
    fn miscselect_view() {
        let s = Sigstruct { miscselect: 1, ..Sigstruct::new_unsigned() };
        assert_eq!(s.miscselect(), Miscselect::EXINFO);
    }
}
