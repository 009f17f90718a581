//! In-memory construction of the synthetic vDSO image, and small readers for vDSO-shaped images.
//!
//! The LD_PRELOAD layer hands programs an image that they find through `getauxval(AT_SYSINFO_EHDR)`,
//! so it has to look exactly like the kernel's vDSO to every vDSO parser in the wild (the Linux SGX
//! selftest, glibc, musl, Go): an ELF64 shared object linked at address 0 with a single `PT_LOAD`
//! whose `p_offset == p_vaddr == 0`, so that `base + p_offset` and `base + p_vaddr` name the same
//! bytes, plus a `PT_DYNAMIC` whose `d_ptr` values are offsets from the image base.
//!
//! Layout of a built image (every part 8-aligned, `.text` 16-aligned, the whole padded to a page):
//!
//! ```text
//! ELF header | program headers | .hash | .gnu.hash | .dynsym | .dynstr | .text (code, trampolines)
//!            | .got (jump slots) | .dynamic | .shstrtab | section headers | zero padding
//! ```
//!
//! The image carries no symbol versions (no `DT_VERSYM`/`DT_VERDEF`): the selftest, musl and Go
//! ignore versions when the table is absent, and glibc's `check_match` accepts an unversioned
//! symbol when a versioned one (`LINUX_2.6`) is asked for from an object without a version table.

use std::collections::HashSet;

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// A function the image exports: its name and the offset of its first byte inside `code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Export<'a> {
    /// The dynamic symbol name, e.g. `__vdso_sgx_enter_enclave`.
    pub name: &'a str,
    /// Offset of the function's entry point inside the `code` passed to [`build`].
    pub code_offset: usize,
}

/// A symbol of another image (the real vDSO) the synthetic one forwards to: calls through it reach
/// `target` (an absolute address) via a jump slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forward<'a> {
    /// The dynamic symbol name, e.g. `__vdso_clock_gettime`.
    pub name: &'a str,
    /// The absolute address the trampoline jumps to.
    pub target: u64,
}

/// The built image and where things landed in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VdsoImage {
    /// The whole image, a multiple of 4096 bytes long, to be mapped read+execute.
    pub bytes: Vec<u8>,
    /// Offset of `code` in the image (16-aligned); export `e` lives at `code_start + e.code_offset`.
    pub code_start: usize,
    /// Offset of the u64 jump-slot table (8-aligned); forward `i` owns the slot at
    /// `slots_start + 8 * i`, which holds its `target`.
    pub slots_start: usize,
}

/// Why [`build`] refused its input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VdsoImageError {
    /// A symbol name was the empty string.
    #[error("vDSO symbol name is empty")]
    EmptyName,
    /// A symbol name held a NUL byte (it would cut the string table entry short) or a non-ASCII
    /// byte (the SysV hash of such names differs between readers using signed and unsigned `char`).
    #[error("vDSO symbol name {0:?} is not plain ASCII without NUL bytes")]
    InvalidName(String),
    /// Two symbols (exports or forwards) shared a name.
    #[error("vDSO symbol {0:?} is defined more than once")]
    DuplicateName(String),
    /// An export's offset did not name a byte of `code`.
    #[error("vDSO export {name:?} at offset {offset} lies outside the {code_len}-byte code")]
    ExportOutOfRange {
        /// The export's name.
        name: String,
        /// The offending offset.
        offset: usize,
        /// The length of the code it had to fall in.
        code_len: usize,
    },
    /// The image would not fit the 32-bit fields (string offsets, symbol indexes) ELF gives it.
    #[error("vDSO image would exceed 4 GiB")]
    TooLarge,
}

// ELF constants (System V gABI, x86-64 psABI).
const ELFMAG: [u8; 4] = *b"\x7fELF";
const ELFCLASS64: u8 = 2;
const ELFDATA2LSB: u8 = 1;
const EV_CURRENT: u8 = 1;
const ELFOSABI_SYSV: u8 = 0;
const ET_DYN: u16 = 3;
const EM_X86_64: u16 = 62;
const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const PF_X: u32 = 1;
const PF_R: u32 = 4;
const SHT_PROGBITS: u32 = 1;
const SHT_STRTAB: u32 = 3;
const SHT_HASH: u32 = 5;
const SHT_DYNAMIC: u32 = 6;
const SHT_DYNSYM: u32 = 11;
const SHT_GNU_HASH: u32 = 0x6fff_fff6;
const SHF_ALLOC: u64 = 2;
const SHF_EXECINSTR: u64 = 4;
const DT_NULL: u64 = 0;
const DT_HASH: u64 = 4;
const DT_STRTAB: u64 = 5;
const DT_SYMTAB: u64 = 6;
const DT_STRSZ: u64 = 10;
const DT_SYMENT: u64 = 11;
const DT_SONAME: u64 = 14;
const DT_GNU_HASH: u64 = 0x6fff_fef5;
const STB_GLOBAL: u8 = 1;
const STB_WEAK: u8 = 2;
const STT_NOTYPE: u8 = 0;
const STT_FUNC: u8 = 2;
const SHN_UNDEF: u16 = 0;

/// The kernel vDSO's soname; some parsers (and humans reading `ldd`) recognise it by name.
const SONAME: &str = "linux-vdso.so.1";
const PAGE_SIZE: usize = 4096;
/// Each trampoline (`jmp qword [rip+rel32]`, 6 bytes) gets an 8-byte cell, padded with `int3`.
const TRAMPOLINE_CELL: usize = 8;
const TRAMPOLINE_LEN: usize = 6;
const INT3: u8 = 0xcc;
/// The bloom filter is a single 64-bit word (so every hash picks word 0), with this second-bit
/// shift (GNU ld's minimum for ELF64): a handful of symbols needs no more.
const BLOOM_SHIFT: u32 = 6;

/// `Elf64_Ehdr`, little-endian and unaligned so it can be read from any offset of any slice.
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct Ehdr {
    e_ident: [u8; 16],
    e_type: U16,
    e_machine: U16,
    e_version: U32,
    e_entry: U64,
    e_phoff: U64,
    e_shoff: U64,
    e_flags: U32,
    e_ehsize: U16,
    e_phentsize: U16,
    e_phnum: U16,
    e_shentsize: U16,
    e_shnum: U16,
    e_shstrndx: U16,
}

/// `Elf64_Phdr`.
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct Phdr {
    p_type: U32,
    p_flags: U32,
    p_offset: U64,
    p_vaddr: U64,
    p_paddr: U64,
    p_filesz: U64,
    p_memsz: U64,
    p_align: U64,
}

/// `Elf64_Shdr`.
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct Shdr {
    sh_name: U32,
    sh_type: U32,
    sh_flags: U64,
    sh_addr: U64,
    sh_offset: U64,
    sh_size: U64,
    sh_link: U32,
    sh_info: U32,
    sh_addralign: U64,
    sh_entsize: U64,
}

/// `Elf64_Sym`.
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct Sym {
    st_name: U32,
    st_info: u8,
    st_other: u8,
    st_shndx: U16,
    st_value: U64,
    st_size: U64,
}

