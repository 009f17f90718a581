//! The errno oracle: for each ioctl, the kernel driver's checks in the kernel's order
//! (spec/driver.md §2.4, §3.1–§3.8), each step's errno, the per-page loops with their partial
//! `count` and `result`, and the write-back of the argument. Each function takes the enclave
//! model, applies the effects the kernel would, and returns the exact answer it predicts.
//!
//! ENCLS outcomes that depend on the EPCM (ECREATE's SECS checks, EADD's TCS checks, EINIT's
//! signature and measurement, EMODPR/EMODT's PENDING/MODIFIED) come from the architecture
//! (spec/architecture.md §4), which the model tracks too.

use libc::{EACCES, EBUSY, EFAULT, EINVAL, EIO, ENODEV, EPERM};
use sgxemu_arch::{PAGE_SIZE, SecinfoFlags};
use sgxemu_enclave::{ImagePage, PageData};

use crate::enclave_program;
use crate::model::{Encl, Page, PageType, R, W, X};
use crate::ops::{
    ArgPtr, AttrVariant, ObjPtr, OutFields, RangeShape, SecinfoVariant, SecsVariant, SigVariant, SrcVariant,
};
use crate::sys::Errno;

const PAGE: u64 = PAGE_SIZE as u64;

/// SGX_PAGE_NOT_MODIFIABLE, the EMODPR/EMODT code for a PENDING or MODIFIED page.
pub const SGX_PAGE_NOT_MODIFIABLE: u64 = 20;
/// SGX_PAGE_ATTRIBUTES_MISMATCH, EACCEPT's code for a SECINFO that does not match the EPCM.
pub const SGX_PAGE_ATTRIBUTES_MISMATCH: u64 = 19;

/// ATTRIBUTES bits the emulated part lets SECS set (CPUID.(12h,1)): DEBUG, MODE64BIT,
/// PROVISIONKEY, EINITTOKENKEY, KSS.
const SETTABLE_ATTRIBUTES: u64 = 0x2 | 0x4 | 0x10 | 0x20 | 0x80;

/// The kernel's answer to one ioctl.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expect {
    /// 0 or the errno.
    pub ret: Result<(), Errno>,
    /// The argument's `count` as written back; `None`: the argument is not written back.
    pub count: Option<u64>,
    /// The argument's `result` as written back (only where it is written).
    pub result: Option<u64>,
}

impl Expect {
    fn err(errno: Errno) -> Expect {
        Expect { ret: Err(errno), count: None, result: None }
    }
}

/// Whether an argument pointer can be read.
fn readable(arg: ArgPtr) -> bool {
    matches!(arg, ArgPtr::Valid | ArgPtr::ReadOnly)
}

fn obj_readable(ptr: ObjPtr) -> bool {
    matches!(ptr, ObjPtr::Valid | ObjPtr::ReadOnly)
}

/// The end of an ioctl with a per-page loop: the argument is copied back (count, result),
/// and a failing copy-back turns any result into EFAULT.
fn written_back(arg: ArgPtr, ret: Result<(), Errno>, count: u64, result: Option<u64>) -> Expect {
    if arg == ArgPtr::ReadOnly {
        return Expect { ret: Err(EFAULT), count: None, result: None };
    }
    Expect { ret, count: Some(count), result }
}

/// The offset and length a shape gives for pages `page .. page + npages`.
pub fn range(shape: RangeShape, page: u16, npages: u8) -> (u64, u64) {
    let (offset, length) = (u64::from(page) * PAGE, u64::from(npages) * PAGE);
    match shape {
        RangeShape::Pages => (offset, length),
        RangeShape::UnalignedOffset => (offset + 8, length),
        RangeShape::ZeroLength => (offset, 0),
        RangeShape::UnalignedLength => (offset, length - 16),
        RangeShape::Overflow => (!(PAGE - 1), 2 * PAGE),
    }
}

/// `sgx_validate_offset_length`.
fn offset_length_valid(encl: &Encl, offset: u64, length: u64) -> bool {
    if !offset.is_multiple_of(PAGE) || length == 0 || !length.is_multiple_of(PAGE) {
        return false;
    }
    match offset.checked_add(length) {
        None => false,
        Some(end) => end - PAGE < encl.size,
    }
}

/// SECS.ATTRIBUTES.FLAGS of a valid CREATE.
pub fn secs_attributes(attrs: AttrVariant) -> u64 {
    0x4 | match attrs {
        AttrVariant::Plain => 0,
        AttrVariant::Debug => 0x2,
        AttrVariant::ProvisionKey => 0x10,
        AttrVariant::EinitTokenKey => 0x20,
        AttrVariant::Kss => 0x80,
    }
}

