//! One fuzzing thread's world: its enclave slots, their address reservations, its scratch
//! memory for arguments and sources, and the executor that carries an [`Op`] out against the
//! device and compares the answer with the oracle's.

use std::collections::BTreeMap;

use libc::{EAGAIN, EBUSY, EINVAL, ENOTTY};
use sgxemu_arch::{FromZeros, IntoBytes, PAGE_SIZE, Secs, Sigstruct};
use sgxemu_crypto::SigningKey;
use sgxemu_uapi::*;

use crate::enclave_program;
use crate::known::{Known, is_open};
use crate::model::{Encl, Mapping, PageType, R, RESERVATION_PAGES, Slot, W, X};
use crate::ops::*;
use crate::oracle::{self, AddRequest, Expect, Sgx2Request, Transient};
use crate::sys::{self, Errno, Vdso};

const PAGE: u64 = PAGE_SIZE as u64;

/// The largest ELRANGE the fuzzer creates (4 MiB); slot bases are aligned to it. Only the
/// first 2 MiB of it lie in the slot's reservation (and get mapped); the rest is only ever
/// EADDed, which needs no mapping.
const MAX_ELRANGE: u64 = 4 << 20;

/// A kernel-half address: never user memory.
const KERNEL_ADDRESS: u64 = 0xFFFF_8000_0000_1000;

/// Scratch pages of a world, by page number inside its scratch mapping.
mod scratch {
    /// 16 read-write pages: ADD_PAGES sources (and a straddling object's readable part).
    pub const SRC_RW: u64 = 0;
    /// PROT_NONE, right after SRC_RW.
    pub const GUARD: u64 = 16;
    /// An execute-only page.
    pub const EXEC: u64 = 17;
    /// 16 read-only pattern pages.
    pub const RO_SRC: u64 = 18;
    /// A read-only page for argument structures.
    pub const ARG_RO: u64 = 34;
    /// A read-only page for SECS, SECINFO and SIGSTRUCT.
    pub const OBJ_RO: u64 = 35;
    /// The read-write argument page.
    pub const ARG: u64 = 36;
    /// The read-write object page.
    pub const OBJ: u64 = 37;
    /// Where the enclave stores its EACCEPT result.
    pub const CELL: u64 = 38;
    /// Pages in all.
    pub const PAGES: u64 = 39;
}

/// The enclave every thread shares (built once by [`SharedEnclave::build`]).
#[derive(Clone, Copy, Debug)]
pub struct SharedEnclave {
    /// Its descriptor.
    pub fd: i32,
    /// Its base.
    pub base: u64,
    /// An open `/dev/sgx_provision`.
    pub provision_fd: i32,
    /// A page number inside ELRANGE that was never added.
    pub hole: u64,
}

/// Counts of one world's run.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Operations carried out.
    pub executed: u64,
    /// Operations that did not apply to the state they met.
    pub skipped: u64,
    /// Known differences seen, per class.
    pub known: BTreeMap<Known, u64>,
    /// Operations of a known class that got the kernel's answer.
    pub known_passed: BTreeMap<Known, u64>,
    /// Transient answers (EAGAIN/EBUSY of a page the reclaimer held) seen.
    pub transient: u64,
    /// Notable successes (what the deep paths reached): INITs, EENTERs, EAUGs, accepted
    /// EACCEPTs, pages restricted, retyped and removed.
    pub events: BTreeMap<&'static str, u64>,
}

impl Stats {
    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &Stats) {
        self.executed += other.executed;
        self.skipped += other.skipped;
        self.transient += other.transient;
        for (k, v) in &other.known {
            *self.known.entry(*k).or_default() += v;
        }
        for (k, v) in &other.known_passed {
            *self.known_passed.entry(*k).or_default() += v;
        }
        for (k, v) in &other.events {
            *self.events.entry(k).or_default() += v;
        }
    }

    fn event(&mut self, what: &'static str, n: u64) {
        if n > 0 {
            *self.events.entry(what).or_default() += n;
        }
    }
}

/// An answer that is not the kernel's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mismatch(pub String);

/// What an operation came to.
enum Step {
    /// Done and as predicted.
    Done,
    /// Not applicable to the current state.
    Skipped,
}

/// One thread's world.
pub struct World {
    sgx2: bool,
    vdso: Vdso,
    key: SigningKey,
    slots: Vec<Slot>,
    bases: Vec<u64>,
    reservation_starts: Vec<u64>,
    scratch: u64,
    devnull_fd: i32,
    shared: SharedEnclave,
    thread: u16,
    /// Counts so far.
    pub stats: Stats,
}

impl std::fmt::Debug for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("World").field("thread", &self.thread).field("bases", &self.bases).finish_non_exhaustive()
    }
}

/// Reserves `pages` of PROT_NONE address space aligned to `align` bytes; (aligned start,
/// mapping start).
fn reserve_aligned(pages: u64, align: u64) -> Result<(u64, u64), String> {
    let len = pages * PAGE + align;
    let start = sys::anonymous(len, libc::PROT_NONE).map_err(|e| format!("reserving address space: errno {e}"))?;
    let aligned = start.next_multiple_of(align);
    Ok((aligned, start))
}

