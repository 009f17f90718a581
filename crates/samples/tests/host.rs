//! The enclaves' C, built for the host (build.rs, `-DSGXEMU_HOST_TEST`) with ENCLU supplied
//! by [`sgxemu_test_enclu`] below: the CMAC against RFC 4493 and the processor model's
//! CMAC, and every operation except UD2 against its documented arguments and results.

use std::cell::RefCell;
use std::ffi::{c_int, c_void};
use std::sync::atomic::{AtomicU64, Ordering};

use sgxemu_arch::keyrequest::Keyrequest;
use sgxemu_arch::report::Report;
use sgxemu_samples::{Call, FILL_MULTIPLIER, PING_MAGIC, UNKNOWN_OP, fill_word, op};
use zerocopy::{FromBytes, FromZeros, IntoBytes};

unsafe extern "C-unwind" {
    fn sgxemu_aes128_cmac(key: *const u8, msg: *const u8, len: usize, mac: *mut u8);
    fn sgxemu_ct_equal(a: *const c_void, b: *const c_void, n: usize) -> c_int;
    fn sgxemu_wipe(p: *mut c_void, n: usize);
    fn sgxemu_demo_main(call: *mut Call, tcs: u64);
    fn sgxemu_attest_main(call: *mut Call, tcs: u64);
}

/// One ENCLU the C executed: (RAX, RBX, RCX, RDX).
type Regs = (u64, u64, u64, u64);
type Handler = Box<dyn FnMut(Regs) -> u64>;

thread_local! {
    /// This test's ENCLU: each test thread installs its own.
    static ENCLU: RefCell<Option<Handler>> = const { RefCell::new(None) };
}

/// ENCLU for the host build of the C (`sgx.h`, `SGXEMU_HOST_TEST`).
#[unsafe(no_mangle)]
extern "C-unwind" fn sgxemu_test_enclu(rax: u64, rbx: u64, rcx: u64, rdx: u64) -> u64 {
    let mut handler = ENCLU.with(|h| h.borrow_mut().take()).expect("the test installed an ENCLU handler");
    let out = handler((rax, rbx, rcx, rdx));
    ENCLU.with(|h| *h.borrow_mut() = Some(handler));
    out
}

fn set_enclu(handler: impl FnMut(Regs) -> u64 + 'static) {
    ENCLU.with(|h| *h.borrow_mut() = Some(Box::new(handler)));
}

/// An ENCLU handler that records every call and answers with `status(call index, regs)`.
fn recording(mut status: impl FnMut(usize, Regs) -> u64 + 'static) -> std::rc::Rc<RefCell<Vec<Regs>>> {
    let log = std::rc::Rc::new(RefCell::new(Vec::new()));
    let log2 = log.clone();
    set_enclu(move |regs| {
        let n = log2.borrow().len();
        log2.borrow_mut().push(regs);
        status(n, regs)
    });
    log
}

const TCS: u64 = 0x7f00_1234_5000;

fn demo(op: u64, args: [u64; 6]) -> Call {
    let mut call = Call::new(op, args);
    call.ret = [0xdead; 4]; // the enclave writes all four
    // SAFETY: `call` is a valid struct call; the args point at memory each test owns.
    unsafe { sgxemu_demo_main(&mut call, TCS) };
    call
}

fn attest(op: u64, args: [u64; 6]) -> Call {
    let mut call = Call::new(op, args);
    call.ret = [0xdead; 4];
    // SAFETY: as in `demo`.
    unsafe { sgxemu_attest_main(&mut call, TCS) };
    call
}

fn addr<T: ?Sized>(p: *const T) -> u64 {
    p.cast::<u8>() as u64
}

fn cmac(key: &[u8; 16], msg: &[u8]) -> [u8; 16] {
    let mut mac = [0u8; 16];
    // SAFETY: key is 16 bytes, msg is msg.len() bytes, mac is 16 writable bytes.
    unsafe { sgxemu_aes128_cmac(key.as_ptr(), msg.as_ptr(), msg.len(), mac.as_mut_ptr()) };
    mac
}

fn aes_ni() -> bool {
    let ok = std::arch::is_x86_feature_detected!("aes");
    if !ok {
        eprintln!("skipped: this CPU has no AES-NI");
    }
    ok
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex")).collect()
}

