//! Building blocks for tests and benchmarks of the bare processor: kernel memory, a page
//! table, an EPC page allocator and a ready-made, signed and initialized enclave.
//!
//! This is what a driver does, reduced to straight-line code with no policy; the real
//! driver lives in a higher layer. Everything here goes through the public leaf API.

use std::collections::BTreeMap;

use sgxemu_arch::{
    Attributes, AttributesFlags, Miscselect, PAGE_SIZE, PageType, Pageinfo, Secinfo, SecinfoFlags, Secs, Sigstruct, Tcs,
};
use sgxemu_crypto::SigningKey;
use zerocopy::{FromZeros, IntoBytes};

use crate::{
    Exception, LeafResult, Lp, MapPageTable, Memory, PlatformConfig, PlatformSecrets, Processor, Regs, SparseMemory,
};

/// Kernel-memory addresses the harness uses for leaf operands.
pub mod scratch {
    /// PAGEINFO.
    pub const PAGEINFO: u64 = 0x7000_0000;
    /// SECINFO (or PCMD).
    pub const SECINFO: u64 = 0x7000_0080;
    /// Token (512-aligned).
    pub const TOKEN: u64 = 0x7000_0200;
    /// Source / destination page.
    pub const PAGE: u64 = 0x7000_1000;
    /// SECS image.
    pub const SECS: u64 = 0x7000_2000;
    /// SIGSTRUCT (4 KiB aligned).
    pub const SIGSTRUCT: u64 = 0x7000_3000;
}

/// The fixed RSA-3072 (e = 3) key tests sign with.
pub fn test_signing_key() -> SigningKey {
    SigningKey::from_pem(include_str!("test-key.pem")).expect("the bundled test key parses")
}

/// A processor with deterministic secrets, one logical processor, kernel memory, a page
/// table and a bump allocator over the EPC.
#[derive(Debug)]
pub struct Harness {
    /// The processor.
    pub cpu: Processor,
    /// The logical processor the harness runs leaves on.
    pub lp: Lp,
    /// Kernel memory for PAGEINFO, SECINFO, source pages, PCMDs…
    pub mem: SparseMemory,
    /// The process page table enclave code and ENCLU operands are translated through.
    pub pt: MapPageTable,
    next_page: u32,
}

impl Default for Harness {
    fn default() -> Self {
        Self::new()
    }
}

impl Harness {
    /// Default platform (SGX2, 128 MiB EPC) with seeded secrets.
    pub fn new() -> Self {
        Self::with_config(PlatformConfig::default())
    }

    /// A harness on `config`; secrets are seeded unless the config brings its own.
    pub fn with_config(mut config: PlatformConfig) -> Self {
        config.secrets.get_or_insert_with(|| PlatformSecrets::from_seed([0x5A; 16]));
        let cpu = Processor::new(config).expect("test configuration is valid");
        let lp = cpu.new_lp();
        Harness { cpu, lp, mem: SparseMemory::new(), pt: MapPageTable::new(), next_page: 0 }
    }

    /// The EPC address of a never-used EPC page.
    pub fn alloc_page(&mut self) -> u64 {
        let addr = self.cpu.epc_addr(crate::EpcIndex(self.next_page));
        self.next_page += 1;
        addr
    }

    /// Writes PAGEINFO at [`scratch::PAGEINFO`].
    pub fn put_pageinfo(&mut self, linaddr: u64, srcpge: u64, secinfo: u64, secs: u64) {
        let info = Pageinfo { linaddr, srcpge, secinfo, secs };
        self.mem.write(scratch::PAGEINFO, info.as_bytes()).expect("scratch memory is mapped");
    }

    /// Writes SECINFO at [`scratch::SECINFO`].
    pub fn put_secinfo(&mut self, flags: SecinfoFlags) {
        self.mem.write(scratch::SECINFO, Secinfo::new(flags).as_bytes()).expect("scratch memory is mapped");
    }

    /// ECREATE of `secs` into a fresh EPC page; returns the SECS's EPC address.
    pub fn ecreate(&mut self, secs: &Secs) -> Result<u64, Exception> {
        let target = self.alloc_page();
        self.mem.write(scratch::SECS, secs.as_bytes()).expect("scratch memory is mapped");
        self.put_secinfo(SecinfoFlags::empty().with_page_type(PageType::Secs));
        self.put_pageinfo(0, scratch::SECS, scratch::SECINFO, 0);
        self.cpu.ecreate(&mut self.lp, &mut self.mem, scratch::PAGEINFO, target)?;
        Ok(target)
    }

    /// EADD of `data` at `linaddr` with `flags` (permissions and page type) into a fresh
    /// EPC page; returns its EPC address.
    pub fn eadd(
        &mut self,
        secs: u64,
        linaddr: u64,
        flags: SecinfoFlags,
        data: &[u8; PAGE_SIZE],
    ) -> Result<u64, Exception> {
        let target = self.alloc_page();
        self.mem.write(scratch::PAGE, data).expect("scratch memory is mapped");
        self.put_secinfo(flags);
        self.put_pageinfo(linaddr, scratch::PAGE, scratch::SECINFO, secs);
        self.cpu.eadd(&mut self.lp, &mut self.mem, scratch::PAGEINFO, target)?;
        Ok(target)
    }

