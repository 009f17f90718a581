//! The `cpuid` sweep against real gcc output, hand-made bad objects and the system's libraries
//! (native-notes.md §5).

mod cpuid_sweep {
    use std::ops::Range;
    use std::path::{Path, PathBuf};
    use std::process::Command;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Instant;

    use object::read::elf::ElfFile64;
    use object::{LittleEndian, Object, ObjectSymbol};
    use sgxemu_native::cpuid_sites::{SweepError, find_cpuid_sites, sweep_code};

    /// Two functions with a real `cpuid` each, and one whose `lea` displacement holds `0f a2`
    /// (the `enclave_tcs_create` trap of `test_sgx`).
    const CPUID_PROGRAM: &str = r#"
#include <cpuid.h>
#include <stdio.h>
__attribute__((noinline)) unsigned sgx_leaf(void) {
    unsigned a, b, c, d;
    __cpuid_count(0x12, 0, a, b, c, d);
    return a ^ b ^ c ^ d;
}
__attribute__((noinline)) unsigned feature_leaf(unsigned sub) {
    unsigned a, b, c, d;
    __cpuid_count(7, sub, a, b, c, d);
    return a ^ b ^ c ^ d;
}
__attribute__((noinline)) void *lea_trap(void) {
    void *p;
    /* lea 0xa20f(%rip), %rax */
    __asm__ volatile(".byte 0x48, 0x8d, 0x05, 0x0f, 0xa2, 0x00, 0x00" : "=a"(p));
    return p;
}
int main(void) { printf("%u %u %p\n", sgx_leaf(), feature_leaf(0), lea_trap()); return 0; }
"#;

    /// Data in `.text`, as perlasm does it: `push es` (06) is invalid in 64-bit mode, and enough
    /// padding follows that it cannot pass for a truncated tail.
    const DATA_IN_TEXT: &str = r#"
__asm__(".text\n.globl junk\njunk:\n.byte 0x90, 0x06\n.fill 64, 1, 0x90\n");
int main(void) { return 0; }
"#;

    /// An executable section whose last instruction is cut off after its first byte.
    const TRUNCATED_TAIL: &str = r#"
__asm__(".section .tail,\"ax\",@progbits\n.globl tail\ntail:\n.byte 0x0f, 0xa2, 0x90, 0x0f\n.previous\n");
int main(void) { return 0; }
"#;

    /// An executable section whose last byte is complete but invalid: data, not a truncated tail.
    const INVALID_TAIL: &str = r#"
__asm__(".section .badtail,\"ax\",@progbits\n.globl badtail\nbadtail:\n.byte 0x90, 0x06\n.previous\n");
int main(void) { return 0; }
"#;

