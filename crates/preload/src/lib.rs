//! The library `sgxemu run` preloads into a program: the C library entry points through
//! which programs find and reach `/dev/sgx_enclave`, `/dev/sgx_provision`, the vDSO and
//! signal dispositions, connected to the emulator (`sgxemu-native`; what paths mean is
//! decided in its `devices_fs` module). Every call that is not about the emulated platform
//! goes on to the C library unchanged.
//!
//! These functions are called by arbitrary C code at any point of a process's life: before
//! `main` (even from other libraries' constructors, which run before ours), from `atexit`
//! handlers and C++ static destructors after Rust's thread-locals are gone, from pthread key
//! destructors of exiting threads, in `vfork` children. Each one starts the emulator lazily,
//! needs no thread-local storage to work, and never unwinds or aborts: `guard` turns a
//! panic into one line on stderr and EIO.

#![allow(clippy::missing_safety_doc, reason = "C entry points with the C library's contracts")]

use std::cell::Cell;
use std::ffi::CStr;
use std::panic::AssertUnwindSafe;
use std::sync::Once;
use std::sync::atomic::{AtomicU64, Ordering};

use libc::{c_char, c_int, c_uint, c_ulong, c_void, off_t};
use sgxemu_native::dev_listing::{self, Listed};
use sgxemu_native::devices_fs::{self, Node};
use sgxemu_native::{cpuid, enclu, own_fds, program_maps, real, signals, sys, vdso};

fn set_errno(errno: c_int) {
    // SAFETY: __errno_location returns this thread's errno slot.
    unsafe { *libc::__errno_location() = errno };
}

/// `-1` with `errno` set, as a failing system call returns.
fn fail(errno: c_int) -> c_int {
    set_errno(errno);
    -1
}

thread_local! {
    /// The entry point this thread is in, for the panic message. Constant-initialised and
    /// without a destructor, so it stays usable while the thread is torn down.
    static CALL: Cell<&'static str> = const { Cell::new("") };
}

/// The one line a panic prints: `sgxemu: internal error in <call>: <message> at <where>`.
fn panic_hook(info: &std::panic::PanicHookInfo<'_>) {
    let call = CALL.try_with(Cell::get).unwrap_or("");
    let call = if call.is_empty() { "an emulator thread" } else { call };
    let payload = info.payload();
    let message = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("panic");
    let place = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
    sys::stderr_line(&format!("sgxemu: internal error in {call}: {message}{place}\n"));
}

/// Runs the body of entry point `call`. A panic in it (a bug of the emulator) never crosses
/// into C: it prints one line, sets errno to EIO (what the kernel gives for a driver bug)
/// and the call returns `failed()`.
fn guard<R>(call: &'static str, failed: impl FnOnce() -> R, body: impl FnOnce() -> R) -> R {
    static HOOK: Once = Once::new();
    // This library carries its own standard library: the hook is the emulator's alone.
    HOOK.call_once(|| std::panic::set_hook(Box::new(panic_hook)));
    let outer = CALL.try_with(|c| c.replace(call)).unwrap_or("");
    let result = std::panic::catch_unwind(AssertUnwindSafe(body));
    let _ = CALL.try_with(|c| c.set(outer));
    result.unwrap_or_else(|_| {
        set_errno(libc::EIO);
        failed()
    })
}

/// [`guard`] for calls that return `-1` on failure.
fn guard_int(call: &'static str, body: impl FnOnce() -> c_int) -> c_int {
    guard(call, || -1, body)
}

/// [`guard`] for calls that return `ssize_t`/`off_t` -1 on failure.
fn guard_long<R: From<i8>>(call: &'static str, body: impl FnOnce() -> R) -> R {
    guard(call, || R::from(-1), body)
}

/// The emulated node a path names (null: none).
///
/// # Safety
/// `path` is null or a C string.
unsafe fn node(path: *const c_char) -> Option<Node> {
    // SAFETY: forwarded contract.
    unsafe { devices_fs::resolve_c(path) }
}

/// `open` of a path: the emulator's node, or the C library's `real` open.
///
/// # Safety
/// `path` is null or a C string.
unsafe fn open_path(call: &'static str, path: *const c_char, flags: c_int, real: impl FnOnce() -> c_int) -> c_int {
    guard_int(call, || {
        // SAFETY: forwarded contract.
        match unsafe { node(path) }.map(|node| devices_fs::open(node, flags)) {
            Some(Ok(Some(fd))) => fd,
            Some(Err(errno)) => fail(errno),
            None | Some(Ok(None)) => real(),
        }
    })
}

/// open(2).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn open(path: *const c_char, flags: c_int, mode: c_uint) -> c_int {
    // SAFETY: forwarded C contract.
    unsafe { open_path("open", path, flags, || real::open(path, flags, mode)) }
}

/// open64(2).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn open64(path: *const c_char, flags: c_int, mode: c_uint) -> c_int {
    // SAFETY: forwarded C contract.
    unsafe { open_path("open64", path, flags, || real::open64(path, flags, mode)) }
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

/// openat(2). The emulator's paths are absolute, so `dirfd` does not matter for them.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn openat(dirfd: c_int, path: *const c_char, flags: c_int, mode: c_uint) -> c_int {
    // SAFETY: forwarded C contract.
    unsafe {
        let ours = devices_fs::at_path(dirfd, path);
        open_path("openat", ours, flags, || real::openat(dirfd, path, flags, mode))
    }
}

/// openat64.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn openat64(dirfd: c_int, path: *const c_char, flags: c_int, mode: c_uint) -> c_int {
    // SAFETY: forwarded C contract.
    unsafe { openat(dirfd, path, flags, mode) }
}

/// The fortified openat.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn __openat_2(dirfd: c_int, path: *const c_char, flags: c_int) -> c_int {
    // SAFETY: forwarded C contract.
    unsafe { openat(dirfd, path, flags, 0) }
}

/// The fortified openat64.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn __openat64_2(dirfd: c_int, path: *const c_char, flags: c_int) -> c_int {
    // SAFETY: forwarded C contract.
    unsafe { openat(dirfd, path, flags, 0) }
}

/// open(2) flags for an fopen mode (`r`, `w`, `a`, `+`, `e`, `x`).
fn fopen_flags(mode: &[u8]) -> c_int {
    let mut flags = match mode.first() {
        Some(b'w') => libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
        Some(b'a') => libc::O_WRONLY | libc::O_CREAT | libc::O_APPEND,
        _ => libc::O_RDONLY,
    };
    for &c in mode.iter().skip(1) {
        match c {
            b'+' => flags = (flags & !libc::O_ACCMODE) | libc::O_RDWR,
            b'e' => flags |= libc::O_CLOEXEC,
            b'x' => flags |= libc::O_EXCL,
            b',' => break,
            _ => {}
        }
    }
    flags
}

/// fopen of a path: glibc's fopen opens through an internal call no interposer sees, so
/// the emulator's paths are opened here and wrapped with `fdopen`.
///
/// # Safety
/// `path` and `mode` are null or C strings.
unsafe fn fopen_path(
    call: &'static str,
    path: *const c_char,
    mode: *const c_char,
    real: impl FnOnce() -> *mut libc::FILE,
) -> *mut libc::FILE {
    guard(call, std::ptr::null_mut, || {
        // SAFETY: forwarded contract.
        let Some(node) = (unsafe { node(path) }).filter(|_| !mode.is_null()) else { return real() };
        // SAFETY: `mode` is a C string.
        let flags = fopen_flags(unsafe { CStr::from_ptr(mode) }.to_bytes());
        match devices_fs::open(node, flags) {
            Ok(Some(fd)) => {
                let file = if matches!(node, Node::Msr(_)) {
                    // SAFETY: `fd` is an MSR descriptor ours to hand over; `mode` a C string.
                    unsafe { msr_stream(fd, mode) }
                } else {
                    // SAFETY: `fd` is ours to hand over; `mode` is a C string.
                    unsafe { libc::fdopen(fd, mode) }
                };
                if file.is_null() {
                    // SAFETY: closes the descriptor just made (errno of fdopen kept).
                    let errno = unsafe { *libc::__errno_location() };
                    // SAFETY: as above.
                    unsafe { close(fd) };
                    set_errno(errno);
                }
                file
            }
            Ok(None) => real(),
            Err(errno) => {
                set_errno(errno);
                std::ptr::null_mut()
            }
        }
    })
}

/// glibc's `cookie_io_functions_t` (not in the `libc` crate).
#[repr(C)]
struct CookieIoFunctions {
    read: Option<unsafe extern "C" fn(*mut c_void, *mut c_char, usize) -> isize>,
    write: Option<unsafe extern "C" fn(*mut c_void, *const c_char, usize) -> isize>,
    seek: Option<unsafe extern "C" fn(*mut c_void, *mut i64, c_int) -> c_int>,
    close: Option<unsafe extern "C" fn(*mut c_void) -> c_int>,
}

unsafe extern "C" {
    fn fopencookie(cookie: *mut c_void, mode: *const c_char, functions: CookieIoFunctions) -> *mut libc::FILE;
}

/// Where glibc's public `struct _IO_FILE` (<bits/types/struct_FILE.h>, x86-64) keeps the
/// stream's descriptor, `_fileno`.
const FILE_FILENO_OFFSET: usize = 112;
/// What fopencookie leaves there: "no descriptor, but open".
const COOKIE_FILENO: c_int = -2;

/// A stdio stream on MSR descriptor `fd`. glibc's stdio reads and seeks through internal
/// calls no interposer sees, so a stream made by `fdopen` would read `/dev/null`: this one
/// is a cookie stream whose reads and seeks are the msr driver's (`devices_fs`), and whose
/// `fileno` is `fd` (glibc's cookie streams never use the descriptor themselves).
///
/// # Safety
/// `fd` is an emulated MSR descriptor the stream takes over; `mode` is a C string.
unsafe fn msr_stream(fd: c_int, mode: *const c_char) -> *mut libc::FILE {
    let functions = CookieIoFunctions {
        read: Some(msr_cookie_read),
        write: None,
        seek: Some(msr_cookie_seek),
        close: Some(msr_cookie_close),
    };
    let cookie = Box::into_raw(Box::new(MsrCookie { fd, offset: 0 }));
    // SAFETY: the cookie is an `MsrCookie` the functions below use and the close frees.
    let file = unsafe { fopencookie(cookie.cast(), mode, functions) };
    if file.is_null() {
        // SAFETY: not handed over: still ours.
        drop(unsafe { Box::from_raw(cookie) });
        return file;
    }
    // SAFETY: `file` is a glibc FILE, whose public layout has `_fileno` at this offset; it
    // is overwritten only where it holds fopencookie's mark (the layout is as expected).
    unsafe {
        let fileno = file.cast::<u8>().add(FILE_FILENO_OFFSET).cast::<c_int>();
        if *fileno == COOKIE_FILENO {
            *fileno = fd;
        }
    }
    file
}

