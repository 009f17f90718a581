//! SIGSTRUCT signing and EINIT's signature check: RSA-3072, e = 3, RSASSA-PKCS1-v1_5 with
//! SHA-256, every big integer stored **little-endian** (architecture spec §1.10, §4.4
//! steps 3, 5 and 10, §9.1 MRSIGNER).
//!
//! The hardware does not divide: it checks the signature with the two quotients the
//! signer stores next to it, `Q1 = ⌊s²/n⌋` and `Q2 = ⌊(s³ − Q1·s·n)/n⌋`. [`verify`]
//! recomputes both and rejects a SIGSTRUCT whose Q1 or Q2 differ, as EINIT does.

use core::fmt;

use num_bigint::BigUint;
use rsa::pkcs1::{DecodeRsaPrivateKey, EncodeRsaPrivateKey};
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding};
use rsa::traits::PublicKeyParts;
use rsa::{BoxedUint, PrivateKey};
use sgxemu_arch::Sigstruct;
use sha2::{Digest, Sha256};

/// Size of the SIGSTRUCT modulus in bits (§1.10).
pub const MODULUS_BITS: u32 = 3072;
/// Size of each SIGSTRUCT big integer (MODULUS, SIGNATURE, Q1, Q2) in bytes (§1.10).
pub const RSA_BYTES: usize = 384;
/// The only public exponent EINIT accepts (§1.10, §4.4 step 3).
pub const SIGSTRUCT_EXPONENT: u32 = 3;

/// DER DigestInfo prefix for SHA-256 (RFC 8017 §9.2 note 1).
const SHA256_DIGEST_INFO: [u8; 19] =
    [0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20];

/// The first 352 bytes of every valid EMSA-PKCS1-v1_5 / SHA-256 encoding for a 3072-bit
/// key: `00 01 FF×330 00 ‖ 30 31 30 0d 06 09 60 86 48 01 65 03 04 02 01 05 00 04 20`.
///
/// EINIT saves this as the enclave's PADDING, and every key derivation binds it (§1.10,
/// §4.4 step 5, §11.2).
pub const PKCS1_SHA256_PADDING: [u8; 352] = {
    let mut p = [0xFFu8; 352];
    p[0] = 0x00;
    p[1] = 0x01;
    p[332] = 0x00;
    let mut i = 0;
    while i < SHA256_DIGEST_INFO.len() {
        p[333 + i] = SHA256_DIGEST_INFO[i];
        i += 1;
    }
    p
};

/// Which PEM encoding [`SigningKey::from_pem`] tried to decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PemFormat {
    /// PKCS#1 `RSA PRIVATE KEY`.
    Pkcs1,
    /// PKCS#8 `PRIVATE KEY`.
    Pkcs8,
}

/// Errors about signing keys and signing (§1.10).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The modulus is not 3072 bits.
    #[error("RSA modulus has {bits} bits; SIGSTRUCT needs a 3072-bit key (openssl genrsa -3 3072)")]
    WrongModulusSize {
        /// Actual modulus size in bits.
        bits: u64,
    },
    /// The public exponent is not 3.
    #[error("RSA public exponent is {exponent}; SIGSTRUCT needs e = 3 (openssl genrsa -3 3072)")]
    WrongExponent {
        /// Actual exponent (saturated at `u64::MAX`).
        exponent: u64,
    },
    /// The text has no PEM block with a private-key label this crate reads.
    #[error("no `RSA PRIVATE KEY` (PKCS#1) or `PRIVATE KEY` (PKCS#8) PEM block found (label: {label:?})")]
    UnsupportedPem {
        /// The label of the first PEM block, if there is one.
        label: Option<String>,
    },
    /// A PKCS#1 or PKCS#8 PEM block did not decode to an RSA private key.
    #[error("{format:?} PEM does not hold a valid RSA private key")]
    BadPem {
        /// The encoding that was tried.
        format: PemFormat,
        /// The decoder's error ([`rsa::Error::Pkcs1`] or [`rsa::Error::Pkcs8`]).
        #[source]
        source: rsa::Error,
    },
    /// Encoding the key as PEM failed.
    #[error("could not encode the key as {format:?} PEM")]
    Encode {
        /// The encoding that was tried.
        format: PemFormat,
        /// The encoder's error ([`rsa::Error::Pkcs1`] or [`rsa::Error::Pkcs8`]).
        #[source]
        source: rsa::Error,
    },
    /// An RSA operation (key generation or the private-key operation) failed.
    #[error("RSA operation failed")]
    Rsa(#[source] rsa::Error),
}

