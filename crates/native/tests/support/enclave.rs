//! The native tests' own enclave: position-independent x86-64 assembly, copied page for
//! page into the enclave, and an in-process loader that drives the emulated
//! `/dev/sgx_enclave` and enters through the synthetic vDSO, as a program would.
//!
//! Layout (offsets from the enclave base): thread `i` (0–3) owns the 16 KiB block at
//! `i × 0x4000`: its TCS, two SSA frames (NSSA = 2) and one stack page. Code at 0x10000,
//! a data page at 0x12000; everything from 0x13000 up is dynamic (EAUG).
//!
//! Entry ABI: RDI = operation, RSI/RDX/R8/R9 = its operands. With CSSA = 0 an operation
//! runs and EEXITs; with CSSA > 0 the entry is the exception handler (SDK style) and RDI
//! picks a handler operation on SSA frame CSSA − 1.

#![allow(dead_code, reason = "each test binary uses a different part of the enclave")]

use sgxemu_arch::{Attributes, AttributesFlags, PAGE_SIZE, PageType, Secinfo, SecinfoFlags, Secs, Sigstruct, Tcs};
use sgxemu_crypto::MeasurementState;
use sgxemu_native::{Engine, enclu, vdso};
use sgxemu_uapi::{
    SGX_IOC_ENCLAVE_ADD_PAGES, SGX_IOC_ENCLAVE_CREATE, SGX_IOC_ENCLAVE_INIT, SGX_PAGE_MEASURE, SgxEnclaveAddPages,
    SgxEnclaveCreate, SgxEnclaveInit, SgxEnclaveRun,
};
use zerocopy::{FromZeros, IntoBytes};

pub const PAGE: u64 = PAGE_SIZE as u64;
pub const THREADS: u64 = 4;
pub const THREAD_BLOCK: u64 = 0x4000;
pub const TEXT: u64 = 0x10000;
pub const DATA: u64 = 0x12000;
pub const DYNAMIC: u64 = 0x13000;

/// Operations (RDI at EENTER with CSSA = 0).
pub mod op {
    /// [RSI] = RDX.
    pub const WRITE: u64 = 0;
    /// [RDX] (untrusted) = [RSI].
    pub const READ: u64 = 1;
    /// EACCEPT page RSI with SECINFO flags RDX; RAX → [R8].
    pub const EACCEPT: u64 = 2;
    /// EMODPE page RSI with flags RDX.
    pub const EMODPE: u64 = 3;
    /// EACCEPTCOPY page RSI from page R9 with flags RDX; RAX → [R8].
    pub const EACCEPTCOPY: u64 = 4;
    /// ud2.
    pub const UD2: u64 = 5;
    /// int3.
    pub const INT3: u64 = 6;
    /// Divide by zero.
    pub const DIV0: u64 = 7;
    /// Load from a non-canonical address (#GP).
    pub const GP: u64 = 8;
    /// Load from address RSI.
    pub const LOAD: u64 = 9;
    /// Fill RDX pages from RSI: word w of page p = R8 ^ (p << 32) ^ w.
    pub const FILL: u64 = 10;
    /// Check RDX pages from RSI against the FILL pattern for seed R8; mismatches → [R9].
    pub const CHECK: u64 = 11;
    /// Write a TCS image into the REG page RSI: OSSA = RDX, NSSA = 1, OENTRY = R8.
    pub const INIT_TCS: u64 = 12;
    /// EACCEPT RDX pages from RSI with flags R8; the number that failed → [R9].
    pub const EACCEPT_RANGE: u64 = 13;
    /// Spin RSI iterations, keeping a running sum in registers; the sum → [RDX].
    pub const SPIN: u64 = 14;
    /// `syscall` (getpid).
    pub const SYSCALL: u64 = 15;
    /// XSAVE64 to [RSI] with every component requested (EDX:EAX = all ones), then
    /// XGETBV(0) → [RDX].
    pub const XSAVE: u64 = 16;
    /// XSAVEC64 to [RSI] with every component requested, then XRSTOR64 from it.
    pub const XSAVEC_XRSTOR: u64 = 17;
    /// Spin (without PAUSE) until the untrusted qword [RSI] is not zero, counting rounds in
    /// the untrusted qword [RDX].
    pub const SPIN_UNTIL: u64 = 18;
    /// ZMM0 and K1 = RSI broadcast (AVX-512), then SPIN_UNTIL with RDX and R9 as its RSI and
    /// RDX, then ZMM0 → the untrusted 64 bytes at [R8] and K1 → [R8 + 64].
    pub const ZMM_ACROSS_AEX: u64 = 19;
    /// SPIN_UNTIL with a PAUSE in the loop, as spin locks do.
    pub const PAUSE_UNTIL: u64 = 20;
    /// Jump to RSI (wherever it is) with the enclave's stack and bases.
    pub const JUMP: u64 = 21;
    /// XRSTOR64 from [RSI], then XSAVE64 to [RDX], every component requested both times.
    pub const XRSTOR_XSAVE: u64 = 22;
}

