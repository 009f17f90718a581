//! Static-PIE ELF programs → [`EnclaveImage`], following the [layout convention](crate::layout).
//!
//! Accepted programs: 64-bit little-endian x86-64 ELF, either `ET_DYN` (a static PIE; every
//! `p_vaddr` is taken as an offset from the enclave base) or `ET_EXEC` whose lowest
//! `PT_LOAD` is at vaddr 0 (linked at 0, so again vaddr = offset). The rules:
//!
//! * Every page a `PT_LOAD` segment touches, `[p_vaddr & !0xFFF, align_up(p_vaddr + p_memsz))`,
//!   is added and measured. Its contents are the segment's file bytes at their vaddr, zero
//!   elsewhere (BSS and the page's head and tail); all-zero pages become [`PageData::Zero`].
//!   Pages between segments are holes. Segments with `p_memsz == 0` add nothing.
//! * Permissions come from `p_flags`: `PF_R`/`PF_W`/`PF_X` → SECINFO R/W/X, page type REG.
//!   A segment without any of them, or writable but not readable (the driver refuses W
//!   without R), is an error.
//! * Two segments may not share a page (a page has one SECINFO); `p_vaddr ≡ p_offset (mod
//!   4096)` is not required, since pages are assembled by copying.
//! * `p_filesz ≤ p_memsz`, and file ranges (of `PT_LOAD` and `PT_DYNAMIC`) lie inside the file.
//! * `e_entry` lies in a page of an executable segment; it becomes every TCS's OENTRY.
//! * The loader never relocates: MRENCLAVE cannot depend on the load address. By default a
//!   `PT_DYNAMIC` whose table has a non-empty `DT_RELA`, `DT_REL`, `DT_RELR` or `DT_JMPREL`
//!   table (a non-zero size tag, or an address tag without its size) is refused. A program
//!   that applies its own relative relocations when it first runs (as the enclave runtimes
//!   of Rust's SGX target and Intel's SDK do) is loaded with [`Layout::self_relocating`]:
//!   its relocations are then checked, not applied — see [`crate::relocations`]. A
//!   `PT_DYNAMIC` without relocations is always fine. `PT_INTERP` is refused.
//! * Segment ends are limited to [`MAX_IMAGE_END`], and the image must fit the layout's size.
//! * At most [`MAX_LOAD_SEGMENTS`] `PT_LOAD`s, whose `p_filesz` add up to at most the file
//!   length, and `p_align` 0, 1 or a power of two: the image's memory stays proportional to
//!   the file (a BSS of any size is one run of zero pages).
//!
//! Segments are named in errors by their index in the program header table (as `readelf -l`
//! numbers them). Malformed input gives an [`ImageError`], never a panic.

use object::LittleEndian;
use object::elf::{self, FileHeader64, ProgramHeader64};
use object::read::elf::{FileHeader, ProgramHeader};
use sgxemu_arch::{IntoBytes, PAGE_SIZE, PageType, SecinfoFlags};

use crate::image::{EnclaveImage, ImagePage, PageData};
use crate::layout::{Layout, LayoutError};
use crate::relocations::{DT_RELR, DT_RELRSZ, DynamicTags};

/// [`PAGE_SIZE`] as a `u64`.
const PAGE: u64 = PAGE_SIZE as u64;

/// The highest segment end accepted (64 GiB). A BSS costs one run in the image whatever its
/// size, but measuring it is a pass over every page, so a corrupt `p_memsz` is refused
/// rather than measured for hours.
pub const MAX_IMAGE_END: u64 = 1 << 36;

/// The most `PT_LOAD` segments accepted (programs have a handful). With the rule that the
/// segments' file bytes add up to at most the file, it bounds the image's pages of bytes to
/// the file's pages plus two per segment.
pub const MAX_LOAD_SEGMENTS: usize = 1024;

/// Size of the ELF64 file header.
const EHDR_SIZE: usize = 64;
/// Index of EI_CLASS in e_ident.
const EI_CLASS: usize = 4;
/// Index of EI_DATA in e_ident.
const EI_DATA: usize = 5;

