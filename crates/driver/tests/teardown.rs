//! Enclave teardown (driver spec §7.1, with §3.2 step 9 and §6.4).
//!
//! Release runs when the last fd and the last VMA are gone, and returns every EPC page —
//! children (REG, TCS, TRIM, pending EAUG pages) first, then the SECS, then the VA pages — with
//! no warning (a SECS EREMOVE with children would fail with SGX_CHILD_PRESENT and leak with
//! the "EPC page was leaked" warning), every EPCM entry invalid and the backing store dropped:
//! * initialized enclave with REG, TCS (added and converted), TRIM, pending pages and two VA
//!   pages: `release_returns_every_page_of_an_initialized_enclave`;
//! * release only at the last reference: close with VMAs left keeps the enclave, the last
//!   munmap releases it; munmap first, close last: `release_waits_for_the_last_fd_and_vma`;
//! * pages evicted (backing dropped): `release_with_pages_evicted_drops_the_backing_store`;
//!   everything evicted, the SECS included: `release_with_everything_evicted_frees_the_va_pages`;
//! * the reclaimer holding pages at the time of release — in its aging step and in its
//!   block phase — frees them when it finds the enclave released, the SECS after the last:
//!   `release_while_the_reclaimer_ages_its_batch`, `release_while_the_reclaimer_blocks_its_batch`;
//! * closed before INIT (created with pages, some evicted; created only; never created):
//!   `release_before_init_returns_every_page`, `release_of_a_created_enclave_without_pages`,
//!   `release_of_an_enclave_never_created`.
//!
//! Release at the last reference to the file, which an ioctl in flight holds: closes
//! racing ADD_PAGES on another thread: `a_close_racing_ioctls_releases_the_enclave_after_the_last_call`.
//!
//! A driver bug met by a program's call is EIO with one warning, never a panic (an ioctl on
//! an enclave released while its file is open):
//! `an_ioctl_on_an_enclave_released_too_early_is_eio_with_one_warning`.
//!
//! §3.2 step 9, the ADD_PAGES EEXTEND-failure quirk: mainline leaves `secs_child_cnt` raised
//! and warns at teardown; our driver undoes it. A failing EEXTEND (provoked with the
//! `Cpu::inject_eextend_fault` test hook) makes the ioctl fail with EIO and `count` = the
//! pages done, the page is removed, and teardown is clean:
//! `eextend_failure_undoes_the_child_count_and_teardown_is_clean`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};

use sgxemu_arch::{Attributes, AttributesFlags, PAGE_SIZE, PageType, PfErrorCode, Secinfo, SecinfoFlags, Secs};
use sgxemu_cpu::EpcIndex;
use sgxemu_driver::os::{AddressSpace, MmId, Prot};
use sgxemu_driver::sim::{FaultResolution, Machine, MapKind, Process, SimThread, Step, TestEnclave, ioctl_at, layout};
use sgxemu_driver::{Encl, Errno, KResult};
use sgxemu_uapi::{
    EENTER, SGX_IOC_ENCLAVE_ADD_PAGES, SGX_IOC_ENCLAVE_CREATE, SGX_IOC_ENCLAVE_MODIFY_TYPES, SGX_PAGE_MEASURE,
    SGX_PAGE_TYPE_TCS, SGX_PAGE_TYPE_TRIM, SgxEnclaveAddPages, SgxEnclaveCreate, SgxEnclaveModifyTypes,
};
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes};

const PAGE: u64 = PAGE_SIZE as u64;
const MIB: u64 = 1 << 20;
const ARGS: u64 = 0x0030_0000;
const PENDING_RW: u64 = 0x20B;
const TRIM_MODIFIED: u64 = 0x410;
const TCS_MODIFIED: u64 = 0x110;
const IMAGE_PAGES: u64 = 11;
const MAX_RETRIES: usize = 10_000;

struct Env {
    m: Machine,
    p: Arc<Process>,
    t: SimThread,
    e: TestEnclave,
    encl: Arc<Encl>,
}

