//! `sgxemu measure`: MRENCLAVE of an enclave file as EINIT will compute it, and — given a
//! SIGSTRUCT — whether that SIGSTRUCT would let it initialise.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;
use sgxemu_arch::Sigstruct;
use sgxemu_enclave::sign::hex;
use zerocopy::FromBytes;

use super::image_input::{InputError, LayoutArgs, read_image};

/// Options of `sgxemu measure`.
#[derive(Debug, Args)]
pub struct MeasureArgs {
    /// The enclave: a static-PIE ELF or an SGXS file.
    #[arg(value_name = "ENCLAVE")]
    pub enclave: PathBuf,
    /// A SIGSTRUCT to check against the enclave (signature, MRENCLAVE, attributes).
    #[arg(long, value_name = "FILE")]
    pub sigstruct: Option<PathBuf>,
    /// Also write the image as an SGXS file.
    #[arg(long, value_name = "FILE")]
    pub sgxs: Option<PathBuf>,
    #[command(flatten)]
    pub layout: LayoutArgs,
}

/// Why measuring failed or the SIGSTRUCT does not fit.
#[derive(Debug, thiserror::Error)]
pub enum MeasureError {
    #[error(transparent)]
    Input(#[from] InputError),
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path} is {len} bytes; a SIGSTRUCT is 1808")]
    SigstructSize { path: PathBuf, len: usize },
    #[error("{path} does not fit the enclave: {source}")]
    Mismatch { path: PathBuf, source: sgxemu_enclave::MismatchError },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

/// Measures, prints, and checks the SIGSTRUCT if one was given.
pub fn run(args: &MeasureArgs, out: &mut dyn Write) -> Result<(), MeasureError> {
    let image = read_image(&args.enclave, &args.layout)?;
    let mrenclave = image.mrenclave();
    let measured = image.pages.iter().filter(|p| p.measured).count();
    let _ = writeln!(out, "MRENCLAVE  {}", hex(&mrenclave));
    let _ = writeln!(
        out,
        "layout     size {:#x}, {} pages added ({} measured), {} TCS, SSAFRAMESIZE {}, dynamic memory from {:#x}",
        image.size,
        image.pages.len(),
        measured,
        image.tcs.len(),
        image.ssaframesize,
        image.dynamic_start
    );
    if let Some(path) = &args.sgxs {
        let write = |source| MeasureError::Write { path: path.clone(), source };
        let mut file = std::io::BufWriter::new(std::fs::File::create(path).map_err(write)?);
        sgxemu_enclave::sgxs::write_sgxs(&image, &mut file).map_err(write)?;
        file.flush().map_err(write)?;
        let _ = writeln!(out, "wrote      {}", path.display());
    }
    if let Some(path) = &args.sigstruct {
        let bytes = std::fs::read(path).map_err(|source| MeasureError::Read { path: path.clone(), source })?;
        let sig = Sigstruct::read_from_bytes(&bytes)
            .map_err(|_| MeasureError::SigstructSize { path: path.clone(), len: bytes.len() })?;
        let mrsigner = sgxemu_enclave::sign::verify_with_mrenclave(&sig, &image, &mrenclave)
            .map_err(|source| MeasureError::Mismatch { path: path.clone(), source })?;
        let _ = writeln!(out, "SIGSTRUCT  matches: signature valid, MRENCLAVE and attributes agree");
        let _ = writeln!(out, "MRSIGNER   {}", hex(&mrsigner));
        let _ = writeln!(out, "ISVPRODID  {}  ISVSVN {}", sig.isvprodid, sig.isvsvn);
    }
    Ok(())
}
