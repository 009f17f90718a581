//! The processor: EPC, EPCM and platform state, plus the helpers every leaf shares.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use sgxemu_arch::{PAGE_SIZE, xsave_size};
use sgxemu_crypto::PagingKey;
use zerocopy::{FromBytes, IntoBytes};

use crate::config::{ConfigError, PlatformConfig};
use crate::enclave::{Enclave, EnclaveRef};
use crate::epc::{EpcIndex, EpcMemory, SparseEpc};
use crate::epcm::{BigReadLock, Epcm, EpcmView};
use crate::fault::Exception;
use crate::lp::{EnclaveCache, Lp, LpId};
use crate::memory::Memory;
use crate::secrets::{PlatformSecrets, RandomnessError};

/// Why a processor could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ProcessorError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// No randomness for fresh platform secrets.
    #[error(transparent)]
    Randomness(#[from] RandomnessError),
    /// The supplied EPC storage has a different size than the configuration.
    #[error("EPC storage holds {storage} pages but the configuration asks for {config}")]
    EpcStorageSize {
        /// Pages in the storage.
        storage: u64,
        /// Pages in the configuration.
        config: u64,
    },
}

/// An emulated SGX2 processor package: shared by all its logical processors ([`Lp`]).
///
/// Every method is safe to call from many threads at once; leaves on different pages run
/// in parallel, and leaves on the same page conflict exactly as spec §0.4 describes.
#[derive(Debug)]
pub struct Processor {
    pub(crate) config: PlatformConfig,
    pub(crate) secrets: PlatformSecrets,
    pub(crate) epc: Arc<dyn EpcMemory>,
    pub(crate) epcm: Epcm,
    pub(crate) paging_key: PagingKey,
    next_eid: AtomicU64,
    /// Numbers in-memory enclaves (see [`EnclaveRef`]).
    next_instance: AtomicU64,
    paging_version: AtomicU64,
    next_lp: AtomicU32,
    pub(crate) pending_unmasked_events: AtomicU32,
    /// Size of the XSAVE image for the part's full XFRM mask.
    pub(crate) max_xsave_size: usize,
    /// Told about EPCM entries that leaves changed (see [`EpcmObserver`]).
    observer: std::sync::OnceLock<Arc<dyn EpcmObserver>>,
}

/// Tells the observer, when a leaf returns, that the EPCM entry of the EPC page at
/// `target` may have changed (a guard, so every return path of the leaf is covered).
pub(crate) struct EpcmChange<'a> {
    processor: &'a Processor,
    target: u64,
}

impl<'a> EpcmChange<'a> {
    pub(crate) fn new(processor: &'a Processor, target: u64) -> Self {
        EpcmChange { processor, target }
    }
}

impl Drop for EpcmChange<'_> {
    fn drop(&mut self) {
        if self.processor.observer.get().is_some()
            && let Some(page) = self.processor.epc_index(self.target)
        {
            self.processor.notify_epcm_changed(page);
        }
    }
}

/// Learns which EPCM entries a leaf may have changed, after the leaf completed and released
/// every lock it held. A native engine that enforces the EPCM with host page protections
/// needs this to follow EMODPR, EMODT, EAUG, EREMOVE, EWB/ELDU, EACCEPT and EMODPE; the
/// deterministic platforms ask [`Processor::check_access`] instead and need no observer.
pub trait EpcmObserver: Send + Sync + std::fmt::Debug {
    /// The EPCM entry of `page` may have changed.
    fn epcm_changed(&self, page: EpcIndex);
}

impl Processor {
    /// A processor with lazily allocated EPC storage.
    pub fn new(config: PlatformConfig) -> Result<Self, ProcessorError> {
        config.validate()?;
        let epc = Arc::new(SparseEpc::new(config.epc_pages()));
        Self::with_epc_memory(config, epc)
    }

