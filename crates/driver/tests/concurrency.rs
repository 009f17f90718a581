//! Concurrency: many threads in one enclave while the reclaimer and the SGX2 ioctls run
//! (driver spec §2.3 lock order, §3.5–§3.9, §5, §6.2, §6.4, §7.1).
//!
//! `four_threads_fault_eaug_and_accept_while_ioctls_and_ksgxd_run`: one process, one
//! enclave in a 512 KiB EPC (its working set is nearly three times that), five TCSs (the test enclave's two plus three made with the §6.2
//! TCS-creation flow: EAUG via EACCEPT, INIT_TCS_PAGE, MODIFY_TYPES(TCS), EACCEPT(TCS |
//! MODIFIED)). Concurrently, each for a fixed number of operations (so the run is bounded):
//! * four worker threads, one TCS each, EAUG their 80-page regions by EACCEPT and then, round
//!   after round, verify every page's previous pattern and store a new one — faulting pages
//!   back in (ELDU) as the reclaimer evicts them;
//! * an ioctl thread cycles a separate 48-page region through EAUG + EACCEPT, store,
//!   RESTRICT_PERMISSIONS(R) + EACCEPT(PR), read back, MODIFY_TYPES(TRIM) + EACCEPT(TRIM),
//!   REMOVE_PAGES, with the §3.9 retry protocol on EAGAIN/EBUSY (advance by `count`);
//!   its ETRACK IPIs hit the workers, who resume;
//! * a ksgxd thread runs the reclaimer whenever free EPC is below the high watermark
//!   (faulting threads do not reclaim inline).
//!
//! Outcomes checked: no deadlock and no panic (every thread joins), no lost or corrupted
//! page (every word of every worker page verified at the end; the ioctl region verified each
//! round), no driver warning; at the end `check_invariants()` holds, the driver's records
//! match the EPCM (every EPC page the enclave holds is valid, child pages at their record's
//! address with the record's type, one SECS, VA pages = what `info()` says, resident count =
//! children held), free + held = the EPC size; after munmap + close every EPC page is free
//! and every EPCM entry invalid.

use std::sync::atomic::{AtomicBool, Ordering};

use sgxemu_arch::{PAGE_SIZE, PageType};
use sgxemu_cpu::EpcIndex;
use sgxemu_driver::KResult;
use sgxemu_driver::os::Prot;
use sgxemu_driver::sim::{Machine, MapKind, Sgx2Op, SimThread, Step, TestEnclave, ioctl_at, layout, sgx2_range};
use sgxemu_uapi::{EENTER, SGX_IOC_ENCLAVE_MODIFY_TYPES, SGX_PAGE_TYPE_TCS, SGX_PAGE_TYPE_TRIM, SgxEnclaveModifyTypes};
use zerocopy::{FromBytes, Immutable, IntoBytes};

const PAGE: u64 = PAGE_SIZE as u64;
const MIB: u64 = 1 << 20;
/// A small EPC: the enclave's working set is nearly three times this.
const EPC: u64 = 128 * PAGE;
const ARGS: u64 = 0x0030_0000;
/// EACCEPT SECINFO flags.
const PENDING_RW: u64 = 0x20B;
const TRIM_MODIFIED: u64 = 0x410;
const TCS_MODIFIED: u64 = 0x110;
const REG_R_PR: u64 = 0x221;
const WORKERS: u64 = 4;
const WORKER_PAGES: u64 = 80;
const WORKER_ROUNDS: u64 = 6;
const IOCTL_PAGES: u64 = 48;
const IOCTL_ROUNDS: u64 = 8;
/// Where the dynamic TCSs, the worker regions and the ioctl region lie in ELRANGE.
const DYNAMIC: u64 = 0x10_0000;
const WORKER_AREA: u64 = 0x20_0000;
const IOCTL_AREA: u64 = 0x38_0000;
const DYNAMIC_END: u64 = 0x40_0000;

/// Word `word` of page `page` of region `region` in round `round`.
fn pattern(region: u64, round: u64, page: u64, word: u64) -> u64 {
    0x5EED_0000_0000_0000 ^ (region << 52) ^ (round << 44) ^ (page << 16) ^ word
}

fn image(region: u64, round: u64, page: u64) -> Vec<u8> {
    (0..PAGE / 8).flat_map(|w| pattern(region, round, page, w).to_le_bytes()).collect()
}

