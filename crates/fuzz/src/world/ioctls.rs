//! The seven SGX ioctls and the near-miss numbers.

use super::*;

impl World {
    pub(super) fn create(
        &mut self,
        slot: u8,
        arg: ArgPtr,
        secs: SecsVariant,
        secs_ptr: ObjPtr,
        size_log2: u8,
        attrs: AttrVariant,
    ) -> Result<Step, Mismatch> {
        let Some(fd) = self.fd(slot) else { return Ok(Step::Skipped) };
        let base = self.bases[usize::from(slot)];
        let mut image = Secs::new_zeroed();
        image.size = 1 << size_log2;
        image.baseaddr = base;
        image.ssaframesize = 1;
        image.attributes =
            sgxemu_arch::Attributes { flags: oracle::secs_attributes(attrs), xfrm: enclave_program::XFRM };
        match secs {
            SecsVariant::Valid => {}
            SecsVariant::SizeNotPow2 => image.size = 3 * PAGE,
            SecsVariant::SizeZero => image.size = 0,
            SecsVariant::Size2p63 => image.size = 1 << 63,
            SecsVariant::SizeOnePage => image.size = PAGE,
            SecsVariant::SizeHuge => image.size = 1 << 60,
            SecsVariant::BaseMisaligned => image.baseaddr = base + PAGE,
            SecsVariant::SsaZero => image.ssaframesize = 0,
            SecsVariant::XfrmZero => image.attributes.xfrm = 0,
            SecsVariant::AttrInit => image.attributes.flags |= 1,
            SecsVariant::AttrReserved => image.attributes.flags |= 1 << 3,
            SecsVariant::NoMode64 => image.attributes.flags &= !0x4,
            SecsVariant::ReservedField => image.reserved1[0] = 1,
        }
        let src = self.scratch.place_obj(secs_ptr, image.as_bytes());
        let argp = self.scratch.place_arg(arg, SgxEnclaveCreate { src }.as_bytes());
        let encl = self.slots[usize::from(slot)].encl.as_mut().expect("an open slot has an enclave");
        let encl_was_created = encl.created;
        let expected = oracle::create(encl, arg, secs, secs_ptr, size_log2, attrs);
        let ret = sys::ioctl(fd, SGX_IOC_ENCLAVE_CREATE, argp);
        // Known only where the size check decides (an enclave already created answers EINVAL
        // before it looks at the SECS).
        let decisive = secs == SecsVariant::Size2p63 && {
            let mut probe = Encl { created: encl_was_created, ..Encl::default() };
            oracle::create(&mut probe, arg, SecsVariant::SizeHuge, secs_ptr, size_log2, attrs) != expected
        };
        let known = decisive.then_some(Known::CreateSize2p63);
        let outcome = compare("CREATE", &expected, ret, None, None);
        if outcome.is_err() && known.is_some() && ret.is_ok() {
            // The emulator created what the kernel refuses: follow the emulator's state so
            // that later operations stay comparable.
            let encl = self.slots[usize::from(slot)].encl.as_mut().expect("open slot");
            *encl =
                Encl { created: true, size: 1 << 63, attributes: oracle::secs_attributes(attrs), ..Encl::default() };
        }
        self.judge(known, outcome)
    }

