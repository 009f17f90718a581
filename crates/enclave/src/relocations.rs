//! The relocations a self-relocating static PIE applies to itself when it first runs.
//!
//! The loader never relocates: MRENCLAVE measures the pages as linked, relative to address
//! 0, so it is the same wherever the enclave is loaded. A program that needs relocating can
//! still be an enclave if it relocates itself at its first entry (the enclave runtimes of
//! Rust's `x86_64-fortanix-unknown-sgx` target and of Intel's SDK do): it walks its own
//! `_DYNAMIC` and adds its load address where the tables say. [`crate::elf::image_from_elf`]
//! with [`crate::layout::Layout::self_relocating`] accepts such a program after checking that
//! it *can* do that from inside the enclave:
//!
//! * every relocation needs no symbol: `DT_RELA` entries of type `R_X86_64_RELATIVE`
//!   (`*(base + r_offset) = base + r_addend`; `R_X86_64_NONE` entries are skipped) with
//!   symbol 0, and `DT_RELR` (every entry relative by definition);
//! * every 8-byte target lies in a writable segment (an enclave cannot write the others, so
//!   `DT_TEXTREL` and `DF_TEXTREL` are refused too);
//! * the tables lie in the file contents of loaded segments (the program reads them from
//!   its own memory), with the standard entry sizes;
//! * no `DT_REL` (x86-64 uses RELA) and no `DT_JMPREL` (PLT relocations name symbols).
//!
//! Whether the program really does relocate itself is not something a loader can see: one
//! that does not will find its pointers unrelocated when it runs.

use object::elf;

/// DT_RELRSZ (gABI; not in `object` 0.36).
pub(crate) const DT_RELRSZ: i64 = 35;
/// DT_RELR (gABI; not in `object` 0.36).
pub(crate) const DT_RELR: i64 = 36;
/// DT_RELRENT (gABI; not in `object` 0.36).
const DT_RELRENT: i64 = 37;
/// Size of an Elf64_Rela.
const RELA_SIZE: u64 = 24;
/// Size of an Elf64_Relr.
const RELR_SIZE: u64 = 8;

/// The entries of a `PT_DYNAMIC` table before `DT_NULL`, as (tag, value).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DynamicTags(pub Vec<(i64, u64)>);

impl DynamicTags {
    /// The entries of a `PT_DYNAMIC` segment's bytes up to DT_NULL (or the segment's end):
    /// 16 bytes each, `d_tag` i64 and `d_val` u64.
    pub fn parse(table: &[u8]) -> Self {
        let entries = table.chunks_exact(16).map(|entry| {
            let (tag, val) = entry.split_at(8);
            (i64::from_le_bytes(tag.try_into().unwrap_or([0; 8])), u64::from_le_bytes(val.try_into().unwrap_or([0; 8])))
        });
        DynamicTags(entries.take_while(|&(tag, _)| tag != elf::DT_NULL as i64).collect())
    }

    /// The value of the first entry with `tag`.
    pub fn value(&self, tag: i64) -> Option<u64> {
        self.0.iter().find(|&&(t, _)| t == tag).map(|&(_, v)| v)
    }

    /// The value of `tag`, 0 if absent (the size tags' meaning of "no table").
    fn size(&self, tag: i64) -> u64 {
        self.value(tag).unwrap_or(0)
    }
}

/// A loaded segment, as far as relocations care.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    /// Program header index (for messages).
    pub index: usize,
    /// p_vaddr.
    pub vaddr: u64,
    /// p_memsz.
    pub memsz: u64,
    /// p_offset.
    pub offset: u64,
    /// p_filesz (the file range is inside the file: checked by the ELF parser).
    pub filesz: u64,
    /// PF_W.
    pub writable: bool,
}