impl Env {
    fn new(epc: u64, heap_pages: u64, min_size: u64) -> Env {
        let m = Machine::with_epc(epc);
        let p = m.process();
        let mut t = m.thread(&p);
        let e = TestEnclave::load_sized(&mut t, heap_pages * PAGE, min_size).expect("the test enclave loads");
        p.mmap(ARGS, PAGE, Prot::READ | Prot::WRITE, MapKind::Private, None).expect("argument page");
        let encl = p.enclave(e.fd).expect("an enclave fd");
        Env { m, p, t, e, encl }
    }

    fn total(&self) -> usize {
        self.m.processor.epc_pages() as usize
    }

    fn ioctl<T: IntoBytes + FromBytes + Immutable>(&mut self, cmd: u32, arg: T) -> (KResult<()>, T) {
        ioctl(&mut self.t, self.e.fd, cmd, arg)
    }

    fn accept(&mut self, tcs: u64, addrs: &[u64], flags: u64) {
        let mut program = self.e.eaccept(tcs, 0, flags);
        let exit = program.pop().expect("Exit");
        let Step::Enclu { leaf, rbx, rdx, .. } = program.pop().expect("ENCLU") else { panic!("EACCEPT step") };
        program.extend(addrs.iter().map(|&rcx| Step::Enclu { leaf, rbx, rcx, rdx }));
        program.push(exit);
        let exit = self.t.enter(tcs, EENTER, Some(program));
        assert!(exit.exited(), "{:?}", exit.run);
        assert_eq!(exit.results, vec![0; addrs.len()], "every EACCEPT succeeds");
    }

    fn modify(&mut self, addr: u64, page_type: u64) {
        let arg = SgxEnclaveModifyTypes { offset: addr - self.e.base, length: PAGE, page_type, result: 0, count: 0 };
        let (result, out) = self.ioctl(SGX_IOC_ENCLAVE_MODIFY_TYPES, arg);
        assert_eq!((result, out.count, out.result), (Ok(()), PAGE, 0));
    }

    fn evict_all(&mut self) {
        let mut cpu = self.m.kernel_cpu();
        for _ in 0..MAX_RETRIES {
            if self.encl.info().resident == 0 {
                return;
            }
            self.m.reclaim_batch(&mut cpu);
        }
        panic!("could not evict every page: {:?}", self.encl.info());
    }

    /// munmap + close, then the checks every release must pass.
    fn release(mut self) {
        assert!(self.m.sgx.warnings().is_empty(), "{:?}", self.m.sgx.warnings());
        self.p.munmap(self.e.base, self.e.size).expect("munmap");
        self.p.close(&mut self.t.kernel, self.e.fd).expect("close");
        assert_released(&self.m, &self.encl);
    }
}

/// Every EPC page free, every EPCM entry invalid, no warning, nothing left in the enclave.
fn assert_released(m: &Machine, encl: &Encl) {
    assert!(m.sgx.warnings().is_empty(), "{:?}", m.sgx.warnings());
    assert_eq!(m.sgx.free_pages(), m.processor.epc_pages() as usize, "every EPC page came back");
    let valid: Vec<u32> =
        (0..m.processor.epc_pages() as u32).filter(|&i| m.processor.epcm_view(EpcIndex(i)).valid).collect();
    assert!(valid.is_empty(), "EPCM entries still valid: {valid:?}");
    assert!(encl.epc_pages().is_empty());
    let info = encl.info();
    assert_eq!((info.pages, info.resident, info.va_pages, info.secs_resident, info.backing_bytes), (0, 0, 0, false, 0));
    m.processor.check_invariants().expect("processor invariants");
}

fn ioctl<T: IntoBytes + FromBytes + Immutable>(t: &mut SimThread, fd: i32, cmd: u32, arg: T) -> (KResult<()>, T) {
    ioctl_at(t, fd, cmd, ARGS, arg)
}

/// The EPC pages the enclave holds, by EPCM page type.
fn held_by_type(m: &Machine, encl: &Encl) -> [usize; 5] {
    let mut counts = [0; 5];
    for page in encl.epc_pages() {
        let view = m.processor.epcm_view(page);
        assert!(view.valid, "{page:?} held by the driver is valid");
        counts[view.page_type as usize] += 1;
    }
    counts
}

// ---- initialized enclaves ---------------------------------------------------------------------