fn ioctl<T: IntoBytes + FromBytes + Immutable>(t: &mut SimThread, fd: i32, cmd: u32, arg: T) -> (KResult<()>, T) {
    ioctl_at(t, fd, cmd, ARGS, arg)
}

/// One enclave call from `tcs` that EACCEPTs `addrs` with `flags`; every EACCEPT succeeds.
fn accept(t: &mut SimThread, e: &TestEnclave, tcs: u64, addrs: &[u64], flags: u64) {
    let mut program = e.eaccept(tcs, 0, flags);
    let exit = program.pop().expect("Exit");
    let Step::Enclu { leaf, rbx, rdx, .. } = program.pop().expect("ENCLU") else { panic!("EACCEPT step") };
    program.extend(addrs.iter().map(|&rcx| Step::Enclu { leaf, rbx, rcx, rdx }));
    program.push(exit);
    let exit = t.enter(tcs, EENTER, Some(program));
    assert!(exit.exited(), "{:?} {:?}", exit.run, t.process().sgx().warnings());
    assert_eq!(exit.results, vec![0; addrs.len()], "every EACCEPT succeeds");
}

/// Runs `program` from `tcs` to its EEXIT and returns the loaded values.
fn run(t: &mut SimThread, tcs: u64, mut program: Vec<Step>) -> Vec<u64> {
    program.push(Step::Exit);
    let exit = t.enter(tcs, EENTER, Some(program));
    assert!(exit.exited(), "{:?} {:?}", exit.run, t.process().sgx().warnings());
    exit.results
}

/// The §6.2 flow from TCS1: a new TCS at `tcs` with its stack page below and SSA above.
fn create_tcs(t: &mut SimThread, e: &TestEnclave, tcs: u64) {
    accept(t, e, e.tcs1(), &[tcs - PAGE, tcs, tcs + PAGE], PENDING_RW);
    let exit = t.enter(e.tcs1(), EENTER, Some(e.init_tcs_page(tcs, tcs + PAGE - e.base, 0x23D3)));
    assert!(exit.exited());
    let arg =
        SgxEnclaveModifyTypes { offset: tcs - e.base, length: PAGE, page_type: SGX_PAGE_TYPE_TCS, result: 0, count: 0 };
    let (result, out) = ioctl(t, e.fd, SGX_IOC_ENCLAVE_MODIFY_TYPES, arg);
    assert_eq!((result, out.count), (Ok(()), PAGE));
    accept(t, e, e.tcs1(), &[tcs], TCS_MODIFIED);
}

/// Worker `w`: EAUG its region, then each round verify three words of every page of the
/// previous round and store the whole new pattern; at least `WORKER_ROUNDS` rounds, and on
/// until `ioctls_done`, so that the ioctls always meet threads inside. Returns its last round.
fn worker(t: &mut SimThread, e: &TestEnclave, tcs: u64, w: u64, ioctls_done: &AtomicBool) -> u64 {
    let region: Vec<u64> = (0..WORKER_PAGES).map(|i| e.base + WORKER_AREA + (w * WORKER_PAGES + i) * PAGE).collect();
    accept(t, e, tcs, &region, PENDING_RW);
    let mut round = 0;
    loop {
        if round > 0 {
            let words = [0, PAGE / 16, PAGE / 8 - 1];
            let loads = region.iter().flat_map(|&a| words.map(|w| Step::Load { addr: a + 8 * w, len: 8 })).collect();
            let values = run(t, tcs, loads);
            let expected: Vec<u64> =
                (0..WORKER_PAGES).flat_map(|i| words.map(|word| pattern(w, round - 1, i, word))).collect();
            assert_eq!(values, expected, "worker {w} round {round}");
        }
        let stores = region.iter().enumerate().map(|(i, &a)| Step::Store { addr: a, data: image(w, round, i as u64) });
        run(t, tcs, stores.collect());
        if round + 1 >= WORKER_ROUNDS && ioctls_done.load(Ordering::Acquire) {
            return round;
        }
        round += 1;
    }
}

