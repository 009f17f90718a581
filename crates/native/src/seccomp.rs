//! System calls made without the C library: a program's own `syscall` instructions (Gramine's
//! untrusted loader routes every OS call through one assembly function, Go's runtime does
//! the same) never reach the preload's interposers, so `open(2)` of `/dev/sgx_enclave` would
//! find the host kernel's ENOENT. A seccomp filter, installed before `main` by the preload
//! library, turns the device-relevant system calls of that code into SIGSYS; the emulator's
//! SIGSYS handler ([`on_trap`], called from `signals::dispatch`) decodes the call from the
//! signal frame, carries it out as the interposers do (device descriptors and enclave
//! mappings reach the [`Engine`], everything else is the real call) and writes the result
//! into RAX, as the kernel would have.
//!
//! # Which code is trapped: a deny-list of code ranges
//!
//! The filter traps by code address (`seccomp_data.instruction_pointer`): the executable
//! segments of every object loaded at initialisation — the main executable and its
//! libraries — except the C library, the dynamic loader, the vDSO and the emulator's own
//! library, whose calls pass untouched (so the C-library path keeps going through the
//! interposers, and the emulator's own system calls, all made through the C library, are
//! never trapped). Neighbouring trapped objects are merged into one range when no exempt
//! object lies between them.
//!
//! The opposite rule, "trap everything outside the C library", would also cover code
//! loaded later (`dlopen`, JIT), but a seccomp filter can never be removed and survives
//! `execve`: the next program's dynamic loader, at a new random address, would have its
//! first `open` and `mmap` trapped before any handler exists, and die of SIGSYS. Under the
//! deny-list an image started by `execve` runs untouched unless its code happens to sit in
//! one of the old ranges (with ASLR a chance of about one in a million per exec; a fixed
//! address, e.g. a non-PIE parent and a non-PIE static child, can collide) — and a preloaded
//! image handles traps of any generation's filter, since they carry the same
//! [`SECCOMP_RET_DATA`] tag. Not covered: code mapped after initialisation.
//!
//! # What is trapped, and its cost
//!
//! The filter checks the architecture, then the system call number against the trapped set
//! in a binary search (six or seven comparisons for any other number: an unrelated system
//! call pays that and nothing else; see `benches/seccomp.rs`), narrows `mmap` to file
//! mappings and MAP_FIXED ones (which may replace an enclave mapping: `program_maps`) and
//! `fcntl` to F_DUPFD/F_DUPFD_CLOEXEC, and only then compares the code
//! address with the ranges. Trapped: the open family (`open`, `openat`, `openat2`), `close`,
//! `close_range`, `dup`/`dup2`/`dup3`, `fcntl`, `ioctl`, `mmap`, `munmap`, `mprotect`, `mremap`,
//! `rt_sigaction`, `sigaltstack`, and the path-taking stat family (`stat`, `lstat`,
//! `newfstatat`, `statx`, `fstat`, `access`, `faccessat`, `faccessat2`, `readlink`,
//! `readlinkat`: paths are pointers, beyond a filter's reach, so they are trapped and
//! checked in the handler), the listing calls `getdents`/`getdents64` (`dev_listing`) and
//! the working-directory calls `chdir`, `fchdir`, `getcwd` (the emulated `/dev/sgx`). A
//! trapped call costs a signal round trip (about 2 µs) whether or not it concerns the
//! emulator. Not trapped from the program's code: `read`/`pread`/`readv`/`lseek` (an
//! emulated MSR file is a memory file holding the MSRs at their offsets, so its own
//! instructions read them with a plain file's rules; see `devices_fs`), `clone` (a new
//! thread gets its emulator state lazily, as with `pthread_create`).
//!
//! # The C library's `syscall()` function
//!
//! A program's `syscall(SYS_openat, …)` makes its system call in the C library, exempt
//! code. The preload library interposes `syscall()` itself: a call from the program's code
//! (the ranges the filter traps) for a [`TRAPPED`] number, or one of
//! [`CARRIED_OUT_FROM_SYSCALL_FUNCTION`], is carried out as the trapped call is
//! ([`carry_out`]); every other call, the emulator's own included, reaches the C library.
//!
//! Installing a filter needs `PR_SET_NO_NEW_PRIVS` unless the process has CAP_SYS_ADMIN;
//! it is tried without first. `SECCOMP_FILTER_FLAG_TSYNC` applies it to threads that other
//! libraries' constructors started before ours. `SGXEMU_SECCOMP=0` leaves it out.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use libc::{c_int, c_long, c_uint, c_void};

use crate::context::Frame;
use crate::dev_listing::{self, DirentLayout, Getdents};
use crate::devices_fs::{self, Chdir};
use crate::enclu::Outcome;
use crate::engine::Engine;
use crate::sys::{self, KernelSigaction, SA_RESTORER};
use crate::{own_fds, program_maps};

/// `si_code` of a SIGSYS raised by a seccomp filter's SECCOMP_RET_TRAP.
pub const SYS_SECCOMP: c_int = 1;
/// The `SECCOMP_RET_DATA` of our traps (the kernel hands it over as `si_errno`): a SIGSYS
/// with it is ours, whichever image's filter raised it; anything else is the program's.
pub const SECCOMP_RET_DATA: u32 = 0x5347;

/// `SGXEMU_SECCOMP`: a boolean; false leaves the filter out (default true).
pub const ENV_SECCOMP: &str = "SGXEMU_SECCOMP";

const SECCOMP_RET_TRAP: u32 = 0x0003_0000;
const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
const SECCOMP_SET_MODE_FILTER: c_long = 1;
const SECCOMP_FILTER_FLAG_TSYNC: c_long = 1;

/// The system calls the filter traps from the covered code (x86-64 numbers).
pub const TRAPPED: [c_long; 32] = [
    libc::SYS_open,
    libc::SYS_rt_sigprocmask,
    libc::SYS_close,
    libc::SYS_stat,
    libc::SYS_fstat,
    libc::SYS_lstat,
    libc::SYS_mmap,
    libc::SYS_mprotect,
    libc::SYS_munmap,
    libc::SYS_rt_sigaction,
    libc::SYS_ioctl,
    libc::SYS_access,
    libc::SYS_mremap,
    libc::SYS_dup,
    libc::SYS_dup2,
    libc::SYS_fcntl,
    libc::SYS_readlink,
    libc::SYS_sigaltstack,
    libc::SYS_openat,
    libc::SYS_newfstatat,
    libc::SYS_readlinkat,
    libc::SYS_faccessat,
    libc::SYS_dup3,
    libc::SYS_statx,
    libc::SYS_openat2,
    libc::SYS_faccessat2,
    libc::SYS_close_range,
    libc::SYS_getdents,
    libc::SYS_getdents64,
    libc::SYS_chdir,
    libc::SYS_fchdir,
    libc::SYS_getcwd,
];

