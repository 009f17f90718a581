//! Byte-exact SGX1/SGX2 architectural vocabulary: structures, flags, leaf numbers, error codes.
//!
//! This crate is the bottom layer of sgxemu. It knows nothing about EPC pages, enclaves or
//! threads; it only says what the architecture's data looks like, so that the CPU model, the
//! driver port and the tools agree byte for byte. Everything here follows
//! `shared/spec/architecture.md` (cited below as "spec §N"), which in turn cites the Intel SDM
//! Vol. 3D chapters 34–38 and the Linux kernel's `arch/x86/kernel/cpu/sgx/arch.h`.
//!
//! | module | models | spec |
//! |---|---|---|
//! | [`attributes`] | ATTRIBUTES, MISCSELECT | §1.1, §1.2 |
//! | [`secs`] | SECS | §1.3 |
//! | [`tcs`] | TCS | §1.4 |
//! | [`ssa`] | GPRSGX, EXITINFO, EXINFO (the SSA frame's tail) | §1.5 |
//! | [`xsave`] | non-compacted XSAVE layout (the SSA frame's head) | §1.5, §5.4 |
//! | [`pageinfo`] | PAGEINFO | §1.6 |
//! | [`secinfo`] | SECINFO, page types | §1.7 |
//! | [`pcmd`] | PCMD | §1.8 |
//! | [`va`] | version-array page geometry | §1.9 |
//! | [`sigstruct`] | SIGSTRUCT | §1.10 |
//! | [`einittoken`] | EINITTOKEN | §1.11 |
//! | [`report`] | REPORT | §1.12 |
//! | [`targetinfo`] | TARGETINFO | §1.13 |
//! | [`keyrequest`] | KEYREQUEST, key names and policies | §1.14 |
//! | [`error_code`] | SGX return codes (RAX) | §3.1 |
//! | [`leaf`] | ENCLS/ENCLU leaf numbers and opcodes | §3.3 |
//! | [`exception`] | exception vectors, page-fault error code | §1.5, §3.4 |
//! | [`measurement`] | MRENCLAVE record tags | §9.1, §9.2 |
//! | [`cpuid`] | CPUID leaf 7 / 0x12 bits | §10.1, §10.2 |
//! | [`msr`] | IA32_FEATURE_CONTROL, IA32_SGXLEPUBKEYHASHn | §10.1, §10.3 |
//!
//! # Layout contract
//!
//! Every structure is `#[repr(C)]`, has no padding and no references, and derives zerocopy's
//! [`FromBytes`], [`IntoBytes`], [`Immutable`] and [`KnownLayout`]: every byte pattern is a
//! valid value, so reading guest memory into one of these types can never be undefined
//! behaviour. Each type carries
//!
//! * `SIZE`: the architectural size in bytes. It equals `size_of::<T>()`, except that nothing
//!   is padded to reach an alignment the architecture only asks of the *address*;
//! * `ALIGN`: the alignment the leaves require of the structure's linear address (a leaf
//!   raises #GP otherwise). Types whose size is a multiple of that alignment also carry
//!   `#[repr(align(ALIGN))]`; the others ([`Sigstruct`], [`Einittoken`], [`Report`]) do not,
//!   since that would add trailing padding and break the byte-exact size;
//! * a `const _: () = { ... }` block that checks the size and every field offset the spec
//!   gives, at compile time.
//!
//! Fields are plain integers and byte arrays named after the SDM field; flags are read
//! through [`bitflags`] types with `from_bits_retain`, so unknown (reserved) bits survive a
//! round trip and can be checked.
//!
//! # Converting to and from bytes
//!
//! There is no hand-written `unsafe` in this crate; zerocopy provides the conversions, and
//! they accept only the exact length:
//!
//! * `T::read_from_bytes(&[u8])` copies out a `T` and fails unless the slice is exactly
//!   `size_of::<T>()` bytes long (use this for guest memory: it has no alignment demand);
//! * `T::ref_from_bytes(&[u8])` borrows in place and also fails on misalignment;
//! * `value.as_bytes()` views a `T` as its bytes; `T::new_zeroed()` is the all-zero value
//!   (also what `Default` returns).
//!
//! ```
//! use sgxemu_arch::{FromBytes, IntoBytes, PageType, Secinfo, SecinfoFlags};
//!
//! // What EADD reads from the SECINFO operand of a read/execute code page.
//! let flags = (SecinfoFlags::R | SecinfoFlags::X).with_page_type(PageType::Reg);
//! let secinfo = Secinfo::new(flags);
//! let guest_bytes = secinfo.as_bytes().to_vec();
//!
//! let read = Secinfo::read_from_bytes(&guest_bytes).expect("exactly 64 bytes");
//! assert_eq!(read.flags().page_type(), Some(PageType::Reg));
//! assert_eq!(read.flags().bits(), 0x205);
//! assert!(!read.has_reserved_bits());
//!
//! // A slice of the wrong length is refused, never truncated or padded.
//! assert!(Secinfo::read_from_bytes(&guest_bytes[..63]).is_err());
//! ```
//!
//! # Why not `sgx-isa`
//!
//! Fortanix's `sgx-isa` 0.6 was evaluated (`tests/sgx_isa_crosscheck.rs` runs it as a
//! differential oracle against this crate). It builds on stable and agrees on every layout
//! both define, but it predates KSS/AEX-Notify fields in SECS, TARGETINFO and KEYREQUEST, uses
//! bitflags 1 and transmute-based accessors, gives large structures `align(N)` padding (so
//! `size_of` is not the architectural size), and has no GPRSGX, EXINFO, XSAVE, CPUID or MSR
//! facts. We therefore own these types and keep `sgx-isa` as a dev-dependency only.