/// `Elf64_Dyn` (the tag is signed in the spec, but every tag used here is positive).
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct Dyn {
    d_tag: U64,
    d_val: U64,
}

const EHDR_SIZE: usize = size_of::<Ehdr>();
const PHDR_SIZE: usize = size_of::<Phdr>();
const SHDR_SIZE: usize = size_of::<Shdr>();
const SYM_SIZE: usize = size_of::<Sym>();
const DYN_SIZE: usize = size_of::<Dyn>();
const _: () = assert!(EHDR_SIZE == 64 && PHDR_SIZE == 56 && SHDR_SIZE == 64 && SYM_SIZE == 24 && DYN_SIZE == 16);

/// Section indexes of a built image, in header order.
const SHN_HASH: u16 = 1;
const SHN_GNU_HASH: u16 = 2;
const SHN_DYNSYM: u16 = 3;
const SHN_DYNSTR: u16 = 4;
const SHN_TEXT: u16 = 5;
const SHN_GOT: u16 = 6;
const SHN_DYNAMIC: u16 = 7;
const SHN_SHSTRTAB: u16 = 8;
const SECTION_COUNT: usize = 9;
const PHDR_COUNT: usize = 2;
/// HASH, GNU_HASH, SYMTAB, STRTAB, STRSZ, SYMENT, SONAME, NULL.
const DYNAMIC_ENTRIES: usize = 8;

// ------------------------------------------------------------------------------------------------
// Building
// ------------------------------------------------------------------------------------------------

/// Builds the image: `code` copied verbatim into `.text`, one dynamic symbol per export (at its
/// code) and per forward (at a `jmp [rip+slot]` trampoline whose slot holds the target).
///
/// Names must be non-empty, unique across exports and forwards, and plain ASCII without NULs.
pub fn build(code: &[u8], exports: &[Export], forwards: &[Forward]) -> Result<VdsoImage, VdsoImageError> {
    validate_names(exports.iter().map(|e| e.name).chain(forwards.iter().map(|f| f.name)))?;
    validate_exports(code, exports)?;

    let trampolines_rel = code.len().next_multiple_of(TRAMPOLINE_CELL);
    let text_len = if forwards.is_empty() { code.len() } else { trampolines_rel + TRAMPOLINE_CELL * forwards.len() };
    let mut dynstr = StrTab::new();
    let soname = dynstr.add(SONAME);
    let symbol_count = exports.len() + forwards.len();
    let mut names = Vec::with_capacity(symbol_count);
    for name in exports.iter().map(|e| e.name).chain(forwards.iter().map(|f| f.name)) {
        names.push(dynstr.add(name));
    }
    let shstrtab = SectionNames::new();
    let layout = Layout::new(symbol_count, dynstr.bytes.len(), text_len, forwards.len(), shstrtab.table.bytes.len());
    if u32::try_from(layout.total).is_err() {
        return Err(VdsoImageError::TooLarge);
    }

    let mut symbols = Vec::with_capacity(symbol_count);
    for (export, &name_offset) in exports.iter().zip(&names) {
        symbols.push(Symbol::new(export.name, name_offset, layout.text.offset + export.code_offset, 0));
    }
    for (i, (forward, &name_offset)) in forwards.iter().zip(&names[exports.len()..]).enumerate() {
        let value = layout.text.offset + trampolines_rel + TRAMPOLINE_CELL * i;
        symbols.push(Symbol::new(forward.name, name_offset, value, TRAMPOLINE_LEN as u64));
    }
    // GNU hash lookups walk one run of consecutive symbols per bucket, so order by bucket.
    let gnu_buckets = gnu_bucket_count(symbol_count);
    symbols.sort_by_key(|s| s.gnu_hash % gnu_buckets);

    let mut bytes = vec![0u8; layout.total];
    write_headers(&mut bytes, &layout);
    put(&mut bytes, layout.hash.offset, &sysv_hash_table(&symbols));
    put(&mut bytes, layout.gnu_hash.offset, &gnu_hash_table(&symbols, gnu_buckets));
    write_symbols(&mut bytes, &layout, &symbols);
    put(&mut bytes, layout.dynstr.offset, &dynstr.bytes);
    write_text(&mut bytes, &layout, code, trampolines_rel, forwards.len())?;
    for (i, forward) in forwards.iter().enumerate() {
        put(&mut bytes, layout.slots.offset + 8 * i, &forward.target.to_le_bytes());
    }
    write_dynamic(&mut bytes, &layout, soname);
    put(&mut bytes, layout.shstrtab.offset, &shstrtab.table.bytes);
    write_section_headers(&mut bytes, &layout, &shstrtab);

    Ok(VdsoImage { bytes, code_start: layout.text.offset, slots_start: layout.slots.offset })
}

fn validate_names<'a>(names: impl Iterator<Item = &'a str>) -> Result<(), VdsoImageError> {
    let mut seen = HashSet::new();
    for name in names {
        if name.is_empty() {
            return Err(VdsoImageError::EmptyName);
        }
        if !name.bytes().all(|b| b.is_ascii() && b != 0) {
            return Err(VdsoImageError::InvalidName(name.to_owned()));
        }
        if !seen.insert(name) {
            return Err(VdsoImageError::DuplicateName(name.to_owned()));
        }
    }
    Ok(())
}

fn validate_exports(code: &[u8], exports: &[Export]) -> Result<(), VdsoImageError> {
    match exports.iter().find(|e| e.code_offset >= code.len()) {
        Some(e) => Err(VdsoImageError::ExportOutOfRange {
            name: e.name.to_owned(),
            offset: e.code_offset,
            code_len: code.len(),
        }),
        None => Ok(()),
    }
}

/// A NUL-terminated string table whose first byte is the empty string, as ELF requires.
struct StrTab {
    bytes: Vec<u8>,
}

impl StrTab {
    fn new() -> Self {
        StrTab { bytes: vec![0] }
    }

    /// Appends `s` and returns its offset in the table.
    fn add(&mut self, s: &str) -> usize {
        let offset = self.bytes.len();
        self.bytes.extend_from_slice(s.as_bytes());
        self.bytes.push(0);
        offset
    }
}

/// `.shstrtab` and the offset of each section's name in it, indexed by section index.
struct SectionNames {
    table: StrTab,
    offsets: [usize; SECTION_COUNT],
}

impl SectionNames {
    fn new() -> Self {
        let mut table = StrTab::new();
        let mut offsets = [0; SECTION_COUNT];
        let names = [".hash", ".gnu.hash", ".dynsym", ".dynstr", ".text", ".got", ".dynamic", ".shstrtab"];
        for (slot, name) in offsets[1..].iter_mut().zip(names) {
            *slot = table.add(name);
        }
        SectionNames { table, offsets }
    }
}

/// A byte range of the image.
#[derive(Debug, Clone, Copy)]
struct Span {
    offset: usize,
    size: usize,
}

/// Where every part of the image goes; computed from sizes alone, before any byte is written.
struct Layout {
    hash: Span,
    gnu_hash: Span,
    dynsym: Span,
    dynstr: Span,
    text: Span,
    slots: Span,
    dynamic: Span,
    shstrtab: Span,
    shdrs: Span,
    total: usize,
}

