//! Entering enclaves through `__vdso_sgx_enter_enclave`, and the shared enclave's racing
//! operations.

use super::*;

impl World {
    /// Whether EENTER on TCS number `tcs` of slot `s` just works (every page it needs is
    /// present, unmodified and mapped).
    pub(super) fn enterable(&self, s: usize, tcs: u8) -> bool {
        let Some(encl) = self.slots[s].encl.as_ref() else { return false };
        if !encl.initialized {
            return false;
        }
        let tcs_page = u64::from(layout::tcs_page(u16::from(tcs)));
        let code = u64::from(layout::CODE_PAGE);
        let ok_tcs = encl.pages.get(&tcs_page).is_some_and(|p| {
            p.ty == PageType::Tcs && p.enterable && !p.modified && !p.pending && p.cssa < u32::from(layout::NSSA)
        });
        let ok_code = encl.pages.get(&code).is_some_and(|p| {
            p.ty == PageType::Reg && p.program && p.epcm_perms & (R | X) == R | X && !p.pending && !p.modified && !p.pr
        });
        let ok_ssa = (1..=u64::from(layout::NSSA)).all(|k| {
            encl.pages.get(&(tcs_page + k)).is_some_and(|p| {
                p.ty == PageType::Reg && p.epcm_perms & (R | W) == R | W && !p.pending && !p.modified && !p.pr
            }) && self.mapped_for(s, tcs_page + k, R | W)
        });
        // EENTER writes the TCS (its state and AEP): the mapping must be writable (a read-only
        // one faults with W|U as on hardware).
        ok_tcs && ok_code && ok_ssa && self.mapped_for(s, tcs_page, R | W) && self.mapped_for(s, code, R | X)
    }

    /// EENTER writes the untrusted RSP and RBP into the current SSA frame (GPRSGX.URSP,
    /// URBP): those pages are no longer zero.
    pub(super) fn mark_ssa_written(&mut self, s: usize, tcs: u8) {
        let tcs_page = u64::from(layout::tcs_page(u16::from(tcs)));
        if let Some(encl) = self.slots[s].encl.as_mut() {
            for k in 1..=u64::from(layout::NSSA) {
                if let Some(p) = encl.pages.get_mut(&(tcs_page + k)) {
                    p.zero = false;
                }
            }
        }
    }

    pub(super) fn fresh_run(tcs: u64) -> SgxEnclaveRun {
        SgxEnclaveRun {
            tcs,
            exception_vector: 0xAAAA,
            exception_error_code: 0xBBBB,
            exception_addr: 0xCCCC,
            user_data: 0x1234,
            ..SgxEnclaveRun::default()
        }
    }

    pub(super) fn check_exit(what: &str, ret: i32, run: &SgxEnclaveRun) -> Result<(), Mismatch> {
        let untouched =
            run.exception_vector == 0xAAAA && run.exception_error_code == 0xBBBB && run.exception_addr == 0xCCCC;
        if ret != 0 || run.function != EEXIT || !untouched {
            return Err(Mismatch(format!(
                "{what}: expected return 0 with function EEXIT and the exception fields untouched; got return {ret}, function {}, vector {}, error code {:#x}, address {:#x}",
                run.function, run.exception_vector, run.exception_error_code, run.exception_addr
            )));
        }
        Ok(())
    }

