//! Mapping an enclave (driver spec §4: mmap, `sgx_encl_may_map`, mprotect) and the enclave
//! VMA's fault handler (§5: resident pages, ELDU reload, EAUG of holes, SIGBUS/NOPAGE).
//!
//! Coverage, by spec section:
//!
//! * §4.1 mmap: MAP_PRIVATE → EINVAL, ahead of every may_map rule
//!   (`mmap_with_map_private_is_einval`); mapping before CREATE / before INIT anywhere
//!   (`mmap_before_create_or_init_is_allowed_anywhere`).
//! * §4.2 may_map: beyond a page's max-prot → EACCES, per page of the range, TCS max-prot RW
//!   (`mmap_beyond_a_pages_max_prot_is_eacces`); holes unrestricted
//!   (`mmap_over_holes_is_unrestricted`); after INIT outside ELRANGE → EACCES, before INIT
//!   allowed (`mmap_outside_elrange_after_init_is_eacces`); READ_IMPLIES_EXEC → EACCES
//!   whatever the protections (`read_implies_exec_is_always_eacces`).
//! * §4.3 `.mprotect`: the same three rules, the VMA unchanged on EACCES
//!   (`mprotect_follows_the_may_map_rules`).
//! * §5 fault handler:
//!   - step 1, a VMA that lost its enclave → SIGBUS (`a_vma_without_an_enclave_gets_sigbus`);
//!   - step 3–5, a resident page is mapped with the VMA's protections (PTE → the EPC page of
//!     that address, W/X from the VMA, accessed bit cleared)
//!     (`a_resident_page_is_mapped_with_the_vmas_protections`);
//!   - VMA protections beyond max-prot (an RWX mapping made before INIT over RX/RW/TCS pages)
//!     → SIGBUS (`a_vma_asking_more_than_max_prot_gets_sigbus`);
//!   - §5.2 hole on SGX2 after INIT → EAUG (record REG, max-prot RWX, resident), then the
//!     access takes the PENDING SGX #PF 0x8007; from outside too
//!     (`a_hole_of_an_initialized_sgx2_enclave_is_eaugd`); hole on SGX1 → SIGBUS
//!     (`a_hole_on_sgx1_is_sigbus`); hole before INIT → SIGBUS, added pages map
//!     (`a_hole_before_init_is_sigbus`); write through a read-only VMA (or any access through
//!     PROT_NONE) over a hole → SIGSEGV, no EAUG
//!     (`a_write_through_a_read_only_vma_over_a_hole_is_sigsegv_without_eaug`);
//!   - §5.1 a reclaimed page is reloaded by ELDU bit-identical, its SECS reloaded first, the
//!     backing store emptied (`a_reclaimed_page_is_reloaded_bit_identical_secs_first`);
//!   - step 4 / §5.2 step 10, the PTE insert fails → SIGBUS; an EAUG'd page stays added and
//!     the next fault maps it (`a_failed_pte_insert_is_sigbus_and_an_eaugd_page_stays_added`);
//!   - step 3 and §5.2 step 4, the SECS (ELDU) reload finds the EPC busy → NOPAGE until ksgxd
//!     has run (`faults_needing_a_reload_while_the_epc_is_busy_are_nopage_until_ksgxd_has_run`);
//!     §5.2 step 6, the VA page for the 512th child cannot be allocated → NOPAGE, unwound, then
//!     a second VA page (`eaug_needing_a_va_page_while_the_epc_is_busy_is_nopage_until_ksgxd_has_run`);
//!   - §5.2 step 5 EPC exhausted with nothing reclaimable → SIGBUS, also when the SECS
//!     reload took the last page (`eaug_with_the_epc_exhausted_and_nothing_reclaimable_is_sigbus`);
//!     EPC busy but reclaimable → NOPAGE, then EAUG after ksgxd
//!     (`eaug_with_the_epc_busy_but_reclaimable_is_nopage_until_ksgxd_has_run`);
//!   - §5.2 step 7, the EAUG race: this driver takes the fix proposed upstream (the loser
//!     returns NOPAGE; mainline frees its page and returns SIGBUS): the loser's interleaving
//!     replayed deterministically (`the_loser_of_two_faults_on_one_hole_gets_nopage`), and two
//!     threads faulting on the same holes (`two_threads_faulting_on_the_same_holes_both_get_nopage`).
//!
//!   - step 3, a page the reclaimer has marked BEING_RECLAIMED → NOPAGE, nothing mapped; the
//!     retried fault reloads it (`a_fault_on_a_page_being_reclaimed_is_nopage`, from an extra
//!     mm whose zap the reclaimer calls while it holds the page).
//!
//! Not covered: `fork()` and the VMA `.open` hook (§4.3, §4.4) — the simulated platform has no
//! fork, so an enclave VMA never gets a second mm or loses its enclave that way (step 1 is
//! driven directly); ELDU/backing-store failures → SIGBUS, which need a corrupted backing
//! store the platform does not expose; VM_FAULT_OOM (the port never fails a kernel
//! allocation).
//!
//! Every test ends with no kernel warnings and, after unmapping and closing its enclaves,
//! every EPC page free.

use std::sync::{Arc, Barrier, Mutex};

use sgxemu_arch::{
    Attributes, AttributesFlags, Encls, PAGE_SIZE, PageType, PfErrorCode, Secinfo, SecinfoFlags, Secs, Sigstruct, Tcs,
};
use sgxemu_cpu::PlatformConfig;
use sgxemu_crypto::MeasurementState;
use sgxemu_driver::errno::{Errno, KResult};
use sgxemu_driver::os::{AddressSpace, MmId, Prot, Vma};
use sgxemu_driver::sim::{Exit, FaultResolution, Machine, MapKind, Process, SimThread, Step, TestEnclave, layout};
use sgxemu_driver::{Encl, FaultResult};
use sgxemu_uapi::{
    EENTER, ERESUME, SGX_IOC_ENCLAVE_ADD_PAGES, SGX_IOC_ENCLAVE_CREATE, SGX_IOC_ENCLAVE_INIT, SGX_PAGE_MEASURE,
    SgxEnclaveAddPages, SgxEnclaveCreate, SgxEnclaveInit,
};
use zerocopy::{FromZeros, Immutable, IntoBytes};

const PAGE: u64 = PAGE_SIZE as u64;
const EPC: u64 = 1 << 20;
/// Untrusted memory for ioctl arguments (SECS at +0x1000, SECINFO at +0x2000, SIGSTRUCT at
/// +0x3000).
const ARG: u64 = 0x0070_0000;
/// ADD_PAGES sources of the hand-built enclaves.
const SRC: u64 = 0x0080_0000;
const SRC_PAGES: u64 = 16;
/// ELRANGE of the hand-built enclaves.
const BASE: u64 = 0x200_0000_0000;
const SIZE: u64 = 16 * PAGE;
/// The hand-built image: (offset, pages, SECINFO flags, VMA protections).
const IMAGE: [(u64, u64, u64, Prot); 3] = [
    (0, 1, 0x100, Prot::READ.union(Prot::WRITE)),
    (PAGE, 1, 0x205, Prot::READ.union(Prot::EXEC)),
    (2 * PAGE, 2, 0x203, Prot::READ.union(Prot::WRITE)),
];