// ENCLU[EENTER] as a program issues it itself (not through the vDSO; the emulator takes it
// in its fault handler): RAX = 2, RBX = TCS, RCX = the address after the ENCLU (the test
// enclave EEXITs to the RCX it was entered with). Arguments: TCS, then the enclave's RDI
// (operation), RSI, RDX, R8, R9. Returns RAX after the exit.
std::arch::global_asm!(
    ".pushsection .text.test_raw_eenter,\"ax\",@progbits",
    ".globl test_raw_eenter",
    ".hidden test_raw_eenter",
    "test_raw_eenter:",
    "push rbp",
    "push rbx",
    "push r12",
    "push r13",
    "push r14",
    "push r15",
    "mov r10, rdi",
    "mov rdi, rsi",
    "mov rsi, rdx",
    "mov rdx, rcx",
    "mov eax, 2",
    "lea rcx, [rip + 4f]",
    "xchg r10, rbx",
    ".byte 0x0f, 0x01, 0xd7",
    "4:",
    "pop r15",
    "pop r14",
    "pop r13",
    "pop r12",
    "pop rbx",
    "pop rbp",
    "ret",
    ".popsection",
);

unsafe extern "C" {
    fn test_raw_eenter(tcs: u64, op: u64, rsi: u64, rdx: u64, r8: u64, r9: u64) -> u64;
}

/// The program's own ENCLU[EENTER] of the test enclave's `tcs` with operation `op` and its
/// operands; returns RAX after the exit: EEXIT (4), or ERESUME (3) when the CPU continued
/// at the AEP (the ENCLU's address) after an AEX.
///
/// # Safety
/// `tcs` is a TCS of a loaded test enclave, free for this thread, and the operands are
/// what `op` wants (pointers it writes valid for that).
#[allow(dead_code, reason = "not every test binary enters by its own ENCLU")]
pub unsafe fn raw_eenter(tcs: u64, op: u64, rsi: u64, rdx: u64, r8: u64, r9: u64) -> u64 {
    // SAFETY: the caller's contract; the trampoline keeps the callee-saved registers.
    unsafe { test_raw_eenter(tcs, op, rsi, rdx, r8, r9) }
}

/// Handler operations (RDI at EENTER with CSSA > 0).
pub mod handler {
    /// Copy GPRSGX of frame CSSA − 1 (184 bytes) to [RSI].
    pub const REPORT: u64 = 0x100;
    /// As REPORT, then RIP of that frame += RDX (skip the faulting instruction).
    pub const SKIP: u64 = 0x101;
    /// ud2 inside the handler (a nested AEX).
    pub const UD2: u64 = 0x102;
}

