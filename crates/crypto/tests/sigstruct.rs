//! SIGSTRUCT signing and EINIT's signature check against the spec (§1.10, §4.4 step 5),
//! an independently built vector (`data/make-vector.py`: openssl + Python integers),
//! and single-bit tampering everywhere the check covers.

use sgxemu_arch::{FromBytes, IntoBytes, Sigstruct};
use sgxemu_crypto::sigstruct::PemFormat;
use sgxemu_crypto::{KeyError, PKCS1_SHA256_PADDING, SignatureError, SigningKey, mrsigner, sign, verify};
use sha2::{Digest, Sha256};

const KEY_PKCS8: &str = include_str!("data/test-key.pem");
const KEY_PKCS1: &str = include_str!("data/test-key-pkcs1.pem");
const VECTOR_HEX: &str = include_str!("data/sigstruct-vector.hex");
/// SHA-256 of test-key.pem's modulus, little-endian (printed by make-vector.py).
const VECTOR_MRSIGNER: &str = "0358a1f034d9dd9a4e9948a757dde41b3d77c0fc51e94e86546719d277fa7b58";

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

fn test_key() -> SigningKey {
    SigningKey::from_pem(KEY_PKCS8).unwrap()
}

fn vector() -> Sigstruct {
    Sigstruct::read_from_bytes(&hex(VECTOR_HEX)).unwrap()
}

/// A SIGSTRUCT with every signed field non-trivial, signed with the test key.
fn signed() -> Sigstruct {
    let mut s = Sigstruct::new_unsigned();
    s.vendor = 0x8086;
    s.date = 0x2025_0101;
    s.swdefined = 0xCAFE;
    s.miscselect = 1;
    s.miscmask = !0;
    s.enclavehash = [0x5A; 32];
    s.isvprodid = 9;
    s.isvsvn = 3;
    {
        let b = s.as_mut_bytes();
        b[928] = 0x04; // ATTRIBUTES.FLAGS = MODE64BIT
        b[936] = 0x03; // ATTRIBUTES.XFRM = x87|SSE
        b[944..960].fill(0xFF); // ATTRIBUTEMASK
    }
    sign(&mut s, &test_key()).unwrap();
    s
}

#[test]
fn sign_then_verify() {
    let key = test_key();
    let s = signed();
    assert_eq!(s.modulus, key.modulus_le());
    assert_eq!(s.exponent, 3);
    let v = verify(&s).unwrap();
    assert_eq!(v.mrsigner, <[u8; 32]>::from(Sha256::digest(s.modulus)));
    assert_eq!(v.mrsigner, key.mrsigner());
    assert_eq!(v.mrsigner, mrsigner(&key.modulus_le()));
    assert_eq!(v.mrsigner, key.public_key().mrsigner());
    assert_eq!(v.padding, PKCS1_SHA256_PADDING);
}

#[test]
fn signing_is_deterministic() {
    assert_eq!(signed(), signed());
}

#[test]
fn independent_vector_verifies() {
    let v = verify(&vector()).unwrap();
    assert_eq!(v.mrsigner.to_vec(), hex(VECTOR_MRSIGNER));
    assert_eq!(v.padding, PKCS1_SHA256_PADDING);
}

#[test]
fn signing_reproduces_independent_vector() {
    let expected = vector();
    let mut s = expected;
    s.modulus = [0; 384];
    s.exponent = 0;
    s.signature = [0; 384];
    s.q1 = [0; 384];
    s.q2 = [0; 384];
    sign(&mut s, &test_key()).unwrap();
    assert_eq!(s.as_bytes(), expected.as_bytes());
}

#[test]
fn pkcs1_and_pkcs8_pem_give_the_same_key() {
    let a = SigningKey::from_pem(KEY_PKCS8).unwrap();
    let b = SigningKey::from_pem(KEY_PKCS1).unwrap();
    assert_eq!(a.modulus_le(), b.modulus_le());
    assert_eq!(a.mrsigner().to_vec(), hex(VECTOR_MRSIGNER));
}

