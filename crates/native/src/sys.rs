//! System calls the engine makes for itself. They go straight to the kernel, never through
//! libc's exported wrappers: inside the preload library those names resolve to our own
//! interposers.

use std::io;

use libc::{c_int, c_long, c_void};

fn check(ret: c_long) -> io::Result<c_long> {
    if ret < 0 { Err(io::Error::last_os_error()) } else { Ok(ret) }
}

/// The kernel's `struct sigaction` on x86-64 (what `rt_sigaction(2)` reads and writes).
#[derive(Debug, Clone, Copy)]
#[repr(C)]
pub struct KernelSigaction {
    /// Handler address (or SIG_DFL / SIG_IGN).
    pub handler: u64,
    /// SA_* flags.
    pub flags: u64,
    /// The restorer sigreturn goes through (with SA_RESTORER).
    pub restorer: u64,
    /// Blocked signals during the handler (the first 64).
    pub mask: u64,
}

/// `SA_RESTORER` (asm/signal.h; not exported by the libc crate).
pub const SA_RESTORER: u64 = 0x0400_0000;

/// A system call made by this object's own `syscall` instruction, which the seccomp filter
/// exempts: its result, or `-errno`.
///
/// # Safety
/// As the system call `nr` with arguments `args`: pointers among them are valid for it.
pub unsafe fn raw_syscall(nr: c_long, args: [u64; 6]) -> c_long {
    let ret: c_long;
    // SAFETY: a system call; the kernel clobbers only RCX and R11 (and writes RAX); the
    // caller vouches for the memory the call touches.
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") nr => ret,
            in("rdi") args[0],
            in("rsi") args[1],
            in("rdx") args[2],
            in("r10") args[3],
            in("r8") args[4],
            in("r9") args[5],
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        )
    };
    ret
}

/// Waits until `word` no longer holds `expected`, a wake, or `timeout` (FUTEX_WAIT_PRIVATE).
pub fn futex_wait(word: &std::sync::atomic::AtomicU32, expected: u32, timeout: std::time::Duration) {
    let limit = libc::timespec { tv_sec: timeout.as_secs() as libc::time_t, tv_nsec: timeout.subsec_nanos().into() };
    // SAFETY: `word` is a live u32 for the call; the kernel only reads it and `limit`.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            expected,
            &limit as *const libc::timespec,
        )
    };
}

/// Wakes every thread waiting on `word` (FUTEX_WAKE_PRIVATE). Async-signal-safe.
pub fn futex_wake_all(word: &std::sync::atomic::AtomicU32) {
    // SAFETY: `word` is a live u32; FUTEX_WAKE only uses its address.
    unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG, i32::MAX) };
}

/// Sleeps for `duration` (nanosleep; async-signal-safe).
pub fn sleep(duration: std::time::Duration) {
    let request =
        libc::timespec { tv_sec: duration.as_secs() as libc::time_t, tv_nsec: duration.subsec_nanos().into() };
    // SAFETY: `request` is a valid timespec; no remaining time is asked for.
    unsafe { libc::nanosleep(&request, std::ptr::null_mut()) };
}

/// CLOCK_MONOTONIC in nanoseconds (async-signal-safe).
pub fn monotonic_ns() -> u64 {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `now` is a valid timespec to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    (now.tv_sec as u64).wrapping_mul(1_000_000_000).wrapping_add(now.tv_nsec as u64)
}

/// sched_yield(2) (async-signal-safe).
pub fn sched_yield() {
    // SAFETY: no arguments; it only gives up the CPU.
    unsafe { libc::sched_yield() };
}

/// mmap(2).
pub fn mmap(addr: u64, len: u64, prot: c_int, flags: c_int, fd: c_int, offset: u64) -> io::Result<u64> {
    // SAFETY: the raw system call only changes mappings; callers pass ranges they own
    // (MAP_FIXED only over ranges the engine manages).
    let ret =
        unsafe { libc::syscall(libc::SYS_mmap, addr, len, prot as c_long, flags as c_long, fd as c_long, offset) };
    check(ret).map(|a| a as u64)
}

/// munmap(2).
pub fn munmap(addr: u64, len: u64) -> io::Result<()> {
    // SAFETY: as for `mmap`: callers unmap only ranges the program or engine asked for.
    check(unsafe { libc::syscall(libc::SYS_munmap, addr, len) }).map(drop)
}

/// mprotect(2).
pub fn mprotect(addr: u64, len: u64, prot: c_int) -> io::Result<()> {
    // SAFETY: changes protections of ranges the engine manages.
    check(unsafe { libc::syscall(libc::SYS_mprotect, addr, len, prot as c_long) }).map(drop)
}

