//! The emulator's alternate signal stacks, and what a handler finds from its own stack
//! pointer alone: each stack is aligned to its size, and a header at its bottom holds the
//! owning thread's state and its Syscall User Dispatch selector. A handler may start with
//! system calls blocked (dispatch) and with the enclave's FS base (no thread-local storage),
//! so neither `gettid` nor TLS can tell it whose it is.

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, AtomicU8, AtomicU64, Ordering};

use crate::sys;
use crate::thread::ThreadState;

/// Size of each alternate stack, header included (far above the 2944-byte AVX-512 frame
/// plus what the handlers use). A power of two: the base is the stack pointer rounded down.
pub const SIZE: u64 = 256 << 10;

/// Bytes at the bottom of each stack reserved for the [`Header`].
pub const HEADER_SIZE: u64 = 64;

const GUARD: u64 = 4096;

/// `SS_AUTODISARM` (linux/signal.h; not exported by the libc crate).
const SS_AUTODISARM: libc::c_int = 1 << 31;

/// The bottom of an alternate stack.
#[derive(Debug)]
#[repr(C)]
pub struct Header {
    /// The Syscall User Dispatch selector of the owning thread (see `syscall_dispatch`).
    pub selector: AtomicU8,
    /// Whether dispatch was turned on for the owning thread with this selector.
    dispatch_on: AtomicBool,
    /// The owning thread's state (null until the thread enters an enclave: a stack made by
    /// a handler for a thread's first host-side ENCLU has none yet).
    state: AtomicPtr<ThreadState>,
    /// The alternate stack the program set for this thread, as `sigaltstack` reports it
    /// (the kernel's holds ours): base, size and flags (`SS_DISABLE` when it has none).
    app_sp: AtomicU64,
    app_size: AtomicU64,
    app_flags: AtomicI32,
    /// The thread a handler made this stack for before the thread had a state (0 once a
    /// state owns it, which frees it at the thread's exit): such a stack outlives its
    /// thread until [`create`] finds the registry full and takes back those of threads
    /// that are gone.
    orphan_tid: AtomicI32,
}

const _: () = assert!(size_of::<Header>() as u64 <= HEADER_SIZE);

/// Bases of the live stacks (open addressing on the stack number), so that a stack pointer
/// on some other stack is never taken for one of ours.
static STACKS: [AtomicU64; 1024] = [const { AtomicU64::new(0) }; 1024];

/// A freed slot: matches no (aligned) base; lookups probe past it.
const TOMBSTONE: u64 = 1;

fn slot_of(base: u64) -> usize {
    (base / SIZE) as usize % STACKS.len()
}

fn registered(base: u64) -> bool {
    let start = slot_of(base);
    for i in 0..STACKS.len() {
        match STACKS[(start + i) % STACKS.len()].load(Ordering::Acquire) {
            0 => return false,
            b if b == base => return true,
            _ => {}
        }
    }
    false
}

fn register(base: u64) -> bool {
    let start = slot_of(base);
    (0..STACKS.len()).any(|i| {
        let slot = &STACKS[(start + i) % STACKS.len()];
        [0, TOMBSTONE]
            .into_iter()
            .any(|free| slot.compare_exchange(free, base, Ordering::AcqRel, Ordering::Acquire).is_ok())
    })
}

fn unregister(base: u64) {
    if let Some(slot) = STACKS.iter().find(|s| s.load(Ordering::Acquire) == base) {
        slot.store(TOMBSTONE, Ordering::Release);
    }
}

/// The header of the registered stack based at `base`.
pub fn header(base: u64) -> Option<&'static Header> {
    // SAFETY: a registered stack is mapped read-write until its thread unregisters it on
    // exit, and its first HEADER_SIZE bytes are never part of the stack proper.
    registered(base).then(|| unsafe { &*(base as *const Header) })
}

/// The header of the stack the caller runs on, if it is one of ours.
#[inline(always)]
pub fn current_header() -> Option<&'static Header> {
    let rsp: u64;
    // SAFETY: reads the stack pointer.
    unsafe { std::arch::asm!("mov {}, rsp", out(reg) rsp, options(nomem, nostack, preserves_flags)) };
    header(rsp & !(SIZE - 1))
}