#[test]
fn pem_round_trips() {
    let key = test_key();
    let p1 = key.to_pkcs1_pem().unwrap();
    assert!(p1.starts_with("-----BEGIN RSA PRIVATE KEY-----"));
    let p8 = key.to_pkcs8_pem().unwrap();
    assert!(p8.starts_with("-----BEGIN PRIVATE KEY-----"));
    for pem in [p1, p8] {
        assert_eq!(SigningKey::from_pem(&pem).unwrap().modulus_le(), key.modulus_le());
    }
}

#[test]
fn rejects_wrong_keys_and_bad_pem() {
    match SigningKey::from_pem(include_str!("data/wrong-size-2048.pem")) {
        Err(KeyError::WrongModulusSize { bits: 2048 }) => {}
        other => panic!("expected WrongModulusSize {{ bits: 2048 }}, got {other:?}"),
    }
    match SigningKey::from_pem(include_str!("data/wrong-exponent-65537.pem")) {
        Err(KeyError::WrongExponent { exponent: 65537 }) => {}
        other => panic!("expected WrongExponent {{ exponent: 65537 }}, got {other:?}"),
    }
    match SigningKey::from_pem("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n") {
        Err(KeyError::UnsupportedPem { label: Some(l) }) => assert_eq!(l, "PUBLIC KEY"),
        other => panic!("expected UnsupportedPem, got {other:?}"),
    }
    assert!(matches!(SigningKey::from_pem("not a key"), Err(KeyError::UnsupportedPem { label: None })));
    let garbled = KEY_PKCS1.replacen("MII", "MIA", 1);
    assert!(matches!(SigningKey::from_pem(&garbled), Err(KeyError::BadPem { format: PemFormat::Pkcs1, .. })));
    let garbled = KEY_PKCS8.replacen("MII", "MIA", 1);
    assert!(matches!(SigningKey::from_pem(&garbled), Err(KeyError::BadPem { format: PemFormat::Pkcs8, .. })));
}

#[test]
fn debug_does_not_leak_the_private_key() {
    let s = format!("{:?}", test_key());
    assert!(s.starts_with("SigningKey { mrsigner: 0358a1f0"), "{s}");
    assert!(s.len() < 120, "{s}");
}

/// Byte offsets to tamper with in `range`: a stride through it plus its first and last
/// bytes, each paired with a bit that varies along the range.
fn sample(range: core::ops::Range<usize>) -> Vec<(usize, u8)> {
    let mut v: Vec<(usize, u8)> = range.clone().step_by(11).map(|i| (i, 1 << (i % 8))).collect();
    for bit in 0..8 {
        v.push((range.start, 1 << bit));
        v.push((range.end - 1, 1 << bit));
    }
    v
}

fn assert_each_flip_fails(region: &str, range: core::ops::Range<usize>) {
    let good = signed();
    for (off, mask) in sample(range) {
        let mut s = good;
        s.as_mut_bytes()[off] ^= mask;
        assert!(verify(&s).is_err(), "{region}: flipping byte {off} mask {mask:#04x} still verifies");
    }
}

#[test]
fn flips_in_signed_range_1_fail() {
    assert_each_flip_fails("[0,128)", 0..128);
}

#[test]
fn flips_in_signed_range_2_fail() {
    assert_each_flip_fails("[900,1028)", 900..1028);
}

#[test]
fn flips_in_modulus_fail() {
    assert_each_flip_fails("MODULUS", 128..512);
}

#[test]
fn flips_in_signature_fail() {
    assert_each_flip_fails("SIGNATURE", 516..900);
}

#[test]
fn flips_in_q1_and_q2_fail() {
    let good = signed();
    for (off, mask) in sample(1040..1424) {
        let mut s = good;
        s.as_mut_bytes()[off] ^= mask;
        assert_eq!(verify(&s), Err(SignatureError::Q1Mismatch), "Q1 byte {off}");
    }
    for (off, mask) in sample(1424..1808) {
        let mut s = good;
        s.as_mut_bytes()[off] ^= mask;
        assert_eq!(verify(&s), Err(SignatureError::Q2Mismatch), "Q2 byte {off}");
    }
}

#[test]
fn digest_and_padding_failures_are_told_apart() {
    let mut s = signed();
    s.isvsvn ^= 1;
    assert_eq!(verify(&s), Err(SignatureError::DigestMismatch));
}