#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[macro_use]
mod macros;

pub mod attributes;
pub mod cpuid;
pub mod einittoken;
pub mod error_code;
pub mod exception;
pub mod keyrequest;
pub mod leaf;
pub mod measurement;
pub mod msr;
pub mod pageinfo;
pub mod pcmd;
pub mod report;
pub mod secinfo;
pub mod secs;
pub mod sigstruct;
pub mod ssa;
pub mod targetinfo;
pub mod tcs;
pub mod va;
pub mod xsave;

pub use attributes::{Attributes, AttributesFlags, Miscselect};
pub use einittoken::Einittoken;
pub use error_code::ErrorCode;
pub use exception::{PfErrorCode, Vector};
pub use keyrequest::{KEYPOLICY_KSS_MASK, KEYPOLICY_RESERVED, Keyname, Keypolicy, Keyrequest};
pub use leaf::{ENCLS_OPCODE, ENCLU_OPCODE, Encls, Enclu};
pub use measurement::{
    EADD_SECINFO_BYTES, EEXTEND_CHUNK_SIZE, MEAS_EADD, MEAS_ECREATE, MEAS_EEXTEND, MEAS_RECORD_SIZE, MEAS_UNMEASURED,
    MEAS_UNSIZED,
};
pub use msr::{
    FEATURE_CONTROL_LOCK, FEATURE_CONTROL_SGX_ENABLE, FEATURE_CONTROL_SGX_LC_ENABLE, IA32_FEATURE_CONTROL,
    IA32_SGXLEPUBKEYHASH, IA32_SGXLEPUBKEYHASH0, IA32_SGXLEPUBKEYHASH1, IA32_SGXLEPUBKEYHASH2, IA32_SGXLEPUBKEYHASH3,
    INTEL_LE_PUBKEY_HASH,
};
pub use pageinfo::Pageinfo;
pub use pcmd::Pcmd;
pub use report::{REPORTDATA_ALIGN, REPORTDATA_SIZE, Report};
pub use secinfo::{PageType, SECINFO_FLAGS_RESERVED, Secinfo, SecinfoFlags};
pub use secs::Secs;
pub use sigstruct::{SIGSTRUCT_HEADER, SIGSTRUCT_HEADER2, Sigstruct, VENDOR_INTEL};
pub use ssa::{EXINFO_SIZE, Exinfo, ExitInfo, ExitType, GPRSGX_SIZE, Gprsgx};
pub use targetinfo::Targetinfo;
pub use tcs::{TCS_ARCH_SIZE, Tcs, TcsFlags};
pub use va::{VA_SLOT_SIZE, VA_SLOTS_PER_PAGE};
pub use xsave::{
    FCW_INIT, FCW_OFFSET, FSW_OFFSET, FTW_OFFSET, LEGACY_REGION_SIZE, MIN_XSAVE_SIZE, MXCSR_INIT, MXCSR_MASK_OFFSET,
    MXCSR_OFFSET, XCOMP_BV_OFFSET, XFRM_LEGACY, XFRM_SUPPORTED_MASK, XSAVE_COMPONENTS, XSAVE_HEADER_SIZE,
    XSTATE_BV_OFFSET, XsaveComponent, xfrm_is_consistent, xsave_size,
};