/// SGX_IOC_ENCLAVE_CREATE (§3.1).
pub fn create(
    encl: &mut Encl,
    arg: ArgPtr,
    secs: SecsVariant,
    secs_ptr: ObjPtr,
    size_log2: u8,
    attrs: AttrVariant,
) -> Expect {
    if encl.created {
        return Expect::err(EINVAL);
    }
    if !readable(arg) || !obj_readable(secs_ptr) {
        return Expect::err(EFAULT);
    }
    match secs {
        SecsVariant::SizeNotPow2 | SecsVariant::SizeZero | SecsVariant::Size2p63 => Expect::err(EINVAL),
        SecsVariant::Valid => {
            *encl = Encl { created: true, size: 1 << size_log2, attributes: secs_attributes(attrs), ..Encl::default() };
            Expect { ret: Ok(()), count: None, result: None }
        }
        // Everything else is ECREATE's to refuse: #GP → EIO, and CREATED stays clear.
        _ => Expect::err(EIO),
    }
}

/// The SECINFO flags a variant passes (for the valid ones).
pub fn secinfo_flags(variant: SecinfoVariant) -> u64 {
    match variant {
        SecinfoVariant::Reg(perms) => u64::from(perms) | (2 << 8),
        SecinfoVariant::Tcs => 1 << 8,
        SecinfoVariant::TcsWithPerms => (1 << 8) | 1,
        SecinfoVariant::Type(ty) => (u64::from(ty) << 8) | 1,
        SecinfoVariant::FlagBit(bit) => (1 << bit) | (2 << 8) | 1,
        SecinfoVariant::ReservedByte | SecinfoVariant::Ptr(_) => (2 << 8) | 1,
    }
}

/// The driver's SECINFO validation (§3.2 step 6).
fn secinfo_valid(variant: SecinfoVariant) -> bool {
    match variant {
        SecinfoVariant::Reg(perms) => !(perms & W != 0 && perms & R == 0),
        SecinfoVariant::Tcs | SecinfoVariant::Ptr(_) => true,
        _ => false,
    }
}

/// The contents ADD_PAGES reads for page `i` of a source variant (`None`: unreadable, the
/// kernel's get_user_pages fails).
pub fn source_page(src: SrcVariant, i: u8, target_page: u64) -> Option<[u8; PAGE_SIZE]> {
    match src {
        SrcVariant::Code => Some(enclave_program::code_page()),
        // (A target page beyond any ELRANGE only occurs in ranges the driver refuses.)
        SrcVariant::Tcs => Some(enclave_program::tcs_page(target_page % (1 << 32))),
        SrcVariant::Zero => Some([0; PAGE_SIZE]),
        SrcVariant::Pattern(byte) => Some(pattern_page(byte, i)),
        SrcVariant::ReadOnly => Some(pattern_page(0x5A, i)),
        SrcVariant::ProtNoneAt(k) => (i < k).then(|| pattern_page(0xC3, i)),
        SrcVariant::ExecOnlyContents => Some(if i == 0 { pattern_page(0x11, 0) } else { pattern_page(0x5A, i - 1) }),
        SrcVariant::Unaligned | SrcVariant::ExecOnly | SrcVariant::Kernel => None,
    }
}

/// A page of `byte + i` repeated, with its index in the first byte.
pub fn pattern_page(byte: u8, i: u8) -> [u8; PAGE_SIZE] {
    let mut page = [byte.wrapping_add(i); PAGE_SIZE];
    page[0] = i ^ 0x80;
    page
}

/// Whether EADD accepts these bytes as a TCS (reserved area [72, 4096) zero, §4.2 step 7).
fn tcs_acceptable(bytes: &[u8; PAGE_SIZE]) -> bool {
    bytes[sgxemu_arch::TCS_ARCH_SIZE..].iter().all(|&b| b == 0)
}

/// A request of SGX_IOC_ENCLAVE_ADD_PAGES.
#[derive(Clone, Copy, Debug)]
#[allow(missing_docs, reason = "the ioctl's fields")]
pub struct AddRequest {
    pub arg: ArgPtr,
    pub src: SrcVariant,
    pub shape: RangeShape,
    pub page: u16,
    pub npages: u8,
    pub secinfo: SecinfoVariant,
    pub flags: u64,
}