#[test]
fn release_returns_every_page_of_an_initialized_enclave() {
    // 512 heap pages: page_cnt 1 + 11 + 512 = 524 → two VA pages. Room for dynamic pages.
    let mut env = Env::new(4 * MIB, 512, 4 * MIB);
    let dynamic = env.e.first_unbacked();
    let rw = Prot::READ | Prot::WRITE;
    env.p.mmap(dynamic, 4 * PAGE, rw, MapKind::Shared, Some(env.e.fd)).expect("map the dynamic pages");
    // Three EAUGed and accepted pages; one becomes a TCS (§6.2), one is trimmed and accepted
    // (not removed), one stays REG; a fourth is EAUGed but never accepted (pending).
    let pages = [dynamic, dynamic + PAGE, dynamic + 2 * PAGE];
    env.accept(env.e.tcs1(), &pages, PENDING_RW);
    let exit = env.t.enter(env.e.tcs1(), EENTER, Some(env.e.init_tcs_page(pages[0], layout::SSA1, 0x23D3)));
    assert!(exit.exited());
    env.modify(pages[0], SGX_PAGE_TYPE_TCS);
    env.accept(env.e.tcs1(), &pages[..1], TCS_MODIFIED);
    env.modify(pages[1], SGX_PAGE_TYPE_TRIM);
    env.accept(env.e.tcs1(), &pages[1..2], TRIM_MODIFIED);
    let pending = dynamic + 3 * PAGE;
    assert_eq!(env.p.handle_fault(&mut env.t.kernel, pending, PfErrorCode::W), FaultResolution::Retry);
    assert_eq!(env.m.processor.epcm_view(held_page(&env, pending)).flags.bits() & 0x8, 0x8, "pending");
    // Everything resident: SECS, 2 TCS + 1 converted, REG, TRIM, 2 VA pages.
    let info = env.encl.info();
    assert_eq!((info.pages as u64, info.resident, info.va_pages), (IMAGE_PAGES + 512 + 4, IMAGE_PAGES + 512 + 4, 2));
    let counts = held_by_type(&env.m, &env.encl);
    assert_eq!(counts[PageType::Secs as usize], 1);
    assert_eq!(counts[PageType::Tcs as usize], 3);
    assert_eq!(counts[PageType::Trim as usize], 1);
    assert_eq!(counts[PageType::Va as usize], 2);
    assert_eq!(counts[PageType::Reg as usize], 9 + 512 + 2);
    assert_eq!(env.m.sgx.free_pages() + env.encl.epc_pages().len(), env.total());
    env.release();
}

/// The EPC page holding enclave page `addr`.
fn held_page(env: &Env, addr: u64) -> EpcIndex {
    env.encl
        .epc_pages()
        .into_iter()
        .find(|&p| {
            let view = env.m.processor.epcm_view(p);
            view.valid && view.enclave_address == addr && view.page_type != PageType::Secs
        })
        .expect("resident")
}

#[test]
fn release_waits_for_the_last_fd_and_vma() {
    let mut env = Env::new(MIB, 4, 0);
    let total = env.total();
    // close with the segments still mapped: nothing is released.
    env.p.close(&mut env.t.kernel, env.e.fd).expect("close");
    assert!(env.m.sgx.free_pages() < total);
    let exit = env.t.enter(env.e.tcs1(), EENTER, Some(env.e.put_to_buffer(42)));
    assert!(exit.exited(), "the enclave still runs through its mappings");
    // Unmapping all but the last mapped page keeps it; the last munmap releases it.
    let last = env.e.first_unbacked() - PAGE;
    env.p.munmap(env.e.base, last - env.e.base).expect("munmap");
    assert!(env.m.sgx.free_pages() < total);
    assert!(env.m.sgx.warnings().is_empty(), "{:?}", env.m.sgx.warnings());
    env.p.munmap(last, PAGE).expect("munmap");
    assert_released(&env.m, &env.encl);
}

#[test]
fn release_with_pages_evicted_drops_the_backing_store() {
    // 3× a 256 KiB EPC.
    let env = Env::new(256 * 1024, 192, 0);
    let info = env.encl.info();
    assert!(info.resident < info.pages as u64);
    assert!(info.secs_resident);
    assert!(info.backing_bytes > 0);
    env.release();
}

