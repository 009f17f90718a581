//! The SGX cryptography of sgxemu, as pure functions (architecture spec §11).
//!
//! * [`measure`] — MRENCLAVE as a stream of 64-byte SHA-256 blocks (§9.1), with a
//!   40-byte serialisable running state for the SECS.
//! * [`sigstruct`] — SIGSTRUCT signing and EINIT's RSA-3072 / e = 3 check including Q1
//!   and Q2, MRSIGNER, the PKCS#1 v1.5 PADDING constant (§1.10, §4.4).
//! * [`cmac`] — AES-128-CMAC for REPORT / EINITTOKEN MACs (§11.1).
//! * [`keys`] — `derivekey` = AES-128-CMAC(root, KEYDEPENDENCIES) (§11.2).
//! * [`paging`] — EWB/ELDU AES-128-GCM page sealing (§4.10, §4.11, §11.4).
//!
//! Nothing here does I/O, uses `unsafe`, or reads ambient randomness: randomness comes
//! only through a `rand_core` RNG argument, so every result is a function of the inputs.
//!
//! # Walkthrough: build, sign and check an enclave identity
//!
//! ```
//! use sgxemu_crypto::{
//!     derive_key, open_page, seal_page, build_mac_header, KeyDependencies,
//!     MeasurementState, PagingKey, PKCS1_SHA256_PADDING,
//! };
//!
//! // ECREATE, EADD one RW page, EEXTEND it: the SECS keeps only 40 bytes of state.
//! let mut m = MeasurementState::new();
//! m.ecreate(1, 0x2000);
//! m.eadd(0, 0x203);
//! for c in 0..16u64 {
//!     m.eextend(c * 256, &[0; 256]);
//! }
//! let mrenclave = m.finalize(); // EINIT compares this with SIGSTRUCT.ENCLAVEHASH
//!
//! // EGETKEY(SEAL) binding MRENCLAVE.
//! let deps = KeyDependencies {
//!     keyname: 4,
//!     mrenclave,
//!     padding: PKCS1_SHA256_PADDING,
//!     ..KeyDependencies::default()
//! };
//! let seal_key = derive_key(&[7; 16], &deps);
//! assert_eq!(seal_key, derive_key(&[7; 16], &deps));
//!
//! // EWB then ELDU of one page.
//! let pk = PagingKey::new(&[9; 16]);
//! let header = build_mac_header(1, 0x203, 0x1000, &[0; 40]);
//! let mut page = [0x5A; 4096];
//! let tag = seal_page(&pk, 1, &header, &mut page);
//! open_page(&pk, 1, &header, &mut page, &tag).unwrap();
//! assert_eq!(page, [0x5A; 4096]);
//! ```
//!
//! Signing: [`sign`] fills MODULUS, EXPONENT, SIGNATURE, Q1, Q2 of an
//! `sgxemu_arch::Sigstruct` with a [`SigningKey`]; [`verify`] is EINIT's check and
//! returns MRSIGNER and PADDING.

#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod cmac;
pub mod keys;
pub mod measure;
pub mod paging;
pub mod sigstruct;

pub use crate::cmac::{aes128_cmac, aes128_cmac_verify};
pub use crate::keys::{KEY_DEPENDENCIES_SIZE, KeyDependencies, derive_key};
pub use crate::measure::{MEASUREMENT_STATE_SIZE, MeasurementState, eadd_record, ecreate_record, eextend_record};
pub use crate::paging::{MAC_HEADER_SIZE, MacMismatch, PagingKey, build_mac_header, open_page, seal_page};
pub use crate::sigstruct::{
    KeyError, PKCS1_SHA256_PADDING, PublicKey, SignatureError, SigningKey, VerifiedSigstruct, mrsigner, sign, verify,
};

/// Any error of this crate, for callers that do not care which stage failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A signing key could not be read, written, generated or used (§1.10).
    #[error(transparent)]
    Key(#[from] KeyError),
    /// A SIGSTRUCT failed EINIT's signature check (§4.4 step 5).
    #[error(transparent)]
    Signature(#[from] SignatureError),
    /// A paged-out page failed its MAC check (§4.11 step 6).
    #[error(transparent)]
    Mac(#[from] MacMismatch),
}

/// Result alias with the crate [`Error`].
pub type Result<T, E = Error> = core::result::Result<T, E>;

/// Runs each primitive once, so that every lazy CPU-feature probe in the back ends (SHA-NI,
/// AES-NI, PCLMULQDQ) has executed its `cpuid` by the time this returns. The native engine
/// calls it before it turns on CPUID faulting, after which a `cpuid` in its own signal
/// handlers would trap.
pub fn prime_feature_detection() {
    let mut measurement = MeasurementState::new();
    measurement.ecreate(1, 0x1000);
    let _ = measurement.finalize();
    let _ = aes128_cmac(&[0; 16], &[0; 16]);
    let mut page = [0u8; sgxemu_arch::PAGE_SIZE];
    let _ = seal_page(&PagingKey::new(&[0; 16]), 1, &[0; MAC_HEADER_SIZE], &mut page);
}