/// The prot bits of the model as PROT_* (they are the same numbers).
fn prot(bits: u8) -> i32 {
    i32::from(bits)
}

fn compare(
    what: &str,
    expected: &Expect,
    ret: Result<i32, Errno>,
    count: Option<u64>,
    result: Option<u64>,
) -> Result<(), Mismatch> {
    let got = ret.map(|_| ());
    if got != expected.ret
        || (expected.count.is_some() && count.is_some() && expected.count != count)
        || (expected.result.is_some() && result.is_some() && expected.result != result)
    {
        return Err(Mismatch(format!(
            "{what}: kernel answers {:?} count {:?} result {:?}; got {:?} count {:?} result {:?}",
            expected.ret, expected.count, expected.result, got, count, result
        )));
    }
    Ok(())
}

impl World {
    /// A world for fuzzing thread `thread`.
    pub fn new(sgx2: bool, vdso: Vdso, shared: SharedEnclave, thread: u16) -> Result<World, String> {
        let mut bases = Vec::new();
        let mut reservation_starts = Vec::new();
        for _ in 0..SLOTS {
            let (base, start) = reserve_aligned(u64::from(RESERVATION_PAGES), MAX_ELRANGE)?;
            bases.push(base);
            reservation_starts.push(start);
        }
        let scratch = sys::anonymous(scratch::PAGES * PAGE, libc::PROT_READ | libc::PROT_WRITE)
            .map_err(|e| format!("scratch memory: errno {e}"))?;
        let page = |n: u64| scratch + n * PAGE;
        for i in 0..16u8 {
            // SAFETY: the RO_SRC pages are part of the scratch mapping, read-write until the
            // mprotect below.
            unsafe { sys::write_bytes(page(scratch::RO_SRC + u64::from(i)), &oracle::pattern_page(0x5A, i)) };
        }
        // SAFETY: the EXEC page is part of the scratch mapping, still read-write.
        unsafe { sys::write_bytes(page(scratch::EXEC), &oracle::pattern_page(0x11, 0)) };
        let protect = |n: u64, pages: u64, p: i32| {
            sys::mprotect(page(n), pages * PAGE, p).map_err(|e| format!("mprotect scratch: errno {e}"))
        };
        protect(scratch::GUARD, 1, libc::PROT_NONE)?;
        protect(scratch::EXEC, 1, libc::PROT_EXEC)?;
        protect(scratch::RO_SRC, 16, libc::PROT_READ)?;
        protect(scratch::ARG_RO, 2, libc::PROT_READ)?;
        let devnull_fd = sys::open(c"/dev/null", libc::O_RDWR).map_err(|e| format!("/dev/null: errno {e}"))?;
        Ok(World {
            sgx2,
            vdso,
            key: enclave_program::signing_key(),
            slots: (0..SLOTS).map(|_| Slot::new()).collect(),
            bases,
            reservation_starts,
            scratch,
            devnull_fd,
            shared,
            thread,
            stats: Stats::default(),
        })
    }

    fn page_addr(&self, n: u64) -> u64 {
        self.scratch + n * PAGE
    }

    /// Puts `bytes` where `ptr` says; the address to pass.
    fn place(&mut self, ptr: ArgPtr, bytes: &[u8], rw_page: u64, ro_page: u64) -> u64 {
        let len = bytes.len() as u64;
        match ptr {
            ArgPtr::Valid => {
                let at = self.page_addr(rw_page);
                // SAFETY: `rw_page` is a read-write scratch page of this world, `len` ≤ a page.
                unsafe { sys::write_bytes(at, bytes) };
                at
            }
            ArgPtr::Null => 0,
            ArgPtr::Kernel => KERNEL_ADDRESS,
            ArgPtr::ProtNone => self.page_addr(scratch::GUARD),
            ArgPtr::Straddle => {
                // Half of the structure readable, the rest in the PROT_NONE page.
                let at = self.page_addr(scratch::GUARD) - (len / 2).max(1);
                let readable = (self.page_addr(scratch::GUARD) - at) as usize;
                // SAFETY: [at, GUARD) is the tail of the read-write SRC_RW area.
                unsafe { sys::write_bytes(at, &bytes[..readable.min(bytes.len())]) };
                at
            }
            ArgPtr::ReadOnly => {
                let at = self.page_addr(ro_page);
                sys::mprotect(at, PAGE, libc::PROT_READ | libc::PROT_WRITE).expect("mprotect of our own scratch page");
                // SAFETY: the page was just made writable; it belongs to this world.
                unsafe { sys::write_bytes(at, bytes) };
                sys::mprotect(at, PAGE, libc::PROT_READ).expect("mprotect of our own scratch page");
                at
            }
        }
    }

    fn place_arg(&mut self, ptr: ArgPtr, bytes: &[u8]) -> u64 {
        self.place(ptr, bytes, scratch::ARG, scratch::ARG_RO)
    }