// The enclave's code. Only relative addressing, so the bytes run wherever they are copied.
// (Numeric labels avoid 0/1-only names, which LLVM's Intel syntax reads as binary.)
std::arch::global_asm!(
    ".pushsection .text.test_enclave,\"ax\",@progbits",
    ".p2align 12",
    ".globl test_enclave_start",
    "test_enclave_start:",
    // Entry: RAX = CSSA, RBX = TCS, RCX = the return address.
    "mov r11, rsp",
    "lea rsp, [rbx + 0x4000]",
    "test rax, rax",
    "jz 2f",
    // Handler mode: a stack below the interrupted code's frames.
    "sub rsp, 0x800",
    "2:",
    "push r11",
    "push rcx",
    "push rax",
    "test rax, rax",
    "jnz 50f",
    "cmp rdi, 0",
    "je 60f",
    "cmp rdi, 1",
    "je 61f",
    "cmp rdi, 2",
    "je 12f",
    "cmp rdi, 3",
    "je 13f",
    "cmp rdi, 4",
    "je 14f",
    "cmp rdi, 5",
    "je 15f",
    "cmp rdi, 6",
    "je 16f",
    "cmp rdi, 7",
    "je 17f",
    "cmp rdi, 8",
    "je 18f",
    "cmp rdi, 9",
    "je 19f",
    "cmp rdi, 10",
    "je 20f",
    "cmp rdi, 11",
    "je 21f",
    "cmp rdi, 12",
    "je 22f",
    "cmp rdi, 13",
    "je 23f",
    "cmp rdi, 14",
    "je 24f",
    "cmp rdi, 15",
    "je 25f",
    "cmp rdi, 16",
    "je 26f",
    "cmp rdi, 17",
    "je 27f",
    "cmp rdi, 18",
    "je 28f",
    "cmp rdi, 19",
    "je 29f",
    "cmp rdi, 20",
    "je 32f",
    "cmp rdi, 21",
    "je 33f",
    "cmp rdi, 22",
    "je 34f",
    "jmp 90f",
    // JUMP: control leaves for RSI (outside ELRANGE, a fetch the processor refuses).
    "33:",
    "jmp rsi",
    // XSAVE: as the SDK's runtimes do, every component requested; XCR0 is the enclave's.
    "26:",
    "mov r10, rdx",
    "mov eax, -1",
    "mov edx, -1",
    "xsave64 [rsi]",
    "xor ecx, ecx",
    "xgetbv",
    "shl rdx, 32",
    "or rax, rdx",
    "mov [r10], rax",
    "jmp 90f",
    "27:",
    "mov eax, -1",
    "mov edx, -1",
    "xsavec64 [rsi]",
    "xrstor64 [rsi]",
    "jmp 90f",
    // XRSTOR_XSAVE: every component requested both times, as the SDK's runtimes do.
    "34:",
    "mov r10, rdx",
    "mov eax, -1",
    "mov edx, -1",
    "xrstor64 [rsi]",
    "xsave64 [r10]",
    "jmp 90f",
    "32:",
    "pause",
    "lock inc qword ptr [rdx]",
    "cmp qword ptr [rsi], 0",
    "je 32b",
    "jmp 90f",
    "29:",
    "vpbroadcastq zmm0, rsi",
    "kmovq k1, rsi",
    "mov rsi, rdx",
    "mov rdx, r9",
    "31:",
    "pause",
    "lock inc qword ptr [rdx]",
    "cmp qword ptr [rsi], 0",
    "je 31b",
    "vmovdqu64 [r8], zmm0",
    "kmovq [r8 + 64], k1",
    "jmp 90f",
    // No PAUSE: a pause loop would have the emulator's timer interrupts take it off its CPU
    // (pause-loop exiting), and this one must stay inside.
    "28:",
    "lock inc qword ptr [rdx]",
    "cmp qword ptr [rsi], 0",
    "je 28b",
    "jmp 90f",
    // SYSCALL: getpid, which an enclave may not do (#UD).
    "25:",
    "mov eax, 39",
    ".globl test_enclave_syscall",
    "test_enclave_syscall:",
    "syscall",
    "jmp 90f",
    "60:",
    "mov [rsi], rdx",
    "jmp 90f",
    "61:",
    "mov rax, [rsi]",
    "mov [rdx], rax",
    "jmp 90f",
    // EACCEPT / EMODPE / EACCEPTCOPY: a zeroed, 64-byte aligned SECINFO on the stack.
    "12:",
    "mov eax, 5",
    "jmp 30f",
    "13:",
    "mov eax, 6",
    "jmp 30f",
    "14:",
    "mov eax, 7",
    "30:",
    "mov r10, rsp",
    "sub rsp, 128",
    "and rsp, -64",
    "mov [rsp], rdx",
    "xor ecx, ecx",
    "mov [rsp + 8], rcx",
    "mov [rsp + 16], rcx",
    "mov [rsp + 24], rcx",
    "mov [rsp + 32], rcx",
    "mov [rsp + 40], rcx",
    "mov [rsp + 48], rcx",
    "mov [rsp + 56], rcx",
    "mov rbx, rsp",
    "mov rcx, rsi",
    "mov rdx, r9",
    ".byte 0x0f, 0x01, 0xd7",
    "mov rsp, r10",
    "test r8, r8",
    "jz 90f",
    "mov [r8], rax",
    "jmp 90f",
    ".globl test_enclave_ud2",
    "15:",
    "test_enclave_ud2:",
    "ud2",
    "jmp 90f",
    "16:",
    "int3",
    ".globl test_enclave_after_int3",
    "test_enclave_after_int3:",
    "jmp 90f",
    "17:",
    "xor ecx, ecx",
    "xor edx, edx",
    "mov eax, 1",
    ".globl test_enclave_div",
    "test_enclave_div:",
    "div rcx",
    "jmp 90f",
    "18:",
    "movabs rax, 0x8000000000000000",
    ".globl test_enclave_gp",
    "test_enclave_gp:",
    "mov rax, [rax]",
    "jmp 90f",
    "19:",
    ".globl test_enclave_load",
    "test_enclave_load:",
    "mov rax, [rsi]",
    "jmp 90f",
    // FILL / CHECK: RSI = start, RDX = pages, R8 = seed, R9 = mismatch counter (CHECK).
    "20:",
    "21:",
    "mov r10, rdi",
    "xor r11, r11",
    "xor ecx, ecx",
    "40:",
    "cmp rcx, rdx",
    "jae 44f",
    "xor eax, eax",
    "41:",
    "mov rbx, rcx",
    "shl rbx, 32",
    "xor rbx, r8",
    "xor rbx, rax",
    "cmp r10, 11",
    "je 42f",
    "mov [rsi + rax * 8], rbx",
    "jmp 43f",
    "42:",
    "cmp [rsi + rax * 8], rbx",
    "je 43f",
    "inc r11",
    "43:",
    "inc rax",
    "cmp rax, 512",
    "jb 41b",
    "add rsi, 4096",
    "inc rcx",
    "jmp 40b",
    "44:",
    "cmp r10, 11",
    "jne 90f",
    "mov [r9], r11",
    "jmp 90f",
    // INIT_TCS: zero the page, then OSSA, NSSA = 1, OENTRY, FS/GS limits.
    "22:",
    "xor eax, eax",
    "xor ecx, ecx",
    "45:",
    "mov [rsi + rcx * 8], rax",
    "inc rcx",
    "cmp rcx, 512",
    "jb 45b",
    "mov [rsi + 16], rdx",
    "mov dword ptr [rsi + 28], 1",
    "mov [rsi + 32], r8",
    "mov dword ptr [rsi + 64], 0xffffffff",
    "mov dword ptr [rsi + 68], 0xffffffff",
    "jmp 90f",
    // SPIN: sum 1..=RSI in RAX (registers survive AEX/ERESUME), then store it.
    "24:",
    "xor eax, eax",
    "49:",
    "test rsi, rsi",
    "jz 52f",
    "add rax, rsi",
    // LFENCE rather than PAUSE (which traps: pause-loop exiting) slows the loop.
    "lfence",
    "dec rsi",
    "jmp 49b",
    "52:",
    "mov [rdx], rax",
    "jmp 90f",
    // EACCEPT_RANGE: one SECINFO (flags R8) reused for RDX pages from RSI.
    "23:",
    "mov r10, rsp",
    "sub rsp, 128",
    "and rsp, -64",
    "mov [rsp], r8",
    "xor eax, eax",
    "mov [rsp + 8], rax",
    "mov [rsp + 16], rax",
    "mov [rsp + 24], rax",
    "mov [rsp + 32], rax",
    "mov [rsp + 40], rax",
    "mov [rsp + 48], rax",
    "mov [rsp + 56], rax",
    "xor r11, r11",
    "46:",
    "test rdx, rdx",
    "jz 47f",
    "mov rbx, rsp",
    "mov rcx, rsi",
    "mov eax, 5",
    ".byte 0x0f, 0x01, 0xd7",
    "test rax, rax",
    "jz 48f",
    "inc r11",
    "48:",
    "add rsi, 4096",
    "dec rdx",
    "jmp 46b",
    "47:",
    "mov rsp, r10",
    "mov [r9], r11",
    "jmp 90f",
    // Handler mode: frame CSSA − 1 is at TCS + 0x1000 × CSSA; GPRSGX is its last 184 bytes.
    "50:",
    "mov r10, [rsp]",
    "shl r10, 12",
    "add r10, rbx",
    "add r10, 0x1000 - 184",
    "cmp rdi, 0x102",
    "je 53f",
    "xor ecx, ecx",
    "51:",
    "mov rax, [r10 + rcx * 8]",
    "mov [rsi + rcx * 8], rax",
    "inc rcx",
    "cmp rcx, 23",
    "jb 51b",
    "cmp rdi, 0x101",
    "jne 90f",
    // GPRSGX.RIP is at offset 136.
    "add [r10 + 136], rdx",
    "jmp 90f",
    "53:",
    "ud2",
    // EEXIT to the return address, the untrusted RSP back.
    "90:",
    "pop rax",
    "pop rbx",
    "pop rsp",
    "mov eax, 4",
    ".byte 0x0f, 0x01, 0xd7",
    "ud2",
    ".globl test_enclave_end",
    "test_enclave_end:",
    ".popsection",
);