const R: Prot = Prot::READ;
const RW: Prot = Prot::READ.union(Prot::WRITE);
const RX: Prot = Prot::READ.union(Prot::EXEC);
const RWX: Prot = Prot::all();
const NONE: Prot = Prot::empty();
const MAGIC: u64 = 0x1122_3344_5566_7788;

/// #PF error codes and the vector.
const PF_U: PfErrorCode = PfErrorCode::U;
const PF_WU: PfErrorCode = PfErrorCode::W.union(PfErrorCode::U);
const PF_IU: PfErrorCode = PfErrorCode::I.union(PfErrorCode::U);
const VECTOR_PF: u16 = 14;
const ACCEPT_RW_REG_PENDING: u64 = 0x20B;

fn sgx1_machine(epc: u64) -> Machine {
    Machine::new(PlatformConfig { epc_size: epc, sgx2: false, ..PlatformConfig::default() })
}

/// A VMA for calling `Encl::fault` directly: records the PFNs it is asked to insert, or
/// fails to insert them (`vmf_insert_pfn` errors) with `fail`.
struct TestVma {
    prot: Prot,
    inserted: Vec<(u64, u64)>,
    fail: bool,
}

impl TestVma {
    fn new(prot: Prot) -> Self {
        TestVma { prot, inserted: Vec::new(), fail: false }
    }
}

impl Vma for TestVma {
    fn prot(&self) -> Prot {
        self.prot
    }

    fn insert_pfn(&mut self, addr: u64, pa: u64) -> KResult<()> {
        if self.fail {
            return Err(Errno::ENOMEM);
        }
        self.inserted.push((addr, pa));
        Ok(())
    }

    fn clear_young(&mut self, _addr: u64) {}
}

/// An extra address space on an enclave's mm list that maps nothing: `on_zap` runs when the
/// reclaimer zaps a page it has marked BEING_RECLAIMED (block phase, enclave lock not held).
struct ZapHookMm {
    on_zap: Mutex<Box<dyn FnMut(u64) + Send>>,
}

impl AddressSpace for ZapHookMm {
    fn id(&self) -> MmId {
        MmId::MAX
    }

    fn alive(&self) -> bool {
        true
    }

    fn zap(&self, addr: u64) {
        if let Ok(mut on_zap) = self.on_zap.try_lock() {
            on_zap(addr);
        }
    }

    fn test_and_clear_young(&self, _addr: u64) -> bool {
        false
    }
}

/// A machine, a process with a thread, and the enclaves it opened: closed (and their ranges
/// unmapped) by `teardown`, which checks the kernel log and the EPC.
struct World {
    m: Machine,
    p: Arc<Process>,
    t: SimThread,
    fds: Vec<i32>,
    maps: Vec<(u64, u64)>,
}

impl World {
    fn new(m: Machine) -> World {
        let p = m.process();
        let t = m.thread(&p);
        p.mmap(ARG, 0x4000, RW, MapKind::Private, None).unwrap();
        World { m, p, t, fds: Vec::new(), maps: Vec::new() }
    }

    /// The selftests' enclave with `heap_pages` of heap in an ELRANGE of at least `min_size`.
    fn loaded(m: Machine, heap_pages: u64, min_size: u64) -> (World, TestEnclave) {
        let mut w = World::new(m);
        let e = TestEnclave::load_sized(&mut w.t, heap_pages * PAGE, min_size).expect("the test enclave loads");
        w.fds.push(e.fd);
        w.maps.push((e.base, e.size));
        (w, e)
    }

    fn open(&mut self) -> i32 {
        let fd = self.p.open("/dev/sgx_enclave").unwrap();
        self.fds.push(fd);
        fd
    }

    fn encl(&self, fd: i32) -> Arc<Encl> {
        self.p.enclave(fd).unwrap()
    }

    fn map(&mut self, addr: u64, len: u64, prot: Prot, fd: i32) -> KResult<u64> {
        let mapped = self.p.mmap(addr, len, prot, MapKind::Shared, Some(fd))?;
        self.maps.push((addr, len));
        Ok(mapped)
    }

    fn ioctl<T: IntoBytes + Immutable>(&mut self, fd: i32, cmd: u32, arg: &T) -> KResult<()> {
        self.p.write_user(ARG, arg.as_bytes()).unwrap();
        self.t.ioctl(fd, cmd, ARG)
    }

    /// CREATE of the hand-built enclave's SECS (ELRANGE [BASE, BASE + size)).
    fn create(&mut self, fd: i32, size: u64) {
        let mut secs = Secs::new_zeroed();
        secs.baseaddr = BASE;
        secs.size = size;
        secs.ssaframesize = 1;
        secs.attributes = Attributes::new(AttributesFlags::MODE64BIT, 0x3);
        self.p.write_user(ARG + 0x1000, secs.as_bytes()).unwrap();
        self.ioctl(fd, SGX_IOC_ENCLAVE_CREATE, &SgxEnclaveCreate { src: ARG + 0x1000 }).unwrap();
    }

    fn add(&mut self, fd: i32, src: u64, offset: u64, pages: u64, secinfo: u64, flags: u64) {
        let secinfo = Secinfo::new(SecinfoFlags::from_bits_retain(secinfo));
        self.p.write_user(ARG + 0x2000, secinfo.as_bytes()).unwrap();
        let arg = SgxEnclaveAddPages { src, offset, length: pages * PAGE, secinfo: ARG + 0x2000, flags, count: 0 };
        self.ioctl(fd, SGX_IOC_ENCLAVE_ADD_PAGES, &arg).unwrap();
    }

    /// The hand-built image: sources, ADD_PAGES (measured), and its SIGSTRUCT.
    fn add_image(&mut self, fd: i32) -> Sigstruct {
        if !self.p.is_mapped(SRC, PAGE) {
            self.p.mmap(SRC, SRC_PAGES * PAGE, RW, MapKind::Private, None).unwrap();
            let mut tcs = Tcs::new_zeroed();
            (tcs.ossa, tcs.nssa, tcs.oentry, tcs.fslimit, tcs.gslimit) = (3 * PAGE, 1, PAGE, !0, !0);
            self.p.write_user(SRC, tcs.as_bytes()).unwrap();
            for i in 1..SRC_PAGES {
                self.p.write_user(SRC + i * PAGE, &[i as u8; PAGE_SIZE]).unwrap();
            }
        }
        let mut measurement = MeasurementState::new();
        measurement.ecreate(1, SIZE);
        for (offset, pages, secinfo, _) in IMAGE {
            self.add(fd, SRC + offset, offset, pages, secinfo, SGX_PAGE_MEASURE);
            for at in (offset..offset + pages * PAGE).step_by(PAGE_SIZE) {
                measurement.eadd(at, secinfo);
                let mut contents = vec![0u8; PAGE_SIZE];
                self.p.read_user(SRC + at, &mut contents).unwrap();
                for (i, chunk) in contents.chunks_exact(256).enumerate() {
                    measurement.eextend(at + 256 * i as u64, chunk.try_into().unwrap());
                }
            }
        }
        let mut sig = Sigstruct::new_unsigned();
        sig.attributes = Attributes::new(AttributesFlags::MODE64BIT, 0x3);
        sig.enclavehash = measurement.finalize();
        sgxemu_crypto::sign(&mut sig, &sgxemu_cpu::testkit::test_signing_key()).unwrap();
        sig
    }

