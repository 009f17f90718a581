//! SGX2 Enclave Dynamic Memory Management from the host's side: RESTRICT_PERMISSIONS,
//! MODIFY_TYPES and REMOVE_PAGES with the uapi's partial-progress protocol, and the flows
//! that pair them with the enclave's EACCEPT — growing memory, adding a thread, restricting
//! permissions, trimming and removing pages.
//!
//! The EACCEPTs themselves run inside the enclave; the flows take an [`Accept`]
//! implementation that asks the enclave to do them (the sample enclaves' `ACCEPT` call, or
//! your enclave's own).

use std::ops::Range;
use std::time::{Duration, Instant};

use sgxemu_arch::{PAGE_SIZE, PageType, SecinfoFlags};
use sgxemu_uapi::{
    SGX_IOC_ENCLAVE_MODIFY_TYPES, SGX_IOC_ENCLAVE_REMOVE_PAGES, SGX_IOC_ENCLAVE_RESTRICT_PERMISSIONS,
    SgxEnclaveModifyTypes, SgxEnclaveRemovePages, SgxEnclaveRestrictPermissions,
};

use crate::device::Errno;
use crate::loader::Enclave;

/// How long EAGAIN/EBUSY/EINTR answers are retried without any progress before giving up:
/// they mean "the reclaimer holds the page right now", which passes quickly.
const RETRY_WITHOUT_PROGRESS: Duration = Duration::from_secs(10);

/// Which EDMM ioctl.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EdmmOp {
    RestrictPermissions,
    ModifyTypes,
    RemovePages,
}

impl EdmmOp {
    fn name(self) -> &'static str {
        match self {
            EdmmOp::RestrictPermissions => "SGX_IOC_ENCLAVE_RESTRICT_PERMISSIONS",
            EdmmOp::ModifyTypes => "SGX_IOC_ENCLAVE_MODIFY_TYPES",
            EdmmOp::RemovePages => "SGX_IOC_ENCLAVE_REMOVE_PAGES",
        }
    }
}

/// An EDMM ioctl that stopped before the end of its range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "{} failed at offset {:#x} after {done:#x} of {length:#x} bytes: {errno}{}",
    op.name(),
    offset + done,
    sgx_result.map_or(String::new(), |r| format!(" (SGX result {r})"))
)]
pub struct EdmmError {
    pub op: EdmmOp,
    /// The range's first offset.
    pub offset: u64,
    /// The range's length.
    pub length: u64,
    /// Bytes completed before the failure.
    pub done: u64,
    /// The driver's errno.
    pub errno: Errno,
    /// The SGX error code EMODPR/EMODT returned, when the driver reports one.
    pub sgx_result: Option<u64>,
}