impl Layout {
    fn new(symbol_count: usize, dynstr_len: usize, text_len: usize, slot_count: usize, shstrtab_len: usize) -> Self {
        let mut cursor = EHDR_SIZE + PHDR_COUNT * PHDR_SIZE;
        let mut place = |align: usize, size: usize| {
            let offset = cursor.next_multiple_of(align);
            cursor = offset + size;
            Span { offset, size }
        };
        let hash = place(8, 4 * (2 + sysv_bucket_count(symbol_count) + symbol_count + 1));
        let gnu_hash = place(8, 16 + 8 + 4 * gnu_bucket_count(symbol_count) as usize + 4 * symbol_count);
        let dynsym = place(8, SYM_SIZE * (symbol_count + 1));
        let dynstr = place(1, dynstr_len);
        let text = place(16, text_len);
        let slots = place(8, 8 * slot_count);
        let dynamic = place(8, DYN_SIZE * DYNAMIC_ENTRIES);
        let shstrtab = place(1, shstrtab_len);
        let shdrs = place(8, SHDR_SIZE * SECTION_COUNT);
        let total = (shdrs.offset + shdrs.size).next_multiple_of(PAGE_SIZE);
        Layout { hash, gnu_hash, dynsym, dynstr, text, slots, dynamic, shstrtab, shdrs, total }
    }
}

/// A dynamic symbol being built.
struct Symbol {
    name_offset: usize,
    value: usize,
    size: u64,
    sysv_hash: u32,
    gnu_hash: u32,
}

impl Symbol {
    fn new(name: &str, name_offset: usize, value: usize, size: u64) -> Self {
        let bytes = name.as_bytes();
        Symbol { name_offset, value, size, sysv_hash: sysv_hash(bytes), gnu_hash: gnu_hash(bytes) }
    }
}

/// The SysV ELF hash, exactly as the gABI (and the SGX selftest) computes it.
fn sysv_hash(name: &[u8]) -> u32 {
    let mut h: u32 = 0;
    for &c in name {
        h = (h << 4).wrapping_add(u32::from(c));
        let g = h & 0xf000_0000;
        if g != 0 {
            h ^= g >> 24;
        }
        h &= !g;
    }
    h
}

/// The GNU hash (Bernstein's `h * 33 + c` from 5381).
pub(crate) fn gnu_hash(name: &[u8]) -> u32 {
    name.iter().fold(5381u32, |h, &c| h.wrapping_mul(33).wrapping_add(u32::from(c)))
}

fn sysv_bucket_count(symbol_count: usize) -> usize {
    symbol_count.max(1)
}

fn gnu_bucket_count(symbol_count: usize) -> u32 {
    // Layout checks the image fits in 4 GiB, far above any symbol count that could reach here.
    u32::try_from(symbol_count.max(1)).unwrap_or(u32::MAX)
}

/// `.hash`: nbucket, nchain, buckets, chains; symbol `i` (1-based, 0 is the null symbol) is
/// pushed on the front of its bucket's chain.
fn sysv_hash_table(symbols: &[Symbol]) -> Vec<u8> {
    let nbucket = sysv_bucket_count(symbols.len());
    let mut buckets = vec![0u32; nbucket];
    let mut chains = vec![0u32; symbols.len() + 1];
    for (i, symbol) in symbols.iter().enumerate() {
        let index = i as u32 + 1;
        let bucket = &mut buckets[symbol.sysv_hash as usize % nbucket];
        chains[index as usize] = *bucket;
        *bucket = index;
    }
    let mut out = Vec::new();
    for word in [nbucket as u32, chains.len() as u32].iter().chain(&buckets).chain(&chains) {
        out.extend_from_slice(&word.to_le_bytes());
    }
    out
}

/// `.gnu.hash`: header, bloom filter, buckets (first symbol index of each bucket), and one chain
/// word per symbol (its hash with bit 0 marking the end of its bucket's run). `symbols` must be
/// sorted by bucket; the first hashed symbol is index 1.
fn gnu_hash_table(symbols: &[Symbol], nbuckets: u32) -> Vec<u8> {
    const SYMOFFSET: u32 = 1;
    let mut bloom = 0u64;
    let mut buckets = vec![0u32; nbuckets as usize];
    let mut chain = Vec::with_capacity(symbols.len());
    for (i, symbol) in symbols.iter().enumerate() {
        let h = symbol.gnu_hash;
        bloom |= (1u64 << (h % 64)) | (1u64 << ((h >> BLOOM_SHIFT) % 64));
        let bucket = h % nbuckets;
        if buckets[bucket as usize] == 0 {
            buckets[bucket as usize] = i as u32 + SYMOFFSET;
        }
        let last_in_bucket = symbols.get(i + 1).is_none_or(|next| next.gnu_hash % nbuckets != bucket);
        chain.push((h & !1) | u32::from(last_in_bucket));
    }
    let mut out = Vec::new();
    for word in [nbuckets, SYMOFFSET, 1, BLOOM_SHIFT] {
        out.extend_from_slice(&word.to_le_bytes());
    }
    out.extend_from_slice(&bloom.to_le_bytes());
    buckets.iter().chain(&chain).for_each(|w| out.extend_from_slice(&w.to_le_bytes()));
    out
}

/// Copies `data` to `offset`; the layout guarantees it fits.
fn put(bytes: &mut [u8], offset: usize, data: &[u8]) {
    bytes[offset..offset + data.len()].copy_from_slice(data);
}

fn write_headers(bytes: &mut [u8], layout: &Layout) {
    let mut e_ident = [0u8; 16];
    e_ident[..4].copy_from_slice(&ELFMAG);
    e_ident[4] = ELFCLASS64;
    e_ident[5] = ELFDATA2LSB;
    e_ident[6] = EV_CURRENT;
    e_ident[7] = ELFOSABI_SYSV;
    let ehdr = Ehdr {
        e_ident,
        e_type: ET_DYN.into(),
        e_machine: EM_X86_64.into(),
        e_version: u32::from(EV_CURRENT).into(),
        e_phoff: (EHDR_SIZE as u64).into(),
        e_shoff: (layout.shdrs.offset as u64).into(),
        e_ehsize: (EHDR_SIZE as u16).into(),
        e_phentsize: (PHDR_SIZE as u16).into(),
        e_phnum: (PHDR_COUNT as u16).into(),
        e_shentsize: (SHDR_SIZE as u16).into(),
        e_shnum: (SECTION_COUNT as u16).into(),
        e_shstrndx: SHN_SHSTRTAB.into(),
        ..Ehdr::default()
    };
    put(bytes, 0, ehdr.as_bytes());
    // One segment for everything (headers included), like the kernel's vDSO; offset == vaddr == 0.
    let total = layout.total as u64;
    let load = Phdr {
        p_type: PT_LOAD.into(),
        p_flags: (PF_R | PF_X).into(),
        p_filesz: total.into(),
        p_memsz: total.into(),
        p_align: (PAGE_SIZE as u64).into(),
        ..Phdr::default()
    };
    let dynamic_at = (layout.dynamic.offset as u64).into();
    let dynamic_size = (layout.dynamic.size as u64).into();
    let dynamic = Phdr {
        p_type: PT_DYNAMIC.into(),
        p_flags: PF_R.into(),
        p_offset: dynamic_at,
        p_vaddr: dynamic_at,
        p_paddr: dynamic_at,
        p_filesz: dynamic_size,
        p_memsz: dynamic_size,
        p_align: 8u64.into(),
    };
    put(bytes, EHDR_SIZE, load.as_bytes());
    put(bytes, EHDR_SIZE + PHDR_SIZE, dynamic.as_bytes());
}

