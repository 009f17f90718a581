//! Signals while enclave code runs, as on hardware (issue 13, "signals as on hardware"):
//! default-action signals end the process (AEX first), program handlers never nest into
//! each other's AEX path, threads with every signal blocked still run enclaves.
//!
//! Tests whose failure would hang or kill the process run in a child process (this test
//! binary again, one test, with [`CHILD`] set); the parent waits with a generous watchdog.

mod support;

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use support::enclave::{TestEnclave, op};

/// Set in a child process: the name of the part it runs.
const CHILD: &str = "SGXEMU_SIGNALS_CHILD";
/// How long a child may take before it is killed and its test fails (a hang, not a timing).
const WATCHDOG: std::time::Duration = std::time::Duration::from_secs(120);

/// Runs test `test` of this binary in a child with `CHILD=part` and returns how it ended
/// (killed by SIGKILL if it outlived the watchdog).
fn run_child(test: &str, part: &str) -> ExitStatus {
    let mut child = Command::new(std::env::current_exe().expect("the test binary"))
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, part)
        .spawn()
        .expect("the child starts");
    let start = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("waiting for the child") {
            return status;
        }
        if start.elapsed() > WATCHDOG {
            let _ = child.kill();
            let status = child.wait().expect("waiting for the child");
            eprintln!("watchdog: part {part} still ran after {WATCHDOG:?}");
            return status;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn child_part() -> Option<String> {
    std::env::var(CHILD).ok()
}

/// Child: the main thread spins in enclave code forever; a helper thread waits until the
/// enclave code runs (its round counter moves) and sends `sig` to the main thread.
fn spin_forever_and_get(sig: libc::c_int) -> ! {
    let e = TestEnclave::load(1 << 20);
    let release = AtomicU64::new(0);
    let rounds = AtomicU64::new(0);
    let tid = sgxemu_native::sys::gettid();
    std::thread::scope(|s| {
        s.spawn(|| {
            while rounds.load(Ordering::Acquire) == 0 {
                std::thread::yield_now();
            }
            let _ = sgxemu_native::sys::tgkill(tid, sig);
        });
        e.call(0, op::SPIN_UNTIL, &release as *const AtomicU64 as u64, &rounds as *const AtomicU64 as u64, 0, 0);
    });
    unreachable!("nothing releases the enclave");
}

#[test]
fn a_default_action_signal_ends_a_program_whose_enclave_loops() {
    const PARTS: [(&str, libc::c_int); 4] =
        [("int", libc::SIGINT), ("term", libc::SIGTERM), ("hup", libc::SIGHUP), ("usr1", libc::SIGUSR1)];
    if let Some(part) = child_part() {
        let sig = PARTS.iter().find(|(name, _)| *name == part).expect("a known part").1;
        spin_forever_and_get(sig);
    }
    for (part, sig) in PARTS {
        let status = run_child("a_default_action_signal_ends_a_program_whose_enclave_loops", part);
        assert_eq!(status.signal(), Some(sig), "{part}: ended by the signal's default action ({status:?})");
    }
}

static USR1: AtomicU64 = AtomicU64::new(0);
static USR2: AtomicU64 = AtomicU64::new(0);
/// Handlers that found their mask other than the kernel would set it.
static WRONG_MASK: AtomicU64 = AtomicU64::new(0);

fn blocked_now(sig: libc::c_int) -> bool {
    // SAFETY: a query of the calling thread's mask into a local set.
    unsafe {
        let mut current: libc::sigset_t = std::mem::zeroed();
        libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut current);
        libc::sigismember(&current, sig) == 1
    }
}

