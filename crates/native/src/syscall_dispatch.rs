//! `syscall` inside an enclave raises #UD on SGX hardware. Natively it would simply run, so
//! while a thread executes enclave code the kernel's Syscall User Dispatch (Linux 5.11+) is
//! set to BLOCK for it: a system call there becomes SIGSYS, which the handler turns into the
//! #UD AEX.
//!
//! The selector byte the kernel consults lives in a header at the bottom of the thread's
//! alternate signal stack, which is aligned to its size. Every emulator handler runs on that
//! stack and first sets the selector to ALLOW — before any system call, and without one:
//! the selector is found from the stack pointer alone (handlers cannot even ask for their
//! TID while blocked). The handler sets BLOCK again as its last step when it returns into
//! enclave code, and so does the software EENTER. The signal trampoline's `rt_sigreturn` is
//! the one system call that runs while BLOCK is set: the C library's restorer is the
//! always-allowed code region.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};

use libc::c_int;

use crate::thread::ALT_STACK_SIZE;

/// The selector values of the prctl interface.
const ALLOW: u8 = 0;
const BLOCK: u8 = 1;

/// `PR_SET_SYSCALL_USER_DISPATCH` and `PR_SYS_DISPATCH_ON` (prctl.h).
const PR_SET_SYSCALL_USER_DISPATCH: c_int = 59;
const PR_SYS_DISPATCH_ON: libc::c_ulong = 1;
const PR_SYS_DISPATCH_OFF: libc::c_ulong = 0;

/// `si_code` of a SIGSYS raised by Syscall User Dispatch.
pub const SYS_USER_DISPATCH: c_int = 2;

/// Bytes at the bottom of each alternate stack reserved for the selector.
pub const HEADER: u64 = 64;

/// Alternate stacks whose header holds a selector, by base (open addressing on the stack
/// number). Threads beyond its capacity simply run without dispatch.
static STACKS: [AtomicU64; 1024] = [const { AtomicU64::new(0) }; 1024];

/// Whether any thread has dispatch on (handlers skip the lookup otherwise).
static ACTIVE: AtomicBool = AtomicBool::new(false);

fn slot_of(base: u64) -> usize {
    (base / ALT_STACK_SIZE) as usize % STACKS.len()
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
        [0, TOMBSTONE].into_iter().any(|free| slot.compare_exchange(free, base, Ordering::AcqRel, Ordering::Acquire).is_ok())
    })
}

/// A freed slot: matches no (aligned) base, and lookups probe past it.
const TOMBSTONE: u64 = 1;

/// Turns dispatch off for the calling thread before its alternate stack (holding the
/// selector) is freed: the kernel reads the selector on every system call, and an unmapped
/// one kills the thread.
pub fn disable(base: u64) {
    if registered(base) {
        // SAFETY: PR_SYS_DISPATCH_OFF takes no pointers.
        unsafe { libc::prctl(PR_SET_SYSCALL_USER_DISPATCH, PR_SYS_DISPATCH_OFF, 0, 0, 0) };
        forget(base);
    }
}

fn forget(base: u64) {
    if let Some(slot) = STACKS.iter().find(|s| s.load(Ordering::Acquire) == base) {
        slot.store(TOMBSTONE, Ordering::Release);
    }
}

/// The selector of the alternate stack based at `base`.
fn selector(base: u64) -> &'static AtomicU8 {
    // SAFETY: `base` is a registered alternate stack: mapped read-write until its thread
    // exits, and its first HEADER bytes are never part of the stack itself.
    unsafe { &*(base as *const AtomicU8) }
}

/// The C library's signal restorer (its `rt_sigreturn`), from the kernel's record of an
/// installed emulator handler: the code region dispatch always allows.
fn restorer() -> Option<u64> {
    static RESTORER: OnceLock<Option<u64>> = OnceLock::new();
    *RESTORER.get_or_init(|| {
        /// The kernel's `struct sigaction` on x86-64.
        #[repr(C)]
        struct KernelSigaction {
            handler: u64,
            flags: u64,
            restorer: u64,
            mask: u64,
        }
        let mut action = KernelSigaction { handler: 0, flags: 0, restorer: 0, mask: 0 };
        // SAFETY: queries the SIGILL disposition into a structure of the kernel's layout.
        let ret = unsafe {
            libc::syscall(libc::SYS_rt_sigaction, libc::SIGILL, std::ptr::null::<KernelSigaction>(), &mut action, 8)
        };
        /// `SA_RESTORER` (asm/signal.h; not exported by the libc crate).
        const SA_RESTORER: u64 = 0x0400_0000;
        let has_restorer = action.flags & SA_RESTORER != 0 && action.restorer != 0;
        (ret == 0 && has_restorer).then_some(action.restorer)
    })
}

/// Turns dispatch on for the calling thread, with its selector in the header of the
/// alternate stack at `base` (ALLOW for now). Best effort: without kernel support, or
/// without a restorer to exempt, `syscall` in enclave code keeps running natively.
pub fn enable(base: u64) {
    let Some(restorer) = restorer() else { return };
    if !register(base) {
        return;
    }
    selector(base).store(ALLOW, Ordering::Relaxed);
    // SAFETY: the selector stays mapped until the thread exits (the alternate stack is
    // freed only by the thread's own exit path, after dispatch can no longer trigger).
    let ret = unsafe {
        libc::prctl(PR_SET_SYSCALL_USER_DISPATCH, PR_SYS_DISPATCH_ON, restorer, 16 as libc::c_ulong, base)
    };
    if ret == 0 {
        ACTIVE.store(true, Ordering::Release);
    } else {
        forget(base);
    }
}

/// First thing in every emulator handler: let this thread make system calls again.
#[inline(always)]
pub fn allow_in_handler() {
    if !ACTIVE.load(Ordering::Acquire) {
        return;
    }
    let rsp: u64;
    // SAFETY: reads the stack pointer.
    unsafe { std::arch::asm!("mov {}, rsp", out(reg) rsp, options(nomem, nostack, preserves_flags)) };
    let base = rsp & !(ALT_STACK_SIZE - 1);
    if registered(base) {
        selector(base).store(ALLOW, Ordering::Relaxed);
    }
}

/// Lets the thread whose alternate stack is at `alt_stack_base` make system calls.
pub fn allow(alt_stack_base: u64) {
    set(alt_stack_base, ALLOW);
}

/// Last thing before the thread returns into enclave code: system calls become SIGSYS.
pub fn block(alt_stack_base: u64) {
    set(alt_stack_base, BLOCK);
}

fn set(alt_stack_base: u64, value: u8) {
    if alt_stack_base != 0 && registered(alt_stack_base) {
        selector(alt_stack_base).store(value, Ordering::Relaxed);
    }
}
