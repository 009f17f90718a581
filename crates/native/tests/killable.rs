//! A thread whose enclave thrashes on a full EPC stays reachable by signals (driver spec
//! §5: the kernel's fault handler answers NOPAGE and returns to user mode, where pending
//! signals are delivered, before the access faults again). The EPC is filled with loaded
//! enclaves until a load fails with ENOMEM; two are closed, which leaves fewer free pages
//! than entering another enclave needs at once, so its EENTER retries while the
//! reclaimer writes out what it just loaded. The EENTER is the program's own ENCLU, which
//! the emulator runs in its SIGILL handler. A helper thread signals the entering thread
//! until the signal's handler has run, and only then closes ten more enclaves, after which
//! the EENTER completes (or, if the thrashing came after an AEX, the thread continues at
//! its AEP). Before, the retries ran inside the emulator's handler with the program's
//! signals held for up to 30 s, and ended in a #PF that killed the test with SIGSEGV. Own
//! test binary: the EPC size and the signal disposition are the process's.

mod support;

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use support::enclave::{DATA, TestEnclave, engine, op, raw_eenter, start_engine};

const ERESUME: u64 = 3;
const EEXIT: u64 = 4;

static HANDLED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_usr1(_: libc::c_int) {
    HANDLED.store(true, Ordering::SeqCst);
}

#[test]
fn a_thread_thrashing_on_a_full_epc_still_runs_its_signal_handlers() {
    start_engine(1 << 20);
    let mut loaded = Vec::new();
    let error = loop {
        assert!(loaded.len() < 400, "400 enclaves fit in 256 EPC pages");
        match TestEnclave::try_load(0x20000) {
            Ok(e) => loaded.push(e),
            Err(error) => break error,
        }
    };
    assert_eq!(error.1, libc::ENOMEM, "{error:?}");
    let close = |e: &TestEnclave| {
        engine().munmap(e.base, e.size).expect("munmap");
        engine().closed(e.fd);
        // SAFETY: closes the descriptor the test opened for this enclave.
        unsafe { libc::close(e.fd) };
    };
    for e in loaded.drain(loaded.len() - 2..) {
        close(&e);
    }
    // SAFETY: installs a handler that only stores to an atomic.
    unsafe { libc::signal(libc::SIGUSR1, on_usr1 as *const () as libc::sighandler_t) };
    let tid = AtomicI32::new(0);
    std::thread::scope(|s| {
        s.spawn(|| {
            while tid.load(Ordering::SeqCst) == 0 {
                std::thread::yield_now();
            }
            while !HANDLED.load(Ordering::SeqCst) {
                // SAFETY: signals a thread of this process that handles SIGUSR1.
                unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), tid.load(Ordering::SeqCst), libc::SIGUSR1) };
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            let n = loaded.len();
            for e in &loaded[n - 10..] {
                close(e);
            }
        });
        let first = &loaded[0];
        let mut value = u64::MAX;
        // SAFETY: gettid has no preconditions.
        tid.store(unsafe { libc::gettid() }, Ordering::SeqCst);
        // SAFETY: the enclave reads its own data page into `value`, then EEXITs back — or,
        // after an AEX, the CPU continues at this program's AEP, which is the same return.
        let rax = unsafe { raw_eenter(first.tcs(0), op::READ, first.base + DATA, &raw mut value as u64, 0, 0) };
        assert!((rax == EEXIT && value == 0) || rax == ERESUME, "RAX {rax} value {value:#x}");
    });
    assert!(HANDLED.load(Ordering::SeqCst));
}
