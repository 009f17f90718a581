//! Per-thread emulator state: the logical processor the thread runs enclave code on, its
//! kernel CPU for faults and ioctls, what EENTER saved, and its alternate signal stack.
//!
//! Signal handlers find a thread's state by its TID in a fixed, lock-free table, because
//! they may start with the enclave's FS base, where no thread-local storage is reachable.

use std::cell::{Cell, UnsafeCell};
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, AtomicU32, AtomicU64, Ordering};

use sgxemu_cpu::{LeafStats, Lp, LpId, Processor};
use sgxemu_driver::Cpu;

use crate::{alt_stack, sys};

/// One thread's emulator state. Only its own thread touches the non-atomic parts.
#[derive(Debug)]
pub struct ThreadState {
    /// The thread's TID.
    pub tid: i32,
    /// Its logical processors (see [`ThreadState::cpus`]).
    cpus: UnsafeCell<Cpus>,
    /// The id of `cpus.lp` (readable from other threads).
    pub lp_id: LpId,
    /// In enclave mode (CR_ENCLAVE_MODE): FS holds the enclave's value.
    pub in_enclave: AtomicBool,
    /// The FS base of the host side (restored on every handler entry in enclave mode).
    pub host_fs: AtomicU64,
    /// The GS base of the host side.
    pub host_gs: AtomicU64,
    /// The FS base enclave code runs with (set by EENTER/ERESUME).
    pub enclave_fs: AtomicU64,
    /// The GS base enclave code runs with.
    pub enclave_gs: AtomicU64,
    /// The signal mask to restore when the thread leaves the enclave.
    pub host_mask: Cell<libc::sigset_t>,
    /// The software EENTER's register frame (a `vdso::SoftFrame` on the thread's stack)
    /// while the thread, already in enclave mode, runs the emulator's code that finishes
    /// the entry; 0 otherwise. An interrupt there takes its AEX as if at the enclave's
    /// first instruction, with the registers this frame holds (see
    /// `enclu::on_interrupt`), so that nothing below the untrusted stack pointer stays live
    /// across the AEX: the program's signal handler at the AEP may use that stack.
    pub soft_frame: AtomicU64,
    /// Base of the emulator's alternate signal stack for this thread (0 = none yet).
    pub alt_stack: Cell<u64>,
    /// The alternate stack was seen installed (checked until the kernel holds it: the
    /// program's `sigaltstack` is recorded, not applied, from then on).
    pub alt_stack_checked: Cell<bool>,
    /// IPIs received (the reclaimer's kicks acknowledge through this).
    pub kicks_seen: AtomicU64,
    /// How many of those IPIs found it running enclave code and made it take an AEX.
    pub kick_aexes: AtomicU64,
    /// IPIs the driver sent it (timer interrupts, the same signal, not included).
    pub ipis_sent: AtomicU64,
    /// How long it stayed off its CPU the last time an interrupt found it spinning (µs).
    pub spin_backoff_us: AtomicU32,
    /// When its enclave code last executed a PAUSE (CLOCK_MONOTONIC, ns).
    pub last_pause_ns: AtomicU64,
}

/// The logical processors of one thread.
#[derive(Debug)]
pub struct Cpus {
    /// The logical processor enclave code of this thread runs on.
    pub lp: Lp,
    /// The kernel CPU this thread's faults and ioctls run on.
    pub kcpu: Cpu,
}

// SAFETY: `cpus` is only reached through `ThreadState::cpus`, by the owning thread.
unsafe impl Sync for ThreadState {}

impl ThreadState {
    /// The thread's logical processors. Only the thread itself (its handlers included)
    /// calls this, and never while a previous result is still in use: handlers do not nest
    /// over one another's use of it, because asynchronous signals are blocked while they
    /// run and the emulator's own code raises no synchronous ones.
    #[allow(clippy::mut_from_ref, reason = "per-thread state, only touched by its own thread")]
    pub fn cpus(&self) -> &mut Cpus {
        // SAFETY: see above.
        unsafe { &mut *self.cpus.get() }
    }
}

/// Slots in the TID table: more threads than this can still run, but only this many at
/// once can use enclaves.
const SLOTS: usize = 4096;

struct Slot {
    tid: AtomicI32,
    state: AtomicPtr<ThreadState>,
}

static TABLE: [Slot; SLOTS] =
    [const { Slot { tid: AtomicI32::new(0), state: AtomicPtr::new(ptr::null_mut()) } }; SLOTS];

fn home(tid: i32) -> usize {
    (tid as u32).wrapping_mul(2_654_435_761) as usize % SLOTS
}

/// The state registered for `tid`, lock-free (usable in any signal handler).
pub fn lookup(tid: i32) -> Option<&'static ThreadState> {
    let start = home(tid);
    for i in 0..SLOTS {
        let slot = &TABLE[(start + i) % SLOTS];
        match slot.tid.load(Ordering::Acquire) {
            0 => return None,
            t if t == tid => {
                let state = slot.state.load(Ordering::Acquire);
                // SAFETY: a published pointer stays valid until its thread unregisters it,
                // and only the thread itself (or a handler running on it) looks it up.
                return unsafe { state.as_ref() };
            }
            _ => {}
        }
    }
    None
}