/// The system calls carried out when a program makes them through the C library's
/// `syscall()` function besides the [`TRAPPED`] ones: the reads, which the filter lets
/// through from the program's own instructions (an emulated MSR file answers those with a
/// plain file's rules), but whose C-library path keeps the msr driver's (the MSR at the
/// offset, the position unmoved, EINVAL for a count that is no multiple of 8).
pub const CARRIED_OUT_FROM_SYSCALL_FUNCTION: [c_long; 4] =
    [libc::SYS_pread64, libc::SYS_readv, libc::SYS_preadv, libc::SYS_preadv2];

// ---------------------------------------------------------------------------------------
// The filter.

/// Classic BPF opcodes (linux/filter.h, linux/bpf_common.h).
/// BPF_LD (0x00) | BPF_W (0x00) | BPF_ABS (0x20).
const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JMP_JA: u16 = 0x05;
const BPF_JMP_JEQ_K: u16 = 0x05 | 0x10;
const BPF_JMP_JGT_K: u16 = 0x05 | 0x20;
const BPF_JMP_JGE_K: u16 = 0x05 | 0x30;
const BPF_JMP_JSET_K: u16 = 0x05 | 0x40;
const BPF_RET_K: u16 = 0x06;

/// Offsets in `struct seccomp_data`.
const NR: u32 = 0;
const ARCH: u32 = 4;
const IP_LO: u32 = 8;
const IP_HI: u32 = 12;
fn arg_lo(n: u32) -> u32 {
    16 + 8 * n
}

/// A jump target while the program is assembled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    /// The next instruction.
    Next,
    /// A label.
    Label(usize),
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Stmt {
        code: u16,
        k: u32,
    },
    Jump {
        code: u16,
        k: u32,
        jt: Target,
        jf: Target,
    },
    /// `ja` to a label.
    Always(usize),
    Label(usize),
}

/// A tiny assembler with forward labels (all classic-BPF jumps go forward).
#[derive(Debug, Default)]
struct Asm {
    ops: Vec<Op>,
    labels: usize,
}

impl Asm {
    fn label(&mut self) -> usize {
        self.labels += 1;
        self.labels - 1
    }
    fn place(&mut self, label: usize) {
        self.ops.push(Op::Label(label));
    }
    fn load(&mut self, offset: u32) {
        self.ops.push(Op::Stmt { code: BPF_LD_W_ABS, k: offset });
    }
    fn ret(&mut self, value: u32) {
        self.ops.push(Op::Stmt { code: BPF_RET_K, k: value });
    }
    fn jump(&mut self, code: u16, k: u32, jt: Target, jf: Target) {
        self.ops.push(Op::Jump { code, k, jt, jf });
    }
    fn always(&mut self, label: usize) {
        self.ops.push(Op::Always(label));
    }

    /// The instructions, or `None` if a conditional jump is too far (255 at most).
    fn finish(&self) -> Option<Vec<libc::sock_filter>> {
        let mut at = vec![usize::MAX; self.labels];
        let mut pc = 0;
        for op in &self.ops {
            match op {
                Op::Label(l) => at[*l] = pc,
                _ => pc += 1,
            }
        }
        let mut out = Vec::with_capacity(pc);
        let offset = |from: usize, target: Target| -> Option<u8> {
            match target {
                Target::Next => Some(0),
                Target::Label(l) => u8::try_from(at[l].checked_sub(from + 1)?).ok(),
            }
        };
        for op in &self.ops {
            let pc = out.len();
            match *op {
                Op::Label(_) => continue,
                Op::Stmt { code, k } => out.push(libc::sock_filter { code, jt: 0, jf: 0, k }),
                Op::Jump { code, k, jt, jf } => {
                    out.push(libc::sock_filter { code, jt: offset(pc, jt)?, jf: offset(pc, jf)?, k })
                }
                Op::Always(l) => {
                    let k = u32::try_from(at[l].checked_sub(pc + 1)?).ok()?;
                    out.push(libc::sock_filter { code: BPF_JMP_JA, jt: 0, jf: 0, k });
                }
            }
        }
        Some(out)
    }
}

/// A code range `[start, end)` whose trapped system calls the handler carries out.
pub type Range = (u64, u64);

/// Emits a binary search of `numbers` (sorted) on the accumulator (the system call number):
/// a match jumps to `special(number)` or `check`, anything else to `allow`.
fn search(asm: &mut Asm, numbers: &[u32], check: usize, allow: usize, special: &dyn Fn(u32) -> Option<usize>) {
    if numbers.len() <= 3 {
        for &n in numbers {
            let to = special(n).unwrap_or(check);
            asm.jump(BPF_JMP_JEQ_K, n, Target::Label(to), Target::Next);
        }
        asm.always(allow);
        return;
    }
    let mid = numbers.len() / 2;
    let right = asm.label();
    asm.jump(BPF_JMP_JGE_K, numbers[mid], Target::Label(right), Target::Next);
    search(asm, &numbers[..mid], check, allow, special);
    asm.place(right);
    search(asm, &numbers[mid..], check, allow, special);
}

/// The filter: SECCOMP_RET_TRAP (tagged [`SECCOMP_RET_DATA`]) for the [`TRAPPED`] system
/// calls made from code in `ranges`; SECCOMP_RET_ALLOW for everything else.
pub fn filter(ranges: &[Range]) -> Option<Vec<libc::sock_filter>> {
    let mut asm = Asm::default();
    let (allow, check, mmap, fcntl) = (asm.label(), asm.label(), asm.label(), asm.label());
    asm.load(ARCH);
    asm.jump(BPF_JMP_JEQ_K, AUDIT_ARCH_X86_64, Target::Next, Target::Label(allow));
    asm.load(NR);
    let mut numbers: Vec<u32> = TRAPPED.iter().map(|&n| n as u32).collect();
    numbers.sort_unstable();
    let special = |n: u32| match c_long::from(n) {
        libc::SYS_mmap => Some(mmap),
        libc::SYS_fcntl => Some(fcntl),
        _ => None,
    };
    search(&mut asm, &numbers, check, allow, &special);
    // mmap: anonymous mappings never concern a device, but MAP_FIXED ones may replace an
    // enclave mapping.
    asm.place(mmap);
    asm.load(arg_lo(3));
    asm.jump(BPF_JMP_JSET_K, libc::MAP_FIXED as u32, Target::Label(check), Target::Next);
    asm.jump(BPF_JMP_JSET_K, libc::MAP_ANONYMOUS as u32, Target::Label(allow), Target::Label(check));
    // fcntl: only the duplicating commands.
    asm.place(fcntl);
    asm.load(arg_lo(1));
    asm.jump(BPF_JMP_JEQ_K, libc::F_DUPFD as u32, Target::Label(check), Target::Next);
    asm.jump(BPF_JMP_JEQ_K, libc::F_DUPFD_CLOEXEC as u32, Target::Label(check), Target::Label(allow));
    asm.place(allow);
    asm.ret(SECCOMP_RET_ALLOW);
    // The code address, against each range.
    asm.place(check);
    trap_in(&mut asm, ranges);
    asm.ret(SECCOMP_RET_ALLOW);
    asm.finish()
}

