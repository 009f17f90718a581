//! The emulator's signal handlers: SIGILL (ENCLU, rewritten CPUID), SIGSEGV (enclave page
//! faults, CPUID faulting), SIGBUS/SIGFPE/SIGTRAP (other exceptions of enclave code), and
//! the IPI signal. Every other signal, and every one of these that is not the emulator's,
//! goes to the program's own handler as if the emulator were not there.
//!
//! Handlers run on the emulator's alternate stack with asynchronous signals blocked. An
//! entry trampoline clears EFLAGS.AC and, when the kernel delivered the signal on some other
//! stack (the program's alternate stack or the thread's own: see
//! `alt_stack::handler_stack`), switches to the thread's emulator stack before any Rust
//! code of the handler runs. The handler then restores the host's FS and GS bases, if the
//! thread was running enclave code, before any code that uses thread-local storage.
//!
//! The program's own handlers never run there: when a signal is the program's (outside
//! enclave code, or after the AEX that an asynchronous one causes there), its frame is
//! copied to where the kernel would have built it, on the program's stack or its own
//! alternate stack (`program_frame`), and the emulator's handler returns into the
//! program's. A program handler that enters an enclave thus leaves the emulator's stack
//! free for the traps of that entry, as hardware needs no stack for them.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use libc::{c_int, c_void, siginfo_t};

use crate::context::Frame;
use crate::enclu::{self, Outcome};
use crate::engine::Engine;
use crate::{alt_stack, cpuid, platform, program_frame, sys, syscall_dispatch, thread, user_copy};

/// Signals the emulator handles itself (besides the IPI signal).
const FAULT_SIGNALS: [c_int; 6] =
    [libc::SIGILL, libc::SIGSEGV, libc::SIGBUS, libc::SIGFPE, libc::SIGTRAP, libc::SIGSYS];
const MAX_SIGNAL: usize = 65;

/// The program's own disposition of each signal the emulator owns: (handler, flags).
static APP_HANDLER: [AtomicUsize; MAX_SIGNAL] = [const { AtomicUsize::new(libc::SIG_DFL) }; MAX_SIGNAL];
static APP_FLAGS: [AtomicUsize; MAX_SIGNAL] = [const { AtomicUsize::new(0) }; MAX_SIGNAL];
static INSTALLED: OnceLock<()> = OnceLock::new();
/// Asynchronous signals whose program handler the emulator wraps (see [`wrap_async`]): bit
/// `sig - 1`, as in the first word of a `sigset_t`, so every enclave entry derives its mask
/// with word operations.
static WRAPPED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
/// Asynchronous signals whose disposition is SIG_DFL or SIG_IGN, as the emulator installed
/// it or found it at [`install`] (bits as in [`WRAPPED`]). They need not wait while enclave
/// code runs: no handler runs, the kernel ends, stops or continues the process or drops the
/// signal, as it does on hardware after the AEX. The C library's internal signals (32 up to
/// SIGRTMIN) are never counted: it installs their handlers without the `sigaction` we see.
static PLAIN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
/// The program's `sa_mask` (signals 1-64) for each wrapped handler: applied by the wrapper
/// before the program's handler runs (the wrapper itself starts with every asynchronous
/// signal blocked).
static APP_MASK: [std::sync::atomic::AtomicU64; MAX_SIGNAL] =
    [const { std::sync::atomic::AtomicU64::new(0) }; MAX_SIGNAL];
/// `SGXEMU_TRACE`: one stderr line per signal the emulator handles (debugging).
static TRACE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
static ASYNC: OnceLock<libc::sigset_t> = OnceLock::new();

/// Whether `SGXEMU_TRACE` asked for a line per handled signal.
pub fn tracing() -> bool {
    TRACE.load(Ordering::Relaxed)
}

/// Whether the emulator installed the program's handler of `sig` wrapped.
pub fn wraps(sig: c_int) -> bool {
    (1..MAX_SIGNAL as c_int).contains(&sig) && WRAPPED.load(Ordering::Acquire) & signal_bit(sig) != 0
}

/// Whether the emulator owns `sig` (so `sigaction` on it is recorded, not applied).
pub fn owns(sig: c_int) -> bool {
    INSTALLED.get().is_some() && (FAULT_SIGNALS.contains(&sig) || sig == platform::kick_signal())
}

/// The program's `sigaction` for an owned signal: records `act` (if any) and returns the
/// previous disposition in `old` (if any).
///
/// # Safety
/// `act` and `old` are null or valid `sigaction` pointers.
pub unsafe fn app_sigaction(sig: c_int, act: *const libc::sigaction, old: *mut libc::sigaction) {
    let index = sig as usize;
    // SAFETY: the caller passes null or a valid, writable sigaction.
    if let Some(old) = unsafe { old.as_mut() } {
        old.sa_sigaction = APP_HANDLER[index].load(Ordering::Acquire);
        old.sa_flags = APP_FLAGS[index].load(Ordering::Acquire) as c_int;
        old.sa_mask = program_mask(APP_MASK[index].load(Ordering::Acquire));
    }
    // SAFETY: the caller passes null or a valid sigaction.
    if let Some(act) = unsafe { act.as_ref() } {
        APP_MASK[index].store(sigset_words(act.sa_mask)[0], Ordering::Release);
        APP_FLAGS[index].store(act.sa_flags as usize, Ordering::Release);
        APP_HANDLER[index].store(act.sa_sigaction, Ordering::Release);
    }
}

/// The signals that wait while enclave code runs: every one but the synchronous
/// exceptions and the IPI.
fn async_set() -> &'static libc::sigset_t {
    ASYNC.get_or_init(|| {
        // SAFETY: sigfillset/sigdelset initialise and edit a local set.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut set);
            for sig in FAULT_SIGNALS.into_iter().chain([libc::SIGKILL, libc::SIGSTOP, platform::kick_signal()]) {
                libc::sigdelset(&mut set, sig);
            }
            set
        }
    })
}

/// The asynchronous signals that must wait while enclave code runs: those whose handler the
/// emulator does not wrap (it could not deliver them with an AEX first, and they must never
/// run on an enclave stack).
fn waiting_in_enclave() -> libc::sigset_t {
    let mut words = sigset_words(*async_set());
    words[0] &= !(WRAPPED.load(Ordering::Acquire) | PLAIN.load(Ordering::Acquire));
    sigset_of(words)
}

/// A `sigset_t` holding the signals 1-64 of `word`.
fn program_mask(word: u64) -> libc::sigset_t {
    let mut words = sigset_words(empty_set());
    words[0] = word;
    sigset_of(words)
}

/// Whether `sig` is one of the C library's internal signals (32 up to SIGRTMIN), whose
/// handlers it installs without going through the `sigaction` the emulator interposes.
fn libc_internal(sig: c_int) -> bool {
    (32..libc::SIGRTMIN()).contains(&sig)
}