/// An [`msr_stream`]'s state.
#[derive(Debug)]
struct MsrCookie {
    fd: c_int,
    /// The stream's offset as glibc keeps it for a device file: the last seek's target
    /// plus the bytes read since (the msr driver itself never moves its position, so a
    /// read is the MSR of the last seek). `ftell` and relative seeks count from it, as on
    /// a host with the driver.
    offset: i64,
}

/// The read function of [`msr_stream`]s: the msr driver's read at the file position.
unsafe extern "C" fn msr_cookie_read(cookie: *mut c_void, buf: *mut c_char, size: usize) -> isize {
    guard_long("fread", || {
        // SAFETY: the stream's cookie (`msr_stream`), used by one stdio call at a time.
        let cookie = unsafe { &mut *cookie.cast::<MsrCookie>() };
        match devices_fs::msr_read_at_position(cookie.fd, size) {
            Some(answer) => {
                // SAFETY: stdio's buffer holds `size` bytes, which the answer never exceeds.
                let read = unsafe { deliver(answer, buf.cast()) };
                cookie.offset = cookie.offset.saturating_add(read.max(0) as i64);
                read
            }
            None => fail(libc::EBADF) as isize,
        }
    })
}

/// The seek function of [`msr_stream`]s: a relative seek counts from the stream's offset
/// (glibc turns it into an absolute one for a device file).
unsafe extern "C" fn msr_cookie_seek(cookie: *mut c_void, offset: *mut i64, whence: c_int) -> c_int {
    guard_int("fseek", || {
        // SAFETY: the stream's cookie (`msr_stream`), used by one stdio call at a time;
        // stdio passes a valid position to read and update.
        let (cookie, asked) = unsafe { (&mut *cookie.cast::<MsrCookie>(), *offset) };
        let target = match whence {
            libc::SEEK_SET => Some(asked),
            libc::SEEK_CUR => cookie.offset.checked_add(asked),
            _ => None,
        };
        let Some(target) = target.filter(|&t| t >= 0) else { return fail(libc::EINVAL) };
        match devices_fs::msr_seek(cookie.fd, target, libc::SEEK_SET) {
            Some(Ok(position)) => {
                cookie.offset = position;
                // SAFETY: as above.
                unsafe { *offset = position };
                0
            }
            Some(Err(errno)) => fail(errno),
            None => fail(libc::EBADF),
        }
    })
}

/// The close function of [`msr_stream`]s: closes the descriptor, frees the cookie.
unsafe extern "C" fn msr_cookie_close(cookie: *mut c_void) -> c_int {
    // SAFETY: the stream's cookie, which stdio passes for the last time.
    let cookie = unsafe { Box::from_raw(cookie.cast::<MsrCookie>()) };
    // SAFETY: the stream owned the descriptor.
    unsafe { close(cookie.fd) }
}

/// fdopen(3): a stream on an emulated MSR descriptor reads the MSRs (`msr_stream`).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fdopen(fd: c_int, mode: *const c_char) -> *mut libc::FILE {
    guard("fdopen", std::ptr::null_mut, || {
        let is_msr = !mode.is_null() && matches!(devices_fs::descriptor_node(fd), Some(Node::Msr(_)));
        // SAFETY: forwarded C contract.
        unsafe { if is_msr { msr_stream(fd, mode) } else { real::fdopen(fd, mode) } }
    })
}

/// fopen(3).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fopen(path: *const c_char, mode: *const c_char) -> *mut libc::FILE {
    // SAFETY: forwarded C contract.
    unsafe { fopen_path("fopen", path, mode, || real::fopen(path, mode)) }
}

/// fopen64(3).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fopen64(path: *const c_char, mode: *const c_char) -> *mut libc::FILE {
    // SAFETY: forwarded C contract.
    unsafe { fopen_path("fopen64", path, mode, || real::fopen64(path, mode)) }
}

/// Fills `buf` with what `stat` (`follow`) or `lstat` says about `path`; `None`: the C
/// library answers.
///
/// # Safety
/// `path` is null or a C string; `buf` is a writable `struct stat`.
unsafe fn stat_path(path: *const c_char, follow: bool, buf: *mut libc::stat) -> Option<c_int> {
    // SAFETY: forwarded contract.
    let st = devices_fs::stat_of(unsafe { node(path) }?, follow)?;
    // SAFETY: the caller's buffer is a `struct stat`.
    unsafe { buf.write(st) };
    Some(0)
}

/// Fills `buf` for an emulated descriptor; `None`: the C library answers.
///
/// # Safety
/// `buf` is a writable `struct stat`.
unsafe fn stat_fd(fd: c_int, buf: *mut libc::stat) -> Option<c_int> {
    let st = devices_fs::stat_of(devices_fs::descriptor_node(fd)?, true)?;
    // SAFETY: the caller's buffer is a `struct stat`.
    unsafe { buf.write(st) };
    Some(0)
}

/// Whether an `*at` call's empty path with AT_EMPTY_PATH means `dirfd` itself.
///
/// # Safety
/// `path` is null or a C string.
unsafe fn empty_path(path: *const c_char, flags: c_int) -> bool {
    // SAFETY: a non-null path is a C string.
    flags & libc::AT_EMPTY_PATH != 0 && !path.is_null() && unsafe { *path } == 0
}

/// stat(2).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn stat(path: *const c_char, buf: *mut libc::stat) -> c_int {
    guard_int("stat", || {
        // SAFETY: forwarded C contract.
        unsafe { stat_path(path, true, buf).unwrap_or_else(|| real::stat(path, buf)) }
    })
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
    guard_int("lstat", || {
        // SAFETY: forwarded C contract.
        unsafe { stat_path(path, false, buf).unwrap_or_else(|| real::lstat(path, buf)) }
    })
}

/// lstat64.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lstat64(path: *const c_char, buf: *mut libc::stat) -> c_int {
    // SAFETY: forwarded C contract.
    unsafe { lstat(path, buf) }
}

/// fstatat(2) (newfstatat).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fstatat(dirfd: c_int, path: *const c_char, buf: *mut libc::stat, flags: c_int) -> c_int {
    guard_int("fstatat", || {
        // SAFETY: forwarded C contract.
        unsafe {
            let ours = if empty_path(path, flags) {
                stat_fd(dirfd, buf)
            } else {
                stat_path(devices_fs::at_path(dirfd, path), flags & libc::AT_SYMLINK_NOFOLLOW == 0, buf)
            };
            ours.unwrap_or_else(|| real::fstatat(dirfd, path, buf, flags))
        }
    })
}

/// fstatat64.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fstatat64(dirfd: c_int, path: *const c_char, buf: *mut libc::stat, flags: c_int) -> c_int {
    // SAFETY: forwarded C contract.
    unsafe { fstatat(dirfd, path, buf, flags) }
}

/// fstat(2): an emulated descriptor looks like its node.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fstat(fd: c_int, buf: *mut libc::stat) -> c_int {
    guard_int("fstat", || {
        // SAFETY: forwarded C contract.
        unsafe { stat_fd(fd, buf).unwrap_or_else(|| real::fstat(fd, buf)) }
    })
}

/// fstat64.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fstat64(fd: c_int, buf: *mut libc::stat) -> c_int {
    // SAFETY: forwarded C contract.
    unsafe { fstat(fd, buf) }
}

// The versioned stat calls of programs built against glibc before 2.33 (`_STAT_VER` is
// the one x86-64 layout, so the version argument changes nothing).

/// __xstat.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn __xstat(_ver: c_int, path: *const c_char, buf: *mut libc::stat) -> c_int {
    // SAFETY: forwarded C contract.
    unsafe { stat(path, buf) }
}

/// __xstat64.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn __xstat64(_ver: c_int, path: *const c_char, buf: *mut libc::stat) -> c_int {
    // SAFETY: forwarded C contract.
    unsafe { stat(path, buf) }
}

/// __lxstat.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn __lxstat(_ver: c_int, path: *const c_char, buf: *mut libc::stat) -> c_int {
    // SAFETY: forwarded C contract.
    unsafe { lstat(path, buf) }
}

/// __lxstat64.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn __lxstat64(_ver: c_int, path: *const c_char, buf: *mut libc::stat) -> c_int {
    // SAFETY: forwarded C contract.
    unsafe { lstat(path, buf) }
}

/// __fxstat.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn __fxstat(_ver: c_int, fd: c_int, buf: *mut libc::stat) -> c_int {
    // SAFETY: forwarded C contract.
    unsafe { fstat(fd, buf) }
}

/// __fxstat64.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn __fxstat64(_ver: c_int, fd: c_int, buf: *mut libc::stat) -> c_int {
    // SAFETY: forwarded C contract.
    unsafe { fstat(fd, buf) }
}

/// __fxstatat.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn __fxstatat(
    _ver: c_int,
    dirfd: c_int,
    path: *const c_char,
    buf: *mut libc::stat,
    flags: c_int,
) -> c_int {
    // SAFETY: forwarded C contract.
    unsafe { fstatat(dirfd, path, buf, flags) }
}

/// __fxstatat64.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn __fxstatat64(
    _ver: c_int,
    dirfd: c_int,
    path: *const c_char,
    buf: *mut libc::stat,
    flags: c_int,
) -> c_int {
    // SAFETY: forwarded C contract.
    unsafe { fstatat(dirfd, path, buf, flags) }
}

/// statx(2) (what Rust's `Path::exists` and `fs::metadata` call).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn statx(
    dirfd: c_int,
    path: *const c_char,
    flags: c_int,
    mask: c_uint,
    buf: *mut libc::statx,
) -> c_int {
    guard_int("statx", || {
        // SAFETY: all-zero is a valid `struct stat`.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: forwarded C contract; `st` is writable.
        let ours = unsafe {
            if empty_path(path, flags) {
                stat_fd(dirfd, &mut st)
            } else {
                stat_path(devices_fs::at_path(dirfd, path), flags & libc::AT_SYMLINK_NOFOLLOW == 0, &mut st)
            }
        };
        match ours {
            Some(_) if buf.is_null() => fail(libc::EFAULT),
            Some(_) => {
                // SAFETY: the caller's buffer is a `struct statx`.
                unsafe { buf.write(devices_fs::statx_of(&st)) };
                0
            }
            // SAFETY: forwarded C contract.
            None => unsafe { real::statx(dirfd, path, flags, mask, buf) },
        }
    })
}

/// access-family answer for an emulated path; `None`: the C library answers.
///
/// # Safety
/// `path` is null or a C string.
unsafe fn access_path(path: *const c_char, mode: c_int) -> Option<c_int> {
    // SAFETY: forwarded contract.
    Some(match devices_fs::access(unsafe { node(path) }?, mode)? {
        Ok(()) => 0,
        Err(errno) => fail(errno),
    })
}

/// access(2).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn access(path: *const c_char, mode: c_int) -> c_int {
    guard_int("access", || {
        // SAFETY: forwarded C contract.
        unsafe { access_path(path, mode).unwrap_or_else(|| real::access(path, mode)) }
    })
}