/// Emits: SECCOMP_RET_TRAP if the code address is in one of `ranges` (each split where
/// the high word changes); on to the next instruction otherwise.
fn trap_in(asm: &mut Asm, ranges: &[Range]) {
    for &(start, end) in ranges {
        let mut lo = start;
        while lo < end {
            let last = end.min((lo | 0xffff_ffff).saturating_add(1)) - 1;
            let skip = asm.label();
            asm.load(IP_HI);
            asm.jump(BPF_JMP_JEQ_K, (lo >> 32) as u32, Target::Next, Target::Label(skip));
            asm.load(IP_LO);
            asm.jump(BPF_JMP_JGE_K, lo as u32, Target::Next, Target::Label(skip));
            asm.jump(BPF_JMP_JGT_K, last as u32, Target::Label(skip), Target::Next);
            asm.ret(SECCOMP_RET_TRAP | SECCOMP_RET_DATA);
            asm.place(skip);
            lo = last + 1;
        }
    }
}

// ---------------------------------------------------------------------------------------
// The ranges.

/// Loaded objects further apart than this are two ranges.
const MERGE_GAP: u64 = 1 << 20;
/// At most this many ranges are trapped (the handler's stack check keeps a copy).
const MAX_RANGES: usize = 64;

/// One loaded object's executable extent, and whether its system calls pass untouched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// First byte of its first executable segment.
    pub start: u64,
    /// End of its last executable segment.
    pub end: u64,
    /// The C library, the dynamic loader, the vDSO or the emulator's own object.
    pub exempt: bool,
}

/// The trapped ranges for `extents`: the non-exempt ones, merged with their neighbours when
/// no exempt object lies between and the gap is small; at most `MAX_RANGES` (the ones
/// lowest in memory, where the main executable usually is, first).
pub fn ranges_of(mut extents: Vec<Extent>) -> Vec<Range> {
    extents.sort_by_key(|e| e.start);
    let mut out: Vec<Range> = Vec::new();
    let mut previous_exempt = true;
    for e in extents {
        if e.exempt {
            previous_exempt = true;
            continue;
        }
        match out.last_mut() {
            Some(last) if !previous_exempt && e.start <= last.1.saturating_add(MERGE_GAP) => last.1 = last.1.max(e.end),
            _ => out.push((e.start, e.end)),
        }
        previous_exempt = false;
    }
    out.truncate(MAX_RANGES);
    out
}

/// The executable extents of the objects loaded now (`dl_iterate_phdr`).
fn loaded_extents() -> Vec<Extent> {
    struct Walk {
        extents: Vec<Extent>,
        probes: [u64; 2],
        interpreter: u64,
    }
    extern "C" fn each(info: *mut libc::dl_phdr_info, _size: usize, data: *mut c_void) -> c_int {
        // SAFETY: `data` is the `Walk` passed below; `info` is the loader's description of
        // one object, its program headers valid for `dlpi_phnum` entries.
        let (walk, info) = unsafe { (&mut *data.cast::<Walk>(), &*info) };
        let phdrs = if info.dlpi_phdr.is_null() {
            &[][..]
        } else {
            // SAFETY: see above.
            unsafe { std::slice::from_raw_parts(info.dlpi_phdr, usize::from(info.dlpi_phnum)) }
        };
        let base = info.dlpi_addr;
        let (mut start, mut end) = (u64::MAX, 0);
        for ph in phdrs.iter().filter(|ph| ph.p_type == libc::PT_LOAD && ph.p_flags & libc::PF_X != 0) {
            start = start.min((base + ph.p_vaddr) & !0xfff);
            end = end.max((base + ph.p_vaddr + ph.p_memsz).next_multiple_of(4096));
        }
        if start >= end {
            return 0;
        }
        let name = if info.dlpi_name.is_null() {
            &[][..]
        } else {
            // SAFETY: the loader's names are C strings.
            unsafe { std::ffi::CStr::from_ptr(info.dlpi_name) }.to_bytes()
        };
        let file = name.rsplit(|&b| b == b'/').next().unwrap_or(name);
        let exempt = walk.probes.iter().any(|&p| (start..end).contains(&p))
            || (base == walk.interpreter && base != 0)
            || [&b"libc.so"[..], b"ld-linux", b"linux-vdso", b"linux-gate"].iter().any(|p| file.starts_with(p));
        walk.extents.push(Extent { start, end, exempt });
        0
    }
    // The C library (whatever defines `syscall`, the emulator's stub) and this object.
    let probes = [libc::syscall as *const () as usize as u64, loaded_extents as *const () as usize as u64];
    // SAFETY: getauxval reads the auxiliary vector.
    let interpreter = unsafe { libc::getauxval(libc::AT_BASE) };
    let mut walk = Walk { extents: Vec::new(), probes, interpreter };
    // SAFETY: the callback matches dl_iterate_phdr's contract and `walk` outlives the call.
    unsafe { libc::dl_iterate_phdr(Some(each), (&mut walk as *mut Walk).cast()) };
    walk.extents
}

/// The ranges [`install`] would trap now: the code of the objects loaded, less the exempt.
pub fn trapped_ranges() -> Vec<Range> {
    ranges_of(loaded_extents())
}

/// The ranges the installed filter traps, for the handlers' stack choice (no locks).
static RANGES: [(AtomicU64, AtomicU64); MAX_RANGES] = [const { (AtomicU64::new(0), AtomicU64::new(0)) }; MAX_RANGES];
static RANGE_COUNT: AtomicUsize = AtomicUsize::new(0);
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// Whether this image installed its filter.
pub fn installed() -> bool {
    INSTALLED.load(Ordering::Acquire)
}

/// Installs the filter for the code loaded now (see the module documentation), for every
/// thread of the process. The preload library's constructor calls it, after the emulator's
/// handlers are installed. Best effort: on failure one line on stderr says what will not
/// be emulated.
pub fn install() {
    if std::env::var_os(ENV_SECCOMP).is_some() && !crate::config::bool_env(ENV_SECCOMP).unwrap_or(true) {
        return;
    }
    let ranges = trapped_ranges();
    if let Err(e) = install_ranges(&ranges) {
        sys::stderr_line(&format!(
            "sgxemu: system calls made without the C library will not reach the emulated devices: {e}\n"
        ));
    }
}

