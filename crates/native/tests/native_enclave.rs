//! Enclave code running natively in this process under the emulator (no preload: the
//! engine is used in-process, as the enclave library's in-process device will): ENCLU from
//! SIGILL, exceptions as AEX with the SSA and the vDSO's report, nested AEX up to NSSA,
//! EDMM from several threads, and a working set larger than the EPC.

mod support;

use sgxemu_arch::Vector;
use support::enclave::{DATA, DYNAMIC, PAGE, TEXT, THREAD_BLOCK, TestEnclave, at, handler, op};

const EENTER: u32 = 2;
const ERESUME: u32 = 3;
const EEXIT: u32 = 4;
/// EACCEPT flags for a freshly EAUGed page: R | W | REG | PENDING.
const PENDING_RW: u64 = 0x20B;

/// GPRSGX as the handler copies it out (23 qwords).
#[derive(Debug, Default, Clone, Copy)]
#[repr(C)]
struct Gprsgx {
    regs: [u64; 16],
    rflags: u64,
    rip: u64,
    ursp: u64,
    urbp: u64,
    exitinfo: u32,
    reserved: u32,
    fsbase: u64,
    gsbase: u64,
}

#[test]
fn the_enclave_runs_and_keeps_data() {
    let e = TestEnclave::load(1 << 20);
    e.call(0, op::WRITE, e.base + DATA, 0x1234_5678_9ABC_DEF0, 0, 0);
    assert_eq!(e.read(1, e.base + DATA), 0x1234_5678_9ABC_DEF0, "another TCS sees the same data");
}

/// Runs `operation` on thread 3's TCS, expects an AEX reported through the vDSO with
/// `vector`, then reads the SSA from the handler entry and resumes past the instruction.
fn exception_round_trip(e: &TestEnclave, operation: u64, vector: u8, rip_offset: u64, skip: u64, rsi: u64) -> Gprsgx {
    let tcs = e.tcs(3);
    let (ret, run) = e.enter(tcs, EENTER, [operation, rsi, 0, 0, 0]);
    assert_eq!(ret, 0);
    assert_eq!(run.function, ERESUME, "an AEX leaves EAX = ERESUME: {run:?}");
    assert_eq!(run.exception_vector, u16::from(vector), "{run:?}");
    // The exception handler entry (CSSA = 1) reports the SSA and moves RIP past the insn.
    let mut gpr = Gprsgx::default();
    let (ret, run) = e.enter(tcs, EENTER, [handler::SKIP, &mut gpr as *mut Gprsgx as u64, skip, 0, 0]);
    assert_eq!((ret, run.function), (0, EEXIT), "{run:?}");
    assert_eq!(gpr.rip, e.base + TEXT + rip_offset, "SSA.RIP is the faulting (or, for a trap, the next) instruction");
    assert_eq!(gpr.regs[7], operation, "SSA.RDI holds the enclave's RDI at the exception");
    // ERESUME continues after the instruction and the enclave exits normally.
    let (ret, run) = e.enter(tcs, ERESUME, [0; 5]);
    assert_eq!((ret, run.function), (0, EEXIT), "{run:?}");
    gpr
}

#[test]
fn each_exception_is_an_aex_with_the_ssa_and_the_vdso_report() {
    let e = TestEnclave::load(1 << 20);
    // #UD, #DE, #BP report EXITINFO (valid | hardware exception | vector) whatever MISCSELECT.
    let gpr = exception_round_trip(&e, op::UD2, Vector::Ud as u8, at::ud2(), 2, 0);
    assert_eq!(gpr.exitinfo, 0x8000_0000 | 3 << 8 | 6);
    let gpr = exception_round_trip(&e, op::DIV0, Vector::De as u8, at::div(), 3, 0);
    assert_eq!(gpr.exitinfo, 0x8000_0000 | 3 << 8);
    // INT3 is a trap: SSA.RIP is already past it; a software exception (type 6).
    let gpr = exception_round_trip(&e, op::INT3, Vector::Bp as u8, at::after_int3(), 0, 0);
    assert_eq!(gpr.exitinfo, 0x8000_0000 | 6 << 8 | 3);
    // `syscall` is #UD in an enclave (Syscall User Dispatch turns it into SIGSYS here); it
    // did not run: RAX still holds the call's number.
    let gpr = exception_round_trip(&e, op::SYSCALL, Vector::Ud as u8, at::syscall(), 2, 0);
    assert_eq!(gpr.exitinfo, 0x8000_0000 | 3 << 8 | 6);
    assert_eq!(gpr.regs[0], 39, "SSA.RAX");
    // #GP and #PF are not reported in EXITINFO without MISCSELECT.EXINFO.
    let gpr = exception_round_trip(&e, op::GP, Vector::Gp as u8, at::gp(), 3, 0);
    assert_eq!(gpr.exitinfo, 0);
}