fn write_symbols(bytes: &mut [u8], layout: &Layout, symbols: &[Symbol]) {
    // Entry 0 stays the all-zero null symbol.
    for (i, symbol) in symbols.iter().enumerate() {
        let sym = Sym {
            st_name: (symbol.name_offset as u32).into(),
            st_info: (STB_GLOBAL << 4) | STT_FUNC,
            st_other: 0,
            st_shndx: SHN_TEXT.into(),
            st_value: (symbol.value as u64).into(),
            st_size: symbol.size.into(),
        };
        put(bytes, layout.dynsym.offset + SYM_SIZE * (i + 1), sym.as_bytes());
    }
}

/// `.text`: the code, `int3` padding, then one `jmp qword [rip+rel32]` per forward aimed at its slot.
fn write_text(
    bytes: &mut [u8],
    layout: &Layout,
    code: &[u8],
    trampolines_rel: usize,
    forwards: usize,
) -> Result<(), VdsoImageError> {
    let text = layout.text;
    put(bytes, text.offset, code);
    bytes[text.offset + code.len()..text.offset + text.size].fill(INT3);
    for i in 0..forwards {
        let at = text.offset + trampolines_rel + TRAMPOLINE_CELL * i;
        let slot = layout.slots.offset + 8 * i;
        // rel32 counts from the end of the 6-byte instruction.
        let rel = i32::try_from(slot as i64 - (at + TRAMPOLINE_LEN) as i64).map_err(|_| VdsoImageError::TooLarge)?;
        put(bytes, at, &[0xff, 0x25]);
        put(bytes, at + 2, &rel.to_le_bytes());
    }
    Ok(())
}

fn write_dynamic(bytes: &mut [u8], layout: &Layout, soname: usize) {
    let entries = [
        (DT_HASH, layout.hash.offset as u64),
        (DT_GNU_HASH, layout.gnu_hash.offset as u64),
        (DT_SYMTAB, layout.dynsym.offset as u64),
        (DT_STRTAB, layout.dynstr.offset as u64),
        (DT_STRSZ, layout.dynstr.size as u64),
        (DT_SYMENT, SYM_SIZE as u64),
        (DT_SONAME, soname as u64),
        (DT_NULL, 0),
    ];
    for (i, (tag, val)) in entries.into_iter().enumerate() {
        let entry = Dyn { d_tag: tag.into(), d_val: val.into() };
        put(bytes, layout.dynamic.offset + DYN_SIZE * i, entry.as_bytes());
    }
}

fn write_section_headers(bytes: &mut [u8], layout: &Layout, names: &SectionNames) {
    let section = |index: u16, sh_type: u32, flags: u64, span: Span, align: u64| Shdr {
        sh_name: (names.offsets[usize::from(index)] as u32).into(),
        sh_type: sh_type.into(),
        sh_flags: flags.into(),
        // Linked at 0, so an allocated section's address is its offset.
        sh_addr: if flags & SHF_ALLOC != 0 { span.offset as u64 } else { 0 }.into(),
        sh_offset: (span.offset as u64).into(),
        sh_size: (span.size as u64).into(),
        sh_addralign: align.into(),
        ..Shdr::default()
    };
    let linked = |shdr: Shdr, link: u16, entsize: usize| Shdr {
        sh_link: u32::from(link).into(),
        sh_entsize: (entsize as u64).into(),
        ..shdr
    };
    let sections = [
        (SHN_HASH, linked(section(SHN_HASH, SHT_HASH, SHF_ALLOC, layout.hash, 8), SHN_DYNSYM, 4)),
        (SHN_GNU_HASH, linked(section(SHN_GNU_HASH, SHT_GNU_HASH, SHF_ALLOC, layout.gnu_hash, 8), SHN_DYNSYM, 0)),
        (
            SHN_DYNSYM,
            Shdr {
                // sh_info: index of the first non-local symbol, which is every one after the null.
                sh_info: 1.into(),
                ..linked(section(SHN_DYNSYM, SHT_DYNSYM, SHF_ALLOC, layout.dynsym, 8), SHN_DYNSTR, SYM_SIZE)
            },
        ),
        (SHN_DYNSTR, section(SHN_DYNSTR, SHT_STRTAB, SHF_ALLOC, layout.dynstr, 1)),
        (SHN_TEXT, section(SHN_TEXT, SHT_PROGBITS, SHF_ALLOC | SHF_EXECINSTR, layout.text, 16)),
        (SHN_GOT, linked(section(SHN_GOT, SHT_PROGBITS, SHF_ALLOC, layout.slots, 8), 0, 8)),
        (SHN_DYNAMIC, linked(section(SHN_DYNAMIC, SHT_DYNAMIC, SHF_ALLOC, layout.dynamic, 8), SHN_DYNSTR, DYN_SIZE)),
        (SHN_SHSTRTAB, section(SHN_SHSTRTAB, SHT_STRTAB, 0, layout.shstrtab, 1)),
    ];
    for (index, shdr) in sections {
        put(bytes, layout.shdrs.offset + SHDR_SIZE * usize::from(index), shdr.as_bytes());
    }
}

// ------------------------------------------------------------------------------------------------
// Reading (bounds-checked: malformed input yields None / nothing, never a panic)
// ------------------------------------------------------------------------------------------------

/// Reads a `T` at `offset`, or `None` when it does not fit in `image`.
fn read_at<T: FromBytes>(image: &[u8], offset: u64) -> Option<T> {
    let offset = usize::try_from(offset).ok()?;
    T::read_from_prefix(image.get(offset..)?).ok().map(|(value, _)| value)
}

fn u32_at(image: &[u8], offset: u64) -> Option<u32> {
    read_at::<U32>(image, offset).map(U32::get)
}

/// `base + index * stride`, or `None` on overflow.
fn element(base: u64, index: u64, stride: u64) -> Option<u64> {
    base.checked_add(index.checked_mul(stride)?)
}

/// The NUL-terminated string at `strtab + name`, without its NUL.
fn c_str(image: &[u8], strtab: u64, name: u32) -> Option<&[u8]> {
    let start = usize::try_from(strtab.checked_add(u64::from(name))?).ok()?;
    let rest = image.get(start..)?;
    rest.iter().position(|&b| b == 0).map(|end| &rest[..end])
}

/// The ELF header, if `image` starts with a little-endian ELF64 one.
fn elf_header(image: &[u8]) -> Option<Ehdr> {
    let ehdr: Ehdr = read_at(image, 0)?;
    let ident = &ehdr.e_ident;
    let valid = ident[..4] == ELFMAG && ident[4] == ELFCLASS64 && ident[5] == ELFDATA2LSB;
    valid.then_some(ehdr)
}