/// Installs the filter trapping `ranges` (at most `MAX_RANGES`).
pub fn install_ranges(ranges: &[Range]) -> std::io::Result<()> {
    if ranges.is_empty() {
        return Ok(());
    }
    let ranges = &ranges[..ranges.len().min(MAX_RANGES)];
    let program = filter(ranges).ok_or_else(|| std::io::Error::other("the filter is too large"))?;
    let fprog = libc::sock_fprog { len: program.len() as u16, filter: program.as_ptr() as *mut libc::sock_filter };
    for (slot, &(start, end)) in RANGES.iter().zip(ranges) {
        slot.0.store(start, Ordering::Relaxed);
        slot.1.store(end, Ordering::Relaxed);
    }
    RANGE_COUNT.store(ranges.len(), Ordering::Release);
    let set = || {
        // SAFETY: `fprog` points at `program`, alive for the call; the kernel copies it.
        unsafe {
            libc::syscall(libc::SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC, &fprog as *const _)
        }
    };
    let mut ret = set();
    if ret != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EACCES) {
        // Without CAP_SYS_ADMIN a filter needs no_new_privs.
        // SAFETY: PR_SET_NO_NEW_PRIVS takes integers.
        unsafe {
            libc::prctl(
                libc::PR_SET_NO_NEW_PRIVS,
                1 as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
            )
        };
        ret = set();
    }
    match ret {
        0 => {
            INSTALLED.store(true, Ordering::Release);
            Ok(())
        }
        r if r > 0 => Err(std::io::Error::other(format!("seccomp: thread {r} could not take the filter"))),
        _ => Err(std::io::Error::other(format!("seccomp: {}", std::io::Error::last_os_error()))),
    }
}

/// Whether `rip` lies in a range this image's filter traps.
fn in_ranges(rip: u64) -> bool {
    let n = RANGE_COUNT.load(Ordering::Acquire).min(MAX_RANGES);
    RANGES[..n].iter().any(|(s, e)| (s.load(Ordering::Relaxed)..e.load(Ordering::Relaxed)).contains(&rip))
}

/// Whether a signal being delivered (`uc` its context) looks like our filter's trap: the
/// handlers then run on the thread's emulator stack, made for it if need be, since carrying
/// out a device call needs more stack than a program's signal stack may have. No system
/// call, no thread-local storage.
pub(crate) fn is_trap_context(sig: c_int, uc: *mut c_void) -> bool {
    if sig != libc::SIGSYS || !installed() {
        return false;
    }
    // SAFETY: the kernel's ucontext for this signal.
    let gregs = unsafe { &(*uc.cast::<libc::ucontext_t>()).uc_mcontext.gregs };
    let (nr, rip) = (gregs[libc::REG_RAX as usize], gregs[libc::REG_RIP as usize] as u64);
    TRAPPED.contains(&nr) && in_ranges(rip.wrapping_sub(2))
}

/// Whether a SIGSYS is our filter's trap (of this image's filter or an inherited one).
///
/// # Safety
/// `info` is the siginfo the kernel passed to the handler of this SIGSYS.
pub unsafe fn is_ours(info: *const libc::siginfo_t) -> bool {
    // SAFETY: the caller passes the kernel's siginfo for this signal.
    let info = unsafe { &*info };
    info.si_code == SYS_SECCOMP && info.si_errno == SECCOMP_RET_DATA as c_int
}

// ---------------------------------------------------------------------------------------
// The handler.

/// Carries out the trapped system call in `frame` (number in RAX — the kernel puts it back
/// there — arguments in RDI, RSI, RDX, R10, R8, R9) and writes its result to RAX; RIP is
/// already past the `syscall` instruction. The program's `errno` is left as it was.
pub fn on_trap(frame: &mut Frame) -> Outcome {
    let mut regs = frame.regs();
    let args = [regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8, regs.r9];
    // SAFETY: __errno_location returns this thread's errno slot (FS is the host's here).
    let errno = unsafe { libc::__errno_location() };
    // SAFETY: as above.
    let saved = unsafe { *errno };
    let nr = regs.rax as c_long;
    let rsp = regs.rsp;
    let result = if nr == libc::SYS_rt_sigprocmask {
        rt_sigprocmask(frame, args)
    } else {
        std::panic::catch_unwind(|| emulate(nr, args, rsp)).unwrap_or(-c_long::from(libc::EIO))
    };
    // SAFETY: as above.
    unsafe { *errno = saved };
    regs.rax = result as u64;
    frame.set_regs(&regs);
    Outcome::Resume
}

/// Whether a call of the C library's `syscall()` function for `nr`, returning to `caller`,
/// is one the emulator carries out ([`carry_out`]): a [`TRAPPED`] number, or one of
/// [`CARRIED_OUT_FROM_SYSCALL_FUNCTION`], called from the
/// program's code (the ranges whose own `syscall` instructions the filter traps), never
/// from the emulator, the C library or the dynamic linker, whose calls go to the kernel.
pub fn carries_out_syscall_function(nr: c_long, caller: u64) -> bool {
    (TRAPPED.contains(&nr) || CARRIED_OUT_FROM_SYSCALL_FUNCTION.contains(&nr)) && in_ranges(caller)
}

/// A system call a program makes through the C library's `syscall()` function (see
/// [`carries_out_syscall_function`]), carried out as the same call trapped from its own
/// code is (`rt_sigprocmask` aside: the caller answers it as `sigprocmask`). `rsp` stands
/// for the caller's stack pointer. The kernel's result: a value, or `-errno`.
pub fn carry_out(nr: c_long, args: [u64; 6], rsp: u64) -> c_long {
    std::panic::catch_unwind(|| emulate(nr, args, rsp)).unwrap_or(-c_long::from(libc::EIO))
}

/// The real system call, made by this object's own instruction (exempt from the filter):
/// its result, or `-errno`.
fn real(nr: c_long, a: [u64; 6]) -> c_long {
    // SAFETY: the program's own system call with its own arguments, as it made it.
    unsafe { sys::raw_syscall(nr, a) }
}

fn neg(errno: c_int) -> c_long {
    -c_long::from(errno)
}

/// A C string of the program's (PATH_MAX at most), read without faulting.
fn read_path(addr: u64) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut at = addr;
    while out.len() < libc::PATH_MAX as usize {
        let chunk = (4096 - at % 4096).min(256) as usize;
        let mut buf = [0u8; 256];
        sys::read_own_memory(at, &mut buf[..chunk]).ok()?;
        if let Some(nul) = buf[..chunk].iter().position(|&b| b == 0) {
            out.extend_from_slice(&buf[..nul]);
            return Some(out);
        }
        out.extend_from_slice(&buf[..chunk]);
        at += chunk as u64;
    }
    None
}