    pub(super) fn add_pages(&mut self, slot: u8, req: &AddRequest) -> Result<Step, Mismatch> {
        let Some(fd) = self.fd(slot) else { return Ok(Step::Skipped) };
        if is_open(Known::AddExecOnlySource) && req.src == SrcVariant::ExecOnly && req.arg != ArgPtr::Valid {
            // While that difference is open, only a readable count says what the driver did.
            return Ok(Step::Skipped);
        }
        let (offset, length) = oracle::range(req.shape, req.page, req.npages);
        let src = self.source(req, offset);
        let flags = oracle::secinfo_flags(req.secinfo);
        let mut secinfo = [0u8; 64];
        secinfo[..8].copy_from_slice(&flags.to_le_bytes());
        if req.secinfo == SecinfoVariant::ReservedByte {
            secinfo[9] = 1;
        }
        let secinfo_ptr = if let SecinfoVariant::Ptr(p) = req.secinfo { p } else { ObjPtr::Valid };
        let secinfo_addr = self.scratch.place_obj(secinfo_ptr, &secinfo);
        const SENTINEL: u64 = 0xC0FF_EE00;
        let arg = SgxEnclaveAddPages { src, offset, length, secinfo: secinfo_addr, flags: req.flags, count: SENTINEL };
        let argp = self.scratch.place_arg(req.arg, arg.as_bytes());
        let encl = self.slots[usize::from(slot)].encl.as_mut().expect("open slot");
        let before = encl.clone();
        let expected = oracle::add_pages(encl, req);
        let ret = sys::ioctl(fd, SGX_IOC_ENCLAVE_ADD_PAGES, argp);
        let count = (req.arg == ArgPtr::Valid).then(|| self.scratch.read_arg::<SgxEnclaveAddPages>().count);
        // Known only where the source's readability decides.
        let decisive = req.src == SrcVariant::ExecOnly && {
            let mut probe = before.clone();
            oracle::add_pages(&mut probe, &AddRequest { src: SrcVariant::Pattern(0x11), ..*req }) != expected
        };
        let known = decisive.then_some(Known::AddExecOnlySource);
        let mut outcome = compare("ADD_PAGES", &expected, ret, count, None);
        if outcome.is_ok() && expected.count.is_none() && count.is_some_and(|c| c != SENTINEL) {
            outcome = Err(Mismatch(format!(
                "ADD_PAGES: the kernel leaves count alone on {:?}; got count {count:?}",
                expected.ret
            )));
        }
        if outcome.is_err() && known.is_some() {
            // Follow the emulator (it added the pages the kernel would refuse).
            let encl = self.slots[usize::from(slot)].encl.as_mut().expect("open slot");
            *encl = before;
            let added = count.map_or(0, |c| c / PAGE) as u8;
            if added > 0 {
                let as_readable = AddRequest { src: SrcVariant::ExecOnlyContents, npages: added, ..*req };
                oracle::add_pages(encl, &as_readable);
            }
        }
        self.judge(known, outcome)
    }

    /// Writes the source pages of `req` and returns the `src` address.
    pub(super) fn source(&mut self, req: &AddRequest, offset: u64) -> u64 {
        let rw = self.scratch.addr(scratch::SRC_RW);
        let write_pages = |scratch: &mut Scratch, at: u64, pages: u8| {
            for i in 0..pages {
                if let Some(bytes) = oracle::source_page(req.src, i, offset / PAGE + u64::from(i)) {
                    scratch.write(at + u64::from(i) * PAGE, &bytes);
                }
            }
        };
        match req.src {
            SrcVariant::Code | SrcVariant::Tcs | SrcVariant::Zero | SrcVariant::Pattern(_) => {
                write_pages(&mut self.scratch, rw, req.npages.min(16));
                rw
            }
            SrcVariant::ReadOnly => self.scratch.addr(scratch::RO_SRC),
            SrcVariant::Unaligned => rw + 8,
            SrcVariant::ProtNoneAt(k) => {
                let at = self.scratch.addr(scratch::GUARD) - u64::from(k) * PAGE;
                write_pages(&mut self.scratch, at, k);
                at
            }
            SrcVariant::ExecOnly | SrcVariant::ExecOnlyContents => self.scratch.addr(scratch::EXEC),
            SrcVariant::Kernel => KERNEL_ADDRESS,
        }
    }

