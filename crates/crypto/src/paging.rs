//! EWB/ELDU page sealing: AES-128-GCM over the 4 KiB page with the 128-byte MAC header
//! as additional data (architecture spec §4.10 steps 7–8, §4.11 steps 4–6, §11.4).

use aes_gcm::aead::AeadInOut;
use aes_gcm::{Aes128Gcm, KeyInit, Nonce, Tag};

/// Size of the MAC header that EWB authenticates and ELDU rebuilds (§4.10 step 7).
pub const MAC_HEADER_SIZE: usize = 128;
/// Size of an EPC page.
pub const PAGE_SIZE: usize = 4096;

/// Builds the EWB/ELDU MAC header (§4.10 step 7, **\[DESIGN\]** layout):
/// `EID u64 @0 ‖ SECINFO[64] @8 (FLAGS u64, then 56 zero bytes) ‖ LINADDR u64 @72 ‖
/// PCMD.RESERVED[40] @80 ‖ zero @120..128`.
///
/// `eid` is 0 for SECS and VA pages; `secinfo_flags` holds only the PT, RWX, PENDING,
/// MODIFIED and PR fields of the EPCM entry; `pcmd_reserved` is the PCMD's reserved area
/// (zero when EWB writes it, copied back by ELDU so tampering breaks the MAC).
#[must_use]
pub fn build_mac_header(eid: u64, secinfo_flags: u64, linaddr: u64, pcmd_reserved: &[u8; 40]) -> [u8; MAC_HEADER_SIZE] {
    let mut h = [0u8; MAC_HEADER_SIZE];
    h[0..8].copy_from_slice(&eid.to_le_bytes());
    h[8..16].copy_from_slice(&secinfo_flags.to_le_bytes());
    h[72..80].copy_from_slice(&linaddr.to_le_bytes());
    h[80..120].copy_from_slice(pcmd_reserved);
    h
}

/// The paging key CR_BASE_PK with its AES-GCM key schedule already expanded (§11.4), so
/// sealing or opening a page costs only the GCM pass.
///
/// A new key per boot / "power cycle" makes every page evicted before it fail to load
/// with SGX_MAC_COMPARE_FAIL, as on hardware. `Debug` does not print the key.
#[derive(Clone)]
pub struct PagingKey {
    cipher: Aes128Gcm,
}

impl core::fmt::Debug for PagingKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("PagingKey(..)")
    }
}

impl PagingKey {
    /// Expands a 128-bit paging key.
    #[must_use]
    pub fn new(key: &[u8; 16]) -> Self {
        Self { cipher: Aes128Gcm::new(&(*key).into()) }
    }

    /// Draws a fresh random paging key from `rng` (a "power cycle", §11.4).
    pub fn random<R: rand_core::CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut key = [0u8; 16];
        rng.fill_bytes(&mut key);
        Self::new(&key)
    }
}

impl From<[u8; 16]> for PagingKey {
    fn from(key: [u8; 16]) -> Self {
        Self::new(&key)
    }
}

/// The page's MAC did not verify: ELDU's SGX_MAC_COMPARE_FAIL (§4.11 step 6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("paged-out EPC page failed MAC verification (SGX_MAC_COMPARE_FAIL)")]
pub struct MacMismatch;

/// The GCM nonce for a page version: the version as 8 little-endian bytes ‖ 4 zero bytes
/// (§4.10 step 8, **\[DESIGN\]**).
fn nonce(version: u64) -> Nonce<aes_gcm::aead::consts::U12> {
    let mut n = [0u8; 12];
    n[..8].copy_from_slice(&version.to_le_bytes());
    n.into()
}

/// EWB's encryption: seals `page` in place with AES-128-GCM under `key`, nonce from
/// `version`, `header` as additional data, and returns the 16-byte tag for PCMD.MAC
/// (§4.10 step 8).
///
/// `version` must be unique per key (EWB takes it from a never-repeating non-zero
/// counter, §11.4); reusing one breaks GCM's confidentiality, not this function.
#[must_use = "the tag is needed to load the page back"]
pub fn seal_page(
    key: &PagingKey,
    version: u64,
    header: &[u8; MAC_HEADER_SIZE],
    page: &mut [u8; PAGE_SIZE],
) -> [u8; 16] {
    match key.cipher.encrypt_inout_detached(&nonce(version), header, page.as_mut_slice().into()) {
        Ok(tag) => tag.into(),
        // AES-GCM only fails for messages or AAD beyond 2^36 bytes.
        Err(_) => unreachable!("4 KiB page and 128-byte header are within GCM limits"),
    }
}

