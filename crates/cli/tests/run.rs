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
    build_as(program, program, &[])
}

/// The directory [`build_as`] puts `name` in.
fn build_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sgxemu-run-tests-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    dir
}

/// Compiles `tests/programs/{program}.c` into executable `name` with extra gcc arguments
/// (after the source, so libraries among them link).
fn build_as(program: &str, name: &str, args: &[&str]) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/programs").join(format!("{program}.c"));
    let exe = build_dir(name).join(name);
    let status = Command::new("gcc").arg("-O1").arg("-o").arg(&exe).arg(&src).args(args).status().expect("gcc runs");
    assert!(status.success(), "gcc {src:?} {args:?}");
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
fn a_program_that_blocks_every_signal_still_gets_the_emulator_s_services() {
    let exe = build_as("blocked_mask", "blocked_mask", &["-pthread"]);
    let out = sgxemu(&["run", "--", exe.to_str().expect("utf-8 path")]);
    assert!(out.status.success(), "{:?} {}{}", out.status, text(&out.stdout), text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "libc 1 thread 1 raw 1 pending 1");
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

#[test]
fn device_descriptors_survive_every_phase_of_the_process_s_life() {
    // Constructors, a vfork child, a pthread key destructor, an atexit handler and an ELF
    // destructor (the last ones after thread-local storage is torn down): every probe
    // reaches the driver (EFAULT, 14), every close succeeds, and buffered stdout comes
    // out because the process exits normally.
    let exe = build("teardown");
    let out = sgxemu(&["run", "--", exe.to_str().expect("utf-8 path")]);
    assert_eq!(out.status.code(), Some(0), "{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "constructor: probe 14\n\
         main: probe 14 14\n\
         thread: probe 14\n\
         thread exit: probe 14 close 0\n\
         after vfork child closed it: probe 14\n\
         atexit: probe 14 close 0\n\
         destructor: probe 14 close 0 new 14 close 0\n"
    );
    assert!(!text(&out.stderr).contains("internal error"), "{}", text(&out.stderr));
}

#[test]
fn the_device_nodes_are_found_through_every_file_api() {
    let exe = build("discover");
    let out = sgxemu(&["run", "--", exe.to_str().expect("utf-8 path")]);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    // EFAULT (14): an enclave; ENOTTY (25): the provisioning node; ELOOP (40): O_NOFOLLOW
    // on the link; EACCES (13): X_OK.
    assert_eq!(
        text(&out.stdout),
        "open 14 open64 14 openat 14 openat64 14 __open_2 14 __open64_2 14 __openat_2 14 __openat64_2 14\n\
         link 14 provision 25 provision-link 25 nofollow -40\n\
         fopen 14 fopen64 14\n\
         stat enclave: chr 0666 10:125 size 0\n\
         stat provision: chr 0660 10:126 size 0\n\
         lstat enclave: chr 0666 10:125 size 0\n\
         stat link: chr 0666 10:125 size 0\n\
         lstat link: lnk 0777 0:0 size 14\n\
         fstatat link nofollow: lnk 0777 0:0 size 16\n\
         fstatat link: chr 0660 10:126 size 0\n\
         stat dir: dir 0755 0:0 size 80\n\
         fstat: chr 0666 10:125 size 0\n\
         fstatat empty path: chr 0666 10:125 size 0\n\
         statx enclave: 0 chr 0666 10:125\n\
         statx link nofollow: 0 lnk\n\
         access 0 0 0 faccessat 0 0 euidaccess 0 eaccess 0 x 13\n\
         readlink fd: /dev/sgx_enclave\n\
         readlink link: ../sgx_enclave\n\
         readlink truncated: 5 ../sg\n\
         readlink node: -1 errno 22\n\
         realpath: /dev/sgx_enclave\n"
    );
}

#[test]
fn directory_listings_of_dev_show_the_nodes_and_udev_s_links() {
    let exe = build("dev_listing");
    let out = sgxemu(&["run", "--", exe.to_str().expect("utf-8 path")]);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    // The host's own /dev entries come first; each emulated one once, again after rewinddir.
    assert_eq!(
        text(&out.stdout),
        "readdir /dev: sgx/d sgx_enclave/c sgx_provision/c (1 entries) rewound 1\n\
         readdir64 /dev/: sgx/d sgx_enclave/c sgx_provision/c (1 entries) rewound 1\n\
         readdir /dev/sgx: ./d ../d enclave/l provision/l (1 entries) rewound 1\n\
         fdopendir readdir_r /dev: sgx/d sgx_enclave/c sgx_provision/c\n\
         glob /dev/sgx*: 0 /dev/sgx/ /dev/sgx_enclave /dev/sgx_provision altdirfunc 0\n\
         glob /dev/sgx/*: 0 /dev/sgx/enclave /dev/sgx/provision altdirfunc 0\n\
         scandir /dev/sgx: 4 ./d ../d enclave/l provision/l\n"
    );
    // A shell's expansion (dash's opendir/readdir) and ls's listing, stat and xattr calls.
    let out = sgxemu(&["run", "--", "sh", "-c", "ls -l /dev/sgx* /dev/sgx/"]);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(text(&out.stderr), "");
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    let starts = |line: &str, mode: &str, end: &str| line.starts_with(mode) && line.ends_with(end);
    assert!(starts(lines[0], "crw-rw-rw- 1 ", " 10, 125 Jan  1  1970 /dev/sgx_enclave"), "{stdout}");
    assert!(starts(lines[1], "crw-rw---- 1 ", " 10, 126 Jan  1  1970 /dev/sgx_provision"), "{stdout}");
    for dir in ["/dev/sgx:", "/dev/sgx/:"] {
        let at = lines.iter().position(|l| *l == dir).unwrap_or_else(|| panic!("{dir} listed: {stdout}"));
        assert_eq!(lines[at + 1], "total 0", "{stdout}");
        assert!(starts(lines[at + 2], "lrwxrwxrwx 1 ", " enclave -> ../sgx_enclave"), "{stdout}");
        assert!(starts(lines[at + 3], "lrwxrwxrwx 1 ", " provision -> ../sgx_provision"), "{stdout}");
    }
    // find lists /dev through fdopendir, looks at each name relative to its descriptor and
    // descends into /dev/sgx (openat of "sgx" in it, fdopendir).
    let out = sgxemu(&["run", "--", "find", "/dev", "-maxdepth", "2", "-path", "*sgx*", "-printf", "%p %y %l\\n"]);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "/dev/sgx d \n/dev/sgx/enclave l ../sgx_enclave\n/dev/sgx/provision l ../sgx_provision\n\
         /dev/sgx_enclave c \n/dev/sgx_provision c \n"
    );
}

