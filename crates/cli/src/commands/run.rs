//! `sgxemu run [OPTIONS] -- PROGRAM [ARGS]`: runs PROGRAM with the emulator preloaded, so
//! its `/dev/sgx_enclave`, vDSO and CPUID reach the emulated SGX2 platform, and exits with
//! PROGRAM's status (the process becomes PROGRAM).

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use clap::Args;

use crate::platform::PlatformArgs;

/// The preload library, built with this binary (see build.rs).
static PRELOAD: &[u8] = include_bytes!(env!("SGXEMU_PRELOAD_SO"));

/// Options of `sgxemu run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    platform: PlatformArgs,
    /// Print counts of each leaf, AEX, fault and reclaim to stderr when the program exits.
    /// The variable takes 1/0, true/false, yes/no, on/off.
    #[arg(long, env = "SGXEMU_STATS", value_parser = crate::platform::boolean(sgxemu_native::config::ENV_STATS))]
    stats: bool,
    /// The program and its arguments.
    #[arg(required = true, trailing_var_arg = true, value_name = "PROGRAM [ARGS]")]
    program: Vec<OsString>,
}

/// Why the program could not be started.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The platform options were refused.
    #[error(transparent)]
    Platform(#[from] crate::platform::PlatformError),
    /// The preload library could not be installed in a private directory.
    #[error(transparent)]
    Preload(#[from] crate::preload_install::InstallError),
    /// exec failed.
    #[error("cannot run {program}: {source}")]
    Exec {
        /// The program.
        program: String,
        /// Why.
        source: std::io::Error,
    },
}

/// Exit status for a program `sgxemu run` refuses to start (as a shell's "cannot execute").
pub const REFUSED: i32 = 126;

/// The file `program` names, as `execvp` finds it (a name without `/` is searched in PATH).
fn resolve_program(program: &std::ffi::OsStr) -> Option<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    if program.as_bytes().contains(&b'/') {
        return Some(PathBuf::from(program));
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path).map(|dir| dir.join(program)).find(|candidate| candidate.is_file())
}

/// Whether `bytes` (the start of a file) is an x86-64 ELF executable without a program
/// interpreter: a static executable, which the dynamic loader never sees, so the preload
/// library (and with it the emulated platform) would not apply. The dynamic loader itself,
/// run to start a program, is not one.
pub fn is_static_executable(bytes: &[u8], name: &std::ffi::OsStr) -> bool {
    use std::os::unix::ffi::OsStrExt;
    // Offsets come from the file: near usize::MAX, `at + len` must not overflow.
    let field = |at: usize, len: usize| bytes.get(at..at.checked_add(len)?);
    let u16_at = |at: usize| field(at, 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |at: usize| field(at, 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    let u64_at = |at: usize| field(at, 8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes);
    if !bytes.starts_with(b"\x7fELF\x02\x01") || !matches!(u16_at(16), Some(2 | 3)) {
        return false;
    }
    let file = Path::new(name).file_name().map(|f| f.as_bytes()).unwrap_or_default();
    if file.starts_with(b"ld-linux") || file.starts_with(b"ld.so") {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(32), u16_at(54), u16_at(56)) else { return false };
    const PT_INTERP: u32 = 3;
    let has_interp = (0..usize::from(phnum)).any(|i| {
        let at = usize::try_from(phoff).unwrap_or(usize::MAX).saturating_add(i * usize::from(phentsize));
        u32_at(at) == Some(PT_INTERP)
    });
    // Headers beyond what was read: assume dynamic (the common case) rather than refuse.
    let table_end =
        usize::try_from(phoff).ok().and_then(|o| o.checked_add(usize::from(phnum) * usize::from(phentsize)));
    let read_all = table_end.is_some_and(|end| end <= bytes.len());
    read_all && !has_interp
}

/// Refuses a static executable in one line (exit status [`REFUSED`]).
fn refuse_static(program: &std::ffi::OsStr) {
    use std::io::Read;
    let Some(path) = resolve_program(program) else { return };
    let mut head = vec![0u8; 64 << 10];
    let Ok(n) = std::fs::File::open(&path).and_then(|mut f| f.read(&mut head)) else { return };
    if is_static_executable(&head[..n], path.as_os_str()) {
        eprintln!(
            "sgxemu: cannot run {}: a statically linked executable (no program interpreter), which the emulator's preload library cannot enter",
            program.to_string_lossy()
        );
        std::process::exit(REFUSED);
    }
}

/// Replaces this process with the program. Returns only on failure. A static executable
/// is refused (exit status 126): LD_PRELOAD does not apply to it.
pub fn run(args: &RunArgs) -> Result<(), RunError> {
    // Validate the platform here, where a bad option is one clear line.
    args.platform.processor()?;
    if let Some(program) = args.program.first() {
        refuse_static(program);
    }
    let preload = crate::preload_install::install(PRELOAD)?;
    let mut ld_preload = preload.into_os_string();
    if let Some(existing) = std::env::var_os("LD_PRELOAD").filter(|v| !v.is_empty()) {
        ld_preload.push(":");
        ld_preload.push(existing);
    }
    let (program, rest) = args.program.split_first().expect("clap requires PROGRAM");
    let mut command = Command::new(program);
    command.args(rest).env("LD_PRELOAD", ld_preload).env("SGXEMU_EPC", args.platform.epc.0.to_string());
    if args.platform.sgx1 {
        command.env("SGXEMU_SGX1", "1");
    } else {
        command.env_remove("SGXEMU_SGX1");
    }
    if args.stats {
        command.env("SGXEMU_STATS", "1");
    } else {
        command.env_remove("SGXEMU_STATS");
    }
    let source = command.exec();
    Err(RunError::Exec { program: program.to_string_lossy().into_owned(), source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// An x86-64 ELF header (64 bytes) with the given type and program header table.
    fn header(e_type: u16, phoff: u64, phnum: u16) -> Vec<u8> {
        let mut h = vec![0u8; 64];
        h[..6].copy_from_slice(b"\x7fELF\x02\x01");
        h[16..18].copy_from_slice(&e_type.to_le_bytes());
        h[32..40].copy_from_slice(&phoff.to_le_bytes());
        h[54..56].copy_from_slice(&56u16.to_le_bytes());
        h[56..58].copy_from_slice(&phnum.to_le_bytes());
        h
    }

    #[test]
    fn a_program_header_table_at_the_end_of_the_address_space_is_not_static() {
        // phoff + the table's size overflowed (a panic in debug builds).
        assert!(!is_static_executable(&header(2, u64::MAX - 10, 3), "x".as_ref()));
        let mut exe = header(2, 64, 1);
        exe.extend_from_slice(&[0u8; 56]); // one PT_NULL: no interpreter
        assert!(is_static_executable(&exe, "x".as_ref()));
        exe[64..68].copy_from_slice(&3u32.to_le_bytes()); // PT_INTERP
        assert!(!is_static_executable(&exe, "x".as_ref()));
    }

    proptest! {
        /// Any bytes — random, or an ELF header with random fields, cut anywhere — get an
        /// answer, never a panic.
        #[test]
        fn any_file_head_is_classified(e_type in 0u16..4, phoff in any::<u64>(), phnum in any::<u16>(),
                                       tail in prop::collection::vec(any::<u8>(), 0..256),
                                       cut in any::<prop::sample::Index>()) {
            let mut bytes = header(e_type, phoff, phnum);
            bytes.extend_from_slice(&tail);
            bytes.truncate(cut.index(bytes.len() + 1));
            let _ = is_static_executable(&bytes, "program".as_ref());
            let _ = is_static_executable(&tail, "program".as_ref());
        }
    }
}
