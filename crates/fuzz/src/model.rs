//! What the fuzzer believes about each of its enclaves and mappings: the driver's state
//! (created, initialized, the page array with types and maximum protections, the allowed
//! attributes) plus the EPCM state the enclave's own EACCEPTs depend on (PENDING, MODIFIED,
//! PR, permissions) — the driver never reads the EPCM, but the fuzzer must, to predict what
//! EMODPR, EMODT and EACCEPT answer.

use std::collections::BTreeMap;

use sgxemu_enclave::ImagePage;

/// VMA / max-prot / EPCM permission bits, as the driver's `vm_max_prot_bits`: READ.
pub const R: u8 = 1;
/// WRITE.
pub const W: u8 = 2;
/// EXEC.
pub const X: u8 = 4;

/// Pages in a slot's reservation: 2 MiB, ELRANGE at its start (ELRANGE sizes go up to 4 MiB:
/// for the small ones the upper part lies outside ELRANGE).
pub const RESERVATION_PAGES: u16 = 512;

/// The driver's record of an EPCM page type (`encl_page->type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageType {
    /// PT_REG.
    Reg,
    /// PT_TCS.
    Tcs,
    /// PT_TRIM.
    Trim,
}

impl PageType {
    /// The SGX page-type number.
    pub fn number(self) -> u64 {
        match self {
            PageType::Tcs => 1,
            PageType::Reg => 2,
            PageType::Trim => 4,
        }
    }
}

/// One page of the page array, with the EPCM entry behind it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page {
    /// The driver's type record.
    pub ty: PageType,
    /// The driver's `vm_max_prot_bits`.
    pub max_prot: u8,
    /// EPCM R/W/X.
    pub epcm_perms: u8,
    /// EPCM.PENDING (EAUGed, not yet accepted).
    pub pending: bool,
    /// EPCM.MODIFIED (EMODTed, not yet accepted).
    pub modified: bool,
    /// EPCM.PR (EMODPRed, not yet accepted).
    pub pr: bool,
    /// Whether the page's contents are all zero (EACCEPT of a TCS checks its reserved area).
    pub zero: bool,
    /// An EADDed TCS of the fuzzer's program layout (valid OSSA, NSSA, OENTRY).
    pub enterable: bool,
    /// Holds the fuzzer's enclave program (`enclave_program::code_page`).
    pub program: bool,
    /// The TCS's CSSA (AEXes not yet resumed).
    pub cssa: u32,
}

/// The driver's enclave object of one open `/dev/sgx_enclave`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Encl {
    /// SGX_ENCL_CREATED.
    pub created: bool,
    /// SGX_ENCL_INITIALIZED.
    pub initialized: bool,
    /// SECS.SIZE.
    pub size: u64,
    /// SECS.ATTRIBUTES.FLAGS.
    pub attributes: u64,
    /// PROVISIONKEY is in `attributes_mask` (a PROVISION since the last CREATE).
    pub provisioned: bool,
    /// The page array, by page number from the base.
    pub pages: BTreeMap<u64, Page>,
    /// What was EADDed so far, in order (MRENCLAVE is computed from it).
    pub added: Vec<ImagePage>,
}

impl Encl {
    /// ELRANGE size in pages.
    pub fn size_pages(&self) -> u64 {
        self.size / 4096
    }
}

/// What covers one page of a slot's reservation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mapping {
    /// The fuzzer's own anonymous PROT_NONE reservation.
    Reserved,
    /// A mapping of the slot's enclave file: protections and which mmap (VMA) made it.
    Enclave {
        /// PROT_* bits.
        prot: u8,
        /// Identifies the VMA: mprotect stops at the first VMA it refuses.
        vma: u32,
        /// VM_MAYWRITE: false for a shared mapping of an O_RDONLY descriptor.
        may_write: bool,
    },
    /// Someone else's mapping, which landed in a moment's hole (never touched again).
    Foreign,
}

/// One of a thread's enclave files and the address range reserved for its enclave.
#[derive(Clone, Debug)]
pub struct Slot {
    /// Open descriptors of this enclave (the first one and `dup`s of it).
    pub fds: Vec<i32>,
    /// Opened O_RDONLY.
    pub rdonly: bool,
    /// The enclave object, while a descriptor or a mapping keeps it alive.
    pub encl: Option<Encl>,
    /// Per page of the reservation.
    pub maps: Vec<Mapping>,
    /// The next VMA identifier.
    pub next_vma: u32,
}

impl Slot {
    /// An empty slot over a fresh reservation.
    pub fn new() -> Slot {
        Slot {
            fds: Vec::new(),
            rdonly: false,
            encl: None,
            maps: vec![Mapping::Reserved; RESERVATION_PAGES as usize],
            next_vma: 0,
        }
    }

    /// Whether any page is still mapped from the enclave file.
    pub fn has_enclave_mappings(&self) -> bool {
        self.maps.iter().any(|m| matches!(m, Mapping::Enclave { .. }))
    }

    /// Drops the enclave object once nothing refers to it any more (the kernel frees it when
    /// the last descriptor and the last VMA are gone).
    pub fn release_if_unreferenced(&mut self) {
        if self.fds.is_empty() && !self.has_enclave_mappings() {
            self.encl = None;
        }
    }

    /// A fresh VMA identifier.
    pub fn new_vma(&mut self) -> u32 {
        self.next_vma += 1;
        self.next_vma
    }
}

impl Default for Slot {
    fn default() -> Self {
        Slot::new()
    }
}