#[test]
fn raw_listings_working_directories_and_msr_streams_see_the_emulated_platform() {
    if Path::new("/dev/sgx").exists() {
        return; // a host with the driver lists and enters its own
    }
    let exe = build("discovery_syscalls");
    let out = sgxemu(&["run", "--", exe.to_str().expect("utf-8 path")]);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(text(&out.stderr), "");
    // getdents64/getdents through syscall(), glibc's wrapper and the program's own
    // instruction: the emulated entries once, after the host's; one per call in a buffer
    // that holds one; EINVAL (22) in one too small; resumable at d_off and rewound by lseek.
    // readdir (the C library's internal getdents64) still gives each once.
    assert_eq!(
        text(&out.stdout),
        "syscall getdents64 /dev: sgx/d sgx_enclave/c sgx_provision/c (3 entries in 1 calls)\n\
         48-byte getdents64 /dev: sgx/d sgx_enclave/c sgx_provision/c (3 entries in 3 calls)\n\
         resume at the last host entry's d_off: 1, 16 bytes: -1 errno 22\n\
         then: sgx/d sgx_enclave/c sgx_provision/c (3 entries in 1 calls)\n\
         rewound, getdents64(): sgx/d sgx_enclave/c sgx_provision/c (3 entries in 1 calls)\n\
         own syscall instruction /dev: sgx/d sgx_enclave/c sgx_provision/c (3 entries in 1 calls)\n\
         old getdents /dev: sgx/d sgx_enclave/c sgx_provision/c (3 entries in 1 calls)\n\
         syscall getdents64 /dev/sgx: ./d ../d enclave/l provision/l (4 entries in 1 calls)\n\
         old getdents /dev/sgx: ./d ../d enclave/l provision/l (4 entries in 1 calls)\n\
         own syscall instruction /dev/sgx: ./d ../d enclave/l provision/l (4 entries in 4 calls)\n\
         readdir /dev: 3 sgx entries\n\
         chdir /dev/sgx: 0\n\
         in /dev/sgx: getcwd /dev/sgx syscall /dev/sgx /proc/self/cwd /dev/sgx\n\
         open enclave: 1 stat provision: 1 lstat enclave: 1 readlink: ../sgx_enclave target: 1 stat .: 1 other name: 1\n\
         opendir .: ./d ../d enclave/l provision/l\n\
         chdir ..: 0\n\
         back: getcwd /dev syscall /dev /proc/self/cwd /dev\n\
         fchdir: 0\n\
         after fchdir: getcwd /dev/sgx syscall /dev/sgx /proc/self/cwd /dev/sgx\n\
         openat dirfd provision: 1\n\
         syscall chdir /: getcwd / syscall / /proc/self/cwd /\n\
         own instruction openat dirfd enclave: 1 ../sgx_provision\n\
         own instruction chdir /dev/sgx: getcwd /dev/sgx syscall /dev/sgx /proc/self/cwd /dev/sgx\n\
         raw chdirs: 0, chdir enclave: -1 errno 20\n\
         stdio 0x3a: 0 1 0x60001, 0x8c: 0 1 a6053e051270b7ac, ftell 148, fileno pread 0x8d: 8 6cfbe8ba8b3b413d\n\
         fdopen 0x8f: 1 d4f8c05909f9bb3b\n\
         readv 0x3a: 16 0x60001 0x60001\n\
         preadv 0x8d: 8 6cfbe8ba8b3b413d\n\
         syscall pread64 0x8e: 8 c4916d99f2b3735d\n\
         syscall preadv 0x8c: 16 a6053e051270b7ac a6053e051270b7ac\n\
         syscall pread64 4 bytes: -1 errno 22\n\
         own pread64 0x8f: 8 d4f8c05909f9bb3b, own lseek+read 0x3a: 8 0x60001\n\
         syscall openat: 1, newfstatat: 0 char 1, ioctl: -1 errno 14, close: 0\n\
         syscall rt_sigprocmask: 0, SIGSEGV blocked as asked: 1, getpid: 1\n"
    );
}