    fn place_obj(&mut self, ptr: ObjPtr, bytes: &[u8]) -> u64 {
        let as_arg = match ptr {
            ObjPtr::Valid => ArgPtr::Valid,
            ObjPtr::ReadOnly => ArgPtr::ReadOnly,
            ObjPtr::Null => ArgPtr::Null,
            ObjPtr::Kernel => ArgPtr::Kernel,
            ObjPtr::ProtNone => ArgPtr::ProtNone,
            ObjPtr::Straddle => ArgPtr::Straddle,
        };
        self.place(as_arg, bytes, scratch::OBJ, scratch::OBJ_RO)
    }

    /// Reads the argument structure back (only meaningful for `ArgPtr::Valid`).
    fn read_arg<T: zerocopy::FromBytes>(&self) -> T {
        // SAFETY: the ARG page is a readable scratch page of this world.
        let bytes = unsafe { sys::read_bytes(self.page_addr(scratch::ARG), size_of::<T>()) };
        T::read_from_bytes(&bytes).expect("exact size")
    }

    /// Carries `op` out; `Err` if the answer is not the kernel's.
    pub fn step(&mut self, op: &Op) -> Result<(), Mismatch> {
        let step = match *op {
            Op::Open { slot, rdonly } => self.open(slot, rdonly),
            Op::Dup { slot } => self.dup(slot),
            Op::Close { slot, which } => self.close(slot, which),
            Op::Create { slot, arg, secs, secs_ptr, size_log2, attrs } => {
                self.create(slot, arg, secs, secs_ptr, size_log2, attrs)
            }
            Op::AddPages { slot, arg, src, shape, page, npages, secinfo, flags } => {
                self.add_pages(slot, &AddRequest { arg, src, shape, page, npages, secinfo, flags })
            }
            Op::Init { slot, arg, sig } => self.init(slot, arg, sig),
            Op::Provision { slot, arg, fd } => self.provision(slot, arg, fd),
            Op::Restrict { slot, arg, shape, page, npages, perms, out } => {
                self.sgx2_ioctl(slot, Sgx2Kind::Restrict(perms), &Sgx2Request { arg, shape, page, npages, out })
            }
            Op::Modify { slot, arg, shape, page, npages, page_type, out } => {
                self.sgx2_ioctl(slot, Sgx2Kind::Modify(page_type), &Sgx2Request { arg, shape, page, npages, out })
            }
            Op::Remove { slot, arg, shape, page, npages, out } => {
                self.sgx2_ioctl(slot, Sgx2Kind::Remove, &Sgx2Request { arg, shape, page, npages, out })
            }
            Op::NearMiss { slot, cmd } => self.near_miss(slot, cmd),
            Op::Mmap { slot, page, npages, prot, kind } => self.mmap(slot, page, npages, prot, kind),
            Op::Mprotect { slot, page, npages, prot, kind } => self.mprotect(slot, page, npages, prot, kind),
            Op::Munmap { slot, page, npages, overmap } => self.munmap(slot, page, npages, overmap),
            Op::Enter { slot, tcs, action } => self.enter(slot, tcs, action),
            Op::Shared(shared) => self.shared_op(shared),
        }?;
        match step {
            Step::Done => self.stats.executed += 1,
            Step::Skipped => self.stats.skipped += 1,
        }
        Ok(())
    }

    /// Compares, letting a [`Known`] difference through (counted) while it is on the list.
    fn judge(&mut self, known: Option<Known>, outcome: Result<(), Mismatch>) -> Result<Step, Mismatch> {
        match (known, outcome) {
            (Some(k), Ok(())) => {
                *self.stats.known_passed.entry(k).or_default() += 1;
                Ok(Step::Done)
            }
            (Some(k), Err(_)) if is_open(k) => {
                *self.stats.known.entry(k).or_default() += 1;
                Ok(Step::Done)
            }
            (_, Err(m)) => Err(m),
            (None, Ok(())) => Ok(Step::Done),
        }
    }

    fn fd(&self, slot: u8) -> Option<i32> {
        self.slots[usize::from(slot)].fds.first().copied()
    }

    fn open(&mut self, slot: u8, rdonly: bool) -> Result<Step, Mismatch> {
        let s = usize::from(slot);
        if !self.slots[s].fds.is_empty() {
            return Ok(Step::Skipped);
        }
        // What a closed enclave's mappings kept alive goes first.
        if self.slots[s].encl.is_some() {
            self.unmap_range(slot, 0, RESERVATION_PAGES, false)?;
        }
        let flags = if rdonly { libc::O_RDONLY } else { libc::O_RDWR };
        let fd =
            sys::open(c"/dev/sgx_enclave", flags).map_err(|e| Mismatch(format!("open /dev/sgx_enclave: errno {e}")))?;
        let s = &mut self.slots[s];
        s.fds.push(fd);
        s.rdonly = rdonly;
        s.encl = Some(Encl::default());
        Ok(Step::Done)
    }

    fn dup(&mut self, slot: u8) -> Result<Step, Mismatch> {
        let Some(fd) = self.fd(slot) else { return Ok(Step::Skipped) };
        let s = &mut self.slots[usize::from(slot)];
        if s.fds.len() >= 4 {
            return Ok(Step::Skipped);
        }
        let new = sys::dup(fd).map_err(|e| Mismatch(format!("dup: errno {e}")))?;
        s.fds.push(new);
        Ok(Step::Done)
    }

