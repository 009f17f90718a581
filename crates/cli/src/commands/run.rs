//! `sgxemu run [OPTIONS] -- PROGRAM [ARGS]`: runs PROGRAM with the emulator preloaded, so
//! its `/dev/sgx_enclave`, vDSO and CPUID reach the emulated SGX2 platform, and exits with
//! PROGRAM's status (the process becomes PROGRAM).

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use clap::Args;
use sha2::{Digest, Sha256};

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
    /// The preload library could not be written out.
    #[error("cannot write the preload library to {path}: {source}")]
    Preload {
        /// Where.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// exec failed.
    #[error("cannot run {program}: {source}")]
    Exec {
        /// The program.
        program: String,
        /// Why.
        source: std::io::Error,
    },
}

/// Directory for the extracted library: per user, private.
fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("sgxemu");
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("sgxemu");
    }
    if let Some(home) = std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(home).join(".cache").join("sgxemu");
    }
    // SAFETY: getuid has no preconditions.
    std::env::temp_dir().join(format!("sgxemu-{}", unsafe { libc::getuid() }))
}

/// Writes the embedded library once per content (the name carries its hash) and returns
/// its path. Written under a temporary name and renamed, so concurrent runs never see a
/// partial file.
pub fn extract_preload(dir: &Path) -> Result<PathBuf, RunError> {
    let hash = Sha256::digest(PRELOAD);
    let name: String = hash[..8].iter().map(|b| format!("{b:02x}")).collect();
    let path = dir.join(format!("libsgxemu_preload-{name}.so"));
    if std::fs::metadata(&path).is_ok_and(|m| m.len() == PRELOAD.len() as u64) {
        return Ok(path);
    }
    let error = |source| RunError::Preload { path: path.clone(), source };
    std::fs::create_dir_all(dir).map_err(error)?;
    let temp = dir.join(format!(".{name}.{}", std::process::id()));
    let mut file = std::fs::File::create(&temp).map_err(error)?;
    file.write_all(PRELOAD).map_err(error)?;
    drop(file);
    std::fs::rename(&temp, &path).map_err(error)?;
    Ok(path)
}

/// Replaces this process with the program. Returns only on failure.
pub fn run(args: &RunArgs) -> Result<(), RunError> {
    // Validate the platform here, where a bad option is one clear line.
    args.platform.processor()?;
    let preload = extract_preload(&cache_dir())?;
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
