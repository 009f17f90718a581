//! The bundled sample enclaves and the host side of their call protocol.
//!
//! `build.rs` compiles the enclaves from C and assembly (`crates/samples/enclaves/`) with gcc
//! into static-PIE ELF files and this crate embeds them:
//!
//! * [`DEMO_ELF`]: every operation of [`op`], including the EDMM ones (EACCEPT, EACCEPTCOPY,
//!   EMODPE) and deliberate faults; a test vehicle that trusts the host with any address.
//! * [`ATTEST_ELF`]: only [`op::PING`], [`op::COPY_IN`], [`op::COPY_OUT`], [`op::REPORT`] and
//!   [`op::VERIFY`] ([`ATTEST_OPS`]); any other op returns [`UNKNOWN_OP`].
//! * [`RELOC_ELF`] and [`RELOC_RELR_ELF`]: the attestation sample's operations plus
//!   [`op::RELOCATED`] ([`RELOC_OPS`]), in a program that *does* need relocating — tables of
//!   function and string pointers — and relocates itself at its first entry
//!   (`enclaves/reloc.c`): the way to write an enclave with initialised pointers. Load them
//!   with [`sgxemu_enclave::Layout::self_relocating`].
//!
//! This documentation is also the contract a loader follows, and what you need to write your
//! own enclave for it.
//!
//! # The ELF image
//!
//! An x86-64 `ET_DYN` (static PIE) with PT_LOADs starting at vaddr 0 (R headers, RX `.text`,
//! R `.rodata` where there is any, RW `.dynamic`), none empty and no page in two of them,
//! `p_vaddr ≡ p_offset (mod 4096)`, entry point `enclave_entry`. The loader never relocates:
//! MRENCLAVE measures the page contents, so they cannot depend on the load address.
//! Position-independent code reaches its data RIP-relatively, and the demo and attestation
//! samples have **no relocations of any kind** — nothing the dynamic linker would patch:
//! pointer-valued initialised globals, tables of function pointers, `R_X86_64_RELATIVE`. A
//! program that has such pointers must add its load address to them itself before using
//! them, as the self-relocating samples do: `relocate_self` in `enclaves/reloc.c` walks
//! `_DYNAMIC` (hidden, so reached RIP-relatively) for `DT_RELA`/`DT_RELR`, takes the load
//! address from `__ehdr_start`, and lets one thread apply them while others entering wait.
//! `build.rs` parses each ELF and fails the build if one has a `PT_INTERP`, a `PT_TLS`, an
//! empty PT_LOAD or two PT_LOADs sharing a page, or if its relocations (a REL/RELA/RELR
//! section, a relocation tag in `PT_DYNAMIC`) are not what it is meant to have. The flags
//! (`build.rs`, `ENCLAVE_FLAGS`; the RELR sample adds `-Wl,-z,pack-relative-relocs`):
//!
//! ```text
//! gcc -O2 -std=gnu11 -ffreestanding -fno-builtin -nostdlib -static-pie -fPIE
//!     -fno-stack-protector -fno-asynchronous-unwind-tables -fno-unwind-tables
//!     -fcf-protection=none -fno-common -fno-tree-loop-distribute-patterns -mno-red-zone
//!     -march=x86-64 -mtune=generic -maes -msse2 -Wall -Wextra -Werror -Wstack-usage=2048
//!     -Wl,-e,enclave_entry -Wl,-z,max-page-size=4096 -Wl,-z,norelro -Wl,-z,noexecstack
//!     -Wl,--build-id=none -Wl,--hash-style=gnu -Wl,--fatal-warnings
//!     -Wl,--no-ld-generated-unwind-info
//! ```
//!
//! Without a C library, `enclaves/rt.c` supplies the `memcpy`, `memset`, `memmove` and
//! `memcmp` gcc may call.
//!
//! # Threads and stacks
//!
//! Each thread's stack **top is its TCS address**: the loader puts the stack pages (RW)
//! directly below each TCS. The samples need one 4 KiB stack page per thread (the deepest
//! path, [`op::REPORT`], uses about 2.4 KiB; `-Wstack-usage` keeps every frame within
//! 2 KiB). They keep no state between calls and their ENCLU operands live on the stack, so
//! any number of threads may call them at once.
//!
//! # Entering: `enclave_entry`
//!
//! EENTER (for example through the vDSO's
//! `__vdso_sgx_enter_enclave(rdi, rsi, rdx, EENTER, r8, r9, run)`, which passes RDI, RSI,
//! RDX, R8 and R9 through) arrives with RAX = CSSA, RBX = the TCS address, RCX = the address
//! after the host's ENCLU, and RDI = a pointer to a [`Call`] in host memory. The stub:
//!
//! 1. CSSA ≠ 0 (an entry after an AEX, the exception-handler entry): EEXIT at once to RCX.
//!    The samples handle no exceptions.
//! 2. Otherwise it keeps the host RSP in R12 and RCX in R13, sets RSP = RBX (the TCS), clears
//!    DF, saves the host MXCSR and x87 control word on the enclave stack and loads the
//!    defaults (0x1F80, 0x037F), and calls `enclave_main(struct call *call, uint64_t tcs)`
//!    with RDI unchanged and RSI = RBX.
//! 3. On return it restores MXCSR, FCW and RSP, zeroes RCX, RDX, RSI, RDI, R8–R11 and
//!    XMM0–15, sets RBX = the saved RCX and EEXITs (EAX = 4, `0F 01 D7`).
//!
//! RBP is never touched (C preserves it; the vDSO uses it after EEXIT). RBX, R12–R15 come
//! back changed, as the vDSO's contract allows: the host-side wrapper saves its
//! callee-saved registers itself.
//!
//! # The call protocol
//!
//! [`Call`] (`struct call` in `enclaves/ops.h`, 88 bytes) lives in untrusted host memory.
//! The enclave copies `op` and `args` into enclave memory first (the host cannot change them
//! mid-call), runs the operation, and writes all four `ret` words back; `ret` words an
//! operation does not name are 0. Addresses in `args` are used as given: "host" ones point
//! outside the enclave (SGX lets an enclave read and write ordinary memory), "enclave" ones
//! inside ELRANGE.
//!
//! | op | name | args | ret |
//! |---|---|---|---|
//! | 0 | [`op::PING`] | — | `[0]` = [`PING_MAGIC`], `[1]` = the TCS address the call came in on |
//! | 1 | [`op::FILL`] | addr, len, seed | writes `len / 8` words, word k = [`fill_word`]`(seed, k)`; `[0]` = bytes written (`len` rounded down to 8) |
//! | 2 | [`op::CHECK`] | addr, len, seed | `[0]` = how many of the `len / 8` words differ from FILL's |
//! | 3 | [`op::ACCEPT`] | addr, len, secinfo_flags | EACCEPT each of the `len / 4096` pages with SECINFO.FLAGS = secinfo_flags, stopping at the first non-zero status: `[0]` = pages accepted, `[1]` = that status (0 if all succeeded) |
//! | 4 | [`op::ACCEPT_COPY`] | dst, src, pages, secinfo_flags | EACCEPTCOPY page i of dst from the one enclave page src; returns as ACCEPT |
//! | 5 | [`op::EMODPE`] | addr, len, secinfo_flags | EMODPE each of the `len / 4096` pages; `[0]` = pages |
//! | 6 | [`op::COPY_IN`] | dst (enclave), src (host), len | copies; `[0]` = len |
//! | 7 | [`op::COPY_OUT`] | dst (host), src (enclave), len | copies; `[0]` = len |
//! | 8 | [`op::READ`] | addr | `[0]` = the u64 at addr |
//! | 9 | [`op::WRITE`] | addr, value | stores the u64 value at addr |
//! | 10 | [`op::EXEC`] | addr | calls the code at addr (a lone `ret` there returns): tests execute permission |
//! | 11 | [`op::UD2`] | — | executes `ud2` (#UD, an AEX); never returns |
//! | 20 | [`op::REPORT`] | targetinfo (host, 512 B), reportdata (host, 64 B), report_out (host, 432 B) | EREPORT for that TARGETINFO and REPORTDATA, the REPORT copied out; `[0]` = 0 |
//! | 21 | [`op::VERIFY`] | report (host, 432 B) | EGETKEY of the report key for report.KEYID, then AES-128-CMAC (RFC 4493) over bytes `[0, 384)` compared in constant time with report.MAC: `[0]` = 1 if it matches else 0, `[1]` = EGETKEY's status |
//! | other | | | `[0]` = [`UNKNOWN_OP`] |
//!
//! Faults inside an operation (a bad address, a page not yet accepted, a missing permission)
//! are AEXs like any other; the host sees them through its exception handling, and a
//! re-entry with CSSA ≠ 0 only EEXITs.
//!
//! REPORT and VERIFY stage their operands in aligned enclave stack memory (EREPORT and
//! EGETKEY need them inside the enclave: TARGETINFO and REPORT 512-aligned, REPORTDATA
//! 128-aligned, KEYREQUEST 512-aligned). VERIFY's KEYREQUEST has KEYNAME = 3 (REPORT), the
//! report's KEYID, and everything else zero; it wipes the key and the computed MAC before
//! returning. So an enclave verifies a REPORT targeted at it (TARGETINFO = its own identity).
//!
//! ```
//! use sgxemu_samples::{Call, DEMO_ELF, PING_MAGIC, op};
//!
//! assert_eq!(&DEMO_ELF[..4], b"\x7fELF");
//! let mut call = Call::new(op::FILL, [0x7000, 4096, 42, 0, 0, 0]);
//! // ... enter the enclave with RDI = &mut call ...
//! call.ret[0] = 4096; // what the enclave would write back
//! assert_eq!(call.ret[0], 4096);
//! assert_eq!(PING_MAGIC.to_be_bytes(), *b"SGXEMU_1");
//! ```