// Calls the vDSO entry point like the kernel selftests' call.S: the vDSO does not preserve
// RBX and R12–R15 across an enclave exit (an AEX zeroes them), so this wrapper does.
// Arguments as the vDSO's, plus the entry point itself as an 8th (stack) argument and, as a
// 9th, how many bytes below a 16-byte boundary RSP is at the call (the ABI wants 0).
std::arch::global_asm!(
    ".pushsection .text.test_vdso_call_offset,\"ax\",@progbits",
    ".globl test_vdso_call_offset",
    "test_vdso_call_offset:",
    "push rbp",
    "mov rbp, rsp",
    "push rbx",
    "push r12",
    "push r13",
    "push r14",
    "push r15",
    "mov rax, [rbp + 16]",
    "mov r11, [rbp + 24]",
    "mov r12, [rbp + 32]",
    "sub rsp, 64",
    "and rsp, -16",
    "sub rsp, r12",
    "sub rsp, 8",
    "push rax",
    "call r11",
    "lea rsp, [rbp - 40]",
    "pop r15",
    "pop r14",
    "pop r13",
    "pop r12",
    "pop rbx",
    "pop rbp",
    "ret",
    ".popsection",
);

unsafe extern "C" {
    fn test_vdso_call_offset(
        rdi: u64,
        rsi: u64,
        rdx: u64,
        function: u32,
        r8: u64,
        r9: u64,
        run: *mut SgxEnclaveRun,
        entry: u64,
        stack_offset: u64,
    ) -> i32;
    static test_enclave_start: u8;
    static test_enclave_end: u8;
    static test_enclave_ud2: u8;
    static test_enclave_syscall: u8;
    static test_enclave_after_int3: u8;
    static test_enclave_div: u8;
    static test_enclave_gp: u8;
    static test_enclave_load: u8;
}