/// madvise(2).
pub fn madvise(addr: u64, len: u64, advice: c_int) -> io::Result<()> {
    // SAFETY: advice on ranges the engine manages.
    check(unsafe { libc::syscall(libc::SYS_madvise, addr, len, advice as c_long) }).map(drop)
}

/// close(2).
pub fn close(fd: c_int) -> io::Result<()> {
    // SAFETY: closes a descriptor the caller owns.
    check(unsafe { libc::syscall(libc::SYS_close, fd as c_long) }).map(drop)
}

/// gettid(2), without libc (safe in any signal handler, whatever FS holds).
pub fn gettid() -> i32 {
    // SAFETY: gettid has no arguments and no side effects.
    unsafe { libc::syscall(libc::SYS_gettid) as i32 }
}

/// getpid(2), uncached (a fork child sees its own).
pub fn getpid() -> i32 {
    // SAFETY: no arguments, no side effects.
    unsafe { libc::syscall(libc::SYS_getpid) as i32 }
}

/// memfd_create(2) with MFD_CLOEXEC (never MFD_EXEC: `vm.memfd_noexec` = 2 refuses it, and
/// mapping a memfd executable does not need it).
pub fn memfd(name: &std::ffi::CStr, size: u64) -> io::Result<c_int> {
    // SAFETY: `name` is a valid C string.
    let fd =
        check(unsafe { libc::syscall(libc::SYS_memfd_create, name.as_ptr(), libc::MFD_CLOEXEC as c_long) })? as c_int;
    // SAFETY: `fd` was just created and is ours.
    if let Err(e) = check(unsafe { libc::syscall(libc::SYS_ftruncate, fd as c_long, size) }) {
        let _ = close(fd);
        return Err(e);
    }
    Ok(fd)
}

/// rt_sigprocmask for the calling thread: `how` (SIG_BLOCK, SIG_UNBLOCK, SIG_SETMASK) with
/// `set`, or only a query without one; the mask before (`None` if the call failed). The
/// system call itself, not the C library's wrapper, so it is safe in signal handlers and
/// whatever the C library does with its internal signals.
pub fn sigprocmask(how: c_int, set: Option<&libc::sigset_t>) -> Option<libc::sigset_t> {
    // SAFETY: an all-zero sigset_t is valid output storage.
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    let set = set.map_or(std::ptr::null(), |s| s as *const libc::sigset_t);
    // SAFETY: `set` is null or an initialised set; the kernel writes its 8-byte mask into
    // `old` and reads 8 bytes of `set`.
    let r = unsafe { libc::syscall(libc::SYS_rt_sigprocmask, how as c_long, set, &mut old, 8 as c_long) };
    (r == 0).then_some(old)
}

/// rt_sigpending: the signals pending for the calling thread or its process (`None` if the
/// call failed). The system call itself, as [`sigprocmask`].
pub fn pending_signals() -> Option<libc::sigset_t> {
    // SAFETY: an all-zero sigset_t is valid output storage.
    let mut pending: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: the kernel writes its 8-byte pending set into `pending`.
    let r = unsafe { libc::syscall(libc::SYS_rt_sigpending, &mut pending, 8 as c_long) };
    (r == 0).then_some(pending)
}

/// The calling thread's signal mask (`None` if the query failed).
pub fn current_signal_mask() -> Option<libc::sigset_t> {
    sigprocmask(libc::SIG_BLOCK, None)
}

/// Copies from this process's memory at `addr` without faulting: EFAULT if any byte is
/// unreadable (the kernel's copy_from_user).
pub fn read_own_memory(addr: u64, buf: &mut [u8]) -> io::Result<()> {
    read_memory_of(getpid(), addr, buf)
}

/// [`read_own_memory`] with this process's id already known (saves a system call per copy).
pub fn read_memory_of(pid: i32, addr: u64, buf: &mut [u8]) -> io::Result<()> {
    let local = libc::iovec { iov_base: buf.as_mut_ptr().cast::<c_void>(), iov_len: buf.len() };
    let remote = libc::iovec { iov_base: addr as *mut c_void, iov_len: buf.len() };
    // SAFETY: the kernel validates the remote range; the local iovec covers `buf` exactly.
    let n = check(unsafe {
        libc::syscall(libc::SYS_process_vm_readv, pid as c_long, &local, 1 as c_long, &remote, 1 as c_long, 0 as c_long)
    })?;
    if n as usize == buf.len() { Ok(()) } else { Err(io::Error::from_raw_os_error(libc::EFAULT)) }
}

