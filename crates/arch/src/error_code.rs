//! SGX return codes, as leaves return them in RAX with ZF (or CF) set (spec §3.1; SDM
//! Vol. 3D Table 38-4 "Error or Information Codes", kernel `arch.h` `enum sgx_return_code`).

use crate::ArchError;

numeric_enum! {
    /// A non-zero SGX return code (0 is success and is not a code).
    ///
    /// The list is the single source of the variant, its number and its SDM name.
    pub enum ErrorCode: u32, error = ArchError::UnknownErrorCode {
        /// EINIT: SIGSTRUCT malformed (headers, vendor, exponent, reserved fields).
        InvalidSigStruct = 1 => "SGX_INVALID_SIG_STRUCT",
        /// EINIT, EGETKEY: attributes not allowed.
        InvalidAttribute = 2 => "SGX_INVALID_ATTRIBUTE",
        /// EBLOCK (informational, CF=1): page already blocked. The SDM table spells it
        /// SGX_BLSTATE.
        Blkstate = 3 => "SGX_BLKSTATE",
        /// EINIT: MRENCLAVE or token measurement mismatch.
        InvalidMeasurement = 4 => "SGX_INVALID_MEASUREMENT",
        /// EBLOCK (informational, CF=1): page type cannot be blocked.
        Notblockable = 5 => "SGX_NOTBLOCKABLE",
        /// EBLOCK: page not valid.
        PgInvld = 6 => "SGX_PG_INVLD",
        /// EBLOCK, EMODPR, EMODT: lost a race for the page (older name SGX_LOCKFAIL).
        EpcPageConflict = 7 => "SGX_EPC_PAGE_CONFLICT",
        /// EINIT: signature does not verify.
        InvalidSignature = 8 => "SGX_INVALID_SIGNATURE",
        /// ELDB, ELDU: MAC check of the evicted page failed.
        MacCompareFail = 9 => "SGX_MAC_COMPARE_FAIL",
        /// EWB: page not blocked.
        PageNotBlocked = 10 => "SGX_PAGE_NOT_BLOCKED",
        /// EWB, EACCEPT: TLB tracking not complete.
        NotTracked = 11 => "SGX_NOT_TRACKED",
        /// EWB (informational, CF=1): the VA slot was occupied; eviction still happened.
        VaSlotOccupied = 12 => "SGX_VA_SLOT_OCCUPIED",
        /// EWB, EREMOVE: SECS still has child pages.
        ChildPresent = 13 => "SGX_CHILD_PRESENT",
        /// EREMOVE: a thread is executing in the enclave.
        EnclaveAct = 14 => "SGX_ENCLAVE_ACT",
        /// EBLOCK (legacy): entry epoch locked.
        EntryepochLocked = 15 => "SGX_ENTRYEPOCH_LOCKED",
        /// EINIT: EINITTOKEN invalid or does not match.
        InvalidEinittoken = 16 => "SGX_INVALID_EINITTOKEN",
        /// ETRACK: previous tracking cycle incomplete.
        PrevTrkIncmpl = 17 => "SGX_PREV_TRK_INCMPL",
        /// EBLOCK (informational, CF=1): page is a SECS.
        PgIsSecs = 18 => "SGX_PG_IS_SECS",
        /// EACCEPT, EACCEPTCOPY: page attributes differ from SECINFO.
        PageAttributesMismatch = 19 => "SGX_PAGE_ATTRIBUTES_MISMATCH",
        /// EMODPR, EMODT: page cannot be modified in its state.
        PageNotModifiable = 20 => "SGX_PAGE_NOT_MODIFIABLE",
        /// EDBGRD, EDBGWR: page is pending or modified.
        PageNotDebuggable = 21 => "SGX_PAGE_NOT_DEBUGGABLE",
        /// EINIT, EGETKEY: CPUSVN not valid on this part.
        InvalidCpusvn = 32 => "SGX_INVALID_CPUSVN",
        /// EGETKEY: requested ISVSVN above the enclave's.
        InvalidIsvsvn = 64 => "SGX_INVALID_ISVSVN",
        /// EINIT: interrupted by an unmasked event; retry.
        UnmaskedEvent = 128 => "SGX_UNMASKED_EVENT",
        /// EGETKEY: KEYNAME not a key name.
        InvalidKeyname = 256 => "SGX_INVALID_KEYNAME",
    }
}

