//! The kernel selftests' test enclave, built through the driver's ioctls exactly as their
//! loader does (reserve ELRANGE, CREATE, ADD_PAGES per segment, INIT with a SIGSTRUCT
//! measured offline, then map the segments), and its operations as enclave programs.

use sgxemu_arch::{
    Attributes, AttributesFlags, Enclu, PAGE_SIZE, PageType, Secinfo, SecinfoFlags, Secs, Sigstruct, Tcs,
};
use sgxemu_crypto::MeasurementState;
use sgxemu_uapi::{
    SGX_IOC_ENCLAVE_ADD_PAGES, SGX_IOC_ENCLAVE_CREATE, SGX_IOC_ENCLAVE_INIT, SGX_PAGE_MEASURE, SgxEnclaveAddPages,
    SgxEnclaveCreate, SgxEnclaveInit,
};
use zerocopy::{FromZeros, IntoBytes};

use crate::errno::Errno;
use crate::os::Prot;

use super::process::MapKind;
use super::thread::{SimThread, Step};

const PAGE: u64 = PAGE_SIZE as u64;

/// Offsets inside the test enclave (as the selftests' linker script lays them out).
pub mod layout {
    /// First TCS.
    pub const TCS1: u64 = 0x0000;
    /// Second TCS.
    pub const TCS2: u64 = 0x1000;
    /// Code (R+X, two pages).
    pub const TEXT: u64 = 0x2000;
    /// Data segment start (RW): the 8 KiB buffer.
    pub const BUFFER: u64 = 0x4000;
    /// The data page the permission tests work on.
    pub const DATA_START: u64 = 0x5000;
    /// SSA frame of TCS1.
    pub const SSA1: u64 = 0x7000;
    /// SSA frame of TCS2.
    pub const SSA2: u64 = 0x8000;
    /// Top of TCS1's stack.
    pub const STACK1_TOP: u64 = 0xA000;
    /// Top of TCS2's stack.
    pub const STACK2_TOP: u64 = 0xB000;
    /// The loader-added heap (unmeasured).
    pub const HEAP: u64 = 0xB000;
}

/// Where the loader keeps its own (untrusted) data: ioctl arguments, SECS, SIGSTRUCT.
const SCRATCH: u64 = 0x0010_0000;
/// Untrusted copies of the enclave's pages (ADD_PAGES sources).
const SOURCE: u64 = 0x1000_0000;
/// Where ELRANGEs are placed.
const ENCLAVE_AREA: u64 = 0x100_0000_0000;

/// Why loading failed: the ioctl or mmap and its errno.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadError {
    /// The step.
    pub step: &'static str,
    /// Its errno.
    pub errno: Errno,
}

/// A loaded, initialized test enclave.
#[derive(Clone, Debug)]
pub struct TestEnclave {
    /// Its file descriptor.
    pub fd: i32,
    /// ELRANGE base.
    pub base: u64,
    /// ELRANGE size.
    pub size: u64,
    /// Bytes of heap.
    pub heap_size: u64,
}

/// One segment of the image.
struct Segment {
    offset: u64,
    pages: u64,
    secinfo: u64,
    prot: Prot,
    measure: bool,
}

fn tcs_page(ossa: u64, oentry: u64) -> Vec<u8> {
    let mut tcs = Tcs::new_zeroed();
    tcs.ossa = ossa;
    tcs.nssa = 1;
    tcs.oentry = oentry;
    tcs.fslimit = 0xFFFF_FFFF;
    tcs.gslimit = 0xFFFF_FFFF;
    tcs.as_bytes().to_vec()
}

impl TestEnclave {
    /// Loads the enclave with `heap_size` bytes of heap (the selftests' `setup_test_encl`).
    pub fn load(thread: &mut SimThread, heap_size: u64) -> Result<TestEnclave, LoadError> {
        Self::load_sized(thread, heap_size, 0)
    }

    /// As [`TestEnclave::load`], with an ELRANGE of at least `min_size` bytes (room for
    /// pages added later by EAUG).
    pub fn load_sized(thread: &mut SimThread, heap_size: u64, min_size: u64) -> Result<TestEnclave, LoadError> {
        Self::load_with(thread, heap_size, min_size, AttributesFlags::MODE64BIT)
    }