/// The environment variable that makes [`rust_helper`] do its work (it is a no-op in an
/// ordinary test run).
const HELPER: &str = "SGXEMU_RUN_TEST_HELPER";

/// Run by [`rust_programs_see_the_devices`] under `sgxemu run`: what Rust's standard
/// library (statx, readlink, realpath underneath) sees of the device paths.
#[test]
fn rust_helper() {
    if std::env::var_os(HELPER).is_none() {
        return;
    }
    use std::os::unix::fs::FileTypeExt;
    let enclave = Path::new("/dev/sgx_enclave");
    let char_device = std::fs::metadata("/dev/sgx/enclave").is_ok_and(|m| m.file_type().is_char_device());
    let link = std::fs::symlink_metadata("/dev/sgx/provision").is_ok_and(|m| m.file_type().is_symlink());
    println!(
        "helper: exists {} {} char {char_device} link {link} target {:?} canonical {:?}",
        enclave.exists(),
        Path::new("/dev/sgx_provision").exists(),
        std::fs::read_link("/dev/sgx/enclave").ok(),
        std::fs::canonicalize("/dev/sgx/provision").ok(),
    );
}

#[test]
fn rust_programs_see_the_devices() {
    let me = std::env::current_exe().expect("the test binary");
    let out = support::sgxemu_with_env(
        &["run", "--", me.to_str().expect("utf-8 path"), "rust_helper", "--exact", "--nocapture", "--test-threads=1"],
        &[(HELPER, "1")],
    );
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(
            "helper: exists true true char true link true target Some(\"../sgx_enclave\") \
             canonical Some(\"/dev/sgx_provision\")"
        ),
        "{stdout}"
    );
}