impl ErrorCode {
    /// EINIT's "token attributes mismatch" code. The SDM pseudo-code names
    /// SGX_INVALID_EINIT_ATTRIBUTE but the code table gives it no number; we return
    /// SGX_INVALID_ATTRIBUTE (2) — spec §3.1 and §13 item 8 (unreachable from the Linux
    /// driver, which always passes an invalid token).
    pub const INVALID_EINIT_ATTRIBUTE: ErrorCode = ErrorCode::InvalidAttribute;

    /// EINIT's "license" failure. The SDM pseudo-code names SGX_INVALID_LICENSE but the code
    /// table gives it no number; we return SGX_INVALID_EINITTOKEN (16) — spec §3.1 and §13
    /// item 8.
    pub const INVALID_LICENSE: ErrorCode = ErrorCode::InvalidEinittoken;

    /// Older SDM name of [`ErrorCode::EpcPageConflict`].
    pub const LOCKFAIL: ErrorCode = ErrorCode::EpcPageConflict;

    /// Whether the code is informational: reported with CF=1 and ZF=0 rather than ZF=1
    /// (EBLOCK's SGX_BLKSTATE, SGX_NOTBLOCKABLE, SGX_PG_IS_SECS; EWB's SGX_VA_SLOT_OCCUPIED),
    /// spec §3.2.
    #[must_use]
    pub const fn is_informational(self) -> bool {
        matches!(self, ErrorCode::Blkstate | ErrorCode::Notblockable | ErrorCode::PgIsSecs | ErrorCode::VaSlotOccupied)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Spec §3.1, written out independently of the macro list.
    const TABLE: [(u32, &str); 25] = [
        (1, "SGX_INVALID_SIG_STRUCT"),
        (2, "SGX_INVALID_ATTRIBUTE"),
        (3, "SGX_BLKSTATE"),
        (4, "SGX_INVALID_MEASUREMENT"),
        (5, "SGX_NOTBLOCKABLE"),
        (6, "SGX_PG_INVLD"),
        (7, "SGX_EPC_PAGE_CONFLICT"),
        (8, "SGX_INVALID_SIGNATURE"),
        (9, "SGX_MAC_COMPARE_FAIL"),
        (10, "SGX_PAGE_NOT_BLOCKED"),
        (11, "SGX_NOT_TRACKED"),
        (12, "SGX_VA_SLOT_OCCUPIED"),
        (13, "SGX_CHILD_PRESENT"),
        (14, "SGX_ENCLAVE_ACT"),
        (15, "SGX_ENTRYEPOCH_LOCKED"),
        (16, "SGX_INVALID_EINITTOKEN"),
        (17, "SGX_PREV_TRK_INCMPL"),
        (18, "SGX_PG_IS_SECS"),
        (19, "SGX_PAGE_ATTRIBUTES_MISMATCH"),
        (20, "SGX_PAGE_NOT_MODIFIABLE"),
        (21, "SGX_PAGE_NOT_DEBUGGABLE"),
        (32, "SGX_INVALID_CPUSVN"),
        (64, "SGX_INVALID_ISVSVN"),
        (128, "SGX_UNMASKED_EVENT"),
        (256, "SGX_INVALID_KEYNAME"),
    ];

    #[test]
    fn every_code_matches_the_spec_table() {
        assert_eq!(ErrorCode::ALL.len(), TABLE.len());
        for (&code, &(value, name)) in ErrorCode::ALL.iter().zip(&TABLE) {
            assert_eq!(code.raw(), value);
            assert_eq!(code.name(), name);
            assert_eq!(code.to_string(), name);
            assert_eq!(ErrorCode::try_from(value), Ok(code));
            assert_eq!(u32::from(code), value);
        }
    }

    #[test]
    fn gaps_are_unknown() {
        for value in (0..=300).filter(|v| !TABLE.iter().any(|&(t, _)| t == *v)) {
            assert_eq!(ErrorCode::try_from(value), Err(ArchError::UnknownErrorCode(value)));
        }
    }

    #[test]
    fn aliases_and_informational_codes() {
        assert_eq!(ErrorCode::INVALID_EINIT_ATTRIBUTE.raw(), 2);
        assert_eq!(ErrorCode::INVALID_LICENSE.raw(), 16);
        assert_eq!(ErrorCode::LOCKFAIL.raw(), 7);
        let info: Vec<u32> = ErrorCode::ALL.iter().filter(|c| c.is_informational()).map(|c| c.raw()).collect();
        assert_eq!(info, [3, 5, 12, 18]);
    }
}