#[test]
fn a_page_fault_the_vma_forbids_reports_the_page_address() {
    let e = TestEnclave::load(1 << 20);
    // The last dynamic page, never touched, made PROT_NONE: a load there is an ordinary #PF
    // (not present, user read). (An unmapped hole would not stay one: the host may hand
    // the address to the next mmap.)
    let hole = e.base + e.size - PAGE;
    support::enclave::engine().mprotect(hole, PAGE, libc::PROT_NONE).expect("mprotect");
    let (ret, run) = e.enter(e.tcs(2), EENTER, [op::LOAD, hole + 0x123, 0, 0, 0]);
    assert_eq!(ret, 0);
    assert_eq!((run.function, run.exception_vector, run.exception_error_code), (ERESUME, 14, 0x4));
    assert_eq!(run.exception_addr, hole, "CR2 after an AEX has bits 11:0 cleared");
    let mut gpr = Gprsgx::default();
    e.enter(e.tcs(2), EENTER, [handler::SKIP, &mut gpr as *mut Gprsgx as u64, 3, 0, 0]);
    assert_eq!(gpr.rip, e.base + TEXT + at::load());
    let (_, run) = e.enter(e.tcs(2), ERESUME, [0; 5]);
    assert_eq!(run.function, EEXIT);
}

#[test]
fn nested_aex_fills_the_ssa_stack_and_eenter_is_refused_at_nssa() {
    let e = TestEnclave::load(1 << 20);
    let tcs = e.tcs(1);
    // CSSA 0 → 1.
    let (_, run) = e.enter(tcs, EENTER, [op::UD2, 0, 0, 0, 0]);
    assert_eq!((run.function, run.exception_vector), (ERESUME, 6));
    // The handler faults too: CSSA 1 → 2 = NSSA.
    let (_, run) = e.enter(tcs, EENTER, [handler::UD2, 0, 0, 0, 0]);
    assert_eq!((run.function, run.exception_vector), (ERESUME, 6), "nested AEX");
    // No SSA frame left: EENTER raises #GP, reported by the vDSO with function = EENTER.
    let (ret, run) = e.enter(tcs, EENTER, [op::WRITE, e.base + DATA, 1, 0, 0]);
    assert_eq!(ret, 0);
    assert_eq!((run.function, run.exception_vector), (EENTER, 13), "EENTER at CSSA == NSSA: {run:?}");
    // The other threads are unaffected.
    e.call(0, op::WRITE, e.base + DATA, 7, 0, 0);
    assert_eq!(e.read(0, e.base + DATA), 7);
}

#[test]
fn four_threads_eaug_and_eaccept_concurrently() {
    let e = TestEnclave::load(8 << 20);
    let pages_each = 64;
    std::thread::scope(|s| {
        for thread in 0..4u64 {
            let e = &e;
            s.spawn(move || {
                let start = e.base + DYNAMIC + thread * pages_each * PAGE;
                for page in 0..pages_each {
                    let addr = start + page * PAGE;
                    assert_eq!(e.eaccept(thread, addr, PENDING_RW), 0, "EACCEPT on a fresh page EAUGs it");
                }
                e.call(thread, op::FILL, start, pages_each, thread, 0);
                let mut mismatches = u64::MAX;
                e.call(thread, op::CHECK, start, pages_each, thread, &mut mismatches as *mut u64 as u64);
                assert_eq!(mismatches, 0);
            });
        }
    });
}

