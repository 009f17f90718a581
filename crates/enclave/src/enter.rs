//! Entering an enclave through `__vdso_sgx_enter_enclave`, with its results — a normal
//! EEXIT, an exception the vDSO reports, a user-handler decision — as Rust values.

use std::fmt;

use sgxemu_arch::{PfErrorCode, Vector};
use sgxemu_uapi::{EENTER, EEXIT, ERESUME, SgxEnclaveRun};

use crate::device::Errno;
use crate::loader::Enclave;
use crate::vdso;

/// The registers the vDSO passes through to the enclave (and back to a user handler).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Registers {
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub r8: u64,
    pub r9: u64,
}

/// An exception inside the enclave, as the vDSO reports it (`sgx_enclave_run.exception_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EnclaveException {
    /// `sgx_enclave_run.function`: EAX at the exception — ERESUME (3), which the AEX leaves
    /// in EAX, for an exception inside the enclave; EENTER/ERESUME for a fault on the leaf
    /// itself (e.g. an invalid TCS).
    pub leaf: u32,
    /// The exception vector (14 = #PF, 6 = #UD, 13 = #GP, …).
    pub vector: u16,
    /// Its error code (for #PF: bit 15 = SGX, i.e. an EPCM violation).
    pub error_code: u16,
    /// The faulting linear address (#PF only).
    pub address: u64,
}

impl EnclaveException {
    /// Whether this is a page fault the EPCM caused (error-code bit 15).
    pub fn is_epcm_fault(&self) -> bool {
        self.is_page_fault() && PfErrorCode::from_bits_retain(u32::from(self.error_code)).contains(PfErrorCode::SGX)
    }

    fn is_page_fault(&self) -> bool {
        self.vector == u16::from(Vector::Pf as u8)
    }
}

/// What an exception vector is called (the mnemonic from the architectural types).
fn vector_name(vector: u16) -> String {
    let Some(v) = u8::try_from(vector).ok().and_then(|v| Vector::try_from(v).ok()) else {
        return "exception".to_owned();
    };
    let what = match v {
        Vector::De => "divide error",
        Vector::Db => "debug",
        Vector::Bp => "breakpoint",
        Vector::Ud => "invalid opcode",
        Vector::Gp => "general protection",
        Vector::Pf => "page fault",
        Vector::Mf => "x87 error",
        Vector::Ac => "alignment check",
        Vector::Xm => "SIMD exception",
        Vector::Cp => "control protection",
        _ => "exception",
    };
    format!("{} {what}", v.name())
}

impl fmt::Display for EnclaveException {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (vector {})", vector_name(self.vector), self.vector)?;
        if self.is_page_fault() {
            write!(f, " at {:#x}, error code {:#x}", self.address, self.error_code)?;
            if self.is_epcm_fault() {
                f.write_str(" (EPCM)")?;
            }
        } else if self.error_code != 0 {
            write!(f, ", error code {:#x}", self.error_code)?;
        }
        Ok(())
    }
}

/// Why an enclave call did not end in EEXIT.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EnterError {
    /// The enclave raised an exception (delivered by AEX; the TCS's CSSA went up).
    #[error("enclave exception: {0}")]
    Exception(EnclaveException),
    /// The vDSO refused the call (EINVAL: bad leaf or reserved fields) or a user handler
    /// returned this negative value.
    #[error("__vdso_sgx_enter_enclave failed: {0}")]
    Vdso(Errno),
    /// A user handler returned a positive value that is not EENTER or ERESUME.
    #[error("user handler returned {0}, which is neither EENTER nor ERESUME")]
    Handler(i32),
}

/// What a user handler sees after each exit from the enclave.
#[derive(Clone, Copy, Debug)]
pub struct Exit {
    /// Registers as the enclave left them.
    pub regs: Registers,
    /// The untrusted stack pointer at the exit.
    pub rsp: u64,
    /// `EEXIT` for a normal exit, otherwise the leaf that was interrupted by `exception`.
    pub function: u32,
    /// The exception, when `function` is not EEXIT.
    pub exception: Option<EnclaveException>,
}

/// A user handler's decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Return from the vDSO call with this value (0 or a negative errno).
    Return(i32),
    /// EENTER again (e.g. into the enclave's exception handler).
    Enter,
    /// ERESUME the interrupted enclave thread.
    Resume,
}