#[test]
fn cmac_rfc4493_vectors() {
    if !aes_ni() {
        return;
    }
    let key: [u8; 16] = hex("2b7e151628aed2a6abf7158809cf4f3c").try_into().expect("16 bytes");
    let msg = hex(concat!(
        "6bc1bee22e409f96e93d7e117393172a",
        "ae2d8a571e03ac9c9eb76fac45af8e51",
        "30c81c46a35ce411e5fbc1191a0a52ef",
        "f69f2445df4f9b17ad2b417be66c3710"
    ));
    for (len, mac) in [
        (0, "bb1d6929e95937287fa37d129b756746"),
        (16, "070a16b46b4d4144f79bdd9dd04a287c"),
        (40, "dfa66747de9ae63030ca32611497c827"),
        (64, "51f0bebf7e3b9d92fc49741779363cfe"),
    ] {
        assert_eq!(cmac(&key, &msg[..len]).to_vec(), hex(mac), "RFC 4493, {len}-byte message");
    }
}

#[test]
fn cmac_matches_the_processor_model_at_every_length() {
    if !aes_ni() {
        return;
    }
    let msg: Vec<u8> = (0..500u32).map(|i| (i.wrapping_mul(131) >> 3) as u8).collect();
    for len in 0..msg.len() {
        let key: [u8; 16] = std::array::from_fn(|i| (len * 7 + i * 13) as u8);
        assert_eq!(cmac(&key, &msg[..len]), sgxemu_crypto::aes128_cmac(&key, &msg[..len]), "length {len}");
    }
}

#[test]
fn constant_time_compare_and_wipe() {
    let (a, mut b) = ([5u8; 16], [5u8; 16]);
    // SAFETY: both buffers are 16 bytes.
    let eq = |a: &[u8; 16], b: &[u8; 16]| unsafe { sgxemu_ct_equal(a.as_ptr().cast(), b.as_ptr().cast(), 16) };
    assert_eq!(eq(&a, &b), 1);
    for i in 0..16 {
        for bit in 0..8 {
            b[i] ^= 1 << bit;
            assert_eq!(eq(&a, &b), 0, "byte {i} bit {bit}");
            b[i] ^= 1 << bit;
        }
    }
    // SAFETY: b is 16 writable bytes.
    unsafe { sgxemu_wipe(b.as_mut_ptr().cast(), 16) };
    assert_eq!(b, [0; 16]);
}

#[test]
fn ping() {
    let log = recording(|_, _| 0);
    for call in [demo(op::PING, [0; 6]), attest(op::PING, [0; 6])] {
        assert_eq!(call.ret, [PING_MAGIC, TCS, 0, 0]);
    }
    assert!(log.borrow().is_empty(), "PING uses no ENCLU");
}

#[test]
fn unknown_ops() {
    recording(|_, _| 0);
    for op in [12, 19, 22, 1 << 40, u64::MAX] {
        let call = demo(op, [1, 2, 3, 4, 5, 6]);
        assert_eq!((call.op, call.args, call.ret), (op, [1, 2, 3, 4, 5, 6], [UNKNOWN_OP, 0, 0, 0]));
    }
    for op in [op::FILL, op::CHECK, op::ACCEPT, op::ACCEPT_COPY, op::EMODPE, op::READ, op::WRITE, op::EXEC, op::UD2] {
        assert_eq!(attest(op, [0; 6]).ret, [UNKNOWN_OP, 0, 0, 0], "attest has no op {op}");
    }
}

#[test]
fn fill_and_check() {
    let mut buf = vec![0u64; 1000];
    let seed = 0x0123_4567_89ab_cdef;
    assert_eq!(demo(op::FILL, [addr(buf.as_mut_ptr()), 8000, seed, 0, 0, 0]).ret, [8000, 0, 0, 0]);
    assert!(buf.iter().enumerate().all(|(k, &w)| w == fill_word(seed, k as u64)));
    assert_eq!(buf[1], seed ^ FILL_MULTIPLIER);
    assert_eq!(demo(op::CHECK, [addr(buf.as_ptr()), 8000, seed, 0, 0, 0]).ret, [0, 0, 0, 0]);
    assert_eq!(demo(op::CHECK, [addr(buf.as_ptr()), 8000, seed + 1, 0, 0, 0]).ret[0], 1000);
    buf[0] ^= 1;
    buf[500] = 0;
    buf[999] = !buf[999];
    assert_eq!(demo(op::CHECK, [addr(buf.as_ptr()), 8000, seed, 0, 0, 0]).ret, [3, 0, 0, 0]);
    // len rounds down to whole words; the words after are untouched.
    buf[1] = 7;
    assert_eq!(demo(op::FILL, [addr(buf.as_mut_ptr()), 15, 9, 0, 0, 0]).ret[0], 8);
    assert_eq!(demo(op::FILL, [addr(buf[2..].as_mut_ptr()), 16, 9, 0, 0, 0]).ret[0], 16);
    assert_eq!(buf[..5], [9, 7, 9, 9 ^ FILL_MULTIPLIER, fill_word(seed, 4)]);
}

