//! Finding and patching the `cpuid` instructions of the main executable (native-notes.md §5).
//!
//! Without CPUID faulting the only way to make leaf 0x12 (and the SGX bits of leaf 7) read as
//! an SGX2 part is to turn each `cpuid` (`0f a2`) of the program into `ud2` (`0f 0b`) and
//! emulate it from SIGILL. Sites are found with a linear sweep by a real decoder, never a byte
//! scan: a raw scan of `test_sgx` finds a third `0f a2` inside a `lea` displacement, and
//! patching it would corrupt the program. The sweep is exact for compiler output only; perlasm
//! libraries keep data in `.text`, so any undecodable bytes make the object unpatchable.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;

use iced_x86::{Code, Decoder, DecoderError, DecoderOptions, Instruction};
use object::LittleEndian;
use object::elf;
use object::read::elf::{FileHeader, ProgramHeader, SectionHeader};

/// The bytes of `cpuid`.
const CPUID: [u8; 2] = [0x0f, 0xa2];
/// The bytes of `ud2`, which a patched site holds.
const UD2: [u8; 2] = [0x0f, 0x0b];
/// The architectural limit on x86 instruction length.
const MAX_INSN_LEN: usize = 15;

type Header = elf::FileHeader64<LittleEndian>;

/// Where the `cpuid` instructions of an ELF file are, as offsets from its load bias.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CpuidSites {
    /// Virtual addresses (in `p_vaddr` space) of each `0f a2`, ascending.
    pub sites: Vec<u64>,
    /// How many bytes of executable code the sweep decoded.
    pub swept_bytes: u64,
}