    /// Sixteen EEXTENDs over the EPC page at `page` (what Linux does for SGX_PAGE_MEASURE).
    pub fn eextend_page(&mut self, secs: u64, page: u64) -> Result<(), Exception> {
        for chunk in (0..PAGE_SIZE as u64).step_by(256) {
            self.cpu.eextend(&mut self.lp, secs, page + chunk)?;
        }
        Ok(())
    }

    /// EINIT with `sig` and an all-zero token, the LP's LEPUBKEYHASH set to the signer's
    /// MRSIGNER first (the Linux flow with flexible launch control).
    pub fn einit(&mut self, secs: u64, sig: &Sigstruct) -> LeafResult {
        let hash = sgxemu_crypto::mrsigner(&sig.modulus);
        for (i, chunk) in hash.chunks_exact(8).enumerate() {
            let value = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
            self.cpu.wrmsr(&mut self.lp, sgxemu_arch::IA32_SGXLEPUBKEYHASH0 + i as u32, value).expect("FLC enabled");
        }
        self.mem.write(scratch::SIGSTRUCT, sig.as_bytes()).expect("scratch memory is mapped");
        self.mem.write(scratch::TOKEN, &[0u8; 304]).expect("scratch memory is mapped");
        self.cpu.einit(&mut self.lp, &mut self.mem, scratch::SIGSTRUCT, secs, scratch::TOKEN)
    }

    /// Maps enclave page `la` to EPC page `epc` in the page table.
    pub fn map(&mut self, la: u64, epc: u64, writable: bool, executable: bool) {
        self.pt.map(la, epc, writable, executable);
    }

    /// EENTER on `tcs` with AEP `aep`, other registers from `regs`; RIP is set to a fake
    /// ENCLU address outside the enclave.
    pub fn eenter(&mut self, regs: &mut Regs, tcs: u64, aep: u64) -> Result<(), Exception> {
        regs.rax = sgxemu_arch::Enclu::Eenter as u64;
        regs.rbx = tcs;
        regs.rcx = aep;
        self.cpu.eenter(&mut self.lp, regs, &self.pt)
    }

    /// ERESUME on `tcs`.
    pub fn eresume(&mut self, regs: &mut Regs, tcs: u64, aep: u64) -> Result<(), Exception> {
        regs.rax = sgxemu_arch::Enclu::Eresume as u64;
        regs.rbx = tcs;
        regs.rcx = aep;
        self.cpu.eresume(&mut self.lp, regs, &self.pt)
    }

    /// EEXIT to `target`.
    pub fn eexit(&mut self, regs: &mut Regs, target: u64) -> Result<(), Exception> {
        regs.rax = sgxemu_arch::Enclu::Eexit as u64;
        regs.rbx = target;
        self.cpu.eexit(&mut self.lp, regs)
    }
}

/// The SECS image tests start from: 64-bit, debug, x87+SSE, EXINFO, one-page SSA frames.
pub fn secs_image(baseaddr: u64, size: u64) -> Secs {
    let mut secs = Secs::new_zeroed();
    secs.baseaddr = baseaddr;
    secs.size = size;
    secs.ssaframesize = 1;
    secs.miscselect = Miscselect::EXINFO.bits();
    secs.attributes = Attributes::new(AttributesFlags::MODE64BIT | AttributesFlags::DEBUG, 0x3);
    secs
}

/// A TCS image: SSA frames at `ossa`, `nssa` of them, entry at `oentry`, FS/GS at `ofsbase`.
pub fn tcs_image(ossa: u64, nssa: u32, oentry: u64, ofsbase: u64) -> [u8; PAGE_SIZE] {
    let mut tcs = Tcs::new_zeroed();
    tcs.ossa = ossa;
    tcs.nssa = nssa;
    tcs.oentry = oentry;
    tcs.ofsbase = ofsbase;
    tcs.ogsbase = ofsbase;
    let mut page = [0u8; PAGE_SIZE];
    page.copy_from_slice(tcs.as_bytes());
    page
}

/// Layout of [`TestEnclave`] (offsets from the base).
pub mod layout {
    /// The TCS.
    pub const TCS: u64 = 0x0000;
    /// Two SSA frames (one page each).
    pub const SSA: u64 = 0x1000;
    /// Number of SSA frames.
    pub const NSSA: u32 = 2;
    /// A read+execute code page (OENTRY).
    pub const CODE: u64 = 0x3000;
    /// A read/write data page (also FS/GS base).
    pub const DATA: u64 = 0x4000;
    /// A read-only page.
    pub const RODATA: u64 = 0x5000;
    /// First address never EADDed (room for EAUG).
    pub const HEAP: u64 = 0x6000;
}