/// Bytes placed at a page-aligned address: ELF parsers that read headers in place (the
/// `object` crate) need at least 8, and page-wise copies of segments like 4096.
#[repr(C, align(4096))]
struct PageAligned<B: ?Sized>(B);

const DEMO_IMAGE: &PageAligned<[u8]> = &PageAligned(*include_bytes!(concat!(env!("OUT_DIR"), "/demo.elf")));
const ATTEST_IMAGE: &PageAligned<[u8]> = &PageAligned(*include_bytes!(concat!(env!("OUT_DIR"), "/attest.elf")));
const RELOC_IMAGE: &PageAligned<[u8]> = &PageAligned(*include_bytes!(concat!(env!("OUT_DIR"), "/reloc.elf")));
const RELOC_RELR_IMAGE: &PageAligned<[u8]> = &PageAligned(*include_bytes!(concat!(env!("OUT_DIR"), "/reloc-relr.elf")));

/// The demo enclave's ELF file: every operation of [`op`] (see the crate docs). It starts
/// at a 4096-aligned address.
pub const DEMO_ELF: &[u8] = &DEMO_IMAGE.0;

/// The attestation enclave's ELF file: [`ATTEST_OPS`] only. It starts at a 4096-aligned
/// address.
pub const ATTEST_ELF: &[u8] = &ATTEST_IMAGE.0;

