//! ENCLS and ENCLU leaf numbers and opcodes (spec §3.3; kernel `asm/sgx.h`
//! `enum sgx_encls_function`, `enum sgx_enclu_function`).
//!
//! The leaf is selected by EAX; the upper 32 bits of RAX are ignored.

use crate::ArchError;

/// Machine code of ENCLS (ring 0).
pub const ENCLS_OPCODE: [u8; 3] = [0x0F, 0x01, 0xCF];

/// Machine code of ENCLU (ring 3).
pub const ENCLU_OPCODE: [u8; 3] = [0x0F, 0x01, 0xD7];

numeric_enum! {
    /// ENCLS leaves (supervisor). Leaves 0xD–0xF are SGX2 (EDMM); on a part without SGX2
    /// they count as unsupported (#GP).
    pub enum Encls: u32, error = ArchError::UnknownLeaf {
        /// Create an enclave (SECS page).
        Ecreate = 0x0 => "ECREATE",
        /// Add a page to an uninitialized enclave.
        Eadd = 0x1 => "EADD",
        /// Initialize an enclave.
        Einit = 0x2 => "EINIT",
        /// Remove a page from the EPC.
        Eremove = 0x3 => "EREMOVE",
        /// Read a qword from a debug enclave.
        Edbgrd = 0x4 => "EDBGRD",
        /// Write a qword into a debug enclave.
        Edbgwr = 0x5 => "EDBGWR",
        /// Measure 256 bytes of an added page.
        Eextend = 0x6 => "EEXTEND",
        /// Load an evicted page, blocked.
        Eldb = 0x7 => "ELDB",
        /// Load an evicted page, unblocked.
        Eldu = 0x8 => "ELDU",
        /// Block new translations of a page.
        Eblock = 0x9 => "EBLOCK",
        /// Add a version-array page.
        Epa = 0xA => "EPA",
        /// Evict a page.
        Ewb = 0xB => "EWB",
        /// Start a TLB-tracking cycle.
        Etrack = 0xC => "ETRACK",
        /// Add a pending page to an initialized enclave (SGX2).
        Eaug = 0xD => "EAUG",
        /// Restrict a page's permissions (SGX2).
        Emodpr = 0xE => "EMODPR",
        /// Change a page's type (SGX2).
        Emodt = 0xF => "EMODT",
    }
}

impl Encls {
    /// Whether the leaf is an SGX2 (EDMM) leaf, enumerated by CPUID.(12h,0).EAX bit 1.
    #[must_use]
    pub const fn is_sgx2(self) -> bool {
        matches!(self, Encls::Eaug | Encls::Emodpr | Encls::Emodt)
    }
}

numeric_enum! {
    /// ENCLU leaves (user). Leaves 5–7 are SGX2 (EDMM). EVERIFYREPORT2 (8) and EDECCSSA (9)
    /// are out of scope (spec, Scope).
    pub enum Enclu: u32, error = ArchError::UnknownLeaf {
        /// Produce a REPORT for a target enclave.
        Ereport = 0x0 => "EREPORT",
        /// Derive a key.
        Egetkey = 0x1 => "EGETKEY",
        /// Enter an enclave through a TCS.
        Eenter = 0x2 => "EENTER",
        /// Resume an enclave after an AEX.
        Eresume = 0x3 => "ERESUME",
        /// Leave an enclave synchronously.
        Eexit = 0x4 => "EEXIT",
        /// Accept a pending/modified page (SGX2).
        Eaccept = 0x5 => "EACCEPT",
        /// Extend a page's permissions (SGX2).
        Emodpe = 0x6 => "EMODPE",
        /// Initialize a pending page with a copy and accept it (SGX2).
        Eacceptcopy = 0x7 => "EACCEPTCOPY",
    }
}

impl Enclu {
    /// Whether the leaf is an SGX2 (EDMM) leaf, enumerated by CPUID.(12h,0).EAX bit 1.
    #[must_use]
    pub const fn is_sgx2(self) -> bool {
        matches!(self, Enclu::Eaccept | Enclu::Emodpe | Enclu::Eacceptcopy)
    }

    /// Whether the leaf must be executed inside an enclave (#GP outside); EENTER and ERESUME
    /// are the opposite (#GP inside), spec §3.3.
    #[must_use]
    pub const fn requires_enclave_mode(self) -> bool {
        !matches!(self, Enclu::Eenter | Enclu::Eresume)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_dense_and_round_trip() {
        for (i, &leaf) in Encls::ALL.iter().enumerate() {
            assert_eq!(leaf.raw() as usize, i);
            assert_eq!(Encls::try_from(leaf.raw()), Ok(leaf));
        }
        assert_eq!(Encls::ALL.len(), 16);
        for (i, &leaf) in Enclu::ALL.iter().enumerate() {
            assert_eq!(leaf.raw() as usize, i);
            assert_eq!(Enclu::try_from(leaf.raw()), Ok(leaf));
        }
        assert_eq!(Enclu::ALL.len(), 8);
    }

    #[test]
    fn unknown_leaves() {
        assert_eq!(Encls::try_from(0x10), Err(ArchError::UnknownLeaf(0x10)));
        assert_eq!(Enclu::try_from(8), Err(ArchError::UnknownLeaf(8)));
        assert_eq!(Enclu::try_from(u32::MAX), Err(ArchError::UnknownLeaf(u32::MAX)));
    }

    #[test]
    fn sgx2_leaves() {
        let sgx2: Vec<_> = Encls::ALL.iter().filter(|l| l.is_sgx2()).map(|l| l.raw()).collect();
        assert_eq!(sgx2, [0xD, 0xE, 0xF]);
        let sgx2: Vec<_> = Enclu::ALL.iter().filter(|l| l.is_sgx2()).map(|l| l.raw()).collect();
        assert_eq!(sgx2, [5, 6, 7]);
    }

    #[test]
    fn names_and_opcodes() {
        assert_eq!(Encls::Ecreate.name(), "ECREATE");
        assert_eq!(Enclu::Eacceptcopy.to_string(), "EACCEPTCOPY");
        assert_eq!(ENCLS_OPCODE, [0x0f, 0x01, 0xcf]);
        assert_eq!(ENCLU_OPCODE, [0x0f, 0x01, 0xd7]);
        assert!(!Enclu::Eenter.requires_enclave_mode());
        assert!(Enclu::Eexit.requires_enclave_mode());
    }
}