/// `struct procmap_query` (linux/fs.h, Linux 6.11+): one VMA of a `/proc/PID/maps` file.
#[repr(C)]
#[derive(Default)]
struct ProcmapQuery {
    size: u64,
    query_flags: u64,
    query_addr: u64,
    vma_start: u64,
    vma_end: u64,
    vma_flags: u64,
    vma_page_size: u64,
    vma_offset: u64,
    inode: u64,
    dev_major: u32,
    dev_minor: u32,
    vma_name_size: u32,
    build_id_size: u32,
    vma_name_addr: u64,
    build_id_addr: u64,
}

/// `PROCMAP_QUERY` = `_IOWR('f', 17, struct procmap_query)`.
const PROCMAP_QUERY: u64 = 3 << 30 | (size_of::<ProcmapQuery>() as u64) << 16 | (b'f' as u64) << 8 | 17;
/// `PROCMAP_QUERY_VMA_READABLE`, in and out.
const PROCMAP_QUERY_VMA_READABLE: u64 = 1;

/// The mapping containing `addr` as the kernel's VMA query on `maps` (a descriptor of
/// `/proc/self/maps`) reports it: `Ok(Some((start, end, readable)))`, `Ok(None)` if no
/// mapping contains it, `Err` if the kernel has no such query (before 6.11).
pub fn query_vma(maps: c_int, addr: u64) -> io::Result<Option<(u64, u64, bool)>> {
    let mut query = ProcmapQuery { size: size_of::<ProcmapQuery>() as u64, query_addr: addr, ..Default::default() };
    // SAFETY: the kernel reads and writes `query`, a `struct procmap_query` of the size it
    // is told; no name or build id buffer is asked for.
    let ret = unsafe { libc::syscall(libc::SYS_ioctl, maps as c_long, PROCMAP_QUERY as c_long, &mut query) };
    if ret == 0 {
        return Ok(Some((query.vma_start, query.vma_end, query.vma_flags & PROCMAP_QUERY_VMA_READABLE != 0)));
    }
    match io::Error::last_os_error() {
        e if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        e => Err(e),
    }
}

/// Whether the page at `addr` is readable to the kernel's `get_user_pages` (mapped with
/// VM_READ: an execute-only page is not, although this CPU's loads may read it): a
/// one-byte `process_vm_readv` pins it.
pub fn page_readable(pid: i32, addr: u64) -> bool {
    let mut byte = 0u8;
    read_memory_of(pid, addr, std::slice::from_mut(&mut byte)).is_ok()
}

/// Opens `/proc/self/maps` read-only, close-on-exec (for [`query_vma`]).
pub fn open_own_maps() -> io::Result<c_int> {
    // SAFETY: openat reads the C string; the descriptor it returns is the caller's.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat,
            libc::AT_FDCWD as c_long,
            c"/proc/self/maps".as_ptr(),
            (libc::O_RDONLY | libc::O_CLOEXEC) as c_long,
            0 as c_long,
        )
    };
    if fd < 0 { Err(io::Error::last_os_error()) } else { Ok(fd as c_int) }
}

/// Copies into the memory of process `pid` (this one) at `addr` without faulting
/// (copy_to_user).
pub fn write_memory_of(pid: i32, addr: u64, data: &[u8]) -> io::Result<()> {
    let local = libc::iovec { iov_base: data.as_ptr() as *mut c_void, iov_len: data.len() };
    let remote = libc::iovec { iov_base: addr as *mut c_void, iov_len: data.len() };
    // SAFETY: the kernel validates the remote range; the local iovec covers `data` exactly.
    let n = check(unsafe {
        libc::syscall(
            libc::SYS_process_vm_writev,
            pid as c_long,
            &local,
            1 as c_long,
            &remote,
            1 as c_long,
            0 as c_long,
        )
    })?;
    if n as usize == data.len() { Ok(()) } else { Err(io::Error::from_raw_os_error(libc::EFAULT)) }
}

/// tgkill(2) to a thread of this process.
pub fn tgkill(tid: i32, sig: c_int) -> io::Result<()> {
    // SAFETY: sends a signal; no memory is touched.
    check(unsafe { libc::syscall(libc::SYS_tgkill, getpid() as c_long, tid as c_long, sig as c_long) }).map(drop)
}

// arch_prctl codes (asm/prctl.h).
const ARCH_SET_GS: libc::c_int = 0x1001;
const ARCH_SET_FS: libc::c_int = 0x1002;
const ARCH_GET_FS: libc::c_int = 0x1003;
const ARCH_GET_GS: libc::c_int = 0x1004;

