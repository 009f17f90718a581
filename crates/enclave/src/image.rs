//! An enclave image: every page the loader adds, in order, with its SECINFO flags and
//! whether it is measured — everything MRENCLAVE depends on, independent of where the
//! enclave is loaded.
//!
//! A run of identical pages (a stack, an SSA area, a heap, a BSS: all zero) is one
//! [`ImagePage`] with a `count`, so an image costs memory per run, not per page: a 1 TiB
//! heap is one entry. Whatever walks the pages (measuring, writing SGXS, loading) streams
//! them one at a time.

use sgxemu_arch::{Attributes, AttributesFlags, PAGE_SIZE, PageType, SecinfoFlags};
use sgxemu_crypto::MeasurementState;

/// How often [`EnclaveImage::mrenclave_with_progress`] reports: every 2^16 pages (256 MiB).
pub const PROGRESS_PAGES: u64 = 1 << 16;

/// Contents of one page of an image.
#[derive(Clone, PartialEq, Eq)]
pub enum PageData {
    /// All zero (stacks, heap, BSS, SSA frames); costs no memory in the image.
    Zero,
    /// Exactly one page of bytes.
    Bytes(Box<[u8; PAGE_SIZE]>),
}

impl std::fmt::Debug for PageData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PageData::Zero => f.write_str("Zero"),
            PageData::Bytes(b) => write!(f, "Bytes({} non-zero)", b.iter().filter(|&&x| x != 0).count()),
        }
    }
}

impl PageData {
    /// A page holding `bytes`: [`PageData::Zero`] if they are all zero, so images built from
    /// any source compare equal page for page.
    #[must_use]
    pub fn from_page(bytes: &[u8; PAGE_SIZE]) -> Self {
        if bytes.iter().all(|&b| b == 0) { PageData::Zero } else { PageData::Bytes(Box::new(*bytes)) }
    }

    /// Whether every byte of the page is zero (also true for `Bytes` holding zeros).
    #[must_use]
    pub fn is_zero(&self) -> bool {
        match self {
            PageData::Zero => true,
            PageData::Bytes(b) => b.iter().all(|&x| x == 0),
        }
    }

    /// The page's bytes.
    pub fn bytes(&self) -> std::borrow::Cow<'_, [u8; PAGE_SIZE]> {
        match self {
            PageData::Zero => std::borrow::Cow::Owned([0; PAGE_SIZE]),
            PageData::Bytes(b) => std::borrow::Cow::Borrowed(b),
        }
    }
}

/// [`PAGE_SIZE`] as a `u64`.
const PAGE: u64 = PAGE_SIZE as u64;

/// A run of `count` consecutive pages the loader adds with EADD (SGX_IOC_ENCLAVE_ADD_PAGES),
/// each with the same flags, contents and measurement: pages at `offset`,
/// `offset + 4096`, … Builders make runs only of zero pages; a page of bytes is a run of 1.
/// A run of 0 pages adds nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImagePage {
    /// Offset of the first page from the enclave base; page aligned.
    pub offset: u64,
    /// SECINFO.FLAGS: R/W/X and the page type (REG or TCS).
    pub flags: SecinfoFlags,
    /// Each page's initial contents.
    pub data: PageData,
    /// Whether its contents are measured (EEXTEND of all sixteen chunks, SGX_PAGE_MEASURE).
    pub measured: bool,
    /// Pages in the run.
    pub count: u64,
}

impl ImagePage {
    /// One page.
    #[must_use]
    pub fn single(offset: u64, flags: SecinfoFlags, data: PageData, measured: bool) -> Self {
        ImagePage { offset, flags, data, measured, count: 1 }
    }

    /// `count` zero pages from `offset`.
    #[must_use]
    pub fn zeros(offset: u64, count: u64, flags: SecinfoFlags, measured: bool) -> Self {
        ImagePage { offset, flags, data: PageData::Zero, measured, count }
    }

    /// The page type in `flags`.
    pub fn page_type(&self) -> Option<PageType> {
        self.flags.page_type()
    }

    /// The end of the run (offset of the page after its last); saturates instead of
    /// overflowing on a corrupt run, which [`EnclaveImage::check`] refuses.
    #[must_use]
    pub fn end(&self) -> u64 {
        self.offset.saturating_add(self.count.saturating_mul(PAGE))
    }

    /// The offset of each page of the run.
    pub fn offsets(&self) -> impl Iterator<Item = u64> + use<> {
        let offset = self.offset;
        (0..self.count).map(move |i| offset + i * PAGE)
    }

