//! `sgxemu run` as a user runs it: exit status and environment passed through, bad options
//! refused in one line, a program's own fault handlers still served, and what a fork child
//! sees of its parent's enclave. (The kernel selftests, `kernel_selftests.rs`, exercise the
//! enclave side end to end.)

use std::path::{Path, PathBuf};
use std::process::Command;

mod support;
use support::{sgxemu, text};

/// Compiles one of `tests/programs/*.c` with gcc into a directory of its own.
fn build(program: &str) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/programs").join(format!("{program}.c"));
    let dir = std::env::temp_dir().join(format!("sgxemu-run-tests-{}-{program}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let exe = dir.join(program);
    let status = Command::new("gcc").arg("-O1").arg("-o").arg(&exe).arg(&src).status().expect("gcc runs");
    assert!(status.success(), "gcc {src:?}");
    // Executable for certain, whatever the linker and umask left (a CI run once could not
    // exec a freshly linked program: EACCES).
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    exe
}

#[test]
fn the_program_s_exit_status_and_environment_come_through() {
    let out = sgxemu(&["run", "--epc", "64M", "--", "sh", "-c", "echo $SGXEMU_EPC $SGXEMU_SGX1; exit 7"]);
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "67108864");
    let out = sgxemu(&["run", "--sgx1", "--", "sh", "-c", "echo $SGXEMU_SGX1 $LD_PRELOAD"]);
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with("1 ") && stdout.contains("libsgxemu_preload-"), "{stdout}");
}

#[test]
fn bad_input_is_one_clear_line() {
    let out = sgxemu(&["run", "--epc", "5K", "--", "true"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("sgxemu: ") && stderr.contains("EPC"), "{stderr}");
    let out = sgxemu(&["run", "--", "/nonexistent/program"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("cannot run /nonexistent/program"), "{}", text(&out.stderr));
    let out = sgxemu(&["run"]);
    assert_eq!(out.status.code(), Some(2), "PROGRAM is required");
}

#[test]
fn a_program_with_its_own_fault_handlers_still_gets_its_faults() {
    let exe = build("own_handlers");
    let out = sgxemu(&["run", "--", exe.to_str().expect("utf-8 path")]);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "segv 1 ill 1");
}

#[test]
fn a_fork_child_has_no_enclave_and_the_parent_keeps_its_own() {
    let exe = build("fork_child");
    let out = sgxemu(&["run", "--", exe.to_str().expect("utf-8 path")]);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    let stdout = text(&out.stdout);
    // Child: the range is free (MADV_DONTFORK) and the descriptor is no enclave (ENOTTY).
    assert!(stdout.contains("child: mapped 0 ioctl -1 errno 25"), "{stdout}");
    // Parent: still mapped; REMOVE_PAGES on its uninitialized enclave is the driver's EINVAL.
    assert!(stdout.contains("parent: mapped 1 ioctl -1 errno 22"), "{stdout}");
}

#[test]
fn stats_are_printed_only_by_processes_that_used_the_platform() {
    let out = sgxemu(&["run", "--stats", "--", "true"]);
    assert!(out.status.success());
    assert!(!text(&out.stderr).contains("statistics"), "{}", text(&out.stderr));
    let exe = build("fork_child");
    let out = sgxemu(&["run", "--stats", "--", exe.to_str().expect("utf-8 path")]);
    let stderr = text(&out.stderr);
    assert!(stderr.contains("sgxemu: statistics") && stderr.contains("ECREATE"), "{stderr}");
}

#[test]
fn cpuid_reads_as_the_emulated_part_in_every_context_of_the_program() {
    let exe = build("cpuid_probe");
    let host = core::arch::x86_64::__cpuid(0);
    let vendor: Vec<u8> = [host.ebx, host.edx, host.ecx].iter().flat_map(|r| r.to_le_bytes()).collect();
    let vendor = String::from_utf8_lossy(&vendor);
    for (options, sgx2) in [(&["--epc", "64M"][..], 1), (&["--epc", "64M", "--sgx1"][..], 0)] {
        let mut args = vec!["run"];
        args.extend_from_slice(options);
        args.extend(["--", exe.to_str().expect("utf-8 path")]);
        let out = sgxemu(&args);
        let stdout = text(&out.stdout);
        assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
        let mut lines = stdout.lines();
        let mode = lines.next().unwrap_or_default();
        assert!(mode == "mode: faulting" || mode == "mode: rewritten", "{stdout}");
        // Host leaves stay the host's; leaf 7's SGX bits and leaf 0x12 are the part's.
        let expected = format!("vendor={vendor} max>=0x12:1 sgx=1 lc=1 sgx1=1 sgx2={sgx2} epc=67108864");
        let views: Vec<&str> = lines.collect();
        assert_eq!(views.len(), 4, "{stdout}");
        for (view, who) in views.iter().zip(["main", "thread", "handler", "child"]) {
            assert_eq!(*view, format!("{who}: {expected}"), "{stdout}");
        }
    }
}

#[test]
fn copies_of_an_enclave_descriptor_reach_the_driver_too() {
    let exe = build("dup_probe");
    let out = sgxemu(&["run", "--", exe.to_str().expect("utf-8 path")]);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    // EFAULT (14) is the driver's answer; ENOTTY (25) a file that is no enclave.
    assert_eq!(text(&out.stdout), "fd 14 dup 14 fcntl 14 dup2 14 dup3 14\nafter close 14\nreplaced 25 kept 14\n");
}