    /// As [`TestEnclave::load_sized`], with these SECS attribute flags (e.g. DEBUG) instead
    /// of MODE64BIT alone; the SIGSTRUCT asks for the same.
    pub fn load_with(
        thread: &mut SimThread,
        heap_size: u64,
        min_size: u64,
        flags: AttributesFlags,
    ) -> Result<TestEnclave, LoadError> {
        let fail = |step: &'static str| move |errno: Errno| LoadError { step, errno };
        let process = thread.process().clone();
        let image_size = layout::HEAP + heap_size;
        let size = image_size.next_power_of_two().max(min_size.next_power_of_two()).max(2 * PAGE);
        // The first free, naturally aligned window (a second enclave goes above the first).
        let mut base = ENCLAVE_AREA.div_ceil(size) * size;
        while process.is_mapped(base, size) {
            base += size;
        }
        process
            .mmap(SCRATCH, 0x10000, Prot::READ | Prot::WRITE, MapKind::Private, None)
            .map_err(fail("mmap scratch"))?;
        process
            .mmap(SOURCE, image_size, Prot::READ | Prot::WRITE, MapKind::Private, None)
            .map_err(fail("mmap source"))?;
        let fd = process.open("/dev/sgx_enclave").map_err(fail("open"))?;
        // The image, in untrusted memory.
        let segments = Self::segments(heap_size);
        let mut text = vec![0u8; 2 * PAGE_SIZE];
        for (i, word) in text.chunks_exact_mut(4).enumerate() {
            word.copy_from_slice(&(0xDEAD_BEEFu32 ^ i as u32).to_le_bytes());
        }
        let put = |offset: u64, data: &[u8]| process.write_user(SOURCE + offset, data);
        put(layout::TCS1, &tcs_page(layout::SSA1, 0x23D3)).map_err(fail("image"))?;
        put(layout::TCS2, &tcs_page(layout::SSA2, 0x23D3)).map_err(fail("image"))?;
        put(layout::TEXT, &text).map_err(fail("image"))?;
        // CREATE.
        let mut secs = Secs::new_zeroed();
        secs.baseaddr = base;
        secs.size = size;
        secs.ssaframesize = 1;
        secs.attributes = Attributes::new(flags, 0x3);
        let secs_addr = SCRATCH + 0x1000;
        process.write_user(secs_addr, secs.as_bytes()).map_err(fail("secs"))?;
        process.write_user(SCRATCH, SgxEnclaveCreate { src: secs_addr }.as_bytes()).map_err(fail("arg"))?;
        thread.ioctl(fd, SGX_IOC_ENCLAVE_CREATE, SCRATCH).map_err(fail("SGX_IOC_ENCLAVE_CREATE"))?;
        // ADD_PAGES, one call per segment, and the same measurement offline.
        let mut measurement = MeasurementState::new();
        measurement.ecreate(1, size);
        for seg in &segments {
            let secinfo_addr = SCRATCH + 0x2000;
            process
                .write_user(secinfo_addr, Secinfo::new(SecinfoFlags::from_bits_retain(seg.secinfo)).as_bytes())
                .map_err(fail("secinfo"))?;
            let add = SgxEnclaveAddPages {
                src: SOURCE + seg.offset,
                offset: seg.offset,
                length: seg.pages * PAGE,
                secinfo: secinfo_addr,
                flags: if seg.measure { SGX_PAGE_MEASURE } else { 0 },
                count: 0,
            };
            process.write_user(SCRATCH, add.as_bytes()).map_err(fail("arg"))?;
            thread.ioctl(fd, SGX_IOC_ENCLAVE_ADD_PAGES, SCRATCH).map_err(fail("SGX_IOC_ENCLAVE_ADD_PAGES"))?;
            for page in 0..seg.pages {
                let offset = seg.offset + page * PAGE;
                measurement.eadd(offset, seg.secinfo);
                if seg.measure {
                    let mut contents = vec![0u8; PAGE_SIZE];
                    process.read_user(SOURCE + offset, &mut contents).map_err(fail("image"))?;
                    for (i, chunk) in contents.chunks_exact(256).enumerate() {
                        measurement.eextend(offset + 256 * i as u64, chunk.try_into().expect("256 bytes"));
                    }
                }
            }
        }
        // INIT with a SIGSTRUCT over the offline measurement.
        let mut sig = Sigstruct::new_unsigned();
        sig.vendor = 0;
        sig.attributes = Attributes::new(flags, 0x3);
        sig.enclavehash = measurement.finalize();
        sgxemu_crypto::sign(&mut sig, &sgxemu_cpu::testkit::test_signing_key()).expect("the test key signs");
        let sig_addr = SCRATCH + 0x4000;
        process.write_user(sig_addr, sig.as_bytes()).map_err(fail("sigstruct"))?;
        process.write_user(SCRATCH, SgxEnclaveInit { sigstruct: sig_addr }.as_bytes()).map_err(fail("arg"))?;
        thread.ioctl(fd, SGX_IOC_ENCLAVE_INIT, SCRATCH).map_err(fail("SGX_IOC_ENCLAVE_INIT"))?;
        // Map each segment with its own protections.
        for seg in &segments {
            process
                .mmap(base + seg.offset, seg.pages * PAGE, seg.prot, MapKind::Shared, Some(fd))
                .map_err(fail("mmap segment"))?;
        }
        Ok(TestEnclave { fd, base, size, heap_size })
    }