impl Header {
    /// The owning thread's state.
    pub fn state(&self) -> Option<&'static ThreadState> {
        // SAFETY: set by `create` or `ensure` to a state that outlives the stack (the thread
        // frees its stack before its state).
        unsafe { self.state.load(Ordering::Acquire).as_ref() }
    }

    /// The program's own alternate stack for this thread, as it last set it.
    pub fn program_stack(&self) -> libc::stack_t {
        libc::stack_t {
            ss_sp: self.app_sp.load(Ordering::Acquire) as *mut libc::c_void,
            ss_flags: self.app_flags.load(Ordering::Acquire),
            ss_size: self.app_size.load(Ordering::Acquire) as usize,
        }
    }

    /// Records `stack` (a `stack_t` the kernel reported or the program passed) as the
    /// program's own. A disabled stack is recorded as the kernel keeps one: no base, no size.
    fn record_program_stack(&self, stack: &libc::stack_t) {
        let flags = stack.ss_flags & !libc::SS_ONSTACK;
        let (sp, size) =
            if flags & libc::SS_DISABLE != 0 { (0, 0) } else { (stack.ss_sp as u64, stack.ss_size as u64) };
        self.app_sp.store(sp, Ordering::Release);
        self.app_size.store(size, Ordering::Release);
        self.app_flags.store(flags, Ordering::Release);
    }
}

/// A new registered stack, with a guard page below, for `state`'s thread (or for a thread
/// that has no state yet). Returns its base (`None` if memory or the registry ran out).
/// Only system calls: usable from a handler that interrupted any code.
pub fn create(state: Option<&ThreadState>) -> Option<u64> {
    let base = map_stack(state)?;
    if register(base) || (reclaim_orphans() && register(base)) {
        Some(base)
    } else {
        let _ = sys::munmap(base - GUARD, SIZE + GUARD);
        None
    }
}

/// Unregisters and unmaps the stacks made for threads without a state that have exited;
/// whether it freed any. Only stacks of threads that are gone: a live thread's stack stays.
fn reclaim_orphans() -> bool {
    let pid = sys::getpid();
    let mut freed = false;
    for slot in &STACKS {
        let base = slot.load(Ordering::Acquire);
        if base <= TOMBSTONE {
            continue;
        }
        // SAFETY: a registered stack's header stays mapped until it is unregistered.
        let h = unsafe { &*(base as *const Header) };
        let tid = h.orphan_tid.load(Ordering::Acquire);
        // SAFETY: signal 0 only checks that the thread exists.
        let gone = tid != 0
            && h.state().is_none()
            && unsafe { libc::syscall(libc::SYS_tgkill, pid as libc::c_long, tid as libc::c_long, 0) } != 0
            && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        if gone && slot.compare_exchange(base, TOMBSTONE, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            let _ = sys::munmap(base - GUARD, SIZE + GUARD);
            freed = true;
        }
    }
    freed
}

/// Maps a new stack (see [`create`]), not yet registered.
fn map_stack(state: Option<&ThreadState>) -> Option<u64> {
    let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE;
    let raw = sys::mmap(0, 2 * SIZE, libc::PROT_READ | libc::PROT_WRITE, flags, -1, 0).ok()?;
    let base = (raw + GUARD).next_multiple_of(SIZE);
    // Keep [base - GUARD, base + SIZE); give back what is around it.
    for (start, end) in [(raw, base - GUARD), (base + SIZE, raw + 2 * SIZE)] {
        if end > start {
            let _ = sys::munmap(start, end - start);
        }
    }
    let _ = sys::mprotect(base - GUARD, GUARD, libc::PROT_NONE);
    // SAFETY: the header lies in the fresh, writable mapping just made.
    let header = unsafe { &*(base as *const Header) };
    let state = state.map_or(std::ptr::null_mut(), |s| s as *const ThreadState as *mut ThreadState);
    header.state.store(state, Ordering::Release);
    header.app_flags.store(libc::SS_DISABLE, Ordering::Release);
    header.orphan_tid.store(if state.is_null() { sys::gettid() } else { 0 }, Ordering::Release);
    Some(base)
}

/// The `stack_t` for the stack at `base`: everything above the header.
pub fn stack_t(base: u64) -> libc::stack_t {
    libc::stack_t {
        ss_sp: (base + HEADER_SIZE) as *mut libc::c_void,
        ss_flags: 0,
        ss_size: (SIZE - HEADER_SIZE) as usize,
    }
}