/// Why an ELF file's `cpuid` sites could not be found (or must not be patched).
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    /// The bytes do not start with the ELF magic.
    #[error("not an ELF file")]
    NotElf,
    /// An ELF file of another class than ELFCLASS64.
    #[error("not a 64-bit ELF file (EI_CLASS {0})")]
    NotElf64(u8),
    /// A 64-bit ELF file for another machine, or big-endian.
    #[error("not a little-endian x86-64 ELF file (EI_DATA {data}, e_machine {machine})")]
    NotX86_64 {
        /// `e_ident[EI_DATA]`.
        data: u8,
        /// `e_machine`, as read little-endian.
        machine: u16,
    },
    /// Relocatable and core files have no meaningful virtual addresses for their code.
    #[error("ELF type {0} is neither ET_EXEC nor ET_DYN")]
    NotLoadable(u16),
    /// Headers, sections or segments point outside the file or are inconsistent.
    #[error("malformed ELF file: {0}")]
    Malformed(#[from] object::Error),
    /// An executable PT_LOAD's file range lies outside the file.
    #[error("PT_LOAD[{0}] lies outside the file")]
    SegmentOutsideFile(usize),
    /// The sweep met bytes that are not an instruction, so the section holds data and the sweep
    /// may be out of step with the real instruction boundaries: patching could corrupt data.
    #[error("undecodable bytes at {vaddr:#x} in {section}: executable section holds data, refusing to patch")]
    Undecodable {
        /// Virtual address of the first undecodable spot.
        vaddr: u64,
        /// Name of the section (or `PT_LOAD[i]` when there are no section headers).
        section: String,
    },
    /// A `cpuid` with prefixes: after patching it would trap at the prefix, not at the `0f`,
    /// so it cannot be described by a site address. Compilers never emit one.
    #[error("prefixed cpuid at {vaddr:#x} in {section}: only a bare 0f a2 can be patched")]
    PrefixedCpuid {
        /// Virtual address of the instruction's first byte.
        vaddr: u64,
        /// Name of the section (or `PT_LOAD[i]`).
        section: String,
    },
    /// Reading `/proc/self/exe` or `/proc/self/auxv` failed.
    #[error("reading the running executable: {0}")]
    Io(#[from] io::Error),
    /// The load bias of the main executable could not be established consistently.
    #[error("cannot determine the main executable's load bias: {0}")]
    LoadBias(&'static str),
}

/// What a linear sweep of one run of code found, with addresses in the code's own address space.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CodeSweep {
    /// Addresses of bare `cpuid` instructions (exactly `0f a2`).
    pub cpuid: Vec<u64>,
    /// Addresses of `cpuid` instructions carrying prefixes.
    pub prefixed_cpuid: Vec<u64>,
    /// Addresses where the decoder found no valid instruction (excluding a truncated tail).
    pub undecodable: Vec<u64>,
    /// Address of an instruction cut off by the end of the code, if any.
    pub truncated_tail: Option<u64>,
}

/// Decodes `code`, loaded at `vaddr`, from start to end as 64-bit x86 and records every `cpuid`
/// and every spot that does not decode.
///
/// An instruction cut off by the end of `code` is a truncated tail, not an undecodable spot:
/// linkers and enclave builders pad the end of `.text` with fill patterns such as `0xDEADBEEF`.
pub fn sweep_code(code: &[u8], vaddr: u64) -> CodeSweep {
    let mut sweep = CodeSweep::default();
    let mut decoder = Decoder::with_ip(64, code, vaddr, DecoderOptions::NONE);
    let mut insn = Instruction::default();
    while decoder.can_decode() {
        let offset = decoder.position();
        let ip = vaddr.wrapping_add(offset as u64);
        decoder.decode_out(&mut insn);
        if insn.is_invalid() {
            if decoder.last_error() == DecoderError::NoMoreBytes && is_truncated_insn(&code[offset..]) {
                sweep.truncated_tail = Some(ip);
                break;
            }
            sweep.undecodable.push(ip);
        } else if insn.code() == Code::Cpuid {
            if code.get(offset..offset + 2) == Some(&CPUID[..]) {
                sweep.cpuid.push(ip);
            } else {
                sweep.prefixed_cpuid.push(ip);
            }
        }
    }
    sweep
}

/// Whether `tail`, the bytes from an instruction boundary to the end of the code, is the start of
/// a valid instruction cut off by the end.
///
/// iced-x86 reports NoMoreBytes for some invalid opcodes too (it reads a ModRM byte for `06`
/// before rejecting it), so the tail is re-decoded with bytes appended: it is truncated code if
/// some filler completes it into a valid instruction. The fillers complete legacy opcodes
/// (0x00: a ModRM without displacement) as well as VEX/EVEX forms (0x58 is `vaddps` in map 0F).
fn is_truncated_insn(tail: &[u8]) -> bool {
    const FILLERS: [u8; 4] = [0x00, 0x58, 0x90, 0xc0];
    if tail.len() >= MAX_INSN_LEN {
        return false;
    }
    FILLERS.iter().any(|&fill| {
        let mut padded = [fill; MAX_INSN_LEN];
        padded[..tail.len()].copy_from_slice(tail);
        let insn = Decoder::new(64, &padded, DecoderOptions::NONE).decode();
        !insn.is_invalid() && insn.len() > tail.len()
    })
}

/// A run of executable bytes of the file and where it is loaded.
struct CodeRegion<'a> {
    name: String,
    vaddr: u64,
    bytes: &'a [u8],
}

/// Sweeps every executable section (SHF_EXECINSTR; executable PT_LOAD segments if the file has
/// no section headers) of the ELF `file` bytes linearly with iced-x86 (64-bit), returning each
/// `cpuid` instruction's virtual address.
///
/// Fails with [`SweepError::Undecodable`] when any executable section holds bytes that do not
/// decode, other than an instruction truncated by the section's end: such a section mixes code
/// and data, and its apparent `cpuid`s may be constants.
pub fn find_cpuid_sites(file: &[u8]) -> Result<CpuidSites, SweepError> {
    let header = parse_header(file)?;
    let mut found = CpuidSites::default();
    for region in code_regions(header, file)? {
        let sweep = sweep_code(region.bytes, region.vaddr);
        if let Some(&vaddr) = sweep.undecodable.first() {
            return Err(SweepError::Undecodable { vaddr, section: region.name });
        }
        if let Some(&vaddr) = sweep.prefixed_cpuid.first() {
            return Err(SweepError::PrefixedCpuid { vaddr, section: region.name });
        }
        found.sites.extend(sweep.cpuid);
        found.swept_bytes += region.bytes.len() as u64;
    }
    found.sites.sort_unstable();
    found.sites.dedup();
    Ok(found)
}

