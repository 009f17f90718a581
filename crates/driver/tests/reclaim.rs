//! The reclaimer and page reload (driver spec §6.4–§6.6, §5.1, §3.9, §7).
//!
//! §6.4 oversubscription, end to end:
//! * an enclave of 3× the EPC, every heap page written from inside with a distinct pattern,
//!   read back bit-identical (every 8-byte word), trimmed (MODIFY_TYPES TRIM + EACCEPT per
//!   page) and removed (REMOVE_PAGES) with the §3.9 retry protocol, counts checked —
//!   reclaimer run inline by the faulting thread: `three_times_the_epc_round_trips_with_inline_ksgxd`;
//!   with a ksgxd thread running concurrently: `three_times_the_epc_round_trips_with_a_ksgxd_thread`.
//!
//! §6.4 the reclaimer's rules:
//! * one batch takes exactly NR_TO_SCAN (16) pages off the head of the active list; SGX2
//!   ioctls run one batch per page only below NR_LOW_PAGES (32 free: none, 31 free: one);
//!   the allocator wakes ksgxd below 32; ksgxd runs whole batches until NR_HIGH_PAGES (64)
//!   are free (`ksgxd_should_run` false at 64, true at 63):
//!   `one_batch_is_sixteen_pages_and_the_watermarks_are_32_and_64`.
//! * aging: a page whose PTE is young is put back at the tail with its accessed bit
//!   cleared and skipped once; touched again between batches it is skipped again; untouched
//!   it goes the next time: `young_pages_are_put_back_and_skipped_once`.
//! * the SECS is written out with its last child (`secs_resident` false) and reloaded first
//!   on the next fault (ELDU path), EAUG (§5.2 step 4) and SGX2 ioctl page load (§3.6c):
//!   `secs_goes_last_and_comes_back_first_on_fault`, `secs_comes_back_first_for_eaug`,
//!   `secs_comes_back_first_for_an_sgx2_ioctl`.
//! * the SECS of an uninitialized enclave is never written out; pages added before INIT
//!   are reclaimable (ADD_PAGES of more pages than the EPC holds reclaims synchronously) and
//!   INIT still succeeds with the MRENCLAVE measured offline; the data reads back after:
//!   `pages_added_before_init_are_reclaimed_and_init_measures_right`.
//! * EWB's NOT_TRACKED path: reclaim while another thread is inside the enclave — ETRACK,
//!   then exactly one IPI, the thread takes the interrupt's AEX, resumes and its data is
//!   intact: `ewb_of_a_page_while_a_thread_is_inside_sends_one_ipi`.
//!
//! §6.5 backing store: contents + PCMD pages while evicted (exact byte counts: 4 KiB per
//! page, one PCMD page per 32 page indices, the SECS at index size/4096), dropped after
//! reload (0 bytes once everything is resident again): `secs_goes_last_and_comes_back_first_on_fault`,
//! `va_slots_are_reused_after_eldu`.
//!
//! §6.6 VA pages = ceil(page_cnt / 512) (SECS included; 512 → 1, 513 → 2, EAUG grows,
//! REMOVE_PAGES never shrinks): `va_pages_are_page_cnt_over_512_rounded_up`; slots are freed
//! at ELDU and reused (20 evict/reload cycles, > 512 EWBs, one VA page):
//! `va_slots_are_reused_after_eldu`.
//!
//! §5.1 reload: every evicted page (regular, TCS, SSA, text) reloads through the fault
//! handler with its contents (all of the above), the PCMD page dropped when its last entry
//! is consumed.
//!
//! §7: every test releases its enclave and checks that every EPC page came back and that
//! the driver issued no warning.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};

use sgxemu_arch::{
    Attributes, AttributesFlags, PAGE_SIZE, PageType, PfErrorCode, Secinfo, SecinfoFlags, Secs, Sigstruct, Tcs,
};
use sgxemu_cpu::{EpcIndex, PageTable};
use sgxemu_crypto::MeasurementState;
use sgxemu_driver::os::Prot;
use sgxemu_driver::sim::{
    FaultResolution, Machine, MapKind, Process, Sgx2Op, SimThread, Step, TestEnclave, ioctl_at, layout, sgx2_range,
};
use sgxemu_driver::{Encl, KResult, NR_HIGH_PAGES, NR_LOW_PAGES, NR_TO_SCAN};
use sgxemu_uapi::{
    EENTER, EEXIT, SGX_IOC_ENCLAVE_ADD_PAGES, SGX_IOC_ENCLAVE_CREATE, SGX_IOC_ENCLAVE_INIT,
    SGX_IOC_ENCLAVE_RESTRICT_PERMISSIONS, SGX_PAGE_MEASURE, SGX_PAGE_TYPE_TRIM, SgxEnclaveAddPages, SgxEnclaveCreate,
    SgxEnclaveInit, SgxEnclaveRestrictPermissions,
};
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes};

const PAGE: u64 = PAGE_SIZE as u64;
const MIB: u64 = 1 << 20;
/// Untrusted memory for ioctl arguments (clear of the test enclave loader's areas).
const ARGS: u64 = 0x0030_0000;
/// EACCEPT SECINFO flags.
const PENDING_RW: u64 = 0x20B;
const TRIM_MODIFIED: u64 = 0x410;
/// Children of the test enclave besides its heap: 2 TCS, 2 text, 7 data/SSA/stack pages.
const IMAGE_PAGES: u64 = 11;
/// Bounds the retry protocol and every wait.
const MAX_RETRIES: usize = 10_000;

