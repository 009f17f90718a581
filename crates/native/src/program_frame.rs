//! A signal frame for the program's handler, built where the kernel would have put it: on
//! the interrupted stack, or on the program's own alternate stack for an SA_ONSTACK handler.
//!
//! Wrapped handlers (`signals::wrap_async`) are delivered on the emulator's alternate stack,
//! as they must be while enclave code runs. Outside enclave code the program's handler must
//! not run there: it may enter an enclave, and the emulator's next signal (the ENCLU that
//! leaves it) would then be delivered at the top of the emulator's stack, over the frames
//! still live on it; and on hardware it runs on the program's stack. So the wrapper copies
//! the kernel's frame (ucontext, siginfo, XSAVE area) to that stack, makes its own frame
//! return into the program's handler there, and returns: the emulator's stack is free again
//! before any program code runs. The program's handler returns through the copied frame's
//! restorer (`rt_sigreturn`), which resumes the interrupted code with its own mask.

use libc::{c_int, c_void, siginfo_t};

use crate::context::Frame;

/// The kernel's `struct ucontext` on x86-64 (flags, link, stack, sigcontext, one word of
/// mask): what `rt_sigreturn` reads; the C library's `ucontext_t` is longer.
const KERNEL_UCONTEXT: usize = 304;
const SIGINFO: usize = 128;
/// The x86-64 ABI's red zone below the interrupted stack pointer.
pub const RED_ZONE: u64 = 128;
/// `struct _fpx_sw_bytes` in the FXSAVE area's software-reserved bytes.
const SW_BYTES: usize = 464;
const FP_XSTATE_MAGIC1: u32 = 0x4650_5853;
const FXSAVE_SIZE: usize = 512;
const EFLAGS_TF: u64 = 1 << 8;
const EFLAGS_DF: u64 = 1 << 10;
const EFLAGS_RF: u64 = 1 << 16;

/// The bytes of the frame's XSAVE area that sigreturn reads (the software-reserved
/// `extended_size`, trailer included), and where it is.
fn fp_state(uc: *const libc::ucontext_t) -> Option<(*const u8, usize)> {
    // SAFETY: the kernel's ucontext for the signal being handled.
    let fpregs = unsafe { (*uc).uc_mcontext.fpregs }.cast::<u8>().cast_const();
    if fpregs.is_null() {
        return None;
    }
    // SAFETY: the kernel saved at least the 512-byte FXSAVE area at `fpregs`.
    let word = |at: usize| unsafe { fpregs.add(at).cast::<u32>().read_unaligned() };
    let size = if word(SW_BYTES) == FP_XSTATE_MAGIC1 { word(SW_BYTES + 4) as usize } else { FXSAVE_SIZE };
    Some((fpregs, size))
}

/// Makes the signal being handled (`uc` its kernel frame, on the emulator's stack) go to
/// the program's `handler` on `stack_top` when the emulator's handler returns: the frame is
/// copied there with `program_stack` as its alternate stack (what the program's handler
/// returns to), and the kernel frame now resumes at `handler` with `handler_mask`.
///
/// # Safety
/// `info` and `uc` are the signal's siginfo and kernel frame, the caller's handler returns
/// right after this, and `stack_top` is where the kernel would have put the program's frame
/// (writable memory of the program's below it, as the kernel assumes).
pub unsafe fn redirect(
    sig: c_int,
    info: *const siginfo_t,
    uc: *mut c_void,
    handler: usize,
    stack_top: u64,
    handler_mask: libc::sigset_t,
    program_stack: libc::stack_t,
) {
    let kernel_uc = uc.cast::<libc::ucontext_t>();
    // SAFETY: the kernel's frame starts with the restorer's address, right below `uc`.
    let restorer = unsafe { uc.cast::<u64>().sub(1).read() };
    let mut sp = stack_top;
    let fp = fp_state(kernel_uc).map(|(from, size)| {
        sp = (sp - size as u64) & !63;
        // SAFETY: the caller vouches for the stack below `stack_top`; sizes as the kernel's.
        unsafe { std::ptr::copy_nonoverlapping(from, sp as *mut u8, size) };
        sp
    });
    // Restorer, ucontext and siginfo as the kernel lays them out; at the handler's entry
    // RSP + 8 is 16-byte aligned, as after a call.
    let frame = ((sp - (8 + KERNEL_UCONTEXT + SIGINFO) as u64) & !15) - 8;
    let (uc_copy, info_copy) = (frame + 8, frame + 8 + KERNEL_UCONTEXT as u64);
    // SAFETY: as above; the source ranges are the kernel's frame.
    unsafe {
        (frame as *mut u64).write(restorer);
        std::ptr::copy_nonoverlapping(uc.cast::<u8>(), uc_copy as *mut u8, KERNEL_UCONTEXT);
        std::ptr::copy_nonoverlapping(info.cast::<u8>(), info_copy as *mut u8, SIGINFO);
        let copy = uc_copy as *mut libc::ucontext_t;
        // The copy's own fields: its XSAVE area, and the alternate stack to reinstall.
        std::ptr::addr_of_mut!((*copy).uc_mcontext.fpregs).write(fp.map_or(std::ptr::null_mut(), |a| a as *mut _));
        std::ptr::addr_of_mut!((*copy).uc_stack).write(program_stack);
    }
    // SAFETY: the caller passes this signal's kernel frame.
    let mut kernel = unsafe { Frame::new(uc) };
    let mut regs = kernel.regs();
    (regs.rip, regs.rsp, regs.rdi, regs.rsi, regs.rdx, regs.rax) =
        (handler as u64, frame, sig as u64, info_copy, uc_copy, 0);
    regs.rflags &= !(EFLAGS_TF | EFLAGS_DF | EFLAGS_RF);
    kernel.set_regs(&regs);
    kernel.set_sigmask(handler_mask);
}