#[test]
fn a_working_set_of_twice_the_epc_survives_the_reclaimer_on_two_threads() {
    // 4 MiB of EPC; two threads each own 4 MiB of dynamic memory.
    let e = TestEnclave::load(16 << 20);
    let pages_each = 1024;
    std::thread::scope(|s| {
        for thread in 0..2u64 {
            let e = &e;
            s.spawn(move || {
                let start = e.base + DYNAMIC + thread * pages_each * PAGE;
                for page in 0..pages_each {
                    assert_eq!(e.eaccept(thread, start + page * PAGE, PENDING_RW), 0);
                }
                let seed = 0xA5A5_0000 + thread;
                e.call(thread, op::FILL, start, pages_each, seed, 0);
                for _ in 0..2 {
                    let mut mismatches = u64::MAX;
                    e.call(thread, op::CHECK, start, pages_each, seed, &mut mismatches as *mut u64 as u64);
                    assert_eq!(mismatches, 0, "every word of every page comes back");
                }
            });
        }
    });
}

static ALARMS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
static ON_ENCLAVE_STACK: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
static ELRANGE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

extern "C" fn on_alarm(_: libc::c_int) {
    let marker = 0u8;
    let sp = &marker as *const u8 as u64;
    let base = ELRANGE.load(std::sync::atomic::Ordering::Relaxed);
    if sp >= base && sp < base + (1 << 20) {
        ON_ENCLAVE_STACK.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    ALARMS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

#[test]
fn an_async_signal_during_enclave_code_is_an_aex_then_the_program_s_handler() {
    let e = TestEnclave::load(1 << 20);
    ELRANGE.store(e.base, std::sync::atomic::Ordering::Relaxed);
    // The program installs a SIGALRM handler without SA_ONSTACK, as the preload's
    // sigaction would see it.
    // SAFETY: a zeroed sigaction with a plain handler is valid.
    unsafe {
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = on_alarm as *const () as usize;
        assert_eq!(sgxemu_native::signals::wrap_async(libc::SIGALRM, &act, std::ptr::null_mut()), 0);
    }
    let aex_before = sgxemu_native::stats::REQUEUED_SIGNALS.load(std::sync::atomic::Ordering::Relaxed);
    // Another thread sends SIGALRM to this one every millisecond while it spins inside.
    let tid = sgxemu_native::sys::gettid();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let n: u64 = 30_000_000;
    let mut sum = 0u64;
    let start = std::time::Instant::now();
    std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(std::sync::atomic::Ordering::Acquire) {
                let _ = sgxemu_native::sys::tgkill(tid, libc::SIGALRM);
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        });
        e.call(0, op::SPIN, n, &mut sum as *mut u64 as u64, 0, 0);
        stop.store(true, std::sync::atomic::Ordering::Release);
    });
    let spun = start.elapsed();
    assert_eq!(sum, n * (n + 1) / 2, "the enclave's registers survive every AEX/ERESUME");
    let alarms = ALARMS.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!("{alarms} SIGALRMs handled while the enclave spun for {spun:?}");
    let interrupted = sgxemu_native::stats::REQUEUED_SIGNALS.load(std::sync::atomic::Ordering::Relaxed) - aex_before;
    assert!(interrupted >= 3, "signals interrupted the enclave with an AEX ({interrupted} in {spun:?})");
    assert!(alarms >= interrupted, "each was then delivered to the program's handler ({alarms})");
    assert_eq!(ON_ENCLAVE_STACK.load(std::sync::atomic::Ordering::Relaxed), 0, "never on the enclave stack");
}

const ANYWHERE: libc::c_int = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE;

/// ECREATE of a fresh enclave of `size` bytes (a power of two) on a new device descriptor.
fn fresh_enclave(engine: &sgxemu_native::Engine, size: u64) -> i32 {
    use sgxemu_arch::{Attributes, AttributesFlags, Secs};
    use sgxemu_uapi::{SGX_IOC_ENCLAVE_CREATE, SgxEnclaveCreate};
    use zerocopy::{FromZeros, IntoBytes};
    // SAFETY: opening /dev/null for a descriptor number, as the preload does.
    let fd = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) };
    engine.opened("/dev/sgx_enclave", fd);
    let reservation = sgxemu_native::sys::mmap(0, 2 * size, libc::PROT_NONE, ANYWHERE, -1, 0).expect("address space");
    let mut secs = Secs::new_zeroed();
    (secs.baseaddr, secs.size, secs.ssaframesize) = (reservation.div_ceil(size) * size, size, 1);
    secs.attributes = Attributes::new(AttributesFlags::MODE64BIT, 0x3);
    let create = SgxEnclaveCreate { src: secs.as_bytes().as_ptr() as u64 };
    engine.ioctl(fd, SGX_IOC_ENCLAVE_CREATE, &create as *const _ as u64).expect("ENCLAVE_CREATE");
    fd
}