/// faccessat(2) (faccessat2 underneath).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn faccessat(dirfd: c_int, path: *const c_char, mode: c_int, flags: c_int) -> c_int {
    guard_int("faccessat", || {
        // SAFETY: forwarded C contract.
        unsafe {
            access_path(devices_fs::at_path(dirfd, path), mode)
                .unwrap_or_else(|| real::faccessat(dirfd, path, mode, flags))
        }
    })
}

/// euidaccess(3).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn euidaccess(path: *const c_char, mode: c_int) -> c_int {
    guard_int("euidaccess", || {
        // SAFETY: forwarded C contract.
        unsafe { access_path(path, mode).unwrap_or_else(|| real::euidaccess(path, mode)) }
    })
}

/// eaccess(3), another name of euidaccess.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn eaccess(path: *const c_char, mode: c_int) -> c_int {
    // SAFETY: forwarded C contract.
    unsafe { euidaccess(path, mode) }
}

/// readlink's answer for an emulated path, copied as readlink(2) does (truncated, no NUL);
/// `None`: the C library answers.
///
/// # Safety
/// `path` is null or a C string; `buf` is writable for `size` bytes.
unsafe fn readlink_path(path: *const c_char, buf: *mut c_char, size: usize) -> Option<isize> {
    if path.is_null() {
        return None;
    }
    // SAFETY: a C string.
    let answer = devices_fs::readlink(unsafe { CStr::from_ptr(path) }.to_bytes())?;
    Some(match answer {
        Ok(_) if size == 0 => fail(libc::EINVAL) as isize,
        Ok(target) => {
            let n = target.len().min(size);
            // SAFETY: `buf` is writable for `size` >= `n` bytes.
            unsafe { std::ptr::copy_nonoverlapping(target.as_ptr(), buf.cast::<u8>(), n) };
            n as isize
        }
        Err(errno) => fail(errno) as isize,
    })
}

/// readlink(2): the udev links' targets, and a device descriptor's node in `/proc/self/fd`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn readlink(path: *const c_char, buf: *mut c_char, size: usize) -> isize {
    guard_long("readlink", || {
        // SAFETY: forwarded C contract.
        unsafe { readlink_path(path, buf, size).unwrap_or_else(|| real::readlink(path, buf, size)) }
    })
}

/// readlinkat(2).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn readlinkat(dirfd: c_int, path: *const c_char, buf: *mut c_char, size: usize) -> isize {
    guard_long("readlinkat", || {
        // SAFETY: forwarded C contract.
        unsafe {
            readlink_path(devices_fs::at_path(dirfd, path), buf, size)
                .unwrap_or_else(|| real::readlinkat(dirfd, path, buf, size))
        }
    })
}

/// The canonical path of a device node or link, as realpath(3) returns it (into
/// `resolved`, or a `malloc`ed copy when it is null); `None`: the C library answers.
///
/// # Safety
/// `path` is null or a C string; `resolved` is null or holds PATH_MAX bytes.
unsafe fn canonical_path(path: *const c_char, resolved: *mut c_char) -> Option<*mut c_char> {
    if path.is_null() {
        return None;
    }
    // SAFETY: a C string.
    let canonical = devices_fs::canonical(unsafe { CStr::from_ptr(path) }.to_bytes())?;
    let out = if resolved.is_null() {
        // SAFETY: malloc of the string's size; the caller frees it with free(3).
        unsafe { libc::malloc(canonical.len() + 1).cast::<c_char>() }
    } else {
        resolved
    };
    if out.is_null() {
        set_errno(libc::ENOMEM);
        return Some(out);
    }
    // SAFETY: `out` holds at least len + 1 bytes (PATH_MAX, or just allocated).
    unsafe {
        std::ptr::copy_nonoverlapping(canonical.as_ptr(), out.cast::<u8>(), canonical.len());
        *out.add(canonical.len()) = 0;
    }
    Some(out)
}

/// realpath(3).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn realpath(path: *const c_char, resolved: *mut c_char) -> *mut c_char {
    guard("realpath", std::ptr::null_mut, || {
        // SAFETY: forwarded C contract.
        unsafe { canonical_path(path, resolved).unwrap_or_else(|| real::realpath(path, resolved)) }
    })
}

/// canonicalize_file_name(3).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn canonicalize_file_name(path: *const c_char) -> *mut c_char {
    guard("canonicalize_file_name", std::ptr::null_mut, || {
        // SAFETY: forwarded C contract.
        unsafe { canonical_path(path, std::ptr::null_mut()).unwrap_or_else(|| real::canonicalize_file_name(path)) }
    })
}

/// The xattr family's answer for an emulated node (none: `get` ENODATA, `list` empty);
/// `None`: the C library answers.
///
/// # Safety
/// `path` is null or a C string.
unsafe fn xattr_path(path: *const c_char, list: bool) -> Option<isize> {
    // SAFETY: forwarded contract.
    let node = unsafe { node(path) }?;
    devices_fs::without_xattrs(node).then(|| if list { 0 } else { fail(libc::ENODATA) as isize })
}

/// getxattr(2) (`ls -l` asks for SELinux labels and ACLs).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn getxattr(path: *const c_char, name: *const c_char, value: *mut c_void, size: usize) -> isize {
    guard_long("getxattr", || {
        // SAFETY: forwarded C contract.
        unsafe { xattr_path(path, false).unwrap_or_else(|| real::getxattr(path, name, value, size)) }
    })
}

/// lgetxattr(2).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lgetxattr(path: *const c_char, name: *const c_char, value: *mut c_void, size: usize) -> isize {
    guard_long("lgetxattr", || {
        // SAFETY: forwarded C contract.
        unsafe { xattr_path(path, false).unwrap_or_else(|| real::lgetxattr(path, name, value, size)) }
    })
}

/// listxattr(2).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn listxattr(path: *const c_char, list: *mut c_char, size: usize) -> isize {
    guard_long("listxattr", || {
        // SAFETY: forwarded C contract.
        unsafe { xattr_path(path, true).unwrap_or_else(|| real::listxattr(path, list, size)) }
    })
}

/// llistxattr(2).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn llistxattr(path: *const c_char, list: *mut c_char, size: usize) -> isize {
    guard_long("llistxattr", || {
        // SAFETY: forwarded C contract.
        unsafe { xattr_path(path, true).unwrap_or_else(|| real::llistxattr(path, list, size)) }
    })
}

/// opendir(3): `/dev` and `/dev/sgx` list the emulated nodes too (`dev_listing`); the
/// host's `/dev/sgx`, if it has none, is a stand-in stream on `/dev`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn opendir(path: *const c_char) -> *mut libc::DIR {
    guard("opendir", std::ptr::null_mut, || {
        // A relative path in the emulated working directory `/dev/sgx` is opened by its
        // absolute spelling (the host's working directory is `/dev`).
        let absolute = (!path.is_null())
            // SAFETY: a non-null path is a C string (the C contract).
            .then(|| devices_fs::in_working_directory(unsafe { CStr::from_ptr(path) }.to_bytes()))
            .flatten()
            .and_then(|absolute| std::ffi::CString::new(absolute).ok());
        let path = absolute.as_ref().map_or(path, |absolute| absolute.as_ptr());
        // SAFETY: a non-null path is a C string (the C contract).
        let listed = (!path.is_null()).then(|| Listed::of(unsafe { CStr::from_ptr(path) }.to_bytes())).flatten();
        // SAFETY: forwarded C contract.
        let dir = unsafe { real::opendir(path) };
        let Some(listed) = listed else { return dir };
        if !dir.is_null() {
            dev_listing::opened(dir as usize, listed, true);
            return dir;
        }
        // SAFETY: reads this thread's errno.
        let errno = unsafe { *libc::__errno_location() };
        if listed != Listed::SgxDir || errno != libc::ENOENT {
            return dir;
        }
        // SAFETY: a C string.
        let stand_in = unsafe { real::opendir(c"/dev".as_ptr()) };
        if stand_in.is_null() {
            set_errno(errno);
            return stand_in;
        }
        dev_listing::opened(stand_in as usize, Listed::SgxDir, false);
        stand_in
    })
}

/// fdopendir(3): a stream of a `/dev` descriptor lists the emulated nodes too, one of
/// `/dev/sgx`'s (`devices_fs::open`) the udev links.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fdopendir(fd: c_int) -> *mut libc::DIR {
    guard("fdopendir", std::ptr::null_mut, || {
        // SAFETY: forwarded C contract.
        let dir = unsafe { real::fdopendir(fd) };
        if !dir.is_null() {
            if devices_fs::descriptor_node(fd) == Some(Node::SgxDir) {
                dev_listing::opened(dir as usize, Listed::SgxDir, false);
            } else if dev_listing::is_dev_descriptor(fd) {
                dev_listing::opened(dir as usize, Listed::Dev, true);
            }
        }
        dir
    })
}

/// readdir_r's work: the next entry copied into `entry` (`*result` null at the end).
///
/// # Safety
/// As readdir_r(3).
unsafe fn readdir_into(dir: *mut libc::DIR, entry: *mut libc::dirent64, result: *mut *mut libc::dirent64) -> c_int {
    // SAFETY: forwarded C contract (glibc's readdir_r reads the stream as readdir does).
    let host = || unsafe { real::readdir(dir) };
    let Some(next) = dev_listing::next(dir as usize, host) else {
        // SAFETY: forwarded C contract.
        return unsafe { real::readdir_r(dir, entry, result) };
    };
    // SAFETY: `entry` holds a `struct dirent`; `next`, when not null, is a whole entry for
    // its d_reclen bytes (at most the struct's size).
    unsafe {
        if !next.is_null() {
            let len = usize::from((*next).d_reclen).min(std::mem::size_of::<libc::dirent64>());
            std::ptr::copy_nonoverlapping(next.cast::<u8>(), entry.cast::<u8>(), len);
        }
        *result = if next.is_null() { std::ptr::null_mut() } else { entry };
    }
    0
}

/// readdir_r(3).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn readdir_r(
    dir: *mut libc::DIR,
    entry: *mut libc::dirent64,
    result: *mut *mut libc::dirent64,
) -> c_int {
    // SAFETY: forwarded C contract.
    guard("readdir_r", || libc::EIO, || unsafe { readdir_into(dir, entry, result) })
}

/// readdir64_r.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn readdir64_r(
    dir: *mut libc::DIR,
    entry: *mut libc::dirent64,
    result: *mut *mut libc::dirent64,
) -> c_int {
    // SAFETY: forwarded C contract.
    guard("readdir64_r", || libc::EIO, || unsafe { readdir_into(dir, entry, result) })
}

/// readdir(3) (its `struct dirent` is `dirent64` on x86-64).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn readdir(dir: *mut libc::DIR) -> *mut libc::dirent64 {
    guard("readdir", std::ptr::null_mut, || {
        // SAFETY: forwarded C contract.
        let host = || unsafe { real::readdir(dir) };
        dev_listing::next(dir as usize, host).unwrap_or_else(host)
    })
}

