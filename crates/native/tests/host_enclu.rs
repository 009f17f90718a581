//! A program's own ENCLU[EENTER], executed by host code (as Fortanix's runner does when it
//! finds no `__vdso_sgx_enter_enclave`), from threads in every signal-stack state the
//! program can leave them in: none, a small one (8 KiB with a guard page below it, as Rust's
//! std gives every thread), a large one, one changed between calls, and from inside the
//! program's own signal handler running on its alternate stack. Each call's result is
//! checked, and afterwards the program's alternate stack (as its `sigaltstack` reports it:
//! the preload's interposer calls `alt_stack::app_sigaltstack`) and its signal mask are what
//! it left them.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};

use sgxemu_native::alt_stack::app_sigaltstack;
use support::enclave::{DATA, PAGE, TestEnclave, op, raw_eenter};

/// Writes `value` into the enclave's data page at slot `slot` and reads it back, each with
/// a raw EENTER on `tcs`; returns what was read.
fn write_then_read(e: &TestEnclave, tcs: u64, slot: u64, value: u64) -> u64 {
    let addr = e.base + DATA + 8 * slot;
    let mut read = 0u64;
    // SAFETY: the enclave writes its own data page, then one qword of `read`.
    unsafe {
        raw_eenter(tcs, op::WRITE, addr, value, 0, 0);
        raw_eenter(tcs, op::READ, addr, &mut read as *mut u64 as u64, 0, 0);
    }
    read
}

/// The program's view of its alternate stack (its `sigaltstack`, through the emulator).
fn program_stack() -> (u64, usize, i32) {
    let mut old = libc::stack_t { ss_sp: std::ptr::null_mut(), ss_flags: 0, ss_size: 0 };
    // SAFETY: a query into valid storage.
    assert_eq!(unsafe { app_sigaltstack(std::ptr::null(), &mut old) }, 0);
    (old.ss_sp as u64, old.ss_size, old.ss_flags)
}

/// The program sets its alternate stack (through the emulator, as the preload does).
fn set_program_stack(sp: u64, size: usize, flags: i32) {
    let ss = libc::stack_t { ss_sp: sp as *mut libc::c_void, ss_flags: flags, ss_size: size };
    // SAFETY: `ss` is valid; the stack it names stays mapped while the thread lives.
    assert_eq!(unsafe { app_sigaltstack(&ss, std::ptr::null_mut()) }, 0, "sigaltstack");
}

/// `size` bytes of stack with a PROT_NONE guard page below; returns the stack's base.
/// Never unmapped (the thread using it may still have it recorded as it exits).
fn stack_with_guard(size: u64) -> u64 {
    let raw = sgxemu_native::sys::mmap(
        0,
        size + PAGE,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
        -1,
        0,
    )
    .expect("a stack");
    sgxemu_native::sys::mprotect(raw, PAGE, libc::PROT_NONE).expect("its guard page");
    raw + PAGE
}

fn signal_mask() -> u64 {
    let mask = sgxemu_native::sys::current_signal_mask().expect("the mask");
    // SAFETY: a Linux sigset_t starts with the first 64 signals' bits.
    unsafe { *(&mask as *const libc::sigset_t).cast::<u64>() }
}

#[derive(Debug, Clone, Copy)]
enum Mode {
    /// SS_DISABLE.
    None,
    /// 8 KiB with a guard page below.
    Small,
    /// 1 MiB.
    Large,
    /// Small and large alternately, changed before every call.
    Changing,
}

/// On a new thread: sets the program's stack for `mode`, then makes raw enclave calls,
/// checking each result and that the program's stack and mask are as it left them.
fn run_on_new_thread(e: &TestEnclave, tcs: u64, slot: u64, mode: Mode) {
    let small = stack_with_guard(8 << 10);
    let large = stack_with_guard(1 << 20);
    std::thread::scope(|s| {
        s.spawn(|| {
            let stacks = [(small, 8usize << 10), (large, 1usize << 20)];
            match mode {
                Mode::None => set_program_stack(0, 0, libc::SS_DISABLE),
                Mode::Small | Mode::Changing => set_program_stack(small, 8 << 10, 0),
                Mode::Large => set_program_stack(large, 1 << 20, 0),
            }
            let mask = signal_mask();
            for call in 0..6u64 {
                if let Mode::Changing = mode {
                    let (sp, size) = stacks[call as usize % 2];
                    set_program_stack(sp, size, 0);
                }
                let expected = program_stack();
                let value = 0x5eed_0000 + 0x100 * slot + call;
                assert_eq!(write_then_read(e, tcs, slot, value), value, "{mode:?}, call {call}: the enclave's result");
                assert_eq!(program_stack(), expected, "{mode:?}, call {call}: the program's alternate stack");
                assert_eq!(signal_mask(), mask, "{mode:?}, call {call}: the program's signal mask");
            }
            match mode {
                Mode::None => assert_eq!(program_stack(), (0, 0, libc::SS_DISABLE)),
                Mode::Small => assert_eq!(program_stack(), (small, 8 << 10, 0)),
                Mode::Large => assert_eq!(program_stack(), (large, 1 << 20, 0)),
                Mode::Changing => assert_eq!(program_stack(), (large, 1 << 20, 0)),
            }
            // The program can still change it, and the kernel's rules hold.
            set_program_stack(large, 1 << 20, 0);
            assert_eq!(program_stack(), (large, 1 << 20, 0));
            let tiny = libc::stack_t { ss_sp: small as *mut libc::c_void, ss_flags: 0, ss_size: 1024 };
            // SAFETY: a valid stack_t.
            assert_eq!(unsafe { app_sigaltstack(&tiny, std::ptr::null_mut()) }, -1, "under MINSIGSTKSZ");
            assert_eq!(std::io::Error::last_os_error().raw_os_error(), Some(libc::ENOMEM));
        });
    });
}