/// Offsets of labelled instructions inside the text.
pub mod at {
    use super::*;

    fn offset(label: &u8) -> u64 {
        // SAFETY: only the labels' addresses are taken.
        let start = unsafe { &test_enclave_start } as *const u8 as u64;
        label as *const u8 as u64 - start
    }

    /// The ud2 of op::UD2.
    pub fn ud2() -> u64 {
        // SAFETY: address of an assembly label.
        offset(unsafe { &test_enclave_ud2 })
    }
    /// The syscall of op::SYSCALL.
    pub fn syscall() -> u64 {
        // SAFETY: address of an assembly label.
        offset(unsafe { &test_enclave_syscall })
    }
    /// The instruction after op::INT3's int3.
    pub fn after_int3() -> u64 {
        // SAFETY: address of an assembly label.
        offset(unsafe { &test_enclave_after_int3 })
    }
    /// op::DIV0's div.
    pub fn div() -> u64 {
        // SAFETY: address of an assembly label.
        offset(unsafe { &test_enclave_div })
    }
    /// op::GP's load.
    pub fn gp() -> u64 {
        // SAFETY: address of an assembly label.
        offset(unsafe { &test_enclave_gp })
    }
    /// op::LOAD's load.
    pub fn load() -> u64 {
        // SAFETY: address of an assembly label.
        offset(unsafe { &test_enclave_load })
    }
}

