//! The synthetic vDSO: `__vdso_sgx_enter_enclave` with the kernel's ABI and results, in an
//! ELF image programs find through `getauxval(AT_SYSINFO_EHDR)`, which also forwards every
//! symbol of the real vDSO so other users of that image keep working.
//!
//! The entry point follows the kernel's vsgx.S contract step by step (leaf check, reserved
//! bytes, TCS and AEP into RBX/RCX, one ENCLU serving as EENTER and as the AEP's ERESUME,
//! the exit and exception paths, the user handler). One difference is invisible to
//! callers: EENTER is done in software by calling into the emulator, because a trapping
//! ENCLU costs a #UD (about 7.5 µs under KVM); ERESUME, which follows an AEX, still runs the
//! real ENCLU at the AEP and traps.

use std::sync::OnceLock;

use crate::sys;
use crate::vdso_image::{self, Export, Forward};

/// Offsets of `SoftFrame` fields, shared with the assembly below.
pub(crate) mod frame {
    pub const RAX: usize = 0;
    pub const RBX: usize = 1;
    pub const RCX: usize = 2;
    pub const RDX: usize = 3;
    pub const RSI: usize = 4;
    pub const RDI: usize = 5;
    pub const R8: usize = 6;
    pub const RBP: usize = 14;
    pub const RSP: usize = 15;
    pub const RFLAGS: usize = 16;
    pub const RIP: usize = 17;
    pub const STATUS: usize = 18;
    pub const VECTOR: usize = 19;
    pub const ERROR: usize = 20;
    pub const ADDR: usize = 21;
    /// Words in the frame (the assembly reserves 192 bytes, 16-byte aligned, for it).
    pub const WORDS: usize = 22;

    /// The general-purpose registers a frame holds, with the given FS and GS bases.
    pub fn regs(words: &[u64; WORDS], fsbase: u64, gsbase: u64) -> sgxemu_cpu::Regs {
        sgxemu_cpu::Regs {
            rax: words[RAX],
            rbx: words[RBX],
            rcx: words[RCX],
            rdx: words[RDX],
            rsi: words[RSI],
            rdi: words[RDI],
            r8: words[R8],
            r9: words[R8 + 1],
            r10: words[R8 + 2],
            r11: words[R8 + 3],
            r12: words[R8 + 4],
            r13: words[R8 + 5],
            r14: words[R8 + 6],
            r15: words[R8 + 7],
            rbp: words[RBP],
            rsp: words[RSP],
            rflags: words[RFLAGS],
            rip: words[RIP],
            fsbase,
            gsbase,
        }
    }
}

/// The registers at the vDSO's ENCLU as the software EENTER receives and returns them.
#[repr(C)]
#[derive(Debug)]
pub struct SoftFrame {
    /// RAX, RBX, RCX, RDX, RSI, RDI, R8–R15, RBP, RSP, RFLAGS, RIP, status, vector,
    /// error code, address.
    pub words: [u64; frame::WORDS],
}

/// `status`: enter the enclave at `RIP` with the frame's registers.
pub const STATUS_ENTER: u64 = 0;
/// `status`: EENTER faulted; report `vector`, `error`, `addr` as the kernel's fixup does.
pub const STATUS_EXCEPTION: u64 = 1;