#[test]
fn programs_read_sgx_from_cpuinfo_sysfs_and_msrs() {
    let exe = build("platform_files");
    let out = sgxemu(&["run", "--epc", "64M", "--", exe.to_str().expect("utf-8 path")]);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    // IA32_FEATURE_CONTROL: LOCK | SGX_LC | SGX_ENABLE; the hash MSRs: Intel's launch key
    // hash (the part's reset values); EIO (5) for another MSR, EINVAL (22) for a read that
    // is no multiple of 8 bytes, EACCES (13) for a write open, ENOENT (2) for no such CPU.
    assert_eq!(
        text(&out.stdout),
        "cpuinfo: processors 1 flags 1 sgx 1 sgx_lc 1\n\
         cpuinfo open: sgx_lc 1\n\
         sgx_total_bytes: 67108864\n\
         msr 0x3a: 0 0x60001 last cpu 1\n\
         msr 0x8c: 0 a6053e051270b7ac\n\
         msr 0x8d: 0 6cfbe8ba8b3b413d\n\
         msr 0x8e: 0 c4916d99f2b3735d\n\
         msr 0x8f: 0 d4f8c05909f9bb3b\n\
         read at 0x8c: 16 a6053e051270b7ac a6053e051270b7ac\n\
         msr 0x10: 5, 4 bytes: 22, write open: 13, cpu 99999: 2\n\
         dup: 0\n"
    );
    // Tools that read the files themselves see the same.
    let out = sgxemu(&["run", "--", "sh", "-c", "grep -c -w sgx_lc /proc/cpuinfo; grep -c ^processor /proc/cpuinfo"]);
    let counts: Vec<String> = text(&out.stdout).lines().map(str::to_owned).collect();
    assert!(counts.len() == 2 && counts[0] == counts[1] && counts[0] != "0", "{counts:?}");
}

#[test]
fn boolean_settings_take_the_usual_words() {
    // `sgxemu run` sets SGXEMU_SGX1=1, which an `sgxemu` inside must accept.
    let out = sgxemu(&["run", "--sgx1", "--", env!("CARGO_BIN_EXE_sgxemu"), "info"]);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stdout).contains("SGX1 only"), "{}", text(&out.stdout));
    for value in ["1", "yes", "ON", "true", "0", "off", ""] {
        let out = support::sgxemu_with_env(&["run", "--", "true"], &[("SGXEMU_STATS", value), ("SGXEMU_SGX1", value)]);
        assert!(out.status.success(), "{value:?}: {}", text(&out.stderr));
    }
    let out = support::sgxemu_with_env(&["run", "--", "true"], &[("SGXEMU_SGX1", "maybe")]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(stderr.lines().next().is_some_and(|l| l.contains("SGXEMU_SGX1") && l.contains("maybe")), "{stderr}");
}

/// A fake `linux-vdso.so.1` (soname and version `LINUX_2.6` of the kernel's vDSO) to link
/// against, as Fortanix's runner does; returns its path.
fn fake_linux_vdso() -> PathBuf {
    let dir = build_dir("fake-vdso");
    let script = dir.join("vdso.lds");
    std::fs::write(
        &script,
        "LINUX_2.6 {\n  global: __vdso_sgx_enter_enclave; __vdso_clock_gettime;\n  local: *;\n};\n",
    )
    .expect("a version script");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/programs/fake_vdso.c");
    let lib = dir.join("linux-vdso.so.1");
    let status = Command::new("gcc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&lib)
        .arg(&src)
        .arg(format!("-Wl,--version-script={}", script.display()))
        .arg("-Wl,-soname,linux-vdso.so.1")
        .status()
        .expect("gcc runs");
    assert!(status.success(), "gcc {src:?}");
    lib
}

#[test]
fn the_dynamic_linker_and_dlsym_find_the_vdso_entry_point() {
    let lib = fake_linux_vdso();
    let lib = lib.to_str().expect("utf-8 path");
    // A weak reference without DT_NEEDED linux-vdso.so.1; a strong versioned one
    // (__vdso_sgx_enter_enclave@LINUX_2.6) with it; Fortanix's runner's: weak, versioned,
    // DT_NEEDED.
    let programs = [
        build_as("vdso_symbol", "vdso_weak", &["-DWEAK", "-ldl"]),
        build_as("vdso_symbol", "vdso_versioned", &["-DVERSIONED", "-Wl,--no-as-needed", lib, "-ldl"]),
        build_as("vdso_symbol", "vdso_weak_versioned", &["-DWEAK", "-DVERSIONED", "-Wl,--no-as-needed", lib, "-ldl"]),
    ];
    // At run time the dynamic linker takes linux-vdso.so.1 to be the vDSO it mapped: the
    // file is not needed.
    std::fs::remove_file(lib).expect("the fake vDSO goes");
    for exe in &programs {
        let out = sgxemu(&["run", "--", exe.to_str().expect("utf-8 path")]);
        assert!(out.status.success(), "{exe:?}: {}{}", text(&out.stdout), text(&out.stderr));
        // -EINVAL (-22) for leaf 0 and for a reserved byte of `run`; EENTER of TCS 0 is a
        // fault the vDSO reports in `run` (return 0).
        assert_eq!(
            text(&out.stdout),
            "linked: leaf0 -22 reserved -22 eenter 0 reported 1\n\
             dlsym: leaf0 -22 reserved -22 eenter 0 reported 1\n\
             same 1\n",
            "{exe:?}"
        );
    }
}

#[test]
fn dlsym_finds_the_entry_point_in_the_vdso_s_handle() {
    let exe = build_as("vdso_dlsym", "vdso_dlsym", &["-ldl"]);
    let out = sgxemu(&["run", "--", exe.to_str().expect("utf-8 path")]);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "vdso handle 1: dlsym -22 dlvsym -22 same 1 in getauxval's image 1\n\
         other version: 0\n\
         default -22 next -22 dlvsym default -22 same 1\n\
         open next is default 1\n\
         clock_gettime 1 malloc next 1 default 1 versioned 1 missing 1\n"
    );
}