fn text_bytes() -> Vec<u8> {
    // SAFETY: [start, end) is the assembled enclave code in this binary's text.
    unsafe {
        let start = &test_enclave_start as *const u8;
        let end = &test_enclave_end as *const u8;
        std::slice::from_raw_parts(start, end as usize - start as usize).to_vec()
    }
}

/// The emulator for this test process: a small EPC, so oversubscription is quick (unless
/// [`start_engine`] chose another size first).
pub fn engine() -> &'static Engine {
    start_engine(4 << 20)
}

/// Starts the emulator with an EPC of `epc_size` bytes, if it does not run yet.
pub fn start_engine(epc_size: u64) -> &'static Engine {
    let config = sgxemu_native::PlatformConfig { epc_size, ..Default::default() };
    Engine::start_with(config).expect("the emulated platform starts")
}

#[repr(C, align(4096))]
struct AlignedPage([u8; PAGE_SIZE]);

/// A loaded test enclave.
#[derive(Debug)]
pub struct TestEnclave {
    /// The enclave's file descriptor.
    #[allow(dead_code, reason = "kept open for the enclave's lifetime")]
    pub fd: i32,
    pub base: u64,
    pub size: u64,
}

fn ioctl<T: IntoBytes + zerocopy::Immutable>(engine: &Engine, fd: i32, cmd: u32, arg: &T) -> Result<(), i32> {
    engine.ioctl(fd, cmd, arg as *const T as u64).map_err(|e| e.0)
}

fn tcs_page(thread: u64) -> Vec<u8> {
    let mut tcs = Tcs::new_zeroed();
    tcs.ossa = thread * THREAD_BLOCK + PAGE;
    tcs.nssa = 2;
    tcs.oentry = TEXT;
    tcs.fslimit = 0xFFFF_FFFF;
    tcs.gslimit = 0xFFFF_FFFF;
    let mut page = tcs.as_bytes().to_vec();
    page.resize(PAGE_SIZE, 0);
    page
}