    fn segments(heap_size: u64) -> Vec<Segment> {
        let rw = Prot::READ | Prot::WRITE;
        let tcs = (PageType::Tcs as u64) << 8;
        let reg = (PageType::Reg as u64) << 8;
        vec![
            Segment { offset: layout::TCS1, pages: 2, secinfo: tcs, prot: rw, measure: true },
            Segment {
                offset: layout::TEXT,
                pages: 2,
                secinfo: reg | 0x5,
                prot: Prot::READ | Prot::EXEC,
                measure: true,
            },
            Segment { offset: layout::BUFFER, pages: 7, secinfo: reg | 0x3, prot: rw, measure: true },
            Segment { offset: layout::HEAP, pages: heap_size / PAGE, secinfo: reg | 0x3, prot: rw, measure: false },
        ]
    }

    /// Linear address of TCS1.
    pub fn tcs1(&self) -> u64 {
        self.base + layout::TCS1
    }

    /// Linear address of TCS2.
    pub fn tcs2(&self) -> u64 {
        self.base + layout::TCS2
    }

    /// The data page the permission tests use.
    pub fn data_start(&self) -> u64 {
        self.base + layout::DATA_START
    }

    /// The first address past the loaded image (unbacked until EAUG).
    pub fn first_unbacked(&self) -> u64 {
        self.base + layout::HEAP + self.heap_size
    }

    /// Where an operation on `tcs` keeps its SECINFO: 64 bytes below its stack top (the
    /// test enclave's red zone). A dynamically created TCS has its stack directly below it.
    fn scratch(&self, tcs: u64) -> u64 {
        let top = match tcs - self.base {
            layout::TCS1 => self.base + layout::STACK1_TOP,
            layout::TCS2 => self.base + layout::STACK2_TOP,
            _ => tcs,
        };
        top - 0x40
    }

    /// ENCL_OP_PUT_TO_BUFFER.
    pub fn put_to_buffer(&self, value: u64) -> Vec<Step> {
        vec![Step::Store { addr: self.base + layout::BUFFER, data: value.to_le_bytes().to_vec() }, Step::Exit]
    }

    /// ENCL_OP_GET_FROM_BUFFER (the value is the first result).
    pub fn get_from_buffer(&self) -> Vec<Step> {
        vec![Step::Load { addr: self.base + layout::BUFFER, len: 8 }, Step::Exit]
    }

    /// ENCL_OP_PUT_TO_ADDRESS.
    pub fn put_to_address(&self, addr: u64, value: u64) -> Vec<Step> {
        vec![Step::Store { addr, data: value.to_le_bytes().to_vec() }, Step::Exit]
    }

    /// ENCL_OP_GET_FROM_ADDRESS (the value is the first result).
    pub fn get_from_address(&self, addr: u64) -> Vec<Step> {
        vec![Step::Load { addr, len: 8 }, Step::Exit]
    }

    /// ENCL_OP_NOP.
    pub fn nop(&self) -> Vec<Step> {
        vec![Step::Exit]
    }

    /// ENCL_OP_EACCEPT from `tcs` (RAX, the "ret", is the first result).
    pub fn eaccept(&self, tcs: u64, addr: u64, flags: u64) -> Vec<Step> {
        self.with_secinfo(tcs, flags, Enclu::Eaccept, addr)
    }

    /// ENCLU\[EMODPE\] from `tcs`.
    pub fn emodpe(&self, tcs: u64, addr: u64, flags: u64) -> Vec<Step> {
        self.with_secinfo(tcs, flags, Enclu::Emodpe, addr)
    }

    fn with_secinfo(&self, tcs: u64, flags: u64, leaf: Enclu, addr: u64) -> Vec<Step> {
        let secinfo = self.scratch(tcs);
        let mut bytes = vec![0u8; 64];
        bytes[..8].copy_from_slice(&flags.to_le_bytes());
        vec![
            Step::Store { addr: secinfo, data: bytes },
            Step::Enclu { leaf, rbx: secinfo, rcx: addr, rdx: 0 },
            Step::Exit,
        ]
    }

    /// ENCL_OP_INIT_TCS_PAGE: writes a TCS image (SSA at `ssa`, entry at `entry`, both
    /// offsets) into the regular page at `addr`.
    pub fn init_tcs_page(&self, addr: u64, ssa: u64, entry: u64) -> Vec<Step> {
        vec![Step::Store { addr, data: tcs_page(ssa, entry) }, Step::Exit]
    }
}