#[test]
fn the_initial_auxv_and_proc_self_auxv_name_the_synthetic_vdso() {
    let exe = build("vdso_auxv");
    let out = sgxemu(&["run", "--", exe.to_str().expect("utf-8 path")]);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    // Every view gives getauxval's base, whose image has __vdso_sgx_enter_enclave in both
    // hash tables (leaf 0: -EINVAL) and the host's functions forwarded.
    let line = "base getauxval's clock_gettime gnu_hash -22 clock_gettime hash -22";
    assert_eq!(text(&out.stdout), format!("stack: {line}\nproc: {line}\npid: {line}\n"));
}

#[test]
fn system_calls_made_without_the_c_library_reach_the_devices() {
    let exe = build("raw_syscalls");
    for part in ["ordinary", "devices", "signals"] {
        let out = sgxemu(&["run", "--", exe.to_str().expect("utf-8 path"), part]);
        let stdout = text(&out.stdout);
        assert!(out.status.success(), "{part}: {stdout}{}", text(&out.stderr));
        assert!(stdout.contains(&format!("{part} ok")), "{stdout}");
    }
    // The same program outside the emulator: its ordinary system calls work there too (the
    // test of the test).
    let out = Command::new(&exe).arg("ordinary").output().expect("runs");
    assert!(out.status.success(), "{}", text(&out.stdout));
}

#[test]
fn a_static_executable_is_refused_in_one_line() {
    let exe = build_as("raw_syscalls", "raw_syscalls_static", &["-static"]);
    let out = sgxemu(&["run", "--", exe.to_str().expect("utf-8 path"), "devices"]);
    assert_eq!(out.status.code(), Some(126), "{}{}", text(&out.stdout), text(&out.stderr));
    let stderr = text(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("sgxemu: cannot run ") && stderr.contains("statically linked"), "{stderr}");
    assert!(text(&out.stdout).is_empty(), "the program did not start");
}

#[test]
fn the_vdso_entry_point_works_before_the_emulator_s_constructor_ran() {
    let lib = build_as("vdso_early", "libvdso_early.so", &["-shared", "-fPIC", "-DLIB", "-ldl"]);
    let dir = lib.parent().expect("a directory").to_str().expect("utf-8 path");
    let exe = build_as(
        "vdso_early",
        "vdso_early",
        &[&format!("-L{dir}"), "-Wl,--no-as-needed", "-lvdso_early", &format!("-Wl,-rpath,{dir}"), "-ldl"],
    );
    let out = sgxemu(&["run", "--", exe.to_str().expect("utf-8 path")]);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(text(&out.stdout), "constructor: leaf0 -22 reserved -22\nmain: leaf0 -22 reserved -22\n");
}

#[test]
fn proc_self_maps_names_enclave_mappings_as_the_kernel_does() {
    let exe = build("enclave_maps");
    let out = sgxemu(&["run", "--", exe.to_str().expect("utf-8 path")]);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    let once = "+0-+4000 rw-s /dev/sgx_enclave\n+4000-+100000 r-xs /dev/sgx_enclave\n";
    assert_eq!(text(&out.stdout), format!("{once}{once}"), "through open and fopen");
}