/// ADD_PAGES of `length` bytes from `source` at enclave offset `offset` (RW pages,
/// `measure`d or not): the result and the count the driver wrote back.
fn add_pages(
    engine: &sgxemu_native::Engine,
    fd: i32,
    (source, offset, length): (u64, u64, u64),
    measure: bool,
) -> (Result<(), i32>, u64) {
    use sgxemu_arch::{PageType, Secinfo, SecinfoFlags};
    use sgxemu_uapi::{SGX_IOC_ENCLAVE_ADD_PAGES, SGX_PAGE_MEASURE, SgxEnclaveAddPages};
    use zerocopy::IntoBytes;
    let secinfo = Secinfo::new((SecinfoFlags::R | SecinfoFlags::W).with_page_type(PageType::Reg));
    let mut add = SgxEnclaveAddPages {
        src: source,
        offset,
        length,
        secinfo: secinfo.as_bytes().as_ptr() as u64,
        flags: if measure { SGX_PAGE_MEASURE } else { 0 },
        count: 0,
    };
    let result = engine.ioctl(fd, SGX_IOC_ENCLAVE_ADD_PAGES, &mut add as *mut _ as u64).map_err(|e| e.0);
    (result, add.count)
}

/// On a fresh uninitialized enclave: ADD_PAGES with its argument at an unmapped address,
/// then ADD_PAGES of two pages whose second source page is unreadable (result, count).
fn add_pages_from_bad_pointers(engine: &sgxemu_native::Engine) -> (Result<(), i32>, Result<(), i32>, u64) {
    use sgxemu_uapi::SGX_IOC_ENCLAVE_ADD_PAGES;
    let fd = fresh_enclave(engine, 1 << 20);
    // Two source pages: the first readable, the second not.
    let source =
        sgxemu_native::sys::mmap(0, 2 * PAGE, libc::PROT_READ | libc::PROT_WRITE, ANYWHERE, -1, 0).expect("source");
    // SAFETY: the second page of our own fresh mapping.
    assert_eq!(unsafe { libc::mprotect((source + PAGE) as *mut libc::c_void, PAGE as usize, libc::PROT_NONE) }, 0);
    let bad_argument = engine.ioctl(fd, SGX_IOC_ENCLAVE_ADD_PAGES, 8).map_err(|e| e.0);
    let (result, count) = add_pages(engine, fd, (source, 0, 2 * PAGE), false);
    engine.closed(fd);
    (bad_argument, result, count)
}

static USR1_HANDLED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

