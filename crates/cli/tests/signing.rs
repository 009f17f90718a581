//! `sgxemu keygen`, `sign` and `measure`: the signing round trip on the bundled sample
//! enclaves (ELF and SGXS), every tampering refused, and bad input answered in one line.

use std::path::{Path, PathBuf};
mod support;
use support::{sgxemu, text, write_file};

fn ok(args: &[&str]) -> String {
    let out = sgxemu(args);
    assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
    text(&out.stdout)
}

/// Fails with exit status 1 and one line on stderr containing `needle`.
fn fails(args: &[&str], needle: &str) {
    let out = sgxemu(args);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
    assert!(stderr.starts_with("sgxemu: ") && stderr.contains(needle), "{args:?}: {stderr}");
}

fn dir(name: &str) -> PathBuf {
    support::fresh_dir("signing", name)
}

fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// The `MRENCLAVE  <hex>` of `measure`'s output.
fn mrenclave(stdout: &str) -> String {
    stdout.lines().find_map(|l| l.strip_prefix("MRENCLAVE")).map(|h| h.trim().to_owned()).expect("a MRENCLAVE line")
}

fn keygen(dir: &Path) -> String {
    let key = dir.join("key.pem");
    let out = ok(&["keygen", "--out", s(&key)]);
    assert!(out.contains("RSA-3072, e = 3") && out.contains("MRSIGNER "), "{out}");
    key.to_string_lossy().into_owned()
}

#[test]
fn sign_then_measure_round_trips_for_elf_and_sgxs() {
    let d = dir("round-trip");
    let key = keygen(&d);
    let elf = write_file(&d, "demo.elf", sgxemu_samples::DEMO_ELF);
    let sig = d.join("demo.sig");
    let signed = ok(&["sign", &elf, "--key", &key, "--out", s(&sig), "--isvprodid", "7", "--isvsvn", "3"]);
    assert_eq!(std::fs::metadata(&sig).expect("written").len(), 1808);

    let sgxs = d.join("demo.sgxs");
    let measured = ok(&["measure", &elf, "--sigstruct", s(&sig), "--sgxs", s(&sgxs)]);
    assert!(measured.contains("SIGSTRUCT  matches") && measured.contains("ISVPRODID  7  ISVSVN 3"), "{measured}");
    // The same MRENCLAVE from the signer, the ELF and the SGXS file, and the library's.
    let image = sgxemu_enclave::image_from_elf(sgxemu_samples::DEMO_ELF, &sgxemu_enclave::Layout::default()).unwrap();
    let expected = sgxemu_enclave::sign::hex(&image.mrenclave());
    assert_eq!(mrenclave(&signed), expected);
    assert_eq!(mrenclave(&measured), expected);
    let from_sgxs = ok(&["measure", s(&sgxs), "--sigstruct", s(&sig)]);
    assert_eq!(mrenclave(&from_sgxs), expected);
    assert!(from_sgxs.contains("SIGSTRUCT  matches"), "{from_sgxs}");
    // Layout options are part of the measurement.
    assert_ne!(mrenclave(&ok(&["measure", &elf, "--threads", "3"])), expected);
}

