//! The fuzzer's FFI edge: the system calls it aims at `/dev/sgx_enclave` (through the C
//! library, so that `sgxemu run`'s interposers see them exactly as they see any program's),
//! anonymous memory it owns, and `__vdso_sgx_enter_enclave`.
//!
//! Every function returns the kernel's answer as a value: `Ok(value)` or `Err(errno)`.
//! Pointers handed to the kernel may be deliberately bad (that is the point of a fuzzer);
//! the kernel — or the emulated driver — must answer EFAULT for them, never touch memory
//! the process does not own.

use std::ffi::CStr;

use sgxemu_uapi::SgxEnclaveRun;

/// An errno value.
pub type Errno = i32;

/// The calling thread's errno after a failed call.
fn errno() -> Errno {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// `open(path, flags)`.
pub fn open(path: &CStr, flags: i32) -> Result<i32, Errno> {
    // SAFETY: `path` is a NUL-terminated string that outlives the call.
    let fd = unsafe { libc::open(path.as_ptr(), flags | libc::O_CLOEXEC) };
    if fd < 0 { Err(errno()) } else { Ok(fd) }
}

/// `close(fd)`.
pub fn close(fd: i32) -> Result<(), Errno> {
    // SAFETY: closing a descriptor has no memory-safety preconditions; the caller owns `fd`.
    if unsafe { libc::close(fd) } < 0 { Err(errno()) } else { Ok(()) }
}

/// `dup(fd)`.
pub fn dup(fd: i32) -> Result<i32, Errno> {
    // SAFETY: dup has no memory-safety preconditions.
    let new = unsafe { libc::dup(fd) };
    if new < 0 { Err(errno()) } else { Ok(new) }
}

/// `ioctl(fd, cmd, arg)`: `arg` is an address the kernel may read or write as `cmd` says;
/// it may be bad on purpose.
pub fn ioctl(fd: i32, cmd: u32, arg: u64) -> Result<i32, Errno> {
    // SAFETY: the kernel validates `arg` (copy_from_user/copy_to_user) and answers EFAULT for
    // bad addresses; good addresses point at memory this fuzzer owns and expects written.
    let ret = unsafe { libc::ioctl(fd, libc::c_ulong::from(cmd), arg) };
    if ret < 0 { Err(errno()) } else { Ok(ret) }
}

/// `mmap(addr, len, prot, flags, fd, offset)`; the address on success.
pub fn mmap(addr: u64, len: u64, prot: i32, flags: i32, fd: i32, offset: i64) -> Result<u64, Errno> {
    // SAFETY: a MAP_FIXED mapping only ever targets ranges this fuzzer reserved for itself
    // (callers keep to their own reservations); other mappings let the kernel choose.
    let ret = unsafe { libc::mmap(addr as *mut libc::c_void, len as usize, prot, flags, fd, offset) };
    if ret == libc::MAP_FAILED { Err(errno()) } else { Ok(ret as u64) }
}

/// `munmap(addr, len)`.
pub fn munmap(addr: u64, len: u64) -> Result<(), Errno> {
    // SAFETY: callers unmap only ranges they mapped (their own reservations).
    if unsafe { libc::munmap(addr as *mut libc::c_void, len as usize) } < 0 { Err(errno()) } else { Ok(()) }
}

/// `mprotect(addr, len, prot)`.
pub fn mprotect(addr: u64, len: u64, prot: i32) -> Result<(), Errno> {
    // SAFETY: callers change only ranges inside their own reservations.
    if unsafe { libc::mprotect(addr as *mut libc::c_void, len as usize, prot) } < 0 { Err(errno()) } else { Ok(()) }
}

/// Fresh anonymous private memory (the kernel chooses where), `prot` protections.
pub fn anonymous(len: u64, prot: i32) -> Result<u64, Errno> {
    mmap(0, len, prot, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)
}

/// Reserves `pages` pages of PROT_NONE address space plus `align` bytes of slack; (the first
/// `align`-aligned address in it, the mapping's start).
pub fn reserve_aligned(pages: u64, align: u64) -> Result<(u64, u64), String> {
    let len = pages * 4096 + align;
    let start = anonymous(len, libc::PROT_NONE).map_err(|e| format!("reserving address space: errno {e}"))?;
    Ok((start.next_multiple_of(align), start))
}

/// Copies `bytes` to address `addr` of this process.
///
/// # Safety
/// `addr .. addr + bytes.len()` must be writable memory this fuzzer owns and no Rust
/// reference aliases.
pub unsafe fn write_bytes(addr: u64, bytes: &[u8]) {
    // SAFETY: the caller guarantees the destination is owned, writable and unaliased.
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), addr as *mut u8, bytes.len()) };
}

/// Reads `len` bytes at `addr` of this process.
///
/// # Safety
/// `addr .. addr + len` must be readable memory this fuzzer owns.
pub unsafe fn read_bytes(addr: u64, len: usize) -> Vec<u8> {
    // SAFETY: the caller guarantees the source is owned and readable.
    unsafe { std::slice::from_raw_parts(addr as *const u8, len) }.to_vec()
}

/// `__vdso_sgx_enter_enclave`, found as the kernel's selftests find it: the vDSO image from
/// `getauxval(AT_SYSINFO_EHDR)` and its dynamic symbol table.
#[derive(Clone, Copy, Debug)]
pub struct Vdso {
    enter: u64,
}

impl Vdso {
    /// Looks the entry point up; `None` when the vDSO has none (no SGX, or not under `sgxemu run`).
    pub fn find() -> Option<Vdso> {
        sgxemu_enclave::vdso::find_symbol(c"__vdso_sgx_enter_enclave").map(|enter| Vdso { enter })
    }

    /// Calls the entry point with leaf `function`; its return value (0, or -EINVAL).
    pub fn enter(&self, rdi: u64, rsi: u64, rdx: u64, function: u32, run: &mut SgxEnclaveRun) -> i32 {
        // SAFETY: `enter` is the address of the vDSO's `__vdso_sgx_enter_enclave` (spec §1.5);
        // the trampoline restores every callee-saved register whatever the enclave did, the
        // enclave's memory writes go only to its own pages and to the address in RDX (a
        // scratch cell of the caller), and `run` is a valid, exclusively borrowed run
        // structure.
        unsafe { sgxemu_enclave::vdso::call(self.enter, rdi, rsi, rdx, function, 0, 0, run) }
    }
}

/// Ends the process at once with `code`, running no exit handlers (a watchdog's exit while
/// other threads may be stuck inside the emulator's locks).
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit has no preconditions and does not return.
    unsafe { libc::_exit(code) }
}