/// The value of 8-byte word `word` of heap page `page`: distinct for every word of every page.
fn pattern(page: u64, word: u64) -> u64 {
    0xC0DE_5EED_0000_0000 ^ (page << 16) ^ word
}

fn page_image(page: u64) -> Vec<u8> {
    (0..PAGE / 8).flat_map(|w| pattern(page, w).to_le_bytes()).collect()
}

/// A machine with one loaded test enclave and an argument page.
struct Env {
    m: Machine,
    p: Arc<Process>,
    t: SimThread,
    e: TestEnclave,
    encl: Arc<Encl>,
}

impl Env {
    fn new(epc: u64, heap_pages: u64) -> Env {
        let m = Machine::with_epc(epc);
        let p = m.process();
        let mut t = m.thread(&p);
        let e = TestEnclave::load(&mut t, heap_pages * PAGE).expect("the test enclave loads");
        p.mmap(ARGS, PAGE, Prot::READ | Prot::WRITE, MapKind::Private, None).expect("argument page");
        let encl = p.enclave(e.fd).expect("an enclave fd");
        Env { m, p, t, e, encl }
    }

    fn heap(&self, page: u64) -> u64 {
        self.e.base + layout::HEAP + page * PAGE
    }

    fn epc_pages(&self) -> usize {
        self.m.processor.epc_pages() as usize
    }

    /// An SGX2 ioctl: the struct goes through user memory and comes back.
    fn ioctl<T: IntoBytes + FromBytes + Immutable>(&mut self, cmd: u32, arg: T) -> (KResult<()>, T) {
        ioctl(&mut self.t, self.e.fd, cmd, arg)
    }

    /// The §3.9 caller protocol for MODIFY_TYPES / REMOVE_PAGES over
    /// `[offset, offset + length)`: EAGAIN/EBUSY → advance by `count`, zero `count`, retry.
    /// Returns the number of retries.
    fn sgx2_range(&mut self, offset: u64, length: u64, op: Sgx2Op) -> usize {
        sgx2_range(&mut self.t, self.e.fd, ARGS, offset, length, op)
    }

    /// EACCEPTs every page of `addrs` with `flags` from `tcs` in one enclave call.
    fn accept(&mut self, tcs: u64, addrs: impl Iterator<Item = u64>, flags: u64) {
        let program = accept_program(&self.e, tcs, addrs, flags);
        let n = program.len() - 2;
        let exit = self.t.enter(tcs, EENTER, Some(program));
        assert!(exit.exited(), "{:?}", exit.run);
        assert_eq!(exit.results, vec![0; n], "every EACCEPT succeeds");
    }

    /// Resident child pages, from the driver's records.
    fn resident(&self, addr: u64) -> bool {
        self.encl.page_record(addr).expect("a page record").2
    }

    /// Evicts every child (and so the SECS of an initialized enclave) batch by batch.
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

    /// Faults every child page back in from outside the enclave (the fault handler's ELDU
    /// path), through the mapping that covers it.
    fn reload(&mut self, addrs: impl Iterator<Item = u64>) {
        for addr in addrs {
            assert_eq!(self.p.handle_fault(&mut self.t.kernel, addr, PfErrorCode::empty()), FaultResolution::Retry);
            assert!(self.resident(addr), "{addr:#x} reloaded");
        }
    }

    fn image_addrs(&self) -> impl Iterator<Item = u64> + use<> {
        let base = self.e.base;
        (0..IMAGE_PAGES).map(move |i| base + i * PAGE)
    }

    fn heap_addrs(&self) -> impl Iterator<Item = u64> + use<> {
        let start = self.e.base + layout::HEAP;
        (0..self.e.heap_size / PAGE).map(move |i| start + i * PAGE)
    }

    /// munmap + close: the enclave is released; every EPC page must come back.
    fn release(mut self) {
        assert!(self.m.sgx.warnings().is_empty(), "{:?}", self.m.sgx.warnings());
        self.p.munmap(self.e.base, self.e.size).expect("munmap");
        self.p.close(&mut self.t.kernel, self.e.fd).expect("close");
        assert_eq!(self.m.sgx.free_pages(), self.epc_pages(), "every EPC page came back");
        assert!(self.m.sgx.warnings().is_empty(), "{:?}", self.m.sgx.warnings());
        self.m.processor.check_invariants().expect("processor invariants");
    }
}

fn ioctl<T: IntoBytes + FromBytes + Immutable>(t: &mut SimThread, fd: i32, cmd: u32, arg: T) -> (KResult<()>, T) {
    ioctl_at(t, fd, cmd, ARGS, arg)
}

fn accept_program(e: &TestEnclave, tcs: u64, addrs: impl Iterator<Item = u64>, flags: u64) -> Vec<Step> {
    let mut template = e.eaccept(tcs, 0, flags);
    let exit = template.pop().expect("Exit");
    let Step::Enclu { leaf, rbx, rdx, .. } = template.pop().expect("ENCLU") else { panic!("EACCEPT step") };
    let mut steps = template;
    steps.extend(addrs.map(|rcx| Step::Enclu { leaf, rbx, rcx, rdx }));
    steps.push(exit);
    steps
}