/// The path argument at `addr` of a call relative to `dirfd` (AT_FDCWD for the calls
/// without one), spelled as `devices_fs` answers for it: a name relative to a descriptor of
/// `/dev` or of `/dev/sgx` as its absolute path (`None`: unreadable).
fn path_at(dirfd: c_int, addr: u64) -> Option<Vec<u8>> {
    if addr == 0 {
        return None;
    }
    let path = read_path(addr)?;
    if path.first() != Some(&b'/')
        && dirfd != libc::AT_FDCWD
        && let Some(absolute) = devices_fs::in_dev_directory(dirfd, &path)
    {
        return Some(absolute.to_bytes().to_vec());
    }
    Some(path)
}

/// The emulated node a path argument names (`None`: unreadable or not ours).
fn node_at(dirfd: c_int, addr: u64) -> Option<devices_fs::Node> {
    devices_fs::resolve(&path_at(dirfd, addr)?)
}

/// Whether an `*at` call's path is empty with AT_EMPTY_PATH (the call is about `dirfd`).
fn empty_path(addr: u64, flags: u64) -> bool {
    let mut first = [1u8];
    flags & libc::AT_EMPTY_PATH as u64 != 0
        && addr != 0
        && sys::read_own_memory(addr, &mut first).is_ok()
        && first[0] == 0
}

/// Writes `value`'s bytes to the program's `addr`: 0, or -EFAULT.
fn put<T>(addr: u64, value: &T) -> c_long {
    // SAFETY: reads the bytes of a plain value of the kernel's layout.
    let bytes = unsafe { std::slice::from_raw_parts((value as *const T).cast::<u8>(), size_of::<T>()) };
    if addr != 0 && sys::write_memory_of(sys::getpid(), addr, bytes).is_ok() { 0 } else { neg(libc::EFAULT) }
}

/// Reads a `T` (plain data) from the program's `addr`.
fn get<T: Copy>(addr: u64) -> Option<T> {
    let mut value = std::mem::MaybeUninit::<T>::zeroed();
    // SAFETY: the bytes of the zeroed value, writable for its size.
    let bytes = unsafe { std::slice::from_raw_parts_mut(value.as_mut_ptr().cast::<u8>(), size_of::<T>()) };
    sys::read_own_memory(addr, bytes).ok()?;
    // SAFETY: every field of the types read here (kernel structs of integers) is valid for
    // any bytes.
    Some(unsafe { value.assume_init() })
}

fn result_of(r: Result<(), c_int>) -> c_long {
    r.map_or_else(neg, |()| 0)
}

fn emulate(nr: c_long, a: [u64; 6], rsp: u64) -> c_long {
    let fd = a[0] as c_int;
    match nr {
        libc::SYS_open => open(libc::AT_FDCWD, a[0], a[1] as c_int).unwrap_or_else(|| real(nr, a)),
        libc::SYS_openat => open(fd, a[1], a[2] as c_int).unwrap_or_else(|| real(nr, a)),
        libc::SYS_openat2 => {
            // struct open_how starts with its u64 flags.
            let flags = get::<u64>(a[2]).unwrap_or(0);
            open(fd, a[1], flags as c_int).unwrap_or_else(|| real(nr, a))
        }
        libc::SYS_close => {
            if own_fds::is_own(fd) {
                return neg(libc::EBADF);
            }
            devices_fs::closing(fd);
            let result = real(nr, a);
            devices_fs::closed(fd);
            result
        }
        libc::SYS_close_range => own_fds::close_range(a[0] as c_uint, a[1] as c_uint, a[2] as c_uint),
        libc::SYS_dup | libc::SYS_dup2 | libc::SYS_dup3 => {
            let checked = if nr == libc::SYS_dup {
                own_fds::check_named(fd)
            } else {
                own_fds::before_dup_onto(fd, a[1] as c_int)
            };
            if let Err(errno) = checked {
                return neg(errno);
            }
            let new = real(nr, a);
            devices_fs::duplicated(fd, new as c_int);
            new
        }
        libc::SYS_fcntl => {
            if let Err(errno) = own_fds::check_named(fd) {
                return neg(errno);
            }
            let new = real(nr, a);
            let cmd = a[1] as c_int;
            if cmd == libc::F_DUPFD || cmd == libc::F_DUPFD_CLOEXEC {
                devices_fs::duplicated(fd, new as c_int);
            }
            new
        }
        libc::SYS_ioctl => match devices_fs::device_engine(fd) {
            Some(engine) => result_of(engine.ioctl(fd, a[1] as u32, a[2]).map_err(|e| e.0)),
            None => real(nr, a),
        },
        libc::SYS_mmap => match devices_fs::device_engine(a[4] as c_int) {
            Some(engine) => match engine.mmap_at(a[0], a[1], a[2] as c_int, a[3] as c_int, a[4] as c_int, a[5]) {
                Ok(at) => at as c_long,
                Err(e) => neg(e.0),
            },
            None if a[3] as c_int & libc::MAP_ANONYMOUS == 0 && own_fds::is_own(a[4] as c_int) => neg(libc::EBADF),
            None => match program_maps::replacing_engine(a[0], a[1], a[3] as c_int) {
                Some(engine) => mapped_over(engine, a[0], a[1], || real(nr, a)),
                None => real(nr, a),
            },
        },
        libc::SYS_munmap => match devices_fs::mapping_engine(a[0], a[1]) {
            Some(engine) => result_of(engine.munmap(a[0], a[1]).map_err(|e| e.0)),
            None => real(nr, a),
        },
        libc::SYS_mprotect => match devices_fs::mapping_engine(a[0], a[1]) {
            Some(engine) => result_of(engine.mprotect(a[0], a[1], a[2] as c_int).map_err(|e| e.0)),
            None => real(nr, a),
        },
        libc::SYS_mremap => match devices_fs::mapping_engine(a[0], a[1]) {
            Some(engine) => mremap_enclave(engine, a),
            None => match program_maps::remap_target_engine(a[4], a[2], a[3] as c_int) {
                Some(engine) => mapped_over(engine, a[4], a[2], || real(nr, a)),
                None => real(nr, a),
            },
        },
        libc::SYS_rt_sigaction => rt_sigaction(a),
        libc::SYS_sigaltstack => sigaltstack(a[0], a[1], rsp),
        libc::SYS_stat | libc::SYS_lstat => {
            stat_node(node_at(libc::AT_FDCWD, a[0]), nr == libc::SYS_stat, a[1]).unwrap_or_else(|| real(nr, a))
        }
        libc::SYS_fstat => stat_node(devices_fs::descriptor_node(fd), true, a[1]).unwrap_or_else(|| real(nr, a)),
        libc::SYS_newfstatat => {
            let follow = a[3] & libc::AT_SYMLINK_NOFOLLOW as u64 == 0;
            let node = if empty_path(a[1], a[3]) { devices_fs::descriptor_node(fd) } else { node_at(fd, a[1]) };
            stat_node(node, follow, a[2]).unwrap_or_else(|| real(nr, a))
        }
        libc::SYS_statx => {
            let follow = a[2] & libc::AT_SYMLINK_NOFOLLOW as u64 == 0;
            let node = if empty_path(a[1], a[2]) { devices_fs::descriptor_node(fd) } else { node_at(fd, a[1]) };
            match node.and_then(|n| devices_fs::stat_of(n, follow)) {
                Some(st) => put(a[4], &devices_fs::statx_of(&st)),
                None => real(nr, a),
            }
        }
        libc::SYS_access => access(libc::AT_FDCWD, a[0], a[1]).unwrap_or_else(|| real(nr, a)),
        libc::SYS_faccessat | libc::SYS_faccessat2 => access(fd, a[1], a[2]).unwrap_or_else(|| real(nr, a)),
        libc::SYS_readlink => readlink(libc::AT_FDCWD, a[0], a[1], a[2]).unwrap_or_else(|| real(nr, a)),
        libc::SYS_readlinkat => readlink(fd, a[1], a[2], a[3]).unwrap_or_else(|| real(nr, a)),
        libc::SYS_getdents64 | libc::SYS_getdents => {
            let layout = if nr == libc::SYS_getdents64 { DirentLayout::Dirent64 } else { DirentLayout::Dirent };
            match dev_listing::getdents(fd, a[2] as usize, layout, || real(nr, a)) {
                None => real(nr, a),
                Some(Getdents::Host(result)) => result,
                Some(Getdents::Emulated(records)) => copy_out(a[1], &records),
                Some(Getdents::Failed(errno)) => neg(errno),
            }
        }
        libc::SYS_chdir => chdir(a[0]).unwrap_or_else(|| real(nr, a)),
        libc::SYS_fchdir => {
            let result = real(nr, a);
            if result == 0 {
                devices_fs::changed_directory(devices_fs::fchdir_into_sgx_dir(fd));
            }
            result
        }
        libc::SYS_getcwd => match devices_fs::getcwd(a[1] as usize) {
            Some(Ok(cwd)) => copy_out(a[0], cwd),
            Some(Err(errno)) => neg(errno),
            None => real(nr, a),
        },
        libc::SYS_pread64 => match devices_fs::msr_pread(fd, a[2] as usize, a[3] as i64) {
            Some(Ok(bytes)) => copy_out(a[1], &bytes),
            Some(Err(errno)) => neg(errno),
            None => real(nr, a),
        },
        libc::SYS_readv | libc::SYS_preadv | libc::SYS_preadv2 => {
            // preadv2's offset -1 is the file position, as readv's.
            let offset = match nr {
                libc::SYS_readv => None,
                libc::SYS_preadv2 if a[3] as i64 == -1 => None,
                _ => Some(a[3] as i64),
            };
            msr_readv(fd, a[1], a[2], offset).unwrap_or_else(|| real(nr, a))
        }
        _ => real(nr, a),
    }
}