#[test]
fn release_with_everything_evicted_frees_the_va_pages() {
    let mut env = Env::new(MIB, 16, 0);
    env.evict_all();
    let info = env.encl.info();
    assert!(!info.secs_resident);
    assert_eq!(held_by_type(&env.m, &env.encl), [0, 0, 0, 1, 0], "only the VA page is left");
    env.release();
}

// ---- the reclaimer holds pages at release -----------------------------------------------

/// An address space the reclaimer walks: the first `zap` or `test_and_clear_young` (as
/// chosen) stops the reclaimer mid-batch, its 16 pages isolated, until the test opens it.
struct Gate {
    in_zap: bool,
    armed: AtomicBool,
    barrier: Barrier,
}

impl Gate {
    fn new(in_zap: bool) -> Gate {
        Gate { in_zap, armed: AtomicBool::new(true), barrier: Barrier::new(2) }
    }

    fn pass(&self, in_zap: bool) {
        if in_zap == self.in_zap && self.armed.swap(false, Ordering::AcqRel) {
            self.barrier.wait(); // the reclaimer holds its batch
            self.barrier.wait(); // the enclave was released
        }
    }
}

impl AddressSpace for Gate {
    fn id(&self) -> MmId {
        u64::MAX
    }

    fn alive(&self) -> bool {
        true
    }

    fn zap(&self, _addr: u64) {
        self.pass(true);
    }

    fn test_and_clear_young(&self, _addr: u64) -> bool {
        self.pass(false);
        false
    }
}

/// Releases the enclave while a reclaimer thread has a batch isolated (stopped by the
/// gate inside its walk of the enclave's address spaces). The walk holds the mm list, so
/// release — which drains the mm list last, as the kernel's waits for the list's readers —
/// runs on a third thread and finishes after the gate opens; everything before that
/// (the released flag, the pages, the VA pages, the backing store) is done while the
/// reclaimer holds its pages.
fn release_with_reclaimer_holding_a_batch(in_zap: bool) {
    let env = Env::new(MIB, 32, 0);
    let gate = Arc::new(Gate::new(in_zap));
    env.encl.mm_add(gate.clone());
    let resident = env.encl.info().resident;
    assert!(resident > 16);
    let Env { m, p, mut t, e, encl } = env;
    let freed = std::thread::scope(|s| {
        let reclaimer = s.spawn(|| {
            let mut cpu = m.kernel_cpu();
            m.reclaim_batch(&mut cpu)
        });
        gate.barrier.wait();
        let releaser = s.spawn(|| {
            p.munmap(e.base, e.size).expect("munmap");
            p.close(&mut t.kernel, e.fd).expect("close");
        });
        // Wait for release to have done its part under the enclave lock.
        let mut released = false;
        for _ in 0..MAX_RETRIES * 100 {
            if encl.info().va_pages == 0 {
                released = true;
                break;
            }
            std::thread::yield_now();
        }
        assert!(released, "release ran");
        // The reclaimer holds 16 pages: release skipped them and kept the SECS for them.
        let info = encl.info();
        assert_eq!((info.pages, info.resident, info.secs_resident), (0, 16, true), "{info:?}");
        assert_eq!(info.backing_bytes, 0);
        assert_eq!(held_by_type(&m, &encl), [1, 0, 0, 0, 0], "only the SECS: the held pages are the reclaimer's");
        assert!(m.sgx.warnings().is_empty(), "{:?}", m.sgx.warnings());
        gate.barrier.wait();
        releaser.join().expect("release");
        reclaimer.join().expect("the reclaimer")
    });
    assert_eq!(freed, 16 + 1, "the reclaimer freed its 16 pages, then the SECS");
    assert_released(&m, &encl);
}

#[test]
fn release_while_the_reclaimer_ages_its_batch() {
    release_with_reclaimer_holding_a_batch(false);
}

#[test]
fn release_while_the_reclaimer_blocks_its_batch() {
    release_with_reclaimer_holding_a_batch(true);
}

// ---- closed before INIT -----------------------------------------------------------------------

const SCRATCH: u64 = 0x0040_0000;
const SOURCE: u64 = 0x1000_0000;
const BASE: u64 = 0x100_0000_0000;