/// One Store of the whole pattern image per page.
fn write_program(addrs: &[u64], first_page: u64) -> Vec<Step> {
    let mut steps: Vec<Step> = addrs
        .iter()
        .enumerate()
        .map(|(i, &addr)| Step::Store { addr, data: page_image(first_page + i as u64) })
        .collect();
    steps.push(Step::Exit);
    steps
}

/// Every 8-byte word of every page, loaded from inside.
fn read_program(addrs: &[u64]) -> Vec<Step> {
    let mut steps: Vec<Step> =
        addrs.iter().flat_map(|&addr| (0..PAGE / 8).map(move |w| Step::Load { addr: addr + 8 * w, len: 8 })).collect();
    steps.push(Step::Exit);
    steps
}

fn check_read_back(results: &[u64], pages: u64, first_page: u64) {
    assert_eq!(results.len() as u64, pages * PAGE / 8);
    for (i, &value) in results.iter().enumerate() {
        let (page, word) = (i as u64 / (PAGE / 8), i as u64 % (PAGE / 8));
        assert_eq!(value, pattern(first_page + page, word), "heap page {page} word {word}");
    }
}

/// The EPC page of the enclave's SECS, while resident.
fn secs_page(m: &Machine, encl: &Encl) -> Option<EpcIndex> {
    encl.epc_pages().into_iter().find(|&page| {
        let view = m.processor.epcm_view(page);
        view.valid && view.page_type == PageType::Secs
    })
}

/// Stands for an access through the PTE of `addr` (the CPU sets its accessed bit); maps
/// the page through the fault handler first if it has no PTE.
fn touch(p: &Arc<Process>, t: &mut SimThread, addr: u64) {
    if p.pte(addr).is_none() {
        assert_eq!(p.handle_fault(&mut t.kernel, addr, PfErrorCode::empty()), FaultResolution::Retry);
    }
    let _ = PageTable::translate(&**p, addr);
    assert!(p.pte(addr).expect("mapped").young);
}

// ---- §6.4 oversubscription ---------------------------------------------------------------

/// 3× a 1 MiB EPC: the heap is written, read back word for word, trimmed and removed while
/// the reclaimer evicts and the fault handler reloads.
fn three_times_the_epc(env: &mut Env) {
    let epc_pages = env.epc_pages() as u64;
    let heap_pages = 3 * epc_pages;
    let info = env.encl.info();
    assert_eq!(info.pages as u64, IMAGE_PAGES + heap_pages);
    assert_eq!(info.page_cnt, 1 + IMAGE_PAGES + heap_pages);
    assert_eq!(info.va_pages as u64, info.page_cnt.div_ceil(512));
    assert!(info.resident < epc_pages, "most of the enclave lives in the backing store");
    assert!(info.backing_bytes > 0);
    let heap: Vec<u64> = env.heap_addrs().collect();
    // Write every heap page from inside the enclave.
    let exit = env.t.enter(env.e.tcs1(), EENTER, Some(write_program(&heap, 0)));
    assert!(exit.exited(), "{:?} {:?}", exit.run, env.m.sgx.warnings());
    // Read every word back from inside; pages come back from the backing store.
    let exit = env.t.enter(env.e.tcs1(), EENTER, Some(read_program(&heap)));
    assert!(exit.exited(), "{:?}", exit.run);
    check_read_back(&exit.results, heap_pages, 0);
    assert!(env.encl.info().resident < epc_pages);
    // Trim, accept, remove the whole heap.
    let before = env.encl.info();
    env.sgx2_range(layout::HEAP, heap_pages * PAGE, Sgx2Op::Modify(SGX_PAGE_TYPE_TRIM));
    assert!(heap.iter().all(|&a| env.encl.page_record(a).expect("record").0 == PageType::Trim));
    env.accept(env.e.tcs1(), heap.iter().copied(), TRIM_MODIFIED);
    env.sgx2_range(layout::HEAP, heap_pages * PAGE, Sgx2Op::Remove);
    let after = env.encl.info();
    assert_eq!(after.pages as u64, IMAGE_PAGES);
    assert_eq!(after.page_cnt, before.page_cnt - heap_pages);
    assert_eq!(after.va_pages, before.va_pages, "REMOVE_PAGES never frees VA pages");
    assert!(heap.iter().all(|&a| env.encl.page_record(a).is_none()));
    // The image is intact: the buffer still reads back as loaded (zeros).
    let exit = env.t.enter(env.e.tcs1(), EENTER, Some(env.e.get_from_buffer()));
    assert_eq!(exit.run.function, EEXIT);
    assert_eq!(exit.results, vec![0]);
}

#[test]
fn three_times_the_epc_round_trips_with_inline_ksgxd() {
    let mut env = Env::new(MIB, 3 * MIB / PAGE);
    three_times_the_epc(&mut env);
    assert!(env.m.platform.wakeups() > 0, "the allocator woke ksgxd");
    env.release();
}

/// Sets the flag when dropped, so a panicking test body still stops its helper threads.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