/// The base of our registered stack that `stack` describes, if it is one.
fn ours(stack: &libc::stack_t) -> Option<u64> {
    let base = (stack.ss_sp as u64).wrapping_sub(HEADER_SIZE);
    let whole = stack.ss_flags & libc::SS_DISABLE == 0 && stack.ss_size as u64 == SIZE - HEADER_SIZE;
    (whole && base.is_multiple_of(SIZE) && registered(base)).then_some(base)
}

/// The calling thread's alternate stack as the kernel holds it.
fn kernel_stack() -> libc::stack_t {
    let mut current = libc::stack_t { ss_sp: std::ptr::null_mut(), ss_flags: libc::SS_DISABLE, ss_size: 0 };
    // SAFETY: queries the calling thread's alternate stack into `current`.
    unsafe { libc::syscall(libc::SYS_sigaltstack, std::ptr::null::<libc::stack_t>(), &mut current) };
    current
}

/// Installs `stack` as the calling thread's alternate stack; whether the kernel took it (it
/// refuses while the thread runs on the one installed).
fn set_kernel_stack(stack: &libc::stack_t) -> bool {
    // SAFETY: `stack` is a valid stack_t; no old value is asked for.
    unsafe { libc::syscall(libc::SYS_sigaltstack, stack, std::ptr::null_mut::<libc::stack_t>()) == 0 }
}

/// Makes sure `state`'s thread has its emulator stack, with dispatch on and the stack
/// installed in the kernel, whatever the program installed (which is recorded as the
/// program's own). Normal context, or a handler on one of our stacks. Returns the stack's
/// `stack_t` and whether the kernel holds it now (it refuses while the caller runs on the
/// program's alternate stack; a handler's caller then writes it into `uc_stack`).
pub fn ensure(state: &ThreadState) -> Option<(libc::stack_t, bool)> {
    let current = kernel_stack();
    let mut base = state.alt_stack.get();
    if base == 0 {
        // A stack a handler made for this thread's first host-side ENCLU, or a new one.
        base = match ours(&current) {
            Some(b) if header(b).is_some_and(|h| h.state().is_none_or(|s| std::ptr::eq(s, state))) => b,
            _ => create(Some(state))?,
        };
        state.alt_stack.set(base);
    }
    let header = header(base)?;
    header.state.store(state as *const ThreadState as *mut ThreadState, Ordering::Release);
    header.orphan_tid.store(0, Ordering::Release);
    if !header.dispatch_on.swap(true, Ordering::AcqRel) {
        crate::syscall_dispatch::enable(base);
    }
    let wanted = stack_t(base);
    let installed = ours(&current) == Some(base) || {
        // The program's (installed before the preload saw it, or by a raw system call).
        if ours(&current).is_none() {
            header.record_program_stack(&current);
        }
        set_kernel_stack(&wanted)
    };
    Some((wanted, installed))
}

/// The base of our stack that `rsp` lies on (above its header), if any.
#[inline(always)]
fn on_ours(rsp: u64) -> Option<u64> {
    let base = rsp & !(SIZE - 1);
    (rsp >= base + HEADER_SIZE && registered(base)).then_some(base)
}

/// Whether `rsp` lies on one of the emulator's stacks.
pub fn is_ours(rsp: u64) -> bool {
    on_ours(rsp).is_some()
}

/// The base of the emulator's stack the caller runs on, if it runs on one.
#[inline(always)]
pub fn current_base() -> Option<u64> {
    let rsp: u64;
    // SAFETY: reads the stack pointer.
    unsafe { std::arch::asm!("mov {}, rsp", out(reg) rsp, options(nomem, nostack, preserves_flags)) };
    on_ours(rsp)
}