extern "C" fn on_usr(sig: libc::c_int) {
    // The kernel's mask for a handler: the interrupted one (another handler's, where one
    // signal's handler runs nested in the other's), the signal itself and its sa_mask
    // (SIGUSR1's holds SIGALRM); SIGWINCH, which nobody blocks, stays deliverable.
    let alrm_expected = sig == libc::SIGUSR1;
    if !blocked_now(sig) || (alrm_expected && !blocked_now(libc::SIGALRM)) || blocked_now(libc::SIGWINCH) {
        WRONG_MASK.fetch_add(1, Ordering::Relaxed);
    }
    let counter = if sig == libc::SIGUSR1 { &USR1 } else { &USR2 };
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Installs `on_usr` for `sig` as the preload's `sigaction` would, with SIGALRM in the
/// mask of SIGUSR1's handler.
fn install_usr(sig: libc::c_int) {
    // SAFETY: a zeroed sigaction with a plain handler and an initialised mask is valid.
    unsafe {
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = on_usr as *const () as usize;
        libc::sigemptyset(&mut act.sa_mask);
        if sig == libc::SIGUSR1 {
            libc::sigaddset(&mut act.sa_mask, libc::SIGALRM);
        }
        assert_eq!(sgxemu_native::signals::wrap_async(sig, &act, std::ptr::null_mut()), 0);
    }
}

/// Child: SIGUSR1 and SIGUSR2 at about 1 kHz each, both with handlers, while the main
/// thread runs a bounded enclave loop; exit status 0 if the loop finished with the right
/// sum and every handler saw the kernel's mask.
fn two_signals_at_1khz() -> ! {
    let e = TestEnclave::load(1 << 20);
    install_usr(libc::SIGUSR1);
    install_usr(libc::SIGUSR2);
    let tid = sgxemu_native::sys::gettid();
    let stop = AtomicBool::new(false);
    let n: u64 = 30_000_000;
    let mut sum = 0u64;
    std::thread::scope(|s| {
        for sig in [libc::SIGUSR1, libc::SIGUSR2] {
            let stop = &stop;
            s.spawn(move || {
                while !stop.load(Ordering::Acquire) {
                    let _ = sgxemu_native::sys::tgkill(tid, sig);
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
            });
        }
        e.call(0, op::SPIN, n, &mut sum as *mut u64 as u64, 0, 0);
        stop.store(true, Ordering::Release);
    });
    let (usr1, usr2, wrong) =
        (USR1.load(Ordering::Relaxed), USR2.load(Ordering::Relaxed), WRONG_MASK.load(Ordering::Relaxed));
    eprintln!("SIGUSR1 {usr1}, SIGUSR2 {usr2}, wrong masks {wrong}, sum ok {}", sum == n * (n + 1) / 2);
    let ok = sum == n * (n + 1) / 2 && usr1 > 0 && usr2 > 0 && wrong == 0;
    std::process::exit(if ok { 0 } else { 1 });
}

#[test]
fn two_signals_with_handlers_at_1khz_never_livelock_the_enclave() {
    if child_part().is_some() {
        two_signals_at_1khz();
    }
    let status = run_child("two_signals_with_handlers_at_1khz_never_livelock_the_enclave", "usr12");
    assert_eq!(status.code(), Some(0), "the enclave loop finished and handlers saw their masks ({status:?})");
}

/// EACCEPT flags for a freshly EAUGed page: R | W | REG | PENDING.
const PENDING_RW: u64 = 0x20B;

/// Child: the thread blocks every signal (as the preload's `pthread_sigmask` carries it
/// out), reads the mask back as it set it, then enters the enclave 1000 times, 256 of them
/// taking a page fault that the driver resolves with EAUG.
fn enclave_with_every_signal_blocked() -> ! {
    use support::enclave::{DYNAMIC, PAGE};
    let e = TestEnclave::load(4 << 20);
    // SAFETY: sigset operations on locals; the mask change is the calling thread's own.
    let view = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        sgxemu_native::signals::program_sigprocmask(libc::SIG_SETMASK, &all, std::ptr::null_mut())
            .expect("SIG_SETMASK");
        let mut view: libc::sigset_t = std::mem::zeroed();
        sgxemu_native::signals::program_sigprocmask(libc::SIG_BLOCK, std::ptr::null(), &mut view).expect("a query");
        view
    };
    // SAFETY: sigismember on an initialised set.
    let reads_blocked =
        [libc::SIGSEGV, libc::SIGILL, libc::SIGUSR1].iter().all(|&sig| unsafe { libc::sigismember(&view, sig) } == 1);
    let mut entries = 0;
    for page in 0..256 {
        assert_eq!(e.eaccept(0, e.base + DYNAMIC + page * PAGE, PENDING_RW), 0, "EACCEPT on a fresh page EAUGs it");
        entries += 1;
    }
    while entries < 1000 {
        e.read(0, e.base + DYNAMIC + (entries % 256) * PAGE);
        entries += 1;
    }
    let really_blocked = sgxemu_native::sys::sigprocmask(libc::SIG_BLOCK, None).expect("the real mask");
    // SAFETY: sigismember on an initialised set.
    let usr1_waits = unsafe { libc::sigismember(&really_blocked, libc::SIGUSR1) } == 1;
    eprintln!("entries {entries}, mask read back {reads_blocked}, SIGUSR1 really blocked {usr1_waits}");
    std::process::exit(if reads_blocked && usr1_waits { 0 } else { 1 });
}

#[test]
fn a_thread_with_every_signal_blocked_runs_enclaves_and_takes_faults() {
    if child_part().is_some() {
        enclave_with_every_signal_blocked();
    }
    let status = run_child("a_thread_with_every_signal_blocked_runs_enclaves_and_takes_faults", "blocked");
    assert_eq!(status.code(), Some(0), "1000 entries with every signal blocked ({status:?})");
}

static STRESS_ENCLAVE: std::sync::OnceLock<TestEnclave> = std::sync::OnceLock::new();
static NESTED_ENTRIES: AtomicU64 = AtomicU64::new(0);
/// Program handlers that ran anywhere but where the kernel would have run them: on the
/// emulator's stack, or on the wrong one of the program's (never, as on a kernel).
static MISPLACED: AtomicU64 = AtomicU64::new(0);

std::thread_local! {
    /// The TCS this thread's handlers enter (its main flow uses the one before).
    static HANDLER_TCS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    /// The alternate stack this thread set for itself: [start, end).
    static PROGRAM_ALT_STACK: std::cell::Cell<(u64, u64)> = const { std::cell::Cell::new((0, 0)) };
}

fn stack_pointer() -> u64 {
    let rsp: u64;
    // SAFETY: reads the stack pointer.
    unsafe { std::arch::asm!("mov {}, rsp", out(reg) rsp, options(nomem, nostack, preserves_flags)) };
    rsp
}

/// The program's handler (SIGUSR1 without SA_ONSTACK, SIGUSR2 with it): checks it runs
/// where the kernel would run it (SIGUSR1 on the interrupted stack, which is never the
/// alternate one here; SIGUSR2 on the thread's alternate stack), then enters the enclave
/// itself, on its own TCS, wherever the signal found the thread (in enclave code: after the
/// AEX, at the AEP; in host code: anywhere, the emulator's software EENTER included).
extern "C" fn enter_from_handler(sig: libc::c_int) {
    let rsp = stack_pointer();
    let (start, end) = PROGRAM_ALT_STACK.with(|s| s.get());
    let on_alt = (start..end).contains(&rsp);
    if sgxemu_native::alt_stack::is_ours(rsp) || on_alt != (sig == libc::SIGUSR2) {
        MISPLACED.fetch_add(1, Ordering::Relaxed);
        if std::env::var_os("STRESS_WHY").is_some() {
            let ours = sgxemu_native::alt_stack::is_ours(rsp);
            eprintln!("misplaced: sig {sig} rsp {rsp:#x} ours {ours} alt {start:#x}..{end:#x}");
        }
    }
    let e = STRESS_ENCLAVE.get().expect("the enclave");
    let tcs = HANDLER_TCS.with(|t| t.get());
    e.read(tcs, e.base + support::enclave::DATA);
    NESTED_ENTRIES.fetch_add(1, Ordering::Relaxed);
}

/// The calling thread's alternate stack as the program sees it (the preload's `sigaltstack`).
fn program_sigaltstack() -> libc::stack_t {
    let mut old = libc::stack_t { ss_sp: std::ptr::null_mut(), ss_flags: 0, ss_size: 0 };
    // SAFETY: a query into valid storage.
    assert_eq!(unsafe { sgxemu_native::alt_stack::app_sigaltstack(std::ptr::null(), &mut old) }, 0);
    old
}

/// Child: two threads each enter the enclave 20000 times (through the vDSO's software
/// EENTER) while a sender thread each sends them SIGUSR1 and SIGUSR2 in turn every 100 µs
/// or so, and the program's handlers enter the enclave too; exit status 0 if every entry
/// came back, every handler ran where the kernel would have run it, and the program's
/// handlers and alternate stacks read back as it set them.
fn enclu_stress() -> ! {
    let e = STRESS_ENCLAVE.get_or_init(|| TestEnclave::load(1 << 20));
    for (sig, flags) in [(libc::SIGUSR1, libc::SA_RESTART), (libc::SIGUSR2, libc::SA_RESTART | libc::SA_ONSTACK)] {
        // SAFETY: a zeroed sigaction with a plain handler is valid.
        unsafe {
            let mut act: libc::sigaction = std::mem::zeroed();
            act.sa_sigaction = enter_from_handler as *const () as usize;
            act.sa_flags = flags;
            // Neither runs nested in the other (SIGUSR1's would run on the alternate stack
            // when it interrupts SIGUSR2's).
            libc::sigemptyset(&mut act.sa_mask);
            libc::sigaddset(&mut act.sa_mask, libc::SIGUSR1);
            libc::sigaddset(&mut act.sa_mask, libc::SIGUSR2);
            assert_eq!(sgxemu_native::signals::wrap_async(sig, &act, std::ptr::null_mut()), 0);
        }
    }
    let done = AtomicU64::new(0);
    let kept = AtomicU64::new(0);
    std::thread::scope(|s| {
        for worker in 0..2u64 {
            let (e, done, kept) = (e, &done, &kept);
            let tid = AtomicU64::new(0);
            let stop = AtomicBool::new(false);
            let sender_done = AtomicBool::new(false);
            s.spawn(move || {
                std::thread::scope(|inner| {
                    let (tid, stop, sender_done) = (&tid, &stop, &sender_done);
                    inner.spawn(move || {
                        let data = e.base + support::enclave::DATA + 8 * (worker + 1);
                        // The program's own alternate stack (the C library's interposer).
                        let alt = vec![0u8; 64 << 10].leak();
                        let mine = libc::stack_t { ss_sp: alt.as_mut_ptr().cast(), ss_flags: 0, ss_size: alt.len() };
                        // SAFETY: a valid stack_t of leaked memory.
                        let set = unsafe { sgxemu_native::alt_stack::app_sigaltstack(&mine, std::ptr::null_mut()) };
                        assert_eq!(set, 0);
                        let range = (alt.as_ptr() as u64, alt.as_ptr() as u64 + alt.len() as u64);
                        PROGRAM_ALT_STACK.with(|s| s.set(range));
                        HANDLER_TCS.with(|t| t.set(2 * worker + 1));
                        // A first entry before any signal: the thread's emulator state and
                        // the vDSO are made outside handlers (as a program resolves the vDSO
                        // before its handlers use it).
                        e.call(2 * worker, op::WRITE, data, 0, 0, 0);
                        tid.store(sgxemu_native::sys::gettid() as u64, Ordering::Release);
                        for i in 0..20_000u64 {
                            e.call(2 * worker, op::WRITE, data, i, 0, 0);
                        }
                        stop.store(true, Ordering::Release);
                        // No signal may come while the thread exits: Rust's own exit code
                        // disables the thread's alternate stack (a handler after that runs
                        // on the thread's stack, rightly). Those sent before are delivered
                        // at the next return from the kernel.
                        while !sender_done.load(Ordering::Acquire) {
                            std::thread::yield_now();
                        }
                        let _ = sgxemu_native::sys::getpid();
                        let now = program_sigaltstack();
                        if now.ss_sp as u64 == range.0 && now.ss_size == alt.len() && now.ss_flags == 0 {
                            kept.fetch_add(1, Ordering::AcqRel);
                        }
                        done.fetch_add(1, Ordering::AcqRel);
                    });
                    while tid.load(Ordering::Acquire) == 0 {
                        std::thread::yield_now();
                    }
                    let mut sig = libc::SIGUSR1;
                    while !stop.load(Ordering::Acquire) {
                        let _ = sgxemu_native::sys::tgkill(tid.load(Ordering::Acquire) as i32, sig);
                        sig = if sig == libc::SIGUSR1 { libc::SIGUSR2 } else { libc::SIGUSR1 };
                        // Often, but leaving the thread time to make progress between them.
                        std::thread::sleep(std::time::Duration::from_micros(100));
                    }
                    sender_done.store(true, Ordering::Release);
                });
            });
        }
    });
    // The handlers read back as installed.
    let mut handlers_kept = true;
    for (sig, flags) in [(libc::SIGUSR1, libc::SA_RESTART), (libc::SIGUSR2, libc::SA_RESTART | libc::SA_ONSTACK)] {
        // SAFETY: a query into valid storage.
        let old = unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            assert_eq!(sgxemu_native::signals::wrap_async(sig, std::ptr::null(), &mut old), 0);
            old
        };
        handlers_kept &= old.sa_sigaction == enter_from_handler as *const () as usize && old.sa_flags == flags;
    }
    let (nested, misplaced) = (NESTED_ENTRIES.load(Ordering::Relaxed), MISPLACED.load(Ordering::Relaxed));
    let (done, kept) = (done.load(Ordering::Acquire), kept.load(Ordering::Acquire));
    eprintln!(
        "workers done {done}, entries from handlers {nested}, misplaced {misplaced}, alternate stacks kept {kept}, handlers kept {handlers_kept}"
    );
    std::process::exit(if done == 2 && nested > 0 && misplaced == 0 && kept == 2 && handlers_kept { 0 } else { 1 });
}