#[test]
fn accept_stops_at_the_first_failure() {
    let flags = 0x0201 | 0x08; // PT_REG, R, PENDING
    let log = recording(move |n, (_, rbx, _, _)| {
        assert_eq!(rbx % 64, 0, "SECINFO 64-aligned");
        // SAFETY: the C passes its SECINFO (64 bytes) in RBX.
        let secinfo = unsafe { std::slice::from_raw_parts(rbx as *const u64, 8) };
        assert_eq!(secinfo, [flags, 0, 0, 0, 0, 0, 0, 0]);
        if n == 2 { 11 } else { 0 }
    });
    let base = 0x10_0000_0000u64;
    assert_eq!(demo(op::ACCEPT, [base, 5 * 4096, flags, 0, 0, 0]).ret, [2, 11, 0, 0]);
    let pages: Vec<_> = log.borrow().iter().map(|r| (r.0, r.2)).collect();
    assert_eq!(pages, [(5, base), (5, base + 4096), (5, base + 8192)]);

    let log = recording(|_, _| 0);
    assert_eq!(demo(op::ACCEPT, [base, 3 * 4096 + 100, flags, 0, 0, 0]).ret, [3, 0, 0, 0]);
    assert_eq!(log.borrow().len(), 3);
}

#[test]
fn accept_copy_uses_one_source_page() {
    let (dst, src, flags) = (0x10_0000_0000u64, 0x10_0020_0000u64, 0x0205);
    let log = recording(move |n, (_, rbx, _, _)| {
        // SAFETY: the C passes its SECINFO in RBX.
        assert_eq!(unsafe { *(rbx as *const u64) }, flags);
        if n == 3 { 0x20 } else { 0 }
    });
    assert_eq!(demo(op::ACCEPT_COPY, [dst, src, 2, flags, 0, 0]).ret, [2, 0, 0, 0]);
    assert_eq!(demo(op::ACCEPT_COPY, [dst, src, 4, flags, 0, 0]).ret, [1, 0x20, 0, 0]);
    let calls: Vec<_> = log.borrow().iter().map(|r| (r.0, r.2, r.3)).collect();
    assert_eq!(calls, [(7, dst, src), (7, dst + 4096, src), (7, dst, src), (7, dst + 4096, src)]);
}

#[test]
fn emodpe_every_page() {
    let log = recording(|_, (_, rbx, _, _)| {
        // SAFETY: the C passes its SECINFO in RBX.
        assert_eq!(unsafe { *(rbx as *const u64) }, 0x7);
        0
    });
    assert_eq!(demo(op::EMODPE, [0x4000, 3 * 4096, 0x7, 0, 0, 0]).ret, [3, 0, 0, 0]);
    let calls: Vec<_> = log.borrow().iter().map(|r| (r.0, r.2)).collect();
    assert_eq!(calls, [(6, 0x4000), (6, 0x5000), (6, 0x6000)]);
}

#[test]
fn copy_read_write() {
    recording(|_, _| 0);
    let src: Vec<u8> = (0..=255).collect();
    for run in [demo, attest] {
        for (op, dst_off) in [(op::COPY_IN, 3), (op::COPY_OUT, 0)] {
            let mut dst = vec![0xEEu8; 300];
            let call = run(op, [addr(dst[dst_off..].as_mut_ptr()), addr(&src[1..]), 200, 0, 0, 0]);
            assert_eq!(call.ret, [200, 0, 0, 0]);
            assert_eq!(dst[dst_off..dst_off + 200], src[1..201]);
            assert!(dst[dst_off + 200..].iter().all(|&b| b == 0xEE));
        }
    }
    let mut word = 0x1122_3344_5566_7788u64;
    assert_eq!(demo(op::READ, [addr(&word), 0, 0, 0, 0, 0]).ret, [word, 0, 0, 0]);
    assert_eq!(demo(op::WRITE, [addr(&raw mut word), 42, 0, 0, 0, 0]).ret, [0; 4]);
    assert_eq!(word, 42);
}

static EXECUTED: AtomicU64 = AtomicU64::new(0);

extern "C" fn target() {
    EXECUTED.fetch_add(1, Ordering::SeqCst);
}

#[test]
fn exec_calls_the_address() {
    recording(|_, _| 0);
    let f: extern "C" fn() = target;
    assert_eq!(demo(op::EXEC, [f as usize as u64, 0, 0, 0, 0, 0]).ret, [0; 4]);
    assert_eq!(EXECUTED.load(Ordering::SeqCst), 1);
}

