//! ENCLS as the kernel issues it (`encls.h`): operands in kernel buffers, results as "0, an
//! SGX code, or a fault". The driver drives the processor only through these wrappers.

use sgxemu_arch::{ErrorCode, PAGE_SIZE, Pageinfo, Pcmd, PfErrorCode, Secinfo, SecinfoFlags, Secs, Sigstruct, Vector};
use sgxemu_cpu::{Exception, Lp, Memory, Processor, Status};
use zerocopy::{FromZeros, IntoBytes};

/// Why an ENCLS leaf did not succeed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EnclsError {
    /// It returned an SGX code in EAX (informational CF=1 codes included: Linux treats any
    /// non-zero EAX as a failure).
    Code(ErrorCode),
    /// It raised an exception (`encls_faulted`); the kernel only looks at the vector.
    Fault(Vector),
}

impl EnclsError {
    /// `encls_failed()`: anything but a #PF (an ENCLS #PF means "EPCM conflict", which the
    /// caller interprets).
    pub fn failed(&self) -> bool {
        !matches!(self, EnclsError::Fault(Vector::Pf))
    }
}

/// A leaf's outcome.
pub type EnclsResult<T = ()> = Result<T, EnclsError>;

fn from_exception(e: Exception) -> EnclsError {
    EnclsError::Fault(e.vector())
}

fn from_status(status: Result<Status, Exception>) -> EnclsResult {
    match status {
        Ok(Status::Success) => Ok(()),
        Ok(Status::Error(code) | Status::Info(code)) => Err(EnclsError::Code(code)),
        Err(e) => Err(from_exception(e)),
    }
}

/// Kernel virtual addresses of the buffers ENCLS operands live in (canonical, high half).
mod kaddr {
    pub(super) const BASE: u64 = 0xFFFF_8880_0000_0000;
    pub(super) const PAGE: u64 = BASE;
    pub(super) const SIGSTRUCT: u64 = BASE + 0x1000;
    pub(super) const TOKEN: u64 = BASE + 0x1800;
    pub(super) const PAGEINFO: u64 = BASE + 0x2000;
    pub(super) const SECINFO: u64 = BASE + 0x2040;
    pub(super) const PCMD: u64 = BASE + 0x2080;
    pub(super) const END: u64 = BASE + 0x2100;
}

/// The kernel memory a CPU's ENCLS operands are read from and written to.
struct KernelMemory {
    bytes: Box<[u8; (kaddr::END - kaddr::BASE) as usize]>,
}

impl KernelMemory {
    fn range(&self, addr: u64, len: usize) -> Result<std::ops::Range<usize>, Exception> {
        let start = addr.checked_sub(kaddr::BASE).filter(|&off| off + len as u64 <= kaddr::END - kaddr::BASE);
        let start = start.ok_or(Exception::Pf { addr, code: PfErrorCode::empty() })? as usize;
        Ok(start..start + len)
    }

    fn put(&mut self, addr: u64, data: &[u8]) {
        let range = (addr - kaddr::BASE) as usize..(addr - kaddr::BASE) as usize + data.len();
        self.bytes[range].copy_from_slice(data);
    }

    fn page_mut(&mut self, addr: u64) -> &mut [u8; PAGE_SIZE] {
        let start = (addr - kaddr::BASE) as usize;
        (&mut self.bytes[start..start + PAGE_SIZE]).try_into().expect("kernel pages are whole pages")
    }

    fn get(&self, addr: u64, buf: &mut [u8]) {
        let start = (addr - kaddr::BASE) as usize;
        buf.copy_from_slice(&self.bytes[start..start + buf.len()]);
    }
}

impl Memory for KernelMemory {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), Exception> {
        let range = self.range(addr, buf.len())?;
        buf.copy_from_slice(&self.bytes[range]);
        Ok(())
    }

    fn lend(&self, addr: u64, len: usize) -> Option<&[u8]> {
        self.range(addr, len).ok().map(|range| &self.bytes[range])
    }

    fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), Exception> {
        let range = self.range(addr, data.len())?;
        self.bytes[range].copy_from_slice(data);
        Ok(())
    }
}

/// A logical processor running kernel code: every driver entry point runs on one, as the
/// kernel runs on whichever CPU took the system call or the fault.
pub struct Cpu {
    /// The logical processor.
    pub lp: Lp,
    mem: KernelMemory,
    /// Test hook: EEXTENDs still to succeed before one faults ([`Cpu::inject_eextend_fault`]).
    eextend_fault_in: Option<u32>,
}

impl std::fmt::Debug for Cpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cpu").field("lp", &self.lp.id()).finish_non_exhaustive()
    }
}