/// Result alias for [`KeyError`].
pub type Result<T, E = KeyError> = core::result::Result<T, E>;

/// Why EINIT's signature check (§4.4 step 5) rejects a SIGSTRUCT. Every variant maps to
/// SGX_INVALID_SIGNATURE except [`WrongExponent`](Self::WrongExponent), which EINIT's
/// header check (step 3) reports as SGX_INVALID_SIG_STRUCT first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// EXPONENT is not 3.
    #[error("SIGSTRUCT.EXPONENT is {exponent}, must be 3")]
    WrongExponent {
        /// The stored exponent.
        exponent: u32,
    },
    /// MODULUS is not a full 3072-bit number (top bit clear).
    #[error("SIGSTRUCT.MODULUS has {bits} significant bits, must have 3072")]
    WrongModulusSize {
        /// Significant bits of the stored modulus.
        bits: u64,
    },
    /// SIGNATURE ≥ MODULUS.
    #[error("SIGSTRUCT.SIGNATURE is not below the modulus")]
    SignatureOutOfRange,
    /// Q1 ≠ ⌊s²/n⌋.
    #[error("SIGSTRUCT.Q1 does not match the signature and modulus")]
    Q1Mismatch,
    /// Q2 ≠ ⌊(s³ − Q1·s·n)/n⌋.
    #[error("SIGSTRUCT.Q2 does not match the signature and modulus")]
    Q2Mismatch,
    /// `s³ mod n` does not start with the PKCS#1 v1.5 / SHA-256 prefix.
    #[error("decrypted signature has bad PKCS#1 v1.5 padding")]
    BadPadding,
    /// `s³ mod n` carries another digest than SHA-256 of the signed bytes.
    #[error("signature does not cover this SIGSTRUCT (digest mismatch)")]
    DigestMismatch,
}

/// What a successful [`verify`] yields for EINIT's commit (§4.4 steps 5, 10, 15).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedSigstruct {
    /// MRSIGNER = SHA-256 of MODULUS as stored.
    pub mrsigner: [u8; 32],
    /// PADDING = the first 352 bytes of EM (always [`PKCS1_SHA256_PADDING`]).
    pub padding: [u8; 352],
}

/// MRSIGNER: SHA-256 over the 384 MODULUS bytes exactly as stored, little-endian
/// (§1.10, §4.4 step 10, §9.1).
#[must_use]
pub fn mrsigner(modulus_le: &[u8; RSA_BYTES]) -> [u8; 32] {
    Sha256::digest(modulus_le).into()
}

/// `x` as a `RSA_BYTES`-byte little-endian integer. `x` must be below 2³⁰⁷².
fn to_le_384(x: &BigUint) -> [u8; RSA_BYTES] {
    let bytes = x.to_bytes_le();
    debug_assert!(bytes.len() <= RSA_BYTES, "value exceeds 3072 bits");
    let mut out = [0u8; RSA_BYTES];
    out[..bytes.len()].copy_from_slice(&bytes);
    out
}

