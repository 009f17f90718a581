//! The interrupted thread's state in a signal frame (`ucontext_t`), as the processor
//! model's registers and XSAVE image.

use libc::{REG_EFL, REG_R8, REG_R9, REG_R10, REG_R11, REG_R12, REG_R13, REG_R14, REG_R15, REG_RAX, REG_RBP};
use libc::{REG_RBX, REG_RCX, REG_RDI, REG_RDX, REG_RIP, REG_RSI, REG_RSP, ucontext_t};
use sgxemu_cpu::Regs;

/// Offset of `_fpx_sw_bytes` in the FXSAVE area of a signal frame.
const SW_BYTES: usize = 464;
/// `FP_XSTATE_MAGIC1`: the frame holds a full XSAVE area, not just FXSAVE.
const XSTATE_MAGIC1: u32 = 0x4650_5853;
const FXSAVE_SIZE: usize = 512;

/// A signal frame's machine context.
#[allow(missing_debug_implementations, reason = "wraps a raw kernel frame")]
pub struct Frame<'a> {
    uc: &'a mut ucontext_t,
}

impl<'a> Frame<'a> {
    /// Wraps the `ucontext_t` a SA_SIGINFO handler received.
    ///
    /// # Safety
    /// `uc` must be the context pointer of the signal being handled.
    pub unsafe fn new(uc: *mut libc::c_void) -> Self {
        // SAFETY: the caller passes the handler's own ucontext, valid for the handler's run.
        Frame { uc: unsafe { &mut *uc.cast::<ucontext_t>() } }
    }

    fn reg(&self, index: libc::c_int) -> u64 {
        self.uc.uc_mcontext.gregs[index as usize] as u64
    }

    fn set_reg(&mut self, index: libc::c_int, value: u64) {
        self.uc.uc_mcontext.gregs[index as usize] = value as i64;
    }

    /// RIP at the signal.
    pub fn rip(&self) -> u64 {
        self.reg(REG_RIP)
    }

    /// Sets RIP.
    pub fn set_rip(&mut self, rip: u64) {
        self.set_reg(REG_RIP, rip);
    }

    /// The trap number the kernel recorded.
    pub fn trapno(&self) -> u64 {
        self.reg(libc::REG_TRAPNO)
    }

    /// The hardware error code the kernel recorded.
    pub fn err(&self) -> u64 {
        self.reg(libc::REG_ERR)
    }

    /// The general-purpose registers (FS/GS bases are not in a signal frame: the caller
    /// fills them).
    pub fn regs(&self) -> Regs {
        Regs {
            rax: self.reg(REG_RAX),
            rbx: self.reg(REG_RBX),
            rcx: self.reg(REG_RCX),
            rdx: self.reg(REG_RDX),
            rsp: self.reg(REG_RSP),
            rbp: self.reg(REG_RBP),
            rsi: self.reg(REG_RSI),
            rdi: self.reg(REG_RDI),
            r8: self.reg(REG_R8),
            r9: self.reg(REG_R9),
            r10: self.reg(REG_R10),
            r11: self.reg(REG_R11),
            r12: self.reg(REG_R12),
            r13: self.reg(REG_R13),
            r14: self.reg(REG_R14),
            r15: self.reg(REG_R15),
            rip: self.reg(REG_RIP),
            rflags: self.reg(REG_EFL),
            fsbase: 0,
            gsbase: 0,
        }
    }

    /// Loads `regs` into the frame (sigreturn restores them).
    pub fn set_regs(&mut self, regs: &Regs) {
        for (index, value) in [
            (REG_RAX, regs.rax),
            (REG_RBX, regs.rbx),
            (REG_RCX, regs.rcx),
            (REG_RDX, regs.rdx),
            (REG_RSP, regs.rsp),
            (REG_RBP, regs.rbp),
            (REG_RSI, regs.rsi),
            (REG_RDI, regs.rdi),
            (REG_R8, regs.r8),
            (REG_R9, regs.r9),
            (REG_R10, regs.r10),
            (REG_R11, regs.r11),
            (REG_R12, regs.r12),
            (REG_R13, regs.r13),
            (REG_R14, regs.r14),
            (REG_R15, regs.r15),
            (REG_RIP, regs.rip),
            (REG_EFL, regs.rflags),
        ] {
            self.set_reg(index, value);
        }
    }

    /// The frame's XSAVE area (standard format), if the kernel saved one.
    pub fn xsave_area(&mut self) -> Option<&mut [u8]> {
        let fpregs = self.uc.uc_mcontext.fpregs.cast::<u8>();
        if fpregs.is_null() {
            return None;
        }
        // SAFETY: the kernel's frame holds at least the 512-byte FXSAVE area at `fpregs`.
        let fx = unsafe { std::slice::from_raw_parts(fpregs, FXSAVE_SIZE) };
        let magic = u32::from_le_bytes(fx[SW_BYTES..SW_BYTES + 4].try_into().ok()?);
        let size = if magic == XSTATE_MAGIC1 {
            u32::from_le_bytes(fx[SW_BYTES + 16..SW_BYTES + 20].try_into().ok()?) as usize
        } else {
            FXSAVE_SIZE
        };
        // SAFETY: with magic1 present the kernel reserved `xstate_size` bytes at `fpregs`.
        Some(unsafe { std::slice::from_raw_parts_mut(fpregs, size) })
    }

    /// Copies the interrupted thread's extended state into `image` (an XSAVE image).
    pub fn save_xstate(&mut self, image: &mut [u8]) {
        if let Some(area) = self.xsave_area() {
            let n = area.len().min(image.len());
            image[..n].copy_from_slice(&area[..n]);
        }
    }

    /// Makes sigreturn load `image` as the extended state. XSTATE_BV travels with the
    /// image: the kernel ignores components whose bit is clear.
    pub fn load_xstate(&mut self, image: &[u8]) {
        if let Some(area) = self.xsave_area() {
            let n = area.len().min(image.len());
            area[..n].copy_from_slice(&image[..n]);
        }
    }

    /// The signal mask sigreturn will install.
    pub fn sigmask(&self) -> libc::sigset_t {
        self.uc.uc_sigmask
    }

    /// Sets the signal mask sigreturn will install.
    pub fn set_sigmask(&mut self, mask: libc::sigset_t) {
        self.uc.uc_sigmask = mask;
    }

    /// Sets the alternate stack sigreturn will reinstall.
    pub fn set_altstack(&mut self, stack: libc::stack_t) {
        self.uc.uc_stack = stack;
    }
}
