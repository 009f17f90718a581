//! The library `sgxemu run` preloads into a program: the C library entry points through
//! which programs reach `/dev/sgx_enclave`, `/dev/sgx_provision`, the vDSO and signal
//! dispositions, connected to the emulator (`sgxemu-native`). Every call that is not about
//! the emulated devices goes on to the C library unchanged.
//!
//! These functions are called by arbitrary C code before and after `main` (even from other
//! libraries' constructors, which run before ours), so each one starts the emulator lazily
//! and never panics.

#![allow(clippy::missing_safety_doc, reason = "C entry points with the C library's contracts")]

use std::ffi::CStr;

use libc::{c_char, c_int, c_uint, c_ulong, c_void, off_t};
use sgxemu_native::device::{ENCLAVE_PATH, PROVISION_PATH};
use sgxemu_native::{Engine, cpuid, enclu, real, signals, sys, vdso};

fn set_errno(errno: c_int) {
    // SAFETY: __errno_location returns this thread's errno slot.
    unsafe { *libc::__errno_location() = errno };
}

/// The emulated device `path` names, if any.
///
/// # Safety
/// `path` is null or a C string.
unsafe fn device_path(path: *const c_char) -> Option<&'static str> {
    if path.is_null() {
        return None;
    }
    // SAFETY: the caller passes a C string.
    match unsafe { CStr::from_ptr(path) }.to_bytes() {
        b"/dev/sgx_enclave" => Some(ENCLAVE_PATH),
        b"/dev/sgx_provision" => Some(PROVISION_PATH),
        _ => None,
    }
}

fn open_device(path: &str, flags: c_int) -> c_int {
    let engine = match Engine::start() {
        Ok(engine) => engine,
        Err(e) => {
            sys::stderr_line(&format!("sgxemu: cannot start the emulated SGX platform: {e}\n"));
            set_errno(libc::ENODEV);
            return -1;
        }
    };
    // A real descriptor keeps fd numbering, close and poll ordinary.
    // SAFETY: opens /dev/null with the caller's close-on-exec choice.
    let fd = unsafe { real::open(c"/dev/null".as_ptr(), libc::O_RDWR | (flags & libc::O_CLOEXEC), 0) };
    if fd >= 0 {
        engine.opened(path, fd);
    }
    fd
}

/// open(2).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn open(path: *const c_char, flags: c_int, mode: c_uint) -> c_int {
    // SAFETY: forwarded C contract.
    match unsafe { device_path(path) } {
        Some(device) => open_device(device, flags),
        // SAFETY: forwarded C contract.
        None => unsafe { real::open(path, flags, mode) },
    }
}

/// open64(2).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn open64(path: *const c_char, flags: c_int, mode: c_uint) -> c_int {
    // SAFETY: forwarded C contract.
    match unsafe { device_path(path) } {
        Some(device) => open_device(device, flags),
        // SAFETY: forwarded C contract.
        None => unsafe { real::open64(path, flags, mode) },
    }
}

/// The fortified open (`_FORTIFY_SOURCE`).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn __open_2(path: *const c_char, flags: c_int) -> c_int {
    // SAFETY: forwarded C contract (no O_CREAT, so no mode).
    unsafe { open(path, flags, 0) }
}

/// The fortified open64.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn __open64_2(path: *const c_char, flags: c_int) -> c_int {
    // SAFETY: forwarded C contract.
    unsafe { open64(path, flags, 0) }
}

/// openat(2).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn openat(dirfd: c_int, path: *const c_char, flags: c_int, mode: c_uint) -> c_int {
    // SAFETY: forwarded C contract; device paths are absolute, so `dirfd` does not matter.
    match unsafe { device_path(path) } {
        Some(device) => open_device(device, flags),
        // SAFETY: forwarded C contract.
        None => unsafe { real::openat(dirfd, path, flags, mode) },
    }
}

/// openat64.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn openat64(dirfd: c_int, path: *const c_char, flags: c_int, mode: c_uint) -> c_int {
    // SAFETY: forwarded C contract.
    unsafe { openat(dirfd, path, flags, mode) }
}

/// What `stat` says about an emulated device node: a character device, root-owned, 0600
/// (misc major 10, the minors Linux gives them).
fn device_stat(path: &str, buf: *mut libc::stat) -> c_int {
    // SAFETY: the caller's buffer is a `struct stat`.
    let st = unsafe { &mut *buf };
    // SAFETY: all-zero is a valid `struct stat`.
    *st = unsafe { std::mem::zeroed() };
    st.st_mode = libc::S_IFCHR | 0o600;
    st.st_nlink = 1;
    st.st_rdev = libc::makedev(10, if path == ENCLAVE_PATH { 125 } else { 126 });
    st.st_blksize = 4096;
    0
}