/// SGX_IOC_ENCLAVE_ADD_PAGES (§3.2).
pub fn add_pages(encl: &mut Encl, req: &AddRequest) -> Expect {
    if !encl.created || encl.initialized {
        return Expect::err(EINVAL);
    }
    if !readable(req.arg) {
        return Expect::err(EFAULT);
    }
    if req.src == SrcVariant::Unaligned {
        return Expect::err(EINVAL);
    }
    let (offset, length) = range(req.shape, req.page, req.npages);
    if !offset_length_valid(encl, offset, length) {
        return Expect::err(EINVAL);
    }
    if let SecinfoVariant::Ptr(ptr) = req.secinfo
        && !obj_readable(ptr)
    {
        return Expect::err(EFAULT);
    }
    if !secinfo_valid(req.secinfo) {
        return Expect::err(EINVAL);
    }
    let flags = secinfo_flags(req.secinfo);
    let is_tcs = matches!(req.secinfo, SecinfoVariant::Tcs);
    let mut done = 0u64;
    let mut ret = Ok(());
    for i in 0..req.npages {
        let target = offset / PAGE + u64::from(i);
        if encl.pages.contains_key(&target) {
            ret = Err(EBUSY);
            break;
        }
        let Some(bytes) = source_page(req.src, i, target) else {
            ret = Err(EFAULT);
            break;
        };
        if is_tcs && !tcs_acceptable(&bytes) {
            ret = Err(EIO);
            break;
        }
        let perms = (flags & 7) as u8;
        encl.pages.insert(
            target,
            Page {
                ty: if is_tcs { PageType::Tcs } else { PageType::Reg },
                max_prot: if is_tcs { R | W } else { perms },
                epcm_perms: perms,
                pending: false,
                modified: false,
                pr: false,
                zero: bytes.iter().all(|&b| b == 0),
                enterable: is_tcs && req.src == SrcVariant::Tcs,
                program: !is_tcs && req.src == SrcVariant::Code,
                cssa: 0,
            },
        );
        encl.added.push(ImagePage::single(
            target * PAGE,
            SecinfoFlags::from_bits_retain(flags),
            PageData::from_page(&bytes),
            req.flags & sgxemu_uapi::SGX_PAGE_MEASURE != 0,
        ));
        done += 1;
    }
    written_back(req.arg, ret, done * PAGE, None)
}

/// SGX_IOC_ENCLAVE_INIT (§3.3). A [`SigVariant::Valid`] SIGSTRUCT is signed for the model's
/// measurement, so EINIT accepts it exactly when the model is right about what was added.
pub fn init(encl: &mut Encl, arg: ArgPtr, sig: SigVariant) -> Expect {
    if !encl.created || encl.initialized {
        return Expect::err(EINVAL);
    }
    if !readable(arg) {
        return Expect::err(EFAULT);
    }
    if let SigVariant::Ptr(ptr) = sig
        && !obj_readable(ptr)
    {
        return Expect::err(EFAULT);
    }
    if sig == SigVariant::BadVendor {
        return Expect::err(EINVAL);
    }
    let mask =
        sgxemu_uapi::SGX_ATTR_UNPRIV_MASK | if encl.provisioned { sgxemu_uapi::SGX_ATTR_PROVISIONKEY } else { 0 };
    if encl.attributes & !mask != 0 {
        return Expect::err(EACCES);
    }
    match sig {
        SigVariant::ReservedAttribute | SigVariant::ReservedMisc | SigVariant::ReservedXfrm => Expect::err(EINVAL),
        SigVariant::BadSignature => Expect::err(EPERM),
        _ => {
            encl.initialized = true;
            Expect { ret: Ok(()), count: None, result: None }
        }
    }
}

/// The attribute bits a SIGSTRUCT may compare that the kernel calls reserved.
pub fn reserved_attribute_mask() -> u64 {
    !SETTABLE_ATTRIBUTES | sgxemu_uapi::SGX_ATTR_RESERVED_MASK
}

/// SGX_IOC_ENCLAVE_PROVISION (§3.4); `fd_is_provision` says whether the descriptor's low 32
/// bits name an open `/dev/sgx_provision`.
pub fn provision(encl: &mut Encl, arg: ArgPtr, fd_is_provision: bool) -> Expect {
    if !readable(arg) {
        return Expect::err(EFAULT);
    }
    if !fd_is_provision {
        return Expect::err(EINVAL);
    }
    encl.provisioned = true;
    Expect { ret: Ok(()), count: None, result: None }
}