#[test]
fn program_handlers_that_enter_the_enclave_never_break_the_emulator_s_own_entry() {
    if child_part().is_some() {
        enclu_stress();
    }
    let status = run_child("program_handlers_that_enter_the_enclave_never_break_the_emulator_s_own_entry", "stress");
    assert_eq!(status.code(), Some(0), "every entry returned ({status:?})");
}

static CLONED_READ: AtomicU64 = AtomicU64::new(0);
static CLONED_ENCLAVE: std::sync::OnceLock<TestEnclave> = std::sync::OnceLock::new();

/// The thread made by a raw `clone` (no CLONE_SETTLS: it shares its creator's thread-local
/// storage): enters the enclave 100 times on its own TCS and keeps what it read back.
extern "C" fn cloned_thread(_: *mut libc::c_void) -> libc::c_int {
    let e = CLONED_ENCLAVE.get().expect("the enclave");
    let at = e.base + support::enclave::DATA + 24;
    for i in 1..=100u64 {
        e.call(1, op::WRITE, at, i, 0, 0);
    }
    CLONED_READ.store(e.read(1, at), Ordering::Release);
    0
}

/// Child: the main thread enters once (its state is cached in its thread-local storage and
/// its emulator stack installed), then makes a thread with a raw `clone`, which enters on
/// another TCS; exit status 0 if that thread's entries all came back.
fn raw_clone_thread_enters() -> ! {
    let e = CLONED_ENCLAVE.get_or_init(|| TestEnclave::load(1 << 20));
    e.call(0, op::WRITE, e.base + support::enclave::DATA + 16, 1, 0, 0);
    let stack = vec![0u8; 1 << 20].leak();
    let top = (stack.as_mut_ptr() as usize + stack.len()) & !15;
    let child_tid = std::sync::atomic::AtomicI32::new(-1);
    let flags = libc::CLONE_VM
        | libc::CLONE_FS
        | libc::CLONE_FILES
        | libc::CLONE_SIGHAND
        | libc::CLONE_THREAD
        | libc::CLONE_SYSVSEM
        | libc::CLONE_PARENT_SETTID
        | libc::CLONE_CHILD_CLEARTID;
    // SAFETY: the new thread runs `cloned_thread` on its own leaked stack; the kernel writes
    // its TID into `child_tid` and clears it (and wakes) when it exits, which is waited for
    // below before `child_tid` goes away.
    let tid = unsafe {
        libc::clone(
            cloned_thread,
            top as *mut libc::c_void,
            flags,
            std::ptr::null_mut(),
            child_tid.as_ptr(),
            std::ptr::null_mut::<libc::c_void>(),
            child_tid.as_ptr(),
        )
    };
    assert!(tid > 0, "clone");
    while child_tid.load(Ordering::Acquire) != 0 {
        // The creator's thread-local storage is the clone's too: nothing here uses it.
        // SAFETY: a plain sleep of 1 ms.
        unsafe { libc::usleep(1000) };
    }
    let read = CLONED_READ.load(Ordering::Acquire);
    eprintln!("the cloned thread read {read}");
    std::process::exit(if read == 100 { 0 } else { 1 });
}