/// Why an ELF file cannot become an enclave image.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    /// Fewer bytes than an ELF64 header.
    #[error("truncated ELF header: the file has {len} bytes, an ELF64 header needs 64")]
    TruncatedHeader {
        /// File length.
        len: usize,
    },
    /// The magic number is not `\x7fELF`.
    #[error("not an ELF file (magic {magic:02x?})")]
    NotElf {
        /// The first four bytes.
        magic: [u8; 4],
    },
    /// EI_CLASS is not ELFCLASS64.
    #[error("ELF class {class} is not ELFCLASS64 (2): enclaves are 64-bit programs")]
    Class {
        /// EI_CLASS.
        class: u8,
    },
    /// EI_DATA is not ELFDATA2LSB.
    #[error("ELF data encoding {data} is not little-endian (ELFDATA2LSB, 1)")]
    Endianness {
        /// EI_DATA.
        data: u8,
    },
    /// e_machine is not EM_X86_64.
    #[error("ELF machine {machine} is not x86-64 (EM_X86_64, 62)")]
    Machine {
        /// e_machine.
        machine: u16,
    },
    /// e_type is neither ET_DYN nor ET_EXEC.
    #[error("ELF type {e_type} is neither ET_DYN (3) nor ET_EXEC (2)")]
    FileType {
        /// e_type.
        e_type: u16,
    },
    /// The header or the program header table is malformed (bad version, table outside the
    /// file, wrong entry size).
    #[error("malformed ELF: {reason}")]
    Malformed {
        /// What the ELF reader found wrong.
        reason: String,
    },
    /// No `PT_LOAD` segment with a non-zero size.
    #[error("the ELF file has no PT_LOAD segment")]
    NoLoadSegments,
    /// An `ET_EXEC` program not linked at 0.
    #[error("ET_EXEC program's lowest PT_LOAD is at vaddr {vaddr:#x}; it must be linked at 0 (or be a static PIE)")]
    ExecNotAtZero {
        /// The lowest PT_LOAD vaddr.
        vaddr: u64,
    },
    /// The program asks for a dynamic loader.
    #[error("segment {index} is PT_INTERP: enclaves must be statically linked")]
    Interpreter {
        /// Program header index.
        index: usize,
    },
    /// `p_align` is neither 0, 1 nor a power of two.
    #[error("segment {index}: p_align {align:#x} is not a power of two")]
    BadAlignment {
        /// Program header index.
        index: usize,
        /// p_align.
        align: u64,
    },
    /// `p_filesz > p_memsz`.
    #[error("segment {index}: p_filesz {filesz:#x} exceeds p_memsz {memsz:#x}")]
    FileSizeExceedsMemSize {
        /// Program header index.
        index: usize,
        /// p_filesz.
        filesz: u64,
        /// p_memsz.
        memsz: u64,
    },
    /// The segment's file bytes are not all inside the file.
    #[error("segment {index}: file range {offset:#x}+{filesz:#x} is outside the {file_len:#x}-byte file")]
    FileRangeOutside {
        /// Program header index.
        index: usize,
        /// p_offset.
        offset: u64,
        /// p_filesz.
        filesz: u64,
        /// File length.
        file_len: u64,
    },
    /// The segment extends beyond [`MAX_IMAGE_END`] (or overflows).
    #[error("segment {index}: vaddr {vaddr:#x} + memsz {memsz:#x} goes beyond {MAX_IMAGE_END:#x}")]
    SegmentTooLarge {
        /// Program header index.
        index: usize,
        /// p_vaddr.
        vaddr: u64,
        /// p_memsz.
        memsz: u64,
    },
    /// More `PT_LOAD` segments than [`MAX_LOAD_SEGMENTS`].
    #[error("{count} PT_LOAD segments; at most {MAX_LOAD_SEGMENTS} are accepted")]
    TooManySegments {
        /// PT_LOAD segments with a non-zero size.
        count: usize,
    },
    /// The segments' file bytes add up to more than the file: segments map the same bytes.
    #[error("the PT_LOAD segments map {total:#x} file bytes, more than the file's {file_len:#x}")]
    FileBytesMappedTwice {
        /// Sum of p_filesz.
        total: u64,
        /// File length.
        file_len: u64,
    },
    /// A segment with none of PF_R, PF_W, PF_X.
    #[error("segment {index} has no permission bits (p_flags {flags:#x})")]
    NoPermissions {
        /// Program header index.
        index: usize,
        /// p_flags.
        flags: u32,
    },
    /// A writable segment that is not readable.
    #[error(
        "segment {index} is writable but not readable (p_flags {flags:#x}); SGX_IOC_ENCLAVE_ADD_PAGES refuses W without R"
    )]
    WriteWithoutRead {
        /// Program header index.
        index: usize,
        /// p_flags.
        flags: u32,
    },
    /// Two segments share a page.
    #[error("segments {first} and {second} overlap at page {page:#x}")]
    Overlap {
        /// Program header index of the lower segment.
        first: usize,
        /// Program header index of the higher segment.
        second: usize,
        /// The first shared page.
        page: u64,
    },
    /// `e_entry` is not in a page of an executable segment.
    #[error("entry point {entry:#x} is not inside an executable segment's pages")]
    EntryNotExecutable {
        /// e_entry.
        entry: u64,
    },
    /// `PT_DYNAMIC` has load-time relocations and the layout does not say the program
    /// applies them itself.
    #[error(
        "the program has load-time relocations ({tag} = {value:#x} in PT_DYNAMIC), which the loader does not apply \
         (MRENCLAVE cannot depend on the load address): link the enclave so it needs none, or, if it applies its \
         own relative relocations at startup, load it as self-relocating (--self-relocating)"
    )]
    Relocations {
        /// The dynamic tag that shows them.
        tag: &'static str,
        /// Its value.
        value: u64,
    },
    /// A relocation table a self-relocating program could not apply to itself.
    #[error("{0}")]
    SelfRelocation(#[from] crate::relocations::RelocationError),
    /// The layout cannot be applied (validation, or the image does not fit the size).
    #[error(transparent)]
    Layout(#[from] LayoutError),
}

/// Result alias for this module.
pub type Result<T> = std::result::Result<T, ImageError>;

/// One PT_LOAD segment, checked.
#[derive(Clone, Copy, Debug)]
struct Segment {
    index: usize,
    vaddr: u64,
    memsz: u64,
    offset: u64,
    filesz: u64,
    perms: SecinfoFlags,
    /// First page, page aligned.
    page_start: u64,
    /// End of the last page, page aligned.
    page_end: u64,
}

/// Dynamic tags that give a relocation table, with the size tag that says how big it is.
const RELOCATION_TAGS: [(i64, &str, i64, &str); 4] = [
    (elf::DT_RELA as i64, "DT_RELA", elf::DT_RELASZ as i64, "DT_RELASZ"),
    (elf::DT_REL as i64, "DT_REL", elf::DT_RELSZ as i64, "DT_RELSZ"),
    (DT_RELR, "DT_RELR", DT_RELRSZ, "DT_RELRSZ"),
    (elf::DT_JMPREL as i64, "DT_JMPREL", elf::DT_PLTRELSZ as i64, "DT_PLTRELSZ"),
];

/// Builds the enclave image of a static-PIE ELF program laid out by `layout`: the program's
/// pages, then the threads, heap and dynamic room of the [layout convention](crate::layout).
pub fn image_from_elf(bytes: &[u8], layout: &Layout) -> Result<EnclaveImage> {
    layout.validate()?;
    let Parsed { entry, segments, dynamic } = parse(bytes)?;
    if let Some(table) = dynamic {
        let tags = DynamicTags::parse(table);
        if layout.self_relocating {
            let spans: Vec<_> = segments.iter().map(Segment::span).collect();
            crate::relocations::check(bytes, &tags, &spans)?;
        } else {
            refuse_relocations(&tags)?;
        }
    }

    let image_end = segments.iter().map(|s| s.page_end).max().unwrap_or(0);
    let plan = layout.plan(image_end)?;

    let mut pages = Vec::new();
    for seg in &segments {
        add_segment_pages(bytes, seg, &mut pages);
    }

    let rw = (SecinfoFlags::R | SecinfoFlags::W).with_page_type(PageType::Reg);
    let zero_pages = |pages: &mut Vec<ImagePage>, start: u64, count: u64, measured: bool| {
        EnclaveImage::push_page(pages, ImagePage::zeros(start, count, rw, measured));
    };
    for thread in &plan.threads {
        zero_pages(&mut pages, thread.stack_bottom, (thread.tcs - thread.stack_bottom) / PAGE, true);
        debug_assert_eq!(thread.ssa, thread.tcs + PAGE, "the SSA frames follow the TCS");
        let tcs = crate::layout::thread_tcs(thread.tcs, layout.nssa, entry);
        let mut page = [0u8; PAGE_SIZE];
        page.copy_from_slice(tcs.as_bytes());
        let tcs_page =
            ImagePage::single(thread.tcs, SecinfoFlags::from(PageType::Tcs), PageData::from_page(&page), true);
        EnclaveImage::push_page(&mut pages, tcs_page);
        zero_pages(&mut pages, thread.ssa, (thread.end - thread.ssa) / PAGE, true);
    }
    zero_pages(&mut pages, plan.heap_start, (plan.dynamic_start - plan.heap_start) / PAGE, layout.measure_heap);

    Ok(EnclaveImage {
        size: plan.size,
        ssaframesize: layout.ssaframesize,
        attributes: layout.effective_attributes(),
        miscselect: layout.miscselect,
        pages,
        tcs: plan.threads.iter().map(|t| t.tcs).collect(),
        dynamic_start: plan.dynamic_start,
    })
}

/// What [`parse`] finds in a well-formed file.
struct Parsed<'f> {
    /// e_entry.
    entry: u64,
    /// The PT_LOAD segments, sorted by address.
    segments: Vec<Segment>,
    /// The `PT_DYNAMIC` table's bytes, if there is one.
    dynamic: Option<&'f [u8]>,
}