fn program_headers(image: &[u8]) -> Option<Vec<Phdr>> {
    let ehdr = elf_header(image)?;
    if usize::from(ehdr.e_phentsize.get()) != PHDR_SIZE {
        return None;
    }
    (0..u64::from(ehdr.e_phnum.get()))
        .map(|i| read_at(image, element(ehdr.e_phoff.get(), i, PHDR_SIZE as u64)?))
        .collect()
}

/// What `.dynamic` says, with pointers already turned into offsets into the image.
#[derive(Debug, Default)]
struct Dynamic {
    symtab: Option<u64>,
    strtab: Option<u64>,
    syment: Option<u64>,
    hash: Option<u64>,
    gnu_hash: Option<u64>,
}

/// Walks `.dynamic` at `offset` up to `DT_NULL`; `bias` is subtracted from pointer values.
fn read_dynamic(image: &[u8], offset: u64, bias: u64) -> Option<Dynamic> {
    let mut dynamic = Dynamic::default();
    // Each step reads a further entry, so the walk ends at DT_NULL or at the end of the image.
    for i in 0.. {
        let entry: Dyn = read_at(image, element(offset, i, DYN_SIZE as u64)?)?;
        let ptr = || entry.d_val.get().checked_sub(bias);
        match entry.d_tag.get() {
            DT_NULL => break,
            DT_SYMTAB => dynamic.symtab = Some(ptr()?),
            DT_STRTAB => dynamic.strtab = Some(ptr()?),
            DT_HASH => dynamic.hash = Some(ptr()?),
            DT_GNU_HASH => dynamic.gnu_hash = Some(ptr()?),
            DT_SYMENT => dynamic.syment = Some(entry.d_val.get()),
            _ => {}
        }
    }
    if dynamic.syment.is_some_and(|size| size != SYM_SIZE as u64) {
        return None;
    }
    Some(dynamic)
}

/// `.dynamic` found the way the SGX selftest finds it: the first `PT_DYNAMIC` at `base + p_offset`,
/// pointers taken as offsets from the base.
fn selftest_dynamic(image: &[u8]) -> Option<Dynamic> {
    let dynamic = program_headers(image)?.into_iter().find(|p| p.p_type.get() == PT_DYNAMIC)?;
    read_dynamic(image, dynamic.p_offset.get(), 0)
}

/// The symbol at `index` of the symbol table at `symtab`, if its name is `name`.
fn symbol_named(image: &[u8], dynamic: &Dynamic, index: u64, name: &[u8]) -> Option<Option<Sym>> {
    let sym: Sym = read_at(image, element(dynamic.symtab?, index, SYM_SIZE as u64)?)?;
    let sym_name = c_str(image, dynamic.strtab?, sym.st_name.get())?;
    Some((sym_name == name).then_some(sym))
}

/// Looks `name` up through `DT_HASH` exactly as the Linux SGX selftest (`vdso_symtab_get`) does,
/// returning the symbol's `st_value` (an offset from the image base for a vDSO). `None` when the
/// name is absent or the image is malformed.
pub fn lookup_sysv(image: &[u8], name: &str) -> Option<u64> {
    let dynamic = selftest_dynamic(image)?;
    let hash = dynamic.hash?;
    let nbucket = u32_at(image, hash)?;
    let nchain = u32_at(image, hash.checked_add(4)?)?;
    if nbucket == 0 {
        return None;
    }
    let buckets = hash.checked_add(8)?;
    let chains = element(buckets, u64::from(nbucket), 4)?;
    let mut index = u32_at(image, element(buckets, u64::from(sysv_hash(name.as_bytes()) % nbucket), 4)?)?;
    // A well-formed chain visits each symbol at most once; the cap stops cycles in corrupt tables.
    let cap = u64::from(nchain).min((image.len() / SYM_SIZE) as u64);
    for _ in 0..=cap {
        if index == 0 {
            return None;
        }
        if let Some(sym) = symbol_named(image, &dynamic, u64::from(index), name.as_bytes())? {
            return Some(sym.st_value.get());
        }
        index = u32_at(image, element(chains, u64::from(index), 4)?)?;
    }
    None
}

/// The fixed part of a `.gnu.hash` table, with the offsets of its arrays.
struct GnuHash {
    nbuckets: u32,
    symoffset: u32,
    bloom_words: u32,
    bloom_shift: u32,
    bloom: u64,
    buckets: u64,
    chain: u64,
}

impl GnuHash {
    fn read(image: &[u8], at: u64) -> Option<Self> {
        let word = |i: u64| u32_at(image, element(at, i, 4)?);
        let (nbuckets, symoffset, bloom_words, bloom_shift) = (word(0)?, word(1)?, word(2)?, word(3)?);
        let bloom = at.checked_add(16)?;
        let buckets = element(bloom, u64::from(bloom_words), 8)?;
        let chain = element(buckets, u64::from(nbuckets), 4)?;
        Some(GnuHash { nbuckets, symoffset, bloom_words, bloom_shift, bloom, buckets, chain })
    }

    /// The chain word of symbol `index`, or `None` below `symoffset` or outside the image.
    fn chain_word(&self, image: &[u8], index: u32) -> Option<u32> {
        u32_at(image, element(self.chain, u64::from(index.checked_sub(self.symoffset)?), 4)?)
    }

    /// Whether the bloom filter admits hash `h` (false positives are possible, negatives are not).
    fn bloom_admits(&self, image: &[u8], h: u32) -> Option<bool> {
        if self.bloom_words == 0 || self.bloom_shift >= 32 {
            return None;
        }
        let word: u64 = read_at::<U64>(image, element(self.bloom, u64::from((h / 64) % self.bloom_words), 8)?)?.get();
        let mask = (1u64 << (h % 64)) | (1u64 << ((h >> self.bloom_shift) % 64));
        Some(word & mask == mask)
    }
}

/// Looks `name` up through `DT_GNU_HASH` (bloom filter, bucket, then the bucket's run of chain
/// words), returning the symbol's `st_value`. `None` when absent or the image is malformed.
pub fn lookup_gnu(image: &[u8], name: &str) -> Option<u64> {
    let dynamic = selftest_dynamic(image)?;
    let table = GnuHash::read(image, dynamic.gnu_hash?)?;
    let h = gnu_hash(name.as_bytes());
    if table.nbuckets == 0 || !table.bloom_admits(image, h)? {
        return None;
    }
    let mut index = u32_at(image, element(table.buckets, u64::from(h % table.nbuckets), 4)?)?;
    // The index only grows, and chain words are read from the image, so this ends at its end.
    loop {
        let chain_word = table.chain_word(image, index)?;
        if chain_word | 1 == h | 1
            && let Some(sym) = symbol_named(image, &dynamic, u64::from(index), name.as_bytes())?
        {
            return Some(sym.st_value.get());
        }
        if chain_word & 1 != 0 {
            return None;
        }
        index = index.checked_add(1)?;
    }
}

