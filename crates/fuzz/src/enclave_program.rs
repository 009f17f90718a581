//! The enclave the fuzzer builds from raw bytes: one code page, TCSs, SSA frames, signed with
//! a fixed test key.
//!
//! Entered with RDI = 0 it exits at once. Entered with RDI = the address of a SECINFO (in its
//! own code page), RSI = a page of ELRANGE and RDX = an address outside the enclave, it runs
//! EACCEPT on the page and stores the SGX result code at RDX, then exits. It needs no stack
//! and changes only RAX, RBX, RCX and R10 — so the vDSO's C calling convention holds.

use sgxemu_arch::{Attributes, AttributesFlags, IntoBytes, PAGE_SIZE, Sigstruct};
use sgxemu_crypto::SigningKey;
use sgxemu_enclave::{EnclaveImage, SigstructFields, layout::thread_tcs, sign_image};

use crate::model::Encl;
use crate::ops::layout::NSSA;

/// The program (x86-64 machine code, at the enclave base):
///
/// ```text
///  0: 49 89 ca        mov  r10, rcx      ; EENTER left the exit address in RCX
///  3: 48 85 ff        test rdi, rdi
///  6: 74 11           je   exit
///  8: 48 89 fb        mov  rbx, rdi      ; SECINFO
///  b: 48 89 f1        mov  rcx, rsi      ; the page to accept
///  e: b8 05 00 00 00  mov  eax, 5        ; EACCEPT
/// 13: 0f 01 d7        enclu
/// 16: 48 89 02        mov  [rdx], rax    ; the SGX result code, outside the enclave
/// 19: 4c 89 d3 exit:  mov  rbx, r10
/// 1c: b8 04 00 00 00  mov  eax, 4        ; EEXIT
/// 21: 0f 01 d7        enclu
/// ```
const PROGRAM: [u8; 0x24] = [
    0x49, 0x89, 0xca, 0x48, 0x85, 0xff, 0x74, 0x11, 0x48, 0x89, 0xfb, 0x48, 0x89, 0xf1, 0xb8, 0x05, 0x00, 0x00, 0x00,
    0x0f, 0x01, 0xd7, 0x48, 0x89, 0x02, 0x4c, 0x89, 0xd3, 0xb8, 0x04, 0x00, 0x00, 0x00, 0x0f, 0x01, 0xd7,
];

/// Offset of the SECINFO table inside the code page (64-byte aligned entries).
pub const SECINFO_TABLE: u64 = 0x800;

/// The SECINFO flags the program can EACCEPT with, by number (spec/architecture.md §5.7's
/// legal shapes only): an EAUGed page, a TRIM, a TCS, and the four permission restrictions.
pub const ACCEPT_SECINFO: [u64; 7] = [
    0x20B, // REG | PENDING | R | W
    0x410, // TRIM | MODIFIED
    0x110, // TCS | MODIFIED
    0x221, // REG | PR | R
    0x223, // REG | PR | R | W
    0x225, // REG | PR | R | X
    0x227, // REG | PR | R | W | X
];

/// The code page: the program, then the SECINFO table.
pub fn code_page() -> [u8; PAGE_SIZE] {
    let mut page = [0u8; PAGE_SIZE];
    page[..PROGRAM.len()].copy_from_slice(&PROGRAM);
    for (i, flags) in ACCEPT_SECINFO.iter().enumerate() {
        let at = SECINFO_TABLE as usize + 64 * i;
        page[at..at + 8].copy_from_slice(&flags.to_le_bytes());
    }
    page
}

/// The TCS for page number `page`: its SSA frames follow it, entry at the program's start.
pub fn tcs_page(page: u64) -> [u8; PAGE_SIZE] {
    let tcs = thread_tcs(page * PAGE_SIZE as u64, u32::from(NSSA), 0);
    let mut bytes = [0u8; PAGE_SIZE];
    bytes.copy_from_slice(tcs.as_bytes());
    bytes
}

/// The test key every fuzzer enclave is signed with.
pub fn signing_key() -> SigningKey {
    SigningKey::from_pem(include_str!("fuzz-key.pem")).expect("the fuzzer's built-in key parses")
}

/// XFRM of every fuzzer enclave: x87 and SSE.
pub const XFRM: u64 = 0x3;

/// The SIGSTRUCT that EINIT accepts for what `encl` measured so far.
pub fn sigstruct(encl: &Encl, key: &SigningKey) -> Sigstruct {
    let mut image = EnclaveImage::of_pages(Vec::new());
    image.size = encl.size;
    image.ssaframesize = 1;
    image.attributes = Attributes::new(AttributesFlags::from_bits_retain(encl.attributes), XFRM);
    image.pages = encl.added.clone();
    sign_image(&image, &SigstructFields::for_image(&image), key).expect("the test key signs")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_program_fits_before_the_table_and_the_tcs_points_at_its_ssa() {
        assert!(PROGRAM.len() < SECINFO_TABLE as usize);
        let page = code_page();
        assert_eq!(&page[0x800..0x808], &0x20Bu64.to_le_bytes());
        let tcs: sgxemu_arch::Tcs = zerocopy::FromBytes::read_from_bytes(&tcs_page(4)[..]).unwrap();
        assert_eq!((tcs.ossa, tcs.nssa, tcs.oentry), (5 * 4096, 2, 0));
    }
}