impl TestEnclave {
    /// Builds, signs, loads and maps the enclave with an ELRANGE of `size` bytes and
    /// XFRM = x87 | SSE.
    pub fn load(size: u64) -> TestEnclave {
        Self::load_with_xfrm(size, 0x3)
    }

    /// [`TestEnclave::load`] with the given XFRM (its XSAVE area must fit the one-page SSA
    /// frames with GPRSGX: AVX-512 does, AMX does not).
    pub fn load_with_xfrm(size: u64, xfrm: u64) -> TestEnclave {
        Self::try_load_with_xfrm(size, xfrm).unwrap_or_else(|(step, errno)| panic!("{step}: errno {errno}"))
    }

    /// [`TestEnclave::load`] that reports a failing ioctl or mmap (its name and errno)
    /// instead of panicking; a failed load leaves its descriptor open.
    #[allow(dead_code, reason = "not every test binary loads fallibly")]
    pub fn try_load(size: u64) -> Result<TestEnclave, (&'static str, i32)> {
        Self::try_load_with_xfrm(size, 0x3)
    }

    fn try_load_with_xfrm(size: u64, xfrm: u64) -> Result<TestEnclave, (&'static str, i32)> {
        let engine = engine();
        // SAFETY: opening /dev/null for a descriptor number, as the preload does.
        let fd = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) };
        assert!(fd >= 0);
        engine.opened("/dev/sgx_enclave", fd);
        // A naturally aligned ELRANGE inside a reservation of twice its size.
        let reservation = sgxemu_native::sys::mmap(
            0,
            2 * size,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
        .expect("address space");
        let base = reservation.div_ceil(size) * size;
        let mut secs = Secs::new_zeroed();
        secs.baseaddr = base;
        secs.size = size;
        secs.ssaframesize = 1;
        secs.attributes = Attributes::new(AttributesFlags::MODE64BIT, xfrm);
        ioctl(engine, fd, SGX_IOC_ENCLAVE_CREATE, &SgxEnclaveCreate { src: secs.as_bytes().as_ptr() as u64 })
            .map_err(|e| ("ENCLAVE_CREATE", e))?;
        let mut measurement = MeasurementState::new();
        measurement.ecreate(1, size);
        let mut image: Vec<(u64, Vec<u8>, u64)> = Vec::new();
        let tcs_flags = (PageType::Tcs as u64) << 8;
        let reg = (PageType::Reg as u64) << 8;
        for thread in 0..THREADS {
            let block = thread * THREAD_BLOCK;
            image.push((block, tcs_page(thread), tcs_flags));
            for page in 1..4 {
                image.push((block + page * PAGE, vec![0; PAGE_SIZE], reg | 0x3));
            }
        }
        let mut text = text_bytes();
        text.resize(2 * PAGE_SIZE, 0xCC);
        image.push((TEXT, text[..PAGE_SIZE].to_vec(), reg | 0x5));
        image.push((TEXT + PAGE, text[PAGE_SIZE..].to_vec(), reg | 0x5));
        image.push((DATA, vec![0; PAGE_SIZE], reg | 0x3));
        for (offset, contents, flags) in &image {
            let secinfo = Secinfo::new(SecinfoFlags::from_bits_retain(*flags));
            // ADD_PAGES wants a page-aligned source.
            let mut source = Box::new(AlignedPage([0; PAGE_SIZE]));
            source.0.copy_from_slice(contents);
            let add = SgxEnclaveAddPages {
                src: source.0.as_ptr() as u64,
                offset: *offset,
                length: PAGE,
                secinfo: secinfo.as_bytes().as_ptr() as u64,
                flags: SGX_PAGE_MEASURE,
                count: 0,
            };
            ioctl(engine, fd, SGX_IOC_ENCLAVE_ADD_PAGES, &add).map_err(|e| ("ENCLAVE_ADD_PAGES", e))?;
            measurement.eadd(*offset, *flags);
            for (i, chunk) in contents.chunks_exact(256).enumerate() {
                measurement.eextend(offset + 256 * i as u64, chunk.try_into().expect("256 bytes"));
            }
        }
        let mut sig = Sigstruct::new_unsigned();
        sig.attributes = Attributes::new(AttributesFlags::MODE64BIT, xfrm);
        sig.enclavehash = measurement.finalize();
        sgxemu_crypto::sign(&mut sig, &sgxemu_cpu::testkit::test_signing_key()).expect("signed");
        ioctl(engine, fd, SGX_IOC_ENCLAVE_INIT, &SgxEnclaveInit { sigstruct: sig.as_bytes().as_ptr() as u64 })
            .map_err(|e| ("ENCLAVE_INIT", e))?;
        let shared = libc::MAP_SHARED | libc::MAP_FIXED;
        let rw = libc::PROT_READ | libc::PROT_WRITE;
        engine.mmap(base, TEXT, rw, shared, fd).map_err(|e| ("mmap", e.0))?;
        engine.mmap(base + TEXT, 2 * PAGE, libc::PROT_READ | libc::PROT_EXEC, shared, fd).map_err(|e| ("mmap", e.0))?;
        engine.mmap(base + DATA, PAGE, rw, shared, fd).map_err(|e| ("mmap", e.0))?;
        engine.mmap(base + DYNAMIC, size - DYNAMIC, rw, shared, fd).map_err(|e| ("mmap", e.0))?;
        Ok(TestEnclave { fd, base, size })
    }

    /// The TCS of thread `i`.
    pub fn tcs(&self, thread: u64) -> u64 {
        self.base + thread * THREAD_BLOCK
    }

    /// `__vdso_sgx_enter_enclave(rdi, rsi, rdx, function, r8, r9, run)` on `tcs`.
    pub fn enter(&self, tcs: u64, function: u32, regs: [u64; 5]) -> (i32, SgxEnclaveRun) {
        self.enter_with_stack_offset(tcs, function, 0, regs)
    }

    /// As [`TestEnclave::enter`], with the stack pointer at the vDSO call `offset` bytes
    /// below a 16-byte boundary (the ABI wants it on one).
    pub fn enter_with_stack_offset(
        &self,
        tcs: u64,
        function: u32,
        offset: u64,
        regs: [u64; 5],
    ) -> (i32, SgxEnclaveRun) {
        let v = vdso::vdso(enclu::soft_eenter).expect("the synthetic vDSO");
        let mut run = SgxEnclaveRun { tcs, ..SgxEnclaveRun::default() };
        let [rdi, rsi, rdx, r8, r9] = regs;
        // SAFETY: the wrapper calls the vDSO entry point with its C ABI, keeps the callee-saved
        // registers and restores its stack pointer from RBP; the enclave only touches the
        // memory the operands name.
        let ret = unsafe { test_vdso_call_offset(rdi, rsi, rdx, function, r8, r9, &mut run, v.enter_enclave, offset) };
        (ret, run)
    }

    /// EENTER on thread `thread` with an operation; asserts it EEXITs normally.
    pub fn call(&self, thread: u64, op: u64, rsi: u64, rdx: u64, r8: u64, r9: u64) {
        let (ret, run) = self.enter(self.tcs(thread), 2, [op, rsi, rdx, r8, r9]);
        assert_eq!((ret, run.function, run.exception_vector), (0, 4, 0), "op {op}: {run:?}");
    }

    /// EACCEPT from thread `thread`; returns EACCEPT's RAX.
    pub fn eaccept(&self, thread: u64, addr: u64, flags: u64) -> u64 {
        let mut result = u64::MAX;
        self.call(thread, op::EACCEPT, addr, flags, &mut result as *mut u64 as u64, 0);
        result
    }

    /// Reads an enclave qword from inside.
    pub fn read(&self, thread: u64, addr: u64) -> u64 {
        let mut value = 0u64;
        self.call(thread, op::READ, addr, &mut value as *mut u64 as u64, 0, 0);
        value
    }
}