/// Checks that `file` is a little-endian x86-64 executable or shared object and returns its header.
fn parse_header(file: &[u8]) -> Result<&Header, SweepError> {
    // e_ident: magic, EI_CLASS, EI_DATA; checked by hand because object's parse of a 64-bit
    // header lumps every mismatch into one error.
    let Some(&[m0, m1, m2, m3, class, data]) = file.get(..6) else {
        return Err(SweepError::NotElf);
    };
    if [m0, m1, m2, m3] != elf::ELFMAG {
        return Err(SweepError::NotElf);
    }
    if class != elf::ELFCLASS64 {
        return Err(SweepError::NotElf64(class));
    }
    let header = Header::parse(file)?;
    let endian = LittleEndian;
    let machine = header.e_machine(endian);
    if data != elf::ELFDATA2LSB || machine != elf::EM_X86_64 {
        return Err(SweepError::NotX86_64 { data, machine });
    }
    match header.e_type(endian) {
        elf::ET_EXEC | elf::ET_DYN => Ok(header),
        other => Err(SweepError::NotLoadable(other)),
    }
}

/// The executable code of the file: its SHF_EXECINSTR sections, or, when the file has no section
/// headers (stripped with `sstrip`, or hand-made), its executable PT_LOAD segments.
fn code_regions<'a>(header: &Header, file: &'a [u8]) -> Result<Vec<CodeRegion<'a>>, SweepError> {
    let endian = LittleEndian;
    let sections = header.sections(endian, file)?;
    if sections.is_empty() {
        return segment_regions(header, file);
    }
    let mut regions = Vec::new();
    for (index, section) in sections.iter().enumerate() {
        let flags = section.sh_flags(endian);
        let executable = flags & u64::from(elf::SHF_EXECINSTR) != 0;
        // Non-ALLOC sections are never mapped, so their addresses mean nothing; NOBITS ones have
        // no bytes in the file.
        let loaded = flags & u64::from(elf::SHF_ALLOC) != 0;
        if !executable || !loaded || section.sh_type(endian) == elf::SHT_NOBITS {
            continue;
        }
        let name = match sections.section_name(endian, section) {
            Ok(name) => String::from_utf8_lossy(name).into_owned(),
            Err(_) => format!("section #{index}"),
        };
        let bytes = section.data(endian, file)?;
        regions.push(CodeRegion { name, vaddr: section.sh_addr(endian), bytes });
    }
    Ok(regions)
}

/// The executable PT_LOAD segments, for files without section headers.
fn segment_regions<'a>(header: &Header, file: &'a [u8]) -> Result<Vec<CodeRegion<'a>>, SweepError> {
    let endian = LittleEndian;
    let mut regions = Vec::new();
    for (index, phdr) in header.program_headers(endian, file)?.iter().enumerate() {
        if phdr.p_type(endian) != elf::PT_LOAD || phdr.p_flags(endian) & elf::PF_X == 0 {
            continue;
        }
        let bytes = phdr.data(endian, file).map_err(|()| SweepError::SegmentOutsideFile(index))?;
        regions.push(CodeRegion { name: format!("PT_LOAD[{index}]"), vaddr: phdr.p_vaddr(endian), bytes });
    }
    Ok(regions)
}