/// Checks the ELF header and program headers.
fn parse(bytes: &[u8]) -> Result<Parsed<'_>> {
    if bytes.len() < EHDR_SIZE {
        return Err(ImageError::TruncatedHeader { len: bytes.len() });
    }
    let magic = [bytes[0], bytes[1], bytes[2], bytes[3]];
    if magic != elf::ELFMAG {
        return Err(ImageError::NotElf { magic });
    }
    if bytes[EI_CLASS] != elf::ELFCLASS64 {
        return Err(ImageError::Class { class: bytes[EI_CLASS] });
    }
    if bytes[EI_DATA] != elf::ELFDATA2LSB {
        return Err(ImageError::Endianness { data: bytes[EI_DATA] });
    }

    // The reader's ELF structs want 8-byte alignment unless `object` is built with its
    // `unaligned` feature; copy a misaligned input once.
    let storage: Vec<u64>;
    let data: &[u8] = if bytes.as_ptr().align_offset(8) == 0 {
        bytes
    } else {
        let mut words = vec![0u64; bytes.len().div_ceil(8)];
        words.as_mut_bytes()[..bytes.len()].copy_from_slice(bytes);
        storage = words;
        &storage.as_bytes()[..bytes.len()]
    };
    let malformed = |e: object::read::Error| ImageError::Malformed { reason: e.to_string() };
    let header = FileHeader64::<LittleEndian>::parse(data).map_err(malformed)?;
    let endian = LittleEndian;
    let machine = header.e_machine(endian);
    if machine != elf::EM_X86_64 {
        return Err(ImageError::Machine { machine });
    }
    let e_type = header.e_type(endian);
    if e_type != elf::ET_DYN && e_type != elf::ET_EXEC {
        return Err(ImageError::FileType { e_type });
    }
    let entry = header.e_entry(endian);
    let phdrs: &[ProgramHeader64<LittleEndian>] = header.program_headers(endian, data).map_err(malformed)?;

    let file_len = bytes.len() as u64;
    let mut segments = Vec::new();
    let mut dynamic = None;
    for (index, ph) in phdrs.iter().enumerate() {
        let p_type = ph.p_type(endian);
        let (offset, filesz) = (ph.p_offset(endian), ph.p_filesz(endian));
        let in_file = offset.checked_add(filesz).is_some_and(|end| end <= file_len);
        match p_type {
            elf::PT_INTERP => return Err(ImageError::Interpreter { index }),
            elf::PT_DYNAMIC => {
                if !in_file {
                    return Err(ImageError::FileRangeOutside { index, offset, filesz, file_len });
                }
                // In range: offset + filesz ≤ file_len, which is a usize.
                dynamic = Some(&bytes[offset as usize..(offset + filesz) as usize]);
            }
            elf::PT_LOAD => {
                let (vaddr, memsz, flags) = (ph.p_vaddr(endian), ph.p_memsz(endian), ph.p_flags(endian));
                if memsz == 0 {
                    continue;
                }
                // The ELF specification: 0 and 1 mean no alignment, anything else is a
                // power of two. Another value is a corrupt header, not a layout choice.
                let align = ph.p_align(endian);
                if align > 1 && !align.is_power_of_two() {
                    return Err(ImageError::BadAlignment { index, align });
                }
                if filesz > memsz {
                    return Err(ImageError::FileSizeExceedsMemSize { index, filesz, memsz });
                }
                if !in_file {
                    return Err(ImageError::FileRangeOutside { index, offset, filesz, file_len });
                }
                let end = vaddr.checked_add(memsz).filter(|&e| e <= MAX_IMAGE_END);
                let Some(end) = end else {
                    return Err(ImageError::SegmentTooLarge { index, vaddr, memsz });
                };
                let mut perms = SecinfoFlags::empty();
                for (pf, bit) in
                    [(elf::PF_R, SecinfoFlags::R), (elf::PF_W, SecinfoFlags::W), (elf::PF_X, SecinfoFlags::X)]
                {
                    if flags & pf != 0 {
                        perms |= bit;
                    }
                }
                if perms.is_empty() {
                    return Err(ImageError::NoPermissions { index, flags });
                }
                if perms.contains(SecinfoFlags::W) && !perms.contains(SecinfoFlags::R) {
                    return Err(ImageError::WriteWithoutRead { index, flags });
                }
                segments.push(Segment {
                    index,
                    vaddr,
                    memsz,
                    offset,
                    filesz,
                    perms,
                    page_start: vaddr & !(PAGE - 1),
                    // end ≤ MAX_IMAGE_END, so rounding up cannot overflow.
                    page_end: (end + PAGE - 1) & !(PAGE - 1),
                });
            }
            _ => {}
        }
    }
    if segments.is_empty() {
        return Err(ImageError::NoLoadSegments);
    }
    // The image copies each segment's file bytes into pages of their own. Without these
    // bounds a small file could make it hold far more than the file: thousands of one-page
    // segments, or many segments mapping the same bytes.
    if segments.len() > MAX_LOAD_SEGMENTS {
        return Err(ImageError::TooManySegments { count: segments.len() });
    }
    let total = segments.iter().map(|s| s.filesz).fold(0u64, u64::saturating_add);
    if total > file_len {
        return Err(ImageError::FileBytesMappedTwice { total, file_len });
    }
    segments.sort_by_key(|s| (s.page_start, s.index));
    if e_type == elf::ET_EXEC && segments[0].vaddr != 0 {
        return Err(ImageError::ExecNotAtZero { vaddr: segments[0].vaddr });
    }
    // Sorted by first page: a segment overlaps an earlier one iff it starts below the
    // highest end seen so far.
    let mut reach = (segments[0].page_end, segments[0].index);
    for seg in &segments[1..] {
        if seg.page_start < reach.0 {
            return Err(ImageError::Overlap { first: reach.1, second: seg.index, page: seg.page_start });
        }
        reach = (seg.page_end, seg.index);
    }
    let executable = |s: &Segment| s.perms.contains(SecinfoFlags::X) && (s.page_start..s.page_end).contains(&entry);
    if !segments.iter().any(executable) {
        return Err(ImageError::EntryNotExecutable { entry });
    }
    Ok(Parsed { entry, segments, dynamic })
}

/// Refuses a dynamic table that asks for load-time relocations.
fn refuse_relocations(tags: &DynamicTags) -> Result<()> {
    for (addr_tag, addr_name, size_tag, size_name) in RELOCATION_TAGS {
        match (tags.value(addr_tag), tags.value(size_tag)) {
            (_, Some(size)) if size != 0 => return Err(ImageError::Relocations { tag: size_name, value: size }),
            (Some(addr), None) if addr != 0 => return Err(ImageError::Relocations { tag: addr_name, value: addr }),
            _ => {}
        }
    }
    Ok(())
}

impl Segment {
    /// What the relocation checks need to know of the segment.
    fn span(&self) -> crate::relocations::Span {
        crate::relocations::Span {
            index: self.index,
            vaddr: self.vaddr,
            memsz: self.memsz,
            offset: self.offset,
            filesz: self.filesz,
            writable: self.perms.contains(SecinfoFlags::W),
        }
    }
}