/// open + CREATE of a `size`-byte enclave; returns the fd.
fn create(t: &mut SimThread, size: u64) -> i32 {
    let p = t.process().clone();
    p.mmap(SCRATCH, 0x10000, Prot::READ | Prot::WRITE, MapKind::Private, None).expect("scratch");
    p.mmap(ARGS, PAGE, Prot::READ | Prot::WRITE, MapKind::Private, None).expect("argument page");
    let fd = p.open("/dev/sgx_enclave").expect("open");
    let mut secs = Secs::new_zeroed();
    secs.baseaddr = BASE;
    secs.size = size;
    secs.ssaframesize = 1;
    secs.attributes = Attributes::new(AttributesFlags::MODE64BIT, 0x3);
    p.write_user(SCRATCH, secs.as_bytes()).expect("SECS image");
    assert_eq!(ioctl(t, fd, SGX_IOC_ENCLAVE_CREATE, SgxEnclaveCreate { src: SCRATCH }).0, Ok(()));
    fd
}

/// ADD_PAGES of `pages` measured REG RW pages at `offset`; returns the result and `count`.
fn add(t: &mut SimThread, fd: i32, offset: u64, pages: u64) -> (KResult<()>, u64) {
    let p = t.process().clone();
    let len = pages * PAGE;
    p.mmap(SOURCE + offset, len, Prot::READ | Prot::WRITE, MapKind::Private, None).expect("source");
    for i in 0..pages {
        p.write_user(SOURCE + offset + i * PAGE, &(offset + i * PAGE).to_le_bytes()).expect("source");
    }
    p.write_user(SCRATCH + 0x1000, Secinfo::new(SecinfoFlags::from_bits_retain(0x203)).as_bytes()).expect("secinfo");
    let arg = SgxEnclaveAddPages {
        src: SOURCE + offset,
        offset,
        length: len,
        secinfo: SCRATCH + 0x1000,
        flags: SGX_PAGE_MEASURE,
        count: 0,
    };
    let (result, out) = ioctl(t, fd, SGX_IOC_ENCLAVE_ADD_PAGES, arg);
    (result, out.count)
}

#[test]
fn release_before_init_returns_every_page() {
    // 100 pages into a 64-page EPC: ADD_PAGES reclaims; the SECS of the uninitialized
    // enclave stays resident.
    let m = Machine::with_epc(64 * PAGE);
    let p = m.process();
    let mut t = m.thread(&p);
    let fd = create(&mut t, MIB);
    assert_eq!(add(&mut t, fd, 0, 100), (Ok(()), 100 * PAGE));
    let encl = p.enclave(fd).expect("enclave");
    let info = encl.info();
    assert!(!info.initialized);
    assert!(info.resident < 100 && info.backing_bytes > 0 && info.secs_resident);
    p.close(&mut t.kernel, fd).expect("close");
    assert_released(&m, &encl);
}

#[test]
fn an_ioctl_on_an_enclave_released_too_early_is_eio_with_one_warning() {
    // A broken invariant on a path a program reaches — here forced by releasing the
    // enclave while its descriptor is open (the platform must release only at the last
    // file reference) — makes the call fail with EIO, the kernel's answer to a driver bug,
    // and one warning names it. Nothing panics (ADD_PAGES used to assert that a created
    // enclave has its SECS).
    let m = Machine::with_epc(MIB);
    let p = m.process();
    let mut t = m.thread(&p);
    let fd = create(&mut t, MIB);
    let encl = p.enclave(fd).expect("enclave");
    encl.release(&mut t.kernel);
    assert_eq!(add(&mut t, fd, 0, 1), (Err(Errno::EIO), 0));
    let warnings = m.sgx.warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("driver bug") && warnings[0].contains("released"), "{warnings:?}");
    p.close(&mut t.kernel, fd).expect("close");
    assert_eq!(m.sgx.free_pages(), m.processor.epc_pages() as usize, "every page back");
}