/// Copies `bytes` to the program's `addr`: their length, or -EFAULT.
fn copy_out(addr: u64, bytes: &[u8]) -> c_long {
    if bytes.is_empty() || sys::write_memory_of(sys::getpid(), addr, bytes).is_ok() {
        bytes.len() as c_long
    } else {
        neg(libc::EFAULT)
    }
}

/// chdir(2) of a path the emulator answers for (`None`: the host's call as made).
fn chdir(path: u64) -> Option<c_long> {
    let plan = devices_fs::chdir(&read_path(path)?);
    let change = |to: &std::ffi::CStr, into_sgx_dir: bool| {
        let result = real(libc::SYS_chdir, [to.as_ptr() as u64, 0, 0, 0, 0, 0]);
        if result == 0 {
            devices_fs::changed_directory(into_sgx_dir);
        }
        result
    };
    Some(match plan {
        Chdir::IntoSgxDir => change(c"/dev", true),
        Chdir::Fail(errno) => neg(errno),
        Chdir::Host(Some(absolute)) => change(&absolute, false),
        Chdir::Host(None) => {
            let result = real(libc::SYS_chdir, [path, 0, 0, 0, 0, 0]);
            if result == 0 {
                devices_fs::changed_directory(false);
            }
            result
        }
    })
}

/// readv/preadv on an emulated MSR descriptor (`iov`: `count` iovecs of the program's);
/// `None`: not one.
fn msr_readv(fd: c_int, iov: u64, count: u64, offset: Option<i64>) -> Option<c_long> {
    if !devices_fs::any_msr_open() {
        return None;
    }
    if count > libc::UIO_MAXIOV as u64 {
        return Some(neg(libc::EINVAL));
    }
    let mut segments = Vec::with_capacity(count as usize);
    for i in 0..count {
        let Some(segment) = get::<libc::iovec>(iov + i * size_of::<libc::iovec>() as u64) else {
            return Some(neg(libc::EFAULT));
        };
        segments.push(segment);
    }
    let lengths: Vec<usize> = segments.iter().map(|s| s.iov_len).collect();
    Some(match devices_fs::msr_readv(fd, &lengths, offset)? {
        Ok(read) => {
            let mut total = 0;
            for (segment, bytes) in segments.iter().zip(&read) {
                if copy_out(segment.iov_base as u64, bytes) < 0 {
                    return Some(if total == 0 { neg(libc::EFAULT) } else { total });
                }
                total += bytes.len() as c_long;
            }
            total
        }
        Err(errno) => neg(errno),
    })
}

/// A raw `mmap`/`mremap` (`host`, its result or -errno) that puts a mapping of the
/// program over `[addr, addr + len)`, part of an enclave mapping (see `program_maps`).
fn mapped_over(engine: &Engine, addr: u64, len: u64, host: impl FnOnce() -> c_long) -> c_long {
    let made = engine.replaced_by_program(addr, len, || {
        let r = host();
        if r < 0 { Err(std::io::Error::from_raw_os_error(-r as c_int)) } else { Ok(r) }
    });
    made.unwrap_or_else(|e| neg(e.raw_os_error().unwrap_or(libc::ENOMEM)))
}