/// The number of dynamic symbols a `.gnu.hash` table covers: one past the end of the run of the
/// highest bucket (the table does not record the count itself).
fn gnu_symbol_count(image: &[u8], at: u64) -> Option<u32> {
    let table = GnuHash::read(image, at)?;
    let mut highest = 0;
    for bucket in 0..u64::from(table.nbuckets) {
        highest = highest.max(u32_at(image, element(table.buckets, bucket, 4)?)?);
    }
    if highest < table.symoffset {
        return Some(table.symoffset);
    }
    let mut index = highest;
    while table.chain_word(image, index)? & 1 == 0 {
        index = index.checked_add(1)?;
    }
    index.checked_add(1)
}

/// The difference between a mapped image's addresses (`p_vaddr`, `d_ptr`, `st_value`) and offsets
/// into it: the address of file offset 0 per the first `PT_LOAD` (0 for the kernel's vDSO).
fn load_bias(phdrs: &[Phdr]) -> Option<u64> {
    let load = phdrs.iter().find(|p| p.p_type.get() == PT_LOAD)?;
    load.p_vaddr.get().checked_sub(load.p_offset.get())
}

/// Lists the exported functions of a mapped vDSO (`image` spans `[AT_SYSINFO_EHDR, +image_len)`):
/// defined `STT_FUNC`/`STT_NOTYPE` symbols of global or weak binding, with their `st_value` as
/// an offset from the image base. The symbol count comes from `DT_HASH`'s nchain, else from
/// `DT_GNU_HASH`. Malformed input yields an empty or partial list, never a panic.
pub fn read_real_vdso_symbols(image: &[u8]) -> Vec<(String, u64)> {
    read_symbols(image).unwrap_or_default()
}

fn read_symbols(image: &[u8]) -> Option<Vec<(String, u64)>> {
    let phdrs = program_headers(image)?;
    let bias = load_bias(&phdrs)?;
    let dynamic_phdr = phdrs.iter().find(|p| p.p_type.get() == PT_DYNAMIC)?;
    let dynamic = read_dynamic(image, dynamic_phdr.p_vaddr.get().checked_sub(bias)?, bias)?;
    let (symtab, strtab) = (dynamic.symtab?, dynamic.strtab?);
    let count = match dynamic.hash {
        Some(hash) => u32_at(image, hash.checked_add(4)?)?,
        None => gnu_symbol_count(image, dynamic.gnu_hash?)?,
    };
    // Never trust a count that claims more symbols than the image could hold.
    let fits = (image.len() as u64).saturating_sub(symtab) / SYM_SIZE as u64;
    let mut symbols = Vec::new();
    for index in 1..u64::from(count).min(fits) {
        let Some(sym) = read_at::<Sym>(image, element(symtab, index, SYM_SIZE as u64)?) else { break };
        let (bind, kind) = (sym.st_info >> 4, sym.st_info & 0xf);
        let exported = sym.st_shndx.get() != SHN_UNDEF
            && matches!(bind, STB_GLOBAL | STB_WEAK)
            && matches!(kind, STT_FUNC | STT_NOTYPE);
        let name = c_str(image, strtab, sym.st_name.get()).and_then(|n| std::str::from_utf8(n).ok());
        let offset = sym.st_value.get().checked_sub(bias);
        if let (true, Some(name), Some(offset)) = (exported, name, offset)
            && !name.is_empty()
        {
            symbols.push((name.to_owned(), offset));
        }
    }
    Some(symbols)
}