/// An initialized enclave: TCS, two SSA frames, code, data and read-only pages, all
/// measured, signed with [`test_signing_key`] and mapped in the harness's page table.
#[derive(Clone, Debug)]
pub struct TestEnclave {
    /// EPC address of the SECS.
    pub secs: u64,
    /// BASEADDR.
    pub base: u64,
    /// SIZE.
    pub size: u64,
    /// Linear address of the TCS.
    pub tcs: u64,
    /// The SIGSTRUCT it was initialized with.
    pub sigstruct: Sigstruct,
    /// EPC address of each EADDed page, by linear address.
    pub pages: BTreeMap<u64, u64>,
    /// Every TCS (the first is [`TestEnclave::tcs`]); extra ones sit at the top of ELRANGE,
    /// each followed by its own two SSA frames.
    pub threads: Vec<u64>,
}

impl TestEnclave {
    /// The default enclave: 1 MiB at 0x10_0000_0000.
    pub fn build(h: &mut Harness) -> Self {
        Self::build_with(h, secs_image(0x10_0000_0000, 1 << 20))
    }

    /// Builds from a given SECS image (same page layout).
    pub fn build_with(h: &mut Harness, secs_image: Secs) -> Self {
        Self::build_with_threads(h, secs_image, 1)
    }

    /// Builds with `threads` TCSs (at least one).
    pub fn build_with_threads(h: &mut Harness, secs_image: Secs, threads: usize) -> Self {
        let base = secs_image.baseaddr;
        let secs = h.ecreate(&secs_image).expect("ECREATE of the test SECS");
        let reg = |perms: SecinfoFlags| perms.with_page_type(PageType::Reg);
        let tcs_flags = SecinfoFlags::empty().with_page_type(PageType::Tcs);
        let tcs_page = tcs_image(layout::SSA, layout::NSSA, layout::CODE, layout::DATA);
        let mut code = [0u8; PAGE_SIZE];
        code[..4].copy_from_slice(&[0x0f, 0x01, 0xd7, 0xcc]); // ENCLU; INT3
        let rw = reg(SecinfoFlags::R | SecinfoFlags::W);
        let mut plan: Vec<(u64, SecinfoFlags, [u8; PAGE_SIZE])> = vec![
            (layout::TCS, tcs_flags, tcs_page),
            (layout::SSA, rw, [0; PAGE_SIZE]),
            (layout::SSA + 0x1000, rw, [0; PAGE_SIZE]),
            (layout::CODE, reg(SecinfoFlags::R | SecinfoFlags::X), code),
            (layout::DATA, rw, [0x11; PAGE_SIZE]),
            (layout::RODATA, reg(SecinfoFlags::R), [0x22; PAGE_SIZE]),
        ];
        let mut thread_tcs = vec![base + layout::TCS];
        for i in 1..threads as u64 {
            let tcs = secs_image.size - i * 0x3000;
            plan.push((tcs, tcs_flags, tcs_image(tcs + 0x1000, layout::NSSA, layout::CODE, layout::DATA)));
            plan.push((tcs + 0x1000, rw, [0; PAGE_SIZE]));
            plan.push((tcs + 0x2000, rw, [0; PAGE_SIZE]));
            thread_tcs.push(base + tcs);
        }
        let mut pages = BTreeMap::new();
        for (offset, flags, data) in plan {
            let la = base + offset;
            let epc = h.eadd(secs, la, flags, &data).expect("EADD of a test page");
            h.eextend_page(secs, epc).expect("EEXTEND of a test page");
            let tcs = flags.page_type() == Some(PageType::Tcs);
            h.map(la, epc, flags.contains(SecinfoFlags::W) || tcs, flags.contains(SecinfoFlags::X));
            pages.insert(la, epc);
        }
        let sigstruct = sign_for(h, secs, &secs_image);
        let status = h.einit(secs, &sigstruct).expect("EINIT does not fault");
        assert_eq!(status, crate::Status::Success, "EINIT of the test enclave");
        TestEnclave {
            secs,
            base,
            size: secs_image.size,
            tcs: base + layout::TCS,
            sigstruct,
            pages,
            threads: thread_tcs,
        }
    }
}

/// A SIGSTRUCT for the enclave at `secs` as measured so far, signed with the test key
/// (the enclave library computes MRENCLAVE offline; the harness asks the processor).
fn sign_for(h: &Harness, secs: u64, image: &Secs) -> Sigstruct {
    let mut sig = Sigstruct::new_unsigned();
    sig.enclavehash = h.cpu.mrenclave_so_far(secs).expect("SECS is valid");
    sig.attributes = image.attributes;
    sig.attributemask = Attributes { flags: !0, xfrm: !0 };
    sig.miscselect = image.miscselect;
    sig.miscmask = !0;
    sig.isvprodid = 7;
    sig.isvsvn = 3;
    sgxemu_crypto::sign(&mut sig, &test_signing_key()).expect("the test key signs");
    sig
}