#[test]
fn the_emulator_s_epc_descriptor_is_none_of_the_program_s() {
    let exe = build("own_fds");
    let out = sgxemu(&["run", "--", exe.to_str().expect("utf-8 path")]);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    // EBADF is 9; raw calls return -errno.
    let expected = "device fd 3\n\
        epc far 1\n\
        close -1 9\n\
        raw close -9 0\n\
        dup -1 9\n\
        fcntl -1 9\n\
        mmap 1 9\n\
        raw dup2 from it -9 0\n\
        dup2 onto it 1\n\
        moved 1 far 1\n\
        raw dup3 onto it 1\n\
        moved again 1\n\
        close_range 0\n\
        after close_range epc 1 device closed 1\n\
        reopened 3\n\
        raw close_range 0\n\
        after raw close_range epc 1\n\
        after closefrom epc 1 next fd 3\n";
    assert_eq!(text(&out.stdout), expected);
}

#[test]
fn a_mapping_the_program_puts_over_enclave_pages_replaces_them() {
    let exe = build("program_maps");
    let out = sgxemu(&["run", "--", exe.to_str().expect("utf-8 path")]);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    let stdout = text(&out.stdout);
    // Of the five enclave pages only the two the program left are the enclave's; its own
    // (mmap through the C library, a raw mmap, mremap) are ordinary private memory.
    let enclave: Vec<&str> = stdout.lines().filter(|l| l.ends_with("/dev/sgx_enclave")).collect();
    assert_eq!(enclave, ["+0-+1000 rw-s /dev/sgx_enclave", "+2000-+3000 rw-s /dev/sgx_enclave"], "{stdout}");
    for page in ["+1000-+2000 rw-p", "+3000-+", "-+5000 rw-p"] {
        assert!(stdout.contains(page), "{page} in {stdout}");
    }
    assert!(stdout.ends_with("data libc raw moved\n"), "{stdout}");
}

/// `sgxemu run -- sh -c 'echo $LD_PRELOAD'` with HOME and the XDG variables unset, so the
/// preload library goes to `$TMPDIR/sgxemu-<uid>`.
fn run_with_tmpdir(tmpdir: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_sgxemu"))
        .args(["run", "--", "sh", "-c", "echo $LD_PRELOAD"])
        .env_remove("HOME")
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("XDG_CACHE_HOME")
        .env_remove("SGXEMU_EPC")
        .env("TMPDIR", tmpdir)
        .output()
        .expect("sgxemu runs")
}

#[test]
fn the_preload_library_is_taken_only_from_a_directory_of_the_user_s_own() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let tmpdir = build_dir("preload-dir");
    let _ = std::fs::remove_dir_all(&tmpdir);
    std::fs::create_dir_all(&tmpdir).unwrap();
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    let private = tmpdir.join(format!("sgxemu-{uid}"));

    // A symbolic link planted where the directory goes (another user's directory, say):
    // refused, never followed.
    let planted = tmpdir.join("planted");
    std::fs::create_dir(&planted).unwrap();
    std::os::unix::fs::symlink(&planted, &private).unwrap();
    let out = run_with_tmpdir(&tmpdir);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("no private directory") && stderr.contains("symbolic link"), "{stderr}");
    assert_eq!(std::fs::read_dir(&planted).unwrap().count(), 0, "nothing written through the link");
    std::fs::remove_file(&private).unwrap();

    // A directory others can write in: refused.
    std::fs::create_dir(&private).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = run_with_tmpdir(&tmpdir);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("lets others write in it"), "{}", text(&out.stderr));
    std::fs::remove_dir(&private).unwrap();

    // Root: a directory another user (nobody) created first, with a library planted in it,
    // is refused. (Other users cannot make a directory someone else owns.)
    if uid == 0 {
        std::fs::create_dir(&private).unwrap();
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::chown(&private, Some(65534), Some(65534)).unwrap();
        let out = run_with_tmpdir(&tmpdir);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
        assert!(text(&out.stderr).contains("owned by uid 65534, not by uid 0"), "{}", text(&out.stderr));
        std::fs::remove_dir(&private).unwrap();
    }

    // Nothing there: created 0700, the library inside, and the program runs.
    let out = run_with_tmpdir(&tmpdir);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let metadata = std::fs::symlink_metadata(&private).unwrap();
    assert!(metadata.is_dir() && metadata.uid() == uid && metadata.mode() & 0o777 == 0o700);
    let ld_preload = text(&out.stdout);
    assert!(ld_preload.trim().starts_with(private.join("libsgxemu_preload-").to_str().unwrap()), "{ld_preload}");
    let _ = std::fs::remove_dir_all(&tmpdir);
}

