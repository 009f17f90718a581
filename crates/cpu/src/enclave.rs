//! Per-enclave state held by the SECS (spec §0.3): the parameters ECREATE validated, the
//! running measurement, the identity EINIT established, the tracking epoch and the child
//! count. [`Enclave::to_secs_page`] and [`Enclave::from_secs_page`] give its 4 KiB image,
//! so EWB/ELDU of a SECS round-trip everything, hidden fields included.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, Ordering};

use parking_lot::Mutex;
use sgxemu_arch::{Attributes, AttributesFlags, Miscselect, PAGE_SIZE, Secs};
use sgxemu_crypto::MeasurementState;
use zerocopy::{FromBytes, FromZeros, IntoBytes};

use crate::epc::EpcIndex;
use crate::lp::LpId;
use crate::tracking::Tracking;

/// What ECREATE fixed for the enclave's lifetime.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct EnclaveParams {
    pub(crate) baseaddr: u64,
    pub(crate) size: u64,
    pub(crate) ssaframesize: u32,
    pub(crate) miscselect: Miscselect,
    /// ATTRIBUTES without INIT.
    pub(crate) attributes: Attributes,
    pub(crate) configid: [u8; 64],
    pub(crate) configsvn: u16,
}

impl EnclaveParams {
    pub(crate) fn flags(&self) -> AttributesFlags {
        self.attributes.flags()
    }

    /// True if `la` lies in ELRANGE.
    pub(crate) fn contains(&self, la: u64) -> bool {
        la >= self.baseaddr && la - self.baseaddr < self.size
    }

    /// Size of one SSA frame in bytes.
    pub(crate) fn frame_bytes(&self) -> u64 {
        u64::from(self.ssaframesize) * PAGE_SIZE as u64
    }
}

/// What EINIT established.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Identity {
    pub(crate) mrenclave: [u8; 32],
    pub(crate) mrsigner: [u8; 32],
    pub(crate) isvprodid: u16,
    pub(crate) isvsvn: u16,
    pub(crate) isvextprodid: [u8; 16],
    pub(crate) isvfamilyid: [u8; 16],
    pub(crate) padding: [u8; 352],
}

/// Hidden-state layout inside the SECS image (emulator-private, never software-visible).
mod hidden {
    pub(super) const EID: usize = 1024;
    pub(super) const FLAGS: usize = 1032;
    pub(super) const MEASUREMENT: usize = 1040;
    pub(super) const EPOCH: usize = 1080;
    pub(super) const ISVEXTPRODID: usize = 1088;
    pub(super) const ISVFAMILYID: usize = 1104;
    pub(super) const PADDING: usize = 1120;
    pub(super) const END: usize = PADDING + 352;
    pub(super) const FLAG_INITIALIZED: u8 = 1;
}

/// Shards of the per-LP counters, picked by logical processor: leaves adding and removing
/// pages, or holding the SECS shared, on different LPs never write the same cache line.
const LP_SHARDS: usize = 16;

/// What one logical processor counts for an enclave. 128-byte aligned: x86 parts prefetch
/// cache lines in adjacent pairs, so 64 bytes would still let two shards interfere.
#[derive(Debug, Default)]
#[repr(align(128))]
struct LpShard {
    /// Pages added minus pages removed by this LP (the sum over shards is the child count).
    children: AtomicI64,
    /// Leaves on this LP holding the SECS shared (see [`crate::epcm`]'s big-reader mode).
    secs_readers: AtomicU32,
}

/// Counters of one enclave, sharded by logical processor. Adds happen with the SECS held
/// shared and the readers that act on the child total (EREMOVE and EWB of the SECS) hold it
/// exclusive, so the total they see is exact but for a removal racing with them — a real
/// overlap.
#[derive(Debug, Default)]
pub(crate) struct LpCounters([LpShard; LP_SHARDS]);

impl LpCounters {
    fn shard(&self, lp: LpId) -> &LpShard {
        &self.0[lp.0 as usize % LP_SHARDS]
    }

    fn add_children(&self, lp: LpId, delta: i64) {
        self.shard(lp).children.fetch_add(delta, Ordering::AcqRel);
    }

    fn child_total(&self) -> u64 {
        let sum: i64 = self.0.iter().map(|s| s.children.load(Ordering::Acquire)).sum();
        u64::try_from(sum).unwrap_or(0)
    }

    /// `lp`'s count of shared holds of the SECS.
    pub(crate) fn secs_readers(&self, lp: LpId) -> &AtomicU32 {
        &self.shard(lp).secs_readers
    }

    /// True if any LP holds the SECS shared. Sequentially consistent, as the exclusive side
    /// of the big-reader protocol requires.
    pub(crate) fn any_secs_reader(&self) -> bool {
        self.0.iter().any(|s| s.secs_readers.load(Ordering::SeqCst) != 0)
    }
}