/// The ioctl thread: its region cycles through EAUG, RESTRICT, TRIM and REMOVE,
/// `IOCTL_ROUNDS` times and then on (a bounded number of rounds) until `met_threads_inside`
/// says an ETRACK's IPI reached a thread inside: on a loaded machine the workers may
/// happen to be outside at every ETRACK of the first rounds.
fn ioctl_cycles(t: &mut SimThread, e: &TestEnclave, tcs: u64, met_threads_inside: impl Fn() -> bool) -> usize {
    let region: Vec<u64> = (0..IOCTL_PAGES).map(|i| e.base + IOCTL_AREA + i * PAGE).collect();
    let (offset, length) = (IOCTL_AREA, IOCTL_PAGES * PAGE);
    let mut retries = 0;
    for round in 0..IOCTL_ROUNDS * 20 {
        if round >= IOCTL_ROUNDS && met_threads_inside() {
            break;
        }
        accept(t, e, tcs, &region, PENDING_RW);
        let stores =
            region.iter().enumerate().map(|(i, &a)| Step::Store { addr: a, data: image(WORKERS, round, i as u64) });
        run(t, tcs, stores.collect());
        retries += sgx2_range(t, e.fd, ARGS, offset, length, Sgx2Op::Restrict(0x1));
        accept(t, e, tcs, &region, REG_R_PR);
        let values = run(t, tcs, region.iter().map(|&a| Step::Load { addr: a + 8, len: 8 }).collect());
        let expected: Vec<u64> = (0..IOCTL_PAGES).map(|i| pattern(WORKERS, round, i, 1)).collect();
        assert_eq!(values, expected, "ioctl region round {round}");
        retries += sgx2_range(t, e.fd, ARGS, offset, length, Sgx2Op::Modify(SGX_PAGE_TYPE_TRIM));
        accept(t, e, tcs, &region, TRIM_MODIFIED);
        retries += sgx2_range(t, e.fd, ARGS, offset, length, Sgx2Op::Remove);
    }
    retries
}

/// Sets the flag when dropped, so a panicking thread still stops ksgxd.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

