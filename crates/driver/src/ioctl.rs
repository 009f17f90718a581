//! The enclave ioctls (the kernel's `ioctl.c`), each validation in the order of driver spec
//! §3 with its errno, `count`/`result` written back on success and on error.

use std::time::Duration;

use sgxemu_arch::{EEXTEND_CHUNK_SIZE, ErrorCode, PAGE_SIZE, PageType, Secinfo, Secs, Sigstruct, Vector};
use sgxemu_uapi::{
    SGX_ATTR_PROVISIONKEY, SGX_PAGE_MEASURE, SGX_PAGE_TYPE_MASK, SGX_PAGE_TYPE_TCS, SGX_PAGE_TYPE_TRIM,
    SGX_SECINFO_PERMISSION_MASK, SGX_SECINFO_R, SGX_SECINFO_RESERVED_MASK, SGX_SECINFO_W, SgxEnclaveAddPages,
    SgxEnclaveCreate, SgxEnclaveInit, SgxEnclaveModifyTypes, SgxEnclaveProvision, SgxEnclaveRemovePages,
    SgxEnclaveRestrictPermissions,
};
use zerocopy::{FromBytes, IntoBytes};

use crate::encl::{Encl, EnclPage, EnclState};
use crate::encls::{Cpu, EnclsError};
use crate::errno::{Errno, KResult};
use crate::os::{Prot, Task};
use crate::sgx::{Sgx, UNPRIV_ATTRIBUTES};

const PAGE: u64 = PAGE_SIZE as u64;
/// EINIT retries: SGX_EINIT_SLEEP_COUNT rounds of SGX_EINIT_SPIN_COUNT attempts.
const EINIT_SLEEP_COUNT: usize = 50;
const EINIT_SPIN_COUNT: usize = 20;

fn copy_in<T: FromBytes + IntoBytes>(task: &dyn Task, addr: u64) -> KResult<T> {
    let mut value = T::new_zeroed();
    task.copy_from_user(addr, value.as_mut_bytes())?;
    Ok(value)
}

fn copy_out<T: IntoBytes + zerocopy::Immutable>(task: &dyn Task, addr: u64, value: &T) -> KResult<()> {
    task.copy_to_user(addr, value.as_bytes())
}

/// `sgx_validate_offset_length` (all EINVAL).
fn validate_offset_length(st: &EnclState, offset: u64, length: u64) -> KResult<()> {
    if !offset.is_multiple_of(PAGE) || length == 0 || !length.is_multiple_of(PAGE) {
        return Err(Errno::EINVAL);
    }
    let end = offset.checked_add(length).ok_or(Errno::EINVAL)?;
    if end - PAGE >= st.size {
        return Err(Errno::EINVAL);
    }
    Ok(())
}

/// The size of an enclave's backing file (`(size + 4096) * 33 / 32`: the pages, the SECS
/// and 1/32 for PCMDs), or `None` where shmem refuses it: above MAX_LFS_FILESIZE
/// (`i64::MAX`), e.g. for a SECS.SIZE of 2^63, `shmem_file_setup` fails with EINVAL.
fn backing_size(size: u64) -> Option<u64> {
    let encl_size = size.checked_add(PAGE)?;
    let total = encl_size.checked_add(encl_size >> 5)?;
    (total <= i64::MAX as u64).then_some(total)
}

/// The ADD_PAGES SECINFO rules (driver spec §3.2 step 6).
fn validate_secinfo(secinfo: &Secinfo) -> KResult<()> {
    let flags = secinfo.flags;
    let perms = flags & SGX_SECINFO_PERMISSION_MASK;
    let page_type = (flags >> 8) & 0xFF;
    let bad_type = page_type != SGX_PAGE_TYPE_TCS && page_type != PageType::Reg as u64;
    let w_without_r = perms & SGX_SECINFO_W != 0 && perms & SGX_SECINFO_R == 0;
    let tcs_with_perms = page_type == SGX_PAGE_TYPE_TCS && perms != 0;
    let reserved = flags & SGX_SECINFO_RESERVED_MASK != 0 || secinfo.reserved.iter().any(|&b| b != 0);
    if bad_type || w_without_r || tcs_with_perms || reserved { Err(Errno::EINVAL) } else { Ok(()) }
}

