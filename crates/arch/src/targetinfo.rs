//! TARGETINFO, EREPORT's description of the report's verifier (spec §1.13; SDK
//! `sgx_report.h`).

use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout};

use crate::attributes::{Attributes, Miscselect};
use crate::report::Report;

/// TARGETINFO (512 bytes, 512-byte aligned): whose report key EREPORT MACs the REPORT with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C, align(512))]
pub struct Targetinfo {
    /// MRENCLAVE of the target enclave.
    pub measurement: [u8; 32],
    /// ATTRIBUTES of the target enclave.
    pub attributes: Attributes,
    /// CET attributes of the target (CET parts; reserved zero otherwise).
    pub cet_attributes: u8,
    /// Reserved.
    pub reserved1: u8,
    /// CONFIGSVN of the target (KSS).
    pub configsvn: u16,
    /// MISCSELECT of the target.
    pub miscselect: u32,
    /// Reserved.
    pub reserved2: [u8; 8],
    /// CONFIGID of the target (KSS).
    pub configid: [u8; 64],
    /// Reserved.
    pub reserved3: [u8; 384],
}

layout!(Targetinfo, size = Targetinfo::SIZE, test = targetinfo_layout, {
    measurement @ 0,
    attributes @ 32,
    cet_attributes @ 48,
    reserved1 @ 49,
    configsvn @ 50,
    miscselect @ 52,
    reserved2 @ 56,
    configid @ 64,
    reserved3 @ 128,
});

const _: () = assert!(align_of::<Targetinfo>() == Targetinfo::ALIGN);

impl Targetinfo {
    /// Architectural size in bytes.
    pub const SIZE: usize = 512;
    /// Alignment EREPORT requires of the TARGETINFO address.
    pub const ALIGN: usize = 512;

    /// Whether a reserved field is non-zero. With `cet == false` (a part without CET),
    /// CET_ATTRIBUTES counts as reserved too.
    #[must_use]
    pub fn has_reserved_bits(&self, cet: bool) -> bool {
        (!cet && self.cet_attributes != 0)
            || self.reserved1 != 0
            || self.reserved2.iter().any(|&b| b != 0)
            || self.reserved3.iter().any(|&b| b != 0)
    }

    /// MISCSELECT as typed flags; reserved bits are kept.
    #[must_use]
    pub const fn miscselect(&self) -> Miscselect {
        Miscselect::from_bits_retain(self.miscselect)
    }
}

impl Default for Targetinfo {
    /// The all-zero TARGETINFO.
    fn default() -> Self {
        Self::new_zeroed()
    }
}

impl From<&Report> for Targetinfo {
    /// Targets the enclave that produced `report`: copies MRENCLAVE into MEASUREMENT, and
    /// ATTRIBUTES, MISCSELECT, CET_ATTRIBUTES, CONFIGSVN and CONFIGID; reserved fields are zero.
    /// A self-report turned into a TARGETINFO this way lets an enclave target itself.
    fn from(report: &Report) -> Self {
        Targetinfo {
            measurement: report.mrenclave,
            attributes: report.attributes,
            cet_attributes: report.cet_attributes,
            configsvn: report.configsvn,
            miscselect: report.miscselect,
            configid: report.configid,
            ..Self::new_zeroed()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_report_copies_identity_fields() {
        let report = Report {
            cpusvn: [1; 16],
            miscselect: 0x1,
            cet_attributes: 0x3,
            attributes: Attributes { flags: 0x87, xfrm: 0xE7 },
            mrenclave: [0x11; 32],
            mrsigner: [0x22; 32],
            configid: [0x33; 64],
            isvprodid: 9,
            isvsvn: 10,
            configsvn: 0x4455,
            reportdata: [0x66; 64],
            keyid: [0x77; 32],
            mac: [0x88; 16],
            ..Report::default()
        };
        let ti = Targetinfo::from(&report);
        assert_eq!(ti.measurement, [0x11; 32]);
        assert_eq!(ti.attributes, report.attributes);
        assert_eq!(ti.miscselect, 1);
        assert_eq!(ti.configid, [0x33; 64]);
        assert_eq!(ti.configsvn, 0x4455);
        assert_eq!(ti.cet_attributes, 3);
        assert!(!ti.has_reserved_bits(true));
        assert!(ti.has_reserved_bits(false), "CET_ATTRIBUTES is reserved without CET");
    }

    #[test]
    fn reserved_fields() {
        assert!(!Targetinfo::default().has_reserved_bits(false));
        let mut ti = Targetinfo { reserved1: 1, ..Targetinfo::default() };
        assert!(ti.has_reserved_bits(true));
        ti.reserved1 = 0;
        ti.reserved2[7] = 1;
        assert!(ti.has_reserved_bits(true));
        ti.reserved2[7] = 0;
        ti.reserved3[383] = 1;
        assert!(ti.has_reserved_bits(true));
        assert_eq!(Targetinfo { miscselect: 1, ..Targetinfo::default() }.miscselect(), Miscselect::EXINFO);
    }
}