#[test]
fn three_times_the_epc_round_trips_with_a_ksgxd_thread() {
    let mut env = Env::new(MIB, 3 * MIB / PAGE);
    env.m.platform.set_external_ksgxd(true);
    let stop = AtomicBool::new(false);
    let sgx = env.m.sgx.clone();
    let mut ksgxd_cpu = env.m.kernel_cpu();
    std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::Acquire) {
                if sgx.ksgxd_should_run() {
                    sgx.ksgxd_run(&mut ksgxd_cpu);
                } else {
                    std::thread::yield_now();
                }
            }
        });
        let _stop = StopOnDrop(&stop);
        three_times_the_epc(&mut env);
    });
    env.release();
}

// ---- §6.4 batch size and watermarks -------------------------------------------------------

#[test]
fn one_batch_is_sixteen_pages_and_the_watermarks_are_32_and_64() {
    assert_eq!((NR_TO_SCAN, NR_LOW_PAGES, NR_HIGH_PAGES), (16, 32, 64));
    // 128 pages of EPC; VA + SECS + 11 image pages + 95 heap pages leave 20 free.
    let mut env = Env::new(128 * PAGE, 95);
    assert_eq!(env.m.sgx.free_pages(), 20);
    let wakeups = env.m.platform.wakeups();
    assert!(wakeups > 0, "allocations below 32 free woke ksgxd");
    let last = env.heap(94);
    let restrict = |env: &mut Env| {
        let arg = SgxEnclaveRestrictPermissions {
            offset: last - env.e.base,
            length: PAGE,
            permissions: 0x3,
            result: 0,
            count: 0,
        };
        let (result, out) = env.ioctl(SGX_IOC_ENCLAVE_RESTRICT_PERMISSIONS, arg);
        assert_eq!((result, out.count, out.result), (Ok(()), PAGE, 0));
    };
    // 20 free < 32: the ioctl's page iteration runs one batch of 16 (nothing is young: no
    // page was ever mapped), the oldest 16 children in ADD order.
    restrict(&mut env);
    assert_eq!(env.m.sgx.free_pages(), 36);
    let order: Vec<u64> = env.image_addrs().chain(env.heap_addrs()).collect();
    for (i, &addr) in order.iter().enumerate() {
        assert_eq!(env.resident(addr), i >= 16, "page {i} of the LRU order");
    }
    assert_eq!(env.encl.info().resident, IMAGE_PAGES + 95 - 16);
    // 36 free: no batch.
    restrict(&mut env);
    assert_eq!(env.m.sgx.free_pages(), 36);
    // Reload four pages (ELDU without reclaim): 32 free is not below the low watermark, and
    // allocations that leave 32 or more free wake nobody.
    env.reload(order[..4].iter().copied());
    assert_eq!(env.m.sgx.free_pages(), 32);
    assert_eq!(env.m.platform.wakeups(), wakeups);
    restrict(&mut env);
    assert_eq!(env.m.sgx.free_pages(), 32);
    // One more: 31 free wakes ksgxd, and the next ioctl iteration reclaims 16.
    env.reload(order[4..5].iter().copied());
    assert_eq!(env.m.sgx.free_pages(), 31);
    assert_eq!(env.m.platform.wakeups(), wakeups + 1);
    restrict(&mut env);
    assert_eq!(env.m.sgx.free_pages(), 47);
    assert!(order[16..32].iter().all(|&a| !env.resident(a)), "the next 16 in LRU order");
    assert!(order[32..].iter().all(|&a| env.resident(a)));
    // ksgxd: whole batches until 64 are free: 47 → 63 → 79.
    assert!(env.m.sgx.ksgxd_should_run());
    let mut cpu = env.m.kernel_cpu();
    assert_eq!(env.m.sgx.ksgxd_run(&mut cpu), 32);
    assert_eq!(env.m.sgx.free_pages(), 79);
    assert!(!env.m.sgx.ksgxd_should_run());
    // At exactly 64 free ksgxd has nothing to do; at 63 it runs one batch.
    env.reload(order[16..31].iter().copied());
    assert_eq!(env.m.sgx.free_pages(), 64);
    assert!(!env.m.sgx.ksgxd_should_run());
    assert_eq!(env.m.sgx.ksgxd_run(&mut cpu), 0);
    env.reload(order[31..32].iter().copied());
    assert_eq!(env.m.sgx.free_pages(), 63);
    assert!(env.m.sgx.ksgxd_should_run());
    assert_eq!(env.m.sgx.ksgxd_run(&mut cpu), 16);
    assert_eq!(env.m.sgx.free_pages(), 79);
    env.release();
}

// ---- §6.4 aging ---------------------------------------------------------------------------