/// readdir64.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn readdir64(dir: *mut libc::DIR) -> *mut libc::dirent64 {
    guard("readdir64", std::ptr::null_mut, || {
        // SAFETY: forwarded C contract.
        let host = || unsafe { real::readdir64(dir) };
        dev_listing::next(dir as usize, host).unwrap_or_else(host)
    })
}

/// closedir(3).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn closedir(dir: *mut libc::DIR) -> c_int {
    // The stream is closed whatever happens here (a panic is reported).
    guard("closedir", || (), || dev_listing::closing(dir as usize));
    // SAFETY: forwarded C contract.
    unsafe { real::closedir(dir) }
}

/// rewinddir(3): the emulated entries come again.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rewinddir(dir: *mut libc::DIR) {
    // SAFETY: forwarded C contract.
    unsafe { real::rewinddir(dir) };
    guard("rewinddir", || (), || dev_listing::rewound(dir as usize));
}

/// seekdir(3): the emulated entries come again after the host's.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn seekdir(dir: *mut libc::DIR, position: libc::c_long) {
    // SAFETY: forwarded C contract.
    unsafe { real::seekdir(dir, position) };
    guard("seekdir", || (), || dev_listing::rewound(dir as usize));
}

/// `gl_opendir` of the globs below.
unsafe extern "C" fn glob_opendir(path: *const c_char) -> *mut c_void {
    // SAFETY: forwarded C contract.
    unsafe { opendir(path) }.cast()
}

/// `gl_readdir` of the globs below.
unsafe extern "C" fn glob_readdir(dir: *mut c_void) -> *mut libc::dirent64 {
    // SAFETY: a stream `glob_opendir` made.
    unsafe { readdir(dir.cast()) }
}

/// `gl_closedir` of the globs below.
unsafe extern "C" fn glob_closedir(dir: *mut c_void) {
    // SAFETY: a stream `glob_opendir` made.
    unsafe { closedir(dir.cast()) };
}

type GlobErr = Option<unsafe extern "C" fn(*const c_char, c_int) -> c_int>;

/// glob of a pattern: glibc's glob lists directories through internal calls no interposer
/// sees, so a pattern under `/dev` is globbed with GLOB_ALTDIRFUNC and this library's
/// directory and stat functions (the caller's `glob_t` shows its own flags afterwards).
///
/// # Safety
/// As glob(3).
unsafe fn glob_listing(
    call: &'static str,
    pattern: *const c_char,
    flags: c_int,
    pglob: *mut c_void,
    real: impl FnOnce(c_int) -> c_int,
) -> c_int {
    guard(
        call,
        || libc::GLOB_ABORTED,
        || {
            // SAFETY: a non-null pattern is a C string.
            let ours = !pattern.is_null()
                && !pglob.is_null()
                && flags & libc::GLOB_ALTDIRFUNC == 0
                && dev_listing::glob_may_list(unsafe { CStr::from_ptr(pattern) }.to_bytes());
            if !ours {
                return real(flags);
            }
            let g = pglob.cast::<dev_listing::GlobT>();
            // SAFETY: `pglob` is the caller's glob_t, whose layout GlobT is.
            unsafe {
                (*g).gl_opendir = Some(glob_opendir);
                (*g).gl_readdir = Some(glob_readdir);
                (*g).gl_closedir = Some(glob_closedir);
                (*g).gl_lstat = Some(lstat);
                (*g).gl_stat = Some(stat);
            }
            let result = real(flags | libc::GLOB_ALTDIRFUNC);
            // SAFETY: as above.
            unsafe { (*g).gl_flags &= !libc::GLOB_ALTDIRFUNC };
            result
        },
    )
}

/// glob(3).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn glob(pattern: *const c_char, flags: c_int, errfunc: GlobErr, pglob: *mut c_void) -> c_int {
    // SAFETY: forwarded C contract.
    unsafe { glob_listing("glob", pattern, flags, pglob, |flags| real::glob(pattern, flags, errfunc, pglob)) }
}

/// glob64.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn glob64(pattern: *const c_char, flags: c_int, errfunc: GlobErr, pglob: *mut c_void) -> c_int {
    // SAFETY: forwarded C contract.
    unsafe { glob_listing("glob64", pattern, flags, pglob, |flags| real::glob64(pattern, flags, errfunc, pglob)) }
}

/// The listed directory `path` names, relative paths taken in the emulated working
/// directory `/dev/sgx` if the program is there.
fn listed_at(path: &[u8]) -> Option<Listed> {
    match devices_fs::in_working_directory(path) {
        Some(absolute) => Listed::of(&absolute),
        None => Listed::of(path),
    }
}

type ScanFilter = Option<unsafe extern "C" fn(*const libc::dirent64) -> c_int>;
type ScanCompare = Option<unsafe extern "C" fn(*mut *const libc::dirent64, *mut *const libc::dirent64) -> c_int>;

/// scandir of `/dev` or `/dev/sgx` (glibc's lists through internal calls) through this
/// library's `opendir`/`readdir`, as scandir(3) does: entries the filter keeps, copied
/// into `malloc`ed memory, sorted with `compare`.
///
/// # Safety
/// As scandir(3); `path` is a C string.
unsafe fn scandir_listed(
    path: *const c_char,
    list: *mut *mut *mut libc::dirent64,
    filter: ScanFilter,
    compare: ScanCompare,
) -> c_int {
    // SAFETY: forwarded C contract.
    let dir = unsafe { opendir(path) };
    if dir.is_null() {
        return -1;
    }
    let mut found: Vec<*mut libc::dirent64> = Vec::new();
    let size = std::mem::size_of::<libc::dirent64>();
    let mut failed = false;
    loop {
        // SAFETY: `dir` is open.
        let entry = unsafe { readdir(dir) };
        if entry.is_null() {
            break;
        }
        // SAFETY: the caller's filter takes an entry.
        if filter.is_some_and(|keep| unsafe { keep(entry) } == 0) {
            continue;
        }
        // SAFETY: calloc of one entry; freed by the caller (or below).
        let copy = unsafe { libc::calloc(1, size) }.cast::<libc::dirent64>();
        if copy.is_null() {
            failed = true;
            break;
        }
        // SAFETY: the entry is readable for d_reclen bytes (at most `size`); `copy` holds `size`.
        unsafe {
            let len = usize::from((*entry).d_reclen).clamp(std::mem::offset_of!(libc::dirent64, d_name), size);
            std::ptr::copy_nonoverlapping(entry.cast::<u8>(), copy.cast::<u8>(), len);
        }
        found.push(copy);
    }
    // SAFETY: `dir` is open.
    unsafe { closedir(dir) };
    let array = if failed {
        std::ptr::null_mut()
    } else {
        // SAFETY: an array of `found.len()` pointers, handed to the caller.
        unsafe { libc::malloc(found.len().max(1) * 8) }.cast::<*mut libc::dirent64>()
    };
    if array.is_null() {
        for entry in found {
            // SAFETY: calloc'ed above.
            unsafe { libc::free(entry.cast()) };
        }
        return fail(libc::ENOMEM);
    }
    if let Some(compare) = compare {
        // SAFETY: qsort passes pointers to elements (`const struct dirent **`), which is what
        // scandir's comparison takes.
        let compare: extern "C" fn(*const c_void, *const c_void) -> c_int = unsafe { std::mem::transmute(compare) };
        // SAFETY: sorts `found` in place.
        unsafe { libc::qsort(found.as_mut_ptr().cast(), found.len(), 8, Some(compare)) };
    }
    // SAFETY: `array` holds `found.len()` pointers; `list` is the caller's.
    unsafe {
        std::ptr::copy_nonoverlapping(found.as_ptr(), array, found.len());
        *list = array;
    }
    found.len() as c_int
}

/// scandir(3).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn scandir(
    path: *const c_char,
    list: *mut *mut *mut libc::dirent64,
    filter: ScanFilter,
    compare: ScanCompare,
) -> c_int {
    guard_int("scandir", || {
        // SAFETY: a non-null path is a C string.
        if !path.is_null() && listed_at(unsafe { CStr::from_ptr(path) }.to_bytes()).is_some() {
            // SAFETY: forwarded C contract.
            return unsafe { scandir_listed(path, list, filter, compare) };
        }
        // SAFETY: forwarded C contract.
        unsafe { real::scandir(path, list, filter, compare) }
    })
}

/// scandir64.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn scandir64(
    path: *const c_char,
    list: *mut *mut *mut libc::dirent64,
    filter: ScanFilter,
    compare: ScanCompare,
) -> c_int {
    guard_int("scandir64", || {
        // SAFETY: a non-null path is a C string.
        if !path.is_null() && listed_at(unsafe { CStr::from_ptr(path) }.to_bytes()).is_some() {
            // SAFETY: forwarded C contract.
            return unsafe { scandir_listed(path, list, filter, compare) };
        }
        // SAFETY: forwarded C contract.
        unsafe { real::scandir64(path, list, filter, compare) }
    })
}

/// Copies an emulated read's bytes out as read(2) returns them.
///
/// # Safety
/// `buf` is writable for the length of a successful answer (`count` bytes, which the
/// answer never exceeds).
unsafe fn deliver(answer: Result<Vec<u8>, c_int>, buf: *mut c_void) -> isize {
    match answer {
        Ok(bytes) => {
            // SAFETY: see above.
            unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), buf.cast::<u8>(), bytes.len()) };
            bytes.len() as isize
        }
        Err(errno) => fail(errno) as isize,
    }
}

/// read(2): on an emulated MSR descriptor, the MSR at the file position.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn read(fd: c_int, buf: *mut c_void, count: usize) -> isize {
    if !devices_fs::any_msr_open() {
        // SAFETY: forwarded C contract.
        return unsafe { real::read(fd, buf, count) };
    }
    guard_long("read", || match devices_fs::msr_read_at_position(fd, count) {
        // SAFETY: forwarded C contract.
        Some(answer) => unsafe { deliver(answer, buf) },
        // SAFETY: forwarded C contract.
        None => unsafe { real::read(fd, buf, count) },
    })
}

/// pread(2): on an emulated MSR descriptor, the MSR whose index is `offset`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pread(fd: c_int, buf: *mut c_void, count: usize, offset: off_t) -> isize {
    guard_long("pread", || match devices_fs::msr_pread(fd, count, offset) {
        // SAFETY: forwarded C contract.
        Some(answer) => unsafe { deliver(answer, buf) },
        // SAFETY: forwarded C contract.
        None => unsafe { real::pread(fd, buf, count, offset) },
    })
}

/// pread64.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pread64(fd: c_int, buf: *mut c_void, count: usize, offset: off_t) -> isize {
    guard_long("pread64", || match devices_fs::msr_pread(fd, count, offset) {
        // SAFETY: forwarded C contract.
        Some(answer) => unsafe { deliver(answer, buf) },
        // SAFETY: forwarded C contract.
        None => unsafe { real::pread64(fd, buf, count, offset) },
    })
}

/// lseek's answer on an emulated MSR descriptor; `None`: the C library answers.
fn msr_seek(fd: c_int, offset: off_t, whence: c_int) -> Option<off_t> {
    if !devices_fs::any_msr_open() {
        return None;
    }
    Some(match devices_fs::msr_seek(fd, offset, whence)? {
        Ok(position) => position,
        Err(errno) => off_t::from(fail(errno)),
    })
}