/// What ADD_PAGES does while a measured page is hashed: it brings in the next page's
/// source and the EPC page that will most likely receive it (the free list's top), one
/// chunk's share before each chunk, so that their copies (copy_from_user, EADD) find them
/// in the cache instead of waiting on memory for every line.
fn next_page_fetcher<'a>(sgx: &'a Sgx, task: &'a dyn Task, next_src: Option<u64>) -> impl FnMut(usize) + 'a {
    let next_epc = next_src.and(sgx.pool.peek_free());
    let epc = sgx.processor.epc_memory();
    move |chunk| {
        let offset = chunk * EEXTEND_CHUNK_SIZE;
        if let Some(src) = next_src {
            task.prefetch_user(src + offset as u64, EEXTEND_CHUNK_SIZE);
        }
        if let Some(page) = next_epc {
            epc.prefetch(page, offset, EEXTEND_CHUNK_SIZE);
        }
    }
}

impl Encl {
    /// ioctl(2) on this enclave's file: one ioctl at a time (EBUSY otherwise), unknown
    /// commands ENOTTY. `arg` is the user address of the command's struct.
    pub fn ioctl(&self, cpu: &mut Cpu, task: &dyn Task, cmd: u32, arg: u64) -> KResult<()> {
        if !self.try_begin_ioctl() {
            return Err(Errno::EBUSY);
        }
        // The file's release runs at its last reference, and a call in flight holds one: a
        // released enclave seen here means the platform released it too early.
        if self.lock().flags.released {
            self.end_ioctl();
            return Err(self.sgx.bug("ioctl on a released enclave"));
        }
        let result = match cmd {
            sgxemu_uapi::SGX_IOC_ENCLAVE_CREATE => self.ioc_create(cpu, task, arg),
            sgxemu_uapi::SGX_IOC_ENCLAVE_ADD_PAGES => self.ioc_add_pages(cpu, task, arg),
            sgxemu_uapi::SGX_IOC_ENCLAVE_INIT => self.ioc_init(cpu, task, arg),
            sgxemu_uapi::SGX_IOC_ENCLAVE_PROVISION => self.ioc_provision(task, arg),
            sgxemu_uapi::SGX_IOC_ENCLAVE_RESTRICT_PERMISSIONS => self.ioc_restrict_permissions(cpu, task, arg),
            sgxemu_uapi::SGX_IOC_ENCLAVE_MODIFY_TYPES => self.ioc_modify_types(cpu, task, arg),
            sgxemu_uapi::SGX_IOC_ENCLAVE_REMOVE_PAGES => self.ioc_remove_pages(cpu, task, arg),
            _ => Err(Errno::ENOTTY),
        };
        self.end_ioctl();
        result
    }

    /// SGX_IOC_ENCLAVE_CREATE (driver spec §3.1).
    fn ioc_create(&self, cpu: &mut Cpu, task: &dyn Task, arg: u64) -> KResult<()> {
        if self.lock().flags.created {
            return Err(Errno::EINVAL);
        }
        let create: SgxEnclaveCreate = copy_in(task, arg)?;
        let secs: Secs = copy_in(task, create.src)?;
        if !secs.size.is_power_of_two() {
            return Err(Errno::EINVAL);
        }
        let sgx = self.sgx.clone();
        let va = self.alloc_va_page(cpu, true, Some(task))?;
        // 7. The backing file, after the VA page (which is given back if it fails).
        if backing_size(secs.size).is_none() {
            sgx.free_epc(cpu, va);
            return Err(Errno::EINVAL);
        }
        let backing = sgx.platform.new_backing(secs.size);
        let secs_epc = match sgx.alloc_epc(cpu, true, Some(task)) {
            Ok(page) => page,
            Err(e) => {
                sgx.free_epc(cpu, va);
                return Err(e);
            }
        };
        if cpu.ecreate(&sgx.processor, &secs, sgx.epc_addr(secs_epc)).is_err() {
            sgx.free_epc(cpu, secs_epc);
            sgx.free_epc(cpu, va);
            return Err(Errno::EIO);
        }
        let mut st = self.lock();
        st.page_cnt = 1;
        Encl::link_va(&mut st, va);
        st.backing = Some(backing);
        st.secs.epc = Some(secs_epc);
        st.flags.debug = secs.attributes.flags & sgxemu_arch::AttributesFlags::DEBUG.bits() != 0;
        st.base = secs.baseaddr;
        st.size = secs.size;
        st.attributes = secs.attributes.flags;
        st.attributes_mask = UNPRIV_ATTRIBUTES;
        st.flags.created = true;
        Ok(())
    }

