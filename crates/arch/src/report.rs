//! REPORT, EREPORT's output (spec §1.12; SDM Vol. 3D §34.18.1, SDK `sgx_report.h`).

use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout};

use crate::attributes::{Attributes, Miscselect};

/// Size of REPORTDATA, EREPORT's user-data input.
pub const REPORTDATA_SIZE: usize = 64;

/// Alignment EREPORT requires of the REPORTDATA address.
pub const REPORTDATA_ALIGN: usize = 128;

/// REPORT (432 bytes; EREPORT requires the output address to be 512-byte aligned).
///
/// No `align(512)` attribute: it would pad the type to 512 bytes. [`Report::ALIGN`] states
/// the address requirement instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct Report {
    /// Security version of the CPU.
    pub cpusvn: [u8; 16],
    /// SECS.MISCSELECT of the reporting enclave.
    pub miscselect: u32,
    /// CET attributes (CET parts; zero otherwise).
    pub cet_attributes: u8,
    /// Reserved.
    pub reserved1: [u8; 11],
    /// ISV extended product id (KSS).
    pub isvextprodid: [u8; 16],
    /// SECS.ATTRIBUTES of the reporting enclave.
    pub attributes: Attributes,
    /// MRENCLAVE of the reporting enclave.
    pub mrenclave: [u8; 32],
    /// Reserved.
    pub reserved2: [u8; 32],
    /// MRSIGNER of the reporting enclave.
    pub mrsigner: [u8; 32],
    /// Reserved.
    pub reserved3: [u8; 32],
    /// CONFIGID (KSS).
    pub configid: [u8; 64],
    /// ISV product id.
    pub isvprodid: u16,
    /// ISV security version.
    pub isvsvn: u16,
    /// CONFIGSVN (KSS).
    pub configsvn: u16,
    /// Reserved.
    pub reserved4: [u8; 42],
    /// ISV family id (KSS).
    pub isvfamilyid: [u8; 16],
    /// User data supplied to EREPORT.
    pub reportdata: [u8; REPORTDATA_SIZE],
    /// Key id of the report key used for the MAC.
    pub keyid: [u8; 32],
    /// AES-CMAC with the target's report key over [`Report::mac_data`].
    pub mac: [u8; 16],
}

layout!(Report, size = Report::SIZE, test = report_layout, {
    cpusvn @ 0,
    miscselect @ 16,
    cet_attributes @ 20,
    reserved1 @ 21,
    isvextprodid @ 32,
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
    isvfamilyid @ 304,
    reportdata @ 320,
    keyid @ 384,
    mac @ 416,
});

impl Report {
    /// Architectural size in bytes.
    pub const SIZE: usize = 432;
    /// Alignment EREPORT requires of the output address.
    pub const ALIGN: usize = 512;
    /// Length of the MACed prefix (everything before KEYID).
    pub const MAC_DATA_SIZE: usize = 384;

    /// The MACed bytes `[0, 384)`.
    #[must_use]
    pub fn mac_data(&self) -> &[u8] {
        &self.as_bytes()[..Self::MAC_DATA_SIZE]
    }

    /// MISCSELECT as typed flags; reserved bits are kept.
    #[must_use]
    pub const fn miscselect(&self) -> Miscselect {
        Miscselect::from_bits_retain(self.miscselect)
    }
}

impl Default for Report {
    /// The all-zero REPORT.
    fn default() -> Self {
        Self::new_zeroed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_data_stops_before_keyid() {
        let r = Report { keyid: [0xEE; 32], mac: [0xFF; 16], reportdata: [7; 64], ..Report::default() };
        let data = r.mac_data();
        assert_eq!(data.len(), 384);
        assert!(data[320..384].iter().all(|&b| b == 7));
        assert!(!data.contains(&0xEE) && !data.contains(&0xFF));
        assert_eq!(core::mem::offset_of!(Report, keyid), Report::MAC_DATA_SIZE);
    }

    #[test]
    fn constants() {
        assert_eq!((REPORTDATA_SIZE, REPORTDATA_ALIGN), (64, 128));
        assert_eq!(size_of::<Report>(), 432);
        assert_eq!(Report { miscselect: 1, ..Report::default() }.miscselect(), Miscselect::EXINFO);
    }
}