/// lseek(2).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lseek(fd: c_int, offset: off_t, whence: c_int) -> off_t {
    guard_long("lseek", || {
        // SAFETY: forwarded C contract.
        msr_seek(fd, offset, whence).unwrap_or_else(|| unsafe { real::lseek(fd, offset, whence) })
    })
}

/// lseek64.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lseek64(fd: c_int, offset: off_t, whence: c_int) -> off_t {
    guard_long("lseek64", || {
        // SAFETY: forwarded C contract.
        msr_seek(fd, offset, whence).unwrap_or_else(|| unsafe { real::lseek64(fd, offset, whence) })
    })
}

/// readv/preadv on an emulated MSR descriptor (`offset` `None`: the file position), or
/// the C library's `real` call.
///
/// # Safety
/// As readv(2): `iov` holds `count` iovecs, each writable for its length.
unsafe fn readv_msr(
    call: &'static str,
    fd: c_int,
    iov: *const libc::iovec,
    count: c_int,
    offset: Option<off_t>,
    real: impl FnOnce() -> isize,
) -> isize {
    if !devices_fs::any_msr_open() || iov.is_null() || !(0..=libc::UIO_MAXIOV).contains(&count) {
        return real();
    }
    guard_long(call, || {
        // SAFETY: the caller's `count` iovecs.
        let segments = unsafe { std::slice::from_raw_parts(iov, count as usize) };
        let lengths: Vec<usize> = segments.iter().map(|segment| segment.iov_len).collect();
        match devices_fs::msr_readv(fd, &lengths, offset) {
            None => real(),
            Some(Err(errno)) => fail(errno) as isize,
            Some(Ok(read)) => {
                let mut total = 0;
                for (segment, bytes) in segments.iter().zip(&read) {
                    // SAFETY: each segment is writable for its length, which its bytes never
                    // exceed.
                    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), segment.iov_base.cast(), bytes.len()) };
                    total += bytes.len() as isize;
                }
                total
            }
        }
    })
}

/// readv(2): on an emulated MSR descriptor, the MSR at the file position in each segment.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn readv(fd: c_int, iov: *const libc::iovec, count: c_int) -> isize {
    // SAFETY: forwarded C contract.
    unsafe { readv_msr("readv", fd, iov, count, None, || real::readv(fd, iov, count)) }
}

/// preadv(2): on an emulated MSR descriptor, the MSR whose index is `offset`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn preadv(fd: c_int, iov: *const libc::iovec, count: c_int, offset: off_t) -> isize {
    // SAFETY: forwarded C contract.
    unsafe { readv_msr("preadv", fd, iov, count, Some(offset), || real::preadv(fd, iov, count, offset)) }
}

/// preadv64.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn preadv64(fd: c_int, iov: *const libc::iovec, count: c_int, offset: off_t) -> isize {
    // SAFETY: forwarded C contract.
    unsafe { readv_msr("preadv64", fd, iov, count, Some(offset), || real::preadv64(fd, iov, count, offset)) }
}

/// preadv2(2) (offset -1: the file position).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn preadv2(
    fd: c_int,
    iov: *const libc::iovec,
    count: c_int,
    offset: off_t,
    flags: c_int,
) -> isize {
    let at = (offset != -1).then_some(offset);
    // SAFETY: forwarded C contract.
    unsafe { readv_msr("preadv2", fd, iov, count, at, || real::preadv2(fd, iov, count, offset, flags)) }
}

/// preadv64v2.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn preadv64v2(
    fd: c_int,
    iov: *const libc::iovec,
    count: c_int,
    offset: off_t,
    flags: c_int,
) -> isize {
    let at = (offset != -1).then_some(offset);
    // SAFETY: forwarded C contract.
    unsafe { readv_msr("preadv64v2", fd, iov, count, at, || real::preadv64v2(fd, iov, count, offset, flags)) }
}

/// getdents64(2) (glibc's wrapper; its `readdir` lists through an internal call instead,
/// so a `DIR` stream's entries are added by `readdir` alone): a descriptor of `/dev` lists
/// the emulated nodes after the host's, one standing for `/dev/sgx` the udev links
/// (`dev_listing::getdents`).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn getdents64(fd: c_int, buf: *mut c_void, count: usize) -> isize {
    guard_long("getdents64", || {
        // SAFETY: forwarded C contract.
        let host = || unsafe { real::getdents64(fd, buf, count) } as libc::c_long;
        match dev_listing::getdents(fd, count, dev_listing::DirentLayout::Dirent64, host) {
            None => host() as isize,
            Some(dev_listing::Getdents::Host(result)) => result as isize,
            Some(dev_listing::Getdents::Failed(errno)) => fail(errno) as isize,
            Some(dev_listing::Getdents::Emulated(records)) => {
                // SAFETY: `buf` holds `count` bytes, which the records never exceed.
                unsafe { std::ptr::copy_nonoverlapping(records.as_ptr(), buf.cast::<u8>(), records.len()) };
                records.len() as isize
            }
        }
    })
}

/// A chdir's `result`, noting where the working directory now is if it worked.
fn changed_directory(result: c_int, into_sgx_dir: bool) -> c_int {
    if result == 0 {
        devices_fs::changed_directory(into_sgx_dir);
    }
    result
}

/// chdir(2): `/dev/sgx`, where the host has none, is entered as the host's `/dev` with the
/// emulator noting that the program is in `/dev/sgx` (see `devices_fs::in_working_directory`
/// for the relative names it then answers for).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn chdir(path: *const c_char) -> c_int {
    guard_int("chdir", || {
        if path.is_null() {
            // SAFETY: forwarded C contract (the C library reports EFAULT).
            return unsafe { real::chdir(path) };
        }
        // SAFETY: a non-null path is a C string.
        let plan = devices_fs::chdir(unsafe { CStr::from_ptr(path) }.to_bytes());
        let target = match &plan {
            devices_fs::Chdir::Fail(errno) => return fail(*errno),
            devices_fs::Chdir::IntoSgxDir => c"/dev".as_ptr(),
            devices_fs::Chdir::Host(Some(absolute)) => absolute.as_ptr(),
            devices_fs::Chdir::Host(None) => path,
        };
        // SAFETY: `target` is a C string (the program's, or one `plan` owns for the call).
        let result = unsafe { real::chdir(target) };
        changed_directory(result, plan == devices_fs::Chdir::IntoSgxDir)
    })
}

/// fchdir(2): a descriptor standing for `/dev/sgx` (one of `/dev`) enters it as `chdir` does.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fchdir(fd: c_int) -> c_int {
    guard_int("fchdir", || {
        // SAFETY: forwarded C contract.
        let result = unsafe { real::fchdir(fd) };
        changed_directory(result, devices_fs::fchdir_into_sgx_dir(fd))
    })
}

/// getcwd(3): `/dev/sgx` while the program is in it (glibc's extension of a null `buf`
/// allocating the result kept).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn getcwd(buf: *mut c_char, size: usize) -> *mut c_char {
    guard("getcwd", std::ptr::null_mut, || {
        let room = if buf.is_null() && size == 0 { usize::MAX } else { size };
        match devices_fs::getcwd(room) {
            // SAFETY: forwarded C contract.
            None => unsafe { real::getcwd(buf, size) },
            Some(Err(errno)) => {
                set_errno(errno);
                std::ptr::null_mut()
            }
            Some(Ok(cwd)) => {
                let out = if buf.is_null() {
                    // SAFETY: malloc of the answer's length; the caller frees it.
                    unsafe { libc::malloc(size.max(cwd.len())) }.cast::<c_char>()
                } else {
                    buf
                };
                if out.is_null() {
                    set_errno(libc::ENOMEM);
                    return out;
                }
                // SAFETY: `out` holds at least `cwd.len()` bytes (checked against `size`, or
                // allocated so).
                unsafe { std::ptr::copy_nonoverlapping(cwd.as_ptr().cast::<c_char>(), out, cwd.len()) };
                out
            }
        }
    })
}

/// close(2).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn close(fd: c_int) -> c_int {
    // The emulator's own descriptors are not in the program's table.
    if guard("close", || false, || own_fds::is_own(fd)) {
        return fail(libc::EBADF);
    }
    // A panic while forgetting the descriptor still closes it (the kernel's close cannot
    // fail to release a descriptor either).
    let marked = guard(
        "close",
        || false,
        || {
            devices_fs::closing(fd);
            true
        },
    );
    // SAFETY: forwarded C contract.
    let result = unsafe { real::close(fd) };
    // The emulator forgets the descriptor only once the kernel has: a call racing the
    // close finds EBADF, never the `/dev/null` underneath.
    let forgotten = marked
        && guard(
            "close",
            || false,
            || {
                devices_fs::closed(fd);
                true
            },
        );
    if forgotten { result } else { fail(libc::EIO) }
}

/// dup(2): a copy of an emulated descriptor is one too.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dup(fd: c_int) -> c_int {
    if let Err(errno) = guard("dup", || Ok(()), || own_fds::check_named(fd)) {
        return fail(errno);
    }
    // SAFETY: forwarded C contract.
    let new = unsafe { real::dup(fd) };
    duplicated("dup", fd, new)
}

/// dup2(2).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dup2(fd: c_int, new: c_int) -> c_int {
    if let Err(errno) = guard("dup2", || Ok(()), || own_fds::before_dup_onto(fd, new)) {
        return fail(errno);
    }
    // SAFETY: forwarded C contract.
    let result = unsafe { real::dup2(fd, new) };
    duplicated("dup2", fd, result)
}

/// dup3(2).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dup3(fd: c_int, new: c_int, flags: c_int) -> c_int {
    if let Err(errno) = guard("dup3", || Ok(()), || own_fds::before_dup_onto(fd, new)) {
        return fail(errno);
    }
    // SAFETY: forwarded C contract.
    let result = unsafe { real::dup3(fd, new, flags) };
    duplicated("dup3", fd, result)
}

/// fcntl(2). Only F_DUPFD and F_DUPFD_CLOEXEC concern the emulator; every command takes at
/// most one integer or pointer argument, passed on as it came.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fcntl(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int {
    if let Err(errno) = guard("fcntl", || Ok(()), || own_fds::check_named(fd)) {
        return fail(errno);
    }
    // SAFETY: forwarded C contract.
    let result = unsafe { real::fcntl(fd, cmd, arg) };
    fcntl_done(fd, cmd, result)
}

/// fcntl64: glibc's fcntl for programs built with 64-bit file offsets.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fcntl64(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int {
    if let Err(errno) = guard("fcntl64", || Ok(()), || own_fds::check_named(fd)) {
        return fail(errno);
    }
    // SAFETY: forwarded C contract.
    let result = unsafe { real::fcntl64(fd, cmd, arg) };
    fcntl_done(fd, cmd, result)
}