fn register(state: *mut ThreadState, tid: i32) -> bool {
    let start = home(tid);
    for i in 0..SLOTS {
        let slot = &TABLE[(start + i) % SLOTS];
        let current = slot.tid.load(Ordering::Acquire);
        // -1 marks a freed slot: reusable, but probing continues past it.
        if (current == 0 || current == -1)
            && slot.tid.compare_exchange(current, tid, Ordering::AcqRel, Ordering::Acquire).is_ok()
        {
            slot.state.store(state, Ordering::Release);
            return true;
        }
    }
    false
}

fn unregister(tid: i32) {
    let start = home(tid);
    for i in 0..SLOTS {
        let slot = &TABLE[(start + i) % SLOTS];
        match slot.tid.load(Ordering::Acquire) {
            0 => return,
            t if t == tid => {
                slot.state.store(ptr::null_mut(), Ordering::Release);
                slot.tid.store(-1, Ordering::Release);
                return;
            }
            _ => {}
        }
    }
}

/// Frees the thread's state when the thread exits.
struct Owner(Cell<*mut ThreadState>);

impl Drop for Owner {
    fn drop(&mut self) {
        let state = self.0.get();
        if state.is_null() {
            return;
        }
        // SAFETY: `state` came from Box::into_raw in `create` and is freed only here.
        let boxed = unsafe { Box::from_raw(state) };
        unregister(boxed.tid);
        retire(&boxed);
    }
}

/// Keeps the counts of a state about to be freed and frees its alternate stack. (glibc runs
/// thread-local destructors before atexit handlers, where the statistics are printed.)
fn retire(state: &ThreadState) {
    let mut retired = RETIRED.lock().unwrap_or_else(|e| e.into_inner());
    retired.merge(state.cpus().lp.stats());
    retired.merge(state.cpus().kcpu.lp.stats());
    drop(retired);
    free_alt_stack(state.alt_stack.get());
}

/// Leaf counters of threads that have exited.
static RETIRED: std::sync::Mutex<LeafStats> =
    std::sync::Mutex::new(LeafStats { encls: [0; 16], enclu: [0; 8], aex: 0 });

/// The leaf counters of every thread that has exited.
pub fn retired_stats() -> LeafStats {
    RETIRED.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

thread_local! {
    static OWNER: Owner = const { Owner(Cell::new(ptr::null_mut())) };
}

/// A new state for thread `tid`, not yet registered.
fn new_state(processor: &Processor, tid: i32) -> Box<ThreadState> {
    let lp = processor.new_lp();
    Box::new(ThreadState {
        tid,
        lp_id: lp.id(),
        cpus: UnsafeCell::new(Cpus { lp, kcpu: Cpu::new(processor) }),
        in_enclave: AtomicBool::new(false),
        host_fs: AtomicU64::new(sys::fs_base()),
        host_gs: AtomicU64::new(sys::gs_base()),
        enclave_fs: AtomicU64::new(0),
        enclave_gs: AtomicU64::new(0),
        // SAFETY: an all-zero sigset_t is a valid (empty) set.
        host_mask: Cell::new(unsafe { std::mem::zeroed() }),
        soft_frame: AtomicU64::new(0),
        alt_stack: Cell::new(0),
        alt_stack_checked: Cell::new(false),
        kicks_seen: AtomicU64::new(0),
        kick_aexes: AtomicU64::new(0),
        ipis_sent: AtomicU64::new(0),
        spin_backoff_us: AtomicU32::new(0),
        last_pause_ns: AtomicU64::new(0),
    })
}

/// The thread's cached state: `Ok(None)` if it has none yet, `Err(())` once the thread's
/// thread-local storage has been torn down (a C++ static destructor, an `atexit` handler or
/// a pthread key destructor runs after Rust's thread-locals are gone).
fn cached() -> Result<Option<&'static ThreadState>, ()> {
    let cached = OWNER.try_with(|owner| owner.0.get()).map_err(drop)?;
    // SAFETY: the owner's pointer stays valid until this thread exits. (A fork child's
    // thread starts with it cleared: see `forget_current_in_child`.)
    Ok(unsafe { cached.as_ref() })
}