impl Cpu {
    /// A new logical processor of `processor` for kernel work.
    pub fn new(processor: &Processor) -> Self {
        Cpu {
            lp: processor.new_lp(),
            mem: KernelMemory { bytes: Box::new([0; (kaddr::END - kaddr::BASE) as usize]) },
            eextend_fault_in: None,
        }
    }

    /// Test hook, not a kernel interface: after `successes` more EEXTENDs on this CPU, the
    /// next one faults with #PF (as an EPCM conflict would) without reaching the processor.
    /// The EEXTEND failure path of ADD_PAGES (driver spec §3.2 step 9) cannot be provoked
    /// through the API: the page is not reclaimable yet and the enclave lock is held.
    #[doc(hidden)]
    pub fn inject_eextend_fault(&mut self, successes: u32) {
        self.eextend_fault_in = Some(successes);
    }

    fn pageinfo(&mut self, linaddr: u64, srcpge: u64, secinfo: u64, secs: u64) {
        self.mem.put(kaddr::PAGEINFO, Pageinfo { linaddr, srcpge, secinfo, secs }.as_bytes());
    }

    /// ECREATE of `secs` into `epc`, with a zero SECINFO (as Linux passes it).
    pub fn ecreate(&mut self, p: &Processor, secs: &Secs, epc: u64) -> EnclsResult {
        self.mem.put(kaddr::PAGE, secs.as_bytes());
        self.mem.put(kaddr::SECINFO, Secinfo::new_zeroed().as_bytes());
        self.pageinfo(0, kaddr::PAGE, kaddr::SECINFO, 0);
        p.ecreate(&mut self.lp, &mut self.mem, kaddr::PAGEINFO, epc).map_err(from_exception)
    }

    /// The kernel page EADD takes its source from: the driver copies the user's page
    /// straight into it (the kernel hands EADD its mapping of the pinned user page; either
    /// way there is no intermediate copy).
    pub fn eadd_source(&mut self) -> &mut [u8; PAGE_SIZE] {
        self.mem.page_mut(kaddr::PAGE)
    }

    /// EADD of the page in [`Cpu::eadd_source`] at `linaddr` with `secinfo`.
    pub fn eadd(&mut self, p: &Processor, secs: u64, linaddr: u64, secinfo: &Secinfo, epc: u64) -> EnclsResult {
        self.mem.put(kaddr::SECINFO, secinfo.as_bytes());
        self.pageinfo(linaddr, kaddr::PAGE, kaddr::SECINFO, secs);
        p.eadd(&mut self.lp, &mut self.mem, kaddr::PAGEINFO, epc).map_err(from_exception)
    }

    /// EEXTEND of the 256 bytes at EPC address `chunk`.
    pub fn eextend(&mut self, p: &Processor, secs: u64, chunk: u64) -> EnclsResult {
        match self.eextend_fault_in {
            Some(0) => {
                self.eextend_fault_in = None;
                return Err(EnclsError::Fault(Vector::Pf));
            }
            Some(n) => self.eextend_fault_in = Some(n - 1),
            None => {}
        }
        p.eextend(&mut self.lp, secs, chunk).map_err(from_exception)
    }

    /// The sixteen EEXTENDs of the EPC page at `page`, back to back (one call into the
    /// processor unless a test injected an EEXTEND fault, which needs them one by one),
    /// with `alongside(i)` run before chunk `i` is hashed
    /// ([`Processor::eextend_page_overlapped`]).
    pub fn eextend_page(
        &mut self,
        p: &Processor,
        secs: u64,
        page: u64,
        alongside: &mut dyn FnMut(usize),
    ) -> EnclsResult {
        if self.eextend_fault_in.is_some() {
            for chunk in (0..PAGE_SIZE as u64).step_by(256) {
                self.eextend(p, secs, page + chunk)?;
            }
            return Ok(());
        }
        p.eextend_page_overlapped(&mut self.lp, secs, page, alongside).map_err(from_exception)
    }

    /// Writes IA32_SGXLEPUBKEYHASH0..3 with `mrsigner` on this CPU (`sgx_update_lepubkeyhash`).
    pub fn update_lepubkeyhash(&mut self, p: &Processor, mrsigner: &[u8; 32]) -> EnclsResult {
        for (i, chunk) in mrsigner.chunks_exact(8).enumerate() {
            let value = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
            p.wrmsr(&mut self.lp, sgxemu_arch::IA32_SGXLEPUBKEYHASH0 + i as u32, value).map_err(from_exception)?;
        }
        Ok(())
    }