    /// Whether `next` continues this run: the page right after it, same flags, contents and
    /// measurement.
    fn continued_by(&self, next: &ImagePage) -> bool {
        self.end() == next.offset
            && self.flags == next.flags
            && self.measured == next.measured
            && self.data == next.data
            && matches!(self.data, PageData::Zero)
    }
}

/// Why an [`EnclaveImage`] is not one that ECREATE and EADD could build.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ImageShapeError {
    /// SECS fields ECREATE would refuse.
    #[error(transparent)]
    Secs(#[from] crate::ecreate_checks::SecsError),
    /// A run starts off a page boundary, is empty, or reaches past ELRANGE.
    #[error("pages at {offset:#x} ({count} pages) are not whole pages inside the enclave of size {size:#x}")]
    OutsideElrange {
        /// The run's first offset.
        offset: u64,
        /// Its pages.
        count: u64,
        /// ELRANGE size.
        size: u64,
    },
    /// Runs overlap or are out of order.
    #[error("page offsets are not ascending at {offset:#x}")]
    NotAscending {
        /// The offset out of order.
        offset: u64,
    },
}

/// Everything needed to create, add and measure an enclave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnclaveImage {
    /// ELRANGE size in bytes: a power of two, at least two pages.
    pub size: u64,
    /// SECS.SSAFRAMESIZE in pages.
    pub ssaframesize: u32,
    /// SECS.ATTRIBUTES requested (flags and XFRM).
    pub attributes: Attributes,
    /// SECS.MISCSELECT requested.
    pub miscselect: u32,
    /// The runs of pages in the order they are added (ascending offsets, no overlap).
    pub pages: Vec<ImagePage>,
    /// Offsets of the TCS pages, one per thread, ascending.
    pub tcs: Vec<u64>,
    /// Offsets left for dynamic memory (EAUG): `[start, size)`, page aligned.
    pub dynamic_start: u64,
}

impl EnclaveImage {
    /// An image of `pages` (ascending offsets) in the smallest enclave that holds them: 64-bit,
    /// XFRM x87+SSE, one-page SSA frames, no thread, no dynamic area. A data-only enclave, as
    /// tests and benchmarks build; programs come from [`crate::image_from_elf`] and
    /// [`crate::read_sgxs`].
    #[must_use]
    pub fn of_pages(pages: Vec<ImagePage>) -> Self {
        let end = pages.last().map_or(0, ImagePage::end);
        // A run reaching past 2^63 (nothing can load it; `check` says so) gets the largest size.
        let size = end.checked_next_power_of_two().unwrap_or(1 << 63).max(2 * PAGE_SIZE as u64);
        EnclaveImage {
            size,
            ssaframesize: 1,
            attributes: Attributes::new(AttributesFlags::MODE64BIT, 0x3),
            miscselect: 0,
            pages,
            tcs: Vec::new(),
            dynamic_start: size,
        }
    }

    /// The run that adds the page at `offset`, if any (`pages` is sorted by offset).
    #[must_use]
    pub fn page(&self, offset: u64) -> Option<&ImagePage> {
        if !offset.is_multiple_of(PAGE) {
            return None;
        }
        let after = self.pages.partition_point(|p| p.offset <= offset);
        self.pages[..after].last().filter(|p| offset < p.end())
    }

    /// Appends `page`, merging it into the last run when it continues that run of zero pages,
    /// so that an image has one canonical form whichever way it was built.
    pub fn push_page(pages: &mut Vec<ImagePage>, page: ImagePage) {
        if page.count == 0 {
            return;
        }
        match pages.last_mut() {
            Some(last) if last.continued_by(&page) => last.count += page.count,
            _ => pages.push(page),
        }
    }

    /// Pages added (EADDs).
    #[must_use]
    pub fn page_count(&self) -> u64 {
        self.pages.iter().map(|p| p.count).sum()
    }

    /// Pages added and measured.
    #[must_use]
    pub fn measured_page_count(&self) -> u64 {
        self.pages.iter().filter(|p| p.measured).map(|p| p.count).sum()
    }

