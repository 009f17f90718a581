//! `__vdso_sgx_enter_enclave`: found in this process's vDSO as the kernel's selftests find
//! it (`getauxval(AT_SYSINFO_EHDR)` gives the image, whose dynamic symbol table names it),
//! and called with its C ABI through a trampoline that keeps the callee-saved registers.

use std::ffi::CStr;

use sgxemu_uapi::SgxEnclaveRun;

use object::read::elf::{ElfFile64, FileHeader, ProgramHeader};
use object::{Endianness, Object, ObjectSymbol, elf};

/// The vDSO's first page: always mapped, and enough for its ELF and program headers.
const HEADER_WINDOW: usize = 4096;

/// The address of the vDSO symbol `name`, if the vDSO defines it.
pub fn find_symbol(name: &CStr) -> Option<u64> {
    // SAFETY: getauxval has no preconditions.
    let base = unsafe { libc::getauxval(libc::AT_SYSINFO_EHDR) };
    if base == 0 {
        return None;
    }
    // SAFETY: the vDSO's first page is mapped readable for the life of the process.
    let header = unsafe { std::slice::from_raw_parts(base as *const u8, HEADER_WINDOW) };
    let len = mapped_len(header)?;
    // SAFETY: the kernel maps the whole vDSO image — every PT_LOAD and the section
    // headers after them — readable, and never unmaps it.
    let image = unsafe { std::slice::from_raw_parts(base as *const u8, len) };
    symbol_in_image(image, name).map(|offset| base + offset)
}

std::arch::global_asm!(
    // vdso_call(rdi, rsi, rdx, function, r8, r9, run, entry): calls the vDSO entry point with
    // its C ABI, keeping the callee-saved registers the vDSO's contract leaves to the
    // enclave (rbx, r12–r15).
    ".pushsection .text.sgxemu_enclave_vdso_call,\"ax\",@progbits",
    ".globl sgxemu_enclave_vdso_call",
    ".type sgxemu_enclave_vdso_call,@function",
    "sgxemu_enclave_vdso_call:",
    "push rbp",
    "mov rbp, rsp",
    "push rbx",
    "push r12",
    "push r13",
    "push r14",
    "push r15",
    "mov rax, [rbp + 16]",
    "mov r11, [rbp + 24]",
    "push rax",
    "call r11",
    "add rsp, 8",
    "pop r15",
    "pop r14",
    "pop r13",
    "pop r12",
    "pop rbx",
    "pop rbp",
    "ret",
    ".size sgxemu_enclave_vdso_call, . - sgxemu_enclave_vdso_call",
    ".popsection",
);

unsafe extern "C" {
    fn sgxemu_enclave_vdso_call(
        rdi: u64,
        rsi: u64,
        rdx: u64,
        function: u32,
        r8: u64,
        r9: u64,
        run: *mut SgxEnclaveRun,
        entry: u64,
    ) -> i32;
}

/// Calls the vDSO entry point at `entry` (`__vdso_sgx_enter_enclave`, spec §1.5: RDI, RSI,
/// RDX, the leaf in ECX, R8, R9, the run structure on the stack) and returns its value. The
/// callee-saved registers, which the vDSO's contract leaves to the enclave (after an AEX
/// they hold the synthetic state), are restored whatever the enclave did.
///
/// # Safety
///
/// `entry` is the address of `__vdso_sgx_enter_enclave`; `run` is valid for the call (with
/// any user handler and data it names); the enclave writes only memory the caller lets it.
#[allow(clippy::too_many_arguments, reason = "the vDSO entry point's own seven arguments, plus its address")]
pub unsafe fn call(
    entry: u64,
    rdi: u64,
    rsi: u64,
    rdx: u64,
    function: u32,
    r8: u64,
    r9: u64,
    run: *mut SgxEnclaveRun,
) -> i32 {
    // SAFETY: the caller's contract above; the trampoline itself only saves and restores
    // registers around the call.
    unsafe { sgxemu_enclave_vdso_call(rdi, rsi, rdx, function, r8, r9, run, entry) }
}

/// How many bytes from the image's start its headers say are mapped: the furthest end of
/// a PT_LOAD's file bytes or of the section header table.
fn mapped_len(header: &[u8]) -> Option<usize> {
    let ehdr = elf::FileHeader64::<Endianness>::parse(header).ok()?;
    let endian = ehdr.endian().ok()?;
    let mut end =
        ehdr.e_shoff.get(endian) + u64::from(ehdr.e_shnum.get(endian)) * u64::from(ehdr.e_shentsize.get(endian));
    for phdr in ehdr.program_headers(endian, header).ok()? {
        if phdr.p_type(endian) == elf::PT_LOAD {
            end = end.max(phdr.p_offset(endian) + phdr.p_filesz(endian));
        }
    }
    usize::try_from(end).ok()
}

/// The offset from the image's start of the defined dynamic symbol `name`.
fn symbol_in_image(image: &[u8], name: &CStr) -> Option<u64> {
    let file = ElfFile64::<Endianness>::parse(image).ok()?;
    // The image is mapped at its file layout: the first PT_LOAD's vaddr is offset 0.
    let endian = file.endian();
    let link_base = file
        .elf_program_headers()
        .iter()
        .filter(|p| p.p_type(endian) == elf::PT_LOAD)
        .map(|p| p.p_vaddr(endian) - p.p_offset(endian))
        .min()?;
    file.dynamic_symbols()
        .find(|s| s.is_definition() && s.name_bytes().ok() == Some(name.to_bytes()))
        .map(|s| s.address() - link_base)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hosts_vdso_is_readable_and_has_no_sgx_entry_without_sgx() {
        // Every x86-64 Linux vDSO exports clock_gettime; the lookup must find it.
        let clock = find_symbol(c"__vdso_clock_gettime").expect("the vDSO exports clock_gettime");
        // SAFETY: getauxval has no preconditions.
        let base = unsafe { libc::getauxval(libc::AT_SYSINFO_EHDR) };
        assert!(clock > base && clock < base + (1 << 20), "{clock:#x} inside the vDSO at {base:#x}");
        assert_eq!(find_symbol(c"__vdso_no_such_symbol"), None);
    }

    #[test]
    fn garbage_is_not_an_image() {
        assert_eq!(mapped_len(&[0u8; 64]), None);
        assert_eq!(symbol_in_image(&[0x7f, b'E', b'L', b'F'], c"x"), None);
    }
}
