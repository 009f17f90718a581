//! Key derivation as EREPORT, EGETKEY and EINIT's token check use it (spec §5.5, §5.6,
//! §11.2, §11.3): every key is AES-CMAC under the platform root key over all its
//! dependencies.

use sgxemu_arch::{Attributes, Einittoken, Keyname};
use sgxemu_crypto::{KeyDependencies, PKCS1_SHA256_PADDING, aes128_cmac, derive_key};

use crate::processor::Processor;

/// True if every component of `requested` is at most the platform's (spec §11.2: CPUSVN
/// compared as 16 independent byte components).
pub(crate) fn cpusvn_within(requested: &[u8; 16], current: &[u8; 16]) -> bool {
    requested.iter().zip(current).all(|(r, c)| r <= c)
}

/// The identity a REPORT key is bound to: the target enclave's.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ReportTarget<'a> {
    pub(crate) mrenclave: &'a [u8; 32],
    pub(crate) attributes: Attributes,
    pub(crate) miscselect: u32,
    pub(crate) configid: &'a [u8; 64],
    pub(crate) configsvn: u16,
}

impl Processor {
    fn derive(&self, deps: &KeyDependencies) -> [u8; 16] {
        derive_key(&self.secrets.root_key, deps)
    }

    /// The REPORT key of `target` for KEYID `keyid`: what EREPORT MACs with and what
    /// EGETKEY(REPORT) gives the target enclave.
    pub(crate) fn report_key(&self, target: ReportTarget<'_>, keyid: &[u8; 32]) -> [u8; 16] {
        self.derive(&KeyDependencies {
            keyname: Keyname::Report as u16,
            ownerepoch: self.secrets.owner_epoch,
            attributes: attributes_bytes(target.attributes),
            mrenclave: *target.mrenclave,
            miscselect: target.miscselect,
            configid: *target.configid,
            configsvn: target.configsvn,
            keyid: *keyid,
            seal_key_fuses: self.secrets.seal_fuses,
            cpusvn: self.secrets.cpusvn,
            padding: PKCS1_SHA256_PADDING,
            ..KeyDependencies::default()
        })
    }

    /// The EINITTOKEN MAC EINIT expects (spec §11.3), keyed by the LP's LEPUBKEYHASH MSRs.
    pub(crate) fn einittoken_mac(&self, lepubkeyhash: &[u64; 4], token: &Einittoken) -> [u8; 16] {
        let key = self.derive(&KeyDependencies {
            keyname: Keyname::Einittoken as u16,
            isvprodid: token.isvprodidle,
            isvsvn: token.isvsvnle,
            ownerepoch: self.secrets.owner_epoch,
            attributes: attributes_bytes(token.maskedattributesle),
            mrsigner: crate::encls::lehash_bytes(*lepubkeyhash),
            keyid: token.keyid,
            seal_key_fuses: self.secrets.seal_fuses,
            cpusvn: token.cpusvnle,
            miscselect: token.maskedmiscselectle,
            padding: PKCS1_SHA256_PADDING,
            ..KeyDependencies::default()
        });
        aes128_cmac(&key, token.mac_data())
    }

    /// Derivation of an arbitrary dependency set (EGETKEY's per-key-name recipes).
    pub(crate) fn derive_key(&self, deps: &KeyDependencies) -> [u8; 16] {
        self.derive(deps)
    }
}

/// ATTRIBUTES as the 16 bytes the derivation hashes.
pub(crate) fn attributes_bytes(a: Attributes) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&a.flags.to_le_bytes());
    out[8..].copy_from_slice(&a.xfrm.to_le_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpusvn_compares_componentwise() {
        let current = [2u8; 16];
        assert!(cpusvn_within(&[2; 16], &current));
        assert!(cpusvn_within(&[0; 16], &current));
        let mut above = [0u8; 16];
        above[15] = 3;
        assert!(!cpusvn_within(&above, &current));
    }
}