extern "C" fn on_usr1(_: libc::c_int) {
    USR1_HANDLED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

#[test]
fn a_signal_during_a_long_add_pages_ends_it_early_as_the_kernel_s_signal_pending_does() {
    let engine = support::enclave::engine();
    let pages = 2048;
    let length = pages * PAGE;
    let source =
        sgxemu_native::sys::mmap(0, length, libc::PROT_READ | libc::PROT_WRITE, ANYWHERE, -1, 0).expect("source");
    for restart in [false, true] {
        // SAFETY: a zeroed sigaction with a plain handler is valid; SIGUSR1 is the test's.
        unsafe {
            let mut act: libc::sigaction = std::mem::zeroed();
            act.sa_sigaction = on_usr1 as *const () as usize;
            act.sa_flags = if restart { libc::SA_RESTART } else { 0 };
            assert_eq!(libc::sigaction(libc::SIGUSR1, &act, std::ptr::null_mut()), 0);
        }
        let fd = fresh_enclave(engine, 16 << 20);
        let handled_before = USR1_HANDLED.load(std::sync::atomic::Ordering::Relaxed);
        // Another thread sends SIGUSR1 to this one every 100 µs while it adds 8 MiB of
        // measured pages (twice the EPC, so the reclaimer works too).
        let tid = sgxemu_native::sys::gettid();
        let stop = std::sync::atomic::AtomicBool::new(false);
        let (result, count) = std::thread::scope(|s| {
            s.spawn(|| {
                while !stop.load(std::sync::atomic::Ordering::Acquire) {
                    let _ = sgxemu_native::sys::tgkill(tid, libc::SIGUSR1);
                    std::thread::sleep(std::time::Duration::from_micros(100));
                }
            });
            let outcome = add_pages(engine, fd, (source, 0, length), true);
            stop.store(true, std::sync::atomic::Ordering::Release);
            outcome
        });
        assert!(USR1_HANDLED.load(std::sync::atomic::Ordering::Relaxed) > handled_before, "the handler ran");
        let resumable = match (restart, result) {
            // The per-page check stopped it after some pages: success with the partial count.
            (_, Ok(())) => {
                assert!(count > 0 && count < length, "partial progress: {count:#x} of {length:#x}");
                true
            }
            // ERESTARTSYS without SA_RESTART is EINTR: from the per-page check before the
            // first page (count 0), or from an EPC allocation that had to reclaim.
            (false, Err(libc::EINTR)) => true,
            // With SA_RESTART the kernel runs the call again with the same arguments: if an
            // allocation stopped it after some pages, the rerun finds the first page added
            // and fails with EBUSY (driver spec §3.2: a page added twice is EBUSY).
            (true, Err(libc::EBUSY)) => false,
            (_, other) => panic!("SA_RESTART {restart}: {other:?} after {count:#x} bytes"),
        };
        if resumable {
            // Continued without signals, the call adds the rest.
            let (rest, added) = add_pages(engine, fd, (source + count, count, length - count), true);
            assert_eq!((rest, added), (Ok(()), length - count));
        }
        engine.closed(fd);
    }
    // SAFETY: back to the default disposition.
    unsafe { libc::signal(libc::SIGUSR1, libc::SIG_DFL) };
}

#[test]
fn bad_user_pointers_are_efault_with_partial_progress_whatever_the_signal_mask() {
    let engine = support::enclave::engine();
    // Fault signals unblocked: the plain copy and its exception-table fixup.
    assert!(matches!(sgxemu_native::user_copy::Copier::for_this_thread(0), sgxemu_native::user_copy::Copier::Direct));
    assert_eq!(add_pages_from_bad_pointers(engine), (Err(libc::EFAULT), Err(libc::EFAULT), PAGE));
    // SIGSEGV blocked (a program in its own fault handler): the kernel's copies instead.
    // SAFETY: sigset operations on locals; pthread_sigmask on the calling thread only.
    let old = unsafe {
        let mut block: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut block);
        libc::sigaddset(&mut block, libc::SIGSEGV);
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::pthread_sigmask(libc::SIG_BLOCK, &block, &mut old);
        old
    };
    let kernel_copier = sgxemu_native::user_copy::Copier::for_this_thread(0);
    let blocked = add_pages_from_bad_pointers(engine);
    // SAFETY: restores the mask saved above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
    assert_eq!(kernel_copier, sgxemu_native::user_copy::Copier::Kernel { pid: 0 });
    assert_eq!(blocked, (Err(libc::EFAULT), Err(libc::EFAULT), PAGE));
}

/// Bytes an XSAVE of XFRM = x87 | SSE (the test enclave's) writes: the legacy region and
/// the header; a canary sits in each qword the host's other components would use.
const XSAVE_LEGACY_AND_HEADER: u64 = 576;
const CANARY: u64 = 0xC0FF_EE00_DEAD_BEEF;

fn lay_canaries(e: &TestEnclave, area: u64) -> Vec<u64> {
    let offsets: Vec<u64> = (XSAVE_LEGACY_AND_HEADER..PAGE).step_by(64).collect();
    for &offset in &offsets {
        e.call(0, op::WRITE, area + offset, CANARY, 0, 0);
    }
    offsets
}