/// zerocopy's conversion traits, re-exported so that users of these types need not name
/// zerocopy themselves (see "Converting to and from bytes" above).
pub use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout};

/// Size of an EPC page and of every page the SGX leaves move (spec "Notation").
pub const PAGE_SIZE: usize = 4096;

/// `log2(PAGE_SIZE)`.
pub const PAGE_SHIFT: u32 = 12;

const _: () = assert!(1 << PAGE_SHIFT == PAGE_SIZE);

/// Errors of this crate: a raw number that names nothing in the architecture's vocabulary.
///
/// Each variant carries the offending value as read (e.g. from a register or a SECINFO field),
/// so a caller can report exactly what it was given.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ArchError {
    /// SECINFO.FLAGS bits 15:8 hold a value that is not a page type of spec §1.7.
    #[error("unknown SECINFO page type {0:#x}")]
    UnknownPageType(u8),
    /// A RAX value that is not an SGX return code of spec §3.1 (0, success, is not a code).
    #[error("unknown SGX return code {0}")]
    UnknownErrorCode(u32),
    /// An EAX value that is not an ENCLS leaf, or not an ENCLU leaf, of spec §3.3 (which of the
    /// two is known to the caller, which asked for one of [`Encls`] or [`Enclu`]).
    #[error("unknown SGX leaf {0:#x}")]
    UnknownLeaf(u32),
    /// KEYREQUEST.KEYNAME is not a key name of spec §1.14 (EGETKEY returns
    /// [`ErrorCode::InvalidKeyname`] for these).
    #[error("unknown KEYREQUEST key name {0}")]
    UnknownKeyname(u16),
    /// An exception vector this crate does not name (see [`Vector`]).
    #[error("unknown exception vector {0}")]
    UnknownVector(u8),
    /// EXITINFO.EXIT_TYPE (bits 10:8) is neither 3 nor 6 (spec §1.5).
    #[error("unknown EXITINFO exit type {0}")]
    UnknownExitType(u8),
}

/// Result type of this crate's fallible conversions.
pub type Result<T> = core::result::Result<T, ArchError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_constants_agree() {
        assert_eq!(PAGE_SIZE, 4096);
        assert_eq!(1usize << PAGE_SHIFT, PAGE_SIZE);
    }

    #[test]
    fn errors_display_the_value() {
        assert_eq!(ArchError::UnknownPageType(0x7f).to_string(), "unknown SECINFO page type 0x7f");
        assert_eq!(ArchError::UnknownErrorCode(22).to_string(), "unknown SGX return code 22");
        assert_eq!(ArchError::UnknownLeaf(0x10).to_string(), "unknown SGX leaf 0x10");
        assert_eq!(ArchError::UnknownKeyname(5).to_string(), "unknown KEYREQUEST key name 5");
        assert_eq!(ArchError::UnknownVector(2).to_string(), "unknown exception vector 2");
        assert_eq!(ArchError::UnknownExitType(1).to_string(), "unknown EXITINFO exit type 1");
    }
}