#[test]
fn a_thread_made_by_a_raw_clone_gets_its_own_emulator_state_and_enters() {
    if child_part().is_some() {
        raw_clone_thread_enters();
    }
    let status = run_child("a_thread_made_by_a_raw_clone_gets_its_own_emulator_state_and_enters", "clone");
    assert_eq!(status.code(), Some(0), "the cloned thread's entries came back ({status:?})");
}

static SIGNALFD_HANDLED: AtomicU64 = AtomicU64::new(0);

extern "C" fn count_signalfd_handler(_: libc::c_int) {
    SIGNALFD_HANDLED.fetch_add(1, Ordering::Relaxed);
}

/// Child: the program blocks SIGUSR1 (it has a handler too) and reads it from a signalfd,
/// while its thread enters the enclave 2000 times and another thread sends SIGUSR1 now and
/// then: every entry and exit leaves the program's mask as it was (SIGUSR1 stays pending
/// for the signalfd, the handler never runs). Exit status 0 if the signalfd had it.
fn signalfd_across_entries() -> ! {
    let e = TestEnclave::load(1 << 20);
    // SAFETY: zeroed sigaction/sigset values are valid; the calls get valid pointers.
    let fd = unsafe {
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = count_signalfd_handler as *const () as usize;
        assert_eq!(sgxemu_native::signals::wrap_async(libc::SIGUSR1, &act, std::ptr::null_mut()), 0);
        let mut usr1: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut usr1);
        libc::sigaddset(&mut usr1, libc::SIGUSR1);
        sgxemu_native::signals::program_sigprocmask(libc::SIG_BLOCK, &usr1, std::ptr::null_mut()).expect("blocked");
        libc::signalfd(-1, &usr1, libc::SFD_NONBLOCK)
    };
    assert!(fd >= 0, "signalfd");
    let tid = sgxemu_native::sys::gettid();
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::Acquire) {
                let _ = sgxemu_native::sys::tgkill(tid, libc::SIGUSR1);
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        });
        for i in 0..2000u64 {
            e.call(0, op::WRITE, e.base + support::enclave::DATA, i, 0, 0);
        }
        stop.store(true, Ordering::Release);
    });
    // SAFETY: an all-zero signalfd_siginfo is valid storage of the size read.
    let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
    let size = size_of::<libc::signalfd_siginfo>();
    // SAFETY: reads at most `size` bytes into `info`.
    let got = unsafe { libc::read(fd, (&mut info as *mut libc::signalfd_siginfo).cast(), size) };
    let handled = SIGNALFD_HANDLED.load(Ordering::Relaxed);
    eprintln!("signalfd read {got} bytes, signal {}, handler ran {handled} times", info.ssi_signo);
    let ok = got == size as isize && info.ssi_signo == libc::SIGUSR1 as u32 && handled == 0;
    std::process::exit(if ok { 0 } else { 1 });
}

