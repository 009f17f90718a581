//! MRENCLAVE record tags (spec §9.1, §9.2; SDM Vol. 3D ECREATE/EADD/EEXTEND pseudo-code).
//!
//! MRENCLAVE is SHA-256 over 64-byte records, each starting with one of these tags as a
//! little-endian u64 (the tag bytes spell the leaf name in ASCII).

/// Tag of the ECREATE record (`"ECREATE\0"`): tag ‖ SSAFRAMESIZE u32 ‖ SIZE u64 ‖ 44 zero bytes.
pub const MEAS_ECREATE: u64 = 0x0045_5441_4552_4345;

/// Tag of an EADD record (`"EADD\0\0\0\0"`): tag ‖ page offset u64 ‖ first 48 bytes of SECINFO.
pub const MEAS_EADD: u64 = 0x0000_0000_4444_4145;

/// Tag of an EEXTEND record (`"EEXTEND\0"`): tag ‖ chunk offset u64 ‖ 48 zero bytes, followed
/// by the chunk's [`EEXTEND_CHUNK_SIZE`] bytes.
pub const MEAS_EEXTEND: u64 = 0x0044_4E45_5458_4545;

/// SGXS files only, never hashed: 256 bytes of loaded-but-unmeasured data follow
/// (`"UNMEASRD"`).
pub const MEAS_UNMEASURED: u64 = 0x4452_5341_454d_4e55;

/// SGXS files only, never hashed: ECREATE placeholder whose size is not yet fixed
/// (`"UNSIZED\0"`).
pub const MEAS_UNSIZED: u64 = 0x0044_455a_4953_4e55;

/// Size of one measurement record.
pub const MEAS_RECORD_SIZE: usize = 64;

/// Bytes measured by one EEXTEND.
pub const EEXTEND_CHUNK_SIZE: usize = 256;

/// How many bytes of SECINFO an EADD record carries.
pub const EADD_SECINFO_BYTES: usize = 48;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_spell_their_names() {
        assert_eq!(&MEAS_ECREATE.to_le_bytes(), b"ECREATE\0");
        assert_eq!(&MEAS_EADD.to_le_bytes(), b"EADD\0\0\0\0");
        assert_eq!(&MEAS_EEXTEND.to_le_bytes(), b"EEXTEND\0");
        assert_eq!(&MEAS_UNMEASURED.to_le_bytes(), b"UNMEASRD");
        assert_eq!(&MEAS_UNSIZED.to_le_bytes(), b"UNSIZED\0");
    }

    #[test]
    fn chunk_geometry() {
        assert_eq!(crate::PAGE_SIZE / EEXTEND_CHUNK_SIZE, 16);
        assert_eq!(EEXTEND_CHUNK_SIZE % MEAS_RECORD_SIZE, 0);
        assert_eq!(8 + 8 + EADD_SECINFO_BYTES, MEAS_RECORD_SIZE);
    }
}