/// ELDU's decryption: checks `tag` over the ciphertext in `page` and `header`, and on
/// success decrypts `page` in place (§4.11 step 6).
///
/// # Errors
/// [`MacMismatch`] if the ciphertext, the header, the version or the tag differ from
/// what [`seal_page`] used. On error the content of `page` is unspecified (the current
/// implementation leaves the ciphertext untouched, but callers must not rely on that:
/// ELDU leaves its destination page invalid anyway).
pub fn open_page(
    key: &PagingKey,
    version: u64,
    header: &[u8; MAC_HEADER_SIZE],
    page: &mut [u8; PAGE_SIZE],
    tag: &[u8; 16],
) -> Result<(), MacMismatch> {
    let tag: Tag = (*tag).into();
    key.cipher
        .decrypt_inout_detached(&nonce(version), header, page.as_mut_slice().into(), &tag)
        .map_err(|_| MacMismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 16] = *b"cr_base_pk......";

    fn sample_page() -> [u8; PAGE_SIZE] {
        let mut p = [0u8; PAGE_SIZE];
        for (i, b) in p.iter_mut().enumerate() {
            *b = (i * 7 + i / 256) as u8;
        }
        p
    }

    fn header() -> [u8; MAC_HEADER_SIZE] {
        build_mac_header(0x1122_3344, 0x203, 0x7f00_1234_5000, &[0; 40])
    }

    #[test]
    fn header_layout() {
        let mut rsvd = [0u8; 40];
        rsvd[0] = 0xAA;
        rsvd[39] = 0xBB;
        let h = build_mac_header(0x0102_0304_0506_0708, 0x0000_0000_0001_0203, 0xdead_b000, &rsvd);
        assert_eq!(&h[0..8], &0x0102_0304_0506_0708u64.to_le_bytes());
        assert_eq!(&h[8..16], &0x0001_0203u64.to_le_bytes());
        assert!(h[16..72].iter().all(|&b| b == 0));
        assert_eq!(&h[72..80], &0xdead_b000u64.to_le_bytes());
        assert_eq!(&h[80..120], &rsvd);
        assert!(h[120..].iter().all(|&b| b == 0));
    }

    #[test]
    fn round_trip_is_bit_identical() {
        let key = PagingKey::new(&KEY);
        let plain = sample_page();
        let mut page = plain;
        let tag = seal_page(&key, 42, &header(), &mut page);
        assert_ne!(page, plain, "EWB output must be ciphertext");
        open_page(&key, 42, &header(), &mut page, &tag).unwrap();
        assert_eq!(page, plain);
    }

    #[test]
    fn nonce_is_version_le_then_zeros() {
        // Same key/nonce/AAD through the aes-gcm API directly must agree.
        use aes_gcm::aead::AeadInOut;
        let cipher = Aes128Gcm::new(&KEY.into());
        let mut n = [0u8; 12];
        n[..8].copy_from_slice(&0x0102_0304_0506_0708u64.to_le_bytes());
        let mut a = sample_page();
        let mut b = a;
        let ta = cipher.encrypt_inout_detached(&n.into(), &header(), a.as_mut_slice().into()).unwrap();
        let tb = seal_page(&PagingKey::new(&KEY), 0x0102_0304_0506_0708, &header(), &mut b);
        assert_eq!(a, b);
        assert_eq!(<[u8; 16]>::from(ta), tb);
    }

    fn sealed() -> (PagingKey, [u8; PAGE_SIZE], [u8; 16]) {
        let key = PagingKey::from(KEY);
        let mut page = sample_page();
        let tag = seal_page(&key, 7, &header(), &mut page);
        (key, page, tag)
    }

    #[test]
    fn tampered_ciphertext_fails() {
        let (key, page, tag) = sealed();
        for pos in [0, 1, 2047, 4095] {
            let mut p = page;
            p[pos] ^= 0x01;
            assert_eq!(open_page(&key, 7, &header(), &mut p, &tag), Err(MacMismatch));
        }
    }

    #[test]
    fn tampered_tag_fails() {
        let (key, page, tag) = sealed();
        for pos in [0, 15] {
            let mut t = tag;
            t[pos] ^= 0x80;
            let mut p = page;
            assert_eq!(open_page(&key, 7, &header(), &mut p, &t), Err(MacMismatch));
        }
    }

    #[test]
    fn tampered_header_fields_fail() {
        let (key, page, tag) = sealed();
        let mut rsvd = [0u8; 40];
        rsvd[17] = 1;
        let variants = [
            build_mac_header(0x1122_3345, 0x203, 0x7f00_1234_5000, &[0; 40]),
            build_mac_header(0x1122_3344, 0x201, 0x7f00_1234_5000, &[0; 40]),
            build_mac_header(0x1122_3344, 0x203, 0x7f00_1234_6000, &[0; 40]),
            build_mac_header(0x1122_3344, 0x203, 0x7f00_1234_5000, &rsvd),
        ];
        for h in variants {
            let mut p = page;
            assert_eq!(open_page(&key, 7, &h, &mut p, &tag), Err(MacMismatch));
        }
        for pos in [16, 71, 120, 127] {
            let mut h = header();
            h[pos] ^= 1;
            let mut p = page;
            assert_eq!(open_page(&key, 7, &h, &mut p, &tag), Err(MacMismatch));
        }
    }

    #[test]
    fn wrong_version_or_key_fails() {
        let (key, page, tag) = sealed();
        for v in [6, 8, 7 | (1 << 63)] {
            let mut p = page;
            assert_eq!(open_page(&key, v, &header(), &mut p, &tag), Err(MacMismatch));
        }
        let mut p = page;
        let other = PagingKey::new(&[0; 16]);
        assert_eq!(open_page(&other, 7, &header(), &mut p, &tag), Err(MacMismatch));
    }

    #[test]
    fn debug_hides_key() {
        assert_eq!(format!("{:?}", PagingKey::new(&KEY)), "PagingKey(..)");
    }
}
