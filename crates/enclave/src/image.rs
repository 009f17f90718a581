//! An enclave image: every page the loader adds, in order, with its SECINFO flags and
//! whether it is measured — everything MRENCLAVE depends on, independent of where the
//! enclave is loaded.

use sgxemu_arch::{Attributes, AttributesFlags, PAGE_SIZE, PageType, SecinfoFlags};
use sgxemu_crypto::MeasurementState;

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

/// One page the loader adds with EADD (SGX_IOC_ENCLAVE_ADD_PAGES).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImagePage {
    /// Offset from the enclave base; page aligned.
    pub offset: u64,
    /// SECINFO.FLAGS: R/W/X and the page type (REG or TCS).
    pub flags: SecinfoFlags,
    /// The page's initial contents.
    pub data: PageData,
    /// Whether its contents are measured (EEXTEND of all sixteen chunks, SGX_PAGE_MEASURE).
    pub measured: bool,
}

impl ImagePage {
    /// The page type in `flags`.
    pub fn page_type(&self) -> Option<PageType> {
        self.flags.page_type()
    }
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
    /// The pages in the order they are added (ascending offsets, no duplicates).
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
        let end = pages.last().map_or(0, |page| page.offset + PAGE_SIZE as u64);
        let size = end.next_power_of_two().max(2 * PAGE_SIZE as u64);
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

    /// The page added at `offset`, if any (`pages` is sorted by offset).
    #[must_use]
    pub fn page(&self, offset: u64) -> Option<&ImagePage> {
        self.pages.binary_search_by_key(&offset, |p| p.offset).ok().map(|i| &self.pages[i])
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
        let mut m = MeasurementState::new();
        m.ecreate(self.ssaframesize, self.size);
        for page in &self.pages {
            m.eadd(page.offset, page.flags.bits());
            if page.measured {
                let bytes = page.data.bytes();
                for (i, chunk) in bytes.as_chunks::<256>().0.iter().enumerate() {
                    m.eextend(page.offset + 256 * i as u64, chunk);
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
        };
        for (last, size) in [(0x1000, 0x2000), (0x2000, 0x4000), (0x7000, 0x8000), (0x8000, 0x10000)] {
            let image = EnclaveImage::of_pages(vec![page(0), page(last)]);
            assert_eq!((image.size, image.dynamic_start), (size, size), "last page at {last:#x}");
            assert!(image.attributes.flags().contains(AttributesFlags::MODE64BIT));
        }
        assert_eq!(EnclaveImage::of_pages(vec![page(0)]).size, 0x2000);
        assert_eq!(EnclaveImage::of_pages(Vec::new()).size, 0x2000);
    }
}