#[test]
fn a_close_racing_ioctls_releases_the_enclave_after_the_last_call() {
    // An ioctl in flight holds a reference to the file (the kernel's fdget): a close from
    // another thread drops only the descriptor's, and the enclave is released when the
    // call returns. Every call completes or finds the descriptor gone (EBADF); no driver
    // bug is met, and every EPC page comes back.
    let m = Machine::with_epc(MIB);
    let p = m.process();
    let mut t = m.thread(&p);
    for round in 0..50 {
        let fd = create(&mut t, MIB);
        // Maps the source and writes the SECINFO the racing calls use.
        assert_eq!(add(&mut t, fd, 0, 1), (Ok(()), PAGE));
        let encl = p.enclave(fd).expect("enclave");
        let started = Barrier::new(2);
        std::thread::scope(|s| {
            s.spawn(|| {
                let mut cpu = m.kernel_cpu();
                let arg = SgxEnclaveAddPages {
                    src: SOURCE,
                    offset: 0,
                    length: PAGE,
                    secinfo: SCRATCH + 0x1000,
                    flags: SGX_PAGE_MEASURE,
                    count: 0,
                };
                let mut first = true;
                for page in 0.. {
                    let at = ARGS + (page % 8) * 0x40;
                    let arg = SgxEnclaveAddPages { offset: (page % 256) * PAGE, ..arg };
                    p.write_user(at, arg.as_bytes()).expect("argument");
                    let result = p.ioctl(&mut cpu, fd, SGX_IOC_ENCLAVE_ADD_PAGES, at);
                    if first {
                        started.wait();
                        first = false;
                    }
                    match result {
                        Err(Errno(9)) => break,
                        Ok(()) | Err(Errno::EBUSY) => {}
                        Err(e) => panic!("round {round}: ADD_PAGES {e:?}"),
                    }
                }
            });
            started.wait();
            let mut cpu = m.kernel_cpu();
            p.close(&mut cpu, fd).expect("close");
        });
        assert_released(&m, &encl);
    }
    assert_eq!(m.sgx.warnings(), Vec::<String>::new());
}

#[test]
fn release_of_a_created_enclave_without_pages() {
    let m = Machine::with_epc(MIB);
    let p = m.process();
    let mut t = m.thread(&p);
    let fd = create(&mut t, MIB);
    let encl = p.enclave(fd).expect("enclave");
    assert_eq!(m.sgx.free_pages(), m.processor.epc_pages() as usize - 2, "the SECS and a VA page");
    p.close(&mut t.kernel, fd).expect("close");
    assert_released(&m, &encl);
}

#[test]
fn release_of_an_enclave_never_created() {
    let m = Machine::with_epc(MIB);
    let p = m.process();
    let mut t = m.thread(&p);
    let fd = p.open("/dev/sgx_enclave").expect("open");
    let encl = p.enclave(fd).expect("enclave");
    p.close(&mut t.kernel, fd).expect("close");
    assert_released(&m, &encl);
}

// ---- §3.2 step 9: EEXTEND failure -------------------------------------------------------------

#[test]
fn eextend_failure_undoes_the_child_count_and_teardown_is_clean() {
    let m = Machine::with_epc(MIB);
    let p = m.process();
    let mut t = m.thread(&p);
    let fd = create(&mut t, MIB);
    let encl = p.enclave(fd).expect("enclave");
    assert_eq!(add(&mut t, fd, 0, 2), (Ok(()), 2 * PAGE));
    // Three more pages: the first is measured (16 EEXTENDs), the second's first EEXTEND
    // faults.
    t.kernel.inject_eextend_fault(16);
    assert_eq!(add(&mut t, fd, 2 * PAGE, 3), (Err(Errno::EIO), PAGE));
    assert!(m.sgx.warnings().is_empty(), "an EEXTEND #PF is not warned about: {:?}", m.sgx.warnings());
    let info = encl.info();
    assert_eq!((info.pages, info.resident, info.page_cnt), (3, 3, 4), "the failed page is gone, its count undone");
    assert!(encl.page_record(BASE + 3 * PAGE).is_none());
    assert_eq!(held_by_type(&m, &encl), [1, 0, 3, 1, 0], "SECS, three REG pages, a VA page");
    // The address can be added again.
    assert_eq!(add(&mut t, fd, 3 * PAGE, 1), (Ok(()), PAGE));
    assert_eq!(encl.info().resident, 4);
    p.close(&mut t.kernel, fd).expect("close");
    assert_released(&m, &encl);
}