/// The size of the mapping an ELF image occupies, from its headers alone: the end of its furthest
/// `PT_LOAD` (`p_vaddr + p_memsz`, relative to the address of file offset 0) rounded up to 4096.
/// `image_start` needs to cover the ELF and program headers (the first page always does).
pub fn image_len(image_start: &[u8]) -> Option<usize> {
    let phdrs = program_headers(image_start)?;
    let bias = load_bias(&phdrs)?;
    let mut end = 0u64;
    for load in phdrs.iter().filter(|p| p.p_type.get() == PT_LOAD) {
        end = end.max(load.p_vaddr.get().checked_add(load.p_memsz.get())?.checked_sub(bias)?);
    }
    usize::try_from(end).ok()?.checked_next_multiple_of(PAGE_SIZE)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENTER: &str = "__vdso_sgx_enter_enclave";

    /// 40 bytes of code with exports at 0 and 16.
    fn sample() -> VdsoImage {
        let code: Vec<u8> = (0..40u8).collect();
        let exports = [Export { name: ENTER, code_offset: 0 }, Export { name: "helper", code_offset: 16 }];
        let forwards = [
            Forward { name: "__vdso_clock_gettime", target: 0x1111_2222_3333_4444 },
            Forward { name: "__vdso_getcpu", target: 0x5555_6666_7777_8888 },
        ];
        build(&code, &exports, &forwards).expect("valid input")
    }

    fn phdr(image: &[u8], index: usize) -> Phdr {
        read_at(image, (EHDR_SIZE + PHDR_SIZE * index) as u64).unwrap()
    }

    /// Where trampoline `at` jumps through: the offset of its slot.
    fn trampoline_slot(image: &[u8], at: usize) -> usize {
        assert_eq!(&image[at..at + 2], &[0xff, 0x25], "jmp qword [rip+rel32]");
        let rel = i32::from_le_bytes(image[at + 2..at + 6].try_into().unwrap());
        (at as i64 + TRAMPOLINE_LEN as i64 + i64::from(rel)) as usize
    }

    fn slot_value(image: &[u8], slot: usize) -> u64 {
        u64::from_le_bytes(image[slot..slot + 8].try_into().unwrap())
    }

    #[test]
    fn layout_matches_the_kernel_vdso_shape() {
        let image = sample();
        let bytes = &image.bytes;
        assert_eq!(bytes.len() % PAGE_SIZE, 0);
        assert_eq!(image.code_start % 16, 0);
        assert_eq!(image.slots_start % 8, 0);
        assert_eq!(&bytes[image.code_start..image.code_start + 40], &(0..40u8).collect::<Vec<_>>()[..]);
        let ehdr: Ehdr = read_at(bytes, 0).unwrap();
        assert_eq!((ehdr.e_type.get(), ehdr.e_machine.get(), ehdr.e_phnum.get()), (ET_DYN, EM_X86_64, 2));
        let load = phdr(bytes, 0);
        assert_eq!(load.p_type.get(), PT_LOAD);
        assert_eq!((load.p_offset.get(), load.p_vaddr.get()), (0, 0));
        assert_eq!((load.p_filesz.get(), load.p_memsz.get()), (bytes.len() as u64, bytes.len() as u64));
        assert_eq!((load.p_flags.get(), load.p_align.get()), (PF_R | PF_X, 4096));
        let dynamic = phdr(bytes, 1);
        assert_eq!(dynamic.p_type.get(), PT_DYNAMIC);
        assert_eq!(dynamic.p_offset.get(), dynamic.p_vaddr.get());
    }

    #[test]
    fn lookups_find_exports_and_forwards() {
        let image = sample();
        let bytes = &image.bytes;
        for lookup in [lookup_sysv, lookup_gnu] {
            assert_eq!(lookup(bytes, ENTER), Some(image.code_start as u64));
            assert_eq!(lookup(bytes, "helper"), Some(image.code_start as u64 + 16));
            assert_eq!(lookup(bytes, "__vdso_time"), None);
            assert_eq!(lookup(bytes, ""), None);
            for (i, (name, target)) in
                [("__vdso_clock_gettime", 0x1111_2222_3333_4444), ("__vdso_getcpu", 0x5555_6666_7777_8888u64)]
                    .into_iter()
                    .enumerate()
            {
                let at = lookup(bytes, name).unwrap() as usize;
                assert!(at >= image.code_start + 40 && at.is_multiple_of(TRAMPOLINE_CELL));
                let slot = trampoline_slot(bytes, at);
                assert_eq!(slot, image.slots_start + 8 * i);
                assert_eq!(slot_value(bytes, slot), target);
            }
        }
    }

    #[test]
    fn many_symbols_are_all_found() {
        let names: Vec<String> = (0..100).map(|i| format!("sym_{i}_{}", "x".repeat(i % 7))).collect();
        let code = vec![0xc3; 100];
        let exports: Vec<Export> = names.iter().enumerate().map(|(i, name)| Export { name, code_offset: i }).collect();
        let image = build(&code, &exports, &[]).unwrap();
        for (i, name) in names.iter().enumerate() {
            let expected = Some((image.code_start + i) as u64);
            assert_eq!(lookup_sysv(&image.bytes, name), expected, "{name}");
            assert_eq!(lookup_gnu(&image.bytes, name), expected, "{name}");
        }
        let listed = read_real_vdso_symbols(&image.bytes);
        assert_eq!(listed.len(), 100);
    }

    #[test]
    fn empty_image_is_valid() {
        let image = build(&[], &[], &[]).unwrap();
        assert_eq!(image.bytes.len(), PAGE_SIZE);
        assert_eq!(lookup_sysv(&image.bytes, "x"), None);
        assert_eq!(lookup_gnu(&image.bytes, "x"), None);
        assert!(read_real_vdso_symbols(&image.bytes).is_empty());
    }

    #[test]
    fn bad_input_is_refused() {
        let code = [0xc3; 4];
        let dup = |e: &[Export], f: &[Forward]| build(&code, e, f).unwrap_err();
        let a = Export { name: "a", code_offset: 0 };
        let fa = Forward { name: "a", target: 1 };
        let dup_a = VdsoImageError::DuplicateName("a".into());
        assert_eq!(dup(&[a, a], &[]), dup_a);
        assert_eq!(dup(&[a], &[fa]), dup_a);
        assert_eq!(dup(&[], &[fa, fa]), dup_a);
        assert_eq!(dup(&[Export { name: "", code_offset: 0 }], &[]), VdsoImageError::EmptyName);
        assert_eq!(dup(&[], &[Forward { name: "", target: 0 }]), VdsoImageError::EmptyName);
        assert_eq!(dup(&[Export { name: "a\0b", code_offset: 0 }], &[]), VdsoImageError::InvalidName("a\0b".into()));
        assert_eq!(dup(&[Export { name: "é", code_offset: 0 }], &[]), VdsoImageError::InvalidName("é".into()));
        assert_eq!(
            dup(&[Export { name: "b", code_offset: 4 }], &[]),
            VdsoImageError::ExportOutOfRange { name: "b".into(), offset: 4, code_len: 4 }
        );
        assert!(build(&[], &[Export { name: "b", code_offset: 0 }], &[]).is_err());
    }

    /// Calls every reader; the point is that none panics.
    fn read_everything(bytes: &[u8]) -> (Option<u64>, Option<u64>) {
        let _ = read_real_vdso_symbols(bytes);
        let _ = image_len(bytes);
        (lookup_sysv(bytes, ENTER), lookup_gnu(bytes, ENTER))
    }

    #[test]
    fn truncated_images_give_none() {
        let image = sample();
        let dynamic_end = (phdr(&image.bytes, 1).p_offset.get() + phdr(&image.bytes, 1).p_filesz.get()) as usize;
        for len in 0..image.bytes.len() {
            let (sysv, gnu) = read_everything(&image.bytes[..len]);
            // Once the tables and .dynamic are all present, the lookups succeed again.
            if len < image.code_start {
                assert_eq!((sysv, gnu), (None, None), "len {len}");
            }
            if len >= dynamic_end {
                assert!(sysv.is_some() && gnu.is_some(), "len {len}");
            }
        }
    }

    #[test]
    fn malformed_headers_give_none() {
        let image = sample();
        assert_eq!(read_everything(&[]), (None, None));
        assert_eq!(read_everything(&[0xff; 4096]), (None, None));
        let mut wrong_magic = image.bytes.clone();
        wrong_magic[1] = b'X';
        assert_eq!(read_everything(&wrong_magic), (None, None));
        assert!(read_real_vdso_symbols(&wrong_magic).is_empty());
        let mut class32 = image.bytes.clone();
        class32[4] = 1;
        assert_eq!(read_everything(&class32), (None, None));
        for bad_offset in [image.bytes.len() as u64, u64::MAX, u64::MAX - 8] {
            let mut far_dynamic = image.bytes.clone();
            let at = EHDR_SIZE + PHDR_SIZE + 8; // PT_DYNAMIC's p_offset
            far_dynamic[at..at + 8].copy_from_slice(&bad_offset.to_le_bytes());
            far_dynamic[at + 8..at + 16].copy_from_slice(&bad_offset.to_le_bytes()); // and p_vaddr
            assert_eq!(read_everything(&far_dynamic), (None, None));
        }
        let mut huge_phnum = image.bytes.clone();
        huge_phnum[56..58].copy_from_slice(&u16::MAX.to_le_bytes());
        assert_eq!(read_everything(&huge_phnum), (None, None));
    }

    #[test]
    fn corrupt_hash_tables_terminate() {
        let image = sample();
        let hash = Layout::new(4, 0, 0, 0, 0).hash.offset;
        let mut zero_buckets = image.bytes.clone();
        zero_buckets[hash..hash + 4].fill(0);
        assert_eq!(lookup_sysv(&zero_buckets, ENTER), None);
        // Make every chain entry point at itself: a cycle the reader must escape.
        let mut cyclic = image.bytes.clone();
        let chains = hash + 8 + 4 * 4;
        for i in 0..5u32 {
            let at = chains + 4 * i as usize;
            cyclic[at..at + 4].copy_from_slice(&i.to_le_bytes());
        }
        assert_eq!(lookup_sysv(&cyclic, "nonexistent"), None);
    }

    #[test]
    fn random_corruption_never_panics() {
        let image = sample();
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut garbage = vec![0u8; 4096];
        garbage.iter_mut().for_each(|b| *b = next() as u8);
        read_everything(&garbage);
        garbage[..64].copy_from_slice(&image.bytes[..64]);
        read_everything(&garbage);
        // Corrupt the headers and tables, the parts the readers interpret.
        let interesting = image.code_start;
        for _ in 0..3000 {
            let mut bytes = image.bytes.clone();
            for _ in 0..1 + next() % 4 {
                let at = (next() % interesting as u64) as usize;
                bytes[at] = next() as u8;
            }
            read_everything(&bytes);
            let _ = lookup_gnu(&bytes, "helper");
            let _ = lookup_sysv(&bytes, "__vdso_getcpu");
        }
    }

    #[test]
    fn image_len_reads_the_load_segment() {
        let image = sample();
        assert_eq!(image_len(&image.bytes), Some(image.bytes.len()));
        let big = build(&[0x90; 10_000], &[Export { name: "f", code_offset: 9_999 }], &[]).unwrap();
        assert_eq!(big.bytes.len(), 3 * PAGE_SIZE);
        assert_eq!(image_len(&big.bytes[..PAGE_SIZE]), Some(big.bytes.len()));
        assert_eq!(image_len(&big.bytes[..EHDR_SIZE + 2 * PHDR_SIZE]), Some(big.bytes.len()));
        assert_eq!(image_len(&big.bytes[..EHDR_SIZE + PHDR_SIZE - 1]), None);
    }

    #[test]
    fn built_image_lists_its_own_symbols() {
        let image = sample();
        let mut symbols = read_real_vdso_symbols(&image.bytes);
        symbols.sort();
        let names: Vec<&str> = symbols.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["__vdso_clock_gettime", "__vdso_getcpu", ENTER, "helper"]);
        for (name, value) in &symbols {
            assert_eq!(lookup_sysv(&image.bytes, name), Some(*value));
        }
    }

    #[test]
    fn readelf_accepts_the_image() {
        let image = sample();
        let path = std::env::temp_dir().join(format!("sgxemu-vdso-image-{}.so", std::process::id()));
        std::fs::write(&path, &image.bytes).unwrap();
        let output = std::process::Command::new("readelf")
            .args(["-W", "-h", "-l", "-S", "-d", "--dyn-syms"])
            .arg(&path)
            .output();
        let _ = std::fs::remove_file(&path);
        let output = match output {
            Ok(output) => output,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                eprintln!("readelf not installed; skipping");
                return;
            }
            Err(e) => panic!("running readelf: {e}"),
        };
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "readelf failed: {stderr}");
        assert!(stderr.trim().is_empty(), "readelf complained: {stderr}\n{stdout}");
        for expected in [ENTER, "__vdso_clock_gettime", "linux-vdso.so.1", ".gnu.hash", "(HASH)", "(GNU_HASH)"] {
            assert!(stdout.contains(expected), "{expected} missing from:\n{stdout}");
        }
    }

    /// This process's vDSO as a slice, if the kernel gave it one.
    fn real_vdso() -> Option<&'static [u8]> {
        // SAFETY: getauxval only reads the auxiliary vector.
        let base = unsafe { libc::getauxval(libc::AT_SYSINFO_EHDR) } as usize;
        if base == 0 {
            return None;
        }
        // SAFETY: the kernel maps the vDSO readable at `base` for the life of the process, and an
        // ELF vDSO image is at least one page long.
        let first_page = unsafe { std::slice::from_raw_parts(base as *const u8, PAGE_SIZE) };
        let len = image_len(first_page)?;
        // SAFETY: `len` is the extent of the vDSO's own PT_LOAD, all of which the kernel maps.
        Some(unsafe { std::slice::from_raw_parts(base as *const u8, len) })
    }

    #[test]
    fn reads_and_forwards_the_real_vdso() {
        let Some(vdso) = real_vdso() else {
            eprintln!("no vDSO in this process; skipping");
            return;
        };
        let symbols = read_real_vdso_symbols(vdso);
        let (_, offset) = symbols
            .iter()
            .find(|(name, _)| name == "__vdso_clock_gettime")
            .unwrap_or_else(|| panic!("no __vdso_clock_gettime in {symbols:?}"));
        assert_eq!(lookup_sysv(vdso, "__vdso_clock_gettime"), Some(*offset));
        if lookup_gnu(vdso, "__vdso_clock_gettime").is_some() {
            assert_eq!(lookup_gnu(vdso, "__vdso_clock_gettime"), Some(*offset));
        }
        let target = vdso.as_ptr() as u64 + offset;
        let image = build(&[0xc3], &[], &[Forward { name: "__vdso_clock_gettime", target }]).unwrap();
        let at = lookup_sysv(&image.bytes, "__vdso_clock_gettime").unwrap() as usize;
        assert_eq!(slot_value(&image.bytes, trampoline_slot(&image.bytes, at)), target);
        assert_eq!(slot_value(&image.bytes, image.slots_start), target);
    }

    /// Maps a built image like the preload layer will and calls into it: an export and a forward
    /// to the real vDSO's `__vdso_time`.
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    #[test]
    fn mapped_image_runs() {
        let Some(vdso) = real_vdso() else {
            eprintln!("no vDSO in this process; skipping");
            return;
        };
        let Some(time_offset) = lookup_sysv(vdso, "__vdso_time") else {
            eprintln!("no __vdso_time in this vDSO; skipping");
            return;
        };
        let code = [0xb8, 42, 0, 0, 0, 0xc3]; // mov eax, 42; ret
        let exports = [Export { name: "answer", code_offset: 0 }];
        let forwards = [Forward { name: "__vdso_time", target: vdso.as_ptr() as u64 + time_offset }];
        let image = build(&code, &exports, &forwards).unwrap();
        let len = image.bytes.len();
        // SAFETY: a fresh private anonymous mapping; no existing memory is touched.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(map, libc::MAP_FAILED);
        // SAFETY: `map` is `len` writable bytes we own, disjoint from `image.bytes`.
        unsafe { std::ptr::copy_nonoverlapping(image.bytes.as_ptr(), map.cast::<u8>(), len) };
        // SAFETY: changes the protection of our own mapping only.
        assert_eq!(unsafe { libc::mprotect(map, len, libc::PROT_READ | libc::PROT_EXEC) }, 0);
        // SAFETY: the mapping now holds the image we built, readable, for `len` bytes.
        let mapped = unsafe { std::slice::from_raw_parts(map.cast::<u8>(), len) };
        let answer_at = lookup_sysv(mapped, "answer").unwrap() as usize;
        let time_at = lookup_gnu(mapped, "__vdso_time").unwrap() as usize;
        // SAFETY: `answer` is `mov eax, 42; ret`, a valid `extern "C" fn() -> i32`, in executable memory.
        let answer: extern "C" fn() -> i32 = unsafe { std::mem::transmute(map.cast::<u8>().add(answer_at)) };
        // SAFETY: the trampoline jumps to the kernel's `time(time_t *)`, which accepts NULL.
        let time: extern "C" fn(*mut libc::time_t) -> libc::time_t =
            unsafe { std::mem::transmute(map.cast::<u8>().add(time_at)) };
        assert_eq!(answer(), 42);
        let through_image = time(std::ptr::null_mut());
        // SAFETY: libc's time accepts NULL.
        let direct = unsafe { libc::time(std::ptr::null_mut()) };
        assert!((direct - through_image).abs() <= 2, "{through_image} vs {direct}");
        // SAFETY: unmaps only our own mapping; nothing refers to it any more.
        assert_eq!(unsafe { libc::munmap(map, len) }, 0);
    }
}
