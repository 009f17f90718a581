//! `syscall` inside an enclave raises #UD on SGX hardware. Natively it would simply run, so
//! while a thread executes enclave code the kernel's Syscall User Dispatch (Linux 5.11+) is
//! set to BLOCK for it: a system call there becomes SIGSYS, which the handler turns into the
//! #UD AEX.
//!
//! The selector byte the kernel consults lives in the header of the thread's alternate
//! signal stack ([`crate::alt_stack`]). Every emulator handler runs on that stack and first
//! sets the selector to ALLOW — before any system call, and without one: the header is
//! found from the stack pointer. The handler sets BLOCK again as its last step when it
//! returns into enclave code, and so does the software EENTER. The signal trampoline's
//! `rt_sigreturn` is the one system call that runs while BLOCK is set: the C library's
//! restorer is the always-allowed code region.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use libc::c_int;

use crate::alt_stack;

/// The selector values of the prctl interface.
const ALLOW: u8 = 0;
const BLOCK: u8 = 1;

/// `PR_SET_SYSCALL_USER_DISPATCH` and its modes (prctl.h).
const PR_SET_SYSCALL_USER_DISPATCH: c_int = 59;
const PR_SYS_DISPATCH_OFF: libc::c_ulong = 0;
const PR_SYS_DISPATCH_ON: libc::c_ulong = 1;

/// `si_code` of a SIGSYS raised by Syscall User Dispatch.
pub const SYS_USER_DISPATCH: c_int = 2;

/// Whether any thread has dispatch on (handlers skip the lookup otherwise).
static ACTIVE: AtomicBool = AtomicBool::new(false);

/// The C library's signal restorer (its `rt_sigreturn`), from the kernel's record of an
/// installed emulator handler: the code region dispatch always allows.
fn restorer() -> Option<u64> {
    static RESTORER: OnceLock<Option<u64>> = OnceLock::new();
    *RESTORER.get_or_init(|| {
        use crate::sys::{KernelSigaction, SA_RESTORER};
        let mut action = KernelSigaction { handler: 0, flags: 0, restorer: 0, mask: 0 };
        // SAFETY: queries the SIGILL disposition into a structure of the kernel's layout.
        let ret = unsafe {
            libc::syscall(libc::SYS_rt_sigaction, libc::SIGILL, std::ptr::null::<KernelSigaction>(), &mut action, 8)
        };
        let has_restorer = action.flags & SA_RESTORER != 0 && action.restorer != 0;
        (ret == 0 && has_restorer).then_some(action.restorer)
    })
}

/// Turns dispatch on for the calling thread, with its selector in the header of its
/// alternate stack at `base` (ALLOW for now). Best effort: without kernel support, or
/// without a restorer to exempt, `syscall` in enclave code keeps running natively.
pub fn enable(base: u64) {
    let (Some(restorer), Some(header)) = (restorer(), alt_stack::header(base)) else { return };
    header.selector.store(ALLOW, Ordering::Relaxed);
    // SAFETY: the selector stays mapped until `disable` (the thread's exit path).
    let ret =
        unsafe { libc::prctl(PR_SET_SYSCALL_USER_DISPATCH, PR_SYS_DISPATCH_ON, restorer, 16 as libc::c_ulong, base) };
    if ret == 0 {
        ACTIVE.store(true, Ordering::Release);
    }
}

/// Turns dispatch off for the calling thread before its alternate stack (holding the
/// selector) is freed: the kernel reads the selector on every system call, and an unmapped
/// one kills the thread.
pub fn disable() {
    if ACTIVE.load(Ordering::Acquire) {
        // SAFETY: PR_SYS_DISPATCH_OFF takes no pointers.
        unsafe { libc::prctl(PR_SET_SYSCALL_USER_DISPATCH, PR_SYS_DISPATCH_OFF, 0, 0, 0) };
    }
}

/// First thing in every emulator handler: let this thread make system calls again.
#[inline(always)]
pub fn allow_in_handler() {
    if ACTIVE.load(Ordering::Acquire)
        && let Some(header) = alt_stack::current_header()
    {
        header.selector.store(ALLOW, Ordering::Relaxed);
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
    if ACTIVE.load(Ordering::Acquire)
        && let Some(header) = alt_stack::header(alt_stack_base)
    {
        header.selector.store(value, Ordering::Relaxed);
    }
}
