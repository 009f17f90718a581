//! The C library's own definitions of the functions the preload library interposes,
//! found with `dlsym(RTLD_NEXT, …)` (so the emulator can pass calls on, and call them
//! itself, without reaching its own interposers).

use std::sync::atomic::{AtomicUsize, Ordering};

use libc::{c_char, c_int, c_void};

fn next(cache: &AtomicUsize, name: &std::ffi::CStr) -> Option<usize> {
    let cached = cache.load(Ordering::Acquire);
    if cached != 0 {
        return Some(cached);
    }
    // SAFETY: dlsym with RTLD_NEXT and a valid C string.
    let found = unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr()) } as usize;
    if found == 0 {
        crate::sys::stderr_line(&format!("sgxemu: the C library has no {}\n", name.to_string_lossy()));
        return None;
    }
    cache.store(found, Ordering::Release);
    Some(found)
}

/// What a C function returns on failure, for a C library that lacks it (the call then
/// fails with ENOSYS instead of ending the process).
pub trait Failure {
    /// The failure value.
    fn failure() -> Self;
}

impl Failure for c_int {
    fn failure() -> Self {
        -1
    }
}

impl Failure for isize {
    fn failure() -> Self {
        -1
    }
}

impl Failure for i64 {
    fn failure() -> Self {
        -1
    }
}

impl Failure for libc::c_ulong {
    fn failure() -> Self {
        0
    }
}

impl<T> Failure for *mut T {
    fn failure() -> Self {
        std::ptr::null_mut()
    }
}

impl Failure for () {
    fn failure() -> Self {}
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
            let Some(address) = next(&CACHE, cname) else {
                // SAFETY: __errno_location returns this thread's errno slot.
                unsafe { *libc::__errno_location() = libc::ENOSYS };
                return <$ret as Failure>::failure();
            };
            // SAFETY: the symbol has the C library's signature for this name.
            let f: unsafe extern "C" fn($($ty),*) -> $ret = unsafe { std::mem::transmute(address) };
            // SAFETY: the caller upholds the C function's contract.
            unsafe { f($($arg),*) }
        }
    };
}

real_fn!(/// sigaction(2).
    sigaction(sig: c_int, act: *const libc::sigaction, old: *mut libc::sigaction) -> c_int);
real_fn!(/// pthread_sigmask(3).
    pthread_sigmask(how: c_int, set: *const libc::sigset_t, old: *mut libc::sigset_t) -> c_int);
real_fn!(/// pthread_create(3).
    pthread_create(
        thread: *mut libc::pthread_t,
        attr: *const libc::pthread_attr_t,
        start: extern "C" fn(*mut c_void) -> *mut c_void,
        arg: *mut c_void
    ) -> c_int);
real_fn!(/// sigprocmask(2).
    sigprocmask(how: c_int, set: *const libc::sigset_t, old: *mut libc::sigset_t) -> c_int);
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
real_fn!(/// mremap(2) (the fifth argument, used with MREMAP_FIXED, passed as it came).
    mremap(old: *mut c_void, old_len: usize, new_len: usize, flags: c_int, new: *mut c_void) -> *mut c_void);
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
real_fn!(/// _exit(2) (if the C library had none, this returns: the caller ends the process).
    _exit(status: c_int) -> ());
real_fn!(/// statx(2).
    statx(dirfd: c_int, path: *const c_char, flags: c_int, mask: libc::c_uint, buf: *mut libc::statx) -> c_int);
real_fn!(/// access(2).
    access(path: *const c_char, mode: c_int) -> c_int);
real_fn!(/// faccessat(2).
    faccessat(dirfd: c_int, path: *const c_char, mode: c_int, flags: c_int) -> c_int);
real_fn!(/// euidaccess(3) (also called eaccess).
    euidaccess(path: *const c_char, mode: c_int) -> c_int);
real_fn!(/// readlink(2).
    readlink(path: *const c_char, buf: *mut c_char, size: usize) -> isize);
real_fn!(/// readlinkat(2).
    readlinkat(dirfd: c_int, path: *const c_char, buf: *mut c_char, size: usize) -> isize);
real_fn!(/// realpath(3).
    realpath(path: *const c_char, resolved: *mut c_char) -> *mut c_char);
real_fn!(/// canonicalize_file_name(3).
    canonicalize_file_name(path: *const c_char) -> *mut c_char);
real_fn!(/// fopen(3).
    fopen(path: *const c_char, mode: *const c_char) -> *mut libc::FILE);
real_fn!(/// fopen64.
    fopen64(path: *const c_char, mode: *const c_char) -> *mut libc::FILE);
real_fn!(/// read(2).
    read(fd: c_int, buf: *mut c_void, count: usize) -> isize);
real_fn!(/// pread(2).
    pread(fd: c_int, buf: *mut c_void, count: usize, offset: libc::off_t) -> isize);
real_fn!(/// pread64.
    pread64(fd: c_int, buf: *mut c_void, count: usize, offset: libc::off_t) -> isize);
real_fn!(/// lseek(2).
    lseek(fd: c_int, offset: libc::off_t, whence: c_int) -> libc::off_t);
real_fn!(/// lseek64.
    lseek64(fd: c_int, offset: libc::off_t, whence: c_int) -> libc::off_t);
real_fn!(/// fdopen(3).
    fdopen(fd: c_int, mode: *const c_char) -> *mut libc::FILE);
real_fn!(/// readv(2).
    readv(fd: c_int, iov: *const libc::iovec, count: c_int) -> isize);