#[test]
fn young_pages_are_put_back_and_skipped_once() {
    let mut env = Env::new(MIB, 16);
    let free = env.m.sgx.free_pages();
    // LRU order = ADD order: TCS1, TCS2, text ×2, data ×7, heap ×16. Nothing is mapped yet.
    let order: Vec<u64> = env.image_addrs().chain(env.heap_addrs()).collect();
    assert!(order.iter().all(|&a| env.p.pte(a).is_none()));
    let (text0, heap0) = (env.e.base + layout::TEXT, env.heap(0));
    let (p, t) = (env.p.clone(), &mut env.t);
    touch(&p, t, text0);
    touch(&p, t, heap0);
    let mut cpu = env.m.kernel_cpu();
    // Batch 1: the oldest 16; the two young ones go back to the tail with their accessed
    // bits cleared, the other 14 are written out (and their PTEs zapped).
    assert_eq!(env.m.reclaim_batch(&mut cpu), 14);
    for &addr in &order[..16] {
        let young = addr == text0 || addr == heap0;
        assert_eq!(env.resident(addr), young, "{addr:#x}");
    }
    assert!(order[16..].iter().all(|&a| env.resident(a)));
    assert!(!env.p.pte(text0).expect("still mapped").young);
    assert!(!env.p.pte(heap0).expect("still mapped").young);
    assert_eq!(env.m.sgx.free_pages(), free + 14);
    // Touch heap0 again. Batch 2: heap5..15, then text0 and heap0 at the tail — heap0 is
    // young again and skipped again, text0 (skipped once already) goes.
    touch(&p, &mut env.t, heap0);
    assert_eq!(env.m.reclaim_batch(&mut cpu), 12);
    assert!(!env.resident(text0));
    assert!(env.resident(heap0));
    assert_eq!(env.encl.info().resident, 1);
    assert!(env.encl.info().secs_resident, "a child is resident");
    // Batch 3: heap0 is not young any more; it goes, and the SECS after it.
    assert_eq!(env.m.reclaim_batch(&mut cpu), 2);
    assert!(!env.resident(heap0));
    assert!(!env.encl.info().secs_resident);
    assert_eq!(env.m.reclaim_batch(&mut cpu), 0, "nothing left to reclaim");
    env.release();
}

// ---- §6.4/§6.5 the SECS and the backing store -----------------------------------------------

/// Backing bytes expected for the test enclave with a heap of at most 21 pages (all child
/// indices share PCMD page 0; the SECS index size/4096 = 32 uses PCMD page 1).
fn expected_backing(env: &Env) -> u64 {
    let info = env.encl.info();
    let evicted = info.pages as u64 - info.resident;
    let children = evicted * PAGE + if evicted > 0 { PAGE } else { 0 };
    let secs = if info.secs_resident { 0 } else { 2 * PAGE };
    children + secs
}

#[test]
fn secs_goes_last_and_comes_back_first_on_fault() {
    let mut env = Env::new(MIB, 16);
    assert_eq!(env.e.size, 0x20000, "SECS index 32: its own PCMD page");
    let exit = env.t.enter(env.e.tcs1(), EENTER, Some(env.e.put_to_buffer(0xFEED_F00D)));
    assert!(exit.exited());
    let va_pages = env.encl.info().va_pages;
    // Evict batch by batch: the SECS stays while any child is resident.
    let mut cpu = env.m.kernel_cpu();
    for _ in 0..MAX_RETRIES {
        let info = env.encl.info();
        if info.resident == 0 {
            break;
        }
        assert!(info.secs_resident);
        assert_eq!(info.backing_bytes, expected_backing(&env));
        env.m.reclaim_batch(&mut cpu);
    }
    let info = env.encl.info();
    assert_eq!((info.resident, info.secs_resident), (0, false), "the SECS went with its last child");
    assert_eq!(info.backing_bytes, (27 + 1 + 2) * PAGE, "27 pages + PCMD page 0 + SECS + PCMD page 1");
    assert_eq!(env.m.sgx.free_pages(), env.epc_pages() - va_pages, "only the VA page stays");
    assert!(secs_page(&env.m, &env.encl).is_none());
    // The next entry faults on TCS1: the SECS is reloaded first (no ELDU of a child can
    // succeed without it), then the pages the call touches.
    let exit = env.t.enter(env.e.tcs1(), EENTER, Some(env.e.get_from_buffer()));
    assert!(exit.exited(), "{:?}", exit.run);
    assert_eq!(exit.results, vec![0xFEED_F00D]);
    let info = env.encl.info();
    assert!(info.secs_resident);
    assert!(info.resident >= 2, "TCS1 and the buffer at least");
    assert_eq!(info.backing_bytes, expected_backing(&env), "reloaded pages left the backing store");
    // Everything resident again: the backing store is empty.
    let all: Vec<u64> = env.image_addrs().chain(env.heap_addrs()).filter(|&a| !env.resident(a)).collect();
    env.reload(all.into_iter());
    assert_eq!(env.encl.info().backing_bytes, 0);
    env.release();
}

#[test]
fn secs_comes_back_first_for_eaug() {
    let mut env = Env::new(MIB, 16);
    let hole = env.e.first_unbacked();
    env.p.mmap(hole, PAGE, Prot::READ | Prot::WRITE, MapKind::Shared, Some(env.e.fd)).expect("map the hole");
    env.evict_all();
    assert!(!env.encl.info().secs_resident);
    // A fault on the hole EAUGs; the SECS must be reloaded before EAUG (§5.2 step 4).
    assert_eq!(env.p.handle_fault(&mut env.t.kernel, hole, PfErrorCode::W), FaultResolution::Retry);
    let info = env.encl.info();
    assert!(info.secs_resident);
    assert_eq!(info.resident, 1);
    assert_eq!(env.encl.page_record(hole), Some((PageType::Reg, Prot::READ | Prot::WRITE | Prot::EXEC, true)));
    assert_eq!(info.backing_bytes, (27 + 1) * PAGE, "the SECS and its PCMD page left the backing store");
    assert_eq!(info.backing_bytes, expected_backing(&env));
    // The enclave accepts it and uses it.
    env.accept(env.e.tcs1(), [hole].into_iter(), PENDING_RW);
    let exit = env.t.enter(env.e.tcs1(), EENTER, Some(env.e.put_to_address(hole, 77)));
    assert!(exit.exited());
    let exit = env.t.enter(env.e.tcs2(), EENTER, Some(env.e.get_from_address(hole)));
    assert_eq!(exit.results, vec![77]);
    env.release();
}

