//! Builds the sample enclaves from `enclaves/` with gcc into static-PIE ELF files in
//! `OUT_DIR` (`demo.elf`, `attest.elf`, and the self-relocating `reloc.elf` and
//! `reloc-relr.elf`), refusing any that is not loadable or whose relocations are not what
//! it is meant to have; and a
//! host-side archive of the same C (with ENCLU supplied by the test) that the integration
//! tests link, so the CMAC and the operations can be tested without an enclave.

use std::env;
use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, exit};

/// C and assembly both enclaves are built from, in link order (`entry.S` first, so
/// `enclave_entry` opens `.text`).
const COMMON_SOURCES: &[&str] = &["entry.S", "rt.c", "cmac.c", "common.c"];
/// Headers, for `rerun-if-changed` only.
const HEADERS: &[&str] = &["ops.h", "sgx.h", "cmac.h", "common.h"];
/// One enclave to build.
struct Sample {
    /// Output name (`NAME.elf`).
    name: &'static str,
    /// The source that holds its `enclave_main`.
    main_source: &'static str,
    /// Linker flags beyond [`ENCLAVE_FLAGS`].
    extra_flags: &'static [&'static str],
    /// It applies its own relative relocations (and so must have some); the others must
    /// have none.
    self_relocating: bool,
}

/// The enclaves.
const ENCLAVES: &[Sample] = &[
    Sample { name: "demo", main_source: "demo.c", extra_flags: &[], self_relocating: false },
    Sample { name: "attest", main_source: "attest.c", extra_flags: &[], self_relocating: false },
    // The same self-relocating program with its relocations as RELA entries, and packed
    // into DT_RELR (binutils 2.38 and later).
    Sample { name: "reloc", main_source: "reloc.c", extra_flags: &[], self_relocating: true },
    Sample {
        name: "reloc-relr",
        main_source: "reloc.c",
        extra_flags: &["-Wl,-z,pack-relative-relocs"],
        self_relocating: true,
    },
];

/// gcc flags for an enclave: freestanding static PIE, no libc, no stack protector or unwind
/// tables, no CET notes, no red zone, AES-NI; entry `enclave_entry`; 4 KiB segment alignment,
/// no RELRO, no build id.
const ENCLAVE_FLAGS: &[&str] = &[
    "-O2",
    "-std=gnu11",
    "-ffreestanding",
    "-fno-builtin",
    "-nostdlib",
    "-static-pie",
    "-fPIE",
    "-fno-stack-protector",
    "-fno-asynchronous-unwind-tables",
    "-fno-unwind-tables",
    "-fcf-protection=none",
    "-fno-common",
    // Keeps gcc from turning rt.c's own loops into calls to memcpy/memset.
    "-fno-tree-loop-distribute-patterns",
    "-mno-red-zone",
    "-march=x86-64",
    "-mtune=generic",
    "-maes",
    "-msse2",
    "-Wall",
    "-Wextra",
    "-Werror",
    // The deepest call path (REPORT) needs about 2.4 KiB; keep every frame within 2 KiB so
    // one 4 KiB stack page per thread stays enough.
    "-Wstack-usage=2048",
    "-Wl,-e,enclave_entry",
    "-Wl,-z,max-page-size=4096",
    "-Wl,-z,norelro",
    "-Wl,-z,noexecstack",
    "-Wl,--build-id=none",
    "-Wl,--hash-style=gnu",
    "-Wl,--fatal-warnings",
    // Else ld keeps an empty .eh_frame, which can leave an empty R PT_LOAD behind.
    "-Wl,--no-ld-generated-unwind-info",
];

/// gcc flags for the host-side test objects (linked into ordinary PIE test binaries).
const HOST_FLAGS: &[&str] =
    &["-O2", "-std=gnu11", "-fPIC", "-maes", "-msse2", "-Wall", "-Wextra", "-Werror", "-DSGXEMU_HOST_TEST"];

/// Host-side objects: source and extra flags (each `enclave_main` renamed apart).
const HOST_OBJECTS: &[(&str, &[&str])] = &[
    ("cmac.c", &[]),
    ("common.c", &[]),
    ("demo.c", &["-Denclave_main=sgxemu_demo_main"]),
    ("attest.c", &["-Denclave_main=sgxemu_attest_main"]),
];

