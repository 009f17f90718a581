//! `sgxemu measure`: MRENCLAVE of an enclave file as EINIT will compute it, and — given a
//! SIGSTRUCT — whether that SIGSTRUCT would let it initialise.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;
use sgxemu_arch::Sigstruct;
use sgxemu_enclave::sign::hex;
use zerocopy::FromBytes;

use super::image_input::{InputError, LayoutArgs, read_image};
use crate::input_file::{InputFileError, MAX_ENCLAVE_FILE, read_regular};

/// Options of `sgxemu measure`.
#[derive(Debug, Args)]
pub struct MeasureArgs {
    /// The enclave: a static-PIE ELF or an SGXS file.
    #[arg(value_name = "ENCLAVE")]
    pub enclave: PathBuf,
    /// A SIGSTRUCT to check against the enclave (signature, MRENCLAVE, attributes).
    #[arg(long, value_name = "FILE")]
    pub sigstruct: Option<PathBuf>,
    /// Also write the image as an SGXS file. SGXS records every page (a measured page takes
    /// 5 KiB), so a file that would exceed 1 GiB is refused and nothing is written.
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
    #[error(transparent)]
    Read(#[from] InputFileError),
    #[error("{path} is {len} bytes; a SIGSTRUCT is 1808")]
    SigstructSize { path: PathBuf, len: usize },
    #[error("{path} does not fit the enclave: {source}")]
    Mismatch { path: PathBuf, source: sgxemu_enclave::MismatchError },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error(
        "not writing {path}: the SGXS file would be {len} bytes ({pages} pages, {measured} measured), over the {MAX_ENCLAVE_FILE}-byte limit for enclave files; SGXS records every page, so measure a smaller layout or use the ELF"
    )]
    SgxsTooLarge { path: PathBuf, len: u64, pages: u64, measured: u64 },
}

/// Measures, prints, and checks the SIGSTRUCT if one was given.
pub fn run(args: &MeasureArgs, out: &mut dyn Write) -> Result<(), MeasureError> {
    let image = read_image(&args.enclave, &args.layout)?;
    // Refused before any work: the stream would be too large to read back.
    if let Some(path) = &args.sgxs {
        let len = sgxemu_enclave::sgxs::sgxs_len(&image);
        if len > MAX_ENCLAVE_FILE {
            let (pages, measured) = (image.page_count(), image.measured_page_count());
            return Err(MeasureError::SgxsTooLarge { path: path.clone(), len, pages, measured });
        }
    }
    let mrenclave = super::measuring::mrenclave(&image);
    let measured = image.measured_page_count();
    let _ = writeln!(out, "MRENCLAVE  {}", hex(&mrenclave));
    let _ = writeln!(
        out,
        "layout     size {:#x}, {} pages added ({} measured), {} TCS, SSAFRAMESIZE {}, dynamic memory from {:#x}",
        image.size,
        image.page_count(),
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
        // A page is plenty: anything longer is not a SIGSTRUCT.
        let bytes = read_regular(path, 4096)?;
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