/// Whether the CPU and kernel let user code use RDFSBASE/WRFSBASE (AT_HWCAP2 bit 1): 0 =
/// not known yet, 1 = no, 2 = yes. Set in normal context by [`detect_fsgsbase`]; signal
/// handlers only read it (and use the system call while it is unknown).
static FSGSBASE: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// Looks up FSGSBASE support once (normal context: it may call into the C library).
pub fn detect_fsgsbase() {
    const HWCAP2_FSGSBASE: libc::c_ulong = 1 << 1;
    // SAFETY: getauxval has no preconditions (the C library's own, not an interposer).
    let hwcap2 = unsafe { crate::real::getauxval(libc::AT_HWCAP2) };
    let value = if hwcap2 & HWCAP2_FSGSBASE != 0 { 2 } else { 1 };
    FSGSBASE.store(value, std::sync::atomic::Ordering::Relaxed);
}

fn fsgsbase() -> bool {
    FSGSBASE.load(std::sync::atomic::Ordering::Relaxed) == 2
}

/// FS base of the calling thread.
pub fn fs_base() -> u64 {
    if fsgsbase() {
        let value: u64;
        // SAFETY: RDFSBASE is enabled for user code (AT_HWCAP2.FSGSBASE) and only reads.
        unsafe { std::arch::asm!("rdfsbase {}", out(reg) value, options(nomem, nostack, preserves_flags)) };
        return value;
    }
    get_base(ARCH_GET_FS)
}

/// `rt_sigprocmask(SIG_SETMASK, mask)` made by a `syscall` instruction in the emulator's
/// own text, not the C library's: the software EENTER's last mask change runs in enclave
/// mode, where an interrupt is taken for the enclave's first instruction only if it finds
/// the thread in the emulator's code (see `isolation::finishing_entry`); code elsewhere
/// would be enclave code that left ELRANGE.
pub fn set_sigmask_in_own_text(mask: &libc::sigset_t) {
    // SAFETY: the kernel reads 8 bytes of the valid set `mask` and writes nothing (no old
    // set); the `syscall` instruction clobbers RCX and R11 and returns in RAX.
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") libc::SYS_rt_sigprocmask => _,
            in("rdi") libc::SIG_SETMASK,
            in("rsi") mask as *const libc::sigset_t,
            in("rdx") 0usize,
            in("r10") 8usize,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack, readonly),
        )
    };
}

/// Sets the calling thread's FS base. Nothing that uses thread-local storage may run
/// between this and the point the new value is meant for.
pub fn set_fs_base(value: u64) {
    if fsgsbase() {
        // SAFETY: WRFSBASE is enabled for user code; it only changes this thread's FS base.
        unsafe { std::arch::asm!("wrfsbase {}", in(reg) value, options(nomem, nostack, preserves_flags)) };
        return;
    }
    set_base(ARCH_SET_FS, value);
}

/// GS base of the calling thread.
pub fn gs_base() -> u64 {
    if fsgsbase() {
        let value: u64;
        // SAFETY: RDGSBASE is enabled for user code and only reads.
        unsafe { std::arch::asm!("rdgsbase {}", out(reg) value, options(nomem, nostack, preserves_flags)) };
        return value;
    }
    get_base(ARCH_GET_GS)
}

/// Sets the calling thread's GS base.
pub fn set_gs_base(value: u64) {
    if fsgsbase() {
        // SAFETY: WRGSBASE is enabled for user code; it only changes this thread's GS base.
        unsafe { std::arch::asm!("wrgsbase {}", in(reg) value, options(nomem, nostack, preserves_flags)) };
        return;
    }
    set_base(ARCH_SET_GS, value);
}

/// ARCH_GET_FS / ARCH_GET_GS, for CPUs or kernels without user FSGSBASE.
fn get_base(code: libc::c_int) -> u64 {
    let mut value = 0u64;
    // SAFETY: the GET codes write one u64 to the pointer we pass.
    unsafe { libc::syscall(libc::SYS_arch_prctl, code as c_long, &mut value as *mut u64) };
    value
}

/// ARCH_SET_FS / ARCH_SET_GS: only changes a base register of this thread.
fn set_base(code: libc::c_int, value: u64) {
    // SAFETY: the SET codes only change this thread's FS or GS base.
    unsafe { libc::syscall(libc::SYS_arch_prctl, code as c_long, value) };
}

/// Writes a message to stderr with one write(2) (usable where std's locks are not).
pub fn stderr_line(message: &str) {
    // SAFETY: writes `message` bytes from a valid buffer.
    unsafe { libc::syscall(libc::SYS_write, 2 as c_long, message.as_ptr(), message.len()) };
}
