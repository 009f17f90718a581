//! What `measure`, `sign` and `demo` share: reading an enclave file (static-PIE ELF or
//! Fortanix SGXS) into an image, with the layout options for ELF input.

use std::path::{Path, PathBuf};

use clap::Args;
use sgxemu_enclave::EnclaveImage;
use sgxemu_enclave::layout::Layout;

use crate::input_file::{InputFileError, MAX_ENCLAVE_FILE, read_regular};
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
    /// ELRANGE size (a power of two below the maximum enclave size, 2^56); default: the
    /// smallest that fits.
    #[arg(long, value_name = "SIZE")]
    pub size: Option<ByteSize>,
    /// Room to leave for dynamic memory (EAUG) after the heap.
    #[arg(long, default_value = "0", value_name = "SIZE")]
    pub dynamic: ByteSize,
    /// Set the DEBUG attribute.
    #[arg(long)]
    pub debug: bool,
    /// SECS.MISCSELECT to request (0 or 1: EXINFO in the SSA; other bits are refused).
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
    /// The file cannot be read (missing, not a regular file, too large).
    #[error(transparent)]
    File(#[from] InputFileError),
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

/// Reads the enclave file at `path`: a regular file of at most [`MAX_ENCLAVE_FILE`] bytes.
pub fn read_image(path: &Path, layout: &LayoutArgs) -> Result<EnclaveImage, InputError> {
    let bytes = read_regular(path, MAX_ENCLAVE_FILE)?;
    image_from_bytes(path, &bytes, layout)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The layout options as `sgxemu` parses them from `args`.
    fn layout(args: &[&str]) -> LayoutArgs {
        #[derive(clap::Parser)]
        struct Options {
            #[command(flatten)]
            layout: LayoutArgs,
        }
        let argv = std::iter::once("sgxemu").chain(args.iter().copied());
        <Options as clap::Parser>::try_parse_from(argv).expect("valid options").layout
    }

    /// The demo enclave as an SGXS stream.
    fn demo_sgxs() -> Vec<u8> {
        let image = image_from_bytes(Path::new("demo.elf"), sgxemu_samples::DEMO_ELF, &layout(&[])).unwrap();
        let mut out = Vec::new();
        sgxemu_enclave::sgxs::write_sgxs(&image, &mut out).unwrap();
        out
    }

    /// What an accepted input may cost: runs of pages bounded by the file (pages of bytes,
    /// two partial pages per segment) and the threads (TCS, stack and SSA runs), however
    /// large the sizes asked for.
    fn assert_bounded(image: &EnclaveImage, input_len: usize, threads: u32) {
        let cap =
            input_len as u64 / 4096 + 2 * sgxemu_enclave::elf::MAX_LOAD_SEGMENTS as u64 + 3 * u64::from(threads) + 2;
        assert!(image.pages.len() as u64 <= cap, "{} runs for {input_len} bytes", image.pages.len());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Arbitrary bytes, either format's magic included, are refused or read, never a
        /// panic.
        #[test]
        fn random_input_never_panics(magic in prop::sample::select(vec![&b""[..], b"\x7fELF", b"ECREATE\0"]),
                                     tail in prop::collection::vec(any::<u8>(), 0..2048)) {
            let bytes = [magic, &tail[..]].concat();
            if let Ok(image) = image_from_bytes(Path::new("x"), &bytes, &layout(&[])) {
                assert_bounded(&image, bytes.len(), 2);
            }
        }

        /// Every truncation and byte edit of a real ELF or SGXS file, under random layout
        /// sizes up to petabytes: an error or an image whose memory is bounded by the file.
        #[test]
        fn truncated_and_edited_files_with_huge_layouts_stay_bounded(
            sgxs in any::<bool>(),
            cut in any::<prop::sample::Index>(),
            edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
            heap_log2 in 12u32..52,
            stack_log2 in 12u32..48,
            threads in 1u32..5,
        ) {
            let mut bytes = if sgxs { demo_sgxs() } else { sgxemu_samples::DEMO_ELF.to_vec() };
            for (at, v) in edits {
                let at = at.index(bytes.len());
                bytes[at] = v;
            }
            bytes.truncate(cut.index(bytes.len() + 1));
            let (heap, stack, threads_arg) =
                ((1u64 << heap_log2).to_string(), (1u64 << stack_log2).to_string(), threads.to_string());
            let options = layout(&["--heap", &heap, "--stack", &stack, "--threads", &threads_arg]);
            if let Ok(image) = image_from_bytes(Path::new("x"), &bytes, &options) {
                assert_bounded(&image, bytes.len(), threads);
                prop_assert!(image.check().is_ok(), "{:?}", image.check());
            }
        }
    }
}
