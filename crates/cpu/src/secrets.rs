//! Per-platform secrets: the fuse-key analogue, the paging key and the values EREPORT and
//! EGETKEY mix in (spec §0.1, §11).

/// The secrets of one emulated platform.
///
/// A fresh random set models a power cycle: pages evicted before it no longer decrypt, and
/// keys change. Supplying the same set again keeps sealed data readable across emulator runs.
#[derive(Clone, PartialEq, Eq)]
pub struct PlatformSecrets {
    /// Root key every EGETKEY/EREPORT key is derived from (spec §11.2).
    pub root_key: [u8; 16],
    /// CR_BASE_PK: the EWB/ELDU AES-GCM key.
    pub paging_key: [u8; 16],
    /// CR_REPORT_KEYID, copied into every REPORT.
    pub report_keyid: [u8; 32],
    /// CSR_SGX_OWNEREPOCH.
    pub owner_epoch: [u8; 16],
    /// CR_SEAL_FUSES.
    pub seal_fuses: [u8; 16],
    /// CR_CPUSVN.
    pub cpusvn: [u8; 16],
}

impl std::fmt::Debug for PlatformSecrets {
    // Secrets never reach logs; the CPUSVN is public (it is in every REPORT).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlatformSecrets").field("cpusvn", &self.cpusvn).finish_non_exhaustive()
    }
}

/// The operating system could not supply randomness for a new platform.
#[derive(Debug, thiserror::Error)]
#[error("no randomness available for the platform secrets: {0}")]
pub struct RandomnessError(String);

impl PlatformSecrets {
    /// Fresh secrets from the operating system's random source.
    pub fn random() -> Result<Self, RandomnessError> {
        let mut seed = [0u8; 16];
        getrandom::fill(&mut seed).map_err(|e| RandomnessError(e.to_string()))?;
        Ok(Self::from_seed(seed))
    }

    /// Deterministic secrets expanded from a 16-byte seed (tests, reproducible platforms).
    pub fn from_seed(seed: [u8; 16]) -> Self {
        let expand = |label: &[u8]| sgxemu_crypto::aes128_cmac(&seed, label);
        let wide = |label: &[u8]| {
            let mut out = [0u8; 32];
            out[..16].copy_from_slice(&expand(&[label, b".0"].concat()));
            out[16..].copy_from_slice(&expand(&[label, b".1"].concat()));
            out
        };
        PlatformSecrets {
            root_key: expand(b"sgxemu root key"),
            paging_key: expand(b"sgxemu paging key"),
            report_keyid: wide(b"sgxemu report keyid"),
            owner_epoch: expand(b"sgxemu owner epoch"),
            seal_fuses: expand(b"sgxemu seal fuses"),
            // A plausible, fixed CPUSVN; keys requested above it are refused.
            cpusvn: [2, 2, 2, 2, 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_secrets_are_deterministic_and_distinct() {
        let a = PlatformSecrets::from_seed([1; 16]);
        assert_eq!(a, PlatformSecrets::from_seed([1; 16]));
        assert_ne!(a.root_key, PlatformSecrets::from_seed([2; 16]).root_key);
        assert_ne!(a.root_key, a.paging_key);
        assert_ne!(a.report_keyid[..16], a.report_keyid[16..]);
    }

    #[test]
    fn random_secrets_differ() {
        let a = PlatformSecrets::random().unwrap();
        let b = PlatformSecrets::random().unwrap();
        assert_ne!(a.root_key, b.root_key);
    }

    #[test]
    fn debug_does_not_print_keys() {
        let text = format!("{:?}", PlatformSecrets::from_seed([7; 16]));
        assert!(!text.contains("root_key"));
    }
}