    fn close(&mut self, slot: u8, which: u8) -> Result<Step, Mismatch> {
        let s = &mut self.slots[usize::from(slot)];
        if s.fds.is_empty() {
            return Ok(Step::Skipped);
        }
        let fd = s.fds.remove(usize::from(which) % s.fds.len());
        sys::close(fd).map_err(|e| Mismatch(format!("close: errno {e}")))?;
        s.release_if_unreferenced();
        Ok(Step::Done)
    }

    fn create(
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
        let src = self.place_obj(secs_ptr, image.as_bytes());
        let argp = self.place_arg(arg, SgxEnclaveCreate { src }.as_bytes());
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

    fn add_pages(&mut self, slot: u8, req: &AddRequest) -> Result<Step, Mismatch> {
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
        let secinfo_addr = self.place_obj(secinfo_ptr, &secinfo);
        const SENTINEL: u64 = 0xC0FF_EE00;
        let arg = SgxEnclaveAddPages { src, offset, length, secinfo: secinfo_addr, flags: req.flags, count: SENTINEL };
        let argp = self.place_arg(req.arg, arg.as_bytes());
        let encl = self.slots[usize::from(slot)].encl.as_mut().expect("open slot");
        let before = encl.clone();
        let expected = oracle::add_pages(encl, req);
        let ret = sys::ioctl(fd, SGX_IOC_ENCLAVE_ADD_PAGES, argp);
        let count = (req.arg == ArgPtr::Valid).then(|| self.read_arg::<SgxEnclaveAddPages>().count);
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
    fn source(&mut self, req: &AddRequest, offset: u64) -> u64 {
        let rw = self.page_addr(scratch::SRC_RW);
        let write_pages = |world: &World, at: u64, pages: u8| {
            for i in 0..pages {
                if let Some(bytes) = oracle::source_page(req.src, i, offset / PAGE + u64::from(i)) {
                    // SAFETY: the pages written lie in the read-write SRC_RW area (at most 16).
                    unsafe { sys::write_bytes(at + u64::from(i) * PAGE, &bytes) };
                }
            }
            let _ = world;
        };
        match req.src {
            SrcVariant::Code | SrcVariant::Tcs | SrcVariant::Zero | SrcVariant::Pattern(_) => {
                write_pages(self, rw, req.npages.min(16));
                rw
            }
            SrcVariant::ReadOnly => self.page_addr(scratch::RO_SRC),
            SrcVariant::Unaligned => rw + 8,
            SrcVariant::ProtNoneAt(k) => {
                let at = self.page_addr(scratch::GUARD) - u64::from(k) * PAGE;
                write_pages(self, at, k);
                at
            }
            SrcVariant::ExecOnly | SrcVariant::ExecOnlyContents => self.page_addr(scratch::EXEC),
            SrcVariant::Kernel => KERNEL_ADDRESS,
        }
    }

    fn init(&mut self, slot: u8, arg: ArgPtr, sig: SigVariant) -> Result<Step, Mismatch> {
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
        let sig_addr = self.place_obj(sig_ptr, sigstruct.as_bytes());
        let argp = self.place_arg(arg, SgxEnclaveInit { sigstruct: sig_addr }.as_bytes());
        let ret = sys::ioctl(fd, SGX_IOC_ENCLAVE_INIT, argp);
        *self.slots[usize::from(slot)].encl.as_mut().expect("open slot") = predicted;
        self.stats.event("init", u64::from(ret.is_ok()));
        self.judge(None, compare("INIT", &expected, ret, None, None))
    }

    fn provision(&mut self, slot: u8, arg: ArgPtr, which: ProvFd) -> Result<Step, Mismatch> {
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
        let argp = self.place_arg(arg, SgxEnclaveProvision { fd: value }.as_bytes());
        let encl = self.slots[usize::from(slot)].encl.as_mut().expect("open slot");
        let expected = oracle::provision(encl, arg, matches!(which, ProvFd::Provision | ProvFd::ProvisionHighBits));
        let ret = sys::ioctl(fd, SGX_IOC_ENCLAVE_PROVISION, argp);
        self.judge(None, compare("PROVISION", &expected, ret, None, None))
    }

    fn sgx2_ioctl(&mut self, slot: u8, kind: Sgx2Kind, req: &Sgx2Request) -> Result<Step, Mismatch> {
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
        let argp = self.place_arg(req.arg, &bytes);
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
                    let a: SgxEnclaveRestrictPermissions = self.read_arg();
                    (Some(a.count), Some(a.result))
                }
                Sgx2Kind::Modify(_) => {
                    let a: SgxEnclaveModifyTypes = self.read_arg();
                    (Some(a.count), Some(a.result))
                }
                Sgx2Kind::Remove => (Some(self.read_arg::<SgxEnclaveRemovePages>().count), None),
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

    fn near_miss(&mut self, slot: u8, cmd: u32) -> Result<Step, Mismatch> {
        let Some(fd) = self.fd(slot) else { return Ok(Step::Skipped) };
        let argp = self.place_arg(ArgPtr::Valid, &[0u8; 64]);
        let vfs = [0x5451, 0x5450, 0x5421, 0x5452, 2].contains(&cmd);
        let expected = Expect { ret: if vfs { Ok(()) } else { Err(ENOTTY) }, count: None, result: None };
        let ret = sys::ioctl(fd, cmd, argp);
        self.judge(vfs.then_some(Known::VfsFileIoctl), compare(&format!("ioctl {cmd:#x}"), &expected, ret, None, None))
    }

    /// Pages `page .. page + npages` clamped to the reservation, or `None` if any of them is
    /// someone else's.
    fn clamp(&self, slot: u8, page: u16, npages: u16) -> Option<(u16, u16)> {
        let start = page.min(RESERVATION_PAGES - 1);
        let end = (start + npages).min(RESERVATION_PAGES);
        let maps = &self.slots[usize::from(slot)].maps;
        (!maps[usize::from(start)..usize::from(end)].contains(&Mapping::Foreign)).then_some((start, end))
    }

    fn mmap(&mut self, slot: u8, page: u16, npages: u16, prot_bits: u8, kind: MapKind) -> Result<Step, Mismatch> {
        let Some(fd) = self.fd(slot) else { return Ok(Step::Skipped) };
        let Some((start, end)) = self.clamp(slot, page, npages) else { return Ok(Step::Skipped) };
        let s = usize::from(slot);
        let base = self.bases[s];
        let addr = base + u64::from(start) * PAGE;
        let len = u64::from(end - start) * PAGE;
        let rdonly = self.slots[s].rdonly;
        let encl = self.slots[s].encl.as_ref();
        let wants_write = prot_bits & W != 0;
        let fixed_check = || -> Result<(), Errno> {
            if rdonly && wants_write {
                return Err(libc::EACCES);
            }
            oracle::may_map(encl, u64::from(start), u64::from(end), prot_bits)
        };
        let anywhere_check = || -> Result<(), Errno> {
            if rdonly && wants_write {
                return Err(libc::EACCES);
            }
            // The kernel picks an address outside our reservations, so outside ELRANGE.
            if encl.is_some_and(|e| e.initialized) { Err(libc::EACCES) } else { Ok(()) }
        };
        let (flags, map_addr, map_len, offset, expected, mut known): (
            i32,
            u64,
            u64,
            i64,
            Result<(), Errno>,
            Option<Known>,
        ) = match kind {
            MapKind::SharedFixed => (libc::MAP_SHARED | libc::MAP_FIXED, addr, len, 0, fixed_check(), None),
            MapKind::SharedValidateFixed => {
                (libc::MAP_SHARED_VALIDATE | libc::MAP_FIXED, addr, len, 0, fixed_check(), None)
            }
            MapKind::Private => (libc::MAP_PRIVATE | libc::MAP_FIXED, addr, len, 0, Err(EINVAL), None),
            MapKind::Anywhere => (libc::MAP_SHARED, 0, len, 0, anywhere_check(), None),
            MapKind::ZeroLength => (libc::MAP_SHARED | libc::MAP_FIXED, addr, 0, 0, Err(EINVAL), None),
            MapKind::FixedNoReplace => (
                libc::MAP_SHARED | libc::MAP_FIXED_NOREPLACE,
                addr,
                len,
                0,
                Err(libc::EEXIST),
                Some(Known::MmapFixedNoReplace),
            ),
            MapKind::UnalignedOffset => {
                (libc::MAP_SHARED | libc::MAP_FIXED, addr, len, 8, Err(EINVAL), Some(Known::MmapUnalignedOffset))
            }
            MapKind::UnalignedHint => {
                (libc::MAP_SHARED, addr + 8, len, 0, anywhere_check(), Some(Known::MmapUnalignedHint))
            }
        };
        if rdonly && wants_write && matches!(expected, Err(libc::EACCES)) && known.is_none() {
            known = Some(Known::MmapWriteOfReadOnlyFd);
        }
        let ret = sys::mmap(map_addr, map_len, prot(prot_bits), flags, fd, offset);
        let got = ret.map(|_| ());
        let outcome = if got == expected {
            Ok(())
        } else {
            Err(Mismatch(format!("mmap({kind:?}, prot {prot_bits}): kernel answers {expected:?}; got {ret:?}")))
        };
        // Follow what happened, whatever the kernel would have done.
        let reservation = base..base + u64::from(RESERVATION_PAGES) * PAGE;
        match ret {
            Ok(at) if reservation.contains(&at) => {
                let first = ((at - base) / PAGE) as usize;
                let last = (first + map_len.div_ceil(PAGE) as usize).min(usize::from(RESERVATION_PAGES));
                let slot_ref = &mut self.slots[s];
                let vma = slot_ref.new_vma();
                for m in &mut slot_ref.maps[first..last] {
                    *m = Mapping::Enclave { prot: prot_bits, vma, may_write: !rdonly };
                }
            }
            Ok(at) => {
                if let Err(e) = sys::munmap(at, map_len) {
                    return Err(Mismatch(format!("munmap of an enclave mapping the kernel placed: errno {e}")));
                }
            }
            Err(_) => {}
        }
        self.judge(known, outcome)
    }

    fn mprotect(
        &mut self,
        slot: u8,
        page: u16,
        npages: u16,
        prot_bits: u8,
        kind: ProtectKind,
    ) -> Result<Step, Mismatch> {
        let Some((start, end)) = self.clamp(slot, page, npages) else { return Ok(Step::Skipped) };
        let s = usize::from(slot);
        let base = self.bases[s];
        let maps = &self.slots[s].maps[usize::from(start)..usize::from(end)];
        let any_enclave = maps.iter().any(|m| matches!(m, Mapping::Enclave { .. }));
        let any_reserved = maps.contains(&Mapping::Reserved);
        if !any_enclave {
            // Only our own anonymous memory: not the driver's business.
            return Ok(Step::Skipped);
        }
        // A write-protected VMA of an O_RDONLY descriptor exists only because its mmap was let
        // through (a known difference): what mprotect then answers belongs to that class.
        let read_only_vma =
            prot_bits & W != 0 && maps.iter().any(|m| matches!(m, Mapping::Enclave { may_write: false, .. }));
        let mut known = if read_only_vma {
            Some(Known::MmapWriteOfReadOnlyFd)
        } else {
            (any_enclave && any_reserved).then_some(Known::MprotectSpanning)
        };
        let (addr, p) = match kind {
            ProtectKind::Plain => (base + u64::from(start) * PAGE, prot(prot_bits)),
            ProtectKind::UnalignedStart => {
                known = Some(Known::MprotectUnalignedStart);
                (base + u64::from(start) * PAGE + 8, prot(prot_bits))
            }
            ProtectKind::UnknownBits => {
                known = Some(Known::MprotectUnknownBits);
                (base + u64::from(start) * PAGE, prot(prot_bits) | 0x10)
            }
        };
        // The kernel's walk: VMA by VMA, stopping at the first one refused.
        let mut predicted = self.slots[s].maps.clone();
        let expected = if kind != ProtectKind::Plain {
            Err(EINVAL)
        } else {
            let encl = self.slots[s].encl.as_ref();
            let mut result = Ok(());
            let mut i = start;
            while i < end {
                let here = predicted[usize::from(i)];
                let mut j = i + 1;
                while j < end && predicted[usize::from(j)] == here {
                    j += 1;
                }
                if let Mapping::Enclave { vma, may_write, .. } = here {
                    let _ = vma;
                    if prot_bits & W != 0 && !may_write {
                        result = Err(libc::EACCES);
                        break;
                    }
                    if let Err(e) = oracle::may_map(encl, u64::from(i), u64::from(j), prot_bits) {
                        result = Err(e);
                        break;
                    }
                    for m in &mut predicted[usize::from(i)..usize::from(j)] {
                        if let Mapping::Enclave { prot, .. } = m {
                            *prot = prot_bits;
                        }
                    }
                }
                i = j;
            }
            result
        };
        let len = u64::from(end - start) * PAGE;
        let ret = sys::mprotect(addr, len, p);
        let outcome = if ret == expected {
            Ok(())
        } else {
            Err(Mismatch(format!(
                "mprotect(pages {start}..{end}, prot {prot_bits}, {kind:?}): kernel answers {expected:?}; got {ret:?}"
            )))
        };
        if outcome.is_ok() {
            // Each changed part of a VMA becomes a VMA of its own (enclave VMAs never merge).
            let old = self.slots[s].maps.clone();
            let mut i = usize::from(start);
            while i < usize::from(end) {
                let mut j = i + 1;
                while j < usize::from(end) && old[j] == old[i] {
                    j += 1;
                }
                if predicted[i] != old[i] {
                    let vma = self.slots[s].new_vma();
                    for m in &mut predicted[i..j] {
                        if let Mapping::Enclave { prot, may_write, .. } = *m {
                            *m = Mapping::Enclave { prot, vma, may_write };
                        }
                    }
                }
                i = j;
            }
            self.slots[s].maps = predicted;
        } else if known.is_some() {
            // Follow the emulator: a protection change it made, or not, is unknown per page
            // (an unaligned start may reach one page further); give the range back to the
            // reservation so nothing relies on it.
            let last = (end + 1).min(RESERVATION_PAGES);
            if self.clamp(slot, start, last - start).is_some() {
                self.unmap_range(slot, start, last - start, true)?;
            } else {
                self.unmap_range(slot, start, end - start, true)?;
            }
        }
        self.judge(known, outcome)
    }

    fn munmap(&mut self, slot: u8, page: u16, npages: u16, overmap: bool) -> Result<Step, Mismatch> {
        let Some((start, end)) = self.clamp(slot, page, npages) else { return Ok(Step::Skipped) };
        self.unmap_range(slot, start, end - start, overmap)?;
        Ok(Step::Done)
    }

    /// Returns pages to the slot's PROT_NONE reservation: munmap and refill, or an anonymous
    /// mapping right over them.
    fn unmap_range(&mut self, slot: u8, start: u16, npages: u16, overmap: bool) -> Result<(), Mismatch> {
        let s = usize::from(slot);
        let addr = self.bases[s] + u64::from(start) * PAGE;
        let len = u64::from(npages) * PAGE;
        let anon = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;
        let mut foreign = false;
        for i in start..start + npages {
            foreign |= self.slots[s].maps[usize::from(i)] == Mapping::Foreign;
        }
        if foreign {
            // Someone else's memory lies in the range: leave it alone, page by page.
            for i in start..start + npages {
                if self.slots[s].maps[usize::from(i)] != Mapping::Foreign {
                    self.unmap_range(slot, i, 1, overmap)?;
                }
            }
            return Ok(());
        }
        if overmap {
            sys::mmap(addr, len, libc::PROT_NONE, anon | libc::MAP_FIXED, -1, 0)
                .map_err(|e| Mismatch(format!("anonymous mmap over an enclave mapping: errno {e}")))?;
        } else {
            sys::munmap(addr, len).map_err(|e| Mismatch(format!("munmap of an enclave mapping: errno {e}")))?;
            if sys::mmap(addr, len, libc::PROT_NONE, anon | libc::MAP_FIXED_NOREPLACE, -1, 0).is_err() {
                // Another thread's mapping landed in the moment's hole: never touch it.
                for m in &mut self.slots[s].maps[usize::from(start)..usize::from(start + npages)] {
                    *m = Mapping::Foreign;
                }
                self.slots[s].release_if_unreferenced();
                return Ok(());
            }
        }
        for m in &mut self.slots[s].maps[usize::from(start)..usize::from(start + npages)] {
            *m = Mapping::Reserved;
        }
        self.slots[s].release_if_unreferenced();
        Ok(())
    }

    /// Whether page `page` of slot `s` is mapped with protections that include `need` and
    /// that its maximum protections allow (so the fault handler maps it).
    fn mapped_for(&self, s: usize, page: u64, need: u8) -> bool {
        let Some(encl) = self.slots[s].encl.as_ref() else { return false };
        let Some(Mapping::Enclave { prot, .. }) = self.slots[s].maps.get(page as usize).copied() else { return false };
        match encl.pages.get(&page) {
            Some(p) => prot & need == need && prot & !p.max_prot == 0,
            None => prot & need == need,
        }
    }

    /// Whether EENTER on TCS number `tcs` of slot `s` just works (every page it needs is
    /// present, unmodified and mapped).
    fn enterable(&self, s: usize, tcs: u8) -> bool {
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
    fn mark_ssa_written(&mut self, s: usize, tcs: u8) {
        let tcs_page = u64::from(layout::tcs_page(u16::from(tcs)));
        if let Some(encl) = self.slots[s].encl.as_mut() {
            for k in 1..=u64::from(layout::NSSA) {
                if let Some(p) = encl.pages.get_mut(&(tcs_page + k)) {
                    p.zero = false;
                }
            }
        }
    }

    fn fresh_run(tcs: u64) -> SgxEnclaveRun {
        SgxEnclaveRun {
            tcs,
            exception_vector: 0xAAAA,
            exception_error_code: 0xBBBB,
            exception_addr: 0xCCCC,
            user_data: 0x1234,
            ..SgxEnclaveRun::default()
        }
    }

    fn check_exit(what: &str, ret: i32, run: &SgxEnclaveRun) -> Result<(), Mismatch> {
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

    fn enter(&mut self, slot: u8, tcs: u8, action: EnterAction) -> Result<Step, Mismatch> {
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
                let cell = self.page_addr(scratch::CELL);
                // SAFETY: the CELL page is a read-write scratch page of this world.
                unsafe { sys::write_bytes(cell, &0xDEAD_BEEFu64.to_le_bytes()) };
                self.mark_ssa_written(s, tcs);
                let encl = self.slots[s].encl.as_mut().expect("enterable");
                let expected = oracle::eaccept(encl, page, secinfo);
                let mut run = Self::fresh_run(tcs_addr);
                let secinfo_addr = base + enclave_program::SECINFO_TABLE + 64 * u64::from(secinfo);
                let ret = self.vdso.enter(secinfo_addr, base + page * PAGE, cell, EENTER, &mut run);
                Self::check_exit("EENTER + EACCEPT + EEXIT", ret, &run)?;
                // SAFETY: as above.
                let got = u64::from_le_bytes(unsafe { sys::read_bytes(cell, 8) }.try_into().expect("8 bytes"));
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

    fn shared_op(&mut self, op: SharedOp) -> Result<Step, Mismatch> {
        let fd = self.shared.fd;
        let base = self.shared.base;
        let ioctl =
            |world: &mut World, cmd: u32, bytes: &[u8], expected: Result<(), Errno>| -> Result<Step, Mismatch> {
                let argp = world.place_arg(ArgPtr::Valid, bytes);
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

    /// Closes every descriptor and returns every reservation and scratch page.
    pub fn teardown(&mut self) {
        for s in 0..self.slots.len() {
            for fd in std::mem::take(&mut self.slots[s].fds) {
                let _ = sys::close(fd);
            }
            let start = self.reservation_starts[s];
            let _ = sys::munmap(start, u64::from(RESERVATION_PAGES) * PAGE + MAX_ELRANGE);
            self.slots[s] = Slot::new();
        }
        let _ = sys::munmap(self.scratch, scratch::PAGES * PAGE);
        let _ = sys::close(self.devnull_fd);
    }
}

/// Which SGX2 ioctl.
#[derive(Clone, Copy, Debug)]
enum Sgx2Kind {
    Restrict(u64),
    Modify(u64),
    Remove,
}

impl SharedEnclave {
    /// Builds the shared enclave: a code page and one TCS (with its SSA frames) per thread,
    /// initialized and mapped.
    pub fn build(threads: u16, vdso: &Vdso) -> Result<SharedEnclave, String> {
        let _ = vdso;
        let provision_fd =
            sys::open(c"/dev/sgx_provision", libc::O_RDONLY).map_err(|e| format!("/dev/sgx_provision: errno {e}"))?;
        let fd = sys::open(c"/dev/sgx_enclave", libc::O_RDWR)
            .map_err(|e| format!("/dev/sgx_enclave: errno {e} (run under `sgxemu run`)"))?;
        let pages = u64::from(layout::tcs_page(threads));
        let size = ((pages + 1) * PAGE).next_power_of_two().max(64 << 10);
        let (base, _) = reserve_aligned(size / PAGE, size)?;
        let mut encl = Encl::default();
        let mut secs = Secs::new_zeroed();
        secs.size = size;
        secs.baseaddr = base;
        secs.ssaframesize = 1;
        secs.attributes = sgxemu_arch::Attributes { flags: 0x4, xfrm: enclave_program::XFRM };
        let secs_bytes = secs.as_bytes().to_vec();
        let ioctl = |cmd: u32, arg: &[u8]| {
            let mut buf = arg.to_vec();
            sys::ioctl(fd, cmd, buf.as_mut_ptr() as u64)
                .map_err(|e| format!("building the shared enclave: ioctl {cmd:#x}: errno {e}"))
        };
        ioctl(SGX_IOC_ENCLAVE_CREATE, SgxEnclaveCreate { src: secs_bytes.as_ptr() as u64 }.as_bytes())?;
        oracle::create(
            &mut encl,
            ArgPtr::Valid,
            SecsVariant::Valid,
            ObjPtr::Valid,
            size.trailing_zeros() as u8,
            AttrVariant::Plain,
        );
        let mut add = |page: u64, src: SrcVariant, secinfo: SecinfoVariant| -> Result<(), String> {
            let bytes = oracle::source_page(src, 0, page).expect("readable source");
            let buf = sys::anonymous(PAGE, libc::PROT_READ | libc::PROT_WRITE).map_err(|e| format!("errno {e}"))?;
            // SAFETY: `buf` is a fresh read-write page of ours.
            unsafe { sys::write_bytes(buf, &bytes) };
            let mut si = [0u8; 64];
            si[..8].copy_from_slice(&oracle::secinfo_flags(secinfo).to_le_bytes());
            let arg = SgxEnclaveAddPages {
                src: buf,
                offset: page * PAGE,
                length: PAGE,
                secinfo: si.as_ptr() as u64,
                flags: 1,
                count: 0,
            };
            let r = ioctl(SGX_IOC_ENCLAVE_ADD_PAGES, arg.as_bytes());
            let _ = sys::munmap(buf, PAGE);
            r?;
            let req = AddRequest {
                arg: ArgPtr::Valid,
                src,
                shape: RangeShape::Pages,
                page: page as u16,
                npages: 1,
                secinfo,
                flags: 1,
            };
            oracle::add_pages(&mut encl, &req);
            Ok(())
        };
        add(0, SrcVariant::Code, SecinfoVariant::Reg(5))?;
        for t in 0..threads {
            let tcs = u64::from(layout::tcs_page(t));
            add(tcs, SrcVariant::Tcs, SecinfoVariant::Tcs)?;
            for k in 1..=u64::from(layout::NSSA) {
                add(tcs + k, SrcVariant::Zero, SecinfoVariant::Reg(3))?;
            }
        }
        let sig = enclave_program::sigstruct(&encl, &enclave_program::signing_key());
        let sig_bytes = sig.as_bytes().to_vec();
        ioctl(SGX_IOC_ENCLAVE_INIT, SgxEnclaveInit { sigstruct: sig_bytes.as_ptr() as u64 }.as_bytes())?;
        let map = |page: u64, npages: u64, p: i32| {
            sys::mmap(base + page * PAGE, npages * PAGE, p, libc::MAP_SHARED | libc::MAP_FIXED, fd, 0)
                .map_err(|e| format!("mapping the shared enclave: errno {e}"))
        };
        map(0, 1, libc::PROT_READ | libc::PROT_EXEC)?;
        map(1, pages - 1, libc::PROT_READ | libc::PROT_WRITE)?;
        Ok(SharedEnclave { fd, base, provision_fd, hole: size / PAGE - 1 })
    }
}