#[test]
fn secs_comes_back_first_for_an_sgx2_ioctl() {
    let mut env = Env::new(MIB, 16);
    env.evict_all();
    assert!(!env.encl.info().secs_resident);
    let arg = SgxEnclaveRestrictPermissions {
        offset: layout::HEAP + 3 * PAGE,
        length: PAGE,
        permissions: 0x1,
        result: 0,
        count: 0,
    };
    let (result, out) = env.ioctl(SGX_IOC_ENCLAVE_RESTRICT_PERMISSIONS, arg);
    assert_eq!((result, out.count, out.result), (Ok(()), PAGE, 0));
    let info = env.encl.info();
    assert!(info.secs_resident);
    assert_eq!(info.resident, 1);
    assert!(env.resident(env.heap(3)));
    env.release();
}

// ---- §6.6 VA pages and slots --------------------------------------------------------------

#[test]
fn va_pages_are_page_cnt_over_512_rounded_up() {
    // 1 + 11 + 500 = 512 pages need one VA page; the enclave is twice the EPC, so ADD_PAGES
    // reclaims as it goes.
    let mut env = Env::new(MIB, 500);
    let info = env.encl.info();
    assert_eq!((info.page_cnt, info.va_pages), (512, 1));
    // EAUG the 513th: a second VA page.
    let hole = env.e.first_unbacked();
    let size = env.e.size;
    assert!(hole + PAGE <= env.e.base + size);
    env.p.mmap(hole, PAGE, Prot::READ | Prot::WRITE, MapKind::Shared, Some(env.e.fd)).expect("map the hole");
    env.accept(env.e.tcs1(), [hole].into_iter(), PENDING_RW);
    let info = env.encl.info();
    assert_eq!((info.page_cnt, info.va_pages), (513, 2));
    // Removing it lowers page_cnt but keeps the VA page.
    env.sgx2_range(hole - env.e.base, PAGE, Sgx2Op::Modify(SGX_PAGE_TYPE_TRIM));
    env.accept(env.e.tcs1(), [hole].into_iter(), TRIM_MODIFIED);
    env.sgx2_range(hole - env.e.base, PAGE, Sgx2Op::Remove);
    let info = env.encl.info();
    assert_eq!((info.page_cnt, info.va_pages), (512, 2));
    env.release();
    // 1 + 11 + 501 = 513 pages at load: two VA pages.
    let env = Env::new(MIB, 501);
    let info = env.encl.info();
    assert_eq!((info.page_cnt, info.va_pages), (513, 2));
    env.release();
}

#[test]
fn va_slots_are_reused_after_eldu() {
    let mut env = Env::new(MIB, 16);
    let exit = env.t.enter(env.e.tcs1(), EENTER, Some(env.e.put_to_buffer(0x5107)));
    assert!(exit.exited());
    // 28 pages (27 children + SECS) per cycle, 20 cycles: 560 EWBs through 512 slots.
    for cycle in 0..20 {
        env.evict_all();
        let info = env.encl.info();
        assert_eq!((info.va_pages, info.secs_resident), (1, false), "cycle {cycle}");
        assert_eq!(info.backing_bytes, (27 + 1 + 2) * PAGE);
        let all: Vec<u64> = env.image_addrs().chain(env.heap_addrs()).collect();
        env.reload(all.into_iter());
        let info = env.encl.info();
        assert_eq!((info.resident, info.backing_bytes), (27, 0), "cycle {cycle}");
        assert!(env.m.sgx.warnings().is_empty(), "{:?}", env.m.sgx.warnings());
    }
    let exit = env.t.enter(env.e.tcs1(), EENTER, Some(env.e.get_from_buffer()));
    assert_eq!(exit.results, vec![0x5107]);
    env.release();
}

// ---- §6.4 reclaim before INIT ---------------------------------------------------------------

/// An enclave built by hand: TCS at 0, SSA at 0x1000, then `data` measured REG pages with
/// distinct contents.
struct Handmade {
    fd: i32,
    base: u64,
    size: u64,
    measurement: MeasurementState,
}

const SCRATCH: u64 = 0x0040_0000;
const SOURCE: u64 = 0x1000_0000;
const HANDMADE_BASE: u64 = 0x100_0000_0000;

impl Handmade {
    fn create(t: &mut SimThread, size: u64) -> Handmade {
        let p = t.process().clone();
        p.mmap(SCRATCH, 0x10000, Prot::READ | Prot::WRITE, MapKind::Private, None).expect("scratch");
        p.mmap(ARGS, PAGE, Prot::READ | Prot::WRITE, MapKind::Private, None).expect("argument page");
        let fd = p.open("/dev/sgx_enclave").expect("open");
        let mut secs = Secs::new_zeroed();
        secs.baseaddr = HANDMADE_BASE;
        secs.size = size;
        secs.ssaframesize = 1;
        secs.attributes = Attributes::new(AttributesFlags::MODE64BIT, 0x3);
        p.write_user(SCRATCH, secs.as_bytes()).expect("SECS image");
        let (result, _) = ioctl(t, fd, SGX_IOC_ENCLAVE_CREATE, SgxEnclaveCreate { src: SCRATCH });
        assert_eq!(result, Ok(()));
        let mut measurement = MeasurementState::new();
        measurement.ecreate(1, size);
        Handmade { fd, base: HANDMADE_BASE, size, measurement }
    }

