//! Fortanix's SGXS ("SGX stream") format: an enclave as its measurement record stream plus
//! the page data, read and written (architecture spec §9.2).
//!
//! The format, as Fortanix's `doc/SGXS.md` and the `sgxs` crate (`sgxs::sgxs`, `MeasECreate`,
//! `MeasEAdd`, `MeasEExtend`) define it: a sequence of 64-byte records, each an 8-byte
//! little-endian tag followed by 56 bytes, exactly the records MRENCLAVE hashes (§9.1):
//!
//! | tag | bytes 8.. | followed by |
//! |---|---|---|
//! | `ECREATE\0` | SSAFRAMESIZE u32, SIZE u64, 44 zero bytes | — |
//! | `EADD\0\0\0\0` | page offset u64, the first 48 bytes of SECINFO (FLAGS u64, 40 zero bytes) | — |
//! | `EEXTEND\0` | chunk offset u64, 48 zero bytes | the chunk's 256 bytes |
//! | `UNMEASRD` | chunk offset u64, 48 zero bytes (the EEXTEND header) | the chunk's 256 bytes, loaded but not measured |
//! | `UNSIZED\0` | like ECREATE, SIZE holds an offset to patch later | — |
//!
//! So SHA-256 over the ECREATE, EADD and EEXTEND records (with EEXTEND's data) in file order
//! is MRENCLAVE; UNMEASRD records (with their data) are skipped. A chunk of an added page that
//! no record mentions is zero. UNSIZED streams cannot be measured and are refused here.
//!
//! **Writing** ([`write_sgxs`]) produces the canonical stream of an [`EnclaveImage`]: ECREATE,
//! then per page (ascending) its EADD followed, for a measured page, by its 16 EEXTENDs in
//! order, or, for an unmeasured page, by one UNMEASRD per chunk that is not all zero (an
//! unmeasured zero page is a bare EADD, as Fortanix's writer emits for pages without data).
//!
//! **Reading** ([`read_sgxs`]) accepts the streams the image model can represent, which is
//! stricter than Fortanix's canonicality rules:
//!
//! * ECREATE first and only once; SIZE a power of two ≥ 0x2000 and at most the maximum
//!   enclave size (2^56), SSAFRAMESIZE big enough for XFRM 0x3 and no bigger than the
//!   enclave — what ECREATE would accept ([`crate::ecreate_checks`]);
//! * EADD offsets page aligned, strictly ascending, and the page inside SIZE; SECINFO flags
//!   the driver would accept for ADD_PAGES (type REG or TCS, no R/W/X on a TCS, no W without
//!   R, no state or reserved bits);
//! * EEXTEND/UNMEASRD offsets 256-aligned, inside the page added last, each chunk once;
//! * a page is either measured whole — its 16 EEXTENDs in ascending order, no UNMEASRD — or
//!   not at all (Fortanix allows EEXTENDs of a page in any order and partial measurement; the
//!   image model cannot express either, so they are refused);
//! * every byte the format defines as zero (header padding, SECINFO beyond FLAGS) is zero,
//!   since those bytes are hashed.
//!
//! Under these rules the replayed stream hash ([`mrenclave_of_sgxs`]) always equals
//! [`EnclaveImage::mrenclave`] of the image read. SGXS carries no ATTRIBUTES, MISCSELECT,
//! thread list or dynamic range: the image read gets ATTRIBUTES = MODE64BIT with XFRM 0x3,
//! MISCSELECT 0, `tcs` = the offsets of its TCS pages, and `dynamic_start` = the end of the
//! highest added page.

use std::io::{self, Write};

use sgxemu_arch::measurement::{EEXTEND_CHUNK_SIZE, MEAS_UNMEASURED, MEAS_UNSIZED};
use sgxemu_arch::{Attributes, AttributesFlags, PAGE_SIZE, PageType, SECINFO_FLAGS_RESERVED, SecinfoFlags};
use sgxemu_crypto::measure::{MEAS_EADD, MEAS_ECREATE, MEAS_EEXTEND, RECORD_SIZE};
use sgxemu_crypto::{MeasurementState, eadd_record, ecreate_record, eextend_record};

use crate::image::{EnclaveImage, ImagePage, PageData};
use crate::layout::MIN_SIZE;

/// [`PAGE_SIZE`] as a `u64`.
const PAGE: u64 = PAGE_SIZE as u64;
/// Chunks per page.
const CHUNKS: usize = PAGE_SIZE / EEXTEND_CHUNK_SIZE;