// The entry point, position independent so its bytes can be copied into the image. Labels
// the emulator needs are global; everything else is local.
std::arch::global_asm!(
    ".pushsection .text.sgxemu_vdso,\"ax\",@progbits",
    ".p2align 6",
    ".globl sgxemu_vdso_start",
    ".hidden sgxemu_vdso_start",
    "sgxemu_vdso_start:",
    "push rbp",
    "mov rbp, rsp",
    "push rbx",
    "mov eax, ecx",
    "2:",
    "cmp eax, 2",
    "jb 8f",
    "cmp eax, 3",
    "ja 8f",
    "mov rcx, [rbp + 16]",
    "mov rbx, 40",
    "3:",
    "cmp qword ptr [rcx + rbx], 0",
    "jne 8f",
    "add rbx, 8",
    "cmp rbx, 256",
    "jne 3b",
    "mov rbx, [rcx]",
    "lea rcx, [rip + sgxemu_vdso_aep]",
    "cmp eax, 2",
    "je 5f",
    ".globl sgxemu_vdso_aep",
    ".hidden sgxemu_vdso_aep",
    "sgxemu_vdso_aep:",
    ".byte 0x0f, 0x01, 0xd7",
    // EEXIT returns here.
    "mov rbx, [rbp + 16]",
    "mov dword ptr [rbx + 8], 4",
    "4:",
    "cmp qword ptr [rbx + 24], 0",
    "jne 7f",
    "xor eax, eax",
    "6:",
    "pop rbx",
    "leave",
    "ret",
    "8:",
    "mov eax, -22",
    "jmp 6b",
    ".globl sgxemu_vdso_handle_exception",
    ".hidden sgxemu_vdso_handle_exception",
    "sgxemu_vdso_handle_exception:",
    "mov rbx, [rbp + 16]",
    "mov dword ptr [rbx + 8], eax",
    "mov word ptr [rbx + 12], di",
    "mov word ptr [rbx + 14], si",
    "mov qword ptr [rbx + 16], rdx",
    "jmp 4b",
    // The user handler: untrusted RSP in RCX, `run` pushed, 16-byte aligned, DF clear.
    "7:",
    "mov rcx, rsp",
    "mov rax, rbx",
    "mov rbx, rsp",
    "and rbx, 0xf",
    "and rsp, -16",
    "push rax",
    "push rax",
    "cld",
    "mov rax, [rax + 24]",
    "lfence",
    "call rax",
    "lea rsp, [rsp + rbx + 0x10]",
    "cmp eax, 0",
    "jle 6b",
    "jmp 2b",
    // Software EENTER: every GPR into a SoftFrame, the emulator decides, then either jump
    // into the enclave with the frame's registers or take the exception path.
    "5:",
    // The frame goes on a 16-byte aligned stack whatever RSP the caller (or an enclave's
    // EEXIT, which the user handler path re-enters from) left: the kernel's ENCLU does not
    // care, so neither may this. RAX waits in the red zone while RSP is aligned.
    "mov [rsp - 8], rax",
    "mov rax, rsp",
    "and rsp, -16",
    "sub rsp, 192",
    "mov [rsp + 120], rax",
    "mov rax, [rax - 8]",
    "mov [rsp + 0], rax",
    "mov [rsp + 8], rbx",
    "mov [rsp + 16], rcx",
    "mov [rsp + 24], rdx",
    "mov [rsp + 32], rsi",
    "mov [rsp + 40], rdi",
    "mov [rsp + 48], r8",
    "mov [rsp + 56], r9",
    "mov [rsp + 64], r10",
    "mov [rsp + 72], r11",
    "mov [rsp + 80], r12",
    "mov [rsp + 88], r13",
    "mov [rsp + 96], r14",
    "mov [rsp + 104], r15",
    "mov [rsp + 112], rbp",
    "pushfq",
    "pop rax",
    "mov [rsp + 128], rax",
    "lea rax, [rip + sgxemu_vdso_aep]",
    "mov [rsp + 136], rax",
    "mov rdi, rsp",
    "call qword ptr [rip + sgxemu_vdso_slot_eenter]",
    "cmp qword ptr [rsp + 144], 0",
    "jne 9f",
    // Into the enclave: the entry point goes just below the RSP it starts with, and every
    // register comes from the frame.
    "mov rax, [rsp + 120]",
    "mov rcx, [rsp + 136]",
    "mov [rax - 8], rcx",
    "mov rax, [rsp + 0]",
    "mov rbx, [rsp + 8]",
    "mov rcx, [rsp + 16]",
    "mov rdx, [rsp + 24]",
    "mov rsi, [rsp + 32]",
    "mov rdi, [rsp + 40]",
    "mov r8, [rsp + 48]",
    "mov r9, [rsp + 56]",
    "mov r10, [rsp + 64]",
    "mov r11, [rsp + 72]",
    "mov r12, [rsp + 80]",
    "mov r13, [rsp + 88]",
    "mov r14, [rsp + 96]",
    "mov r15, [rsp + 104]",
    "mov rbp, [rsp + 112]",
    "mov rsp, [rsp + 120]",
    "jmp qword ptr [rsp - 8]",
    "9:",
    "mov rdi, [rsp + 152]",
    "mov rsi, [rsp + 160]",
    "mov rdx, [rsp + 168]",
    "mov eax, 2",
    "mov rsp, [rsp + 120]",
    "jmp sgxemu_vdso_handle_exception",
    ".p2align 3",
    ".globl sgxemu_vdso_slot_eenter",
    ".hidden sgxemu_vdso_slot_eenter",
    "sgxemu_vdso_slot_eenter:",
    ".quad 0",
    ".globl sgxemu_vdso_end",
    ".hidden sgxemu_vdso_end",
    "sgxemu_vdso_end:",
    ".popsection",
);

unsafe extern "C" {
    static sgxemu_vdso_start: u8;
    static sgxemu_vdso_aep: u8;
    static sgxemu_vdso_handle_exception: u8;
    static sgxemu_vdso_slot_eenter: u8;
    static sgxemu_vdso_end: u8;
}