    /// EINIT with an all-zero launch token.
    pub fn einit(&mut self, p: &Processor, sigstruct: &Sigstruct, secs: u64) -> EnclsResult {
        self.mem.put(kaddr::SIGSTRUCT, sigstruct.as_bytes());
        self.mem.put(kaddr::TOKEN, &[0; 304]);
        from_status(p.einit(&mut self.lp, &mut self.mem, kaddr::SIGSTRUCT, secs, kaddr::TOKEN))
    }

    /// EREMOVE.
    pub fn eremove(&mut self, p: &Processor, epc: u64) -> EnclsResult {
        from_status(p.eremove(&mut self.lp, epc))
    }

    /// EPA: make `epc` a version-array page.
    pub fn epa(&mut self, p: &Processor, epc: u64) -> EnclsResult {
        p.epa(&mut self.lp, sgxemu_arch::PageType::Va as u64, epc).map_err(from_exception)
    }

    /// EBLOCK.
    pub fn eblock(&mut self, p: &Processor, epc: u64) -> EnclsResult {
        from_status(p.eblock(&mut self.lp, epc))
    }

    /// ETRACK.
    pub fn etrack(&mut self, p: &Processor, secs: u64) -> EnclsResult {
        from_status(p.etrack(&mut self.lp, secs))
    }

    /// EWB of `epc` into `contents` and `pcmd`, the version into `va_slot`.
    pub fn ewb(&mut self, p: &Processor, epc: u64, va_slot: u64, contents: &mut [u8], pcmd: &mut [u8]) -> EnclsResult {
        self.pageinfo(0, kaddr::PAGE, kaddr::PCMD, 0);
        from_status(p.ewb(&mut self.lp, &mut self.mem, kaddr::PAGEINFO, epc, va_slot))?;
        self.mem.get(kaddr::PAGE, contents);
        self.mem.get(kaddr::PCMD, pcmd);
        Ok(())
    }

    /// ELDU of `contents`/`pcmd` into `epc` at `linaddr` (0 and `secs` 0 for a SECS).
    #[allow(clippy::too_many_arguments, reason = "one argument per ENCLS operand")]
    pub fn eldu(
        &mut self,
        p: &Processor,
        secs: u64,
        linaddr: u64,
        contents: &[u8],
        pcmd: &[u8],
        epc: u64,
        va_slot: u64,
    ) -> EnclsResult {
        self.mem.put(kaddr::PAGE, contents);
        self.mem.put(kaddr::PCMD, pcmd);
        self.pageinfo(linaddr, kaddr::PAGE, kaddr::PCMD, secs);
        from_status(p.eldu(&mut self.lp, &mut self.mem, kaddr::PAGEINFO, epc, va_slot))
    }

    /// EAUG of a zeroed pending page at `linaddr`.
    pub fn eaug(&mut self, p: &Processor, secs: u64, linaddr: u64, epc: u64) -> EnclsResult {
        self.pageinfo(linaddr, 0, 0, secs);
        p.eaug(&mut self.lp, &mut self.mem, kaddr::PAGEINFO, epc).map_err(from_exception)
    }

    /// EMODPR with SECINFO.FLAGS = `perms`.
    pub fn emodpr(&mut self, p: &Processor, perms: u64, epc: u64) -> EnclsResult {
        self.mem.put(kaddr::SECINFO, Secinfo::new(SecinfoFlags::from_bits_retain(perms)).as_bytes());
        from_status(p.emodpr(&mut self.lp, &mut self.mem, kaddr::SECINFO, epc))
    }

    /// EMODT with SECINFO.FLAGS = `page_type << 8`.
    pub fn emodt(&mut self, p: &Processor, page_type: u64, epc: u64) -> EnclsResult {
        self.mem.put(kaddr::SECINFO, Secinfo::new(SecinfoFlags::from_bits_retain(page_type << 8)).as_bytes());
        from_status(p.emodt(&mut self.lp, &mut self.mem, kaddr::SECINFO, epc))
    }

    /// EDBGRD of the 8-byte word at `addr`. The kernel's wrapper clears EAX, so an SGX code
    /// is reported here and the caller decides (see `Encl::access`).
    pub fn edbgrd(&mut self, p: &Processor, addr: u64) -> EnclsResult<u64> {
        let (status, value) = p.edbgrd(&mut self.lp, addr).map_err(from_exception)?;
        from_status(Ok(status)).map(|()| value)
    }

    /// EDBGWR of the 8-byte word at `addr`.
    pub fn edbgwr(&mut self, p: &Processor, addr: u64, value: u64) -> EnclsResult {
        from_status(p.edbgwr(&mut self.lp, addr, value))
    }
}

/// A PCMD as bytes, for the backing store.
pub(crate) const PCMD_SIZE: usize = size_of::<Pcmd>();