#[test]
fn closing_an_enclave_descriptor_while_its_ioctls_run_never_aborts() {
    // The kernel releases an enclave at the last reference to its file, and an ioctl in
    // flight holds one: a close racing ADD_PAGES lets the call finish (or find EBADF).
    let exe = build_as("close_race", "close_race", &["-lpthread"]);
    let out = sgxemu(&["run", "--", exe.to_str().expect("utf-8 path")]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{}{stderr}", text(&out.stdout));
    // Every call completed, or found the descriptor closed (EBADF): no other error, such
    // as the ENOTTY of a descriptor no longer the emulator's but not yet closed.
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with("iterations 200 ") && stdout.ends_with(" other 0\n"), "{stdout}{stderr}");
    assert!(!stderr.contains("internal error") && !stderr.contains("driver bug"), "{stderr}");
}

#[test]
fn enclaves_until_the_epc_is_exhausted_end_with_enomem() {
    // 8 MiB = 2048 EPC pages; each open, uninitialized enclave keeps its SECS and VA page:
    // 1023 fit (with one added page, reclaimable, each), then ENOMEM — promptly, with no
    // retry loop — and closing them frees everything.
    let exe = build("epc_exhaustion");
    let out = sgxemu(&["run", "--epc", "8M", "--", exe.to_str().expect("utf-8 path")]);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    let stdout = text(&out.stdout);
    let mut lines = stdout.lines();
    let first = lines.next().unwrap_or_default();
    let words: Vec<&str> = first.split(' ').collect();
    assert!(words.len() == 6 && words[0] == "enclaves" && words[5] == "12", "ENOMEM expected: {stdout}");
    let count: usize = words[1].parse().expect("a count");
    assert!((1000..=1024).contains(&count), "{stdout}");
    assert_eq!(lines.next(), Some("after close: ok 0"), "{stdout}");
}

#[test]
fn device_errnos_decided_outside_the_driver_s_ioctls_are_the_kernel_s() {
    let exe = build("device_errnos");
    let out = sgxemu(&["run", "--", exe.to_str().expect("utf-8 path")]);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        // EINVAL 22, EFAULT 14, EEXIST 17, EACCES 13. mprotect goes VMA by VMA: over
        // [ordinary][enclave, page 0 read-only][ordinary] the first page changes before the
        // enclave's EACCES, the last does not; starting at the enclave, nothing changes.
        "create-2^63 22\n\
         create 0\n\
         add-readable 0\n\
         add-exec-only 14\n\
         fioclex 0 cloexec 1\n\
         fionclex 0 cloexec 0\n\
         fionbio 0 nonblock 1\n\
         fioasync-off 0\n\
         figetbsz 0 positive 1\n\
         mmap-noreplace-over-a-mapping 17\n\
         mmap-noreplace-free 0\n\
         mmap-unaligned-offset 22\n\
         mmap-unaligned-hint 0\n\
         mmap-write-of-rdonly 13\n\
         mmap-read-of-rdonly 0\n\
         mprotect-write-of-rdonly 13\n\
         mmap-enclave 0\n\
         mprotect-unaligned 22\n\
         mprotect-unknown-bits 22\n\
         mprotect-across-read 0 below r- above r-\n\
         mprotect-across-write 13 below rw above r-\n\
         mprotect-enclave-first 13 above --\n"
    );
}

#[test]
fn calls_that_wait_with_a_mask_keep_the_emulator_s_signals_deliverable_and_only_the_program_s_end_them() {
    let exe = build_as("wait_masks", "wait_masks", &["-pthread"]);
    let out = sgxemu(&["run", "--", exe.to_str().expect("utf-8 path")]);
    assert!(out.status.success(), "{:?} {}{}", out.status, text(&out.stdout), text(&out.stderr));
    let stdout = text(&out.stdout);
    let expected = ["sigsuspend", "ppoll", "pselect", "epoll_pwait", "epoll_pwait2", "sigwaitinfo", "sigtimedwait"]
        .map(|call| format!("{call} ok"))
        .join("\n");
    assert_eq!(stdout.trim(), expected);
}