    fn init(&mut self, fd: i32, sig: &Sigstruct) {
        self.p.write_user(ARG + 0x3000, sig.as_bytes()).unwrap();
        self.ioctl(fd, SGX_IOC_ENCLAVE_INIT, &SgxEnclaveInit { sigstruct: ARG + 0x3000 }).unwrap();
    }

    /// A user-mode #PF at `addr` with `code`, as the x86 fault path handles it.
    fn fault(&mut self, addr: u64, code: PfErrorCode) -> FaultResolution {
        self.p.handle_fault(&mut self.t.kernel, addr, code)
    }

    fn enter(&mut self, tcs: u64, program: Vec<Step>) -> Exit {
        self.t.enter(tcs, EENTER, Some(program))
    }

    fn free(&self) -> usize {
        self.m.sgx.free_pages()
    }

    /// EAUGs the test thread's kernel CPU has executed (faults from `fault` and `enter` run
    /// there).
    fn eaugs(&self) -> u64 {
        self.t.kernel.lp.stats().encls[Encls::Eaug as usize]
    }

    /// The EPCM's view of the page a PTE points at: (enclave address, page type).
    fn pte_target(&self, addr: u64) -> Option<(u64, PageType)> {
        let pte = self.p.pte(addr)?;
        let index = self.m.processor.epc_index(pte.pa)?;
        let view = self.m.processor.epcm_view(index);
        Some((view.enclave_address, view.page_type))
    }

    fn teardown(mut self) {
        for &(addr, len) in &self.maps {
            self.p.munmap(addr, len).unwrap();
        }
        for &fd in &self.fds {
            self.p.close(&mut self.t.kernel, fd).unwrap();
        }
        assert!(self.m.sgx.warnings().is_empty(), "{:?}", self.m.sgx.warnings());
        assert_eq!(self.m.sgx.free_pages() as u64, self.m.processor.epc_pages(), "every EPC page is back");
    }
}

/// A clean EEXIT.
fn assert_exited(exit: &Exit) {
    assert!(exit.exited(), "{exit:?}");
}

/// The vDSO reported a #PF taken inside the enclave.
fn assert_pf(exit: &Exit, code: u16, addr: u64) {
    assert_eq!(exit.ret, 0);
    assert_eq!(
        (exit.run.function, exit.run.exception_vector, exit.run.exception_error_code, exit.run.exception_addr),
        (ERESUME, VECTOR_PF, code, addr),
        "{exit:?}"
    );
}

// ---- §4 mmap / may_map / mprotect ---------------------------------------------------------