/// Why an SGXS stream cannot be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SgxsError {
    /// No bytes at all.
    #[error("empty SGXS stream")]
    Empty,
    /// The first record is not ECREATE.
    #[error("the SGXS stream starts with tag {tag:#018x}, not ECREATE")]
    EcreateNotFirst {
        /// The first record's tag.
        tag: u64,
    },
    /// A second ECREATE (or UNSIZED).
    #[error("second ECREATE record at byte {at:#x}")]
    DuplicateEcreate {
        /// File offset of the record.
        at: usize,
    },
    /// The stream starts with UNSIZED: its size is not fixed yet, so it cannot be measured.
    #[error("UNSIZED SGXS stream: the enclave size is not fixed yet, so it cannot be loaded or measured")]
    Unsized,
    /// A tag that is none of ECREATE, EADD, EEXTEND, UNMEASRD, UNSIZED.
    #[error("unknown SGXS record tag {tag:#018x} at byte {at:#x}")]
    UnknownTag {
        /// The tag.
        tag: u64,
        /// File offset of the record.
        at: usize,
    },
    /// The stream ends inside a record or its data.
    #[error("truncated SGXS record at byte {at:#x}: it needs {needed} bytes, {left} are left")]
    Truncated {
        /// File offset of the record.
        at: usize,
        /// Bytes the record needs (64, or 320 with data).
        needed: usize,
        /// Bytes left in the stream.
        left: usize,
    },
    /// ECREATE's SIZE is not a power of two of at least two pages.
    #[error("ECREATE size {size:#x} is not a power of two of at least {MIN_SIZE:#x} bytes")]
    BadSize {
        /// SIZE.
        size: u64,
    },
    /// ECREATE's SSAFRAMESIZE is 0.
    #[error("ECREATE SSAFRAMESIZE is 0")]
    ZeroSsaFrameSize,
    /// ECREATE would refuse the SIZE or SSAFRAMESIZE.
    #[error("ECREATE record: {0}")]
    Secs(#[from] crate::ecreate_checks::SecsError),
    /// A byte the format defines as zero is not.
    #[error("SGXS record at byte {at:#x} has non-zero bytes where the format requires zeros")]
    ReservedBytes {
        /// File offset of the record.
        at: usize,
    },
    /// An EADD offset that is not page aligned.
    #[error("EADD offset {offset:#x} is not page aligned")]
    EaddMisaligned {
        /// The offset.
        offset: u64,
    },
    /// An EADD offset not above the previous one (out of order or repeated).
    #[error("EADD offset {offset:#x} is not above the previous page {previous:#x}")]
    EaddOutOfOrder {
        /// The offset.
        offset: u64,
        /// The previous EADD's offset.
        previous: u64,
    },
    /// A page at or beyond SIZE.
    #[error("page {offset:#x} lies beyond the enclave size {size:#x}")]
    BeyondSize {
        /// The page offset.
        offset: u64,
        /// SIZE.
        size: u64,
    },
    /// SECINFO flags SGX_IOC_ENCLAVE_ADD_PAGES would refuse.
    #[error("EADD of page {offset:#x} with SECINFO flags {flags:#x}: not a REG page or a TCS without permissions")]
    InvalidSecinfo {
        /// The page offset.
        offset: u64,
        /// SECINFO.FLAGS.
        flags: u64,
    },
    /// An EEXTEND/UNMEASRD offset that is not 256-byte aligned.
    #[error("chunk offset {offset:#x} is not 256-byte aligned")]
    ChunkMisaligned {
        /// The offset.
        offset: u64,
    },
    /// An EEXTEND/UNMEASRD for a page that is not the one added last (or none was added).
    #[error("chunk at {offset:#x} is not in the page added last (EEXTEND of a page not added)")]
    ChunkWithoutPage {
        /// The chunk offset.
        offset: u64,
    },
    /// A chunk that appears twice.
    #[error("chunk at {offset:#x} appears twice")]
    DuplicateChunk {
        /// The chunk offset.
        offset: u64,
    },
    /// EEXTENDs of a page not in ascending order.
    #[error("EEXTEND of chunk {offset:#x} where chunk {expected:#x} was due; the image model measures chunks in order")]
    ChunkOutOfOrder {
        /// The chunk offset found.
        offset: u64,
        /// The chunk offset due.
        expected: u64,
    },
    /// A page measured in part.
    #[error(
        "page {page:#x} has {measured} measured and {unmeasured} unmeasured chunks; the image model measures all 16 or none"
    )]
    PartialMeasurement {
        /// The page offset.
        page: u64,
        /// EEXTENDed chunks.
        measured: u32,
        /// UNMEASRD chunks.
        unmeasured: u32,
    },
}

/// Result alias for this module.
pub type Result<T> = std::result::Result<T, SgxsError>;