/// close_range(2) (glibc 2.34+): the program's descriptors in the range, never the
/// emulator's (see `own_fds`).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn close_range(first: c_uint, last: c_uint, flags: c_int) -> c_int {
    guard_int("close_range", || {
        let r = own_fds::close_range(first, last, flags as c_uint);
        if r < 0 { fail(-r as c_int) } else { 0 }
    })
}

/// closefrom(3) (glibc 2.34+): every descriptor of the program from `low` up.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn closefrom(low: c_int) {
    guard(
        "closefrom",
        || (),
        || {
            let _ = own_fds::close_range(low.max(0) as c_uint, c_uint::MAX, 0);
        },
    )
}

/// After fcntl `cmd` on `fd` returned `result`: a duplicated descriptor is registered.
fn fcntl_done(fd: c_int, cmd: c_int, result: c_int) -> c_int {
    if cmd == libc::F_DUPFD || cmd == libc::F_DUPFD_CLOEXEC { duplicated("fcntl", fd, result) } else { result }
}

/// After `call` made `new` (if not negative, an error) a copy of descriptor `fd`. (The
/// copy exists whatever happens here: a panic is reported, and the copy is returned.)
fn duplicated(call: &'static str, fd: c_int, new: c_int) -> c_int {
    guard(
        call,
        || new,
        || {
            devices_fs::duplicated(fd, new);
            new
        },
    )
}

/// An emulated call's result (`Err(errno)`) as the C function returns it.
fn done(result: Result<(), c_int>) -> c_int {
    match result {
        Ok(()) => 0,
        Err(errno) => fail(errno),
    }
}

/// ioctl(2).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ioctl(fd: c_int, request: c_ulong, arg: *mut c_void) -> c_int {
    guard_int("ioctl", || match devices_fs::device_engine(fd) {
        Some(engine) => done(engine.ioctl(fd, request as u32, arg as u64).map_err(|e| e.0)),
        // SAFETY: forwarded C contract.
        None => unsafe { real::ioctl(fd, request, arg) },
    })
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
    guard(
        "mmap",
        || libc::MAP_FAILED,
        || match devices_fs::device_engine(fd) {
            Some(engine) => match engine.mmap_at(addr as u64, len as u64, prot, flags, fd, off as u64) {
                Ok(at) => at as *mut c_void,
                Err(e) => {
                    set_errno(e.0);
                    libc::MAP_FAILED
                }
            },
            None if flags & libc::MAP_ANONYMOUS == 0 && own_fds::is_own(fd) => {
                set_errno(libc::EBADF);
                libc::MAP_FAILED
            }
            None => {
                // SAFETY: forwarded C contract.
                let host = || unsafe { real::mmap(addr, len, prot, flags, fd, off) };
                match program_maps::replacing_engine(addr as u64, len as u64, flags) {
                    Some(engine) => mapped_over(engine, addr as u64, len as u64, host),
                    None => host(),
                }
            }
        },
    )
}

/// A host mapping call `host` (mmap, mremap) that puts a mapping of the program over
/// `[addr, addr + len)`, part of an enclave mapping: carried out with the engine's
/// enclave mapping there forgotten (see `program_maps`).
fn mapped_over(engine: &sgxemu_native::Engine, addr: u64, len: u64, host: impl FnOnce() -> *mut c_void) -> *mut c_void {
    let made = engine.replaced_by_program(addr, len, || {
        let at = host();
        if at == libc::MAP_FAILED { Err(std::io::Error::last_os_error()) } else { Ok(at) }
    });
    match made {
        Ok(at) => at,
        Err(e) => {
            set_errno(e.raw_os_error().unwrap_or(libc::ENOMEM));
            libc::MAP_FAILED
        }
    }
}

/// mremap(2): of an enclave mapping as the kernel's SGX VMA allows; onto one
/// (MREMAP_FIXED) it replaces the enclave mapping there, as a MAP_FIXED mmap does. The
/// fifth argument is read only with MREMAP_FIXED, as the C library's does.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mremap(
    old: *mut c_void,
    old_len: usize,
    new_len: usize,
    flags: c_int,
    new: *mut c_void,
) -> *mut c_void {
    // SAFETY: forwarded C contract.
    let host = || unsafe { real::mremap(old, old_len, new_len, flags, new) };
    guard(
        "mremap",
        || libc::MAP_FAILED,
        || {
            if let Some(engine) = devices_fs::mapping_engine(old as u64, old_len as u64) {
                let args = [old as u64, old_len as u64, new_len as u64, flags as u64, new as u64, 0];
                let r = sgxemu_native::seccomp::mremap_enclave(engine, args);
                if r < 0 {
                    set_errno(-r as c_int);
                    return libc::MAP_FAILED;
                }
                return r as *mut c_void;
            }
            match program_maps::remap_target_engine(new as u64, new_len as u64, flags) {
                Some(engine) => mapped_over(engine, new as u64, new_len as u64, host),
                None => host(),
            }
        },
    )
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
    guard_int("munmap", || match devices_fs::mapping_engine(addr as u64, len as u64) {
        Some(engine) => done(engine.munmap(addr as u64, len as u64).map_err(|e| e.0)),
        // SAFETY: forwarded C contract.
        None => unsafe { real::munmap(addr, len) },
    })
}

/// mprotect(2).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mprotect(addr: *mut c_void, len: usize, prot: c_int) -> c_int {
    guard_int("mprotect", || match devices_fs::mapping_engine(addr as u64, len as u64) {
        Some(engine) => done(engine.mprotect(addr as u64, len as u64, prot).map_err(|e| e.0)),
        // SAFETY: forwarded C contract.
        None => unsafe { real::mprotect(addr, len, prot) },
    })
}

/// getauxval(3): AT_SYSINFO_EHDR names the synthetic vDSO; everything else is the real
/// auxiliary vector's.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn getauxval(kind: c_ulong) -> c_ulong {
    // SAFETY: forwarded C contract.
    let host = || unsafe { real::getauxval(kind) };
    guard("getauxval", host, || {
        if kind == libc::AT_SYSINFO_EHDR
            && let Some(v) = vdso::vdso(enclu::soft_eenter)
        {
            return v.base;
        }
        host()
    })
}

/// Where [`__vdso_sgx_enter_enclave`] jumps: the synthetic vDSO's entry point (0 until the
/// vDSO is built, normally by [`init`] before `main`).
static VDSO_ENTRY: AtomicU64 = AtomicU64::new(0);

/// The synthetic vDSO's `__vdso_sgx_enter_enclave`, built now if it was not yet; 0 if it
/// cannot be.
fn vdso_entry() -> u64 {
    let entry = vdso::vdso(enclu::soft_eenter).map_or(0, |v| v.enter_enclave);
    VDSO_ENTRY.store(entry, Ordering::Release);
    entry
}

/// Called by [`__vdso_sgx_enter_enclave`] when [`VDSO_ENTRY`] is still 0.
extern "C" fn vdso_entry_lazy() -> u64 {
    guard("__vdso_sgx_enter_enclave", || 0, vdso_entry)
}

/// `__vdso_sgx_enter_enclave` for programs that find the vDSO through the dynamic linker
/// (a weak or versioned `__vdso_sgx_enter_enclave@LINUX_2.6` reference, often with
/// `DT_NEEDED linux-vdso.so.1`, as Fortanix's runner does) or `dlsym`: this library comes
/// before every `DT_NEEDED` object in the lookup scope, so the reference binds here. A
/// tail jump to the synthetic vDSO's entry point: the caller's return address and stack
/// arguments (`run`) reach it untouched. RAX is scratch (the entry point's first act is
/// `mov eax, ecx`). If the vDSO was not built yet, every argument register is saved around
/// building it; if it cannot be built, the call returns -ENOSYS.
#[unsafe(no_mangle)]
#[unsafe(naked)]
pub unsafe extern "C" fn __vdso_sgx_enter_enclave() {
    // SAFETY (naked function): the body is the whole function and returns through the
    // entry point's own `ret` or its own `ret`; RSP is balanced on every path.
    std::arch::naked_asm!(
        "mov rax, qword ptr [rip + {entry}]",
        "test rax, rax",
        "jz 2f",
        "jmp rax",
        "2:",
        // RSP is 8 mod 16 here; seven pushes make it 0 mod 16 for the call.
        "push rdi",
        "push rsi",
        "push rdx",
        "push rcx",
        "push r8",
        "push r9",
        "push r9",
        "call {lazy}",
        "pop r9",
        "pop r9",
        "pop r8",
        "pop rcx",
        "pop rdx",
        "pop rsi",
        "pop rdi",
        "test rax, rax",
        "jz 3f",
        "jmp rax",
        "3:",
        "mov eax, -38",
        "ret",
        entry = sym VDSO_ENTRY,
        lazy = sym vdso_entry_lazy,
    )
}

/// What the `dlsym`/`dlvsym` interposers do: return `answer` (`real` 0), or jump to `real`
/// with the caller's arguments (returned in RAX:RDX).
#[repr(C)]
struct Lookup {
    answer: usize,
    real: usize,
}

/// Whether a lookup of `name` (and `version`, for dlvsym) in `handle` is the emulator's to
/// answer: `__vdso_sgx_enter_enclave` (version LINUX_2.6) in the vDSO's handle (the
/// synthetic image's entry point), in RTLD_DEFAULT or RTLD_NEXT (this library's).
///
/// # Safety
/// `name` and `version` are null or C strings.
unsafe fn vdso_symbol_answer(handle: *mut c_void, name: *const c_char, version: *const c_char) -> Option<usize> {
    if name.is_null() {
        return None;
    }
    // SAFETY: a C string (checked non-null).
    if unsafe { CStr::from_ptr(name) }.to_bytes() != b"__vdso_sgx_enter_enclave" {
        return None;
    }
    // SAFETY: as above.
    if !version.is_null() && unsafe { CStr::from_ptr(version) }.to_bytes() != b"LINUX_2.6" {
        return None;
    }
    guard(
        "dlsym",
        || None,
        || {
            if handle == libc::RTLD_DEFAULT || handle == libc::RTLD_NEXT {
                return Some(__vdso_sgx_enter_enclave as *const () as usize);
            }
            if sgxemu_native::dl_symbols::is_vdso_handle(handle) {
                return vdso::vdso(enclu::soft_eenter).map(|v| v.enter_enclave as usize);
            }
            None
        },
    )
}

/// Decides a `dlsym` call (no allocation, lock or panic for any other name: malloc
/// implementations call dlsym while they initialise).
unsafe extern "C" fn dlsym_lookup(handle: *mut c_void, name: *const c_char) -> Lookup {
    // SAFETY: forwarded C contract.
    match unsafe { vdso_symbol_answer(handle, name, std::ptr::null()) } {
        Some(answer) => Lookup { answer, real: 0 },
        None => Lookup { answer: 0, real: sgxemu_native::dl_symbols::real_dlsym() },
    }
}