#[test]
fn a_signalfd_for_a_blocked_signal_keeps_it_across_enclave_entries() {
    if child_part().is_some() {
        signalfd_across_entries();
    }
    let status = run_child("a_signalfd_for_a_blocked_signal_keeps_it_across_enclave_entries", "signalfd");
    assert_eq!(status.code(), Some(0), "SIGUSR1 waited for the signalfd ({status:?})");
}

static FAULT_ENCLAVE: std::sync::OnceLock<TestEnclave> = std::sync::OnceLock::new();
static UD_HANDLED: AtomicU64 = AtomicU64::new(0);
static UD_MISPLACED: AtomicU64 = AtomicU64::new(0);

/// The program's SIGILL handler (a signal the emulator owns): checks it runs on the
/// program's stack, enters the enclave itself, and steps over the `ud2`.
extern "C" fn on_program_ud(_: libc::c_int, _: *mut libc::siginfo_t, uc: *mut libc::c_void) {
    if sgxemu_native::alt_stack::is_ours(stack_pointer()) {
        UD_MISPLACED.fetch_add(1, Ordering::Relaxed);
    }
    let e = FAULT_ENCLAVE.get().expect("the enclave");
    e.read(1, e.base + support::enclave::DATA);
    UD_HANDLED.fetch_add(1, Ordering::Relaxed);
    // SAFETY: the kernel's (copied) context of this signal.
    unsafe { (*uc.cast::<libc::ucontext_t>()).uc_mcontext.gregs[libc::REG_RIP as usize] += 2 };
}

