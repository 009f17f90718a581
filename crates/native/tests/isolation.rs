//! Isolation as the processor enforces it, for what the emulator sees of natively running
//! enclave code (`sgxemu_native::isolation`, `program_maps`): control that leaves ELRANGE
//! is #GP at the first event of enclave mode outside it, another enclave's page inside
//! ELRANGE is an EPCM #PF, and a mapping the program puts over an enclave page is the
//! program's (the reclaimer never touches it again).

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use support::enclave::{DATA, DYNAMIC, PAGE, TestEnclave, handler, op};

const EENTER: u32 = 2;
const ERESUME: u32 = 3;
/// EACCEPT flags for a freshly EAUGed page: R | W | REG | PENDING.
const PENDING_RW: u64 = 0x20B;

/// Host code outside every ELRANGE: `ud2` at +0, `syscall` at +0x10, `jmp $` at +0x20, a
/// load from address 0 at +0x30.
fn host_code() -> u64 {
    let page = sgxemu_native::sys::mmap(
        0,
        PAGE,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
        -1,
        0,
    )
    .expect("a page");
    let mut code = [0xCCu8; 0x40];
    code[0..2].copy_from_slice(&[0x0f, 0x0b]);
    code[0x10..0x12].copy_from_slice(&[0x0f, 0x05]);
    code[0x20..0x22].copy_from_slice(&[0xeb, 0xfe]);
    code[0x30..0x38].copy_from_slice(&[0x48, 0x8b, 0x04, 0x25, 0, 0, 0, 0]);
    // SAFETY: a fresh private page of this test, written before it becomes executable.
    unsafe { std::ptr::copy_nonoverlapping(code.as_ptr(), page as *mut u8, code.len()) };
    sgxemu_native::sys::mprotect(page, PAGE, libc::PROT_READ | libc::PROT_EXEC).expect("executable");
    page
}

/// The SSA's RIP of `tcs`'s last AEX, read by the enclave's exception handler entry.
fn ssa_rip(e: &TestEnclave, tcs: u64) -> u64 {
    let mut gpr = [0u64; 23];
    let (ret, run) = e.enter(tcs, EENTER, [handler::REPORT, gpr.as_mut_ptr() as u64, 0, 0, 0]);
    assert_eq!((ret, run.exception_vector), (0, 0), "{run:?}");
    gpr[17]
}

#[test]
fn control_that_leaves_elrange_is_a_gp_at_the_first_instruction_outside() {
    let e = TestEnclave::load(1 << 20);
    let code = host_code();
    let aep = sgxemu_native::vdso::get().expect("the vDSO is built by the first entry").aep;
    // (thread, target): a host ud2, a host `syscall`, the vDSO's ENCLU (an EEXIT gadget
    // outside ELRANGE), a host load that faults.
    let targets = [(0, code), (1, code + 0x10), (2, aep), (3, code + 0x30)];
    for (thread, target) in targets {
        let (ret, run) = e.enter(e.tcs(thread), EENTER, [op::JUMP, target, 0, 0, 0]);
        assert_eq!(ret, 0);
        assert_eq!(
            (run.function, run.exception_vector, run.exception_error_code),
            (ERESUME, 13, 0),
            "{target:#x}: {run:?}"
        );
        assert_eq!(ssa_rip(&e, e.tcs(thread)), target, "the AEX saved the first instruction outside");
    }
}

static ALARMS: AtomicU64 = AtomicU64::new(0);

extern "C" fn on_alarm(_: libc::c_int) {
    ALARMS.fetch_add(1, Ordering::Relaxed);
}