/// Decides a `dlvsym` call, as [`dlsym_lookup`].
unsafe extern "C" fn dlvsym_lookup(handle: *mut c_void, name: *const c_char, version: *const c_char) -> Lookup {
    if version.is_null() {
        return Lookup { answer: 0, real: sgxemu_native::dl_symbols::real_dlvsym() };
    }
    // SAFETY: forwarded C contract.
    match unsafe { vdso_symbol_answer(handle, name, version) } {
        Some(answer) => Lookup { answer, real: 0 },
        None => Lookup { answer: 0, real: sgxemu_native::dl_symbols::real_dlvsym() },
    }
}

/// dlsym(3): `__vdso_sgx_enter_enclave` is found in the vDSO's handle
/// (`dlopen("linux-vdso.so.1", RTLD_NOLOAD)`), RTLD_DEFAULT and RTLD_NEXT, whatever the
/// host's vDSO has; any other lookup is the C library's, reached by a tail jump so that
/// RTLD_NEXT is resolved from the caller's object (`sgxemu_native::dl_symbols`).
#[unsafe(no_mangle)]
#[unsafe(naked)]
pub unsafe extern "C" fn dlsym(handle: *mut c_void, name: *const c_char) -> *mut c_void {
    // SAFETY (naked function): the arguments are saved around the decision and restored
    // for the jump; RSP is balanced on every path (8 mod 16 at entry, 0 at the call).
    std::arch::naked_asm!(
        "push rdi",
        "push rsi",
        "sub rsp, 8",
        "call {lookup}",
        "add rsp, 8",
        "pop rsi",
        "pop rdi",
        "test rdx, rdx",
        "jz 2f",
        "jmp rdx",
        "2:",
        "ret",
        lookup = sym dlsym_lookup,
    )
}

/// dlvsym(3), as [`dlsym`] (`__vdso_sgx_enter_enclave` at version LINUX_2.6).
#[unsafe(no_mangle)]
#[unsafe(naked)]
pub unsafe extern "C" fn dlvsym(handle: *mut c_void, name: *const c_char, version: *const c_char) -> *mut c_void {
    // SAFETY (naked function): as `dlsym`; three pushes make RSP 0 mod 16 at the call, and
    // the jump target moves to R11 (scratch, no argument) before RDX is restored.
    std::arch::naked_asm!(
        "push rdi",
        "push rsi",
        "push rdx",
        "call {lookup}",
        "mov r11, rdx",
        "pop rdx",
        "pop rsi",
        "pop rdi",
        "test r11, r11",
        "jz 2f",
        "jmp r11",
        "2:",
        "ret",
        lookup = sym dlvsym_lookup,
    )
}

/// sigaction(2): dispositions of the signals the emulator needs are recorded and honoured
/// by its handlers (they reach the program's handler for every signal that is not the
/// emulator's); handlers of asynchronous signals are installed wrapped, so a signal that
/// arrives while enclave code runs is delivered after an AEX, as on hardware.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sigaction(sig: c_int, act: *const libc::sigaction, old: *mut libc::sigaction) -> c_int {
    guard_int("sigaction", || {
        if signals::owns(sig) {
            // SAFETY: forwarded C contract.
            unsafe { signals::app_sigaction(sig, act, old) };
            return 0;
        }
        // SAFETY: forwarded C contract.
        unsafe { signals::wrap_async(sig, act, old) }
    })
}

/// pthread_sigmask(3): the emulator's own signals (its traps and its IPI) stay unblocked
/// in the real mask, so a thread that blocks everything still runs enclaves; the program is
/// told the mask it asked for (`sgxemu_native::signals::program_mask_change`).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pthread_sigmask(how: c_int, set: *const libc::sigset_t, old: *mut libc::sigset_t) -> c_int {
    guard(
        "pthread_sigmask",
        || libc::EINVAL,
        // SAFETY: forwarded C contract.
        || unsafe { signals::program_sigprocmask(how, set, old) }.err().unwrap_or(0),
    )
}

/// What a thread started through [`pthread_create`] runs first.
struct ThreadStart {
    start: extern "C" fn(*mut c_void) -> *mut c_void,
    arg: *mut c_void,
    /// The creator's blocked emulator signals, as the program sees its mask.
    wish: u64,
}

extern "C" fn thread_start(raw: *mut c_void) -> *mut c_void {
    // SAFETY: `pthread_create` below passes a leaked Box<ThreadStart> to this thread alone.
    let start = unsafe { Box::from_raw(raw.cast::<ThreadStart>()) };
    signals::inherit_wish(start.wish);
    (start.start)(start.arg)
}

/// pthread_create(3): the new thread inherits its creator's signal mask as the program
/// sees it, the emulator's signals included (see [`pthread_sigmask`]).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pthread_create(
    thread: *mut libc::pthread_t,
    attr: *const libc::pthread_attr_t,
    start: extern "C" fn(*mut c_void) -> *mut c_void,
    arg: *mut c_void,
) -> c_int {
    let wish = signals::inherited_wish();
    if wish == 0 {
        // SAFETY: forwarded C contract.
        return unsafe { real::pthread_create(thread, attr, start, arg) };
    }
    let raw = Box::into_raw(Box::new(ThreadStart { start, arg, wish }));
    // SAFETY: forwarded C contract, with our start routine and its argument.
    let ret = unsafe { real::pthread_create(thread, attr, thread_start, raw.cast()) };
    if ret != 0 {
        // SAFETY: no thread was created: the box is still ours alone.
        drop(unsafe { Box::from_raw(raw) });
    }
    ret
}

/// sigprocmask(2), as [`pthread_sigmask`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sigprocmask(how: c_int, set: *const libc::sigset_t, old: *mut libc::sigset_t) -> c_int {
    // SAFETY: forwarded C contract.
    guard_int("sigprocmask", || match unsafe { signals::program_sigprocmask(how, set, old) } {
        Ok(()) => 0,
        Err(errno) => fail(errno),
    })
}

/// syscall(2), the C library's generic entry point: a program's call for a number the
/// seccomp filter traps from its own `syscall` instructions (open, ioctl, mmap, the stat
/// family, the signal mask…) is carried out as such a trapped call is; every other call —
/// other numbers, and every call from the emulator, the C library or the dynamic linker —
/// reaches the C library's `syscall` by a tail jump, untouched (a `vfork` made through it
/// returns as it would without sgxemu).
#[unsafe(no_mangle)]
#[unsafe(naked)]
pub unsafe extern "C" fn syscall(
    nr: libc::c_long,
    a0: libc::c_long,
    a1: libc::c_long,
    a2: libc::c_long,
    a3: libc::c_long,
    a4: libc::c_long,
    a5: libc::c_long,
) -> libc::c_long {
    // SAFETY (naked function): the six argument registers are saved around the decision
    // and restored for either jump, which leaves the caller's return address and stack
    // arguments (the sixth system-call argument) where they were; RSP is 8 mod 16 at entry
    // and 0 at the call.
    std::arch::naked_asm!(
        "push rdi",
        "push rsi",
        "push rdx",
        "push rcx",
        "push r8",
        "push r9",
        "mov rsi, [rsp + 48]",
        "sub rsp, 8",
        "call {decide}",
        "add rsp, 8",
        "pop r9",
        "pop r8",
        "pop rcx",
        "pop rdx",
        "pop rsi",
        "pop rdi",
        "test rax, rax",
        "jz 2f",
        "jmp rax",
        "2:",
        "jmp {emulated}",
        decide = sym syscall_decide,
        emulated = sym syscall_emulated,
    )
}

/// Where [`syscall`] goes for `nr` called from `caller`: 0 for [`syscall_emulated`], else
/// the C library's `syscall`. No system call, no allocation: signal handlers call it too.
extern "C" fn syscall_decide(nr: libc::c_long, caller: u64) -> usize {
    let real = sgxemu_native::dl_symbols::real_syscall();
    if real != 0 && !sgxemu_native::seccomp::carries_out_syscall_function(nr, caller) { real } else { 0 }
}

/// A program's `syscall()` call that the emulator carries out, with the C convention
/// (-1 and errno on failure).
extern "C" fn syscall_emulated(
    nr: libc::c_long,
    a0: libc::c_long,
    a1: libc::c_long,
    a2: libc::c_long,
    a3: libc::c_long,
    a4: libc::c_long,
    a5: libc::c_long,
) -> libc::c_long {
    guard_long("syscall", || {
        if sgxemu_native::dl_symbols::real_syscall() == 0 {
            return fail(libc::ENOSYS).into();
        }
        let result = if nr == libc::SYS_rt_sigprocmask {
            if a3 != 8 {
                -libc::c_long::from(libc::EINVAL)
            } else {
                // SAFETY: forwarded C contract: the sets are null or valid, as for the call.
                match unsafe {
                    signals::program_sigprocmask(a0 as c_int, a1 as *const libc::sigset_t, a2 as *mut libc::sigset_t)
                } {
                    Ok(()) => 0,
                    Err(errno) => -libc::c_long::from(errno),
                }
            }
        } else {
            let args = [a0, a1, a2, a3, a4, a5].map(|a| a as u64);
            sgxemu_native::seccomp::carry_out(nr, args, &args as *const [u64; 6] as u64)
        };
        if (-4095..0).contains(&result) { fail(-result as c_int).into() } else { result }
    })
}

/// sigaltstack(2): once the emulator's alternate stack is the thread's, the program's own is
/// recorded and reported instead (`sgxemu_native::alt_stack::app_sigaltstack`).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sigaltstack(ss: *const libc::stack_t, old: *mut libc::stack_t) -> c_int {
    // SAFETY: forwarded C contract.
    guard_int("sigaltstack", || unsafe { sgxemu_native::alt_stack::app_sigaltstack(ss, old) })
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

/// Prints `--stats` if asked for, in the process whose platform they describe (never in a
/// `vfork` child, which shares its parent's memory).
extern "C" fn print_stats() {
    guard(
        "exit",
        || (),
        || {
            let ours = sgxemu_native::Engine::get().is_some_and(|e| e.pid == sys::getpid());
            if ours && sgxemu_native::config::stats_requested() {
                sgxemu_native::stats::print_at_exit();
            }
        },
    );
}

/// _exit(2): processes that end without `exit` (fork children, test harnesses) still print
/// `--stats`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn _exit(status: c_int) -> ! {
    print_stats();
    // SAFETY: forwarded C contract.
    unsafe { real::_exit(status) };
    // Only if the C library had no _exit: end the process with the system call.
    // SAFETY: exit_group never returns.
    unsafe { libc::syscall(libc::SYS_exit_group, status as libc::c_long) };
    #[allow(clippy::empty_loop, reason = "exit_group does not return")]
    loop {}
}