/// The checks every SGX2 ioctl starts with (§2.4 `sgx_ioc_sgx2_ready`, the argument copy, the
/// offset/length check), then `out` fields on input.
fn sgx2_prologue(encl: &Encl, sgx2: bool, arg: ArgPtr, offset: u64, length: u64) -> Result<(), Errno> {
    if !sgx2 {
        return Err(ENODEV);
    }
    if !encl.initialized {
        return Err(EINVAL);
    }
    if !readable(arg) {
        return Err(EFAULT);
    }
    if !offset_length_valid(encl, offset, length) {
        return Err(EINVAL);
    }
    Ok(())
}

/// Where a per-page loop stops early because the executor saw a retryable answer (EAGAIN or
/// EBUSY while the reclaimer held a page): the kernel could answer so at any page it loads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transient {
    /// Pages completed before it.
    pub at_page: u64,
    /// The errno seen.
    pub errno: Errno,
}

/// Whether a transient answer is possible at page `target`: only where the kernel loads a
/// page that exists (§3.6c).
fn transient_here(encl: &Encl, target: u64, transient: Option<Transient>, done: u64) -> Option<Errno> {
    let t = transient?;
    (t.at_page == done && encl.pages.contains_key(&target)).then_some(t.errno)
}

/// A request of one of the three SGX2 ioctls.
#[derive(Clone, Copy, Debug)]
#[allow(missing_docs, reason = "the ioctl's fields")]
pub struct Sgx2Request {
    pub arg: ArgPtr,
    pub shape: RangeShape,
    pub page: u16,
    pub npages: u8,
    pub out: OutFields,
}

/// What becomes of a page an SGX2 ioctl's loop handled.
enum Handled {
    /// The page stays, changed as the step left it.
    Kept,
    /// The page is gone (REMOVE_PAGES).
    Removed,
}

/// The per-page loop the three SGX2 ioctls share (§3.6–3.8): at each page in turn a
/// transient answer where the kernel loads an existing page, EFAULT where no page is, then
/// `step`, whose error (errno, the ioctl's `result` field) ends the loop. Returns the
/// ioctl's answer, the pages done and the `result` field.
fn each_page(
    encl: &mut Encl,
    offset: u64,
    npages: u8,
    transient: Option<Transient>,
    mut step: impl FnMut(&mut Page) -> Result<Handled, (Errno, u64)>,
) -> (Result<(), Errno>, u64, u64) {
    let mut done = 0;
    for i in 0..u64::from(npages) {
        let target = offset / PAGE + i;
        if let Some(e) = transient_here(encl, target, transient, done) {
            return (Err(e), done, 0);
        }
        let Some(page) = encl.pages.get_mut(&target) else {
            return (Err(EFAULT), done, 0);
        };
        match step(page) {
            Ok(Handled::Kept) => {}
            Ok(Handled::Removed) => {
                encl.pages.remove(&target);
            }
            Err((errno, result)) => return (Err(errno), done, result),
        }
        done += 1;
    }
    (Ok(()), done, 0)
}

/// SGX_IOC_ENCLAVE_RESTRICT_PERMISSIONS (§3.6).
pub fn restrict(encl: &mut Encl, sgx2: bool, req: &Sgx2Request, perms: u64, transient: Option<Transient>) -> Expect {
    let (offset, length) = range(req.shape, req.page, req.npages);
    if let Err(e) = sgx2_prologue(encl, sgx2, req.arg, offset, length) {
        return Expect::err(e);
    }
    if perms & !7 != 0 || (perms & 2 != 0 && perms & 1 == 0) || req.out != OutFields::Zero {
        return Expect::err(EINVAL);
    }
    let (ret, done, result) = each_page(encl, offset, req.npages, transient, |page| {
        if page.ty != PageType::Reg {
            return Err((EINVAL, 0));
        }
        if page.pending || page.modified {
            return Err((EFAULT, SGX_PAGE_NOT_MODIFIABLE));
        }
        page.epcm_perms &= perms as u8;
        page.pr = true;
        Ok(Handled::Kept)
    });
    written_back(req.arg, ret, done * PAGE, Some(result))
}