/// Child: the program's own `ud2`s, 200 of them, each handled by its SIGILL handler, which
/// enters the enclave; exit status 0 if every one ran on the program's stack.
fn fault_handlers_enter() -> ! {
    let e = FAULT_ENCLAVE.get_or_init(|| TestEnclave::load(1 << 20));
    e.call(0, op::WRITE, e.base + support::enclave::DATA, 7, 0, 0);
    // SAFETY: a zeroed sigaction with an SA_SIGINFO handler is valid.
    unsafe {
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = on_program_ud as *const () as usize;
        act.sa_flags = libc::SA_SIGINFO;
        sgxemu_native::signals::app_sigaction(libc::SIGILL, &act, std::ptr::null_mut());
    }
    for _ in 0..200 {
        // SAFETY: the handler above steps over it.
        unsafe { std::arch::asm!("ud2") };
    }
    let (handled, misplaced) = (UD_HANDLED.load(Ordering::Relaxed), UD_MISPLACED.load(Ordering::Relaxed));
    eprintln!("ud2 handled {handled}, on the emulator's stack {misplaced}");
    std::process::exit(if handled == 200 && misplaced == 0 { 0 } else { 1 });
}

#[test]
fn the_program_s_fault_handlers_run_on_its_stack_and_may_enter_the_enclave() {
    if child_part().is_some() {
        fault_handlers_enter();
    }
    let status = run_child("the_program_s_fault_handlers_run_on_its_stack_and_may_enter_the_enclave", "ud2");
    assert_eq!(status.code(), Some(0), "every ud2 handled on the program's stack ({status:?})");
}