#[test]
fn an_interrupt_finds_enclave_code_looping_outside_elrange_and_raises_its_gp() {
    let e = TestEnclave::load(1 << 20);
    let spin = host_code() + 0x20;
    // SAFETY: a zeroed sigaction with a plain handler is valid.
    unsafe {
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = on_alarm as *const () as usize;
        assert_eq!(sgxemu_native::signals::wrap_async(libc::SIGALRM, &act, std::ptr::null_mut()), 0);
    }
    let tid = sgxemu_native::sys::gettid();
    let done = AtomicBool::new(false);
    let (ret, run) = std::thread::scope(|s| {
        s.spawn(|| {
            while !done.load(Ordering::Acquire) {
                let _ = sgxemu_native::sys::tgkill(tid, libc::SIGALRM);
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        });
        // Without the check the thread would loop at `spin` for ever, in enclave mode.
        let result = e.enter(e.tcs(0), EENTER, [op::JUMP, spin, 0, 0, 0]);
        done.store(true, Ordering::Release);
        result
    });
    assert_eq!((ret, run.function, run.exception_vector), (0, ERESUME, 13), "{run:?}");
    assert_eq!(ssa_rip(&e, e.tcs(0)), spin);
    assert!(ALARMS.load(Ordering::Relaxed) >= 1, "the signal was still delivered to the program");
}

#[test]
fn another_enclave_s_page_inside_elrange_is_an_epcm_page_fault() {
    use sgxemu_arch::{Attributes, AttributesFlags, PageType, Secinfo, SecinfoFlags, Secs};
    use sgxemu_uapi::{SGX_IOC_ENCLAVE_ADD_PAGES, SGX_IOC_ENCLAVE_CREATE, SgxEnclaveAddPages, SgxEnclaveCreate};
    use zerocopy::{FromZeros, IntoBytes};
    let engine = support::enclave::engine();
    let a = TestEnclave::load(1 << 20);
    // A page of A's dynamic area given back; enclave B, whose 2 MiB ELRANGE holds all of
    // A's, has a page there and maps it.
    let hole = a.base + 0x80000;
    engine.munmap(hole, PAGE).expect("munmap");
    // SAFETY: opening /dev/null for a descriptor number, as the preload does.
    let fd = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) };
    engine.opened("/dev/sgx_enclave", fd);
    let size = 2 << 20;
    let mut secs = Secs::new_zeroed();
    (secs.baseaddr, secs.size, secs.ssaframesize) = (a.base & !(size - 1), size, 1);
    secs.attributes = Attributes::new(AttributesFlags::MODE64BIT, 0x3);
    let create = SgxEnclaveCreate { src: secs.as_bytes().as_ptr() as u64 };
    engine.ioctl(fd, SGX_IOC_ENCLAVE_CREATE, &create as *const _ as u64).expect("ENCLAVE_CREATE");
    #[repr(C, align(4096))]
    struct Page([u8; 4096]);
    let source = Box::new(Page([0x5A; 4096]));
    let secinfo = Secinfo::new((SecinfoFlags::R | SecinfoFlags::W).with_page_type(PageType::Reg));
    let mut add = SgxEnclaveAddPages {
        src: source.0.as_ptr() as u64,
        offset: hole - secs.baseaddr,
        length: PAGE,
        secinfo: secinfo.as_bytes().as_ptr() as u64,
        flags: 0,
        count: 0,
    };
    engine.ioctl(fd, SGX_IOC_ENCLAVE_ADD_PAGES, &mut add as *mut _ as u64).expect("ENCLAVE_ADD_PAGES");
    let shared = libc::MAP_SHARED | libc::MAP_FIXED;
    engine.mmap(hole, PAGE, libc::PROT_READ | libc::PROT_WRITE, shared, fd).expect("B's page mapped in A's ELRANGE");
    // A reads it: the kernel maps B's page there, and the EPCM refuses A (P | U | SGX).
    let (ret, run) = a.enter(a.tcs(2), EENTER, [op::LOAD, hole + 8, 0, 0, 0]);
    assert_eq!(ret, 0);
    assert_eq!(
        (run.function, run.exception_vector, run.exception_error_code, run.exception_addr),
        (ERESUME, 14, 0x8005, hole),
        "{run:?}"
    );
}

#[test]
fn a_page_the_program_maps_over_an_enclave_page_is_never_touched_by_the_reclaimer() {
    let engine = support::enclave::engine();
    let e = TestEnclave::load(16 << 20);
    let data = e.base + DATA;
    e.call(0, op::WRITE, data, 0x1111, 0, 0);
    // The program's own page over the enclave's data page, as an interposed mmap makes it.
    let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED;
    let over = sgxemu_native::program_maps::replacing_engine(data, PAGE, flags).expect("over an enclave mapping");
    let rw = libc::PROT_READ | libc::PROT_WRITE;
    over.replaced_by_program(data, PAGE, || sgxemu_native::sys::mmap(data, PAGE, rw, flags, -1, 0)).expect("mmap");
    // SAFETY: the program's own fresh page.
    unsafe { std::ptr::write_bytes(data as *mut u8, 0xAB, PAGE as usize) };
    // A working set larger than the 4 MiB EPC: the enclave's old data page is written out
    // (and its PTE zapped) while the program's page stays.
    let encl = match engine.devices.get(e.fd) {
        Some(sgxemu_native::device::DeviceFile::Enclave(encl)) => encl,
        other => panic!("no enclave: {other:?}"),
    };
    let pages = 1024;
    let mut round = 0;
    while encl.page_record(data).expect("the enclave still has its page").2 {
        assert!(round < 8, "the reclaimer never wrote the data page out");
        let start = e.base + DYNAMIC + (round % 2) * pages * PAGE;
        for page in 0..pages {
            // A page accepted in an earlier round answers that it is not PENDING any more.
            let _ = e.eaccept(0, start + page * PAGE, PENDING_RW);
        }
        e.call(0, op::FILL, start, pages, round, 0);
        round += 1;
    }
    // SAFETY: the program's page, still mapped and its own.
    let back = unsafe { std::slice::from_raw_parts(data as *const u8, PAGE as usize) };
    assert!(back.iter().all(|&b| b == 0xAB), "the program's data survived the reclaimer");
}
