//! Intel SGX SDK applications in hardware mode under `sgxemu run`: SampleEnclave (its own
//! configuration and config.01–05), SealUnseal, Switchless, Cxx11SGXDemo and Intel's EMM API
//! tests, built from the SDK named by `SGXEMU_INTEL_SDK` by `scripts/intel-sdk-samples`.
//!
//! The EMM API tests run with their default 50 threads (with pause-loop exiting, as the
//! script runs them).
//!
//! The SDK is third-party software the project does not ship: without `SGXEMU_INTEL_SDK`
//! the test says loudly that it did not run. `.ci/run` points it at the SDK build beside the
//! project when there is one; users point it at their own install (`/opt/intel/sgxsdk`).

mod support;

#[test]
fn sdk_samples_and_emm_tests_pass_in_hardware_mode() {
    let Some(sdk) = std::env::var_os("SGXEMU_INTEL_SDK") else {
        eprintln!("SKIPPED: SGXEMU_INTEL_SDK is not set; the Intel SGX SDK applications did not run");
        return;
    };
    let out =
        support::script("intel-sdk-samples").arg("--sdk").arg(&sdk).output().expect("scripts/intel-sdk-samples runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}");
    let last = stdout.lines().last().unwrap_or_default();
    assert!(
        out.status.success() && last.ends_with(" passed, 0 failed"),
        "SDK applications failed ({last}).\nstderr:\n{stderr}"
    );
}