    /// ADD_PAGES of `images` at `offset`, measured, with `secinfo` flags.
    fn add(&mut self, t: &mut SimThread, offset: u64, images: &[Vec<u8>], secinfo: u64) -> (KResult<()>, u64) {
        let p = t.process().clone();
        let len = images.len() as u64 * PAGE;
        p.mmap(SOURCE + offset, len, Prot::READ | Prot::WRITE, MapKind::Private, None).expect("source");
        for (i, image) in images.iter().enumerate() {
            p.write_user(SOURCE + offset + i as u64 * PAGE, image).expect("source");
        }
        let secinfo_addr = SCRATCH + 0x1000;
        p.write_user(secinfo_addr, Secinfo::new(SecinfoFlags::from_bits_retain(secinfo)).as_bytes()).expect("secinfo");
        let arg = SgxEnclaveAddPages {
            src: SOURCE + offset,
            offset,
            length: len,
            secinfo: secinfo_addr,
            flags: SGX_PAGE_MEASURE,
            count: 0,
        };
        let (result, out) = ioctl(t, self.fd, SGX_IOC_ENCLAVE_ADD_PAGES, arg);
        for (i, image) in images.iter().enumerate().take((out.count / PAGE) as usize) {
            let at = offset + i as u64 * PAGE;
            self.measurement.eadd(at, secinfo);
            for (c, chunk) in image.chunks_exact(256).enumerate() {
                self.measurement.eextend(at + 256 * c as u64, chunk.try_into().expect("256 bytes"));
            }
        }
        (result, out.count)
    }

    fn init(&self, t: &mut SimThread) -> KResult<()> {
        let p = t.process().clone();
        let mut sig = Sigstruct::new_unsigned();
        sig.vendor = 0;
        sig.attributes = Attributes::new(AttributesFlags::MODE64BIT, 0x3);
        sig.enclavehash = self.measurement.finalize();
        sgxemu_crypto::sign(&mut sig, &sgxemu_cpu::testkit::test_signing_key()).expect("the test key signs");
        p.write_user(SCRATCH + 0x2000, sig.as_bytes()).expect("sigstruct");
        ioctl(t, self.fd, SGX_IOC_ENCLAVE_INIT, SgxEnclaveInit { sigstruct: SCRATCH + 0x2000 }).0
    }
}

fn tcs_image(ossa: u64) -> Vec<u8> {
    let mut tcs = Tcs::new_zeroed();
    tcs.ossa = ossa;
    tcs.nssa = 1;
    tcs.oentry = 0x2000;
    tcs.fslimit = 0xFFFF_FFFF;
    tcs.gslimit = 0xFFFF_FFFF;
    tcs.as_bytes().to_vec()
}

#[test]
fn pages_added_before_init_are_reclaimed_and_init_measures_right() {
    // 300 measured data pages + TCS + SSA into a 256-page EPC.
    let m = Machine::with_epc(MIB);
    let p = m.process();
    let mut t = m.thread(&p);
    let data_pages = 300u64;
    let mut h = Handmade::create(&mut t, 2 * MIB);
    assert_eq!(h.add(&mut t, 0, &[tcs_image(0x1000)], 0x100), (Ok(()), PAGE));
    assert_eq!(h.add(&mut t, PAGE, &[vec![0; PAGE_SIZE]], 0x203), (Ok(()), PAGE));
    let images: Vec<Vec<u8>> = (0..data_pages).map(page_image).collect();
    assert_eq!(h.add(&mut t, 2 * PAGE, &images, 0x203), (Ok(()), data_pages * PAGE));
    let encl = p.enclave(h.fd).expect("enclave");
    let info = encl.info();
    assert_eq!(info.pages as u64, 2 + data_pages);
    assert!(info.resident < 2 + data_pages, "ADD_PAGES reclaimed pages added before INIT");
    assert!(info.secs_resident);
    // Evict every child: the SECS of an uninitialized enclave stays.
    let mut cpu = m.kernel_cpu();
    for _ in 0..MAX_RETRIES {
        if encl.info().resident == 0 {
            break;
        }
        m.reclaim_batch(&mut cpu);
    }
    let info = encl.info();
    assert_eq!((info.resident, info.secs_resident), (0, true), "uninitialized: the SECS is never written out");
    // 302 contents pages + ceil(302 / 32) = 10 PCMD pages, no SECS.
    assert_eq!(info.backing_bytes, (302 + 10) * PAGE);
    // The measurement is the offline one, and EINIT (which checks it) succeeds.
    let secs = secs_page(&m, &encl).expect("resident SECS");
    let expected = h.measurement.finalize();
    assert_eq!(m.processor.mrenclave_so_far(m.processor.epc_addr(secs)), Some(expected));
    assert_eq!(h.init(&mut t), Ok(()));
    assert!(encl.info().initialized);
    // Map and read two words of every data page back from inside.
    let rw = Prot::READ | Prot::WRITE;
    p.mmap(h.base, (2 + data_pages) * PAGE, rw, MapKind::Shared, Some(h.fd)).expect("map the enclave");
    let addrs: Vec<u64> = (0..data_pages).map(|i| h.base + (2 + i) * PAGE).collect();
    let mut program: Vec<Step> = addrs
        .iter()
        .flat_map(|&a| [Step::Load { addr: a, len: 8 }, Step::Load { addr: a + PAGE - 8, len: 8 }])
        .collect();
    program.push(Step::Exit);
    let exit = t.enter(h.base, EENTER, Some(program));
    assert!(exit.exited(), "{:?}", exit.run);
    let expected: Vec<u64> = (0..data_pages).flat_map(|i| [pattern(i, 0), pattern(i, PAGE / 8 - 1)]).collect();
    assert_eq!(exit.results, expected);
    // Initialized now: once its last child goes, the SECS goes too.
    for _ in 0..MAX_RETRIES {
        if encl.info().resident == 0 {
            break;
        }
        m.reclaim_batch(&mut cpu);
    }
    assert!(!encl.info().secs_resident);
    assert!(m.sgx.warnings().is_empty(), "{:?}", m.sgx.warnings());
    p.munmap(h.base, h.size).expect("munmap");
    p.close(&mut t.kernel, h.fd).expect("close");
    assert_eq!(m.sgx.free_pages(), m.processor.epc_pages() as usize);
    assert!(m.sgx.warnings().is_empty(), "{:?}", m.sgx.warnings());
}

