//! Key derivation for EGETKEY, EREPORT and the EINITTOKEN MAC (architecture spec §11.2,
//! §11.3; inputs per key name in §5.5 and §5.6).
//!
//! The architecture leaves `derivekey` unspecified; the emulator's design (§11.2) is
//! `AES-128-CMAC(K_root, serialize(KEYDEPENDENCIES))` where the serialisation binds every
//! field, with zeros for the inputs a key name does not select. Which fields are filled
//! for which key name is the caller's business (the cpu model, §5.6).

use crate::cmac::aes128_cmac;

/// Length of [`KeyDependencies::serialize`] in bytes.
pub const KEY_DEPENDENCIES_SIZE: usize = 642;

/// The KEYDEPENDENCIES of one key derivation (spec §11.2). Field order is the
/// serialisation order.
///
/// [`Default`] is all zeros — including `padding`; callers deriving architectural keys
/// set it to [`PKCS1_SHA256_PADDING`](crate::PKCS1_SHA256_PADDING) (§11.2).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct KeyDependencies {
    /// KEYNAME (EINITTOKEN 0, PROVISION 1, PROVISION_SEAL 2, REPORT 3, SEAL 4).
    pub keyname: u16,
    /// ISVPRODID.
    pub isvprodid: u16,
    /// ISVSVN (the requested one for SEAL/PROVISION keys).
    pub isvsvn: u16,
    /// CONFIGSVN.
    pub configsvn: u16,
    /// OWNEREPOCH (CR_SGXOWNEREPOCH).
    pub ownerepoch: [u8; 16],
    /// ATTRIBUTES (masked as the key name requires).
    pub attributes: [u8; 16],
    /// ATTRIBUTEMASK from the KEYREQUEST.
    pub attributemask: [u8; 16],
    /// MRENCLAVE.
    pub mrenclave: [u8; 32],
    /// MRSIGNER.
    pub mrsigner: [u8; 32],
    /// KEYID.
    pub keyid: [u8; 32],
    /// SEAL_KEY_FUSES (CR_SEAL_FUSES).
    pub seal_key_fuses: [u8; 16],
    /// CPUSVN.
    pub cpusvn: [u8; 16],
    /// PADDING (the 352-byte PKCS#1 v1.5 prefix saved by EINIT).
    pub padding: [u8; 352],
    /// MISCSELECT (masked).
    pub miscselect: u32,
    /// MISCMASK (the request's, inverted where §5.6 says `~MISCMASK`).
    pub miscmask: u32,
    /// KEYPOLICY.
    pub keypolicy: u16,
    /// CONFIGID.
    pub configid: [u8; 64],
    /// ISVFAMILYID.
    pub isvfamilyid: [u8; 16],
    /// ISVEXTPRODID.
    pub isvextprodid: [u8; 16],
}

impl Default for KeyDependencies {
    fn default() -> Self {
        Self {
            keyname: 0,
            isvprodid: 0,
            isvsvn: 0,
            configsvn: 0,
            ownerepoch: [0; 16],
            attributes: [0; 16],
            attributemask: [0; 16],
            mrenclave: [0; 32],
            mrsigner: [0; 32],
            keyid: [0; 32],
            seal_key_fuses: [0; 16],
            cpusvn: [0; 16],
            padding: [0; 352],
            miscselect: 0,
            miscmask: 0,
            keypolicy: 0,
            configid: [0; 64],
            isvfamilyid: [0; 16],
            isvextprodid: [0; 16],
        }
    }
}

/// Appends fields to a fixed buffer; the total is checked against the buffer size.
struct Writer<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl Writer<'_> {
    fn put(&mut self, bytes: &[u8]) {
        self.buf[self.pos..self.pos + bytes.len()].copy_from_slice(bytes);
        self.pos += bytes.len();
    }
}

impl KeyDependencies {
    /// The fixed little-endian concatenation of all fields, in the order of §11.2:
    ///
    /// ```text
    /// KEYNAME u16 ‖ ISVPRODID u16 ‖ ISVSVN u16 ‖ CONFIGSVN u16 ‖ OWNEREPOCH[16] ‖
    /// ATTRIBUTES[16] ‖ ATTRIBUTEMASK[16] ‖ MRENCLAVE[32] ‖ MRSIGNER[32] ‖ KEYID[32] ‖
    /// SEAL_KEY_FUSES[16] ‖ CPUSVN[16] ‖ PADDING[352] ‖ MISCSELECT u32 ‖ MISCMASK u32 ‖
    /// KEYPOLICY u16 ‖ CONFIGID[64] ‖ ISVFAMILYID[16] ‖ ISVEXTPRODID[16]
    /// ```
    #[must_use]
    pub fn serialize(&self) -> [u8; KEY_DEPENDENCIES_SIZE] {
        let mut buf = [0u8; KEY_DEPENDENCIES_SIZE];
        let mut w = Writer { buf: &mut buf, pos: 0 };
        w.put(&self.keyname.to_le_bytes());
        w.put(&self.isvprodid.to_le_bytes());
        w.put(&self.isvsvn.to_le_bytes());
        w.put(&self.configsvn.to_le_bytes());
        w.put(&self.ownerepoch);
        w.put(&self.attributes);
        w.put(&self.attributemask);
        w.put(&self.mrenclave);
        w.put(&self.mrsigner);
        w.put(&self.keyid);
        w.put(&self.seal_key_fuses);
        w.put(&self.cpusvn);
        w.put(&self.padding);
        w.put(&self.miscselect.to_le_bytes());
        w.put(&self.miscmask.to_le_bytes());
        w.put(&self.keypolicy.to_le_bytes());
        w.put(&self.configid);
        w.put(&self.isvfamilyid);
        w.put(&self.isvextprodid);
        debug_assert_eq!(w.pos, KEY_DEPENDENCIES_SIZE);
        buf
    }
}