    /// A scratch directory unique to this process and call, removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new() -> Scratch {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir().join(format!("sgxemu-cpuid-{}-{n}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn have(tool: &str) -> bool {
        Command::new(tool).arg("--version").output().is_ok_and(|out| out.status.success())
    }

    /// Compiles `source` with gcc and the given flags and returns the output's bytes, or `None`
    /// (with a note) where gcc is missing.
    fn gcc(scratch: &Scratch, source: &str, flags: &[&str]) -> Option<(PathBuf, Vec<u8>)> {
        if !have("gcc") {
            eprintln!("gcc not found: skipping");
            return None;
        }
        let src = scratch.0.join("prog.c");
        let out = scratch.0.join(format!("prog{}", flags.join("").replace(['-', '='], "_")));
        std::fs::write(&src, source).unwrap();
        let status = Command::new("gcc").args(["-O2", "-o"]).arg(&out).arg(&src).args(flags).status().unwrap();
        assert!(status.success(), "gcc {flags:?} failed");
        let bytes = std::fs::read(&out).unwrap();
        Some((out, bytes))
    }

    fn symbol(file: &[u8], name: &str) -> Range<u64> {
        let elf = ElfFile64::<LittleEndian>::parse(file).unwrap();
        let sym = elf.symbol_by_name(name).unwrap_or_else(|| panic!("no symbol {name}"));
        sym.address()..sym.address() + sym.size().max(1)
    }

    /// Every `0f a2` pair inside executable sections: what a byte scan would patch.
    fn raw_scan(file: &[u8]) -> Vec<u64> {
        use object::ObjectSection;
        let elf = ElfFile64::<LittleEndian>::parse(file).unwrap();
        let mut hits = Vec::new();
        for section in elf.sections().filter(|s| s.kind() == object::SectionKind::Text) {
            let data = section.data().unwrap();
            hits.extend(
                data.windows(2)
                    .enumerate()
                    .filter(|(_, w)| *w == [0x0f, 0xa2])
                    .map(|(i, _)| section.address() + i as u64),
            );
        }
        hits
    }

    /// Addresses of the `cpuid`s objdump's own linear sweep finds.
    fn objdump_cpuids(path: &Path) -> Option<Vec<u64>> {
        if !have("objdump") {
            return None;
        }
        let out = Command::new("objdump").arg("-d").arg(path).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let sites = text
            .lines()
            .filter(|line| line.split('\t').nth(2).is_some_and(|insn| insn.trim() == "cpuid"))
            .map(|line| u64::from_str_radix(line.split(':').next().unwrap().trim(), 16).unwrap())
            .collect();
        Some(sites)
    }

    fn assert_exact_sites(path: &Path, file: &[u8]) {
        let found = find_cpuid_sites(file).unwrap();
        assert_eq!(found.sites.len(), 2, "sites {:x?}", found.sites);
        assert!(found.sites.iter().any(|site| symbol(file, "sgx_leaf").contains(site)));
        assert!(found.sites.iter().any(|site| symbol(file, "feature_leaf").contains(site)));
        assert!(found.swept_bytes > 0);

        let raw = raw_scan(file);
        assert_eq!(raw.len(), 3, "raw {raw:x?}");
        let lea = symbol(file, "lea_trap");
        assert_eq!(raw.iter().filter(|site| !found.sites.contains(site)).collect::<Vec<_>>(), [&(lea.start + 3)]);

        if let Some(objdump) = objdump_cpuids(path) {
            assert_eq!(objdump, found.sites);
        }
    }

    #[test]
    fn gcc_pie_has_exactly_the_two_real_cpuids() {
        let scratch = Scratch::new();
        if let Some((path, file)) = gcc(&scratch, CPUID_PROGRAM, &["-pie", "-fPIE"]) {
            assert_exact_sites(&path, &file);
        }
    }

    #[test]
    fn gcc_fixed_address_executable_has_exactly_the_two_real_cpuids() {
        let scratch = Scratch::new();
        if let Some((path, file)) = gcc(&scratch, CPUID_PROGRAM, &["-no-pie"]) {
            assert_exact_sites(&path, &file);
        }
    }

    /// Zeroes e_shoff/e_shnum/e_shstrndx, as `sstrip` does.
    fn without_section_headers(file: &[u8]) -> Vec<u8> {
        let mut file = file.to_vec();
        file[0x28..0x30].fill(0);
        file[0x3c..0x40].fill(0);
        file
    }

    #[test]
    fn without_section_headers_the_executable_segments_are_swept() {
        let scratch = Scratch::new();
        let Some((_, file)) = gcc(&scratch, CPUID_PROGRAM, &["-pie", "-fPIE"]) else { return };
        let by_sections = find_cpuid_sites(&file).unwrap();
        let by_segments = find_cpuid_sites(&without_section_headers(&file)).unwrap();
        assert_eq!(by_segments.sites, by_sections.sites);
        assert!(by_segments.swept_bytes >= by_sections.swept_bytes);
    }

    #[test]
    fn data_in_text_is_refused() {
        let scratch = Scratch::new();
        let Some((_, file)) = gcc(&scratch, DATA_IN_TEXT, &[]) else { return };
        let junk = symbol(&file, "junk").start;
        match find_cpuid_sites(&file) {
            Err(SweepError::Undecodable { vaddr, section }) => {
                assert_eq!((vaddr, section.as_str()), (junk + 1, ".text"));
            }
            other => panic!("expected Undecodable, got {other:?}"),
        }
    }

    #[test]
    fn truncated_tail_of_a_section_is_allowed() {
        let scratch = Scratch::new();
        let Some((_, file)) = gcc(&scratch, TRUNCATED_TAIL, &[]) else { return };
        let tail = symbol(&file, "tail").start;
        let found = find_cpuid_sites(&file).unwrap();
        assert_eq!(found.sites, [tail]);
    }

    #[test]
    fn invalid_last_byte_of_a_section_is_refused() {
        let scratch = Scratch::new();
        let Some((_, file)) = gcc(&scratch, INVALID_TAIL, &[]) else { return };
        let badtail = symbol(&file, "badtail").start;
        match find_cpuid_sites(&file) {
            Err(SweepError::Undecodable { vaddr, section }) => {
                assert_eq!((vaddr, section.as_str()), (badtail + 1, ".badtail"));
            }
            other => panic!("expected Undecodable, got {other:?}"),
        }
    }

    #[test]
    fn relocatable_objects_are_refused() {
        let scratch = Scratch::new();
        let Some((_, file)) = gcc(&scratch, CPUID_PROGRAM, &["-c"]) else { return };
        assert!(matches!(find_cpuid_sites(&file), Err(SweepError::NotLoadable(object::elf::ET_REL))));
    }

    #[test]
    fn foreign_files_are_errors() {
        assert!(matches!(find_cpuid_sites(b""), Err(SweepError::NotElf)));
        assert!(matches!(find_cpuid_sites(b"#!/bin/sh\necho hi\n"), Err(SweepError::NotElf)));
        assert!(matches!(find_cpuid_sites(b"\x7fELF"), Err(SweepError::NotElf)));

        let mut elf32 = vec![0; 52];
        elf32[..7].copy_from_slice(b"\x7fELF\x01\x01\x01");
        assert!(matches!(find_cpuid_sites(&elf32), Err(SweepError::NotElf64(1))));

        let exe = std::fs::read("/proc/self/exe").unwrap();
        let mut aarch64 = exe[..64].to_vec();
        aarch64[0x12..0x14].copy_from_slice(&object::elf::EM_AARCH64.to_le_bytes());
        assert!(matches!(find_cpuid_sites(&aarch64), Err(SweepError::NotX86_64 { machine: 183, .. })));
        let mut big_endian = exe[..64].to_vec();
        big_endian[5] = object::elf::ELFDATA2MSB;
        assert!(find_cpuid_sites(&big_endian).is_err());
    }

    /// A cheap deterministic generator, so failures reproduce.
    fn xorshift(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    #[test]
    fn truncated_executables_never_panic() {
        let exe = std::fs::read("/proc/self/exe").unwrap();
        let mut state = 0x9e37_79b9_7f4a_7c15;
        for i in 0..200u64 {
            // Half the cuts inside the headers, where the parsing is densest.
            let len = if i % 2 == 0 {
                (xorshift(&mut state) % 4096) as usize
            } else {
                xorshift(&mut state) as usize % exe.len()
            };
            let _ = find_cpuid_sites(&exe[..len.min(exe.len())]);
        }
    }

    #[test]
    fn corrupted_executables_never_panic() {
        let scratch = Scratch::new();
        let Some((_, file)) = gcc(&scratch, CPUID_PROGRAM, &["-pie", "-fPIE"]) else { return };
        let shoff = u64::from_le_bytes(file[0x28..0x30].try_into().unwrap()) as usize;
        let stripped = without_section_headers(&file);
        let mut state = 0x2545_f491_4f6c_dd1d;
        for round in 0..2000 {
            let mut bad = if round % 2 == 0 { file.clone() } else { stripped.clone() };
            for _ in 0..1 + xorshift(&mut state) % 4 {
                // Aim at the ELF header, program headers and section headers.
                let at = match xorshift(&mut state) % 3 {
                    0 => (xorshift(&mut state) % 64) as usize,
                    1 => 64 + (xorshift(&mut state) % (13 * 56)) as usize,
                    _ => shoff + (xorshift(&mut state) as usize % (file.len() - shoff)),
                };
                bad[at] = xorshift(&mut state) as u8;
            }
            let cut = if round % 5 == 0 { xorshift(&mut state) as usize % bad.len() } else { bad.len() };
            let _ = find_cpuid_sites(&bad[..cut]);
        }
    }

    /// The sweep as it fares on the system's own objects: counts and timing, plus the verdicts
    /// native-notes.md §5 relies on (libc: none; ld.so: clean; libcrypto: data in .text).
    #[test]
    fn system_libraries() {
        let libs = [
            "/usr/lib/x86_64-linux-gnu/libc.so.6",
            "/lib64/ld-linux-x86-64.so.2",
            "/usr/lib/x86_64-linux-gnu/libcrypto.so.3",
        ];
        for path in libs {
            let Ok(file) = std::fs::read(path) else {
                eprintln!("{path}: not present");
                continue;
            };
            let start = Instant::now();
            let result = find_cpuid_sites(&file);
            let elapsed = start.elapsed();
            let (cpuid, undecodable) = full_sweep(&file);
            eprintln!(
                "{path}: {:?} in {elapsed:?}; full sweep: {cpuid} cpuid, {undecodable} undecodable",
                result.as_ref().map(|found| (found.sites.len(), found.swept_bytes))
            );
            match path.rsplit('/').next().unwrap() {
                "libc.so.6" => assert_eq!(result.unwrap().sites, []),
                "ld-linux-x86-64.so.2" => assert!(!result.unwrap().sites.is_empty()),
                _ => assert!(matches!(result, Err(SweepError::Undecodable { .. }))),
            }
        }
    }

    /// Counts over every executable section, continuing past undecodable spots.
    fn full_sweep(file: &[u8]) -> (usize, usize) {
        use object::ObjectSection;
        let elf = ElfFile64::<LittleEndian>::parse(file).unwrap();
        let mut counts = (0, 0);
        for section in elf.sections().filter(|s| s.kind() == object::SectionKind::Text) {
            let sweep = sweep_code(section.data().unwrap(), section.address());
            counts.0 += sweep.cpuid.len() + sweep.prefixed_cpuid.len();
            counts.1 += sweep.undecodable.len();
        }
        counts
    }
}
