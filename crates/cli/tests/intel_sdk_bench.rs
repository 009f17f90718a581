//! `scripts/intel-sdk-bench` (the SDK ECALL and OCALL round trips against the host trap
//! floor) builds its Intel SGX SDK application from the SDK named by `SGXEMU_INTEL_SDK`, runs
//! it under `sgxemu run` and prints both rows. A short run: only that it ran and printed its
//! table is checked, never a timing (the figures come from the script itself, run long).
//!
//! Its own test binary, so that it does not run beside the SDK samples' test. Without
//! `SGXEMU_INTEL_SDK` the test says loudly that it did not run.

mod support;

#[test]
fn sdk_call_benchmark_runs_and_prints_both_rows() {
    let Some(sdk) = std::env::var_os("SGXEMU_INTEL_SDK") else {
        eprintln!("SKIPPED: SGXEMU_INTEL_SDK is not set; the Intel SGX SDK call benchmark did not run");
        return;
    };
    let out = support::script("intel-sdk-bench")
        .arg("--sdk")
        .arg(&sdk)
        .args(["--calls", "500", "--runs", "1"])
        .output()
        .expect("scripts/intel-sdk-bench runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}");
    let row =
        |name: &str| stdout.lines().any(|l| l.starts_with(name) && l.contains(" µs  floor ") && l.contains("ratio"));
    assert!(
        out.status.success() && row("SDK ECALL (empty, urts)") && row("SDK OCALL (empty, urts)"),
        "the SDK call benchmark failed ({}).\nstderr:\n{stderr}",
        out.status
    );
}