/// First call of every emulator handler (from the entry trampoline in `signals`, on the
/// stack the kernel chose, with `entry_rsp` its stack pointer at entry): 0 to run the
/// handler where it is (one of our stacks: the fast path), or the top of the thread's own
/// emulator stack to switch to (its handlers never run on the program's stacks). That is
/// the case when the kernel delivered on the program's alternate stack or the thread's own
/// stack: the thread has no stack of ours yet (it then gets one for a host-side ENCLU; any
/// other signal of such a thread is the program's own and runs where the kernel put it,
/// after a look at RIP), or the program's stack was reinstalled behind our back (a raw
/// `sigaltstack`, or the sigreturn of a frame delivered before ours was installed).
///
/// Runs on whatever stack the kernel chose (a few hundred bytes of it), before the
/// handler restored FS: no thread-local storage. No system call either until the thread is
/// known to be outside enclave mode (its selector may block them).
pub(crate) extern "C" fn handler_stack(entry_rsp: u64, sig: libc::c_int, uc: *mut libc::c_void) -> u64 {
    if on_ours(entry_rsp).is_some() {
        return 0;
    }
    // SAFETY: the kernel's ucontext for this signal.
    let delivered = unsafe { (*uc.cast::<libc::ucontext_t>()).uc_stack };
    if let Some(base) = ours(&delivered) {
        // Installed but not used (disabled and enabled again meanwhile): ours is free.
        return base + SIZE;
    }
    // The program's stack, reinstalled after ours was: the header that recorded it. (The
    // thread may be in enclave mode, system calls blocked: found without one.)
    if delivered.ss_flags & libc::SS_DISABLE == 0
        && let Some(base) = recorded_by_one(delivered.ss_sp as u64)
    {
        if let Some(h) = header(base) {
            h.selector.store(0, Ordering::Relaxed);
        }
        return base + SIZE;
    }
    // Outside enclave mode from here on (entering installs ours): system calls work, and
    // FS is the host's.
    if let Some(state) = crate::thread::lookup(sys::gettid())
        && state.alt_stack.get() != 0
    {
        return state.alt_stack.get() + SIZE;
    }
    // SAFETY: the kernel's ucontext for this signal.
    // (So does our seccomp filter's trap: carrying out a device call needs room.)
    // And so does a program handler the emulator wraps: it must run where the kernel would
    // have run it (see `signals::on_async`), not on the program's alternate stack that the
    // wrapper's SA_ONSTACK chose, and whatever it does (enter an enclave) must find the
    // emulator's stack installed for the traps that follow.
    if unsafe { crate::signals::is_host_enclu(sig, uc) }
        || crate::seccomp::is_trap_context(sig, uc)
        || crate::signals::wraps(sig)
    {
        return create(None).map_or(0, |base| base + SIZE);
    }
    0
}

/// The one registered stack whose header records the program's stack at `sp`, if exactly
/// one does.
fn recorded_by_one(sp: u64) -> Option<u64> {
    let mut found = None;
    for slot in &STACKS {
        let base = slot.load(Ordering::Acquire);
        if base <= TOMBSTONE {
            continue;
        }
        // SAFETY: a registered stack's header stays mapped until it is unregistered.
        let h = unsafe { &*(base as *const Header) };
        if h.app_flags.load(Ordering::Acquire) & libc::SS_DISABLE == 0 && h.app_sp.load(Ordering::Acquire) == sp {
            if found.is_some() {
                return None;
            }
            found = Some(base);
        }
    }
    found
}

/// Second call of a handler that switched to our stack (`top` is its top): makes the
/// kernel hold our stack (nested signals then land below this handler, and sigreturn keeps
/// it through `uc_stack`), recording what it held as the program's own.
pub(crate) extern "C" fn adopt(uc: *mut libc::c_void, top: u64) {
    let base = top - SIZE;
    let Some(header) = header(base) else { return };
    // Before any system call: this thread's selector (if it is this stack's).
    header.selector.store(0, Ordering::Relaxed);
    // SAFETY: the kernel's ucontext for this signal.
    let uc = unsafe { &mut *uc.cast::<libc::ucontext_t>() };
    let wanted = stack_t(base);
    if ours(&uc.uc_stack) != Some(base) {
        if ours(&uc.uc_stack).is_none() {
            header.record_program_stack(&uc.uc_stack);
        }
        set_kernel_stack(&wanted);
        uc.uc_stack = wanted;
    }
}

