//! The enclave every fuzzing thread shares: one TCS per thread, initialized and mapped, the
//! target of the racing class of operations (whose accepted answers are the exact one or
//! EBUSY from another thread's ioctl in flight).

use sgxemu_arch::{FromZeros, IntoBytes, PAGE_SIZE, Secs};
use sgxemu_uapi::*;

use crate::enclave_program;
use crate::model::Encl;
use crate::ops::{ArgPtr, AttrVariant, ObjPtr, RangeShape, SecinfoVariant, SecsVariant, SrcVariant, layout};
use crate::oracle::{self, AddRequest};
use crate::sys::{self, Vdso};

const PAGE: u64 = PAGE_SIZE as u64;

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
        let (base, _) = sys::reserve_aligned(size / PAGE, size)?;
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