/// Why an EDMM flow stopped.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FlowError {
    /// The range is empty, unaligned or outside ELRANGE.
    #[error("range {start:#x}..{end:#x} is not a non-empty page-aligned range inside the enclave")]
    Range { start: u64, end: u64 },
    /// A host-side ioctl failed.
    #[error(transparent)]
    Ioctl(#[from] EdmmError),
    /// The enclave's EACCEPT (or its call) failed.
    #[error("the enclave could not accept {what}: {reason}")]
    Accept { what: &'static str, reason: String },
}

/// The enclave-side half of EDMM: EACCEPT of each page in a range.
pub trait Accept {
    /// Runs EACCEPT inside the enclave on every page of `range` (enclave offsets) with a
    /// SECINFO whose flags are `flags`.
    ///
    /// # Errors
    /// A description of what failed (EACCEPT's SGX error code, an exception, …).
    fn accept(&mut self, enclave: &Enclave, range: Range<u64>, flags: SecinfoFlags) -> Result<(), String>;
}

impl Enclave {
    fn range_ok(&self, range: &Range<u64>) -> Result<(), FlowError> {
        if range.end > range.start && self.check_range(range.start, range.end - range.start) {
            Ok(())
        } else {
            Err(FlowError::Range { start: range.start, end: range.end })
        }
    }

    /// Issues one EDMM ioctl over `range` to the end: after partial progress it continues
    /// from `count` (the uapi's protocol), and it retries EAGAIN/EBUSY/EINTR while they
    /// keep making progress.
    fn edmm_loop(
        &self,
        op: EdmmOp,
        range: Range<u64>,
        mut issue: impl FnMut(u64, u64) -> (Result<(), Errno>, u64, u64),
    ) -> Result<(), EdmmError> {
        // An empty or inverted range goes to the driver as length 0, which refuses it.
        let length = range.end.saturating_sub(range.start);
        let mut done = 0;
        let mut last_progress = Instant::now();
        loop {
            let (result, count, sgx_result) = issue(range.start + done, length - done);
            done += count;
            if count > 0 {
                last_progress = Instant::now();
            }
            let errno = match result {
                Ok(()) if done >= length => return Ok(()),
                // Success short of the end is not in the uapi; never spin on it.
                Ok(()) if count > 0 => continue,
                Ok(()) => Errno(libc::EIO),
                Err(Errno(libc::EAGAIN | libc::EBUSY | libc::EINTR))
                    if last_progress.elapsed() < RETRY_WITHOUT_PROGRESS =>
                {
                    std::thread::yield_now();
                    continue;
                }
                Err(errno) => errno,
            };
            let sgx_result = (sgx_result != 0).then_some(sgx_result);
            return Err(EdmmError { op, offset: range.start, length, done, errno, sgx_result });
        }
    }

    /// SGX_IOC_ENCLAVE_RESTRICT_PERMISSIONS over `range` (enclave offsets): EMODPR of each
    /// page to `perms` (R/W/X bits; permissions can only be removed). The enclave must then
    /// EACCEPT each page with `perms | PR`.
    ///
    /// # Errors
    /// Where and why the driver stopped.
    pub fn restrict_permissions(&self, range: Range<u64>, perms: SecinfoFlags) -> Result<(), EdmmError> {
        self.edmm_loop(EdmmOp::RestrictPermissions, range, |offset, length| {
            let mut arg =
                SgxEnclaveRestrictPermissions { offset, length, permissions: perms.bits(), result: 0, count: 0 };
            let result = self.file().ioctl(SGX_IOC_ENCLAVE_RESTRICT_PERMISSIONS, &mut arg);
            (result, arg.count, arg.result)
        })
    }

    /// SGX_IOC_ENCLAVE_MODIFY_TYPES over `range`: EMODT to `page_type` (TCS from REG, or
    /// TRIM). The enclave must then EACCEPT each page with `type | MODIFIED`.
    ///
    /// # Errors
    /// Where and why the driver stopped.
    pub fn modify_types(&self, range: Range<u64>, page_type: PageType) -> Result<(), EdmmError> {
        self.edmm_loop(EdmmOp::ModifyTypes, range, |offset, length| {
            let mut arg =
                SgxEnclaveModifyTypes { offset, length, page_type: u64::from(page_type as u8), result: 0, count: 0 };
            let result = self.file().ioctl(SGX_IOC_ENCLAVE_MODIFY_TYPES, &mut arg);
            (result, arg.count, arg.result)
        })
    }

    /// SGX_IOC_ENCLAVE_REMOVE_PAGES over `range`: EREMOVE of trimmed pages the enclave
    /// has accepted; their addresses become holes again.
    ///
    /// # Errors
    /// Where and why the driver stopped (EPERM: a page was not trimmed and accepted).
    pub fn remove_pages(&self, range: Range<u64>) -> Result<(), EdmmError> {
        self.edmm_loop(EdmmOp::RemovePages, range, |offset, length| {
            let mut arg = SgxEnclaveRemovePages { offset, length, count: 0 };
            let result = self.file().ioctl(SGX_IOC_ENCLAVE_REMOVE_PAGES, &mut arg);
            (result, arg.count, 0)
        })
    }

    /// Grows the enclave over `range` (holes in ELRANGE) the EACCEPT-first way: the
    /// enclave's EACCEPT of each not-yet-present page faults, the driver EAUGs a PENDING
    /// page there, and the EACCEPT completes it as `R|W` regular memory. (The other way —
    /// simply touching the memory — needs no host call at all: the first access EAUGs, and
    /// the enclave then EACCEPTs before using it.)
    ///
    /// # Errors
    /// A bad range, or the enclave's failure to accept.
    pub fn grow(&self, range: Range<u64>, accept: &mut dyn Accept) -> Result<(), FlowError> {
        self.range_ok(&range)?;
        let flags = (SecinfoFlags::R | SecinfoFlags::W | SecinfoFlags::PENDING).with_page_type(PageType::Reg);
        accept.accept(self, range, flags).map_err(|reason| FlowError::Accept { what: "the new pages", reason })
    }

    /// Restricts `range` to `perms` and has the enclave accept the restriction.
    ///
    /// # Errors
    /// A bad range, the driver's failure, or the enclave's.
    pub fn restrict(&self, range: Range<u64>, perms: SecinfoFlags, accept: &mut dyn Accept) -> Result<(), FlowError> {
        self.range_ok(&range)?;
        self.restrict_permissions(range.clone(), perms)?;
        let flags = (perms | SecinfoFlags::PR).with_page_type(PageType::Reg);
        accept
            .accept(self, range, flags)
            .map_err(|reason| FlowError::Accept { what: "the restricted permissions", reason })
    }

    /// Turns the regular page at `tcs_offset` — already EAUGed, accepted and filled with
    /// the TCS contents by the enclave — into a TCS, has the enclave accept it, and adds it
    /// to [`tcs`](Enclave::tcs). Returns its linear address.
    ///
    /// # Errors
    /// A bad offset, the driver's failure, or the enclave's.
    pub fn add_thread(&mut self, tcs_offset: u64, accept: &mut dyn Accept) -> Result<u64, FlowError> {
        let range = tcs_offset..tcs_offset.saturating_add(PAGE_SIZE as u64);
        self.range_ok(&range)?;
        self.modify_types(range.clone(), PageType::Tcs)?;
        let flags = SecinfoFlags::MODIFIED.with_page_type(PageType::Tcs);
        accept.accept(self, range, flags).map_err(|reason| FlowError::Accept { what: "the new TCS", reason })?;
        let tcs = self.base() + tcs_offset;
        self.push_tcs(tcs);
        Ok(tcs)
    }

    /// Trims `range` (REG or TCS pages) and removes it: MODIFY_TYPES(TRIM), the enclave's
    /// EACCEPT(TRIM|MODIFIED), REMOVE_PAGES. The EPC pages go back to the system.
    ///
    /// # Errors
    /// A bad range, the driver's failure, or the enclave's.
    pub fn trim(&mut self, range: Range<u64>, accept: &mut dyn Accept) -> Result<(), FlowError> {
        self.range_ok(&range)?;
        self.modify_types(range.clone(), PageType::Trim)?;
        let flags = SecinfoFlags::MODIFIED.with_page_type(PageType::Trim);
        accept.accept(self, range.clone(), flags).map_err(|reason| FlowError::Accept { what: "the trim", reason })?;
        self.remove_pages(range.clone())?;
        let base = self.base();
        self.forget_tcs(|tcs| range.contains(&(tcs - base)));
        Ok(())
    }
}