/// An SGXS stream read: the image and MRENCLAVE as the stream's records hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SgxsImage {
    /// The enclave image (see the module docs for the fields SGXS does not carry).
    pub image: EnclaveImage,
    /// SHA-256 of the measured records in stream order; equals `image.mrenclave()`.
    pub mrenclave: [u8; 32],
}

/// The ATTRIBUTES an image read from SGXS gets (the format does not carry them).
fn sgxs_attributes() -> Attributes {
    Attributes::new(AttributesFlags::MODE64BIT, 0x3)
}

/// Writes the canonical SGXS stream of `image` (see the module docs), page by page: memory
/// stays constant whatever the runs of zero pages, and the output is [`sgxs_len`] bytes.
pub fn write_sgxs(image: &EnclaveImage, out: &mut impl Write) -> io::Result<()> {
    out.write_all(&ecreate_record(image.ssaframesize, image.size))?;
    for run in &image.pages {
        let bytes = run.data.bytes();
        for page in run.offsets() {
            out.write_all(&eadd_record(page, run.flags.bits()))?;
            for (i, chunk) in bytes.as_chunks::<EEXTEND_CHUNK_SIZE>().0.iter().enumerate() {
                let offset = page + (i * EEXTEND_CHUNK_SIZE) as u64;
                if run.measured {
                    out.write_all(&eextend_record(offset))?;
                } else if chunk.iter().any(|&b| b != 0) {
                    out.write_all(&unmeasured_record(offset))?;
                } else {
                    continue;
                }
                out.write_all(chunk)?;
            }
        }
    }
    Ok(())
}

/// The length of [`write_sgxs`]'s output for `image`, computed without writing it: SGXS
/// records every page (64 bytes per EADD, 16 × 320 bytes per measured page), so a large
/// measured region makes a file about 1.27 times its size. Saturates at `u64::MAX`.
#[must_use]
pub fn sgxs_len(image: &EnclaveImage) -> u64 {
    let chunk_record = (RECORD_SIZE + EEXTEND_CHUNK_SIZE) as u64;
    image.pages.iter().fold(RECORD_SIZE as u64, |len, run| {
        let chunks = if run.measured {
            CHUNKS as u64
        } else {
            run.data.bytes().as_chunks::<EEXTEND_CHUNK_SIZE>().0.iter().filter(|c| c.iter().any(|&b| b != 0)).count()
                as u64
        };
        let per_page = RECORD_SIZE as u64 + chunks * chunk_record;
        len.saturating_add(run.count.saturating_mul(per_page))
    })
}

/// Reads an SGXS stream into an image, checking it as the module docs describe.
pub fn read_sgxs(bytes: &[u8]) -> Result<SgxsImage> {
    Reader::default().run(bytes)
}

/// MRENCLAVE of an SGXS stream: its ECREATE, EADD and EEXTEND records (with data) hashed
/// in stream order. The stream is checked as by [`read_sgxs`].
pub fn mrenclave_of_sgxs(bytes: &[u8]) -> Result<[u8; 32]> {
    read_sgxs(bytes).map(|s| s.mrenclave)
}

/// The UNMEASRD header: the EEXTEND header with the UNMEASRD tag.
fn unmeasured_record(offset: u64) -> [u8; RECORD_SIZE] {
    let mut r = eextend_record(offset);
    r[..8].copy_from_slice(&MEAS_UNMEASURED.to_le_bytes());
    r
}

/// The page being assembled: the last EADD and the chunks seen since.
#[derive(Debug)]
struct OpenPage {
    offset: u64,
    flags: SecinfoFlags,
    data: Box<[u8; PAGE_SIZE]>,
    /// Chunks seen (EEXTEND or UNMEASRD), one bit each.
    seen: u16,
    measured: u32,
    unmeasured: u32,
}