/// Records that `sig`'s disposition is now `handler` (installed wrapped if it is one).
fn record_disposition(sig: c_int, handler: libc::sighandler_t) {
    if handler != libc::SIG_DFL && handler != libc::SIG_IGN {
        WRAPPED.fetch_or(signal_bit(sig), Ordering::AcqRel);
        PLAIN.fetch_and(!signal_bit(sig), Ordering::AcqRel);
    } else {
        WRAPPED.fetch_and(!signal_bit(sig), Ordering::AcqRel);
        if !libc_internal(sig) {
            PLAIN.fetch_or(signal_bit(sig), Ordering::AcqRel);
        }
    }
}

/// Every asynchronous signal and the IPI: the mask of the emulator's own handlers, so that
/// none of the program's handlers and no second AEX nests into them.
fn handler_mask() -> libc::sigset_t {
    let mut mask = *async_set();
    // SAFETY: edits an initialised set.
    unsafe { libc::sigaddset(&mut mask, platform::kick_signal()) };
    mask
}

/// The words of a `sigset_t` (signal `s` is bit `s - 1`).
type SigsetWords = [u64; size_of::<libc::sigset_t>() / 8];

fn sigset_words(set: libc::sigset_t) -> SigsetWords {
    // SAFETY: a Linux sigset_t is a plain array of signal bits (glibc's 1024-bit `__val`).
    unsafe { std::mem::transmute::<libc::sigset_t, SigsetWords>(set) }
}

fn sigset_of(words: SigsetWords) -> libc::sigset_t {
    // SAFETY: as in `sigset_words`; any bit pattern is a valid set.
    unsafe { std::mem::transmute::<SigsetWords, libc::sigset_t>(words) }
}

/// Bit `sig - 1`: signal `sig` in the first word of a `sigset_t` (and in [`WRAPPED`]).
fn signal_bit(sig: c_int) -> u64 {
    1 << (sig - 1)
}

/// `mask` plus `waiting_in_enclave`.
pub fn enclave_mask(mask: &libc::sigset_t) -> libc::sigset_t {
    let (mask, extra) = (sigset_words(*mask), sigset_words(waiting_in_enclave()));
    sigset_of(std::array::from_fn(|i| mask[i] | extra[i]))
}

/// Blocks every asynchronous signal for the calling thread (the IPI and the emulator's
/// traps stay deliverable); returns the previous mask. The software EENTER holds them while
/// it enters, as no handler runs inside one instruction on hardware.
pub fn block_all_async() -> libc::sigset_t {
    // SIG_BLOCK with a valid set cannot fail.
    sys::sigprocmask(libc::SIG_BLOCK, Some(async_set())).unwrap_or_else(empty_set)
}

/// Sets the calling thread's signal mask to `mask` (one the thread had, from
/// [`block_all_async`]); what waited and `mask` allows is delivered on return.
pub fn set_mask(mask: &libc::sigset_t) {
    sys::sigprocmask(libc::SIG_SETMASK, Some(mask));
}

fn empty_set() -> libc::sigset_t {
    // SAFETY: an all-zero sigset_t is the empty set.
    unsafe { std::mem::zeroed() }
}

/// The asynchronous signals held back while the emulator carries out one of the program's
/// system calls on a device, as they are inside a kernel system call: none of the program's
/// handlers runs in the middle of it (where it could call into the device whose locks the
/// call holds), a signal that arrives waits, and the call can see it through
/// [`HeldSignals::deliverable`] to stop early as the kernel's `signal_pending()` makes it.
/// Dropping the guard restores the caller's mask, which delivers what waited.
pub struct HeldSignals {
    caller: libc::sigset_t,
}

impl HeldSignals {
    /// Blocks the asynchronous signals for the calling thread.
    pub fn hold() -> Self {
        // SIG_BLOCK with a valid set cannot fail.
        HeldSignals { caller: sys::sigprocmask(libc::SIG_BLOCK, Some(async_set())).unwrap_or_else(empty_set) }
    }

    /// The calling thread's mask before the hold (the program's own).
    pub fn caller_mask(&self) -> &libc::sigset_t {
        &self.caller
    }

    /// The asynchronous signals pending for this thread now that its caller does not block:
    /// those that will be delivered when the guard drops (one system call).
    pub fn deliverable(&self) -> libc::sigset_t {
        let pending = sys::pending_signals().unwrap_or_else(empty_set);
        let (pending, asynchronous, caller) =
            (sigset_words(pending), sigset_words(*async_set()), sigset_words(self.caller));
        sigset_of(std::array::from_fn(|i| pending[i] & asynchronous[i] & !caller[i]))
    }
}

impl std::fmt::Debug for HeldSignals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeldSignals").field("caller", &format_args!("{:#x}", sigset_words(self.caller)[0])).finish()
    }
}

impl Drop for HeldSignals {
    fn drop(&mut self) {
        sys::sigprocmask(libc::SIG_SETMASK, Some(&self.caller));
    }
}