fn main() {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let src = manifest_dir.join("enclaves");
    let gcc = env::var_os("SGXEMU_SAMPLES_CC").unwrap_or_else(|| "gcc".into());
    let ar = env::var_os("SGXEMU_SAMPLES_AR").unwrap_or_else(|| "ar".into());
    println!("cargo:rerun-if-env-changed=SGXEMU_SAMPLES_CC");
    println!("cargo:rerun-if-env-changed=SGXEMU_SAMPLES_AR");
    for file in COMMON_SOURCES.iter().chain(HEADERS).copied().chain(ENCLAVES.iter().map(|e| e.main_source)) {
        println!("cargo:rerun-if-changed={}", src.join(file).display());
    }

    for sample in ENCLAVES {
        let name = sample.name;
        let elf = out_dir.join(format!("{name}.elf"));
        let mut cmd = Command::new(&gcc);
        cmd.args(ENCLAVE_FLAGS).args(sample.extra_flags).arg("-I").arg(&src).arg("-o").arg(&elf);
        cmd.args(COMMON_SOURCES.iter().chain([&sample.main_source]).map(|f| src.join(f)));
        run(&mut cmd, &gcc);
        let bytes = fs::read(&elf).unwrap_or_else(|e| fail(&format!("cannot read {}: {e}", elf.display())));
        match (check_enclave_elf(&bytes), sample.self_relocating) {
            (Ok(None), false) | (Ok(Some(_)), true) => {}
            (Ok(Some(problem)), false) => fail(&format!(
                "sample enclave {name}.elf needs relocating: {problem}. It is loaded as linked \
                 (MRENCLAVE cannot depend on the load address): no pointer-valued initialised globals, \
                 no function-pointer tables"
            )),
            (Ok(None), true) => {
                fail(&format!("sample enclave {name}.elf is meant to relocate itself but has no relocations"))
            }
            (Err(problem), _) => fail(&format!("sample enclave {name}.elf is not loadable: {problem}")),
        }
    }

    let mut objects = Vec::new();
    for &(source, extra) in HOST_OBJECTS {
        let object = out_dir.join(Path::new(source).with_extension("host.o"));
        let mut cmd = Command::new(&gcc);
        cmd.args(HOST_FLAGS).args(extra).arg("-I").arg(&src).arg("-c").arg(src.join(source)).arg("-o").arg(&object);
        run(&mut cmd, &gcc);
        objects.push(object);
    }
    let archive = out_dir.join("libsgxemu_samples_host.a");
    // A stale archive would keep members that are no longer built.
    let _ = fs::remove_file(&archive);
    run(Command::new(&ar).arg("crs").arg(&archive).args(&objects), &ar);
    // An archive, not loose objects: a test binary that does not call into the C (and so
    // does not define the ENCLU stub) pulls in nothing.
    println!("cargo:rustc-link-arg-tests={}", archive.display());
}

/// Runs a tool, turning a missing tool or a failure into a build error that says which.
fn run(cmd: &mut Command, tool: &OsStr) {
    match cmd.status() {
        Ok(status) if status.success() => {}
        Ok(status) => fail(&format!("{cmd:?} failed ({status})")),
        Err(e) => fail(&format!(
            "sgxemu-samples needs gcc to build the sample enclaves: cannot run `{}`: {e} \
             (install gcc and binutils, or point SGXEMU_SAMPLES_CC / SGXEMU_SAMPLES_AR at them)",
            tool.to_string_lossy()
        )),
    }
}

fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    exit(1);
}

const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const PT_INTERP: u32 = 3;
const PT_TLS: u32 = 7;
const PF_X: u32 = 1;
const SHT_RELA: u32 = 4;
const SHT_REL: u32 = 9;
const SHT_RELR: u32 = 19;
/// DT_RELA, DT_RELASZ, DT_REL, DT_RELSZ, DT_PLTREL, DT_TEXTREL, DT_JMPREL, DT_RELRSZ,
/// DT_RELR, DT_RELACOUNT, DT_RELCOUNT.
const DT_RELOCATION_TAGS: &[u64] = &[7, 8, 17, 18, 20, 22, 23, 35, 36, 0x6fff_fff9, 0x6fff_fffa];