fn assert_canaries(e: &TestEnclave, area: u64, offsets: &[u64], after: &str) {
    for &offset in offsets {
        assert_eq!(e.read(0, area + offset), CANARY, "{after} wrote past its XFRM's area (at +{offset})");
    }
}

/// On hardware EENTER loads XCR0 with the enclave's XFRM; here the host's XCR0 stays, and
/// it enables more than x87 | SSE on any host with AVX: the emulator makes the enclave's
/// XSAVE family behave as under XFRM (AMX hosts overran Intel SDK enclaves' save areas).
#[test]
fn an_enclave_s_xsave_family_works_under_its_own_xfrm() {
    let host_xcr0 = sgxemu_native::xfeatures::host_xcr0();
    if host_xcr0 & !0x3 == 0 {
        eprintln!("skipped: this host's XCR0 ({host_xcr0:#x}) is the test enclave's XFRM; nothing to emulate");
        return;
    }
    let e = TestEnclave::load(1 << 20);
    let area = e.base + DATA;
    let canaries = lay_canaries(&e, area);
    let mut xcr0 = 0u64;
    e.call(0, op::XSAVE, area, &mut xcr0 as *mut u64 as u64, 0, 0);
    assert_eq!(xcr0, 0x3, "XGETBV(0) inside the enclave reads its XFRM");
    assert_canaries(&e, area, &canaries, "XSAVE");
    assert_eq!(e.read(0, area + 512) & !0x3, 0, "XSTATE_BV holds XFRM's components only");
    e.call(0, op::XSAVEC_XRSTOR, area, 0, 0, 0);
    assert_eq!(e.read(0, area + 520), 1 << 63 | 0x3, "XSAVEC's XCOMP_BV is XFRM, compacted");
    assert_canaries(&e, area, &canaries, "XSAVEC");
    an_enclave_s_xrstor_runs_natively_where_the_host_s_extra_components_are_caller_saved(&e, host_xcr0);
}

/// Runtimes clear the extended state with an XRSTOR at each entry and exit (Intel's SDK:
/// two per ECALL). Where the host's components outside XFRM are all caller-saved
/// registers (x87, SSE, AVX, AVX-512, AMX), XRSTOR runs natively: initialising the host's
/// extra registers is invisible to the ECALL's caller, and the saves stay emulated. A
/// native XRSTOR may read memory for every host component (8 KiB past an XFRM-sized image
/// on AMX hosts): where that faults, the emulator carries the instruction out instead.
/// (Part of the test above: the counter of emulated instructions is the process's.)
fn an_enclave_s_xrstor_runs_natively_where_the_host_s_extra_components_are_caller_saved(
    e: &TestEnclave,
    host_xcr0: u64,
) {
    const ABI_CALLER_SAVED: u64 = 0x3 | 1 << 2 | 0x7 << 5 | 0x3 << 17;
    let native = host_xcr0 & !0x3 & !ABI_CALLER_SAVED == 0;
    // Thread 3's SSA frames and stack (12 KiB of readable pages, that thread never runs
    // here), and the data page, whose next pages are not all there.
    let roomy = e.base + 3 * THREAD_BLOCK + PAGE;
    let cramped = e.base + DATA + 0x400;
    for (image, traps) in [(roomy, if native { 1 } else { 2 }), (cramped, 2)] {
        let saved = e.base + DATA;
        for offset in (0..0x240).step_by(8) {
            e.call(0, op::WRITE, image + offset, 0, 0, 0);
        }
        e.call(0, op::WRITE, image + 24, 0x1f80, 0, 0); // MXCSR, its reset value
        e.call(0, op::WRITE, image + 160, 0x0123_4567_89ab_cdef, 0, 0); // XMM0
        e.call(0, op::WRITE, image + 168, 0xfedc_ba98_7654_3210, 0, 0);
        e.call(0, op::WRITE, image + 512, 0x2, 0, 0); // XSTATE_BV: SSE only
        let emulated = || sgxemu_native::stats::EMULATED_INSTRUCTIONS.load(std::sync::atomic::Ordering::Relaxed);
        let before = emulated();
        e.call(0, op::XRSTOR_XSAVE, image, saved, 0, 0);
        let taken = emulated() - before;
        let xmm0 = (e.read(0, saved + 160), e.read(0, saved + 168));
        assert_eq!(xmm0, (0x0123_4567_89ab_cdef, 0xfedc_ba98_7654_3210), "image at {:#x}", image - e.base);
        assert_eq!(e.read(0, saved + 512) & 0x2, 0x2, "XMM0 is in use after the XRSTOR");
        assert_eq!(taken, traps, "emulated instructions, image at {:#x} (host XCR0 {host_xcr0:#x})", image - e.base);
    }
}