/// Names an enclave without holding it: the EPC page of its SECS and the instance number of
/// the in-memory [`Enclave`] (unique per processor: ECREATE and each ELDU of a SECS make a new
/// one). Child EPCM entries carry this instead of a reference-counted pointer, so adding and
/// removing pages writes no cache line shared by every page of the enclave. The enclave a
/// valid child names is always resident: EREMOVE and EWB of a SECS with children fail
/// (SGX_CHILD_PRESENT).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct EnclaveRef {
    pub(crate) secs: EpcIndex,
    pub(crate) instance: u64,
}

/// One enclave, as its SECS page holds it.
#[derive(Debug)]
pub(crate) struct Enclave {
    pub(crate) eid: u64,
    /// The EPC page holding this SECS.
    pub(crate) secs_page: EpcIndex,
    /// Which in-memory incarnation this is (see [`EnclaveRef`]).
    pub(crate) instance: u64,
    /// Set when the SECS leaves its EPC page (EREMOVE, EWB): a logical processor that cached
    /// this enclave must look the page up again.
    retired: AtomicBool,
    pub(crate) params: EnclaveParams,
    pub(crate) identity: OnceLock<Identity>,
    /// The running MRENCLAVE; `try_lock` failure is the "measurement busy" #GP.
    pub(crate) measurement: Mutex<MeasurementState>,
    pub(crate) tracking: Tracking,
    /// Child pages and shared holds of the SECS, per logical processor.
    pub(crate) per_lp: LpCounters,
}

impl Enclave {
    pub(crate) fn new(eid: u64, at: EnclaveRef, params: EnclaveParams, measurement: MeasurementState) -> Self {
        Enclave {
            eid,
            secs_page: at.secs,
            instance: at.instance,
            retired: AtomicBool::new(false),
            params,
            identity: OnceLock::new(),
            measurement: Mutex::new(measurement),
            tracking: Tracking::default(),
            per_lp: LpCounters::default(),
        }
    }

    /// How child EPCM entries name this enclave.
    pub(crate) fn reference(&self) -> EnclaveRef {
        EnclaveRef { secs: self.secs_page, instance: self.instance }
    }

    /// The SECS left its EPC page; called by the leaf holding that page exclusive, before it
    /// releases the page.
    pub(crate) fn retire(&self) {
        self.retired.store(true, Ordering::Release);
    }

    pub(crate) fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Acquire)
    }

    pub(crate) fn is_initialized(&self) -> bool {
        self.identity.get().is_some()
    }

    /// ATTRIBUTES as software sees them in REPORTs: INIT set once initialized.
    pub(crate) fn attributes(&self) -> Attributes {
        let mut attrs = self.params.attributes;
        if self.is_initialized() {
            attrs.flags |= AttributesFlags::INIT.bits();
        }
        attrs
    }

    pub(crate) fn child_count(&self) -> u64 {
        self.per_lp.child_total()
    }

    pub(crate) fn add_child(&self, lp: LpId) {
        self.per_lp.add_children(lp, 1);
    }

    pub(crate) fn remove_child(&self, lp: LpId) {
        self.per_lp.add_children(lp, -1);
    }

    /// The SECS page image: architectural fields plus hidden state (for EWB).
    pub(crate) fn to_secs_page(&self) -> Box<[u8; PAGE_SIZE]> {
        let p = &self.params;
        let mut secs: Secs = FromZeros::new_zeroed();
        secs.size = p.size;
        secs.baseaddr = p.baseaddr;
        secs.ssaframesize = p.ssaframesize;
        secs.miscselect = p.miscselect.bits();
        secs.attributes = self.attributes();
        secs.configid = p.configid;
        secs.configsvn = p.configsvn;
        let mut page = Box::new([0u8; PAGE_SIZE]);
        let mut flags = 0;
        if let Some(id) = self.identity.get() {
            secs.mrenclave = id.mrenclave;
            secs.mrsigner = id.mrsigner;
            secs.isvprodid = id.isvprodid;
            secs.isvsvn = id.isvsvn;
            flags |= hidden::FLAG_INITIALIZED;
            page[hidden::ISVEXTPRODID..hidden::ISVEXTPRODID + 16].copy_from_slice(&id.isvextprodid);
            page[hidden::ISVFAMILYID..hidden::ISVFAMILYID + 16].copy_from_slice(&id.isvfamilyid);
            page[hidden::PADDING..hidden::END].copy_from_slice(&id.padding);
        }
        page[..262].copy_from_slice(&secs.as_bytes()[..262]);
        page[hidden::EID..hidden::EID + 8].copy_from_slice(&self.eid.to_le_bytes());
        page[hidden::FLAGS] = flags;
        page[hidden::MEASUREMENT..hidden::MEASUREMENT + 40].copy_from_slice(&self.measurement.lock().to_bytes());
        page[hidden::EPOCH..hidden::EPOCH + 8].copy_from_slice(&self.tracking.epoch().to_le_bytes());
        page
    }

    /// Rebuilds the enclave from a SECS image written by [`Enclave::to_secs_page`] (ELDU).
    pub(crate) fn from_secs_page(page: &[u8; PAGE_SIZE], at: EnclaveRef) -> Self {
        let secs = Secs::read_from_bytes(&page[..]).expect("a page is exactly one SECS");
        let u64_at = |off: usize| u64::from_le_bytes(page[off..off + 8].try_into().expect("8 bytes"));
        let mut attributes = secs.attributes;
        attributes.flags &= !AttributesFlags::INIT.bits();
        let params = EnclaveParams {
            baseaddr: secs.baseaddr,
            size: secs.size,
            ssaframesize: secs.ssaframesize,
            miscselect: Miscselect::from_bits_retain(secs.miscselect),
            attributes,
            configid: secs.configid,
            configsvn: secs.configsvn,
        };
        let measurement = MeasurementState::from_bytes(
            page[hidden::MEASUREMENT..hidden::MEASUREMENT + 40].try_into().expect("40 bytes"),
        );
        let mut enclave = Enclave::new(u64_at(hidden::EID), at, params, measurement);
        enclave.tracking = Tracking::with_epoch(u64_at(hidden::EPOCH));
        if page[hidden::FLAGS] & hidden::FLAG_INITIALIZED != 0 {
            let arr16 = |off: usize| -> [u8; 16] { page[off..off + 16].try_into().expect("16 bytes") };
            let identity = Identity {
                mrenclave: secs.mrenclave,
                mrsigner: secs.mrsigner,
                isvprodid: secs.isvprodid,
                isvsvn: secs.isvsvn,
                isvextprodid: arr16(hidden::ISVEXTPRODID),
                isvfamilyid: arr16(hidden::ISVFAMILYID),
                padding: page[hidden::PADDING..hidden::END].try_into().expect("352 bytes"),
            };
            let _ = enclave.identity.set(identity);
        }
        enclave
    }
}