/// The calling thread's state, created on first use. Normal context only (allocates, and
/// reads a thread-local cache).
///
/// Called after the thread's thread-local storage was torn down (from a destructor), a
/// thread that never had a state gets one that is never freed (a few KiB, once per such
/// call): prefer [`with_current`], which frees it.
pub fn current(processor: &Processor) -> &'static ThreadState {
    match cached() {
        Ok(Some(state)) if state.tid == sys::gettid() => state,
        // A thread made by a raw `clone` without CLONE_SETTLS shares its creator's
        // thread-local storage, and so its creator's cached state: never take that one (its
        // logical processor and alternate stack are another thread's). Its own is found by
        // TID, or made and registered without touching the shared cache.
        Ok(Some(_)) => lookup(sys::gettid()).unwrap_or_else(|| create_uncached(processor)),
        Ok(None) => create(processor),
        Err(()) => match lookup(sys::gettid()) {
            Some(state) => state,
            None => Box::leak(new_state(processor, sys::gettid())),
        },
    }
}

/// Runs `f` with the calling thread's state, as [`current`]; after the thread's
/// thread-local storage is gone, with a state made for this call alone (its counts kept
/// with those of exited threads).
pub fn with_current<R>(processor: &Processor, f: impl FnOnce(&ThreadState) -> R) -> R {
    match cached() {
        Ok(Some(state)) if state.tid == sys::gettid() => f(state),
        Ok(Some(_)) => f(current(processor)),
        Ok(None) => f(create(processor)),
        Err(()) => {
            if let Some(state) = lookup(sys::gettid()) {
                return f(state);
            }
            let state = new_state(processor, sys::gettid());
            let result = f(&state);
            retire(&state);
            result
        }
    }
}

/// Makes, registers and caches the state of a thread that has none.
fn create(processor: &Processor) -> &'static ThreadState {
    let tid = sys::gettid();
    if let Some(state) = lookup(tid) {
        return state;
    }
    let state = Box::into_raw(new_state(processor, tid));
    if !register(state, tid) {
        // Handlers then find it only through its alternate stack's header (set up at the
        // first EENTER); nothing else needs the table.
        sys::stderr_line("sgxemu: more than 4096 threads use enclaves at once; this one is not in the TID table\n");
    }
    // A thread whose storage is gone between `cached` and here keeps its state registered.
    let _ = OWNER.try_with(|owner| owner.0.set(state));
    // SAFETY: just registered; lives until the thread exits.
    unsafe { &*state }
}

/// The state of a thread whose thread-local storage is another thread's (see [`current`]):
/// registered by TID, never freed (such a thread runs no thread-local destructors).
fn create_uncached(processor: &Processor) -> &'static ThreadState {
    let tid = sys::gettid();
    let state = Box::into_raw(new_state(processor, tid));
    if !register(state, tid) {
        sys::stderr_line("sgxemu: more than 4096 threads use enclaves at once; this one is not in the TID table\n");
    }
    // SAFETY: just made; lives until the process ends.
    unsafe { &*state }
}

/// In a fork child: the forking thread's cached state is its parent thread's; forget it
/// (the child's thread builds its own).
pub fn forget_current_in_child() {
    let _ = OWNER.try_with(|owner| owner.0.set(ptr::null_mut()));
}

/// Every registered thread state (for statistics at exit).
pub fn all() -> Vec<&'static ThreadState> {
    TABLE
        .iter()
        .filter(|s| s.tid.load(Ordering::Acquire) > 0)
        // SAFETY: as in `lookup`.
        .filter_map(|s| unsafe { s.state.load(Ordering::Acquire).as_ref() })
        .collect()
}

/// Makes sure the calling thread runs its signal handlers on the emulator's own alternate
/// stack (enclave stacks are tiny and hold live data in the red zone), the program's own
/// recorded instead (see [`alt_stack::ensure`]). Returns the `stack_t` of ours, for
/// handlers that must also write it into `uc_stack` (the kernel reinstalls `uc_stack` at
/// sigreturn).
fn ensure_alt_stack(state: &ThreadState) -> Option<libc::stack_t> {
    let (wanted, installed) = alt_stack::ensure(state)?;
    // Asked again next time if the kernel refused it (the caller ran on the program's stack).
    state.alt_stack_checked.set(installed);
    Some(wanted)
}

/// `ensure_alt_stack`, asking the kernel only until it holds ours (the program's
/// `sigaltstack` is interposed and recorded, the emulator's handlers write ours back into
/// every `uc_stack` they return through, and a handler the kernel delivers elsewhere after a
/// raw replacement switches to ours and installs it again).
pub fn alt_stack(state: &ThreadState) -> Option<libc::stack_t> {
    let base = state.alt_stack.get();
    if state.alt_stack_checked.get() && base != 0 {
        return Some(alt_stack::stack_t(base));
    }
    ensure_alt_stack(state)
}

fn free_alt_stack(base: u64) {
    if base != 0 {
        crate::syscall_dispatch::disable();
        alt_stack::free(base);
    }
}

/// The state of the thread a signal handler runs on: from the header of its alternate
/// stack (no system call: the thread may have them blocked), else by TID.
pub fn in_handler() -> Option<&'static ThreadState> {
    match alt_stack::current_header().and_then(|h| h.state()) {
        Some(state) => Some(state),
        None => lookup(sys::gettid()),
    }
}