/// stat(2).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn stat(path: *const c_char, buf: *mut libc::stat) -> c_int {
    // SAFETY: forwarded C contract.
    match unsafe { device_path(path) } {
        Some(device) => device_stat(device, buf),
        // SAFETY: forwarded C contract.
        None => unsafe { real::stat(path, buf) },
    }
}

/// stat64 (the same struct on x86-64).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn stat64(path: *const c_char, buf: *mut libc::stat) -> c_int {
    // SAFETY: forwarded C contract.
    unsafe { stat(path, buf) }
}

/// lstat(2).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lstat(path: *const c_char, buf: *mut libc::stat) -> c_int {
    // SAFETY: forwarded C contract.
    match unsafe { device_path(path) } {
        Some(device) => device_stat(device, buf),
        // SAFETY: forwarded C contract.
        None => unsafe { real::lstat(path, buf) },
    }
}

/// fstatat(2).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fstatat(dirfd: c_int, path: *const c_char, buf: *mut libc::stat, flags: c_int) -> c_int {
    // SAFETY: forwarded C contract.
    match unsafe { device_path(path) } {
        Some(device) => device_stat(device, buf),
        // SAFETY: forwarded C contract.
        None => unsafe { real::fstatat(dirfd, path, buf, flags) },
    }
}

/// fstat(2): an emulated device's descriptor looks like the device node.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fstat(fd: c_int, buf: *mut libc::stat) -> c_int {
    match Engine::get().and_then(|e| e.devices.get(fd)) {
        Some(sgxemu_native::device::DeviceFile::Provision) => device_stat(PROVISION_PATH, buf),
        Some(_) => device_stat(ENCLAVE_PATH, buf),
        // SAFETY: forwarded C contract.
        // SAFETY: forwarded C contract.
        None => unsafe { real::fstat(fd, buf) },
    }
}

/// close(2).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn close(fd: c_int) -> c_int {
    if let Some(engine) = Engine::get() {
        engine.closed(fd);
    }
    // SAFETY: forwarded C contract.
    unsafe { real::close(fd) }
}

/// dup(2): a copy of a device descriptor is a device descriptor too.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dup(fd: c_int) -> c_int {
    // SAFETY: forwarded C contract.
    let new = unsafe { real::dup(fd) };
    duplicated(fd, new)
}

/// dup2(2).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dup2(fd: c_int, new: c_int) -> c_int {
    // SAFETY: forwarded C contract.
    let result = unsafe { real::dup2(fd, new) };
    duplicated(fd, result)
}

/// dup3(2).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dup3(fd: c_int, new: c_int, flags: c_int) -> c_int {
    // SAFETY: forwarded C contract.
    let result = unsafe { real::dup3(fd, new, flags) };
    duplicated(fd, result)
}

/// fcntl(2). Only F_DUPFD and F_DUPFD_CLOEXEC concern the emulator; every command takes at
/// most one integer or pointer argument, passed on as it came.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fcntl(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int {
    // SAFETY: forwarded C contract.
    let result = unsafe { real::fcntl(fd, cmd, arg) };
    fcntl_done(fd, cmd, result)
}

/// fcntl64: glibc's fcntl for programs built with 64-bit file offsets.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fcntl64(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int {
    // SAFETY: forwarded C contract.
    let result = unsafe { real::fcntl64(fd, cmd, arg) };
    fcntl_done(fd, cmd, result)
}

/// After fcntl `cmd` on `fd` returned `result`: a duplicated descriptor is registered.
fn fcntl_done(fd: c_int, cmd: c_int, result: c_int) -> c_int {
    if cmd == libc::F_DUPFD || cmd == libc::F_DUPFD_CLOEXEC { duplicated(fd, result) } else { result }
}

/// After a call that made `new` (if not negative, an error) a copy of descriptor `fd`.
fn duplicated(fd: c_int, new: c_int) -> c_int {
    if new >= 0
        && let Some(engine) = Engine::get()
    {
        engine.duplicated(fd, new);
    }
    new
}

/// ioctl(2).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ioctl(fd: c_int, request: c_ulong, arg: *mut c_void) -> c_int {
    match Engine::get().filter(|e| e.devices.get(fd).is_some()) {
        Some(engine) => match engine.ioctl(fd, request as u32, arg as u64) {
            Ok(()) => 0,
            Err(e) => {
                set_errno(e.0);
                -1
            }
        },
        // SAFETY: forwarded C contract.
        // SAFETY: forwarded C contract.
        None => unsafe { real::ioctl(fd, request, arg) },
    }
}

