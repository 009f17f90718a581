//! An enclave image: every page the loader adds, in order, with its SECINFO flags and
//! whether it is measured — everything MRENCLAVE depends on, independent of where the
//! enclave is loaded.

use sgxemu_arch::{Attributes, PAGE_SIZE, PageType, SecinfoFlags};
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