    /// Checks what ECREATE and EADD would check of this image: the SECS fields (size,
    /// SSAFRAMESIZE, MISCSELECT against the default part) and that the runs are whole
    /// pages inside ELRANGE, ascending.
    pub fn check(&self) -> Result<(), ImageShapeError> {
        crate::ecreate_checks::check_secs(self.size, self.ssaframesize, self.attributes, self.miscselect)?;
        let mut previous_end = 0;
        for p in &self.pages {
            let inside = p.count > 0
                && p.offset.is_multiple_of(PAGE)
                && p.count.checked_mul(PAGE).and_then(|len| p.offset.checked_add(len)).is_some_and(|e| e <= self.size);
            if !inside {
                return Err(ImageShapeError::OutsideElrange { offset: p.offset, count: p.count, size: self.size });
            }
            if p.offset < previous_end {
                return Err(ImageShapeError::NotAscending { offset: p.offset });
            }
            previous_end = p.end();
        }
        Ok(())
    }

    /// The entry point (OENTRY) of the first TCS, as an enclave offset.
    pub fn entry(&self) -> Option<u64> {
        let first = self.tcs.first().and_then(|&offset| self.page(offset))?;
        zerocopy::FromBytes::read_from_prefix(&first.data.bytes()[..])
            .ok()
            .map(|(tcs, _): (sgxemu_arch::Tcs, _)| tcs.oentry)
    }

    /// MRENCLAVE as EINIT computes it after ECREATE and the image's EADDs/EEXTENDs.
    pub fn mrenclave(&self) -> [u8; 32] {
        self.mrenclave_with_progress(&mut |_| {})
    }