/// The self-relocating sample's ELF file, its relocations `R_X86_64_RELATIVE` entries in
/// `DT_RELA`: [`RELOC_OPS`]. Load it with [`sgxemu_enclave::Layout::self_relocating`]; at its
/// first entry it adds its load address where its relocations say (see the crate docs).
pub const RELOC_ELF: &[u8] = &RELOC_IMAGE.0;

/// The same program as [`RELOC_ELF`], linked with `-z pack-relative-relocs`: its
/// relocations packed into `DT_RELR`.
pub const RELOC_RELR_ELF: &[u8] = &RELOC_RELR_IMAGE.0;

/// The symbol of both samples' entry point (their ELF `e_entry`, TCS.OENTRY).
pub const ENTRY_SYMBOL: &str = "enclave_entry";

/// One call into a sample enclave: `struct call` of `enclaves/ops.h`, in host memory, its
/// address in RDI on EENTER. The enclave reads `op` and `args` and writes `ret`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Call {
    /// The operation, one of [`op`].
    pub op: u64,
    /// Its arguments; unused ones are ignored.
    pub args: [u64; 6],
    /// Its results, all four written by the enclave; unnamed ones are 0.
    pub ret: [u64; 4],
}

const _: () = {
    assert!(size_of::<Call>() == Call::SIZE);
    assert!(core::mem::offset_of!(Call, args) == 8);
    assert!(core::mem::offset_of!(Call, ret) == 56);
};