/// Parser state.
#[derive(Debug, Default)]
struct Reader {
    measurement: MeasurementState,
    /// SSAFRAMESIZE and SIZE, once ECREATE was read.
    ecreate: Option<(u32, u64)>,
    open: Option<OpenPage>,
    pages: Vec<ImagePage>,
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

fn zero_from(record: &[u8], from: usize, at: usize) -> Result<()> {
    if record[from..].iter().all(|&b| b == 0) { Ok(()) } else { Err(SgxsError::ReservedBytes { at }) }
}

/// Whether ADD_PAGES would accept these SECINFO flags (driver spec §3.2 step 6).
fn valid_add_flags(flags: SecinfoFlags) -> bool {
    let reserved = SECINFO_FLAGS_RESERVED | SecinfoFlags::STATE_MASK.bits();
    if flags.bits() & reserved != 0 {
        return false;
    }
    match flags.page_type() {
        Some(PageType::Tcs) => flags.perms().is_empty(),
        Some(PageType::Reg) => !flags.contains(SecinfoFlags::W) || flags.contains(SecinfoFlags::R),
        _ => false,
    }
}

impl Reader {
    fn run(mut self, bytes: &[u8]) -> Result<SgxsImage> {
        if bytes.is_empty() {
            return Err(SgxsError::Empty);
        }
        let mut at = 0;
        while at < bytes.len() {
            let left = bytes.len() - at;
            if left < RECORD_SIZE {
                return Err(SgxsError::Truncated { at, needed: RECORD_SIZE, left });
            }
            let record = &bytes[at..at + RECORD_SIZE];
            let tag = u64_at(record, 0);
            let len = match tag {
                MEAS_EEXTEND | MEAS_UNMEASURED => RECORD_SIZE + EEXTEND_CHUNK_SIZE,
                _ => RECORD_SIZE,
            };
            if left < len {
                return Err(SgxsError::Truncated { at, needed: len, left });
            }
            if self.ecreate.is_none() && tag != MEAS_ECREATE {
                return Err(if tag == MEAS_UNSIZED { SgxsError::Unsized } else { SgxsError::EcreateNotFirst { tag } });
            }
            self.record(tag, &bytes[at..at + len], at)?;
            at += len;
        }
        self.close_page()?;
        let Some((ssaframesize, size)) = self.ecreate else {
            return Err(SgxsError::Empty);
        };
        let tcs =
            self.pages.iter().filter(|p| p.page_type() == Some(PageType::Tcs)).flat_map(ImagePage::offsets).collect();
        let dynamic_start = self.pages.last().map_or(0, ImagePage::end);
        let image = EnclaveImage {
            size,
            ssaframesize,
            attributes: sgxs_attributes(),
            miscselect: 0,
            pages: self.pages,
            tcs,
            dynamic_start,
        };
        Ok(SgxsImage { image, mrenclave: self.measurement.finalize() })
    }

    /// Handles one record (`rec` includes any data); `at` is its file offset.
    fn record(&mut self, tag: u64, rec: &[u8], at: usize) -> Result<()> {
        let header = &rec[..RECORD_SIZE];
        match tag {
            MEAS_ECREATE => {
                if self.ecreate.is_some() {
                    return Err(SgxsError::DuplicateEcreate { at });
                }
                zero_from(header, 20, at)?;
                let ssaframesize = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
                let size = u64_at(header, 12);
                if !size.is_power_of_two() || size < MIN_SIZE {
                    return Err(SgxsError::BadSize { size });
                }
                if ssaframesize == 0 {
                    return Err(SgxsError::ZeroSsaFrameSize);
                }
                crate::ecreate_checks::check_secs(size, ssaframesize, sgxs_attributes(), 0)?;
                self.ecreate = Some((ssaframesize, size));
            }
            MEAS_UNSIZED => return Err(SgxsError::DuplicateEcreate { at }),
            MEAS_EADD => {
                zero_from(header, 24, at)?;
                let offset = u64_at(header, 8);
                let flags = SecinfoFlags::from_bits_retain(u64_at(header, 16));
                if !offset.is_multiple_of(PAGE) {
                    return Err(SgxsError::EaddMisaligned { offset });
                }
                let last_added = self.pages.last().map(|p| p.end() - PAGE);
                let previous = self.open.as_ref().map(|p| p.offset).or(last_added);
                if let Some(previous) = previous
                    && offset <= previous
                {
                    return Err(SgxsError::EaddOutOfOrder { offset, previous });
                }
                let size = self.ecreate.map_or(0, |e| e.1);
                if offset >= size {
                    return Err(SgxsError::BeyondSize { offset, size });
                }
                if !valid_add_flags(flags) {
                    return Err(SgxsError::InvalidSecinfo { offset, flags: flags.bits() });
                }
                self.close_page()?;
                self.open = Some(OpenPage {
                    offset,
                    flags,
                    data: Box::new([0; PAGE_SIZE]),
                    seen: 0,
                    measured: 0,
                    unmeasured: 0,
                });
            }
            MEAS_EEXTEND | MEAS_UNMEASURED => {
                zero_from(header, 16, at)?;
                let offset = u64_at(header, 8);
                if !offset.is_multiple_of(EEXTEND_CHUNK_SIZE as u64) {
                    return Err(SgxsError::ChunkMisaligned { offset });
                }
                let page = match self.open.as_mut() {
                    Some(p) if offset & !(PAGE - 1) == p.offset => p,
                    _ => return Err(SgxsError::ChunkWithoutPage { offset }),
                };
                let index = ((offset - page.offset) / EEXTEND_CHUNK_SIZE as u64) as usize;
                if page.seen & (1 << index) != 0 {
                    return Err(SgxsError::DuplicateChunk { offset });
                }
                if tag == MEAS_EEXTEND && index != page.measured as usize {
                    let expected = page.offset + u64::from(page.measured) * EEXTEND_CHUNK_SIZE as u64;
                    return Err(SgxsError::ChunkOutOfOrder { offset, expected });
                }
                page.seen |= 1 << index;
                if tag == MEAS_EEXTEND {
                    page.measured += 1;
                } else {
                    page.unmeasured += 1;
                }
                let start = index * EEXTEND_CHUNK_SIZE;
                page.data[start..start + EEXTEND_CHUNK_SIZE].copy_from_slice(&rec[RECORD_SIZE..]);
            }
            _ => return Err(SgxsError::UnknownTag { tag, at }),
        }
        if tag != MEAS_UNMEASURED {
            // The record (and EEXTEND's data) exactly as the stream has it: whole blocks.
            self.measurement.absorb(rec.as_chunks::<RECORD_SIZE>().0);
        }
        Ok(())
    }