    pub(super) fn init(&mut self, slot: u8, arg: ArgPtr, sig: SigVariant) -> Result<Step, Mismatch> {
        let Some(fd) = self.fd(slot) else { return Ok(Step::Skipped) };
        let encl = self.slots[usize::from(slot)].encl.as_mut().expect("open slot");
        let mut predicted = encl.clone();
        let expected = oracle::init(&mut predicted, arg, sig);
        // Sign only when EINIT is reached with the good SIGSTRUCT; every other path fails
        // before EINIT or must fail in it.
        let mut sigstruct =
            if expected.ret.is_ok() { enclave_program::sigstruct(encl, &self.key) } else { Sigstruct::new_unsigned() };
        sigstruct.attributes.flags = encl.attributes;
        sigstruct.attributes.xfrm = enclave_program::XFRM;
        match sig {
            SigVariant::BadVendor => sigstruct.vendor = 0x1234,
            SigVariant::ReservedAttribute => {
                sigstruct.attributes.flags |= 1;
                sigstruct.attributemask.flags |= 1;
            }
            SigVariant::ReservedMisc => {
                sigstruct.miscselect = 2;
                sigstruct.miscmask = 2;
            }
            SigVariant::ReservedXfrm => {
                sigstruct.attributes.xfrm |= 1 << 62;
                sigstruct.attributemask.xfrm |= 1 << 62;
            }
            _ => {}
        }
        let sig_ptr = if let SigVariant::Ptr(p) = sig { p } else { ObjPtr::Valid };
        let sig_addr = self.scratch.place_obj(sig_ptr, sigstruct.as_bytes());
        let argp = self.scratch.place_arg(arg, SgxEnclaveInit { sigstruct: sig_addr }.as_bytes());
        let ret = sys::ioctl(fd, SGX_IOC_ENCLAVE_INIT, argp);
        *self.slots[usize::from(slot)].encl.as_mut().expect("open slot") = predicted;
        self.stats.event("init", u64::from(ret.is_ok()));
        self.judge(None, compare("INIT", &expected, ret, None, None))
    }

    pub(super) fn provision(&mut self, slot: u8, arg: ArgPtr, which: ProvFd) -> Result<Step, Mismatch> {
        let Some(fd) = self.fd(slot) else { return Ok(Step::Skipped) };
        let pfd = self.shared.provision_fd as u64;
        let value = match which {
            ProvFd::Provision => pfd,
            ProvFd::ProvisionHighBits => pfd | (0xDEAD << 32),
            ProvFd::Minus1 => u64::MAX,
            ProvFd::Closed => 999_999,
            ProvFd::DevNull => self.devnull_fd as u64,
            ProvFd::Enclave => fd as u64,
        };
        let argp = self.scratch.place_arg(arg, SgxEnclaveProvision { fd: value }.as_bytes());
        let encl = self.slots[usize::from(slot)].encl.as_mut().expect("open slot");
        let expected = oracle::provision(encl, arg, matches!(which, ProvFd::Provision | ProvFd::ProvisionHighBits));
        let ret = sys::ioctl(fd, SGX_IOC_ENCLAVE_PROVISION, argp);
        self.judge(None, compare("PROVISION", &expected, ret, None, None))
    }

