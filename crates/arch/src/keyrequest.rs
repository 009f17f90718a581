//! KEYREQUEST, EGETKEY's input (spec §1.14; SDM Vol. 3D §34.18.2, SDK `sgx_key.h`).

use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout};

use crate::ArchError;
use crate::attributes::Attributes;

/// KEYPOLICY bits that need SECS.ATTRIBUTES.KSS (NOISVPRODID, CONFIGID, ISVFAMILYID,
/// ISVEXTPRODID); EGETKEY raises #GP if any is set without KSS.
pub const KEYPOLICY_KSS_MASK: u16 = 0x3C;

/// Reserved KEYPOLICY bits 15:6; EGETKEY raises #GP if any is set.
pub const KEYPOLICY_RESERVED: u16 = 0xFFC0;

/// KEYREQUEST (512 bytes, 512-byte aligned).
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C, align(512))]
pub struct Keyrequest {
    /// Which key, see [`Keyname`].
    pub keyname: u16,
    /// Which identities the key derivation binds, see [`Keypolicy`].
    pub keypolicy: u16,
    /// ISV security version to derive for (at most the enclave's own).
    pub isvsvn: u16,
    /// Reserved (CET parts: CET_ATTRIBUTES_MASK at offset 6).
    pub reserved1: u16,
    /// CPU security version to derive for.
    pub cpusvn: [u8; 16],
    /// Mask applied to the enclave's ATTRIBUTES before derivation.
    pub attributemask: Attributes,
    /// Key wear-out protection value.
    pub keyid: [u8; 32],
    /// Mask applied to the enclave's MISCSELECT before derivation.
    pub miscmask: u32,
    /// CONFIGSVN to derive for (KSS; must be zero without KSS).
    pub configsvn: u16,
    /// Reserved.
    pub reserved2: [u8; 434],
}

layout!(Keyrequest, size = Keyrequest::SIZE, test = keyrequest_layout, {
    keyname @ 0,
    keypolicy @ 2,
    isvsvn @ 4,
    reserved1 @ 6,
    cpusvn @ 8,
    attributemask @ 24,
    keyid @ 40,
    miscmask @ 72,
    configsvn @ 76,
    reserved2 @ 78,
});

const _: () = assert!(align_of::<Keyrequest>() == Keyrequest::ALIGN);

impl Keyrequest {
    /// Architectural size in bytes.
    pub const SIZE: usize = 512;
    /// Alignment EGETKEY requires of the KEYREQUEST address.
    pub const ALIGN: usize = 512;

    /// KEYPOLICY as typed flags; reserved bits are kept.
    #[must_use]
    pub const fn keypolicy(&self) -> Keypolicy {
        Keypolicy::from_bits_retain(self.keypolicy)
    }
}

impl Default for Keyrequest {
    /// The all-zero KEYREQUEST (KEYNAME = EINITTOKEN, empty policy).
    fn default() -> Self {
        Self::new_zeroed()
    }
}

numeric_enum! {
    /// KEYREQUEST.KEYNAME (spec §1.14). Other values make EGETKEY return
    /// [`crate::ErrorCode::InvalidKeyname`].
    pub enum Keyname: u16, error = ArchError::UnknownKeyname {
        /// Key for MACing EINITTOKENs (needs ATTRIBUTES.EINITTOKENKEY).
        Einittoken = 0 => "EINITTOKEN_KEY",
        /// Provisioning key (needs ATTRIBUTES.PROVISIONKEY).
        Provision = 1 => "PROVISION_KEY",
        /// Provisioning seal key (needs ATTRIBUTES.PROVISIONKEY).
        ProvisionSeal = 2 => "PROVISION_SEAL_KEY",
        /// Report key (for verifying REPORTs targeted at this enclave).
        Report = 3 => "REPORT_KEY",
        /// Seal key.
        Seal = 4 => "SEAL_KEY",
    }
}

bitflags::bitflags! {
    /// KEYREQUEST.KEYPOLICY (spec §1.14): which identities a SEAL/PROVISION_SEAL key binds.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct Keypolicy: u16 {
        /// Bind MRENCLAVE.
        const MRENCLAVE = 1 << 0;
        /// Bind MRSIGNER.
        const MRSIGNER = 1 << 1;
        /// Do not bind ISVPRODID (KSS).
        const NOISVPRODID = 1 << 2;
        /// Bind CONFIGID (KSS).
        const CONFIGID = 1 << 3;
        /// Bind ISVFAMILYID (KSS).
        const ISVFAMILYID = 1 << 4;
        /// Bind ISVEXTPRODID (KSS).
        const ISVEXTPRODID = 1 << 5;
    }
}

const _: () = {
    assert!(Keypolicy::all().bits() == !KEYPOLICY_RESERVED);
    assert!(
        Keypolicy::NOISVPRODID
            .union(Keypolicy::CONFIGID)
            .union(Keypolicy::ISVFAMILYID)
            .union(Keypolicy::ISVEXTPRODID)
            .bits()
            == KEYPOLICY_KSS_MASK
    );
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyname_round_trips() {
        for &k in Keyname::ALL {
            assert_eq!(Keyname::try_from(k.raw()), Ok(k));
            assert_eq!(u16::from(k), k as u16);
        }
        assert_eq!(Keyname::ALL.len(), 5);
        assert_eq!(Keyname::try_from(4), Ok(Keyname::Seal));
        assert_eq!(Keyname::try_from(5), Err(ArchError::UnknownKeyname(5)));
        assert_eq!(Keyname::try_from(0xFFFF), Err(ArchError::UnknownKeyname(0xFFFF)));
    }

    #[test]
    fn keypolicy_masks() {
        assert_eq!(KEYPOLICY_KSS_MASK | KEYPOLICY_RESERVED | 0x3, 0xFFFF);
        let req = Keyrequest { keypolicy: 0x8002, ..Keyrequest::default() };
        assert_eq!(req.keypolicy().bits(), 0x8002);
        assert!(req.keypolicy().contains(Keypolicy::MRSIGNER));
        assert_ne!(req.keypolicy, req.keypolicy().intersection(Keypolicy::all()).bits());
    }
}