#[cfg(test)]
impl Enclave {
    /// A 1 GiB 64-bit debug enclave with EID 42 and its SECS at `at` (unit tests).
    pub(crate) fn sample(at: EnclaveRef) -> Enclave {
        let params = EnclaveParams {
            baseaddr: 0x10_0000_0000,
            size: 1 << 30,
            ssaframesize: 1,
            miscselect: Miscselect::EXINFO,
            attributes: Attributes { flags: 0x6, xfrm: 3 },
            configid: [9; 64],
            configsvn: 0,
        };
        let mut m = MeasurementState::new();
        m.ecreate(1, 1 << 30);
        Enclave::new(42, at, params, m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Enclave {
        Enclave::sample(EnclaveRef { secs: EpcIndex(5), instance: 1 })
    }

    #[test]
    fn secs_image_round_trips_uninitialized_state() {
        let mut e = sample();
        e.tracking = Tracking::with_epoch(7);
        let back = Enclave::from_secs_page(&e.to_secs_page(), EnclaveRef { secs: EpcIndex(9), instance: 2 });
        assert_eq!(back.eid, 42);
        assert_eq!(back.params, e.params);
        assert_eq!(*back.measurement.lock(), *e.measurement.lock());
        assert_eq!(back.tracking.epoch(), 7);
        assert!(!back.is_initialized());
    }

    #[test]
    fn secs_image_round_trips_identity() {
        let e = sample();
        let id = Identity {
            mrenclave: [1; 32],
            mrsigner: [2; 32],
            isvprodid: 3,
            isvsvn: 4,
            isvextprodid: [5; 16],
            isvfamilyid: [6; 16],
            padding: [7; 352],
        };
        e.identity.set(id.clone()).unwrap();
        let back = Enclave::from_secs_page(&e.to_secs_page(), EnclaveRef { secs: EpcIndex(9), instance: 2 });
        assert_eq!(back.identity.get(), Some(&id));
        assert_eq!(back.attributes().flags & 1, 1, "INIT visible once initialized");
        assert_eq!(back.params.attributes.flags & 1, 0);
    }

    #[test]
    fn children_and_readers_are_counted_per_lp_and_summed() {
        let e = sample();
        e.add_child(LpId(1));
        e.add_child(LpId(2));
        e.add_child(LpId(2 + LP_SHARDS as u32));
        e.remove_child(LpId(1));
        assert_eq!(e.child_count(), 2);
        assert!(!e.per_lp.any_secs_reader());
        e.per_lp.secs_readers(LpId(7)).fetch_add(1, Ordering::SeqCst);
        assert!(e.per_lp.any_secs_reader());
        assert!(!std::ptr::eq(e.per_lp.secs_readers(LpId(7)), e.per_lp.secs_readers(LpId(8))));
    }

    #[test]
    fn an_enclave_names_itself_and_retires_once() {
        let e = sample();
        assert_eq!(e.reference(), EnclaveRef { secs: EpcIndex(5), instance: 1 });
        assert!(!e.is_retired());
        e.retire();
        assert!(e.is_retired());
    }
}
