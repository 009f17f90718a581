//! The offline commands (`measure`, `sign`) on hostile and huge inputs: files that are not
//! regular files, layouts of many GiB (memory stays small: the image holds runs, measuring
//! streams), SGXS output too large to write, and values ECREATE would refuse — each answered
//! with a result or one line and exit status 1, never an abort.

use std::path::PathBuf;
use std::process::{Command, Output};

mod support;
use support::{sgxemu, text, write_file};

/// Address-space limit for the commands that must not allocate per page: 1 GiB. Before
/// images held runs, `--heap 64G` used 1.6 GB and `--heap 1T` aborted on an 8 GiB
/// allocation.
const ADDRESS_SPACE_KIB: u32 = 1 << 20;

/// `sgxemu ARGS` under [`ADDRESS_SPACE_KIB`] of address space.
fn sgxemu_in_1g(args: &[&str]) -> Output {
    let script = format!("ulimit -v {ADDRESS_SPACE_KIB} && exec \"$0\" \"$@\"");
    Command::new("sh").arg("-c").arg(script).arg(env!("CARGO_BIN_EXE_sgxemu")).args(args).output().expect("sh runs")
}

/// Fails with exit status 1 and one line on stderr containing `needle`.
fn fails_with(out: &Output, needle: &str) {
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("sgxemu: ") && stderr.contains(needle), "{stderr}");
}

fn fails(args: &[&str], needle: &str) {
    fails_with(&sgxemu(args), needle);
}

fn dir(name: &str) -> PathBuf {
    support::fresh_dir("inputs", name)
}