/// SGX_IOC_ENCLAVE_MODIFY_TYPES (§3.7).
pub fn modify(encl: &mut Encl, sgx2: bool, req: &Sgx2Request, page_type: u64, transient: Option<Transient>) -> Expect {
    let (offset, length) = range(req.shape, req.page, req.npages);
    if let Err(e) = sgx2_prologue(encl, sgx2, req.arg, offset, length) {
        return Expect::err(e);
    }
    if page_type & !0xFF != 0 || req.out != OutFields::Zero {
        return Expect::err(EINVAL);
    }
    let new_type = match page_type {
        1 => PageType::Tcs,
        4 => PageType::Trim,
        _ => return written_back(req.arg, Err(EINVAL), 0, Some(0)),
    };
    let (ret, done, result) = each_page(encl, offset, req.npages, transient, |page| {
        let allowed = matches!(
            (page.ty, new_type),
            (PageType::Reg, PageType::Tcs | PageType::Trim) | (PageType::Tcs, PageType::Trim)
        );
        if !allowed {
            return Err((EINVAL, 0));
        }
        if new_type == PageType::Tcs && page.max_prot & (R | W) != (R | W) {
            return Err((EPERM, 0));
        }
        if page.pending || page.modified {
            return Err((EFAULT, SGX_PAGE_NOT_MODIFIABLE));
        }
        if new_type == PageType::Tcs {
            page.max_prot = R | W;
        }
        page.ty = new_type;
        page.modified = true;
        page.pr = false;
        page.epcm_perms = 0;
        page.enterable = false;
        Ok(Handled::Kept)
    });
    written_back(req.arg, ret, done * PAGE, Some(result))
}

/// SGX_IOC_ENCLAVE_REMOVE_PAGES (§3.8).
pub fn remove(encl: &mut Encl, sgx2: bool, req: &Sgx2Request, transient: Option<Transient>) -> Expect {
    let (offset, length) = range(req.shape, req.page, req.npages);
    if let Err(e) = sgx2_prologue(encl, sgx2, req.arg, offset, length) {
        return Expect::err(e);
    }
    if req.out == OutFields::Count {
        return Expect::err(EINVAL);
    }
    let (ret, done, _) = each_page(encl, offset, req.npages, transient, |page| {
        // The acceptance probe: EMODPR on an un-accepted TRIM page answers NOT_MODIFIABLE,
        // on an accepted one it takes the #PF REMOVE wants.
        if page.ty != PageType::Trim || page.modified {
            return Err((EPERM, 0));
        }
        Ok(Handled::Removed)
    });
    written_back(req.arg, ret, done * PAGE, None)
}

/// May a mapping with protections `prot` cover pages `start .. end` (`sgx_encl_may_map`,
/// §4.2)? `Err(EACCES)` if not.
pub fn may_map(encl: Option<&Encl>, start: u64, end: u64, prot: u8) -> Result<(), Errno> {
    let Some(encl) = encl else { return Ok(()) };
    if encl.initialized && end > encl.size_pages() {
        return Err(EACCES);
    }
    let wanted = prot & (R | W | X);
    for (_, page) in encl.pages.range(start..end) {
        if wanted & !page.max_prot != 0 {
            return Err(EACCES);
        }
    }
    Ok(())
}

/// EACCEPT of the page `page` with SECINFO number `secinfo` of the program's table (§5.7),
/// after the fault handler EAUGed a hole there. The code and the page's new EPCM state.
pub fn eaccept(encl: &mut Encl, page: u64, secinfo: u8) -> u64 {
    let entry = encl.pages.entry(page).or_insert(Page {
        ty: PageType::Reg,
        max_prot: R | W | X,
        epcm_perms: R | W,
        pending: true,
        modified: false,
        pr: false,
        zero: true,
        enterable: false,
        program: false,
        cssa: 0,
    });
    let flags = enclave_program::ACCEPT_SECINFO[usize::from(secinfo)];
    let wanted_type = (flags >> 8) & 0xFF;
    let matches = entry.ty.number() == wanted_type
        && u64::from(entry.epcm_perms) == flags & 7
        && entry.pending == (flags & SecinfoFlags::PENDING.bits() != 0)
        && entry.modified == (flags & SecinfoFlags::MODIFIED.bits() != 0);
    if !matches {
        return SGX_PAGE_ATTRIBUTES_MISMATCH;
    }
    entry.pending = false;
    entry.modified = false;
    entry.pr = false;
    0
}

/// Whether EACCEPT with this SECINFO could #GP on the page's contents (accepting a TCS whose
/// reserved area is not zero): the executor does not generate those.
pub fn eaccept_may_fault(encl: &Encl, page: u64, secinfo: u8) -> bool {
    let flags = enclave_program::ACCEPT_SECINFO[usize::from(secinfo)];
    let Some(p) = encl.pages.get(&page) else { return false };
    (flags >> 8) & 0xFF == 1 && p.ty == PageType::Tcs && p.modified && !p.zero
}