/// The CPUID (0x12 and SGX bits of leaf 7) patch plan for the running main executable: the
/// runtime addresses of its `cpuid` instructions.
///
/// Reads `/proc/self/exe`, sweeps it and adds the load bias. The bias comes from the kernel's
/// saved auxiliary vector (`/proc/self/auxv`, which describes the same file as
/// `/proc/self/exe` even when ld.so was run as a command) rather than from `getauxval`, which
/// the preload interposes. The result is cross-checked against AT_ENTRY. A program started as
/// `ld.so prog` therefore yields ld.so's own sites, consistently, and the program stays unpatched.
pub fn main_executable_sites() -> Result<Vec<u64>, SweepError> {
    let file = std::fs::read("/proc/self/exe")?;
    let auxv = std::fs::read("/proc/self/auxv")?;
    let at_phdr = auxv_entry(&auxv, libc::AT_PHDR).ok_or(SweepError::LoadBias("no AT_PHDR in the auxiliary vector"))?;
    let at_entry =
        auxv_entry(&auxv, libc::AT_ENTRY).ok_or(SweepError::LoadBias("no AT_ENTRY in the auxiliary vector"))?;
    image_sites(&file, at_phdr, at_entry)
}

/// Runtime addresses of the `cpuid` sites of `file`, given where its program headers were mapped
/// (AT_PHDR) and its runtime entry point (AT_ENTRY).
fn image_sites(file: &[u8], at_phdr: u64, at_entry: u64) -> Result<Vec<u64>, SweepError> {
    let bias = load_bias(file, at_phdr, at_entry)?;
    let found = find_cpuid_sites(file)?;
    Ok(found.sites.into_iter().map(|site| site.wrapping_add(bias)).collect())
}

/// The load bias of `file`: AT_PHDR minus the link-time address of the program headers.
///
/// That address is PT_PHDR's p_vaddr or, for files without PT_PHDR, the address at which the
/// PT_LOAD covering e_phoff maps it. The bias must be 0 for ET_EXEC and must move e_entry to
/// AT_ENTRY; either mismatch means the auxiliary vector describes another file.
fn load_bias(file: &[u8], at_phdr: u64, at_entry: u64) -> Result<u64, SweepError> {
    let header = parse_header(file)?;
    let endian = LittleEndian;
    let phdrs = header.program_headers(endian, file)?;
    let phdrs_vaddr = phdrs
        .iter()
        .find(|phdr| phdr.p_type(endian) == elf::PT_PHDR)
        .map(|phdr| phdr.p_vaddr(endian))
        .or_else(|| offset_to_vaddr(phdrs, header.e_phoff(endian)))
        .ok_or(SweepError::LoadBias("no PT_PHDR and no PT_LOAD maps the program headers"))?;
    let bias = at_phdr.wrapping_sub(phdrs_vaddr);
    if header.e_type(endian) == elf::ET_EXEC && bias != 0 {
        return Err(SweepError::LoadBias("AT_PHDR does not match a fixed-address executable"));
    }
    if header.e_entry(endian).wrapping_add(bias) != at_entry {
        return Err(SweepError::LoadBias("AT_ENTRY does not match /proc/self/exe's entry point"));
    }
    Ok(bias)
}

/// The link-time virtual address at which a PT_LOAD maps file offset `offset`.
fn offset_to_vaddr(phdrs: &[elf::ProgramHeader64<LittleEndian>], offset: u64) -> Option<u64> {
    let endian = LittleEndian;
    phdrs.iter().filter(|phdr| phdr.p_type(endian) == elf::PT_LOAD).find_map(|phdr| {
        let start = phdr.p_offset(endian);
        let within = offset.checked_sub(start)?;
        (within < phdr.p_filesz(endian)).then(|| phdr.p_vaddr(endian).wrapping_add(within))
    })
}

/// The value of auxiliary vector entry `key` in the raw contents of `/proc/self/auxv` (pairs of
/// native words; the crate is x86-64 only, where `c_ulong` is `u64`).
fn auxv_entry(auxv: &[u8], key: u64) -> Option<u64> {
    const WORD: usize = size_of::<u64>();
    auxv.chunks_exact(2 * WORD)
        .map(|pair| {
            let (mut k, mut v) = ([0; WORD], [0; WORD]);
            k.copy_from_slice(&pair[..WORD]);
            v.copy_from_slice(&pair[WORD..]);
            (u64::from_ne_bytes(k), u64::from_ne_bytes(v))
        })
        .take_while(|&(k, _)| k != libc::AT_NULL)
        .find(|&(k, _)| k == key)
        .map(|(_, v)| v)
}