    /// A processor over caller-supplied EPC storage (e.g. host memory that natively running
    /// enclave code maps as well).
    pub fn with_epc_memory(config: PlatformConfig, epc: Arc<dyn EpcMemory>) -> Result<Self, ProcessorError> {
        config.validate()?;
        if epc.pages() != config.epc_pages() {
            return Err(ProcessorError::EpcStorageSize { storage: epc.pages(), config: config.epc_pages() });
        }
        let secrets = match &config.secrets {
            Some(s) => s.clone(),
            None => PlatformSecrets::random()?,
        };
        Ok(Processor {
            epcm: Epcm::new(config.epc_pages()),
            paging_key: PagingKey::new(&secrets.paging_key),
            max_xsave_size: xsave_size(config.xfrm),
            config,
            secrets,
            epc,
            next_eid: AtomicU64::new(1),
            next_instance: AtomicU64::new(1),
            // Start above 7: EDBGRD of a VA slot ignores the low three bits (spec §1.9).
            paging_version: AtomicU64::new(8),
            next_lp: AtomicU32::new(0),
            pending_unmasked_events: AtomicU32::new(0),
            observer: std::sync::OnceLock::new(),
        })
    }

    /// Installs the EPCM observer (once; later calls return false and change nothing).
    pub fn set_epcm_observer(&self, observer: Arc<dyn EpcmObserver>) -> bool {
        self.observer.set(observer).is_ok()
    }

    pub(crate) fn notify_epcm_changed(&self, page: EpcIndex) {
        if let Some(observer) = self.observer.get() {
            observer.epcm_changed(page);
        }
    }

    /// The configuration this part was built from.
    pub fn config(&self) -> &PlatformConfig {
        &self.config
    }

    /// The EPC storage.
    pub fn epc_memory(&self) -> &Arc<dyn EpcMemory> {
        &self.epc
    }

    /// A new logical processor (XCR0 = every XFRM feature of the part, 64-bit mode).
    pub fn new_lp(&self) -> Lp {
        let id = LpId(self.next_lp.fetch_add(1, Ordering::Relaxed));
        Lp::new(id, self.config.xfrm, self.max_xsave_size)
    }

    /// Physical (and ring-0 linear) address of an EPC page.
    pub fn epc_addr(&self, index: EpcIndex) -> u64 {
        self.config.epc_base + u64::from(index.0) * PAGE_SIZE as u64
    }

    /// The EPC page holding `addr`, if `addr` is inside the EPC.
    pub fn epc_index(&self, addr: u64) -> Option<EpcIndex> {
        let off = addr.checked_sub(self.config.epc_base)?;
        (off < self.config.epc_size).then(|| EpcIndex((off / PAGE_SIZE as u64) as u32))
    }

    /// Number of EPC pages.
    pub fn epc_pages(&self) -> u64 {
        self.config.epc_pages()
    }

    /// A snapshot of one EPCM entry (tests, invariant checks, debuggers; the driver never
    /// looks, as the kernel cannot).
    pub fn epcm_view(&self, index: EpcIndex) -> EpcmView {
        let entry = self.epcm.snapshot(index).unwrap_or_default();
        let enclave = match (&entry.secs, entry.owner) {
            (Some(secs), _) => Some(secs.clone()),
            (None, Some(owner)) => self.enclave_named(owner),
            (None, None) => None,
        };
        EpcmView {
            valid: entry.valid,
            page_type: entry.page_type,
            flags: entry.secinfo_flags(),
            blocked: entry.blocked,
            enclave_address: entry.enclave_address,
            eid: enclave.as_ref().map(|e| e.eid),
            secs: enclave.as_ref().map(|e| e.secs_page).or(entry.owner.map(|o| o.secs)),
        }
    }

    /// Makes the next `count` EINITs return SGX_UNMASKED_EVENT (spec §4.4 step 4), to
    /// exercise a driver's retry loop.
    pub fn inject_unmasked_events(&self, count: u32) {
        self.pending_unmasked_events.store(count, Ordering::Relaxed);
    }

