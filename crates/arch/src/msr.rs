//! Model-specific registers for SGX enablement and launch control (spec §10.1, §10.3;
//! kernel `asm/msr-index.h`, KVM `vmx/sgx.c`).

/// IA32_FEATURE_CONTROL.
pub const IA32_FEATURE_CONTROL: u32 = 0x3A;

/// IA32_FEATURE_CONTROL bit 0: locked (further writes #GP until reset).
pub const FEATURE_CONTROL_LOCK: u64 = 1 << 0;

/// IA32_FEATURE_CONTROL bit 17: SGX launch control enabled (LE hash MSRs writable).
pub const FEATURE_CONTROL_SGX_LC_ENABLE: u64 = 1 << 17;

/// IA32_FEATURE_CONTROL bit 18: SGX enabled. ENCLS/ENCLU need LOCK and SGX_ENABLE.
pub const FEATURE_CONTROL_SGX_ENABLE: u64 = 1 << 18;

/// IA32_SGXLEPUBKEYHASH0: digest bytes 0..8 as a little-endian u64.
pub const IA32_SGXLEPUBKEYHASH0: u32 = 0x8C;
/// IA32_SGXLEPUBKEYHASH1: digest bytes 8..16.
pub const IA32_SGXLEPUBKEYHASH1: u32 = 0x8D;
/// IA32_SGXLEPUBKEYHASH2: digest bytes 16..24.
pub const IA32_SGXLEPUBKEYHASH2: u32 = 0x8E;
/// IA32_SGXLEPUBKEYHASH3: digest bytes 24..32.
pub const IA32_SGXLEPUBKEYHASH3: u32 = 0x8F;

/// The four LE public-key hash MSRs, in digest order.
pub const IA32_SGXLEPUBKEYHASH: [u32; 4] =
    [IA32_SGXLEPUBKEYHASH0, IA32_SGXLEPUBKEYHASH1, IA32_SGXLEPUBKEYHASH2, IA32_SGXLEPUBKEYHASH3];

/// Reset value of IA32_SGXLEPUBKEYHASH0..3 (Intel's launch-enclave key hash), MSR 0x8C first.
pub const INTEL_LE_PUBKEY_HASH: [u64; 4] =
    [0xa605_3e05_1270_b7ac, 0x6cfb_e8ba_8b3b_413d, 0xc491_6d99_f2b3_735d, 0xd4f8_c059_09f9_bb3b];

/// The 32-byte digest held by four LE-hash MSR values (each a little-endian u64).
#[must_use]
pub fn le_pubkey_hash_bytes(msrs: [u64; 4]) -> [u8; 32] {
    let mut digest = [0_u8; 32];
    for (chunk, value) in digest.chunks_exact_mut(8).zip(msrs) {
        chunk.copy_from_slice(&value.to_le_bytes());
    }
    digest
}

/// The four LE-hash MSR values that hold a 32-byte digest (e.g. an MRSIGNER).
#[must_use]
pub fn le_pubkey_hash_msrs(digest: &[u8; 32]) -> [u64; 4] {
    let mut msrs = [0_u64; 4];
    for (value, chunk) in msrs.iter_mut().zip(digest.chunks_exact(8)) {
        let mut word = [0_u8; 8];
        word.copy_from_slice(chunk);
        *value = u64::from_le_bytes(word);
    }
    msrs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msr_numbers() {
        assert_eq!(IA32_SGXLEPUBKEYHASH, [0x8C, 0x8D, 0x8E, 0x8F]);
        assert_eq!(IA32_FEATURE_CONTROL, 0x3A);
        assert_eq!(FEATURE_CONTROL_SGX_LC_ENABLE | FEATURE_CONTROL_SGX_ENABLE | FEATURE_CONTROL_LOCK, 0x6_0001);
    }

    #[test]
    fn digest_round_trip() {
        let bytes = le_pubkey_hash_bytes(INTEL_LE_PUBKEY_HASH);
        assert_eq!(&bytes[..8], &[0xac, 0xb7, 0x70, 0x12, 0x05, 0x3e, 0x05, 0xa6]);
        assert_eq!(le_pubkey_hash_msrs(&bytes), INTEL_LE_PUBKEY_HASH);
    }
}
