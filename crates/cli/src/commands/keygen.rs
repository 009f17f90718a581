//! `sgxemu keygen`: a new RSA-3072 signing key with public exponent 3, as SIGSTRUCT needs.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use clap::Args;
use sgxemu_crypto::SigningKey;

/// Options of `sgxemu keygen`.
#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Where to write the private key (PKCS#1 PEM, mode 0600).
    #[arg(long, short, value_name = "FILE")]
    pub out: PathBuf,
    /// Replace an existing file.
    #[arg(long)]
    pub force: bool,
}

/// Why no key was written.
#[derive(Debug, thiserror::Error)]
pub enum KeygenError {
    #[error("{path} exists; pass --force to replace it")]
    Exists { path: PathBuf },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("key generation failed: {0}")]
    Key(#[from] sgxemu_crypto::KeyError),
}

/// Generates the key, writes it, and prints its MRSIGNER.
pub fn run(args: &KeygenArgs, out: &mut dyn Write) -> Result<(), KeygenError> {
    if args.out.exists() && !args.force {
        return Err(KeygenError::Exists { path: args.out.clone() });
    }
    // The OS generator only fails on kernels without getrandom(2), which Rust does not support.
    let key = SigningKey::generate(&mut getrandom::rand_core::UnwrapErr(getrandom::SysRng))?;
    let pem = key.to_pkcs1_pem()?;
    let write = |e| KeygenError::Write { path: args.out.clone(), source: e };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&args.out)
        .map_err(write)?;
    file.write_all(pem.as_bytes()).map_err(write)?;
    let _ = writeln!(out, "wrote {} (RSA-3072, e = 3)", args.out.display());
    let _ = writeln!(out, "MRSIGNER {}", sgxemu_enclave::sign::hex(&key.mrsigner()));
    Ok(())
}