/// Rewrites each site's second byte `a2` → `0b` through `/proc/self/mem`, returning how many
/// sites were patched (sites already holding `0f 0b` count as done, not as patched).
///
/// `/proc/self/mem` writes with FOLL_FORCE, so read-only text pages are written without an
/// mprotect window, which would be racy once other threads run. Every site is verified (by a
/// read of `/proc/self/mem`) before anything is written: if any site holds neither `0f a2` nor
/// `0f 0b`, the plan does not describe this process (wrong bias, modified text) and nothing is
/// patched; the error lists the offending addresses. Only one byte changes per site, so a
/// thread executing the instruction concurrently sees either `cpuid` or `ud2`.
pub fn patch_sites(sites: &[u64]) -> io::Result<usize> {
    let mem = OpenOptions::new().read(true).write(true).open("/proc/self/mem")?;
    let mut sites = sites.to_vec();
    sites.sort_unstable();
    sites.dedup();
    let pending = sites_to_patch(&mem, &sites)?;
    for (done, &site) in pending.iter().enumerate() {
        mem.write_all_at(&UD2[1..], site.wrapping_add(1)).map_err(|err| {
            io::Error::new(err.kind(), format!("patching cpuid at {site:#x} ({done} of {} done): {err}", pending.len()))
        })?;
    }
    Ok(pending.len())
}

