//! The uapi fuzzer in CI: `sgxemu run --epc 8M -- sgxemu-uapi-fuzz` with 20,000 operations,
//! 1 and 4 threads, on an SGX2 and an SGX1 part, must end with 0 crashes, 0 hangs and 0
//! errno mismatches.
//!
//! `harness = false`: this binary is also the fuzzer. With `SGXEMU_UAPI_FUZZ=1` in its
//! environment (which `sgxemu run` and the fuzzer's own worker children inherit) it runs
//! `sgxemu_fuzz::cli::main` on its arguments instead of the cases — so the test needs no
//! second binary, and the fuzzer it runs is the one this build compiled.

use std::process::Command;

/// Seed of the CI runs: fixed, so a failure here reproduces with the same command.
const SEED: u64 = 20_261_206;
/// Operations per run.
const OPS: u64 = 20_000;

/// Runs the fuzzer under `sgxemu run` and checks its summary; returns the summary line.
fn fuzz(threads: u16, sgx1: bool) -> String {
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut command = Command::new(env!("CARGO_BIN_EXE_sgxemu"));
    command.env_remove("SGXEMU_EPC").env_remove("SGXEMU_SGX1").env_remove("SGXEMU_STATS");
    command.env("SGXEMU_UAPI_FUZZ", "1").args(["run", "--epc", "8M"]);
    if sgx1 {
        command.arg("--sgx1");
    }
    command.arg("--").arg(exe).args([
        format!("--seed={SEED}"),
        format!("--ops={OPS}"),
        format!("--threads={threads}"),
        (if sgx1 { "--sgx1" } else { "--sgx2" }).to_owned(),
    ]);
    let out = command.output().expect("sgxemu runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let summary = stdout.lines().find(|l| l.starts_with("sgxemu-uapi-fuzz: ")).unwrap_or_default().to_owned();
    assert!(
        out.status.success() && summary.ends_with("crashes=0 hangs=0 mismatches=0"),
        "threads {threads} sgx1 {sgx1}: {}\n{stdout}\n{stderr}",
        out.status
    );
    summary
}

fn main() {
    if std::env::var_os("SGXEMU_UAPI_FUZZ").is_some() {
        let code = sgxemu_fuzz::cli::main(std::env::args().skip(1));
        std::process::exit(code);
    }
    for (threads, sgx1) in [(1, false), (4, false), (1, true), (4, true)] {
        let summary = fuzz(threads, sgx1);
        println!("{summary}");
    }
    println!("test uapi_fuzz ... ok");
}