    /// Finishes the page being assembled, if any.
    fn close_page(&mut self) -> Result<()> {
        let Some(p) = self.open.take() else {
            return Ok(());
        };
        let measured = match (p.measured, p.unmeasured) {
            (0, _) => false,
            (m, 0) if m as usize == CHUNKS => true,
            (measured, unmeasured) => {
                return Err(SgxsError::PartialMeasurement { page: p.offset, measured, unmeasured });
            }
        };
        EnclaveImage::push_page(
            &mut self.pages,
            ImagePage::single(p.offset, p.flags, PageData::from_page(&p.data), measured),
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::elf::image_from_elf;
    use crate::elf::tests::sample_elf;
    use crate::layout::Layout;
    use proptest::prelude::*;
    use sha2::{Digest, Sha256};

    fn to_sgxs(image: &EnclaveImage) -> Vec<u8> {
        let mut out = Vec::new();
        write_sgxs(image, &mut out).unwrap();
        out
    }

    fn elf_image(layout: &Layout) -> EnclaveImage {
        image_from_elf(&sample_elf().build(), layout).unwrap()
    }

    #[test]
    fn round_trip_of_an_elf_image() {
        for layout in [Layout::default(), Layout { measure_heap: true, heap_pages: 4, ..Layout::default() }] {
            let image = elf_image(&layout);
            let sgxs = to_sgxs(&image);
            let read = read_sgxs(&sgxs).unwrap();
            assert_eq!(read.image, image);
            assert_eq!(read.mrenclave, image.mrenclave());
            assert_eq!(mrenclave_of_sgxs(&sgxs).unwrap(), image.mrenclave());
        }
    }

    #[test]
    fn runs_of_zero_pages_are_written_page_by_page_and_read_back_as_runs() {
        let rw = (SecinfoFlags::R | SecinfoFlags::W).with_page_type(PageType::Reg);
        let image = EnclaveImage::of_pages(vec![
            ImagePage::zeros(0, 3, rw, true),
            ImagePage::single(0x3000, rw, PageData::Bytes(Box::new([1; PAGE_SIZE])), false),
            ImagePage::zeros(0x4000, 4, rw, false),
        ]);
        let sgxs = to_sgxs(&image);
        assert_eq!(sgxs.len() as u64, sgxs_len(&image));
        assert_eq!(sgxs.len(), 64 + 3 * (64 + 16 * 320) + (64 + 16 * 320) + 4 * 64);
        let read = read_sgxs(&sgxs).unwrap();
        assert_eq!(read.image, image);
        assert_eq!(read.mrenclave, image.mrenclave());
    }

    #[test]
    fn canonical_stream_layout() {
        let image = elf_image(&Layout::default());
        let sgxs = to_sgxs(&image);
        // ECREATE + per page EADD, + 16 × (64 + 256) if measured; unmeasured heap pages are
        // zero, so bare EADDs.
        let measured = image.measured_page_count();
        assert_eq!(sgxs.len() as u64, 64 + 64 * image.page_count() + measured * 16 * 320);
        assert_eq!(sgxs_len(&image), sgxs.len() as u64);
        assert_eq!(&sgxs[..8], b"ECREATE\0");
        assert_eq!(&sgxs[64..72], b"EADD\0\0\0\0");
        assert_eq!(&sgxs[128..136], b"EEXTEND\0");
        // SGXS of measured pages only is exactly the hashed message.
        let digest: [u8; 32] = Sha256::digest(&sgxs).into();
        assert_eq!(digest, image.mrenclave());
    }

    #[test]
    fn unmeasured_data_uses_unmeasrd_records() {
        let mut data = [0u8; PAGE_SIZE];
        data[0x300] = 0xAA; // chunk 3
        data[0xFFF] = 0x55; // chunk 15
        let image = EnclaveImage {
            size: 0x4000,
            ssaframesize: 1,
            attributes: Attributes::new(AttributesFlags::MODE64BIT, 3),
            miscselect: 0,
            pages: vec![
                ImagePage {
                    offset: 0x1000,
                    flags: (SecinfoFlags::R | SecinfoFlags::W).with_page_type(PageType::Reg),
                    data: PageData::from_page(&data),
                    measured: false,
                    count: 1,
                },
                ImagePage::zeros(0x2000, 1, PageType::Tcs.into(), true),
            ],
            tcs: vec![0x2000],
            dynamic_start: 0x3000,
        };
        let sgxs = to_sgxs(&image);
        assert_eq!(sgxs.len(), 64 + 64 + 2 * 320 + 64 + 16 * 320);
        assert_eq!(&sgxs[128..136], b"UNMEASRD");
        assert_eq!(u64_at(&sgxs, 136), 0x1300);
        assert_eq!(&sgxs[128 + 320..136 + 320], b"UNMEASRD");
        assert_eq!(u64_at(&sgxs, 136 + 320), 0x1F00);
        let read = read_sgxs(&sgxs).unwrap();
        assert_eq!(read.image, image);
        assert_eq!(read.mrenclave, image.mrenclave());
        // The hash skips the UNMEASRD records and their data.
        let mut hashed = sgxs[..128].to_vec();
        hashed.extend_from_slice(&sgxs[128 + 640..]);
        let digest: [u8; 32] = Sha256::digest(&hashed).into();
        assert_eq!(digest, image.mrenclave());
    }

    /// A hand-built stream: records appended one by one.
    #[derive(Default)]
    struct Stream(Vec<u8>);

    impl Stream {
        fn ecreate(mut self, ssa: u32, size: u64) -> Self {
            self.0.extend_from_slice(&ecreate_record(ssa, size));
            self
        }
        fn eadd(mut self, offset: u64, flags: u64) -> Self {
            self.0.extend_from_slice(&eadd_record(offset, flags));
            self
        }
        fn chunk(mut self, tag: u64, offset: u64) -> Self {
            let mut r = eextend_record(offset);
            r[..8].copy_from_slice(&tag.to_le_bytes());
            self.0.extend_from_slice(&r);
            self.0.extend_from_slice(&[0x5A; 256]);
            self
        }
        fn eextend(self, offset: u64) -> Self {
            self.chunk(MEAS_EEXTEND, offset)
        }
        fn unmeasured(self, offset: u64) -> Self {
            self.chunk(MEAS_UNMEASURED, offset)
        }
        fn page(mut self, offset: u64) -> Self {
            self = self.eadd(offset, 0x203);
            for c in 0..16 {
                self = self.eextend(offset + 256 * c);
            }
            self
        }
        fn raw(mut self, bytes: &[u8]) -> Self {
            self.0.extend_from_slice(bytes);
            self
        }
        fn read(&self) -> Result<SgxsImage> {
            read_sgxs(&self.0)
        }
    }

    fn s() -> Stream {
        Stream::default().ecreate(1, 0x10000)
    }

    #[test]
    fn hand_built_streams_are_accepted() {
        let read = s().page(0x1000).eadd(0x3000, 0x100).read().unwrap();
        assert_eq!(read.image.pages.len(), 2);
        assert_eq!(read.image.tcs, vec![0x3000]);
        assert_eq!(read.image.dynamic_start, 0x4000);
        assert!(read.image.pages[0].measured && !read.image.pages[1].measured);
        assert_eq!(&read.image.pages[0].data.bytes()[..], &[0x5A; PAGE_SIZE][..]);
        assert_eq!(read.mrenclave, read.image.mrenclave());
        // UNMEASRD chunks in any order; missing chunks are zero.
        let read = s().eadd(0x1000, 0x201).unmeasured(0x1F00).unmeasured(0x1000).read().unwrap();
        let data = read.image.pages[0].data.bytes();
        assert_eq!(data[0], 0x5A);
        assert_eq!(data[0x100], 0);
        assert_eq!(data[0xF00], 0x5A);
        // An ECREATE alone is an empty enclave.
        let read = s().read().unwrap();
        assert!(read.image.pages.is_empty());
        assert_eq!(read.image.dynamic_start, 0);
    }

    #[test]
    fn malformed_streams() {
        use SgxsError as E;
        assert_eq!(read_sgxs(&[]), Err(E::Empty));
        assert_eq!(Stream::default().page(0).read(), Err(E::EcreateNotFirst { tag: MEAS_EADD }));
        let mut unsized_rec = ecreate_record(1, 0x40);
        unsized_rec[..8].copy_from_slice(&MEAS_UNSIZED.to_le_bytes());
        assert_eq!(Stream::default().raw(&unsized_rec).read(), Err(E::Unsized));
        assert_eq!(s().raw(&unsized_rec).read(), Err(E::DuplicateEcreate { at: 64 }));
        assert_eq!(s().page(0).ecreate(1, 0x10000).read(), Err(E::DuplicateEcreate { at: 64 + 64 + 16 * 320 }));
        let mut bogus = [0u8; 64];
        bogus[..8].copy_from_slice(b"EREMOVE\0");
        assert_eq!(s().raw(&bogus).read(), Err(E::UnknownTag { tag: u64_at(&bogus, 0), at: 64 }));

        // Truncation: inside a header, inside EEXTEND data.
        let full = s().page(0).0;
        assert_eq!(read_sgxs(&full[..100]), Err(E::Truncated { at: 64, needed: 64, left: 36 }));
        assert_eq!(read_sgxs(&full[..64 + 64 + 100]), Err(E::Truncated { at: 128, needed: 320, left: 100 }));
        assert_eq!(read_sgxs(&full[..30]), Err(E::Truncated { at: 0, needed: 64, left: 30 }));

        assert_eq!(Stream::default().ecreate(1, 0x30000).read(), Err(E::BadSize { size: 0x30000 }));
        assert_eq!(Stream::default().ecreate(1, 0x1000).read(), Err(E::BadSize { size: 0x1000 }));
        assert_eq!(Stream::default().ecreate(0, 0x10000).read(), Err(E::ZeroSsaFrameSize));
        // What ECREATE would refuse: above the maximum enclave size, or an SSA frame larger
        // than the enclave.
        use crate::ecreate_checks::SecsError;
        for log2 in [57, 62, 63] {
            assert_eq!(
                Stream::default().ecreate(1, 1 << log2).read(),
                Err(E::Secs(SecsError::SizeAboveMax { size: 1 << log2, max: 1 << 56, log2: 56 }))
            );
        }
        assert!(Stream::default().ecreate(1, 1 << 56).read().is_ok());
        assert_eq!(
            Stream::default().ecreate(0xffff_ffff, 0x10000).read(),
            Err(E::Secs(SecsError::SsaFrameTooLarge { ssaframesize: 0xffff_ffff, size: 0x10000 }))
        );
        let mut rec = ecreate_record(1, 0x10000);
        rec[63] = 1;
        assert_eq!(Stream::default().raw(&rec).read(), Err(E::ReservedBytes { at: 0 }));
        let mut rec = eadd_record(0, 0x203);
        rec[24] = 1; // SECINFO byte 8
        assert_eq!(s().raw(&rec).read(), Err(E::ReservedBytes { at: 64 }));
        let mut rec = eextend_record(0);
        rec[20] = 1;
        assert_eq!(s().eadd(0, 0x203).raw(&rec).raw(&[0; 256]).read(), Err(E::ReservedBytes { at: 128 }));

        assert_eq!(s().eadd(0x1800, 0x203).read(), Err(E::EaddMisaligned { offset: 0x1800 }));
        assert_eq!(s().page(0x2000).page(0x1000).read(), Err(E::EaddOutOfOrder { offset: 0x1000, previous: 0x2000 }));
        assert_eq!(
            s().eadd(0x2000, 0x203).eadd(0x2000, 0x203).read(),
            Err(E::EaddOutOfOrder { offset: 0x2000, previous: 0x2000 })
        );
        assert_eq!(s().eadd(0x10000, 0x203).read(), Err(E::BeyondSize { offset: 0x10000, size: 0x10000 }));
        assert_eq!(s().eadd(!0xFFF, 0x203).read(), Err(E::BeyondSize { offset: !0xFFF, size: 0x10000 }));
        for flags in [0x107, 0x101, 0x202, 0x300, 0x000, 0x20B, 0x1_0203, 0x243] {
            assert_eq!(s().eadd(0, flags).read(), Err(E::InvalidSecinfo { offset: 0, flags }), "{flags:#x}");
        }

        assert_eq!(s().eadd(0, 0x203).eextend(0x80).read(), Err(E::ChunkMisaligned { offset: 0x80 }));
        assert_eq!(s().eextend(0).read(), Err(E::ChunkWithoutPage { offset: 0 }));
        assert_eq!(s().eadd(0, 0x203).eextend(0x1000).read(), Err(E::ChunkWithoutPage { offset: 0x1000 }));
        assert_eq!(s().page(0).eadd(0x1000, 0x203).eextend(0xF00).read(), Err(E::ChunkWithoutPage { offset: 0xF00 }));
        assert_eq!(
            s().eadd(0, 0x203).unmeasured(0x100).unmeasured(0x100).read(),
            Err(E::DuplicateChunk { offset: 0x100 })
        );
        assert_eq!(s().eadd(0, 0x203).eextend(0).eextend(0).read(), Err(E::DuplicateChunk { offset: 0 }));
        assert_eq!(s().eadd(0, 0x203).eextend(0x100).read(), Err(E::ChunkOutOfOrder { offset: 0x100, expected: 0 }));

        // Partial measurement: 15 EEXTENDs, or EEXTENDs mixed with UNMEASRD.
        let mut partial = s().eadd(0, 0x203);
        for c in 0..15 {
            partial = partial.eextend(c * 256);
        }
        assert_eq!(partial.read(), Err(E::PartialMeasurement { page: 0, measured: 15, unmeasured: 0 }));
        let mixed = s().eadd(0, 0x203).eextend(0).unmeasured(0x100);
        assert_eq!(
            mixed.eadd(0x1000, 0x203).read(),
            Err(E::PartialMeasurement { page: 0, measured: 1, unmeasured: 1 })
        );
        assert_eq!(
            mrenclave_of_sgxs(&s().eadd(0, 0x203).eextend(0).0),
            Err(E::PartialMeasurement { page: 0, measured: 1, unmeasured: 0 })
        );
    }

    /// Generates small images with assorted flags, sparse data and measured/unmeasured pages.
    fn arb_image() -> impl Strategy<Value = EnclaveImage> {
        let flags = prop::sample::select(vec![0x100u64, 0x200, 0x201, 0x203, 0x204, 0x205, 0x207]);
        let data = prop::collection::vec((0usize..PAGE_SIZE, 1u8..=255), 0..6);
        let page = (0u64..64, flags, data, any::<bool>());
        (1u32..4, 7u32..10, prop::collection::vec(page, 0..10)).prop_map(|(ssa, log2, raw)| {
            let mut seen = std::collections::BTreeMap::new();
            for (index, flags, bytes, measured) in raw {
                let mut page = [0u8; PAGE_SIZE];
                for (at, v) in bytes {
                    page[at] = v;
                }
                seen.insert(index, (flags, page, measured));
            }
            let mut pages = Vec::new();
            for (index, (flags, page, measured)) in seen {
                let flags = SecinfoFlags::from_bits_retain(flags);
                EnclaveImage::push_page(
                    &mut pages,
                    ImagePage::single(index * PAGE, flags, PageData::from_page(&page), measured),
                );
            }
            EnclaveImage {
                size: PAGE << log2,
                ssaframesize: ssa,
                attributes: Attributes::new(AttributesFlags::MODE64BIT, 3),
                miscselect: 0,
                tcs: pages.iter().filter(|p| p.flags.bits() == 0x100).flat_map(ImagePage::offsets).collect(),
                dynamic_start: pages.last().map_or(0, ImagePage::end),
                pages,
            }
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn write_read_round_trips(image in arb_image()) {
            let sgxs = to_sgxs(&image);
            prop_assert_eq!(sgxs_len(&image), sgxs.len() as u64);
            let read = read_sgxs(&sgxs).unwrap();
            prop_assert_eq!(&read.image, &image);
            prop_assert_eq!(read.mrenclave, image.mrenclave());
        }

        #[test]
        fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..1024)) {
            let _ = read_sgxs(&bytes);
        }

        /// Random edits of a valid stream never panic, and whatever is accepted still
        /// hashes as its image does.
        #[test]
        fn corrupt_streams_never_panic(edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
                                       cut in prop::option::of(any::<prop::sample::Index>())) {
            let mut bytes = s().page(0).eadd(0x1000, 0x100).unmeasured(0x1200).page(0x3000).0;
            for (at, v) in edits {
                let at = at.index(bytes.len());
                bytes[at] = v;
            }
            if let Some(cut) = cut {
                bytes.truncate(cut.index(bytes.len()));
            }
            if let Ok(read) = read_sgxs(&bytes) {
                prop_assert_eq!(read.mrenclave, read.image.mrenclave());
            }
        }
    }
}