/// mmap(2).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mmap(
    addr: *mut c_void,
    len: usize,
    prot: c_int,
    flags: c_int,
    fd: c_int,
    off: off_t,
) -> *mut c_void {
    match Engine::get().filter(|e| fd >= 0 && e.devices.get(fd).is_some()) {
        Some(engine) => match engine.mmap(addr as u64, len as u64, prot, flags, fd) {
            Ok(at) => at as *mut c_void,
            Err(e) => {
                set_errno(e.0);
                libc::MAP_FAILED
            }
        },
        // SAFETY: forwarded C contract.
        // SAFETY: forwarded C contract.
        None => unsafe { real::mmap(addr, len, prot, flags, fd, off) },
    }
}

/// mmap64 (the same on x86-64).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mmap64(
    addr: *mut c_void,
    len: usize,
    prot: c_int,
    flags: c_int,
    fd: c_int,
    off: off_t,
) -> *mut c_void {
    // SAFETY: forwarded C contract.
    unsafe { mmap(addr, len, prot, flags, fd, off) }
}

/// munmap(2).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn munmap(addr: *mut c_void, len: usize) -> c_int {
    match Engine::get().filter(|e| e.space.overlaps(addr as u64, len as u64)) {
        Some(engine) => match engine.munmap(addr as u64, len as u64) {
            Ok(()) => 0,
            Err(e) => {
                set_errno(e.0);
                -1
            }
        },
        // SAFETY: forwarded C contract.
        // SAFETY: forwarded C contract.
        None => unsafe { real::munmap(addr, len) },
    }
}

/// mprotect(2).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mprotect(addr: *mut c_void, len: usize, prot: c_int) -> c_int {
    match Engine::get().filter(|e| e.space.overlaps(addr as u64, len as u64)) {
        Some(engine) => match engine.mprotect(addr as u64, len as u64, prot) {
            Ok(()) => 0,
            Err(e) => {
                set_errno(e.0);
                -1
            }
        },
        // SAFETY: forwarded C contract.
        // SAFETY: forwarded C contract.
        None => unsafe { real::mprotect(addr, len, prot) },
    }
}

/// getauxval(3): AT_SYSINFO_EHDR names the synthetic vDSO; everything else is the real
/// auxiliary vector's.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn getauxval(kind: c_ulong) -> c_ulong {
    if kind == libc::AT_SYSINFO_EHDR
        && let Some(v) = vdso::vdso(enclu::soft_eenter)
    {
        return v.base;
    }
    // SAFETY: forwarded C contract.
    unsafe { real::getauxval(kind) }
}

/// sigaction(2): dispositions of the signals the emulator needs are recorded and honoured
/// by its handlers (they reach the program's handler for every signal that is not the
/// emulator's); handlers of asynchronous signals are installed wrapped, so a signal that
/// arrives while enclave code runs is delivered after an AEX, as on hardware.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sigaction(sig: c_int, act: *const libc::sigaction, old: *mut libc::sigaction) -> c_int {
    if signals::owns(sig) {
        // SAFETY: forwarded C contract.
        unsafe { signals::app_sigaction(sig, act, old) };
        return 0;
    }
    // SAFETY: forwarded C contract.
    unsafe { signals::wrap_async(sig, act, old) }
}

/// signal(2), with glibc's BSD semantics (SA_RESTART).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn signal(sig: c_int, handler: libc::sighandler_t) -> libc::sighandler_t {
    // SAFETY: zeroed sigactions are valid; `sigaction` above reads `act` and fills `old`.
    unsafe {
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = handler;
        act.sa_flags = libc::SA_RESTART;
        let mut old: libc::sigaction = std::mem::zeroed();
        if sigaction(sig, &act, &mut old) != 0 {
            return libc::SIG_ERR;
        }
        old.sa_sigaction
    }
}

/// _exit(2): processes that end without `exit` (fork children, test harnesses) still print
/// `--stats`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn _exit(status: c_int) -> ! {
    if sgxemu_native::config::stats_requested() {
        sgxemu_native::stats::print_at_exit();
    }
    // SAFETY: forwarded C contract.
    unsafe { real::_exit(status) };
    // The C library's _exit does not return; if it ever did, end the process anyway.
    std::process::abort()
}

/// Runs before `main` (after the constructors of the program's other libraries): makes
/// CPUID read as the emulated part and installs the emulator's handlers.
extern "C" fn init() {
    // Handlers first: once faulting is on, any `cpuid` traps into them.
    signals::install();
    if !cpuid::enable_faulting() {
        cpuid::patch_main_executable();
    }
    if sgxemu_native::config::stats_requested() {
        // SAFETY: registers a plain extern "C" function with no arguments.
        unsafe { libc::atexit(sgxemu_native::stats::print_at_exit) };
    }
}

#[used]
#[unsafe(link_section = ".init_array")]
static INIT: extern "C" fn() = init;