/// The sites that still hold `cpuid`, or an error naming every site that holds something else.
fn sites_to_patch(mem: &File, sites: &[u64]) -> io::Result<Vec<u64>> {
    let mut pending = Vec::new();
    let mut foreign = Vec::new();
    for &site in sites {
        let mut bytes = [0; 2];
        match mem.read_exact_at(&mut bytes, site) {
            Ok(()) if bytes == CPUID => pending.push(site),
            Ok(()) if bytes == UD2 => {}
            // Unreadable addresses are as wrong as unexpected bytes.
            Ok(()) | Err(_) => foreign.push(site),
        }
    }
    if foreign.is_empty() {
        return Ok(pending);
    }
    let list: Vec<String> = foreign.iter().map(|site| format!("{site:#x}")).collect();
    Err(io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{} cpuid site(s) hold neither 0f a2 nor 0f 0b, nothing patched: {}", foreign.len(), list.join(", ")),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: u64 = 0x40_1000;

    #[test]
    fn sweep_finds_bare_cpuid_at_instruction_boundaries_only() {
        // nop; cpuid; lea rax, [rip + 0xa20f]; ret
        let code = [0x90, 0x0f, 0xa2, 0x48, 0x8d, 0x05, 0x0f, 0xa2, 0x00, 0x00, 0xc3];
        let sweep = sweep_code(&code, BASE);
        assert_eq!(sweep, CodeSweep { cpuid: vec![BASE + 1], ..CodeSweep::default() });
    }

    #[test]
    fn sweep_sets_prefixed_cpuid_apart() {
        let sweep = sweep_code(&[0x66, 0x0f, 0xa2, 0xc3], BASE);
        assert_eq!((sweep.cpuid, sweep.prefixed_cpuid), (vec![], vec![BASE]));
    }

    #[test]
    fn sweep_accepts_padding() {
        // int3, multi-byte nop, zero fill (add [rax], al).
        let code = [0xcc, 0xcc, 0x0f, 0x1f, 0x44, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00];
        assert_eq!(sweep_code(&code, BASE), CodeSweep::default());
    }

    #[test]
    fn sweep_reports_invalid_opcodes_mid_code() {
        let mut code = vec![0x0f, 0xa2, 0x06];
        code.extend([0x90; 32]);
        let sweep = sweep_code(&code, BASE);
        assert_eq!((sweep.cpuid, sweep.undecodable, sweep.truncated_tail), (vec![BASE], vec![BASE + 2], None));
    }

    #[test]
    fn sweep_tells_truncated_tails_from_invalid_ones() {
        let cut_cpuid = sweep_code(&[0x90, 0x0f], BASE);
        assert_eq!((cut_cpuid.undecodable, cut_cpuid.truncated_tail), (vec![], Some(BASE + 1)));

        // test_encl.elf ends .text with 0xDEADBEEF fill.
        let mut fill = vec![0xc3];
        fill.extend([0xef, 0xbe, 0xad, 0xde].repeat(4));
        let deadbeef = sweep_code(&fill, BASE);
        assert!(deadbeef.undecodable.is_empty() && deadbeef.truncated_tail.is_some(), "{deadbeef:x?}");

        // A truncated VEX instruction (vaddps) is code as well...
        assert!(sweep_code(&[0x90, 0xc5, 0xf0], BASE).truncated_tail.is_some());
        // ... and a truncated EVEX one (vaddps zmm).
        assert!(sweep_code(&[0x90, 0x62, 0xf1, 0x7c, 0x48], BASE).truncated_tail.is_some());

        // iced reports NoMoreBytes for a lone 06, but no continuation makes it valid.
        let invalid = sweep_code(&[0x90, 0x06], BASE);
        assert_eq!((invalid.undecodable, invalid.truncated_tail), (vec![BASE + 1], None));
    }

    #[test]
    fn sweep_of_nothing_is_empty() {
        assert_eq!(sweep_code(&[], BASE), CodeSweep::default());
    }

    fn own_auxv(key: libc::c_ulong) -> u64 {
        // SAFETY: getauxval only reads the process's auxiliary vector.
        unsafe { libc::getauxval(key) }
    }

    #[test]
    fn auxv_file_agrees_with_getauxval() {
        let auxv = std::fs::read("/proc/self/auxv").unwrap();
        for key in [libc::AT_PHDR, libc::AT_ENTRY, libc::AT_PAGESZ] {
            assert_eq!(auxv_entry(&auxv, key), Some(own_auxv(key)));
        }
        assert_eq!(auxv_entry(&auxv, 0xdead), None);
        assert_eq!(auxv_entry(&auxv[..7], libc::AT_PHDR), None);
    }

    #[test]
    fn load_bias_is_checked_against_the_entry_point() {
        let exe = std::fs::read("/proc/self/exe").unwrap();
        let (phdr, entry) = (own_auxv(libc::AT_PHDR), own_auxv(libc::AT_ENTRY));
        let bias = load_bias(&exe, phdr, entry).unwrap();
        assert_eq!(bias % 4096, 0);
        // Shifting both keeps them consistent; shifting one does not.
        assert_eq!(load_bias(&exe, phdr + 0x10_0000, entry + 0x10_0000).unwrap(), bias + 0x10_0000);
        assert!(matches!(load_bias(&exe, phdr, entry + 0x1000), Err(SweepError::LoadBias(_))));
    }

    #[test]
    fn load_bias_without_pt_phdr_uses_the_load_covering_e_phoff() {
        let mut exe = std::fs::read("/proc/self/exe").unwrap();
        let (phdr, entry) = (own_auxv(libc::AT_PHDR), own_auxv(libc::AT_ENTRY));
        let expected = load_bias(&exe, phdr, entry).unwrap();
        // Turn PT_PHDR into PT_NULL in place.
        let phoff = u64::from_le_bytes(exe[0x20..0x28].try_into().unwrap()) as usize;
        let phnum = usize::from(u16::from_le_bytes(exe[0x38..0x3a].try_into().unwrap()));
        let pt_phdr = (0..phnum).map(|i| phoff + 56 * i).find(|&at| exe[at..at + 4] == elf::PT_PHDR.to_le_bytes());
        exe[pt_phdr.expect("test binary has PT_PHDR")..][..4].fill(0);
        assert_eq!(load_bias(&exe, phdr, entry).unwrap(), expected);
    }

    /// The executable mappings of the running binary, from /proc/self/maps.
    fn own_text_mappings() -> Vec<std::ops::Range<u64>> {
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        maps.lines()
            .filter(|line| line.ends_with(exe.to_str().unwrap()))
            .filter(|line| line.split_whitespace().nth(1).is_some_and(|perms| perms.contains('x')))
            .map(|line| {
                let (start, end) = line.split_whitespace().next().unwrap().split_once('-').unwrap();
                u64::from_str_radix(start, 16).unwrap()..u64::from_str_radix(end, 16).unwrap()
            })
            .collect()
    }

    #[test]
    fn main_executable_sites_are_cpuids_in_its_text() {
        let sites = main_executable_sites().unwrap();
        let text = own_text_mappings();
        assert!(!text.is_empty());
        let mem = File::open("/proc/self/mem").unwrap();
        for site in sites {
            assert!(text.iter().any(|range| range.contains(&site)), "{site:#x} outside {text:x?}");
            let mut bytes = [0; 2];
            mem.read_exact_at(&mut bytes, site).unwrap();
            assert_eq!(bytes, CPUID, "at {site:#x}");
        }
    }

    /// An anonymous page holding `code`, left with protection `prot`; unmapped on drop.
    struct Page(*mut u8);

    const PAGE: usize = 4096;

    impl Page {
        fn new(code: &[u8], prot: libc::c_int) -> Page {
            // SAFETY: a fresh anonymous private mapping; no existing memory is affected.
            let ptr = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    PAGE,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            assert_ne!(ptr, libc::MAP_FAILED);
            let ptr = ptr.cast::<u8>();
            // SAFETY: the page is ours, writable and PAGE bytes long, and code is shorter.
            unsafe { std::ptr::copy_nonoverlapping(code.as_ptr(), ptr, code.len()) };
            // SAFETY: changes the protection of our own page only.
            assert_eq!(unsafe { libc::mprotect(ptr.cast(), PAGE, prot) }, 0);
            Page(ptr)
        }

        fn addr(&self) -> u64 {
            self.0 as u64
        }

        fn bytes(&self, len: usize) -> Vec<u8> {
            // SAFETY: the page is mapped readable for the life of self and len <= PAGE.
            unsafe { std::slice::from_raw_parts(self.0, len) }.to_vec()
        }
    }

    impl Drop for Page {
        fn drop(&mut self) {
            // SAFETY: unmaps the page mapped in new; nothing borrows it any more.
            unsafe { libc::munmap(self.0.cast(), PAGE) };
        }
    }

    #[test]
    fn patch_writes_read_only_executable_text() {
        let page = Page::new(&[0x0f, 0xa2, 0xc3, 0x0f, 0xa2], libc::PROT_READ | libc::PROT_EXEC);
        let sites = [page.addr(), page.addr() + 3];
        assert_eq!(patch_sites(&sites).unwrap(), 2);
        assert_eq!(page.bytes(5), [0x0f, 0x0b, 0xc3, 0x0f, 0x0b]);
        // Patching again finds nothing left to do.
        assert_eq!(patch_sites(&sites).unwrap(), 0);
    }

    #[test]
    fn patch_counts_duplicate_sites_once() {
        let page = Page::new(&[0x0f, 0xa2], libc::PROT_READ);
        assert_eq!(patch_sites(&[page.addr(), page.addr()]).unwrap(), 1);
        assert_eq!(page.bytes(2), UD2);
    }

    #[test]
    fn patch_refuses_every_site_when_one_is_not_cpuid() {
        let page = Page::new(&[0x0f, 0xa2, 0x90, 0x90], libc::PROT_READ | libc::PROT_EXEC);
        let err = patch_sites(&[page.addr(), page.addr() + 2]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains(&format!("{:#x}", page.addr() + 2)), "{err}");
        assert_eq!(page.bytes(4), [0x0f, 0xa2, 0x90, 0x90]);
    }

    #[test]
    fn patch_refuses_unmapped_sites() {
        let addr = {
            let page = Page::new(&[0x0f, 0xa2], libc::PROT_READ);
            page.addr()
        };
        assert_eq!(patch_sites(&[addr]).unwrap_err().kind(), io::ErrorKind::InvalidData);
        assert_eq!(patch_sites(&[]).unwrap(), 0);
    }
}
