//! What the loader needs of the sample ELFs, checked with the `object` crate (build.rs checks
//! the same with its own parser; this is the independent second opinion).

use object::elf;
use object::read::elf::{ElfFile64, FileHeader, ProgramHeader, SectionHeader};
use object::{Architecture, Endianness, Object, ObjectSymbol};
use sgxemu_samples::{ATTEST_ELF, DEMO_ELF, ENTRY_SYMBOL, PING_MAGIC};

const SAMPLES: [(&str, &[u8]); 2] = [("demo", DEMO_ELF), ("attest", ATTEST_ELF)];

/// EAX = 4 (EEXIT), ENCLU.
const EEXIT: [u8; 8] = [0xb8, 0x04, 0x00, 0x00, 0x00, 0x0f, 0x01, 0xd7];

fn parse(bytes: &[u8]) -> ElfFile64<'_, Endianness> {
    ElfFile64::parse(bytes).expect("a 64-bit ELF")
}

#[test]
fn x86_64_static_pie() {
    for (name, bytes) in SAMPLES {
        let file = parse(bytes);
        let e = file.endian();
        assert_eq!(file.architecture(), Architecture::X86_64, "{name}");
        assert!(file.is_64() && file.is_little_endian(), "{name}");
        assert_eq!(file.elf_header().e_type(e), elf::ET_DYN, "{name}");
        for ph in file.elf_program_headers() {
            assert_ne!(ph.p_type(e), elf::PT_INTERP, "{name}: no interpreter");
            assert_ne!(ph.p_type(e), elf::PT_TLS, "{name}: no TLS");
        }
    }
}

#[test]
fn loads_start_at_zero_own_their_pages_and_are_never_wx() {
    for (name, bytes) in SAMPLES {
        let file = parse(bytes);
        let e = file.endian();
        let loads: Vec<_> = file.elf_program_headers().iter().filter(|ph| ph.p_type(e) == elf::PT_LOAD).collect();
        assert!(loads.len() >= 2, "{name}");
        assert_eq!(loads.iter().map(|ph| ph.p_vaddr(e)).min(), Some(0), "{name}: first PT_LOAD at 0");
        let mut pages: Vec<_> = loads.iter().map(|ph| (ph.p_vaddr(e), ph.p_vaddr(e) + ph.p_memsz(e))).collect();
        pages.sort_unstable();
        for pair in pages.windows(2) {
            assert!(pair[0].0 < pair[0].1, "{name}: no empty PT_LOAD");
            assert!(pair[0].1.next_multiple_of(4096) <= pair[1].0 & !0xfff, "{name}: no page in two PT_LOADs");
        }
        for ph in &loads {
            assert_eq!(ph.p_vaddr(e) % 4096, ph.p_offset(e) % 4096, "{name}: vaddr ≡ offset mod 4096");
            assert!(ph.p_filesz(e) <= ph.p_memsz(e), "{name}");
            let flags = ph.p_flags(e);
            assert!(flags & elf::PF_R != 0, "{name}: every segment readable");
            assert!(flags & (elf::PF_W | elf::PF_X) != elf::PF_W | elf::PF_X, "{name}: no W+X segment");
        }
    }
}

#[test]
fn no_relocations() {
    for (name, bytes) in SAMPLES {
        let file = parse(bytes);
        let e = file.endian();
        for section in file.elf_section_table().iter() {
            let t = section.sh_type(e);
            assert!(
                !matches!(t, elf::SHT_REL | elf::SHT_RELA | elf::SHT_RELR) || section.sh_size(e) == 0,
                "{name}: relocation section of type {t}"
            );
        }
        for ph in file.elf_program_headers() {
            let Some(dynamic) = ph.dynamic(e, bytes).expect("a readable PT_DYNAMIC") else { continue };
            for d in dynamic {
                let tag = d.d_tag.get(e);
                let relocating = [
                    elf::DT_REL,
                    elf::DT_RELA,
                    36, // DT_RELR (not in object 0.36)
                    elf::DT_JMPREL,
                    elf::DT_TEXTREL,
                    elf::DT_RELCOUNT,
                    elf::DT_RELACOUNT,
                ];
                assert!(!relocating.iter().any(|&t| u64::from(t) == tag), "{name}: dynamic tag {tag:#x}");
            }
        }
        assert!(file.dynamic_relocations().is_none_or(|mut r| r.next().is_none()), "{name}");
    }
}