impl Call {
    /// Size in bytes, as in C.
    pub const SIZE: usize = 88;

    /// A call of `op` with `args` and zeroed results.
    #[must_use]
    pub const fn new(op: u64, args: [u64; 6]) -> Self {
        Call { op, args, ret: [0; 4] }
    }
}

pub mod host;

/// Operation numbers ([`Call::op`]), equal to `SGXEMU_OP_*` in `enclaves/ops.h`. The crate
/// docs give each one's arguments and results.
pub mod op {
    /// Answers [`crate::PING_MAGIC`] and the TCS address.
    pub const PING: u64 = 0;
    /// Writes the [`crate::fill_word`] pattern.
    pub const FILL: u64 = 1;
    /// Counts words that differ from the [`crate::fill_word`] pattern.
    pub const CHECK: u64 = 2;
    /// EACCEPT a range of pages.
    pub const ACCEPT: u64 = 3;
    /// EACCEPTCOPY pages from one source page.
    pub const ACCEPT_COPY: u64 = 4;
    /// EMODPE a range of pages.
    pub const EMODPE: u64 = 5;
    /// Copy from host memory into the enclave.
    pub const COPY_IN: u64 = 6;
    /// Copy from the enclave into host memory.
    pub const COPY_OUT: u64 = 7;
    /// Load a u64.
    pub const READ: u64 = 8;
    /// Store a u64.
    pub const WRITE: u64 = 9;
    /// Call code at an address.
    pub const EXEC: u64 = 10;
    /// Execute `ud2`.
    pub const UD2: u64 = 11;
    /// EREPORT.
    pub const REPORT: u64 = 20;
    /// Check a REPORT's MAC with the report key.
    pub const VERIFY: u64 = 21;
    /// Only in the self-relocating sample: works through relocated pointers (args: an
    /// index into its function table, that function's argument, an index into its word
    /// table; rets: the function's result, the word's 8 bytes, the relocations applied, the
    /// first word's offset in the enclave).
    pub const RELOCATED: u64 = 30;
}

/// Every operation, in number order: what [`DEMO_ELF`] implements.
pub const DEMO_OPS: &[u64] = &[
    op::PING,
    op::FILL,
    op::CHECK,
    op::ACCEPT,
    op::ACCEPT_COPY,
    op::EMODPE,
    op::COPY_IN,
    op::COPY_OUT,
    op::READ,
    op::WRITE,
    op::EXEC,
    op::UD2,
    op::REPORT,
    op::VERIFY,
];

/// What [`ATTEST_ELF`] implements.
pub const ATTEST_OPS: &[u64] = &[op::PING, op::COPY_IN, op::COPY_OUT, op::REPORT, op::VERIFY];

/// What [`RELOC_ELF`] and [`RELOC_RELR_ELF`] implement.
pub const RELOC_OPS: &[u64] = &[op::PING, op::COPY_IN, op::COPY_OUT, op::REPORT, op::VERIFY, op::RELOCATED];

/// PING's `ret[0]`: the bytes `"SGXEMU_1"` read as a big-endian number.
pub const PING_MAGIC: u64 = 0x5347_5845_4D55_5F31;