#[test]
fn four_threads_fault_eaug_and_accept_while_ioctls_and_ksgxd_run() {
    let m = Machine::with_epc(EPC);
    let total = m.processor.epc_pages() as usize;
    let p = m.process();
    let mut t = m.thread(&p);
    let e = TestEnclave::load_sized(&mut t, PAGE, 4 * MIB).expect("the test enclave loads");
    let encl = p.enclave(e.fd).expect("enclave");
    let rw = Prot::READ | Prot::WRITE;
    p.mmap(ARGS, PAGE, rw, MapKind::Private, None).expect("argument page");
    p.mmap(e.base + DYNAMIC, DYNAMIC_END - DYNAMIC, rw, MapKind::Shared, Some(e.fd)).expect("dynamic area");
    // Three more TCSs: stack, TCS, SSA each.
    let dynamic: Vec<u64> = (0..3).map(|k| e.base + DYNAMIC + (3 * k + 1) * PAGE).collect();
    for &tcs in &dynamic {
        create_tcs(&mut t, &e, tcs);
        assert_eq!(encl.page_record(tcs).map(|r| r.0), Some(PageType::Tcs));
    }
    let worker_tcs = [e.tcs1(), e.tcs2(), dynamic[0], dynamic[1]];
    let ioctl_tcs = dynamic[2];

    m.platform.set_external_ksgxd(true);
    let stop = AtomicBool::new(false);
    let (mut workers, mut ioctler) = ((0..WORKERS).map(|_| m.thread(&p)).collect::<Vec<_>>(), m.thread(&p));
    let ipis = m.platform.ipis();
    let ioctls_done = AtomicBool::new(false);
    let last_rounds = std::thread::scope(|s| {
        let ksgxd = s.spawn(|| {
            let mut cpu = m.kernel_cpu();
            let mut reclaimed = 0;
            while !stop.load(Ordering::Acquire) {
                if m.sgx.ksgxd_should_run() {
                    reclaimed += m.sgx.ksgxd_run(&mut cpu);
                } else {
                    std::thread::yield_now();
                }
            }
            reclaimed
        });
        let _stop = StopOnDrop(&stop);
        let e = &e;
        let done = &ioctls_done;
        let handles: Vec<_> = workers
            .iter_mut()
            .zip(worker_tcs)
            .enumerate()
            .map(|(w, (thread, tcs))| s.spawn(move || worker(thread, e, tcs, w as u64, done)))
            .collect();
        let ioctls = s.spawn(|| {
            let _done = StopOnDrop(&ioctls_done);
            ioctl_cycles(&mut ioctler, e, ioctl_tcs, || m.platform.ipis() > ipis)
        });
        // The retries (EAGAIN/EBUSY, §3.9) vary from run to run; each call is bounded.
        ioctls.join().expect("ioctl thread");
        let last_rounds: Vec<u64> = handles.into_iter().map(|h| h.join().expect("worker")).collect();
        stop.store(true, Ordering::Release);
        assert!(ksgxd.join().expect("ksgxd") > 0, "ksgxd reclaimed");
        last_rounds
    });
    m.platform.set_external_ksgxd(false);
    assert!(m.platform.ipis() > ipis, "ETRACK IPIs reached threads inside");
    assert!(m.sgx.warnings().is_empty(), "{:?}", m.sgx.warnings());

    // Every word of every worker page holds the last round's pattern.
    let region = |w: u64| (0..WORKER_PAGES).map(move |i| e.base + WORKER_AREA + (w * WORKER_PAGES + i) * PAGE);
    for w in 0..WORKERS {
        let loads = region(w).flat_map(|a| (0..PAGE / 8).map(move |word| Step::Load { addr: a + 8 * word, len: 8 }));
        let values = run(&mut t, e.tcs1(), loads.collect());
        let last = last_rounds[w as usize];
        let expected: Vec<u64> =
            (0..WORKER_PAGES).flat_map(|i| (0..PAGE / 8).map(move |word| pattern(w, last, i, word))).collect();
        assert!(values == expected, "worker {w}'s pages are intact");
    }
    // The ioctl region is all holes again.
    assert!((0..IOCTL_PAGES).all(|i| encl.page_record(e.base + IOCTL_AREA + i * PAGE).is_none()));

    // Invariants: the processor's, and the driver's records against the EPCM.
    m.processor.check_invariants().expect("processor invariants");
    let info = encl.info();
    let held = encl.epc_pages();
    let mut by_type = [0usize; 5];
    for &page in &held {
        let view = m.processor.epcm_view(page);
        assert!(view.valid, "{page:?} held by the driver is valid in the EPCM");
        by_type[view.page_type as usize] += 1;
        if matches!(view.page_type, PageType::Reg | PageType::Tcs | PageType::Trim) {
            let record = encl.page_record(view.enclave_address).expect("a record for every resident child");
            assert_eq!((record.0, record.2), (view.page_type, true), "{:#x}", view.enclave_address);
        }
    }
    assert_eq!(by_type[PageType::Secs as usize], usize::from(info.secs_resident));
    assert_eq!(by_type[PageType::Va as usize], info.va_pages);
    let children = by_type[PageType::Reg as usize] + by_type[PageType::Tcs as usize] + by_type[PageType::Trim as usize];
    assert_eq!(children as u64, info.resident);
    assert_eq!(m.sgx.free_pages() + held.len(), total, "no EPC page leaked");
    let valid = (0..total as u32).filter(|&i| m.processor.epcm_view(EpcIndex(i)).valid).count();
    assert_eq!(valid, held.len(), "every valid EPCM entry is the enclave's");
    assert_eq!(by_type[PageType::Tcs as usize] as u64, resident_tcs(&encl, &e, &dynamic));

    // Release: munmap everything, close.
    p.munmap(e.base, e.size).expect("munmap");
    p.close(&mut t.kernel, e.fd).expect("close");
    assert!(m.sgx.warnings().is_empty(), "{:?}", m.sgx.warnings());
    assert_eq!(m.sgx.free_pages(), total, "every EPC page came back");
    assert!((0..total as u32).all(|i| !m.processor.epcm_view(EpcIndex(i)).valid), "every EPCM entry is invalid");
}

/// TCS records that are resident.
fn resident_tcs(encl: &sgxemu_driver::Encl, e: &TestEnclave, dynamic: &[u64]) -> u64 {
    [e.tcs1(), e.tcs2()].iter().chain(dynamic).filter(|&&a| encl.page_record(a).is_some_and(|r| r.2)).count() as u64
}

const _: () = assert!(
    layout::HEAP < DYNAMIC
        && IOCTL_AREA >= WORKER_AREA + WORKERS * WORKER_PAGES * PAGE
        && IOCTL_AREA + IOCTL_PAGES * PAGE <= DYNAMIC_END
);