#[test]
fn every_tampering_is_refused() {
    let d = dir("tamper");
    let key = keygen(&d);
    let elf = write_file(&d, "demo.elf", sgxemu_samples::DEMO_ELF);
    let sig_path = d.join("demo.sig");
    ok(&["sign", &elf, "--key", &key, "--out", s(&sig_path)]);
    let sig = std::fs::read(&sig_path).unwrap();
    let flipped = |offset: usize| {
        let mut bytes = sig.clone();
        bytes[offset] ^= 1;
        write_file(&d, &format!("flip-{offset}.sig"), &bytes)
    };
    // A bit in each signed region, the modulus, the signature, Q1, Q2.
    for (offset, needle) in [
        (20, "bad signature"),   // DATE, in the signed header
        (960, "bad signature"),  // ENCLAVEHASH, in the signed body
        (130, "bad signature"),  // MODULUS
        (600, "bad signature"),  // SIGNATURE
        (1100, "bad signature"), // Q1
        (1500, "bad signature"), // Q2
    ] {
        fails(&["measure", &elf, "--sigstruct", &flipped(offset)], needle);
    }
    // Another enclave's content, or another layout of this one.
    let attest = write_file(&d, "attest.elf", sgxemu_samples::ATTEST_ELF);
    fails(&["measure", &attest, "--sigstruct", s(&sig_path)], "SIGSTRUCT is for MRENCLAVE");
    fails(&["measure", &elf, "--heap", "2M", "--sigstruct", s(&sig_path)], "SIGSTRUCT is for MRENCLAVE");
    // Attributes the signature does not allow.
    fails(&["measure", &elf, "--debug", "--sigstruct", s(&sig_path)], "attributes");
    fails(&["measure", &elf, "--miscselect", "1", "--sigstruct", s(&sig_path)], "MISCSELECT 0x1 does not match");
    fails(&["measure", &elf, "--sigstruct", &write_file(&d, "short.sig", &sig[..1000])], "a SIGSTRUCT is 1808");
}

#[test]
fn keys_of_the_wrong_shape_are_refused() {
    let d = dir("keys");
    let elf = write_file(&d, "demo.elf", sgxemu_samples::DEMO_ELF);
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crypto/tests/data");
    let out = d.join("x.sig");
    fails(&["sign", &elf, "--key", s(&data.join("wrong-size-2048.pem")), "--out", s(&out)], "3072");
    fails(&["sign", &elf, "--key", s(&data.join("wrong-exponent-65537.pem")), "--out", s(&out)], "e = 3");
    fails(&["sign", &elf, "--key", &write_file(&d, "junk.pem", b"not a key"), "--out", s(&out)], "PEM");
    fails(&["sign", &elf, "--key", s(&d.join("missing.pem")), "--out", s(&out)], "cannot read the key");
    assert!(!out.exists(), "nothing written after a refusal");
    // keygen never overwrites by accident, and writes a private file.
    let key = keygen(&d);
    fails(&["keygen", "--out", &key], "exists; pass --force");
    ok(&["keygen", "--out", &key, "--force"]);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
}

#[test]
fn bad_enclave_files_get_one_clear_line() {
    let d = dir("bad-input");
    let demo = sgxemu_samples::DEMO_ELF;
    fails(&["measure", &write_file(&d, "truncated.elf", &demo[..100])], "truncated.elf");
    fails(&["measure", &write_file(&d, "text.txt", b"hello")], "neither an ELF file nor an SGXS file");
    let mut sgxs = b"ECREATE\0".to_vec();
    sgxs.resize(40, 0);
    fails(&["measure", &write_file(&d, "short.sgxs", &sgxs)], "short.sgxs");
    let elf = write_file(&d, "demo.elf", demo);
    fails(&["measure", &elf, "--size", "8K"], "enclave size");
    fails(&["measure", &elf, "--stack", "5000"], "--stack 0x1388 is not a multiple of 4 KiB");
    fails(&["measure", &elf, "--threads", "0"], "thread");
    fails(&["measure", s(&d.join("missing.elf"))], "cannot read");
}

#[test]
fn a_self_relocating_enclave_is_measured_only_when_declared_so() {
    let d = dir("self-relocating");
    for (name, bytes) in [("reloc.elf", sgxemu_samples::RELOC_ELF), ("reloc-relr.elf", sgxemu_samples::RELOC_RELR_ELF)]
    {
        let elf = write_file(&d, name, bytes);
        fails(&["measure", &elf], "--self-relocating");
        let measured = ok(&["measure", &elf, "--self-relocating"]);
        let image = sgxemu_enclave::image_from_elf(
            bytes,
            &sgxemu_enclave::Layout { self_relocating: true, ..sgxemu_enclave::Layout::default() },
        )
        .unwrap();
        assert_eq!(mrenclave(&measured), sgxemu_enclave::sign::hex(&image.mrenclave()), "{name}");
    }
}
