//! Exception vectors and the page-fault error code as SGX uses them (spec §1.5, §3.4, §6;
//! SDM Vol. 3A §6.15, kernel `asm/trap_pf.h`).

use crate::ArchError;

numeric_enum! {
    /// The exception vectors the SGX model raises or reports in EXITINFO.
    pub enum Vector: u8, error = ArchError::UnknownVector {
        /// Divide error.
        De = 0 => "#DE",
        /// Debug.
        Db = 1 => "#DB",
        /// Breakpoint (INT3).
        Bp = 3 => "#BP",
        /// Overflow (INTO).
        Of = 4 => "#OF",
        /// BOUND range exceeded.
        Br = 5 => "#BR",
        /// Invalid opcode.
        Ud = 6 => "#UD",
        /// Device not available.
        Nm = 7 => "#NM",
        /// General protection.
        Gp = 13 => "#GP",
        /// Page fault.
        Pf = 14 => "#PF",
        /// x87 floating-point error.
        Mf = 16 => "#MF",
        /// Alignment check.
        Ac = 17 => "#AC",
        /// SIMD floating-point exception.
        Xm = 19 => "#XM",
        /// Control protection (CET).
        Cp = 21 => "#CP",
    }
}

bitflags::bitflags! {
    /// Page-fault error code (PFEC). Bit 15 marks an SGX (EPCM-induced) fault.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct PfErrorCode: u32 {
        /// The page was present (protection violation rather than not-present).
        const P = 1 << 0;
        /// The access was a write.
        const W = 1 << 1;
        /// The access was from user mode.
        const U = 1 << 2;
        /// A reserved bit was set in a paging structure.
        const RSVD = 1 << 3;
        /// The access was an instruction fetch.
        const I = 1 << 4;
        /// Protection-key violation.
        const PK = 1 << 5;
        /// EPCM-induced fault (kernel `X86_PF_SGX`).
        const SGX = 1 << 15;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_round_trip() {
        let expected = [0, 1, 3, 4, 5, 6, 7, 13, 14, 16, 17, 19, 21];
        let raw: Vec<u8> = Vector::ALL.iter().map(|v| v.raw()).collect();
        assert_eq!(raw, expected);
        for &v in Vector::ALL {
            assert_eq!(Vector::try_from(v.raw()), Ok(v));
        }
        for missing in [2, 8, 15, 18, 20, 22, 255] {
            assert_eq!(Vector::try_from(missing), Err(ArchError::UnknownVector(missing)));
        }
        assert_eq!(Vector::Pf.to_string(), "#PF");
    }

    #[test]
    fn pf_error_code_bits() {
        let epcm_write = PfErrorCode::P | PfErrorCode::W | PfErrorCode::U | PfErrorCode::SGX;
        assert_eq!(epcm_write.bits(), 0x8007);
        assert_eq!(PfErrorCode::I.bits() | PfErrorCode::PK.bits() | PfErrorCode::RSVD.bits(), 0x38);
    }
}