const _: () = assert!(frame::WORDS * 8 <= 192 && frame::STATUS * 8 == 144 && frame::RIP * 8 == 136);

/// The mapped synthetic vDSO.
#[derive(Debug, Clone, Copy)]
pub struct Vdso {
    /// Where the image is mapped (what `getauxval(AT_SYSINFO_EHDR)` answers).
    pub base: u64,
    /// The ENCLU serving as EENTER/ERESUME and AEP.
    pub aep: u64,
    /// The kernel's exception fixup target.
    pub handle_exception: u64,
    /// `__vdso_sgx_enter_enclave`.
    pub enter_enclave: u64,
    /// The image's code: `[code_start, code_end)` (the software EENTER returns there in
    /// enclave mode before it jumps to the enclave).
    pub code_start: u64,
    /// End of the image's code.
    pub code_end: u64,
}

static VDSO: OnceLock<Option<Vdso>> = OnceLock::new();

fn label(symbol: &u8) -> usize {
    symbol as *const u8 as usize
}

/// The synthetic vDSO, built and mapped on first use (`None` if that failed).
pub fn vdso(soft_eenter: unsafe extern "C" fn(*mut SoftFrame)) -> Option<Vdso> {
    *VDSO.get_or_init(|| build(soft_eenter).inspect_err(|e| sys::stderr_line(&format!("sgxemu: vDSO: {e}\n"))).ok())
}

/// The synthetic vDSO if it was built.
pub fn get() -> Option<Vdso> {
    VDSO.get().copied().flatten()
}

fn build(soft_eenter: unsafe extern "C" fn(*mut SoftFrame)) -> Result<Vdso, String> {
    // SAFETY: the labels are defined by the global_asm above; only their addresses are used.
    let (start, aep, handle, slot, end) = unsafe {
        (
            label(&sgxemu_vdso_start),
            label(&sgxemu_vdso_aep),
            label(&sgxemu_vdso_handle_exception),
            label(&sgxemu_vdso_slot_eenter),
            label(&sgxemu_vdso_end),
        )
    };
    // SAFETY: [start, end) is the assembled code above, in this object's text.
    let mut code = unsafe { std::slice::from_raw_parts(start as *const u8, end - start) }.to_vec();
    let slot_at = slot - start;
    code[slot_at..slot_at + 8].copy_from_slice(&(soft_eenter as usize as u64).to_le_bytes());
    let real = real_vdso_symbols();
    let forwards: Vec<Forward> = real.iter().map(|(name, target)| Forward { name, target: *target }).collect();
    let exports = [Export { name: "__vdso_sgx_enter_enclave", code_offset: 0 }];
    let image = vdso_image::build(&code, &exports, &forwards).map_err(|e| e.to_string())?;
    let len = (image.bytes.len() as u64).div_ceil(4096) * 4096;
    let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;
    let base = sys::mmap(0, len, libc::PROT_READ | libc::PROT_WRITE, flags, -1, 0).map_err(|e| e.to_string())?;
    // SAFETY: `base` is a fresh RW mapping of `len` ≥ image length bytes.
    unsafe { std::ptr::copy_nonoverlapping(image.bytes.as_ptr(), base as *mut u8, image.bytes.len()) };
    sys::mprotect(base, len, libc::PROT_READ | libc::PROT_EXEC).map_err(|e| e.to_string())?;
    let code_base = base + image.code_start as u64;
    Ok(Vdso {
        base,
        aep: code_base + (aep - start) as u64,
        handle_exception: code_base + (handle - start) as u64,
        enter_enclave: code_base,
        code_start: code_base,
        code_end: code_base + code.len() as u64,
    })
}

/// The real vDSO's exported functions as absolute addresses.
fn real_vdso_symbols() -> Vec<(String, u64)> {
    // SAFETY: getauxval has no preconditions. The C library's own, not an interposer.
    let base = unsafe { crate::real::getauxval(libc::AT_SYSINFO_EHDR) };
    if base == 0 {
        return Vec::new();
    }
    // SAFETY: the kernel maps at least one page of vDSO at AT_SYSINFO_EHDR.
    let first = unsafe { std::slice::from_raw_parts(base as *const u8, 4096) };
    let Some(len) = vdso_image::image_len(first) else { return Vec::new() };
    // SAFETY: `image_len` read the mapped size from the image's own program headers.
    let image = unsafe { std::slice::from_raw_parts(base as *const u8, len) };
    vdso_image::read_real_vdso_symbols(image)
        .into_iter()
        .filter(|(name, _)| name != "__vdso_sgx_enter_enclave")
        .map(|(name, offset)| (name, base + offset))
        .collect()
}