    /// SGX_IOC_ENCLAVE_ADD_PAGES (driver spec §3.2).
    fn ioc_add_pages(&self, cpu: &mut Cpu, task: &dyn Task, arg: u64) -> KResult<()> {
        {
            let st = self.lock();
            if !st.flags.created || st.flags.initialized {
                return Err(Errno::EINVAL);
            }
        }
        let mut add: SgxEnclaveAddPages = copy_in(task, arg)?;
        if !add.src.is_multiple_of(PAGE) {
            return Err(Errno::EINVAL);
        }
        validate_offset_length(&self.lock(), add.offset, add.length)?;
        let secinfo: Secinfo = copy_in(task, add.secinfo)?;
        validate_secinfo(&secinfo)?;
        let mut result = Ok(());
        let mut done = 0;
        while done < add.length {
            if task.signal_pending() {
                if done == 0 {
                    result = Err(Errno::ERESTARTSYS);
                }
                break;
            }
            let measure = add.flags & SGX_PAGE_MEASURE != 0;
            let src = add.src + done;
            let next_src = (done + PAGE < add.length).then_some(src + PAGE);
            if let Err(e) = self.add_page(cpu, task, (src, next_src), add.offset + done, &secinfo, measure) {
                result = Err(e);
                break;
            }
            done += PAGE;
        }
        add.count = done;
        copy_out(task, arg, &add)?;
        result
    }

    /// `sgx_encl_add_page`: one page of ADD_PAGES, from the user address `src`; `next_src`
    /// is where the page the call adds next comes from, if any.
    fn add_page(
        &self,
        cpu: &mut Cpu,
        task: &dyn Task,
        (src, next_src): (u64, Option<u64>),
        offset: u64,
        secinfo: &Secinfo,
        measure: bool,
    ) -> KResult<()> {
        let sgx = self.sgx.clone();
        let perms = secinfo.flags & SGX_SECINFO_PERMISSION_MASK;
        let page_type = if (secinfo.flags >> 8) & 0xFF == SGX_PAGE_TYPE_TCS { PageType::Tcs } else { PageType::Reg };
        let max_prot =
            if page_type == PageType::Tcs { Prot::READ | Prot::WRITE } else { Prot::from_secinfo_perms(perms) };
        // 2. and 3.: EPC and VA pages, reclaiming if needed, before the enclave lock.
        let epc = sgx.alloc_epc(cpu, true, Some(task))?;
        let va = if Encl::needs_va_page(&self.lock()) {
            match self.alloc_va_page(cpu, true, Some(task)) {
                Ok(va) => Some(va),
                Err(e) => {
                    sgx.free_epc(cpu, epc);
                    return Err(e);
                }
            }
        } else {
            None
        };
        // 4.
        let mut st = self.lock();
        st.page_cnt += 1;
        if let Some(va) = va {
            Encl::link_va(&mut st, va);
        }
        let addr = st.base + offset;
        let unwind = |this: &Encl, cpu: &mut Cpu, st: &mut EnclState, remove: bool, e: Errno| {
            if remove {
                st.pages.remove(addr);
            }
            this.shrink(cpu, st, va);
            sgx.free_epc(cpu, epc);
            Err(e)
        };
        // 5.
        if st.pages.contains(addr) {
            return unwind(self, cpu, &mut st, false, Errno::EBUSY);
        }
        st.pages.insert(addr, EnclPage::new(max_prot, page_type));
        // 6.
        let source = match task.source_vma(src) {
            None => Err(Errno::EFAULT),
            Some(vma) if !vma.may_exec => Err(Errno::EACCES),
            Some(_) => task.copy_from_user(src, cpu.eadd_source()),
        };
        if let Err(e) = source {
            return unwind(self, cpu, &mut st, true, e);
        }
        // 7.
        let Some(secs) = st.secs.epc else {
            let e = sgx.bug("ADD_PAGES on a created enclave without its SECS");
            return unwind(self, cpu, &mut st, true, e);
        };
        let secs = sgx.epc_addr(secs);
        let epc_addr = sgx.epc_addr(epc);
        if cpu.eadd(&sgx.processor, secs, addr, secinfo, epc_addr).is_err() {
            return unwind(self, cpu, &mut st, true, Errno::EIO);
        }
        // 8.
        if let Some(record) = st.pages.get_mut(addr) {
            record.epc = Some(epc);
        }
        st.secs_child_cnt += 1;
        // 9. (Mainline leaves secs_child_cnt raised on this path and warns at teardown; we
        // undo it, so a failed EEXTEND leaves exact bookkeeping — see the README.)
        if measure
            && let Err(e) =
                cpu.eextend_page(&sgx.processor, secs, epc_addr, &mut next_page_fetcher(&sgx, task, next_src))
        {
            if e != EnclsError::Fault(Vector::Pf) {
                sgx.warn(format!("EEXTEND failed: {e:?}"));
            }
            st.secs_child_cnt -= 1;
            return unwind(self, cpu, &mut st, true, Errno::EIO);
        }
        // 10.
        sgx.pool.mark_reclaimable(epc, self.owner(Some(addr)));
        Ok(())
    }

