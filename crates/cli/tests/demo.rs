//! `sgxemu demo`, the README's main job: the whole SGX2 lifecycle through the enclave
//! library, on the in-process emulator and — the exact code that talks to real hardware —
//! through `/dev/sgx_enclave` and the vDSO under `sgxemu run`.

use std::process::Output;

mod support;
use support::{sgxemu, text};

/// Small sizes keep the debug build quick; the EPC is still oversubscribed twice.
const SMALL: [&str; 4] = ["--epc", "4M", "--grow", "256K"];

/// Every step of the timeline, in order, and the closing line.
fn assert_timeline(out: &Output) -> String {
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{}", text(&out.stderr));
    let steps = [
        "keygen",
        "build",
        "sign + load",
        "enter",
        "EAUG by access",
        "EACCEPT-first",
        "add thread",
        "permissions",
        "trim + remove",
        "oversubscribe",
        "trim + remove",
        "attestation",
        "teardown",
    ];
    let mut rest = stdout.as_str();
    for step in steps {
        let at = rest.find(&format!("] {step} ")).unwrap_or_else(|| panic!("no step {step:?} in order in:\n{stdout}"));
        rest = &rest[at + 1..];
    }
    assert!(stdout.contains("\ndone: 13 steps in "), "{stdout}");
    assert!(stdout.contains("error code 0x8007 (EPCM)"), "the faults are EPCM page faults:\n{stdout}");
    assert!(stdout.contains("8 MiB grown, written and read back bit-identical"), "{stdout}");
    stdout
}

#[test]
fn the_demo_walks_the_lifecycle_in_process() {
    let out = sgxemu(&[&["demo"][..], &SMALL].concat());
    let stdout = assert_timeline(&out);
    assert!(stdout.contains("on the in-process emulator (EPC 4 MiB)"), "{stdout}");
    // The emulator's counters show the reclaimer at work, and teardown returns every page.
    assert!(stdout.contains("pages out (EWB)"), "{stdout}");
    assert!(stdout.contains("enclaves closed: all 1024 EPC pages free again"), "{stdout}");
}

#[test]
fn the_demo_runs_through_dev_sgx_enclave_under_sgxemu_run() {
    let exe = env!("CARGO_BIN_EXE_sgxemu");
    let out = sgxemu(&[&["run", "--epc", "4M", "--", exe, "demo", "--device", "kernel"][..], &SMALL].concat());
    let stdout = assert_timeline(&out);
    assert!(stdout.contains("on /dev/sgx_enclave (EPC 4 MiB)"), "{stdout}");
}

#[test]
fn without_sgx_the_kernel_device_is_one_clear_line() {
    let out = sgxemu(&["demo", "--device", "kernel"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("no SGX") && stderr.contains("sgxemu run"), "{stderr}");
}

#[test]
fn bad_demo_options_are_refused() {
    for (args, needle) in [
        (&["demo", "--oversubscribe", "0"][..], "--oversubscribe must be between 1 and 1024"),
        // Used to overflow factor × EPC size and panic.
        (&["demo", "--oversubscribe", "18446744073709551615"][..], "--oversubscribe must be between 1 and 1024"),
        (&["demo", "--oversubscribe", "1025"][..], "--oversubscribe must be between 1 and 1024"),
        (&["demo", "--grow", "100"][..], "--grow must be a non-zero multiple of 4 KiB"),
        (&["demo", "--epc", "5K"][..], "EPC"),
    ] {
        let out = sgxemu(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let stderr = text(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.starts_with("sgxemu: ") && stderr.contains(needle), "{args:?}: {stderr}");
    }
}