/// The open family on an emulated path; `None`: the host's call.
fn open(dirfd: c_int, path: u64, flags: c_int) -> Option<c_long> {
    match devices_fs::open(node_at(dirfd, path)?, flags) {
        Ok(Some(fd)) => Some(c_long::from(fd)),
        Ok(None) => None,
        Err(errno) => Some(neg(errno)),
    }
}

fn stat_node(node: Option<devices_fs::Node>, follow: bool, buf: u64) -> Option<c_long> {
    let st = devices_fs::stat_of(node?, follow)?;
    Some(put(buf, &st))
}

fn access(dirfd: c_int, path: u64, mode: u64) -> Option<c_long> {
    Some(result_of(devices_fs::access(node_at(dirfd, path)?, mode as c_int)?))
}

fn readlink(dirfd: c_int, path: u64, buf: u64, size: u64) -> Option<c_long> {
    Some(match devices_fs::readlink(&path_at(dirfd, path)?)? {
        Ok(_) if size as i64 <= 0 => neg(libc::EINVAL),
        Ok(target) => {
            let n = target.len().min(size as usize);
            if sys::write_memory_of(sys::getpid(), buf, &target.as_bytes()[..n]).is_ok() {
                n as c_long
            } else {
                neg(libc::EFAULT)
            }
        }
        Err(errno) => neg(errno),
    })
}

/// `mremap` of an enclave mapping: shrinking in place is an unmap of the tail; growing
/// fails as the kernel's does for an SGX VMA (VM_DONTEXPAND: EFAULT); moving is refused
/// (EINVAL).
pub fn mremap_enclave(engine: &Engine, a: [u64; 6]) -> c_long {
    let (old, old_len, new_len, flags) = (a[0], a[1], a[2], a[3] as c_int);
    if flags & (libc::MREMAP_FIXED | libc::MREMAP_DONTUNMAP) != 0 || new_len == 0 {
        return neg(libc::EINVAL);
    }
    let page = |n: u64| n.next_multiple_of(4096);
    let (old_len, new_len) = (page(old_len), page(new_len));
    if new_len > old_len {
        return neg(libc::EFAULT);
    }
    if new_len < old_len
        && let Err(e) = engine.munmap(old + new_len, old_len - new_len)
    {
        return neg(e.0);
    }
    old as c_long
}

/// rt_sigaction(2) as the `sigaction` interposer carries it out: dispositions of the
/// emulator's signals are recorded, handlers of asynchronous ones are installed wrapped.
fn rt_sigaction(a: [u64; 6]) -> c_long {
    let (sig, act, old, setsize) = (a[0] as c_int, a[1], a[2], a[3]);
    if setsize != 8 {
        return neg(libc::EINVAL);
    }
    if !(1..=64).contains(&sig) || (act != 0 && (sig == libc::SIGKILL || sig == libc::SIGSTOP)) {
        return neg(libc::EINVAL);
    }
    let new = if act == 0 {
        None
    } else {
        let Some(k) = get::<KernelSigaction>(act) else { return neg(libc::EFAULT) };
        // SAFETY: all-zero is a valid sigaction.
        let mut c: libc::sigaction = unsafe { std::mem::zeroed() };
        c.sa_sigaction = k.handler as usize;
        c.sa_flags = (k.flags & !SA_RESTORER) as c_int;
        // SAFETY: the first word of a sigset_t holds signals 1-64, as the kernel's mask.
        unsafe { *(&mut c.sa_mask as *mut libc::sigset_t).cast::<u64>() = k.mask };
        Some(c)
    };
    // SAFETY: all-zero is a valid sigaction.
    let mut previous: libc::sigaction = unsafe { std::mem::zeroed() };
    let act_ptr = new.as_ref().map_or(std::ptr::null(), |c| c as *const libc::sigaction);
    let ret = if crate::signals::owns(sig) {
        // SAFETY: null or valid sigactions.
        unsafe { crate::signals::app_sigaction(sig, act_ptr, &mut previous) };
        0
    } else {
        // SAFETY: null or valid sigactions.
        unsafe { crate::signals::wrap_async(sig, act_ptr, &mut previous) }
    };
    if ret != 0 {
        return neg(std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EINVAL));
    }
    if old == 0 {
        return 0;
    }
    // SAFETY: as above.
    let mask = unsafe { *(&previous.sa_mask as *const libc::sigset_t).cast::<u64>() };
    let restorer = previous.sa_restorer.map_or(0, |f| f as usize as u64);
    let flags = previous.sa_flags as u32 as u64 | if restorer != 0 { SA_RESTORER } else { 0 };
    put(old, &KernelSigaction { handler: previous.sa_sigaction as u64, flags, restorer, mask })
}

/// rt_sigprocmask(2) as the `pthread_sigmask` interposer carries it out
/// ([`crate::signals::program_mask_change`]), on the mask the interrupted code gets back
/// when the handler returns (the frame's).
fn rt_sigprocmask(frame: &mut Frame, a: [u64; 6]) -> c_long {
    let (how, set, old, setsize) = (a[0] as c_int, a[1], a[2], a[3]);
    if setsize != 8 {
        return neg(libc::EINVAL);
    }
    let asked = if set == 0 {
        None
    } else {
        let Some(word) = get::<u64>(set) else { return neg(libc::EFAULT) };
        // SAFETY: an all-zero sigset_t is the empty set; its first word holds signals 1-64.
        let mut asked: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        unsafe { *(&mut asked as *mut libc::sigset_t).cast::<u64>() = word };
        Some(asked)
    };
    let current = frame.sigmask();
    let (new, reported) = match crate::signals::program_mask_change(&current, how, asked.as_ref()) {
        Ok(masks) => masks,
        Err(errno) => return neg(errno),
    };
    // SAFETY: the first word of a sigset_t holds signals 1-64, as the kernel's mask.
    let reported = unsafe { *(&reported as *const libc::sigset_t).cast::<u64>() };
    if old != 0 && put(old, &reported) != 0 {
        return neg(libc::EFAULT);
    }
    frame.set_sigmask(new);
    0
}