#[test]
fn entry_is_enclave_entry_in_an_executable_segment() {
    for (name, bytes) in SAMPLES {
        let file = parse(bytes);
        let e = file.endian();
        let entry = file.entry();
        let text = file
            .elf_program_headers()
            .iter()
            .find(|ph| ph.p_type(e) == elf::PT_LOAD && (ph.p_vaddr(e)..ph.p_vaddr(e) + ph.p_memsz(e)).contains(&entry))
            .unwrap_or_else(|| panic!("{name}: entry {entry:#x} in a PT_LOAD"));
        assert!(text.p_flags(e) & elf::PF_X != 0, "{name}: entry segment executable");
        // Symbols are optional for the loader; the samples keep them.
        let sym = file.symbols().find(|s| s.name() == Ok(ENTRY_SYMBOL)).expect("enclave_entry symbol");
        assert_eq!(sym.address(), entry, "{name}");
        assert!(file.symbols().any(|s| s.name() == Ok("enclave_main")), "{name}");

        // The stub: `test %rax,%rax; jnz` to the AEX path first, and exactly two EEXITs.
        let at = usize::try_from(entry - text.p_vaddr(e) + text.p_offset(e)).expect("offset");
        assert_eq!(bytes[at..at + 5], [0x48, 0x85, 0xc0, 0x0f, 0x85], "{name}: stub begins with the CSSA test");
        let stub = &bytes[at..at + usize::try_from(sym.size()).expect("size")];
        assert_eq!(stub.windows(EEXIT.len()).filter(|w| *w == EEXIT).count(), 2, "{name}: two EEXITs");
        assert!(stub.windows(3).any(|w| w == [0x48, 0x89, 0xdc]), "{name}: mov %rbx,%rsp");
    }
}

#[test]
fn ping_magic_is_in_the_code() {
    for (name, bytes) in SAMPLES {
        let magic = PING_MAGIC.to_le_bytes();
        assert!(bytes.windows(8).any(|w| w == magic), "{name}");
    }
}

#[test]
fn attest_is_the_smaller_subset() {
    let text_size = |bytes| {
        let file = parse(bytes);
        let e = file.endian();
        file.elf_program_headers()
            .iter()
            .filter(|ph| ph.p_type(e) == elf::PT_LOAD && ph.p_flags(e) & elf::PF_X != 0)
            .map(|ph| ph.p_memsz(e))
            .sum::<u64>()
    };
    assert!(text_size(ATTEST_ELF) < text_size(DEMO_ELF));
    // Both carry the shared CMAC (VERIFY).
    let has_symbol = |bytes, n: &str| parse(bytes).symbols().any(|s| s.name() == Ok(n));
    assert!(has_symbol(DEMO_ELF, "sgxemu_aes128_cmac") && has_symbol(ATTEST_ELF, "sgxemu_aes128_cmac"));
}

#[test]
fn the_self_relocating_samples_have_relative_relocations_only() {
    use object::{ObjectSection, RelocationFlags, RelocationTarget};
    let rela = parse(sgxemu_samples::RELOC_ELF);
    assert!(rela.section_by_name(".rela.dyn").is_some_and(|s| s.size() > 0), "reloc: a RELA table");
    let relocations: Vec<_> = rela.dynamic_relocations().expect("dynamic relocations").collect();
    assert_eq!(relocations.len(), 6, "three function pointers and three word pointers");
    for (_, r) in relocations {
        assert_eq!(r.flags(), RelocationFlags::Elf { r_type: elf::R_X86_64_RELATIVE });
        assert_eq!(r.target(), RelocationTarget::Absolute, "no symbol");
    }
    let relr = parse(sgxemu_samples::RELOC_RELR_ELF);
    assert!(relr.section_by_name(".relr.dyn").is_some_and(|s| s.size() > 0), "reloc-relr: a RELR table");
    assert!(relr.section_by_name(".rela.dyn").is_none_or(|s| s.size() == 0), "reloc-relr: nothing left in RELA");
}
