//! SECS, the SGX Enclave Control Structure (spec §1.3; SDM Vol. 3D §34.7, kernel `arch.h`
//! `struct sgx_secs`).

use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout};

use crate::attributes::{Attributes, AttributesFlags, Miscselect};

/// The SECS page (4096 bytes, 4 KiB aligned): ECREATE's input and the enclave's identity.
///
/// Bytes `[262, 4096)` are reserved: zero in ECREATE's input, and where the processor keeps
/// hidden per-enclave state once the page is in the EPC (spec §0.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C, align(4096))]
pub struct Secs {
    /// Enclave size in bytes: a power of two, at least 8192.
    pub size: u64,
    /// Enclave base linear address, naturally aligned to `size`.
    pub baseaddr: u64,
    /// SSA frame size in pages.
    pub ssaframesize: u32,
    /// MISCSELECT, see [`Miscselect`].
    pub miscselect: u32,
    /// Reserved, zero (CET-era parts place CET fields here).
    pub reserved1: [u8; 24],
    /// Enclave attributes.
    pub attributes: Attributes,
    /// Measurement: started by ECREATE, extended by EADD/EEXTEND, finalized by EINIT.
    pub mrenclave: [u8; 32],
    /// Reserved.
    pub reserved2: [u8; 32],
    /// SHA-256 of the signer's modulus; written by EINIT.
    pub mrsigner: [u8; 32],
    /// Reserved.
    pub reserved3: [u8; 32],
    /// CONFIGID; must be zero unless ATTRIBUTES.KSS.
    pub configid: [u8; 64],
    /// ISV product id; forced to 0 by ECREATE, set by EINIT from SIGSTRUCT.
    pub isvprodid: u16,
    /// ISV security version; forced to 0 by ECREATE, set by EINIT from SIGSTRUCT.
    pub isvsvn: u16,
    /// CONFIGSVN; must be zero unless ATTRIBUTES.KSS.
    pub configsvn: u16,
    /// Reserved: zero in ECREATE's input; hidden state in the EPC.
    pub reserved4: [u8; 3834],
}

layout!(Secs, size = Secs::SIZE, test = secs_layout, {
    size @ 0,
    baseaddr @ 8,
    ssaframesize @ 16,
    miscselect @ 20,
    reserved1 @ 24,
    attributes @ 48,
    mrenclave @ 64,
    reserved2 @ 96,
    mrsigner @ 128,
    reserved3 @ 160,
    configid @ 192,
    isvprodid @ 256,
    isvsvn @ 258,
    configsvn @ 260,
    reserved4 @ 262,
});

const _: () = assert!(align_of::<Secs>() == Secs::ALIGN);

impl Secs {
    /// Architectural size in bytes.
    pub const SIZE: usize = 4096;
    /// Required alignment of the SECS page address.
    pub const ALIGN: usize = 4096;

    /// MISCSELECT as typed flags; reserved bits are kept.
    #[must_use]
    pub const fn miscselect(&self) -> Miscselect {
        Miscselect::from_bits_retain(self.miscselect)
    }

    /// ATTRIBUTES.FLAGS as typed flags; reserved bits are kept.
    #[must_use]
    pub const fn attribute_flags(&self) -> AttributesFlags {
        self.attributes.flags()
    }
}

impl Default for Secs {
    /// The all-zero SECS.
    fn default() -> Self {
        Self::new_zeroed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::IntoBytes;

    #[test]
    fn default_is_all_zero() {
        assert!(Secs::default().as_bytes().iter().all(|&b| b == 0));
        assert_eq!(size_of::<Secs>(), Secs::SIZE);
        assert_eq!(align_of::<Secs>(), Secs::ALIGN);
    }

    #[test]
    fn typed_views_keep_reserved_bits() {
        let secs = Secs { miscselect: 0x8000_0001, attributes: Attributes { flags: 0x6, xfrm: 3 }, ..Secs::default() };
        assert!(secs.miscselect().contains(Miscselect::EXINFO));
        assert_eq!(secs.miscselect().bits(), 0x8000_0001);
        assert_eq!(secs.attribute_flags(), AttributesFlags::DEBUG | AttributesFlags::MODE64BIT);
    }
}