    /// [`mrenclave`](Self::mrenclave), calling `progress` with the pages measured so far
    /// every [`PROGRESS_PAGES`] pages. Time is proportional to the pages (an EADD record
    /// each, and 16 EEXTENDs of 256 bytes for a measured page), memory is constant: a run of
    /// zero pages is hashed page by page from one zero page, never materialised. Hashing
    /// has no shortcut for zeros (each record carries its offset), so a measured 64 GiB
    /// region takes about as long as SHA-256 over 80 GiB.
    pub fn mrenclave_with_progress(&self, progress: &mut dyn FnMut(u64)) -> [u8; 32] {
        let mut m = MeasurementState::new();
        m.ecreate(self.ssaframesize, self.size);
        let mut done = 0u64;
        for run in &self.pages {
            let bytes = run.data.bytes();
            for offset in run.offsets() {
                m.eadd(offset, run.flags.bits());
                if run.measured {
                    for (i, chunk) in bytes.as_chunks::<256>().0.iter().enumerate() {
                        m.eextend(offset + 256 * i as u64, chunk);
                    }
                }
                done += 1;
                if done.is_multiple_of(PROGRESS_PAGES) {
                    progress(done);
                }
            }
        }
        m.finalize()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_page_stores_zero_pages_as_zero() {
        let mut page = [0u8; PAGE_SIZE];
        assert_eq!(PageData::from_page(&page), PageData::Zero);
        page[PAGE_SIZE - 1] = 1;
        let data = PageData::from_page(&page);
        assert!(matches!(data, PageData::Bytes(_)));
        assert_eq!(&data.bytes()[..], &page[..]);
        assert!(!data.is_zero());
        assert!(PageData::Zero.is_zero());
        assert!(PageData::Bytes(Box::new([0; PAGE_SIZE])).is_zero());
    }

    #[test]
    fn page_finds_pages_by_offset() {
        let page = |offset| ImagePage {
            offset,
            flags: SecinfoFlags::R.with_page_type(PageType::Reg),
            data: PageData::Zero,
            measured: true,
            count: 1,
        };
        let image = EnclaveImage {
            size: 0x10000,
            ssaframesize: 1,
            attributes: Attributes::default(),
            miscselect: 0,
            pages: vec![page(0), page(0x2000), page(0x5000)],
            tcs: vec![],
            dynamic_start: 0x6000,
        };
        assert_eq!(image.page(0x2000).map(|p| p.offset), Some(0x2000));
        assert_eq!(image.page(0x5000).map(|p| p.offset), Some(0x5000));
        assert!(image.page(0x1000).is_none());
        assert!(image.page(0x2001).is_none());
    }

    #[test]
    fn an_image_of_pages_has_the_smallest_enclave_that_holds_them() {
        let page = |offset| ImagePage {
            offset,
            flags: SecinfoFlags::R.with_page_type(PageType::Reg),
            data: PageData::Zero,
            measured: false,
            count: 1,
        };
        for (last, size) in [(0x1000, 0x2000), (0x2000, 0x4000), (0x7000, 0x8000), (0x8000, 0x10000)] {
            let image = EnclaveImage::of_pages(vec![page(0), page(last)]);
            assert_eq!((image.size, image.dynamic_start), (size, size), "last page at {last:#x}");
            assert!(image.attributes.flags().contains(AttributesFlags::MODE64BIT));
        }
        assert_eq!(EnclaveImage::of_pages(vec![page(0)]).size, 0x2000);
        assert_eq!(EnclaveImage::of_pages(Vec::new()).size, 0x2000);
    }

    fn rw() -> SecinfoFlags {
        (SecinfoFlags::R | SecinfoFlags::W).with_page_type(PageType::Reg)
    }

    #[test]
    fn a_run_of_zero_pages_measures_as_its_pages_one_by_one() {
        let single: Vec<_> = (0..5).map(|i| ImagePage::zeros(0x1000 * (i + 1), 1, rw(), i % 2 == 0)).collect();
        let mut merged = Vec::new();
        for page in single.iter().cloned() {
            EnclaveImage::push_page(&mut merged, page);
        }
        // Measured and unmeasured pages alternate: nothing merges.
        assert_eq!(merged, single);
        let one_by_one: Vec<_> = (0..5).map(|i| ImagePage::zeros(0x1000 * (i + 1), 1, rw(), true)).collect();
        let mut runs = Vec::new();
        for page in one_by_one.iter().cloned() {
            EnclaveImage::push_page(&mut runs, page);
        }
        assert_eq!(runs, vec![ImagePage::zeros(0x1000, 5, rw(), true)]);
        let (a, b) = (EnclaveImage::of_pages(one_by_one), EnclaveImage::of_pages(runs));
        assert_eq!(a.mrenclave(), b.mrenclave());
        assert_eq!((b.page_count(), b.measured_page_count()), (5, 5));
        assert_eq!(b.page(0x3000).map(|p| p.offset), Some(0x1000));
        assert!(b.page(0x6000).is_none() && b.page(0).is_none() && b.page(0x3001).is_none());
    }

    #[test]
    fn pages_of_bytes_never_merge() {
        let bytes = PageData::Bytes(Box::new([7; PAGE_SIZE]));
        let mut pages = Vec::new();
        EnclaveImage::push_page(&mut pages, ImagePage::single(0, rw(), bytes.clone(), true));
        EnclaveImage::push_page(&mut pages, ImagePage::single(0x1000, rw(), bytes, true));
        EnclaveImage::push_page(&mut pages, ImagePage::zeros(0x2000, 0, rw(), true));
        assert_eq!(pages.len(), 2);
    }

    #[test]
    fn measuring_a_huge_run_costs_no_memory_and_reports_progress() {
        // 4 × 2^16 pages (1 GiB) of unmeasured heap: one entry, hashed as 2^18 EADD records.
        let image =
            EnclaveImage { size: 1 << 31, ..EnclaveImage::of_pages(vec![ImagePage::zeros(0, 1 << 18, rw(), false)]) };
        let mut reports = Vec::new();
        let _ = image.mrenclave_with_progress(&mut |done| reports.push(done));
        assert_eq!(reports, [1, 2, 3, 4].map(|n| n * PROGRESS_PAGES));
    }

    #[test]
    fn check_refuses_runs_outside_elrange_or_out_of_order() {
        let image = |pages| EnclaveImage { size: 0x4000, ..EnclaveImage::of_pages(pages) };
        assert_eq!(image(vec![ImagePage::zeros(0, 4, rw(), true)]).check(), Ok(()));
        for (pages, expected) in [
            (
                vec![ImagePage::zeros(0, 5, rw(), true)],
                ImageShapeError::OutsideElrange { offset: 0, count: 5, size: 0x4000 },
            ),
            (
                vec![ImagePage::zeros(0x800, 1, rw(), true)],
                ImageShapeError::OutsideElrange { offset: 0x800, count: 1, size: 0x4000 },
            ),
            (
                vec![ImagePage::zeros(0, 0, rw(), true)],
                ImageShapeError::OutsideElrange { offset: 0, count: 0, size: 0x4000 },
            ),
            (
                vec![ImagePage::zeros(0x1000, u64::MAX, rw(), true)],
                ImageShapeError::OutsideElrange { offset: 0x1000, count: u64::MAX, size: 0x4000 },
            ),
            (
                vec![ImagePage::zeros(0, 2, rw(), true), ImagePage::zeros(0x1000, 1, rw(), false)],
                ImageShapeError::NotAscending { offset: 0x1000 },
            ),
        ] {
            assert_eq!(image(pages).check(), Err(expected));
        }
    }
}