/// `x` as a `RSA_BYTES`-byte big-endian integer. `x` must be below 2³⁰⁷².
fn to_be_384(x: &BigUint) -> [u8; RSA_BYTES] {
    let bytes = x.to_bytes_be();
    debug_assert!(bytes.len() <= RSA_BYTES, "value exceeds 3072 bits");
    let mut out = [0u8; RSA_BYTES];
    out[RSA_BYTES - bytes.len()..].copy_from_slice(&bytes);
    out
}

/// `(Q1, Q2, EM)` for signature `s` and modulus `n` (§1.10):
/// `Q1 = ⌊s²/n⌋`, and since `s³ − Q1·s·n = s·(s² mod n)`, `Q2 = ⌊s·(s² mod n)/n⌋` and
/// `EM = s·(s² mod n) mod n = s³ mod n`.
fn quotients(s: &BigUint, n: &BigUint) -> (BigUint, BigUint, BigUint) {
    let s2 = s * s;
    let q1 = &s2 / n;
    let t = s * (s2 % n);
    let q2 = &t / n;
    let em = t % n;
    (q1, q2, em)
}

/// The public half of a [`SigningKey`]: a 3072-bit modulus with e = 3.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PublicKey {
    modulus_le: [u8; RSA_BYTES],
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicKey").field("mrsigner", &Hex(&self.mrsigner())).finish_non_exhaustive()
    }
}

impl PublicKey {
    /// The modulus as SIGSTRUCT stores it (little-endian).
    #[must_use]
    pub fn modulus_le(&self) -> &[u8; RSA_BYTES] {
        &self.modulus_le
    }

    /// The public exponent (always 3).
    #[must_use]
    pub fn exponent(&self) -> u32 {
        SIGSTRUCT_EXPONENT
    }

    /// MRSIGNER of enclaves signed with this key.
    #[must_use]
    pub fn mrsigner(&self) -> [u8; 32] {
        mrsigner(&self.modulus_le)
    }
}

/// An enclave signing key: RSA-3072 with public exponent 3 (§1.10). Construction checks
/// both, so every `SigningKey` can sign a SIGSTRUCT. `Debug` shows only MRSIGNER.
#[derive(Clone)]
pub struct SigningKey {
    key: PrivateKey,
    modulus_le: [u8; RSA_BYTES],
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey").field("mrsigner", &Hex(&self.mrsigner())).finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Generates a fresh 3072-bit key with e = 3 from `rng` (deterministic given the RNG
    /// output). Slow: seconds, more in unoptimised builds.
    ///
    /// # Errors
    /// [`KeyError::Rsa`] if the RNG fails.
    pub fn generate<R: rand_core::CryptoRng + ?Sized>(rng: &mut R) -> Result<Self> {
        let key = PrivateKey::new_with_exp(rng, MODULUS_BITS as usize, BoxedUint::from(u64::from(SIGSTRUCT_EXPONENT)))
            .map_err(KeyError::Rsa)?;
        Self::from_rsa(key)
    }

    /// Wraps an RSA private key after checking it is 3072 bits with e = 3.
    ///
    /// # Errors
    /// [`KeyError::WrongModulusSize`], [`KeyError::WrongExponent`].
    pub fn from_rsa(key: PrivateKey) -> Result<Self> {
        let e = BigUint::from_bytes_be(&key.e_bytes());
        if e != BigUint::from(SIGSTRUCT_EXPONENT) {
            return Err(KeyError::WrongExponent { exponent: u64::try_from(&e).unwrap_or(u64::MAX) });
        }
        let n = BigUint::from_bytes_be(&key.n_bytes());
        if n.bits() != u64::from(MODULUS_BITS) {
            return Err(KeyError::WrongModulusSize { bits: n.bits() });
        }
        Ok(Self { modulus_le: to_le_384(&n), key })
    }