// ---- §6.4 EWB NOT_TRACKED: IPI to a thread inside -------------------------------------------

#[test]
fn ewb_of_a_page_while_a_thread_is_inside_sends_one_ipi() {
    // 256 heap pages + image in a 256-page EPC; ksgxd makes room first.
    let mut env = Env::new(MIB, 256);
    let mut cpu = env.m.kernel_cpu();
    env.m.sgx.ksgxd_run(&mut cpu);
    let secs = env.m.processor.epc_addr(secs_page(&env.m, &env.encl).expect("SECS"));
    let buffer = env.e.base + layout::BUFFER;
    let value = pattern(7, 7);
    // The inside thread stores to the buffer, pauses inside the enclave before its first
    // load while the test reclaims, then loads the buffer back.
    const LOADS: usize = 8;
    let mut program = vec![Step::Store { addr: buffer, data: value.to_le_bytes().to_vec() }];
    program.extend(std::iter::repeat_n(Step::Load { addr: buffer, len: 8 }, LOADS));
    program.push(Step::Exit);
    let mut inside = env.m.thread(&env.p);
    let rendezvous = Arc::new(Barrier::new(2));
    let at_pause = rendezvous.clone();
    inside.pause_inside_before(1, move || {
        at_pause.wait(); // inside, between the store and the first load
        at_pause.wait(); // the test has reclaimed
    });
    let tcs1 = env.e.tcs1();
    let ipis = env.m.platform.ipis();
    let (m, encl) = (&env.m, &env.encl);
    let exit = std::thread::scope(|s| {
        let runner = s.spawn(move || inside.enter(tcs1, EENTER, Some(program)));
        rendezvous.wait();
        assert_eq!(m.processor.lps_inside(secs).len(), 1, "one thread inside");
        // One batch of 16 heap pages while it is inside: EBLOCK ×16, EWB → NOT_TRACKED →
        // ETRACK → EWB → NOT_TRACKED (it entered before the ETRACK) → IPI → EWB succeeds;
        // the other 15 were blocked before the same ETRACK and need nothing more.
        assert_eq!(m.reclaim_batch(&mut cpu), NR_TO_SCAN);
        assert_eq!(m.platform.ipis(), ipis + 1, "exactly one IPI");
        assert!(m.processor.lps_inside(secs).is_empty(), "the IPI made the thread leave (AEX)");
        assert!(m.sgx.warnings().is_empty(), "{:?}", m.sgx.warnings());
        for page in [tcs1, buffer, env.e.base + layout::SSA1] {
            assert!(encl.page_record(page).expect("record").2, "{page:#x}: the thread's pages were not in the batch");
        }
        rendezvous.wait();
        runner.join().expect("the inside thread")
    });
    // Its next step saw the interrupt: ERESUME, and the program ran to its end.
    assert!(exit.exited(), "{:?}", exit.run);
    assert_eq!(exit.results, vec![value; LOADS]);
    // Data intact: the buffer and every heap page (written out or not) read back.
    let exit = env.t.enter(env.e.tcs2(), EENTER, Some(env.e.get_from_buffer()));
    assert_eq!(exit.results, vec![value]);
    let heap: Vec<u64> = env.heap_addrs().collect();
    let mut program: Vec<Step> = heap.iter().map(|&addr| Step::Load { addr, len: 8 }).collect();
    program.push(Step::Exit);
    let exit = env.t.enter(env.e.tcs2(), EENTER, Some(program));
    assert!(exit.exited(), "{:?}", exit.run);
    assert_eq!(exit.results, vec![0; heap.len()], "the heap was loaded with zeros");
    env.release();
}
