//! What a leaf can do to its caller: return a status in RAX/RFLAGS, or raise an exception.
//!
//! The processor never panics on guest- or driver-controlled input; every architectural
//! failure is one of these values (spec §3.2–§3.4).

use sgxemu_arch::{ErrorCode, PfErrorCode, Vector};

/// An exception raised by a leaf or by an enclave-mode memory access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exception {
    /// #GP(0): alignment, malformed input, lock conflict, wrong mode.
    Gp,
    /// #PF at `addr` with the architectural error code.
    Pf {
        /// The faulting linear address (CR2, before page-alignment by AEX).
        addr: u64,
        /// Page-fault error code; bit 15 (`PfErrorCode::SGX`) marks EPCM-induced faults.
        code: PfErrorCode,
    },
    /// #UD: leaf or instruction not available in this mode.
    Ud,
}

impl Exception {
    /// An EPCM-induced #PF (spec §3.4 \[DESIGN\]): P=1, SGX=1, W if the operand is written.
    pub fn epcm_pf(addr: u64, write: bool) -> Self {
        let mut code = PfErrorCode::P | PfErrorCode::SGX;
        if write {
            code |= PfErrorCode::W;
        }
        Exception::Pf { addr, code }
    }

    /// An EPCM-induced #PF raised by an ENCLU leaf: user mode, so U/S is set as well.
    pub fn epcm_pf_user(addr: u64, write: bool) -> Self {
        match Self::epcm_pf(addr, write) {
            Exception::Pf { addr, code } => Exception::Pf { addr, code: code | PfErrorCode::U },
            other => other,
        }
    }

    /// The vector this exception is delivered on.
    pub fn vector(&self) -> Vector {
        match self {
            Exception::Gp => Vector::Gp,
            Exception::Pf { .. } => Vector::Pf,
            Exception::Ud => Vector::Ud,
        }
    }

    /// True for a #PF whose error code carries the SGX bit.
    pub fn is_sgx_pf(&self) -> bool {
        matches!(self, Exception::Pf { code, .. } if code.contains(PfErrorCode::SGX))
    }
}

/// The RAX/RFLAGS outcome of a leaf that returns a code (spec §3.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// RAX = 0, ZF = 0, CF = 0.
    Success,
    /// ZF = 1, RAX = code.
    Error(ErrorCode),
    /// CF = 1, ZF = 0, RAX = code (EBLOCK's and EWB's informational codes).
    Info(ErrorCode),
}

impl Status {
    /// The value left in RAX.
    pub fn rax(self) -> u64 {
        match self {
            Status::Success => 0,
            Status::Error(code) | Status::Info(code) => code as u64,
        }
    }

    /// The error code, if any (informational codes included).
    pub fn code(self) -> Option<ErrorCode> {
        match self {
            Status::Success => None,
            Status::Error(code) | Status::Info(code) => Some(code),
        }
    }

    /// Applies the flag convention of spec §3.2 to an RFLAGS value: CF, PF, AF, ZF, SF and OF
    /// are cleared, then ZF (error) or CF (informational) set.
    pub fn apply_to_rflags(self, rflags: u64) -> u64 {
        let cleared = rflags & !crate::regs::ARITH_FLAGS;
        match self {
            Status::Success => cleared,
            Status::Error(_) => cleared | crate::regs::RFLAGS_ZF,
            Status::Info(_) => cleared | crate::regs::RFLAGS_CF,
        }
    }
}

/// Result of a leaf that returns a status code.
pub type LeafResult = Result<Status, Exception>;

/// Shorthand used inside leaves: stop with a ZF-error.
pub(crate) fn fail(code: ErrorCode) -> LeafResult {
    Ok(Status::Error(code))
}