/// `derivekey`: AES-128-CMAC(`root`, [`KeyDependencies::serialize`]) (spec §11.2).
///
/// `root` is the per-platform fuse-key analogue; keep it stable across emulator runs if
/// sealed data must survive them.
#[must_use]
pub fn derive_key(root: &[u8; 16], deps: &KeyDependencies) -> [u8; 16] {
    aes128_cmac(root, &deps.serialize())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT: [u8; 16] = *b"platform-root-k!";

    #[test]
    fn layout_offsets() {
        let d = KeyDependencies {
            keyname: 0x0102,
            isvprodid: 0x0304,
            isvsvn: 0x0506,
            configsvn: 0x0708,
            ownerepoch: [0x11; 16],
            attributes: [0x12; 16],
            attributemask: [0x13; 16],
            mrenclave: [0x14; 32],
            mrsigner: [0x15; 32],
            keyid: [0x16; 32],
            seal_key_fuses: [0x17; 16],
            cpusvn: [0x18; 16],
            padding: [0x19; 352],
            miscselect: 0x2122_2324,
            miscmask: 0x2526_2728,
            keypolicy: 0x292a,
            configid: [0x1a; 64],
            isvfamilyid: [0x1b; 16],
            isvextprodid: [0x1c; 16],
        };
        let s = d.serialize();
        assert_eq!(&s[0..8], &[0x02, 0x01, 0x04, 0x03, 0x06, 0x05, 0x08, 0x07]);
        let ranges: [(usize, usize, u8); 12] = [
            (8, 16, 0x11),
            (24, 16, 0x12),
            (40, 16, 0x13),
            (56, 32, 0x14),
            (88, 32, 0x15),
            (120, 32, 0x16),
            (152, 16, 0x17),
            (168, 16, 0x18),
            (184, 352, 0x19),
            (546, 64, 0x1a),
            (610, 16, 0x1b),
            (626, 16, 0x1c),
        ];
        for (off, len, v) in ranges {
            assert!(s[off..off + len].iter().all(|&b| b == v), "field at {off}");
        }
        assert_eq!(&s[536..540], &0x2122_2324u32.to_le_bytes());
        assert_eq!(&s[540..544], &0x2526_2728u32.to_le_bytes());
        assert_eq!(&s[544..546], &0x292au16.to_le_bytes());
    }

    #[test]
    fn default_is_all_zero() {
        assert!(KeyDependencies::default().serialize().iter().all(|&b| b == 0));
    }

    #[test]
    fn same_deps_same_key() {
        let d = KeyDependencies { keyname: 4, mrenclave: [7; 32], ..KeyDependencies::default() };
        assert_eq!(derive_key(&ROOT, &d), derive_key(&ROOT, &d.clone()));
        assert_ne!(derive_key(&ROOT, &d), derive_key(&[0; 16], &d));
    }

    #[test]
    fn every_field_changes_the_key() {
        type Mutate = fn(&mut KeyDependencies);
        let mutators: [(&str, Mutate); 19] = [
            ("keyname", |d| d.keyname ^= 1),
            ("isvprodid", |d| d.isvprodid ^= 0x8000),
            ("isvsvn", |d| d.isvsvn ^= 1),
            ("configsvn", |d| d.configsvn ^= 1),
            ("ownerepoch", |d| d.ownerepoch[15] ^= 1),
            ("attributes", |d| d.attributes[0] ^= 1),
            ("attributemask", |d| d.attributemask[8] ^= 0x80),
            ("mrenclave", |d| d.mrenclave[31] ^= 1),
            ("mrsigner", |d| d.mrsigner[0] ^= 1),
            ("keyid", |d| d.keyid[16] ^= 1),
            ("seal_key_fuses", |d| d.seal_key_fuses[3] ^= 1),
            ("cpusvn", |d| d.cpusvn[0] ^= 1),
            ("padding", |d| d.padding[351] ^= 1),
            ("miscselect", |d| d.miscselect ^= 1),
            ("miscmask", |d| d.miscmask ^= 0x8000_0000),
            ("keypolicy", |d| d.keypolicy ^= 2),
            ("configid", |d| d.configid[63] ^= 1),
            ("isvfamilyid", |d| d.isvfamilyid[0] ^= 1),
            ("isvextprodid", |d| d.isvextprodid[15] ^= 1),
        ];
        let base = KeyDependencies { padding: crate::PKCS1_SHA256_PADDING, ..KeyDependencies::default() };
        let base_key = derive_key(&ROOT, &base);
        let mut seen = vec![base_key];
        for (name, mutate) in mutators {
            let mut d = base.clone();
            mutate(&mut d);
            let k = derive_key(&ROOT, &d);
            assert!(!seen.contains(&k), "changing {name} did not give a fresh key");
            seen.push(k);
        }
    }
}