    pub(super) fn sgx2_ioctl(&mut self, slot: u8, kind: Sgx2Kind, req: &Sgx2Request) -> Result<Step, Mismatch> {
        let Some(fd) = self.fd(slot) else { return Ok(Step::Skipped) };
        let (offset, length) = oracle::range(req.shape, req.page, req.npages);
        let result_in = u64::from(req.out == OutFields::Result);
        let count_in = if req.out == OutFields::Count { PAGE } else { 0 };
        let (cmd, bytes) = match kind {
            Sgx2Kind::Restrict(permissions) => (
                SGX_IOC_ENCLAVE_RESTRICT_PERMISSIONS,
                SgxEnclaveRestrictPermissions { offset, length, permissions, result: result_in, count: count_in }
                    .as_bytes()
                    .to_vec(),
            ),
            Sgx2Kind::Modify(page_type) => (
                SGX_IOC_ENCLAVE_MODIFY_TYPES,
                SgxEnclaveModifyTypes { offset, length, page_type, result: result_in, count: count_in }
                    .as_bytes()
                    .to_vec(),
            ),
            Sgx2Kind::Remove => (
                SGX_IOC_ENCLAVE_REMOVE_PAGES,
                SgxEnclaveRemovePages { offset, length, count: count_in }.as_bytes().to_vec(),
            ),
        };
        let argp = self.scratch.place_arg(req.arg, &bytes);
        let sgx2 = self.sgx2;
        let predict = |encl: &mut Encl, transient: Option<Transient>| match kind {
            Sgx2Kind::Restrict(perms) => oracle::restrict(encl, sgx2, req, perms, transient),
            Sgx2Kind::Modify(page_type) => oracle::modify(encl, sgx2, req, page_type, transient),
            Sgx2Kind::Remove => oracle::remove(encl, sgx2, req, transient),
        };
        let encl = self.slots[usize::from(slot)].encl.as_mut().expect("open slot");
        let before = encl.clone();
        let mut expected = predict(encl, None);
        let ret = sys::ioctl(fd, cmd, argp);
        let (count, result) = if req.arg == ArgPtr::Valid {
            match kind {
                Sgx2Kind::Restrict(_) => {
                    let a: SgxEnclaveRestrictPermissions = self.scratch.read_arg();
                    (Some(a.count), Some(a.result))
                }
                Sgx2Kind::Modify(_) => {
                    let a: SgxEnclaveModifyTypes = self.scratch.read_arg();
                    (Some(a.count), Some(a.result))
                }
                Sgx2Kind::Remove => (Some(self.scratch.read_arg::<SgxEnclaveRemovePages>().count), None),
            }
        } else {
            (None, None)
        };
        let transient_errno =
            matches!(ret, Err(EAGAIN)) || (matches!(kind, Sgx2Kind::Remove) && matches!(ret, Err(EBUSY)));
        if transient_errno
            && expected.ret != ret.map(|_| ())
            && let (Err(errno), Some(done)) = (ret, count)
        {
            // The reclaimer held a page: recompute with the loop stopped there.
            let encl = self.slots[usize::from(slot)].encl.as_mut().expect("open slot");
            *encl = before;
            expected = predict(encl, Some(Transient { at_page: done / PAGE, errno }));
            self.stats.transient += 1;
        }
        if let Some(done) = count {
            let what = match kind {
                Sgx2Kind::Restrict(_) => "pages restricted",
                Sgx2Kind::Modify(1) => "pages made TCS",
                Sgx2Kind::Modify(_) => "pages trimmed",
                Sgx2Kind::Remove => "pages removed",
            };
            self.stats.event(what, done / PAGE);
        }
        let name = match kind {
            Sgx2Kind::Restrict(_) => "RESTRICT_PERMISSIONS",
            Sgx2Kind::Modify(_) => "MODIFY_TYPES",
            Sgx2Kind::Remove => "REMOVE_PAGES",
        };
        let outcome = compare(name, &expected, ret, count, result);
        if outcome.is_ok() && expected.count.is_none() && req.arg == ArgPtr::Valid && count != Some(count_in) {
            return Err(Mismatch(format!(
                "{name}: the kernel leaves the argument alone on {:?}; got count {count:?}",
                expected.ret
            )));
        }
        self.judge(None, outcome)
    }

    pub(super) fn near_miss(&mut self, slot: u8, cmd: u32) -> Result<Step, Mismatch> {
        let Some(fd) = self.fd(slot) else { return Ok(Step::Skipped) };
        let argp = self.scratch.place_arg(ArgPtr::Valid, &[0u8; 64]);
        let vfs = [0x5451, 0x5450, 0x5421, 0x5452, 2].contains(&cmd);
        let expected = Expect { ret: if vfs { Ok(()) } else { Err(ENOTTY) }, count: None, result: None };
        let ret = sys::ioctl(fd, cmd, argp);
        self.judge(vfs.then_some(Known::VfsFileIoctl), compare(&format!("ioctl {cmd:#x}"), &expected, ret, None, None))
    }
}