fn u16_at(b: &[u8], at: usize) -> usize {
    usize::from(u16::from_le_bytes([b[at], b[at + 1]]))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// File offsets of the demo ELF's PT_LOAD program headers.
fn load_headers(elf: &[u8]) -> Vec<usize> {
    let (phoff, phentsize, phnum) = (u64_at(elf, 32) as usize, u16_at(elf, 54), u16_at(elf, 56));
    (0..phnum).map(|i| phoff + i * phentsize).filter(|&h| elf[h..h + 4] == 1u32.to_le_bytes()).collect()
}

#[test]
fn files_that_are_not_regular_are_refused_at_once() {
    let d = dir("special");
    let fifo = d.join("enclave.fifo");
    assert!(Command::new("mkfifo").arg(&fifo).status().expect("mkfifo runs").success());
    // No writer: reading it used to block forever.
    fails(&["measure", fifo.to_str().unwrap()], "is a FIFO, not a regular file");
    // /dev/zero used to be read until memory ran out, /dev/urandom forever.
    fails(&["measure", "/dev/zero"], "is a character device, not a regular file");
    fails(&["measure", "/dev/urandom"], "is a character device, not a regular file");
    fails(&["measure", d.to_str().unwrap()], "is a directory");
    let elf = write_file(&d, "demo.elf", sgxemu_samples::DEMO_ELF);
    fails(&["measure", &elf, "--sigstruct", "/dev/zero"], "not a regular file");
    fails(&["sign", &elf, "--key", "/dev/urandom", "--out", d.join("x.sig").to_str().unwrap()], "not a regular file");
    fails(&["sign", &elf, "--key", fifo.to_str().unwrap(), "--out", d.join("x.sig").to_str().unwrap()], "FIFO");
}

#[test]
fn huge_layouts_are_measured_in_little_memory() {
    let d = dir("huge");
    let elf = write_file(&d, "demo.elf", sgxemu_samples::DEMO_ELF);
    // 2^20 heap pages: one run, measured as 2^20 EADD records.
    let out = sgxemu_in_1g(&["measure", &elf, "--heap", "4G"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("size 0x200000000, 1048618 pages added (42 measured)"), "{stdout}");
    // 1 TiB of heap: the image is built (sign then stops at the missing key, before any
    // hashing) without the 8 GiB allocation that used to abort.
    let missing = d.join("missing.pem");
    let out = sgxemu_in_1g(&["sign", &elf, "--heap", "1T", "--key", missing.to_str().unwrap(), "--out", "x"]);
    fails_with(&out, "cannot read the key");
    // Layouts that need the maximum enclave size (2^56) or more refuse in one line: a heap
    // of 2^55 bytes, two stacks of 2^54.
    fails_with(&sgxemu_in_1g(&["measure", &elf, "--heap", "32768T"]), "maximum enclave size");
    fails_with(&sgxemu_in_1g(&["measure", &elf, "--stack", "16384T"]), "maximum enclave size");
}

#[test]
fn an_sgxs_file_too_large_to_read_back_is_not_written() {
    let d = dir("sgxs-cap");
    // An ELF whose last segment has 8 GiB of BSS: 2 Mi measured pages, a 10.8 GB SGXS file.
    let mut elf = sgxemu_samples::DEMO_ELF.to_vec();
    let last = *load_headers(&elf).iter().max_by_key(|&&h| u64_at(&elf, h + 16) + u64_at(&elf, h + 40)).unwrap();
    elf[last + 40..last + 48].copy_from_slice(&(8u64 << 30).to_le_bytes());
    let elf = write_file(&d, "bss.elf", &elf);
    let sgxs = d.join("bss.sgxs");
    let out = sgxemu_in_1g(&["measure", &elf, "--sgxs", sgxs.to_str().unwrap()]);
    fails_with(&out, "the SGXS file would be");
    assert!(!sgxs.exists(), "nothing written");
    // A heap of 1 TiB likewise: refused before any hashing.
    let out = sgxemu_in_1g(&["measure", &elf, "--heap", "1T", "--sgxs", sgxs.to_str().unwrap()]);
    fails_with(&out, "over the 1073741824-byte limit");
    // A small enclave's SGXS is written as before.
    let demo = write_file(&d, "demo.elf", sgxemu_samples::DEMO_ELF);
    let out = sgxemu(&["measure", &demo, "--sgxs", sgxs.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(sgxs.exists());
}

/// An SGXS stream of one ECREATE record and one measured zero page.
fn sgxs_with_ecreate(ssaframesize: u32, size: u64) -> Vec<u8> {
    let mut out = vec![0u8; 64];
    out[..8].copy_from_slice(b"ECREATE\0");
    out[8..12].copy_from_slice(&ssaframesize.to_le_bytes());
    out[12..20].copy_from_slice(&size.to_le_bytes());
    let mut eadd = [0u8; 64];
    eadd[..8].copy_from_slice(b"EADD\0\0\0\0");
    eadd[16..24].copy_from_slice(&0x203u64.to_le_bytes());
    out.extend_from_slice(&eadd);
    out
}

#[test]
fn values_ecreate_would_refuse_are_refused() {
    let d = dir("ecreate");
    for (ssa, size, needle) in [
        (1, 1u64 << 62, "exceeds the maximum enclave size 0x100000000000000"),
        (1, 1 << 63, "exceeds the maximum enclave size"),
        (0xffff_ffff, 1 << 20, "SSAFRAMESIZE 4294967295 pages is larger than the enclave"),
    ] {
        let file = write_file(&d, &format!("e-{ssa}-{size}.sgxs"), &sgxs_with_ecreate(ssa, size));
        fails(&["measure", &file], needle);
    }
    let ok = write_file(&d, "ok.sgxs", &sgxs_with_ecreate(1, 1 << 56));
    let out = sgxemu(&["measure", &ok]);
    assert!(out.status.success(), "the maximum itself is what ECREATE accepts: {}", text(&out.stderr));

    // p_align 3 in the demo's first PT_LOAD.
    let mut elf = sgxemu_samples::DEMO_ELF.to_vec();
    let first = load_headers(&elf)[0];
    elf[first + 48..first + 56].copy_from_slice(&3u64.to_le_bytes());
    fails(&["measure", &write_file(&d, "align3.elf", &elf)], "p_align 0x3 is not a power of two");

    let demo = write_file(&d, "demo.elf", sgxemu_samples::DEMO_ELF);
    fails(&["measure", &demo, "--miscselect", "2"], "MISCSELECT 0x2 has bits the part does not support");
    fails(&["measure", &demo, "--size", "65536T"], "not below the maximum enclave size");
    fails(&["measure", &demo, "--size", "131072T"], "not below the maximum enclave size");
    fails(&["measure", &demo, "--threads", "4294967295"], "threads");
    let out = sgxemu(&["measure", &demo, "--miscselect", "1", "--size", "32768T"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}