type Handler<'a> = &'a mut dyn FnMut(&Exit) -> Next;

/// The vDSO user handler: forwards to the Rust closure in `run.user_data`.
extern "C" fn user_handler(rdi: u64, rsi: u64, rdx: u64, rsp: u64, r8: u64, r9: u64, run: *mut SgxEnclaveRun) -> i32 {
    // SAFETY: the vDSO passes back the run structure `call` gave it, whose user_data
    // points at the handler borrowed for the duration of that call.
    let run = unsafe { &*run };
    // SAFETY: as above; the closure is only reached through this pointer while `call` runs.
    let handler = unsafe { &mut *(run.user_data as *mut Handler<'_>) };
    let exit =
        Exit { regs: Registers { rdi, rsi, rdx, r8, r9 }, rsp, function: run.function, exception: exception_of(run) };
    // A panic must not unwind into the vDSO's frames.
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler(&exit))) {
        Ok(Next::Return(value)) => value,
        Ok(Next::Enter) => EENTER as i32,
        Ok(Next::Resume) => ERESUME as i32,
        Err(_) => -libc::ECANCELED,
    }
}

fn exception_of(run: &SgxEnclaveRun) -> Option<EnclaveException> {
    (run.function != EEXIT).then_some(EnclaveException {
        leaf: run.function,
        vector: run.exception_vector,
        error_code: run.exception_error_code,
        address: run.exception_addr,
    })
}

impl Enclave {
    /// EENTERs the enclave on `tcs` with `regs` and returns at its EEXIT. (The registers
    /// the enclave exits with reach only a user handler: see
    /// [`enter_with_handler`](Self::enter_with_handler).)
    ///
    /// # Errors
    /// [`EnterError::Exception`] when the enclave raised an exception.
    pub fn enter(&self, tcs: u64, regs: Registers) -> Result<(), EnterError> {
        self.call(tcs, EENTER, regs, None)
    }

    /// EENTERs with a user handler the vDSO calls after every exit (EEXIT or exception);
    /// the handler decides whether to return, EENTER again or ERESUME.
    ///
    /// This is the way to resume after an exception: ERESUME must come from the same vDSO
    /// call, because the enclave's EEXIT returns into that call's frame (its saved RBP and
    /// return address), so the handler fixes the cause — possibly calling into the enclave
    /// on another TCS — and answers [`Next::Resume`].
    ///
    /// # Errors
    /// As [`enter`](Self::enter); a handler's negative return value comes back as
    /// [`EnterError::Vdso`].
    pub fn enter_with_handler(
        &self,
        tcs: u64,
        regs: Registers,
        handler: &mut dyn FnMut(&Exit) -> Next,
    ) -> Result<(), EnterError> {
        self.call(tcs, EENTER, regs, Some(handler))
    }

    fn call(&self, tcs: u64, leaf: u32, regs: Registers, handler: Option<Handler<'_>>) -> Result<(), EnterError> {
        // Only EENTER starts a call; ERESUME is a handler's answer (see enter_with_handler).
        debug_assert_eq!(leaf, EENTER);
        let mut handler = handler;
        let mut run = SgxEnclaveRun { tcs, ..SgxEnclaveRun::default() };
        if let Some(handler) = handler.as_mut() {
            run.user_handler = user_handler as *const () as u64;
            run.user_data = handler as *mut Handler<'_> as u64;
        }
        let Registers { rdi, rsi, rdx, r8, r9 } = regs;
        // SAFETY: the entry point is the device's `__vdso_sgx_enter_enclave`; the wrapper
        // keeps the callee-saved registers; `run` (and the handler it points to) outlive
        // the call; the enclave only reaches memory its own code addresses.
        let ret = unsafe { vdso::call(self.device().enter_enclave(), rdi, rsi, rdx, leaf, r8, r9, &mut run) };
        match (ret, exception_of(&run)) {
            (0, None) => Ok(()),
            // Without a handler the vDSO reports an exception as -EFAULT; a handler that
            // returned 0 after one is reported the same way.
            (0, Some(exception)) => Err(EnterError::Exception(exception)),
            (ret, Some(exception)) if ret == -libc::EFAULT => Err(EnterError::Exception(exception)),
            (ret, _) if ret < 0 => Err(EnterError::Vdso(Errno(-ret))),
            (ret, _) => Err(EnterError::Handler(ret)),
        }
    }
}