/// `ret[0]` of an operation the enclave does not implement.
pub const UNKNOWN_OP: u64 = u64::MAX;

/// The multiplier of the FILL/CHECK pattern (the 64-bit golden ratio).
pub const FILL_MULTIPLIER: u64 = 0x9E37_79B9_7F4A_7C15;

/// Word `k` of the FILL/CHECK pattern for `seed`: `seed ^ (k * FILL_MULTIPLIER)`, wrapping.
#[must_use]
pub const fn fill_word(seed: u64, k: u64) -> u64 {
    seed ^ k.wrapping_mul(FILL_MULTIPLIER)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `enclaves/ops.h`, the C side of the protocol.
    const OPS_H: &str = include_str!("../enclaves/ops.h");

    /// The value of `#define NAME VALUE` in ops.h.
    fn define(name: &str) -> u64 {
        let line = OPS_H
            .lines()
            .find(|l| l.split_whitespace().take(2).eq(["#define", name]))
            .unwrap_or_else(|| panic!("ops.h defines {name}"));
        let value = line.split_whitespace().nth(2).expect("a value").trim_end_matches("ULL");
        match value.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16).expect("hex"),
            None => value.parse().expect("decimal"),
        }
    }

    #[test]
    fn ops_h_matches_rust() {
        let rust = [
            ("PING", op::PING),
            ("FILL", op::FILL),
            ("CHECK", op::CHECK),
            ("ACCEPT", op::ACCEPT),
            ("ACCEPT_COPY", op::ACCEPT_COPY),
            ("EMODPE", op::EMODPE),
            ("COPY_IN", op::COPY_IN),
            ("COPY_OUT", op::COPY_OUT),
            ("READ", op::READ),
            ("WRITE", op::WRITE),
            ("EXEC", op::EXEC),
            ("UD2", op::UD2),
            ("REPORT", op::REPORT),
            ("VERIFY", op::VERIFY),
        ];
        for (name, value) in rust {
            assert_eq!(define(&format!("SGXEMU_OP_{name}")), value, "SGXEMU_OP_{name}");
        }
        assert_eq!(DEMO_OPS, rust.map(|r| r.1));
        assert_eq!(define("SGXEMU_OP_RELOCATED"), op::RELOCATED);
        let c_ops = OPS_H.lines().filter(|l| l.starts_with("#define SGXEMU_OP_")).count();
        assert_eq!(c_ops, rust.len() + 1, "ops.h and op:: list the same operations");
        assert_eq!(define("SGXEMU_PING_MAGIC"), PING_MAGIC);
        assert_eq!(define("SGXEMU_UNKNOWN_OP"), UNKNOWN_OP);
        assert_eq!(define("SGXEMU_FILL_MULTIPLIER"), FILL_MULTIPLIER);
    }

    #[test]
    fn magic_and_pattern() {
        assert_eq!(&PING_MAGIC.to_be_bytes(), b"SGXEMU_1");
        assert_eq!(fill_word(42, 0), 42);
        assert_eq!(fill_word(0, 1), FILL_MULTIPLIER);
        assert_eq!(fill_word(u64::MAX, 2), !FILL_MULTIPLIER.wrapping_mul(2));
        assert!(ATTEST_OPS.iter().all(|o| DEMO_OPS.contains(o)));
    }

    #[test]
    fn images_are_page_aligned_elf_files() {
        for elf in [DEMO_ELF, ATTEST_ELF, RELOC_ELF, RELOC_RELR_ELF] {
            assert_eq!(elf.as_ptr().addr() % 4096, 0);
            assert_eq!(&elf[..4], b"\x7fELF");
        }
    }

    #[test]
    fn call_layout() {
        let c = Call::new(op::VERIFY, [1, 2, 3, 4, 5, 6]);
        assert_eq!((c.op, c.args, c.ret), (21, [1, 2, 3, 4, 5, 6], [0; 4]));
        assert_eq!(align_of::<Call>(), 8);
    }
}