    pub(super) fn enter(&mut self, slot: u8, tcs: u8, action: EnterAction) -> Result<Step, Mismatch> {
        let s = usize::from(slot);
        let base = self.bases[s];
        let tcs_addr = base + u64::from(layout::tcs_page(u16::from(tcs))) * PAGE;
        match action {
            EnterAction::BadLeaf(function) => {
                let mut run = Self::fresh_run(tcs_addr);
                let ret = self.vdso.enter(0, 0, 0, function, &mut run);
                if ret != -EINVAL {
                    return Err(Mismatch(format!("vDSO with leaf {function:#x}: expected -EINVAL; got {ret}")));
                }
                Ok(Step::Done)
            }
            EnterAction::ReservedNonZero => {
                let mut run = Self::fresh_run(tcs_addr);
                run.reserved[26] = 1;
                let ret = self.vdso.enter(0, 0, 0, EENTER, &mut run);
                if ret != -EINVAL {
                    return Err(Mismatch(format!("vDSO with a non-zero reserved field: expected -EINVAL; got {ret}")));
                }
                Ok(Step::Done)
            }
            EnterAction::Exit => {
                if !self.enterable(s, tcs) {
                    return Ok(Step::Skipped);
                }
                let mut run = Self::fresh_run(tcs_addr);
                self.mark_ssa_written(s, tcs);
                let ret = self.vdso.enter(0, 0, 0, EENTER, &mut run);
                Self::check_exit("EENTER + EEXIT", ret, &run)?;
                self.stats.event("enter", 1);
                Ok(Step::Done)
            }
            EnterAction::Accept { secinfo, page } => {
                let page = u64::from(page);
                let tcs_page = u64::from(layout::tcs_page(u16::from(tcs)));
                if !self.sgx2 || !self.enterable(s, tcs) {
                    return Ok(Step::Skipped);
                }
                let encl = self.slots[s].encl.as_ref().expect("enterable");
                let hole = !encl.pages.contains_key(&page);
                let reserved_for_entry = page == u64::from(layout::CODE_PAGE)
                    || (tcs_page..=tcs_page + u64::from(layout::NSSA)).contains(&page);
                if page >= encl.size_pages()
                    || reserved_for_entry
                    || oracle::eaccept_may_fault(encl, page, secinfo)
                    || !self.mapped_for(s, page, if hole { R | W } else { R })
                {
                    return Ok(Step::Skipped);
                }
                let cell = self.scratch.addr(scratch::CELL);
                self.scratch.write(cell, &0xDEAD_BEEFu64.to_le_bytes());
                self.mark_ssa_written(s, tcs);
                let encl = self.slots[s].encl.as_mut().expect("enterable");
                let expected = oracle::eaccept(encl, page, secinfo);
                let mut run = Self::fresh_run(tcs_addr);
                let secinfo_addr = base + enclave_program::SECINFO_TABLE + 64 * u64::from(secinfo);
                let ret = self.vdso.enter(secinfo_addr, base + page * PAGE, cell, EENTER, &mut run);
                Self::check_exit("EENTER + EACCEPT + EEXIT", ret, &run)?;
                let got = self.scratch.read_cell();
                if got != expected {
                    return Err(Mismatch(format!(
                        "EACCEPT(secinfo {secinfo}, page {page}): expected {expected}; got {got:#x}"
                    )));
                }
                self.stats.event("EAUG", u64::from(hole));
                self.stats.event("EACCEPT ok", u64::from(got == 0));
                Ok(Step::Done)
            }
        }
    }

    pub(super) fn shared_op(&mut self, op: SharedOp) -> Result<Step, Mismatch> {
        let fd = self.shared.fd;
        let base = self.shared.base;
        let ioctl =
            |world: &mut World, cmd: u32, bytes: &[u8], expected: Result<(), Errno>| -> Result<Step, Mismatch> {
                let argp = world.scratch.place_arg(ArgPtr::Valid, bytes);
                let ret = sys::ioctl(fd, cmd, argp).map(|_| ());
                if ret == expected || ret == Err(EBUSY) {
                    Ok(Step::Done)
                } else {
                    Err(Mismatch(format!("shared enclave {op:?}: expected {expected:?} or EBUSY; got {ret:?}")))
                }
            };
        match op {
            SharedOp::Enter => {
                let mut run = Self::fresh_run(base + u64::from(layout::tcs_page(self.thread)) * PAGE);
                let ret = self.vdso.enter(0, 0, 0, EENTER, &mut run);
                Self::check_exit("shared enclave EENTER + EEXIT", ret, &run)?;
                Ok(Step::Done)
            }
            SharedOp::Create => {
                ioctl(self, SGX_IOC_ENCLAVE_CREATE, SgxEnclaveCreate { src: 0 }.as_bytes(), Err(EINVAL))
            }
            SharedOp::AddPages => {
                let arg = SgxEnclaveAddPages { src: 0, offset: 0, length: PAGE, secinfo: 0, flags: 0, count: 0 };
                ioctl(self, SGX_IOC_ENCLAVE_ADD_PAGES, arg.as_bytes(), Err(EINVAL))
            }
            SharedOp::Init => {
                ioctl(self, SGX_IOC_ENCLAVE_INIT, SgxEnclaveInit { sigstruct: 0 }.as_bytes(), Err(EINVAL))
            }
            SharedOp::Provision => {
                let arg = SgxEnclaveProvision { fd: self.shared.provision_fd as u64 };
                ioctl(self, SGX_IOC_ENCLAVE_PROVISION, arg.as_bytes(), Ok(()))
            }
            SharedOp::RestrictHole => {
                let arg = SgxEnclaveRestrictPermissions {
                    offset: self.shared.hole * PAGE,
                    length: PAGE,
                    permissions: 1,
                    result: 0,
                    count: 0,
                };
                let expected = if self.sgx2 { Err(libc::EFAULT) } else { Err(libc::ENODEV) };
                ioctl(self, SGX_IOC_ENCLAVE_RESTRICT_PERMISSIONS, arg.as_bytes(), expected)
            }
            SharedOp::Unknown => ioctl(self, (SGX_IOC_ENCLAVE_CREATE & !0xFF) | 0x42, &[0; 8], Err(ENOTTY)),
        }
    }
}