/// sigaltstack(2) as the interposer carries it out, judged at the program's stack pointer.
fn sigaltstack(ss: u64, old: u64, rsp: u64) -> c_long {
    let new = if ss == 0 {
        None
    } else {
        match get::<libc::stack_t>(ss) {
            Some(s) => Some(s),
            None => return neg(libc::EFAULT),
        }
    };
    let mut previous = libc::stack_t { ss_sp: std::ptr::null_mut(), ss_flags: 0, ss_size: 0 };
    match crate::alt_stack::program_sigaltstack(new.as_ref(), &mut previous, rsp) {
        Ok(()) if old != 0 => put(old, &previous),
        Ok(()) => 0,
        Err(errno) => neg(errno),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the filter on one `seccomp_data` as the kernel would (a classic-BPF interpreter
    /// of the instructions the filter uses).
    fn run(program: &[libc::sock_filter], nr: c_long, ip: u64, args: [u64; 6]) -> u32 {
        let mut data = [0u8; 64];
        data[0..4].copy_from_slice(&(nr as u32).to_le_bytes());
        data[4..8].copy_from_slice(&AUDIT_ARCH_X86_64.to_le_bytes());
        data[8..16].copy_from_slice(&ip.to_le_bytes());
        for (i, a) in args.iter().enumerate() {
            data[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_le_bytes());
        }
        let (mut pc, mut acc) = (0usize, 0u32);
        loop {
            let insn = program[pc];
            pc += 1;
            let k = insn.k;
            let cond = |taken: bool| if taken { usize::from(insn.jt) } else { usize::from(insn.jf) };
            match insn.code {
                BPF_LD_W_ABS => acc = u32::from_le_bytes(data[k as usize..k as usize + 4].try_into().unwrap()),
                BPF_RET_K => return k,
                BPF_JMP_JA => pc += k as usize,
                BPF_JMP_JEQ_K => pc += cond(acc == k),
                BPF_JMP_JGT_K => pc += cond(acc > k),
                BPF_JMP_JGE_K => pc += cond(acc >= k),
                BPF_JMP_JSET_K => pc += cond(acc & k != 0),
                other => panic!("opcode {other:#x}"),
            }
        }
    }

    const TRAP: u32 = SECCOMP_RET_TRAP | SECCOMP_RET_DATA;

    #[test]
    fn the_filter_traps_device_calls_from_covered_code_only() {
        let ranges = [(0x5555_0000_0000, 0x5555_0001_0000), (0xffff_f000, 0x1_0000_1000)];
        let program = filter(&ranges).expect("assembles");
        assert!(program.len() < 120, "{} instructions", program.len());
        let inside = 0x5555_0000_8000;
        for &nr in &TRAPPED {
            let args = if nr == libc::SYS_fcntl { [3, libc::F_DUPFD as u64, 0, 0, 0, 0] } else { [0; 6] };
            assert_eq!(run(&program, nr, inside, args), TRAP, "syscall {nr}");
            assert_eq!(run(&program, nr, 0x7f00_0000_0000, args), SECCOMP_RET_ALLOW, "syscall {nr} from libc");
        }
        for nr in [0, 1, 39, 60, 110, 202, 231, 435, 500, 0x4000_0002] {
            assert_eq!(run(&program, nr, inside, [0; 6]), SECCOMP_RET_ALLOW, "unrelated syscall {nr}");
        }
        // Range edges, and a range across a 4 GiB boundary.
        assert_eq!(run(&program, libc::SYS_open, 0x5555_0000_0000, [0; 6]), TRAP);
        assert_eq!(run(&program, libc::SYS_open, 0x5555_0000_ffff, [0; 6]), TRAP);
        assert_eq!(run(&program, libc::SYS_open, 0x5555_0001_0000, [0; 6]), SECCOMP_RET_ALLOW);
        assert_eq!(run(&program, libc::SYS_open, 0x5554_ffff_ffff, [0; 6]), SECCOMP_RET_ALLOW);
        for ip in [0xffff_f000, 0xffff_ffff, 0x1_0000_0000, 0x1_0000_0fff] {
            assert_eq!(run(&program, libc::SYS_open, ip, [0; 6]), TRAP, "{ip:#x}");
        }
        for ip in [0xffff_efff, 0x1_0000_1000, 0x2_ffff_f000] {
            assert_eq!(run(&program, libc::SYS_open, ip, [0; 6]), SECCOMP_RET_ALLOW, "{ip:#x}");
        }
        // Anonymous mmap and non-duplicating fcntl pass.
        let anon = [0, 4096, 3, (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64, u64::MAX, 0];
        assert_eq!(run(&program, libc::SYS_mmap, inside, anon), SECCOMP_RET_ALLOW);
        assert_eq!(run(&program, libc::SYS_mmap, inside, [0, 4096, 3, libc::MAP_SHARED as u64, 3, 0]), TRAP);
        // An anonymous MAP_FIXED one may replace an enclave mapping; MAP_FIXED_NOREPLACE never does.
        let fixed = [0x10000, 4096, 3, (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED) as u64, u64::MAX, 0];
        assert_eq!(run(&program, libc::SYS_mmap, inside, fixed), TRAP);
        let noreplace = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE) as u64;
        assert_eq!(
            run(&program, libc::SYS_mmap, inside, [0x10000, 4096, 3, noreplace, u64::MAX, 0]),
            SECCOMP_RET_ALLOW
        );
        assert_eq!(run(&program, libc::SYS_close_range, inside, [3, u64::from(u32::MAX), 0, 0, 0, 0]), TRAP);
        assert_eq!(run(&program, libc::SYS_fcntl, inside, [3, libc::F_GETFL as u64, 0, 0, 0, 0]), SECCOMP_RET_ALLOW);
        assert_eq!(run(&program, libc::SYS_fcntl, inside, [3, libc::F_DUPFD_CLOEXEC as u64, 0, 0, 0, 0]), TRAP);
    }

    #[test]
    fn ranges_merge_neighbours_but_never_across_an_exempt_object() {
        let e = |start, end, exempt| Extent { start, end, exempt };
        let extents = vec![
            e(0x7f00_0030_0000, 0x7f00_0040_0000, false),
            e(0x5555_0000_0000, 0x5555_0001_0000, false),
            e(0x7f00_0000_0000, 0x7f00_0010_0000, false),
            e(0x7f00_0010_8000, 0x7f00_0020_0000, false),
            e(0x7f00_0020_0000, 0x7f00_0030_0000, true),
            e(0x7fff_0000_0000, 0x7fff_0000_2000, true),
        ];
        assert_eq!(
            ranges_of(extents),
            vec![
                (0x5555_0000_0000, 0x5555_0001_0000),
                (0x7f00_0000_0000, 0x7f00_0020_0000),
                (0x7f00_0030_0000, 0x7f00_0040_0000)
            ]
        );
    }

    #[test]
    fn the_c_library_and_this_object_are_exempt() {
        let extents = loaded_extents();
        let covering = |addr: u64| extents.iter().find(|e| (e.start..e.end).contains(&addr)).copied();
        let libc = covering(libc::syscall as *const () as usize as u64).expect("libc is loaded");
        assert!(libc.exempt);
        assert!(covering(loaded_extents as *const () as usize as u64).expect("this object").exempt);
        assert!(extents.iter().any(|e| e.exempt && e.start != libc.start), "the loader or the vDSO");
    }
}