#[test]
fn mmap_with_map_private_is_einval() {
    let (mut w, e) = World::loaded(Machine::with_epc(EPC), 1, 0);
    let buffer = e.base + layout::BUFFER;
    let text = e.base + layout::TEXT;
    assert_eq!(w.p.mmap(buffer, PAGE, R, MapKind::Private, Some(e.fd)), Err(Errno::EINVAL));
    // Where MAP_SHARED would be EACCES (beyond max-prot, outside ELRANGE), still EINVAL.
    assert_eq!(w.p.mmap(text, PAGE, RWX, MapKind::Private, Some(e.fd)), Err(Errno::EINVAL));
    assert_eq!(w.p.mmap(e.base - PAGE, 2 * PAGE, R, MapKind::Private, Some(e.fd)), Err(Errno::EINVAL));
    w.p.read_implies_exec.store(true, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(w.p.mmap(buffer, PAGE, R, MapKind::Private, Some(e.fd)), Err(Errno::EINVAL));
    w.p.read_implies_exec.store(false, std::sync::atomic::Ordering::Relaxed);
    // A fresh enclave file too.
    let fd = w.open();
    assert_eq!(w.p.mmap(BASE, PAGE, R, MapKind::Private, Some(fd)), Err(Errno::EINVAL));
    assert_eq!(w.map(buffer, PAGE, R, e.fd), Ok(buffer));
    w.teardown();
}

#[test]
fn mmap_before_create_or_init_is_allowed_anywhere() {
    let mut w = World::new(Machine::with_epc(EPC));
    let fd = w.open();
    for (addr, prot) in [(0x4000_0000, RWX), (BASE - PAGE, RWX), (0x300_0000_0000, R)] {
        assert_eq!(w.map(addr, 2 * PAGE, prot, fd), Ok(addr), "before CREATE at {addr:#x}");
    }
    w.create(fd, SIZE);
    for addr in [BASE - PAGE, BASE + SIZE - PAGE, BASE + SIZE, 0x5000_0000] {
        assert_eq!(w.map(addr, 2 * PAGE, RWX, fd), Ok(addr), "before INIT at {addr:#x}");
    }
    w.teardown();
}

#[test]
fn mmap_beyond_a_pages_max_prot_is_eacces() {
    let (mut w, e) = World::loaded(Machine::with_epc(EPC), 1, 0);
    let (tcs, text, buffer) = (e.base + layout::TCS1, e.base + layout::TEXT, e.base + layout::BUFFER);
    let cases = [
        (text, RW, Err(Errno::EACCES)),
        (text, RWX, Err(Errno::EACCES)),
        (text, Prot::WRITE, Err(Errno::EACCES)),
        (text, R, Ok(())),
        (text, RX, Ok(())),
        (text, Prot::EXEC, Ok(())),
        (text, NONE, Ok(())),
        (tcs, RWX, Err(Errno::EACCES)),
        (tcs, RX, Err(Errno::EACCES)),
        (tcs, RW, Ok(())),
        (buffer, RWX, Err(Errno::EACCES)),
        (buffer, RW, Ok(())),
    ];
    for (addr, prot, expected) in cases {
        assert_eq!(w.map(addr, PAGE, prot, e.fd).map(drop), expected, "{addr:#x} {prot:?}");
    }
    // Every page of the range counts: RW over [TCS2, TEXT+PAGE) fails on the text page.
    assert_eq!(w.map(e.base + layout::TCS2, 2 * PAGE, RW, e.fd), Err(Errno::EACCES));
    // RWX over the last heap page and the holes after it fails on the heap page.
    let last_heap = e.first_unbacked() - PAGE;
    assert_eq!(w.map(last_heap, e.base + e.size - last_heap, RWX, e.fd), Err(Errno::EACCES));
    w.teardown();
}

#[test]
fn mmap_over_holes_is_unrestricted() {
    let (mut w, e) = World::loaded(Machine::with_epc(EPC), 1, 0);
    let hole = e.first_unbacked();
    for prot in [RWX, Prot::WRITE | Prot::EXEC, Prot::EXEC, R] {
        assert_eq!(w.map(hole, e.base + e.size - hole, prot, e.fd), Ok(hole), "{prot:?}");
    }
    // Before the pages exist, any protection over where they will be.
    let mut w2 = World::new(Machine::with_epc(EPC));
    let fd = w2.open();
    w2.create(fd, SIZE);
    assert_eq!(w2.map(BASE, SIZE, RWX, fd), Ok(BASE));
    w2.teardown();
    w.teardown();
}

#[test]
fn mmap_outside_elrange_after_init_is_eacces() {
    let (mut w, e) = World::loaded(Machine::with_epc(EPC), 1, 0);
    let end = e.base + e.size;
    for (addr, len) in [(e.base - PAGE, 2 * PAGE), (end - PAGE, 2 * PAGE), (end, PAGE), (e.base - PAGE, PAGE)] {
        assert_eq!(w.map(addr, len, NONE, e.fd), Err(Errno::EACCES), "[{addr:#x}, +{len:#x})");
    }
    assert_eq!(w.map(e.base, e.size, NONE, e.fd), Ok(e.base), "exactly ELRANGE");
    // Before INIT the same ranges are fine.
    let fd = w.open();
    w.create(fd, SIZE);
    let sig = w.add_image(fd);
    for (addr, len) in [(BASE - PAGE, 2 * PAGE), (BASE + SIZE - PAGE, 2 * PAGE), (BASE + SIZE, PAGE)] {
        assert_eq!(w.map(addr, len, NONE, fd), Ok(addr));
    }
    w.init(fd, &sig);
    assert_eq!(w.map(BASE + SIZE, PAGE, NONE, fd), Err(Errno::EACCES));
    w.teardown();
}

#[test]
fn read_implies_exec_is_always_eacces() {
    let (mut w, e) = World::loaded(Machine::with_epc(EPC), 1, 0);
    let fd = w.open();
    w.p.read_implies_exec.store(true, std::sync::atomic::Ordering::Relaxed);
    for prot in [NONE, R, RW, RWX] {
        assert_eq!(w.map(e.first_unbacked(), PAGE, prot, e.fd), Err(Errno::EACCES), "hole {prot:?}");
        assert_eq!(w.map(e.base + layout::TEXT, PAGE, prot, e.fd), Err(Errno::EACCES), "text {prot:?}");
        assert_eq!(w.map(BASE, PAGE, prot, fd), Err(Errno::EACCES), "before CREATE {prot:?}");
    }
    w.p.read_implies_exec.store(false, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(w.map(BASE, PAGE, R, fd), Ok(BASE));
    w.teardown();
}

#[test]
fn mprotect_follows_the_may_map_rules() {
    let (mut w, e) = World::loaded(Machine::with_epc(EPC), 1, 0);
    let (text, buffer, hole) = (e.base + layout::TEXT, e.base + layout::BUFFER, e.first_unbacked());
    // Beyond max-prot: refused, the VMA keeps RX (an instruction fetch maps an executable PTE).
    assert_eq!(w.p.mprotect(text, PAGE, RW), Err(Errno::EACCES));
    assert_eq!(w.p.mprotect(text, PAGE, RWX), Err(Errno::EACCES));
    assert_eq!(w.fault(text, PF_IU), FaultResolution::Retry);
    let pte = w.p.pte(text).unwrap();
    assert!(pte.executable && !pte.writable);
    // Within max-prot, both ways.
    assert_eq!(w.p.mprotect(buffer, PAGE, R), Ok(()));
    assert_eq!(w.p.mprotect(buffer, PAGE, RW), Ok(()));
    assert_eq!(w.p.mprotect(text, PAGE, NONE), Ok(()));
    // Holes: anything.
    w.map(hole, PAGE, NONE, e.fd).unwrap();
    assert_eq!(w.p.mprotect(hole, PAGE, RWX), Ok(()));
    // READ_IMPLIES_EXEC.
    w.p.read_implies_exec.store(true, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(w.p.mprotect(hole, PAGE, R), Err(Errno::EACCES));
    assert_eq!(w.p.mprotect(buffer, PAGE, NONE), Err(Errno::EACCES));
    w.p.read_implies_exec.store(false, std::sync::atomic::Ordering::Relaxed);
    // A VMA mapped outside ELRANGE before INIT can no longer be changed after INIT.
    let fd = w.open();
    w.create(fd, SIZE);
    let sig = w.add_image(fd);
    w.map(BASE + SIZE, PAGE, R, fd).unwrap();
    assert_eq!(w.p.mprotect(BASE + SIZE, PAGE, RW), Ok(()), "before INIT");
    w.init(fd, &sig);
    assert_eq!(w.p.mprotect(BASE + SIZE, PAGE, R), Err(Errno::EACCES));
    w.teardown();
}

// ---- §5 the fault handler -----------------------------------------------------------------

#[test]
fn a_vma_without_an_enclave_gets_sigbus() {
    let (mut w, e) = World::loaded(Machine::with_epc(EPC), 1, 0);
    let encl = w.encl(e.fd);
    assert_eq!(encl.fault(&mut w.t.kernel, None, e.base + layout::BUFFER), FaultResult::SigBus);
    assert_eq!(encl.fault(&mut w.t.kernel, None, e.first_unbacked()), FaultResult::SigBus);
    assert_eq!(encl.page_record(e.first_unbacked()), None, "no EAUG");
    w.teardown();
}

#[test]
fn a_resident_page_is_mapped_with_the_vmas_protections() {
    let (mut w, e) = World::loaded(Machine::with_epc(EPC), 1, 0);
    let (tcs, text, buffer) = (e.base + layout::TCS1, e.base + layout::TEXT, e.base + layout::BUFFER);
    for addr in [tcs, text, buffer] {
        assert_eq!(w.p.pte(addr), None, "nothing mapped before the first access");
    }
    // A read of the RW buffer: writable, not executable, accessed bit cleared (aging hint).
    assert_eq!(w.fault(buffer + 0x123, PF_U), FaultResolution::Retry);
    let pte = w.p.pte(buffer).unwrap();
    assert_eq!((pte.writable, pte.executable, pte.young), (true, false, false));
    assert_eq!(w.pte_target(buffer), Some((buffer, PageType::Reg)));
    // The RX text: executable, read-only.
    assert_eq!(w.fault(text, PF_IU), FaultResolution::Retry);
    let pte = w.p.pte(text).unwrap();
    assert_eq!((pte.writable, pte.executable, pte.young), (false, true, false));
    assert_eq!(w.pte_target(text), Some((text, PageType::Reg)));
    // The protections come from the VMA, not from max-prot: the data page mapped R.
    let data = e.data_start();
    w.p.mprotect(data, PAGE, R).unwrap();
    assert_eq!(w.fault(data, PF_U), FaultResolution::Retry);
    let pte = w.p.pte(data).unwrap();
    assert_eq!((pte.writable, pte.executable), (false, false));
    // Entering maps the TCS through the same handler; the enclave's accesses set the
    // accessed bit.
    assert_exited(&w.enter(e.tcs1(), e.put_to_buffer(MAGIC)));
    assert_eq!(w.pte_target(tcs), Some((tcs, PageType::Tcs)));
    assert!(w.p.pte(buffer).unwrap().young);
    let exit = w.enter(e.tcs1(), e.get_from_buffer());
    assert_eq!(exit.results, vec![MAGIC]);
    w.teardown();
}

#[test]
fn a_vma_asking_more_than_max_prot_gets_sigbus() {
    let mut w = World::new(Machine::with_epc(EPC));
    let fd = w.open();
    w.create(fd, SIZE);
    // Mapped RWX while ELRANGE is all holes; then the pages arrive with smaller max-prot.
    w.map(BASE, SIZE, RWX, fd).unwrap();
    let sig = w.add_image(fd);
    w.init(fd, &sig);
    for (offset, code) in [(PAGE, PF_IU), (PAGE, PF_U), (0, PF_U), (2 * PAGE, PF_WU)] {
        assert_eq!(w.fault(BASE + offset, code), FaultResolution::Bus, "page {offset:#x}");
        assert_eq!(w.p.pte(BASE + offset), None);
    }
    let encl = w.encl(fd);
    let mut vma = TestVma::new(RWX);
    assert_eq!(encl.fault(&mut w.t.kernel, Some(&mut vma), BASE + PAGE), FaultResult::SigBus);
    assert!(vma.inserted.is_empty());
    // mprotect down to the page's max-prot (allowed), and the same fault maps the page.
    w.p.mprotect(BASE + PAGE, PAGE, RX).unwrap();
    assert_eq!(w.fault(BASE + PAGE, PF_IU), FaultResolution::Retry);
    assert_eq!(w.pte_target(BASE + PAGE), Some((BASE + PAGE, PageType::Reg)));
    w.teardown();
}

#[test]
fn a_hole_of_an_initialized_sgx2_enclave_is_eaugd() {
    let (mut w, e) = World::loaded(Machine::with_epc(EPC), 1, 0);
    let hole = e.first_unbacked();
    w.map(hole, 2 * PAGE, RWX, e.fd).unwrap();
    let free = w.free();
    // A write from inside: EAUG, then the retried write takes the PENDING page's SGX #PF.
    let exit = w.enter(e.tcs1(), e.put_to_address(hole, MAGIC));
    assert_pf(&exit, 0x8007, hole);
    assert_eq!(w.encl(e.fd).page_record(hole), Some((PageType::Reg, RWX, true)));
    assert_eq!(w.free(), free - 1);
    assert_eq!(w.pte_target(hole), Some((hole, PageType::Reg)));
    let pte = w.p.pte(hole).unwrap();
    assert!(pte.writable && pte.executable, "the VMA's protections");
    let view = w.m.processor.epcm_view(w.m.processor.epc_index(pte.pa).unwrap());
    assert_eq!(view.flags.bits() & 0xFF, 0x0B, "EPCM: R, W, PENDING");
    // EACCEPT from the other TCS, then the write completes.
    let accept = w.enter(e.tcs2(), e.eaccept(e.tcs2(), hole, ACCEPT_RW_REG_PENDING));
    assert_exited(&accept);
    assert_eq!(accept.results[0], 0);
    assert_exited(&w.t.enter(e.tcs1(), ERESUME, None));
    assert_eq!(w.enter(e.tcs1(), e.get_from_address(hole)).results, vec![MAGIC]);
    // An access from outside (a read) EAUGs too; the page stays PENDING.
    let hole2 = hole + PAGE;
    assert_eq!(w.fault(hole2, PF_U), FaultResolution::Retry);
    assert_eq!(w.encl(e.fd).page_record(hole2), Some((PageType::Reg, RWX, true)));
    assert_eq!(w.pte_target(hole2), Some((hole2, PageType::Reg)));
    w.teardown();
}

#[test]
fn a_1_tib_enclave_costs_only_the_pages_it_uses() {
    // ELRANGE is address space: creating, mapping and mprotecting a 1 TiB enclave, and an
    // EAUG at its very top, cost what is touched, not what is spanned.
    let started = std::time::Instant::now();
    let (mut w, e) = World::loaded(Machine::with_epc(EPC), 1, 1 << 40);
    assert_eq!(e.size, 1 << 40);
    w.map(e.base + e.size / 2, e.size / 2, RW, e.fd).unwrap();
    w.p.mprotect(e.base + e.size / 2, e.size / 2, RWX).unwrap();
    let top = e.base + e.size - PAGE;
    let free = w.free();
    let exit = w.enter(e.tcs1(), e.put_to_address(top, MAGIC));
    assert_pf(&exit, 0x8007, top);
    assert_eq!(w.free(), free - 1, "one EAUG");
    let accept = w.enter(e.tcs2(), e.eaccept(e.tcs2(), top, ACCEPT_RW_REG_PENDING));
    assert_exited(&accept);
    assert_eq!(accept.results[0], 0);
    assert_exited(&w.t.enter(e.tcs1(), ERESUME, None));
    assert_eq!(w.enter(e.tcs1(), e.get_from_address(top)).results, vec![MAGIC]);
    w.teardown();
    let elapsed = started.elapsed();
    assert!(elapsed < std::time::Duration::from_millis(500), "{elapsed:?}");
}

#[test]
fn a_hole_on_sgx1_is_sigbus() {
    let (mut w, e) = World::loaded(sgx1_machine(EPC), 1, 0);
    let hole = e.first_unbacked();
    w.map(hole, PAGE, RW, e.fd).unwrap();
    let free = w.free();
    let exit = w.enter(e.tcs1(), e.put_to_address(hole, MAGIC));
    assert_pf(&exit, 0x6, hole);
    assert_eq!(w.fault(hole, PF_WU), FaultResolution::Bus);
    let mut vma = TestVma::new(RW);
    assert_eq!(w.encl(e.fd).fault(&mut w.t.kernel, Some(&mut vma), hole), FaultResult::SigBus);
    assert_eq!(w.encl(e.fd).page_record(hole), None);
    assert_eq!(w.free(), free);
    assert_eq!(w.p.pte(hole), None);
    assert_eq!(w.eaugs(), 0);
    // The TCS2 still works: the failed fault left nothing behind.
    assert_exited(&w.enter(e.tcs2(), e.nop()));
    w.teardown();
}

#[test]
fn a_hole_before_init_is_sigbus() {
    let mut w = World::new(Machine::with_epc(EPC));
    let fd = w.open();
    w.create(fd, SIZE);
    w.map(BASE, SIZE, RW, fd).unwrap();
    let free = w.free();
    assert_eq!(w.fault(BASE + 8 * PAGE, PF_WU), FaultResolution::Bus, "after CREATE");
    assert_eq!(w.eaugs(), 0, "refused before trying EAUG");
    let sig = w.add_image(fd);
    let free_after_add = w.free();
    assert_eq!(w.fault(BASE + 8 * PAGE, PF_U), FaultResolution::Bus, "after ADD_PAGES");
    assert_eq!(w.eaugs(), 0);
    assert_eq!(w.encl(fd).page_record(BASE + 8 * PAGE), None);
    assert_eq!(w.free(), free_after_add);
    assert!(free_after_add < free);
    // An added page maps before INIT.
    assert_eq!(w.fault(BASE + 2 * PAGE, PF_WU), FaultResolution::Retry);
    assert_eq!(w.pte_target(BASE + 2 * PAGE), Some((BASE + 2 * PAGE, PageType::Reg)));
    // After INIT the same hole is EAUG'd.
    w.init(fd, &sig);
    assert_eq!(w.fault(BASE + 8 * PAGE, PF_WU), FaultResolution::Retry);
    assert_eq!(w.eaugs(), 1);
    assert_eq!(w.encl(fd).page_record(BASE + 8 * PAGE), Some((PageType::Reg, RWX, true)));
    w.teardown();
}

#[test]
fn a_write_through_a_read_only_vma_over_a_hole_is_sigsegv_without_eaug() {
    let (mut w, e) = World::loaded(Machine::with_epc(EPC), 1, 0);
    let (hole, hole2) = (e.first_unbacked(), e.first_unbacked() + PAGE);
    w.map(hole, PAGE, R, e.fd).unwrap();
    w.map(hole2, PAGE, NONE, e.fd).unwrap();
    let free = w.free();
    assert_eq!(w.fault(hole, PF_WU), FaultResolution::Segv);
    assert_eq!(w.fault(hole2, PF_U), FaultResolution::Segv);
    assert_eq!(w.fault(hole, PF_IU), FaultResolution::Segv, "an instruction fetch from an R VMA");
    let exit = w.enter(e.tcs1(), e.put_to_address(hole, MAGIC));
    assert_pf(&exit, 0x6, hole);
    let exit = w.enter(e.tcs2(), e.get_from_address(hole2));
    assert_pf(&exit, 0x4, hole2);
    for addr in [hole, hole2] {
        assert_eq!(w.encl(e.fd).page_record(addr), None, "no EAUG");
        assert_eq!(w.p.pte(addr), None);
    }
    assert_eq!(w.free(), free);
    assert_eq!(w.eaugs(), 0);
    // A read through the R VMA is allowed to reach the driver: EAUG.
    assert_eq!(w.fault(hole, PF_U), FaultResolution::Retry);
    assert_eq!(w.encl(e.fd).page_record(hole), Some((PageType::Reg, RWX, true)));
    w.teardown();
}

#[test]
fn a_reclaimed_page_is_reloaded_bit_identical_secs_first() {
    let heap_pages = 4;
    let (mut w, e) = World::loaded(Machine::with_epc(EPC), heap_pages, 0);
    let heap = e.base + layout::HEAP;
    let pattern = |page: u64| -> Vec<u8> { (0..PAGE_SIZE).map(|i| (i as u64 * 7 + page * 131) as u8).collect() };
    for page in 0..heap_pages {
        let store = vec![Step::Store { addr: heap + page * PAGE, data: pattern(page) }, Step::Exit];
        assert_exited(&w.enter(e.tcs1(), store));
    }
    assert_exited(&w.enter(e.tcs1(), e.put_to_buffer(MAGIC)));
    // Reclaim everything: all children, then the SECS (the enclave is initialized).
    let encl = w.encl(e.fd);
    let mut cpu = w.m.kernel_cpu();
    for _ in 0..16 {
        if encl.info().resident == 0 && !encl.info().secs_resident {
            break;
        }
        w.m.reclaim_batch(&mut cpu);
    }
    let info = encl.info();
    assert_eq!((info.resident, info.secs_resident), (0, false), "{info:?}");
    assert!(info.backing_bytes > 0);
    for page in 0..heap_pages {
        assert_eq!(encl.page_record(heap + page * PAGE), Some((PageType::Reg, RW, false)));
        assert_eq!(w.p.pte(heap + page * PAGE), None, "zapped");
    }
    // A fault from outside: ELDU of the SECS, then of the page.
    assert_eq!(w.fault(heap, PF_U), FaultResolution::Retry);
    let info = encl.info();
    assert_eq!((info.resident, info.secs_resident), (1, true));
    let contents = |w: &World, addr: u64| {
        let pa = w.p.pte(addr).unwrap().pa;
        let mut bytes = vec![0u8; PAGE_SIZE];
        w.m.processor.read_epc(w.m.processor.epc_index(pa).unwrap(), 0, &mut bytes);
        bytes
    };
    assert_eq!(contents(&w, heap), pattern(0));
    // Every other page through the enclave (TCS, SSA and stack reload on the way).
    for page in 1..heap_pages {
        let addr = heap + page * PAGE;
        let loads: Vec<Step> = [0, 8, 0x800, PAGE - 8]
            .iter()
            .map(|&off| Step::Load { addr: addr + off, len: 8 })
            .chain([Step::Exit])
            .collect();
        let exit = w.enter(e.tcs1(), loads);
        assert_exited(&exit);
        let expected: Vec<u64> = [0, 8, 0x800, PAGE_SIZE - 8]
            .iter()
            .map(|&off| u64::from_le_bytes(pattern(page)[off..off + 8].try_into().unwrap()))
            .collect();
        assert_eq!(exit.results, expected, "page {page}");
        assert_eq!(contents(&w, addr), pattern(page), "page {page}");
    }
    assert_eq!(w.enter(e.tcs1(), e.get_from_buffer()).results, vec![MAGIC]);
    // Reload every remaining page from outside: contents and PCMD pages leave the backing
    // store as they come back.
    let mut offset = 0;
    while offset < e.first_unbacked() - e.base {
        let code = if offset == layout::TEXT || offset == layout::TEXT + PAGE { PF_IU } else { PF_U };
        assert_eq!(w.fault(e.base + offset, code), FaultResolution::Retry, "{offset:#x}");
        offset += PAGE;
    }
    assert_eq!(encl.info().resident as usize, encl.info().pages);
    assert_eq!(encl.info().backing_bytes, 0);
    w.teardown();
}

#[test]
fn eaug_with_the_epc_exhausted_and_nothing_reclaimable_is_sigbus() {
    let (mut w, e) = World::loaded(Machine::with_epc(64 * PAGE), 1, 0);
    let hole = e.first_unbacked();
    w.map(hole, 2 * PAGE, RW, e.fd).unwrap();
    let encl = w.encl(e.fd);
    let mut cpu = w.m.kernel_cpu();
    for _ in 0..16 {
        if !encl.info().secs_resident {
            break;
        }
        w.m.reclaim_batch(&mut cpu);
    }
    assert!(!encl.info().secs_resident);
    // Uninitialized enclaves (VA + SECS each, never reclaimable) take all but one page.
    while w.free() > 1 {
        let fd = w.open();
        w.create(fd, SIZE);
    }
    assert_eq!(w.free(), 1);
    // The SECS reload takes the last page; EAUG finds none and nothing to reclaim.
    assert_eq!(w.fault(hole, PF_WU), FaultResolution::Bus);
    assert!(encl.info().secs_resident);
    assert_eq!(encl.page_record(hole), None);
    assert_eq!(w.free(), 0);
    // With the SECS resident: straight to the EPC allocation.
    assert_eq!(w.fault(hole, PF_U), FaultResolution::Bus);
    assert_eq!(w.eaugs(), 0, "no EPC page to EAUG into");
    let mut vma = TestVma::new(RW);
    assert_eq!(encl.fault(&mut w.t.kernel, Some(&mut vma), hole + PAGE), FaultResult::SigBus);
    assert_eq!(encl.page_record(hole + PAGE), None);
    assert_eq!(encl.info().page_cnt, 1 + encl.info().pages as u64, "no VA grow left behind");
    w.teardown();
}

#[test]
fn eaug_with_the_epc_busy_but_reclaimable_is_nopage_until_ksgxd_has_run() {
    let (mut w, e) = World::loaded(Machine::with_epc(64 * PAGE), 1, 0);
    // This test is ksgxd. (With 64 pages, fewer than ksgxd's stop mark, an inline ksgxd
    // would reclaim each page a fault just mapped, before the access is retried.)
    w.m.platform.set_external_ksgxd(true);
    let hole = e.first_unbacked();
    w.map(hole, PAGE, RW, e.fd).unwrap();
    // Another (uninitialized) enclave's pages, all reclaimable, fill the EPC.
    let fd = w.open();
    w.create(fd, 64 * PAGE);
    w.p.mmap(SRC, SRC_PAGES * PAGE, RW, MapKind::Private, None).unwrap();
    let mut offset = 0;
    while w.free() > 0 {
        let pages = (w.free() as u64).min(SRC_PAGES);
        w.add(fd, SRC, offset, pages, 0x203, 0);
        offset += pages * PAGE;
    }
    let encl = w.encl(e.fd);
    let mut vma = TestVma::new(RW);
    assert_eq!(encl.fault(&mut w.t.kernel, Some(&mut vma), hole), FaultResult::NoPage);
    assert!(vma.inserted.is_empty());
    assert_eq!(w.fault(hole, PF_WU), FaultResolution::Retry);
    assert_eq!(encl.page_record(hole), None, "nothing added yet");
    assert_eq!(w.free(), 0, "the fault path does not reclaim");
    assert!(w.m.sgx.ksgxd_should_run());
    let mut cpu = w.m.kernel_cpu();
    assert!(w.m.sgx.ksgxd_run(&mut cpu) > 0);
    assert_eq!(w.fault(hole, PF_WU), FaultResolution::Retry);
    assert_eq!(encl.page_record(hole), Some((PageType::Reg, RWX, true)));
    let accept = w.enter(e.tcs1(), e.eaccept(e.tcs1(), hole, ACCEPT_RW_REG_PENDING));
    assert_exited(&accept);
    assert_eq!(accept.results[0], 0);
    w.teardown();
}

#[test]
fn the_loser_of_two_faults_on_one_hole_gets_nopage() {
    let (mut w, e) = World::loaded(Machine::with_epc(EPC), 1, 0);
    let hole = e.first_unbacked();
    w.map(hole, PAGE, RW, e.fd).unwrap();
    let encl = w.encl(e.fd);
    // Both faults saw the hole; the winner adds the page first.
    let mut winner = TestVma::new(RW);
    assert_eq!(encl.fault(&mut w.t.kernel, Some(&mut winner), hole + 0x10), FaultResult::NoPage);
    assert_eq!(winner.inserted.len(), 1);
    let (free, info) = (w.free(), encl.info());
    // The loser then finds the page under the lock: NOPAGE (mainline: SIGBUS), nothing
    // allocated, the winner's page untouched.
    let mut loser = TestVma::new(RW);
    let mut cpu = w.m.kernel_cpu();
    assert_eq!(encl.fault_after_seeing_a_hole(&mut cpu, &mut loser, hole + 0x20), FaultResult::NoPage);
    assert!(loser.inserted.is_empty());
    assert_eq!((w.free(), encl.info()), (free, info));
    assert_eq!(encl.page_record(hole), Some((PageType::Reg, RWX, true)));
    // The loser's access is retried and maps the winner's page.
    assert_eq!(encl.fault(&mut cpu, Some(&mut loser), hole), FaultResult::NoPage);
    assert_eq!(loser.inserted, winner.inserted.iter().map(|&(_, pa)| (hole, pa)).collect::<Vec<_>>());
    // And the enclave can use it.
    let accept = w.enter(e.tcs1(), e.eaccept(e.tcs1(), hole, ACCEPT_RW_REG_PENDING));
    assert_exited(&accept);
    assert_eq!(accept.results[0], 0);
    assert_exited(&w.enter(e.tcs1(), e.put_to_address(hole, MAGIC)));
    assert_eq!(w.pte_target(hole).map(|(addr, _)| addr), Some(hole));
    w.teardown();
}

#[test]
fn two_threads_faulting_on_the_same_holes_both_get_nopage() {
    let holes = 32;
    let (mut w, e) = World::loaded(Machine::with_epc(EPC), 1, 64 * PAGE);
    let first = e.first_unbacked();
    w.map(first, holes * PAGE, RW, e.fd).unwrap();
    let encl = w.encl(e.fd);
    let free = w.free();
    let barrier = Barrier::new(2);
    // Per thread, per hole: the handler's result and the PTEs it inserted.
    type Outcomes = Vec<(FaultResult, Vec<(u64, u64)>)>;
    let results: Vec<Outcomes> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..2)
            .map(|_| {
                let (encl, barrier, mut cpu) = (&encl, &barrier, w.m.kernel_cpu());
                s.spawn(move || {
                    (0..holes)
                        .map(|i| {
                            let mut vma = TestVma::new(RW);
                            barrier.wait();
                            let result = encl.fault(&mut cpu, Some(&mut vma), first + i * PAGE);
                            (result, vma.inserted)
                        })
                        .collect()
                })
            })
            .collect();
        workers.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, (a, b)) in results[0].iter().zip(&results[1]).enumerate() {
        let addr = first + i as u64 * PAGE;
        assert_eq!((a.0, b.0), (FaultResult::NoPage, FaultResult::NoPage), "hole {i}");
        assert_eq!(encl.page_record(addr), Some((PageType::Reg, RWX, true)));
        // Whoever mapped something mapped the one page there is.
        let pas: Vec<u64> = a.1.iter().chain(&b.1).map(|&(_, pa)| pa).collect();
        assert!(!pas.is_empty() && pas.iter().all(|&pa| pa == pas[0]), "hole {i}: {pas:x?}");
    }
    assert_eq!(w.free(), free - holes as usize, "one EPC page per hole");
    assert_eq!(encl.info().page_cnt, 1 + encl.info().pages as u64);
    w.teardown();
}

#[test]
fn a_failed_pte_insert_is_sigbus_and_an_eaugd_page_stays_added() {
    let (mut w, e) = World::loaded(Machine::with_epc(EPC), 1, 0);
    let encl = w.encl(e.fd);
    let mut failing = TestVma::new(RW);
    failing.fail = true;
    // A resident page (step 4).
    assert_eq!(encl.fault(&mut w.t.kernel, Some(&mut failing), e.data_start()), FaultResult::SigBus);
    // A hole (§5.2 step 10): SIGBUS, but the page was added and a later fault maps it.
    let hole = e.first_unbacked();
    let free = w.free();
    assert_eq!(encl.fault(&mut w.t.kernel, Some(&mut failing), hole), FaultResult::SigBus);
    assert_eq!(encl.page_record(hole), Some((PageType::Reg, RWX, true)));
    assert_eq!(w.free(), free - 1);
    let mut vma = TestVma::new(RW);
    assert_eq!(encl.fault(&mut w.t.kernel, Some(&mut vma), hole), FaultResult::NoPage);
    assert_eq!(vma.inserted.len(), 1);
    assert_eq!(w.free(), free - 1, "no second EAUG");
    let pa = vma.inserted[0].1;
    let view = w.m.processor.epcm_view(w.m.processor.epc_index(pa).unwrap());
    assert_eq!((view.enclave_address, view.page_type), (hole, PageType::Reg));
    w.teardown();
}

#[test]
fn faults_needing_a_reload_while_the_epc_is_busy_are_nopage_until_ksgxd_has_run() {
    let (mut w, e) = World::loaded(Machine::with_epc(64 * PAGE), 1, 0);
    w.m.platform.set_external_ksgxd(true);
    let encl = w.encl(e.fd);
    let mut cpu = w.m.kernel_cpu();
    for _ in 0..16 {
        if !encl.info().secs_resident {
            break;
        }
        w.m.reclaim_batch(&mut cpu);
    }
    assert_eq!((encl.info().resident, encl.info().secs_resident), (0, false));
    let (heap, hole) = (e.base + layout::HEAP, e.first_unbacked());
    w.map(hole, PAGE, RW, e.fd).unwrap();
    // Another enclave's reclaimable pages take every free page.
    let fd = w.open();
    w.create(fd, 64 * PAGE);
    w.p.mmap(SRC, SRC_PAGES * PAGE, RW, MapKind::Private, None).unwrap();
    let mut offset = 0;
    while w.free() > 0 {
        let pages = (w.free() as u64).min(SRC_PAGES);
        w.add(fd, SRC, offset, pages, 0x203, 0);
        offset += pages * PAGE;
    }
    // A reclaimed page: its SECS cannot be reloaded (no free page, no reclaim) → NOPAGE.
    assert_eq!(w.fault(heap, PF_U), FaultResolution::Retry);
    assert_eq!(encl.page_record(heap), Some((PageType::Reg, RW, false)));
    // A hole: the same for EAUG's SECS reload.
    assert_eq!(w.fault(hole, PF_WU), FaultResolution::Retry);
    assert_eq!(encl.page_record(hole), None);
    assert!(!encl.info().secs_resident);
    assert_eq!(w.free(), 0);
    // ksgxd frees pages; the retried accesses succeed.
    assert!(w.m.sgx.ksgxd_run(&mut cpu) > 0);
    assert_eq!(w.fault(heap, PF_U), FaultResolution::Retry);
    assert_eq!(encl.page_record(heap), Some((PageType::Reg, RW, true)));
    assert!(encl.info().secs_resident);
    assert_eq!(w.fault(hole, PF_WU), FaultResolution::Retry);
    assert_eq!(encl.page_record(hole), Some((PageType::Reg, RWX, true)));
    w.teardown();
}

#[test]
fn eaug_needing_a_va_page_while_the_epc_is_busy_is_nopage_until_ksgxd_has_run() {
    // 511 child pages fill the first VA page (512 slots, the SECS's included); the 512th
    // child needs a second VA page. 514 EPC pages leave exactly one free page for it.
    let (mut w, e) = World::loaded(Machine::with_epc(514 * PAGE), 1, 512 * PAGE);
    w.m.platform.set_external_ksgxd(true);
    let encl = w.encl(e.fd);
    let first = e.first_unbacked();
    w.map(first, e.base + e.size - first, RW, e.fd).unwrap();
    let mut hole = first;
    while encl.info().page_cnt < 512 {
        assert_eq!(w.fault(hole, PF_U), FaultResolution::Retry);
        hole += PAGE;
    }
    assert_eq!((encl.info().va_pages, w.free()), (1, 1));
    // The EPC page is there, the VA page is not (and EAUG does not reclaim): NOPAGE, unwound.
    assert_eq!(w.fault(hole, PF_WU), FaultResolution::Retry);
    assert_eq!(encl.page_record(hole), None);
    let info = encl.info();
    assert_eq!((info.va_pages, info.page_cnt, w.free()), (1, 512, 1));
    let mut cpu = w.m.kernel_cpu();
    assert!(w.m.sgx.ksgxd_run(&mut cpu) > 0);
    assert_eq!(w.fault(hole, PF_WU), FaultResolution::Retry);
    assert_eq!(encl.page_record(hole), Some((PageType::Reg, RWX, true)));
    let info = encl.info();
    assert_eq!((info.va_pages, info.page_cnt), (2, 513));
    w.teardown();
}

#[test]
fn a_fault_on_a_page_being_reclaimed_is_nopage() {
    let (mut w, e) = World::loaded(Machine::with_epc(EPC), 1, 0);
    let encl = w.encl(e.fd);
    let heap = e.base + layout::HEAP;
    let seen: Arc<Mutex<Vec<(FaultResult, usize)>>> = Arc::default();
    let on_zap = {
        let (weak, seen, mut cpu) = (Arc::downgrade(&encl), seen.clone(), w.m.kernel_cpu());
        move |addr: u64| {
            if let Some(encl) = weak.upgrade().filter(|_| addr == heap) {
                let mut vma = TestVma::new(RW);
                let result = encl.fault(&mut cpu, Some(&mut vma), heap);
                seen.lock().unwrap().push((result, vma.inserted.len()));
            }
        }
    };
    encl.mm_add(Arc::new(ZapHookMm { on_zap: Mutex::new(Box::new(on_zap)) }));
    let mut cpu = w.m.kernel_cpu();
    assert!(w.m.reclaim_batch(&mut cpu) > 0);
    assert_eq!(*seen.lock().unwrap(), vec![(FaultResult::NoPage, 0)], "retry later, nothing mapped");
    assert_eq!(encl.page_record(heap), Some((PageType::Reg, RW, false)));
    // The retried fault reloads it.
    let mut vma = TestVma::new(RW);
    assert_eq!(encl.fault(&mut w.t.kernel, Some(&mut vma), heap), FaultResult::NoPage);
    assert_eq!(vma.inserted.len(), 1);
    assert_eq!(encl.page_record(heap), Some((PageType::Reg, RW, true)));
    w.teardown();
}