/// The kernel's vDSO runs ENCLU wherever RSP points (after an OCALL, the enclave's EEXIT
/// chooses it); the software EENTER must not care either.
#[test]
fn the_vdso_enters_from_a_stack_of_any_alignment() {
    let e = TestEnclave::load(1 << 20);
    for misalignment in [0, 8, 1, 4] {
        let value = 0x5eed_0000 + misalignment;
        let (ret, run) =
            e.enter_with_stack_offset(e.tcs(1), EENTER, misalignment, [op::WRITE, e.base + DATA, value, 0, 0]);
        assert_eq!((ret, run.function, run.exception_vector), (0, 4, 0), "RSP off by {misalignment}: {run:?}");
        assert_eq!(e.read(0, e.base + DATA), value);
    }
}

/// An SGX2 ioctl's ETRACK completes without interrupting a thread that runs enclave code
/// (as one spinning on a lock the ioctl's caller holds does): the host mappings already
/// follow the EPCM, so no thread can hold a stale translation, and no IPI is sent. The
/// restriction is in force for that thread at once: its next write to the page faults.
#[test]
fn an_sgx2_ioctl_completes_tracking_without_interrupting_threads_inside() {
    use std::sync::atomic::{AtomicU64, Ordering};
    let e = TestEnclave::load(1 << 20);
    let engine = support::enclave::engine();
    let release = AtomicU64::new(0);
    let rounds = AtomicU64::new(0);
    let spinner_tid = AtomicU64::new(0);
    let (spinner, kicks_before) = std::thread::scope(|s| {
        s.spawn(|| {
            spinner_tid.store(sgxemu_native::sys::gettid() as u64, Ordering::Release);
            e.call(2, op::SPIN_UNTIL, &release as *const AtomicU64 as u64, &rounds as *const AtomicU64 as u64, 0, 0);
        });
        let spinner = loop {
            let tid = spinner_tid.load(Ordering::Acquire);
            let state = sgxemu_native::thread::all().into_iter().find(|t| t.tid as u64 == tid && tid != 0);
            match state {
                // Spinning, past the first faults of its code and stack (each an AEX).
                Some(t) if t.in_enclave.load(Ordering::Acquire) && rounds.load(Ordering::Acquire) > 1000 => break t,
                _ => std::thread::yield_now(),
            }
        };
        let kicks_before = spinner.ipis_sent.load(Ordering::Acquire);
        let mut restrict = sgxemu_uapi::SgxEnclaveRestrictPermissions {
            offset: DATA,
            length: PAGE,
            permissions: 1,
            ..Default::default()
        };
        let result = engine.ioctl(
            e.fd,
            sgxemu_uapi::SGX_IOC_ENCLAVE_RESTRICT_PERMISSIONS,
            &mut restrict as *mut sgxemu_uapi::SgxEnclaveRestrictPermissions as u64,
        );
        let still_inside = spinner.in_enclave.load(Ordering::Acquire);
        release.store(1, Ordering::Release);
        assert!(result.is_ok(), "RESTRICT_PERMISSIONS: {result:?}");
        assert_eq!((restrict.count, restrict.result), (PAGE, 0));
        assert!(still_inside, "the spinning thread stayed inside during the ioctl");
        (spinner, kicks_before)
    });
    assert_eq!(spinner.ipis_sent.load(Ordering::Acquire) - kicks_before, 0, "IPIs for one SGX2 ETRACK");
    let (_, run) = e.enter(e.tcs(2), EENTER, [op::WRITE, e.base + DATA, 1, 0, 0]);
    assert_eq!(run.exception_vector, 14, "a write to the restricted page: {run:?}");
}