/// Why a self-relocating program could not relocate itself.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RelocationError {
    /// A kind of relocation table the program cannot apply by itself.
    #[error("the program has {tag} relocations, which a self-relocating enclave cannot apply: {why}")]
    UnsupportedTable {
        /// The dynamic tag that gives the table's size.
        tag: &'static str,
        /// Why not.
        why: &'static str,
    },
    /// DT_TEXTREL or DF_TEXTREL.
    #[error(
        "the program has text relocations (DT_TEXTREL): a self-relocating enclave can only write its writable segments"
    )]
    TextRelocations,
    /// A table is not in the file contents of one loaded segment.
    #[error(
        "the {tag} table at {addr:#x} ({size} bytes) is not inside the file contents of a loaded segment, where the \
         enclave could read it"
    )]
    TableOutside {
        /// The table's address tag.
        tag: &'static str,
        /// Its address.
        addr: u64,
        /// Its size in bytes.
        size: u64,
    },
    /// A table's size or entry size is not the standard one.
    #[error("the {tag} table is {size} bytes with {entsize}-byte entries; {expected}-byte entries are standard")]
    EntrySize {
        /// The table's address tag.
        tag: &'static str,
        /// Its size in bytes.
        size: u64,
        /// Its entry size tag's value.
        entsize: u64,
        /// The standard entry size.
        expected: u64,
    },
    /// A RELA entry the program cannot apply without a symbol table.
    #[error(
        "RELA entry {index} (target {target:#x}) has type {r_type} and symbol {symbol}; a self-relocating enclave \
         applies only R_X86_64_RELATIVE (8) without a symbol"
    )]
    UnsupportedType {
        /// Index of the entry in DT_RELA.
        index: u64,
        /// r_offset.
        target: u64,
        /// ELF64_R_TYPE(r_info).
        r_type: u32,
        /// ELF64_R_SYM(r_info).
        symbol: u32,
    },
    /// A target outside every writable segment.
    #[error(
        "relocation target {target:#x} is not inside a writable segment: the enclave could not write it to relocate \
         itself"
    )]
    TargetNotWritable {
        /// The target's vaddr.
        target: u64,
    },
    /// A RELR table that starts with a bitmap.
    #[error("the DT_RELR table starts with a bitmap, which has no address to apply to")]
    RelrStartsWithBitmap,
}

/// Checks that a program whose dynamic table is `tags` can apply its own relocations (see
/// the module docs); `file` is the whole ELF file and `spans` its PT_LOAD segments. Returns
/// how many relocations it will apply.
///
/// # Errors
/// The first problem found, as a [`RelocationError`].
pub fn check(file: &[u8], tags: &DynamicTags, spans: &[Span]) -> Result<usize, RelocationError> {
    let textrel = tags.value(elf::DT_TEXTREL as i64).is_some()
        || tags.value(elf::DT_FLAGS as i64).is_some_and(|flags| flags & u64::from(elf::DF_TEXTREL) != 0);
    if textrel {
        return Err(RelocationError::TextRelocations);
    }
    let unsupported = [
        (elf::DT_RELSZ as i64, "DT_REL", "x86-64 programs use RELA; relink without DT_REL"),
        (elf::DT_PLTRELSZ as i64, "DT_JMPREL", "PLT relocations name symbols; link with -static-pie and no PLT"),
    ];
    for (size_tag, tag, why) in unsupported {
        if tags.size(size_tag) != 0 {
            return Err(RelocationError::UnsupportedTable { tag, why });
        }
    }
    let writable_target = |target: u64| {
        let end = target.checked_add(8);
        let inside = |s: &Span| s.writable && target >= s.vaddr && end.is_some_and(|end| end <= s.vaddr + s.memsz);
        if spans.iter().any(inside) { Ok(()) } else { Err(RelocationError::TargetNotWritable { target }) }
    };
    let mut count = 0;
    if let Some(rela) = table(
        file,
        tags,
        spans,
        (elf::DT_RELA as i64, "DT_RELA"),
        elf::DT_RELASZ as i64,
        (elf::DT_RELAENT as i64, RELA_SIZE),
    )? {
        for (index, entry) in rela.chunks_exact(RELA_SIZE as usize).enumerate() {
            let target = word(entry, 0);
            let info = word(entry, 8);
            let (r_type, symbol) = ((info & 0xFFFF_FFFF) as u32, (info >> 32) as u32);
            match (r_type, symbol) {
                (elf::R_X86_64_NONE, _) => continue,
                (elf::R_X86_64_RELATIVE, 0) => writable_target(target)?,
                _ => return Err(RelocationError::UnsupportedType { index: index as u64, target, r_type, symbol }),
            }
            count += 1;
        }
    }
    if let Some(relr) = table(file, tags, spans, (DT_RELR, "DT_RELR"), DT_RELRSZ, (DT_RELRENT, RELR_SIZE))? {
        for target in relr_targets(relr)? {
            writable_target(target)?;
            count += 1;
        }
    }
    Ok(count)
}