#[cfg(test)]
mod tests {
    use super::*;

    fn initialized() -> Encl {
        let mut encl = Encl::default();
        create(&mut encl, ArgPtr::Valid, SecsVariant::Valid, ObjPtr::Valid, 16, AttrVariant::Plain);
        let add = AddRequest {
            arg: ArgPtr::Valid,
            src: SrcVariant::Zero,
            shape: RangeShape::Pages,
            page: 0,
            npages: 2,
            secinfo: SecinfoVariant::Reg(3),
            flags: 0,
        };
        assert_eq!(add_pages(&mut encl, &add).ret, Ok(()));
        assert_eq!(init(&mut encl, ArgPtr::Valid, SigVariant::Valid).ret, Ok(()));
        encl
    }

    fn sgx2(page: u16, npages: u8) -> Sgx2Request {
        Sgx2Request { arg: ArgPtr::Valid, shape: RangeShape::Pages, page, npages, out: OutFields::Zero }
    }

    #[test]
    fn create_checks_state_before_the_argument() {
        let mut encl = initialized();
        assert_eq!(
            create(&mut encl, ArgPtr::Null, SecsVariant::Valid, ObjPtr::Valid, 16, AttrVariant::Plain).ret,
            Err(EINVAL)
        );
        let mut fresh = Encl::default();
        assert_eq!(
            create(&mut fresh, ArgPtr::Null, SecsVariant::SizeZero, ObjPtr::Valid, 16, AttrVariant::Plain).ret,
            Err(EFAULT)
        );
        assert_eq!(
            create(&mut fresh, ArgPtr::Valid, SecsVariant::SsaZero, ObjPtr::Valid, 16, AttrVariant::Plain).ret,
            Err(EIO)
        );
        assert!(!fresh.created, "a failed CREATE may be retried");
    }

    #[test]
    fn add_pages_reports_partial_progress_and_read_only_arguments() {
        let mut encl = Encl::default();
        create(&mut encl, ArgPtr::Valid, SecsVariant::Valid, ObjPtr::Valid, 16, AttrVariant::Plain);
        let mut req = AddRequest {
            arg: ArgPtr::Valid,
            src: SrcVariant::ProtNoneAt(2),
            shape: RangeShape::Pages,
            page: 3,
            npages: 4,
            secinfo: SecinfoVariant::Reg(1),
            flags: 0,
        };
        assert_eq!(add_pages(&mut encl, &req), Expect { ret: Err(EFAULT), count: Some(2 * PAGE), result: None });
        req.src = SrcVariant::Zero;
        req.arg = ArgPtr::ReadOnly;
        req.page = 4;
        // Page 4 exists now: EBUSY, but the write-back of the count fails first → EFAULT.
        assert_eq!(add_pages(&mut encl, &req).ret, Err(EFAULT));
    }

    #[test]
    fn trim_needs_acceptance_before_removal() {
        let mut encl = initialized();
        assert_eq!(modify(&mut encl, true, &sgx2(0, 1), 4, None).ret, Ok(()));
        assert_eq!(remove(&mut encl, true, &sgx2(0, 1), None).ret, Err(EPERM));
        assert_eq!(eaccept(&mut encl, 0, 1), 0);
        assert_eq!(
            remove(&mut encl, true, &sgx2(0, 2), None),
            Expect { ret: Err(EPERM), count: Some(PAGE), result: None }
        );
        assert_eq!(remove(&mut encl, false, &sgx2(0, 2), None).ret, Err(ENODEV));
    }

    #[test]
    fn restrict_of_a_pending_page_returns_the_sgx_code() {
        use libc::EAGAIN;
        let mut encl = initialized();
        assert_eq!(eaccept(&mut encl, 5, 1), SGX_PAGE_ATTRIBUTES_MISMATCH, "EAUGed, PENDING");
        let expect = restrict(&mut encl, true, &sgx2(4, 2), 1, None);
        assert_eq!(expect, Expect { ret: Err(EFAULT), count: Some(0), result: Some(0) }, "page 4 is a hole");
        let expect = restrict(&mut encl, true, &sgx2(5, 1), 1, None);
        assert_eq!(expect, Expect { ret: Err(EFAULT), count: Some(0), result: Some(SGX_PAGE_NOT_MODIFIABLE) });
        let transient = Some(Transient { at_page: 0, errno: EAGAIN });
        assert_eq!(restrict(&mut encl, true, &sgx2(0, 1), 1, transient).ret, Err(EAGAIN));
    }
}