/// Runs before `main` (after the constructors of the program's other libraries): makes
/// CPUID read as the emulated part, installs the emulator's handlers and builds the
/// synthetic vDSO, which the initial stack's auxiliary vector then names (glibc passes
/// `argc`, `argv` and the initial `envp` to `.init_array` functions).
extern "C" fn init(_argc: c_int, _argv: *mut *mut c_char, envp: *mut *mut c_char) {
    guard(
        "the preload's constructor",
        || (),
        || {
            // Handlers first: once faulting is on, any `cpuid` traps into them.
            signals::install();
            if !cpuid::enable_faulting() {
                cpuid::patch_main_executable();
            }
            // System calls the program makes without the C library reach the devices too.
            sgxemu_native::seccomp::install();
            // Resolved now, not first in a signal handler: `syscall` jumps to it.
            let _ = sgxemu_native::dl_symbols::real_syscall();
            if sgxemu_native::config::stats_requested() {
                // SAFETY: registers a plain extern "C" function with no arguments.
                unsafe { libc::atexit(print_stats) };
            }
            // SAFETY: getauxval has no preconditions (the C library's, before the rewrite).
            let host_vdso = unsafe { real::getauxval(libc::AT_SYSINFO_EHDR) };
            if vdso_entry() != 0
                && let Some(v) = vdso::get()
                && host_vdso != 0
            {
                // SAFETY: `envp` is the initial environment array glibc hands constructors,
                // followed by the auxiliary vector (a mismatch with the C library's view writes
                // nothing); the value is one aligned word, so a thread an earlier constructor
                // started reads the old or the new base, both mapped images.
                unsafe { sgxemu_native::auxv::rewrite_initial(envp, host_vdso, v.base) };
            }
        },
    );
}

#[used]
#[unsafe(link_section = ".init_array")]
static INIT: extern "C" fn(c_int, *mut *mut c_char, *mut *mut c_char) = init;

/// `errno` of the calling thread.
fn errno() -> c_int {
    // SAFETY: __errno_location returns this thread's errno slot.
    unsafe { *libc::__errno_location() }
}

/// A C `timespec` timeout as a duration: `Ok(None)` for none (wait forever), `Err(())` for
/// one the kernel refuses (passed on as it came, for the kernel's EINVAL).
///
/// # Safety
/// `timeout` is null or a valid `timespec`.
unsafe fn timeout_of(timeout: *const libc::timespec) -> Result<Option<std::time::Duration>, ()> {
    // SAFETY: the caller passes null or a valid timespec.
    let Some(t) = (unsafe { timeout.as_ref() }) else { return Ok(None) };
    if t.tv_sec < 0 || !(0..1_000_000_000).contains(&t.tv_nsec) {
        return Err(());
    }
    Ok(Some(std::time::Duration::new(t.tv_sec as u64, t.tv_nsec as u32)))
}

fn timespec_of(d: std::time::Duration) -> libc::timespec {
    libc::timespec { tv_sec: d.as_secs() as libc::time_t, tv_nsec: libc::c_long::from(d.subsec_nanos() as i32) }
}

/// Makes a waiting call (`call`, given what is left of `timeout`; `None`: no limit) again
/// while it fails with an EINTR that only the emulator's own signals caused: on a kernel
/// its IPI and the traps it resolves are no signals and end no wait
/// (`sgxemu_native::signals::Interruptions`).
fn waiting(timeout: Option<std::time::Duration>, mut call: impl FnMut(Option<std::time::Duration>) -> c_int) -> c_int {
    let start = std::time::Instant::now();
    loop {
        let left = timeout.map(|t| t.saturating_sub(start.elapsed()));
        let seen = signals::Interruptions::now();
        let ret = call(left);
        if ret == -1 && errno() == libc::EINTR && seen.only_emulator() {
            continue;
        }
        return ret;
    }
}

/// sigsuspend(2): the emulator's signals stay deliverable while it waits, whatever the mask
/// (`sgxemu_native::signals::without_emulator_signals`); only a handler of the program ends it.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sigsuspend(mask: *const libc::sigset_t) -> c_int {
    guard_int("sigsuspend", || {
        // SAFETY: the caller passes a valid set (a null one is the kernel's EFAULT).
        let Some(mask) = (unsafe { mask.as_ref() }) else { return unsafe { real::sigsuspend(mask) } };
        let mask = signals::without_emulator_signals(mask);
        // SAFETY: a valid set.
        waiting(None, |_| unsafe { real::sigsuspend(&mask) })
    })
}

/// sigwait(3): the emulator's signals are never taken from it (see [`sigsuspend`]).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sigwait(set: *const libc::sigset_t, sig: *mut c_int) -> c_int {
    guard(
        "sigwait",
        || libc::EINVAL,
        || {
            // SAFETY: the caller passes a valid set (a null one is the C library's EFAULT).
            let Some(set) = (unsafe { set.as_ref() }) else { return unsafe { real::sigwait(set, sig) } };
            let set = signals::without_emulator_signals(set);
            // SAFETY: a valid set; `sig` as the caller passed it.
            unsafe { real::sigwait(&set, sig) }
        },
    )
}

/// sigwaitinfo(2), as [`sigwait`]; an EINTR only the emulator's signals caused is none.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sigwaitinfo(set: *const libc::sigset_t, info: *mut libc::siginfo_t) -> c_int {
    // SAFETY: forwarded C contract.
    unsafe { sigtimedwait(set, info, std::ptr::null()) }
}

/// sigtimedwait(2), as [`sigwaitinfo`] (a wait made again gets what is left of `timeout`).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sigtimedwait(
    set: *const libc::sigset_t,
    info: *mut libc::siginfo_t,
    timeout: *const libc::timespec,
) -> c_int {
    guard_int("sigtimedwait", || {
        // SAFETY: the caller passes null or valid pointers.
        let (Some(set), Ok(limit)) = (unsafe { set.as_ref() }, unsafe { timeout_of(timeout) }) else {
            // SAFETY: forwarded as it came, for the kernel's error.
            return unsafe { real::sigtimedwait(set, info, timeout) };
        };
        let set = signals::without_emulator_signals(set);
        waiting(limit, |left| {
            let left = left.map(timespec_of);
            let at = left.as_ref().map_or(std::ptr::null(), |t| t as *const libc::timespec);
            // SAFETY: a valid set and timeout; `info` as the caller passed it.
            unsafe { real::sigtimedwait(&set, info, at) }
        })
    })
}

/// ppoll(2): the emulator's signals stay deliverable during the call (see [`sigsuspend`]).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ppoll(
    fds: *mut libc::pollfd,
    n: libc::nfds_t,
    timeout: *const libc::timespec,
    mask: *const libc::sigset_t,
) -> c_int {
    guard_int("ppoll", || {
        // SAFETY: the caller passes null or valid pointers.
        let (Some(set), Ok(limit)) = (unsafe { mask.as_ref() }, unsafe { timeout_of(timeout) }) else {
            // SAFETY: forwarded as it came (no mask: nothing to change).
            return unsafe { real::ppoll(fds, n, timeout, mask) };
        };
        let set = signals::without_emulator_signals(set);
        waiting(limit, |left| {
            let left = left.map(timespec_of);
            let at = left.as_ref().map_or(std::ptr::null(), |t| t as *const libc::timespec);
            // SAFETY: the caller's descriptors, a valid timeout and set.
            unsafe { real::ppoll(fds, n, at, &set) }
        })
    })
}

/// pselect(2), as [`ppoll`] (the descriptor sets are left alone by a call that failed, so a
/// wait made again sees the caller's).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pselect(
    n: c_int,
    read: *mut libc::fd_set,
    write: *mut libc::fd_set,
    except: *mut libc::fd_set,
    timeout: *const libc::timespec,
    mask: *const libc::sigset_t,
) -> c_int {
    guard_int("pselect", || {
        // SAFETY: the caller passes null or valid pointers.
        let (Some(set), Ok(limit)) = (unsafe { mask.as_ref() }, unsafe { timeout_of(timeout) }) else {
            // SAFETY: forwarded as it came.
            return unsafe { real::pselect(n, read, write, except, timeout, mask) };
        };
        let set = signals::without_emulator_signals(set);
        waiting(limit, |left| {
            let left = left.map(timespec_of);
            let at = left.as_ref().map_or(std::ptr::null(), |t| t as *const libc::timespec);
            // SAFETY: the caller's descriptor sets, a valid timeout and set.
            unsafe { real::pselect(n, read, write, except, at, &set) }
        })
    })
}

/// epoll_pwait(2), as [`ppoll`] (`timeout` in milliseconds, negative: none).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn epoll_pwait(
    epfd: c_int,
    events: *mut libc::epoll_event,
    max: c_int,
    timeout: c_int,
    mask: *const libc::sigset_t,
) -> c_int {
    guard_int("epoll_pwait", || {
        // SAFETY: the caller passes null or a valid set.
        let Some(set) = (unsafe { mask.as_ref() }) else {
            // SAFETY: forwarded as it came.
            return unsafe { real::epoll_pwait(epfd, events, max, timeout, mask) };
        };
        let set = signals::without_emulator_signals(set);
        let limit = u64::try_from(timeout).ok().map(std::time::Duration::from_millis);
        waiting(limit, |left| {
            // Rounded up, as the kernel rounds its sleep: never shorter than asked.
            let ms = left.map_or(-1, |d| d.as_micros().div_ceil(1000).min(c_int::MAX as u128) as c_int);
            // SAFETY: the caller's event buffer, a valid set.
            unsafe { real::epoll_pwait(epfd, events, max, ms, &set) }
        })
    })
}

/// epoll_pwait2(2), as [`ppoll`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn epoll_pwait2(
    epfd: c_int,
    events: *mut libc::epoll_event,
    max: c_int,
    timeout: *const libc::timespec,
    mask: *const libc::sigset_t,
) -> c_int {
    guard_int("epoll_pwait2", || {
        // SAFETY: the caller passes null or valid pointers.
        let (Some(set), Ok(limit)) = (unsafe { mask.as_ref() }, unsafe { timeout_of(timeout) }) else {
            // SAFETY: forwarded as it came.
            return unsafe { real::epoll_pwait2(epfd, events, max, timeout, mask) };
        };
        let set = signals::without_emulator_signals(set);
        waiting(limit, |left| {
            let left = left.map(timespec_of);
            let at = left.as_ref().map_or(std::ptr::null(), |t| t as *const libc::timespec);
            // SAFETY: the caller's event buffer, a valid timeout and set.
            unsafe { real::epoll_pwait2(epfd, events, max, at, &set) }
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_in_an_entry_point_becomes_eio_instead_of_unwinding_into_c() {
        set_errno(0);
        let result = guard_int("a test call", || panic!("a bug"));
        // SAFETY: reads this thread's errno.
        assert_eq!((result, unsafe { *libc::__errno_location() }), (-1, libc::EIO));
        assert_eq!(CALL.with(Cell::get), "", "the call name is restored");
        assert_eq!(guard_int("a test call", || 7), 7);
    }

    #[test]
    fn fopen_modes_become_open_flags() {
        assert_eq!(fopen_flags(b"r"), libc::O_RDONLY);
        assert_eq!(fopen_flags(b"r+e"), libc::O_RDWR | libc::O_CLOEXEC);
        assert_eq!(fopen_flags(b"wx"), libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_EXCL);
        assert_eq!(fopen_flags(b"a+,ccs=UTF-8"), libc::O_RDWR | libc::O_CREAT | libc::O_APPEND);
    }
}