#[test]
fn host_side_eenter_works_in_every_signal_stack_state_and_leaves_the_program_s_stack() {
    let e = TestEnclave::load(1 << 20);
    for (slot, mode) in [Mode::Small, Mode::None, Mode::Large, Mode::Changing].into_iter().enumerate() {
        run_on_new_thread(&e, e.tcs(0), slot as u64, mode);
    }
}

/// What the SIGUSR1 handler saw: the value the enclave read back (`u64::MAX`: a wrong one).
static HANDLER_READ: AtomicU64 = AtomicU64::new(0);
static HANDLER_BASE: AtomicU64 = AtomicU64::new(0);
static HANDLER_TCS: AtomicU64 = AtomicU64::new(0);
static HANDLER_CALLS: AtomicU64 = AtomicU64::new(0);

extern "C" fn on_usr1(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    let base = HANDLER_BASE.load(Ordering::Relaxed);
    let tcs = HANDLER_TCS.load(Ordering::Relaxed);
    let value = 0xfeed_0000 + HANDLER_CALLS.fetch_add(1, Ordering::Relaxed);
    let addr = base + DATA + 0x100;
    let mut read = 0u64;
    // SAFETY: as in `write_then_read` (no allocation, no panics: a signal handler).
    unsafe {
        raw_eenter(tcs, op::WRITE, addr, value, 0, 0);
        raw_eenter(tcs, op::READ, addr, &mut read as *mut u64 as u64, 0, 0);
    }
    HANDLER_READ.store(if read == value { read } else { u64::MAX }, Ordering::Relaxed);
}

#[test]
fn host_side_eenter_works_from_the_program_s_own_signal_handler_on_its_small_stack() {
    let e = TestEnclave::load(1 << 20);
    HANDLER_BASE.store(e.base, Ordering::Relaxed);
    HANDLER_TCS.store(e.tcs(1), Ordering::Relaxed);
    // The program's SIGUSR1 handler, on its alternate stack, as the preload's sigaction
    // installs it (wrapped).
    // SAFETY: a zeroed sigaction with an SA_SIGINFO handler is valid.
    unsafe {
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = on_usr1 as *const () as usize;
        act.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        assert_eq!(sgxemu_native::signals::wrap_async(libc::SIGUSR1, &act, std::ptr::null_mut()), 0);
    }
    let small = stack_with_guard(8 << 10);
    std::thread::scope(|s| {
        s.spawn(|| {
            set_program_stack(small, 8 << 10, 0);
            let mask = signal_mask();
            // The first signal comes before the thread ever entered (its first ENCLU is
            // inside the handler); then again, and after a call from outside the handler.
            for round in 0..3u64 {
                if round == 2 {
                    assert_eq!(write_then_read(&e, e.tcs(1), 2, 77), 77);
                }
                HANDLER_READ.store(0, Ordering::Relaxed);
                sgxemu_native::sys::tgkill(sgxemu_native::sys::gettid(), libc::SIGUSR1).expect("SIGUSR1");
                assert_eq!(HANDLER_CALLS.load(Ordering::Relaxed), round + 1, "round {round}: the handler ran");
                assert_eq!(
                    HANDLER_READ.load(Ordering::Relaxed),
                    0xfeed_0000 + round,
                    "round {round}: the enclave's result inside the handler"
                );
                assert_eq!(program_stack(), (small, 8 << 10, 0), "round {round}: the program's alternate stack");
                assert_eq!(signal_mask(), mask, "round {round}: the program's signal mask");
            }
        });
    });
    // SAFETY: a query into valid storage.
    let handler = unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        sgxemu_native::signals::wrap_async(libc::SIGUSR1, std::ptr::null(), &mut old);
        old.sa_sigaction
    };
    assert_eq!(handler, on_usr1 as *const () as usize, "the program's handler is as it set it");
}