    /// The logical processors currently executing inside the enclave whose SECS is at
    /// `secs` (what a driver's IPI must reach, spec §7).
    pub fn lps_inside(&self, secs: u64) -> Vec<LpId> {
        let Some(index) = self.epc_index(secs) else {
            return Vec::new();
        };
        let entry = self.epcm.entry(index);
        match (&entry.secs, entry.valid) {
            (Some(e), true) => e.tracking.inside(),
            _ => Vec::new(),
        }
    }

    /// Completes the current tracking epoch for `lps` without interrupting them: each
    /// counts as having taken an AEX and gone straight back in with ERESUME (spec §7).
    ///
    /// For a platform whose translations are coherent by construction — the native engine's
    /// host mappings follow every EPCM and PTE change at once, and the host kernel's own
    /// shootdown flushes them — so that no logical processor inside can use a translation
    /// from before the epoch. The state an AEX would have saved stays in the registers, and
    /// an SSA frame page freed meanwhile is never written (see `FrameAccess`).
    pub fn retire_translations(&self, secs: u64, lps: &[LpId]) {
        let Some(index) = self.epc_index(secs) else {
            return;
        };
        let entry = self.epcm.entry(index);
        if let (Some(enclave), true) = (&entry.secs, entry.valid) {
            for &lp in lps {
                enclave.tracking.reenter(lp);
            }
        }
    }

    /// WRMSR of the launch-control MSRs (0x8C..0x8F) on `lp`: #GP without flexible launch
    /// control or for any other MSR (spec §10.3).
    pub fn wrmsr(&self, lp: &mut Lp, msr: u32, value: u64) -> Result<(), Exception> {
        let index = msr.wrapping_sub(sgxemu_arch::IA32_SGXLEPUBKEYHASH0) as usize;
        if !self.config.flexible_launch_control || index >= lp.lepubkeyhash.len() {
            return Err(Exception::Gp);
        }
        lp.lepubkeyhash[index] = value;
        Ok(())
    }

    /// RDMSR of IA32_FEATURE_CONTROL (0x3A) or the launch-control MSRs; #GP otherwise.
    pub fn rdmsr(&self, lp: &Lp, msr: u32) -> Result<u64, Exception> {
        if msr == sgxemu_arch::IA32_FEATURE_CONTROL {
            return Ok(self.config.feature_control());
        }
        let index = msr.wrapping_sub(sgxemu_arch::IA32_SGXLEPUBKEYHASH0) as usize;
        lp.lepubkeyhash.get(index).copied().ok_or(Exception::Gp)
    }

    /// The MRENCLAVE EINIT would compute now for the SECS at `secs` (a debugging view of
    /// hidden SECS state, for tests and tools; `None` if `secs` is not a valid SECS).
    pub fn mrenclave_so_far(&self, secs: u64) -> Option<[u8; 32]> {
        let entry = self.epcm.snapshot(self.epc_index(secs)?)?;
        let enclave = entry.secs.filter(|_| entry.valid && entry.page_type == sgxemu_arch::PageType::Secs)?;
        let value = enclave.measurement.lock().finalize();
        Some(value)
    }

    pub(crate) fn next_eid(&self) -> u64 {
        self.next_eid.fetch_add(1, Ordering::Relaxed)
    }

    /// Where a new in-memory enclave for the SECS on page `secs` stands (ECREATE, ELDU).
    pub(crate) fn new_enclave_ref(&self, secs: EpcIndex) -> EnclaveRef {
        EnclaveRef { secs, instance: self.next_instance.fetch_add(1, Ordering::Relaxed) }
    }

    /// A fresh, unique, non-zero EWB version (spec §11.4).
    pub(crate) fn next_paging_version(&self) -> u64 {
        self.paging_version.fetch_add(1, Ordering::Relaxed)
    }

    /// The EPC page of an operand that must be in the EPC; otherwise #PF on it (spec §3.4).
    pub(crate) fn epc_operand(&self, addr: u64, write: bool) -> Result<EpcIndex, Exception> {
        self.epc_index(addr).ok_or_else(|| Exception::epcm_pf(addr, write))
    }

