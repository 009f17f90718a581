//! The emulator's alternate signal stacks, and what a handler finds from its own stack
//! pointer alone: each stack is aligned to its size, and a header at its bottom holds the
//! owning thread's state and its Syscall User Dispatch selector. A handler may start with
//! system calls blocked (dispatch) and with the enclave's FS base (no thread-local storage),
//! so neither `gettid` nor TLS can tell it whose it is.

use std::sync::atomic::{AtomicPtr, AtomicU8, AtomicU64, Ordering};

use crate::sys;
use crate::thread::ThreadState;

/// Size of each alternate stack, header included (far above the 2944-byte AVX-512 frame
/// plus what the handlers use). A power of two: the base is the stack pointer rounded down.
pub const SIZE: u64 = 256 << 10;

/// Bytes at the bottom of each stack reserved for the [`Header`].
pub const HEADER_SIZE: u64 = 64;

const GUARD: u64 = 4096;

/// The bottom of an alternate stack.
#[derive(Debug)]
#[repr(C)]
pub struct Header {
    /// The Syscall User Dispatch selector of the owning thread (see `syscall_dispatch`).
    pub selector: AtomicU8,
    /// The owning thread's state.
    state: AtomicPtr<ThreadState>,
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
        // SAFETY: set once by `create` to a state that outlives the stack (the thread frees
        // its stack before its state).
        unsafe { self.state.load(Ordering::Acquire).as_ref() }
    }
}

/// A new registered stack for `state`'s thread, with a guard page below. Returns its base
/// (`None` if memory or the registry ran out).
pub fn create(state: &ThreadState) -> Option<u64> {
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
    header.state.store(state as *const ThreadState as *mut ThreadState, Ordering::Release);
    if register(base) {
        Some(base)
    } else {
        let _ = sys::munmap(base - GUARD, SIZE + GUARD);
        None
    }
}

/// The `stack_t` for the stack at `base`: everything above the header.
pub fn stack_t(base: u64) -> libc::stack_t {
    libc::stack_t {
        ss_sp: (base + HEADER_SIZE) as *mut libc::c_void,
        ss_flags: 0,
        ss_size: (SIZE - HEADER_SIZE) as usize,
    }
}

/// In a fork child: the stacks (and thread states) are the parent's threads'; forget them
/// all, so handlers fall back to looking the child's thread up by TID.
pub fn forget_all_in_child() {
    for slot in &STACKS {
        slot.store(0, Ordering::Release);
    }
}

/// Frees the calling (exiting) thread's stack at `base`.
pub fn free(base: u64) {
    unregister(base);
    let off = libc::stack_t { ss_sp: std::ptr::null_mut(), ss_flags: libc::SS_DISABLE, ss_size: 0 };
    // SAFETY: disables this thread's alternate stack before it is unmapped.
    unsafe { libc::syscall(libc::SYS_sigaltstack, &off, std::ptr::null_mut::<libc::stack_t>()) };
    let _ = sys::munmap(base - GUARD, SIZE + GUARD);
}
