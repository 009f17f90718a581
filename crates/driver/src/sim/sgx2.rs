//! Userspace's side of the SGX2 ioctls as the tests drive them: an ioctl whose argument
//! struct travels through user memory, and the caller protocol of driver spec §3.9 for the
//! ranged ioctls (EAGAIN/EBUSY → advance by `count`, zero `count`, re-issue).

use std::time::{Duration, Instant};

use sgxemu_uapi::{
    SGX_IOC_ENCLAVE_MODIFY_TYPES, SGX_IOC_ENCLAVE_REMOVE_PAGES, SGX_IOC_ENCLAVE_RESTRICT_PERMISSIONS,
    SgxEnclaveModifyTypes, SgxEnclaveRemovePages, SgxEnclaveRestrictPermissions,
};
use zerocopy::{FromBytes, Immutable, IntoBytes};

use super::SimThread;
use crate::errno::{Errno, KResult};

/// How long [`sgx2_range`] keeps retrying without progress before it reports a livelock.
/// Another thread (ksgxd) may hold a page for as long as the host scheduler keeps it off a
/// CPU, so the bound is wall-clock time, never a retry count.
pub const NO_PROGRESS_LIMIT: Duration = Duration::from_secs(60);

/// Issues ioctl `cmd` with `arg` written to user memory at `arg_addr` (which must be mapped
/// writable); returns the result and the struct as the driver left it there.
pub fn ioctl_at<T: IntoBytes + FromBytes + Immutable>(
    t: &mut SimThread,
    fd: i32,
    cmd: u32,
    arg_addr: u64,
    arg: T,
) -> (KResult<()>, T) {
    let p = t.process().clone();
    p.write_user(arg_addr, arg.as_bytes()).expect("the argument page is mapped");
    let result = t.ioctl(fd, cmd, arg_addr);
    let mut bytes = vec![0u8; size_of::<T>()];
    p.read_user(arg_addr, &mut bytes).expect("the argument page is mapped");
    (result, T::read_from_bytes(&bytes).expect("the size of T"))
}

/// One of the ranged SGX2 ioctls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sgx2Op {
    /// RESTRICT_PERMISSIONS to these SECINFO permission bits.
    Restrict(u64),
    /// MODIFY_TYPES to this page type.
    Modify(u64),
    /// REMOVE_PAGES.
    Remove,
}

/// What one ranged ioctl returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sgx2Outcome {
    /// The ioctl's result.
    pub result: KResult<()>,
    /// Bytes processed (`count`).
    pub count: u64,
    /// The SGX error code (`result` field; 0 for REMOVE_PAGES, which has none).
    pub code: u64,
}

/// Issues `op` once over `[offset, offset + length)`.
pub fn sgx2_once(t: &mut SimThread, fd: i32, arg_addr: u64, offset: u64, length: u64, op: Sgx2Op) -> Sgx2Outcome {
    let (result, count, code) = match op {
        Sgx2Op::Restrict(permissions) => {
            let arg = SgxEnclaveRestrictPermissions { offset, length, permissions, result: 0, count: 0 };
            let (r, out) = ioctl_at(t, fd, SGX_IOC_ENCLAVE_RESTRICT_PERMISSIONS, arg_addr, arg);
            (r, out.count, out.result)
        }
        Sgx2Op::Modify(page_type) => {
            let arg = SgxEnclaveModifyTypes { offset, length, page_type, result: 0, count: 0 };
            let (r, out) = ioctl_at(t, fd, SGX_IOC_ENCLAVE_MODIFY_TYPES, arg_addr, arg);
            (r, out.count, out.result)
        }
        Sgx2Op::Remove => {
            let arg = SgxEnclaveRemovePages { offset, length, count: 0 };
            let (r, out) = ioctl_at(t, fd, SGX_IOC_ENCLAVE_REMOVE_PAGES, arg_addr, arg);
            (r, out.count, 0)
        }
    };
    Sgx2Outcome { result, count, code }
}

/// The §3.9 caller protocol for `op` over `[offset, offset + length)`: on EAGAIN/EBUSY
/// advance by `count` and re-issue, yielding the CPU when a try made no progress (the page
/// is held by another thread). Panics on any other error, on an SGX error code, on a
/// `count` that is not page-granular or overshoots, or after [`NO_PROGRESS_LIMIT`] without
/// progress. Returns the number of retries.
pub fn sgx2_range(t: &mut SimThread, fd: i32, arg_addr: u64, mut offset: u64, mut length: u64, op: Sgx2Op) -> usize {
    let page = sgxemu_arch::PAGE_SIZE as u64;
    let mut last_progress = Instant::now();
    for retries in 0.. {
        let Sgx2Outcome { result, count, code } = sgx2_once(t, fd, arg_addr, offset, length, op);
        assert_eq!(code, 0, "{op:?}: no SGX error code");
        assert!(count.is_multiple_of(page) && count <= length, "{op:?}: count {count:#x} of {length:#x}");
        match result {
            Ok(()) => {
                assert_eq!(count, length, "{op:?}: success covers the whole range");
                return retries;
            }
            Err(e) if e == Errno::EAGAIN || e == Errno::EBUSY => {
                assert!(count < length, "{op:?}: {e:?} after the whole range");
                offset += count;
                length -= count;
                if count > 0 {
                    last_progress = Instant::now();
                } else {
                    assert!(
                        last_progress.elapsed() < NO_PROGRESS_LIMIT,
                        "{op:?} at {offset:#x}: no progress in {NO_PROGRESS_LIMIT:?} ({retries} retries)"
                    );
                    std::thread::yield_now();
                }
            }
            Err(e) => panic!("{op:?} at {offset:#x}: {e:?}"),
        }
    }
    unreachable!("the retry loop only ends by returning or panicking")
}