    /// Reads a structure from ordinary memory. An operand that points into the EPC reads
    /// as abort-page data (all ones, spec §6.2).
    pub(crate) fn read_operand<T: FromBytes + IntoBytes>(&self, mem: &dyn Memory, addr: u64) -> Result<T, Exception> {
        let mut value = T::new_zeroed();
        self.read_bytes(mem, addr, value.as_mut_bytes())?;
        Ok(value)
    }

    pub(crate) fn read_bytes(&self, mem: &dyn Memory, addr: u64, buf: &mut [u8]) -> Result<(), Exception> {
        if self.epc_index(addr).is_some() {
            buf.fill(0xFF);
            return Ok(());
        }
        mem.read(addr, buf)
    }

    /// Writes to ordinary memory; writes into the EPC are dropped (abort page).
    pub(crate) fn write_bytes(&self, mem: &mut dyn Memory, addr: u64, data: &[u8]) -> Result<(), Exception> {
        if self.epc_index(addr).is_some() {
            return Ok(());
        }
        mem.write(addr, data)
    }

    /// Takes a SECS operand shared for `lp`: #GP on a lock conflict, #PF(addr) unless it is a
    /// valid SECS page (spec §4.2 step 5 and its siblings). The hold is in big-reader mode
    /// (see [`crate::epcm`]) and the enclave comes from `lp`'s cache, so a leaf that takes the
    /// SECS of the enclave its LP used last writes only lines of its own LP.
    pub(crate) fn lock_secs_shared<'a>(
        &'a self,
        cache: &'a mut EnclaveCache,
        lp: LpId,
        index: EpcIndex,
        addr: u64,
    ) -> Result<(BigReadLock<'a>, &'a Arc<Enclave>), Exception> {
        self.cache_secs(cache, index, addr)?;
        let cache: &'a EnclaveCache = cache;
        let enclave = cache.secs_at(index).ok_or(Exception::Gp)?;
        let lock = self.epcm.try_big_reader(index, enclave.per_lp.secs_readers(lp)).ok_or(Exception::Gp)?;
        // Retired since it was cached: an exclusive leaf took the page meanwhile, a conflict.
        // Otherwise it stays on the page while the lock is held (retiring needs the page
        // exclusive, and the exclusive acquirer sees this hold).
        if enclave.is_retired() {
            return Err(Exception::Gp);
        }
        Ok((lock, enclave))
    }

    /// Makes `cache` hold the enclave whose SECS is on page `index`, with the checks and
    /// faults of taking it shared (#GP on a conflict, #PF(addr) unless a valid SECS).
    fn cache_secs(&self, cache: &mut EnclaveCache, index: EpcIndex, addr: u64) -> Result<(), Exception> {
        if cache.secs_at(index).is_some_and(|e| !e.is_retired()) {
            return Ok(());
        }
        let lock = self.epcm.try_shared(index).ok_or(Exception::Gp)?;
        let entry = lock.entry();
        match (&entry.secs, entry.valid, entry.page_type) {
            (Some(e), true, sgxemu_arch::PageType::Secs) => {
                cache.insert(e.clone());
                Ok(())
            }
            _ => Err(Exception::epcm_pf(addr, false)),
        }
    }

    /// The enclave a child page names, from `cache` or else from its SECS's EPCM entry
    /// (which may be locked while the child's entry is: see [`crate::epcm`]'s lock order).
    /// `None` only if the EPCM is inconsistent.
    pub(crate) fn owner_of<'c>(&self, cache: &'c mut EnclaveCache, owner: EnclaveRef) -> Option<&'c Arc<Enclave>> {
        if cache.get(owner).is_none() {
            cache.insert(self.enclave_named(owner)?);
        }
        cache.get(owner)
    }

    /// The enclave `owner` names, looked up in its SECS's EPCM entry.
    pub(crate) fn enclave_named(&self, owner: EnclaveRef) -> Option<Arc<Enclave>> {
        self.epcm.entry(owner.secs).secs.clone().filter(|e| e.reference() == owner)
    }
}