/// Checks what the loader needs of an enclave ELF: 64-bit little-endian x86-64 ET_DYN, no
/// interpreter, no TLS, PT_LOADs starting at vaddr 0, the entry in an executable PT_LOAD;
/// and says whether it has relocations of any kind (a REL/RELA/RELR section, a relocation
/// tag in PT_DYNAMIC): the first sign of them, if any.
fn check_enclave_elf(elf: &[u8]) -> Result<Option<String>, String> {
    let u16_at = |off: usize| read::<2>(elf, off).map(u16::from_le_bytes);
    let u32_at = |off: usize| read::<4>(elf, off).map(u32::from_le_bytes);
    let u64_at = |off: usize| read::<8>(elf, off).map(u64::from_le_bytes);
    let usize_at = |off: usize| u64_at(off).and_then(|v| usize::try_from(v).map_err(|_| "offset overflow".into()));
    if elf.get(..6) != Some(b"\x7fELF\x02\x01".as_slice()) {
        return Err("not a 64-bit little-endian ELF".into());
    }
    if u16_at(16)? != 3 || u16_at(18)? != 62 {
        return Err("not an x86-64 ET_DYN (static PIE)".into());
    }
    let entry = u64_at(24)?;
    let (phoff, shoff) = (usize_at(32)?, usize_at(40)?);
    let (phentsize, phnum) = (usize::from(u16_at(54)?), usize::from(u16_at(56)?));
    let (shentsize, shnum) = (usize::from(u16_at(58)?), usize::from(u16_at(60)?));

    // Sections first: they give the better message (a name, `readelf -r` shows the rest).
    let mut relocations = None;
    let shstrtab = shoff + usize::from(u16_at(62)?) * shentsize;
    let shstr_off = usize_at(shstrtab + 24)?;
    for i in 0..shnum {
        let sh = shoff + i * shentsize;
        let (sh_type, sh_size) = (u32_at(sh + 4)?, u64_at(sh + 32)?);
        if matches!(sh_type, SHT_RELA | SHT_REL | SHT_RELR) && sh_size != 0 && relocations.is_none() {
            let name_at = shstr_off + usize::try_from(u32_at(sh)?).map_err(|_| "offset overflow")?;
            let name = elf.get(name_at..).and_then(|n| n.split(|&b| b == 0).next()).unwrap_or_default();
            relocations = Some(format!(
                "section {} holds {sh_size} bytes of relocations (see `readelf -r`)",
                String::from_utf8_lossy(name)
            ));
        }
    }

    let mut loads = Vec::new();
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        let (p_type, p_flags) = (u32_at(ph)?, u32_at(ph + 4)?);
        let (p_offset, p_vaddr, p_filesz, p_memsz) =
            (usize_at(ph + 8)?, u64_at(ph + 16)?, usize_at(ph + 32)?, u64_at(ph + 40)?);
        match p_type {
            PT_LOAD => loads.push((p_vaddr, p_memsz, p_flags)),
            PT_INTERP => return Err("it has a PT_INTERP".into()),
            PT_TLS => return Err("it has thread-local storage (PT_TLS)".into()),
            PT_DYNAMIC => {
                for d in (p_offset..p_offset + p_filesz).step_by(16) {
                    let tag = u64_at(d)?;
                    if tag == 0 {
                        break;
                    }
                    if DT_RELOCATION_TAGS.contains(&tag) && relocations.is_none() {
                        relocations = Some(format!("PT_DYNAMIC has relocation tag {tag:#x}"));
                    }
                }
            }
            _ => {}
        }
    }
    if loads.iter().map(|l| l.0).min() != Some(0) {
        return Err("the PT_LOADs do not start at vaddr 0".into());
    }
    // Each page belongs to one PT_LOAD, so it gets one set of permissions.
    loads.sort_unstable();
    let mut next_free_page = 0;
    for &(vaddr, memsz, _) in &loads {
        if memsz == 0 {
            return Err(format!("empty PT_LOAD at {vaddr:#x}"));
        }
        if vaddr & !0xfff < next_free_page {
            return Err(format!("PT_LOAD at {vaddr:#x} shares a page with the one before"));
        }
        next_free_page = (vaddr + memsz + 0xfff) & !0xfff;
    }
    if !loads.iter().any(|&(vaddr, memsz, flags)| flags & PF_X != 0 && (vaddr..vaddr + memsz).contains(&entry)) {
        return Err(format!("entry point {entry:#x} is not in an executable PT_LOAD"));
    }
    Ok(relocations)
}

fn read<const N: usize>(elf: &[u8], off: usize) -> Result<[u8; N], String> {
    off.checked_add(N)
        .and_then(|end| elf.get(off..end))
        .map(|b| b.try_into().expect("slice of length N"))
        .ok_or_else(|| format!("truncated ELF (offset {off:#x})"))
}