    /// SGX_IOC_ENCLAVE_INIT (driver spec §3.3).
    fn ioc_init(&self, cpu: &mut Cpu, task: &dyn Task, arg: u64) -> KResult<()> {
        let (attributes, attributes_mask) = {
            let st = self.lock();
            if !st.flags.created || st.flags.initialized {
                return Err(Errno::EINVAL);
            }
            (st.attributes, st.attributes_mask)
        };
        let init: SgxEnclaveInit = copy_in(task, arg)?;
        let sig: Sigstruct = copy_in(task, init.sigstruct)?;
        if sig.vendor != 0 && sig.vendor != sgxemu_arch::VENDOR_INTEL {
            return Err(Errno::EINVAL);
        }
        if attributes & !attributes_mask != 0 {
            return Err(Errno::EACCES);
        }
        let sgx = self.sgx.clone();
        let reserved = sig.attributes.flags & sig.attributemask.flags & sgx.attributes_reserved != 0
            || u64::from(sig.miscselect & sig.miscmask) & sgx.misc_reserved != 0
            || sig.attributes.xfrm & sig.attributemask.xfrm & sgx.xfrm_reserved != 0;
        if reserved {
            return Err(Errno::EINVAL);
        }
        let mrsigner = sgxemu_crypto::mrsigner(&sig.modulus);
        let mut st = self.lock();
        let secs = sgx.epc_addr(st.secs.epc.ok_or(Errno::EINVAL)?);
        let mut outcome = Err(EnclsError::Code(ErrorCode::UnmaskedEvent));
        'rounds: for _ in 0..EINIT_SLEEP_COUNT {
            for _ in 0..EINIT_SPIN_COUNT {
                outcome = cpu
                    .update_lepubkeyhash(&sgx.processor, &mrsigner)
                    .and_then(|()| cpu.einit(&sgx.processor, &sig, secs));
                if outcome != Err(EnclsError::Code(ErrorCode::UnmaskedEvent)) {
                    break 'rounds;
                }
            }
            // The kernel sleeps 20 ms here; with no real interrupts there is nothing to
            // wait for, but a pending signal still ends the wait.
            if task.signal_pending() {
                return Err(Errno::ERESTARTSYS);
            }
        }
        match outcome {
            Ok(()) => {
                st.flags.initialized = true;
                Ok(())
            }
            Err(EnclsError::Fault(vector)) => {
                if vector != Vector::Pf {
                    sgx.warn(format!("EINIT faulted with {vector:?}"));
                }
                Err(Errno::EIO)
            }
            Err(EnclsError::Code(_)) => Err(Errno::EPERM),
        }
    }

    /// SGX_IOC_ENCLAVE_PROVISION (driver spec §3.4).
    fn ioc_provision(&self, task: &dyn Task, arg: u64) -> KResult<()> {
        let provision: SgxEnclaveProvision = copy_in(task, arg)?;
        match task.is_provision_fd(provision.fd as i32) {
            Some(true) => {
                self.lock().attributes_mask |= SGX_ATTR_PROVISIONKEY;
                Ok(())
            }
            _ => Err(Errno::EINVAL),
        }
    }

    /// `sgx_ioc_sgx2_ready`: ENODEV without SGX2, EINVAL before INIT.
    fn sgx2_ready(&self) -> KResult<()> {
        if !self.sgx.sgx2() {
            return Err(Errno::ENODEV);
        }
        if !self.lock().flags.initialized {
            return Err(Errno::EINVAL);
        }
        Ok(())
    }

    /// `sgx_enclave_etrack`: ETRACK, IPIs and one retry, then IPIs so every logical
    /// processor inside leaves and re-enters with the new epoch (driver spec §3.5).
    pub(crate) fn etrack(&self, st: &EnclState, cpu: &mut Cpu) -> KResult<()> {
        let sgx = &self.sgx;
        let secs = sgx.epc_addr(st.secs.epc.ok_or(Errno::EFAULT)?);
        if cpu.etrack(&sgx.processor, secs).is_err() {
            sgx.platform.flush_translations(secs, &sgx.processor.lps_inside(secs));
            if cpu.etrack(&sgx.processor, secs).is_err() {
                return Err(Errno::EFAULT);
            }
        }
        sgx.platform.flush_translations(secs, &sgx.processor.lps_inside(secs));
        Ok(())
    }

    /// SGX_IOC_ENCLAVE_RESTRICT_PERMISSIONS (driver spec §3.6).
    fn ioc_restrict_permissions(&self, cpu: &mut Cpu, task: &dyn Task, arg: u64) -> KResult<()> {
        self.sgx2_ready()?;
        let mut params: SgxEnclaveRestrictPermissions = copy_in(task, arg)?;
        validate_offset_length(&self.lock(), params.offset, params.length)?;
        if params.permissions & !SGX_SECINFO_PERMISSION_MASK != 0 {
            return Err(Errno::EINVAL);
        }
        if params.permissions & SGX_SECINFO_W != 0 && params.permissions & SGX_SECINFO_R == 0 {
            return Err(Errno::EINVAL);
        }
        if params.result != 0 || params.count != 0 {
            return Err(Errno::EINVAL);
        }
        let patience = self.sgx.platform.sgx2_ioctl_patience();
        let mut result = Ok(());
        let mut done = 0;
        while done < params.length {
            self.sgx.reclaim_direct(cpu);
            let addr = self.lock().base + params.offset + done;
            let step = Self::patiently(patience, || {
                let mut st = self.lock();
                self.restrict_page(&mut st, cpu, addr, params.permissions)
            });
            match step {
                Ok(()) => done += PAGE,
                Err((e, code)) => {
                    if let Some(code) = code {
                        params.result = code as u64;
                    }
                    result = Err(e);
                    break;
                }
            }
        }
        params.count = done;
        copy_out(task, arg, &params)?;
        result
    }

    fn restrict_page(
        &self,
        st: &mut EnclState,
        cpu: &mut Cpu,
        addr: u64,
        perms: u64,
    ) -> Result<(), (Errno, Option<ErrorCode>)> {
        let epc = self.load_page(st, cpu, addr, None).map_err(|e| (Encl::ioctl_load_errno(e), None))?;
        if st.pages.get(addr).map(|p| p.page_type) != Some(PageType::Reg) {
            return Err((Errno::EINVAL, None));
        }
        match cpu.emodpr(&self.sgx.processor, perms, self.sgx.epc_addr(epc)) {
            Ok(()) => {}
            Err(EnclsError::Code(code)) => return Err((Errno::EFAULT, Some(code))),
            Err(EnclsError::Fault(_)) => return Err((Errno::EFAULT, None)),
        }
        self.etrack(st, cpu).map_err(|e| (e, None))
    }

    /// SGX_IOC_ENCLAVE_MODIFY_TYPES (driver spec §3.7).
    fn ioc_modify_types(&self, cpu: &mut Cpu, task: &dyn Task, arg: u64) -> KResult<()> {
        self.sgx2_ready()?;
        let mut params: SgxEnclaveModifyTypes = copy_in(task, arg)?;
        validate_offset_length(&self.lock(), params.offset, params.length)?;
        if params.page_type & !SGX_PAGE_TYPE_MASK != 0 {
            return Err(Errno::EINVAL);
        }
        if params.result != 0 || params.count != 0 {
            return Err(Errno::EINVAL);
        }
        let mut result = Ok(());
        let mut done = 0;
        if params.page_type != SGX_PAGE_TYPE_TCS && params.page_type != SGX_PAGE_TYPE_TRIM {
            result = Err(Errno::EINVAL);
        } else {
            let start = self.lock().base + params.offset;
            let patience = self.sgx.platform.sgx2_ioctl_patience();
            while done < params.length {
                self.sgx.reclaim_direct(cpu);
                let addr = start + done;
                match Self::patiently(patience, || self.modify_page(cpu, addr, params.page_type)) {
                    Ok(()) => done += PAGE,
                    Err((e, code)) => {
                        if let Some(code) = code {
                            params.result = code as u64;
                        }
                        result = Err(e);
                        break;
                    }
                }
            }
        }
        params.count = done;
        copy_out(task, arg, &params)?;
        result
    }

    fn modify_page(&self, cpu: &mut Cpu, addr: u64, new_type: u64) -> Result<(), (Errno, Option<ErrorCode>)> {
        let sgx = &self.sgx;
        let mut st = self.lock();
        let mut epc = self.load_page(&mut st, cpu, addr, None).map_err(|e| (Encl::ioctl_load_errno(e), None))?;
        let Some(record) = st.pages.get(addr) else {
            return Err((sgx.bug("MODIFY_TYPES lost a page it loaded"), None));
        };
        let (old_type, old_prot) = (record.page_type, record.max_prot);
        let to_tcs = new_type == SGX_PAGE_TYPE_TCS;
        let allowed = matches!((old_type, to_tcs), (PageType::Reg, _) | (PageType::Tcs, false));
        if !allowed {
            return Err((Errno::EINVAL, None));
        }
        if old_type == PageType::Reg && to_tcs {
            if !old_prot.contains(Prot::READ | Prot::WRITE) {
                return Err((Errno::EPERM, None));
            }
            let set_max_prot = |st: &mut EnclState, prot| {
                if let Some(p) = st.pages.get_mut(addr) {
                    p.max_prot = prot;
                }
            };
            set_max_prot(&mut st, Prot::READ | Prot::WRITE);
            if sgx.pool.unmark_reclaimable(epc).is_err() {
                set_max_prot(&mut st, old_prot);
                return Err((Errno::EAGAIN, None));
            }
            // Zap without the lock (mm locks come first), the page pinned against reclaim.
            drop(st);
            self.zap(addr);
            st = self.lock();
            sgx.pool.mark_reclaimable(epc, self.owner(Some(addr)));
            epc = st.pages.get(addr).and_then(|p| p.epc).unwrap_or(epc);
        }
        let restore = |st: &mut EnclState| {
            if let Some(p) = st.pages.get_mut(addr) {
                p.max_prot = old_prot;
            }
        };
        match cpu.emodt(&sgx.processor, new_type, sgx.epc_addr(epc)) {
            Ok(()) => {}
            Err(EnclsError::Code(code)) => {
                restore(&mut st);
                return Err((Errno::EFAULT, Some(code)));
            }
            Err(EnclsError::Fault(_)) => {
                restore(&mut st);
                return Err((Errno::EFAULT, None));
            }
        }
        self.etrack(&st, cpu).map_err(|e| (e, None))?;
        let Some(record) = st.pages.get_mut(addr) else {
            return Err((sgx.bug("MODIFY_TYPES lost a page it changed"), None));
        };
        record.page_type = if to_tcs { PageType::Tcs } else { PageType::Trim };
        Ok(())
    }

    /// Runs one page's step of an SGX2 ioctl, retrying an EAGAIN (a page the reclaimer
    /// holds, no EPC page free to reload into) for as long as `patience` (the platform's,
    /// read once per ioctl) allows — zero on the kernel's terms.
    fn patiently<T>(
        patience: Duration,
        mut step: impl FnMut() -> Result<T, (Errno, Option<ErrorCode>)>,
    ) -> Result<T, (Errno, Option<ErrorCode>)> {
        // The clock is read only once a retry is wanted: most pages never need one.
        let mut start = None;
        loop {
            match step() {
                Err((e, None))
                    if (e == Errno::EAGAIN || e == Errno::EBUSY)
                        && !patience.is_zero()
                        && start.get_or_insert_with(std::time::Instant::now).elapsed() < patience =>
                {
                    std::thread::yield_now()
                }
                other => return other,
            }
        }
    }

    /// SGX_IOC_ENCLAVE_REMOVE_PAGES (driver spec §3.8).
    fn ioc_remove_pages(&self, cpu: &mut Cpu, task: &dyn Task, arg: u64) -> KResult<()> {
        self.sgx2_ready()?;
        let mut params: SgxEnclaveRemovePages = copy_in(task, arg)?;
        validate_offset_length(&self.lock(), params.offset, params.length)?;
        if params.count != 0 {
            return Err(Errno::EINVAL);
        }
        let mut result = Ok(());
        let mut done = 0;
        let start = self.lock().base + params.offset;
        let patience = self.sgx.platform.sgx2_ioctl_patience();
        while done < params.length {
            self.sgx.reclaim_direct(cpu);
            let addr = start + done;
            if let Err((e, _)) = Self::patiently(patience, || self.remove_page(cpu, addr).map_err(|e| (e, None))) {
                result = Err(e);
                break;
            }
            done += PAGE;
        }
        params.count = done;
        copy_out(task, arg, &params)?;
        result
    }

    fn remove_page(&self, cpu: &mut Cpu, addr: u64) -> KResult<()> {
        let sgx = &self.sgx;
        let mut st = self.lock();
        let epc = self.load_page(&mut st, cpu, addr, None).map_err(Encl::ioctl_load_errno)?;
        let Some(record) = st.pages.get_mut(addr) else { return Err(sgx.bug("REMOVE_PAGES lost a page it loaded")) };
        if record.page_type != PageType::Trim {
            return Err(Errno::EPERM);
        }
        // EMODPR(RWX) proves acceptance: only an accepted TRIM page makes it #PF.
        let probe = cpu.emodpr(&sgx.processor, SGX_SECINFO_PERMISSION_MASK, sgx.epc_addr(epc));
        if probe != Err(EnclsError::Fault(Vector::Pf)) {
            return Err(Errno::EPERM);
        }
        if sgx.pool.unmark_reclaimable(epc).is_err() {
            return Err(Errno::EBUSY);
        }
        // The zap runs without the lock (address-space locks come first); meanwhile a fault
        // must not map the page again, or the mapping would outlive the EPC page. It finds
        // the page busy and retries (and, once the record is gone, EAUGs a new one).
        record.being_reclaimed = true;
        drop(st);
        self.zap(addr);
        st = self.lock();
        sgx.free_epc(cpu, epc);
        st.secs_child_cnt -= 1;
        st.pages.remove(addr);
        st.page_cnt -= 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secinfo_validation_follows_the_driver() {
        let ok = |flags: u64| validate_secinfo(&Secinfo::new(sgxemu_arch::SecinfoFlags::from_bits_retain(flags)));
        assert_eq!(ok(0x201), Ok(()));
        assert_eq!(ok(0x207), Ok(()));
        assert_eq!(ok(0x100), Ok(()), "TCS without permissions");
        assert_eq!(ok(0x101), Err(Errno::EINVAL), "TCS with permissions");
        assert_eq!(ok(0x202), Err(Errno::EINVAL), "W without R");
        assert_eq!(ok(0x300), Err(Errno::EINVAL), "VA type");
        assert_eq!(ok(0x20B), Err(Errno::EINVAL), "PENDING bit");
        let mut reserved = Secinfo::new(sgxemu_arch::SecinfoFlags::from_bits_retain(0x201));
        reserved.reserved[55] = 1;
        assert_eq!(validate_secinfo(&reserved), Err(Errno::EINVAL));
    }
}