/// The little-endian u64 at `at` of an entry (callers pass whole entries).
fn word(entry: &[u8], at: usize) -> u64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&entry[at..at + 8]);
    u64::from_le_bytes(bytes)
}

/// The bytes of the table whose address tag is `addr_tag` and size tag `size_tag`, if it is
/// non-empty: it must lie in one segment's file contents and be made of `entsize` entries.
fn table<'f>(
    file: &'f [u8],
    tags: &DynamicTags,
    spans: &[Span],
    (addr_tag, tag): (i64, &'static str),
    size_tag: i64,
    (entsize_tag, expected): (i64, u64),
) -> Result<Option<&'f [u8]>, RelocationError> {
    let size = tags.size(size_tag);
    if size == 0 {
        return Ok(None);
    }
    let entsize = tags.value(entsize_tag).unwrap_or(expected);
    if entsize != expected || !size.is_multiple_of(expected) {
        return Err(RelocationError::EntrySize { tag, size, entsize, expected });
    }
    let addr = tags.value(addr_tag).unwrap_or(0);
    let outside = RelocationError::TableOutside { tag, addr, size };
    let end = addr.checked_add(size).ok_or(outside.clone())?;
    let span = spans.iter().find(|s| addr >= s.vaddr && end <= s.vaddr + s.filesz).ok_or(outside)?;
    // Inside the span's file range, which the ELF parser checked lies inside the file.
    let start = (span.offset + (addr - span.vaddr)) as usize;
    Ok(Some(&file[start..start + size as usize]))
}

/// The targets a DT_RELR table relocates: an even entry is an address (relocated, and the
/// next word after it starts the following run); an odd entry is a bitmap whose bit `i`
/// (1 ≤ i ≤ 63) relocates the `i - 1`-th word of the run, which then moves on 63 words.
fn relr_targets(table: &[u8]) -> Result<Vec<u64>, RelocationError> {
    let mut targets = Vec::new();
    let mut next: Option<u64> = None;
    for entry in table.chunks_exact(RELR_SIZE as usize) {
        let entry = word(entry, 0);
        if entry & 1 == 0 {
            targets.push(entry);
            next = Some(entry.wrapping_add(8));
            continue;
        }
        let base = next.ok_or(RelocationError::RelrStartsWithBitmap)?;
        for bit in 1..64 {
            if entry & (1 << bit) != 0 {
                targets.push(base.wrapping_add((bit - 1) * 8));
            }
        }
        next = Some(base.wrapping_add(63 * 8));
    }
    Ok(targets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relr_addresses_and_bitmaps_expand_as_the_gabi_says() {
        let mut table = Vec::new();
        for entry in [0x3000u64, 0b1011, 1 | 1 << 63, 0x5000] {
            table.extend_from_slice(&entry.to_le_bytes());
        }
        // 0x3000; bitmap bits 1 and 3 → words 0 and 2 after 0x3008; next run 0x3008 + 63×8:
        // bit 63 → its 62nd word; then a fresh address.
        let run2 = 0x3008 + 63 * 8;
        assert_eq!(relr_targets(&table), Ok(vec![0x3000, 0x3008, 0x3018, run2 + 62 * 8, 0x5000]));
        assert_eq!(relr_targets(&3u64.to_le_bytes()), Err(RelocationError::RelrStartsWithBitmap));
    }
}
