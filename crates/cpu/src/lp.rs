//! Per-logical-processor state (spec §0.2): enclave mode and what EENTER latched, the
//! launch-control MSRs, XCR0 and the extended (XSAVE) register state.

use std::sync::Arc;

use sgxemu_arch::{FCW_INIT, MXCSR_INIT};

use crate::enclave::{Enclave, EnclaveRef};
use crate::epc::EpcIndex;
use crate::stats::LeafStats;

/// Identifies a logical processor (unique per [`crate::Processor`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LpId(pub u32);

/// What EENTER/ERESUME latched for the duration of an enclave visit.
#[derive(Debug)]
pub(crate) struct EnclaveContext {
    pub(crate) enclave: Arc<Enclave>,
    pub(crate) secs_page: EpcIndex,
    pub(crate) tcs_la: u64,
    pub(crate) tcs_page: EpcIndex,
    /// Linear address of the current SSA frame (index CSSA at EENTER, CSSA−1 at ERESUME).
    pub(crate) frame_la: u64,
    /// The frame's validated pages (linear page address → EPC page), cached as hardware does.
    pub(crate) frame_pages: Vec<(u64, EpcIndex)>,
    pub(crate) saved_fsbase: u64,
    pub(crate) saved_gsbase: u64,
    pub(crate) saved_xcr0: u64,
    /// TF was set at entry and the TCS opted out of debug: EEXIT/AEX restore it.
    pub(crate) saved_tf: bool,
}

/// The enclave a logical processor used last, held by this LP alone. Leaves find a child
/// page's enclave and the SECS they take shared here, so the common case clones and drops no
/// `Arc` shared with other LPs (see [`EnclaveRef`]); a miss looks in the SECS's EPCM entry.
/// Holding a retired enclave only delays freeing its memory.
#[derive(Debug, Default)]
pub(crate) struct EnclaveCache {
    recent: Option<Arc<Enclave>>,
}

impl EnclaveCache {
    /// The cached enclave if it is the one `owner` names.
    pub(crate) fn get(&self, owner: EnclaveRef) -> Option<&Arc<Enclave>> {
        self.recent.as_ref().filter(|e| e.reference() == owner)
    }

    /// The cached enclave if its SECS was on page `secs` (it may have been retired since).
    pub(crate) fn secs_at(&self, secs: EpcIndex) -> Option<&Arc<Enclave>> {
        self.recent.as_ref().filter(|e| e.secs_page == secs)
    }

    pub(crate) fn insert(&mut self, enclave: Arc<Enclave>) {
        self.recent = Some(enclave);
    }
}

/// One logical processor.
///
/// Aligned to 128 bytes (x86 prefetches cache lines in pairs): every leaf writes its LP's
/// counters, so LPs kept side by side (a `Vec` of per-thread state) must not share a line.
#[derive(Debug)]
#[repr(align(128))]
pub struct Lp {
    pub(crate) id: LpId,
    /// IA32_SGXLEPUBKEYHASH0..3 (MSRs 0x8C..0x8F) of this LP.
    pub(crate) lepubkeyhash: [u64; 4],
    /// XCR0.
    pub xcr0: u64,
    /// CR4.OSXSAVE.
    pub osxsave: bool,
    /// CR4.OSFXSR.
    pub osfxsr: bool,
    /// Executing in 64-bit mode.
    pub mode64: bool,
    /// The extended register state as a non-compacted XSAVE image (x87, SSE, AVX, …).
    pub xsave: Vec<u8>,
    pub(crate) enclave: Option<EnclaveContext>,
    pub(crate) enclaves: EnclaveCache,
    pub(crate) stats: LeafStats,
}

impl Lp {
    pub(crate) fn new(id: LpId, xcr0: u64, xsave_size: usize) -> Self {
        let mut lp = Lp {
            id,
            lepubkeyhash: sgxemu_arch::INTEL_LE_PUBKEY_HASH,
            xcr0,
            osxsave: true,
            osfxsr: true,
            mode64: true,
            xsave: vec![0; xsave_size],
            enclave: None,
            enclaves: EnclaveCache::default(),
            stats: LeafStats::default(),
        };
        lp.reset_extended_state();
        lp
    }

    /// This LP's id.
    pub fn id(&self) -> LpId {
        self.id
    }

    /// CR_ENCLAVE_MODE.
    pub fn in_enclave(&self) -> bool {
        self.enclave.is_some()
    }

    /// ELRANGE (base, size) of the enclave being executed.
    pub fn elrange(&self) -> Option<(u64, u64)> {
        self.enclave.as_ref().map(|c| (c.enclave.params.baseaddr, c.enclave.params.size))
    }

    /// The EID of the enclave being executed (what EPCM entries of its pages name).
    pub fn eid(&self) -> Option<u64> {
        self.enclave.as_ref().map(|c| c.enclave.eid)
    }

    /// Linear address of the TCS in use.
    pub fn tcs(&self) -> Option<u64> {
        self.enclave.as_ref().map(|c| c.tcs_la)
    }

    /// EPC page of the active SECS.
    pub fn active_secs(&self) -> Option<EpcIndex> {
        self.enclave.as_ref().map(|c| c.secs_page)
    }

    /// The IA32_SGXLEPUBKEYHASH MSRs, 0x8C first.
    pub fn lepubkeyhash(&self) -> [u64; 4] {
        self.lepubkeyhash
    }

    /// Leaf counters of this LP.
    pub fn stats(&self) -> &LeafStats {
        &self.stats
    }

    /// Resets x87/SSE/AVX state to the XRSTOR-INIT values (FCW 0x037F, MXCSR 0x1F80).
    pub(crate) fn reset_extended_state(&mut self) {
        self.xsave.fill(0);
        self.xsave[sgxemu_arch::FCW_OFFSET..sgxemu_arch::FCW_OFFSET + 2].copy_from_slice(&FCW_INIT.to_le_bytes());
        self.xsave[sgxemu_arch::MXCSR_OFFSET..sgxemu_arch::MXCSR_OFFSET + 4].copy_from_slice(&MXCSR_INIT.to_le_bytes());
    }
}