#[test]
fn report_stages_aligned_copies_and_copies_out() {
    let targetinfo: Vec<u8> = (0..512u32).map(|i| (i * 3) as u8).collect();
    let reportdata: Vec<u8> = (0..64u8).map(|i| i ^ 0x5a).collect();
    let (ti, rd) = (targetinfo.clone(), reportdata.clone());
    let log = recording(move |_, (rax, rbx, rcx, rdx)| {
        assert_eq!(rax, 0, "EREPORT");
        assert_eq!((rbx % 512, rcx % 128, rdx % 512), (0, 0, 0), "EREPORT operand alignment");
        // SAFETY: RBX/RCX point at the C's TARGETINFO (512 bytes) and REPORTDATA (64 bytes),
        // RDX at its 432-byte REPORT buffer.
        unsafe {
            assert_eq!(std::slice::from_raw_parts(rbx as *const u8, 512), ti);
            assert_eq!(std::slice::from_raw_parts(rcx as *const u8, 64), rd);
            for i in 0..432 {
                *(rdx as *mut u8).add(i) = (i % 251) as u8;
            }
        }
        0
    });
    for run in [demo, attest] {
        let mut out = vec![0xEEu8; 512];
        let call =
            run(op::REPORT, [addr(targetinfo.as_ptr()), addr(reportdata.as_ptr()), addr(out.as_mut_ptr()), 0, 0, 0]);
        assert_eq!(call.ret, [0; 4]);
        assert!(out[..432].iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
        assert!(out[432..].iter().all(|&b| b == 0xEE), "exactly 432 bytes copied out");
    }
    assert_eq!(log.borrow().len(), 2);
}

/// A REPORT MACed with `key` the way EREPORT does.
fn signed_report(key: &[u8; 16]) -> Report {
    let mut report = Report::new_zeroed();
    report.mrenclave = [0x11; 32];
    report.reportdata = [0x22; 64];
    report.isvsvn = 3;
    report.keyid = std::array::from_fn(|i| i as u8 + 100);
    report.mac = sgxemu_crypto::aes128_cmac(key, report.mac_data());
    report
}

/// EGETKEY that checks the KEYREQUEST VERIFY builds and hands out `key` with `status`.
fn egetkey(key: [u8; 16], keyid: [u8; 32], status: u64) -> std::rc::Rc<RefCell<Vec<Regs>>> {
    recording(move |_, (rax, rbx, rcx, _)| {
        assert_eq!(rax, 1, "EGETKEY");
        assert_eq!((rbx % 512, rcx % 16), (0, 0), "EGETKEY operand alignment");
        // SAFETY: RBX points at the C's 512-byte KEYREQUEST, RCX at its 16-byte key buffer.
        let kr = Keyrequest::read_from_bytes(unsafe { std::slice::from_raw_parts(rbx as *const u8, 512) })
            .expect("512 bytes");
        assert_eq!(kr, Keyrequest { keyname: 3, keyid, ..Keyrequest::default() });
        if status == 0 {
            // SAFETY: as above.
            unsafe { std::ptr::copy_nonoverlapping(key.as_ptr(), rcx as *mut u8, 16) };
        }
        status
    })
}

#[test]
fn verify_accepts_the_right_mac_only() {
    if !aes_ni() {
        return;
    }
    let key = [0x3c; 16];
    let report = signed_report(&key);
    for run in [demo, attest] {
        let log = egetkey(key, report.keyid, 0);
        assert_eq!(run(op::VERIFY, [addr(report.as_bytes().as_ptr()), 0, 0, 0, 0, 0]).ret, [1, 0, 0, 0]);
        assert_eq!(log.borrow().len(), 1);
        // Every byte of the MACed data and of the MAC matters; KEYID selects the key.
        for i in (0..Report::MAC_DATA_SIZE).step_by(37).chain(416..432) {
            let mut bad = report;
            bad.as_mut_bytes()[i] ^= 0x80;
            assert_eq!(run(op::VERIFY, [addr(bad.as_bytes().as_ptr()), 0, 0, 0, 0, 0]).ret, [0, 0, 0, 0], "{i}");
        }
        // A key for another enclave: no match.
        egetkey([0x3d; 16], report.keyid, 0);
        assert_eq!(run(op::VERIFY, [addr(report.as_bytes().as_ptr()), 0, 0, 0, 0, 0]).ret, [0, 0, 0, 0]);
        // EGETKEY fails (SGX_INVALID_KEYNAME = 0x38 here just as a non-zero status).
        egetkey(key, report.keyid, 0x38);
        assert_eq!(run(op::VERIFY, [addr(report.as_bytes().as_ptr()), 0, 0, 0, 0, 0]).ret, [0, 0x38, 0, 0]);
    }
}