/// The program's `sigaltstack`: while the kernel holds one of our stacks for the calling
/// thread, the program's stack is recorded and reported, with the kernel's checks (EPERM
/// while running on it, EINVAL for unknown flags, ENOMEM under `MINSIGSTKSZ`); otherwise
/// the call is the kernel's. Returns 0, or -1 with `errno` set, as the C function.
///
/// # Safety
/// `ss` and `old` are null or valid `stack_t` pointers.
pub unsafe fn app_sigaltstack(ss: *const libc::stack_t, old: *mut libc::stack_t) -> libc::c_int {
    let rsp: u64;
    // SAFETY: reads the stack pointer.
    unsafe { std::arch::asm!("mov {}, rsp", out(reg) rsp, options(nomem, nostack, preserves_flags)) };
    // SAFETY: the caller passes null or valid stack_t pointers.
    let (new, old) = unsafe { (ss.as_ref(), old.as_mut()) };
    let mut previous = libc::stack_t { ss_sp: std::ptr::null_mut(), ss_flags: 0, ss_size: 0 };
    match program_sigaltstack(new, &mut previous, rsp) {
        Ok(()) => {
            if let Some(old) = old {
                *old = previous;
            }
            0
        }
        Err(error) => {
            // SAFETY: errno is this thread's (normal context).
            unsafe { *libc::__errno_location() = error };
            -1
        }
    }
}

/// [`app_sigaltstack`] for a program whose stack pointer was `rsp` (a system call the
/// emulator's SIGSYS handler carries out runs elsewhere): the previous stack into `old`,
/// or the errno.
pub fn program_sigaltstack(new: Option<&libc::stack_t>, old: &mut libc::stack_t, rsp: u64) -> Result<(), libc::c_int> {
    let current = kernel_stack();
    let Some(header) = ours(&current).and_then(header) else {
        let new = new.map_or(std::ptr::null(), |n| n as *const libc::stack_t);
        // SAFETY: a valid or null stack_t and a writable one.
        let ret = unsafe { libc::syscall(libc::SYS_sigaltstack, new, old as *mut libc::stack_t) };
        return if ret == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EINVAL))
        };
    };
    let recorded = header.program_stack();
    let enabled = recorded.ss_flags & libc::SS_DISABLE == 0;
    let on_it = enabled && rsp > recorded.ss_sp as u64 && rsp - (recorded.ss_sp as u64) <= recorded.ss_size as u64;
    *old = recorded;
    if on_it {
        old.ss_flags = libc::SS_ONSTACK | (recorded.ss_flags & SS_AUTODISARM);
    }
    let Some(new) = new else { return Ok(()) };
    let mode = new.ss_flags & !SS_AUTODISARM;
    if on_it {
        Err(libc::EPERM)
    } else if mode != 0 && mode != libc::SS_DISABLE && mode != libc::SS_ONSTACK {
        Err(libc::EINVAL)
    } else if mode != libc::SS_DISABLE && new.ss_size < libc::MINSIGSTKSZ {
        Err(libc::ENOMEM)
    } else {
        header.record_program_stack(&libc::stack_t { ss_flags: new.ss_flags & !libc::SS_ONSTACK, ..*new });
        Ok(())
    }
}

/// In a fork child: the stacks (and thread states) are the parent's threads'; forget them
/// all, so handlers fall back to looking the child's thread up by TID. The forking thread's
/// own stack stays installed in the child, so it stays registered, ownerless (the child
/// builds a state of its own) and with the program's stack it records.
pub fn forget_all_in_child() {
    let current = ours(&kernel_stack());
    for slot in &STACKS {
        slot.store(0, Ordering::Release);
    }
    if let Some(base) = current
        && register(base)
    {
        // SAFETY: the stack is mapped in the child (copied), and registered again.
        let header = unsafe { &*(base as *const Header) };
        header.state.store(std::ptr::null_mut(), Ordering::Release);
        header.dispatch_on.store(false, Ordering::Release);
        header.selector.store(0, Ordering::Relaxed);
    }
}

/// Frees the calling (exiting) thread's stack at `base`; the kernel gets the program's own
/// stack back.
pub fn free(base: u64) {
    // No handler may run on the stack, or record it as the program's, while it goes away:
    // the kernel gets the program's stack back first, then the stack is forgotten.
    let held = crate::signals::block_all_async();
    let program = header(base).map(Header::program_stack);
    let off = libc::stack_t { ss_sp: std::ptr::null_mut(), ss_flags: libc::SS_DISABLE, ss_size: 0 };
    if !program.is_some_and(|p| p.ss_flags & libc::SS_DISABLE == 0 && set_kernel_stack(&p)) {
        set_kernel_stack(&off);
    }
    unregister(base);
    let _ = sys::munmap(base - GUARD, SIZE + GUARD);
    crate::signals::set_mask(&held);
}