    /// Reads a PEM private key: PKCS#1 (`-----BEGIN RSA PRIVATE KEY-----`) or unencrypted
    /// PKCS#8 (`-----BEGIN PRIVATE KEY-----`), as `openssl genrsa -3 3072` writes.
    ///
    /// # Errors
    /// [`KeyError::UnsupportedPem`] for other or missing labels, [`KeyError::BadPem`] if
    /// the block does not decode, and the checks of [`from_rsa`](Self::from_rsa).
    pub fn from_pem(pem: &str) -> Result<Self> {
        let label = pem_label(pem);
        let key = match label {
            Some("RSA PRIVATE KEY") => PrivateKey::from_pkcs1_pem(pem)
                .map_err(|e| KeyError::BadPem { format: PemFormat::Pkcs1, source: rsa::Error::Pkcs1(e) })?,
            Some("PRIVATE KEY") => PrivateKey::from_pkcs8_pem(pem)
                .map_err(|e| KeyError::BadPem { format: PemFormat::Pkcs8, source: rsa::Error::Pkcs8(e) })?,
            other => {
                return Err(KeyError::UnsupportedPem { label: other.map(str::to_owned) });
            }
        };
        Self::from_rsa(key)
    }

    /// The key as PKCS#1 PEM (`RSA PRIVATE KEY`, LF line endings).
    ///
    /// # Errors
    /// [`KeyError::Encode`] if DER encoding fails.
    pub fn to_pkcs1_pem(&self) -> Result<String> {
        self.key
            .to_pkcs1_pem(LineEnding::LF)
            .map(|s| s.as_str().to_owned())
            .map_err(|e| KeyError::Encode { format: PemFormat::Pkcs1, source: rsa::Error::Pkcs1(e) })
    }

    /// The key as PKCS#8 PEM (`PRIVATE KEY`, LF line endings).
    ///
    /// # Errors
    /// [`KeyError::Encode`] if DER encoding fails.
    pub fn to_pkcs8_pem(&self) -> Result<String> {
        self.key
            .to_pkcs8_pem(LineEnding::LF)
            .map(|s| s.as_str().to_owned())
            .map_err(|e| KeyError::Encode { format: PemFormat::Pkcs8, source: rsa::Error::Pkcs8(e) })
    }

    /// The modulus as SIGSTRUCT stores it (little-endian).
    #[must_use]
    pub fn modulus_le(&self) -> [u8; RSA_BYTES] {
        self.modulus_le
    }

    /// MRSIGNER of enclaves signed with this key.
    #[must_use]
    pub fn mrsigner(&self) -> [u8; 32] {
        mrsigner(&self.modulus_le)
    }

    /// The public half.
    #[must_use]
    pub fn public_key(&self) -> PublicKey {
        PublicKey { modulus_le: self.modulus_le }
    }

    /// The wrapped RSA key.
    #[must_use]
    pub fn as_rsa(&self) -> &PrivateKey {
        &self.key
    }
}

/// The label of the first `-----BEGIN …-----` line, if any.
fn pem_label(pem: &str) -> Option<&str> {
    let start = pem.find("-----BEGIN ")? + "-----BEGIN ".len();
    let rest = &pem[start..];
    let end = rest.find("-----")?;
    Some(rest[..end].trim())
}

/// Signs a SIGSTRUCT as Intel's signing tools do (§1.10): sets MODULUS and EXPONENT = 3,
/// then SIGNATURE = RSASSA-PKCS1-v1_5-SHA256 over `sig.signed_message()` (bytes
/// [0,128) ‖ [900,1028), which do not include the fields written here), and Q1/Q2 — all
/// little-endian. Every other field must already hold its final value. Deterministic.
///
/// # Errors
/// [`KeyError::Rsa`] if the private-key operation fails.
pub fn sign(sig: &mut Sigstruct, key: &SigningKey) -> Result<()> {
    sig.modulus = key.modulus_le;
    sig.exponent = SIGSTRUCT_EXPONENT;
    let msg = sig.signed_message();
    let s_be = key.key.pkcs1v15_sign::<Sha256>(&msg).map_err(KeyError::Rsa)?;
    let s = BigUint::from_bytes_be(&s_be);
    let n = BigUint::from_bytes_le(&key.modulus_le);
    let (q1, q2, _) = quotients(&s, &n);
    sig.signature = to_le_384(&s);
    sig.q1 = to_le_384(&q1);
    sig.q2 = to_le_384(&q2);
    Ok(())
}