/// Appends the pages of one checked segment: file bytes at their vaddr, zeros elsewhere.
/// The pages past the file bytes (a BSS) are one run of zero pages, whatever their number.
fn add_segment_pages(bytes: &[u8], seg: &Segment, pages: &mut Vec<ImagePage>) {
    let flags = seg.perms.with_page_type(PageType::Reg);
    // Checked in `parse`: the file range is inside `bytes`.
    let file = &bytes[seg.offset as usize..(seg.offset + seg.filesz) as usize];
    let (file_start, file_end) = (seg.vaddr, seg.vaddr + seg.filesz);
    debug_assert!(seg.filesz <= seg.memsz);
    // First page holding no file byte: from there on, zeros only.
    let zeros_from = ((file_end + PAGE - 1) & !(PAGE - 1)).clamp(seg.page_start, seg.page_end);
    let mut page = seg.page_start;
    while page < zeros_from {
        let lo = page.max(file_start);
        let hi = (page + PAGE).min(file_end);
        let data = if lo < hi {
            let mut buf = [0u8; PAGE_SIZE];
            let src = &file[(lo - file_start) as usize..(hi - file_start) as usize];
            buf[(lo - page) as usize..(hi - page) as usize].copy_from_slice(src);
            PageData::from_page(&buf)
        } else {
            PageData::Zero
        };
        EnclaveImage::push_page(pages, ImagePage::single(page, flags, data, true));
        page += PAGE;
    }
    EnclaveImage::push_page(pages, ImagePage::zeros(zeros_from, (seg.page_end - zeros_from) / PAGE, flags, true));
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::layout::MIN_AUTO_SIZE;
    use sgxemu_arch::FromBytes;
    use sgxemu_arch::Tcs;
    use sha2::{Digest, Sha256};

    /// One raw program header, every field settable (to craft bad files).
    #[derive(Clone, Copy, Debug)]
    pub(crate) struct Phdr {
        pub p_type: u32,
        pub p_flags: u32,
        pub p_offset: u64,
        pub p_vaddr: u64,
        pub p_filesz: u64,
        pub p_memsz: u64,
    }

    /// A tiny ELF64 writer: header at 0, program headers at 64, segment bytes from
    /// [`TestElf::BODY`] on.
    #[derive(Clone, Debug)]
    pub(crate) struct TestElf {
        pub class: u8,
        pub data: u8,
        pub e_type: u16,
        pub machine: u16,
        pub entry: u64,
        pub phdrs: Vec<Phdr>,
        pub body: Vec<u8>,
    }

    impl TestElf {
        /// File offset of the segment bytes.
        pub const BODY: u64 = 0x1000;

        pub fn new() -> Self {
            TestElf {
                class: 2,
                data: 1,
                e_type: elf::ET_DYN,
                machine: elf::EM_X86_64,
                entry: 0,
                phdrs: Vec::new(),
                body: Vec::new(),
            }
        }

        /// Appends `bytes` to the body and a header for them; returns the header's index.
        pub fn segment(&mut self, p_type: u32, p_flags: u32, vaddr: u64, bytes: &[u8], memsz: u64) -> usize {
            while !self.body.len().is_multiple_of(16) {
                self.body.push(0);
            }
            let p_offset = Self::BODY + self.body.len() as u64;
            self.body.extend_from_slice(bytes);
            self.phdrs.push(Phdr {
                p_type,
                p_flags,
                p_offset,
                p_vaddr: vaddr,
                p_filesz: bytes.len() as u64,
                p_memsz: memsz,
            });
            self.phdrs.len() - 1
        }

        pub fn load(&mut self, p_flags: u32, vaddr: u64, bytes: &[u8], memsz: u64) -> usize {
            self.segment(elf::PT_LOAD, p_flags, vaddr, bytes, memsz)
        }

        pub fn build(&self) -> Vec<u8> {
            let mut out = vec![0u8; Self::BODY as usize];
            out[..4].copy_from_slice(&elf::ELFMAG);
            out[4] = self.class;
            out[5] = self.data;
            out[6] = elf::EV_CURRENT;
            out[16..18].copy_from_slice(&self.e_type.to_le_bytes());
            out[18..20].copy_from_slice(&self.machine.to_le_bytes());
            out[20..24].copy_from_slice(&1u32.to_le_bytes());
            out[24..32].copy_from_slice(&self.entry.to_le_bytes());
            out[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
            out[52..54].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
            out[54..56].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
            out[56..58].copy_from_slice(&(self.phdrs.len() as u16).to_le_bytes());
            for (i, p) in self.phdrs.iter().enumerate() {
                let h = &mut out[64 + 56 * i..64 + 56 * (i + 1)];
                h[0..4].copy_from_slice(&p.p_type.to_le_bytes());
                h[4..8].copy_from_slice(&p.p_flags.to_le_bytes());
                h[8..16].copy_from_slice(&p.p_offset.to_le_bytes());
                h[16..24].copy_from_slice(&p.p_vaddr.to_le_bytes());
                h[24..32].copy_from_slice(&p.p_vaddr.to_le_bytes()); // p_paddr
                h[32..40].copy_from_slice(&p.p_filesz.to_le_bytes());
                h[40..48].copy_from_slice(&p.p_memsz.to_le_bytes());
                h[48..56].copy_from_slice(&PAGE.to_le_bytes());
            }
            out.extend_from_slice(&self.body);
            out
        }
    }

    const R: u32 = elf::PF_R;
    const RW: u32 = elf::PF_R | elf::PF_W;
    const RX: u32 = elf::PF_R | elf::PF_X;

    pub(crate) fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len).map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed) | 1).collect()
    }

    /// A static PIE: R at 0 (0x100 bytes), RX at 0x1000 (0x1800 bytes, entry 0x1010),
    /// RW at 0x3000 (0x10 bytes of data, 0x3000 bytes in memory), PT_DYNAMIC without
    /// relocations, PT_GNU_STACK.
    pub(crate) fn sample_elf() -> TestElf {
        let mut e = TestElf::new();
        e.load(R, 0, &pattern(0x100, 1), 0x100);
        e.load(RX, 0x1000, &pattern(0x1800, 2), 0x1800);
        e.load(RW, 0x3000, &pattern(0x10, 3), 0x3000);
        let mut dynamic = Vec::new();
        for (tag, val) in [(0x6fff_fffbu64, 0x0800_0001u64), (elf::DT_RELASZ as u64, 0), (0, 0)] {
            dynamic.extend_from_slice(&tag.to_le_bytes());
            dynamic.extend_from_slice(&val.to_le_bytes());
        }
        e.segment(elf::PT_DYNAMIC, RW, 0x3000, &dynamic, dynamic.len() as u64);
        e.segment(elf::PT_GNU_STACK, RW, 0, &[], 0);
        e.entry = 0x1010;
        e
    }

    fn page_of(bytes: &[u8], at: usize) -> Vec<u8> {
        let mut p = vec![0u8; PAGE_SIZE];
        p[at..at + bytes.len()].copy_from_slice(bytes);
        p
    }

    /// The independent MRENCLAVE: hash the record stream of spec §9.1 by hand.
    pub(crate) fn hash_records(size: u64, ssaframesize: u32, pages: &[(u64, u64, Vec<u8>, bool)]) -> [u8; 32] {
        let mut h = Sha256::new();
        let mut rec = [0u8; 64];
        rec[..8].copy_from_slice(b"ECREATE\0");
        rec[8..12].copy_from_slice(&ssaframesize.to_le_bytes());
        rec[12..20].copy_from_slice(&size.to_le_bytes());
        h.update(rec);
        for (offset, flags, data, measured) in pages {
            let mut rec = [0u8; 64];
            rec[..8].copy_from_slice(b"EADD\0\0\0\0");
            rec[8..16].copy_from_slice(&offset.to_le_bytes());
            rec[16..24].copy_from_slice(&flags.to_le_bytes());
            h.update(rec);
            if *measured {
                for c in 0..16 {
                    let mut rec = [0u8; 64];
                    rec[..8].copy_from_slice(b"EEXTEND\0");
                    rec[8..16].copy_from_slice(&(offset + 256 * c as u64).to_le_bytes());
                    h.update(rec);
                    h.update(&data[256 * c..256 * (c + 1)]);
                }
            }
        }
        h.finalize().into()
    }

    #[test]
    fn static_pie_becomes_the_documented_layout() {
        let image = image_from_elf(&sample_elf().build(), &Layout::default()).unwrap();
        let zero = vec![0u8; PAGE_SIZE];
        let tcs_page = |tcs: u64| {
            let mut p = vec![0u8; PAGE_SIZE];
            p[16..24].copy_from_slice(&(tcs + 0x1000).to_le_bytes()); // OSSA
            p[28..32].copy_from_slice(&2u32.to_le_bytes()); // NSSA
            p[32..40].copy_from_slice(&0x1010u64.to_le_bytes()); // OENTRY
            p[64..72].copy_from_slice(&[0xFF; 8]); // FSLIMIT, GSLIMIT
            p
        };
        // Expected pages, written out from the module docs of `layout`.
        let mut want: Vec<(u64, u64, Vec<u8>, bool)> = vec![
            (0x0, 0x201, page_of(&pattern(0x100, 1), 0), true),
            (0x1000, 0x205, pattern(0x1800, 2)[..0x1000].to_vec(), true),
            (0x2000, 0x205, page_of(&pattern(0x1800, 2)[0x1000..], 0), true),
            (0x3000, 0x203, page_of(&pattern(0x10, 3), 0), true),
            (0x4000, 0x203, zero.clone(), true),
            (0x5000, 0x203, zero.clone(), true),
        ];
        // Thread 0: guard hole 0x6000, stack 0x7000..0x17000, TCS 0x17000, SSA 0x18000..0x1a000.
        // Thread 1: guard hole 0x1a000, stack 0x1b000..0x2b000, TCS 0x2b000, SSA 0x2c000..0x2e000.
        for (stack, tcs) in [(0x7000u64, 0x17000u64), (0x1b000, 0x2b000)] {
            for p in 0..16 {
                want.push((stack + p * 0x1000, 0x203, zero.clone(), true));
            }
            want.push((tcs, 0x100, tcs_page(tcs), true));
            want.push((tcs + 0x1000, 0x203, zero.clone(), true));
            want.push((tcs + 0x2000, 0x203, zero.clone(), true));
        }
        // Heap guard hole 0x2e000, heap 0x2f000.., unmeasured.
        for p in 0..256 {
            want.push((0x2f000 + p * 0x1000, 0x203, zero.clone(), false));
        }
        let got: Vec<(u64, u64, Vec<u8>, bool)> = image
            .pages
            .iter()
            .flat_map(|p| p.offsets().map(move |o| (o, p.flags.bits(), p.data.bytes().to_vec(), p.measured)))
            .collect();
        // Runs, not pages: the stacks, SSA frames, the heap and the segment's zero tail.
        assert_eq!(image.pages.len(), 5 + 2 * 3 + 1);
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(g, w, "page {:#x}", w.0);
        }
        for hole in [0x6000, 0x1a000, 0x2e000] {
            assert!(image.page(hole).is_none(), "guard {hole:#x}");
        }
        assert_eq!(image.tcs, vec![0x17000, 0x2b000]);
        assert_eq!(image.dynamic_start, 0x2f000 + 0x100000);
        assert_eq!(image.size, MIN_AUTO_SIZE);
        assert_eq!(image.ssaframesize, 1);
        assert_eq!(image.attributes, Layout::default().attributes);
        assert_eq!(image.miscselect, 0);
        // All-zero pages are stored as Zero, others as bytes.
        assert_eq!(image.page(0x4000).unwrap().data, PageData::Zero);
        assert!(matches!(image.page(0x3000).unwrap().data, PageData::Bytes(_)));
        // The TCS parses back as the architectural structure.
        let tcs = Tcs::read_from_bytes(&image.page(0x2b000).unwrap().data.bytes()[..]).unwrap();
        assert_eq!((tcs.ossa, tcs.nssa, tcs.oentry, tcs.ofsbase, tcs.ogsbase), (0x2c000, 2, 0x1010, 0, 0));
        assert_eq!((tcs.fslimit, tcs.gslimit, tcs.flags, tcs.cssa), (0xFFFF_FFFF, 0xFFFF_FFFF, 0, 0));
        // MRENCLAVE equals the hand-hashed record stream.
        assert_eq!(image.mrenclave(), hash_records(MIN_AUTO_SIZE, 1, &want));
    }

    #[test]
    fn layout_options_change_the_image() {
        let elf = sample_elf().build();
        let base = image_from_elf(&elf, &Layout::default()).unwrap();
        let measured = image_from_elf(&elf, &Layout { measure_heap: true, ..Layout::default() }).unwrap();
        assert!(measured.pages.iter().all(|p| p.measured));
        assert_ne!(measured.mrenclave(), base.mrenclave());

        let l = Layout {
            threads: 1,
            stack_pages: 2,
            nssa: 1,
            ssaframesize: 2,
            heap_pages: 3,
            size: Some(0x80_0000),
            debug: true,
            miscselect: 1,
            ..Layout::default()
        };
        let img = image_from_elf(&elf, &l).unwrap();
        // guard 0x6000, stack 0x7000..0x9000, TCS 0x9000, SSA 0xa000..0xc000, guard 0xc000,
        // heap 0xd000..0x10000.
        let offsets: Vec<u64> = img.pages.iter().flat_map(ImagePage::offsets).skip(6).collect();
        assert_eq!(offsets, vec![0x7000, 0x8000, 0x9000, 0xa000, 0xb000, 0xd000, 0xe000, 0xf000]);
        assert_eq!(img.tcs, vec![0x9000]);
        assert_eq!(img.dynamic_start, 0x10000);
        assert_eq!((img.size, img.ssaframesize, img.miscselect), (0x80_0000, 2, 1));
        assert_eq!(img.attributes, l.effective_attributes());
        let tcs = Tcs::read_from_bytes(&img.page(0x9000).unwrap().data.bytes()[..]).unwrap();
        assert_eq!((tcs.ossa, tcs.nssa), (0xa000, 1));
        assert_ne!(img.mrenclave(), base.mrenclave());
    }

    #[test]
    fn exec_linked_at_zero_and_dyn_with_a_hole_are_accepted() {
        let mut e = sample_elf();
        e.e_type = elf::ET_EXEC;
        let exec = image_from_elf(&e.build(), &Layout::default()).unwrap();
        assert_eq!(exec, image_from_elf(&sample_elf().build(), &Layout::default()).unwrap());

        // A static PIE whose first segment is at 0x2000, unaligned vaddr and offset.
        let mut e = TestElf::new();
        e.load(RX, 0x2010, &pattern(0x20, 9), 0x20);
        e.entry = 0x2010;
        let img = image_from_elf(&e.build(), &Layout { threads: 1, heap_pages: 0, ..Layout::default() }).unwrap();
        assert!(img.page(0).is_none() && img.page(0x1000).is_none());
        let first = img.page(0x2000).unwrap();
        assert_eq!(&first.data.bytes()[0x10..0x30], &pattern(0x20, 9)[..]);
        assert!(first.data.bytes()[..0x10].iter().all(|&b| b == 0));
        assert!(first.data.bytes()[0x30..].iter().all(|&b| b == 0));
        assert_eq!(img.tcs, vec![0x3000 + 0x1000 + 16 * 0x1000]);
    }

    #[test]
    fn misaligned_input_is_copied_not_refused() {
        let elf = sample_elf().build();
        let mut shifted = vec![0u8; elf.len() + 1];
        shifted[1..].copy_from_slice(&elf);
        let a = image_from_elf(&shifted[1..], &Layout::default()).unwrap();
        assert_eq!(a, image_from_elf(&elf, &Layout::default()).unwrap());
    }

    fn err(e: &TestElf) -> ImageError {
        image_from_elf(&e.build(), &Layout::default()).unwrap_err()
    }

    #[test]
    fn bad_headers() {
        let good = sample_elf().build();
        assert_eq!(image_from_elf(&good[..40], &Layout::default()), Err(ImageError::TruncatedHeader { len: 40 }));
        assert_eq!(image_from_elf(&[], &Layout::default()), Err(ImageError::TruncatedHeader { len: 0 }));
        let mut bad = good.clone();
        bad[0] = b'M';
        assert_eq!(image_from_elf(&bad, &Layout::default()), Err(ImageError::NotElf { magic: *b"MELF" }));

        let mut e = sample_elf();
        e.class = 1;
        assert_eq!(err(&e), ImageError::Class { class: 1 });
        let mut e = sample_elf();
        e.data = 2;
        assert_eq!(err(&e), ImageError::Endianness { data: 2 });
        let mut e = sample_elf();
        e.machine = 3;
        assert_eq!(err(&e), ImageError::Machine { machine: 3 });
        let mut e = sample_elf();
        e.e_type = elf::ET_REL;
        assert_eq!(err(&e), ImageError::FileType { e_type: 1 });

        // Program headers cut off by the end of the file.
        let cut = &good[..64 + 56 + 10];
        assert!(matches!(image_from_elf(cut, &Layout::default()), Err(ImageError::Malformed { .. })));
        // Wrong program header entry size.
        let mut bad = good.clone();
        bad[54] = 55;
        assert!(matches!(image_from_elf(&bad, &Layout::default()), Err(ImageError::Malformed { .. })));
        // Bad EI_VERSION.
        let mut bad = good;
        bad[6] = 9;
        assert!(matches!(image_from_elf(&bad, &Layout::default()), Err(ImageError::Malformed { .. })));
    }

    #[test]
    fn exec_not_at_zero() {
        let mut e = TestElf::new();
        e.e_type = elf::ET_EXEC;
        e.load(RX, 0x40_0000, &pattern(0x10, 0), 0x10);
        e.entry = 0x40_0000;
        assert_eq!(err(&e), ImageError::ExecNotAtZero { vaddr: 0x40_0000 });
    }

    #[test]
    fn no_load_segments() {
        let mut e = TestElf::new();
        e.segment(elf::PT_GNU_STACK, RW, 0, &[], 0);
        e.load(RX, 0, &[], 0); // memsz 0: ignored
        assert_eq!(err(&e), ImageError::NoLoadSegments);
    }

    #[test]
    fn overlapping_segments() {
        let mut e = sample_elf();
        // RW moved into the last page of RX (0x2000..0x3000).
        e.phdrs[2].p_vaddr = 0x2900;
        assert_eq!(err(&e), ImageError::Overlap { first: 1, second: 2, page: 0x2000 });
        assert_eq!(
            ImageError::Overlap { first: 1, second: 2, page: 0x3000 }.to_string(),
            "segments 1 and 2 overlap at page 0x3000"
        );
        // A big segment covering a later, non-adjacent one is caught too.
        let mut e = sample_elf();
        e.phdrs[0].p_memsz = 0x5000;
        assert_eq!(err(&e), ImageError::Overlap { first: 0, second: 1, page: 0x1000 });
        let mut e = sample_elf();
        e.phdrs[0].p_memsz = 0x4000;
        e.phdrs[0].p_vaddr = 0x3000;
        assert_eq!(err(&e), ImageError::Overlap { first: 0, second: 2, page: 0x3000 });
    }

    #[test]
    fn segment_size_errors() {
        let mut e = sample_elf();
        e.phdrs[2].p_memsz = 0x8;
        assert_eq!(err(&e), ImageError::FileSizeExceedsMemSize { index: 2, filesz: 0x10, memsz: 0x8 });

        let mut e = sample_elf();
        let len = e.build().len() as u64;
        e.phdrs[1].p_filesz = len;
        e.phdrs[1].p_memsz = len;
        let offset = e.phdrs[1].p_offset;
        assert_eq!(err(&e), ImageError::FileRangeOutside { index: 1, offset, filesz: len, file_len: len });
        let mut e = sample_elf();
        e.phdrs[0].p_offset = u64::MAX - 4;
        assert!(matches!(err(&e), ImageError::FileRangeOutside { index: 0, .. }));
        let mut e = sample_elf();
        e.phdrs[3].p_offset = len;
        assert!(matches!(err(&e), ImageError::FileRangeOutside { index: 3, .. }));

        let mut e = sample_elf();
        e.phdrs[2].p_memsz = MAX_IMAGE_END;
        assert_eq!(err(&e), ImageError::SegmentTooLarge { index: 2, vaddr: 0x3000, memsz: MAX_IMAGE_END });
        let mut e = sample_elf();
        e.phdrs[2].p_vaddr = u64::MAX - 0x100;
        assert!(matches!(err(&e), ImageError::SegmentTooLarge { index: 2, .. }));
    }

    #[test]
    fn permission_errors() {
        let mut e = sample_elf();
        e.phdrs[0].p_flags = 0;
        assert_eq!(err(&e), ImageError::NoPermissions { index: 0, flags: 0 });
        let mut e = sample_elf();
        e.phdrs[2].p_flags = elf::PF_W;
        assert_eq!(err(&e), ImageError::WriteWithoutRead { index: 2, flags: elf::PF_W });
        // X only is allowed (execute-only code).
        let mut e = sample_elf();
        e.phdrs[1].p_flags = elf::PF_X;
        let img = image_from_elf(&e.build(), &Layout::default()).unwrap();
        assert_eq!(img.page(0x1000).unwrap().flags.bits(), 0x204);
    }

    #[test]
    fn entry_must_be_executable() {
        for entry in [0x10, 0x3000, 0x5ff0, 0x6000, u64::MAX] {
            let mut e = sample_elf();
            e.entry = entry;
            assert_eq!(err(&e), ImageError::EntryNotExecutable { entry });
        }
        // Anywhere in the RX segment's pages is fine, even past p_memsz in its last page.
        let mut e = sample_elf();
        e.entry = 0x2fff;
        assert!(image_from_elf(&e.build(), &Layout::default()).is_ok());
    }

    /// The bytes of a dynamic table of (tag, value) `entries`.
    fn dynamic_table(entries: &[(u64, u64)]) -> Vec<u8> {
        entries.iter().flat_map(|(tag, val)| [tag.to_le_bytes(), val.to_le_bytes()]).flatten().collect()
    }

    fn with_dynamic(entries: &[(u64, u64)]) -> TestElf {
        let mut e = sample_elf();
        let table = dynamic_table(entries);
        e.phdrs.pop(); // PT_GNU_STACK
        e.phdrs.pop(); // the relocation-free PT_DYNAMIC
        e.segment(elf::PT_DYNAMIC, RW, 0x3000, &table, table.len() as u64);
        e
    }

    #[test]
    fn relocations_are_refused() {
        let rela = elf::DT_RELA as u64;
        let relasz = elf::DT_RELASZ as u64;
        assert_eq!(
            err(&with_dynamic(&[(rela, 0x3000), (relasz, 0x30), (0, 0)])),
            ImageError::Relocations { tag: "DT_RELASZ", value: 0x30 }
        );
        assert_eq!(
            err(&with_dynamic(&[(elf::DT_REL as u64, 0x3000), (0, 0)])),
            ImageError::Relocations { tag: "DT_REL", value: 0x3000 }
        );
        assert_eq!(
            err(&with_dynamic(&[(DT_RELRSZ as u64, 8)])),
            ImageError::Relocations { tag: "DT_RELRSZ", value: 8 }
        );
        assert_eq!(
            err(&with_dynamic(&[(elf::DT_JMPREL as u64, 0x3000), (elf::DT_PLTRELSZ as u64, 24), (0, 0)])),
            ImageError::Relocations { tag: "DT_PLTRELSZ", value: 24 }
        );
        // Empty tables and entries after DT_NULL are fine.
        let ok = with_dynamic(&[(rela, 0x3000), (relasz, 0), (0, 0), (relasz, 0x30)]);
        assert!(image_from_elf(&ok.build(), &Layout::default()).is_ok());
        assert!(image_from_elf(&with_dynamic(&[]).build(), &Layout::default()).is_ok());
    }

    /// The sample, with its RW segment holding 0x100 bytes of data and then a DT_RELA table
    /// of `rela` (r_offset, r_info, r_addend) at 0x3100, described by `tags` + DT_RELA/SZ.
    fn with_rela(rela: &[(u64, u64, i64)], tags: &[(u64, u64)]) -> TestElf {
        let mut e = sample_elf();
        let mut rw = pattern(0x100, 3);
        for (offset, info, addend) in rela {
            rw.extend_from_slice(&offset.to_le_bytes());
            rw.extend_from_slice(&info.to_le_bytes());
            rw.extend_from_slice(&addend.to_le_bytes());
        }
        e.phdrs.remove(2);
        e.load(RW, 0x3000, &rw, 0x3000);
        let size = 24 * rela.len() as u64;
        let mut entries = vec![(elf::DT_RELA as u64, 0x3100), (elf::DT_RELASZ as u64, size)];
        entries.extend_from_slice(tags);
        entries.push((0, 0));
        e.phdrs.retain(|p| p.p_type != elf::PT_DYNAMIC && p.p_type != elf::PT_GNU_STACK);
        let table = dynamic_table(&entries);
        e.segment(elf::PT_DYNAMIC, RW, 0x3000, &table, table.len() as u64);
        e
    }

    const RELATIVE: u64 = elf::R_X86_64_RELATIVE as u64;

    #[test]
    fn self_relocating_programs_are_checked_not_relocated() {
        let self_relocating = Layout { self_relocating: true, ..Layout::default() };
        let e = with_rela(&[(0x3008, RELATIVE, 0x1010), (0x3010, 0, 0), (0x4ff8, RELATIVE, 0x3000)], &[]);
        // Refused by default, with the way out in the message.
        let refused = err(&e);
        assert_eq!(refused, ImageError::Relocations { tag: "DT_RELASZ", value: 72 });
        assert!(refused.to_string().contains("--self-relocating"), "{refused}");
        // Accepted when the program applies them itself — and loaded exactly as linked:
        // the same pages and MRENCLAVE as the same bytes without any relocation table.
        let image = image_from_elf(&e.build(), &self_relocating).unwrap();
        let mut plain = e.clone();
        plain.phdrs.retain(|p| p.p_type != elf::PT_DYNAMIC);
        let plain = image_from_elf(&plain.build(), &Layout::default()).unwrap();
        assert_eq!(image.pages, plain.pages);
        assert_eq!(image.mrenclave(), plain.mrenclave());
    }

    #[test]
    fn self_relocation_the_program_could_not_do_is_refused() {
        use crate::relocations::RelocationError as R;
        let check =
            |e: TestElf| match image_from_elf(&e.build(), &Layout { self_relocating: true, ..Layout::default() }) {
                Err(ImageError::SelfRelocation(r)) => r,
                other => panic!("expected a relocation error, got {other:?}"),
            };
        // A target in the RX segment (a text relocation), or past the RW segment's memory.
        assert_eq!(check(with_rela(&[(0x1008, RELATIVE, 0)], &[])), R::TargetNotWritable { target: 0x1008 });
        assert_eq!(check(with_rela(&[(0x5ffc, RELATIVE, 0)], &[])), R::TargetNotWritable { target: 0x5ffc });
        // A symbol, or a type that needs one or a resolver call.
        let sym = 1u64 << 32 | RELATIVE;
        assert_eq!(
            check(with_rela(&[(0x3008, RELATIVE, 0), (0x3010, sym, 0)], &[])),
            R::UnsupportedType { index: 1, target: 0x3010, r_type: 8, symbol: 1 }
        );
        let irelative = elf::R_X86_64_IRELATIVE as u64;
        assert_eq!(
            check(with_rela(&[(0x3008, irelative, 0x1010)], &[])),
            R::UnsupportedType { index: 0, target: 0x3008, r_type: elf::R_X86_64_IRELATIVE, symbol: 0 }
        );
        // Text relocations, PLT and REL tables, odd entry sizes, a table outside the file.
        let one = [(0x3008, RELATIVE, 0)];
        assert_eq!(check(with_rela(&one, &[(elf::DT_TEXTREL as u64, 0)])), R::TextRelocations);
        assert_eq!(check(with_rela(&one, &[(elf::DT_FLAGS as u64, u64::from(elf::DF_TEXTREL))])), R::TextRelocations);
        assert!(matches!(
            check(with_rela(&one, &[(elf::DT_JMPREL as u64, 0x3100), (elf::DT_PLTRELSZ as u64, 24)])),
            R::UnsupportedTable { tag: "DT_JMPREL", .. }
        ));
        assert!(matches!(
            check(with_rela(&one, &[(elf::DT_REL as u64, 0x3100), (elf::DT_RELSZ as u64, 16)])),
            R::UnsupportedTable { tag: "DT_REL", .. }
        ));
        assert_eq!(
            check(with_rela(&one, &[(elf::DT_RELAENT as u64, 16)])),
            R::EntrySize { tag: "DT_RELA", size: 24, entsize: 16, expected: 24 }
        );
        let mut outside = with_rela(&one, &[]);
        outside.phdrs.retain(|p| p.p_type != elf::PT_DYNAMIC);
        let table = dynamic_table(&[(elf::DT_RELA as u64, 0x5000), (elf::DT_RELASZ as u64, 24), (0, 0)]);
        outside.segment(elf::PT_DYNAMIC, RW, 0x3000, &table, table.len() as u64);
        assert_eq!(check(outside), R::TableOutside { tag: "DT_RELA", addr: 0x5000, size: 24 });
    }

    #[test]
    fn interpreter_is_refused() {
        let mut e = sample_elf();
        let i = e.segment(elf::PT_INTERP, R, 0, b"/lib64/ld-linux-x86-64.so.2\0", 28);
        assert_eq!(err(&e), ImageError::Interpreter { index: i });
    }

    #[test]
    fn a_segment_alignment_that_is_not_a_power_of_two_is_refused() {
        let mut bytes = sample_elf().build();
        let p_align = |bytes: &mut Vec<u8>, index: usize, align: u64| {
            bytes[64 + 56 * index + 48..64 + 56 * index + 56].copy_from_slice(&align.to_le_bytes());
        };
        for align in [0, 1, 2, 0x1000, 1 << 63] {
            p_align(&mut bytes, 1, align);
            assert!(image_from_elf(&bytes, &Layout::default()).is_ok(), "p_align {align:#x}");
        }
        for align in [3, 0x1001, u64::MAX] {
            p_align(&mut bytes, 1, align);
            assert_eq!(image_from_elf(&bytes, &Layout::default()), Err(ImageError::BadAlignment { index: 1, align }));
        }
    }

    #[test]
    fn segments_cannot_multiply_the_file() {
        // The RX segment's 0x1800 bytes mapped a second time: the segments then map 0x3110
        // bytes of a file of about 0x2900.
        let mut twice = sample_elf();
        let rx = twice.phdrs[1];
        twice.phdrs.push(Phdr { p_vaddr: 0x10_0000, ..rx });
        let bytes = twice.build();
        assert_eq!(
            image_from_elf(&bytes, &Layout::default()),
            Err(ImageError::FileBytesMappedTwice { total: 0x3110, file_len: bytes.len() as u64 })
        );
        // 1024 one-page BSS segments after the sample's 3, in a program header table moved
        // to the end of the file (the test builder's table must fit its first page).
        let mut bytes = sample_elf().build();
        let phnum = u16::from_le_bytes([bytes[56], bytes[57]]) as usize;
        let table: Vec<u8> = bytes[64..64 + 56 * phnum].to_vec();
        let phoff = bytes.len().next_multiple_of(8);
        bytes.resize(phoff, 0);
        bytes.extend_from_slice(&table);
        for i in 0..MAX_LOAD_SEGMENTS as u64 {
            let mut h = [0u8; 56];
            h[0..4].copy_from_slice(&elf::PT_LOAD.to_le_bytes());
            h[4..8].copy_from_slice(&RW.to_le_bytes());
            h[16..24].copy_from_slice(&(0x10_0000 + 0x2000 * i).to_le_bytes());
            h[40..48].copy_from_slice(&0x10u64.to_le_bytes());
            bytes.extend_from_slice(&h);
        }
        bytes[32..40].copy_from_slice(&(phoff as u64).to_le_bytes());
        bytes[56..58].copy_from_slice(&((phnum + MAX_LOAD_SEGMENTS) as u16).to_le_bytes());
        assert_eq!(image_from_elf(&bytes, &Layout::default()), Err(ImageError::TooManySegments { count: 1027 }));
    }

    #[test]
    fn a_huge_bss_is_one_run() {
        // 8 GiB of BSS after 16 bytes of data: the image holds 2 entries for the segment.
        let mut e = sample_elf();
        e.phdrs[2].p_memsz = 8 << 30;
        let image = image_from_elf(&e.build(), &Layout::default()).unwrap();
        let bss: Vec<_> = image.pages.iter().filter(|p| p.offset >= 0x3000 && p.offset < 0x2_0000_4000).collect();
        assert_eq!(bss.len(), 2, "{bss:?}");
        assert_eq!((bss[1].offset, bss[1].count, bss[1].measured), (0x4000, (8 << 30) / PAGE - 1, true));
        assert!(image.page_count() > (8 << 30) / PAGE);
    }

    #[test]
    fn layout_errors_pass_through() {
        let elf = sample_elf().build();
        let l = Layout { size: Some(0x2_0000), ..Layout::default() };
        let needed = Layout::default().plan(0x6000).unwrap().dynamic_start;
        assert_eq!(image_from_elf(&elf, &l), Err(ImageError::Layout(LayoutError::TooSmall { needed, size: 0x2_0000 })));
        // Even the program alone does not fit.
        let mut e = sample_elf();
        e.phdrs[2].p_memsz = 0x40_0000;
        let l = Layout { size: Some(0x20_0000), ..Layout::default() };
        assert!(matches!(
            image_from_elf(&e.build(), &l),
            Err(ImageError::Layout(LayoutError::TooSmall { size: 0x20_0000, .. }))
        ));
        for (l, want) in [
            (Layout { threads: 0, ..Layout::default() }, LayoutError::NoThreads),
            (Layout { nssa: 0, ..Layout::default() }, LayoutError::NoSsaFrames),
            (Layout { ssaframesize: 0, ..Layout::default() }, LayoutError::ZeroSsaFrameSize),
            (Layout { stack_pages: 0, ..Layout::default() }, LayoutError::NoStack),
            (Layout { size: Some(0x30_0000), ..Layout::default() }, LayoutError::BadSize { size: 0x30_0000 }),
        ] {
            assert_eq!(image_from_elf(&elf, &l), Err(ImageError::Layout(want)));
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// Corrupting bytes of a valid ELF (headers mostly) never panics.
        #[test]
        fn corrupt_elf_never_panics(edits in proptest::collection::vec((0usize..0x1200, proptest::num::u8::ANY), 1..8),
                                    cut in proptest::option::of(0usize..0x3000)) {
            let mut bytes = sample_elf().build();
            for (at, v) in edits {
                if at < bytes.len() {
                    bytes[at] = v;
                }
            }
            if let Some(cut) = cut {
                bytes.truncate(cut);
            }
            // An explicit size refuses huge corrupt segments before any page is built.
            let small = Layout { heap_pages: 1, size: Some(0x100_0000), ..Layout::default() };
            let _ = image_from_elf(&bytes, &small);
        }

        /// Corrupting any byte of a self-relocating ELF — its dynamic table and relocation
        /// entries included — never panics when its relocations are checked.
        #[test]
        fn corrupt_relocations_never_panic(edits in proptest::collection::vec((0usize..0x3000, proptest::num::u8::ANY), 1..8)) {
            let e = with_rela(&[(0x3008, RELATIVE, 0x1010), (0x3010, RELATIVE, 0x3000)], &[]);
            let mut bytes = e.build();
            for (at, v) in edits {
                let at = at % bytes.len();
                bytes[at] = v;
            }
            let small = Layout { heap_pages: 1, size: Some(0x100_0000), self_relocating: true, ..Layout::default() };
            let _ = image_from_elf(&bytes, &small);
        }

        /// Arbitrary bytes never panic.
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = image_from_elf(&bytes, &Layout::default());
        }
    }
}