/// AVX-512 state (ZMM registers, opmask) set by enclave code survives the AEXes of interrupts
/// and their ERESUMEs when the enclave's XFRM selects it (the SSA's XSAVE area holds it).
#[test]
fn avx512_state_survives_aex_and_eresume() {
    use std::sync::atomic::{AtomicU64, Ordering};
    const AVX512: u64 = 0xe7;
    let has_avx512f = sgxemu_native::cpuid::host(7, 0)[1] & (1 << 16) != 0;
    if sgxemu_native::xfeatures::host_xcr0() & AVX512 != AVX512 || !has_avx512f {
        eprintln!("skipped: this host has no AVX-512 (XCR0 {:#x})", sgxemu_native::xfeatures::host_xcr0());
        return;
    }
    let e = TestEnclave::load_with_xfrm(1 << 20, AVX512);
    let release = AtomicU64::new(0);
    let rounds = AtomicU64::new(0);
    let tid = AtomicU64::new(0);
    let mut out = [0u64; 9];
    let pattern = 0x0123_4567_89ab_cdef_u64;
    std::thread::scope(|s| {
        let out = &mut out;
        s.spawn(|| {
            tid.store(sgxemu_native::sys::gettid() as u64, Ordering::Release);
            let (release, rounds) = (&release as *const AtomicU64 as u64, &rounds as *const AtomicU64 as u64);
            e.call(1, op::ZMM_ACROSS_AEX, pattern, release, out.as_mut_ptr() as u64, rounds);
        });
        while rounds.load(Ordering::Acquire) < 1000 {
            std::thread::yield_now();
        }
        // Interrupts (the IPI signal): each an AEX while the registers hold the pattern.
        let target = tid.load(Ordering::Acquire) as i32;
        for _ in 0..20 {
            let seen = rounds.load(Ordering::Acquire);
            let _ = sgxemu_native::sys::tgkill(target, sgxemu_native::platform::kick_signal());
            while rounds.load(Ordering::Acquire) < seen + 100 {
                std::thread::yield_now();
            }
        }
        release.store(1, Ordering::Release);
    });
    assert_eq!(&out[..8], &[pattern; 8], "ZMM0 after 20 AEX/ERESUME round trips");
    assert_eq!(out[8], pattern, "K1 after 20 AEX/ERESUME round trips");
}

/// A thread spinning with PAUSE inside the enclave is taken off its CPU when an interrupt
/// (the driver's IPI) finds it so (pause-loop exiting), so spinners cannot starve the lock
/// holder; one spinning without PAUSE is interrupted but resumed at once.
#[test]
fn a_pause_loop_inside_the_enclave_backs_off() {
    use std::sync::atomic::{AtomicU64, Ordering};
    let e = TestEnclave::load(1 << 20);
    for (operation, backs_off) in [(op::PAUSE_UNTIL, true), (op::SPIN_UNTIL, false)] {
        let release = AtomicU64::new(0);
        let rounds = AtomicU64::new(0);
        let tid = AtomicU64::new(0);
        let backed_off = std::thread::scope(|s| {
            s.spawn(|| {
                tid.store(sgxemu_native::sys::gettid() as u64, Ordering::Release);
                e.call(3, operation, &release as *const AtomicU64 as u64, &rounds as *const AtomicU64 as u64, 0, 0);
            });
            let spinner = loop {
                let tid = tid.load(Ordering::Acquire);
                match sgxemu_native::thread::all().into_iter().find(|t| tid != 0 && t.tid as u64 == tid) {
                    Some(t) => break t,
                    None => std::thread::yield_now(),
                }
            };
            let start = std::time::Instant::now();
            let mut backed_off = false;
            while start.elapsed() < std::time::Duration::from_secs(1) && !backed_off {
                let _ = sgxemu_native::sys::tgkill(spinner.tid, sgxemu_native::platform::kick_signal());
                std::thread::sleep(std::time::Duration::from_millis(1));
                backed_off = spinner.spin_backoff_us.load(Ordering::Relaxed) > 0;
            }
            release.store(1, Ordering::Release);
            backed_off
        });
        assert!(rounds.load(Ordering::Acquire) > 0, "op {operation} spun");
        assert_eq!(backed_off, backs_off, "op {operation}: pause-loop exiting");
    }
}