/// EINIT's signature check (§1.10, §4.4 steps 3 (exponent) and 5): EXPONENT = 3,
/// MODULUS exactly 3072 bits, SIGNATURE < MODULUS, Q1 and Q2 equal to the values derived
/// from SIGNATURE and MODULUS, and `EM = s³ mod n` (big-endian) equal to
/// [`PKCS1_SHA256_PADDING`] ‖ SHA-256(`signed_message()`).
///
/// Does not check HEADER, VENDOR, reserved fields or ENCLAVEHASH; those are EINIT's other
/// steps.
///
/// # Errors
/// The first failing check, as a [`SignatureError`].
pub fn verify(sig: &Sigstruct) -> core::result::Result<VerifiedSigstruct, SignatureError> {
    if sig.exponent != SIGSTRUCT_EXPONENT {
        return Err(SignatureError::WrongExponent { exponent: sig.exponent });
    }
    let n = BigUint::from_bytes_le(&sig.modulus);
    if n.bits() != u64::from(MODULUS_BITS) {
        return Err(SignatureError::WrongModulusSize { bits: n.bits() });
    }
    let s = BigUint::from_bytes_le(&sig.signature);
    if s >= n {
        return Err(SignatureError::SignatureOutOfRange);
    }
    let (q1, q2, em) = quotients(&s, &n);
    if to_le_384(&q1) != sig.q1 {
        return Err(SignatureError::Q1Mismatch);
    }
    if to_le_384(&q2) != sig.q2 {
        return Err(SignatureError::Q2Mismatch);
    }
    let em = to_be_384(&em);
    let (prefix, digest) = em.split_at(352);
    if prefix != PKCS1_SHA256_PADDING {
        return Err(SignatureError::BadPadding);
    }
    if digest != Sha256::digest(sig.signed_message()).as_slice() {
        return Err(SignatureError::DigestMismatch);
    }
    let mut padding = [0u8; 352];
    padding.copy_from_slice(prefix);
    Ok(VerifiedSigstruct { mrsigner: mrsigner(&sig.modulus), padding })
}

/// Lower-case hex for `Debug` output.
struct Hex<'a>(&'a [u8]);

impl fmt::Debug for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_constant_layout() {
        let p = PKCS1_SHA256_PADDING;
        assert_eq!(&p[..2], &[0x00, 0x01]);
        assert!(p[2..332].iter().all(|&b| b == 0xFF));
        assert_eq!(p[332], 0x00);
        assert_eq!(&p[333..], &SHA256_DIGEST_INFO);
    }

    #[test]
    fn quotient_identities() {
        // Small numbers: s = 10, n = 7: s² = 100 = 14·7 + 2; s·2 = 20 = 2·7 + 6.
        let (q1, q2, em) = quotients(&BigUint::from(10u32), &BigUint::from(7u32));
        assert_eq!(q1, BigUint::from(14u32));
        assert_eq!(q2, BigUint::from(2u32));
        assert_eq!(em, BigUint::from(1000u32 % 7));
        // Q2 = ⌊(s³ − Q1·s·n)/n⌋ literally.
        assert_eq!((1000u32 - 14 * 10 * 7) / 7, 2);
    }

    #[test]
    fn pem_labels() {
        assert_eq!(pem_label("-----BEGIN RSA PRIVATE KEY-----\nabc"), Some("RSA PRIVATE KEY"));
        assert_eq!(pem_label("junk\n-----BEGIN PRIVATE KEY-----\n"), Some("PRIVATE KEY"));
        assert_eq!(pem_label("no pem here"), None);
    }
}