std::thread_local! {
    /// Which of the emulator's signals ([`never_blocked`]) the program asked to block on
    /// this thread: the real mask never holds them, the program is told it does.
    static PROGRAM_BLOCKED: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// The signals no real mask may block (bits as in [`WRAPPED`]): the emulator's traps (a
/// blocked synchronous signal makes the kernel kill the process) and the IPI; SIGKILL and
/// SIGSTOP, which the kernel never blocks, too.
fn never_blocked() -> u64 {
    FAULT_SIGNALS
        .into_iter()
        .chain([platform::kick_signal(), libc::SIGKILL, libc::SIGSTOP])
        .fold(0, |bits, sig| bits | signal_bit(sig))
}

/// The program's change of its thread's signal mask (`how` and `set` as `sigprocmask(2)`
/// takes them) applied to the real mask `current`: the real mask to set, and the mask to
/// report to the program as the old one. The emulator's signals stay out of the real mask
/// (a thread that blocks everything still runs enclaves, as on hardware); the program's
/// wish for them is kept for this thread and reported back. `how` invalid with a `set`:
/// EINVAL. Without the emulator's handlers installed the mask is the program's as asked.
pub fn program_mask_change(
    current: &libc::sigset_t,
    how: c_int,
    set: Option<&libc::sigset_t>,
) -> Result<(libc::sigset_t, libc::sigset_t), c_int> {
    let ours = if INSTALLED.get().is_some() { never_blocked() } else { 0 };
    let wished = PROGRAM_BLOCKED.with(|w| w.get()) & ours;
    let mut reported = sigset_words(*current);
    reported[0] = (reported[0] & !ours) | wished;
    let Some(set) = set else { return Ok((*current, sigset_of(reported))) };
    let (now, asked) = (sigset_words(*current), sigset_words(*set));
    let mut new: SigsetWords = match how {
        libc::SIG_BLOCK => std::array::from_fn(|i| now[i] | asked[i]),
        libc::SIG_UNBLOCK => std::array::from_fn(|i| now[i] & !asked[i]),
        libc::SIG_SETMASK => asked,
        _ => return Err(libc::EINVAL),
    };
    let wish = match how {
        libc::SIG_BLOCK => wished | (asked[0] & ours),
        libc::SIG_UNBLOCK => wished & !asked[0],
        _ => asked[0] & ours,
    };
    PROGRAM_BLOCKED.with(|w| w.set(wish));
    new[0] &= !(ours | signal_bit(libc::SIGKILL) | signal_bit(libc::SIGSTOP));
    Ok((sigset_of(new), sigset_of(reported)))
}

/// The program's `pthread_sigmask`/`sigprocmask` through the C library (see
/// [`program_mask_change`]): the errno on failure.
///
/// # Safety
/// `set` and `old` are null or valid `sigset_t` pointers.
pub unsafe fn program_sigprocmask(
    how: c_int,
    set: *const libc::sigset_t,
    old: *mut libc::sigset_t,
) -> Result<(), c_int> {
    let current = sys::sigprocmask(libc::SIG_BLOCK, None).ok_or(libc::EINVAL)?;
    // SAFETY: the caller passes null or a valid set.
    let set = unsafe { set.as_ref() };
    let (new, reported) = program_mask_change(&current, how, set)?;
    if set.is_some() {
        // SAFETY: a valid set; the C library's own function (it keeps its internal signals
        // out of the mask), not our interposer.
        let err = unsafe { crate::real::pthread_sigmask(libc::SIG_SETMASK, &new, std::ptr::null_mut()) };
        if err != 0 {
            return Err(err);
        }
    }
    // SAFETY: the caller passes null or a valid, writable set.
    if let Some(old) = unsafe { old.as_mut() } {
        *old = reported;
    }
    Ok(())
}

/// `set`, a mask the program hands a call that installs it while it waits (`sigsuspend`,
/// `ppoll`, `pselect6`, `epoll_pwait`, `epoll_pwait2`) or the set a `sigwait` family call
/// waits for, without the emulator's signals: its traps and its IPI stay deliverable to
/// the emulator during the call (a blocked fault would make the kernel kill the process;
/// a blocked IPI would hold up the driver, and a waited-for one would be taken from it).
/// As on hardware, where those are no signals at all. Without the emulator's handlers
/// installed the set is the program's as given.
pub fn without_emulator_signals(set: &libc::sigset_t) -> libc::sigset_t {
    if INSTALLED.get().is_none() {
        return *set;
    }
    let mut words = sigset_words(*set);
    words[0] &= !(never_blocked() & !(signal_bit(libc::SIGKILL) | signal_bit(libc::SIGSTOP)));
    sigset_of(words)
}

std::thread_local! {
    /// Signals this thread took that only the emulator handled (its IPI, a trap it
    /// resolved), and those it handed to a handler of the program: see [`Interruptions`].
    static EMULATOR_ONLY: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    static PROGRAM_HANDLED: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// What interrupted the calling thread since a point in time: a waiting call the program
/// made (`sigsuspend`, `ppoll`, `sigwaitinfo`, …) that fails with EINTR only because the
/// emulator's own signal (its IPI, a trap it resolved) ran a handler did not fail on a
/// kernel, where those are no signals: the call is made again. One of the program's own
/// handlers ending the call is the kernel's EINTR, reported.
#[derive(Debug, Clone, Copy)]
pub struct Interruptions {
    emulator: u64,
    program: u64,
}

impl Interruptions {
    /// The counts now (before the call).
    pub fn now() -> Self {
        Interruptions { emulator: EMULATOR_ONLY.with(|c| c.get()), program: PROGRAM_HANDLED.with(|c| c.get()) }
    }

    /// Whether only the emulator's signals ran handlers since [`Interruptions::now`]: an
    /// EINTR then is the emulator's, not the program's.
    pub fn only_emulator(&self) -> bool {
        let now = Interruptions::now();
        now.program == self.program && now.emulator != self.emulator
    }
}

/// Counts a signal of this thread handed to a handler of the program. Host FS base (the
/// handler restored it).
fn note_program_handler() {
    PROGRAM_HANDLED.with(|c| c.set(c.get().wrapping_add(1)));
}

/// Counts a signal of this thread that only the emulator handled (host FS base).
fn note_emulator_only() {
    EMULATOR_ONLY.with(|c| c.set(c.get().wrapping_add(1)));
}

/// The calling thread's wish for the emulator's signals (see [`program_mask_change`]), for a
/// thread it creates: a new thread inherits its creator's mask.
pub fn inherited_wish() -> u64 {
    PROGRAM_BLOCKED.with(|w| w.get())
}

/// Takes over `wish` (from [`inherited_wish`] of the creating thread) at the start of a new
/// thread.
pub fn inherit_wish(wish: u64) {
    PROGRAM_BLOCKED.with(|w| w.set(wish));
}

/// Whether the program asked to block `sig`, one of the emulator's signals, on this thread.
fn program_blocks(sig: c_int) -> bool {
    PROGRAM_BLOCKED.with(|w| w.get()) & signal_bit(sig) != 0
}

/// Whether `set` holds no signal.
pub fn is_empty(set: &libc::sigset_t) -> bool {
    sigset_words(*set).iter().all(|&w| w == 0)
}

/// Whether a system call that stopped with ERESTARTSYS for the signals in `delivered` runs
/// again once their handlers have run, as the kernel decides: yes, unless one of them has a
/// handler installed without SA_RESTART (the call then fails with EINTR).
pub fn restarts_after(delivered: &libc::sigset_t) -> bool {
    let delivered = sigset_words(*delivered)[0];
    (1..MAX_SIGNAL as c_int).filter(|&sig| delivered & signal_bit(sig) != 0).all(|sig| {
        // SAFETY: an all-zero sigaction is valid output storage.
        let mut current: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: a query: no new action, and `current` is valid output storage.
        let queried = unsafe { crate::real::sigaction(sig, std::ptr::null(), &mut current) } == 0;
        !queried
            || current.sa_sigaction == libc::SIG_DFL
            || current.sa_sigaction == libc::SIG_IGN
            || current.sa_flags & libc::SA_RESTART != 0
    })
}

/// The program's `sigaction` for an asynchronous signal: a handler is installed wrapped, so
/// that a signal arriving while the thread runs enclave code is delivered as hardware
/// would: AEX first (the thread is then at the AEP, on its own stack), the signal queued
/// again with its original siginfo, the program's handler run there, and ERESUME at the
/// AEP continuing the enclave. SIG_DFL and SIG_IGN are installed as they are.
///
/// # Safety
/// `act` and `old` are null or valid `sigaction` pointers.
pub unsafe fn wrap_async(sig: c_int, act: *const libc::sigaction, old: *mut libc::sigaction) -> c_int {
    let index = sig as usize;
    if index == 0 || index >= MAX_SIGNAL || sig == libc::SIGKILL || sig == libc::SIGSTOP {
        // SAFETY: forwarded as it came.
        return unsafe { crate::real::sigaction(sig, act, old) };
    }
    let was_wrapped = WRAPPED.load(Ordering::Acquire) & signal_bit(sig) != 0;
    // SAFETY: the caller passes null or a valid sigaction.
    let Some(act) = (unsafe { act.as_ref() }) else {
        // A query: what the program asked for, if we wrapped it.
        // SAFETY: forwarded / filled as the C function does.
        let ret = unsafe { crate::real::sigaction(sig, std::ptr::null(), old) };
        // SAFETY: the caller passes null or a valid, writable sigaction.
        if was_wrapped && let Some(old) = unsafe { old.as_mut() } {
            old.sa_sigaction = APP_HANDLER[index].load(Ordering::Acquire);
            old.sa_flags = APP_FLAGS[index].load(Ordering::Acquire) as c_int;
            old.sa_mask = program_mask(APP_MASK[index].load(Ordering::Acquire));
        }
        return ret;
    };
    let previous = (
        APP_HANDLER[index].load(Ordering::Acquire),
        APP_FLAGS[index].load(Ordering::Acquire),
        APP_MASK[index].load(Ordering::Acquire),
    );
    let handler = act.sa_sigaction;
    let mut installed = *act;
    if handler != libc::SIG_DFL && handler != libc::SIG_IGN {
        installed.sa_sigaction = async_entry as *const () as usize;
        installed.sa_flags = (act.sa_flags | libc::SA_SIGINFO | libc::SA_ONSTACK) & !libc::SA_RESETHAND;
        // The wrapper runs with every asynchronous signal blocked (a second one must not
        // nest into its AEX); the program's own mask is applied before its handler runs.
        installed.sa_mask = handler_mask();
        APP_MASK[index].store(sigset_words(act.sa_mask)[0], Ordering::Release);
    }
    // SAFETY: a valid, fully initialised action; `old` as the caller passed it.
    let ret = unsafe { crate::real::sigaction(sig, &installed, old) };
    if ret != 0 {
        return ret;
    }
    // SAFETY: the caller passes null or a valid, writable sigaction.
    if was_wrapped && let Some(old) = unsafe { old.as_mut() } {
        old.sa_sigaction = previous.0;
        old.sa_flags = previous.1 as c_int;
        old.sa_mask = program_mask(previous.2);
    }
    APP_FLAGS[index].store(act.sa_flags as usize, Ordering::Release);
    APP_HANDLER[index].store(handler, Ordering::Release);
    record_disposition(sig, handler);
    0
}

extern "C" fn on_async(sig: c_int, info: *mut siginfo_t, uc: *mut c_void) {
    syscall_dispatch::allow_in_handler();
    let state = thread::in_handler();
    let inside = state.is_some_and(|s| s.in_enclave.load(Ordering::Acquire));
    if let (true, Some(s), Some(engine)) = (inside, state, Engine::get()) {
        let enclave_fs = sys::fs_base();
        let enclave_gs = sys::gs_base();
        sys::set_fs_base(s.host_fs.load(Ordering::Relaxed));
        sys::set_gs_base(s.host_gs.load(Ordering::Relaxed));
        // SAFETY: `uc` is this signal's context.
        let mut frame = unsafe { Frame::new(uc) };
        let _ = enclu::on_interrupt(engine, s, &mut frame, enclave_fs, enclave_gs);
        // Deliver it again where the thread now is (the AEP, its own stack); it is blocked
        // until this handler returns.
        // SAFETY: re-queues this signal to this thread with the siginfo the kernel gave.
        unsafe {
            libc::syscall(
                libc::SYS_rt_tgsigqueueinfo,
                sys::getpid() as libc::c_long,
                s.tid as libc::c_long,
                sig as libc::c_long,
                info,
            )
        };
        crate::stats::count(&crate::stats::REQUEUED_SIGNALS);
        return;
    }
    // The mask the kernel would have set for the program's handler: the interrupted mask,
    // its `sa_mask` and, unless SA_NODEFER, the signal itself (sigreturn restores the
    // interrupted one).
    let flags = APP_FLAGS[sig as usize].load(Ordering::Acquire) as c_int;
    // SAFETY: `uc` is this signal's context.
    let mut words = sigset_words(unsafe { Frame::new(uc) }.sigmask());
    words[0] |= APP_MASK[sig as usize].load(Ordering::Acquire) & !never_blocked();
    if flags & libc::SA_NODEFER == 0 {
        words[0] |= signal_bit(sig);
    }
    let handler_mask = sigset_of(words);
    let handler = APP_HANDLER[sig as usize].load(Ordering::Acquire);
    if handler != libc::SIG_DFL && handler != libc::SIG_IGN {
        note_program_handler();
    }
    if handler != libc::SIG_DFL
        && handler != libc::SIG_IGN
        && let Some(base) = alt_stack::current_base()
        && let Some(top) = program_frame_top(base, flags, uc)
    {
        let stack = alt_stack::stack_t(base);
        // On the emulator's stack: the program's handler runs where the kernel would have
        // run it (its stack, or its alternate stack), and this stack is free again before
        // the handler starts. A handler that enters an enclave then finds it free for the
        // emulator's traps there, as nested signals would on hardware.
        // SAFETY: this signal's siginfo and frame; this handler returns right after; `top`
        // is where the kernel would have put the program's frame.
        unsafe { program_frame::redirect(sig, info, uc, handler, top, handler_mask, stack) };
        // SAFETY: `uc` is this signal's context.
        unsafe { Frame::new(uc) }.set_altstack(stack);
        return;
    }
    sys::sigprocmask(libc::SIG_SETMASK, Some(&handler_mask));
    chain(sig, info, uc);
    if let Some(stack) = our_stack(state) {
        // SAFETY: `uc` is this signal's context.
        unsafe { Frame::new(uc) }.set_altstack(stack);
    }
}

/// Hands `sig` (one the emulator owns, for the program's own handler: a fault of its code,
/// or an enclave's exception reported at the AEP) to the program's handler where the kernel
/// would have run it, as [`on_async`] does for the asynchronous ones: its frame is copied
/// to the program's stack and this handler's return runs the program's (so a handler
/// that enters an enclave finds the emulator's stack free). Whether it did; otherwise the
/// caller chains as before (default actions, a fault the program blocks, a signal that
/// interrupted code on the emulator's stack).
fn run_where_the_program_asked(sig: c_int, info: *mut siginfo_t, uc: *mut c_void) -> bool {
    let Some(index) = usize::try_from(sig).ok().filter(|&i| i < MAX_SIGNAL) else { return false };
    let handler = APP_HANDLER[index].load(Ordering::Acquire);
    let flags = APP_FLAGS[index].load(Ordering::Acquire) as c_int;
    // SAFETY: the kernel filled `info` for this signal.
    let forced = unsafe { (*info).si_code } > 0 && program_blocks(sig);
    if handler == libc::SIG_DFL || handler == libc::SIG_IGN || forced || flags & libc::SA_RESETHAND != 0 {
        return false;
    }
    let Some(base) = alt_stack::current_base() else { return false };
    let Some(top) = program_frame_top(base, flags, uc) else { return false };
    // The kernel's mask for the handler: the interrupted one and `sa_mask` (the emulator's
    // own signals, this one among them, never blocked for real).
    // SAFETY: `uc` is this signal's context.
    let mut words = sigset_words(unsafe { Frame::new(uc) }.sigmask());
    words[0] |= APP_MASK[index].load(Ordering::Acquire) & !never_blocked();
    let stack = alt_stack::stack_t(base);
    note_program_handler();
    // SAFETY: this signal's siginfo and frame; the caller returns right after; `top` is
    // where the kernel would have put the program's frame.
    unsafe { program_frame::redirect(sig, info, uc, handler, top, sigset_of(words), stack) };
    // SAFETY: `uc` is this signal's context.
    unsafe { Frame::new(uc) }.set_altstack(stack);
    true
}

/// Where the kernel would have put the frame of the program's handler for a signal that
/// interrupted `uc` (outside enclave mode; the handler runs on our stack at `base`), had
/// the emulator not been there: the top of the
/// program's alternate stack for an SA_ONSTACK handler when it has one enabled and the
/// thread is not running on it already, else below the interrupted stack pointer and its
/// red zone. `None` when the interrupted code ran on the emulator's own stack (not the
/// program's: its handler then runs here, as before).
fn program_frame_top(base: u64, flags: c_int, uc: *mut c_void) -> Option<u64> {
    // SAFETY: `uc` is this signal's context.
    let sp = unsafe { Frame::new(uc) }.regs().rsp;
    if alt_stack::is_ours(sp) {
        return None;
    }
    let program = alt_stack::header(base).map(|h| h.program_stack());
    let top = match program {
        Some(p)
            if flags & libc::SA_ONSTACK != 0
                && p.ss_flags & libc::SS_DISABLE == 0
                && !(p.ss_sp as u64..p.ss_sp as u64 + p.ss_size as u64).contains(&sp) =>
        {
            p.ss_sp as u64 + p.ss_size as u64
        }
        _ => sp - program_frame::RED_ZONE,
    };
    // The kernel delivered this signal on the program's stack (the thread's emulator stack
    // was not installed: the entry trampoline switched to it), so its frame lies where the
    // program's goes: below it instead (it is dead once this handler returns, but it is
    // what the copy is made from).
    let kernel_frame = uc as u64 - 8;
    Some(if alt_stack::is_ours(kernel_frame) { top } else { top.min(kernel_frame) })
}

/// For the last step of a handler outside enclave code: if the thread has its emulator stack (made
/// during this handler perhaps: the program's handler entered an enclave), sigreturn keeps
/// it installed rather than putting back the program's stack that `uc_stack` held at
/// delivery (which stays recorded as the program's). A thread found from its stack costs
/// nothing; one without (a handler that ran where the kernel delivered it) is looked up.
fn our_stack(state: Option<&'static thread::ThreadState>) -> Option<libc::stack_t> {
    let base = match state {
        Some(s) => s.alt_stack.get(),
        None => thread::lookup(sys::gettid()).map_or(0, |s| s.alt_stack.get()),
    };
    (base != 0 && alt_stack::header(base).is_some()).then(|| alt_stack::stack_t(base))
}

/// Whether the emulator's handler is the one installed for `sig` now (a program may have
/// replaced it with a raw system call, or, without the preload, through its C library).
pub fn handles(sig: c_int) -> bool {
    // SAFETY: a query: no new action, and `current` is valid output storage.
    unsafe {
        let mut current: libc::sigaction = std::mem::zeroed();
        crate::real::sigaction(sig, std::ptr::null(), &mut current) == 0
            && current.sa_sigaction == signal_entry as *const () as usize
    }
}

/// Installs the emulator's handlers (once per process; fork children inherit them). The
/// program's earlier dispositions become its recorded ones.
pub fn install() {
    INSTALLED.get_or_init(|| {
        sys::detect_fsgsbase();
        TRACE.store(std::env::var_os("SGXEMU_TRACE").is_some(), Ordering::Relaxed);
        for sig in FAULT_SIGNALS.into_iter().chain([platform::kick_signal()]) {
            // SAFETY: the sigaction struct is fully initialised before use; the entry
            // trampoline takes the SA_SIGINFO arguments and passes them to `on_signal`.
            unsafe {
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = signal_entry as *const () as usize;
                action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_RESTART;
                // The IPI waits too: it must find the thread in enclave code or outside, never
                // halfway through the emulator's own handling of an exit.
                action.sa_mask = handler_mask();
                let mut previous: libc::sigaction = std::mem::zeroed();
                if crate::real::sigaction(sig, &action, &mut previous) == 0 {
                    APP_HANDLER[sig as usize].store(previous.sa_sigaction, Ordering::Release);
                    APP_FLAGS[sig as usize].store(previous.sa_flags as usize, Ordering::Release);
                }
            }
        }
        // The dispositions found: SIG_DFL and SIG_IGN need not wait in enclave code.
        for sig in 1..MAX_SIGNAL as c_int {
            if FAULT_SIGNALS.contains(&sig)
                || [libc::SIGKILL, libc::SIGSTOP, platform::kick_signal()].contains(&sig)
                || libc_internal(sig)
                || WRAPPED.load(Ordering::Acquire) & signal_bit(sig) != 0
            {
                continue;
            }
            // SAFETY: a query: no new action, and `current` is valid output storage.
            let mut current: libc::sigaction = unsafe { std::mem::zeroed() };
            // SAFETY: as above.
            let queried = unsafe { crate::real::sigaction(sig, std::ptr::null(), &mut current) } == 0;
            if queried && (current.sa_sigaction == libc::SIG_DFL || current.sa_sigaction == libc::SIG_IGN) {
                PLAIN.fetch_or(signal_bit(sig), Ordering::AcqRel);
            }
        }
    });
}

unsafe extern "C" {
    /// The entry of the emulator's handlers for the signals it owns: see below.
    fn signal_entry(sig: c_int, info: *mut siginfo_t, uc: *mut c_void);
    /// The entry of wrapped program handlers of asynchronous signals.
    fn async_entry(sig: c_int, info: *mut siginfo_t, uc: *mut c_void);
}

// The handlers' entry trampoline. It clears EFLAGS.AC (enclave code may have set it, and
// the handler's own misaligned accesses must not raise #AC), then asks
// `alt_stack::handler_stack` (on the stack the kernel chose) whether to switch stacks.
// 0: the handler runs here, a tail call (the fast path: the kernel delivered on our stack).
// Otherwise RAX is the top of the thread's emulator stack: the trampoline moves there,
// keeping the kernel's stack pointer (where the return address into the signal restorer
// is) at its top, has `alt_stack::adopt` make the kernel hold that stack, calls the
// handler, and returns through the kernel's frame where it lies.
std::arch::global_asm!(
    ".pushsection .text.sgxemu_signal_entry,\"ax\",@progbits",
    ".p2align 4",
    ".globl {signal_entry}",
    ".hidden {signal_entry}",
    ".type {signal_entry},@function",
    "{signal_entry}:",
    "lea rax, [rip + {on_signal}]",
    "jmp 2f",
    ".size {signal_entry}, . - {signal_entry}",
    ".p2align 4",
    ".globl {async_entry}",
    ".hidden {async_entry}",
    ".type {async_entry},@function",
    "{async_entry}:",
    "lea rax, [rip + {on_async}]",
    "2:",
    "pushfq",
    "and qword ptr [rsp], -262145",
    "popfq",
    // At entry RSP = 8 (mod 16), as after a call. Keep the handler and its arguments.
    "push rax",
    "push rdi",
    "push rsi",
    "push rdx",
    "sub rsp, 8",
    "lea rdi, [rsp + 40]",
    "mov rsi, [rsp + 24]",
    "mov rdx, [rsp + 8]",
    "call {handler_stack}",
    "add rsp, 8",
    "pop rdx",
    "pop rsi",
    "pop rdi",
    "pop r11",
    "test rax, rax",
    "jnz 3f",
    "jmp r11",
    "3:",
    // The new stack, from its (16-byte aligned) top: the kernel's RSP, the handler, its
    // three arguments; RSP 16-byte aligned for the calls.
    "mov [rax - 8], rsp",
    "mov [rax - 16], r11",
    "mov [rax - 24], rdi",
    "mov [rax - 32], rsi",
    "mov [rax - 40], rdx",
    "lea rsp, [rax - 48]",
    "mov rdi, rdx",
    "mov rsi, rax",
    "call {adopt}",
    "mov rdi, [rsp + 24]",
    "mov rsi, [rsp + 16]",
    "mov rdx, [rsp + 8]",
    "call qword ptr [rsp + 32]",
    "mov rsp, [rsp + 40]",
    "ret",
    ".size {async_entry}, . - {async_entry}",
    ".popsection",
    signal_entry = sym signal_entry,
    async_entry = sym async_entry,
    on_signal = sym on_signal,
    on_async = sym on_async,
    handler_stack = sym alt_stack::handler_stack,
    adopt = sym alt_stack::adopt,
);

/// Whether the signal is an ENCLU that host code (outside enclave mode) executed: the one
/// signal of a thread without an emulator stack that gets one made at once (see
/// [`alt_stack::handler_stack`]). Outside enclave mode only (reads memory with a system call).
///
/// # Safety
/// `uc` is the context of the signal being handled.
pub(crate) unsafe fn is_host_enclu(sig: c_int, uc: *mut c_void) -> bool {
    // SAFETY: the caller passes this signal's context.
    let frame = unsafe { Frame::new(uc) };
    enclu_trap(sig, &frame) && host_code(frame.rip()).starts_with(&ENCLU)
}

extern "C" fn on_signal(sig: c_int, info: *mut siginfo_t, uc: *mut c_void) {
    syscall_dispatch::allow_in_handler();
    let state = thread::in_handler();
    let inside = state.is_some_and(|s| s.in_enclave.load(Ordering::Acquire));
    let (enclave_fs, enclave_gs) = if let Some(s) = state.filter(|_| inside) {
        let bases = (sys::fs_base(), sys::gs_base());
        sys::set_fs_base(s.host_fs.load(Ordering::Relaxed));
        sys::set_gs_base(s.host_gs.load(Ordering::Relaxed));
        bases
    } else {
        (0, 0)
    };
    // SAFETY: `uc` is this signal's context.
    let mut frame = unsafe { Frame::new(uc) };
    if TRACE.load(Ordering::Relaxed) {
        // SAFETY: the kernel filled `info`.
        let addr = unsafe { (*info).si_addr() } as u64;
        sys::stderr_line(&format!(
            "sgxemu: signal {sig} rip {:#x} trap {} err {:#x} addr {addr:#x} inside {inside}\n",
            frame.rip(),
            frame.trapno(),
            frame.err()
        ));
    }
    let outcome = dispatch(sig, info, &mut frame, state, inside, enclave_fs, enclave_gs);
    if let Outcome::Signal(target) = outcome {
        if TRACE.load(Ordering::Relaxed) {
            trace_mapping(frame.rip());
        }
        if !(inside && state.is_some_and(|s| s.in_enclave.load(Ordering::Acquire)))
            && run_where_the_program_asked(target, info, uc)
        {
            // Its handler runs once this one has returned; the frame is the program's now.
            return;
        }
        chain(target, info, uc);
    } else {
        note_emulator_only();
    }
    // Returning into enclave code: its bases, which ERESUME/EENTER may just have set, and
    // system calls blocked (the last step: no system call may follow).
    if let Some(s) = state
        && s.in_enclave.load(Ordering::Acquire)
    {
        sys::set_gs_base(s.enclave_gs.load(Ordering::Relaxed));
        sys::set_fs_base(s.enclave_fs.load(Ordering::Relaxed));
        syscall_dispatch::block(s.alt_stack.get());
        return;
    }
    // The thread's state may be new (a first host-side ENCLU).
    if let Some(stack) = state.or_else(thread::in_handler).and_then(|s| our_stack(Some(s))) {
        frame.set_altstack(stack);
    }
}

fn dispatch(
    sig: c_int,
    info: *mut siginfo_t,
    frame: &mut Frame,
    state: Option<&'static thread::ThreadState>,
    inside: bool,
    enclave_fs: u64,
    enclave_gs: u64,
) -> Outcome {
    let engine = Engine::get();
    let rip = frame.rip();
    // A driver copy from or to a bad user address: its exception-table fixup.
    if (sig == libc::SIGSEGV || sig == libc::SIGBUS) && rip == user_copy::fault_rip() {
        frame.set_rip(user_copy::fixup_rip());
        return Outcome::Resume;
    }
    if sig == platform::kick_signal() {
        if let (Some(engine), Some(s)) = (engine, state) {
            let st = s;
            // Also between the software EENTER and the first enclave instruction: the LP is
            // in enclave mode there, so the AEX (and later ERESUME) covers that code too.
            let interrupted_at = frame.rip();
            let aex = inside && enclu::on_interrupt(engine, st, frame, enclave_fs, enclave_gs);
            if aex {
                s.kick_aexes.fetch_add(1, Ordering::AcqRel);
            }
            s.kicks_seen.fetch_add(1, Ordering::AcqRel);
            platform::acknowledge_kick();
            if aex {
                crate::pause_loop::after_interrupt(engine, st, interrupted_at);
            }
        }
        return Outcome::Resume;
    }
    // A system call made without the C library, trapped by our seccomp filter (inside
    // enclave code only where Syscall User Dispatch is missing: it runs natively there too).
    // SAFETY: `info` is this signal's siginfo.
    if sig == libc::SIGSYS && unsafe { crate::seccomp::is_ours(info) } {
        return crate::seccomp::on_trap(frame);
    }
    if let (true, Some(engine), Some(s)) = (inside, engine, state) {
        let st = s;
        if crate::isolation::fetched_outside(&st.cpus().lp, rip) {
            // Control left ELRANGE (a `syscall` there did not run: #GP at it).
            if sig == libc::SIGSYS && si_code(info) == syscall_dispatch::SYS_USER_DISPATCH {
                frame.set_rip(rip - SYSCALL_LEN);
            }
            return enclu::on_fetch_outside(engine, st, frame, enclave_fs, enclave_gs);
        }
        let traps_at_insn = enclu_trap(sig, frame);
        let code = if traps_at_insn {
            // The page may have been reclaimed since the instruction trapped: run it again
            // (it faults and comes back) rather than guess what it was.
            let Some(code) = enclave_code(engine, rip) else { return Outcome::Resume };
            code
        } else {
            [0; 3]
        };
        return match sig {
            _ if traps_at_insn && code.starts_with(&ENCLU) => {
                enclu::on_enclu(engine, st, frame, enclave_fs, enclave_gs)
            }
            // `syscall` in enclave code: #UD at the instruction (dispatch reports the address
            // after it; the call itself did not run, RAX still holds its number).
            libc::SIGSYS if si_code(info) == syscall_dispatch::SYS_USER_DISPATCH => {
                frame.set_rip(rip - SYSCALL_LEN);
                enclu::on_enclave_ud(engine, st, frame, enclave_fs, enclave_gs)
            }
            libc::SIGSEGV if frame.trapno() == 14 => {
                // SAFETY: the kernel filled `info` for this fault.
                let addr = unsafe { (*info).si_addr() } as u64;
                match xrstor_past_image(engine, st, frame, (enclave_fs, enclave_gs), addr) {
                    Some(insn) => enclu::on_xfeature(engine, st, frame, enclave_fs, enclave_gs, &insn),
                    None => enclu::on_enclave_page_fault(engine, st, frame, enclave_fs, enclave_gs, addr),
                }
            }
            // CPUID inside an enclave is #UD on SGX; with CPUID faulting we can tell.
            libc::SIGSEGV if frame.trapno() == 13 && code.starts_with(&CPUID) => {
                enclu::on_enclave_ud(engine, st, frame, enclave_fs, enclave_gs)
            }
            libc::SIGSEGV if frame.trapno() == 13 && code[0] == crate::patch::TRAP => {
                match patched_instruction(st, rip) {
                    Some(insn) if insn.mnemonic() == iced_x86::Mnemonic::Pause => enclu::on_pause(st, frame, &insn),
                    Some(insn) if insn.mnemonic() == iced_x86::Mnemonic::Enclu => {
                        enclu::on_enclu(engine, st, frame, enclave_fs, enclave_gs)
                    }
                    Some(insn) => enclu::on_xfeature(engine, st, frame, enclave_fs, enclave_gs, &insn),
                    None => enclu::on_enclave_trap(engine, st, frame, enclave_fs, enclave_gs),
                }
            }
            _ => enclu::on_enclave_trap(engine, st, frame, enclave_fs, enclave_gs),
        };
    }
    match sig {
        // Dispatch was still blocking outside enclave code (a handler the emulator does not
        // own ran first): allow, and make the call again.
        libc::SIGSYS if si_code(info) == syscall_dispatch::SYS_USER_DISPATCH => {
            if let Some(s) = state {
                syscall_dispatch::allow(s.alt_stack.get());
            }
            frame.set_rip(rip - SYSCALL_LEN);
            Outcome::Resume
        }
        libc::SIGILL if cpuid::is_patched_site(rip) => emulate_cpuid(frame),
        libc::SIGSEGV if cpuid::faulting() && frame.trapno() == 13 && host_code(rip).starts_with(&CPUID) => {
            emulate_cpuid(frame)
        }
        _ if enclu_trap(sig, frame) && host_code(rip).starts_with(&ENCLU) => match engine {
            // The thread's state exists (the program entered before, or this is its first
            // ENCLU and allocating is safe: it interrupted its own ENCLU, not libc).
            Some(engine) => enclu::on_enclu(engine, thread::current(&engine.processor), frame, 0, 0),
            None => Outcome::Signal(sig),
        },
        _ => Outcome::Signal(sig),
    }
}

/// Whether `sig` may be how this host reports an ENCLU it cannot run (the caller then looks
/// for ENCLU's bytes at RIP). Where the processor has no SGX (AMD) ENCLU is #UD (SIGILL).
/// Where it has SGX but the firmware or hypervisor left it off (Intel machines and their KVM
/// guests), the instruction starts for real: it is #GP (SIGSEGV, trap 13), or a #PF (trap 14)
/// when its microcode touches an operand page the host has not mapped, such as a TCS or SSA
/// of ours. Every one leaves RIP at the ENCLU. A #PF fetching the instruction itself stays a
/// page fault: the code page must be mapped first.
fn enclu_trap(sig: c_int, frame: &Frame) -> bool {
    const FETCH: u64 = 0x10;
    match (sig, frame.trapno()) {
        (libc::SIGILL, _) | (libc::SIGSEGV, 13) => true,
        (libc::SIGSEGV, 14) => frame.err() & FETCH == 0,
        _ => false,
    }
}

/// Length of `syscall` (0F 05), `sysenter` (0F 34) and `int 0x80` (CD 80).
const SYSCALL_LEN: u64 = 2;

fn si_code(info: *const siginfo_t) -> c_int {
    // SAFETY: the kernel filled `info` for this signal.
    unsafe { (*info).si_code }
}

/// Names the mapping `rip` lies in (debugging aid for SGXEMU_TRACE).
fn trace_mapping(rip: u64) {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    for line in maps.lines() {
        let Some((range, _)) = line.split_once(' ') else { continue };
        let Some((lo, hi)) = range.split_once('-') else { continue };
        let (Ok(lo), Ok(hi)) = (u64::from_str_radix(lo, 16), u64::from_str_radix(hi, 16)) else { continue };
        if (lo..hi).contains(&rip) {
            sys::stderr_line(&format!("sgxemu:   rip {rip:#x} = {line} (+{:#x})\n", rip - lo));
        }
    }
}

const ENCLU: [u8; 3] = [0x0f, 0x01, 0xd7];

/// The instruction a patched trap of enclave code at `rip` stands for, if we put it there
/// (counted as emulated, the caller carries it out; ENCLU's leaves have counters of their
/// own). The enclave is the one the thread runs: its page at `rip` may be gone already (the
/// reclaimer), and then the instruction is still the one the thread executed.
fn patched_instruction(st: &thread::ThreadState, rip: u64) -> Option<iced_x86::Instruction> {
    let insn = crate::patch::patched_instruction(st.cpus().lp.eid()?, rip)?;
    if insn.mnemonic() != iced_x86::Mnemonic::Enclu {
        crate::stats::count(&crate::stats::EMULATED_INSTRUCTIONS);
    }
    Some(insn)
}
const CPUID: [u8; 2] = [0x0f, 0xa2];

/// The first bytes of the instruction at `rip` in enclave code, through the EPC alias (the
/// enclave's own mapping may not be readable).
fn enclave_code(engine: &Engine, rip: u64) -> Option<[u8; 3]> {
    let mut bytes = [0u8; 3];
    engine.read_mapped(rip, &mut bytes).then_some(bytes)
}

/// The natively run XRSTOR whose fault at `addr` the emulator takes over, if that is what
/// faulted ([`crate::xfeatures::xrstor_fault_past_image`]).
fn xrstor_past_image(
    engine: &Engine,
    st: &thread::ThreadState,
    frame: &Frame,
    bases: (u64, u64),
    addr: u64,
) -> Option<iced_x86::Instruction> {
    let xfrm = st.cpus().lp.xcr0;
    if !crate::xfeatures::needed(xfrm) {
        return None;
    }
    let regs = sgxemu_cpu::Regs { fsbase: bases.0, gsbase: bases.1, ..frame.regs() };
    let mut code = [0u8; 15];
    // An instruction may end before a page its 15 bytes would cross: then read up to the
    // page's end.
    let to_page_end = (4096 - (regs.rip % 4096) as usize).min(code.len());
    let readable = if engine.read_mapped(regs.rip, &mut code) {
        code.len()
    } else if engine.read_mapped(regs.rip, &mut code[..to_page_end]) {
        to_page_end
    } else {
        return None;
    };
    let insn = crate::xfeatures::xrstor_fault_past_image(&code[..readable], &regs, xfrm, addr)?;
    // A page of the enclave's that is merely not mapped yet: map it, and the next run of
    // the XRSTOR stays native.
    if engine.space.maps_existing_page(addr, sgxemu_cpu::AccessKind::Read) {
        return None;
    }
    crate::stats::count(&crate::stats::EMULATED_INSTRUCTIONS);
    Some(insn)
}

/// The first bytes at `rip` in host code (read without faulting).
fn host_code(rip: u64) -> [u8; 3] {
    let mut bytes = [0u8; 3];
    if sys::read_own_memory(rip, &mut bytes).is_err() {
        let _ = sys::read_own_memory(rip, &mut bytes[..2]);
    }
    bytes
}

fn emulate_cpuid(frame: &mut Frame) -> Outcome {
    let mut regs = frame.regs();
    let [eax, ebx, ecx, edx] = cpuid::emulate(regs.rax as u32, regs.rcx as u32);
    (regs.rax, regs.rbx, regs.rcx, regs.rdx) = (eax.into(), ebx.into(), ecx.into(), edx.into());
    regs.rip += 2;
    frame.set_regs(&regs);
    Outcome::Resume
}

/// Hands `sig` to the program's own disposition, as the kernel would have without us.
fn chain(sig: c_int, info: *mut siginfo_t, uc: *mut c_void) {
    let handler = APP_HANDLER.get(sig as usize).map_or(libc::SIG_DFL, |h| h.load(Ordering::Acquire));
    let flags = APP_FLAGS.get(sig as usize).map_or(0, |f| f.load(Ordering::Acquire)) as c_int;
    // A fault the program's mask blocks (it asked; the real mask never does): the kernel
    // forces the default action.
    // SAFETY: the kernel filled `info` for this signal.
    let forced = FAULT_SIGNALS.contains(&sig) && unsafe { (*info).si_code } > 0 && program_blocks(sig);
    if handler == libc::SIG_DFL || handler == libc::SIG_IGN || forced {
        // The default action: reinstall it and let the fault recur (or re-send a sent
        // signal), so the process ends exactly as it would have.
        // SAFETY: a zeroed sigaction with SIG_DFL is a valid disposition.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = libc::SIG_DFL;
            crate::real::sigaction(sig, &action, std::ptr::null_mut());
            if (*info).si_code <= 0 {
                let _ = sys::tgkill(sys::gettid(), sig);
            }
        }
        return;
    }
    note_program_handler();
    if flags & libc::SA_SIGINFO != 0 {
        // SAFETY: the program installed this as an SA_SIGINFO handler.
        let f: extern "C" fn(c_int, *mut siginfo_t, *mut c_void) = unsafe { std::mem::transmute(handler) };
        f(sig, info, uc);
    } else {
        // SAFETY: the program installed this as a plain handler.
        let f: extern "C" fn(c_int) = unsafe { std::mem::transmute(handler) };
        f(sig);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame_trapping(trapno: i64, err: i64, run: impl FnOnce(&Frame)) {
        // SAFETY: an all-zero ucontext_t is a valid (empty) context.
        let mut uc: libc::ucontext_t = unsafe { std::mem::zeroed() };
        uc.uc_mcontext.gregs[libc::REG_TRAPNO as usize] = trapno;
        uc.uc_mcontext.gregs[libc::REG_ERR as usize] = err;
        // SAFETY: `uc` outlives the frame.
        let frame = unsafe { Frame::new((&mut uc as *mut libc::ucontext_t).cast()) };
        run(&frame);
    }

    #[test]
    fn enclu_traps_as_ud_gp_or_an_operand_page_fault() {
        frame_trapping(6, 0, |f| assert!(enclu_trap(libc::SIGILL, f), "#UD: a host without SGX"));
        frame_trapping(13, 0, |f| assert!(enclu_trap(libc::SIGSEGV, f), "#GP: SGX present but disabled"));
        frame_trapping(14, 0x4, |f| assert!(enclu_trap(libc::SIGSEGV, f), "#PF reading an operand (TCS, SSA)"));
        frame_trapping(14, 0x6, |f| assert!(enclu_trap(libc::SIGSEGV, f), "#PF writing an operand"));
        frame_trapping(14, 0x14, |f| assert!(!enclu_trap(libc::SIGSEGV, f), "fetching the instruction itself"));
        frame_trapping(17, 0, |f| assert!(!enclu_trap(libc::SIGBUS, f), "#AC is the instruction's own"));
    }
}
