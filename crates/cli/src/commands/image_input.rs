//! What `measure`, `sign` and `demo` share: reading an enclave file (static-PIE ELF or
//! Fortanix SGXS) into an image, with the layout options for ELF input.

use std::path::{Path, PathBuf};

use clap::Args;
use sgxemu_enclave::EnclaveImage;
use sgxemu_enclave::layout::Layout;

use crate::size::ByteSize;

/// Layout options for ELF input (SGXS files carry their layout).
#[derive(Debug, Clone, Args)]
pub struct LayoutArgs {
    /// Threads (TCS pages) to lay out.
    #[arg(long, default_value_t = 2, value_name = "N")]
    pub threads: u32,
    /// Stack size per thread (K/M/G suffixes; whole pages).
    #[arg(long, default_value = "64K", value_name = "SIZE")]
    pub stack: ByteSize,
    /// Initial heap size (whole pages).
    #[arg(long, default_value = "1M", value_name = "SIZE")]
    pub heap: ByteSize,
    /// EEXTEND the heap pages too (changes MRENCLAVE).
    #[arg(long)]
    pub measure_heap: bool,
    /// SSA frames per thread (TCS.NSSA).
    #[arg(long, default_value_t = 2, value_name = "N")]
    pub nssa: u32,
    /// ELRANGE size (a power of two); default: the smallest that fits.
    #[arg(long, value_name = "SIZE")]
    pub size: Option<ByteSize>,
    /// Room to leave for dynamic memory (EAUG) after the heap.
    #[arg(long, default_value = "0", value_name = "SIZE")]
    pub dynamic: ByteSize,
    /// Set the DEBUG attribute.
    #[arg(long)]
    pub debug: bool,
    /// SECS.MISCSELECT to request (0 or 1: EXINFO in the SSA).
    #[arg(long, default_value_t = 0, value_name = "BITS")]
    pub miscselect: u32,
    /// The enclave applies its own relative relocations when it first runs: accept its
    /// R_X86_64_RELATIVE/RELR relocations (checked, never applied; MRENCLAVE unchanged).
    #[arg(long)]
    pub self_relocating: bool,
}

impl LayoutArgs {
    /// The layout these options describe.
    pub fn layout(&self) -> Result<Layout, InputError> {
        let pages = |what: &'static str, size: ByteSize| {
            if size.0.is_multiple_of(4096) {
                Ok(size.0 / 4096)
            } else {
                Err(InputError::NotPages { what, size: size.0 })
            }
        };
        Ok(Layout {
            threads: self.threads,
            stack_pages: pages("--stack", self.stack)?,
            heap_pages: pages("--heap", self.heap)?,
            measure_heap: self.measure_heap,
            nssa: self.nssa,
            size: self.size.map(|s| s.0),
            dynamic_pages: pages("--dynamic", self.dynamic)?,
            debug: self.debug,
            miscselect: self.miscselect,
            self_relocating: self.self_relocating,
            ..Layout::default()
        })
    }
}

/// Why an enclave file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// A size option is not whole pages.
    #[error("{what} {size:#x} is not a multiple of 4 KiB")]
    NotPages { what: &'static str, size: u64 },
    /// The file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    /// Neither format.
    #[error("{path} is neither an ELF file nor an SGXS file")]
    UnknownFormat { path: PathBuf },
    /// The ELF is not a usable enclave.
    #[error("{path}: {source}")]
    Elf { path: PathBuf, source: sgxemu_enclave::elf::ImageError },
    /// The SGXS stream is malformed.
    #[error("{path}: {source}")]
    Sgxs { path: PathBuf, source: sgxemu_enclave::sgxs::SgxsError },
    /// The layout options are invalid.
    #[error("{0}")]
    Layout(#[from] sgxemu_enclave::layout::LayoutError),
}

/// Reads `bytes` (named `path` in errors) as an ELF or SGXS enclave.
pub fn image_from_bytes(path: &Path, bytes: &[u8], layout: &LayoutArgs) -> Result<EnclaveImage, InputError> {
    let path = path.to_path_buf();
    if bytes.starts_with(b"\x7fELF") {
        let layout = layout.layout()?;
        return sgxemu_enclave::elf::image_from_elf(bytes, &layout).map_err(|source| InputError::Elf { path, source });
    }
    if bytes.starts_with(b"ECREATE\0") {
        return sgxemu_enclave::sgxs::read_sgxs(bytes)
            .map(|s| s.image)
            .map_err(|source| InputError::Sgxs { path, source });
    }
    Err(InputError::UnknownFormat { path })
}

/// Reads the enclave file at `path`.
pub fn read_image(path: &Path, layout: &LayoutArgs) -> Result<EnclaveImage, InputError> {
    let bytes = std::fs::read(path).map_err(|source| InputError::Read { path: path.to_path_buf(), source })?;
    image_from_bytes(path, &bytes, layout)
}
