//! The C library's own definitions of the functions the preload library interposes,
//! found with `dlsym(RTLD_NEXT, …)` (so the emulator can pass calls on, and call them
//! itself, without reaching its own interposers).

use std::sync::atomic::{AtomicUsize, Ordering};

use libc::{c_char, c_int, c_void};

fn next(cache: &AtomicUsize, name: &std::ffi::CStr) -> usize {
    let cached = cache.load(Ordering::Acquire);
    if cached != 0 {
        return cached;
    }
    // SAFETY: dlsym with RTLD_NEXT and a valid C string.
    let found = unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr()) } as usize;
    if found == 0 {
        crate::sys::stderr_line(&format!("sgxemu: the C library has no {}\n", name.to_string_lossy()));
        std::process::abort();
    }
    cache.store(found, Ordering::Release);
    found
}

macro_rules! real_fn {
    ($(#[$doc:meta])* $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty) => {
        $(#[$doc])*
        ///
        /// # Safety
        /// As for the C function.
        pub unsafe fn $name($($arg: $ty),*) -> $ret {
            static CACHE: AtomicUsize = AtomicUsize::new(0);
            let cname = const { match std::ffi::CStr::from_bytes_with_nul(concat!(stringify!($name), "\0").as_bytes()) {
                Ok(c) => c,
                Err(_) => panic!("symbol name"),
            } };
            // SAFETY: the symbol has the C library's signature for this name.
            let f: unsafe extern "C" fn($($ty),*) -> $ret = unsafe { std::mem::transmute(next(&CACHE, cname)) };
            // SAFETY: the caller upholds the C function's contract.
            unsafe { f($($arg),*) }
        }
    };
}

real_fn!(/// sigaction(2).
    sigaction(sig: c_int, act: *const libc::sigaction, old: *mut libc::sigaction) -> c_int);
real_fn!(/// open(2) (mode passed as the third argument).
    open(path: *const c_char, flags: c_int, mode: libc::c_uint) -> c_int);
real_fn!(/// open64.
    open64(path: *const c_char, flags: c_int, mode: libc::c_uint) -> c_int);
real_fn!(/// openat(2).
    openat(dirfd: c_int, path: *const c_char, flags: c_int, mode: libc::c_uint) -> c_int);
real_fn!(/// close(2).
    close(fd: c_int) -> c_int);
real_fn!(/// dup(2).
    dup(fd: c_int) -> c_int);
real_fn!(/// dup2(2).
    dup2(fd: c_int, new: c_int) -> c_int);
real_fn!(/// dup3(2).
    dup3(fd: c_int, new: c_int, flags: c_int) -> c_int);
real_fn!(/// fcntl(2) (the third argument passed as an integer, as every command's is in registers).
    fcntl(fd: c_int, cmd: c_int, arg: libc::c_ulong) -> c_int);
real_fn!(/// fcntl64, glibc's name for fcntl in programs built with 64-bit file offsets.
    fcntl64(fd: c_int, cmd: c_int, arg: libc::c_ulong) -> c_int);
real_fn!(/// ioctl(2).
    ioctl(fd: c_int, request: libc::c_ulong, arg: *mut c_void) -> c_int);
real_fn!(/// mmap(2).
    mmap(addr: *mut c_void, len: usize, prot: c_int, flags: c_int, fd: c_int, offset: libc::off_t) -> *mut c_void);
real_fn!(/// munmap(2).
    munmap(addr: *mut c_void, len: usize) -> c_int);
real_fn!(/// mprotect(2).
    mprotect(addr: *mut c_void, len: usize, prot: c_int) -> c_int);
real_fn!(/// stat(2).
    stat(path: *const c_char, buf: *mut libc::stat) -> c_int);
real_fn!(/// lstat(2).
    lstat(path: *const c_char, buf: *mut libc::stat) -> c_int);
real_fn!(/// fstat(2).
    fstat(fd: c_int, buf: *mut libc::stat) -> c_int);
real_fn!(/// fstatat(2).
    fstatat(dirfd: c_int, path: *const c_char, buf: *mut libc::stat, flags: c_int) -> c_int);
real_fn!(/// getauxval(3).
    getauxval(kind: libc::c_ulong) -> libc::c_ulong);
real_fn!(/// _exit(2).
    _exit(status: c_int) -> ());
