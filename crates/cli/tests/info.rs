//! `sgxemu info` as a user runs it: output, options, environment variables, bad input.

use std::process::Output;

mod support;

fn sgxemu(args: &[&str], env: &[(&str, &str)]) -> Output {
    support::sgxemu_with_env(args, env)
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn info_prints_the_default_sgx2_platform() {
    let out = sgxemu(&["info"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("SGX2 (SGX1 + EDMM)"), "{text}");
    assert!(text.contains("EPC: 128 MiB (32768 pages)"), "{text}");
    assert!(text.contains("sub-leaf 0:     0x00000003 0x00000001"), "{text}");
}

#[test]
fn epc_and_sgx1_options_change_the_part() {
    let out = sgxemu(&["info", "--epc", "64G", "--sgx1"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("SGX1 only"), "{text}");
    assert!(text.contains("EPC: 64 GiB (16777216 pages)"), "{text}");
    assert!(text.contains("sub-leaf 0:     0x00000001"), "{text}");
    // 64 GiB: ECX[31:12] = 0, EDX[19:0] = 16 (size bits 51:32).
    assert!(text.contains("0x00000001 0x00000010  EPC section"), "{text}");
}

#[test]
fn environment_variables_set_the_same_options() {
    let out = sgxemu(&["info"], &[("SGXEMU_EPC", "256M"), ("SGXEMU_SGX1", "true")]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("EPC: 256 MiB"), "{text}");
    assert!(text.contains("SGX1 only"), "{text}");
}

#[test]
fn unparsable_sizes_are_usage_errors_with_a_hint() {
    let out = sgxemu(&["info", "--epc", "12Q"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("unknown unit 'Q'"), "{}", stderr(&out));
    assert!(stdout(&out).is_empty());
}

#[test]
fn sizes_the_part_cannot_have_are_one_line_errors() {
    for size in ["100", "65G", "0"] {
        let out = sgxemu(&["info", "--epc", size], &[]);
        assert_eq!(out.status.code(), Some(1), "--epc {size}");
        let err = stderr(&out);
        assert!(err.starts_with("sgxemu: EPC size of"), "{err}");
        assert!(err.contains("multiple of 4 KiB between 4 KiB and 64 GiB"), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
}
