//! The driver's `copy_from_user`/`copy_to_user` as the kernel does them: a plain copy whose
//! one faulting instruction has an exception-table entry. A bad user pointer makes that
//! instruction fault; the emulator's SIGSEGV/SIGBUS handler sees the fault at
//! [`fault_rip`] and resumes at the fixup, which returns the bytes not copied.
//!
//! This replaced `process_vm_readv`/`process_vm_writev` on the ioctl paths: pinning the
//! pages of our own process through GUP, once per page, cost more than the copy itself
//! (a fifth of an enclave build's time).
//!
//! The fixup needs the emulator's handler to run, so [`Copier::for_this_thread`] only
//! chooses the plain copy where a fault would reach it: SIGSEGV and SIGBUS unblocked and
//! the handler installed. Elsewhere (a program calling an ioctl from its own fault handler,
//! or a thread that blocks every signal) copies go through the kernel as before.

use std::io;

use libc::c_int;

use crate::sys;

// rdi = destination, rsi = source, rdx = length; returns the bytes not copied (0 on
// success). `rep movsb` leaves RCX = bytes remaining when it faults, and the fault is
// reported at the instruction itself.
std::arch::global_asm!(
    ".pushsection .text.sgxemu_user_copy,\"ax\",@progbits",
    ".p2align 4",
    ".globl sgxemu_user_copy",
    ".hidden sgxemu_user_copy",
    "sgxemu_user_copy:",
    "mov rcx, rdx",
    ".globl sgxemu_user_copy_insn",
    ".hidden sgxemu_user_copy_insn",
    "sgxemu_user_copy_insn:",
    "rep movsb",
    "xor eax, eax",
    "ret",
    ".globl sgxemu_user_copy_fixup",
    ".hidden sgxemu_user_copy_fixup",
    "sgxemu_user_copy_fixup:",
    "mov rax, rcx",
    "ret",
    ".popsection",
);

unsafe extern "C" {
    fn sgxemu_user_copy(dst: *mut u8, src: *const u8, len: usize) -> usize;
    static sgxemu_user_copy_insn: u8;
    static sgxemu_user_copy_fixup: u8;
}

/// The address of the only instruction of the copy that may fault on user memory.
pub fn fault_rip() -> u64 {
    // SAFETY: a label defined by the global_asm above; only its address is taken.
    unsafe { &sgxemu_user_copy_insn as *const u8 as u64 }
}

/// Where a fault at [`fault_rip`] resumes.
pub fn fixup_rip() -> u64 {
    // SAFETY: as in `fault_rip`.
    unsafe { &sgxemu_user_copy_fixup as *const u8 as u64 }
}

/// How one system call's user copies are done (chosen once per call: the signal mask
/// cannot change while the emulator runs it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Copier {
    /// A plain copy with its exception-table fixup.
    Direct,
    /// `process_vm_readv`/`process_vm_writev` on process `pid` (this one).
    Kernel {
        /// This process's id.
        pid: i32,
    },
}

impl Copier {
    /// The fastest copier that is safe on the calling thread now.
    pub fn for_this_thread(pid: i32) -> Self {
        match sys::current_signal_mask() {
            Some(mask) => Self::for_mask(pid, &mask),
            None => Copier::Kernel { pid },
        }
    }

    /// The fastest copier that is safe on the calling thread while its signal mask blocks
    /// what `mask` blocks of SIGSEGV and SIGBUS (for a caller that knows its mask already).
    pub fn for_mask(pid: i32, mask: &libc::sigset_t) -> Self {
        if fixup_reachable(mask) { Copier::Direct } else { Copier::Kernel { pid } }
    }

    /// Copies `buf.len()` bytes from this process's address `addr`; EFAULT if any is
    /// unreadable (then `buf` holds an unspecified prefix).
    pub fn read(self, addr: u64, buf: &mut [u8]) -> io::Result<()> {
        match self {
            Copier::Direct => direct(buf.as_mut_ptr(), addr as *const u8, buf.len()),
            Copier::Kernel { pid } => sys::read_memory_of(pid, addr, buf),
        }
    }

    /// Copies `data` to this process's address `addr`; EFAULT if any byte is unwritable
    /// (then a prefix may have been written, as with the kernel's copy_to_user).
    pub fn write(self, addr: u64, data: &[u8]) -> io::Result<()> {
        match self {
            Copier::Direct => direct(addr as *mut u8, data.as_ptr(), data.len()),
            Copier::Kernel { pid } => sys::write_memory_of(pid, addr, data),
        }
    }
}

fn direct(dst: *mut u8, src: *const u8, len: usize) -> io::Result<()> {
    // SAFETY: one side is a Rust buffer of `len` bytes borrowed by the caller; the other is
    // a user address that may be anything: a fault on it is caught by the handler (the
    // caller checked with `fixup_reachable` that it runs) and ends the copy with the
    // remaining count. The user range is the program's memory, which it handed to the
    // system call (as with process_vm_readv before, the emulator never holds a Rust
    // reference into it).
    let left = unsafe { sgxemu_user_copy(dst, src, len) };
    if left == 0 { Ok(()) } else { Err(io::Error::from_raw_os_error(libc::EFAULT)) }
}

/// Whether a fault in the copy would reach the emulator's handler: neither SIGSEGV nor
/// SIGBUS blocked by `mask`, and the handler still installed for both.
fn fixup_reachable(mask: &libc::sigset_t) -> bool {
    [libc::SIGSEGV, libc::SIGBUS].into_iter().all(|sig| !signal_in(mask, sig) && crate::signals::handles(sig))
}

fn signal_in(mask: &libc::sigset_t, sig: c_int) -> bool {
    // SAFETY: sigismember only reads an initialised set.
    unsafe { libc::sigismember(mask, sig) == 1 }
}
