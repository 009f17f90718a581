//! AES-128-CMAC (RFC 4493), the MAC of REPORT and EINITTOKEN and the PRF of our key
//! derivation (architecture spec §11.1, §11.2, §11.3, §5.5).

use ::cmac::{Cmac, KeyInit, Mac};
use aes::Aes128;

/// AES-128-CMAC of `data` under `key` (RFC 4493; spec §11.1).
///
/// ```
/// let key = [0x2b, 0x7e, 0x15, 0x16, 0x28, 0xae, 0xd2, 0xa6,
///            0xab, 0xf7, 0x15, 0x88, 0x09, 0xcf, 0x4f, 0x3c];
/// assert_eq!(sgxemu_crypto::aes128_cmac(&key, b"")[..4], [0xbb, 0x1d, 0x69, 0x29]);
/// ```
#[must_use]
pub fn aes128_cmac(key: &[u8; 16], data: &[u8]) -> [u8; 16] {
    let mut mac = <Cmac<Aes128> as KeyInit>::new(&(*key).into());
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// Checks `mac` against AES-128-CMAC(`key`, `data`) in constant time (for REPORT /
/// EINITTOKEN MAC checks, §4.4 step 14).
#[must_use]
pub fn aes128_cmac_verify(key: &[u8; 16], data: &[u8], mac: &[u8; 16]) -> bool {
    let mut m = <Cmac<Aes128> as KeyInit>::new(&(*key).into());
    m.update(data);
    m.verify(&(*mac).into()).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 16] =
        [0x2b, 0x7e, 0x15, 0x16, 0x28, 0xae, 0xd2, 0xa6, 0xab, 0xf7, 0x15, 0x88, 0x09, 0xcf, 0x4f, 0x3c];

    fn hex16(s: &str) -> [u8; 16] {
        let mut out = [0u8; 16];
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
        }
        out
    }

    #[test]
    fn rfc4493_empty() {
        assert_eq!(aes128_cmac(&KEY, b""), hex16("bb1d6929e95937287fa37d129b756746"));
    }

    #[test]
    fn rfc4493_one_block() {
        let msg = hex16("6bc1bee22e409f96e93d7e117393172a");
        assert_eq!(aes128_cmac(&KEY, &msg), hex16("070a16b46b4d4144f79bdd9dd04a287c"));
    }

    #[test]
    fn rfc4493_forty_and_sixty_four_bytes() {
        let m: Vec<u8> = [
            "6bc1bee22e409f96e93d7e117393172a",
            "ae2d8a571e03ac9c9eb76fac45af8e51",
            "30c81c46a35ce411e5fbc1191a0a52ef",
            "f69f2445df4f9b17ad2b417be66c3710",
        ]
        .iter()
        .flat_map(|s| hex16(s))
        .collect();
        assert_eq!(aes128_cmac(&KEY, &m[..40]), hex16("dfa66747de9ae63030ca32611497c827"));
        assert_eq!(aes128_cmac(&KEY, &m), hex16("51f0bebf7e3b9d92fc49741779363cfe"));
    }

    #[test]
    fn verify_accepts_good_and_rejects_bad() {
        let mac = aes128_cmac(&KEY, b"report body");
        assert!(aes128_cmac_verify(&KEY, b"report body", &mac));
        let mut bad = mac;
        bad[15] ^= 1;
        assert!(!aes128_cmac_verify(&KEY, b"report body", &bad));
        assert!(!aes128_cmac_verify(&KEY, b"report bodY", &mac));
    }
}