real_fn!(/// preadv(2).
    preadv(fd: c_int, iov: *const libc::iovec, count: c_int, offset: libc::off_t) -> isize);
real_fn!(/// preadv64.
    preadv64(fd: c_int, iov: *const libc::iovec, count: c_int, offset: libc::off_t) -> isize);
real_fn!(/// preadv2(2).
    preadv2(fd: c_int, iov: *const libc::iovec, count: c_int, offset: libc::off_t, flags: c_int) -> isize);
real_fn!(/// preadv64v2.
    preadv64v2(fd: c_int, iov: *const libc::iovec, count: c_int, offset: libc::off_t, flags: c_int) -> isize);
real_fn!(/// getdents64(2) (glibc 2.30's wrapper).
    getdents64(fd: c_int, buf: *mut c_void, count: usize) -> isize);
real_fn!(/// chdir(2).
    chdir(path: *const c_char) -> c_int);
real_fn!(/// fchdir(2).
    fchdir(fd: c_int) -> c_int);
real_fn!(/// getcwd(3).
    getcwd(buf: *mut c_char, size: usize) -> *mut c_char);
real_fn!(/// opendir(3).
    opendir(path: *const c_char) -> *mut libc::DIR);
real_fn!(/// readdir(3).
    readdir(dir: *mut libc::DIR) -> *mut libc::dirent64);
real_fn!(/// readdir64 (the same layout as readdir's on x86-64).
    readdir64(dir: *mut libc::DIR) -> *mut libc::dirent64);
real_fn!(/// closedir(3).
    closedir(dir: *mut libc::DIR) -> c_int);
real_fn!(/// rewinddir(3).
    rewinddir(dir: *mut libc::DIR) -> ());
real_fn!(/// seekdir(3).
    seekdir(dir: *mut libc::DIR, position: libc::c_long) -> ());
real_fn!(/// glob(3) (`glob_t` as `dev_listing::GlobT`).
    glob(pattern: *const c_char, flags: c_int, errfunc: Option<unsafe extern "C" fn(*const c_char, c_int) -> c_int>, pglob: *mut c_void) -> c_int);
real_fn!(/// glob64.
    glob64(pattern: *const c_char, flags: c_int, errfunc: Option<unsafe extern "C" fn(*const c_char, c_int) -> c_int>, pglob: *mut c_void) -> c_int);
real_fn!(/// scandir(3).
    scandir(path: *const c_char, list: *mut *mut *mut libc::dirent64, filter: Option<unsafe extern "C" fn(*const libc::dirent64) -> c_int>, compare: Option<unsafe extern "C" fn(*mut *const libc::dirent64, *mut *const libc::dirent64) -> c_int>) -> c_int);
real_fn!(/// scandir64.
    scandir64(path: *const c_char, list: *mut *mut *mut libc::dirent64, filter: Option<unsafe extern "C" fn(*const libc::dirent64) -> c_int>, compare: Option<unsafe extern "C" fn(*mut *const libc::dirent64, *mut *const libc::dirent64) -> c_int>) -> c_int);
real_fn!(/// getxattr(2).
    getxattr(path: *const c_char, name: *const c_char, value: *mut c_void, size: usize) -> isize);
real_fn!(/// lgetxattr(2).
    lgetxattr(path: *const c_char, name: *const c_char, value: *mut c_void, size: usize) -> isize);
real_fn!(/// listxattr(2).
    listxattr(path: *const c_char, list: *mut c_char, size: usize) -> isize);
real_fn!(/// llistxattr(2).
    llistxattr(path: *const c_char, list: *mut c_char, size: usize) -> isize);
real_fn!(/// fdopendir(3).
    fdopendir(fd: c_int) -> *mut libc::DIR);
real_fn!(/// readdir_r(3) (readdir64_r is the same on x86-64).
    readdir_r(dir: *mut libc::DIR, entry: *mut libc::dirent64, result: *mut *mut libc::dirent64) -> c_int);
real_fn!(/// sigsuspend(2).
    sigsuspend(mask: *const libc::sigset_t) -> c_int);
real_fn!(/// sigwait(3).
    sigwait(set: *const libc::sigset_t, sig: *mut c_int) -> c_int);
real_fn!(/// sigwaitinfo(2).
    sigwaitinfo(set: *const libc::sigset_t, info: *mut libc::siginfo_t) -> c_int);
real_fn!(/// sigtimedwait(2).
    sigtimedwait(set: *const libc::sigset_t, info: *mut libc::siginfo_t, timeout: *const libc::timespec) -> c_int);
real_fn!(/// ppoll(2).
    ppoll(fds: *mut libc::pollfd, n: libc::nfds_t, timeout: *const libc::timespec, mask: *const libc::sigset_t) -> c_int);
real_fn!(/// pselect(2).
    pselect(
        n: c_int,
        read: *mut libc::fd_set,
        write: *mut libc::fd_set,
        except: *mut libc::fd_set,
        timeout: *const libc::timespec,
        mask: *const libc::sigset_t
    ) -> c_int);
real_fn!(/// epoll_pwait(2).
    epoll_pwait(epfd: c_int, events: *mut libc::epoll_event, max: c_int, timeout: c_int, mask: *const libc::sigset_t) -> c_int);
real_fn!(/// epoll_pwait2(2).
    epoll_pwait2(
        epfd: c_int,
        events: *mut libc::epoll_event,
        max: c_int,
        timeout: *const libc::timespec,
        mask: *const libc::sigset_t
    ) -> c_int);