#[test]
fn bad_padding_is_reported() {
    // s = 2 with its true quotients (s² = 4 < n, so Q1 = Q2 = 0): EM = 8, not PKCS#1.
    let mut s = signed();
    s.signature = [0; 384];
    s.signature[0] = 2;
    s.q1 = [0; 384];
    s.q2 = [0; 384];
    assert_eq!(verify(&s), Err(SignatureError::BadPadding));
}

#[test]
fn unsigned_bytes_outside_the_check_do_not_matter() {
    // Bytes [1028,1040) (reserved4) are neither signed nor part of the RSA math; EINIT's
    // reserved-field check rejects them, not the signature check.
    let mut s = signed();
    s.reserved4 = [0xFF; 12];
    assert!(verify(&s).is_ok());
}

#[test]
fn exponent_other_than_3_fails() {
    for e in [0, 1, 2, 5, 17, 65537, u32::MAX] {
        let mut s = signed();
        s.exponent = e;
        assert_eq!(verify(&s), Err(SignatureError::WrongExponent { exponent: e }));
    }
}

#[test]
fn short_modulus_fails() {
    let mut s = signed();
    s.modulus[383] &= 0x7F;
    assert_eq!(verify(&s), Err(SignatureError::WrongModulusSize { bits: 3071 }));
    s.modulus = [0; 384];
    assert_eq!(verify(&s), Err(SignatureError::WrongModulusSize { bits: 0 }));
}

#[test]
fn signature_not_below_modulus_fails() {
    let good = signed();
    let mut s = good;
    s.signature = s.modulus;
    assert_eq!(verify(&s), Err(SignatureError::SignatureOutOfRange));
    // s + n: same residue, so without the range check EM would still verify.
    let mut s = good;
    let mut carry = 0u16;
    for i in 0..384 {
        let sum = u16::from(good.signature[i]) + u16::from(good.modulus[i]) + carry;
        s.signature[i] = sum as u8;
        carry = sum >> 8;
    }
    if carry == 0 {
        assert_eq!(verify(&s), Err(SignatureError::SignatureOutOfRange));
    }
    let mut s = good;
    s.signature = [0xFF; 384];
    assert_eq!(verify(&s), Err(SignatureError::SignatureOutOfRange));
}

#[test]
fn em_prefix_is_exactly_the_padding_constant() {
    let mut expected = vec![0x00, 0x01];
    expected.extend([0xFF; 330]);
    expected.push(0x00);
    expected.extend(hex("3031300d060960864801650304020105000420"));
    assert_eq!(expected, PKCS1_SHA256_PADDING.to_vec());
    assert_eq!(verify(&signed()).unwrap().padding.to_vec(), expected);
}

/// Deterministic test RNG: SHA-256 in counter mode.
struct CounterRng {
    seed: [u8; 32],
    counter: u64,
    buf: [u8; 32],
    used: usize,
}

impl CounterRng {
    fn new(seed: &[u8]) -> Self {
        Self { seed: Sha256::digest(seed).into(), counter: 0, buf: [0; 32], used: 32 }
    }
}

impl rand_core::TryRng for CounterRng {
    type Error = core::convert::Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        let mut b = [0; 4];
        self.try_fill_bytes(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        let mut b = [0; 8];
        self.try_fill_bytes(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        for d in dst {
            if self.used == 32 {
                let mut h = Sha256::new();
                h.update(self.seed);
                h.update(self.counter.to_le_bytes());
                self.buf = h.finalize().into();
                self.counter += 1;
                self.used = 0;
            }
            *d = self.buf[self.used];
            self.used += 1;
        }
        Ok(())
    }
}

impl rand_core::TryCryptoRng for CounterRng {}

#[test]
fn generated_key_signs_and_verifies() {
    let key = SigningKey::generate(&mut CounterRng::new(b"sgxemu keygen test")).unwrap();
    assert_eq!(key.modulus_le()[383] & 0x80, 0x80, "full 3072-bit modulus");
    let mut s = Sigstruct::new_unsigned();
    s.enclavehash = [1; 32];
    sign(&mut s, &key).unwrap();
    let v = verify(&s).unwrap();
    assert_eq!(v.mrsigner, key.mrsigner());
    // And it survives a PEM round trip.
    let again = SigningKey::from_pem(&key.to_pkcs8_pem().unwrap()).unwrap();
    assert_eq!(again.modulus_le(), key.modulus_le());
}
